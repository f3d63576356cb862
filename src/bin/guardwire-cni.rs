//! `guardwire-cni`: a chained CNI plugin (spec 1.0) that attaches a pod to
//! guardwire at creation, right after the plugin that made its network, so no
//! frame of a new pod bypasses guardwire. It passes the previous plugin's result
//! through unchanged.
//!
//! Network config keys of its own: `socket` (guardwire's control socket, default
//! /run/guardwire/guardwire.sock), `mode` and `on_failure` (default: the node's).

use guardwire::control::http::client::{Client, ClientError};
use guardwire::control::http::types::{AttachOptions, AttachPod};
use guardwire::vocab::{OnFailure, SteeringMode};
use serde::Deserialize;
use serde_json::{Value, json};
use std::io::Read;
use std::path::PathBuf;

const SUPPORTED: &[&str] = &["0.4.0", "1.0.0"];

#[derive(Deserialize)]
struct NetConf {
    #[serde(rename = "cniVersion")]
    cni_version: String,
    #[serde(default)]
    socket: Option<PathBuf>,
    #[serde(default)]
    mode: Option<SteeringMode>,
    #[serde(default)]
    on_failure: Option<OnFailure>,
    /// Labels given to every pod of this network.
    #[serde(default)]
    labels: Vec<String>,
    #[serde(rename = "prevResult", default)]
    prev_result: Option<Value>,
}

/// A CNI error: code and message, printed as the spec's error JSON.
struct CniError(u32, String);

fn env(k: &str) -> Result<String, CniError> {
    std::env::var(k).map_err(|_| CniError(4, format!("{k} is not set")))
}

/// A pod's labels: the network's, then `namespace=` and `pod=` from the
/// runtime's `CNI_ARGS` (`K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;...`).
fn labels(conf: &NetConf, cni_args: &str) -> Vec<String> {
    let mut out = conf.labels.clone();
    for kv in cni_args.split(';') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let key = match k {
            "K8S_POD_NAMESPACE" => "namespace",
            "K8S_POD_NAME" => "pod",
            _ => continue,
        };
        if !v.is_empty() {
            out.push(format!("{key}={v}"));
        }
    }
    out
}

/// guardwire's workload name for a container: at most 12 characters.
fn workload_name(container_id: &str) -> String {
    let clean: String = container_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    format!("c{}", &clean[..clean.len().min(11)])
}

fn run() -> Result<Option<Value>, CniError> {
    let cmd = env("CNI_COMMAND")?;
    if cmd == "VERSION" {
        return Ok(Some(
            json!({ "cniVersion": "1.0.0", "supportedVersions": SUPPORTED }),
        ));
    }
    let mut stdin = String::new();
    std::io::stdin()
        .read_to_string(&mut stdin)
        .map_err(|e| CniError(6, format!("read config: {e}")))?;
    let conf: NetConf = serde_json::from_str(&stdin)
        .map_err(|e| CniError(6, format!("bad network config: {e}")))?;
    if !SUPPORTED.contains(&conf.cni_version.as_str()) {
        return Err(CniError(
            1,
            format!("cniVersion {} not supported", conf.cni_version),
        ));
    }
    let sock = conf
        .socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(guardwire::control::config::DEFAULT_SOCKET));
    let name = workload_name(&env("CNI_CONTAINERID")?);
    let client = Client::unix(sock);
    let failed = |e: ClientError| CniError(11, e.to_string());
    match cmd.as_str() {
        "ADD" => {
            let prev = conf.prev_result.clone().ok_or_else(|| {
                CniError(
                    7,
                    "guardwire-cni is a chained plugin: it needs a prevResult".into(),
                )
            })?;
            client
                .attach_pod(&AttachPod {
                    netns: env("CNI_NETNS")?,
                    ifname: env("CNI_IFNAME")?,
                    // The pod's addresses are learned from its interface at attach.
                    options: AttachOptions {
                        name: Some(name),
                        mode: conf.mode,
                        on_failure: conf.on_failure,
                        labels: labels(&conf, &std::env::var("CNI_ARGS").unwrap_or_default()),
                        ..Default::default()
                    },
                })
                .map_err(failed)?;
            Ok(Some(prev))
        }
        "DEL" => {
            // Idempotent: a pod that is not attached (any more) is fine.
            match client.detach(&name) {
                Ok(_) => Ok(None),
                Err(ClientError::Refused { status: 404, .. }) => Ok(None),
                Err(ClientError::Connect { .. }) => Ok(None),
                Err(e) => Err(failed(e)),
            }
        }
        "CHECK" => {
            let found = client
                .workloads()
                .map_err(failed)?
                .iter()
                .any(|w| w.name == name);
            if found {
                Ok(None)
            } else {
                Err(CniError(
                    11,
                    format!("pod is not attached to guardwire (workload {name})"),
                ))
            }
        }
        other => Err(CniError(4, format!("unknown CNI_COMMAND {other}"))),
    }
}

fn main() {
    match run() {
        Ok(Some(v)) => println!("{v}"),
        Ok(None) => {}
        Err(CniError(code, msg)) => {
            println!(
                "{}",
                json!({ "cniVersion": "1.0.0", "code": code, "msg": msg })
            );
            std::process::exit(1);
        }
    }
}
