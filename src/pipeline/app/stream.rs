//! The first bytes of one direction of a TCP stream, put in order for the
//! probes (TLS, HTTP, DNS over TCP): out-of-order segments are held until the
//! gap before them fills, retransmits and overlaps are checked against what is
//! already held, and everything held is charged to a node-wide [`Budget`] in
//! which every workload has a fair share.
//!
//! Only the first `window` bytes from the stream's start are looked at: that
//! is where a ClientHello or a request's Host is. What cannot be held (the
//! budget is spent, too many pieces) is refused, and the caller withholds the
//! segment so the receiver never has bytes the probe did not see; its sender
//! retransmits it.

use crate::vocab::WorkloadId;
use rustc_hash::FxHashMap;
use std::sync::{Arc, Mutex};

/// Out-of-order pieces one stream holds at most.
pub const MAX_PIECES: usize = 16;

/// What became of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Take {
    /// The in-order bytes grew: look at [`Stream::data`] again.
    Grew,
    /// Held until the gap before it fills.
    Held,
    /// Nothing new (a retransmit, or bytes before the start).
    Old,
    /// It overlaps held bytes with different ones; nothing of it was taken
    /// (the first bytes win).
    Conflict,
    /// It starts beyond the window.
    Outside,
    /// It could not be held (budget or piece limit): withhold it.
    Refused,
}

/// Memory the streams of every flow may hold, shared fairly by workloads: one
/// workload may hold at most `limit` divided by the number of workloads
/// holding any, so a workload that keeps many streams half-open fills only its
/// own share.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    /// The least a workload may always hold (one full window), budget allowing.
    floor: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    by: FxHashMap<WorkloadId, usize>,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            floor: super::MAX_BUFFER,
            held: Mutex::default(),
        })
    }

    /// Bytes held now, in all.
    pub fn total(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    /// Bytes held now, in all and by `wl`.
    pub fn used(&self, wl: WorkloadId) -> (usize, usize) {
        let h = self.held.lock().unwrap_or_else(|e| e.into_inner());
        (h.total, h.by.get(&wl).copied().unwrap_or(0))
    }

    fn grant(&self, wl: WorkloadId, n: usize) -> bool {
        let mut h = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let mine = h.by.get(&wl).copied().unwrap_or(0);
        let holders = h.by.len() + usize::from(mine == 0);
        let share = (self.limit / holders.max(1)).max(self.floor);
        if h.total + n > self.limit || mine + n > share {
            return false;
        }
        h.total += n;
        *h.by.entry(wl).or_default() += n;
        true
    }

    fn release(&self, wl: WorkloadId, n: usize) {
        if n == 0 {
            return;
        }
        let mut h = self.held.lock().unwrap_or_else(|e| e.into_inner());
        h.total = h.total.saturating_sub(n);
        if let Some(m) = h.by.get_mut(&wl) {
            *m = m.saturating_sub(n);
            if *m == 0 {
                h.by.remove(&wl);
            }
        }
    }
}

/// Bytes one stream holds of a workload's share; given back when dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<Budget>,
    workload: WorkloadId,
    bytes: usize,
}

impl Charge {
    /// Nothing charged yet, to `workload`'s share of `budget`.
    pub fn new(budget: &Arc<Budget>, workload: WorkloadId) -> Charge {
        Charge {
            budget: budget.clone(),
            workload,
            bytes: 0,
        }
    }

    fn grow(&mut self, n: usize) -> bool {
        let ok = self.budget.grant(self.workload, n);
        if ok {
            self.bytes += n;
        }
        ok
    }

    fn shrink(&mut self, n: usize) {
        let n = n.min(self.bytes);
        self.budget.release(self.workload, n);
        self.bytes -= n;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(self.workload, self.bytes);
    }
}

/// One direction of a TCP stream from a known sequence number.
#[derive(Debug)]
pub struct Stream {
    /// Sequence number of `data[0]`.
    start: u32,
    /// The in-order bytes from `start`.
    data: Vec<u8>,
    /// Pieces beyond a gap: (offset from `start`, bytes), sorted, disjoint,
    /// none touching `data`.
    pieces: Vec<(usize, Vec<u8>)>,
    /// Bytes from `start` looked at.
    window: usize,
    charge: Charge,
}

impl Stream {
    /// A stream whose byte 0 has sequence number `start`, looked at up to
    /// `window` bytes.
    pub fn new(start: u32, window: usize, charge: Charge) -> Stream {
        Stream {
            start,
            data: Vec::new(),
            pieces: Vec::new(),
            window,
            charge,
        }
    }

