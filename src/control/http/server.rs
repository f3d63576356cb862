//! The API server: one thread with a single-threaded tokio runtime, serving the
//! Unix socket and (optionally) a TCP management address, plain or TLS.
//!
//! Every connection is bounded: headers must arrive within
//! [`HEADER_TIMEOUT`], a body within [`BODY_TIMEOUT`], a write that the client
//! does not read within [`WRITE_TIMEOUT`] closes it, at most
//! `max_connections` are served at once, and a handler that panics answers 500
//! while the rest keeps serving.

use super::auth::{self, Gate, Peer};
use super::error::Refusal;
use super::routes::{self, Ctx};
use super::{ApiDoc, metrics, page};
use crate::control::config::ApiConfig;
use crate::pipeline::firewall::Prefix;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use utoipa::OpenApi;

/// Time a client has to send a request's headers (also between requests on a
/// kept-alive connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to send a request's body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a write may wait for a client that does not read.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a TLS handshake may take.
const TLS_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A socket could not be bound.
    #[error("{what}: {source}")]
    Bind {
        /// Which.
        what: String,
        /// Why.
        source: io::Error,
    },
    /// TLS material could not be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// Tokens could not be read or made.
    #[error("{0}")]
    Tokens(String),
}

/// The router: every endpoint, the page, the metrics, the OpenAPI document.
pub fn router(ctx: Arc<Ctx>, gate: Arc<Gate>, max_body: usize) -> Router {
    let api = Router::new()
        .route("/api/v1/whoami", get(routes::whoami))
        .route("/api/v1/node", get(routes::node))
        .route("/api/v1/health", get(routes::health))
        .route("/api/v1/ready", get(routes::ready))
        .route("/api/v1/cluster", get(routes::cluster))
        .route("/api/v1/stats", get(routes::stats))
        .route("/api/v1/macs", get(routes::macs))
        .route("/api/v1/workloads", get(routes::workloads))
        .route("/api/v1/workloads/pod", post(routes::attach_pod))
        .route("/api/v1/workloads/vm", post(routes::attach_vm))
        .route(
            "/api/v1/workloads/{name}",
            get(routes::workload).delete(routes::detach),
        )
        .route("/api/v1/workloads/{name}/mode", put(routes::set_mode))
        .route("/api/v1/rules", get(routes::rules).post(routes::push))
        .route("/api/v1/rules/validate", post(routes::validate))
        .route("/api/v1/rules/history", get(routes::history))
        .route("/api/v1/rules/rollback", post(routes::rollback))
        .route("/api/v1/log", get(routes::log))
        .route("/api/v1/log/stream", get(routes::log_stream))
        .route("/api/v1/flows", get(routes::flows))
        .route("/api/v1/usage", get(routes::usage))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics_text))
        .route("/", get(page::index))
        .route("/assets/app.js", get(page::app_js))
        .route("/assets/app.css", get(page::app_css))
        .route("/assets/common.js", get(page::common_js))
        .route("/assets/common.css", get(page::common_css))
        .with_state(ctx);
    guarded(api, gate, max_body)
}

/// A router behind the auth layer and the request limits (the node's API and
/// the controller's alike); unknown paths and methods answer JSON errors.
pub fn guarded(api: Router, gate: Arc<Gate>, max_body: usize) -> Router {
    let api = api
        .fallback(|| async { Refusal::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            Refusal::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
        });
    bounded(
        api.layer(axum::middleware::from_fn_with_state(gate, auth::authorize)),
        max_body,
    )
}

/// The limits every request is held to: body size and time, and a panicking
/// handler answered with 500 (and logged) instead of taking the server down.
fn bounded(r: Router, max_body: usize) -> Router {
    r.layer(DefaultBodyLimit::max(max_body))
        .layer(RequestBodyTimeoutLayer::new(BODY_TIMEOUT))
        .layer(CatchPanicLayer::custom(
            |p: Box<dyn std::any::Any + Send>| {
                let what = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(
                    panic = what.as_str(),
                    "an API handler panicked; answered 500"
                );
                Refusal::internal("internal error (logged)").into_response()
            },
        ))
}

