//! Steering modes on a real node: `off` hands the workload to a tc redirect and
//! guardwire receives nothing, `mirror` lets the kernel forward while guardwire
//! sees copies, `inline` puts guardwire back in the path; a TCP stream survives
//! 20 switches; modes survive a restart. Needs root.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn set_mode(sock: &str, wl: &str, mode: &str) {
    let o = Command::new(guardwire_bin())
        .args(["mode", wl, mode, "--socket", sock])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "mode {wl} {mode}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn tc_show(n: &Node, what: &str, dev: &str) -> String {
    let mut args = vec!["tc", what, "show", "dev", dev];
    if what == "filter" {
        args.push("ingress");
    }
    n.ok(n.var("NS_SEC"), &args)
}

#[test]
fn each_mode_does_what_it_says() {
    let n = Node::up("tst1", &["--pods", "1"]);
    let sock = n.var("GW_SOCK").to_string();
    let peer = n.var("PEER_IP").to_string();
    let pod = n.pod_ns(1);
    let delta = |a: &guardwire::datapath::StatsSnapshot,
                 b: &guardwire::datapath::StatsSnapshot,
                 p: &str| {
        let (x, y) = (&port(a, p).counters, &port(b, p).counters);
        (
            y.rx_frames - x.rx_frames,
            y.rx_mirrored - x.rx_mirrored,
            y.tx_frames - x.tx_frames,
        )
    };

    set_mode(&sock, "pod1", "off");
    assert!(
        tc_show(&n, "filter", "wp-pod1").contains("mirred"),
        "redirect installed"
    );
    let s0 = n.stats();
    n.ping(&pod, &peer, 30);
    let s1 = n.stats();
    assert_eq!(
        delta(&s0, &s1, "wp-pod1").0,
        0,
        "off: guardwire received nothing"
    );
    assert_eq!(
        delta(&s0, &s1, "up-pod1").0,
        0,
        "off: guardwire received nothing"
    );

    set_mode(&sock, "pod1", "mirror");
    let s2 = n.stats();
    n.ping(&pod, &peer, 30);
    let s3 = n.stats();
    let (rx, mirrored, _) = delta(&s2, &s3, "wp-pod1");
    assert!(
        rx >= 30 && mirrored >= 30,
        "mirror: copies seen ({rx} rx, {mirrored} mirrored)"
    );
    assert_eq!(
        delta(&s2, &s3, "up-pod1").2,
        0,
        "mirror: guardwire forwarded nothing"
    );

    set_mode(&sock, "pod1", "inline");
    assert!(
        !tc_show(&n, "qdisc", "wp-pod1").contains("ingress"),
        "redirect removed"
    );
    assert!(
        !tc_show(&n, "qdisc", "up-pod1").contains("ingress"),
        "redirect removed"
    );
    let s4 = n.stats();
    n.ping(&pod, &peer, 30);
    let s5 = n.stats();
    assert!(
        delta(&s4, &s5, "up-pod1").2 >= 30,
        "inline: guardwire forwards"
    );

    let list = n.client().workloads().unwrap();
    assert_eq!(list[0].mode.name(), "inline");
    let bad = Command::new(guardwire_bin())
        .args(["mode", "nosuch", "off", "--socket", &sock])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no workload named \"nosuch\""));
}

#[test]
fn tcp_stream_survives_twenty_mode_switches() {
    let n = Node::up("tst2", &["--pods", "1"]);
    let sock = n.var("GW_SOCK").to_string();
    let peer = n.var("PEER_IP").to_string();
    n.iperf_server(n.var("NS_PEER"), &peer);
    let pod = n.pod_ns(1);
    let client = std::thread::spawn({
        let pod = pod.clone();
        let peer = peer.clone();
        move || {
            Command::new("ip")
                .args([
                    "netns", "exec", &pod, "timeout", "60", "iperf3", "-c", &peer, "-t", "10",
                    "-i", "0.1", "-J",
                ])
                .output()
                .unwrap()
        }
    });
    std::thread::sleep(Duration::from_millis(800));
    let modes = ["off", "mirror", "inline", "mirror", "off", "inline"];
    let t = Instant::now();
    for i in 0..20 {
        set_mode(&sock, "pod1", modes[i % modes.len()]);
        std::thread::sleep(Duration::from_millis(350));
    }
    let switching = t.elapsed();
    let out = client.join().unwrap();
    assert!(
        out.status.success(),
        "iperf3 failed (reset?): {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (gap_ms, retr, gbps) = iperf_gap(&out.stdout);
    eprintln!(
        "20 switches in {switching:?}: {gbps:.2} Gbit/s, {retr} retransmits, worst gap {gap_ms} ms"
    );
    assert!(gap_ms <= 200, "the stream stalled for {gap_ms} ms");
}

#[test]
fn modes_survive_a_restart() {
    let n = Node::up("tst3", &["--pods", "1", "--forwarder", "none"]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = r#"
[node]
name = "restart"
control_socket = "{socket}"
state_dir = "{state}"
[datapath]
workers = 1
[[workload]]
name = "pod1"
kind = "pod"
workload_port = "wp-pod1"
uplink_port = "up-pod1"
"#;
    let d = Daemon::start(n.var("NS_SEC"), dir.path(), cfg);
    d.client().set_mode("pod1", "off".parse().unwrap()).unwrap();
    drop(d);
    // guardwire is gone; the workload was in `off`, so the kernel still carries it.
    n.ping(&n.pod_ns(1), n.var("PEER_IP"), 5);
    let d = Daemon::start(n.var("NS_SEC"), dir.path(), cfg);
    let list = d.client().workloads().unwrap();
    assert_eq!(
        list[0].mode.name(),
        "off",
        "mode kept across the restart: {list:?}"
    );
    let s0 = d.stats();
    n.ping(&n.pod_ns(1), n.var("PEER_IP"), 10);
    let s1 = d.stats();
    assert_eq!(
        port(&s1, "wp-pod1").counters.rx_frames,
        port(&s0, "wp-pod1").counters.rx_frames
    );
}
