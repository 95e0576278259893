#!/bin/sh
# cgroup-v2 tests, run inside the test VM by /init (busybox sh) once
# containerd is up. Every container is started with
# `ctr run --runtime $RSV2_RUNTIME --rootfs /rootfs` in containerd namespace
# $RSV2_NS, so its cgroup is /sys/fs/cgroup/$RSV2_NS/<id>.
#
# Protocol (read by tests/src/vm.rs on the host, through the serial console):
#   RSV2-RESULT <name> PASS
#   RSV2-RESULT <name> FAIL <reason>
# A failing test first prints its own output as `RSV2-LOG <name> | ...` and
# what containerd logged meanwhile as `RSV2-CTDLOG <name> | ...`.
# /init prints RSV2-DONE after this script returns.
#
# With RSV2_VERBOSE set (kernel parameter rsv2.verbose=1), passing tests
# print their RSV2-LOG lines too.
#
# ctr's default spec for --rootfs has no PATH in process.env, so commands are
# given by absolute path (runc does not search a default PATH).
#
# Each test runs as `sh guest-tests.sh --one NAME` under `timeout`, so a hung
# ctr or shim fails that test only; whatever it left behind (tasks,
# containers) is killed and deleted before the next one.

RUNTIME=${RSV2_RUNTIME:-io.containerd.rust.v2}
NS=${RSV2_NS:-rsv2}
ROOTFS=${RSV2_ROOTFS:-/rootfs}
TEST_TIMEOUT=${RSV2_TEST_TIMEOUT:-60}
CG=/sys/fs/cgroup
WORK=/tmp/rsv2-tests
CTD_LOG=/run/containerd.log
ALL_TESTS="v2_basic_run v2_limits v2_clone_into_cgroup v2_exit_code v2_pause_resume v2_update v2_metrics v2_oom v2_devices v2_devices_mknod v2_cgroup_ro v2_ptys v2_device_verdicts_match_runc v2_shim_cgroup"

ctr() { command ctr -n "$NS" "$@"; }

uptime_s() { cut -d' ' -f1 /proc/uptime; }

# Text on one line, cut to a length that fits a RSV2-RESULT line.
oneline() { printf '%s' "$*" | tr '\n\r\t' '|  ' | cut -c1-400; }

# Ends the current test (the --one process) as failed.
fail() {
  echo "$*" > "$WORK/$TEST.reason"
  echo "FAIL: $*"
  exit 1
}

# crun "FLAGS" ID CMD...: ctr run with the busybox rootfs and the runtime under test.
crun() {
  flags=$1 id=$2
  shift 2
  # shellcheck disable=SC2086 # FLAGS is a word list on purpose
  ctr run --runtime "$RUNTIME" --rootfs $flags "$ROOTFS" "$id" "$@" </dev/null
}

# task_field ID N: field N (2 = PID, 3 = STATUS) of ID's line in `ctr task ls`.
task_field() { ctr task ls 2>/dev/null | awk -v id="$1" -v f="$2" '$1 == id { print $f }'; }
status_is() { [ "$(task_field "$1" 3)" = "$2" ]; }

# wait_for SECS CMD...: polls CMD every 0.1 s until it succeeds.
wait_for() {
  n=$(($1 * 10))
  shift
  while [ $n -gt 0 ]; do
    "$@" && return 0
    sleep 0.1
    n=$((n - 1))
  done
  "$@"
}

cgdir() { echo "$CG/$NS/$1"; }

# expect_file PATH VALUE: the file holds exactly VALUE.
expect_file() {
  got=$(cat "$1" 2>&1)
  [ "$got" = "$2" ] || fail "$1 is '$(oneline "$got")', expected '$2'"
}

# start_detached "FLAGS" ID CMD...: ctr run -d, then wait for RUNNING.
start_detached() {
  flags=$1 id=$2
  shift 2
  out=$(crun "-d $flags" "$id" "$@" 2>&1) || fail "ctr run -d $flags $id exited $?: $(oneline "$out")"
  wait_for 10 status_is "$id" RUNNING ||
    fail "task $id is not RUNNING after ctr run -d: $(oneline "$(ctr task ls 2>&1)")"
}

