//! The ClientHello of a QUIC v1 connection (RFC 9000, RFC 9001): client Initial
//! packets are protected with keys anyone can derive from the packet's
//! Destination Connection ID, so their CRYPTO frames can be read and joined.

use super::Scan;
use super::tls;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, quic as hp};
use ring::hkdf;

/// QUIC version 1.
const VERSION_1: u32 = 1;
/// Initial salt of QUIC v1 (RFC 9001 5.2).
const INITIAL_SALT_V1: [u8; 20] = [
    0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad,
    0xcc, 0xbb, 0x7f, 0x0a,
];
/// Longest connection ID in QUIC v1.
const MAX_CID: usize = 20;
/// AEAD tag length of AES-128-GCM.
const TAG: usize = 16;
/// Largest Initial packet decrypted. Clients send 1200 to ~1500 bytes; the
/// bound keeps the decryption buffer plus the CRYPTO stream within 16 KiB.
pub const MAX_INITIAL: usize = 4 * 1024;
/// Highest CRYPTO stream offset kept.
pub const MAX_CRYPTO: usize = 12 * 1024;
/// Most disjoint CRYPTO ranges held at once.
const MAX_RANGES: usize = 16;
/// Most packets looked at in one datagram (coalesced packets).
const MAX_COALESCED: usize = 4;

/// The client's Initial packet protection keys for one connection ID.
pub struct InitialKeys {
    dcid: [u8; MAX_CID],
    dcid_len: u8,
    key: LessSafeKey,
    iv: [u8; 12],
    hp: hp::HeaderProtectionKey,
}

impl std::fmt::Debug for InitialKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitialKeys")
            .field("dcid", &self.dcid())
            .finish_non_exhaustive()
    }
}

/// A raw HKDF output length (for the IV).
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-Expand-Label (RFC 8446 7.1) with an empty context, handed to `into`.
fn expand_label<L: hkdf::KeyType, T>(
    prk: &hkdf::Prk,
    label: &[u8],
    kind: L,
    into: impl FnOnce(hkdf::Okm<'_, L>) -> T,
) -> T {
    let out_len = (kind.len() as u16).to_be_bytes();
    let label_len = [(b"tls13 ".len() + label.len()) as u8];
    let info: [&[u8]; 5] = [&out_len, &label_len, b"tls13 ", label, &[0]];
    // Only fails for outputs over 255 hash lengths; ours are at most 32 bytes.
    into(prk.expand(&info, kind).expect("short HKDF output"))
}

impl InitialKeys {
    /// The keys protecting the client's Initial packets sent to `dcid` (at most
    /// 20 bytes; longer is cut, and will not decrypt anything).
    pub fn client(dcid: &[u8]) -> InitialKeys {
        let dcid = &dcid[..dcid.len().min(MAX_CID)];
        let initial = hkdf::Salt::new(hkdf::HKDF_SHA256, &INITIAL_SALT_V1).extract(dcid);
        let secret: hkdf::Prk =
            expand_label(&initial, b"client in", hkdf::HKDF_SHA256, |okm| okm.into());
        let key = expand_label(&secret, b"quic key", &aead::AES_128_GCM, |okm| {
            LessSafeKey::new(UnboundKey::from(okm))
        });
        let iv = expand_label(&secret, b"quic iv", Len(12), |okm| {
            let mut iv = [0u8; 12];
            okm.fill(&mut iv).expect("12-byte IV");
            iv
        });
        let hp = expand_label(&secret, b"quic hp", &hp::AES_128, |okm| okm.into());
        let mut id = [0u8; MAX_CID];
        id[..dcid.len()].copy_from_slice(dcid);
        InitialKeys {
            dcid: id,
            dcid_len: dcid.len() as u8,
            key,
            iv,
            hp,
        }
    }

    fn dcid(&self) -> &[u8] {
        &self.dcid[..usize::from(self.dcid_len)]
    }

    fn nonce(&self, pn: u64) -> Nonce {
        let mut n = self.iv;
        for (b, p) in n[4..].iter_mut().zip(pn.to_be_bytes()) {
            *b ^= p;
        }
        Nonce::assume_unique_for_key(n)
    }

    /// Removes header protection from `packet` (one Initial, header included,
    /// whose packet number starts at `pn_offset`) and decrypts it in place.
    /// Returns the plaintext frames, or None if it does not authenticate.
    pub fn open<'p>(&self, packet: &'p mut [u8], pn_offset: usize) -> Option<&'p mut [u8]> {
        let sample = packet.get(pn_offset + 4..pn_offset + 4 + 16)?;
        let mask = self.hp.new_mask(sample).ok()?;
        packet[0] ^= mask[0] & 0x0f;
        let pn_len = usize::from(packet[0] & 0x03) + 1;
        let mut pn = 0u64;
        for i in 0..pn_len {
            packet[pn_offset + i] ^= mask[1 + i];
            pn = pn << 8 | u64::from(packet[pn_offset + i]);
        }
        let (header, payload) = packet.split_at_mut(pn_offset + pn_len);
        // The client's first packet numbers are small, so the truncated number
        // is the full one.
        let plain = self
            .key
            .open_in_place(self.nonce(pn), Aad::from(&*header), payload)
            .ok()?;
        Some(plain)
    }
}

