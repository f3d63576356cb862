//! `guardwire run`: opens the configured ports in sec ns, starts the datapath and
//! the control socket, and runs until SIGTERM or SIGINT.

use super::config::{Config, WorkloadConfig};
use super::http::{self, auth, routes, server};
use super::inspection::{self, Inspection};
use super::record::LogConfig;
use super::rulebook::{self, Revision, RuleBook};
use super::steering::{AttachSettings, Steering};
use crate::cluster::agent::{Agent, AgentConfig, ClusterView, Enforcer};
use crate::cluster::store::EtcdOptions;
use crate::datapath::{Datapath, DatapathParams};
use crate::decide::WorkloadInfo;
use crate::pipeline::Pipeline;
use crate::pipeline::firewall::RuleSet;
use crate::port::{FaultPort, PacketPort, PacketPortOptions, PcapPort, Port};
use crate::steer;
use crate::vocab::SteeringMode;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Sec ns could not be prepared.
    #[error(transparent)]
    Steer(#[from] steer::SteerError),
    /// A port could not be opened.
    #[error("workload {workload}: port {port}: {source}")]
    Port {
        /// The workload.
        workload: String,
        /// The port.
        port: String,
        /// Why.
        source: io::Error,
    },
    /// Anything else on the way up.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        source: io::Error,
    },
}

fn io_err(what: &str) -> impl FnOnce(io::Error) -> DaemonError + '_ {
    move |source| DaemonError::Io {
        what: what.to_string(),
        source,
    }
}

/// Opens one port as the config asks (pcap and fault wrappers when configured).
fn open_port(
    w: &WorkloadConfig,
    name: &str,
    opts: &PacketPortOptions,
    workload_side: bool,
) -> Result<Arc<dyn Port>, DaemonError> {
    let err = |source| DaemonError::Port {
        workload: w.name.get_ref().clone(),
        port: name.to_string(),
        source,
    };
    let mut port: Box<dyn Port> = Box::new(PacketPort::open(name, opts).map_err(err)?);
    if workload_side && let Some(f) = &w.fault {
        port = Box::new(FaultPort::new(port, f.clone()));
    }
    if let Some(prefix) = &w.pcap {
        let path = PathBuf::from(format!("{}-{name}.pcap", prefix.display()));
        port = Box::new(PcapPort::new(port, &path).map_err(err)?);
    }
    Ok(Arc::from(port))
}

/// The pipeline the config asks for. Rules pushed earlier (kept in state_dir)
/// win over the config's rule file, as pushed modes win over configured ones;
/// the generation goes on from the last one kept, so it never goes back.
fn build_pipeline(cfg: &Config, book: &mut RuleBook) -> Result<Pipeline, DaemonError> {
    let i = &cfg.inspect;
    let bad = |what: &str, e: String| DaemonError::Io {
        what: what.to_string(),
        source: io::Error::other(e),
    };
    let apps = inspection::load_apps(i.apps.as_deref()).map_err(|e| bad("applications", e))?;
    let pl = Pipeline::new(cfg.datapath.malformed).configured(
        i.enabled,
        i.anti_spoofing,
        i.fragments,
        i.evasion,
        Arc::new(apps),
    );
    let Some(file) = book.current_file().or_else(|| i.rules.clone()) else {
        return Ok(pl);
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| bad("rules", format!("{}: {e}", file.display())))?;
    let origin = file.display().to_string();
    let rules =
        RuleSet::parse_with(&text, &origin, &pl.apps).map_err(|e| bad("rules", e.to_string()))?;
    tracing::info!(rules = rules.len(), file = %file.display(), "rules loaded");
    let n = rules.len();
    let mut pl = pl.with_rules(Arc::new(rules));
    match book.latest() {
        Some(r) => pl.generation = pl.generation.max(r.generation),
        None => {
            let rev = Revision {
                generation: pl.generation,
                hash: rulebook::hash(&text),
                rules: n,
                at: super::record::log::now_ms(),
                by: "config".into(),
                origin,
            };
            book.record(rev, &text).map_err(|e| bad("rules", e))?;
        }
    }
    Ok(pl)
}

/// What the cluster agent does on this node: pushes through the node's own
/// path, facts from its datapath.
struct NodeEnforcer {
    insp: Arc<Inspection>,
    node: Arc<Mutex<Steering>>,
}

