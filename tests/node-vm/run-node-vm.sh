#!/usr/bin/env bash
# Boots the node VM: Debian's cloud kernel under qemu (TCG, no KVM needed),
# systemd as PID 1 on a unified cgroup v2 hierarchy, a Debian bookworm
# userspace with containerd 1.6.20, runc, the CNI plugins and criu (the image
# of build-image.sh), runs guest-node-tests.sh inside and powers off. The
# guest's serial console is copied to stdout (RSV2-RESULT / RSV2-DONE lines,
# the protocol of tests/vm, read by tests/src/vm.rs); this script's own
# progress goes to stderr as `run-node-vm: ...` lines.
#
#   tests/node-vm/run-node-vm.sh [--prepare-only] [--interactive]
#
# --prepare-only  install what is missing and build (or find) the image, then exit.
# --interactive   keep the console on the terminal, and do not power off after
#                 the tests: a root login (no password) on the serial console;
#                 no time limit. `poweroff` in the guest ends it.
#
# Each run boots a fresh qcow2 overlay of the cached base image (the base
# stays clean) and gets its own files on a second virtio disk, an ext4 image
# made with `mkfs.ext4 -d` from a staging directory, which the guest mounts
# read-only at /rsv2 (fstab, label rsv2-run):
#   /rsv2/guest-node-tests.sh   the tests, run by rsv2-node-tests.service
#   /rsv2/settings              this run's settings (runtime, tests, limits)
#   /rsv2/bin/containerd-shim-rust-v2   the shim under test; the guest test
#                               script installs it in /usr/local/bin
#   /rsv2/bin/pause             the CRI tests' static pause binary (PAUSE_BIN there)
#   /rsv2/it/<name>             integration-test binaries (see RSV2_NODE_VM_IT_BINS)
#   /rsv2/files/...             RSV2_NODE_VM_FILES, copied as is
# Debug binaries are copied without their DWARF (objcopy --strip-debug).
#
# Environment:
#   SHIM_BIN                  our shim (default <repo>/target/debug/containerd-shim-rust-v2);
#                             required when the runtime is io.containerd.rust.v2
#   RSV2_NODE_VM_RUNTIME      runtime of the tests that take one (default io.containerd.rust.v2)
#   RSV2_NODE_VM_TESTS        space-separated subset of the guest tests (default: all)
#   RSV2_NODE_VM_TIMEOUT      seconds qemu may run before it is killed (default 1800)
#   RSV2_NODE_VM_TEST_TIMEOUT seconds one guest shell test may take (default 180)
#   RSV2_NODE_VM_RUST_TEST_TIMEOUT  seconds one guest Rust test may take (default 420)
#   RSV2_NODE_VM_VERBOSE      set to 1: passing guest tests print their output too
#   RSV2_NODE_VM_IT_BINS      integration-test binaries to copy in (space-separated
#                             paths); default: the `foundation`, `node_systemd` and `node_criu`
#                             test binaries, from `cargo test --no-run -p
#                             integration-tests --test ...` (or, without cargo, the
#                             newest target/debug/deps/<name>-*)
#   RSV2_NODE_VM_FILES        a directory copied to /rsv2/files in the guest
#   PAUSE_BIN                 the static pause binary (default: built into target/pause)
#   RSV2_NODE_VM_MEM          guest memory in MiB (default 3072)
#   RSV2_NODE_VM_APPEND       more kernel parameters (e.g. systemd.log_level=debug)
#   RSV2_NODE_VM_CACHE        image cache (default /var/cache/rsv2-node-vm)
#   RSV2_NODE_VM_TRACE        a file: append this script's `set -x` trace to it
#
# Needs root. Exit status: qemu's (0 when the guest powered off), 124 when
# the time limit killed it, 1 when something could not be set up (with a
# message). qemu is killed and the temporary directory removed on every exit.
set -euo pipefail
if [ -n "${RSV2_NODE_VM_TRACE:-}" ]; then exec 7>>"$RSV2_NODE_VM_TRACE"; BASH_XTRACEFD=7; set -x; fi

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
RUNTIME=${RSV2_NODE_VM_RUNTIME:-io.containerd.rust.v2}
TIMEOUT=${RSV2_NODE_VM_TIMEOUT:-1800}
TEST_TIMEOUT=${RSV2_NODE_VM_TEST_TIMEOUT:-180}
TESTS=${RSV2_NODE_VM_TESTS:-}
MEM=${RSV2_NODE_VM_MEM:-3072}
SHIM=${SHIM_BIN:-$REPO/target/debug/containerd-shim-rust-v2}

