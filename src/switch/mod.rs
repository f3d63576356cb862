//! Which port a frame leaves by: the MAC table and split horizon.
//!
//! Every port is either the *workload port* or the *uplink port* of one workload.
//! - A frame from an uplink port goes only to that uplink's own workload port.
//! - A frame from a workload port goes to the workload port of another attached
//!   workload when its destination MAC was learned there (east-west in one pass),
//!   otherwise to its own uplink port (broadcast and multicast too).
//!
//! Each frame has at most one egress port and no frame from an uplink ever reaches
//! another uplink, so whatever the host bridge floods, guardwire cannot form a loop
//! or multiply a storm.

mod mac_table;

use crate::vocab::{Mac, PortId, Role, WorkloadId, is_group};
pub use mac_table::{MacTable, Observe, SharedMacTable};

use crate::vocab::DropReason;

/// A workload's two ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkloadPorts {
    /// The port facing the workload.
    pub workload: PortId,
    /// The port facing the node network.
    pub uplink: PortId,
}

/// Who plays which role: the part of the forwarding state the switch needs.
#[derive(Clone, Debug, Default)]
pub struct Topology {
    ports: Vec<Option<(WorkloadId, Role)>>,
    workloads: Vec<Option<(WorkloadId, WorkloadPorts)>>,
}

impl Topology {
    /// Adds a workload with the two given ports. Ids must be unused.
    pub fn insert(&mut self, wl: WorkloadId, ports: WorkloadPorts) {
        let put = |v: &mut Vec<Option<(WorkloadId, Role)>>, p: PortId, r: Role| {
            let i = p.0 as usize;
            if v.len() <= i {
                v.resize(i + 1, None);
            }
            v[i] = Some((wl, r));
        };
        put(&mut self.ports, ports.workload, Role::Workload);
        put(&mut self.ports, ports.uplink, Role::Uplink);
        let i = wl.slot();
        if self.workloads.len() <= i {
            self.workloads.resize(i + 1, None);
        }
        self.workloads[i] = Some((wl, ports));
    }

    /// Removes a workload and its ports.
    pub fn remove(&mut self, wl: WorkloadId) -> Option<WorkloadPorts> {
        let slot = self.workloads.get_mut(wl.slot())?;
        if slot.is_none_or(|(id, _)| id != wl) {
            return None;
        }
        let (_, ports) = slot.take()?;
        for p in [ports.workload, ports.uplink] {
            if let Some(slot) = self.ports.get_mut(p.0 as usize) {
                *slot = None;
            }
        }
        Some(ports)
    }

    /// The role of a port and the workload it belongs to.
    pub fn role(&self, p: PortId) -> Option<(WorkloadId, Role)> {
        self.ports.get(p.0 as usize).copied().flatten()
    }

    /// The ports of a workload (none once it is gone, even if its slot is
    /// taken again).
    pub fn workload(&self, wl: WorkloadId) -> Option<WorkloadPorts> {
        match self.workloads.get(wl.slot())? {
            Some((id, ports)) if *id == wl => Some(*ports),
            _ => None,
        }
    }

    /// The workload in `slot`, if any.
    pub fn in_slot(&self, slot: usize) -> Option<WorkloadId> {
        self.workloads.get(slot)?.map(|(id, _)| id)
    }
}

/// Where a frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Egress {
    /// Out of this port.
    Port(PortId),
    /// Nowhere, for this reason.
    Drop(DropReason),
}

