//! `guardwire classify`: runs a pcap file through the same parse, flow table and
//! application identification the datapath uses, and reports every flow.

use super::inspection::{load_apps, record};
use super::record::FlowRecord;
use crate::pipeline::flow::Timeouts;
use crate::pipeline::parse::L3;
use crate::pipeline::{Context, Inspector, MalformedPolicy, Pipeline, Size, parse};
use crate::port::VnetHdr;
use crate::vocab::{Direction, WorkloadId};
use pcap_file::pcap::PcapReader;
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
    // A capture has no workload: the side that spoke first in a flow plays it,
    // so answers (DNS among them) travel towards it as they would.
    let mut initiator_lo: std::collections::HashMap<crate::pipeline::flow::FlowKey, bool> =
        std::collections::HashMap::new();
    let mut t0 = None;
    while let Some(pkt) = rd.next_packet() {
        let pkt = pkt.map_err(|e| format!("{}: {e}", path.display()))?;
        let ts = pkt.timestamp.as_nanos() as u64;
        let now = ts - *t0.get_or_insert(ts);
        let Ok(p) = parse(&pkt.data, &VnetHdr::default()) else {
            continue;
        };
        if let L3::Ip(ip) = p.l3 {
            let size = Size {
                packets: 1,
                bytes: pkt.orig_len as u64,
            };
            let (key, lo_to_hi) = crate::pipeline::flow::FlowKey::of(WorkloadId::new(0, 0), &ip);
            let first = *initiator_lo.entry(key).or_insert(lo_to_hi);
            let ctx = Context {
                workload: WorkloadId::new(0, 0),
                name: "pcap",
                direction: if first == lo_to_hi {
                    Direction::Egress
                } else {
                    Direction::Ingress
                },
                mirror: true,
            };
            ins.inspect(&pl, &ctx, &ip, size, now);
        }
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
