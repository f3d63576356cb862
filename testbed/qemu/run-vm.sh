#!/usr/bin/env bash
# Start/stop a real QEMU guest (TCG) whose NIC is a tap inside a network namespace.
#
#   run-vm.sh start NAME --netns NS --tap TAP --mac MAC --ip CIDR --gw IP
#                        [--console FILE] [--timeout SEC] [--mem MB]
#   run-vm.sh stop  NAME          # idempotent
#   run-vm.sh status NAME         # exit 0 if running
#
# start runs QEMU inside NS (QEMU creates TAP there, or opens an existing tap of
# that name), sets the tap up, and waits for GUEST-READY on the serial console
# (default 60 s). The tap is not attached to anything: put it on a bridge, or
# hand it to guardwire, after start. On success stdout gets KEY=VALUE lines
# (VM_NAME VM_PID VM_CONSOLE VM_BOOT_MS) for eval; progress goes to stderr. On
# failure QEMU is killed, its files removed and the console tail printed.
#
# Files: /run/guardwire-qemu/NAME.{pid,console,qemu.log,meta} (console unless
# --console). Guest: ${GW_QEMU_CACHE:-/var/cache/guardwire-qemu}/{vmlinux or vmlinuz,initrd.gz},
# built by build-guest.sh (run automatically if missing).
set -euo pipefail

CACHE=${GW_QEMU_CACHE:-/var/cache/guardwire-qemu}
RUN=/run/guardwire-qemu
HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")

log() { echo "run-vm: $*" >&2; }
die() { log "error: $*"; exit 1; }
usage() {
    sed -n '4,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

now_ms() { local s; s=$(date +%s%N); echo $((s / 1000000)); }

# Is PID a live (non-zombie) QEMU started for NAME?
pid_running() {
    local st
    st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $st && $st != Z && $st != X ]]
}