    /// The in-order bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Sequence number of the next in-order byte.
    pub fn next_seq(&self) -> u32 {
        self.start.wrapping_add(self.data.len() as u32)
    }

    /// Whether bytes beyond a gap are held.
    pub fn has_gap(&self) -> bool {
        !self.pieces.is_empty()
    }

    /// Whether the window is full of in-order bytes.
    pub fn full(&self) -> bool {
        self.data.len() >= self.window
    }

    /// Takes a segment's payload starting at sequence number `seq`.
    pub fn take(&mut self, seq: u32, bytes: &[u8]) -> Take {
        let rel = seq.wrapping_sub(self.start) as i32;
        let (mut off, mut bytes) = (rel.max(0) as usize, bytes);
        if rel < 0 {
            // Starts before byte 0: only what follows it counts.
            match bytes.get(rel.unsigned_abs() as usize..) {
                Some(rest) if !rest.is_empty() => bytes = rest,
                _ => return Take::Old,
            }
            off = 0;
        }
        if off >= self.window {
            return Take::Outside;
        }
        bytes = &bytes[..bytes.len().min(self.window - off)];
        let end = off + bytes.len();
        // Everything already held must agree with it.
        let d = self.data.len();
        if off < d && self.data[off..end.min(d)] != bytes[..end.min(d) - off] {
            return Take::Conflict;
        }
        for (p_off, p) in &self.pieces {
            let (lo, hi) = (off.max(*p_off), end.min(p_off + p.len()));
            if lo < hi && p[lo - p_off..hi - p_off] != bytes[lo - off..hi - off] {
                return Take::Conflict;
            }
        }
        let fresh = self.uncovered(off, end);
        if fresh.is_empty() {
            return Take::Old;
        }
        let new_bytes: usize = fresh.iter().map(|(a, b)| b - a).sum();
        let new_pieces = if off <= d { 0 } else { fresh.len() };
        if self.pieces.len() + new_pieces > MAX_PIECES || !self.charge.grow(new_bytes) {
            return Take::Refused;
        }
        if off <= d {
            self.data.extend_from_slice(&bytes[d - off..]);
            self.absorb();
            return Take::Grew;
        }
        for (a, b) in fresh {
            let at = self.pieces.partition_point(|(o, _)| *o < a);
            self.pieces
                .insert(at, (a, bytes[a - off..b - off].to_vec()));
        }
        self.coalesce();
        Take::Held
    }

