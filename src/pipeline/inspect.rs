//! The inspection stage: flow lookup, firewall verdict on a flow's first packet
//! (and again when its application is named or the rules change), application
//! identification, and the control action (rate limit, shape) on every packet.

use super::Pipeline;
use super::app::{Account, AppId, AppProbe, Budget, DnsCache, How, Probe};
use super::firewall::{Action, FlowFacts, Limit};
use super::flow::{Flow, FlowKey, FlowState, FlowTable, Offload, Timeouts};
use super::parse::{Fragment, IpFacts, proto, tcp_flags};
use super::police::{Limiter, Pace, PacketBucket, TokenBucket};
use super::verdict::Verdict;
use crate::vocab::{Direction, DropReason, WorkloadId};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Addresses one workload's DNS cache holds.
const DNS_CACHE: usize = 4_096;

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
    /// The fast path's epoch, when the kernel may forward this workload's
    /// settled flows (the node has a fast path and the workload is inline).
    pub fast: Option<u64>,
}

/// Packets a flow carries through guardwire before it may go to the kernel
/// fast path: a flow of one or two packets (a scan, a flood of new flows, a
/// DNS query) is not worth an entry, and a flood of them must not churn the
/// kernel's map.
pub const OFFER_AFTER: u64 = 4;

/// Where a flow stands with the kernel fast path, after a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fast {
    /// Not a question here (no fast path, not TCP or UDP, no flow).
    No,
    /// Settled, and this direction is not the kernel's yet: offer it.
    Offer,
    /// Settled, and this direction is the kernel's already.
    Held,
    /// Not settled (or a SYN that starts it again); `offloaded`: the kernel
    /// holds some of it, which must be taken back.
    Unsettled {
        /// The kernel holds a direction of it (or may: a new SYN).
        offloaded: bool,
    },
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

/// What to do with a TCP stream that tries to evade the application probes:
/// a segment overlapping bytes already seen with other bytes, or a request or
/// hello that does not end within the reassembly window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum EvasionPolicy {
    /// The first bytes win: a conflicting segment is withheld (so the receiver
    /// gets only what was judged) and a stream too long to read is named by
    /// its port.
    #[default]
    #[serde(rename = "first-wins")]
    FirstWins,
    /// Drop the whole flow.
    #[serde(rename = "drop")]
    Drop,
}

/// Bytes the application probes hold at most by default, over all flows.
pub const REASSEMBLY_BUDGET: usize = 64 << 20;

/// Counters of the inspection stage.
#[derive(Debug, Default)]
pub struct InspectCounters {
    /// Flows judged again (rules changed, or their application was named).
    pub rejudged: AtomicU64,
    /// Flows named by content (SNI, QUIC SNI, HTTP Host).
    pub named_by_content: AtomicU64,
    /// Flows named from a DNS answer.
    pub named_by_dns: AtomicU64,
    /// DNS answers not learned from: unsolicited, late, sent by the workload.
    pub dns_ignored: AtomicU64,
    /// First fragments seen.
    pub fragments_first: AtomicU64,
    /// Later fragments seen.
    pub fragments_later: AtomicU64,
    /// Frames mirror mode would have dropped.
    pub would_drop: AtomicU64,
    /// TCP segments withheld because the reassembly budget was spent.
    pub reassembly_withheld: AtomicU64,
    /// TCP segments overlapping bytes already seen with other bytes.
    pub tcp_overlap_conflicts: AtomicU64,
    /// Probes that reached the end of their window still reading a request
    /// or hello.
    pub probes_exhausted: AtomicU64,
}

/// State of the inspection stage that outlives rule pushes.
#[derive(Debug)]
pub struct Inspector {
    /// Every flow of every workload.
    pub flows: FlowTable,
    /// Idle timeouts.
    pub timeouts: Timeouts,
    /// Per workload, names learned from DNS answers it asked for, by address:
    /// one workload's answers never name another's flows.
    dns: Mutex<FxHashMap<WorkloadId, DnsCache>>,
    /// Workload bandwidth limits by name (auto-bandwidth changes their rates).
    bandwidth: Mutex<FxHashMap<String, Limiters>>,
    /// What the TCP streams of every flow may hold while they are read.
    pub reassembly: Arc<Budget>,
    /// Counters.
    pub counters: InspectCounters,
    epoch: Instant,
    epoch_unix_ms: u64,
}

impl Inspector {
    /// An inspector holding at most `capacity` flows.
    pub fn new(capacity: usize, timeouts: Timeouts) -> Inspector {
        Inspector::with_quota(capacity, None, timeouts)
    }

