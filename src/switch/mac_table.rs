//! The MAC learning table: which workload port a MAC was last seen on, with aging
//! and a per-port limit.
//!
//! Workers read an immutable snapshot ([`SharedMacTable`], `arc-swap`) without any
//! lock. A new MAC (rare) is learned by copying the table and swapping the copy
//! in; refreshing a known MAC (every frame) is one relaxed atomic store on a
//! timestamp that all copies share.

use crate::vocab::{Mac, PortId};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Debug)]
struct Entry {
    port: PortId,
    seen: Arc<AtomicU64>,
}

/// What a source MAC seen on a port means for the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observe {
    /// Already learned on this port (its timestamp was refreshed).
    Known,
    /// New: learn it.
    New,
    /// Learned on another port until now: move it.
    Moved(PortId),
    /// New or moved, but the port already has its limit of MACs.
    OverLimit,
}

/// One version of the MAC table.
#[derive(Clone, Debug, Default)]
pub struct MacTable {
    entries: HashMap<Mac, Entry>,
    per_port: HashMap<PortId, u32>,
}

impl MacTable {
    /// The port `mac` was learned on.
    pub fn lookup(&self, mac: &Mac) -> Option<PortId> {
        self.entries.get(mac).map(|e| e.port)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is learned.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of MACs learned on `port`.
    pub fn count_on(&self, port: PortId) -> u32 {
        self.per_port.get(&port).copied().unwrap_or(0)
    }

    /// Classifies a source MAC seen on `port` at `now` (seconds) without changing
    /// the table's shape; a `Known` MAC gets its timestamp refreshed.
    pub fn observe(&self, mac: &Mac, port: PortId, now: u64, limit: u32) -> Observe {
        match self.entries.get(mac) {
            Some(e) if e.port == port => {
                if e.seen.load(Ordering::Relaxed) != now {
                    e.seen.store(now, Ordering::Relaxed);
                }
                Observe::Known
            }
            _ if self.count_on(port) >= limit => Observe::OverLimit,
            Some(e) => Observe::Moved(e.port),
            None => Observe::New,
        }
    }

    /// Learns `mac` on `port` at `now`, within `limit` MACs per port.
    pub fn learn(&mut self, mac: Mac, port: PortId, now: u64, limit: u32) -> Observe {
        let o = self.observe(&mac, port, now, limit);
        match o {
            Observe::Known | Observe::OverLimit => {}
            Observe::New | Observe::Moved(_) => {
                if let Observe::Moved(old) = o {
                    self.dec(old);
                }
                self.entries.insert(
                    mac,
                    Entry {
                        port,
                        seen: Arc::new(AtomicU64::new(now)),
                    },
                );
                *self.per_port.entry(port).or_insert(0) += 1;
            }
        }
        o
    }

    fn dec(&mut self, port: PortId) {
        if let Some(c) = self.per_port.get_mut(&port) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.per_port.remove(&port);
            }
        }
    }

    /// Forgets entries not seen for more than `max_age` seconds; returns how many.
    pub fn age_out(&mut self, now: u64, max_age: u64) -> usize {
        let old: Vec<(Mac, PortId)> = self
            .entries
            .iter()
            .filter(|(_, e)| now.saturating_sub(e.seen.load(Ordering::Relaxed)) > max_age)
            .map(|(m, e)| (*m, e.port))
            .collect();
        for (m, p) in &old {
            self.entries.remove(m);
            self.dec(*p);
        }
        old.len()
    }

    /// Forgets every entry on `port`; returns how many.
    pub fn remove_port(&mut self, port: PortId) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| e.port != port);
        self.per_port.remove(&port);
        before - self.entries.len()
    }

    /// Would any entry age out at `now`? (Saves copying the table for nothing.)
    fn has_expired(&self, now: u64, max_age: u64) -> bool {
        self.entries
            .values()
            .any(|e| now.saturating_sub(e.seen.load(Ordering::Relaxed)) > max_age)
    }

    /// All entries as (MAC, port, last seen).
    pub fn entries(&self) -> Vec<(Mac, PortId, u64)> {
        self.entries
            .iter()
            .map(|(m, e)| (*m, e.port, e.seen.load(Ordering::Relaxed)))
            .collect()
    }
}

/// The MAC table the workers share: snapshots read without locks, changes swapped in.
#[derive(Debug, Default)]
pub struct SharedMacTable {
    cur: Arc<ArcSwap<MacTable>>,
}

