//! The controller's web page in a real browser (headless Chromium driven by
//! Playwright, `tests/browser/cluster.py`) over a 3-node test-bed cluster
//! (`testbed/cluster.sh`), as an operator uses it: log in, type a deny rule,
//! push it, watch it realized on 3 of 3 nodes, then see the flow it denies on
//! node 2 in the merged traffic view. Root. Screenshots are kept in
//! `target/cluster-page-shots/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PREFIX: &str = "tcp1";
const NODES: usize = 3;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The binaries the cluster runs: `$GW_BIN_DIR`, else the ones cargo built for this test.
fn bin_dir() -> PathBuf {
    match std::env::var_os("GW_BIN_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_BIN_EXE_guardwire"))
            .parent()
            .unwrap()
            .to_path_buf(),
    }
}

fn venv() -> PathBuf {
    std::env::var_os("GW_CI_VENV")
        .map(Into::into)
        .unwrap_or_else(|| "/var/cache/guardwire-ci/venv".into())
}

fn shots() -> PathBuf {
    let d = repo().join("target/cluster-page-shots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "integration tests need root (they create network namespaces)"
    );
}

/// `timeout SECS cluster.sh ARGS...`
fn cluster_sh(secs: u32, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg(secs.to_string())
        .arg("bash")
        .arg(repo().join("testbed/cluster.sh"))
        .args(args)
        .env("GW_BIN_DIR", bin_dir())
        .stdin(Stdio::null())
        .output()
        .expect("run testbed/cluster.sh")
}

/// KEY=VALUE lines (values possibly quoted) as the test bed prints them.
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

/// A running test-bed cluster, torn down on drop (also when the test fails).
struct Cluster {
    env: HashMap<String, String>,
    /// Per node (1-based index - 1): its own env (`node.env`).
    nodes: Vec<HashMap<String, String>>,
    /// Processes the test started (listeners), killed on drop.
    children: Vec<Child>,
}

