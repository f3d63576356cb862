#!/usr/bin/env python3
"""Parsing and reporting helper for bench/run.sh (python3 stdlib only).

Subcommands
  iperf FILE PREFIX          iperf3 -J output -> "PREFIX_gbps=.. PREFIX_retr=.."
  ping FILE                  ping output -> "rtt_avg_us=.. rtt_p99_us=.. ping_rx=.. ping_loss_pct=.."
  rate V0 V1 T0 T1 [SCALE]   (V1-V0)/(T1-T0)/SCALE, printed with 4 decimals
  record FILE MODE ROUND k=v...   append one JSON line (v: number, null or string)
  report RAW OUTMD OUTJSON k=v... medians, ratios, targets; writes md+json, prints md
  flows-server IP PORT SECS  accept TCP flows for SECS s: read each to its end, answer "ok"
  flows-client IP PORT N BYTES   N flows at once, each sends BYTES and reads the answer
                             -> "flows_per_s=.. flows_failed=.."
"""
import asyncio
import json
import math
import statistics
import sys

MODES = {
    "a": "direct veth",
    "b": "Linux bridge",
    "c": "tc mirred redirect",
    "d": "guardwire",
    "e": "OVS netdev (userspace TSO)",
    "f": "guardwire, polling",
    "g": "guardwire, inspection off",
    "h": "guardwire, large ring slots",
    "i": "guardwire, fast path off",
    "j": "guardwire before the fast path",
}
GW_MODES = ("d", "f", "g", "h", "i", "j")  # modes that run guardwire: CPU figures and targets
# Modes where guardwire carries every frame itself: the userspace path's targets.
GW_PATH_MODES = ("f", "g", "h", "i", "j")

# key, label, unit/format, better ("hi"/"lo"/None)
FIGURES = [
    ("tcp1_gbps", "TCP x1 Gbit/s", "{:.2f}", "hi"),
    ("tcp1_retr", "TCP x1 retransmits", "{:.0f}", "lo"),
    ("tcp4_gbps", "TCP x4 Gbit/s", "{:.2f}", "hi"),
    ("tcp4_retr", "TCP x4 retransmits", "{:.0f}", "lo"),
    ("pps_rx_k", "60 B received kpps", "{:.0f}", "hi"),
    ("pps_tx_k", "60 B sent kpps", "{:.0f}", None),
    ("loss_60b_pct", "60 B lost %", "{:.1f}", "lo"),
    ("rtt_avg_us", "RTT avg us", "{:.0f}", "lo"),
    ("rtt_p99_us", "RTT p99 us", "{:.0f}", "lo"),
    ("ping_loss_pct", "ping loss %", "{:.1f}", "lo"),
    ("flows_per_s", "1000 short TCP flows: flows/s", "{:.0f}", "hi"),
    ("gw_cpu_60b", "guardwire cores, 60 B", "{:.2f}", "lo"),
    ("gw_cpu_tcp1", "guardwire cores, TCP x1", "{:.2f}", "lo"),
    ("gw_cpu_ping", "guardwire cores, ping every 2 ms", "{:.3f}", "lo"),
    ("gw_cpu_idle", "guardwire cores, no traffic", "{:.3f}", "lo"),
]


def die(msg):
    print(f"gwb.py: {msg}", file=sys.stderr)
    sys.exit(1)


def cmd_iperf(path, prefix):
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        die(f"iperf: cannot parse {path}: {e}")
    if data.get("error"):
        die(f"iperf: {data['error']}")
    end = data.get("end", {})
    recv = end.get("sum_received", {})
    sent = end.get("sum_sent", {})
    if "bits_per_second" not in recv:
        die(f"iperf: no end.sum_received in {path}")
    gbps = recv["bits_per_second"] / 1e9
    retr = sent.get("retransmits")
    out = [f"{prefix}_gbps={gbps:.4f}"]
    out.append(f"{prefix}_retr={retr if retr is not None else 'null'}")
    print(" ".join(out))


def percentile(sorted_vals, p):
    """Nearest-rank percentile."""
    if not sorted_vals:
        return None
    k = max(1, math.ceil(p / 100.0 * len(sorted_vals)))
    return sorted_vals[k - 1]


