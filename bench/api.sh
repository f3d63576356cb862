#!/usr/bin/env bash
# Management-plane cost: pod TCP throughput with the traffic page open vs API idle, and the
# /metrics scrape time with many workloads (against /api/v1/health as the same-run baseline).
# Usage: bench/api.sh [--rounds N] [--only forwarding|metrics] [--quick]
#   --rounds N   rounds of (a) API idle / (b) page open, interleaved (default 3)
#   --only X     one part only: forwarding or metrics
#   --quick      smoke test: 1 round, 20 pods for the metrics part
# Needs root. Builds testbed nodes "bapif" (1 pod) and "bapim" (METRICS_PODS pods, default 110)
# with testbed/node.sh and removes them on exit, error or Ctrl-C (testbed/node.sh down).
set -uo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
HELPER=$BENCH/lib/gwb.py
NODE_SH=$ROOT/testbed/node.sh
BIN_DIR=${GW_BIN_DIR:-$ROOT/target/release}
PREFIX_FWD=bapif
PREFIX_MET=bapim
IPERF_PORT=5201
DURATION=5              # s per iperf3 run
LOAD_RATE=10            # page-open requests per second
SCRAPES=30              # timed requests per endpoint in the metrics part
FWD_TARGET=0.95         # (b)/(a) >= this: loss under 5%
METRICS_TARGET_MS=50    # /metrics median <= this

ROUNDS=3
ONLY=""
QUICK=0
METRICS_PODS=${METRICS_PODS:-110}
CMDLINE="bash bench/api.sh${*:+ $*}"

usage() {
    sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

while [ $# -gt 0 ]; do
    case $1 in
        --rounds) ROUNDS=${2:?}; shift 2 ;;
        --rounds=*) ROUNDS=${1#*=}; shift ;;
        --only) ONLY=${2:?}; shift 2 ;;
        --only=*) ONLY=${1#*=}; shift ;;
        --quick) QUICK=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
done
if [ "$QUICK" = 1 ]; then ROUNDS=1; METRICS_PODS=20; fi
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "--rounds must be a positive integer" >&2; exit 2; }
case $ONLY in ""|forwarding|metrics) ;; *) echo "--only must be forwarding or metrics" >&2; exit 2 ;; esac
if ! [[ $METRICS_PODS =~ ^[0-9]+$ ]] || ((METRICS_PODS < 1)); then
    echo "METRICS_PODS must be a positive integer" >&2; exit 2
fi
DO_FWD=1 DO_MET=1
[ "$ONLY" = metrics ] && DO_FWD=0
[ "$ONLY" = forwarding ] && DO_MET=0

[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
for t in ip iperf3 curl python3 timeout ss; do
    command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 1; }
done
[ -x "$BIN_DIR/guardwire" ] ||
    { echo "$BIN_DIR/guardwire not found: build it first (cargo build --release); this script never builds" >&2; exit 1; }
if [ "$DO_MET" = 1 ]; then
    # node.sh refuses more than MAX_PODS pods: say so now, not after the forwarding part.
    cap=$(sed -n 's/^MAX_PODS=\([0-9]*\).*/\1/p' "$NODE_SH" | head -n 1)
    if [ -n "$cap" ] && ((METRICS_PODS > cap)); then
        echo "testbed/node.sh caps --pods at MAX_PODS=$cap; the metrics part needs $METRICS_PODS" \
             "(raise MAX_PODS, or set METRICS_PODS=$cap, or use --only forwarding)" >&2
        exit 2
    fi
fi
PY=$(command -v python3)

# Time bounds (seconds).
IPERF_TIMEOUT=$((DURATION + 20))
LOAD_MAX_S=$((DURATION + 15))        # the load generator stops by itself after this at the latest
LOAD_TIMEOUT=$((LOAD_MAX_S + 10))    # and is killed after this
CURL_MAX_S=10                        # one API request
up_timeout() { echo $((120 + 5 * $1)); }    # node.sh up: CNI ADD per pod
down_timeout() { echo $((60 + 2 * $1)); }

STAMP=$(date +%Y-%m-%d-%H%M)
WORK=$(mktemp -d "/tmp/bapi-run.$STAMP.XXXX")
LOGS=$WORK/logs
mkdir -p "$LOGS"
FWD=$WORK/forwarding.tsv   # round cond key value
SCR=$WORK/scrapes.tsv      # endpoint i http_code seconds bytes
MCHK=$WORK/metrics-check.json
: >"$FWD"; : >"$SCR"

declare -A NODE_PODS=()   # prefix -> pods, for every node we started `node.sh up` for
CUR=""                    # pid of the bounded foreground step (timeout ...), if any
BG=()                     # the load generator
IPERF_PIDFILE=$WORK/iperf-server.pid
AUTH_HDR=$WORK/auth.header
CLK_TCK=$(getconf CLK_TCK)
GW_SNAP=""                # snapshot of the guardwire binary the nodes run
FWD_UP_SECS="" MET_UP_SECS=""

