#!/usr/bin/env bash
# Build the guest for the real-VM test bed: a Debian 6.1 kernel and a busybox
# initramfs that brings up virtio-net, sets the IP from the kernel command line
# (gw.ip=CIDR gw.gw=IP), prints GUEST-READY on the serial console and serves
#   - an echo server on TCP 5000 (nc -ll -e /bin/cat)
#   - HTTP on port 80: /index.html ("guardwire-guest") and /blob (1 MiB, fixed bytes)
#
#   build-guest.sh [--force]
#
# Artefacts go to ${GW_QEMU_CACHE:-/var/cache/guardwire-qemu} (never into the repo):
#   vmlinux (uncompressed, booted by QEMU's PVH entry: ~6 s faster under TCG than
#   vmlinuz, whose decompression and loading take ~6.5 s)  vmlinuz  initrd.gz
#   blob  blob.sha256 (hex only)  kernel.version  inputs
# Idempotent: nothing is done when `inputs` matches (kernel package + version,
# busybox binary, this script). GW_QEMU_KERNEL_PKG=linux-image-6.1.0-NN-amd64 pins
# the kernel; by default the newest linux-image-6.1.0-NN-amd64 apt knows is used.
set -euo pipefail

CACHE=${GW_QEMU_CACHE:-/var/cache/guardwire-qemu}
SELF=$(readlink -f "${BASH_SOURCE[0]}")
FORCE=0
[[ ${1:-} == --force ]] && FORCE=1
[[ $# -eq 0 || $FORCE == 1 ]] || { echo "usage: build-guest.sh [--force]" >&2; exit 2; }

# Modules for virtio-net; their dependencies are added from modules.dep.
ROOT_MODULES=(virtio_pci virtio_net)
BLOB_SIZE=1048576

log() { echo "build-guest: $*" >&2; }
die() { log "error: $*"; exit 1; }
[[ $(id -u) == 0 ]] || die "must run as root (apt-get, device nodes)"

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock -w 600 9 || die "another build holds $CACHE/.lock"

APT_UPDATED=0
apt_update_once() {
    if [[ $APT_UPDATED == 0 ]]; then
        log "apt-get update"
        timeout 300 apt-get update -qq >&2 || die "apt-get update failed"
        APT_UPDATED=1
    fi
}

# 1. Host tools.
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[[ $(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null) == "install ok installed" ]] \
    || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
command -v depmod >/dev/null || need+=(kmod)
command -v xz >/dev/null || need+=(xz-utils)
if ((${#need[@]})); then
    apt_update_once
    log "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends \
        "${need[@]}" >&2 || die "apt-get install ${need[*]} failed"
fi
BUSYBOX=/bin/busybox

# 2. Which kernel.
newest_kernel() {
    apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' 2>/dev/null \
        | awk '{print $1}' | sort -V | tail -n1
}
KPKG=${GW_QEMU_KERNEL_PKG:-$(newest_kernel)}
if [[ -z $KPKG ]]; then
    if [[ -s $CACHE/vmlinuz && -s $CACHE/initrd.gz && -s $CACHE/inputs && $FORCE == 0 ]]; then
        log "apt knows no linux-image-6.1.0-*-amd64 (lists empty?); keeping the cached guest"
        exit 0
    fi
    apt_update_once
    KPKG=$(newest_kernel)
    [[ -n $KPKG ]] || die "no linux-image-6.1.0-NN-amd64 package in apt"
fi
KVER_PKG=$(apt-cache policy "$KPKG" 2>/dev/null | awk '/Candidate:/ {print $2}')
[[ -n $KVER_PKG && $KVER_PKG != "(none)" ]] || die "apt has no candidate for $KPKG"
KVER=${KPKG#linux-image-}     # 6.1.0-NN-amd64, the module directory name

INPUTS="kernel=$KPKG=$KVER_PKG busybox=$(sha256sum "$BUSYBOX" | cut -c1-64) script=$(sha256sum "$SELF" | cut -c1-64)"
if [[ $FORCE == 0 && -s $CACHE/vmlinuz && -s $CACHE/initrd.gz && -s $CACHE/blob.sha256 \
      && -s $CACHE/inputs && $(<"$CACHE/inputs") == "$INPUTS" ]]; then
    log "up to date ($KPKG $KVER_PKG) in $CACHE"
    exit 0
fi
log "building guest: $KPKG $KVER_PKG into $CACHE"

WORK=$(mktemp -d "$CACHE/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# 3. Kernel package (the .deb is kept for rebuilds).
DEB_DIR=$CACHE/debs
mkdir -p "$DEB_DIR"
deb=$(ls "$DEB_DIR/${KPKG}_${KVER_PKG//:/%3a}_"*.deb 2>/dev/null | head -n1 || true)
if [[ -z $deb ]]; then
    log "apt-get download $KPKG=$KVER_PKG"
    if ! (cd "$WORK" && timeout 600 apt-get download -q -o APT::Sandbox::User=root "$KPKG=$KVER_PKG" >&2); then
        apt_update_once
        (cd "$WORK" && timeout 600 apt-get download -q -o APT::Sandbox::User=root "$KPKG=$KVER_PKG" >&2) || die "apt-get download $KPKG failed"
    fi
    rm -f "$DEB_DIR/${KPKG}_"*.deb
    mv "$WORK"/"${KPKG}"_*.deb "$DEB_DIR/"
    deb=$(ls "$DEB_DIR/${KPKG}_"*.deb | head -n1)
fi
log "extracting $(basename "$deb")"
KROOT=$WORK/kernel
dpkg -x "$deb" "$KROOT"
[[ -s $KROOT/boot/vmlinuz-$KVER ]] || die "no boot/vmlinuz-$KVER in $deb"
MODDIR=$KROOT/lib/modules/$KVER
[[ -d $MODDIR ]] || die "no lib/modules/$KVER in $deb"
depmod -b "$KROOT" "$KVER"

# 4. Module load order from modules.dep: dependencies first, each module once.
declare -A DEPS=() SEEN=()
while IFS= read -r line; do
    mod=${line%%:*}
    DEPS[$(basename "${mod%%.ko*}" | tr - _)]="$mod:${line#*:}"
done <"$MODDIR/modules.dep"
ORDER=()   # relative paths under lib/modules/KVER
add_module() {
    local name=$1 entry path dep
    [[ -n ${SEEN[$name]:-} ]] && return 0
    SEEN[$name]=1
    entry=${DEPS[$name]:-}
    if [[ -z $entry ]]; then
        grep -q "/$name.ko" "$MODDIR/modules.builtin" 2>/dev/null && return 0
        die "module $name is neither in modules.dep nor built in"
    fi
    path=${entry%%:*}
    # modules.dep lists a module's dependencies so that the last must load first.
    local deps=(${entry#*:}) i
    for ((i = ${#deps[@]} - 1; i >= 0; i--)); do
        dep=$(basename "${deps[i]%%.ko*}" | tr - _)
        add_module "$dep"
    done
    ORDER+=("$path")
}
for m in "${ROOT_MODULES[@]}"; do add_module "$m"; done
log "module order: $(for p in "${ORDER[@]}"; do basename "${p%%.ko*}"; done | tr '\n' ' ')"

# 5. Initramfs tree.
R=$WORK/root
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,etc,www,lib/modules}
cp "$BUSYBOX" "$R/bin/busybox"
for applet in $("$BUSYBOX" --list-full); do
    [[ -e $R/$applet ]] || ln -s /bin/busybox "$R/$applet"
done
mknod -m 600 "$R/dev/console" c 5 1
mknod -m 666 "$R/dev/null" c 1 3
: >"$R/etc/modules.order"
for p in "${ORDER[@]}"; do
    name=$(basename "${p%%.ko*}")
    case $p in
        *.ko.xz)  xz -dc "$MODDIR/$p"   >"$R/lib/modules/$name.ko" 2>/dev/null \
                      || "$BUSYBOX" xz -dc "$MODDIR/$p" >"$R/lib/modules/$name.ko" ;;
        *.ko.zst) zstd -qdc "$MODDIR/$p" >"$R/lib/modules/$name.ko" ;;
        *.ko.gz)  gzip -dc "$MODDIR/$p" >"$R/lib/modules/$name.ko" ;;
        *.ko)     cp "$MODDIR/$p" "$R/lib/modules/$name.ko" ;;
        *) die "unknown module format: $p" ;;
    esac
    echo "$name" >>"$R/etc/modules.order"
done

echo guardwire-guest >"$R/www/index.html"
# 1 MiB of fixed pseudo-random bytes (xorshift32, perl-base is always there).
perl -e 'my $x = 0x9e3779b9; my $o = "";
         for (1 .. $ARGV[0] / 4) { $x ^= ($x << 13) & 0xffffffff; $x ^= $x >> 17;
                                   $x ^= ($x << 5) & 0xffffffff; $o .= pack("N", $x); }
         print $o' "$BLOB_SIZE" >"$R/www/blob"
[[ $(stat -c %s "$R/www/blob") == "$BLOB_SIZE" ]] || die "blob has the wrong size"

cat >"$R/init" <<'EOF'
#!/bin/sh
# guardwire test guest: PID 1 sets up the network, then becomes busybox init.
mount -t devtmpfs dev /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sys /sys
fail() { echo "GUEST-ERROR: $*"; exec /bin/sh; }
for m in $(cat /etc/modules.order); do
    insmod /lib/modules/$m.ko || fail "insmod $m"
done
IP= GW=
for w in $(cat /proc/cmdline); do
    case $w in
        gw.ip=*) IP=${w#gw.ip=} ;;
        gw.gw=*) GW=${w#gw.gw=} ;;
    esac
done
i=0
while [ ! -e /sys/class/net/eth0 ]; do
    i=$((i + 1)); [ $i -gt 100 ] && fail "no eth0 after 10 s"
    usleep 100000
done
ip link set lo up
ip link set eth0 up || fail "eth0 up"
if [ -n "$IP" ]; then ip addr add "$IP" dev eth0 || fail "ip addr add $IP"; fi
if [ -n "$GW" ]; then ip route add default via "$GW" || fail "default route via $GW"; fi
hostname guardwire-guest
exec /sbin/init
EOF
chmod 755 "$R/init"

cat >"$R/etc/inittab" <<'EOF'
::respawn:/usr/bin/nc -ll -p 5000 -e /bin/cat
::respawn:/usr/sbin/httpd -f -p 80 -h /www
::once:/etc/ready
EOF
cat >"$R/etc/ready" <<'EOF'
#!/bin/sh
# GUEST-READY once both servers listen (max 10 s).
i=0
while [ $i -lt 100 ]; do
    l=$(netstat -ltn 2>/dev/null)
    case $l in *:5000\ *) case $l in *:80\ *) break ;; esac ;; esac
    i=$((i + 1)); usleep 100000
done
set -- $(cat /proc/uptime)
echo "GUEST-READY ip=$(ip -4 -o addr show dev eth0 | awk '{print $4}') mac=$(cat /sys/class/net/eth0/address) uptime=$1"
EOF
chmod 755 "$R/etc/ready"

# Reproducible archive: sorted names, fixed times.
find "$R" -exec touch -h -d @0 {} +
(cd "$R" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) \
    | gzip -9n >"$WORK/initrd.gz"

# 6. vmlinux for PVH boot: the xz payload of the bzImage, if it is an ELF with a
# Xen PHYS32_ENTRY note (type 18). Without it run-vm.sh falls back to vmlinuz.
cp "$KROOT/boot/vmlinuz-$KVER" "$WORK/vmlinuz"
xzoff=$(perl -0777 -ne 'print index($_, "\xfd7zXZ\x00")' "$WORK/vmlinuz")
if ((xzoff > 0)) && tail -c +$((xzoff + 1)) "$WORK/vmlinuz" >"$WORK/payload.xz" \
    && xz -dc --single-stream "$WORK/payload.xz" >"$WORK/vmlinux" 2>/dev/null \
    && perl -0777 -ne 'exit !(/\A\x7fELF/ && /\x04\0\0\0[\x04\x08]\0\0\0\x12\0\0\0Xen\0/)' "$WORK/vmlinux"; then
    log "vmlinux: $(stat -c %s "$WORK/vmlinux") B, PVH entry present"
else
    log "warning: could not extract a PVH-bootable vmlinux; guests will boot vmlinuz (slower)"
    rm -f "$WORK/vmlinux"
fi

# 7. Publish (each file replaced atomically; `inputs` last).
cp "$R/www/blob" "$WORK/blob"
sha256sum "$WORK/blob" | cut -c1-64 >"$WORK/blob.sha256"
echo "$KVER $KPKG=$KVER_PKG" >"$WORK/kernel.version"
echo "$INPUTS" >"$WORK/inputs.new"
rm -f "$CACHE/inputs" "$CACHE/vmlinux"
[[ -e $WORK/vmlinux ]] && mv -f "$WORK/vmlinux" "$CACHE/vmlinux"
for f in vmlinuz initrd.gz blob blob.sha256 kernel.version; do
    mv -f "$WORK/$f" "$CACHE/$f"
done
mv -f "$WORK/inputs.new" "$CACHE/inputs"
log "done: vmlinuz $(stat -c %s "$CACHE/vmlinuz") B, initrd.gz $(stat -c %s "$CACHE/initrd.gz") B, blob sha256 $(<"$CACHE/blob.sha256")"
