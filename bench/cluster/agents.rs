//! The cluster scale bench's load: N node agents without a datapath, in one
//! process. Each is the real agent (`guardwire::cluster::agent::Agent`) with
//! its own etcd connection, watch and lease; only what it enforces differs:
//! it parses the set with the node's parser and keeps nothing.
//!
//! It pushes a rule set K times straight into etcd (the write the controller
//! makes) and times, for every node, the push to the node's status saying it
//! applied that revision, and (inside the process) to each agent putting it
//! in force, before it reports it. The baseline of the same run is etcd's own delivery:
//! the push to a plain watcher of the rule set key seeing it.
//!
//! Run by `bench/cluster.sh`, which starts the three-member etcd:
//! `cluster-agents --etcd URL,URL,URL --agents N [--pushes K] [--controller URL --token-file F]`

use guardwire::cluster::agent::{Agent, AgentConfig, Enforcer};
use guardwire::cluster::store::{self, EtcdOptions, NodeStatus};
use guardwire::pipeline::app::Apps;
use guardwire::pipeline::firewall::RuleSet;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct ParseOnly {
    apps: Apps,
    /// When each revision was put in force, by every agent.
    applied: std::sync::Mutex<HashMap<i64, Vec<Instant>>>,
}

impl Enforcer for ParseOnly {
    fn apply(&self, set: &str, revision: i64, text: &str) -> Result<(), String> {
        RuleSet::parse_with(text, set, &self.apps).map_err(|e| e.to_string())?;
        let now = Instant::now();
        let mut a = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        a.entry(revision).or_default().push(now);
        Ok(())
    }

    fn facts(&self) -> (usize, u64) {
        (0, 0)
    }
}

struct Args {
    etcd: Vec<String>,
    agents: usize,
    pushes: usize,
    controller: Option<String>,
    token: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        etcd: Vec::new(),
        agents: 100,
        pushes: 3,
        controller: None,
        token: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--etcd" => a.etcd = v.split(',').map(str::to_string).collect(),
            "--agents" => a.agents = v.parse().expect("--agents N"),
            "--pushes" => a.pushes = v.parse().expect("--pushes K"),
            "--controller" => a.controller = Some(v),
            "--token-file" => {
                a.token = Some(
                    std::fs::read_to_string(&v)
                        .expect("--token-file")
                        .trim()
                        .to_string(),
                )
            }
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(!a.etcd.is_empty(), "--etcd URL[,URL...] is needed");
    a
}

