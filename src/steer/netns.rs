//! Doing things in another network namespace. `setns` is per thread and a socket
//! stays in the namespace it was created in, so a short-lived thread enters the
//! namespace, creates what is needed, and hands it back.

use std::io;
use std::os::fd::AsRawFd;

/// Path of a named namespace as `ip netns` makes them.
pub fn path(name: &str) -> String {
    if name.starts_with('/') {
        name.to_string()
    } else {
        format!("/var/run/netns/{name}")
    }
}

/// Runs `f` on a thread that has entered network namespace `name` (a name under
/// /var/run/netns or a path), and returns its result.
pub fn run_in<T, F>(name: &str, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let p = path(name);
    let ns = std::fs::File::open(&p)
        .map_err(|e| io::Error::new(e.kind(), format!("network namespace {p}: {e}")))?;
    std::thread::spawn(move || {
        // SAFETY: `ns` is an open namespace file; setns only affects this thread,
        // which ends when `f` returns.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(crate::port::os_err("setns"));
        }
        f()
    })
    .join()
    .map_err(|_| io::Error::other("thread in namespace panicked"))?
}
