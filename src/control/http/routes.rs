//! The API's handlers. Reads come from the datapath's snapshots and the
//! inspection side's own copies; steering changes (attach, detach, mode) run on
//! a blocking thread under the steering lock, so a slow netlink operation never
//! holds up the other requests on the control thread.

use super::auth::Caller;
use super::error::{Answer, Refusal};
use super::extract::{Body, Params};
use super::types::*;
use crate::cluster::agent::ClusterView;
use crate::control::inspection::{Inspection, PushError, UsageReport};
use crate::control::record::{self, Filter};
use crate::control::rulebook::{self, Revision};
use crate::control::steering::{AttachSpec, Steering};
use crate::datapath::{Shared, StatsSnapshot};
use crate::pipeline::firewall::{RuleSet, RulesError};
use crate::pipeline::spoof::Identity;
use crate::steer::attach::Via;
use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What every handler reaches.
pub struct Ctx {
    /// The steering side (attach, detach, modes) and the datapath it drives.
    pub node: Arc<Mutex<Steering>>,
    /// Rules, flows, the verdict log, usage.
    pub insp: Arc<Inspection>,
    /// The datapath's shared state, read without the steering lock.
    pub shared: Arc<Shared>,
    /// Node name.
    pub name: String,
    /// Histograms of operations.
    pub metrics: Arc<super::metrics::Timings>,
    /// The cluster agent's view, when `[cluster]` is configured.
    pub cluster: Option<Arc<Mutex<ClusterView>>>,
}

type St = State<Arc<Ctx>>;

/// Runs `f` under the steering lock on a blocking thread.
async fn steer<T: Send + 'static>(
    ctx: &Arc<Ctx>,
    f: impl FnOnce(&mut Steering) -> Result<T, String> + Send + 'static,
) -> Result<T, Refusal> {
    let node = ctx.node.clone();
    tokio::task::spawn_blocking(move || {
        let mut n = node.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut n)
    })
    .await
    .map_err(|e| Refusal::internal(format!("the steering operation failed: {e}")))?
    .map_err(Refusal::steering)
}

#[utoipa::path(get, path = "/api/v1/whoami", tag = "node",
    responses((status = 200, body = WhoAmI), (status = 401, body = ApiError)))]
pub async fn whoami(caller: Option<Extension<Caller>>) -> Answer<WhoAmI> {
    let Some(Extension(c)) = caller else {
        return Err(Refusal::unauthorized("a bearer token is needed"));
    };
    Ok(Json(WhoAmI {
        role: c.role.name().into(),
        subject: c.subject,
    }))
}

#[utoipa::path(get, path = "/api/v1/node", tag = "node",
    responses((status = 200, body = NodeInfo), (status = 401, body = ApiError)))]
pub async fn node(State(ctx): St) -> Answer<NodeInfo> {
    let fwd = ctx.shared.fwd.load();
    Ok(Json(NodeInfo {
        name: ctx.name.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_secs: ctx.shared.now_secs(),
        workers: ctx.shared.params.workers,
        rules_generation: ctx.shared.pipeline.load().generation,
        workloads: fwd.workloads.iter().flatten().count(),
    }))
}

fn health_of(ctx: &Ctx) -> Health {
    let workers = ctx.shared.params.workers;
    let alive = ctx.shared.workers_alive.load(Ordering::Relaxed);
    Health {
        status: if alive == workers { "ok" } else { "degraded" }.into(),
        workers,
        workers_alive: alive,
        worker_failures: ctx.shared.failed(),
        rules_loaded: ctx.insp.current_rules().0.is_some(),
    }
}

#[utoipa::path(get, path = "/api/v1/health", tag = "node",
    responses((status = 200, description = "serving; see status", body = Health)))]
pub async fn health(State(ctx): St) -> Answer<Health> {
    Ok(Json(health_of(&ctx)))
}

