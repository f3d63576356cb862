//! The node's TOML configuration. Unknown keys, wrong types and inconsistent values
//! are refused with the file, line and key named.

use crate::pipeline::flow::Timeouts;
use crate::pipeline::{EvasionPolicy, FragmentPolicy, MalformedPolicy};
use crate::port::FaultConfig;
use crate::vocab::{OnFailure, SteeringMode};
use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Where the control socket lives unless the config says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/guardwire/guardwire.sock";

/// The whole configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node.
    pub node: NodeConfig,
    /// Datapath tunables.
    #[serde(default)]
    pub datapath: DatapathConfig,
    /// The inspection pipeline.
    #[serde(default)]
    pub inspect: InspectConfig,
    /// The management API (Unix socket always; TCP when `listen` is set).
    #[serde(default)]
    pub api: ApiConfig,
    /// Workloads wired into sec ns at start.
    #[serde(default, rename = "workload")]
    pub workloads: Vec<WorkloadConfig>,
    /// The cluster: rules from the controller through etcd (none: this node
    /// takes rules only from its own API).
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]` (docs/cluster.md)
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// etcd client URLs ("https://10.98.1.1:2379").
    pub endpoints: Spanned<Vec<String>>,
    /// PEM CA certificate(s) etcd's server certificate is checked against
    /// (needed for https endpoints).
    pub ca: Option<PathBuf>,
    /// PEM client certificate for etcd.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// This node's labels; rule sets select nodes by them.
    pub labels: Option<Spanned<Vec<String>>>,
    /// How the controller reaches this node's API ("http://10.98.1.2:7443").
    pub api_url: Option<String>,
    /// TTL of the lease the node's status lives on.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl_secs: u64,
    /// Status refresh when nothing changes.
    #[serde(default = "default_status_secs")]
    pub status_secs: u64,
}

fn default_lease_ttl() -> u64 {
    10
}

fn default_status_secs() -> u64 {
    30
}

/// `[node]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Node name, for logs and stats.
    pub name: String,
    /// Unix socket the CLI talks to.
    #[serde(default = "default_socket")]
    pub control_socket: PathBuf,
    /// Turn IPv4 forwarding off in sec ns and IPv6 off on every port.
    #[serde(default = "yes")]
    pub sec_ns_hygiene: bool,
    /// Where guardwire keeps what must survive a restart (steering modes).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The host's network namespace, where CNIs put the host ends of pod veths.
    #[serde(default = "default_host_netns")]
    pub host_netns: String,
    /// Mode of a workload attached without one.
    #[serde(default)]
    pub default_mode: SteeringMode,
    /// on_failure of a workload attached without one.
    #[serde(default)]
    pub default_on_failure: OnFailure,
}

fn default_host_netns() -> String {
    "/proc/1/ns/net".into()
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/guardwire")
}

fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET)
}
fn yes() -> bool {
    true
}

/// `[datapath]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatapathConfig {
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Frames per burst.
    pub batch: usize,
    /// RX ring slots per packet port; at least `batch`.
    pub ring_frames: usize,
    /// Bytes per RX ring slot (2048..=69632): a frame that does not fit is
    /// read from the socket whole, never cut.
    pub slot_bytes: usize,
    /// Seconds after which an unseen MAC is forgotten.
    pub mac_age_secs: u64,
    /// MACs one workload port may hold.
    pub mac_limit: u32,
    /// What to do with frames that do not parse: "drop" or "pass".
    pub malformed: MalformedPolicy,
    /// Microseconds a worker keeps polling after its last frame before sleeping.
    pub spin_us: u64,
    /// The kernel fast path: settled flows forwarded by the kernel (a tc
    /// program and a socket filter), still counted and re-judged by guardwire.
    /// Off: every frame of every flow through guardwire. A workload's rules
    /// can turn it off for that workload (`[workload.NAME] fast_path = false`).
    pub fast_path: bool,
}

impl Default for DatapathConfig {
    fn default() -> Self {
        DatapathConfig {
            workers: 0,
            batch: 64,
            ring_frames: 256,
            slot_bytes: crate::port::RING_FRAME_SIZE,
            mac_age_secs: 300,
            mac_limit: 8,
            malformed: MalformedPolicy::Drop,
            spin_us: 100,
            fast_path: true,
        }
    }
}

