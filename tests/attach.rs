//! Live attach and detach of CNI-made pods: the pod and the host see nothing
//! change, a TCP stream runs across attach and detach, detach restores the node
//! exactly, and bad input is refused with nothing left half-done. Needs root.

mod common;

use common::*;
use guardwire::control::http::client::Client;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn host_sysctls(n: &Node, dev: &str) -> String {
    let mut s = String::new();
    for k in [
        "ipv4/conf/DEV/forwarding",
        "ipv4/conf/DEV/proxy_arp",
        "ipv4/conf/DEV/rp_filter",
        "ipv6/conf/DEV/disable_ipv6",
    ] {
        let p = format!("/proc/sys/net/{}", k.replace("DEV", dev));
        s.push_str(&format!("{k}={}", n.ok(n.var("NS_HOST"), &["cat", &p])));
    }
    s
}

fn attach(sock: &str, ns: &str, name: &str) -> std::process::Output {
    Command::new(guardwire_bin())
        .args(["attach", "pod", ns, "--name", name, "--socket", sock])
        .output()
        .unwrap()
}

fn detach(sock: &str, name: &str) -> std::process::Output {
    Command::new(guardwire_bin())
        .args(["detach", name, "--socket", sock])
        .output()
        .unwrap()
}

fn ok(o: std::process::Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn bridge_pod_attached_and_detached_live_under_tcp() {
    let n = Node::up("tat1", &["--pods", "2", "--live"]);
    let sock = n.var("GW_SOCK").to_string();
    let pod = n.pod_ns(1);
    let hostif = n.var("POD_HOSTIF_1").to_string();
    let host_before = snapshot(&n, n.var("NS_HOST"), false);
    let pod_before = snapshot(&n, &pod, true);
    let sys_before = host_sysctls(&n, &hostif);

    let peer = n.var("PEER_IP").to_string();
    n.iperf_server(n.var("NS_PEER"), &peer);
    let client = std::thread::spawn({
        let (pod, peer) = (pod.clone(), peer.clone());
        move || {
            Command::new("ip")
                .args([
                    "netns", "exec", &pod, "timeout", "60", "iperf3", "-c", &peer, "-t", "6", "-J",
                ])
                .output()
                .unwrap()
        }
    });
    std::thread::sleep(Duration::from_millis(1000));
    let out = ok(attach(&sock, &pod, "pod1"));
    assert!(out.contains("wp-pod1"), "{out}");
    // The stream now crosses guardwire.
    wait_for(
        || {
            let s = n_stats(&sock);
            port(&s, "wp-pod1").counters.rx_frames > 1000
        },
        "the TCP stream through wp-pod1",
    );
    std::thread::sleep(Duration::from_millis(1500));
    ok(detach(&sock, "pod1"));
    let r = client.join().unwrap();
    assert!(
        r.status.success(),
        "iperf3 across attach and detach: {}",
        String::from_utf8_lossy(&r.stdout)
    );

    same(
        snapshot(&n, n.var("NS_HOST"), false),
        &host_before,
        "host ns restored",
    );
    same(snapshot(&n, &pod, true), &pod_before, "pod ns unchanged");
    assert_eq!(host_sysctls(&n, &hostif), sys_before);
    assert!(
        !n.ok(n.var("NS_SEC"), &["ip", "-o", "link"])
            .contains("pod1"),
        "no port left in sec ns"
    );
}

fn n_stats(sock: &str) -> guardwire::datapath::StatsSnapshot {
    Client::unix(sock).stats().unwrap()
}

/// Runs a CNI plugin inside the node's host ns and asserts it worked.
fn cni(n: &Node, cmd: &str, plugin: &str, pod_ns: &str, conf: &str) -> String {
    let path = std::path::PathBuf::from(format!("/usr/lib/cni/{plugin}"));
    let (ok, out) = cni_plugin(n, &path, cmd, pod_ns, conf, Path::new("/usr/lib/cni"));
    assert!(ok, "CNI {plugin} {cmd}: {out}");
    out
}

#[test]
fn ptp_pod_keeps_its_routes_and_restores_exactly() {
    let n = Node::up("tat2", &["--pods", "1", "--live"]);
    let sock = n.var("GW_SOCK").to_string();
    let pod = TempNetns::new("tat2-pp1");
    let ns = pod.0.clone();
    let dir = tempfile::tempdir().unwrap();
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"ptpnet","type":"ptp","mtu":1400,"ipMasq":false,"ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.245.0.0/24"}}]],"routes":[{{"dst":"0.0.0.0/0"}}],"dataDir":"{}"}}}}"#,
        dir.path().display()
    );
    cni(&n, "ADD", "ptp", &ns, &conf);
    n.ok(
        n.var("NS_PEER"),
        &[
            "ip",
            "route",
            "add",
            "10.245.0.0/24",
            "via",
            n.var("PEER_GW"),
        ],
    );
    n.ping(&ns, n.var("PEER_IP"), 2);
    let host_before = snapshot(&n, n.var("NS_HOST"), false);
    let pod_before = snapshot(&n, &ns, true);

    ok(attach(&sock, &ns, "ptp1"));
    // The /32 route and gateway address moved to the new host end: still routed.
    n.ping(&ns, n.var("PEER_IP"), 5);
    let s = n_stats(&sock);
    assert!(
        port(&s, "wp-ptp1").counters.rx_frames >= 5,
        "ptp pod's frames cross guardwire"
    );
    ok(detach(&sock, "ptp1"));
    n.ping(&ns, n.var("PEER_IP"), 2);
    same(
        snapshot(&n, n.var("NS_HOST"), false),
        &host_before,
        "host ns restored",
    );
    same(snapshot(&n, &ns, true), &pod_before, "pod ns unchanged");
    cni(&n, "DEL", "ptp", &ns, &conf);
}

