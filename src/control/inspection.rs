//! The control side of the inspection pipeline: loads rules and applications,
//! swaps pushed rule sets in, and once a second sweeps the flow table into the
//! verdict log and the per-window statistics, and runs auto-bandwidth.

use super::record::autobw::{AutoBwState, Change};
use super::record::log::{Filter, FlowRecord, LogConfig, VerdictLog};
use super::record::windows::{Counts, Windows};
use super::rulebook::{self, Revision, RuleBook};
use crate::datapath::Shared;
use crate::pipeline::app::Apps;
use crate::pipeline::firewall::{Labels, RuleSet, RulesError};
use crate::pipeline::flow::{Flow, FlowKey, Sweep};
use crate::pipeline::{Pipeline, parse::proto};
use crate::vocab::{Direction, WorkloadId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Bandwidth changes kept for `guardwire usage`.
const CHANGES_KEPT: usize = 256;

/// A bandwidth change made by auto-bandwidth.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BandwidthChange {
    /// When.
    #[serde(
        serialize_with = "super::record::log::ser_millis",
        deserialize_with = "super::record::log::de_millis"
    )]
    #[schema(value_type = String, format = DateTime)]
    pub at: u64,
    /// The workload.
    pub workload: String,
    /// Bytes/s before.
    pub from: u64,
    /// Bytes/s after.
    pub to: u64,
    /// "saturated" or "idle".
    pub reason: String,
}

/// Per-workload auto-bandwidth state.
struct Auto {
    state: AutoBwState,
    policy: crate::pipeline::firewall::AutoBandwidth,
}

/// Everything the control side keeps about inspection.
pub struct Inspection {
    shared: Arc<Shared>,
    /// The verdict log.
    pub log: VerdictLog,
    windows: Mutex<Windows<(String, String)>>,
    auto: Mutex<BTreeMap<String, Auto>>,
    changes: Mutex<VecDeque<BandwidthChange>>,
    last_sweep_ms: Mutex<u64>,
    update_ms: u64,
    book: Mutex<RuleBook>,
    totals: Mutex<Totals>,
    /// Labels of the attached workloads, bound into every rule set installed.
    attached: Mutex<Labels>,
}

/// Counts since start, for the metrics (bounded by workloads x categories and
/// workloads x actions).
#[derive(Clone, Debug, Default)]
pub struct Totals {
    /// Flow decisions ("new" and "rejudged" records) by workload and action.
    pub verdicts: BTreeMap<(String, String), u64>,
    /// Traffic by workload and category.
    pub apps: BTreeMap<(String, String), Counts>,
}

/// Why a push was refused.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The text is not a usable rule set (with its line).
    #[error(transparent)]
    Invalid(#[from] RulesError),
    /// It could not be kept in state_dir, so it was not put in force.
    #[error("{0}")]
    Keep(String),
}

/// Loads the application catalogue: the built-in one, extended by `extra`.
pub fn load_apps(extra: Option<&Path>) -> Result<Apps, String> {
    let mut apps = Apps::builtin();
    if let Some(p) = extra {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        apps.extend(Apps::parse(&text, &p.display().to_string()).map_err(|e| e.to_string())?);
    }
    Ok(apps)
}

/// Loads a rule file, checking its application names against `apps`.
pub fn load_rules(path: &Path, apps: &Apps) -> Result<RuleSet, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    RuleSet::parse_with(&text, &path.display().to_string(), apps).map_err(|e| e.to_string())
}

impl Inspection {
    /// Starts the control side of inspection for a running datapath.
    pub fn new(
        shared: Arc<Shared>,
        log: LogConfig,
        update_secs: u64,
        book: RuleBook,
    ) -> std::io::Result<Inspection> {
        let me = Inspection {
            shared,
            log: VerdictLog::new(log)?,
            windows: Mutex::new(Windows::new()),
            auto: Mutex::new(BTreeMap::new()),
            changes: Mutex::new(VecDeque::new()),
            last_sweep_ms: Mutex::new(0),
            update_ms: update_secs.max(1) * 1000,
            book: Mutex::new(book),
            totals: Mutex::default(),
            attached: Mutex::default(),
        };
        let rules = me.shared.pipeline.load().rules.clone();
        me.apply_bandwidth(&rules);
        Ok(me)
    }

