//! What a hostile workload sends and what a careless operator does must not
//! break enforcement (root; real namespaces).

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

fn connects(n: &Node, port: u16) -> bool {
    let target = format!("echo > /dev/tcp/{}/{port}", n.var("PEER_IP"));
    n.exec(&n.pod_ns(1), &["timeout", "2", "bash", "-c", &target])
        .status
        .success()
}

fn mirred(n: &Node, dev: &str) -> bool {
    n.ok(
        n.var("NS_SEC"),
        &["tc", "filter", "show", "dev", dev, "ingress"],
    )
    .contains("mirred")
}

#[test]
fn a_second_daemon_on_the_same_state_is_refused_and_changes_nothing() {
    require_root();
    let n = Node::up("thd1", &["--pods", "1"]);
    n.ok(
        n.var("NS_PEER"),
        &["iperf3", "-s", "-D", "-B", n.var("PEER_IP")],
    );
    wait_for(|| connects(&n, 5201), "the peer's listener");
    n.client()
        .push_rules(
            "default = \"allow\"\n[[rule]]\nproto = \"tcp\"\ndst_ports = 5201\naction = \"deny\"\n",
            "deny.toml",
        )
        .unwrap();
    assert!(!connects(&n, 5201), "the deny rule holds");
    let second = Command::new("ip")
        .args(["netns", "exec", n.var("NS_SEC")])
        .arg(guardwire_bin())
        .args(["run", "--config", n.var("GW_CONFIG")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "a second daemon started");
    assert!(err.contains("in use by another guardwire"), "{err}");
    // Its watchdog (had it started one) would act at once; give it time to.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!mirred(&n, "wp-pod1"), "the kernel path was installed");
    assert!(!connects(&n, 5201), "the deny rule no longer holds");
    assert_eq!(n.client().workloads().unwrap()[0].mode.name(), "inline");
}

#[test]
fn mode_inline_repairs_a_kernel_path_found_in_place() {
    require_root();
    let n = Node::up("thd2", &["--pods", "1"]);
    // What a watchdog of another daemon, or an operator's hand, could leave.
    for (from, to) in [("wp-pod1", "up-pod1"), ("up-pod1", "wp-pod1")] {
        n.ok(
            n.var("NS_SEC"),
            &["tc", "qdisc", "add", "dev", from, "ingress"],
        );
        n.ok(
            n.var("NS_SEC"),
            &[
                "tc", "filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "u32",
                "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", to,
            ],
        );
    }
    assert!(mirred(&n, "wp-pod1"));
    let out = Command::new(guardwire_bin())
        .args(["mode", "pod1", "inline", "--socket", n.var("GW_SOCK")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !mirred(&n, "wp-pod1") && !mirred(&n, "up-pod1"),
        "redirect left in place"
    );
    let before = n.stats();
    n.ping(&n.pod_ns(1), n.var("PEER_IP"), 3);
    let after = n.stats();
    assert!(
        port(&after, "wp-pod1").counters.rx_frames > port(&before, "wp-pod1").counters.rx_frames,
        "guardwire forwards again"
    );
}

/// An ICMPv6 router advertisement from `mac`'s link-local address.
fn router_advertisement(mac: [u8; 6]) -> Vec<u8> {
    let ll = guardwire::pipeline::spoof::eui64(&mac);
    // Hop limit, flags, router lifetime 1800 s, reachable, retrans timers.
    let body = [64u8, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2(mac, [0x33, 0x33, 0, 0, 0, 1])
        .ipv6(
            ll.octets(),
            [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            255,
        )
        .icmpv6(etherparse::Icmpv6Type::Unknown {
            type_u8: 134,
            code_u8: 0,
            bytes5to8: [body[0], body[1], body[2], body[3]],
        })
        .write(&mut v, &body[4..])
        .unwrap();
    v
}

#[test]
fn a_pod_cannot_advertise_itself_as_router_to_the_others() {
    require_root();
    let n = Node::up("thd3", &["--pods", "2"]);
    let mac = mac_of(&n, &n.pod_ns(1), "eth0");
    let tx = raw_port(&n.pod_ns(1), "eth0");
    let rx = raw_port(&n.pod_ns(2), "eth0");
    let is_ra = |f: &[u8]| f.len() > 54 && f[12..14] == [0x86, 0xdd] && f[20] == 58 && f[54] == 134;
    assert_eq!(send_raw(&tx, &vec![router_advertisement(mac); 5]), 5);
    let got = collect(&rx, Duration::from_millis(800), is_ra);
    assert!(
        got.is_empty(),
        "pod2 received {} router advertisements",
        got.len()
    );
    let s = n.stats();
    assert_eq!(s.drops["rogue_ra"], 5, "{:?}", s.drops);
    assert_eq!(port(&s, "wp-pod1").counters.drops["rogue_ra"], 5);
}

#[test]
fn state_files_are_private_and_the_generation_never_goes_back() {
    require_root();
    let n = Node::up("thd4", &["--pods", "1"]);
    let c = n.client();
    for i in 0..3 {
        c.push_rules(&format!("# {i}\ndefault = \"allow\"\n"), "t")
            .unwrap();
    }
    c.set_mode("pod1", "mirror".parse().unwrap()).unwrap();
    n.ping(&n.pod_ns(1), n.var("PEER_IP"), 2);
    std::thread::sleep(Duration::from_millis(1500));
    let before = c.rules().unwrap().generation;
    let state = std::path::PathBuf::from(n.var("STATE"));
    let mode = |p: &str| {
        std::fs::metadata(state.join(p))
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("."), 0o700);
    for f in [
        "steering.json",
        "watch.json",
        "rules/history.json",
        "api/admin.token",
        "log/verdicts.jsonl",
    ] {
        assert_eq!(mode(f), 0o600, "{f}");
    }
    assert_eq!(mode(&format!("rules/gen-{before}.toml")), 0o600);

    // A rule naming an application that does not exist is refused, with the line.
    let e = c
        .push_rules(
            "[[rule]]\ncategory = \"gamng\"\naction = \"deny\"\n",
            "typo.toml",
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("typo.toml:2") && e.contains("did you mean \"gaming\""),
        "{e}"
    );

    // Restarted, the node goes on from the generation it had.
    let pid = n.var("GW_PID").to_string();
    n.ok(n.var("NS_SEC"), &["kill", &pid]);
    wait_for(
        || !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "guardwire to stop",
    );
    let log = std::fs::File::options()
        .append(true)
        .open(n.var("GW_LOG"))
        .unwrap();
    let _ = std::fs::remove_file(n.var("GW_SOCK"));
    let mut d = Command::new("ip")
        .args(["netns", "exec", n.var("NS_SEC")])
        .arg(guardwire_bin())
        .args(["run", "--config", n.var("GW_CONFIG")])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_for(|| c.health().is_ok(), "the restarted daemon");
    assert_eq!(c.rules().unwrap().generation, before);
    let next = c.push_rules("default = \"allow\"\n", "t").unwrap();
    assert_eq!(next.generation, before + 1);
    let _ = d.kill();
    let _ = d.wait();
}

#[test]
fn a_hung_guardwire_fails_open_within_a_second_and_takes_back_when_it_moves() {
    require_root();
    let n = Node::up("thd5", &["--pods", "1"]);
    let pid = n.var("GW_PID").to_string();
    let peer = n.var("PEER_IP").to_string();
    n.ping(&n.pod_ns(1), &peer, 2);
    n.iperf_server(n.var("NS_PEER"), &peer);
    let pod = n.pod_ns(1);
    let iperf = {
        let (pod, peer) = (pod.clone(), peer.clone());
        std::thread::spawn(move || {
            Command::new("ip")
                .args([
                    "netns", "exec", &pod, "timeout", "30", "iperf3", "-c", &peer,
                ])
                .args(["-t", "7", "-i", "0.1", "-J"])
                .output()
                .unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    let stopped = std::time::Instant::now();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let guard = scopeguard(&pid);
    while !mirred(&n, "wp-pod1") {
        assert!(
            stopped.elapsed() < Duration::from_millis(1000),
            "no kernel path 1 s into the hang"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let failed_open = stopped.elapsed();
    // Traffic flows meanwhile, on the kernel path.
    n.ping(&pod, &peer, 3);
    std::thread::sleep(Duration::from_secs(3).saturating_sub(stopped.elapsed()));
    drop(guard); // SIGCONT
    let resumed = std::time::Instant::now();
    wait_for(|| !mirred(&n, "wp-pod1"), "the kernel path taken back out");
    let handed_back = resumed.elapsed();
    let out = iperf.join().unwrap();
    assert!(
        out.status.success(),
        "iperf3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (gap_ms, _, gbps) = iperf_gap(&out.stdout);
    eprintln!(
        "failed open {failed_open:?} into the hang, handed back {handed_back:?} after it; \
         longest iperf3 gap {gap_ms} ms, {gbps:.2} Gbit/s"
    );
    assert!(
        gap_ms < 2000,
        "traffic stopped for {gap_ms} ms of a 3 s hang"
    );
    let before = n.stats();
    n.ping(&pod, &peer, 3);
    let after = n.stats();
    assert!(
        port(&after, "wp-pod1").counters.rx_frames > port(&before, "wp-pod1").counters.rx_frames,
        "guardwire forwards again"
    );
}

/// Sends SIGCONT to `pid` when dropped, so a failing test never leaves the
/// daemon stopped.
fn scopeguard(pid: &str) -> impl Drop + '_ {
    struct Cont<'a>(&'a str);
    impl Drop for Cont<'_> {
        fn drop(&mut self) {
            let _ = Command::new("kill").args(["-CONT", self.0]).status();
        }
    }
    Cont(pid)
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, mib: u64) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let o = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        SmallDisk(dir.to_path_buf())
    }

    fn free(&self) -> u64 {
        let o = std::process::Command::new("stat")
            .args(["-f", "-c", "%a %S"])
            .arg(&self.0)
            .output()
            .unwrap();
        let t = String::from_utf8_lossy(&o.stdout);
        let mut it = t.split_whitespace().map(|v| v.parse::<u64>().unwrap());
        it.next().unwrap() * it.next().unwrap()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_flood_on_a_small_disk_leaves_room_for_the_nodes_state() {
    let n = Node::up("thd9", &["--pods", "1", "--forwarder", "none"]);
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir.path().join("state"), 16);
    let cfg = "[node]\nname = \"t\"\ncontrol_socket = \"{socket}\"\nstate_dir = \"{state}\"\n\
               [inspect]\nlog_rotate_mb = 1\nlog_keep = 50\nlog_records_per_sec = 0\nlog_disk_reserve_mb = 4\n\
               [[workload]]\nname = \"pod1\"\nkind = \"pod\"\nworkload_port = \"wp-pod1\"\nuplink_port = \"up-pod1\"\n";
    let d = Daemon::start(n.var("NS_SEC"), dir.path(), cfg);
    let c = d.client();
    // Leave about 5 MiB free: the flood's records would take more.
    let filler = disk.0.join("filler");
    let fill = disk.free().saturating_sub(5 << 20);
    std::fs::write(&filler, vec![0u8; fill as usize]).unwrap();
    let peer = n.var("PEER_IP").to_string();
    // The path works (and pod1's gateway is resolved) before the flood.
    n.ping(&n.pod_ns(1), &peer, 2);
    let flood = udp_flood_script(&peer, 10000..40000);
    n.ok(
        &n.pod_ns(1),
        &["timeout", "60", "/usr/bin/python3", "-c", &flood],
    );
    // Every record reaches the writer: written, or kept out of the files for
    // want of room. Together they are more than the disk had room for.
    let t = std::time::Instant::now();
    let log = loop {
        let u = c.usage(10, None).unwrap();
        if u.log.written + u.log.no_room >= 29_000 {
            break u.log;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the flood's records did not reach the log: {} flows created, log {:?}",
            u.flows.created,
            u.log
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        (log.written + log.no_room) * 200 > 5 << 20,
        "the flood was too small to fill the disk: {log:?}"
    );
    let free = disk.free();
    assert!(free >= 3 << 20, "the log left only {free} B free");
    // The node's state can still be saved: a rule push, a mode switch.
    let rev = c
        .push_rules("default = \"allow\"\n[[rule]]\nproto = \"tcp\"\ndst_ports = \"23\"\naction = \"deny\"\n", "t")
        .expect("a rule push on a full log disk");
    assert_eq!(c.rules().unwrap().generation, rev.generation);
    c.set_mode("pod1", guardwire::vocab::SteeringMode::Mirror)
        .expect("a mode switch on a full log disk");
    c.set_mode("pod1", guardwire::vocab::SteeringMode::Inline)
        .unwrap();
    n.ping(&n.pod_ns(1), &peer, 2);
    drop(d);
    drop(disk);
}
