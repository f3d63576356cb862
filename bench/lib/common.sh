# Shell helpers the bench scripts share. Source after setting IPERF_PIDFILE.

# fd 3 = the terminal's stderr, also usable from traps.
exec 3>&2
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&3; }
die() { log "error: $*"; exit 1; }

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# stop PID: SIGTERM, wait up to ${2:-5} s, then SIGKILL.
stop() {
    local pid=$1 secs=${2:-5} i
    alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < secs * 10; i++)); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}

stop_iperf_server() {
    local pid
    [ -f "$IPERF_PIDFILE" ] || return 0
    pid=$(tr -dc 0-9 <"$IPERF_PIDFILE")
    rm -f "$IPERF_PIDFILE"
    [ -n "$pid" ] && grep -qs iperf3 "/proc/$pid/comm" && stop "$pid" 3
    return 0
}

# bounded SECS OUT ERR CMD...: run CMD with a time limit, in the background so that
# Ctrl-C is handled at once (the trap stops it), stdout to OUT, stderr appended to ERR.
bounded() {
    local secs=$1 out=$2 err=$3 rc
    shift 3
    timeout "$secs" "$@" >"$out" 2>>"$err" &
    CUR=$!
    wait "$CUR"
    rc=$?
    CUR=""
    return $rc
}

us_now() { local t=$EPOCHREALTIME; echo "${t/[.,]/}"; }

# Warns (never fails) when other heavy processes would make figures noisy.
warn_if_busy() {
    local busy
    busy=$({ for p in iperf3 trafgen guardwire ovs-vswitchd cargo rustc; do pgrep -a -x "$p"; done
              pgrep -a qemu-system; } 2>/dev/null |
        while read -r p rest; do   # zombies are not load
            [ "$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | cut -d' ' -f1)" = Z ] || printf '%s %s\n' "$p" "$rest"
        done | head -n 5)
    if [ -n "$busy" ]; then
        log "warning: other heavy processes are running; figures will be noisy:"
        printf '%s\n' "$busy" | sed 's/^/    /' >&3
    fi
}
