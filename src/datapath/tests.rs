//! The worker loop over in-memory ports: real threads, epoll, bursts, the delay
//! queue and the counters, without root or namespaces.

use super::*;
use crate::pipeline::MalformedPolicy;
use crate::pipeline::firewall::RuleSet;
use crate::pipeline::spoof::Identity;
use crate::port::{BurstFn, Frame, MemoryPort, SendReport};
use crate::vocab::{DropReason, Mac};
use etherparse::PacketBuilder;
use std::time::Instant;

const MAC_A: Mac = [2, 0, 0, 0, 0, 0xa];
const MAC_B: Mac = [2, 0, 0, 0, 0, 0xb];
const GW: Mac = [2, 0, 0, 0, 0, 0xfe];
const IP_A: [u8; 4] = [10, 0, 0, 1];
const IP_B: [u8; 4] = [10, 0, 0, 2];

fn params(workers: usize, batch: usize) -> DatapathParams {
    DatapathParams {
        workers,
        batch,
        mac_limit: 2,
        mac_age_secs: 300,
        spin_us: 0,
        flow_capacity: 4096,
        flow_quota: None,
        timeouts: Default::default(),
        reassembly_bytes: 1 << 20,
        shape_queue_bytes: 1 << 20,
    }
}

fn info(name: &str, mac: Mac, ip: [u8; 4]) -> WorkloadInfo {
    crate::decide::tests::info(name, mac, ip, SteeringMode::Inline)
}

/// A workload on two memory ports.
struct Wl {
    id: WorkloadId,
    port: Arc<MemoryPort>,
    uplink: Arc<MemoryPort>,
}

fn attach(dp: &mut Datapath, name: &str, mac: Mac, ip: [u8; 4], burst_limit: usize) -> Wl {
    let port = Arc::new(MemoryPort::new(&format!("{name}-wl"), burst_limit).unwrap());
    let uplink = Arc::new(MemoryPort::new(&format!("{name}-up"), burst_limit).unwrap());
    let id = dp
        .add_workload(info(name, mac, ip), port.clone(), uplink.clone())
        .unwrap();
    Wl { id, port, uplink }
}

fn rules(dp: &Datapath, text: &str) {
    let shared = dp.shared();
    let rs = RuleSet::parse(text, "t").unwrap();
    let next = shared.pipeline.load().with_rules(Arc::new(rs));
    shared.pipeline.store(Arc::new(next));
}

fn udp(src: (Mac, [u8; 4]), dst: (Mac, [u8; 4]), dport: u16, len: usize) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4(src.1, dst.1, 64)
        .udp(5000, dport)
        .write(&mut f, &vec![0u8; len])
        .unwrap();
    f
}

use crate::decide::tests::tcp as tcp_syn;

/// Waits up to 5 s for `f` to hold.
fn until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(5), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Collects what `port` sends until `n` frames have come.
fn collect(port: &MemoryPort, n: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    until(&format!("{n} frames out of {}", port.name()), || {
        got.extend(port.sent().into_iter().map(|m| m.data));
        got.len() >= n
    });
    got
}

fn drops(dp: &Datapath, r: DropReason) -> u64 {
    dp.stats().drops[r.name()]
}

#[test]
fn frames_cross_the_worker_both_ways() {
    let mut dp = Datapath::start(params(1, 64), Pipeline::new(MalformedPolicy::Drop)).unwrap();
    let a = attach(&mut dp, "a", MAC_A, IP_A, 256);
    let out = udp((MAC_A, IP_A), (GW, [8, 8, 8, 8]), 53, 100);
    let back = udp((GW, [8, 8, 8, 8]), (MAC_A, IP_A), 5000, 100);
    a.port.inject_plain([&out[..]]);
    assert_eq!(collect(&a.uplink, 1), [out]);
    a.uplink.inject_plain([&back[..]]);
    assert_eq!(collect(&a.port, 1), [back]);
    let s = dp.stats();
    let p = s.ports.iter().find(|p| p.port == "a-wl").unwrap();
    assert_eq!((p.counters.rx_frames, p.counters.tx_frames), (1, 1));
}

#[test]
fn a_ring_smaller_than_the_batch_strands_no_frame() {
    // The port hands out 4 frames per receive; 40 arrive with one wake-up.
    let mut dp = Datapath::start(params(1, 64), Pipeline::new(MalformedPolicy::Drop)).unwrap();
    let a = attach(&mut dp, "a", MAC_A, IP_A, 4);
    let frames: Vec<Vec<u8>> = (0..40)
        .map(|i| udp((MAC_A, IP_A), (GW, [8, 8, 8, 8]), 1000 + i, 100))
        .collect();
    a.port.inject_plain(frames.iter().map(|f| &f[..]));
    assert_eq!(collect(&a.uplink, 40), frames);
    assert_eq!(a.port.waiting(), 0);
}

