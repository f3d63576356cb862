//! The controller's API (docs/cluster.md): rule sets kept in etcd, the nodes'
//! statuses, and the traffic of chosen nodes fetched from their own APIs.

use super::Ctl;
use crate::cluster::store::{self, HistoryEntry, NodeStatus, StoredSet};
use crate::control::http::auth::Caller;
use crate::control::http::client::{self, Endpoint};
use crate::control::http::error::{Answer, Refusal};
use crate::control::http::extract::{Params, Text};
use crate::control::http::types::{LogEntry, LogPage, LogQuery};
use crate::control::record::log::now_ms;
use crate::control::rulebook;
use crate::pipeline::firewall::{RuleSet, RulesError};
use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use etcd_client::{Compare, CompareOp, GetOptions, SortOrder, SortTarget, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

type St = State<Arc<Ctl>>;

/// Time a node's API has to answer a traffic request.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(2);
/// Records a traffic request may ask each node for.
pub const TRAFFIC_LIMIT: usize = 500;
/// History entries shown.
pub const HISTORY_SHOWN: i64 = 50;

fn name_ok(name: &str) -> Result<(), Refusal> {
    if store::valid_name(name) {
        Ok(())
    } else {
        Err(Refusal::field(
            "name",
            format!("{name:?}: a rule set name is 1 to 63 of A-Z a-z 0-9 . _ -"),
        ))
    }
}

fn rules_refusal(e: RulesError) -> Refusal {
    let mut r = Refusal::bad(e.to_string());
    r.body.line = Some(e.line());
    r.body.field = e.key().map(str::to_string);
    r
}

/// A rule set as listed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SetSummary {
    /// Its name.
    pub name: String,
    /// Its revision (etcd's mod_revision).
    pub revision: i64,
    /// SHA-256 of its text.
    pub hash: String,
    /// Rules in it (0 when the stored text does not parse).
    pub rules: usize,
    /// Node labels it is for.
    pub nodes: Vec<String>,
    /// Who pushed this revision, when known.
    pub by: Option<String>,
    /// When, when known (ms since the epoch).
    pub at: Option<u64>,
}

/// A rule set with its text.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SetDocument {
    /// What the list says of it.
    #[serde(flatten)]
    pub summary: SetSummary,
    /// Its text.
    pub text: String,
}

impl Ctl {
    fn summary(&self, name: &str, s: &StoredSet, last: Option<&HistoryEntry>) -> SetSummary {
        SetSummary {
            name: name.to_string(),
            revision: s.revision,
            hash: rulebook::hash(&s.text),
            rules: RuleSet::parse_with(&s.text, name, &self.apps).map_or(0, |r| r.len()),
            nodes: s.nodes.clone(),
            by: last.map(|h| h.by.clone()),
            at: last.map(|h| h.at),
        }
    }

    /// The newest history entries of `name` with their revisions, newest first.
    async fn history_of(
        &self,
        name: &str,
        limit: i64,
    ) -> Result<Vec<(i64, HistoryEntry)>, Refusal> {
        let prefix = store::history_prefix(name);
        let r = self
            .call(true, |mut c| {
                let prefix = prefix.clone();
                async move {
                    c.get(
                        prefix,
                        Some(
                            GetOptions::new()
                                .with_prefix()
                                .with_sort(SortTarget::Key, SortOrder::Descend)
                                .with_limit(limit),
                        ),
                    )
                    .await
                }
            })
            .await?;
        Ok(r.kvs()
            .iter()
            .filter_map(|kv| {
                let h = serde_json::from_slice::<HistoryEntry>(kv.value()).ok()?;
                Some((kv.create_revision(), h))
            })
            .collect())
    }

    async fn sets(&self) -> Result<BTreeMap<String, StoredSet>, Refusal> {
        let (sets, _) = self
            .call(true, |mut c| async move { store::list(&mut c).await })
            .await?;
        Ok(sets)
    }

