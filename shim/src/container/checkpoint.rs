//! Checkpoint of a running container, and restore of one in place of its
//! init stage: the container's side of CRIU (crate::criu builds the
//! command lines).
//!
//! As containerd's runc shim does, a Create with a checkpoint only
//! prepares (cgroup, resources, stdio) and reports pid 0; Start restores,
//! and the restored process becomes the container's init: a child of the
//! shim (criu's --restore-sibling), reaped by the reaper, its exit
//! reported like any init's.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use oci_spec::runtime::LinuxNamespaceType;
use runtime::launch::Stdio3;
use runtime::paths::{open_in_root, Create};

use super::{Container, ContainerError, Status};
use crate::criu::{self, CriuError, DumpOptions, Layout};

/// A Create from a checkpoint, waiting for its Start.
pub struct Restore {
    pub images: PathBuf,
    /// The process's ends of its new stdio (/dev/null with a terminal,
    /// which the restore makes).
    pub stdio: Stdio3,
    /// Whether containerd's Create asks for a terminal.
    pub terminal: bool,
}

/// How the shim waits for a process it spawned: the reaper owns
/// waitpid(-1).
pub use runtime::hooks::Wait;

/// The environment criu runs with: it runs tar (tmpfs contents) and
/// iptables-restore (the network lock).
const CRIU_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn run_criu(criu: &Path, args: &[String], fds: &[i32], wait: Wait<'_>) -> Result<Option<i32>, CriuError> {
    let mut argv: Vec<&std::ffi::OsStr> = vec![std::ffi::OsStr::new("criu")];
    argv.extend(args.iter().map(|a| std::ffi::OsStr::new(a.as_str())));
    let spawned = std::time::Instant::now();
    let pid = runtime::spawn::helper(criu, &argv, &[CRIU_ENV.to_string()], fds).map_err(|source| CriuError::Run { what: criu.display().to_string(), source })?;
    Ok(wait(pid, spawned, None))
}

/// The readlink of each of `pid`'s fds 0, 1 and 2: what a restore must map
/// to new pipes (runc's descriptors.json). Read while the process is
/// still ours (before execve), so nothing it does can change them.
pub fn stdio_descriptors(pid: i32) -> Vec<String> {
    (0..3).map(|fd| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).map(|p| p.display().to_string()).unwrap_or_default()).collect()
}

fn is_bind(m: &oci_spec::runtime::Mount) -> bool {
    m.typ().as_deref() == Some("bind") || m.options().iter().flatten().any(|o| o == "bind" || o == "rbind")
}

impl Container {
    /// The mounts, namespaces and cgroup CRIU must know about (runc's
    /// Checkpoint and Restore describe the same).
    fn criu_layout(&self) -> Layout {
        let linux = self.spec.linux().clone().unwrap_or_default();
        let mut layout = Layout { cgroup: self.cgroup.path().to_string(), freezer: self.cgroup.freezer_dir(), ..Default::default() };
        let has_cgroupns = linux.namespaces().iter().flatten().any(|n| n.typ() == LinuxNamespaceType::Cgroup);
        for m in self.spec.mounts().iter().flatten() {
            let dest = m.destination().display().to_string();
            if is_bind(m) {
                layout.binds.push((dest, m.source().as_ref().map(|s| s.display().to_string()).unwrap_or_default()));
            } else if m.typ().as_deref() == Some("cgroup") && self.cgroup.layout() != cgroup::Layout::Unified && !has_cgroupns {
                // v1 without a cgroup namespace: a bind of each hierarchy.
                for (name, host) in self.cgroup.v1_mounts() {
                    layout.binds.push((format!("{}/{name}", dest.trim_end_matches('/')), host.display().to_string()));
                }
            }
        }
        layout.masks = linux.masked_paths().iter().flatten().next().is_some();
        for p in linux.masked_paths().iter().flatten() {
            let inside = Path::new("/proc").join(self.init.pid.to_string()).join("root").join(p.trim_start_matches('/'));
            if std::fs::metadata(&inside).is_ok_and(|m| !m.is_dir()) {
                layout.masked_files.push(p.clone());
            }
        }
        layout.devices = linux.devices().iter().flatten().map(|d| d.path().display().to_string()).collect();
        for n in linux.namespaces().iter().flatten() {
            let kind = match n.typ() {
                LinuxNamespaceType::Network => "net",
                LinuxNamespaceType::Pid => "pid",
                _ => continue,
            };
            if let Some(path) = n.path().as_ref().filter(|p| !p.as_os_str().is_empty()) {
                if let Ok(m) = std::fs::metadata(path) {
                    layout.external_ns.push((kind, m.ino(), path.clone()));
                }
            }
        }
        layout
    }

