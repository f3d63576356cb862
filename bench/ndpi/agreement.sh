#!/usr/bin/env bash
# Application identification: guardwire `classify --json` vs nDPI (ndpiReader 4.2)
# on pcaps of real client traffic (curl, openssl s_client, dig, aioquic HTTP/3, ssh banner)
# made between two network namespaces.
# Usage: bash bench/ndpi/agreement.sh [--out DIR] [--guardwire PATH] [--keep]
#   --out DIR         report directory (default bench/results)
#   --guardwire PATH  classifier binary (default target/release/guardwire); it is called as
#                     PATH classify --json PCAP. Missing binary or verb: nDPI side only.
#   --keep            keep the work dir (pcaps, ndpiReader output, server logs) in /tmp
# Needs root. Creates namespaces ndpi-cli / ndpi-srv, removed on exit (also on error/Ctrl-C).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/bench/ndpi
OUT=$ROOT/bench/results
GW=$ROOT/target/release/guardwire
KEEP=0
CACHE=/var/cache/guardwire-ndpi
VENV=$CACHE/venv
VPY=$VENV/bin/python
LOCK=/run/guardwire-ndpi.lock
export PYTHONDONTWRITEBYTECODE=1   # no __pycache__ in bench/ndpi

usage() { sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case $1 in
        --out) OUT=${2:?--out needs a directory}; shift 2 ;;
        --out=*) OUT=${1#*=}; shift ;;
        --guardwire) GW=${2:?--guardwire needs a path}; shift 2 ;;
        --guardwire=*) GW=${1#*=}; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
done
case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac
case $GW in /*) ;; */*) GW=$PWD/$GW ;; *) GW=$(command -v "$GW" 2>/dev/null || echo "$PWD/$GW") ;; esac

[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }

exec 3>&2
log() { printf '[ndpi %s] %s\n' "$(date +%H:%M:%S)" "$*" >&3; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- topology constants
NS_CLI=ndpi-cli NS_SRV=ndpi-srv
ALL_NS=("$NS_CLI" "$NS_SRV")
IF_CLI=ndpi-c0 IF_SRV=ndpi-s0
CLI4=10.77.0.1 SRV4=10.77.0.2 CLI6=fd77::1 SRV6=fd77::2
CLI4_SMALLMSS=10.77.0.3     # second client address; the server advertises MSS 100 to it

TLS_NAMES=(www.youtube.com www.netflix.com web.whatsapp.com api.telegram.org steamcommunity.com
           www.facebook.com github.com www.tiktok.com discord.com intranet.example)
DNS_NAMES=("${TLS_NAMES[@]}" www.twitch.tv www.spotify.com example.org)

STAMP=$(date +%Y-%m-%d-%H%M)
WORK=""
BG_PIDS=()      # servers
CAP_PID=""      # per-case tcpdump
ALL_PID=""      # combined tcpdump

# ---------------------------------------------------------------- cleanup
kill_pid() {    # kill_pid PID [SIG]: signal, wait up to 3 s, then SIGKILL
    local pid=$1 sig=${2:-TERM}
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
    return 0
}
netns_exists() { [ -e "/run/netns/$1" ]; }
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

drop_namespaces() {
    local ns p
    for ns in "${ALL_NS[@]}"; do
        netns_exists "$ns" || continue
        # anything still inside one of our namespaces was started by this script
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill_pid "$p"; done
        ip netns del "$ns" 2>/dev/null || true
    done
}

cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    set +e
    [ -n "$CAP_PID" ] && kill_pid "$CAP_PID" INT
    [ -n "$ALL_PID" ] && kill_pid "$ALL_PID" INT
    for p in "${BG_PIDS[@]}"; do kill_pid "$p"; done
    drop_namespaces
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if [ $KEEP = 1 ] || [ $rc -ne 0 ]; then
            log "work dir kept: $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    [ $rc -ne 0 ] && log "exit status $rc"
    exit $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

exec 9>"$LOCK"
flock -n 9 || die "another agreement.sh run holds $LOCK"

# ---------------------------------------------------------------- dependencies
ensure_deps() {
    local pkgs=(libndpi-bin tcpdump dnsutils dnsmasq-base openssl curl python3-venv python3 iproute2 ethtool)
    local missing=() p
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        local alog; alog=$(mktemp /tmp/ndpi-apt.XXXX)
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                --no-install-recommends "${missing[@]}"; } >"$alog" 2>&1; then
            tail -n 20 "$alog" >&3
            die "apt-get install ${missing[*]} failed (log: $alog)"
        fi
        rm -f "$alog"
    fi
    if ! [ -x "$VPY" ] || ! "$VPY" -c 'import aioquic' 2>/dev/null; then
        log "creating $VENV with aioquic"
        mkdir -p "$CACHE"
        [ -x "$VPY" ] || /usr/bin/python3 -m venv "$VENV" || die "python3 -m venv failed"
        "$VPY" -m pip install -q --disable-pip-version-check aioquic >/dev/null 2>"$CACHE/pip.log" \
            || { tail -n 20 "$CACHE/pip.log" >&3; die "pip install aioquic failed"; }
    fi
    for p in ndpiReader tcpdump dig dnsmasq openssl curl ip timeout ethtool flock; do
        command -v "$p" >/dev/null || die "missing tool after install: $p"
    done
}

