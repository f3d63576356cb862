use super::*;
use crate::pipeline::firewall::RuleSet;
use crate::pipeline::flow::Timeouts;
use crate::pipeline::{Malformed, MalformedPolicy, parse};
use crate::port::VnetHdr;
use crate::switch::WorkloadPorts;
use etherparse::PacketBuilder;
use std::sync::Arc;

const A: WorkloadId = WorkloadId::new(0, 1);
const B: WorkloadId = WorkloadId::new(1, 2);
const MAC_A: Mac = [2, 0, 0, 0, 0, 0xa];
const MAC_B: Mac = [2, 0, 0, 0, 0, 0xb];
const GW: Mac = [2, 0, 0, 0, 0, 0xfe];
// Ports: A's workload port 0, uplink 1; B's 2 and 3.
const A_WL: PortId = PortId(0);
const A_UP: PortId = PortId(1);
const B_WL: PortId = PortId(2);

struct Bed {
    topo: Topology,
    workloads: Vec<Option<WorkloadInfo>>,
    macs: MacTable,
    pipeline: Pipeline,
    inspector: Inspector,
    /// The fast path's epoch, when the stage may offer flows to it.
    fast: Option<u64>,
}

/// A pod of that name, MAC and address, in `mode`, failing open.
pub(crate) fn info(name: &str, mac: Mac, ip: [u8; 4], mode: SteeringMode) -> WorkloadInfo {
    WorkloadInfo {
        name: name.into(),
        kind: "pod".into(),
        mode,
        on_failure: OnFailure::Open,
        identity: Identity {
            macs: vec![mac],
            ips: vec![ip.into()],
            router: false,
        },
    }
}

impl Bed {
    fn new(rules: &str) -> Bed {
        let mut topo = Topology::default();
        for (wl, p) in [(A, 0), (B, 2)] {
            topo.insert(
                wl,
                WorkloadPorts {
                    workload: PortId(p),
                    uplink: PortId(p + 1),
                },
            );
        }
        Bed {
            topo,
            workloads: vec![
                Some(info("a", MAC_A, [10, 0, 0, 1], SteeringMode::Inline)),
                Some(info("b", MAC_B, [10, 0, 0, 2], SteeringMode::Inline)),
            ],
            macs: MacTable::default(),
            pipeline: Pipeline::new(MalformedPolicy::Drop)
                .with_rules(Arc::new(RuleSet::parse(rules, "t").unwrap())),
            inspector: Inspector::new(4096, Timeouts::default()),
            fast: None,
        }
    }

    fn decide(&self, port: PortId, frames: &[Vec<u8>], t_ns: u64) -> Decisions {
        let stage = Stage {
            scene: Scene {
                topo: &self.topo,
                workloads: &self.workloads,
                macs: &self.macs,
            },
            pipeline: &self.pipeline,
            inspector: &self.inspector,
            mac_limit: 2,
            now_ns: t_ns,
            fast: self.fast,
        };
        let fr: Vec<Frame<'_>> = frames
            .iter()
            .map(|f| Frame::new(f, VnetHdr::default(), None))
            .collect();
        let mut out = Decisions::default();
        stage.decide(port, &fr, &mut out);
        out
    }

    fn learn(&mut self, d: &Decisions) {
        for (m, p) in &d.learn {
            self.macs.learn(*m, *p, 0, 8);
        }
    }
}

/// A TCP SYN between those MACs and addresses, to `dport`.
pub(crate) fn tcp(src: (Mac, [u8; 4]), dst: (Mac, [u8; 4]), dport: u16) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4(src.1, dst.1, 64)
        .tcp(40000, dport, 1, 1000)
        .syn()
        .write(&mut f, &[])
        .unwrap();
    f
}

const ALLOW: &str = "default = \"allow\"\n";

#[test]
fn a_workload_frame_goes_out_by_its_uplink_and_its_mac_is_learned() {
    let b = Bed::new(ALLOW);
    let d = b.decide(
        A_WL,
        &[tcp((MAC_A, [10, 0, 0, 1]), (GW, [8, 8, 8, 8]), 80)],
        1,
    );
    assert_eq!(d.each, [Decision::Out(A_UP)]);
    assert_eq!(d.learn, [(MAC_A, A_WL)]);
    assert_eq!(d.received.frames, 1);
    assert!(d.tally.is_empty());
    // From the uplink, the frame goes only to the workload port.
    let d = b.decide(
        A_UP,
        &[tcp((GW, [8, 8, 8, 8]), (MAC_A, [10, 0, 0, 1]), 80)],
        1,
    );
    assert_eq!(d.each, [Decision::Out(A_WL)]);
    assert!(d.learn.is_empty(), "nothing is learned on an uplink");
}

