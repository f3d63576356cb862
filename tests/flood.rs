//! What one pod sends must not change how another is judged, in real
//! namespaces with real sockets: a forged DNS answer from pod1 does not name
//! pod2's flows, and pod1's SYN flood neither evicts pod2's idle connection
//! from a small flow table nor hides among pod2's counters: its drops are
//! counted by reason on pod1's port. Needs root.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

const CONFIG: &str = r#"
[node]
name = "flood"
control_socket = "{socket}"
state_dir = "{state}"
[datapath]
workers = 1
[inspect]
flow_capacity = 2048
log_records_per_sec = 50
[[workload]]
name = "pod1"
kind = "pod"
workload_port = "wp-pod1"
uplink_port = "up-pod1"
[[workload]]
name = "pod2"
kind = "pod"
workload_port = "wp-pod2"
uplink_port = "up-pod2"
"#;

/// Rules: streaming is denied (a forged name would cut pod2 off), and so is
/// the flood's port; other connections the pods open pass, connections from
/// outside do not (a reply taken for a new flow from outside is cut).
const RULES: &str = r#"
default = "deny"
[[rule]]
category = "streaming"
action = "deny"
[[rule]]
proto = "tcp"
dst_ports = "9"
action = "deny"
[[rule]]
direction = "egress"
action = "allow"
"#;

/// A DNS response (id 7) saying `www.youtube.com` is at `addr`.
fn forged_answer(addr: &str) -> String {
    let ip: Vec<String> = addr.split('.').map(str::to_string).collect();
    format!(
        "bytes([0,7, 0x81,0x80, 0,1, 0,1, 0,0, 0,0]) + \
         b'\\x03www\\x07youtube\\x03com\\x00' + bytes([0,1, 0,1]) + \
         bytes([0xc0,12, 0,1, 0,1, 0,0,1,0x2c, 0,4, {}])",
        ip.join(",")
    )
}

#[test]
fn one_pods_forged_answers_and_syn_flood_change_nothing_for_another() {
    let n = Node::up("tfl1", &["--pods", "2", "--forwarder", "none"]);
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(n.var("NS_SEC"), dir.path(), CONFIG);
    let c = d.client();
    c.push_rules(RULES, "flood-test").unwrap();
    let peer = n.var("PEER_IP").to_string();
    let pod2_ip = n.pod_ip(2);

    // An echo server on the peer, and pod2's connection to it, idle between
    // its two exchanges while pod1 does its worst.
    let server = Command::new("ip")
        .args(["netns", "exec", n.var("NS_PEER"), "python3", "-c"])
        .arg(
            "import socket\n\
             s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('', 7000)); s.listen(8)\n\
             while True:\n\
             \x20   c, _ = s.accept()\n\
             \x20   while True:\n\
             \x20       b = c.recv(100)\n\
             \x20       if not b: break\n\
             \x20       c.sendall(b)\n",
        )
        .spawn()
        .unwrap();
    let _server = KillOnDrop(server);
    std::thread::sleep(Duration::from_millis(300));
    let client = Command::new("ip")
        .args([
            "netns",
            "exec",
            &n.pod_ns(2),
            "timeout",
            "60",
            "python3",
            "-c",
        ])
        .arg(format!(
            "import socket, sys, time\n\
             s = socket.create_connection(('{peer}', 7000), timeout=5)\n\
             s.sendall(b'one'); assert s.recv(100) == b'one'\n\
             print('first', flush=True)\n\
             sys.stdin.readline()\n\
             s.sendall(b'two'); print(s.recv(100).decode(), flush=True)\n"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut client = KillOnDrop(client);
    let mut out = std::io::BufReader::new(client.0.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "first", "pod2's connection did not start");

    // pod1 forges answers: to pod2, and out towards the peer's resolver side.
    let forge = format!(
        "import socket\n\
         a = {}\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('', 53))\n\
         for dst in ('{pod2_ip}', '{peer}'):\n\
         \x20   for _ in range(5): s.sendto(a, (dst, 5353))\n",
        forged_answer(&peer)
    );
    n.ok(&n.pod_ns(1), &["python3", "-c", &forge]);
    // pod2's new connection to the peer is not taken for youtube.
    let o = n.exec(
        &n.pod_ns(2),
        &[
            "timeout",
            "5",
            "bash",
            "-c",
            &format!("echo hi > /dev/tcp/{peer}/7000"),
        ],
    );
    assert!(o.status.success(), "a forged answer cut pod2 off");

    // pod1: 20000 SYNs to the denied port, each from a new source port: ten
    // times the flow table.
    let flood = format!(
        "import socket\n\
         for i in range(20000):\n\
         \x20   s = socket.socket(); s.setblocking(False)\n\
         \x20   try: s.connect(('{peer}', 9))\n\
         \x20   except BlockingIOError: pass\n\
         \x20   s.close()\n"
    );
    n.ok(&n.pod_ns(1), &["timeout", "60", "python3", "-c", &flood]);

    // pod2's idle connection still carries data, both ways.
    use std::io::Write;
    client.0.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "two", "pod2's connection died in pod1's flood");

    // The drops are pod1's, by reason; pod2 has none.
    let s = d.stats();
    let denied = |p: &str| {
        port(&s, p)
            .counters
            .drops
            .get("denied")
            .copied()
            .unwrap_or(0)
    };
    assert!(
        denied("wp-pod1") >= 10_000,
        "pod1 denied: {}",
        denied("wp-pod1")
    );
    assert_eq!(denied("wp-pod2"), 0);
    let u = c.usage(10, None).unwrap();
    assert!(u.flows.evicted > 0, "the flood did not fill the table");
    assert!(
        u.flows.dns_ignored >= 5,
        "forged answers: {}",
        u.flows.dns_ignored
    );
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
