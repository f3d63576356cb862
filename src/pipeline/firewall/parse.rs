//! From TOML text to resolved rules, refusing anything doubtful with the file,
//! line and key named.

use super::{
    Action, AutoBandwidth, Labels, Limit, Prefix, Rule, RulesError, Scope, Shape, Verdict,
    WorkloadPolicy, parse_rate, parse_size, prefix_mask,
};
use crate::pipeline::app::Apps;
use crate::vocab::Direction;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::ops::Range;
use toml::{Spanned, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    default: Option<Spanned<String>>,
    nodes: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    workload: BTreeMap<Spanned<String>, RawWorkload>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    default: Option<Spanned<String>>,
    labels: Option<Spanned<Vec<String>>>,
    bandwidth: Option<Spanned<Value>>,
    auto_bandwidth: Option<Spanned<RawAuto>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuto {
    min: Spanned<Value>,
    max: Spanned<Value>,
    raise_after: Option<Spanned<i64>>,
    lower_after: Option<Spanned<i64>>,
    factor: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Option<Spanned<String>>,
    workload: Option<Spanned<String>>,
    label: Option<Spanned<String>>,
    direction: Option<Spanned<String>>,
    src: Option<Spanned<Value>>,
    dst: Option<Spanned<Value>>,
    proto: Option<Spanned<Value>>,
    src_ports: Option<Spanned<Value>>,
    dst_ports: Option<Spanned<Value>>,
    app: Option<Spanned<Value>>,
    category: Option<Spanned<Value>>,
    action: Spanned<String>,
    rate: Option<Spanned<Value>>,
    pps: Option<Spanned<i64>>,
    burst: Option<Spanned<Value>>,
    max_delay_ms: Option<Spanned<i64>>,
}

/// What [`parse`] hands to `RuleSet::build`.
pub(crate) struct Parsed {
    pub rules: Vec<Rule>,
    pub default: Action,
    pub names: Vec<String>,
    pub policies: Vec<Option<WorkloadPolicy>>,
    pub nodes: Vec<String>,
}

/// The file being parsed, for turning spans into lines.
struct Ctx<'a> {
    text: &'a str,
    origin: &'a str,
    /// The application catalogue names are checked against, when given.
    apps: Option<&'a Apps>,
}

