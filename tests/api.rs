//! The node API over its TCP management address, as an operator, Prometheus, a
//! careless client and a hostile pod meet it (root; real namespaces).

mod common;

use common::*;
use guardwire::steer::netns;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The API as seen from the management side of a test-bed node.
struct Api {
    ns: String,
    addr: String,
    admin: String,
    viewer: String,
}

/// An HTTP answer.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

fn read_token(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .to_string()
}

impl Api {
    fn of(n: &Node) -> Api {
        Api {
            ns: n.var("MGMT_NS").into(),
            addr: n.var("GW_API").into(),
            admin: read_token(n.var("GW_ADMIN_TOKEN_FILE")),
            viewer: read_token(n.var("GW_VIEWER_TOKEN_FILE")),
        }
    }

    /// A TCP connection to the API made from namespace `ns`.
    fn connect_from(&self, ns: &str) -> TcpStream {
        let addr = self.addr.clone();
        let s = netns::run_in(ns, move || TcpStream::connect(addr)).expect("connect to the API");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    fn send_from(
        &self,
        ns: &str,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> std::io::Result<Answer> {
        let mut s = self.connect_from(ns);
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n");
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let body = body.unwrap_or("");
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        s.write_all(req.as_bytes())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no HTTP answer: {text:?}")))?;
        Ok(Answer {
            status,
            head: head.to_string(),
            body: dechunk(head, body),
        })
    }

    fn send(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Answer {
        self.send_from(&self.ns, method, path, token, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    fn get(&self, path: &str) -> Answer {
        self.send("GET", path, Some(&self.admin), None)
    }
}

fn dechunk(head: &str, body: &str) -> String {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_string();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((len, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

const RULES_OK: &str = "default = \"allow\"\n[[rule]]\nid = \"no-9999\"\nproto = \"tcp\"\ndst_ports = 9999\naction = \"deny\"\n";
const RULES_TYPO: &str =
    "default = \"allow\"\n[[rule]]\nproto = \"tcp\"\ndst_ports = 9999\nactoin = \"deny\"\n";

#[test]
fn api_roles_refusals_and_bad_input() {
    require_root();
    let n = Node::up("tap1", &["--pods", "1"]);
    let api = Api::of(&n);

    // Authentication and roles.
    let a = api.send("GET", "/api/v1/workloads", None, None);
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(
        a.head
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer")
    );
    assert!(a.json()["error"].as_str().unwrap().contains("bearer token"));
    let a = api.send(
        "GET",
        "/api/v1/workloads",
        Some("not-the-token-at-all"),
        None,
    );
    assert_eq!(a.status, 401);
    let a = api.send("GET", "/api/v1/workloads", Some(&api.viewer), None);
    assert_eq!(a.status, 200);
    assert_eq!(a.json()[0]["name"], "pod1");
    assert_eq!(
        api.send("GET", "/api/v1/whoami", Some(&api.viewer), None)
            .json()["role"],
        "viewer"
    );
    let mode = r#"{"mode":"mirror"}"#;
    let a = api.send(
        "PUT",
        "/api/v1/workloads/pod1/mode",
        Some(&api.viewer),
        Some(mode),
    );
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(a.json()["error"].as_str().unwrap().contains("admin"));
    assert_eq!(
        n.client().workloads().unwrap()[0].mode.name(),
        "inline",
        "a viewer changed nothing"
    );

    // A pod can reach the management address, and gets no answer even with
    // the admin token: its address is not on the management side.
    let pod = n.pod_ns(1);
    match api.send_from(&pod, "GET", "/api/v1/workloads", Some(&api.admin), None) {
        Ok(a) => panic!("a pod got an answer: {} {}", a.status, a.body),
        Err(e) => eprintln!("pod refused: {e}"),
    }

    // Bad input is refused with the field, and nothing changes.
    let a = api.send(
        "PUT",
        "/api/v1/workloads/pod1/mode",
        Some(&api.admin),
        Some(r#"{"mode":"sideways"}"#),
    );
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["field"], "mode", "{}", a.body);
    let a = api.send(
        "PUT",
        "/api/v1/workloads/pod1/mode",
        Some(&api.admin),
        Some("{"),
    );
    assert_eq!(a.status, 400, "{}", a.body);
    let a = api.send(
        "PUT",
        "/api/v1/workloads/nosuch/mode",
        Some(&api.admin),
        Some(mode),
    );
    assert_eq!(a.status, 404, "{}", a.body);
    let a = api.get("/api/v1/no/such/thing");
    assert_eq!(a.status, 404);
    assert!(a.json()["error"].is_string());
    let a = api.get("/api/v1/usage?window=0");
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["field"], "window");
    let a = api.get("/api/v1/log?limit=100000");
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["field"], "limit");
    let big = format!("{{\"text\":\"{}\"}}", "#".repeat(2 << 20));
    let a = api.send(
        "POST",
        "/api/v1/rules/validate",
        Some(&api.admin),
        Some(&big),
    );
    assert_eq!(a.status, 413, "{}", a.body);
    assert_eq!(api.get("/api/v1/health").json()["status"], "ok");

    // Rules: a typo is refused with its line and the running rules stay.
    let gen0 = api.get("/api/v1/rules").json()["generation"]
        .as_u64()
        .unwrap();
    let body = serde_json::json!({ "text": RULES_TYPO, "origin": "typo.toml" }).to_string();
    let v = api
        .send(
            "POST",
            "/api/v1/rules/validate",
            Some(&api.admin),
            Some(&body),
        )
        .json();
    assert_eq!(v["ok"], false);
    assert_eq!(v["errors"][0]["line"], 5, "{v}");
    let a = api.send("POST", "/api/v1/rules", Some(&api.admin), Some(&body));
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["line"], 5, "{}", a.body);
    assert_eq!(
        api.get("/api/v1/rules").json()["generation"]
            .as_u64()
            .unwrap(),
        gen0
    );
    let body = serde_json::json!({ "text": RULES_OK, "origin": "ok.toml" }).to_string();
    let a = api.send("POST", "/api/v1/rules", Some(&api.admin), Some(&body));
    assert_eq!(a.status, 200, "{}", a.body);
    let pushed = a.json();
    assert_eq!(pushed["generation"].as_u64().unwrap(), gen0 + 1);
    assert_eq!(pushed["by"], "token:admin");
    let doc = api.get("/api/v1/rules").json();
    assert_eq!(doc["text"], RULES_OK);
    assert_eq!(doc["hash"], pushed["hash"]);
    // Back to an empty set, then roll back to the pushed one.
    let body = serde_json::json!({ "text": "default = \"allow\"\n" }).to_string();
    assert_eq!(
        api.send("POST", "/api/v1/rules", Some(&api.admin), Some(&body))
            .status,
        200
    );
    let h = api.get("/api/v1/rules/history").json();
    assert_eq!(h[0]["generation"].as_u64().unwrap(), gen0 + 2, "{h}");
    assert_eq!(h[1]["generation"].as_u64().unwrap(), gen0 + 1, "{h}");
    let rb = format!("{{\"generation\":{}}}", gen0 + 1);
    let a = api.send(
        "POST",
        "/api/v1/rules/rollback",
        Some(&api.admin),
        Some(&rb),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["generation"].as_u64().unwrap(), gen0 + 3);
    assert_eq!(a.json()["hash"], pushed["hash"]);
    assert_eq!(api.get("/api/v1/rules").json()["text"], RULES_OK);
    let a = api.send(
        "POST",
        "/api/v1/rules/rollback",
        Some(&api.admin),
        Some(r#"{"generation":999999}"#),
    );
    assert_eq!(a.status, 404);

    // The verdict log: cursor pages and the live stream.
    let mut stream = api.connect_from(&api.ns);
    write!(
        stream,
        "GET /api/v1/log/stream?workload=pod1 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\n\r\n",
        api.admin
    )
    .unwrap();
    for _ in 0..6 {
        n.ping(&pod, n.var("PEER_IP"), 1);
    }
    let t = Instant::now();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("event: record") && t.elapsed() < Duration::from_secs(5) {
        let k = stream.read(&mut buf).unwrap_or(0);
        seen.push_str(&String::from_utf8_lossy(&buf[..k]));
    }
    assert!(seen.contains("text/event-stream"), "{seen}");
    assert!(
        seen.contains("event: record") && seen.contains("\"workload\":\"pod1\""),
        "no record streamed within 5 s: {seen}"
    );
    drop(stream);
    let mut seqs = Vec::new();
    let mut path = "/api/v1/log?workload=pod1&limit=2".to_string();
    loop {
        let p = api.get(&path).json();
        let recs = p["records"].as_array().unwrap().clone();
        assert!(recs.len() <= 2, "{p}");
        seqs.extend(recs.iter().map(|r| r["seq"].as_u64().unwrap()));
        match p["next_before"].as_u64() {
            Some(b) => path = format!("/api/v1/log?workload=pod1&limit=2&before={b}"),
            None => break,
        }
    }
    assert!(seqs.len() >= 6, "six ping flows, each a record: {seqs:?}");
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first, no repeats: {seqs:?}"
    );
    let all = api.get("/api/v1/log?workload=pod1&limit=500").json();
    assert_eq!(all["records"].as_array().unwrap().len(), seqs.len());

    // Prometheus metrics, checked by Prometheus's own linter.
    let m = api.get("/metrics");
    assert_eq!(m.status, 200);
    assert!(
        m.body.contains(
            "guardwire_port_rx_frames_total{workload=\"pod1\",port=\"wp-pod1\",role=\"workload\"}"
        ),
        "{}",
        m.body
    );
    assert!(m.body.contains("guardwire_rules_generation"));
    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .output_with_stdin(m.body.as_bytes());
    assert!(
        promtool.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&promtool.stdout),
        String::from_utf8_lossy(&promtool.stderr)
    );
    let om = {
        let mut s = api.connect_from(&api.ns);
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nAccept: application/openmetrics-text\r\nAuthorization: Bearer {}\r\n\r\n",
            api.admin
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    assert!(om.contains("application/openmetrics-text") && om.contains("# EOF"));

    // The API description is served.
    let doc = api.send("GET", "/api/v1/openapi.json", None, None).json();
    assert!(doc["paths"]["/api/v1/workloads/{name}/mode"]["put"].is_object());
}

/// Spawn-and-wait helper: writes `input` to the child's stdin.
trait WithStdin {
    fn output_with_stdin(&mut self, input: &[u8]) -> std::process::Output;
}

impl WithStdin for std::process::Command {
    fn output_with_stdin(&mut self, input: &[u8]) -> std::process::Output {
        let mut c = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        c.stdin.take().unwrap().write_all(input).unwrap();
        c.wait_with_output().unwrap()
    }
}

#[test]
fn slow_and_stuck_clients_are_timed_out_without_delaying_others() {
    require_root();
    let n = Node::up("tap2", &["--pods", "1"]);
    let api = Api::of(&n);
    // Says nothing.
    let mut idle = api.connect_from(&api.ns);
    // One byte every 2 s.
    let mut slow = api.connect_from(&api.ns);
    let slow_req = b"GET /api/v1/node HTTP/1.1\r\nHost: gw\r\n";
    // Asks and never reads: pipelined requests for a large answer fill its
    // socket buffers.
    let mut deaf = api.connect_from(&api.ns);
    let one = format!(
        "GET /api/v1/openapi.json HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\n\r\n",
        api.admin
    );
    deaf.set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut pipelined = 0;
    for _ in 0..400 {
        if deaf.write_all(one.as_bytes()).is_err() {
            break;
        }
        pipelined += 1;
    }
    let t = Instant::now();
    let mut i = 0;
    while t.elapsed() < Duration::from_secs(3) {
        let _ = slow.write_all(&slow_req[i % slow_req.len()..][..1]);
        i += 1;
        // Others are served at once meanwhile.
        let t0 = Instant::now();
        assert_eq!(api.get("/api/v1/health").status, 200);
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "a normal request waited {:?} behind stuck clients",
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(1000));
    }
    // The idle and the slow one are cut after the header timeout (5 s), the
    // deaf one after the write timeout (10 s).
    let closed = |s: &mut TcpStream, within: Duration| -> bool {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let t = Instant::now();
        let mut buf = [0u8; 65536];
        while t.elapsed() < within {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return true,
            }
        }
        false
    };
    assert!(
        closed(&mut idle, Duration::from_secs(5)),
        "idle client kept"
    );
    assert!(
        closed(&mut slow, Duration::from_secs(5)),
        "slow client kept"
    );
    std::thread::sleep(Duration::from_secs(10).saturating_sub(t.elapsed()));
    // The deaf client's connection is gone: reading drains what was buffered,
    // then ends.
    assert!(
        pipelined > 10 && closed(&mut deaf, Duration::from_secs(10)),
        "deaf client kept ({pipelined} requests pipelined)"
    );
    assert_eq!(api.get("/api/v1/health").status, 200);

    // Per-client rate limit: a burst beyond it is answered 429, not queued.
    let mut codes = std::collections::BTreeMap::new();
    for _ in 0..160 {
        let a = api.send("GET", "/api/v1/health", None, None);
        *codes.entry(a.status).or_insert(0) += 1;
    }
    assert!(codes.get(&429).copied().unwrap_or(0) > 0, "{codes:?}");
    assert!(codes.get(&200).copied().unwrap_or(0) >= 100, "{codes:?}");
}

fn fds(pid: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn a_thousand_api_clients_neither_stall_forwarding_nor_leak() {
    require_root();
    let n = Node::up("tap3", &["--pods", "1"]);
    let api = Api::of(&n);
    let pid = n.var("GW_PID").to_string();
    let peer = n.var("PEER_IP").to_string();
    n.iperf_server(n.var("NS_PEER"), &peer);
    let (before, _) = n.iperf(&n.pod_ns(1), &peer, 3, &[]);
    let fds0 = fds(&pid);
    const CLIENTS: usize = 1000;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut conns = Vec::new();
    for _ in 0..CLIENTS {
        conns.push(api.connect_from(&api.ns));
    }
    let req = format!(
        "GET /api/v1/workloads HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\n\r\n",
        api.admin
    );
    // Ten threads each keep a hundred connections, one request at a time.
    let mut threads = Vec::new();
    for chunk in conns.chunks(CLIENTS / 10) {
        let mut mine: Vec<TcpStream> = chunk.iter().map(|c| c.try_clone().unwrap()).collect();
        let (stop, answered, req) = (stop.clone(), answered.clone(), req.clone());
        threads.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 16384];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Each client asks twice a second: a thousand operators' pages,
                // not a benchmark of the test's own loop.
                let round = Instant::now();
                for c in mine.iter_mut() {
                    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    if c.write_all(req.as_bytes()).is_ok()
                        && matches!(c.read(&mut buf), Ok(k) if k > 0)
                    {
                        answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(500).saturating_sub(round.elapsed()));
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(500));
    let open = fds(&pid);
    assert!(
        open >= fds0 + CLIENTS / 2,
        "the clients are connected ({open} fds)"
    );
    n.iperf_server(n.var("NS_PEER"), &peer);
    let (during, _) = n.iperf(&n.pod_ns(1), &peer, 3, &[]);
    // Still answering its own operators on the Unix socket meanwhile.
    assert_eq!(n.client().health().unwrap().status, "ok");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    drop(conns);
    let answered = answered.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "iperf3 {:.2} Gbit/s alone, {:.2} with {CLIENTS} API clients ({answered} answers)",
        before / 1e9,
        during / 1e9
    );
    assert!(
        answered > CLIENTS as u64,
        "the clients were served: {answered}"
    );
    assert!(
        during > before * 0.5,
        "forwarding stalled under API load: {during} vs {before} bit/s"
    );
    wait_for(
        || fds(&pid) <= fds0,
        "the daemon's fds back to where they were",
    );
}

/// Runs openssl with `args` in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let o = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A key and a certificate `name.pem` signed by CA `ca`, with extensions `ext`.
fn issue(dir: &std::path::Path, ca: &str, name: &str, cn: &str, ext: &str) {
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    let subj = format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &subj,
            "-addext",
            ext,
        ],
    );
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-copy_extensions",
            "copyall",
        ],
    );
}

