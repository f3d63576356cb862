//! The stateful firewall's rule set: an ordered list of rules, first match wins,
//! judged once per flow (and again when the flow's application becomes known).
//!
//! Rule sets are built from TOML (see [`RuleSet::parse`]) and swapped atomically
//! by the caller, so building may take a while but [`RuleSet::judge`] must stay
//! cheap at 10 000 rules: it uses a tuple-space index (see `index.rs`) instead of
//! scanning, and [`RuleSet::judge_linear`] is the plain scan it must agree with.

mod error;
mod index;
mod parse;
mod units;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use error::RulesError;
pub use units::{parse_rate, parse_size};

use crate::pipeline::app::Apps;
use crate::vocab::Direction;
use index::{FastMap, Index};
use std::fmt;
use std::net::IpAddr;

/// Labels of workloads by name, beyond those a rule file gives them (the
/// labels they were attached with).
pub type Labels = std::collections::BTreeMap<String, Vec<String>>;

/// What happens to a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Let it through.
    Allow,
    /// Drop it silently.
    Deny,
    /// Drop it and tell the sender (TCP RST / ICMP unreachable).
    Reject,
    /// Let it through, policing it to a rate (excess is dropped).
    RateLimit(Limit),
    /// Let it through, delaying it to a rate (excess waits, then is dropped).
    Shape(Shape),
}

/// A policing limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Bytes per second, with a bucket of `burst` bytes.
    Bytes {
        /// Bytes per second.
        rate: u64,
        /// Bucket size in bytes.
        burst: u64,
    },
    /// Packets per second, with a bucket of `burst` packets.
    Packets {
        /// Packets per second.
        pps: u32,
        /// Bucket size in packets.
        burst: u32,
    },
}

/// A shaping limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Bytes per second.
    pub rate: u64,
    /// Bucket size in bytes.
    pub burst: u64,
    /// Frames that would wait longer than this are dropped.
    pub max_delay_ms: u32,
}

impl Action {
    /// The action's name as written in rule files.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Reject => "reject",
            Action::RateLimit(_) => "rate-limit",
            Action::Shape(_) => "shape",
        }
    }

    /// Whether the flow goes through at all (everything but deny and reject).
    pub fn allows(&self) -> bool {
        !matches!(self, Action::Deny | Action::Reject)
    }
}

/// What the firewall knows about a flow when judging it.
#[derive(Clone, Copy, Debug)]
pub struct FlowFacts<'a> {
    /// The workload whose port the flow is on.
    pub workload: &'a str,
    /// Towards or from the workload.
    pub direction: Direction,
    /// Source address of the flow's first packet.
    pub src: IpAddr,
    /// Destination address of the flow's first packet.
    pub dst: IpAddr,
    /// IP protocol number.
    pub proto: u8,
    /// Source port; 0 when the protocol has none.
    pub src_port: u16,
    /// Destination port; 0 when the protocol has none.
    pub dst_port: u16,
    /// The flow's application, once known.
    pub app: Option<&'a str>,
    /// The application's category, once known.
    pub category: Option<&'a str>,
}

/// The outcome of judging a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// What to do with the flow.
    pub action: Action,
    /// 0-based position in the file of the rule that decided ([`RuleSet::rule_id`]
    /// names it); `None` when the workload's default did.
    pub rule: Option<u32>,
    /// 0-based position of the first `log` rule matched before the deciding one.
    pub logged_by: Option<u32>,
}

/// Per-workload settings from `[workload.NAME]`.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadPolicy {
    /// The workload's default action (`Allow` or `Deny`); `None`: the file's default.
    pub default: Option<Action>,
    /// Labels that `label = "..."` rules select the workload by.
    pub labels: Vec<String>,
    /// Shape the workload's traffic, each direction, to this many bytes/s.
    pub bandwidth: Option<u64>,
    /// Adjust `bandwidth` from measured use.
    pub auto_bandwidth: Option<AutoBandwidth>,
    /// Flows whose verdict is final may be forwarded by the kernel fast path.
    pub fast_path: bool,
}

/// How to move a workload's bandwidth limit with its measured use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AutoBandwidth {
    /// Never go below this many bytes/s.
    pub min: u64,
    /// Never go above this many bytes/s.
    pub max: u64,
    /// Raise after this many consecutive windows at >= 90% of the limit.
    pub raise_after: u32,
    /// Lower after this many consecutive windows below 20% of the limit.
    pub lower_after: u32,
    /// Multiply (raise) or divide (lower) the limit by this; always > 1.
    pub factor: f64,
}