impl Enforcer for NodeEnforcer {
    fn apply(&self, set: &str, revision: i64, text: &str) -> Result<(), String> {
        self.insp
            .push(text, &format!("cluster:{set}@{revision}"), "controller")
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn facts(&self) -> (usize, u64) {
        let n = self.node.lock().unwrap_or_else(|e| e.into_inner());
        let s = n.dp.stats();
        (s.ports.len() / 2, s.drops.values().sum())
    }
}

/// Starts the cluster agent when `[cluster]` is configured.
fn start_agent(
    cfg: &Config,
    node: Arc<Mutex<Steering>>,
    insp: Arc<Inspection>,
) -> Result<Option<Arc<Mutex<ClusterView>>>, DaemonError> {
    let Some(c) = &cfg.cluster else {
        return Ok(None);
    };
    let agent = Agent::new(
        AgentConfig {
            node: cfg.node.name.clone(),
            labels: c
                .labels
                .as_ref()
                .map(|l| l.get_ref().clone())
                .unwrap_or_default(),
            api_url: c.api_url.clone(),
            etcd: EtcdOptions {
                endpoints: c.endpoints.get_ref().clone(),
                ca: c.ca.clone(),
                identity: c.cert.clone().zip(c.key.clone()),
            },
            lease_ttl: Duration::from_secs(c.lease_ttl_secs),
            status_every: Duration::from_secs(c.status_secs),
            state_dir: Some(cfg.node.state_dir.clone()),
        },
        Arc::new(NodeEnforcer { insp, node }),
    );
    let view = agent.view();
    agent.spawn().map_err(io_err("cluster agent thread"))?;
    Ok(Some(view))
}

/// Binds the API's listeners and starts its thread.
fn start_api(
    cfg: &Config,
    node: Arc<Mutex<Steering>>,
    insp: Arc<Inspection>,
    shared: Arc<crate::datapath::Shared>,
    cluster: Option<Arc<Mutex<ClusterView>>>,
) -> Result<(), DaemonError> {
    let a = &cfg.api;
    let bind = |what: &str| {
        let what = what.to_string();
        move |source| DaemonError::Io { what, source }
    };
    let unix = server::bind_unix(&cfg.node.control_socket, a.socket_group.as_deref())
        .map_err(bind("control socket"))?;
    let tcp = match a.listen {
        Some(addr) => {
            let tls = server::tls_config(a).map_err(|e| DaemonError::Io {
                what: "API TLS".into(),
                source: io::Error::other(e),
            })?;
            let allow = a
                .allow_from
                .iter()
                .filter_map(|p| p.get_ref().parse().ok())
                .collect();
            let l = server::bind_tcp(addr).map_err(bind(&format!("API address {addr}")))?;
            tracing::info!(%addr, tls = tls.is_some(), "API listening");
            Some((l, tls, allow))
        }
        None => None,
    };
    let tokens = auth::Tokens::load(a, &cfg.node.state_dir).map_err(|e| DaemonError::Io {
        what: "API tokens".into(),
        source: io::Error::other(e),
    })?;
    let ctx = Arc::new(routes::Ctx {
        node,
        insp,
        shared,
        name: cfg.node.name.clone(),
        metrics: Arc::new(http::metrics::Timings::default()),
        cluster,
    });
    let gate = Arc::new(auth::Gate::new(a, tokens));
    server::Server {
        router: server::router(ctx, gate.clone(), a.max_body_kb << 10),
        unix: Some(unix),
        tcp,
        max_connections: a.max_connections,
    }
    .spawn()
    .map_err(bind("API thread"))?;
    // The rate limiter forgets idle clients, so it cannot grow without bound.
    std::thread::Builder::new()
        .name("gw-api-gc".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(60));
                gate.limiter.retain_recent();
            }
        })
        .map_err(bind("API housekeeping thread"))?;
    Ok(())
}

