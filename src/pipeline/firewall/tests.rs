//! Unit tests: parsing, errors, matching semantics.

use super::*;
use std::net::IpAddr;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A TCP flow on pod1, ingress, from port 40000.
fn tcp(src: &str, dst: &str, dst_port: u16) -> FlowFacts<'static> {
    FlowFacts {
        workload: "pod1",
        direction: Direction::Ingress,
        src: ip(src),
        dst: ip(dst),
        proto: 6,
        src_port: 40000,
        dst_port,
        app: None,
        category: None,
    }
}

fn rs(text: &str) -> RuleSet {
    RuleSet::parse(text, "rules.toml").unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> RulesError {
    RuleSet::parse(text, "rules.toml").expect_err("accepted")
}

/// Judges with the index and checks the linear scan agrees.
fn judge(r: &RuleSet, f: &FlowFacts) -> Decision {
    let d = r.judge(f);
    assert_eq!(d, r.judge_linear(f), "index and scan disagree on {f:?}");
    d
}

/// Index of the rule that decided.
fn hit(r: &RuleSet, f: &FlowFacts) -> Option<u32> {
    judge(r, f).rule
}

const EXAMPLE: &str = r#"
# Default for workloads without their own: "allow" or "deny"
default = "allow"

[workload.pod1]
default = "deny"
labels = ["web", "team-a"]
bandwidth = "20mbit"
[workload.pod1.auto_bandwidth]
min = "10mbit"
max = "80mbit"
raise_after = 3
lower_after = 5
factor = 2.0

[[rule]]
id = "no-ssh-in"
workload = "pod1"
direction = "ingress"
src = "10.0.0.0/8"
dst = ["2001:db8::/32", "192.0.2.1"]
proto = "tcp"
src_ports = "1024-65535"
dst_ports = [22, "8000-8080"]
app = "youtube"
category = "streaming"
action = "rate-limit"
rate = "10mbit"
burst = "64KB"

[[rule]]
label = "web"
direction = "egress"
proto = 17
action = "shape"
rate = 1000000
burst = 20000
max_delay_ms = 50

[[rule]]
direction = "any"
proto = "icmp"
action = "log"

[[rule]]
proto = "icmpv6"
action = "reject"

[[rule]]
action = "rate-limit"
pps = 1000
burst = 50
"#;

#[test]
fn example_parses_every_key() {
    let r = rs(EXAMPLE);
    assert_eq!(r.len(), 5);
    assert!(!r.is_empty());
    assert!(r.uses_apps());
    assert_eq!(r.default_action(), Action::Allow);
    assert_eq!(r.rule_id(0), "no-ssh-in");
    assert_eq!(r.rule_id(1), "rule-2");
    assert_eq!(r.rule_id(99), "?");
    assert_eq!(r.workload_names().collect::<Vec<_>>(), ["pod1"]);
    let w = r.workload("pod1").unwrap();
    assert_eq!(w.default, Some(Action::Deny));
    assert_eq!(w.labels, ["web", "team-a"]);
    assert_eq!(w.bandwidth, Some(2_500_000));
    assert_eq!(
        w.auto_bandwidth,
        Some(AutoBandwidth {
            min: 1_250_000,
            max: 10_000_000,
            raise_after: 3,
            lower_after: 5,
            factor: 2.0
        })
    );
    assert!(r.workload("pod2").is_none());

    let f = FlowFacts {
        src_port: 2000,
        dst_port: 8080,
        app: Some("youtube"),
        category: Some("streaming"),
        ..tcp("10.1.2.3", "192.0.2.1", 0)
    };
    let d = judge(&r, &f);
    assert_eq!(d.rule, Some(0));
    assert_eq!(
        d.action,
        Action::RateLimit(Limit::Bytes {
            rate: 1_250_000,
            burst: 64_000
        })
    );
    // Each side is matched on its own: the v6 destination is in the rule's list.
    let mixed = FlowFacts {
        dst: ip("2001:db8::1"),
        ..f
    };
    assert_eq!(hit(&r, &mixed), Some(0));
    // A v6 source is not in 10.0.0.0/8: down to the pps rule.
    let f6 = FlowFacts {
        src: ip("2001:db8::5"),
        ..mixed
    };
    assert_eq!(hit(&r, &f6), Some(4));

    let udp = FlowFacts {
        direction: Direction::Egress,
        proto: 17,
        ..tcp("10.1.2.3", "8.8.8.8", 53)
    };
    let d = judge(&r, &udp);
    assert_eq!(d.rule, Some(1));
    assert_eq!(
        d.action,
        Action::Shape(Shape {
            rate: 1_000_000,
            burst: 20_000,
            max_delay_ms: 50
        })
    );

    let icmp = FlowFacts {
        proto: 1,
        ..tcp("10.1.2.3", "8.8.8.8", 0)
    };
    let d = judge(&r, &icmp);
    assert_eq!((d.rule, d.logged_by), (Some(4), Some(2)));
    assert_eq!(
        d.action,
        Action::RateLimit(Limit::Packets {
            pps: 1000,
            burst: 50
        })
    );

    let icmp6 = FlowFacts {
        proto: 58,
        ..tcp("2001:db8::1", "2001:db8::2", 0)
    };
    assert_eq!(judge(&r, &icmp6).action, Action::Reject);
}

#[test]
fn action_names_and_allows() {
    let lim = Limit::Packets { pps: 1, burst: 1 };
    let sh = Shape {
        rate: 1,
        burst: 1,
        max_delay_ms: 1,
    };
    let all = [
        (Action::Allow, "allow", true),
        (Action::Deny, "deny", false),
        (Action::Reject, "reject", false),
        (Action::RateLimit(lim), "rate-limit", true),
        (Action::Shape(sh), "shape", true),
    ];
    for (a, name, allows) in all {
        assert_eq!(a.name(), name);
        assert_eq!(a.allows(), allows, "{name}");
    }
}

#[test]
fn every_action_parses_with_defaults() {
    let r = rs(r#"
[[rule]]
action = "allow"
[[rule]]
action = "deny"
[[rule]]
action = "reject"
[[rule]]
action = "log"
[[rule]]
action = "rate-limit"
rate = "80mbit"
[[rule]]
action = "rate-limit"
rate = "1mbit"
[[rule]]
action = "rate-limit"
pps = 10000
[[rule]]
action = "rate-limit"
pps = 10
[[rule]]
action = "shape"
rate = "2MB/s"
"#);
    let v: Vec<RuleEffect> = r.rules.iter().map(|r| r.effect).collect();
    assert_eq!(
        v,
        [
            RuleEffect::Decide(Action::Allow),
            RuleEffect::Decide(Action::Deny),
            RuleEffect::Decide(Action::Reject),
            RuleEffect::Log,
            RuleEffect::Decide(Action::RateLimit(Limit::Bytes {
                rate: 10_000_000,
                burst: 100_000
            })),
            // 10 ms of 125 kB/s is tiny: at least 16 KiB.
            RuleEffect::Decide(Action::RateLimit(Limit::Bytes {
                rate: 125_000,
                burst: 16384
            })),
            RuleEffect::Decide(Action::RateLimit(Limit::Packets {
                pps: 10000,
                burst: 100
            })),
            RuleEffect::Decide(Action::RateLimit(Limit::Packets { pps: 10, burst: 10 })),
            RuleEffect::Decide(Action::Shape(Shape {
                rate: 2_000_000,
                burst: 20_000,
                max_delay_ms: 100
            })),
        ]
    );
    assert!(!r.uses_apps());
}

#[test]
fn empty_and_defaults() {
    let e = RuleSet::empty();
    assert!(e.is_empty());
    assert_eq!(e.len(), 0);
    let d = e.judge(&tcp("10.0.0.1", "10.0.0.2", 80));
    assert_eq!(
        d,
        Decision {
            action: Action::Allow,
            rule: None,
            logged_by: None
        }
    );
    assert!(format!("{e:?}").contains("RuleSet"));

    let r = rs("default = \"deny\"\n[workload.pod2]\ndefault = \"allow\"\n[workload.pod3]\n");
    assert_eq!(
        judge(&r, &tcp("10.0.0.1", "10.0.0.2", 80)).action,
        Action::Deny
    );
    let f = FlowFacts {
        workload: "pod2",
        ..tcp("10.0.0.1", "10.0.0.2", 80)
    };
    assert_eq!(judge(&r, &f).action, Action::Allow);
    let f = FlowFacts {
        workload: "pod3",
        ..f
    };
    assert_eq!(judge(&r, &f).action, Action::Deny);
    assert_eq!(r.workload_names().collect::<Vec<_>>(), ["pod2", "pod3"]);
    assert_eq!(r.workload("pod3").unwrap().default, None);
}

/// The error message, checking it names the expected line.
fn err_at(text: &str, line: usize) -> String {
    let e = err(text);
    assert_eq!(e.line(), line, "{e}");
    e.to_string()
}

#[test]
fn brief_example_error() {
    let mut t =
        String::from("\n\n\n[[rule]]\naction = \"allow\"\n\n[[rule]]\naction = \"deny\"\n\n");
    t.push_str("[[rule]]\naction = \"deny\"\nproto = \"tcp\"\n\ndst_ports = \"80-70\"\n");
    assert_eq!(
        err_at(&t, 14),
        "rules.toml:14: rule[3].dst_ports: \"80-70\" is an empty range"
    );
}

#[test]
fn syntax_errors_name_line_and_column() {
    let e = err_at("default = \"allow\"\n\n[[rule]]\nacton = \"deny\"\n", 4);
    assert!(
        e.starts_with("rules.toml:4:1: unknown field `acton`"),
        "{e}"
    );
    let e = err_at("[[rule]]\nproto = \"tcp\"\n", 1);
    assert!(e.contains("missing field `action`"), "{e}");
    let e = err_at("[[rule]]\naction = \"deny\"\npps = \"many\"\n", 3);
    assert!(e.starts_with("rules.toml:3:7: "), "{e}");
    let e = err_at("default = \n", 1);
    assert!(e.starts_with("rules.toml:1:"), "{e}");
    err_at("[workload.a]\nlabel = [\"x\"]\n", 2);
    err_at(
        "[workload.a]\n[workload.a.auto_bandwidth]\nmin = 1\nmax = 2\nstep = 3\n",
        5,
    );
    err_at("bogus = 1\n", 1);
}

#[test]
fn invalid_values_name_line_and_key() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "default = \"maybe\"",
            1,
            "rules.toml:1: default: \"maybe\" is not \"allow\" or \"deny\"",
        ),
        (
            "[workload.p]\ndefault = \"reject\"",
            2,
            "workload.p.default",
        ),
        ("[workload.p]\nlabels = [\"\"]", 2, "workload.p.labels"),
        (
            "[workload.p]\nbandwidth = \"fast\"",
            2,
            "workload.p.bandwidth",
        ),
        ("[workload.p]\nbandwidth = 0", 2, "workload.p.bandwidth"),
        (
            "[workload.p]\nbandwidth = 5\n[workload.p.auto_bandwidth]\nmin = 1\nmax = 9\nfactor = 1.0",
            6,
            "workload.p.auto_bandwidth.factor",
        ),
        (
            "[workload.p]\nbandwidth = 5\n[workload.p.auto_bandwidth]\nmin = 1\nmax = 9\nraise_after = 0",
            6,
            "workload.p.auto_bandwidth.raise_after",
        ),
        (
            "[workload.p]\nbandwidth = 5\n[workload.p.auto_bandwidth]\nmin = 10\nmax = 9",
            5,
            "workload.p.auto_bandwidth.max",
        ),
        (
            "\n[[rule]]\naction = \"nuke\"",
            3,
            "rule[1].action: \"nuke\" is not",
        ),
        (
            "[[rule]]\naction = \"deny\"\nid = \"\"",
            3,
            "rule[1].id: empty id",
        ),
        (
            "[[rule]]\naction = \"deny\"\ndirection = \"up\"",
            3,
            "rule[1].direction",
        ),
        (
            "[[rule]]\naction = \"deny\"\nsrc = \"10.0.0.1/8\"",
            3,
            "did you mean \"10.0.0.0/8\"",
        ),
        (
            "[[rule]]\naction = \"deny\"\nsrc = \"10.0.0.0/33\"",
            3,
            "rule[1].src: \"10.0.0.0/33\": prefix length",
        ),
        (
            "[[rule]]\naction = \"deny\"\ndst = \"example.com\"",
            3,
            "rule[1].dst: \"example.com\" is not",
        ),
        (
            "[[rule]]\naction = \"deny\"\ndst = []",
            3,
            "rule[1].dst: an empty list",
        ),
        ("[[rule]]\naction = \"deny\"\ndst = 10", 3, "found integer"),
        (
            "[[rule]]\naction = \"deny\"\nproto = \"sctp\"",
            3,
            "rule[1].proto",
        ),
        (
            "[[rule]]\naction = \"deny\"\nproto = 256",
            3,
            "rule[1].proto",
        ),
        (
            "[[rule]]\naction = \"deny\"\nproto = \"tcp\"\nsrc_ports = 70000",
            4,
            "rule[1].src_ports: 70000 is not a port",
        ),
        (
            "[[rule]]\naction = \"deny\"\nproto = \"tcp\"\nsrc_ports = \"x-9\"",
            4,
            "rule[1].src_ports",
        ),
        (
            "[[rule]]\naction = \"deny\"\nproto = \"udp\"\ndst_ports = []",
            4,
            "rule[1].dst_ports",
        ),
        (
            "[[rule]]\naction = \"deny\"\napp = [\"a\", 3]",
            3,
            "rule[1].app",
        ),
        (
            "[[rule]]\naction = \"deny\"\ncategory = \"\"",
            3,
            "rule[1].category: empty string",
        ),
        (
            "[[rule]]\naction = \"deny\"\nworkload = \"\"",
            3,
            "rule[1].workload",
        ),
        (
            "[[rule]]\naction = \"deny\"\nlabel = \"\"",
            3,
            "rule[1].label",
        ),
        (
            "[[rule]]\naction = \"rate-limit\"\nrate = \"1bit\"",
            3,
            "rule[1].rate",
        ),
        (
            "[[rule]]\naction = \"rate-limit\"\npps = 0",
            3,
            "rule[1].pps",
        ),
        (
            "[[rule]]\naction = \"rate-limit\"\npps = 5\nburst = \"64KB\"",
            4,
            "rule[1].burst",
        ),
        (
            "[[rule]]\naction = \"shape\"\nrate = 5\nburst = \"big\"",
            4,
            "rule[1].burst",
        ),
        (
            "[[rule]]\naction = \"shape\"\nrate = 5\nmax_delay_ms = 0",
            4,
            "rule[1].max_delay_ms",
        ),
    ];
    for &(text, line, want) in cases {
        let e = err_at(text, line);
        assert!(matches!(err(text), RulesError::Invalid { .. }), "{e}");
        assert!(e.contains(want), "{e} lacks {want}");
    }
}

