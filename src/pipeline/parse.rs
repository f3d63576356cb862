//! Parse once: the facts about a frame every later stage (anti-spoofing, flow
//! table, firewall, application identification) needs, as a view into the frame.

use super::{ETH_HLEN, Malformed};
use crate::port::VnetHdr;
use crate::vocab::Mac;
use etherparse::err::{Layer, packet::SliceError};
use etherparse::{Ipv6ExtensionSlice, NetSlice, SlicedPacket, TransportSlice};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol numbers guardwire names.
pub mod proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;

    /// Name used in logs: "tcp", "udp", "icmp", "icmpv6", or the number.
    pub fn name(p: u8) -> String {
        match p {
            ICMP => "icmp".into(),
            TCP => "tcp".into(),
            UDP => "udp".into(),
            ICMPV6 => "icmpv6".into(),
            n => n.to_string(),
        }
    }
}

/// TCP flag bits as on the wire (byte 13 of the header).
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// Where a packet sits in a fragmented datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fragment {
    /// Not fragmented.
    No,
    /// The first fragment: it carries the transport header.
    First,
    /// A later fragment: no transport header, so no ports.
    Later,
}

impl Fragment {
    /// From a fragment offset and the more-fragments flag.
    fn of(offset: u16, more: bool) -> Fragment {
        match (offset, more) {
            (0, false) => Fragment::No,
            (0, true) => Fragment::First,
            _ => Fragment::Later,
        }
    }
}

/// An IPv6 neighbour discovery message, as far as anti-spoofing cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nd {
    /// True for an advertisement (type 136), false for a solicitation (135).
    pub advert: bool,
    /// The address the message is about.
    pub target: Ipv6Addr,
    /// The link-layer address option (source for NS, target for NA), if any.
    pub lladdr: Option<Mac>,
}

/// The IP part of a frame.
#[derive(Clone, Copy, Debug)]
pub struct IpFacts<'a> {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number of the payload.
    pub proto: u8,
    /// TCP/UDP source port; the echo identifier for ICMP echo; else 0.
    pub src_port: u16,
    /// TCP/UDP destination port; the echo identifier for ICMP echo; else 0.
    pub dst_port: u16,
    /// TCP flags (see [`tcp_flags`]); 0 for other protocols.
    pub flags: u8,
    /// TCP sequence number.
    pub seq: u32,
    /// Transport payload (empty when there is no transport header).
    pub payload: &'a [u8],
    /// Fragmentation.
    pub fragment: Fragment,
    /// Neighbour discovery, for ICMPv6 NS/NA.
    pub nd: Option<Nd>,
    /// The ICMP or ICMPv6 message type.
    pub icmp_type: Option<u8>,
}

/// The L3 content of a frame.
#[derive(Clone, Copy, Debug)]
pub enum L3<'a> {
    /// IPv4 or IPv6.
    Ip(IpFacts<'a>),
    /// ARP for IPv4 over Ethernet.
    Arp {
        /// Sender hardware address.
        sender_mac: Mac,
        /// Sender protocol address.
        sender_ip: Ipv4Addr,
    },
    /// Anything else (other ethertypes, ARP for other protocols).
    Other,
}

/// What the pipeline knows about a frame after parsing it.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    /// Destination MAC.
    pub dst_mac: Mac,
    /// Source MAC.
    pub src_mac: Mac,
    /// L3 facts.
    pub l3: L3<'a>,
}