    async fn set(&self, name: &str) -> Result<Option<StoredSet>, Refusal> {
        let key = store::ruleset_key(name);
        let r = self
            .call(true, |mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await?;
        r.kvs()
            .first()
            .map(StoredSet::from_kv)
            .transpose()
            .map_err(|e| Refusal::internal(format!("the stored rule set: {e}")))
    }

    /// Validates and writes a set with its history entry in one transaction.
    async fn write(
        &self,
        name: &str,
        text: &str,
        if_revision: Option<i64>,
        origin: &str,
        by: &str,
    ) -> Result<Pushed, Refusal> {
        name_ok(name)?;
        let rules = RuleSet::parse_with(text, name, &self.apps).map_err(rules_refusal)?;
        let at = now_ms();
        let hash = rulebook::hash(text);
        let entry = HistoryEntry {
            by: by.to_string(),
            origin: origin.to_string(),
            at,
            hash: hash.clone(),
            rules: rules.len(),
            text: text.to_string(),
        };
        let hkey = format!(
            "{}{at:020}-{:06x}",
            store::history_prefix(name),
            rand_u32() & 0xff_ffff
        );
        let key = store::ruleset_key(name);
        let ops = [
            TxnOp::put(key.clone(), text, None),
            TxnOp::put(
                hkey,
                serde_json::to_vec(&entry).map_err(|e| Refusal::internal(e.to_string()))?,
                None,
            ),
        ];
        let txn = match if_revision {
            Some(rev) => Txn::new()
                .when([Compare::mod_revision(key, CompareOp::Equal, rev)])
                .and_then(ops),
            None => Txn::new().and_then(ops),
        };
        let r = self
            .call(false, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        if !r.succeeded() {
            return Err(Refusal::new(
                StatusCode::CONFLICT,
                format!(
                    "rule set {name:?} changed since revision {}: load it again",
                    if_revision.unwrap_or_default()
                ),
            ));
        }
        let revision = r.header().map_or(0, |h| h.revision());
        tracing::info!(ruleset = name, revision, by, origin, "rule set pushed");
        Ok(Pushed {
            revision,
            hash,
            rules: rules.len(),
        })
    }
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u32::from_le_bytes(b)
}

/// `GET /api/v1/health`
pub async fn health(State(ctl): St) -> Json<serde_json::Value> {
    let etcd = match ctl
        .call(true, |mut c| async move {
            c.get(
                store::PREFIX,
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
        })
        .await
    {
        Ok(_) => "ok".to_string(),
        Err(e) => e.body.error,
    };
    Json(serde_json::json!({ "ok": etcd == "ok", "etcd": etcd }))
}

/// `GET /api/v1/rulesets`
pub async fn list_sets(State(ctl): St) -> Answer<Vec<SetSummary>> {
    let mut out = Vec::new();
    for (name, s) in ctl.sets().await? {
        let last = ctl.history_of(&name, 1).await?;
        out.push(ctl.summary(&name, &s, last.first().map(|(_, h)| h)));
    }
    Ok(Json(out))
}

/// `GET /api/v1/rulesets/{name}`
pub async fn get_set(State(ctl): St, Path(name): Path<String>) -> Answer<SetDocument> {
    name_ok(&name)?;
    let Some(s) = ctl.set(&name).await? else {
        return Err(Refusal::not_found(format!("no rule set named {name:?}")));
    };
    let last = ctl.history_of(&name, 1).await?;
    Ok(Json(SetDocument {
        summary: ctl.summary(&name, &s, last.first().map(|(_, h)| h)),
        text: s.text,
    }))
}

/// What validation found.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Validated {
    /// Rules in the text.
    pub rules: usize,
    /// Node labels it is for.
    pub nodes: Vec<String>,
}

/// `POST /api/v1/rulesets/{name}/validate`
pub async fn validate(
    State(ctl): St,
    Path(name): Path<String>,
    Text(text): Text,
) -> Answer<Validated> {
    name_ok(&name)?;
    let r = RuleSet::parse_with(&text, &name, &ctl.apps).map_err(rules_refusal)?;
    Ok(Json(Validated {
        rules: r.len(),
        nodes: r.nodes().to_vec(),
    }))
}

/// A diff.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Diff {
    /// Unified diff from the set in force to the text given.
    pub diff: String,
    /// The revision compared with (0: no set of that name yet).
    pub revision: i64,
}

/// `POST /api/v1/rulesets/{name}/diff`
pub async fn diff(State(ctl): St, Path(name): Path<String>, Text(text): Text) -> Answer<Diff> {
    name_ok(&name)?;
    let cur = ctl.set(&name).await?;
    let (old, revision) = cur.map_or((String::new(), 0), |s| (s.text, s.revision));
    let d = similar::TextDiff::from_lines(&old, &text)
        .unified_diff()
        .context_radius(3)
        .header(&format!("{name}@{revision}"), &format!("{name} (new)"))
        .to_string();
    Ok(Json(Diff { diff: d, revision }))
}

/// A push's query.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushQuery {
    /// Refuse (409) unless the set is still at this revision (0: it must not exist yet).
    pub if_revision: Option<i64>,
    /// Where the text came from.
    pub origin: Option<String>,
}