/// Which workloads a rule applies to, as a bitset over workload ids so the
/// check is O(1) whatever the number of labels.
#[derive(Clone, Debug)]
pub(crate) enum Scope {
    Any,
    Only(Box<[u64]>),
}

impl Scope {
    fn contains(&self, wid: Option<u32>) -> bool {
        match self {
            Scope::Any => true,
            Scope::Only(bits) => wid.is_some_and(|w| {
                bits.get(w as usize / 64)
                    .is_some_and(|word| word >> (w % 64) & 1 == 1)
            }),
        }
    }

    /// The workload ids in the set, ascending.
    fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        let bits: &[u64] = match self {
            Scope::Any => &[],
            Scope::Only(b) => b,
        };
        bits.iter().enumerate().flat_map(|(i, &word)| {
            (0..64u32)
                .filter(move |b| word >> b & 1 == 1)
                .map(move |b| i as u32 * 64 + b)
        })
    }
}

/// An address prefix of either family; v4 addresses sit in the low 32 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    pub(crate) v6: bool,
    pub(crate) bits: u128,
    pub(crate) len: u8,
}

/// Family and bits of an address, in the layout [`Prefix`] uses.
#[inline]
pub(crate) fn addr_bits(a: IpAddr) -> (bool, u128) {
    match a {
        IpAddr::V4(a) => (false, u32::from(a) as u128),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

/// Mask keeping the first `len` bits of an address of the family.
pub(crate) fn prefix_mask(v6: bool, len: u8) -> u128 {
    match (v6, len) {
        (_, 0) => 0,
        (false, l) => (u32::MAX << (32 - l)) as u128,
        (true, l) => u128::MAX << (128 - l),
    }
}

impl std::str::FromStr for Prefix {
    type Err = String;
    /// "10.0.0.0/8", "2001:db8::/32" or a plain address.
    fn from_str(s: &str) -> Result<Prefix, String> {
        parse::prefix(s)
    }
}

impl Prefix {
    /// Whether `a` lies in the prefix.
    pub fn contains(&self, a: IpAddr) -> bool {
        let (v6, bits) = addr_bits(a);
        v6 == self.v6 && bits & prefix_mask(v6, self.len) == self.bits
    }
}

/// What a matching rule does: decide, or only record and go on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum RuleEffect {
    Decide(Action),
    Log,
}

/// One rule, resolved. Empty lists mean "any".
#[derive(Clone, Debug)]
pub(crate) struct Rule {
    pub id: String,
    pub scope: Scope,
    pub direction: Option<Direction>,
    pub src: Box<[Prefix]>,
    pub dst: Box<[Prefix]>,
    pub proto: Option<u8>,
    pub src_ports: Box<[(u16, u16)]>,
    pub dst_ports: Box<[(u16, u16)]>,
    pub apps: Box<[String]>,
    pub categories: Box<[String]>,
    pub effect: RuleEffect,
}

fn in_ports(ports: &[(u16, u16)], p: u16) -> bool {
    ports.is_empty() || ports.iter().any(|&(lo, hi)| lo <= p && p <= hi)
}

fn in_names(names: &[String], v: Option<&str>) -> bool {
    names.is_empty() || v.is_some_and(|v| names.iter().any(|n| n == v))
}

impl Rule {
    /// Does the rule match the flow? `wid` is the flow's workload id, if known.
    #[inline]
    pub(crate) fn matches(&self, f: &FlowFacts, wid: Option<u32>) -> bool {
        self.direction.is_none_or(|d| d == f.direction)
            && self.proto.is_none_or(|p| p == f.proto)
            && in_ports(&self.dst_ports, f.dst_port)
            && in_ports(&self.src_ports, f.src_port)
            && (self.dst.is_empty() || self.dst.iter().any(|p| p.contains(f.dst)))
            && (self.src.is_empty() || self.src.iter().any(|p| p.contains(f.src)))
            && self.scope.contains(wid)
            && in_names(&self.apps, f.app)
            && in_names(&self.categories, f.category)
    }

    fn uses_apps(&self) -> bool {
        !self.apps.is_empty() || !self.categories.is_empty()
    }
}

/// An immutable, indexed rule set. Build it with [`RuleSet::parse`], share it
/// behind an `Arc`, judge flows with [`RuleSet::judge`].
pub struct RuleSet {
    rules: Vec<Rule>,
    default: Action,
    /// Workload name -> id; ids index `policies` and the rules' scope bitsets.
    ids: FastMap<Box<str>, u32>,
    /// Names by id: first those with a `[workload.X]` table (sorted), then those
    /// only rules mention.
    names: Vec<String>,
    policies: Vec<Option<WorkloadPolicy>>,
    /// Index over rules that decide.
    decide: Index,
    /// Index over `log` rules.
    log: Index,
    /// Node labels a cluster node must all carry to apply the set (empty: every node).
    nodes: Vec<String>,
}

impl fmt::Debug for RuleSet {
    // The rules themselves would flood a log line; their count and layout say more.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.rules.len())
            .field("default", &self.default.name())
            .field("workloads", &self.policies.iter().flatten().count())
            .field("decide", &self.decide)
            .field("log", &self.log)
            .finish()
    }
}