#[test]
fn every_drop_is_counted_by_its_reason_and_malformed_frames_by_kind() {
    let b = Bed::new(ALLOW);
    let good = tcp((MAC_A, [10, 0, 0, 1]), (GW, [8, 8, 8, 8]), 80);
    let spoofed = tcp((MAC_A, [10, 0, 0, 9]), (GW, [8, 8, 8, 8]), 80);
    let runt = good[..10].to_vec();
    let cut = good[..20].to_vec();
    let d = b.decide(A_WL, &[good, spoofed, runt, cut], 1);
    assert_eq!(
        d.each,
        [
            Decision::Out(A_UP),
            Decision::Drop(DropReason::SpoofIp),
            Decision::Drop(DropReason::Runt),
            Decision::Drop(DropReason::Malformed),
        ]
    );
    let drops: u64 = d.tally.drops.iter().sum();
    assert_eq!(drops, 3, "one count per dropped frame");
    assert_eq!(d.tally.drops[DropReason::SpoofIp as usize], 1);
    assert_eq!(d.tally.malformed[Malformed::Runt as usize], 1);
    assert_eq!(d.tally.malformed[Malformed::Ipv4Header as usize], 1);
    // A port that is not (or no longer) in the forwarding state.
    let d = b.decide(
        PortId(9),
        &[tcp((MAC_A, [10, 0, 0, 1]), (GW, [1; 4]), 80)],
        1,
    );
    assert_eq!(d.each, [Decision::Drop(DropReason::NoEgress)]);
    assert_eq!(d.tally.drops[DropReason::NoEgress as usize], 1);
}

#[test]
fn a_mirror_copy_is_judged_and_absorbed_never_forwarded() {
    let mut b = Bed::new(ALLOW);
    b.workloads[0].as_mut().unwrap().mode = SteeringMode::Mirror;
    let spoofed = tcp((MAC_A, [10, 0, 0, 9]), (GW, [8, 8, 8, 8]), 80);
    let d = b.decide(
        A_WL,
        &[tcp((MAC_A, [10, 0, 0, 1]), (GW, [1; 4]), 80), spoofed],
        1,
    );
    assert_eq!(d.each, [Decision::Absorbed, Decision::Absorbed]);
    assert_eq!(d.received.mirrored, 2);
    assert!(d.tally.is_empty(), "a copy is never a drop");
    // The spoofed one would have been dropped inline.
    assert_eq!(b.inspector.counters.would_drop.load(Ordering::Relaxed), 1);
    assert!(d.learn.is_empty());
}

#[test]
fn a_reject_answers_the_sender() {
    let b = Bed::new(
        "default = \"allow\"\n[[rule]]\nproto = \"tcp\"\ndst_ports = \"22\"\naction = \"reject\"\n",
    );
    let d = b.decide(
        A_WL,
        &[tcp((MAC_A, [10, 0, 0, 1]), (GW, [8, 8, 8, 8]), 22)],
        1,
    );
    assert_eq!(d.each, [Decision::Reply(0)]);
    assert_eq!(d.tally.drops[DropReason::Rejected as usize], 1);
    let answer = &d.replies[0];
    let p = parse(answer, &VnetHdr::default()).unwrap();
    let L3::Ip(ip) = p.l3 else { panic!("not IP") };
    assert_eq!(ip.dst, std::net::IpAddr::from([10, 0, 0, 1]));
    assert_eq!(&answer[0..6], &MAC_A, "the answer goes to the sender");
}

#[test]
fn a_workload_port_holds_no_more_macs_than_its_limit() {
    let mut b = Bed::new(ALLOW);
    b.workloads[0].as_mut().unwrap().identity.macs.clear();
    b.workloads[0].as_mut().unwrap().identity.ips.clear();
    let from = |i: u8| tcp(([2, 0, 0, 0, 1, i], [10, 0, 0, 1]), (GW, [1; 4]), 80);
    let d = b.decide(A_WL, &[from(1), from(2), from(1)], 1);
    // Without an identity, anti-spoofing does not apply: the MAC limit does.
    assert_eq!(d.learn.len(), 2, "each new MAC once");
    b.learn(&d);
    let d = b.decide(A_WL, &[from(3), from(1)], 1);
    assert_eq!(
        d.each,
        [Decision::Drop(DropReason::MacLimit), Decision::Out(A_UP)]
    );
    let d = b.decide(
        A_WL,
        &[tcp(([0xff; 6], [10, 0, 0, 1]), (GW, [1; 4]), 80)],
        1,
    );
    assert_eq!(d.each, [Decision::Drop(DropReason::BadSourceMac)]);
}