/// What a push made.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pushed {
    /// The set's new revision.
    pub revision: i64,
    /// SHA-256 of its text.
    pub hash: String,
    /// Rules in it.
    pub rules: usize,
}

fn subject(caller: Option<Extension<Caller>>) -> String {
    caller.map_or_else(|| "?".into(), |Extension(c)| c.subject)
}

/// `PUT /api/v1/rulesets/{name}`
pub async fn put_set(
    State(ctl): St,
    Path(name): Path<String>,
    Params(q): Params<PushQuery>,
    caller: Option<Extension<Caller>>,
    Text(text): Text,
) -> Answer<Pushed> {
    let origin = q.origin.unwrap_or_else(|| "api".into());
    ctl.write(&name, &text, q.if_revision, &origin, &subject(caller))
        .await
        .map(Json)
}

/// One history entry as shown.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HistoryItem {
    /// The revision it made.
    pub revision: i64,
    /// When (ms since the epoch).
    pub at: u64,
    /// Who.
    pub by: String,
    /// From where.
    pub origin: String,
    /// SHA-256 of the text.
    pub hash: String,
    /// Rules in it.
    pub rules: usize,
}

/// `GET /api/v1/rulesets/{name}/history`
pub async fn history(State(ctl): St, Path(name): Path<String>) -> Answer<Vec<HistoryItem>> {
    name_ok(&name)?;
    let h = ctl.history_of(&name, HISTORY_SHOWN).await?;
    Ok(Json(
        h.into_iter()
            .map(|(revision, e)| HistoryItem {
                revision,
                at: e.at,
                by: e.by,
                origin: e.origin,
                hash: e.hash,
                rules: e.rules,
            })
            .collect(),
    ))
}

/// `POST /api/v1/rulesets/{name}/rollback/{revision}`
pub async fn rollback(
    State(ctl): St,
    Path((name, revision)): Path<(String, i64)>,
    caller: Option<Extension<Caller>>,
) -> Answer<Pushed> {
    name_ok(&name)?;
    // The entry whose key was created at that revision.
    let prefix = store::history_prefix(&name);
    let r = ctl
        .call(true, |mut c| {
            let prefix = prefix.clone();
            async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })
        .await?;
    let Some(entry) = r
        .kvs()
        .iter()
        .find(|kv| kv.create_revision() == revision)
        .and_then(|kv| serde_json::from_slice::<HistoryEntry>(kv.value()).ok())
    else {
        return Err(Refusal::not_found(format!(
            "rule set {name:?} has no revision {revision} in its history"
        )));
    };
    ctl.write(
        &name,
        &entry.text,
        None,
        &format!("rollback to revision {revision}"),
        &subject(caller),
    )
    .await
    .map(Json)
}

/// One node as the nodes page shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeRow {
    /// Node name.
    pub name: String,
    /// Its labels.
    pub labels: Vec<String>,
    /// Its status lease is alive.
    pub alive: bool,
    /// Its API.
    pub api: Option<String>,
    /// The set it should enforce (by its labels).
    pub ruleset: Option<String>,
    /// That set's revision.
    pub desired: i64,
    /// The revision it reports enforcing.
    pub applied: i64,
    /// The set it reports enforcing.
    pub applied_ruleset: Option<String>,
    /// Why it refused a set.
    pub error: Option<String>,
    /// Which revision it refused.
    pub error_revision: Option<i64>,
    /// SHA-256 of what it enforces.
    pub hash: String,
    /// When it applied it (ms).
    pub applied_at: u64,
    /// Its guardwire version.
    pub version: String,
    /// Workloads wired.
    pub workloads: usize,
    /// Drops per second.
    pub drop_rate: f64,
    /// When its status was written (ms).
    pub updated_at: u64,
}

