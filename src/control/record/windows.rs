//! Per-key traffic counts in rings of time windows: 1 s × 60, 10 s × 60,
//! 60 s × 60 and 300 s × 12.
//!
//! Pure: the caller supplies the clock through [`Windows::tick`]. Windows are
//! aligned to multiples of their size in unix seconds, so the first window
//! after the first tick may cover only part of its span.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::{Add, AddAssign};

/// Window sizes in seconds and how many closed windows of each are kept.
const LEVELS: [(u64, usize); 4] = [(1, 60), (10, 60), (60, 60), (300, 12)];

/// Start of a slot that holds no window; no aligned window starts there.
const EMPTY: u64 = u64::MAX;

/// Traffic counted in one window. "out" is from the flow's initiator.
#[derive(Clone, Copy, Default, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Counts {
    /// Bytes from the initiator.
    pub bytes_out: u64,
    /// Packets from the initiator.
    pub packets_out: u64,
    /// Bytes towards the initiator.
    pub bytes_in: u64,
    /// Packets towards the initiator.
    pub packets_in: u64,
    /// Flows started.
    pub flows: u64,
}

impl Counts {
    /// Whether every count is zero.
    pub fn is_zero(&self) -> bool {
        *self == Counts::default()
    }
}

// Saturating: a counter stuck at the maximum beats a panic in the datapath.
impl AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.bytes_out = self.bytes_out.saturating_add(o.bytes_out);
        self.packets_out = self.packets_out.saturating_add(o.packets_out);
        self.bytes_in = self.bytes_in.saturating_add(o.bytes_in);
        self.packets_in = self.packets_in.saturating_add(o.packets_in);
        self.flows = self.flows.saturating_add(o.flows);
    }
}

impl Add for Counts {
    type Output = Counts;
    fn add(mut self, o: Counts) -> Counts {
        self += o;
        self
    }
}

/// Closed windows of one size, indexed by `(start / size) % len`. Each slot
/// remembers its window's start, so slots left over from an earlier lap read
/// as zero and idle stretches need no work to skip.
struct Ring {
    size: u64,
    slots: Vec<(u64, Counts)>,
}

impl Ring {
    fn new(size: u64, len: usize) -> Ring {
        Ring {
            size,
            slots: vec![(EMPTY, Counts::default()); len],
        }
    }

    fn index(&self, start: u64) -> usize {
        ((start / self.size) % self.slots.len() as u64) as usize
    }

    fn put(&mut self, start: u64, c: Counts) {
        let i = self.index(start);
        self.slots[i] = (start, c);
    }

    fn get(&self, start: u64) -> Counts {
        match self.slots[self.index(start)] {
            (s, c) if s == start => c,
            _ => Counts::default(),
        }
    }
}

/// One key's open second, open larger windows and closed rings.
struct Series {
    current: Counts,
    /// Partial sums of the open 10 s, 60 s and 300 s windows.
    open: [Counts; LEVELS.len() - 1],
    rings: [Ring; LEVELS.len()],
    /// Last closed second that had counts.
    last_active: Option<u64>,
}

impl Series {
    fn new() -> Series {
        Series {
            current: Counts::default(),
            open: [Counts::default(); LEVELS.len() - 1],
            rings: LEVELS.map(|(size, len)| Ring::new(size, len)),
            last_active: None,
        }
    }

    /// Closes second `old` and every larger window that ends by `now`.
    fn close(&mut self, old: u64, now: u64) {
        let c = std::mem::take(&mut self.current);
        if !c.is_zero() {
            self.last_active = Some(old);
            self.rings[0].put(old, c);
        }
        for (open, ring) in self.open.iter_mut().zip(&mut self.rings[1..]) {
            *open += c;
            let start = old - old % ring.size;
            if now >= start + ring.size {
                let sum = std::mem::take(open);
                if !sum.is_zero() {
                    ring.put(start, sum);
                }
            }
        }
    }
}

/// Counts per key in rings of time windows.
pub struct Windows<K> {
    series: BTreeMap<K, Series>,
    /// The open second; `None` until the first tick.
    now: Option<u64>,
    /// The first tick: nothing before it was observed.
    origin: u64,
}

impl<K: Ord + Clone> Default for Windows<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Ord + Clone> Windows<K> {
    /// No keys, no time yet.
    pub fn new() -> Self {
        Windows {
            series: BTreeMap::new(),
            now: None,
            origin: 0,
        }
    }

    /// Adds `c` to `key` in the open second. Before the first tick, the counts
    /// land in the second that tick opens.
    pub fn add(&mut self, key: &K, c: Counts) {
        if let Some(s) = self.series.get_mut(key) {
            s.current += c;
        } else {
            let mut s = Series::new();
            s.current = c;
            self.series.insert(key.clone(), s);
        }
    }

