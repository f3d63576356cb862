//! The kernel fast path over real test-bed nodes: settled flows are forwarded
//! by the kernel, their packets and bytes still reach guardwire's flows, usage
//! and log; a rule push takes them back at once; shaped and mirror-mode flows
//! never go; failure, detach and VLAN tags behave as without it. Needs root.

mod common;

use common::*;
use guardwire::control::http::types::LogQuery;
use guardwire::control::record::FlowRecord;
use guardwire::fastpath::FastStats;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn fast(s: &guardwire::datapath::StatsSnapshot) -> FastStats {
    s.fastpath
        .clone()
        .expect("this node runs with the fast path")
}

/// Live flows of `workload` as `guardwire flows` shows them.
fn flows(n: &Node, workload: &str) -> Vec<FlowRecord> {
    let q = LogQuery {
        workload: Some(workload.to_string()),
        limit: Some(guardwire::control::http::types::MAX_PAGE),
        ..Default::default()
    };
    let page = n.client().flows(&q).expect("flows");
    page.records.into_iter().map(|e| e.record).collect()
}

/// Polls `cond` for up to `secs`.
fn wait_secs(secs: u64, mut cond: impl FnMut() -> bool, what: &str) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < Duration::from_secs(secs), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `cmd` in `ns` on a thread; join for its output.
fn spawn_in(ns: &str, cmd: &[&str]) -> std::thread::JoinHandle<Output> {
    let (ns, cmd): (String, Vec<String>) = (ns.into(), cmd.iter().map(|s| s.to_string()).collect());
    std::thread::spawn(move || {
        Command::new("ip")
            .args(["netns", "exec", &ns])
            .args(&cmd)
            .output()
            .unwrap()
    })
}

fn iperf_json(o: &Output) -> serde_json::Value {
    assert!(
        o.status.success(),
        "iperf3 failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("iperf3 JSON")
}

/// tcx links loaded on this machine (the fast path's tc programs).
fn tcx_links() -> usize {
    aya::programs::loaded_links()
        .filter_map(Result::ok)
        .filter(|l| matches!(l.link_type(), Ok(aya::programs::links::LinkType::Tcx)))
        .count()
}

/// BPF programs named `fast_tc` or `fast_sock` loaded on this machine.
fn fast_programs() -> usize {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| {
            p.name_as_str()
                .is_some_and(|n| n == "fast_tc" || n == "fast_sock")
        })
        .count()
}

/// Bytes from the initiators of `wl`'s flows over the one-second usage
/// windows kept (a minute).
fn usage(n: &Node, wl: &str) -> u64 {
    let u = n.client().usage(1, Some(wl)).unwrap();
    u.series
        .iter()
        .flat_map(|s| s.points.iter())
        .map(|p| p.counts.bytes_out)
        .sum()
}

fn monotonic_ns() -> u64 {
    guardwire::fastpath::monotonic_ns()
}

#[test]
fn an_allowed_iperf3_flow_is_offloaded_and_fully_counted() {
    let n = Node::up("tfa1", &["--pods", "2"]);
    let peer = n.var("PEER_IP").to_string();
    n.iperf_server(n.var("NS_PEER"), &peer);
    let s0 = fast(&n.stats());
    let o = n.ok(
        &n.pod_ns(1),
        &["timeout", "60", "iperf3", "-c", &peer, "-n", "1G", "-J"],
    );
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    let sent = v["end"]["sum_sent"]["bytes"].as_u64().unwrap();
    // The flow ended (FIN): the kernel gave it back with its last counts.
    wait_secs(5, || fast(&n.stats()).directions == 0, "the flow ends");
    let s1 = fast(&n.stats());
    eprintln!("fast path: {s0:?} -> {s1:?}; iperf3 sent {sent} bytes");
    assert!(s1.offered >= s0.offered + 2, "both directions offered");
    // Nearly all of the transfer went through the kernel: 1 GiB is over
    // 700,000 segments of 1448 bytes, guardwire judged the first few.
    assert!(
        s1.bytes - s0.bytes > sent * 9 / 10,
        "the kernel forwarded {} of {sent} bytes",
        s1.bytes - s0.bytes
    );
    // Usage counts bytes on the wire: each 1448-byte segment with its 66
    // bytes of headers (Ethernet, IPv4, TCP with timestamps).
    let wire = sent as f64 * 1514.0 / 1448.0;
    wait_secs(
        5,
        || {
            let out = usage(&n, "pod1");
            eprintln!("usage: pod1 sent {out} bytes, {wire:.0} expected on the wire");
            (out as f64 - wire).abs() / wire < 0.02
        },
        "usage within 2% of the bytes iperf3 sent",
    );
    // The verdict log's records of the data connection carry the same bytes
    // (an update record within a second; the end record follows the FIN's
    // timeout).
    let mut best = None;
    wait_secs(
        5,
        || {
            let q = LogQuery {
                workload: Some("pod1".into()),
                limit: Some(guardwire::control::http::types::MAX_PAGE),
                ..Default::default()
            };
            best = n
                .client()
                .log(&q)
                .unwrap()
                .records
                .into_iter()
                .map(|e| e.record)
                .filter(|r| r.dst.ends_with(":5201"))
                .max_by_key(|r| r.bytes_out);
            best.as_ref()
                .is_some_and(|r| (r.bytes_out as f64 - wire).abs() / wire < 0.02)
        },
        "a log record of the data connection with its bytes",
    );
    let end = best.unwrap();
    let segs = sent as f64 / 1448.0;
    assert!(
        (end.packets_out as f64 - segs).abs() / segs < 0.02,
        "end record {} packets, about {segs:.0} segments sent",
        end.packets_out
    );
}

