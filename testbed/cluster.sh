#!/usr/bin/env bash
# guardwire test bed: a cluster of test-bed nodes sharing one etcd and a
# controller (docs/cluster.md), all built from network namespaces.
#
#   cluster.sh up   PREFIX [--nodes N] [--pods N] [--vm] [--live] [--workers N]
#                          [--plain] [--lease-ttl S] [--status-secs S] [--no-controller] [--no-agent]
#   cluster.sh down PREFIX              # idempotent, never fails when already gone
#   cluster.sh env  PREFIX              # KEY=VALUE lines, shell-sourceable
#   cluster.sh etcd-stop  PREFIX K      # stop etcd member K (1..3), SIGTERM
#   cluster.sh etcd-start PREFIX K      # start it again (same data dir)
#   cluster.sh etcd-stop-all  PREFIX
#   cluster.sh etcd-start-all PREFIX    # all three, waits for a healthy cluster
#   cluster.sh etcd-health PREFIX       # `etcdctl endpoint health` of every member
#   cluster.sh etcdctl PREFIX ARGS...   # etcdctl in the management ns, endpoints and certs set
#   cluster.sh controller-start PREFIX [K]   # controller replica K (default 1), port 8440+K
#   cluster.sh controller-stop  PREFIX [K] [--kill]
#   cluster.sh node-stop  PREFIX I [--kill]  # node I's guardwire (node.sh gw-stop)
#   cluster.sh node-start PREFIX I           # node.sh gw-start
#
# Management namespace PREFIX-cl: etcd members 1..3 (client ports 2379, 2381,
# 2383, peer ports 2380, 2382, 2384, TLS with client certificates unless
# --plain), controller replicas, and the management end of every node's
# management link. Node I is `node.sh up PREFIXI ... --mgmt-ns PREFIX-cl
# --mgmt-net 10.98.I`: its sec ns reaches etcd and the controller at 10.98.I.1,
# its API is 10.98.I.2:7443. State in /run/guardwire-testbed/PREFIX-cl/.
# See testbed/README.md.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$SCRIPT_DIR")
NODE_SH=$SCRIPT_DIR/node.sh
GW_BIN_DIR=${GW_BIN_DIR:-$REPO_ROOT/target/release}
export GW_BIN_DIR # node.sh takes the same binaries
STATE_ROOT=${GW_TESTBED_STATE_ROOT:-/run/guardwire-testbed}
ETCD_BIN=${ETCD_BIN:-/usr/bin/etcd}
ETCDCTL_BIN=${ETCDCTL_BIN:-/usr/bin/etcdctl}

# The management ns's own address (on its lo): etcd's and the controller's
# address inside the management ns. Node I's link is 10.98.I.0/24.
CL_IP=10.98.0.1
MEMBERS=3
MAX_NODES=20
CTL_PORT_BASE=8440
NODE_API_PORT=7443
# Bounds of every wait (seconds).
ETCD_WAIT=30
CTL_WAIT=15

PREFIX=""

usage() {
    sed -n '5,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

log() { printf '[cluster %s] %s\n' "${PREFIX:-?}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

set_prefix() {
    [[ ${1:-} =~ ^[A-Za-z0-9]{1,4}$ ]] || die "PREFIX must be 1-4 letters/digits, got '${1:-}'"
    PREFIX=$1
    CL_NS=$PREFIX-cl
    CL=$STATE_ROOT/$PREFIX-cl
    PKI=$CL/pki
    CONF=$CL/cluster.conf
}

ns_exists() { [[ -e /var/run/netns/$1 ]]; }

# The settings `up` was given, kept for the other commands.
load_conf() {
    [[ -f $CONF ]] || die "no cluster $PREFIX (no $CONF)"
    # shellcheck disable=SC1090
    source "$CONF"
}

# ---------------------------------------------------------------- processes

pid_alive() {
    local st
    [[ -r /proc/$1/stat ]] || return 1
    st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [[ -n $st && $st != Z && $st != X ]]
}

# pidfile_alive FILE NAME: the pid in FILE runs and its command line mentions NAME.
pidfile_alive() {
    local pid
    [[ -f $1 ]] || return 1
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ ]] && pid_alive "$pid" &&
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$2"
}

