//! One container and its init process: the state machine behind the Task
//! calls, independent of ttrpc.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use cgroup::{FsCgroup, Layout, Manager};
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use runtime::channel::InitConfig;
use runtime::launch::{self, Created, LaunchError, LaunchSpec};
use runtime::rootfs::CgroupMounts;
use runtime::spec::{Bundle, SpecError};

use crate::rootfs_mounts::{self, RootfsMountError};
use crate::state::Saved;
use crate::stdio::{self, Copies, StdioError};

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("{0}")]
    Spec(#[from] SpecError),
    #[error("{0}")]
    Rootfs(#[from] RootfsMountError),
    #[error("{0}")]
    Stdio(#[from] StdioError),
    #[error("{0}")]
    Cgroup(#[from] cgroup::CgroupError),
    #[error("create container {id}: {source}")]
    Launch { id: String, source: LaunchError },
    #[error("start container {id}: {source}")]
    Start { id: String, source: LaunchError },
    #[error("container {id} is {state}: {action} needs it {wanted}")]
    State { id: String, state: &'static str, action: &'static str, wanted: &'static str },
    #[error("process {pid} of container {id} already finished")]
    Finished { id: String, pid: i32 },
    #[error("signal {signal} to pid {pid}: {errno}")]
    Signal { pid: i32, signal: u32, errno: nix::errno::Errno },
    #[error("{0}")]
    Unsupported(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Stopped,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Exit {
    pub code: u32,
    pub at: Timestamp,
}

pub struct Io {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
}

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub pid: i32,
    pub status: Status,
    pub exit: Option<Exit>,
    pub io: Io,
    pub cgroup: Box<dyn Manager>,
    created: Option<Created>,
    copies: Option<Copies>,
    mounted_rootfs: Option<PathBuf>,
}

/// A container behind its lock, with a condition variable for Wait.
pub struct Cell {
    state: Mutex<Container>,
    exited: Condvar,
}

pub struct CreateRequest<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub rootfs: &'a [containerd_shim_protos::api::Mount],
    pub io: Io,
    pub exe: &'a Path,
}

fn now() -> Timestamp {
    containerd_shim::util::timestamp().unwrap_or_default()
}

impl Container {
    /// Prepares everything and leaves the process waiting for Start. On
    /// failure nothing is left: no process, cgroup or mount.
    pub fn create(req: CreateRequest<'_>) -> Result<Container, ContainerError> {
        let rootfs = req.bundle.join("rootfs");
        let mounted = rootfs_mounts::mount_all(req.rootfs, &rootfs)?;
        let result = Self::create_on_rootfs(&req);
        match result {
            Ok(mut c) => {
                c.mounted_rootfs = mounted.then_some(rootfs);
                Ok(c)
            }
            Err(e) => {
                if mounted {
                    rootfs_mounts::unmount(&rootfs);
                }
                Err(e)
            }
        }
    }

    fn create_on_rootfs(req: &CreateRequest<'_>) -> Result<Container, ContainerError> {
        let bundle = Bundle::load(req.bundle)?;
        let process = bundle.spec.process().as_ref();
        if process.and_then(|p| p.terminal()).unwrap_or(false) {
            return Err(ContainerError::Unsupported("process.terminal is not supported yet: run without a tty (-t)".into()));
        }
        let linux = bundle.spec.linux().clone().unwrap_or_default();
        let (cg_path, from_systemd) = cgroup::resolve(linux.cgroups_path().as_ref().and_then(|p| p.to_str()), req.id);
        if from_systemd {
            log::info!("no systemd cgroup driver: using cgroupfs path {cg_path} for {:?}", linux.cgroups_path());
        }
        let mut cg = FsCgroup::new(&cg_path)?;
        let cgroups = CgroupMounts { v1: cg.v1_mounts(), unified: cg.layout() == Layout::Unified };
        let (stdio, copies) = stdio::open(&req.io.stdin, &req.io.stdout, &req.io.stderr)?;
        let ids = |m: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| m.clone().unwrap_or_default();
        let spec = LaunchSpec {
            exe: req.exe,
            id: req.id,
            config: InitConfig { bundle: req.bundle.to_path_buf(), cgroups },
            uid_mappings: ids(linux.uid_mappings()),
            gid_mappings: ids(linux.gid_mappings()),
            stdio,
        };
        let created = launch::create(spec, |pid| cg.add_proc(pid).map_err(|e| e.to_string()))
            .map_err(|source| ContainerError::Launch { id: req.id.to_string(), source })
            // Limits apply once the process is ready, as runc applies them on
            // procReady: the device rules would otherwise refuse the mknod of
            // /dev/null and friends during rootfs setup.
            .and_then(|created| match linux.resources() {
                Some(r) => cg.set(r).map(|()| created).map_err(ContainerError::from),
                None => Ok(created),
            });
        let created = match created {
            Ok(c) => c,
            Err(e) => {
                // Stage 1, and anything it forked, is in the cgroup: this
                // kills it all and removes the cgroup.
                if let Err(e) = cg.destroy() {
                    log::warn!("clean up cgroup {cg_path} after failed create: {e}");
                }
                return Err(e);
            }
        };
        Ok(Container {
            id: req.id.to_string(),
            bundle: req.bundle.to_path_buf(),
            pid: created.pid,
            status: Status::Created,
            exit: None,
            io: Io { stdin: req.io.stdin.clone(), stdout: req.io.stdout.clone(), stderr: req.io.stderr.clone() },
            cgroup: Box::new(cg),
            created: Some(created),
            copies: Some(copies),
            mounted_rootfs: None,
        })
    }

    pub fn saved(&self) -> Saved {
        Saved { pid: self.pid, cgroup: self.cgroup.path().to_string(), mounted_rootfs: self.mounted_rootfs.clone() }
    }

    fn state_err(&self, action: &'static str, wanted: &'static str) -> ContainerError {
        ContainerError::State { id: self.id.clone(), state: self.status.name(), action, wanted }
    }

    /// Lets the process exec. The caller holds the lock and publishes
    /// TaskStart under it, so the exit can never be published first.
    pub fn start(&mut self) -> Result<(), ContainerError> {
        let created = self.created.take().ok_or_else(|| self.state_err("start", "created"))?;
        created.start().map_err(|source| ContainerError::Start { id: self.id.clone(), source })?;
        if self.status == Status::Created {
            self.status = Status::Running;
        }
        Ok(())
    }

    pub fn kill(&self, signal: u32, all: bool) -> Result<(), ContainerError> {
        if all {
            return Ok(self.cgroup.kill_all(signal as i32)?);
        }
        if self.status == Status::Stopped {
            return Err(ContainerError::Finished { id: self.id.clone(), pid: self.pid });
        }
        // SAFETY: kill(2) with plain integers.
        let r = unsafe { libc::kill(self.pid, signal as i32) };
        nix::errno::Errno::result(r).map(drop).map_err(|errno| match errno {
            nix::errno::Errno::ESRCH => ContainerError::Finished { id: self.id.clone(), pid: self.pid },
            errno => ContainerError::Signal { pid: self.pid, signal, errno },
        })
    }

    /// Kills what is left, removes the cgroup and our mounts and state.
    pub fn destroy(&mut self) -> Result<(), ContainerError> {
        if self.status != Status::Stopped {
            return Err(self.state_err("delete", "stopped"));
        }
        self.cgroup.destroy()?;
        if let Some(rootfs) = self.mounted_rootfs.take() {
            rootfs_mounts::unmount(&rootfs);
        }
        Saved::remove(&self.bundle);
        Ok(())
    }
}

impl Cell {
    pub fn new(c: Container) -> Arc<Cell> {
        Arc::new(Cell { state: Mutex::new(c), exited: Condvar::new() })
    }

    pub fn lock(&self) -> MutexGuard<'_, Container> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the init process's exit. Output is drained first, so that
    /// everything the process wrote reaches containerd before TaskExit.
    /// Returns the exit, for the caller to publish under the same lock.
    pub fn record_exit<'a>(&'a self, code: i32) -> (MutexGuard<'a, Container>, Exit) {
        let copies = self.lock().copies.take();
        if let Some(mut c) = copies {
            c.drain(Duration::from_secs(2));
        }
        let mut c = self.lock();
        let exit = Exit { code: code as u32, at: now() };
        c.status = Status::Stopped;
        c.exit = Some(exit.clone());
        c.created = None;
        self.exited.notify_all();
        (c, exit)
    }

    /// Blocks until the init process has exited.
    pub fn wait(&self) -> Exit {
        let mut c = self.lock();
        loop {
            if let Some(e) = &c.exit {
                return e.clone();
            }
            c = self.exited.wait(c).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Like [`Cell::wait`], bounded.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Exit> {
        let c = self.lock();
        let (c, _) = self.exited.wait_timeout_while(c, timeout, |c| c.exit.is_none()).unwrap_or_else(|e| e.into_inner());
        c.exit.clone()
    }
}
