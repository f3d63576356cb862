//! Switching a workload's steering mode, and keeping the modes across restarts.
//!
//! Order of a switch, so that no frame is lost (a few may be doubled, which TCP
//! and ping shrug off): when the kernel takes over (`inline` -> `off`/`mirror`),
//! the tc redirect goes in first and guardwire stops forwarding second; when
//! guardwire takes over, it starts forwarding first and the redirect goes second.

use super::files::{read_json, write_json};
use super::http::types::{Attached, Detached, IdentityView, Workload, WorkloadCounters};
use crate::datapath::Datapath;
use crate::decide::WorkloadInfo;
use crate::pipeline::firewall::Labels;
use crate::port::ifindex;
use crate::port::{PacketPort, PacketPortOptions, Port};
use crate::steer::attach::{self, Attachment, Via};
use crate::steer::netlink::Netlink;
use crate::vocab::{OnFailure, SteeringMode, WorkloadId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// What an attach may say about the workload.
#[derive(Clone, Debug, Default)]
pub struct AttachSpec {
    /// Workload name (default: the namespace's or device's name).
    pub name: Option<String>,
    /// Mode to start in (default: the node's default mode).
    pub mode: Option<SteeringMode>,
    /// What happens when guardwire dies (default: the node's default).
    pub on_failure: Option<OnFailure>,
    /// Addresses the workload may send from, beyond those learned at attach (a
    /// pod's interface); a VM's cannot be read, so they must be given here.
    pub identity: crate::pipeline::spoof::Identity,
    /// Labels that `label = "..."` rules select it by.
    pub labels: Vec<String>,
}

/// What survives a restart.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SteeringState {
    /// Mode per workload name, as last set with `guardwire mode`.
    pub modes: BTreeMap<String, SteeringMode>,
    /// Workloads attached with `guardwire attach`, with what detach needs.
    #[serde(default)]
    pub attachments: BTreeMap<String, Attachment>,
    /// on_failure of attached workloads.
    #[serde(default)]
    pub on_failure: BTreeMap<String, OnFailure>,
    /// Labels of attached workloads.
    #[serde(default)]
    pub labels: Labels,
}

/// One workload as the watchdog needs it (`watch.json` in the state dir).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WatchEntry {
    /// Workload name.
    pub name: String,
    /// Workload port in sec ns.
    pub workload_port: String,
    /// Uplink port in sec ns.
    pub uplink_port: String,
    /// Its steering mode.
    pub mode: SteeringMode,
    /// What to do when guardwire dies.
    pub on_failure: OnFailure,
}

/// What an attach or detach is about to do, written before its first kernel
/// change and removed once its result is saved: a crash in between leaves it
/// for the watchdog and the next start, which finish or roll back the
/// operation (`attach::detach` undoes an attach from any point, and finishes
/// a detach).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Intent {
    /// `attach` or `detach`.
    pub op: String,
    /// The attachment as it is, or will be once the attach is done.
    pub attachment: Attachment,
    /// Temporary host name of the new pair, while an attach makes it.
    pub tmp: Option<String>,
    /// The devices were already put back (by the watchdog); only the saved
    /// state remains to be mended.
    #[serde(default)]
    pub undone: bool,
}

impl Intent {
    /// Path of the record in `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("intent.json")
    }

    /// The record in `dir`, if an operation did not finish.
    pub fn load(dir: &Path) -> Result<Option<Intent>, String> {
        read_json(&Self::path(dir))
    }

    /// Writes the record (durably: it must be on disk before the kernel
    /// changes it announces).
    pub fn save(&self, dir: &Path) -> Result<(), String> {
        write_json(dir, &Self::path(dir), self)
    }

    /// Removes the record: the operation's result is saved.
    pub fn clear(dir: &Path) -> Result<(), String> {
        match std::fs::remove_file(Self::path(dir)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("{}: {e}", Self::path(dir).display())),
        }
    }
}

/// Path of the watchdog's file in `dir`.
pub fn watch_path(dir: &Path) -> PathBuf {
    dir.join("watch.json")
}

impl SteeringState {
    fn path(dir: &Path) -> PathBuf {
        dir.join("steering.json")
    }