# shellcheck source=lib/common.sh
. "$ROOT/bench/lib/common.sh"

node_down() {   # node_down PREFIX: only for nodes this run started
    local p=$1
    [ -n "${NODE_PODS[$p]:-}" ] || return 0
    log "tearing down node $p"
    timeout "$(down_timeout "${NODE_PODS[$p]}")" bash "$NODE_SH" down "$p" >>"$LOGS/$p-down.log" 2>&1 ||
        log "warning: node.sh down $p failed or timed out (see $LOGS/$p-down.log)"
    unset "NODE_PODS[$p]"
}

cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    # node.sh up (or another bounded step) may still run: stop it first (up tears
    # itself down on SIGTERM), so that `down` does not race with it.
    [ -n "$CUR" ] && stop "$CUR" 60
    for p in "${BG[@]}"; do stop "$p" 2; done
    stop_iperf_server
    for p in "${!NODE_PODS[@]}"; do node_down "$p"; done
    rm -f "$AUTH_HDR"
    [ -n "${GW_SNAP:-}" ] && rm -rf "$GW_SNAP"   # the binary snapshot; logs stay
    [ "$rc" -ne 0 ] && log "exit status $rc; logs kept in $LOGS"
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM


# ---------------------------------------------------------------- the page's load generator
# Runs in MGMT_NS: LOAD_RATE GETs/s over one kept-alive connection, cycling through the
# traffic page's polling mix, plus one SSE connection to /api/v1/log/stream, until the stop
# file appears, --max-seconds pass or rate * max-seconds requests are made. Writes "ready"
# once the stream answered (or failed), and a JSON report on stdout.
LOADGEN=$WORK/loadgen.py
cat >"$LOADGEN" <<'PY'
import argparse, http.client, json, math, os, socket, statistics, sys, threading, time

ap = argparse.ArgumentParser()
ap.add_argument("--host", required=True)
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--token-file", required=True)
ap.add_argument("--rate", type=float, default=10.0)
ap.add_argument("--max-seconds", type=float, required=True)
ap.add_argument("--stop-file", required=True)
ap.add_argument("--ready-file", required=True)
a = ap.parse_args()

PATHS = ["/api/v1/log?limit=100", "/api/v1/workloads", "/api/v1/usage?window=1",
         "/api/v1/flows?limit=100", "/api/v1/stats"]
with open(a.token_file) as f:
    token = f.read().strip()
HDR = {"Authorization": "Bearer " + token, "Accept": "application/json"}
T0 = time.monotonic()
DEADLINE = T0 + a.max_seconds
MAX_REQ = int(a.rate * a.max_seconds)
stop = threading.Event()

def should_stop():
    return stop.is_set() or time.monotonic() >= DEADLINE or os.path.exists(a.stop_file)

def pct(v, p):  # nearest rank
    v = sorted(v)
    return v[max(1, math.ceil(p / 100 * len(v))) - 1] if v else None

sse = {"status": None, "connect_ms": None, "bytes": 0, "events": 0, "closed_by_server": False,
       "error": None, "body": None, "open_s": None}
ready = threading.Event()

def stream():
    s = None
    t_open = None
    try:
        ts = time.monotonic()
        s = socket.create_connection((a.host, a.port), timeout=5)
        s.sendall((f"GET /api/v1/log/stream HTTP/1.1\r\nHost: {a.host}:{a.port}\r\n"
                   f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n"
                   "Cache-Control: no-cache\r\n\r\n").encode())
        s.settimeout(0.5)
        head, tail, pat = b"", b"", b"event: record"
        while not should_stop():
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                sse["closed_by_server"] = True
                break
            if sse["status"] is None:
                head += chunk
                if b"\r\n\r\n" not in head:
                    if len(head) > 65536:
                        raise ValueError("no end of headers in 64 KiB")
                    continue
                h, _, chunk = head.partition(b"\r\n\r\n")
                sse["status"] = int(h.split(None, 2)[1])
                sse["connect_ms"] = round((time.monotonic() - ts) * 1000, 2)
                t_open = time.monotonic()
                if sse["status"] != 200:
                    sse["body"] = (chunk[:300]).decode("utf-8", "replace")
                    break
                ready.set()
            sse["bytes"] += len(chunk)
            data = tail + chunk
            sse["events"] += data.count(pat)   # tail is shorter than pat: no double count
            tail = data[-(len(pat) - 1):]
    except Exception as e:
        sse["error"] = f"{type(e).__name__}: {e}"
    finally:
        if t_open is not None:
            sse["open_s"] = round(time.monotonic() - t_open, 2)
        if s is not None:
            s.close()
        ready.set()

th = threading.Thread(target=stream, daemon=True)
th.start()
ready.wait(5)
with open(a.ready_file, "w") as f:
    f.write(f"sse={sse['status']}\n")