# ---------------------------------------------------------------- topology and servers
setup_topology() {
    drop_namespaces    # stale ones from an earlier, killed run
    local ns
    for ns in "${ALL_NS[@]}"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        # no router solicitations / autoconf noise in the captures
        nsx "$ns" sysctl -qw net.ipv6.conf.default.router_solicitations=0 \
            net.ipv6.conf.all.router_solicitations=0 net.ipv6.conf.default.accept_ra=0
    done
    ip link add "$IF_CLI" netns "$NS_CLI" type veth peer name "$IF_SRV" netns "$NS_SRV"
    ip -n "$NS_CLI" link set "$IF_CLI" address 02:77:00:00:00:01 mtu 1500 up
    ip -n "$NS_SRV" link set "$IF_SRV" address 02:77:00:00:00:02 mtu 1500 up
    # No TSO/GSO/GRO: the pcaps show wire-sized segments (else a 2 KiB ClientHello is
    # captured as one 2 KiB "segment" on the veth).
    nsx "$NS_CLI" ethtool -K "$IF_CLI" tso off gso off gro off >/dev/null 2>&1 || true
    nsx "$NS_SRV" ethtool -K "$IF_SRV" tso off gso off gro off >/dev/null 2>&1 || true
    ip -n "$NS_CLI" addr add $CLI4/24 dev "$IF_CLI"
    ip -n "$NS_CLI" addr add $CLI4_SMALLMSS/32 dev "$IF_CLI"
    ip -n "$NS_CLI" addr add $CLI6/64 dev "$IF_CLI" nodad
    ip -n "$NS_SRV" addr add $SRV4/24 dev "$IF_SRV"
    ip -n "$NS_SRV" addr add $SRV6/64 dev "$IF_SRV" nodad
    # The server's SYN-ACK to 10.77.0.3 advertises MSS 100: a ClientHello from that
    # address is cut into ~100-byte segments, the SNI no longer in the first one.
    ip -n "$NS_SRV" route add $CLI4_SMALLMSS/32 dev "$IF_SRV" advmss 100
    nsx "$NS_CLI" ping -c1 -W2 -q $SRV4 >/dev/null || die "no IPv4 connectivity between namespaces"
    nsx "$NS_CLI" ping -c1 -W2 -q $SRV6 >/dev/null || die "no IPv6 connectivity between namespaces"
}

bg_srv() {   # bg_srv NAME CMD...: run CMD in the server ns, log to $WORK/logs/NAME.log
    local name=$1; shift
    ip netns exec "$NS_SRV" "$@" </dev/null >"$WORK/logs/$name.log" 2>&1 &
    BG_PIDS+=($!)
}

wait_listen() {   # wait_listen PROTO PORT
    local proto=$1 port=$2 flag
    flag=$([ "$proto" = udp ] && echo -lnu || echo -lnt)
    for _ in $(seq 100); do
        if nsx "$NS_SRV" ss -H "$flag" "sport = :$port" 2>/dev/null | grep -q .; then return 0; fi
        sleep 0.1
    done
    die "server on $proto/$port did not come up (logs in $WORK/logs)"
}