#[utoipa::path(get, path = "/api/v1/cluster", tag = "node",
    responses((status = 200, description = "the store link and the set in force", body = ClusterView),
        (status = 404, description = "not in a cluster", body = ApiError),
        (status = 401, body = ApiError)))]
pub async fn cluster(State(ctx): St) -> Answer<ClusterView> {
    match &ctx.cluster {
        Some(v) => Ok(Json(v.lock().unwrap_or_else(|e| e.into_inner()).clone())),
        None => Err(Refusal::not_found(
            "this node is not in a cluster (no [cluster] in its config)",
        )),
    }
}

#[utoipa::path(get, path = "/api/v1/ready", tag = "node",
    responses((status = 200, description = "every datapath worker runs", body = Health),
        (status = 503, description = "a worker is gone", body = Health),
        (status = 401, body = ApiError)))]
pub async fn ready(State(ctx): St) -> (StatusCode, Json<Health>) {
    let h = health_of(&ctx);
    let code = if h.status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(h))
}

#[utoipa::path(get, path = "/api/v1/workloads", tag = "workloads",
    responses((status = 200, body = Vec<Workload>), (status = 401, body = ApiError)))]
pub async fn workloads(State(ctx): St) -> Answer<Vec<Workload>> {
    steer(&ctx, |n| Ok(n.list())).await.map(Json)
}

#[utoipa::path(get, path = "/api/v1/workloads/{name}", tag = "workloads",
    params(("name" = String, Path, description = "workload name")),
    responses((status = 200, body = Workload), (status = 404, body = ApiError),
        (status = 401, body = ApiError)))]
pub async fn workload(State(ctx): St, Path(name): Path<String>) -> Answer<Workload> {
    let list = steer(&ctx, |n| Ok(n.list())).await?;
    list.into_iter()
        .find(|w| w.name == name)
        .map(Json)
        .ok_or_else(|| Refusal::not_found(format!("no workload named {name:?}")))
}

fn spec(o: AttachOptions) -> Result<AttachSpec, Refusal> {
    let macs = o
        .macs
        .iter()
        .enumerate()
        .map(|(i, m)| {
            crate::vocab::parse_mac(m).map_err(|e| Refusal::field(format!("macs[{i}]"), e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (i, l) in o.labels.iter().enumerate() {
        if l.is_empty() || l.len() > 253 || l.chars().any(char::is_control) {
            return Err(Refusal::field(
                format!("labels[{i}]"),
                "a label is 1 to 253 printable characters",
            ));
        }
    }
    Ok(AttachSpec {
        name: o.name,
        mode: o.mode,
        on_failure: o.on_failure,
        identity: Identity {
            macs,
            ips: o.ips,
            router: o.router,
        },
        labels: o.labels,
    })
}

/// Binds the attached workloads' labels into the rules after an attach or
/// detach.
async fn rebind(ctx: &Arc<Ctx>) {
    if let Ok(labels) = steer(ctx, |n| Ok(n.labels())).await {
        ctx.insp.bind_labels(labels);
    }
}

#[utoipa::path(post, path = "/api/v1/workloads/pod", tag = "workloads", request_body = AttachPod,
    responses((status = 200, body = Attached), (status = 400, body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 413, body = ApiError)))]
pub async fn attach_pod(State(ctx): St, Body(req): Body<AttachPod>) -> Answer<Attached> {
    let spec = spec(req.options)?;
    let t0 = Instant::now();
    let via = Via::PodVeth {
        netns: req.netns,
        ifname: req.ifname,
    };
    let r = steer(&ctx, move |n| n.attach(via, None, spec)).await;
    ctx.metrics.attach.observe(t0.elapsed().as_secs_f64());
    rebind(&ctx).await;
    r.map(Json)
}

#[utoipa::path(post, path = "/api/v1/workloads/vm", tag = "workloads", request_body = AttachVm,
    responses((status = 200, body = Attached), (status = 400, body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 413, body = ApiError)))]
