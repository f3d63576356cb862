//! The kernel fast path: flows whose verdict is final are forwarded by the
//! kernel between the two ports guardwire would have used, and guardwire
//! still counts, logs and re-judges every one of them.
//!
//! The decision stage offers a flow's direction once it is settled (allowed,
//! named or done probing, no shaper or limit, the workload inline, not a
//! fragment, no SYN/FIN/RST); the worker hands the offer to [`FastPath::offer`],
//! which writes it into the `flows` map of `fastpath.bpf.c`. From then on the
//! program at tc ingress of the port redirects and counts the direction's
//! frames, and the socket filter keeps them out of guardwire's ring.
//!
//! - Counting: [`FastPath::sweep`] (once a second, before the flow table's
//!   sweep) adds what the kernel counted to each flow, so records, windows,
//!   metrics and auto-bandwidth see every packet and byte.
//! - Re-judging: every entry carries the epoch it was offered under; the
//!   kernel forwards it only while that is the epoch in force.
//!   [`FastPath::rejudge`] moves the epoch on before and after a change that
//!   may alter verdicts (a rule push), so each flow's next packet comes back
//!   to guardwire and is judged by the new rules.
//! - Failure: the tc programs are attached by bpf links that guardwire's
//!   process holds, so when it dies the kernel takes them off (a `closed`
//!   workload is cut off, an `open` one gets the watchdog's kernel path); and
//!   a keep-alive in the `state` map, moved on by the heartbeat, lapses when
//!   guardwire hangs, so a hung guardwire forwards nothing in the kernel either.
//! - The tc program runs in tcx before the ingress qdisc's filters and passes
//!   on what it does not forward, so the `off` mode's u32 redirect on the same
//!   port works as before.

mod maps;

pub use maps::{Key, Side, State, Value};

use crate::decide::{FastOp, Offer};
use crate::pipeline::Inspector;
use crate::pipeline::flow::{FlowKey, Offload};
use crate::vocab::{PortId, WorkloadId};
use aya::programs::tc::SchedClassifierLinkId;
use aya::programs::{SchedClassifier, SocketFilter, TcAttachType};
use maps::{Map, summed};
use rustc_hash::FxHashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

/// The object `build.rs` compiles from `fastpath.bpf.c` (empty when the build
/// had no clang).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fastpath.bpf.o"));

/// Flow directions one workload may hand to the kernel at once: the map is
/// shared, so one workload's flood of flows leaves room for the others'.
pub const PER_WORKLOAD: usize = 16384;

/// A keep-alive this old lets every entry lapse: the watchdog's hang limit.
const KEEPALIVE_NS: u64 = 600_000_000;

/// What the fast path has done since start.
#[derive(Debug, Default)]
pub struct FastCounters {
    /// Directions handed to the kernel.
    pub offered: AtomicU64,
    /// Offers the kernel map refused (full).
    pub refused: AtomicU64,
    /// Directions taken back (flow ended, changed, or gone).
    pub ended: AtomicU64,
    /// Frames the kernel forwarded (a GSO super-frame once).
    pub frames: AtomicU64,
    /// Packets the kernel forwarded (GSO segments).
    pub packets: AtomicU64,
    /// Bytes the kernel forwarded.
    pub bytes: AtomicU64,
}

/// The fast path's figures, for `guardwire stats`.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct FastStats {
    /// Flow directions the kernel forwards now.
    pub directions: usize,
    /// The epoch in force (moves on around every rule push).
    pub epoch: u64,
    /// Directions handed over since start.
    pub offered: u64,
    /// Offers the kernel's map had no room for.
    pub refused: u64,
    /// Directions taken back since start.
    pub ended: u64,
    /// Frames the kernel forwarded (a GSO super-frame once).
    pub frames: u64,
    /// Packets the kernel forwarded (GSO segments).
    pub packets: u64,
    /// Bytes the kernel forwarded.
    pub bytes: u64,
}

/// What the kernel forwarded in and out by one port (a GSO super-frame is one
/// frame; bytes as on the wire, each segment with its headers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortTally {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
}

