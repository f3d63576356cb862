#!/usr/bin/env bash
# Side-by-side benchmark: direct veth / Linux bridge / tc redirect / guardwire (fast path on) /
# OVS netdev / guardwire polling / inspection off / large ring slots / fast path off / before it.
# Usage: bench/run.sh [--rounds N] [--duration S] [--modes a,b,c,d,e,f,g,h,i,j] [--base-bin PATH] [--quick]
# Needs root. Everything runs in network namespaces named gwb-*, removed on exit.
# Modes (f) (g) (h) (i) run guardwire with the fast path off, so every frame crosses it;
# (j) runs the binary --base-bin names (an earlier build) with its own defaults.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
HELPER=$BENCH/lib/gwb.py
GW_BIN=${GW_BIN:-$ROOT/target/release/guardwire}
GW_SOCK_DIR=/run/gwb
GW_SOCK=$GW_SOCK_DIR/guardwire.sock

ROUNDS=3
DURATION=5
MODES=a,b,c,d,e,f,g,h,i
BASE_BIN=""            # mode (j): an earlier guardwire build
MANY_FLOWS=1000        # the many-flows case: short TCP flows at once
MANY_FLOW_BYTES=16384  # ... each sending this much
GW_POLL_SPIN_US=2000   # mode (f): [datapath] spin_us
GW_BIG_SLOT=69632      # mode (h): [datapath] slot_bytes, every frame in the ring
TRAFGEN_CPUS=${GWB_TRAFGEN_CPUS:-1}

usage() {
    sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

while [ $# -gt 0 ]; do
    case $1 in
        --rounds) ROUNDS=${2:?}; shift 2 ;;
        --rounds=*) ROUNDS=${1#*=}; shift ;;
        --duration) DURATION=${2:?}; shift 2 ;;
        --duration=*) DURATION=${1#*=}; shift ;;
        --modes) MODES=${2:?}; shift 2 ;;
        --modes=*) MODES=${1#*=}; shift ;;
        --base-bin) BASE_BIN=${2:?}; shift 2 ;;
        --base-bin=*) BASE_BIN=${1#*=}; shift ;;
        --quick) ROUNDS=1; DURATION=2; shift ;;
        -h|--help) usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
done

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "--rounds must be a positive integer" >&2; exit 2; }
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || { echo "--duration must be a positive integer (seconds)" >&2; exit 2; }
MODE_LIST=()
IFS=, read -r -a _m <<<"$MODES"
for m in "${_m[@]}"; do
    case $m in a|b|c|d|e|f|g|h|i|j) ;; "") continue ;; *) echo "unknown mode: $m (a..j)" >&2; exit 2 ;; esac
done
[ -n "$BASE_BIN" ] && case ",$MODES," in *,j,*) ;; *) MODES=$MODES,j ;; esac
for m in a b c d e f g h i j; do   # canonical order, no duplicates
    case ",$MODES," in *",$m,"*) MODE_LIST+=("$m") ;; esac