pub async fn attach_vm(State(ctx): St, Body(req): Body<AttachVm>) -> Answer<Attached> {
    let spec = spec(req.options)?;
    let t0 = Instant::now();
    let via = if req.hybrid { Via::Hybrid } else { Via::Tap };
    let dev = req.dev;
    let r = steer(&ctx, move |n| n.attach(via, Some(&dev), spec)).await;
    ctx.metrics.attach.observe(t0.elapsed().as_secs_f64());
    rebind(&ctx).await;
    r.map(Json)
}

#[utoipa::path(delete, path = "/api/v1/workloads/{name}", tag = "workloads",
    params(("name" = String, Path, description = "workload name")),
    responses((status = 200, body = Detached), (status = 400, body = ApiError),
        (status = 404, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub async fn detach(State(ctx): St, Path(name): Path<String>) -> Answer<Detached> {
    let r = steer(&ctx, move |n| n.detach(&name)).await;
    rebind(&ctx).await;
    r.map(Json)
}

#[utoipa::path(put, path = "/api/v1/workloads/{name}/mode", tag = "workloads", request_body = SetMode,
    params(("name" = String, Path, description = "workload name")),
    responses((status = 200, body = ModeChanged), (status = 400, body = ApiError),
        (status = 404, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 413, body = ApiError)))]
pub async fn set_mode(
    State(ctx): St,
    Path(name): Path<String>,
    Body(req): Body<SetMode>,
) -> Answer<ModeChanged> {
    let to = req.mode;
    steer(&ctx, move |n| {
        let from = n.set_mode(&name, to)?;
        Ok(ModeChanged {
            workload: name,
            from,
            to,
        })
    })
    .await
    .map(Json)
}

#[utoipa::path(get, path = "/api/v1/stats", tag = "node",
    responses((status = 200, body = StatsSnapshot), (status = 401, body = ApiError)))]
pub async fn stats(State(ctx): St) -> Answer<StatsSnapshot> {
    steer(&ctx, |n| Ok(n.dp.stats())).await.map(Json)
}

#[utoipa::path(get, path = "/api/v1/macs", tag = "node",
    responses((status = 200, body = Vec<MacEntry>), (status = 401, body = ApiError)))]
pub async fn macs(State(ctx): St) -> Answer<Vec<MacEntry>> {
    let now = ctx.shared.now_secs();
    let t = ctx.shared.macs.snapshot();
    Ok(Json(
        t.entries()
            .into_iter()
            .map(|(m, p, seen)| MacEntry {
                mac: crate::vocab::format_mac(&m),
                port: p.0,
                age_secs: now.saturating_sub(seen),
            })
            .collect(),
    ))
}

/// The filter and page size a log or flows query asks for.
fn filter_of(q: LogQuery) -> Result<(Filter, usize, Option<u64>), Refusal> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Refusal::field("limit", format!("must be 1..={MAX_PAGE}")));
    }
    let since = match q.since.as_deref() {
        None | Some("") => None,
        Some(s) => Some(match s.parse::<u64>() {
            Ok(ms) => ms,
            Err(_) => record::parse_time(s, record::log::now_ms())
                .map_err(|e| Refusal::field("since", e))?,
        }),
    };
    let empty = |s: Option<String>| s.filter(|s| !s.is_empty());
    Ok((
        Filter {
            workload: empty(q.workload),
            action: empty(q.action),
            app: empty(q.app),
            since,
            until: None,
            event: empty(q.event),
            q: empty(q.q),
        },
        limit,
        q.before,
    ))
}

fn entry((seq, record): (u64, record::FlowRecord)) -> LogEntry {
    LogEntry { seq, record }
}

#[utoipa::path(get, path = "/api/v1/log", tag = "traffic", params(LogQuery),
    responses((status = 200, body = LogPage), (status = 400, body = ApiError),
        (status = 401, body = ApiError)))]