async fn openapi() -> Response {
    let mut r = axum::Json(ApiDoc::openapi()).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// OpenMetrics when the scraper asks for it (Prometheus does), else the
/// classic text format.
async fn metrics_text(State(ctx): State<Arc<Ctx>>, headers: axum::http::HeaderMap) -> Response {
    let om = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let body = metrics::render(&ctx);
    let (body, ct) = if om {
        (
            body,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            metrics::classic(&body),
            "text/plain; version=0.0.4; charset=utf-8",
        )
    };
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}

/// Binds the Unix socket at `path` (mode 0600, or 0660 with `group`), refusing
/// if a daemon already answers there.
pub fn bind_unix(path: &Path, group: Option<&str>) -> io::Result<std::os::unix::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("another guardwire answers on {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let l = std::os::unix::net::UnixListener::bind(path)?;
    let mode = match group {
        Some(g) => {
            let gid = group_id(g)?;
            std::os::unix::fs::chown(path, None, Some(gid))?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

fn group_id(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: getgrnam reads a NUL-terminated name and returns a pointer into
    // static storage (or null); it is read at once, before any other call.
    let g = unsafe { libc::getgrnam(c.as_ptr()) };
    if g.is_null() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no group named {name:?} (api.socket_group)"),
        ));
    }
    // SAFETY: non-null, points at a valid `struct group`.
    Ok(unsafe { (*g).gr_gid })
}

fn read_pem(path: &Path) -> Result<Vec<u8>, ServeError> {
    std::fs::read(path).map_err(|e| ServeError::Tls(format!("{}: {e}", path.display())))
}

/// A TLS server config from the configured files.
pub fn tls_config(cfg: &ApiConfig) -> Result<Option<Arc<rustls::ServerConfig>>, ServeError> {
    let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) else {
        return Ok(None);
    };
    let bad =
        |p: &PathBuf, e: &dyn std::fmt::Display| ServeError::Tls(format!("{}: {e}", p.display()));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read_pem(cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert, &e))?;
    if certs.is_empty() {
        return Err(bad(cert, &"no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&read_pem(key)?).map_err(|e| bad(key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    let builder = match &cfg.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&read_pem(ca)?) {
                roots
                    .add(c.map_err(|e| bad(ca, &e))?)
                    .map_err(|e| bad(ca, &e))?;
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| bad(ca, &e))?;
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    let mut sc = builder
        .with_single_cert(certs, key_der)
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(sc)))
}

/// Everything the server thread needs.
pub struct Server {
    /// The router.
    pub router: Router,
    /// The Unix socket (bound, non-blocking); none for the controller.
    pub unix: Option<std::os::unix::net::UnixListener>,
    /// The TCP listener (bound, non-blocking), with its TLS config and allowed prefixes.
    pub tcp: Option<(
        std::net::TcpListener,
        Option<Arc<rustls::ServerConfig>>,
        Vec<Prefix>,
    )>,
    /// Connections served at once per listener.
    pub max_connections: usize,
}

