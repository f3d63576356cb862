//! The `guardwire` command: the daemon and the verbs that talk to it.

use clap::{Parser, Subcommand};
use guardwire::control::config::{Config, DEFAULT_SOCKET};
use guardwire::control::http::client::{Client, Endpoint};
use guardwire::control::http::types::{AttachOptions, AttachPod, AttachVm, Attached, LogQuery};
use guardwire::control::record::{self, FlowRecord};
use guardwire::control::{classify, daemon, stats};
use guardwire::vocab::{OnFailure, SteeringMode};
use std::path::PathBuf;
use std::process::ExitCode;

/// A userspace virtual switch that forces every frame of a node's pods and VMs
/// through one inspection pipeline.
#[derive(Parser)]
#[command(name = "guardwire", version)]
struct Cli {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(clap::Args)]
struct Target {
    /// Control socket of the running daemon.
    #[arg(long, conflicts_with_all = ["config", "addr"])]
    socket: Option<PathBuf>,
    /// Take the control socket from this config file.
    #[arg(long, conflicts_with = "addr")]
    config: Option<PathBuf>,
    /// A node's TCP management address (host:port, plain HTTP), instead of a socket.
    #[arg(long, requires = "token_file")]
    addr: Option<String>,
    /// File holding the bearer token for --addr.
    #[arg(long)]
    token_file: Option<PathBuf>,
}

impl Target {
    fn client(&self) -> Result<Client, String> {
        if let (Some(addr), Some(t)) = (&self.addr, &self.token_file) {
            let token = std::fs::read_to_string(t)
                .map_err(|e| format!("{}: {e}", t.display()))?
                .trim()
                .to_string();
            return Ok(Client::new(Endpoint::Tcp {
                addr: addr.clone(),
                token,
            }));
        }
        if let Some(s) = &self.socket {
            return Ok(Client::unix(s.clone()));
        }
        if let Some(c) = &self.config {
            return Config::load(c)
                .map(|c| Client::unix(c.node.control_socket))
                .map_err(|e| e.to_string());
        }
        Ok(Client::unix(DEFAULT_SOCKET))
    }
}

