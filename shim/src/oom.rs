//! Watching every container's memory cgroup for OOM kills, from the IO loop.
//!
//! The fds (v1 eventfd, v2 inotify) only wake us; the container's kill
//! counter decides whether a TaskOOM is due, under the container's lock. The
//! exit path runs the same check before it publishes TaskExit, so an OOM
//! kill is always reported before the exit it caused.
//!
//! The counter is also read on the IO loop itself, at once: when the event
//! wakes it, and on every SIGCHLD before the reaper runs ([`snapshot`]).
//! Under the systemd driver, systemd removes a scope's cgroup as soon as
//! its last process is gone, and an exit path that read the counter only
//! later found no file and reported an OOM-killed container as "Error".

use crate::LockExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cgroup::OomSource;

use crate::container::Cell;
use crate::io_loop::io_loop;

type Report = Arc<dyn Fn(&Arc<Cell>) + Send + Sync>;

/// Every watched counter file, with the highest count read from it.
static COUNTERS: Mutex<Vec<(u64, PathBuf, Arc<AtomicU64>)>> = Mutex::new(Vec::new());

/// Reads every watched OOM counter now: the reaper calls it before it reaps,
/// while an OOM-killed container's cgroup still exists.
pub fn snapshot() {
    let counters = COUNTERS.locked();
    for (_, file, seen) in counters.iter() {
        if let Some(k) = cgroup::oom::read_kills(file) {
            seen.fetch_max(k, Ordering::SeqCst);
        }
    }
}

pub struct OomWatcher {
    report: Report,
}

impl OomWatcher {
    /// `report` runs on a short-lived thread of its own: it may watch the
    /// kill counter for a while, and the IO loop must not wait for it.
    pub fn start(report: Report) -> std::io::Result<Arc<OomWatcher>> {
        Ok(Arc::new(OomWatcher { report }))
    }

    /// Watches `source` for the container in `cell` until
    /// [`OomWatcher::forget`]. Returns a token for it.
    /// `seen` keeps the highest kill count read on the IO loop.
    pub fn watch(&self, cell: &Arc<Cell>, source: OomSource, seen: Arc<AtomicU64>) -> std::io::Result<u64> {
        let cell = Arc::downgrade(cell);
        let report = self.report.clone();
        let file = source.counter_file().to_path_buf();
        let counted = seen.clone();
        let token = io_loop().watch(source, move |source| {
            source.drain();
            if let Some(k) = cgroup::oom::read_kills(source.counter_file()) {
                counted.fetch_max(k, Ordering::SeqCst);
            }
            let Some(cell) = cell.upgrade() else { return };
            let report = report.clone();
            let spawned = std::thread::Builder::new().name("oom".into()).spawn(move || report(&cell));
            if let Err(e) = spawned {
                log::warn!("start an oom report: {e}");
            }
        })?;
        COUNTERS.locked().push((token, file, seen));
        Ok(token)
    }

    /// Stops watching and closes the fd.
    pub fn forget(&self, token: u64) {
        COUNTERS.locked().retain(|(t, _, _)| *t != token);
        io_loop().remove(token);
    }
}
