#!/bin/bash
# Smoke tests of the node VM (systemd as PID 1, unified cgroup v2, Debian
# bookworm's containerd 1.6.20 and runc), run by rsv2-node-tests.service
# from the run's data disk (/rsv2, read-only). Its output goes to the serial
# console; the VM powers off when it exits (SuccessAction/FailureAction of
# the unit), except with RSV2_INTERACTIVE.
#
# Protocol (read by tests/src/vm.rs on the host), as in tests/vm:
#   RSV2-RESULT <name> PASS
#   RSV2-RESULT <name> FAIL <reason>
#   RSV2-LOG <name> | ...      a failing test's output (every test's with RSV2_VERBOSE)
#   RSV2-CTDLOG <name> | ...   what the private containerd logged meanwhile
#   RSV2-TIME <label> <secs>   guest uptime at each stage, test:<name> durations
#   RSV2-INFO ...              facts about the guest (boot times, versions)
#   RSV2-DONE                  every test ran
#
# Containers run on a private containerd started here (own root, state and
# sockets under $CTD_DIR, containerd namespace $NS); the system containerd
# (/run/containerd/containerd.sock) is disabled in the image and never used.
# Each test runs as `guest-node-tests.sh --one NAME` under `timeout`; what
# it left behind is removed before the next one.
#
# After the shell tests (t_* below) come the Rust ones: every test function
# of the guest-only test binaries /rsv2/it/node_* (tests/tests/node_*.rs),
# each run alone with --exact, under its own name.
#
# Settings (/rsv2/settings, written by run-node-vm.sh): RSV2_RUNTIME,
# RSV2_TESTS, RSV2_TEST_TIMEOUT, RSV2_RUST_TEST_TIMEOUT, RSV2_VERBOSE,
# RSV2_INTERACTIVE.

[ -f /rsv2/settings ] && . /rsv2/settings
RUNTIME=${RSV2_RUNTIME:-io.containerd.rust.v2}
TEST_TIMEOUT=${RSV2_TEST_TIMEOUT:-180}
NS=rsv2
CTD_DIR=/run/rsv2-ctd
CTD_SOCK=$CTD_DIR/containerd.sock
CTD_LOG=$CTD_DIR/containerd.log
ROOTFS=/var/lib/rsv2-node/rootfs
WORK=/run/rsv2-node-tests
SHIM=/usr/local/bin/containerd-shim-rust-v2
CG=/sys/fs/cgroup
SHELL_TESTS="node_systemd_pid1 node_containerd_runc node_containerd_rust node_integration_binary"
RUST_TEST_TIMEOUT=${RSV2_RUST_TEST_TIMEOUT:-420}
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

CTR="ctr -a $CTD_SOCK -n $NS"
ctr() { command $CTR "$@"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
# Text on one line, cut to a length that fits a RSV2-RESULT line.
oneline() { printf '%s' "$*" | tr '\n\r\t' '|  ' | cut -c1-400; }

# Ends the current test (the --one process) as failed.
fail() {
  echo "$*" > "$WORK/$TEST.reason"
  echo "FAIL: $*"
  exit 1
}

# wait_for SECS CMD...: polls CMD every 0.1 s until it succeeds.
wait_for() {
  local n=$(($1 * 10))
  shift
  while [ $n -gt 0 ]; do
    "$@" && return 0
    sleep 0.1
    n=$((n - 1))
  done
  "$@"
}

# task_field ID N: field N (2 = PID, 3 = STATUS) of ID's line in `ctr task ls`.
task_field() { ctr task ls 2>/dev/null | awk -v id="$1" -v f="$2" '$1 == id { print $f }'; }
status_is() { [ "$(task_field "$1" 3)" = "$2" ]; }
# unit_prop UNIT PROP: a property of a unit, by value.
unit_prop() { systemctl show -P "$2" "$1" 2>/dev/null; }
unit_gone() { [ "$(unit_prop "$1" LoadState)" = not-found ] || [ "$(unit_prop "$1" ActiveState)" = inactive ]; }

# --- tests -----------------------------------------------------------------------

# systemd is PID 1, the boot finished (running, or degraded with the failed
# units named), and /sys/fs/cgroup is the unified cgroup v2 hierarchy.
t_node_systemd_pid1() {
  comm=$(cat /proc/1/comm)
  exe=$(readlink /proc/1/exe)
  echo "PID 1: $comm ($exe)"
  [ "$comm" = systemd ] || fail "PID 1 is '$comm' ($exe), not systemd"
  state=$(systemctl is-system-running 2>&1)
  echo "is-system-running: $state"
  failed=$(systemctl list-units --failed --plain --no-legend 2>&1 | awk '{ print $1 }' | tr '\n' ' ')
  case "$state" in
    running) ;;
    degraded) echo "RSV2-INFO node_systemd_pid1: degraded; failed units: $failed" ;;
    *) fail "systemctl is-system-running says '$state' (failed units: ${failed:-none})" ;;
  esac
  fs=$(stat -fc %T "$CG")
  echo "/sys/fs/cgroup: $fs"
  [ "$fs" = cgroup2fs ] || fail "/sys/fs/cgroup is $fs, not cgroup2fs (unified cgroup v2)"
  grep -q ' /sys/fs/cgroup/[a-z]' /proc/mounts && fail "cgroup v1 hierarchies are mounted: $(oneline "$(grep cgroup /proc/mounts)")"
  echo "controllers: $(cat $CG/cgroup.controllers); subtree_control: $(cat $CG/cgroup.subtree_control)"
  echo "init.scope: $(cat /proc/1/cgroup)"
  [ "$(cat /proc/1/cgroup)" = "0::/init.scope" ] || fail "PID 1's cgroup is $(oneline "$(cat /proc/1/cgroup)"), expected 0::/init.scope"
}

