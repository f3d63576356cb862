//! The verbs of the `guardwire` command, by group: each module holds its
//! verbs' arguments, the code that runs them and the printing of their
//! answers; `main` parses the command line and picks the verb.
//!
//! - [`daemon`]: `run`, `check`, `watchdog`;
//! - [`workloads`]: `attach`, `detach`, `list`, `mode`;
//! - [`rules`]: `rules check|push|history|rollback`;
//! - [`log`]: `flows`, `log`;
//! - [`stats`]: `stats`, `macs`, `usage`;
//! - [`cluster`]: `controller`, `cluster`;
//! - [`classify`]: `classify`, offline.

pub mod classify;
pub mod cluster;
pub mod daemon;
pub mod log;
pub mod rules;
pub mod stats;
pub mod workloads;

use guardwire::control::config::{Config, DEFAULT_SOCKET};
use guardwire::control::http::client::{Client, Endpoint};
use std::path::PathBuf;

/// The daemon a verb talks to: over its control socket (given, from its
/// config file, or the default one) or over its TCP management address.
#[derive(clap::Args)]
pub struct Target {
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