    /// Closes every second before `now_secs` and every larger window that ends
    /// by then; `now_secs` becomes the open second. Seconds skipped over had no
    /// counts, so a gap longer than a ring leaves it all zero. A clock that
    /// goes backwards is ignored.
    pub fn tick(&mut self, now_secs: u64) {
        let Some(old) = self.now else {
            self.now = Some(now_secs);
            self.origin = now_secs;
            return;
        };
        if now_secs <= old {
            return;
        }
        for s in self.series.values_mut() {
            s.close(old, now_secs);
        }
        self.now = Some(now_secs);
    }

    fn level(window_secs: u64) -> Option<usize> {
        LEVELS.iter().position(|&(size, _)| size == window_secs)
    }

    /// Start of the window of `size` that holds the open second; windows
    /// before it are closed.
    fn open_start(&self, size: u64) -> Option<u64> {
        self.now.map(|n| n - n % size)
    }

    /// The last closed window of `window_secs` (1, 10, 60 or 300); zero for
    /// other sizes, unknown keys or before the first tick.
    pub fn last(&self, key: &K, window_secs: u64) -> Counts {
        let (Some(l), Some(s)) = (Self::level(window_secs), self.series.get(key)) else {
            return Counts::default();
        };
        self.open_start(window_secs)
            .and_then(|end| end.checked_sub(window_secs))
            .map_or_else(Counts::default, |start| s.rings[l].get(start))
    }

    /// The closed windows of `window_secs` still in the ring, as (start in unix
    /// seconds, counts), oldest first. Windows wholly before the first tick are
    /// left out; an unknown key gives zeros, an unknown size nothing.
    pub fn series(&self, key: &K, window_secs: u64) -> Vec<(u64, Counts)> {
        let (Some(l), Some(end)) = (Self::level(window_secs), self.open_start(window_secs)) else {
            return Vec::new();
        };
        let len = LEVELS[l].1 as u64;
        let first = end
            .saturating_sub(len * window_secs)
            .max(self.origin - self.origin % window_secs);
        let ring = self.series.get(key).map(|s| &s.rings[l]);
        (first..end)
            .step_by(window_secs as usize)
            .map(|start| (start, ring.map_or_else(Counts::default, |r| r.get(start))))
            .collect()
    }

