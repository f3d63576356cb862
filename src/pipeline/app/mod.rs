//! Application identification: the host a client asked for, read from the first
//! packets of its flow (TLS SNI, QUIC Initial SNI, HTTP Host), mapped to an
//! application and a category by [`Apps`]. Pure: no sockets, no clock.
//!
//! [`AppProbe`] runs per flow until it finds a host or gives up; the caller then
//! falls back to [`DnsCache`] (names learnt from DNS responses, see
//! [`parse_response`]) and to port heuristics ([`Apps::by_port`]).

pub mod apps;
pub mod dns;
pub mod http;
pub mod quic;
pub mod stream;
pub mod tls;

pub use apps::{AppId, Apps, AppsError, BUILTIN_APPS};
pub use dns::{DnsAnswer, DnsCache, DnsFlow, parse_response};
pub use stream::{Budget, Charge};

/// Most client bytes of a TCP stream looked at while a request or hello is
/// incomplete (the reassembly window).
pub const MAX_BUFFER: usize = 16 * 1024;
/// Client datagrams looked at per UDP flow before giving up. (A TCP probe is
/// bounded by bytes instead: a hello cut into one-byte segments is still read.)
pub const MAX_PACKETS: u8 = 10;

const TCP: u8 = 6;
const UDP: u8 = 17;

/// How far a parser got with the bytes it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan<'a> {
    /// Consistent so far but incomplete: more bytes may tell.
    More,
    /// The host the client asked for.
    Host(&'a str),
    /// Not this protocol, or no host in it.
    Nothing,
}

/// How an application was identified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum How {
    /// A port heuristic ([`Apps::by_port`]).
    Port,
    /// The server address was a DNS answer ([`DnsCache`]).
    Dns,
    /// The SNI of a TLS ClientHello over TCP.
    Sni,
    /// The SNI of a ClientHello in QUIC Initial packets.
    QuicSni,
    /// The Host of an HTTP/1.x request.
    HttpHost,
}

impl How {
    /// The name used in stats and logs.
    pub fn name(self) -> &'static str {
        match self {
            How::Port => "port",
            How::Dns => "dns",
            How::Sni => "sni",
            How::QuicSni => "quic_sni",
            How::HttpHost => "http_host",
        }
    }
}

/// What a probe says after a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Nothing yet: feed the flow's next packet.
    NeedMore,
    /// The host the client asked for (lower case, no trailing dot).
    Found {
        /// The host.
        host: String,
        /// Where it came from.
        how: How,
    },
    /// No host will be found in this flow.
    GiveUp,
    /// The segment could not be held (the reassembly budget is spent):
    /// withhold it, so the receiver never has bytes the probe did not see;
    /// its sender retransmits it.
    Withhold,
    /// The segment overlaps bytes already seen with different ones, an
    /// evasion attempt. Nothing of it was taken (the first bytes win).
    Conflict,
    /// The window filled before the request or hello ended: the probe gives
    /// up on a stream that still looked like one.
    Exhausted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Tcp,
    Udp,
    Done,
}

/// What is held while a request or hello spans packets.
#[derive(Debug)]
enum Reasm {
    /// The client's TCP stream from its first payload byte.
    Tcp(stream::Stream),
    /// The QUIC Initial reader (boxed again: it is large, and a TCP flow's
    /// box should not pay for it).
    Quic(Box<quic::InitialReader>),
}

/// Per-flow identification state. Idle it is 16 bytes and owns no heap memory;
/// a buffer exists only while a request or hello spans packets.
#[derive(Debug)]
pub struct AppProbe {
    reasm: Option<Box<Reasm>>,
    /// TCP sequence number of the client's first payload byte, once known.
    isn: u32,
    phase: Phase,
    /// Client payload packets seen (saturating).
    packets: u8,
    /// `isn` is known: from the client's SYN, or its first payload segment.
    isn_known: bool,
}