/// `[inspect]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InspectConfig {
    /// Inspect flows (flow table, firewall, names, limits, log); off leaves
    /// validation and switching only.
    pub enabled: bool,
    /// Firewall rules file; none: everything allowed. `guardwire rules push`
    /// replaces the running rules (and writes the pushed file to state_dir).
    pub rules: Option<PathBuf>,
    /// Applications file extending the built-in catalogue.
    pub apps: Option<PathBuf>,
    /// Drop frames from a workload whose source MAC/IP is not its own.
    pub anti_spoofing: bool,
    /// "pass" (judge) or "drop" IP fragments.
    pub fragments: FragmentPolicy,
    /// "first-wins" or "drop": a TCP stream that rewrites bytes already seen,
    /// or whose request or hello does not end within the window.
    pub evasion: EvasionPolicy,
    /// Most MiB the application probes hold while putting TCP streams in
    /// order (every workload gets a fair share).
    pub reassembly_mb: usize,
    /// Most flows held; more evict the least recently seen.
    pub flow_capacity: usize,
    /// Most flows one workload may hold; 0: an even share when the table is full.
    pub flow_quota: usize,
    /// Idle timeouts, seconds.
    pub timeouts: Timeouts,
    /// Most MiB of shaped frames one worker holds.
    pub shape_queue_mb: usize,
    /// Directory of the verdict log's JSON lines; default `<state_dir>/log`.
    pub log_dir: Option<PathBuf>,
    /// Records kept in memory for `guardwire log`.
    pub log_ring: usize,
    /// Rotate the log file at this many MiB.
    pub log_rotate_mb: u64,
    /// Rotated files kept.
    pub log_keep: usize,
    /// Seconds between update records of a live flow whose counters moved.
    pub log_update_secs: u64,
    /// Verdict records per second one workload may add (memory and files);
    /// more are left out and counted in one "suppressed" record per second.
    /// 0: no limit.
    pub log_records_per_sec: u64,
    /// Records one workload may add at once: its budget saves up to this many
    /// (at least `log_records_per_sec`).
    pub log_burst: u64,
    /// MiB the verdict log leaves free on its filesystem for the node's state
    /// (rules, steering, intent records); 0: no check.
    pub log_disk_reserve_mb: u64,
}

impl Default for InspectConfig {
    fn default() -> Self {
        InspectConfig {
            enabled: true,
            rules: None,
            apps: None,
            anti_spoofing: true,
            fragments: FragmentPolicy::Pass,
            evasion: EvasionPolicy::FirstWins,
            reassembly_mb: 64,
            flow_capacity: 262_144,
            flow_quota: 0,
            timeouts: Timeouts::default(),
            shape_queue_mb: 32,
            log_dir: None,
            log_ring: 10_000,
            log_rotate_mb: 64,
            log_keep: 5,
            log_update_secs: 10,
            log_records_per_sec: 200,
            log_burst: 1000,
            log_disk_reserve_mb: 64,
        }
    }
}

/// `[api]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// TCP management address in sec ns (the management link towards the
    /// controller), e.g. "10.98.0.2:7443"; none: the Unix socket only.
    pub listen: Option<std::net::SocketAddr>,
    /// Only these source prefixes may connect over TCP (empty: any); others
    /// are closed before a byte is read.
    pub allow_from: Vec<Spanned<String>>,
    /// PEM certificate chain: serve TLS on `listen`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: a client certificate they sign gets the admin role
    /// (the controller's); clients without one still use tokens.
    pub client_ca: Option<PathBuf>,
    /// File holding the admin bearer token; default `<state_dir>/api/admin.token`,
    /// generated (mode 0600) at first start.
    pub admin_token_file: Option<PathBuf>,
    /// File holding the viewer (read-only) token; default
    /// `<state_dir>/api/viewer.token`, generated likewise.
    pub viewer_token_file: Option<PathBuf>,
    /// Group allowed on the Unix socket (mode 0660); none: root only (0600).
    pub socket_group: Option<String>,
    /// Requests per second one TCP client (source address) may make.
    pub rate_per_sec: u32,
    /// Requests a TCP client may make in a burst above `rate_per_sec`.
    pub burst: u32,
    /// Largest request body, KiB (larger: 413).
    pub max_body_kb: usize,
    /// Connections served at once per listener; more wait in the kernel's backlog.
    pub max_connections: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: None,
            allow_from: Vec::new(),
            tls_cert: None,
            tls_key: None,
            client_ca: None,
            admin_token_file: None,
            viewer_token_file: None,
            socket_group: None,
            rate_per_sec: 50,
            burst: 100,
            max_body_kb: 1024,
            max_connections: 2048,
        }
    }
}

