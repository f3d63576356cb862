//! Names from DNS: the addresses a DNS response gives for the name the client
//! asked, and a bounded cache from address to that name, so that a later flow
//! to the address can be named even when it shows no host itself.

use super::stream::{Charge, Stream, Take};
use simple_dns::rdata::RData;
use simple_dns::{Name, Packet, PacketFlag, RCODE};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Most CNAME hops followed from the question name.
const MAX_CNAME_HOPS: usize = 16;

/// What a DNS response answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsAnswer {
    /// The question name, lower case, without a trailing dot.
    pub name: String,
    /// The A and AAAA answers for it (directly or through CNAMEs), with TTLs.
    pub addrs: Vec<(IpAddr, u32)>,
}

/// Parses a DNS response (a UDP payload from port 53) and returns the question
/// name with the addresses answered for it, or None if it is not a successful
/// response with at least one address.
pub fn parse_response(payload: &[u8]) -> Option<DnsAnswer> {
    let packet = Packet::parse(payload).ok()?;
    if !packet.has_flags(PacketFlag::RESPONSE) || packet.rcode() != RCODE::NoError {
        return None;
    }
    let [question] = packet.questions.as_slice() else {
        return None; // servers answer one question; anything else is odd
    };
    // The names that stand for the question: itself and its CNAME targets.
    // Name equality is case-insensitive.
    let mut aliases: Vec<&Name<'_>> = vec![&question.qname];
    for _ in 0..MAX_CNAME_HOPS {
        let before = aliases.len();
        for rr in &packet.answers {
            if let RData::CNAME(target) = &rr.rdata
                && aliases.contains(&&rr.name)
                && !aliases.contains(&&target.0)
            {
                aliases.push(&target.0);
            }
        }
        if aliases.len() == before {
            break;
        }
    }
    let addrs: Vec<(IpAddr, u32)> = packet
        .answers
        .iter()
        .filter(|rr| aliases.contains(&&rr.name))
        .filter_map(|rr| match &rr.rdata {
            RData::A(a) => Some((IpAddr::V4(Ipv4Addr::from(a.address)), rr.ttl)),
            RData::AAAA(a) => Some((IpAddr::V6(Ipv6Addr::from(a.address)), rr.ttl)),
            _ => None,
        })
        .collect();
    if addrs.is_empty() {
        return None;
    }
    let mut name = question.qname.to_string();
    name.make_ascii_lowercase();
    if name.ends_with('.') {
        name.pop();
    }
    Some(DnsAnswer { name, addrs })
}

#[derive(Debug)]
struct Entry {
    name: Box<str>,
    /// Seconds (caller's clock) after which the entry is stale.
    expiry: u64,
    /// Insertion number, to tell the live queue slot from stale ones.
    seq: u64,
}

/// Address-to-name cache, bounded; the oldest insertion goes first when full.
/// Time is whatever seconds counter the caller passes in. Not synchronised: the
/// caller wraps it in a lock if it is shared.
#[derive(Debug)]
pub struct DnsCache {
    capacity: usize,
    map: HashMap<IpAddr, Entry>,
    /// Insertion order; slots whose seq no longer matches the map are stale.
    order: VecDeque<(IpAddr, u64)>,
    seq: u64,
}

impl DnsCache {
    /// A cache of at most `capacity` addresses (0 caches nothing).
    pub fn new(capacity: usize) -> DnsCache {
        DnsCache {
            capacity,
            map: HashMap::with_capacity(capacity.min(4096)),
            order: VecDeque::with_capacity(capacity.min(4096)),
            seq: 0,
        }
    }

    /// Remembers that `ip` is `name` for `ttl_secs` from `now_secs`. A TTL of 0
    /// is not cached. Re-inserting an address refreshes it.
    pub fn insert(&mut self, ip: IpAddr, name: &str, ttl_secs: u32, now_secs: u64) {
        if self.capacity == 0 || ttl_secs == 0 {
            return;
        }
        self.seq += 1;
        let entry = Entry {
            name: name.into(),
            expiry: now_secs.saturating_add(u64::from(ttl_secs)),
            seq: self.seq,
        };
        if self.map.insert(ip, entry).is_none() {
            while self.map.len() > self.capacity {
                self.evict_oldest();
            }
        }
        self.order.push_back((ip, self.seq));
        // Refreshes leave stale slots behind: drop them before they pile up.
        if self.order.len() > 2 * self.capacity + 16 {
            let map = &self.map;
            self.order
                .retain(|(ip, seq)| map.get(ip).is_some_and(|e| e.seq == *seq));
        }
    }

