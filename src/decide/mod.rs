//! The one decision stage: a batch of frames from one port in, a decision per
//! frame out, with what to learn and what to count. It sends nothing and owns no
//! socket, so the worker, the fuzzer, `guardwire classify` and the benches run
//! exactly it, and it is tested without root.
//!
//! For each frame, in order: validation (malformed policy), anti-spoofing on
//! frames from a workload, inspection as the sending workload sees it, the
//! steering mode (mirror and off frames are only copies), MAC learning and
//! limits, the switch (MAC table, split horizon), and for a frame that goes
//! east-west into another workload the second judgement as that workload sees
//! it, merged with the first by [`merge`].

pub mod fuzz;
mod tally;

pub use tally::BurstTally;

use crate::pipeline::flow::FlowKey;
use crate::pipeline::inspect::Fast;
use crate::pipeline::parse::{IpFacts, L3};
use crate::pipeline::spoof::Identity;
use crate::pipeline::{Checked, Context, Inspector, Packet, Pipeline, Size, Verdict, reject};
use crate::port::{Frame, VlanTag};
use crate::switch::{self, Egress, MacTable, Observe, Topology};
use crate::vocab::{
    Direction, DropReason, Mac, OnFailure, PortId, Role, SteeringMode, WorkloadId, is_group,
};
use serde::Serialize;
use std::sync::atomic::Ordering;

/// A workload as the decision stage and the control side know it.
#[derive(Clone, Debug, Serialize)]
pub struct WorkloadInfo {
    /// Name from the config or the attach command.
    pub name: String,
    /// `pod` or `vm`.
    pub kind: String,
    /// How its frames travel.
    pub mode: SteeringMode,
    /// What the watchdog does for it when guardwire dies.
    pub on_failure: OnFailure,
    /// The addresses it may send from.
    pub identity: Identity,
}

/// The node as one burst sees it: who plays which role, the workloads, the MAC
/// table. Snapshots, so nothing here changes under a burst.
#[derive(Clone, Copy)]
pub struct Scene<'a> {
    /// Roles of ports.
    pub topo: &'a Topology,
    /// Workloads by slot.
    pub workloads: &'a [Option<WorkloadInfo>],
    /// Learned MACs.
    pub macs: &'a MacTable,
}

impl<'a> Scene<'a> {
    /// The workload `wl`, while it is attached.
    pub fn workload(&self, wl: WorkloadId) -> Option<&'a WorkloadInfo> {
        attached(self.topo, self.workloads, wl)
    }
}

/// The workload `wl` of `workloads`, while it is attached (not a later one in
/// its slot).
pub fn attached<'a>(
    topo: &Topology,
    workloads: &'a [Option<WorkloadInfo>],
    wl: WorkloadId,
) -> Option<&'a WorkloadInfo> {
    topo.workload(wl)?;
    workloads.get(wl.slot())?.as_ref()
}

/// What becomes of one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Out of this port, now.
    Out(PortId),
    /// Out of `port` once the datapath clock reaches `until` (ns): a shaper holds it.
    Hold {
        /// The egress port.
        port: PortId,
        /// Departure time, ns on the datapath clock.
        until: u64,
    },
    /// Rejected: dropped, and answer `k` of [`Decisions::replies`] goes back out
    /// of the port the frame came in by.
    Reply(usize),
    /// Dropped, for this reason.
    Drop(DropReason),
    /// A copy (mirror mode, or a port of a workload in off mode): inspected and
    /// counted, never forwarded, since the kernel delivers the original.
    Absorbed,
}

/// One direction of a settled flow, offered to the kernel fast path: its
/// frames arrive on `in_port` from `src` to `dst` (with `vlan`) and leave by
/// `out_port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The flow, as the sending workload keys it.
    pub key: FlowKey,
    /// The direction runs from the key's `lo` end to its `hi` end.
    pub lo_to_hi: bool,
    /// Where its frames arrive.
    pub in_port: PortId,
    /// Where they leave.
    pub out_port: PortId,
    /// Their source MAC.
    pub src: Mac,
    /// Their destination MAC.
    pub dst: Mac,
    /// Their VLAN tag.
    pub vlan: Option<VlanTag>,
    /// East-west: the receiving workload, whose flow counts them too.
    pub peer: Option<WorkloadId>,
    /// The fast path epoch the verdict was made under.
    pub epoch: u64,
}

