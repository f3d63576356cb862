"""Tiny pcap reader and TLS/QUIC/DNS/HTTP helpers for bench/ndpi (stdlib only;
QUIC Initial decryption needs aioquic, imported lazily).

Used by report.py (ClientHello sizes, flow orientation) and fake-classify.py.
"""
import ipaddress
import struct
from collections import OrderedDict

LINK_ETHERNET, LINK_RAW, LINK_RAW2, LINK_SLL, LINK_SLL2 = 1, 101, 12, 113, 276


def read_pcap(path):
    """Yield (ts, linktype, frame bytes) from a classic pcap file (any endianness, us/ns)."""
    with open(path, "rb") as f:
        hdr = f.read(24)
        if len(hdr) < 24:
            return
        magic = hdr[:4]
        if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
            e = "<"
        elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
            e = ">"
        else:
            raise ValueError(f"{path}: not a classic pcap file (pcapng is not supported)")
        nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
        linktype = struct.unpack(e + "I", hdr[20:24])[0] & 0xFFFF
        while True:
            rh = f.read(16)
            if len(rh) < 16:
                return
            sec, frac, incl, _orig = struct.unpack(e + "IIII", rh)
            data = f.read(incl)
            if len(data) < incl:
                return
            yield sec + frac / (1e9 if nano else 1e6), linktype, data


def _l3(linktype, frame):
    """Return (ethertype, l3 bytes) or None."""
    if linktype == LINK_ETHERNET:
        if len(frame) < 14:
            return None
        et, off = struct.unpack("!H", frame[12:14])[0], 14
        while et in (0x8100, 0x88A8) and len(frame) >= off + 4:
            et, off = struct.unpack("!H", frame[off + 2:off + 4])[0], off + 4
        return et, frame[off:]
    if linktype == LINK_SLL and len(frame) >= 16:
        return struct.unpack("!H", frame[14:16])[0], frame[16:]
    if linktype == LINK_SLL2 and len(frame) >= 20:
        return struct.unpack("!H", frame[0:2])[0], frame[20:]
    if linktype in (LINK_RAW, LINK_RAW2) and frame:
        v = frame[0] >> 4
        return (0x0800 if v == 4 else 0x86DD), frame
    return None


class Pkt:
    __slots__ = ("ts", "proto", "src", "sport", "dst", "dport", "flags", "seq", "payload")

    def __init__(self, ts, proto, src, sport, dst, dport, flags, seq, payload):
        self.ts, self.proto, self.src, self.sport = ts, proto, src, sport
        self.dst, self.dport, self.flags, self.seq, self.payload = dst, dport, flags, seq, payload


def packets(path):
    """Yield Pkt for each TCP/UDP packet (first fragments only)."""
    for ts, lt, frame in read_pcap(path):
        r = _l3(lt, frame)
        if r is None:
            continue
        et, ip = r
        if et == 0x0800 and len(ip) >= 20 and ip[0] >> 4 == 4:
            ihl = (ip[0] & 0x0F) * 4
            total = struct.unpack("!H", ip[2:4])[0]
            frag = struct.unpack("!H", ip[6:8])[0] & 0x1FFF
            if frag:
                continue
            proto = ip[9]
            src, dst = ipaddress.ip_address(ip[12:16]), ipaddress.ip_address(ip[16:20])
            l4 = ip[ihl:total] if total >= ihl else ip[ihl:]
        elif et == 0x86DD and len(ip) >= 40:
            plen = struct.unpack("!H", ip[4:6])[0]
            nh, off = ip[6], 40
            src, dst = ipaddress.ip_address(ip[8:24]), ipaddress.ip_address(ip[24:40])
            end = 40 + plen
            while nh in (0, 43, 60) and len(ip) >= off + 8:   # hop-by-hop, routing, dst opts
                nh, off = ip[off], off + (ip[off + 1] + 1) * 8
            if nh == 44:   # fragment header: first fragment only
                if len(ip) < off + 8 or struct.unpack("!H", ip[off + 2:off + 4])[0] & 0xFFF8:
                    continue
                nh, off = ip[off], off + 8
            proto, l4 = nh, ip[off:end]
        else:
            continue
        if proto == 6 and len(l4) >= 20:
            sport, dport, seq = struct.unpack("!HHI", l4[:8])
            doff = (l4[12] >> 4) * 4
            yield Pkt(ts, "tcp", src, sport, dst, dport, l4[13], seq, bytes(l4[doff:]))
        elif proto == 17 and len(l4) >= 8:
            sport, dport = struct.unpack("!HH", l4[:4])
            yield Pkt(ts, "udp", src, sport, dst, dport, 0, 0, bytes(l4[8:]))


def ep(addr, port):
    """Endpoint string: 10.77.0.1:443 or [fd77::1]:443."""
    a = ipaddress.ip_address(str(addr).strip("[]"))
    return f"[{a.compressed}]:{port}" if a.version == 6 else f"{a.compressed}:{port}"


