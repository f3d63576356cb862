#!/usr/bin/env bash
# guardwire demo: a node with 2 CNI-made pods and a VM, running without guardwire;
# then guardwire attaches them live, forwards and counts their traffic, switches
# steering modes, survives a SIGKILL (the watchdog fails open), comes back and
# re-adopts everything, and detaches, leaving the node as it was. Run as root:
#
#   testbed/demo.sh [--no-build] [--no-wait] [--port N]
#   testbed/demo.sh --cluster [--no-build] [--no-wait] [--port N] [--keep]
#
# --no-build skips `cargo build --release`. Midway the node's web page is
# opened on http://127.0.0.1:PORT/ (default 7443, a forward into the test bed's
# management link) and the demo waits for Enter while you look at it; --no-wait
# (or no terminal on stdin) goes straight on. Everything is torn down on exit,
# on error and on Ctrl-C.
# --cluster: three nodes, a three-member etcd and the controller
# (testbed/cluster.sh); one rule set pushed once through the controller, then
# the same flow blocked on every node while another passes; the controller's
# page on http://127.0.0.1:PORT/. --keep leaves the cluster up at the end.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$SCRIPT_DIR")
NODE_SH=$SCRIPT_DIR/node.sh
CLUSTER_SH=$SCRIPT_DIR/cluster.sh
PREFIX=gwdemo
BUILD=1
WAIT=1
PAGE_PORT=7443
CLUSTER=0
KEEP=0
CL_PREFIX=gwdc

