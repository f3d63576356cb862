//! Attach and detach of a live pod: its CNI-made veth is migrated into sec ns.
//!
//! Attach (patent claims 7-9): the host end V of the pod's veth is renamed
//! `wp-NAME` and moved into sec ns with its MAC (the workload port); a new veth
//! pair `up-NAME` (sec ns) <-> V's old name with V's MAC and MTU (host ns) closes
//! the path, and takes over whatever the CNI hung on V: bridge membership,
//! addresses, routes, permanent neighbours, sysctls. The pod sees nothing change.
//! Detach puts V back exactly as it was. Every step of attach has an undo, run in
//! reverse when a later step fails, so a failed attach leaves nothing behind.

use super::netlink::{LinkFacts, LinkState, Netlink, NlError};
use super::netns;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::fd::AsRawFd;

/// Sysctls of the host end that a CNI may set (bridge: none; ptp: forwarding,
/// proxy_arp; Calico: proxy_arp and friends).
const SYSCTLS: &[&str] = &[
    "ipv4/conf/{}/forwarding",
    "ipv4/conf/{}/proxy_arp",
    "ipv4/conf/{}/rp_filter",
    "ipv4/conf/{}/arp_ignore",
    "ipv4/conf/{}/arp_announce",
    "ipv4/conf/{}/route_localnet",
    "ipv6/conf/{}/disable_ipv6",
    "ipv6/conf/{}/forwarding",
    "ipv6/conf/{}/accept_ra",
];

/// Why an attach or detach failed. Nothing is left half-done.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The name cannot make port names.
    #[error("{0}")]
    BadName(String),
    /// The pod's namespace cannot be opened.
    #[error("pod network namespace {0}: {1}")]
    NoNetns(String, String),
    /// The pod has no such interface.
    #[error("pod {ns} has no interface {ifname}")]
    NoInterface {
        /// Namespace.
        ns: String,
        /// Interface.
        ifname: String,
    },
    /// The pod's interface has no host-side veth to migrate (macvlan, ipvlan...).
    #[error(
        "{ns}/{ifname} is a {kind} interface, not a veth: it has no host-side end that guardwire could take over (use a veth-based CNI such as bridge or ptp for pods guardwire steers)"
    )]
    NotVeth {
        /// Namespace.
        ns: String,
        /// Interface.
        ifname: String,
        /// Its kind.
        kind: String,
    },
    /// The veth's other end is not in the host namespace.
    #[error("the peer of {ns}/{ifname} is not in the host network namespace {host}")]
    PeerNotInHost {
        /// Namespace.
        ns: String,
        /// Interface.
        ifname: String,
        /// Host namespace.
        host: String,
    },
    /// Ports of that name already exist in sec ns.
    #[error("port {0} already exists in sec ns (workload already attached?)")]
    PortExists(String),
    /// A kernel operation failed (the attach was rolled back).
    #[error("{0}")]
    Netlink(#[from] NlError),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// How a workload reaches the host, and so which device attach migrates.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "via")]
pub enum Via {
    /// A pod's CNI veth: its host end is migrated and becomes the workload port.
    PodVeth {
        /// The pod's network namespace (name or path).
        netns: String,
        /// The pod's interface.
        ifname: String,
    },
    /// A VM's tap, held by its hypervisor: the tap is migrated and becomes the
    /// workload port.
    Tap,
    /// Hybrid plug: the veth from the VM's `qbr` to `br-int` is migrated (its
    /// `qbr` end) and becomes the uplink port; the new pair's sec end faces the VM.
    Hybrid,
}

/// Everything needed to undo an attach, kept on disk across restarts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attachment {
    /// Workload name.
    pub name: String,
    /// How it was reached.
    #[serde(flatten)]
    pub via: Via,
    /// The host namespace (path).
    pub host_netns: String,
    /// Name of the migrated host device as it was.
    pub host_dev: String,
    /// Its MAC.
    pub host_mac: Vec<u8>,
    /// Its MTU.
    pub mtu: u32,
    /// Its transmit queue length.
    #[serde(default)]
    pub txqlen: u32,
    /// The bridge it was a port of.
    pub master: Option<String>,
    /// Was it up?
    pub up: bool,
    /// Its addresses, routes and neighbours.
    pub state: LinkState,
    /// Its sysctls (path under /proc/sys/net, value).
    pub sysctls: Vec<(String, String)>,
    /// Workload port in sec ns.
    pub workload_port: String,
    /// Uplink port in sec ns.
    pub uplink_port: String,
    /// What the workload may send from: the pod's interface MAC and addresses
    /// at attach (empty for a VM, whose guest addresses guardwire cannot read).
    #[serde(default)]
    pub identity: crate::pipeline::spoof::Identity,
}

