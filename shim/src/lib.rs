//! containerd-shim-rust-v2: a containerd shim-v2 runtime that does
//! runc-style isolation itself.
//!
//! Process roles, by the first argument:
//! - `start`: prints the shim address (spawning the server if needed);
//! - `delete`: cleans up after a shim containerd cannot reach;
//! - `serve`: the Task ttrpc server;
//! - `init`: the init stage that becomes a container process (internal).
//!
//! A library with a two-line binary (main.rs), so that the fuzzers
//! (fuzz/) drive the same ttrpc server, Task service and option decoder
//! that containerd talks to.

pub mod container;
pub mod criu;
pub mod delete;
pub mod events;
pub mod features;
pub mod io_loop;
pub mod oom;
pub mod options;
pub mod reaper;
pub mod rootfs_mounts;
pub mod rpc;
pub mod server;
pub mod service;
pub mod start;
pub mod state;
pub mod stdio;
pub mod task_api;
pub mod workers;

use std::io::Write;

use containerd_shim_protos::protobuf::Message;

const USAGE: &str = "\
usage: containerd-shim-rust-v2 [flags] <start|delete>
       containerd-shim-rust-v2 -info | -v | --version | -h | --help | features

A containerd shim-v2 runtime (runtime type io.containerd.rust.v2) that does
runc-style isolation itself. containerd runs it; a person rarely needs to.

actions (run by containerd, in the bundle directory):
  start       print the address of the shim serving this container's pod,
              starting that shim if none serves it yet
  delete      clean up after a shim containerd cannot reach

flags (set by containerd):
  -namespace NS        containerd namespace
  -id ID               container id
  -address PATH        containerd's gRPC socket
  -publish-binary PATH containerd binary to publish events with
  -bundle PATH         bundle directory (delete)
  -debug               debug logging (containerd's log level is debug)

for people:
  -info                RuntimeInfo (protobuf) for containerd 2.x, options on stdin
  -v, --version        version, git revision, compiler and Task APIs
  features             what this runtime supports, as `runc features` JSON
  -h, --help           this text

environment:
  RSV2_TASK_API=2|3    force the Task API `start` offers (default: v3 to
                       containerd 2.x, v2 to 1.6 and 1.7)
";

/// Writes to stdout; a reader that went away (`| head`) is not an error
/// worth a panic.
fn say(text: &str) {
    let _ = std::io::stdout().write_all(text.as_bytes());
}

/// The binary: the role named by the first argument.
pub fn main() {
    let args: Vec<_> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == runtime::INIT_ROLE) {
        runtime::init::main();
    }
    match args.get(1).and_then(|a| a.to_str()) {
        Some("-h" | "--help" | "-help" | "help") => {
            say(USAGE);
            return;
        }
        Some("--version" | "-version" | "-v") if args.len() == 2 => {
            say(&format!(
                "containerd-shim-rust-v2 {}\nrevision: {}\ncompiler: {}\ntask api: containerd.task.v2.Task, containerd.task.v3.Task\n",
                features::VERSION,
                features::REVISION,
                env!("RSV2_RUST_VERSION")
            ));
            return;
        }
        Some("features") => {
            say(&format!("{}\n", serde_json::to_string_pretty(&features::features()).unwrap_or_default()));
            return;
        }
        _ => {}
    }
    let flags = match containerd_shim::parse(&args[1..]) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("containerd-shim-rust-v2: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    if flags.info {
        // containerd 2.x asks what runtime this is, with the handler's
        // options on stdin, before any shim exists.
        match start::read_options() {
            Ok(options) => {
                let _ = std::io::stdout().write_all(&features::runtime_info(&options).write_to_bytes().unwrap_or_default());
                return;
            }
            Err(e) => {
                eprintln!("containerd-shim-rust-v2 -info: {e}");
                std::process::exit(1);
            }
        }
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
