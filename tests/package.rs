//! Packaging for Kubernetes, checked for real:
//! - every document of `deploy/*.yaml` deserialises into the Kubernetes API
//!   type of its `kind` (k8s-openapi), and a field that type does not have
//!   fails (a misspelt key would otherwise be dropped without a word);
//! - the manifests agree with each other (volumes, ConfigMap keys, Secrets,
//!   selectors, ports) and with guardwire: the node config the agent's
//!   start.sh renders passes `guardwire check`, the CNI conflist chains
//!   guardwire-cni last on the agent's control socket, the controller is
//!   given only flags `guardwire controller` takes;
//! - the image: `packaging/image.sh build` then `check` (the image's binaries
//!   run with chroot, and its guardwire is the daemon of a test-bed node).
//!   Root only (skipped with a message otherwise).

use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::policy::v1 as policy;
use k8s_openapi::api::rbac::v1 as rbac;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One manifest document as the API type of its kind.
#[allow(clippy::large_enum_variant)]
enum Object {
    Namespace(core::Namespace),
    ConfigMap(core::ConfigMap),
    Secret(core::Secret),
    ServiceAccount(core::ServiceAccount),
    Service(core::Service),
    DaemonSet(apps::DaemonSet),
    Deployment(apps::Deployment),
    StatefulSet(apps::StatefulSet),
    PodDisruptionBudget(policy::PodDisruptionBudget),
    ClusterRole(rbac::ClusterRole),
    ClusterRoleBinding(rbac::ClusterRoleBinding),
    Role(rbac::Role),
    RoleBinding(rbac::RoleBinding),
}

/// Deserialises `v` into `T`; every field `T` does not know is an error.
fn strict<T: DeserializeOwned>(v: serde_yaml::Value) -> Result<T, String> {
    let mut unknown = Vec::new();
    let t = serde_ignored::deserialize(v, |path| unknown.push(path.to_string()))
        .map_err(|e| e.to_string())?;
    if unknown.is_empty() {
        Ok(t)
    } else {
        Err(format!("unknown field(s): {}", unknown.join(", ")))
    }
}

/// Parses a multi-document manifest, each document strictly by its kind.
/// Documents with only comments are skipped; an unknown kind is an error.
fn parse_manifests(text: &str) -> Result<Vec<Object>, String> {
    let mut out = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let n = i + 1;
        let v = serde_yaml::Value::deserialize(de).map_err(|e| format!("document {n}: {e}"))?;
        if v.is_null() {
            continue;
        }
        let kind = v
            .get("kind")
            .and_then(|k| k.as_str())
            .ok_or_else(|| format!("document {n}: no kind"))?
            .to_string();
        let name = v
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|m| m.as_str())
            .unwrap_or("?")
            .to_string();
        let at = |e: String| format!("document {n} ({kind} {name}): {e}");
        let obj = match kind.as_str() {
            "Namespace" => Object::Namespace(strict(v).map_err(at)?),
            "ConfigMap" => Object::ConfigMap(strict(v).map_err(at)?),
            "Secret" => Object::Secret(strict(v).map_err(at)?),
            "ServiceAccount" => Object::ServiceAccount(strict(v).map_err(at)?),
            "Service" => Object::Service(strict(v).map_err(at)?),
            "DaemonSet" => Object::DaemonSet(strict(v).map_err(at)?),
            "Deployment" => Object::Deployment(strict(v).map_err(at)?),
            "StatefulSet" => Object::StatefulSet(strict(v).map_err(at)?),
            "PodDisruptionBudget" => Object::PodDisruptionBudget(strict(v).map_err(at)?),
            "ClusterRole" => Object::ClusterRole(strict(v).map_err(at)?),
            "ClusterRoleBinding" => Object::ClusterRoleBinding(strict(v).map_err(at)?),
            "Role" => Object::Role(strict(v).map_err(at)?),
            "RoleBinding" => Object::RoleBinding(strict(v).map_err(at)?),
            other => return Err(format!("document {n} ({name}): unknown kind {other}")),
        };
        out.push(obj);
    }
    Ok(out)
}

