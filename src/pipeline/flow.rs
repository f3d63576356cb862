//! The flow table: one entry per workload and bidirectional 5-tuple, with light
//! TCP state, idle timeouts per state, per-direction counters and the cached
//! verdict later packets take.
//!
//! The table is shared by all workers (an east-west flow is seen by the workers
//! of both workloads) and split into shards, each behind its own mutex, so two
//! workers rarely meet on one lock. Memory is bounded: each shard holds at most
//! `capacity / SHARDS` entries; a full shard first drops its expired entries,
//! then evicts the least recently seen of a small sample, and counts it.

use super::app::{AppId, AppProbe, How};
use super::firewall::Action;
use super::parse::{IpFacts, tcp_flags};
use crate::vocab::{Direction, WorkloadId};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Shards of the table.
pub const SHARDS: usize = 64;
/// Entries looked at to pick one to evict from a full shard.
const EVICT_SAMPLE: usize = 16;

/// Entries of a full shard looked at for an eviction victim of the right
/// workload, at most.
const EVICT_SCAN: usize = 256;

/// Per-workload flow counters kept (workload ids index them modulo this).
const HELD_SLOTS: usize = 4096;

/// A flow as the table keys it: the workload, and the two ends in a canonical
/// order (lower address/port first) so both directions find one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// The workload whose flow this is.
    pub workload: WorkloadId,
    /// IP protocol number.
    pub proto: u8,
    /// Lower end.
    pub lo: (IpAddr, u16),
    /// Higher end.
    pub hi: (IpAddr, u16),
}

impl FlowKey {
    /// The key of a packet's flow, and whether the packet travels from `lo` to `hi`.
    pub fn of(workload: WorkloadId, ip: &IpFacts<'_>) -> (FlowKey, bool) {
        let a = (ip.src, ip.src_port);
        let b = (ip.dst, ip.dst_port);
        let forward = a <= b;
        let (lo, hi) = if forward { (a, b) } else { (b, a) };
        (
            FlowKey {
                workload,
                proto: ip.proto,
                lo,
                hi,
            },
            forward,
        )
    }
}

/// TCP state, as far as timeouts need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowState {
    /// Only the initiator has spoken (TCP SYN, or the first UDP/ICMP packet).
    New,
    /// Both sides have spoken.
    Established,
    /// FIN seen.
    Closing,
    /// RST seen, or both FINs.
    Closed,
}

/// Idle timeouts, seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// TCP before the answer (half-open).
    pub tcp_new: u64,
    /// TCP established.
    pub tcp_established: u64,
    /// TCP after FIN or RST.
    pub tcp_closing: u64,
    /// UDP.
    pub udp: u64,
    /// ICMP and every other protocol.
    pub other: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_new: 30,
            tcp_established: 600,
            tcp_closing: 10,
            udp: 60,
            other: 30,
        }
    }
}

impl Timeouts {
    fn of(&self, proto: u8, state: FlowState) -> u64 {
        match (proto, state) {
            (super::parse::proto::TCP, FlowState::New) => self.tcp_new,
            (super::parse::proto::TCP, FlowState::Established) => self.tcp_established,
            (super::parse::proto::TCP, _) => self.tcp_closing,
            (super::parse::proto::UDP, _) => self.udp,
            _ => self.other,
        }
    }
}

/// Counters of one direction of a flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Packets (a GSO super-frame counts as its segments).
    pub packets: u64,
    /// Bytes on the wire.
    pub bytes: u64,
}