    /// Reads the state in `dir` (empty if there is none yet).
    pub fn load(dir: &Path) -> Result<SteeringState, String> {
        Ok(read_json(&Self::path(dir))?.unwrap_or_default())
    }

    /// Writes the state to `dir` atomically (write, fsync, rename).
    pub fn save(&self, dir: &Path) -> Result<(), String> {
        write_json(dir, &Self::path(dir), self)
    }
}

/// The control side's hold on the datapath and the tc hook.
pub struct Steering {
    /// The running datapath.
    pub dp: Datapath,
    tc: Netlink,
    state_dir: PathBuf,
    state: SteeringState,
    host_netns: String,
    default_mode: SteeringMode,
    default_on_failure: OnFailure,
    port_opts: PacketPortOptions,
}

/// How attached workloads are wired.
pub struct AttachSettings {
    /// The host's network namespace (path or name).
    pub host_netns: String,
    /// Mode of a newly attached workload.
    pub default_mode: SteeringMode,
    /// on_failure of a newly attached workload.
    pub default_on_failure: OnFailure,
    /// How its ports are opened.
    pub port_opts: PacketPortOptions,
}

impl Steering {
    /// Takes over `dp`, with modes persisted in `state_dir`.
    pub fn new(
        dp: Datapath,
        state_dir: PathBuf,
        settings: AttachSettings,
    ) -> Result<Steering, String> {
        let tc = Netlink::open(None).map_err(|e| format!("netlink: {e}"))?;
        let state = SteeringState::load(&state_dir)?;
        Ok(Steering {
            dp,
            tc,
            state_dir,
            state,
            host_netns: settings.host_netns,
            default_mode: settings.default_mode,
            default_on_failure: settings.default_on_failure,
            port_opts: settings.port_opts,
        })
    }

    /// Opens the two ports of an attached workload, adds it to the datapath and
    /// puts it into `mode`. On failure the datapath is left as it was.
    fn wire(
        &mut self,
        a: &Attachment,
        mode: SteeringMode,
        on_failure: OnFailure,
    ) -> Result<(), String> {
        for p in [&a.workload_port, &a.uplink_port] {
            crate::steer::prepare_port(p).map_err(|e| e.to_string())?;
        }
        let open = |n: &str| -> Result<Arc<dyn Port>, String> {
            Ok(Arc::new(
                PacketPort::open(n, &self.port_opts).map_err(|e| format!("port {n}: {e}"))?,
            ))
        };
        let (wp, up) = (open(&a.workload_port)?, open(&a.uplink_port)?);
        let info = WorkloadInfo {
            name: a.name.clone(),
            kind: a.kind().into(),
            mode: SteeringMode::Inline,
            on_failure,
            identity: a.identity.clone(),
        };
        let wl = self
            .dp
            .add_workload(info, wp, up)
            .map_err(|e| e.to_string())?;
        if let Err(e) = self.adopt(wl, mode) {
            let _ = self.dp.remove_workload(wl);
            return Err(e);
        }
        Ok(())
    }

    /// Finishes or rolls back an attach or detach a crash interrupted (its
    /// intent record is in the state dir): an attach whose result was saved
    /// stands; any other is undone, and a detach is finished, so the workload
    /// is reachable as before it was attached. Returns what it did.
    pub fn recover(&mut self) -> Result<Option<String>, String> {
        let Some(intent) = Intent::load(&self.state_dir)? else {
            return Ok(None);
        };
        let name = intent.attachment.name.clone();
        let saved = self.state.attachments.contains_key(&name);
        let done = if intent.op == "attach" && saved {
            format!("the attach of {name} had finished; it stands")
        } else {
            if !intent.undone {
                attach::detach(&self.tc, &intent.attachment, intent.tmp.as_deref())
                    .map_err(|e| format!("recovering the {} of {name}: {e}", intent.op))?;
            }
            self.state.attachments.remove(&name);
            self.state.modes.remove(&name);
            self.state.on_failure.remove(&name);
            self.state.labels.remove(&name);
            self.state.save(&self.state_dir)?;
            self.write_watch()?;
            match intent.op.as_str() {
                "attach" => format!("the interrupted attach of {name} was rolled back"),
                _ => format!("the interrupted detach of {name} was finished"),
            }
        };
        Intent::clear(&self.state_dir)?;
        tracing::warn!(workload = name.as_str(), "{done}");
        Ok(Some(done))
    }