/// Every deploy/*.yaml file, parsed (panics naming the file on any error).
fn manifests() -> Vec<(String, Object)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy"))
        .expect("deploy/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no deploy/*.yaml");
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let objs = parse_manifests(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!objs.is_empty(), "{name}: no document");
        out.extend(objs.into_iter().map(|o| (name.clone(), o)));
    }
    out
}

/// The objects of deploy/, by kind.
#[derive(Default)]
struct Deploy {
    namespaces: Vec<core::Namespace>,
    config_maps: Vec<core::ConfigMap>,
    secrets: Vec<core::Secret>,
    service_accounts: Vec<core::ServiceAccount>,
    services: Vec<core::Service>,
    daemon_sets: Vec<apps::DaemonSet>,
    deployments: Vec<apps::Deployment>,
    pdbs: Vec<policy::PodDisruptionBudget>,
    rbac: usize,
}

fn deploy() -> Deploy {
    let mut d = Deploy::default();
    for (_, o) in manifests() {
        match o {
            Object::Namespace(x) => d.namespaces.push(x),
            Object::ConfigMap(x) => d.config_maps.push(x),
            Object::Secret(x) => d.secrets.push(x),
            Object::ServiceAccount(x) => d.service_accounts.push(x),
            Object::Service(x) => d.services.push(x),
            Object::DaemonSet(x) => d.daemon_sets.push(x),
            Object::Deployment(x) => d.deployments.push(x),
            Object::PodDisruptionBudget(x) => d.pdbs.push(x),
            Object::StatefulSet(_) => panic!("deploy/ has no StatefulSet of its own"),
            Object::ClusterRole(_)
            | Object::ClusterRoleBinding(_)
            | Object::Role(_)
            | Object::RoleBinding(_) => d.rbac += 1,
        }
    }
    d
}

impl Deploy {
    fn config_map(&self, name: &str) -> &core::ConfigMap {
        self.config_maps
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no ConfigMap {name} in deploy/"))
    }

    fn config_data(&self, name: &str, key: &str) -> String {
        self.config_map(name)
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .unwrap_or_else(|| panic!("ConfigMap {name} has no key {key}"))
            .clone()
    }

    fn agent(&self) -> &apps::DaemonSet {
        assert_eq!(self.daemon_sets.len(), 1, "one DaemonSet: the node agent");
        &self.daemon_sets[0]
    }

    fn controller(&self) -> &apps::Deployment {
        assert_eq!(self.deployments.len(), 1, "one Deployment: the controller");
        &self.deployments[0]
    }
}

fn name_of(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    m.name.as_deref().unwrap_or("?")
}

fn pod_spec(t: &core::PodTemplateSpec) -> &core::PodSpec {
    t.spec.as_ref().expect("pod template has a spec")
}

fn all_containers(p: &core::PodSpec) -> impl Iterator<Item = &core::Container> {
    p.init_containers
        .iter()
        .flatten()
        .chain(p.containers.iter())
}

fn container<'a>(p: &'a core::PodSpec, name: &str) -> &'a core::Container {
    all_containers(p)
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn volume<'a>(p: &'a core::PodSpec, name: &str) -> &'a core::Volume {
    p.volumes
        .iter()
        .flatten()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

/// The volume mounted at `path` in container `c`, with its mount.
fn mounted_at<'a>(
    p: &'a core::PodSpec,
    c: &'a core::Container,
    path: &str,
) -> (&'a core::VolumeMount, &'a core::Volume) {
    let m = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == path)
        .unwrap_or_else(|| panic!("container {} mounts nothing at {path}", c.name));
    (m, volume(p, &m.name))
}

