# Shared by scripts/demo and scripts/test: install what is missing, build.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "run as root: containers need namespaces, mounts and cgroups" >&2
    exit 1
  fi
}

# Debian packages the project runs against: containerd 1.6 and ctr, runc and
# its shim (the reference the tests compare against), criu (checkpoint and
# restore), busybox-static (the
# test root filesystems), bsdutils (script(1), for terminal tests),
# containernetworking-plugins (CNI for the CRI tests), protobuf-compiler (the
# CRI client's build), qemu-system-x86 and cpio (the cgroup v2 VM).
install_packages() {
  local want=(containerd runc criu busybox-static bsdutils containernetworking-plugins protobuf-compiler qemu-system-x86 cpio) missing=()
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if ! command -v cargo >/dev/null; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null || { echo "cargo is missing: install a Rust toolchain (1.80 or newer)" >&2; exit 1; }
}

build_shim() {
  (cd "$ROOT" && cargo build --locked -p containerd-shim-rust-v2)
  SHIM_BIN="$ROOT/target/debug/containerd-shim-rust-v2"
  export SHIM_BIN
}