# remove ID: SIGKILL, wait for STOPPED, delete task and container.
remove() {
  out=$(ctr task kill -s SIGKILL "$1" 2>&1) || fail "ctr task kill $1 exited $?: $(oneline "$out")"
  wait_for 10 status_is "$1" STOPPED || fail "task $1 is $(task_field "$1" 3) 10 s after SIGKILL"
  out=$(ctr task delete "$1" 2>&1) || fail "ctr task delete $1 exited $?: $(oneline "$out")"
  out=$(ctr container delete "$1" 2>&1) || fail "ctr container delete $1 exited $?: $(oneline "$out")"
}

t_v2_basic_run() {
  out=$(crun --rm basic /bin/sh -c 'echo hi; cat /proc/self/cgroup' 2>&1) ||
    fail "ctr run exited $?: $(oneline "$out")"
  echo "$out"
  [ "$(echo "$out" | head -n 1)" = hi ] || fail "output does not start with 'hi': $(oneline "$out")"
  cg=$(echo "$out" | sed 1d)
  case "$(echo "$cg" | wc -l) $cg" in
    "1 0::/"*) ;;
    *) fail "/proc/self/cgroup in the container is not a single 0::/ line: $(oneline "$cg")" ;;
  esac
}

t_v2_limits() {
  start_detached "--memory-limit 33554432 --cpus 0.5" limits /bin/sleep 1000
  d=$(cgdir limits)
  [ -d "$d" ] || fail "no cgroup directory $d; $CG/$NS has: $(oneline "$(ls "$CG/$NS" 2>&1)")"
  expect_file "$d/memory.max" 33554432
  expect_file "$d/cpu.max" "50000 100000"
  pid=$(task_field limits 2)
  grep -qx "$pid" "$d/cgroup.procs" ||
    fail "task pid $pid is not in $d/cgroup.procs: $(oneline "$(cat "$d/cgroup.procs")")"
  remove limits
  wait_for 10 [ ! -d "$d" ] || fail "cgroup $d still exists after the container was deleted"
}

# The init stage of a create and of an exec starts inside the container's
# cgroup (clone3 with CLONE_INTO_CGROUP, Linux 5.7): no pid is moved. Our
# shim logs when it has to move one instead, and must not have to here.
t_v2_clone_into_cgroup() {
  start_detached "" cic /bin/sleep 1000
  d=$(cgdir cic)
  out=$(ctr task exec --exec-id e1 cic /bin/sh -c 'cat /proc/self/cgroup' 2>&1) ||
    fail "ctr task exec exited $?: $(oneline "$out")"
  case "$out" in
    "0::/" | "0::/$NS/cic") ;;
    *) fail "the exec's /proc/self/cgroup is not the container's cgroup: $(oneline "$out")" ;;
  esac
  pid=$(task_field cic 2)
  grep -qx "$pid" "$d/cgroup.procs" ||
    fail "task pid $pid is not in $d/cgroup.procs: $(oneline "$(cat "$d/cgroup.procs")")"
  case "$RUNTIME" in
    io.containerd.rust.v2)
      if grep -q 'moving the init stage by pid' "$CTD_LOG"; then
        fail "the shim moved the init stage by pid: $(oneline "$(grep 'moving the init stage' "$CTD_LOG" | tail -n 2)")"
      fi ;;
  esac
  remove cic
}

t_v2_exit_code() {
  out=$(crun --rm exit7 /bin/sh -c 'exit 7' 2>&1)
  rc=$?
  [ $rc = 7 ] || fail "ctr run of sh -c 'exit 7' exited $rc, expected 7: $(oneline "$out")"
}

