//! The values of a rule file, each checked on its own: names, addresses and
//! prefixes, protocols, ports and port ranges, rates, sizes, bounded integers,
//! allow or deny. Each error names the file, line and key of the value.

use super::Ctx;
use crate::pipeline::firewall::{
    Action, Prefix, RulesError, addr_bits, parse_rate, parse_size, prefix_mask,
};
use std::net::IpAddr;
use toml::{Spanned, Value};

/// The closest of `known` to `name`, if it is close enough to be a typo.
fn suggestion<'k>(name: &str, known: impl Iterator<Item = &'k str>) -> Option<&'k str> {
    known
        .map(|k| (strsim::levenshtein(name, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Refuses names the catalogue does not know: such a rule would never match.
pub(super) fn known_names<'k>(
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

fn type_name(v: &Value) -> &'static str {
    v.type_str()
}

/// A string or a non-empty list of strings.
pub(super) fn strings(cx: &Ctx, v: &Spanned<Value>, key: &str) -> Result<Vec<String>, RulesError> {
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
pub(in crate::pipeline::firewall) fn prefix(s: &str) -> Result<Prefix, String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an address or prefix"))?;
    let (v6, bits) = addr_bits(addr);
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

pub(super) fn prefixes(
    cx: &Ctx,
    v: &Spanned<Value>,
    key: &str,
) -> Result<Box<[Prefix]>, RulesError> {
    strings(cx, v, key)?
        .iter()
        .map(|s| prefix(s).map_err(|m| cx.invalid(v.span(), key, m)))
        .collect()
}

pub(super) fn proto(cx: &Ctx, v: &Spanned<Value>, key: &str) -> Result<u8, RulesError> {
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

pub(super) fn ports(
    cx: &Ctx,
    v: &Spanned<Value>,
    key: &str,
) -> Result<Box<[(u16, u16)]>, RulesError> {
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
pub(super) fn rate(cx: &Ctx, v: &Spanned<Value>, key: &str) -> Result<u64, RulesError> {
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
pub(super) fn size(cx: &Ctx, v: &Spanned<Value>, key: &str) -> Result<u64, RulesError> {
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
pub(super) fn int_in<T: TryFrom<i64>>(
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

pub(super) fn allow_or_deny(
    cx: &Ctx,
    v: &Spanned<String>,
    key: &str,
) -> Result<Action, RulesError> {
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
