#!/usr/bin/env bash
# Boots a cgroup-v2 Linux VM under qemu (TCG, no KVM needed) with containerd,
# ctr, runc and containerd-shim-rust-v2 in its initramfs, runs
# guest-tests.sh inside and powers off. The guest's serial console is copied
# to stdout (RSV2-RESULT / RSV2-DONE lines, see guest-tests.sh); this script's
# own progress goes to stderr, as `run-vm: ...` lines.
#
#   tests/vm/run-vm.sh [--prepare-only] [--interactive]
#
# --prepare-only  install qemu and cpio and fetch the kernel, then exit.
# --interactive   keep the console on the terminal and give a shell after the
#                 tests (rsv2.shell=1); no time limit. For debugging by hand.
#
# Environment:
#   SHIM_BIN          our shim (default <repo>/target/debug/containerd-shim-rust-v2);
#                     required when the runtime is io.containerd.rust.v2
#   RSV2_VM_RUNTIME   runtime the guest tests use (default io.containerd.rust.v2;
#                     io.containerd.runc.v2 checks the expectations against runc)
#   RSV2_VM_TESTS     space-separated subset of the guest tests (default: all)
#   RSV2_VM_TIMEOUT   seconds qemu may run before it is killed (default 300)
#   RSV2_VM_TEST_TIMEOUT  seconds one guest test may take (default 60)
#   RSV2_VM_VERBOSE   set to 1: passing guest tests print their output too
#   RSV2_VM_CACHE     download cache (default /var/cache/rsv2-vm)
#   RSV2_VM_TRACE     a file: append this script's `set -x` trace to it
#
# Needs root (apt-get, and the cache under /var/cache). On a fresh machine it
# installs qemu-system-x86 and cpio and downloads Debian's cloud kernel
# (linux-image-cloud-amd64's versioned image package) into the cache with
# `apt-get download`; nothing is installed into the host's /boot. The
# initramfs is built in a temporary directory that is removed on exit, and
# qemu is killed on timeout, error or signal.
#
# Exit status: qemu's (0 when the guest powered off), 124 when the time limit
# killed it, 1 when something could not be set up (with a message).
set -euo pipefail
if [ -n "${RSV2_VM_TRACE:-}" ]; then exec 7>>"$RSV2_VM_TRACE"; BASH_XTRACEFD=7; set -x; fi

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${RSV2_VM_CACHE:-/var/cache/rsv2-vm}
RUNTIME=${RSV2_VM_RUNTIME:-io.containerd.rust.v2}
TIMEOUT=${RSV2_VM_TIMEOUT:-300}
TEST_TIMEOUT=${RSV2_VM_TEST_TIMEOUT:-60}
TESTS=${RSV2_VM_TESTS:-}
SHIM=${SHIM_BIN:-$REPO/target/debug/containerd-shim-rust-v2}
KERNEL_META=linux-image-cloud-amd64

PREPARE_ONLY=
INTERACTIVE=
for arg in "$@"; do
  case "$arg" in
    --prepare-only) PREPARE_ONLY=1 ;;
    --interactive) INTERACTIVE=1 ;;
    *) echo "run-vm: unknown argument $arg" >&2; exit 1 ;;
  esac
done

PREFIX=run-vm
source "$HERE/host-lib.sh"

[ "$(id -u)" = 0 ] || die "must run as root (apt-get, /var/cache, qemu)"

trap qemu_cleanup EXIT
signal_traps

