//! How many records each workload may add to the verdict log: a token bucket
//! per workload, and the "suppressed" record standing for those left out.

use super::FlowRecord;
use std::collections::HashMap;

/// Per-workload token buckets of log records, and what was left out of each
/// since its last summary. Holds only workloads that made records and still
/// exist ([`VerdictLog::summarize`](super::VerdictLog::summarize) forgets the others).
pub(super) struct Budget {
    /// Records per second.
    pub(super) rate: u64,
    /// Most records saved up.
    pub(super) burst: u64,
    pub(super) buckets: HashMap<String, Bucket>,
}

pub(super) struct Bucket {
    /// Records that may be made now, in thousandths.
    milli: u64,
    /// When `milli` was last topped up (unix ms).
    at_ms: u64,
    /// Records left out since the last summary, and when the first of them was.
    pub(super) pending: u64,
    pending_since: u64,
    /// Steering mode and enforcement of the first record left out, for the summary.
    mode: String,
    enforced: bool,
    /// Records left out since the workload's first record.
    pub(super) total: u64,
}

impl Budget {
    /// Whether a record of `r`'s workload fits at `now_ms`; when it does not,
    /// it is counted for the workload's next summary.
    pub(super) fn admit(&mut self, r: &mut FlowRecord, now_ms: u64) -> bool {
        let cap = self.burst.saturating_mul(1000);
        if !self.buckets.contains_key(&r.workload) {
            // A workload's first record finds its budget full.
            self.buckets.insert(
                r.workload.clone(),
                Bucket {
                    milli: cap,
                    at_ms: now_ms,
                    pending: 0,
                    pending_since: 0,
                    mode: String::new(),
                    enforced: false,
                    total: 0,
                },
            );
        }
        let Some(b) = self.buckets.get_mut(&r.workload) else {
            return true;
        };
        // A clock that went back tops nothing up until it is past `at_ms` again.
        let elapsed = now_ms.saturating_sub(b.at_ms);
        b.at_ms = b.at_ms.max(now_ms);
        b.milli = b
            .milli
            .saturating_add(elapsed.saturating_mul(self.rate))
            .min(cap);
        if b.milli >= 1000 {
            b.milli -= 1000;
            return true;
        }
        if b.pending == 0 {
            b.pending_since = now_ms;
            b.mode = std::mem::take(&mut r.mode);
            b.enforced = r.enforced;
        }
        b.pending += 1;
        b.total += 1;
        false
    }
}

/// The record standing for `n` records of `workload` left out.
pub(super) fn summary(workload: &str, b: &mut Bucket, now_ms: u64) -> FlowRecord {
    let n = std::mem::take(&mut b.pending);
    FlowRecord {
        event: "suppressed".into(),
        workload: workload.to_string(),
        mode: std::mem::take(&mut b.mode),
        direction: String::new(),
        proto: String::new(),
        src: String::new(),
        dst: String::new(),
        app: String::new(),
        category: String::new(),
        host: None,
        how: None,
        action: String::new(),
        detail: String::new(),
        enforced: b.enforced,
        verdict: String::new(),
        rule: String::new(),
        logged_by: None,
        packets_out: 0,
        bytes_out: 0,
        packets_in: 0,
        bytes_in: 0,
        first_seen: b.pending_since,
        updated_at: now_ms,
        suppressed: Some(n),
        offloaded: false,
    }
}

#[cfg(test)]
mod tests {
    use crate::control::record::log::tests::{T0, of, rec};
    use crate::control::record::log::{Filter, LogConfig, VerdictLog, read_dir};
    use std::path::Path;

