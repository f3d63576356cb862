//! The node agent: takes the node's rule set from etcd and reports what the
//! node enforces (docs/cluster.md).
//!
//! It lists the rule sets, chooses the node's, applies it through the node's
//! own push path, then watches the prefix from the listed revision on; a
//! compaction (or a lost watch) starts a new list. Its status lives on a
//! lease, so a node that stops answering disappears from the live ones.
//! When etcd cannot be reached it retries with backoff and changes nothing:
//! the rules in force stay, and so does the data path.

use super::store::{self, EtcdOptions, NodeStatus, StoredSet};
use crate::control::files::{read_json, write_json};
use crate::control::record::log::{de_millis, now_ms, ser_millis};
use crate::control::rulebook;
use etcd_client::{Client, EventType, PutOptions, WatchOptions};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a node does with a rule set, and what it says about itself.
pub trait Enforcer: Send + Sync + 'static {
    /// Puts `text` (revision `revision` of set `set`) in force atomically, or
    /// refuses it with the reason (its line); the rules in force stay then.
    fn apply(&self, set: &str, revision: i64, text: &str) -> Result<(), String>;
    /// Workloads wired and frames dropped since start.
    fn facts(&self) -> (usize, u64);
}

/// The agent's settings.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Node name.
    pub node: String,
    /// Node labels.
    pub labels: Vec<String>,
    /// The node API's URL for the controller.
    pub api_url: Option<String>,
    /// etcd.
    pub etcd: EtcdOptions,
    /// TTL of the status lease.
    pub lease_ttl: Duration,
    /// Status refresh when nothing changes.
    pub status_every: Duration,
    /// Where the last applied set is kept (none: not kept, for the scale bench).
    pub state_dir: Option<PathBuf>,
}

/// The set in force, as the agent applied it (`state_dir/cluster/applied.json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Applied {
    /// Rule set name.
    pub ruleset: String,
    /// Its revision.
    pub revision: i64,
    /// SHA-256 of its text.
    pub hash: String,
    /// When it was put in force.
    #[serde(serialize_with = "ser_millis", deserialize_with = "de_millis")]
    #[schema(value_type = String, format = DateTime)]
    pub at: u64,
}

/// What the node says about its cluster link (`GET /api/v1/cluster`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClusterView {
    /// Node name.
    pub node: String,
    /// Node labels.
    pub labels: Vec<String>,
    /// etcd endpoints.
    pub endpoints: Vec<String>,
    /// The store answers now.
    pub connected: bool,
    /// The rules in force may be behind the store's: it has not answered
    /// since the agent started, or since `since`.
    pub stale: bool,
    /// Why the store cannot be reached.
    pub store_error: Option<String>,
    /// When the store was last reached (ms since the epoch; 0: never).
    pub last_contact_ms: u64,
    /// Since when it is unreachable (ms; 0: it is reachable).
    pub since_ms: u64,
    /// The set in force.
    pub applied: Option<Applied>,
    /// The last set refused and why.
    pub error: Option<String>,
    /// Its revision.
    pub error_revision: Option<i64>,
    /// Newest revision of the rule sets seen in the store.
    pub store_revision: i64,
}

/// The agent, to be run on a thread of its own ([`Agent::spawn`]) or inside a
/// runtime ([`Agent::run`]).
pub struct Agent {
    cfg: AgentConfig,
    enforcer: Arc<dyn Enforcer>,
    view: Arc<Mutex<ClusterView>>,
    /// Drops counted at the last status, and when.
    last_drops: (u64, std::time::Instant),
}

fn applied_path(dir: &std::path::Path) -> PathBuf {
    dir.join("cluster").join("applied.json")
}

/// Why a session with the store ended.
enum End {
    /// The store went away (or refused): retry later.
    Lost(String),
}

impl<E: std::fmt::Display> From<E> for End {
    fn from(e: E) -> End {
        End::Lost(e.to_string())
    }
}

