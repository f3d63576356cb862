//! Per-packet cost of the decision stage the workers run (validation,
//! anti-spoofing, flow table, verdict, switch) with 10, 1k and 10k rules:
//! - `established`: a packet of a flow already judged (the fast path);
//! - `first`: the first packet of a new flow (table insert, naming by port and
//!   DNS cache, firewall lookup); 1000 new flows per iteration on a fresh table;
//! - `off`: validation and switching only, as with `[inspect] enabled = false`.
//!
//! Frames go through [`Stage::decide`] one burst of one frame at a time.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use etherparse::PacketBuilder;
use guardwire::decide::{Decisions, Scene, Stage, WorkloadInfo};
use guardwire::pipeline::firewall::RuleSet;
use guardwire::pipeline::flow::Timeouts;
use guardwire::pipeline::spoof::Identity;
use guardwire::pipeline::{Inspector, MalformedPolicy, Pipeline};
use guardwire::port::{Frame, VnetHdr};
use guardwire::switch::{MacTable, Topology, WorkloadPorts};
use guardwire::vocab::{OnFailure, PortId, SteeringMode, WorkloadId};
use std::hint::black_box;
use std::sync::Arc;

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

fn tcp(sport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC, [2, 0, 0, 0, 0, 2])
        .ipv4([10, 99, 0, 2], [10, 99, 3, 4], 64)
        .tcp(sport, 443, 1, 64_000)
        .ack(1)
        .write(&mut v, &[0u8; 1400])
        .unwrap();
    v
}

/// One workload, "pod0", whose frames enter on port 0.
struct Node {
    topo: Topology,
    workloads: Vec<Option<WorkloadInfo>>,
    macs: MacTable,
}

impl Node {
    fn new() -> Node {
        let mut topo = Topology::default();
        topo.insert(
            WorkloadId::new(0, 1),
            WorkloadPorts {
                workload: PortId(0),
                uplink: PortId(1),
            },
        );
        let mut macs = MacTable::default();
        macs.learn(MAC, PortId(0), 0, 8);
        Node {
            topo,
            workloads: vec![Some(WorkloadInfo {
                name: "pod0".into(),
                kind: "pod".into(),
                mode: SteeringMode::Inline,
                on_failure: OnFailure::Open,
                identity: Identity {
                    macs: vec![MAC],
                    ips: vec!["10.99.0.2".parse().unwrap()],
                    router: false,
                },
            })],
            macs,
        }
    }

    fn stage<'a>(&'a self, pl: &'a Pipeline, ins: &'a Inspector, now_ns: u64) -> Stage<'a> {
        Stage {
            scene: Scene {
                topo: &self.topo,
                workloads: &self.workloads,
                macs: &self.macs,
            },
            pipeline: pl,
            inspector: ins,
            mac_limit: 8,
            now_ns,
            fast: None,
        }
    }
}

fn one(stage: &Stage<'_>, out: &mut Decisions, frame: &[u8]) {
    let fr = [Frame::new(frame, VnetHdr::default(), None)];
    stage.decide(PortId(0), &fr, out);
    black_box(&out.each[0]);
}

fn pipeline(c: &mut Criterion) {
    let node = Node::new();
    let mut out = Decisions::default();
    let mut g = c.benchmark_group("pipeline");
    let frame = tcp(40000);
    let mut off = Pipeline::new(MalformedPolicy::Drop);
    off.inspect = false;
    let off_ins = Inspector::new(16, Timeouts::default());
    g.throughput(Throughput::Elements(1));
    g.bench_function("off", |b| {
        let stage = node.stage(&off, &off_ins, 0);
        b.iter(|| one(&stage, &mut out, &frame))
    });
    for n in [10usize, 1000, 10_000] {
        let pl = Pipeline::new(MalformedPolicy::Drop).with_rules(Arc::new(RuleSet::synthetic(n)));
        let ins = Inspector::new(1 << 16, Timeouts::default());
        one(&node.stage(&pl, &ins, 0), &mut out, &frame);
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("established/{n}"), |b| {
            let stage = node.stage(&pl, &ins, 1_000_000);
            b.iter(|| one(&stage, &mut out, &frame))
        });
        let frames: Vec<Vec<u8>> = (0..1000u16).map(|i| tcp(10_000 + i)).collect();
        g.throughput(Throughput::Elements(frames.len() as u64));
        g.bench_function(format!("first/{n}"), |b| {
            b.iter_batched(
                || Inspector::new(1 << 16, Timeouts::default()),
                |ins| {
                    let stage = node.stage(&pl, &ins, 1_000_000);
                    for f in &frames {
                        one(&stage, &mut out, f);
                    }
                    ins
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