impl Attachment {
    /// `pod` or `vm`.
    pub fn kind(&self) -> &'static str {
        match self.via {
            Via::PodVeth { .. } => "pod",
            Via::Tap | Via::Hybrid => "vm",
        }
    }

    /// (name in sec ns of the migrated device, name of the new pair's sec end).
    fn sec_names(&self) -> (&str, &str) {
        match self.via {
            Via::Hybrid => (&self.uplink_port, &self.workload_port),
            _ => (&self.workload_port, &self.uplink_port),
        }
    }
}

/// The one rule for workload names, for attach and the config alike: they make
/// port names (`wp-NAME`, within IFNAMSIZ), file names and URL paths, so 1 to
/// 12 characters of [A-Za-z0-9_.-], starting with a letter or digit (no `.`,
/// `..` or `-x`).
pub fn check_workload_name(name: &str) -> Result<(), String> {
    if name.len() > 12 {
        return Err(format!(
            "workload name {name:?} is too long: at most 12 characters (it makes port names)"
        ));
    }
    let ok = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "workload name {name:?} is invalid: 1 to 12 characters of [A-Za-z0-9_.-], starting with a letter or digit"
        ))
    }
}

/// Port names for a workload name; refuses names that do not fit.
pub fn port_names(name: &str) -> Result<(String, String), AttachError> {
    check_workload_name(name).map_err(AttachError::BadName)?;
    Ok((format!("wp-{name}"), format!("up-{name}")))
}

fn read_sysctls(ns: &str, dev: &str) -> Result<Vec<(String, String)>, AttachError> {
    let dev = dev.to_string();
    netns::run_in(ns, move || {
        Ok(SYSCTLS
            .iter()
            .filter_map(|k| {
                let rel = k.replace("{}", &dev);
                let v = std::fs::read_to_string(format!("/proc/sys/net/{rel}")).ok()?;
                Some((k.to_string(), v.trim().to_string()))
            })
            .collect())
    })
    .map_err(|e| AttachError::Other(format!("read sysctls of {}: {e}", "host end")))
}

fn write_sysctls(ns: &str, dev: &str, vals: &[(String, String)]) -> Result<(), AttachError> {
    let dev = dev.to_string();
    let vals = vals.to_vec();
    netns::run_in(ns, move || {
        for (k, v) in &vals {
            let p = format!("/proc/sys/net/{}", k.replace("{}", &dev));
            std::fs::write(&p, v)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{p}: {e}")))?;
        }
        Ok(())
    })
    .map_err(|e| AttachError::Other(format!("restore sysctls: {e}")))
}

fn ns_file(ns: &str) -> Result<File, AttachError> {
    let p = netns::path(ns);
    File::open(&p).map_err(|e| AttachError::NoNetns(p, e.to_string()))
}

/// Test hooks: `GUARDWIRE_FAIL_ATTACH_AT=<step>` makes attach fail at that
/// step, so tests can prove the rollback; `GUARDWIRE_CRASH_AT=<step>` kills the
/// process there with SIGKILL, so tests can prove the recovery.
pub fn checkpoint(step: &str) -> Result<(), AttachError> {
    if std::env::var("GUARDWIRE_CRASH_AT").is_ok_and(|s| s == step) {
        tracing::warn!(step, "crashing on purpose (GUARDWIRE_CRASH_AT)");
        // SAFETY: sends SIGKILL to this process; no memory is touched.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    if std::env::var("GUARDWIRE_FAIL_ATTACH_AT").is_ok_and(|s| s == step) {
        return Err(AttachError::Other(format!(
            "failing on purpose at {step} (GUARDWIRE_FAIL_ATTACH_AT)"
        )));
    }
    Ok(())
}

