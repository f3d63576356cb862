//! `guardwire-cni` chained after the real CNI `bridge` plugin, invoked the way a
//! container runtime runs a plugin chain: the pod is attached at creation, the
//! bridge plugin's result passes through unchanged, CHECK and DEL work, VERSION
//! answers, the pod's labels (from the network config and the runtime's
//! CNI_ARGS) select it in rules. Needs root.

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
        "socket": n.var("GW_SOCK"), "prevResult": prev_v, "labels": ["tier=web"],
    })
    .to_string();
    // As kubelet runs it: CNI_ARGS names the pod.
    let wrap = tempfile::tempdir().unwrap();
    let with_args = wrap.path().join("guardwire-cni");
    std::fs::write(
        &with_args,
        format!(
            "#!/bin/sh\nCNI_ARGS='IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-1' exec {} \"$@\"\n",
            gw_cni.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&with_args, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (ok, out) = plugin(&n, &with_args, "ADD", &ns, &conf);
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

    // Labels: the network's, and the pod's namespace and name from CNI_ARGS
    // as kubelet passes them; a rule written for a label selects the pod.
    let c = n.client();
    let w = c.workloads().unwrap();
    let me = w.iter().find(|w| w.name.starts_with('c')).expect("the pod");
    assert_eq!(
        me.labels,
        ["tier=web", "namespace=prod", "pod=web-1"],
        "{me:?}"
    );
    let deny = |label: &str| {
        format!(
            "[[rule]]\nlabel = \"{label}\"\nproto = \"icmp\"\ndirection = \"egress\"\naction = \"deny\"\n"
        )
    };
    c.push_rules(&deny("pod=web-1"), "t").unwrap();
    let blocked = n.exec(
        &ns,
        &["ping", "-c", "2", "-W", "1", "-i", "0.3", n.var("PEER_IP")],
    );
    assert!(
        !blocked.status.success(),
        "a rule for label pod=web-1 denies the pod"
    );
    n.ping(&n.pod_ns(1), n.var("PEER_IP"), 2);
    c.push_rules(&deny("pod=web-2"), "t").unwrap();
    n.ping(&ns, n.var("PEER_IP"), 2);
    c.push_rules("", "t").unwrap();

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
