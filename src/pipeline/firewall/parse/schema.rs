//! A rule file as serde reads it: every key kept with its span, values whose
//! type varies (addresses, ports, rates) left as TOML values, and unknown keys
//! refused, so that resolving can name the line of anything it refuses.

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::{Spanned, Value};

/// A rule file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub(super) default: Option<Spanned<String>>,
    pub(super) nodes: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub(super) workload: BTreeMap<Spanned<String>, RawWorkload>,
    #[serde(default)]
    pub(super) rule: Vec<Spanned<RawRule>>,
}

/// A `[workload.NAME]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkload {
    pub(super) default: Option<Spanned<String>>,
    pub(super) labels: Option<Spanned<Vec<String>>>,
    pub(super) bandwidth: Option<Spanned<Value>>,
    pub(super) auto_bandwidth: Option<Spanned<RawAuto>>,
    pub(super) fast_path: Option<bool>,
}

/// A workload's `auto_bandwidth` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuto {
    pub(super) min: Spanned<Value>,
    pub(super) max: Spanned<Value>,
    pub(super) raise_after: Option<Spanned<i64>>,
    pub(super) lower_after: Option<Spanned<i64>>,
    pub(super) factor: Option<Spanned<f64>>,
}

/// One `[[rule]]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub(super) id: Option<Spanned<String>>,
    pub(super) workload: Option<Spanned<String>>,
    pub(super) label: Option<Spanned<String>>,
    pub(super) direction: Option<Spanned<String>>,
    pub(super) src: Option<Spanned<Value>>,
    pub(super) dst: Option<Spanned<Value>>,
    pub(super) proto: Option<Spanned<Value>>,
    pub(super) src_ports: Option<Spanned<Value>>,
    pub(super) dst_ports: Option<Spanned<Value>>,
    pub(super) app: Option<Spanned<Value>>,
    pub(super) category: Option<Spanned<Value>>,
    pub(super) action: Spanned<String>,
    pub(super) rate: Option<Spanned<Value>>,
    pub(super) pps: Option<Spanned<i64>>,
    pub(super) burst: Option<Spanned<Value>>,
    pub(super) max_delay_ms: Option<Spanned<i64>>,
}