t_v2_pause_resume() {
  start_detached "" pr /bin/sleep 1000
  d=$(cgdir pr)
  out=$(ctr task pause pr 2>&1) || fail "ctr task pause exited $?: $(oneline "$out")"
  wait_for 5 status_is pr PAUSED || fail "ctr task ls shows '$(task_field pr 3)' after pause, expected PAUSED"
  expect_file "$d/cgroup.freeze" 1
  wait_for 5 grep -qx 'frozen 1' "$d/cgroup.events" ||
    fail "$d/cgroup.events does not show 'frozen 1' after pause: $(oneline "$(cat "$d/cgroup.events" 2>&1)")"
  out=$(ctr task resume pr 2>&1) || fail "ctr task resume exited $?: $(oneline "$out")"
  wait_for 5 status_is pr RUNNING || fail "ctr task ls shows '$(task_field pr 3)' after resume, expected RUNNING"
  expect_file "$d/cgroup.freeze" 0
  wait_for 5 grep -qx 'frozen 0' "$d/cgroup.events" ||
    fail "$d/cgroup.events does not show 'frozen 0' after resume: $(oneline "$(cat "$d/cgroup.events" 2>&1)")"
  remove pr
}

# ctr 1.6 has no `task update`: rsv2-update makes the Task/Update ttrpc call
# containerd forwards for Tasks.Update, straight to the container's shim.
t_v2_update() {
  start_detached "--memory-limit 33554432" upd /bin/sleep 1000
  d=$(cgdir upd)
  expect_file "$d/memory.max" 33554432
  out=$(rsv2-update --namespace "$NS" --id upd --resources '{"memory":{"limit":67108864}}' 2>&1) ||
    fail "Update (memory limit 67108864) failed: $(oneline "$out")"
  expect_file "$d/memory.max" 67108864
  remove upd
}

# ctr 1.6 prints cgroup v2 metrics (io.containerd.cgroups.v2.Metrics) as rows
# pids.current, pids.limit, cpu.usage_usec, ..., memory.usage,
# memory.usage_limit, memory.swap_usage, memory.swap_limit.
t_v2_metrics() {
  start_detached "" met /bin/sleep 1000
  out=$(ctr task metrics met 2>&1) || fail "ctr task metrics exited $?: $(oneline "$out")"
  echo "$out"
  usage=$(echo "$out" | awk '$1 == "memory.usage" { print $2 }')
  case "$usage" in
    '' | *[!0-9]*) fail "no memory.usage row (cgroup v2 metrics) in ctr task metrics: $(oneline "$out")" ;;
  esac
  [ "$usage" -gt 0 ] || fail "memory.usage is 0: $(oneline "$out")"
  remove met
}

t_v2_oom() {
  ctr events > "$WORK/events.log" 2>&1 &
  events_pid=$!
  sleep 1
  out=$(crun "--rm --memory-limit 16777216" oomtest /bin/sh -c 'x=$(head -c 67108864 /dev/zero | tr "\0" a); echo ${#x}' 2>&1)
  rc=$?
  wait_for 5 grep -q '/tasks/exit.*"container_id":"oomtest"' "$WORK/events.log"
  sleep 0.5
  kill $events_pid 2>/dev/null
  wait $events_pid 2>/dev/null
  cat "$WORK/events.log"
  [ $rc = 137 ] || fail "ctr run exited $rc, expected 137 (OOM kill at 16 MiB): $(oneline "$out")"
  oom=$(grep -n '/tasks/oom' "$WORK/events.log" | grep '"container_id":"oomtest"' | head -n 1 | cut -d: -f1)
  exit_line=$(grep -n '/tasks/exit' "$WORK/events.log" | grep '"container_id":"oomtest"' | head -n 1 | cut -d: -f1)
  [ -n "$oom" ] || fail "no /tasks/oom event for oomtest: $(oneline "$(cut -c1-160 "$WORK/events.log")")"
  [ -n "$exit_line" ] || fail "no /tasks/exit event for oomtest: $(oneline "$(cut -c1-160 "$WORK/events.log")")"
  [ "$oom" -lt "$exit_line" ] || fail "/tasks/oom (line $oom) came after /tasks/exit (line $exit_line) in ctr events"
}