/// Parses `data` (an Ethernet frame) into its facts, or says what is wrong with
/// it. A frame with a GSO header must be TCP or UDP of the matching IP version.
pub fn parse<'a>(data: &'a [u8], vnet: &VnetHdr) -> Result<Packet<'a>, Malformed> {
    if data.len() < ETH_HLEN {
        return Err(Malformed::Runt);
    }
    let p = SlicedPacket::from_ethernet(data).map_err(|e| classify(&e))?;
    if vnet.is_gso() {
        use crate::port::vnet::*;
        let ok = matches!(
            (&p.net, &p.transport, vnet.gso_kind()),
            (
                Some(NetSlice::Ipv4(_)),
                Some(TransportSlice::Tcp(_)),
                GSO_TCPV4
            ) | (
                Some(NetSlice::Ipv6(_)),
                Some(TransportSlice::Tcp(_)),
                GSO_TCPV6
            ) | (Some(_), Some(TransportSlice::Udp(_)), GSO_UDP | GSO_UDP_L4)
        );
        if !ok || vnet.gso_size == 0 {
            return Err(Malformed::Gso);
        }
    }
    let mac = |r: std::ops::Range<usize>| -> Mac { data[r].try_into().expect("length checked") };
    let l3 = match &p.net {
        None => L3::Other,
        Some(NetSlice::Arp(a)) => {
            match (
                <[u8; 6]>::try_from(a.sender_hw_addr()),
                <[u8; 4]>::try_from(a.sender_protocol_addr()),
            ) {
                (Ok(m), Ok(ip)) => L3::Arp {
                    sender_mac: m,
                    sender_ip: Ipv4Addr::from(ip),
                },
                _ => L3::Other,
            }
        }
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            let fragment = Fragment::of(h.fragments_offset().value(), h.more_fragments());
            let addrs = (h.source_addr().into(), h.destination_addr().into());
            L3::Ip(ip_facts(addrs, ip.payload(), fragment, &p.transport))
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            let mut fragment = Fragment::No;
            for ext in ip.extensions().clone() {
                if let Ipv6ExtensionSlice::Fragment(fr) = ext {
                    fragment = Fragment::of(fr.fragment_offset().value(), fr.more_fragments());
                }
            }
            let addrs = (h.source_addr().into(), h.destination_addr().into());
            L3::Ip(ip_facts(addrs, ip.payload(), fragment, &p.transport))
        }
    };
    Ok(Packet {
        dst_mac: mac(0..6),
        src_mac: mac(6..12),
        l3,
    })
}

fn ip_facts<'a>(
    (src, dst): (IpAddr, IpAddr),
    ip_payload: &etherparse::IpPayloadSlice<'a>,
    fragment: Fragment,
    t: &Option<TransportSlice<'a>>,
) -> IpFacts<'a> {
    let payload = ip_payload.payload;
    let mut f = IpFacts {
        src,
        dst,
        proto: ip_payload.ip_number.0,
        src_port: 0,
        dst_port: 0,
        flags: 0,
        seq: 0,
        // Without a parsed transport header (later fragments, other protocols)
        // there is no payload an application could be named from.
        payload: if fragment == Fragment::No {
            payload
        } else {
            &[]
        },
        fragment,
        nd: None,
        icmp_type: None,
    };
    transport(&mut f, t);
    f
}

fn transport<'a>(f: &mut IpFacts<'a>, t: &Option<TransportSlice<'a>>) {
    match t {
        Some(TransportSlice::Tcp(t)) => {
            f.src_port = t.source_port();
            f.dst_port = t.destination_port();
            f.flags = t.slice()[13];
            f.seq = t.sequence_number();
            f.payload = t.payload();
        }
        Some(TransportSlice::Udp(u)) => {
            f.src_port = u.source_port();
            f.dst_port = u.destination_port();
            f.payload = u.payload();
        }
        Some(TransportSlice::Icmpv4(i)) => {
            f.icmp_type = Some(i.type_u8());
            // Echo request (8) and reply (0): the identifier pairs them as one flow.
            if matches!(i.type_u8(), 0 | 8) {
                let id = u16::from_be_bytes([i.bytes5to8()[0], i.bytes5to8()[1]]);
                f.src_port = id;
                f.dst_port = id;
            }
            f.payload = &[];
        }
        Some(TransportSlice::Icmpv6(i)) => {
            let ty = i.type_u8();
            f.icmp_type = Some(ty);
            if matches!(ty, 128 | 129) {
                let id = u16::from_be_bytes([i.bytes5to8()[0], i.bytes5to8()[1]]);
                f.src_port = id;
                f.dst_port = id;
            }
            if matches!(ty, 135 | 136) {
                f.nd = nd(ty == 136, i.slice());
            }
            f.payload = &[];
        }
        Some(TransportSlice::Igmp(_)) => f.payload = &[],
        None => {
            if f.fragment != Fragment::Later {
                f.payload = &[];
            }
        }
    }
}

/// NS/NA: 8 bytes of ICMPv6 header, the 16-byte target, then options.
fn nd(advert: bool, msg: &[u8]) -> Option<Nd> {
    let target: [u8; 16] = msg.get(8..24)?.try_into().ok()?;
    let want = if advert { 2 } else { 1 };
    let mut opts = &msg[24..];
    let mut lladdr = None;
    while opts.len() >= 8 {
        let len = opts[1] as usize * 8;
        if len == 0 || len > opts.len() {
            break;
        }
        if opts[0] == want && len >= 8 {
            lladdr = opts[2..8].try_into().ok();
        }
        opts = &opts[len..];
    }
    Some(Nd {
        advert,
        target: Ipv6Addr::from(target),
        lladdr,
    })
}

