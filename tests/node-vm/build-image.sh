#!/usr/bin/env bash
# Builds, once, the disk image of the node VM: a Debian bookworm root
# filesystem made with debootstrap (systemd as PID 1, dbus, udev, containerd,
# runc, the CNI plugins, criu, busybox-static, ...), turned into an ext4 image
# with `mkfs.ext4 -d` (no loop mount), plus the small initramfs that loads the
# virtio modules and switch_roots into it, and Debian's cloud kernel.
#
#   tests/node-vm/build-image.sh [--force]
#
# Prints the image directory on stdout (its last line); progress goes to
# stderr as `build-image: ...` lines. The directory holds:
#   base.img   raw ext4 image of the root filesystem (sparse; never written by
#              a run: run-node-vm.sh boots a qcow2 overlay of it)
#   initrd.gz  busybox initramfs: insmod virtio, mount /dev/vda, switch_root
#              to systemd
#   vmlinuz    Debian's cloud kernel (the modules are in the image)
#   manifest   versions of the main packages, the build's date and duration
#
# Cache: /var/cache/rsv2-node-vm/image-<key>, where the key is IMAGE_VERSION
# (bump it when the package list changes) and a hash of this script (any
# change to the image's configuration builds a new one). Older images are
# removed once a new one is built. --force rebuilds the current key.
#
# Environment:
#   RSV2_NODE_VM_CACHE   cache directory (default /var/cache/rsv2-node-vm)
#   RSV2_NODE_VM_MIRROR  Debian mirror for debootstrap (default: the bookworm
#                        URI in /etc/apt/sources.list*, else deb.debian.org)
#
# Needs root. On a fresh machine it installs debootstrap, qemu-utils,
# e2fsprogs, busybox-static and cpio with apt-get, and (through
# tests/vm/run-vm.sh --prepare-only) qemu-system-x86 and the kernel.
set -euo pipefail

# Bump when the package list changes (the script's hash covers the rest).
IMAGE_VERSION=1
SUITE=bookworm
# What the guest runs: systemd as PID 1 on a unified cgroup v2 hierarchy,
# Debian's containerd 1.6.20 with runc and the CNI plugins, criu 3.17.1 for
# the checkpoint lane, and the tools the guest tests and the integration-test
# binaries (dynamically linked against bookworm's glibc) need.
PACKAGES=(
  systemd systemd-sysv dbus udev kmod
  containerd runc containernetworking-plugins iptables
  criu
  busybox-static bsdutils iproute2 util-linux procps e2fsprogs
  libgcc-s1
)
# Size of the root filesystem; runs write into a qcow2 overlay, so this is
# the guest's free space, not host disk use (the image is sparse).
IMAGE_SIZE=4G

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${RSV2_NODE_VM_CACHE:-/var/cache/rsv2-node-vm}
FORCE=
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    *) echo "build-image: unknown argument $arg" >&2; exit 1 ;;
  esac
done

