//! One container, its init process and its execs: the state machine behind
//! the Task calls, independent of ttrpc.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use cgroup::{Entry, FsCgroup, Layout, Manager};
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use oci_spec::runtime::Process;
use runtime::channel::{ExecConfig, InitConfig};
use runtime::hooks::{self, State};
use runtime::launch::{self, Created, LaunchError, LaunchSpec};
use runtime::rootfs::CgroupMounts;
use runtime::spec::{Bundle, SpecError};

use crate::criu::CriuError;
use crate::options::RuntimeOptions;
use crate::rootfs_mounts::{self, RootfsMountError};
use crate::state::Saved;
use crate::stdio::{self, IoHandles, LogTarget, StdioError};

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
    #[error("open cgroup directory {path}: {source}")]
    CgroupDir { path: PathBuf, source: std::io::Error },
    #[error("create {what}: {source}")]
    Launch { what: String, source: LaunchError },
    #[error("start {what}: {source}")]
    Start { what: String, source: LaunchError },
    #[error("{what} is {state}: {action} needs it {wanted}")]
    State { what: String, state: &'static str, action: &'static str, wanted: &'static str },
    #[error("process {pid} ({what}) already finished")]
    Finished { what: String, pid: i32 },
    #[error("exec process {exec_id} not found in container {id}")]
    NoExec { id: String, exec_id: String },
    #[error("exec process {exec_id} already exists in container {id}")]
    ExecExists { id: String, exec_id: String },
    #[error("invalid exec process spec: {0}")]
    ExecSpec(String),
    #[error("signal {signal} to pid {pid}: {errno}")]
    Signal { pid: i32, signal: u32, errno: nix::errno::Errno },
    #[error("invalid resources: {0}")]
    Resources(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("write {path}: {source}")]
    SaveState { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Criu(#[from] CriuError),
}

mod checkpoint;
pub use checkpoint::Wait;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// The exit status of an exec that could not be started, as a shell
/// reports a command it could not run.
const FAILED_EXEC: u32 = 127;

#[derive(Debug, Clone)]
pub struct Exit {
    pub code: u32,
    pub at: Timestamp,
}

#[derive(Clone)]
pub struct Io {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// The init process or an exec.
pub struct Proc {
    /// Empty for init.
    pub exec_id: String,
    /// 0 until an exec is started.
    pub pid: i32,
    pub status: Status,
    pub exit: Option<Exit>,
    pub io: Io,
    /// An exec's spec, until it is started.
    pending: Option<Process>,
    created: Option<Created>,
    handles: Option<IoHandles>,
    /// Just before the process was launched: the reaper hands it no exit
    /// held from before then, which an earlier process with the same pid
    /// left (pids come round; pid_max is 32768 by default).
    pub spawned: std::time::Instant,
}

impl Proc {
    fn what(&self, id: &str) -> String {
        if self.exec_id.is_empty() {
            format!("container {id}")
        } else {
            format!("exec {} of container {id}", self.exec_id)
        }
    }
}

pub struct Container {
    pub id: String,
    namespace: String,
    /// IoUid/IoGid, for the stdio of execs too.
    io_owner: Option<(u32, u32)>,
    /// The bundle's spec, for the poststart and poststop hooks.
    pub spec: oci_spec::runtime::Spec,
    pub bundle: PathBuf,
    pub init: Proc,
    pub execs: HashMap<String, Proc>,
    pub cgroup: Box<dyn Manager>,
    mounted_rootfs: Option<PathBuf>,
    /// OOM kills already reported, so each is reported once.
    oom_reported: u64,
    /// The highest OOM kill count the IO loop read (oom.rs): what the exit
    /// path goes by when the cgroup is already gone.
    pub oom_seen: Arc<std::sync::atomic::AtomicU64>,
    /// Whether init is the init of a pid namespace of its own. If not, the
    /// kernel does not take the other processes down with it.
    own_pid_ns: bool,
    /// The OOM watcher's registration, dropped on delete.
    pub oom_token: Option<u64>,
    /// What init's fds 0 to 2 were when it started, for a checkpoint
    /// (crate::criu).
    init_descriptors: Vec<String>,
    /// A Create from a checkpoint, restored by Start.
    init_restore: Option<checkpoint::Restore>,
}

/// A container behind its lock, with a condition variable for Wait.
pub struct Cell {
    state: Mutex<Container>,
    exited: Condvar,
}

pub struct CreateRequest<'a> {
    pub id: &'a str,
    pub options: RuntimeOptions,
    /// How the shim waits for a hook it ran (through its reaper).
    pub wait: hooks::Wait<'a>,
    /// containerd's namespace, for `binary://` loggers.
    pub namespace: &'a str,
    pub bundle: &'a Path,
    pub rootfs: &'a [containerd_shim_protos::api::Mount],
    pub io: Io,
    pub exe: &'a Path,
    /// The checkpoint to restore (a directory of CRIU images), or empty.
    pub checkpoint: &'a str,
}

fn now() -> Timestamp {
    containerd_shim::util::timestamp().unwrap_or_default()
}

/// Launches an init stage with `io`, wiring its terminal if it has one.
/// `readers` are the output FIFOs' writers an exec's Start opened before
/// it took the lock (none for a Create).
fn launch_with_io(
    spec: impl FnOnce(runtime::launch::Stdio3) -> LaunchSpec,
    io: &Io,
    readers: stdio::Readers,
    target: &LogTarget<'_>,
    what: &str,
    enter_cgroup: impl FnOnce(i32) -> Result<(), String>,
    runtime_hooks: impl FnMut(i32) -> Result<(), String>,
) -> Result<(Created, IoHandles), ContainerError> {
    let (stdio, mut handles) = stdio::open(&io.stdin, &io.stdout, &io.stderr, io.terminal, target, readers)?;
    let mut created =
        launch::create(spec(stdio), enter_cgroup, runtime_hooks).map_err(|source| ContainerError::Launch { what: what.to_string(), source })?;
    if let Some(master) = created.console.take() {
        handles.attach_console(master, &io.stdin, &io.stdout)?;
    }
    Ok((created, handles))
}

/// Puts stage 1 into the cgroup when it was neither cloned into it (v2)
/// nor moves itself (v1).
fn enter_cgroup(cg: &mut dyn Manager, entry: &Entry, pid: i32) -> Result<(), String> {
    match entry {
        Entry::SelfTasks(_) => Ok(()),
        Entry::IntoCgroup(_) | Entry::ByPid => cg.add_proc(pid).map_err(|e| e.to_string()),
    }
}

/// The cgroup v2 directory stage 1 is cloned into, opened for clone3.
fn cgroup_dir(entry: &Entry) -> Result<Option<OwnedFd>, ContainerError> {
    let Entry::IntoCgroup(dir) = entry else { return Ok(None) };
    let fd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|source| ContainerError::CgroupDir { path: dir.clone(), source })?;
    Ok(Some(fd.into()))
}

/// A step of Create to undo unless Create finishes: on an error, and as
/// well when a panic unwinds through Create (rpc.rs catches it, and the
/// pod's shim goes on), so a failed Create leaves no cgroup or mount.
struct Undo<T> {
    value: Option<T>,
    undo: fn(&mut T),
}

impl<T> Undo<T> {
    fn new(value: T, undo: fn(&mut T)) -> Undo<T> {
        Undo { value: Some(value), undo }
    }

    /// Create finished: the step stays.
    fn keep(mut self) -> T {
        self.value.take().expect("an Undo is kept once")
    }
}

impl<T> std::ops::Deref for Undo<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value.as_ref().expect("an Undo is used before it is kept")
    }
}