# Device rules on cgroup v2 are enforced by an eBPF program attached to the
# container's cgroup. ctr's default spec denies all devices ("a rwm"); runc,
# the reference, appends its defaults after the spec's rules: rwm for
# /dev/null, zero, full, random, urandom, tty, console, ptmx, pts, tun, and
# "c *:* m" + "b *:* m": mknod of any device node is allowed, only using one
# is not. The VM has no disk, so a filter that let an open of block device 8:0
# through would give ENXIO from the block layer, not EPERM.
#
# probe_devices: runs the probe container, sets $out and $rc. The probe
# writes /dev/null (must work), then mknods 8:0 and opens it.
probe_devices() {
  rm -f "$ROOTFS/tmp/sda"
  out=$(crun --rm "$1" /bin/sh -c '
    echo x >/dev/null || { echo DEVNULL-DENIED; exit 3; }
    mknod /tmp/sda b 8 0 || { echo MKNOD-DENIED; exit 4; }
    head -c 1 /tmp/sda >/dev/null && echo OPENED' 2>&1)
  rc=$?
  rm -f "$ROOTFS/tmp/sda"
  echo "$out"
  case "$out" in
    *"ctr: "*) fail "ctr run failed (exit $rc): $(oneline "$out")" ;;
    *DEVNULL-DENIED*) fail "writing /dev/null was denied: the device rules block allowed devices too" ;;
    *OPENED*) fail "opening block device 8:0 succeeded: device rules not enforced" ;;
  esac
  [ $rc -ne 0 ] || fail "the probe exited 0 although it could not use 8:0: $(oneline "$out")"
  case "$out" in
    *"Operation not permitted"*) ;;
    *) fail "block device 8:0 was not refused with EPERM (no device filter on the cgroup?): $(oneline "$out")" ;;
  esac
}

# The filter is there: block device 8:0 cannot be used (mknod or open gives
# EPERM), /dev/null can.
t_v2_devices() {
  probe_devices devices
}

# mknod of a host disk. Our shim denies it (issue #5: "the device rules must
# deny mknod of a host disk and deny opening one"); runc appends `b *:* m`
# and `c *:* m` to every container's rules and allows the mknod, refusing
# only the open. Each runtime is held to its own policy.
t_v2_devices_mknod() {
  probe_devices devmknod
  case "$RUNTIME:$out" in
    io.containerd.rust.v2:*MKNOD-DENIED*) ;;
    io.containerd.rust.v2:*) fail "mknod b 8:0 was allowed: $(oneline "$out")" ;;
    *:*MKNOD-DENIED*) fail "mknod b 8:0 was refused; runc allows mknod of any device: $(oneline "$out")" ;;
  esac
}

# A `ro` cgroup mount is a read-only cgroup2 (issue #12): nothing under it
# can be written, with either runtime.
t_v2_cgroup_ro() {
  out=$(crun "--rm --mount type=cgroup,src=cgroup,dst=/sys/fs/cgroup,options=ro:nosuid:nodev:noexec" cgro \
    /bin/sh -c 'grep " /sys/fs/cgroup " /proc/self/mounts; touch /sys/fs/cgroup/x 2>&1; mkdir /sys/fs/cgroup/y 2>&1; echo end' 2>&1)
  echo "$out"
  echo "$out" | grep -q ' /sys/fs/cgroup cgroup2 ro,' || fail "/sys/fs/cgroup is not a read-only cgroup2: $(oneline "$out")"
  [ "$(echo "$out" | grep -c 'Read-only file system')" = 2 ] || fail "a write under /sys/fs/cgroup did not fail with EROFS: $(oneline "$out")"
}

