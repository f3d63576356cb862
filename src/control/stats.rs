//! `guardwire stats` as a person reads it.

use crate::datapath::StatsSnapshot;
use std::fmt::Write;

/// Renders the counters as a table of ports and lists of non-zero drops.
pub fn render(s: &StatsSnapshot) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "uptime {}s  workers {}  MAC entries {}  bursts {}",
        s.uptime_secs, s.workers, s.mac_entries, s.bursts
    );
    let _ = writeln!(
        o,
        "{:<10} {:<15} {:<8} {:>12} {:>14} {:>9} {:>12} {:>14} {:>8} {:>6} {:>12}",
        "workload",
        "port",
        "role",
        "rx_frames",
        "rx_bytes",
        "rx_gso",
        "tx_frames",
        "tx_bytes",
        "k_drops",
        "vlan",
        "kernel_fwd"
    );
    for p in &s.ports {
        let c = &p.counters;
        let role = match p.role {
            crate::vocab::Role::Workload => "workload",
            crate::vocab::Role::Uplink => "uplink",
        };
        let _ = writeln!(
            o,
            "{:<10} {:<15} {:<8} {:>12} {:>14} {:>9} {:>12} {:>14} {:>8} {:>6} {:>12}",
            p.workload,
            p.port,
            role,
            c.rx_frames,
            c.rx_bytes,
            c.rx_gso,
            c.tx_frames,
            c.tx_bytes,
            c.kernel_drops,
            c.rx_vlan,
            c.fast_rx_frames
        );
    }
    let list = |m: &std::collections::BTreeMap<String, u64>| {
        let v: Vec<String> = m
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(" ")
        }
    };
    let _ = writeln!(o, "drops:     {}", list(&s.drops));
    let _ = writeln!(o, "malformed: {}", list(&s.malformed));
    let _ = match &s.fastpath {
        None => writeln!(o, "fast path: off"),
        Some(f) => writeln!(
            o,
            "fast path: {} flow directions in the kernel (epoch {}); {} handed over, {} taken back, {} refused; forwarded {} packets, {} bytes",
            f.directions, f.epoch, f.offered, f.ended, f.refused, f.packets, f.bytes
        ),
    };
    o
}

/// Renders flow records as a table a person reads: verdict, workload, flow,
/// application, rule, counters, first seen and updated at.
pub fn render_flows(recs: &[crate::control::record::FlowRecord]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<11} {:<10} {:<8} {:<6} {:<44} {:<22} {:<14} {:>16} {:>16} {:<6} {:<12} {:<12}",
        "verdict",
        "workload",
        "event",
        "proto",
        "flow",
        "app (how)",
        "rule",
        "out pkts/bytes",
        "in pkts/bytes",
        "path",
        "first seen",
        "updated at"
    );
    for r in recs {
        let app = match &r.how {
            Some(h) => format!("{} ({h})", r.app),
            None => r.app.clone(),
        };
        let _ = writeln!(
            o,
            "{:<11} {:<10} {:<8} {:<6} {:<44} {:<22} {:<14} {:>16} {:>16} {:<6} {:<12} {:<12}",
            r.verdict(),
            r.workload,
            r.event,
            r.proto,
            format!("{} -> {}", r.src, r.dst),
            app,
            r.rule,
            format!("{}/{}", r.packets_out, r.bytes_out),
            format!("{}/{}", r.packets_in, r.bytes_in),
            if r.offloaded { "kernel" } else { "gw" },
            clock(r.first_seen),
            clock(r.updated_at),
        );
    }
    o
}

/// "HH:MM:SS.mmm" of a unix millisecond (UTC).
fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        ms % 1000
    )
}

/// Renders `guardwire usage`: the last closed window per workload and category,
/// then bandwidth limits and their changes.
pub fn render_usage(u: &crate::control::inspection::UsageReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<12} {:<18} {:>8} {:>14} {:>10} {:>14} {:>10} {:>6}",
        "workload", "category", "window", "bytes_out", "pkts_out", "bytes_in", "pkts_in", "flows"
    );
    for r in &u.series {
        let l = &r.last;
        let _ = writeln!(
            o,
            "{:<12} {:<18} {:>7}s {:>14} {:>10} {:>14} {:>10} {:>6}",
            r.workload,
            r.category,
            u.window_secs,
            l.bytes_out,
            l.packets_out,
            l.bytes_in,
            l.packets_in,
            l.flows,
        );
    }
    let mbit = |b: u64| b as f64 * 8.0 / 1e6;
    for b in &u.bandwidth {
        let _ = writeln!(
            o,
            "bandwidth {}: {:.1} Mbit/s",
            b.workload,
            mbit(b.bytes_per_sec)
        );
    }
    for c in &u.bandwidth_changes {
        let _ = writeln!(
            o,
            "  {} {}: {:.1} -> {:.1} Mbit/s ({})",
            clock(c.at),
            c.workload,
            mbit(c.from),
            mbit(c.to),
            c.reason,
        );
    }
    let f = &u.flows;
    let _ = writeln!(
        o,
        "flows: {} live of {} ({} B each), {} created, {} expired, {} evicted, {} rejudged",
        f.live, f.capacity, f.bytes_per_flow, f.created, f.expired, f.evicted, f.rejudged,
    );
    let _ = writeln!(
        o,
        "probes: {} B held in reassembly, {} segments withheld, {} overlap conflicts, {} exhausted, {} DNS answers ignored",
        f.reassembly_held_bytes,
        f.reassembly_withheld,
        f.tcp_overlap_conflicts,
        f.probes_exhausted,
        f.dns_ignored,
    );
    o
}

/// Renders `guardwire list`: workloads, ports, modes and frame counters.
pub fn render_workloads(list: &[crate::control::http::types::Workload]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<12} {:<4} {:<7} {:<7} {:<15} {:<15} {:>12} {:>12} {:>12}",
        "workload",
        "kind",
        "mode",
        "failure",
        "workload_port",
        "uplink_port",
        "wl_rx",
        "up_rx",
        "mirrored"
    );
    for w in list {
        let (wp, up) = (&w.counters.workload_port, &w.counters.uplink_port);
        let _ = writeln!(
            o,
            "{:<12} {:<4} {:<7} {:<7} {:<15} {:<15} {:>12} {:>12} {:>12}",
            w.name,
            w.kind,
            w.mode.name(),
            format!("{:?}", w.on_failure).to_lowercase(),
            w.workload_port,
            w.uplink_port,
            wp.rx_frames,
            up.rx_frames,
            wp.rx_mirrored + up.rx_mirrored,
        );
    }
    o
}
