//! The node's web page in a real browser (headless Chromium driven by
//! Playwright, `tests/browser/page.py`) over a real test-bed node, as an
//! operator uses it: log in, push rules, see a denied flow appear, switch a
//! workload's mode, fail to push a typo. Root. Screenshots are kept in
//! `target/page-shots/`.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn venv() -> std::path::PathBuf {
    std::env::var_os("GW_CI_VENV")
        .map(Into::into)
        .unwrap_or_else(|| "/var/cache/guardwire-ci/venv".into())
}

fn shots() -> std::path::PathBuf {
    let d = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/page-shots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs one page.py step in the management namespace; returns its stdout.
fn step(n: &Node, token: &str, args: &[&str]) -> String {
    let py = venv().join("bin/python3");
    assert!(
        py.exists(),
        "{} is missing: .ci/run installs it (python3 -m venv + pip install playwright)",
        py.display()
    );
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/page.py");
    let shots = shots();
    let out = Command::new("timeout")
        .args(["60", "ip", "netns", "exec", n.var("MGMT_NS")])
        .arg(&py)
        .arg(&script)
        .args(["--url", n.var("GW_API_URL"), "--token", token])
        .arg("--shots")
        .arg(&shots)
        .args(args)
        .output()
        .expect("run page.py");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("page.py {}: {}", args[0], stderr.trim());
    assert!(
        out.status.success(),
        "page step {args:?} failed ({}):\n{stderr}\nguardwire log:\n{}",
        out.status,
        n.log()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Whether a TCP connection from the pod to the peer's iperf3 port goes through.
fn connects(n: &Node) -> bool {
    let target = format!("echo > /dev/tcp/{}/5201", n.var("PEER_IP"));
    n.exec(&n.pod_ns(1), &["timeout", "2", "bash", "-c", &target])
        .status
        .success()
}

fn tc_filters(n: &Node, dev: &str) -> String {
    n.ok(
        n.var("NS_SEC"),
        &["tc", "filter", "show", "dev", dev, "ingress"],
    )
}

const DENY_5201: &str = "default = \"allow\"\n\n[[rule]]\nid = \"no-iperf\"\nproto = \"tcp\"\ndst_ports = 5201\naction = \"deny\"\n";
const TYPO: &str = "default = \"allow\"\n\n[[rule]]\nid = \"typo\"\nproto = \"tcp\"\ndst_ports = 5201\naction = \"denny\"\n";

#[test]
fn an_operator_watches_and_steers_a_node_from_the_page() {
    require_root();
    let n = Node::up("tpg1", &["--pods", "1"]);
    let token = std::fs::read_to_string(n.var("GW_ADMIN_TOKEN_FILE"))
        .unwrap()
        .trim()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };

    step(&n, &token, &["login"]);

    // A rule typed on the page takes effect on traffic.
    // A listener that stays (iperf3's server; node down stops it).
    n.ok(
        n.var("NS_PEER"),
        &["iperf3", "-s", "-D", "-B", n.var("PEER_IP")],
    );
    wait_for(
        || connects(&n),
        "the peer's listener to accept, before any rule",
    );
    assert!(connects(&n), "still accepting after a connection");
    let deny = file("deny.toml", DENY_5201);
    step(&n, &token, &["rules-push", "--text-file", &deny]);
    let generation = n.client().rules().unwrap().generation;
    let sent = now_ms();
    assert!(!connects(&n), "the rule pushed from the page does not hold");

    // The denied flow shows in the traffic table, action deny, updated within
    // 2 s of the traffic.
    let dst = format!("{}:5201", n.var("PEER_IP"));
    let row = step(
        &n,
        &token,
        &[
            "expect-flow",
            "--dst",
            &dst,
            "--action",
            "deny",
            "--workload",
            "pod1",
            "--since-ms",
            &sent.to_string(),
            "--within",
            "2",
        ],
    );
    assert!(row.contains("deny"), "{row}");

    // A typo shows its line and changes nothing.
    let typo = file("typo.toml", TYPO);
    step(
        &n,
        &token,
        &["rules-typo", "--text-file", &typo, "--line", "7"],
    );
    assert_eq!(n.client().rules().unwrap().generation, generation);
    assert!(
        !connects(&n),
        "the rules in force changed after a refused push"
    );

    // Switching the mode on the page changes the tc state.
    assert!(!tc_filters(&n, "wp-pod1").contains("mirred"));
    step(
        &n,
        &token,
        &["set-mode", "--workload", "pod1", "--mode", "off"],
    );
    let f = tc_filters(&n, "wp-pod1");
    assert!(
        f.contains("mirred") && f.contains("up-pod1"),
        "off mode: {f}"
    );
    assert_eq!(n.client().workloads().unwrap()[0].mode.name(), "off");
    step(
        &n,
        &token,
        &["set-mode", "--workload", "pod1", "--mode", "inline"],
    );
    assert!(!tc_filters(&n, "wp-pod1").contains("mirred"));

    // Usage chart and the Chinese labels.
    n.ping(&n.pod_ns(1), n.var("PEER_IP"), 5);
    std::thread::sleep(Duration::from_millis(1500));
    step(&n, &token, &["usage"]);
    step(&n, &token, &["lang-zh"]);

    // Rollback from the history puts the deny rule back in force.
    n.client()
        .push_rules("default = \"allow\"\n", "test")
        .unwrap();
    assert!(connects(&n), "allowed once the deny rule is gone");
    step(
        &n,
        &token,
        &["rollback", "--generation", &generation.to_string()],
    );
    assert!(n.client().rules().unwrap().generation > generation + 1);
    assert!(!connects(&n), "rolled back to the deny rule");
}