# stop_pidfile FILE NAME [KILL]: SIGTERM (or SIGKILL), SIGKILL after 3 s; bounded.
stop_pidfile() {
    local file=$1 name=$2 sig=${3:-TERM} pid i
    pidfile_alive "$file" "$name" || return 0
    pid=$(<"$file")
    log "stopping $name (pid $pid, SIG$sig)"
    kill "-$sig" "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 30; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.1
    done
    log "warning: pid $pid survived SIGKILL"
}

# ---------------------------------------------------------------- certificates

# leaf NAME CN EKU SAN: an EC P-256 key and a certificate signed by the test CA.
leaf() {
    local name=$1 cn=$2 eku=$3 san=$4
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/$name-key.pem" 2>/dev/null
    openssl req -new -key "$PKI/$name-key.pem" -subj "/CN=$cn" -out "$PKI/$name.csr" 2>/dev/null
    {
        echo "basicConstraints = critical, CA:FALSE"
        echo "keyUsage = critical, digitalSignature, keyEncipherment"
        echo "extendedKeyUsage = $eku"
        echo "subjectKeyIdentifier = hash"
        echo "authorityKeyIdentifier = keyid"
        if [[ -n $san ]]; then echo "subjectAltName = $san"; fi
    } >"$PKI/$name.ext"
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca-key.pem" \
        -set_serial "0x$(openssl rand -hex 12)" -days 30 -sha256 -extfile "$PKI/$name.ext" \
        -out "$PKI/$name.pem" 2>/dev/null
    rm -f "$PKI/$name.csr" "$PKI/$name.ext"
    chmod 600 "$PKI/$name-key.pem"
}

make_pki() {
    local i san="IP:$CL_IP, IP:127.0.0.1"
    log "certificates in $PKI (test CA; etcd server/peer, controller, etcdctl, one client per node)"
    mkdir -p -m 700 "$PKI"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/ca-key.pem" 2>/dev/null
    chmod 600 "$PKI/ca-key.pem"
    openssl req -x509 -new -key "$PKI/ca-key.pem" -sha256 -days 30 \
        -subj "/CN=guardwire test bed CA $PREFIX" \
        -addext "basicConstraints = critical, CA:TRUE" \
        -addext "keyUsage = critical, keyCertSign, cRLSign" \
        -addext "subjectKeyIdentifier = hash" \
        -out "$PKI/ca.pem" 2>/dev/null
    for ((i = 1; i <= NODES; i++)); do san+=", IP:10.98.$i.1"; done
    # etcd's certificate serves clients and peers and is its client
    # certificate towards the other members: both usages.
    leaf etcd "etcd $PREFIX" "serverAuth, clientAuth" "$san"
    leaf controller guardwire-controller clientAuth ""
    leaf etcdctl etcdctl clientAuth ""
    for ((i = 1; i <= NODES; i++)); do
        leaf "node$i" "$PREFIX$i" clientAuth ""
    done
}

# ---------------------------------------------------------------- etcd

scheme() { if [[ $TLS == 1 ]]; then echo https; else echo http; fi; }
client_port() { echo $((2377 + 2 * $1)); } # 2379, 2381, 2383
peer_port() { echo $((2378 + 2 * $1)); }   # 2380, 2382, 2384

# endpoints HOST: the members' client URLs, comma-separated.
endpoints() {
    local k out=""
    for ((k = 1; k <= MEMBERS; k++)); do out+="${out:+,}$(scheme)://$1:$(client_port "$k")"; done
    echo "$out"
}

initial_cluster() {
    local k out=""
    for ((k = 1; k <= MEMBERS; k++)); do out+="${out:+,}m$k=$(scheme)://$CL_IP:$(peer_port "$k")"; done
    echo "$out"
}

check_member() { [[ ${1:-} =~ ^[1-3]$ ]] || die "etcd member must be 1..$MEMBERS, got '${1:-}'"; }

