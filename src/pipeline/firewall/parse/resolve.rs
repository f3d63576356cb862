//! From a rule file as read to the rules the set is built from: workloads and
//! labels bound to ids, each rule's values checked and its action with its
//! limits, and every combination of keys that cannot work refused, with the
//! file, line and key named.

use super::schema::{RawFile, RawRule, RawWorkload};
use super::values::{
    allow_or_deny, int_in, known_names, ports, prefixes, proto, rate, size, strings,
};
use super::{Ctx, Parsed};
use crate::pipeline::firewall::{
    Action, AutoBandwidth, Labels, Limit, Rule, RuleEffect, RulesError, Scope, Shape,
    WorkloadPolicy,
};
use crate::vocab::Direction;
use std::collections::HashMap;
use std::ops::Range;
use toml::{Spanned, Value};

/// The rules, workload policies and node labels of `raw`; `attached` gives
/// labels of workloads beyond those its `[workload.NAME]` tables give.
pub(super) fn file(cx: &Ctx, raw: &RawFile, attached: &Labels) -> Result<Parsed, RulesError> {
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
        .map(|d| allow_or_deny(cx, d, "default"))
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
        let policy = workload_policy(cx, name.get_ref(), w)?;
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
                origin: cx.origin.to_string(),
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
            Some(v) => prefixes(cx, v, &k("src"))?,
            None => Box::default(),
        };
        let dst = match &r.dst {
            Some(v) => prefixes(cx, v, &k("dst"))?,
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
            .map(|v| proto(cx, v, &k("proto")))
            .transpose()?;
        let mut port_lists = [Box::default(), Box::default()];
        for (slot, (name, v)) in port_lists
            .iter_mut()
            .zip([("src_ports", &r.src_ports), ("dst_ports", &r.dst_ports)])
        {
            if let Some(v) = v {
                let list = ports(cx, v, &k(name))?;
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
                let names = strings(cx, v, &k("app"))?;
                if let Some(cat) = cx.apps {
                    known_names(cx, v, &k("app"), "application", &names, cat.names())?;
                }
                names.into_boxed_slice()
            }
            None => Box::default(),
        };
        let categories = match &r.category {
            Some(v) => {
                let names = strings(cx, v, &k("category"))?;
                if let Some(cat) = cx.apps {
                    let known = cat.categories().iter().map(String::as_str);
                    known_names(cx, v, &k("category"), "category", &names, known)?;
                }
                names.into_boxed_slice()
            }
            None => Box::default(),
        };
        let effect = effect(cx, r, &key)?;

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
            effect,
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
        fast_path: w.fast_path.unwrap_or(true),
    })
}

/// The rule's effect, with the rate keys checked against the action.
fn effect(cx: &Ctx, r: &RawRule, key: &str) -> Result<RuleEffect, RulesError> {
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
                "allow" => RuleEffect::Decide(Action::Allow),
                "deny" => RuleEffect::Decide(Action::Deny),
                "reject" => RuleEffect::Decide(Action::Reject),
                _ => RuleEffect::Log,
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
                    Ok(RuleEffect::Decide(Action::RateLimit(Limit::Bytes {
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
                    Ok(RuleEffect::Decide(Action::RateLimit(Limit::Packets {
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
            Ok(RuleEffect::Decide(Action::Shape(Shape {
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
