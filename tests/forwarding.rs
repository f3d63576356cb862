//! Forwarding through guardwire over a real test-bed node: CNI-made pods, a VM
//! stand-in on a tap, a peer outside, guardwire in sec ns. Needs root.

mod common;

use common::*;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

#[test]
fn pods_and_vm_reach_the_peer_through_guardwire() {
    let n = Node::up("tfw1", &["--pods", "2", "--vm"]);
    let peer = n.var("PEER_IP").to_string();
    n.ping(&n.pod_ns(1), &peer, 5);
    n.ping(n.var("NS_VM"), &peer, 5);

    let before = n.stats();
    n.iperf_server(n.var("NS_PEER"), &peer);
    let (bps, _) = n.iperf(&n.pod_ns(1), &peer, 2, &[]);
    assert!(bps > 100e6, "pod TCP through guardwire: {bps} bit/s");
    n.iperf_server(n.var("NS_PEER"), &peer);
    let (bps_vm, _) = n.iperf(n.var("NS_VM"), &peer, 2, &[]);
    assert!(bps_vm > 100e6, "VM TCP through guardwire: {bps_vm} bit/s");
    let after = n.stats();

    for p in ["wp-pod1", "up-pod1", "wp-vm1", "up-vm1"] {
        let d = port(&after, p).counters.rx_frames - port(&before, p).counters.rx_frames;
        assert!(
            d > 1000,
            "port {p} received only {d} frames during the transfers"
        );
    }
    // Every frame received by a workload port left by its uplink (nothing lost).
    let wp = port(&after, "wp-pod1").counters.rx_frames;
    let up = port(&after, "up-pod1").counters.tx_frames;
    assert_eq!(wp, up, "wp-pod1 rx vs up-pod1 tx");
    assert_eq!(
        after.drops.values().sum::<u64>(),
        0,
        "drops: {:?}",
        after.drops
    );
}

#[test]
fn east_west_crosses_guardwire_once() {
    let n = Node::up("tfw2", &["--pods", "2"]);
    let pod2 = n.pod_ip(2);
    n.ping(&n.pod_ns(1), &pod2, 2); // learn both MACs
    let s1 = n.stats();
    let out = n.ok(
        &n.pod_ns(1),
        &["ping", "-c", "200", "-i", "0.005", "-W", "2", &pod2],
    );
    assert!(out.contains("200 received"), "{out}");
    let s2 = n.stats();
    let d = |p: &str, tx: bool| {
        let (a, b) = (&port(&s1, p).counters, &port(&s2, p).counters);
        if tx {
            b.tx_frames - a.tx_frames
        } else {
            b.rx_frames - a.rx_frames
        }
    };
    assert!(
        d("wp-pod2", true) >= 200,
        "pod2 got {} frames",
        d("wp-pod2", true)
    );
    assert!(
        d("wp-pod1", true) >= 200,
        "pod1 got {} replies",
        d("wp-pod1", true)
    );
    // The 400 frames of the pings did not go out by the uplinks and back in: one
    // pass only. (The node's own background traffic, such as ARP refreshes and
    // IPv6 multicast from the host bridge, may still cross the uplinks.)
    for (p, tx) in [
        ("up-pod1", true),
        ("up-pod2", false),
        ("up-pod2", true),
        ("up-pod1", false),
    ] {
        assert!(
            d(p, tx) < 20,
            "{p} {} {} frames",
            if tx { "sent" } else { "received" },
            d(p, tx)
        );
    }
}

#[test]
fn vlan_tag_survives_the_crossing() {
    let n = Node::up("tfw3", &["--pods", "2"]);
    let tx = raw_port(&n.pod_ns(1), "eth0");
    let rx = raw_port(&n.pod_ns(2), "eth0");
    let src = mac_of(&n, &n.pod_ns(1), "eth0");
    let marker = b"guardwire-vlan-test";
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x81, 0x00, 0x20, 0x64]); // 802.1Q, PCP 1, VLAN 100
    f.extend_from_slice(&[0x88, 0xb5]); // local experimental ethertype
    f.extend_from_slice(marker);
    f.resize(64, 0);
    let before = n.stats();
    assert_eq!(send_raw(&tx, &vec![f.clone(); 5]), 5);
    // pod1 -> guardwire -> host bridge -> guardwire -> pod2: tag restored at each hop.
    let got = collect(&rx, Duration::from_millis(700), |d| {
        d.windows(marker.len()).any(|w| w == marker)
    });
    assert_eq!(got.len(), 5, "tagged frames seen in pod2: {got:?}");
    for (tag, data) in &got {
        let tag = tag.expect("the frame arrives tagged");
        assert_eq!(tag.tci, 0x2064);
        assert_eq!(tag.tpid, 0x8100);
        assert_eq!(&data[12..14], &[0x88, 0xb5]);
    }
    let after = n.stats();
    let vlan_in =
        port(&after, "wp-pod1").counters.rx_vlan - port(&before, "wp-pod1").counters.rx_vlan;
    assert_eq!(vlan_in, 5);
}