def parse_ep(s):
    """'10.0.0.1:80' / '[fd77::1]:80' -> (ip_address, port); None if malformed."""
    s = s.strip()
    try:
        if s.startswith("["):
            a, _, p = s[1:].partition("]:")
        else:
            a, _, p = s.rpartition(":")
        return ipaddress.ip_address(a), int(p)
    except ValueError:
        return None


def flow_key(proto, a, b):
    """Direction-insensitive 5-tuple key from two endpoint strings."""
    x, y = ep(*parse_ep(a)), ep(*parse_ep(b))
    return (proto.lower(),) + tuple(sorted((x, y)))


class Flow:
    def __init__(self, proto, cli, srv, first_ts):
        self.proto, self.cli, self.srv, self.first_ts = proto, cli, srv, first_ts
        self.c2s = []   # (seq, payload) for tcp, payload for udp
        self.s2c = []
        self.syn_seq = None


def flows(path):
    """OrderedDict key -> Flow, client = sender of the SYN (tcp) or first packet."""
    out = OrderedDict()
    for p in packets(path):
        a, b = ep(p.src, p.sport), ep(p.dst, p.dport)
        k = flow_key(p.proto, a, b)
        f = out.get(k)
        if f is None:
            if p.proto == "tcp" and (p.flags & 0x12) == 0x12:   # SYN-ACK first: sender is server
                f = Flow(p.proto, b, a, p.ts)
            else:
                f = Flow(p.proto, a, b, p.ts)
            out[k] = f
        fwd = a == f.cli
        if p.proto == "tcp":
            if p.flags & 0x02 and not p.flags & 0x10 and fwd:
                f.syn_seq = p.seq
            if p.payload:
                (f.c2s if fwd else f.s2c).append((p.seq, p.payload))
        elif p.payload:
            (f.c2s if fwd else f.s2c).append(p.payload)
    return out


def tcp_stream(segs, isn=None, limit=65536):
    """Reassemble in-order bytes of one TCP direction. Returns (bytes, [(rel_off, len), ...])."""
    if not segs:
        return b"", []
    base = (isn + 1) if isn is not None else min(s for s, _ in segs)
    rel = sorted((((s - base) & 0xFFFFFFFF), d) for s, d in segs)
    buf, pieces = bytearray(), []
    for off, d in rel:
        if off > len(buf) or off >= limit:
            break
        if off + len(d) <= len(buf):
            continue   # retransmission
        pieces.append((off, len(d)))
        buf += d[len(buf) - off:]
    return bytes(buf), pieces


# ---------------------------------------------------------------- TLS ClientHello
def client_hello_info(data):
    """Parse a TLS ClientHello at the start of `data` (the handshake message, without
    record header when `data` starts with 0x01, with it when it starts with 0x16).
    Returns dict(hs_len, sni, sni_off, complete) or None. sni_off is the offset in `data`.
    """
    off = 0
    if data[:1] == b"\x16":
        # concatenate handshake bytes of consecutive records, remember offsets
        hs, mapping, pos = bytearray(), [], 0
        while pos + 5 <= len(data) and data[pos] == 0x16:
            rl = struct.unpack("!H", data[pos + 3:pos + 5])[0]
            chunk = data[pos + 5:pos + 5 + rl]
            mapping.append((len(hs), pos + 5))
            hs += chunk
            pos += 5 + rl
        info = client_hello_info(bytes(hs))
        if info and info["sni_off"] is not None:
            o = info["sni_off"]
            for hoff, doff in reversed(mapping):
                if o >= hoff:
                    info["sni_off"] = doff + (o - hoff)
                    break
        if info:
            info["record_bytes"] = pos
        return info
    if len(data) < 4 or data[0] != 0x01:
        return None
    hs_len = struct.unpack("!I", b"\x00" + data[1:4])[0]
    info = {"hs_len": hs_len + 4, "sni": None, "sni_off": None, "complete": len(data) >= hs_len + 4}
    body = data[4:4 + hs_len]
    try:
        off = 2 + 32
        off += 1 + body[off]                                       # session id
        off += 2 + struct.unpack("!H", body[off:off + 2])[0]       # cipher suites
        off += 1 + body[off]                                       # compression
        ext_end = off + 2 + struct.unpack("!H", body[off:off + 2])[0]
        off += 2
        while off + 4 <= min(ext_end, len(body)):
            et, el = struct.unpack("!HH", body[off:off + 4])
            if et == 0 and off + 4 + el <= len(body):
                e = body[off + 4:off + 4 + el]
                # server_name_list: len(2) type(1) len(2) name
                nl = struct.unpack("!H", e[3:5])[0]
                info["sni"] = e[5:5 + nl].decode("ascii", "replace")
                info["sni_off"] = 4 + off + 4 + 5
            off += 4 + el
    except (IndexError, struct.error):
        pass
    return info


