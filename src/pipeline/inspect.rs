//! The inspection stage: flow lookup, firewall verdict on a flow's first packet
//! (and again when its application is named or the rules change), application
//! identification, and the control action (rate limit, shape) on every packet.

use super::Pipeline;
use super::app::{AppId, AppProbe, DnsCache, How, Probe};
use super::firewall::{Action, Direction, FlowFacts, Limit};
use super::flow::{Flow, FlowKey, FlowTable, Timeouts};
use super::parse::{Fragment, IpFacts, proto};
use super::police::{Limiter, Pace, PacketBucket, TokenBucket};
use super::verdict::{DropReason, Verdict};
use crate::switch::WorkloadId;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Names the DNS cache keeps.
const DNS_CACHE: usize = 16_384;

/// Limiters of one workload, by packet direction (0 from it, 1 towards it).
pub type Limiters = Arc<[Limiter; 2]>;

/// Whose flow a packet belongs to, and how it travels.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// The workload.
    pub workload: WorkloadId,
    /// Its name, as rules name it.
    pub name: &'a str,
    /// Towards the workload (ingress) or from it (egress).
    pub direction: Direction,
    /// Mirror mode: record verdicts, enforce nothing.
    pub mirror: bool,
}

/// The size of a packet as limits and statistics count it.
#[derive(Clone, Copy, Debug)]
pub struct Size {
    /// Packets on the wire (a GSO super-frame is several).
    pub packets: u64,
    /// Bytes on the wire, headers of every segment included.
    pub bytes: u64,
}

/// What to do with fragments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FragmentPolicy {
    /// Judge them: the first by its ports, later ones as a flow without ports.
    #[default]
    Pass,
    /// Count and drop every fragment.
    Drop,
}

/// Counters of the inspection stage.
#[derive(Debug, Default)]
pub struct InspectCounters {
    /// Flows judged again (rules changed, or their application was named).
    pub rejudged: AtomicU64,
    /// Flows named by content (SNI, QUIC SNI, HTTP Host).
    pub named_by_content: AtomicU64,
    /// Flows named from a DNS answer.
    pub named_by_dns: AtomicU64,
    /// First fragments seen.
    pub fragments_first: AtomicU64,
    /// Later fragments seen.
    pub fragments_later: AtomicU64,
    /// Frames mirror mode would have dropped.
    pub would_drop: AtomicU64,
}

/// State of the inspection stage that outlives rule pushes.
#[derive(Debug)]
pub struct Inspector {
    /// Every flow of every workload.
    pub flows: FlowTable,
    /// Idle timeouts.
    pub timeouts: Timeouts,
    /// Names learned from DNS answers, by address.
    pub dns: Mutex<DnsCache>,
    /// Workload bandwidth limits by name (auto-bandwidth changes their rates).
    bandwidth: Mutex<FxHashMap<String, Limiters>>,
    /// Counters.
    pub counters: InspectCounters,
    epoch: Instant,
    epoch_unix_ms: u64,
}

impl Inspector {
    /// An inspector holding at most `capacity` flows.
    pub fn new(capacity: usize, timeouts: Timeouts) -> Inspector {
        Inspector {
            flows: FlowTable::new(capacity),
            timeouts,
            dns: Mutex::new(DnsCache::new(DNS_CACHE)),
            bandwidth: Mutex::new(FxHashMap::default()),
            counters: InspectCounters::default(),
            epoch: Instant::now(),
            epoch_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }
    }

    /// Nanoseconds on the datapath clock.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Unix milliseconds of a datapath clock time.
    pub fn unix_ms(&self, clock_ms: u64) -> u64 {
        self.epoch_unix_ms + clock_ms
    }

    /// Sets (or with `None` removes) a workload's bandwidth limit, in bytes/s per
    /// direction. An existing limit changes rate in place, so its flows keep it.
    pub fn set_bandwidth(&self, workload: &str, rate: Option<u64>) {
        let mut bw = self.bandwidth.lock().unwrap_or_else(|e| e.into_inner());
        match (rate, bw.get(workload)) {
            (None, _) => {
                bw.remove(workload);
            }
            (Some(r), Some(l)) => {
                for l in l.iter() {
                    if let Limiter::Shape { bucket, .. } = l {
                        bucket.set_rate(r);
                    }
                }
            }
            (Some(r), None) => {
                let shaper = || Limiter::Shape {
                    bucket: TokenBucket::new(r, burst_of(r)),
                    max_delay_ns: 100_000_000,
                };
                bw.insert(workload.to_string(), Arc::new([shaper(), shaper()]));
            }
        }
    }