/// Checks that a pod template only refers to what deploy/ defines.
fn check_pod_refs(d: &Deploy, what: &str, t: &core::PodTemplateSpec) {
    let p = pod_spec(t);
    let sa = p.service_account_name.as_deref().unwrap_or("default");
    assert!(
        d.service_accounts
            .iter()
            .any(|s| s.metadata.name.as_deref() == Some(sa)),
        "{what}: ServiceAccount {sa} is not in deploy/"
    );
    let secret_names: BTreeSet<&str> = d.secrets.iter().map(|s| name_of(&s.metadata)).collect();
    let volumes: BTreeSet<&str> = p
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    for v in p.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            let c = d.config_map(&cm.name);
            for item in cm.items.iter().flatten() {
                assert!(
                    c.data.as_ref().is_some_and(|x| x.contains_key(&item.key)),
                    "{what}: volume {} wants key {} of ConfigMap {}",
                    v.name,
                    item.key,
                    cm.name
                );
            }
        }
        if let Some(s) = &v.secret {
            let n = s.secret_name.as_deref().unwrap_or("?");
            assert!(
                secret_names.contains(n),
                "{what}: volume {} wants Secret {n}, not in deploy/",
                v.name
            );
        }
    }
    for c in all_containers(p) {
        assert!(c.image.is_some(), "{what}/{}: no image", c.name);
        for m in c.volume_mounts.iter().flatten() {
            assert!(
                volumes.contains(m.name.as_str()),
                "{what}/{}: mounts volume {}, which the pod does not have",
                c.name,
                m.name
            );
        }
        for e in c.env.iter().flatten() {
            if let Some(r) = e
                .value_from
                .as_ref()
                .and_then(|f| f.config_map_key_ref.as_ref())
            {
                d.config_data(&r.name, &r.key);
            }
        }
    }
}

fn matches(selector: &BTreeMap<String, String>, labels: Option<&BTreeMap<String, String>>) -> bool {
    !selector.is_empty()
        && selector
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

// ---------------------------------------------------------------- (a) manifests

#[test]
fn manifests_are_strict_kubernetes_objects() {
    let d = deploy();
    assert_eq!(d.namespaces.len(), 1, "one Namespace");
    let ns = name_of(&d.namespaces[0].metadata).to_string();
    // Everything namespaced lives in it.
    let mut seen = BTreeSet::new();
    for (file, o) in manifests() {
        let (kind, meta, namespaced) = match &o {
            Object::Namespace(x) => ("Namespace", &x.metadata, false),
            Object::ConfigMap(x) => ("ConfigMap", &x.metadata, true),
            Object::Secret(x) => ("Secret", &x.metadata, true),
            Object::ServiceAccount(x) => ("ServiceAccount", &x.metadata, true),
            Object::Service(x) => ("Service", &x.metadata, true),
            Object::DaemonSet(x) => ("DaemonSet", &x.metadata, true),
            Object::Deployment(x) => ("Deployment", &x.metadata, true),
            Object::StatefulSet(x) => ("StatefulSet", &x.metadata, true),
            Object::PodDisruptionBudget(x) => ("PodDisruptionBudget", &x.metadata, true),
            Object::Role(x) => ("Role", &x.metadata, true),
            Object::RoleBinding(x) => ("RoleBinding", &x.metadata, true),
            Object::ClusterRole(x) => ("ClusterRole", &x.metadata, false),
            Object::ClusterRoleBinding(x) => ("ClusterRoleBinding", &x.metadata, false),
        };
        assert!(
            seen.insert((kind, name_of(meta).to_string())),
            "{file}: {kind} {} defined twice",
            name_of(meta)
        );
        if !namespaced {
            continue;
        }
        assert_eq!(
            meta.namespace.as_deref(),
            Some(ns.as_str()),
            "{file}: {kind} {} is not in namespace {ns}",
            name_of(meta)
        );
    }
    // Nothing talks to the Kubernetes API: no RBAC, no token in the pods.
    assert_eq!(
        d.rbac, 0,
        "RBAC objects, but nothing uses the Kubernetes API"
    );
    for sa in &d.service_accounts {
        assert_eq!(sa.automount_service_account_token, Some(false));
    }
}

#[test]
fn manifests_refer_only_to_what_they_define() {
    let d = deploy();
    let agent = d.agent();
    let spec = &agent.spec;
    check_pod_refs(&d, "DaemonSet", &spec.template);
    assert!(matches(
        spec.selector.match_labels.as_ref().unwrap(),
        spec.template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref())
    ));
    let ctl = d.controller();
    let cspec = &ctl.spec;
    check_pod_refs(&d, "Deployment", &cspec.template);
    let pod_labels = cspec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref());
    assert!(matches(
        cspec.selector.match_labels.as_ref().unwrap(),
        pod_labels
    ));
    // The Service reaches the controller's pods on a port they have.
    assert_eq!(d.services.len(), 1, "one Service: the controller's");
    let svc = d.services[0].spec.as_ref().unwrap();
    assert!(
        matches(svc.selector.as_ref().unwrap(), pod_labels),
        "the Service selects the controller's pods"
    );
    let c = container(pod_spec(&cspec.template), "controller");
    for port in svc.ports.iter().flatten() {
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        let ok = match port.target_port.as_ref() {
            Some(IntOrString::String(n)) => c
                .ports
                .iter()
                .flatten()
                .any(|p| p.name.as_deref() == Some(n.as_str())),
            Some(IntOrString::Int(n)) => c.ports.iter().flatten().any(|p| p.container_port == *n),
            None => c
                .ports
                .iter()
                .flatten()
                .any(|p| p.container_port == port.port),
        };
        assert!(ok, "Service port {:?} matches no container port", port.name);
    }
    for pdb in &d.pdbs {
        let sel = pdb.spec.as_ref().unwrap().selector.as_ref().unwrap();
        assert!(
            matches(sel.match_labels.as_ref().unwrap(), pod_labels),
            "PodDisruptionBudget {} selects the controller",
            name_of(&pdb.metadata)
        );
    }
}