# The private containerd, with SystemdCgroup for both runtimes in the CRI
# section (ctr does not read it: it sends runc's options itself).
start_containerd() {
  mkdir -p "$CTD_DIR/root" "$CTD_DIR/state"
  cat > "$CTD_DIR/config.toml" <<EOF
version = 2
root = "$CTD_DIR/root"
state = "$CTD_DIR/state"
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "$CTD_SOCK"

[ttrpc]
  address = "$CTD_SOCK.ttrpc"

[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = true

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.rust]
  runtime_type = "io.containerd.rust.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.rust.options]
  SystemdCgroup = true
EOF
  containerd --config "$CTD_DIR/config.toml" > "$CTD_LOG" 2>&1 &
  CTD_PID=$!
  local n=0
  until ctr version > /dev/null 2>&1; do
    n=$((n + 1))
    if [ $n -gt 600 ] || ! kill -0 $CTD_PID 2>/dev/null; then
      echo "RSV2-INFO the private containerd did not come up; its log:"
      tail -n 40 "$CTD_LOG" | sed 's/^/RSV2-INFO containerd: /'
      kill $CTD_PID 2>/dev/null
      CTD_PID=
      return 1
    fi
    sleep 0.1
  done
}

stop_containerd() {
  [ -n "$CTD_PID" ] || return 0
  kill $CTD_PID 2>/dev/null
  for _ in $(seq 100); do kill -0 $CTD_PID 2>/dev/null || break; sleep 0.1; done
  kill -9 $CTD_PID 2>/dev/null
  wait $CTD_PID 2>/dev/null
  # containerd's mounts (none with --rootfs, but be sure), then its files.
  awk -v d="$CTD_DIR/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | xargs -r umount -l
  rm -rf "$CTD_DIR"
}

