//! The `guardwire` command: the daemon and the verbs that talk to it.

mod cli;

use clap::{Parser, Subcommand};
use cli::Target;
use cli::cluster::ControllerArgs;
use cli::log::LogFilter;
use cli::rules::RulesWhat;
use cli::workloads::AttachWhat;
use guardwire::vocab::SteeringMode;
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
        Verb::Run { config } => cli::daemon::run(&config),
        Verb::Check { config } => cli::daemon::check(&config),
        Verb::Stats { target, json } => cli::stats::stats(&target, json),
        Verb::Macs { target } => cli::stats::macs(&target),
        Verb::List { target, json } => cli::workloads::list(&target, json),
        Verb::Attach { what } => cli::workloads::attach(what),
        Verb::Flows { filter, target } => cli::log::flows(&filter, &target),
        Verb::Log {
            filter,
            dir,
            target,
        } => cli::log::log(&filter, dir.as_deref(), &target),
        Verb::Rules { what } => cli::rules::rules(what),
        Verb::Usage {
            window,
            workload,
            json,
            target,
        } => cli::stats::usage(window, workload.as_deref(), json, &target),
        Verb::Classify { pcap, apps, json } => {
            cli::classify::classify(&pcap, apps.as_deref(), json)
        }
        Verb::Controller(args) => cli::cluster::controller(args),
        Verb::Cluster { target, json } => cli::cluster::cluster(&target, json),
        Verb::Watchdog { pid, state_dir } => cli::daemon::watchdog(pid, &state_dir),
        Verb::Detach { workload, target } => cli::workloads::detach(&workload, &target),
        Verb::Mode {
            workload,
            mode,
            target,
        } => cli::workloads::mode(&workload, mode, &target),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guardwire: {e}");
            ExitCode::from(2)
        }
    }
}