/// One flow.
#[derive(Debug)]
pub struct Flow {
    /// Seen from the workload: did the first packet come in or go out?
    pub direction: Direction,
    /// Does the initiator sit at the key's `lo` end?
    pub initiator_lo: bool,
    /// TCP state.
    pub state: FlowState,
    /// Unix ms of the first packet.
    pub first_seen_ms: u64,
    /// Datapath clock (ms) of the last packet.
    pub last_seen_ms: u64,
    /// From the initiator, and towards it.
    pub tally: [Tally; 2],
    /// The verdict later packets take.
    pub action: Action,
    /// Index of the deciding rule; `None` is the default.
    pub rule: Option<u32>,
    /// Index of a `log` rule that matched before the deciding one.
    pub logged_by: Option<u32>,
    /// Rule set generation the verdict was made under.
    pub generation: u64,
    /// Limiters of the action, by packet direction (0 from the workload, 1 towards it).
    pub limiters: Option<super::inspect::Limiters>,
    /// The workload's bandwidth limiters, when it has a limit.
    pub bandwidth: Option<super::inspect::Limiters>,
    /// The application, once named.
    pub app: AppId,
    /// How it was named.
    pub how: Option<How>,
    /// The host name it was named from.
    pub host: Option<Box<str>>,
    /// Content inspection still under way.
    pub probe: Option<AppProbe>,
    /// DNS on this flow: queries awaiting their answers, TCP streams.
    pub dns: Option<Box<super::app::DnsFlow>>,
    /// The evasion policy `drop` condemned it: denied whatever the rules say.
    pub evasive: bool,
    /// Mirror mode: the verdict is recorded, not enforced.
    pub mirror: bool,
    /// The workload's rules let the kernel fast path forward it once settled.
    pub fast: bool,
    /// The directions the kernel fast path forwards, and under which epoch.
    pub offload: Option<Offload>,
    /// Reporting state, owned by the sweeper.
    pub report: Report,
}

/// A flow's directions that the kernel fast path forwards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offload {
    /// The fast path epoch they were handed over under.
    pub epoch: u64,
    /// Bit 0: lo to hi; bit 1: hi to lo.
    pub sides: u8,
}

impl Offload {
    /// The bit of a direction.
    pub fn side(lo_to_hi: bool) -> u8 {
        if lo_to_hi { 1 } else { 2 }
    }
}

/// What the sweeper has already reported of a flow.
#[derive(Clone, Copy, Debug, Default)]
pub struct Report {
    /// The "new" record was written.
    pub announced: bool,
    /// The verdict changed since the last record.
    pub changed: bool,
    /// Counters already added to the windows.
    pub counted: [Tally; 2],
    /// Datapath clock (ms) of the last record.
    pub logged_ms: u64,
}

impl Flow {
    /// Adds one packet's counters and moves the TCP state on.
    pub fn account(
        &mut self,
        from_initiator: bool,
        packets: u64,
        bytes: u64,
        flags: u8,
        now_ms: u64,
    ) {
        let t = &mut self.tally[usize::from(!from_initiator)];
        t.packets += packets;
        t.bytes += bytes;
        self.last_seen_ms = now_ms;
        self.state = match self.state {
            _ if flags & tcp_flags::RST != 0 => FlowState::Closed,
            FlowState::Closing if flags & tcp_flags::FIN != 0 => FlowState::Closed,
            FlowState::New | FlowState::Established if flags & tcp_flags::FIN != 0 => {
                FlowState::Closing
            }
            FlowState::New if !from_initiator => FlowState::Established,
            s => s,
        };
    }

    /// True when the flow has been idle longer than its state allows.
    pub fn expired(&self, proto: u8, t: &Timeouts, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_seen_ms) > t.of(proto, self.state) * 1000
    }
}

/// Why the sweeper hands a flow to its visitor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sweep {
    /// Still alive.
    Live,
    /// Idle past its timeout; removed after the visit.
    Expired,
}

/// Counters of the table.
#[derive(Debug, Default)]
pub struct TableCounters {
    /// Flows created.
    pub created: AtomicU64,
    /// Flows evicted from a full shard.
    pub evicted: AtomicU64,
    /// Flows expired.
    pub expired: AtomicU64,
}

/// The shared flow table.
pub struct FlowTable {
    shards: Box<[Mutex<FxHashMap<FlowKey, Flow>>]>,
    per_shard: usize,
    hasher: rustc_hash::FxBuildHasher,
    /// Creation, eviction and expiry counts.
    pub counters: TableCounters,
    /// Flows evicted but not yet reported, drained by the sweeper.
    evicted: Mutex<Vec<(FlowKey, Flow)>>,
    /// Flows each workload holds, by workload id (modulo [`HELD_SLOTS`]).
    held: Box<[AtomicUsize]>,
    /// Workloads holding at least one flow.
    holders: AtomicUsize,
    /// Most flows one workload may hold; none: an even share when full.
    quota: Option<usize>,
}

