//! `rules check|push|history|rollback`: a rule file checked, or put in force
//! on the running daemon or, through the controller, on the cluster; the rule
//! sets kept, and an earlier one put back.

use super::Target;
use clap::Subcommand;
use guardwire::control::http::client::{Client, Endpoint};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum RulesWhat {
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

/// `guardwire rules ...`
pub fn rules(what: RulesWhat) -> Result<(), String> {
    match what {
        RulesWhat::Check { file, apps } => check(&file, apps.as_deref()),
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
        } => push(&file, &target),
        RulesWhat::History { target } => history(&target),
        RulesWhat::Rollback { generation, target } => rollback(generation, &target),
    }
}

/// `rules check`: the file parsed against the catalogue `apps` extends, its
/// rules counted.
fn check(file: &Path, apps: Option<&Path>) -> Result<(), String> {
    use guardwire::control::inspection::{load_apps, load_rules};
    load_apps(apps)
        .and_then(|a| load_rules(file, &a))
        .map(|r| println!("{}: ok ({} rules)", file.display(), r.len()))
}

/// `rules push`: to the running daemon, which installs it atomically.
fn push(file: &Path, target: &Target) -> Result<(), String> {
    target.client().and_then(|c| {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
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
    })
}

/// `rules push --cluster`: through the controller, which validates, keeps the
/// history and writes the set to etcd.
fn push_cluster(file: &Path, url: &str, set: &str, target: &Target) -> Result<(), String> {
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

/// `rules history`: one line per generation kept, newest first.
fn history(target: &Target) -> Result<(), String> {
    target.client().and_then(|c| {
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
    })
}

/// `rules rollback`: generation `generation`'s rules in force again.
fn rollback(generation: u64, target: &Target) -> Result<(), String> {
    target.client().and_then(|c| {
        let r = c.rollback(generation).map_err(|e| e.to_string())?;
        println!(
            "generation {generation} is in force again as generation {} ({} rules)",
            r.generation, r.rules
        );
        Ok(())
    })
}
