//! One worker thread: waits for its ports to become readable (epoll through mio,
//! no busy polling), then for each ready port runs bursts through
//! pipeline -> switch -> egress ports until the port is drained.

use super::{BurstTally, Forwarding, Shared};
use crate::pipeline::parse::{IpFacts, L3};
use crate::pipeline::{Context, Pipeline, Size, Verdict, reject};
use crate::port::{Frame, Port, VlanTag, VnetHdr};
use crate::switch::{self, Egress, MacTable, Observe};
use crate::vocab::{Direction, DropReason, Mac, PortId, Role, SteeringMode};
use arc_swap::{ArcSwap, Cache};
use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Token of the waker that signals a command.
pub(super) const WAKER: Token = Token(usize::MAX);

/// What the control side asks of a worker.
pub(super) enum WorkerCmd {
    /// Start polling this port (already present in the forwarding state).
    Add(PortId, Arc<dyn Port>),
    /// Stop polling this port, drop it, and confirm.
    Remove(PortId, Sender<()>),
    /// Drop every old snapshot (and the ports only they still hold), and confirm.
    Sync(Sender<()>),
    /// Leave the loop.
    Stop,
}

struct Owned {
    id: PortId,
    port: Arc<dyn Port>,
    ready: bool,
}

/// Reused buffers of a burst: which frames go to which egress port.
#[derive(Default)]
struct Scratch {
    groups: Vec<(PortId, Vec<u16>)>,
    used: usize,
    learn: Vec<(Mac, PortId)>,
}

impl Scratch {
    fn push(&mut self, out: PortId, i: u16) {
        for g in &mut self.groups[..self.used] {
            if g.0 == out {
                g.1.push(i);
                return;
            }
        }
        if self.used == self.groups.len() {
            self.groups.push((out, Vec::with_capacity(64)));
        } else {
            self.groups[self.used].0 = out;
            self.groups[self.used].1.clear();
        }
        self.groups[self.used].1.push(i);
        self.used += 1;
    }
}

/// A shaped frame waiting for its departure time.
struct Held {
    at: u64,
    seq: u64,
    out: PortId,
    data: Vec<u8>,
    vnet: VnetHdr,
    vlan: Option<VlanTag>,
}

impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// The worker's delay queue: frames a shaper holds back, earliest first, bounded
/// in bytes. Buffers are reused.
#[derive(Default)]
struct DelayQueue {
    heap: BinaryHeap<Reverse<Held>>,
    bytes: usize,
    seq: u64,
    spare: Vec<Vec<u8>>,
}

impl DelayQueue {
    fn hold(&mut self, at: u64, out: PortId, fr: &Frame<'_>, limit: usize) -> bool {
        let d = fr.data();
        if self.bytes + d.len() > limit {
            return false;
        }
        let mut data = self.spare.pop().unwrap_or_default();
        data.clear();
        data.extend_from_slice(d);
        self.bytes += d.len();
        self.seq += 1;
        self.heap.push(Reverse(Held {
            at,
            seq: self.seq,
            out,
            data,
            vnet: fr.vnet,
            vlan: fr.vlan,
        }));
        true
    }

    fn next_at(&self) -> Option<u64> {
        self.heap.peek().map(|h| h.0.at)
    }
}

/// How often an idle worker wakes to show it is alive.
pub const HEARTBEAT: Duration = Duration::from_millis(100);

pub(super) struct Worker {
    id: usize,
    poll: Poll,
    cmds: Receiver<WorkerCmd>,
    shared: Arc<Shared>,
    owned: Vec<Owned>,
    fwd: Cache<Arc<ArcSwap<Forwarding>>, Arc<Forwarding>>,
    macs: Cache<Arc<ArcSwap<MacTable>>, Arc<MacTable>>,
    pipeline: Cache<Arc<ArcSwap<Pipeline>>, Arc<Pipeline>>,
    scratch: Scratch,
    delayed: DelayQueue,
}