#[derive(Subcommand)]
enum Verb {
    /// Run the switch in this network namespace (the sec ns) until SIGTERM/SIGINT.
    Run {
        /// Node configuration (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the cluster's controller (stateless; all state in etcd): its API
    /// and page, rule sets typed once for every node (docs/cluster.md).
    Controller(ControllerArgs),
    /// Show this node's cluster link: the store, the rule set in force, errors.
    Cluster {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check a configuration file and exit.
    Check {
        /// Node configuration (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Show per-port counters and drops by reason of the running daemon.
    Stats {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show the learned MAC table of the running daemon.
    Macs {
        #[command(flatten)]
        target: Target,
    },
    /// Steer a live workload through guardwire (the daemon does the plumbing).
    Attach {
        #[command(subcommand)]
        what: AttachWhat,
    },
    /// Put an attached workload back exactly as it was before `attach`.
    Detach {
        /// Workload name.
        workload: String,
        #[command(flatten)]
        target: Target,
    },
    /// (Started by `run`.) Wait for the daemon `--pid` to end, then hand its
    /// `on_failure = "open"` workloads to the kernel path.
    Watchdog {
        /// The daemon's pid.
        #[arg(long)]
        pid: i32,
        /// The daemon's state directory.
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// List workloads with their ports, steering modes and counters.
    List {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show live flows: workload, app, verdict (allow/deny, or would allow/deny in
    /// mirror mode), rule, counters, first seen and updated at.
    Flows {
        #[command(flatten)]
        filter: LogFilter,
        #[command(flatten)]
        target: Target,
    },
    /// Show the verdict log: one record per flow decision and its updates.
    Log {
        #[command(flatten)]
        filter: LogFilter,
        /// Read the JSON-lines files in this directory instead of asking the daemon.
        #[arg(long)]
        dir: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// Check a rule file, or push it to the running daemon (atomically; on any
    /// error the running rules stay).
    Rules {
        #[command(subcommand)]
        what: RulesWhat,
    },
    /// Traffic per workload and application category per time window, and
    /// bandwidth limits with their auto-bandwidth changes.
    Usage {
        /// Window size in seconds: 1, 10, 60 or 300.
        #[arg(long, default_value_t = 10)]
        window: u64,
        /// Only this workload.
        #[arg(long)]
        workload: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Name the application of every flow in a pcap file (offline, no daemon).
    Classify {
        /// The pcap file.
        pcap: PathBuf,
        /// Applications file extending the built-in catalogue.
        #[arg(long)]
        apps: Option<PathBuf>,
        /// One JSON object per flow instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Switch a workload's steering mode: off (the kernel forwards, guardwire
    /// spends nothing), mirror (the kernel forwards, guardwire inspects copies) or
    /// inline (guardwire forwards and enforces). Kept across restarts.
    Mode {
        /// Workload name.
        workload: String,
        /// off, mirror or inline.
        mode: SteeringMode,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
enum RulesWhat {
    /// Check a rule file and exit.
    Check {
        /// The rule file (TOML).
        file: PathBuf,
        /// Applications file the node extends the built-in catalogue with.
        #[arg(long)]
        apps: Option<PathBuf>,
    },
    /// Replace the running daemon's rules with this file, or with --cluster,
    /// the cluster's rule set (every node it selects applies it).
    Push {
        /// The rule file (TOML).
        file: PathBuf,
        /// The controller (http://host:port or host:port; give --token-file).
        #[arg(long, requires = "token_file", conflicts_with_all = ["socket", "config", "addr"])]
        cluster: Option<String>,
        /// The cluster rule set's name.
        #[arg(long = "set", default_value = "default", requires = "cluster")]
        set: String,
        #[command(flatten)]
        target: Target,
    },
    /// The rule sets kept, newest first: generation, when, by whom, from where.
    History {
        #[command(flatten)]
        target: Target,
    },
    /// Put an earlier generation's rules in force again (as a new generation).
    Rollback {
        /// The generation.
        generation: u64,
        #[command(flatten)]
        target: Target,
    },
}

/// `guardwire controller`
#[derive(clap::Args)]
struct ControllerArgs {
    /// etcd client URLs, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    etcd: Vec<String>,
    /// PEM CA of etcd's server certificate.
    #[arg(long)]
    etcd_ca: Option<PathBuf>,
    /// PEM client certificate for etcd.
    #[arg(long, requires = "etcd_key")]
    etcd_cert: Option<PathBuf>,
    /// Its private key.
    #[arg(long, requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
    /// Address the API and page listen on (host:port).
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// Where generated tokens are kept.
    #[arg(long, default_value = "/var/lib/guardwire-controller")]
    state_dir: PathBuf,
    /// File holding the admin token (default: generated in --state-dir).
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// File holding the viewer token (default: generated in --state-dir).
    #[arg(long)]
    viewer_token_file: Option<PathBuf>,
    /// PEM certificate chain: serve TLS.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Its private key.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA: a client certificate it signs is admin.
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// Only these source prefixes may connect (repeatable; default any).
    #[arg(long = "allow-from")]
    allow_from: Vec<String>,
    /// File holding the (viewer) token the nodes' APIs take, to read their traffic.
    #[arg(long)]
    node_token_file: Option<PathBuf>,
}

impl ControllerArgs {
    fn options(self) -> Result<guardwire::cluster::controller::ControllerOptions, String> {
        use guardwire::cluster::store::EtcdOptions;
        let node_token = match &self.node_token_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| format!("{}: {e}", p.display()))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        for (i, e) in self.etcd.iter().enumerate() {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(format!(
                    "--etcd[{i}]: {e:?} is not an http:// or https:// URL"
                ));
            }
        }
        let api = guardwire::control::config::ApiConfig {
            listen: Some(self.listen),
            allow_from: self
                .allow_from
                .iter()
                .map(|p| toml::Spanned::new(0..0, p.clone()))
                .collect(),
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            client_ca: self.client_ca,
            admin_token_file: self.admin_token_file,
            viewer_token_file: self.viewer_token_file,
            ..Default::default()
        };
        Ok(guardwire::cluster::controller::ControllerOptions {
            etcd: EtcdOptions {
                endpoints: self.etcd,
                ca: self.etcd_ca,
                identity: self.etcd_cert.zip(self.etcd_key),
            },
            listen: self.listen,
            api,
            state_dir: self.state_dir,
            node_token,
        })
    }
}

fn print_cluster(v: &guardwire::cluster::agent::ClusterView) {
    let at = |ms: u64| {
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
        )
    };
    println!("node {} labels [{}]", v.node, v.labels.join(", "));
    if v.connected {
        println!(
            "store: reachable ({}), newest revision seen {}",
            v.endpoints.join(","),
            v.store_revision
        );
    } else if v.since_ms > 0 {
        println!(
            "store: unreachable since {} ({}); enforcing the last set (stale)",
            at(v.since_ms),
            v.store_error.as_deref().unwrap_or("?")
        );
    } else {
        println!("store: not reached yet; enforcing the persisted set (stale)");
    }
    match &v.applied {
        Some(a) => println!(
            "in force: rule set {} revision {} ({}), applied {}",
            a.ruleset,
            a.revision,
            &a.hash[..a.hash.len().min(12)],
            at(a.at)
        ),
        None => println!("in force: no rule set from the cluster yet"),
    }
    if let (Some(e), Some(r)) = (&v.error, v.error_revision) {
        println!("refused revision {r}: {e}");
    }
}

/// Which flows or records to show.
#[derive(clap::Args)]
struct LogFilter {
    /// Only this workload.
    #[arg(long)]
    workload: Option<String>,
    /// Only this action, detail or verdict: allow, deny, reject, shape, rate-limit,
    /// "would deny"...
    #[arg(long)]
    action: Option<String>,
    /// Only this application or category.
    #[arg(long)]
    app: Option<String>,
    /// Only records updated since: "10m", "2h" ago, or an RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Only this event: new, rejudged, update, end.
    #[arg(long)]
    event: Option<String>,
    /// At most this many (the newest).
    #[arg(long, default_value_t = 200)]
    limit: usize,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

impl LogFilter {
    fn query(&self) -> Result<LogQuery, String> {
        // Resolved here, so "10m" means ten minutes before this command.
        let since = match &self.since {
            Some(s) => Some(record::parse_time(s, record::log::now_ms())?.to_string()),
            None => None,
        };
        Ok(LogQuery {
            workload: self.workload.clone(),
            action: self.action.clone(),
            app: self.app.clone(),
            since,
            event: self.event.clone(),
            q: None,
            limit: Some(
                self.limit
                    .clamp(1, guardwire::control::http::types::MAX_PAGE),
            ),
            before: None,
        })
    }

    /// Prints records given newest first, oldest at the top.
    fn print(&self, mut recs: Vec<FlowRecord>) -> Result<(), String> {
        recs.reverse();
        if self.json {
            for r in &recs {
                println!("{}", serde_json::to_string(r).map_err(|e| e.to_string())?);
            }
        } else {
            print!("{}", stats::render_flows(&recs));
        }
        Ok(())
    }
}

#[derive(Subcommand)]
enum AttachWhat {
    /// A pod: its CNI-made veth moves into sec ns (name and MAC kept), a new veth
    /// pair takes its place on the host; the pod sees nothing change.
    Pod {
        /// The pod's network namespace (name under /var/run/netns, or a path).
        netns: String,
        /// The pod's interface.
        #[arg(long, default_value = "eth0")]
        ifname: String,
        #[command(flatten)]
        opts: AttachOpts,
    },
    /// A VM: either its tap moves into sec ns while the hypervisor keeps running
    /// (--tap), or guardwire takes over the veth between its qbr and br-int
    /// (--hybrid); a new veth pair takes the device's place on the host.
    Vm {
        /// The VM's tap in the host namespace.
        #[arg(long, conflicts_with = "hybrid", required_unless_present = "hybrid")]
        tap: Option<String>,
        /// The qbr end of the veth between the VM's qbr and br-int.
        #[arg(long)]
        hybrid: Option<String>,
        #[command(flatten)]
        opts: AttachOpts,
    },
}

/// What every attach takes.
#[derive(clap::Args)]
struct AttachOpts {
    /// Workload name (at most 12 characters; default: the namespace's or device's name).
    #[arg(long)]
    name: Option<String>,
    /// Steering mode to start in (default: the node's default_mode).
    #[arg(long)]
    mode: Option<SteeringMode>,
    /// When guardwire dies: open (kernel path) or closed (cut off).
    #[arg(long)]
    on_failure: Option<OnFailure>,
    /// A MAC the workload may send from (repeatable), for anti-spoofing; a pod's
    /// eth0 MAC and addresses are learned at attach, a VM's must be given.
    #[arg(long = "mac", value_parser = |s: &str| guardwire::vocab::parse_mac(s).map(|_| s.to_string()))]
    macs: Vec<String>,
    /// An IP address the workload may send from (repeatable).
    #[arg(long = "ip")]
    ips: Vec<std::net::IpAddr>,
    /// The workload may send router advertisements, redirects and DHCP server answers.
    #[arg(long)]
    router: bool,
    /// A label `label = "..."` rules select the workload by, e.g. app=web (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    #[command(flatten)]
    target: Target,
}

impl AttachOpts {
    fn options(self) -> (AttachOptions, Target) {
        let o = AttachOptions {
            name: self.name,
            mode: self.mode,
            on_failure: self.on_failure,
            macs: self.macs,
            ips: self.ips,
            router: self.router,
            labels: self.labels,
        };
        (o, self.target)
    }
}

/// `rules push --cluster`: through the controller, which validates, keeps the
/// history and writes the set to etcd.
fn push_cluster(
    file: &std::path::Path,
    url: &str,
    set: &str,
    target: &Target,
) -> Result<(), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let t = target
        .token_file
        .as_ref()
        .ok_or("--cluster needs --token-file")?;
    let token = std::fs::read_to_string(t)
        .map_err(|e| format!("{}: {e}", t.display()))?
        .trim()
        .to_string();
    let addr = url
        .strip_prefix("http://")
        .unwrap_or(url)
        .trim_end_matches('/')
        .to_string();
    let c = Client::new(Endpoint::Tcp { addr, token });
    let origin: String =
        form_urlencoded::byte_serialize(file.display().to_string().as_bytes()).collect();
    let r: guardwire::cluster::controller::routes::Pushed = c
        .call_bytes(
            hyper::Method::PUT,
            &format!("/api/v1/rulesets/{set}?origin={origin}"),
            text.into_bytes(),
        )
        .map_err(|e| e.to_string())?;
    println!(
        "{}: {} rules pushed to the cluster as rule set {set}, revision {}",
        file.display(),
        r.rules,
        r.revision
    );
    Ok(())
}

fn print_attached(a: &Attached) {
    println!(
        "attached {}: host device {} -> workload port {}, uplink port {} ({}, {:.1} ms)",
        a.workload,
        a.host_dev,
        a.workload_port,
        a.uplink_port,
        a.mode.name(),
        a.millis
    );
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GUARDWIRE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let r: Result<(), String> = match cli.verb {
        Verb::Run { config } => Config::load(&config)
            .map_err(|e| e.to_string())
            .and_then(|c| daemon::run(c).map_err(|e| e.to_string())),
        Verb::Check { config } => Config::load(&config).map_err(|e| e.to_string()).map(|c| {
            println!("{}: ok ({} workloads)", config.display(), c.workloads.len());
        }),
        Verb::Stats { target, json } => target.client().and_then(|c| {
            let snap = c.stats().map_err(|e| e.to_string())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&snap).map_err(|e| e.to_string())?
                );
            } else {
                print!("{}", stats::render(&snap));
            }
            Ok(())
        }),
        Verb::Macs { target } => target.client().and_then(|c| {
            for e in c.macs().map_err(|e| e.to_string())? {
                println!("{}  port {}  age {}s", e.mac, e.port, e.age_secs);
            }
            Ok(())
        }),
        Verb::List { target, json } => target.client().and_then(|c| {
            let list = c.workloads().map_err(|e| e.to_string())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&list).map_err(|e| e.to_string())?
                );
            } else {
                print!("{}", stats::render_workloads(&list));
            }
            Ok(())
        }),
        Verb::Attach { what } => {
            let r = match what {
                AttachWhat::Pod {
                    netns,
                    ifname,
                    opts,
                } => {
                    let (options, target) = opts.options();
                    let req = AttachPod {
                        netns,
                        ifname,
                        options,
                    };
                    target
                        .client()
                        .and_then(|c| c.attach_pod(&req).map_err(|e| e.to_string()))
                }
                AttachWhat::Vm { tap, hybrid, opts } => {
                    let (dev, hybrid) = match (tap, hybrid) {
                        (Some(t), _) => (t, false),
                        (None, Some(h)) => (h, true),
                        (None, None) => unreachable!("clap requires --tap or --hybrid"),
                    };
                    let (options, target) = opts.options();
                    let req = AttachVm {
                        dev,
                        hybrid,
                        options,
                    };
                    target
                        .client()
                        .and_then(|c| c.attach_vm(&req).map_err(|e| e.to_string()))
                }
            };
            r.map(|a| print_attached(&a))
        }
        Verb::Flows { filter, target } => target.client().and_then(|c| {
            let page = c.flows(&filter.query()?).map_err(|e| e.to_string())?;
            filter.print(page.records.into_iter().map(|e| e.record).collect())
        }),
        Verb::Log {
            filter,
            dir,
            target,
        } => match dir {
            Some(d) => filter.query().and_then(|q| {
                let f = record::Filter {
                    workload: q.workload,
                    action: q.action,
                    app: q.app,
                    since: q.since.and_then(|s| s.parse().ok()),
                    until: None,
                    event: q.event,
                    q: None,
                };
                let mut recs = record::read_dir(&d, &f, filter.limit)
                    .map_err(|e| format!("{}: {e}", d.display()))?;
                recs.reverse();
                filter.print(recs)
            }),
            None => target.client().and_then(|c| {
                let page = c.log(&filter.query()?).map_err(|e| e.to_string())?;
                filter.print(page.records.into_iter().map(|e| e.record).collect())
            }),
        },
        Verb::Rules { what } => match what {
            RulesWhat::Check { file, apps } => {
                use guardwire::control::inspection::{load_apps, load_rules};
                load_apps(apps.as_deref())
                    .and_then(|a| load_rules(&file, &a))
                    .map(|r| println!("{}: ok ({} rules)", file.display(), r.len()))
            }
            RulesWhat::Push {
                file,
                cluster: Some(url),
                set,
                target,
            } => push_cluster(&file, &url, &set, &target),
            RulesWhat::Push {
                file,
                cluster: None,
                target,
                ..
            } => target.client().and_then(|c| {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| format!("{}: {e}", file.display()))?;
                let r = c
                    .push_rules(&text, &file.display().to_string())
                    .map_err(|e| e.to_string())?;
                println!(
                    "{}: {} rules installed (generation {})",
                    file.display(),
                    r.rules,
                    r.generation
                );
                Ok(())
            }),
            RulesWhat::History { target } => target.client().and_then(|c| {
                for r in c.rules_history().map_err(|e| e.to_string())? {
                    println!(
                        "generation {:<5} {:>4} rules  {}  by {:<14} from {}  {}",
                        r.generation,
                        r.rules,
                        humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.at)
                        ),
                        r.by,
                        r.origin,
                        &r.hash[..12.min(r.hash.len())]
                    );
                }
                Ok(())
            }),
            RulesWhat::Rollback { generation, target } => target.client().and_then(|c| {
                let r = c.rollback(generation).map_err(|e| e.to_string())?;
                println!(
                    "generation {generation} is in force again as generation {} ({} rules)",
                    r.generation, r.rules
                );
                Ok(())
            }),
        },
        Verb::Usage {
            window,
            workload,
            json,
            target,
        } => target.client().and_then(|c| {
            let u = c
                .usage(window, workload.as_deref())
                .map_err(|e| e.to_string())?;
            if json {
                println!("{}", serde_json::to_string(&u).map_err(|e| e.to_string())?);
            } else {
                print!("{}", stats::render_usage(&u));
            }
            Ok(())
        }),
        Verb::Classify { pcap, apps, json } => {
            classify::classify_pcap(&pcap, apps.as_deref()).map(|recs| {
                for r in &recs {
                    if json {
                        println!("{}", classify::json_line(r));
                    }
                }
                if !json {
                    print!("{}", stats::render_flows(&recs));
                }
            })
        }
        Verb::Controller(args) => args.options().and_then(guardwire::cluster::controller::run),
        Verb::Cluster { target, json } => target.client().and_then(|c| {
            let v: guardwire::cluster::agent::ClusterView = c
                .call::<(), _>(hyper::Method::GET, "/api/v1/cluster", None)
                .map_err(|e| e.to_string())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
                );
            } else {
                print_cluster(&v);
            }
            Ok(())
        }),
        Verb::Watchdog { pid, state_dir } => guardwire::control::watchdog::run(pid, &state_dir),
        Verb::Detach { workload, target } => target.client().and_then(|c| {
            let d = c.detach(&workload).map_err(|e| e.to_string())?;
            println!("detached {} ({:.1} ms)", d.workload, d.millis);
            if let Some(note) = &d.note {
                eprintln!("guardwire: {note}");
            }
            Ok(())
        }),
        Verb::Mode {
            workload,
            mode,
            target,
        } => target.client().and_then(|c| {
            let m = c.set_mode(&workload, mode).map_err(|e| e.to_string())?;
            println!("{}: {} -> {}", m.workload, m.from.name(), m.to.name());
            Ok(())
        }),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guardwire: {e}");
            ExitCode::from(2)
        }
    }
}