impl SharedMacTable {
    /// The swap cell, for per-thread `arc_swap::Cache`s.
    pub fn cell(&self) -> Arc<ArcSwap<MacTable>> {
        self.cur.clone()
    }

    /// The current table.
    pub fn snapshot(&self) -> Arc<MacTable> {
        self.cur.load_full()
    }

    /// Learns a batch of (MAC, port) pairs in one swap.
    pub fn learn_all(&self, items: &[(Mac, PortId)], now: u64, limit: u32) {
        if items.is_empty() {
            return;
        }
        self.cur.rcu(|t| {
            let mut t = MacTable::clone(t);
            for (m, p) in items {
                t.learn(*m, *p, now, limit);
            }
            t
        });
    }

    /// Ages the table out (see [`MacTable::age_out`]).
    pub fn age_out(&self, now: u64, max_age: u64) {
        if !self.cur.load().has_expired(now, max_age) {
            return;
        }
        self.cur.rcu(|t| {
            let mut t = MacTable::clone(t);
            t.age_out(now, max_age);
            t
        });
    }

    /// Forgets everything learned on `port`.
    pub fn remove_port(&self, port: PortId) {
        self.cur.rcu(|t| {
            let mut t = MacTable::clone(t);
            t.remove_port(port);
            t
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn learn_refresh_move_age() {
        let mut t = MacTable::default();
        let a = [2, 0, 0, 0, 0, 1];
        assert_eq!(t.learn(a, PortId(0), 10, 4), Observe::New);
        assert_eq!(t.learn(a, PortId(0), 20, 4), Observe::Known);
        assert_eq!(t.learn(a, PortId(2), 30, 4), Observe::Moved(PortId(0)));
        assert_eq!(t.lookup(&a), Some(PortId(2)));
        assert_eq!(t.count_on(PortId(0)), 0);
        assert_eq!(t.count_on(PortId(2)), 1);
        assert_eq!(t.age_out(300, 300), 0);
        assert_eq!(t.age_out(331, 300), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn limit_per_port() {
        let mut t = MacTable::default();
        for i in 0..3u8 {
            assert_eq!(t.learn([2, 0, 0, 0, 0, i], PortId(0), 0, 3), Observe::New);
        }
        assert_eq!(
            t.learn([2, 0, 0, 0, 0, 9], PortId(0), 0, 3),
            Observe::OverLimit
        );
        assert_eq!(t.lookup(&[2, 0, 0, 0, 0, 9]), None);
        // Other ports are not affected.
        assert_eq!(t.learn([2, 0, 0, 0, 0, 9], PortId(2), 0, 3), Observe::New);
    }

    #[test]
    fn refresh_is_shared_between_copies() {
        let shared = SharedMacTable::default();
        let a = [2, 0, 0, 0, 0, 1];
        shared.learn_all(&[(a, PortId(0))], 1, 8);
        let old = shared.snapshot();
        shared.learn_all(&[([2, 0, 0, 0, 0, 2], PortId(0))], 1, 8);
        // A worker still holding the old copy refreshes the entry the new one sees.
        assert_eq!(old.observe(&a, PortId(0), 500, 8), Observe::Known);
        shared.age_out(700, 300);
        let now = shared.snapshot();
        assert_eq!(now.lookup(&a), Some(PortId(0)));
        assert_eq!(now.lookup(&[2, 0, 0, 0, 0, 2]), None);
    }

    proptest! {
        /// Per-port counts always match the entries and never exceed the limit.
        #[test]
        fn counts_consistent(ops in proptest::collection::vec((0u8..20, 0u32..4, 0u64..100, any::<bool>()), 0..300),
                             limit in 1u32..6) {
            let mut t = MacTable::default();
            for (m, p, now, age) in ops {
                if age {
                    t.age_out(now, 30);
                } else {
                    t.learn([2, 0, 0, 0, 0, m], PortId(p), now, limit);
                }
                let mut count: HashMap<PortId, u32> = HashMap::new();
                for (_, p, _) in t.entries() {
                    *count.entry(p).or_insert(0) += 1;
                }
                for p in 0..4 {
                    let c = count.get(&PortId(p)).copied().unwrap_or(0);
                    prop_assert_eq!(c, t.count_on(PortId(p)));
                    prop_assert!(c <= limit);
                }
            }
        }
    }
}