impl Worker {
    pub(super) fn new(
        id: usize,
        poll: Poll,
        cmds: Receiver<WorkerCmd>,
        shared: Arc<Shared>,
    ) -> Worker {
        Worker {
            id,
            poll,
            cmds,
            fwd: Cache::new(shared.fwd.clone()),
            macs: Cache::new(shared.macs.cell()),
            pipeline: Cache::new(shared.pipeline.clone()),
            shared,
            owned: Vec::new(),
            scratch: Scratch::default(),
            delayed: DelayQueue::default(),
        }
    }

    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let batch = self.shared.params.batch.clamp(1, 1024);
        let spin = Duration::from_micros(self.shared.params.spin_us);
        let mut last_work: Option<Instant> = None;
        loop {
            let beat = self.shared.inspector.now_ns() / 1_000_000;
            self.shared.heartbeats[self.id].store(beat, Ordering::Relaxed);
            // Keep looking without sleeping for a short while after the last frame:
            // waking a sleeping thread costs tens of microseconds per frame on a
            // virtual machine, which would dominate the RTT of request/response
            // traffic and slow TCP's ACK clock. Then sleep in epoll until woken.
            let busy = self.owned.iter().any(|o| o.ready);
            let hot = last_work.is_some_and(|t| t.elapsed() < spin);
            let held = self.release_held();
            let timeout = if busy || hot {
                Some(Duration::ZERO)
            } else {
                // Even idle, wake for the heartbeat the watchdog reads.
                Some(held.map_or(HEARTBEAT, |ns| Duration::from_nanos(ns).min(HEARTBEAT)))
            };
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                tracing::error!(worker = self.id, "poll failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
            let mut wake = false;
            for ev in events.iter() {
                if ev.token() == WAKER {
                    wake = true;
                } else if let Some(o) = self
                    .owned
                    .iter_mut()
                    .find(|o| o.id.0 as usize == ev.token().0)
                {
                    o.ready = true;
                }
            }
            if wake && !self.commands() {
                return;
            }
            // One burst per ready port per round keeps ports fair; a port stays
            // ready while its bursts come back full.
            for k in 0..self.owned.len() {
                if !self.owned[k].ready {
                    continue;
                }
                let port = self.owned[k].port.clone();
                let id = self.owned[k].id;
                match self.burst(id, &*port, batch) {
                    Ok(n) => {
                        self.owned[k].ready = n >= batch;
                        if n > 0 {
                            last_work = Some(Instant::now());
                        }
                    }
                    Err(e) => {
                        tracing::warn!(worker = self.id, port = port.name(), "receive failed: {e}");
                        self.owned[k].ready = false;
                    }
                }
            }
        }
    }

    /// Sends the held frames that are due; returns how long until the next one.
    fn release_held(&mut self) -> Option<u64> {
        self.delayed.next_at()?;
        let now = self.shared.inspector.now_ns();
        let fwd = self.fwd.load().clone();
        let mut tally = BurstTally::default();
        while let Some(at) = self.delayed.next_at() {
            if at > now {
                break;
            }
            let Some(Reverse(h)) = self.delayed.heap.pop() else {
                break;
            };
            self.delayed.bytes -= h.data.len();
            match fwd.port(h.out) {
                Some(slot) => {
                    let f = Frame::new(&h.data, h.vnet, h.vlan);
                    let r = slot.port.send_burst(&[f], &[0]);
                    count_sent(slot, &r, &mut tally);
                }
                None => tally.drop(DropReason::NoEgress, 1),
            }
            self.delayed.spare.push(h.data);
        }
        if !tally.is_empty() {
            self.shared.counters.add(&tally);
        }
        self.delayed
            .next_at()
            .map(|at| at.saturating_sub(now).max(1000))
    }

