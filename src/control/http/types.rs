//! Requests and answers of the API, shared by the server and its clients (the
//! CLI, `guardwire-cni`, tests), so a renamed field breaks the build, not a
//! table at run time.

use crate::control::record::FlowRecord;
use crate::datapath::PortCountersSnapshot;
use crate::vocab::{OnFailure, SteeringMode};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use utoipa::{IntoParams, ToSchema};

/// Every error answer.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ApiError {
    /// What is wrong, for a person.
    pub error: String,
    /// The request field (or rule key) it is about, when there is one.
    #[serde(default)]
    pub field: Option<String>,
    /// 1-based line in submitted rule text, when the error has one.
    #[serde(default)]
    pub line: Option<usize>,
}

/// Who the caller is.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    /// "admin" or "viewer".
    pub role: String,
    /// "token:admin", "token:viewer", "unix:uid=0", "cert:<sha256 prefix>".
    pub subject: String,
}

/// This node.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct NodeInfo {
    /// Node name from the config.
    pub name: String,
    /// guardwire's version.
    pub version: String,
    /// Seconds since the datapath started.
    pub uptime_secs: u64,
    /// Datapath worker threads started.
    pub workers: usize,
    /// Generation of the rules in force.
    pub rules_generation: u64,
    /// Workloads wired.
    pub workloads: usize,
}

/// Liveness and readiness.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// "ok" when every worker runs and rules are loaded, else "degraded".
    pub status: String,
    /// Worker threads started.
    pub workers: usize,
    /// Worker threads still running.
    pub workers_alive: usize,
    /// Workers that panicked, with the panic's message (their workloads went
    /// to their `on_failure`).
    #[serde(default)]
    pub worker_failures: Vec<crate::datapath::WorkerFailure>,
    /// A rule set is in force (false: the default-allow before any rules).
    pub rules_loaded: bool,
}

/// A workload's addresses, as anti-spoofing knows them.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct IdentityView {
    /// MACs ("52:54:00:12:34:56"); empty: any.
    pub macs: Vec<String>,
    /// IP addresses; empty: any.
    #[schema(value_type = Vec<String>)]
    pub ips: Vec<IpAddr>,
    /// May act as a router or DHCP server for the others.
    pub router: bool,
}

/// Counters of a workload's two ports.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct WorkloadCounters {
    /// The port facing the workload (its rx is what the workload sends).
    pub workload_port: PortCountersSnapshot,
    /// The port facing the node network (its rx is what the workload receives).
    pub uplink_port: PortCountersSnapshot,
}

/// One workload.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Workload {
    /// Its name.
    pub name: String,
    /// "pod" or "vm".
    pub kind: String,
    /// Its steering mode.
    pub mode: SteeringMode,
    /// What happens to it when guardwire dies.
    pub on_failure: OnFailure,
    /// Interface in sec ns facing the workload.
    pub workload_port: String,
    /// Interface in sec ns facing the node network.
    pub uplink_port: String,
    /// Attached live (true) or wired by the config file (false).
    pub attached: bool,
    /// Its addresses.
    pub identity: IdentityView,
    /// Labels it was attached with (rules select it by these and by those
    /// of its `[workload.NAME]` table).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Its ports' counters.
    pub counters: WorkloadCounters,
}

/// What every attach may say about the workload.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachOptions {
    /// Workload name (default: the namespace's or device's name).
    #[serde(default)]
    pub name: Option<String>,
    /// Mode to start in (default: the node's default mode).
    #[serde(default)]
    pub mode: Option<SteeringMode>,
    /// What happens when guardwire dies (default: the node's default).
    #[serde(default)]
    pub on_failure: Option<OnFailure>,
    /// MACs the workload may send from, beyond those learned at attach.
    #[serde(default)]
    pub macs: Vec<String>,
    /// IP addresses the workload may send from; a VM's cannot be read at
    /// attach, so they must be given.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub ips: Vec<IpAddr>,
    /// It may send router advertisements, redirects and DHCP server answers
    /// (dropped from every other workload).
    #[serde(default)]
    pub router: bool,
    /// Labels that `label = "..."` rules select it by ("app=web"); from
    /// `attach --label` or, through the CNI plugin, the pod's namespace and name.
    #[serde(default)]
    pub labels: Vec<String>,
}

/// Attach a live pod: its CNI veth moves into sec ns.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachPod {
    /// The pod's network namespace (a name under /var/run/netns, or a path).
    pub netns: String,
    /// Its interface (default "eth0").
    #[serde(default = "eth0")]
    pub ifname: String,
    /// Name, mode, on_failure, addresses.
    #[serde(default)]
    pub options: AttachOptions,
}