    /// The current bandwidth limit of a workload, bytes/s.
    pub fn bandwidth(&self, workload: &str) -> Option<u64> {
        let bw = self.bandwidth.lock().unwrap_or_else(|e| e.into_inner());
        match &bw.get(workload)?[0] {
            Limiter::Shape { bucket, .. } => Some(bucket.rate()),
            _ => None,
        }
    }

    /// Names of the workloads with a bandwidth limit.
    pub fn bandwidth_workloads(&self) -> Vec<String> {
        let bw = self.bandwidth.lock().unwrap_or_else(|e| e.into_inner());
        bw.keys().cloned().collect()
    }

    fn bandwidth_of(&self, workload: &str) -> Option<Limiters> {
        let bw = self.bandwidth.lock().unwrap_or_else(|e| e.into_inner());
        bw.get(workload).cloned()
    }

    /// Judges one IP packet of a workload's flow.
    pub fn inspect(
        &self,
        pl: &Pipeline,
        ctx: &Context<'_>,
        ip: &IpFacts<'_>,
        size: Size,
        now_ns: u64,
    ) -> Verdict {
        let seen = match ip.fragment {
            Fragment::No => None,
            Fragment::First => Some(&self.counters.fragments_first),
            Fragment::Later => Some(&self.counters.fragments_later),
        };
        if let Some(c) = seen {
            c.fetch_add(1, Ordering::Relaxed);
            if pl.fragments == FragmentPolicy::Drop {
                return Verdict::Drop(DropReason::Fragment);
            }
        }
        if ip.proto == proto::UDP && ip.src_port == 53 && !ip.payload.is_empty() {
            self.learn_dns(ip.payload, now_ns);
        }
        let now_ms = now_ns / 1_000_000;
        let (key, lo_to_hi) = FlowKey::of(ctx.workload, ip);
        let mut shard = self.flows.shard(&key);
        if !shard.contains_key(&key) {
            self.flows.make_room(&mut shard, &self.timeouts, now_ms);
            let mut f = Flow::new(ctx.direction, lo_to_hi, self.unix_ms(now_ms), now_ms);
            f.mirror = ctx.mirror;
            self.name_first(pl, &mut f, ctx.direction, ip, now_ns);
            if matches!(ip.proto, proto::TCP | proto::UDP) && ip.fragment == Fragment::No {
                f.probe = Some(AppProbe::new(ip.proto, ip.dst_port));
            }
            // Generation 0 is never current: the first packet is judged below.
            self.flows.counters.created.fetch_add(1, Ordering::Relaxed);
            shard.insert(key, f);
        }
        let flow = shard.get_mut(&key).expect("inserted above");
        let from_initiator = lo_to_hi == flow.initiator_lo;
        flow.account(from_initiator, size.packets, size.bytes, ip.flags, now_ms);
        flow.mirror = ctx.mirror;
        let mut rejudge = flow.generation != pl.generation;
        if let Some(p) = flow.probe.as_mut()
            && !ip.payload.is_empty()
        {
            let seq = (ip.proto == proto::TCP).then_some(ip.seq);
            match p.feed(from_initiator, seq, ip.payload) {
                Probe::NeedMore => {}
                Probe::GiveUp => flow.probe = None,
                Probe::Found { host, how } => {
                    flow.probe = None;
                    let app = pl.apps.by_host(&host);
                    // A name no application claims (often a bare address in
                    // `Host:`) says less than the DNS answer the flow was named
                    // from: keep that.
                    if app.is_some() || flow.how != Some(How::Dns) {
                        if let Some(app) = app {
                            flow.app = app;
                        }
                        flow.host = Some(host.into_boxed_str());
                        flow.how = Some(how);
                        flow.report.changed = true;
                        self.counters
                            .named_by_content
                            .fetch_add(1, Ordering::Relaxed);
                        rejudge = true;
                    }
                }
            }
        }
        if rejudge {
            if flow.generation != 0 {
                self.counters.rejudged.fetch_add(1, Ordering::Relaxed);
            }
            self.judge(pl, &key, flow, ctx);
        }
        if ctx.mirror {
            if !flow.action.allows() {
                self.counters.would_drop.fetch_add(1, Ordering::Relaxed);
            }
            return Verdict::Forward;
        }
        let d = match ctx.direction {
            Direction::Egress => 0,
            Direction::Ingress => 1,
        };
        let mut at = now_ns;
        let verdict = match &flow.action {
            Action::Allow => Verdict::Forward,
            Action::Deny => return Verdict::Drop(DropReason::Denied),
            Action::Reject => return Verdict::Reject,
            Action::RateLimit(_) | Action::Shape(_) => match flow.limiters.as_ref() {
                Some(l) => match l[d].pace(now_ns, size.bytes) {
                    Pace::Now => Verdict::Forward,
                    Pace::At(t) => {
                        at = t;
                        Verdict::Delay(t)
                    }
                    Pace::Over => return Verdict::Drop(DropReason::RateLimited),
                    Pace::TooLate => return Verdict::Drop(DropReason::ShapeOverflow),
                },
                None => Verdict::Forward,
            },
        };
        match &flow.bandwidth {
            None => verdict,
            Some(bw) => match bw[d].pace(at, size.bytes) {
                Pace::Now => verdict,
                Pace::At(t) => Verdict::Delay(t),
                Pace::Over => Verdict::Drop(DropReason::RateLimited),
                Pace::TooLate => Verdict::Drop(DropReason::ShapeOverflow),
            },
        }
    }

