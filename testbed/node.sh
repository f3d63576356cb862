#!/usr/bin/env bash
# guardwire test bed: one "node" built from network namespaces.
#
#   node.sh up   PREFIX [--pods N] [--vm] [--forwarder guardwire|bridge|none] [--workers N] [--live]
#                       [--fast-path on|off]
#                       [--mgmt-ns NS] [--mgmt-net A.B.C] [--config-extra FILE] [--api-allow CIDR]...
#                       [--admin-token-file F] [--viewer-token-file F]
#
# --fast-path off: guardwire carries every frame itself ([datapath] fast_path = false), for
# tests of its own path.
# --live: leave the workloads where CNI and the hypervisor put them and start
# guardwire with no workload: `guardwire attach` steers them in afterwards.
# --mgmt-ns NS: the management end of the management link goes into the
# existing namespace NS (as gwm-PREFIX) instead of the node's host ns (as gwmgmt);
# --mgmt-net A.B.C: the link's addresses are A.B.C.1 (management side) and
# A.B.C.2 (sec ns, the API) instead of 10.98.0.1/10.98.0.2. testbed/cluster.sh
# uses both to hang several nodes off one management namespace.
# --config-extra FILE: appended to the generated guardwire.toml (e.g. [cluster]).
# --api-allow CIDR: another source allowed on the node API (api.allow_from).
# --admin-token-file/--viewer-token-file: the API's token files (api.*_token_file).
#   node.sh down PREFIX     # idempotent, never fails when already gone
#   node.sh env  PREFIX     # KEY=VALUE lines, shell-sourceable
#   node.sh gw-stop  PREFIX [--kill]   # stop the node's guardwire (SIGTERM, or SIGKILL)
#   node.sh gw-start PREFIX            # start it again with the same config
#
# See testbed/README.md for the topology. Everything a node creates lives in
# namespaces named PREFIX-* and in the state dir /run/guardwire-testbed/PREFIX/.
# Nothing is created in the namespace the script is called from.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$SCRIPT_DIR")
GW_BIN_DIR=${GW_BIN_DIR:-$REPO_ROOT/target/release}
CNI_BIN_DIR=${CNI_BIN_DIR:-/usr/lib/cni}
STATE_ROOT=${GW_TESTBED_STATE_ROOT:-/run/guardwire-testbed}

POD_SUBNET=10.244.0.0/24
POD_GW=10.244.0.1
PEER_IP=10.99.0.2
PEER_GW=10.99.0.1
# The management link (the patent's second virtual wire): sec ns mgmt0 <-> host
# ns gwmgmt, where the controller side (and a browser) sits. Routed, so a pod
# can reach the API address too, as it could on a real cluster network: the
# API must refuse it.
MGMT_IP=10.98.0.1
API_IP=10.98.0.2
API_PORT=7443
MGMT_NS=""  # empty: the node's host ns (set_prefix fills it in)
MGMT_IF=gwmgmt
VM_IP=10.244.0.200
VM_MAC=52:54:00:12:34:01
VM_TAP=tap-vm1
MAX_PODS=120

PREFIX=""
STATE=""

usage() {
    cat >&2 <<'EOF'
usage: node.sh up   PREFIX [--pods N] [--vm] [--forwarder guardwire|bridge|none] [--workers N] [--live]
                           [--fast-path on|off]
                           [--log-ring N] [--mgmt-ns NS] [--mgmt-net A.B.C] [--config-extra FILE]
                           [--api-allow CIDR]... [--admin-token-file F] [--viewer-token-file F]
       node.sh down PREFIX
       node.sh env  PREFIX
       node.sh gw-stop  PREFIX [--kill]
       node.sh gw-start PREFIX
EOF
    exit 2
}

