//! The watchdog: a small process outside the datapath that notices the daemon's
//! death (SIGKILL, panic, OOM kill, or a plain exit) the moment it happens
//! (a pidfd becomes readable) and applies each workload's `on_failure`: `open`
//! workloads get the kernel path (the tc redirect of `off` mode), `closed` ones
//! stay cut off. A restarted daemon re-adopts every workload and puts each back
//! in its mode (removing the redirect for `inline` ones), and starts a new
//! watchdog.

use super::steering::{WatchEntry, watch_path};
use crate::port::ifindex;
use crate::steer::netlink::Netlink;
use crate::steer::{OnFailure, SteeringMode};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Instant;

/// Starts `guardwire watchdog` for this process, in its own process group so a
/// terminal's Ctrl-C that stops the daemon does not stop the watchdog too.
pub fn spawn(state_dir: &Path) -> io::Result<()> {
    let exe = std::env::current_exe()?;
    std::process::Command::new(exe)
        .arg("watchdog")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg("--state-dir")
        .arg(state_dir)
        .stdin(std::process::Stdio::null())
        .process_group(0)
        .spawn()?;
    Ok(())
}

fn wait_for_exit(pid: i32) -> io::Result<()> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd; blocks until the process exits.
        let r = unsafe { libc::poll(&mut p, 1, -1) };
        if r > 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            // SAFETY: closes the pidfd opened above.
            unsafe { libc::close(fd) };
            return Err(e);
        }
    }
    // SAFETY: closes the pidfd opened above.
    unsafe { libc::close(fd) };
    Ok(())
}

/// Waits for process `pid` to end, then fails `open` workloads over to the
/// kernel path as listed in `state_dir/watch.json`.
pub fn run(pid: i32, state_dir: &Path) -> Result<(), String> {
    wait_for_exit(pid).map_err(|e| format!("watch pid {pid}: {e}"))?;
    let t0 = Instant::now();
    // Only for our own daemon: if a new one already holds the state, the
    // workloads are its to steer, not ours to hand to the kernel.
    let _lock = match super::files::StateLock::take(state_dir, std::time::Duration::ZERO) {
        Ok(l) => l,
        Err(e) => {
            tracing::info!(pid, "daemon gone, but the state is held again: {e}");
            return Ok(());
        }
    };
    let p = watch_path(state_dir);
    let entries: Vec<WatchEntry> =
        serde_json::from_slice(&std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?)
            .map_err(|e| format!("{}: {e}", p.display()))?;
    let nl = Netlink::open(None).map_err(|e| format!("netlink: {e}"))?;
    let mut opened = 0;
    for w in &entries {
        // `off` and `mirror` workloads already run on the kernel path.
        if w.on_failure != OnFailure::Open || w.mode != SteeringMode::Inline {
            continue;
        }
        let (Ok(wp), Ok(up)) = (ifindex(&w.workload_port), ifindex(&w.uplink_port)) else {
            tracing::error!(workload = w.name.as_str(), "ports gone; cannot fail open");
            continue;
        };
        match nl.redirect(wp, up).and_then(|_| nl.redirect(up, wp)) {
            Ok(()) => opened += 1,
            Err(e) => tracing::error!(workload = w.name.as_str(), "fail open: {e}"),
        }
    }
    tracing::warn!(
        pid,
        opened,
        closed = entries
            .iter()
            .filter(|w| w.on_failure == OnFailure::Closed && w.mode == SteeringMode::Inline)
            .count(),
        ms = t0.elapsed().as_secs_f64() * 1e3,
        "guardwire is gone: open workloads handed to the kernel path"
    );
    Ok(())
}