lat = {p: [] for p in PATHS}
size = {p: [] for p in PATHS}
codes = {}
non200, errors = [], []
late = 0
conn = None
n = 0
t_first = time.monotonic()
next_t = t_first
period = 1.0 / a.rate
while n < MAX_REQ and not should_stop():
    now = time.monotonic()
    if next_t > now:
        time.sleep(next_t - now)
        if should_stop():
            break
    p = PATHS[n % len(PATHS)]
    n += 1
    ts = time.monotonic()
    try:
        if conn is None:
            conn = http.client.HTTPConnection(a.host, a.port, timeout=5)
        conn.request("GET", p, headers=HDR)
        r = conn.getresponse()
        body = r.read()
        el = time.monotonic() - ts
        codes[r.status] = codes.get(r.status, 0) + 1
        lat[p].append(round(el * 1000, 3))
        size[p].append(len(body))
        if r.status != 200:
            non200.append({"path": p, "status": r.status, "t_s": round(ts - T0, 2),
                           "body": body[:300].decode("utf-8", "replace")})
        if (r.getheader("connection") or "").lower() == "close":
            conn.close()
            conn = None
    except Exception as e:
        errors.append({"path": p, "t_s": round(ts - T0, 2), "error": f"{type(e).__name__}: {e}"})
        if conn is not None:
            conn.close()
        conn = None
    # a browser's timer does not catch up on missed ticks: neither do we
    next_t += period
    if next_t < time.monotonic():
        late += 1
        next_t = time.monotonic()
t_last = time.monotonic()
if conn is not None:
    conn.close()
stop.set()
th.join(3)

per = {}
for p in PATHS:
    v = lat[p]
    per[p] = {"n": len(v), "median_ms": statistics.median(v) if v else None, "p95_ms": pct(v, 95),
              "max_ms": max(v) if v else None,
              "avg_bytes": round(sum(size[p]) / len(size[p])) if size[p] else None,
              "latencies_ms": v}
dur = t_last - t_first
ct = os.times()   # this process, all threads: the client's own cost, on the same cores
json.dump({"cpu_s": round(ct.user + ct.system, 3),
           "cpu_cores": round((ct.user + ct.system) / (time.monotonic() - T0), 3),
           "requests": n, "ok": codes.get(200, 0), "codes": {str(k): v for k, v in codes.items()},
           "non200": len(non200), "non200_samples": non200[:20], "errors": len(errors),
           "error_samples": errors[:20], "late": late, "seconds": round(dur, 3),
           "rate": round(n / dur, 2) if dur > 0 else None, "paths": per, "sse": sse},
          sys.stdout, indent=1)
print()
PY