#[test]
fn a_mirror_copy_is_never_forwarded() {
    let mut dp = Datapath::start(params(1, 64), Pipeline::new(MalformedPolicy::Drop)).unwrap();
    let a = attach(&mut dp, "a", MAC_A, IP_A, 256);
    dp.set_mode(a.id, SteeringMode::Mirror).unwrap();
    let f = udp((MAC_A, IP_A), (GW, [8, 8, 8, 8]), 53, 100);
    a.port.inject_plain([&f[..], &f[..]]);
    until("two copies counted", || {
        dp.stats()
            .ports
            .iter()
            .any(|p| p.port == "a-wl" && p.counters.rx_mirrored == 2)
    });
    std::thread::sleep(Duration::from_millis(20));
    assert!(a.uplink.sent().is_empty(), "a copy went out");
}

#[test]
fn a_shaped_flow_is_held_then_sent_in_order() {
    let mut dp = Datapath::start(params(1, 64), Pipeline::new(MalformedPolicy::Drop)).unwrap();
    // 1 Mbit/s with a burst of one frame: ten frames of ~1 KB take ~70 ms.
    rules(
        &dp,
        "default = \"allow\"\n[[rule]]\nproto = \"udp\"\naction = \"shape\"\nrate = \"1mbit\"\nburst = \"1kb\"\nmax_delay_ms = 500\n",
    );
    let a = attach(&mut dp, "a", MAC_A, IP_A, 256);
    let frames: Vec<Vec<u8>> = (0..10)
        .map(|i| udp((MAC_A, IP_A), (GW, [8, 8, 8, 8]), 53, 900 + i))
        .collect();
    let t = Instant::now();
    a.port.inject_plain(frames.iter().map(|f| &f[..]));
    let got = collect(&a.uplink, 10);
    assert_eq!(got, frames, "held frames leave in order");
    assert!(
        t.elapsed() >= Duration::from_millis(50),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(drops(&dp, DropReason::ShapeOverflow), 0);
}

#[test]
fn a_workload_port_learns_no_more_macs_than_its_limit() {
    let mut dp = Datapath::start(params(1, 64), Pipeline::new(MalformedPolicy::Drop)).unwrap();
    let mut i = info("a", MAC_A, IP_A);
    i.identity = Identity::default();
    let port = Arc::new(MemoryPort::new("a-wl", 256).unwrap());
    let uplink = Arc::new(MemoryPort::new("a-up", 256).unwrap());
    dp.add_workload(i, port.clone(), uplink.clone()).unwrap();
    let from = |m: u8| udp(([2, 0, 0, 0, 1, m], IP_A), (GW, [1; 4]), 53, 10);
    let frames = [from(1), from(2), from(3), from(1)];
    port.inject_plain(frames.iter().map(|f| &f[..]));
    until("the third MAC dropped", || {
        drops(&dp, DropReason::MacLimit) == 1
    });
    assert_eq!(collect(&uplink, 3).len(), 3);
    assert_eq!(dp.shared().macs.snapshot().len(), 2);
}

#[test]
fn east_west_goes_straight_to_the_other_workload_and_both_judge_it() {
    let mut dp = Datapath::start(params(2, 64), Pipeline::new(MalformedPolicy::Drop)).unwrap();
    rules(
        &dp,
        "default = \"allow\"\n[[rule]]\nworkload = \"b\"\ndirection = \"ingress\"\nproto = \"udp\"\ndst_ports = \"9000\"\naction = \"deny\"\n",
    );
    let a = attach(&mut dp, "a", MAC_A, IP_A, 256);
    let b = attach(&mut dp, "b", MAC_B, IP_B, 256);
    // B speaks first, so its MAC is learned on its workload port.
    let hello = udp((MAC_B, IP_B), (GW, [1; 4]), 53, 10);
    b.port.inject_plain([&hello[..]]);
    collect(&b.uplink, 1);
    until("B's MAC learned", || dp.shared().macs.snapshot().len() == 1);
    let ok = udp((MAC_A, IP_A), (MAC_B, IP_B), 8000, 10);
    let denied = udp((MAC_A, IP_A), (MAC_B, IP_B), 9000, 10);
    a.port.inject_plain([&denied[..], &ok[..]]);
    assert_eq!(collect(&b.port, 1), [ok]);
    until("B's rule dropped one", || {
        drops(&dp, DropReason::Denied) == 1
    });
    assert!(
        a.uplink.sent().is_empty(),
        "east-west never takes the uplink"
    );
}

#[test]
fn a_rejected_connection_is_answered_on_the_port_it_came_by() {
    let mut dp = Datapath::start(params(1, 64), Pipeline::new(MalformedPolicy::Drop)).unwrap();
    rules(
        &dp,
        "default = \"allow\"\n[[rule]]\nproto = \"tcp\"\ndst_ports = \"22\"\naction = \"reject\"\n",
    );
    let a = attach(&mut dp, "a", MAC_A, IP_A, 256);
    a.port
        .inject_plain([&tcp_syn((MAC_A, IP_A), (GW, [8, 8, 8, 8]), 22)[..]]);
    let answer = collect(&a.port, 1).remove(0);
    assert_eq!(&answer[0..6], &MAC_A);
    assert!(a.uplink.sent().is_empty());
    assert_eq!(drops(&dp, DropReason::Rejected), 1);
}

#[test]
fn a_detached_workload_leaves_nothing_to_the_next_in_its_slot() {
    let mut dp = Datapath::start(params(2, 64), Pipeline::new(MalformedPolicy::Drop)).unwrap();
    rules(
        &dp,
        "default = \"allow\"\n[[rule]]\nworkload = \"a\"\nproto = \"udp\"\naction = \"deny\"\n",
    );
    let a = attach(&mut dp, "a", MAC_A, IP_A, 256);
    let f = udp((MAC_A, IP_A), (GW, [8, 8, 8, 8]), 53, 10);
    a.port.inject_plain([&f[..]]);
    until("a's flow denied", || drops(&dp, DropReason::Denied) == 1);
    dp.remove_workload(a.id).unwrap();
    assert_eq!(
        dp.shared().inspector.flows.held_by(a.id),
        0,
        "its flows went with it"
    );
    // Same slot, same addresses, another name: judged afresh.
    let c = attach(&mut dp, "c", MAC_A, IP_A, 256);
    assert_eq!(c.id.slot(), a.id.slot());
    assert_ne!(c.id, a.id);
    c.port.inject_plain([&f[..]]);
    assert_eq!(collect(&c.uplink, 1), [f]);
}

/// A port whose receive panics, as a bug in a burst would.
struct Panicky(MemoryPort);

impl Port for Panicky {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn fd(&self) -> std::os::fd::RawFd {
        self.0.fd()
    }
    fn recv_burst(&self, _max: usize, _f: &mut BurstFn<'_>) -> io::Result<usize> {
        panic!("a bug in a burst")
    }
    fn send_burst(&self, frames: &[Frame<'_>], pick: &[u16]) -> SendReport {
        self.0.send_burst(frames, pick)
    }
}

#[test]
fn a_worker_that_panics_is_reported_with_its_workloads_and_the_others_go_on() {
    let mut dp = Datapath::start(params(2, 64), Pipeline::new(MalformedPolicy::Drop)).unwrap();
    // The first workload goes to worker 0, the second to worker 1.
    let bad = Arc::new(Panicky(MemoryPort::new("bad-wl", 256).unwrap()));
    let bad_up = Arc::new(MemoryPort::new("bad-up", 256).unwrap());
    let bad_id = dp
        .add_workload(info("bad", MAC_B, IP_B), bad.clone(), bad_up)
        .unwrap();
    let good = attach(&mut dp, "good", MAC_A, IP_A, 256);
    bad.0
        .inject_plain([&udp((MAC_B, IP_B), (GW, [1; 4]), 53, 10)[..]]);
    until("the failure reported", || !dp.shared().failed().is_empty());
    let failed = dp.shared().failed();
    assert_eq!(failed[0].message, "a bug in a burst");
    assert_eq!(
        dp.shared()
            .workers_alive
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let handed = dp.newly_failed();
    assert_eq!(handed.len(), 1);
    assert_eq!(handed[0].1, [bad_id]);
    assert!(dp.newly_failed().is_empty(), "handed over once");
    // A dead worker is not stalled: the node's heartbeat goes on.
    assert_eq!(
        dp.shared()
            .stalled_worker(0)
            .filter(|&w| w == failed[0].worker),
        None
    );
    // The other worker still forwards, and takes every new workload.
    let f = udp((MAC_A, IP_A), (GW, [8, 8, 8, 8]), 53, 10);
    good.port.inject_plain([&f[..]]);
    assert_eq!(collect(&good.uplink, 1), [f]);
    let next = attach(&mut dp, "next", [2, 0, 0, 0, 0, 0xc], [10, 0, 0, 3], 256);
    let g = udp(
        ([2, 0, 0, 0, 0, 0xc], [10, 0, 0, 3]),
        (GW, [8, 8, 8, 8]),
        53,
        10,
    );
    next.port.inject_plain([&g[..]]);
    assert_eq!(collect(&next.uplink, 1), [g]);
}
