//! The verdict log: one record per flow decision and per update as the flow
//! ages, kept in a memory ring for the API and appended to rotated JSON-lines
//! files by one background writer so the datapath never waits on a disk.
//!
//! One workload cannot crowd the others out: each has a budget of records per
//! second (records over it are left out and counted in one "suppressed" summary
//! record per workload and sweep), and a full ring gives up the oldest record
//! of the workload holding the most, not the oldest of all.

use crossbeam_channel::{Receiver, Sender};
use serde::de::{self, Deserializer, Visitor};
use serde::ser::{self, Serializer};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::ops::Bound;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Name of the file records are appended to; rotated copies get `.1` (newest) … `.N`.
pub const FILE_NAME: &str = "verdicts.jsonl";

/// Records that may wait for the writer. Entries are pointers, so this costs
/// about 1 MiB and absorbs a few seconds of a slow disk at high flow rates.
const CHANNEL_CAP: usize = 65_536;

/// Buffer of the file writer; flushed whenever the channel runs empty.
const WRITE_BUF: usize = 64 * 1024;

/// Disk problems are repeated at most this often in the log.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// A failed open is retried at most this often; records in between are dropped.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// Free space is checked after this many bytes written, or this often.
const ROOM_CHECK_BYTES: u64 = 256 * 1024;
const ROOM_CHECK_EVERY: Duration = Duration::from_secs(1);

/// One flow decision, or an update of it as the flow ages.
///
/// In JSON, `first_seen` and `updated_at` are RFC 3339 UTC strings with
/// milliseconds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct FlowRecord {
    /// "new", "update", "rejudged", "end", "evicted", "live" for a flow table
    /// entry, or "suppressed": a summary standing for records of the workload left
    /// out over its log budget (their number in `suppressed`; the flow fields are
    /// empty and the counters 0; `first_seen` is when the first was left out).
    pub event: String,
    /// Workload (pod or VM) the flow belongs to.
    pub workload: String,
    /// "inline" (enforced) or "mirror" (observed only).
    pub mode: String,
    /// "ingress" or "egress": direction of the flow's first packet, seen from the workload.
    pub direction: String,
    /// "tcp", "udp", "icmp", "icmpv6", or the protocol number as a string.
    pub proto: String,
    /// Initiator address, with port where the protocol has one ("10.0.0.2:40000", "[2001:db8::1]:443").
    pub src: String,
    /// Responder address, formatted like `src`.
    pub dst: String,
    /// Application the flow was classified as.
    pub app: String,
    /// Category of the application.
    pub category: String,
    /// Host name the classification was based on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// What the classification came from: "sni", "quic_sni", "http_host", "dns" or "port".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub how: Option<String>,
    /// "allow" or "deny": what a person reads.
    pub action: String,
    /// "allow", "deny", "reject", "rate-limit" or "shape": what the datapath does.
    pub detail: String,
    /// False in mirror mode, where the verdict is only what would have happened.
    pub enforced: bool,
    /// The action as a person reads it: "allow", "deny", or when not enforced
    /// "would allow", "would deny" (see [`FlowRecord::verdict_of`]).
    #[serde(default)]
    pub verdict: String,
    /// Id of the rule that decided, or "default".
    pub rule: String,
    /// The `log` rule that matched before the deciding one, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logged_by: Option<String>,
    /// Packets from the flow's initiator.
    pub packets_out: u64,
    /// Bytes from the flow's initiator.
    pub bytes_out: u64,
    /// Packets towards the flow's initiator.
    pub packets_in: u64,
    /// Bytes towards the flow's initiator.
    pub bytes_in: u64,
    /// When the flow was first seen (unix milliseconds in memory, RFC 3339 in JSON).
    #[serde(deserialize_with = "de_millis", serialize_with = "ser_millis")]
    #[schema(value_type = String, format = DateTime)]
    pub first_seen: u64,
    /// When this record was made (unix milliseconds in memory, RFC 3339 in JSON).
    #[serde(deserialize_with = "de_millis", serialize_with = "ser_millis")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: u64,
    /// Only in a "suppressed" record: how many records of the workload were left
    /// out (over its `log_records_per_sec` budget) since its previous summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<u64>,
}

impl FlowRecord {
    /// The verdict as a person reads it: "allow", "deny", or in mirror mode
    /// "would allow", "would deny".
    pub fn verdict(&self) -> &str {
        &self.verdict
    }

