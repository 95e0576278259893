#!/usr/bin/env bash
# Installs containerd-shim-rust-v2 where containerd looks for shims, and
# registers the runtime with the CRI plugin without clobbering an existing
# config: the section is appended only if the runtime is not registered yet,
# after a backup, in the config's own version (2 for containerd 1.6/1.7,
# 3 for 2.x).
# Usage: packaging/install.sh [BINARY] (default: a fresh release build)
# Environment: INSTALL_BIN_DIR (default /usr/local/bin), CONTAINERD_CONFIG
# (default /etc/containerd/config.toml).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-}
if [ -z "$bin" ]; then
  # Static and non-PIE: no dynamic relocations, so the binary's data pages
  # stay clean and shared between the shims of a node (see README,
  # Performance).
  (cd "$here/.." && cargo rustc --locked --release -p containerd-shim-rust-v2 --bin containerd-shim-rust-v2 \
    -- -C target-feature=+crt-static -C relocation-model=static)
  bin="$here/../target/release/containerd-shim-rust-v2"
fi
# /usr/local/bin is on the PATH containerd searches for shim binaries.
bindir=${INSTALL_BIN_DIR:-/usr/local/bin}
install -D -m 0755 "$bin" "$bindir/containerd-shim-rust-v2"
echo "installed $bindir/containerd-shim-rust-v2"

config=${CONTAINERD_CONFIG:-/etc/containerd/config.toml}
if [ -f "$config" ] && grep -q 'io.containerd.rust.v2' "$config"; then
  echo "$config already registers io.containerd.rust.v2"
  exit 0
fi
mkdir -p "$(dirname "$config")"
if [ -f "$config" ]; then
  version=$(sed -nE 's/^\s*version\s*=\s*([0-9]+).*/\1/p' "$config" | head -n 1)
  cp "$config" "$config.bak.$(date +%s)"
else
  # containerd's own major version decides the config version.
  case "$(containerd --version 2>/dev/null | awk '{print $3}')" in
    v2.*|2.*) version=3 ;;
    *) version=2 ;;
  esac
  echo "version = $version" > "$config"
fi
case "${version:-1}" in
  2) snippet="$here/containerd-config-v2.toml" ;;
  3) snippet="$here/containerd-config-v3.toml" ;;
  *) echo "$config has config version ${version:-1}: add the runtime by hand (see packaging/)" >&2; exit 1 ;;
esac
{ echo; cat "$snippet"; } >> "$config"
echo "registered io.containerd.rust.v2 in $config (version $version); restart containerd to load it"
