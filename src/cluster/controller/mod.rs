//! `guardwire controller`: the cluster's management plane. Stateless: every
//! rule set, its history and every node's status live in etcd, so any number
//! of controllers can run side by side and one can die without loss.

pub mod routes;

use super::store::{self, EtcdOptions};
use crate::control::config::ApiConfig;
use crate::control::http::error::Refusal;
use crate::control::http::{auth, page, server};
use crate::pipeline::app::Apps;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;

/// What `guardwire controller` is started with.
#[derive(Clone, Debug)]
pub struct ControllerOptions {
    /// etcd.
    pub etcd: EtcdOptions,
    /// Where the API listens.
    pub listen: std::net::SocketAddr,
    /// Auth, TLS and limits, as for a node's API.
    pub api: ApiConfig,
    /// Where generated tokens are kept.
    pub state_dir: PathBuf,
    /// The viewer token it shows the nodes' APIs when it reads their traffic.
    pub node_token: Option<String>,
}

/// The controller's shared state: a connection to etcd, nothing else.
pub struct Ctl {
    opts: EtcdOptions,
    client: Mutex<Option<etcd_client::Client>>,
    /// Application names rule sets are checked against (the built-in catalogue).
    pub apps: Apps,
    /// Token for the nodes' APIs.
    pub node_token: Option<String>,
}

impl Ctl {
    /// A client of etcd, connected to one live member on first use.
    pub async fn etcd(&self) -> Result<etcd_client::Client, Refusal> {
        if let Some(c) = self
            .client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok(c);
        }
        let new = store::connect(&self.opts)
            .await
            .map_err(|e| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, e))?;
        *self.client.lock().unwrap_or_else(|e| e.into_inner()) = Some(new.clone());
        Ok(new)
    }

    /// Runs `op` against etcd. When it fails, the member it reached is
    /// forgotten and, if `idempotent` (or the request never left), it runs
    /// once more on another member: one member gone does not fail requests.
    pub async fn call<T, F, Fut>(&self, idempotent: bool, op: F) -> Result<T, Refusal>
    where
        F: Fn(etcd_client::Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut tries = 0;
        loop {
            let c = self.etcd().await?;
            match op(c).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    *self.client.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    tries += 1;
                    if tries >= 2 || !(idempotent || store::never_sent(&e)) {
                        return Err(Refusal::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("etcd: {e}"),
                        ));
                    }
                }
            }
        }
    }
}

/// The controller's router: API, page, same auth and limits as a node's.
pub fn router(ctl: Arc<Ctl>, gate: Arc<auth::Gate>, max_body: usize) -> Router {
    use routes as r;
    let api = Router::new()
        .route("/api/v1/health", get(r::health))
        .route("/api/v1/whoami", get(crate::control::http::routes::whoami))
        .route("/api/v1/rulesets", get(r::list_sets))
        .route("/api/v1/rulesets/{name}", get(r::get_set).put(r::put_set))
        .route("/api/v1/rulesets/{name}/validate", post(r::validate))
        .route("/api/v1/rulesets/{name}/diff", post(r::diff))
        .route("/api/v1/rulesets/{name}/history", get(r::history))
        .route(
            "/api/v1/rulesets/{name}/rollback/{revision}",
            post(r::rollback),
        )
        .route("/api/v1/nodes", get(r::nodes))
        .route("/api/v1/traffic", get(r::traffic))
        .route("/", get(page::controller_index))
        .route("/assets/app.js", get(page::controller_js))
        .route("/assets/app.css", get(page::controller_css))
        .route("/assets/common.js", get(page::common_js))
        .route("/assets/common.css", get(page::common_css))
        .with_state(ctl);
    server::guarded(api, gate, max_body)
}

/// Runs the controller until the process ends.
pub fn run(o: ControllerOptions) -> Result<(), String> {
    crate::control::files::state_dir(&o.state_dir)
        .map_err(|e| format!("state directory {}: {e}", o.state_dir.display()))?;
    let tokens = auth::Tokens::load(&o.api, &o.state_dir)?;
    let tls = server::tls_config(&o.api).map_err(|e| e.to_string())?;
    let allow = o
        .api
        .allow_from
        .iter()
        .map(|p| p.get_ref().parse())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--allow-from: {e}"))?;
    let l = server::bind_tcp(o.listen).map_err(|e| format!("listen on {}: {e}", o.listen))?;
    let ctl = Arc::new(Ctl {
        opts: o.etcd.clone(),
        client: Mutex::new(None),
        apps: Apps::builtin(),
        node_token: o.node_token.clone(),
    });
    let gate = Arc::new(auth::Gate::new(&o.api, tokens));
    tracing::info!(listen = %o.listen, tls = tls.is_some(), etcd = o.etcd.endpoints.join(","), "controller running");
    server::Server {
        router: router(ctl, gate.clone(), o.api.max_body_kb << 10),
        unix: None,
        tcp: Some((l, tls, allow)),
        max_connections: o.api.max_connections,
    }
    .spawn()
    .map_err(|e| format!("API thread: {e}"))?
    .join()
    .map_err(|_| "the API thread panicked".to_string())
}