/// What a workload is.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// A pod: a netns whose eth0 is a CNI-made veth.
    Pod,
    /// A VM on a tap.
    Vm,
}

impl WorkloadKind {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Pod => "pod",
            WorkloadKind::Vm => "vm",
        }
    }
}

/// `[[workload]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadConfig {
    /// Unique name.
    pub name: Spanned<String>,
    /// `pod` or `vm`.
    pub kind: WorkloadKind,
    /// Interface in sec ns facing the workload.
    pub workload_port: Spanned<String>,
    /// Interface in sec ns facing the node network.
    pub uplink_port: Spanned<String>,
    /// Steering mode at first start: "inline" (default), "mirror" or "off". A mode
    /// changed later with `guardwire mode` is kept across restarts and wins.
    #[serde(default)]
    pub mode: SteeringMode,
    /// When guardwire dies: "open" (the watchdog hands the workload to the
    /// kernel path) or "closed" (it stays cut off until guardwire is back).
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Record both ports' traffic to pcap files with this prefix (debugging).
    #[serde(default)]
    pub pcap: Option<PathBuf>,
    /// Damage frames received on the workload port (tests only).
    #[serde(default)]
    pub fault: Option<FaultConfig>,
    /// The workload's MACs, for anti-spoofing (none: any, within the MAC limit).
    #[serde(default)]
    pub macs: Vec<Spanned<String>>,
    /// The workload's IP addresses, for anti-spoofing (none: any).
    #[serde(default)]
    pub ips: Vec<Spanned<std::net::IpAddr>>,
    /// The workload may act as a router or DHCP server for the others (send
    /// router advertisements, redirects, DHCP/DHCPv6 server answers); from any
    /// other workload they are dropped.
    #[serde(default)]
    pub router: bool,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, or keys/types that do not fit.
    #[error("{path}: {msg}")]
    Parse {
        /// The file.
        path: String,
        /// What toml said, with line and column.
        msg: String,
    },
    /// Valid TOML whose values do not fit together.
    #[error("{path}:{line}: {key}: {msg}")]
    Invalid {
        /// The file.
        path: String,
        /// 1-based line of the offending value (0: whole file).
        line: usize,
        /// The key, e.g. `workload[1].uplink_port`.
        key: String,
        /// What is wrong.
        msg: String,
    },
}

