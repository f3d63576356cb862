//! The threads that move frames: each worker owns the ports of some workloads,
//! receives bursts, has the decision stage ([`crate::decide`]) decide them and
//! applies the decisions (send, hold, answer, learn, count). The control side
//! ([`Datapath`]) builds new forwarding state and swaps it in; workers never wait
//! for it.

mod counters;
mod delay;
mod worker;

pub use counters::{DatapathCounters, PortCounters, PortCountersSnapshot};

use crate::decide::{Scene, WorkloadInfo};
use crate::pipeline::flow::Timeouts;
use crate::pipeline::{Inspector, Pipeline};
use crate::port::Port;
use crate::switch::{MacTable, SharedMacTable, Topology, WorkloadPorts};
use crate::vocab::{PortId, Role, SteeringMode, WorkloadId};
use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use worker::{Worker, WorkerCmd};

/// Tunables of the datapath.
#[derive(Clone, Debug)]
pub struct DatapathParams {
    /// Worker threads.
    pub workers: usize,
    /// Frames per burst.
    pub batch: usize,
    /// MACs a workload port may hold.
    pub mac_limit: u32,
    /// Seconds after which an unseen MAC is forgotten.
    pub mac_age_secs: u64,
    /// Microseconds a worker keeps polling after its last frame before it sleeps.
    pub spin_us: u64,
    /// Most flows the flow table holds.
    pub flow_capacity: usize,
    /// Most flows one workload may hold (none: an even share when full).
    pub flow_quota: Option<usize>,
    /// Idle timeouts of flows.
    pub timeouts: Timeouts,
    /// Most bytes the application probes hold while reading TCP streams.
    pub reassembly_bytes: usize,
    /// Most bytes of shaped frames a worker holds.
    pub shape_queue_bytes: usize,
}

/// One port in the forwarding state.
pub struct PortSlot {
    /// The port itself.
    pub port: Arc<dyn Port>,
    /// Its counters.
    pub counters: Arc<PortCounters>,
}

/// Immutable forwarding state; replaced as a whole when workloads come and go.
#[derive(Default)]
pub struct Forwarding {
    /// Roles of ports, for the switch.
    pub topo: Topology,
    /// Ports by [`PortId`].
    pub ports: Vec<Option<PortSlot>>,
    /// Workloads by [`WorkloadId`].
    pub workloads: Vec<Option<WorkloadInfo>>,
}

impl Forwarding {
    fn port(&self, p: PortId) -> Option<&PortSlot> {
        self.ports.get(p.0 as usize).and_then(|s| s.as_ref())
    }

    /// The workload `wl`, while it is attached (not a later one in its slot).
    pub fn workload(&self, wl: WorkloadId) -> Option<&WorkloadInfo> {
        crate::decide::attached(&self.topo, &self.workloads, wl)
    }

    /// The forwarding state as the decision stage reads it.
    pub fn scene<'a>(&'a self, macs: &'a MacTable) -> Scene<'a> {
        Scene {
            topo: &self.topo,
            workloads: &self.workloads,
            macs,
        }
    }

    /// Every workload's two ports: the workload, the port's role, id and slot.
    pub fn workload_ports(
        &self,
    ) -> impl Iterator<Item = (&WorkloadInfo, Role, PortId, &PortSlot)> + '_ {
        (0..self.workloads.len())
            .filter_map(|i| self.topo.in_slot(i))
            .filter_map(|wl| Some((self.workload(wl)?, self.topo.workload(wl)?)))
            .flat_map(|(info, wp)| {
                [
                    (info, wp.workload, Role::Workload),
                    (info, wp.uplink, Role::Uplink),
                ]
            })
            .filter_map(|(info, p, role)| Some((info, role, p, self.port(p)?)))
    }

    fn clone_shallow(&self) -> Forwarding {
        Forwarding {
            topo: self.topo.clone(),
            ports: self
                .ports
                .iter()
                .map(|s| {
                    s.as_ref().map(|s| PortSlot {
                        port: s.port.clone(),
                        counters: s.counters.clone(),
                    })
                })
                .collect(),
            workloads: self.workloads.clone(),
        }
    }
}