# containers_test RUNTIME ID: a detached busybox container with a systemd
# cgroup path (system.slice:rsv2:ID, so the unit rsv2-ID.scope in
# system.slice) and a 32 MiB memory limit: the scope is active, holds the
# task, has MemoryMax and memory.max set; after delete it is gone.
containers_test() {
  local runtime=$1 id=$2 flags=
  local unit=rsv2-$id.scope
  [ -n "$CTD_PID" ] || fail "the private containerd is not running (see the RSV2-INFO lines)"
  [ "$runtime" = io.containerd.runc.v2 ] && flags=--runc-systemd-cgroup
  out=$(ctr run -d --runtime "$runtime" $flags --cgroup "system.slice:rsv2:$id" \
    --memory-limit 33554432 --rootfs "$ROOTFS" "$id" /bin/sleep 1000 2>&1 < /dev/null) ||
    fail "ctr run -d --runtime $runtime $flags --cgroup system.slice:rsv2:$id exited $?: $(oneline "$out")"
  wait_for 10 status_is "$id" RUNNING || fail "task $id is not RUNNING: $(oneline "$(ctr task ls 2>&1)")"
  pid=$(task_field "$id" 2)
  systemctl status --no-pager "$unit" 2>&1 | head -n 12
  state=$(unit_prop "$unit" ActiveState)
  cgroup=$(unit_prop "$unit" ControlGroup)
  slice=$(unit_prop "$unit" Slice)
  echo "$unit: ActiveState=$state ControlGroup=$cgroup Slice=$slice MemoryMax=$(unit_prop "$unit" MemoryMax)"
  echo "/proc/$pid/cgroup: $(cat /proc/$pid/cgroup)"
  [ "$state" = active ] || fail "$unit is '$state', not active, while $id runs; units: $(oneline "$(systemctl list-units --no-legend --plain 'rsv2*' 2>&1)")"
  [ "$slice" = system.slice ] || fail "$unit is in slice '$slice', not system.slice"
  [ "$cgroup" = "/system.slice/$unit" ] || fail "$unit's ControlGroup is '$cgroup', expected /system.slice/$unit"
  [ "$(cat /proc/$pid/cgroup)" = "0::/system.slice/$unit" ] ||
    fail "the task (pid $pid) is in $(oneline "$(cat /proc/$pid/cgroup)"), not in $unit"
  grep -qx "$pid" "$CG/system.slice/$unit/cgroup.procs" || fail "pid $pid is not in $CG/system.slice/$unit/cgroup.procs"
  mm=$(cat "$CG/system.slice/$unit/memory.max" 2>&1)
  [ "$mm" = 33554432 ] || fail "$CG/system.slice/$unit/memory.max is '$(oneline "$mm")', expected 33554432"
  out=$(ctr task exec --exec-id e1 "$id" /bin/cat /proc/self/cgroup 2>&1) || fail "ctr task exec exited $?: $(oneline "$out")"
  echo "exec's /proc/self/cgroup: $out"
  case "$out" in
    "0::/" | "0::/system.slice/$unit") ;;
    *) fail "the exec's /proc/self/cgroup is not the container's: $(oneline "$out")" ;;
  esac
  out=$(ctr task kill -s SIGKILL "$id" 2>&1) || fail "ctr task kill exited $?: $(oneline "$out")"
  wait_for 10 status_is "$id" STOPPED || fail "task $id is $(task_field "$id" 3) 10 s after SIGKILL"
  out=$(ctr task delete "$id" 2>&1) || fail "ctr task delete exited $?: $(oneline "$out")"
  out=$(ctr container delete "$id" 2>&1) || fail "ctr container delete exited $?: $(oneline "$out")"
  wait_for 10 unit_gone "$unit" ||
    fail "$unit is still $(unit_prop "$unit" ActiveState) after the container was deleted"
  [ ! -d "$CG/system.slice/$unit" ] || fail "$CG/system.slice/$unit is still there after delete"
}

# runc (containerd's runc shim with SystemdCgroup) on the node: the reference
# for what our shim's systemd cgroup driver must do.
t_node_containerd_runc() { containers_test io.containerd.runc.v2 smoke; }

# The same with our shim: a slice:prefix:name cgroupsPath selects its
# systemd cgroup driver.
t_node_containerd_rust() {
  [ -x "$SHIM" ] || fail "no shim in the guest ($SHIM): run-node-vm.sh had none to copy in"
  containers_test io.containerd.rust.v2 smoke-rust
}

# One of the project's host-built integration-test binaries (dynamically
# linked against bookworm's glibc, copied in by run-node-vm.sh) runs here:
# foundation's exit_codes, on a private containerd of its own, with the
# runtime under test.
t_node_integration_binary() {
  bin=/rsv2/it/foundation
  [ -x "$bin" ] || fail "no integration-test binary at $bin (run-node-vm.sh copies target/debug/deps/foundation-*)"
  echo "binary: $(cat $bin.from 2>/dev/null) ($(stat -c %s $bin) bytes)"
  ldd "$bin" | grep -q 'not found' && fail "missing libraries: $(oneline "$(ldd "$bin")")"
  [ "$RUNTIME" != io.containerd.rust.v2 ] || [ -x "$SHIM" ] || fail "no shim in the guest ($SHIM)"
  mkdir -p "$WORK/it"
  out=$(cd "$WORK/it" && SHIM_BIN=$SHIM IT_RUNTIME=$RUNTIME RUST_BACKTRACE=1 \
    "$bin" --test-threads=1 --exact exit_codes 2>&1)
  rc=$?
  echo "$out"
  [ $rc = 0 ] || fail "foundation exit_codes exited $rc: $(oneline "$(echo "$out" | grep -E 'panicked|assert|Error|error' | head -n 5)")"
  echo "$out" | grep -q 'test result: ok. 1 passed' || fail "foundation exit_codes did not run exactly one passing test: $(oneline "$(echo "$out" | tail -n 3)")"
}