say() { echo "build-image: $*" >&2 2>/dev/null || true; }
die() { echo "build-image: ERROR: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, apt-get, /var/cache)"

BUILD=
cleanup() {
  local rc=$?
  set +e
  trap '' PIPE TERM INT HUP
  if [ -n "$BUILD" ]; then
    # debootstrap mounts proc and sys in the chroot; a failed build can leave them.
    for m in $(awk -v b="$BUILD/" 'index($2, b) == 1 { print $2 }' /proc/mounts | sort -r); do
      umount -l "$m" 2>/dev/null
    done
    rm -rf "$BUILD"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'trap "" TERM INT HUP; exit 143' TERM
trap 'trap "" TERM INT HUP; exit 130' INT
trap 'trap "" TERM INT HUP; exit 129' HUP

apt_ready=
apt_update() {
  [ -n "$apt_ready" ] && return 0
  say "apt-get update"
  apt-get update -qq >&2 || die "apt-get update failed"
  apt_ready=1
}
# install_pkg COMMAND PACKAGE: apt-get install PACKAGE unless COMMAND exists.
install_pkg() {
  command -v "$1" >/dev/null && return 0
  say "$1 is missing: installing $2"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends "$2" >&2; then
    apt_update
    apt-get install -y -qq --no-install-recommends "$2" >&2 ||
      die "cannot install $2 (needed for $1) with apt-get"
  fi
  command -v "$1" >/dev/null || die "$2 is installed but $1 is still missing"
}

# The bookworm mirror apt uses here (deb822 or one-line sources).
find_mirror() {
  if [ -n "${RSV2_NODE_VM_MIRROR:-}" ]; then echo "$RSV2_NODE_VM_MIRROR"; return; fi
  local f m=
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    case "$f" in
      *.sources)
        m=$(awk '
          /^[ \t]*$/ { if (uri != "" && suites ~ /(^| )'"$SUITE"'( |$)/) { print uri; exit } uri = ""; suites = ""; next }
          $1 == "URIs:" { uri = $2 }
          $1 == "Suites:" { $1 = ""; suites = $0 " " }
          END { if (uri != "" && suites ~ /(^| )'"$SUITE"'( |$)/) print uri }' "$f" | head -n 1) ;;
      *)
        m=$(awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                 if ($(i + 1) == "'"$SUITE"'") { print $i; exit } }' "$f") ;;
    esac
    [ -n "$m" ] && break
  done
  echo "${m:-http://deb.debian.org/debian}"
}

t0=$(now)
mkdir -p "$CACHE"

# qemu-system-x86, cpio and the kernel, exactly as the cgroup-v2 lane gets
# them (apt-get download + dpkg-deb -x into $CACHE/kernel).
RSV2_VM_CACHE=$CACHE bash "$REPO/tests/vm/run-vm.sh" --prepare-only 2>&1 | sed 's/^/build-image: /' >&2 ||
  die "tests/vm/run-vm.sh --prepare-only failed"
KERNEL=$(ls -1 "$CACHE"/kernel/*/boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$KERNEL" ] || die "no kernel in $CACHE/kernel"
KPKG_DIR=$(cd "$(dirname "$KERNEL")/.." && pwd)
KVER=${KERNEL##*/vmlinuz-}
[ -d "$KPKG_DIR/lib/modules/$KVER" ] || die "no modules for $KVER in $KPKG_DIR"

HASH=$(cat "${BASH_SOURCE[0]}" | sha256sum | cut -c1-12)
KEY=v$IMAGE_VERSION-$KVER-$HASH
# RSV2_NODE_VM_TUNE=0: an image without the boot tuning below (to measure it).
TUNE=${RSV2_NODE_VM_TUNE:-1}
[ "$TUNE" = 1 ] || KEY=$KEY-untuned
IMAGE=$CACHE/image-$KEY

exec 8>"$CACHE/.build-lock"
flock 8
if [ -z "$FORCE" ] && [ -s "$IMAGE/base.img" ] && [ -s "$IMAGE/initrd.gz" ] && [ -s "$IMAGE/vmlinuz" ]; then
  say "cached image $IMAGE"
  echo "$IMAGE"
  exit 0
fi

install_pkg debootstrap debootstrap
install_pkg qemu-img qemu-utils
install_pkg mkfs.ext4 e2fsprogs
install_pkg cpio cpio
[ -x /bin/busybox ] && /bin/busybox --list | grep -qx insmod || {
  say "/bin/busybox is missing: installing busybox-static"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >&2 ||
    { apt_update; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >&2; } ||
    die "cannot install busybox-static"
}

MIRROR=$(find_mirror)
BUILD=$(mktemp -d "$CACHE/build.XXXXXX")
R=$BUILD/rootfs
say "building image $KEY: debootstrap $SUITE from $MIRROR"
t1=$(now)
include=$(IFS=,; echo "${PACKAGES[*]}")
if ! debootstrap --variant=minbase --include="$include" --components=main \
    "$SUITE" "$R" "$MIRROR" >"$BUILD/debootstrap.log" 2>&1; then
  tail -n 30 "$BUILD/debootstrap.log" | sed 's/^/build-image: debootstrap: /' >&2
  [ -f "$R/debootstrap/debootstrap.log" ] && tail -n 30 "$R/debootstrap/debootstrap.log" | sed 's/^/build-image: debootstrap.log: /' >&2
  die "debootstrap failed"
fi
t_debootstrap=$(since "$t1")
say "debootstrap done in ${t_debootstrap}s"

# --- configuration -----------------------------------------------------------

echo rsv2-node > "$R/etc/hostname"
cat > "$R/etc/hosts" <<'EOF'
127.0.0.1	localhost
127.0.1.1	rsv2-node
::1		localhost ip6-localhost ip6-loopback
EOF
# A fixed machine id: an empty one would make every boot a "first boot"
# (systemd-firstboot, and `preset-all`, which re-enables what is disabled below).
echo 5c5dedee0e0e4e0eb0d0000000000016 > "$R/etc/machine-id"
# The root filesystem is mounted rw by the initramfs; no fsck (pass 0).
# The run's data disk (label rsv2-run) is mounted read-only at /rsv2.
cat > "$R/etc/fstab" <<'EOF'
/dev/vda	/	ext4	rw,relatime	0 0
LABEL=rsv2-run	/rsv2	ext4	ro,nofail,x-systemd.device-timeout=30s	0 0
EOF
mkdir -p "$R/rsv2"
# No password for root: the VM has no network, and `run-node-vm.sh
# --interactive` gives a login on the serial console.
chroot "$R" passwd -dq root
# Volatile journal, and a small one.
mkdir -p "$R/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\nRuntimeMaxUse=32M\n' > "$R/etc/systemd/journald.conf.d/rsv2.conf"
# Containers from the tests must not wait for the default 90 s stop timeout
# when the VM powers off.
mkdir -p "$R/etc/systemd/system.conf.d"
printf '[Manager]\nDefaultTimeoutStopSec=10s\n' > "$R/etc/systemd/system.conf.d/rsv2.conf"

chroot "$R" systemctl set-default multi-user.target >/dev/null
# The system containerd is disabled: tests start private ones (their own
# root, state and socket), never the default /run/containerd/containerd.sock.
chroot "$R" systemctl disable containerd.service >/dev/null 2>&1
# Units that cost boot time under TCG and do nothing for a throwaway VM
# (measured: tests/node-vm/README.md). Timers would only fire later; they go
# too. logind is not needed (no logins but --interactive's root on the
# console); dbus then starts on first use (dbus.socket), e.g. by a systemd
# cgroup driver's first StartTransientUnit.
if [ "$TUNE" = 1 ]; then
  for u in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
           e2scrub_reap.service fstrim.timer man-db.timer systemd-timesyncd.service \
           systemd-binfmt.service proc-sys-fs-binfmt_misc.automount proc-sys-fs-binfmt_misc.mount \
           systemd-logind.service getty@tty1.service systemd-update-utmp.service \
           systemd-update-utmp-runlevel.service remote-fs.target; do
    if [ -e "$R/lib/systemd/system/$u" ] || [ -e "$R/etc/systemd/system/$u" ]; then
      chroot "$R" systemctl disable "$u" >/dev/null 2>&1 || true
      chroot "$R" systemctl mask "$u" >/dev/null 2>&1 || true
    fi
  done
fi

# The test runner: a service that runs the guest test script from the run's
# data disk and powers the VM off when it ends, whatever the outcome. It
# writes on the serial console (the host reads RSV2-* lines there). Type=exec:
# the boot finishes while it runs, and the script waits for that itself.
cat > "$R/etc/systemd/system/rsv2-node-tests.service" <<'EOF'
[Unit]
Description=containerd-shim-rust-v2 node VM tests
RequiresMountsFor=/rsv2
ConditionPathExists=/rsv2/guest-node-tests.sh
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=exec
ExecStart=/bin/bash /rsv2/guest-node-tests.sh
StandardInput=null
StandardOutput=tty
StandardError=inherit
TTYPath=/dev/ttyS0
TTYReset=no
TTYVHangup=no
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
EOF
chroot "$R" systemctl enable rsv2-node-tests.service >/dev/null 2>&1

# The kernel's modules (bridge, veth, overlay, netfilter, ... load on demand).
mkdir -p "$R/usr/lib/modules"
cp -a "$KPKG_DIR/lib/modules/$KVER" "$R/usr/lib/modules/"
chroot "$R" depmod "$KVER" || die "depmod $KVER in the image failed"

manifest=$BUILD/manifest
{
  echo "key $KEY"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) from $MIRROR"
  echo "kernel $KVER"
  chroot "$R" dpkg-query -W -f '${Package} ${Version}\n' \
    systemd dbus udev containerd runc containernetworking-plugins criu busybox-static libc6
} > "$manifest"

