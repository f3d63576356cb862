//! Which records a query or a stream asks for, and the points in time it
//! names.

use super::FlowRecord;
use super::schema::rfc3339_millis;
use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::record::log::tests::{T0, ids, mem, rec};

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
}
