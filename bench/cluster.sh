#!/usr/bin/env bash
# Cluster scale bench: N node agents (the real agent code without a datapath,
# each with its own etcd connection, watch and lease; bench/cluster/agents.rs)
# against a three-member etcd on this machine, for each N a fresh etcd.
# For every N: time from a push to each node's "applied" status (p50/p99/max,
# medians over the pushes), etcd's own delivery of the push to a watcher (the
# baseline of the same run), etcd's CPU and memory, and the controller's nodes
# page with every node listed.
#
#   bench/cluster.sh [--agents "100 1000 5000"] [--pushes 3] [--out FILE]
#
# Root (it runs etcd in a network namespace of its own, gwbcl-etcd, on its
# loopback). Writes a Markdown report into bench/results/ unless --out -.
set -euo pipefail
cd "$(dirname "$0")/.."

AGENTS="100 1000 5000"
PUSHES=3
OUT=bench/results/cluster-$(date -u +%Y-%m-%d-%H%M).md
while (($#)); do
    case $1 in
    --agents) AGENTS=$2; shift 2 ;;
    --pushes) PUSHES=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "usage: $0 [--agents \"100 1000 5000\"] [--pushes K] [--out FILE|-]" >&2; exit 2 ;;
    esac
done
[[ $(id -u) -eq 0 ]] || { echo "run as root" >&2; exit 1; }
command -v etcd >/dev/null || { echo "etcd is missing: apt-get install etcd-server" >&2; exit 1; }