/// State every worker reads.
pub struct Shared {
    /// Ports, roles and workloads.
    pub fwd: Arc<ArcSwap<Forwarding>>,
    /// The MAC table.
    pub macs: SharedMacTable,
    /// The pipeline (rules swap in here).
    pub pipeline: Arc<ArcSwap<Pipeline>>,
    /// Flow table and the rest of the inspection state.
    pub inspector: Arc<Inspector>,
    /// Drops and malformed frames.
    pub counters: DatapathCounters,
    /// Tunables.
    pub params: DatapathParams,
    /// Worker threads still running (a panicked or stopped one is not).
    pub workers_alive: std::sync::atomic::AtomicUsize,
    /// Per worker, the datapath clock (ms) of its last loop: a worker that
    /// stops looping (hung, stopped) stops moving its entry.
    pub heartbeats: Box<[std::sync::atomic::AtomicU64]>,
    /// Workers that panicked, and why, in the order they did.
    pub failures: std::sync::Mutex<Vec<WorkerFailure>>,
    /// The kernel fast path, once loaded (none: every frame through guardwire).
    pub fast: std::sync::OnceLock<Arc<crate::fastpath::FastPath>>,
}

/// A worker thread that panicked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerFailure {
    /// Which worker.
    pub worker: usize,
    /// The panic's message.
    pub message: String,
}