    /// Swaps `rules` in. Flows are judged again on their next packet; workload
    /// bandwidth limits follow the new set.
    pub fn install(&self, rules: RuleSet) {
        let rules = Arc::new(rules);
        let swap = || {
            // Limits first: a flow judged by the new rules meets the new limits.
            self.apply_bandwidth(&rules);
            let cur = self.shared.pipeline.load();
            self.shared
                .pipeline
                .store(Arc::new(cur.with_rules(rules.clone())));
        };
        // Flows the kernel forwards come back to be judged by the new rules.
        match self.shared.fast.get() {
            Some(fp) => fp.rejudge(swap),
            None => swap(),
        }
    }

    /// Parses pushed rule text and installs it as the next generation; on error
    /// the running rules stay. The text is kept (with who pushed it and when)
    /// before it is put in force, so a restart starts with it.
    pub fn push(&self, text: &str, origin: &str, by: &str) -> Result<Revision, PushError> {
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        let rules = self.parse(text, origin).map_err(PushError::Invalid)?;
        let rev = Revision {
            generation: self.shared.pipeline.load().generation + 1,
            hash: rulebook::hash(text),
            rules: rules.len(),
            at: super::record::log::now_ms(),
            by: by.to_string(),
            origin: origin.to_string(),
        };
        book.record(rev.clone(), text).map_err(PushError::Keep)?;
        self.install(rules);
        tracing::info!(
            rules = rev.rules,
            generation = rev.generation,
            by,
            origin,
            "rules installed"
        );
        Ok(rev)
    }

    /// Parses rule text against the node's applications, with the attached
    /// workloads' labels bound in.
    pub fn parse(&self, text: &str, origin: &str) -> Result<RuleSet, RulesError> {
        let apps = self.shared.pipeline.load().apps.clone();
        let attached = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        RuleSet::parse_bound(text, origin, Some(&apps), &attached)
    }

