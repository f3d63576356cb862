#!/usr/bin/env bash
# Attach/scale benchmark: pod1's TCP throughput through guardwire with 1 vs N live-attached
# pods, attach/detach times, guardwire's RSS and open fds.
# Usage: bench/attach.sh [--pods N] [--rounds R] [--duration S]   (defaults 64, 3, 5)
# Needs root. Builds testbed node "gwat" (testbed/node.sh up gwat --pods N --live) and
# removes it on exit, error or Ctrl-C (testbed/node.sh down gwat).
set -uo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
NODE_SH=$ROOT/testbed/node.sh
GW=${GW_BIN_DIR:-$ROOT/target/release}/guardwire
PREFIX=gwat
WORKERS=2
IPERF_PORT=5201

PODS=64
ROUNDS=3
DURATION=5
CMDLINE="bash bench/attach.sh${*:+ $*}"

usage() {
    sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

while [ $# -gt 0 ]; do
    case $1 in
        --pods) PODS=${2:?}; shift 2 ;;
        --pods=*) PODS=${1#*=}; shift ;;
        --rounds) ROUNDS=${2:?}; shift 2 ;;
        --rounds=*) ROUNDS=${1#*=}; shift ;;
        --duration) DURATION=${2:?}; shift 2 ;;
        --duration=*) DURATION=${1#*=}; shift ;;
        -h|--help) usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
done
if ! [[ $PODS =~ ^[0-9]+$ ]] || ((PODS < 2 || PODS > 120)); then echo "--pods must be 2..120" >&2; exit 2; fi
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "--rounds must be a positive integer" >&2; exit 2; }
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || { echo "--duration must be a positive integer (seconds)" >&2; exit 2; }

[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
for t in ip iperf3 ping python3 timeout ss; do
    command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 1; }
done
[ -x "$GW" ] || { echo "$GW not found: build it first (cargo build --release); this script never builds" >&2; exit 1; }

# Time bounds (seconds).
UP_TIMEOUT=$((120 + 5 * PODS))   # node.sh up: CNI ADD per pod
CLI_TIMEOUT=30                   # one guardwire attach/detach/list/stats call
IPERF_TIMEOUT=$((DURATION + 20))
BG_TIMEOUT=$((DURATION + 12))
DOWN_TIMEOUT=$((60 + 2 * PODS))

STAMP=$(date +%Y-%m-%d-%H%M)
WORK=$(mktemp -d "/tmp/gwat-run.$STAMP.XXXX")
LOGS=$WORK/logs
mkdir -p "$LOGS"
ATT=$WORK/attach.tsv     # round name wall_us daemon_ms
DET=$WORK/detach.tsv     # round name wall_us daemon_ms
RND=$WORK/rounds.tsv     # round key value
MEM=$WORK/mem.tsv        # label attached rss_kib hwm_kib fds threads
: >"$ATT"; : >"$DET"; : >"$RND"; : >"$MEM"

OWN_NODE=0     # 1 once we started `node.sh up`: only then does cleanup tear the node down
CUR=""         # pid of the bounded foreground step (timeout ...), if any
BG=()          # background pings
IPERF_PIDFILE=$WORK/iperf-server.pid
CLK_TCK=$(getconf CLK_TCK)

# shellcheck source=lib/common.sh
. "$ROOT/bench/lib/common.sh"

cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    # node.sh up (or another bounded step) may still run: stop it first (up tears
    # itself down on SIGTERM), so that `down` does not race with it.
    [ -n "$CUR" ] && stop "$CUR" 60
    for p in "${BG[@]}"; do stop "$p" 2; done
    stop_iperf_server
    if [ "$OWN_NODE" = 1 ]; then
        log "tearing down node $PREFIX"
        timeout "$DOWN_TIMEOUT" bash "$NODE_SH" down "$PREFIX" >>"$LOGS/node-down.log" 2>&1 ||
            log "warning: node.sh down $PREFIX failed or timed out (see $LOGS/node-down.log)"
    fi
    [ "$rc" -ne 0 ] && log "exit status $rc; logs kept in $LOGS"
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM


# ---------------------------------------------------------------- guardwire probes
gw_alive() {
    alive "$GW_PID" || die "guardwire (pid $GW_PID) is gone; log tail: $(tail -n 5 "$GW_LOG" 2>/dev/null)"
}

# gw_mem LABEL ATTACHED: RSS, peak RSS, open fds and threads of the daemon.
gw_mem() {
    local rss hwm thr fds
    gw_alive
    rss=$(awk '/^VmRSS:/{print $2}' "/proc/$GW_PID/status")
    hwm=$(awk '/^VmHWM:/{print $2}' "/proc/$GW_PID/status")
    thr=$(awk '/^Threads:/{print $2}' "/proc/$GW_PID/status")
    fds=$(find "/proc/$GW_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$rss" "$hwm" "$fds" "$thr" >>"$MEM"
    # where the memory and fds are, for the record (start, end, and N attached in round 1)
    case $1-$2 in start-* | end-* | r1-"$PODS")
        cat "/proc/$GW_PID/smaps" >"$LOGS/gw-smaps.$1-$2" 2>/dev/null
        ls -l "/proc/$GW_PID/fd" >"$LOGS/gw-fds.$1-$2" 2>/dev/null ;;
    esac
    log "  guardwire with $2 attached: RSS $((rss / 1024)) MiB, $fds fds, $thr threads"
}

gw_ticks() { # utime+stime of the whole process (all threads)
    sed 's/^.*) //' "/proc/$GW_PID/stat" | awk '{print $12 + $13}'
}

rec() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RND"; }

# attach_pod I ROUND
attach_pod() {
    local i=$1 r=$2 nsv t0 t1 out rc ms mode
    nsv=POD_NS_$i
    t0=$(us_now)
    out=$(timeout "$CLI_TIMEOUT" "$GW" attach pod "${!nsv}" --name "p$i" --mode inline \
        --socket "$GW_SOCK" 2>>"$LOGS/cli.err")
    rc=$?
    t1=$(us_now)
    [ $rc = 0 ] || die "attach p$i (${!nsv}) failed (exit $rc): $(tail -n 3 "$LOGS/cli.err")"
    printf '%s\n' "$out" >>"$LOGS/cli.out"
    ms=$(sed -n 's/.*, \([0-9.]*\) ms)$/\1/p' <<<"$out")
    mode=$(sed -n 's/.*(\([a-z]*\), [0-9.]* ms)$/\1/p' <<<"$out")
    [ "$mode" = inline ] || die "p$i attached in mode '$mode', not inline: $out"
    printf '%s\tp%s\t%s\t%s\n' "$r" "$i" "$((t1 - t0))" "${ms:-nan}" >>"$ATT"
}

# detach_pod I ROUND
detach_pod() {
    local i=$1 r=$2 t0 t1 out rc ms
    t0=$(us_now)
    out=$(timeout "$CLI_TIMEOUT" "$GW" detach "p$i" --socket "$GW_SOCK" 2>>"$LOGS/cli.err")
    rc=$?
    t1=$(us_now)
    [ $rc = 0 ] || die "detach p$i failed (exit $rc): $(tail -n 3 "$LOGS/cli.err")"
    printf '%s\n' "$out" >>"$LOGS/cli.out"
    ms=$(sed -n 's/.*(\([0-9.]*\) ms)$/\1/p' <<<"$out")
    printf '%s\tp%s\t%s\t%s\n' "$r" "$i" "$((t1 - t0))" "${ms:-nan}" >>"$DET"
}

attached_count() {
    timeout "$CLI_TIMEOUT" "$GW" list --json --socket "$GW_SOCK" 2>>"$LOGS/cli.err" |
        python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo "?"
}

wait_listen() { # wait_listen NS PORT: up to 5 s
    local i
    for ((i = 0; i < 50; i++)); do
        ip netns exec "$1" ss -Htln "sport = :$2" 2>/dev/null | grep -q . && return 0
        sleep 0.1
    done
    return 1
}