/// Raises the soft limit of open files to the hard one: every API client is a
/// descriptor, and the default soft limit (1024) is below `api.max_connections`.
fn raise_fd_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write one rlimit struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Runs the daemon until a signal asks it to stop.
pub fn run(cfg: Config) -> Result<(), DaemonError> {
    raise_fd_limit();
    super::files::state_dir(&cfg.node.state_dir).map_err(|e| DaemonError::Io {
        what: format!("state directory {}", cfg.node.state_dir.display()),
        source: e,
    })?;
    // Before anything is touched: a second daemon on the same state would
    // re-adopt the workloads and start a watchdog of its own. The wait covers
    // the watchdog of a daemon that just died, still failing its workloads open.
    let _lock = super::files::StateLock::take(&cfg.node.state_dir, Duration::from_secs(3))
        .map_err(|e| DaemonError::Io {
            what: "state lock".into(),
            source: e,
        })?;
    if cfg.node.sec_ns_hygiene {
        steer::prepare_sec_ns()?;
        for w in &cfg.workloads {
            steer::prepare_port(w.workload_port.get_ref())?;
            steer::prepare_port(w.uplink_port.get_ref())?;
        }
    }
    let params = DatapathParams {
        workers: cfg.workers(),
        batch: cfg.datapath.batch,
        mac_limit: cfg.datapath.mac_limit,
        mac_age_secs: cfg.datapath.mac_age_secs,
        spin_us: cfg.datapath.spin_us,
        flow_capacity: cfg.inspect.flow_capacity,
        flow_quota: Some(cfg.inspect.flow_quota).filter(|&q| q > 0),
        timeouts: cfg.inspect.timeouts,
        reassembly_bytes: cfg.inspect.reassembly_mb << 20,
        shape_queue_bytes: cfg.inspect.shape_queue_mb << 20,
    };
    let opts = PacketPortOptions {
        ring_frames: cfg.datapath.ring_frames,
        slot_bytes: cfg.datapath.slot_bytes,
        ..Default::default()
    };
    let mut book = RuleBook::load(&cfg.node.state_dir).map_err(|e| DaemonError::Io {
        what: "rules history".into(),
        source: io::Error::other(e),
    })?;
    let pipeline = build_pipeline(&cfg, &mut book)?;
    let mut dp = Datapath::start(params, pipeline).map_err(io_err("start workers"))?;
    if cfg.datapath.fast_path {
        let shared = dp.shared();
        match crate::fastpath::FastPath::load(shared.inspector.now_ns()) {
            Ok(fp) => {
                let _ = shared.fast.set(std::sync::Arc::new(fp));
                tracing::info!("kernel fast path on: settled flows are forwarded by the kernel");
            }
            Err(e) => tracing::warn!("running without the kernel fast path: {e}"),
        }
    }
    for w in &cfg.workloads {
        let wp = open_port(w, w.workload_port.get_ref(), &opts, true)?;
        let up = open_port(w, w.uplink_port.get_ref(), &opts, false)?;
        dp.add_workload(
            WorkloadInfo {
                name: w.name.get_ref().clone(),
                kind: w.kind.name().to_string(),
                mode: SteeringMode::Inline,
                on_failure: w.on_failure,
                identity: Config::identity(w),
            },
            wp,
            up,
        )
        .map_err(io_err("add workload"))?;
        tracing::info!(
            workload = w.name.get_ref().as_str(),
            workload_port = w.workload_port.get_ref().as_str(),
            uplink_port = w.uplink_port.get_ref().as_str(),
            "workload wired"
        );
    }
    let settings = AttachSettings {
        host_netns: cfg.node.host_netns.clone(),
        default_mode: cfg.node.default_mode,
        default_on_failure: cfg.node.default_on_failure,
        port_opts: opts.clone(),
    };
    let mut node =
        Steering::new(dp, cfg.node.state_dir.clone(), settings).map_err(|e| DaemonError::Io {
            what: "steering".into(),
            source: io::Error::other(e),
        })?;
    for w in &cfg.workloads {
        let name = w.name.get_ref();
        let mode = node.initial_mode(name, w.mode);
        let wl = node.dp.find(name).expect("just added");
        node.adopt(wl, mode).map_err(|e| DaemonError::Io {
            what: format!("workload {name}: steering mode {}", mode.name()),
            source: io::Error::other(e),
        })?;
        tracing::info!(
            workload = name.as_str(),
            mode = mode.name(),
            "steering mode"
        );
    }
    if let Err(e) = node.recover() {
        tracing::error!("{e}");
    }
    for e in node.readopt() {
        tracing::error!("could not re-adopt {e}");
    }
    node.write_watch().map_err(|e| DaemonError::Io {
        what: "watchdog state".into(),
        source: io::Error::other(e),
    })?;
    super::watchdog::beat(&cfg.node.state_dir, node.dp.shared()).map_err(io_err("heartbeat"))?;
    super::watchdog::spawn(&cfg.node.state_dir).map_err(io_err("start the watchdog"))?;
    let i = &cfg.inspect;
    let log = LogConfig {
        ring: i.log_ring,
        dir: Some(
            i.log_dir
                .clone()
                .unwrap_or_else(|| cfg.node.state_dir.join("log")),
        ),
        rotate_bytes: i.log_rotate_mb << 20,
        keep: i.log_keep,
        records_per_sec: i.log_records_per_sec,
        burst: i.log_burst,
        reserve_bytes: i.log_disk_reserve_mb << 20,
    };
    let insp = Arc::new(
        Inspection::new(node.dp.shared(), log, i.log_update_secs, book)
            .map_err(io_err("verdict log"))?,
    );
    insp.spawn().map_err(io_err("sweeper thread"))?;
    insp.bind_labels(node.labels());
    let shared = node.dp.shared();
    let node = Arc::new(Mutex::new(node));
    let sock = cfg.node.control_socket.clone();
    let cluster = start_agent(&cfg, node.clone(), insp.clone())?;
    start_api(&cfg, node.clone(), insp, shared, cluster)?;
    tracing::info!(node = cfg.node.name.as_str(), socket = %sock.display(), "guardwire running");

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).map_err(io_err("signal handler"))?;
    }
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        if let Ok(mut node) = node.lock() {
            node.dp.housekeeping();
            node.hand_over_failed();
        }
    }
    tracing::info!("stopping");
    if let Ok(mut node) = node.lock() {
        node.dp.stop();
    }
    let _ = std::fs::remove_file(&sock);
    Ok(())
}
