//! The worker's delay queue: frames a shaper holds until their departure time,
//! earliest first, bounded in bytes, with their buffers reused.

use crate::port::{Frame, VlanTag, VnetHdr};
use crate::vocab::PortId;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A shaped frame waiting for its departure time.
pub(super) struct Held {
    at: u64,
    seq: u64,
    /// The egress port.
    pub out: PortId,
    data: Vec<u8>,
    vnet: VnetHdr,
    vlan: Option<VlanTag>,
}

impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// The worker's delay queue: frames a shaper holds back, earliest first, bounded
/// in bytes. Buffers are reused.
#[derive(Default)]
pub(super) struct DelayQueue {
    heap: BinaryHeap<Reverse<Held>>,
    bytes: usize,
    seq: u64,
    spare: Vec<Vec<u8>>,
}

impl DelayQueue {
    /// Holds a copy of `fr` for `out` until `at`; false when the queue is full.
    pub(super) fn hold(&mut self, at: u64, out: PortId, fr: &Frame<'_>, limit: usize) -> bool {
        let d = fr.data();
        if self.bytes + d.len() > limit {
            return false;
        }
        let mut data = self.spare.pop().unwrap_or_default();
        data.clear();
        data.extend_from_slice(d);
        self.bytes += d.len();
        self.seq += 1;
        self.heap.push(Reverse(Held {
            at,
            seq: self.seq,
            out,
            data,
            vnet: fr.vnet,
            vlan: fr.vlan,
        }));
        true
    }

    /// When the earliest held frame is due.
    pub(super) fn next_at(&self) -> Option<u64> {
        self.heap.peek().map(|h| h.0.at)
    }

    /// The earliest held frame, if it is due at `now`.
    pub(super) fn pop_due(&mut self, now: u64) -> Option<Held> {
        if self.next_at()? > now {
            return None;
        }
        let Reverse(h) = self.heap.pop()?;
        self.bytes -= h.data.len();
        Some(h)
    }

    /// Takes a sent frame's buffer back for reuse.
    pub(super) fn recycle(&mut self, h: Held) {
        self.spare.push(h.data);
    }
}

impl Held {
    /// The held frame, as it will be sent.
    pub(super) fn frame(&self) -> Frame<'_> {
        Frame::new(&self.data, self.vnet, self.vlan)
    }
}
