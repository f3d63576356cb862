//! The answer to a rejected packet, sent back out of the port it came in by: a
//! TCP RST for TCP, an ICMP/ICMPv6 "administratively prohibited" otherwise.

use super::Packet;
use super::parse::{IpFacts, proto, tcp_flags};
use etherparse::{Icmpv4Type, Icmpv6Type, PacketBuilder, icmpv4, icmpv6};
use std::net::IpAddr;

/// ICMPv4 carries the offending IP header and 8 bytes; ICMPv6 as much as fits
/// in the minimum MTU. Keep both small.
const QUOTE: usize = 548;

/// The reply to `pkt` (whose frame bytes are `frame`), or `None` when none is due
/// (a RST is never answered, nor is an ICMP error).
pub fn reply(pkt: &Packet<'_>, frame: &[u8]) -> Option<Vec<u8>> {
    let super::parse::L3::Ip(ip) = &pkt.l3 else {
        return None;
    };
    let eth = PacketBuilder::ethernet2(pkt.dst_mac, pkt.src_mac);
    let mut out = Vec::with_capacity(128);
    if ip.proto == proto::TCP {
        if ip.flags & tcp_flags::RST != 0 {
            return None;
        }
        // RFC 9293: answer an ACK with seq = its ack; otherwise ack what it carried.
        let (seq, ack) = tcp_numbers(ip, frame)?;
        let b = match (ip.dst, ip.src) {
            (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
            (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
            _ => return None,
        };
        let mut t = b.tcp(ip.dst_port, ip.src_port, seq, 0).rst();
        if let Some(a) = ack {
            t = t.ack(a);
        }
        t.write(&mut out, &[]).ok()?;
        return Some(out);
    }
    let l3 = frame.get(l3_offset(frame)?..)?;
    let quote = &l3[..l3.len().min(QUOTE)];
    match (ip.dst, ip.src) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            if ip.proto == proto::ICMP && !is_icmp_query(frame) {
                return None;
            }
            eth.ipv4(s.octets(), d.octets(), 64)
                .icmpv4(Icmpv4Type::DestinationUnreachable(
                    icmpv4::DestUnreachableHeader::FilterProhibited,
                ))
                .write(&mut out, &quote[..quote.len().min(28 + 40)])
                .ok()?;
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            if ip.proto == proto::ICMPV6 {
                return None;
            }
            eth.ipv6(s.octets(), d.octets(), 64)
                .icmpv6(Icmpv6Type::DestinationUnreachable(
                    icmpv6::DestUnreachableCode::Prohibited,
                ))
                .write(&mut out, quote)
                .ok()?;
        }
        _ => return None,
    }
    Some(out)
}

/// Sequence and acknowledgement numbers of the RST answering a TCP segment.
fn tcp_numbers(ip: &IpFacts<'_>, frame: &[u8]) -> Option<(u32, Option<u32>)> {
    let l3 = frame.get(l3_offset(frame)?..)?;
    let ihl = match ip.src {
        IpAddr::V4(_) => (l3.first()? & 0x0f) as usize * 4,
        IpAddr::V6(_) => 40,
    };
    let tcp = l3.get(ihl..ihl + 20)?;
    let their_ack = u32::from_be_bytes(tcp[8..12].try_into().ok()?);
    if ip.flags & tcp_flags::ACK != 0 {
        return Some((their_ack, None));
    }
    let mut len = ip.payload.len() as u32;
    if ip.flags & tcp_flags::SYN != 0 {
        len += 1;
    }
    if ip.flags & tcp_flags::FIN != 0 {
        len += 1;
    }
    Some((0, Some(ip.seq.wrapping_add(len))))
}

/// Where the IP header starts, after the Ethernet header and any VLAN tags.
fn l3_offset(frame: &[u8]) -> Option<usize> {
    let mut off = 12;
    loop {
        let ty = u16::from_be_bytes(frame.get(off..off + 2)?.try_into().ok()?);
        match ty {
            0x8100 | 0x88a8 | 0x9100 => off += 4,
            _ => return Some(off + 2),
        }
    }
}

/// ICMPv4 errors are never answered; queries (echo and the like) are.
fn is_icmp_query(frame: &[u8]) -> bool {
    let Some(l3) = l3_offset(frame).and_then(|o| frame.get(o..)) else {
        return false;
    };
    let ihl = (l3.first().copied().unwrap_or(0) & 0x0f) as usize * 4;
    matches!(l3.get(ihl), Some(0 | 8 | 13 | 14 | 17 | 18))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::parse::{L3, parse};
    use crate::port::VnetHdr;

    #[test]
    fn syn_gets_rst_ack() {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 22, 1000, 64000)
            .syn()
            .write(&mut f, &[])
            .unwrap();
        let p = parse(&f, &VnetHdr::default()).unwrap();
        let r = reply(&p, &f).unwrap();
        let q = parse(&r, &VnetHdr::default()).unwrap();
        assert_eq!(q.dst_mac, [2, 0, 0, 0, 0, 1]);
        let L3::Ip(ip) = q.l3 else { panic!() };
        assert_eq!((ip.src_port, ip.dst_port), (22, 40000));
        assert_eq!(
            ip.flags & (tcp_flags::RST | tcp_flags::ACK),
            tcp_flags::RST | tcp_flags::ACK
        );
        assert_eq!(&r[42..46], &1001u32.to_be_bytes());
    }

    #[test]
    fn udp_gets_icmp_and_rst_gets_nothing() {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv6([0xfd; 16], [0xfe; 16], 64)
            .udp(5000, 53)
            .write(&mut f, b"query")
            .unwrap();
        let p = parse(&f, &VnetHdr::default()).unwrap();
        let r = reply(&p, &f).unwrap();
        let q = parse(&r, &VnetHdr::default()).unwrap();
        let L3::Ip(ip) = q.l3 else { panic!() };
        assert_eq!(ip.proto, proto::ICMPV6);

        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1, 2, 3, 4)
            .rst()
            .write(&mut f, &[])
            .unwrap();
        let p = parse(&f, &VnetHdr::default()).unwrap();
        assert!(reply(&p, &f).is_none());
    }
}
