//! The `serve` role: the long-lived shim server that `start` spawned.
//!
//! It is a child subreaper in its own session, reparented to PID 1, logging
//! to the bundle's `log` FIFO. It serves the Task API under both
//! `containerd.task.v2.Task` (containerd 1.6 and 1.7) and
//! `containerd.task.v3.Task` (2.x): the messages are identical on the wire.
//! The main thread runs the ttrpc loop (rpc.rs); the one other thread an
//! idle server keeps is the IO loop (io_loop.rs), which also reads SIGCHLD
//! for the reaper.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

use containerd_shim::{logger::FifoLogger, Flags};
use containerd_shim_protos::shim::shim_ttrpc::create_task;

use crate::events::Events;
use crate::reaper::Reaper;
use crate::rpc::{self, Methods, Quit, RpcError};
use crate::service::Service;
use crate::workers::Workers;

/// The listening socket `start` bound and handed over.
pub const LISTEN_FD: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("become a child subreaper: {0}")]
    Subreaper(nix::errno::Errno),
    #[error("start the reaper: {0}")]
    Reaper(std::io::Error),
    #[error("{0}")]
    Rpc(#[from] RpcError),
    #[error("create the quit eventfd: {0}")]
    Quit(std::io::Error),
    #[error("TTRPC_ADDRESS is not set: the server is started by `start`")]
    NoAddress,
}

/// The same handlers, registered under the v2 and v3 service names (the
/// bench's null shim serves its own Task this way too).
pub fn task_methods(service: Arc<dyn containerd_shim_protos::Task + Send + Sync>) -> Methods {
    let v3 = create_task(service.clone());
    let v2 = create_task(service).into_iter().map(|(k, v)| (k.replace("containerd.task.v3.Task", "containerd.task.v2.Task"), v));
    v3.into_iter().chain(v2).collect()
}

/// Our records at the chosen level; the ttrpc library's chatter about its
/// own listener and connections only at debug.
struct Filtered {
    inner: FifoLogger,
    debug: bool,
}

impl log::Log for Filtered {
    fn enabled(&self, m: &log::Metadata) -> bool {
        (self.debug || !m.target().starts_with("ttrpc") || m.level() <= log::Level::Warn) && self.inner.enabled(m)
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            self.inner.log(r);
        }
    }
    fn flush(&self) {
        self.inner.flush();
    }
}

fn init_logging(flags: &Flags) {
    // O_RDWR never blocks on open, whether or not containerd has opened its
    // reader yet, and O_NONBLOCK drops a line rather than stall the shim
    // while containerd is down and the FIFO is full.
    let log = std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_NONBLOCK).open("log");
    if let Ok(file) = log {
        let _ = log::set_boxed_logger(Box::new(Filtered { inner: FifoLogger::with_file(file), debug: flags.debug }));
    }
    let level = if flags.debug { log::LevelFilter::Debug } else { log::LevelFilter::Info };
    log::set_max_level(level);
}

/// When `start` spawned the server (nanoseconds since the epoch), for the
/// debug log of how long the server took to serve.
pub const STARTED_AT_ENV: &str = "_RSV2_SPAWNED_AT";

/// What `start` chose for this shim (the Task API), for the log.
pub const START_NOTE_ENV: &str = "_RSV2_START_NOTE";

/// glibc reads its tunables from this variable at process start.
pub const TUNABLES_ENV: &str = "GLIBC_TUNABLES";
/// No cache of the stacks of finished threads: requests run on workers
/// that end when idle (workers.rs), and glibc would otherwise keep up to
/// 40 MiB of their stacks, each with its top pages still dirty, in an idle
/// shim. No per-thread malloc cache (tcache) either: a thread's cache goes
/// back to the heap only as the thread exits, after its worker's
/// malloc_trim, and a burst of execs then left ~130 KiB of free heap
/// dirty in an idle shim.
const SERVER_TUNABLES: &str = "glibc.pthread.stack_cache_size=0:glibc.malloc.tcache_count=0";

/// The GLIBC_TUNABLES `start` gives the server: ours after whatever
/// containerd's environment had.
pub fn with_server_tunables(inherited: Option<&str>) -> String {
    match inherited {
        Some(t) if !t.is_empty() => format!("{t}:{SERVER_TUNABLES}"),
        _ => SERVER_TUNABLES.to_string(),
    }
}