etcd_start_one() { # K: starts member K in the background (no wait)
    local k=$1 tls=()
    if pidfile_alive "$CL/etcd/m$k.pid" "$ETCD_BIN"; then
        log "etcd member $k is already running (pid $(<"$CL/etcd/m$k.pid"))"
        return 0
    fi
    if [[ $TLS == 1 ]]; then
        tls=(--client-cert-auth --trusted-ca-file "$PKI/ca.pem"
            --cert-file "$PKI/etcd.pem" --key-file "$PKI/etcd-key.pem"
            --peer-client-cert-auth --peer-trusted-ca-file "$PKI/ca.pem"
            --peer-cert-file "$PKI/etcd.pem" --peer-key-file "$PKI/etcd-key.pem")
    fi
    mkdir -p -m 700 "$CL/etcd/m$k.data"
    log "etcd member $k: clients $(scheme)://0.0.0.0:$(client_port "$k"), peers $CL_IP:$(peer_port "$k")"
    # An existing data dir makes etcd ignore the --initial-* flags: the same
    # command line restarts a stopped member.
    ip netns exec "$CL_NS" setsid "$ETCD_BIN" --name "m$k" --data-dir "$CL/etcd/m$k.data" \
        --listen-client-urls "$(scheme)://0.0.0.0:$(client_port "$k")" \
        --advertise-client-urls "$(scheme)://$CL_IP:$(client_port "$k")" \
        --listen-peer-urls "$(scheme)://$CL_IP:$(peer_port "$k")" \
        --initial-advertise-peer-urls "$(scheme)://$CL_IP:$(peer_port "$k")" \
        --initial-cluster "$(initial_cluster)" --initial-cluster-token "gw-$PREFIX" \
        --initial-cluster-state new --logger zap --log-outputs stderr --log-level info \
        "${tls[@]}" </dev/null >>"$CL/etcd/m$k.log" 2>&1 3>&- &
    echo $! >"$CL/etcd/m$k.pid"
    wait_exec "$CL/etcd/m$k.pid" "$ETCD_BIN"
}

# wait_exec FILE NAME: until the process just started has exec'd NAME (its
# command line says so; before, it is a copy of this shell), at most 2 s.
wait_exec() {
    local i pid
    pid=$(<"$1")
    for ((i = 0; i < 20; i++)); do
        pidfile_alive "$1" "$2" && return 0
        pid_alive "$pid" || return 0 # died: the callers' waits report it
        sleep 0.1
    done
}

# etcdctl ARGS...: etcdctl inside the management ns, at every member.
etcdctl_cl() {
    local tls=()
    if [[ $TLS == 1 ]]; then
        tls=(--cacert "$PKI/ca.pem" --cert "$PKI/etcdctl.pem" --key "$PKI/etcdctl-key.pem")
    fi
    ip netns exec "$CL_NS" env ETCDCTL_API=3 "$ETCDCTL_BIN" --endpoints "$(endpoints "$CL_IP")" \
        --dial-timeout 2s --command-timeout 5s "${tls[@]}" "$@"
}

member_healthy() { # K
    local tls=()
    if [[ $TLS == 1 ]]; then
        tls=(--cacert "$PKI/ca.pem" --cert "$PKI/etcdctl.pem" --key "$PKI/etcdctl-key.pem")
    fi
    ip netns exec "$CL_NS" env ETCDCTL_API=3 "$ETCDCTL_BIN" \
        --endpoints "$(scheme)://$CL_IP:$(client_port "$1")" --dial-timeout 1s --command-timeout 2s \
        "${tls[@]}" endpoint health >/dev/null 2>&1
}

