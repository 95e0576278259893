//! Knowing when the OOM killer acts in a cgroup.
//!
//! - v1: an eventfd registered through cgroup.event_control on
//!   memory.oom_control (Documentation/admin-guide/cgroup-v1/memory.rst).
//! - v2: inotify on memory.events, whose `oom_kill` counter grows. The v2
//!   notifier of cgroups-rs 0.5.1 registers the v1 files and never fires.
//!
//! Either way the fd only says "look": whether a kill happened is read from
//! the counter ([`crate::Manager::oom_kills`]), so a spurious wake-up never
//! turns into a false TaskOOM.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::CgroupError;

pub struct OomSource {
    fd: OwnedFd,
    kind: Kind,
    /// v1: memory.oom_control stays open while the event is registered.
    _control: Option<std::fs::File>,
    /// The file with the `oom_kill` counter (v2 memory.events, v1
    /// memory.oom_control).
    counter: PathBuf,
}

enum Kind {
    EventFd,
    Inotify,
}

fn io(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |source| CgroupError::Io { path, action, source }
}

impl OomSource {
    pub fn eventfd(memory_dir: &Path) -> Result<OomSource, CgroupError> {
        // SAFETY: eventfd returns a new fd or -1.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(io(memory_dir, "eventfd")(std::io::Error::last_os_error()));
        }
        // SAFETY: raw is a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let control_path = memory_dir.join("memory.oom_control");
        let control = std::fs::File::open(&control_path).map_err(io(&control_path, "open"))?;
        let ctl = memory_dir.join("cgroup.event_control");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&ctl)
            .and_then(|mut f| f.write_all(format!("{} {}", fd.as_raw_fd(), control.as_raw_fd()).as_bytes()))
            .map_err(io(&ctl, "register oom event"))?;
        Ok(OomSource { fd, kind: Kind::EventFd, _control: Some(control), counter: control_path })
    }

    pub fn inotify(events: &Path) -> Result<OomSource, CgroupError> {
        // SAFETY: inotify_init1 returns a new fd or -1.
        let raw = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if raw < 0 {
            return Err(io(events, "inotify")(std::io::Error::last_os_error()));
        }
        // SAFETY: raw is a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let c = std::ffi::CString::new(events.as_os_str().as_encoded_bytes()).unwrap_or_default();
        // SAFETY: valid fd and NUL-terminated path.
        if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), libc::IN_MODIFY) } < 0 {
            return Err(io(events, "watch")(std::io::Error::last_os_error()));
        }
        Ok(OomSource { fd, kind: Kind::Inotify, _control: None, counter: events.to_path_buf() })
    }

    /// The file that counts the cgroup's OOM kills.
    pub fn counter_file(&self) -> &Path {
        &self.counter
    }

    /// Consumes the readiness, so the next poll waits for new activity.
    pub fn drain(&self) {
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reading into a local buffer from an fd we own.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 || matches!(self.kind, Kind::EventFd) {
                return;
            }
        }
    }
}

impl AsFd for OomSource {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The `oom_kill` count in `file` (v2 memory.events or v1
/// memory.oom_control); None when it cannot be read (the cgroup is gone).
pub fn read_kills(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    Some(crate::stats::flat_keyed(&text).get("oom_kill").copied().unwrap_or(0))
}