impl<T> std::ops::DerefMut for Undo<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value.as_mut().expect("an Undo is used before it is kept")
    }
}

impl<T> Drop for Undo<T> {
    fn drop(&mut self) {
        if let Some(v) = self.value.as_mut() {
            (self.undo)(v);
        }
    }
}

/// The cgroup manager for a container: systemd's (a transient scope unit)
/// when the runtime options say SystemdCgroup or the cgroupsPath is in
/// systemd's `slice:prefix:name` form, as runc chooses, on a host that
/// runs systemd; cgroupfs otherwise. On a host without systemd, a
/// systemd-form path maps to the cgroupfs path systemd would have used.
fn cgroup_driver(cgroups_path: Option<&str>, id: &str, systemd_option: bool) -> Result<Box<dyn Manager>, ContainerError> {
    let given = cgroups_path.filter(|p| !p.is_empty());
    let names = given.map(cgroup::path::systemd_names).transpose().map_err(cgroup::CgroupError::from)?.flatten();
    let systemd = systemd_option || names.is_some();
    if !systemd {
        let (path, _) = cgroup::resolve(given, id).map_err(cgroup::CgroupError::from)?;
        return Ok(Box::new(FsCgroup::new(&path)?));
    }
    if !cgroup::systemd::running() {
        if systemd_option {
            return Err(ContainerError::Unsupported("SystemdCgroup is set, but systemd does not run this host (no /run/systemd/system): use the cgroupfs driver".into()));
        }
        let (path, _) = cgroup::resolve(given, id).map_err(cgroup::CgroupError::from)?;
        log::info!("systemd does not run this host: using cgroupfs path {path} for {given:?}");
        return Ok(Box::new(FsCgroup::new(&path)?));
    }
    // runc's systemd driver takes only the systemd form; with none given,
    // the unit goes into system.slice, as runc names its default.
    let form = match (given, names.is_some()) {
        (None, _) => format!("system.slice:rsv2:{id}"),
        (Some(p), true) => p.to_string(),
        (Some(p), false) => {
            let problem = "the systemd cgroup driver (SystemdCgroup) takes a slice:prefix:name path".into();
            return Err(cgroup::CgroupError::Path(cgroup::PathError { path: p.to_string(), problem }).into());
        }
    };
    let names = cgroup::path::systemd_names(&form).map_err(cgroup::CgroupError::from)?.ok_or_else(|| ContainerError::Unsupported(format!("{form}: not a systemd path")))?;
    let (path, _) = cgroup::resolve(Some(&form), id).map_err(cgroup::CgroupError::from)?;
    Ok(Box::new(cgroup::systemd::SystemdCgroup::new(&path, names, id)?))
}

