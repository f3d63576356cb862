//! rtnetlink in a chosen network namespace, with the few operations attach and
//! detach need. A netlink socket stays in the namespace it was created in, so a
//! connection is opened from a thread that entered the namespace and is then
//! driven from the caller's thread on a small single-threaded runtime.

use super::netns;
use futures::TryStreamExt;
use rtnetlink::packet_core::{Emitable, Parseable};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::AddressMessage;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::neighbour::{NeighbourMessage, NeighbourState};
use rtnetlink::packet_route::route::{RouteAttribute, RouteMessage, RouteType};
use rtnetlink::{LinkUnspec, LinkVeth};
use std::io;

/// A failed netlink operation, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {msg}")]
pub struct NlError {
    /// What was being done.
    pub what: String,
    /// What the kernel said.
    pub msg: String,
    /// The errno, when the kernel gave one.
    pub errno: Option<i32>,
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NlError {
    let what = what.into();
    move |e| {
        let errno = match &e {
            rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
            _ => None,
        };
        NlError {
            what,
            msg: match errno {
                Some(n) => io::Error::from_raw_os_error(n).to_string(),
                None => e.to_string(),
            },
            errno,
        }
    }
}

/// What attach needs to know of a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkFacts {
    /// Interface index in its namespace.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// MAC address.
    pub mac: Vec<u8>,
    /// MTU.
    pub mtu: u32,
    /// Transmit queue length (the kernel may change it when qdiscs come and go).
    pub txqlen: u32,
    /// Index of the bridge (or other controller) it is a port of.
    pub master: Option<u32>,
    /// For a veth: index of its peer (in the peer's namespace).
    pub peer: Option<u32>,
    /// Link kind ("veth", "tun", "macvlan", "bridge"...), empty for none.
    pub kind: String,
    /// Administratively up.
    pub up: bool,
}

impl LinkFacts {
    fn from_msg(m: &LinkMessage) -> LinkFacts {
        let mut f = LinkFacts {
            index: m.header.index,
            name: String::new(),
            mac: Vec::new(),
            mtu: 0,
            txqlen: 0,
            master: None,
            peer: None,
            kind: String::new(),
            up: m.header.flags.contains(LinkFlags::Up),
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => f.name = n.clone(),
                LinkAttribute::Address(a) => f.mac = a.clone(),
                LinkAttribute::Mtu(v) => f.mtu = *v,
                LinkAttribute::TxQueueLen(v) => f.txqlen = *v,
                LinkAttribute::Controller(c) => f.master = Some(*c),
                LinkAttribute::Link(l) => f.peer = Some(*l),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let LinkInfo::Kind(k) = i {
                            f.kind = match k {
                                InfoKind::Veth => "veth".into(),
                                InfoKind::Tun => "tun".into(),
                                InfoKind::Bridge => "bridge".into(),
                                InfoKind::MacVlan => "macvlan".into(),
                                InfoKind::IpVlan => "ipvlan".into(),
                                other => format!("{other:?}").to_lowercase(),
                            };
                        }
                    }
                }
                _ => {}
            }
        }
        f
    }
}

/// A netlink connection bound to one network namespace.
pub struct Netlink {
    rt: tokio::runtime::Runtime,
    h: rtnetlink::Handle,
}