/// The closest of `known` to `name`, if it is close enough to be a typo.
fn suggestion<'k>(name: &str, known: impl Iterator<Item = &'k str>) -> Option<&'k str> {
    known
        .map(|k| (strsim::levenshtein(name, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Refuses names the catalogue does not know: such a rule would never match.
fn known_names<'k>(
    cx: &Ctx,
    v: &Spanned<Value>,
    key: &str,
    what: &str,
    names: &[String],
    known: impl Iterator<Item = &'k str> + Clone,
) -> Result<(), RulesError> {
    for n in names {
        if known.clone().any(|k| k == n) {
            continue;
        }
        let hint = match suggestion(n, known.clone()) {
            Some(s) => format!("; did you mean {s:?}?"),
            None => String::new(),
        };
        return Err(cx.invalid(
            v.span(),
            key,
            format!("unknown {what} {n:?}: the rule would never match{hint}"),
        ));
    }
    Ok(())
}

impl Ctx<'_> {
    fn line(&self, span: Range<usize>) -> usize {
        let at = span.start.min(self.text.len());
        self.text.as_bytes()[..at]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn invalid(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        msg: impl Into<String>,
    ) -> RulesError {
        RulesError::Invalid {
            origin: self.origin.to_string(),
            line: self.line(span),
            key: key.into(),
            msg: msg.into(),
        }
    }

    fn conflict(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        msg: impl Into<String>,
    ) -> RulesError {
        RulesError::Conflict {
            origin: self.origin.to_string(),
            line: self.line(span),
            key: key.into(),
            msg: msg.into(),
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    v.type_str()
}

/// A string or a non-empty list of strings.
fn strings(cx: &Ctx, v: &Spanned<Value>, key: &str) -> Result<Vec<String>, RulesError> {
    let bad = |found: &Value| {
        cx.invalid(
            v.span(),
            key,
            format!(
                "expected a string or a list of strings, found {}",
                type_name(found)
            ),
        )
    };
    let out = match v.get_ref() {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|e| e.as_str().map(str::to_string).ok_or_else(|| bad(e)))
            .collect::<Result<_, _>>()?,
        other => return Err(bad(other)),
    };
    if out.is_empty() {
        return Err(cx.invalid(
            v.span(),
            key,
            "an empty list matches nothing; leave the key out to match anything",
        ));
    }
    if out.iter().any(|s| s.is_empty()) {
        return Err(cx.invalid(v.span(), key, "empty string"));
    }
    Ok(out)
}

/// "10.0.0.0/8", "2001:db8::/32" or a plain address.
pub(super) fn prefix(s: &str) -> Result<Prefix, String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an address or prefix"))?;
    let (v6, bits) = super::addr_bits(addr);
    let max = if v6 { 128 } else { 32 };
    let len = match len {
        None => max,
        Some(l) => l
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|&l| l <= max)
            .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
    };
    let masked = bits & prefix_mask(v6, len);
    if masked != bits {
        let net = match addr {
            IpAddr::V4(_) => IpAddr::from((masked as u32).to_be_bytes()),
            IpAddr::V6(_) => IpAddr::from(masked.to_be_bytes()),
        };
        return Err(format!(
            "{s:?} has host bits set (did you mean \"{net}/{len}\"?)"
        ));
    }
    Ok(Prefix { v6, bits, len })
}

fn prefixes(cx: &Ctx, v: &Spanned<Value>, key: &str) -> Result<Box<[Prefix]>, RulesError> {
    strings(cx, v, key)?
        .iter()
        .map(|s| prefix(s).map_err(|m| cx.invalid(v.span(), key, m)))
        .collect()
}

fn proto(cx: &Ctx, v: &Spanned<Value>, key: &str) -> Result<u8, RulesError> {
    let bad = || {
        cx.invalid(
            v.span(),
            key,
            format!(
                "{} is not \"tcp\", \"udp\", \"icmp\", \"icmpv6\" or a number 0-255",
                v.get_ref()
            ),
        )
    };
    match v.get_ref() {
        Value::Integer(n) => u8::try_from(*n).map_err(|_| bad()),
        Value::String(s) => match s.as_str() {
            "tcp" => Ok(6),
            "udp" => Ok(17),
            "icmp" => Ok(1),
            "icmpv6" => Ok(58),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// One port entry: an integer, "N" or "N-M".
fn port_range(v: &Value) -> Result<(u16, u16), String> {
    let num = |s: &str| s.trim().parse::<u16>().ok();
    match v {
        Value::Integer(n) => u16::try_from(*n)
            .map(|p| (p, p))
            .map_err(|_| format!("{n} is not a port (0-65535)")),
        Value::String(s) => {
            let (lo, hi) = match s.split_once('-') {
                Some((a, b)) => (num(a), num(b)),
                None => (num(s), num(s)),
            };
            match (lo, hi) {
                (Some(lo), Some(hi)) if lo <= hi => Ok((lo, hi)),
                (Some(_), Some(_)) => Err(format!("{s:?} is an empty range")),
                _ => Err(format!(
                    "{s:?} is not a port or port range (\"N\" or \"N-M\", 0-65535)"
                )),
            }
        }
        other => Err(format!(
            "expected a port, a \"N-M\" range or a list of those, found {}",
            type_name(other)
        )),
    }
}

fn ports(cx: &Ctx, v: &Spanned<Value>, key: &str) -> Result<Box<[(u16, u16)]>, RulesError> {
    let items: Vec<&Value> = match v.get_ref() {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    if items.is_empty() {
        return Err(cx.invalid(
            v.span(),
            key,
            "an empty list matches nothing; leave the key out to match any port",
        ));
    }
    items
        .into_iter()
        .map(|e| port_range(e).map_err(|m| cx.invalid(v.span(), key, m)))
        .collect()
}

/// A rate: a string for [`parse_rate`] or a plain number of bytes/s.
fn rate(cx: &Ctx, v: &Spanned<Value>, key: &str) -> Result<u64, RulesError> {
    match v.get_ref() {
        Value::Integer(n) if *n > 0 => Ok(*n as u64),
        Value::Integer(n) => Err(cx.invalid(v.span(), key, format!("rate {n} must be positive"))),
        Value::String(s) => parse_rate(s).map_err(|m| cx.invalid(v.span(), key, m)),
        other => Err(cx.invalid(
            v.span(),
            key,
            format!(
                "expected a rate like \"10mbit\" or a number of bytes/s, found {}",
                type_name(other)
            ),
        )),
    }
}

/// A size: a string for [`parse_size`] or a plain number of bytes.
fn size(cx: &Ctx, v: &Spanned<Value>, key: &str) -> Result<u64, RulesError> {
    match v.get_ref() {
        Value::Integer(n) if *n > 0 => Ok(*n as u64),
        Value::Integer(n) => Err(cx.invalid(v.span(), key, format!("size {n} must be positive"))),
        Value::String(s) => parse_size(s).map_err(|m| cx.invalid(v.span(), key, m)),
        other => Err(cx.invalid(
            v.span(),
            key,
            format!(
                "expected a size like \"64KB\" or a number of bytes, found {}",
                type_name(other)
            ),
        )),
    }
}

/// An integer within `range`.
fn int_in<T: TryFrom<i64>>(
    cx: &Ctx,
    v: &Spanned<i64>,
    key: &str,
    range: std::ops::RangeInclusive<i64>,
) -> Result<T, RulesError> {
    let n = *v.get_ref();
    if !range.contains(&n) {
        return Err(cx.invalid(
            v.span(),
            key,
            format!("{n} is out of range {}..={}", range.start(), range.end()),
        ));
    }
    T::try_from(n).map_err(|_| cx.invalid(v.span(), key, format!("{n} is out of range")))
}

fn allow_or_deny(cx: &Ctx, v: &Spanned<String>, key: &str) -> Result<Action, RulesError> {
    match v.get_ref().as_str() {
        "allow" => Ok(Action::Allow),
        "deny" => Ok(Action::Deny),
        other => Err(cx.invalid(
            v.span(),
            key,
            format!("{other:?} is not \"allow\" or \"deny\""),
        )),
    }
}

/// Turns a toml error into one naming file, line and column.
fn syntax(cx: &Ctx, e: toml::de::Error) -> RulesError {
    let (line, column) = match e.span() {
        Some(span) => {
            let mut at = span.start.min(cx.text.len());
            while !cx.text.is_char_boundary(at) {
                at -= 1;
            }
            let line_start = cx.text[..at].rfind('\n').map_or(0, |i| i + 1);
            (cx.line(span), cx.text[line_start..at].chars().count() + 1)
        }
        None => (0, 0),
    };
    RulesError::Syntax {
        origin: cx.origin.to_string(),
        line,
        column,
        msg: e.message().trim_end().to_string(),
    }
}

fn workload_policy(cx: &Ctx, name: &str, w: &RawWorkload) -> Result<WorkloadPolicy, RulesError> {
    let k = |key: &str| format!("workload.{name}.{key}");
    let default = w
        .default
        .as_ref()
        .map(|d| allow_or_deny(cx, d, &k("default")))
        .transpose()?;
    let labels = match &w.labels {
        None => Vec::new(),
        Some(l) => {
            if l.get_ref().iter().any(|s| s.is_empty()) {
                return Err(cx.invalid(l.span(), k("labels"), "empty label"));
            }
            l.get_ref().clone()
        }
    };
    let bandwidth = w
        .bandwidth
        .as_ref()
        .map(|b| rate(cx, b, &k("bandwidth")))
        .transpose()?;
    let auto_bandwidth = match &w.auto_bandwidth {
        None => None,
        Some(a) => {
            let ak = |key: &str| format!("workload.{name}.auto_bandwidth.{key}");
            let r = a.get_ref();
            let min = rate(cx, &r.min, &ak("min"))?;
            let max = rate(cx, &r.max, &ak("max"))?;
            if min > max {
                return Err(cx.invalid(r.max.span(), ak("max"), "is below min"));
            }
            let Some(bw) = bandwidth else {
                return Err(cx.conflict(
                    a.span(),
                    k("auto_bandwidth"),
                    "needs bandwidth (the starting limit)",
                ));
            };
            if !(min..=max).contains(&bw) {
                return Err(cx.conflict(
                    w.bandwidth.as_ref().map_or(a.span(), |b| b.span()),
                    k("bandwidth"),
                    "must lie between auto_bandwidth.min and auto_bandwidth.max",
                ));
            }
            let count = |v: &Option<Spanned<i64>>, key: &str, dflt: u32| {
                v.as_ref()
                    .map_or(Ok(dflt), |v| int_in(cx, v, &ak(key), 1..=1_000_000))
            };
            let factor = match &r.factor {
                None => 2.0,
                Some(f) => {
                    let x = *f.get_ref();
                    if !(x.is_finite() && x > 1.0 && x <= 100.0) {
                        return Err(cx.invalid(
                            f.span(),
                            ak("factor"),
                            format!("{x} must be above 1 and at most 100"),
                        ));
                    }
                    x
                }
            };
            Some(AutoBandwidth {
                min,
                max,
                raise_after: count(&r.raise_after, "raise_after", 3)?,
                lower_after: count(&r.lower_after, "lower_after", 5)?,
                factor,
            })
        }
    };
    Ok(WorkloadPolicy {
        default,
        labels,
        bandwidth,
        auto_bandwidth,
    })
}

/// The rule's verdict, with the rate keys checked against the action.
fn verdict(cx: &Ctx, r: &RawRule, key: &str) -> Result<Verdict, RulesError> {
    let k = |name: &str| format!("{key}.{name}");
    let action = r.action.get_ref().as_str();
    let refuse = |name: &str, span: Range<usize>, why: &str| {
        Err(cx.conflict(span, k(name), format!("{why} (action is {action:?})")))
    };
    // Keys present, with their spans, to point at the one that does not fit.
    let rate_span = r.rate.as_ref().map(|v| v.span());
    let pps_span = r.pps.as_ref().map(|v| v.span());
    let burst_span = r.burst.as_ref().map(|v| v.span());
    let delay_span = r.max_delay_ms.as_ref().map(|v| v.span());
    match action {
        "allow" | "deny" | "reject" | "log" => {
            for (name, span) in [
                ("rate", rate_span),
                ("pps", pps_span),
                ("burst", burst_span),
                ("max_delay_ms", delay_span),
            ] {
                if let Some(span) = span {
                    return refuse(name, span, "only rate-limit and shape rules take this");
                }
            }
            Ok(match action {
                "allow" => Verdict::Decide(Action::Allow),
                "deny" => Verdict::Decide(Action::Deny),
                "reject" => Verdict::Decide(Action::Reject),
                _ => Verdict::Log,
            })
        }
        "rate-limit" => {
            if let Some(span) = delay_span {
                return refuse("max_delay_ms", span, "only shape rules take this");
            }
            match (&r.rate, &r.pps) {
                (Some(_), Some(p)) => refuse("pps", p.span(), "give rate or pps, not both"),
                (None, None) => Err(cx.conflict(
                    r.action.span(),
                    k("action"),
                    "rate-limit needs rate (bytes/s) or pps (packets/s)",
                )),
                (Some(rv), None) => {
                    let rate = rate(cx, rv, &k("rate"))?;
                    let burst = match &r.burst {
                        Some(b) => size(cx, b, &k("burst"))?,
                        None => default_burst(rate),
                    };
                    Ok(Verdict::Decide(Action::RateLimit(Limit::Bytes {
                        rate,
                        burst,
                    })))
                }
                (None, Some(p)) => {
                    let pps: u32 = int_in(cx, p, &k("pps"), 1..=u32::MAX as i64)?;
                    let burst = match &r.burst {
                        Some(b) => match b.get_ref() {
                            Value::Integer(n) if *n > 0 && *n <= u32::MAX as i64 => *n as u32,
                            _ => {
                                return Err(cx.invalid(
                                    b.span(),
                                    k("burst"),
                                    "with pps, burst is a number of packets (1-4294967295)",
                                ));
                            }
                        },
                        // 10 ms worth, but room for a small burst at low rates.
                        None => (pps / 100).max(pps.min(16)),
                    };
                    Ok(Verdict::Decide(Action::RateLimit(Limit::Packets {
                        pps,
                        burst,
                    })))
                }
            }
        }
        "shape" => {
            if let Some(span) = pps_span {
                return refuse("pps", span, "shape takes rate, not pps");
            }
            let Some(rv) = &r.rate else {
                return Err(cx.conflict(r.action.span(), k("action"), "shape needs rate"));
            };
            let rate = rate(cx, rv, &k("rate"))?;
            let burst = match &r.burst {
                Some(b) => size(cx, b, &k("burst"))?,
                None => default_burst(rate),
            };
            let max_delay_ms = match &r.max_delay_ms {
                Some(d) => int_in(cx, d, &k("max_delay_ms"), 1..=60_000)?,
                None => 100,
            };
            Ok(Verdict::Decide(Action::Shape(Shape {
                rate,
                burst,
                max_delay_ms,
            })))
        }
        other => Err(cx.invalid(
            r.action.span(),
            k("action"),
            format!("{other:?} is not allow, deny, reject, rate-limit, shape or log"),
        )),
    }
}

/// 10 ms worth of bytes, at least 16 KiB so that a few full frames pass together.
fn default_burst(rate: u64) -> u64 {
    (rate / 100).max(16 * 1024)
}

/// Parses a whole rule file.
///
/// `attached` gives labels of workloads beyond those the file's
/// `[workload.NAME]` tables give (the labels they were attached with), so
/// `label = "..."` rules select them too.
pub(crate) fn parse(
    text: &str,
    origin: &str,
    apps: Option<&Apps>,
    attached: &Labels,
) -> Result<Parsed, RulesError> {
    let cx = Ctx { text, origin, apps };
    let raw: RawFile = toml::from_str(text).map_err(|e| syntax(&cx, e))?;
    let nodes = match &raw.nodes {
        Some(n) => {
            if n.get_ref().iter().any(String::is_empty) {
                return Err(cx.invalid(n.span(), "nodes", "empty node label"));
            }
            n.get_ref().clone()
        }
        None => Vec::new(),
    };
    let default = raw
        .default
        .as_ref()
        .map(|d| allow_or_deny(&cx, d, "default"))
        .transpose()?
        .unwrap_or(Action::Allow);

    let mut names = Vec::new();
    let mut policies = Vec::new();
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut by_label: HashMap<&str, Vec<u32>> = HashMap::new();
    for (name, w) in &raw.workload {
        if name.get_ref().is_empty() {
            return Err(cx.invalid(name.span(), "workload", "empty workload name"));
        }
        let policy = workload_policy(&cx, name.get_ref(), w)?;
        let wid = names.len() as u32;
        ids.insert(name.get_ref().clone(), wid);
        names.push(name.get_ref().clone());
        policies.push(Some(policy));
        for l in w.labels.iter().flat_map(|l| l.get_ref()) {
            let v = by_label.entry(l.as_str()).or_default();
            // A label listed twice by one workload counts once.
            if v.last() != Some(&wid) {
                v.push(wid);
            }
        }
    }

    for (name, labels) in attached {
        let wid = *ids.entry(name.clone()).or_insert_with(|| {
            names.push(name.clone());
            policies.push(None);
            names.len() as u32 - 1
        });
        for l in labels {
            let v = by_label.entry(l.as_str()).or_default();
            if !v.contains(&wid) {
                v.push(wid);
            }
        }
    }

    // Rules first name their workloads (ids); the bitsets are made once all
    // names are known.
    let mut scopes: Vec<Option<Vec<u32>>> = Vec::new();
    let mut rules = Vec::new();
    let mut seen_ids: HashMap<String, usize> = HashMap::new();
    for (i, sr) in raw.rule.iter().enumerate() {
        let n = i + 1;
        let key = format!("rule[{n}]");
        let k = |name: &str| format!("{key}.{name}");
        let r = sr.get_ref();

        let id = match &r.id {
            Some(id) if id.get_ref().is_empty() => {
                return Err(cx.invalid(id.span(), k("id"), "empty id"));
            }
            Some(id) => id.get_ref().clone(),
            None => format!("rule-{n}"),
        };
        if let Some(&first) = seen_ids.get(&id) {
            return Err(RulesError::DuplicateId {
                origin: origin.to_string(),
                line: cx.line(r.id.as_ref().map_or(sr.span(), |s| s.span())),
                key: k("id"),
                id,
                first,
            });
        }
        seen_ids.insert(id.clone(), n);

        let scope = match (&r.workload, &r.label) {
            (Some(_), Some(l)) => {
                return Err(cx.conflict(l.span(), k("label"), "give workload or label, not both"));
            }
            (Some(w), None) => {
                let name = w.get_ref();
                if name.is_empty() {
                    return Err(cx.invalid(w.span(), k("workload"), "empty workload name"));
                }
                // Workloads come and go: a name without a table is fine.
                let wid = *ids.entry(name.clone()).or_insert_with(|| {
                    names.push(name.clone());
                    policies.push(None);
                    names.len() as u32 - 1
                });
                Some(vec![wid])
            }
            (None, Some(l)) => {
                if l.get_ref().is_empty() {
                    return Err(cx.invalid(l.span(), k("label"), "empty label"));
                }
                Some(
                    by_label
                        .get(l.get_ref().as_str())
                        .cloned()
                        .unwrap_or_default(),
                )
            }
            (None, None) => None,
        };

        let direction = match &r.direction {
            None => None,
            Some(d) => match d.get_ref().as_str() {
                "ingress" => Some(Direction::Ingress),
                "egress" => Some(Direction::Egress),
                "any" => None,
                other => {
                    return Err(cx.invalid(
                        d.span(),
                        k("direction"),
                        format!("{other:?} is not \"ingress\", \"egress\" or \"any\""),
                    ));
                }
            },
        };

        let src = match &r.src {
            Some(v) => prefixes(&cx, v, &k("src"))?,
            None => Box::default(),
        };
        let dst = match &r.dst {
            Some(v) => prefixes(&cx, v, &k("dst"))?,
            None => Box::default(),
        };
        if !src.is_empty()
            && !dst.is_empty()
            && !src.iter().any(|s| dst.iter().any(|d| d.v6 == s.v6))
            && let Some(d) = &r.dst
        {
            return Err(cx.conflict(
                d.span(),
                k("dst"),
                "src and dst have no address family in common, so the rule can never match",
            ));
        }

        let proto = r
            .proto
            .as_ref()
            .map(|v| proto(&cx, v, &k("proto")))
            .transpose()?;
        let mut port_lists = [Box::default(), Box::default()];
        for (slot, (name, v)) in port_lists
            .iter_mut()
            .zip([("src_ports", &r.src_ports), ("dst_ports", &r.dst_ports)])
        {
            if let Some(v) = v {
                let list = ports(&cx, v, &k(name))?;
                if !matches!(proto, Some(6 | 17)) {
                    return Err(cx.conflict(
                        v.span(),
                        k(name),
                        "ports need proto = \"tcp\" or \"udp\"",
                    ));
                }
                *slot = list;
            }
        }
        let [src_ports, dst_ports] = port_lists;

        let apps = match &r.app {
            Some(v) => {
                let names = strings(&cx, v, &k("app"))?;
                if let Some(cat) = cx.apps {
                    known_names(&cx, v, &k("app"), "application", &names, cat.names())?;
                }
                names.into_boxed_slice()
            }
            None => Box::default(),
        };
        let categories = match &r.category {
            Some(v) => {
                let names = strings(&cx, v, &k("category"))?;
                if let Some(cat) = cx.apps {
                    let known = cat.categories().iter().map(String::as_str);
                    known_names(&cx, v, &k("category"), "category", &names, known)?;
                }
                names.into_boxed_slice()
            }
            None => Box::default(),
        };
        let verdict = verdict(&cx, r, &key)?;

        scopes.push(scope);
        rules.push(Rule {
            id,
            scope: Scope::Any,
            direction,
            src,
            dst,
            proto,
            src_ports,
            dst_ports,
            apps,
            categories,
            verdict,
        });
    }

    let words = names.len().div_ceil(64);
    for (rule, scope) in rules.iter_mut().zip(scopes) {
        if let Some(wids) = scope {
            let mut bits = vec![0u64; words];
            for w in wids {
                bits[w as usize / 64] |= 1 << (w % 64);
            }
            rule.scope = Scope::Only(bits.into_boxed_slice());
        }
    }

    Ok(Parsed {
        rules,
        default,
        names,
        policies,
        nodes,
    })
}