fn classify(e: &SliceError) -> Malformed {
    match e {
        SliceError::Len(l) => match l.layer {
            Layer::Ethernet2Header | Layer::EtherPayload | Layer::LinuxSllHeader => Malformed::Link,
            Layer::VlanHeader | Layer::MacsecHeader | Layer::MacsecPacket => Malformed::Vlan,
            Layer::IpHeader | Layer::Ipv4Header => Malformed::Ipv4Header,
            Layer::Ipv4Packet => Malformed::Ipv4Length,
            Layer::Ipv6Header => Malformed::Ipv6Header,
            Layer::Ipv6Packet => Malformed::Ipv6Length,
            Layer::IpAuthHeader
            | Layer::Ipv6ExtHeader
            | Layer::Ipv6HopByHopHeader
            | Layer::Ipv6DestOptionsHeader
            | Layer::Ipv6RouteHeader
            | Layer::Ipv6FragHeader => Malformed::IpExt,
            Layer::TcpHeader => Malformed::Tcp,
            Layer::UdpHeader | Layer::UdpPayload => Malformed::Udp,
            Layer::Icmpv4
            | Layer::Icmpv4Timestamp
            | Layer::Icmpv4TimestampReply
            | Layer::Icmpv6
            | Layer::Igmp => Malformed::Icmp,
            Layer::Arp => Malformed::Arp,
        },
        SliceError::LinuxSll(_) => Malformed::Link,
        SliceError::Macsec(_) => Malformed::Vlan,
        SliceError::Ip(_) | SliceError::Ipv4(_) => Malformed::Ipv4Header,
        SliceError::Ipv6(_) => Malformed::Ipv6Header,
        SliceError::Ipv4Exts(_) | SliceError::Ipv6Exts(_) => Malformed::IpExt,
        SliceError::Tcp(_) => Malformed::Tcp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{IpHeaders, Ipv4Header, PacketBuilder};

    fn ipv4_fragment(offset_units: u16, more: bool) -> Vec<u8> {
        let mut h = Ipv4Header::new(
            16,
            64,
            etherparse::IpNumber::UDP,
            [10, 0, 0, 1],
            [10, 0, 0, 2],
        )
        .unwrap();
        h.fragment_offset = etherparse::IpFragOffset::try_new(offset_units).unwrap();
        h.more_fragments = more;
        let mut v = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ip(IpHeaders::Ipv4(h, Default::default()))
            .udp(1000, 2000)
            .write(&mut v, &[1, 2, 3, 4, 5, 6, 7, 8])
            .unwrap();
        v
    }

    fn ip(p: Packet<'_>) -> IpFacts<'_> {
        match p.l3 {
            L3::Ip(ip) => ip,
            other => panic!("not IP: {other:?}"),
        }
    }

    #[test]
    fn fragments_first_and_later() {
        let first = ipv4_fragment(0, true);
        let f = ip(parse(&first, &VnetHdr::default()).unwrap());
        assert_eq!(f.fragment, Fragment::First);
        let later = ipv4_fragment(100, false);
        let f = ip(parse(&later, &VnetHdr::default()).unwrap());
        assert_eq!(f.fragment, Fragment::Later);
        assert_eq!(
            (f.src_port, f.dst_port),
            (0, 0),
            "a later fragment has no ports"
        );
        assert!(f.payload.is_empty());
    }

    #[test]
    fn qinq_is_parsed_through_both_tags() {
        let mut v = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .double_vlan(
                etherparse::VlanId::try_new(10).unwrap(),
                etherparse::VlanId::try_new(20).unwrap(),
            )
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1, 443, 0, 100)
            .write(&mut v, b"x")
            .unwrap();
        let f = ip(parse(&v, &VnetHdr::default()).unwrap());
        assert_eq!((f.proto, f.dst_port), (proto::TCP, 443));
        // Cut inside the inner tag.
        assert_eq!(
            parse(&v[..20], &VnetHdr::default()).unwrap_err(),
            Malformed::Vlan
        );
    }

    #[test]
    fn ipv6_extension_chain_cut_short() {
        let mut v = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv6([0xfd; 16], [0xfe; 16], 64)
            .udp(1, 2)
            .write(&mut v, b"abc")
            .unwrap();
        // Make the next header a hop-by-hop option that claims more than is there.
        v[14 + 6] = 0; // next header: hop-by-hop
        v[14 + 40 + 1] = 200; // its length: 201 * 8 bytes
        assert_eq!(
            parse(&v, &VnetHdr::default()).unwrap_err(),
            Malformed::IpExt
        );
    }
}