done
[ ${#MODE_LIST[@]} -gt 0 ] || { echo "no modes" >&2; exit 2; }
MODES=$(IFS=,; echo "${MODE_LIST[*]}")

[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
for t in ip tc iperf3 ping python3 timeout ss; do
    command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 1; }
done

# ---------------------------------------------------------------- state
NS_POD=gwb-pod NS_SEC=gwb-sec NS_PEER=gwb-peer NS_DPOD=gwb-dpod NS_DPEER=gwb-dpeer
ALL_NS=("$NS_POD" "$NS_SEC" "$NS_PEER" "$NS_DPOD" "$NS_DPEER")
POD_IP=10.77.0.1 PEER_IP=10.77.0.2
POD_MAC=02:77:00:00:00:01 PEER_MAC=02:77:00:00:00:02
IPERF_PORT=5201

STAMP=$(date +%Y-%m-%d-%H%M)
WORK=$(mktemp -d "/tmp/gwb-run.$STAMP.XXXX")
LOGS=$WORK/logs
mkdir -p "$LOGS"
RAW=$WORK/raw.jsonl
: >"$RAW"

GW_PID=""            # guardwire (modes d and f)
OVS_DIR=""           # OVS private dir (mode e)
BG_PIDS=()           # iperf3 servers, trafgen
declare -A DISABLED=()   # mode -> reason, when a mode cannot run at all

# fd 3 = the terminal's stderr: traps may run while a function's stderr is redirected.
exec 3>&2
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&3; }
now() { date +%s.%N; }

# ---------------------------------------------------------------- cleanup
kill_pid() {    # kill_pid PID [SIG]: signal, wait up to 3 s, then SIGKILL
    local pid=$1 sig=${2:-TERM} i
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill "-$sig" "$pid" 2>/dev/null
    for i in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}

ovs_stop() {
    [ -n "$OVS_DIR" ] || return 0
    local d=$OVS_DIR p
    OVS_RUNDIR=$d timeout 5 ovs-appctl -t "$d/ovs-vswitchd.ctl" exit --cleanup >/dev/null 2>&1
    OVS_RUNDIR=$d timeout 5 ovs-appctl -t "$d/ovsdb-server.ctl" exit >/dev/null 2>&1
    for p in ovs-vswitchd ovsdb-server; do
        [ -f "$d/$p.pid" ] && kill_pid "$(cat "$d/$p.pid" 2>/dev/null)"
    done
    OVS_DIR=""
}

gw_stop() {
    [ -n "$GW_PID" ] || return 0
    kill_pid "$GW_PID" TERM
    GW_PID=""
    rm -f "$GW_SOCK"
}

netns_exists() { [ -e "/run/netns/$1" ]; }

cleanup() {
    local rc=$? ns p
    trap - EXIT INT TERM
    gw_stop
    ovs_stop
    for p in "${BG_PIDS[@]}"; do kill_pid "$p"; done
    for ns in "${ALL_NS[@]}"; do
        netns_exists "$ns" || continue
        # anything still inside one of our namespaces was started by this harness
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill_pid "$p"; done
        ip netns del "$ns" 2>/dev/null
    done
    rmdir "$GW_SOCK_DIR" 2>/dev/null
    [ $rc -ne 0 ] && log "exit status $rc; logs kept in $LOGS"
    exit $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# ---------------------------------------------------------------- topology
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

setup_topology() {
    local ns p
    for ns in "${ALL_NS[@]}"; do
        if netns_exists "$ns"; then
            log "removing stale namespace $ns (from an earlier run)"
            for p in $(ip netns pids "$ns" 2>/dev/null); do kill_pid "$p"; done
            ip netns del "$ns" || return 1
        fi
    done
    for ns in "${ALL_NS[@]}"; do
        ip netns add "$ns" || return 1
        ip -n "$ns" link set lo up
    done
    ip link add eth0 netns "$NS_POD" type veth peer name wp0 netns "$NS_SEC" || return 1
    ip link add up0 netns "$NS_SEC" type veth peer name eth0 netns "$NS_PEER" || return 1
    ip link add eth0 netns "$NS_DPOD" type veth peer name eth0 netns "$NS_DPEER" || return 1
    for ns in "$NS_POD" "$NS_DPOD"; do
        ip -n "$ns" link set eth0 address $POD_MAC mtu 1500 up
        ip -n "$ns" addr add $POD_IP/24 dev eth0
    done
    for ns in "$NS_PEER" "$NS_DPEER"; do
        ip -n "$ns" link set eth0 address $PEER_MAC mtu 1500 up
        ip -n "$ns" addr add $PEER_IP/24 dev eth0
    done
    ip -n "$NS_SEC" link set wp0 address 02:77:00:00:01:01 mtu 1500
    ip -n "$NS_SEC" link set up0 address 02:77:00:00:01:02 mtu 1500
    nsx "$NS_SEC" sysctl -qw net.ipv4.ip_forward=0 \
        net.ipv6.conf.default.disable_ipv6=1 \
        net.ipv6.conf.wp0.disable_ipv6=1 net.ipv6.conf.up0.disable_ipv6=1 || return 1
    ip -n "$NS_SEC" link set wp0 up
    ip -n "$NS_SEC" link set up0 up
}

# ---------------------------------------------------------------- modes
# Each mode_X_up returns 0 when the path is set up, non-zero (with a message) if not.
mode_a_up() { :; }
mode_a_down() { :; }

mode_b_up() {
    ip -n "$NS_SEC" link add br0 type bridge stp_state 0 forward_delay 0 || return 1
    ip -n "$NS_SEC" link set wp0 master br0 || return 1
    ip -n "$NS_SEC" link set up0 master br0 || return 1
    ip -n "$NS_SEC" link set br0 up
}
mode_b_down() { ip -n "$NS_SEC" link del br0 2>/dev/null; return 0; }

TC_QDISC=""
mode_c_up() {
    local dev other
    if tc -n "$NS_SEC" qdisc add dev wp0 clsact 2>/dev/null; then
        TC_QDISC=clsact
        tc -n "$NS_SEC" qdisc add dev up0 clsact || return 1
    else
        log "clsact unavailable, falling back to the ingress qdisc"
        TC_QDISC=ingress
        tc -n "$NS_SEC" qdisc add dev wp0 ingress || return 1
        tc -n "$NS_SEC" qdisc add dev up0 ingress || return 1
    fi
    for dev in wp0 up0; do
        other=$([ $dev = wp0 ] && echo up0 || echo wp0)
        tc -n "$NS_SEC" filter add dev $dev ingress protocol all u32 match u32 0 0 \
            action mirred egress redirect dev $other || return 1
    done
}
mode_c_down() {
    [ -n "$TC_QDISC" ] || return 0
    tc -n "$NS_SEC" qdisc del dev wp0 $TC_QDISC 2>/dev/null
    tc -n "$NS_SEC" qdisc del dev up0 $TC_QDISC 2>/dev/null
    TC_QDISC=""
    return 0
}

declare -A GW_STARTS=()   # mode -> guardwire starts so far
GW_TAG=""                 # log name of the running instance: MODE.rN
# gw_up MODE [SPIN_US] [INSPECT] [SLOT_BYTES] [FAST] [BIN]: start guardwire for MODE (d:
# default config with 1000 firewall rules; f: with spin_us; g: INSPECT=off, validation and
# switching only; h: ring slots of SLOT_BYTES; FAST=off: every frame through guardwire;
# BIN: another binary, run with its own defaults).
gw_up() {
    local m=$1 spin=${2:-} inspect=${3:-on} slot=${4:-} fast=${5:-on} bin=${6:-$GW_BIN} i
    if [ ! -x "$bin" ]; then
        DISABLED[$m]="binary $bin not found (build it first)"
        return 1
    fi
    GW_STARTS[$m]=$(( ${GW_STARTS[$m]:-0} + 1 ))
    GW_TAG=$m.r${GW_STARTS[$m]}
    local cfg=$WORK/guardwire-$m.toml log=$LOGS/guardwire-$GW_TAG.log
    local rules=$WORK/rules-1k.toml inspect_cfg
    if [ "$inspect" = off ]; then
        inspect_cfg="enabled = false"
    else
        # A realistic rule set that the bench traffic never matches.
        if [ ! -e "$rules" ]; then
            { echo 'default = "allow"'
              for i in $(seq 0 999); do
                  printf '[[rule]]\nproto = "tcp"\ndst = "10.99.%d.%d"\ndst_ports = %d\naction = "deny"\n' \
                      $((i / 250)) $((i % 250)) $((1000 + i))
              done; } >"$rules"
        fi
        inspect_cfg="rules = \"$rules\""
    fi
    cat >"$cfg" <<EOF
[node]
name = "bench"
control_socket = "$GW_SOCK"
state_dir = "$WORK/state-$1"
[datapath]
workers = 1
${spin:+spin_us = $spin}
${slot:+slot_bytes = $slot}
${slot:+ring_frames = 120}
$([ "$fast" = off ] && echo "fast_path = false")
[inspect]
$inspect_cfg
[[workload]]
name = "pod"
kind = "pod"
workload_port = "wp0"
uplink_port = "up0"
EOF
    if ! "$bin" check --config "$cfg" >"$LOGS/guardwire-check-$m.log" 2>&1; then
        log "guardwire check rejected the config: $(head -c 300 "$LOGS/guardwire-check-$m.log")"
        DISABLED[$m]="guardwire check rejected the config"
        return 1
    fi
    mkdir -p "$GW_SOCK_DIR"
    rm -f "$GW_SOCK"
    ip netns exec "$NS_SEC" env NO_COLOR=1 "$bin" run --config "$cfg" >"$log" 2>&1 &
    GW_PID=$!
    for i in $(seq 100); do
        [ -e "$GW_SOCK" ] && break
        if ! kill -0 "$GW_PID" 2>/dev/null; then
            wait "$GW_PID"; log "guardwire exited early (status $?); log:"
            tail -n 20 "$log" >&3
            GW_PID=""
            return 1
        fi
        sleep 0.1
    done
    if [ ! -e "$GW_SOCK" ]; then
        log "guardwire: control socket $GW_SOCK did not appear within 10 s; log:"
        tail -n 20 "$log" >&3
        gw_stop
        return 1
    fi
}
gw_down() {
    [ -n "$GW_PID" ] || return 0
    local pid=$GW_PID rc
    # per-port counters and drops, for the logs only
    timeout 5 "$GW_BIN" stats --socket "$GW_SOCK" --json >"$LOGS/guardwire-$GW_TAG.stats.json" 2>&1
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        log "guardwire did not exit 5 s after SIGTERM; killing it"
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null; rc=$?
    [ $rc -ne 0 ] && log "guardwire exit status after SIGTERM: $rc"
    GW_PID=""
    rm -f "$GW_SOCK"
    return 0
}
mode_d_up() { gw_up d; }
mode_d_down() { gw_down; }
mode_f_up() { gw_up f "$GW_POLL_SPIN_US" on "" off; }
mode_f_down() { gw_down; }
mode_g_up() { gw_up g "" off "" off; }
mode_g_down() { gw_down; }
mode_h_up() { gw_up h "" on "$GW_BIG_SLOT" off; }
mode_h_down() { gw_down; }
mode_i_up() { gw_up i "" on "" off; }
mode_i_down() { gw_down; }
mode_j_up() {
    [ -n "$BASE_BIN" ] || { DISABLED[j]="no --base-bin given"; return 1; }
    gw_up j "" on "" on "$BASE_BIN"
}
mode_j_down() { gw_down; }

OVS_ROUND=0
mode_e_up() {
    local t
    for t in ovsdb-tool ovsdb-server ovs-vswitchd ovs-vsctl ovs-appctl; do
        command -v $t >/dev/null || { DISABLED[e]="$t not installed"; return 1; }
    done
    local schema=/usr/share/openvswitch/vswitch.ovsschema
    [ -f "$schema" ] || { DISABLED[e]="no $schema"; return 1; }
    OVS_ROUND=$((OVS_ROUND + 1))
    OVS_DIR=$WORK/ovs.r$OVS_ROUND
    mkdir -p "$OVS_DIR"
    local d=$OVS_DIR
    # Private run/log/db dirs: nothing touches a system OVS instance.
    local env=(env OVS_RUNDIR="$d" OVS_LOGDIR="$d" OVS_DBDIR="$d" OVS_SYSCONFDIR="$d")
    local vsctl=("${env[@]}" ovs-vsctl --db="unix:$d/db.sock" --timeout=20)
    if ! ovsdb-tool create "$d/conf.db" "$schema" 2>"$d/err"; then
        DISABLED[e]="ovsdb-tool create failed: $(head -c 300 "$d/err")"; return 1
    fi
    if ! ip netns exec "$NS_SEC" "${env[@]}" ovsdb-server "$d/conf.db" \
            --remote="punix:$d/db.sock" --unixctl="$d/ovsdb-server.ctl" \
            --pidfile="$d/ovsdb-server.pid" --log-file="$d/ovsdb-server.log" \
            --no-chdir --detach 2>"$d/err"; then
        DISABLED[e]="ovsdb-server failed: $(head -c 300 "$d/err")"; return 1
    fi
    # userspace TSO is read once, when ovs-vswitchd first sees the config: set it first.
    if ! "${vsctl[@]}" --no-wait init 2>"$d/err" ||
       ! "${vsctl[@]}" --no-wait set Open_vSwitch . other_config:userspace-tso-enable=true 2>"$d/err"; then
        DISABLED[e]="ovs-vsctl init failed: $(head -c 300 "$d/err")"; return 1
    fi
    if ! ip netns exec "$NS_SEC" "${env[@]}" ovs-vswitchd "unix:$d/db.sock" \
            --unixctl="$d/ovs-vswitchd.ctl" --pidfile="$d/ovs-vswitchd.pid" \
            --log-file="$d/ovs-vswitchd.log" --no-chdir --detach 2>"$d/err"; then
        DISABLED[e]="ovs-vswitchd failed: $(head -c 300 "$d/err"; tail -n 5 "$d/ovs-vswitchd.log" 2>/dev/null)"
        return 1
    fi
    if ! "${vsctl[@]}" add-br obr0 -- set bridge obr0 datapath_type=netdev 2>"$d/err" ||
       ! "${vsctl[@]}" add-port obr0 wp0 -- add-port obr0 up0 2>"$d/err"; then
        DISABLED[e]="ovs-vsctl add-br/add-port failed: $(head -c 300 "$d/err"; grep -E 'ERR|WARN' "$d/ovs-vswitchd.log" | tail -n 5)"
        return 1
    fi
    # A new bridge in standalone fail mode already has priority=0 actions=NORMAL; make it explicit.
    if command -v ovs-ofctl >/dev/null; then
        "${env[@]}" ovs-ofctl del-flows obr0 2>>"$d/err" &&
            "${env[@]}" ovs-ofctl add-flow obr0 "priority=0,actions=NORMAL" 2>>"$d/err" ||
            log "ovs-ofctl could not set the NORMAL flow (the bridge default is NORMAL anyway)"
    fi
    ip -n "$NS_SEC" link set obr0 up 2>/dev/null
    local tso
    tso=$("${vsctl[@]}" get Open_vSwitch . other_config:userspace-tso-enable 2>/dev/null)
    "${env[@]}" ovs-appctl -t "$d/ovs-vswitchd.ctl" dpif/show >"$d/dpif-show.txt" 2>&1
    grep -q -i 'Userspace TCP Segmentation Offloading support enabled' "$d/ovs-vswitchd.log" ||
        log "OVS: no 'Userspace TCP Segmentation Offloading support enabled' line in the log (other_config says $tso)"
}
mode_e_down() {
    if [ -n "$OVS_DIR" ]; then
        local d=$OVS_DIR
        OVS_RUNDIR=$d timeout 10 ovs-vsctl --db="unix:$d/db.sock" --timeout=5 --if-exists del-br obr0 >/dev/null 2>&1
        ovs_stop
    fi
    ip -n "$NS_SEC" link del obr0 2>/dev/null
    return 0
}

# ---------------------------------------------------------------- measurements
stat_cpu_ticks() {   # utime+stime of a whole process (all threads), in clock ticks
    [ -n "$1" ] && [ -r "/proc/$1/stat" ] || { echo ""; return; }
    sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}
CLK_TCK=$(getconf CLK_TCK)

cpu_cores() {   # cpu_cores TICKS0 TICKS1 T0 T1
    [ -n "$1" ] && [ -n "$2" ] || { echo null; return; }
    python3 "$HELPER" rate "$1" "$2" "$3" "$4" "$CLK_TCK"
}

wait_listen() {   # wait_listen NS PORT
    local i
    for i in $(seq 50); do
        nsx "$1" ss -Htln "sport = :$2" 2>/dev/null | grep -q . && return 0
        sleep 0.1
    done
    return 1
}

check_path() {   # check_path PODNS: ping until the path works (ARP, bridge learning)
    local i
    for i in $(seq 10); do
        nsx "$1" ping -n -c 1 -W 1 $PEER_IP >/dev/null 2>&1 && return 0
        sleep 0.3
    done
    return 1
}

# run_iperf PODNS PEERNS STREAMS PREFIX TAG: adds PREFIX_gbps= PREFIX_retr= to KV, and
# gw_cpu_tcp1 when guardwire runs and STREAMS=1.
run_iperf() {
    local pod=$1 peer=$2 streams=$3 prefix=$4 tag=$5
    local json=$LOGS/$tag.iperf-$prefix.json slog=$LOGS/$tag.iperf-$prefix-server.log spid
    ip netns exec "$peer" iperf3 -s -1 -B $PEER_IP -p $IPERF_PORT >"$slog" 2>&1 &
    spid=$!
    BG_PIDS+=("$spid")
    if ! wait_listen "$peer" $IPERF_PORT; then
        log "  iperf3 server did not start"; kill_pid "$spid"; return 1
    fi
    local c0 c1 t0 t1
    c0=$(stat_cpu_ticks "$GW_PID"); t0=$(now)
    nsx "$pod" timeout $((DURATION + 20)) iperf3 -c $PEER_IP -p $IPERF_PORT -t "$DURATION" \
        -P "$streams" -J --connect-timeout 3000 >"$json" 2>"$json.err"
    c1=$(stat_cpu_ticks "$GW_PID"); t1=$(now)
    # the one-off server exits by itself; give it a moment, then stop it
    for _ in $(seq 20); do kill -0 "$spid" 2>/dev/null || break; sleep 0.1; done
    kill_pid "$spid"
    local out
    if ! out=$(python3 "$HELPER" iperf "$json" "$prefix" 2>&1); then
        log "  iperf3 $prefix: $out"; return 1
    fi
    KV+=($out)
    if [ "$streams" = 1 ] && [ -n "$GW_PID" ]; then
        KV+=("gw_cpu_tcp1=$(cpu_cores "$c0" "$c1" "$t0" "$t1")")
    fi
    log "  $prefix: $out"
}

read_counter() {   # read_counter NS FILE... -> values on one line
    local ns=$1; shift
    nsx "$ns" sh -c 'cd /sys/class/net/eth0/statistics && cat "$@"' sh "$@" | tr '\n' ' '
}

run_small_frames() {   # run_small_frames PODNS PEERNS TAG
    local pod=$1 peer=$2 tag=$3
    if ! command -v trafgen >/dev/null; then log "  trafgen missing"; return 1; fi
    local cfg=$WORK/udp60.trafgen
    # 14 (Ethernet) + 20 (IPv4) + 8 (UDP) + 18 payload = 60 bytes on the wire w/o FCS.
    # Destination port 9 (discard): nothing listens, the peer counts UdpNoPorts and
    # sends rate-limited ICMP port unreachables.
    cat >"$cfg" <<EOF
{
  eth(da=$PEER_MAC, sa=$POD_MAC, type=0x0800),
  ipv4(saddr=$POD_IP, daddr=$PEER_IP, ttl=64, df),
  udp(sp=4000, dp=9),
  fill(0x00, 18)
}
EOF
    local tlog=$LOGS/$tag.trafgen.log tpid
    # Runs DURATION+1 s; counters are sampled from 0.5 s in for DURATION s, i.e. inside the
    # steady part of the send window (ring setup and stop are left out).
    ip netns exec "$pod" timeout -s INT $((DURATION + 1)) \
        trafgen --dev eth0 --conf "$cfg" --cpus "$TRAFGEN_CPUS" --no-sock-mem >"$tlog" 2>&1 &
    tpid=$!
    BG_PIDS+=("$tpid")
    sleep 0.5
    local tx0 rx0 t0 tx1 rx1 t1 c0 c1
    c0=$(stat_cpu_ticks "$GW_PID"); t0=$(now)
    tx0=$(read_counter "$pod" tx_packets tx_dropped); rx0=$(read_counter "$peer" rx_packets)
    sleep "$DURATION"
    c1=$(stat_cpu_ticks "$GW_PID"); t1=$(now)
    tx1=$(read_counter "$pod" tx_packets tx_dropped); rx1=$(read_counter "$peer" rx_packets)
    wait "$tpid" 2>/dev/null
    kill_pid "$tpid"
    if ! grep -q 'packets outgoing' "$tlog"; then
        log "  trafgen failed: $(grep -v -e '^$' "$tlog" | head -n 3 | tr '\n' ' ')"; return 1
    fi
    local sent0 sent1 pps_rx pps_tx
    sent0=$(awk '{print $1 + $2}' <<<"$tx0"); sent1=$(awk '{print $1 + $2}' <<<"$tx1")
    pps_rx=$(python3 "$HELPER" rate "$rx0" "$rx1" "$t0" "$t1" 1000)
    pps_tx=$(python3 "$HELPER" rate "$sent0" "$sent1" "$t0" "$t1" 1000)
    KV+=("pps_rx_k=$pps_rx" "pps_tx_k=$pps_tx")
    local cpu=""
    if [ -n "$GW_PID" ]; then cpu=$(cpu_cores "$c0" "$c1" "$t0" "$t1"); KV+=("gw_cpu_60b=$cpu"); fi
    log "  60B: rx ${pps_rx} kpps, tx ${pps_tx} kpps${cpu:+, guardwire $cpu cores}"
}

# run_many_flows PODNS PEERNS TAG: MANY_FLOWS short TCP flows at once (each sends
# MANY_FLOW_BYTES and reads a 2-byte answer), five times; adds flows_per_s= (the median).
run_many_flows() {
    local pod=$1 peer=$2 tag=$3 out=$LOGS/$3.flows.txt spid i res rates=()
    ip netns exec "$peer" python3 "$HELPER" flows-server $PEER_IP 5301 60 >"$out.server" 2>&1 &
    spid=$!
    BG_PIDS+=("$spid")
    if ! wait_listen "$peer" 5301; then log "  flows server did not start"; kill_pid "$spid"; return 1; fi
    for i in 1 2 3 4 5; do
        res=$(nsx "$pod" timeout 60 python3 "$HELPER" flows-client $PEER_IP 5301 \
            "$MANY_FLOWS" "$MANY_FLOW_BYTES" 2>>"$out") || { log "  flows client failed"; kill_pid "$spid"; return 1; }
        echo "$res" >>"$out"
        rates+=("$(sed -n 's/.*flows_per_s=\([0-9.]*\).*/\1/p' <<<"$res")")
        sleep 0.5
    done
    kill_pid "$spid"
    res=$(printf '%s\n' "${rates[@]}" | sort -n | sed -n 3p)
    KV+=("flows_per_s=$res")
    log "  $MANY_FLOWS short TCP flows: ${rates[*]} flows/s"
}

run_ping() {   # run_ping PODNS TAG
    local pod=$1 tag=$2 out=$LOGS/$2.ping.txt res
    nsx "$pod" timeout 60 ping -n -c 1000 -i 0.002 -W 1 $PEER_IP >"$out" 2>&1
    if ! res=$(python3 "$HELPER" ping "$out" 2>&1); then log "  ping: $res"; return 1; fi
    KV+=($res)
    log "  ping: $res"
}

sec_sanity() {   # the sec namespace must be back to plain wp0/up0 between modes
    local dev info
    for dev in wp0 up0; do
        info=$(ip -n "$NS_SEC" -o link show dev $dev 2>/dev/null)
        case $info in *"master "*) log "  warning: $dev still has a master: $info"; ip -n "$NS_SEC" link set $dev nomaster ;; esac
        case $info in *",UP"*|*"<UP"*) ;; *) log "  warning: $dev is down; bringing it up"; ip -n "$NS_SEC" link set $dev up ;; esac
        if tc -n "$NS_SEC" qdisc show dev $dev | grep -q -E 'clsact|ingress'; then
            log "  warning: $dev still has a clsact/ingress qdisc; removing it"
            tc -n "$NS_SEC" qdisc del dev $dev clsact 2>/dev/null || tc -n "$NS_SEC" qdisc del dev $dev ingress 2>/dev/null
        fi
    done
    for dev in br0 obr0 ovs-netdev; do
        ip -n "$NS_SEC" link show dev $dev >/dev/null 2>&1 &&
            { log "  warning: leftover $dev in $NS_SEC; deleting it"; ip -n "$NS_SEC" link del $dev 2>/dev/null; }
    done
    return 0
}