    /// Sets the labels of the attached workloads; when they changed, the
    /// rules in force are bound again (and flows judged again), so a
    /// `label = "..."` rule selects the workloads that are there now.
    pub fn bind_labels(&self, labels: Labels) {
        let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut cur = self.attached.lock().unwrap_or_else(|e| e.into_inner());
            if *cur == labels {
                return;
            }
            *cur = labels;
        }
        let Some(rev) = book.latest() else {
            return;
        };
        let Some(text) = book.text(rev.generation) else {
            return;
        };
        match self.parse(&text, &rev.origin) {
            Ok(rules) => {
                self.install(rules);
                tracing::info!(
                    generation = rev.generation,
                    "rules bound to workload labels"
                );
            }
            Err(e) => tracing::error!("binding workload labels: {e}"),
        }
    }

    /// The rule text in force and its revision (none before the first push and
    /// without a rule file: everything allowed by default).
    pub fn current_rules(&self) -> (Option<Revision>, String) {
        let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        match book.latest() {
            Some(r) => (Some(r.clone()), book.text(r.generation).unwrap_or_default()),
            None => (None, String::new()),
        }
    }

    /// Counts since start, for the metrics.
    pub fn totals(&self) -> Totals {
        self.totals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Revisions kept, newest first.
    pub fn rules_history(&self) -> Vec<Revision> {
        self.book
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .history()
    }

    /// Pushes the text of an earlier generation again, as a new generation.
    pub fn rollback(&self, generation: u64, by: &str) -> Result<Option<Revision>, PushError> {
        let text = self
            .book
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .text(generation);
        match text {
            Some(t) => self
                .push(&t, &format!("rollback to generation {generation}"), by)
                .map(Some),
            None => Ok(None),
        }
    }

    fn apply_bandwidth(&self, rules: &RuleSet) {
        let ins = &self.shared.inspector;
        let mut auto = self.auto.lock().unwrap_or_else(|e| e.into_inner());
        let mut keep = Vec::new();
        for name in rules.workload_names() {
            let Some(p) = rules.workload(name) else {
                continue;
            };
            match (&p.bandwidth, &p.auto_bandwidth) {
                (Some(start), Some(policy)) => {
                    // A limit auto-bandwidth already moved stays where it got to.
                    let cur = ins.bandwidth(name).unwrap_or(*start);
                    let state = AutoBwState::new(cur, policy);
                    ins.set_bandwidth(name, Some(state.limit));
                    auto.insert(
                        name.to_string(),
                        Auto {
                            state,
                            policy: *policy,
                        },
                    );
                }
                (Some(rate), None) => {
                    ins.set_bandwidth(name, Some(*rate));
                    auto.remove(name);
                }
                _ => continue,
            }
            keep.push(name.to_string());
        }
        for name in ins.bandwidth_workloads() {
            if !keep.contains(&name) {
                ins.set_bandwidth(&name, None);
                auto.remove(&name);
            }
        }
    }

    /// Starts the once-a-second sweeper thread.
    pub fn spawn(self: &Arc<Self>) -> std::io::Result<()> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("gw-sweeper".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_millis(1000));
                    me.sweep();
                }
            })
            .map(|_| ())
    }

    /// One sweep: records, windows, auto-bandwidth.
    pub fn sweep(&self) {
        let ins = &self.shared.inspector;
        let now_ms = ins.now_ns() / 1_000_000;
        let fwd = self.shared.fwd.load();
        let pl = self.shared.pipeline.load();
        // Names are looked up once per sweep; per flow only indexes are kept, so
        // visiting a flow that needs no record allocates nothing.
        let names: Vec<Option<(WorkloadId, String)>> = (0..fwd.workloads.len())
            .map(|i| {
                let wl = fwd.topo.in_slot(i)?;
                Some((wl, fwd.workload(wl)?.name.clone()))
            })
            .collect();
        let name = |wl: WorkloadId| match names.get(wl.slot()) {
            Some(Some((id, n))) if *id == wl => n.as_str(),
            _ => "?",
        };
        // What the kernel forwarded goes into the flows first.
        if let Some(fp) = self.shared.fast.get() {
            fp.sweep(ins);
        }
        let mut records = Vec::new();
        let mut counts: BTreeMap<(WorkloadId, usize), Counts> = BTreeMap::new();
        ins.flows.sweep(&ins.timeouts, now_ms, |k, f, why| {
            let (out, inn) = (f.tally[0], f.tally[1]);
            let c = Counts {
                bytes_out: out.bytes - f.report.counted[0].bytes,
                packets_out: out.packets - f.report.counted[0].packets,
                bytes_in: inn.bytes - f.report.counted[1].bytes,
                packets_in: inn.packets - f.report.counted[1].packets,
                flows: u64::from(!f.report.announced),
            };
            f.report.counted = f.tally;
            if c != Counts::default() {
                *counts
                    .entry((k.workload, pl.apps.category_index(f.app)))
                    .or_default() += c;
            }
            let event = if why == Sweep::Expired {
                Some("end")
            } else if !f.report.announced {
                Some("new")
            } else if f.report.changed {
                Some("rejudged")
            } else if now_ms.saturating_sub(f.report.logged_ms) >= self.update_ms
                && f.last_seen_ms > f.report.logged_ms
            {
                Some("update")
            } else {
                None
            };
            if let Some(ev) = event {
                let wl = name(k.workload);
                records.push(record(ev, wl, k, f, &pl, ins.unix_ms(f.last_seen_ms)));
                f.report.announced = true;
                f.report.changed = false;
                f.report.logged_ms = now_ms;
            }
        });
        let mut totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        // The log's budget clock: the datapath clock in unix ms, which never jumps.
        let log_ms = ins.unix_ms(now_ms);
        for r in records {
            // Decisions count here whether or not the log keeps their record.
            if r.event == "new" || r.event == "rejudged" {
                let action = if r.enforced {
                    r.detail.clone()
                } else {
                    format!("would_{}", r.detail)
                };
                *totals
                    .verdicts
                    .entry((r.workload.clone(), action))
                    .or_default() += 1;
            }
            self.log.record(r, log_ms);
        }
        // One summary per workload whose records went over its budget; the
        // budgets of workloads that are gone are forgotten.
        let live: Vec<String> = names.iter().flatten().map(|(_, n)| n.clone()).collect();
        self.log.summarize(log_ms, &live);
        let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        for ((wl, cat), c) in &counts {
            let key = (name(*wl).to_string(), pl.apps.categories()[*cat].clone());
            *totals.apps.entry(key.clone()).or_default() += *c;
            w.add(&key, *c);
        }
        drop(totals);
        // Windows are aligned to wall-clock seconds, which is what they report.
        w.tick(ins.unix_ms(now_ms) / 1000);
        w.forget_idle(600);
        drop(w);
        // Auto-bandwidth: the busier direction of the workload since the last
        // sweep, per second. Measured over the sweep's own interval rather than a
        // clock-aligned window, so a late sweep does not read as idle.
        let elapsed_ms = {
            let mut last = self.last_sweep_ms.lock().unwrap_or_else(|e| e.into_inner());
            let e = now_ms.saturating_sub(*last).max(1);
            *last = now_ms;
            e
        };
        let mut auto = self.auto.lock().unwrap_or_else(|e| e.into_inner());
        for (wl, a) in auto.iter_mut() {
            let (mut out, mut inn) = (0u64, 0u64);
            for (_, c) in counts.iter().filter(|((w, _), _)| name(*w) == wl) {
                out += c.bytes_out;
                inn += c.bytes_in;
            }
            let busier = out.max(inn) * 1000 / elapsed_ms;
            if let Some(Change { from, to, reason }) = a.state.step(&a.policy, busier) {
                ins.set_bandwidth(wl, Some(to));
                tracing::info!(
                    workload = wl.as_str(),
                    from,
                    to,
                    reason,
                    "bandwidth changed"
                );
                let mut ch = self.changes.lock().unwrap_or_else(|e| e.into_inner());
                if ch.len() == CHANGES_KEPT {
                    ch.pop_front();
                }
                ch.push_back(BandwidthChange {
                    at: ins.unix_ms(now_ms),
                    workload: wl.clone(),
                    from,
                    to,
                    reason: reason.to_string(),
                });
            }
        }
    }

    /// Live flows, as records, filtered.
    pub fn flows(&self, f: &Filter, limit: usize) -> Vec<FlowRecord> {
        let ins = &self.shared.inspector;
        let fwd = self.shared.fwd.load();
        let pl = self.shared.pipeline.load();
        let name = |wl: WorkloadId| fwd.workload(wl).map_or("", |w| w.name.as_str());
        // Keys first (a copy of each shard's keys under its lock), newest
        // first; then each record is made under its own flow's lock, so a walk
        // of a large table never holds the datapath up for more than a copy.
        let keys = ins
            .flows
            .recent_keys(|k| f.workload.as_deref().is_none_or(|w| w == name(k.workload)));
        let mut out = Vec::new();
        for k in keys {
            let r = ins.flows.with_flow(&k, |fl| {
                record(
                    "live",
                    name(k.workload),
                    &k,
                    fl,
                    &pl,
                    ins.unix_ms(fl.last_seen_ms),
                )
            });
            if let Some(r) = r.filter(|r| f.matches(r)) {
                out.push(r);
                if out.len() == limit {
                    break;
                }
            }
        }
        // Oldest first, as the log is.
        out.reverse();
        out
    }

    /// Statistics per workload and category for windows of `secs` (one of
    /// [`WINDOW_SIZES`]), and the bandwidth limits with their recent changes.
    pub fn usage(&self, secs: u64, workload: Option<&str>) -> Result<UsageReport, String> {
        if !WINDOW_SIZES.contains(&secs) {
            return Err(format!(
                "window: {secs} is not a window size; use one of {WINDOW_SIZES:?} (seconds)"
            ));
        }
        let w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let mut series = Vec::new();
        for k in w.keys() {
            if workload.is_some_and(|n| n != k.0) {
                continue;
            }
            series.push(UsageSeries {
                workload: k.0.clone(),
                category: k.1.clone(),
                last: w.last(k, secs),
                points: w
                    .series(k, secs)
                    .into_iter()
                    .map(|(start, counts)| UsagePoint { start, counts })
                    .collect(),
            });
        }
        drop(w);
        let ins = &self.shared.inspector;
        let bandwidth = ins
            .bandwidth_workloads()
            .into_iter()
            .filter(|name| workload.is_none_or(|n| n == name))
            .filter_map(|name| {
                let bytes_per_sec = ins.bandwidth(&name)?;
                Some(BandwidthLimit {
                    workload: name,
                    bytes_per_sec,
                })
            })
            .collect();
        let bandwidth_changes = self
            .changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|c| workload.is_none_or(|n| n == c.workload))
            .cloned()
            .collect();
        let c = &ins.counters;
        let t = &ins.flows.counters;
        let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        Ok(UsageReport {
            window_secs: secs,
            series,
            bandwidth,
            bandwidth_changes,
            flows: FlowTableFacts {
                live: ins.flows.len(),
                capacity: ins.flows.capacity(),
                bytes_per_flow: crate::pipeline::flow::FlowTable::bytes_per_flow(),
                created: r(&t.created),
                evicted: r(&t.evicted),
                expired: r(&t.expired),
                rejudged: r(&c.rejudged),
                named_by_content: r(&c.named_by_content),
                named_by_dns: r(&c.named_by_dns),
                fragments_first: r(&c.fragments_first),
                fragments_later: r(&c.fragments_later),
                mirror_would_drop: r(&c.would_drop),
                dns_ignored: r(&c.dns_ignored),
                reassembly_held_bytes: ins.reassembly.total(),
                reassembly_withheld: r(&c.reassembly_withheld),
                tcp_overlap_conflicts: r(&c.tcp_overlap_conflicts),
                probes_exhausted: r(&c.probes_exhausted),
            },
            log: LogFacts {
                written: self.log.written(),
                lost: self.log.lost(),
                suppressed: self.log.suppressed(),
                no_room: self.log.no_room(),
            },
        })
    }
}

