//! The `guardwire` command: the daemon and the verbs that talk to it.

use clap::{Parser, Subcommand};
use guardwire::control::api::{self, AttachSpec, Request};
use guardwire::control::config::{Config, DEFAULT_SOCKET};
use guardwire::control::record::{self, Filter, FlowRecord};
use guardwire::control::{classify, daemon, stats};
use guardwire::datapath::StatsSnapshot;
use guardwire::steer::{OnFailure, SteeringMode};
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
    #[arg(long, conflicts_with = "config")]
    socket: Option<PathBuf>,
    /// Take the control socket from this config file.
    #[arg(long)]
    config: Option<PathBuf>,
}

impl Target {
    fn socket(&self) -> Result<PathBuf, String> {
        if let Some(s) = &self.socket {
            return Ok(s.clone());
        }
        if let Some(c) = &self.config {
            return Config::load(c)
                .map(|c| c.node.control_socket)
                .map_err(|e| e.to_string());
        }
        Ok(PathBuf::from(DEFAULT_SOCKET))
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
    },
    /// Replace the running daemon's rules with this file.
    Push {
        /// The rule file (TOML).
        file: PathBuf,
        #[command(flatten)]
        target: Target,
    },
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
    fn filter(&self) -> Result<Filter, String> {
        let since = match &self.since {
            Some(s) => Some(record::parse_time(s, record::log::now_ms())?),
            None => None,
        };
        Ok(Filter {
            workload: self.workload.clone(),
            action: self.action.clone(),
            app: self.app.clone(),
            since,
            until: None,
            event: self.event.clone(),
        })
    }