impl Netlink {
    /// A connection in namespace `ns` (a name under /var/run/netns or a path), or
    /// in the caller's namespace when `ns` is `None`.
    pub fn open(ns: Option<&str>) -> io::Result<Netlink> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        let make = |rt: tokio::runtime::Runtime| -> io::Result<(tokio::runtime::Runtime, rtnetlink::Handle)> {
            let h = {
                let _g = rt.enter();
                let (conn, h, _) = rtnetlink::new_connection()?;
                rt.spawn(conn);
                h
            };
            Ok((rt, h))
        };
        let (rt, h) = match ns {
            None => make(rt)?,
            Some(ns) => netns::run_in(ns, move || make(rt))?,
        };
        Ok(Netlink { rt, h })
    }

    /// The underlying rtnetlink handle.
    pub fn handle(&self) -> rtnetlink::Handle {
        self.h.clone()
    }

    /// Runs a netlink future to completion.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The link called `name`.
    pub fn link_by_name(&self, name: &str) -> Result<LinkFacts, NlError> {
        let req = self.h.link().get().match_name(name.to_string());
        self.one_link(req, format!("find {name}"))
    }

    /// The link with index `index`.
    pub fn link_by_index(&self, index: u32) -> Result<LinkFacts, NlError> {
        let req = self.h.link().get().match_index(index);
        self.one_link(req, format!("find ifindex {index}"))
    }

    /// The one link a get request matches; ENODEV when none does.
    fn one_link(&self, req: rtnetlink::LinkGetRequest, what: String) -> Result<LinkFacts, NlError> {
        self.rt.block_on(async {
            match req.execute().try_next().await {
                Ok(Some(m)) => Ok(LinkFacts::from_msg(&m)),
                Ok(None) => Err(NlError {
                    what,
                    msg: "no such device".into(),
                    errno: Some(libc::ENODEV),
                }),
                Err(e) => Err(nl(what)(e)),
            }
        })
    }

    /// Applies a link change built with `LinkUnspec::new_with_index(i)...`.
    pub fn set(&self, what: &str, msg: LinkMessage) -> Result<(), NlError> {
        self.rt
            .block_on(self.h.link().set(msg).execute())
            .map_err(nl(what))
    }

    /// A link change builder for `index`.
    pub fn change(index: u32) -> rtnetlink::LinkMessageBuilder<LinkUnspec> {
        LinkUnspec::new_with_index(index)
    }

    /// Creates a veth pair `name` <-> `peer` in this namespace.
    pub fn add_veth(&self, name: &str, peer: &str) -> Result<(), NlError> {
        let msg = LinkVeth::new(name, peer).build();
        self.rt
            .block_on(self.h.link().add(msg).execute())
            .map_err(nl(format!("create veth {name} <-> {peer}")))
    }

    /// Deletes link `index` (a veth takes its peer with it).
    pub fn del_link(&self, index: u32) -> Result<(), NlError> {
        self.rt
            .block_on(self.h.link().del(index).execute())
            .map_err(nl(format!("delete ifindex {index}")))
    }

    /// Addresses on link `index`.
    pub fn addresses(&self, index: u32) -> Result<Vec<AddressMessage>, NlError> {
        self.rt.block_on(async {
            self.h
                .address()
                .get()
                .set_link_index_filter(index)
                .execute()
                .try_collect::<Vec<_>>()
                .await
                .map_err(nl("list addresses"))
        })
    }

    /// The IP addresses on link `index`.
    pub fn ips(&self, index: u32) -> Result<Vec<std::net::IpAddr>, NlError> {
        use rtnetlink::packet_route::address::AddressAttribute;
        Ok(self
            .addresses(index)?
            .iter()
            .flat_map(|m| m.attributes.iter())
            .filter_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })
            .collect())
    }

    /// Routes whose output interface is `index`, in every table, IPv4 and IPv6,
    /// except those the kernel makes by itself for addresses and local delivery.
    pub fn routes(&self, index: u32) -> Result<Vec<RouteMessage>, NlError> {
        let mut out = Vec::new();
        for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut q = RouteMessage::default();
            q.header.address_family = fam;
            let all: Vec<RouteMessage> = self
                .rt
                .block_on(self.h.route().get(q).execute().try_collect())
                .map_err(nl("list routes"))?;
            out.extend(all.into_iter().filter(|r| {
                r.attributes
                    .iter()
                    .any(|a| matches!(a, RouteAttribute::Oif(i) if *i == index))
                    && r.header.kind != RouteType::Local
                    && r.header.kind != RouteType::Broadcast
                    && u8::from(r.header.protocol) != 2 // RTPROT_KERNEL: comes back with the address
            }));
        }
        Ok(out)
    }

    /// Permanent neighbour entries on link `index` (learned ones are relearned).
    pub fn neighbours(&self, index: u32) -> Result<Vec<NeighbourMessage>, NlError> {
        let all: Vec<NeighbourMessage> = self
            .rt
            .block_on(self.h.neighbours().get().execute().try_collect())
            .map_err(nl("list neighbours"))?;
        Ok(all
            .into_iter()
            .filter(|n| n.header.ifindex == index && n.header.state == NeighbourState::Permanent)
            .collect())
    }

    /// Re-adds addresses, routes and neighbours taken from another link, now on
    /// link `index`. An entry that already exists is fine.
    pub fn replay(&self, index: u32, snap: &LinkState) -> Result<(), NlError> {
        let exists = |e: &NlError| e.errno == Some(libc::EEXIST);
        for a in snap.addresses()? {
            let mut a = a;
            a.header.index = index;
            let mut req = self
                .h
                .address()
                .add(index, std::net::IpAddr::from([0, 0, 0, 0]), 0);
            *req.message_mut() = a;
            match self.rt.block_on(req.execute()).map_err(nl("add address")) {
                Err(e) if !exists(&e) => return Err(e),
                _ => {}
            }
        }
        for r in snap.routes()? {
            let mut r = r;
            for a in &mut r.attributes {
                if let RouteAttribute::Oif(i) = a {
                    *i = index;
                }
            }
            match self
                .rt
                .block_on(self.h.route().add(r).execute())
                .map_err(nl("add route"))
            {
                Err(e) if !exists(&e) => return Err(e),
                _ => {}
            }
        }
        for n in snap.neighbours()? {
            let mut n = n;
            n.header.ifindex = index;
            let mut req = self
                .h
                .neighbours()
                .add(index, std::net::IpAddr::from([0, 0, 0, 0]));
            *req.message_mut() = n;
            match self.rt.block_on(req.execute()).map_err(nl("add neighbour")) {
                Err(e) if !exists(&e) => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

/// What hangs on a link besides its own settings: addresses, routes, permanent
/// neighbours, kept as the kernel's own netlink encoding so a restore is exact
/// and the snapshot can be written to disk.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinkState {
    /// Encoded RTM_NEWADDR messages.
    pub addresses: Vec<Vec<u8>>,
    /// Encoded RTM_NEWROUTE messages.
    pub routes: Vec<Vec<u8>>,
    /// Encoded RTM_NEWNEIGH messages.
    pub neighbours: Vec<Vec<u8>>,
}

fn emit<T: Emitable>(m: &T) -> Vec<u8> {
    let mut b = vec![0u8; m.buffer_len()];
    m.emit(&mut b);
    b
}

fn bad(what: &str) -> impl Fn(rtnetlink::packet_core::DecodeError) -> NlError + '_ {
    move |e| NlError {
        what: format!("decode saved {what}"),
        msg: e.to_string(),
        errno: None,
    }
}

impl LinkState {
    /// Takes what hangs on link `index` of `nl`'s namespace.
    pub fn take(nl: &Netlink, index: u32) -> Result<LinkState, NlError> {
        Ok(LinkState {
            addresses: nl.addresses(index)?.iter().map(emit).collect(),
            routes: nl.routes(index)?.iter().map(emit).collect(),
            neighbours: nl.neighbours(index)?.iter().map(emit).collect(),
        })
    }

    fn addresses(&self) -> Result<Vec<AddressMessage>, NlError> {
        self.addresses
            .iter()
            .map(|b| AddressMessage::parse(b.as_slice()).map_err(bad("address")))
            .collect()
    }

    fn routes(&self) -> Result<Vec<RouteMessage>, NlError> {
        self.routes
            .iter()
            .map(|b| RouteMessage::parse(b.as_slice()).map_err(bad("route")))
            .collect()
    }

    fn neighbours(&self) -> Result<Vec<NeighbourMessage>, NlError> {
        self.neighbours
            .iter()
            .map(|b| NeighbourMessage::parse(b.as_slice()).map_err(bad("neighbour")))
            .collect()
    }
}