/// The spec and containerd must agree on a terminal: containerd makes the
/// client's side of one only when asked (ctr run -t), and a process whose
/// terminal nobody reads or whose output goes nowhere is refused, as runc
/// refuses ("cannot allocate tty if runc will detach without setting
/// console socket").
fn check_terminal(spec: &oci_spec::runtime::Spec, requested: bool) -> Result<(), String> {
    let in_spec = spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false);
    match (in_spec, requested) {
        (true, false) => Err("process.terminal: true, but containerd's Create asks for no terminal (the client gave none: ctr run -t gives one)".into()),
        (false, true) => Err("process.terminal: false, but containerd's Create asks for a terminal".into()),
        _ => Ok(()),
    }
}

/// Stage 1, and anything it forked, is in the cgroup: this kills it all
/// and removes the cgroup.
fn destroy_cgroup(cg: &mut Box<dyn Manager>) {
    if let Err(e) = cg.destroy() {
        log::warn!("clean up cgroup {} after failed create: {e}", cg.path());
    }
}

impl Container {
    /// Prepares everything and leaves the process waiting for Start. On
    /// failure nothing is left: no process, cgroup or mount.
    pub fn create(req: CreateRequest<'_>) -> Result<Container, ContainerError> {
        let rootfs = req.bundle.join("rootfs");
        let mounted = rootfs_mounts::mount_all(req.rootfs, &rootfs)?.then_some(rootfs);
        let mounted = Undo::new(mounted, |m| {
            if let Some(rootfs) = m {
                rootfs_mounts::unmount(rootfs);
            }
        });
        let mut c = if req.checkpoint.is_empty() { Self::create_on_rootfs(&req)? } else { Self::create_for_restore(&req)? };
        c.mounted_rootfs = (*mounted).clone();
        // What `delete` needs if this shim dies: without it a crash would
        // leave the cgroup and mounts behind, so a Create that cannot write
        // it (the state filesystem is full) fails, and undoes itself.
        if let Err(source) = c.saved().write(&c.bundle) {
            c.mounted_rootfs = None;
            c.abandon();
            return Err(ContainerError::SaveState { path: c.bundle.join(crate::state::FILE), source });
        }
        mounted.keep();
        Ok(c)
    }

    /// Undoes a Create that succeeded up to here: kills the init stage and
    /// everything in the cgroup, removes the cgroup, closes the stdio.
    fn abandon(&mut self) {
        self.init.created = None;
        if let Err(e) = self.cgroup.destroy() {
            log::warn!("clean up cgroup {} after failed create: {e}", self.cgroup.path());
        }
        if let Some(h) = &mut self.init.handles {
            h.release();
        }
    }

