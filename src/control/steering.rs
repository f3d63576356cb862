//! Switching a workload's steering mode, and keeping the modes across restarts.
//!
//! Order of a switch, so that no frame is lost (a few may be doubled, which TCP
//! and ping shrug off): when the kernel takes over (`inline` -> `off`/`mirror`),
//! the tc redirect goes in first and guardwire stops forwarding second; when
//! guardwire takes over, it starts forwarding first and the redirect goes second.

use crate::datapath::Datapath;
use crate::port::ifindex;
use crate::steer::SteeringMode;
use crate::steer::tc::Tc;
use crate::switch::WorkloadId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What survives a restart.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SteeringState {
    /// Mode per workload name, as last set with `guardwire mode`.
    pub modes: BTreeMap<String, SteeringMode>,
}

impl SteeringState {
    fn path(dir: &Path) -> PathBuf {
        dir.join("steering.json")
    }

    /// Reads the state in `dir` (empty if there is none yet).
    pub fn load(dir: &Path) -> Result<SteeringState, String> {
        let p = Self::path(dir);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SteeringState::default()),
            Err(e) => Err(format!("{}: {e}", p.display())),
        }
    }

    /// Writes the state to `dir` atomically (write, fsync, rename).
    pub fn save(&self, dir: &Path) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let p = Self::path(dir);
        let tmp = p.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &p)
        };
        write().map_err(|e| format!("{}: {e}", p.display()))
    }
}

/// The control side's hold on the datapath and the tc hook.
pub struct Steering {
    /// The running datapath.
    pub dp: Datapath,
    tc: Tc,
    state_dir: PathBuf,
    state: SteeringState,
}

impl Steering {
    /// Takes over `dp`, with modes persisted in `state_dir`.
    pub fn new(dp: Datapath, state_dir: PathBuf) -> Result<Steering, String> {
        let tc = Tc::new().map_err(|e| format!("netlink: {e}"))?;
        let state = SteeringState::load(&state_dir)?;
        Ok(Steering {
            dp,
            tc,
            state_dir,
            state,
        })
    }

    /// The mode a workload starts in: the one last set, else `configured`.
    pub fn initial_mode(&self, name: &str, configured: SteeringMode) -> SteeringMode {
        self.state.modes.get(name).copied().unwrap_or(configured)
    }

    fn indexes(&self, wl: WorkloadId) -> Result<(i32, i32), String> {
        let (_, wp, up) = self.dp.workload(wl).ok_or("workload vanished")?;
        let idx = |n: &str| ifindex(n).map_err(|e| e.to_string());
        Ok((idx(&wp)?, idx(&up)?))
    }

    fn kernel_path(&self, wp: i32, up: i32, on: bool) -> Result<(), String> {
        if on {
            self.tc.redirect(wp, up).map_err(|e| e.to_string())?;
            if let Err(e) = self.tc.redirect(up, wp) {
                let _ = self.tc.clear(wp);
                return Err(e.to_string());
            }
            Ok(())
        } else {
            let a = self.tc.clear(wp);
            let b = self.tc.clear(up);
            a.and(b).map_err(|e| e.to_string())
        }
    }

    /// Puts workload `wl` into `mode` at start, whatever tc state a previous run
    /// left on its ports.
    pub fn adopt(&mut self, wl: WorkloadId, mode: SteeringMode) -> Result<(), String> {
        let (wp, up) = self.indexes(wl)?;
        if mode.kernel_forwards() {
            self.kernel_path(wp, up, true)?;
            self.dp.set_mode(wl, mode).map_err(|e| e.to_string())
        } else {
            self.dp.set_mode(wl, mode).map_err(|e| e.to_string())?;
            self.kernel_path(wp, up, false)
        }
    }

    /// Switches workload `name` to `mode` and remembers it.
    pub fn set_mode(&mut self, name: &str, mode: SteeringMode) -> Result<SteeringMode, String> {
        let wl = self
            .dp
            .find(name)
            .ok_or_else(|| format!("no workload named {name:?}"))?;
        let (info, _, _) = self.dp.workload(wl).ok_or("workload vanished")?;
        let from = info.mode;
        let (wp, up) = self.indexes(wl)?;
        match (from.kernel_forwards(), mode.kernel_forwards()) {
            (false, true) => {
                self.kernel_path(wp, up, true)?;
                if let Err(e) = self.dp.set_mode(wl, mode) {
                    let _ = self.kernel_path(wp, up, false);
                    return Err(e.to_string());
                }
            }
            (true, false) => {
                self.dp.set_mode(wl, mode).map_err(|e| e.to_string())?;
                if let Err(e) = self.kernel_path(wp, up, false) {
                    let _ = self.dp.set_mode(wl, from);
                    return Err(e);
                }
            }
            _ => self.dp.set_mode(wl, mode).map_err(|e| e.to_string())?,
        }
        self.state.modes.insert(name.to_string(), mode);
        self.state.save(&self.state_dir)?;
        tracing::info!(
            workload = name,
            from = from.name(),
            to = mode.name(),
            "steering mode switched"
        );
        Ok(from)
    }

    /// Workloads with their ports, modes and counters.
    pub fn list(&self) -> Vec<serde_json::Value> {
        let stats = self.dp.stats();
        self.dp
            .workloads()
            .into_iter()
            .map(|(_, info, wp, up)| {
                let c = |n: &str| {
                    stats
                        .ports
                        .iter()
                        .find(|p| p.port == n)
                        .map(|p| p.counters.clone())
                };
                serde_json::json!({
                    "name": info.name,
                    "kind": info.kind,
                    "mode": info.mode,
                    "workload_port": wp,
                    "uplink_port": up,
                    "workload_port_counters": c(&wp),
                    "uplink_port_counters": c(&up),
                })
            })
            .collect()
    }
}