#[test]
fn agent_has_the_privileges_and_mounts_guardwire_needs() {
    let d = deploy();
    let t = &d.agent().spec.template;
    let p = pod_spec(t);
    assert_eq!(
        p.host_network,
        Some(true),
        "the agent works in the node's netns"
    );
    let agent = container(p, "agent");
    let sc = agent
        .security_context
        .as_ref()
        .expect("agent securityContext");
    let caps: BTreeSet<&str> = sc
        .capabilities
        .as_ref()
        .and_then(|c| c.add.as_ref())
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    for cap in ["NET_ADMIN", "NET_RAW", "SYS_ADMIN"] {
        assert!(caps.contains(cap), "agent lacks {cap}: {caps:?}");
    }
    // Bidirectional propagation: only allowed in privileged containers.
    assert_eq!(sc.privileged, Some(true));
    let host = |path: &str| {
        let (m, v) = mounted_at(p, agent, path);
        let hp = v
            .host_path
            .as_ref()
            .unwrap_or_else(|| panic!("{path} is no hostPath"));
        assert_eq!(hp.path, path, "{path} mounts the node's {path}");
        m
    };
    assert_eq!(
        host("/var/run/netns").mount_propagation.as_deref(),
        Some("Bidirectional"),
        "the sec ns pinned in /var/run/netns must reach the node"
    );
    host("/run/guardwire");
    // The init container installs the CNI plugin on the node.
    let init = container(p, "install-cni");
    assert!(
        p.init_containers
            .iter()
            .flatten()
            .any(|c| c.name == "install-cni")
    );
    for (path, host_path) in [
        ("/host/opt/cni/bin", "/opt/cni/bin"),
        ("/host/etc/cni/net.d", "/etc/cni/net.d"),
    ] {
        let (_, v) = mounted_at(p, init, path);
        assert_eq!(
            v.host_path.as_ref().map(|h| h.path.as_str()),
            Some(host_path)
        );
    }
    let script = init.args.as_ref().unwrap().join("\n");
    assert!(
        script.contains("/opt/cni/bin/guardwire-cni /host/opt/cni/bin/"),
        "install-cni copies the image's guardwire-cni: {script}"
    );
    // The node's name comes from the downward API and is rendered by start.sh.
    let env: BTreeMap<&str, &core::EnvVar> = agent
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e))
        .collect();
    let field = |k: &str| {
        env[k]
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str())
    };
    assert_eq!(field("NODE_NAME"), Some("spec.nodeName"));
    assert_eq!(field("NODE_IP"), Some("status.hostIP"));
    let cmd = agent.command.as_ref().unwrap();
    assert_eq!(
        cmd.as_slice(),
        ["/bin/sh", "/etc/guardwire/node/start.sh", "run"]
    );
    let (_, v) = mounted_at(p, agent, "/etc/guardwire/node");
    assert_eq!(
        v.config_map.as_ref().map(|c| c.name.as_str()),
        Some("guardwire-node")
    );
}

