//! The rule sets a node has enforced: the current one (what a restart starts
//! with) and the last [`KEPT`] revisions with when, by whom and from where, so
//! an operator can see the history and roll back. Kept in `state_dir/rules/`,
//! readable by root only.

use super::files::{private_dir, write_private};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Revisions whose text is kept for rollback.
pub const KEPT: usize = 50;

/// One rule set that was put in force.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Revision {
    /// The rule generation it was enforced as (grows with every push, also
    /// across restarts).
    pub generation: u64,
    /// SHA-256 of its text, hex.
    pub hash: String,
    /// Number of rules.
    pub rules: usize,
    /// When it was put in force.
    #[serde(
        serialize_with = "crate::control::record::log::ser_millis",
        deserialize_with = "crate::control::record::log::de_millis"
    )]
    #[schema(value_type = String, format = DateTime)]
    pub at: u64,
    /// Who pushed it: "token:admin", "unix:uid=0", "cert:…", "config".
    pub by: String,
    /// Where the text came from (a file name, "page", "rollback of 3").
    pub origin: String,
}

/// The history, on disk and in memory.
pub struct RuleBook {
    dir: PathBuf,
    revisions: Vec<Revision>,
}

/// SHA-256 of a rule text, as hex.
pub fn hash(text: &str) -> String {
    hash_bytes(text.as_bytes())
}

/// SHA-256 of bytes, as hex.
pub fn hash_bytes(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

/// Bytes as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl RuleBook {
    /// Reads the history kept in `state_dir` (none yet: empty).
    pub fn load(state_dir: &Path) -> Result<RuleBook, String> {
        let dir = state_dir.join("rules");
        let index = dir.join("history.json");
        let revisions = match std::fs::read(&index) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", index.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("{}: {e}", index.display())),
        };
        Ok(RuleBook { dir, revisions })
    }

    /// The file the newest revision's text is in, if there is one.
    pub fn current_file(&self) -> Option<PathBuf> {
        self.revisions
            .last()
            .map(|r| self.text_path(r.generation))
            .filter(|p| p.exists())
    }

    fn text_path(&self, generation: u64) -> PathBuf {
        self.dir.join(format!("gen-{generation}.toml"))
    }

    /// The newest revision.
    pub fn latest(&self) -> Option<&Revision> {
        self.revisions.last()
    }

    /// Revisions, newest first.
    pub fn history(&self) -> Vec<Revision> {
        self.revisions.iter().rev().cloned().collect()
    }

    /// The text of `generation`, if it is still kept.
    pub fn text(&self, generation: u64) -> Option<String> {
        if !self.revisions.iter().any(|r| r.generation == generation) {
            return None;
        }
        std::fs::read_to_string(self.text_path(generation)).ok()
    }

    /// Keeps a revision: its text first, then the index, so a crash in
    /// between leaves the previous history whole.
    pub fn record(&mut self, rev: Revision, text: &str) -> Result<(), String> {
        let err =
            |p: &Path, e: std::io::Error| format!("keeping the rules in {}: {e}", p.display());
        private_dir(&self.dir).map_err(|e| err(&self.dir, e))?;
        let tp = self.text_path(rev.generation);
        write_private(&tp, text.as_bytes()).map_err(|e| err(&tp, e))?;
        let mut next = self.revisions.clone();
        next.push(rev);
        let dropped: Vec<u64> = if next.len() > KEPT {
            next.drain(..next.len() - KEPT)
                .map(|r| r.generation)
                .collect()
        } else {
            Vec::new()
        };
        let index = self.dir.join("history.json");
        let body = serde_json::to_vec_pretty(&next).map_err(|e| e.to_string())?;
        write_private(&index, &body).map_err(|e| err(&index, e))?;
        self.revisions = next;
        for g in dropped {
            let _ = std::fs::remove_file(self.text_path(g));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(g: u64) -> Revision {
        Revision {
            generation: g,
            hash: hash(&format!("g{g}")),
            rules: 1,
            at: 1_795_000_000_000 + g,
            by: "token:admin".into(),
            origin: "t".into(),
        }
    }

    #[test]
    fn keeps_history_across_loads_and_trims_old_texts() {
        let d = tempfile::tempdir().unwrap();
        let mut b = RuleBook::load(d.path()).unwrap();
        assert!(b.latest().is_none());
        for g in 1..=(KEPT as u64 + 3) {
            b.record(rev(g), &format!("g{g}")).unwrap();
        }
        let b = RuleBook::load(d.path()).unwrap();
        assert_eq!(b.latest().unwrap().generation, KEPT as u64 + 3);
        assert_eq!(b.history().len(), KEPT);
        assert_eq!(b.history()[0].generation, KEPT as u64 + 3);
        assert_eq!(b.text(5).as_deref(), Some("g5"));
        assert_eq!(b.text(3), None, "trimmed");
        assert!(!d.path().join("rules/gen-3.toml").exists());
        let mode = std::fs::metadata(d.path().join("rules/gen-5.toml"))
            .unwrap()
            .permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
    }
}
