//! Files of the state directory: readable by root only (rules, tokens,
//! steering state and the verdict log say what the node enforces and how to
//! reach it), and replaced atomically so a crash leaves the old or the new.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` (and missing parents) with mode 0700; an existing one is left
/// as it is (it may be a directory the operator configured).
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The state directory: created, or made, mode 0700, so whatever older files
/// inside it say is readable by root only.
pub fn state_dir(dir: &Path) -> std::io::Result<()> {
    private_dir(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Writes `body` to `path` with mode 0600: a temporary file, fsync, rename.
pub fn write_private(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(body)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The state directory's lock: one daemon (or the watchdog acting for a dead
/// one) at a time. Held for as long as the value lives.
pub struct StateLock {
    _file: std::fs::File,
}

impl StateLock {
    /// Takes the lock of `dir`, retrying for up to `wait` while another holds
    /// it (a watchdog finishing its work), and writes our pid into it.
    pub fn take(dir: &Path, wait: std::time::Duration) -> std::io::Result<StateLock> {
        use std::os::fd::AsRawFd;
        let path = dir.join("lock");
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)?;
        let t0 = std::time::Instant::now();
        loop {
            // SAFETY: flock on a descriptor we own; it blocks nothing (LOCK_NB).
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(e);
            }
            if t0.elapsed() >= wait {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!(
                        "{} is in use by another guardwire (pid {}): one daemon per state directory",
                        dir.display(),
                        holder.trim()
                    ),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        f.set_len(0)?;
        f.write_all(format!("{}\n", std::process::id()).as_bytes())?;
        Ok(StateLock { _file: f })
    }
}

/// Reads JSON file `path`; `None` if there is none. Errors name the file.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, String> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes `value` as JSON to `path` in private directory `dir`, durably and
/// atomically (see [`write_private`]). Errors name the file.
pub fn write_json<T: serde::Serialize>(dir: &Path, path: &Path, value: &T) -> Result<(), String> {
    private_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let body = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
    write_private(path, &body).map_err(|e| format!("{}: {e}", path.display()))
}