/// Renders the ConfigMap's node.toml.in with the ConfigMap's start.sh, the way
/// the agent does; returns (dir, path of the rendered config).
fn render_node_config(d: &Deploy, node: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let tin = dir.path().join("node.toml.in");
    let script = dir.path().join("start.sh");
    let out = dir.path().join("node.toml");
    std::fs::write(&tin, d.config_data("guardwire-node", "node.toml.in")).unwrap();
    std::fs::write(&script, d.config_data("guardwire-node", "start.sh")).unwrap();
    let o = Command::new("sh")
        .arg(&script)
        .arg("render")
        .arg(&tin)
        .arg(&out)
        .env("NODE_NAME", node)
        .env("NODE_IP", "192.0.2.10")
        .env(
            "ETCD_ENDPOINTS",
            d.config_data("guardwire-etcd", "endpoints"),
        )
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "start.sh render: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (dir, out)
}

#[test]
fn node_config_renders_and_passes_guardwire_check() {
    let d = deploy();
    let (dir, cfg) = render_node_config(&d, "node-1.example");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        !text
            .lines()
            .any(|l| !l.trim_start().starts_with('#') && l.contains('@')),
        "placeholders left:\n{text}"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_guardwire"))
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "guardwire check of the deploy node config failed:\n{}{}\n--- rendered ---\n{text}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let v: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(v["node"]["name"].as_str(), Some("node-1.example"));
    let endpoints: Vec<&str> = v["cluster"]["endpoints"]
        .as_array()
        .expect("[cluster] endpoints")
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    let want: Vec<String> = d
        .config_data("guardwire-etcd", "endpoints")
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    assert_eq!(
        endpoints, want,
        "[cluster] endpoints = the guardwire-etcd ConfigMap's"
    );
    assert_eq!(
        v["cluster"]["api_url"].as_str(),
        Some("http://192.0.2.10:7443")
    );
    // A name that is no DNS name is refused rather than pasted into TOML.
    let tin = dir.path().join("node.toml.in");
    let o = Command::new("sh")
        .arg(dir.path().join("start.sh"))
        .arg("render")
        .arg(&tin)
        .arg(dir.path().join("bad.toml"))
        .env("NODE_NAME", "a\"b")
        .env("NODE_IP", "192.0.2.10")
        .env("ETCD_ENDPOINTS", "https://e:2379")
        .output()
        .unwrap();
    assert!(!o.status.success(), "a quote in the node name is refused");
}