log() { printf '[node %s] %s\n' "${PREFIX:-?}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

set_prefix() {
    [[ ${1:-} =~ ^[A-Za-z0-9]{1,6}$ ]] || die "PREFIX must be 1-6 letters/digits, got '${1:-}'"
    PREFIX=$1
    STATE=$STATE_ROOT/$PREFIX
    NS_HOST=$PREFIX-host
    NS_SEC=$PREFIX-sec
    NS_PEER=$PREFIX-peer
    MGMT_NS=$NS_HOST
}

ns_exists() { [[ -e /var/run/netns/$1 ]]; }

# Namespaces that belong to PREFIX (exact name patterns, so gw1 never matches gw10).
prefix_namespaces() {
    local name
    ip netns list 2>/dev/null | while read -r name _; do
        if [[ $name =~ ^${PREFIX}-(host|sec|peer|vm[0-9]+|pod[0-9]+)$ ]]; then
            printf '%s\n' "$name"
        fi
    done
}

# Test hook: GW_TESTBED_FAIL_AT=<step> makes `up` fail at that step.
checkpoint() {
    if [[ ${GW_TESTBED_FAIL_AT:-} == "$1" ]]; then
        die "failing on purpose at step '$1' (GW_TESTBED_FAIL_AT)"
    fi
}

# ---------------------------------------------------------------- processes

pid_alive() {
    local st
    [[ -r /proc/$1/stat ]] || return 1
    st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [[ -n $st && $st != Z && $st != X ]]
}

# stop_pid PID: SIGTERM, then SIGKILL after 2 s.
stop_pid() {
    local pid=$1 i
    pid_alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 20; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 20; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.1
    done
    log "warning: pid $pid survived SIGKILL"
}

# stop_pidfile FILE NAME: stop the process recorded in FILE if its command line
# still mentions NAME (guards against a recycled pid).
stop_pidfile() {
    local file=$1 name=$2 pid
    [[ -f $file ]] || return 0
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    if pid_alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$name"; then
        log "stopping $name (pid $pid)"
        stop_pid "$pid"
    fi
}

# ---------------------------------------------------------------- CNI

cni() { # cni ADD|DEL PODNAME
    ip netns exec "$NS_HOST" env -i PATH="$PATH" \
        CNI_COMMAND="$1" CNI_CONTAINERID="$PREFIX-$2" \
        CNI_NETNS="/var/run/netns/$PREFIX-$2" CNI_IFNAME=eth0 \
        CNI_PATH="$CNI_BIN_DIR" "$CNI_BIN_DIR/bridge" <"$STATE/cni-conf.json"
}

write_cni_conf() {
    cat >"$STATE/cni-conf.json" <<EOF
{"cniVersion":"1.0.0","name":"gwnet","type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":false,"ipam":{"type":"host-local","ranges":[[{"subnet":"$POD_SUBNET","gateway":"$POD_GW"}]],"routes":[{"dst":"0.0.0.0/0"}],"dataDir":"$STATE/ipam"}}
EOF
}

# cni_interfaces RESULT.json -> lines "NAME MAC SANDBOX" (SANDBOX "-" for host side).
# Plain text parsing (no jq): the result's interfaces[] holds flat objects.
cni_interfaces() {
    local flat obj name mac sandbox
    flat=$(tr -d ' \t\r\n' <"$1")
    flat=${flat#*\"interfaces\":\[}
    flat=${flat%%]*}
    while read -r obj; do
        [[ -n $obj ]] || continue
        name=$(sed -n 's/.*"name":"\([^"]*\)".*/\1/p' <<<"$obj")
        mac=$(sed -n 's/.*"mac":"\([^"]*\)".*/\1/p' <<<"$obj")
        sandbox=$(sed -n 's/.*"sandbox":"\([^"]*\)".*/\1/p' <<<"$obj")
        printf '%s %s %s\n' "$name" "${mac:--}" "${sandbox:--}"
    done <<<"${flat//\},\{/$'}\n{'}"
}

cni_pod_ip() {
    tr -d ' \t\r\n' <"$1" | grep -o '"address":"[^"]*"' | head -n1 | cut -d'"' -f4 | cut -d/ -f1
}

# ---------------------------------------------------------------- building blocks

create_host() {
    log "host ns $NS_HOST"
    ip netns add "$NS_HOST"
    ip -n "$NS_HOST" link set lo up
    ip netns exec "$NS_HOST" sysctl -qw net.ipv4.ip_forward=1
}

create_peer() {
    log "outside peer $NS_PEER ($PEER_IP) via $NS_HOST peer0 ($PEER_GW)"
    ip netns add "$NS_PEER"
    ip -n "$NS_PEER" link set lo up
    ip -n "$NS_HOST" link add peer0 type veth peer name eth0 netns "$NS_PEER"
    ip -n "$NS_HOST" addr add "$PEER_GW/24" dev peer0
    ip -n "$NS_HOST" link set peer0 up
    ip -n "$NS_PEER" addr add "$PEER_IP/24" dev eth0
    ip -n "$NS_PEER" link set eth0 up
    ip -n "$NS_PEER" route add default via "$PEER_GW"
}

# create_pod I: netns PREFIX-podI, CNI ADD; sets POD_IP_I, POD_MAC_I, POD_HOSTIF_I in the result files.
create_pod() {
    local i=$1 pod=pod$1 res name mac sandbox hostif="" podmac="" ip
    ip netns add "$PREFIX-$pod"
    ip -n "$PREFIX-$pod" link set lo up # the runtime's job (loopback plugin), not the bridge plugin's
    res=$STATE/cni/$pod.json
    if ! cni ADD "$pod" >"$res"; then
        cat "$res" >&2
        die "CNI ADD failed for $pod"
    fi
    while read -r name mac sandbox; do
        if [[ $sandbox != - ]]; then
            podmac=$mac
        elif [[ $name != cni0 ]]; then
            hostif=$name
        fi
    done < <(cni_interfaces "$res")
    ip=$(cni_pod_ip "$res")
    [[ -n $hostif && -n $podmac && -n $ip ]] || { cat "$res" >&2; die "cannot parse CNI result for $pod"; }
    printf '%s %s %s %s\n' "$pod" "$ip" "$podmac" "$hostif" >"$STATE/cni/$pod.info"
    log "$pod: $ip $podmac, host veth $hostif"
}

ensure_cni0() { # only needed with --pods 0: do what the bridge plugin would have done
    local mac
    if ! ip -n "$NS_HOST" link show cni0 >/dev/null 2>&1; then
        # A fixed MAC, like the plugin sets: a bridge without one takes its
        # first port's MAC, i.e. the tap's, which then reappears on wp-vm1.
        mac=$(od -An -N5 -tx1 /dev/urandom | tr -s ' \n' ':')
        ip -n "$NS_HOST" link add cni0 address "02${mac%:}" type bridge
        ip -n "$NS_HOST" addr add "$POD_GW/24" dev cni0
        ip -n "$NS_HOST" link set cni0 up
    fi
}

create_vm() {
    local ns=$PREFIX-vm1 bin=$GW_BIN_DIR/guardwire-vmstandin pid i
    log "VM stand-in: guest ns $ns ($VM_IP $VM_MAC), tap $VM_TAP"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$ns" link add eth0 address "$VM_MAC" type veth peer name relay0
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.relay0.disable_ipv6=1
    ip -n "$ns" link set relay0 up
    ip -n "$ns" addr add "$VM_IP/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via "$POD_GW"
    # Like QEMU: the stand-in holds the tap fd in the host ns and is the guest.
    ip netns exec "$NS_HOST" setsid "$bin" --tap "$VM_TAP" --guest-netns "$ns" --guest-if relay0 \
        </dev/null >"$STATE/vmstandin-vm1.log" 2>&1 3>&- &
    pid=$!
    echo "$pid" >"$STATE/vmstandin-vm1.pid"
    for ((i = 0; i < 50; i++)); do
        ip -n "$NS_HOST" link show "$VM_TAP" >/dev/null 2>&1 && break
        pid_alive "$pid" || break
        sleep 0.1
    done
    if ! ip -n "$NS_HOST" link show "$VM_TAP" >/dev/null 2>&1; then
        log "guardwire-vmstandin log:"
        cat "$STATE/vmstandin-vm1.log" >&2 || true
        die "tap $VM_TAP did not appear within 5 s"
    fi
    ensure_cni0
    ip -n "$NS_HOST" link set "$VM_TAP" master cni0
    ip -n "$NS_HOST" link set "$VM_TAP" up
}

sec_port_up() { # no IP, no IPv6, up
    ip netns exec "$NS_SEC" sysctl -qw "net.ipv6.conf.$1.disable_ipv6=1"
    ip -n "$NS_SEC" link set "$1" up
}

create_sec() {
    log "sec ns $NS_SEC"
    ip netns add "$NS_SEC"
    ip -n "$NS_SEC" link set lo up
    ip netns exec "$NS_SEC" sysctl -qw net.ipv4.ip_forward=0
    ip netns exec "$NS_SEC" sysctl -qw net.ipv6.conf.default.disable_ipv6=1
}

create_mgmt() {
    log "management link: $MGMT_NS $MGMT_IF ($MGMT_IP) <-> $NS_SEC mgmt0 ($API_IP)"
    # Recorded first: down removes our end from a foreign management ns.
    printf '%s %s\n' "$MGMT_NS" "$MGMT_IF" >"$STATE/mgmt-link"
    ip -n "$MGMT_NS" link add "$MGMT_IF" type veth peer name mgmt0 netns "$NS_SEC"
    ip -n "$MGMT_NS" addr add "$MGMT_IP/24" dev "$MGMT_IF"
    ip -n "$MGMT_NS" link set "$MGMT_IF" up
    ip -n "$NS_SEC" addr add "$API_IP/24" dev mgmt0
    ip -n "$NS_SEC" link set mgmt0 up
    # Routed towards the pods only when the management side is the node's own
    # host ns (a separate management ns has no way to the pods).
    if [[ $MGMT_NS == "$NS_HOST" ]]; then
        ip -n "$NS_SEC" route add "$POD_SUBNET" via "$MGMT_IP"
    fi
}

# steer W DEV: move host-side device DEV (a cni0 port) into sec ns as wp-W and
# put a new veth (up-W in sec ns) into cni0 under DEV's old name and MAC.
steer() {
    local w=$1 dev=$2 mac mtu
    mac=$(ip netns exec "$NS_HOST" cat "/sys/class/net/$dev/address")
    mtu=$(ip netns exec "$NS_HOST" cat "/sys/class/net/$dev/mtu")
    log "steer $w: $dev ($mac, mtu $mtu) -> $NS_SEC wp-$w, new uplink up-$w <-> $dev"
    ip -n "$NS_HOST" link set "$dev" nomaster
    ip -n "$NS_HOST" link set "$dev" netns "$NS_SEC"
    ip -n "$NS_SEC" link set "$dev" name "wp-$w"
    ip -n "$NS_SEC" link set "wp-$w" mtu "$mtu"
    ip -n "$NS_SEC" link add "up-$w" mtu "$mtu" type veth \
        peer name "$dev" address "$mac" mtu "$mtu" netns "$NS_HOST"
    sec_port_up "wp-$w"
    sec_port_up "up-$w"
    ip -n "$NS_HOST" link set "$dev" master cni0
    ip -n "$NS_HOST" link set "$dev" up
}

write_gw_config() {
    local workers=$1 log_ring=$2 w kind ip mac allow a
    allow="\"$MGMT_IP/32\""
    for a in "${API_ALLOW[@]}"; do allow+=", \"$a\""; done
    {
        printf '[node]\nname = "%s"\ncontrol_socket = "%s"\nstate_dir = "%s"\nhost_netns = "%s"\n\n' \
            "$PREFIX" "$STATE/guardwire.sock" "$STATE" "/var/run/netns/$NS_HOST"
        printf '[datapath]\nworkers = %s\n' "$workers"
        if [[ $FAST_PATH == off ]]; then printf 'fast_path = false\n'; fi
        printf '[inspect]\nlog_ring = %s\n' "$log_ring"
        printf '[api]\nlisten = "%s:%s"\nallow_from = [%s]\n' "$API_IP" "$API_PORT" "$allow"
        if [[ -n $ADMIN_TOKEN_FILE ]]; then printf 'admin_token_file = "%s"\n' "$ADMIN_TOKEN_FILE"; fi
        if [[ -n $VIEWER_TOKEN_FILE ]]; then printf 'viewer_token_file = "%s"\n' "$VIEWER_TOKEN_FILE"; fi
        for w in "${STATIC[@]}"; do
            kind=pod
            [[ $w == vm* ]] && kind=vm
            printf '\n[[workload]]\nname = "%s"\nkind = "%s"\nworkload_port = "wp-%s"\nuplink_port = "up-%s"\n' \
                "$w" "$kind" "$w" "$w"
            # The workload's own addresses, for anti-spoofing.
            if [[ $kind == pod ]]; then
                read -r _ ip mac _ <"$STATE/cni/$w.info"
            else
                ip=$VM_IP mac=$VM_MAC
            fi
            printf 'macs = ["%s"]\nips = ["%s"]\n' "$mac" "${ip%/*}"
        done
        if [[ -n $CONFIG_EXTRA ]]; then
            printf '\n# --- from %s ---\n' "$CONFIG_EXTRA"
            cat "$CONFIG_EXTRA"
        fi
    } >"$STATE/guardwire.toml"
}

start_guardwire() { # [append]: keep the log of an earlier run
    local pid i sock=$STATE/guardwire.sock
    log "starting guardwire in $NS_SEC ($STATE/guardwire.toml)"
    [[ ${1:-} == append ]] || : >"$STATE/guardwire.log"
    ip netns exec "$NS_SEC" setsid env NO_COLOR=1 "$GW_BIN_DIR/guardwire" run --config "$STATE/guardwire.toml" \
        </dev/null >>"$STATE/guardwire.log" 2>&1 3>&- &
    pid=$!
    echo "$pid" >"$STATE/guardwire.pid"
    for ((i = 0; i < 100; i++)); do
        [[ -S $sock ]] && break
        pid_alive "$pid" || break
        sleep 0.1
    done
    if [[ ! -S $sock ]]; then
        log "guardwire log:"
        cat "$STATE/guardwire.log" >&2 || true
        if pid_alive "$pid"; then die "no control socket $sock after 10 s"; fi
        die "guardwire exited before creating $sock"
    fi
}

start_bridges() { # baseline: one bridge per workload (see README: a single bridge would loop)
    local w
    for w in "${STATIC[@]}"; do
        log "bridge forwarder: bs-$w = wp-$w + up-$w"
        ip -n "$NS_SEC" link add "bs-$w" type bridge
        ip netns exec "$NS_SEC" sysctl -qw "net.ipv6.conf.bs-$w.disable_ipv6=1"
        ip -n "$NS_SEC" link set "wp-$w" master "bs-$w"
        ip -n "$NS_SEC" link set "up-$w" master "bs-$w"
        ip -n "$NS_SEC" link set "bs-$w" up
    done
}

# kv KEY VALUE...: KEY=VALUE lines, quoted only when VALUE needs it, so that
# the output is both shell-sourceable and trivially parseable.
kv() {
    while [[ $# -ge 2 ]]; do
        if [[ $2 =~ ^[A-Za-z0-9_./:,@%+=-]*$ ]]; then
            printf '%s=%s\n' "$1" "$2"
        else
            printf '%s=%q\n' "$1" "$2"
        fi
        shift 2
    done
}

write_env() {
    local forwarder=$1 npods=$2 vm=$3 pod ip mac hostif i
    {
        kv PREFIX "$PREFIX" STATE "$STATE" FORWARDER "$forwarder" \
            NS_HOST "$NS_HOST" NS_SEC "$NS_SEC" NS_PEER "$NS_PEER" \
            PEER_IP "$PEER_IP" PEER_GW "$PEER_GW" POD_GW "$POD_GW" NPODS "$npods" \
            WORKLOADS "$(IFS=,; echo "${WORKLOADS[*]}")"
        for ((i = 1; i <= npods; i++)); do
            read -r pod ip mac hostif <"$STATE/cni/pod$i.info"
            kv "POD_NS_$i" "$PREFIX-$pod" "POD_IP_$i" "$ip" \
                "POD_MAC_$i" "$mac" "POD_HOSTIF_$i" "$hostif"
        done
        if [[ $vm == 1 ]]; then
            kv NS_VM "$PREFIX-vm1" VM_IP "$VM_IP" VM_MAC "$VM_MAC" VM_TAP "$VM_TAP" \
                VM_PID "$(<"$STATE/vmstandin-vm1.pid")"
        else
            kv NS_VM "" VM_IP "" VM_MAC "" VM_TAP "" VM_PID ""
        fi
        if [[ $forwarder == guardwire ]]; then
            kv GW_PID "$(<"$STATE/guardwire.pid")" GW_SOCK "$STATE/guardwire.sock" \
                GW_CONFIG "$STATE/guardwire.toml" GW_LOG "$STATE/guardwire.log" \
                GW_API "$API_IP:$API_PORT" GW_API_URL "http://$API_IP:$API_PORT/" \
                GW_ADMIN_TOKEN_FILE "${ADMIN_TOKEN_FILE:-$STATE/api/admin.token}" \
                GW_VIEWER_TOKEN_FILE "${VIEWER_TOKEN_FILE:-$STATE/api/viewer.token}"
        else
            kv GW_PID "" GW_SOCK "" GW_CONFIG "" GW_LOG "" GW_API "" GW_API_URL "" \
                GW_ADMIN_TOKEN_FILE "" GW_VIEWER_TOKEN_FILE ""
        fi
        kv MGMT_NS "$MGMT_NS" MGMT_IP "$MGMT_IP" MGMT_IF "$MGMT_IF" API_IP "$API_IP"
        kv GW_BIN_DIR "$GW_BIN_DIR"
    } >"$STATE/node.env"
}

# ---------------------------------------------------------------- commands

on_up_exit() {
    local rc=$?
    if [[ $rc -ne 0 ]]; then
        log "up failed (exit $rc): tearing down what was built"
        (cmd_down "$PREFIX") || true
    fi
}

cmd_up() {
    local npods=2 vm=0 forwarder=guardwire workers=2 live=0 log_ring=10000 i w hostif mgmt_net=""
    set_prefix "${1:-}"
    shift
    API_ALLOW=() CONFIG_EXTRA="" ADMIN_TOKEN_FILE="" VIEWER_TOKEN_FILE="" FAST_PATH=on
    while [[ $# -gt 0 ]]; do
        case $1 in
        --mgmt-ns) MGMT_NS=${2:-}; shift 2 || usage ;;
        --mgmt-net) mgmt_net=${2:-}; shift 2 || usage ;;
        --config-extra) CONFIG_EXTRA=${2:-}; shift 2 || usage ;;
        --api-allow) API_ALLOW+=("${2:-}"); shift 2 || usage ;;
        --admin-token-file) ADMIN_TOKEN_FILE=${2:-}; shift 2 || usage ;;
        --viewer-token-file) VIEWER_TOKEN_FILE=${2:-}; shift 2 || usage ;;
        --pods) npods=${2:-}; shift 2 || usage ;;
        --vm) vm=1; shift ;;
        --forwarder) forwarder=${2:-}; shift 2 || usage ;;
        --workers) workers=${2:-}; shift 2 || usage ;;
        --live) live=1; shift ;;
        --log-ring) log_ring=${2:-}; shift 2 || usage ;;
        --fast-path) FAST_PATH=${2:-}; shift 2 || usage ;;
        *) usage ;;
        esac
    done
    if ! [[ $npods =~ ^[0-9]+$ ]] || ((npods > MAX_PODS)); then die "--pods must be 0..$MAX_PODS"; fi
    [[ $workers =~ ^[1-9][0-9]*$ ]] || die "--workers must be a positive integer"
    case $forwarder in guardwire | bridge | none) ;; *) die "--forwarder must be guardwire, bridge or none" ;; esac
    case $FAST_PATH in on | off) ;; *) die "--fast-path must be on or off" ;; esac
    ((npods + vm > 0)) || die "nothing to build: --pods 0 and no --vm"
    if [[ -n $mgmt_net ]]; then
        local o1 o2 o3
        IFS=. read -r o1 o2 o3 <<<"$mgmt_net"
        [[ $mgmt_net =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] && ((10#$o1 <= 255 && 10#$o2 <= 255 && 10#$o3 <= 255)) ||
            die "--mgmt-net must be A.B.C (the link gets A.B.C.1 and A.B.C.2), got '$mgmt_net'"
        MGMT_IP=$mgmt_net.1
        API_IP=$mgmt_net.2
    fi
    if [[ $MGMT_NS != "$NS_HOST" ]]; then
        [[ -n $MGMT_NS ]] || die "--mgmt-ns needs a namespace name"
        ns_exists "$MGMT_NS" || die "--mgmt-ns $MGMT_NS: no such network namespace"
        MGMT_IF=gwm-$PREFIX
        if ip -n "$MGMT_NS" link show "$MGMT_IF" >/dev/null 2>&1; then
            die "$MGMT_IF already exists in $MGMT_NS"
        fi
    fi
    if [[ -n $CONFIG_EXTRA && ! -r $CONFIG_EXTRA ]]; then die "--config-extra $CONFIG_EXTRA: cannot read it"; fi
    for i in "${API_ALLOW[@]}"; do
        [[ $i =~ ^[0-9a-fA-F.:]+(/[0-9]{1,3})?$ ]] || die "--api-allow wants an address or prefix, got '$i'"
    done

    # Preconditions, checked before anything is created.
    [[ $(id -u) -eq 0 ]] || die "must run as root"
    command -v ip >/dev/null || die "ip (iproute2) not found"
    [[ -x $CNI_BIN_DIR/bridge && -x $CNI_BIN_DIR/host-local ]] ||
        die "CNI plugins not found in $CNI_BIN_DIR (apt-get install containernetworking-plugins)"
    if [[ $forwarder == guardwire && ! -x $GW_BIN_DIR/guardwire ]]; then
        die "$GW_BIN_DIR/guardwire not found: build it (cargo build --release) or use --forwarder bridge"
    fi
    if [[ $vm == 1 && ! -x $GW_BIN_DIR/guardwire-vmstandin ]]; then
        die "--vm needs $GW_BIN_DIR/guardwire-vmstandin, which does not exist: build it (cargo build --release) or drop --vm"
    fi
    if [[ -e $STATE ]] || [[ -n $(prefix_namespaces) ]]; then
        die "node $PREFIX already exists (state $STATE or namespaces $PREFIX-*): run 'node.sh down $PREFIX' first"
    fi

    # From here on, any failure or signal tears down everything.
    trap on_up_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    exec 3>&1 1>&2 # stdout carries only the env lines at the end

    mkdir -p "$STATE/cni" "$STATE/ipam"
    write_cni_conf
    create_host
    create_peer
    checkpoint peer

    WORKLOADS=()
    for ((i = 1; i <= npods; i++)); do
        create_pod "$i"
        WORKLOADS+=("pod$i")
    done
    checkpoint pods
    if [[ $vm == 1 ]]; then
        create_vm
        WORKLOADS+=(vm1)
    fi
    checkpoint vm

    create_sec
    create_mgmt
    STATIC=()
    if [[ $live == 0 ]]; then
        STATIC=("${WORKLOADS[@]}")
    fi
    for w in "${STATIC[@]}"; do
        if [[ $w == vm1 ]]; then
            hostif=$VM_TAP
        else
            read -r _ _ _ hostif <"$STATE/cni/$w.info"
        fi
        steer "$w" "$hostif"
    done
    checkpoint steer

    case $forwarder in
    guardwire)
        write_gw_config "$workers" "$log_ring"
        start_guardwire
        ;;
    bridge) start_bridges ;;
    none) log "no forwarder: workload and uplink ports are not joined" ;;
    esac
    checkpoint forwarder

    write_env "$forwarder" "$npods" "$vm"
    trap - EXIT INT TERM
    log "node $PREFIX is up"
    cat "$STATE/node.env" >&3
}