def cmd_ping(path):
    times = []
    sent = None
    with open(path, errors="replace") as f:
        for line in f:
            if "time=" in line and ("bytes from" in line or "icmp_seq" in line):
                tok = line.split("time=", 1)[1].split()
                try:
                    val = float(tok[0])
                except (ValueError, IndexError):
                    continue
                unit = tok[1] if len(tok) > 1 else "ms"
                us = val * 1000.0 if unit.startswith("ms") else val * 1e6 if unit == "s" else val
                times.append(us)
            elif "packets transmitted" in line:
                try:
                    sent = int(line.split()[0])
                except ValueError:
                    pass
    if not times:
        die(f"ping: no replies in {path}")
    times.sort()
    avg = sum(times) / len(times)
    p99 = percentile(times, 99)
    loss = 100.0 * (1 - len(times) / sent) if sent else 0.0
    print(f"rtt_avg_us={avg:.1f} rtt_p99_us={p99:.1f} ping_rx={len(times)} ping_loss_pct={loss:.2f}")


def cmd_rate(v0, v1, t0, t1, scale="1"):
    dt = float(t1) - float(t0)
    if dt <= 0:
        die("rate: empty window")
    print(f"{(float(v1) - float(v0)) / dt / float(scale):.4f}")


def parse_val(v):
    if v in ("", "null", "None"):
        return None
    try:
        x = float(v)
        if math.isfinite(x):
            return int(x) if x.is_integer() and "." not in v else x
        return None
    except ValueError:
        return v


def cmd_record(path, mode, rnd, kvs):
    rec = {"mode": mode, "round": int(rnd)}
    for kv in kvs:
        if "=" not in kv:
            continue
        k, v = kv.split("=", 1)
        rec[k] = parse_val(v)
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def fmt(val, spec):
    return "-" if val is None else spec.format(val)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def target_checks(d, ref_c, ref_e):
    """guardwire target checks for one mode's medians d, against (c) and (e)."""
    checks = []

    def chk(name, ok, detail):
        res = "n/a" if ok is None else ("PASS" if ok else "FAIL")
        checks.append({"check": name, "result": res, "detail": detail})

    def ge(a, b, f):
        return None if a is None or b is None else a >= f * b

    for k, f, name in (("tcp1_gbps", 0.80, "TCP x1 >= 0.80x (c)"),
                       ("tcp4_gbps", 0.60, "TCP x4 >= 0.60x (c)")):
        r = ratio(d[k], ref_c.get(k))
        chk(name, ge(d[k], ref_c.get(k), f),
            f"{fmt(d[k], '{:.2f}')} vs {fmt(ref_c.get(k), '{:.2f}')} Gbit/s"
            + (f" = {r:.2f}x" if r is not None else ""))
    ok = ge(d["pps_rx_k"], ref_c.get("pps_rx_k"), 1.0)
    cpu = d["gw_cpu_60b"]
    if ok is not None and cpu is not None:
        ok = ok and cpu <= 1.0
    elif cpu is None:
        ok = None
    r = ratio(d["pps_rx_k"], ref_c.get("pps_rx_k"))
    chk("60 B pps >= 1.0x (c) at <= 1.0 core", ok,
        f"{fmt(d['pps_rx_k'], '{:.0f}')} vs {fmt(ref_c.get('pps_rx_k'), '{:.0f}')} kpps"
        + (f" = {r:.2f}x" if r is not None else "") + f", {fmt(cpu, '{:.2f}')} cores")
    a, ca, p99 = d["rtt_avg_us"], ref_c.get("rtt_avg_us"), d["rtt_p99_us"]
    ok = None if a is None or ca is None or p99 is None else (a <= ca + 40 and p99 < 1000)
    chk("RTT avg <= (c) + 40 us and p99 < 1000 us", ok,
        f"avg {fmt(a, '{:.0f}')} vs {fmt(ca, '{:.0f}')} us, p99 {fmt(p99, '{:.0f}')} us")
    cp99 = ref_c.get("rtt_p99_us")
    ok = None if p99 is None or cp99 is None else p99 <= cp99 + 150
    chk("RTT p99 <= (c) + 150 us", ok, f"p99 {fmt(p99, '{:.0f}')} vs {fmt(cp99, '{:.0f}')} us")
    idle = d.get("gw_cpu_idle")
    chk("idle CPU < 0.02 cores", None if idle is None else idle < 0.02,
        f"{fmt(idle, '{:.3f}')} cores with no traffic")
    for k, name in (("tcp1_retr", "TCP x1 retransmits <= 2x (c)"),
                    ("tcp4_retr", "TCP x4 retransmits <= 2x (c)")):
        v, c = d[k], ref_c.get(k)
        chk(name, None if v is None or c is None else v <= 2 * c,
            f"{fmt(v, '{:.0f}')} vs {fmt(c, '{:.0f}')}")
    for k, name in (("tcp1_gbps", "TCP x1 >= 1.5x (e)"), ("tcp4_gbps", "TCP x4 >= 1.5x (e)")):
        r = ratio(d[k], ref_e.get(k))
        chk(name, ge(d[k], ref_e.get(k), 1.5),
            f"{fmt(d[k], '{:.2f}')} vs {fmt(ref_e.get(k), '{:.2f}')} Gbit/s"
            + (f" = {r:.2f}x" if r is not None else ""))
    return checks


