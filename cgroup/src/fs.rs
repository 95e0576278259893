//! The cgroupfs driver, over cgroups-rs's FsManager.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cgroups_rs::manager::{FsManager, Manager as _};
use cgroups_rs::fs::{hierarchies, Cgroup};
use cgroups_rs::CgroupPid;
use oci_spec::runtime::LinuxResources;

use crate::oom::OomSource;
use crate::stats::{self, Metrics};
use crate::{detect, CgroupError, Entry, Layout, Manager};

pub struct FsCgroup {
    inner: FsManager,
    path: String,
    layout: Layout,
    /// The v2 device filter in force, replaced on Update.
    device_filter: Option<std::os::fd::OwnedFd>,
}

impl FsCgroup {
    /// A handle on the cgroup at `path`; nothing is created until a process
    /// is added.
    pub fn new(path: &str) -> Result<FsCgroup, CgroupError> {
        // cgroups-rs joins this onto each hierarchy's mount point with
        // PathBuf::push, where an absolute path would replace the mount
        // point and create directories at the host's /.
        let inner = FsManager::new(path.trim_start_matches('/')).map_err(|e| CgroupError::Manager { path: path.into(), message: e.to_string() })?;
        Ok(FsCgroup { inner, path: path.to_string(), layout: detect(), device_filter: None })
    }

    fn err(&self, e: impl std::fmt::Display) -> CgroupError {
        CgroupError::Manager { path: self.path.clone(), message: e.to_string() }
    }

    /// Host directories of this cgroup, one per mounted hierarchy.
    fn dirs(&self) -> Vec<PathBuf> {
        let rel = self.path.trim_start_matches('/');
        if self.layout == Layout::Unified {
            return vec![Path::new("/sys/fs/cgroup").join(rel)];
        }
        let mounts: BTreeSet<&String> = self.inner.mounts().values().collect();
        mounts.into_iter().map(|m| Path::new(m).join(rel)).collect()
    }

    /// The directory that lists the cgroup's processes: the unified
    /// directory, or the v1 pids (else memory, else any) hierarchy.
    fn procs_dir(&self) -> Option<PathBuf> {
        let rel = self.path.trim_start_matches('/');
        if self.layout == Layout::Unified {
            return Some(Path::new("/sys/fs/cgroup").join(rel));
        }
        let m = self.inner.mounts();
        ["pids", "memory", "freezer", "cpu"].iter().find_map(|c| m.get(*c)).map(|m| Path::new(m).join(rel))
    }

    /// This cgroup's directory in a v1 controller's hierarchy.
    fn v1_dir(&self, controller: &str) -> Option<PathBuf> {
        self.inner.mounts().get(controller).map(|m| Path::new(m).join(self.path.trim_start_matches('/')))
    }

    fn unified_dir(&self) -> PathBuf {
        Path::new("/sys/fs/cgroup").join(self.path.trim_start_matches('/'))
    }