    /// Every key, in order.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.series.keys()
    }

    /// Drops keys that had no counts in the last `idle_secs` closed seconds nor
    /// in the open one. Does nothing before the first tick.
    pub fn forget_idle(&mut self, idle_secs: u64) {
        let Some(now) = self.now else { return };
        let since = now.saturating_sub(idle_secs);
        self.series
            .retain(|_, s| !s.current.is_zero() || s.last_active.is_some_and(|t| t >= since));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type W = Windows<(String, String)>;

    fn key(w: &str) -> (String, String) {
        (w.to_string(), "video".to_string())
    }

    fn bytes(n: u64) -> Counts {
        Counts {
            bytes_out: n,
            packets_out: 1,
            bytes_in: 2 * n,
            packets_in: 2,
            flows: 0,
        }
    }

    #[test]
    fn ten_seconds_make_one_ten_second_window() {
        let mut w = W::new();
        let k = key("web");
        w.tick(1000);
        for s in 1000..1010 {
            w.add(&k, bytes(s - 999));
            w.tick(s + 1);
        }
        assert_eq!(w.last(&k, 1), bytes(10));
        let ten = w.last(&k, 10);
        assert_eq!(
            (ten.bytes_out, ten.packets_out, ten.bytes_in),
            (55, 10, 110)
        );
        // The 60 s and 300 s windows are still open.
        assert_eq!(w.last(&k, 60), Counts::default());
        w.tick(1020);
        assert_eq!(w.last(&k, 60).bytes_out, 55);
        assert_eq!(w.last(&k, 300), Counts::default());
        w.tick(1200);
        assert_eq!(w.last(&k, 300).bytes_out, 55);
        // Only the most recent closed window counts, even when it is empty.
        w.tick(1260);
        assert_eq!(w.last(&k, 60), Counts::default());
        assert_eq!(w.last(&k, 7), Counts::default());
        assert!(w.series(&k, 7).is_empty());
    }

    #[test]
    fn catches_up_across_gaps() {
        let mut w = W::new();
        let k = key("web");
        w.tick(100);
        w.add(&k, bytes(5));
        w.tick(101);
        w.add(&k, bytes(7));
        w.tick(125);
        assert_eq!(w.last(&k, 1), Counts::default());
        assert_eq!(w.last(&k, 10), Counts::default());
        let s1 = w.series(&k, 1);
        assert_eq!(s1.len(), 25);
        assert_eq!((s1[0].0, s1[0].1.bytes_out), (100, 5));
        assert_eq!((s1[1].0, s1[1].1.bytes_out), (101, 7));
        assert!(s1[2..].iter().all(|(_, c)| c.is_zero()));
        let s10 = w.series(&k, 10);
        assert_eq!(
            s10.iter()
                .map(|(t, c)| (*t, c.bytes_out))
                .collect::<Vec<_>>(),
            [(100, 12), (110, 0)]
        );
        // A gap longer than every ring leaves nothing.
        w.tick(100 + 3600 * 2);
        for size in [1, 10, 60, 300] {
            assert!(w.series(&k, size).iter().all(|(_, c)| c.is_zero()));
            assert_eq!(w.last(&k, size), Counts::default());
        }
        assert_eq!(w.series(&k, 300).len(), 12);
    }

    #[test]
    fn series_is_oldest_first_and_bounded() {
        let mut w = W::new();
        let k = key("web");
        w.tick(0);
        for s in 0..200 {
            w.add(&k, bytes(s));
            w.tick(s + 1);
        }
        let s1 = w.series(&k, 1);
        assert_eq!(s1.len(), 60);
        assert_eq!(s1.first().map(|(t, c)| (*t, c.bytes_out)), Some((140, 140)));
        assert_eq!(s1.last().map(|(t, c)| (*t, c.bytes_out)), Some((199, 199)));
        let s10 = w.series(&k, 10);
        assert_eq!(s10.len(), 20);
        assert!(s10.windows(2).all(|p| p[0].0 + 10 == p[1].0));
        assert_eq!(s10[19].1.bytes_out, (190..200).sum::<u64>());
        // The 60 s window holding the first tick counts; the open one does not.
        assert_eq!(w.series(&k, 60).len(), 3);
        assert!(w.series(&key("other"), 10).iter().all(|(_, c)| c.is_zero()));
    }

    #[test]
    fn adds_before_the_first_tick_and_backwards_clock() {
        let mut w = W::new();
        let k = key("web");
        w.add(&k, bytes(3));
        assert_eq!(w.last(&k, 1), Counts::default());
        assert!(w.series(&k, 1).is_empty());
        w.tick(50);
        w.tick(40);
        w.add(&k, bytes(4));
        w.tick(51);
        assert_eq!(w.last(&k, 1).bytes_out, 7);
        assert_eq!(w.series(&k, 1), vec![(50, w.last(&k, 1))]);
    }

    #[test]
    fn forgets_idle_keys() {
        let mut w = W::new();
        let (a, b, c) = (key("a"), key("b"), key("c"));
        w.tick(10);
        w.add(&a, bytes(1));
        w.add(&b, bytes(1));
        w.add(&c, Counts::default());
        w.tick(11);
        w.add(&b, bytes(1));
        w.tick(20);
        w.forget_idle(9);
        assert_eq!(w.keys().collect::<Vec<_>>(), [&b]);
        w.add(&a, bytes(1));
        w.forget_idle(1);
        assert_eq!(w.keys().collect::<Vec<_>>(), [&a]);
    }

    #[derive(Debug, Clone)]
    struct Step {
        advance: u64,
        adds: Vec<(u8, u32)>,
    }

    fn step() -> impl Strategy<Value = Step> {
        let advance = prop_oneof![8 => 0u64..4, 1 => 4u64..400, 1 => 400u64..5000];
        (advance, prop::collection::vec((0u8..3, 0u32..10_000), 0..4))
            .prop_map(|(advance, adds)| Step { advance, adds })
    }

    proptest! {
        #[test]
        fn windows_sum_the_adds(
            start in 0u64..100_000,
            steps in prop::collection::vec(step(), 1..300),
            end in 0u64..700,
        ) {
            let mut w: Windows<u8> = Windows::new();
            let mut adds: Vec<(u64, u8, u64)> = Vec::new();
            let mut t = start;
            w.tick(t);
            for s in &steps {
                t += s.advance;
                w.tick(t);
                for &(k, b) in &s.adds {
                    let b = u64::from(b);
                    w.add(&k, Counts { bytes_out: b, flows: 1, ..Counts::default() });
                    adds.push((t, k, b));
                }
            }
            w.tick(t + end);
            for k in 0u8..3 {
                for size in [1u64, 10, 60, 300] {
                    let series = w.series(&k, size);
                    for &(ws, c) in &series {
                        let (mut bytes, mut flows) = (0, 0);
                        for &(at, key, b) in &adds {
                            if key == k && (ws..ws + size).contains(&at) {
                                bytes += b;
                                flows += 1;
                            }
                        }
                        prop_assert_eq!((c.bytes_out, c.flows), (bytes, flows), "key {} size {} window {}", k, size, ws);
                    }
                    prop_assert!(series.windows(2).all(|p| p[0].0 + size == p[1].0));
                    let last = series.last().map(|x| x.1).unwrap_or_default();
                    prop_assert_eq!(w.last(&k, size), last);
                }
            }
        }
    }
}
