//! Watching every container's memory cgroup for OOM kills, from the IO loop.
//!
//! The fds (v1 eventfd, v2 inotify) only wake us; the container's kill
//! counter decides whether a TaskOOM is due, under the container's lock. The
//! exit path runs the same check before it publishes TaskExit, so an OOM
//! kill is always reported before the exit it caused.

use std::sync::Arc;

use cgroup::OomSource;

use crate::container::Cell;
use crate::io_loop::io_loop;

type Report = Arc<dyn Fn(&Arc<Cell>) + Send + Sync>;

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
    pub fn watch(&self, cell: &Arc<Cell>, source: OomSource) -> std::io::Result<u64> {
        let cell = Arc::downgrade(cell);
        let report = self.report.clone();
        io_loop().watch(source, move |source| {
            source.drain();
            let Some(cell) = cell.upgrade() else { return };
            let report = report.clone();
            let spawned = std::thread::Builder::new().name("oom".into()).spawn(move || report(&cell));
            if let Err(e) = spawned {
                log::warn!("start an oom report: {e}");
            }
        })
    }

    /// Stops watching and closes the fd.
    pub fn forget(&self, token: u64) {
        io_loop().remove(token);
    }
}