#[test]
fn cni_conflist_chains_guardwire_cni_on_the_agents_socket() {
    let d = deploy();
    let text = d.config_data("guardwire-cni", "10-guardwire.conflist");
    let v: serde_json::Value = serde_json::from_str(&text).expect("the conflist is JSON");
    assert!(v["cniVersion"].is_string() && v["name"].is_string());
    let plugins = v["plugins"].as_array().expect("plugins");
    assert!(plugins.len() >= 2, "a main plugin, then guardwire-cni");
    assert!(
        plugins[0]["ipam"].is_object(),
        "the first plugin makes the network"
    );
    assert_eq!(
        plugins
            .iter()
            .filter(|p| p["type"] == "guardwire-cni")
            .count(),
        1
    );
    let gw = plugins.last().unwrap();
    assert_eq!(gw["type"], "guardwire-cni", "guardwire-cni is chained last");
    // guardwire-cni's own keys (src/bin/guardwire-cni.rs).
    for k in gw.as_object().unwrap().keys() {
        assert!(
            ["type", "socket", "mode", "on_failure", "labels"].contains(&k.as_str()),
            "guardwire-cni has no key {k}"
        );
    }
    if let Some(m) = gw.get("mode") {
        assert!(["off", "mirror", "inline"].contains(&m.as_str().unwrap()));
    }
    if let Some(m) = gw.get("on_failure") {
        assert!(["open", "closed"].contains(&m.as_str().unwrap()));
    }
    let (_dir, cfg) = render_node_config(&d, "n1");
    let node: toml::Value = toml::from_str(&std::fs::read_to_string(cfg).unwrap()).unwrap();
    let sock = node["node"]["control_socket"].as_str().unwrap();
    assert_eq!(
        gw["socket"].as_str(),
        Some(sock),
        "guardwire-cni talks to the agent's control socket"
    );
    // ...which is in the hostPath the agent shares with the node.
    let p = pod_spec(&d.agent().spec.template);
    let dir = Path::new(sock).parent().unwrap().to_str().unwrap();
    let (_, v) = mounted_at(p, container(p, "agent"), dir);
    assert_eq!(v.host_path.as_ref().map(|h| h.path.as_str()), Some(dir));
}

#[test]
fn controller_gets_flags_guardwire_controller_takes() {
    let d = deploy();
    let spec = &d.controller().spec;
    assert_eq!(spec.replicas, Some(2));
    let p = pod_spec(&spec.template);
    let c = container(p, "controller");
    let args = c.args.as_ref().expect("controller args");
    assert_eq!(args[0], "controller");
    let help = Command::new(env!("CARGO_BIN_EXE_guardwire"))
        .args(["controller", "--help"])
        .output()
        .unwrap();
    let help_text = String::from_utf8_lossy(&help.stdout).into_owned();
    assert!(
        help.status.success(),
        "guardwire controller --help: {}",
        String::from_utf8_lossy(&help.stderr)
    );
    let mut flags = BTreeMap::new();
    let mut i = 1;
    while i < args.len() {
        let flag = &args[i];
        assert!(
            flag.starts_with("--"),
            "controller arg {flag}: a flag expected"
        );
        assert!(
            help_text.contains(flag.as_str()),
            "guardwire controller takes no {flag}:\n{help_text}"
        );
        flags.insert(flag.as_str(), args[i + 1].as_str());
        i += 2;
    }
    assert_eq!(flags["--listen"], "0.0.0.0:8443");
    assert_eq!(flags["--etcd"], "$(ETCD_ENDPOINTS)");
    assert!(
        c.env.iter().flatten().any(|e| e.name == "ETCD_ENDPOINTS"),
        "$(ETCD_ENDPOINTS) is an env var of the container"
    );
    // Every file handed to it is a key of a Secret volume mounted there.
    for f in [
        "--etcd-ca",
        "--etcd-cert",
        "--etcd-key",
        "--admin-token-file",
        "--viewer-token-file",
        "--node-token-file",
    ] {
        let path = Path::new(flags[f]);
        let dir = path.parent().unwrap().to_str().unwrap();
        let file = path.file_name().unwrap().to_str().unwrap();
        let (_, v) = mounted_at(p, c, dir);
        let s = v
            .secret
            .as_ref()
            .unwrap_or_else(|| panic!("{f}: {dir} is no Secret"));
        assert!(
            s.items.iter().flatten().any(|i| i.path == file),
            "{f}: Secret {:?} has no item {file}",
            s.secret_name
        );
    }
}

// ------------------------------------------------- the checker itself (unit tests)

const GOOD_DS: &str = r#"
# comment-only documents are skipped
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: x
spec:
  selector:
    matchLabels: {a: b}
  template:
    metadata:
      labels: {a: b}
    spec:
      hostNetwork: true
      containers:
        - name: c
          image: i
          securityContext:
            privileged: true