# wait_members K...: every given member healthy (it has a leader and a quorum
# answers), within ETCD_WAIT seconds.
wait_members() {
    local k t0=$SECONDS pending
    while :; do
        pending=()
        for k in "$@"; do
            if ! pid_alive "$(<"$CL/etcd/m$k.pid")"; then
                log "etcd member $k exited; its log:"
                tail -n 30 "$CL/etcd/m$k.log" >&2 || true
                die "etcd member $k is not running"
            fi
            member_healthy "$k" || pending+=("$k")
        done
        [[ ${#pending[@]} -eq 0 ]] && return 0
        if ((SECONDS - t0 >= ETCD_WAIT)); then
            for k in "${pending[@]}"; do
                log "etcd member $k log (last lines):"
                tail -n 20 "$CL/etcd/m$k.log" >&2 || true
            done
            die "etcd member(s) ${pending[*]} not healthy after ${ETCD_WAIT} s"
        fi
        sleep 0.3
    done
}

# ---------------------------------------------------------------- controller

check_replica() { [[ ${1:-} =~ ^[1-9]$ ]] || die "controller replica must be 1..9, got '${1:-}'"; }
ctl_port() { echo $((CTL_PORT_BASE + $1)); }

controller_start() { # K
    local k=$1 pid t0 code tls=() url
    check_replica "$k"
    if pidfile_alive "$CL/ctl/$k.pid" "guardwire controller"; then
        log "controller $k is already running (pid $(<"$CL/ctl/$k.pid"))"
        return 0
    fi
    [[ -x $GW_BIN_DIR/guardwire ]] || die "$GW_BIN_DIR/guardwire not found"
    if [[ $TLS == 1 ]]; then
        tls=(--etcd-ca "$PKI/ca.pem" --etcd-cert "$PKI/controller.pem" --etcd-key "$PKI/controller-key.pem")
    fi
    mkdir -p -m 700 "$CL/ctl/$k.state"
    url=http://$CL_IP:$(ctl_port "$k")
    log "controller $k: $url (log $CL/ctl/$k.log)"
    # Listens on every address of the management ns: 10.98.0.1 here, and
    # 10.98.I.1 towards node I's sec ns.
    ip netns exec "$CL_NS" setsid env NO_COLOR=1 "$GW_BIN_DIR/guardwire" controller \
        --etcd "$(endpoints "$CL_IP")" --listen "0.0.0.0:$(ctl_port "$k")" "${tls[@]}" \
        --admin-token-file "$CL/ctl/admin.token" --viewer-token-file "$CL/ctl/viewer.token" \
        --state-dir "$CL/ctl/$k.state" --node-token-file "$CL/node-viewer.token" \
        </dev/null >>"$CL/ctl/$k.log" 2>&1 3>&- &
    pid=$!
    echo "$pid" >"$CL/ctl/$k.pid"
    wait_exec "$CL/ctl/$k.pid" "guardwire controller"
    t0=$SECONDS
    while :; do
        code=$(ip netns exec "$CL_NS" curl -s -o /dev/null -m 2 -w '%{http_code}' "$url/api/v1/health" || true)
        [[ -n $code && $code != 000 ]] && break # any answer: it serves (health may say etcd is not there)
        if ! pid_alive "$pid"; then
            log "controller log:"
            tail -n 30 "$CL/ctl/$k.log" >&2 || true
            die "controller $k exited"
        fi
        if ((SECONDS - t0 >= CTL_WAIT)); then
            log "controller log:"
            tail -n 30 "$CL/ctl/$k.log" >&2 || true
            die "controller $k: no answer to GET $url/api/v1/health after ${CTL_WAIT} s (last: $code)"
        fi
        sleep 0.2
    done
}

# ---------------------------------------------------------------- env

# kv KEY VALUE...: KEY=VALUE lines, quoted only when VALUE needs it.
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

pid_of() { # FILE NAME: the pid if it runs, else empty
    if pidfile_alive "$1" "$2"; then cat "$1"; fi
}

write_env() {
    local i k labels
    {
        kv PREFIX "$PREFIX" CL_NS "$CL_NS" CL_STATE "$CL" CL_IP "$CL_IP" NODES "$NODES" \
            ETCD_TLS "$TLS" ETCD_MEMBERS "$MEMBERS" ETCD_ENDPOINTS "$(endpoints "$CL_IP")" \
            ETCDCTL "$CL/etcdctl"
        if [[ $TLS == 1 ]]; then
            kv ETCD_CA "$PKI/ca.pem" ETCD_CERT "$PKI/etcdctl.pem" ETCD_KEY "$PKI/etcdctl-key.pem"
        else
            kv ETCD_CA "" ETCD_CERT "" ETCD_KEY ""
        fi
        for ((k = 1; k <= MEMBERS; k++)); do
            kv "ETCD_ENDPOINT_$k" "$(scheme)://$CL_IP:$(client_port "$k")" \
                "ETCD_PID_$k" "$(pid_of "$CL/etcd/m$k.pid" "$ETCD_BIN")" \
                "ETCD_LOG_$k" "$CL/etcd/m$k.log"
        done
        kv CONTROLLER_URL "http://$CL_IP:$(ctl_port 1)" \
            CONTROLLER_ADMIN_TOKEN_FILE "$CL/ctl/admin.token" \
            CONTROLLER_VIEWER_TOKEN_FILE "$CL/ctl/viewer.token" \
            CONTROLLER_LOG "$CL/ctl/1.log" \
            NODE_VIEWER_TOKEN_FILE "$CL/node-viewer.token"
        for ((k = 1; k <= 9; k++)); do
            [[ -f $CL/ctl/$k.pid ]] || continue
            kv "CONTROLLER_URL_$k" "http://$CL_IP:$(ctl_port "$k")" \
                "CONTROLLER_PID_$k" "$(pid_of "$CL/ctl/$k.pid" "guardwire controller")" \
                "CONTROLLER_LOG_$k" "$CL/ctl/$k.log"
        done
        for ((i = 1; i <= NODES; i++)); do
            labels=$(node_labels "$i")
            kv "NODE_PREFIX_$i" "$PREFIX$i" "NODE_NAME_$i" "$PREFIX$i" \
                "NODE_ENV_$i" "$STATE_ROOT/$PREFIX$i/node.env" \
                "NODE_API_$i" "10.98.$i.2:$NODE_API_PORT" \
                "NODE_API_URL_$i" "http://10.98.$i.2:$NODE_API_PORT" \
                "NODE_MGMT_IP_$i" "10.98.$i.1" \
                "NODE_ETCD_ENDPOINTS_$i" "$(endpoints "10.98.$i.1")" \
                "NODE_LABELS_$i" "$labels" \
                "NODE_SOCK_$i" "$STATE_ROOT/$PREFIX$i/guardwire.sock" \
                "NODE_LOG_$i" "$STATE_ROOT/$PREFIX$i/guardwire.log" \
                "NODE_SEC_NS_$i" "$PREFIX$i-sec" "NODE_PEER_NS_$i" "$PREFIX$i-peer" \
                "NODE_POD_NS_${i}_1" "$PREFIX$i-pod1"
        done
        kv GW_BIN_DIR "$GW_BIN_DIR"
    } >"$CL/cluster.env.tmp"
    mv "$CL/cluster.env.tmp" "$CL/cluster.env"
}

node_labels() { echo "zone=z$1,role=worker"; }

# The [cluster] table of node I (node.sh --config-extra).
write_node_cluster_toml() {
    local i=$1 ep eps="" lab labs=""
    IFS=, read -ra ep <<<"$(endpoints "10.98.$i.1")"
    for e in "${ep[@]}"; do eps+="${eps:+, }\"$e\""; done
    IFS=, read -ra lab <<<"$(node_labels "$i")"
    for l in "${lab[@]}"; do labs+="${labs:+, }\"$l\""; done
    {
        echo "[cluster]"
        echo "endpoints = [$eps]"
        if [[ $TLS == 1 ]]; then
            echo "ca = \"$PKI/ca.pem\""
            echo "cert = \"$PKI/node$i.pem\""
            echo "key = \"$PKI/node$i-key.pem\""
        fi
        echo "labels = [$labs]"
        echo "api_url = \"http://10.98.$i.2:$NODE_API_PORT\""
        echo "lease_ttl_secs = $LEASE_TTL"
        echo "status_secs = $STATUS_SECS"
    } >"$CL/node$i-cluster.toml"
}

write_etcdctl_wrapper() {
    local tls=""
    [[ $TLS == 1 ]] && tls="--cacert $PKI/ca.pem --cert $PKI/etcdctl.pem --key $PKI/etcdctl-key.pem"
    cat >"$CL/etcdctl" <<EOF
#!/bin/sh
# etcdctl against the test-bed cluster $PREFIX (run inside $CL_NS)
exec ip netns exec $CL_NS env ETCDCTL_API=3 $ETCDCTL_BIN --endpoints $(endpoints "$CL_IP") \\
    --dial-timeout 2s --command-timeout 5s $tls "\$@"
EOF
    chmod 700 "$CL/etcdctl"
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
    local npods=2 vm=0 live=0 workers=2 controller=1 agent=1 i k node_args out
    set_prefix "${1:-}"
    shift
    NODES=3 TLS=1 LEASE_TTL=10 STATUS_SECS=30
    while [[ $# -gt 0 ]]; do
        case $1 in
        --nodes) NODES=${2:-}; shift 2 || usage ;;
        --pods) npods=${2:-}; shift 2 || usage ;;
        --vm) vm=1; shift ;;
        --live) live=1; shift ;;
        --workers) workers=${2:-}; shift 2 || usage ;;
        --plain) TLS=0; shift ;;
        --lease-ttl) LEASE_TTL=${2:-}; shift 2 || usage ;;
        --status-secs) STATUS_SECS=${2:-}; shift 2 || usage ;;
        --no-controller) controller=0; shift ;;
        --no-agent) agent=0; shift ;;
        *) usage ;;
        esac
    done
    [[ $NODES =~ ^[0-9]+$ ]] && ((NODES >= 1 && NODES <= MAX_NODES)) || die "--nodes must be 1..$MAX_NODES"
    [[ $LEASE_TTL =~ ^[0-9]+$ && $STATUS_SECS =~ ^[0-9]+$ ]] || die "--lease-ttl/--status-secs want seconds"

    [[ $(id -u) -eq 0 ]] || die "must run as root"
    [[ -x $ETCD_BIN ]] || die "$ETCD_BIN not found (apt-get install etcd-server)"
    [[ -x $ETCDCTL_BIN ]] || die "$ETCDCTL_BIN not found (apt-get install etcd-client)"
    command -v openssl >/dev/null || die "openssl not found"
    command -v curl >/dev/null || die "curl not found"
    [[ -x $GW_BIN_DIR/guardwire ]] || die "$GW_BIN_DIR/guardwire not found: build it (cargo build --release)"
    if [[ -e $CL ]] || ns_exists "$CL_NS"; then
        die "cluster $PREFIX already exists ($CL or namespace $CL_NS): run 'cluster.sh down $PREFIX' first"
    fi
    for ((i = 1; i <= NODES; i++)); do
        if [[ -e $STATE_ROOT/$PREFIX$i ]] || ns_exists "$PREFIX$i-sec" || ns_exists "$PREFIX$i-host"; then
            die "node $PREFIX$i already exists: run 'node.sh down $PREFIX$i' first"
        fi
    done

    trap on_up_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    exec 3>&1 1>&2 # stdout carries only the env lines at the end

    mkdir -p -m 700 "$CL" "$CL/etcd" "$CL/ctl"
    # Written first: `down` of a half-built cluster needs to know its nodes.
    printf 'NODES=%s\nTLS=%s\nLEASE_TTL=%s\nSTATUS_SECS=%s\n' "$NODES" "$TLS" "$LEASE_TTL" "$STATUS_SECS" >"$CONF"

    log "management ns $CL_NS ($CL_IP on lo)"
    ip netns add "$CL_NS"
    ip -n "$CL_NS" link set lo up
    ip -n "$CL_NS" addr add "$CL_IP/32" dev lo
    ip netns exec "$CL_NS" sysctl -qw net.ipv4.ip_forward=0 # nodes do not reach each other through it

    if [[ $TLS == 1 ]]; then make_pki; fi
    # Tokens: the controller's (shared by its replicas), and the viewer token
    # every node's API accepts, which the controller shows the nodes.
    for f in ctl/admin.token ctl/viewer.token node-viewer.token; do
        (umask 077 && openssl rand -hex 32 >"$CL/$f")
    done
    write_etcdctl_wrapper

    for ((k = 1; k <= MEMBERS; k++)); do etcd_start_one "$k"; done
    wait_members $(seq 1 "$MEMBERS")
    log "etcd: $MEMBERS members healthy ($(endpoints "$CL_IP"))"

    for ((i = 1; i <= NODES; i++)); do
        node_args=(--pods "$npods" --workers "$workers" --forwarder guardwire
            --mgmt-ns "$CL_NS" --mgmt-net "10.98.$i" --viewer-token-file "$CL/node-viewer.token")
        [[ $vm == 1 ]] && node_args+=(--vm)
        [[ $live == 1 ]] && node_args+=(--live)
        if [[ $agent == 1 ]]; then
            write_node_cluster_toml "$i"
            node_args+=(--config-extra "$CL/node$i-cluster.toml")
        fi
        log "node $i: node.sh up $PREFIX$i ${node_args[*]}"
        out=$("$NODE_SH" up "$PREFIX$i" "${node_args[@]}") || die "node.sh up $PREFIX$i failed"
        [[ -n $out ]] || die "node.sh up $PREFIX$i printed no env"
    done

    if [[ $controller == 1 ]]; then controller_start 1; fi

    write_env
    trap - EXIT INT TERM
    log "cluster $PREFIX is up: $NODES nodes, etcd $(endpoints "$CL_IP")$([[ $controller == 1 ]] && echo ", controller http://$CL_IP:$(ctl_port 1)")"
    cat "$CL/cluster.env" >&3
}