impl std::fmt::Debug for FlowTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable")
            .field("capacity", &self.capacity())
            .field("counters", &self.counters)
            .finish()
    }
}

impl FlowTable {
    /// A table of at most `capacity` flows, at most `quota` of them one
    /// workload's (none: an even share of the table when it is full).
    pub fn new(capacity: usize, quota: Option<usize>) -> FlowTable {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        FlowTable {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(FxHashMap::default()))
                .collect(),
            per_shard,
            hasher: rustc_hash::FxBuildHasher,
            counters: TableCounters::default(),
            evicted: Mutex::new(Vec::new()),
            held: (0..HELD_SLOTS).map(|_| AtomicUsize::new(0)).collect(),
            holders: AtomicUsize::new(0),
            quota,
        }
    }

    /// Most flows the table holds.
    pub fn capacity(&self) -> usize {
        self.per_shard * SHARDS
    }

    /// Bytes one flow takes: key, entry and the hash map's control byte (an
    /// application probe that is reassembling holds up to 16 KiB more).
    pub const fn bytes_per_flow() -> usize {
        std::mem::size_of::<(FlowKey, Flow)>() + 1
    }

    /// The shard holding `key`, locked.
    pub fn shard(&self, key: &FlowKey) -> MutexGuard<'_, FxHashMap<FlowKey, Flow>> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Flows workload `wl` holds now.
    pub fn held_by(&self, wl: WorkloadId) -> usize {
        self.held[wl.slot() % HELD_SLOTS].load(Ordering::Relaxed)
    }

    /// The share of the table one workload may hold when the table is under
    /// pressure: the configured quota, else an even share among the
    /// workloads that hold flows.
    fn share(&self) -> usize {
        match self.quota {
            Some(q) => q,
            None => self.capacity() / self.holders.load(Ordering::Relaxed).max(1),
        }
    }

    fn count_in(&self, wl: WorkloadId) {
        if self.held[wl.slot() % HELD_SLOTS].fetch_add(1, Ordering::Relaxed) == 0 {
            self.holders.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn count_out(&self, wl: WorkloadId) {
        if self.held[wl.slot() % HELD_SLOTS].fetch_sub(1, Ordering::Relaxed) == 1 {
            self.holders.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Adds a new flow to a locked shard, making room first: when the shard is
    /// full, or `key`'s workload is at its quota, one flow goes (see
    /// [`FlowTable::evict_one`]). O(1): a bounded sample, never a walk.
    pub fn insert(&self, shard: &mut FxHashMap<FlowKey, Flow>, key: FlowKey, flow: Flow) {
        let wl = key.workload;
        let over_quota = self.quota.is_some_and(|q| self.held_by(wl) >= q);
        if shard.len() >= self.per_shard || over_quota {
            self.evict_one(shard, wl, over_quota);
        }
        if shard.insert(key, flow).is_none() {
            self.count_in(wl);
        }
    }

    /// Evicts one flow of a full shard, the least recently seen of a sample:
    /// of `newcomer`'s own flows when it is over its share (a flood evicts
    /// itself), else of the workloads over their share, else of any. Expired
    /// flows are the least recently seen, so they go first.
    fn evict_one(
        &self,
        shard: &mut FxHashMap<FlowKey, Flow>,
        newcomer: WorkloadId,
        over_quota: bool,
    ) {
        let share = self.share();
        let own_only = over_quota || self.held_by(newcomer) >= share;
        let pick = |want: &dyn Fn(WorkloadId) -> bool| {
            shard
                .iter()
                .take(EVICT_SCAN)
                .filter(|(k, _)| want(k.workload))
                .take(EVICT_SAMPLE)
                .min_by_key(|(_, f)| f.last_seen_ms)
                .map(|(k, _)| *k)
        };
        let victim = if own_only {
            pick(&|w| w == newcomer)
        } else {
            pick(&|w| self.held_by(w) > share)
        };
        // Only a full shard takes someone else's flow; a workload over its
        // quota with no flow in this shard goes over by one (the quota holds
        // within a flow per shard, without locking a second shard).
        let victim = victim.or_else(|| {
            (shard.len() >= self.per_shard)
                .then(|| pick(&|_| true))
                .flatten()
        });
        let Some(victim) = victim else { return };
        let Some(f) = shard.remove(&victim) else {
            return;
        };
        self.count_out(victim.workload);
        self.counters.evicted.fetch_add(1, Ordering::Relaxed);
        // Evicted flows still get their closing record.
        let mut ev = self.evicted.lock().unwrap_or_else(|e| e.into_inner());
        if ev.len() < 65_536 {
            ev.push((victim, f));
        }
    }

    /// Flows in the table.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// True when no flow is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Visits every flow (one shard locked at a time), then removes the expired
    /// ones. Flows removed to make room since the last sweep are visited as expired.
    pub fn sweep(
        &self,
        timeouts: &Timeouts,
        now_ms: u64,
        mut visit: impl FnMut(&FlowKey, &mut Flow, Sweep),
    ) {
        let gone = std::mem::take(&mut *self.evicted.lock().unwrap_or_else(|e| e.into_inner()));
        for (k, mut f) in gone {
            visit(&k, &mut f, Sweep::Expired);
        }
        for s in self.shards.iter() {
            let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
            let before = s.len();
            s.retain(|k, f| {
                let exp = f.expired(k.proto, timeouts, now_ms);
                visit(k, f, if exp { Sweep::Expired } else { Sweep::Live });
                if exp {
                    self.count_out(k.workload);
                }
                !exp
            });
            self.counters
                .expired
                .fetch_add((before - s.len()) as u64, Ordering::Relaxed);
        }
    }

    /// Visits every live flow, one shard locked at a time.
    pub fn visit(&self, mut visit: impl FnMut(&FlowKey, &Flow)) {
        for s in self.shards.iter() {
            for (k, f) in s.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                visit(k, f);
            }
        }
    }

    /// Keys of the live flows `keep` accepts, most recently seen first: one
    /// shard locked at a time, copying only keys and times, so a reader of a
    /// large table holds no lock for longer than a copy of one shard's keys.
    pub fn recent_keys(&self, keep: impl Fn(&FlowKey) -> bool) -> Vec<FlowKey> {
        let mut keys: Vec<(u64, FlowKey)> = Vec::new();
        for s in self.shards.iter() {
            let s = s.lock().unwrap_or_else(|e| e.into_inner());
            keys.extend(
                s.iter()
                    .filter(|(k, _)| keep(k))
                    .map(|(k, f)| (f.last_seen_ms, *k)),
            );
        }
        keys.sort_unstable_by_key(|(t, _)| std::cmp::Reverse(*t));
        keys.into_iter().map(|(_, k)| k).collect()
    }

    /// Runs `f` on the flow of `key`, if it is still there, under its shard's lock.
    pub fn with_flow<R>(&self, key: &FlowKey, f: impl FnOnce(&Flow) -> R) -> Option<R> {
        self.shard(key).get(key).map(f)
    }

    /// Runs `f` on the flow of `key`, if it is still there, under its shard's lock.
    pub fn with_flow_mut<R>(&self, key: &FlowKey, f: impl FnOnce(&mut Flow) -> R) -> Option<R> {
        self.shard(key).get_mut(key).map(f)
    }

    /// Removes every flow of a workload (it was detached).
    pub fn forget(&self, wl: WorkloadId) {
        for s in self.shards.iter() {
            s.lock().unwrap_or_else(|e| e.into_inner()).retain(|k, _| {
                let mine = k.workload == wl;
                if mine {
                    self.count_out(wl);
                }
                !mine
            });
        }
    }
}

fn placeholder() -> Flow {
    Flow {
        direction: Direction::Egress,
        initiator_lo: true,
        state: FlowState::Closed,
        first_seen_ms: 0,
        last_seen_ms: 0,
        tally: Default::default(),
        action: Action::Allow,
        rule: None,
        logged_by: None,
        generation: 0,
        limiters: None,
        bandwidth: None,
        app: AppId::UNKNOWN,
        how: None,
        host: None,
        probe: None,
        evasive: false,
        dns: None,
        mirror: false,
        fast: false,
        offload: None,
        report: Report::default(),
    }
}

impl Flow {
    /// A fresh flow whose first packet came from `initiator_lo`'s end.
    pub fn new(direction: Direction, initiator_lo: bool, first_seen_ms: u64, now_ms: u64) -> Flow {
        Flow {
            direction,
            initiator_lo,
            state: FlowState::New,
            first_seen_ms,
            last_seen_ms: now_ms,
            ..placeholder()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::parse::Fragment;

    fn ip(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16) -> IpFacts<'static> {
        IpFacts {
            src: IpAddr::from(src),
            dst: IpAddr::from(dst),
            proto: 6,
            src_port: sp,
            dst_port: dp,
            flags: 0,
            seq: 0,
            payload: &[],
            fragment: Fragment::No,
            nd: None,
            icmp_type: None,
        }
    }

    #[test]
    fn both_directions_share_a_key() {
        let w = WorkloadId::new(1, 0);
        let (a, fa) = FlowKey::of(w, &ip([10, 0, 0, 2], 4000, [10, 0, 0, 1], 80));
        let (b, fb) = FlowKey::of(w, &ip([10, 0, 0, 1], 80, [10, 0, 0, 2], 4000));
        assert_eq!(a, b);
        assert_ne!(fa, fb);
        let (c, _) = FlowKey::of(
            WorkloadId::new(2, 0),
            &ip([10, 0, 0, 1], 80, [10, 0, 0, 2], 4000),
        );
        assert_ne!(a, c);
    }

    #[test]
    fn tcp_state_and_timeouts() {
        let t = Timeouts::default();
        let mut f = Flow::new(Direction::Egress, true, 0, 0);
        f.account(true, 1, 60, tcp_flags::SYN, 0);
        assert_eq!(f.state, FlowState::New);
        assert!(f.expired(6, &t, 31_000));
        f.account(false, 1, 60, tcp_flags::SYN | tcp_flags::ACK, 10);
        assert_eq!(f.state, FlowState::Established);
        assert!(!f.expired(6, &t, 31_000));
        f.account(true, 1, 60, tcp_flags::FIN | tcp_flags::ACK, 20);
        assert_eq!(f.state, FlowState::Closing);
        f.account(false, 1, 60, tcp_flags::FIN | tcp_flags::ACK, 30);
        assert_eq!(f.state, FlowState::Closed);
        assert!(f.expired(6, &t, 10_031));
        assert_eq!(
            f.tally[0],
            Tally {
                packets: 2,
                bytes: 120
            }
        );
        assert_eq!(
            f.tally[1],
            Tally {
                packets: 2,
                bytes: 120
            }
        );
    }

    #[test]
    fn full_table_evicts_and_counts() {
        let table = FlowTable::new(SHARDS, None); // one flow per shard
        let t = Timeouts::default();
        for port in 0..200u16 {
            let (k, fwd) = FlowKey::of(
                WorkloadId::new(0, 0),
                &ip([10, 0, 0, 2], port, [10, 0, 0, 1], 80),
            );
            let mut s = table.shard(&k);
            if !s.contains_key(&k) {
                table.insert(&mut s, k, Flow::new(Direction::Egress, fwd, 0, port as u64));
            }
        }
        assert!(table.len() <= table.capacity());
        let evicted = table.counters.evicted.load(Ordering::Relaxed);
        assert_eq!(evicted as usize, 200 - table.len());
        let mut seen = 0;
        table.sweep(&t, 200, |_, _, s| seen += (s == Sweep::Expired) as usize);
        assert_eq!(seen, evicted as usize);
    }
}
