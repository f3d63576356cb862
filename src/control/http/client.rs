//! The API's client side, used by the CLI, `guardwire-cni` and the tests: typed
//! calls over the Unix socket (or a plain-HTTP TCP address with a token),
//! answering with the same types the server sends.

use super::types::*;
use crate::control::inspection::UsageReport;
use crate::control::rulebook::Revision;
use crate::datapath::StatsSnapshot;
use crate::vocab::SteeringMode;
use http_body_util::{BodyExt, Full};
use hyper::Method;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::PathBuf;
use std::time::Duration;

/// Where the daemon is.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// Its Unix socket (admin by file permission).
    Unix(PathBuf),
    /// `host:port` of its TCP management address, with a bearer token.
    Tcp {
        /// `host:port`.
        addr: String,
        /// The bearer token.
        token: String,
    },
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon could not be reached.
    #[error("cannot reach guardwire at {at}: {why} (is `guardwire run` going?)")]
    Connect {
        /// Where.
        at: String,
        /// Why.
        why: String,
    },
    /// The connection broke or timed out.
    #[error("talking to guardwire: {0}")]
    Io(String),
    /// The daemon refused the request.
    #[error("{}", .body.error)]
    Refused {
        /// HTTP status.
        status: u16,
        /// What it said.
        body: ApiError,
    },
    /// The answer was not what this client understands.
    #[error("bad answer from guardwire (HTTP {status}): {why}")]
    Decode {
        /// HTTP status.
        status: u16,
        /// Why.
        why: String,
    },
}