    /// Task Checkpoint: CRIU dumps init's process tree into `images`.
    pub fn checkpoint(&mut self, images: &Path, opts: &DumpOptions, wait: Wait<'_>) -> Result<(), ContainerError> {
        if !matches!(self.init.status, Status::Running | Status::Paused) {
            return Err(self.state_err(&self.init, "checkpoint", "running or paused"));
        }
        let mut opts = opts.clone();
        if self.init.io.terminal {
            // The pty slave the container's stdio is: its master is ours,
            // outside the dumped tree, so CRIU records it as external.
            let slave = std::fs::metadata(format!("/proc/{}/fd/0", self.init.pid))
                .map_err(|e| ContainerError::Criu(CriuError::Run { what: format!("stat the terminal of pid {}", self.init.pid), source: e }))?;
            opts.external_tty = Some(criu::tty_key(slave.rdev(), slave.dev()));
        }
        let opts = &opts;
        let criu_bin = criu::preflight(wait)?;
        let io = |path: &Path, e: std::io::Error| ContainerError::Criu(CriuError::Run { what: format!("create {}", path.display()), source: e });
        std::fs::create_dir_all(images).map_err(|e| io(images, e))?;
        let default_work = self.bundle.join("criu-work");
        let work = opts.work_path.clone().unwrap_or_else(|| default_work.clone());
        std::fs::create_dir_all(&work).map_err(|e| io(&work, e))?;
        let descriptors = serde_json::to_vec(&self.init_descriptors).unwrap_or_default();
        std::fs::write(images.join(criu::DESCRIPTORS), descriptors).map_err(|e| io(images, e))?;
        std::fs::write(images.join(criu::OPTIONS_FILE), serde_json::to_vec(opts).unwrap_or_default()).map_err(|e| io(images, e))?;
        let mut layout = self.criu_layout();
        if opts.external_tty.is_some() {
            // Stage 2 bound the pty slave over /dev/console; CRIU would look
            // for its master among the dumped files (tty.c's
            // devpts_check_bindmount), which only its RPC's
            // orphan-pts-master lets it skip. As an external mount, the
            // restore binds the new slave there instead.
            layout.binds.push((CONSOLE.into(), String::new()));
        }
        let args = criu::dump_args(self.init.pid, images, &work, opts, &layout);
        log::info!("checkpoint {} into {}: criu {}", self.id, images.display(), args.join(" "));
        let null = std::fs::File::open("/dev/null").map_err(|e| io(Path::new("/dev/null"), e))?;
        let code = run_criu(&criu_bin, &args, &[null.as_raw_fd(); 3], wait)?;
        if code != Some(0) {
            let kept = self.bundle.join("criu-dump.log");
            let _ = std::fs::copy(work.join("dump.log"), &kept);
            return Err(CriuError::Failed { action: "dump", code, tail: criu::log_tail(&kept), log: kept }.into());
        }
        if opts.work_path.is_none() {
            let _ = std::fs::remove_dir_all(&default_work);
        }
        Ok(())
    }