# ---------------------------------------------------------------- QUIC Initial
def _varint(b, o):
    n = 1 << (b[o] >> 6)
    v = b[o] & 0x3F
    for i in range(1, n):
        v = (v << 8) | b[o + i]
    return v, o + n


def quic_client_hello(datagrams):
    """Decrypt the client's QUIC v1/v2 Initial packets (aioquic needed) and return
    dict(hs_len, sni, sni_packet, packets, complete, version) or None."""
    try:
        from aioquic.buffer import Buffer
        from aioquic.quic.crypto import CryptoPair
        from aioquic.quic.packet import QuicPacketType, pull_quic_header
    except ImportError:
        return None
    crypto, version, chunks, pkt_idx, pn = None, None, {}, 0, 0
    for dg in datagrams:
        pos = 0
        while pos < len(dg):
            if not dg[pos] & 0x80:
                break   # short header: no more long-header packets in this datagram
            buf = Buffer(data=dg[pos:])
            try:
                h = pull_quic_header(buf, host_cid_length=8)
            except Exception:  # noqa: BLE001 - not QUIC
                break
            enc_off = buf.tell()
            plen = h.packet_length
            if h.packet_type == QuicPacketType.INITIAL:
                if crypto is None:
                    crypto, version = CryptoPair(), h.version
                    crypto.setup_initial(cid=h.destination_cid, is_client=False, version=h.version)
                try:
                    _hdr, payload, pn = crypto.decrypt_packet(dg[pos:pos + plen], enc_off, pn)
                except Exception:  # noqa: BLE001
                    pos += plen
                    continue
                pkt_idx += 1
                o = 0
                try:
                    while o < len(payload):
                        t = payload[o]
                        if t == 0x00 or t == 0x01:
                            o += 1
                        elif t in (0x02, 0x03):
                            o += 1
                            _, o = _varint(payload, o)          # largest
                            _, o = _varint(payload, o)          # delay
                            cnt, o = _varint(payload, o)
                            _, o = _varint(payload, o)          # first range
                            for _ in range(cnt):
                                _, o = _varint(payload, o)
                                _, o = _varint(payload, o)
                            if t == 0x03:
                                for _ in range(3):
                                    _, o = _varint(payload, o)
                        elif t == 0x06:
                            off, o = _varint(payload, o + 1)
                            ln, o = _varint(payload, o)
                            chunks.setdefault(off, (payload[o:o + ln], pkt_idx))
                            o += ln
                        else:
                            break
                except IndexError:
                    pass
            pos += plen
    if not chunks:
        return None
    data, owner = bytearray(), []
    for off in sorted(chunks):
        d, idx = chunks[off]
        if off > len(data):
            break
        if off + len(d) > len(data):
            take = d[len(data) - off:]
            owner.append((len(data), idx))
            data += take
    info = client_hello_info(bytes(data))
    if info is None:
        return None
    info["packets"] = len({i for _, i in owner})
    info["sni_packet"] = None
    if info["sni_off"] is not None:
        for start, idx in owner:
            if info["sni_off"] >= start:
                info["sni_packet"] = idx
    info["version"] = version
    return info


# ---------------------------------------------------------------- DNS
def _dns_name(msg, o, depth=0):
    labels = []
    while o < len(msg) and depth < 20:
        n = msg[o]
        if n == 0:
            return ".".join(labels), o + 1
        if n & 0xC0 == 0xC0:
            ptr = struct.unpack("!H", msg[o:o + 2])[0] & 0x3FFF
            name, _ = _dns_name(msg, ptr, depth + 1)
            labels.append(name)
            return ".".join(x for x in labels if x), o + 2
        labels.append(msg[o + 1:o + 1 + n].decode("ascii", "replace"))
        o += 1 + n
    return ".".join(labels), o


def dns_parse(msg):
    """Return (is_response, qname, [answer addresses]) or None."""
    try:
        if len(msg) < 12:
            return None
        flags, qd, an = struct.unpack("!HHH", msg[2:8])
        o, qname = 12, None
        for _ in range(qd):
            qname, o = _dns_name(msg, o)
            o += 4
        addrs = []
        for _ in range(an):
            _, o = _dns_name(msg, o)
            t, _c, _ttl, rl = struct.unpack("!HHIH", msg[o:o + 10])
            o += 10
            if t == 1 and rl == 4:
                addrs.append(ipaddress.ip_address(msg[o:o + 4]))
            elif t == 28 and rl == 16:
                addrs.append(ipaddress.ip_address(msg[o:o + 16]))
            o += rl
        return bool(flags & 0x8000), qname, addrs
    except (IndexError, struct.error, ValueError):
        return None


def http_host(data):
    """Host header of an HTTP/1.x request at the start of data, or None."""
    if not data[:8].split(b" ")[0] in (b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT"):
        return None
    for line in data.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"host":
            return v.strip().decode("ascii", "replace")
    return ""