start_servers() {
    local n dns_args=()
    mkdir -p "$WORK/www" "$WORK/logs"
    echo "guardwire ndpi bench http ok" >"$WORK/www/index.html"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=ndpi-bench.invalid -keyout "$WORK/key.pem" -out "$WORK/cert.pem" >/dev/null 2>&1 \
        || die "openssl req failed"
    for n in "${DNS_NAMES[@]}"; do dns_args+=("--address=/$n/$SRV4" "--address=/$n/$SRV6"); done

    bg_srv tls443 openssl s_server -quiet -www -accept 443 -cert "$WORK/cert.pem" -key "$WORK/key.pem"
    bg_srv tls8443 openssl s_server -quiet -www -accept 8443 -cert "$WORK/cert.pem" -key "$WORK/key.pem"
    bg_srv http80 /usr/bin/python3 -m http.server 80 --bind :: --directory "$WORK/www"
    bg_srv dns dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
        --bind-interfaces --listen-address=$SRV4 --listen-address=$SRV6 \
        --port=53 --user=root --group=root --pid-file= --log-facility=- --local-ttl=300 "${dns_args[@]}"
    bg_srv quic443 "$VPY" "$HERE/h3.py" server --host :: --port 443 \
        --cert "$WORK/cert.pem" --key "$WORK/key.pem"
    # port 22: an OpenSSH-like banner on the IPv4 address, a banner that is not SSH at all
    # on the IPv6 one (only the port can name that flow)
    bg_srv ssh22 /usr/bin/python3 -c '
import socket, sys, threading
def serve(fam, addr, banner):
    s = socket.socket(fam); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 22)); s.listen(8)
    while True:
        c, _ = s.accept(); c.settimeout(3)
        try:
            c.sendall(banner); c.recv(256)
        except OSError:
            pass
        c.close()
threading.Thread(target=serve, daemon=True,
                 args=(socket.AF_INET6, sys.argv[2], b"220 fake banner, not ssh\r\n")).start()
serve(socket.AF_INET, sys.argv[1], b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")' $SRV4 $SRV6
    wait_listen tcp 443; wait_listen tcp 8443; wait_listen tcp 80
    wait_listen udp 53; wait_listen udp 443; wait_listen tcp 22
}

# ---------------------------------------------------------------- capture
cap_start() {   # cap_start FILE -> pid in CAP_PID (or ALL_PID with 2nd arg "all")
    local file=$1 which=${2:-case} pid
    ip netns exec "$NS_CLI" tcpdump -i "$IF_CLI" -n -s 0 -U --immediate-mode -Z root -w "$file" 'tcp or udp' \
        </dev/null >/dev/null 2>"$file.err" &
    pid=$!
    for _ in $(seq 100); do
        grep -q 'listening on' "$file.err" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || die "tcpdump failed: $(cat "$file.err")"
        sleep 0.05
    done
    if [ "$which" = all ]; then ALL_PID=$pid; else CAP_PID=$pid; fi
}
cap_stop() {
    sleep 0.3   # last FIN/ACKs
    kill_pid "$CAP_PID" INT
    CAP_PID=""
}

CASES=()
declare -A CASE_DESC=() CASE_RC=()
cli() { timeout 15 ip netns exec "$NS_CLI" "$@"; }
curl_s() { cli curl -sS -o /dev/null --max-time 8 "$@"; }

# run_case NAME "DESCRIPTION" FUNCTION [ARGS...]
run_case() {
    local name=$1 desc=$2 rc=0; shift 2
    CASES+=("$name"); CASE_DESC[$name]=$desc
    cap_start "$WORK/pcap/$name.pcap"
    "$@" >"$WORK/logs/case-$name.log" 2>&1 || rc=$?
    cap_stop
    CASE_RC[$name]=$rc
    if [ $rc -ne 0 ]; then
        log "case $name: client failed (rc $rc): $(tail -n 2 "$WORK/logs/case-$name.log" | tr '\n' ' ')"
    else
        log "case $name: ok"
    fi
}