fn rules(k: usize) -> String {
    let mut t = String::from("default = \"allow\"\n");
    for i in 0..10 {
        t.push_str(&format!(
            "[[rule]]\nid = \"r{i}\"\nproto = \"tcp\"\ndst_ports = [{}]\naction = \"deny\"\n",
            1000 + k * 10 + i
        ));
    }
    t
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn raise_nofile() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write one rlimit struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// A watch of every node's keys from `revision` on.
async fn statuses_from(c: &mut etcd_client::Client, revision: i64) -> etcd_client::WatchStream {
    c.watch(
        store::nodes_prefix(),
        Some(
            etcd_client::WatchOptions::new()
                .with_prefix()
                .with_start_revision(revision),
        ),
    )
    .await
    .expect("watch")
}

/// Waits until every agent's status says `revision`; returns the time each
/// took from `t0` (seconds), the ones seen by the watch started before the push.
async fn applied_times(
    ws: &mut etcd_client::WatchStream,
    n: usize,
    revision: i64,
    t0: Instant,
    limit: Duration,
) -> Vec<f64> {
    let mut seen: HashMap<String, f64> = HashMap::new();
    let deadline = t0 + limit;
    while seen.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Ok(Some(m))) = tokio::time::timeout(left, ws.message()).await else {
            break;
        };
        let at = t0.elapsed().as_secs_f64();
        for ev in m.events() {
            let Some(kv) = ev.kv() else { continue };
            if !kv.key_str().unwrap_or("").ends_with("/status") {
                continue;
            }
            let Ok(s) = serde_json::from_slice::<NodeStatus>(kv.value()) else {
                continue;
            };
            if s.revision == revision {
                seen.entry(s.node).or_insert(at);
            }
        }
    }
    let mut v: Vec<f64> = seen.into_values().collect();
    v.sort_by(f64::total_cmp);
    v
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    raise_nofile();
    let a = args();
    let one = |i: usize| EtcdOptions {
        endpoints: vec![a.etcd[i % a.etcd.len()].clone()],
        ..Default::default()
    };
    let mut c = store::connect(&EtcdOptions {
        endpoints: a.etcd.clone(),
        ..Default::default()
    })
    .await
    .expect("etcd");
    // A clean slate (the bench's own etcd): no statuses of an earlier run.
    c.delete(
        store::PREFIX,
        Some(etcd_client::DeleteOptions::new().with_prefix()),
    )
    .await
    .expect("clear");
    let first = c
        .put(store::ruleset_key("default"), rules(0), None)
        .await
        .expect("put")
        .header()
        .expect("header")
        .revision();

    // Start the agents, a batch at a time so the connects do not all land at once.
    let t_start = Instant::now();
    let mut ws = statuses_from(&mut c, first).await;
    let apps = Arc::new(ParseOnly {
        apps: Apps::builtin(),
        applied: Default::default(),
    });
    for i in 0..a.agents {
        let cfg = AgentConfig {
            node: format!("bench-{i:05}"),
            labels: Vec::new(),
            api_url: None,
            etcd: one(i),
            lease_ttl: Duration::from_secs(10),
            status_every: Duration::from_secs(60),
            state_dir: None,
        };
        let agent = Agent::new(cfg, apps.clone() as Arc<dyn Enforcer>);
        tokio::spawn(agent.run());
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let up = applied_times(&mut ws, a.agents, first, t_start, Duration::from_secs(300)).await;
    drop(ws);
    eprintln!(
        "{} of {} agents up and applied in {:.1} s",
        up.len(),
        a.agents,
        t_start.elapsed().as_secs_f64()
    );
    assert_eq!(up.len(), a.agents, "not every agent came up");
    // Let the start-up writes settle.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut rows = Vec::new();
    for k in 1..=a.pushes {
        let now = c
            .get(
                store::PREFIX,
                Some(etcd_client::GetOptions::new().with_count_only()),
            )
            .await
            .expect("get")
            .header()
            .expect("header")
            .revision();
        let mut ws = statuses_from(&mut c, now + 1).await;
        let mut base = c
            .watch(
                store::ruleset_key("default"),
                Some(etcd_client::WatchOptions::new().with_start_revision(now + 1)),
            )
            .await
            .expect("watch");
        let t0 = Instant::now();
        let rev = c
            .put(store::ruleset_key("default"), rules(k), None)
            .await
            .expect("push")
            .header()
            .expect("header")
            .revision();
        let mut baseline = f64::NAN;
        while let Ok(Ok(Some(m))) =
            tokio::time::timeout(Duration::from_secs(10), base.message()).await
        {
            if m.events()
                .iter()
                .any(|e| e.kv().is_some_and(|kv| kv.mod_revision() == rev))
            {
                baseline = t0.elapsed().as_secs_f64();
                break;
            }
        }
        let v = applied_times(&mut ws, a.agents, rev, t0, Duration::from_secs(60)).await;
        // When the agents put it in force, before they report it.
        let mut inside: Vec<f64> = apps
            .applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&rev)
            .map(|v| {
                v.iter()
                    .map(|t| t.duration_since(t0).as_secs_f64())
                    .collect()
            })
            .unwrap_or_default();
        inside.sort_by(f64::total_cmp);
        let row = serde_json::json!({
            "in_force_p50_ms": pct(&inside, 0.50) * 1e3,
            "in_force_p99_ms": pct(&inside, 0.99) * 1e3,
            "push": k,
            "revision": rev,
            "applied": v.len(),
            "p50_ms": pct(&v, 0.50) * 1e3,
            "p99_ms": pct(&v, 0.99) * 1e3,
            "max_ms": pct(&v, 1.0) * 1e3,
            "etcd_delivery_ms": baseline * 1e3,
        });
        eprintln!("{row}");
        rows.push(row);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    let page = match (&a.controller, &a.token) {
        (Some(url), Some(token)) => Some(nodes_page(url, token, a.agents).await),
        _ => None,
    };
    let med = |key: &str| {
        let mut v: Vec<f64> = rows.iter().filter_map(|r| r[key].as_f64()).collect();
        v.sort_by(f64::total_cmp);
        pct(&v, 0.5)
    };
    let all = rows
        .iter()
        .all(|r| r["applied"].as_u64() == Some(a.agents as u64));
    println!(
        "{}",
        serde_json::json!({
            "agents": a.agents,
            "pushes": a.pushes,
            "all_applied": all,
            "startup_s": up.last().copied().unwrap_or(f64::NAN),
            "in_force_p50_ms": med("in_force_p50_ms"),
            "in_force_p99_ms": med("in_force_p99_ms"),
            "p50_ms": med("p50_ms"),
            "p99_ms": med("p99_ms"),
            "max_ms": med("max_ms"),
            "etcd_delivery_ms": med("etcd_delivery_ms"),
            "nodes_page": page,
            "rows": rows,
        })
    );
}

/// Times the controller's nodes page: median of 5, and whether it lists
/// every node with the set realized on all.
async fn nodes_page(url: &str, token: &str, n: usize) -> serde_json::Value {
    use guardwire::control::http::client::{Endpoint, request};
    let ep = Endpoint::Tcp {
        addr: url.trim_start_matches("http://").to_string(),
        token: token.to_string(),
    };
    let mut times = Vec::new();
    let mut listed = 0;
    let mut realized = 0;
    let mut bytes = 0;
    for _ in 0..5 {
        let t0 = Instant::now();
        let Ok((200, body)) = request(&ep, hyper::Method::GET, "/api/v1/nodes", Vec::new()).await
        else {
            continue;
        };
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        bytes = body.len();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        listed = v["nodes"].as_array().map_or(0, |a| a.len());
        realized = v["summary"][0]["realized"].as_u64().unwrap_or(0) as usize;
    }
    times.sort_by(f64::total_cmp);
    serde_json::json!({
        "median_ms": pct(&times, 0.5),
        "max_ms": pct(&times, 1.0),
        "bytes": bytes,
        "nodes_listed": listed,
        "realized": realized,
        "expected": n,
    })
}
