//! What inspection makes of a frame, the ways a frame can be malformed, and the
//! policy for malformed frames. Every kind has a counter readable from outside.

use crate::vocab::DropReason;
use serde::{Deserialize, Serialize};

/// What is wrong with a frame that does not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Malformed {
    /// Shorter than an Ethernet header.
    Runt,
    /// Link layer cut short.
    Link,
    /// VLAN (or QinQ, MACsec) header cut short.
    Vlan,
    /// IPv4 header cut short, bad version or IHL.
    Ipv4Header,
    /// IPv4 total length larger than the frame.
    Ipv4Length,
    /// IPv6 header cut short.
    Ipv6Header,
    /// IPv6 payload length larger than the frame.
    Ipv6Length,
    /// IPv6 extension header (or IPv4 AH) chain cut short or invalid.
    IpExt,
    /// TCP header cut short or bad data offset.
    Tcp,
    /// UDP header cut short or length wrong.
    Udp,
    /// ICMP/ICMPv6/IGMP cut short.
    Icmp,
    /// ARP cut short or inconsistent.
    Arp,
    /// GSO metadata that does not match the frame (not TCP/UDP, or zero size).
    Gso,
}

impl Malformed {
    /// Every kind, in counter order.
    pub const ALL: [Malformed; 13] = [
        Malformed::Runt,
        Malformed::Link,
        Malformed::Vlan,
        Malformed::Ipv4Header,
        Malformed::Ipv4Length,
        Malformed::Ipv6Header,
        Malformed::Ipv6Length,
        Malformed::IpExt,
        Malformed::Tcp,
        Malformed::Udp,
        Malformed::Icmp,
        Malformed::Arp,
        Malformed::Gso,
    ];

    /// Name used in stats and logs.
    pub fn name(self) -> &'static str {
        match self {
            Malformed::Runt => "runt",
            Malformed::Link => "link",
            Malformed::Vlan => "vlan",
            Malformed::Ipv4Header => "ipv4_header",
            Malformed::Ipv4Length => "ipv4_length",
            Malformed::Ipv6Header => "ipv6_header",
            Malformed::Ipv6Length => "ipv6_length",
            Malformed::IpExt => "ip_ext",
            Malformed::Tcp => "tcp",
            Malformed::Udp => "udp",
            Malformed::Icmp => "icmp",
            Malformed::Arp => "arp",
            Malformed::Gso => "gso",
        }
    }
}

/// What to do with a frame that does not parse (but is at least an Ethernet header).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MalformedPolicy {
    /// Count it and drop it.
    #[default]
    Drop,
    /// Count it and switch it like any other frame.
    Pass,
}

/// What inspection makes of one frame (the switch then picks its port).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Hand the frame to the switch.
    Forward,
    /// Dropped for the reason given.
    Drop(DropReason),
    /// Dropped, and the sender told so (TCP RST or ICMP unreachable).
    Reject,
    /// Held by a shaper until this time (ns on the datapath clock), then switched.
    Delay(u64),
}