/// A direction handed to the kernel, as guardwire remembers it.
struct Held {
    /// The flow it belongs to.
    flow: FlowKey,
    /// Its direction runs from the key's `lo` end to its `hi` end.
    lo_to_hi: bool,
    /// An east-west direction also belongs to the receiving workload's flow.
    peer: Option<WorkloadId>,
    /// The ports its frames arrive on and leave by.
    ports: (PortId, PortId),
    /// Counters already added to the flows.
    seen: Value,
}

/// The directions the kernel holds, and how many each workload holds.
#[derive(Default)]
struct Holds {
    map: FxHashMap<Key, Held>,
    per_slot: FxHashMap<u32, usize>,
}

impl Holds {
    /// Room for one more direction of the workload in `slot`?
    fn room(&self, slot: u32) -> bool {
        self.per_slot.get(&slot).copied().unwrap_or(0) < PER_WORKLOAD
    }

    fn insert(&mut self, key: Key, h: Held) {
        if self.map.insert(key, h).is_none() {
            *self.per_slot.entry(key.slot).or_default() += 1;
        }
    }

    fn remove(&mut self, key: &Key) -> Option<Held> {
        let h = self.map.remove(key)?;
        if let Some(n) = self.per_slot.get_mut(&key.slot) {
            *n -= 1;
            if *n == 0 {
                self.per_slot.remove(&key.slot);
            }
        }
        Some(h)
    }
}

/// The loaded fast path.
pub struct FastPath {
    ebpf: Mutex<aya::Ebpf>,
    links: Mutex<FxHashMap<PortId, SchedClassifierLinkId>>,
    /// Attached ports and their interface index.
    ifindex: RwLock<FxHashMap<PortId, u32>>,
    flows: Map<Key, Value>,
    ports: Map<u32, u32>,
    state: Map<u32, State>,
    /// What the kernel forwarded by each port, as of the last sweep.
    port_tally: Mutex<FxHashMap<PortId, PortTally>>,
    sock_filter: RawFd,
    epoch: AtomicU64,
    /// Held while the state map is written, so a keep-alive never writes an
    /// epoch older than one a rule push wrote.
    state_write: Mutex<()>,
    /// CLOCK_MONOTONIC ns at datapath clock 0.
    mono_zero_ns: u64,
    held: Mutex<Holds>,
    /// What it has done.
    pub counters: FastCounters,
}

/// CLOCK_MONOTONIC, ns: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// The program `name` of the object, as its type `P`.
fn program<'a, P>(ebpf: &'a mut aya::Ebpf, name: &str) -> Result<&'a mut P, String>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| format!("the BPF object has no {name}"))?
        .try_into()
        .map_err(|e| format!("{name}: {e}"))
}

fn map_fd(ebpf: &aya::Ebpf, name: &str) -> Result<OwnedFd, String> {
    let m = ebpf
        .map(name)
        .ok_or_else(|| format!("the BPF object has no map {name}"))?;
    let data = match m {
        aya::maps::Map::HashMap(d)
        | aya::maps::Map::PerCpuHashMap(d)
        | aya::maps::Map::Array(d) => d,
        _ => return Err(format!("map {name} is of an unexpected type")),
    };
    data.fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("map {name}: {e}"))
}

