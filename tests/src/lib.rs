//! Harness for the end-to-end tests of `containerd-shim-rust-v2`.
//!
//! Every test starts its own [`PrivateContainerd`]: a containerd 1.6 with its
//! own root, state, socket and containerd namespace under `/tmp`, driven with
//! the real `ctr` client. Nothing here talks to a system containerd, and
//! dropping the instance removes everything it left on the host (processes,
//! mounts, cgroups, shim sockets, files), even when the test panicked.
//!
//! The runtime under test is `io.containerd.rust.v2` unless `IT_RUNTIME` names
//! another one: `IT_RUNTIME=io.containerd.runc.v2` runs the suite against runc,
//! which is how the expectations themselves are checked.

pub mod check;
pub mod cni;
mod containerd;
pub mod cri;
pub mod flavor;
mod ctr;
mod events;
pub mod host;
pub mod image;
pub mod probe;
mod procio;
mod rootfs;
pub mod soak;
pub mod tasks_api;
pub mod vm;

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use containerd::{private_config_v3_head, Leftover, PrivateContainerd};
pub use ctr::{Background, Run, TaskInfo};
pub use procio::{output_with_input, shell_quote, Exec, Logged};
pub use events::{task_events, Event, EventWatcher};
pub use rootfs::busybox_rootfs;

/// Runtime type of the shim this project builds.
pub const RUST_RUNTIME: &str = "io.containerd.rust.v2";
/// Runtime type of containerd's own runc shim, the reference behaviour.
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
/// Name containerd derives from [`RUST_RUNTIME`] when it looks the shim up in PATH.
pub const SHIM_NAME: &str = "containerd-shim-rust-v2";

/// The runtime the tests exercise: `IT_RUNTIME`, else [`RUST_RUNTIME`].
pub fn runtime_under_test() -> String {
    std::env::var("IT_RUNTIME").unwrap_or_else(|_| RUST_RUNTIME.to_string())
}

/// Whether the runtime under test is this project's shim (as opposed to the
/// runc reference), for the few checks that are about our shim's own design.
pub fn testing_rust_shim() -> bool {
    runtime_under_test() == RUST_RUNTIME
}

/// Path of the shim binary: `SHIM_BIN`, else the workspace's debug build.
/// Panics when it does not exist: a missing prerequisite must fail loudly,
/// never turn into skipped tests.
pub fn shim_binary() -> PathBuf {
    let path = match std::env::var_os("SHIM_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/debug")
            .join(SHIM_NAME),
    };
    assert!(
        path.is_file(),
        "shim binary {} not found: run `cargo build -p {SHIM_NAME}` first, or point SHIM_BIN at it",
        path.display()
    );
    path.canonicalize()
        .unwrap_or_else(|e| panic!("cannot resolve shim binary {}: {e}", path.display()))
}

/// Panics unless running as root: containers, mounts and cgroups need it, and
/// a test that cannot do its job must fail rather than skip.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the integration tests must run as root (they start containerd and create containers); \
         run them with sudo or as root"
    );
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes; returns
/// whether it held. Tests assert on the result instead of sleeping blindly.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