/// Whose share of the reassembly budget a probe's buffers are charged to.
#[derive(Clone, Copy, Debug)]
pub struct Account<'a> {
    /// The node's budget.
    pub budget: &'a std::sync::Arc<Budget>,
    /// The workload whose flow it is.
    pub workload: crate::vocab::WorkloadId,
}

impl AppProbe {
    /// A probe for a flow of IP protocol `proto` (6 TCP, 17 UDP; anything else
    /// gives up at once) to `server_port`.
    pub fn new(proto: u8, server_port: u16) -> AppProbe {
        // The protocol is told by content, so TLS on 8443 or HTTP on 8080 are
        // found; the port is the caller's fallback (Apps::by_port).
        let _ = server_port;
        AppProbe {
            reasm: None,
            isn: 0,
            phase: match proto {
                TCP => Phase::Tcp,
                UDP => Phase::Udp,
                _ => Phase::Done,
            },
            packets: 0,
            isn_known: false,
        }
    }

    /// The client's SYN had sequence number `seq`: its stream starts after it,
    /// so a segment that arrives before the first one is put in its place.
    pub fn syn(&mut self, seq: u32) {
        if self.reasm.is_none() {
            self.isn = seq.wrapping_add(1);
            self.isn_known = true;
        }
    }

    /// One packet's L4 payload. `from_client`: the packet travels in the
    /// direction of the flow's first packet. `tcp_seq`: the TCP sequence number
    /// (of the payload's first byte), None for UDP.
    pub fn feed(
        &mut self,
        from_client: bool,
        tcp_seq: Option<u32>,
        payload: &[u8],
        account: Account<'_>,
    ) -> Probe {
        if self.phase == Phase::Done {
            return Probe::GiveUp;
        }
        if payload.is_empty() {
            return Probe::NeedMore;
        }
        if !from_client {
            // TLS, HTTP and QUIC clients speak first: a server that talks
            // before its client is speaking something else.
            return if self.packets == 0 {
                self.finish(Probe::GiveUp)
            } else {
                Probe::NeedMore
            };
        }
        self.packets = self.packets.saturating_add(1);
        let probe = match self.phase {
            Phase::Tcp => self.tcp(tcp_seq, payload, account),
            Phase::Udp => match self.udp(payload) {
                Probe::NeedMore if self.packets >= MAX_PACKETS => Probe::GiveUp,
                p => p,
            },
            Phase::Done => Probe::GiveUp,
        };
        match probe {
            Probe::NeedMore | Probe::Withhold | Probe::Conflict => probe,
            found_or_not => self.finish(found_or_not),
        }
    }

    /// Whether `Found` or `GiveUp` was returned: the caller stops feeding.
    pub fn done(&self) -> bool {
        self.phase == Phase::Done
    }

    fn finish(&mut self, probe: Probe) -> Probe {
        self.phase = Phase::Done;
        self.reasm = None;
        probe
    }

    fn tcp(&mut self, seq: Option<u32>, payload: &[u8], account: Account<'_>) -> Probe {
        let seq = seq.unwrap_or(self.isn);
        if !self.isn_known {
            // No SYN seen (the flow predates us): its first bytes start it.
            self.isn = seq;
            self.isn_known = true;
        }
        let in_place = self.reasm.is_none() && seq == self.isn;
        if in_place {
            // The first client bytes most often hold the whole request or
            // hello: look at them in place.
            match scan_stream(payload, &mut Vec::new()) {
                (Scan::More, _) => {}
                (scan, how) => return found(scan, how),
            }
        }
        let reasm = self.reasm.get_or_insert_with(|| {
            let charge = Charge::new(account.budget, account.workload);
            Box::new(Reasm::Tcp(stream::Stream::new(
                self.isn, MAX_BUFFER, charge,
            )))
        });
        let Reasm::Tcp(stream) = &mut **reasm else {
            return Probe::GiveUp;
        };
        match stream.take(seq, payload) {
            stream::Take::Grew => {}
            stream::Take::Held | stream::Take::Old | stream::Take::Outside => {
                return Probe::NeedMore;
            }
            stream::Take::Conflict => return Probe::Conflict,
            stream::Take::Refused => return Probe::Withhold,
        }
        let mut scratch = Vec::new();
        let (scan, how) = if in_place {
            (Scan::More, How::Sni) // scanned in place above
        } else {
            scan_stream(stream.data(), &mut scratch)
        };
        match scan {
            Scan::More if stream.full() => Probe::Exhausted,
            scan => found(scan, how),
        }
    }

