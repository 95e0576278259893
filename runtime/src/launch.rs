//! The shim's side of the init stage: spawn it, feed it, answer it.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

use oci_spec::runtime::LinuxIdMapping;

use crate::channel::{Channel, ChannelError, FromInit, InitConfig, ToInit};
use crate::spawn::{self, Spawn};
use crate::{INIT_ROLE, SYNC_FD_ENV};

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("spawn the init stage {exe}: {source}")]
    Spawn { exe: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Channel(#[from] ChannelError),
    #[error("init stage (pid {pid}) exited without reporting: see the shim log")]
    Vanished { pid: i32 },
    #[error("{0}")]
    Init(String),
    #[error("write {path}: {source}")]
    IdMap { path: PathBuf, source: std::io::Error },
    #[error("prepare the container's cgroup for pid {pid}: {message}")]
    Cgroup { pid: i32, message: String },
    #[error("protocol: {0}")]
    Protocol(String),
}

/// Standard streams of the container's process.
pub struct Stdio3 {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

pub struct LaunchSpec {
    /// Our own binary, which serves the init role.
    pub exe: PathBuf,
    /// Shown in `ps` as the init stage's argument.
    pub id: String,
    pub config: InitConfig,
    pub uid_mappings: Vec<LinuxIdMapping>,
    pub gid_mappings: Vec<LinuxIdMapping>,
    pub stdio: Stdio3,
    /// A cgroup v2 directory to start stage 1 in ([`crate::spawn`]);
    /// otherwise `enter_cgroup` moves it.
    pub cgroup_dir: Option<OwnedFd>,
}

/// An init stage that is set up and waits for Start.
pub struct Created {
    chan: Channel,
    pub pid: i32,
    /// The master side of the process's terminal, if it has one.
    pub console: Option<OwnedFd>,
}

/// Spawns the init stage and drives it until the container's process is
/// ready to exec. Stage 1 starts inside the cgroup v2 directory
/// `spec.cgroup_dir` when there is one and the kernel can; otherwise
/// `enter_cgroup` runs with its pid before stage 1 may fork (it may also
/// leave the move to stage 1, on v1), so every process of the container
/// starts inside its cgroup.
/// `runtime_hooks` runs the prestart and createRuntime hooks with the pid of
/// the container's process, when stage 2 asks.
pub fn create(
    spec: LaunchSpec,
    enter_cgroup: impl FnOnce(i32) -> Result<(), String>,
    mut runtime_hooks: impl FnMut(i32) -> Result<(), String>,
) -> Result<Created, LaunchError> {
    let t = std::time::Instant::now();
    let (chan, child_end) = Channel::pair()?;
    let child_fd = child_end.as_raw_fd();
    // Named for `ps`, whatever path the binary was started by.
    let argv = [OsStr::new("containerd-shim-rust-v2"), OsStr::new(INIT_ROLE), OsStr::new(&spec.id)];
    let how = Spawn {
        exe: &spec.exe,
        argv: &argv,
        env: (SYNC_FD_ENV, spawn::KEEP_FD.to_string()),
        cwd: &spec.config.bundle,
        stdio: [&spec.stdio.stdin, &spec.stdio.stdout, &spec.stdio.stderr],
        keep: child_fd,
    };
    let cloned = match &spec.cgroup_dir {
        Some(dir) => match spawn::into_cgroup(&how, dir.as_fd()) {
            Ok(pid) => Some(pid),
            Err(e) if spawn::unsupported(&e) => {
                log::info!("clone3 into the cgroup: {e}; moving the init stage by pid");
                None
            }
            Err(source) => return Err(LaunchError::Spawn { exe: spec.exe.clone(), source }),
        },
        None => None,
    };
    let stage1 = match cloned {
        Some(pid) => pid,
        None => {
            // The reaper owns waitpid(-1): nothing here waits for it.
            let pid = spawn::start(&how).map_err(|source| LaunchError::Spawn { exe: spec.exe.clone(), source })?;
            enter_cgroup(pid).map_err(|message| LaunchError::Cgroup { pid, message })?;
            pid
        }
    };
    drop(spec.stdio);
    drop(child_end);
    log::debug!("init stage {}: stage 1 spawned after {:.2} ms", spec.id, t.elapsed().as_secs_f64() * 1e3);

    chan.send(&ToInit::Config(spec.config))?;

    let mut pid = None;
    let mut console = None;
    loop {
        let (msg, fd) = match chan.recv_fd::<FromInit>() {
            Ok(m) => m,
            Err(ChannelError::Closed) => return Err(LaunchError::Vanished { pid: pid.unwrap_or(stage1) }),
            Err(e) => return Err(e.into()),
        };
        match msg {
            FromInit::UserNsReady => {
                for (file, maps) in [("uid_map", &spec.uid_mappings), ("gid_map", &spec.gid_mappings)] {
                    let path = PathBuf::from(format!("/proc/{stage1}/{file}"));
                    std::fs::write(&path, crate::idmap::map_text(maps)).map_err(|source| LaunchError::IdMap { path, source })?;
                }
                chan.send(&ToInit::MapsWritten)?;
            }
            FromInit::Pid(p) => {
                log::debug!("init stage {id}: pid {p} after {:.2} ms", t.elapsed().as_secs_f64() * 1e3, id = spec.id);
                pid = Some(p)
            }
            FromInit::RuntimeHooks => {
                let pid = pid.ok_or_else(|| LaunchError::Protocol("hooks before pid".into()))?;
                runtime_hooks(pid).map_err(LaunchError::Init)?;
                chan.send(&ToInit::HooksDone)?;
            }
            FromInit::Ready => {
                log::debug!("init stage {}: ready after {:.2} ms", spec.id, t.elapsed().as_secs_f64() * 1e3);
                let pid = pid.ok_or_else(|| LaunchError::Protocol("ready before pid".into()))?;
                return Ok(Created { chan, pid, console });
            }
            FromInit::OpenMountSource(source) => {
                let pid = pid.ok_or_else(|| LaunchError::Protocol("mount source before pid".into()))?;
                match open_mount_source(pid, &source) {
                    Ok(fd) => chan.send_fd(&ToInit::MountSource, fd.as_raw_fd())?,
                    Err(e) => chan.send(&ToInit::MountSourceError(format!("open {} as the host's root: {e}", source.display())))?,
                }
            }
            FromInit::Error(e) => return Err(LaunchError::Init(e)),
            FromInit::Console => console = Some(fd.ok_or_else(|| LaunchError::Protocol("console message without an fd".into()))?),
        }
    }
}

/// A bind mount's source, opened for stage 2 `pid` in its mount namespace
/// (a copy of the host's, before pivot_root) with the host root's
/// credentials, as runc's mountFd does from inside the container's mount
/// namespace. In the container's user namespace, its root may lack search
/// permission on the way (containerd's state directories are 0700 to
/// others); the fd lets it bind the source, and the bind, made in its own
/// namespace from a mount that namespace holds, keeps the locks the kernel
/// put on the host's mount flags (mount_namespaces(7), "locked" mounts).
/// A relative source is relative to the bundle, stage 2's working directory.
fn open_mount_source(pid: i32, source: &std::path::Path) -> Result<OwnedFd, nix::errno::Errno> {
    let base = if source.is_absolute() { format!("/proc/{pid}/root") } else { format!("/proc/{pid}/cwd/") };
    let mut path = std::ffi::OsString::from(base);
    path.push(source.as_os_str());
    nix::fcntl::open(std::path::Path::new(&path), nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
}

impl Created {
    /// Lets a container's init exec. Success is the sync socket closing:
    /// it is close-on-exec, so it closes exactly when execve succeeds.
    pub fn start(self) -> Result<(), LaunchError> {
        self.chan.send(&ToInit::Start)?;
        self.exec_result()
    }

    /// Waits for an exec's process, which does not wait for Start once
    /// ready (init.rs), to exec: Ok once execve succeeded, or its error.
    pub fn exec_result(self) -> Result<(), LaunchError> {
        match self.chan.recv::<FromInit>() {
            Err(ChannelError::Closed) => Ok(()),
            Ok(FromInit::Error(e)) => Err(LaunchError::Init(e)),
            Ok(other) => Err(LaunchError::Protocol(format!("unexpected {other:?} after ready"))),
            Err(e) => Err(e.into()),
        }
    }
}
