//! The verdict log: one record per flow decision and per update as the flow
//! ages, kept in a memory ring for the API and appended to rotated JSON-lines
//! files by one background writer so the datapath never waits on a disk.
//!
//! One workload cannot crowd the others out: each has a budget of records per
//! second (records over it are left out and counted in one "suppressed" summary
//! record per workload and sweep), and a full ring gives up the oldest record
//! of the workload holding the most, not the oldest of all.
//!
//! - `schema`: [`FlowRecord`], one record, and how its times are written;
//! - `filter`: [`Filter`], which records a query asks for, and [`parse_time`];
//! - `ring`: the records kept in memory, shared out between workloads;
//! - `budget`: each workload's records per second;
//! - `writer`: the background thread appending to rotated files;
//! - `reader`: [`read_dir`], reading those files back.

mod budget;
mod filter;
mod reader;
mod ring;
mod schema;
mod writer;

pub use filter::{Filter, parse_time};
pub use reader::read_dir;
pub use schema::{FlowRecord, now_ms};
pub(crate) use schema::{de_millis, ser_millis};

use budget::{Budget, summary};
use crossbeam_channel::Sender;
use ring::Ring;
use std::collections::HashMap;
use std::io;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use writer::{CHANNEL_CAP, Msg, Writer, open_current};

/// Name of the file records are appended to; rotated copies get `.1` (newest) … `.N`.
pub const FILE_NAME: &str = "verdicts.jsonl";

/// Where and how much the verdict log keeps.
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// Records kept in memory for [`VerdictLog::query`]; 0 keeps none.
    pub ring: usize,
    /// Directory of the JSON-lines files; `None` keeps records in memory only.
    pub dir: Option<PathBuf>,
    /// The current file is rotated before it would grow past this size; 0 never rotates.
    pub rotate_bytes: u64,
    /// Rotated files kept; 0 discards the current file when it is full.
    pub keep: usize,
    /// Records per second one workload may add (ring and files alike); records
    /// over it are left out and counted in a "suppressed" summary. 0: no limit.
    pub records_per_sec: u64,
    /// Records a workload may add at once: its budget saves up to this many.
    /// Records come once a second, so below `records_per_sec` it caps the rate.
    pub burst: u64,
    /// Bytes the log leaves free on its filesystem, for the node's state
    /// (rules, steering, intent records): below that it deletes its oldest
    /// rotated files, then stops writing until there is room. 0: no check.
    pub reserve_bytes: u64,
}

/// Counters shared with the writer thread.
#[derive(Default)]
struct LogCounters {
    lost: AtomicU64,
    suppressed: AtomicU64,
    written: AtomicU64,
    failed: AtomicU64,
    disk_errors: AtomicU64,
    /// Records not written because the filesystem had no room beyond the reserve.
    no_room: AtomicU64,
}

/// The verdict log: a memory ring plus, optionally, rotated files on disk.
///
/// [`record`](Self::record) never waits on the disk; records the writer cannot
/// keep up with are counted in [`lost`](Self::lost), records over a workload's
/// budget in [`suppressed`](Self::suppressed).
pub struct VerdictLog {
    // Records are shared between the ring and the writer instead of cloned; each
    // carries its sequence number (1, 2, ...), the cursor of queries and streams.
    ring: Mutex<Ring>,
    ring_cap: usize,
    /// `None`: no limit per workload.
    budget: Option<Mutex<Budget>>,
    tx: Option<Sender<Msg>>,
    writer: Option<JoinHandle<()>>,
    counters: Arc<LogCounters>,
    /// The newest sequence number, for streams waiting on new records.
    latest: tokio::sync::watch::Sender<u64>,
}

impl VerdictLog {
    /// Creates the log. With a directory, creates it, opens the current file and
    /// starts the writer thread.
    pub fn new(cfg: LogConfig) -> io::Result<VerdictLog> {
        let mut log = VerdictLog::memory(cfg.ring);
        if cfg.records_per_sec > 0 {
            log.budget = Some(Mutex::new(Budget {
                rate: cfg.records_per_sec,
                burst: cfg.burst,
                buckets: HashMap::new(),
            }));
        }
        if let Some(dir) = &cfg.dir {
            crate::control::files::private_dir(dir)?;
            let (file, size) = open_current(dir)?;
            let (tx, rx) = crossbeam_channel::bounded(CHANNEL_CAP);
            let w = Writer::new(&cfg, dir, Some(file), size, log.counters.clone());
            log.writer = Some(w.spawn(rx)?);
            log.tx = Some(tx);
        }
        Ok(log)
    }

