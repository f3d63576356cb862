//! guardwire in a cluster (docs/cluster.md), on `testbed/cluster.sh`: three
//! test-bed nodes, a three-member etcd (TLS, client certificates) and the
//! controller in a management namespace. A rule set pushed once is enforced on
//! every node; the controller, one etcd member or the whole store going away
//! does not change what the nodes enforce, and they catch up when it is back; a
//! node that missed pushes and a compaction catches up; a set the nodes cannot
//! parse is refused by each of them while the last good one holds. Root; real
//! namespaces and TCP.

mod common;

use common::*;
use serde_json::Value;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

const KEY: &str = "/guardwire/v1/rulesets/default";
/// Ports every node's peer listens on (it answers "ok").
const PORTS: [u16; 3] = [5001, 5002, 5003];
const ALL: [usize; 3] = [1, 2, 3];
/// Push -> every node enforcing it.
const REALIZE: Duration = Duration::from_secs(20);

/// The peer's server: accepts on every port given, says "ok", closes.
const SERVER: &str = "import socket, sys, threading
def serve(p):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', p))
    s.listen(64)
    while True:
        c, _ = s.accept()
        try:
            c.sendall(b'ok\\n')
        except OSError:
            pass
        c.close()
for a in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(a),), daemon=True).start()
threading.Event().wait()
";

/// A pod's client: one new TCP connection; prints ok, timeout, refused or error.
const CLIENT: &str = "import socket, sys
s = socket.socket()
s.settimeout(1.5)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    d = s.recv(16)
    print('ok' if d.startswith(b'ok') else 'empty')
except socket.timeout:
    print('timeout')
except ConnectionRefusedError:
    print('refused')
except OSError as e:
    print('error', e)
";

fn cluster_sh(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(testbed_dir().join("cluster.sh"))
        .args(args)
        .env("GW_BIN_DIR", testbed_bin_dir())
        .output()
        .expect("run testbed/cluster.sh")
}

