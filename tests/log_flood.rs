//! One workload's flood of short flows must not wipe the others' verdict
//! history: its records are held to its budget (`log_records_per_sec`,
//! `log_burst`; the defaults here), the rest counted in "suppressed" summary
//! records, and the full ring gives up the flooder's records, not the others'
//! (root; real namespaces and traffic).

mod common;

use common::*;
use guardwire::control::http::types::LogQuery;
use guardwire::control::record::FlowRecord;
use std::path::Path;
use std::time::{Duration, Instant};

/// The defaults of `[inspect]` this node runs with.
const RATE: u64 = 200;
const BURST: u64 = 1000;

/// Small enough that the flood's admitted records alone overrun it.
const RING: usize = 500;

/// The verdict log file's records (the flood stays far from a rotation).
fn file_records(state: &str) -> Vec<FlowRecord> {
    let path = Path::new(state).join("log/verdicts.jsonl");
    std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn ring_records(n: &Node, workload: &str, event: Option<&str>) -> Vec<FlowRecord> {
    n.client()
        .log(&LogQuery {
            workload: Some(workload.into()),
            event: event.map(str::to_string),
            limit: Some(500),
            ..Default::default()
        })
        .expect("GET /api/v1/log")
        .records
        .into_iter()
        .map(|e| e.record)
        .collect()
}

fn poll(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_flood_of_short_flows_is_held_to_its_budget_and_spares_the_other_workloads_history() {
    require_root();
    let ring = RING.to_string();
    let n = Node::up("tlf1", &["--pods", "2", "--log-ring", &ring]);
    let peer = n.var("PEER_IP").to_string();
    let state = n.var("STATE").to_string();

    // pod2 makes a few flows and sees them logged.
    n.ping(&n.pod_ns(2), &peer, 3);
    let udp = format!("for p in 1 2 3; do echo x > /dev/udp/{peer}/700$p; done");
    n.ok(&n.pod_ns(2), &["bash", "-c", &udp]);
    poll(5, "pod2's records", || {
        ring_records(&n, "pod2", Some("new")).len() >= 4
    });
    let pod2_before = ring_records(&n, "pod2", None);

    // pod1: 20000 UDP flows, one datagram each from its own source port.
    let before = file_records(&state);
    let pod1_before = before.iter().filter(|r| r.workload == "pod1").count() as u64;
    let flood = udp_flood_script(&peer, 20000..40000);
    let t0 = Instant::now();
    n.ok(
        &n.pod_ns(1),
        &["timeout", "20", "/usr/bin/python3", "-c", &flood],
    );
    poll(8, "a \"suppressed\" record of pod1", || {
        !ring_records(&n, "pod1", Some("suppressed")).is_empty()
    });
    // One more sweep, for the flows of the flood's last moments.
    std::thread::sleep(Duration::from_millis(1500));
    let elapsed = t0.elapsed().as_secs() + 1;
    let after = file_records(&state);

    // The file: pod1 added no more than its budget allows, plus one summary
    // per sweep; the summaries count what was left out.
    let pod1: Vec<&FlowRecord> = after.iter().filter(|r| r.workload == "pod1").collect();
    let added = pod1.len() as u64 - pod1_before;
    let summaries: Vec<&&FlowRecord> = pod1.iter().filter(|r| r.event == "suppressed").collect();
    let allowed = BURST + RATE * elapsed + elapsed + 1;
    eprintln!(
        "pod1: {added} records added in {elapsed} s (budget {allowed}), {} summaries",
        summaries.len()
    );
    assert!(
        added <= allowed,
        "pod1 added {added} records in {elapsed} s; its budget allows {allowed}"
    );
    let left_out: u64 = summaries.iter().filter_map(|r| r.suppressed).sum();
    eprintln!("pod1: {left_out} records left out");
    assert!(
        left_out >= 5000,
        "suppressed records count {left_out} left out (of 20000 flows)"
    );
    assert!(summaries.len() as u64 <= elapsed + 1, "{summaries:?}");
    assert!(summaries.iter().all(|r| r.suppressed.unwrap_or(0) > 0));
    // And in bytes: at most a KiB a record (they take about 400 bytes), where
    // one record per flow would have been some 8 MB.
    let others = (after.len() - before.len()) as u64 - added;
    let file = Path::new(&state).join("log/verdicts.jsonl");
    let grown = std::fs::metadata(&file).unwrap().len() - bytes_of(&before);
    assert!(
        grown <= (allowed + others) * 1024,
        "the log file grew by {grown} bytes for {added} records of pod1 and {others} others"
    );

    // The ring: pod2's records are all still there; pod1 holds the rest.
    let pod2_after = ring_records(&n, "pod2", None);
    for r in &pod2_before {
        assert!(
            pod2_after.contains(r),
            "pod2's record {r:?} was pushed out of the ring"
        );
    }
    let pod1_ring = ring_records(&n, "pod1", None);
    assert!(pod1_ring.len() < RING, "{}", pod1_ring.len());
    assert!(pod1_ring.iter().any(|r| r.event == "suppressed"));

    // The count, in usage and the metrics.
    let u = n.client().usage(10, None).expect("usage");
    // A sweep since the file was read may have left out more.
    assert!(u.log.suppressed >= left_out, "{:?}", u.log);
    let token = std::fs::read_to_string(n.var("GW_ADMIN_TOKEN_FILE")).unwrap();
    let m = n.ok(
        n.var("MGMT_NS"),
        &[
            "curl",
            "-sf",
            "-H",
            &format!("Authorization: Bearer {}", token.trim()),
            &format!("http://{}/metrics", n.var("GW_API")),
        ],
    );
    let line = m
        .lines()
        .find(|l| l.starts_with("guardwire_log_records_suppressed_total{workload=\"pod1\"}"))
        .unwrap_or_else(|| panic!("no suppressed metric for pod1:\n{m}"));
    let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(v as u64 >= left_out, "{line}");
}

/// Bytes `v` takes in the file, one JSON line each.
fn bytes_of(v: &[FlowRecord]) -> u64 {
    v.iter()
        .map(|r| serde_json::to_vec(r).unwrap().len() as u64 + 1)
        .sum()
}