/// Time one call may take (an attach of a busy node can take a second).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one daemon.
pub struct Client {
    endpoint: Endpoint,
    rt: tokio::runtime::Runtime,
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl Client {
    /// A client of the daemon at `endpoint`.
    pub fn new(endpoint: Endpoint) -> Client {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime needs no resources that can run out");
        Client { endpoint, rt }
    }

    /// A client of the daemon on Unix socket `path`.
    pub fn unix(path: impl Into<PathBuf>) -> Client {
        Client::new(Endpoint::Unix(path.into()))
    }

    /// One call: `method path` with an optional JSON body, answer decoded as `T`.
    pub fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let body = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| ClientError::Io(e.to_string()))?,
            None => Vec::new(),
        };
        self.call_bytes(method, path, body)
    }

    /// One call with a body as it is (rule text for the controller), answer
    /// decoded as `T`.
    pub fn call_bytes<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<T, ClientError> {
        let (status, bytes) = self.rt.block_on(async {
            tokio::time::timeout(CALL_TIMEOUT, self.send(method, path, body))
                .await
                .map_err(|_| ClientError::Io(format!("no answer within {CALL_TIMEOUT:?}")))?
        })?;
        if (200..300).contains(&status) {
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
                status,
                why: e.to_string(),
            })
        } else {
            let body = serde_json::from_slice::<ApiError>(&bytes).unwrap_or_else(|_| ApiError {
                error: format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)),
                field: None,
                line: None,
            });
            Err(ClientError::Refused { status, body })
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Bytes), ClientError> {
        request(&self.endpoint, method, path, body).await
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call::<(), T>(Method::GET, path, None)
    }

    /// Counters of every port, drops by reason, malformed kinds.
    pub fn stats(&self) -> Result<StatsSnapshot, ClientError> {
        self.get("/api/v1/stats")
    }

    /// Liveness and readiness.
    pub fn health(&self) -> Result<Health, ClientError> {
        self.get("/api/v1/health")
    }

    /// Workloads with ports, modes, identity, counters.
    pub fn workloads(&self) -> Result<Vec<Workload>, ClientError> {
        self.get("/api/v1/workloads")
    }

    /// The learned MAC table.
    pub fn macs(&self) -> Result<Vec<MacEntry>, ClientError> {
        self.get("/api/v1/macs")
    }

    /// Attaches a live pod.
    pub fn attach_pod(&self, req: &AttachPod) -> Result<Attached, ClientError> {
        self.call(Method::POST, "/api/v1/workloads/pod", Some(req))
    }

    /// Attaches a VM.
    pub fn attach_vm(&self, req: &AttachVm) -> Result<Attached, ClientError> {
        self.call(Method::POST, "/api/v1/workloads/vm", Some(req))
    }

    /// Detaches a workload.
    pub fn detach(&self, workload: &str) -> Result<Detached, ClientError> {
        self.call::<(), _>(
            Method::DELETE,
            &format!("/api/v1/workloads/{}", enc(workload)),
            None,
        )
    }

    /// Switches a workload's steering mode.
    pub fn set_mode(&self, workload: &str, mode: SteeringMode) -> Result<ModeChanged, ClientError> {
        self.call(
            Method::PUT,
            &format!("/api/v1/workloads/{}/mode", enc(workload)),
            Some(&SetMode { mode }),
        )
    }

    /// Pushes rule text.
    pub fn push_rules(&self, text: &str, origin: &str) -> Result<Revision, ClientError> {
        let body = RulesText {
            text: text.to_string(),
            origin: Some(origin.to_string()),
        };
        self.call(Method::POST, "/api/v1/rules", Some(&body))
    }

    /// The rules in force.
    pub fn rules(&self) -> Result<RulesDocument, ClientError> {
        self.get("/api/v1/rules")
    }

    /// Rule revisions, newest first.
    pub fn rules_history(&self) -> Result<Vec<Revision>, ClientError> {
        self.get("/api/v1/rules/history")
    }

    /// Pushes an earlier generation's text again.
    pub fn rollback(&self, generation: u64) -> Result<Revision, ClientError> {
        self.call(
            Method::POST,
            "/api/v1/rules/rollback",
            Some(&Rollback { generation }),
        )
    }

    fn query(q: &impl Serialize) -> String {
        serde_urlencoded::to_string(q).unwrap_or_default()
    }

    /// A page of the verdict log, newest first.
    pub fn log(&self, q: &LogQuery) -> Result<LogPage, ClientError> {
        self.get(&format!("/api/v1/log?{}", Self::query(q)))
    }

    /// Live flows, most recently active first.
    pub fn flows(&self, q: &LogQuery) -> Result<LogPage, ClientError> {
        self.get(&format!("/api/v1/flows?{}", Self::query(q)))
    }

    /// Usage windows and bandwidth limits.
    pub fn usage(&self, window: u64, workload: Option<&str>) -> Result<UsageReport, ClientError> {
        let q = UsageQuery {
            window: Some(window),
            workload: workload.map(str::to_string),
        };
        self.get(&format!("/api/v1/usage?{}", Self::query(&q)))
    }
}

/// A connection the client can speak HTTP over.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// One HTTP/1 request to a daemon's API (the async core of [`Client`], for
/// callers that already run in a runtime): status and body.
pub async fn request(
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    body: Vec<u8>,
) -> Result<(u16, Bytes), ClientError> {
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "guardwire")
        .header(hyper::header::CONTENT_TYPE, "application/json");
    let (at, io) = match endpoint {
        Endpoint::Unix(p) => {
            let s = tokio::net::UnixStream::connect(p).await;
            (
                p.display().to_string(),
                s.map(|s| Box::new(s) as Box<dyn Io>),
            )
        }
        Endpoint::Tcp { addr, token } => {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
            let s = tokio::net::TcpStream::connect(addr.as_str()).await;
            (addr.clone(), s.map(|s| Box::new(s) as Box<dyn Io>))
        }
    };
    let io = io.map_err(|e| ClientError::Connect {
        at,
        why: e.to_string(),
    })?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| ClientError::Io(e.to_string()))?;
    tokio::spawn(conn);
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| ClientError::Io(e.to_string()))?;
    let resp = tx
        .send_request(req)
        .await
        .map_err(|e| ClientError::Io(e.to_string()))?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Io(e.to_string()))?
        .to_bytes();
    Ok((status, bytes))
}