/// A QUIC variable-length integer at `*pos`, advancing it.
fn varint(d: &[u8], pos: &mut usize) -> Option<u64> {
    let first = *d.get(*pos)?;
    let len = 1usize << (first >> 6);
    let bytes = d.get(*pos..*pos + len)?;
    let v = bytes[1..]
        .iter()
        .fold(u64::from(first & 0x3f), |v, &b| v << 8 | u64::from(b));
    *pos += len;
    Some(v)
}

/// A varint that must fit the data (a length or an offset).
fn varsize(d: &[u8], pos: &mut usize) -> Option<usize> {
    usize::try_from(varint(d, pos)?).ok()
}

/// Where a long-header packet lies in a datagram.
struct Long {
    /// Packet type bits (0 Initial, 1 0-RTT, 2 Handshake, 3 Retry).
    kind: u8,
    /// Destination connection ID, as a range of the datagram.
    dcid: std::ops::Range<usize>,
    /// Offset of the packet number in the datagram (Initial only).
    pn_offset: usize,
    /// End of this packet in the datagram.
    end: usize,
}

/// Parses the QUIC v1 long header starting at `d[start]`.
fn long_header(d: &[u8], start: usize) -> Option<Long> {
    let first = *d.get(start)?;
    if first & 0x80 == 0 {
        return None;
    }
    let version = u32::from_be_bytes(d.get(start + 1..start + 5)?.try_into().ok()?);
    if version != VERSION_1 {
        return None;
    }
    let kind = (first >> 4) & 0x03;
    let mut pos = start + 5;
    let dcid_len = usize::from(*d.get(pos)?);
    if dcid_len > MAX_CID {
        return None;
    }
    let dcid = pos + 1..pos + 1 + dcid_len;
    pos = dcid.end;
    let scid_len = usize::from(*d.get(pos)?);
    if scid_len > MAX_CID {
        return None;
    }
    pos += 1 + scid_len;
    if kind == 3 {
        return None; // Retry comes from servers only
    }
    if kind == 0 {
        let token = varsize(d, &mut pos)?;
        pos = pos.checked_add(token)?;
    }
    let len = varsize(d, &mut pos)?;
    let end = pos.checked_add(len)?;
    if end > d.len() {
        return None;
    }
    Some(Long {
        kind,
        dcid,
        pn_offset: pos,
        end,
    })
}

/// What one client datagram was to the reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datagram {
    /// It held an Initial whose CRYPTO frames were taken.
    Initial,
    /// Nothing for us (0-RTT, an Initial that did not decrypt).
    Ignored,
    /// Not QUIC v1, or the client is past its ClientHello: stop.
    Stop,
}

