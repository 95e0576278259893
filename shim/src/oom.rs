//! Watching every container's memory cgroup for OOM kills, on one thread.
//!
//! The fds (v1 eventfd, v2 inotify) only wake us; the container's kill
//! counter decides whether a TaskOOM is due, under the container's lock. The
//! exit path runs the same check before it publishes TaskExit, so an OOM
//! kill is always reported before the exit it caused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use cgroup::OomSource;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use crate::container::Cell;

type Report = Box<dyn Fn(&Arc<Cell>) + Send + Sync>;

pub struct OomWatcher {
    epoll: Epoll,
    targets: Mutex<HashMap<u64, (Weak<Cell>, OomSource)>>,
    next: AtomicU64,
    report: Report,
}

impl OomWatcher {
    pub fn start(report: Report) -> std::io::Result<Arc<OomWatcher>> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let w = Arc::new(OomWatcher { epoll, targets: Mutex::new(HashMap::new()), next: AtomicU64::new(1), report });
        let me = w.clone();
        std::thread::Builder::new().name("oom".into()).spawn(move || me.run())?;
        Ok(w)
    }

    /// Watches `source` for the container in `cell` until the container is
    /// gone. Returns a token for [`OomWatcher::forget`].
    pub fn watch(&self, cell: &Arc<Cell>, source: OomSource) -> std::io::Result<u64> {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        self.epoll.add(&source, EpollEvent::new(EpollFlags::EPOLLIN, token))?;
        self.targets.lock().unwrap().insert(token, (Arc::downgrade(cell), source));
        Ok(token)
    }

    /// Stops watching; closing the fd also takes it out of the epoll set.
    pub fn forget(&self, token: u64) {
        self.targets.lock().unwrap().remove(&token);
    }

    fn run(&self) {
        let mut events = [EpollEvent::empty(); 16];
        loop {
            let n = match self.epoll.wait(&mut events, EpollTimeout::NONE) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("oom watcher: {e}");
                    return;
                }
            };
            for ev in &events[..n] {
                let cell = {
                    let targets = self.targets.lock().unwrap();
                    targets.get(&ev.data()).and_then(|(cell, source)| {
                        source.drain();
                        cell.upgrade()
                    })
                };
                if let Some(cell) = cell {
                    (self.report)(&cell);
                }
            }
        }
    }
}
