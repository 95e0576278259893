//! cgroup management for containerd-shim-rust-v2.
//!
//! [`Manager`] is what the shim calls; [`fs::FsCgroup`] implements it over
//! cgroupfs with cgroups-rs, for the legacy v1, hybrid (v1 controllers plus
//! an empty cgroup2 at /sys/fs/cgroup/unified, managed as v1) and unified
//! layouts; [`systemd::SystemdCgroup`] implements it through systemd, as a
//! transient scope unit, when the runtime options say `SystemdCgroup` or
//! the cgroupsPath is in systemd's `slice:prefix:name` form on a host that
//! systemd runs.

use std::path::{Path, PathBuf};

pub mod devices;
pub mod ebpf;
pub mod fs;
pub mod oom;
pub mod path;
pub mod stats;
pub mod systemd;

pub use fs::FsCgroup;
pub use oom::OomSource;
pub use path::{resolve, PathError};
pub use stats::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup {path}: {message}")]
    Manager { path: String, message: String },
    #[error("cgroup {path}: {action}: {source}")]
    Io { path: PathBuf, action: &'static str, source: std::io::Error },
    #[error("cgroup {path}: processes remain after kill: {pids:?}")]
    Busy { path: String, pids: Vec<i32> },
    #[error("cgroup {path}: not {state} after {waited_ms} ms")]
    Freeze { path: String, state: &'static str, waited_ms: u64 },
    #[error("cgroup {path}: load the device filter: {message}")]
    DeviceFilter { path: PathBuf, message: String },
    #[error("cgroup {path}: no {controller} controller")]
    NoController { path: String, controller: &'static str },
    #[error("{0}")]
    Path(#[from] path::PathError),
    #[error("systemd unit {unit}: {message}")]
    Systemd { unit: String, message: String },
    #[error("linux.cgroupsPath {path:?}: the cgroup already holds {} other process(es) ({pids:?}); a container needs a cgroup of its own", pids.len())]
    InUse { path: String, pids: Vec<i32> },
}

/// Moves `pid` into the cgroup at `path`, created where it is missing: the
/// shim's own cgroup (runc's ShimCgroup option). The path is cleaned like
/// a cgroupsPath, so it stays inside the hierarchy, and may not be the
/// root.
pub fn move_into(path: &str, pid: i32) -> Result<(), CgroupError> {
    let (clean, _) = resolve(Some(path), "")?;
    let mut cg = FsCgroup::new(&clean)?;
    // In every hierarchy: an operator may have made it in some only.
    cg.create()?;
    cg.add_proc(pid)
}

/// The host's cgroup layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Only v1 hierarchies.
    Legacy,
    /// v1 controllers, and a cgroup2 at /sys/fs/cgroup/unified that holds
    /// no controllers. Managed as v1.
    Hybrid,
    /// cgroup2 at /sys/fs/cgroup.
    Unified,
}

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).map(|s| s.filesystem_type().0 as i64 == CGROUP2_SUPER_MAGIC).unwrap_or(false)
}

pub fn detect() -> Layout {
    let root = Path::new("/sys/fs/cgroup");
    if is_cgroup2(root) {
        Layout::Unified
    } else if is_cgroup2(&root.join("unified")) {
        Layout::Hybrid
    } else {
        Layout::Legacy
    }
}

/// How a new process enters a container's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// The process moves itself, while it is still single-threaded, by
    /// writing "0" into each of these v1 `tasks` files. Recent kernels
    /// (cgroup_procs_write_start: "if we migrate a single thread, we don't
    /// care about threadgroup stability") take no cgroup_threadgroup_rwsem
    /// for a thread that moves itself alone, and that rwsem's write side
    /// waits for an RCU grace period: 6 to 14 ms on this 6.18 host for the
    /// first `cgroup.procs` write of each start or exec, 0.04 ms for the
    /// self-move. Older kernels take the rwsem either way. A
    /// single-threaded process moved by its only thread is moved whole.
    SelfTasks(Vec<PathBuf>),
    /// cgroup v2, where a thread cannot leave its domain alone: the
    /// spawner starts the process inside this directory with
    /// clone3(CLONE_INTO_CGROUP), which takes that rwsem only for read, or
    /// where the kernel cannot, writes its pid with [`Manager::add_proc`].
    IntoCgroup(PathBuf),
    /// The spawner writes the pid with [`Manager::add_proc`].
    ByPid,
}

impl Entry {
    /// The files a self-moving process writes, none for [`Entry::ByPid`].
    pub fn self_tasks(&self) -> Vec<PathBuf> {
        match self {
            Entry::SelfTasks(files) => files.clone(),
            Entry::IntoCgroup(_) | Entry::ByPid => Vec::new(),
        }
    }
}

/// A container's cgroup, as the shim uses it.
pub trait Manager: Send + Sync {
    /// The cgroupsPath this manager was created for (cgroupfs form).
    fn path(&self) -> &str;
    /// Moves a process (and its future children) into the cgroup.
    fn add_proc(&mut self, pid: i32) -> Result<(), CgroupError>;
    /// Creates the cgroup and says how a new process should enter it.
    fn prepare(&mut self) -> Result<Entry, CgroupError>;
    /// Applies `linux.resources`.
    fn set(&mut self, resources: &oci_spec::runtime::LinuxResources) -> Result<(), CgroupError>;
    /// Every process in the cgroup.
    fn procs(&self) -> Result<Vec<i32>, CgroupError>;
    /// Every process in the cgroup and in the cgroups below it.
    fn all_procs(&self) -> Result<Vec<i32>, CgroupError>;
    /// Sends `signal` to every process in the cgroup, with the cgroup frozen
    /// so that nothing forks past the signal.
    fn kill_all(&self, signal: i32) -> Result<(), CgroupError>;
    /// Kills what is left, waits for it to go, and removes the cgroup.
    fn destroy(&mut self) -> Result<(), CgroupError>;
    /// How the container's `cgroup` mount should look: (hierarchy
    /// directory, host directory of this cgroup) for each v1 hierarchy.
    fn v1_mounts(&self) -> Vec<(String, PathBuf)>;
    fn layout(&self) -> Layout;
    /// Freezes every process, returning once the kernel reports the cgroup
    /// frozen (v1 `FROZEN`, v2 `frozen 1` in cgroup.events).
    fn freeze(&self) -> Result<(), CgroupError>;
    fn thaw(&self) -> Result<(), CgroupError>;
    fn stats(&self) -> Result<Metrics, CgroupError>;
    /// How many processes of the cgroup the OOM killer has killed so far.
    fn oom_kills(&self) -> u64;
    /// A pollable fd that becomes readable on OOM activity in the cgroup.
    fn oom_source(&self) -> Result<OomSource, CgroupError>;
    /// The freezer's directory of the cgroup (the v1 freezer hierarchy's,
    /// or the unified one), for CRIU's --freeze-cgroup.
    fn freezer_dir(&self) -> Option<PathBuf>;
    /// The systemd unit that holds the cgroup, when systemd manages it.
    fn systemd_unit(&self) -> Option<&str> {
        None
    }
}
