//! Where a frame is judged. The pipeline takes frames and returns verdicts; it
//! never touches a socket, so it is tested and fuzzed alone.
//!
//! Stages: parse (etherparse, no allocation) and validate. Flow table, firewall,
//! application identification and shaping hang off the parsed view.

mod verdict;

pub use verdict::{DropReason, Malformed, MalformedPolicy, Verdict};

use crate::port::{Frame, VnetHdr};
use etherparse::err::{Layer, packet::SliceError};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};

/// Ethernet header length: anything shorter cannot be switched.
pub const ETH_HLEN: usize = 14;

/// Judges frames.
#[derive(Clone, Debug)]
pub struct Pipeline {
    malformed: MalformedPolicy,
}

impl Pipeline {
    /// A pipeline applying `malformed` to frames that do not parse.
    pub fn new(malformed: MalformedPolicy) -> Self {
        Pipeline { malformed }
    }

    /// Judges one frame. `Verdict::Forward` hands it to the switch.
    pub fn judge(&self, frame: &Frame<'_>) -> Verdict {
        match check(frame.data(), &frame.vnet) {
            Ok(()) => Verdict::Forward,
            Err(m) => match (m, self.malformed) {
                (Malformed::Runt, _) => Verdict::Drop(DropReason::Runt),
                (m, MalformedPolicy::Drop) => Verdict::MalformedDrop(m),
                (m, MalformedPolicy::Pass) => Verdict::MalformedPass(m),
            },
        }
    }
}

/// Parses `data` (an Ethernet frame) and says what, if anything, is wrong with it.
/// A frame with a GSO header must be TCP or UDP of the matching IP version.
pub fn check(data: &[u8], vnet: &VnetHdr) -> Result<(), Malformed> {
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
    Ok(())
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
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    fn udp_frame(payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1000, 2000);
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    #[test]
    fn good_frame_passes() {
        assert_eq!(check(&udp_frame(b"hello"), &VnetHdr::default()), Ok(()));
    }

    #[test]
    fn runt_and_cut_headers() {
        let f = udp_frame(b"hello");
        assert_eq!(check(&f[..10], &VnetHdr::default()), Err(Malformed::Runt));
        assert_eq!(
            check(&f[..20], &VnetHdr::default()),
            Err(Malformed::Ipv4Header)
        );
        // Cut inside the UDP header: IPv4 total length now exceeds the frame.
        assert_eq!(
            check(&f[..38], &VnetHdr::default()),
            Err(Malformed::Ipv4Length)
        );
    }

    #[test]
    fn bad_ihl() {
        let mut f = udp_frame(b"hello");
        f[14] = 0x43; // version 4, IHL 3
        assert_eq!(check(&f, &VnetHdr::default()), Err(Malformed::Ipv4Header));
    }

    #[test]
    fn gso_must_match_transport() {
        let f = udp_frame(b"hello");
        let tcp4 = VnetHdr {
            gso_type: crate::port::vnet::GSO_TCPV4,
            gso_size: 1448,
            ..Default::default()
        };
        assert_eq!(check(&f, &tcp4), Err(Malformed::Gso));
    }

    #[test]
    fn policy_decides_malformed() {
        let f = udp_frame(b"x");
        let cut = Frame::new(&f[..20], VnetHdr::default(), None);
        assert_eq!(
            Pipeline::new(MalformedPolicy::Drop).judge(&cut),
            Verdict::MalformedDrop(Malformed::Ipv4Header)
        );
        assert_eq!(
            Pipeline::new(MalformedPolicy::Pass).judge(&cut),
            Verdict::MalformedPass(Malformed::Ipv4Header)
        );
        let runt = Frame::new(&f[..5], VnetHdr::default(), None);
        assert_eq!(
            Pipeline::new(MalformedPolicy::Pass).judge(&runt),
            Verdict::Drop(DropReason::Runt)
        );
    }

    proptest! {
        #[test]
        fn never_panics_on_garbage(data in proptest::collection::vec(any::<u8>(), 0..2000),
                                   vnet in proptest::array::uniform10(any::<u8>())) {
            let v = VnetHdr::from_bytes(&vnet).unwrap();
            let _ = check(&data, &v);
        }

        #[test]
        fn every_prefix_of_a_good_frame_is_judged(cut in 0usize..60) {
            let f = udp_frame(b"0123456789abcdef");
            let r = check(&f[..cut.min(f.len())], &VnetHdr::default());
            if cut >= f.len() { prop_assert_eq!(r, Ok(())); } else { prop_assert!(r.is_err()); }
        }
    }
}