    /// Names a new flow before its content is seen: from a DNS answer for the
    /// remote address, else from its port.
    fn name_first(
        &self,
        pl: &Pipeline,
        f: &mut Flow,
        dir: Direction,
        ip: &IpFacts<'_>,
        now_ns: u64,
    ) {
        let remote = match dir {
            Direction::Egress => ip.dst,
            Direction::Ingress => ip.src,
        };
        let by_port = pl.apps.by_port(ip.proto, ip.dst_port);
        // Network services (DNS, NTP, DHCP) are named by their port: their server
        // may well share an address with a named site.
        if let Some(app) = by_port.filter(|a| pl.apps.is_service(*a)) {
            f.app = app;
            f.how = Some(How::Port);
            return;
        }
        let now_s = now_ns / 1_000_000_000;
        let dns = self.dns.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(name) = dns.lookup(remote, now_s)
            && let Some(app) = pl.apps.by_host(name)
        {
            f.app = app;
            f.host = Some(name.into());
            f.how = Some(How::Dns);
            self.counters.named_by_dns.fetch_add(1, Ordering::Relaxed);
            return;
        }
        drop(dns);
        if let Some(app) = by_port {
            f.app = app;
            f.how = Some(How::Port);
        }
    }

    fn learn_dns(&self, payload: &[u8], now_ns: u64) {
        let Some(a) = super::app::parse_response(payload) else {
            return;
        };
        let now_s = now_ns / 1_000_000_000;
        let mut dns = self.dns.lock().unwrap_or_else(|e| e.into_inner());
        for (ip, ttl) in &a.addrs {
            dns.insert(*ip, &a.name, *ttl, now_s);
        }
    }

    /// Judges a flow against the current rules and caches the verdict in it.
    fn judge(&self, pl: &Pipeline, key: &FlowKey, flow: &mut Flow, ctx: &Context<'_>) {
        let (src, dst) = if flow.initiator_lo {
            (key.lo, key.hi)
        } else {
            (key.hi, key.lo)
        };
        let known = flow.app != AppId::UNKNOWN;
        let facts = FlowFacts {
            workload: ctx.name,
            direction: flow.direction,
            src: src.0,
            dst: dst.0,
            proto: key.proto,
            src_port: src.1,
            dst_port: dst.1,
            app: known.then(|| pl.apps.name(flow.app)),
            category: known.then(|| pl.apps.category(flow.app)),
        };
        let d = pl.rules.judge(&facts);
        if flow.generation != 0 && (d.action != flow.action || d.rule != flow.rule) {
            flow.report.changed = true;
        }
        flow.limiters = match (&d.action, d.rule) {
            (Action::RateLimit(_) | Action::Shape(_), Some(rule)) => {
                Some(pl.limiters_for(rule, key.workload, &d.action))
            }
            _ => None,
        };
        flow.action = d.action;
        flow.rule = d.rule;
        flow.logged_by = d.logged_by;
        flow.generation = pl.generation;
        flow.bandwidth = self.bandwidth_of(ctx.name);
    }
}

/// Burst of a rate: 10 ms worth, at least 16 KiB.
pub fn burst_of(rate: u64) -> u64 {
    (rate / 100).max(16 * 1024)
}

/// Builds the limiters of a rate-limit or shape action.
pub fn limiters(action: &Action) -> Option<[Limiter; 2]> {
    let one = || match action {
        Action::RateLimit(Limit::Bytes { rate, burst }) => {
            Some(Limiter::Bytes(TokenBucket::new(*rate, *burst)))
        }
        Action::RateLimit(Limit::Packets { pps, burst }) => {
            Some(Limiter::Packets(PacketBucket::new(*pps, *burst)))
        }
        Action::Shape(s) => Some(Limiter::Shape {
            bucket: TokenBucket::new(s.rate, s.burst),
            max_delay_ns: s.max_delay_ms as u64 * 1_000_000,
        }),
        _ => None,
    };
    Some([one()?, one()?])
}