    /// Requests frozen or thawed and waits, at most `timeout`, until the
    /// kernel reports that state: writing the request is not the state, as
    /// the kernel freezes tasks one by one and v1 may sit in FREEZING
    /// (cgroups-rs 0.5.1 does not wait).
    fn set_frozen(&self, frozen: bool, timeout: Duration) -> Result<(), CgroupError> {
        let (file, on, off) = self.freezer_file().ok_or(CgroupError::NoController { path: self.path.clone(), controller: "freezer" })?;
        let value = if frozen { on } else { off };
        std::fs::write(&file, value).map_err(|source| CgroupError::Io { path: file.clone(), action: "write", source })?;
        let unified = self.layout == Layout::Unified;
        let start = Instant::now();
        loop {
            let reached = if unified {
                // cgroup.freeze holds the request; cgroup.events the state.
                let events = std::fs::read_to_string(self.unified_dir().join("cgroup.events")).unwrap_or_default();
                events.lines().any(|l| l == if frozen { "frozen 1" } else { "frozen 0" })
            } else {
                std::fs::read_to_string(&file).map(|s| s.trim() == value).unwrap_or(false)
            };
            if reached {
                return Ok(());
            }
            if start.elapsed() > timeout {
                let state = if frozen { "frozen" } else { "thawed" };
                return Err(CgroupError::Freeze { path: self.path.clone(), state, waited_ms: start.elapsed().as_millis() as u64 });
            }
            if !unified && frozen {
                // v1 retries a stuck FREEZING by writing FROZEN again.
                let _ = std::fs::write(&file, value);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Whether freezing was requested (a paused container).
    fn is_frozen(&self) -> bool {
        self.freezer_file().is_some_and(|(f, on, _)| std::fs::read_to_string(f).map(|s| s.trim() == on).unwrap_or(false))
    }

    fn freezer_file(&self) -> Option<(PathBuf, &'static str, &'static str)> {
        let rel = self.path.trim_start_matches('/');
        if self.layout == Layout::Unified {
            return Some((Path::new("/sys/fs/cgroup").join(rel).join("cgroup.freeze"), "1", "0"));
        }
        self.inner.mounts().get("freezer").map(|m| (Path::new(m).join(rel).join("freezer.state"), "FROZEN", "THAWED"))
    }
}

impl FsCgroup {
    /// Creates the cgroup in every hierarchy where it is missing: what
    /// FsManager::add_proc would create (v1 cpuset copies its parent's cpus
    /// and mems; v2 enables the parents' controllers), without moving
    /// anyone.
    pub fn create(&mut self) -> Result<(), CgroupError> {
        Cgroup::load(hierarchies::auto(), self.path.trim_start_matches('/')).create().map_err(|e| self.err(format!("create: {e}")))
    }
}

fn read_pids(file: &Path) -> std::io::Result<Vec<i32>> {
    Ok(std::fs::read_to_string(file)?.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

impl Manager for FsCgroup {
    fn path(&self) -> &str {
        &self.path
    }

    fn add_proc(&mut self, pid: i32) -> Result<(), CgroupError> {
        self.inner.add_proc(CgroupPid::from(pid as u64)).map_err(|e| self.err(format!("add pid {pid}: {e}")))
    }

    fn prepare(&mut self) -> Result<Entry, CgroupError> {
        if !self.inner.exists() {
            self.create()?;
        }
        if self.layout == Layout::Unified {
            return Ok(Entry::IntoCgroup(self.unified_dir()));
        }
        let tasks = self.v1_mounts().into_iter().map(|(_, dir)| dir.join("tasks")).filter(|f| f.exists()).collect();
        Ok(Entry::SelfTasks(tasks))
    }

    fn set(&mut self, resources: &LinuxResources) -> Result<(), CgroupError> {
        let resources = &crate::devices::with_defaults(resources);
        let unified = resources.unified().clone().unwrap_or_default();
        if self.layout != Layout::Unified {
            if !unified.is_empty() {
                return Err(self.err("linux.resources.unified needs cgroup v2; this host's controllers are v1"));
            }
            return self.inner.set(resources).map_err(|e| self.err(format!("apply resources: {e}")));
        }
        // cgroups-rs 0.5.1 has no v2 device controller (it fails with
        // SubsystemsEmpty): the rules become our eBPF filter instead.
        let mut rest = resources.clone();
        let devices = rest.devices().clone();
        rest.set_devices(None);
        self.inner.set(&rest).map_err(|e| self.err(format!("apply resources: {e}")))?;
        if let Some(rules) = devices {
            let prog = crate::ebpf::attach(&self.unified_dir(), &rules, self.device_filter.as_ref())?;
            self.device_filter = Some(prog);
        }
        // `unified`: raw cgroup v2 files, written last so they can refine
        // what the typed fields set. Keys are file names in this cgroup.
        for (key, value) in &unified {
            if key.is_empty() || key.contains('/') || key.starts_with('.') {
                return Err(self.err(format!("unified key {key:?} is not a file of this cgroup")));
            }
            let file = self.unified_dir().join(key);
            std::fs::write(&file, value).map_err(|source| CgroupError::Io { path: file.clone(), action: "write", source })?;
        }
        Ok(())
    }

    fn procs(&self) -> Result<Vec<i32>, CgroupError> {
        let Some(dir) = self.procs_dir() else { return Ok(Vec::new()) };
        match read_pids(&dir.join("cgroup.procs")) {
            Ok(p) => Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(CgroupError::Io { path: dir, action: "read cgroup.procs", source }),
        }
    }

    fn all_procs(&self) -> Result<Vec<i32>, CgroupError> {
        let Some(dir) = self.procs_dir() else { return Ok(Vec::new()) };
        let mut pids = Vec::new();
        let mut todo = vec![dir];
        while let Some(dir) = todo.pop() {
            match read_pids(&dir.join("cgroup.procs")) {
                Ok(p) => pids.extend(p),
                // Gone between the listing and the read.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(CgroupError::Io { path: dir, action: "read cgroup.procs", source }),
            }
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            todo.extend(entries.filter_map(|e| e.ok()).filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
        }
        Ok(pids)
    }

    fn kill_all(&self, signal: i32) -> Result<(), CgroupError> {
        // Freezing first closes the fork race: a process cannot create a
        // child between our listing and our signal (runc's signalAllProcesses).
        // A cgroup that is already frozen (a paused container) stays so.
        let has_freezer = self.freezer_file().is_some_and(|(f, _, _)| f.exists());
        let freeze_around = has_freezer && !self.is_frozen();
        if freeze_around {
            let _ = self.set_frozen(true, Duration::from_secs(1));
        }
        let pids = self.procs()?;
        for pid in &pids {
            // SAFETY: kill(2) with plain integers.
            unsafe { libc::kill(*pid, signal) };
        }
        if freeze_around {
            let _ = self.set_frozen(false, Duration::from_secs(1));
        }
        Ok(())
    }

    fn destroy(&mut self) -> Result<(), CgroupError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = self.procs()?;
            if pids.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(CgroupError::Busy { path: self.path.clone(), pids });
            }
            self.kill_all(libc::SIGKILL)?;
            std::thread::sleep(Duration::from_millis(10));
        }
        for dir in self.dirs() {
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(CgroupError::Io { path: dir, action: "remove", source }),
            }
        }
        Ok(())
    }

    fn v1_mounts(&self) -> Vec<(String, PathBuf)> {
        if self.layout == Layout::Unified {
            return Vec::new();
        }
        let rel = self.path.trim_start_matches('/');
        let mounts: BTreeSet<&String> = self.inner.mounts().iter().filter(|(k, _)| !k.is_empty()).map(|(_, v)| v).collect();
        mounts
            .into_iter()
            .filter(|m| Path::new(m) != Path::new("/sys/fs/cgroup/unified"))
            .filter_map(|m| {
                let name = Path::new(m).file_name()?.to_string_lossy().into_owned();
                Some((name, Path::new(m).join(rel)))
            })
            .collect()
    }

    fn layout(&self) -> Layout {
        self.layout
    }

    fn freeze(&self) -> Result<(), CgroupError> {
        self.set_frozen(true, Duration::from_secs(5))
    }

    fn thaw(&self) -> Result<(), CgroupError> {
        self.set_frozen(false, Duration::from_secs(5))
    }

    fn stats(&self) -> Result<Metrics, CgroupError> {
        Ok(match self.layout {
            Layout::Unified => Metrics::V2(stats::collect_v2(&self.unified_dir())),
            _ => Metrics::V1(stats::collect_v1(&stats::V1Dirs {
                memory: self.v1_dir("memory"),
                cpu: self.v1_dir("cpu"),
                cpuacct: self.v1_dir("cpuacct"),
                pids: self.v1_dir("pids"),
                blkio: self.v1_dir("blkio"),
            })),
        })
    }

    fn oom_kills(&self) -> u64 {
        let file = match self.layout {
            Layout::Unified => self.unified_dir().join("memory.events"),
            _ => match self.v1_dir("memory") {
                Some(d) => d.join("memory.oom_control"),
                None => return 0,
            },
        };
        crate::oom::read_kills(&file).unwrap_or(0)
    }

    fn freezer_dir(&self) -> Option<PathBuf> {
        self.freezer_file().and_then(|(f, _, _)| f.parent().map(Path::to_path_buf))
    }

    fn oom_source(&self) -> Result<OomSource, CgroupError> {
        match self.layout {
            Layout::Unified => OomSource::inotify(&self.unified_dir().join("memory.events")),
            _ => {
                let dir = self.v1_dir("memory").ok_or(CgroupError::NoController { path: self.path.clone(), controller: "memory" })?;
                OomSource::eventfd(&dir)
            }
        }
    }
}