fn all_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn tail(path: &str, n: usize) -> String {
    let t = std::fs::read_to_string(path).unwrap_or_else(|e| format!("({path}: {e})\n"));
    let lines: Vec<&str> = t.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A rule set: default allow, TCP to each of `ports` denied.
fn deny(ports: &[u16], note: &str) -> String {
    let mut s = format!("# {note}\ndefault = \"allow\"\n");
    for p in ports {
        s.push_str(&format!(
            "\n[[rule]]\nid = \"deny-{p}\"\nproto = \"tcp\"\ndst_ports = {p}\naction = \"deny\"\n"
        ));
    }
    s
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(-1)
}

/// A running test-bed cluster, removed on drop (also when the test fails).
struct Cluster {
    prefix: String,
    env: HashMap<String, String>,
    nodes: Vec<HashMap<String, String>>,
    servers: Vec<Child>,
    files: Cell<u32>,
    _serial: MutexGuard<'static, ()>,
}

impl Cluster {
    /// `cluster.sh up PREFIX --nodes 3 ARGS...`, and a server on the peer of every node.
    fn up(prefix: &str, args: &[&str]) -> Cluster {
        require_root();
        let serial = serial_lock();
        let _ = cluster_sh(&["down", prefix]);
        let t = Instant::now();
        let mut a = vec!["up", prefix, "--nodes", "3", "--pods", "2"];
        a.extend_from_slice(args);
        let out = cluster_sh(&a);
        if !out.status.success() {
            let _ = cluster_sh(&["down", prefix]);
            panic!("cluster.sh up {prefix} failed:\n{}", all_text(&out));
        }
        eprintln!("cluster.sh up {prefix}: {:.1} s", t.elapsed().as_secs_f64());
        let mut c = Cluster {
            prefix: prefix.to_string(),
            env: env_of(&String::from_utf8_lossy(&out.stdout)),
            nodes: Vec::new(),
            servers: Vec::new(),
            files: Cell::new(0),
            _serial: serial,
        };
        for i in ALL {
            let f = c.var(&format!("NODE_ENV_{i}")).to_string();
            let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{f}: {e}"));
            c.nodes.push(env_of(&text));
        }
        for i in ALL {
            let mut cmd = Command::new("ip");
            cmd.args([
                "netns",
                "exec",
                c.nvar(i, "NS_PEER"),
                "python3",
                "-c",
                SERVER,
            ]);
            cmd.args(PORTS.map(|p| p.to_string()));
            let child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start the peer's server");
            c.servers.push(child);
        }
        for i in ALL {
            let ns = c.nvar(i, "NS_PEER").to_string();
            wait_until(
                Duration::from_secs(10),
                &format!("the peer's server of node {i}"),
                || {
                    let o = Command::new("ip")
                        .args(["netns", "exec", &ns, "ss", "-Hltn"])
                        .output()
                        .unwrap();
                    let s = String::from_utf8_lossy(&o.stdout);
                    PORTS.iter().all(|p| s.contains(&format!(":{p} ")))
                },
                String::new,
            );
        }
        c
    }

    fn var(&self, k: &str) -> &str {
        self.env
            .get(k)
            .unwrap_or_else(|| panic!("cluster env has no {k}: {:?}", self.env))
    }

    /// Node `i`'s (1-based) own env (node.sh).
    fn nvar(&self, i: usize, k: &str) -> &str {
        self.nodes[i - 1]
            .get(k)
            .unwrap_or_else(|| panic!("node {i} env has no {k}"))
    }

    fn name(&self, i: usize) -> String {
        self.var(&format!("NODE_NAME_{i}")).to_string()
    }

    /// `cluster.sh CMD PREFIX ARGS...`, asserted to succeed.
    fn sh(&self, cmd: &str, args: &[&str]) {
        let mut a = vec![cmd, self.prefix.as_str()];
        a.extend_from_slice(args);
        let t = Instant::now();
        let o = cluster_sh(&a);
        assert!(
            o.status.success(),
            "cluster.sh {a:?} failed:\n{}\n{}",
            all_text(&o),
            self.diag()
        );
        eprintln!("cluster.sh {a:?}: {:.1} s", t.elapsed().as_secs_f64());
    }

    /// Re-reads the cluster env (pids, controller replicas).
    fn reload(&mut self) {
        let o = cluster_sh(&["env", &self.prefix]);
        assert!(o.status.success(), "cluster.sh env: {}", all_text(&o));
        self.env = env_of(&String::from_utf8_lossy(&o.stdout));
    }

    /// A file in the cluster's state dir holding `text`.
    fn file(&self, text: &str) -> String {
        let n = self.files.get() + 1;
        self.files.set(n);
        let p = PathBuf::from(self.var("CL_STATE")).join(format!("test-{n}.toml"));
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    fn ctl_url(&self, k: usize) -> String {
        if k == 1 {
            self.var("CONTROLLER_URL").to_string()
        } else {
            self.var(&format!("CONTROLLER_URL_{k}")).to_string()
        }
    }

    /// curl inside the management ns: (status, body); status 0 when no answer.
    fn curl(&self, args: &[&str]) -> (u16, String) {
        let o = Command::new("ip")
            .args(["netns", "exec", self.var("CL_NS")])
            .args(["curl", "-sS", "-m", "8", "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .expect("curl");
        let s = String::from_utf8_lossy(&o.stdout).into_owned();
        let (body, code) = s.rsplit_once('\n').unwrap_or(("", &s));
        let code = code.trim().parse().unwrap_or(0);
        if code == 0 {
            return (0, String::from_utf8_lossy(&o.stderr).into_owned());
        }
        (code, body.to_string())
    }

    /// A controller call with the admin token: (status, body).
    fn ctl(&self, url: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let token = std::fs::read_to_string(self.var("CONTROLLER_ADMIN_TOKEN_FILE")).unwrap();
        let auth = format!("Authorization: Bearer {}", token.trim());
        let full = format!("{url}{path}");
        let mut a = vec!["-X", method, "-H", auth.as_str()];
        let data;
        if let Some(b) = body {
            data = format!("@{}", self.file(b));
            a.extend(["-H", "Content-Type: text/plain", "--data-binary", &data]);
        }
        a.push(&full);
        self.curl(&a)
    }

    fn ctl_json(&self, url: &str, method: &str, path: &str, body: Option<&str>) -> Value {
        let (code, b) = self.ctl(url, method, path, body);
        assert!(
            code == 200,
            "{method} {url}{path}: {code} {b}\n{}",
            self.diag()
        );
        serde_json::from_str(&b).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {b}"))
    }

    /// `GET /api/v1/nodes` of controller `url` (Null when it does not answer).
    fn nodes_of(&self, url: &str) -> Value {
        match self.ctl(url, "GET", "/api/v1/nodes", None) {
            (200, b) => serde_json::from_str(&b).unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    /// The controller's row of node `i`.
    fn row(nodes: &Value, name: &str) -> Value {
        nodes["nodes"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["name"] == name))
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// The current revision of rule set `set` (the controller's view).
    fn revision(&self, url: &str, set: &str) -> i64 {
        int(&self.ctl_json(url, "GET", &format!("/api/v1/rulesets/{set}"), None)["revision"])
    }

    /// `guardwire rules push FILE --cluster URL --token-file F`; the new revision.
    fn push_cli(&self, url: &str, text: &str) -> i64 {
        let before = match self.ctl(url, "GET", "/api/v1/rulesets/default", None) {
            (200, b) => int(&serde_json::from_str::<Value>(&b).unwrap()["revision"]),
            _ => 0,
        };
        let f = self.file(text);
        let bin = testbed_bin_dir().join("guardwire");
        let o = Command::new("ip")
            .args(["netns", "exec", self.var("CL_NS")])
            .arg(&bin)
            .args(["rules", "push", &f, "--cluster", url, "--token-file"])
            .arg(self.var("CONTROLLER_ADMIN_TOKEN_FILE"))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "guardwire rules push --cluster {url}: {}\n{}",
            all_text(&o),
            self.diag()
        );
        eprintln!("rules push --cluster: {}", all_text(&o).trim());
        let rev = self.revision(url, "default");
        assert!(
            rev > before,
            "push did not make a new revision ({before} -> {rev})"
        );
        rev
    }

    /// PUT /api/v1/rulesets/{set}; retried for up to `retry` while the store
    /// elects a leader or comes back; the new revision.
    fn push(&self, url: &str, set: &str, text: &str, retry: Duration) -> i64 {
        let t = Instant::now();
        loop {
            let (code, b) = self.ctl(url, "PUT", &format!("/api/v1/rulesets/{set}"), Some(text));
            if code == 200 {
                let v: Value = serde_json::from_str(&b).unwrap();
                eprintln!(
                    "PUT {set}: revision {} after {:.1} s",
                    v["revision"],
                    t.elapsed().as_secs_f64()
                );
                return int(&v["revision"]);
            }
            assert!(
                code != 400 && t.elapsed() < retry,
                "PUT {url}/api/v1/rulesets/{set}: {code} {b}\n{}",
                self.diag()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Waits until the controller at `url` shows every node of `want`
    /// (node, rule set, revision) alive and enforcing that revision.
    fn wait_applied(&self, url: &str, want: &[(usize, &str, i64)], timeout: Duration, what: &str) {
        let t = Instant::now();
        let last = RefCell::new(Value::Null);
        wait_until(
            timeout,
            what,
            || {
                *last.borrow_mut() = self.nodes_of(url);
                let last = last.borrow();
                want.iter().all(|&(i, set, rev)| {
                    let r = Self::row(&last, &self.name(i));
                    r["alive"] == true
                        && int(&r["applied"]) == rev
                        && r["ruleset"] == set
                        && int(&r["desired"]) == rev
                })
            },
            || {
                format!(
                    "last GET /api/v1/nodes: {:#}\n{}",
                    last.borrow(),
                    self.diag()
                )
            },
        );
        eprintln!(
            "{what}: applied on {} node(s) in {:.1} s",
            want.len(),
            t.elapsed().as_secs_f64()
        );
    }

    /// Waits until all three nodes enforce `rev` of "default" and the
    /// controller says "realized on 3 of 3".
    /// Pushes a set denying `ports` as "default" and waits until every node
    /// enforces it; its revision.
    fn push_realized(
        &self,
        url: &str,
        ports: &[u16],
        note: &str,
        retry: Duration,
        what: &str,
    ) -> i64 {
        let rev = self.push(url, "default", &deny(ports, note), retry);
        self.wait_realized(url, rev, what);
        rev
    }

    /// Waits until every node's cluster view satisfies `cond`.
    fn wait_views(&self, timeout: Duration, what: &str, cond: impl Fn(&Value) -> bool) {
        for i in ALL {
            self.wait_view(i, timeout, &format!("node {i} {what}"), &cond);
        }
    }

    fn wait_realized(&self, url: &str, rev: i64, what: &str) {
        let want: Vec<(usize, &str, i64)> = ALL.iter().map(|&i| (i, "default", rev)).collect();
        self.wait_applied(url, &want, REALIZE, what);
        let nodes = self.nodes_of(url);
        let s = nodes["summary"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["ruleset"] == "default"))
            .cloned()
            .unwrap_or(Value::Null);
        assert!(
            int(&s["revision"]) == rev && s["realized"] == 3 && s["total"] == 3,
            "{what}: summary is not 'realized on 3 of 3' at revision {rev}: {nodes:#}"
        );
    }

    /// Node `i`'s own view of its cluster link (`GET /api/v1/cluster` on its socket).
    fn view(&self, i: usize) -> Value {
        let o = Command::new("curl")
            .args(["-sS", "-m", "5", "--unix-socket", self.nvar(i, "GW_SOCK")])
            .arg("http://guardwire/api/v1/cluster")
            .output()
            .unwrap();
        serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
    }

    fn views(&self) -> String {
        ALL.iter()
            .map(|&i| format!("node {i}: {}", self.view(i)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until `cond` holds for node `i`'s view.
    fn wait_view(&self, i: usize, timeout: Duration, what: &str, cond: impl Fn(&Value) -> bool) {
        let t = Instant::now();
        let last = RefCell::new(Value::Null);
        wait_until(
            timeout,
            what,
            || {
                *last.borrow_mut() = self.view(i);
                cond(&last.borrow())
            },
            || format!("node {i}'s last view: {:#}\n{}", last.borrow(), self.diag()),
        );
        eprintln!("{what}: {:.1} s", t.elapsed().as_secs_f64());
    }

    /// One new TCP connection from pod 1 of each node of `nodes` to its peer on
    /// each port, all at once: what each said, by node and port.
    fn probe(&self, nodes: &[usize], ports: &[u16]) -> Vec<(usize, u16, String)> {
        let mut running = Vec::new();
        for &i in nodes {
            for &p in ports {
                let child = Command::new("ip")
                    .args(["netns", "exec", self.nvar(i, "POD_NS_1"), "python3", "-c"])
                    .args([CLIENT, self.nvar(i, "PEER_IP"), &p.to_string()])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                running.push((i, p, child));
            }
        }
        running
            .into_iter()
            .map(|(i, p, c)| {
                let o = c.wait_with_output().unwrap();
                (i, p, all_text(&o).trim().to_string())
            })
            .collect()
    }

    /// Asserts TCP from pod 1 to the peer is blocked on `blocked` ports and
    /// passes on `allowed` ports, on each node of `nodes`.
    fn expect(&self, nodes: &[usize], blocked: &[u16], allowed: &[u16], what: &str) {
        let ports: Vec<u16> = blocked.iter().chain(allowed).copied().collect();
        let got = self.probe(nodes, &ports);
        let wrong: Vec<&(usize, u16, String)> = got
            .iter()
            .filter(|(_, p, r)| (r == "ok") == blocked.contains(p))
            .collect();
        assert!(
            wrong.is_empty(),
            "{what}: want ports {blocked:?} blocked and {allowed:?} allowed on nodes {nodes:?}; \
             got {got:?}; wrong: {wrong:?}\n{}",
            self.diag()
        );
        eprintln!("{what}: {blocked:?} blocked, {allowed:?} allowed on nodes {nodes:?}");
    }

    /// etcdctl in the management ns (endpoints and client certificate set).
    fn etcdctl(&self, args: &[&str]) -> String {
        let o = Command::new(self.var("ETCDCTL"))
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "etcdctl {args:?}: {}", all_text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn mod_revision(&self, key: &str) -> i64 {
        let v: Value = serde_json::from_str(&self.etcdctl(&["get", key, "-w", "json"])).unwrap();
        int(&v["kvs"][0]["mod_revision"])
    }

    /// The etcd member (1..3) that leads.
    fn etcd_leader(&self) -> usize {
        let v: Value =
            serde_json::from_str(&self.etcdctl(&["endpoint", "status", "-w", "json"])).unwrap();
        for (k, port) in [(1, ":2379"), (2, ":2381"), (3, ":2383")] {
            if let Some(m) = v
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["Endpoint"].as_str().is_some_and(|e| e.ends_with(port)))
                && m["Status"]["leader"] == m["Status"]["header"]["member_id"]
            {
                return k;
            }
        }
        panic!("no etcd leader in {v:#}");
    }

    /// What helps to read a failure: the nodes' views, the controller's nodes,
    /// the ends of the logs.
    fn diag(&self) -> String {
        let mut s = String::from("--- nodes' views (GET /api/v1/cluster) ---\n");
        s.push_str(&self.views());
        s.push_str("\n--- controller 1 GET /api/v1/nodes ---\n");
        s.push_str(&self.nodes_of(self.var("CONTROLLER_URL")).to_string());
        for i in ALL {
            s.push_str(&format!("\n--- node {i} guardwire.log (end) ---\n"));
            s.push_str(&tail(self.nvar(i, "GW_LOG"), 15));
        }
        for k in 1..=3 {
            if let Some(l) = self.env.get(&format!("CONTROLLER_LOG_{k}")) {
                s.push_str(&format!("\n--- controller {k} log (end) ---\n"));
                s.push_str(&tail(l, 15));
            }
        }
        s
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        let t = Instant::now();
        let out = cluster_sh(&["down", &self.prefix]);
        if !out.status.success() {
            eprintln!("cluster.sh down {} failed: {}", self.prefix, all_text(&out));
        }
        eprintln!(
            "cluster.sh down {}: {:.1} s",
            self.prefix,
            t.elapsed().as_secs_f64()
        );
    }
}

#[test]
fn a_rule_pushed_once_is_enforced_on_every_node() {
    let c = Cluster::up("tcl1", &[]);
    let url = c.ctl_url(1);
    c.expect(&ALL, &[], &[5001, 5002], "before any rule set");

    let rev = c.push_cli(&url, &deny(&[5001], "one push"));
    c.wait_realized(&url, rev, "the first push");
    c.expect(&ALL, &[5001], &[5002, 5003], "after one push");
    for i in ALL {
        let v = c.view(i);
        assert_eq!(int(&v["applied"]["revision"]), rev, "node {i}: {v:#}");
        assert_eq!(v["applied"]["ruleset"], "default", "node {i}: {v:#}");
        assert_eq!(v["stale"], false, "node {i}: {v:#}");
        assert_eq!(v["node"], c.name(i).as_str(), "node {i}: {v:#}");
    }
    // The controller knows every node's labels and API.
    let nodes = c.nodes_of(&url);
    for i in ALL {
        let r = Cluster::row(&nodes, &c.name(i));
        let labels: Vec<&str> = r["labels"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str())
            .collect();
        assert!(
            labels.contains(&format!("zone=z{i}").as_str()) && labels.contains(&"role=worker"),
            "node {i}: {r:#}"
        );
        assert_eq!(
            r["api"],
            c.var(&format!("NODE_API_URL_{i}")),
            "node {i}: {r:#}"
        );
    }

    // A set for zone=z2 only: it has more labels than "default", so node 2
    // takes it, the others keep "default".
    let zrev = c.push(
        &url,
        "zone-two",
        &format!("nodes = [\"zone=z2\"]\n{}", deny(&[5001, 5002], "zone two")),
        Duration::ZERO,
    );
    c.wait_applied(
        &url,
        &[
            (1, "default", rev),
            (2, "zone-two", zrev),
            (3, "default", rev),
        ],
        REALIZE,
        "a set for zone=z2",
    );
    c.expect(&[2], &[5001, 5002], &[5003], "node 2 under zone-two");
    c.expect(
        &[1, 3],
        &[5001],
        &[5002, 5003],
        "nodes 1 and 3 under default",
    );
}

#[test]
fn an_invalid_set_in_etcd_is_refused_by_every_node_and_the_last_good_one_holds() {
    let c = Cluster::up("tcl2", &[]);
    let url = c.ctl_url(1);
    let good = c.push_realized(&url, &[5001], "good", Duration::ZERO, "the good set");

    // The controller refuses it, naming the line.
    let bad = "default = \"allow\"\n[[rule]]\nid = \"bad\"\nproto = \"tcp\"\ndst_ports = 5002\naction = \"explode\"\n";
    let (code, body) = c.ctl(&url, "PUT", "/api/v1/rulesets/default", Some(bad));
    assert_eq!(code, 400, "the controller took an unknown action: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["error"].is_string(), "{v:#}");
    assert!(int(&v["line"]) >= 2, "the refusal names no line: {v:#}");
    assert_eq!(
        c.revision(&url, "default"),
        good,
        "a refused push moved the set"
    );

    // Written into the store behind the controller's back: every node refuses it.
    c.etcdctl(&["put", KEY, bad]);
    let bad_rev = c.mod_revision(KEY);
    assert!(bad_rev > good);
    let t = Instant::now();
    let last = RefCell::new(Value::Null);
    wait_until(
        REALIZE,
        "every node to refuse the invalid set",
        || {
            *last.borrow_mut() = c.nodes_of(&url);
            let last = last.borrow();
            ALL.iter().all(|&i| {
                let r = Cluster::row(&last, &c.name(i));
                int(&r["error_revision"]) == bad_rev
                    && r["error"].is_string()
                    && int(&r["applied"]) == good
            })
        },
        || format!("last GET /api/v1/nodes: {:#}\n{}", last.borrow(), c.diag()),
    );
    eprintln!(
        "invalid set refused by 3 nodes in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    for i in ALL {
        let v = c.view(i);
        assert_eq!(int(&v["error_revision"]), bad_rev, "node {i}: {v:#}");
        assert!(v["error"].is_string(), "node {i}: {v:#}");
        assert_eq!(int(&v["applied"]["revision"]), good, "node {i}: {v:#}");
        eprintln!("node {i} refused it: {}", v["error"]);
    }
    c.expect(
        &ALL,
        &[5001],
        &[5002, 5003],
        "the last good set still holds",
    );

    // A good set after it is taken again.
    c.push_realized(
        &url,
        &[5002],
        "good again",
        Duration::ZERO,
        "a good set after the invalid one",
    );
    c.expect(&ALL, &[5002], &[5001, 5003], "the next good set");
}

#[test]
fn the_controller_killed_nodes_keep_enforcing_and_a_second_replica_pushes() {
    let mut c = Cluster::up("tcl3", &[]);
    let url1 = c.ctl_url(1);
    let rev = c.push_realized(
        &url1,
        &[5001],
        "from replica 1",
        Duration::ZERO,
        "a push through replica 1",
    );

    c.sh("controller-stop", &["1", "--kill"]);
    assert_eq!(
        c.curl(&["-o", "/dev/null", &format!("{url1}/api/v1/health")])
            .0,
        0
    );
    std::thread::sleep(Duration::from_secs(2));
    c.expect(&ALL, &[5001], &[5002], "with no controller");
    for i in ALL {
        let v = c.view(i);
        assert_eq!(int(&v["applied"]["revision"]), rev, "node {i}: {v:#}");
        assert_eq!(v["stale"], false, "node {i}: {v:#}");
    }

    // A second replica on another port: nothing of its own, everything from etcd.
    c.sh("controller-start", &["2"]);
    c.reload();
    let url2 = c.ctl_url(2);
    assert_ne!(url1, url2);
    c.wait_applied(
        &url2,
        &ALL.map(|i| (i, "default", rev)),
        Duration::from_secs(5),
        "replica 2 sees the nodes",
    );
    let rev2 = c.push_cli(&url2, &deny(&[5002], "from replica 2"));
    c.wait_realized(&url2, rev2, "a push through replica 2");
    c.expect(&ALL, &[5002], &[5001, 5003], "after replica 2's push");
}

#[test]
fn one_etcd_member_stopped_pushes_still_reach_every_node() {
    let c = Cluster::up("tcl4", &[]);
    let url = c.ctl_url(1);
    c.push_realized(
        &url,
        &[5001],
        "three members",
        Duration::ZERO,
        "a push with three members",
    );

    // The leader goes: the others elect a new one.
    let leader = c.etcd_leader();
    eprintln!("stopping etcd member {leader} (the leader)");
    c.sh("etcd-stop", &[&leader.to_string()]);
    c.push_realized(
        &url,
        &[5002],
        "two members",
        Duration::from_secs(15),
        "a push with one member down",
    );
    c.expect(&ALL, &[5002], &[5001, 5003], "pushed with one member down");

    // It comes back; the next push reaches everyone too.
    c.sh("etcd-start", &[&leader.to_string()]);
    c.push_realized(
        &url,
        &[5003],
        "three again",
        Duration::from_secs(15),
        "a push with the member back",
    );
    c.expect(&ALL, &[5003], &[5001, 5002], "pushed with the member back");
}

#[test]
fn the_store_gone_nodes_keep_enforcing_say_stale_and_catch_up_when_it_is_back() {
    let c = Cluster::up("tcl5", &[]);
    let url = c.ctl_url(1);
    let rev = c.push_realized(
        &url,
        &[5001],
        "before the store goes",
        Duration::ZERO,
        "a push before the store goes",
    );

    c.sh("etcd-stop-all", &[]);
    c.wait_views(
        Duration::from_secs(30),
        "to say the store is unreachable",
        |v| v["stale"] == true && v["connected"] == false,
    );
    for i in ALL {
        let v = c.view(i);
        assert_eq!(int(&v["applied"]["revision"]), rev, "node {i}: {v:#}");
        assert!(v["store_error"].is_string(), "node {i}: {v:#}");
        assert!(int(&v["since_ms"]) > 0, "node {i}: {v:#}");
    }
    let (code, h) = c.ctl(&url, "GET", "/api/v1/health", None);
    eprintln!("controller health with no store: {code} {h}");
    assert!(
        !h.contains("\"etcd\":\"ok\""),
        "the controller says etcd is fine: {h}"
    );
    c.expect(&ALL, &[5001], &[5002, 5003], "with no store");

    c.sh("etcd-start-all", &[]);
    c.wait_views(Duration::from_secs(30), "to reach the store again", |v| {
        v["stale"] == false && v["connected"] == true
    });
    let rev2 = c.push_realized(
        &url,
        &[5002],
        "the store is back",
        Duration::from_secs(20),
        "a push after the store came back",
    );
    for i in ALL {
        let v = c.view(i);
        assert_eq!(int(&v["applied"]["revision"]), rev2, "node {i}: {v:#}");
        assert!(int(&v["store_revision"]) >= rev2, "node {i}: {v:#}");
    }
    c.expect(&ALL, &[5002], &[5001, 5003], "after the store came back");
}

#[test]
fn a_node_restarted_while_the_store_is_down_enforces_its_persisted_set() {
    let c = Cluster::up("tcl6", &[]);
    let url = c.ctl_url(1);
    let rev = c.push_realized(
        &url,
        &[5001],
        "to be persisted",
        Duration::ZERO,
        "the set to persist",
    );

    c.sh("etcd-stop-all", &[]);
    c.wait_view(1, Duration::from_secs(30), "node 1 to notice", |v| {
        v["stale"] == true
    });
    c.sh("node-stop", &["1", "--kill"]);
    c.sh("node-start", &["1"]);
    c.wait_view(
        1,
        Duration::from_secs(15),
        "the restarted node 1 to report its persisted set",
        |v| int(&v["applied"]["revision"]) == rev,
    );
    let v = c.view(1);
    assert_eq!(v["stale"], true, "node 1 has not reached the store: {v:#}");
    c.expect(
        &ALL,
        &[5001],
        &[5002, 5003],
        "node 1 restarted with no store",
    );

    c.sh("etcd-start-all", &[]);
    c.wait_view(
        1,
        Duration::from_secs(30),
        "node 1 to reach the store",
        |v| v["stale"] == false && int(&v["applied"]["revision"]) == rev,
    );
    c.wait_realized(&url, rev, "node 1 back in the controller's view");
    c.expect(&[1], &[5001], &[5002], "node 1 with the store back");
}

#[test]
fn a_node_that_missed_three_pushes_and_a_compaction_catches_up() {
    let c = Cluster::up("tcl7", &[]);
    let url = c.ctl_url(1);
    let rev = c.push_realized(&url, &[5001], "first", Duration::ZERO, "the first push");

    c.sh("node-stop", &["3"]);
    let mut last = rev;
    for (n, ports) in [(2, vec![5002]), (3, vec![5003]), (4, vec![5002, 5003])] {
        last = c.push(
            &url,
            "default",
            &deny(&ports, &format!("push {n}")),
            Duration::ZERO,
        );
    }
    c.wait_applied(
        &url,
        &[(1, "default", last), (2, "default", last)],
        REALIZE,
        "nodes 1 and 2 at the last push",
    );
    c.etcdctl(&["compact", &last.to_string(), "--physical"]);
    // What node 3 applied last is gone from the store's history.
    let o = Command::new(c.var("ETCDCTL"))
        .args(["get", KEY, "--rev", &rev.to_string()])
        .output()
        .unwrap();
    assert!(
        !o.status.success() && all_text(&o).contains("compacted"),
        "revision {rev} still readable: {}",
        all_text(&o)
    );

    c.sh("node-start", &["3"]);
    c.wait_realized(&url, last, "node 3 back");
    let v = c.view(3);
    assert_eq!(int(&v["applied"]["revision"]), last, "node 3: {v:#}");
    c.expect(&ALL, &[5002, 5003], &[5001], "every node at the last push");
}

#[test]
fn a_node_cut_off_from_the_store_catches_up_across_a_compaction() {
    // A short lease, so the controller sees the node go.
    let c = Cluster::up("tcl8", &["--lease-ttl", "3"]);
    let url = c.ctl_url(1);
    let rev = c.push_realized(&url, &[5001], "first", Duration::ZERO, "the first push");

    // Node 3's management link goes down (its guardwire keeps running).
    let sec = c.nvar(3, "NS_SEC").to_string();
    let link = |state: &str| {
        let o = Command::new("ip")
            .args(["-n", &sec, "link", "set", "mgmt0", state])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "ip link set mgmt0 {state}: {}",
            all_text(&o)
        );
    };
    link("down");
    let nodes = RefCell::new(Value::Null);
    wait_until(
        Duration::from_secs(20),
        "the controller to see node 3 gone (its lease lapsed)",
        || {
            *nodes.borrow_mut() = c.nodes_of(&url);
            Cluster::row(&nodes.borrow(), &c.name(3))["alive"] != true
        },
        || format!("{:#}", nodes.borrow()),
    );
    c.wait_view(
        3,
        Duration::from_secs(20),
        "node 3 to say the store is unreachable",
        |v| v["stale"] == true && v["connected"] == false,
    );
    let mut last = rev;
    for (n, ports) in [(2, vec![5002]), (3, vec![5003]), (4, vec![5002, 5003])] {
        last = c.push(
            &url,
            "default",
            &deny(&ports, &format!("push {n}")),
            Duration::ZERO,
        );
    }
    c.wait_applied(
        &url,
        &[(1, "default", last), (2, "default", last)],
        REALIZE,
        "nodes 1 and 2 at the last push",
    );
    c.etcdctl(&["compact", &last.to_string(), "--physical"]);
    let v = c.view(3);
    assert_eq!(int(&v["applied"]["revision"]), rev, "node 3 cut off: {v:#}");
    c.expect(&[3], &[5001], &[5002, 5003], "node 3 cut off keeps its set");

    link("up");
    c.wait_applied(
        &url,
        &[(3, "default", last)],
        Duration::from_secs(60),
        "node 3 back on its link",
    );
    c.wait_view(3, Duration::from_secs(10), "node 3 not stale", |v| {
        v["stale"] == false && int(&v["applied"]["revision"]) == last
    });
    c.expect(&ALL, &[5002, 5003], &[5001], "every node at the last push");
}
