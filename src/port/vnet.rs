//! The virtio-net header (`struct virtio_net_hdr`, 10 bytes) that packet sockets
//! with PACKET_VNET_HDR and taps with IFF_VNET_HDR put in front of every frame.
//! It carries the GSO and checksum-offload state, so a 64 KiB super-frame with an
//! incomplete checksum can be handed on as it is instead of being segmented.

/// Length of the header on the wire.
pub const VNET_HDR_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at csum_start+csum_offset is partial.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_UDP` (UFO).
pub const GSO_UDP: u8 = 3;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_UDP_L4` (USO).
pub const GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN` flag bit.
pub const GSO_ECN: u8 = 0x80;

/// A decoded virtio-net header. Fields are little-endian on the wire (the legacy
/// layout is native-endian and every target guardwire runs on is little-endian;
/// packet sockets always use little-endian).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM` and friends.
    pub flags: u8,
    /// One of the `GSO_*` values, possibly with `GSO_ECN`.
    pub gso_type: u8,
    /// Length of the headers to replicate in each segment.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts, from the first byte of the frame.
    pub csum_start: u16,
    /// Where the checksum is stored, from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Decodes the first 10 bytes of `b`; `None` if `b` is shorter.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let b: &[u8; VNET_HDR_LEN] = b.get(..VNET_HDR_LEN)?.try_into().ok()?;
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    /// Encodes the header.
    pub fn to_bytes(self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }

    /// GSO type without the ECN bit.
    pub fn gso_kind(&self) -> u8 {
        self.gso_type & !GSO_ECN
    }

    /// A super-frame that the next hop segments.
    pub fn is_gso(&self) -> bool {
        self.gso_kind() != GSO_NONE
    }

    /// The header for the same frame with a 4-byte VLAN tag inserted after the MAC
    /// addresses: every offset measured from the frame start moves by 4.
    pub fn with_vlan_inserted(self) -> Self {
        let mut h = self;
        if h.flags & F_NEEDS_CSUM != 0 {
            h.csum_start = h.csum_start.saturating_add(4);
        }
        if h.is_gso() && h.hdr_len != 0 {
            h.hdr_len = h.hdr_len.saturating_add(4);
        }
        h
    }

    /// Number of segments the frame becomes on the wire (1 for a plain frame), given
    /// the frame's length; used to count a super-frame as its real packets.
    pub fn segments(&self, frame_len: usize) -> usize {
        if !self.is_gso() || self.gso_size == 0 {
            return 1;
        }
        let hdr = self.hdr_len as usize;
        let payload = frame_len.saturating_sub(hdr);
        payload.div_ceil(self.gso_size as usize).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn vlan_insert_moves_offsets() {
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let v = h.with_vlan_inserted();
        assert_eq!(v.csum_start, 38);
        assert_eq!(v.hdr_len, 70);
        assert_eq!(v.csum_offset, 16);
        let plain = VnetHdr::default().with_vlan_inserted();
        assert_eq!(plain, VnetHdr::default());
    }

    #[test]
    fn segments_of_super_frame() {
        let h = VnetHdr {
            gso_type: GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            ..Default::default()
        };
        assert_eq!(h.segments(66 + 1448 * 45), 45);
        assert_eq!(h.segments(66 + 1448 * 45 + 1), 46);
        assert_eq!(VnetHdr::default().segments(9000), 1);
    }

    proptest! {
        #[test]
        fn roundtrip(b in proptest::array::uniform10(any::<u8>())) {
            let h = VnetHdr::from_bytes(&b).unwrap();
            prop_assert_eq!(h.to_bytes(), b);
        }

        #[test]
        fn short_input_is_none(v in proptest::collection::vec(any::<u8>(), 0..VNET_HDR_LEN)) {
            prop_assert!(VnetHdr::from_bytes(&v).is_none());
        }
    }
}
