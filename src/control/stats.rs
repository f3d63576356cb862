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
        "{:<10} {:<15} {:<8} {:>12} {:>14} {:>9} {:>12} {:>14} {:>8} {:>6}",
        "workload",
        "port",
        "role",
        "rx_frames",
        "rx_bytes",
        "rx_gso",
        "tx_frames",
        "tx_bytes",
        "k_drops",
        "vlan"
    );
    for p in &s.ports {
        let c = &p.counters;
        let role = match p.role {
            crate::switch::Role::Workload => "workload",
            crate::switch::Role::Uplink => "uplink",
        };
        let _ = writeln!(
            o,
            "{:<10} {:<15} {:<8} {:>12} {:>14} {:>9} {:>12} {:>14} {:>8} {:>6}",
            p.workload,
            p.port,
            role,
            c.rx_frames,
            c.rx_bytes,
            c.rx_gso,
            c.tx_frames,
            c.tx_bytes,
            c.kernel_drops,
            c.rx_vlan
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
    o
}
