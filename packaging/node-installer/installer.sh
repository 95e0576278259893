#!/bin/sh
# The node installer of containerd-shim-rust-v2, run by its DaemonSet (as
# kata-deploy installs kata): the host's root is mounted at $HOST_ROOT.
#
#   installer.sh install     copy the shim to the host, register the runtime
#                            in containerd's config (v2 or v3, detected) between
#                            marker lines, with SystemdCgroup = true when the
#                            node uses systemd's cgroup driver, restart
#                            containerd, label the node
#   installer.sh uninstall   undo all of it (the DaemonSet's preStop hook)
#   installer.sh run         install, then wait for SIGTERM (the DaemonSet's
#                            command)
#
# Environment: HOST_ROOT (/host), HOST_BIN_DIR (/usr/local/bin, on
# containerd's PATH), CONTAINERD_CONFIG (/etc/containerd/config.toml),
# CONTAINERD_CONFIG_VERSION (for a config that does not exist yet: 2 for
# containerd 1.6/1.7, 3 for 2.x; default 2), SYSTEMD_CGROUP (true, false or
# auto: runc's SystemdCgroup in the config if it has one, else true when
# systemd runs the host; default auto), RESTART_CMD (instead of
# `systemctl restart containerd` in the host's root; "none" for no restart),
# CONTAINERD_PIDFILE (a pid file in the host's root, for hosts whose
# containerd no systemd runs: instead of systemctl, SIGTERM to that pid, a
# process named containerd, then a wait of up to CONTAINERD_STOP_TIMEOUT
# seconds, default 30, for it to go; its supervisor starts it again. The
# pod needs hostPID: true for it), NODE_NAME and NODE_LABEL
# (containerd-shim-rust-v2/installed=true).
set -eu
HOST=${HOST_ROOT:-/host}
SRC=${SHIM_SOURCE:-/opt/rsv2/containerd-shim-rust-v2}
BIN_DIR=${HOST_BIN_DIR:-/usr/local/bin}
CONFIG=${CONTAINERD_CONFIG:-/etc/containerd/config.toml}
LABEL=${NODE_LABEL:-containerd-shim-rust-v2/installed=true}
BEGIN="# BEGIN containerd-shim-rust-v2 (node installer: removed on uninstall)"
END="# END containerd-shim-rust-v2"
cfg="$HOST$CONFIG"
created="$cfg.rsv2-created"

log() { echo "rsv2-node-installer: $*"; }
die() { echo "rsv2-node-installer: ERROR: $*" >&2; exit 1; }

config_version() {
  v=$(sed -n 's/^[[:space:]]*version[[:space:]]*=[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$cfg" | head -n 1)
  echo "${v:-1}"
}

# runc's SystemdCgroup in the config ("true", "false", or nothing): the
# value in a [...containerd.runtimes.runc.options] table, in the flat
# (`[a.b.c]`) or the indented layout of `containerd config default`.
runc_systemd_cgroup() {
  [ -f "$cfg" ] || return 0
  awk '
    /^[[:space:]]*\[[^[]/ {
      h = $0; sub(/[[:space:]]*(#.*)?$/, "", h)
      opts = (h ~ /containerd\.runtimes\.runc\.options\]$/)
      next
    }
    opts && /^[[:space:]]*SystemdCgroup[[:space:]]*=/ {
      v = $0; sub(/^[^=]*=[[:space:]]*/, "", v); sub(/[[:space:]]*(#.*)?$/, "", v)
      print v; exit
    }' "$cfg"
}

# Whether our runtime gets SystemdCgroup = true: the node's cgroup driver
# is the one its runc runtime uses (the kubelet's must match it), so runc's
# setting is copied; without one, systemd running the host decides.
# Sets $sc (true or false) and $why.
systemd_cgroup() {
  case "${SYSTEMD_CGROUP:-auto}" in
    true|false) sc=$SYSTEMD_CGROUP why="SYSTEMD_CGROUP=$SYSTEMD_CGROUP"; return ;;
    auto) ;;
    *) die "SYSTEMD_CGROUP=$SYSTEMD_CGROUP: say true, false or auto" ;;
  esac
  runc=$(runc_systemd_cgroup)
  case "$runc" in
    true|false) sc=$runc why="runc's SystemdCgroup = $runc in $CONFIG" ;;
    *)
      if [ -d "$HOST/run/systemd/system" ]; then
        sc=true why="runc has no SystemdCgroup in $CONFIG, and systemd runs the host"
      else
        sc=false why="runc has no SystemdCgroup in $CONFIG, and systemd does not run the host"
      fi
      ;;
  esac
}

# The runtime's tables for config version $1, with SystemdCgroup = true
# when $2 is true.
snippet() {
  case "$1" in
    2) table='plugins."io.containerd.grpc.v1.cri".containerd.runtimes.rust' ;;
    3) table='plugins."io.containerd.cri.v1.runtime".containerd.runtimes.rust' ;;
    *) die "$CONFIG has config version $1: only versions 2 (containerd 1.6/1.7) and 3 (2.x) are supported" ;;
  esac
  printf '[%s]\n  runtime_type = "io.containerd.rust.v2"\n' "$table"
  [ "${2:-false}" != true ] || printf '  [%s.options]\n    SystemdCgroup = true\n' "$table"
}