PREPARE_ONLY=
INTERACTIVE=
for arg in "$@"; do
  case "$arg" in
    --prepare-only) PREPARE_ONLY=1 ;;
    --interactive) INTERACTIVE=1 ;;
    *) echo "run-node-vm: unknown argument $arg" >&2; exit 1 ;;
  esac
done

PREFIX=run-node-vm
source "$REPO/tests/vm/host-lib.sh"

[ "$(id -u)" = 0 ] || die "must run as root (apt-get, debootstrap, /var/cache, qemu)"

trap qemu_cleanup EXIT
signal_traps

t0=$(now)
# The image (cached), the kernel and its initramfs; installs qemu, debootstrap
# and the rest when missing.
IMAGE=$(bash "$HERE/build-image.sh" | tail -n 1) || die "tests/node-vm/build-image.sh failed"
[ -s "$IMAGE/base.img" ] || die "build-image.sh gave no image (got '$IMAGE')"
say "image $IMAGE ($(since "$t0")s)"
[ -n "$PREPARE_ONLY" ] && exit 0
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is missing"
command -v qemu-img >/dev/null || die "qemu-img is missing"

# --- this run's files ----------------------------------------------------------

if [ ! -x "$SHIM" ]; then
  [ "$RUNTIME" != io.containerd.rust.v2 ] ||
    die "shim binary $SHIM not found: run 'cargo build -p containerd-shim-rust-v2' or set SHIM_BIN"
  say "no shim at $SHIM; fine for runtime $RUNTIME"
  SHIM=
fi

# The integration-test binaries: those named, else the foundation tests.
find_it_bins() {
  if [ -n "${RSV2_NODE_VM_IT_BINS+set}" ]; then
    echo "$RSV2_NODE_VM_IT_BINS"
    return
  fi
  local cargo=${CARGO:-cargo} exe=
  command -v "$cargo" >/dev/null || cargo=$HOME/.cargo/bin/cargo
  if command -v "$cargo" >/dev/null; then
    # Builds it if needed; cargo does not hold its lock while tests run, so
    # this works from inside `cargo test` too.
    # foundation for node_integration_binary; node_systemd and node_criu
    # are guest-only (tests/Cargo.toml: test = false).
    exe=$(cd "$REPO" && "$cargo" test --no-run --message-format=json -p integration-tests \
      --test foundation --test node_systemd --test node_criu 2>/dev/null |
      grep -o '"executable":"[^"]*"' | cut -d'"' -f4 | tr '\n' ' ') || true
  fi
  if [ -z "$exe" ]; then
    for t in foundation node_systemd node_criu; do
      exe="$exe $(ls -t "$REPO"/target/debug/deps/$t-* 2>/dev/null | grep -v '\.d$' | head -n 1 || true)"
    done
  fi
  echo $exe
}

# copy_bin SRC DEST: without DWARF when objcopy is there (debug builds are mostly that).
copy_bin() {
  if command -v objcopy >/dev/null; then
    objcopy --strip-debug "$1" "$2" || die "objcopy --strip-debug $1 failed"
  else
    cp "$1" "$2"
  fi
  chmod 0755 "$2"
}

# The static pause binary of the CRI tests' pause image (tests/src/image.rs
# builds it with cargo, which the guest has not): built here, PAUSE_BIN there.
find_pause() {
  if [ -n "${PAUSE_BIN:-}" ]; then echo "$PAUSE_BIN"; return; fi
  local cargo=${CARGO:-cargo}
  command -v "$cargo" >/dev/null || cargo=$HOME/.cargo/bin/cargo
  (cd "$REPO" && "$cargo" rustc --quiet -p rsv2-pause --release --bin pause \
    --target-dir "$REPO/target/pause" -- -C target-feature=+crt-static >&2) || return 0
  echo "$REPO/target/pause/release/pause"
}