fn eth0() -> String {
    "eth0".into()
}

/// Attach a VM by its tap, or by the veth between its qbr and br-int.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachVm {
    /// The tap (or with `hybrid`, the qbr end of the veth) in the host namespace.
    pub dev: String,
    /// Hybrid plug (the qbr <-> br-int veth) rather than the tap itself.
    #[serde(default)]
    pub hybrid: bool,
    /// Name, mode, on_failure, addresses.
    #[serde(default)]
    pub options: AttachOptions,
}

/// A workload attached.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Attached {
    /// Its name.
    pub workload: String,
    /// Its workload port in sec ns.
    pub workload_port: String,
    /// Its uplink port in sec ns.
    pub uplink_port: String,
    /// The device that took the migrated one's place on the host.
    pub host_dev: String,
    /// Its steering mode.
    pub mode: SteeringMode,
    /// How long the attach took.
    pub millis: f64,
}

/// A workload detached.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Detached {
    /// Its name.
    pub workload: String,
    /// How long the detach took.
    pub millis: f64,
    /// Said when the detach was done but something after it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Switch a workload's steering mode.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetMode {
    /// off, mirror or inline.
    pub mode: SteeringMode,
}

/// A steering mode switched.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ModeChanged {
    /// The workload.
    pub workload: String,
    /// Its mode before.
    pub from: SteeringMode,
    /// Its mode now.
    pub to: SteeringMode,
}

/// The rules in force.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RulesDocument {
    /// Generation in force.
    pub generation: u64,
    /// The rule text (empty: no rule set, everything allowed).
    pub text: String,
    /// SHA-256 of the text, hex.
    pub hash: String,
    /// Rules it holds.
    pub rules: usize,
    /// When it was put in force (RFC 3339); none for a config file's rules
    /// before any push.
    pub at: Option<String>,
    /// Who pushed it ("token:admin", "unix:uid=0", "config", "none").
    pub by: String,
    /// Where the text came from.
    pub origin: String,
}

/// Rule text to check or push.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RulesText {
    /// The rule file's text (TOML, see config/rules.toml).
    pub text: String,
    /// Where it came from, for history and error messages (default "api").
    #[serde(default)]
    pub origin: Option<String>,
}

/// One problem in rule text.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RuleProblem {
    /// 1-based line (0: unknown).
    pub line: usize,
    /// The key, e.g. `rule[2].action`, when known.
    pub field: Option<String>,
    /// What is wrong (the line and field are given beside it).
    pub message: String,
}

/// The result of checking rule text; nothing is applied.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Validation {
    /// The text would be accepted.
    pub ok: bool,
    /// Rules it holds (0 when not ok).
    pub rules: usize,
    /// What is wrong, each with its line.
    pub errors: Vec<RuleProblem>,
}

/// Roll back to an earlier generation (pushed again as a new one).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// The generation whose text to push again.
    pub generation: u64,
}

/// Which verdict records or flows.
#[derive(Clone, Debug, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Only this workload.
    pub workload: Option<String>,
    /// Only this action, detail or verdict ("deny", "shape", "would deny").
    pub action: Option<String>,
    /// Only this application or category.
    pub app: Option<String>,
    /// Only records updated since: unix ms, a duration ago ("10m"), or RFC 3339.
    pub since: Option<String>,
    /// Only this event: new, rejudged, update, end, suppressed.
    pub event: Option<String>,
    /// Text found in any field.
    pub q: Option<String>,
    /// At most this many (1..=500, default 100).
    pub limit: Option<usize>,
    /// Only records older than this sequence number (the `next_before` of the
    /// previous page).
    pub before: Option<u64>,
}

/// A verdict record with its place in the log.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct LogEntry {
    /// Sequence number: grows by one per record; the cursor of pages and streams
    /// (0 for live flows, which are not in the log).
    pub seq: u64,
    /// The record.
    #[serde(flatten)]
    pub record: FlowRecord,
}

/// A page of records, newest first.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct LogPage {
    /// The records.
    pub records: Vec<LogEntry>,
    /// Pass as `before` for the next (older) page; none when this was the last.
    pub next_before: Option<u64>,
}

/// Which usage windows.
#[derive(Clone, Debug, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Window size in seconds: 1, 10, 60 or 300 (default 10).
    pub window: Option<u64>,
    /// Only this workload.
    pub workload: Option<String>,
}

/// One learned MAC.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct MacEntry {
    /// The MAC.
    pub mac: String,
    /// Port id it was learned on.
    pub port: u32,
    /// Seconds since it was last seen.
    pub age_secs: u64,
}

/// Largest page of records.
pub const MAX_PAGE: usize = 500;