#[test]
fn conflicts_name_line_and_key() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "[[rule]]\naction = \"deny\"\ndst_ports = 22",
            3,
            "rule[1].dst_ports: ports need proto",
        ),
        (
            "[[rule]]\naction = \"deny\"\nproto = \"icmp\"\nsrc_ports = 1",
            4,
            "rule[1].src_ports",
        ),
        (
            "[[rule]]\naction = \"deny\"\nworkload = \"a\"\nlabel = \"b\"",
            4,
            "rule[1].label",
        ),
        (
            "[[rule]]\naction = \"allow\"\nrate = \"1mbit\"",
            3,
            "rule[1].rate: only rate-limit and shape",
        ),
        ("[[rule]]\naction = \"log\"\nburst = 5", 3, "rule[1].burst"),
        ("[[rule]]\naction = \"deny\"\npps = 5", 3, "rule[1].pps"),
        (
            "[[rule]]\naction = \"reject\"\nmax_delay_ms = 5",
            3,
            "rule[1].max_delay_ms",
        ),
        (
            "[[rule]]\naction = \"rate-limit\"",
            2,
            "rule[1].action: rate-limit needs rate",
        ),
        (
            "[[rule]]\naction = \"rate-limit\"\nrate = 5\npps = 5",
            4,
            "rule[1].pps: give rate or pps",
        ),
        (
            "[[rule]]\naction = \"rate-limit\"\nrate = 5\nmax_delay_ms = 5",
            4,
            "rule[1].max_delay_ms",
        ),
        (
            "[[rule]]\naction = \"shape\"",
            2,
            "rule[1].action: shape needs rate",
        ),
        (
            "[[rule]]\naction = \"shape\"\nrate = 5\npps = 5",
            4,
            "rule[1].pps",
        ),
        (
            "[[rule]]\naction = \"deny\"\nsrc = \"10.0.0.0/8\"\ndst = \"::/0\"",
            4,
            "rule[1].dst: src and dst have no address family in common",
        ),
        (
            "[workload.p]\n[workload.p.auto_bandwidth]\nmin = 1\nmax = 9",
            2,
            "workload.p.auto_bandwidth: needs bandwidth",
        ),
        (
            "[workload.p]\nbandwidth = 50\n[workload.p.auto_bandwidth]\nmin = 1\nmax = 9",
            2,
            "workload.p.bandwidth",
        ),
    ];
    for &(text, line, want) in cases {
        let e = err_at(text, line);
        assert!(matches!(err(text), RulesError::Conflict { .. }), "{e}");
        assert!(e.contains(want), "{e} lacks {want}");
    }
}

