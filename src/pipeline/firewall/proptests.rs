//! Property tests: the index agrees with a plain scan and with a model written
//! from the file format alone; parsing never panics.

use super::*;
use proptest::prelude::*;
use std::fmt::Write;
use std::net::IpAddr;

/// Workloads with a table, and the labels each lists.
const WORKLOADS: [(&str, &[&str]); 4] = [
    ("w0", &["l0"]),
    ("w1", &["l0", "l1"]),
    ("w2", &[]),
    ("w3", &["l2"]),
];
/// Flows also come from a workload only rules name (w4) and one nobody names.
const FLOW_WORKLOADS: [&str; 6] = ["w0", "w1", "w2", "w3", "w4", "w5"];
const LABELS: [&str; 4] = ["l0", "l1", "l2", "l3"];
const APPS: [&str; 3] = ["a0", "a1", "a2"];
const PROTOS: [u8; 4] = [6, 17, 1, 47];

#[derive(Clone, Debug)]
enum ScopeSpec {
    Any,
    Workload(&'static str),
    Label(&'static str),
}

#[derive(Clone, Debug)]
struct RuleSpec {
    scope: ScopeSpec,
    direction: Option<Option<Direction>>, // None: key absent; Some(None): "any"
    src: Option<Vec<(IpAddr, u8)>>,
    dst: Option<Vec<(IpAddr, u8)>>,
    proto: Option<u8>,
    src_ports: Option<Vec<(u16, u16)>>,
    dst_ports: Option<Vec<(u16, u16)>>,
    apps: Option<Vec<&'static str>>,
    categories: Option<Vec<&'static str>>,
    action: &'static str,
}

/// Addresses from a small pool, so that rules and flows meet often.
fn addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0u8..4, 0u8..4).prop_map(|(a, b)| IpAddr::from([10, 0, a, b])),
        (0u16..4, 0u16..4).prop_map(|(a, b)| IpAddr::from([0x2001, 0xdb8, a, 0, 0, 0, 0, b])),
    ]
}

fn masked(a: IpAddr, len: u8) -> IpAddr {
    let (v6, bits) = addr_bits(a);
    let m = bits & prefix_mask(v6, len);
    if v6 {
        IpAddr::from(m.to_be_bytes())
    } else {
        IpAddr::from((m as u32).to_be_bytes())
    }
}

fn prefix_spec() -> impl Strategy<Value = (IpAddr, u8)> {
    (addr(), 0usize..6).prop_map(|(a, l)| {
        let len = match a {
            IpAddr::V4(_) => [0, 8, 16, 24, 30, 32][l],
            IpAddr::V6(_) => [0, 32, 48, 64, 126, 128][l],
        };
        (masked(a, len), len)
    })
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![20u16..26, Just(80), Just(443)]
}

fn port_list() -> impl Strategy<Value = Vec<(u16, u16)>> {
    prop::collection::vec(
        prop_oneof![
            3 => port().prop_map(|p| (p, p)),
            1 => (20u16..26, 0u16..4).prop_map(|(lo, w)| (lo, lo + w)),
        ],
        1..4,
    )
}

fn names<T: Clone + std::fmt::Debug + 'static>(
    pool: &'static [T],
) -> impl Strategy<Value = Vec<T>> {
    prop::collection::vec(prop::sample::select(pool), 1..3)
}

fn rule_spec() -> impl Strategy<Value = RuleSpec> {
    let scope = prop_oneof![
        2 => Just(ScopeSpec::Any),
        1 => prop::sample::select(&["w0", "w1", "w2", "w3", "w4"][..]).prop_map(ScopeSpec::Workload),
        1 => prop::sample::select(&LABELS[..]).prop_map(ScopeSpec::Label),
    ];
    let direction = prop::option::of(prop::option::of(prop_oneof![
        Just(Direction::Ingress),
        Just(Direction::Egress)
    ]));
    let prefixes = || prop::option::weighted(0.7, prop::collection::vec(prefix_spec(), 1..4));
    let proto = prop::option::weighted(0.6, prop::sample::select(&PROTOS[..]));
    let ports = (
        prop::option::weighted(0.3, port_list()),
        prop::option::weighted(0.6, port_list()),
    );
    let apps = (
        prop::option::weighted(0.15, names(&APPS)),
        prop::option::weighted(0.1, names(&APPS)),
    );
    let action = prop::sample::select(
        &[
            "allow",
            "deny",
            "reject",
            "log",
            "log",
            "rate-limit",
            "shape",
        ][..],
    );
    (
        scope,
        direction,
        prefixes(),
        prefixes(),
        proto,
        ports,
        apps,
        action,
    )
        .prop_map(
            |(scope, direction, src, dst, proto, (sp, dp), (apps, categories), action)| {
                let tcp_udp = matches!(proto, Some(6 | 17));
                RuleSpec {
                    scope,
                    direction,
                    src,
                    dst,
                    proto,
                    src_ports: sp.filter(|_| tcp_udp),
                    dst_ports: dp.filter(|_| tcp_udp),
                    apps,
                    categories,
                    action,
                }
            },
        )
}