    /// The verdict words for an action, enforced or only observed.
    pub fn verdict_of(enforced: bool, action: &str) -> String {
        if enforced {
            action.to_string()
        } else {
            format!("would {action}")
        }
    }
}

pub(crate) fn ser_millis<S: Serializer>(ms: &u64, s: S) -> Result<S::Ok, S::Error> {
    Millis(*ms).serialize(s)
}

/// Unix milliseconds written as an RFC 3339 UTC time with milliseconds.
struct Millis(u64);

/// First millisecond humantime can no longer format (year 10000).
const MAX_MILLIS: u64 = 253_402_300_800_000;

impl Serialize for Millis {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 >= MAX_MILLIS {
            return Err(ser::Error::custom(format!(
                "time {} ms is past year 9999",
                self.0
            )));
        }
        let t = UNIX_EPOCH + Duration::from_millis(self.0);
        s.collect_str(&humantime::format_rfc3339_millis(t))
    }
}

/// Accepts an RFC 3339 time, or plain unix milliseconds as written by older tools.
pub(crate) fn de_millis<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an RFC 3339 time or unix milliseconds")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            rfc3339_millis(v).map_err(E::custom)
        }
    }
    d.deserialize_any(V)
}

fn rfc3339_millis(s: &str) -> Result<u64, String> {
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| format!("{s:?}: {e}"))?;
    let d = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| format!("{s:?} is before 1970"))?;
    Ok(d.as_millis() as u64)
}

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

/// Selects records; every field that is set must match.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Filter {
    /// Exact workload.
    pub workload: Option<String>,
    /// Exactly the action, the detail or the verdict ("deny", "shape", "would deny").
    pub action: Option<String>,
    /// Exactly the app or the category.
    pub app: Option<String>,
    /// Records updated at or after this unix millisecond.
    pub since: Option<u64>,
    /// Records updated at or before this unix millisecond.
    pub until: Option<u64>,
    /// Exact event ("new", "end" …).
    pub event: Option<String>,
    /// Text found (case-insensitively) in any of the record's words: workload,
    /// addresses, app, category, host, rule, action, protocol.
    pub q: Option<String>,
}

impl Filter {
    /// Whether `r` passes every condition that is set.
    pub fn matches(&self, r: &FlowRecord) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        eq(&self.workload, &r.workload)
            && eq(&self.event, &r.event)
            && self.action.as_deref().is_none_or(|a| {
                // The verdict is the action, or "would <action>" when not enforced.
                a == r.action
                    || a == r.detail
                    || (!r.enforced && a.strip_prefix("would ") == Some(r.action.as_str()))
            })
            && self
                .app
                .as_deref()
                .is_none_or(|a| a == r.app || a == r.category)
            && self.since.is_none_or(|t| r.updated_at >= t)
            && self.until.is_none_or(|t| r.updated_at <= t)
            && self.q.as_deref().is_none_or(|q| text_matches(r, q))
    }
}

fn text_matches(r: &FlowRecord, q: &str) -> bool {
    let q = q.to_lowercase();
    let words = [
        &r.workload,
        &r.src,
        &r.dst,
        &r.app,
        &r.category,
        &r.rule,
        &r.action,
        &r.detail,
        &r.verdict,
        &r.proto,
        &r.event,
        &r.direction,
    ];
    words
        .into_iter()
        .chain(r.host.as_ref())
        .chain(r.logged_by.as_ref())
        .any(|w| w.to_lowercase().contains(&q))
}

/// Counters shared with the writer thread.
#[derive(Default)]
struct Shared {
    lost: AtomicU64,
    suppressed: AtomicU64,
    written: AtomicU64,
    failed: AtomicU64,
    disk_errors: AtomicU64,
    /// Records not written because the filesystem had no room beyond the reserve.
    no_room: AtomicU64,
}

enum Msg {
    Record(Arc<FlowRecord>),
    /// Acknowledged once everything before it is flushed to the file.
    Flush(Sender<()>),
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
    shared: Arc<Shared>,
    /// The newest sequence number, for streams waiting on new records.
    latest: tokio::sync::watch::Sender<u64>,
}