/// Called once an attach knows everything it will change, before its first
/// kernel change: with the attachment and the temporary name of the new
/// pair, so a crash from then on can be finished or rolled back.
pub type Journal<'a> = &'a dyn Fn(&Attachment, &str) -> Result<(), AttachError>;

type Undo<'a> = Vec<(&'static str, Box<dyn FnOnce() -> Result<(), NlError> + 'a>)>;

fn rollback(undo: Undo<'_>) {
    for (what, f) in undo.into_iter().rev() {
        if let Err(e) = f() {
            tracing::error!("rollback step {what} failed: {e}");
        }
    }
}

fn open_host(host_ns: &str) -> Result<Netlink, AttachError> {
    ns_file(host_ns)?;
    Netlink::open(Some(host_ns))
        .map_err(|e| AttachError::NoNetns(host_ns.to_string(), e.to_string()))
}

fn check_free(sec: &Netlink, name: &str) -> Result<(String, String), AttachError> {
    let (wp, up) = port_names(name)?;
    for p in [&wp, &up] {
        if sec.link_by_name(p).is_ok() {
            return Err(AttachError::PortExists(p.clone()));
        }
    }
    Ok((wp, up))
}

/// Attaches a pod: finds the host end of its veth and migrates it into sec ns
/// (the caller's namespace, `sec`) as the workload port.
pub fn attach_pod(
    sec: &Netlink,
    host_ns: &str,
    name: &str,
    pod_ns: &str,
    ifname: &str,
    journal: Journal<'_>,
) -> Result<Attachment, AttachError> {
    check_free(sec, name)?;
    ns_file(pod_ns)?;
    let pod = Netlink::open(Some(pod_ns))
        .map_err(|e| AttachError::NoNetns(pod_ns.to_string(), e.to_string()))?;
    let eth = pod
        .link_by_name(ifname)
        .map_err(|_| AttachError::NoInterface {
            ns: pod_ns.to_string(),
            ifname: ifname.to_string(),
        })?;
    if eth.kind != "veth" {
        return Err(AttachError::NotVeth {
            ns: pod_ns.to_string(),
            ifname: ifname.to_string(),
            kind: if eth.kind.is_empty() {
                "non-veth".into()
            } else {
                eth.kind.clone()
            },
        });
    }
    let host = open_host(host_ns)?;
    let not_in_host = || AttachError::PeerNotInHost {
        ns: pod_ns.to_string(),
        ifname: ifname.to_string(),
        host: host_ns.to_string(),
    };
    let v = host
        .link_by_index(eth.peer.ok_or_else(not_in_host)?)
        .map_err(|_| not_in_host())?;
    if v.kind != "veth" || v.peer != Some(eth.index) {
        return Err(not_in_host());
    }
    let via = Via::PodVeth {
        netns: pod_ns.to_string(),
        ifname: ifname.to_string(),
    };
    let identity = crate::pipeline::spoof::Identity {
        macs: <[u8; 6]>::try_from(eth.mac.as_slice())
            .into_iter()
            .collect(),
        ips: pod.ips(eth.index).unwrap_or_default(),
        router: false,
    };
    let mut a = migrate(sec, &host, host_ns, name, v, via, journal)?;
    a.identity = identity;
    Ok(a)
}

/// Attaches a VM by its tap (`Via::Tap`) or by the veth between its `qbr` and
/// `br-int` (`Via::Hybrid`), named `dev` in the host namespace.
pub fn attach_vm(
    sec: &Netlink,
    host_ns: &str,
    name: &str,
    dev: &str,
    via: Via,
    journal: Journal<'_>,
) -> Result<Attachment, AttachError> {
    check_free(sec, name)?;
    let host = open_host(host_ns)?;
    let v = host
        .link_by_name(dev)
        .map_err(|_| AttachError::NoInterface {
            ns: host_ns.to_string(),
            ifname: dev.to_string(),
        })?;
    let want = match via {
        Via::Tap => "tun",
        Via::Hybrid => "veth",
        Via::PodVeth { .. } => {
            return Err(AttachError::Other(
                "attach_vm takes a tap or a hybrid veth".into(),
            ));
        }
    };
    if v.kind != want {
        return Err(AttachError::Other(format!(
            "{dev} is a {} device; --{} needs a {}",
            if v.kind.is_empty() { "plain" } else { &v.kind },
            if want == "tun" { "tap" } else { "hybrid" },
            if want == "tun" {
                "tap"
            } else {
                "veth with one end in the VM's bridge"
            }
        )));
    }
    if via == Via::Hybrid && v.master.is_none() {
        return Err(AttachError::Other(format!(
            "{dev} is in no bridge: a hybrid plug's veth has its end in qbr"
        )));
    }
    migrate(sec, &host, host_ns, name, v, via, journal)
}

