//! One worker thread: waits for its ports to become readable (epoll through mio,
//! no busy polling), then for each ready port receives a burst, has the decision
//! stage decide it, and applies the decisions: sends, holds, answers, learns and
//! counts.

use super::delay::DelayQueue;
use super::{Forwarding, PortSlot, Shared};
use crate::decide::{BurstTally, Decision, Decisions, Stage};
use crate::pipeline::Pipeline;
use crate::port::{Frame, Port, SendReport, VnetHdr};
use crate::switch::MacTable;
use crate::vocab::{DropReason, PortId};
use arc_swap::{ArcSwap, Cache};
use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
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
    decisions: Decisions,
    delayed: DelayQueue,
    /// Test hook: `GUARDWIRE_PANIC_ON_PORT=<port>` makes the worker owning that
    /// port panic on its first burst, so tests can prove what a crashed worker
    /// leaves behind.
    panic_on: Option<String>,
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
            decisions: Decisions::default(),
            delayed: DelayQueue::default(),
            panic_on: std::env::var("GUARDWIRE_PANIC_ON_PORT").ok(),
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
                if self.panic_on.as_deref() == Some(port.name()) {
                    panic!(
                        "worker {} panics on purpose (GUARDWIRE_PANIC_ON_PORT)",
                        self.id
                    );
                }
                match self.burst(id, &*port, batch) {
                    Ok(n) => {
                        // Full as the port can give (a ring smaller than the
                        // batch included): more may wait, with no new edge.
                        self.owned[k].ready = n >= batch.min(port.burst_limit());
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
        while let Some(h) = self.delayed.pop_due(now) {
            match fwd.port(h.out) {
                Some(slot) => {
                    let r = slot.port.send_burst(&[h.frame()], &[0]);
                    count_sent(slot, &r, &mut tally);
                }
                None => tally.drop(DropReason::NoEgress, 1),
            }
            self.delayed.recycle(h);
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

    /// Receives one burst on `in_id`, decides it and applies the decisions.
    fn burst(&mut self, in_id: PortId, port: &dyn Port, batch: usize) -> std::io::Result<usize> {
        // Borrow the cached snapshots: cloning the Arcs per burst would bounce
        // their reference counts between workers.
        let Worker {
            fwd,
            macs,
            pipeline,
            shared,
            scratch,
            decisions,
            delayed,
            ..
        } = self;
        // The fast path's epoch is read before the snapshots: an offer made
        // under it was judged with state at least as new as the epoch.
        let fast = shared.fast.get().map(|f| f.epoch());
        let (fwd, macs, pipeline): (&Forwarding, &MacTable, &Pipeline) =
            (fwd.load(), macs.load(), pipeline.load());
        let shared = &**shared;
        let stage = Stage {
            scene: fwd.scene(macs),
            pipeline,
            inspector: &shared.inspector,
            mac_limit: shared.params.mac_limit,
            now_ns: shared.inspector.now_ns(),
            fast,
        };
        let queue_limit = shared.params.shape_queue_bytes;
        let mut tally = BurstTally::default();
        let n = port.recv_burst(batch, &mut |frames: &[Frame<'_>]| {
            stage.decide(in_id, frames, decisions);
            tally = std::mem::take(&mut decisions.tally);
            let in_slot = fwd.port(in_id);
            scratch.used = 0;
            for (i, d) in decisions.each.iter().enumerate() {
                match *d {
                    Decision::Out(out) => scratch.push(out, i as u16),
                    Decision::Hold { port, until } => {
                        if !delayed.hold(until, port, &frames[i], queue_limit) {
                            tally.drop(DropReason::ShapeOverflow, 1);
                        }
                    }
                    Decision::Reply(k) => {
                        if let Some(slot) = in_slot {
                            let answer = Frame::new(
                                &decisions.replies[k],
                                VnetHdr::default(),
                                frames[i].vlan,
                            );
                            let r = slot.port.send_burst(&[answer], &[0]);
                            count_sent(slot, &r, &mut tally);
                        }
                    }
                    Decision::Drop(_) | Decision::Absorbed => {}
                }
            }
            if let Some(slot) = in_slot {
                slot.counters.add_received(&decisions.received);
            }
            for (out, pick) in &scratch.groups[..scratch.used] {
                let Some(slot) = fwd.port(*out) else {
                    tally.drop(DropReason::NoEgress, pick.len() as u64);
                    continue;
                };
                let r = slot.port.send_burst(frames, pick);
                count_sent(slot, &r, &mut tally);
            }
            // After the frames that settled their flows are sent, so the
            // kernel's frames of a flow follow guardwire's.
            if let Some(fp) = shared.fast.get()
                && !decisions.fast.is_empty()
            {
                fp.apply(&decisions.fast, &shared.inspector);
            }
            if !decisions.learn.is_empty() {
                shared.macs.learn_all(
                    &decisions.learn,
                    stage.now_ns / 1_000_000_000,
                    stage.mac_limit,
                );
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

/// Adds a send's outcome to the port's counters and the burst's tally.
fn count_sent(slot: &PortSlot, r: &SendReport, tally: &mut BurstTally) {
    slot.counters
        .tx_frames
        .fetch_add(r.sent as u64, Ordering::Relaxed);
    slot.counters.tx_bytes.fetch_add(r.bytes, Ordering::Relaxed);
    tally.drop(DropReason::TxBusy, r.busy as u64);
    tally.drop(DropReason::TxFailed, r.failed as u64);
}