#[test]
fn macvlan_pod_is_refused_with_the_reason() {
    let n = Node::up("tat3", &["--pods", "1", "--live"]);
    let sock = n.var("GW_SOCK").to_string();
    let pod = TempNetns::new("tat3-mv1");
    let ns = pod.0.clone();
    n.ok(
        n.var("NS_HOST"),
        &[
            "ip", "link", "add", "mvm0", "type", "veth", "peer", "name", "mvm1",
        ],
    );
    n.ok(n.var("NS_HOST"), &["ip", "link", "set", "mvm0", "up"]);
    let dir = tempfile::tempdir().unwrap();
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"mvnet","type":"macvlan","master":"mvm0","mode":"bridge","ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.246.0.0/24"}}]],"dataDir":"{}"}}}}"#,
        dir.path().display()
    );
    cni(&n, "ADD", "macvlan", &ns, &conf);
    let o = attach(&sock, &ns, "mv1");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("macvlan") && err.contains("no host-side end"),
        "{err}"
    );
    assert!(!n.ok(n.var("NS_SEC"), &["ip", "-o", "link"]).contains("mv1"));
}

#[test]
fn bad_input_is_refused_and_a_failed_attach_rolls_back() {
    let n = Node::up("tat4", &["--pods", "1", "--forwarder", "none", "--live"]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[node]\nname = \"t\"\ncontrol_socket = \"{{socket}}\"\nstate_dir = \"{{state}}\"\nhost_netns = \"/var/run/netns/{}\"\n",
        n.var("NS_HOST")
    );
    let pod = n.pod_ns(1);
    let host_before = snapshot(&n, n.var("NS_HOST"), false);
    let pod_before = snapshot(&n, &pod, true);
    for step in ["pair", "move", "carry-over"] {
        let d = Daemon::start_with_env(
            n.var("NS_SEC"),
            dir.path(),
            &cfg,
            &[("GUARDWIRE_FAIL_ATTACH_AT", step)],
        );
        let o = attach(d.socket.to_str().unwrap(), &pod, "pod1");
        assert_eq!(o.status.code(), Some(2), "attach failing at {step}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("failing on purpose"));
        drop(d);
        same(
            snapshot(&n, n.var("NS_HOST"), false),
            &host_before,
            &format!("host ns after a failure at {step}"),
        );
        same(
            snapshot(&n, &pod, true),
            &pod_before,
            &format!("pod ns after a failure at {step}"),
        );
        assert!(
            !n.ok(n.var("NS_SEC"), &["ip", "-o", "link"])
                .contains("pod1"),
            "sec ns after a failure at {step}"
        );
    }
    let d = Daemon::start(n.var("NS_SEC"), dir.path(), &cfg);
    let sock = d.socket.to_str().unwrap().to_string();
    let err = |o: std::process::Output| {
        assert_eq!(o.status.code(), Some(2));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert!(err(attach(&sock, "nosuchns", "x")).contains("nosuchns"));
    assert!(err(attach(&sock, &pod, "a-name-much-too-long")).contains("too long"));
    let o = Command::new(guardwire_bin())
        .args([
            "attach", "pod", &pod, "--ifname", "eth9", "--name", "p", "--socket", &sock,
        ])
        .output()
        .unwrap();
    assert!(err(o).contains("no interface eth9"));
    // Without permission on the control socket: a clear refusal.
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(guardwire_bin())
        .args(["attach", "pod", &pod, "--name", "pod1", "--socket", &sock])
        .output()
        .unwrap();
    assert!(err(o).contains("Permission denied"));
    ok(attach(&sock, &pod, "pod1"));
    assert!(err(attach(&sock, &pod, "pod1")).contains("already attached"));
    assert!(err(detach(&sock, "nosuch")).contains("no workload"));
    // A restart re-adopts the attachment without re-plumbing.
    drop(d);
    let d = Daemon::start(n.var("NS_SEC"), dir.path(), &cfg);
    let list = d.client().workloads().unwrap();
    assert_eq!(list[0].name, "pod1", "{list:?}");
    n.ping(&pod, n.var("PEER_IP"), 3);
    ok(detach(d.socket.to_str().unwrap(), "pod1"));
    same(
        snapshot(&n, n.var("NS_HOST"), false),
        &host_before,
        "host ns after detach following a restart",
    );
}

#[test]
fn vm_tap_attached_while_its_holder_runs() {
    let n = Node::up("tat5", &["--pods", "0", "--vm", "--live"]);
    let sock = n.var("GW_SOCK").to_string();
    let host_before = snapshot(&n, n.var("NS_HOST"), false);
    n.ping(n.var("NS_VM"), n.var("PEER_IP"), 2);
    let o = Command::new(guardwire_bin())
        .args([
            "attach", "vm", "--tap", "tap-vm1", "--name", "vm1", "--socket", &sock,
        ])
        .args(["--ip", n.var("VM_IP"), "--mac", n.var("VM_MAC")])
        .output()
        .unwrap();
    ok(o);
    n.ping(n.var("NS_VM"), n.var("PEER_IP"), 5);
    // The VM's addresses, given at attach, are enforced: a frame from another
    // source address is dropped as spoofed.
    let before = n_stats(&sock).drops["spoof_ip"];
    let vm_mac = mac_of(&n, n.var("NS_VM"), "eth0");
    let mut f = Vec::new();
    etherparse::PacketBuilder::ethernet2(vm_mac, [0xff; 6])
        .ipv4([10, 244, 0, 201], [10, 244, 0, 1], 64)
        .udp(9, 9)
        .write(&mut f, b"spoofed")
        .unwrap();
    assert_eq!(send_raw(&raw_port(n.var("NS_VM"), "eth0"), &[f]), 1);
    wait_for(
        || n_stats(&sock).drops["spoof_ip"] > before,
        "the VM's spoofed frame dropped",
    );
    n.iperf_server(n.var("NS_PEER"), n.var("PEER_IP"));
    let (bps, _) = n.iperf(n.var("NS_VM"), n.var("PEER_IP"), 2, &[]);
    assert!(bps > 50e6, "VM TCP through guardwire: {bps}");
    let s = n_stats(&sock);
    assert!(
        port(&s, "wp-vm1").counters.rx_frames > 1000,
        "the VM's frames cross guardwire"
    );
    ok(detach(&sock, "vm1"));
    n.ping(n.var("NS_VM"), n.var("PEER_IP"), 2);
    same(
        snapshot(&n, n.var("NS_HOST"), false),
        &host_before,
        "host ns restored",
    );
}

#[test]
fn vm_hybrid_plug_veth_taken_over() {
    let n = Node::up("tat6", &["--pods", "0", "--vm", "--live"]);
    let sock = n.var("GW_SOCK").to_string();
    let h = n.var("NS_HOST").to_string();
    // OpenStack-style hybrid plug: tap in qbr, veth qvb (in qbr) <-> qvo (in the
    // integration bridge, here cni0).
    for cmd in [
        "ip link add qbr1 type bridge",
        // qbr carries no L3 of the host's: stop the host answering ARP for its
        // cni0 address on qbr1 (it would then route the VM around the plug).
        "sysctl -qw net.ipv4.conf.qbr1.arp_ignore=1",
        "ip link set qbr1 up",
        "ip link set tap-vm1 nomaster",
        "ip link set tap-vm1 master qbr1",
        "ip link add qvb1 type veth peer name qvo1",
        "ip link set qvb1 master qbr1",
        "ip link set qvo1 master cni0",
        "ip link set qvb1 up",
        "ip link set qvo1 up",
    ] {
        n.ok(&h, &cmd.split(' ').collect::<Vec<_>>());
    }
    n.ping(n.var("NS_VM"), n.var("PEER_IP"), 2);
    let host_before = snapshot(&n, &h, false);
    let o = Command::new(guardwire_bin())
        .args([
            "attach", "vm", "--hybrid", "qvb1", "--name", "vm1", "--socket", &sock,
        ])
        .output()
        .unwrap();
    ok(o);
    n.ping(n.var("NS_VM"), n.var("PEER_IP"), 5);
    let s = n_stats(&sock);
    // The new pair's sec end faces the VM; the migrated veth faces br-int.
    assert!(port(&s, "wp-vm1").counters.rx_frames >= 5, "{:?}", s.ports);
    assert!(port(&s, "up-vm1").counters.tx_frames >= 5);
    ok(detach(&sock, "vm1"));
    n.ping(n.var("NS_VM"), n.var("PEER_IP"), 2);
    same(snapshot(&n, &h, false), &host_before, "host ns restored");
    let o = Command::new(guardwire_bin())
        .args([
            "attach", "vm", "--tap", "qvb1", "--name", "x", "--socket", &sock,
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("needs a tap"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