#[test]
fn east_west_is_judged_by_both_workloads() {
    // B takes no ingress on port 9000; A may send anything.
    let mut b = Bed::new(
        "default = \"allow\"\n[[rule]]\nworkload = \"b\"\ndirection = \"ingress\"\nproto = \"tcp\"\ndst_ports = \"9000\"\naction = \"deny\"\n",
    );
    let d = b.decide(B_WL, &[tcp((MAC_B, [10, 0, 0, 2]), (GW, [1; 4]), 80)], 1);
    b.learn(&d);
    let to_b = |port| tcp((MAC_A, [10, 0, 0, 1]), (MAC_B, [10, 0, 0, 2]), port);
    let d = b.decide(A_WL, &[to_b(8000), to_b(9000)], 1);
    assert_eq!(
        d.each,
        [Decision::Out(B_WL), Decision::Drop(DropReason::Denied)]
    );
}

#[test]
fn the_east_west_merge_keeps_a_refusal_and_the_later_hold() {
    use Verdict::*;
    let denied = Drop(DropReason::Denied);
    assert_eq!(merge(Forward, Forward), Forward);
    assert_eq!(merge(Delay(5), Forward), Delay(5));
    assert_eq!(merge(Forward, Delay(7)), Delay(7));
    assert_eq!(merge(Delay(9), Delay(7)), Delay(9));
    assert_eq!(merge(Delay(5), denied), denied);
    assert_eq!(merge(Forward, Reject), Reject);
    assert_eq!(merge(denied, Delay(7)), denied);
    assert_eq!(merge(Reject, Forward), Reject);
    assert_eq!(merge(denied, Reject), Reject);
}

#[test]
fn a_workload_in_the_slot_of_a_detached_one_inherits_nothing() {
    // A denied flow of workload A is cached; A goes, and C takes its slot
    // and its ports with the same addresses.
    let mut b = Bed::new(
        "default = \"allow\"\n[[rule]]\nworkload = \"a\"\nproto = \"tcp\"\ndst_ports = \"80\"\naction = \"deny\"\n",
    );
    let f = tcp((MAC_A, [10, 0, 0, 1]), (GW, [8, 8, 8, 8]), 80);
    assert_eq!(
        b.decide(A_WL, std::slice::from_ref(&f), 1).each,
        [Decision::Drop(DropReason::Denied)]
    );
    let ports = b.topo.remove(A).unwrap();
    let c = WorkloadId::new(0, 3);
    b.topo.insert(c, ports);
    b.workloads[0] = Some(info("c", MAC_A, [10, 0, 0, 1], SteeringMode::Inline));
    assert_eq!(b.decide(A_WL, &[f], 2).each, [Decision::Out(A_UP)]);
    assert!(b.topo.workload(A).is_none(), "the old id names nothing");
}

#[test]
fn a_super_frame_counts_as_its_segments() {
    let mut f = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(1, 2, 3, 4)
        .write(&mut f, &vec![0u8; 14_480])
        .unwrap();
    let vnet = VnetHdr {
        gso_type: crate::port::vnet::GSO_TCPV4,
        gso_size: 1448,
        hdr_len: 54,
        ..Default::default()
    };
    let fr = Frame::new(&f, vnet, None);
    let L3::Ip(ip) = parse(&f, &vnet).unwrap().l3 else {
        panic!("not IP")
    };
    let s = real_size(&fr, &ip);
    assert_eq!(s.packets, 10);
    // Ten segments of 1448 payload bytes, each with its 54 bytes of headers.
    assert_eq!(s.bytes, 10 * (1448 + 54));
    let plain = Frame::new(&f, VnetHdr::default(), None);
    assert_eq!(real_size(&plain, &ip).packets, 1);
}

/// A UDP datagram between those MACs and addresses, from `sport` to `dport`.
fn udp(src: (Mac, [u8; 4]), dst: (Mac, [u8; 4]), sport: u16, dport: u16) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4(src.1, dst.1, 64)
        .udp(sport, dport)
        .write(&mut f, b"payload")
        .unwrap();
    f
}

fn offers(d: &Decisions) -> Vec<Offer> {
    d.fast
        .iter()
        .filter_map(|op| match op {
            FastOp::Offer(o) => Some(*o),
            FastOp::End(_) => None,
        })
        .collect()
}

/// Decides `f` on `port` up to ten times; the first offer made, if any.
fn first_offer(b: &Bed, port: PortId, f: &[u8]) -> Option<Offer> {
    (1..=10).find_map(|t| offers(&b.decide(port, &[f.to_vec()], t)).first().copied())
}

