//! The entry point of the `parse_classify` fuzz target (`fuzz/`) and its
//! property tests: arbitrary bytes become a vnet header and a frame, which the
//! decision stage decides as it arrives on each port of a two-workload node,
//! through validation, anti-spoofing, the flow table, the firewall, application
//! identification, limits, the switch, east-west and the reject answer.

use super::{Decisions, Scene, Stage, WorkloadInfo};
use crate::pipeline::firewall::RuleSet;
use crate::pipeline::flow::Timeouts;
use crate::pipeline::spoof::Identity;
use crate::pipeline::{Inspector, MalformedPolicy, Pipeline};
use crate::port::{Frame, VnetHdr};
use crate::switch::{MacTable, Topology, WorkloadPorts};
use crate::vocab::{Mac, OnFailure, PortId, SteeringMode, WorkloadId};
use std::sync::{Arc, Mutex, OnceLock};

const RULES: &str = r#"
default = "allow"
[[rule]]
app = "blocked-site"
action = "deny"
[[rule]]
proto = "tcp"
dst_ports = "1-1023"
direction = "ingress"
action = "reject"
[[rule]]
proto = "udp"
action = "shape"
rate = "10mbit"
[[rule]]
proto = "icmp"
action = "rate-limit"
pps = 100
"#;

/// MACs of the two workloads: frames whose bytes name them go east-west.
const MACS: [Mac; 2] = [[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]];

struct Node {
    topo: Topology,
    workloads: Vec<Option<WorkloadInfo>>,
    macs: MacTable,
    pipeline: Pipeline,
    inspector: Inspector,
    out: Mutex<Decisions>,
}

fn node() -> &'static Node {
    static N: OnceLock<Node> = OnceLock::new();
    N.get_or_init(|| {
        let mut topo = Topology::default();
        let mut macs = MacTable::default();
        let mut workloads = Vec::new();
        for (i, mac) in MACS.iter().enumerate() {
            let i = i as u32;
            let wl = WorkloadId::new(i, 1);
            topo.insert(
                wl,
                WorkloadPorts {
                    workload: PortId(2 * i),
                    uplink: PortId(2 * i + 1),
                },
            );
            macs.learn(*mac, PortId(2 * i), 0, 8);
            workloads.push(Some(WorkloadInfo {
                name: format!("fuzz{i}"),
                kind: "pod".into(),
                mode: SteeringMode::Inline,
                on_failure: OnFailure::Open,
                identity: Identity {
                    macs: vec![*mac],
                    ips: vec![std::net::IpAddr::from([10, 0, 0, 2 + i as u8])],
                    router: false,
                },
            }));
        }
        let rules = RuleSet::parse(RULES, "fuzz").expect("fuzz rules parse");
        Node {
            topo,
            workloads,
            macs,
            pipeline: Pipeline::new(MalformedPolicy::Pass).with_rules(Arc::new(rules)),
            inspector: Inspector::new(4096, Timeouts::default()),
            out: Mutex::new(Decisions::default()),
        }
    })
}

/// Runs `data` (10 bytes of vnet header, then one frame) through the decision
/// stage as it arrives on each of the four ports, at `now_ns`. Never panics,
/// whatever the bytes: that is what the fuzz target and the property tests check.
pub fn exercise(data: &[u8], now_ns: u64) {
    let n = node();
    let Some(vnet) = data.get(..10).and_then(VnetHdr::from_bytes) else {
        return;
    };
    let frames = [Frame::new(&data[10..], vnet, None)];
    let stage = Stage {
        scene: Scene {
            topo: &n.topo,
            workloads: &n.workloads,
            macs: &n.macs,
        },
        pipeline: &n.pipeline,
        inspector: &n.inspector,
        mac_limit: 4,
        now_ns,
        fast: None,
    };
    let mut out = n.out.lock().unwrap_or_else(|e| e.into_inner());
    for port in 0..4 {
        stage.decide(PortId(port), &frames, &mut out);
        assert_eq!(out.each.len(), 1, "one decision per frame");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    fn frame(v6: bool, tcp: bool, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 10];
        let eth = PacketBuilder::ethernet2(MACS[0], MACS[1]);
        let ip = if v6 {
            eth.ipv6([0xfd; 16], [0xfe; 16], 64)
        } else {
            eth.ipv4([10, 0, 0, 2], [10, 0, 0, 3], 64)
        };
        if tcp {
            ip.tcp(sport, dport, 7, 1000)
                .write(&mut out, payload)
                .unwrap();
        } else {
            ip.udp(sport, dport).write(&mut out, payload).unwrap();
        }
        out
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..3000),
                                       t in 0u64..(1 << 42)) {
            exercise(&data, t);
        }

        /// Valid frames with random payloads (TLS, QUIC and HTTP look-alikes
        /// included) and one byte flipped anywhere, over many flows and times.
        #[test]
        fn damaged_frames_never_panic(v6 in any::<bool>(), tcp in any::<bool>(),
                                      sport in 1u16..3, dport in prop::sample::select(vec![53u16, 80, 443, 8443]),
                                      head in prop::sample::select(vec![&b"\x16\x03\x01\x02\x00\x01"[..], b"GET / HTTP/1.1\r\nHost: ", b"\xc0\x00\x00\x00\x01\x08", b""]),
                                      payload in proptest::collection::vec(any::<u8>(), 0..1600),
                                      flip in any::<(usize, u8)>(), t in 0u64..(1 << 40)) {
            let mut p = head.to_vec();
            p.extend_from_slice(&payload);
            let mut f = frame(v6, tcp, sport, dport, &p);
            let i = flip.0 % f.len();
            f[i] ^= flip.1;
            exercise(&f, t);
        }
    }
}