/// Moves host device `v` into sec ns and closes the path with a new veth pair
/// whose host end takes `v`'s place; everything done is undone on error.
fn migrate(
    sec: &Netlink,
    host: &Netlink,
    host_ns: &str,
    name: &str,
    v: LinkFacts,
    via: Via,
    journal: Journal<'_>,
) -> Result<Attachment, AttachError> {
    let (wp_name, up_name) = port_names(name)?;
    let host_file = ns_file(host_ns)?;
    let sec_file = ns_file("/proc/thread-self/ns/net")?;
    let master = match v.master {
        Some(m) => Some(host.link_by_index(m)?.name),
        None => None,
    };
    let att = Attachment {
        name: name.to_string(),
        via,
        host_netns: host_ns.to_string(),
        host_dev: v.name.clone(),
        host_mac: v.mac.clone(),
        mtu: v.mtu,
        txqlen: v.txqlen,
        master: master.clone(),
        up: v.up,
        state: LinkState::take(host, v.index)?,
        sysctls: read_sysctls(host_ns, &v.name)?,
        workload_port: wp_name,
        uplink_port: up_name,
        identity: Default::default(),
    };
    // The migrated device and the sec end of the new pair, by role.
    // `moved`: the host device's name in sec ns; `fresh`: the new pair's sec end.
    let (moved, fresh) = att.sec_names();
    let (moved, fresh) = (moved.to_string(), fresh.to_string());

    // Undo steps capture these by shared reference (they outlive `undo`).
    let (v, master, moved, host_file) = (&v, &master, &moved, &host_file);
    let tmp = temporary_name(v.index);
    journal(&att, &tmp)?;
    let mut undo: Undo<'_> = Vec::new();
    let res = (|| -> Result<(), AttachError> {
        // The second steering wire: a new pair, one end moved to sec ns.
        host.add_veth(&tmp, &fresh)?;
        let t = host.link_by_name(&tmp)?;
        let ti = t.index;
        undo.push(("delete new pair", Box::new(move || host.del_link(ti))));
        let u = host.link_by_name(&fresh)?;
        host.set(
            "size uplink port",
            Netlink::change(u.index).mtu(v.mtu).build(),
        )?;
        host.set(
            "move uplink port",
            Netlink::change(u.index)
                .setns_by_fd(sec_file.as_raw_fd())
                .build(),
        )?;
        checkpoint("pair")?;

        // The CNI's veth end leaves the host for sec ns, renamed, MAC kept.
        host.set(
            "take host end down",
            Netlink::change(v.index).down().nocontroller().build(),
        )?;
        // Undo steps find the device by name: an interface that went to another
        // namespace and back may come home with a different index.
        undo.push((
            "restore host end",
            Box::new(move || {
                let i = host.link_by_name(&v.name)?.index;
                let mut b = Netlink::change(i);
                if let Some(m) = master {
                    b = b.controller(host.link_by_name(m)?.index);
                }
                if v.up {
                    b = b.up();
                }
                host.set("restore host end", b.build())
            }),
        ));
        host.set(
            "rename host end",
            Netlink::change(v.index).name(moved.clone()).build(),
        )?;
        undo.push((
            "rename host end back",
            Box::new(move || {
                let i = host.link_by_name(moved)?.index;
                host.set(
                    "rename host end back",
                    Netlink::change(i).name(v.name.clone()).build(),
                )
            }),
        ));
        host.set(
            "move host end",
            Netlink::change(v.index)
                .setns_by_fd(sec_file.as_raw_fd())
                .build(),
        )?;
        undo.push((
            "bring host end back",
            Box::new(move || {
                let w = sec.link_by_name(moved)?;
                sec.set(
                    "bring host end back",
                    Netlink::change(w.index)
                        .setns_by_fd(host_file.as_raw_fd())
                        .build(),
                )
            }),
        ));
        checkpoint("move")?;

        // The new host end takes the old one's place, name, MAC and all. If
        // that fails halfway, the undo gives the old name back first.
        let tmp_name = tmp.clone();
        undo.push((
            "give the old name back",
            Box::new(move || {
                host.set(
                    "undress new host end",
                    Netlink::change(ti).down().name(tmp_name).build(),
                )
            }),
        ));
        occupy(host, t.index, &att)?;
        checkpoint("carry-over")?;
        Ok(())
    })();
    match res {
        Ok(()) => Ok(att),
        Err(e) => {
            rollback(undo);
            Err(e)
        }
    }
}

