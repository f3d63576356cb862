#!/usr/bin/env python3
"""Join nDPI (ndpiReader -v 2 text) and guardwire (`classify --json` lines) per flow
and write the agreement report. Called by bench/ndpi/agreement.sh:

  report.py --work DIR --gw-status ok|"skipped: ..." --gw PATH --md OUT.md --json OUT.json ...

DIR holds cases.tsv (case, client rc, description), pcap/CASE.pcap, ndpi/CASE.txt,
gw/CASE.jsonl. The markdown goes to OUT.md and stdout.
"""
import argparse
import json
import os
import re
import sys
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pcaplib  # noqa: E402

# nDPI protocol name -> guardwire app name. Anything not listed maps to its lowercase.
NDPI_TO_GW = {
    "YouTube": "youtube", "NetFlix": "netflix", "Netflix": "netflix", "WhatsApp": "whatsapp",
    "WhatsAppCall": "whatsapp", "WhatsAppFiles": "whatsapp", "Telegram": "telegram",
    "Steam": "steam", "Facebook": "facebook", "Messenger": "facebook", "Github": "github",
    "GitHub": "github", "TikTok": "tiktok", "Discord": "discord", "Spotify": "spotify",
    "Twitch": "twitch", "SSH": "ssh", "DNS": "dns", "HTTP": "http", "TLS": "tls",
    "QUIC": "quic", "Unknown": "unknown", "Google": "google", "Instagram": "instagram",
}
# Names that say only which protocol carries the flow, not which application.
PROTOCOL_ONLY = {"tls", "http", "quic", "unknown"}

FLOW_RE = re.compile(r"^\s*\d+\s+(TCP|UDP)\s+(\S+)\s+<->\s+(\S+)\s+(.*)$")


def field(rest, name):
    m = re.search(r"\[" + re.escape(name) + r": ([^\]]*)\]", rest)
    return m.group(1) if m else None


def parse_ndpi(path):
    """Flows of `ndpiReader -v 2` output: list of dicts."""
    out = []
    try:
        text = open(path, encoding="utf-8", errors="replace").read()
    except OSError:
        return out
    for line in text.splitlines():
        m = FLOW_RE.match(line)
        if not m:
            continue
        proto, a, b, rest = m.groups()
        if pcaplib.parse_ep(a) is None or pcaplib.parse_ep(b) is None:
            continue
        pm = re.search(r"\[proto: (?:([\d.]+)/)?([^\]]*)\]", rest)
        name = pm.group(2) if pm else "Unknown"
        host = field(rest, "Hostname/SNI")
        dns_answer = None
        dm = re.search(r"\[Hostname/SNI: [^\]]*\]\[([0-9a-fA-F.:]+)\]", rest)
        if dm:
            dns_answer = dm.group(1)
        conf = field(rest, "Confidence")
        out.append({
            "proto": proto.lower(), "a": a, "b": b, "ndpi": name,
            "ndpi_id": pm.group(1) if pm else None, "confidence": conf,
            "host": host, "dns_answer": dns_answer, "risk": field(rest, "Risk"),
            "key": pcaplib.flow_key(proto, a, b),
        })
    return out


def parse_gw(path):
    out, bad = [], 0
    try:
        lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
    except OSError:
        return out, bad
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            o = json.loads(line)
            o["key"] = pcaplib.flow_key(o["proto"], o["src"], o["dst"])
        except (ValueError, KeyError, TypeError, AttributeError):
            bad += 1
            continue
        out.append(o)
    return out, bad


def ndpi_app(name):
    """'TLS.YouTube' -> ('youtube', 'tls'): (most specific, master)."""
    parts = [p for p in (name or "Unknown").split(".") if p]
    conv = [NDPI_TO_GW.get(p, p.lower()) for p in parts] or ["unknown"]
    return conv[-1], conv[0]


def agree(nd, gw):
    """(bool, reason) for one joined flow."""
    if nd is None or gw is None:
        return False, "flow seen by one side only"
    app, master = ndpi_app(nd["ndpi"])
    g = (gw.get("app") or "unknown").lower()
    if g == app:
        return True, ""
    if app in PROTOCOL_ONLY and g in PROTOCOL_ONLY:
        return True, "no app"
    if master == "dns" and g == "dns":
        return True, "dns"
    return False, ""


def md_escape(s):
    return str(s).replace("|", "\\|").replace("\n", " ")


def tls_hello_note(flow):
    stream, pieces = pcaplib.tcp_stream(flow.c2s, flow.syn_seq)
    if stream[:1] != b"\x16":
        return None
    info = pcaplib.client_hello_info(stream)
    if not info:
        return None
    rec = info.get("record_bytes", info["hs_len"])
    segs = [p for p in pieces if p[0] < rec]
    sni_seg = None
    if info["sni_off"] is not None:
        for i, (off, ln) in enumerate(segs, 1):
            if off <= info["sni_off"] < off + ln:
                sni_seg = i
    return {"kind": "tls", "ch_bytes": info["hs_len"], "record_bytes": rec, "units": len(segs),
            "unit_sizes": [ln for _, ln in segs], "sni": info["sni"], "sni_in": sni_seg,
            "complete": info["complete"]}


