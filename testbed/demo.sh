#!/usr/bin/env bash
# guardwire demo: a node with 2 CNI-made pods and a VM, running without guardwire;
# then guardwire attaches them live, forwards and counts their traffic, switches
# steering modes, survives a SIGKILL (the watchdog fails open), comes back and
# re-adopts everything, and detaches, leaving the node as it was. Run as root:
#
#   testbed/demo.sh [--no-build] [--no-wait] [--port N]
#
# --no-build skips `cargo build --release`. Midway the node's web page is
# opened on http://127.0.0.1:PORT/ (default 7443, a forward into the test bed's
# management link) and the demo waits for Enter while you look at it; --no-wait
# (or no terminal on stdin) goes straight on. Everything is torn down on exit,
# on error and on Ctrl-C.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$SCRIPT_DIR")
NODE_SH=$SCRIPT_DIR/node.sh
PREFIX=gwdemo
BUILD=1
WAIT=1
PAGE_PORT=7443

while [[ $# -gt 0 ]]; do
    case $1 in
    --no-build) BUILD=0; shift ;;
    --no-wait) WAIT=0; shift ;;
    --port) PAGE_PORT=${2:?--port needs a number}; shift 2 ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
done

section() { printf '\n=== %s ===\n' "$*"; }
note() { printf '  %s\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (it creates network namespaces)"

# ------------------------------------------------------------------ setup

section "Prerequisites"
missing=()
for c in ip iperf3 ethtool ping sysctl socat curl; do
    command -v "$c" >/dev/null || missing+=("$c")
done
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local ]] || missing+=("CNI plugins")
if [[ ${#missing[@]} -gt 0 ]]; then
    note "missing: ${missing[*]}; installing packages"
    apt-get update
    apt-get install -y --no-install-recommends iproute2 iperf3 ethtool containernetworking-plugins iputils-ping procps socat curl
else
    note "iproute2, iperf3, ethtool, ping, sysctl, socat, curl and the CNI plugins are present"
fi

if [[ $BUILD == 1 ]]; then
    command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain (edition 2024), or use --no-build with binaries already built"
    note "building guardwire (cargo build --release)"
    (cd "$REPO_ROOT" && cargo build --release)
fi
if [[ -z ${GW_BIN_DIR:-} ]]; then
    target=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
    [[ $target == /* ]] || target=$REPO_ROOT/$target
    GW_BIN_DIR=$target/release
fi
export GW_BIN_DIR
note "binaries from $GW_BIN_DIR"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    case $rc in
    0) ;;
    130 | 143) printf '\ninterrupted\n' ;;
    *) printf '\ndemo FAILED (exit %s) in the step above\n' "$rc" ;;
    esac
    section "Teardown"
    [[ -n ${PAGE_FWD:-} ]] && kill "$PAGE_FWD" 2>/dev/null
    "$NODE_SH" down "$PREFIX" || true
    note "node $PREFIX removed"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ helpers

gw() { "$GW_BIN_DIR/guardwire" "$@" --socket "$GW_SOCK" 2>&1 | sed 's/^/  /'; }

stats() {
    echo "  -- guardwire stats --"
    gw stats
}

ping_from() { # NS DST
    ip netns exec "$1" ping -c 3 -i 0.2 -W 2 "$2" | sed 's/^/  /'
}

# ------------------------------------------------------------------ the node

section "Building node '$PREFIX': 2 pods (real CNI bridge plugin), 1 VM (tap held like QEMU), guardwire idle in sec ns"
"$NODE_SH" down "$PREFIX" 2>/dev/null || true # leftovers of an interrupted run
uplog=$(mktemp)
env_lines=$("$NODE_SH" up "$PREFIX" --pods 2 --vm --live 2>"$uplog") || {
    cat "$uplog" >&2
    rm -f "$uplog"
    die "node.sh up failed"
}
rm -f "$uplog"
eval "$env_lines"
note "pod1  $POD_IP_1  ($POD_NS_1, MAC $POD_MAC_1, host end $POD_HOSTIF_1 in cni0)"
note "pod2  $POD_IP_2  ($POD_NS_2, MAC $POD_MAC_2, host end $POD_HOSTIF_2 in cni0)"
note "vm1   $VM_IP  ($NS_VM behind tap $VM_TAP in cni0, MAC $VM_MAC)"
note "peer  $PEER_IP  ($NS_PEER, outside the node, routed by $NS_HOST)"
note "guardwire pid $GW_PID in $NS_SEC, no workload yet (log $GW_LOG)"
echo "  -- host ns before attach --"
ip -n "$NS_HOST" -br link | sed 's/^/  /'

section "1. Without guardwire: pod1 -> peer"
ping_from "$POD_NS_1" "$PEER_IP"

section "2. Attach pod1, pod2 and the VM live (the CNI veths and the tap move into sec ns)"
gw attach pod "$POD_NS_1" --name pod1
gw attach pod "$POD_NS_2" --name pod2
gw attach vm --tap "$VM_TAP" --name vm1
gw list
echo "  -- host ns after attach: same names, same MACs, a new veth in each place --"
ip -n "$NS_HOST" -br link | sed 's/^/  /'

section "3. Traffic through guardwire: pod1 -> peer, pod1 -> pod2 (east-west), VM -> peer"
ping_from "$POD_NS_1" "$PEER_IP"
ping_from "$POD_NS_1" "$POD_IP_2"
ping_from "$NS_VM" "$PEER_IP"
stats

section "4. iperf3 TCP, pod1 -> peer, 4 s, default offloads (64 KiB super-frames cross intact)"
ip netns exec "$NS_PEER" iperf3 -s -1 -D
for _ in $(seq 50); do
    ip netns exec "$NS_PEER" ss -Hltn 'sport = :5201' | grep -q . && break
    sleep 0.1
done
ip netns exec "$POD_NS_1" iperf3 -c "$PEER_IP" -t 4 | sed 's/^/  /'
stats

section "5. Rules pushed live: shape pod1 -> peer:5201 to 40 Mbit/s, deny pod2 -> peer:5201"
cat >"$STATE/demo-rules.toml" <<EOF
default = "allow"
[[rule]]
id = "pod1-bulk-40mbit"
workload = "pod1"
proto = "tcp"
dst_ports = 5201
action = "shape"
rate = "40mbit"
[[rule]]
id = "pod2-no-bulk"
workload = "pod2"
direction = "egress"
proto = "tcp"
dst_ports = 5201
action = "deny"
EOF
sed 's/^/  /' "$STATE/demo-rules.toml"
gw rules push "$STATE/demo-rules.toml"
ip netns exec "$NS_PEER" iperf3 -s -D --pidfile "$STATE/demo-iperf.pid"
for _ in $(seq 50); do
    ip netns exec "$NS_PEER" ss -Hltn 'sport = :5201' | grep -q . && break
    sleep 0.1
done
echo "  -- pod1: shaped --"
ip netns exec "$POD_NS_1" iperf3 -c "$PEER_IP" -t 3 | grep -E "sender|receiver" | sed 's/^/  /'
echo "  -- pod2: denied (iperf3 cannot connect) --"
ip netns exec "$POD_NS_2" timeout 4 iperf3 -c "$PEER_IP" -t 1 --connect-timeout 2000 2>&1 | tail -1 | sed 's/^/  /' || true
kill "$(cat "$STATE/demo-iperf.pid")" 2>/dev/null || true
sleep 1.5   # the verdict log is written by a once-a-second sweep
echo "  -- guardwire log, TCP records: verdict (allow/deny), rule, counters, first seen, updated at --"
gw log --since 1m | grep -E "^  verdict| tcp "
echo "  -- guardwire flows --action deny --"
gw flows --action deny
echo "  -- guardwire usage: per workload and category, last 10 s window --"
gw usage --window 10
echo 'default = "allow"' >"$STATE/allow-all.toml"
gw rules push "$STATE/allow-all.toml"

section "6. Steering modes for pod1: off (kernel tc redirect), mirror (kernel forwards, guardwire sees copies), inline"
for m in off mirror inline; do
    gw mode pod1 "$m"
    ping_from "$POD_NS_1" "$PEER_IP" | tail -2
    gw list | sed -n '1p;/^  pod1/p'
done

section "7. SIGKILL guardwire: the watchdog hands the workloads (on_failure = open) to the kernel path"
kill -9 "$GW_PID"
sleep 0.5
ping_from "$POD_NS_1" "$PEER_IP" | tail -2
ip netns exec "$NS_SEC" tc filter show dev wp-pod1 ingress | sed 's/^/  /' | head -3

section "8. Restart guardwire: it re-adopts every workload without re-plumbing"
rm -f "$GW_SOCK"
ip netns exec "$NS_SEC" setsid env NO_COLOR=1 "$GW_BIN_DIR/guardwire" run --config "$GW_CONFIG" \
    </dev/null >>"$GW_LOG" 2>&1 3>&- &
echo $! >"$STATE/guardwire.pid"
for _ in $(seq 100); do [[ -S $GW_SOCK ]] && break; sleep 0.1; done
gw list
ping_from "$POD_NS_1" "$PEER_IP" | tail -2
stats

section "9. The node's web page and API (the patent's Fig. 8), on the management link"
# The API listens on the test bed's management link ($GW_API, inside the
# namespaces); a forward from this machine's loopback lets a browser here reach
# it. guardwire still sees the management side's address and asks for a token.
printf '#!/bin/sh\nexec ip netns exec %s socat STDIO TCP:%s\n' "$NS_HOST" "$GW_API" >"$STATE/page-forward"
chmod 700 "$STATE/page-forward"
socat "TCP-LISTEN:$PAGE_PORT,bind=127.0.0.1,reuseaddr,fork" "EXEC:$STATE/page-forward" &
PAGE_FWD=$!
TOKEN=$(cat "$GW_ADMIN_TOKEN_FILE")
for _ in $(seq 50); do
    curl -sf -o /dev/null "http://127.0.0.1:$PAGE_PORT/api/v1/health" && break
    sleep 0.1
done
note "page:          http://127.0.0.1:$PAGE_PORT/"
note "admin token:   $TOKEN"
note "viewer token:  $(cat "$GW_VIEWER_TOKEN_FILE")"
note "API document:  http://127.0.0.1:$PAGE_PORT/api/v1/openapi.json"
echo "  -- GET /api/v1/workloads (curl with the admin token) --"
curl -s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PAGE_PORT/api/v1/workloads" |
    python3 -c 'import json,sys; [print("  ", w["name"], w["kind"], w["mode"], w["workload_port"], w["uplink_port"]) for w in json.load(sys.stdin)]'
echo "  -- /metrics (a few lines) --"
curl -s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PAGE_PORT/metrics" |
    grep -E '^guardwire_(port_rx_frames_total|verdicts_total|rules_generation)' | head -8 | sed 's/^/  /'
echo "  -- without a token --"
curl -s "http://127.0.0.1:$PAGE_PORT/api/v1/workloads" | sed 's/^/  /'
echo
if [[ $WAIT == 1 && -t 0 ]]; then
    # Traffic for the page to show while it is open.
    ip netns exec "$POD_NS_1" ping -i 0.5 "$PEER_IP" >/dev/null 2>&1 &
    PINGER=$!
    read -r -p "  Open the page, log in with the admin token; press Enter to go on (detach, teardown) " _
    kill "$PINGER" 2>/dev/null || true
fi

section "10. Detach everything: the node is back as the CNI and the hypervisor left it"
gw detach pod1
gw detach pod2
gw detach vm1
ip -n "$NS_HOST" -br link | sed 's/^/  /'
ping_from "$POD_NS_1" "$PEER_IP" | tail -2

section "Done"
note "all steps passed"