#[derive(Clone, Debug)]
struct Spec {
    default_deny: bool,
    workload_defaults: Vec<Option<bool>>,
    rules: Vec<RuleSpec>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        any::<bool>(),
        prop::collection::vec(prop::option::of(any::<bool>()), WORKLOADS.len()),
        prop::collection::vec(rule_spec(), 0..40),
    )
        .prop_map(|(default_deny, workload_defaults, rules)| Spec {
            default_deny,
            workload_defaults,
            rules,
        })
        // Rules the parser refuses as never matching (no common family).
        .prop_filter("src and dst families meet", |s| {
            s.rules.iter().all(|r| match (&r.src, &r.dst) {
                (Some(a), Some(b)) => a
                    .iter()
                    .any(|x| b.iter().any(|y| x.0.is_ipv6() == y.0.is_ipv6())),
                _ => true,
            })
        })
}

fn quoted<T: std::fmt::Display>(v: &[T]) -> String {
    let items: Vec<String> = v.iter().map(|x| format!("\"{x}\"")).collect();
    format!("[{}]", items.join(", "))
}

fn render(s: &Spec) -> String {
    let ad = |deny: bool| if deny { "deny" } else { "allow" };
    let mut t = format!("default = \"{}\"\n", ad(s.default_deny));
    for ((name, labels), d) in WORKLOADS.iter().zip(&s.workload_defaults) {
        let _ = writeln!(t, "[workload.{name}]\nlabels = {}", quoted(labels));
        if let Some(d) = d {
            let _ = writeln!(t, "default = \"{}\"", ad(*d));
        }
    }
    for r in &s.rules {
        t.push_str("[[rule]]\n");
        match r.scope {
            ScopeSpec::Any => {}
            ScopeSpec::Workload(w) => {
                let _ = writeln!(t, "workload = \"{w}\"");
            }
            ScopeSpec::Label(l) => {
                let _ = writeln!(t, "label = \"{l}\"");
            }
        }
        if let Some(d) = r.direction {
            let d = match d {
                None => "any",
                Some(Direction::Ingress) => "ingress",
                Some(Direction::Egress) => "egress",
            };
            let _ = writeln!(t, "direction = \"{d}\"");
        }
        for (key, v) in [("src", &r.src), ("dst", &r.dst)] {
            if let Some(v) = v {
                let v: Vec<String> = v.iter().map(|(a, l)| format!("{a}/{l}")).collect();
                let _ = writeln!(t, "{key} = {}", quoted(&v));
            }
        }
        if let Some(p) = r.proto {
            // Names and numbers both.
            match p {
                6 => t.push_str("proto = \"tcp\"\n"),
                1 => t.push_str("proto = \"icmp\"\n"),
                p => {
                    let _ = writeln!(t, "proto = {p}");
                }
            }
        }
        for (key, v) in [("src_ports", &r.src_ports), ("dst_ports", &r.dst_ports)] {
            if let Some(v) = v {
                let items: Vec<String> = v
                    .iter()
                    .map(|&(lo, hi)| {
                        if lo == hi {
                            lo.to_string()
                        } else {
                            format!("\"{lo}-{hi}\"")
                        }
                    })
                    .collect();
                let _ = writeln!(t, "{key} = [{}]", items.join(", "));
            }
        }
        if let Some(a) = &r.apps {
            let _ = writeln!(t, "app = {}", quoted(a));
        }
        if let Some(c) = &r.categories {
            let _ = writeln!(t, "category = {}", quoted(c));
        }
        let _ = writeln!(t, "action = \"{}\"", r.action);
        match r.action {
            "rate-limit" => t.push_str("pps = 100\n"),
            "shape" => t.push_str("rate = \"1mbit\"\n"),
            _ => {}
        }
    }
    t
}

fn in_prefix(a: IpAddr, (net, len): (IpAddr, u8)) -> bool {
    match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            len == 0 || (u32::from(a) ^ u32::from(n)) >> (32 - len) == 0
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            len == 0 || (u128::from(a) ^ u128::from(n)) >> (128 - len) == 0
        }
        _ => false,
    }
}

