//! `guardwire-cni` chained after the real CNI `bridge` plugin, invoked the way a
//! container runtime runs a plugin chain: the pod is attached at creation, the
//! bridge plugin's result passes through unchanged, CHECK and DEL work, VERSION
//! answers. Needs root.

mod common;

use common::*;
use std::path::{Path, PathBuf};

fn cni_bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_guardwire-cni"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn plugin(n: &Node, plugin_path: &Path, cmd: &str, ns: &str, conf: &str) -> (bool, String) {
    cni_plugin(n, plugin_path, cmd, ns, conf, &cni_bin_dir())
}

#[test]
fn chained_after_bridge_the_pod_is_attached_at_creation() {
    let n = Node::up("tcn1", &["--pods", "1", "--live"]);
    let pod = TempNetns::new("tcn1-newpod");
    let ns = pod.0.clone();
    let bridge = format!(
        r#"{{"cniVersion":"1.0.0","name":"gwnet","type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":false,"ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.244.0.0/24","gateway":"10.244.0.1"}}]],"routes":[{{"dst":"0.0.0.0/0"}}],"dataDir":"{}/ipam"}}}}"#,
        n.var("STATE")
    );
    let gw_cni = Path::new(env!("CARGO_BIN_EXE_guardwire-cni"));

    let (ok, out) = plugin(&n, gw_cni, "VERSION", &ns, "{}");
    assert!(ok && out.contains("1.0.0"), "{out}");

    // The chain: bridge ADD, then guardwire-cni ADD with bridge's result as prevResult.
    let (ok, prev) = plugin(&n, Path::new("/usr/lib/cni/bridge"), "ADD", &ns, &bridge);
    assert!(ok, "bridge ADD: {prev}");
    let prev_v: serde_json::Value = serde_json::from_str(&prev).unwrap();
    let conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "gwnet", "type": "guardwire-cni",
        "socket": n.var("GW_SOCK"), "prevResult": prev_v,
    })
    .to_string();
    let (ok, out) = plugin(&n, gw_cni, "ADD", &ns, &conf);
    assert!(ok, "guardwire-cni ADD: {out}");
    let out_v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out_v, prev_v, "prevResult passed through unchanged");

    let ip = prev_v["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    n.ping(&ns, n.var("PEER_IP"), 3);
    n.ping(&n.pod_ns(1), &ip, 2);
    let s = n.stats();
    let wl = s
        .ports
        .iter()
        .find(|p| p.port.starts_with("wp-c"))
        .expect("the new pod's workload port");
    assert!(
        wl.counters.rx_frames >= 3,
        "the new pod's frames cross guardwire"
    );

    let (ok, out) = plugin(&n, gw_cni, "CHECK", &ns, &conf);
    assert!(ok, "CHECK: {out}");
    let (ok, out) = plugin(&n, gw_cni, "DEL", &ns, &conf);
    assert!(ok, "DEL: {out}");
    let (ok, out) = plugin(&n, gw_cni, "DEL", &ns, &conf);
    assert!(ok, "DEL again is fine: {out}");
    let (ok, out) = plugin(&n, gw_cni, "CHECK", &ns, &conf);
    assert!(
        !ok && out.contains("not attached"),
        "CHECK after DEL: {out}"
    );
    let (ok, out) = plugin(&n, Path::new("/usr/lib/cni/bridge"), "DEL", &ns, &bridge);
    assert!(ok, "bridge DEL: {out}");

    let no_prev = conf.replace("prevResult", "somethingElse");
    let (ok, out) = plugin(&n, gw_cni, "ADD", &ns, &no_prev);
    assert!(!ok && out.contains("prevResult"), "{out}");
}