    /// Takes back every pod attached before a restart, without re-plumbing.
    pub fn readopt(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        let atts: Vec<Attachment> = self.state.attachments.values().cloned().collect();
        for a in atts {
            let mode = self.initial_mode(&a.name, self.default_mode);
            let of = self
                .state
                .on_failure
                .get(&a.name)
                .copied()
                .unwrap_or(self.default_on_failure);
            match self.wire(&a, mode, of) {
                Ok(()) => {
                    tracing::info!(workload = a.name.as_str(), mode = mode.name(), "re-adopted")
                }
                Err(e) => errors.push(format!("{}: {e}", a.name)),
            }
        }
        errors
    }

    /// Attaches a live workload: a pod (`Via::PodVeth`) or a VM (`Via::Tap` or
    /// `Via::Hybrid` of host device `dev`). Migrates the device (see
    /// `steer::attach`), wires the ports, and remembers it. Nothing is left
    /// behind when it fails.
    pub fn attach(
        &mut self,
        via: Via,
        dev: Option<&str>,
        spec: AttachSpec,
    ) -> Result<Attached, String> {
        let AttachSpec {
            name,
            mode,
            on_failure,
            identity,
            labels,
        } = spec;
        let default_name = match (&via, dev) {
            (Via::PodVeth { netns, .. }, _) => Path::new(netns)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            (_, Some(d)) => d.to_string(),
            _ => String::new(),
        };
        let name = name.unwrap_or(default_name);
        if self.dp.find(&name).is_some() {
            return Err(format!("workload {name:?} is already attached"));
        }
        let mode = mode.unwrap_or(self.default_mode);
        let on_failure = on_failure.unwrap_or(self.default_on_failure);
        let t0 = Instant::now();
        let dir = self.state_dir.clone();
        let journal = |a: &Attachment, tmp: &str| {
            let intent = Intent {
                op: "attach".into(),
                attachment: a.clone(),
                tmp: Some(tmp.to_string()),
                undone: false,
            };
            intent
                .save(&dir)
                .map_err(|e| attach::AttachError::Other(format!("nothing was changed: {e}")))
        };
        let a = match &via {
            Via::PodVeth { netns, ifname } => {
                attach::attach_pod(&self.tc, &self.host_netns, &name, netns, ifname, &journal)
            }
            _ => attach::attach_vm(
                &self.tc,
                &self.host_netns,
                &name,
                dev.unwrap_or_default(),
                via.clone(),
                &journal,
            ),
        };
        let a = match a {
            Ok(a) => a,
            Err(e) => {
                // Rolled back already (or nothing was done).
                let _ = Intent::clear(&self.state_dir);
                return Err(e.to_string());
            }
        };
        let mut a = a;
        a.identity.add(identity);
        let undo = |me: &mut Steering, e: String| {
            if let Some(wl) = me.dp.find(&name) {
                let _ = me.dp.remove_workload(wl);
            }
            match attach::detach(&me.tc, &a, None) {
                Ok(()) => {
                    let _ = Intent::clear(&me.state_dir);
                    format!("{e} (the attach was undone)")
                }
                Err(e2) => {
                    tracing::error!("rollback of {name} failed: {e2}");
                    format!("{e}; undoing the attach failed too ({e2}): the next start retries")
                }
            }
        };
        if let Err(e) = self.wire(&a, mode, on_failure) {
            return Err(undo(self, e));
        }
        if let Err(e) = attach::checkpoint("wired") {
            return Err(undo(self, e.to_string()));
        }
        self.state.modes.insert(name.clone(), mode);
        self.state.attachments.insert(name.clone(), a.clone());
        self.state.on_failure.insert(name.clone(), on_failure);
        if !labels.is_empty() {
            self.state.labels.insert(name.clone(), labels);
        }
        if let Err(e) = self
            .state
            .save(&self.state_dir)
            .and_then(|()| self.write_watch())
        {
            // Not saved, not done: a restart would not know the workload.
            self.state.modes.remove(&name);
            self.state.attachments.remove(&name);
            self.state.on_failure.remove(&name);
            let e = undo(self, format!("saving the state: {e}"));
            let _ = self.state.save(&self.state_dir);
            let _ = self.write_watch();
            return Err(e);
        }
        // A crash point only: from here the attach stands.
        let _ = attach::checkpoint("saved");
        if let Err(e) = Intent::clear(&self.state_dir) {
            // The attach is saved: the next start sees that and lets it stand.
            tracing::warn!(workload = name.as_str(), "{e}");
        }
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        tracing::info!(
            workload = name.as_str(),
            host_dev = a.host_dev.as_str(),
            mode = mode.name(),
            ms,
            "attached"
        );
        Ok(Attached {
            workload: name,
            workload_port: a.workload_port,
            uplink_port: a.uplink_port,
            host_dev: a.host_dev,
            mode,
            millis: ms,
        })
    }