cmd_down() {
    local ns f pid pids i
    set_prefix "${1:-}"
    set +e
    # 1. our processes: the forwarder, the VM stand-in(s)
    stop_pidfile "$STATE/guardwire.pid" guardwire
    for f in "$STATE"/vmstandin-*.pid; do
        [[ -e $f ]] && stop_pidfile "$f" guardwire-vmstandin
    done
    # 2. anything else still running inside our namespaces (iperf3 -D, test helpers...)
    pids=()
    for ns in $(prefix_namespaces); do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            [[ $pid -ne $$ ]] && pids+=("$pid")
        done
    done
    if [[ ${#pids[@]} -gt 0 ]]; then
        log "stopping processes left in $PREFIX-* namespaces: ${pids[*]}"
        kill -TERM "${pids[@]}" 2>/dev/null
        for ((i = 0; i < 20; i++)); do
            local alive=0
            for pid in "${pids[@]}"; do pid_alive "$pid" && alive=1; done
            [[ $alive == 0 ]] && break
            sleep 0.1
        done
        for pid in "${pids[@]}"; do pid_alive "$pid" && kill -KILL "$pid" 2>/dev/null; done
    fi
    # 3. CNI DEL for each pod, run in the host ns (never in the caller's ns)
    if ns_exists "$NS_HOST" && [[ -f $STATE/cni-conf.json ]]; then
        local pod out
        for f in "$STATE"/cni/pod*.json; do
            pod=$(basename "$f" .json)
            [[ $pod =~ ^pod[0-9]+$ ]] || continue
            out=$(cni DEL "$pod" 2>&1) || log "warning: CNI DEL $pod failed: $out"
        done
    fi
    # 4. namespaces (deleting them deletes every interface inside)
    for ns in $(prefix_namespaces | sort -r); do
        ip netns del "$ns" 2>/dev/null || log "warning: could not delete netns $ns"
    done
    # Our end of the management link in a namespace that is not ours (--mgmt-ns):
    # normally gone with sec ns, its peer; removed here if a failed up left it.
    if [[ -f $STATE/mgmt-link ]]; then
        local mns mif
        read -r mns mif <"$STATE/mgmt-link"
        if [[ $mns != "$NS_HOST" && $mif == gwm-"$PREFIX" ]] && ns_exists "$mns"; then
            ip -n "$mns" link del "$mif" 2>/dev/null
        fi
    fi
    # 5. state
    rm -rf "$STATE"
    # 6. a test-bed cluster of this prefix (testbed/cluster.sh: namespace
    # PREFIX-cl), so that cleaning up by namespace name catches it too.
    if [[ -f $STATE_ROOT/$PREFIX-cl/cluster.conf ]] || ns_exists "$PREFIX-cl"; then
        if [[ ${GW_TESTBED_IN_CLUSTER_DOWN:-} != "$PREFIX" && $PREFIX =~ ^[A-Za-z0-9]{1,4}$ ]]; then
            log "cluster $PREFIX (namespace $PREFIX-cl) exists: testbed/cluster.sh down $PREFIX"
            bash "$SCRIPT_DIR/cluster.sh" down "$PREFIX" >&2
        fi
    fi
    return 0
}

# gw-stop PREFIX [--kill]: stop the node's guardwire (its watchdog stays and
# does what on_failure says); gw-start PREFIX: start it again (same config,
# the log is appended to, GW_PID in the env updated).
cmd_gw_stop() {
    local sig=TERM pid i
    set_prefix "${1:-}"
    case ${2:-} in --kill) sig=KILL ;; "") ;; *) usage ;; esac
    [[ -f $STATE/guardwire.pid ]] || die "node $PREFIX has no guardwire (no $STATE/guardwire.pid)"
    pid=$(<"$STATE/guardwire.pid")
    if ! pid_alive "$pid" || ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- guardwire; then
        log "guardwire is not running"
        return 0
    fi
    log "stopping guardwire (pid $pid, SIG$sig)"
    if [[ $sig == KILL ]]; then
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do pid_alive "$pid" || break; sleep 0.1; done
        pid_alive "$pid" && die "pid $pid survived SIGKILL for 5 s"
    else
        stop_pid "$pid"
    fi
    return 0
}