# Not a test, and never in SHELL_TESTS: bench/run-in-node-vm.sh names it to
# run the bench (release builds in /rsv2/files) on this node's cgroup v2,
# with the arguments in /rsv2/files/bench-args, one run per line. It fails
# only when the bench fails; its tables are in its output.
t_bench() {
  b=/rsv2/files/rsv2-bench
  [ -x "$b" ] || fail "no bench at $b (bench/run-in-node-vm.sh copies it)"
  mkdir -p "$WORK/it"
  # The plot's fonts (the image has none): bench/run-in-node-vm.sh brings them.
  if [ -d /rsv2/files/fonts ]; then
    mkdir -p /usr/share/fonts/truetype/dejavu && cp /rsv2/files/fonts/*.ttf /usr/share/fonts/truetype/dejavu/
  fi
  while read -r args; do
    [ -n "$args" ] || continue
    echo "RSV2-BENCH-ARGS $args"
    # shellcheck disable=SC2086 # the arguments are words
    (cd "$WORK/it" && SHIM_BIN=/rsv2/files/containerd-shim-rust-v2 PAUSE_BIN=/rsv2/bin/pause \
      "$b" $args --shim /rsv2/files/containerd-shim-rust-v2 --out "$WORK/it/out" 2>&1) || fail "rsv2-bench $args failed"
  done < /rsv2/files/bench-args
}

# The Rust guest tests: each test function of /rsv2/it/node_*, by name.
rust_bins() { for b in /rsv2/it/node_*; do [ -x "$b" ] && [ "${b%.from}" = "$b" ] && echo "$b"; done; }
rust_tests() { for b in $(rust_bins); do "$b" --list --format terse 2>/dev/null | sed -n 's/: test$//p'; done; }
rust_bin_of() {
  for b in $(rust_bins); do
    "$b" --list --format terse 2>/dev/null | grep -qx "$1: test" && { echo "$b"; return; }
  done
}

# One Rust test ($TEST), in its own scratch directory, with the shim under
# test; its own private containerds (the harness's) come and go with it.
t_rust() {
  bin=$(rust_bin_of "$TEST")
  [ -n "$bin" ] || fail "no test binary in /rsv2/it has a test named $TEST"
  [ -x "$SHIM" ] || fail "no shim in the guest ($SHIM)"
  echo "binary: $(cat "$bin.from" 2>/dev/null)"
  mkdir -p "$WORK/it"
  out=$(cd "$WORK/it" && SHIM_BIN=$SHIM PAUSE_BIN=/rsv2/bin/pause RUST_BACKTRACE=1 "$bin" --exact "$TEST" --test-threads=1 --nocapture 2>&1)
  rc=$?
  echo "$out"
  [ $rc = 0 ] || fail "$TEST exited $rc: $(oneline "$(echo "$out" | grep -A4 'panicked at' | head -n 8)")"
  echo "$out" | grep -q 'test result: ok. 1 passed' || fail "$TEST did not run as exactly one passing test: $(oneline "$(echo "$out" | tail -n 3)")"
}

# --- the runner ------------------------------------------------------------------

# Kills and deletes whatever a test left in the namespace and in rsv2-*.scope units.
cleanup() {
  if [ -n "$CTD_PID" ]; then
    # (timeout runs the ctr binary, not the function: the socket is named here)
    tasks=$(timeout 20 $CTR task ls -q 2>/dev/null)
    for id in $tasks; do timeout 20 $CTR task kill -s SIGKILL "$id" > /dev/null 2>&1; done
    [ -z "$tasks" ] || sleep 0.5
    for id in $tasks; do timeout 20 $CTR task delete --force "$id" > /dev/null 2>&1; done
    for id in $(timeout 20 $CTR container ls -q 2>/dev/null); do
      timeout 20 $CTR container delete "$id" > /dev/null 2>&1
    done
  fi
  for u in $(systemctl list-units --all --plain --no-legend 'rsv2-*.scope' 2>/dev/null | awk '{ print $1 }'); do
    systemctl stop "$u" > /dev/null 2>&1
  done
  rm -rf "$WORK/it"
}

if [ "$1" = --one ]; then
  TEST=$2
  CTD_PID=$3
  if declare -F "t_$TEST" > /dev/null; then "t_$TEST"; else t_rust; fi
  exit 0
fi

echo "RSV2-TIME service-start $(uptime_s)"
# The boot is finished (this unit is Type=exec: it does not hold it up).
state=$(timeout 300 systemctl is-system-running --wait 2>&1)
echo "RSV2-TIME node-ready $(uptime_s)"
echo "RSV2-INFO kernel $(uname -r); systemd $(systemctl --version | head -n 1 | awk '{ print $2 }'); state $state"
echo "RSV2-INFO $(systemd-analyze time 2>&1 | head -n 1)"

echo "RSV2-TIME setup-start $(uptime_s)"
mkdir -p "$WORK" "$(dirname "$SHIM")"
if [ -x /rsv2/bin/containerd-shim-rust-v2 ]; then
  install -m 0755 /rsv2/bin/containerd-shim-rust-v2 "$SHIM"
fi
# The containers' root filesystem: static busybox and its applets.
# One process for the ~400 symlinks: a fork costs milliseconds under TCG.
mkdir -p "$ROOTFS"/{bin,proc,sys,dev,tmp,etc}
cp /bin/busybox "$ROOTFS/bin/busybox"
(cd "$ROOTFS/bin" && busybox --list | grep -vx busybox | perl -lne 'symlink("busybox", $_) or die "symlink $_: $!"')
echo 'root:x:0:0:root:/root:/bin/sh' > "$ROOTFS/etc/passwd"
echo 'root:x:0:' > "$ROOTFS/etc/group"

CTD_PID=
mkdir -p "$CTD_DIR"
touch "$CTD_LOG"
start_containerd && echo "RSV2-TIME containerd-ready $(uptime_s)"

ALL_TESTS="$SHELL_TESTS $(rust_tests | tr '\n' ' ')"
echo "RSV2-INFO guest tests: $ALL_TESTS"
for t in ${RSV2_TESTS:-$ALL_TESTS}; do
  start=$(uptime_s)
  ctd_lines=$(wc -l < "$CTD_LOG" 2>/dev/null || echo 0)
  rm -f "$WORK/$t.reason"
  limit=$TEST_TIMEOUT
  declare -F "t_$t" > /dev/null || limit=$RUST_TEST_TIMEOUT
  timeout "$limit" bash "$0" --one "$t" "$CTD_PID" > "$WORK/$t.log" 2>&1
  rc=$?
  end=$(uptime_s)
  took=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  # RSV2-INFO lines of a test go straight to the console.
  grep '^RSV2-INFO ' "$WORK/$t.log"
  if [ $rc = 0 ]; then
    [ -z "$RSV2_VERBOSE" ] || sed "s/^/RSV2-LOG $t | /" "$WORK/$t.log"
    echo "RSV2-RESULT $t PASS"
  else
    if [ -s "$WORK/$t.reason" ]; then
      reason=$(oneline "$(cat "$WORK/$t.reason")")
    elif [ $rc = 124 ]; then
      reason="timed out after ${limit}s"
    else
      reason="test script exited $rc"
    fi
    # containerd's plugin-loading chatter says nothing about a failure.
    grep -v 'msg="loading plugin' "$WORK/$t.log" | tail -n 150 | sed "s/^/RSV2-LOG $t | /"
    tail -n +$((ctd_lines + 1)) "$CTD_LOG" 2>/dev/null | tail -n 30 | sed "s/^/RSV2-CTDLOG $t | /"
    echo "RSV2-RESULT $t FAIL $reason"
  fi
  echo "RSV2-TIME test:$t $took"
  cleanup
done

stop_containerd
rm -rf "$ROOTFS" "$WORK"
echo "RSV2-TIME tests-done $(uptime_s)"
# Where the boot time went (after the tests: this costs a few seconds).
systemd-analyze blame --no-pager 2>/dev/null | head -n 8 | sed 's/^ */RSV2-INFO blame: /'
systemd-analyze critical-chain --no-pager 2>/dev/null | tail -n +3 | sed 's/^/RSV2-INFO critical-chain: /'
echo "RSV2-INFO containerd $(containerd --version | awk '{ print $3 }'); runc $(runc --version | head -n 1 | awk '{ print $3 }'); criu $(criu --version 2>/dev/null | awk '/Version/ { print $2 }')"
echo "RSV2-DONE"
if [ -n "$RSV2_INTERACTIVE" ]; then
  # A getty would have hung up this console under the tests: only now.
  echo "RSV2-INFO interactive: log in as root (no password); 'poweroff' ends the VM"
  systemctl start serial-getty@ttyS0.service
  exec sleep infinity
fi
exit 0
