#!/usr/bin/env bash
# Installs containerd-shim-rust-v2 where containerd looks for shims, and
# registers the runtime with the CRI plugin without clobbering an existing
# config. Usage: packaging/install.sh [BINARY] (default: a fresh release build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-}
if [ -z "$bin" ]; then
  (cd "$here/.." && cargo build --locked --release -p containerd-shim-rust-v2)
  bin="$here/../target/release/containerd-shim-rust-v2"
fi
install -D -m 0755 "$bin" /usr/local/bin/containerd-shim-rust-v2
echo "installed /usr/local/bin/containerd-shim-rust-v2"

config=/etc/containerd/config.toml
if [ -f "$config" ] && grep -q 'io.containerd.rust.v2' "$config"; then
  echo "$config already registers io.containerd.rust.v2"
  exit 0
fi
mkdir -p "$(dirname "$config")"
if [ -f "$config" ]; then
  cp "$config" "$config.bak.$(date +%s)"
  if ! grep -qE '^\s*version\s*=\s*2' "$config"; then
    echo "$config is not a version 2 config: add packaging/containerd-config-v2.toml's section by hand" >&2
    exit 1
  fi
else
  echo "version = 2" > "$config"
fi
{ echo; cat "$here/containerd-config-v2.toml"; } >> "$config"
echo "registered io.containerd.rust.v2 in $config; restart containerd to load it"
