//! The verdict log's files: one background thread appends records to the
//! current file, rotates it into numbered copies, and keeps the filesystem's
//! reserve free, so that the datapath never waits on a disk.

use super::{FILE_NAME, FlowRecord, LogConfig, LogCounters};
use crossbeam_channel::{Receiver, Sender};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Records that may wait for the writer. Entries are pointers, so this costs
/// about 1 MiB and absorbs a few seconds of a slow disk at high flow rates.
pub(super) const CHANNEL_CAP: usize = 65_536;

/// Buffer of the file writer; flushed whenever the channel runs empty.
const WRITE_BUF: usize = 64 * 1024;

/// Disk problems are repeated at most this often in the log.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// A failed open is retried at most this often; records in between are dropped.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// Free space is checked after this many bytes written, or this often.
const ROOM_CHECK_BYTES: u64 = 256 * 1024;
const ROOM_CHECK_EVERY: Duration = Duration::from_secs(1);

pub(super) enum Msg {
    Record(Arc<FlowRecord>),
    /// Acknowledged once everything before it is flushed to the file.
    Flush(Sender<()>),
}

pub(super) fn open_current(dir: &Path) -> io::Result<(BufWriter<File>, u64)> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(dir.join(FILE_NAME))?;
    let size = f.metadata()?.len();
    Ok((BufWriter::with_capacity(WRITE_BUF, f), size))
}

fn rotated_name(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("{FILE_NAME}.{n}"))
}

/// The writer thread's state.
pub(super) struct Writer {
    dir: PathBuf,
    rotate_bytes: u64,
    keep: usize,
    reserve: u64,
    /// Bytes written since room was last checked, and when: the check runs
    /// every `ROOM_CHECK_BYTES` or `ROOM_CHECK_EVERY`.
    since_check: u64,
    checked: Option<Instant>,
    /// The filesystem is down to the reserve: records are not written.
    full: bool,
    out: Option<BufWriter<File>>,
    /// Size of the current file including what is buffered.
    size: u64,
    /// Records buffered since the last successful flush.
    unflushed: u64,
    line: Vec<u8>,
    counters: Arc<LogCounters>,
    /// When opening last failed; retries wait so a dead disk is not hammered.
    open_failed: Option<Instant>,
    last_warn: Option<Instant>,
    suppressed: u64,
}

impl Writer {
    pub(super) fn new(
        cfg: &LogConfig,
        dir: &Path,
        out: Option<BufWriter<File>>,
        size: u64,
        counters: Arc<LogCounters>,
    ) -> Writer {
        Writer {
            dir: dir.to_path_buf(),
            rotate_bytes: cfg.rotate_bytes,
            keep: cfg.keep,
            reserve: cfg.reserve_bytes,
            since_check: 0,
            checked: None,
            full: false,
            out,
            size,
            unflushed: 0,
            line: Vec::with_capacity(1024),
            counters,
            open_failed: None,
            last_warn: None,
            suppressed: 0,
        }
    }