    /// Detaches a pod attached with `attach`: everything back as it was.
    pub fn detach(&mut self, name: &str) -> Result<Detached, String> {
        let Some(a) = self.state.attachments.get(name).cloned() else {
            return Err(match self.dp.find(name) {
                Some(_) => format!(
                    "workload {name:?} is wired by the config file, not attached: remove it there"
                ),
                None => format!("no workload named {name:?}"),
            });
        };
        let t0 = Instant::now();
        Intent {
            op: "detach".into(),
            attachment: a.clone(),
            tmp: None,
            undone: false,
        }
        .save(&self.state_dir)
        .map_err(|e| format!("nothing was changed: {e}"))?;
        if let Err(e) = attach::checkpoint("detach") {
            let _ = Intent::clear(&self.state_dir);
            return Err(e.to_string());
        }
        if let Some(wl) = self.dp.find(name) {
            let (wp, up) = self.indexes(wl)?;
            self.kernel_path(wp, up, false)?;
            self.dp.remove_workload(wl).map_err(|e| e.to_string())?;
        }
        if let Err(e) = attach::detach(&self.tc, &a, None) {
            // The datapath no longer carries it: finish it in the kernel or
            // at the next start, never leave it cut off.
            return Err(format!(
                "detaching {name}: {e}; it is no longer inspected, and the next start finishes the detach"
            ));
        }
        self.state.attachments.remove(name);
        self.state.modes.remove(name);
        self.state.on_failure.remove(name);
        self.state.labels.remove(name);
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let note = match self
            .state
            .save(&self.state_dir)
            .and_then(|()| Intent::clear(&self.state_dir))
            .and_then(|()| self.write_watch())
        {
            Ok(()) => None,
            Err(e) => Some(format!(
                "detached, but the state could not be saved ({e}); the next start completes it"
            )),
        };
        tracing::info!(workload = name, ms, "detached");
        Ok(Detached {
            workload: name.to_string(),
            millis: ms,
            note,
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
                let _ = self.tc.clear_ingress(wp);
                return Err(e.to_string());
            }
            Ok(())
        } else {
            let a = self.tc.clear_ingress(wp);
            let b = self.tc.clear_ingress(up);
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
        if from == mode {
            // Whatever the kernel holds now (a watchdog's redirect, a hand-made
            // filter), put it back to what the mode means.
            self.adopt(wl, mode)?;
            tracing::info!(
                workload = name,
                mode = mode.name(),
                "steering mode re-applied"
            );
            return Ok(from);
        }
        let (wp, up) = self.indexes(wl)?;
        // Saved first: a mode that cannot be remembered is not switched to
        // (a restart would bring the old one back unannounced).
        let was = self.state.modes.insert(name.to_string(), mode);
        if let Err(e) = self.state.save(&self.state_dir) {
            self.forget_mode(name, was);
            return Err(format!("nothing was changed: {e}"));
        }
        if let Err(e) = self.switch(wl, wp, up, from, mode) {
            self.forget_mode(name, was);
            return Err(e);
        }
        if let Err(e) = self.write_watch() {
            tracing::error!(
                workload = name,
                "switched, but the watchdog's file is stale: {e}"
            );
        }
        tracing::info!(
            workload = name,
            from = from.name(),
            to = mode.name(),
            "steering mode switched"
        );
        Ok(from)
    }

    /// Puts back the mode remembered for `name` before a switch that failed.
    fn forget_mode(&mut self, name: &str, was: Option<SteeringMode>) {
        match was {
            Some(m) => self.state.modes.insert(name.to_string(), m),
            None => self.state.modes.remove(name),
        };
        if let Err(e) = self.state.save(&self.state_dir) {
            tracing::error!(workload = name, "restoring the saved mode: {e}");
        }
    }

    /// Hands the workloads of every datapath worker that panicked since the
    /// last call to their `on_failure`: an `open` inline workload gets the
    /// kernel path (off mode, not remembered, so a restart brings its own mode
    /// back); a `closed` one stays cut off, as its ports are read no more.
    pub fn hand_over_failed(&mut self) {
        for (f, wls) in self.dp.newly_failed() {
            for wl in wls {
                let Some((info, _, _)) = self.dp.workload(wl) else {
                    continue;
                };
                let name = info.name.as_str();
                if info.on_failure == OnFailure::Closed || info.mode != SteeringMode::Inline {
                    // Cut off means its flows too: the kernel forwards none.
                    self.dp.take_back(wl);
                    tracing::error!(
                        workload = name,
                        worker = f.worker,
                        on_failure = "closed",
                        "its worker failed: the workload stays as it is until guardwire restarts"
                    );
                    continue;
                }
                let r = self
                    .indexes(wl)
                    .and_then(|(wp, up)| self.switch(wl, wp, up, info.mode, SteeringMode::Off));
                match r {
                    Ok(()) => tracing::error!(
                        workload = name,
                        worker = f.worker,
                        on_failure = "open",
                        "its worker failed: the kernel carries the workload, uninspected"
                    ),
                    Err(e) => tracing::error!(
                        workload = name,
                        worker = f.worker,
                        "its worker failed, and the kernel path could not be set: {e}"
                    ),
                }
            }
            if let Err(e) = self.write_watch() {
                tracing::error!("after a worker failed, the watchdog's file is stale: {e}");
            }
        }
    }

    /// Moves workload `wl` (ports `wp`, `up`) from mode `from` to `mode`, in
    /// the order that loses no frame; on failure it stays in `from`.
    fn switch(
        &mut self,
        wl: WorkloadId,
        wp: i32,
        up: i32,
        from: SteeringMode,
        mode: SteeringMode,
    ) -> Result<(), String> {
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
        Ok(())
    }

    /// Writes what the watchdog needs to act without us (atomically).
    pub fn write_watch(&self) -> Result<(), String> {
        let entries: Vec<WatchEntry> = self
            .dp
            .workloads()
            .into_iter()
            .map(|(_, info, wp, up)| WatchEntry {
                name: info.name,
                workload_port: wp,
                uplink_port: up,
                mode: info.mode,
                on_failure: info.on_failure,
            })
            .collect();
        write_json(&self.state_dir, &watch_path(&self.state_dir), &entries)
    }

    /// Workloads with their ports, modes and counters.
    /// Labels of the attached workloads, for binding into the rules.
    pub fn labels(&self) -> Labels {
        self.state.labels.clone()
    }

    /// Workloads with their ports, modes and counters.
    pub fn list(&self) -> Vec<Workload> {
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
                        .unwrap_or_default()
                };
                Workload {
                    attached: self.state.attachments.contains_key(&info.name),
                    labels: self
                        .state
                        .labels
                        .get(&info.name)
                        .cloned()
                        .unwrap_or_default(),
                    identity: IdentityView {
                        macs: info
                            .identity
                            .macs
                            .iter()
                            .map(crate::vocab::format_mac)
                            .collect(),
                        ips: info.identity.ips.clone(),
                        router: info.identity.router,
                    },
                    counters: WorkloadCounters {
                        workload_port: c(&wp),
                        uplink_port: c(&up),
                    },
                    name: info.name,
                    kind: info.kind,
                    mode: info.mode,
                    on_failure: info.on_failure,
                    workload_port: wp,
                    uplink_port: up,
                }
            })
            .collect()
    }
}