def fast_checks(d, ref_c):
    """The kernel fast path's targets for mode (d) (fast path on), against (c)."""
    checks = []

    def chk(name, ok, detail):
        res = "n/a" if ok is None else ("PASS" if ok else "FAIL")
        checks.append({"check": name, "result": res, "detail": detail})

    for k, f, name in (("tcp1_gbps", 0.95, "TCP x1 >= 0.95x (c)"),
                       ("tcp4_gbps", 0.90, "TCP x4 >= 0.90x (c)"),
                       ("pps_rx_k", 0.90, "60 B received >= 0.90x (c)")):
        a, b = d.get(k), ref_c.get(k)
        r = ratio(a, b)
        chk(name, None if r is None else r >= f,
            f"{fmt(a, '{:.2f}')} vs {fmt(b, '{:.2f}')}" + (f" = {r:.2f}x" if r is not None else ""))
    a, b = d.get("loss_60b_pct"), ref_c.get("loss_60b_pct")
    chk("60 B loss <= (c) + 5 points", None if a is None or b is None else a <= b + 5,
        f"{fmt(a, '{:.1f}')} vs {fmt(b, '{:.1f}')} %")
    a, b = d.get("rtt_avg_us"), ref_c.get("rtt_avg_us")
    chk("RTT avg <= (c) + 10 us", None if a is None or b is None else a <= b + 10,
        f"{fmt(a, '{:.0f}')} vs {fmt(b, '{:.0f}')} us")
    return checks


