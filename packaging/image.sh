#!/usr/bin/env bash
# Builds guardwire's container image (the top-level Dockerfile) with buildah on
# a machine that cannot pull from a registry, and checks the result for real.
#
#   packaging/image.sh build [--src DIR]     # base images (cached), then buildah bud
#   packaging/image.sh check [--prefix P]    # the built image, mounted and run with chroot
#   packaging/image.sh all   [--src DIR] [--prefix P]
#   packaging/image.sh cleanup [--prefix P]  # what an interrupted check left (idempotent)
#
# build:
#   1. a Debian bookworm rootfs from debootstrap --variant=minbase, kept as a
#      tarball in $GW_IMAGE_CACHE and reused, imported as $BASE_TAG: the
#      Dockerfile's runtime base (its BASE_IMAGE);
#   2. $RUST_TAG, the build stage's base (RUST_IMAGE): the same rootfs plus gcc,
#      pkg-config, protobuf and this machine's Rust toolchain (rustc --print
#      sysroot), with the host's CA bundle so cargo reaches crates.io as the host does;
#   3. buildah bud --layers of a clean checkout of the repo's HEAD (or --src DIR);
#      cargo's registry and target/ are cache mounts, so a rebuild recompiles
#      only what changed.
# check: guardwire --version, ip -V, nft, the CNI plugin's VERSION, the image
#   config; then the image's guardwire is the daemon of a test-bed node
#   (testbed/node.sh up P --forwarder none): a pod pings the peer through it and
#   `guardwire stats` (the image's) answers; the node config of deploy/ rendered
#   by deploy's start.sh passes the image's `guardwire check`. Everything it
#   makes (node, mounts, buildah container) is removed afterwards, also on failure.
#
# Every step is bounded with timeout and prints how long it took. Caches live in
# $GW_IMAGE_CACHE (default /var/cache/guardwire-ci/image), never in the repo.
# Root only. Knobs: GW_IMAGE (default localhost/guardwire:dev), GW_DEBIAN_MIRROR,
# GW_IMAGE_BUILD_TIMEOUT (seconds for buildah bud, default 1800).
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
REPO_ROOT=$(dirname "$(dirname "$SELF")")
CACHE=${GW_IMAGE_CACHE:-/var/cache/guardwire-ci/image}
IMAGE=${GW_IMAGE:-localhost/guardwire:dev}
MIRROR=${GW_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
BASE_TAG=localhost/guardwire-ci/debian:bookworm-slim
ROOTFS_TAR=$CACHE/debian-$SUITE-minbase.tar.gz
BUILD_TIMEOUT=${GW_IMAGE_BUILD_TIMEOUT:-1800}
# buildah keeps RUN --mount=type=cache directories under $TMPDIR/buildah-cache-UID.
export TMPDIR=$CACHE/tmp
export BUILDAH_ISOLATION=chroot

log() { printf '[image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

rust_version() { rustc --version | awk '{print $2}'; }
rust_tag() { echo "localhost/guardwire-ci/rust:$(rust_version)-$SUITE"; }

image_exists() { buildah inspect --type image "$1" >/dev/null 2>&1; }

TIMINGS=()
STEP_PID=""
# SIGTERM/SIGINT: passed on to the running step (whose own traps clean up),
# then waited for.
on_signal() {
    if [[ -n $STEP_PID ]]; then
        kill -TERM "$STEP_PID" 2>/dev/null || true
        wait "$STEP_PID" 2>/dev/null || true
    fi
    exit "$1"
}
# step NAME SECONDS FUNCTION [ARGS...]: runs a function of this script in a
# child bash bounded by timeout, and prints how long it took.
step() {
    local name=$1 secs=$2 t0 t1 rc=0 took
    shift 2
    log "== $name (at most ${secs}s)"
    t0=$(date +%s%N)
    # In the background, so a signal to this script reaches the step (timeout
    # runs it in a process group of its own): see on_signal.
    timeout -k 10 "$secs" bash "$SELF" __fn "$@" &
    STEP_PID=$!
    wait "$STEP_PID" || rc=$?
    STEP_PID=""
    t1=$(date +%s%N)
    took=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
    TIMINGS+=("$name: ${took}s")
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then
        log "-- $name: timed out after ${took}s"
    else
        log "-- $name: ${took}s (exit $rc)"
    fi
    return "$rc"
}

print_timings() {
    local t
    log "timings:"
    for t in "${TIMINGS[@]}"; do log "  $t"; done
}

# ---------------------------------------------------------------- build steps

# The Debian rootfs tarball, made once by debootstrap.
fn_rootfs() {
    if [[ -s $ROOTFS_TAR ]]; then
        log "rootfs: reusing $ROOTFS_TAR"
        return 0
    fi
    command -v debootstrap >/dev/null || die "debootstrap not found (apt-get install debootstrap)"
    tmp=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    # debootstrap mounts proc and sys in the target while it runs.
    trap 'for m in proc sys dev/pts dev; do umount -l "$tmp/rootfs/$m" 2>/dev/null || true; done; rm -rf "$tmp"' EXIT
    log "debootstrap --variant=minbase $SUITE from $MIRROR"
    debootstrap --variant=minbase "$SUITE" "$tmp/rootfs" "$MIRROR" >"$tmp/debootstrap.log" 2>&1 || {
        tail -n 30 "$tmp/debootstrap.log" >&2
        die "debootstrap failed"
    }
    # Like the official slim image: the updates and security suites, no
    # package lists or downloaded packages, no docs.
    rm -f "$tmp/rootfs/etc/apt/sources.list"
    cat >"$tmp/rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: ${MIRROR}
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR%/debian}/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    # ...and what the official image's apt and dpkg settings keep out of
    # every later layer: downloaded packages, docs, man pages, translations.
    cat >"$tmp/rootfs/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
    echo 'Acquire::Languages "none";' >"$tmp/rootfs/etc/apt/apt.conf.d/docker-no-languages"
    cat >"$tmp/rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
path-exclude /usr/share/lintian/*
DPKG
    find "$tmp/rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    rm -rf "$tmp/rootfs/var/lib/apt/lists/"* "$tmp/rootfs/var/cache/apt/"*.bin \
        "$tmp/rootfs/var/cache/apt/archives/"*.deb "$tmp/rootfs/usr/share/info/"* \
        "$tmp/rootfs/usr/share/locale/"* "$tmp/rootfs/usr/share/man/"* "$tmp/rootfs/var/log/"*.log
    tar --numeric-owner -C "$tmp/rootfs" -czf "$ROOTFS_TAR.tmp" .
    mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
    log "rootfs: $ROOTFS_TAR ($(du -h "$ROOTFS_TAR" | cut -f1))"
}

# $BASE_TAG from the tarball.
fn_base_image() {
    if image_exists "$BASE_TAG" && [[ $(buildah inspect --type image --format \
        '{{index .OCIv1.Config.Labels "guardwire.rootfs"}}' "$BASE_TAG") == "$(stat -c %Y "$ROOTFS_TAR")" ]]; then
        log "base image: reusing $BASE_TAG"
        return 0
    fi
    ctr=$(buildah from --pull=never scratch)
    trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
    buildah add "$ctr" "$ROOTFS_TAR" / >/dev/null
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --cmd bash --os linux --arch amd64 \
        --label "guardwire.rootfs=$(stat -c %Y "$ROOTFS_TAR")" "$ctr"
    buildah commit -q "$ctr" "$BASE_TAG" >/dev/null
    log "base image: $BASE_TAG"
}

# The build stage's base: the rootfs, a C toolchain, protobuf, clang and libbpf's
# headers (the BPF program), this machine's Rust.
fn_rust_image() {
    local tag sysroot cargo d e envs=()
    tag=$(rust_tag)
    if image_exists "$tag" && [[ $(buildah inspect --type image --format \
        '{{index .OCIv1.Config.Labels "guardwire.base"}}' "$tag") == "$(buildah inspect --type image --format '{{.FromImageID}}' "$BASE_TAG")" ]]; then
        log "rust image: reusing $tag"
        return 0
    fi
    sysroot=$(rustc --print sysroot)
    cargo=$(rustup which cargo 2>/dev/null || command -v cargo)
    [[ -x $sysroot/bin/rustc && -x $cargo ]] || die "no Rust toolchain (rustc --print sysroot: $sysroot, cargo: $cargo)"
    ctr=$(buildah from --pull=never "$BASE_TAG")
    trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
    buildah run "$ctr" -- sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends gcc libc6-dev pkg-config protobuf-compiler libprotobuf-dev ca-certificates \
        clang libbpf-dev linux-libc-dev \
        >/dev/null && rm -rf /var/lib/apt/lists/*'
    # The toolchain as rustup installed it, without its docs.
    for d in bin lib libexec etc; do
        [[ -e $sysroot/$d ]] && buildah copy -q "$ctr" "$sysroot/$d" "/usr/local/rust/$d" >/dev/null
    done
    [[ $cargo == "$sysroot/bin/cargo" ]] || buildah copy -q "$ctr" "$cargo" /usr/local/rust/bin/cargo >/dev/null
    # Network: cargo inside must reach crates.io as it does here. This host's
    # trust store (it may hold the CA of a TLS-inspecting proxy), its cargo
    # config and its CARGO_HTTP_*/CARGO_NET_*/CARGO_REGISTRIES_* settings come
    # along; proxy variables are passed to RUN by buildah itself.
    buildah copy -q "$ctr" /etc/ssl/certs/ca-certificates.crt /usr/local/share/guardwire-ci/host-ca-bundle.crt >/dev/null
    envs+=(--env CARGO_HTTP_CAINFO=/usr/local/share/guardwire-ci/host-ca-bundle.crt)
    if [[ -f ${CARGO_HOME:-$HOME/.cargo}/config.toml ]]; then
        log "rust image: with ${CARGO_HOME:-$HOME/.cargo}/config.toml"
        buildah copy -q "$ctr" "${CARGO_HOME:-$HOME/.cargo}/config.toml" /usr/local/cargo/config.toml >/dev/null
    fi
    while IFS= read -r e; do
        [[ -n $e ]] && envs+=(--env "$e")
    done < <(env | grep -E '^CARGO_(HTTP|NET|REGISTRIES|REGISTRY)_' | grep -v '^CARGO_HTTP_CAINFO=' || true)
    buildah config --env CARGO_HOME=/usr/local/cargo --env RUSTUP_HOME=/usr/local/rust \
        --env PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env "RUST_VERSION=$(rust_version)" "${envs[@]}" \
        --label "guardwire.base=$(buildah inspect --type image --format '{{.FromImageID}}' "$BASE_TAG")" "$ctr"
    buildah run "$ctr" -- sh -c 'mkdir -p /usr/local/cargo/bin && rustc --version && cargo --version && protoc --version && cc --version | head -n1' >&2
    buildah commit -q "$ctr" "$tag" >/dev/null
    log "rust image: $tag"
}

# A clean checkout of the repo's HEAD (the working tree may be half edited).
fn_source() {
    local src=$CACHE/src head
    head=$(git -C "$REPO_ROOT" rev-parse HEAD)
    if [[ -n $(git -C "$REPO_ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
        log "note: $REPO_ROOT has uncommitted changes; the image is built from its HEAD $head"
    fi
    if [[ ! -d $src/.git ]]; then
        rm -rf "$src"
        git clone -q --no-checkout "$REPO_ROOT" "$src"
    fi
    # Files that did not change keep their mtime, so cargo's cache stays warm.
    git -C "$src" fetch -q "$REPO_ROOT" HEAD
    git -C "$src" checkout -q -f --detach "$head"
    git -C "$src" clean -q -fdx
    log "source: $src at $(git -C "$src" log -1 --format='%h %s' | cut -c1-72)"
}

fn_bud() {
    local src=$1
    [[ -f $src/Dockerfile ]] || die "no Dockerfile in $src"
    buildah bud --isolation chroot --layers --pull=never \
        --build-arg "RUST_IMAGE=$(rust_tag)" --build-arg "BASE_IMAGE=$BASE_TAG" \
        -f "$src/Dockerfile" -t "$IMAGE" "$src"
    log "image: $IMAGE $(buildah inspect --type image --format '{{.FromImageID}}' "$IMAGE" | cut -c1-12)"
    # Untagged images of earlier builds go after two days, so the store does
    # not grow without bound; recent ones keep the layer cache warm.
    local cutoff id created
    cutoff=$(($(date +%s) - 2 * 86400))
    buildah images --filter dangling=true --format '{{.ID}} {{.Created}}' | while read -r id created; do
        if [[ $created =~ ^[0-9]+$ ]] && ((created < cutoff)); then
            buildah rmi "$id" >/dev/null 2>&1 || true
        fi
    done
}

cmd_build() {
    local src=""
    while [[ $# -gt 0 ]]; do
        case $1 in
        --src) src=$(readlink -f "${2:?--src DIR}"); shift 2 ;;
        *) die "build: unknown argument $1" ;;
        esac
    done
    command -v buildah >/dev/null || die "buildah not found (apt-get install buildah)"
    mkdir -p "$CACHE" "$TMPDIR"
    local ok=0
    {
        step "rootfs (debootstrap, cached)" 900 fn_rootfs &&
            step "base image $BASE_TAG" 300 fn_base_image &&
            step "rust build image" 900 fn_rust_image &&
            if [[ -z $src ]]; then
                src=$CACHE/src
                step "source checkout" 120 fn_source
            fi &&
            step "buildah bud $IMAGE" "$BUILD_TIMEOUT" fn_bud "$src" &&
            ok=1
    } || true
    print_timings
    [[ $ok == 1 ]] || die "build failed"
}

# ---------------------------------------------------------------- check

CHECK_PREFIX=tpk9
ctr_name() { echo "guardwire-check-$CHECK_PREFIX"; }

# kill_netns_procs NSFILE: ends every process in that network namespace.
kill_netns_procs() {
    local ino p pids=() i alive
    ino=$(stat -L -c %i "$1" 2>/dev/null) || return 0
    [[ $ino != "$(stat -L -c %i /proc/self/ns/net)" ]] || return 0
    for p in /proc/[0-9]*; do
        [[ $(stat -L -c %i "$p/ns/net" 2>/dev/null) == "$ino" ]] && pids+=("${p#/proc/}")
    done
    ((${#pids[@]})) || return 0
    log "stopping ${pids[*]} (left in $1)"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do
        alive=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [[ $alive == 1 ]] || return 0
        sleep 0.1
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
}

# Unmounts everything under the buildah container's mount point, removes the
# container and the test-bed node. Idempotent.
cmd_cleanup() {
    parse_prefix "$@"
    local name mnt m
    name=$(ctr_name)
    if buildah inspect --type container "$name" >/dev/null 2>&1; then
        mnt=$(buildah inspect --type container --format '{{.MountPoint}}' "$name" 2>/dev/null || true)
        if [[ -n $mnt ]]; then
            # The sec ns deploy's start.sh made is pinned in the image's root
            # only: stop what runs in it.
            kill_netns_procs "$mnt/run/netns/$CHECK_PREFIX-gsec"
            # Deepest first.
            # shellcheck disable=SC2013 # mount points have no spaces here
            for m in $(awk -v p="$mnt/" 'index($2, p) == 1 { print $2 }' /proc/self/mounts | sort -r); do
                umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "warning: cannot unmount $m"
            done
        fi
        buildah umount "$name" >/dev/null 2>&1 || true
        buildah rm "$name" >/dev/null 2>&1 || log "warning: cannot remove buildah container $name"
    fi
    # The namespace deploy's start.sh made for the check.
    ip netns del "$CHECK_PREFIX-gsec" 2>/dev/null || true
    bash "$REPO_ROOT/testbed/node.sh" down "$CHECK_PREFIX" >/dev/null 2>&1 || true
}

parse_prefix() {
    while [[ $# -gt 0 ]]; do
        case $1 in
        --prefix) CHECK_PREFIX=${2:?--prefix P}; shift 2 ;;
        *) die "unknown argument $1" ;;
        esac
    done
    [[ $CHECK_PREFIX =~ ^t[a-z]{2}[0-9]+$ ]] || die "--prefix must match ^t[a-z]{2}[0-9]+\$ (CI cleans those up), got $CHECK_PREFIX"
}

MNT=""
# in_image CMD...: runs CMD inside the image's root (chroot), bounded.
in_image() { timeout -k 5 60 chroot "$MNT" "$@"; }

fn_check_static() {
    local out
    out=$(in_image /usr/local/bin/guardwire --version)
    log "guardwire --version: $out"
    [[ $out == guardwire\ * ]] || die "unexpected --version output: $out"
    out=$(in_image ip -V)
    log "ip -V: $out"
    [[ $out == *iproute2* ]] || die "ip -V: $out"
    out=$(in_image nft --version)
    log "nft --version: $out"
    out=$(in_image env -i CNI_COMMAND=VERSION /opt/cni/bin/guardwire-cni </dev/null)
    log "guardwire-cni VERSION: $out"
    [[ $out == *supportedVersions*1.0.0* ]] || die "guardwire-cni VERSION: $out"
    cmp "$MNT/usr/local/bin/guardwire-cni" "$MNT/opt/cni/bin/guardwire-cni" ||
        die "/opt/cni/bin/guardwire-cni differs from /usr/local/bin/guardwire-cni"
    [[ -s $MNT/etc/ssl/certs/ca-certificates.crt ]] || die "no CA bundle in the image"
    out=$(buildah inspect --type image --format '{{.OCIv1.Config.Entrypoint}}' "$IMAGE")
    [[ $out == "[/usr/local/bin/guardwire]" ]] || die "entrypoint is $out"
    # Nothing of the build stage: no compiler, no cargo, no source.
    [[ ! -e $MNT/usr/local/rust && ! -e $MNT/src && ! -e $MNT/usr/bin/gcc ]] ||
        die "build tools or source left in the runtime image"
    log "image size: $(buildah images --format '{{.Size}}' "$IMAGE" | head -n1)"
}

# bind SRC DST: a recursive bind that never propagates back (umount -R of the
# copy must not unmount the host's namespaces).
bind() { mkdir -p "$2" && mount --rbind --make-rslave "$1" "$2"; }

# configmap_key FILE KEY: the literal block `  KEY: |` of a ConfigMap's data in
# FILE (the deploy files keep their scripts and configs in that form).
configmap_key() {
    awk -v key="  $2: |" '$0 == key { on = 1; next }
        on && /^    / { print substr($0, 5); next }
        on && /^[[:space:]]*$/ { print ""; next }
        on { exit }' "$1"
}

# The deploy config rendered by deploy's own start.sh, checked by the image's guardwire.
fn_check_deploy_config() {
    local dir=$1 yaml=$REPO_ROOT/deploy/10-config.yaml
    configmap_key "$yaml" node.toml.in >"$dir/node.toml.in"
    configmap_key "$yaml" start.sh >"$dir/start.sh"
    [[ -s $dir/node.toml.in && -s $dir/start.sh ]] || die "no node.toml.in/start.sh in $yaml"
    NODE_NAME=node-1.example NODE_IP=192.0.2.10 ETCD_ENDPOINTS="https://etcd-0:2379, https://etcd-1:2379" \
        sh "$dir/start.sh" render "$dir/node.toml.in" "$dir/node.toml"
    in_image /usr/local/bin/guardwire check --config "$dir/node.toml" >&2 ||
        die "the deploy node config (rendered: $dir/node.toml) fails the image's guardwire check"
    log "deploy node config: passes guardwire check"
}

# The agent's own start (deploy's start.sh run, from the image, as the
# DaemonSet runs it) in the node's host ns: it makes a sec ns and the
# management link, NAT, renders the config (etcd: the peer, where none
# listens) and runs guardwire. Checked: the link, the NAT table, the
# masqueraded way out, the API reached from pod1 at NODE_IP:7443 (through
# the first daemon, then the DNAT), stats, and a clean stop on SIGTERM.
fn_check_agent_start() {
    local dir=$1 sec=$CHECK_PREFIX-gsec pid i out sock rc=0
    local hostnet=/run/netns/$NS_HOST
    sock=$MNT/run/guardwire/guardwire.sock
    # Throwaway etcd client credentials (the agent loads them; no etcd answers).
    (
        cd "$dir"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
            -subj /CN=guardwire-check-ca -keyout ca.key -out ca.crt
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -subj /CN=guardwire-node -keyout tls.key -out tls.csr
        openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -out tls.crt
    ) >/dev/null 2>&1 || die "openssl: cannot make the check's certificates"
    # What the DaemonSet mounts.
    mkdir -p "$MNT/etc/guardwire/etcd" "$MNT/etc/guardwire/api" "$MNT/run/guardwire" "$MNT/var/log/guardwire"
    cp "$dir/ca.crt" "$dir/tls.crt" "$dir/tls.key" "$MNT/etc/guardwire/etcd/"
    openssl rand -hex 16 >"$MNT/etc/guardwire/api/viewer.token"
    chmod 0400 "$MNT/etc/guardwire/api/viewer.token" "$MNT/etc/guardwire/etcd/tls.key"
    timeout -k 5 300 nsenter --net="$hostnet" chroot "$MNT" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        NODE_NAME="$CHECK_PREFIX-node" NODE_IP="$POD_GW" ETCD_ENDPOINTS="https://$PEER_IP:2379" \
        GW_SEC_NS="$sec" GW_HOST_NETNS="$dir/hostns" GW_CONFIG_IN="$dir/node.toml.in" GW_CONFIG="$dir/agent.toml" \
        sh "$dir/start.sh" run </dev/null >"$dir/agent.log" 2>&1 &
    pid=$!
    for ((i = 0; i < 100; i++)); do
        [[ -S $sock ]] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    [[ -S $sock ]] || { cat "$dir/agent.log" >&2; die "deploy's start.sh: no control socket within 10 s"; }
    log "deploy's start.sh runs guardwire in $sec"
    sleep 1
    grep -iE 'cluster|etcd|store' "$dir/agent.log" | head -n 3 | sed 's/^/[image]   agent log: /' >&2 || true
    out=$(nsenter --net="$MNT/run/netns/$sec" ip -4 -o addr show mgmt0)
    [[ $out == *169.254.77.2/30* ]] || die "sec ns mgmt0: $out"
    out=$(nsenter --net="$hostnet" chroot "$MNT" nft list table ip guardwire)
    [[ $out == *masquerade* && $out == *"dnat to 169.254.77.2:7443"* ]] || die "nft table guardwire: $out"
    # Out of the sec ns, masqueraded as the node: the peer sees the host's address.
    # shellcheck disable=SC2016 # socat's shell expands it
    ip netns exec "$NS_PEER" timeout 10 socat -T 5 TCP-LISTEN:9911,reuseaddr SYSTEM:'echo $SOCAT_PEERADDR' &
    sleep 0.3
    out=$(timeout 10 nsenter --net="$MNT/run/netns/$sec" socat -T 5 - TCP:"$PEER_IP":9911 </dev/null 2>&1) || true
    wait $! 2>/dev/null || true
    [[ $out == "$PEER_GW" ]] || die "from the sec ns to $PEER_IP: the peer saw '$out', not the node's $PEER_GW"
    log "management link: out of the sec ns masqueraded as $PEER_GW"
    # In: pod1 -> NODE_IP:7443 (pod1's traffic crosses the first daemon) -> DNAT -> the API.
    out=$(ip netns exec "$POD_NS_1" curl -s -m 5 -o /dev/null -w '%{http_code}' \
        -H "Authorization: Bearer $(cat "$MNT/etc/guardwire/api/viewer.token")" "http://$POD_GW:7443/api/v1/health") || true
    [[ $out == 200 ]] || { cat "$dir/agent.log" >&2; die "pod1 -> http://$POD_GW:7443/api/v1/health: HTTP '$out'"; }
    log "node API at NODE_IP:7443 answers a pod through the DNAT: 200"
    in_image /usr/local/bin/guardwire stats --socket /run/guardwire/guardwire.sock >/dev/null ||
        die "guardwire stats on the agent's socket"
    kill -TERM "$pid"
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && die "start.sh did not end within 10 s of SIGTERM"
    wait "$pid" || rc=$?
    grep -q "guardwire exited" "$dir/agent.log" || { cat "$dir/agent.log" >&2; die "start.sh did not see guardwire exit"; }
    log "deploy's start.sh: stops on SIGTERM (exit $rc)"
}

cmd_check() {
    parse_prefix "$@"
    command -v buildah >/dev/null || die "buildah not found"
    image_exists "$IMAGE" || die "no image $IMAGE: run '$0 build' first"
    [[ $(id -u) -eq 0 ]] || die "must run as root"
    local t0 name gw_pid="" i env_out dir sock out
    t0=$(date +%s%N)
    cmd_cleanup --prefix "$CHECK_PREFIX"
    trap 'rc=$?; set +e; if [[ -n $gw_pid ]]; then kill -TERM "$gw_pid" 2>/dev/null; wait "$gw_pid" 2>/dev/null; fi; cmd_cleanup --prefix "$CHECK_PREFIX"; exit $rc' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    name=$(ctr_name)
    buildah from --pull=never --name "$name" "$IMAGE" >/dev/null
    MNT=$(buildah mount "$name")
    log "image $IMAGE mounted at $MNT"
    fn_check_static

    log "test-bed node $CHECK_PREFIX (--forwarder none): the image's guardwire is its daemon"
    env_out=$(timeout -k 5 120 bash "$REPO_ROOT/testbed/node.sh" up "$CHECK_PREFIX" --pods 1 --forwarder none)
    local STATE NS_SEC NS_HOST NS_PEER POD_NS_1 PEER_IP PEER_GW POD_GW POD_IP_1 POD_MAC_1
    eval "$env_out"
    dir=$STATE/pkg
    mkdir -p "$dir"
    sock=$dir/gw.sock
    cat >"$dir/gw.toml" <<EOF
[node]
name = "pkgcheck"
control_socket = "$sock"
state_dir = "$dir/state"
host_netns = "/var/run/netns/$NS_HOST"

[datapath]
workers = 1

[[workload]]
name = "pod1"
kind = "pod"
workload_port = "wp-pod1"
uplink_port = "up-pod1"
macs = ["$POD_MAC_1"]
ips = ["$POD_IP_1"]
EOF
    # The image's root needs /proc (sysctls, the host netns path), /dev, the
    # named namespaces and the node's state dir at the same paths.
    mount -t proc proc "$MNT/proc"
    bind /dev "$MNT/dev"
    bind /run/netns "$MNT/run/netns"
    bind "$STATE" "$MNT$STATE"
    fn_check_deploy_config "$dir"
    # sysfs of the sec ns, mounted in the private mount namespace of
    # `ip netns exec` (gone with it).
    # shellcheck disable=SC2016 # expanded by that sh
    timeout -k 5 300 ip netns exec "$NS_SEC" sh -c 'mount -t sysfs sysfs "$1/sys" && exec chroot "$1" env NO_COLOR=1 /usr/local/bin/guardwire run --config "$2"' \
        sh "$MNT" "$dir/gw.toml" </dev/null >"$dir/gw.log" 2>&1 &
    gw_pid=$!
    for ((i = 0; i < 100; i++)); do
        [[ -S $sock ]] && break
        kill -0 "$gw_pid" 2>/dev/null || break
        sleep 0.1
    done
    [[ -S $sock ]] || { cat "$dir/gw.log" >&2; die "the image's guardwire did not open $sock within 10 s"; }
    log "the image's guardwire runs in $NS_SEC (pid $gw_pid)"
    out=$(timeout 30 ip netns exec "$POD_NS_1" ping -c 5 -i 0.2 -W 2 "$PEER_IP" 2>&1) || true
    [[ $out == *" 5 received"* ]] || { cat "$dir/gw.log" >&2; die "pod1 -> $PEER_IP through the image's guardwire: $out"; }
    log "pod1 pings $PEER_IP through it: 5 of 5"
    out=$(in_image /usr/local/bin/guardwire stats --socket "$sock" --json)
    python3 -c '
import json, sys
s = json.loads(sys.argv[1])
p = {x["port"]: x for x in s["ports"]}
assert p["wp-pod1"]["rx_frames"] >= 5 and p["up-pod1"]["rx_frames"] >= 5, p
print("guardwire stats: wp-pod1 rx %d, up-pod1 rx %d frames" % (p["wp-pod1"]["rx_frames"], p["up-pod1"]["rx_frames"]))
' "$out" >&2 || die "guardwire stats: $out"
    fn_check_agent_start "$dir"
    kill -TERM "$gw_pid"
    wait "$gw_pid" || true
    gw_pid=""
    trap - EXIT INT TERM
    cmd_cleanup --prefix "$CHECK_PREFIX"
    log "check passed in $(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')s"
}

main() {
    [[ $(id -u) -eq 0 ]] || die "run as root (buildah, chroot, namespaces)"
    local cmd=${1:-}
    shift || true
    [[ $cmd == __fn ]] || { trap 'on_signal 143' TERM; trap 'on_signal 130' INT; }
    case $cmd in
    __fn) "$@" ;;
    build) cmd_build "$@" ;;
    check) step "check" 600 cmd_check "$@"; print_timings ;;
    all)
        local b=() c=()
        while [[ $# -gt 0 ]]; do
            case $1 in
            --src) b+=("$1" "$2"); shift 2 ;;
            --prefix) c+=("$1" "$2"); shift 2 ;;
            *) die "unknown argument $1" ;;
            esac
        done
        cmd_build "${b[@]}"
        step "check" 600 cmd_check "${c[@]}"
        print_timings
        ;;
    cleanup) cmd_cleanup "$@" ;;
    *)
        sed -n '2,8p' "$SELF" >&2
        exit 2
        ;;
    esac
}

main "$@"
