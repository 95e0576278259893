//! containerd-shim-rust-v2: a containerd shim-v2 runtime that does
//! runc-style isolation itself.
//!
//! Process roles, by the first argument:
//! - `start`: prints the shim address (spawning the server if needed);
//! - `delete`: cleans up after a shim containerd cannot reach;
//! - `serve`: the Task ttrpc server;
//! - `init`: the init stage that becomes a container process (internal).

mod container;
mod delete;
mod events;
mod io_loop;
mod oom;
mod options;
mod reaper;
mod rootfs_mounts;
mod rpc;
mod server;
mod service;
mod start;
mod state;
mod stdio;
mod task_api;
mod workers;

use std::io::Write;

use containerd_shim_protos::protobuf::Message;

fn main() {
    let args: Vec<_> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == runtime::INIT_ROLE) {
        runtime::init::main();
    }
    let flags = match containerd_shim::parse(&args[1..]) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("containerd-shim-rust-v2: {e}");
            std::process::exit(2);
        }
    };
    if flags.version {
        println!("containerd-shim-rust-v2 {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    if flags.info {
        // containerd 2.x asks what runtime this is before any shim exists.
        let info = containerd_shim_protos::types::introspection::RuntimeInfo { name: "io.containerd.rust.v2".into(), ..Default::default() };
        let _ = std::io::stdout().write_all(&info.write_to_bytes().unwrap_or_default());
        return;
    }
    let result = match flags.action.as_str() {
        "start" => start::run(&flags).map(|a| start::print(&a)).map_err(|e| e.to_string()),
        "delete" => delete::run(&flags)
            .map(|bytes| {
                let _ = std::io::stdout().write_all(&bytes);
            })
            .map_err(|e| e.to_string()),
        "serve" => server::run(&flags).map_err(|e| e.to_string()),
        other => Err(format!("unknown action {other:?}: expected start or delete")),
    };
    if let Err(e) = result {
        // The server's stderr is /dev/null: its log FIFO is where containerd
        // can show why it stopped.
        log::error!("{} failed: {e}", flags.action);
        eprintln!("containerd-shim-rust-v2 {}: {e}", flags.action);
        std::process::exit(1);
    }
}

/// Locking that survives a panic elsewhere: a job that panicked while it
/// held a lock fails its own call (rpc.rs catches the panic), and the
/// shim, which serves a whole pod, goes on with the data as it was left.
pub(crate) trait LockExt<T: ?Sized> {
    fn locked(&self) -> std::sync::MutexGuard<'_, T>;
}

impl<T: ?Sized> LockExt<T> for std::sync::Mutex<T> {
    fn locked(&self) -> std::sync::MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|e| e.into_inner())
    }
}