    fn budgeted(ring: usize, dir: Option<&Path>, rate: u64, burst: u64) -> VerdictLog {
        VerdictLog::new(LogConfig {
            ring,
            dir: dir.map(Path::to_path_buf),
            rotate_bytes: 0,
            keep: 0,
            records_per_sec: rate,
            burst,
            reserve_bytes: 0,
        })
        .unwrap()
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn event(e: &str) -> Filter {
        Filter {
            event: Some(e.into()),
            ..Default::default()
        }
    }

    #[test]
    fn budget_caps_each_workload_and_one_summary_counts_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let log = budgeted(1000, Some(dir.path()), 10, 20);
        let live = names(&["flood", "quiet"]);
        // The budget starts full: 20 at once, then 10 a second.
        let kept = (0..100).filter(|&i| log.record(of("flood", i), T0)).count();
        assert_eq!(kept, 20);
        for i in 0..5 {
            assert!(
                log.record(of("quiet", 1000 + i), T0),
                "another workload's budget"
            );
        }
        assert_eq!(log.suppressed(), 80);
        assert_eq!(log.summarize(T0 + 5, &live), 1);
        // Nothing more left out: no further summary.
        assert_eq!(log.summarize(T0 + 10, &live), 0);

        let sums = log.query(&event("suppressed"), 10);
        assert_eq!(sums.len(), 1);
        let s = &sums[0];
        assert_eq!(
            (s.workload.as_str(), s.suppressed, s.mode.as_str()),
            ("flood", Some(80), "inline")
        );
        assert_eq!((s.first_seen, s.updated_at, s.packets_out), (T0, T0 + 5, 0));
        assert!(s.enforced);

        // A second later: 10 more, the rest in the next summary.
        let kept = (0..100)
            .filter(|&i| log.record(of("flood", 200 + i), T0 + 1000))
            .count();
        assert_eq!(kept, 10);
        // Half a second tops up half a second's worth.
        let kept = (0..100)
            .filter(|&i| log.record(of("flood", 400 + i), T0 + 1500))
            .count();
        assert_eq!(kept, 5);
        assert_eq!(log.summarize(T0 + 1500, &live), 1);
        assert_eq!(log.query(&event("suppressed"), 10)[1].suppressed, Some(185));
        // A long pause saves up no more than the burst; a clock that went back
        // tops up nothing.
        let kept = (0..100)
            .filter(|&i| log.record(of("flood", 600 + i), T0 + 60_000))
            .count();
        assert_eq!(kept, 20);
        assert!(!log.record(of("flood", 700), T0 + 30_000));
        assert_eq!(log.suppressed(), 80 + 185 + 81);
        assert_eq!(log.suppressed_by_workload(), [("flood".to_string(), 346)]);

        // The files hold exactly what the ring holds: the budget plus summaries.
        log.flush();
        let on_disk = read_dir(dir.path(), &Filter::default(), 10_000).unwrap();
        assert_eq!(on_disk, log.query(&Filter::default(), 10_000));
        let flood = |f: &Filter| {
            on_disk
                .iter()
                .filter(|r| r.workload == "flood" && f.matches(r))
                .count()
        };
        assert_eq!(flood(&event("new")), 20 + 10 + 5 + 20);
        assert_eq!(flood(&event("suppressed")), 2);
        assert_eq!(on_disk.iter().filter(|r| r.workload == "quiet").count(), 5);
    }

    #[test]
    fn summaries_are_not_lost_when_a_workload_goes_and_its_budget_is_forgotten() {
        let log = budgeted(100, None, 1, 1);
        assert!(log.record(of("gone", 0), T0));
        assert!(!log.record(of("gone", 1), T0));
        assert!(!log.record(of("gone", 2), T0));
        assert!(log.record(of("stays", 3), T0));
        assert_eq!(log.summarize(T0, &names(&["stays"])), 1);
        assert_eq!(
            log.query(&event("suppressed"), 10)[0].suppressed,
            Some(2),
            "the last summary is made before the budget is forgotten"
        );
        assert!(log.suppressed_by_workload().is_empty());
        assert_eq!(log.suppressed(), 2);
        // A workload coming back (same name) starts with a full budget.
        assert!(log.record(of("gone", 4), T0));
        assert!(!log.record(of("stays", 5), T0));
        assert_eq!(log.suppressed_by_workload(), [("stays".to_string(), 1)]);
    }

    #[test]
    fn no_budget_keeps_everything() {
        let log = budgeted(1000, None, 0, 0);
        assert!((0..500).all(|i| log.record(rec(i), T0)));
        assert_eq!(log.summarize(T0, &names(&["web"])), 0);
        assert_eq!(log.query(&Filter::default(), 1000).len(), 500);
        assert_eq!(log.suppressed(), 0);
    }
}