#[test]
fn duplicate_ids_name_the_second() {
    let t = "[[rule]]\nid = \"a\"\naction = \"deny\"\n\n[[rule]]\naction = \"allow\"\nid = \"a\"\n";
    assert_eq!(
        err_at(t, 7),
        "rules.toml:7: rule[2].id: rule id \"a\" is already used by rule[1]"
    );
    // A default id clashing with an explicit one points at the second rule's header.
    let t = "[[rule]]\nid = \"rule-2\"\naction = \"deny\"\n[[rule]]\naction = \"allow\"\n";
    let e = err_at(t, 4);
    assert!(
        matches!(err(t), RulesError::DuplicateId { first: 1, .. }),
        "{e}"
    );
}

#[test]
fn first_match_wins() {
    let r = rs(r#"
[[rule]]
dst = "10.0.0.5"
action = "deny"
[[rule]]
dst = "10.0.0.0/24"
action = "reject"
[[rule]]
dst = "10.0.0.5"
proto = "tcp"
dst_ports = 80
action = "allow"
[[rule]]
action = "deny"
"#);
    assert_eq!(hit(&r, &tcp("1.1.1.1", "10.0.0.5", 80)), Some(0));
    assert_eq!(hit(&r, &tcp("1.1.1.1", "10.0.0.6", 80)), Some(1));
    assert_eq!(hit(&r, &tcp("1.1.1.1", "10.0.1.6", 80)), Some(3));
    let r = rs(
        "[[rule]]\naction = \"allow\"\nproto = \"udp\"\n[[rule]]\naction = \"deny\"\n[[rule]]\naction = \"allow\"\n",
    );
    assert_eq!(
        judge(&r, &tcp("1.1.1.1", "2.2.2.2", 1)).action,
        Action::Deny
    );
}

#[test]
fn direction() {
    let r = rs(
        "[[rule]]\ndirection = \"ingress\"\naction = \"deny\"\n[[rule]]\ndirection = \"egress\"\naction = \"reject\"\n",
    );
    let f = tcp("1.1.1.1", "2.2.2.2", 1);
    assert_eq!(judge(&r, &f).action, Action::Deny);
    let f = FlowFacts {
        direction: Direction::Egress,
        ..f
    };
    assert_eq!(judge(&r, &f).action, Action::Reject);
}

#[test]
fn prefixes_and_families() {
    let r = rs(r#"
[[rule]]
src = "0.0.0.0/0"
dst = "192.0.2.0/25"
action = "deny"
[[rule]]
dst = ["2001:db8::/32", "198.51.100.7"]
action = "reject"
[[rule]]
src = "::/0"
action = "log"
"#);
    assert_eq!(hit(&r, &tcp("1.1.1.1", "192.0.2.127", 1)), Some(0));
    assert_eq!(hit(&r, &tcp("1.1.1.1", "192.0.2.128", 1)), None);
    // 0.0.0.0/0 is every v4 address, not every address.
    assert_eq!(hit(&r, &tcp("::1", "192.0.2.1", 1)), None);
    assert_eq!(hit(&r, &tcp("1.1.1.1", "198.51.100.7", 1)), Some(1));
    assert_eq!(hit(&r, &tcp("1.1.1.1", "198.51.100.8", 1)), None);
    let d = judge(&r, &tcp("2001:db9::1", "2001:db8:ffff::1", 1));
    assert_eq!((d.rule, d.logged_by), (Some(1), None));
    let d = judge(&r, &tcp("2001:db9::1", "2001:db9::1", 1));
    assert_eq!((d.rule, d.logged_by), (None, Some(2)));
    // A v4-mapped v6 address is v6 here.
    assert_eq!(hit(&r, &tcp("1.1.1.1", "::ffff:198.51.100.7", 1)), None);
}

#[test]
fn ports_ranges_and_lists() {
    let r = rs(r#"
[[rule]]
proto = "tcp"
dst_ports = [22, "8000-8080", "443"]
action = "deny"
[[rule]]
proto = "udp"
src_ports = "1024-2047"
dst_ports = [53, 5353]
action = "reject"
[[rule]]
proto = 6
src_ports = 7
action = "log"
[[rule]]
proto = "tcp"
dst_ports = "0-65535"
action = "allow"
"#);
    for (p, want) in [
        (22, Some(0)),
        (443, Some(0)),
        (8000, Some(0)),
        (8080, Some(0)),
        (8081, Some(3)),
        (7999, Some(3)),
        (0, Some(3)),
    ] {
        assert_eq!(hit(&r, &tcp("1.1.1.1", "2.2.2.2", p)), want, "port {p}");
    }
    let u = FlowFacts {
        proto: 17,
        src_port: 1500,
        ..tcp("1.1.1.1", "2.2.2.2", 5353)
    };
    assert_eq!(hit(&r, &u), Some(1));
    assert_eq!(
        hit(
            &r,
            &FlowFacts {
                src_port: 2048,
                ..u
            }
        ),
        None
    );
    assert_eq!(hit(&r, &FlowFacts { dst_port: 54, ..u }), None);
    let d = judge(
        &r,
        &FlowFacts {
            src_port: 7,
            ..tcp("1.1.1.1", "2.2.2.2", 9)
        },
    );
    assert_eq!((d.rule, d.logged_by), (Some(3), Some(2)));
}

#[test]
fn app_and_category_only_when_known() {
    let r = rs(r#"
[[rule]]
app = ["youtube", "netflix"]
action = "shape"
rate = "5mbit"
[[rule]]
category = "p2p"
action = "deny"
[[rule]]
app = "zoom"
category = "video"
action = "reject"
"#);
    assert!(r.uses_apps());
    let f = tcp("1.1.1.1", "2.2.2.2", 443);
    assert_eq!(hit(&r, &f), None);
    assert_eq!(
        hit(
            &r,
            &FlowFacts {
                app: Some("netflix"),
                ..f
            }
        ),
        Some(0)
    );
    assert_eq!(
        hit(
            &r,
            &FlowFacts {
                app: Some("Netflix"),
                ..f
            }
        ),
        None
    );
    assert_eq!(
        hit(
            &r,
            &FlowFacts {
                category: Some("p2p"),
                ..f
            }
        ),
        Some(1)
    );
    assert_eq!(
        hit(
            &r,
            &FlowFacts {
                app: Some("zoom"),
                ..f
            }
        ),
        None
    );
    let z = FlowFacts {
        app: Some("zoom"),
        category: Some("video"),
        ..f
    };
    assert_eq!(hit(&r, &z), Some(2));
}

#[test]
fn log_is_not_terminal() {
    let r = rs(r#"
default = "deny"
[[rule]]
proto = "tcp"
action = "log"
[[rule]]
dst = "10.0.0.0/8"
action = "log"
[[rule]]
dst_ports = 80
proto = "tcp"
action = "allow"
[[rule]]
action = "log"
"#);
    let d = judge(&r, &tcp("1.1.1.1", "10.0.0.1", 80));
    assert_eq!(
        d,
        Decision {
            action: Action::Allow,
            rule: Some(2),
            logged_by: Some(0)
        }
    );
    let d = judge(
        &r,
        &FlowFacts {
            proto: 17,
            ..tcp("1.1.1.1", "10.0.0.1", 80)
        },
    );
    assert_eq!(
        d,
        Decision {
            action: Action::Deny,
            rule: None,
            logged_by: Some(1)
        }
    );
    // Log rules after the deciding rule are never reached.
    let r = rs("[[rule]]\naction = \"allow\"\n[[rule]]\naction = \"log\"\n");
    let d = judge(&r, &tcp("1.1.1.1", "10.0.0.1", 80));
    assert_eq!((d.rule, d.logged_by), (Some(0), None));
}

#[test]
fn workload_and_label_rules() {
    let r = rs(r#"
[workload.pod1]
labels = ["web", "web"]
[workload.pod2]
labels = ["db"]
[workload.pod3]
labels = ["web", "db"]

[[rule]]
label = "db"
action = "deny"
[[rule]]
workload = "pod1"
proto = "udp"
action = "reject"
[[rule]]
workload = "pod9"
action = "reject"
[[rule]]
label = "nobody"
action = "reject"
[[rule]]
label = "web"
action = "log"
"#);
    let on = |w: &'static str| FlowFacts {
        workload: w,
        ..tcp("1.1.1.1", "2.2.2.2", 80)
    };
    assert_eq!(hit(&r, &on("pod2")), Some(0));
    assert_eq!(hit(&r, &on("pod3")), Some(0));
    let d = judge(&r, &on("pod1"));
    assert_eq!((d.rule, d.logged_by), (None, Some(4)));
    assert_eq!(
        hit(
            &r,
            &FlowFacts {
                proto: 17,
                ..on("pod1")
            }
        ),
        Some(1)
    );
    // Named by a rule only, no [workload] table: rules apply, no policy.
    assert_eq!(hit(&r, &on("pod9")), Some(2));
    assert!(r.workload("pod9").is_none());
    assert_eq!(
        r.workload_names().collect::<Vec<_>>(),
        ["pod1", "pod2", "pod3"]
    );
    let d = judge(&r, &on("stranger"));
    assert_eq!((d.rule, d.logged_by), (None, None));
}

#[test]
fn synthetic_sets() {
    for n in [0, 10, 1000, 3000] {
        let r = RuleSet::synthetic(n);
        assert_eq!(r.len(), n);
        assert_eq!(r.uses_apps(), n >= 20);
        for i in 0..64u16 {
            let miss = FlowFacts {
                workload: ["pod0", "pod1", "x"][i as usize % 3],
                app: Some("app7"),
                proto: [6, 17, 1][i as usize % 3],
                ..tcp(&format!("10.99.{i}.1"), &format!("10.99.1.{i}"), 1000 + i)
            };
            let d = judge(&r, &miss);
            assert_eq!((d.rule, d.logged_by), (None, None), "{n} {miss:?}");
        }
    }
    let r = RuleSet::synthetic(1000);
    // Rule 523: TCP to 10.1.2.11 port 1523, allow (odd).
    let d = judge(&r, &tcp("1.1.1.1", "10.1.2.11", 1523));
    assert_eq!((d.rule, d.action), (Some(523), Action::Allow));
    // Rule 519 is an app rule on 203.0.7.0/24.
    let f = FlowFacts {
        app: Some("app19"),
        ..tcp("1.1.1.1", "203.0.7.9", 1)
    };
    assert_eq!(hit(&r, &f), Some(519));
    // Rule 514: reject ingress to 192.168.2.0/24 ports 443, 8000-8100 on pod2.
    let f = FlowFacts {
        workload: "pod2",
        ..tcp("1.1.1.1", "192.168.2.1", 8050)
    };
    assert_eq!(judge(&r, &f).action, Action::Reject);
    assert_eq!(hit(&r, &f), Some(514));
    // Rule 516: label web, from 2001:db8:204::/48.
    let f = FlowFacts {
        workload: "pod4",
        ..tcp("2001:db8:204::9", "2001:db8::1", 1)
    };
    assert_eq!(hit(&r, &f), Some(516));
    assert_eq!(
        hit(
            &r,
            &FlowFacts {
                workload: "pod3",
                ..f
            }
        ),
        None
    );
}

#[test]
fn huge_expansion_goes_to_residual() {
    // 40 x 40 prefixes = 1600 keys for one rule: scanned, not indexed.
    let list = |base: &str| {
        (0..40)
            .map(|i| format!("\"{base}.{i}.0/24\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let t = format!(
        "[[rule]]\nsrc = [{}]\ndst = [{}]\naction = \"deny\"\n[[rule]]\naction = \"reject\"\n",
        list("10.1"),
        list("10.2")
    );
    let r = rs(&t);
    assert_eq!(r.decide.residual.len(), 1);
    assert_eq!(hit(&r, &tcp("10.1.39.1", "10.2.0.1", 1)), Some(0));
    assert_eq!(hit(&r, &tcp("10.1.40.1", "10.2.0.1", 1)), Some(1));
}

#[test]
fn send_sync() {
    fn is<T: Send + Sync + fmt::Debug>() {}
    is::<RuleSet>();
    is::<RulesError>();
}

#[test]
fn unknown_app_and_category_names_are_refused_with_a_suggestion() {
    let apps = crate::pipeline::app::Apps::builtin();
    let check = |text: &str| RuleSet::parse_with(text, "rules.toml", &apps);
    let e = check("[[rule]]\ncategory = \"gamng\"\naction = \"deny\"\n")
        .expect_err("a misspelt category was accepted")
        .to_string();
    assert!(
        e.starts_with("rules.toml:2: rule[1].category: unknown category \"gamng\""),
        "{e}"
    );
    assert!(e.contains("did you mean \"gaming\""), "{e}");
    let e = check("[[rule]]\napp = [\"youtube\", \"yotube\"]\naction = \"deny\"\n")
        .expect_err("a misspelt app was accepted")
        .to_string();
    assert!(
        e.contains("unknown application \"yotube\"") && e.contains("\"youtube\""),
        "{e}"
    );
    let e = check("[[rule]]\napp = \"zzzzzzzzzzzz\"\naction = \"deny\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        !e.contains("did you mean"),
        "no suggestion for a far name: {e}"
    );
    // Known names, "unknown" included, pass; without a catalogue nothing is checked.
    check("[[rule]]\napp = [\"youtube\", \"unknown\"]\ncategory = \"gaming\"\naction = \"deny\"\n")
        .unwrap();
    rs("[[rule]]\ncategory = \"gamng\"\naction = \"deny\"\n");
}

#[test]
fn attached_labels_bind_into_label_rules() {
    let text = r#"
nodes = ["zone=a"]
[workload.pod1]
labels = ["tier=db"]
[[rule]]
label = "app=web"
action = "deny"
[[rule]]
label = "tier=db"
action = "reject"
"#;
    let mut attached = Labels::new();
    attached.insert(
        "pod2".into(),
        vec!["app=web".into(), "namespace=prod".into()],
    );
    attached.insert("pod1".into(), vec!["app=web".into()]);
    let r = RuleSet::parse_bound(text, "t", None, &attached).unwrap();
    let on = |w: &'static str| FlowFacts {
        workload: w,
        ..tcp("1.1.1.1", "2.2.2.2", 80)
    };
    // pod1 carries the file's label and the attached one; the first rule wins.
    assert_eq!(hit(&r, &on("pod1")), Some(0));
    assert_eq!(hit(&r, &on("pod2")), Some(0));
    assert_eq!(hit(&r, &on("pod3")), None);
    // The same text unbound selects only by the file's labels.
    let plain = RuleSet::parse(text, "t").unwrap();
    assert_eq!(hit(&plain, &on("pod2")), None);
    assert_eq!(hit(&plain, &on("pod1")), Some(1));
    assert_eq!(r.nodes(), ["zone=a"]);
    assert!(r.selects(&["role=x".into(), "zone=a".into()]));
    assert!(!r.selects(&["zone=b".into()]));
    assert!(RuleSet::parse("", "t").unwrap().selects(&[]));
    let e = RuleSet::parse("nodes = [\"\"]", "t")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("t:1: nodes"), "{e}");
}
