//! The cgroupfs driver, over cgroups-rs's FsManager.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cgroups_rs::manager::{FsManager, Manager as _};
use cgroups_rs::CgroupPid;
use oci_spec::runtime::LinuxResources;

use crate::{detect, CgroupError, Layout, Manager};

pub struct FsCgroup {
    inner: FsManager,
    path: String,
    layout: Layout,
}

impl FsCgroup {
    /// A handle on the cgroup at `path`; nothing is created until a process
    /// is added.
    pub fn new(path: &str) -> Result<FsCgroup, CgroupError> {
        // cgroups-rs joins this onto each hierarchy's mount point with
        // PathBuf::push, where an absolute path would replace the mount
        // point and create directories at the host's /.
        let inner = FsManager::new(path.trim_start_matches('/')).map_err(|e| CgroupError::Manager { path: path.into(), message: e.to_string() })?;
        Ok(FsCgroup { inner, path: path.to_string(), layout: detect() })
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

    fn freezer_file(&self) -> Option<(PathBuf, &'static str, &'static str)> {
        let rel = self.path.trim_start_matches('/');
        if self.layout == Layout::Unified {
            return Some((Path::new("/sys/fs/cgroup").join(rel).join("cgroup.freeze"), "1", "0"));
        }
        self.inner.mounts().get("freezer").map(|m| (Path::new(m).join(rel).join("freezer.state"), "FROZEN", "THAWED"))
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

    fn set(&mut self, resources: &LinuxResources) -> Result<(), CgroupError> {
        self.inner.set(resources).map_err(|e| self.err(format!("apply resources: {e}")))
    }

    fn procs(&self) -> Result<Vec<i32>, CgroupError> {
        let Some(dir) = self.procs_dir() else { return Ok(Vec::new()) };
        match read_pids(&dir.join("cgroup.procs")) {
            Ok(p) => Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(CgroupError::Io { path: dir, action: "read cgroup.procs", source }),
        }
    }

    fn kill_all(&self, signal: i32) -> Result<(), CgroupError> {
        // Freezing first closes the fork race: a process cannot create a
        // child between our listing and our signal (runc's signalAllProcesses).
        let freezer = self.freezer_file().filter(|(f, _, _)| f.exists());
        if let Some((file, frozen, _)) = &freezer {
            let _ = std::fs::write(file, frozen);
            let deadline = Instant::now() + Duration::from_secs(1);
            while Instant::now() < deadline {
                match std::fs::read_to_string(file) {
                    Ok(s) if s.trim() == *frozen || s.contains("frozen 1") => break,
                    Ok(_) => std::thread::sleep(Duration::from_millis(2)),
                    Err(_) => break,
                }
            }
        }
        let pids = self.procs()?;
        for pid in &pids {
            // SAFETY: kill(2) with plain integers.
            unsafe { libc::kill(*pid, signal) };
        }
        if let Some((file, _, thawed)) = &freezer {
            let _ = std::fs::write(file, thawed);
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
}