    /// Start of a container created from a checkpoint: CRIU restores the
    /// process tree as a child of the shim, with the new stdio. Returns
    /// the restored init's pid.
    pub(super) fn restore(&mut self, wait: Wait<'_>) -> Result<i32, ContainerError> {
        let restore = self.init_restore.take().ok_or_else(|| ContainerError::Unsupported("no checkpoint to restore".into()))?;
        self.init.spawned = std::time::Instant::now();
        let criu_bin = criu::preflight(wait)?;
        let bundle = self.bundle.clone();
        let rootfs = Bundle::rootfs_of(&bundle, &self.spec);
        let opts: DumpOptions = std::fs::read(restore.images.join(criu::OPTIONS_FILE)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        let descriptors: Vec<String> = std::fs::read(restore.images.join(criu::DESCRIPTORS))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| ContainerError::Criu(CriuError::Invalid(format!("{} has no readable {}: not a checkpoint of this runtime", restore.images.display(), criu::DESCRIPTORS))))?;
        self.prepare_restore_mountpoints(&rootfs)?;
        // CRIU wants a root that is a mount point whose parent is not
        // overmounted: a bind of the rootfs, as runc makes.
        let root = bundle.join("criu-root");
        let _ = std::fs::create_dir(&root);
        let mount_err = |what: &str, errno| ContainerError::Criu(CriuError::Invalid(format!("{what} {}: {errno}", root.display())));
        nix::mount::mount(Some(&rootfs), &root, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>).map_err(|e| mount_err("bind the rootfs on", e))?;
        let result = self.run_restore(&criu_bin, &restore, &root, &opts, &descriptors, wait);
        let _ = nix::mount::umount2(&root, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&root);
        result
    }