c_tls() { curl_s -k --resolve "$1:${2:-443}:$SRV4" "https://$1:${2:-443}/"; }
c_tls_smallmss() { curl_s -k --interface $CLI4_SMALLMSS --resolve "$1:443:$SRV4" "https://$1/"; }
BIG_HELLO_HOW=""
BIG_ALPN=h2,http/1.1
for _i in $(seq -w 1 12); do BIG_ALPN+=,x-ndpi-bench-padding-$_i-$(printf 'p%.0s' $(seq 140)); done
c_tls_big() {
    if [ "${BIG_HELLO_HOW#mlkem}" != "$BIG_HELLO_HOW" ]; then
        cli openssl s_client -connect $SRV4:443 -servername "$1" -groups X25519MLKEM768 -brief </dev/null
    else
        cli openssl s_client -connect $SRV4:443 -servername "$1" -alpn "$BIG_ALPN" -brief </dev/null
    fi
}
c_http() { curl_s -H "Host: $1" "http://$SRV4/"; }
c_dns() {   # dig A and AAAA, then plain HTTP to each answered address (no name on the wire)
    local a aaaa
    a=$(cli dig @$SRV4 "$1" A +short +tries=1 +time=3 | grep -E '^[0-9.]+$' | head -1)
    aaaa=$(cli dig @$SRV4 "$1" AAAA +short +tries=1 +time=3 | grep -E '^[0-9a-f:]+$' | head -1)
    echo "A=$a AAAA=$aaaa"
    [ -n "$a" ] && [ -n "$aaaa" ] || return 1
    curl_s "http://$a/"
    curl_s -g "http://[$aaaa]/"
}
c_quic() { local sni=$1; shift; cli "$VPY" "$HERE/h3.py" client --connect $SRV4 --port 443 --sni "$sni" "$@"; }
c_ssh() {   # c_ssh ADDR CLIENT_LINE
    cli /usr/bin/python3 -c '
import socket, sys
s = socket.create_connection((sys.argv[1], 22), timeout=5)
print(s.recv(256)); s.sendall(sys.argv[2].encode() + b"\r\n"); s.close()' "$1" "$2"
}

run_cases() {
    mkdir -p "$WORK/pcap"
    local n
    if openssl list -kem-algorithms 2>/dev/null | grep -qi mlkem; then
        BIG_HELLO_HOW="mlkem: openssl s_client -groups X25519MLKEM768"
    else
        BIG_HELLO_HOW="alpn: openssl $(openssl version | awk '{print $2}') has no ML-KEM (no X25519MLKEM768); openssl s_client -servername www.twitch.tv -alpn with 14 protocol names, ${#BIG_ALPN} bytes (h2, http/1.1, 12 x 164-byte padding names)"
    fi
    cap_start "$WORK/pcap/all.pcap" all
    for n in "${TLS_NAMES[@]}"; do
        run_case "tls-${n}" "curl -k https://$n/ (--resolve to $SRV4)" c_tls "$n"
    done
    run_case tls-bighello-www.twitch.tv "ClientHello over several TCP segments; $BIG_HELLO_HOW" \
        c_tls_big www.twitch.tv
    run_case tls-smallmss-www.twitch.tv "curl -k https://www.twitch.tv/ from $CLI4_SMALLMSS, server advertises MSS 100" \
        c_tls_smallmss www.twitch.tv
    run_case tls8443-www.spotify.com "curl -k https://www.spotify.com:8443/" c_tls www.spotify.com 8443
    run_case http-www.netflix.com "curl -H 'Host: www.netflix.com' http://$SRV4/" c_http www.netflix.com
    run_case http-example.org "curl -H 'Host: example.org' http://$SRV4/" c_http example.org
    run_case dns-www.youtube.com "dig A+AAAA www.youtube.com, then curl http://ADDR/ to both answers" \
        c_dns www.youtube.com
    run_case dns-web.whatsapp.com "dig A+AAAA web.whatsapp.com, then curl http://ADDR/ to both answers" \
        c_dns web.whatsapp.com
    run_case quic-www.youtube.com "aioquic HTTP/3 GET, SNI www.youtube.com" c_quic www.youtube.com
    run_case quic-www.facebook.com "aioquic HTTP/3 GET, SNI www.facebook.com" c_quic www.facebook.com
    run_case quic-bighello-www.netflix.com "aioquic HTTP/3, quantum_readiness_test (1200-byte transport parameter): ClientHello in 2 Initial packets" \
        c_quic www.netflix.com --big-hello
    run_case quic-bighello-snilate-www.tiktok.com "as quic-bighello, SNI extension moved after the transport parameters (extension order permuted, as Chrome does): SNI in the 2nd Initial packet" \
        c_quic www.tiktok.com --big-hello --sni-last
    run_case ssh-fake "TCP to $SRV4:22, fake OpenSSH banners both ways (python sockets, no sshd)" \
        c_ssh $SRV4 "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3"
    run_case ssh-port-only "TCP to [$SRV6]:22, banners that are not SSH (\"220 fake banner\", \"hello\")" \
        c_ssh $SRV6 "hello"
    sleep 0.3
    kill_pid "$ALL_PID" INT
    ALL_PID=""
}