impl Cluster {
    fn up() -> Cluster {
        require_root();
        let _ = cluster_sh(120, &["down", PREFIX]);
        let n = NODES.to_string();
        let out = cluster_sh(420, &["up", PREFIX, "--nodes", &n]);
        // From here on the guard owns whatever was built.
        let mut c = Cluster {
            env: parse_env(&String::from_utf8_lossy(&out.stdout)),
            nodes: Vec::new(),
            children: Vec::new(),
        };
        assert!(
            out.status.success(),
            "cluster.sh up {PREFIX} --nodes {NODES} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for i in 1..=NODES {
            let file = c.var(&format!("NODE_ENV_{i}")).to_string();
            let text = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("node {i}'s env {file}: {e}"));
            c.nodes.push(parse_env(&text));
        }
        c
    }

    fn var(&self, k: &str) -> &str {
        self.env
            .get(k)
            .unwrap_or_else(|| panic!("cluster env has no {k}: {:?}", self.env))
    }

    /// A key of node `i`'s own env (1-based).
    fn node_var(&self, i: usize, k: &str) -> &str {
        self.nodes[i - 1]
            .get(k)
            .unwrap_or_else(|| panic!("node {i}'s env has no {k}: {:?}", self.nodes[i - 1]))
    }

    fn token(&self, key: &str) -> String {
        let f = self.var(key);
        std::fs::read_to_string(f)
            .unwrap_or_else(|e| panic!("{key} {f}: {e}"))
            .trim()
            .to_string()
    }

    /// What the controller and the nodes logged, for failure messages.
    fn logs(&self) -> String {
        let mut s = String::new();
        let mut add = |what: &str, path: Option<&String>| {
            if let Some(p) = path {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                s.push_str(&format!("--- {what} ({p}) ---\n"));
                for l in tail.iter().rev() {
                    s.push_str(l);
                    s.push('\n');
                }
            }
        };
        add("controller", self.env.get("CONTROLLER_LOG"));
        for i in 1..=NODES {
            add(&format!("node {i}"), self.env.get(&format!("NODE_LOG_{i}")));
        }
        s
    }

    /// Runs one cluster.py step in the management namespace (where a browser
    /// reaches the controller); returns its stdout.
    fn step(&self, token: &str, args: &[&str]) -> String {
        let py = venv().join("bin/python3");
        assert!(
            py.exists(),
            "{} is missing: .ci/run installs it (python3 -m venv + pip install playwright)",
            py.display()
        );
        let script = repo().join("tests/browser/cluster.py");
        let t = Instant::now();
        let out = Command::new("timeout")
            .args(["-k", "5", "100", "ip", "netns", "exec", self.var("CL_NS")])
            .arg(&py)
            .arg(&script)
            .args(["--url", self.var("CONTROLLER_URL"), "--token", token])
            .arg("--shots")
            .arg(shots())
            .args(["--timeout", "80"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run cluster.py");
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!(
            "cluster.py {} ({:.1} s): {}",
            args[0],
            t.elapsed().as_secs_f64(),
            stderr.trim()
        );
        assert!(
            out.status.success(),
            "page step {args:?} failed ({}):\n{stderr}\n{}",
            out.status,
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether pod `pod` of node `i` gets a TCP connection to its peer's port 5201.
    fn connects(&self, i: usize, pod: usize) -> bool {
        let target = format!("echo > /dev/tcp/{}/5201", self.node_var(i, "PEER_IP"));
        let ns = self.node_var(i, &format!("POD_NS_{pod}"));
        Command::new("ip")
            .args(["netns", "exec", ns, "timeout", "2", "bash", "-c", &target])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// A TCP listener on node `i`'s peer, port 5201, for this test's lifetime
    /// (bounded by `timeout` even if the guard never runs).
    fn listen_on_peer(&mut self, i: usize) {
        let ns = self.node_var(i, "NS_PEER").to_string();
        let ip = self.node_var(i, "PEER_IP").to_string();
        let child = Command::new("ip")
            .args([
                "netns", "exec", &ns, "timeout", "600", "iperf3", "-s", "-B", &ip,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start iperf3 -s on the peer");
        self.children.push(child);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let out = cluster_sh(180, &["down", PREFIX]);
        if !out.status.success() {
            eprintln!(
                "cluster.sh down {PREFIX} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Polls `cond` every 200 ms for up to `secs`; panics with `what` and `detail()`.
fn wait_until(
    secs: u64,
    what: &str,
    mut cond: impl FnMut() -> bool,
    detail: impl FnOnce() -> String,
) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for {what}\n{}",
            detail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn json(s: &str) -> serde_json::Value {
    let line = s
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// pod1 may not reach its peer's iperf3 port, on every node the set selects.
const DENY: &str = "default = \"allow\"\n\n[[rule]]\nid = \"no-iperf-pod1\"\nworkload = \"pod1\"\nproto = \"tcp\"\ndst_ports = 5201\naction = \"deny\"\n";
/// The same with a typo on line 8.
const TYPO: &str = "default = \"allow\"\n\n[[rule]]\nid = \"no-iperf-pod1\"\nworkload = \"pod1\"\nproto = \"tcp\"\ndst_ports = 5201\naction = \"denny\"\n";

#[test]
fn an_operator_pushes_a_rule_to_three_nodes_and_sees_its_flow_denied_on_node_2() {
    require_root();
    let mut cl = Cluster::up();
    let admin = cl.token("CONTROLLER_ADMIN_TOKEN_FILE");
    let viewer = cl.token("CONTROLLER_VIEWER_TOKEN_FILE");
    let node2 = cl.var("NODE_NAME_2").to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };

    cl.step(&admin, &["login"]);

    // Node 2's pod1 reaches its peer before any rule.
    cl.listen_on_peer(2);
    wait_until(
        15,
        "pod1 of node 2 to reach its peer's port 5201 before any rule",
        || cl.connects(2, 1),
        || cl.logs(),
    );

    // A typo shows its line and is not pushed.
    let typo = file("typo.toml", TYPO);
    cl.step(
        &admin,
        &[
            "typo",
            "--set",
            "default",
            "--text-file",
            &typo,
            "--line",
            "8",
        ],
    );

    // Typed on the page, pushed, realized on every node.
    let deny = file("deny.toml", DENY);
    let pushed = json(&cl.step(&admin, &["push", "--set", "default", "--text-file", &deny]));
    let revision = pushed["revision"]
        .as_i64()
        .unwrap_or_else(|| panic!("push printed no revision: {pushed}"));
    let n = NODES.to_string();
    let rev = revision.to_string();
    let realized = json(&cl.step(
        &admin,
        &[
            "realized",
            "--set",
            "default",
            "--count",
            &n,
            "--revision",
            &rev,
            "--within",
            "60",
        ],
    ));
    assert_eq!(
        realized["nodes"].as_array().map(Vec::len),
        Some(NODES),
        "{realized}"
    );

    // Node 2 enforces it: pod1's connection to the peer is denied (and so recorded).
    wait_until(
        15,
        "pod1 of node 2 to be denied its peer's port 5201",
        || !cl.connects(2, 1),
        || cl.logs(),
    );
    assert!(
        !cl.connects(2, 1),
        "the rule pushed from the page does not hold on node 2"
    );

    // The denied flow is in the traffic view with node 2 alone chosen.
    let dst = format!("{}:5201", cl.node_var(2, "PEER_IP"));
    let row = json(&cl.step(
        &admin,
        &[
            "traffic",
            "--node",
            &node2,
            "--workload",
            "pod1",
            "--action",
            "deny",
            "--dst",
            &dst,
            "--within",
            "30",
        ],
    ));
    assert_eq!(row["node"], node2.as_str(), "{row}");
    assert_eq!(row["workload"], "pod1", "{row}");
    assert_eq!(row["action"], "deny", "{row}");
    assert_eq!(row["dst"], dst.as_str(), "{row}");
    assert_eq!(row["rule"], "no-iperf-pod1", "{row}");
    let link = row["link"].as_str().unwrap_or_default();
    assert!(
        link.starts_with(cl.var("NODE_API_URL_2")),
        "the record links to {link:?}, not node 2's page {}",
        cl.var("NODE_API_URL_2")
    );

    // A viewer sees it all but cannot push or roll back.
    cl.step(&viewer, &["viewer"]);
}