cmd_down() {
    local i k f ns pid pids
    set_prefix "${1:-}"
    export GW_TESTBED_IN_CLUSTER_DOWN=$PREFIX
    set +e
    NODES=0
    [[ -f $CONF ]] && source "$CONF"
    # 1. controllers
    for f in "$CL"/ctl/*.pid; do
        [[ -e $f ]] && stop_pidfile "$f" "guardwire controller"
    done
    # 2. nodes (node.sh down is idempotent)
    for ((i = 1; i <= ${NODES:-0}; i++)); do
        if [[ -e $STATE_ROOT/$PREFIX$i ]] || ns_exists "$PREFIX$i-host" || ns_exists "$PREFIX$i-sec"; then
            log "node.sh down $PREFIX$i"
            "$NODE_SH" down "$PREFIX$i" >&2
        fi
    done
    # 3. etcd members
    for f in "$CL"/etcd/m*.pid; do
        [[ -e $f ]] && stop_pidfile "$f" "$ETCD_BIN"
    done
    # 4. anything else in the management ns
    if ns_exists "$CL_NS"; then
        pids=()
        for pid in $(ip netns pids "$CL_NS" 2>/dev/null); do
            [[ $pid -ne $$ ]] && pids+=("$pid")
        done
        if [[ ${#pids[@]} -gt 0 ]]; then
            log "stopping processes left in $CL_NS: ${pids[*]}"
            kill -TERM "${pids[@]}" 2>/dev/null
            for ((i = 0; i < 30; i++)); do
                local alive=0
                for pid in "${pids[@]}"; do pid_alive "$pid" && alive=1; done
                [[ $alive == 0 ]] && break
                sleep 0.1
            done
            for pid in "${pids[@]}"; do pid_alive "$pid" && kill -KILL "$pid" 2>/dev/null; done
        fi
        ip netns del "$CL_NS" 2>/dev/null || log "warning: could not delete netns $CL_NS"
    fi
    # 5. state
    rm -rf "$CL"
    return 0
}

cmd_env() {
    set_prefix "${1:-}"
    load_conf
    write_env # pids are read afresh
    cat "$CL/cluster.env"
}

cmd_etcd_stop() {
    set_prefix "${1:-}"
    load_conf
    check_member "${2:-}"
    stop_pidfile "$CL/etcd/m$2.pid" "$ETCD_BIN"
    write_env
}

cmd_etcd_start() {
    set_prefix "${1:-}"
    load_conf
    check_member "${2:-}"
    etcd_start_one "$2"
    # A restarted member is healthy once it rejoined a quorum; when it is the
    # only one running there is none: then wait only for it to listen.
    local k others=0
    for ((k = 1; k <= MEMBERS; k++)); do
        [[ $k != "$2" ]] && pidfile_alive "$CL/etcd/m$k.pid" "$ETCD_BIN" && others=$((others + 1))
    done
    if ((others + 1 > MEMBERS / 2)); then
        wait_members "$2"
    else
        log "member $2 started; no quorum until more members run"
    fi
    write_env
}

cmd_etcd_stop_all() {
    local k
    set_prefix "${1:-}"
    load_conf
    for ((k = 1; k <= MEMBERS; k++)); do stop_pidfile "$CL/etcd/m$k.pid" "$ETCD_BIN"; done
    write_env
}

cmd_etcd_start_all() {
    local k
    set_prefix "${1:-}"
    load_conf
    for ((k = 1; k <= MEMBERS; k++)); do etcd_start_one "$k"; done
    wait_members $(seq 1 "$MEMBERS")
    write_env
}

cmd_etcd_health() {
    set_prefix "${1:-}"
    load_conf
    etcdctl_cl endpoint health
}

cmd_etcdctl() {
    set_prefix "${1:-}"
    shift
    load_conf
    etcdctl_cl "$@"
}

cmd_controller_start() {
    set_prefix "${1:-}"
    load_conf
    controller_start "${2:-1}"
    write_env
}

cmd_controller_stop() {
    local k=1 sig=TERM
    set_prefix "${1:-}"
    shift
    load_conf
    while [[ $# -gt 0 ]]; do
        case $1 in
        --kill) sig=KILL ;;
        *) check_replica "$1"; k=$1 ;;
        esac
        shift
    done
    stop_pidfile "$CL/ctl/$k.pid" "guardwire controller" "$sig"
    write_env
}

cmd_node() { # node-stop|node-start PREFIX I [--kill]
    local what=$1 i
    set_prefix "${2:-}"
    load_conf
    i=${3:-}
    [[ $i =~ ^[0-9]+$ ]] && ((i >= 1 && i <= NODES)) || die "node must be 1..$NODES, got '$i'"
    if [[ $what == stop ]]; then
        "$NODE_SH" gw-stop "$PREFIX$i" ${4:+"$4"}
    else
        "$NODE_SH" gw-start "$PREFIX$i"
    fi
}

main() {
    [[ $# -ge 2 ]] || usage
    local cmd=$1
    shift
    case $cmd in
    up) cmd_up "$@" ;;
    down) [[ $# -eq 1 ]] || usage; cmd_down "$1" ;;
    env) [[ $# -eq 1 ]] || usage; cmd_env "$1" ;;
    etcd-stop) [[ $# -eq 2 ]] || usage; cmd_etcd_stop "$@" ;;
    etcd-start) [[ $# -eq 2 ]] || usage; cmd_etcd_start "$@" ;;
    etcd-stop-all) [[ $# -eq 1 ]] || usage; cmd_etcd_stop_all "$1" ;;
    etcd-start-all) [[ $# -eq 1 ]] || usage; cmd_etcd_start_all "$1" ;;
    etcd-health) [[ $# -eq 1 ]] || usage; cmd_etcd_health "$1" ;;
    etcdctl) cmd_etcdctl "$@" ;;
    controller-start) [[ $# -le 2 ]] || usage; cmd_controller_start "$@" ;;
    controller-stop) [[ $# -le 3 ]] || usage; cmd_controller_stop "$@" ;;
    node-stop) [[ $# -ge 2 && $# -le 3 ]] || usage; cmd_node stop "$@" ;;
    node-start) [[ $# -eq 2 ]] || usage; cmd_node start "$@" ;;
    *) usage ;;
    esac
}

main "$@"
