//! What the pipeline and the switch decide about a frame, and the reasons a frame
//! is dropped. Every reason has a counter readable from outside.

use serde::{Deserialize, Serialize};

/// Why a frame did not leave guardwire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    Runt,
    /// Did not parse, and the malformed policy is `drop`.
    Malformed,
    /// Source MAC is multicast or broadcast (never a valid sender).
    BadSourceMac,
    /// A new source MAC on a workload port that already has its limit of MACs.
    MacLimit,
    /// Destination is a MAC learned on the port the frame came in by.
    Hairpin,
    /// The port or its workload is gone (detached between receive and send).
    NoEgress,
    /// The egress socket or device stayed full.
    TxBusy,
    /// The kernel refused the frame on send.
    TxFailed,
    /// A firewall rule (or default) denies the flow.
    Denied,
    /// A firewall rule rejects the flow (a TCP RST or ICMP unreachable went back).
    Rejected,
    /// Over a rate limit.
    RateLimited,
    /// A shaper would have held it longer than allowed, or its queue was full.
    ShapeOverflow,
    /// From a workload, with a source MAC that is not the workload's.
    SpoofMac,
    /// From a workload, with a source IP that is not the workload's.
    SpoofIp,
    /// ARP from a workload claiming an address that is not the workload's.
    SpoofArp,
    /// Neighbour discovery from a workload claiming an address that is not its own.
    SpoofNd,
    /// A fragment, and the fragment policy is `drop`.
    Fragment,
    /// An IPv6 router advertisement from a workload not allowed to route.
    RogueRa,
    /// An ICMP or ICMPv6 redirect from a workload not allowed to route.
    RogueRedirect,
    /// A DHCP or DHCPv6 server answer from a workload not allowed to serve them.
    RogueDhcp,
    /// A TCP segment the application probe could not hold (its reassembly
    /// budget is spent) or that overlaps bytes already seen with other ones:
    /// withheld, so the receiver never has bytes the probe did not see.
    Withheld,
    /// A flow dropped by the evasion policy `drop`.
    Evasion,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 22] = [
        DropReason::Runt,
        DropReason::Malformed,
        DropReason::BadSourceMac,
        DropReason::MacLimit,
        DropReason::Hairpin,
        DropReason::NoEgress,
        DropReason::TxBusy,
        DropReason::TxFailed,
        DropReason::Denied,
        DropReason::Rejected,
        DropReason::RateLimited,
        DropReason::ShapeOverflow,
        DropReason::SpoofMac,
        DropReason::SpoofIp,
        DropReason::SpoofArp,
        DropReason::SpoofNd,
        DropReason::Fragment,
        DropReason::RogueRa,
        DropReason::RogueRedirect,
        DropReason::RogueDhcp,
        DropReason::Withheld,
        DropReason::Evasion,
    ];

    /// Name used in stats and logs.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Runt => "runt",
            DropReason::Malformed => "malformed",
            DropReason::BadSourceMac => "bad_source_mac",
            DropReason::MacLimit => "mac_limit",
            DropReason::Hairpin => "hairpin",
            DropReason::NoEgress => "no_egress",
            DropReason::TxBusy => "tx_busy",
            DropReason::TxFailed => "tx_failed",
            DropReason::Denied => "denied",
            DropReason::Rejected => "rejected",
            DropReason::RateLimited => "rate_limited",
            DropReason::ShapeOverflow => "shape_overflow",
            DropReason::SpoofMac => "spoof_mac",
            DropReason::SpoofIp => "spoof_ip",
            DropReason::SpoofArp => "spoof_arp",
            DropReason::SpoofNd => "spoof_nd",
            DropReason::Fragment => "fragment",
            DropReason::RogueRa => "rogue_ra",
            DropReason::RogueRedirect => "rogue_redirect",
            DropReason::RogueDhcp => "rogue_dhcp",
            DropReason::Withheld => "withheld",
            DropReason::Evasion => "evasion",
        }
    }
}

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

/// The pipeline's decision for one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Hand the frame to the switch.
    Forward,
    /// Malformed, counted, and switched anyway (policy `pass`).
    MalformedPass(Malformed),
    /// Malformed, counted, and dropped (policy `drop`).
    MalformedDrop(Malformed),
    /// Dropped for the reason given.
    Drop(DropReason),
    /// Dropped, and the sender told so (TCP RST or ICMP unreachable).
    Reject,
    /// Held by a shaper until this time (ns on the datapath clock), then switched.
    Delay(u64),
}