# Two terminal execs at once into a container that has a terminal each get
# a pty of their own (issue #13: the device rule for every pty, c 136:*,
# is what the eBPF filter must allow).
t_v2_ptys() {
  out=$(script -qec "ctr -n $NS run -t -d --runtime $RUNTIME --rootfs $ROOTFS ptys /bin/sleep 1000" /dev/null 2>&1) ||
    fail "ctr run -t -d exited $?: $(oneline "$out")"
  wait_for 10 status_is ptys RUNNING || fail "task ptys is not RUNNING: $(oneline "$(ctr task ls 2>&1)")"
  for n in 1 2; do
    script -qec "ctr -n $NS task exec -t --exec-id pty$n ptys /bin/sh -c 'tty; sleep 2; echo done'" /dev/null > "$WORK/pty$n.out" 2>&1 < /dev/null &
  done
  wait
  # ctr writes a NUL to the terminal, which comes back echoed as ^@.
  a=$(tr -d '\r' < "$WORK/pty1.out" | sed 's/\^@//g') b=$(tr -d '\r' < "$WORK/pty2.out" | sed 's/\^@//g')
  echo "$a"; echo "$b"
  for o in "$a" "$b"; do
    echo "$o" | grep -q '^/dev/pts/[0-9]' && echo "$o" | grep -q '^done' || fail "a terminal exec failed: $(oneline "$o")"
  done
  [ "$(echo "$a" | grep '^/dev/pts/')" != "$(echo "$b" | grep '^/dev/pts/')" ] || fail "the two execs shared a pty: $(oneline "$a")"
  remove ptys
}

# The eBPF filter's verdicts, device by device, are runc's (issue #13): a
# probe makes each node and opens it under runc's shim and under ours, in
# this boot, and says per device "denied" (EPERM at mknod or at open: the
# filter), "usable" or "absent" (another error: no such device here). Our
# shim refuses the mknod where runc refuses only the open (see
# v2_devices_mknod); either way the container cannot use the device.
DEVICE_PROBE='for d in "c 1 3" "c 1 5" "c 1 7" "c 1 8" "c 1 9" "c 5 0" "c 5 1" "c 5 2" "c 10 200" "c 136 0" "c 136 9" "c 1 1" "c 1 2" "c 10 229" "c 10 232" "b 8 0" "b 7 0" "b 1 0"; do
  set -- $d; n=/tmp/probe-$1-$2-$3; rm -f $n
  if ! err=$(mknod $n $1 $2 $3 2>&1); then
    case $err in *"not permitted"*) v=denied ;; *) v="mknod-failed" ;; esac
  elif err=$( (: < $n) 2>&1); then v=usable
  else case $err in *"not permitted"*) v=denied ;; *) v=absent ;; esac
  fi
  rm -f $n; echo "DEV $1 $2:$3 $v"
done'

t_v2_device_verdicts_match_runc() {
  for rt in io.containerd.runc.v2 io.containerd.rust.v2; do
    ctr run --runtime "$rt" --rm --rootfs "$ROOTFS" "verdicts-${rt##*.}" /bin/sh -c "$DEVICE_PROBE" </dev/null > "$WORK/verdicts.$rt" 2>&1 ||
      fail "the probe under $rt failed: $(oneline "$(cat "$WORK/verdicts.$rt")")"
    echo "== $rt"; cat "$WORK/verdicts.$rt"
  done
  [ "$(grep -c '^DEV ' "$WORK/verdicts.io.containerd.rust.v2")" = 18 ] || fail "the probe did not report 18 devices"
  grep -q '^DEV c 1:3 usable' "$WORK/verdicts.io.containerd.rust.v2" || fail "/dev/null (c 1:3) is not usable"
  grep -q '^DEV b 8:0 denied' "$WORK/verdicts.io.containerd.rust.v2" || fail "b 8:0 is not denied"
  diff "$WORK/verdicts.io.containerd.runc.v2" "$WORK/verdicts.io.containerd.rust.v2" ||
    fail "device verdicts differ from runc's: $(oneline "$(diff "$WORK/verdicts.io.containerd.runc.v2" "$WORK/verdicts.io.containerd.rust.v2")")"
}

