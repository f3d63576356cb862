//! The cluster's store: etcd, its key layout (docs/cluster.md) and the
//! documents kept under it. Nothing here keeps state of its own.

use crate::control::record::log::{de_millis, ser_millis};
use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Everything guardwire keeps in etcd lives under this prefix.
pub const PREFIX: &str = "/guardwire/v1/";

/// `/guardwire/v1/rulesets/`
pub fn rulesets_prefix() -> String {
    format!("{PREFIX}rulesets/")
}

/// `/guardwire/v1/rulesets/<name>`
pub fn ruleset_key(name: &str) -> String {
    format!("{PREFIX}rulesets/{name}")
}

/// `/guardwire/v1/history/<name>/`
pub fn history_prefix(name: &str) -> String {
    format!("{PREFIX}history/{name}/")
}

/// `/guardwire/v1/nodes/`
pub fn nodes_prefix() -> String {
    format!("{PREFIX}nodes/")
}

/// `/guardwire/v1/nodes/<node>/status`
pub fn status_key(node: &str) -> String {
    format!("{PREFIX}nodes/{node}/status")
}

/// `/guardwire/v1/nodes/<node>/info`: what the node is, kept when its lease
/// lapses so a node that went down is still listed.
pub fn info_key(node: &str) -> String {
    format!("{PREFIX}nodes/{node}/info")
}

/// What a node is (`info_key`), written without a lease.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its labels.
    pub labels: Vec<String>,
    /// Its API's URL.
    pub api: Option<String>,
}

/// Whether `name` may name a rule set or a node in a key: 1 to 63 of
/// `[A-Za-z0-9._-]`, so it never contains a `/` that would change the layout.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// How to reach etcd.
#[derive(Clone, Debug, Default)]
pub struct EtcdOptions {
    /// Client URLs.
    pub endpoints: Vec<String>,
    /// PEM CA that signed etcd's server certificate.
    pub ca: Option<PathBuf>,
    /// PEM client certificate and key.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// Time a connection attempt to etcd may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time one etcd request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the next connection starts looking: connections spread over the
/// members, and one that failed is not tried first again.
static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Connects to one live member of etcd, trying them in turn. The client
/// speaks to that member only (the crate's balanced channel fails requests
/// while any member is down): when it goes, the caller connects again and
/// gets another. A member that dies closes its connections at once; one cut
/// off silently is found by HTTP/2 keep-alives within 15 s, so a watch on it
/// ends instead of hanging (pings are spaced so that thousands of nodes do
/// not load the members with them).
pub async fn connect(o: &EtcdOptions) -> Result<Client, String> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
        .with_keep_alive_while_idle(true);
    if o.ca.is_some() || o.identity.is_some() {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let mut tls = TlsOptions::new();
        if let Some(ca) = &o.ca {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let Some((cert, key)) = &o.identity {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        opts = opts.with_tls(tls);
    }
    let n = o.endpoints.len();
    let start = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut errors = Vec::new();
    for i in 0..n {
        let ep = &o.endpoints[(start + i) % n];
        let tried = async {
            let mut c = Client::connect([ep], Some(opts.clone())).await?;
            // A request proves the member answers (connecting alone may not).
            c.get("/guardwire/", Some(GetOptions::new().with_count_only()))
                .await?;
            Ok::<_, etcd_client::Error>(c)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT + REQUEST_TIMEOUT, tried).await {
            Ok(Ok(c)) => return Ok(c),
            Ok(Err(e)) => errors.push(format!("{ep}: {e}")),
            Err(_) => errors.push(format!("{ep}: no answer")),
        }
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    Err(format!("etcd: no member answers ({})", errors.join("; ")))
}

/// Whether a failed request can never have reached etcd (no connection), so
/// sending it again cannot apply it twice.
pub fn never_sent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => s.code() == tonic::Code::Unavailable,
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
}

/// One rule set as the store has it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredSet {
    /// Its text.
    pub text: String,
    /// etcd's mod_revision of its key: the cluster-wide revision.
    pub revision: i64,
    /// The node labels it asks for ([`wanted_nodes`]), read once.
    pub nodes: Vec<String>,
}

impl StoredSet {
    /// A set of `text` at `revision`.
    pub fn new(text: String, revision: i64) -> StoredSet {
        let nodes = wanted_nodes(&text);
        StoredSet {
            text,
            revision,
            nodes,
        }
    }

