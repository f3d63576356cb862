//! Anti-spoofing: a workload port only accepts frames from the workload's own
//! MAC(s) and IP(s). Addresses are learned at attach (the pod's `eth0`) or
//! configured; a workload with no known MAC falls back to the per-port MAC limit,
//! and one with no known IP of a family has no IP check for that family's
//! *unspecified* and link-local sources only (see [`Identity::check`]).

use super::parse::{IpFacts, L3, Packet};
use crate::vocab::{DropReason, Mac};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv6Addr};

/// The addresses a workload may send from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Its MACs; empty: any (the MAC limit still applies).
    #[serde(default)]
    pub macs: Vec<Mac>,
    /// Its IPs; empty: any.
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    /// It may act as a router or DHCP server for the others: send router
    /// advertisements, redirects and DHCP/DHCPv6 server answers.
    #[serde(default)]
    pub router: bool,
}

impl Identity {
    /// Adds `other`'s addresses to these (each once).
    pub fn add(&mut self, other: Identity) {
        for m in other.macs {
            if !self.macs.contains(&m) {
                self.macs.push(m);
            }
        }
        for ip in other.ips {
            if !self.ips.contains(&ip) {
                self.ips.push(ip);
            }
        }
        self.router |= other.router;
    }

    /// True when anything is known (and so anything is checked).
    pub fn is_known(&self) -> bool {
        !self.macs.is_empty() || !self.ips.is_empty()
    }

    fn mac_ok(&self, m: &Mac) -> bool {
        self.macs.is_empty() || self.macs.contains(m)
    }

    /// May the workload use `ip` as a source address? The unspecified address
    /// (DHCP, duplicate address detection) always; an IPv6 link-local address
    /// when it is the EUI-64 address of one of its MACs (the kernel's default).
    fn ip_ok(&self, ip: &IpAddr) -> bool {
        if self.ips.is_empty() || ip.is_unspecified() || self.ips.contains(ip) {
            return true;
        }
        match ip {
            IpAddr::V6(v6) => self.macs.iter().any(|m| eui64(m) == *v6),
            IpAddr::V4(_) => false,
        }
    }

    /// Checks a frame that came from the workload. `Err` names the reason.
    pub fn check(&self, p: &Packet<'_>) -> Result<(), DropReason> {
        if !self.mac_ok(&p.src_mac) {
            return Err(DropReason::SpoofMac);
        }
        match &p.l3 {
            L3::Arp {
                sender_mac,
                sender_ip,
            } => {
                if !self.mac_ok(sender_mac) || !self.ip_ok(&IpAddr::V4(*sender_ip)) {
                    return Err(DropReason::SpoofArp);
                }
            }
            L3::Ip(ip) => {
                if !self.ip_ok(&ip.src) {
                    return Err(DropReason::SpoofIp);
                }
                if !self.router
                    && let Some(r) = infrastructure(ip)
                {
                    return Err(r);
                }
                if let Some(nd) = &ip.nd {
                    let lladdr_ok = nd.lladdr.is_none_or(|m| self.mac_ok(&m));
                    // A solicitation's target is the address asked about, not claimed.
                    let target_ok = !nd.advert || self.ip_ok(&IpAddr::V6(nd.target));
                    if !lladdr_ok || !target_ok {
                        return Err(DropReason::SpoofNd);
                    }
                }
            }
            L3::Other => {}
        }
        Ok(())
    }
}

/// Messages only a network's routers and DHCP servers send: from any other
/// workload they would hand its neighbours a default route or an address.
fn infrastructure(ip: &IpFacts<'_>) -> Option<DropReason> {
    const ICMP: u8 = 1;
    const UDP: u8 = 17;
    const ICMPV6: u8 = 58;
    match (ip.proto, ip.icmp_type, ip.src_port, ip.dst_port) {
        (ICMPV6, Some(134), ..) => Some(DropReason::RogueRa),
        (ICMPV6, Some(137), ..) | (ICMP, Some(5), ..) => Some(DropReason::RogueRedirect),
        (UDP, _, 67, 68) | (UDP, _, 547, 546) => Some(DropReason::RogueDhcp),
        _ => None,
    }
}