impl RuleSet {
    /// Parses and checks a rule file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<RuleSet, RulesError> {
        RuleSet::parse_bound(text, origin, None, &Labels::new())
    }

    /// As [`RuleSet::parse`], also refusing application and category names
    /// `apps` does not know (with the closest known one as a suggestion): such
    /// a rule would silently never match.
    pub fn parse_with(text: &str, origin: &str, apps: &Apps) -> Result<RuleSet, RulesError> {
        RuleSet::parse_bound(text, origin, Some(apps), &Labels::new())
    }

    /// As [`RuleSet::parse_with`] (names checked when `apps` is given), with
    /// the labels of the attached workloads bound into `label = "..."` rules.
    pub fn parse_bound(
        text: &str,
        origin: &str,
        apps: Option<&Apps>,
        attached: &Labels,
    ) -> Result<RuleSet, RulesError> {
        let p = parse::parse(text, origin, apps, attached)?;
        let mut set = RuleSet::build(p.rules, p.default, p.names, p.policies);
        set.nodes = p.nodes;
        Ok(set)
    }

    /// The node labels the set is for (top-level `nodes`; empty: every node).
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// Whether a node carrying `labels` applies the set.
    pub fn selects(&self, labels: &[String]) -> bool {
        self.nodes.iter().all(|n| labels.contains(n))
    }

    /// No rules, default allow.
    pub fn empty() -> RuleSet {
        RuleSet::build(Vec::new(), Action::Allow, Vec::new(), Vec::new())
    }

    fn build(
        rules: Vec<Rule>,
        default: Action,
        names: Vec<String>,
        policies: Vec<Option<WorkloadPolicy>>,
    ) -> RuleSet {
        let ids = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str().into(), i as u32))
            .collect();
        let decide = Index::build(&rules, |r| r.effect != RuleEffect::Log);
        let log = Index::build(&rules, |r| r.effect == RuleEffect::Log);
        RuleSet {
            rules,
            default,
            ids,
            names,
            policies,
            decide,
            log,
            nodes: Vec::new(),
        }
    }

    fn default_for(&self, wid: Option<u32>) -> Action {
        wid.and_then(|w| self.policies[w as usize].as_ref())
            .and_then(|p| p.default)
            .unwrap_or(self.default)
    }

    fn decision(&self, wid: Option<u32>, rule: Option<u32>, logged_by: Option<u32>) -> Decision {
        let action = match rule.map(|i| self.rules[i as usize].effect) {
            Some(RuleEffect::Decide(a)) => a,
            _ => self.default_for(wid),
        };
        Decision {
            action,
            rule,
            logged_by,
        }
    }

    /// Judges a flow: the first matching rule decides; `log` rules before it are
    /// recorded; no match means the workload's default. Cost grows with the
    /// number of distinct rule shapes and candidates, not with the rule count.
    pub fn judge(&self, f: &FlowFacts) -> Decision {
        let wid = self.ids.get(f.workload).copied();
        let rule = self.decide.first_match(&self.rules, f, wid, u32::MAX);
        let logged_by = self
            .log
            .first_match(&self.rules, f, wid, rule.unwrap_or(u32::MAX));
        self.decision(wid, rule, logged_by)
    }

    /// Judges a flow by scanning every rule in order. Same answer as
    /// [`RuleSet::judge`], at linear cost; the reference it is tested against.
    pub fn judge_linear(&self, f: &FlowFacts) -> Decision {
        let wid = self.ids.get(f.workload).copied();
        let mut logged_by = None;
        for (i, r) in self.rules.iter().enumerate() {
            if r.matches(f, wid) {
                match r.effect {
                    RuleEffect::Log => {
                        logged_by.get_or_insert(i as u32);
                    }
                    RuleEffect::Decide(_) => return self.decision(wid, Some(i as u32), logged_by),
                }
            }
        }
        self.decision(wid, None, logged_by)
    }

    /// The id of rule `idx`, for logs; `"?"` for an index out of range.
    pub fn rule_id(&self, idx: u32) -> &str {
        self.rules.get(idx as usize).map_or("?", |r| r.id.as_str())
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The file-wide default action (`Allow` or `Deny`).
    pub fn default_action(&self) -> Action {
        self.default
    }

    /// The `[workload.NAME]` settings, if the file has them.
    pub fn workload(&self, name: &str) -> Option<&WorkloadPolicy> {
        let wid = *self.ids.get(name)?;
        self.policies[wid as usize].as_ref()
    }

    /// Names of the workloads with a `[workload.NAME]` table, sorted.
    pub fn workload_names(&self) -> impl Iterator<Item = &str> {
        self.names
            .iter()
            .zip(&self.policies)
            .filter(|(_, p)| p.is_some())
            .map(|(n, _)| n.as_str())
    }

    /// Whether any rule matches on app or category, i.e. whether flows must be
    /// judged again once their application is known.
    pub fn uses_apps(&self) -> bool {
        self.rules.iter().any(Rule::uses_apps)
    }

    /// Deterministic rule set for benches and tests: `n` rules of mixed shapes,
    /// none matching any flow whose source and destination are both in
    /// 10.99.0.0/16. Eight workloads `pod0`..`pod7`, the even ones labelled
    /// `web`. Rule `i` is, by `i % 20`:
    ///
    /// * 0..=9: from anywhere, TCP to `10.{1 + (i >> 16) % 97}.{(i >> 8) & 255}.{i & 255}`
    ///   port `1000 + i % 1000`; even `i` deny, odd `i` allow;
    /// * 10..=13: UDP from `172.{16 + (i >> 8) % 16}.{i & 255}.0/24`, rate-limited;
    /// * 14, 15: ingress TCP to `192.168.{i & 255}.0/24` ports `[443, "8000-8100"]`
    ///   on workload `pod{i % 8}`, reject;
    /// * 16, 17: from `2001:db8:{i & 0xffff:x}::/48` on label `web`, deny;
    /// * 18: `log` TCP to `100.64.{i & 255}.0/24` port 22;
    /// * 19: app `app{i % 50}` to `203.0.{i & 255}.0/24`, shaped.
    pub fn synthetic(n: usize) -> RuleSet {
        use std::fmt::Write;
        let mut t = String::from("default = \"allow\"\n");
        for w in 0..8 {
            let labels = if w % 2 == 0 { "[\"web\"]" } else { "[]" };
            let _ = writeln!(t, "[workload.pod{w}]\nlabels = {labels}");
        }
        for i in 0..n {
            t.push_str("[[rule]]\n");
            let _ = match i % 20 {
                0..=9 => writeln!(
                    t,
                    "dst = \"10.{}.{}.{}\"\nproto = \"tcp\"\ndst_ports = {}\naction = \"{}\"",
                    1 + (i >> 16) % 97,
                    (i >> 8) & 255,
                    i & 255,
                    1000 + i % 1000,
                    if i % 2 == 0 { "deny" } else { "allow" }
                ),
                10..=13 => writeln!(
                    t,
                    "src = \"172.{}.{}.0/24\"\nproto = \"udp\"\naction = \"rate-limit\"\nrate = \"10mbit\"",
                    16 + (i >> 8) % 16,
                    i & 255
                ),
                14 | 15 => writeln!(
                    t,
                    "workload = \"pod{}\"\ndirection = \"ingress\"\ndst = \"192.168.{}.0/24\"\nproto = \"tcp\"\ndst_ports = [443, \"8000-8100\"]\naction = \"reject\"",
                    i % 8,
                    i & 255
                ),
                16 | 17 => writeln!(
                    t,
                    "label = \"web\"\nsrc = \"2001:db8:{:x}::/48\"\naction = \"deny\"",
                    i & 0xffff
                ),
                18 => writeln!(
                    t,
                    "dst = \"100.64.{}.0/24\"\nproto = \"tcp\"\ndst_ports = 22\naction = \"log\"",
                    i & 255
                ),
                _ => writeln!(
                    t,
                    "dst = \"203.0.{}.0/24\"\napp = \"app{}\"\naction = \"shape\"\nrate = \"5mbit\"",
                    i & 255,
                    i % 50
                ),
            };
        }
        RuleSet::parse(&t, "synthetic").expect("synthetic rules are valid")
    }
}