is_our_qemu() {
    local pid=$1 name=$2
    [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
    pid_running "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "-name guardwire-$name " || return 1
}

# gone_within PID NAME TENTHS: true once our QEMU PID has exited, false after TENTHS/10 s.
gone_within() {
    local i
    for ((i = 0; i < $3; i++)); do
        is_our_qemu "$1" "$2" || return 0
        sleep 0.1
    done
    return 1
}

kill_qemu() {
    local pid=$1 name=$2
    is_our_qemu "$pid" "$name" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    gone_within "$pid" "$name" 30 && return 0
    log "$name: QEMU $pid ignored SIGTERM for 3 s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    gone_within "$pid" "$name" 50 && return 0
    die "$name: QEMU $pid still alive after SIGKILL"
}

check_name() {
    [[ $1 =~ ^[A-Za-z0-9_.-]{1,64}$ ]] || die "bad NAME '$1' (letters, digits, _ . -)"
}

cmd_stop() {
    local name=$1 pid="" console=""
    check_name "$name"
    [[ -e $RUN/$name.pid ]] && pid=$(<"$RUN/$name.pid")
    if [[ -e $RUN/$name.meta ]]; then
        console=$(sed -n 's/^console=//p' "$RUN/$name.meta")
    fi
    kill_qemu "$pid" "$name"
    # The default console lives in $RUN and is ours; a --console FILE is the caller's.
    rm -f "$RUN/$name.pid" "$RUN/$name.qemu.log" "$RUN/$name.meta" "$RUN/$name.console"
    [[ -n $pid ]] && log "$name: stopped (pid $pid)"
    return 0
}

cmd_status() {
    local name=$1 pid=""
    check_name "$name"
    [[ -e $RUN/$name.pid ]] && pid=$(<"$RUN/$name.pid")
    if is_our_qemu "$pid" "$name"; then
        echo "running pid=$pid"
        cat "$RUN/$name.meta" 2>/dev/null || true
        return 0
    fi
    echo "stopped"
    return 1
}

cmd_start() {
    local name=$1; shift
    local ns="" tap="" mac="" ip="" gw="" console="" timeout=60 mem=256
    check_name "$name"
    while (($#)); do
        (($# >= 2)) || die "option $1 needs a value"
        case $1 in
            --netns) ns=$2 ;;
            --tap) tap=$2 ;;
            --mac) mac=$2 ;;
            --ip) ip=$2 ;;
            --gw) gw=$2 ;;
            --console) console=$2 ;;
            --timeout) timeout=$2 ;;
            --mem) mem=$2 ;;
            *) die "unknown option $1" ;;
        esac
        shift 2
    done
    [[ -n $ns && -n $tap && -n $mac && -n $ip && -n $gw ]] \
        || die "start needs --netns --tap --mac --ip --gw"
    [[ $mac =~ ^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$ ]] || die "bad MAC $mac"
    [[ $ip =~ ^[0-9.]+/[0-9]+$ ]] || die "--ip wants an address with prefix (10.244.0.201/24)"
    [[ $gw =~ ^[0-9.]+$ ]] || die "bad --gw $gw"
    [[ $timeout =~ ^[0-9]+$ ]] || die "bad --timeout $timeout"
    ((${#tap} <= 15)) || die "tap name $tap longer than 15 characters"
    [[ $(id -u) == 0 ]] || die "must run as root"
    [[ -e /var/run/netns/$ns ]] || die "no netns $ns"
    command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing: run $HERE/build-guest.sh"

    if [[ ! -s $CACHE/vmlinuz || ! -s $CACHE/initrd.gz ]]; then
        log "no guest in $CACHE: running build-guest.sh"
        "$HERE/build-guest.sh" >&2
    fi
    # vmlinux boots through the PVH entry, ~6 s faster under TCG than vmlinuz.
    local kernel=${GW_QEMU_KERNEL:-$CACHE/vmlinux}
    [[ -s $kernel ]] || kernel=$CACHE/vmlinuz

    mkdir -p "$RUN"
    local pidfile=$RUN/$name.pid qlog=$RUN/$name.qemu.log old=""
    [[ -e $pidfile ]] && old=$(<"$pidfile")
    if is_our_qemu "$old" "$name"; then
        die "VM $name already running (pid $old); run-vm.sh stop $name first"
    fi
    rm -f "$pidfile" "$RUN/$name.meta"
    [[ -n $console ]] || console=$RUN/$name.console
    mkdir -p "$(dirname "$console")"
    : >"$console"
    : >"$qlog"

    local t0
    # Clean up whatever we started if we fail or are interrupted (globals: the
    # trap may run after this function returned).
    START_NAME=$name START_PID="" START_OK=0
    trap 'if [[ $START_OK == 0 ]]; then
              if [[ -n $START_PID ]]; then
                  kill_qemu "$START_PID" "$START_NAME"
                  # Still our child but not yet QEMU (ip netns exec / setsid)?
                  [[ $(awk "{print \$4}" /proc/$START_PID/stat 2>/dev/null) == "$$" ]] \
                      && kill -KILL "$START_PID" 2>/dev/null
              fi
              rm -f "$RUN/$START_NAME.pid" "$RUN/$START_NAME.meta"
          fi' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    t0=$(now_ms)
    # setsid: out of the caller's process group (it does not fork here: a
    # background job of a script is no group leader), so $! is QEMU itself.
    ip netns exec "$ns" setsid qemu-system-x86_64 \
        -name "guardwire-$name" \
        -accel tcg -m "$mem" -smp 1 \
        -display none -monitor none -serial "file:$console" -no-reboot \
        -kernel "$kernel" -initrd "$CACHE/initrd.gz" \
        -append "console=ttyS0 quiet panic=-1 gw.ip=$ip gw.gw=$gw" \
        -netdev "tap,id=n0,ifname=$tap,script=no,downscript=no,vhost=off" \
        -device "virtio-net-pci,netdev=n0,mac=$mac" \
        </dev/null >"$qlog" 2>&1 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
    local pid=$!
    START_PID=$pid
    echo "$pid" >"$pidfile"
    printf 'netns=%s\ntap=%s\nmac=%s\nip=%s\ngw=%s\nconsole=%s\npid=%s\n' \
        "$ns" "$tap" "$mac" "$ip" "$gw" "$console" "$pid" >"$RUN/$name.meta"

    fail() {
        log "$name: $*"
        log "--- QEMU output ($qlog):"; tail -n 20 "$qlog" >&2 || true
        log "--- console tail ($console):"; tail -n 30 "$console" >&2 || true
        exit 1
    }

    # The tap: created by QEMU in $ns; set it up as soon as it exists.
    local deadline=$((t0 + 10000)) tap_up=0
    while (($(now_ms) < deadline)); do
        if ip -n "$ns" link show "$tap" >/dev/null 2>&1; then
            ip -n "$ns" link set "$tap" up && tap_up=1
            break
        fi
        # Only "gone" counts here: right after the fork the process may still be
        # `ip netns exec`/`setsid` on its way to exec QEMU (cmdline in flux).
        pid_running "$pid" || fail "QEMU exited during start-up"
        sleep 0.05
    done
    ((tap_up)) || fail "tap $tap did not appear in netns $ns within 10 s"

    deadline=$((t0 + timeout * 1000))
    while :; do
        if grep -q '^GUEST-READY' "$console" 2>/dev/null; then break; fi
        grep -q '^GUEST-ERROR' "$console" 2>/dev/null && fail "guest reported an error"
        is_our_qemu "$pid" "$name" || fail "QEMU exited before GUEST-READY"
        (($(now_ms) < deadline)) || fail "no GUEST-READY within ${timeout} s"
        sleep 0.1
    done
    local boot_ms=$(($(now_ms) - t0))
    START_OK=1
    echo "boot_ms=$boot_ms" >>"$RUN/$name.meta"
    log "$name: $(grep -m1 '^GUEST-READY' "$console" | tr -d '\r') after ${boot_ms} ms (pid $pid, netns $ns, tap $tap)"
    printf 'VM_NAME=%s\nVM_PID=%s\nVM_CONSOLE=%s\nVM_BOOT_MS=%s\n' "$name" "$pid" "$console" "$boot_ms"
}

(($# >= 2)) || usage
verb=$1 name=$2
shift 2
case $verb in
    start) cmd_start "$name" "$@" ;;
    stop) (($# == 0)) || usage; cmd_stop "$name" ;;
    status) (($# == 0)) || usage; cmd_status "$name" ;;
    *) usage ;;
esac