/// How far a rule set has got.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Realized {
    /// The set.
    pub ruleset: String,
    /// Its revision.
    pub revision: i64,
    /// Live nodes it selects that enforce that revision.
    pub realized: usize,
    /// Live nodes it selects.
    pub total: usize,
}

/// The nodes page.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Nodes {
    /// Every node known, live or not.
    pub nodes: Vec<NodeRow>,
    /// Per rule set.
    pub summary: Vec<Realized>,
}

/// `GET /api/v1/nodes`
pub async fn nodes(State(ctl): St) -> Answer<Nodes> {
    let sets = ctl.sets().await?;
    let r = ctl
        .call(true, |mut c| async move {
            c.get(store::nodes_prefix(), Some(GetOptions::new().with_prefix()))
                .await
        })
        .await?;
    let mut info: BTreeMap<String, store::NodeInfo> = BTreeMap::new();
    let mut status: BTreeMap<String, NodeStatus> = BTreeMap::new();
    for kv in r.kvs() {
        let Ok(key) = kv.key_str() else { continue };
        let Some(rest) = key.strip_prefix(&store::nodes_prefix()) else {
            continue;
        };
        match rest.rsplit_once('/') {
            Some((node, "status")) => {
                if let Ok(s) = serde_json::from_slice(kv.value()) {
                    status.insert(node.to_string(), s);
                }
            }
            Some((node, "info")) => {
                if let Ok(i) = serde_json::from_slice(kv.value()) {
                    info.insert(node.to_string(), i);
                }
            }
            _ => {}
        }
    }
    let mut names: Vec<&String> = info.keys().chain(status.keys()).collect();
    names.sort();
    names.dedup();
    let mut rows = Vec::new();
    let mut summary: BTreeMap<&str, Realized> = sets
        .iter()
        .map(|(n, s)| {
            (
                n.as_str(),
                Realized {
                    ruleset: n.clone(),
                    revision: s.revision,
                    realized: 0,
                    total: 0,
                },
            )
        })
        .collect();
    for name in names {
        let st = status.get(name);
        let labels = st
            .map(|s| s.labels.clone())
            .or_else(|| info.get(name).map(|i| i.labels.clone()))
            .unwrap_or_default();
        let chosen = store::choose(&sets, &labels);
        let alive = st.is_some();
        if alive && let Some((set, s)) = chosen {
            let e = summary.get_mut(set).expect("every set is in the summary");
            e.total += 1;
            let st = st.expect("alive");
            if st.ruleset.as_deref() == Some(set) && st.revision == s.revision {
                e.realized += 1;
            }
        }
        let d = NodeStatus::default();
        let s = st.unwrap_or(&d);
        rows.push(NodeRow {
            name: name.clone(),
            labels,
            alive,
            api: s
                .api
                .clone()
                .or_else(|| info.get(name).and_then(|i| i.api.clone())),
            ruleset: chosen.map(|(n, _)| n.to_string()),
            desired: chosen.map_or(0, |(_, s)| s.revision),
            applied: s.revision,
            applied_ruleset: s.ruleset.clone(),
            error: s.error.clone(),
            error_revision: s.error_revision,
            hash: s.hash.clone(),
            applied_at: s.applied_at,
            version: s.version.clone(),
            workloads: s.workloads,
            drop_rate: s.drop_rate,
            updated_at: s.updated_at,
        });
    }
    Ok(Json(Nodes {
        nodes: rows,
        summary: summary.into_values().collect(),
    }))
}

/// A traffic request.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficQuery {
    /// Comma-separated node names (default: every live node).
    pub nodes: Option<String>,
    /// Records in all (default 200, at most 500).
    pub limit: Option<usize>,
    /// Only this workload.
    pub workload: Option<String>,
    /// Only this action or verdict.
    pub action: Option<String>,
    /// Only this application or category.
    pub app: Option<String>,
    /// Free text.
    pub q: Option<String>,
}

/// One record, with the node it came from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrafficRecord {
    /// The node.
    pub node: String,
    /// The node's record.
    #[serde(flatten)]
    pub entry: LogEntry,
}