/// Window sizes `usage` keeps, in seconds.
pub const WINDOW_SIZES: [u64; 4] = [1, 10, 60, 300];

/// Traffic per workload and category over time windows, and bandwidth limits.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageReport {
    /// The window size asked for.
    pub window_secs: u64,
    /// One series per workload and application category.
    pub series: Vec<UsageSeries>,
    /// Bandwidth limits in force (rules' `bandwidth`, moved by auto-bandwidth).
    pub bandwidth: Vec<BandwidthLimit>,
    /// Recent auto-bandwidth changes, oldest first.
    pub bandwidth_changes: Vec<BandwidthChange>,
    /// The flow table.
    pub flows: FlowTableFacts,
    /// The verdict log's writer.
    pub log: LogFacts,
}

/// The windows of one workload and category.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageSeries {
    /// The workload.
    pub workload: String,
    /// The application category.
    pub category: String,
    /// The last closed window.
    pub last: Counts,
    /// Closed windows still kept, oldest first.
    pub points: Vec<UsagePoint>,
}

/// One closed window.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsagePoint {
    /// Start of the window, unix seconds.
    pub start: u64,
    /// What it counted.
    #[serde(flatten)]
    pub counts: Counts,
}

/// A workload's bandwidth limit, each direction.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BandwidthLimit {
    /// The workload.
    pub workload: String,
    /// Bytes per second.
    pub bytes_per_sec: u64,
}

