//! Many workloads: 32 CNI pods attached and detached 10 times leave no port,
//! qdisc, file descriptor or memory behind; attach/detach times are printed
//! (p50, p99). Needs root.

mod common;

use common::*;
use guardwire::control::http::client::Client;
use guardwire::control::http::types::{AttachOptions, AttachPod};
use std::time::Instant;

fn fds(pid: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .map(|v| v.trim().trim_end_matches(" kB").parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn thirty_two_pods_attached_and_detached_ten_times_leave_nothing() {
    const PODS: usize = 32;
    const ROUNDS: usize = 10;
    let n = Node::up(
        "tsc1",
        // A small verdict-log ring: the ring fills up to its bound by design,
        // which would hide a leak in the RSS check below.
        &[
            "--pods",
            &PODS.to_string(),
            "--live",
            "--workers",
            "2",
            "--log-ring",
            "64",
        ],
    );
    let sock = n.var("GW_SOCK").to_string();
    let pid = n.var("GW_PID").to_string();
    let sec_links = || n.ok(n.var("NS_SEC"), &["ip", "-o", "link"]).lines().count();
    let links0 = sec_links();
    let fds0 = fds(&pid);
    let client = Client::unix(&sock);
    let (mut att, mut det) = (Vec::new(), Vec::new());
    let mut fds1 = 0;
    let mut rss1 = 0;
    for round in 0..ROUNDS {
        for i in 1..=PODS {
            let t = Instant::now();
            client
                .attach_pod(&AttachPod {
                    netns: n.pod_ns(i),
                    ifname: "eth0".into(),
                    options: AttachOptions {
                        name: Some(format!("p{i}")),
                        ..Default::default()
                    },
                })
                .unwrap_or_else(|e| panic!("round {round}: attach p{i}: {e}"));
            att.push(t.elapsed().as_secs_f64() * 1e3);
        }
        if round == 0 {
            // Traffic with every pod attached.
            for i in [1, PODS / 2, PODS] {
                n.ping(&n.pod_ns(i), n.var("PEER_IP"), 2);
            }
            let list = client.workloads().unwrap();
            assert_eq!(list.len(), PODS);
        }
        for i in 1..=PODS {
            let t = Instant::now();
            client
                .detach(&format!("p{i}"))
                .unwrap_or_else(|e| panic!("round {round}: detach p{i}: {e}"));
            det.push(t.elapsed().as_secs_f64() * 1e3);
        }
        if round == 0 {
            // The last control connection may still be closing: give it a moment.
            wait_for(|| fds(&pid) == fds0, "the fd count back at its start");
            fds1 = fds(&pid);
            rss1 = rss_kib(&pid);
        }
        assert_eq!(sec_links(), links0, "round {round}: ports left in sec ns");
    }
    let qdiscs = n.ok(n.var("NS_HOST"), &["tc", "qdisc"]);
    assert!(!qdiscs.contains("ingress"), "{qdiscs}");
    assert!(
        !n.ok(n.var("NS_HOST"), &["ip", "-o", "link"])
            .contains("gwt"),
        "temporary veths left"
    );
    wait_for(|| fds(&pid) <= fds0, "the fd count back at its start");
    let (fds2, rss2) = (fds(&pid), rss_kib(&pid));
    eprintln!(
        "{PODS} pods x {ROUNDS}: attach p50 {:.1} ms p99 {:.1} ms; detach p50 {:.1} ms p99 {:.1} ms; fds {fds1} -> {fds2}; RSS {rss1} -> {rss2} KiB",
        pct(&mut att, 0.5),
        pct(&mut att, 0.99),
        pct(&mut det, 0.5),
        pct(&mut det, 0.99)
    );
    assert_eq!(fds1, fds0, "file descriptors left after the first round");
    assert_eq!(fds2, fds0, "file descriptors leaked");
    assert!(
        rss2 < rss1 + 8 * 1024,
        "RSS grew from {rss1} to {rss2} KiB over {ROUNDS} rounds"
    );
    for i in 1..=PODS {
        n.ping(&n.pod_ns(i), n.var("PEER_IP"), 1);
    }
}