cmd_gw_start() {
    local pid
    set_prefix "${1:-}"
    [[ -f $STATE/guardwire.toml && -f $STATE/node.env ]] || die "node $PREFIX has no guardwire config"
    if [[ -f $STATE/guardwire.pid ]]; then
        pid=$(<"$STATE/guardwire.pid")
        if pid_alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- guardwire; then
            die "guardwire is already running (pid $pid)"
        fi
    fi
    rm -f "$STATE/guardwire.sock" # a killed daemon leaves it behind
    start_guardwire append
    sed -i "s/^GW_PID=.*/GW_PID=$(<"$STATE/guardwire.pid")/" "$STATE/node.env"
    log "guardwire is up again (pid $(<"$STATE/guardwire.pid"))"
}

cmd_env() {
    set_prefix "${1:-}"
    [[ -f $STATE/node.env ]] || die "no node $PREFIX (no $STATE/node.env)"
    cat "$STATE/node.env"
}

main() {
    [[ $# -ge 2 ]] || usage
    local cmd=$1
    shift
    case $cmd in
    up) cmd_up "$@" ;;
    down) [[ $# -eq 1 ]] || usage; cmd_down "$1" ;;
    env) [[ $# -eq 1 ]] || usage; cmd_env "$1" ;;
    gw-stop) [[ $# -ge 1 && $# -le 2 ]] || usage; cmd_gw_stop "$@" ;;
    gw-start) [[ $# -eq 1 ]] || usage; cmd_gw_start "$1" ;;
    *) usage ;;
    esac
}

main "$@"
