#!/usr/bin/env bash
# Soak: guardwire under steady traffic, churning short flows, attach/detach every few seconds,
# rule pushes every 10 s and mode switches, for a long run; its RSS, open fds and threads over
# time (least-squares slope over the second half), and every frame lost on the steady flows.
# Usage: bench/soak.sh [--minutes N] [--quick]
#   --minutes N  length of the run (default 30)
#   --quick      smoke test: 2 minutes
# Needs root; not for CI. Builds testbed node "bsk1" (testbed/node.sh up bsk1 --pods 6 --live)
# and removes it on exit, error or Ctrl-C (testbed/node.sh down bsk1).
set -uo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
NODE_SH=$ROOT/testbed/node.sh
BIN_DIR=${GW_BIN_DIR:-$ROOT/target/release}
PREFIX=bsk1
PODS=6                  # pod1, pod2: steady flows; pod3: mode switches; pod4..pod6: attach/detach
WORKERS=2
IPERF_PORT=5201
FLOW_PORT=5301          # the short flows' echo listener in the peer ns
SLOT=10                 # s: one round of the schedule (sample, push, attaches, mode, detaches)
SEG=30                  # s per iperf3 segment
IPERF_RATE=${SOAK_IPERF_RATE:-1G}   # iperf3 -b; 0 = unlimited
FLOW_RATE_STEADY=10     # short connections per second from pod2
FLOW_RATE_CHURN=3       # ... from each of pod3..pod6
WINDOW_S=1              # a lost frame within this many s of a rule push or mode switch is the switch's
RSS_SLOPE_MAX=256       # KiB/min over the second half
FD_SLOPE_MAX=0.05       # fds/min over the second half (under one fd per 20 min)
GAP_MAX_MS=1000         # longest iperf3 stall outside switch windows

MINUTES=30
QUICK=0
CMDLINE="bash bench/soak.sh${*:+ $*}"

usage() {
    sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

while [ $# -gt 0 ]; do
    case $1 in
        --minutes) MINUTES=${2:?}; shift 2 ;;
        --minutes=*) MINUTES=${1#*=}; shift ;;
        --quick) QUICK=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
done
[ "$QUICK" = 1 ] && MINUTES=2
if ! [[ $MINUTES =~ ^[0-9]+$ ]] || ((MINUTES < 1 || MINUTES > 1440)); then
    echo "--minutes must be 1..1440" >&2; exit 2
fi
[[ $IPERF_RATE =~ ^[0-9]+[KMG]?$ ]] || { echo "SOAK_IPERF_RATE must be like 500M, 1G or 0" >&2; exit 2; }

[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
for t in ip iperf3 ping curl python3 timeout ss du; do
    command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 1; }
done
[ -x "$BIN_DIR/guardwire" ] ||
    { echo "$BIN_DIR/guardwire not found: build it first (cargo build --release); this script never builds" >&2; exit 1; }
# the interpreter itself, not a version manager's shim: it runs in other namespaces
PY=$(python3 -c 'import sys; print(sys.executable)') || { echo "python3 does not run" >&2; exit 1; }

SLOTS=$((MINUTES * 60 / SLOT))
RUN_S=$((SLOTS * SLOT))

# Time bounds (seconds).
UP_TIMEOUT=$((120 + 5 * PODS))
DOWN_TIMEOUT=$((60 + 2 * PODS))
CLI_TIMEOUT=30          # one guardwire CLI call
CURL_MAX_S=5            # one /metrics scrape
BG_TIMEOUT=$((RUN_S + 60))   # every background process is killed after this at the latest

STAMP=$(date +%Y-%m-%d-%H%M)
WORK=$(mktemp -d "/tmp/bsk1-run.$STAMP.XXXX")
LOGS=$WORK/logs
mkdir -p "$LOGS"
SAMPLES=$WORK/samples.tsv   # label epoch rss_kib hwm_kib fds threads attached pod3_mode state_kib flows_active flows_created ticks
EVENTS=$WORK/events.tsv     # kind workload sched_epoch t0 t1 rc stdout stderr
SEGS=$WORK/segments.tsv     # n t0 t1 rc seconds
LINKS=$WORK/links.tsv       # label netns device rx_dropped tx_dropped (and softnet drops, machine-wide)
: >"$SAMPLES"; : >"$EVENTS"; : >"$SEGS"; : >"$LINKS"

OWN_NODE=0            # 1 once we started `node.sh up`: only then does cleanup tear the node down
CUR=""                # pid of the bounded foreground step (timeout ..., sleep), if any
BG=()                 # background traffic: ping, iperf3 loop, short-flow clients, echo listener
IPERF_PIDFILE=$WORK/iperf-server.pid
AUTH_HDR=$WORK/auth.header
STOP_FILE=$WORK/stop
GW_SNAP=""            # snapshot of the guardwire binary the node runs
GW_GONE=""            # epoch at which guardwire was found gone, if it was
declare -A ATT=()     # workload -> 1 while attached (our bookkeeping, resynced from `list` on failure)
declare -A MODE=()    # workload -> the mode it is in

# shellcheck source=lib/common.sh
. "$ROOT/bench/lib/common.sh"

cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    # node.sh up (or another bounded step) may still run: stop it first (up tears
    # itself down on SIGTERM), so that `down` does not race with it.
    [ -n "$CUR" ] && stop "$CUR" 60
    touch "$STOP_FILE" 2>/dev/null
    for p in "${BG[@]}"; do stop "$p" 3; done
    stop_iperf_server
    if [ "$OWN_NODE" = 1 ]; then
        log "tearing down node $PREFIX"
        timeout "$DOWN_TIMEOUT" bash "$NODE_SH" down "$PREFIX" >>"$LOGS/node-down.log" 2>&1 ||
            log "warning: node.sh down $PREFIX failed or timed out (see $LOGS/node-down.log)"
    fi
    rm -f "$AUTH_HDR"
    [ -n "${GW_SNAP:-}" ] && rm -rf "$GW_SNAP"   # the binary snapshot; logs stay
    [ "$rc" -ne 0 ] && log "exit status $rc; logs kept in $LOGS"
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

us_epoch() { printf '%d.%06d' $(($1 / 1000000)) $(($1 % 1000000)); }

# sleep_until US (epoch microseconds); interruptible by Ctrl-C.
sleep_until() {
    local d=$(($1 - $(us_now)))
    ((d > 0)) || return 0
    sleep "$(us_epoch "$d")" &
    CUR=$!
    wait "$CUR"
    CUR=""
}

# at US: wait for that time, remember it as the scheduled time of the next operation; false when
# guardwire is gone (the run ends there: that is a finding, not an error of this script).
SCHED=""
at() {
    sleep_until "$1"
    SCHED=$(us_epoch "$1")
    if ! alive "$GW_PID"; then
        [ -n "$GW_GONE" ] || { GW_GONE=$EPOCHREALTIME; log "guardwire (pid $GW_PID) is gone: the run ends here"; }
        return 1
    fi
}