# Space: no .debs, no apt lists, no docs.
rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/* "$R"/usr/share/doc/* \
  "$R"/usr/share/man/* "$R"/usr/share/locale/* "$R/debootstrap"
: > "$R/etc/resolv.conf"

# --- initramfs ---------------------------------------------------------------
# busybox, the virtio modules (ext4 is built into the cloud kernel, virtio-pci
# and virtio-blk are not), and an /init that mounts /dev/vda and hands over to
# systemd.

I=$BUILD/initramfs
mkdir -p "$I"/{bin,dev,proc,sys,newroot,modules}
install -m 0755 /bin/busybox "$I/bin/busybox"
for a in sh mount umount insmod switch_root sleep cat echo mkdir; do ln -s busybox "$I/bin/$a"; done
MODS="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk"
for m in $MODS; do
  f=$(find "$KPKG_DIR/lib/modules/$KVER" -name "$m.ko*" | head -n 1)
  [ -n "$f" ] || die "module $m.ko not found for $KVER"
  case "$f" in *.ko) ;; *) die "$f is compressed; the initramfs expects plain .ko files" ;; esac
  cp "$f" "$I/modules/$m.ko"
done
cat > "$I/init" <<EOF
#!/bin/sh
# initramfs of the node VM (tests/node-vm/build-image.sh): virtio modules,
# root on /dev/vda (ext4, rw: it is a throwaway qcow2 overlay), then systemd.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "RSV2-TIME initramfs \$(cut -d' ' -f1 /proc/uptime)" > /dev/console
for m in $MODS; do
  insmod /modules/\$m.ko || echo "RSV2-INFO initramfs: insmod \$m failed" > /dev/console
done
n=0
while [ ! -b /dev/vda ] && [ \$n -lt 100 ]; do sleep 0.1; n=\$((n + 1)); done
if ! mount -t ext4 -o rw /dev/vda /newroot; then
  echo "RSV2-FATAL initramfs: cannot mount /dev/vda" > /dev/console
  echo o > /proc/sysrq-trigger
fi
mount -o move /dev /newroot/dev
umount /sys /proc
exec switch_root /newroot /lib/systemd/systemd
EOF
chmod 0755 "$I/init"
(cd "$I" && find . -print0 | cpio --null -o -H newc -R 0:0 --quiet) | gzip -9 > "$BUILD/initrd.gz"

# --- the disk image ----------------------------------------------------------

t2=$(now)
truncate -s "$IMAGE_SIZE" "$BUILD/base.img"
mkfs.ext4 -q -F -L rsv2-root -E root_owner=0:0 -d "$R" "$BUILD/base.img" ||
  die "mkfs.ext4 -d $R failed"
t_mkfs=$(since "$t2")
say "ext4 image: $(du -m "$BUILD/base.img" | cut -f1) MiB used of $IMAGE_SIZE, made in ${t_mkfs}s"
cp "$KERNEL" "$BUILD/vmlinuz"
echo "rootfs $(du -sm "$R" | cut -f1) MiB; debootstrap ${t_debootstrap}s, mkfs ${t_mkfs}s, total $(since "$t0")s" >> "$manifest"
rm -rf "$R" "$I" "$BUILD/debootstrap.log"

rm -rf "$IMAGE.partial"
mkdir "$IMAGE.partial"
mv "$BUILD/base.img" "$BUILD/initrd.gz" "$BUILD/vmlinuz" "$manifest" "$IMAGE.partial/"
rm -rf "$IMAGE"
mv "$IMAGE.partial" "$IMAGE"
# Only the current image stays.
for old in "$CACHE"/image-*; do
  case "$old" in "$CACHE/image-v$IMAGE_VERSION-$KVER-$HASH"*) ;; *) rm -rf "$old" ;; esac
done
say "image $IMAGE built in $(since "$t0")s"
echo "$IMAGE"
