//! `/metrics`: Prometheus metrics, named as agents of this kind name them
//! (`guardwire_port_rx_frames_total{workload,port,role}`,
//! `guardwire_drops_total{workload,reason}`, ...). No per-flow labels: every
//! label set is bounded by workloads x (ports, reasons, categories, actions).
//!
//! Counters live in the datapath and the inspection side; a scrape reads them
//! into a registry built for that scrape, so nothing is counted twice and the
//! datapath pays nothing for metrics between scrapes.

use super::routes::Ctx;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};

/// Durations of control operations, kept between scrapes.
pub struct Timings {
    /// Seconds a rule push took (parse, keep, swap).
    pub rule_push: Histogram,
    /// Seconds an attach took.
    pub attach: Histogram,
}

impl Default for Timings {
    fn default() -> Self {
        // 1 ms .. ~8 s.
        Timings {
            rule_push: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            attach: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabels {
    workload: String,
    port: String,
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct WorkloadReason {
    workload: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OneWorkload {
    workload: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkloadAction {
    workload: String,
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabels {
    workload: String,
    category: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkloadDirection {
    workload: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkloadMode {
    workload: String,
    kind: String,
    mode: String,
}

fn counter(v: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(v);
    c
}

fn gauge(v: i64) -> Gauge {
    let g = Gauge::default();
    g.set(v);
    g
}

fn family<L, I>(values: I) -> Family<L, Counter>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
    I: IntoIterator<Item = (L, u64)>,
{
    let f = Family::<L, Counter>::default();
    for (l, v) in values {
        f.get_or_create(&l).inc_by(v);
    }
    f
}

fn gauges<L, I>(values: I) -> Family<L, Gauge>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
    I: IntoIterator<Item = (L, i64)>,
{
    let f = Family::<L, Gauge>::default();
    for (l, v) in values {
        f.get_or_create(&l).set(v);
    }
    f
}

/// The metrics text of this moment (OpenMetrics text format).
pub fn render(ctx: &Ctx) -> String {
    let mut reg = Registry::with_prefix("guardwire");
    let fwd = ctx.shared.fwd.load();
    let ports: Vec<_> = fwd
        .workload_ports()
        .map(|(info, role, _, slot)| {
            let l = PortLabels {
                workload: info.name.clone(),
                port: slot.port.name().to_string(),
                role: format!("{role:?}").to_lowercase(),
            };
            (l, slot.counters.snapshot())
        })
        .collect();
    let per_port = |f: fn(&crate::datapath::PortCountersSnapshot) -> u64| {
        family(ports.iter().map(|(l, c)| (l.clone(), f(c))))
    };
    reg.register(
        "port_rx_frames",
        "Frames received on a port (a GSO super-frame counts once)",
        per_port(|c| c.rx_frames),
    );
    reg.register(
        "port_rx_bytes",
        "Bytes received on a port",
        per_port(|c| c.rx_bytes),
    );
    reg.register(
        "port_tx_frames",
        "Frames sent on a port",
        per_port(|c| c.tx_frames),
    );
    reg.register(
        "port_tx_bytes",
        "Bytes sent on a port",
        per_port(|c| c.tx_bytes),
    );
    reg.register(
        "port_rx_mirrored_frames",
        "Frames received in mirror mode (inspected, not forwarded by guardwire)",
        per_port(|c| c.rx_mirrored),
    );
    reg.register(
        "kernel_drops",
        "Frames the kernel dropped because a port's receive ring was full",
        per_port(|c| c.kernel_drops),
    );
    reg.register(
        "port_rx_copied_frames",
        "Frames too big for a receive ring slot (GSO super-frames), read whole from the socket",
        per_port(|c| c.ring_copied),
    );
    reg.register(
        "port_rx_truncated_frames",
        "Frames that could not be read whole and were dropped, never forwarded cut",
        per_port(|c| c.ring_truncated),
    );
    let mut drops: std::collections::BTreeMap<WorkloadReason, u64> = Default::default();
    for (l, c) in &ports {
        for (reason, n) in &c.drops {
            *drops
                .entry(WorkloadReason {
                    workload: l.workload.clone(),
                    reason: reason.clone(),
                })
                .or_default() += n;
        }
    }
    reg.register(
        "drops",
        "Frames guardwire dropped, by the workload whose port received them and the reason",
        family(drops),
    );
    let c = &ctx.shared.counters;
    reg.register(
        "malformed",
        "Frames that did not parse, by kind",
        family(
            c.malformed()
                .into_iter()
                .map(|(kind, v)| (Kind { kind }, v)),
        ),
    );
    reg.register(
        "workload_info",
        "Workloads wired, with kind and steering mode (value 1)",
        gauges(fwd.workloads.iter().flatten().map(|w| {
            (
                WorkloadMode {
                    workload: w.name.clone(),
                    kind: w.kind.clone(),
                    mode: w.mode.name().to_string(),
                },
                1,
            )
        })),
    );
    let ins = &ctx.shared.inspector;
    let t = &ins.flows.counters;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    reg.register(
        "flows_active",
        "Flows in the flow table",
        gauge(ins.flows.len() as i64),
    );
    reg.register("flows_created", "Flows created", counter(load(&t.created)));
    reg.register(
        "flows_evicted",
        "Flows evicted from a full flow table",
        counter(load(&t.evicted)),
    );
    reg.register(
        "flows_expired",
        "Flows that timed out",
        counter(load(&t.expired)),
    );
    let c = &ins.counters;
    reg.register(
        "reassembly_bytes",
        "Bytes the application probes hold while putting TCP streams in order",
        gauge(ins.reassembly.total() as i64),
    );
    reg.register(
        "reassembly_withheld",
        "TCP segments withheld because the reassembly budget was spent",
        counter(load(&c.reassembly_withheld)),
    );
    reg.register(
        "tcp_overlap_conflicts",
        "TCP segments that rewrote bytes already seen (evasion attempts)",
        counter(load(&c.tcp_overlap_conflicts)),
    );
    reg.register(
        "dns_answers_ignored",
        "DNS answers not learnt from: unsolicited, late, or sent by a workload",
        counter(load(&c.dns_ignored)),
    );
    let totals = ctx.insp.totals();
    reg.register(
        "verdicts",
        "Flow decisions by workload and action (would_* in mirror mode)",
        family(
            totals
                .verdicts
                .into_iter()
                .map(|((workload, action), v)| (WorkloadAction { workload, action }, v)),
        ),
    );
    let apps = Family::<AppLabels, Counter>::default();
    for ((workload, category), c) in totals.apps {
        for (direction, v) in [("egress", c.bytes_out), ("ingress", c.bytes_in)] {
            apps.get_or_create(&AppLabels {
                workload: workload.clone(),
                category: category.clone(),
                direction: direction.into(),
            })
            .inc_by(v);
        }
    }
    reg.register(
        "app_bytes",
        "Bytes by workload, application category and direction (egress: from the flow's initiator)",
        apps,
    );
    let bw = Family::<WorkloadDirection, Gauge>::default();
    for name in ins.bandwidth_workloads() {
        let Some(rate) = ins.bandwidth(&name) else {
            continue;
        };
        for direction in ["egress", "ingress"] {
            bw.get_or_create(&WorkloadDirection {
                workload: name.clone(),
                direction: direction.into(),
            })
            .set(rate as i64);
        }
    }
    reg.register(
        "workload_bandwidth_bytes_per_second",
        "A workload's bandwidth limit, each direction",
        bw,
    );
    reg.register(
        "rules_generation",
        "Generation of the rules in force",
        gauge(ctx.shared.pipeline.load().generation as i64),
    );
    reg.register(
        "rules",
        "Rules in force",
        gauge(ctx.shared.pipeline.load().rules.len() as i64),
    );
    if let Some(fp) = ctx.shared.fast.get() {
        let c = &fp.counters;
        reg.register(
            "fastpath_directions",
            "Flow directions the kernel fast path forwards now",
            gauge(fp.entries() as i64),
        );
        reg.register(
            "fastpath_offered",
            "Flow directions handed to the kernel fast path",
            counter(load(&c.offered)),
        );
        reg.register(
            "fastpath_refused",
            "Flow directions the kernel fast path's map had no room for",
            counter(load(&c.refused)),
        );
        reg.register(
            "fastpath_ended",
            "Flow directions taken back from the kernel fast path",
            counter(load(&c.ended)),
        );
        reg.register(
            "fastpath_packets",
            "Packets the kernel fast path forwarded (GSO segments)",
            counter(load(&c.packets)),
        );
        reg.register(
            "fastpath_bytes",
            "Bytes the kernel fast path forwarded",
            counter(load(&c.bytes)),
        );
    }
    reg.register(
        "workers",
        "Datapath worker threads started",
        gauge(ctx.shared.params.workers as i64),
    );
    reg.register(
        "workers_alive",
        "Datapath worker threads running",
        gauge(ctx.shared.workers_alive.load(Ordering::Relaxed) as i64),
    );
    reg.register(
        "log_records_lost",
        "Verdict records that missed the log files",
        counter(ctx.insp.log.lost()),
    );
    reg.register(
        "log_records_suppressed",
        "Verdict records left out because their workload was over its log budget (log_records_per_sec)",
        family(
            ctx.insp
                .log
                .suppressed_by_workload()
                .into_iter()
                .map(|(workload, v)| (OneWorkload { workload }, v)),
        ),
    );
    reg.register(
        "rule_push_seconds",
        "Time a rule push took",
        ctx.metrics.rule_push.clone(),
    );
    reg.register(
        "attach_seconds",
        "Time an attach took",
        ctx.metrics.attach.clone(),
    );
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
    out
}

/// The same metrics in the classic Prometheus text format (0.0.4), for
/// scrapers and tools (promtool) that do not read OpenMetrics, which is all the
/// crate writes. The two differ only in how a counter's family is named
/// (`x` vs `x_total` in HELP and TYPE) and in the `# EOF` terminator.
pub fn classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if line.starts_with("# HELP ") {
            // Held until its TYPE line says whether the name needs `_total`.
            help = Some(line);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let suffix = if kind == "counter" { "_total" } else { "" };
            if let Some(h) = help.take() {
                let text = h
                    .strip_prefix("# HELP ")
                    .and_then(|r| r.split_once(' '))
                    .map_or("", |(_, t)| t);
                out.push_str(&format!("# HELP {name}{suffix} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name}{suffix} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn classic_format_names_counter_families_with_total() {
        let om = "# HELP gw_flows Flows.\n# TYPE gw_flows counter\ngw_flows_total 3\n\
                  # HELP gw_up Up.\n# TYPE gw_up gauge\ngw_up 1\n# EOF\n";
        assert_eq!(
            super::classic(om),
            "# HELP gw_flows_total Flows.\n# TYPE gw_flows_total counter\ngw_flows_total 3\n\
             # HELP gw_up Up.\n# TYPE gw_up gauge\ngw_up 1\n"
        );
    }
}