/// Does the rule match, reading the spec directly?
fn model_matches(r: &RuleSpec, f: &FlowFacts) -> bool {
    let scope = match r.scope {
        ScopeSpec::Any => true,
        ScopeSpec::Workload(w) => f.workload == w,
        ScopeSpec::Label(l) => WORKLOADS
            .iter()
            .any(|(w, labels)| *w == f.workload && labels.contains(&l)),
    };
    let prefixes = |v: &Option<Vec<(IpAddr, u8)>>, a| {
        v.as_ref()
            .is_none_or(|v| v.iter().any(|&p| in_prefix(a, p)))
    };
    let ports = |v: &Option<Vec<(u16, u16)>>, p| {
        v.as_ref()
            .is_none_or(|v| v.iter().any(|&(lo, hi)| (lo..=hi).contains(&p)))
    };
    let known = |v: &Option<Vec<&str>>, x: Option<&str>| {
        v.as_ref().is_none_or(|v| x.is_some_and(|x| v.contains(&x)))
    };
    scope
        && r.direction.flatten().is_none_or(|d| d == f.direction)
        && prefixes(&r.src, f.src)
        && prefixes(&r.dst, f.dst)
        && r.proto.is_none_or(|p| p == f.proto)
        && ports(&r.src_ports, f.src_port)
        && ports(&r.dst_ports, f.dst_port)
        && known(&r.apps, f.app)
        && known(&r.categories, f.category)
}

/// (deciding rule, its action name, first log rule before it).
fn model_judge(s: &Spec, f: &FlowFacts) -> (Option<u32>, &'static str, Option<u32>) {
    let mut logged = None;
    for (i, r) in s.rules.iter().enumerate() {
        if model_matches(r, f) {
            if r.action == "log" {
                logged.get_or_insert(i as u32);
            } else {
                return (Some(i as u32), r.action, logged);
            }
        }
    }
    let wl_default = WORKLOADS
        .iter()
        .position(|(w, _)| *w == f.workload)
        .and_then(|i| s.workload_defaults[i]);
    let deny = wl_default.unwrap_or(s.default_deny);
    (None, if deny { "deny" } else { "allow" }, logged)
}

#[derive(Clone, Debug)]
struct FlowSpec {
    workload: &'static str,
    direction: Direction,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    src_port: u16,
    dst_port: u16,
    app: Option<&'static str>,
    category: Option<&'static str>,
}

fn flow_spec() -> impl Strategy<Value = FlowSpec> {
    (
        prop::sample::select(&FLOW_WORKLOADS[..]),
        any::<bool>(),
        // Mostly one family, sometimes mixed: the index must agree even then.
        (addr(), addr()),
        prop::sample::select(&PROTOS[..]),
        (port(), port()),
        prop::option::of(prop::sample::select(&APPS[..])),
        prop::option::of(prop::sample::select(&APPS[..])),
    )
        .prop_map(
            |(workload, ingress, (src, dst), proto, (sp, dp), app, category)| FlowSpec {
                workload,
                direction: if ingress {
                    Direction::Ingress
                } else {
                    Direction::Egress
                },
                src,
                dst,
                proto,
                src_port: sp,
                dst_port: dp,
                app,
                category,
            },
        )
}

impl FlowSpec {
    fn facts(&self) -> FlowFacts<'static> {
        FlowFacts {
            workload: self.workload,
            direction: self.direction,
            src: self.src,
            dst: self.dst,
            proto: self.proto,
            src_port: self.src_port,
            dst_port: self.dst_port,
            app: self.app,
            category: self.category,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn index_equals_scan_and_model(s in spec(), flows in prop::collection::vec(flow_spec(), 1..64)) {
        let text = render(&s);
        let r = RuleSet::parse(&text, "prop.toml").map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(r.len(), s.rules.len());
        for fs in &flows {
            let f = fs.facts();
            let d = r.judge(&f);
            prop_assert_eq!(d, r.judge_linear(&f), "{:?}\n{}", f, text);
            let (rule, action, logged) = model_judge(&s, &f);
            prop_assert_eq!((d.rule, d.action.name(), d.logged_by), (rule, action, logged), "{:?}\n{}", f, text);
        }
    }

    #[test]
    fn parse_never_panics(text in ".{0,400}") {
        let _ = RuleSet::parse(&text, "fuzz.toml");
    }

    #[test]
    fn parse_never_panics_on_near_misses(s in spec(), edits in prop::collection::vec((any::<prop::sample::Index>(), ".{0,4}"), 1..4)) {
        let mut text = render(&s);
        for (at, ins) in edits {
            if text.is_empty() {
                break;
            }
            let mut i = at.index(text.len());
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            let end = (i + 3).min(text.len());
            let end = (end..=text.len()).find(|&e| text.is_char_boundary(e)).unwrap_or(text.len());
            text.replace_range(i..end, &ins);
        }
        if let Err(e) = RuleSet::parse(&text, "fuzz.toml") {
            // Every error points somewhere in the file.
            prop_assert!(e.line() <= text.lines().count() + 1, "{}", e);
        }
    }

    #[test]
    fn rates_and_sizes_never_panic(s in "[0-9. ]{0,25}[a-zA-Z/]{0,6}") {
        let _ = parse_rate(&s);
        let _ = parse_size(&s);
    }
}
