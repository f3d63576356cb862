//! When guardwire dies: the watchdog hands `on_failure = "open"` workloads to the
//! kernel path within a second, `closed` ones stay cut off, and a restarted
//! guardwire takes every workload back without re-plumbing. Needs root.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

const CONFIG: &str = OPEN_AND_CLOSED;

#[test]
fn sigkill_under_iperf_fails_open_and_closed_as_configured() {
    let n = Node::up("tfo1", &["--pods", "2", "--forwarder", "none"]);
    let dir = tempfile::tempdir().unwrap();
    let peer = n.var("PEER_IP").to_string();
    let d = Daemon::start(n.var("NS_SEC"), dir.path(), CONFIG);
    n.ping(&n.pod_ns(1), &peer, 2);
    n.ping(&n.pod_ns(2), &peer, 2);

    n.iperf_server(n.var("NS_PEER"), &peer);
    let client = std::thread::spawn({
        let (pod, peer) = (n.pod_ns(1), peer.clone());
        move || {
            Command::new("ip")
                .args([
                    "netns", "exec", &pod, "timeout", "60", "iperf3", "-c", &peer, "-t", "5", "-i",
                    "0.1", "-J",
                ])
                .output()
                .unwrap()
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    d.kill9();
    // pod2 (closed) is cut off while guardwire is gone.
    let o = n.exec(
        &n.pod_ns(2),
        &["ping", "-c", "3", "-i", "0.2", "-W", "1", &peer],
    );
    assert!(!o.status.success(), "a closed workload must stay cut off");

    let out = client.join().unwrap();
    assert!(
        out.status.success(),
        "iperf3 survived the kill: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (gap_ms, retr, _) = iperf_gap(&out.stdout);
    eprintln!("SIGKILL under iperf3: worst gap {gap_ms} ms, {retr} retransmits");
    assert!(
        gap_ms <= 1000,
        "open workload cut for {gap_ms} ms (limit 1 s)"
    );
    assert!(
        n.ok(
            n.var("NS_SEC"),
            &["tc", "filter", "show", "dev", "wp-pod1", "ingress"]
        )
        .contains("mirred")
    );

    // Restart: both workloads come back inline, the kernel path goes away.
    let d = Daemon::start(n.var("NS_SEC"), dir.path(), CONFIG);
    n.ping(&n.pod_ns(2), &peer, 3);
    let s0 = d.stats();
    n.ping(&n.pod_ns(1), &peer, 5);
    let s1 = d.stats();
    assert!(port(&s1, "wp-pod1").counters.rx_frames - port(&s0, "wp-pod1").counters.rx_frames >= 5);
    assert!(
        !n.ok(n.var("NS_SEC"), &["tc", "qdisc", "show", "dev", "wp-pod1"])
            .contains("ingress")
    );
}

#[test]
fn a_worker_that_panics_hands_its_workloads_to_on_failure_and_the_rest_go_on() {
    let n = Node::up("tfo2", &["--pods", "2", "--forwarder", "none"]);
    let dir = tempfile::tempdir().unwrap();
    let peer = n.var("PEER_IP").to_string();
    // pod1 goes to worker 0, pod2 to worker 1; worker 0 panics on pod1's first frame.
    let two_workers = CONFIG.replace("workers = 1", "workers = 2");
    let d = Daemon::start_with_env(
        n.var("NS_SEC"),
        dir.path(),
        &two_workers,
        &[("GUARDWIRE_PANIC_ON_PORT", "wp-pod1")],
    );
    let _ = n.exec(&n.pod_ns(1), &["ping", "-c", "1", "-W", "1", &peer]);
    let mut health = d.client().health().unwrap();
    for _ in 0..50 {
        if !health.worker_failures.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        health = d.client().health().unwrap();
    }
    assert_eq!(health.status, "degraded");
    assert_eq!(health.workers_alive, 1);
    assert_eq!(health.worker_failures.len(), 1, "{health:?}");
    assert!(
        health.worker_failures[0].message.contains("on purpose"),
        "{health:?}"
    );
    // pod1 (open) is handed to the kernel path; pod2 still goes through guardwire.
    let redirected = || {
        n.ok(
            n.var("NS_SEC"),
            &["tc", "filter", "show", "dev", "wp-pod1", "ingress"],
        )
        .contains("mirred")
    };
    for _ in 0..50 {
        if redirected() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(redirected(), "pod1 was not handed to the kernel path");
    n.ping(&n.pod_ns(1), &peer, 3);
    let s0 = d.stats();
    n.ping(&n.pod_ns(2), &peer, 5);
    let s1 = d.stats();
    assert!(port(&s1, "wp-pod2").counters.rx_frames - port(&s0, "wp-pod2").counters.rx_frames >= 5);
}