/// Counts its worker as alive while it runs; dropped on return and on panic.
struct Alive(Arc<Shared>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0
            .workers_alive
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Shared {
    /// Seconds since the datapath started (the MAC table's clock): the
    /// inspector's clock, in seconds.
    pub fn now_secs(&self) -> u64 {
        self.inspector.now_ns() / 1_000_000_000
    }

    /// The first worker that has not looped for `max_ms`, if any. A worker
    /// that panicked is not stalled: its workloads went to their `on_failure`.
    pub fn stalled_worker(&self, max_ms: u64) -> Option<usize> {
        let now = self.inspector.now_ns() / 1_000_000;
        let failed = self.failed();
        (0..self.heartbeats.len()).find(|w| {
            let h = self.heartbeats[*w].load(std::sync::atomic::Ordering::Relaxed);
            now.saturating_sub(h) > max_ms && !failed.iter().any(|f| f.worker == *w)
        })
    }

    /// Workers that panicked.
    pub fn failed(&self) -> Vec<WorkerFailure> {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

struct WorkerHandle {
    cmds: Sender<WorkerCmd>,
    waker: Arc<mio::Waker>,
    join: Option<JoinHandle<()>>,
    ports: usize,
}

/// The running datapath, driven by the control side.
pub struct Datapath {
    shared: Arc<Shared>,
    workers: Vec<WorkerHandle>,
    owner: BTreeMap<PortId, usize>,
    /// Failed workers already handed to the control side.
    handed: usize,
    /// Workloads attached so far: the next one's generation.
    attached: u32,
}

/// Per-port figures for `guardwire stats`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PortStats {
    pub port: String,
    pub workload: String,
    pub role: Role,
    pub worker: usize,
    #[serde(flatten)]
    pub counters: PortCountersSnapshot,
}

/// Everything `guardwire stats` shows.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatsSnapshot {
    pub uptime_secs: u64,
    pub workers: usize,
    pub mac_entries: usize,
    pub bursts: u64,
    pub ports: Vec<PortStats>,
    pub drops: BTreeMap<String, u64>,
    pub malformed: BTreeMap<String, u64>,
    /// The kernel fast path; none when this node runs without it.
    #[serde(default)]
    pub fastpath: Option<crate::fastpath::FastStats>,
}

impl Datapath {
    /// Starts `params.workers` worker threads with no ports yet.
    pub fn start(params: DatapathParams, pipeline: Pipeline) -> io::Result<Datapath> {
        let shared = Arc::new(Shared {
            fwd: Arc::new(ArcSwap::from_pointee(Forwarding::default())),
            macs: SharedMacTable::default(),
            pipeline: Arc::new(ArcSwap::from_pointee(pipeline)),
            inspector: Arc::new(
                Inspector::with_quota(params.flow_capacity, params.flow_quota, params.timeouts)
                    .with_reassembly(params.reassembly_bytes),
            ),
            counters: DatapathCounters::default(),
            params: params.clone(),
            workers_alive: Default::default(),
            heartbeats: (0..params.workers.max(1))
                .map(|_| Default::default())
                .collect(),
            failures: Default::default(),
            fast: Default::default(),
        });
        let mut workers = Vec::new();
        for id in 0..params.workers.max(1) {
            let (tx, rx): (Sender<WorkerCmd>, Receiver<WorkerCmd>) = unbounded();
            let poll = mio::Poll::new()?;
            let waker = Arc::new(mio::Waker::new(poll.registry(), worker::WAKER)?);
            let w = Worker::new(id, poll, rx, shared.clone());
            shared
                .workers_alive
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let alive = Alive(shared.clone());
            let join = std::thread::Builder::new()
                .name(format!("gw-worker-{id}"))
                .spawn(move || {
                    let alive = alive;
                    if let Err(p) =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.run()))
                    {
                        let message = p
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| p.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "(no message)".into());
                        tracing::error!(worker = id, "datapath worker panicked: {message}");
                        alive
                            .0
                            .failures
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(WorkerFailure {
                                worker: id,
                                message,
                            });
                    }
                })?;
            workers.push(WorkerHandle {
                cmds: tx,
                waker,
                join: Some(join),
                ports: 0,
            });
        }
        Ok(Datapath {
            shared,
            workers,
            owner: BTreeMap::new(),
            handed: 0,
            attached: 0,
        })
    }

    /// The state workers share (counters, MAC table, pipeline).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    fn tell(&self, w: usize, cmd: WorkerCmd) -> io::Result<()> {
        let h = &self.workers[w];
        h.cmds
            .send(cmd)
            .map_err(|_| io::Error::other(format!("worker {w} is gone")))?;
        h.waker.wake()
    }

    /// Adds a workload with its two ports.
    pub fn add_workload(
        &mut self,
        info: WorkloadInfo,
        workload_port: Arc<dyn Port>,
        uplink_port: Arc<dyn Port>,
    ) -> io::Result<WorkloadId> {
        // Both ports of a workload go to the least loaded live worker: the
        // common path (workload <-> its uplink) stays on one thread and one
        // cache. Splitting the two directions over two workers was measured:
        // on 2 cores it took more CPU for no more throughput, since the
        // endpoints need the cores too.
        let failed = self.shared.failed();
        let Some(w) = (0..self.workers.len())
            .filter(|w| !failed.iter().any(|f| f.worker == *w))
            .min_by_key(|&w| self.workers[w].ports)
        else {
            return Err(io::Error::other("every datapath worker has failed"));
        };
        let cur = self.shared.fwd.load();
        let mut next = cur.clone_shallow();
        let slot = next
            .workloads
            .iter()
            .position(|w| w.is_none())
            .unwrap_or(next.workloads.len());
        self.attached = self.attached.wrapping_add(1);
        let wl = WorkloadId::new(slot as u32, self.attached);
        let mut free = (0..next.ports.len()).filter(|&i| next.ports[i].is_none());
        let pw = free.next().unwrap_or(next.ports.len());
        let pu = free.next().unwrap_or(next.ports.len().max(pw + 1));
        let ports = WorkloadPorts {
            workload: PortId(pw as u32),
            uplink: PortId(pu as u32),
        };
        for (id, port) in [
            (ports.workload, &workload_port),
            (ports.uplink, &uplink_port),
        ] {
            let i = id.0 as usize;
            if next.ports.len() <= i {
                next.ports.resize_with(i + 1, || None);
            }
            next.ports[i] = Some(PortSlot {
                port: port.clone(),
                counters: Arc::new(PortCounters::default()),
            });
        }
        let i = wl.slot();
        if next.workloads.len() <= i {
            next.workloads.resize(i + 1, None);
        }
        next.workloads[i] = Some(info);
        next.topo.insert(wl, ports);
        self.shared.fwd.store(Arc::new(next));

        if let Some(fp) = self.shared.fast.get() {
            self.offload_ports(
                fp,
                wl,
                [
                    (ports.workload, &workload_port),
                    (ports.uplink, &uplink_port),
                ],
            );
        }
        for (id, port) in [(ports.workload, workload_port), (ports.uplink, uplink_port)] {
            self.tell(w, WorkerCmd::Add(id, port))?;
            self.workers[w].ports += 1;
            self.owner.insert(id, w);
        }
        Ok(wl)
    }

    /// Puts the fast path on a workload's two ports: each socket filtered, then
    /// the tc program on each. A workload whose port cannot (a VM's tap) or
    /// a kernel that refuses leaves the workload wholly on guardwire's path.
    fn offload_ports(
        &self,
        fp: &crate::fastpath::FastPath,
        wl: WorkloadId,
        ports: [(PortId, &Arc<dyn Port>); 2],
    ) {
        for (_, p) in ports {
            if let Err(e) = p.set_fast_filter(fp.socket_filter()) {
                if e.kind() != io::ErrorKind::Unsupported {
                    tracing::warn!(port = p.name(), "fast path off for this workload: {e}");
                }
                return;
            }
        }
        for (id, p) in ports {
            if let Err(e) = fp.attach(id, p.name(), wl.slot()) {
                tracing::warn!(port = p.name(), "fast path off for this workload: {e}");
                for (id, _) in ports {
                    fp.detach(id);
                }
                return;
            }
        }
    }

    /// Takes every flow of `wl` (and every flow into its ports) back from the
    /// kernel fast path.
    pub fn take_back(&self, wl: WorkloadId) {
        let fwd = self.shared.fwd.load();
        if let (Some(fp), Some(p)) = (self.shared.fast.get(), fwd.topo.workload(wl)) {
            fp.release(wl, &[p.workload, p.uplink], &self.shared.inspector);
        }
    }

    /// Workers that panicked since the last call, each with the workloads
    /// whose ports it owned: the control side hands those to their `on_failure`.
    pub fn newly_failed(&mut self) -> Vec<(WorkerFailure, Vec<WorkloadId>)> {
        let failed = self.shared.failed();
        let fwd = self.shared.fwd.load();
        let out = failed[self.handed.min(failed.len())..]
            .iter()
            .map(|f| {
                let mut wls: Vec<WorkloadId> = self
                    .owner
                    .iter()
                    .filter(|(_, w)| **w == f.worker)
                    .filter_map(|(p, _)| Some(fwd.topo.role(*p)?.0))
                    .collect();
                wls.dedup();
                (f.clone(), wls)
            })
            .collect();
        self.handed = failed.len();
        out
    }

    /// Removes a workload: it leaves the forwarding state first, then its worker
    /// stops polling its ports and confirms, so the ports are closed on return.
    pub fn remove_workload(&mut self, wl: WorkloadId) -> io::Result<()> {
        let cur = self.shared.fwd.load();
        let mut next = cur.clone_shallow();
        let Some(ports) = next.topo.remove(wl) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such workload"));
        };
        for p in [ports.workload, ports.uplink] {
            next.ports[p.0 as usize] = None;
            self.shared.macs.remove_port(p);
        }
        next.workloads[wl.slot()] = None;
        self.shared.fwd.store(Arc::new(next));
        drop(cur);
        let (done_tx, done_rx) = bounded(2 + self.workers.len());
        let mut waiting = 0;
        for p in [ports.workload, ports.uplink] {
            if let Some(w) = self.owner.remove(&p) {
                self.tell(w, WorkerCmd::Remove(p, done_tx.clone()))?;
                self.workers[w].ports = self.workers[w].ports.saturating_sub(1);
                waiting += 1;
            }
        }
        // Every worker, not only the owner, may still hold the old forwarding
        // state (and so the ports) in its cache: make each let go, so the
        // ports are closed and their rings unmapped when this returns.
        for w in 0..self.workers.len() {
            self.tell(w, WorkerCmd::Sync(done_tx.clone()))?;
            waiting += 1;
        }
        for _ in 0..waiting {
            done_rx
                .recv_timeout(Duration::from_secs(5))
                .map_err(|_| io::Error::other("worker did not release the ports"))?;
        }
        // Only now that no worker can judge a frame of the workload any more
        // are its flows and limiters let go: before, a worker still on the old
        // snapshot could put them back. The kernel gives back its flows and
        // the flows into its ports first, with their last counts.
        if let Some(fp) = self.shared.fast.get() {
            fp.release(wl, &[ports.workload, ports.uplink], &self.shared.inspector);
            fp.detach(ports.workload);
            fp.detach(ports.uplink);
        }
        self.shared.inspector.forget(wl);
        self.shared.pipeline.load().forget(wl);
        Ok(())
    }

    /// The workload called `name`.
    pub fn find(&self, name: &str) -> Option<WorkloadId> {
        let fwd = self.shared.fwd.load();
        (0..fwd.workloads.len())
            .filter_map(|i| fwd.topo.in_slot(i))
            .find(|&wl| fwd.workload(wl).is_some_and(|w| w.name == name))
    }

    /// Every workload with its info and its two ports' names.
    pub fn workloads(&self) -> Vec<(WorkloadId, WorkloadInfo, String, String)> {
        let fwd = self.shared.fwd.load();
        (0..fwd.workloads.len())
            .filter_map(|i| fwd.topo.in_slot(i))
            .filter_map(|wl| {
                let (info, wp, up) = self.workload(wl)?;
                Some((wl, info, wp, up))
            })
            .collect()
    }

    /// The workload's info and its two ports' names.
    pub fn workload(&self, wl: WorkloadId) -> Option<(WorkloadInfo, String, String)> {
        let fwd = self.shared.fwd.load();
        let info = fwd.workload(wl)?.clone();
        let ports = fwd.topo.workload(wl)?;
        let name = |p| fwd.port(p).map(|s| s.port.name().to_string());
        Some((info, name(ports.workload)?, name(ports.uplink)?))
    }

    /// Sets how the workload's frames travel inside guardwire: `inline` forwards,
    /// `mirror` only inspects, `off` stops its ports receiving at all. The tc
    /// side of the mode is the caller's (see `steer::tc`).
    pub fn set_mode(&self, wl: WorkloadId, mode: SteeringMode) -> io::Result<()> {
        let cur = self.shared.fwd.load();
        let mut next = cur.clone_shallow();
        let ports = next
            .topo
            .workload(wl)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such workload"))?;
        let info = next.workloads[wl.slot()]
            .as_mut()
            .expect("an attached workload has its info");
        info.mode = mode;
        let slots: Vec<Arc<dyn Port>> = [ports.workload, ports.uplink]
            .iter()
            .filter_map(|p| next.port(*p).map(|s| s.port.clone()))
            .collect();
        match self.shared.fast.get() {
            // Out of inline, the kernel must not forward its flows any more:
            // no offer judged inline outlives the switch.
            Some(fp) if mode != SteeringMode::Inline => {
                fp.rejudge(|| self.shared.fwd.store(Arc::new(next)));
                fp.release(wl, &[ports.workload, ports.uplink], &self.shared.inspector);
            }
            _ => self.shared.fwd.store(Arc::new(next)),
        }
        for p in slots {
            p.set_receiving(mode != SteeringMode::Off)?;
        }
        Ok(())
    }

    /// Periodic work: kernel counters into port counters, MAC aging.
    pub fn housekeeping(&self) {
        let fwd = self.shared.fwd.load();
        for slot in fwd.ports.iter().flatten() {
            let k = slot.port.kernel_stats();
            slot.counters
                .kernel_drops
                .fetch_add(k.drops, std::sync::atomic::Ordering::Relaxed);
            slot.counters
                .ring_truncated
                .fetch_add(k.truncated, std::sync::atomic::Ordering::Relaxed);
            slot.counters
                .ring_copied
                .fetch_add(k.copied, std::sync::atomic::Ordering::Relaxed);
        }
        self.shared
            .macs
            .age_out(self.shared.now_secs(), self.shared.params.mac_age_secs);
    }

    /// All counters.
    pub fn stats(&self) -> StatsSnapshot {
        let fwd = self.shared.fwd.load();
        let fast = self
            .shared
            .fast
            .get()
            .map(|f| f.ports_now())
            .unwrap_or_default();
        let ports = fwd
            .workload_ports()
            .map(|(info, role, p, slot)| {
                let mut counters = slot.counters.snapshot();
                if let Some(k) = fast.get(&p) {
                    counters.fast_rx_frames = k.rx_frames;
                    counters.fast_rx_bytes = k.rx_bytes;
                    counters.fast_tx_frames = k.tx_frames;
                    counters.fast_tx_bytes = k.tx_bytes;
                }
                PortStats {
                    port: slot.port.name().to_string(),
                    workload: info.name.clone(),
                    role,
                    worker: self.owner.get(&p).copied().unwrap_or(0),
                    counters,
                }
            })
            .collect();
        let c = &self.shared.counters;
        StatsSnapshot {
            uptime_secs: self.shared.now_secs(),
            workers: self.workers.len(),
            mac_entries: self.shared.macs.snapshot().len(),
            bursts: c.bursts.load(std::sync::atomic::Ordering::Relaxed),
            ports,
            drops: c.drops(),
            malformed: c.malformed(),
            fastpath: self.shared.fast.get().map(|f| f.stats()),
        }
    }

    /// Stops every worker and waits for it.
    pub fn stop(&mut self) {
        for w in 0..self.workers.len() {
            let _ = self.tell(w, WorkerCmd::Stop);
        }
        for h in &mut self.workers {
            if let Some(j) = h.join.take() {
                let _ = j.join();
            }
        }
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests;