impl FastPath {
    /// Loads the programs and maps; `now_ns` is the datapath clock now. An
    /// error says why this node runs without the fast path.
    pub fn load(now_ns: u64) -> Result<FastPath, String> {
        if OBJECT.is_empty() {
            return Err("guardwire was built without clang, so without its BPF program".into());
        }
        let mut ebpf =
            aya::Ebpf::load(OBJECT).map_err(|e| format!("loading the BPF object: {e}"))?;
        program::<SchedClassifier>(&mut ebpf, "fast_tc")?
            .load()
            .map_err(|e| format!("loading fast_tc: {e}"))?;
        let sock = program::<SocketFilter>(&mut ebpf, "fast_sock")?;
        sock.load().map_err(|e| format!("loading fast_sock: {e}"))?;
        let sock_filter = sock
            .fd()
            .map_err(|e| format!("fast_sock: {e}"))?
            .as_fd()
            .as_raw_fd();
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| format!("{what}: {e}"))?;
        let fp = FastPath {
            flows: Map::new(map_fd(&ebpf, "flows")?, cpus),
            ports: Map::new(map_fd(&ebpf, "ports")?, 1),
            state: Map::new(map_fd(&ebpf, "state")?, 1),
            port_tally: Mutex::default(),
            ebpf: Mutex::new(ebpf),
            links: Mutex::default(),
            ifindex: RwLock::default(),
            sock_filter,
            epoch: AtomicU64::new(1),
            state_write: Mutex::new(()),
            mono_zero_ns: monotonic_ns().saturating_sub(now_ns),
            held: Mutex::default(),
            counters: FastCounters::default(),
        };
        fp.set_state()
            .map_err(|e| format!("fast path state: {e}"))?;
        Ok(fp)
    }

    /// The epoch offers are made under now.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// The socket filter to attach to a packet socket of an attached port.
    pub fn socket_filter(&self) -> RawFd {
        self.sock_filter
    }

    /// Writes the epoch in force and a keep-alive [`KEEPALIVE_NS`] from now;
    /// the caller holds `state_write`.
    fn set_state(&self) -> std::io::Result<()> {
        let st = State {
            epoch: self.epoch.load(Ordering::SeqCst),
            alive_ns: monotonic_ns() + KEEPALIVE_NS,
        };
        self.state.set(&0, &[st])
    }

    /// Moves the keep-alive on: the kernel forwards for another
    /// [`KEEPALIVE_NS`]. The heartbeat calls it while every worker loops.
    pub fn keepalive(&self) {
        let _w = self.state_write.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self.set_state();
    }

    fn bump(&self) {
        let _w = self.state_write.lock().unwrap_or_else(|e| e.into_inner());
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if let Err(err) = self.set_state() {
            tracing::error!("fast path: cannot move the epoch on: {err}");
        }
    }

    /// Runs a change that may alter verdicts (rules, limits, modes) so that no
    /// flow keeps a kernel verdict made before it: the epoch moves on before
    /// the change is visible (each offloaded flow's next packet comes back to
    /// guardwire) and again after it (an offer judged in between lapses).
    pub fn rejudge<R>(&self, change: impl FnOnce() -> R) -> R {
        self.bump();
        let r = change();
        self.bump();
        r
    }

    /// Puts the tc program on port `port` (interface `name`) of the workload in
    /// `slot`.
    pub fn attach(&self, port: PortId, name: &str, slot: usize) -> Result<(), String> {
        let ifindex = crate::port::ifindex(name).map_err(|e| format!("{name}: {e}"))? as u32;
        self.ports
            .set(&ifindex, &[slot as u32])
            .map_err(|e| format!("{name}: fast path port map: {e}"))?;
        let mut ebpf = self.ebpf.lock().unwrap_or_else(|e| e.into_inner());
        let tc = program::<SchedClassifier>(&mut ebpf, "fast_tc")?;
        let link = match tc.attach(name, TcAttachType::Ingress) {
            Ok(l) => l,
            Err(e) => {
                let _ = self.ports.remove(&ifindex);
                return Err(format!(
                    "{name}: attaching the fast path at tc ingress: {e}"
                ));
            }
        };
        self.links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(port, link);
        self.ifindex
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(port, ifindex);
        Ok(())
    }

    /// Takes the tc program off `port` and forgets it.
    pub fn detach(&self, port: PortId) {
        let ifindex = self
            .ifindex
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&port);
        if let Some(i) = ifindex {
            let _ = self.ports.remove(&i);
        }
        self.port_tally
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&port);
        let link = self
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&port);
        if let Some(link) = link {
            let mut ebpf = self.ebpf.lock().unwrap_or_else(|e| e.into_inner());
            if let Ok(tc) = program::<SchedClassifier>(&mut ebpf, "fast_tc")
                && let Err(e) = tc.detach(link)
            {
                tracing::error!(port = port.0, "fast path: detaching from tc ingress: {e}");
            }
        }
    }

    /// What the kernel forwarded in and out by each port, up to now: the
    /// sweep's totals plus what each direction held has forwarded since
    /// (one map read per direction).
    pub fn ports_now(&self) -> FxHashMap<PortId, PortTally> {
        let mut t = self
            .port_tally
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for (key, h) in &held.map {
            let Some(v) = self.flows.get(key).ok().flatten().map(|c| summed(&c)) else {
                continue;
            };
            let frames = v.frames.saturating_sub(h.seen.frames);
            let bytes = v.bytes.saturating_sub(h.seen.bytes);
            if frames > 0 {
                let rx = t.entry(h.ports.0).or_default();
                rx.rx_frames += frames;
                rx.rx_bytes += bytes;
                let tx = t.entry(h.ports.1).or_default();
                tx.tx_frames += frames;
                tx.tx_bytes += bytes;
            }
        }
        t
    }

    fn ifindex_of(&self, port: PortId) -> Option<u32> {
        self.ifindex
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&port)
            .copied()
    }

    /// Hands one direction of a flow to the kernel; true when it took it. The
    /// caller marks the flow offloaded only then.
    pub fn offer(&self, o: &Offer) -> bool {
        let (Some(inx), Some(outx)) = (self.ifindex_of(o.in_port), self.ifindex_of(o.out_port))
        else {
            return false; // a port the kernel cannot forward on (a VM's tap)
        };
        let key = Key::of(&o.key, o.lo_to_hi);
        let side = Side {
            in_ifindex: inx,
            out_ifindex: outx,
            src: o.src,
            dst: o.dst,
            vlan_tci: o.vlan.map_or(0, |v| v.tci),
            vlan_proto: o.vlan.map_or(0, |v| v.tpid.to_be()),
            vlan_present: u8::from(o.vlan.is_some()),
            pad: [0; 3],
        };
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if !held.map.contains_key(&key) && !held.room(key.slot) {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        // An entry of an earlier epoch is not forwarded by the kernel, so its
        // counters stand still while it is rewritten; they are kept.
        let mut copies = match self.flows.get(&key) {
            Ok(Some(c)) => c,
            _ => vec![Value::default(); self.flows.copies()],
        };
        if copies[0].epoch == o.epoch && copies[0].side == side {
            return true;
        }
        for c in copies.iter_mut() {
            c.epoch = o.epoch;
            c.side = side;
        }
        if let Err(e) = self.flows.set(&key, &copies) {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("fast path: offer refused: {e}");
            return false;
        }
        match held.map.get_mut(&key) {
            Some(h) => {
                h.flow = o.key;
                h.peer = o.peer;
                h.ports = (o.in_port, o.out_port);
                h.seen.side = side;
            }
            None => held.insert(
                key,
                Held {
                    flow: o.key,
                    lo_to_hi: o.lo_to_hi,
                    peer: o.peer,
                    ports: (o.in_port, o.out_port),
                    seen: summed(&copies),
                },
            ),
        }
        self.counters.offered.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Carries out a burst's offers and ends; a flow is marked offloaded only
    /// for the directions the kernel took.
    pub fn apply(&self, ops: &[FastOp], ins: &Inspector) {
        for op in ops {
            match op {
                FastOp::Offer(o) => {
                    if self.offer(o) {
                        let side = Offload::side(o.lo_to_hi);
                        ins.flows.with_flow_mut(&o.key, |f| match &mut f.offload {
                            Some(x) if x.epoch == o.epoch => x.sides |= side,
                            x => {
                                *x = Some(Offload {
                                    epoch: o.epoch,
                                    sides: side,
                                })
                            }
                        });
                    }
                }
                FastOp::End(k) => self.end(k, ins),
            }
        }
    }

    /// Takes both directions of `flow` back from the kernel, adding their last
    /// counts to the flows.
    pub fn end(&self, flow: &FlowKey, ins: &Inspector) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for dir in [true, false] {
            let key = Key::of(flow, dir);
            let Some(mut h) = held.remove(&key) else {
                continue;
            };
            if let Ok(Some(v)) = self.flows.take(&key) {
                self.credit(ins, &mut h, &summed(&v));
            }
            self.counters.ended.fetch_add(1, Ordering::Relaxed);
        }
        drop(held);
        ins.flows.with_flow_mut(flow, |f| f.offload = None);
    }

    /// Adds what the kernel counted since the last call to the flows; takes
    /// back the directions whose flow is gone (expired, evicted).
    pub fn sweep(&self, ins: &Inspector) {
        let keys: Vec<Key> = {
            let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            held.map.keys().copied().collect()
        };
        for key in keys {
            // Read under the lock: a direction ended and offered again in
            // between would otherwise be credited the old entry's counts.
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            let Some(h) = held.map.get_mut(&key) else {
                continue;
            };
            let v = self.flows.get(&key).ok().flatten().map(|c| summed(&c));
            let present = match v {
                Some(v) => self.credit(ins, h, &v),
                None => false,
            };
            if !present {
                let h = held.remove(&key).expect("looked up above");
                drop(held);
                if let Ok(Some(v)) = self.flows.take(&key) {
                    let mut h = h;
                    self.credit(ins, &mut h, &summed(&v));
                }
                self.counters.ended.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Takes back every direction of the workload `wl`'s flows and every one
    /// that leaves by its ports (it left inline mode or is being detached).
    pub fn release(&self, wl: WorkloadId, ports: &[PortId], ins: &Inspector) {
        let out: Vec<u32> = ports.iter().filter_map(|p| self.ifindex_of(*p)).collect();
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<Key> = held
            .map
            .iter()
            .filter(|(k, h)| {
                k.slot as usize == wl.slot()
                    || h.peer == Some(wl)
                    || out.contains(&h.seen.side.out_ifindex)
            })
            .map(|(k, _)| *k)
            .collect();
        for key in gone {
            let mut h = held.remove(&key).expect("listed above");
            if let Ok(Some(v)) = self.flows.take(&key) {
                self.credit(ins, &mut h, &summed(&v));
            }
            ins.flows.with_flow_mut(&h.flow, |f| f.offload = None);
            self.counters.ended.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Directions the kernel holds now.
    pub fn entries(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .len()
    }

    /// Its figures now (counts as of the last sweep).
    pub fn stats(&self) -> FastStats {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FastStats {
            directions: self.entries(),
            epoch: self.epoch(),
            offered: load(&c.offered),
            refused: load(&c.refused),
            ended: load(&c.ended),
            frames: load(&c.frames),
            packets: load(&c.packets),
            bytes: load(&c.bytes),
        }
    }

    /// Adds `now - h.seen` to the flow (and, east-west, to the receiving
    /// workload's); false when the flow is no longer in the table.
    fn credit(&self, ins: &Inspector, h: &mut Held, now: &Value) -> bool {
        let frames = now.frames.saturating_sub(h.seen.frames);
        let packets = now.packets.saturating_sub(h.seen.packets);
        let bytes = now.bytes.saturating_sub(h.seen.bytes);
        h.seen = *now;
        if frames > 0 {
            let mut t = self.port_tally.lock().unwrap_or_else(|e| e.into_inner());
            let rx = t.entry(h.ports.0).or_default();
            rx.rx_frames += frames;
            rx.rx_bytes += bytes;
            let tx = t.entry(h.ports.1).or_default();
            tx.tx_frames += frames;
            tx.tx_bytes += bytes;
        }
        let c = &self.counters;
        c.frames.fetch_add(frames, Ordering::Relaxed);
        c.packets.fetch_add(packets, Ordering::Relaxed);
        c.bytes.fetch_add(bytes, Ordering::Relaxed);
        let lo_to_hi = h.lo_to_hi;
        let last_ms = now.last_ns.saturating_sub(self.mono_zero_ns) / 1_000_000;
        let add = |key: &FlowKey| {
            ins.flows.with_flow_mut(key, |f| {
                if packets > 0 {
                    let from_initiator = lo_to_hi == f.initiator_lo;
                    let at = last_ms.max(f.last_seen_ms);
                    f.account(from_initiator, packets, bytes, 0, at);
                }
            })
        };
        let present = add(&h.flow).is_some();
        if let Some(peer) = h.peer {
            add(&FlowKey {
                workload: peer,
                ..h.flow
            });
        }
        present
    }
}