    /// Applies pending commands; false when told to stop.
    fn commands(&mut self) -> bool {
        while let Ok(cmd) = self.cmds.try_recv() {
            match cmd {
                WorkerCmd::Add(id, port) => {
                    let fd = port.fd();
                    if let Err(e) = self.poll.registry().register(
                        &mut SourceFd(&fd),
                        Token(id.0 as usize),
                        Interest::READABLE,
                    ) {
                        tracing::error!(
                            worker = self.id,
                            port = port.name(),
                            "cannot poll port: {e}"
                        );
                        continue;
                    }
                    // Frames may already wait in the ring: look once without an event.
                    self.owned.push(Owned {
                        id,
                        port,
                        ready: true,
                    });
                }
                WorkerCmd::Remove(id, done) => {
                    if let Some(k) = self.owned.iter().position(|o| o.id == id) {
                        let o = self.owned.swap_remove(k);
                        let fd = o.port.fd();
                        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                    }
                    let _ = done.send(());
                }
                WorkerCmd::Sync(done) => {
                    self.fwd.load();
                    self.macs.load();
                    self.pipeline.load();
                    let _ = done.send(());
                }
                WorkerCmd::Stop => return false,
            }
        }
        // Let go of old snapshots (and the ports they hold) right away.
        self.fwd.load();
        self.macs.load();
        self.pipeline.load();
        true
    }