    fn create_on_rootfs(req: &CreateRequest<'_>) -> Result<Container, ContainerError> {
        let t = std::time::Instant::now();
        let phase = |name: &str| log::debug!("create {}: {name} at {:.1} ms", req.id, t.elapsed().as_secs_f64() * 1e3);
        let bundle = Bundle::load(req.bundle)?;
        phase("spec parsed");
        check_terminal(&bundle.spec, req.io.terminal).map_err(|problem| SpecError::Invalid { path: req.bundle.join("config.json"), problem })?;
        let linux = bundle.spec.linux().clone().unwrap_or_default();
        let cg = cgroup_driver(linux.cgroups_path().as_ref().and_then(|p| p.to_str()), req.id, req.options.systemd_cgroup)?;
        // Delete kills what the container's cgroup holds: a spec must not
        // name a cgroup that already has processes (another container's,
        // or the host's own services), as runc 1.2 refuses too.
        let in_use = cg.all_procs()?;
        if !in_use.is_empty() {
            return Err(cgroup::CgroupError::InUse { path: linux.cgroups_path().as_ref().map(|p| p.display().to_string()).unwrap_or_default(), pids: in_use }.into());
        }
        let mut cg = Undo::new(cg, destroy_cgroup);
        let entry = cg.prepare()?;
        let dir = cgroup_dir(&entry)?;
        phase("cgroup manager ready");
        let config = InitConfig {
            id: req.id.to_string(),
            bundle: req.bundle.to_path_buf(),
            cgroups: CgroupMounts { v1: cg.v1_mounts(), unified: cg.layout() == Layout::Unified },
            cgroup_tasks: entry.self_tasks(),
            exec: None,
            new_keyring: !req.options.no_new_keyring,
        };
        let ids = |m: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| m.clone().unwrap_or_default();
        let (uid_mappings, gid_mappings) = (ids(linux.uid_mappings()), ids(linux.gid_mappings()));
        let exe = req.exe.to_path_buf();
        let id = req.id.to_string();
        let what = format!("container {}", req.id);
        let io_owner = req.options.io_uid.zip(req.options.io_gid);
        let spawned = std::time::Instant::now();
        let launched = launch_with_io(
            |stdio| LaunchSpec { exe, id, config, uid_mappings, gid_mappings, stdio, cgroup_dir: dir },
            &req.io,
            stdio::Readers::default(),
            &LogTarget { container_id: req.id, namespace: req.namespace, owner: io_owner },
            &what,
            |pid| enter_cgroup(cg.as_mut(), &entry, pid),
            |pid| {
                let hooks = bundle.spec.hooks().clone().unwrap_or_default();
                let state = State::new(&bundle.spec, req.id, "creating", pid, req.bundle);
                hooks::run_all("prestart", hooks.prestart().as_ref(), &state, req.wait)
                    .and_then(|()| hooks::run_all("createRuntime", hooks.create_runtime().as_ref(), &state, req.wait))
                    .map_err(|e| e.to_string())
            },
        )
        // Limits apply once the process is ready, as runc applies them on
        // procReady: the device rules would otherwise refuse the mknod of
        // /dev/null and friends during rootfs setup.
        .and_then(|launched| match linux.resources() {
            Some(r) => cg.set(r).map(|()| launched).map_err(ContainerError::from),
            None => Ok(launched),
        });
        phase("init stage ready, resources applied");
        let (created, handles) = launched?;
        let cg = cg.keep();
        let init_descriptors = checkpoint::stdio_descriptors(created.pid);
        Ok(Container {
            id: req.id.to_string(),
            namespace: req.namespace.to_string(),
            io_owner: req.options.io_uid.zip(req.options.io_gid),
            spec: bundle.spec.clone(),
            bundle: req.bundle.to_path_buf(),
            init: Proc {
                exec_id: String::new(),
                pid: created.pid,
                status: Status::Created,
                exit: None,
                io: req.io.clone(),
                pending: None,
                created: Some(created),
                handles: Some(handles),
                spawned,
            },
            execs: HashMap::new(),
            oom_reported: cg.oom_kills(),
            oom_seen: Default::default(),
            own_pid_ns: linux
                .namespaces()
                .iter()
                .flatten()
                .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Pid && n.path().as_ref().is_none_or(|p| p.as_os_str().is_empty())),
            cgroup: cg,
            mounted_rootfs: None,
            oom_token: None,
            init_descriptors,
            init_restore: None,
        })
    }

    /// A Create from a checkpoint: the cgroup with its resources and the
    /// stdio, as for any container, but no init stage: Start restores the
    /// process tree (checkpoint.rs), as containerd's runc shim does.
    fn create_for_restore(req: &CreateRequest<'_>) -> Result<Container, ContainerError> {
        let bundle = Bundle::load(req.bundle)?;
        let linux = bundle.spec.linux().clone().unwrap_or_default();
        let cg = cgroup_driver(linux.cgroups_path().as_ref().and_then(|p| p.to_str()), req.id, req.options.systemd_cgroup)?;
        if cg.systemd_unit().is_some() {
            return Err(ContainerError::Unsupported("restoring from a checkpoint under the systemd cgroup driver is not supported yet: use cgroupfs".into()));
        }
        let in_use = cg.all_procs()?;
        if !in_use.is_empty() {
            return Err(cgroup::CgroupError::InUse { path: linux.cgroups_path().as_ref().map(|p| p.display().to_string()).unwrap_or_default(), pids: in_use }.into());
        }
        let mut cg = Undo::new(cg, destroy_cgroup);
        cg.prepare()?;
        if let Some(r) = linux.resources() {
            cg.set(r)?;
        }
        let io_owner = req.options.io_uid.zip(req.options.io_gid);
        let (stdio, handles) = stdio::open(&req.io.stdin, &req.io.stdout, &req.io.stderr, req.io.terminal, &LogTarget { container_id: req.id, namespace: req.namespace, owner: io_owner }, stdio::Readers::default())?;
        let cg = cg.keep();
        Ok(Container {
            id: req.id.to_string(),
            namespace: req.namespace.to_string(),
            io_owner,
            spec: bundle.spec.clone(),
            bundle: req.bundle.to_path_buf(),
            init: Proc { exec_id: String::new(), pid: 0, status: Status::Created, exit: None, io: req.io.clone(), pending: None, created: None, handles: Some(handles), spawned: std::time::Instant::now() },
            execs: HashMap::new(),
            oom_reported: cg.oom_kills(),
            oom_seen: Default::default(),
            own_pid_ns: linux
                .namespaces()
                .iter()
                .flatten()
                .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Pid && n.path().as_ref().is_none_or(|p| p.as_os_str().is_empty())),
            cgroup: cg,
            mounted_rootfs: None,
            oom_token: None,
            init_descriptors: Vec::new(),
            init_restore: Some(checkpoint::Restore { images: PathBuf::from(req.checkpoint), stdio, terminal: req.io.terminal }),
        })
    }

    /// Whether Start restores this container from a checkpoint.
    pub fn restores(&self) -> bool {
        self.init_restore.is_some()
    }

    /// Delete of a container created from a checkpoint that was never
    /// started: there is no process to kill.
    pub fn discard_restore(&mut self) {
        if self.init_restore.take().is_some() {
            self.init.status = Status::Stopped;
            self.init.exit = Some(Exit { code: 0, at: now() });
        }
    }

    pub fn saved(&self) -> Saved {
        Saved {
            pid: self.init.pid,
            cgroup: self.cgroup.path().to_string(),
            mounted_rootfs: self.mounted_rootfs.clone(),
            systemd_unit: self.cgroup.systemd_unit().map(str::to_string),
        }
    }

    pub fn process(&self, exec_id: &str) -> Result<&Proc, ContainerError> {
        if exec_id.is_empty() {
            return Ok(&self.init);
        }
        self.execs.get(exec_id).ok_or_else(|| ContainerError::NoExec { id: self.id.clone(), exec_id: exec_id.to_string() })
    }

    fn process_mut(&mut self, exec_id: &str) -> Result<&mut Proc, ContainerError> {
        if exec_id.is_empty() {
            return Ok(&mut self.init);
        }
        let id = self.id.clone();
        self.execs.get_mut(exec_id).ok_or(ContainerError::NoExec { id, exec_id: exec_id.to_string() })
    }

    fn state_err(&self, p: &Proc, action: &'static str, wanted: &'static str) -> ContainerError {
        ContainerError::State { what: p.what(&self.id), state: p.status.name(), action, wanted }
    }

    /// Registers an exec; it runs on Start.
    pub fn add_exec(&mut self, exec_id: &str, spec_json: &[u8], io: Io) -> Result<(), ContainerError> {
        if self.execs.contains_key(exec_id) {
            return Err(ContainerError::ExecExists { id: self.id.clone(), exec_id: exec_id.to_string() });
        }
        // runc's shim refuses an exec into a paused container here, at
        // Exec, before TaskExecAdded: it could only fail at Start.
        if self.init.status != Status::Running {
            return Err(self.state_err(&self.init, "exec", "running"));
        }
        let process: Process = serde_json::from_slice(spec_json).map_err(|e| ContainerError::ExecSpec(e.to_string()))?;
        if process.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(ContainerError::ExecSpec("args must name the program to run".into()));
        }
        let mut process = process;
        process.set_terminal(Some(io.terminal));
        self.execs.insert(
            exec_id.to_string(),
            Proc { exec_id: exec_id.to_string(), pid: 0, status: Status::Created, exit: None, io, pending: Some(process), created: None, handles: None, spawned: std::time::Instant::now() },
        );
        Ok(())
    }

    /// Lets the process exec. For an exec, this first builds it: it joins
    /// every namespace of init and init's cgroup, with no rootfs work. The
    /// caller holds the lock and publishes the start event under it, so the
    /// exit can never be published first. Returns the pid. `readers` is
    /// what the caller's wait for an exec's output readers gave, before it
    /// took the lock ([`stdio::await_readers`]); unused for init.
    pub fn start(&mut self, exec_id: &str, exe: &Path, wait: Wait<'_>, readers: Result<stdio::Readers, StdioError>) -> Result<i32, ContainerError> {
        if exec_id.is_empty() && self.init_restore.is_some() {
            let pid = self.restore(wait)?;
            self.init.pid = pid;
            self.init.status = Status::Running;
            return Ok(pid);
        }
        let result = self.start_process(exec_id, exe, readers);
        if result.is_err() && !exec_id.is_empty() {
            // An exec that failed to start has exited as far as containerd
            // is concerned: its Wait must return, and containerd deletes it.
            if let Ok(p) = self.process_mut(exec_id) {
                p.status = Status::Stopped;
                p.exit = Some(Exit { code: FAILED_EXEC, at: now() });
                p.created = None;
            }
        }
        result
    }

    fn start_process(&mut self, exec_id: &str, exe: &Path, readers: Result<stdio::Readers, StdioError>) -> Result<i32, ContainerError> {
        if !exec_id.is_empty() {
            self.launch_exec(exec_id, exe, readers)?;
        }
        let id = self.id.clone();
        let p = self.process_mut(exec_id)?;
        let Some(created) = p.created.take() else {
            let (what, state) = (p.what(&id), p.status.name());
            return Err(ContainerError::State { what, state, action: "start", wanted: "created" });
        };
        let what = p.what(&id);
        let started = if exec_id.is_empty() { created.start() } else { created.exec_result() };
        started.map_err(|source| ContainerError::Start { what, source })?;
        if p.status == Status::Created {
            p.status = Status::Running;
        }
        Ok(p.pid)
    }

    fn launch_exec(&mut self, exec_id: &str, exe: &Path, readers: Result<stdio::Readers, StdioError>) -> Result<(), ContainerError> {
        if self.init.status != Status::Running {
            return Err(self.state_err(&self.init, "exec", "running"));
        }
        let init_pid = self.init.pid;
        let seccomp = self.spec.linux().as_ref().and_then(|l| l.seccomp().clone());
        let bundle = self.bundle.clone();
        let id = self.id.clone();
        let cgroup = &mut self.cgroup;
        let namespace = &self.namespace;
        let io_owner = &self.io_owner;
        let p = self.execs.get_mut(exec_id).ok_or_else(|| ContainerError::NoExec { id: id.clone(), exec_id: exec_id.to_string() })?;
        let Some(process) = p.pending.take() else {
            return Err(ContainerError::State { what: p.what(&id), state: p.status.name(), action: "start", wanted: "created" });
        };
        let readers = readers?;
        let entry = cgroup.prepare()?;
        let dir = cgroup_dir(&entry)?;
        let config = InitConfig {
            id: id.clone(),
            bundle,
            cgroups: CgroupMounts::default(),
            cgroup_tasks: entry.self_tasks(),
            exec: Some(ExecConfig { init_pid, process, seccomp }),
            new_keyring: false,
        };
        let exe = exe.to_path_buf();
        let what = p.what(&id);
        p.spawned = std::time::Instant::now();
        let (created, handles) = launch_with_io(
            |stdio| LaunchSpec {
                exe,
                id: id.clone(),
                config,
                uid_mappings: Vec::new(),
                gid_mappings: Vec::new(),
                stdio,
                cgroup_dir: dir,
            },
            &p.io,
            readers,
            &LogTarget { container_id: &id, namespace, owner: *io_owner },
            &what,
            |pid| enter_cgroup(cgroup.as_mut(), &entry, pid),
            |_| Err("an exec has no runtime hooks".into()),
        )?;
        p.pid = created.pid;
        p.created = Some(created);
        p.handles = Some(handles);
        Ok(())
    }

    /// New OOM kills since the last call: the caller publishes TaskOOM.
    pub fn take_oom(&mut self) -> bool {
        let kills = self.cgroup.oom_kills().max(self.oom_seen.load(std::sync::atomic::Ordering::SeqCst));
        let new = kills > self.oom_reported;
        self.oom_reported = self.oom_reported.max(kills);
        new
    }

    pub fn pause(&mut self) -> Result<(), ContainerError> {
        if self.init.status != Status::Running {
            return Err(self.state_err(&self.init, "pause", "running"));
        }
        self.cgroup.freeze()?;
        self.init.status = Status::Paused;
        Ok(())
    }

    pub fn resume(&mut self) -> Result<(), ContainerError> {
        if self.init.status != Status::Paused {
            return Err(self.state_err(&self.init, "resume", "paused"));
        }
        self.cgroup.thaw()?;
        self.init.status = Status::Running;
        Ok(())
    }

    /// Update: new `linux.resources` (JSON, as containerd sends them).
    pub fn update(&mut self, resources_json: &[u8]) -> Result<(), ContainerError> {
        if self.init.status == Status::Stopped {
            return Err(self.state_err(&self.init, "update", "running"));
        }
        let resources: oci_spec::runtime::LinuxResources =
            serde_json::from_slice(resources_json).map_err(|e| ContainerError::Resources(e.to_string()))?;
        Ok(self.cgroup.set(&resources)?)
    }

    pub fn kill(&mut self, exec_id: &str, signal: u32, all: bool) -> Result<(), ContainerError> {
        let paused = self.init.status == Status::Paused;
        self.signal(exec_id, signal, all)?;
        // A frozen process cannot act on SIGKILL until it thaws: let the
        // kill through, as containerd expects a paused task to be killable.
        if paused && signal == libc::SIGKILL as u32 {
            self.cgroup.thaw()?;
            self.init.status = Status::Running;
        }
        Ok(())
    }

    fn signal(&self, exec_id: &str, signal: u32, all: bool) -> Result<(), ContainerError> {
        if all && exec_id.is_empty() {
            return Ok(self.cgroup.kill_all(signal as i32)?);
        }
        let p = self.process(exec_id)?;
        if p.status == Status::Stopped || p.pid == 0 {
            return Err(ContainerError::Finished { what: p.what(&self.id), pid: p.pid });
        }
        // SAFETY: kill(2) with plain integers.
        let r = unsafe { libc::kill(p.pid, signal as i32) };
        nix::errno::Errno::result(r).map(drop).map_err(|errno| match errno {
            nix::errno::Errno::ESRCH => ContainerError::Finished { what: p.what(&self.id), pid: p.pid },
            errno => ContainerError::Signal { pid: p.pid, signal, errno },
        })
    }

    pub fn close_io(&mut self, exec_id: &str) -> Result<(), ContainerError> {
        if let Some(h) = &mut self.process_mut(exec_id)?.handles {
            h.close_stdin();
        }
        Ok(())
    }

    /// ResizePty. A process without a terminal is not an error: runc's
    /// shim answers OK and does nothing, and containerd's clients (ctr's
    /// resize on SIGWINCH, the CRI's attach) send resizes regardless.
    pub fn resize(&self, exec_id: &str, width: u32, height: u32) -> Result<(), ContainerError> {
        match &self.process(exec_id)?.handles {
            Some(h) => Ok(h.resize(width, height)?),
            None => Ok(()),
        }
    }

    /// Forgets a finished exec.
    pub fn delete_exec(&mut self, exec_id: &str) -> Result<Proc, ContainerError> {
        let p = self.process(exec_id)?;
        if p.status == Status::Running {
            return Err(self.state_err(p, "delete", "stopped"));
        }
        let mut p = self.execs.remove(exec_id).expect("checked above");
        if let Some(h) = &mut p.handles {
            h.release();
        }
        if p.status == Status::Created && p.pid != 0 {
            // Built but never started: it waits on its sync socket, which
            // dropping `created` closes, so it exits.
            p.created = None;
        }
        Ok(p)
    }

    /// Kills what is left, removes the cgroup and our mounts and state.
    pub fn destroy(&mut self) -> Result<(), ContainerError> {
        if self.init.status != Status::Stopped {
            return Err(self.state_err(&self.init, "delete", "stopped"));
        }
        self.cgroup.destroy()?;
        for p in std::iter::once(&mut self.init).chain(self.execs.values_mut()) {
            if let Some(h) = &mut p.handles {
                h.release();
            }
        }
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

    /// Records a process's exit. Its output is drained first, so that
    /// everything it wrote reaches containerd before TaskExit. Returns the
    /// container, still locked, for the caller to publish under the lock.
    pub fn record_exit(&self, exec_id: &str, code: i32) -> (MutexGuard<'_, Container>, Exit) {
        let handles = self.lock().process_mut(exec_id).ok().and_then(|p| p.handles.as_mut().map(|h| h.take_outputs()));
        if let Some(h) = handles {
            h.drain(Duration::from_secs(2));
        }
        let mut c = self.lock();
        let exit = Exit { code: code as u32, at: now() };
        if let Ok(p) = c.process_mut(exec_id) {
            p.status = Status::Stopped;
            p.exit = Some(exit.clone());
            p.created = None;
        }
        if exec_id.is_empty() {
            // Everything dies with init: the kernel kills the rest when init
            // was its pid namespace's init; otherwise we kill the cgroup, as
            // runc's shim does (ShouldKillAllOnExit), execs included.
            if !c.own_pid_ns {
                if let Err(e) = c.cgroup.kill_all(libc::SIGKILL) {
                    log::warn!("kill what container {} left after its init: {e}", c.id);
                }
            }
            for e in c.execs.values().filter(|e| e.status == Status::Running && e.pid > 0) {
                // SAFETY: kill(2) with plain integers.
                unsafe { libc::kill(e.pid, libc::SIGKILL) };
            }
        }
        self.exited.notify_all();
        (c, exit)
    }

    /// Wakes the waiters after a state change made under [`Cell::lock`]
    /// outside the exit path (an exec that failed to start).
    pub fn notify(&self) {
        self.exited.notify_all();
    }

    /// Blocks until the process has exited.
    pub fn wait(&self, exec_id: &str) -> Result<Exit, ContainerError> {
        let mut c = self.lock();
        loop {
            if let Some(e) = &c.process(exec_id)?.exit {
                return Ok(e.clone());
            }
            c = self.exited.wait(c).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Like [`Cell::wait`] for init, bounded.
    pub fn wait_init_timeout(&self, timeout: Duration) -> Option<Exit> {
        let c = self.lock();
        let (c, _) = self.exited.wait_timeout_while(c, timeout, |c| c.init.exit.is_none()).unwrap_or_else(|e| e.into_inner());
        c.init.exit.clone()
    }
}

#[cfg(test)]
mod undo_tests {
    use super::Undo;

    /// A Create step is undone when a panic unwinds through Create (rpc.rs
    /// catches the panic), and kept once Create finishes.
    #[test]
    fn a_step_is_undone_on_unwind_and_kept_on_success() {
        static UNDONE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let undo = |_: &mut u32| {
            UNDONE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        };
        let unwound = std::panic::catch_unwind(|| {
            let _step = Undo::new(1u32, undo);
            panic!("a bug in the middle of Create");
        });
        assert!(unwound.is_err());
        assert_eq!(UNDONE.load(std::sync::atomic::Ordering::SeqCst), 1, "the step was not undone by the unwind");
        let kept = Undo::new(2u32, undo).keep();
        assert_eq!(kept, 2);
        assert_eq!(UNDONE.load(std::sync::atomic::Ordering::SeqCst), 1, "a kept step was undone");
    }
}