fn new_ca(dir: &std::path::Path, name: &str) {
    let (key, pem, subj) = (
        format!("{name}.key"),
        format!("{name}.pem"),
        format!("/CN={name}"),
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            &subj,
        ],
    );
}

#[test]
fn tls_with_tokens_and_client_certificates() {
    require_root();
    let ns = TempNetns::new("tap4-tls");
    let _ = std::process::Command::new("ip")
        .args(["-n", &ns.0, "link", "set", "lo", "up"])
        .status();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    new_ca(d, "ca");
    new_ca(d, "rogue");
    issue(
        d,
        "ca",
        "server",
        "guardwire",
        "subjectAltName=IP:127.0.0.1",
    );
    issue(
        d,
        "ca",
        "controller",
        "controller",
        "extendedKeyUsage=clientAuth",
    );
    issue(
        d,
        "rogue",
        "intruder",
        "controller",
        "extendedKeyUsage=clientAuth",
    );
    let p = |f: &str| d.join(f).display().to_string();
    let cfg = format!(
        "[node]\nname = \"tls\"\ncontrol_socket = \"{{socket}}\"\nstate_dir = \"{{state}}\"\n\
         [api]\nlisten = \"127.0.0.1:7443\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\nclient_ca = \"{}\"\n",
        p("server.pem"),
        p("server.key"),
        p("ca.pem")
    );
    let daemon_dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&ns.0, daemon_dir.path(), &cfg);
    let viewer = read_token(
        &daemon_dir
            .path()
            .join("state/api/viewer.token")
            .display()
            .to_string(),
    );
    let curl = |extra: &[&str]| -> (bool, String) {
        let mut c = std::process::Command::new("ip");
        c.args([
            "netns",
            "exec",
            &ns.0,
            "curl",
            "-s",
            "-m",
            "5",
            "--cacert",
            &p("ca.pem"),
        ]);
        c.args(extra);
        let o = c.output().unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let url = "https://127.0.0.1:7443/api/v1/whoami";
    let (ok, out) = curl(&[url, "-w", " %{http_code}"]);
    assert!(
        ok && out.ends_with(" 401"),
        "no token, no certificate: {out}"
    );
    let auth = format!("Authorization: Bearer {viewer}");
    let (ok, out) = curl(&["-H", &auth, url]);
    assert!(
        ok && out.contains("\"role\":\"viewer\""),
        "token over TLS: {out}"
    );
    let (ok, out) = curl(&[
        "--cert",
        &p("controller.pem"),
        "--key",
        &p("controller.key"),
        url,
    ]);
    assert!(
        ok && out.contains("\"role\":\"admin\"") && out.contains("cert:"),
        "client cert: {out}"
    );
    let (ok, out) = curl(&[
        "--cert",
        &p("intruder.pem"),
        "--key",
        &p("intruder.key"),
        url,
    ]);
    assert!(!ok, "a certificate from another CA was accepted: {out}");
    let (ok, _) = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            "curl",
            "-s",
            "-m",
            "5",
            "http://127.0.0.1:7443/api/v1/health",
        ])
        .output()
        .map(|o| (o.status.success() && !o.stdout.is_empty(), ()))
        .unwrap();
    assert!(!ok, "plain HTTP answered on the TLS port");
    drop(daemon);
}