wait_listen() { # wait_listen NS PORT: up to 5 s
    local i
    for ((i = 0; i < 50; i++)); do
        ip netns exec "$1" ss -Htln "sport = :$2" 2>/dev/null | grep -q . && return 0
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------- guardwire probes
# api_get PATH OUT: GET from MGMT_NS; prints "HTTP_CODE TIME_TOTAL SIZE".
api_get() {
    timeout $((CURL_MAX_S + 5)) ip netns exec "$MGMT_NS" curl -s -o "$2" -H "@$AUTH_HDR" \
        --max-time "$CURL_MAX_S" -w '%{http_code} %{time_total} %{size_download}' "${GW_API_URL%/}$1" \
        2>>"$LOGS/curl.err"
}

n_attached() { local n=0 w; for w in "${!ATT[@]}"; do n=$((n + 1)); done; echo "$n"; }

# sample LABEL: the daemon's RSS, peak RSS, fds, threads, CPU ticks (from /proc, before the
# scrape opens a connection), the state dir's size, and the flow table from /metrics.
sample() {
    local st rss hwm thr fds tk kib out fa="" fc=""
    st=$(cat "/proc/$GW_PID/status" 2>/dev/null) || return 0
    rss=$(awk '/^VmRSS:/{print $2}' <<<"$st")
    hwm=$(awk '/^VmHWM:/{print $2}' <<<"$st")
    thr=$(awk '/^Threads:/{print $2}' <<<"$st")
    fds=$(find "/proc/$GW_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    tk=$(sed 's/^.*) //' "/proc/$GW_PID/stat" 2>/dev/null | awk '{print $12 + $13}')
    kib=$(du -sk "$STATE" 2>/dev/null | cut -f1)
    out=$(api_get /metrics "$WORK/metrics.body")
    if [ "${out%% *}" = 200 ]; then
        fa=$(awk '$1 == "guardwire_flows_active" {print $2}' "$WORK/metrics.body")
        fc=$(awk '$1 == "guardwire_flows_created_total" {print $2}' "$WORK/metrics.body")
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$EPOCHREALTIME" "${rss:-}" "${hwm:-}" \
        "$fds" "${thr:-}" "$(n_attached)" "${MODE[pod3]:--}" "${kib:-}" "${fa:-}" "${fc:-}" "${tk:-}" >>"$SAMPLES"
}

# link_drops LABEL: rx/tx_dropped of every device in the namespaces of the steady flows' path,
# and the kernel's backlog drops (/proc/net/softnet_stat, whole machine): where a lost frame went
# when guardwire counted no drop.
link_drops() {
    local ns d rx tx x sum=0
    for ns in "$NS_SEC" "$NS_HOST" "$NS_PEER" "$POD_NS_1" "$POD_NS_2"; do
        timeout 10 ip netns exec "$ns" sh -c 'for d in /sys/class/net/*; do
            echo "${d##*/} $(cat "$d/statistics/rx_dropped") $(cat "$d/statistics/tx_dropped")"; done' 2>/dev/null |
            while read -r d rx tx; do printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$ns" "$d" "$rx" "$tx"; done
    done >>"$LINKS"
    while read -r _ x _; do sum=$((sum + 16#$x)); done </proc/net/softnet_stat
    printf '%s\t-\tsoftnet\t%s\t0\n' "$1" "$sum" >>"$LINKS"
}

# gw_op KIND WORKLOAD CMD...: one CLI call against the daemon (bounded), recorded in EVENTS with
# the scheduled time, start, end, exit status, and the first line of its stdout and stderr.
gw_op() {
    local kind=$1 wl=$2 t0 t1 rc o e
    shift 2
    : >"$WORK/op.err"
    t0=$EPOCHREALTIME
    bounded "$CLI_TIMEOUT" "$WORK/op.out" "$WORK/op.err" "$GW" "$@" --socket "$GW_SOCK"
    rc=$?
    t1=$EPOCHREALTIME
    o=$(head -n 1 "$WORK/op.out" | tr '\t' ' ' | cut -c1-300)
    e=$(head -n 1 "$WORK/op.err" | tr '\t' ' ' | cut -c1-300)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$wl" "${SCHED:-$t0}" "$t0" "$t1" "$rc" "$o" "$e" >>"$EVENTS"
    cat "$WORK/op.out" >>"$LOGS/cli.out"
    [ -s "$WORK/op.err" ] && sed "s/^/$kind $wl: /" "$WORK/op.err" >>"$LOGS/cli.err"
    if [ $rc != 0 ]; then
        log "  $kind $wl failed (exit $rc): ${e:-$o}"
        resync
    fi
    return $rc
}

# resync: after a failed operation, take the attached set from the daemon.
resync() {
    local names n
    names=$(timeout "$CLI_TIMEOUT" "$GW" list --json --socket "$GW_SOCK" 2>>"$LOGS/cli.err" |
        "$PY" -c 'import json, sys; print(" ".join(w["name"] + "=" + str(w["mode"]) for w in json.load(sys.stdin)))' \
        2>/dev/null) || return 0
    ATT=()
    for n in $names; do
        ATT[${n%%=*}]=1
        MODE[${n%%=*}]=${n#*=}
    done
}

# attach_pod I MODE, detach_pod I, set_mode I MODE: the operations of the schedule.
attach_pod() {
    local nsv=POD_NS_$1 w=pod$1
    [ -n "${ATT[$w]:-}" ] && return 0
    gw_op attach "$w" attach pod "${!nsv}" --name "$w" --mode "$2" || return 1
    ATT[$w]=1
    MODE[$w]=$2
}
detach_pod() {
    local w=pod$1
    [ -n "${ATT[$w]:-}" ] || return 0
    gw_op detach "$w" detach "$w" || return 1
    unset "ATT[$w]"
}
set_mode() {
    local w=pod$1
    gw_op mode "$w" mode "$w" "$2" || return 1
    MODE[$w]=$2
}

# ---------------------------------------------------------------- helpers run in the namespaces
# Short flows: `server` in the peer ns echoes 64 bytes per connection; `client` in a pod makes
# RATE connections per second (connect, 64 bytes there and back, close), no catching up on missed
# ticks, until the stop file appears or --max-seconds pass; each prints a JSON report.
FLOWS=$WORK/flows.py
cat >"$FLOWS" <<'PY'
import argparse, json, math, os, socket, socketserver, sys, threading, time

ap = argparse.ArgumentParser()
ap.add_argument("role", choices=["server", "client"])
ap.add_argument("--host", required=True)
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--rate", type=float, default=10.0)
ap.add_argument("--max-seconds", type=float, required=True)
ap.add_argument("--stop-file", required=True)
a = ap.parse_args()
DEADLINE = time.monotonic() + a.max_seconds
N = 64

def should_stop():
    return time.monotonic() >= DEADLINE or os.path.exists(a.stop_file)

def pct(v, p):  # nearest rank
    v = sorted(v)
    return v[max(1, math.ceil(p / 100 * len(v))) - 1] if v else None

if a.role == "server":
    lock = threading.Lock()
    st = {"served": 0, "errors": 0, "error_samples": []}

    class H(socketserver.BaseRequestHandler):
        def handle(self):
            self.request.settimeout(5)
            try:
                data = b""
                while len(data) < N:
                    c = self.request.recv(N - len(data))
                    if not c:
                        break
                    data += c
                self.request.sendall(data)
                with lock:
                    st["served"] += 1
            except OSError as e:
                with lock:
                    st["errors"] += 1
                    if len(st["error_samples"]) < 20:
                        st["error_samples"].append({"t": round(time.time(), 3), "error": f"{type(e).__name__}: {e}"})

    class S(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True
        request_queue_size = 512

    srv = S((a.host, a.port), H)
    srv.timeout = 0.5
    while not should_stop():
        srv.handle_request()
    srv.server_close()
    json.dump(st, sys.stdout)
    print()
    sys.exit(0)

payload = b"s" * N
n = ok = late = 0
fails, lat = [], []
period = 1.0 / a.rate
next_t = time.monotonic()
while not should_stop():
    now = time.monotonic()
    if next_t > now:
        time.sleep(next_t - now)
        if should_stop():
            break
    n += 1
    tw, ts = time.time(), time.monotonic()
    s = None
    try:
        s = socket.create_connection((a.host, a.port), timeout=3)
        s.settimeout(3)
        s.sendall(payload)
        got = b""
        while len(got) < N:
            c = s.recv(N - len(got))
            if not c:
                raise ConnectionError(f"closed after {len(got)} of {N} bytes")
            got += c
        ok += 1
        lat.append((time.monotonic() - ts) * 1000)
    except Exception as e:
        fails.append({"t0": round(tw, 3), "t1": round(time.time(), 3), "error": f"{type(e).__name__}: {e}"})
    finally:
        if s is not None:
            s.close()
    next_t += period
    if next_t < time.monotonic():
        late += 1
        next_t = time.monotonic()
json.dump({"attempts": n, "ok": ok, "failed": len(fails), "fails": fails[:2000], "late": late,
           "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "max_ms": max(lat) if lat else None},
          sys.stdout)
print()
PY

# iperf_loop: in the background, iperf3 TCP pod1 -> peer in SEG s segments (-i 0.1, JSON) until
# END_US; one line per segment in SEGS. A failed segment is retried after a second.
iperf_loop() {
    local n=0 c="" left t0 rc
    trap 'stop "$c" 3; exit 0' TERM
    while :; do
        left=$(((END_US - $(us_now)) / 1000000))
        ((left >= 3)) || break
        ((left > SEG)) && left=$SEG
        n=$((n + 1))
        t0=$EPOCHREALTIME
        timeout $((left + 20)) ip netns exec "$POD_NS_1" iperf3 -c "$PEER_IP" -p "$IPERF_PORT" -t "$left" \
            -i 0.1 -J -b "$IPERF_RATE" --connect-timeout 3000 >"$LOGS/iperf-$n.json" 2>"$LOGS/iperf-$n.err" &
        c=$!
        wait "$c"
        rc=$?
        c=""
        printf '%s\t%s\t%s\t%s\t%s\n' "$n" "$t0" "$EPOCHREALTIME" "$rc" "$left" >>"$SEGS"
        [ "$rc" = 0 ] || sleep 1
    done
}

# ---------------------------------------------------------------- main
warn_if_busy
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

if [ -e "${GW_TESTBED_STATE_ROOT:-/run/guardwire-testbed}/$PREFIX" ] ||
    ip netns list 2>/dev/null | grep -Eq "^$PREFIX-"; then
    die "node $PREFIX already exists (not ours: left untouched); remove it with: bash testbed/node.sh down $PREFIX"
fi

# Run a snapshot: a rebuild during the run must not change what is measured.
mkdir -p "$WORK/bin" && GW_SNAP=$WORK/bin
cp "$BIN_DIR/guardwire" "$GW_SNAP/guardwire" || die "cannot copy $BIN_DIR/guardwire"
GW=$GW_SNAP/guardwire
GW_INFO="binary modified $(date -u -r "$BIN_DIR/guardwire" '+%Y-%m-%d %H:%M UTC'), sha256 $(sha256sum "$GW" | cut -c1-12), checkout HEAD $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
log "work dir $WORK; $MINUTES min ($SLOTS rounds of ${SLOT}s); iperf3 -b $IPERF_RATE; guardwire $GW_INFO"

# Two rule sets, swapped at every push; both allow every flow of the soak: 1000 deny rules on
# addresses and ports nothing uses (B also logs the short flows, which matching goes past).
RULES_A=$WORK/rules-a.toml
RULES_B=$WORK/rules-b.toml
{ echo 'default = "allow"'
  for i in $(seq 0 999); do
      printf '[[rule]]\nid = "soak-a-%d"\nproto = "tcp"\ndst = "10.123.%d.%d"\ndst_ports = %d\naction = "deny"\n' \
          "$i" $((i / 250)) $((i % 250)) $((1000 + i))
  done; } >"$RULES_A"
{ echo 'default = "allow"'
  printf '[[rule]]\nid = "soak-b-log"\nproto = "tcp"\ndst_ports = %d\naction = "log"\n' "$FLOW_PORT"
  for i in $(seq 0 998); do
      printf '[[rule]]\nid = "soak-b-%d"\nproto = "tcp"\ndst = "10.124.%d.%d"\ndst_ports = %d\naction = "deny"\n' \
          "$i" $((i / 250)) $((i % 250)) $((3000 + i))
  done; } >"$RULES_B"
for f in "$RULES_A" "$RULES_B"; do
    timeout "$CLI_TIMEOUT" "$GW" rules check "$f" >>"$LOGS/cli.out" 2>>"$LOGS/cli.err" ||
        die "rule file $f does not check: $(tail -n 3 "$LOGS/cli.err")"
done

log "node $PREFIX: $PODS CNI pods, guardwire --live with $WORKERS workers (logs: $LOGS)"
OWN_NODE=1
t0=$(us_now)
bounded "$UP_TIMEOUT" "$WORK/node.env" "$LOGS/node-up.log" \
    env GW_BIN_DIR="$GW_SNAP" bash "$NODE_SH" up "$PREFIX" --pods "$PODS" --live --workers "$WORKERS" ||
    die "node.sh up failed or timed out after ${UP_TIMEOUT}s: $(tail -n 5 "$LOGS/node-up.log")"
UP_SECS=$(awk -v us="$(($(us_now) - t0))" 'BEGIN{printf "%.1f", us / 1e6}')
grep -Evq '^[A-Z][A-Z0-9_]*=' "$WORK/node.env" && die "unexpected line in node.sh env output ($WORK/node.env)"
eval "$(cat "$WORK/node.env")"
for v in GW_SOCK GW_PID GW_LOG STATE NS_PEER PEER_IP NPODS MGMT_NS GW_API_URL GW_ADMIN_TOKEN_FILE "POD_NS_$PODS"; do
    [ -n "${!v:-}" ] || die "node.sh env has no $v"
done
[ "$NPODS" = "$PODS" ] || die "node has $NPODS pods, asked for $PODS"
[ "$(cat "/proc/$GW_PID/comm" 2>/dev/null)" = guardwire ] ||
    die "GW_PID $GW_PID is not a guardwire process ($(cat "/proc/$GW_PID/comm" 2>/dev/null))"
case $GW_API_URL in http://*) ;; *) die "GW_API_URL $GW_API_URL is not plain http://" ;; esac
[ -r "$GW_ADMIN_TOKEN_FILE" ] || die "no admin token at $GW_ADMIN_TOKEN_FILE"
(umask 077; printf 'Authorization: Bearer %s\n' "$(tr -d ' \r\n' <"$GW_ADMIN_TOKEN_FILE")" >"$AUTH_HDR")
log "node up in ${UP_SECS}s; guardwire pid $GW_PID, socket $GW_SOCK"

# ---- setup: the steady pods and the mode pod attached for the whole run, the first rule set
SCHED=""
sample start
for i in 1 2 3; do
    attach_pod "$i" inline || die "setup: attach pod$i failed: $(tail -n 3 "$LOGS/cli.err")"
done
gw_op push rules rules push "$RULES_A" >/dev/null || die "setup: rules push failed: $(tail -n 3 "$LOGS/cli.err")"
sed -i 's/^attach\t/setup-attach\t/; s/^push\t/setup-push\t/' "$EVENTS"

rm -f "$IPERF_PIDFILE"
timeout 10 ip netns exec "$NS_PEER" iperf3 -s -D -B "$PEER_IP" -p "$IPERF_PORT" \
    -I "$IPERF_PIDFILE" --logfile "$LOGS/iperf-server.log" || die "iperf3 server did not start in $NS_PEER"
wait_listen "$NS_PEER" "$IPERF_PORT" || die "iperf3 server not listening on $PEER_IP:$IPERF_PORT"
timeout "$BG_TIMEOUT" ip netns exec "$NS_PEER" "$PY" "$FLOWS" server --host "$PEER_IP" --port "$FLOW_PORT" \
    --max-seconds $((RUN_S + 30)) --stop-file "$STOP_FILE" >"$LOGS/flows-server.json" 2>"$LOGS/flows-server.err" &
BG+=($!)
wait_listen "$NS_PEER" "$FLOW_PORT" || die "short-flow listener not up on $PEER_IP:$FLOW_PORT: $(tail -n 3 "$LOGS/flows-server.err")"
for i in 1 2 3 4 5 6; do
    nsv=POD_NS_$i
    timeout 10 ip netns exec "${!nsv}" ping -n -q -c 3 -i 0.2 -w 5 "$PEER_IP" >"$LOGS/warmup-pod$i.ping" 2>&1 ||
        die "pod$i cannot reach the peer $PEER_IP: $(tail -n 2 "$LOGS/warmup-pod$i.ping")"
done
sample setup
link_drops setup

# ---- traffic, from T0 for RUN_S seconds
T0_US=$(($(us_now) + 1000000))
END_US=$((T0_US + RUN_S * 1000000))
timeout "$BG_TIMEOUT" ip netns exec "$POD_NS_2" ping -n -D -O -i 0.1 -w "$RUN_S" "$PEER_IP" \
    >"$LOGS/ping.log" 2>&1 &
BG+=($!)
iperf_loop &
BG+=($!)
for i in 2 3 4 5 6; do
    nsv=POD_NS_$i
    rate=$FLOW_RATE_CHURN
    [ "$i" = 2 ] && rate=$FLOW_RATE_STEADY
    timeout "$BG_TIMEOUT" ip netns exec "${!nsv}" "$PY" "$FLOWS" client --host "$PEER_IP" --port "$FLOW_PORT" \
        --rate "$rate" --max-seconds "$RUN_S" --stop-file "$STOP_FILE" \
        >"$LOGS/flows-pod$i.json" 2>"$LOGS/flows-pod$i.err" &
    BG+=($!)
done
log "traffic: iperf3 pod1 -> peer (${SEG}s segments), ping pod2 -> peer 10/s, short connections" \
    "pod2 ${FLOW_RATE_STEADY}/s and pod3..pod6 ${FLOW_RATE_CHURN}/s each; run ends $(date -d "@$((END_US / 1000000))" +%H:%M:%S)"

# ---- the schedule, one round per SLOT s:
#   +0 sample   +1 rule push (B, A, B, ...)   +2 attach churn pod A   +4 attach churn pod B
#   +6 mode switch of pod3   +7 detach A   +9 detach B
# so every sample sees the same attached set (pod1..pod3). A and B go round pod4..pod6; pod3
# goes through every transition (inline -> mirror -> off -> inline -> off -> mirror -> inline).
CHURN=(4 5 6)
ATTACH_MODES=(inline mirror inline off)
POD3_MODES=(mirror off inline off mirror inline)
nattach=0
for ((s = 0; s < SLOTS; s++)); do
    base=$((T0_US + s * SLOT * 1000000))
    a=${CHURN[$((s % 3))]} b=${CHURN[$(((s + 1) % 3))]}
    at "$base" || break
    sample run
    ((s % 6 == 0)) && log "round $((s + 1))/$SLOTS: guardwire $(tail -n 1 "$SAMPLES" |
        awk -F '\t' '{printf "RSS %.1f MiB, %s fds, %s threads, %s flows", $3 / 1024, $5, $6, $10}')"
    at $((base + 1000000)) || break
    if ((s % 2 == 0)); then gw_op push rules rules push "$RULES_B"; else gw_op push rules rules push "$RULES_A"; fi
    at $((base + 2000000)) || break
    attach_pod "$a" "${ATTACH_MODES[$((nattach++ % 4))]}"
    at $((base + 4000000)) || break
    attach_pod "$b" "${ATTACH_MODES[$((nattach++ % 4))]}"
    at $((base + 6000000)) || break
    set_mode 3 "${POD3_MODES[$((s % 6))]}"
    at $((base + 7000000)) || break
    detach_pod "$a"
    at $((base + 9000000)) || break
    detach_pod "$b"
done
ROUNDS_DONE=$s
[ -z "$GW_GONE" ] && at "$END_US" && sample run

# ---- stop the traffic (each piece ends by itself around END_US; bounded anyway), then undo
log "run over ($ROUNDS_DONE rounds); stopping the traffic"
touch "$STOP_FILE"
for p in "${BG[@]}"; do
    for ((i = 0; i < 400; i++)); do alive "$p" || break; sleep 0.1; done   # up to 40 s each
    stop "$p" 3
done
BG=()
stop_iperf_server
if alive "$GW_PID"; then
    timeout "$CLI_TIMEOUT" "$GW" stats --json --socket "$GW_SOCK" >"$LOGS/stats-end.json" 2>>"$LOGS/cli.err"
    link_drops end
    SCHED=""
    for w in "${!ATT[@]}"; do
        gw_op teardown-detach "$w" detach "$w" && unset "ATT[$w]"
    done
    sleep 1
    sample end
fi
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
cp "$GW_LOG" "$LOGS/guardwire.log" 2>/dev/null

# ---------------------------------------------------------------- report
mkdir -p "$BENCH/results"
OUT=$BENCH/results/soak-$STAMP
[ -e "$OUT.md" ] && OUT=$OUT-$(date +%S)
export M_DATE="$(date '+%Y-%m-%d %H:%M %Z')" M_CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
    M_KERNEL="$(uname -r)" M_NPROC="$(nproc)" M_COMMAND="$CMDLINE" M_GW="$GW_INFO" \
    M_MINUTES=$MINUTES M_QUICK=$QUICK M_SLOT=$SLOT M_SLOTS=$SLOTS M_ROUNDS_DONE=$ROUNDS_DONE M_SEG=$SEG \
    M_IPERF_RATE=$IPERF_RATE M_FLOW_STEADY=$FLOW_RATE_STEADY M_FLOW_CHURN=$FLOW_RATE_CHURN \
    M_WINDOW=$WINDOW_S M_RSS_MAX=$RSS_SLOPE_MAX M_FD_MAX=$FD_SLOPE_MAX M_GAP_MAX=$GAP_MAX_MS \
    M_T0=$(us_epoch "$T0_US") M_END=$(us_epoch "$END_US") M_GW_GONE=$GW_GONE M_UP=$UP_SECS \
    M_LOAD="start $LOAD_START, end $LOAD_END" M_LOGS=$LOGS M_CLK_TCK="$(getconf CLK_TCK)" \
    M_BUSY="${busy:+other heavy processes were running at start}"
python3 - "$WORK" "$OUT" <<'PY' || die "report failed"
import bisect, collections, csv, glob, json, math, os, re, statistics, sys
work, out = sys.argv[1], sys.argv[2]
E = os.environ
logs = E["M_LOGS"]
meta = {k: E[f"M_{k.upper()}"] for k in ("date", "command", "kernel", "cpu", "gw", "load", "logs", "busy",
                                         "iperf_rate")}
meta.update({k: int(E[f"M_{k.upper()}"]) for k in ("nproc", "minutes", "slot", "slots", "rounds_done", "seg",
                                                   "flow_steady", "flow_churn")})
meta["quick"] = E["M_QUICK"] == "1"
meta["node_up_s"] = float(E["M_UP"])
T0, TEND = float(E["M_T0"]), float(E["M_END"])
W = float(E["M_WINDOW"])
RSS_MAX, FD_MAX, GAP_MAX = float(E["M_RSS_MAX"]), float(E["M_FD_MAX"]), float(E["M_GAP_MAX"])
gw_gone = float(E["M_GW_GONE"]) if E["M_GW_GONE"] else None
hz = int(E["M_CLK_TCK"])

def rows(name):
    try:
        with open(f"{work}/{name}") as f:
            return [l.rstrip("\n").split("\t") for l in f if l.strip()]
    except OSError:
        return []

def num(s):
    try:
        v = float(s)
        return None if math.isnan(v) else v
    except (TypeError, ValueError):
        return None

def pct(vals, p):  # nearest rank
    v = sorted(x for x in vals if x is not None)
    return v[max(1, math.ceil(p / 100 * len(v))) - 1] if v else None

def fmt(v, f):
    return "n/a" if v is None else f.format(v)

def slope(pts):  # least squares, y per minute
    if len(pts) < 3:
        return None
    xs = [p[0] / 60 for p in pts]
    ys = [p[1] for p in pts]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else None

# ---- samples
S = []
for r in rows("samples.tsv"):
    lab, t, rss, hwm, fds, thr, att, m3, kib, fa, fc, tk = (r + [""] * 12)[:12]
    S.append({"label": lab, "t": float(t), "t_s": round(float(t) - T0, 1), "rss_kib": num(rss),
              "hwm_kib": num(hwm), "fds": num(fds), "threads": num(thr), "attached": int(att),
              "pod3_mode": m3, "state_kib": num(kib), "flows_active": num(fa), "flows_created": num(fc),
              "ticks": num(tk)})
run = [s for s in S if s["label"] == "run"]
dur = (max(s["t"] for s in run) - T0) if run else 0
ref_att = collections.Counter(s["attached"] for s in run).most_common(1)[0][0] if run else None
half = [s for s in run if s["t"] - T0 >= dur / 2 and s["attached"] == ref_att]
odd = sum(1 for s in run if s["attached"] != ref_att)
sl = {k: slope([(s["t"] - T0, s[k]) for s in half if s[k] is not None])
      for k in ("rss_kib", "fds", "threads", "state_kib", "flows_active")}
cpu = None
if len(run) >= 2 and run[0]["ticks"] is not None and run[-1]["ticks"] is not None:
    cpu = (run[-1]["ticks"] - run[0]["ticks"]) / hz / (run[-1]["t"] - run[0]["t"])

# ---- control operations and the windows they open
ev = []
for r in rows("events.tsv"):
    kind, wl, sched, t0, t1, rc, o, e = (r + [""] * 8)[:8]
    ev.append({"kind": kind, "workload": wl, "sched": float(sched), "t0": float(t0), "t1": float(t1),
               "rc": int(rc), "out": o, "err": e, "ms": round((float(t1) - float(t0)) * 1000, 1),
               "late_s": round(float(t0) - float(sched), 3)})
for x in ev:
    m = re.search(r"([0-9.]+) ms\)$", x["out"])
    x["daemon_ms"] = float(m.group(1)) if m else None
SWITCH = ("push", "mode")
CHURNK = ("attach", "detach")
win_sw = sorted((x["t0"] - W, x["t1"] + W) for x in ev if x["kind"] in SWITCH)
win_ch = sorted((x["t0"] - W, x["t1"] + W) for x in ev if x["kind"] in CHURNK)

def overlaps(a, b, wins):
    return any(s <= b and a <= e for s, e in wins)

def where(a, b=None):
    b = a if b is None else b
    if overlaps(a, b, win_sw):
        return "switch"
    if overlaps(a, b, win_ch):
        return "churn"
    return "outside"

def nearest(t):  # the closest operation, and when it started (or ended, if before) relative to t
    best = None
    for x in ev:
        d = 0.0 if x["t0"] <= t <= x["t1"] else (x["t0"] - t if x["t0"] > t else x["t1"] - t)
        if best is None or abs(d) < abs(best[0]):
            best = (d, x)
    return f"{best[1]['kind']} {best[1]['workload']} at {best[0]:+.1f} s" if best else "-"

ops = {}
for kind in ("push", "mode", "attach", "detach"):
    xs = [x for x in ev if x["kind"] == kind]
    ops[kind] = {"n": len(xs), "failed": sum(1 for x in xs if x["rc"] != 0),
                 "p50_ms": pct([x["ms"] for x in xs], 50), "p99_ms": pct([x["ms"] for x in xs], 99),
                 "max_ms": pct([x["ms"] for x in xs], 100),
                 "daemon_p50_ms": pct([x["daemon_ms"] for x in xs], 50),
                 "late": sum(1 for x in xs if x["late_s"] > 1)}
op_fail = [x for x in ev if x["rc"] != 0]

# ---- ping pod2 -> peer
ping = {"sent": None, "replies": 0, "lost": 0, "lost_by": {"switch": 0, "churn": 0, "outside": 0},
        "trailing": 0, "dups": 0, "outside_samples": [], "longest_run": 0}
try:
    txt = open(f"{logs}/ping.log", errors="replace").read()
except OSError:
    txt = ""
rep, base, last = {}, 0, None
for m in re.finditer(r"^\[([0-9.]+)\] \d+ bytes from .*?icmp_seq=(\d+)(.*)$", txt, re.M):
    raw = int(m.group(2))
    if last is not None and raw < last - 30000:
        base += 65536
    last = raw
    seq = base + raw
    if "DUP" in m.group(3):
        ping["dups"] += 1
        continue
    rep.setdefault(seq, float(m.group(1)))
m = re.search(r"^(\d+) packets transmitted", txt, re.M)
sent = int(m.group(1)) if m else (max(rep) if rep else 0)
ping["sent"], ping["replies"] = sent, len(rep)
if rep:
    seqs = sorted(rep)
    top = seqs[-1]
    ping["trailing"] = max(0, sent - top)
    lost = [q for q in range(1, top + 1) if q not in rep]
    if ping["trailing"] > 2:   # more than the deadline's usual unanswered last probe or two
        lost += list(range(top + 1, sent + 1))
    run_len, prev = 0, None
    for q in lost:
        run_len = run_len + 1 if prev == q - 1 else 1
        prev = q
        ping["longest_run"] = max(ping["longest_run"], run_len)
        i = bisect.bisect_left(seqs, q)
        if 0 < i < len(seqs):   # time from the neighbouring replies
            q0, q1 = seqs[i - 1], seqs[i]
            t = rep[q0] + (rep[q1] - rep[q0]) * (q - q0) / (q1 - q0)
        elif i == 0:
            t = rep[seqs[0]] - 0.1 * (seqs[0] - q)
        else:
            t = rep[seqs[-1]] + 0.1 * (q - seqs[-1])
        w = where(t)
        ping["lost_by"][w] += 1
        if w == "outside" and len(ping["outside_samples"]) < 20:
            ping["outside_samples"].append({"seq": q, "t_s": round(t - T0, 2), "nearest": nearest(t)})
    ping["lost"] = len(lost)
elif sent:
    ping["lost"] = sent
    ping["lost_by"]["outside"] = sent

# ---- iperf3 segments pod1 -> peer
segs, gaps, bursts = [], [], []
retr_total = 0
retr_by = {"switch": 0, "churn": 0, "outside": 0}
for r in rows("segments.tsv"):
    n, t0, t1, rc, secs = r[:5]
    seg = {"n": int(n), "t0_s": round(float(t0) - T0, 1), "rc": int(rc), "seconds": int(secs),
           "gbps": None, "retr": None, "error": None, "longest_gap_ms": 0}
    try:
        d = json.load(open(f"{logs}/iperf-{n}.json"))
    except (OSError, ValueError) as e:
        d = {"error": f"no JSON ({type(e).__name__}); {open(f'{logs}/iperf-{n}.err', errors='replace').read()[:200]}"}
    if d.get("error"):
        seg["error"] = d["error"]
    iv = d.get("intervals") or []
    for i in iv:   # retransmits per 100 ms interval, placed in time
        rt = i.get("sum", {}).get("retransmits") or 0
        if rt:
            a_, b_ = float(t0) + i["sum"]["start"], float(t0) + i["sum"]["end"]
            wh = where(a_, b_)
            retr_by[wh] += rt
            bursts.append({"seg": int(n), "t_s": round(a_ - T0, 2), "retr": rt, "where": wh, "nearest": nearest(a_)})
    run_start = None
    for k, i in enumerate(iv + [None]):
        zero = i is not None and (i.get("sum", {}).get("bytes") or 0) == 0
        if zero and run_start is None:
            run_start = k
        if not zero and run_start is not None:
            a_, b_ = iv[run_start]["sum"]["start"], iv[k - 1]["sum"]["end"]
            g = {"seg": int(n), "t_s": round(float(t0) + a_ - T0, 2), "ms": round((b_ - a_) * 1000),
                 "where": where(float(t0) + a_, float(t0) + b_)}
            g["nearest"] = nearest(float(t0) + a_)
            gaps.append(g)
            seg["longest_gap_ms"] = max(seg["longest_gap_ms"], g["ms"])
            run_start = None
    recv = d.get("end", {}).get("sum_received", {})
    sentd = d.get("end", {}).get("sum_sent", {})
    if "bits_per_second" in recv:
        seg["gbps"] = round(recv["bits_per_second"] / 1e9, 3)
    if sentd.get("retransmits") is not None:
        seg["retr"] = sentd["retransmits"]
        retr_total += sentd["retransmits"]
    if seg["rc"] != 0 and not seg["error"]:
        seg["error"] = f"exit {seg['rc']}"
    segs.append(seg)
seg_fail = [s for s in segs if s["error"]]
gap_max = max([g["ms"] for g in gaps] or [0])
gap_out = max([g["ms"] for g in gaps if g["where"] == "outside"] or [0])

# ---- short flows
flows = {}
for f in sorted(glob.glob(f"{logs}/flows-pod*.json")):
    pod = os.path.basename(f)[len("flows-"):-len(".json")]
    try:
        d = json.load(open(f))
    except (OSError, ValueError):
        d = {"attempts": None, "ok": None, "failed": None, "fails": [], "error": "no report"}
    d["failed_by"] = {"switch": 0, "churn": 0, "outside": 0}
    for x in d.get("fails", []):
        x["where"] = where(x["t0"], x["t1"])
        d["failed_by"][x["where"]] += 1
    flows[pod] = d
try:
    fserver = json.load(open(f"{logs}/flows-server.json"))
except (OSError, ValueError):
    fserver = None
pod2_out = flows.get("pod2", {}).get("failed_by", {}).get("outside")

# ---- the guardwire log
ansi = re.compile(r"\x1b\[[0-9;]*m")
lv = collections.Counter()
msgs = collections.Counter()
try:
    for line in open(f"{logs}/guardwire.log", errors="replace"):
        line = ansi.sub("", line.rstrip("\n"))
        m = re.match(r"^\S+\s+(TRACE|DEBUG|INFO|WARN|ERROR)\s+(.*)$", line)
        if m:
            lv[m.group(1)] += 1
            if m.group(1) in ("WARN", "ERROR"):
                msgs[m.group(1) + " " + re.sub(r"\d+", "N", m.group(2))[:200]] += 1
        elif "panicked" in line:
            lv["panic"] += 1
            msgs["panic " + line[:200]] += 1
except OSError:
    pass

# ---- drops at the end of the run
try:
    st = json.load(open(f"{logs}/stats-end.json"))
except (OSError, ValueError):
    st = None
steady_ports = []
if st:
    for p in st.get("ports", []):
        if p.get("workload") in ("pod1", "pod2"):
            steady_ports.append({k: p.get(k) for k in ("workload", "port", "role", "rx_frames", "tx_frames",
                                                       "kernel_drops", "ring_truncated", "drops")})

# ---- interface drops between setup and the end of the run
lk = {}
for r in rows("links.tsv"):
    lab, ns, dev, rx, tx = (r + [""] * 5)[:5]
    lk.setdefault((ns, dev), {})[lab] = (num(rx) or 0, num(tx) or 0)
link_drops = []
for (ns, dev), v in sorted(lk.items()):
    if "setup" in v and "end" in v:
        drx, dtx = v["end"][0] - v["setup"][0], v["end"][1] - v["setup"][1]
        if drx or dtx:
            link_drops.append({"netns": ns, "device": dev, "rx_dropped": int(drx), "tx_dropped": int(dtx)})

# ---- checks
checks = []
def check(name, target, measured, ok):
    checks.append({"check": name, "target": target, "measured": measured,
                   "result": "n/a" if ok is None else ("PASS" if ok else "MISS")})
r_sl, f_sl = sl["rss_kib"], sl["fds"]
check("guardwire RSS slope, second half", f"< {RSS_MAX:g} KiB/min", fmt(r_sl, "{:+.1f} KiB/min"),
      None if r_sl is None else r_sl < RSS_MAX)
check("guardwire fd slope, second half", f"< {FD_MAX:g} /min", fmt(f_sl, "{:+.3f} /min"),
      None if f_sl is None else f_sl < FD_MAX)
check("pings lost outside switch windows (pod2)", "0",
      f"{ping['lost_by']['outside']} of {ping['sent']}", ping["sent"] and ping["lost_by"]["outside"] == 0)
check("iperf3 stall outside switch windows (pod1)", f"<= {GAP_MAX:g} ms, no failed segment",
      f"{gap_out} ms, {len(seg_fail)} failed of {len(segs)}",
      None if not segs else (gap_out <= GAP_MAX and not seg_fail))
check("short connections failed outside switch windows (pod2)", "0",
      fmt(pod2_out, "{}") + f" of {flows.get('pod2', {}).get('attempts')}",
      None if pod2_out is None else pod2_out == 0)
check("control operations failed", "0", f"{len(op_fail)} of {len(ev)}", not op_fail)
check("guardwire alive through the run", "yes",
      "yes" if gw_gone is None else f"gone at {gw_gone - T0:.0f} s", gw_gone is None)

# ---- markdown
L = []
L.append(f"# guardwire soak, {meta['minutes']} min, {meta['date']}")
L.append("")
L.append(f"- machine: kernel {meta['kernel']}, nproc {meta['nproc']}, {meta['cpu']}; loadavg {meta['load']}"
         + (f" ({meta['busy']})" if meta["busy"] else ""))
L.append(f"- command: `{meta['command']}`" + (" (quick: a smoke test, too short to judge slopes)" if meta["quick"] else ""))
L.append(f"- guardwire {meta['gw']}; node `bsk1` (6 CNI bridge pods, `--live`, 2 workers), up in {meta['node_up_s']} s")
L.append(f"- steady: pod1 iperf3 TCP -> peer `-b {meta['iperf_rate']}` in {meta['seg']} s segments (`-i 0.1`); "
         f"pod2 ping -> peer 10/s and {meta['flow_steady']} short TCP connections/s (64 B echo). pod1..pod3 attached "
         f"inline for the whole run.")
L.append(f"- churn, every {meta['slot']} s: a rule push (two 1000-rule sets, alternating), pod4..pod6 attached two "
         f"at a time and detached (modes inline/mirror/inline/off), pod3's mode switched (every transition), "
         f"{meta['flow_churn']} short connections/s from each of pod3..pod6. {meta['rounds_done']} of {meta['slots']} rounds run.")
L.append(f"- a switch window is a rule push or mode switch ±{W:g} s; a churn window an attach or detach ±{W:g} s.")
L.append("")
L.append("| check | target | measured | result |")
L.append("|---|---|---:|---|")
for c in checks:
    L.append(f"| {c['check']} | {c['target']} | {c['measured']} | {c['result']} |")
L.append("")
def mib(v):
    return None if v is None else v / 1024
r_half = [s["rss_kib"] for s in half if s["rss_kib"] is not None]
f_half = [s["fds"] for s in half if s["fds"] is not None]
L.append("| figure | value |")
L.append("|---|---|")
L.append(f"| samples (every {meta['slot']} s) | {len(run)} in the run, {len(half)} in the second half at "
         f"{ref_att} attached" + (f" ({odd} samples at another count left out)" if odd else "") + " |")
for s in S:
    if s["label"] in ("start", "setup", "end"):
        L.append(f"| guardwire at {s['label']} ({s['attached']} attached) | RSS {fmt(mib(s['rss_kib']), '{:.1f}')} MiB, "
                 f"{fmt(s['fds'], '{:.0f}')} fds, {fmt(s['threads'], '{:.0f}')} threads |")
if run:
    L.append(f"| RSS MiB over the run: first / last / min / max | {fmt(mib(run[0]['rss_kib']), '{:.1f}')} / "
             f"{fmt(mib(run[-1]['rss_kib']), '{:.1f}')} / {fmt(mib(min(s['rss_kib'] for s in run)), '{:.1f}')} / "
             f"{fmt(mib(max(s['rss_kib'] for s in run)), '{:.1f}')} (peak VmHWM {fmt(mib(run[-1]['hwm_kib']), '{:.1f}')}) |")
    L.append(f"| RSS second half: min / max, slope | {fmt(mib(min(r_half) if r_half else None), '{:.1f}')} / "
             f"{fmt(mib(max(r_half) if r_half else None), '{:.1f}')} MiB, {fmt(r_sl, '{:+.1f}')} KiB/min |")
    L.append(f"| fds over the run: min / max; second half slope | {min(s['fds'] for s in run):.0f} / "
             f"{max(s['fds'] for s in run):.0f}; {fmt(f_sl, '{:+.3f}')} /min |")
    L.append(f"| threads over the run: min / max; second half slope | {min(s['threads'] for s in run):.0f} / "
             f"{max(s['threads'] for s in run):.0f}; {fmt(sl['threads'], '{:+.3f}')} /min |")
    fa = [s["flows_active"] for s in run if s["flows_active"] is not None]
    L.append(f"| flow table (active flows): min / max; second half slope | {fmt(min(fa) if fa else None, '{:.0f}')} / "
             f"{fmt(max(fa) if fa else None, '{:.0f}')}; {fmt(sl['flows_active'], '{:+.1f}')} /min; "
             f"{fmt(run[-1]['flows_created'], '{:.0f}')} created in all |")
    L.append(f"| state dir (verdict log, rules, guardwire.log): first / last; second half slope | "
             f"{fmt(run[0]['state_kib'], '{:.0f}')} / {fmt(run[-1]['state_kib'], '{:.0f}')} KiB; "
             f"{fmt(sl['state_kib'], '{:+.0f}')} KiB/min |")
L.append(f"| guardwire CPU over the run | {fmt(cpu, '{:.2f}')} cores |")
L.append(f"| ping pod2 -> peer | {ping['sent']} sent, {ping['replies']} replies, {ping['lost']} lost "
         f"(switch windows {ping['lost_by']['switch']}, churn windows {ping['lost_by']['churn']}, outside "
         f"{ping['lost_by']['outside']}), longest run {ping['longest_run']}, {ping['dups']} dups"
         + (f", {ping['trailing']} unanswered at the deadline not counted" if 0 < ping["trailing"] <= 2 else "") + " |")
gb = [s["gbps"] for s in segs if s["gbps"] is not None]
L.append(f"| iperf3 pod1 -> peer | {len(segs)} segments, {len(seg_fail)} failed, median "
         f"{fmt(statistics.median(gb) if gb else None, '{:.2f}')} Gbit/s, {retr_total} retransmits "
         f"(switch windows {retr_by['switch']}, churn windows {retr_by['churn']}, outside {retr_by['outside']}), "
         f"{len(gaps)} stalls (100 ms intervals without a byte), longest {gap_max} ms, outside switch windows {gap_out} ms |")
for pod, d in flows.items():
    fb = d["failed_by"]
    L.append(f"| short connections from {pod} | {d.get('attempts')} made, {d.get('failed')} failed (switch "
             f"{fb['switch']}, churn {fb['churn']}, outside {fb['outside']}), p50 {fmt(d.get('p50_ms'), '{:.1f}')} ms, "
             f"p99 {fmt(d.get('p99_ms'), '{:.1f}')} ms, max {fmt(d.get('max_ms'), '{:.0f}')} ms |")
if fserver:
    L.append(f"| echo listener (peer) | {fserver['served']} served, {fserver['errors']} errors |")
L.append(f"| guardwire log lines | " + ", ".join(f"{k} {v}" for k, v in sorted(lv.items())) + " |")
L.append("")
L.append("| operation | n | failed | CLI p50 ms | p99 ms | max ms | daemon p50 ms | started > 1 s late |")
L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
for k, o in ops.items():
    L.append(f"| {k} | {o['n']} | {o['failed']} | {fmt(o['p50_ms'], '{:.0f}')} | {fmt(o['p99_ms'], '{:.0f}')} | "
             f"{fmt(o['max_ms'], '{:.0f}')} | {fmt(o['daemon_p50_ms'], '{:.1f}')} | {o['late']} |")
L.append("")
if op_fail:
    L.append("Failed operations (first 10):")
    L.append("")
    for x in op_fail[:10]:
        L.append(f"- {x['t0'] - T0:.1f} s {x['kind']} {x['workload']}: exit {x['rc']}: {x['err'] or x['out']}")
    L.append("")
if ping["outside_samples"]:
    L.append("Pings lost outside switch windows (first 20): " + "; ".join(
        f"seq {p['seq']} at {p['t_s']} s (nearest: {p['nearest']})" for p in ping["outside_samples"]) + ".")
    L.append("")
big = sorted(gaps, key=lambda g: -g["ms"])[:10]
if big:
    L.append("Longest iperf3 stalls: " + "; ".join(
        f"{g['ms']} ms at {g['t_s']} s ({g['where']}; nearest {g['nearest']})" for g in big) + ".")
    L.append("")
big = sorted(bursts, key=lambda b: -b["retr"])[:5]
if big and big[0]["retr"] > 2:
    L.append("Largest iperf3 retransmit bursts (per 100 ms): " + "; ".join(
        f"{b['retr']} at {b['t_s']} s ({b['where']}; nearest {b['nearest']})" for b in big) + ".")
    L.append("")
if seg_fail:
    L.append("Failed iperf3 segments: " + "; ".join(f"#{s['n']} at {s['t0_s']} s: {s['error']}" for s in seg_fail[:10]) + ".")
    L.append("")
fl = [(pod, x) for pod, d in flows.items() for x in d.get("fails", []) if x["where"] != "churn" or pod == "pod2"]
if fl:
    L.append("Failed short connections (first 10, churn windows of pod3..pod6 left out): " + "; ".join(
        f"{pod} at {x['t0'] - T0:.1f} s ({x['where']}; nearest {nearest(x['t0'])}): {x['error']}" for pod, x in fl[:10]) + ".")
    L.append("")
if msgs:
    L.append("guardwire log, WARN/ERROR by message (digits as N):")
    L.append("")
    for k, v in msgs.most_common(12):
        L.append(f"- {v} x `{k}`")
    L.append("")
if st:
    L.append(f"Drops at the end (`stats --json`): {json.dumps(st.get('drops', {}))}; malformed "
             f"{json.dumps(st.get('malformed', {}))}; steady pods' ports: " + "; ".join(
        f"{p['workload']} {p['role']} rx {p['rx_frames']} tx {p['tx_frames']} kernel_drops {p['kernel_drops']} "
        f"ring_truncated {p['ring_truncated']} drops {json.dumps(p['drops'] or {})}" for p in steady_ports) + ".")
    L.append("")
if lk:
    L.append("Interface drops from setup to the end of the run (steady pods, sec, host and peer ns; "
             "softnet = the kernel's backlog, whole machine): " + ("; ".join(
        f"{d['netns']} {d['device']} rx {d['rx_dropped']} tx {d['tx_dropped']}" for d in link_drops) or "none") + ".")
    L.append("")
L.append("Over time (one sample a minute):")
L.append("")
L.append("| t min | RSS MiB | fds | threads | flows | state dir KiB | attached | pod3 mode |")
L.append("|---:|---:|---:|---:|---:|---:|---:|---|")
step = max(1, round(60 / meta["slot"]))
for k, s in enumerate(run):
    if k % step == 0 or k == len(run) - 1:
        L.append(f"| {s['t_s'] / 60:.1f} | {fmt(mib(s['rss_kib']), '{:.1f}')} | {fmt(s['fds'], '{:.0f}')} | "
                 f"{fmt(s['threads'], '{:.0f}')} | {fmt(s['flows_active'], '{:.0f}')} | {fmt(s['state_kib'], '{:.0f}')} | "
                 f"{s['attached']} | {s['pod3_mode']} |")
L.append("")
L.append(f"Every sample: `{out}.csv`. Logs: `{meta['logs']}`. One machine, one run.")
md = "\n".join(L) + "\n"

with open(out + ".csv", "w", newline="") as f:
    w = csv.writer(f)
    keys = ["label", "t_s", "rss_kib", "hwm_kib", "fds", "threads", "attached", "pod3_mode", "state_kib",
            "flows_active", "flows_created", "ticks"]
    w.writerow(keys)
    for s in S:
        w.writerow(["" if s[k] is None else (int(s[k]) if isinstance(s[k], float) and k != "t_s" else s[k])
                    for k in keys])
with open(out + ".md", "w") as f:
    f.write(md)
with open(out + ".json", "w") as f:
    json.dump({"meta": meta, "checks": checks, "slopes_second_half": sl, "reference_attached": ref_att,
               "guardwire_cpu_cores": cpu, "samples": S, "operations": ops, "events": ev, "ping": ping,
               "iperf": {"segments": segs, "stalls": gaps, "retransmits": retr_total,
                         "retransmits_by": retr_by, "retransmit_intervals": bursts},
               "short_flows": flows, "interface_drops": link_drops, "echo_listener": fserver, "guardwire_log": {"levels": lv,
               "warn_error": dict(msgs.most_common(50))}, "stats_end": st}, f, indent=1)
    f.write("\n")
print(md)
PY
echo "results: $OUT.md"
echo "raw:     $OUT.json, $OUT.csv"
