//! `attach`, `detach`, `list` and `mode`: workloads steered through the
//! switch and back, listed, and moved between steering modes.

use super::Target;
use clap::Subcommand;
use guardwire::control::http::types::{AttachOptions, AttachPod, AttachVm, Attached};
use guardwire::vocab::{OnFailure, SteeringMode};

#[derive(Subcommand)]
pub enum AttachWhat {
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
pub struct AttachOpts {
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

/// `guardwire attach pod|vm`: the daemon steers the workload through the
/// switch; one line says which ports it got.
pub fn attach(what: AttachWhat) -> Result<(), String> {
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

/// `guardwire detach`: the workload put back as it was; a note from the
/// daemon, if any, goes to stderr.
pub fn detach(workload: &str, target: &Target) -> Result<(), String> {
    target.client().and_then(|c| {
        let d = c.detach(workload).map_err(|e| e.to_string())?;
        println!("detached {} ({:.1} ms)", d.workload, d.millis);
        if let Some(note) = &d.note {
            eprintln!("guardwire: {note}");
        }
        Ok(())
    })
}

/// `guardwire list`: the workloads, as a table or JSON.
pub fn list(target: &Target, json: bool) -> Result<(), String> {
    target.client().and_then(|c| {
        let list = c.workloads().map_err(|e| e.to_string())?;
        if json {
            println!(
                "{}",
                serde_json::to_string(&list).map_err(|e| e.to_string())?
            );
        } else {
            print!("{}", guardwire::control::stats::render_workloads(&list));
        }
        Ok(())
    })
}

/// `guardwire mode`: the workload's steering mode, from and to.
pub fn mode(workload: &str, mode: SteeringMode, target: &Target) -> Result<(), String> {
    target.client().and_then(|c| {
        let m = c.set_mode(workload, mode).map_err(|e| e.to_string())?;
        println!("{}: {} -> {}", m.workload, m.from.name(), m.to.name());
        Ok(())
    })
}
