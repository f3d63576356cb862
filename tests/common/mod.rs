//! Shared helpers of the integration tests: a node from `testbed/node.sh`,
//! commands inside its namespaces, raw frames, guardwire's counters.
//!
//! These tests need root (they create namespaces) and remove what they create
//! even when they fail (`Node` tears the node down on drop).
#![allow(dead_code)]

use guardwire::control::http::client::Client;
use guardwire::datapath::{PortStats, StatsSnapshot};
use guardwire::port::{Frame, PacketPort, PacketPortOptions, Port, VnetHdr, send_all};
use guardwire::steer::netns;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Nodes are heavy on a 2-core machine: tests that build one run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_guardwire"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `guardwire` binary under test.
pub fn guardwire_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_guardwire"))
}

/// Fails the test early and clearly when not root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "integration tests need root (they create network namespaces)"
    );
}

fn node_sh(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(repo().join("testbed/node.sh"))
        .args(args)
        .env("GW_BIN_DIR", bin_dir())
        .output()
        .expect("run testbed/node.sh")
}

/// A running test-bed node.
pub struct Node {
    pub prefix: String,
    pub env: HashMap<String, String>,
    _serial: MutexGuard<'static, ()>,
}

impl Node {
    /// Builds node `prefix` with `node.sh up PREFIX ARGS...`.
    pub fn up(prefix: &str, args: &[&str]) -> Node {
        require_root();
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let _ = node_sh(&["down", prefix]);
        let mut a = vec!["up", prefix];
        a.extend_from_slice(args);
        let out = node_sh(&a);
        if !out.status.success() {
            let _ = node_sh(&["down", prefix]);
            panic!(
                "node.sh up {prefix} failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let env = parse_env(&String::from_utf8_lossy(&out.stdout));
        Node {
            prefix: prefix.to_string(),
            env,
            _serial: serial,
        }
    }

    /// A value of the node's env (panics if missing).
    pub fn var(&self, k: &str) -> &str {
        self.env
            .get(k)
            .unwrap_or_else(|| panic!("node env has no {k}: {:?}", self.env))
    }

    /// Namespace of pod `i` (1-based).
    pub fn pod_ns(&self, i: usize) -> String {
        self.var(&format!("POD_NS_{i}")).to_string()
    }

    /// IP of pod `i`.
    pub fn pod_ip(&self, i: usize) -> String {
        self.var(&format!("POD_IP_{i}")).to_string()
    }

    /// Runs `cmd` in namespace `ns`; returns the output (does not check status).
    pub fn exec(&self, ns: &str, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(cmd)
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {ns} {cmd:?}: {e}"))
    }

    /// Runs `cmd` in `ns` and asserts it succeeds; returns stdout.
    pub fn ok(&self, ns: &str, cmd: &[&str]) -> String {
        let o = self.exec(ns, cmd);
        assert!(
            o.status.success(),
            "{cmd:?} in {ns} failed:\n{}\n{}\n--- guardwire log ---\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.log()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Pings `dst` from `ns` `count` times; asserts every reply came back.
    pub fn ping(&self, ns: &str, dst: &str, count: u32) {
        let c = count.to_string();
        let out = self.ok(ns, &["ping", "-c", &c, "-i", "0.05", "-W", "2", dst]);
        assert!(
            out.contains(&format!("{count} received")),
            "ping {dst} from {ns}:\n{out}"
        );
    }

    /// guardwire's counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.client().stats().expect("guardwire stats")
    }

    /// A client of the node's guardwire (its control socket).
    pub fn client(&self) -> Client {
        Client::unix(self.var("GW_SOCK"))
    }

    /// guardwire's log so far.
    pub fn log(&self) -> String {
        self.env
            .get("GW_LOG")
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// Starts `iperf3 -s -1` bound to `ip` in `ns` (it exits after one test).
    pub fn iperf_server(&self, ns: &str, ip: &str) {
        self.ok(ns, &["iperf3", "-s", "-1", "-D", "-B", ip]);
        wait_for(
            || {
                self.exec(ns, &["ss", "-ltn"])
                    .stdout
                    .windows(5)
                    .any(|w| w == b":5201")
            },
            "iperf3 server",
        );
    }

    /// Runs a bounded iperf3 client; returns (receiver bits/s, retransmits).
    pub fn iperf(&self, ns: &str, dst: &str, secs: u32, extra: &[&str]) -> (f64, u64) {
        let t = secs.to_string();
        let mut cmd = vec!["timeout", "60", "iperf3", "-c", dst, "-t", &t, "-J"];
        cmd.extend_from_slice(extra);
        let out = self.ok(ns, &cmd);
        let v: serde_json::Value = serde_json::from_str(&out).expect("iperf3 JSON");
        let end = &v["end"];
        (
            end["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap_or(0.0),
            end["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let out = node_sh(&["down", &self.prefix]);
        if !out.status.success() {
            eprintln!(
                "node.sh down {} failed: {}",
                self.prefix,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn parse_env(s: &str) -> HashMap<String, String> {
    s.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return None;
            }
            Some((
                k.to_string(),
                v.trim_matches(|c| c == '\'' || c == '"').to_string(),
            ))
        })
        .collect()
}

/// Polls `cond` for up to 5 s.
pub fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The counters of port `name`, with what the kernel fast path forwarded in
/// and out by it added to `rx_*` and `tx_*`: a frame crossed the port by
/// either path.
pub fn port(s: &StatsSnapshot, name: &str) -> PortStats {
    let mut p = s
        .ports
        .iter()
        .find(|p| p.port == name)
        .unwrap_or_else(|| panic!("no port {name} in stats"))
        .clone();
    let c = &mut p.counters;
    c.rx_frames += c.fast_rx_frames;
    c.rx_bytes += c.fast_rx_bytes;
    c.tx_frames += c.fast_tx_frames;
    c.tx_bytes += c.fast_tx_bytes;
    p
}

/// Opens a raw packet port on `ifname` inside namespace `ns` (the socket stays in `ns`).
pub fn raw_port(ns: &str, ifname: &str) -> PacketPort {
    let n = ifname.to_string();
    netns::run_in(ns, move || {
        PacketPort::open(
            &n,
            &PacketPortOptions {
                ring_frames: 30,
                slot_bytes: guardwire::port::RING_FRAME_SIZE,
                promisc: true,
                qdisc_bypass: false,
                sndbuf: 4 << 20,
            },
        )
    })
    .unwrap_or_else(|e| panic!("packet socket on {ns}/{ifname}: {e}"))
}

/// Sends raw frames (no vnet offload) on `p`; returns how many the kernel took.
pub fn send_raw(p: &PacketPort, frames: &[Vec<u8>]) -> usize {
    let fr: Vec<Frame<'_>> = frames
        .iter()
        .map(|f| Frame::new(f, VnetHdr::default(), None))
        .collect();
    send_all(p, &fr).sent
}

/// Collects frames received on `p` for `dur` that satisfy `keep`, as (tag, bytes).
pub fn collect(
    p: &PacketPort,
    dur: Duration,
    keep: impl Fn(&[u8]) -> bool,
) -> Vec<(Option<guardwire::port::VlanTag>, Vec<u8>)> {
    let mut got = Vec::new();
    let t = Instant::now();
    while t.elapsed() < dur {
        let n = p
            .recv_burst(64, &mut |frames| {
                for f in frames {
                    if keep(f.data()) {
                        got.push((f.vlan, f.data().to_vec()));
                    }
                }
            })
            .expect("recv");
        if n == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    got
}

/// MAC of `ifname` in `ns`.
pub fn mac_of(node: &Node, ns: &str, ifname: &str) -> [u8; 6] {
    let s = node.ok(ns, &["cat", &format!("/sys/class/net/{ifname}/address")]);
    let v: Vec<u8> = s
        .trim()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

/// A guardwire daemon a test started itself (in a node built with `--forwarder none`).
pub struct Daemon {
    child: std::process::Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// Writes `config` (TOML; `{socket}` and `{state}` replaced by paths in `dir`) to `dir` and
    /// starts `guardwire run` in namespace `ns`; waits for its control socket.
    pub fn start(ns: &str, dir: &Path, config: &str) -> Daemon {
        Daemon::start_with_env(ns, dir, config, &[])
    }

    /// As `start`, with extra environment variables for the daemon.
    pub fn start_with_env(ns: &str, dir: &Path, config: &str, env: &[(&str, &str)]) -> Daemon {
        let socket = dir.join("gw.sock");
        let log = dir.join("gw.log");
        let cfg = dir.join("gw.toml");
        let state = dir.join("state");
        let text = config
            .replace("{socket}", &socket.display().to_string())
            .replace("{state}", &state.display().to_string());
        std::fs::write(&cfg, text).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(guardwire_bin())
            .args(["run", "--config"])
            .arg(&cfg)
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap())
            .spawn()
            .expect("start guardwire");
        let mut d = Daemon { child, socket, log };
        let t = Instant::now();
        while !d.socket.exists() {
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!(
                    "guardwire exited with {st}:\n{}",
                    std::fs::read_to_string(&d.log).unwrap_or_default()
                );
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "guardwire did not open its control socket"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    /// The daemon's counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.client().stats().expect("guardwire stats")
    }

    /// A client of this daemon.
    pub fn client(&self) -> Client {
        Client::unix(&self.socket)
    }

    /// Waits for the daemon to end by itself (a crash), at most `timeout`,
    /// and reaps it.
    pub fn wait_exit(mut self, timeout: Duration) {
        let t = Instant::now();
        while !matches!(self.child.try_wait(), Ok(Some(_))) {
            assert!(t.elapsed() < timeout, "guardwire did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Kills the daemon with SIGKILL (no cleanup of its own) and reaps it.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: sends SIGTERM to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a CNI plugin the way a container runtime does, inside the node's host
/// ns, with `extra_path` added to CNI_PATH; returns (success, stdout).
pub fn cni_plugin(
    n: &Node,
    plugin: &Path,
    cmd: &str,
    pod_ns: &str,
    conf: &str,
    extra_path: &Path,
) -> (bool, String) {
    use std::io::Write;
    let mut c = Command::new("ip")
        .args(["netns", "exec", n.var("NS_HOST"), "env", "-i"])
        .arg(format!(
            "PATH={}",
            std::env::var("PATH").unwrap_or_default()
        ))
        .arg(format!("CNI_COMMAND={cmd}"))
        .arg(format!("CNI_CONTAINERID={pod_ns}-0123456789abcdef"))
        .arg(format!("CNI_NETNS=/var/run/netns/{pod_ns}"))
        .arg("CNI_IFNAME=eth0")
        .arg(format!("CNI_PATH=/usr/lib/cni:{}", extra_path.display()))
        .arg(plugin)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(conf.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    let mut out = String::from_utf8_lossy(&o.stdout).into_owned();
    out.push_str(&String::from_utf8_lossy(&o.stderr));
    (o.status.success(), out)
}

/// A network namespace a test made outside the node, removed on drop.
pub struct TempNetns(pub String);

impl TempNetns {
    /// Creates namespace `name`.
    pub fn new(name: &str) -> TempNetns {
        assert!(
            Command::new("ip")
                .args(["netns", "add", name])
                .status()
                .unwrap()
                .success()
        );
        TempNetns(name.to_string())
    }
}

impl Drop for TempNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// From an `iperf3 -J -i 0.1` report: (longest run of empty intervals in ms,
/// retransmits, receiver Gbit/s).
pub fn iperf_gap(json: &[u8]) -> (u64, u64, f64) {
    let v: serde_json::Value = serde_json::from_slice(json).expect("iperf3 JSON");
    let (mut worst, mut gap) = (0u64, 0u64);
    for i in v["intervals"].as_array().into_iter().flatten() {
        gap = if i["sum"]["bytes"].as_u64().unwrap_or(0) == 0 {
            gap + 1
        } else {
            0
        };
        worst = worst.max(gap);
    }
    let step_ms =
        (v["intervals"][0]["sum"]["seconds"].as_f64().unwrap_or(0.1) * 1000.0).round() as u64;
    (
        worst * step_ms.max(1),
        v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
        v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0)
            / 1e9,
    )
}

/// What a namespace looks like, for before/after comparisons. Interface indexes
/// of the host ends are left out (detach re-creates the new pair, the issue
/// allows their ifindex to change); the pod's own lines keep theirs.
pub fn snapshot(n: &Node, ns: &str, keep_index: bool) -> String {
    // IPv6 duplicate address detection must be over, or the same state reads
    // differently a second later (tentative flags, local routes).
    wait_for(
        || {
            n.ok(ns, &["ip", "-6", "addr", "show", "tentative"])
                .trim()
                .is_empty()
        },
        "IPv6 DAD",
    );
    let mut out = String::new();
    for cmd in [
        vec!["ip", "-o", "link"],
        vec!["ip", "-o", "addr"],
        vec!["ip", "route", "show", "table", "all"],
        vec!["ip", "-6", "route", "show", "table", "all"],
        vec!["ip", "neigh", "show", "nud", "permanent"],
        vec!["tc", "qdisc"],
    ] {
        let text = n.ok(ns, &cmd);
        let mut lines: Vec<String> = text
            .lines()
            .map(|l| {
                let mut l = l.to_string();
                if let Some(at) = l.find("@if") {
                    let end = l[at + 3..]
                        .find(|c: char| !c.is_ascii_digit())
                        .map_or(l.len(), |e| at + 3 + e);
                    l.replace_range(at..end, "");
                }
                if !keep_index
                    && let Some((head, rest)) = l.split_once(": ")
                    && head.chars().all(|c| c.is_ascii_digit())
                {
                    l = rest.to_string();
                }
                // tc qdisc lines name the device by index in some versions.
                l.split_whitespace()
                    .filter(|w| !w.starts_with("link-netns"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        lines.sort();
        out.push_str(&format!("## {}\n{}\n", cmd.join(" "), lines.join("\n")));
    }
    out
}

/// Asserts two snapshots are equal, showing only the lines that differ.
pub fn same(after: String, before: &str, what: &str) {
    if after != before {
        let a: Vec<&str> = after.lines().collect();
        let b: Vec<&str> = before.lines().collect();
        let gone: Vec<&&str> = b.iter().filter(|l| !a.contains(l)).collect();
        let new: Vec<&&str> = a.iter().filter(|l| !b.contains(l)).collect();
        panic!("{what}: differs\n  before only: {gone:#?}\n  after only: {new:#?}");
    }
}

/// A Python script sending one datagram to `peer` port 9 from each source
/// port of `ports`: a new flow each (a flood of short flows).
pub fn udp_flood_script(peer: &str, ports: std::ops::Range<u16>) -> String {
    format!(
        "import socket\n\
         for p in range({}, {}):\n\
         \x20   s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         \x20   s.bind(('', p))\n\
         \x20   s.sendto(b'x', ('{peer}', 9))\n\
         \x20   s.close()\n",
        ports.start, ports.end
    )
}

/// The lock `Node::up` takes, for tests that build several nodes at once
/// (a test-bed cluster): held, no other node test runs.
pub fn serial_lock() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// KEY=VALUE lines as `testbed/node.sh` and `testbed/cluster.sh` print them.
pub fn env_of(text: &str) -> HashMap<String, String> {
    parse_env(text)
}

/// Where the test bed takes its binaries from: `$GW_BIN_DIR` when set, else
/// the ones cargo built for this test.
pub fn testbed_bin_dir() -> PathBuf {
    match std::env::var_os("GW_BIN_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => bin_dir(),
    }
}

/// The repository's `testbed/` directory.
pub fn testbed_dir() -> PathBuf {
    repo().join("testbed")
}

/// Polls `cond` every 100 ms for up to `timeout`; on timeout panics with
/// `what` and what `detail` says then.
pub fn wait_until(
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
    detail: impl FnOnce() -> String,
) {
    let t = Instant::now();
    while !cond() {
        if t.elapsed() >= timeout {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                detail()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A node of two pods started with `Daemon::start` (a `--forwarder none` bed):
/// pod1 fails open, pod2 closed; one worker.
pub const OPEN_AND_CLOSED: &str = r#"
[node]
name = "failover"
control_socket = "{socket}"
state_dir = "{state}"
[datapath]
workers = 1
[[workload]]
name = "pod1"
kind = "pod"
workload_port = "wp-pod1"
uplink_port = "up-pod1"
on_failure = "open"
[[workload]]
name = "pod2"
kind = "pod"
workload_port = "wp-pod2"
uplink_port = "up-pod2"
on_failure = "closed"
"#;