WORK=$(mktemp -d /tmp/rsv2-node-vm.XXXXXX)
t1=$(now)
DATA=$WORK/data
mkdir -p "$DATA/bin" "$DATA/it"
install -m 0755 "$HERE/guest-node-tests.sh" "$DATA/guest-node-tests.sh"
[ -z "$SHIM" ] || copy_bin "$SHIM" "$DATA/bin/containerd-shim-rust-v2"
PAUSE=$(find_pause)
[ -x "$PAUSE" ] || die "no pause binary (PAUSE_BIN, or cargo rustc -p rsv2-pause failed)"
cp "$PAUSE" "$DATA/bin/pause"
IT_BINS=$(find_it_bins)
for b in $IT_BINS; do
  [ -x "$b" ] || die "integration-test binary $b not found"
  name=$(basename "$b")
  name=${name%-*}   # foundation-0123abcd -> foundation
  copy_bin "$b" "$DATA/it/$name"
  echo "$b" > "$DATA/it/$name.from"
done
if [ -n "${RSV2_NODE_VM_FILES:-}" ]; then
  [ -d "$RSV2_NODE_VM_FILES" ] || die "RSV2_NODE_VM_FILES=$RSV2_NODE_VM_FILES is not a directory"
  cp -a "$RSV2_NODE_VM_FILES" "$DATA/files"
fi
{
  printf 'RSV2_RUNTIME=%q\n' "$RUNTIME"
  printf 'RSV2_TESTS=%q\n' "$TESTS"
  printf 'RSV2_TEST_TIMEOUT=%q\n' "$TEST_TIMEOUT"
  printf 'RSV2_RUST_TEST_TIMEOUT=%q\n' "${RSV2_NODE_VM_RUST_TEST_TIMEOUT:-420}"
  printf 'RSV2_VERBOSE=%q\n' "${RSV2_NODE_VM_VERBOSE:-}"
  printf 'RSV2_INTERACTIVE=%q\n' "$INTERACTIVE"
} > "$DATA/settings"
size=$(du -sm "$DATA" | cut -f1)
truncate -s "$((size + size / 4 + 32))M" "$WORK/data.img"
mkfs.ext4 -q -F -L rsv2-run -E root_owner=0:0 -d "$DATA" "$WORK/data.img" ||
  die "mkfs.ext4 -d of the run's files failed"
rm -rf "$DATA"
qemu-img create -q -f qcow2 -b "$IMAGE/base.img" -F raw "$WORK/run.qcow2" ||
  die "qemu-img create of the overlay failed"
say "run disk ${size} MiB (shim: ${SHIM:-none}; test binaries: ${IT_BINS:-none}), overlay made in $(since "$t1")s"

# --- boot --------------------------------------------------------------------------

# Kernel messages would interleave with the RSV2 lines: quiet, loglevel 3.
# systemd.getty_auto=0: no login prompt on the console (a getty would hang
# up the tests' output); --interactive starts one after the tests.
APPEND="console=ttyS0 quiet loglevel=3 panic=-1 root=/dev/vda systemd.getty_auto=0"
[ -z "${RSV2_NODE_VM_APPEND:-}" ] || APPEND="$APPEND $RSV2_NODE_VM_APPEND"
QEMU=(qemu-system-x86_64 -accel tcg -m "$MEM" -smp 2
  -nodefaults -nographic -no-reboot -serial stdio -monitor none
  -kernel "$IMAGE/vmlinuz" -initrd "$IMAGE/initrd.gz" -append "$APPEND"
  -drive "file=$WORK/run.qcow2,format=qcow2,if=virtio,cache=unsafe,discard=unmap"
  -drive "file=$WORK/data.img,format=raw,if=virtio,readonly=on"
  -device virtio-rng-pci)

if [ -n "$INTERACTIVE" ]; then
  say "booting interactively (runtime $RUNTIME); log in as root, no password; 'poweroff' in the guest ends the VM"
  "${QEMU[@]}"
  exit $?
fi

QEMU_PIDFILE=$WORK/qemu.pid
say "booting (runtime $RUNTIME, time limit ${TIMEOUT}s)"
t2=$(now)
timeout --foreground --kill-after=10 "$TIMEOUT" \
  "${QEMU[@]}" -pidfile "$QEMU_PIDFILE" </dev/null &
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