NS=gwbcl-etcd
WORK=$(mktemp -d /var/tmp/gwbcl.XXXXXX)
PIDS=()
stop_all() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}
cleanup() {
    stop_all
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ip netns del "$NS" 2>/dev/null || true
ip netns add "$NS"
ip -n "$NS" link set lo up

echo "== building" >&2
cargo build --release -q --bin guardwire --example cluster-agents
BIN=target/release

CLIENTS=() PEERS=()
for k in 1 2 3; do
    CLIENTS+=("http://127.0.0.1:$((32377 + 2 * k))")
    PEERS+=("m$k=http://127.0.0.1:$((32378 + 2 * k))")
done
ENDPOINTS=$(IFS=,; echo "${CLIENTS[*]}")
INITIAL=$(IFS=,; echo "${PEERS[*]}")

start_etcd() {
    rm -rf "$WORK"/m*
    for k in 1 2 3; do
        ip netns exec "$NS" bash -c "ulimit -n $(ulimit -Hn); exec etcd --name m$k \
            --data-dir $WORK/m$k \
            --listen-client-urls ${CLIENTS[k-1]} --advertise-client-urls ${CLIENTS[k-1]} \
            --listen-peer-urls http://127.0.0.1:$((32378 + 2 * k)) \
            --initial-advertise-peer-urls http://127.0.0.1:$((32378 + 2 * k)) \
            --initial-cluster $INITIAL --initial-cluster-state new \
            --initial-cluster-token gwbench --quota-backend-bytes 4294967296" \
            >"$WORK/etcd-m$k.log" 2>&1 &
        PIDS+=($!)
    done
    for _ in $(seq 100); do
        if ip netns exec "$NS" etcdctl --endpoints "$ENDPOINTS" endpoint health >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    echo "etcd did not come up:" >&2; tail -5 "$WORK"/etcd-m*.log >&2; return 1
}

# Sum of utime+stime (clock ticks) and of resident memory (KiB) of the members.
etcd_pids() { pgrep -f "etcd --name m[123] --data-dir $WORK" || true; }
ticks() { local t=0; for p in $(etcd_pids); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
rss_kib() { local r=0; for p in $(etcd_pids); do r=$((r + $(awk '/VmRSS/ {print $2}' "/proc/$p/status"))); done; echo $r; }
hwm_kib() { local r=0; for p in $(etcd_pids); do r=$((r + $(awk '/VmHWM/ {print $2}' "/proc/$p/status"))); done; echo $r; }

HZ=$(getconf CLK_TCK)
RESULTS=()
for n in $AGENTS; do
    echo "== $n agents" >&2
    start_etcd
    ip netns exec "$NS" "$BIN/guardwire" controller --etcd "$ENDPOINTS" --listen 127.0.0.1:32500 \
        --state-dir "$WORK/ctl" >"$WORK/ctl.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 50); do [[ -s $WORK/ctl/api/admin.token ]] && break; sleep 0.1; done
    t0=$(ticks) s0=$(date +%s.%N)
    json=$(ip netns exec "$NS" bash -c "ulimit -n \$(ulimit -Hn); exec $BIN/examples/cluster-agents \
        --etcd $ENDPOINTS --agents $n --pushes $PUSHES \
        --controller http://127.0.0.1:32500 --token-file $WORK/ctl/api/admin.token")
    t1=$(ticks) s1=$(date +%s.%N)
    cpu=$(awk -v a="$t0" -v b="$t1" -v s0="$s0" -v s1="$s1" -v hz="$HZ" \
        'BEGIN { printf "%.0f", 100 * (b - a) / hz / (s1 - s0) }')
    rss=$(( $(rss_kib) / 1024 )) hwm=$(( $(hwm_kib) / 1024 ))
    RESULTS+=("$(jq -c --argjson cpu "$cpu" --argjson rss "$rss" --argjson hwm "$hwm" \
        '. + {etcd_cpu_pct: $cpu, etcd_rss_mib: $rss, etcd_peak_mib: $hwm}' <<<"$json")")
    echo "${RESULTS[-1]}" >&2
    stop_all
done

report() {
    echo "# Cluster scale bench, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), etcd $(etcd --version | awk '/etcd Version/ {print $3}') (3 members, one machine)."
    echo "Command: \`bench/cluster.sh --agents \"$AGENTS\" --pushes $PUSHES\`. Each agent: its own connection to one member"
    echo "(round robin), its own watch and lease (TTL 10 s); the set has 10 rules, parsed by every agent."
    echo "Times are medians over $PUSHES pushes of each push's p50/p99/max over the agents."
    echo "p50/p99/max: push to the node's status saying it applied the revision (what the controller sees)."
    echo "In force: push to the agent having put it in force, before it writes its status."
    echo "The baseline is etcd delivering the same push to one plain watcher, in the same run."
    echo
    echo "| agents | all applied | p50 ms | p99 ms | max ms | in force p50 / p99 ms | etcd delivery ms | p99 / delivery | start-up s | etcd CPU % of a core | etcd RSS MiB (peak) | nodes page ms (KiB) |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    for r in "${RESULTS[@]}"; do
        jq -r '"| \(.agents) | \(.all_applied) | \(.p50_ms|floor) | \(.p99_ms|floor) | \(.max_ms|floor) | \(.in_force_p50_ms|floor) / \(.in_force_p99_ms|floor) | \(.etcd_delivery_ms*10|floor/10) | \((.p99_ms / (if .etcd_delivery_ms > 0 then .etcd_delivery_ms else 1 end))|floor)x | \(.startup_s*10|floor/10) | \(.etcd_cpu_pct) | \(.etcd_rss_mib) (\(.etcd_peak_mib)) | \(.nodes_page.median_ms|floor) (\(.nodes_page.bytes/1024|floor)), \(.nodes_page.nodes_listed) listed, realized \(.nodes_page.realized) |"' <<<"$r"
    done
    echo
    echo "Targets: p99 <= 1000 ms at 1000 agents, <= 2000 ms at 5000."
    for r in "${RESULTS[@]}"; do
        jq -r 'if .agents == 1000 then "- 1000 agents: p99 \(.p99_ms|floor) ms: \(if .p99_ms <= 1000 and .all_applied then "PASS" else "FAIL" end)"
               elif .agents == 5000 then "- 5000 agents: p99 \(.p99_ms|floor) ms: \(if .p99_ms <= 2000 and .all_applied then "PASS" else "FAIL" end)"
               else empty end' <<<"$r"
    done
}
if [[ $OUT == - ]]; then report; else report | tee "$OUT"; echo "written: $OUT" >&2; fi