    /// Receives one burst on `in_id` and sends every frame on its way.
    fn burst(&mut self, in_id: PortId, port: &dyn Port, batch: usize) -> std::io::Result<usize> {
        // Borrow the cached snapshots: cloning the Arcs per burst would bounce
        // their reference counts between workers.
        let Worker {
            fwd,
            macs,
            pipeline,
            shared,
            scratch,
            delayed,
            ..
        } = self;
        let (fwd, macs, pipeline) = (&**fwd.load(), &**macs.load(), &**pipeline.load());
        let shared = &**shared;
        let inspector = &*shared.inspector;
        let now = shared.now_secs();
        let now_ns = inspector.now_ns();
        let limit = shared.params.mac_limit;
        let queue_limit = shared.params.shape_queue_bytes;
        let mut tally = BurstTally::default();
        let n = port.recv_burst(batch, &mut |frames: &[Frame<'_>]| {
            scratch.used = 0;
            scratch.learn.clear();
            let Some(in_slot) = fwd.port(in_id) else {
                tally.drop(DropReason::NoEgress, frames.len() as u64);
                return;
            };
            let (in_wl, in_role) = match fwd.topo.role(in_id) {
                Some((w, r)) => (Some(w), Some(r)),
                None => (None, None),
            };
            let info = in_wl.and_then(|w| fwd.workload(w));
            let mode = info.map(|i| i.mode).unwrap_or_default();
            let direction = if in_role == Some(Role::Workload) {
                Direction::Egress
            } else {
                Direction::Ingress
            };
            let (mut bytes, mut gso, mut vlan) = (0u64, 0u64, 0u64);
            for (i, fr) in frames.iter().enumerate() {
                bytes += fr.wire_len() as u64;
                gso += fr.is_gso() as u64;
                vlan += fr.vlan.is_some() as u64;
                let pkt = match pipeline.validate(fr) {
                    Ok(p) => Some(p),
                    Err(Verdict::MalformedPass(m)) => {
                        tally.malformed(m);
                        None
                    }
                    Err(Verdict::MalformedDrop(m)) => {
                        tally.malformed(m);
                        tally.drop(DropReason::Malformed, 1);
                        continue;
                    }
                    Err(Verdict::Drop(r)) => {
                        tally.drop(r, 1);
                        continue;
                    }
                    Err(_) => continue,
                };
                let ip = match &pkt {
                    Some(p) => match p.l3 {
                        L3::Ip(ip) => Some(ip),
                        _ => None,
                    },
                    None => None,
                };
                let size = ip.map(|ip| real_size(fr, &ip));
                if let (Some(p), Some(info)) = (&pkt, info)
                    && direction == Direction::Egress
                    && pipeline.anti_spoofing
                    && let Err(r) = info.identity.check(p)
                {
                    if mode == SteeringMode::Inline {
                        tally.drop(r, 1);
                        continue;
                    }
                    // Mirror mode: the kernel has delivered it already.
                    inspector
                        .counters
                        .would_drop
                        .fetch_add(1, Ordering::Relaxed);
                }
                let mut verdict = Verdict::Forward;
                if let (Some(ip), Some(size), Some(wl), Some(info)) = (ip, size, in_wl, info)
                    && pipeline.inspect
                {
                    let ctx = Context {
                        workload: wl,
                        name: &info.name,
                        direction,
                        mirror: mode == SteeringMode::Mirror,
                    };
                    verdict = inspector.inspect(pipeline, &ctx, &ip, size, now_ns);
                }
                if mode != SteeringMode::Inline {
                    // The kernel carries this workload's frames; what reached us
                    // is a copy (mirror) or was already in the ring (off).
                    continue;
                }
                if !settle(verdict, &pkt, fr, in_slot, &mut tally) {
                    continue;
                }
                let d = fr.data();
                let dst: &Mac = d[0..6]
                    .try_into()
                    .expect("judged frames hold an Ethernet header");
                let src: &Mac = d[6..12]
                    .try_into()
                    .expect("judged frames hold an Ethernet header");
                if in_role == Some(Role::Workload) {
                    if crate::vocab::is_group(src) {
                        tally.drop(DropReason::BadSourceMac, 1);
                        continue;
                    }
                    match macs.observe(src, in_id, now, limit) {
                        Observe::Known => {}
                        Observe::OverLimit => {
                            tally.drop(DropReason::MacLimit, 1);
                            continue;
                        }
                        Observe::New | Observe::Moved(_) => {
                            if !scratch.learn.iter().any(|(m, _)| m == src) {
                                scratch.learn.push((*src, in_id));
                            }
                        }
                    }
                }
                let out = match switch::egress(&fwd.topo, macs, in_id, dst) {
                    Egress::Port(out) => out,
                    Egress::Drop(r) => {
                        tally.drop(r, 1);
                        continue;
                    }
                };
                // East-west: the frame also enters another workload, whose rules
                // judge it as ingress.
                if let (Some(ip), Some(size), Some((wl2, Role::Workload))) =
                    (ip, size, fwd.topo.role(out))
                    && pipeline.inspect
                    && Some(wl2) != in_wl
                    && let Some(info2) = fwd.workload(wl2)
                    && info2.mode != SteeringMode::Off
                {
                    let ctx = Context {
                        workload: wl2,
                        name: &info2.name,
                        direction: Direction::Ingress,
                        mirror: info2.mode == SteeringMode::Mirror,
                    };
                    let v2 = inspector.inspect(pipeline, &ctx, &ip, size, now_ns);
                    verdict = match (verdict, v2) {
                        (Verdict::Delay(a), Verdict::Delay(b)) => Verdict::Delay(a.max(b)),
                        (_, Verdict::Forward) => verdict,
                        (_, v2) => v2,
                    };
                    if !settle(verdict, &pkt, fr, in_slot, &mut tally) {
                        continue;
                    }
                }
                match verdict {
                    Verdict::Delay(at) => {
                        if !delayed.hold(at, out, fr, queue_limit) {
                            tally.drop(DropReason::ShapeOverflow, 1);
                        }
                    }
                    _ => scratch.push(out, i as u16),
                }
            }
            let c = &in_slot.counters;
            c.rx_frames
                .fetch_add(frames.len() as u64, Ordering::Relaxed);
            c.rx_bytes.fetch_add(bytes, Ordering::Relaxed);
            if gso != 0 {
                c.rx_gso.fetch_add(gso, Ordering::Relaxed);
            }
            if vlan != 0 {
                c.rx_vlan.fetch_add(vlan, Ordering::Relaxed);
            }
            if mode == SteeringMode::Mirror {
                c.rx_mirrored
                    .fetch_add(frames.len() as u64, Ordering::Relaxed);
            }
            for (out, pick) in &scratch.groups[..scratch.used] {
                let Some(slot) = fwd.port(*out) else {
                    tally.drop(DropReason::NoEgress, pick.len() as u64);
                    continue;
                };
                let r = slot.port.send_burst(frames, pick);
                count_sent(slot, &r, &mut tally);
            }
            if !scratch.learn.is_empty() {
                shared.macs.learn_all(&scratch.learn, now, limit);
            }
        })?;
        if n > 0 {
            shared.counters.add(&tally);
            if let Some(slot) = fwd.port(in_id) {
                slot.counters.add_drops(&tally);
            }
        }
        Ok(n)
    }
}