# runc's ShimCgroup option, from a runtime options file (ctr
# --runtime-config-path sends it as runtimeoptions.v1.Options): the shim
# runs in /rsv2-shims. runc's shim takes only runc's own options type,
# which ctr cannot send, so for it this checks only that the run works.
t_v2_shim_cgroup() {
  mkdir -p "$CG/rsv2-shims"
  echo 'ShimCgroup = "/rsv2-shims"' > /tmp/shim-options.toml
  start_detached "--runtime-config-path /tmp/shim-options.toml" shimcg /bin/sleep 1000
  shim=
  for c in /proc/[0-9]*/cmdline; do
    tr '\0' ' ' < "$c" 2>/dev/null | grep -q "containerd-shim-r[a-z]*-v2 .*-id shimcg " && shim=${c#/proc/} && shim=${shim%/cmdline} && break
  done
  [ -n "$shim" ] || fail "no shim process for shimcg: $(oneline "$(ps)")"
  cat "/proc/$shim/cgroup"
  if [ "$RUNTIME" = io.containerd.rust.v2 ]; then
    [ "$(cat "/proc/$shim/cgroup")" = "0::/rsv2-shims" ] || fail "the shim is in $(cat "/proc/$shim/cgroup"), not /rsv2-shims"
  fi
  remove shimcg
  wait_for 10 [ -z "$(cat "$CG/rsv2-shims/cgroup.procs")" ] || fail "the shim did not leave /rsv2-shims"
  rmdir "$CG/rsv2-shims"
}

# Kills and deletes whatever a test left in the namespace.
cleanup() {
  tasks=$(timeout 20 ctr -n "$NS" task ls -q 2>/dev/null)
  if [ -n "$tasks" ]; then
    for id in $tasks; do
      timeout 20 ctr -n "$NS" task kill -s SIGKILL "$id" >/dev/null 2>&1
    done
    sleep 0.5
    for id in $tasks; do
      timeout 20 ctr -n "$NS" task delete --force "$id" >/dev/null 2>&1
    done
  fi
  for id in $(timeout 20 ctr -n "$NS" container ls -q 2>/dev/null); do
    timeout 20 ctr -n "$NS" container delete "$id" >/dev/null 2>&1
  done
  rm -f "$ROOTFS/tmp/sda"
}

if [ "$1" = --one ]; then
  TEST=$2
  "t_$TEST"
  exit 0
fi

mkdir -p "$WORK"
for t in ${RSV2_TESTS:-$ALL_TESTS}; do
  start=$(uptime_s)
  ctd_lines=$(wc -l < "$CTD_LOG")
  rm -f "$WORK/$t.reason"
  timeout "$TEST_TIMEOUT" sh "$0" --one "$t" > "$WORK/$t.log" 2>&1
  rc=$?
  end=$(uptime_s)
  took=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  if [ $rc = 0 ]; then
    [ -z "$RSV2_VERBOSE" ] || sed "s/^/RSV2-LOG $t | /" "$WORK/$t.log"
    echo "RSV2-RESULT $t PASS"
  else
    if [ -s "$WORK/$t.reason" ]; then
      reason=$(oneline "$(cat "$WORK/$t.reason")")
    elif awk -v t="$took" -v l="$TEST_TIMEOUT" 'BEGIN { exit !(t >= l - 1) }'; then
      reason="timed out after ${TEST_TIMEOUT}s"
    else
      reason="test script exited $rc"
    fi
    tail -n 40 "$WORK/$t.log" | sed "s/^/RSV2-LOG $t | /"
    tail -n +$((ctd_lines + 1)) "$CTD_LOG" | tail -n 30 | sed "s/^/RSV2-CTDLOG $t | /"
    echo "RSV2-RESULT $t FAIL $reason"
  fi
  echo "RSV2-TIME test:$t $took"
  cleanup
done
