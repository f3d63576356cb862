//! Entry points for the `cargo fuzz` targets (`fuzz/`) and the property tests.
//! [`exercise`]: arbitrary bytes become a vnet header and a frame, which go
//! through validation, anti-spoofing, the flow table, the firewall,
//! application identification and the reject answer. [`reassemble`]: bytes
//! become a client stream cut into segments sent in any order, overlapping,
//! repeated or changed, through the probes' TCP reassembly.

use super::firewall::RuleSet;
use super::flow::Timeouts;
use super::parse::L3;
use super::spoof::Identity;
use super::{Context, Inspector, MalformedPolicy, Pipeline, Size, reject};
use crate::port::{Frame, VnetHdr};
use crate::vocab::{Direction, WorkloadId};
use std::sync::{Arc, OnceLock};

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
"#;

fn state() -> &'static (Pipeline, Inspector, Identity) {
    static S: OnceLock<(Pipeline, Inspector, Identity)> = OnceLock::new();
    S.get_or_init(|| {
        let rules = RuleSet::parse(RULES, "fuzz").expect("fuzz rules parse");
        (
            Pipeline::new(MalformedPolicy::Pass).with_rules(Arc::new(rules)),
            Inspector::new(4096, Timeouts::default()),
            Identity {
                macs: vec![[2, 0, 0, 0, 0, 1]],
                ips: vec!["10.0.0.2".parse().expect("address")],
                router: false,
            },
        )
    })
}

/// Runs `data` (10 bytes of vnet header, then one frame; the frame is judged
/// both as egress and as ingress) through the pipeline. Never panics, whatever
/// the bytes: that is what the fuzz target and the property tests check.
pub fn exercise(data: &[u8], now_ns: u64) {
    let (pl, ins, id) = state();
    let Some(vnet) = data.get(..10).and_then(VnetHdr::from_bytes) else {
        return;
    };
    let fr = Frame::new(&data[10..], vnet, None);
    let Ok(p) = pl.validate(&fr) else {
        return;
    };
    let _ = id.check(&p);
    let _ = reject::reply(&p, fr.data());
    if let L3::Ip(ip) = p.l3 {
        for direction in [Direction::Egress, Direction::Ingress] {
            let ctx = Context {
                workload: WorkloadId::new(0, 0),
                name: "fuzz",
                direction,
                mirror: false,
            };
            let size = Size {
                packets: 1,
                bytes: fr.wire_len() as u64,
            };
            let _ = ins.inspect(pl, &ctx, &ip, size, now_ns);
        }
    }
}

/// Runs `data` through the TCP reassembly of the application probe and of
/// DNS over TCP. `data[0]` is the number of segments, then 4 bytes per
/// segment (offset: 2 bytes, length, a byte to XOR into its first byte), then
/// the stream. Panics only if held memory is not given back.
pub fn reassemble(data: &[u8]) {
    use super::app::{Account, AppProbe, Budget, DnsFlow};
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 32);
    let Some((desc, stream)) = rest.split_at_checked(4 * n) else {
        return;
    };
    if stream.is_empty() {
        return;
    }
    // A budget small enough to be spent now and then.
    let budget = Budget::new(24 * 1024);
    let account = Account {
        budget: &budget,
        workload: WorkloadId::new(1, 0),
    };
    let isn = u32::from_be_bytes([stream[0], 0xff, 0xff, stream[stream.len() - 1]]);
    let mut probe = AppProbe::new(6, 443);
    probe.syn(isn);
    let mut dns = DnsFlow::default();
    dns.syn(false, isn);
    let mut seg = Vec::new();
    for d in desc.chunks_exact(4) {
        let off = usize::from(u16::from_be_bytes([d[0], d[1]])) % stream.len();
        let end = (off + usize::from(d[2]).max(1)).min(stream.len());
        seg.clear();
        seg.extend_from_slice(&stream[off..end]);
        seg[0] ^= d[3];
        let seq = isn.wrapping_add(1 + off as u32);
        if !probe.done() {
            let _ = probe.feed(true, Some(seq), &seg, account);
        }
        let _ = dns.segment(false, seq, &seg, account);
    }
    drop((probe, dns));
    assert_eq!(
        budget.used(WorkloadId::new(1, 0)),
        (0, 0),
        "held bytes not given back"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    fn frame(v6: bool, tcp: bool, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 10];
        let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let ip = if v6 {
            eth.ipv6([0xfd; 16], [0xfe; 16], 64)
        } else {
            eth.ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64)
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
        fn any_segments_are_reassembled_within_the_budget(
            data in proptest::collection::vec(any::<u8>(), 0..3000)
        ) {
            reassemble(&data);
        }

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