/// Flow table figures.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FlowTableFacts {
    pub live: usize,
    pub capacity: usize,
    pub bytes_per_flow: usize,
    pub created: u64,
    pub evicted: u64,
    pub expired: u64,
    pub rejudged: u64,
    pub named_by_content: u64,
    pub named_by_dns: u64,
    pub fragments_first: u64,
    pub fragments_later: u64,
    pub mirror_would_drop: u64,
    /// DNS answers not learnt from (unsolicited, late, sent by a workload).
    pub dns_ignored: u64,
    /// Bytes the probes hold now while putting TCP streams in order.
    pub reassembly_held_bytes: usize,
    /// TCP segments withheld: the reassembly budget was spent.
    pub reassembly_withheld: u64,
    /// TCP segments that rewrote bytes already seen (evasion attempts).
    pub tcp_overlap_conflicts: u64,
    /// Probes whose request or hello did not end within the window.
    pub probes_exhausted: u64,
}

/// Verdict log writer figures.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogFacts {
    /// Records written to the files.
    pub written: u64,
    /// Records that missed the files (the writer could not keep up).
    pub lost: u64,
    /// Records left out (ring and files) because their workload was over its
    /// `log_records_per_sec` budget; "suppressed" records count them per workload.
    #[serde(default)]
    pub suppressed: u64,
    /// Records kept out of the files because the disk was down to the
    /// reserve left for the node's state (`log_disk_reserve_mb`).
    #[serde(default)]
    pub no_room: u64,
}