/// Gives back the environment's own GLIBC_TUNABLES, so that nothing the
/// server starts (the init stage, hooks, loggers) inherits ours.
fn restore_tunables() {
    let Ok(t) = std::env::var(TUNABLES_ENV) else { return };
    match t.strip_suffix(SERVER_TUNABLES).map(|rest| rest.trim_end_matches(':')) {
        Some("") => std::env::remove_var(TUNABLES_ENV),
        Some(rest) => std::env::set_var(TUNABLES_ENV, rest),
        None => {}
    }
}

pub fn run(flags: &Flags) -> Result<(), ServerError> {
    // Before any thread exists: the environment is not thread-safe.
    restore_tunables();
    let spawned_at: Option<u128> = std::env::var(STARTED_AT_ENV).ok().and_then(|v| v.parse().ok());
    std::env::remove_var(STARTED_AT_ENV);
    let note = std::env::var(START_NOTE_ENV).ok();
    std::env::remove_var(START_NOTE_ENV);
    // One malloc arena for the whole process: glibc otherwise gives each
    // thread that allocates an arena of its own, and an idle shim would
    // carry their dirty pages (issue #7 counts every idle shim's PSS).
    // SAFETY: mallopt before any thread of ours exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    // SAFETY: prctl with integer arguments.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    nix::errno::Errno::result(r).map_err(ServerError::Subreaper)?;
    // Writes to a FIFO whose reader is gone must fail with EPIPE, not kill
    // the shim. Spawned children get the default back (std resets SIGPIPE).
    // SAFETY: setting a disposition to SIG_IGN.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    init_logging(flags);

    let reaper = Reaper::start().map_err(ServerError::Reaper)?;
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").map_err(|_| ServerError::NoAddress)?;
    let events = Events::start(ttrpc_address, flags.namespace.clone());
    let quit = Arc::new(Quit::new().map_err(ServerError::Quit)?);
    let workers = Workers::new(crate::workers::release_memory);
    let service = Arc::new(Service::new(&flags.namespace, events.clone(), reaper, quit.clone(), workers.clone()));

    // Nothing we inherited, nor the listener, may reach a child: every fd
    // from 3 up becomes close-on-exec (fds inherited from containerd's
    // environment, such as a make jobserver's, included).
    // SAFETY: close_range with integer arguments.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    // SAFETY: `start` passed the bound listener as this fd for our use.
    let listener = unsafe { OwnedFd::from_raw_fd(LISTEN_FD) };
    log::info!("shim serving {} pid {}", flags.socket, std::process::id());
    if let Some(note) = note {
        log::info!("{note}");
    }
    if let Some(at) = spawned_at {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        log::debug!("shim spawn: serving {:.2} ms after `start` spawned the server", now.saturating_sub(at) as f64 / 1e6);
    }
    let held = service.clone();
    rpc::serve(listener, task_methods(service), &workers, &quit, &move || held.is_empty(), rpc::IDLE_EXIT)?;
    log::info!("shim exiting");
    events.close();
    let path = flags.socket.strip_prefix("unix://").unwrap_or(&flags.socket);
    let _ = std::fs::remove_file(path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_tunables_come_after_inherited_ones() {
        assert_eq!(with_server_tunables(None), SERVER_TUNABLES);
        assert_eq!(with_server_tunables(Some("")), SERVER_TUNABLES);
        assert_eq!(with_server_tunables(Some("glibc.malloc.check=3")), format!("glibc.malloc.check=3:{SERVER_TUNABLES}"));
    }

    #[test]
    fn every_task_method_is_served_under_v2_and_v3() {
        let service = Arc::new(Service::new(
            "test",
            Events::start("/nonexistent".into(), "test".into()),
            Arc::new(Reaper::default()),
            Arc::new(Quit::new().unwrap()),
            Workers::new(|| {}),
        ));
        let methods = task_methods(service);
        for name in ["Create", "Start", "State", "Wait", "Kill", "Delete", "Pids", "Exec", "ResizePty", "CloseIO", "Pause", "Resume", "Update", "Stats", "Connect", "Shutdown", "Checkpoint"] {
            for version in ["v2", "v3"] {
                let key = format!("/containerd.task.{version}.Task/{name}");
                assert!(methods.contains_key(&key), "{key} is not registered");
            }
        }
    }
}