"#;

#[test]
fn checker_accepts_a_correct_manifest() {
    let objs = parse_manifests(GOOD_DS).unwrap();
    assert_eq!(objs.len(), 1);
    assert!(matches!(objs[0], Object::DaemonSet(_)));
}

#[test]
fn checker_refuses_a_misspelt_field() {
    for (good, bad) in [
        ("hostNetwork", "hostNetwrok"),
        ("privileged", "privilegd"),
        ("matchLabels", "matchLabel"),
    ] {
        let text = GOOD_DS.replace(good, bad);
        let e = parse_manifests(&text)
            .err()
            .unwrap_or_else(|| panic!("{bad} was accepted"));
        assert!(e.contains(bad), "{bad}: {e}");
    }
    // The same on the real agent manifest.
    let real = std::fs::read_to_string(repo().join("deploy/30-agent.yaml")).unwrap();
    assert!(parse_manifests(&real).is_ok());
    let e = parse_manifests(&real.replace("mountPropagation:", "mountPropogation:"))
        .err()
        .expect("mountPropogation was accepted");
    assert!(e.contains("mountPropogation"), "{e}");
}

#[test]
fn checker_refuses_unknown_kinds_and_wrong_api_versions() {
    let e = parse_manifests(&GOOD_DS.replace("kind: DaemonSet", "kind: DaemonSett"))
        .err()
        .unwrap();
    assert!(e.contains("unknown kind DaemonSett"), "{e}");
    assert!(parse_manifests(&GOOD_DS.replace("apps/v1", "v1")).is_err());
    assert!(parse_manifests("apiVersion: v1\nmetadata: {name: x}\n").is_err());
    // A field of the wrong type.
    assert!(parse_manifests(&GOOD_DS.replace("hostNetwork: true", "hostNetwork: [1]")).is_err());
}

// ---------------------------------------------------------------- (b) the image

const PREFIX: &str = "tpk1";

/// Removes what an image check leaves (node, mounts, buildah container), also
/// when the test fails.
struct CheckCleanup;

impl Drop for CheckCleanup {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("packaging/image.sh"))
            .args(["cleanup", "--prefix", PREFIX])
            .status();
    }
}

/// Runs packaging/image.sh ARGS bounded by `secs`; panics with its log's end on failure.
fn image_sh(args: &[&str], secs: u64) -> String {
    let t = Instant::now();
    let o = Command::new("timeout")
        .args(["-k", "30", &secs.to_string(), "bash"])
        .arg(repo().join("packaging/image.sh"))
        .args(args)
        .output()
        .expect("run packaging/image.sh");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // The script's own lines (steps, timings), without cargo's.
    let own: Vec<&str> = log.lines().filter(|l| l.starts_with("[image]")).collect();
    eprintln!(
        "packaging/image.sh {args:?} ({:.0?}):\n{}",
        t.elapsed(),
        own.join("\n")
    );
    if !o.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(80).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "packaging/image.sh {args:?} failed ({}) after {:.0?}:\n{}",
            o.status,
            t.elapsed(),
            tail.join("\n")
        );
    }
    log
}

#[test]
fn image_builds_and_runs_as_a_nodes_daemon() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "SKIPPED image_builds_and_runs_as_a_nodes_daemon: needs root (buildah, chroot, network namespaces)"
        );
        return;
    }
    let _cleanup = CheckCleanup;
    // Cold (debootstrap, toolchain image, every crate) well within the
    // bound; with the caches a rebuild takes a few minutes.
    image_sh(&["build"], 2400);
    let log = image_sh(&["check", "--prefix", PREFIX], 600);
    for want in [
        "guardwire --version: guardwire ",
        "pod1 pings",
        "guardwire stats: wp-pod1 rx",
        "deploy node config: passes guardwire check",
        "check passed",
    ] {
        assert!(log.contains(want), "image check did not report {want:?}");
    }
}