# ---------------------------------------------------------------- analysis
GW_STATUS=""
probe_guardwire() {
    if [ ! -e "$GW" ]; then GW_STATUS="skipped: $GW not found"; return; fi
    if [ ! -x "$GW" ]; then GW_STATUS="skipped: $GW is not executable"; return; fi
    if ! timeout 10 "$GW" classify --help >"$WORK/logs/gw-probe.log" 2>&1; then
        GW_STATUS="skipped: $GW has no 'classify' verb ($(grep -m1 -iE 'error|unrecognized|unknown' "$WORK/logs/gw-probe.log" || head -n1 "$WORK/logs/gw-probe.log"))"
        return
    fi
    GW_STATUS=ok
}

analyse() {
    local c rc
    mkdir -p "$WORK/ndpi" "$WORK/gw"
    probe_guardwire
    [ "$GW_STATUS" = ok ] || log "guardwire $GW_STATUS"
    : >"$WORK/cases.tsv"
    for c in "${CASES[@]}" all; do
        ndpiReader -v 2 -i "$WORK/pcap/$c.pcap" >"$WORK/ndpi/$c.txt" 2>"$WORK/ndpi/$c.err" \
            || log "ndpiReader failed on $c.pcap (see $WORK/ndpi/$c.err)"
        if [ "$GW_STATUS" = ok ]; then
            rc=0
            timeout 30 "$GW" classify --json "$WORK/pcap/$c.pcap" >"$WORK/gw/$c.jsonl" 2>"$WORK/gw/$c.err" || rc=$?
            [ $rc -eq 0 ] || log "guardwire classify failed on $c.pcap (rc $rc): $(head -c 300 "$WORK/gw/$c.err")"
        fi
        [ "$c" = all ] && continue
        printf '%s\t%s\t%s\n' "$c" "${CASE_RC[$c]}" "${CASE_DESC[$c]}" >>"$WORK/cases.tsv"
    done
    mkdir -p "$OUT"
    "$VPY" "$HERE/report.py" --work "$WORK" --gw-status "$GW_STATUS" --gw "$GW" \
        --ndpi-version "$(dpkg-query -W -f='${Version}' libndpi-bin 2>/dev/null || echo '?')" \
        --openssl-version "$(openssl version | awk '{print $1" "$2}')" --big-hello "$BIG_HELLO_HOW" \
        --md "$OUT/ndpi-$STAMP.md" --json "$OUT/ndpi-$STAMP.json"
}

# ---------------------------------------------------------------- main
T0=$(date +%s)
ensure_deps
WORK=$(mktemp -d "/tmp/ndpi-agree.$STAMP.XXXX")
mkdir -p "$WORK/logs"
log "work dir $WORK"
setup_topology
start_servers
log "servers up (tls 443/8443, http 80, dns 53, h3 udp/443, ssh-ish 22)"
run_cases
analyse
log "report: $OUT/ndpi-$STAMP.md ($(( $(date +%s) - T0 )) s)"