/// The link-local address the kernel derives from a MAC (EUI-64).
pub fn eui64(m: &Mac) -> Ipv6Addr {
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 0x02,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::parse::parse;
    use crate::port::VnetHdr;
    use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, EtherType, PacketBuilder};

    const MAC: Mac = [2, 0, 0, 0, 0, 1];

    fn me() -> Identity {
        Identity {
            macs: vec![MAC],
            ips: vec!["10.0.0.2".parse().unwrap()],
            router: false,
        }
    }

    fn udp(src_mac: Mac, src: [u8; 4]) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(src_mac, [2, 0, 0, 0, 0, 9])
            .ipv4(src, [10, 0, 0, 1], 64)
            .udp(1, 2)
            .write(&mut v, b"x")
            .unwrap();
        v
    }

    fn arp(src_mac: Mac, sender_ip: [u8; 4]) -> Vec<u8> {
        let mut v = Vec::new();
        let a = ArpPacket::new(
            ArpHardwareId::ETHERNET,
            EtherType::IPV4,
            ArpOperation::REPLY,
            &src_mac,
            &sender_ip,
            &[2, 0, 0, 0, 0, 9],
            &[10, 0, 0, 1],
        )
        .unwrap();
        PacketBuilder::ethernet2(src_mac, [2, 0, 0, 0, 0, 9])
            .arp(a)
            .write(&mut v)
            .unwrap();
        v
    }

    fn na(src_mac: Mac, target: Ipv6Addr) -> Vec<u8> {
        let mut msg = vec![0u8; 24];
        msg[8..24].copy_from_slice(&target.octets());
        msg.extend_from_slice(&[2, 1]);
        msg.extend_from_slice(&src_mac);
        let mut v = Vec::new();
        PacketBuilder::ethernet2(src_mac, [0x33, 0x33, 0, 0, 0, 1])
            .ipv6(
                eui64(&src_mac).octets(),
                [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                255,
            )
            .icmpv6(etherparse::Icmpv6Type::NeighborAdvertisement(
                etherparse::icmpv6::NeighborAdvertisementHeader {
                    router: false,
                    solicited: false,
                    r#override: true,
                },
            ))
            .write(&mut v, &msg[8..])
            .unwrap();
        v
    }

    fn judge(id: &Identity, f: &[u8]) -> Result<(), DropReason> {
        id.check(&parse(f, &VnetHdr::default()).unwrap())
    }

    #[test]
    fn own_addresses_pass() {
        assert_eq!(judge(&me(), &udp(MAC, [10, 0, 0, 2])), Ok(()));
        assert_eq!(judge(&me(), &udp(MAC, [0, 0, 0, 0])), Ok(()));
        assert_eq!(judge(&me(), &arp(MAC, [10, 0, 0, 2])), Ok(()));
    }

    #[test]
    fn foreign_addresses_are_dropped_by_reason() {
        assert_eq!(
            judge(&me(), &udp([2, 0, 0, 0, 0, 7], [10, 0, 0, 2])),
            Err(DropReason::SpoofMac)
        );
        assert_eq!(
            judge(&me(), &udp(MAC, [10, 0, 0, 3])),
            Err(DropReason::SpoofIp)
        );
        assert_eq!(
            judge(&me(), &arp(MAC, [10, 0, 0, 1])),
            Err(DropReason::SpoofArp)
        );
        let other: Ipv6Addr = "fd00::5".parse().unwrap();
        assert_eq!(judge(&me(), &na(MAC, other)), Err(DropReason::SpoofNd));
        assert_eq!(judge(&me(), &na(MAC, eui64(&MAC))), Ok(()));
    }

    #[test]
    fn unknown_identity_checks_nothing() {
        let id = Identity::default();
        assert_eq!(judge(&id, &udp([2, 0, 0, 0, 0, 7], [10, 9, 9, 9])), Ok(()));
    }

    fn icmpv6(ty: u8) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(MAC, [0x33, 0x33, 0, 0, 0, 1])
            .ipv6(
                eui64(&MAC).octets(),
                [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                255,
            )
            .icmpv6(etherparse::Icmpv6Type::Unknown {
                type_u8: ty,
                code_u8: 0,
                bytes5to8: [0; 4],
            })
            .write(&mut v, &[0u8; 16])
            .unwrap();
        v
    }

    fn dhcp(src_port: u16, dst_port: u16) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(MAC, [0xff; 6])
            .ipv4([10, 0, 0, 2], [255, 255, 255, 255], 64)
            .udp(src_port, dst_port)
            .write(&mut v, &[0u8; 240])
            .unwrap();
        v
    }

    fn icmp_redirect() -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(MAC, [2, 0, 0, 0, 0, 9])
            .ipv4([10, 0, 0, 2], [10, 0, 0, 3], 64)
            .icmpv4(etherparse::Icmpv4Type::Unknown {
                type_u8: 5,
                code_u8: 1,
                bytes5to8: [10, 0, 0, 2],
            })
            .write(&mut v, &[0u8; 28])
            .unwrap();
        v
    }

    #[test]
    fn router_and_dhcp_server_messages_need_the_router_role() {
        let me = me();
        assert_eq!(judge(&me, &icmpv6(134)), Err(DropReason::RogueRa));
        assert_eq!(judge(&me, &icmpv6(137)), Err(DropReason::RogueRedirect));
        assert_eq!(judge(&me, &icmp_redirect()), Err(DropReason::RogueRedirect));
        assert_eq!(judge(&me, &dhcp(67, 68)), Err(DropReason::RogueDhcp));
        // A DHCPv6 server's port pair (over IPv4 here; the check looks at UDP ports).
        let v6 = dhcp(547, 546);
        assert_eq!(judge(&me, &v6), Err(DropReason::RogueDhcp));
        // A client's own messages pass: router solicitation, DHCP request.
        assert_eq!(judge(&me, &icmpv6(133)), Ok(()));
        assert_eq!(judge(&me, &dhcp(68, 67)), Ok(()));
        let router = Identity {
            router: true,
            ..me.clone()
        };
        assert_eq!(judge(&router, &icmpv6(134)), Ok(()));
        assert_eq!(judge(&router, &v6), Ok(()));
    }
}