    fn udp(&mut self, payload: &[u8]) -> Probe {
        let first = self.reasm.is_none();
        let mut fresh = None;
        let reader = match &mut self.reasm {
            Some(r) => match &mut **r {
                Reasm::Quic(reader) => reader,
                Reasm::Tcp(_) => return Probe::GiveUp,
            },
            None => {
                // RFC 9000 14.1: a client's first Initial datagram is at least
                // 1200 bytes. Checked before any key derivation or allocation.
                if payload.len() < 1200 || payload[0] & 0x80 == 0 || payload[1..5] != [0, 0, 0, 1] {
                    return Probe::GiveUp;
                }
                fresh.insert(quic::InitialReader::new())
            }
        };
        let probe = match reader.datagram(payload, first) {
            quic::Datagram::Stop => return Probe::GiveUp,
            quic::Datagram::Ignored => Probe::NeedMore,
            quic::Datagram::Initial => found(reader.sni(), How::QuicSni),
        };
        if let (Probe::NeedMore, Some(reader)) = (&probe, fresh) {
            self.reasm = Some(Box::new(Reasm::Quic(Box::new(reader))));
        }
        probe
    }
}

/// Scans a client's TCP stream as TLS or HTTP, whichever its first byte allows.
fn scan_stream<'a>(data: &'a [u8], scratch: &'a mut Vec<u8>) -> (Scan<'a>, How) {
    if data.first() == Some(&22) {
        (tls::record_sni(data, scratch), How::Sni)
    } else {
        (http::request_host(data), How::HttpHost)
    }
}