def cmd_report(raw, out_md, out_json, kvs):
    meta = {}
    for kv in kvs:
        k, _, v = kv.partition("=")
        meta[k] = v
    rounds = []
    with open(raw) as f:
        for line in f:
            line = line.strip()
            if line:
                rounds.append(json.loads(line))
    modes = [m for m in meta.get("modes", ",".join(MODES)).split(",") if m]
    show_gw_cpu = any(m in GW_MODES for m in modes)

    med = {}  # mode -> key -> median
    nvals = {}
    status = {}
    for m in modes:
        recs = [r for r in rounds if r["mode"] == m]
        med[m] = {}
        nvals[m] = {}
        errs = [r.get("error") for r in recs if r.get("error")]
        status[m] = "; ".join(sorted(set(str(e) for e in errs))) if errs else ""
        for r in recs:
            tx, rx = r.get("pps_tx_k"), r.get("pps_rx_k")
            if isinstance(tx, (int, float)) and isinstance(rx, (int, float)) and tx > 0:
                r["loss_60b_pct"] = max(0.0, (tx - rx) / tx * 100)
        for key, *_ in FIGURES:
            vals = [r[key] for r in recs if isinstance(r.get(key), (int, float))]
            med[m][key] = statistics.median(vals) if vals else None
            nvals[m][key] = len(vals)

    ref_c = med.get("c", {})
    ref_e = med.get("e", {})

    lines = []
    lines.append(f"# guardwire side-by-side benchmark, {meta.get('date', '')}")
    lines.append("")
    lines.append(f"- machine: kernel `{meta.get('kernel', '?')}`, {meta.get('nproc', '?')} cores, "
                 f"CPU `{meta.get('cpu', '?')}`")
    lines.append(f"- rounds: {meta.get('rounds', '?')}, duration: {meta.get('duration', '?')} s, "
                 f"modes: {','.join(modes)} (run interleaved, round by round)")
    if meta.get("guardwire"):
        lines.append(f"- guardwire: {meta['guardwire']}")
    if meta.get("loadavg"):
        lines.append(f"- load average: {meta['loadavg']}")
    if meta.get("note"):
        lines.append(f"- note: {meta['note']}")
    lines.append("- cells: median over rounds, then (ratio to c tc-redirect, ratio to e OVS); "
                 "`-` = not measured")
    lines.append("")
    header = "| figure | " + " | ".join(f"({m}) {MODES.get(m, m)}" for m in modes) + " |"
    lines.append(header)
    lines.append("|---|" + "---|" * len(modes))
    for key, label, spec, _better in FIGURES:
        if key.startswith("gw_cpu") and not show_gw_cpu:
            continue
        cells = []
        for m in modes:
            v = med[m][key]
            cell = fmt(v, spec)
            if v is not None and not key.startswith("gw_cpu"):
                rc = ratio(v, ref_c.get(key)) if m != "c" else None
                re_ = ratio(v, ref_e.get(key)) if m != "e" else None
                parts = []
                if rc is not None:
                    parts.append(f"{rc:.2f}c")
                if re_ is not None:
                    parts.append(f"{re_:.2f}e")
                if parts:
                    cell += " (" + ", ".join(parts) + ")"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    # per-round values, to judge the noise behind each median
    lines.append("<details><summary>per-round values (round 1 / 2 / ...)</summary>")
    lines.append("")
    lines.append("| figure | " + " | ".join(f"({m})" for m in modes) + " |")
    lines.append("|---|" + "---|" * len(modes))
    for key, label, spec, _better in FIGURES:
        if key.startswith("gw_cpu") and not show_gw_cpu:
            continue
        cells = []
        for m in modes:
            recs = sorted((r for r in rounds if r["mode"] == m), key=lambda r: r["round"])
            vals = [r.get(key) if isinstance(r.get(key), (int, float)) else None for r in recs]
            cells.append(" / ".join(fmt(v, spec) for v in vals) if any(v is not None for v in vals) else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("</details>")
    lines.append("")
    notes = [f"({m}) {status[m]}" for m in modes if status[m]]
    if notes:
        lines.append("Problems: " + "; ".join(notes))
        lines.append("")

    # Targets for guardwire, one table per guardwire mode that ran
    checks = []
    gw_run = [m for m in modes if m in GW_MODES]
    if gw_run:
        lines.append("## guardwire targets")
        lines.append("")
    for m in gw_run:
        spin = meta.get("gw_poll_spin_us")
        what = {"d": "default config (fast path on), inspection on with 1000 rules",
                "f": f"polling, `spin_us = {spin}`" if spin else "polling",
                "g": "inspection off",
                "h": "ring slots of 68 KiB (every frame in the ring)",
                "i": "fast path off, inspection on with 1000 rules",
                "j": f"the binary before the fast path ({meta.get('base_bin', '?')})"}[m]
        if m in GW_PATH_MODES:
            mchecks = target_checks(med[m], ref_c, ref_e)
        else:
            mchecks = fast_checks(med[m], ref_c)
        checks += [{"mode": m, **c} for c in mchecks]
        lines.append(f"### ({m}) guardwire, {what}")
        lines.append("")
        lines.append("| check | result | measured |")
        lines.append("|---|---|---|")
        for c in mchecks:
            lines.append(f"| {c['check']} | {c['result']} | {c['detail']} |")
        lines.append("")

    def compare(a, b, title, keys=None, target=None):
        """A table of (a) against (b), same run: every figure (or `keys`),
        with a check per row when there is a `target` ratio."""
        lines.append(f"## {title}")
        lines.append("")
        head = f"| figure | ({a}) | ({b}) | ({a})/({b}) |"
        lines.append(head + (f" target >= {target:.2f} |" if target else ""))
        lines.append("|---|---|---|---|" + ("---|" if target else ""))
        for key, label, f_, _better in FIGURES:
            if keys and key not in keys:
                continue
            r = ratio(med[a].get(key), med[b].get(key))
            row = (f"| {label} | {fmt(med[a].get(key), f_)} | {fmt(med[b].get(key), f_)} "
                   f"| {fmt(r, '{:.2f}x')} |")
            if target:
                res = "n/a" if r is None else ("PASS" if r >= target else "FAIL")
                checks.append({"mode": f"{a}/{b}", "check": f"{label} ({a}) >= {target:.2f}x ({b})",
                               "result": res, "detail": fmt(r, "{:.2f}x")})
                row += f" {res} |"
            lines.append(row)
        lines.append("")

    if "d" in med and "i" in med:
        # The fast path on (d) against off (i), same build: what the kernel
        # path gains, and what installing and expiring entries costs the
        # first packets of many short flows.
        compare("d", "i", "fast path: (d) on vs (i) off")
        compare("d", "i", "first-packet path: 1000 short TCP flows at once, (d) vs (i)",
                keys=("flows_per_s",), target=0.90)
    if "i" in med and "j" in med:
        # With the fast path off, this build against the one before it.
        compare("i", "j", "fast path off: (i) this build vs (j) before the fast path",
                keys=("tcp1_gbps", "tcp4_gbps", "pps_rx_k", "flows_per_s"), target=0.95)
    if "i" in med and "g" in med:
        # The cost of inspection: the full pipeline (i) against the same build
        # with inspection off (g), both with every frame through guardwire.
        compare("i", "g", "inspection cost: (i) full pipeline vs (g) inspection off (fast path off)",
                keys=("tcp1_gbps", "tcp4_gbps", "pps_rx_k"), target=0.90)
    if "i" in med and "h" in med:
        # Small ring slots with the copy way for big frames (i, the default)
        # against large slots that hold every frame (h), in the same run.
        compare("i", "h", "ring slots: (i) 2 KiB + copy way vs (h) 68 KiB (fast path off)")

    text = "\n".join(lines) + "\n"
    with open(out_md, "w") as f:
        f.write(text)
    with open(out_json, "w") as f:
        json.dump({"meta": meta, "figures": [k for k, *_ in FIGURES], "medians": med,
                   "samples": nvals, "targets": checks, "rounds": rounds}, f, indent=1)
        f.write("\n")
    sys.stdout.write(text)


def cmd_flows_server(ip, port, secs):
    async def handle(r, w):
        try:
            while await r.read(65536):
                pass
            w.write(b"ok")
            await w.drain()
        except OSError:
            pass
        finally:
            w.close()

    async def run():
        srv = await asyncio.start_server(handle, ip, int(port), backlog=4096)
        async with srv:
            await asyncio.sleep(float(secs))

    asyncio.run(run())


def cmd_flows_client(ip, port, n, nbytes):
    n, nbytes = int(n), int(nbytes)
    payload = b"x" * nbytes

    async def one():
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(ip, int(port)), 10)
            w.write(payload)
            await w.drain()
            w.write_eof()
            ok = await asyncio.wait_for(r.read(2), 10) == b"ok"
            w.close()
            return ok
        except (OSError, asyncio.TimeoutError):
            return False

    async def run():
        t0 = asyncio.get_running_loop().time()
        res = await asyncio.gather(*(one() for _ in range(n)))
        return res, asyncio.get_running_loop().time() - t0

    res, dt = asyncio.run(run())
    done = sum(res)
    print(f"flows_per_s={done / dt:.1f} flows_failed={n - done}")


def main(argv):
    if len(argv) < 2:
        die(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "iperf" and len(args) == 2:
        cmd_iperf(*args)
    elif cmd == "ping" and len(args) == 1:
        cmd_ping(*args)
    elif cmd == "rate" and len(args) in (4, 5):
        cmd_rate(*args)
    elif cmd == "record" and len(args) >= 3:
        cmd_record(args[0], args[1], args[2], args[3:])
    elif cmd == "report" and len(args) >= 3:
        cmd_report(args[0], args[1], args[2], args[3:])
    elif cmd == "flows-server" and len(args) == 3:
        cmd_flows_server(*args)
    elif cmd == "flows-client" and len(args) == 4:
        cmd_flows_client(*args)
    else:
        die(__doc__)


if __name__ == "__main__":
    main(sys.argv)
