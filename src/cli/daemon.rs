//! `run`, `check` and `watchdog`: the daemon itself, its configuration
//! checked, and the watchdog `run` starts beside it.

use guardwire::control::config::Config;
use guardwire::control::daemon;
use std::path::Path;

/// `guardwire run`: the switch of the node `config` describes, until SIGTERM/SIGINT.
pub fn run(config: &Path) -> Result<(), String> {
    Config::load(config)
        .map_err(|e| e.to_string())
        .and_then(|c| daemon::run(c).map_err(|e| e.to_string()))
}

/// `guardwire check`: the node configuration loaded and checked, its workloads counted.
pub fn check(config: &Path) -> Result<(), String> {
    Config::load(config).map_err(|e| e.to_string()).map(|c| {
        println!("{}: ok ({} workloads)", config.display(), c.workloads.len());
    })
}

/// `guardwire watchdog`: waits for the daemon `pid` to end, then hands its
/// `on_failure = "open"` workloads to the kernel path.
pub fn watchdog(pid: i32, state_dir: &Path) -> Result<(), String> {
    guardwire::control::watchdog::run(pid, state_dir)
}