/// The client's CRYPTO stream as far as received, with the ranges held.
#[derive(Debug, Default)]
struct CryptoStream {
    data: Vec<u8>,
    /// Disjoint, sorted, non-adjacent [start, end) ranges held.
    have: Vec<(usize, usize)>,
}

impl CryptoStream {
    /// Places `bytes` at `offset`. Err if past the bounds.
    fn insert(&mut self, offset: usize, bytes: &[u8]) -> Result<(), ()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let end = offset.checked_add(bytes.len()).ok_or(())?;
        if end > MAX_CRYPTO {
            return Err(());
        }
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[offset..end].copy_from_slice(bytes);
        // Merge [offset, end) into the sorted range list.
        let (mut lo, mut hi) = (offset, end);
        self.have.retain(|&(s, e)| {
            let touches = s <= hi && lo <= e;
            if touches {
                lo = lo.min(s);
                hi = hi.max(e);
            }
            !touches
        });
        let at = self.have.partition_point(|&(s, _)| s < lo);
        self.have.insert(at, (lo, hi));
        if self.have.len() > MAX_RANGES {
            return Err(());
        }
        Ok(())
    }

    /// The bytes held from offset 0 without a gap.
    fn contiguous(&self) -> &[u8] {
        match self.have.first() {
            Some(&(0, end)) => &self.data[..end],
            _ => &[],
        }
    }
}

/// Reads the client's ClientHello out of its Initial packets, one datagram at
/// a time.
#[derive(Debug, Default)]
pub struct InitialReader {
    keys: Option<InitialKeys>,
    crypto: CryptoStream,
    /// Decryption buffer, kept between datagrams.
    scratch: Vec<u8>,
}

impl InitialReader {
    /// A reader that has seen nothing.
    pub fn new() -> InitialReader {
        InitialReader::default()
    }

    /// Takes one client datagram. `first`: the flow's first client datagram,
    /// which must be a QUIC v1 Initial that decrypts.
    pub fn datagram(&mut self, d: &[u8], first: bool) -> Datagram {
        let mut pos = 0;
        let mut seen = Datagram::Ignored;
        for _ in 0..MAX_COALESCED {
            if pos >= d.len() || d[pos] & 0x80 == 0 {
                // A short header (1-RTT) or padding after the last packet.
                if pos == 0 {
                    return Datagram::Stop; // the client has finished its hello
                }
                break;
            }
            let Some(p) = long_header(d, pos) else {
                if pos == 0 {
                    return Datagram::Stop;
                }
                break;
            };
            pos = p.end;
            match p.kind {
                0 => match self.initial(d, &p) {
                    Ok(true) => seen = Datagram::Initial,
                    Ok(false) => {}
                    Err(()) => return Datagram::Stop,
                },
                // A Handshake packet: the ClientHello is all sent already.
                2 => return Datagram::Stop,
                _ => {} // 0-RTT
            }
        }
        if first && seen != Datagram::Initial {
            return Datagram::Stop;
        }
        seen
    }

    /// Decrypts one Initial and takes its CRYPTO frames. Ok(false): it did not
    /// decrypt. Err: its CRYPTO data is past the bounds.
    fn initial(&mut self, d: &[u8], p: &Long) -> Result<bool, ()> {
        let start = p.dcid.start - 6;
        let packet = &d[start..p.end];
        if packet.len() > MAX_INITIAL {
            return Ok(false);
        }
        let dcid = &d[p.dcid.clone()];
        let pn_offset = p.pn_offset - start;
        // Keys come from the DCID of the client's first Initial, and later
        // Initials keep them even after the DCID changes; after a Retry the
        // new DCID gives new keys.
        let keys = self.keys.get_or_insert_with(|| InitialKeys::client(dcid));
        let mut plain = open_into(&mut self.scratch, packet, pn_offset, keys);
        if plain.is_none() && keys.dcid() != dcid {
            let fresh = InitialKeys::client(dcid);
            plain = open_into(&mut self.scratch, packet, pn_offset, &fresh);
            if plain.is_some() {
                self.keys = Some(fresh);
            }
        }
        let Some(range) = plain else {
            return Ok(false);
        };
        frames(&self.scratch[range], &mut self.crypto).map(|()| true)
    }

