//! runc-style isolation from an OCI bundle, for containerd-shim-rust-v2.
//!
//! The shim (a multithreaded server) never forks into namespace or mount
//! work. It re-executes its own binary as the init stage ([`init`]), which
//! is single-threaded fresh from exec, and drives it over a sync socket
//! ([`launch`]). This crate knows nothing of ttrpc.

pub mod caps;
pub mod channel;
pub mod console;
pub mod exe;
pub mod hooks;
pub mod idmap;
pub mod init;
pub mod launch;
pub mod lsm;
pub mod namespaces;
pub mod paths;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod spawn;
pub mod spec;
pub mod syscall;
pub mod validate;

/// The hidden subcommand that runs the init stage.
pub const INIT_ROLE: &str = "init";
/// The environment variable that carries the init stage's sync socket.
pub const SYNC_FD_ENV: &str = "_RSV2_SYNC_FD";