run_mode() {   # run_mode MODE ROUND
    local m=$1 r=$2 pod=$NS_POD peer=$NS_PEER tag="r$2-$1" err=()
    [ "$m" = a ] && { pod=$NS_DPOD; peer=$NS_DPEER; }
    KV=()
    if [ -n "${DISABLED[$m]:-}" ]; then
        python3 "$HELPER" record "$RAW" "$m" "$r" "error=n/a: ${DISABLED[$m]}"
        return
    fi
    log "round $r mode ($m)"
    [ "$m" != a ] && sec_sanity
    if ! "mode_${m}_up"; then
        local why=${DISABLED[$m]:-setup failed}
        log "  mode ($m) n/a: $why"
        "mode_${m}_down"
        python3 "$HELPER" record "$RAW" "$m" "$r" "error=n/a: $why"
        return
    fi
    if ! check_path "$pod"; then
        log "  no connectivity pod -> peer in mode ($m)"
        err+=("no connectivity")
    else
        sleep 0.5
        local c0 c1 t0 t1
        if [ -n "$GW_PID" ]; then
            # No traffic for 3 s: what guardwire costs at rest.
            sleep 1
            c0=$(stat_cpu_ticks "$GW_PID"); t0=$(now); sleep 3
            c1=$(stat_cpu_ticks "$GW_PID"); t1=$(now)
            KV+=("gw_cpu_idle=$(cpu_cores "$c0" "$c1" "$t0" "$t1")")
            c0=$(stat_cpu_ticks "$GW_PID"); t0=$(now)
        fi
        run_ping "$pod" "$tag" || err+=("ping failed")
        if [ -n "$GW_PID" ]; then
            c1=$(stat_cpu_ticks "$GW_PID"); t1=$(now)
            KV+=("gw_cpu_ping=$(cpu_cores "$c0" "$c1" "$t0" "$t1")")
        fi
        sleep 0.5
        run_small_frames "$pod" "$peer" "$tag" || err+=("trafgen failed")
        sleep 1
        run_iperf "$pod" "$peer" 1 tcp1 "$tag" || err+=("iperf x1 failed")
        sleep 0.5
        run_iperf "$pod" "$peer" 4 tcp4 "$tag" || err+=("iperf x4 failed")
        sleep 0.5
        run_many_flows "$pod" "$peer" "$tag" || err+=("many flows failed")
    fi
    if [ -n "$GW_PID" ] && ! kill -0 "$GW_PID" 2>/dev/null; then
        err+=("guardwire died during the tests")
    fi
    "mode_${m}_down"
    local e=""
    [ ${#err[@]} -gt 0 ] && e="error=$(IFS=';'; echo "${err[*]}")"
    python3 "$HELPER" record "$RAW" "$m" "$r" "${KV[@]}" ${e:+"$e"}
}

# ---------------------------------------------------------------- main
log "work dir $WORK; rounds $ROUNDS, duration ${DURATION}s, modes $MODES"
GW_INFO=""
case ",$MODES," in *,d,*|*,f,*|*,g,*|*,h,*|*,i,*)
    if [ -x "$GW_BIN" ]; then
        # Run a snapshot: a rebuild during the run must not change what is measured.
        GW_INFO="$GW_BIN built $(stat -c '%y' "$GW_BIN" | cut -d. -f1), sha256 $(sha256sum "$GW_BIN" | cut -c1-12)"
        rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null) && GW_INFO="$GW_INFO, repo HEAD $rev"
        cp "$GW_BIN" "$WORK/guardwire" && GW_BIN=$WORK/guardwire
        log "guardwire: $GW_INFO"
    else
        for m in d f g h i; do
            case ",$MODES," in *",$m,"*)
                DISABLED[$m]="binary $GW_BIN not found (build it first)"; log "mode ($m): ${DISABLED[$m]}" ;;
            esac
        done
    fi ;;
