//! Counters the datapath keeps, readable from outside while it runs. Workers add
//! to them once per burst (relaxed atomics), never once per frame.

use crate::decide::{BurstTally, Received};
use crate::pipeline::Malformed;
use crate::vocab::DropReason;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one port.
#[derive(Debug, Default)]
pub struct PortCounters {
    /// Frames received (a GSO super-frame counts once).
    pub rx_frames: AtomicU64,
    /// Bytes received.
    pub rx_bytes: AtomicU64,
    /// GSO super-frames received.
    pub rx_gso: AtomicU64,
    /// Frames received with a VLAN tag the kernel had stripped.
    pub rx_vlan: AtomicU64,
    /// Frames received in `mirror` mode: inspected, never forwarded by guardwire.
    pub rx_mirrored: AtomicU64,
    /// Frames sent.
    pub tx_frames: AtomicU64,
    /// Bytes sent.
    pub tx_bytes: AtomicU64,
    /// Frames the kernel dropped because the RX ring was full.
    pub kernel_drops: AtomicU64,
    /// Frames too big for a ring slot, discarded whole.
    pub ring_truncated: AtomicU64,
    /// Frames too big for a ring slot, read whole from the socket.
    pub ring_copied: AtomicU64,
    /// Frames received here that guardwire dropped, by reason.
    pub drops: [AtomicU64; DropReason::ALL.len()],
}

/// A copy of one port's counters.
/// Cumulative since the port was opened.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct PortCountersSnapshot {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub rx_gso: u64,
    pub rx_vlan: u64,
    pub rx_mirrored: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    pub kernel_drops: u64,
    pub ring_truncated: u64,
    #[serde(default)]
    pub ring_copied: u64,
    /// Frames that arrived here and the kernel fast path forwarded (a GSO
    /// super-frame once), and their bytes; guardwire's `rx_*` leave them out.
    #[serde(default)]
    pub fast_rx_frames: u64,
    #[serde(default)]
    pub fast_rx_bytes: u64,
    /// Frames the kernel fast path forwarded out of here, and their bytes.
    #[serde(default)]
    pub fast_tx_frames: u64,
    #[serde(default)]
    pub fast_tx_bytes: u64,
    /// Frames received here that guardwire dropped, by reason (reasons with
    /// none left out).
    #[serde(default)]
    pub drops: BTreeMap<String, u64>,
}

impl PortCounters {
    /// Reads all counters.
    pub fn snapshot(&self) -> PortCountersSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PortCountersSnapshot {
            rx_frames: r(&self.rx_frames),
            rx_bytes: r(&self.rx_bytes),
            rx_gso: r(&self.rx_gso),
            rx_vlan: r(&self.rx_vlan),
            rx_mirrored: r(&self.rx_mirrored),
            tx_frames: r(&self.tx_frames),
            tx_bytes: r(&self.tx_bytes),
            kernel_drops: r(&self.kernel_drops),
            ring_truncated: r(&self.ring_truncated),
            ring_copied: r(&self.ring_copied),
            fast_rx_frames: 0,
            fast_rx_bytes: 0,
            fast_tx_frames: 0,
            fast_tx_bytes: 0,
            drops: DropReason::ALL
                .iter()
                .map(|d| (d.name().to_string(), r(&self.drops[*d as usize])))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }

    /// Adds what a burst received on this port.
    pub fn add_received(&self, r: &Received) {
        let add = |a: &AtomicU64, v: u64| {
            if v != 0 {
                a.fetch_add(v, Ordering::Relaxed);
            }
        };
        add(&self.rx_frames, r.frames);
        add(&self.rx_bytes, r.bytes);
        add(&self.rx_gso, r.gso);
        add(&self.rx_vlan, r.vlan);
        add(&self.rx_mirrored, r.mirrored);
    }

    /// Adds a burst's drops of frames received on this port.
    pub fn add_drops(&self, t: &BurstTally) {
        for (a, &v) in self.drops.iter().zip(&t.drops) {
            if v != 0 {
                a.fetch_add(v, Ordering::Relaxed);
            }
        }
    }
}

/// Datapath-wide counters: drops by reason, malformed frames by kind.
#[derive(Debug, Default)]
pub struct DatapathCounters {
    drops: [AtomicU64; DropReason::ALL.len()],
    malformed: [AtomicU64; Malformed::ALL.len()],
    /// Bursts processed.
    pub bursts: AtomicU64,
}

impl DatapathCounters {
    /// Adds a worker's per-burst tallies.
    pub fn add(&self, t: &BurstTally) {
        for (a, &v) in self.drops.iter().zip(&t.drops) {
            if v != 0 {
                a.fetch_add(v, Ordering::Relaxed);
            }
        }
        for (a, &v) in self.malformed.iter().zip(&t.malformed) {
            if v != 0 {
                a.fetch_add(v, Ordering::Relaxed);
            }
        }
        self.bursts.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops by reason name (every reason listed, zeros included).
    pub fn drops(&self) -> BTreeMap<String, u64> {
        DropReason::ALL
            .iter()
            .map(|r| {
                (
                    r.name().to_string(),
                    self.drops[*r as usize].load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// Malformed frames by kind name (every kind listed).
    pub fn malformed(&self) -> BTreeMap<String, u64> {
        Malformed::ALL
            .iter()
            .map(|m| {
                (
                    m.name().to_string(),
                    self.malformed[*m as usize].load(Ordering::Relaxed),
                )
            })
            .collect()
    }
}