/// What the fast path is asked to do after a burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FastOp {
    /// Hand this direction to the kernel.
    Offer(Offer),
    /// Take the flow back: it ends, or is no longer settled.
    End(FlowKey),
}

/// What a burst received, for the ingress port's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Frames (a GSO super-frame counts once).
    pub frames: u64,
    /// Bytes on the wire.
    pub bytes: u64,
    /// GSO super-frames.
    pub gso: u64,
    /// Frames with a VLAN tag the kernel stripped.
    pub vlan: u64,
    /// Frames that were copies (mirror mode).
    pub mirrored: u64,
}

/// The stage's answer for one burst. Reused from burst to burst.
#[derive(Default)]
pub struct Decisions {
    /// One per frame, in order.
    pub each: Vec<Decision>,
    /// Answers to rejected packets (TCP RST, ICMP unreachable), by [`Decision::Reply`].
    pub replies: Vec<Vec<u8>>,
    /// New or moved MACs to learn, each once.
    pub learn: Vec<(Mac, PortId)>,
    /// Drops by reason (every `Drop` and `Reply` decision) and malformed frames by kind.
    pub tally: BurstTally,
    /// What was received.
    pub received: Received,
    /// Offers to and ends for the kernel fast path, each once.
    pub fast: Vec<FastOp>,
}

impl Decisions {
    fn clear(&mut self) {
        self.each.clear();
        self.replies.clear();
        self.learn.clear();
        self.tally = BurstTally::default();
        self.received = Received::default();
        self.fast.clear();
    }

    fn fast(&mut self, op: FastOp) {
        if !self.fast.contains(&op) {
            self.fast.push(op);
        }
    }
}

/// Merges the verdict of the sending workload with that of the workload an
/// east-west frame enters: a refusal by either wins (the receiver's, if both
/// refuse, since it is the one judging last), two shapers hold the frame until
/// the later of their times, and a receiver that lets the frame pass leaves
/// the sender's verdict as it was.
pub fn merge(sender: Verdict, receiver: Verdict) -> Verdict {
    match (sender, receiver) {
        (Verdict::Delay(a), Verdict::Delay(b)) => Verdict::Delay(a.max(b)),
        (v, Verdict::Forward) => v,
        (Verdict::Drop(r), Verdict::Delay(_)) => Verdict::Drop(r),
        (Verdict::Reject, Verdict::Delay(_)) => Verdict::Reject,
        (_, v) => v,
    }
}

/// One burst's decision stage: the snapshots it reads and the state it judges with.
pub struct Stage<'a> {
    /// Roles, workloads and MACs.
    pub scene: Scene<'a>,
    /// Rules and switches of inspection.
    pub pipeline: &'a Pipeline,
    /// Flow table, names and limits.
    pub inspector: &'a Inspector,
    /// MACs a workload port may hold.
    pub mac_limit: u32,
    /// The datapath clock, ns.
    pub now_ns: u64,
    /// The fast path's epoch, when the node has one and it is on.
    pub fast: Option<u64>,
}

/// The ingress port as the stage sees it.
struct Ingress<'a> {
    port: PortId,
    workload: Option<(WorkloadId, &'a WorkloadInfo)>,
    role: Option<Role>,
    mode: SteeringMode,
    direction: Direction,
}