esac
# One name per pgrep: -x refuses a pattern longer than a process name (15 chars).
busy=$({ for p in iperf3 trafgen guardwire ovs-vswitchd cargo rustc; do pgrep -a -x "$p"; done
         pgrep -a qemu-system; } 2>/dev/null | head -n 5)
if [ -n "$busy" ]; then
    log "warning: other traffic tools are running; figures will be noisy:"
    printf '%s\n' "$busy" | sed 's/^/    /' >&3
fi
BASE_INFO=""
if [ -n "$BASE_BIN" ]; then
    if [ -x "$BASE_BIN" ]; then
        BASE_INFO="$BASE_BIN built $(stat -c '%y' "$BASE_BIN" | cut -d. -f1), sha256 $(sha256sum "$BASE_BIN" | cut -c1-12)"
        cp "$BASE_BIN" "$WORK/guardwire-base" && BASE_BIN=$WORK/guardwire-base
        log "mode (j): $BASE_INFO"
    else
        DISABLED[j]="--base-bin $BASE_BIN is not an executable"
    fi
fi
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
setup_topology || { log "topology setup failed"; exit 1; }

for r in $(seq "$ROUNDS"); do
    for m in "${MODE_LIST[@]}"; do
        run_mode "$m" "$r"
    done
done

mkdir -p "$BENCH/results"
OUT=$BENCH/results/$STAMP
[ -e "$OUT.md" ] && OUT=$OUT-$(date +%S)
note=""
for m in "${!DISABLED[@]}"; do note="$note($m) ${DISABLED[$m]}. "; done
python3 "$HELPER" report "$RAW" "$OUT.md" "$OUT.json" \
    "date=$(date '+%Y-%m-%d %H:%M %Z')" "kernel=$(uname -r)" "nproc=$(nproc)" \
    "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
    "rounds=$ROUNDS" "duration=$DURATION" "modes=$MODES" "trafgen_cpus=$TRAFGEN_CPUS" \
    "gw_poll_spin_us=$GW_POLL_SPIN_US" "base_bin=$BASE_INFO" \
    "guardwire=$GW_INFO" "note=$note" "logs=$LOGS" \
    "loadavg=start $LOAD_START, end $(cut -d' ' -f1-3 /proc/loadavg)${busy:+; other traffic tools were running at start}"
echo
echo "results: $OUT.md"
echo "raw:     $OUT.json"