#[test]
fn a_settled_flow_is_offered_once_per_epoch_with_its_ports_and_macs() {
    let mut b = Bed::new(ALLOW);
    b.fast = Some(7);
    let f = udp((MAC_A, [10, 0, 0, 1]), (GW, [8, 8, 8, 8]), 40000, 5000);
    let o = first_offer(&b, A_WL, &f).expect("a settled UDP flow is offered");
    assert_eq!(
        (o.in_port, o.out_port, o.src, o.dst, o.epoch, o.peer, o.vlan),
        (A_WL, A_UP, MAC_A, GW, 7, None, None)
    );
    // Once the kernel holds it (the worker marks the flow), no more offers...
    let side = crate::pipeline::flow::Offload::side(o.lo_to_hi);
    b.inspector.flows.with_flow_mut(&o.key, |fl| {
        fl.offload = Some(crate::pipeline::flow::Offload {
            epoch: 7,
            sides: side,
        })
    });
    assert!(offers(&b.decide(A_WL, std::slice::from_ref(&f), 20)).is_empty());
    // ...until the epoch moves on (a rule push): it is judged and offered again.
    b.fast = Some(8);
    assert_eq!(
        offers(&b.decide(A_WL, std::slice::from_ref(&f), 21)).len(),
        1
    );
    // The answer is its own direction.
    let back = udp((GW, [8, 8, 8, 8]), (MAC_A, [10, 0, 0, 1]), 5000, 40000);
    let r = first_offer(&b, A_UP, &back).expect("the answer is offered");
    assert_eq!((r.in_port, r.out_port, r.key), (A_UP, A_WL, o.key));
    assert_ne!(r.lo_to_hi, o.lo_to_hi);
}

#[test]
fn shaped_limited_opted_out_mirrored_or_unfast_flows_are_never_offered() {
    let f = udp((MAC_A, [10, 0, 0, 1]), (GW, [8, 8, 8, 8]), 40000, 5000);
    for (what, rules) in [
        (
            "shaped",
            "default = \"allow\"\n[[rule]]\nproto = \"udp\"\naction = \"shape\"\nrate = \"10mbit\"\n",
        ),
        (
            "limited",
            "default = \"allow\"\n[workload.a]\nbandwidth = \"10mbit\"\n",
        ),
        (
            "opted out",
            "default = \"allow\"\n[workload.a]\nfast_path = false\n",
        ),
        ("denied", "default = \"deny\"\n"),
    ] {
        let mut b = Bed::new(rules);
        b.fast = Some(1);
        if what == "limited" {
            // The control side sets the workload's limit from the rules.
            b.inspector.set_bandwidth("a", Some(1_250_000));
        }
        assert_eq!(first_offer(&b, A_WL, &f), None, "a {what} flow was offered");
    }
    let mut b = Bed::new(ALLOW);
    b.fast = Some(1);
    b.workloads[0].as_mut().unwrap().mode = SteeringMode::Mirror;
    assert_eq!(
        first_offer(&b, A_WL, &f),
        None,
        "a mirrored flow was offered"
    );
    // No fast path on the node: nothing is offered.
    let b = Bed::new(ALLOW);
    assert_eq!(first_offer(&b, A_WL, &f), None);
}

#[test]
fn east_west_is_offered_only_when_both_flows_are_settled_and_counts_for_both() {
    let mut b = Bed::new(ALLOW);
    b.fast = Some(1);
    let d = b.decide(
        B_WL,
        &[udp((MAC_B, [10, 0, 0, 2]), (GW, [1; 4]), 40000, 53)],
        1,
    );
    b.learn(&d);
    let to_b = udp((MAC_A, [10, 0, 0, 1]), (MAC_B, [10, 0, 0, 2]), 40000, 7000);
    let o = first_offer(&b, A_WL, &to_b).expect("east-west offered");
    assert_eq!((o.in_port, o.out_port, o.peer), (A_WL, B_WL, Some(B)));
    // B shapes its ingress: A's side alone does not make it the kernel's.
    let mut b = Bed::new(
        "default = \"allow\"\n[[rule]]\nworkload = \"b\"\ndirection = \"ingress\"\nproto = \"udp\"\naction = \"shape\"\nrate = \"10mbit\"\n",
    );
    b.fast = Some(1);
    let d = b.decide(
        B_WL,
        &[udp((MAC_B, [10, 0, 0, 2]), (GW, [1; 4]), 40000, 53)],
        1,
    );
    b.learn(&d);
    assert_eq!(first_offer(&b, A_WL, &to_b), None);
}

#[test]
fn a_syn_on_an_offloaded_key_takes_the_entry_back() {
    let mut b = Bed::new(ALLOW);
    b.fast = Some(1);
    let syn = tcp((MAC_A, [10, 0, 0, 1]), (GW, [8, 8, 8, 8]), 80);
    let d = b.decide(A_WL, std::slice::from_ref(&syn), 1);
    assert!(offers(&d).is_empty(), "a SYN is never offered");
    let key = crate::pipeline::flow::FlowKey {
        workload: A,
        proto: 6,
        lo: ([8, 8, 8, 8].into(), 80),
        hi: ([10, 0, 0, 1].into(), 40000),
    };
    assert_eq!(d.fast, [FastOp::End(key)], "a new SYN ends any stale entry");
}
