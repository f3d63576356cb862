#!/usr/bin/env bash
# guardwire demo: one node with 2 pods and a VM, all steered through guardwire
# in the security namespace. Run as root:
#
#   testbed/demo.sh [--forwarder guardwire|bridge] [--no-build]
#
# --forwarder bridge runs the same topology with Linux bridges in the sec ns
# instead of guardwire (a baseline); --no-build skips `cargo build --release`.
# Everything is torn down on exit, on error and on Ctrl-C.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$SCRIPT_DIR")
NODE_SH=$SCRIPT_DIR/node.sh
PREFIX=gwdemo
FORWARDER=guardwire
BUILD=1

while [[ $# -gt 0 ]]; do
    case $1 in
    --forwarder) FORWARDER=${2:-}; shift 2 || exit 2 ;;
    --no-build) BUILD=0; shift ;;
    -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
done
case $FORWARDER in guardwire | bridge) ;; *) echo "--forwarder must be guardwire or bridge" >&2; exit 2 ;; esac

section() { printf '\n=== %s ===\n' "$*"; }
note() { printf '  %s\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (it creates network namespaces)"

# ------------------------------------------------------------------ setup

section "Prerequisites"
missing=()
for c in ip iperf3 ethtool ping sysctl; do
    command -v "$c" >/dev/null || missing+=("$c")
done
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local ]] || missing+=("CNI plugins")
if [[ ${#missing[@]} -gt 0 ]]; then
    note "missing: ${missing[*]}; installing packages"
    apt-get update
    apt-get install -y --no-install-recommends iproute2 iperf3 ethtool containernetworking-plugins iputils-ping procps
else
    note "iproute2, iperf3, ethtool, ping, sysctl and the CNI plugins are present"
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
    "$NODE_SH" down "$PREFIX" || true
    note "node $PREFIX removed"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ helpers

stats() {
    if [[ $FORWARDER == guardwire ]]; then
        echo "  -- guardwire stats --"
        "$GW_BIN_DIR/guardwire" stats --socket "$GW_SOCK" 2>&1 | sed 's/^/  /' ||
            note "(guardwire stats failed)"
    else
        echo "  -- sec ns port counters (rx/tx packets) --"
        local w d
        for w in ${WORKLOADS//,/ }; do
            for d in "wp-$w" "up-$w"; do
                printf '  %-8s rx %8s  tx %8s\n' "$d" \
                    "$(ip netns exec "$NS_SEC" cat "/sys/class/net/$d/statistics/rx_packets")" \
                    "$(ip netns exec "$NS_SEC" cat "/sys/class/net/$d/statistics/tx_packets")"
            done
        done
    fi
}

ping_from() { # NS DST
    ip netns exec "$1" ping -c 3 -i 0.2 -W 2 "$2" | sed 's/^/  /'
}

# ------------------------------------------------------------------ the node

section "Building node '$PREFIX': 2 pods (CNI bridge plugin), 1 VM (tap), forwarder: $FORWARDER"
"$NODE_SH" down "$PREFIX" 2>/dev/null || true # leftovers of an interrupted run
uplog=$(mktemp)
env_lines=$("$NODE_SH" up "$PREFIX" --pods 2 --vm --forwarder "$FORWARDER" 2>"$uplog") || {
    cat "$uplog" >&2
    rm -f "$uplog"
    die "node.sh up failed"
}
rm -f "$uplog"
eval "$env_lines"
note "pod1  $POD_IP_1  ($POD_NS_1, MAC $POD_MAC_1)"
note "pod2  $POD_IP_2  ($POD_NS_2, MAC $POD_MAC_2)"
note "vm1   $VM_IP  ($NS_VM behind tap $VM_TAP, MAC $VM_MAC)"
note "peer  $PEER_IP  ($NS_PEER, outside the node, routed by $NS_HOST)"
note "each workload's host-side port now sits in $NS_SEC (wp-*), joined to cni0 by a new veth (up-*)"
if [[ $FORWARDER == guardwire ]]; then
    note "guardwire pid $GW_PID, config $GW_CONFIG, log $GW_LOG"
fi
stats

section "1. pod1 -> peer (north-south: pod, sec ns, host routing, peer)"
ping_from "$POD_NS_1" "$PEER_IP"
stats

section "2. pod1 -> pod2 (east-west, same node)"
ping_from "$POD_NS_1" "$POD_IP_2"
stats

section "3. VM -> peer (guest behind a tap)"
ping_from "$NS_VM" "$PEER_IP"
stats

section "4. iperf3 TCP, pod1 -> peer, 5 s"
ip netns exec "$NS_PEER" iperf3 -s -1 -D
for _ in $(seq 50); do
    ip netns exec "$NS_PEER" ss -Hltn 'sport = :5201' | grep -q . && break
    sleep 0.1
done
ip netns exec "$POD_NS_1" iperf3 -c "$PEER_IP" -t 5 | sed 's/^/  /'
stats

section "Done"
note "all steps passed"
