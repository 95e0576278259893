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

/// Makes `cmd`'s child start with no signal blocked. The shim blocks
/// SIGCHLD in every thread (its reaper reads it from a signalfd), and std's
/// Command passes the signal mask on to the child as it is: a hook or a
/// logger that waits for children of its own would never hear of them.
pub fn unblock_signals_in_child(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: sigemptyset and sigprocmask are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
