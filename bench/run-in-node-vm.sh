#!/usr/bin/env bash
# The bench's cgroup v2 rows (issue #19): rsv2-bench inside the node VM
# (tests/node-vm: Debian's kernel under qemu's TCG, systemd, unified cgroup
# v2, containerd 1.6.20, runc 1.1.5), run as the guest's `bench` step.
# Absolute times under TCG mean nothing; the ratios within the VM do.
#
#   bench/run-in-node-vm.sh            # after the release builds below
#
# Needs, built as packaging/install.sh and bench/README.md say:
#   target/release/containerd-shim-rust-v2 (static), target/release/rsv2-bench
#   and target/release/containerd-shim-null-v2 (static too: the bench
#   refuses a floor linked otherwise; CARGO_TARGET_DIR honoured).
# Prints the bench's tables and writes them to bench/results/v2-vm.md.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
REL=$TARGET/release
for f in containerd-shim-rust-v2 rsv2-bench containerd-shim-null-v2; do
  [ -x "$REL/$f" ] || { echo "run-in-node-vm: $REL/$f is missing: build it first (bench/README.md)" >&2; exit 1; }
done
FILES=$(mktemp -d /tmp/rsv2-bench-vm.XXXXXX)
trap 'rm -rf "$FILES"' EXIT
cp "$REL/containerd-shim-rust-v2" "$REL/rsv2-bench" "$REL/containerd-shim-null-v2" "$FILES/"
# The plot's text (fonts-dejavu-core on this host; the guest image has none).
mkdir -p "$FILES/fonts"
cp /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf /usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf "$FILES/fonts/"
# Small latency counts: every step takes ten to twenty times longer under
# TCG. The memory counts are the host's (20 idle shims, 100 pods): PSS
# shares the binary's pages among the shims that map it, so a per-shim
# figure is comparable only at the same count.
cat > "$FILES/bench-args" <<'ARGS'
--only start,exec,idle --runs 15 --warmup 1 --idle 20
--cri --pods 10 --warmup 1 --burst 20 --burst-concurrency 5 --burst-rounds 1 --density 100
ARGS
# 100 pods of runc's shim take about a GiB of the guest.
export RSV2_NODE_VM_MEM=${RSV2_NODE_VM_MEM:-4096}
OUT=$FILES/console.log
SHIM_BIN=$REL/containerd-shim-rust-v2 RSV2_NODE_VM_FILES=$FILES RSV2_NODE_VM_TESTS=bench RSV2_NODE_VM_VERBOSE=1 \
  RSV2_NODE_VM_TEST_TIMEOUT=${RSV2_BENCH_VM_TIMEOUT:-3000} RSV2_NODE_VM_TIMEOUT=$(( ${RSV2_BENCH_VM_TIMEOUT:-3000} + 600 )) \
  bash "$REPO/tests/node-vm/run-node-vm.sh" > "$OUT" 2>&1 || true
grep -q '^RSV2-RESULT bench PASS' "$OUT" || { grep -E 'RSV2-(RESULT|LOG)' "$OUT" | tail -n 60 >&2; echo "run-in-node-vm: the bench failed in the VM" >&2; exit 1; }
{
  echo "# rsv2-bench in the node VM (cgroup v2, TCG): $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Ratios only: absolute times under qemu's TCG mean nothing."
  echo
  # The serial console ends lines with \r.
  tr -d '\r' < "$OUT" | sed -n 's/^RSV2-LOG bench | //p' | grep -E '^(\||RSV2-BENCH-ARGS|CRI pod|[0-9]+ pods|Against the floor|$)' | sed 's/^RSV2-BENCH-ARGS /\n## rsv2-bench /'
} | tee "$REPO/bench/results/v2-vm.md"