/// The records kept in memory, shared out between workloads: when full, the
/// workload holding the most gives up its oldest record (of two holding as many,
/// the one whose oldest record is older), so a flood from one workload only
/// ever pushes out its own records once it holds more than the others.
///
/// Every step is O(log n): records by sequence number in a B-tree, each
/// workload's sequence numbers in a queue, workloads ordered by their share.
struct Ring {
    /// Every record kept, by sequence number.
    records: BTreeMap<u64, Arc<FlowRecord>>,
    /// Per workload, the sequence numbers of its records kept, oldest first.
    lanes: HashMap<Arc<str>, VecDeque<u64>>,
    /// Workloads by (records held, oldest first): the last one gives up a record.
    /// The oldest sequence number of each lane is unique, so it keys alone.
    shares: BTreeMap<(usize, Reverse<u64>), Arc<str>>,
    next_seq: u64,
}

impl Ring {
    fn new() -> Ring {
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
    fn push(&mut self, r: Arc<FlowRecord>, cap: usize) -> (u64, Option<Arc<FlowRecord>>) {
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

/// Per-workload token buckets of log records, and what was left out of each
/// since its last summary. Holds only workloads that made records and still
/// exist ([`VerdictLog::summarize`] forgets the others).
struct Budget {
    /// Records per second.
    rate: u64,
    /// Most records saved up.
    burst: u64,
    buckets: HashMap<String, Bucket>,
}

struct Bucket {
    /// Records that may be made now, in thousandths.
    milli: u64,
    /// When `milli` was last topped up (unix ms).
    at_ms: u64,
    /// Records left out since the last summary, and when the first of them was.
    pending: u64,
    pending_since: u64,
    /// Steering mode and enforcement of the first record left out, for the summary.
    mode: String,
    enforced: bool,
    /// Records left out since the workload's first record.
    total: u64,
}

impl Budget {
    /// Whether a record of `r`'s workload fits at `now_ms`; when it does not,
    /// it is counted for the workload's next summary.
    fn admit(&mut self, r: &mut FlowRecord, now_ms: u64) -> bool {
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
fn summary(workload: &str, b: &mut Bucket, now_ms: u64) -> FlowRecord {
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
    }
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
            let w = Writer::new(&cfg, dir, Some(file), size, log.shared.clone());
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
            shared: Arc::default(),
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
                self.shared.suppressed.fetch_add(1, Ordering::Relaxed);
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
            self.shared.lost.fetch_add(1, Ordering::Relaxed);
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
        self.shared.lost.load(Ordering::Relaxed)
    }

    /// Records left out over their workload's budget, since start.
    pub fn suppressed(&self) -> u64 {
        self.shared.suppressed.load(Ordering::Relaxed)
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
        self.shared.written.load(Ordering::Relaxed)
    }

    /// Records the writer dropped because they could not be encoded or written.
    pub fn failed(&self) -> u64 {
        self.shared.failed.load(Ordering::Relaxed)
    }

    /// Records not written to the files because their filesystem was down to
    /// the reserve left for the node's state (they are still in memory).
    pub fn no_room(&self) -> u64 {
        self.shared.no_room.load(Ordering::Relaxed)
    }

    /// Failed disk operations (open, write, flush, rotate).
    pub fn disk_errors(&self) -> u64 {
        self.shared.disk_errors.load(Ordering::Relaxed)
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

fn open_current(dir: &Path) -> io::Result<(BufWriter<File>, u64)> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(dir.join(FILE_NAME))?;
    let size = f.metadata()?.len();
    Ok((BufWriter::with_capacity(WRITE_BUF, f), size))
}

fn rotated_name(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("{FILE_NAME}.{n}"))
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    rotate_bytes: u64,
    keep: usize,
    reserve: u64,
    /// Bytes written since room was last checked, and when: the check runs
    /// every `ROOM_CHECK_BYTES` or `ROOM_CHECK_EVERY`.
    since_check: u64,
    checked: Option<Instant>,
    /// The filesystem is down to the reserve: records are not written.
    full: bool,
    out: Option<BufWriter<File>>,
    /// Size of the current file including what is buffered.
    size: u64,
    /// Records buffered since the last successful flush.
    unflushed: u64,
    line: Vec<u8>,
    shared: Arc<Shared>,
    /// When opening last failed; retries wait so a dead disk is not hammered.
    open_failed: Option<Instant>,
    last_warn: Option<Instant>,
    suppressed: u64,
}

impl Writer {
    fn new(
        cfg: &LogConfig,
        dir: &Path,
        out: Option<BufWriter<File>>,
        size: u64,
        shared: Arc<Shared>,
    ) -> Writer {
        Writer {
            dir: dir.to_path_buf(),
            rotate_bytes: cfg.rotate_bytes,
            keep: cfg.keep,
            reserve: cfg.reserve_bytes,
            since_check: 0,
            checked: None,
            full: false,
            out,
            size,
            unflushed: 0,
            line: Vec::with_capacity(1024),
            shared,
            open_failed: None,
            last_warn: None,
            suppressed: 0,
        }
    }

    fn spawn(self, rx: Receiver<Msg>) -> io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("verdict-log".into())
            .spawn(move || self.run(rx))
    }

    fn run(mut self, rx: Receiver<Msg>) {
        loop {
            let msg = match rx.try_recv() {
                Ok(m) => m,
                Err(_) => {
                    // Momentarily idle: push out what is buffered so `tail -f` sees it.
                    self.flush();
                    match rx.recv() {
                        Ok(m) => m,
                        Err(_) => break,
                    }
                }
            };
            match msg {
                Msg::Record(r) => self.write(&r),
                Msg::Flush(ack) => {
                    self.flush();
                    let _ = ack.send(());
                }
            }
        }
        self.flush();
    }

    fn write(&mut self, r: &FlowRecord) {
        self.line.clear();
        if let Err(e) = serde_json::to_writer(&mut self.line, r) {
            self.shared.failed.fetch_add(1, Ordering::Relaxed);
            self.warn("encode", &e);
            return;
        }
        self.line.push(b'\n');
        let len = self.line.len() as u64;
        if !self.room(len) {
            self.shared.no_room.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.out.is_some()
            && self.rotate_bytes > 0
            && self.size > 0
            && self.size + len > self.rotate_bytes
        {
            self.rotate();
        }
        if self.out.is_none() && !self.reopen() {
            self.shared.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some(out) = self.out.as_mut() else { return };
        self.unflushed += 1;
        match out.write_all(&self.line) {
            Ok(()) => self.size += len,
            Err(e) => self.discard("write", &e),
        }
    }

    fn flush(&mut self) {
        let Some(out) = self.out.as_mut() else { return };
        match out.flush() {
            Ok(()) => {
                self.shared
                    .written
                    .fetch_add(self.unflushed, Ordering::Relaxed);
                self.unflushed = 0;
            }
            Err(e) => self.discard("flush", &e),
        }
    }

    /// Gives up on the current file after an error; the next record reopens it.
    fn discard(&mut self, what: &str, e: &dyn fmt::Display) {
        if let Some(out) = self.out.take() {
            // Dropped without another flush attempt: the file just failed.
            let _ = out.into_parts();
        }
        self.shared
            .failed
            .fetch_add(self.unflushed, Ordering::Relaxed);
        self.unflushed = 0;
        self.warn(what, e);
    }

    fn reopen(&mut self) -> bool {
        if self.open_failed.is_some_and(|t| t.elapsed() < REOPEN_EVERY) {
            return false;
        }
        match open_current(&self.dir) {
            Ok((out, size)) => {
                self.out = Some(out);
                self.size = size;
                self.open_failed = None;
                true
            }
            Err(e) => {
                self.open_failed = Some(Instant::now());
                self.warn("open", &e);
                false
            }
        }
    }

    fn rotate(&mut self) {
        self.flush();
        // Closed before renaming; the next write opens a fresh file.
        self.out = None;
        let cur = self.dir.join(FILE_NAME);
        let res = if self.keep == 0 {
            fs::remove_file(&cur)
        } else {
            self.shift()
                .and_then(|()| fs::rename(&cur, rotated_name(&self.dir, 1)))
        };
        if let Err(e) = res {
            self.warn("rotate", &e);
        }
    }

    /// Whether `len` more bytes may be written: the filesystem keeps the
    /// reserve free. Checked every so many bytes or so often; when short, the
    /// oldest rotated files go first, then writing stops until there is room.
    fn room(&mut self, len: u64) -> bool {
        self.since_check += len;
        if self.reserve == 0 {
            return true;
        }
        let due = self.since_check >= ROOM_CHECK_BYTES
            || self.checked.is_none_or(|t| t.elapsed() >= ROOM_CHECK_EVERY);
        if !due {
            return !self.full;
        }
        self.since_check = 0;
        self.checked = Some(Instant::now());
        let dir = self.dir.clone();
        let free = || {
            rustix::fs::statvfs(&dir)
                .map(|v| v.f_bavail.saturating_mul(v.f_frsize))
                .unwrap_or(u64::MAX)
        };
        // Room for what comes before the next check, beyond the reserve.
        let want = self.reserve + ROOM_CHECK_BYTES;
        let mut oldest = self.keep;
        while free() < want && oldest > 0 {
            match fs::remove_file(rotated_name(&self.dir, oldest)) {
                Ok(()) => tracing::warn!(
                    dir = %self.dir.display(),
                    file = oldest,
                    "verdict log: disk short, oldest rotated file removed"
                ),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => self.warn("remove", &e),
            }
            oldest -= 1;
        }
        let full = free() < want;
        if full != self.full {
            self.flush();
            if full {
                tracing::warn!(
                    dir = %self.dir.display(),
                    reserve_bytes = self.reserve,
                    "verdict log: disk down to the reserve left for the node's state; records kept in memory only"
                );
            } else {
                tracing::info!(dir = %self.dir.display(), "verdict log: room again, writing resumes");
            }
            self.full = full;
        }
        !full
    }

    /// Drops the oldest kept file and moves `.i` to `.i+1`, making room for `.1`.
    fn shift(&self) -> io::Result<()> {
        let missing_ok = |r: io::Result<()>| match r {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
        missing_ok(fs::remove_file(rotated_name(&self.dir, self.keep)))?;
        for i in (1..self.keep).rev() {
            missing_ok(fs::rename(
                rotated_name(&self.dir, i),
                rotated_name(&self.dir, i + 1),
            ))?;
        }
        Ok(())
    }

    fn warn(&mut self, what: &str, e: &dyn fmt::Display) {
        self.shared.disk_errors.fetch_add(1, Ordering::Relaxed);
        // A failing disk fails on every record; once a minute is enough to notice.
        if self.last_warn.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            self.suppressed += 1;
            return;
        }
        self.last_warn = Some(Instant::now());
        tracing::warn!(
            dir = %self.dir.display(),
            error = %e,
            suppressed = self.suppressed,
            "verdict log: {what} failed"
        );
        self.suppressed = 0;
    }
}

/// Reads the newest `limit` records matching `f` from the files in `dir`:
/// rotated files oldest first, then the current one, newest last.
///
/// Unparsable lines are skipped with a warning; a last line without its newline
/// is still being written and is skipped silently. A rotation during the read
/// may make records appear twice or not at all.
pub fn read_dir(dir: &Path, f: &Filter, limit: usize) -> io::Result<Vec<FlowRecord>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut rotated: Vec<(u64, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let n = name
            .to_str()
            .and_then(|s| s.strip_prefix(FILE_NAME))
            .and_then(|s| s.strip_prefix('.'))
            .and_then(|s| s.parse::<u64>().ok());
        if let Some(n) = n {
            rotated.push((n, entry.path()));
        }
    }
    // The highest number is the oldest file.
    rotated.sort_by_key(|&(n, _)| std::cmp::Reverse(n));
    let mut out = VecDeque::new();
    let files = rotated
        .into_iter()
        .map(|(_, p)| p)
        .chain(std::iter::once(dir.join(FILE_NAME)));
    for path in files {
        read_file(&path, f, limit, &mut out)?;
    }
    Ok(out.into())
}

fn read_file(
    path: &Path,
    f: &Filter,
    limit: usize,
    out: &mut VecDeque<FlowRecord>,
) -> io::Result<()> {
    let file = match File::open(path) {
        Ok(file) => file,
        // Rotated away since the directory was listed, or not created yet.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut rd = BufReader::new(file);
    let mut line = Vec::new();
    let (mut bad, mut first_bad, mut lineno) = (0u64, 0u64, 0u64);
    loop {
        line.clear();
        if rd.read_until(b'\n', &mut line)? == 0 || line.last() != Some(&b'\n') {
            break;
        }
        lineno += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<FlowRecord>(&line) {
            Ok(r) if f.matches(&r) => {
                if out.len() == limit {
                    out.pop_front();
                }
                out.push_back(r);
            }
            Ok(_) => {}
            Err(_) => {
                if bad == 0 {
                    first_bad = lineno;
                }
                bad += 1;
            }
        }
    }
    if bad > 0 {
        tracing::warn!(
            file = %path.display(),
            lines = bad,
            first = first_bad,
            "verdict log: skipped unparsable lines"
        );
    }
    Ok(())
}

/// Parses a point in time for queries: a duration ago ("30s", "10m", "2h 30m")
/// relative to `now_ms`, or an RFC 3339 UTC time. Returns unix milliseconds.
pub fn parse_time(s: &str, now_ms: u64) -> Result<u64, String> {
    let s = s.trim();
    if let Ok(d) = humantime::parse_duration(s) {
        let ago = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        return Ok(now_ms.saturating_sub(ago));
    }
    rfc3339_millis(s).map_err(|e| {
        format!(
            "{e}: expected a duration ago like 10m or an RFC 3339 time like 2026-11-26T01:02:03Z"
        )
    })
}

/// Current unix time in milliseconds, for callers building records.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_795_000_000_000;

    fn rec(i: u64) -> FlowRecord {
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
        }
    }

    fn ids(v: &[FlowRecord]) -> Vec<u64> {
        v.iter().map(|r| r.packets_out).collect()
    }

    fn mem(ring: usize) -> VerdictLog {
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

    fn on_disk(dir: &Path, rotate_bytes: u64, keep: usize) -> VerdictLog {
        VerdictLog::new(LogConfig {
            ring: 16,
            dir: Some(dir.to_path_buf()),
            rotate_bytes,
            keep,
            records_per_sec: 0,
            burst: 0,
            reserve_bytes: 0,
        })
        .unwrap()
    }

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
    fn ring_of_zero_keeps_nothing() {
        let log = mem(0);
        log.record(rec(1), T0);
        assert!(log.query(&Filter::default(), 10).is_empty());
    }

    #[test]
    fn verdict_words() {
        assert_eq!(FlowRecord::verdict_of(true, "allow"), "allow");
        assert_eq!(FlowRecord::verdict_of(true, "deny"), "deny");
        assert_eq!(FlowRecord::verdict_of(false, "deny"), "would deny");
        assert_eq!(FlowRecord::verdict_of(false, "allow"), "would allow");
    }

    #[test]
    fn filter_fields() {
        let log = mem(100);
        let mut a = rec(1);
        a.workload = "db".into();
        let mut b = rec(2);
        b.action = "deny".into();
        b.detail = "reject".into();
        let mut c = rec(3);
        c.action = "deny".into();
        c.detail = "deny".into();
        c.enforced = false;
        c.mode = "mirror".into();
        let mut d = rec(4);
        d.detail = "shape".into();
        d.app = "youtube".into();
        d.category = "video".into();
        d.event = "end".into();
        for r in [a, b, c, d] {
            log.record(r, T0);
        }
        let q = |f: Filter| ids(&log.query(&f, 100));
        let s = |v: &str| Some(v.to_string());
        assert_eq!(q(Filter::default()), [1, 2, 3, 4]);
        assert_eq!(
            q(Filter {
                workload: s("db"),
                ..Default::default()
            }),
            [1]
        );
        assert_eq!(
            q(Filter {
                action: s("deny"),
                ..Default::default()
            }),
            [2, 3]
        );
        assert_eq!(
            q(Filter {
                action: s("reject"),
                ..Default::default()
            }),
            [2]
        );
        assert_eq!(
            q(Filter {
                action: s("would deny"),
                ..Default::default()
            }),
            [3]
        );
        assert_eq!(
            q(Filter {
                action: s("would allow"),
                ..Default::default()
            }),
            Vec::<u64>::new()
        );
        assert_eq!(
            q(Filter {
                action: s("shape"),
                ..Default::default()
            }),
            [4]
        );
        assert_eq!(
            q(Filter {
                app: s("youtube"),
                ..Default::default()
            }),
            [4]
        );
        assert_eq!(
            q(Filter {
                app: s("dev"),
                ..Default::default()
            }),
            [1, 2, 3]
        );
        assert_eq!(
            q(Filter {
                since: Some(T0 + 2),
                ..Default::default()
            }),
            [2, 3, 4]
        );
        assert_eq!(
            q(Filter {
                until: Some(T0 + 2),
                ..Default::default()
            }),
            [1, 2]
        );
        assert_eq!(
            q(Filter {
                event: s("end"),
                ..Default::default()
            }),
            [4]
        );
        let both = Filter {
            workload: s("web"),
            action: s("deny"),
            since: Some(T0 + 3),
            ..Default::default()
        };
        assert_eq!(q(both), [3]);
        // The limit keeps the newest matches.
        assert_eq!(
            ids(&log.query(
                &Filter {
                    app: s("dev"),
                    ..Default::default()
                },
                2
            )),
            [2, 3]
        );
    }

    #[test]
    fn json_round_trip() {
        let mut r = rec(7);
        r.enforced = false;
        r.action = "deny".into();
        r.verdict = FlowRecord::verdict_of(false, "deny");
        r.first_seen = 1_795_654_923_456;
        let s = serde_json::to_string(&r).unwrap();
        assert!(s.contains(r#""verdict":"would deny""#), "{s}");
        assert!(s.contains(r#""first_seen":"2026-11-26T"#), "{s}");
        assert!(s.contains(r#".456Z""#), "{s}");
        assert_eq!(serde_json::from_str::<FlowRecord>(&s).unwrap(), r);

        r.host = None;
        r.how = None;
        let s = serde_json::to_string(&r).unwrap();
        assert!(!s.contains("host") && !s.contains("how"), "{s}");
        assert_eq!(serde_json::from_str::<FlowRecord>(&s).unwrap(), r);

        // Plain milliseconds are accepted too.
        let mut v: serde_json::Value = serde_json::from_str(&s).unwrap();
        v["updated_at"] = serde_json::json!(T0);
        let back: FlowRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back.updated_at, T0);
    }

    #[test]
    fn json_rejects_times_humantime_cannot_write() {
        let mut r = rec(0);
        r.updated_at = MAX_MILLIS;
        assert!(serde_json::to_string(&r).is_err());
        r.updated_at = MAX_MILLIS - 1;
        let s = serde_json::to_string(&r).unwrap();
        assert!(s.contains("9999-12-31T23:59:59.999Z"), "{s}");
        assert_eq!(serde_json::from_str::<FlowRecord>(&s).unwrap(), r);
    }

    #[test]
    fn writes_and_drop_drains() {
        let dir = tempfile::tempdir().unwrap();
        let log = on_disk(dir.path(), 0, 3);
        for i in 0..100 {
            log.record(rec(i), T0);
        }
        drop(log);
        let got = read_dir(dir.path(), &Filter::default(), 1000).unwrap();
        assert_eq!(ids(&got), (0..100).collect::<Vec<_>>());
        assert_eq!(got[5], rec(5));
    }

    #[test]
    fn appends_to_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..2 {
            let log = on_disk(dir.path(), 0, 1);
            log.record(rec(round), T0);
            log.flush();
            assert_eq!(log.written(), 1);
        }
        let got = read_dir(dir.path(), &Filter::default(), 10).unwrap();
        assert_eq!(ids(&got), [0, 1]);
    }

    #[test]
    fn rotation_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let line = serde_json::to_vec(&rec(10)).unwrap().len() as u64 + 1;
        // Room for three records per file.
        let log = on_disk(dir.path(), line * 3 + 2, 2);
        for i in 10..40 {
            log.record(rec(i), T0);
        }
        log.flush();
        assert_eq!((log.written(), log.lost(), log.failed()), (30, 0, 0));
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["verdicts.jsonl", "verdicts.jsonl.1", "verdicts.jsonl.2"]
        );
        for name in &names {
            assert!(fs::metadata(dir.path().join(name)).unwrap().len() <= line * 3 + 2);
        }

        let cur = fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        let cur: Vec<FlowRecord> = cur
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(ids(&cur), [37, 38, 39]);

        let all = read_dir(dir.path(), &Filter::default(), 100).unwrap();
        assert_eq!(ids(&all), (31..40).collect::<Vec<_>>());
        let newest = read_dir(dir.path(), &Filter::default(), 4).unwrap();
        assert_eq!(ids(&newest), [36, 37, 38, 39]);
        let f = Filter {
            until: Some(T0 + 35),
            ..Default::default()
        };
        assert_eq!(
            ids(&read_dir(dir.path(), &f, 100).unwrap()),
            [31, 32, 33, 34, 35]
        );
    }

    #[test]
    fn rotation_with_keep_zero_discards() {
        let dir = tempfile::tempdir().unwrap();
        let line = serde_json::to_vec(&rec(10)).unwrap().len() as u64 + 1;
        let log = on_disk(dir.path(), line * 2, 0);
        for i in 10..15 {
            log.record(rec(i), T0);
        }
        log.flush();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(
            ids(&read_dir(dir.path(), &Filter::default(), 10).unwrap()),
            [14]
        );
    }

    #[test]
    fn full_channel_counts_lost() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            ring: 100,
            dir: Some(dir.path().to_path_buf()),
            rotate_bytes: 0,
            keep: 1,
            records_per_sec: 0,
            burst: 0,
            reserve_bytes: 0,
        };
        // A writer that has not started yet stands in for a stalled disk.
        let mut log = VerdictLog::memory(cfg.ring);
        let (tx, rx) = crossbeam_channel::bounded(2);
        log.tx = Some(tx);
        for i in 0..5 {
            log.record(rec(i), T0);
        }
        assert_eq!(log.lost(), 3);
        // The ring still has everything.
        assert_eq!(log.query(&Filter::default(), 10).len(), 5);

        let (file, size) = open_current(dir.path()).unwrap();
        let w = Writer::new(&cfg, dir.path(), Some(file), size, log.shared.clone());
        log.writer = Some(w.spawn(rx).unwrap());
        log.flush();
        assert_eq!(log.written(), 2);
        log.record(rec(5), T0);
        log.flush();
        assert_eq!((log.written(), log.lost()), (3, 3));
        let got = read_dir(dir.path(), &Filter::default(), 10).unwrap();
        assert_eq!(ids(&got), [0, 1, 5]);
    }

    #[test]
    fn disk_errors_are_counted_and_survived() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let log = on_disk(&dir, 10, 2);
        log.record(rec(0), T0);
        log.flush();
        assert_eq!(log.written(), 1);
        fs::remove_dir_all(&dir).unwrap();
        // Rotating fails, then reopening fails; the records are dropped and counted.
        log.record(rec(1), T0);
        log.record(rec(2), T0);
        log.flush();
        assert_eq!((log.written(), log.failed()), (1, 2));
        assert!(log.disk_errors() >= 2);
        fs::create_dir_all(&dir).unwrap();
        std::thread::sleep(REOPEN_EVERY + Duration::from_millis(100));
        log.record(rec(3), T0);
        log.flush();
        assert_eq!((log.written(), log.failed()), (2, 2));
        assert_eq!(ids(&read_dir(&dir, &Filter::default(), 10).unwrap()), [3]);
    }

    #[test]
    fn read_dir_skips_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let good = |i| serde_json::to_string(&rec(i)).unwrap();
        fs::write(
            dir.path().join("verdicts.jsonl.1"),
            format!("{}\nnot json\n\n{}\n", good(1), good(2)),
        )
        .unwrap();
        // A half-written last line is still in progress.
        let partial = &good(4)[..20];
        fs::write(
            dir.path().join(FILE_NAME),
            format!("{}\n\u{fffd}\n{partial}", good(3)),
        )
        .unwrap();
        fs::write(dir.path().join("verdicts.jsonl.x"), "ignored\n").unwrap();
        let got = read_dir(dir.path(), &Filter::default(), 10).unwrap();
        assert_eq!(ids(&got), [1, 2, 3]);
        assert!(read_dir(&dir.path().join("missing"), &Filter::default(), 10).is_err());
    }

    #[test]
    fn parse_time_forms() {
        let now = T0;
        assert_eq!(parse_time("10m", now), Ok(now - 600_000));
        assert_eq!(parse_time("30s", now), Ok(now - 30_000));
        assert_eq!(parse_time(" 2h 30m ", now), Ok(now - 9_000_000));
        assert_eq!(parse_time("100000y", now), Ok(0));
        assert_eq!(
            parse_time("2026-11-26T01:02:03.456Z", now),
            Ok(1_795_654_923_456)
        );
        assert_eq!(
            parse_time("2026-11-26T01:02:03Z", now),
            Ok(1_795_654_923_000)
        );
        assert!(parse_time("", now).is_err());
        assert!(parse_time("yesterday", now).is_err());
        assert!(parse_time("1969-12-31T00:00:00Z", now).is_err());
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

    fn of(workload: &str, i: u64) -> FlowRecord {
        let mut r = rec(i);
        r.workload = workload.into();
        r
    }

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

    #[test]
    fn suppressed_count_in_json_and_schema() {
        let mut r = rec(1);
        let s = serde_json::to_string(&r).unwrap();
        assert!(!s.contains("suppressed"), "{s}");
        r.event = "suppressed".into();
        r.suppressed = Some(42);
        let s = serde_json::to_string(&r).unwrap();
        assert!(s.contains(r#""suppressed":42"#), "{s}");
        assert_eq!(serde_json::from_str::<FlowRecord>(&s).unwrap(), r);

        let schema = serde_json::to_value(<FlowRecord as utoipa::PartialSchema>::schema()).unwrap();
        let prop = &schema["properties"]["suppressed"];
        assert!(prop.to_string().contains("integer"), "{prop}");
        let required = schema["required"].as_array().unwrap();
        assert!(!required.iter().any(|k| k == "suppressed"), "{required:?}");
        assert!(required.iter().any(|k| k == "event"));
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<VerdictLog>();
    }
}