/// Makes link `index` of the host namespace take the place the migrated device
/// had: its name, MAC, MTU, queue length, bridge, up state, sysctls, addresses,
/// routes and neighbours. Used by attach (for the new pair's host end) and by
/// detach (for the device itself, home again).
fn occupy(host: &Netlink, index: u32, a: &Attachment) -> Result<(), AttachError> {
    host.set(
        "take the host device's place",
        Netlink::change(index)
            .name(a.host_dev.clone())
            .address(a.host_mac.clone())
            .mtu(a.mtu)
            .txqueuelen(a.txqlen)
            .build(),
    )?;
    if let Some(m) = &a.master {
        let mi = host.link_by_name(m)?.index;
        host.set("join bridge", Netlink::change(index).controller(mi).build())?;
    }
    if a.up {
        host.set("set up", Netlink::change(index).up().build())?;
    }
    write_sysctls(&a.host_netns, &a.host_dev, &a.sysctls)?;
    host.replay(index, &a.state)?;
    Ok(())
}

/// Name of the new pair's host end until it takes the migrated device's place.
fn temporary_name(index: u32) -> String {
    format!("gwt{:08x}", std::process::id() ^ (index << 8))
}

/// Puts the migrated device back where it was and removes the pair attach
/// made. It also finishes a detach, or undoes an attach, that stopped at any
/// point (a crash): whatever of the new pair exists goes (`tmp` is its host
/// end's temporary name, if the attach got that far), and the device comes
/// home from wherever it is. Running it twice does no harm.
pub fn detach(sec: &Netlink, a: &Attachment, tmp: Option<&str>) -> Result<(), AttachError> {
    let host_file = ns_file(&a.host_netns)?;
    let host = Netlink::open(Some(&a.host_netns))
        .map_err(|e| AttachError::NoNetns(a.host_netns.clone(), e.to_string()))?;
    let (moved, fresh) = a.sec_names();
    let away = sec.link_by_name(moved).ok();
    // The new pair goes, wherever its ends are (deleting one end deletes the
    // other). Its host end has the device's name once the attach is done; a
    // device of that name is the device itself only when it is not away.
    if let Ok(u) = sec.link_by_name(fresh) {
        sec.del_link(u.index)?;
    }
    for n in tmp.into_iter().chain([fresh]) {
        if let Ok(l) = host.link_by_name(n) {
            host.del_link(l.index)?;
        }
    }
    if away.is_some()
        && let Ok(t) = host.link_by_name(&a.host_dev)
    {
        host.del_link(t.index)?;
    }
    checkpoint("detach-pair-gone")?;
    if let Some(w) = away {
        sec.set(
            "take workload port down",
            Netlink::change(w.index).down().build(),
        )?;
        sec.set(
            "move workload port home",
            Netlink::change(w.index)
                .setns_by_fd(host_file.as_raw_fd())
                .build(),
        )?;
    }
    checkpoint("detach-home")?;
    let v = host
        .link_by_name(moved)
        .or_else(|_| host.link_by_name(&a.host_dev))?;
    occupy(&host, v.index, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_fit_ifnamsiz() {
        assert_eq!(
            port_names("pod1").unwrap(),
            ("wp-pod1".into(), "up-pod1".into())
        );
        assert!(port_names("abcdefghijkl").is_ok());
        assert!(matches!(
            port_names("abcdefghijklm"),
            Err(AttachError::BadName(_))
        ));
        assert!(matches!(port_names(""), Err(AttachError::BadName(_))));
        assert!(matches!(port_names("a/b"), Err(AttachError::BadName(_))));
    }
}