    pub(super) fn spawn(self, rx: Receiver<Msg>) -> io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("verdict-log".into())
            .spawn(move || self.run(rx))
    }

    fn run(mut self, rx: Receiver<Msg>) {
        loop {
            let msg = match rx.try_recv() {
                Ok(m) => m,
                Err(_) => {
                    // Momentarily idle: push out what is buffered so `tail -f` sees it.
                    self.flush();
                    match rx.recv() {
                        Ok(m) => m,
                        Err(_) => break,
                    }
                }
            };
            match msg {
                Msg::Record(r) => self.write(&r),
                Msg::Flush(ack) => {
                    self.flush();
                    let _ = ack.send(());
                }
            }
        }
        self.flush();
    }

    fn write(&mut self, r: &FlowRecord) {
        self.line.clear();
        if let Err(e) = serde_json::to_writer(&mut self.line, r) {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
            self.warn("encode", &e);
            return;
        }
        self.line.push(b'\n');
        let len = self.line.len() as u64;
        if !self.room(len) {
            self.counters.no_room.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.out.is_some()
            && self.rotate_bytes > 0
            && self.size > 0
            && self.size + len > self.rotate_bytes
        {
            self.rotate();
        }
        if self.out.is_none() && !self.reopen() {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some(out) = self.out.as_mut() else { return };
        self.unflushed += 1;
        match out.write_all(&self.line) {
            Ok(()) => self.size += len,
            Err(e) => self.discard("write", &e),
        }
    }

    fn flush(&mut self) {
        let Some(out) = self.out.as_mut() else { return };
        match out.flush() {
            Ok(()) => {
                self.counters
                    .written
                    .fetch_add(self.unflushed, Ordering::Relaxed);
                self.unflushed = 0;
            }
            Err(e) => self.discard("flush", &e),
        }
    }

    /// Gives up on the current file after an error; the next record reopens it.
    fn discard(&mut self, what: &str, e: &dyn fmt::Display) {
        if let Some(out) = self.out.take() {
            // Dropped without another flush attempt: the file just failed.
            let _ = out.into_parts();
        }
        self.counters
            .failed
            .fetch_add(self.unflushed, Ordering::Relaxed);
        self.unflushed = 0;
        self.warn(what, e);
    }

    fn reopen(&mut self) -> bool {
        if self.open_failed.is_some_and(|t| t.elapsed() < REOPEN_EVERY) {
            return false;
        }
        match open_current(&self.dir) {
            Ok((out, size)) => {
                self.out = Some(out);
                self.size = size;
                self.open_failed = None;
                true
            }
            Err(e) => {
                self.open_failed = Some(Instant::now());
                self.warn("open", &e);
                false
            }
        }
    }

    fn rotate(&mut self) {
        self.flush();
        // Closed before renaming; the next write opens a fresh file.
        self.out = None;
        let cur = self.dir.join(FILE_NAME);
        let res = if self.keep == 0 {
            fs::remove_file(&cur)
        } else {
            self.shift()
                .and_then(|()| fs::rename(&cur, rotated_name(&self.dir, 1)))
        };
        if let Err(e) = res {
            self.warn("rotate", &e);
        }
    }

    /// Whether `len` more bytes may be written: the filesystem keeps the
    /// reserve free. Checked every so many bytes or so often; when short, the
    /// oldest rotated files go first, then writing stops until there is room.
    fn room(&mut self, len: u64) -> bool {
        self.since_check += len;
        if self.reserve == 0 {
            return true;
        }
        let due = self.since_check >= ROOM_CHECK_BYTES
            || self.checked.is_none_or(|t| t.elapsed() >= ROOM_CHECK_EVERY);
        if !due {
            return !self.full;
        }
        self.since_check = 0;
        self.checked = Some(Instant::now());
        let dir = self.dir.clone();
        let free = || {
            rustix::fs::statvfs(&dir)
                .map(|v| v.f_bavail.saturating_mul(v.f_frsize))
                .unwrap_or(u64::MAX)
        };
        // Room for what comes before the next check, beyond the reserve.
        let want = self.reserve + ROOM_CHECK_BYTES;
        let mut oldest = self.keep;
        while free() < want && oldest > 0 {
            match fs::remove_file(rotated_name(&self.dir, oldest)) {
                Ok(()) => tracing::warn!(
                    dir = %self.dir.display(),
                    file = oldest,
                    "verdict log: disk short, oldest rotated file removed"
                ),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => self.warn("remove", &e),
            }
            oldest -= 1;
        }
        let full = free() < want;
        if full != self.full {
            self.flush();
            if full {
                tracing::warn!(
                    dir = %self.dir.display(),
                    reserve_bytes = self.reserve,
                    "verdict log: disk down to the reserve left for the node's state; records kept in memory only"
                );
            } else {
                tracing::info!(dir = %self.dir.display(), "verdict log: room again, writing resumes");
            }
            self.full = full;
        }
        !full
    }

    /// Drops the oldest kept file and moves `.i` to `.i+1`, making room for `.1`.
    fn shift(&self) -> io::Result<()> {
        let missing_ok = |r: io::Result<()>| match r {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
        missing_ok(fs::remove_file(rotated_name(&self.dir, self.keep)))?;
        for i in (1..self.keep).rev() {
            missing_ok(fs::rename(
                rotated_name(&self.dir, i),
                rotated_name(&self.dir, i + 1),
            ))?;
        }
        Ok(())
    }

    fn warn(&mut self, what: &str, e: &dyn fmt::Display) {
        self.counters.disk_errors.fetch_add(1, Ordering::Relaxed);
        // A failing disk fails on every record; once a minute is enough to notice.
        if self.last_warn.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            self.suppressed += 1;
            return;
        }
        self.last_warn = Some(Instant::now());
        tracing::warn!(
            dir = %self.dir.display(),
            error = %e,
            suppressed = self.suppressed,
            "verdict log: {what} failed"
        );
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::record::log::tests::{T0, ids, rec};
    use crate::control::record::log::{Filter, VerdictLog, read_dir};

    fn on_disk(dir: &Path, rotate_bytes: u64, keep: usize) -> VerdictLog {
        VerdictLog::new(LogConfig {
            ring: 16,
            dir: Some(dir.to_path_buf()),
            rotate_bytes,
            keep,
            records_per_sec: 0,
            burst: 0,
            reserve_bytes: 0,
        })
        .unwrap()
    }

    #[test]
    fn writes_and_drop_drains() {
        let dir = tempfile::tempdir().unwrap();
        let log = on_disk(dir.path(), 0, 3);
        for i in 0..100 {
            log.record(rec(i), T0);
        }
        drop(log);
        let got = read_dir(dir.path(), &Filter::default(), 1000).unwrap();
        assert_eq!(ids(&got), (0..100).collect::<Vec<_>>());
        assert_eq!(got[5], rec(5));
    }

    #[test]
    fn appends_to_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..2 {
            let log = on_disk(dir.path(), 0, 1);
            log.record(rec(round), T0);
            log.flush();
            assert_eq!(log.written(), 1);
        }
        let got = read_dir(dir.path(), &Filter::default(), 10).unwrap();
        assert_eq!(ids(&got), [0, 1]);
    }

    #[test]
    fn rotation_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let line = serde_json::to_vec(&rec(10)).unwrap().len() as u64 + 1;
        // Room for three records per file.
        let log = on_disk(dir.path(), line * 3 + 2, 2);
        for i in 10..40 {
            log.record(rec(i), T0);
        }
        log.flush();
        assert_eq!((log.written(), log.lost(), log.failed()), (30, 0, 0));
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["verdicts.jsonl", "verdicts.jsonl.1", "verdicts.jsonl.2"]
        );
        for name in &names {
            assert!(fs::metadata(dir.path().join(name)).unwrap().len() <= line * 3 + 2);
        }

        let cur = fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        let cur: Vec<FlowRecord> = cur
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(ids(&cur), [37, 38, 39]);

        let all = read_dir(dir.path(), &Filter::default(), 100).unwrap();
        assert_eq!(ids(&all), (31..40).collect::<Vec<_>>());
        let newest = read_dir(dir.path(), &Filter::default(), 4).unwrap();
        assert_eq!(ids(&newest), [36, 37, 38, 39]);
        let f = Filter {
            until: Some(T0 + 35),
            ..Default::default()
        };
        assert_eq!(
            ids(&read_dir(dir.path(), &f, 100).unwrap()),
            [31, 32, 33, 34, 35]
        );
    }

    #[test]
    fn rotation_with_keep_zero_discards() {
        let dir = tempfile::tempdir().unwrap();
        let line = serde_json::to_vec(&rec(10)).unwrap().len() as u64 + 1;
        let log = on_disk(dir.path(), line * 2, 0);
        for i in 10..15 {
            log.record(rec(i), T0);
        }
        log.flush();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(
            ids(&read_dir(dir.path(), &Filter::default(), 10).unwrap()),
            [14]
        );
    }

    #[test]
    fn full_channel_counts_lost() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            ring: 100,
            dir: Some(dir.path().to_path_buf()),
            rotate_bytes: 0,
            keep: 1,
            records_per_sec: 0,
            burst: 0,
            reserve_bytes: 0,
        };
        // A writer that has not started yet stands in for a stalled disk.
        let mut log = VerdictLog::memory(cfg.ring);
        let (tx, rx) = crossbeam_channel::bounded(2);
        log.tx = Some(tx);
        for i in 0..5 {
            log.record(rec(i), T0);
        }
        assert_eq!(log.lost(), 3);
        // The ring still has everything.
        assert_eq!(log.query(&Filter::default(), 10).len(), 5);

        let (file, size) = open_current(dir.path()).unwrap();
        let w = Writer::new(&cfg, dir.path(), Some(file), size, log.counters.clone());
        log.writer = Some(w.spawn(rx).unwrap());
        log.flush();
        assert_eq!(log.written(), 2);
        log.record(rec(5), T0);
        log.flush();
        assert_eq!((log.written(), log.lost()), (3, 3));
        let got = read_dir(dir.path(), &Filter::default(), 10).unwrap();
        assert_eq!(ids(&got), [0, 1, 5]);
    }

    #[test]
    fn disk_errors_are_counted_and_survived() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let log = on_disk(&dir, 10, 2);
        log.record(rec(0), T0);
        log.flush();
        assert_eq!(log.written(), 1);
        fs::remove_dir_all(&dir).unwrap();
        // Rotating fails, then reopening fails; the records are dropped and counted.
        log.record(rec(1), T0);
        log.record(rec(2), T0);
        log.flush();
        assert_eq!((log.written(), log.failed()), (1, 2));
        assert!(log.disk_errors() >= 2);
        fs::create_dir_all(&dir).unwrap();
        std::thread::sleep(REOPEN_EVERY + Duration::from_millis(100));
        log.record(rec(3), T0);
        log.flush();
        assert_eq!((log.written(), log.failed()), (2, 2));
        assert_eq!(ids(&read_dir(&dir, &Filter::default(), 10).unwrap()), [3]);
    }
}