# ---------------------------------------------------------------- node and API helpers
# node_up PREFIX PODS: node.sh up, env loaded into this shell.
node_up() {
    local p=$1 pods=$2 env=$WORK/$1.env t0 v
    if [ -e "${GW_TESTBED_STATE_ROOT:-/run/guardwire-testbed}/$p" ] ||
        ip netns list 2>/dev/null | grep -Eq "^$p-"; then
        die "node $p already exists (not ours: left untouched); remove it with: bash testbed/node.sh down $p"
    fi
    log "node $p: $pods CNI pods, guardwire (static steering, default workers)"
    NODE_PODS[$p]=$pods
    t0=$(us_now)
    bounded "$(up_timeout "$pods")" "$env" "$LOGS/$p-up.log" \
        env GW_BIN_DIR="$GW_SNAP" bash "$NODE_SH" up "$p" --pods "$pods" ||
        die "node.sh up $p failed or timed out: $(tail -n 5 "$LOGS/$p-up.log")"
    UP_SECS=$(awk -v us="$(( $(us_now) - t0 ))" 'BEGIN{printf "%.1f", us / 1e6}')
    grep -Evq '^[A-Z][A-Z0-9_]*=' "$env" && die "unexpected line in node.sh env output ($env)"
    eval "$(cat "$env")"
    for v in GW_PID GW_LOG NS_PEER PEER_IP NPODS POD_NS_1 MGMT_NS GW_API_URL GW_ADMIN_TOKEN_FILE WORKLOADS; do
        [ -n "${!v:-}" ] || die "node.sh env of $p has no $v"
    done
    [ "$NPODS" = "$pods" ] || die "node $p has $NPODS pods, asked for $pods"
    [ "$(cat "/proc/$GW_PID/comm" 2>/dev/null)" = guardwire ] ||
        die "GW_PID $GW_PID is not a guardwire process"
    [ -r "$GW_ADMIN_TOKEN_FILE" ] || die "no admin token at $GW_ADMIN_TOKEN_FILE"
    (umask 077; printf 'Authorization: Bearer %s\n' "$(tr -d ' \r\n' <"$GW_ADMIN_TOKEN_FILE")" >"$AUTH_HDR")
    API_BASE=${GW_API_URL%/}
    API_HOSTPORT=${API_BASE#http://}
    case $GW_API_URL in http://*) ;; *) die "GW_API_URL $GW_API_URL is not plain http://" ;; esac
    log "node $p up in ${UP_SECS}s; guardwire pid $GW_PID, API $GW_API_URL from $MGMT_NS"
    wait_api || die "API $GW_API_URL/api/v1/health does not answer 200 from $MGMT_NS"
}

# api_get PATH OUT: GET from MGMT_NS; prints "HTTP_CODE TIME_TOTAL SIZE".
api_get() {
    timeout $((CURL_MAX_S + 5)) ip netns exec "$MGMT_NS" curl -s -o "$2" -H "@$AUTH_HDR" \
        --max-time "$CURL_MAX_S" -w '%{http_code} %{time_total} %{size_download}' "$API_BASE$1" \
        2>>"$LOGS/curl.err"
}

wait_api() {   # up to 10 s for /api/v1/health to answer 200
    local i out
    for ((i = 0; i < 20; i++)); do
        out=$(api_get /api/v1/health "$WORK/health.body")
        [ "${out%% *}" = 200 ] && return 0
        sleep 0.5
    done
    log "  last /api/v1/health answer: ${out:-none} $(head -c 300 "$WORK/health.body" 2>/dev/null)"
    return 1
}

gw_alive() {
    alive "$GW_PID" || die "guardwire (pid $GW_PID) is gone; log tail: $(tail -n 5 "$GW_LOG" 2>/dev/null)"
}

# gw_ticks: "TOTAL WORKERS API" utime+stime ticks of the process, its gw-worker-* threads
# and its gw-api thread.
gw_ticks() {
    local total t comm w=0 api=0 v
    total=$(sed 's/^.*) //' "/proc/$GW_PID/stat" | awk '{print $12 + $13}')
    for t in /proc/"$GW_PID"/task/*; do
        comm=$(cat "$t/comm" 2>/dev/null) || continue
        case $comm in
            gw-worker-*) v=$(sed 's/^.*) //' "$t/stat" 2>/dev/null | awk '{print $12 + $13}'); w=$((w + ${v:-0})) ;;
            gw-api) v=$(sed 's/^.*) //' "$t/stat" 2>/dev/null | awk '{print $12 + $13}'); api=$((api + ${v:-0})) ;;
        esac
    done
    echo "$total $w $api"
}

cores() {   # cores TICKS0 TICKS1 US
    awk -v c="$(($2 - $1))" -v hz="$CLK_TCK" -v us="$3" 'BEGIN{printf "%.3f", c / hz / (us / 1e6)}'
}

rec() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$FWD"; }

wait_listen() { # wait_listen NS PORT: up to 5 s
    local i
    for ((i = 0; i < 50; i++)); do
        ip netns exec "$1" ss -Htln "sport = :$2" 2>/dev/null | grep -q . && return 0
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------- part 1: forwarding
# fwd_run ROUND COND: COND a = API idle, b = page open (load generator for the whole iperf run).
fwd_run() {
    local r=$1 c=$2 tag=r$1.$2 json=$LOGS/r$1.$2.iperf.json
    local lg="" lgout=$LOGS/r$1.$2.loadgen.json stopf=$WORK/$tag.stop readyf=$WORK/$tag.ready
    local k0 k1 t0 t1 out rc i
    gw_alive
    rm -f "$IPERF_PIDFILE"
    timeout 10 ip netns exec "$NS_PEER" iperf3 -s -1 -D -B "$PEER_IP" -p "$IPERF_PORT" \
        -I "$IPERF_PIDFILE" --logfile "$LOGS/$tag.iperf-server.log" ||
        die "iperf3 server did not start in $NS_PEER"
    wait_listen "$NS_PEER" "$IPERF_PORT" || die "iperf3 server not listening on $PEER_IP:$IPERF_PORT"
    if [ "$c" = b ]; then
        rm -f "$stopf" "$readyf"
        timeout "$LOAD_TIMEOUT" ip netns exec "$MGMT_NS" "$PY" "$LOADGEN" \
            --host "${API_HOSTPORT%%:*}" --port "${API_HOSTPORT##*:}" \
            --token-file "$GW_ADMIN_TOKEN_FILE" --rate "$LOAD_RATE" --max-seconds "$LOAD_MAX_S" \
            --stop-file "$stopf" --ready-file "$readyf" >"$lgout" 2>"$LOGS/$tag.loadgen.err" &
        lg=$!
        BG+=("$lg")
        for ((i = 0; i < 100; i++)); do [ -s "$readyf" ] && break; alive "$lg" || break; sleep 0.1; done
        if [ ! -s "$readyf" ]; then
            log "  warning: load generator not ready after 10 s: $(tail -n 3 "$LOGS/$tag.loadgen.err")"
        elif ! grep -q '^sse=200$' "$readyf"; then
            log "  warning: the SSE stream did not answer 200 ($(cat "$readyf"))"
        fi
        sleep 0.5   # the polling is under way before the TCP run starts
    fi
    read -r -a k0 < <(gw_ticks); t0=$(us_now)
    bounded "$IPERF_TIMEOUT" "$json" "$LOGS/$tag.iperf.err" \
        ip netns exec "$POD_NS_1" iperf3 -c "$PEER_IP" -p "$IPERF_PORT" -t "$DURATION" -J \
        --connect-timeout 3000
    rc=$?
    read -r -a k1 < <(gw_ticks); t1=$(us_now)
    if [ -n "$lg" ]; then
        touch "$stopf"
        wait "$lg" 2>/dev/null
        BG=()
        [ -s "$lgout" ] || log "  warning: the load generator wrote no report: $(tail -n 3 "$LOGS/$tag.loadgen.err")"
    fi
    # the one-off server exits by itself; give it a moment, then stop it
    for _ in $(seq 20); do [ -f "$IPERF_PIDFILE" ] || break; alive "$(tr -dc 0-9 <"$IPERF_PIDFILE")" || break; sleep 0.1; done
    stop_iperf_server
    if ! out=$(python3 "$HELPER" iperf "$json" tcp 2>&1); then
        log "  iperf3 $tag (exit $rc): $out; $(tail -n 3 "$LOGS/$tag.iperf.err")"
        rec "$r" "$c" error "iperf3 failed"
        return 0
    fi
    local kv gbps="" retr=""
    for kv in $out; do
        case $kv in tcp_gbps=*) gbps=${kv#*=} ;; tcp_retr=*) retr=${kv#*=} ;; esac
    done
    local us=$((t1 - t0)) gw wk api
    gw=$(cores "${k0[0]}" "${k1[0]}" "$us"); wk=$(cores "${k0[1]}" "${k1[1]}" "$us")
    api=$(cores "${k0[2]}" "${k1[2]}" "$us")
    rec "$r" "$c" gbps "$gbps"; rec "$r" "$c" retr "$retr"
    rec "$r" "$c" gw_cores "$gw"; rec "$r" "$c" worker_cores "$wk"; rec "$r" "$c" api_cores "$api"
    local extra=""
    if [ -n "$lg" ] && [ -s "$lgout" ]; then
        extra=$(python3 - "$lgout" <<'PYS' 2>/dev/null
import json, sys
d = json.load(open(sys.argv[1]))
s = d["sse"]
print(f"; page: {d['requests']} requests ({d['rate']}/s), {d['non200']} non-200, {d['errors']} errors, "
      f"load generator {d['cpu_cores']} cores, "
      f"SSE {s['status']} {s['events']} events{' ERROR ' + s['error'] if s['error'] else ''}")
PYS
        )
    fi
    log "  ($c) TCP pod1 -> peer: $gbps Gbit/s, $retr retr, guardwire $gw cores (workers $wk, gw-api $api)$extra"
}

part_forwarding() {
    local r
    node_up "$PREFIX_FWD" 1
    FWD_UP_SECS=$UP_SECS
    for ((r = 1; r <= ROUNDS; r++)); do
        log "forwarding round $r/$ROUNDS"
        fwd_run "$r" a
        sleep 1
        fwd_run "$r" b
        sleep 1
    done
    cp "$GW_LOG" "$LOGS/$PREFIX_FWD-guardwire.log" 2>/dev/null
    node_down "$PREFIX_FWD"
}

# ---------------------------------------------------------------- part 2: /metrics
scrape() {   # scrape ENDPOINT I OUT
    local out code secs bytes
    out=$(api_get "$1" "$3")
    # "000 ..." when curl got no answer
    read -r code secs bytes <<<"${out:-000 0 0}"
    printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "${code:-000}" "${secs:-0}" "${bytes:-0}" >>"$SCR"
    [ "${code:-000}" = 200 ] || log "  $1 #$2: HTTP ${code:-000} $(head -c 200 "$3" 2>/dev/null)"
}

part_metrics() {
    local i
    node_up "$PREFIX_MET" "$METRICS_PODS"
    MET_UP_SECS=$UP_SECS
    # warm-up, not counted
    api_get /metrics "$WORK/metrics.warm" >/dev/null
    api_get /api/v1/health "$WORK/health.warm" >/dev/null
    log "metrics: $SCRAPES scrapes of /metrics and of /api/v1/health, interleaved, $METRICS_PODS workloads"
    for ((i = 1; i <= SCRAPES; i++)); do
        gw_alive
        scrape /metrics "$i" "$LOGS/metrics.body"
        scrape /api/v1/health "$i" "$LOGS/health.body"
        sleep 0.1
    done
    python3 - "$LOGS/metrics.body" "$WORKLOADS" >"$MCHK" <<'PYS' || die "cannot check the /metrics body"
import json, re, sys
body = open(sys.argv[1], errors="replace").read()
want = [w for w in sys.argv[2].split(",") if w]
seen, lines = set(), 0
for line in body.splitlines():
    if line.startswith("guardwire_port_rx_frames_total{"):
        lines += 1
        m = re.search(r'workload="([^"]*)"', line)
        if m:
            seen.add(m.group(1))
print(json.dumps({"expected": len(want), "distinct": len(seen), "rx_frames_lines": lines,
                  "missing": sorted(set(want) - seen)[:20], "unexpected": sorted(seen - set(want))[:20],
                  "body_bytes": len(body.encode()), "body_lines": body.count("\n")}))
PYS
    log "  $(cat "$MCHK")"
    cp "$GW_LOG" "$LOGS/$PREFIX_MET-guardwire.log" 2>/dev/null
    node_down "$PREFIX_MET"
}

# ---------------------------------------------------------------- main
warn_if_busy
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# Run a snapshot: a rebuild during the run must not change what is measured.
mkdir -p "$WORK/bin" && GW_SNAP=$WORK/bin
cp "$BIN_DIR/guardwire" "$GW_SNAP/guardwire" || die "cannot copy $BIN_DIR/guardwire"
GW_INFO="binary modified $(date -u -r "$BIN_DIR/guardwire" '+%Y-%m-%d %H:%M UTC'), sha256 $(sha256sum "$GW_SNAP/guardwire" | cut -c1-12), checkout HEAD $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
log "work dir $WORK; rounds $ROUNDS; parts:$([ $DO_FWD = 1 ] && echo ' forwarding')$([ $DO_MET = 1 ] && echo " metrics ($METRICS_PODS pods)"); guardwire $GW_INFO"

[ "$DO_FWD" = 1 ] && part_forwarding
[ "$DO_MET" = 1 ] && part_metrics
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
mkdir -p "$BENCH/results"
OUT=$BENCH/results/api-$STAMP
[ -e "$OUT.md" ] && OUT=$OUT-$(date +%S)
export M_DATE="$(date '+%Y-%m-%d %H:%M %Z')" M_CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
    M_KERNEL="$(uname -r)" M_NPROC="$(nproc)" M_COMMAND="$CMDLINE" M_GW="$GW_INFO" \
    M_ROUNDS=$ROUNDS M_DURATION=$DURATION M_RATE=$LOAD_RATE M_SCRAPES=$SCRAPES M_PODS=$METRICS_PODS \
    M_QUICK=$QUICK M_FWD=$DO_FWD M_MET=$DO_MET M_FWD_TARGET=$FWD_TARGET M_MET_TARGET=$METRICS_TARGET_MS \
    M_FWD_UP=$FWD_UP_SECS M_MET_UP=$MET_UP_SECS M_LOAD="start $LOAD_START, end $LOAD_END" M_LOGS=$LOGS \
    M_BUSY="${busy:+other heavy processes were running at start}"
python3 - "$WORK" "$OUT" <<'PY' || die "report failed"
import glob, json, math, os, statistics, sys
work, out = sys.argv[1], sys.argv[2]
E = os.environ
meta = {k: E[f"M_{k.upper()}"] for k in ("date", "command", "kernel", "cpu", "gw", "load", "logs", "busy")}
meta.update({k: int(E[f"M_{k.upper()}"]) for k in ("nproc", "rounds", "duration", "rate", "scrapes", "pods")})
meta["quick"] = E["M_QUICK"] == "1"
fwd_target, met_target = float(E["M_FWD_TARGET"]), float(E["M_MET_TARGET"])
do_fwd, do_met = E["M_FWD"] == "1", E["M_MET"] == "1"

def num(s):
    try:
        v = float(s)
        return None if math.isnan(v) else v
    except ValueError:
        return None

def pct(vals, p):  # nearest rank
    v = sorted(x for x in vals if x is not None)
    return v[max(1, math.ceil(p / 100 * len(v))) - 1] if v else None

def med(vals):
    v = [x for x in vals if x is not None]
    return statistics.median(v) if v else None

def fmt(v, f):
    return "n/a" if v is None else f.format(v)

def rows(name):
    with open(f"{work}/{name}") as f:
        return [l.rstrip("\n").split("\t") for l in f if l.strip()]

L, checks, result = [], [], {"meta": meta}
L.append(f"# guardwire management-plane cost, {meta['date']}")
L.append("")
L.append(f"- machine: kernel {meta['kernel']}, nproc {meta['nproc']}, {meta['cpu']}; loadavg {meta['load']}"
         + (f" ({meta['busy']})" if meta["busy"] else ""))
L.append(f"- command: `{meta['command']}`")
L.append(f"- guardwire {meta['gw']}")
L.append("")

# ---- part 1
if do_fwd:
    rnd = {}
    for r, c, k, v in rows("forwarding.tsv"):
        rnd.setdefault((int(r), c), {})[k] = v if k == "error" else num(v)
    nr = max([r for r, _ in rnd] or [0])
    def vals(c, k):
        return [rnd.get((r, c), {}).get(k) for r in range(1, nr + 1)]
    summ = {c: {k: med(vals(c, k)) for k in ("gbps", "retr", "gw_cores", "worker_cores", "api_cores")}
            for c in "ab"}
    a, b = summ["a"]["gbps"], summ["b"]["gbps"]
    ratio = b / a if a and b is not None else None
    res = "n/a" if ratio is None else ("PASS" if ratio >= fwd_target else "MISS")
    lg = []
    for f in sorted(glob.glob(f"{meta['logs']}/r*.b.loadgen.json")):
        try:
            d = json.load(open(f))
            d["round"] = int(os.path.basename(f)[1:].split(".")[0])
            lg.append(d)
        except (OSError, ValueError):
            pass
    L.append(f"## 1. forwarding with the page open (node `bapif`, 1 pod)")
    L.append("")
    L.append(f"iperf3 TCP x1 pod1 -> peer, {meta['duration']} s, receiver Gbit/s; (a) API idle, "
             f"(b) page open: {meta['rate']} GET/s cycling log?limit=100, workloads, usage?window=1, "
             f"flows?limit=100, stats on one kept-alive connection plus one open SSE "
             f"/api/v1/log/stream, from the management ns for the whole run. "
             f"{nr} round(s), a and b alternating; cells are medians.")
    L.append("")
    L.append("| condition | Gbit/s | per round | retransmits | guardwire cores | workers | gw-api thread |")
    L.append("|---|---:|---|---:|---:|---:|---:|")
    for c, label in (("a", "(a) API idle"), ("b", "(b) page open")):
        s = summ[c]
        per = " / ".join(fmt(v, "{:.2f}") for v in vals(c, "gbps"))
        L.append(f"| {label} | {fmt(s['gbps'], '{:.2f}')} | {per} | {fmt(s['retr'], '{:.0f}')} | "
                 f"{fmt(s['gw_cores'], '{:.2f}')} | {fmt(s['worker_cores'], '{:.2f}')} | "
                 f"{fmt(s['api_cores'], '{:.3f}')} |")
    L.append("")
    L.append(f"**ratio b/a = {fmt(ratio, '{:.3f}')}** (target >= {fwd_target}): **{res}**")
    L.append("")
    checks.append({"check": "forwarding, page open / API idle", "target": f">= {fwd_target}",
                   "measured": fmt(ratio, "{:.3f}"), "result": res})
    errs = [f"r{r}({c}): {v['error']}" for (r, c), v in sorted(rnd.items()) if v.get("error")]
    if errs:
        L.append("Problems: " + "; ".join(errs))
        L.append("")
    if lg:
        req = sum(d["requests"] for d in lg)
        bad = sum(d["non200"] for d in lg)
        er = sum(d["errors"] for d in lg)
        secs = sum(d["seconds"] for d in lg)
        L.append(f"Load generator, all (b) runs: {req} requests in {secs:.1f} s ({req / secs if secs else 0:.1f}/s), "
                 f"{bad} non-200, {er} errors, {sum(d['late'] for d in lg)} late ticks; the generator itself "
                 f"used {med([d.get('cpu_cores') for d in lg]) or 0:.3f} cores (median; it shares the "
                 f"machine's cores with iperf3 and guardwire, which a browser on another machine would not); SSE: " +
                 "; ".join(f"r{d['round']} status {d['sse']['status']}, {d['sse']['events']} events, "
                           f"{d['sse']['bytes']} B, open {d['sse']['open_s']} s"
                           + (f", error {d['sse']['error']}" if d['sse']['error'] else "")
                           + (", closed by the server" if d['sse']['closed_by_server'] else "")
                           for d in lg) + ".")
        L.append("")
        L.append("| endpoint (page open) | requests | non-200 | median ms | p95 ms | max ms | avg bytes |")
        L.append("|---|---:|---:|---:|---:|---:|---:|")
        paths = list(lg[0]["paths"])
        per_path = {}
        for p in paths:
            lat = [x for d in lg for x in d["paths"].get(p, {}).get("latencies_ms", [])]
            nb = sum(1 for d in lg for s in d["non200_samples"] if s["path"] == p)
            sz = [d["paths"][p]["avg_bytes"] for d in lg if d["paths"].get(p, {}).get("avg_bytes") is not None]
            per_path[p] = {"n": len(lat), "non200": nb, "median_ms": med(lat), "p95_ms": pct(lat, 95),
                           "max_ms": pct(lat, 100), "avg_bytes": med(sz)}
            s = per_path[p]
            L.append(f"| `{p}` | {s['n']} | {nb} | {fmt(s['median_ms'], '{:.2f}')} | "
                     f"{fmt(s['p95_ms'], '{:.2f}')} | {fmt(s['max_ms'], '{:.2f}')} | {fmt(s['avg_bytes'], '{:.0f}')} |")
        L.append("")
        samples = [s for d in lg for s in d["non200_samples"]][:5] + [s for d in lg for s in d["error_samples"]][:5]
        for s in samples:
            L.append(f"- `{s['path']}` at {s['t_s']} s: {s.get('status', s.get('error'))} {s.get('body', '')[:200]}")
        if samples:
            L.append("")
        result["loadgen"] = {"requests": req, "non200": bad, "errors": er, "seconds": secs,
                             "per_path": per_path,
                             "runs": [{k: v for k, v in d.items() if k != "paths"} for d in lg]}
    result["forwarding"] = {"rounds": [{"round": r, "cond": c, **v} for (r, c), v in sorted(rnd.items())],
                            "medians": summ, "ratio_b_a": ratio, "result": res,
                            "node_up_s": num(E["M_FWD_UP"] or "nan")}

# ---- part 2
if do_met:
    sc = rows("scrapes.tsv")
    L.append(f"## 2. /metrics scrape with {meta['pods']} workloads (node `bapim`)")
    L.append("")
    L.append(f"`curl -w %{{time_total}}` from the management ns, a new connection per request, "
             f"{meta['scrapes']} of each, interleaved, after one warm-up each."
             + (" Quick run: not the target's 110 workloads." if meta["quick"] else ""))
    L.append("")
    L.append("| endpoint | requests | non-200 | median ms | p95 ms | max ms | bytes |")
    L.append("|---|---:|---:|---:|---:|---:|---:|")
    summ = {}
    for ep in ("/metrics", "/api/v1/health"):
        rs = [r for r in sc if r[0] == ep]
        ok = [float(r[3]) * 1000 for r in rs if r[2] == "200"]
        nb = sum(1 for r in rs if r[2] != "200")
        by = med([num(r[4]) for r in rs if r[2] == "200"])
        summ[ep] = {"n": len(rs), "non200": nb, "median_ms": med(ok), "p95_ms": pct(ok, 95),
                    "max_ms": pct(ok, 100), "bytes": by, "all_ms": ok,
                    "codes": sorted(set(r[2] for r in rs))}
        s = summ[ep]
        L.append(f"| `{ep}` | {s['n']} | {nb} | {fmt(s['median_ms'], '{:.2f}')} | {fmt(s['p95_ms'], '{:.2f}')} | "
                 f"{fmt(s['max_ms'], '{:.2f}')} | {fmt(by, '{:.0f}')} |")
    L.append("")
    m = summ["/metrics"]["median_ms"]
    res = "n/a" if m is None else ("PASS" if m <= met_target else "MISS")
    L.append(f"**/metrics median = {fmt(m, '{:.2f}')} ms** (target <= {met_target:g} ms with 110 workloads"
             + (f"; measured with {meta['pods']}" if meta["pods"] != 110 else "") + f"): **{res}**")
    checks.append({"check": f"/metrics median, {meta['pods']} workloads", "target": f"<= {met_target:g} ms",
                   "measured": fmt(m, "{:.2f} ms"), "result": res})
    try:
        mc = json.load(open(f"{work}/metrics-check.json"))
    except (OSError, ValueError):
        mc = None
    if mc:
        ok = mc["distinct"] == mc["expected"] and not mc["missing"]
        r2 = "PASS" if ok else "MISS"
        L.append("")
        L.append(f"Workloads in `guardwire_port_rx_frames_total`: {mc['distinct']} distinct of {mc['expected']} "
                 f"({mc['rx_frames_lines']} lines; body {mc['body_bytes']} B, {mc['body_lines']} lines)"
                 + (f"; missing {', '.join(mc['missing'])}" if mc["missing"] else "")
                 + (f"; unexpected {', '.join(mc['unexpected'])}" if mc["unexpected"] else "") + f": **{r2}**")
        checks.append({"check": "workloads in the scrape", "target": f"{mc['expected']}",
                       "measured": f"{mc['distinct']}", "result": r2})
    L.append("")
    result["metrics"] = {"endpoints": summ, "check": mc, "result": res,
                         "node_up_s": num(E["M_MET_UP"] or "nan")}

L.append("## summary")
L.append("")
L.append("| check | target | measured | result |")
L.append("|---|---|---:|---|")
for c in checks:
    L.append(f"| {c['check']} | {c['target']} | {c['measured']} | {c['result']} |")
L.append("")
L.append(f"Logs: `{meta['logs']}`. One machine, one run: compare only figures from the same run.")
result["checks"] = checks
md = "\n".join(L) + "\n"
with open(out + ".md", "w") as f:
    f.write(md)
with open(out + ".json", "w") as f:
    json.dump(result, f, indent=1)
    f.write("\n")
print(md)
PY
echo "results: $OUT.md"
echo "raw:     $OUT.json"