def quic_hello_note(flow):
    info = pcaplib.quic_client_hello(flow.c2s)
    if not info:
        return None
    return {"kind": "quic", "ch_bytes": info["hs_len"], "units": info["packets"],
            "sni": info["sni"], "sni_in": info["sni_packet"], "complete": info["complete"],
            "version": hex(info["version"]) if info["version"] else None,
            "datagram_sizes": [len(d) for d in flow.c2s[:info["packets"]]]}


def hello_text(h):
    if not h:
        return ""
    if h["kind"] == "tls":
        return (f"TLS ClientHello {h['ch_bytes']} B (records {h['record_bytes']} B) in "
                f"{h['units']} TCP segment(s) {h['unit_sizes']}, SNI in segment {h['sni_in']}")
    return (f"QUIC {h.get('version')} ClientHello {h['ch_bytes']} B in {h['units']} Initial "
            f"packet(s) (UDP payloads {h['datagram_sizes']}), SNI in packet {h['sni_in']}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--gw-status", required=True)
    ap.add_argument("--gw", default="")
    ap.add_argument("--md", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--ndpi-version", default="?")
    ap.add_argument("--openssl-version", default="?")
    ap.add_argument("--big-hello", default="")
    a = ap.parse_args()
    W = a.work
    gw_on = a.gw_status == "ok"

    cases = []
    with open(os.path.join(W, "cases.tsv"), encoding="utf-8") as f:
        for line in f:
            c, rc, desc = (line.rstrip("\n").split("\t") + ["", ""])[:3]
            cases.append((c, rc, desc))

    rows, case_notes, gw_bad = [], {}, 0
    ndpi_by_key_case = {}
    for c, rc, desc in cases:
        pcap = os.path.join(W, "pcap", c + ".pcap")
        try:
            pflows = pcaplib.flows(pcap)
        except (OSError, ValueError) as e:
            pflows = {}
            print(f"warning: {pcap}: {e}", file=sys.stderr)
        nd = parse_ndpi(os.path.join(W, "ndpi", c + ".txt"))
        gw, bad = parse_gw(os.path.join(W, "gw", c + ".jsonl")) if gw_on else ([], 0)
        gw_bad += bad
        nd_map = {f["key"]: f for f in nd}
        gw_map = {}
        for g in gw:
            gw_map.setdefault(g["key"], g)
        keys = list(pflows.keys())
        keys += [k for k in nd_map if k not in keys]
        keys += [k for k in gw_map if k not in keys]
        notes = []
        for k in keys:
            pf = pflows.get(k)
            n, g = nd_map.get(k), gw_map.get(k)
            if n is None and g is None:
                continue   # e.g. a flow neither tool reports
            if pf is not None:
                flow_txt = f"{k[0]} {pf.cli} → {pf.srv}"
                h = tls_hello_note(pf) if k[0] == "tcp" else (
                    quic_hello_note(pf) if pcaplib.parse_ep(pf.srv)[1] == 443 else None)
                if h:
                    notes.append(h)
            elif n is not None:
                flow_txt = f"{k[0]} {n['a']} ↔ {n['b']}"
            else:
                flow_txt = f"{k[0]} {g['src']} → {g['dst']}"
            ok, why = agree(n, g) if gw_on else (None, "")
            rows.append({"case": c, "flow": flow_txt, "key": list(k), "ndpi": n, "gw": g,
                         "agree": ok, "why": why})
            if n is not None:
                ndpi_by_key_case[tuple(k)] = n
        case_notes[c] = {"rc": rc, "desc": desc, "hellos": notes}

    # nDPI on the combined pcap: same answers as per case?
    combined = parse_ndpi(os.path.join(W, "ndpi", "all.txt"))
    comb_diff = []
    for f in combined:
        per = ndpi_by_key_case.get(f["key"])
        if per is None:
            comb_diff.append((f, None))
        elif (per["ndpi"], per["host"]) != (f["ndpi"], f["host"]):
            comb_diff.append((f, per))

    # ---------------------------------------------------------------- markdown
    L = []
    now = datetime.now().strftime("%Y-%m-%d %H:%M")
    L.append(f"# Application identification: guardwire vs nDPI ({now})")
    L.append("")
    L.append(f"- nDPI: ndpiReader {a.ndpi_version} (`ndpiReader -v 2 -i CASE.pcap`), protocol guessing on")
    if gw_on:
        fake = "fake-classify" in os.path.basename(a.gw)
        L.append(f"- guardwire: `{a.gw} classify --json CASE.pcap`"
                 + (" — **FAKE classifier (bench/ndpi/fake-classify.py), for testing the join only; "
                    "these are not guardwire's answers**" if fake else ""))
    else:
        L.append(f"- guardwire: {a.gw_status}; nDPI side only")
    L.append(f"- clients: curl {{TLS,HTTP}}, {a.openssl_version} s_client, dig, aioquic HTTP/3, "
             "python sockets; servers in netns `ndpi-srv` (openssl s_server -www, python http.server, "
             "dnsmasq, aioquic, python)")
    L.append("- agree = both name the same application (nDPI names mapped to guardwire names: "
             "TLS.YouTube → youtube, HTTP.NetFlix → netflix, ...); a flow where nDPI names only the "
             "protocol (TLS/HTTP/QUIC/Unknown) agrees with guardwire `unknown` or the same protocol "
             "(\"yes (no app)\"); a DNS flow (nDPI: DNS.<app of the queried name>) agrees when guardwire "
             "says `dns` (\"yes (dns)\") or the queried name's app")
    L.append("")
    L.append("| case | flow | nDPI protocol | nDPI host | guardwire app | guardwire host/how | agree? |")
    L.append("|---|---|---|---|---|---|---|")
    for r in rows:
        n, g = r["ndpi"], r["gw"]
        if n:
            np = n["ndpi"] + ("" if n["confidence"] in (None, "DPI") else f" ({n['confidence']})")
            nh = n["host"] or ""
            if n["dns_answer"]:
                nh += f" → {n['dns_answer']}"
        else:
            np, nh = "(no flow)", ""
        if not gw_on:
            ga, gh, ag = "—", "—", "—"
        elif g:
            ga = g.get("app", "?")
            gh = " / ".join(x for x in (g.get("host") or "", g.get("how") or "") if x) or ""
            ag = "yes" if r["agree"] else "**no**"
        else:
            ga, gh, ag = "(no flow)", "", "**no**"
        if gw_on and r["why"] and r["agree"]:
            ag += f" ({r['why']})"
        L.append("| " + " | ".join(md_escape(x) for x in (r["case"], r["flow"], np, nh, ga, gh, ag)) + " |")
    L.append("")
    M = len(rows)
    if gw_on:
        N = sum(1 for r in rows if r["agree"])
        L.append(f"**{N} of {M} flows agree.**" + (f" ({gw_bad} unparsable guardwire line(s) ignored)" if gw_bad else ""))
    else:
        L.append(f"**guardwire {a.gw_status}** — {M} flows classified by nDPI only.")
    L.append("")

    L.append("## Cases")
    L.append("")
    L.append("| case | client | what | ClientHello |")
    L.append("|---|---|---|---|")
    for c, rc, desc in cases:
        cn = case_notes[c]
        hello = "; ".join(hello_text(h) for h in cn["hellos"])
        L.append("| " + " | ".join(md_escape(x) for x in (
            c, "ok" if rc == "0" else f"FAILED (rc {rc})", desc, hello)) + " |")
    L.append("")
    sizes = sorted({(h["kind"], h["ch_bytes"], h["units"]) for cn in case_notes.values() for h in cn["hellos"]})
    if sizes:
        L.append("ClientHello sizes seen (kind, handshake bytes, TCP segments / QUIC Initial packets): "
                 + ", ".join(f"{k} {b} B/{u}" for k, b, u in sizes))
        L.append("")
    if a.big_hello:
        L.append(f"Large TLS ClientHello made with: {a.big_hello}.")
        L.append("")

    L.append("## nDPI on the combined pcap")
    L.append("")
    if not combined:
        L.append("(no flows parsed from the combined pcap)")
    elif not comb_diff:
        L.append(f"All {len(combined)} flows of the combined pcap got the same nDPI protocol and host "
                 "as in their per-case pcap.")
    else:
        L.append(f"{len(comb_diff)} of {len(combined)} flows differ from the per-case run:")
        for f, per in comb_diff:
            L.append(f"- {f['proto']} {f['a']} ↔ {f['b']}: combined {f['ndpi']} {f['host'] or ''}"
                     f" / per case {per['ndpi'] + ' ' + (per['host'] or '') if per else '(absent)'}")
    L.append("")

    if gw_on:
        L.append("## Flows where they differ")
        L.append("")
        diffs = [r for r in rows if not r["agree"]]
        if not diffs:
            L.append("None.")
        for r in diffs:
            n, g = r["ndpi"], r["gw"]
            nt = (f"{n['ndpi']} (host {n['host'] or '-'}, confidence {n['confidence'] or '?'})" if n else "no such flow")
            gt = (f"{g.get('app')} (host {g.get('host') or '-'}, how {g.get('how') or '-'}, "
                  f"category {g.get('category') or '-'})" if g else "no such flow")
            L.append(f"- **{r['case']}** `{r['flow']}`: nDPI says {nt}; guardwire says {gt}")
        L.append("")

    md = "\n".join(L)
    os.makedirs(os.path.dirname(os.path.abspath(a.md)), exist_ok=True)
    with open(a.md, "w", encoding="utf-8") as f:
        f.write(md)
    with open(a.json, "w", encoding="utf-8") as f:
        json.dump({"generated": now, "ndpi_version": a.ndpi_version, "guardwire": a.gw,
                   "guardwire_status": a.gw_status, "rows": rows,
                   "cases": {c: case_notes[c] for c, _, _ in cases},
                   "combined_ndpi_differences": [[f, p] for f, p in comb_diff]},
                  f, indent=1, default=str)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
