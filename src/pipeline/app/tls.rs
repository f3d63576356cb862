//! The server name (SNI) of a TLS ClientHello, from a TCP stream (TLS records) or
//! from a QUIC CRYPTO stream (bare handshake messages).
//!
//! A small hand parser rather than `tls-parser`: only a handful of length fields
//! are walked to reach one extension, nothing is allocated unless the ClientHello
//! spans several records, and a partial ClientHello yields the SNI as soon as its
//! extension has arrived. `tls-parser` decodes every extension into vectors and
//! brings nom, phf and a second syn into the build for that.

use super::Scan;

/// Handshake type of a ClientHello.
const CLIENT_HELLO: u8 = 1;
/// TLS record content type "handshake".
const HANDSHAKE: u8 = 22;
/// Largest record fragment allowed (2^14 plus the TLS 1.2 expansion allowance).
const MAX_RECORD: usize = 16384 + 2048;
/// Extension type server_name (RFC 6066).
const EXT_SERVER_NAME: u16 = 0;

/// Whether `prefix`, the first bytes of a client's stream, can start a TLS
/// handshake record: `Some(true)` yes, `Some(false)` no, `None` too short to say.
pub fn looks_like_tls(prefix: &[u8]) -> Option<bool> {
    let checks: [fn(u8) -> bool; 6] = [
        |b| b == HANDSHAKE,
        |b| b == 3,
        |b| b <= 4,
        |_| true,
        |_| true,
        |b| b == CLIENT_HELLO,
    ];
    for (b, ok) in prefix.iter().zip(checks) {
        if !ok(*b) {
            return Some(false);
        }
    }
    if prefix.len() >= checks.len() {
        Some(true)
    } else {
        None
    }
}

/// The SNI of the ClientHello at the start of `stream`, a client's TCP byte
/// stream (TLS records). Records are joined in `scratch` only when the
/// ClientHello does not fit in the first one.
pub fn record_sni<'a>(stream: &'a [u8], scratch: &'a mut Vec<u8>) -> Scan<'a> {
    match looks_like_tls(stream) {
        Some(false) => return Scan::Nothing,
        None if stream.len() < 5 => return Scan::More,
        _ => {}
    }
    let len = usize::from(u16::from_be_bytes([stream[3], stream[4]]));
    if len == 0 || len > MAX_RECORD {
        return Scan::Nothing;
    }
    let end = 5 + len;
    let first = &stream[5..end.min(stream.len())];
    let scan = handshake_sni(first);
    if !matches!(scan, Scan::More) || stream.len() <= end {
        return scan;
    }
    // The ClientHello continues in later records: join their fragments.
    scratch.clear();
    scratch.extend_from_slice(first);
    let mut pos = end;
    while pos + 5 <= stream.len() {
        let h = &stream[pos..pos + 5];
        let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
        if h[0] != HANDSHAKE || h[1] != 3 || len == 0 || len > MAX_RECORD {
            // Not a continuation: what was joined is all there will be.
            break;
        }
        let frag_end = (pos + 5 + len).min(stream.len());
        scratch.extend_from_slice(&stream[pos + 5..frag_end]);
        pos += 5 + len;
    }
    let joined: &'a Vec<u8> = scratch;
    handshake_sni(joined)
}

/// The SNI of the ClientHello at the start of `msg`, handshake messages without
/// the record layer (a QUIC CRYPTO stream), possibly cut short.
pub fn handshake_sni(msg: &[u8]) -> Scan<'_> {
    match client_hello(msg) {
        Ok(Some(host)) => Scan::Host(host),
        Ok(None) => Scan::Nothing,
        Err(Stop::Short) => Scan::More,
        Err(Stop::Bad) => Scan::Nothing,
    }
}

/// Why the walk stopped before an answer.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    /// The bytes end before the structure does: more may come.
    Short,
    /// The structure is inconsistent.
    Bad,
}

/// A cursor over bytes that may be cut short. `end` is where the enclosing
/// structure ends by its length field: reads past it are `Bad`, reads past the
/// data (but within `end`) are `Short`.
struct Cur<'a> {
    data: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Stop> {
        let to = self.pos.checked_add(n).ok_or(Stop::Bad)?;
        if to > self.end {
            return Err(Stop::Bad);
        }
        let s = self.data.get(self.pos..to).ok_or(Stop::Short)?;
        self.pos = to;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, Stop> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Stop> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Skips `n` bytes without needing them to be present.
    fn skip(&mut self, n: usize) -> Result<(), Stop> {
        let to = self.pos.checked_add(n).ok_or(Stop::Bad)?;
        if to > self.end {
            return Err(Stop::Bad);
        }
        self.pos = to;
        Ok(())
    }

    /// A cursor over the next `n` bytes, which this one skips.
    fn sub(&mut self, n: usize) -> Result<Cur<'a>, Stop> {
        let start = self.pos;
        self.skip(n)?;
        Ok(Cur {
            data: self.data,
            pos: start,
            end: self.pos,
        })
    }

    fn at_end(&self) -> bool {
        self.pos >= self.end
    }
}