impl<'a> Stage<'a> {
    /// Decides every frame of a burst received on `in_port`, into `out`.
    pub fn decide(&self, in_port: PortId, frames: &[Frame<'_>], out: &mut Decisions) {
        out.clear();
        let role = self.scene.topo.role(in_port);
        let workload = role.and_then(|(wl, _)| Some((wl, self.scene.workload(wl)?)));
        let ing = Ingress {
            port: in_port,
            workload,
            role: role.map(|(_, r)| r),
            mode: workload.map(|(_, i)| i.mode).unwrap_or_default(),
            direction: if role.is_some_and(|(_, r)| r == Role::Workload) {
                Direction::Egress
            } else {
                Direction::Ingress
            },
        };
        for fr in frames {
            let r = &mut out.received;
            r.frames += 1;
            r.bytes += fr.wire_len() as u64;
            r.gso += fr.is_gso() as u64;
            r.vlan += fr.vlan.is_some() as u64;
            r.mirrored += (ing.mode == SteeringMode::Mirror) as u64;
            let d = if ing.workload.is_none() {
                // The port left the forwarding state between receive and now.
                Decision::Drop(DropReason::NoEgress)
            } else {
                self.one(&ing, fr, out)
            };
            match d {
                Decision::Drop(r) => out.tally.drop(r, 1),
                Decision::Reply(_) => out.tally.drop(DropReason::Rejected, 1),
                _ => {}
            }
            out.each.push(d);
        }
    }

    fn one(&self, ing: &Ingress<'_>, fr: &Frame<'_>, out: &mut Decisions) -> Decision {
        let pl = self.pipeline;
        let pkt = match pl.check(fr) {
            Checked::Good(p) => Some(p),
            Checked::Pass(m) => {
                out.tally.malformed(m);
                None
            }
            Checked::Drop(r, m) => {
                out.tally.malformed(m);
                return Decision::Drop(r);
            }
        };
        let ip = match &pkt {
            Some(Packet { l3: L3::Ip(ip), .. }) => Some(*ip),
            _ => None,
        };
        let size = ip.as_ref().map(|ip| real_size(fr, ip));
        let (wl, info) = ing.workload.expect("decided only with a workload");
        if let Some(p) = &pkt
            && ing.direction == Direction::Egress
            && pl.anti_spoofing
            && let Err(r) = info.identity.check(p)
        {
            if ing.mode == SteeringMode::Inline {
                return Decision::Drop(r);
            }
            // A copy: the kernel has delivered it already.
            self.inspector
                .counters
                .would_drop
                .fetch_add(1, Ordering::Relaxed);
        }
        let mut verdict = Verdict::Forward;
        let mut fast = Fast::No;
        let mut peer = None;
        if let (Some(ip), Some(size)) = (&ip, size)
            && pl.inspect
        {
            let ctx = Context {
                workload: wl,
                name: &info.name,
                direction: ing.direction,
                mirror: ing.mode == SteeringMode::Mirror,
                fast: self.fast.filter(|_| ing.mode == SteeringMode::Inline),
            };
            verdict = self.inspector.inspect(pl, &ctx, ip, size, self.now_ns);
            if ctx.fast.is_some() {
                fast = self
                    .inspector
                    .fast_hint(&ctx, ip, verdict == Verdict::Forward);
                if let Fast::Unsettled { offloaded: true } = fast {
                    out.fast(FastOp::End(FlowKey::of(wl, ip).0));
                }
            }
        }
        if ing.mode != SteeringMode::Inline {
            return Decision::Absorbed;
        }
        if let Some(end) = settle(verdict, &pkt, fr, out) {
            return end;
        }
        let d = fr.data();
        let dst: &Mac = d[0..6]
            .try_into()
            .expect("a parsed frame holds an Ethernet header");
        let src: &Mac = d[6..12]
            .try_into()
            .expect("a parsed frame holds an Ethernet header");
        if ing.role == Some(Role::Workload) {
            if is_group(src) {
                return Decision::Drop(DropReason::BadSourceMac);
            }
            let now_secs = self.now_ns / 1_000_000_000;
            match self
                .scene
                .macs
                .observe(src, ing.port, now_secs, self.mac_limit)
            {
                Observe::Known => {}
                Observe::OverLimit => return Decision::Drop(DropReason::MacLimit),
                Observe::New | Observe::Moved(_) => {
                    if !out.learn.iter().any(|(m, _)| m == src) {
                        // MACs new in this burst count against the limit too.
                        let pending = out.learn.iter().filter(|(_, p)| *p == ing.port).count();
                        let held = self.scene.macs.count_on(ing.port) as usize;
                        if held + pending >= self.mac_limit as usize {
                            return Decision::Drop(DropReason::MacLimit);
                        }
                        out.learn.push((*src, ing.port));
                    }
                }
            }
        }
        let port = match switch::egress(self.scene.topo, self.scene.macs, ing.port, dst) {
            Egress::Port(p) => p,
            Egress::Drop(r) => return Decision::Drop(r),
        };
        // East-west: the frame also enters another workload, whose rules judge
        // it as ingress.
        if let (Some(ip), Some(size), Some((wl2, Role::Workload))) =
            (&ip, size, self.scene.topo.role(port))
            && pl.inspect
            && wl2 != wl
            && let Some(info2) = self.scene.workload(wl2)
            && info2.mode != SteeringMode::Off
        {
            let ctx = Context {
                workload: wl2,
                name: &info2.name,
                direction: Direction::Ingress,
                mirror: info2.mode == SteeringMode::Mirror,
                fast: self.fast.filter(|_| info2.mode == SteeringMode::Inline),
            };
            let v2 = self.inspector.inspect(pl, &ctx, ip, size, self.now_ns);
            let f2 = match ctx.fast {
                Some(_) => self.inspector.fast_hint(&ctx, ip, v2 == Verdict::Forward),
                None => Fast::Unsettled { offloaded: false },
            };
            if let Fast::Unsettled { offloaded: true } = f2 {
                out.fast(FastOp::End(FlowKey::of(wl2, ip).0));
            }
            // East-west, a direction is the kernel's only when both
            // workloads' flows are settled.
            fast = match (fast, f2) {
                (Fast::Offer, Fast::Offer | Fast::Held) => Fast::Offer,
                (Fast::Held, Fast::Unsettled { .. }) => {
                    out.fast(FastOp::End(FlowKey::of(wl, ip).0));
                    Fast::No
                }
                (Fast::Offer, Fast::Unsettled { .. }) => Fast::No,
                (f, _) => f,
            };
            peer = Some(wl2);
            verdict = merge(verdict, v2);
            if let Some(end) = settle(verdict, &pkt, fr, out) {
                return end;
            }
        }
        match verdict {
            Verdict::Delay(until) => Decision::Hold { port, until },
            _ => {
                if let (Fast::Offer, Some(ip), Some(epoch)) = (fast, &ip, self.fast) {
                    let (key, lo_to_hi) = FlowKey::of(wl, ip);
                    out.fast(FastOp::Offer(Offer {
                        key,
                        lo_to_hi,
                        in_port: ing.port,
                        out_port: port,
                        src: *src,
                        dst: *dst,
                        vlan: fr.vlan,
                        peer,
                        epoch,
                    }));
                }
                Decision::Out(port)
            }
        }
    }
}

/// The decision for a verdict that ends a frame's journey here (a drop, or a
/// reject with its answer); none when the frame goes on.
fn settle(
    v: Verdict,
    pkt: &Option<Packet<'_>>,
    fr: &Frame<'_>,
    out: &mut Decisions,
) -> Option<Decision> {
    match v {
        Verdict::Forward | Verdict::Delay(_) => None,
        Verdict::Drop(r) => Some(Decision::Drop(r)),
        Verdict::Reject => Some(
            match pkt.as_ref().and_then(|p| reject::reply(p, fr.data())) {
                Some(answer) => {
                    out.replies.push(answer);
                    Decision::Reply(out.replies.len() - 1)
                }
                None => Decision::Drop(DropReason::Rejected),
            },
        ),
    }
}

/// A frame's size on the wire: a GSO super-frame is as many packets as it will
/// be segmented into, each with its own headers.
pub fn real_size(fr: &Frame<'_>, ip: &IpFacts<'_>) -> Size {
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
pub(crate) mod tests;
