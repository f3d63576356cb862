//! Reading the verdict log's files back: the current file and its rotated
//! copies, oldest first, for queries that reach past the memory ring.

use super::{FILE_NAME, Filter, FlowRecord};
use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

/// Reads the newest `limit` records matching `f` from the files in `dir`:
/// rotated files oldest first, then the current one, newest last.
///
/// Unparsable lines are skipped with a warning; a last line without its newline
/// is still being written and is skipped silently. A rotation during the read
/// may make records appear twice or not at all.
pub fn read_dir(dir: &Path, f: &Filter, limit: usize) -> io::Result<Vec<FlowRecord>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut rotated: Vec<(u64, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let n = name
            .to_str()
            .and_then(|s| s.strip_prefix(FILE_NAME))
            .and_then(|s| s.strip_prefix('.'))
            .and_then(|s| s.parse::<u64>().ok());
        if let Some(n) = n {
            rotated.push((n, entry.path()));
        }
    }
    // The highest number is the oldest file.
    rotated.sort_by_key(|&(n, _)| std::cmp::Reverse(n));
    let mut out = VecDeque::new();
    let files = rotated
        .into_iter()
        .map(|(_, p)| p)
        .chain(std::iter::once(dir.join(FILE_NAME)));
    for path in files {
        read_file(&path, f, limit, &mut out)?;
    }
    Ok(out.into())
}

fn read_file(
    path: &Path,
    f: &Filter,
    limit: usize,
    out: &mut VecDeque<FlowRecord>,
) -> io::Result<()> {
    let file = match File::open(path) {
        Ok(file) => file,
        // Rotated away since the directory was listed, or not created yet.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut rd = BufReader::new(file);
    let mut line = Vec::new();
    let (mut bad, mut first_bad, mut lineno) = (0u64, 0u64, 0u64);
    loop {
        line.clear();
        if rd.read_until(b'\n', &mut line)? == 0 || line.last() != Some(&b'\n') {
            break;
        }
        lineno += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<FlowRecord>(&line) {
            Ok(r) if f.matches(&r) => {
                if out.len() == limit {
                    out.pop_front();
                }
                out.push_back(r);
            }
            Ok(_) => {}
            Err(_) => {
                if bad == 0 {
                    first_bad = lineno;
                }
                bad += 1;
            }
        }
    }
    if bad > 0 {
        tracing::warn!(
            file = %path.display(),
            lines = bad,
            first = first_bad,
            "verdict log: skipped unparsable lines"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::record::log::tests::{ids, rec};

    #[test]
    fn read_dir_skips_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let good = |i| serde_json::to_string(&rec(i)).unwrap();
        fs::write(
            dir.path().join("verdicts.jsonl.1"),
            format!("{}\nnot json\n\n{}\n", good(1), good(2)),
        )
        .unwrap();
        // A half-written last line is still in progress.
        let partial = &good(4)[..20];
        fs::write(
            dir.path().join(FILE_NAME),
            format!("{}\n\u{fffd}\n{partial}", good(3)),
        )
        .unwrap();
        fs::write(dir.path().join("verdicts.jsonl.x"), "ignored\n").unwrap();
        let got = read_dir(dir.path(), &Filter::default(), 10).unwrap();
        assert_eq!(ids(&got), [1, 2, 3]);
        assert!(read_dir(&dir.path().join("missing"), &Filter::default(), 10).is_err());
    }
}