/// Walks a ClientHello to its server_name extension. `Ok(None)`: a ClientHello
/// without a usable host name.
fn client_hello(msg: &[u8]) -> Result<Option<&str>, Stop> {
    let mut c = Cur {
        data: msg,
        pos: 0,
        end: usize::MAX,
    };
    if c.u8()? != CLIENT_HELLO {
        return Err(Stop::Bad);
    }
    let len = c.take(3)?;
    let len = usize::from(len[0]) << 16 | usize::from(len[1]) << 8 | usize::from(len[2]);
    let mut c = c.sub(len)?;
    if c.u8()? != 3 {
        return Err(Stop::Bad); // legacy_version major
    }
    c.skip(1 + 32)?; // legacy_version minor, random
    let sid = c.u8()?;
    if sid > 32 {
        return Err(Stop::Bad);
    }
    c.skip(usize::from(sid))?;
    let suites = c.u16()?;
    if suites < 2 || suites % 2 != 0 {
        return Err(Stop::Bad);
    }
    c.skip(usize::from(suites))?;
    let comp = c.u8()?;
    if comp == 0 {
        return Err(Stop::Bad);
    }
    c.skip(usize::from(comp))?;
    if c.at_end() {
        return Ok(None); // no extensions at all
    }
    let ext_len = c.u16()?;
    let mut exts = c.sub(usize::from(ext_len))?;
    while !exts.at_end() {
        let typ = exts.u16()?;
        let len = exts.u16()?;
        let mut ext = exts.sub(usize::from(len))?;
        if typ == EXT_SERVER_NAME {
            return server_name(&mut ext);
        }
    }
    Ok(None)
}

/// The host_name entry of a server_name extension body.
fn server_name<'a>(ext: &mut Cur<'a>) -> Result<Option<&'a str>, Stop> {
    let list_len = ext.u16()?;
    let mut list = ext.sub(usize::from(list_len))?;
    while !list.at_end() {
        let typ = list.u8()?;
        let len = list.u16()?;
        let name = list.take(usize::from(len))?;
        if typ == 0 {
            return Ok(valid_host(name));
        }
    }
    Ok(None)
}

