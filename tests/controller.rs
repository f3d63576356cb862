//! The controller's API against a real etcd (Debian's etcd-server, started on
//! loopback by the test): auth, bad input refused with the line or field and
//! nothing written, optimistic concurrency, diff, history and rollback by
//! revision, bounded answers when etcd is gone. The cluster itself (nodes
//! applying the sets) is tested over real nodes in tests/cluster.rs.

use guardwire::control::http::client::{Client, ClientError, Endpoint};
use hyper::Method;
use serde_json::Value;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A process killed when the test ends, however it ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Bed {
    dir: tempfile::TempDir,
    etcd: Option<Proc>,
    etcd_url: String,
    etcd_peer: u16,
    _ctl: Proc,
    addr: String,
}

fn start_etcd(dir: &Path, client: &str, peer: u16) -> Proc {
    let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
    let c = Command::new("etcd")
        .arg("--data-dir")
        .arg(dir.join("etcd"))
        .args([
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
        ])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
        ])
        .args([
            "--initial-cluster",
            &format!("default=http://127.0.0.1:{peer}"),
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("etcd (Debian etcd-server; .ci/run installs it)");
    let p = Proc(c);
    let t0 = Instant::now();
    while !Command::new("etcdctl")
        .args(["--endpoints", client, "endpoint", "health"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        assert!(t0.elapsed() < Duration::from_secs(20), "etcd did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    p
}

impl Bed {
    fn up() -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let etcd_url = format!("http://127.0.0.1:{}", free_port());
        let etcd_peer = free_port();
        let etcd = start_etcd(dir.path(), &etcd_url, etcd_peer);
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("controller.log")).unwrap();
        let ctl = Command::new(env!("CARGO_BIN_EXE_guardwire"))
            .args(["controller", "--etcd", &etcd_url, "--listen", &addr])
            .arg("--state-dir")
            .arg(dir.path().join("ctl"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let ctl = Proc(ctl);
        let bed = Bed {
            dir,
            etcd: Some(etcd),
            etcd_url,
            etcd_peer,
            _ctl: ctl,
            addr,
        };
        let t0 = Instant::now();
        let token = bed.dir.path().join("ctl/api/viewer.token");
        while !token.exists() || bed.call(Method::GET, "/api/v1/health", "", None).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "controller did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        bed
    }

    fn token(&self, which: &str) -> String {
        let p: PathBuf = self.dir.path().join(format!("ctl/api/{which}.token"));
        std::fs::read_to_string(p).unwrap().trim().to_string()
    }

    fn client(&self, token: Option<&str>) -> Client {
        Client::new(Endpoint::Tcp {
            addr: self.addr.clone(),
            token: token.map_or_else(|| self.token("admin"), str::to_string),
        })
    }

    fn call(
        &self,
        m: Method,
        path: &str,
        body: &str,
        token: Option<&str>,
    ) -> Result<Value, ClientError> {
        self.client(token)
            .call_bytes(m, path, body.as_bytes().to_vec())
    }

    fn refused(&self, m: Method, path: &str, body: &str, token: Option<&str>) -> (u16, Value) {
        match self.call(m.clone(), path, body, token) {
            Err(ClientError::Refused { status, body }) => {
                (status, serde_json::to_value(body).unwrap())
            }
            other => panic!("{m} {path}: expected a refusal, got {other:?}"),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("controller.log")).unwrap_or_default()
    }
}

const GOOD: &str =
    "default = \"allow\"\n[[rule]]\nproto = \"tcp\"\ndst_ports = [22]\naction = \"deny\"\n";
const GOOD2: &str =
    "default = \"allow\"\n[[rule]]\nproto = \"tcp\"\ndst_ports = [22, 23]\naction = \"deny\"\n";
const BAD: &str = "default = \"allow\"\n[[rule]]\nproto = \"tcp\"\naction = \"explode\"\n";

#[test]
fn rule_sets_are_validated_kept_with_history_and_rolled_back() {
    let b = Bed::up();
    let viewer = b.token("viewer");

    // Auth as on a node: no token 401, viewer may read but not push.
    let (s, _) = b.refused(Method::GET, "/api/v1/rulesets", "", Some("nope"));
    assert_eq!(s, 401);
    assert_eq!(
        b.call(Method::GET, "/api/v1/rulesets", "", Some(&viewer))
            .unwrap(),
        Value::Array(vec![])
    );
    let (s, _) = b.refused(Method::PUT, "/api/v1/rulesets/default", GOOD, Some(&viewer));
    assert_eq!(s, 403);

    // Bad input: the line and field named, nothing written.
    let (s, e) = b.refused(Method::PUT, "/api/v1/rulesets/default", BAD, None);
    assert_eq!(s, 400);
    assert_eq!(e["line"], 4, "{e}");
    assert_eq!(e["field"], "rule[1].action", "{e}");
    let (s, _) = b.refused(Method::GET, "/api/v1/rulesets/default", "", None);
    assert_eq!(s, 404, "a refused set is not written");
    let (s, e) = b.refused(Method::POST, "/api/v1/rulesets/default/validate", BAD, None);
    assert_eq!((s, e["line"].clone()), (400, Value::from(4)));
    let (s, e) = b.refused(Method::PUT, "/api/v1/rulesets/bad%20name", GOOD, None);
    assert_eq!((s, e["field"].clone()), (400, Value::from("name")), "{e}");
    let (s, e) = b.refused(
        Method::PUT,
        "/api/v1/rulesets/default?colour=red",
        GOOD,
        None,
    );
    assert_eq!(s, 400, "{e}");

    // A push, then the document as pushed.
    let v = b
        .call(
            Method::POST,
            "/api/v1/rulesets/default/validate",
            GOOD,
            None,
        )
        .unwrap();
    assert_eq!(v["rules"], 1);
    let p1 = b
        .call(
            Method::PUT,
            "/api/v1/rulesets/default?if_revision=0&origin=t1",
            GOOD,
            None,
        )
        .unwrap();
    let r1 = p1["revision"].as_i64().unwrap();
    assert!(r1 > 0);
    let d = b
        .call(Method::GET, "/api/v1/rulesets/default", "", Some(&viewer))
        .unwrap();
    assert_eq!(
        (d["text"].as_str().unwrap(), d["revision"].as_i64().unwrap()),
        (GOOD, r1)
    );
    assert_eq!(d["by"], "token:admin");

    // Someone else's push in between: 409, and the set is unchanged.
    let (s, _) = b.refused(
        Method::PUT,
        "/api/v1/rulesets/default?if_revision=0",
        GOOD2,
        None,
    );
    assert_eq!(s, 409);
    let diff = b
        .call(Method::POST, "/api/v1/rulesets/default/diff", GOOD2, None)
        .unwrap();
    let text = diff["diff"].as_str().unwrap();
    assert!(
        text.contains("-dst_ports = [22]") && text.contains("+dst_ports = [22, 23]"),
        "{text}"
    );
    assert_eq!(diff["revision"].as_i64(), Some(r1));
    let p2 = b
        .call(
            Method::PUT,
            &format!("/api/v1/rulesets/default?if_revision={r1}&origin=t2"),
            GOOD2,
            None,
        )
        .unwrap();
    let r2 = p2["revision"].as_i64().unwrap();
    assert!(r2 > r1);

    // History by revision, newest first, and a rollback to the first.
    let h = b
        .call(Method::GET, "/api/v1/rulesets/default/history", "", None)
        .unwrap();
    let revs: Vec<i64> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["revision"].as_i64().unwrap())
        .collect();
    assert_eq!(revs, [r2, r1]);
    assert_eq!(h[1]["origin"], "t1");
    let (s, _) = b.refused(
        Method::POST,
        "/api/v1/rulesets/default/rollback/999999",
        "",
        None,
    );
    assert_eq!(s, 404);
    let p3 = b
        .call(
            Method::POST,
            &format!("/api/v1/rulesets/default/rollback/{r1}"),
            "",
            None,
        )
        .unwrap();
    let r3 = p3["revision"].as_i64().unwrap();
    assert!(r3 > r2);
    let d = b
        .call(Method::GET, "/api/v1/rulesets/default", "", None)
        .unwrap();
    assert_eq!(
        (d["text"].as_str().unwrap(), d["revision"].as_i64().unwrap()),
        (GOOD, r3)
    );
    let h = b
        .call(Method::GET, "/api/v1/rulesets/default/history", "", None)
        .unwrap();
    assert_eq!(h[0]["origin"], format!("rollback to revision {r1}"));

    // No nodes yet: listed as none; asking for an unknown node is refused.
    let n = b.call(Method::GET, "/api/v1/nodes", "", None).unwrap();
    assert_eq!(n["nodes"], Value::Array(vec![]));
    assert_eq!(n["summary"][0]["revision"].as_i64(), Some(r3));
    let (s, e) = b.refused(Method::GET, "/api/v1/traffic?nodes=ghost", "", None);
    assert_eq!((s, e["field"].clone()), (400, Value::from("nodes")));
    let (s, _) = b.refused(Method::GET, "/api/v1/traffic?limit=0", "", None);
    assert_eq!(s, 400);
    assert!(!b.log().contains("panicked"), "{}", b.log());
}

#[test]
fn without_etcd_the_controller_answers_at_once_and_recovers() {
    let mut b = Bed::up();
    b.call(Method::PUT, "/api/v1/rulesets/default", GOOD, None)
        .unwrap();
    b.etcd = None; // killed
    let t0 = Instant::now();
    let (s, e) = b.refused(Method::GET, "/api/v1/rulesets", "", None);
    assert_eq!(s, 503, "{e}");
    assert!(
        t0.elapsed() < Duration::from_secs(12),
        "took {:?}",
        t0.elapsed()
    );
    let h = b.call(Method::GET, "/api/v1/health", "", None).unwrap();
    assert_eq!(h["ok"], false, "{h}");
    let (s, _) = b.refused(Method::PUT, "/api/v1/rulesets/default", GOOD2, None);
    assert_eq!(s, 503);

    // etcd back on the same data: the set is there, pushes work again.
    b.etcd = Some(start_etcd(b.dir.path(), &b.etcd_url, b.etcd_peer));
    let t0 = Instant::now();
    let d = loop {
        match b.call(Method::GET, "/api/v1/rulesets/default", "", None) {
            Ok(d) => break d,
            Err(e) => {
                assert!(t0.elapsed() < Duration::from_secs(20), "no recovery: {e}");
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    };
    assert_eq!(d["text"], GOOD);
    b.call(Method::PUT, "/api/v1/rulesets/default", GOOD2, None)
        .unwrap();
}
