//! The inspection pipeline over a real test-bed node: rules pushed to the running
//! daemon, real clients and servers (curl, openssl s_server, iperf3), verdicts
//! read back from the verdict log. Needs root.

mod common;

use common::*;
use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, EtherType, PacketBuilder};
use guardwire::control::http::client::Client;
use guardwire::control::http::types::LogQuery;
use guardwire::control::record::{Filter, FlowRecord};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server running in a namespace, killed when dropped.
struct Bg(Child);

impl Bg {
    fn start(ns: &str, cmd: &[&str]) -> Bg {
        let c = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        Bg(c)
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A tiny HTTP server bound to `ip:port` inside `ns`: answers every request
/// with 200 and a short body, one thread per connection; stops when dropped.
struct Web {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Web {
    fn start(ns: &str, ip: &str, port: u16) -> Web {
        let addr = format!("{ip}:{port}");
        let l = guardwire::steer::netns::run_in(ns, move || std::net::TcpListener::bind(addr))
            .expect("bind in namespace");
        l.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        std::thread::spawn(move || {
                            use std::io::{Read, Write};
                            let _ = c.set_nonblocking(false);
                            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                            let mut buf = [0u8; 4096];
                            let _ = c.read(&mut buf);
                            let _ = c.write_all(
                                b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
                            );
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Web { stop }
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn push(n: &Node, text: &str) {
    n.client()
        .push_rules(text, "test-rules.toml")
        .unwrap_or_else(|e| panic!("rules refused: {e}"));
}

fn log_records(n: &Node, f: Filter) -> Vec<FlowRecord> {
    let q = LogQuery {
        workload: f.workload,
        action: f.action,
        app: f.app,
        since: f.since.map(|s| s.to_string()),
        event: f.event,
        q: f.q,
        limit: Some(guardwire::control::http::types::MAX_PAGE),
        before: None,
    };
    let page = n.client().log(&q).expect("log");
    page.records.into_iter().map(|e| e.record).collect()
}

/// Waits (up to 5 s: the log is written by a once-a-second sweep) for a record.
fn wait_record(n: &Node, f: Filter, what: &str, ok: impl Fn(&FlowRecord) -> bool) -> FlowRecord {
    let t = Instant::now();
    loop {
        if let Some(r) = log_records(n, f.clone()).into_iter().find(|r| ok(r)) {
            return r;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "no {what} in the verdict log: {:#?}",
            log_records(n, Filter::default())
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Is a TCP port listening in `ns`?
fn listening(n: &Node, ns: &str, port: u16) -> bool {
    let out = n.exec(ns, &["ss", "-ltn"]);
    String::from_utf8_lossy(&out.stdout).contains(&format!(":{port} "))
}

fn curl(n: &Node, ns: &str, args: &[&str]) -> bool {
    let mut cmd = vec!["curl", "-s", "-o", "/dev/null", "--max-time", "3"];
    cmd.extend_from_slice(args);
    n.exec(ns, &cmd).status.success()
}

#[test]
fn deny_and_reject_rules_block_and_are_logged() {
    let n = Node::up("tin1", &["--pods", "2"]);
    let peer = n.var("PEER_IP").to_string();
    let ns_peer = n.var("NS_PEER").to_string();
    let _web = Web::start(&ns_peer, &peer, 8080);
    let _web2 = Web::start(&ns_peer, &peer, 8081);
    let url = format!("http://{peer}:8080/");
    let url2 = format!("http://{peer}:8081/");
    assert!(
        curl(&n, &n.pod_ns(1), &[&url]),
        "pod1 reaches the web before any rule"
    );

    push(
        &n,
        &format!(
            r#"
default = "allow"
[[rule]]
id = "no-web"
workload = "pod1"
direction = "egress"
dst = "{peer}"
proto = "tcp"
dst_ports = 8080
action = "deny"

[[rule]]
id = "refuse-8081"
proto = "tcp"
dst_ports = 8081
action = "reject"
"#
        ),
    );
    let before = n.stats();
    assert!(
        !curl(&n, &n.pod_ns(1), &[&url]),
        "the deny rule let pod1 through"
    );
    // pod2 is not named by the rule.
    assert!(
        curl(&n, &n.pod_ns(2), &[&url]),
        "the deny rule blocked pod2 too"
    );
    // Reject answers with a RST: curl fails at once with "connection refused" (7).
    let t = Instant::now();
    let o = n.exec(&n.pod_ns(1), &["curl", "-s", "--max-time", "3", &url2]);
    assert_eq!(
        o.status.code(),
        Some(7),
        "reject: curl should see a refusal"
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "reject took {:?}",
        t.elapsed()
    );
    let after = n.stats();
    assert!(
        after.drops["denied"] > before.drops["denied"],
        "{:?}",
        after.drops
    );
    assert!(
        after.drops["rejected"] > before.drops["rejected"],
        "{:?}",
        after.drops
    );

    let deny = wait_record(
        &n,
        Filter {
            workload: Some("pod1".into()),
            action: Some("deny".into()),
            ..Default::default()
        },
        "deny of pod1 -> :8080",
        |r| r.dst.ends_with(":8080") && r.rule == "no-web",
    );
    assert_eq!(deny.verdict(), "deny");
    assert_eq!(deny.direction, "egress");
    assert!(deny.packets_out >= 1 && deny.packets_in == 0, "{deny:?}");
    assert!(
        deny.updated_at >= deny.first_seen && deny.first_seen > 0,
        "{deny:?}"
    );
    let allowed = wait_record(
        &n,
        Filter {
            workload: Some("pod2".into()),
            ..Default::default()
        },
        "allow of pod2 -> :8080",
        |r| r.dst.ends_with(":8080"),
    );
    assert_eq!(
        (allowed.action.as_str(), allowed.rule.as_str()),
        ("allow", "default")
    );
    assert!(allowed.packets_in > 0, "{allowed:?}");

    // Mirror mode records the same verdict as "would deny" and blocks nothing.
    n.client()
        .set_mode("pod1", guardwire::vocab::SteeringMode::Mirror)
        .expect("mode mirror");
    assert!(
        curl(&n, &n.pod_ns(1), &[&url]),
        "mirror mode must not block"
    );
    wait_record(
        &n,
        Filter {
            workload: Some("pod1".into()),
            action: Some("would deny".into()),
            ..Default::default()
        },
        "would-deny record",
        |r| r.dst.ends_with(":8080") && !r.enforced,
    );
    n.client()
        .set_mode("pod1", guardwire::vocab::SteeringMode::Inline)
        .expect("mode inline");

    // A bad rule file is refused with its line, and the running rules stay.
    let bad = "default = \"allow\"\n[[rule]]\nproto = \"tcp\"\ndst_ports = \"90-80\"\naction = \"deny\"\n";
    let e = n
        .client()
        .push_rules(bad, "bad.toml")
        .expect_err("a bad rule file was accepted")
        .to_string();
    assert!(
        e.contains("bad.toml:4"),
        "error does not name the line: {e}"
    );
    assert!(
        !curl(&n, &n.pod_ns(1), &[&url]),
        "the old deny rule no longer holds"
    );

    // Removing the rule lets the flow through again (existing flows are re-judged).
    push(&n, "default = \"allow\"\n");
    assert!(
        curl(&n, &n.pod_ns(1), &[&url]),
        "allowed again after the rule went"
    );
}

#[test]
fn rule_push_under_iperf_loses_no_frame() {
    let n = Node::up("tin2", &["--pods", "1"]);
    let peer = n.var("PEER_IP").to_string();
    n.iperf_server(n.var("NS_PEER"), &peer);
    let before = n.stats();
    let pod = n.pod_ns(1);
    let sock = n.var("GW_SOCK").to_string();
    let pusher = std::thread::spawn(move || {
        // Alternate two sets of a thousand rules, none of which matches iperf3.
        let mut pushed = 0;
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(3500) {
            let mut text = String::from("default = \"allow\"\n");
            for i in 0..1000 {
                text.push_str(&format!(
                    "[[rule]]\nproto = \"tcp\"\ndst = \"10.99.{}.{}\"\ndst_ports = {}\naction = \"deny\"\n",
                    i / 250,
                    i % 250,
                    1000 + (i + pushed) % 3000
                ));
            }
            Client::unix(&sock)
                .push_rules(&text, "push.toml")
                .expect("push under load");
            pushed += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        pushed
    });
    let (bps, _) = n.iperf(&pod, &peer, 4, &[]);
    let pushed = pusher.join().expect("pusher");
    assert!(pushed >= 10, "only {pushed} pushes");
    assert!(bps > 100e6, "iperf3 under pushes: {bps} bit/s");
    let after = n.stats();
    let d = |p: &str, tx: bool| {
        let (a, b) = (&port(&before, p).counters, &port(&after, p).counters);
        if tx {
            b.tx_frames - a.tx_frames
        } else {
            b.rx_frames - a.rx_frames
        }
    };
    assert_eq!(
        d("wp-pod1", false),
        d("up-pod1", true),
        "pod -> peer frames lost"
    );
    assert_eq!(
        d("up-pod1", false),
        d("wp-pod1", true),
        "peer -> pod frames lost"
    );
    let drops: u64 = after.drops.values().sum::<u64>() - before.drops.values().sum::<u64>();
    assert_eq!(drops, 0, "drops during pushes: {:?}", after.drops);
}

#[test]
fn sni_rule_blocks_one_site_and_not_another() {
    let n = Node::up("tin3", &["--pods", "1"]);
    let peer = n.var("PEER_IP").to_string();
    let ns_peer = n.var("NS_PEER").to_string();
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = (dir.path().join("k.pem"), dir.path().join("c.pem"));
    let st = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(st.success());
    // openssl s_server serves one connection at a time, and a blocked client
    // leaves its connection hanging: one server per site.
    let tls = |port: &str| {
        Bg::start(
            &ns_peer,
            &[
                "openssl",
                "s_server",
                "-quiet",
                "-www",
                "-accept",
                port,
                "-cert",
                cert.to_str().unwrap(),
                "-key",
                key.to_str().unwrap(),
            ],
        )
    };
    let (_allowed, _blocked) = (tls("443"), tls("8443"));
    wait_for(
        || listening(&n, &ns_peer, 443) && listening(&n, &ns_peer, 8443),
        "TLS servers",
    );
    push(
        &n,
        r#"
default = "allow"
[[rule]]
id = "no-blocked-site"
app = "blocked-site"
action = "deny"
"#,
    );
    let site = |name: &str, port: u16| {
        let resolve = format!("{name}:{port}:{peer}");
        let url = format!("https://{name}:{port}/");
        curl(&n, &n.pod_ns(1), &["-k", "--resolve", &resolve, &url])
    };
    assert!(
        site("www.allowed.example", 443),
        "the allowed site was blocked"
    );
    assert!(
        !site("www.blocked.example", 8443),
        "the blocked site got through"
    );
    assert!(
        site("www.allowed.example", 443),
        "the allowed site was blocked afterwards"
    );
    let r = wait_record(
        &n,
        Filter {
            app: Some("blocked-site".into()),
            ..Default::default()
        },
        "blocked-site record",
        |r| r.action == "deny",
    );
    assert_eq!(r.how.as_deref(), Some("sni"), "{r:?}");
    assert_eq!(r.host.as_deref(), Some("www.blocked.example"));
    assert_eq!(r.rule, "no-blocked-site");
    let ok = wait_record(
        &n,
        Filter {
            app: Some("allowed-site".into()),
            ..Default::default()
        },
        "allowed-site record",
        |_| true,
    );
    assert_eq!(ok.action, "allow", "{ok:?}");
}

/// One shaped transfer: iperf3 for 5 s (its first second omitted) against the
/// shaped rate.
#[test]
fn shaping_slows_tcp_to_its_rate_without_resets() {
    let n = Node::up("tin4", &["--pods", "1"]);
    let peer = n.var("PEER_IP").to_string();
    push(
        &n,
        r#"
default = "allow"
[[rule]]
id = "shape-bulk"
workload = "pod1"
proto = "tcp"
dst_ports = 5201
action = "shape"
rate = "40mbit"
"#,
    );
    n.iperf_server(n.var("NS_PEER"), &peer);
    let before = n.stats();
    let (bps, _) = n.iperf(&n.pod_ns(1), &peer, 5, &["-O", "1"]);
    let after = n.stats();
    let rate = 40e6;
    assert!(
        (bps - rate).abs() <= rate * 0.10,
        "shaped TCP ran at {:.1} Mbit/s, not 40 +- 10%",
        bps / 1e6
    );
    // Shaping delays rather than drops: TCP slows down, it is not cut off.
    let overflow = after.drops["shape_overflow"] - before.drops["shape_overflow"];
    let sent =
        port(&after, "up-pod1").counters.tx_frames - port(&before, "up-pod1").counters.tx_frames;
    assert!(
        overflow * 20 <= sent,
        "{overflow} shaper drops of {sent} frames"
    );
    // iperf3 finished its run (n.iperf checks its exit status): the flow was
    // slowed, not reset. Its verdict names the shaping rule.
    let recs = log_records(
        &n,
        Filter {
            workload: Some("pod1".into()),
            ..Default::default()
        },
    );
    assert!(recs.iter().any(|r| r.rule == "shape-bulk"), "{recs:#?}");
}

#[test]
fn auto_bandwidth_raises_and_lowers_the_limit() {
    let n = Node::up("tin5", &["--pods", "1"]);
    let peer = n.var("PEER_IP").to_string();
    push(
        &n,
        r#"
default = "allow"
[workload.pod1]
bandwidth = "16mbit"
[workload.pod1.auto_bandwidth]
min = "8mbit"
max = "64mbit"
raise_after = 2
lower_after = 2
factor = 2.0
"#,
    );
    let client = n.client();
    let usage = || client.usage(1, Some("pod1")).expect("usage");
    let limit = || {
        usage()
            .bandwidth
            .iter()
            .find(|b| b.workload == "pod1")
            .map_or(0, |b| b.bytes_per_sec)
    };
    assert_eq!(limit(), 2_000_000, "start at 16 Mbit/s");
    n.iperf_server(n.var("NS_PEER"), &peer);
    let (bps, _) = n.iperf(&n.pod_ns(1), &peer, 6, &[]);
    let raised = limit();
    assert!(
        raised > 2_000_000,
        "limit not raised under iperf3 ({:.1} Mbit/s): {:?}",
        bps / 1e6,
        usage()
    );
    assert!(
        bps > 16e6 * 1.2,
        "throughput did not follow the raised limit: {bps}"
    );
    // Idle: the limit comes down again.
    let t = Instant::now();
    while limit() >= raised && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(300));
    }
    let u = usage();
    let lowered = limit();
    assert!(lowered < raised, "limit not lowered when idle: {u:?}");
    let changes = &u.bandwidth_changes;
    assert!(changes.iter().any(|c| c.reason == "saturated"), "{u:?}");
    assert!(changes.iter().any(|c| c.reason == "idle"), "{u:?}");
}

#[test]
fn spoofed_frames_are_dropped_by_reason() {
    let n = Node::up("tin6", &["--pods", "2"]);
    let pod1 = n.pod_ns(1);
    n.ping(&pod1, n.var("PEER_IP"), 2);
    let mac = mac_of(&n, &pod1, "eth0");
    let ip1: std::net::Ipv4Addr = n.pod_ip(1).split('/').next().unwrap().parse().unwrap();
    let ip2: std::net::Ipv4Addr = n.pod_ip(2).split('/').next().unwrap().parse().unwrap();
    let bcast = [0xff; 6];
    let udp = |src_mac: [u8; 6], src: std::net::Ipv4Addr| {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(src_mac, bcast)
            .ipv4(src.octets(), [10, 244, 0, 1], 64)
            .udp(9999, 9999)
            .write(&mut v, b"spoof")
            .unwrap();
        v
    };
    let arp = {
        let a = ArpPacket::new(
            ArpHardwareId::ETHERNET,
            EtherType::IPV4,
            ArpOperation::REPLY,
            &mac,
            &ip2.octets(),
            &bcast,
            &[10, 244, 0, 1],
        )
        .unwrap();
        let mut v = Vec::new();
        PacketBuilder::ethernet2(mac, bcast)
            .arp(a)
            .write(&mut v)
            .unwrap();
        v
    };
    let na = {
        let mut body = vec![0u8; 16];
        body[..16].copy_from_slice(&"fd00::99".parse::<std::net::Ipv6Addr>().unwrap().octets());
        body.extend_from_slice(&[2, 1]);
        body.extend_from_slice(&mac);
        let mut v = Vec::new();
        let ll = guardwire::pipeline::spoof::eui64(&mac).octets();
        PacketBuilder::ethernet2(mac, [0x33, 0x33, 0, 0, 0, 1])
            .ipv6(ll, [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 255)
            .icmpv6(etherparse::Icmpv6Type::NeighborAdvertisement(
                etherparse::icmpv6::NeighborAdvertisementHeader {
                    router: false,
                    solicited: false,
                    r#override: true,
                },
            ))
            .write(&mut v, &body)
            .unwrap();
        v
    };
    let before = n.stats();
    let p = raw_port(&pod1, "eth0");
    let frames = vec![
        udp([2, 0x11, 0x22, 0x33, 0x44, 0x55], ip1),
        udp(mac, std::net::Ipv4Addr::new(10, 244, 0, 250)),
        arp,
        na,
    ];
    assert_eq!(send_raw(&p, &frames), frames.len());
    let reasons = ["spoof_mac", "spoof_ip", "spoof_arp", "spoof_nd"];
    wait_for(
        || {
            let s = n.stats();
            reasons.iter().all(|r| s.drops[*r] > before.drops[*r])
        },
        "spoof drops",
    );
    // The workload's own traffic still flows.
    n.ping(&pod1, n.var("PEER_IP"), 3);
    n.ping(&pod1, &n.pod_ip(2), 3);
}