fn endpoint(ip: IpAddr, port: u16, proto_: u8) -> String {
    let with_port = matches!(proto_, proto::TCP | proto::UDP);
    match (ip, with_port) {
        (IpAddr::V4(a), true) => format!("{a}:{port}"),
        (IpAddr::V6(a), true) => format!("[{a}]:{port}"),
        (a, false) => a.to_string(),
    }
}

/// A flow as the verdict log records it.
pub fn record(
    event: &str,
    workload: &str,
    k: &FlowKey,
    f: &Flow,
    pl: &Pipeline,
    updated_at: u64,
) -> FlowRecord {
    let action = if f.action.allows() { "allow" } else { "deny" };
    let (src, dst) = if f.initiator_lo {
        (k.lo, k.hi)
    } else {
        (k.hi, k.lo)
    };
    FlowRecord {
        event: event.to_string(),
        workload: workload.to_string(),
        mode: if f.mirror { "mirror" } else { "inline" }.to_string(),
        direction: match f.direction {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
        .to_string(),
        proto: proto::name(k.proto),
        src: endpoint(src.0, src.1, k.proto),
        dst: endpoint(dst.0, dst.1, k.proto),
        app: pl.apps.name(f.app).to_string(),
        category: pl.apps.category(f.app).to_string(),
        host: f.host.as_deref().map(str::to_string),
        how: f.how.map(|h| h.name().to_string()),
        action: action.to_string(),
        detail: f.action.name().to_string(),
        enforced: !f.mirror,
        verdict: FlowRecord::verdict_of(!f.mirror, action),
        rule: match f.rule {
            Some(i) if f.generation == pl.generation => pl.rules.rule_id(i).to_string(),
            Some(i) => format!("#{i}"),
            None => "default".to_string(),
        },
        logged_by: f
            .logged_by
            .filter(|_| f.generation == pl.generation)
            .map(|i| pl.rules.rule_id(i).to_string()),
        packets_out: f.tally[0].packets,
        bytes_out: f.tally[0].bytes,
        packets_in: f.tally[1].packets,
        bytes_in: f.tally[1].bytes,
        first_seen: f.first_seen_ms,
        updated_at,
        suppressed: None,
        offloaded: f.offload.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::{Datapath, DatapathParams, Forwarding};
    use crate::decide::WorkloadInfo;
    use crate::pipeline::MalformedPolicy;
    use crate::pipeline::flow::Timeouts;
    use crate::vocab::{OnFailure, SteeringMode};

    /// A topology holding the workloads of generation 0 in `slots`.
    fn topo(slots: &[u32]) -> crate::switch::Topology {
        let mut t = crate::switch::Topology::default();
        for &i in slots {
            let ports = crate::switch::WorkloadPorts {
                workload: crate::vocab::PortId(2 * i),
                uplink: crate::vocab::PortId(2 * i + 1),
            };
            t.insert(WorkloadId::new(i, 0), ports);
        }
        t
    }

    fn node(log_dir: &Path, rate: u64, burst: u64) -> (Datapath, Inspection) {
        let params = DatapathParams {
            workers: 1,
            batch: 64,
            mac_limit: 8,
            mac_age_secs: 300,
            spin_us: 0,
            flow_capacity: 65_536,
            flow_quota: None,
            timeouts: Timeouts::default(),
            reassembly_bytes: 1 << 20,
            shape_queue_bytes: 1 << 20,
        };
        let dp = Datapath::start(params, Pipeline::new(MalformedPolicy::Drop)).unwrap();
        let shared = dp.shared();
        let info = |name: &str| WorkloadInfo {
            name: name.into(),
            kind: "pod".into(),
            mode: SteeringMode::Inline,
            on_failure: OnFailure::Open,
            identity: Default::default(),
        };
        shared.fwd.store(Arc::new(Forwarding {
            topo: topo(&[0, 1]),
            workloads: vec![Some(info("flood")), Some(info("quiet"))],
            ..Default::default()
        }));
        let book = RuleBook::load(&log_dir.join("state")).unwrap();
        let log = LogConfig {
            ring: 100,
            dir: Some(log_dir.join("log")),
            rotate_bytes: 0,
            keep: 1,
            records_per_sec: rate,
            burst,
            reserve_bytes: 0,
        };
        let insp = Inspection::new(shared, log, 10, book).unwrap();
        (dp, insp)
    }

    /// `n` UDP flows of workload `wl` from distinct source ports.
    fn flows(insp: &Inspection, wl: u32, n: u16) {
        let ins = &insp.shared.inspector;
        let now = ins.now_ns() / 1_000_000;
        for port in 0..n {
            let k = FlowKey {
                workload: WorkloadId::new(wl, 0),
                proto: proto::UDP,
                lo: (IpAddr::from([10, 0, 0, 1 + wl as u8]), 10_000 + port),
                hi: (IpAddr::from([192, 0, 2, 1]), 53),
            };
            let mut f = Flow::new(Direction::Egress, true, ins.unix_ms(now), now);
            f.account(true, 1, 100, 0, now);
            ins.flows.shard(&k).insert(k, f);
        }
    }

    #[test]
    fn sweep_keeps_each_workload_to_its_budget_and_summarizes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (_dp, insp) = node(dir.path(), 10, 20);
        flows(&insp, 1, 3);
        flows(&insp, 0, 500);
        insp.sweep();
        let of = |wl: &str, ev: &str| {
            insp.log.query(
                &Filter {
                    workload: Some(wl.into()),
                    event: Some(ev.into()),
                    ..Default::default()
                },
                1000,
            )
        };
        assert_eq!(of("flood", "new").len(), 20);
        assert_eq!(of("quiet", "new").len(), 3, "another workload's records");
        let sums = of("flood", "suppressed");
        assert_eq!(sums.len(), 1);
        assert_eq!(sums[0].suppressed, Some(480));
        assert!(of("quiet", "suppressed").is_empty());
        // Every decision still counts in the totals, kept or not.
        let t = insp.totals();
        assert_eq!(t.verdicts[&("flood".to_string(), "allow".to_string())], 500);
        let u = insp.usage(10, None).unwrap();
        assert_eq!(u.log.suppressed, 480);
        insp.log.flush();
        assert_eq!(insp.log.written(), 20 + 3 + 1);
        let on_disk =
            crate::control::record::read_dir(&dir.path().join("log"), &Filter::default(), 10_000)
                .unwrap();
        assert_eq!(on_disk.len(), 24);

        // Flows whose "new" was left out are not announced again: the next sweep
        // has nothing to say, so no further summary either.
        insp.sweep();
        assert_eq!(of("flood", "suppressed").len(), 1);
        assert_eq!(of("flood", "new").len(), 20);

        // A workload that is gone loses its budget once its summary is out.
        insp.shared.fwd.store(Arc::new(Forwarding {
            topo: topo(&[1]),
            workloads: vec![None, insp.shared.fwd.load().workloads[1].clone()],
            ..Default::default()
        }));
        insp.sweep();
        assert!(insp.log.suppressed_by_workload().is_empty());
    }
}
