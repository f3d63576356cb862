//! The watchdog: a small process outside the datapath that notices the daemon's
//! death (SIGKILL, panic, OOM kill, or a plain exit) the moment it happens
//! (a pidfd becomes readable), and its hang (stopped, deadlocked, a datapath
//! worker stuck: the heartbeat file stops moving), and applies each workload's
//! `on_failure`: `open` workloads get the kernel path (the tc redirect of
//! `off` mode), `closed` ones stay cut off. When a hung daemon moves again the
//! watchdog takes the kernel path back out; a restarted daemon re-adopts every
//! workload and puts each back in its mode, and starts a new watchdog.

use super::steering::{Intent, SteeringState, WatchEntry, watch_path};
use crate::datapath::Shared;
use crate::port::ifindex;
use crate::steer::netlink::Netlink;
use crate::vocab::{OnFailure, SteeringMode};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the daemon writes its heartbeat, and the watchdog reads it.
const BEAT: Duration = Duration::from_millis(100);

/// A datapath worker that has not looped for this long is stalled: the
/// daemon stops beating.
const WORKER_STALL_MS: u64 = 400;

/// A heartbeat this old means the daemon is hung: fail open. Leaves room for
/// the beat interval on top of [`WORKER_STALL_MS`], within the 1 s a workload
/// may wait.
const HUNG_MS: u64 = 600;

/// The file the heartbeat is written to: CLOCK_MONOTONIC milliseconds, 8
/// bytes little-endian, rewritten in place.
pub fn heartbeat_path(dir: &Path) -> PathBuf {
    dir.join("heartbeat")
}

fn monotonic_ms() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1000 + t.tv_nsec as u64 / 1_000_000
}

/// Starts the daemon's heartbeat: written every [`BEAT`] while every datapath
/// worker loops. The first beat is written before this returns, so a watchdog
/// started after it never reads a stale file.
pub fn beat(state_dir: &Path, shared: Arc<Shared>) -> io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .mode(0o600)
        .open(heartbeat_path(state_dir))?;
    f.write_all_at(&monotonic_ms().to_le_bytes(), 0)?;
    std::thread::Builder::new()
        .name("gw-heartbeat".into())
        .spawn(move || {
            let mut stalled = None;
            loop {
                std::thread::sleep(BEAT);
                let now = shared.stalled_worker(WORKER_STALL_MS);
                if now != stalled {
                    match now {
                        Some(w) => tracing::error!(
                            worker = w,
                            "datapath worker stalled: heartbeat stopped"
                        ),
                        None => tracing::warn!("datapath workers loop again: heartbeat resumed"),
                    }
                    stalled = now;
                }
                if now.is_none() {
                    if f.write_all_at(&monotonic_ms().to_le_bytes(), 0).is_err() {
                        tracing::error!("heartbeat file: write failed");
                    }
                    // The kernel forwards settled flows only while guardwire
                    // beats: a hung guardwire forwards nothing either.
                    if let Some(fp) = shared.fast.get() {
                        fp.keepalive();
                    }
                }
            }
        })?;
    Ok(())
}

/// Age of the daemon's last heartbeat, in ms (none when unreadable).
fn heartbeat_age(state_dir: &Path) -> Option<u64> {
    let f = std::fs::File::open(heartbeat_path(state_dir)).ok()?;
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, 0).ok()?;
    Some(monotonic_ms().saturating_sub(u64::from_le_bytes(b)))
}

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
        // The test hooks that fail or crash an operation are the daemon's.
        .env_remove("GUARDWIRE_CRASH_AT")
        .env_remove("GUARDWIRE_PANIC_ON_PORT")
        .env_remove("GUARDWIRE_FAIL_ATTACH_AT")
        .process_group(0)
        .spawn()?;
    Ok(())
}