#[test]
fn file_over_tcp_arrives_identical_as_super_frames() {
    // The ring's copy way is guardwire's own path: the kernel fast path stays off.
    let n = Node::up("tfw4", &["--pods", "1", "--fast-path", "off"]);
    let peer: std::net::Ipv4Addr = n.var("PEER_IP").parse().unwrap();
    let peer_ns = n.var("NS_PEER").to_string();
    let listener =
        guardwire::steer::netns::run_in(&peer_ns, move || TcpListener::bind((peer, 7001))).unwrap();
    let rx = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0usize;
        loop {
            let k = s.read(&mut buf).unwrap();
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            total += k;
        }
        (total, h.finalize().to_vec())
    });
    let mut data = vec![0u8; 48 << 20];
    let mut x: u64 = 0x1234_5678_9abc_def1;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let sent_hash = Sha256::digest(&data).to_vec();
    let before = n.stats();
    let pod_ns = n.pod_ns(1);
    guardwire::steer::netns::run_in(&pod_ns, move || {
        let mut s = TcpStream::connect_timeout(&(peer, 7001).into(), Duration::from_secs(5))?;
        s.write_all(&data)?;
        s.shutdown(std::net::Shutdown::Write)
    })
    .unwrap();
    let (total, got_hash) = rx.join().unwrap();
    assert_eq!(total, 48 << 20);
    assert_eq!(got_hash, sent_hash, "sha256 of the received file differs");
    // The kernel-side counters come in with housekeeping, every 200 ms.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let after = n.stats();
    let gso = port(&after, "wp-pod1").counters.rx_gso - port(&before, "wp-pod1").counters.rx_gso;
    assert!(gso > 100, "only {gso} super-frames crossed");
    // Too big for a 2 KiB ring slot, they came the copy way, whole.
    let c = &port(&after, "wp-pod1").counters;
    assert!(
        c.ring_copied >= gso,
        "{} copied of {gso} super-frames",
        c.ring_copied
    );
    assert_eq!(c.ring_truncated, 0);
}

#[test]
fn arp_storm_neither_loops_nor_grows() {
    let n = Node::up("tfw5", &["--pods", "3"]);
    let tx = raw_port(&n.pod_ns(1), "eth0");
    let src = mac_of(&n, &n.pod_ns(1), "eth0");
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&src);
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&src);
    // The sender is pod1 itself (anti-spoofing drops ARP claiming other addresses).
    let own: std::net::Ipv4Addr = n.pod_ip(1).parse().unwrap();
    arp.extend_from_slice(&own.octets());
    arp.extend_from_slice(&[0, 0, 0, 0, 0, 0, 10, 244, 0, 250]);
    arp.resize(60, 0);
    let s0 = n.stats();
    let mut sent = 0;
    for _ in 0..40 {
        sent += send_raw(&tx, &vec![arp.clone(); 100]);
        std::thread::sleep(Duration::from_millis(3));
    }
    assert_eq!(sent, 4000);
    std::thread::sleep(Duration::from_millis(500));
    let s1 = n.stats();
    std::thread::sleep(Duration::from_secs(1));
    let s2 = n.stats();
    let tx_d =
        |a: &guardwire::datapath::StatsSnapshot,
         b: &guardwire::datapath::StatsSnapshot,
         p: &str| { port(b, p).counters.tx_frames - port(a, p).counters.tx_frames };
    let storm_out = tx_d(&s0, &s1, "up-pod1");
    assert!(
        (3000..=4010).contains(&storm_out),
        "up-pod1 sent {storm_out} of {sent}"
    );
    for p in ["wp-pod2", "wp-pod3"] {
        let d = tx_d(&s0, &s1, p);
        assert!(
            d <= storm_out + 10,
            "{p} got {d} copies of {storm_out} broadcasts"
        );
    }
    assert!(
        tx_d(&s0, &s1, "wp-pod1") < 10,
        "the storm came back to its sender"
    );
    // After the storm: silence. A loop would keep the counters running.
    for p in [
        "up-pod1", "up-pod2", "up-pod3", "wp-pod1", "wp-pod2", "wp-pod3",
    ] {
        assert!(
            tx_d(&s1, &s2, p) < 10,
            "{p} still sending after the storm: {}",
            tx_d(&s1, &s2, p)
        );
    }
}