    fn memory(ring: usize) -> VerdictLog {
        VerdictLog {
            ring: Mutex::new(Ring::new()),
            ring_cap: ring,
            budget: None,
            tx: None,
            writer: None,
            counters: Arc::default(),
            latest: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Adds a record made at `now_ms` (unix ms of a clock that does not jump;
    /// the sweep passes the datapath clock's) to the ring and hands it to the
    /// writer without blocking, if its workload's budget allows; returns whether
    /// it did. A record left out is counted for the next [`summarize`](Self::summarize).
    pub fn record(&self, mut r: FlowRecord, now_ms: u64) -> bool {
        if let Some(b) = &self.budget {
            let admitted = b
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .admit(&mut r, now_ms);
            if !admitted {
                self.counters.suppressed.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        }
        self.append(Arc::new(r));
        true
    }

    /// Adds one "suppressed" record for each workload that had records left out
    /// since the last call (the sweep calls it once a second, after its records),
    /// then forgets the budgets of workloads not in `live`. Returns the number of
    /// summaries added.
    pub fn summarize(&self, now_ms: u64, live: &[String]) -> usize {
        let Some(b) = &self.budget else { return 0 };
        let summaries: Vec<FlowRecord> = {
            let mut b = b.lock().unwrap_or_else(PoisonError::into_inner);
            let out = b
                .buckets
                .iter_mut()
                .filter(|(_, k)| k.pending > 0)
                .map(|(w, k)| summary(w, k, now_ms))
                .collect();
            if !b.buckets.is_empty() {
                let live: std::collections::HashSet<&str> =
                    live.iter().map(String::as_str).collect();
                b.buckets.retain(|w, _| live.contains(w.as_str()));
            }
            out
        };
        let n = summaries.len();
        for s in summaries {
            self.append(Arc::new(s));
        }
        n
    }

    fn append(&self, r: Arc<FlowRecord>) {
        if self.ring_cap > 0 {
            let (seq, evicted) = self
                .ring
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(r.clone(), self.ring_cap);
            // Freed outside the lock so the next caller is not held up.
            drop(evicted);
            self.latest.send_replace(seq);
        }
        // Full, or the writer is gone: either way the record misses the file.
        if let Some(tx) = &self.tx
            && tx.try_send(Msg::Record(r)).is_err()
        {
            self.counters.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The newest `limit` records in the ring that match `f`, newest last.
    pub fn query(&self, f: &Filter, limit: usize) -> Vec<FlowRecord> {
        let mut page = self.page(f, None, limit);
        page.reverse();
        page.into_iter().map(|(_, r)| r).collect()
    }

    /// Up to `limit` records matching `f` with a sequence number below `before`
    /// (all when `None`), newest first, with their sequence numbers.
    pub fn page(&self, f: &Filter, before: Option<u64>, limit: usize) -> Vec<(u64, FlowRecord)> {
        // Only cheap comparisons under the lock; the copies are made after it.
        let picked: Vec<(u64, Arc<FlowRecord>)> = {
            let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
            let end = before.map_or(Bound::Unbounded, Bound::Excluded);
            ring.records
                .range((Bound::Unbounded, end))
                .rev()
                .filter(|(_, r)| f.matches(r))
                .take(limit)
                .map(|(s, r)| (*s, r.clone()))
                .collect()
        };
        picked.into_iter().map(|(s, r)| (s, (*r).clone())).collect()
    }

    /// Up to `limit` records matching `f` with a sequence number above `after`,
    /// oldest first: what a stream that has seen `after` sends next.
    pub fn since(&self, f: &Filter, after: u64, limit: usize) -> Vec<(u64, FlowRecord)> {
        let picked: Vec<(u64, Arc<FlowRecord>)> = {
            let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
            ring.records
                .range((Bound::Excluded(after), Bound::Unbounded))
                .filter(|(_, r)| f.matches(r))
                .take(limit)
                .map(|(s, r)| (*s, r.clone()))
                .collect()
        };
        picked.into_iter().map(|(s, r)| (s, (*r).clone())).collect()
    }

    /// The newest sequence number so far, and a way to wait for the next one.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// Records dropped because the writer's queue was full or the writer was gone.
    pub fn lost(&self) -> u64 {
        self.counters.lost.load(Ordering::Relaxed)
    }

    /// Records left out over their workload's budget, since start.
    pub fn suppressed(&self) -> u64 {
        self.counters.suppressed.load(Ordering::Relaxed)
    }

    /// Records left out per workload since its first record, for the workloads
    /// still kept (see [`summarize`](Self::summarize)) that had any left out.
    pub fn suppressed_by_workload(&self) -> Vec<(String, u64)> {
        let Some(b) = &self.budget else {
            return Vec::new();
        };
        let b = b.lock().unwrap_or_else(PoisonError::into_inner);
        let mut v: Vec<(String, u64)> = b
            .buckets
            .iter()
            .filter(|(_, k)| k.total > 0)
            .map(|(w, k)| (w.clone(), k.total))
            .collect();
        v.sort();
        v
    }

    /// Records flushed to the file.
    pub fn written(&self) -> u64 {
        self.counters.written.load(Ordering::Relaxed)
    }

    /// Records the writer dropped because they could not be encoded or written.
    pub fn failed(&self) -> u64 {
        self.counters.failed.load(Ordering::Relaxed)
    }

    /// Records not written to the files because their filesystem was down to
    /// the reserve left for the node's state (they are still in memory).
    pub fn no_room(&self) -> u64 {
        self.counters.no_room.load(Ordering::Relaxed)
    }

    /// Failed disk operations (open, write, flush, rotate).
    pub fn disk_errors(&self) -> u64 {
        self.counters.disk_errors.load(Ordering::Relaxed)
    }

    /// Waits until every record handed to the writer so far has been written
    /// and flushed (or has failed). Returns at once without a directory.
    pub fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
        if tx.send(Msg::Flush(ack_tx)).is_ok() {
            let _ = ack_rx.recv();
        }
    }
}

impl Drop for VerdictLog {
    fn drop(&mut self) {
        // Closing the channel lets the writer drain what is queued and exit.
        self.tx = None;
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    pub(super) const T0: u64 = 1_795_000_000_000;

    pub(super) fn rec(i: u64) -> FlowRecord {
        FlowRecord {
            event: "new".into(),
            workload: "web".into(),
            mode: "inline".into(),
            direction: "egress".into(),
            proto: "tcp".into(),
            src: "10.0.0.2:40000".into(),
            dst: "[2001:db8::1]:443".into(),
            app: "github".into(),
            category: "dev".into(),
            host: Some("github.com".into()),
            how: Some("sni".into()),
            action: "allow".into(),
            detail: "allow".into(),
            enforced: true,
            verdict: "allow".into(),
            rule: "default".into(),
            logged_by: None,
            packets_out: i,
            bytes_out: 100 * i,
            packets_in: 2,
            bytes_in: 3000,
            first_seen: T0,
            updated_at: T0 + i,
            suppressed: None,
            offloaded: false,
        }
    }

    pub(super) fn ids(v: &[FlowRecord]) -> Vec<u64> {
        v.iter().map(|r| r.packets_out).collect()
    }

    pub(super) fn mem(ring: usize) -> VerdictLog {
        VerdictLog::new(LogConfig {
            ring,
            dir: None,
            rotate_bytes: 0,
            keep: 0,
            records_per_sec: 0,
            burst: 0,
            reserve_bytes: 0,
        })
        .unwrap()
    }

    pub(super) fn of(workload: &str, i: u64) -> FlowRecord {
        let mut r = rec(i);
        r.workload = workload.into();
        r
    }

    #[test]
    fn ring_of_zero_keeps_nothing() {
        let log = mem(0);
        log.record(rec(1), T0);
        assert!(log.query(&Filter::default(), 10).is_empty());
    }

    #[test]
    fn unwritable_dir_fails_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        fs::write(&file, "").unwrap();
        let cfg = LogConfig {
            ring: 1,
            dir: Some(file),
            rotate_bytes: 0,
            keep: 0,
            records_per_sec: 0,
            burst: 0,
            reserve_bytes: 0,
        };
        assert!(VerdictLog::new(cfg).is_err());
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<VerdictLog>();
    }
}
