//! The records the verdict log keeps in memory, for queries and streams,
//! shared out between workloads so that one flooding cannot push out the
//! others' records.

use super::FlowRecord;
use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

/// The records kept in memory, shared out between workloads: when full, the
/// workload holding the most gives up its oldest record (of two holding as many,
/// the one whose oldest record is older), so a flood from one workload only
/// ever pushes out its own records once it holds more than the others.
///
/// Every step is O(log n): records by sequence number in a B-tree, each
/// workload's sequence numbers in a queue, workloads ordered by their share.
pub(super) struct Ring {
    /// Every record kept, by sequence number.
    pub(super) records: BTreeMap<u64, Arc<FlowRecord>>,
    /// Per workload, the sequence numbers of its records kept, oldest first.
    lanes: HashMap<Arc<str>, VecDeque<u64>>,
    /// Workloads by (records held, oldest first): the last one gives up a record.
    /// The oldest sequence number of each lane is unique, so it keys alone.
    shares: BTreeMap<(usize, Reverse<u64>), Arc<str>>,
    next_seq: u64,
}

impl Ring {
    pub(super) fn new() -> Ring {
        Ring {
            records: BTreeMap::new(),
            lanes: HashMap::new(),
            shares: BTreeMap::new(),
            next_seq: 1,
        }
    }

    /// Adds `r` as the next sequence number; beyond `cap` records, then removes
    /// one as the type describes. Returns the sequence number and the record
    /// removed, to be freed outside the lock.
    pub(super) fn push(
        &mut self,
        r: Arc<FlowRecord>,
        cap: usize,
    ) -> (u64, Option<Arc<FlowRecord>>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        match self.lanes.get_key_value(r.workload.as_str()) {
            Some((name, lane)) => {
                let name = name.clone();
                let key = (lane.len(), Reverse(lane.front().copied().unwrap_or(seq)));
                self.shares.remove(&key);
                let lane = self.lanes.get_mut(&name).expect("lane just found");
                lane.push_back(seq);
                let key = (lane.len(), Reverse(lane.front().copied().unwrap_or(seq)));
                self.shares.insert(key, name);
            }
            None => {
                let name: Arc<str> = Arc::from(r.workload.as_str());
                self.lanes.insert(name.clone(), VecDeque::from([seq]));
                self.shares.insert((1, Reverse(seq)), name);
            }
        }
        self.records.insert(seq, r);
        // Counted with the newcomer, so two workloads flooding settle on equal
        // shares, and a newcomer is never the one to go while others hold more.
        let evicted = if self.records.len() > cap {
            self.evict()
        } else {
            None
        };
        (seq, evicted)
    }

    /// Removes the oldest record of the workload holding the most.
    fn evict(&mut self) -> Option<Arc<FlowRecord>> {
        let ((_, Reverse(oldest)), name) = self.shares.pop_last()?;
        let lane = self.lanes.get_mut(&name)?;
        lane.pop_front();
        match lane.front() {
            Some(&front) => {
                self.shares.insert((lane.len(), Reverse(front)), name);
            }
            None => {
                self.lanes.remove(&name);
            }
        }
        self.records.remove(&oldest)
    }
}

#[cfg(test)]
mod tests {
    use crate::control::record::log::Filter;
    use crate::control::record::log::tests::{T0, ids, mem, of, rec};
    use std::collections::HashMap;

    #[test]
    fn ring_keeps_the_newest() {
        let log = mem(3);
        for i in 0..5 {
            log.record(rec(i), T0);
        }
        assert_eq!(ids(&log.query(&Filter::default(), 10)), [2, 3, 4]);
        assert_eq!(ids(&log.query(&Filter::default(), 2)), [3, 4]);
        assert!(log.query(&Filter::default(), 0).is_empty());
        log.flush();
        assert_eq!((log.lost(), log.written()), (0, 0));
    }

    #[test]
    fn a_flood_from_one_workload_keeps_the_others_records_in_the_ring() {
        let log = mem(10);
        for i in 0..3 {
            log.record(of("b", 1000 + i), T0);
        }
        for i in 0..100 {
            log.record(of("a", i), T0);
        }
        let all = log.query(&Filter::default(), 100);
        assert_eq!(all.len(), 10);
        let b = Filter {
            workload: Some("b".into()),
            ..Default::default()
        };
        assert_eq!(ids(&log.query(&b, 100)), [1000, 1001, 1002]);
        // a keeps its newest 7, in order.
        assert_eq!(ids(&all), [1000, 1001, 1002, 93, 94, 95, 96, 97, 98, 99]);

        // Sequence numbers: b's are 1..=3, a's the newest; pages newest first.
        let page = log.page(&Filter::default(), None, 4);
        let seqs: Vec<u64> = page.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [103, 102, 101, 100]);
        // A `before` cursor steps over the hole the evictions left.
        let page = log.page(&Filter::default(), Some(98), 5);
        let seqs: Vec<u64> = page.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [97, 3, 2, 1]);
        assert_eq!(
            ids(&page.into_iter().map(|(_, r)| r).collect::<Vec<_>>()),
            [93, 1002, 1001, 1000]
        );
        // `since` is oldest first, from just after the cursor.
        let since = log.since(&Filter::default(), 2, 3);
        let seqs: Vec<u64> = since.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [3, 97, 98]);
        assert!(log.since(&Filter::default(), 103, 10).is_empty());
        assert_eq!(*log.subscribe().borrow(), 103);

        // b floods too: the two settle on equal shares, a giving up its oldest.
        for i in 0..100 {
            log.record(of("b", 2000 + i), T0);
        }
        assert_eq!(ids(&log.query(&b, 100)), [2095, 2096, 2097, 2098, 2099]);
        let a = Filter {
            workload: Some("a".into()),
            ..Default::default()
        };
        assert_eq!(ids(&log.query(&a, 100)), [95, 96, 97, 98, 99]);
        // A newcomer gets room too.
        log.record(of("c", 3000), T0);
        assert_eq!(log.query(&Filter::default(), 100).len(), 10);
        assert_eq!(log.query(&a, 100).len() + log.query(&b, 100).len(), 9);
        let seqs: Vec<u64> = log
            .page(&Filter::default(), None, 100)
            .iter()
            .map(|(s, _)| *s)
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");
        assert_eq!(seqs[0], 204);
    }

    #[test]
    fn many_workloads_share_the_ring_evenly() {
        let log = mem(10_000);
        for i in 0..200_000u64 {
            log.record(of(&format!("w{}", i % 500), i), T0);
        }
        let all = log.query(&Filter::default(), 20_000);
        assert_eq!(all.len(), 10_000);
        let mut per: HashMap<&str, usize> = HashMap::new();
        for r in &all {
            *per.entry(r.workload.as_str()).or_default() += 1;
        }
        assert_eq!(per.len(), 500);
        assert!(per.values().all(|&n| n == 20), "{per:?}");
        // A newcomer's record is kept; one of the others gives up its oldest.
        log.record(of("late", 0), T0);
        let late = Filter {
            workload: Some("late".into()),
            ..Default::default()
        };
        assert_eq!(log.query(&late, 10).len(), 1);
        assert_eq!(log.query(&Filter::default(), 20_000).len(), 10_000);
    }
}