/// A UDP stream with a sequence number and a send time in each datagram; the
/// receiver writes, per datagram, its sequence number and arrival time
/// (CLOCK_MONOTONIC ns, one clock for every namespace).
const UDP_SEND: &str = r#"
import socket, struct, sys, time
dst, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
seq, end = 0, time.monotonic() + secs
while time.monotonic() < end:
    s.sendto(struct.pack("!QQ", seq, time.monotonic_ns()) + b"x" * 100, (dst, port))
    seq += 1
    time.sleep(0.0005)
"#;

const UDP_RECV: &str = r#"
import socket, struct, sys, time
ip, port, secs, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((ip, port))
s.settimeout(0.2)
got, end = [], time.monotonic() + secs
while time.monotonic() < end:
    try:
        d = s.recv(2048)
    except socket.timeout:
        continue
    got.append((struct.unpack("!Q", d[:8])[0], time.monotonic_ns()))
open(out, "w").write("\n".join("%d %d" % g for g in got))
"#;

#[test]
fn a_rule_push_that_denies_an_offloaded_flow_stops_it_at_once() {
    let n = Node::up("tfa2", &["--pods", "1"]);
    let peer = n.var("PEER_IP").to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("recv.txt");
    let recv = spawn_in(
        n.var("NS_PEER"),
        &[
            "python3",
            "-c",
            UDP_RECV,
            &peer,
            "9000",
            "5",
            out.to_str().unwrap(),
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let send = spawn_in(
        &n.pod_ns(1),
        &["python3", "-c", UDP_SEND, &peer, "9000", "4"],
    );
    // Offloaded: the kernel forwards it, `guardwire flows` says so.
    wait_secs(
        3,
        || {
            flows(&n, "pod1")
                .iter()
                .any(|r| r.dst.ends_with(":9000") && r.offloaded)
        },
        "the UDP stream is offloaded",
    );
    std::thread::sleep(Duration::from_millis(500));
    let before = n.stats().drops.get("denied").copied().unwrap_or(0);
    n.client()
        .push_rules(
            r#"
default = "allow"
[[rule]]
id = "no-9000"
proto = "udp"
dst_ports = 9000
action = "deny"
"#,
            "test-rules.toml",
        )
        .expect("rules");
    let pushed = monotonic_ns();
    send.join().unwrap();
    recv.join().unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    let arrivals: Vec<u64> = text
        .lines()
        .filter_map(|l| l.split_once(' ')?.1.parse().ok())
        .collect();
    let before_push = arrivals.iter().filter(|&&t| t < pushed).count();
    // A datagram already in a queue when the push returned may still land
    // within a millisecond; none after that.
    let late: Vec<f64> = arrivals
        .iter()
        .filter(|&&t| t > pushed + 1_000_000)
        .map(|&t| (t - pushed) as f64 / 1e6)
        .collect();
    eprintln!(
        "{before_push} datagrams before the push, {} after it (ms after: {late:?})",
        arrivals.len() - before_push
    );
    assert!(before_push > 300, "the stream ran before the push");
    assert!(late.is_empty(), "datagrams passed after the deny: {late:?}");
    let s = n.stats();
    assert!(
        s.drops.get("denied").copied().unwrap_or(0) > before + 100,
        "guardwire drops the stream's packets: {:?}",
        s.drops
    );
    assert!(fast(&s).epoch >= 3, "the push moved the epoch on");
}

#[test]
fn shaped_bandwidth_limited_opted_out_and_mirrored_flows_stay_in_guardwire() {
    let n = Node::up("tfa3", &["--pods", "1"]);
    let peer = n.var("PEER_IP").to_string();
    let run = |what: &str| {
        let before = fast(&n.stats());
        n.iperf_server(n.var("NS_PEER"), &peer);
        let (bps, _) = n.iperf(&n.pod_ns(1), &peer, 2, &[]);
        let after = fast(&n.stats());
        eprintln!(
            "{what}: {:.2} Gbit/s, fast path {before:?} -> {after:?}",
            bps / 1e9
        );
        assert!(bps > 1e6, "{what}: the transfer ran");
        assert_eq!(after.offered, before.offered, "{what} was offloaded");
        assert_eq!(
            after.bytes, before.bytes,
            "{what}: the kernel forwarded bytes"
        );
    };
    let push = |text: &str| {
        n.client()
            .push_rules(text, "test-rules.toml")
            .expect("rules")
    };
    push(
        r#"
default = "allow"
[[rule]]
id = "slow"
workload = "pod1"
proto = "tcp"
dst_ports = 5201
action = "shape"
rate = "200mbit"
"#,
    );
    run("a shaped flow");
    push(
        r#"
default = "allow"
[workload.pod1]
bandwidth = "300mbit"
"#,
    );
    run("a flow of a workload with a bandwidth limit");
    push(
        r#"
default = "allow"
[workload.pod1]
fast_path = false
"#,
    );
    run("a flow of a workload whose rules turn the fast path off");
    push("default = \"allow\"\n");
    n.client()
        .set_mode("pod1", guardwire::vocab::SteeringMode::Mirror)
        .expect("mirror");
    run("a mirror-mode flow");
    // And back inline, with nothing in the way, it goes to the kernel.
    n.client()
        .set_mode("pod1", guardwire::vocab::SteeringMode::Inline)
        .expect("inline");
    let before = fast(&n.stats());
    n.iperf_server(n.var("NS_PEER"), &peer);
    n.iperf(&n.pod_ns(1), &peer, 2, &[]);
    wait_secs(
        3,
        || fast(&n.stats()).bytes > before.bytes,
        "an inline flow is offloaded",
    );
}

#[test]
fn switching_an_offloaded_workload_to_mirror_takes_its_flows_back() {
    let n = Node::up("tfa4", &["--pods", "1"]);
    let peer = n.var("PEER_IP").to_string();
    n.iperf_server(n.var("NS_PEER"), &peer);
    let client = spawn_in(
        &n.pod_ns(1),
        &["timeout", "60", "iperf3", "-c", &peer, "-t", "4", "-J"],
    );
    wait_secs(
        3,
        || fast(&n.stats()).directions >= 2,
        "the stream is offloaded",
    );
    n.client()
        .set_mode("pod1", guardwire::vocab::SteeringMode::Mirror)
        .expect("mirror");
    // At once: none of its directions stays in the kernel, and the frames
    // come through guardwire as copies.
    let s = n.stats();
    assert_eq!(fast(&s).directions, 0, "{:?}", s.fastpath);
    let rx = port(&s, "wp-pod1").counters.rx_frames;
    wait_secs(
        3,
        || port(&n.stats(), "wp-pod1").counters.rx_frames > rx + 1000,
        "the mirror sees the stream",
    );
    iperf_json(&client.join().unwrap());
}

/// Bytes the peer has received on its TCP connection from `src`.
fn peer_received(n: &Node, src: &str) -> u64 {
    let out = n.ok(n.var("NS_PEER"), &["ss", "-tinH", "dst", src]);
    out.split_whitespace()
        .filter_map(|w| w.strip_prefix("bytes_received:"))
        .filter_map(|v| v.parse::<u64>().ok())
        .sum()
}

#[test]
fn sigkill_with_offloaded_flows_fails_open_and_closed_and_leaves_no_program() {
    let n = Node::up("tfa5", &["--pods", "2", "--forwarder", "none"]);
    let dir = tempfile::tempdir().unwrap();
    let peer = n.var("PEER_IP").to_string();
    let links0 = tcx_links();
    let d = Daemon::start(n.var("NS_SEC"), dir.path(), OPEN_AND_CLOSED);
    assert_eq!(
        tcx_links(),
        links0 + 4,
        "a tc program on each of the four ports"
    );
    n.ok(
        n.var("NS_PEER"),
        &["iperf3", "-s", "-1", "-D", "-B", &peer, "-p", "5201"],
    );
    n.ok(
        n.var("NS_PEER"),
        &["iperf3", "-s", "-1", "-D", "-B", &peer, "-p", "5202"],
    );
    std::thread::sleep(Duration::from_millis(300));
    let open = spawn_in(
        &n.pod_ns(1),
        &[
            "timeout", "30", "iperf3", "-c", &peer, "-p", "5201", "-t", "5", "-i", "0.1", "-J",
        ],
    );
    let _closed = spawn_in(
        &n.pod_ns(2),
        &[
            "timeout", "8", "iperf3", "-c", &peer, "-p", "5202", "-t", "5", "-J",
        ],
    );
    wait_secs(
        3,
        || d.stats().fastpath.is_some_and(|f| f.directions >= 4),
        "both streams are offloaded",
    );
    std::thread::sleep(Duration::from_millis(500));
    d.kill9();
    // The kernel took the programs off with the process.
    wait_secs(
        2,
        || tcx_links() == links0,
        "the tc programs go with guardwire",
    );
    wait_secs(
        2,
        || fast_programs() == 0,
        "no fast path program left loaded",
    );
    // pod2 (closed): its offloaded stream is cut off too.
    std::thread::sleep(Duration::from_millis(300));
    let pod2 = n.pod_ip(2);
    let a = peer_received(&n, &pod2);
    std::thread::sleep(Duration::from_millis(1000));
    let b = peer_received(&n, &pod2);
    eprintln!("closed workload after the kill: {} bytes in 1 s", b - a);
    assert!(a > 0, "the closed workload's stream ran before the kill");
    assert!(
        b - a < 100_000,
        "a closed workload's flow still runs: {} bytes",
        b - a
    );
    // pod1 (open): the watchdog's kernel path carries its stream on.
    let out = open.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (gap_ms, _, _) = iperf_gap(&out.stdout);
    eprintln!("open workload: worst gap {gap_ms} ms");
    assert!(gap_ms <= 1000, "open workload cut for {gap_ms} ms");
    // A restarted guardwire starts from a clean kernel side: its own four
    // programs, none left over, and flows offloaded again.
    let d = Daemon::start(n.var("NS_SEC"), dir.path(), OPEN_AND_CLOSED);
    assert_eq!(tcx_links(), links0 + 4, "only the new guardwire's programs");
    n.ok(
        n.var("NS_PEER"),
        &["iperf3", "-s", "-1", "-D", "-B", &peer, "-p", "5201"],
    );
    std::thread::sleep(Duration::from_millis(300));
    n.ok(
        &n.pod_ns(2),
        &[
            "timeout", "30", "iperf3", "-c", &peer, "-p", "5201", "-t", "1",
        ],
    );
    wait_secs(
        3,
        || d.stats().fastpath.is_some_and(|f| f.packets > 1000),
        "flows offloaded after the restart",
    );
}

#[test]
fn east_west_between_two_pods_is_offloaded_and_counted_for_both() {
    let n = Node::up("tfa6", &["--pods", "2"]);
    let ip2 = n.pod_ip(2);
    n.iperf_server(&n.pod_ns(2), &ip2);
    let before = fast(&n.stats());
    let o = n.ok(
        &n.pod_ns(1),
        &["timeout", "60", "iperf3", "-c", &ip2, "-n", "500M", "-J"],
    );
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    let sent = v["end"]["sum_sent"]["bytes"].as_u64().unwrap();
    wait_secs(5, || fast(&n.stats()).directions == 0, "the flow ends");
    let after = fast(&n.stats());
    assert!(
        after.bytes - before.bytes > sent * 9 / 10,
        "the kernel forwarded {} of {sent} bytes between the pods",
        after.bytes - before.bytes
    );
    // Both workloads' usage has the transfer (counted from the initiator,
    // pod1, to the responder, pod2).
    let wire = sent as f64 * 1514.0 / 1448.0;
    wait_secs(
        5,
        || {
            let (a, b) = (usage(&n, "pod1"), usage(&n, "pod2"));
            eprintln!("usage: pod1 {a}, pod2 {b}, {wire:.0} expected");
            (a as f64 - wire).abs() / wire < 0.02 && (b as f64 - wire).abs() / wire < 0.02
        },
        "both pods' usage within 2% of the transfer",
    );
}

#[test]
fn detach_of_an_offloaded_pod_leaves_no_program_map_entry_or_qdisc() {
    let n = Node::up("tfa7", &["--pods", "2", "--live"]);
    let sock = n.var("GW_SOCK").to_string();
    let pod = n.pod_ns(1);
    let host_before = snapshot(&n, n.var("NS_HOST"), false);
    let links0 = tcx_links();
    let gw = |args: &[&str]| {
        let o = Command::new(guardwire_bin())
            .args(args)
            .args(["--socket", &sock])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    gw(&["attach", "pod", &pod, "--name", "pod1"]);
    assert_eq!(tcx_links(), links0 + 2, "a tc program on both of its ports");
    let peer = n.var("PEER_IP").to_string();
    n.iperf_server(n.var("NS_PEER"), &peer);
    let client = spawn_in(
        &pod,
        &["timeout", "60", "iperf3", "-c", &peer, "-t", "4", "-J"],
    );
    wait_secs(
        3,
        || fast(&n.stats()).directions >= 2,
        "the stream is offloaded",
    );
    gw(&["detach", "pod1"]);
    assert_eq!(fast(&n.stats()).directions, 0, "no entry left in the map");
    assert_eq!(tcx_links(), links0, "no tc program left on its devices");
    iperf_json(&client.join().unwrap());
    same(
        snapshot(&n, n.var("NS_HOST"), false),
        &host_before,
        "host ns restored (no qdisc either)",
    );
}

#[test]
fn a_vlan_tagged_flow_is_offloaded_with_its_tag() {
    let n = Node::up("tfa8", &["--pods", "2"]);
    // Both MACs learned, so pod1's frames to pod2 go east-west.
    n.ping(&n.pod_ns(1), &n.pod_ip(2), 2);
    let tx = raw_port(&n.pod_ns(1), "eth0");
    let rx = raw_port(&n.pod_ns(2), "eth0");
    let (src, dst) = (
        mac_of(&n, &n.pod_ns(1), "eth0"),
        mac_of(&n, &n.pod_ns(2), "eth0"),
    );
    let ip = |s: String| -> [u8; 4] { s.parse::<std::net::Ipv4Addr>().unwrap().octets() };
    let marker = b"guardwire-fast-vlan";
    let mut f = Vec::new();
    etherparse::PacketBuilder::ethernet2(src, dst)
        .single_vlan(etherparse::VlanId::try_new(100).unwrap())
        .ipv4(ip(n.pod_ip(1)), ip(n.pod_ip(2)), 64)
        .udp(5000, 7777)
        .write(&mut f, marker)
        .unwrap();
    let before = n.stats();
    let collector = std::thread::spawn(move || {
        collect(&rx, Duration::from_millis(1500), |d| {
            d.windows(marker.len()).any(|w| w == marker)
        })
    });
    // The first frames settle the flow in guardwire; the rest the kernel takes.
    assert_eq!(send_raw(&tx, &vec![f.clone(); 5]), 5);
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..5 {
        assert_eq!(send_raw(&tx, &vec![f.clone(); 10]), 10);
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = collector.join().unwrap();
    let after = n.stats();
    let judged =
        port(&after, "wp-pod1").counters.rx_vlan - port(&before, "wp-pod1").counters.rx_vlan;
    let kernel = fast(&after).packets - fast(&before).packets;
    eprintln!(
        "{} frames arrived; guardwire judged {judged}, the kernel forwarded {kernel}",
        got.len()
    );
    assert_eq!(got.len(), 55, "every tagged frame arrived in pod2");
    for (tag, data) in &got {
        let tag = tag.expect("the frame arrives tagged");
        assert_eq!((tag.tpid, tag.tci & 0xfff), (0x8100, 100));
        assert_eq!(&data[12..14], &[0x08, 0x00]);
    }
    assert!(
        kernel >= 40,
        "the kernel forwarded the later frames ({kernel})"
    );
    assert_eq!(judged + kernel, 55, "each frame took one path");
}
