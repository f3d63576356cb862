//! `guardwire classify`: runs a pcap file through the decision stage the
//! workers run (as mirror copies of one workload), and reports every flow.

use super::inspection::{load_apps, record};
use super::record::FlowRecord;
use crate::decide::{Decisions, Scene, Stage, WorkloadInfo};
use crate::pipeline::flow::{FlowKey, Timeouts};
use crate::pipeline::parse::L3;
use crate::pipeline::{Inspector, MalformedPolicy, Packet, Pipeline, parse};
use crate::port::{Frame, VnetHdr};
use crate::switch::{MacTable, Topology, WorkloadPorts};
use crate::vocab::{OnFailure, PortId, SteeringMode, WorkloadId};
use pcap_file::pcap::PcapReader;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Every flow in the pcap at `path`, oldest first.
pub fn classify_pcap(path: &Path, apps: Option<&Path>) -> Result<Vec<FlowRecord>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut rd = PcapReader::new(file).map_err(|e| format!("{}: {e}", path.display()))?;
    let apps = load_apps(apps)?;
    let pl = Pipeline::new(MalformedPolicy::Pass).configured(
        true,
        false,
        Default::default(),
        Default::default(),
        Arc::new(apps),
    );
    let ins = Inspector::new(1 << 20, Timeouts::default());
    // A capture has no workload: the side that spoke first in a flow plays
    // it, so a frame from that side arrives on the workload port and the
    // answers (DNS among them) on the uplink port, as they would.
    let wl = WorkloadId::new(0, 0);
    let (wl_port, uplink) = (PortId(0), PortId(1));
    let mut topo = Topology::default();
    topo.insert(
        wl,
        WorkloadPorts {
            workload: wl_port,
            uplink,
        },
    );
    let workloads = [Some(WorkloadInfo {
        name: "pcap".into(),
        kind: "pcap".into(),
        mode: SteeringMode::Mirror,
        on_failure: OnFailure::Open,
        identity: Default::default(),
    })];
    let macs = MacTable::default();
    let mut decisions = Decisions::default();
    let mut initiator_lo: HashMap<FlowKey, bool> = HashMap::new();
    let mut t0 = None;
    while let Some(pkt) = rd.next_packet() {
        let pkt = pkt.map_err(|e| format!("{}: {e}", path.display()))?;
        let ts = pkt.timestamp.as_nanos() as u64;
        let now_ns = ts - *t0.get_or_insert(ts);
        let in_port = match parse(&pkt.data, &VnetHdr::default()) {
            Ok(Packet { l3: L3::Ip(ip), .. }) => {
                let (key, lo_to_hi) = FlowKey::of(wl, &ip);
                let first = *initiator_lo.entry(key).or_insert(lo_to_hi);
                if first == lo_to_hi { wl_port } else { uplink }
            }
            _ => wl_port,
        };
        let stage = Stage {
            scene: Scene {
                topo: &topo,
                workloads: &workloads,
                macs: &macs,
            },
            pipeline: &pl,
            inspector: &ins,
            mac_limit: 0,
            now_ns,
            fast: None,
        };
        stage.decide(
            in_port,
            &[Frame::new(&pkt.data, VnetHdr::default(), None)],
            &mut decisions,
        );
    }
    let mut out = Vec::new();
    ins.flows.visit(|k, f| {
        out.push(record("pcap", "pcap", k, f, &pl, f.last_seen_ms));
    });
    out.sort_by_key(|r| r.first_seen);
    Ok(out)
}

/// One flow as the line `guardwire classify --json` prints.
pub fn json_line(r: &FlowRecord) -> String {
    let mut v = serde_json::json!({
        "proto": r.proto, "src": r.src, "dst": r.dst,
        "app": r.app, "category": r.category,
    });
    if let Some(h) = &r.host {
        v["host"] = h.clone().into();
    }
    if let Some(h) = &r.how {
        v["how"] = h.clone().into();
    }
    v.to_string()
}