    /// The set a rule-set key holds.
    pub fn from_kv(kv: &etcd_client::KeyValue) -> Result<StoredSet, etcd_client::Error> {
        Ok(StoredSet::new(
            kv.value_str()?.to_string(),
            kv.mod_revision(),
        ))
    }
}

/// The node labels a rule set asks for, read without judging the rest of the
/// text: an unreadable text asks for none, so every node chooses it and
/// reports why it refused it.
pub fn wanted_nodes(text: &str) -> Vec<String> {
    #[derive(Deserialize)]
    struct Head {
        #[serde(default)]
        nodes: Vec<String>,
    }
    toml::from_str::<Head>(text)
        .map(|h| h.nodes)
        .unwrap_or_default()
}

/// The set a node carrying `labels` applies: of those whose `nodes` it all
/// carries, the one asking for the most labels, then the first by name.
pub fn choose<'a>(
    sets: &'a BTreeMap<String, StoredSet>,
    labels: &[String],
) -> Option<(&'a str, &'a StoredSet)> {
    let mut best: Option<(usize, &str, &StoredSet)> = None;
    for (name, s) in sets {
        if !s.nodes.iter().all(|w| labels.contains(w)) {
            continue;
        }
        if best.is_none_or(|(n, _, _)| s.nodes.len() > n) {
            best = Some((s.nodes.len(), name, s));
        }
    }
    best.map(|(_, n, s)| (n, s))
}

/// What a node writes about itself, on its lease.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeStatus {
    /// Node name.
    pub node: String,
    /// Its labels.
    pub labels: Vec<String>,
    /// Its API's URL, as the controller reaches it.
    pub api: Option<String>,
    /// guardwire's version.
    pub version: String,
    /// The rule set it enforces.
    pub ruleset: Option<String>,
    /// Its revision (0: none from the cluster yet).
    pub revision: i64,
    /// SHA-256 of its text.
    pub hash: String,
    /// When it was applied.
    #[serde(serialize_with = "ser_millis", deserialize_with = "de_millis")]
    #[schema(value_type = String, format = DateTime)]
    pub applied_at: u64,
    /// Why the last set offered was refused (the one before stays in force).
    pub error: Option<String>,
    /// The revision that was refused.
    pub error_revision: Option<i64>,
    /// Workloads wired.
    pub workloads: usize,
    /// Frames dropped per second, over the last status period.
    pub drop_rate: f64,
    /// When this status was written.
    #[serde(serialize_with = "ser_millis", deserialize_with = "de_millis")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: u64,
}

/// One push, kept for history and rollback.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Who pushed it.
    pub by: String,
    /// Where the text came from ("page", a file name, "rollback of 12").
    pub origin: String,
    /// When.
    #[serde(serialize_with = "ser_millis", deserialize_with = "de_millis")]
    pub at: u64,
    /// SHA-256 of the text.
    pub hash: String,
    /// Number of rules.
    pub rules: usize,
    /// The text.
    pub text: String,
}

/// Every rule set, and the store's revision they were read at.
pub async fn list(
    c: &mut Client,
) -> Result<(BTreeMap<String, StoredSet>, i64), etcd_client::Error> {
    let r = c
        .get(rulesets_prefix(), Some(GetOptions::new().with_prefix()))
        .await?;
    let rev = r.header().map_or(0, |h| h.revision());
    let mut sets = BTreeMap::new();
    for kv in r.kvs() {
        let Some(name) = kv.key_str()?.strip_prefix(&rulesets_prefix()) else {
            continue;
        };
        sets.insert(name.to_string(), StoredSet::from_kv(kv)?);
    }
    Ok((sets, rev))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str) -> StoredSet {
        StoredSet::new(text.into(), 1)
    }

    #[test]
    fn a_node_chooses_the_most_specific_set_it_carries_the_labels_of() {
        let mut sets = BTreeMap::new();
        sets.insert("b-all".into(), set("default = \"allow\""));
        sets.insert("a-all".into(), set("nodes = []"));
        sets.insert("zone-a".into(), set("nodes = [\"zone=a\"]"));
        sets.insert(
            "zone-a-edge".into(),
            set("nodes = [\"zone=a\", \"role=edge\"]"),
        );
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(choose(&sets, &l(&[])).unwrap().0, "a-all");
        assert_eq!(choose(&sets, &l(&["zone=a"])).unwrap().0, "zone-a");
        assert_eq!(
            choose(&sets, &l(&["role=edge", "zone=a"])).unwrap().0,
            "zone-a-edge"
        );
        assert_eq!(choose(&sets, &l(&["zone=b"])).unwrap().0, "a-all");
        let only: BTreeMap<_, _> = [("x".to_string(), set("nodes = [\"gpu\"]"))].into();
        assert!(choose(&only, &l(&["zone=a"])).is_none());
        // Unreadable text asks for no labels: chosen, then refused by the parser.
        let bad: BTreeMap<_, _> = [("x".to_string(), set("nodes = [ oops"))].into();
        assert_eq!(choose(&bad, &l(&["zone=a"])).unwrap().0, "x");
    }

    #[test]
    fn names_cannot_change_the_key_layout() {
        assert!(valid_name("default"));
        assert!(valid_name("zone-a_1.v2"));
        for bad in ["", "a/b", "a b", "é", &"x".repeat(64)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert_eq!(ruleset_key("default"), "/guardwire/v1/rulesets/default");
        assert_eq!(status_key("n1"), "/guardwire/v1/nodes/n1/status");
    }
}