/// Acts on a verdict that ends a frame's journey here: counts drops and sends
/// the answer to a rejected packet. True when the frame goes on.
fn settle(
    v: Verdict,
    pkt: &Option<crate::pipeline::Packet<'_>>,
    fr: &Frame<'_>,
    in_slot: &super::PortSlot,
    tally: &mut BurstTally,
) -> bool {
    match v {
        Verdict::Forward | Verdict::Delay(_) | Verdict::MalformedPass(_) => true,
        Verdict::Drop(r) => {
            tally.drop(r, 1);
            false
        }
        Verdict::MalformedDrop(m) => {
            tally.malformed(m);
            tally.drop(DropReason::Malformed, 1);
            false
        }
        Verdict::Reject => {
            tally.drop(DropReason::Rejected, 1);
            if let Some(p) = pkt
                && let Some(answer) = reject::reply(p, fr.data())
            {
                let f = Frame::new(&answer, VnetHdr::default(), fr.vlan);
                let r = in_slot.port.send_burst(&[f], &[0]);
                count_sent(in_slot, &r, tally);
            }
            false
        }
    }
}

/// Adds a send's outcome to the port's counters and the burst's tally.
fn count_sent(slot: &super::PortSlot, r: &crate::port::SendReport, tally: &mut BurstTally) {
    slot.counters
        .tx_frames
        .fetch_add(r.sent as u64, Ordering::Relaxed);
    slot.counters.tx_bytes.fetch_add(r.bytes, Ordering::Relaxed);
    tally.drop(DropReason::TxBusy, r.busy as u64);
    tally.drop(DropReason::TxFailed, r.failed as u64);
}

/// A frame's size on the wire: a GSO super-frame is as many packets as it will
/// be segmented into, each with its own headers.
fn real_size(fr: &Frame<'_>, ip: &IpFacts<'_>) -> Size {
    let wire = fr.wire_len() as u64;
    if !fr.is_gso() {
        return Size {
            packets: 1,
            bytes: wire,
        };
    }
    let segs = fr.vnet.segments(fr.data().len()).max(1) as u64;
    let headers = (fr.data().len() - ip.payload.len()) as u64;
    Size {
        packets: segs,
        bytes: wire + (segs - 1) * headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::parse;
    use etherparse::PacketBuilder;

    #[test]
    fn a_super_frame_counts_as_its_segments() {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1, 2, 3, 4)
            .write(&mut f, &vec![0u8; 14_480])
            .unwrap();
        let vnet = VnetHdr {
            gso_type: crate::port::vnet::GSO_TCPV4,
            gso_size: 1448,
            hdr_len: 54,
            ..Default::default()
        };
        let fr = Frame::new(&f, vnet, None);
        let L3::Ip(ip) = parse(&f, &vnet).unwrap().l3 else {
            panic!("not IP")
        };
        let s = real_size(&fr, &ip);
        assert_eq!(s.packets, 10);
        // Ten segments of 1448 payload bytes, each with its 54 bytes of headers.
        assert_eq!(s.bytes, 10 * (1448 + 54));
        let plain = Frame::new(&f, VnetHdr::default(), None);
        assert_eq!(real_size(&plain, &ip).packets, 1);
    }
}