#[test]
fn malformed_frames_are_counted_by_reason() {
    let n = Node::up("tfw6", &["--pods", "1"]);
    let tx = raw_port(&n.pod_ns(1), "eth0");
    let src = mac_of(&n, &n.pod_ns(1), "eth0");
    let eth = |ty: [u8; 2]| {
        let mut f = vec![0x02, 0, 0, 0, 0, 0x99];
        f.extend_from_slice(&src);
        f.extend_from_slice(&ty);
        f
    };
    let ipv4 = |ihl: u8, total: u16, proto: u8| {
        let mut h = vec![0x40 | ihl, 0];
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0, 10, 244, 0, 9, 10, 99, 0, 2]);
        h
    };
    let mut cut_v4 = eth([0x08, 0]);
    cut_v4.extend_from_slice(&[0x45, 0, 0, 40, 0, 0]);
    let mut bad_ihl = eth([0x08, 0]);
    bad_ihl.extend(ipv4(3, 40, 17));
    bad_ihl.resize(60, 0);
    let mut long_len = eth([0x08, 0]);
    long_len.extend(ipv4(5, 1000, 17));
    long_len.resize(60, 0);
    let mut bad_tcp = eth([0x08, 0]);
    bad_tcp.extend(ipv4(5, 40, 6));
    bad_tcp.extend_from_slice(&[
        0, 80, 0, 81, 0, 0, 0, 1, 0, 0, 0, 0, 0x20, 0x02, 0xff, 0xff, 0, 0, 0, 0,
    ]);
    let mut cut_v6 = eth([0x86, 0xdd]);
    cut_v6.extend_from_slice(&[0x60, 0, 0, 0, 0, 8, 17, 64]);
    cut_v6.resize(40, 0);
    let mut garbage = eth([0x08, 0]);
    garbage.extend((0..50u8).map(|i| i.wrapping_mul(37) | 0x0f));

    let before = n.stats();
    let frames = vec![cut_v4, bad_ihl, long_len, bad_tcp, cut_v6, garbage];
    assert_eq!(send_raw(&tx, &frames), frames.len());
    wait_for(
        || n.stats().drops["malformed"] - before.drops["malformed"] >= frames.len() as u64,
        "malformed drops",
    );
    let after = n.stats();
    let d = |k: &str| after.malformed[k] - before.malformed[k];
    assert_eq!(
        d("ipv4_header"),
        3,
        "cut header, IHL 3, garbage (IHL 15 beyond the frame): {:?}",
        after.malformed
    );
    assert_eq!(d("ipv4_length"), 1);
    assert_eq!(d("tcp"), 1);
    assert_eq!(d("ipv6_header"), 1);
    assert_eq!(after.drops["malformed"] - before.drops["malformed"], 6);
    // Still forwarding.
    n.ping(&n.pod_ns(1), n.var("PEER_IP"), 3);
}

#[test]
fn a_full_ring_smaller_than_the_burst_hands_each_frame_out_once() {
    use guardwire::port::Port;
    let n = Node::up("tfw6", &["--pods", "1", "--forwarder", "none"]);
    // Both ends opened here, no guardwire: 32 ring slots on wp-pod1, and 40
    // frames sent into them at once, each with its number in the payload.
    let rx = raw_port(n.var("NS_SEC"), "wp-pod1");
    let slots = rx.ring_slots();
    assert!(slots < 64, "a ring of {slots} slots");
    let tx = raw_port(&n.pod_ns(1), "eth0");
    let src = mac_of(&n, &n.pod_ns(1), "eth0");
    let frames: Vec<Vec<u8>> = (0..slots as u16 + 8)
        .map(|i| {
            let mut f = vec![0xff; 6];
            f.extend_from_slice(&src);
            f.extend_from_slice(&[0x88, 0xb5]);
            f.extend_from_slice(&i.to_be_bytes());
            f.resize(60, 0);
            f
        })
        .collect();
    let mut got = Vec::new();
    // Let the kernel fill the ring before the first receive.
    assert_eq!(send_raw(&tx, &frames), frames.len());
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..3 {
        rx.recv_burst(64, &mut |burst| {
            for f in burst {
                let d = f.data();
                if d[12..14] == [0x88, 0xb5] {
                    got.push(u16::from_be_bytes([d[14], d[15]]));
                }
            }
        })
        .unwrap();
    }
    let mut seen = got.clone();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), got.len(), "a frame handed out twice: {got:?}");
    // The ring held `slots` frames (a few may be the pod's own chatter).
    assert!(
        (slots - 8..=slots).contains(&got.len()),
        "{} of a ring of {slots}: {got:?}",
        got.len()
    );
    // In step with the kernel: the next frame lands and is read.
    assert_eq!(send_raw(&tx, &frames[..1]), 1);
    std::thread::sleep(Duration::from_millis(100));
    let mut next = 0;
    rx.recv_burst(64, &mut |burst| next += burst.len()).unwrap();
    assert!(next >= 1, "the ring fell out of step");
}