    /// The SNI of the CRYPTO stream received so far.
    pub fn sni(&self) -> Scan<'_> {
        match self.crypto.contiguous() {
            [] => Scan::More,
            hello => tls::handshake_sni(hello),
        }
    }
}

/// Decrypts `packet` into `scratch`; the plaintext's range in it.
fn open_into(
    scratch: &mut Vec<u8>,
    packet: &[u8],
    pn_offset: usize,
    keys: &InitialKeys,
) -> Option<std::ops::Range<usize>> {
    scratch.clear();
    scratch.extend_from_slice(packet);
    let len = keys.open(scratch, pn_offset)?.len();
    let start = packet.len() - TAG - len;
    Some(start..start + len)
}

/// Walks the frames of a decrypted Initial, keeping CRYPTO data. Frames not
/// allowed in an Initial end the walk (what came before is kept).
fn frames(p: &[u8], crypto: &mut CryptoStream) -> Result<(), ()> {
    let mut pos = 0;
    while pos < p.len() {
        let Some(kind) = varint(p, &mut pos) else {
            return Ok(());
        };
        match kind {
            0x00 => {
                // PADDING: skip the whole run at once.
                pos += p[pos..].iter().take_while(|&&b| b == 0).count();
            }
            0x01 => {} // PING
            0x02 | 0x03 => {
                // ACK: largest, delay, range count, first range, ranges, ECN.
                let walk = |pos: &mut usize| -> Option<()> {
                    varint(p, pos)?;
                    varint(p, pos)?;
                    let ranges = varint(p, pos)?;
                    varint(p, pos)?;
                    // Each range takes at least 2 bytes: the data bounds the loop.
                    for _ in 0..ranges.min(p.len() as u64) {
                        varint(p, pos)?;
                        varint(p, pos)?;
                    }
                    if kind == 0x03 {
                        for _ in 0..3 {
                            varint(p, pos)?;
                        }
                    }
                    Some(())
                };
                if walk(&mut pos).is_none() {
                    return Ok(());
                }
            }
            0x06 => {
                let (Some(offset), Some(len)) = (varsize(p, &mut pos), varsize(p, &mut pos)) else {
                    return Ok(());
                };
                let Some(data) = pos.checked_add(len).and_then(|end| p.get(pos..end)) else {
                    return Ok(());
                };
                pos += len;
                crypto.insert(offset, data)?;
            }
            // CONNECTION_CLOSE or a frame an Initial may not carry.
            _ => return Ok(()),
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn unhex(s: &str) -> Vec<u8> {
        let s: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        s.chunks(2)
            .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
            .collect()
    }

    /// RFC 9001 A.2: the client's CRYPTO frame (the rest of the payload is PADDING).
    const A2_FRAMES: &str = "
        060040f1010000ed0303ebf8fa56f12939b9584a3896472ec40bb863cfd3e868
        04fe3a47f06a2b69484c00000413011302010000c000000010000e00000b6578
        616d706c652e636f6dff01000100000a00080006001d00170018001000070005
        04616c706e000500050100000000003300260024001d00209370b2c9caa47fba
        baf4559fedba753de171fa71f50f1ce15d43e994ec74d748002b000302030400
        0d0010000e0403050306030203080408050806002d00020101001c0002400100
        3900320408ffffffffffffffff05048000ffff07048000ffff08011001048000
        75300901100f088394c8f03e51570806048000ffff";

    /// RFC 9001 A.2: the unprotected header (packet number 2, 4 bytes).
    const A2_HEADER: &str = "c300000001088394c8f03e5157080000449e00000002";

    /// RFC 9001 A.2: the protected client Initial.
    pub(crate) const A2_PACKET: &str = "
        c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11
        d242b123dc9bd8bab936b47d92ec356c0bab7df5976d27cd449f63300099f399
        1c260ec4c60d17b31f8429157bb35a1282a643a8d2262cad67500cadb8e7378c
        8eb7539ec4d4905fed1bee1fc8aafba17c750e2c7ace01e6005f80fcb7df6212
        30c83711b39343fa028cea7f7fb5ff89eac2308249a02252155e2347b63d58c5
        457afd84d05dfffdb20392844ae812154682e9cf012f9021a6f0be17ddd0c208
        4dce25ff9b06cde535d0f920a2db1bf362c23e596d11a4f5a6cf3948838a3aec
        4e15daf8500a6ef69ec4e3feb6b1d98e610ac8b7ec3faf6ad760b7bad1db4ba3
        485e8a94dc250ae3fdb41ed15fb6a8e5eba0fc3dd60bc8e30c5c4287e53805db
        059ae0648db2f64264ed5e39be2e20d82df566da8dd5998ccabdae053060ae6c
        7b4378e846d29f37ed7b4ea9ec5d82e7961b7f25a9323851f681d582363aa5f8
        9937f5a67258bf63ad6f1a0b1d96dbd4faddfcefc5266ba6611722395c906556
        be52afe3f565636ad1b17d508b73d8743eeb524be22b3dcbc2c7468d54119c74
        68449a13d8e3b95811a198f3491de3e7fe942b330407abf82a4ed7c1b311663a
        c69890f4157015853d91e923037c227a33cdd5ec281ca3f79c44546b9d90ca00
        f064c99e3dd97911d39fe9c5d0b23a229a234cb36186c4819e8b9c5927726632
        291d6a418211cc2962e20fe47feb3edf330f2c603a9d48c0fcb5699dbfe58964
        25c5bac4aee82e57a85aaf4e2513e4f05796b07ba2ee47d80506f8d2c25e50fd
        14de71e6c418559302f939b0e1abd576f279c4b2e0feb85c1f28ff18f58891ff
        ef132eef2fa09346aee33c28eb130ff28f5b766953334113211996d20011a198
        e3fc433f9f2541010ae17c1bf202580f6047472fb36857fe843b19f5984009dd
        c324044e847a4f4a0ab34f719595de37252d6235365e9b84392b061085349d73
        203a4a13e96f5432ec0fd4a1ee65accdd5e3904df54c1da510b0ff20dcc0c77f
        cb2c0e0eb605cb0504db87632cf3d8b4dae6e705769d1de354270123cb11450e
        fc60ac47683d7b8d0f811365565fd98c4c8eb936bcab8d069fc33bd801b03ade
        a2e1fbc5aa463d08ca19896d2bf59a071b851e6c239052172f296bfb5e724047
        90a2181014f3b94a4e97d117b438130368cc39dbb2d198065ae3986547926cd2
        162f40a29f0c3c8745c0f50fba3852e566d44575c29d39a03f0cda721984b6f4
        40591f355e12d439ff150aab7613499dbd49adabc8676eef023b15b65bfc5ca0
        6948109f23f350db82123535eb8a7433bdabcb909271a6ecbcb58b936a88cd4e
        8f2e6ff5800175f113253d8fa9ca8885c2f552e657dc603f252e1a8e308f76f0
        be79e2fb8f5d5fbbe2e30ecadd220723c8c0aea8078cdfcb3868263ff8f09400
        54da48781893a7e49ad5aff4af300cd804a6b6279ab3ff3afb64491c85194aab
        760d58a606654f9f4400e8b38591356fbf6425aca26dc85244259ff2b19c41b9
        f96f3ca9ec1dde434da7d2d392b905ddf3d1f9af93d1af5950bd493f5aa731b4
        056df31bd267b6b90a079831aaf579be0a39013137aac6d404f518cfd4684064
        7e78bfe706ca4cf5e9c5453e9f7cfd2b8b4c8d169a44e55c88d4a9a7f9474241
        e221af44860018ab0856972e194cd934";

    /// Protects an Initial the way a client does: `header` unprotected (its
    /// last `pn_len` bytes are the packet number `pn`), then `payload`.
    fn seal(keys: &InitialKeys, header: &[u8], pn: u64, pn_len: usize, payload: &[u8]) -> Vec<u8> {
        let mut body = payload.to_vec();
        keys.key
            .seal_in_place_append_tag(keys.nonce(pn), Aad::from(header), &mut body)
            .unwrap();
        let mut packet = header.to_vec();
        packet.extend_from_slice(&body);
        let pn_offset = header.len() - pn_len;
        let mask = keys
            .hp
            .new_mask(&packet[pn_offset + 4..pn_offset + 20])
            .unwrap();
        packet[0] ^= mask[0] & 0x0f;
        for i in 0..pn_len {
            packet[pn_offset + i] ^= mask[1 + i];
        }
        packet
    }

    /// A client Initial to `dcid` with packet number `pn` carrying `frames`,
    /// padded to 1200 bytes.
    pub(crate) fn client_initial(dcid: &[u8], pn: u32, frames: &[u8]) -> Vec<u8> {
        let keys = InitialKeys::client(dcid);
        let mut header = vec![0xc3, 0, 0, 0, 1, dcid.len() as u8];
        header.extend_from_slice(dcid);
        header.extend_from_slice(&[0, 0]); // no SCID, no token
        let fixed = header.len() + 2 + 4 + TAG;
        let payload_len = frames.len().max(1200 - fixed);
        let mut payload = frames.to_vec();
        payload.resize(payload_len, 0);
        header.extend_from_slice(&(0x4000 | (4 + payload_len + TAG) as u16).to_be_bytes());
        header.extend_from_slice(&pn.to_be_bytes());
        seal(&keys, &header, u64::from(pn), 4, &payload)
    }

    /// A CRYPTO frame.
    pub(crate) fn crypto_frame(offset: u64, data: &[u8]) -> Vec<u8> {
        let mut f = vec![0x06];
        f.extend_from_slice(&(0x8000_0000 | offset as u32).to_be_bytes());
        f.extend_from_slice(&(0x4000 | data.len() as u16).to_be_bytes());
        f.extend_from_slice(data);
        f
    }

    #[test]
    fn rfc9001_keys() {
        let keys = InitialKeys::client(&unhex("8394c8f03e515708"));
        assert_eq!(keys.iv.to_vec(), unhex("fa044b2f42a3fd3b46fb255c"));
        // The RFC's mask for its sample proves the header protection key.
        let mask = keys
            .hp
            .new_mask(&unhex("d1b1c98dd7689fb8ec11d242b123dc9b"))
            .unwrap();
        assert_eq!(mask.to_vec(), unhex("437b9aec36"));
    }

    #[test]
    fn rfc9001_client_initial_opens() {
        let mut packet = unhex(A2_PACKET);
        assert_eq!(packet.len(), 1200);
        let keys = InitialKeys::client(&unhex("8394c8f03e515708"));
        let plain = keys.open(&mut packet, 18).unwrap().to_vec();
        let mut want = unhex(A2_FRAMES);
        want.resize(1162, 0);
        assert_eq!(plain, want);
        assert_eq!(packet[..22], unhex(A2_HEADER)[..]);
    }

    #[test]
    fn rfc9001_client_initial_seals_byte_for_byte() {
        let keys = InitialKeys::client(&unhex("8394c8f03e515708"));
        let mut payload = unhex(A2_FRAMES);
        payload.resize(1162, 0);
        assert_eq!(
            seal(&keys, &unhex(A2_HEADER), 2, 4, &payload),
            unhex(A2_PACKET)
        );
    }

    #[test]
    fn rfc9001_sni() {
        let mut r = InitialReader::new();
        assert_eq!(r.datagram(&unhex(A2_PACKET), true), Datagram::Initial);
        assert_eq!(r.sni(), Scan::Host("example.com"));
    }

    #[test]
    fn tampered_or_foreign_packets_stop() {
        let mut packet = unhex(A2_PACKET);
        packet[100] ^= 1;
        assert_eq!(InitialReader::new().datagram(&packet, true), Datagram::Stop);
        let mut v2 = unhex(A2_PACKET);
        v2[4] = 2;
        assert_eq!(InitialReader::new().datagram(&v2, true), Datagram::Stop);
        let short = [0x40u8; 100];
        assert_eq!(InitialReader::new().datagram(&short, true), Datagram::Stop);
        // Truncated: the Length field runs past the datagram.
        let cut = &unhex(A2_PACKET)[..1000];
        assert_eq!(InitialReader::new().datagram(cut, true), Datagram::Stop);
    }

    #[test]
    fn hello_over_two_initials_any_order() {
        let hello = tls::tests::pq_hello("split.quic.example");
        assert!(hello.len() > 1200);
        let dcid = [0x11u8, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
        let cut = 1000;
        // An ACK and a PING in front, as clients retransmitting do.
        let mut f1 = vec![0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
        f1.extend(crypto_frame(0, &hello[..cut]));
        let f2 = crypto_frame(cut as u64, &hello[cut..]);
        let p1 = client_initial(&dcid, 0, &f1);
        let p2 = client_initial(&dcid, 1, &f2);

        let mut r = InitialReader::new();
        assert_eq!(r.datagram(&p1, true), Datagram::Initial);
        assert_eq!(r.sni(), Scan::More);
        assert_eq!(r.datagram(&p2, false), Datagram::Initial);
        assert_eq!(r.sni(), Scan::Host("split.quic.example"));

        let mut r = InitialReader::new();
        assert_eq!(r.datagram(&p2, true), Datagram::Initial);
        assert_eq!(r.sni(), Scan::More);
        assert_eq!(r.datagram(&p1, false), Datagram::Initial);
        assert_eq!(r.sni(), Scan::Host("split.quic.example"));
    }

    #[test]
    fn frames_out_of_order_in_one_packet() {
        let hello = tls::tests::pq_hello("frames.example");
        let mut f = crypto_frame(900, &hello[900..]);
        f.extend(crypto_frame(0, &hello[..500]));
        f.extend(crypto_frame(400, &hello[400..900]));
        let p = client_initial(&[9; 20], 0, &f);
        let mut r = InitialReader::new();
        assert_eq!(r.datagram(&p, true), Datagram::Initial);
        assert_eq!(r.sni(), Scan::Host("frames.example"));
    }

    #[test]
    fn crypto_past_bound_stops() {
        let f = crypto_frame(MAX_CRYPTO as u64, b"x");
        let p = client_initial(&[1; 8], 0, &f);
        assert_eq!(InitialReader::new().datagram(&p, true), Datagram::Stop);
    }

    #[test]
    fn crypto_ranges_merge() {
        let mut c = CryptoStream::default();
        c.insert(10, &[1; 10]).unwrap();
        c.insert(30, &[1; 10]).unwrap();
        assert_eq!(c.contiguous(), b"");
        c.insert(0, &[2; 10]).unwrap();
        assert_eq!(c.contiguous().len(), 20);
        c.insert(15, &[3; 20]).unwrap();
        assert_eq!(c.have, vec![(0, 40)]);
        for i in 0..MAX_RANGES - 1 {
            c.insert(100 + 10 * i, &[0; 1]).unwrap();
        }
        assert!(c.insert(1000, &[0; 1]).is_err());
    }
}
