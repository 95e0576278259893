//! Short jobs (a Task call, an exit's report) on threads that stay a
//! moment after their job.
//!
//! A thread made per job and ended after it costs, on every job, a 2 MiB
//! stack mapped and unmapped (the server runs without glibc's stack cache)
//! and a TLB shootdown of the other CPUs; an exec makes about ten Task
//! calls and an exit, and profiling showed those threads as the shim's
//! biggest CPU cost per exec (issue #7). A worker here waits [`LINGER`]
//! for the next job before it ends, so a burst of calls reuses a few
//! threads, while an idle shim still keeps none. A worker that ends gives
//! the heap's free pages back to the kernel (glibc keeps them otherwise,
//! and every idle shim would carry them). Not only the last one: in a
//! Kubernetes pod a worker blocks in Wait for as long as its container
//! runs.
//!
//! Jobs may block (Wait blocks until its process exits): a job never waits
//! for a worker that is busy. When no worker is idle, a new one starts.

use crate::LockExt;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How long a worker waits for another job before it ends. Shorter than
/// the 3 s after which issue #7 measures an idle shim; as long as the
/// events sender stays (events.rs).
pub const LINGER: Duration = Duration::from_secs(2);

type Job = Box<dyn FnOnce() + Send>;

struct Named {
    /// The job's thread name while it runs, as `ps -T` shows it.
    name: &'static [u8],
    job: Job,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Named>,
    /// Workers blocked waiting for a job.
    idle: usize,
    /// Workers alive.
    alive: usize,
}

#[derive(Clone)]
pub struct Workers {
    inner: Arc<Inner>,
    linger: Duration,
}

struct Inner {
    state: Mutex<State>,
    wake: Condvar,
    /// Runs on each worker as it ends.
    on_end: fn(),
}

impl Workers {
    pub fn new(on_end: fn()) -> Workers {
        Workers::with_linger(LINGER, on_end)
    }

    pub fn with_linger(linger: Duration, on_end: fn()) -> Workers {
        Workers { inner: Arc::new(Inner { state: Mutex::new(State::default()), wake: Condvar::new(), on_end }), linger }
    }

    /// Runs `job` on an idle worker, or on a new one if none is idle.
    /// `name` (at most 15 bytes) names the thread while the job runs.
    pub fn run(&self, name: &'static str, job: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
        let mut s = self.inner.state.locked();
        s.queue.push_back(Named { name: name.as_bytes(), job: Box::new(job) });
        // Every queued job needs a sleeper of its own to wake: one that
        // is already woken may be about to take an earlier job.
        if s.queue.len() <= s.idle {
            self.inner.wake.notify_one();
            return Ok(());
        }
        let inner = self.inner.clone();
        let linger = self.linger;
        match std::thread::Builder::new().name(name.into()).spawn(move || inner.work(linger)) {
            Ok(_) => {
                s.alive += 1;
                Ok(())
            }
            Err(e) => {
                s.queue.pop_back();
                Err(e)
            }
        }
    }

    #[cfg(test)]
    fn alive(&self) -> usize {
        self.inner.state.locked().alive
    }

    #[cfg(test)]
    fn idle(&self) -> usize {
        self.inner.state.locked().idle
    }
}

impl Inner {
    fn work(&self, linger: Duration) {
        let mut s = self.state.locked();
        loop {
            if let Some(Named { name, job }) = s.queue.pop_front() {
                drop(s);
                set_thread_name(name);
                // A job that panics (rpc.rs catches a Task call's own
                // panic) must not end the worker with the count still
                // holding it, nor the shim.
                if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)) {
                    log::error!("a {} job panicked: {}", String::from_utf8_lossy(name), crate::rpc::panic_message(&*panic));
                }
                s = self.state.locked();
                continue;
            }
            s.idle += 1;
            let (guard, timeout) = self.wake.wait_timeout(s, linger).unwrap_or_else(|e| e.into_inner());
            s = guard;
            s.idle -= 1;
            if timeout.timed_out() && s.queue.is_empty() {
                s.alive -= 1;
                drop(s);
                (self.on_end)();
                return;
            }
        }
    }
}

/// Gives the heap's free pages back to the kernel: glibc keeps freed pages
/// otherwise (a Create parses a whole spec), and an idle shim would carry
/// them (issue #7 counts every idle shim's PSS). The server's workers run
/// it as they end.
pub fn release_memory() {
    // SAFETY: malloc_trim only returns free memory to the kernel.
    unsafe { libc::malloc_trim(0) };
}

/// PR_SET_NAME for the calling thread; a name over 15 bytes is cut.
fn set_thread_name(name: &[u8]) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr()) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Instant;

    static ENDED: AtomicUsize = AtomicUsize::new(0);

    fn count_end() {
        ENDED.fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn reuses_an_idle_worker_and_never_queues_behind_a_blocked_job() {
        let w = Workers::with_linger(Duration::from_millis(300), count_end);
        // A job that blocks until released, as Wait does.
        let (release, gate) = mpsc::channel::<()>();
        let (done_tx, done) = mpsc::channel::<&'static str>();
        let d = done_tx.clone();
        w.run("blocked", move || {
            gate.recv().unwrap();
            d.send("blocked").unwrap();
        })
        .unwrap();
        // Jobs queued while the first blocks still run, each on a worker.
        for _ in 0..3 {
            let d = done_tx.clone();
            w.run("quick", move || d.send("quick").unwrap()).unwrap();
            assert_eq!(done.recv_timeout(Duration::from_secs(5)).unwrap(), "quick");
            wait_for(|| w.idle() == 1);
        }
        // One blocked worker and one reused for the three quick jobs.
        assert_eq!(w.alive(), 2);
        // Two jobs queued at once while one worker is idle: both run.
        let (d1, d2) = (done_tx.clone(), done_tx.clone());
        let (hold, held) = mpsc::channel::<()>();
        w.run("a", move || {
            held.recv().unwrap();
            d1.send("a").unwrap();
        })
        .unwrap();
        w.run("b", move || d2.send("b").unwrap()).unwrap();
        assert_eq!(done.recv_timeout(Duration::from_secs(5)).unwrap(), "b");
        hold.send(()).unwrap();
        assert_eq!(done.recv_timeout(Duration::from_secs(5)).unwrap(), "a");
        release.send(()).unwrap();
        assert_eq!(done.recv_timeout(Duration::from_secs(5)).unwrap(), "blocked");

        // Idle workers end after the linger, each running on_end.
        assert_eq!(ENDED.load(Ordering::SeqCst), 0, "no worker ends while jobs keep coming");
        let alive = w.alive();
        wait_for(|| w.alive() == 0);
        wait_for(|| ENDED.load(Ordering::SeqCst) == alive);
    }

    fn wait_for(cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for the workers");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn nothing() {}

    #[test]
    fn names_the_thread_for_its_job() {
        let w = Workers::with_linger(Duration::from_millis(100), nothing);
        let (tx, rx) = mpsc::channel();
        w.run("first", || {}).unwrap();
        w.run("second-job-name", move || tx.send(std::fs::read_to_string("/proc/thread-self/comm").unwrap()).unwrap()).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap().trim(), "second-job-name");
    }
}
