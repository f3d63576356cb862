//! Where a frame is judged. The pipeline takes frames and returns verdicts; it
//! never touches a socket, so it is tested and fuzzed alone.
//!
//! Stages, in the order a frame meets them:
//! - [`parse`]: etherparse, no allocation, malformed frames by kind;
//! - [`spoof`]: a workload port only accepts the workload's own addresses;
//! - [`flow`]: the flow table, both directions of a flow in one entry;
//! - [`firewall`]: the rule set, judging a flow's first packet;
//! - [`app`]: application identification (SNI, QUIC SNI, HTTP Host, DNS, ports);
//! - [`police`]: rate limits and shaping;
//! - [`inspect`]: the stage that ties flow table, rules, names and limits together.

pub mod app;
pub mod firewall;
pub mod flow;
pub mod fuzz;
pub mod inspect;
pub mod parse;
pub mod police;
pub mod reject;
pub mod spoof;
mod verdict;

pub use inspect::{Context, EvasionPolicy, FragmentPolicy, Inspector, Size};
pub use parse::{Packet, parse};
pub use verdict::{Malformed, MalformedPolicy, Verdict};

use crate::port::Frame;
use crate::vocab::DropReason;
use crate::vocab::WorkloadId;
use app::Apps;
use firewall::{Action, RuleSet};
use rustc_hash::FxHashMap;
use std::sync::{Arc, Mutex};

/// What validation made of a frame.
#[derive(Debug)]
pub enum Checked<'a> {
    /// It parses: judge it by these facts.
    Good(Packet<'a>),
    /// Malformed in this way, and the policy switches it uninspected.
    Pass(Malformed),
    /// Dropped for this reason, being malformed in this way.
    Drop(DropReason, Malformed),
}

/// Ethernet header length: anything shorter cannot be switched.
pub const ETH_HLEN: usize = 14;

/// The pipeline's configuration: an immutable snapshot the workers read, swapped
/// whole when rules are pushed.
#[derive(Debug)]
pub struct Pipeline {
    malformed: MalformedPolicy,
    /// Inspect flows at all (off: validation and switching only).
    pub inspect: bool,
    /// Check workload frames against their identities.
    pub anti_spoofing: bool,
    /// What to do with fragments.
    pub fragments: FragmentPolicy,
    /// What to do with a TCP stream that tries to evade the probes.
    pub evasion: EvasionPolicy,
    /// The rules.
    pub rules: Arc<RuleSet>,
    /// Counts rule pushes; a flow judged under another generation is judged again.
    pub generation: u64,
    /// The application catalogue.
    pub apps: Arc<Apps>,
    /// Limiters of rate-limit and shape rules, per rule and workload.
    limiters: Mutex<FxHashMap<(u32, WorkloadId), inspect::Limiters>>,
}

impl Pipeline {
    /// A pipeline applying `malformed` to frames that do not parse, with no rules
    /// (everything allowed) and the built-in application catalogue.
    pub fn new(malformed: MalformedPolicy) -> Self {
        Pipeline {
            malformed,
            inspect: true,
            anti_spoofing: true,
            fragments: FragmentPolicy::Pass,
            evasion: EvasionPolicy::FirstWins,
            rules: Arc::new(RuleSet::empty()),
            generation: 1,
            apps: Arc::new(Apps::builtin()),
            limiters: Mutex::new(FxHashMap::default()),
        }
    }

    /// The same settings with another rule set (limiters start afresh).
    pub fn with_rules(&self, rules: Arc<RuleSet>) -> Pipeline {
        Pipeline {
            malformed: self.malformed,
            inspect: self.inspect,
            anti_spoofing: self.anti_spoofing,
            fragments: self.fragments,
            evasion: self.evasion,
            rules,
            generation: self.generation + 1,
            apps: self.apps.clone(),
            limiters: Mutex::new(FxHashMap::default()),
        }
    }

    /// The same settings with other values for the inspection switches.
    pub fn configured(
        mut self,
        inspect: bool,
        anti_spoofing: bool,
        fragments: FragmentPolicy,
        evasion: EvasionPolicy,
        apps: Arc<Apps>,
    ) -> Pipeline {
        self.inspect = inspect;
        self.anti_spoofing = anti_spoofing;
        self.fragments = fragments;
        self.evasion = evasion;
        self.apps = apps;
        self
    }

    fn limiters_for(&self, rule: u32, wl: WorkloadId, action: &Action) -> inspect::Limiters {
        let mut m = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        m.entry((rule, wl))
            .or_insert_with(|| {
                Arc::new(inspect::limiters(action).expect("only called for limiting actions"))
            })
            .clone()
    }

    /// Lets go of a detached workload's limiters.
    pub fn forget(&self, wl: WorkloadId) {
        let mut m = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|(_, w), _| *w != wl);
    }

    /// Validates one frame: its facts, or what the malformed policy makes of a
    /// frame that does not parse. Every outcome is one the caller must count.
    pub fn check<'a>(&self, frame: &Frame<'a>) -> Checked<'a> {
        match parse(frame.data(), &frame.vnet) {
            Ok(p) => Checked::Good(p),
            Err(Malformed::Runt) => Checked::Drop(DropReason::Runt, Malformed::Runt),
            Err(m) => match self.malformed {
                MalformedPolicy::Drop => Checked::Drop(DropReason::Malformed, m),
                MalformedPolicy::Pass => Checked::Pass(m),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::VnetHdr;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    /// What, if anything, is wrong with a frame.
    fn check(data: &[u8], vnet: &VnetHdr) -> Result<(), Malformed> {
        parse(data, vnet).map(|_| ())
    }

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
        assert!(matches!(
            Pipeline::new(MalformedPolicy::Drop).check(&cut),
            Checked::Drop(DropReason::Malformed, Malformed::Ipv4Header)
        ));
        assert!(matches!(
            Pipeline::new(MalformedPolicy::Pass).check(&cut),
            Checked::Pass(Malformed::Ipv4Header)
        ));
        let runt = Frame::new(&f[..5], VnetHdr::default(), None);
        assert!(matches!(
            Pipeline::new(MalformedPolicy::Pass).check(&runt),
            Checked::Drop(DropReason::Runt, Malformed::Runt)
        ));
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