# Whether process $1 still runs: it exists and is no zombie.
running() {
  [ -r "/proc/$1/stat" ] || return 1
  state=$(sed 's/^.*) \(.\).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# SIGTERM to the containerd whose pid is in file $1, then wait for it to
# go; whatever supervises it (s6, runit, OpenRC's supervise-daemon, a
# shell loop) starts it again. Only a process named containerd is
# signalled: a pid from another pid namespace (no hostPID) must not hit a
# process of the pod.
stop_by_pidfile() {
  [ -r "$1" ] || die "no pid file $CONTAINERD_PIDFILE in the host's root"
  pid=$(tr -dc 0-9 < "$1")
  [ -n "$pid" ] || die "$CONTAINERD_PIDFILE holds no pid"
  running "$pid" || die "$CONTAINERD_PIDFILE names pid $pid, which does not run here (does the pod have hostPID: true?)"
  comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
  [ "$comm" = containerd ] || die "$CONTAINERD_PIDFILE names pid $pid, which is \"$comm\", not containerd: not signalled"
  log "restarting containerd: SIGTERM to pid $pid ($CONTAINERD_PIDFILE); its supervisor starts it again"
  kill -TERM "$pid" || die "kill -TERM $pid failed"
  waited=0
  while running "$pid"; do
    [ "$waited" -lt "${CONTAINERD_STOP_TIMEOUT:-30}" ] || die "containerd (pid $pid) still runs ${waited}s after SIGTERM"
    sleep 1
    waited=$((waited + 1))
  done
  log "containerd (pid $pid) stopped"
}

restart_containerd() {
  if [ "${RESTART_CMD:-}" = none ]; then
    log "not restarting containerd (RESTART_CMD=none)"
  elif [ -n "${RESTART_CMD:-}" ]; then
    log "restarting containerd: $RESTART_CMD"
    sh -c "$RESTART_CMD" || die "$RESTART_CMD failed"
  elif [ -n "${CONTAINERD_PIDFILE:-}" ]; then
    stop_by_pidfile "$HOST$CONTAINERD_PIDFILE"
  elif [ -d "$HOST/run/systemd/system" ]; then
    log "restarting containerd (systemctl in the host's root)"
    chroot "$HOST" systemctl restart containerd || die "systemctl restart containerd failed"
  else
    log "the host runs no systemd: restart containerd yourself to load the runtime"
  fi
}

label() {
  if [ -z "${NODE_NAME:-}" ] || ! command -v kubectl >/dev/null 2>&1; then
    log "no NODE_NAME or no kubectl: node not labelled $1"
    return 0
  fi
  kubectl label node "$NODE_NAME" "$1" --overwrite >/dev/null || die "kubectl label node $NODE_NAME $1 failed"
  log "node $NODE_NAME labelled $1"
}

install_shim() {
  [ -x "$SRC" ] || die "no shim binary at $SRC"
  [ -d "$HOST" ] || die "the host's root is not mounted at $HOST"
  mkdir -p "$HOST$BIN_DIR"
  # Copied beside, then renamed: a shim containerd starts meanwhile is
  # either the old binary or the new one, never half of one.
  cp "$SRC" "$HOST$BIN_DIR/.containerd-shim-rust-v2.new"
  chmod 0755 "$HOST$BIN_DIR/.containerd-shim-rust-v2.new"
  mv -f "$HOST$BIN_DIR/.containerd-shim-rust-v2.new" "$HOST$BIN_DIR/containerd-shim-rust-v2"
  log "installed $BIN_DIR/containerd-shim-rust-v2"

  changed=0
  if [ -f "$cfg" ] && grep -qF "$BEGIN" "$cfg"; then
    log "$CONFIG registers the runtime already (installed before)"
  elif [ -f "$cfg" ] && grep -q 'io.containerd.rust.v2' "$cfg"; then
    log "$CONFIG registers io.containerd.rust.v2 already (not by us): left as it is"
  else
    if [ -f "$cfg" ]; then
      v=$(config_version)
      snippet "$v" >/dev/null
      [ -e "$cfg.rsv2-backup" ] || cp -p "$cfg" "$cfg.rsv2-backup"
      # Our block starts on a line of its own.
      [ -z "$(tail -c 1 "$cfg")" ] || echo >> "$cfg"
    else
      v=${CONTAINERD_CONFIG_VERSION:-2}
      snippet "$v" >/dev/null
      mkdir -p "$(dirname "$cfg")"
      echo "version = $v" > "$cfg"
      : > "$created"
    fi
    systemd_cgroup
    { echo "$BEGIN"; snippet "$v" "$sc"; echo "$END"; } >> "$cfg"
    log "registered the CRI runtime \"rust\" in $CONFIG (config version $v, SystemdCgroup = $sc: $why)"
    changed=1
  fi
  [ "$changed" = 0 ] || restart_containerd
  label "$LABEL"
}

uninstall_shim() {
  rm -f "$HOST$BIN_DIR/containerd-shim-rust-v2" "$HOST$BIN_DIR/.containerd-shim-rust-v2.new"
  log "removed $BIN_DIR/containerd-shim-rust-v2"
  changed=0
  if [ -e "$created" ]; then
    rm -f "$cfg" "$created"
    log "removed $CONFIG (the installer had made it)"
    changed=1
  elif [ -f "$cfg" ] && grep -qF "$BEGIN" "$cfg"; then
    sed "/^# BEGIN containerd-shim-rust-v2 (node installer/,/^# END containerd-shim-rust-v2\$/d" "$cfg" > "$cfg.rsv2-tmp"
    cat "$cfg.rsv2-tmp" > "$cfg"
    rm -f "$cfg.rsv2-tmp" "$cfg.rsv2-backup"
    log "removed the runtime from $CONFIG"
    changed=1
  fi
  [ "$changed" = 0 ] || restart_containerd
  label "${LABEL%%=*}-"
}

case "${1:-}" in
  install) install_shim ;;
  uninstall) uninstall_shim ;;
  run)
    install_shim
    log "installed; waiting (the pod's preStop hook uninstalls)"
    trap 'exit 0' TERM INT
    while :; do sleep 3600 & wait $!; done
    ;;
  *) echo "usage: installer.sh install|uninstall|run" >&2; exit 2 ;;
esac
