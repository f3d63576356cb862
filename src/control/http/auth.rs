//! Who may do what. The Unix socket is guarded by its file mode (whoever can
//! open it is root or in the configured group) and is admin; on TCP a caller
//! shows a bearer token (compared in constant time) or a client certificate
//! signed by the configured CA. Two roles: viewer (GET) and admin (everything).

use super::error::Refusal;
use crate::control::config::ApiConfig;
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;
use governor::{DefaultKeyedRateLimiter, Quota};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read only.
    Viewer,
    /// Everything.
    Admin,
}

impl Role {
    /// "viewer" or "admin".
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Admin => "admin",
        }
    }
}

/// Where a connection came from; the server puts it on every request.
#[derive(Clone, Debug)]
pub enum Peer {
    /// The Unix socket, with the caller's uid.
    Unix {
        /// From SO_PEERCRED.
        uid: u32,
    },
    /// TCP, with the client certificate's fingerprint when one was verified.
    Tcp {
        /// The client's address.
        addr: SocketAddr,
        /// "cert:<sha256 prefix>" of a verified client certificate.
        cert: Option<String>,
    },
}

/// An authenticated caller, put on the request for handlers.
#[derive(Clone, Debug)]
pub struct Caller {
    /// What it may do.
    pub role: Role,
    /// Who it is, for the rules history: "token:admin", "unix:uid=0", ...
    pub subject: String,
}

/// The two bearer tokens.
pub struct Tokens {
    admin: String,
    viewer: String,
}

/// Bytes of randomness in a generated token (hex-encoded: twice as many characters).
const TOKEN_BYTES: usize = 32;

fn token_file(path: &Path) -> Result<String, String> {
    let err = |e: std::io::Error| format!("API token {}: {e}", path.display());
    match std::fs::read_to_string(path) {
        Ok(t) if t.trim().len() >= 16 => return Ok(t.trim().to_string()),
        Ok(_) => {
            return Err(format!(
                "API token {}: shorter than 16 characters",
                path.display()
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let mut raw = [0u8; TOKEN_BYTES];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
        .map_err(|_| format!("API token {}: no randomness", path.display()))?;
    let tok = crate::control::rulebook::hex(&raw);
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    std::io::Write::write_all(&mut f, format!("{tok}\n").as_bytes()).map_err(err)?;
    tracing::info!(file = %path.display(), "generated an API token");
    Ok(tok)
}

impl Tokens {
    /// Reads the configured token files, generating missing ones (mode 0600).
    pub fn load(cfg: &ApiConfig, state_dir: &Path) -> Result<Tokens, String> {
        let default = |n: &str| state_dir.join("api").join(n);
        let admin_path: PathBuf = cfg
            .admin_token_file
            .clone()
            .unwrap_or_else(|| default("admin.token"));
        let viewer_path: PathBuf = cfg
            .viewer_token_file
            .clone()
            .unwrap_or_else(|| default("viewer.token"));
        let tokens = Tokens {
            admin: token_file(&admin_path)?,
            viewer: token_file(&viewer_path)?,
        };
        if tokens.admin == tokens.viewer {
            return Err("the admin and viewer API tokens are the same".into());
        }
        Ok(tokens)
    }

    /// The role a presented token gives, comparing in constant time.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        let p = presented.as_bytes();
        let admin = self.admin.as_bytes().ct_eq(p);
        let viewer = self.viewer.as_bytes().ct_eq(p);
        if bool::from(admin) {
            Some(Role::Admin)
        } else if bool::from(viewer) {
            Some(Role::Viewer)
        } else {
            None
        }
    }
}

/// What the auth layer needs.
pub struct Gate {
    /// The tokens.
    pub tokens: Tokens,
    /// Per-source-address request budget on TCP.
    pub limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl Gate {
    /// Tokens and a rate limiter as configured.
    pub fn new(cfg: &ApiConfig, tokens: Tokens) -> Gate {
        let rate = NonZeroU32::new(cfg.rate_per_sec).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(cfg.burst).unwrap_or(NonZeroU32::MIN);
        Gate {
            tokens,
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
        }
    }
}

/// Paths anyone may read: the page's shell (it shows only the login until a
/// token is given), the API description, and liveness for probes.
fn public(path: &str) -> bool {
    path == "/"
        || path.starts_with("/assets/")
        || path == "/api/v1/openapi.json"
        || path == "/api/v1/health"
}

/// The middleware: rate limit, authenticate, authorize; puts a [`Caller`] on
/// the request.
pub async fn authorize(
    State(gate): State<Arc<Gate>>,
    mut req: Request,
    next: Next,
) -> Result<Response, Refusal> {
    let peer = req
        .extensions()
        .get::<Peer>()
        .cloned()
        .ok_or_else(|| Refusal::unauthorized("no peer information"))?;
    let caller = match &peer {
        Peer::Unix { uid } => Some(Caller {
            role: Role::Admin,
            subject: format!("unix:uid={uid}"),
        }),
        Peer::Tcp { addr, cert } => {
            if gate.limiter.check_key(&addr.ip()).is_err() {
                return Err(Refusal::too_many());
            }
            if let Some(c) = cert {
                Some(Caller {
                    role: Role::Admin,
                    subject: c.clone(),
                })
            } else {
                bearer(&req)
                    .map(|t| match gate.tokens.role_of(t) {
                        Some(role) => Ok(Caller {
                            role,
                            subject: format!("token:{}", role.name()),
                        }),
                        None => Err(Refusal::unauthorized("invalid token")),
                    })
                    .transpose()?
            }
        }
    };
    let path = req.uri().path();
    let Some(caller) = caller else {
        if public(path) {
            return Ok(next.run(req).await);
        }
        return Err(Refusal::unauthorized(
            "a bearer token is needed (Authorization: Bearer <token>)",
        ));
    };
    let reads = matches!(*req.method(), Method::GET | Method::HEAD);
    if !reads && caller.role < Role::Admin {
        return Err(Refusal::forbidden(format!(
            "{} {path} needs the admin role; this token is {}",
            req.method(),
            caller.role.name()
        )));
    }
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

fn bearer(req: &Request) -> Option<&str> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, tok) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| tok.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_generated_private_and_reused() {
        let d = tempfile::tempdir().unwrap();
        let cfg = ApiConfig::default();
        let a = Tokens::load(&cfg, d.path()).unwrap();
        let b = Tokens::load(&cfg, d.path()).unwrap();
        assert_eq!(a.admin, b.admin);
        assert_ne!(a.admin, a.viewer);
        assert_eq!(a.admin.len(), TOKEN_BYTES * 2);
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(d.path().join("api/admin.token")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        assert_eq!(a.role_of(&a.admin), Some(Role::Admin));
        assert_eq!(a.role_of(&a.viewer), Some(Role::Viewer));
        assert_eq!(a.role_of(&a.admin[..10]), None);
        assert_eq!(a.role_of(""), None);
    }
}