# run_iperf TAG ROUND KEY: pod1 -> peer, TCP x1; records KEY_gbps KEY_retr KEY_gw_cores.
run_iperf() {
    local tag=$1 r=$2 key=$3 json=$LOGS/$1.iperf.json c0 c1 t0 t1 out rc
    gw_alive
    rm -f "$IPERF_PIDFILE"
    timeout 10 ip netns exec "$NS_PEER" iperf3 -s -1 -D -B "$PEER_IP" -p "$IPERF_PORT" \
        -I "$IPERF_PIDFILE" --logfile "$LOGS/$tag.iperf-server.log" ||
        die "iperf3 server did not start in $NS_PEER"
    wait_listen "$NS_PEER" "$IPERF_PORT" || die "iperf3 server not listening on $PEER_IP:$IPERF_PORT"
    c0=$(gw_ticks); t0=$(us_now)
    bounded "$IPERF_TIMEOUT" "$json" "$LOGS/$tag.iperf.err" \
        ip netns exec "$POD_NS_1" iperf3 -c "$PEER_IP" -p "$IPERF_PORT" -t "$DURATION" -J \
        --connect-timeout 3000
    rc=$?
    c1=$(gw_ticks); t1=$(us_now)
    # the one-off server exits by itself; give it a moment, then stop it
    for _ in $(seq 20); do [ -f "$IPERF_PIDFILE" ] || break; alive "$(tr -dc 0-9 <"$IPERF_PIDFILE")" || break; sleep 0.1; done
    stop_iperf_server
    out=$(python3 - "$json" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception as e:
    sys.exit(f"cannot parse: {e}")
if d.get("error"):
    sys.exit(d["error"])
recv = d.get("end", {}).get("sum_received", {})
sent = d.get("end", {}).get("sum_sent", {})
if "bits_per_second" not in recv:
    sys.exit("no end.sum_received")
print(f'{recv["bits_per_second"] / 1e9:.4f} {sent.get("retransmits", "nan")}')
PY
    ) || die "iperf3 $tag (exit $rc): $out; $(tail -n 3 "$LOGS/$tag.iperf.err")"
    local gbps=${out% *} retr=${out#* } cores
    cores=$(awk -v c="$((c1 - c0))" -v hz="$CLK_TCK" -v us="$((t1 - t0))" 'BEGIN{printf "%.3f", c / hz / (us / 1e6)}')
    rec "$r" "${key}_gbps" "$gbps"
    rec "$r" "${key}_retr" "$retr"
    rec "$r" "${key}_gw_cores" "$cores"
    log "  TCP pod1 -> peer, $key: $gbps Gbit/s, $retr retransmits, guardwire $cores cores"
}

# start_bg ROUND: ping -i 0.2 from pod2..podN to the peer for the iperf window.
start_bg() {
    local r=$1 i nsv
    BG=()
    for ((i = 2; i <= PODS; i++)); do
        nsv=POD_NS_$i
        timeout "$BG_TIMEOUT" ip netns exec "${!nsv}" ping -n -q -i 0.2 -w $((DURATION + 3)) "$PEER_IP" \
            >"$LOGS/r$r.bg-p$i.ping" 2>&1 &
        BG+=($!)
    done
}

# wait_bg ROUND: wait for the pings (bounded by their timeout), record sent/received.
wait_bg() {
    local r=$1 p sent=0 recv=0 i s v
    for p in "${BG[@]}"; do wait "$p" 2>/dev/null; done
    BG=()
    for ((i = 2; i <= PODS; i++)); do
        read -r s v < <(sed -n 's/^\([0-9]*\) packets transmitted, \([0-9]*\) received.*/\1 \2/p' \
            "$LOGS/r$r.bg-p$i.ping")
        sent=$((sent + ${s:-0})); recv=$((recv + ${v:-0}))
    done
    rec "$r" bg_ping_sent "$sent"
    rec "$r" bg_ping_recv "$recv"
    log "  background pings from p2..p$PODS: $recv/$sent replies"
}

# ---------------------------------------------------------------- node
warn_if_busy
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

if [ -e "${GW_TESTBED_STATE_ROOT:-/run/guardwire-testbed}/$PREFIX" ] ||
    ip netns list 2>/dev/null | grep -Eq "^$PREFIX-"; then
    die "node $PREFIX already exists (not ours: left untouched); remove it with: bash testbed/node.sh down $PREFIX"
fi

log "node $PREFIX: $PODS CNI pods, guardwire --live with $WORKERS workers (logs: $LOGS)"
OWN_NODE=1
t0=$(us_now)
bounded "$UP_TIMEOUT" "$WORK/node.env" "$LOGS/node-up.log" \
    bash "$NODE_SH" up "$PREFIX" --pods "$PODS" --live --workers "$WORKERS" ||
    die "node.sh up failed or timed out after ${UP_TIMEOUT}s: $(tail -n 5 "$LOGS/node-up.log")"
UP_SECS=$(awk -v us="$(( $(us_now) - t0 ))" 'BEGIN{printf "%.1f", us / 1e6}')
grep -Evq '^[A-Z][A-Z0-9_]*=' "$WORK/node.env" && die "unexpected line in node.sh env output ($WORK/node.env)"
eval "$(cat "$WORK/node.env")"
for v in GW_SOCK GW_PID GW_LOG NS_PEER PEER_IP NPODS POD_NS_1 "POD_NS_$PODS"; do
    [ -n "${!v:-}" ] || die "node.sh env has no $v"
done
[ "${NPODS:-}" = "$PODS" ] || die "node has $NPODS pods, asked for $PODS"
if [ "$(cat "/proc/$GW_PID/comm" 2>/dev/null)" != guardwire ]; then
    die "GW_PID $GW_PID is not a guardwire process ($(cat "/proc/$GW_PID/comm" 2>/dev/null))"
fi
log "node up in ${UP_SECS}s; guardwire pid $GW_PID, socket $GW_SOCK"

# ---------------------------------------------------------------- measurement
gw_mem start 0
attach_pod 1 0
for ((r = 1; r <= ROUNDS; r++)); do
    log "round $r/$ROUNDS"
    n=$(attached_count)
    [ "$n" = 1 ] || die "round $r: $n workloads attached, expected 1"
    gw_mem "r$r" 1
    run_iperf "r$r.one" "$r" one

    t0=$(us_now)
    for ((i = 2; i <= PODS; i++)); do attach_pod "$i" "$r"; done
    log "  attached p2..p$PODS in $(( ($(us_now) - t0) / 1000 )) ms"
    n=$(attached_count)
    [ "$n" = "$PODS" ] || die "round $r: $n workloads attached, expected $PODS"
    gw_mem "r$r" "$PODS"
    timeout "$CLI_TIMEOUT" "$GW" stats --json --socket "$GW_SOCK" >"$LOGS/r$r.stats-before.json" 2>>"$LOGS/cli.err"
    start_bg "$r"
    sleep 1
    run_iperf "r$r.all" "$r" all
    wait_bg "$r"
    timeout "$CLI_TIMEOUT" "$GW" stats --json --socket "$GW_SOCK" >"$LOGS/r$r.stats-after.json" 2>>"$LOGS/cli.err"

    t0=$(us_now)
    for ((i = 2; i <= PODS; i++)); do detach_pod "$i" "$r"; done
    log "  detached p2..p$PODS in $(( ($(us_now) - t0) / 1000 )) ms"
done
gw_mem end 1
detach_pod 1 "$ROUNDS"
gw_mem end 0
[ "$(attached_count)" = 0 ] || log "warning: workloads still attached after the last detach"
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
cp "$GW_LOG" "$LOGS/guardwire.log" 2>/dev/null

# ---------------------------------------------------------------- report
mkdir -p "$BENCH/results"
OUT=$BENCH/results/attach-$STAMP
[ -e "$OUT.md" ] && OUT=$OUT-$(date +%S)
# the checkout's HEAD, which need not be what the binary was built from: say so
GW_INFO="binary modified $(date -u -r "$GW" '+%Y-%m-%d %H:%M UTC'), checkout HEAD $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
M_DATE=$(date '+%Y-%m-%d %H:%M %Z')
M_CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
M_KERNEL=$(uname -r)
M_NPROC=$(nproc)
export M_DATE M_CPU M_KERNEL M_NPROC M_COMMAND=$CMDLINE M_GW=$GW_INFO \
    M_PODS=$PODS M_ROUNDS=$ROUNDS M_DURATION=$DURATION M_WORKERS=$WORKERS M_UP=$UP_SECS \
    M_LOAD="start $LOAD_START, end $LOAD_END" M_LOGS=$LOGS \
    M_BUSY=${busy:+other heavy processes were running at start}
python3 - "$WORK" "$OUT" <<'PY' || die "report failed"
import json, math, os, statistics, sys
work, out = sys.argv[1], sys.argv[2]
E = os.environ
meta = {
    "date": E["M_DATE"], "command": E["M_COMMAND"], "kernel": E["M_KERNEL"],
    "nproc": int(E["M_NPROC"]), "cpu": E["M_CPU"], "guardwire": E["M_GW"],
    "pods": int(E["M_PODS"]), "rounds": int(E["M_ROUNDS"]), "duration_s": int(E["M_DURATION"]),
    "workers": int(E["M_WORKERS"]), "mode": "inline", "node_up_s": float(E["M_UP"]),
    "loadavg": E["M_LOAD"], "logs": E["M_LOGS"],
}
PY_BUSY = E.get("M_BUSY", "")

def rows(name):
    with open(f"{work}/{name}") as f:
        return [l.rstrip("\n").split("\t") for l in f if l.strip()]

def num(s):
    try:
        v = float(s)
        return None if math.isnan(v) else v
    except ValueError:
        return None

def pct(vals, p):  # nearest rank
    v = sorted(x for x in vals if x is not None)
    if not v:
        return None
    return v[max(1, math.ceil(p / 100 * len(v))) - 1]

def med(vals):
    v = [x for x in vals if x is not None]
    return statistics.median(v) if v else None

ops = {}
for kind, f in (("attach", "attach.tsv"), ("detach", "detach.tsv")):
    ops[kind] = [{"round": int(r), "workload": n, "wall_ms": int(us) / 1000, "daemon_ms": num(ms)}
                 for r, n, us, ms in rows(f)]
rounds = {}
for r, k, v in rows("rounds.tsv"):
    rounds.setdefault(int(r), {"round": int(r)})[k] = num(v)
mem = [{"label": l, "attached": int(a), "rss_kib": int(rss), "hwm_kib": int(hwm), "fds": int(fds),
        "threads": int(thr)} for l, a, rss, hwm, fds, thr in rows("mem.tsv")]
N = meta["pods"]
for m in mem:
    if m["label"].startswith("r"):
        key = "one" if m["attached"] == 1 else "all"
        rounds[int(m["label"][1:])].update({f"{key}_rss_kib": m["rss_kib"], f"{key}_fds": m["fds"],
                                            f"{key}_threads": m["threads"]})
rl = [rounds[k] for k in sorted(rounds)]

def rmed(key):
    return med([r.get(key) for r in rl])

def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b

summary = {}
for kind in ("attach", "detach"):
    for src in ("wall_ms", "daemon_ms"):
        vals = [o[src] for o in ops[kind]]
        summary[f"{kind}_{src}"] = {"n": len(vals), "p50": pct(vals, 50), "p99": pct(vals, 99),
                                    "max": pct(vals, 100)}
for key in ("gbps", "retr", "gw_cores", "rss_kib", "fds", "threads"):
    one, al = rmed(f"one_{key}"), rmed(f"all_{key}")
    summary[key] = {"one": one, "all": al, "ratio_all_to_one": ratio(al, one)}
sent = int(sum(r.get("bg_ping_sent") or 0 for r in rl))
recv = int(sum(r.get("bg_ping_recv") or 0 for r in rl))
summary["bg_ping"] = {"sent": sent, "received": recv}

def fmt(v, f):
    return "n/a" if v is None else f.format(v)

L = []
L.append(f"# guardwire attach/scale: 1 vs {N} attached pods, {meta['date']}")
L.append("")
L.append(f"- machine: kernel {meta['kernel']}, nproc {meta['nproc']}, {meta['cpu']}; "
         f"loadavg {meta['loadavg']}" + (f" ({PY_BUSY})" if PY_BUSY else ""))
L.append(f"- command: `{meta['command']}`")
L.append(f"- guardwire {meta['guardwire']}; testbed node `gwat` ({N} CNI bridge pods, "
         f"`--live`, {meta['workers']} workers), every pod attached `--mode inline`")
L.append(f"- TCP: iperf3 x1 pod1 -> peer, {meta['duration_s']} s, receiver Gbit/s and sender "
         f"retransmits, median of {meta['rounds']} rounds (1 and {N} alternating); "
         f"with {N} attached, p2..p{N} each ping the peer every 0.2 s "
         f"({recv}/{sent} replies over all rounds)")
L.append("")
L.append(f"| figure | 1 attached | {N} attached | {N}/1 |")
L.append("|---|---:|---:|---:|")
for key, label, f in (("gbps", "TCP Gbit/s", "{:.2f}"), ("retr", "TCP retransmits", "{:.0f}"),
                      ("gw_cores", "guardwire cores during TCP", "{:.2f}"),
                      ("rss_kib", "guardwire RSS MiB", None), ("fds", "guardwire open fds", "{:.0f}"),
                      ("threads", "guardwire threads", "{:.0f}")):
    s = summary[key]
    if key == "rss_kib":
        a, b = fmt(s["one"] and s["one"] / 1024, "{:.1f}"), fmt(s["all"] and s["all"] / 1024, "{:.1f}")
    else:
        a, b = fmt(s["one"], f), fmt(s["all"], f)
    L.append(f"| {label} | {a} | {b} | {fmt(s['ratio_all_to_one'], '{:.2f}')} |")
L.append("")
L.append("| ms (all attaches / detaches) | n | p50 | p99 | max |")
L.append("|---|---:|---:|---:|---:|")
for kind in ("attach", "detach"):
    for src, what in (("wall_ms", "CLI wall time"), ("daemon_ms", "daemon-reported")):
        s = summary[f"{kind}_{src}"]
        L.append(f"| {kind}, {what} | {s['n']} | {fmt(s['p50'], '{:.1f}')} | "
                 f"{fmt(s['p99'], '{:.1f}')} | {fmt(s['max'], '{:.1f}')} |")
L.append("")
L.append("Per round:")
L.append("")
L.append(f"| round | Gbit/s 1 | Gbit/s {N} | retr 1 | retr {N} | RSS MiB 1 | RSS MiB {N} | fds 1 | fds {N} | bg ping replies |")
L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rl:
    L.append(f"| {r['round']} | {fmt(r.get('one_gbps'), '{:.2f}')} | {fmt(r.get('all_gbps'), '{:.2f}')} | "
             f"{fmt(r.get('one_retr'), '{:.0f}')} | {fmt(r.get('all_retr'), '{:.0f}')} | "
             f"{fmt(r.get('one_rss_kib', 0) / 1024, '{:.1f}')} | {fmt(r.get('all_rss_kib', 0) / 1024, '{:.1f}')} | "
             f"{r.get('one_fds', 'n/a')} | {r.get('all_fds', 'n/a')} | "
             f"{fmt(r.get('bg_ping_recv'), '{:.0f}')}/{fmt(r.get('bg_ping_sent'), '{:.0f}')} |")
L.append("")
L.append("guardwire before/after: " + "; ".join(
    f"{m['label']} ({m['attached']} attached): RSS {m['rss_kib'] / 1024:.1f} MiB, {m['fds']} fds"
    for m in mem if not m["label"].startswith("r")) + ".")
L.append("")
L.append(f"Logs: `{meta['logs']}`. Node setup took {meta['node_up_s']} s. One machine, one run: "
         "compare only figures from the same run.")
md = "\n".join(L) + "\n"
with open(out + ".md", "w") as f:
    f.write(md)
with open(out + ".json", "w") as f:
    json.dump({"meta": meta, "summary": summary, "rounds": rl, "memory": mem,
               "attach": ops["attach"], "detach": ops["detach"]}, f, indent=1)
print(md)
PY
echo "results: $OUT.md"
echo "raw:     $OUT.json"