    /// An inspector holding at most `capacity` flows, at most `quota` of them
    /// one workload's (none: an even share when the table is full).
    pub fn with_quota(capacity: usize, quota: Option<usize>, timeouts: Timeouts) -> Inspector {
        Inspector {
            flows: FlowTable::new(capacity, quota),
            timeouts,
            dns: Mutex::default(),
            bandwidth: Mutex::new(FxHashMap::default()),
            reassembly: Budget::new(REASSEMBLY_BUDGET),
            counters: InspectCounters::default(),
            epoch: Instant::now(),
            epoch_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }
    }

    /// The same, with a reassembly budget of `bytes`.
    pub fn with_reassembly(mut self, bytes: usize) -> Inspector {
        self.reassembly = Budget::new(bytes);
        self
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
        let now_ms = now_ns / 1_000_000;
        let (key, lo_to_hi) = FlowKey::of(ctx.workload, ip);
        let mut shard = self.flows.shard(&key);
        if !shard.contains_key(&key) {
            let syn = ip.flags & tcp_flags::SYN != 0;
            let ack = ip.flags & tcp_flags::ACK != 0;
            let mut f = if ip.proto == proto::TCP && (!syn || ack) {
                // Mid-stream (the flow was evicted, or predates us): the side
                // that sent it is not known to have started it, and judging
                // a reply as a new flow from the other side would cut a live
                // connection. A SYN-ACK comes from the server; otherwise the
                // client is the side with the higher (ephemeral) port.
                let sender_is_client = !syn && ip.src_port >= ip.dst_port;
                let (dir, lo) = if sender_is_client {
                    (ctx.direction, lo_to_hi)
                } else {
                    (ctx.direction.reverse(), !lo_to_hi)
                };
                let mut f = Flow::new(dir, lo, self.unix_ms(now_ms), now_ms);
                f.state = FlowState::Established;
                f
            } else {
                Flow::new(ctx.direction, lo_to_hi, self.unix_ms(now_ms), now_ms)
            };
            f.mirror = ctx.mirror;
            self.name_first(pl, &mut f, ctx, ip, now_ns);
            if matches!(ip.proto, proto::TCP | proto::UDP) && ip.fragment == Fragment::No {
                f.probe = Some(AppProbe::new(ip.proto, ip.dst_port));
            }
            // Generation 0 is never current: the first packet is judged below.
            self.flows.counters.created.fetch_add(1, Ordering::Relaxed);
            self.flows.insert(&mut shard, key, f);
        }
        let flow = shard.get_mut(&key).expect("inserted above");
        let from_initiator = lo_to_hi == flow.initiator_lo;
        flow.account(from_initiator, size.packets, size.bytes, ip.flags, now_ms);
        let account = Account {
            budget: &self.reassembly,
            workload: ctx.workload,
        };
        let dns =
            matches!(ip.proto, proto::UDP | proto::TCP) && (ip.src_port == 53 || ip.dst_port == 53);
        if ip.proto == proto::TCP && ip.flags & tcp_flags::SYN != 0 {
            if let Some(p) = flow.probe.as_mut()
                && from_initiator
                && ip.flags & tcp_flags::ACK == 0
            {
                p.syn(ip.seq);
            }
            if dns {
                let to_server = ip.dst_port == 53;
                flow.dns.get_or_insert_default().syn(to_server, ip.seq);
            }
        }
        let mut withhold = false;
        let mut rejudge = flow.generation != pl.generation;
        if dns && !ip.payload.is_empty() {
            let unread = self.dns_segment(ctx, flow, ip, account, now_ms);
            (withhold, rejudge) = self.unread(pl, flow, unread, (withhold, rejudge));
        }
        flow.mirror = ctx.mirror;
        if let Some(p) = flow.probe.as_mut()
            && !ip.payload.is_empty()
        {
            let seq = (ip.proto == proto::TCP).then_some(ip.seq);
            match p.feed(from_initiator, seq, ip.payload, account) {
                Probe::NeedMore => {}
                Probe::GiveUp => flow.probe = None,
                unread @ (Probe::Withhold | Probe::Conflict | Probe::Exhausted) => {
                    (withhold, rejudge) = self.unread(pl, flow, Some(unread), (withhold, rejudge));
                    if flow.evasive || flow.probe.as_ref().is_some_and(AppProbe::done) {
                        flow.probe = None;
                    }
                }
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
            if !flow.action.allows() || withhold {
                self.counters.would_drop.fetch_add(1, Ordering::Relaxed);
            }
            return Verdict::Forward;
        }
        if flow.evasive {
            return Verdict::Drop(DropReason::Evasion);
        }
        if withhold {
            return Verdict::Drop(DropReason::Withheld);
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
                Some(l) => match l[d].pace(now_ns, size.packets, size.bytes) {
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
            Some(bw) => match bw[d].pace(at, size.packets, size.bytes) {
                Pace::Now => verdict,
                Pace::At(t) => Verdict::Delay(t),
                Pace::Over => Verdict::Drop(DropReason::RateLimited),
                Pace::TooLate => Verdict::Drop(DropReason::ShapeOverflow),
            },
        }
    }

    /// Where the packet's flow stands with the fast path after
    /// [`Inspector::inspect`] let it through (`forwarded`) or not. Settled:
    /// allowed; named or done probing; no shaper, limit or workload bandwidth;
    /// not mirrored, not condemned, no DNS read; TCP established; and the
    /// packet is no fragment and has no SYN, FIN or RST.
    pub fn fast_hint(&self, ctx: &Context<'_>, ip: &IpFacts<'_>, forwarded: bool) -> Fast {
        let Some(epoch) = ctx.fast else {
            return Fast::No;
        };
        // TCP, UDP and ICMP echo: what the kernel program keys as guardwire does.
        let echo = matches!(
            (ip.proto, ip.icmp_type),
            (proto::ICMP, Some(0 | 8)) | (proto::ICMPV6, Some(128 | 129))
        );
        if !matches!(ip.proto, proto::TCP | proto::UDP) && !echo {
            return Fast::No;
        }
        let (key, lo_to_hi) = FlowKey::of(ctx.workload, ip);
        let tcp = ip.proto == proto::TCP;
        let ends = tcp && ip.flags & (tcp_flags::SYN | tcp_flags::FIN | tcp_flags::RST) != 0;
        let shard = self.flows.shard(&key);
        let Some(f) = shard.get(&key) else {
            return Fast::No;
        };
        let settled = forwarded
            && !ends
            && f.tally[0].packets + f.tally[1].packets >= OFFER_AFTER
            && ip.fragment == Fragment::No
            && f.fast
            && matches!(f.action, Action::Allow)
            && f.limiters.is_none()
            && f.bandwidth.is_none()
            && f.probe.is_none()
            && f.dns.is_none()
            && !f.evasive
            && !f.mirror
            && (!tcp || f.state == FlowState::Established);
        // A new connection on a reused key may meet an entry of the old one.
        let syn = tcp && ip.flags & tcp_flags::SYN != 0 && ip.flags & tcp_flags::ACK == 0;
        match f.offload {
            _ if !settled => Fast::Unsettled {
                offloaded: f.offload.is_some() || syn,
            },
            Some(o) if o.epoch == epoch && o.sides & Offload::side(lo_to_hi) != 0 => Fast::Held,
            _ => Fast::Offer,
        }
    }

    /// Names a new flow before its content is seen: from a DNS answer for the
    /// remote address, else from its port.
    fn name_first(
        &self,
        pl: &Pipeline,
        f: &mut Flow,
        ctx: &Context<'_>,
        ip: &IpFacts<'_>,
        now_ns: u64,
    ) {
        let remote = match ctx.direction {
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
        if let Some(name) = dns.get(&ctx.workload).and_then(|c| c.lookup(remote, now_s))
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

    /// A DNS message on one of the workload's flows: its queries are
    /// remembered; an answer travelling towards it that matches one (same
    /// flow, same id, in time) names addresses in its own cache. Any other
    /// answer (unsolicited, from the workload itself, late) is counted and
    /// ignored: it could name another's flows, or evade a rule on a name.
    /// A DNS packet of a flow (over TCP, a segment of its stream). Returns
    /// what could not be read of it, as the probe would say it: its stream
    /// could not hold it, or it rewrites bytes already read.
    fn dns_segment(
        &self,
        ctx: &Context<'_>,
        flow: &mut Flow,
        ip: &IpFacts<'_>,
        account: Account<'_>,
        now_ms: u64,
    ) -> Option<Probe> {
        let dns = flow.dns.get_or_insert_default();
        if ip.proto != proto::TCP {
            self.dns_message(ctx, dns, ip, ip.payload, now_ms);
            return None;
        }
        let (take, messages) = dns.segment(ip.dst_port == 53, ip.seq, ip.payload, account);
        for m in &messages {
            self.dns_message(ctx, dns, ip, m, now_ms);
        }
        match take {
            super::app::stream::Take::Refused => Some(Probe::Withhold),
            super::app::stream::Take::Conflict => Some(Probe::Conflict),
            _ => None,
        }
    }

    /// A segment a stream could not read (from the application probe or from
    /// DNS over TCP): counted, and handled by the evasion policy. Takes and
    /// returns (withhold the segment, judge the flow again).
    fn unread(
        &self,
        pl: &Pipeline,
        flow: &mut Flow,
        unread: Option<Probe>,
        (withhold, rejudge): (bool, bool),
    ) -> (bool, bool) {
        let drop = pl.evasion == EvasionPolicy::Drop;
        let (counter, withheld, evasion) = match unread {
            Some(Probe::Withhold) => (&self.counters.reassembly_withheld, true, false),
            Some(Probe::Conflict) => (&self.counters.tcp_overlap_conflicts, true, drop),
            Some(Probe::Exhausted) => (&self.counters.probes_exhausted, false, drop),
            _ => return (withhold, rejudge),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        flow.evasive |= evasion;
        (withhold || withheld, rejudge || evasion)
    }

    /// One DNS message of a flow: a query the workload sent, or an answer it
    /// is owed, learnt into its own cache; any other answer is ignored.
    fn dns_message(
        &self,
        ctx: &Context<'_>,
        dns: &mut super::app::DnsFlow,
        ip: &IpFacts<'_>,
        msg: &[u8],
        now_ms: u64,
    ) {
        let Some((id, response, msg)) = super::app::dns::message(msg) else {
            return;
        };
        match (ctx.direction, response) {
            (Direction::Egress, false) if ip.dst_port == 53 => {
                dns.pending.asked(id, now_ms);
            }
            (Direction::Ingress, true) if ip.src_port == 53 && dns.pending.answered(id, now_ms) => {
                let Some(a) = super::app::parse_response(msg) else {
                    return;
                };
                let now_s = now_ms / 1000;
                let mut caches = self.dns.lock().unwrap_or_else(|e| e.into_inner());
                let cache = caches
                    .entry(ctx.workload)
                    .or_insert_with(|| DnsCache::new(DNS_CACHE));
                for (addr, ttl) in &a.addrs {
                    cache.insert(*addr, &a.name, *ttl, now_s);
                }
            }
            (_, true) => {
                self.counters.dns_ignored.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// Forgets everything about a workload (it was detached): its flows and
    /// the names it learned.
    pub fn forget(&self, wl: WorkloadId) {
        self.flows.forget(wl);
        self.dns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&wl);
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
        flow.action = if flow.evasive { Action::Deny } else { d.action };
        flow.rule = d.rule;
        flow.logged_by = d.logged_by;
        flow.generation = pl.generation;
        flow.bandwidth = self.bandwidth_of(ctx.name);
        flow.fast = pl.rules.workload(ctx.name).is_none_or(|p| p.fast_path);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::MalformedPolicy;
    use crate::pipeline::flow::Timeouts;
    use crate::pipeline::parse::Fragment;
    use simple_dns::rdata::{A, RData};
    use simple_dns::{CLASS, Name, Packet, QTYPE, Question, ResourceRecord, TYPE};
    use std::net::IpAddr;

    const POD1: WorkloadId = WorkloadId::new(1, 0);
    const POD2: WorkloadId = WorkloadId::new(2, 0);
    const RESOLVER: [u8; 4] = [10, 96, 0, 10];
    const SITE: [u8; 4] = [10, 99, 0, 2];

    fn question(p: &mut Packet<'_>) {
        p.questions.push(Question::new(
            Name::new_unchecked("www.youtube.com"),
            QTYPE::TYPE(TYPE::A),
            simple_dns::QCLASS::CLASS(CLASS::IN),
            false,
        ));
    }

    fn query(id: u16) -> Vec<u8> {
        let mut p = Packet::new_query(id);
        question(&mut p);
        p.build_bytes_vec().unwrap()
    }

    fn answer(id: u16) -> Vec<u8> {
        let mut p = Packet::new_reply(id);
        question(&mut p);
        p.answers.push(ResourceRecord::new(
            Name::new_unchecked("www.youtube.com"),
            CLASS::IN,
            300,
            RData::A(A {
                address: u32::from_be_bytes(SITE),
            }),
        ));
        p.build_bytes_vec().unwrap()
    }

    fn pkt(proto: u8, src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, payload: &[u8]) -> IpFacts<'_> {
        IpFacts {
            src: IpAddr::from(src),
            dst: IpAddr::from(dst),
            proto,
            src_port: sp,
            dst_port: dp,
            flags: 0,
            seq: 0,
            payload,
            fragment: Fragment::No,
            nd: None,
            icmp_type: None,
        }
    }

    struct Bed {
        ins: Inspector,
        pl: Pipeline,
    }

    impl Bed {
        fn new() -> Bed {
            Bed {
                ins: Inspector::new(4096, Timeouts::default()),
                pl: Pipeline::new(MalformedPolicy::Drop),
            }
        }

        fn send(&self, wl: WorkloadId, direction: Direction, ip: &IpFacts<'_>) -> Verdict {
            let ctx = Context {
                workload: wl,
                name: "w",
                direction,
                mirror: false,
                fast: None,
            };
            let size = Size {
                packets: 1,
                bytes: 100,
            };
            self.ins.inspect(&self.pl, &ctx, ip, size, 1_000_000_000)
        }

        /// Workload `wl` at `me` asks the resolver for the site, and gets the answer.
        fn resolve(&self, wl: WorkloadId, me: [u8; 4], id: u16) {
            let q = query(id);
            let a = answer(id);
            self.send(
                wl,
                Direction::Egress,
                &pkt(proto::UDP, me, 5353, RESOLVER, 53, &q),
            );
            self.send(
                wl,
                Direction::Ingress,
                &pkt(proto::UDP, RESOLVER, 53, me, 5353, &a),
            );
        }

        /// How workload `wl`'s new TCP flow to the site is named.
        fn named(&self, wl: WorkloadId, from: [u8; 4]) -> String {
            self.send(
                wl,
                Direction::Egress,
                &pkt(proto::TCP, from, 40000, SITE, 443, &[]),
            );
            let mut app = String::new();
            self.ins.flows.visit(|k, f| {
                if k.workload == wl && k.proto == proto::TCP && (k.lo.1 == 443 || k.hi.1 == 443) {
                    app = self.pl.apps.name(f.app).to_string();
                }
            });
            app
        }
    }

    const ME1: [u8; 4] = [10, 244, 0, 2];
    const ME2: [u8; 4] = [10, 244, 0, 3];

    #[test]
    fn an_answer_names_only_the_flows_of_the_workload_that_asked() {
        let b = Bed::new();
        b.resolve(POD2, ME2, 9);
        assert_eq!(b.named(POD2, ME2), "youtube");
        assert_eq!(
            b.named(POD1, ME1),
            "tls",
            "another workload's cache was used"
        );
    }

    #[test]
    fn unsolicited_mismatched_and_outgoing_answers_are_ignored_and_counted() {
        let b = Bed::new();
        // pod1 sends "answers" out (to pod2, to the outside), none asked for.
        b.send(
            POD1,
            Direction::Egress,
            &pkt(proto::UDP, ME1, 53, ME2, 5353, &answer(1)),
        );
        // An answer towards pod2 it never asked for, and one with the wrong id.
        b.send(
            POD2,
            Direction::Ingress,
            &pkt(proto::UDP, ME1, 53, ME2, 5353, &answer(1)),
        );
        b.send(
            POD2,
            Direction::Egress,
            &pkt(proto::UDP, ME2, 5353, RESOLVER, 53, &query(7)),
        );
        b.send(
            POD2,
            Direction::Ingress,
            &pkt(proto::UDP, RESOLVER, 53, ME2, 5353, &answer(8)),
        );
        // The right id from another address is another flow: not an answer either.
        b.send(
            POD2,
            Direction::Ingress,
            &pkt(proto::UDP, ME1, 53, ME2, 5353, &answer(7)),
        );
        assert_eq!(b.ins.counters.dns_ignored.load(Ordering::Relaxed), 4);
        assert_eq!(b.named(POD2, ME2), "tls");
        assert_eq!(b.named(POD1, ME1), "tls");
    }

    #[test]
    fn an_answer_over_tcp_is_learned_too() {
        let b = Bed::new();
        let framed = |m: Vec<u8>| {
            let mut v = (m.len() as u16).to_be_bytes().to_vec();
            v.extend(m);
            v
        };
        let (q, a) = (framed(query(3)), framed(answer(3)));
        b.send(
            POD2,
            Direction::Egress,
            &pkt(proto::TCP, ME2, 41000, RESOLVER, 53, &q),
        );
        b.send(
            POD2,
            Direction::Ingress,
            &pkt(proto::TCP, RESOLVER, 53, ME2, 41000, &a),
        );
        assert_eq!(b.named(POD2, ME2), "youtube");
    }

    #[test]
    fn a_detached_workload_takes_its_names_along() {
        let b = Bed::new();
        b.resolve(POD2, ME2, 9);
        b.ins.forget(POD2);
        assert_eq!(b.named(POD2, ME2), "tls");
    }

    #[test]
    fn one_workloads_flood_evicts_its_own_flows_not_another_s() {
        let b = Bed {
            ins: Inspector::new(640, Timeouts::default()),
            pl: Pipeline::new(MalformedPolicy::Drop),
        };
        for port in 0..20u16 {
            b.send(
                POD2,
                Direction::Egress,
                &pkt(proto::UDP, ME2, 30000 + port, SITE, 53, &[]),
            );
        }
        // 100k SYNs from pod1, each a new flow.
        for i in 0..100_000u32 {
            let sp = 1024 + (i % 60000) as u16;
            let dst = [10, 99, (i / 60000) as u8, 2];
            let mut syn = pkt(proto::TCP, ME1, sp, dst, 80, &[]);
            syn.flags = tcp_flags::SYN;
            b.send(POD1, Direction::Egress, &syn);
        }
        assert_eq!(
            b.ins.flows.held_by(POD2),
            20,
            "pod2's flows were evicted by pod1's flood"
        );
        assert!(b.ins.flows.held_by(POD1) <= b.ins.flows.capacity());
        assert!(b.ins.flows.len() <= b.ins.flows.capacity());
    }

    #[test]
    fn a_quota_caps_a_workload_before_the_table_is_full() {
        let b = Bed {
            ins: Inspector::with_quota(6400, Some(100), Timeouts::default()),
            pl: Pipeline::new(MalformedPolicy::Drop),
        };
        for port in 0..1000u16 {
            b.send(
                POD1,
                Direction::Egress,
                &pkt(proto::UDP, ME1, 20000 + port, SITE, 53, &[]),
            );
        }
        let held = b.ins.flows.held_by(POD1);
        assert!(
            (100..=100 + crate::pipeline::flow::SHARDS).contains(&held),
            "{held}"
        );
    }

    #[test]
    fn a_mid_stream_reply_of_an_unknown_flow_is_judged_as_the_connection_it_continues() {
        // Egress allowed, ingress denied by default: a reply must not be taken
        // for a new connection from the outside.
        let rules = crate::pipeline::firewall::RuleSet::parse(
            "default = \"deny\"\n[[rule]]\ndirection = \"egress\"\naction = \"allow\"\n",
            "t",
        )
        .unwrap();
        let b = Bed {
            ins: Inspector::new(4096, Timeouts::default()),
            pl: Pipeline::new(MalformedPolicy::Drop).with_rules(std::sync::Arc::new(rules)),
        };
        let mut ack = pkt(proto::TCP, SITE, 5201, ME1, 40000, &[]);
        ack.flags = tcp_flags::ACK;
        let v = b.send(POD1, Direction::Ingress, &ack);
        assert!(
            matches!(v, Verdict::Forward),
            "a reply was judged as a new ingress flow: {v:?}"
        );
        let mut syn_ack = pkt(proto::TCP, SITE, 5202, ME1, 40001, &[]);
        syn_ack.flags = tcp_flags::SYN | tcp_flags::ACK;
        let v = b.send(POD1, Direction::Ingress, &syn_ack);
        assert!(matches!(v, Verdict::Forward), "{v:?}");
        // A real new connection from outside is still new and denied.
        let mut syn = pkt(proto::TCP, SITE, 40002, ME1, 22, &[]);
        syn.flags = tcp_flags::SYN;
        let v = b.send(POD1, Direction::Ingress, &syn);
        assert!(matches!(v, Verdict::Drop(DropReason::Denied)), "{v:?}");
    }

    /// A bed whose rules deny youtube by name, with an evasion policy.
    fn sni_bed(evasion: EvasionPolicy) -> Bed {
        let rules = crate::pipeline::firewall::RuleSet::parse(
            "default = \"allow\"\n[[rule]]\napp = \"youtube\"\naction = \"deny\"\n",
            "t",
        )
        .unwrap();
        let mut pl = Pipeline::new(MalformedPolicy::Drop).with_rules(Arc::new(rules));
        pl.evasion = evasion;
        Bed {
            ins: Inspector::new(4096, Timeouts::default()),
            pl,
        }
    }

    const ISN: u32 = u32::MAX - 300;

    /// pod1's SYN to the site from port `sp`, then the client segments at
    /// the byte offsets given, in that order: their verdicts.
    fn tls_flow(b: &Bed, sp: u16, segs: &[(usize, &[u8])]) -> Vec<Verdict> {
        let mut syn = pkt(proto::TCP, ME1, sp, SITE, 443, &[]);
        syn.flags = tcp_flags::SYN;
        syn.seq = ISN;
        b.send(POD1, Direction::Egress, &syn);
        segs.iter()
            .map(|(off, data)| {
                let mut p = pkt(proto::TCP, ME1, sp, SITE, 443, data);
                p.flags = tcp_flags::ACK;
                p.seq = ISN.wrapping_add(1 + *off as u32);
                b.send(POD1, Direction::Egress, &p)
            })
            .collect()
    }

    fn hello_segments(hello: &[u8], size: usize) -> Vec<(usize, &[u8])> {
        hello
            .chunks(size)
            .enumerate()
            .map(|(i, c)| (i * size, c))
            .collect()
    }

    fn denied(v: &Verdict) -> bool {
        matches!(v, Verdict::Drop(DropReason::Denied))
    }

    #[test]
    fn an_sni_deny_holds_whatever_the_order_of_the_segments() {
        let b = sni_bed(EvasionPolicy::FirstWins);
        let stream = crate::pipeline::app::tls::tests::in_records(
            &crate::pipeline::app::tls::tests::pq_hello("www.youtube.com"),
            1000,
        );
        let segs = hello_segments(&stream, 400);
        let n = segs.len();
        assert!(n >= 4);
        let reversed: Vec<_> = segs.iter().rev().copied().collect();
        let middle_first: Vec<_> = [segs[n / 2]]
            .into_iter()
            .chain(segs.iter().copied())
            .collect();
        let duplicated: Vec<_> = segs.iter().flat_map(|s| [*s, *s]).collect();
        // Segments overlapping each other by half.
        let overlapping: Vec<_> = (0..stream.len())
            .step_by(200)
            .map(|o| (o, &stream[o..(o + 400).min(stream.len())]))
            .collect();
        for (i, order) in [reversed, middle_first, duplicated, overlapping]
            .iter()
            .enumerate()
        {
            let got = tls_flow(&b, 41000 + i as u16, order);
            let first = got.iter().position(denied);
            // Every segment before the one completing the hello passes (the
            // receiver cannot read past the gap); that one and all after it
            // are dropped.
            let first = first.unwrap_or_else(|| panic!("order {i}: never denied: {got:?}"));
            assert!(got[first..].iter().all(denied), "order {i}: {got:?}");
        }
        assert_eq!(
            b.ins.counters.tcp_overlap_conflicts.load(Ordering::Relaxed),
            0
        );
        assert_eq!(b.ins.reassembly.used(POD1), (0, 0));
    }

    #[test]
    fn an_overlap_with_other_bytes_is_withheld_or_drops_the_flow() {
        let stream = crate::pipeline::app::tls::tests::in_records(
            &crate::pipeline::app::tls::tests::pq_hello("www.youtube.com"),
            1000,
        );
        let at = stream
            .windows(15)
            .position(|w| w == b"www.youtube.com")
            .unwrap();
        let mut forged = stream.clone();
        forged[at..at + 15].copy_from_slice(b"www.example.org");
        let cut = at - 5;
        // The forged tail first, out of order; the real one over it; then the
        // head that completes the stream.
        let order = [
            (cut, &forged[cut..]),
            (cut, &stream[cut..]),
            (0, &stream[..cut]),
        ];
        let b = sni_bed(EvasionPolicy::FirstWins);
        let got = tls_flow(&b, 42000, &order);
        assert!(
            matches!(got[1], Verdict::Drop(DropReason::Withheld)),
            "{got:?}"
        );
        // The first bytes won: the receiver has only those, named example.org.
        assert!(matches!(got[2], Verdict::Forward), "{got:?}");
        assert_eq!(
            b.ins.counters.tcp_overlap_conflicts.load(Ordering::Relaxed),
            1
        );

        let b = sni_bed(EvasionPolicy::Drop);
        let got = tls_flow(&b, 42001, &order);
        assert!(
            matches!(got[1], Verdict::Drop(DropReason::Evasion)),
            "{got:?}"
        );
        assert!(
            matches!(got[2], Verdict::Drop(DropReason::Evasion)),
            "{got:?}"
        );
    }

    #[test]
    fn a_gap_that_never_fills_is_held_within_the_window_and_let_go_with_its_flow() {
        let b = sni_bed(EvasionPolicy::FirstWins);
        let stream = crate::pipeline::app::tls::tests::in_records(
            &crate::pipeline::app::tls::tests::pq_hello("www.youtube.com"),
            1000,
        );
        let segs = hello_segments(&stream, 400);
        // Everything but the first segment, again and again.
        let order: Vec<_> = (0..20).flat_map(|_| segs[1..].iter().copied()).collect();
        let got = tls_flow(&b, 43000, &order);
        assert!(got.iter().all(|v| matches!(v, Verdict::Forward)), "{got:?}");
        let (total, mine) = b.ins.reassembly.used(POD1);
        assert_eq!((total, mine), (stream.len() - 400, stream.len() - 400));
        b.ins.forget(POD1);
        assert_eq!(b.ins.reassembly.used(POD1), (0, 0));
    }

    #[test]
    fn a_request_too_long_to_read_is_named_by_port_or_dropped() {
        // The Host comes after 17 KB of headers.
        let mut stream = b"GET / HTTP/1.1\r\n".to_vec();
        for _ in 0..170 {
            stream.extend_from_slice(&[b'x'; 98]);
            stream.extend_from_slice(b": \r\n");
        }
        stream.extend_from_slice(b"Host: www.youtube.com\r\n\r\n");
        assert!(stream.len() > crate::pipeline::app::MAX_BUFFER);
        let segs = hello_segments(&stream, 1400);
        let b = sni_bed(EvasionPolicy::FirstWins);
        let got = tls_flow(&b, 44000, &segs);
        assert!(got.iter().all(|v| matches!(v, Verdict::Forward)), "{got:?}");
        assert_eq!(b.ins.counters.probes_exhausted.load(Ordering::Relaxed), 1);
        let b = sni_bed(EvasionPolicy::Drop);
        let got = tls_flow(&b, 44001, &segs);
        let first = got
            .iter()
            .position(|v| !matches!(v, Verdict::Forward))
            .unwrap();
        assert!(
            got[first..]
                .iter()
                .all(|v| matches!(v, Verdict::Drop(DropReason::Evasion))),
            "{got:?}"
        );
    }

    #[test]
    fn a_dns_answer_over_tcp_split_and_reordered_is_learned() {
        let b = Bed::new();
        let framed = |m: Vec<u8>| {
            let mut v = (m.len() as u16).to_be_bytes().to_vec();
            v.extend(m);
            v
        };
        let (q, a) = (framed(query(4)), framed(answer(4)));
        let mut syn = pkt(proto::TCP, ME2, 41001, RESOLVER, 53, &[]);
        syn.flags = tcp_flags::SYN;
        syn.seq = 1000;
        b.send(POD2, Direction::Egress, &syn);
        let mut syn_ack = pkt(proto::TCP, RESOLVER, 53, ME2, 41001, &[]);
        syn_ack.flags = tcp_flags::SYN | tcp_flags::ACK;
        syn_ack.seq = 5000;
        b.send(POD2, Direction::Ingress, &syn_ack);
        // The query in two segments, the answer in three, last first.
        for (off, part) in [(0, &q[..5]), (5, &q[5..])] {
            let mut p = pkt(proto::TCP, ME2, 41001, RESOLVER, 53, part);
            p.seq = 1001 + off as u32;
            b.send(POD2, Direction::Egress, &p);
        }
        for (off, part) in [(20, &a[20..]), (1, &a[1..20]), (0, &a[..1])] {
            let mut p = pkt(proto::TCP, RESOLVER, 53, ME2, 41001, part);
            p.seq = 5001 + off as u32;
            b.send(POD2, Direction::Ingress, &p);
        }
        assert_eq!(b.named(POD2, ME2), "youtube");
        assert_eq!(b.ins.counters.dns_ignored.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_packet_rate_counts_the_segments_of_a_super_frame() {
        let rules = crate::pipeline::firewall::RuleSet::parse(
            "default = \"allow\"\n[[rule]]\nproto = \"udp\"\naction = \"rate-limit\"\npps = 10\nburst = 10\n",
            "t",
        )
        .unwrap();
        let b = Bed {
            ins: Inspector::new(4096, Timeouts::default()),
            pl: Pipeline::new(MalformedPolicy::Drop).with_rules(Arc::new(rules)),
        };
        let ctx = Context {
            workload: POD1,
            name: "w",
            direction: Direction::Egress,
            mirror: false,
            fast: None,
        };
        let ip = pkt(proto::UDP, ME1, 5000, SITE, 6000, &[]);
        let one = |packets| Size {
            packets,
            bytes: packets * 1500,
        };
        // A super-frame of 8 segments fits the burst of 10; the next one of 8
        // does not, though it is only the second frame.
        let t = 1_000_000_000;
        assert_eq!(b.ins.inspect(&b.pl, &ctx, &ip, one(8), t), Verdict::Forward);
        assert_eq!(
            b.ins.inspect(&b.pl, &ctx, &ip, one(8), t),
            Verdict::Drop(DropReason::RateLimited)
        );
        // More segments than the burst can never pass (another workload,
        // with its own limiter).
        let ctx2 = Context {
            workload: POD2,
            ..ctx
        };
        let ip2 = pkt(proto::UDP, ME2, 5000, SITE, 6000, &[]);
        assert_eq!(
            b.ins.inspect(&b.pl, &ctx2, &ip2, one(11), t),
            Verdict::Drop(DropReason::RateLimited)
        );
    }
}