/// The egress of a frame that came in on `in_port` for destination `dst`.
pub fn egress(topo: &Topology, macs: &MacTable, in_port: PortId, dst: &Mac) -> Egress {
    let Some((wl, role)) = topo.role(in_port) else {
        return Egress::Drop(DropReason::NoEgress);
    };
    let Some(ports) = topo.workload(wl) else {
        return Egress::Drop(DropReason::NoEgress);
    };
    match role {
        Role::Uplink => Egress::Port(ports.workload),
        Role::Workload => {
            if !is_group(dst)
                && let Some(p) = macs.lookup(dst)
            {
                if p == in_port {
                    return Egress::Drop(DropReason::Hairpin);
                }
                if matches!(topo.role(p), Some((_, Role::Workload))) {
                    return Egress::Port(p);
                }
            }
            Egress::Port(ports.uplink)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn topo(n: u32) -> Topology {
        let mut t = Topology::default();
        for w in 0..n {
            t.insert(
                WorkloadId::new(w, 0),
                WorkloadPorts {
                    workload: PortId(2 * w),
                    uplink: PortId(2 * w + 1),
                },
            );
        }
        t
    }

    const BCAST: Mac = [0xff; 6];

    #[test]
    fn uplink_goes_only_to_its_workload() {
        let t = topo(3);
        let mut m = MacTable::default();
        m.learn([2, 0, 0, 0, 0, 9], PortId(4), 0, 8);
        // Even a frame for a MAC learned on another workload port stays on its side.
        assert_eq!(
            egress(&t, &m, PortId(1), &[2, 0, 0, 0, 0, 9]),
            Egress::Port(PortId(0))
        );
        assert_eq!(egress(&t, &m, PortId(3), &BCAST), Egress::Port(PortId(2)));
    }

    #[test]
    fn east_west_in_one_pass() {
        let t = topo(2);
        let mut m = MacTable::default();
        let b = [2, 0, 0, 0, 0, 0xb];
        m.learn(b, PortId(2), 0, 8);
        assert_eq!(egress(&t, &m, PortId(0), &b), Egress::Port(PortId(2)));
        // Unknown and broadcast go to the own uplink.
        assert_eq!(
            egress(&t, &m, PortId(0), &[2, 0, 0, 0, 0, 0xc]),
            Egress::Port(PortId(1))
        );
        assert_eq!(egress(&t, &m, PortId(0), &BCAST), Egress::Port(PortId(1)));
        assert_eq!(
            egress(&t, &m, PortId(2), &b),
            Egress::Drop(DropReason::Hairpin)
        );
    }

    #[test]
    fn removed_workload_is_no_egress() {
        let mut t = topo(2);
        let mut m = MacTable::default();
        let b = [2, 0, 0, 0, 0, 0xb];
        m.learn(b, PortId(2), 0, 8);
        t.remove(WorkloadId::new(1, 0));
        assert_eq!(egress(&t, &m, PortId(0), &b), Egress::Port(PortId(1)));
        assert_eq!(
            egress(&t, &m, PortId(3), &b),
            Egress::Drop(DropReason::NoEgress)
        );
    }

    proptest! {
        /// Split horizon and loop freedom for any table contents and frames.
        #[test]
        fn split_horizon(n in 1u32..6,
                         learned in proptest::collection::vec((any::<[u8; 6]>(), 0u32..12), 0..40),
                         frames in proptest::collection::vec((0u32..12, any::<[u8; 6]>()), 1..100)) {
            let t = topo(n);
            let mut m = MacTable::default();
            for (mac, p) in learned {
                if p < 2 * n && p % 2 == 0 && !is_group(&mac) {
                    m.learn(mac, PortId(p), 0, 64);
                }
            }
            for (inp, dst) in frames {
                let inp = PortId(inp % (2 * n));
                let (wl, role) = t.role(inp).unwrap();
                match egress(&t, &m, inp, &dst) {
                    Egress::Port(out) => {
                        prop_assert_ne!(out, inp);
                        let (owl, orole) = t.role(out).unwrap();
                        if role == Role::Uplink {
                            prop_assert_eq!(out, t.workload(wl).unwrap().workload);
                        } else if orole == Role::Uplink {
                            prop_assert_eq!(owl, wl, "a workload only ever reaches its own uplink");
                        }
                        if is_group(&dst) {
                            prop_assert_eq!(orole == Role::Uplink, role == Role::Workload);
                        }
                    }
                    Egress::Drop(r) => prop_assert_eq!(r, DropReason::Hairpin),
                }
            }
        }
    }
}
