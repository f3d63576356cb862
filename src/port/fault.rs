//! A port wrapper that damages received frames on purpose, like smoltcp's
//! `FaultInjector`: tests use it to prove that cut or garbage frames are counted
//! and never crash the pipeline. Deterministic (every Nth frame), so a test can
//! predict the counts.

use super::{BurstFn, Frame, KernelStats, Port, SendReport};
use serde::Deserialize;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};

/// Which received frames to damage. 0 disables a fault.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    /// Drop every Nth received frame.
    #[serde(default)]
    pub drop_every: u64,
    /// Cut every Nth received frame to `truncate_to` bytes.
    #[serde(default)]
    pub truncate_every: u64,
    /// Length a cut frame keeps.
    #[serde(default = "default_truncate_to")]
    pub truncate_to: usize,
    /// Replace the bytes after the MAC addresses of every Nth frame with garbage.
    #[serde(default)]
    pub garbage_every: u64,
}

fn default_truncate_to() -> usize {
    20
}

/// Wraps a port and damages what it receives.
pub struct FaultPort<P> {
    inner: P,
    cfg: FaultConfig,
    seen: AtomicU64,
}

impl<P: Port> FaultPort<P> {
    /// Wraps `inner`.
    pub fn new(inner: P, cfg: FaultConfig) -> Self {
        FaultPort {
            inner,
            cfg,
            seen: AtomicU64::new(0),
        }
    }
}

fn hits(every: u64, n: u64) -> bool {
    every != 0 && n.is_multiple_of(every)
}

impl<P: Port> Port for FaultPort<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn fd(&self) -> RawFd {
        self.inner.fd()
    }
    fn burst_limit(&self) -> usize {
        self.inner.burst_limit()
    }

    fn recv_burst(&self, max: usize, f: &mut BurstFn<'_>) -> io::Result<usize> {
        self.inner.recv_burst(max, &mut |frames| {
            let mut garbage: Vec<Vec<u8>> = Vec::new();
            // (index in burst, garbage buffer, cut)
            let mut plan: Vec<(usize, Option<usize>, bool)> = Vec::with_capacity(frames.len());
            for (i, fr) in frames.iter().enumerate() {
                let n = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
                if hits(self.cfg.drop_every, n) {
                    continue;
                }
                if hits(self.cfg.garbage_every, n) {
                    let d = fr.data();
                    let mut g = d[..d.len().min(12)].to_vec();
                    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    for _ in 0..(d.len().saturating_sub(12)).clamp(2, 200) {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        g.push(x as u8);
                    }
                    plan.push((i, Some(garbage.len()), false));
                    garbage.push(g);
                    continue;
                }
                plan.push((i, None, hits(self.cfg.truncate_every, n)));
            }
            let out: Vec<Frame<'_>> = plan
                .iter()
                .map(|&(i, g, cut)| {
                    let fr = frames[i];
                    match g {
                        Some(gi) => Frame::new(&garbage[gi], Default::default(), None),
                        None if cut => {
                            let d = fr.data();
                            Frame::new(&d[..d.len().min(self.cfg.truncate_to)], fr.vnet, fr.vlan)
                        }
                        None => fr,
                    }
                })
                .collect();
            if !out.is_empty() {
                f(&out);
            }
        })
    }
    fn send_burst(&self, frames: &[Frame<'_>], pick: &[u16]) -> SendReport {
        self.inner.send_burst(frames, pick)
    }
    fn kernel_stats(&self) -> KernelStats {
        self.inner.kernel_stats()
    }
    fn set_receiving(&self, on: bool) -> io::Result<()> {
        self.inner.set_receiving(on)
    }
}