impl Server {
    /// Starts the control thread serving both listeners until the process ends.
    pub fn spawn(self) -> io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("gw-api".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("API runtime: {e}");
                        return;
                    }
                };
                rt.block_on(self.run());
            })
    }

    async fn run(self) {
        let Server {
            router,
            unix,
            tcp,
            max_connections,
        } = self;
        let mut tasks = Vec::new();
        if let Some(unix) = unix {
            match tokio::net::UnixListener::from_std(unix) {
                Ok(l) => tasks.push(tokio::spawn(serve_unix(l, router.clone(), max_connections))),
                Err(e) => {
                    tracing::error!("API Unix socket: {e}");
                    return;
                }
            }
        }
        if let Some((l, tls, allow)) = tcp {
            match tokio::net::TcpListener::from_std(l) {
                Ok(l) => {
                    tasks.push(tokio::spawn(serve_tcp(
                        l,
                        tls,
                        allow,
                        router,
                        max_connections,
                    )));
                }
                Err(e) => tracing::error!("API TCP listener: {e}"),
            }
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

async fn serve_unix(l: tokio::net::UnixListener, router: Router, max: usize) {
    let slots = Arc::new(Semaphore::new(max));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (s, _) = match l.accept().await {
            Ok(c) => c,
            Err(e) => {
                accept_error(&e).await;
                continue;
            }
        };
        let uid = s.peer_cred().map(|c| c.uid()).unwrap_or(u32::MAX);
        let router = router.clone();
        tokio::spawn(async move {
            serve_conn(s, Peer::Unix { uid }, router).await;
            drop(permit);
        });
    }
}

async fn serve_tcp(
    l: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    allow: Vec<Prefix>,
    router: Router,
    max: usize,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(max));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (s, addr) = match l.accept().await {
            Ok(c) => c,
            Err(e) => {
                accept_error(&e).await;
                continue;
            }
        };
        if !allow.is_empty() && !allow.iter().any(|p| p.contains(addr.ip())) {
            tracing::debug!(%addr, "API connection from outside api.allow_from closed");
            continue;
        }
        let _ = s.set_nodelay(true);
        let router = router.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                None => serve_conn(s, Peer::Tcp { addr, cert: None }, router).await,
                Some(a) => {
                    let hs = tokio::time::timeout(TLS_TIMEOUT, a.accept(s)).await;
                    match hs {
                        Ok(Ok(t)) => {
                            let cert = t
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .map(|c| {
                                    let h = crate::control::rulebook::hash_bytes(c.as_ref());
                                    format!("cert:{}", &h[..16])
                                });
                            serve_conn(t, Peer::Tcp { addr, cert }, router).await
                        }
                        Ok(Err(e)) => tracing::debug!(%addr, "TLS handshake: {e}"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
}

/// Out of descriptors or similar: wait a little instead of spinning.
async fn accept_error(e: &io::Error) {
    tracing::warn!("API accept: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn serve_conn<S>(s: S, peer: Peer, router: Router)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut s = tokio_io_timeout::TimeoutStream::new(s);
    s.set_write_timeout(Some(WRITE_TIMEOUT));
    let io = TokioIo::new(Box::pin(s));
    let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(peer.clone());
        router.clone().oneshot(req.map(axum::body::Body::new))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(io, svc);
    if let Err(e) = conn.await {
        tracing::debug!("API connection: {e}");
    }
}

/// Binds the TCP management address.
pub fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn fetch(router: &Router, path: &str) -> String {
        let (client, server) = tokio::net::UnixStream::pair().unwrap();
        tokio::spawn(serve_conn(server, Peer::Unix { uid: 0 }, router.clone()));
        let mut c = client;
        c.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        out
    }

    async fn boom() -> &'static str {
        panic!("handler bug")
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_the_server_goes_on() {
        let r = bounded(
            Router::new()
                .route("/boom", get(boom))
                .route("/ok", get(|| async { "fine" })),
            1024,
        );
        let a = fetch(&r, "/boom").await;
        assert!(a.starts_with("HTTP/1.1 500"), "{a}");
        assert!(a.contains("internal error"), "{a}");
        let b = fetch(&r, "/ok").await;
        assert!(b.starts_with("HTTP/1.1 200") && b.ends_with("fine"), "{b}");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_413() {
        let r = bounded(
            Router::new().route(
                "/in",
                post(
                    |super::super::extract::Body(v): super::super::extract::Body<
                        serde_json::Value,
                    >| async move { v.to_string() },
                ),
            ),
            16,
        );
        let (client, server) = tokio::net::UnixStream::pair().unwrap();
        tokio::spawn(serve_conn(server, Peer::Unix { uid: 0 }, r));
        let mut c = client;
        let body = format!("\"{}\"", "x".repeat(64));
        c.write_all(
            format!(
                "POST /in HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        let _ = c.read_to_string(&mut out).await;
        assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    }
}