fn found(scan: Scan<'_>, how: How) -> Probe {
    match scan {
        Scan::More => Probe::NeedMore,
        Scan::Host(h) => Probe::Found {
            host: h.to_ascii_lowercase(),
            how,
        },
        Scan::Nothing => Probe::GiveUp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::{Arc, OnceLock};

    /// An account in a budget large enough for every test.
    fn acct() -> Account<'static> {
        static B: OnceLock<Arc<Budget>> = OnceLock::new();
        Account {
            budget: B.get_or_init(|| Budget::new(1 << 30)),
            workload: crate::vocab::WorkloadId::new(0, 0),
        }
    }

    fn sni(host: &str) -> Probe {
        Probe::Found {
            host: host.into(),
            how: How::Sni,
        }
    }

    /// Feeds client segments in order from sequence number `isn`, until done.
    fn feed_tcp(p: &mut AppProbe, isn: u32, segments: &[&[u8]]) -> Vec<Probe> {
        let mut seq = isn;
        let mut out = Vec::new();
        for s in segments {
            out.push(p.feed(true, Some(seq), s, acct()));
            seq = seq.wrapping_add(s.len() as u32);
            if p.done() {
                break;
            }
        }
        out
    }

    /// A TLS stream whose SNI comes after the first 1000 bytes.
    fn late_sni_stream(host: &str) -> Vec<u8> {
        tls::tests::in_records(&tls::tests::pq_hello(host), 16384)
    }

    #[test]
    fn idle_probe_is_small() {
        assert!(std::mem::size_of::<AppProbe>() <= 32);
        assert_eq!(std::mem::size_of::<AppProbe>(), 16);
    }

    #[test]
    fn shareable_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<AppProbe>();
        send_sync::<Apps>();
        send_sync::<DnsCache>();
    }

    #[test]
    fn how_names() {
        let names: Vec<_> = [How::Port, How::Dns, How::Sni, How::QuicSni, How::HttpHost]
            .into_iter()
            .map(How::name)
            .collect();
        assert_eq!(names, ["port", "dns", "sni", "quic_sni", "http_host"]);
    }

    #[test]
    fn tls_hello_in_one_segment() {
        let hello = tls::tests::rustls_hello("WWW.YouTube.com", vec![b"h2".to_vec()]);
        let mut p = AppProbe::new(TCP, 443);
        assert_eq!(
            p.feed(true, Some(1), &hello, acct()),
            sni("www.youtube.com")
        );
        assert!(p.done());
        assert!(p.reasm.is_none());
        assert_eq!(p.feed(true, Some(1), &hello, acct()), Probe::GiveUp);
    }

    #[test]
    fn large_tls_hello_in_segments_on_8443() {
        let hello = tls::tests::rustls_hello("big.example.org", tls::tests::big_alpn(1600));
        assert!(hello.len() > 1500);
        for parts in [2, 3] {
            let size = hello.len().div_ceil(parts);
            let segs: Vec<&[u8]> = hello.chunks(size).collect();
            let mut p = AppProbe::new(TCP, 8443);
            let got = feed_tcp(&mut p, u32::MAX - 100, &segs);
            // rustls shuffles its extensions: the SNI may come in any segment.
            assert_eq!(
                got.last().unwrap(),
                &sni("big.example.org"),
                "{parts} parts"
            );
            assert!(got[..got.len() - 1].iter().all(|r| *r == Probe::NeedMore));
            assert!(p.reasm.is_none());
        }
    }

    #[test]
    fn pq_hello_over_records_and_segments() {
        let stream = tls::tests::in_records(&tls::tests::pq_hello("pq.example"), 1000);
        let segs: Vec<&[u8]> = stream.chunks(1448).collect();
        assert_eq!(segs.len(), 2);
        let mut p = AppProbe::new(TCP, 443);
        assert_eq!(feed_tcp(&mut p, 7, &segs)[1], sni("pq.example"));
    }

    #[test]
    fn retransmits_and_overlaps() {
        let hello = late_sni_stream("re.example");
        let mut p = AppProbe::new(TCP, 443);
        assert_eq!(
            p.feed(true, Some(100), &hello[..1000], acct()),
            Probe::NeedMore
        );
        // Exact retransmit, a pure ACK and a server ACK with no data.
        assert_eq!(
            p.feed(true, Some(100), &hello[..1000], acct()),
            Probe::NeedMore
        );
        assert_eq!(p.feed(true, Some(1100), &[], acct()), Probe::NeedMore);
        assert_eq!(p.feed(false, Some(5), &[], acct()), Probe::NeedMore);
        // A segment overlapping what is held.
        assert_eq!(
            p.feed(true, Some(600), &hello[500..1500], acct()),
            Probe::NeedMore
        );
        assert_eq!(
            p.feed(true, Some(1600), &hello[1500..], acct()),
            sni("re.example")
        );
    }

    /// Feeds the client segments `order` names (indexes into `segs`), the
    /// stream starting after a SYN with sequence number `isn`.
    fn feed_in_order(p: &mut AppProbe, isn: u32, segs: &[&[u8]], order: &[usize]) -> Vec<Probe> {
        p.syn(isn);
        let mut at = Vec::new();
        let mut seq = isn.wrapping_add(1);
        for s in segs {
            at.push(seq);
            seq = seq.wrapping_add(s.len() as u32);
        }
        order
            .iter()
            .map(|&i| p.feed(true, Some(at[i]), segs[i], acct()))
            .collect()
    }

    #[test]
    fn reordered_segments_give_the_sni() {
        let stream = late_sni_stream("order.example");
        let segs: Vec<&[u8]> = stream.chunks(500).collect();
        let n = segs.len();
        assert!(n >= 4);
        let reversed: Vec<usize> = (0..n).rev().collect();
        let middle_first: Vec<usize> = [n / 2].into_iter().chain(0..n).collect();
        let duplicated: Vec<usize> = (0..n).flat_map(|i| [i, i]).collect();
        for order in [reversed, middle_first, duplicated] {
            let mut p = AppProbe::new(TCP, 443);
            let got = feed_in_order(&mut p, u32::MAX - 700, &segs, &order);
            let first = got.iter().position(|r| *r != Probe::NeedMore);
            assert_eq!(
                first.map(|i| &got[i]),
                Some(&sni("order.example")),
                "{order:?}"
            );
            assert!(p.reasm.is_none(), "{order:?}");
        }
    }

    #[test]
    fn overlap_with_other_bytes_is_a_conflict() {
        let stream = late_sni_stream("real.example");
        let mut forged = stream.clone();
        let at = forged
            .windows(12)
            .position(|w| w == b"real.example")
            .unwrap();
        forged[at..at + 12].copy_from_slice(b"fake.example");
        let cut = at - 10;
        let mut p = AppProbe::new(TCP, 443);
        p.syn(99);
        // The forged tail first, out of order; then the real tail over it.
        assert_eq!(
            p.feed(true, Some(100 + cut as u32), &forged[cut..], acct()),
            Probe::NeedMore
        );
        assert_eq!(
            p.feed(true, Some(100 + cut as u32), &stream[cut..], acct()),
            Probe::Conflict
        );
        // The first bytes win.
        assert_eq!(
            p.feed(true, Some(100), &stream[..cut], acct()),
            sni("fake.example")
        );
    }

    #[test]
    fn a_gap_that_never_fills_holds_its_bytes_in_the_budget() {
        let stream = late_sni_stream("gap.example");
        let b = Budget::new(1 << 20);
        let a = Account {
            budget: &b,
            workload: crate::vocab::WorkloadId::new(9, 0),
        };
        let mut p = AppProbe::new(TCP, 443);
        p.syn(0);
        assert_eq!(p.feed(true, Some(1), &stream[..1000], a), Probe::NeedMore);
        for _ in 0..100 {
            assert_eq!(
                p.feed(true, Some(1201), &stream[1200..], a),
                Probe::NeedMore
            );
        }
        assert!(!p.done());
        let held = stream.len().min(MAX_BUFFER) - 200;
        assert_eq!(b.used(a.workload).1, held);
        drop(p);
        assert_eq!(b.used(a.workload), (0, 0));
    }

    #[test]
    fn a_spent_budget_withholds() {
        let stream = late_sni_stream("tight.example");
        let b = Budget::new(1200);
        let a = Account {
            budget: &b,
            workload: crate::vocab::WorkloadId::new(1, 0),
        };
        let mut other = AppProbe::new(TCP, 443);
        assert_eq!(
            other.feed(true, Some(0), &stream[..1150], a),
            Probe::NeedMore
        );
        let mut p = AppProbe::new(TCP, 443);
        assert_eq!(p.feed(true, Some(0), &stream[..100], a), Probe::Withhold);
        drop(other);
        assert_eq!(p.feed(true, Some(0), &stream[..100], a), Probe::NeedMore);
    }

    #[test]
    fn http_split_on_8080() {
        let req = b"GET /a HTTP/1.1\r\nUser-Agent: x\r\nHost: Blocked.Example:8080\r\n\r\n";
        let mut p = AppProbe::new(TCP, 8080);
        let got = feed_tcp(
            &mut p,
            0,
            &[&req[..3], &req[3..20], &req[20..40], &req[40..]],
        );
        assert_eq!(
            got,
            [
                Probe::NeedMore,
                Probe::NeedMore,
                Probe::NeedMore,
                Probe::Found {
                    host: "blocked.example".into(),
                    how: How::HttpHost
                }
            ]
        );
    }

    #[test]
    fn server_first_and_other_protocols_give_up() {
        let mut p = AppProbe::new(TCP, 22);
        assert_eq!(
            p.feed(false, Some(9), b"SSH-2.0-OpenSSH_9.6\r\n", acct()),
            Probe::GiveUp
        );
        let mut p = AppProbe::new(TCP, 22);
        assert_eq!(
            p.feed(true, Some(9), b"SSH-2.0-OpenSSH_9.6\r\n", acct()),
            Probe::GiveUp
        );
        let mut p = AppProbe::new(1, 0);
        assert!(p.done());
        assert_eq!(p.feed(true, None, b"ping", acct()), Probe::GiveUp);
        // A DNS query on UDP.
        let mut p = AppProbe::new(UDP, 53);
        assert_eq!(
            p.feed(
                true,
                None,
                b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00",
                acct()
            ),
            Probe::GiveUp
        );
    }

    #[test]
    fn one_byte_segments_still_give_the_sni() {
        let hello = tls::tests::rustls_hello("slow.example", vec![]);
        let mut p = AppProbe::new(TCP, 443);
        let segs: Vec<&[u8]> = hello.chunks(1).collect();
        let got = feed_tcp(&mut p, 0, &segs);
        assert_eq!(got.last(), Some(&sni("slow.example")));
        assert!(got.len() > usize::from(MAX_PACKETS));
    }

    #[test]
    fn pure_acks_do_not_count() {
        let hello = tls::tests::rustls_hello("acks.example", vec![]);
        let mut p = AppProbe::new(TCP, 443);
        for _ in 0..50 {
            assert_eq!(p.feed(true, Some(0), &[], acct()), Probe::NeedMore);
        }
        assert_eq!(p.feed(true, Some(0), &hello, acct()), sni("acks.example"));
    }

    #[test]
    fn buffer_is_bounded() {
        let mut p = AppProbe::new(TCP, 80);
        let mut seq = 0;
        let mut line = b"GET / HTTP/1.1\r\n".to_vec();
        line.resize(1448, b'a');
        let mut last = Probe::NeedMore;
        for _ in 0..MAX_BUFFER / line.len() + 1 {
            last = p.feed(true, Some(seq), &line, acct());
            seq += line.len() as u32;
            if let Some(r) = &p.reasm {
                let Reasm::Tcp(b) = &**r else { panic!() };
                assert!(b.data().len() <= MAX_BUFFER);
            }
        }
        assert_eq!(last, Probe::Exhausted);
        assert!(p.done());
    }

    #[test]
    fn quic_rfc9001_vector() {
        let packet = quic::tests::unhex(quic::tests::A2_PACKET);
        let mut p = AppProbe::new(UDP, 443);
        assert_eq!(
            p.feed(true, None, &packet, acct()),
            Probe::Found {
                host: "example.com".into(),
                how: How::QuicSni
            }
        );
        assert!(p.reasm.is_none());
    }

    #[test]
    fn quic_hello_over_two_datagrams() {
        let hello = tls::tests::pq_hello("Netflix.com");
        let dcid = [0xabu8; 8];
        let p1 =
            quic::tests::client_initial(&dcid, 0, &quic::tests::crypto_frame(0, &hello[..1100]));
        let p2 =
            quic::tests::client_initial(&dcid, 1, &quic::tests::crypto_frame(1100, &hello[1100..]));
        let mut p = AppProbe::new(UDP, 443);
        assert_eq!(p.feed(true, None, &p1, acct()), Probe::NeedMore);
        // The server's ACK-only Initial comes in between.
        assert_eq!(p.feed(false, None, &[0xc0; 60], acct()), Probe::NeedMore);
        assert_eq!(
            p.feed(true, None, &p2, acct()),
            Probe::Found {
                host: "netflix.com".into(),
                how: How::QuicSni
            }
        );
    }

    /// Splits `data` at the given cut points (any order, any values).
    fn split<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut out = Vec::new();
        let mut at = 0;
        for c in cuts.into_iter().chain([data.len()]) {
            if c > at {
                out.push(&data[at..c]);
                at = c;
            }
        }
        out
    }

    fn arb_packet() -> impl Strategy<Value = (bool, Option<u32>, Vec<u8>)> {
        (
            any::<bool>(),
            any::<Option<u32>>(),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..64),
                // Starts that get past the first checks of each parser.
                prop::collection::vec(any::<u8>(), 0..2000).prop_map(|mut v| {
                    v.splice(0..0, [22, 3, 1]);
                    v
                }),
                prop::collection::vec(any::<u8>(), 0..200).prop_map(|mut v| {
                    v.splice(0..0, *b"GET / HTTP/1.1\r\nHost: ");
                    v
                }),
                prop::collection::vec(any::<u8>(), 1200..1400).prop_map(|mut v| {
                    v.splice(0..5, [0xc0, 0, 0, 0, 1]);
                    v
                }),
            ],
        )
    }

    fn check_bounds(p: &AppProbe) {
        if let Some(r) = &p.reasm {
            match &**r {
                Reasm::Tcp(b) => assert!(b.data().len() <= MAX_BUFFER),
                Reasm::Quic(_) => {}
            }
        }
        if p.done() {
            assert!(p.reasm.is_none());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn feed_never_panics(
            proto in prop_oneof![Just(TCP), Just(UDP)],
            packets in prop::collection::vec(arb_packet(), 0..16),
        ) {
            let mut p = AppProbe::new(proto, 443);
            let mut client = 0;
            for (from_client, seq, data) in &packets {
                let was_done = p.done();
                let r = p.feed(*from_client, *seq, data, acct());
                if was_done {
                    prop_assert_eq!(r, Probe::GiveUp);
                }
                if *from_client && !data.is_empty() {
                    client += 1;
                }
                check_bounds(&p);
                prop_assert!(proto == TCP || client < usize::from(MAX_PACKETS) || p.done());
            }
        }

        #[test]
        fn any_segmentation_gives_the_sni(
            cuts in prop::collection::vec(any::<usize>(), 0..8),
            dup in any::<prop::sample::Index>(),
            isn in any::<u32>(),
        ) {
            let hello = tls::tests::rustls_hello("seg.example.com", tls::tests::big_alpn(1600));
            let segs = split(&hello, &cuts);
            let dup = dup.index(segs.len());
            let mut p = AppProbe::new(TCP, 443);
            let mut seq = isn;
            let mut result = Probe::NeedMore;
            for (i, s) in segs.iter().enumerate() {
                result = p.feed(true, Some(seq), s, acct());
                if p.done() {
                    break;
                }
                if i == dup {
                    // An exact retransmit changes nothing (and counts once more).
                    prop_assert_eq!(p.feed(true, Some(seq), s, acct()), Probe::NeedMore);
                }
                seq = seq.wrapping_add(s.len() as u32);
            }
            prop_assert_eq!(result, sni("seg.example.com"));
        }

        #[test]
        fn any_segmentation_gives_the_http_host(cuts in prop::collection::vec(any::<usize>(), 0..9)) {
            let req = b"POST /upload HTTP/1.1\r\nContent-Type: text/plain\r\nHost: up.example\r\n\r\nbody";
            let segs = split(req, &cuts);
            let mut p = AppProbe::new(TCP, 80);
            let got = feed_tcp(&mut p, 1, &segs);
            let want = Probe::Found { host: "up.example".into(), how: How::HttpHost };
            prop_assert!(got.contains(&want));
        }

        #[test]
        fn corrupted_quic_never_panics(at in 0usize..1200, x in 1u8..=255) {
            let mut packet = quic::tests::unhex(quic::tests::A2_PACKET);
            packet[at] ^= x;
            let mut p = AppProbe::new(UDP, 443);
            let r = p.feed(true, None, &packet, acct());
            prop_assert_eq!(r, Probe::GiveUp, "byte {}", at);
        }
    }
}