    /// The name of `ip`, if cached and not expired at `now_secs`.
    pub fn lookup(&self, ip: IpAddr, now_secs: u64) -> Option<&str> {
        self.map
            .get(&ip)
            .filter(|e| now_secs < e.expiry)
            .map(|e| &*e.name)
    }

    /// How many addresses are cached (expired ones included until evicted).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn evict_oldest(&mut self) {
        while let Some((ip, seq)) = self.order.pop_front() {
            if self.map.get(&ip).is_some_and(|e| e.seq == seq) {
                self.map.remove(&ip);
                return;
            }
        }
    }
}

/// A DNS message as far as matching answers to queries needs: its id, whether
/// it is a response, and the message itself (a UDP payload, or one message of
/// a TCP stream without its length prefix).
pub fn message(msg: &[u8]) -> Option<(u16, bool, &[u8])> {
    let id = u16::from_be_bytes([*msg.first()?, *msg.get(1)?]);
    let response = msg.get(2)? & 0x80 != 0;
    (msg.len() >= 12).then_some((id, response, msg))
}

/// Bytes of a DNS over TCP stream held at most: one whole message of up to
/// this size (most are far smaller) and its length prefix.
pub const TCP_WINDOW: usize = 16 * 1024;

/// DNS state of one flow: the queries awaiting answers and, over TCP, each
/// direction's stream put in order, so an answer split over segments, or
/// arriving out of order, is read whole.
#[derive(Debug, Default)]
pub struct DnsFlow {
    /// Queries not answered yet.
    pub pending: PendingQueries,
    /// Sequence number of each side's first byte, from its SYN: towards the
    /// server (queries), towards the client (answers).
    isn: [Option<u32>; 2],
    streams: [Option<Stream>; 2],
    /// A message too large to hold came: that direction is no longer read.
    lost: [bool; 2],
}

impl DnsFlow {
    /// A SYN (or SYN-ACK) towards the server or the client, with its
    /// sequence number.
    pub fn syn(&mut self, to_server: bool, seq: u32) {
        let d = usize::from(!to_server);
        if self.streams[d].is_none() {
            self.isn[d] = Some(seq.wrapping_add(1));
        }
    }

    /// One TCP segment towards the server or the client: what became of it
    /// and the whole messages it completed, in order, without their prefixes.
    pub fn segment(
        &mut self,
        to_server: bool,
        seq: u32,
        payload: &[u8],
        account: super::Account<'_>,
    ) -> (Take, Vec<Vec<u8>>) {
        let d = usize::from(!to_server);
        if self.lost[d] {
            return (Take::Old, Vec::new());
        }
        let start = *self.isn[d].get_or_insert(seq);
        let stream = self.streams[d].get_or_insert_with(|| {
            Stream::new(
                start,
                TCP_WINDOW,
                Charge::new(account.budget, account.workload),
            )
        });
        let take = stream.take(seq, payload);
        let mut out = Vec::new();
        while let [hi, lo, ..] = *stream.data() {
            let len = 2 + usize::from(u16::from_be_bytes([hi, lo]));
            if len > TCP_WINDOW {
                self.lost[d] = true;
                self.streams[d] = None;
                break;
            }
            let Some(msg) = stream.data().get(2..len) else {
                break;
            };
            out.push(msg.to_vec());
            stream.consume(len);
        }
        (take, out)
    }
}

/// Queries a workload sent on one flow and not answered yet: an answer is
/// believed only when it matches one (same flow, same id, in time).
#[derive(Clone, Debug, Default)]
pub struct PendingQueries(Vec<(u16, u64)>);

/// Queries remembered per flow; a resolver answers in order, so few suffice.
const PENDING: usize = 16;

/// How long an answer may take.
pub const ANSWER_WITHIN_MS: u64 = 5_000;

impl PendingQueries {
    /// The workload asked query `id` at `now_ms`.
    pub fn asked(&mut self, id: u16, now_ms: u64) {
        self.0
            .retain(|&(q, t)| q != id && now_ms.saturating_sub(t) <= ANSWER_WITHIN_MS);
        if self.0.len() == PENDING {
            self.0.remove(0);
        }
        self.0.push((id, now_ms));
    }

