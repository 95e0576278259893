//! The one waitpid(-1) loop of the shim.
//!
//! The shim is a child subreaper, so it inherits every orphan of its
//! containers, and stage 2 of the init stage reaches it only by reparenting.
//! An exit can therefore arrive before anyone asked for that pid: such exits
//! are held for a while instead of dropped, so a container that exits within
//! a millisecond of starting still has its exit seen.

use crate::LockExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::io_loop::io_loop;

pub type ExitHandler = Box<dyn FnOnce(i32) + Send>;

/// How long an exit nobody asked for is kept.
const HOLD: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Inner {
    handlers: HashMap<i32, ExitHandler>,
    unclaimed: HashMap<i32, (i32, Instant)>,
}

#[derive(Default)]
pub struct Reaper {
    inner: Mutex<Inner>,
}

/// containerd's convention: the exit code, or 128 + the signal.
pub fn exit_code(status: WaitStatus) -> Option<(i32, i32)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), code)),
        WaitStatus::Signaled(pid, sig, _) => Some((pid.as_raw(), 128 + sig as i32)),
        _ => None,
    }
}

impl Reaper {
    /// Blocks SIGCHLD and has the IO loop read it from a signalfd. Must run
    /// on the main thread before any other thread exists, so that every
    /// thread inherits the blocked mask and none takes the signal itself.
    /// Children get an empty mask back: std's Command resets it.
    pub fn start() -> std::io::Result<Arc<Reaper>> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        mask.thread_block()?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        let reaper = Arc::new(Reaper::default());
        let r = reaper.clone();
        io_loop().watch(signals, move |signals| {
            // Several exits can share one signal: read them all, then reap
            // until nothing is left.
            while let Ok(Some(_)) = signals.read_signal() {}
            // Before the exit is handled, while an OOM-killed container's
            // cgroup is still there (oom.rs).
            crate::oom::snapshot();
            r.reap();
        })?;
        Ok(reaper)
    }

    fn reap(&self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => {
                    if let Some((pid, code)) = exit_code(status) {
                        self.exited(pid, code);
                    }
                }
            }
        }
    }

    fn exited(&self, pid: i32, code: i32) {
        let handler = {
            let mut inner = self.inner.locked();
            let now = Instant::now();
            inner.unclaimed.retain(|_, (_, at)| now.duration_since(*at) < HOLD);
            match inner.handlers.remove(&pid) {
                Some(h) => Some(h),
                None => {
                    inner.unclaimed.insert(pid, (code, now));
                    None
                }
            }
        };
        if let Some(h) = handler {
            log::debug!("pid {pid} exited with {code}");
            h(code);
        }
    }

    /// Calls `handler` once `pid`, spawned no earlier than `since`, exits,
    /// or at once if it already has. A held exit from before `since` was
    /// an earlier process with the same pid (a stage 1, a logger, an
    /// orphan): under load pids come round within the hold, and a new
    /// exec was handed such an exit, 0, as its own.
    pub fn on_exit(&self, pid: i32, since: Instant, handler: ExitHandler) {
        let held = {
            let mut inner = self.inner.locked();
            match inner.unclaimed.remove(&pid) {
                Some((code, at)) if at >= since => Some(code),
                _ => {
                    inner.handlers.insert(pid, handler);
                    return;
                }
            }
        };
        if let Some(code) = held {
            handler(code);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn exit_before_subscription_is_delivered() {
        let r = Reaper::default();
        let since = Instant::now();
        r.exited(4242, 7);
        let (tx, rx) = channel();
        r.on_exit(4242, since, Box::new(move |c| tx.send(c).unwrap()));
        assert_eq!(rx.try_recv().unwrap(), 7);
    }

    #[test]
    fn exit_after_subscription_is_delivered_once() {
        let r = Reaper::default();
        let (tx, rx) = channel();
        r.on_exit(4243, Instant::now(), Box::new(move |c| tx.send(c).unwrap()));
        r.exited(4243, 137);
        r.exited(4243, 1);
        assert_eq!(rx.try_recv().unwrap(), 137);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn an_earlier_process_with_the_same_pid_is_not_handed_over() {
        let r = Reaper::default();
        // A stage 1 with pid 4244 exits 0 and nobody claims it...
        r.exited(4244, 0);
        std::thread::sleep(Duration::from_millis(2));
        // ...then an exec whose pid came round to 4244 is spawned.
        let spawned = Instant::now();
        let (tx, rx) = channel();
        r.on_exit(4244, spawned, Box::new(move |c| tx.send(c).unwrap()));
        assert!(rx.try_recv().is_err(), "the earlier exit was taken for the new process's");
        r.exited(4244, 3);
        assert_eq!(rx.try_recv().unwrap(), 3);
    }

    #[test]
    fn signal_exit_is_128_plus_signal() {
        let s = WaitStatus::Signaled(Pid::from_raw(5), nix::sys::signal::Signal::SIGKILL, false);
        assert_eq!(exit_code(s), Some((5, 137)));
    }
}