    fn print(&self, v: serde_json::Value) -> Result<(), String> {
        let recs: Vec<FlowRecord> = serde_json::from_value(v).map_err(|e| e.to_string())?;
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
    #[arg(long = "mac", value_parser = guardwire::switch::parse_mac)]
    macs: Vec<guardwire::switch::Mac>,
    /// An IP address the workload may send from (repeatable).
    #[arg(long = "ip")]
    ips: Vec<std::net::IpAddr>,
    #[command(flatten)]
    target: Target,
}

impl AttachOpts {
    fn spec(self) -> (AttachSpec, Target) {
        let spec = AttachSpec {
            name: self.name,
            mode: self.mode,
            on_failure: self.on_failure,
            identity: guardwire::pipeline::spoof::Identity {
                macs: self.macs,
                ips: self.ips,
            },
        };
        (spec, self.target)
    }
}

fn print_attached(v: &serde_json::Value) {
    println!(
        "attached {}: host device {} -> workload port {}, uplink port {} ({}, {:.1} ms)",
        v["workload"].as_str().unwrap_or("?"),
        v["host_dev"].as_str().unwrap_or("?"),
        v["workload_port"].as_str().unwrap_or("?"),
        v["uplink_port"].as_str().unwrap_or("?"),
        v["mode"].as_str().unwrap_or("?"),
        v["millis"].as_f64().unwrap_or(0.0)
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
        Verb::Stats { target, json } => target.socket().and_then(|s| {
            let v = api::call(&s, &Request::Stats)?;
            if json {
                println!("{v}");
            } else {
                let snap: StatsSnapshot = serde_json::from_value(v).map_err(|e| e.to_string())?;
                print!("{}", stats::render(&snap));
            }
            Ok(())
        }),
        Verb::Macs { target } => target.socket().and_then(|s| {
            let v = api::call(&s, &Request::Macs)?;
            for e in v.as_array().into_iter().flatten() {
                println!(
                    "{}  port {}  age {}s",
                    e["mac"].as_str().unwrap_or("?"),
                    e["port"],
                    e["age_secs"]
                );
            }
            Ok(())
        }),
        Verb::List { target, json } => target.socket().and_then(|s| {
            let v = api::call(&s, &Request::List)?;
            if json {
                println!("{v}");
                return Ok(());
            }
            println!(
                "{:<12} {:<4} {:<7} {:<15} {:<15} {:>12} {:>12} {:>12}",
                "workload",
                "kind",
                "mode",
                "workload_port",
                "uplink_port",
                "wl_rx",
                "up_rx",
                "mirrored"
            );
            for w in v.as_array().into_iter().flatten() {
                let n = |k: &str, f: &str| w[k][f].as_u64().unwrap_or(0);
                println!(
                    "{:<12} {:<4} {:<7} {:<15} {:<15} {:>12} {:>12} {:>12}",
                    w["name"].as_str().unwrap_or("?"),
                    w["kind"].as_str().unwrap_or("?"),
                    w["mode"].as_str().unwrap_or("?"),
                    w["workload_port"].as_str().unwrap_or("?"),
                    w["uplink_port"].as_str().unwrap_or("?"),
                    n("workload_port_counters", "rx_frames"),
                    n("uplink_port_counters", "rx_frames"),
                    n("workload_port_counters", "rx_mirrored")
                        + n("uplink_port_counters", "rx_mirrored"),
                );
            }
            Ok(())
        }),
        Verb::Attach { what } => {
            let (req, target) = match what {
                AttachWhat::Pod {
                    netns,
                    ifname,
                    opts,
                } => {
                    let (spec, target) = opts.spec();
                    (
                        Request::AttachPod {
                            netns,
                            ifname,
                            spec,
                        },
                        target,
                    )
                }
                AttachWhat::Vm { tap, hybrid, opts } => {
                    let (dev, hybrid) = match (tap, hybrid) {
                        (Some(t), _) => (t, false),
                        (None, Some(h)) => (h, true),
                        (None, None) => unreachable!("clap requires --tap or --hybrid"),
                    };
                    let (spec, target) = opts.spec();
                    (Request::AttachVm { dev, hybrid, spec }, target)
                }
            };
            target.socket().and_then(|s| {
                print_attached(&api::call(&s, &req)?);
                Ok(())
            })
        }
        Verb::Flows { filter, target } => target.socket().and_then(|s| {
            let req = Request::Flows {
                filter: filter.filter()?,
                limit: filter.limit,
            };
            filter.print(api::call(&s, &req)?)
        }),
        Verb::Log {
            filter,
            dir,
            target,
        } => {
            let f = filter.filter();
            f.and_then(|f| match dir {
                Some(d) => {
                    let recs = record::read_dir(&d, &f, filter.limit)
                        .map_err(|e| format!("{}: {e}", d.display()))?;
                    filter.print(serde_json::to_value(recs).map_err(|e| e.to_string())?)
                }
                None => target.socket().and_then(|s| {
                    let req = Request::Log {
                        filter: f,
                        limit: filter.limit,
                    };
                    filter.print(api::call(&s, &req)?)
                }),
            })
        }
        Verb::Rules { what } => match what {
            RulesWhat::Check { file } => guardwire::control::inspection::load_rules(&file)
                .map(|r| println!("{}: ok ({} rules)", file.display(), r.len())),
            RulesWhat::Push { file, target } => target.socket().and_then(|s| {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| format!("{}: {e}", file.display()))?;
                let v = api::call(
                    &s,
                    &Request::Rules {
                        text,
                        origin: file.display().to_string(),
                    },
                )?;
                println!(
                    "{}: {} rules installed (generation {})",
                    file.display(),
                    v["rules"],
                    v["generation"]
                );
                Ok(())
            }),
        },
        Verb::Usage {
            window,
            workload,
            json,
            target,
        } => target.socket().and_then(|s| {
            let v = api::call(&s, &Request::Usage { window, workload })?;
            if json {
                println!("{v}");
            } else {
                print!("{}", stats::render_usage(&v));
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
        Verb::Watchdog { pid, state_dir } => guardwire::control::watchdog::run(pid, &state_dir),
        Verb::Detach { workload, target } => target.socket().and_then(|s| {
            let v = api::call(&s, &Request::Detach { workload })?;
            println!(
                "detached {} ({:.1} ms)",
                v["workload"].as_str().unwrap_or("?"),
                v["millis"].as_f64().unwrap_or(0.0)
            );
            Ok(())
        }),
        Verb::Mode {
            workload,
            mode,
            target,
        } => target.socket().and_then(|s| {
            let v = api::call(
                &s,
                &Request::Mode {
                    workload: workload.clone(),
                    mode,
                },
            )?;
            println!(
                "{workload}: {} -> {}",
                v["from"].as_str().unwrap_or("?"),
                mode.name()
            );
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