impl Agent {
    /// An agent for `cfg`, starting from the set persisted in its state dir.
    pub fn new(cfg: AgentConfig, enforcer: Arc<dyn Enforcer>) -> Agent {
        let applied =
            cfg.state_dir
                .as_ref()
                .and_then(|d| match read_json::<Applied>(&applied_path(d)) {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::error!("cluster: {e}; starting as if nothing was applied");
                        None
                    }
                });
        if let Some(a) = &applied {
            tracing::info!(
                ruleset = a.ruleset.as_str(),
                revision = a.revision,
                "cluster: enforcing the persisted set until the store answers"
            );
        }
        let view = ClusterView {
            node: cfg.node.clone(),
            labels: cfg.labels.clone(),
            endpoints: cfg.etcd.endpoints.clone(),
            stale: true,
            applied,
            ..Default::default()
        };
        Agent {
            cfg,
            enforcer,
            view: Arc::new(Mutex::new(view)),
            last_drops: (0, std::time::Instant::now()),
        }
    }

    /// The view the node API shows; updated as the agent goes.
    pub fn view(&self) -> Arc<Mutex<ClusterView>> {
        self.view.clone()
    }

    /// Runs the agent on a thread of its own, with a single-threaded runtime.
    pub fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("gw-cluster".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(self.run()),
                    Err(e) => tracing::error!("cluster agent runtime: {e}"),
                }
            })
    }

    fn with_view<T>(&self, f: impl FnOnce(&mut ClusterView) -> T) -> T {
        f(&mut self.view.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Runs forever: a session with the store, and when it ends, another
    /// after a backoff of 0.2 s doubling to 5 s.
    pub async fn run(mut self) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let End::Lost(why) = self.session().await;
            let first = self.with_view(|v| {
                let first = v.connected || v.since_ms == 0;
                v.connected = false;
                v.stale = true;
                if v.since_ms == 0 {
                    v.since_ms = now_ms();
                }
                v.store_error = Some(why.clone());
                first
            });
            if first {
                tracing::warn!(
                    "cluster: store unreachable ({why}); the rules in force stay, retrying"
                );
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
            if self.with_view(|v| v.connected) {
                backoff = Duration::from_millis(200);
            }
        }
    }

    fn contact(&self) {
        self.with_view(|v| {
            if !v.connected && v.since_ms != 0 {
                tracing::info!("cluster: store reachable again");
            }
            v.connected = true;
            v.stale = false;
            v.store_error = None;
            v.since_ms = 0;
            v.last_contact_ms = now_ms();
        });
    }

    /// One session: connect, take a lease, list, apply, watch.
    async fn session(&mut self) -> End {
        match self.session_inner().await {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    async fn session_inner(&mut self) -> Result<std::convert::Infallible, End> {
        let mut c = store::connect(&self.cfg.etcd).await?;
        let ttl = self.cfg.lease_ttl.as_secs().max(2) as i64;
        let lease = c.lease_grant(ttl, None).await?.id();
        let (mut keeper, mut kept) = c.lease_keep_alive(lease).await?;
        let info = store::NodeInfo {
            labels: self.cfg.labels.clone(),
            api: self.cfg.api_url.clone(),
        };
        c.put(
            store::info_key(&self.cfg.node),
            serde_json::to_vec(&info)?,
            None,
        )
        .await?;
        let mut ka = tokio::time::interval(self.cfg.lease_ttl / 3);
        let mut refresh = tokio::time::interval(self.cfg.status_every);
        refresh.tick().await;
        loop {
            // List, apply, then watch from just after the list.
            let (sets, rev) = store::list(&mut c).await?;
            self.contact();
            let mut sets = sets;
            self.reconcile(&sets, rev).await;
            self.put_status(&mut c, lease).await?;
            let opts = WatchOptions::new()
                .with_prefix()
                .with_start_revision(rev + 1)
                .with_progress_notify();
            let mut watch = c.watch(store::rulesets_prefix(), Some(opts)).await?;
            'watch: loop {
                tokio::select! {
                    m = watch.message() => {
                        let Some(m) = m? else {
                            return Err(End::Lost("the watch ended".into()));
                        };
                        if m.canceled() {
                            if m.compact_revision() > 0 {
                                tracing::info!(compacted = m.compact_revision(), "cluster: history compacted; listing again");
                            }
                            break 'watch;
                        }
                        let mut newest = 0;
                        for ev in m.events() {
                            let Some(kv) = ev.kv() else { continue };
                            let Some(name) = kv.key_str()?.strip_prefix(&store::rulesets_prefix()) else { continue };
                            newest = newest.max(kv.mod_revision());
                            match ev.event_type() {
                                EventType::Put => {
                                    sets.insert(name.to_string(), StoredSet::from_kv(kv)?);
                                }
                                EventType::Delete => {
                                    sets.remove(name);
                                }
                            }
                        }
                        self.contact();
                        if newest > 0 && self.reconcile(&sets, newest).await {
                            self.put_status(&mut c, lease).await?;
                        }
                    }
                    _ = ka.tick() => {
                        keeper.keep_alive().await?;
                    }
                    k = kept.message() => {
                        match k? {
                            Some(r) if r.ttl() > 0 => self.contact(),
                            _ => return Err(End::Lost("the status lease expired".into())),
                        }
                    }
                    _ = refresh.tick() => {
                        self.put_status(&mut c, lease).await?;
                    }
                }
            }
        }
    }

    /// Applies the node's set if it is not the one in force. Returns whether
    /// anything changed (so the status must be written).
    async fn reconcile(&mut self, sets: &BTreeMap<String, StoredSet>, rev: i64) -> bool {
        self.with_view(|v| v.store_revision = v.store_revision.max(rev));
        let Some((name, set)) = store::choose(sets, &self.cfg.labels) else {
            return false;
        };
        let (applied, refused) = self.with_view(|v| (v.applied.clone(), v.error_revision));
        if let Some(a) = &applied
            && a.ruleset == name
            && a.revision == set.revision
        {
            return false;
        }
        if refused == Some(set.revision) {
            return false;
        }
        let hash = rulebook::hash(&set.text);
        let result = match &applied {
            // The same text again (a restart, an identical push): nothing to
            // put in force, only the revision moves on.
            Some(a) if a.hash == hash => Ok(()),
            _ => {
                let e = self.enforcer.clone();
                let (n, r, t) = (name.to_string(), set.revision, set.text.clone());
                tokio::task::spawn_blocking(move || e.apply(&n, r, &t))
                    .await
                    .unwrap_or_else(|e| Err(format!("applying failed: {e}")))
            }
        };
        match result {
            Ok(()) => {
                let a = Applied {
                    ruleset: name.to_string(),
                    revision: set.revision,
                    hash,
                    at: now_ms(),
                };
                if let Some(d) = &self.cfg.state_dir {
                    let dir = d.join("cluster");
                    if let Err(e) = write_json(&dir, &applied_path(d), &a) {
                        tracing::error!("cluster: keeping the applied set: {e}");
                    }
                }
                tracing::info!(
                    ruleset = name,
                    revision = set.revision,
                    "cluster: rule set applied"
                );
                self.with_view(|v| {
                    v.applied = Some(a);
                    v.error = None;
                    v.error_revision = None;
                });
            }
            Err(e) => {
                tracing::error!(
                    ruleset = name,
                    revision = set.revision,
                    "cluster: rule set refused, the one in force stays: {e}"
                );
                self.with_view(|v| {
                    v.error = Some(e);
                    v.error_revision = Some(set.revision);
                });
            }
        }
        true
    }

    /// The status as it is now.
    pub fn status(&mut self) -> NodeStatus {
        let (workloads, drops) = self.enforcer.facts();
        let (last, at) = self.last_drops;
        let secs = at.elapsed().as_secs_f64();
        let drop_rate = if secs > 0.0 {
            drops.saturating_sub(last) as f64 / secs
        } else {
            0.0
        };
        self.last_drops = (drops, std::time::Instant::now());
        let v = self.view.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let a = v.applied.unwrap_or_default();
        NodeStatus {
            node: self.cfg.node.clone(),
            labels: self.cfg.labels.clone(),
            api: self.cfg.api_url.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ruleset: (!a.ruleset.is_empty()).then_some(a.ruleset),
            revision: a.revision,
            hash: a.hash,
            applied_at: a.at,
            error: v.error,
            error_revision: v.error_revision,
            workloads,
            drop_rate: (drop_rate * 100.0).round() / 100.0,
            updated_at: now_ms(),
        }
    }

    async fn put_status(&mut self, c: &mut Client, lease: i64) -> Result<(), End> {
        let body = serde_json::to_string(&self.status())?;
        c.put(
            store::status_key(&self.cfg.node),
            body,
            Some(PutOptions::new().with_lease(lease)),
        )
        .await?;
        Ok(())
    }
}