/// How a node answered.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeAnswer {
    /// The node.
    pub name: String,
    /// It answered.
    pub ok: bool,
    /// Why not.
    pub error: Option<String>,
    /// How long it took (or how long was waited), ms.
    pub ms: u64,
    /// Its API (for a link to its page).
    pub api: Option<String>,
}

/// The traffic view.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Traffic {
    /// Records of every node that answered, newest first.
    pub records: Vec<TrafficRecord>,
    /// Every node asked.
    pub nodes: Vec<NodeAnswer>,
}

/// `GET /api/v1/traffic`
pub async fn traffic(State(ctl): St, Params(q): Params<TrafficQuery>) -> Answer<Traffic> {
    let limit = q.limit.unwrap_or(200);
    if !(1..=TRAFFIC_LIMIT).contains(&limit) {
        return Err(Refusal::field(
            "limit",
            format!("must be 1..={TRAFFIC_LIMIT}"),
        ));
    }
    let Json(all) = nodes(State(ctl.clone())).await?;
    let wanted: Option<Vec<&str>> = q
        .nodes
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| s.split(',').collect());
    if let Some(w) = &wanted
        && let Some(unknown) = w.iter().find(|n| !all.nodes.iter().any(|r| r.name == **n))
    {
        return Err(Refusal::field(
            "nodes",
            format!("no node named {unknown:?}"),
        ));
    }
    let chosen: Vec<&NodeRow> = all
        .nodes
        .iter()
        .filter(|r| match &wanted {
            Some(w) => w.contains(&r.name.as_str()),
            None => r.alive,
        })
        .collect();
    let lq = LogQuery {
        workload: q.workload.clone(),
        action: q.action.clone(),
        app: q.app.clone(),
        q: q.q.clone(),
        limit: Some(limit),
        ..Default::default()
    };
    let path = format!(
        "/api/v1/log?{}",
        serde_urlencoded::to_string(&lq).unwrap_or_default()
    );
    let asks = chosen.iter().map(|row| {
        let path = path.clone();
        let token = ctl.node_token.clone();
        async move {
            let t0 = Instant::now();
            let r = fetch(row.api.as_deref(), token, &path).await;
            let ms = t0.elapsed().as_millis() as u64;
            (row, r, ms)
        }
    });
    let answers = futures::future::join_all(asks).await;
    let mut records = Vec::new();
    let mut out = Vec::new();
    for (row, r, ms) in answers {
        let (ok, error) = match r {
            Ok(page) => {
                records.extend(page.records.into_iter().map(|entry| TrafficRecord {
                    node: row.name.clone(),
                    entry,
                }));
                (true, None)
            }
            Err(e) => (false, Some(e)),
        };
        out.push(NodeAnswer {
            name: row.name.clone(),
            ok,
            error,
            ms,
            api: row.api.clone(),
        });
    }
    records.sort_by(|a, b| {
        b.entry
            .record
            .updated_at
            .cmp(&a.entry.record.updated_at)
            .then_with(|| a.node.cmp(&b.node))
    });
    records.truncate(limit);
    Ok(Json(Traffic {
        records,
        nodes: out,
    }))
}

/// One node's log page, within [`NODE_TIMEOUT`].
async fn fetch(api: Option<&str>, token: Option<String>, path: &str) -> Result<LogPage, String> {
    let api = api.ok_or("the node gives no API address")?;
    let addr = api
        .strip_prefix("http://")
        .ok_or_else(|| format!("{api}: only http:// node APIs can be read"))?
        .trim_end_matches('/');
    let ep = Endpoint::Tcp {
        addr: addr.to_string(),
        token: token.unwrap_or_default(),
    };
    let r = tokio::time::timeout(
        NODE_TIMEOUT,
        client::request(&ep, hyper::Method::GET, path, Vec::new()),
    )
    .await
    .map_err(|_| format!("no answer within {NODE_TIMEOUT:?}"))?
    .map_err(|e| e.to_string())?;
    match r {
        (200, body) => serde_json::from_slice(&body).map_err(|e| format!("bad answer: {e}")),
        (status, body) => Err(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(200)
                .collect::<String>()
        )),
    }
}
