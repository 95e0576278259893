# Shared by the VM lanes' host scripts (tests/vm/run-vm.sh and
# tests/node-vm/run-node-vm.sh): messages and timing, apt, and the cleanup
# of a qemu run. Set PREFIX (the name the messages start with) before
# sourcing it. tests/node-vm/build-image.sh keeps its own copies: its
# image's cache key is the hash of its own text.

# Never fatal: whoever reads our stderr may be gone (see cleanup).
say() { echo "$PREFIX: $*" >&2 2>/dev/null || true; }
die() { echo "$PREFIX: ERROR: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

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

# The state of a qemu run, which qemu_cleanup undoes on any exit: the
# scratch directory, qemu (by its pidfile) and the timeout(1) around it.
WORK=
QEMU_PIDFILE=
TIMEOUT_PID=
qemu_cleanup() {
  local rc=$?
  # Runs on every exit, also when the reader of our output died.
  set +e
  # Ignore further signals (a dying parent can send its death signal more
  # than once) and SIGPIPE.
  trap '' PIPE TERM INT HUP
  # timeout(1) passes the TERM on to qemu, even before qemu wrote its pidfile.
  if [ -n "$TIMEOUT_PID" ] && kill -0 "$TIMEOUT_PID" 2>/dev/null; then
    kill -TERM "$TIMEOUT_PID" 2>/dev/null
    sleep 0.5
  fi
  if [ -n "$QEMU_PIDFILE" ] && [ -s "$QEMU_PIDFILE" ]; then
    local pid
    pid=$(cat "$QEMU_PIDFILE")
    if kill -0 "$pid" 2>/dev/null; then
      say "killing qemu (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      for _ in 1 2 3 4 5 6 7 8 9 10; do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
      done
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  [ -z "$WORK" ] || rm -rf "$WORK"
  exit "$rc"
}

# signal_traps: a signal ends the script through its EXIT trap, once.
signal_traps() {
  trap 'trap "" TERM INT HUP; exit 143' TERM
  trap 'trap "" TERM INT HUP; exit 130' INT
  trap 'trap "" TERM INT HUP; exit 129' HUP
}