    fn run_restore(&mut self, criu_bin: &Path, restore: &Restore, root: &Path, opts: &DumpOptions, descriptors: &[String], wait: Wait<'_>) -> Result<i32, ContainerError> {
        let mut layout = self.criu_layout();
        let work = opts.work_path.clone().unwrap_or_else(|| self.bundle.join("criu-work"));
        let io = |path: &Path, e: std::io::Error| ContainerError::Criu(CriuError::Run { what: format!("open {}", path.display()), source: e });
        std::fs::create_dir_all(&work).map_err(|e| io(&work, e))?;
        let pidfile = work.join("restore.pid");
        let _ = std::fs::remove_file(&pidfile);
        // criu's own stdio is /dev/null; the new pipes are its fds 3 to 5
        // (so nothing criu prints lands in the container's output), and
        // the namespaces joined by path follow.
        let null = std::fs::File::open("/dev/null").map_err(|e| io(Path::new("/dev/null"), e))?;
        let mut fds = vec![null.as_raw_fd(), null.as_raw_fd(), null.as_raw_fd(), restore.stdio.stdin.as_raw_fd(), restore.stdio.stdout.as_raw_fd(), restore.stdio.stderr.as_raw_fd()];
        let stdio: Vec<(String, i32)> = descriptors.iter().enumerate().filter(|(_, d)| d.contains("pipe:")).map(|(i, d)| (d.clone(), 3 + i as i32)).collect();
        if opts.external_tty.is_some() != restore.terminal {
            let problem = if restore.terminal {
                "Create asks for a terminal, but the checkpoint is of a container without one"
            } else {
                "the checkpoint is of a container with a terminal: create the task with one (ctr: -t)"
            };
            return Err(ContainerError::Criu(CriuError::Invalid(format!("{}: {problem}", restore.images.display()))));
        }
        // A new pty for the restored terminal: CRIU gives its slave to the
        // restored init in place of the old one (and as its controlling
        // terminal); the master is the container's console from now on.
        let pty = match restore.terminal {
            true => Some(new_pty().map_err(|e| io(Path::new("/dev/ptmx"), e))?),
            false => None,
        };
        let tty_fd = pty.as_ref().map(|(_, slave, path)| {
            layout.binds.push((CONSOLE.into(), path.clone()));
            fds.push(slave.as_raw_fd());
            fds.len() as i32 - 1
        });
        let mut ns_files: Vec<OwnedFd> = Vec::new();
        let mut ns_fds = Vec::new();
        for (kind, _, path) in &layout.external_ns {
            let f = std::fs::File::open(path).map_err(|e| io(path, e))?;
            ns_fds.push((*kind, fds.len() as i32));
            fds.push(f.as_raw_fd());
            ns_files.push(f.into());
        }
        let args = criu::restore_args(&restore.images, &work, root, &pidfile, opts, &layout, &stdio, &ns_fds, tty_fd);
        log::info!("restore {} from {}: criu {}", self.id, restore.images.display(), args.join(" "));
        let code = run_criu(criu_bin, &args, &fds, wait)?;
        if code != Some(0) {
            let kept = self.bundle.join("criu-restore.log");
            let _ = std::fs::copy(work.join("restore.log"), &kept);
            return Err(CriuError::Failed { action: "restore", code, tail: criu::log_tail(&kept), log: kept }.into());
        }
        let pid: i32 = std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse().ok()).ok_or_else(|| ContainerError::Criu(CriuError::Invalid(format!("criu restore wrote no pid into {}", pidfile.display()))))?;
        if opts.work_path.is_none() {
            let _ = std::fs::remove_dir_all(&work);
        }
        if let (Some((master, _, _)), Some(handles)) = (pty, self.init.handles.as_mut()) {
            handles.attach_console(master, &self.init.io.stdin, &self.init.io.stdout).map_err(|e| ContainerError::Criu(CriuError::Invalid(format!("attach the restored terminal: {e}"))))?;
        }
        self.init_descriptors = stdio_descriptors(pid);
        Ok(pid)
    }

    /// The mount points the restored mounts need in the rootfs, where they
    /// are not on a tmpfs (whose contents CRIU restores): runc's
    /// prepareCriuRestoreMounts, made inside the rootfs (paths.rs).
    fn prepare_restore_mountpoints(&self, rootfs: &Path) -> Result<(), ContainerError> {
        let mounts = self.spec.mounts().clone().unwrap_or_default();
        let tmpfs: Vec<PathBuf> = mounts.iter().filter(|m| m.typ().as_deref() == Some("tmpfs")).map(|m| m.destination().clone()).collect();
        let root = nix::fcntl::open(rootfs, nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
            .map_err(|e| ContainerError::Criu(CriuError::Invalid(format!("open rootfs {}: {e}", rootfs.display()))))?;
        for m in &mounts {
            let dest = m.destination();
            if m.typ().as_deref() == Some("cgroup") || tmpfs.iter().any(|t| dest != t && dest.starts_with(t)) {
                continue;
            }
            let file = is_bind(m) && m.source().as_ref().is_some_and(|s| !s.is_dir());
            open_in_root(std::os::fd::AsFd::as_fd(&root), dest, if file { Create::File } else { Create::Dir })
                .map_err(|e| ContainerError::Criu(CriuError::Invalid(e.to_string())))?;
        }
        Ok(())
    }
}

/// A pty pair from the host's /dev/ptmx, both ends close-on-exec (the shim
/// spawns processes from many threads) and neither our controlling
/// terminal, and the slave's path.
fn new_pty() -> std::io::Result<(OwnedFd, OwnedFd, String)> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    let name = nix::pty::ptsname_r(&master)?;
    let slave = nix::fcntl::open(Path::new(&name), OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())?;
    // SAFETY: posix_openpt returned this fd, which PtyMaster owns; we take
    // it over.
    let master = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(master)) };
    Ok((master, slave, name))
}

/// Where stage 2 binds a container's terminal (runtime/src/console.rs).
const CONSOLE: &str = "/dev/console";

/// The rootfs of a bundle: root.path, absolute or relative to the bundle.
struct Bundle;

impl Bundle {
    fn rootfs_of(bundle: &Path, spec: &oci_spec::runtime::Spec) -> PathBuf {
        let p = spec.root().as_ref().map(|r| r.path().clone()).unwrap_or_else(|| "rootfs".into());
        if p.is_absolute() {
            p
        } else {
            bundle.join(p)
        }
    }
}