/// Is `s` usable as a Linux interface name?
pub fn valid_ifname(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("interface name is empty".into());
    }
    if s.len() >= libc::IFNAMSIZ {
        return Err(format!(
            "interface name {s:?} is {} bytes; Linux allows at most {}",
            s.len(),
            libc::IFNAMSIZ - 1
        ));
    }
    if s == "." || s == ".." || s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        return Err(format!(
            "interface name {s:?} contains a character Linux refuses"
        ));
    }
    Ok(())
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_string(),
            msg: e.to_string().trim_end().to_string(),
        })?;
        cfg.validate(text, path)?;
        Ok(cfg)
    }

    fn validate(&self, text: &str, path: &str) -> Result<(), ConfigError> {
        let line_of = |span: std::ops::Range<usize>| {
            text[..span.start.min(text.len())].matches('\n').count() + 1
        };
        let key_line = |key: &str| {
            text.lines()
                .position(|l| l.trim_start().starts_with(key))
                .map(|i| i + 1)
                .unwrap_or(0)
        };
        let bad = |line: usize, key: String, msg: String| ConfigError::Invalid {
            path: path.to_string(),
            line,
            key,
            msg,
        };
        if let Some(c) = &self.cluster {
            let at = |s: std::ops::Range<usize>| line_of(s);
            let eps = c.endpoints.get_ref();
            if eps.is_empty() {
                return Err(bad(
                    at(c.endpoints.span()),
                    "cluster.endpoints".into(),
                    "give at least one etcd URL".into(),
                ));
            }
            for (n, e) in eps.iter().enumerate() {
                if !(e.starts_with("http://") || e.starts_with("https://")) {
                    return Err(bad(
                        at(c.endpoints.span()),
                        format!("cluster.endpoints[{n}]"),
                        format!("{e:?} is not an http:// or https:// URL"),
                    ));
                }
                if e.starts_with("https://") && c.ca.is_none() {
                    return Err(bad(
                        key_line("endpoints"),
                        "cluster.ca".into(),
                        "https endpoints need the CA that signed etcd's certificate".into(),
                    ));
                }
            }
            if c.cert.is_some() != c.key.is_some() {
                return Err(bad(
                    key_line(if c.cert.is_some() { "cert" } else { "key" }),
                    "cluster.cert".into(),
                    "give both cert and key, or neither".into(),
                ));
            }
            if let Some(l) = &c.labels
                && l.get_ref().iter().any(|l| l.is_empty())
            {
                return Err(bad(
                    at(l.span()),
                    "cluster.labels".into(),
                    "empty label".into(),
                ));
            }
            for (key, v) in [
                ("lease_ttl_secs", c.lease_ttl_secs),
                ("status_secs", c.status_secs),
            ] {
                if !(2..=3600).contains(&v) {
                    return Err(bad(
                        key_line(key),
                        format!("cluster.{key}"),
                        "must be 2..=3600".into(),
                    ));
                }
            }
        }
        let d = &self.datapath;
        if !(1..=1024).contains(&d.batch) {
            return Err(bad(
                key_line("batch"),
                "datapath.batch".into(),
                "must be 1..=1024".into(),
            ));
        }
        if !(1..=65_535).contains(&d.ring_frames) {
            return Err(bad(
                key_line("ring_frames"),
                "datapath.ring_frames".into(),
                "must be 1..=65535".into(),
            ));
        }
        if d.ring_frames < d.batch {
            return Err(bad(
                key_line("ring_frames"),
                "datapath.ring_frames".into(),
                format!(
                    "must be at least batch ({}): {} slots cannot hold one burst",
                    d.batch, d.ring_frames
                ),
            ));
        }
        let slots = crate::port::RING_FRAME_SIZE..=crate::port::RING_FRAME_SIZE_MAX;
        if !slots.contains(&d.slot_bytes) {
            return Err(bad(
                key_line("slot_bytes"),
                "datapath.slot_bytes".into(),
                format!("must be {}..={}", slots.start(), slots.end()),
            ));
        }
        if d.workers > 256 {
            return Err(bad(
                key_line("workers"),
                "datapath.workers".into(),
                "must be 0..=256".into(),
            ));
        }
        if d.spin_us > 100_000 {
            return Err(bad(
                key_line("spin_us"),
                "datapath.spin_us".into(),
                "must be 0..=100000".into(),
            ));
        }
        if d.mac_limit == 0 {
            return Err(bad(
                key_line("mac_limit"),
                "datapath.mac_limit".into(),
                "must be at least 1".into(),
            ));
        }
        let i = &self.inspect;
        for (key, v, range) in [
            ("mac_age_secs", d.mac_age_secs as usize, 1..=86_400),
            (
                "flow_capacity",
                i.flow_capacity,
                crate::pipeline::flow::SHARDS..=16 << 20,
            ),
            ("flow_quota", i.flow_quota, 0..=i.flow_capacity),
            ("reassembly_mb", i.reassembly_mb, 1..=16_384),
            ("log_ring", i.log_ring, 0..=1_000_000),
            ("shape_queue_mb", i.shape_queue_mb, 1..=4096),
            ("log_rotate_mb", i.log_rotate_mb as usize, 1..=4096),
            ("log_keep", i.log_keep, 0..=100),
            ("log_update_secs", i.log_update_secs as usize, 1..=3600),
            (
                "log_disk_reserve_mb",
                i.log_disk_reserve_mb.min(usize::MAX as u64) as usize,
                0..=1 << 20,
            ),
            (
                "log_records_per_sec",
                i.log_records_per_sec.min(usize::MAX as u64) as usize,
                0..=1_000_000,
            ),
            (
                "log_burst",
                i.log_burst.min(usize::MAX as u64) as usize,
                1..=1_000_000,
            ),
        ] {
            if !range.contains(&v) {
                let section = if key == "mac_age_secs" {
                    "datapath"
                } else {
                    "inspect"
                };
                return Err(bad(
                    key_line(key),
                    format!("{section}.{key}"),
                    format!("must be {}..={}", range.start(), range.end()),
                ));
            }
        }
        if i.log_burst < i.log_records_per_sec {
            // Records come once a second, all at once: a smaller burst caps the rate.
            return Err(bad(
                key_line("log_burst"),
                "inspect.log_burst".into(),
                format!(
                    "must be at least log_records_per_sec ({}): records come once a second, \
                     so a smaller burst would cap the rate at log_burst",
                    i.log_records_per_sec
                ),
            ));
        }
        let a = &self.api;
        for (i, p) in a.allow_from.iter().enumerate() {
            p.get_ref()
                .parse::<crate::pipeline::firewall::Prefix>()
                .map_err(|m| bad(line_of(p.span()), format!("api.allow_from[{i}]"), m))?;
        }
        if a.tls_cert.is_some() != a.tls_key.is_some() {
            return Err(bad(
                key_line("tls_"),
                "api.tls_cert".into(),
                "tls_cert and tls_key go together".into(),
            ));
        }
        if a.client_ca.is_some() && a.tls_cert.is_none() {
            return Err(bad(
                key_line("client_ca"),
                "api.client_ca".into(),
                "client certificates need TLS (tls_cert, tls_key)".into(),
            ));
        }
        for (key, v, range) in [
            ("rate_per_sec", a.rate_per_sec as usize, 1..=100_000),
            ("burst", a.burst as usize, 1..=100_000),
            ("max_body_kb", a.max_body_kb, 1..=65_536),
            ("max_connections", a.max_connections, 1..=65_536),
        ] {
            if !range.contains(&v) {
                return Err(bad(
                    key_line(key),
                    format!("api.{key}"),
                    format!("must be {}..={}", range.start(), range.end()),
                ));
            }
        }
        if self.node.name.trim().is_empty() {
            return Err(bad(
                key_line("name"),
                "node.name".into(),
                "must not be empty".into(),
            ));
        }
        let mut names = HashSet::new();
        let mut ports = HashSet::new();
        for (i, w) in self.workloads.iter().enumerate() {
            crate::steer::attach::check_workload_name(w.name.get_ref())
                .map_err(|m| bad(line_of(w.name.span()), format!("workload[{i}].name"), m))?;
            if !names.insert(w.name.get_ref().as_str()) {
                return Err(bad(
                    line_of(w.name.span()),
                    format!("workload[{i}].name"),
                    format!("workload {:?} is named twice", w.name.get_ref()),
                ));
            }
            for (j, m) in w.macs.iter().enumerate() {
                crate::vocab::parse_mac(m.get_ref())
                    .map_err(|e| bad(line_of(m.span()), format!("workload[{i}].macs[{j}]"), e))?;
            }
            for (key, p) in [
                ("workload_port", &w.workload_port),
                ("uplink_port", &w.uplink_port),
            ] {
                let k = format!("workload[{i}].{key}");
                valid_ifname(p.get_ref()).map_err(|m| bad(line_of(p.span()), k.clone(), m))?;
                if !ports.insert(p.get_ref().as_str()) {
                    return Err(bad(
                        line_of(p.span()),
                        k,
                        format!("port {:?} is used twice", p.get_ref()),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The identity (anti-spoofing) a config workload was given.
    pub fn identity(w: &WorkloadConfig) -> crate::pipeline::spoof::Identity {
        crate::pipeline::spoof::Identity {
            macs: w
                .macs
                .iter()
                .filter_map(|m| crate::vocab::parse_mac(m.get_ref()).ok())
                .collect(),
            ips: w.ips.iter().map(|i| *i.get_ref()).collect(),
            router: w.router,
        }
    }

    /// Worker threads to start: the configured number, or one per core.
    pub fn workers(&self) -> usize {
        match self.datapath.workers {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            n => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[node]
name = "n1"

[datapath]
workers = 2

[[workload]]
name = "pod1"
kind = "pod"
workload_port = "wp-pod1"
uplink_port = "up-pod1"
"#;

    #[test]
    fn good_config() {
        let c = Config::parse(GOOD, "t.toml").unwrap();
        assert_eq!(c.workloads.len(), 1);
        assert_eq!(c.datapath.batch, 64);
        assert_eq!(c.workers(), 2);
        assert_eq!(c.node.control_socket, PathBuf::from(DEFAULT_SOCKET));
    }

    #[test]
    fn unknown_key_names_line() {
        let t = GOOD.replace("workers = 2", "workerz = 2");
        let e = Config::parse(&t, "t.toml").unwrap_err().to_string();
        assert!(e.contains("line 6"), "{e}");
        assert!(e.contains("workerz"), "{e}");
    }

    #[test]
    fn duplicate_port_names_line_and_key() {
        let t = GOOD.replace("up-pod1", "wp-pod1");
        let e = Config::parse(&t, "t.toml").unwrap_err().to_string();
        assert_eq!(
            e,
            "t.toml:12: workload[0].uplink_port: port \"wp-pod1\" is used twice"
        );
    }

    #[test]
    fn long_interface_name_refused() {
        let t = GOOD.replace("up-pod1", "a-name-far-too-long");
        let e = Config::parse(&t, "t.toml").unwrap_err().to_string();
        assert!(
            e.starts_with("t.toml:12: workload[0].uplink_port: interface name"),
            "{e}"
        );
    }

    #[test]
    fn wrong_type_refused() {
        let t = GOOD.replace("workers = 2", "workers = \"two\"");
        let e = Config::parse(&t, "t.toml").unwrap_err().to_string();
        assert!(e.contains("line 6"), "{e}");
    }

    #[test]
    fn names_attach_refuses_are_refused_here_too() {
        for name in [".", "..", "-x", "a/b", "thirteen-char", ""] {
            let t = GOOD.replace("name = \"pod1\"", &format!("name = {name:?}"));
            let e = Config::parse(&t, "t.toml").unwrap_err().to_string();
            assert!(e.contains("workload[0].name"), "{name:?}: {e}");
            assert!(crate::steer::attach::port_names(name).is_err(), "{name:?}");
        }
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        for (section, kv, key) in [
            ("[inspect]", "flow_capacity = 1", "inspect.flow_capacity"),
            (
                "[inspect]",
                "flow_capacity = 999999999",
                "inspect.flow_capacity",
            ),
            ("[inspect]", "log_ring = 50000000", "inspect.log_ring"),
            ("[inspect]", "shape_queue_mb = 0", "inspect.shape_queue_mb"),
            (
                "[inspect]",
                "log_records_per_sec = 2000000",
                "inspect.log_records_per_sec",
            ),
            ("[inspect]", "log_burst = 0", "inspect.log_burst"),
            (
                "[inspect]",
                "log_records_per_sec = 500\nlog_burst = 100",
                "inspect.log_burst",
            ),
            ("[datapath]", "mac_age_secs = 0", "datapath.mac_age_secs"),
            ("[datapath]", "ring_frames = 16", "datapath.ring_frames"),
            ("[datapath]", "slot_bytes = 100", "datapath.slot_bytes"),
        ] {
            let t = if section == "[datapath]" {
                GOOD.replace("workers = 2", &format!("workers = 2\n{kv}"))
            } else {
                // [inspect] must come before the [[workload]] tables.
                GOOD.replace("[[workload]]", &format!("{section}\n{kv}\n\n[[workload]]"))
            };
            let e = Config::parse(&t, "t.toml").unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("must be"), "{kv}: {e}");
        }
    }

    #[test]
    fn log_budget_defaults_and_keys() {
        let c = Config::parse(GOOD, "t.toml").unwrap();
        assert_eq!(
            (c.inspect.log_records_per_sec, c.inspect.log_burst),
            (200, 1000)
        );
        let t = GOOD.replace(
            "[[workload]]",
            "[inspect]\nlog_records_per_sec = 0\nlog_burst = 1\n\n[[workload]]",
        );
        let c = Config::parse(&t, "t.toml").unwrap();
        assert_eq!((c.inspect.log_records_per_sec, c.inspect.log_burst), (0, 1));
        let t = GOOD.replace(
            "[[workload]]",
            "[inspect]\nlog_records_per_sec = 500\nlog_burst = 100\n\n[[workload]]",
        );
        let e = Config::parse(&t, "t.toml").unwrap_err().to_string();
        assert!(
            e.starts_with(
                "t.toml:10: inspect.log_burst: must be at least log_records_per_sec (500)"
            ),
            "{e}"
        );
    }

    #[test]
    fn bad_kind_refused() {
        let t = GOOD.replace("kind = \"pod\"", "kind = \"container\"");
        let e = Config::parse(&t, "t.toml").unwrap_err().to_string();
        assert!(e.contains("line 10"), "{e}");
    }
}
