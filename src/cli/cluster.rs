//! `controller` and `cluster`: the cluster's controller run, and this node's
//! link to the cluster shown.

use super::Target;
use guardwire::cluster::agent::ClusterView;
use std::path::PathBuf;

/// `guardwire controller`
#[derive(clap::Args)]
pub struct ControllerArgs {
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

/// `guardwire controller`: runs until it is stopped.
pub fn controller(args: ControllerArgs) -> Result<(), String> {
    args.options().and_then(guardwire::cluster::controller::run)
}

/// `guardwire cluster`: the node's view of the cluster, as text or JSON.
pub fn cluster(target: &Target, json: bool) -> Result<(), String> {
    target.client().and_then(|c| {
        let v: ClusterView = c
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
    })
}

fn print_cluster(v: &ClusterView) {
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
