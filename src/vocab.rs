//! The words every part of guardwire shares: port and workload ids, roles, MAC
//! addresses, steering modes, directions and drop reasons. A leaf: it imports
//! nothing of guardwire's, so every module may use it without pulling in another.

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

/// Which way a flow goes, as the flow sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Towards the workload.
    Ingress,
    /// From the workload.
    Egress,
}

impl Direction {
    /// The other way.
    pub fn reverse(self) -> Direction {
        match self {
            Direction::Ingress => Direction::Egress,
            Direction::Egress => Direction::Ingress,
        }
    }
}

/// How a workload's frames travel (see MISSION.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SteeringMode {
    /// The kernel joins workload port and uplink port (tc redirect both ways);
    /// guardwire receives nothing and spends no CPU on the workload.
    Off,
    /// The kernel forwards; guardwire inspects copies and never forwards.
    Mirror,
    /// guardwire forwards every frame and enforces.
    #[default]
    Inline,
}

impl SteeringMode {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            SteeringMode::Off => "off",
            SteeringMode::Mirror => "mirror",
            SteeringMode::Inline => "inline",
        }
    }

    /// Does the kernel carry the workload's frames (tc redirect installed)?
    pub fn kernel_forwards(self) -> bool {
        self != SteeringMode::Inline
    }
}

impl std::str::FromStr for SteeringMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(SteeringMode::Off),
            "mirror" => Ok(SteeringMode::Mirror),
            "inline" => Ok(SteeringMode::Inline),
            _ => Err(format!(
                "unknown steering mode {s:?}: off, mirror or inline"
            )),
        }
    }
}

/// What happens to a workload's traffic when guardwire dies (the watchdog acts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// The kernel path (`off` mode) is installed: traffic flows uninspected.
    #[default]
    Open,
    /// Nothing is installed: the workload stays cut off until guardwire is back.
    Closed,
}

impl std::str::FromStr for OnFailure {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "open" => Ok(OnFailure::Open),
            "closed" => Ok(OnFailure::Closed),
            _ => Err(format!("unknown on_failure {s:?}: open or closed")),
        }
    }
}

/// A MAC address.
pub type Mac = [u8; 6];

/// Parses "aa:bb:cc:dd:ee:ff".
pub fn parse_mac(s: &str) -> Result<Mac, String> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in m.iter_mut() {
        let p = parts
            .next()
            .ok_or_else(|| format!("{s:?} is not a MAC address"))?;
        *b = u8::from_str_radix(p, 16).map_err(|_| format!("{s:?} is not a MAC address"))?;
    }
    if parts.next().is_some() {
        return Err(format!("{s:?} is not a MAC address"));
    }
    Ok(m)
}

/// Writes "aa:bb:cc:dd:ee:ff".
pub fn format_mac(m: &Mac) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// Is this a group (multicast or broadcast) address?
pub fn is_group(mac: &Mac) -> bool {
    mac[0] & 1 == 1
}

/// Index of a port in the forwarding state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PortId(pub u32);

/// Index of a workload in the forwarding state.
///
/// Generational: a slot freed by a detach is reused, but with a new generation,
/// so nothing kept under the old workload's id (flows, cached verdicts, limiter
/// state) can ever be taken for the new one's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct WorkloadId {
    slot: u32,
    generation: u32,
}

impl WorkloadId {
    /// The id of generation `generation` in slot `slot`.
    pub const fn new(slot: u32, generation: u32) -> WorkloadId {
        WorkloadId { slot, generation }
    }

    /// Index of the workload's slot in the forwarding state.
    pub fn slot(self) -> usize {
        self.slot as usize
    }

    /// How many workloads held this slot before, in this run.
    pub fn generation(self) -> u32 {
        self.generation
    }
}

/// What a port is to its workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Faces the workload (pod veth end, VM tap).
    Workload,
    /// Faces the node network for that workload.
    Uplink,
}