/// A pidfd for `pid`.
fn pidfd(pid: i32) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Waits up to `timeout` for the process behind `fd` to end; true when it has.
fn exited(fd: &std::os::fd::OwnedFd, timeout: Duration) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd on a descriptor we hold.
    let r = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as i32) };
    match r {
        r if r > 0 => Ok(true),
        0 => Ok(false),
        _ => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

fn entries(state_dir: &Path) -> Result<Vec<WatchEntry>, String> {
    let p = watch_path(state_dir);
    serde_json::from_slice(&std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?)
        .map_err(|e| format!("{}: {e}", p.display()))
}

/// Installs the kernel path for every inline, `open` workload; returns those
/// it opened.
fn fail_open(nl: &Netlink, entries: &[WatchEntry]) -> Vec<WatchEntry> {
    let mut opened = Vec::new();
    for w in entries {
        // `off` and `mirror` workloads already run on the kernel path.
        if w.on_failure != OnFailure::Open || w.mode != SteeringMode::Inline {
            continue;
        }
        let (Ok(wp), Ok(up)) = (ifindex(&w.workload_port), ifindex(&w.uplink_port)) else {
            tracing::error!(workload = w.name.as_str(), "ports gone; cannot fail open");
            continue;
        };
        match nl.redirect(wp, up).and_then(|_| nl.redirect(up, wp)) {
            Ok(()) => opened.push(w.clone()),
            Err(e) => tracing::error!(workload = w.name.as_str(), "fail open: {e}"),
        }
    }
    opened
}

/// Takes the kernel path out again for workloads a stall had opened.
fn hand_back(nl: &Netlink, opened: &[WatchEntry]) {
    for w in opened {
        for p in [&w.workload_port, &w.uplink_port] {
            if let Err(e) = ifindex(p)
                .map_err(|e| e.to_string())
                .and_then(|i| nl.clear_ingress(i).map_err(|e| e.to_string()))
            {
                tracing::error!(workload = w.name.as_str(), "hand back {p}: {e}");
            }
        }
    }
}

/// Puts back the devices of an attach or detach the daemon died in the middle
/// of (its intent record), so the workload is reachable as before it was
/// attached; the next start mends the saved state. Returns its name.
fn recover(nl: &Netlink, state_dir: &Path) -> Option<String> {
    let mut intent = match Intent::load(state_dir) {
        Ok(Some(i)) if !i.undone => i,
        Ok(_) => return None,
        Err(e) => {
            tracing::error!("{e}");
            return None;
        }
    };
    let name = intent.attachment.name.clone();
    let saved = SteeringState::load(state_dir)
        .map(|s| s.attachments.contains_key(&name))
        .unwrap_or(false);
    if intent.op == "attach" && saved {
        return None; // it finished: failed over with the others
    }
    match crate::steer::attach::detach(nl, &intent.attachment, intent.tmp.as_deref()) {
        Ok(()) => {
            intent.undone = true;
            if let Err(e) = intent.save(state_dir) {
                tracing::error!("{e}");
            }
            tracing::warn!(
                workload = name.as_str(),
                op = intent.op.as_str(),
                "guardwire died during this operation: the workload's devices are back as before its attach"
            );
        }
        Err(e) => tracing::error!(
            workload = name.as_str(),
            "recovering the {}: {e}",
            intent.op
        ),
    }
    Some(name)
}

/// Watches the daemon `pid`: while it is hung, its `open` workloads run on the
/// kernel path (handed back when it moves again); when it ends, they are
/// failed over to the kernel path as listed in `state_dir/watch.json`.
pub fn run(pid: i32, state_dir: &Path) -> Result<(), String> {
    let fd = pidfd(pid).map_err(|e| format!("watch pid {pid}: {e}"))?;
    let nl = Netlink::open(None).map_err(|e| format!("netlink: {e}"))?;
    let mut opened: Vec<WatchEntry> = Vec::new();
    while !exited(&fd, BEAT).map_err(|e| format!("watch pid {pid}: {e}"))? {
        let Some(age) = heartbeat_age(state_dir) else {
            continue;
        };
        if opened.is_empty() && age > HUNG_MS {
            let t0 = Instant::now();
            opened = fail_open(&nl, &entries(state_dir)?);
            tracing::warn!(
                pid,
                heartbeat_ms = age,
                opened = opened.len(),
                ms = t0.elapsed().as_secs_f64() * 1e3,
                "guardwire is hung: open workloads handed to the kernel path"
            );
        } else if !opened.is_empty() && age <= BEAT.as_millis() as u64 * 3 {
            hand_back(&nl, &opened);
            tracing::warn!(
                pid,
                workloads = opened.len(),
                "guardwire moves again: workloads handed back"
            );
            opened.clear();
        }
    }
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
    let recovered = recover(&nl, state_dir);
    let entries: Vec<WatchEntry> = entries(state_dir)?
        .into_iter()
        .filter(|w| Some(&w.name) != recovered.as_ref())
        .collect();
    let opened = fail_open(&nl, &entries).len();
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
