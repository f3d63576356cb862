#!/usr/bin/env python3
"""FAKE stand-in for `guardwire classify --json PCAP`, only to test the join logic of
bench/ndpi/agreement.sh. It is NOT guardwire and its answers mean nothing about
guardwire: never report them as guardwire's.

  fake-classify.py classify --json PCAP

Prints one JSON object per flow in the contract of `guardwire classify --json`:
{"proto","src","dst","app","category","host","how"} with how in
sni|quic_sni|http_host|dns|port (absent when unnamed), app "unknown" when unnamed.
QUIC SNI needs aioquic (found in /var/cache/guardwire-ndpi/venv when not importable).
"""
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import aioquic  # noqa: F401
except ImportError:
    for sp in glob.glob("/var/cache/guardwire-ndpi/venv/lib/python3*/site-packages"):
        sys.path.append(sp)

import pcaplib  # noqa: E402

SUFFIXES = [  # (suffix, app, category)
    ("youtube.com", "youtube", "streaming"), ("netflix.com", "netflix", "streaming"),
    ("whatsapp.com", "whatsapp", "chat"), ("telegram.org", "telegram", "chat"),
    ("steamcommunity.com", "steam", "games"), ("facebook.com", "facebook", "social"),
    ("github.com", "github", "dev"), ("tiktok.com", "tiktok", "social"),
    ("discord.com", "discord", "chat"), ("spotify.com", "spotify", "music"),
    ("twitch.tv", "twitch", "streaming"),
]
PORTS = {("tcp", 22): ("ssh", "remote"), ("udp", 53): ("dns", "network"), ("tcp", 53): ("dns", "network")}


def by_host(host):
    h = (host or "").lower().rstrip(".")
    for suf, app, cat in SUFFIXES:
        if h == suf or h.endswith("." + suf):
            return app, cat
    return None


def main(argv):
    if len(argv) >= 2 and argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0
    if len(argv) < 2 or argv[0] != "classify":
        print("usage: fake-classify.py classify --json PCAP", file=sys.stderr)
        return 2
    path = argv[-1]
    flows = pcaplib.flows(path)
    answers = []   # (time of the DNS flow, answered address, name), capture order
    for f in flows.values():
        if f.proto == "udp" and pcaplib.parse_ep(f.srv)[1] == 53:
            for msg in f.s2c:
                r = pcaplib.dns_parse(msg)
                if r and r[0]:
                    answers += [(f.first_ts, a, r[1]) for a in r[2]]
    for f in flows.values():
        srv_ip, srv_port = pcaplib.parse_ep(f.srv)
        out = {"proto": f.proto, "src": f.cli, "dst": f.srv, "app": "unknown", "category": "unknown"}
        host, how = None, None
        if f.proto == "tcp":
            stream, _ = pcaplib.tcp_stream(f.c2s, f.syn_seq)
            if stream[:1] == b"\x16":
                ch = pcaplib.client_hello_info(stream)
                if ch and ch.get("sni"):
                    host, how = ch["sni"], "sni"
            elif pcaplib.http_host(stream):
                host, how = pcaplib.http_host(stream), "http_host"
        elif f.proto == "udp" and srv_port == 443:
            ch = pcaplib.quic_client_hello(f.c2s)
            if ch and ch.get("sni"):
                host, how = ch["sni"], "quic_sni"
        named = by_host(host) if host else None
        if named is None and (f.proto, srv_port) in PORTS:
            named, how = PORTS[(f.proto, srv_port)], "port"
            if srv_port == 53 and f.c2s:
                r = pcaplib.dns_parse(f.c2s[0])
                host = r[1] if r else host
        if named is None and srv_port != 53:
            seen = [n for ts, a, n in answers if a == srv_ip and ts <= f.first_ts]
            if seen:   # the latest answer before the flow started
                host, how = seen[-1], "dns"
                named = by_host(host)
        if named:
            out["app"], out["category"] = named
        if host:
            out["host"] = host
        if how and named:
            out["how"] = how
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