pub async fn log(State(ctx): St, Params(q): Params<LogQuery>) -> Answer<LogPage> {
    let (f, limit, before) = filter_of(q)?;
    let mut recs = ctx.insp.log.page(&f, before, limit + 1);
    let next_before = if recs.len() > limit {
        recs.truncate(limit);
        recs.last().map(|(s, _)| *s)
    } else {
        None
    };
    Ok(Json(LogPage {
        records: recs.into_iter().map(entry).collect(),
        next_before,
    }))
}

#[utoipa::path(get, path = "/api/v1/flows", tag = "traffic", params(LogQuery),
    responses((status = 200, description = "live flows, most recently active first", body = LogPage),
        (status = 400, body = ApiError), (status = 401, body = ApiError)))]
pub async fn flows(State(ctx): St, Params(q): Params<LogQuery>) -> Answer<LogPage> {
    let (f, limit, _) = filter_of(q)?;
    let insp = ctx.insp.clone();
    let recs = tokio::task::spawn_blocking(move || insp.flows(&f, limit))
        .await
        .map_err(|e| Refusal::internal(format!("flow walk failed: {e}")))?;
    Ok(Json(LogPage {
        records: recs.into_iter().rev().map(|r| entry((0, r))).collect(),
        next_before: None,
    }))
}

/// Records a stream sends per wake-up at most; more wait for the next one.
const STREAM_BATCH: usize = 1000;

#[utoipa::path(get, path = "/api/v1/log/stream", tag = "traffic", params(LogQuery),
    responses((status = 200, description = "Server-Sent Events: `event: record`, data a LogEntry",
        content_type = "text/event-stream", body = String),
        (status = 400, body = ApiError), (status = 401, body = ApiError)))]
pub async fn log_stream(
    State(ctx): St,
    Params(q): Params<LogQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Refusal> {
    let (f, _, _) = filter_of(q)?;
    let rx = ctx.insp.log.subscribe();
    let last = *rx.borrow();
    let insp = ctx.insp.clone();
    let state = (rx, last, VecDeque::<LogEntry>::new());
    let s = futures::stream::unfold(state, move |(mut rx, mut last, mut queue)| {
        let insp = insp.clone();
        let f = f.clone();
        async move {
            loop {
                if let Some(e) = queue.pop_front() {
                    let ev = Event::default()
                        .event("record")
                        .id(e.seq.to_string())
                        .json_data(&e)
                        .unwrap_or_else(|_| Event::default().comment("unencodable record"));
                    return Some((Ok(ev), (rx, last, queue)));
                }
                rx.changed().await.ok()?;
                let upto = *rx.borrow_and_update();
                let recs = insp.log.since(&f, last, STREAM_BATCH);
                last = if recs.len() == STREAM_BATCH {
                    recs.last().map_or(upto, |(s, _)| *s)
                } else {
                    upto
                };
                queue.extend(recs.into_iter().filter(|(s, _)| *s <= last).map(entry));
            }
        }
    });
    Ok(Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[utoipa::path(get, path = "/api/v1/usage", tag = "traffic", params(UsageQuery),
    responses((status = 200, body = UsageReport), (status = 400, body = ApiError),
        (status = 401, body = ApiError)))]
pub async fn usage(State(ctx): St, Params(q): Params<UsageQuery>) -> Answer<UsageReport> {
    ctx.insp
        .usage(q.window.unwrap_or(10), q.workload.as_deref())
        .map(Json)
        .map_err(|e| Refusal::field("window", e))
}

fn problem(e: &RulesError) -> RuleProblem {
    RuleProblem {
        line: e.line(),
        field: e.key().map(str::to_string),
        message: e.detail(),
    }
}

fn push_refusal(e: PushError) -> Refusal {
    match e {
        PushError::Invalid(e) => {
            let mut r = Refusal::bad(e.to_string());
            r.body.line = Some(e.line());
            r.body.field = e.key().map(str::to_string);
            r
        }
        PushError::Keep(msg) => Refusal::internal(msg),
    }
}

#[utoipa::path(get, path = "/api/v1/rules", tag = "rules",
    responses((status = 200, body = RulesDocument), (status = 401, body = ApiError)))]
pub async fn rules(State(ctx): St) -> Answer<RulesDocument> {
    let (rev, text) = ctx.insp.current_rules();
    let generation = ctx.shared.pipeline.load().generation;
    let rules = ctx.shared.pipeline.load().rules.len();
    Ok(Json(match rev {
        Some(r) => RulesDocument {
            generation,
            hash: r.hash,
            rules: r.rules,
            at: Some(
                humantime::format_rfc3339_millis(
                    std::time::UNIX_EPOCH + Duration::from_millis(r.at),
                )
                .to_string(),
            ),
            by: r.by,
            origin: r.origin,
            text,
        },
        None => RulesDocument {
            generation,
            hash: rulebook::hash(""),
            rules,
            at: None,
            by: "none".into(),
            origin: "none".into(),
            text,
        },
    }))
}

#[utoipa::path(post, path = "/api/v1/rules/validate", tag = "rules", request_body = RulesText,
    responses((status = 200, description = "checked; nothing applied", body = Validation),
        (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 413, body = ApiError)))]