while [[ $# -gt 0 ]]; do
    case $1 in
    --no-build) BUILD=0; shift ;;
    --no-wait) WAIT=0; shift ;;
    --port) PAGE_PORT=${2:?--port needs a number}; shift 2 ;;
    --cluster) CLUSTER=1; shift ;;
    --keep) KEEP=1; shift ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
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
# The build: the etcd client's protocol files are compiled by protoc.
command -v protoc >/dev/null || missing+=(protoc)
[[ -e /usr/include/google/protobuf/descriptor.proto ]] || missing+=("protobuf headers")
if [[ ${#missing[@]} -gt 0 ]]; then
    note "missing: ${missing[*]}; installing packages"
    apt-get update
    apt-get install -y --no-install-recommends iproute2 iperf3 ethtool containernetworking-plugins iputils-ping procps socat curl \
        protobuf-compiler libprotobuf-dev
else
    note "iproute2, iperf3, ethtool, ping, sysctl, socat, curl, protoc and the CNI plugins are present"
fi
if [[ $CLUSTER == 1 ]]; then
    cl_missing=()
    [[ -x /usr/bin/etcd ]] || cl_missing+=(etcd-server)
    command -v etcdctl >/dev/null || cl_missing+=(etcd-client)
    command -v openssl >/dev/null || cl_missing+=(openssl)
    command -v python3 >/dev/null || cl_missing+=(python3)
    if [[ ${#cl_missing[@]} -gt 0 ]]; then
        note "missing for --cluster: ${cl_missing[*]}; installing"
        apt-get update
        apt-get install -y --no-install-recommends "${cl_missing[@]}"
    else
        note "etcd, etcdctl, openssl and python3 are present"
    fi
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

if [[ $CLUSTER == 1 ]]; then
    cluster_demo() {
        local uplog env_lines i rev t0 line
        cl_cleanup() {
            local rc=$?
            trap - EXIT INT TERM
            case $rc in
            0) ;;
            130 | 143) printf '\ninterrupted\n' ;;
            *) printf '\ndemo FAILED (exit %s) in the step above\n' "$rc" ;;
            esac
            [[ -n ${PAGE_FWD:-} ]] && kill "$PAGE_FWD" 2>/dev/null
            if [[ $KEEP == 1 && $rc == 0 ]]; then
                section "Kept"
                note "the cluster stays up: testbed/cluster.sh env $CL_PREFIX; remove it with testbed/cluster.sh down $CL_PREFIX"
                note "page again: socat TCP-LISTEN:$PAGE_PORT,bind=127.0.0.1,reuseaddr,fork EXEC:'ip netns exec $CL_NS socat STDIO TCP:${CONTROLLER_URL#http://}'"
            else
                section "Teardown"
                "$CLUSTER_SH" down "$CL_PREFIX" || true
                note "cluster $CL_PREFIX removed"
            fi
            exit "$rc"
        }
        trap cl_cleanup EXIT
        trap 'exit 130' INT
        trap 'exit 143' TERM

        ctl() { # METHOD PATH [curl args...]: the controller's API with the admin token
            local m=$1 p=$2
            shift 2
            ip netns exec "$CL_NS" curl -sS -m 5 -X "$m" -H "Authorization: Bearer $(cat "$CONTROLLER_ADMIN_TOKEN_FILE")" \
                "$@" "$CONTROLLER_URL$p"
        }
        probe() { # NODE PORT: one TCP connection from the node's pod1 to its peer
            local env=NODE_ENV_$1 pod peer
            pod=$(sed -n 's/^POD_NS_1=//p' "${!env}")
            peer=$(sed -n 's/^PEER_IP=//p' "${!env}")
            ip netns exec "$pod" python3 -c '
import socket, sys
s = socket.socket(); s.settimeout(1.5)
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print("passes (" + s.recv(16).decode().strip() + ")")
except socket.timeout:
    print("BLOCKED (no answer)")
except OSError as e:
    print("BLOCKED (%s)" % e)' "$peer" "$2"
        }

        section "Building cluster '$CL_PREFIX': etcd (3 members, TLS with client certificates), the controller, 3 nodes with 2 pods each"
        "$CLUSTER_SH" down "$CL_PREFIX" 2>/dev/null || true # leftovers of an interrupted run
        uplog=$(mktemp)
        t0=$SECONDS
        env_lines=$("$CLUSTER_SH" up "$CL_PREFIX" --nodes 3 --pods 2 2>"$uplog") || {
            cat "$uplog" >&2
            rm -f "$uplog"
            die "cluster.sh up failed"
        }
        rm -f "$uplog"
        eval "$env_lines"
        note "built in $((SECONDS - t0)) s"
        note "management ns $CL_NS: etcd $ETCD_ENDPOINTS, controller $CONTROLLER_URL"
        for ((i = 1; i <= NODES; i++)); do
            line=NODE_PREFIX_$i api=NODE_API_URL_$i labels=NODE_LABELS_$i eps=NODE_ETCD_ENDPOINTS_$i
            note "node ${!line}: labels ${!labels}, API ${!api}, etcd over its management link ${!eps%%,*},..."
        done
        echo "  -- etcd members --"
        "$ETCDCTL" endpoint status -w table 2>&1 | sed 's/^/  /'

        # A server on every node's peer, on two ports.
        for ((i = 1; i <= NODES; i++)); do
            env=NODE_ENV_$i
            peer_ns=$(sed -n 's/^NS_PEER=//p' "${!env}")
            ip netns exec "$peer_ns" python3 -c '
import socket, threading
def serve(p):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", p)); s.listen(16)
    while True:
        c, _ = s.accept(); c.sendall(b"ok\n"); c.close()
for p in (5001, 5002):
    threading.Thread(target=serve, args=(p,), daemon=True).start()
threading.Event().wait()' </dev/null >/dev/null 2>&1 &
        done
        for ((i = 1; i <= NODES; i++)); do
            env=NODE_ENV_$i
            peer_ns=$(sed -n 's/^NS_PEER=//p' "${!env}")
            for _ in $(seq 50); do
                [[ $(ip netns exec "$peer_ns" ss -Hltn '( sport = :5001 or sport = :5002 )' | wc -l) -ge 2 ]] && break
                sleep 0.1
            done
        done

        section "1. Before any rule: pod1 -> peer:5001 and pod1 -> peer:5002 on every node"
        for ((i = 1; i <= NODES; i++)); do
            line=NODE_PREFIX_$i
            note "${!line}: :5001 $(probe "$i" 5001), :5002 $(probe "$i" 5002)"
        done

        section "2. One rule set, pushed once, through the controller"
        cat >"$CL_STATE/demo-rules.toml" <<'EOF2'
default = "allow"
[[rule]]
id = "no-5001"
proto = "tcp"
dst_ports = 5001
action = "deny"
EOF2
        sed 's/^/  /' "$CL_STATE/demo-rules.toml"
        note "\$ guardwire rules push demo-rules.toml --cluster $CONTROLLER_URL --token-file $CONTROLLER_ADMIN_TOKEN_FILE"
        ip netns exec "$CL_NS" "$GW_BIN_DIR/guardwire" rules push "$CL_STATE/demo-rules.toml" \
            --cluster "$CONTROLLER_URL" --token-file "$CONTROLLER_ADMIN_TOKEN_FILE" 2>&1 | sed 's/^/  /'
        rev=$(ctl GET /api/v1/rulesets/default | python3 -c 'import json,sys; print(json.load(sys.stdin)["revision"])')
        note "the set is revision $rev in etcd (key /guardwire/v1/rulesets/default)"

        section "3. Waiting for the nodes (each watches etcd and applies it)"
        t0=$SECONDS
        while :; do
            line=$(ctl GET /api/v1/nodes | python3 -c '
import json, sys
rev = int(sys.argv[1])
d = json.load(sys.stdin)
s = [x for x in d.get("summary", []) if x["ruleset"] == "default"]
s = s[0] if s else {"realized": 0, "total": 0, "revision": 0}
print(s["realized"], s["total"], s["revision"])' "$rev" 2>/dev/null || echo "0 0 0")
            read -r realized total srev <<<"$line"
            if [[ $srev == "$rev" && $realized == "$total" && $total == "$NODES" ]]; then
                note "realized on $realized of $total (revision $rev) after $((SECONDS - t0)) s"
                break
            fi
            ((SECONDS - t0 < 30)) || die "not realized on every node within 30 s (last: $realized of $total, revision $srev)"
            sleep 0.3
        done
        echo "  -- GET /api/v1/nodes: desired vs applied --"
        ctl GET /api/v1/nodes | python3 -c '
import json, sys
for n in json.load(sys.stdin)["nodes"]:
    print("   %-6s alive=%-5s labels=%-22s set=%s desired=%s applied=%s error=%s" % (n["name"], n["alive"],
          ",".join(n["labels"]), n["ruleset"], n["desired"], n["applied"], n["error"]))'

        section "4. The same flow on every node: pod1 -> peer:5001 blocked, pod1 -> peer:5002 passes"
        for ((i = 1; i <= NODES; i++)); do
            line=NODE_PREFIX_$i
            note "${!line}: :5001 $(probe "$i" 5001), :5002 $(probe "$i" 5002)"
        done
        echo "  -- node ${NODE_PREFIX_1}'s own view (GET /api/v1/cluster on its socket) --"
        curl -sS -m 5 --unix-socket "$NODE_SOCK_1" http://guardwire/api/v1/cluster | python3 -m json.tool | sed 's/^/  /'

        section "5. The controller's page (rules, nodes: realized on N of M, traffic of chosen nodes)"
        printf '#!/bin/sh\nexec ip netns exec %s socat STDIO TCP:%s\n' "$CL_NS" "${CONTROLLER_URL#http://}" >"$CL_STATE/page-forward"
        chmod 700 "$CL_STATE/page-forward"
        socat "TCP-LISTEN:$PAGE_PORT,bind=127.0.0.1,reuseaddr,fork" "EXEC:$CL_STATE/page-forward" &
        PAGE_FWD=$!
        for _ in $(seq 50); do
            curl -sf -o /dev/null "http://127.0.0.1:$PAGE_PORT/api/v1/health" && break
            sleep 0.1
        done
        note "page:          http://127.0.0.1:$PAGE_PORT/   (a forward to $CONTROLLER_URL in $CL_NS)"
        note "admin token:   $(cat "$CONTROLLER_ADMIN_TOKEN_FILE")"
        note "viewer token:  $(cat "$CONTROLLER_VIEWER_TOKEN_FILE")"
        note "from another machine: ssh -L $PAGE_PORT:127.0.0.1:$PAGE_PORT root@THIS-HOST, then open the same URL"
        if [[ $WAIT == 1 && -t 0 ]]; then
            read -r -p "  Open the page, log in with the admin token; press Enter to go on ($([[ $KEEP == 1 ]] && echo keep || echo teardown)) " _
        fi

        section "Done"
        note "all steps passed"
    }
    cluster_demo
    exit 0
fi

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
