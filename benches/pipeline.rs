//! Per-packet cost of the pipeline (parse + anti-spoofing + flow table + verdict)
//! with 10, 1k and 10k rules:
//! - `established`: a packet of a flow already judged (the fast path);
//! - `first`: the first packet of a new flow (table insert, naming by port and
//!   DNS cache, firewall lookup); 1000 new flows per iteration on a fresh table;
//! - `off`: validation only, as with `[inspect] enabled = false`.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use etherparse::PacketBuilder;
use guardwire::pipeline::firewall::RuleSet;
use guardwire::pipeline::flow::Timeouts;
use guardwire::pipeline::parse::L3;
use guardwire::pipeline::spoof::Identity;
use guardwire::pipeline::{Context, Inspector, MalformedPolicy, Pipeline, Size};
use guardwire::port::{Frame, VnetHdr};
use guardwire::vocab::{Direction, WorkloadId};
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

fn one(pl: &Pipeline, ins: &Inspector, id: &Identity, frame: &[u8], now: u64) {
    let fr = Frame::new(frame, VnetHdr::default(), None);
    let p = pl.validate(&fr).expect("valid frame");
    id.check(&p).expect("own address");
    if let L3::Ip(ip) = p.l3 {
        let ctx = Context {
            workload: WorkloadId::new(0, 0),
            name: "pod0",
            direction: Direction::Egress,
            mirror: false,
        };
        let size = Size {
            packets: 1,
            bytes: frame.len() as u64,
        };
        black_box(ins.inspect(pl, &ctx, &ip, size, now));
    }
}

fn pipeline(c: &mut Criterion) {
    let id = Identity {
        macs: vec![MAC],
        ips: vec!["10.99.0.2".parse().unwrap()],
        router: false,
    };
    let mut g = c.benchmark_group("pipeline");
    let frame = tcp(40000);
    let off = Pipeline::new(MalformedPolicy::Drop);
    g.throughput(Throughput::Elements(1));
    g.bench_function("off", |b| {
        b.iter(|| {
            let fr = Frame::new(&frame, VnetHdr::default(), None);
            black_box(off.validate(&fr).is_ok())
        })
    });
    for n in [10usize, 1000, 10_000] {
        let pl = Pipeline::new(MalformedPolicy::Drop).with_rules(Arc::new(RuleSet::synthetic(n)));
        let ins = Inspector::new(1 << 16, Timeouts::default());
        one(&pl, &ins, &id, &frame, 0);
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("established/{n}"), |b| {
            b.iter(|| one(&pl, &ins, &id, &frame, 1_000_000))
        });
        let frames: Vec<Vec<u8>> = (0..1000u16).map(|i| tcp(10_000 + i)).collect();
        g.throughput(Throughput::Elements(frames.len() as u64));
        g.bench_function(format!("first/{n}"), |b| {
            b.iter_batched(
                || Inspector::new(1 << 16, Timeouts::default()),
                |ins| {
                    for f in &frames {
                        one(&pl, &ins, &id, f, 1_000_000);
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
