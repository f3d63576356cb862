//! The control socket: a Unix stream socket speaking one JSON request per line
//! and one JSON answer per line. The CLI verbs (`guardwire stats`, ...) are its
//! clients.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A request to the daemon.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// All counters.
    Stats,
    /// The learned MAC table.
    Macs,
    /// Workloads with their ports, modes and counters.
    List,
    /// Attach a live pod (migrate its CNI veth into sec ns).
    AttachPod {
        /// The pod's network namespace (name under /var/run/netns or a path).
        netns: String,
        /// Its interface.
        ifname: String,
        /// Name (default: the namespace's), mode, on_failure, addresses.
        #[serde(flatten)]
        spec: AttachSpec,
    },
    /// Attach a VM by its tap, or by the veth between its qbr and br-int.
    AttachVm {
        /// The tap (or, with `hybrid`, the veth end in qbr) in the host namespace.
        dev: String,
        /// Hybrid plug rather than tap.
        hybrid: bool,
        /// Name (default: the device's), mode, on_failure, addresses.
        #[serde(flatten)]
        spec: AttachSpec,
    },
    /// Detach a workload attached with AttachPod or AttachVm.
    Detach {
        /// Workload name.
        workload: String,
    },
    /// Live flows.
    Flows {
        /// Which.
        #[serde(default)]
        filter: crate::control::record::Filter,
        /// At most this many (the most recently active).
        limit: usize,
    },
    /// The verdict log (in-memory ring).
    Log {
        /// Which.
        #[serde(default)]
        filter: crate::control::record::Filter,
        /// At most this many (the newest).
        limit: usize,
    },
    /// Replace the running rules.
    Rules {
        /// The rule file's text.
        text: String,
        /// Its name, for error messages.
        origin: String,
    },
    /// Statistics per workload, category and window; bandwidth limits.
    Usage {
        /// Window size, seconds: 1, 10, 60 or 300.
        window: u64,
        /// Only this workload.
        workload: Option<String>,
    },
    /// Switch a workload's steering mode.
    Mode {
        /// Workload name.
        workload: String,
        /// off, mirror or inline.
        mode: crate::steer::SteeringMode,
    },
}

/// What every attach request may say about the workload.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AttachSpec {
    /// Workload name (default: the namespace's or device's name).
    #[serde(default)]
    pub name: Option<String>,
    /// Mode to start in (default: the node's default mode).
    #[serde(default)]
    pub mode: Option<crate::steer::SteeringMode>,
    /// What happens when guardwire dies (default: the node's default).
    #[serde(default)]
    pub on_failure: Option<crate::steer::OnFailure>,
    /// Addresses the workload may send from, beyond those learned at attach (a
    /// pod's interface); a VM's cannot be read, so they must be given here.
    #[serde(default)]
    pub identity: crate::pipeline::spoof::Identity,
}

/// The daemon's answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    /// Did it work?
    pub ok: bool,
    /// The result when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why not, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Binds the control socket at `path`, refusing if a daemon already answers there.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("another guardwire answers on {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Serves requests on `listener` until the process ends, one connection at a time
/// (requests are short), answering each with `handle`.
pub fn serve<H>(listener: UnixListener, handle: H) -> io::Result<std::thread::JoinHandle<()>>
where
    H: Fn(Request) -> Result<Value, String> + Send + 'static,
{
    std::thread::Builder::new()
        .name("gw-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                if let Err(e) = answer(conn, &handle) {
                    tracing::debug!("control connection: {e}");
                }
            }
        })
}

fn answer<H>(conn: UnixStream, handle: &H) -> io::Result<()>
where
    H: Fn(Request) -> Result<Value, String>,
{
    let mut w = conn.try_clone()?;
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line)?;
    let resp = match serde_json::from_str::<Request>(&line) {
        Ok(req) => match handle(req) {
            Ok(v) => Response {
                ok: true,
                result: Some(v),
                error: None,
            },
            Err(e) => Response {
                ok: false,
                result: None,
                error: Some(e),
            },
        },
        Err(e) => Response {
            ok: false,
            result: None,
            error: Some(format!("bad request: {e}")),
        },
    };
    let mut out = serde_json::to_vec(&resp).map_err(io::Error::other)?;
    out.push(b'\n');
    w.write_all(&out)
}

/// Sends one request to the daemon at `path` and returns its result.
pub fn call(path: &Path, req: &Request) -> Result<Value, String> {
    let sock: PathBuf = path.to_path_buf();
    let mut s = UnixStream::connect(&sock).map_err(|e| {
        format!(
            "cannot reach guardwire at {}: {e} (is `guardwire run` going?)",
            sock.display()
        )
    })?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut msg = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    msg.push(b'\n');
    s.write_all(&msg).map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let r: Response =
        serde_json::from_str(&line).map_err(|e| format!("bad answer from guardwire: {e}"))?;
    if r.ok {
        Ok(r.result.unwrap_or(Value::Null))
    } else {
        Err(r.error.unwrap_or_else(|| "unknown error".into()))
    }
}