pub async fn validate(State(ctx): St, Body(req): Body<RulesText>) -> Answer<Validation> {
    let origin = req.origin.unwrap_or_else(|| "api".into());
    let apps = ctx.shared.pipeline.load().apps.clone();
    Ok(Json(match RuleSet::parse_with(&req.text, &origin, &apps) {
        Ok(r) => Validation {
            ok: true,
            rules: r.len(),
            errors: Vec::new(),
        },
        Err(e) => Validation {
            ok: false,
            rules: 0,
            errors: vec![problem(&e)],
        },
    }))
}

#[utoipa::path(post, path = "/api/v1/rules", tag = "rules", request_body = RulesText,
    responses((status = 200, description = "in force", body = Revision),
        (status = 400, description = "refused; the running rules stay", body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 413, body = ApiError),
        (status = 500, description = "could not be kept on disk; not applied", body = ApiError)))]
pub async fn push(
    State(ctx): St,
    Extension(caller): Extension<Caller>,
    Body(req): Body<RulesText>,
) -> Answer<Revision> {
    let t0 = Instant::now();
    let insp = ctx.insp.clone();
    let origin = req.origin.unwrap_or_else(|| "api".into());
    let r = tokio::task::spawn_blocking(move || insp.push(&req.text, &origin, &caller.subject))
        .await
        .map_err(|e| Refusal::internal(format!("rule push failed: {e}")))?;
    ctx.metrics.rule_push.observe(t0.elapsed().as_secs_f64());
    r.map(Json).map_err(push_refusal)
}

#[utoipa::path(get, path = "/api/v1/rules/history", tag = "rules",
    responses((status = 200, description = "newest first", body = Vec<Revision>),
        (status = 401, body = ApiError)))]
pub async fn history(State(ctx): St) -> Answer<Vec<Revision>> {
    Ok(Json(ctx.insp.rules_history()))
}

#[utoipa::path(post, path = "/api/v1/rules/rollback", tag = "rules", request_body = Rollback,
    responses((status = 200, description = "the old text, in force as a new generation", body = Revision),
        (status = 400, body = ApiError), (status = 404, body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 413, body = ApiError),
        (status = 500, body = ApiError)))]
pub async fn rollback(
    State(ctx): St,
    Extension(caller): Extension<Caller>,
    Body(req): Body<Rollback>,
) -> Answer<Revision> {
    let insp = ctx.insp.clone();
    let g = req.generation;
    let r = tokio::task::spawn_blocking(move || insp.rollback(g, &caller.subject))
        .await
        .map_err(|e| Refusal::internal(format!("rollback failed: {e}")))?;
    match r {
        Ok(Some(rev)) => Ok(Json(rev)),
        Ok(None) => Err(Refusal::not_found(format!(
            "generation {g} is not in the kept history"
        ))),
        Err(e) => Err(push_refusal(e)),
    }
}