    /// Drops the first `n` in-order bytes (read and done with): the stream
    /// starts after them.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.data.len());
        self.data.drain(..n);
        self.start = self.start.wrapping_add(n as u32);
        for (o, _) in &mut self.pieces {
            *o -= n;
        }
        self.charge.shrink(n);
    }

    /// The parts of `off..end` neither `data` nor a piece holds.
    fn uncovered(&self, off: usize, end: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut at = off.max(self.data.len());
        for (p_off, p) in &self.pieces {
            let p_end = p_off + p.len();
            if p_end <= at {
                continue;
            }
            if *p_off >= end {
                break;
            }
            if *p_off > at {
                out.push((at, *p_off));
            }
            at = at.max(p_end);
        }
        if at < end {
            out.push((at, end));
        }
        out
    }

    /// Moves the pieces the in-order bytes now reach into them.
    fn absorb(&mut self) {
        while let Some((p_off, _)) = self.pieces.first() {
            if *p_off > self.data.len() {
                break;
            }
            let (p_off, p) = self.pieces.remove(0);
            let skip = self.data.len() - p_off;
            if let Some(rest) = p.get(skip..) {
                self.data.extend_from_slice(rest);
            }
        }
    }

    /// Joins pieces that touch.
    fn coalesce(&mut self) {
        let mut i = 0;
        while i + 1 < self.pieces.len() {
            if self.pieces[i].0 + self.pieces[i].1.len() == self.pieces[i + 1].0 {
                let (_, next) = self.pieces.remove(i + 1);
                self.pieces[i].1.extend_from_slice(&next);
            } else {
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const WL: WorkloadId = WorkloadId::new(1, 0);

    fn stream(start: u32, window: usize) -> (Stream, Arc<Budget>) {
        let b = Budget::new(1 << 20);
        (Stream::new(start, window, Charge::new(&b, WL)), b)
    }

    #[test]
    fn reversed_segments_come_out_in_order() {
        let (mut s, b) = stream(u32::MAX - 5, 1000);
        let msg = b"0123456789abcdefghij";
        for i in (1..4).rev() {
            let seq = (u32::MAX - 5).wrapping_add(i * 5);
            let piece = &msg[i as usize * 5..i as usize * 5 + 5];
            assert_eq!(s.take(seq, piece), Take::Held);
        }
        assert_eq!(s.pieces.len(), 1, "touching pieces are joined");
        assert_eq!(s.take(u32::MAX - 5, &msg[..5]), Take::Grew);
        assert_eq!(s.data(), msg);
        assert!(!s.has_gap());
        assert_eq!(b.used(WL), (20, 20));
        drop(s);
        assert_eq!(b.used(WL), (0, 0));
    }

    #[test]
    fn retransmits_overlaps_and_conflicts() {
        let (mut s, _b) = stream(100, 1000);
        assert_eq!(s.take(100, b"hello "), Take::Grew);
        assert_eq!(s.take(100, b"hello "), Take::Old);
        assert_eq!(s.take(90, b"0123456789hel"), Take::Old);
        assert_eq!(s.take(103, b"lo world"), Take::Grew);
        assert_eq!(s.data(), b"hello world");
        // The same span with other bytes: the first ones stay.
        assert_eq!(s.take(106, b"WORLD!"), Take::Conflict);
        assert_eq!(s.data(), b"hello world");
        // A held piece is checked too.
        assert_eq!(s.take(120, b"abc"), Take::Held);
        assert_eq!(s.take(121, b"xc"), Take::Conflict);
        assert_eq!(s.take(121, b"bcd"), Take::Held);
        assert_eq!(s.pieces, vec![(20, b"abcd".to_vec())]);
    }

    #[test]
    fn window_pieces_and_budget_bound_it() {
        let (mut s, _b) = stream(0, 100);
        assert_eq!(s.take(100, b"x"), Take::Outside);
        assert_eq!(s.take(95, b"0123456789"), Take::Held);
        assert_eq!(s.pieces[0].1.len(), 5, "cut at the window");
        for i in 0..MAX_PIECES as u32 - 1 {
            assert_eq!(s.take(10 + 4 * i, b"a"), Take::Held);
        }
        assert_eq!(s.take(80, b"a"), Take::Refused);
        // A budget of 8 bytes.
        let b = Budget {
            limit: 8,
            floor: 0,
            held: Mutex::default(),
        };
        let b = Arc::new(b);
        let mut s = Stream::new(0, 100, Charge::new(&b, WL));
        assert_eq!(s.take(0, b"12345678"), Take::Grew);
        assert_eq!(s.take(8, b"9"), Take::Refused);
        s.consume(4);
        assert_eq!(b.used(WL), (4, 4));
        assert_eq!(s.take(8, b"9"), Take::Grew);
        assert_eq!(s.data(), b"56789");
    }

    #[test]
    fn shares_are_fair() {
        let b = Arc::new(Budget {
            limit: 100,
            floor: 10,
            held: Mutex::default(),
        });
        let mut hog = Charge::new(&b, WorkloadId::new(1, 0));
        assert!(hog.grow(60));
        let mut other = Charge::new(&b, WorkloadId::new(2, 0));
        // Two holders: 50 each. The hog may not grow; the other may take 40.
        assert!(other.grow(10));
        assert!(!hog.grow(1));
        assert!(other.grow(30));
        assert!(!other.grow(1), "the whole budget is used");
        drop(hog);
        assert!(other.grow(50));
        assert_eq!(b.used(WorkloadId::new(2, 0)), (90, 90));
        assert!(!other.grow(11));
    }

    proptest! {
        /// Any order, with duplicates, gives the bytes back in order.
        #[test]
        fn any_order_gives_the_stream(
            cuts in prop::collection::vec(0usize..300, 0..12),
            order in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
            isn in any::<u32>(),
        ) {
            let msg: Vec<u8> = (0..300u32).map(|i| (i * 7 % 251) as u8).collect();
            let mut cuts = cuts;
            cuts.sort_unstable();
            cuts.dedup();
            let mut segs = Vec::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([300]) {
                if c > at {
                    segs.push((at, c));
                    at = c;
                }
            }
            let (mut s, b) = stream(isn, 1000);
            let mut sent: Vec<(usize, usize)> = order.iter().map(|i| segs[i.index(segs.len())]).collect();
            sent.extend(segs.iter().copied());
            for (a, z) in sent {
                let t = s.take(isn.wrapping_add(a as u32), &msg[a..z]);
                prop_assert_ne!(t, Take::Conflict);
                if s.pieces.len() >= MAX_PIECES {
                    break;
                }
            }
            if s.data().len() == 300 {
                prop_assert_eq!(s.data(), &msg[..]);
                prop_assert!(!s.has_gap());
            }
            prop_assert_eq!(b.used(WL).0, s.data().len() + s.pieces.iter().map(|p| p.1.len()).sum::<usize>());
        }
    }
}
