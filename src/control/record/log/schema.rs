//! What one record of the verdict log holds, and how its times are written:
//! RFC 3339 in JSON, unix milliseconds in memory.

use serde::de::{self, Deserializer, Visitor};
use serde::ser::{self, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// The kernel fast path forwards the flow (one direction or both); its
    /// counters include what the kernel forwarded.
    #[serde(default)]
    pub offloaded: bool,
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

pub(super) fn rfc3339_millis(s: &str) -> Result<u64, String> {
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| format!("{s:?}: {e}"))?;
    let d = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| format!("{s:?} is before 1970"))?;
    Ok(d.as_millis() as u64)
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
    use crate::control::record::log::tests::{T0, rec};

    #[test]
    fn verdict_words() {
        assert_eq!(FlowRecord::verdict_of(true, "allow"), "allow");
        assert_eq!(FlowRecord::verdict_of(true, "deny"), "deny");
        assert_eq!(FlowRecord::verdict_of(false, "deny"), "would deny");
        assert_eq!(FlowRecord::verdict_of(false, "allow"), "would allow");
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
}
