//! Judging cost against synthetic rule sets of 10, 1k and 10k rules: a flow that
//! matches nothing (the worst case: every shape is probed) and one that matches
//! an exact-destination rule in the middle of the list.

use criterion::{Criterion, criterion_group, criterion_main};
use guardwire::pipeline::firewall::{FlowFacts, RuleSet};
use guardwire::vocab::Direction;
use std::hint::black_box;
use std::net::IpAddr;

fn judge(c: &mut Criterion) {
    let mut g = c.benchmark_group("judge");
    for n in [10usize, 1000, 10_000] {
        let rs = RuleSet::synthetic(n);
        let miss = FlowFacts {
            workload: "pod0",
            direction: Direction::Ingress,
            src: IpAddr::from([10, 99, 1, 2]),
            dst: IpAddr::from([10, 99, 3, 4]),
            proto: 6,
            src_port: 40000,
            dst_port: 443,
            app: None,
            category: None,
        };
        // Rule i (i % 20 < 10) matches TCP to 10.{1 + (i >> 16) % 97}.{(i >> 8) & 255}.{i & 255}
        // port 1000 + i % 1000; pick the one nearest the middle.
        let i = n / 2 / 20 * 20 + 3;
        let hit = FlowFacts {
            dst: IpAddr::from([
                10,
                1 + ((i >> 16) % 97) as u8,
                ((i >> 8) & 255) as u8,
                (i & 255) as u8,
            ]),
            dst_port: 1000 + (i % 1000) as u16,
            ..miss
        };
        assert_eq!(rs.judge(&hit).rule, Some(i as u32));
        assert_eq!(rs.judge(&miss).rule, None);
        g.bench_function(format!("miss/{n}"), |b| {
            b.iter(|| rs.judge(black_box(&miss)))
        });
        g.bench_function(format!("hit/{n}"), |b| b.iter(|| rs.judge(black_box(&hit))));
        if n <= 1000 {
            g.bench_function(format!("linear-miss/{n}"), |b| {
                b.iter(|| rs.judge_linear(black_box(&miss)))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, judge);
criterion_main!(benches);