# The kernel: Debian's cloud image (everything the tests need, cgroup2,
# namespaces, BPF, is built in: no modules to load), extracted in the cache.
KERNEL=
find_kernel() {
  KERNEL=$(ls -1 "$CACHE"/kernel/*/boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1 || true)
}

fetch_kernel() {
  find_kernel
  [ -n "$KERNEL" ] && return 0
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  flock 9
  find_kernel
  if [ -z "$KERNEL" ]; then
    local pkg
    pkg=$(apt-cache depends "$KERNEL_META" 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
    if [ -z "$pkg" ]; then
      apt_update
      pkg=$(apt-cache depends "$KERNEL_META" 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
    fi
    [ -n "$pkg" ] || die "apt knows no $KERNEL_META (tried apt-get update): cannot get a kernel for the VM"
    say "downloading $pkg (the image behind $KERNEL_META) into $CACHE"
    local dl="$CACHE/download"
    rm -rf "$dl"
    mkdir -p "$dl"
    if ! (cd "$dl" && apt-get -qq -o APT::Sandbox::User=root download "$pkg" >&2); then
      apt_update
      (cd "$dl" && apt-get -qq -o APT::Sandbox::User=root download "$pkg" >&2) ||
        die "apt-get download $pkg failed: cannot get a kernel for the VM"
    fi
    local deb
    deb=$(ls "$dl"/*.deb 2>/dev/null | head -n 1)
    [ -n "$deb" ] || die "apt-get download $pkg left no .deb in $dl"
    rm -rf "$CACHE/kernel/$pkg.partial"
    mkdir -p "$CACHE/kernel/$pkg.partial"
    dpkg-deb -x "$deb" "$CACHE/kernel/$pkg.partial" || die "dpkg-deb -x $deb failed"
    rm -rf "$CACHE/kernel/$pkg"
    mv "$CACHE/kernel/$pkg.partial" "$CACHE/kernel/$pkg"
    rm -rf "$dl"
    find_kernel
  fi
  flock -u 9
  [ -n "$KERNEL" ] || die "no vmlinuz in $CACHE/kernel after extracting the kernel package"
}

t0=$(now)
install_pkg qemu-system-x86_64 qemu-system-x86
install_pkg cpio cpio
fetch_kernel
say "kernel $KERNEL"
[ -n "$PREPARE_ONLY" ] && exit 0

# --- initramfs -------------------------------------------------------------

for b in /bin/busybox /usr/bin/containerd /usr/bin/ctr /usr/bin/containerd-shim-runc-v2 /usr/sbin/runc /usr/bin/script; do
  [ -x "$b" ] || die "$b is missing (apt-get install busybox-static containerd runc bsdutils)"
done
if [ ! -x "$SHIM" ]; then
  if [ "$RUNTIME" = io.containerd.rust.v2 ]; then
    die "shim binary $SHIM not found: run 'cargo build -p containerd-shim-rust-v2' or set SHIM_BIN"
  fi
  say "no shim at $SHIM; fine for runtime $RUNTIME"
  SHIM=
fi

RUSTC=${RUSTC:-rustc}
command -v "$RUSTC" >/dev/null || RUSTC=$HOME/.cargo/bin/rustc
command -v "$RUSTC" >/dev/null || die "rustc not found (needed to build tests/vm/rsv2-update.rs)"

WORK=$(mktemp -d /tmp/rsv2-vm.XXXXXX)
ROOT=$WORK/root
t1=$(now)
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,lib64,etc,proc,sys,dev,run,tmp,var/lib,newroot,rsv2,root}

install -m 0755 /bin/busybox "$ROOT/bin/busybox"
# Applets where busybox would put them (bin/sh, sbin/switch_root, usr/bin/tr, ...).
while read -r applet; do
  [ -e "$ROOT/$applet" ] || [ -L "$ROOT/$applet" ] || ln -s /bin/busybox "$ROOT/$applet"
done < <(/bin/busybox --list-full)

# script(1) runs ctr under a pty for the terminal tests.
for b in /usr/bin/containerd /usr/bin/ctr /usr/bin/containerd-shim-runc-v2 /usr/sbin/runc /usr/bin/script; do
  install -m 0755 "$b" "$ROOT$b"
done
if [ -n "$SHIM" ]; then
  # The debug build is mostly DWARF: strip it, the guest does not need it.
  if command -v objcopy >/dev/null; then
    objcopy --strip-debug "$SHIM" "$ROOT/usr/local/bin/containerd-shim-rust-v2"
  else
    install -m 0755 "$SHIM" "$ROOT/usr/local/bin/containerd-shim-rust-v2"
  fi
  chmod 0755 "$ROOT/usr/local/bin/containerd-shim-rust-v2"
fi
"$RUSTC" --edition 2021 -O -o "$ROOT/usr/local/bin/rsv2-update" "$HERE/rsv2-update.rs" >&2 ||
  die "cannot compile $HERE/rsv2-update.rs"

# Shared libraries of every dynamic binary, and the loader.
for b in "$ROOT"/usr/bin/* "$ROOT"/usr/sbin/* "$ROOT"/usr/local/bin/*; do
  [ -L "$b" ] && continue
  ldd "$b" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
done | sort -u | while read -r lib; do
  mkdir -p "$ROOT$(dirname "$lib")"
  cp -L "$lib" "$ROOT$lib"
done
[ -e "$ROOT/lib64/ld-linux-x86-64.so.2" ] || cp -L /lib64/ld-linux-x86-64.so.2 "$ROOT/lib64/"

install -m 0755 "$HERE/init" "$ROOT/init"
install -m 0755 "$HERE/guest-tests.sh" "$ROOT/rsv2/guest-tests.sh"
echo 'root:x:0:0:root:/root:/bin/sh' > "$ROOT/etc/passwd"
echo 'root:x:0:' > "$ROOT/etc/group"

INITRD=$WORK/initrd.gz
(cd "$ROOT" && find . -print0 | cpio --null -o -H newc -R 0:0 --quiet) | gzip -1 > "$INITRD"
say "initramfs $(du -m "$INITRD" | cut -f1) MiB compressed ($(du -sm "$ROOT" | cut -f1) MiB unpacked), built in $(since "$t1")s"
rm -rf "$ROOT"

# --- boot --------------------------------------------------------------------

APPEND="console=ttyS0 quiet loglevel=3 panic=-1 rsv2.runtime=$RUNTIME rsv2.test_timeout=$TEST_TIMEOUT"
[ "${RSV2_VM_VERBOSE:-}" != 1 ] || APPEND="$APPEND rsv2.verbose=1"
[ -z "$TESTS" ] || APPEND="$APPEND rsv2.tests=$(echo "$TESTS" | tr ' ' ,)"
QEMU=(qemu-system-x86_64 -accel tcg -m 2048 -smp 2
  -nodefaults -nographic -no-reboot -serial stdio -monitor none
  -kernel "$KERNEL" -initrd "$INITRD")

if [ -n "$INTERACTIVE" ]; then
  say "booting interactively (runtime $RUNTIME); the guest powers off when its shell exits"
  "${QEMU[@]}" -append "$APPEND rsv2.shell=1"
  exit $?
fi

QEMU_PIDFILE=$WORK/qemu.pid
say "booting (runtime $RUNTIME, time limit ${TIMEOUT}s)"
t2=$(now)
# `timeout --foreground` keeps qemu in our process group, so a Ctrl-C reaches
# it; on any other end of this script the EXIT trap kills it.
timeout --foreground --kill-after=10 "$TIMEOUT" \
  "${QEMU[@]}" -append "$APPEND" -pidfile "$QEMU_PIDFILE" </dev/null &
TIMEOUT_PID=$!
set +e
wait "$TIMEOUT_PID"
rc=$?
set -e
say "qemu exited with status $rc after $(since "$t2")s (total $(since "$t0")s)"
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  say "time limit of ${TIMEOUT}s reached: qemu was killed"
  exit 124
fi
exit "$rc"