    /// Whether an answer with `id` at `now_ms` answers a query; it is used up.
    pub fn answered(&mut self, id: u16, now_ms: u64) -> bool {
        match self
            .0
            .iter()
            .position(|&(q, t)| q == id && now_ms.saturating_sub(t) <= ANSWER_WITHIN_MS)
        {
            Some(i) => {
                self.0.remove(i);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::rdata::{A, AAAA, CNAME};
    use simple_dns::{CLASS, QTYPE, Question, ResourceRecord, TYPE};

    fn rr<'a>(name: &'a str, ttl: u32, rdata: RData<'a>) -> ResourceRecord<'a> {
        ResourceRecord::new(Name::new_unchecked(name), CLASS::IN, ttl, rdata)
    }

    fn response(answers: Vec<ResourceRecord<'_>>) -> Vec<u8> {
        let mut p = Packet::new_reply(7);
        p.questions.push(Question::new(
            Name::new_unchecked("WWW.Video.example"),
            QTYPE::TYPE(TYPE::A),
            simple_dns::QCLASS::CLASS(CLASS::IN),
            false,
        ));
        p.answers = answers;
        p.build_bytes_vec_compressed().unwrap()
    }

    #[test]
    fn cname_chain_attributes_to_question() {
        let bytes = response(vec![
            rr(
                "www.video.example",
                300,
                RData::CNAME(CNAME(Name::new_unchecked("edge.cdn.example"))),
            ),
            rr(
                "EDGE.cdn.example",
                60,
                RData::CNAME(CNAME(Name::new_unchecked("node7.cdn.example"))),
            ),
            rr(
                "node7.cdn.example",
                20,
                RData::A(A {
                    address: 0xc000_0201,
                }),
            ),
            rr(
                "node7.cdn.example",
                30,
                RData::AAAA(AAAA {
                    address: 0x2001_0db8_0000_0000_0000_0000_0000_0001,
                }),
            ),
            // An unrelated address must not be attributed.
            rr(
                "other.example",
                20,
                RData::A(A {
                    address: 0xc000_0202,
                }),
            ),
        ]);
        let a = parse_response(&bytes).unwrap();
        assert_eq!(a.name, "www.video.example");
        assert_eq!(
            a.addrs,
            vec![
                ("192.0.2.1".parse().unwrap(), 20),
                ("2001:db8::1".parse().unwrap(), 30)
            ]
        );
    }

    #[test]
    fn cname_loop_terminates() {
        let bytes = response(vec![
            rr(
                "www.video.example",
                1,
                RData::CNAME(CNAME(Name::new_unchecked("b.example"))),
            ),
            rr(
                "b.example",
                1,
                RData::CNAME(CNAME(Name::new_unchecked("www.video.example"))),
            ),
        ]);
        assert_eq!(parse_response(&bytes), None);
    }

    #[test]
    fn queries_and_garbage_are_ignored() {
        let mut q = Packet::new_query(1);
        q.questions.push(Question::new(
            Name::new_unchecked("a.example"),
            QTYPE::TYPE(TYPE::A),
            simple_dns::QCLASS::CLASS(CLASS::IN),
            false,
        ));
        assert_eq!(parse_response(&q.build_bytes_vec().unwrap()), None);
        assert_eq!(parse_response(b""), None);
        assert_eq!(parse_response(&[0xff; 40]), None);
    }

    #[test]
    fn cache_expires_and_evicts_oldest() {
        let ip = |n: u8| IpAddr::from([10, 0, 0, n]);
        let mut c = DnsCache::new(2);
        c.insert(ip(1), "one", 10, 100);
        c.insert(ip(2), "two", 10, 100);
        assert_eq!(c.lookup(ip(1), 109), Some("one"));
        assert_eq!(c.lookup(ip(1), 110), None);
        c.insert(ip(3), "three", 10, 100);
        assert_eq!(c.len(), 2);
        assert_eq!(c.lookup(ip(1), 100), None);
        assert_eq!(c.lookup(ip(2), 100), Some("two"));
        // A refresh makes ip 2 the newest: ip 3 goes next.
        c.insert(ip(2), "two", 10, 100);
        c.insert(ip(4), "four", 10, 100);
        assert_eq!(c.lookup(ip(3), 100), None);
        assert_eq!(c.lookup(ip(2), 100), Some("two"));
        // Many refreshes keep the queue bounded.
        for t in 0..1000 {
            c.insert(ip(2), "two", 10, t);
        }
        assert!(c.order.len() <= 2 * 2 + 16);
        assert_eq!(c.len(), 2);
        c.insert(ip(5), "zero", 0, 0);
        assert_eq!(c.lookup(ip(5), 0), None);
        let mut none = DnsCache::new(0);
        none.insert(ip(1), "x", 5, 0);
        assert!(none.is_empty());
    }
}