/// `name` as a host name if it is one (letters, digits, `-`, `_`, `.`).
pub(crate) fn valid_host(name: &[u8]) -> Option<&str> {
    let name = name.strip_suffix(b".").unwrap_or(name);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    // All ASCII, so always UTF-8.
    ok.then(|| std::str::from_utf8(name).ok()).flatten()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Arc;

    /// A real ClientHello (TLS records) as rustls sends it for `host`, with
    /// `alpn` protocols to make it as large as a test needs.
    pub(crate) fn rustls_hello(host: &str, alpn: Vec<Vec<u8>>) -> Vec<u8> {
        use rustls::pki_types::ServerName;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn;
        let name = ServerName::try_from(host.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    }

    /// Enough ALPN protocols to push a ClientHello past `bytes`.
    pub(crate) fn big_alpn(bytes: usize) -> Vec<Vec<u8>> {
        (0..bytes / 200 + 1)
            .map(|i| format!("proto-{i:03}-{}", "x".repeat(190)).into_bytes())
            .collect()
    }

    /// A ClientHello handshake message (no record layer) built by hand, shaped
    /// like a post-quantum browser hello: a GREASE extension, a 1.2 KB key share
    /// and the server_name extension last.
    pub(crate) fn pq_hello(host: &str) -> Vec<u8> {
        fn ext(out: &mut Vec<u8>, typ: u16, body: &[u8]) {
            out.extend_from_slice(&typ.to_be_bytes());
            out.extend_from_slice(&(body.len() as u16).to_be_bytes());
            out.extend_from_slice(body);
        }
        let mut exts = Vec::new();
        ext(&mut exts, 0x0a0a, &[]);
        ext(&mut exts, 0x002b, &[4, 3, 4, 3, 3]);
        let mut ks = Vec::new();
        let share = [0x5au8; 1216 + 32];
        ks.extend_from_slice(&((share.len() + 4) as u16).to_be_bytes());
        ks.extend_from_slice(&0x11ecu16.to_be_bytes());
        ks.extend_from_slice(&(share.len() as u16).to_be_bytes());
        ks.extend_from_slice(&share);
        ext(&mut exts, 0x0033, &ks);
        ext(&mut exts, 0xfe0d, &[0x33; 200]); // an ECH GREASE-sized blob
        ext(&mut exts, 0x0015, &[0; 160]); // padding
        let mut sni = Vec::new();
        sni.extend_from_slice(&((host.len() + 3) as u16).to_be_bytes());
        sni.push(0);
        sni.extend_from_slice(&(host.len() as u16).to_be_bytes());
        sni.extend_from_slice(host.as_bytes());
        ext(&mut exts, 0, &sni);

        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(32);
        body.extend_from_slice(&[9; 32]);
        body.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02, 1, 0]);
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut msg = vec![CLIENT_HELLO];
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend_from_slice(&body);
        msg
    }

    /// `msg` in TLS records of at most `max` fragment bytes.
    pub(crate) fn in_records(msg: &[u8], max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for frag in msg.chunks(max) {
            out.extend_from_slice(&[HANDSHAKE, 3, 1]);
            out.extend_from_slice(&(frag.len() as u16).to_be_bytes());
            out.extend_from_slice(frag);
        }
        out
    }

    fn sni(stream: &[u8]) -> Scan<'_> {
        // Leaks the scratch so the answer can borrow it; tests only.
        let scratch = Box::leak(Box::new(Vec::new()));
        record_sni(stream, scratch)
    }

    #[test]
    fn rustls_client_hello() {
        let hello = rustls_hello("www.example.com", vec![b"h2".to_vec()]);
        assert_eq!(sni(&hello), Scan::Host("www.example.com"));
        // Every cut short of the extension asks for more; none is refused. (The
        // extension order is random, so the SNI may only be whole at the end.)
        let mut found_at = None;
        for n in 0..=hello.len() {
            match sni(&hello[..n]) {
                Scan::More => {}
                Scan::Host(h) => {
                    assert_eq!(h, "www.example.com");
                    found_at.get_or_insert(n);
                }
                Scan::Nothing => panic!("refused a prefix of {n} bytes"),
            }
        }
        assert!(found_at.is_some());
    }

    #[test]
    fn large_rustls_client_hello() {
        let hello = rustls_hello("big.example.org", big_alpn(1600));
        assert!(hello.len() > 1500, "{}", hello.len());
        assert_eq!(sni(&hello), Scan::Host("big.example.org"));
    }

    #[test]
    fn hello_over_several_records() {
        let msg = pq_hello("pq.example.net");
        assert!(msg.len() > 1500);
        assert_eq!(handshake_sni(&msg), Scan::Host("pq.example.net"));
        for max in [1, 100, 1000, 1400] {
            let stream = in_records(&msg, max);
            assert_eq!(
                sni(&stream),
                Scan::Host("pq.example.net"),
                "records of {max}"
            );
            assert_eq!(sni(&stream[..stream.len() - 1]), Scan::More);
        }
    }

    #[test]
    fn no_sni_and_garbage() {
        // rustls sends no SNI for an IP address.
        let hello = rustls_hello("192.0.2.1", vec![]);
        assert_eq!(sni(&hello), Scan::Nothing);
        assert_eq!(sni(b"GET / HTTP/1.1\r\n"), Scan::Nothing);
        assert_eq!(sni(&[22, 3, 1]), Scan::More);
        assert_eq!(sni(&[22, 3, 9]), Scan::Nothing);
        assert_eq!(sni(&[22, 3, 1, 0, 0]), Scan::Nothing);
        assert_eq!(sni(&[22, 3, 1, 0, 10, 2]), Scan::Nothing);
        // A ClientHello whose length runs past its record's declared bounds.
        assert_eq!(handshake_sni(&[1, 0, 0, 2, 3, 3, 0]), Scan::Nothing);
        assert_eq!(handshake_sni(&[1, 0xff, 0xff, 0xff]), Scan::More);
    }

    #[test]
    fn host_validation() {
        assert_eq!(valid_host(b"a.example."), Some("a.example"));
        assert_eq!(valid_host(b"a example"), None);
        assert_eq!(valid_host(b""), None);
        assert_eq!(valid_host("é.com".as_bytes()), None);
    }
}
