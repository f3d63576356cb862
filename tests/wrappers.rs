//! The port wrappers on a real node: the fault injector damages frames on the way
//! in, guardwire counts them by reason (and keeps forwarding the rest), and the
//! pcap writer records what crossed. Needs root.

mod common;

use common::*;

const CONFIG: &str = r#"
[node]
name = "wrap"
control_socket = "{socket}"
state_dir = "{state}"

[datapath]
workers = 1
malformed = "MALFORMED"

[[workload]]
name = "pod1"
kind = "pod"
workload_port = "wp-pod1"
uplink_port = "up-pod1"
pcap = "PCAP"
fault = { truncate_every = 4, truncate_to = 30, garbage_every = 5 }
"#;

/// Frames in a pcap file (after the 24-byte header, 16-byte record headers).
fn pcap_records(path: &std::path::Path) -> usize {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..4], &0xa1b2_c3d4u32.to_le_bytes(), "pcap magic");
    let mut off = 24;
    let mut n = 0;
    while off + 16 <= b.len() {
        let incl = u32::from_le_bytes(b[off + 8..off + 12].try_into().unwrap()) as usize;
        off += 16 + incl;
        n += 1;
    }
    assert_eq!(off, b.len(), "pcap ends on a record boundary");
    n
}

fn run(policy: &str) -> (guardwire::datapath::StatsSnapshot, usize, usize) {
    let n = Node::up("twr1", &["--pods", "1", "--forwarder", "none"]);
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("cap");
    let cfg = CONFIG
        .replace("MALFORMED", policy)
        .replace("PCAP", &pcap.display().to_string());
    let d = Daemon::start(n.var("NS_SEC"), dir.path(), &cfg);
    let o = n.exec(
        &n.pod_ns(1),
        &[
            "ping",
            "-c",
            "40",
            "-i",
            "0.02",
            "-W",
            "1",
            n.var("PEER_IP"),
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let received: usize = out
        .split(", ")
        .find_map(|p| {
            p.strip_suffix(" received")
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("ping output: {out}"));
    let s = d.stats();
    drop(d);
    let recorded = pcap_records(&dir.path().join("cap-wp-pod1.pcap"));
    (s, received, recorded)
}

#[test]
fn fault_injector_damage_is_counted_and_dropped() {
    let (s, received, recorded) = run("drop");
    let malformed: u64 = s.malformed.values().sum();
    assert!(malformed >= 5, "malformed by kind: {:?}", s.malformed);
    assert_eq!(
        s.drops["malformed"], malformed,
        "policy drop drops every malformed frame"
    );
    // Damaged echo requests are lost, the rest get their reply.
    assert!(
        received > 0 && received < 40,
        "{received} of 40 pings answered"
    );
    let wp = common::port(&s, "wp-pod1");
    assert!(
        recorded as u64 >= wp.counters.rx_frames,
        "pcap has {recorded} records, port saw {}",
        wp.counters.rx_frames
    );
}

#[test]
fn malformed_pass_policy_forwards_damaged_frames() {
    let (s, _, _) = run("pass");
    let malformed: u64 = s.malformed.values().sum();
    assert!(malformed >= 5, "malformed by kind: {:?}", s.malformed);
    assert_eq!(s.drops["malformed"], 0, "policy pass drops none");
    let wp = common::port(&s, "wp-pod1");
    let up = common::port(&s, "up-pod1");
    assert_eq!(
        wp.counters.rx_frames, up.counters.tx_frames,
        "every received frame left by the uplink"
    );
}
