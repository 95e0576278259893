//! The init stage: the re-executed shim binary that turns itself into the
//! container's process.
//!
//! Stage 1 (`rsv2-init`) is single-threaded fresh from exec, which the
//! kernel requires for unshare(CLONE_NEWUSER) and for setns into a mount or
//! user namespace. It joins and creates namespaces, then forks, because a
//! new pid namespace only applies to children. Stage 2 (`rsv2-init2`,
//! reparented to the shim, a child subreaper) builds the rootfs, drops
//! privileges, reports ready and waits for Start before execve.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use nix::sched::CloneFlags;
use nix::unistd::{fork, ForkResult};

use oci_spec::runtime::{LinuxIdMapping, LinuxSeccomp, Process};

use crate::channel::{Channel, FromInit, InitConfig, ToInit};
use crate::console;
use crate::hooks;
use crate::lsm;
use crate::seccomp;
use crate::namespaces::{self, Plan};
use crate::process::{self, ExecArgs};
use crate::rootfs::{self, RootfsContext};
use crate::spec::Bundle;
use crate::syscall::{Linux, Syscall};
use crate::SYNC_FD_ENV;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0}")]
    Spec(#[from] crate::spec::SpecError),
    #[error("{0}")]
    Namespace(#[from] namespaces::NamespaceError),
    #[error("{0}")]
    Rootfs(#[from] rootfs::RootfsError),
    #[error("{0}")]
    Process(#[from] process::ProcessError),
    #[error("{0}")]
    Channel(#[from] crate::channel::ChannelError),
    #[error("{what}: {errno}")]
    Sys { what: String, errno: nix::errno::Errno },
    #[error("{0}")]
    Console(#[from] console::ConsoleError),
    #[error("{0}")]
    Seccomp(#[from] seccomp::SeccompError),
    #[error("{0}")]
    Lsm(#[from] lsm::LsmError),
    #[error("{0}")]
    Hook(#[from] hooks::HookError),
    #[error("{0}")]
    Unsupported(String),
    #[error("join the container's cgroup through {path}: {source}")]
    Cgroup { path: std::path::PathBuf, source: std::io::Error },
    #[error("mounts[{index}] on {dest}: {source}")]
    Idmap { index: usize, dest: std::path::PathBuf, source: crate::idmap::IdmapError },
    #[error("{field}: the user namespace joined by path maps {actual:?}, but the spec gives {given:?}")]
    MappingMismatch { field: &'static str, actual: String, given: String },
}

fn sys_err(what: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> InitError {
    let what = what.into();
    move |errno| InitError::Sys { what, errno }
}

fn set_name(name: &str) {
    let c = std::ffi::CString::new(name).unwrap_or_default();
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of up to 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr() as libc::c_ulong, 0, 0, 0) };
}

/// Entry point of the `init` role. Never returns.
pub fn main() -> ! {
    let fd: i32 = match std::env::var(SYNC_FD_ENV).ok().and_then(|v| v.parse().ok()) {
        Some(fd) => fd,
        None => {
            eprintln!("the init stage is started by containerd-shim-rust-v2, not by hand");
            std::process::exit(2);
        }
    };
    std::env::remove_var(SYNC_FD_ENV);
    // Whatever the multithreaded shim had open when it forked us (ttrpc's
    // accepted sockets are not close-on-exec) must not reach a hook or the
    // container: mark every fd from 3 up close-on-exec, the sync socket
    // included (we use it, we never exec with it).
    // SAFETY: close_range with integer arguments.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    // SAFETY: the shim passed this fd to us for our exclusive use.
    let chan = Channel::from_fd(unsafe { OwnedFd::from_raw_fd(fd) });
    // Our stderr is the container's: a panic is reported to the shim over
    // the sync socket (guarded() below), never printed into the
    // container's output.
    std::panic::set_hook(Box::new(|_| {}));
    let code = match guarded(|| stage1(&chan)) {
        Ok(()) => 0,
        Err(e) => {
            let _ = chan.send(&FromInit::Error(e.to_string()));
            1
        }
    };
    std::process::exit(code)
}

fn stage1(chan: &Channel) -> Result<(), InitError> {
    set_name("rsv2-init");
    // CVE-2019-5736: a non-dumpable process's /proc/PID/exe cannot be
    // opened by other processes of the container's user, so nothing that
    // joins the container's namespaces can reach our binary through it.
    // This must precede any setns.
    Linux.prctl(libc::PR_SET_DUMPABLE, 0, 0).map_err(sys_err("set non-dumpable"))?;

    let ToInit::Config(config) = chan.recv()? else {
        return Err(InitError::Unsupported("expected the init config first".into()));
    };
    // Into the container's cgroup before anything else, and before the
    // fork below, so that every process of the container starts inside it.
    // We are single-threaded, so moving our only thread moves us whole,
    // without the cgroup_threadgroup_rwsem write (an RCU grace period)
    // that a move by pid costs.
    join_cgroup(&config.cgroup_tasks)?;
    let (plan, job) = match &config.exec {
        Some(exec) => {
            // An exec runs under the container's seccomp profile, which the
            // shim sends along.
            let plan = namespaces::plan_join(exec.init_pid).map_err(sys_err(format!("read namespaces of pid {}", exec.init_pid)))?;
            (plan, Job::Exec(exec.process.clone(), exec.seccomp.clone()))
        }
        None => {
            let bundle = Bundle::load(&config.bundle)?;
            let linux = bundle.spec.linux().clone().unwrap_or_default();
            let plan = Plan::from_spec(linux.namespaces().as_deref().unwrap_or_default());
            if !plan.has(CloneFlags::CLONE_NEWNS) {
                return Err(InitError::Unsupported("the spec must ask for a mount namespace".into()));
            }
            (plan, Job::Init(Box::new(bundle)))
        }
    };

    // Before any user namespace: we are non-dumpable, so /proc/self's files
    // belong to the host's root, which the container's root is not (runc's
    // nsexec writes it in its first stage for the same reason). Stage 2
    // inherits the score through fork.
    if let Job::Init(bundle) = &job {
        set_oom_score_adj(bundle)?;
    }
    // Id-mapped trees are made before any user namespace is joined or
    // created: only the host's user namespace may id-map a host path.
    let idmapped = match &job {
        Job::Init(bundle) => idmapped_trees(bundle)?,
        Job::Exec(..) => Vec::new(),
    };

    let fds = namespaces::open_all(&plan)?;
    namespaces::join_all(fds)?;
    if plan.join.iter().any(|(f, _)| *f == CloneFlags::CLONE_NEWUSER) {
        if let Job::Init(bundle) = &job {
            check_joined_mappings(bundle)?;
        }
        // Our host ids mean nothing in the joined namespace: files we create
        // there (mount points, /dev) would get EOVERFLOW. Become its root,
        // as runc's nsexec does after setns(CLONE_NEWUSER).
        become_root_of_user_ns()?;
    }
    if plan.creates(CloneFlags::CLONE_NEWUSER) {
        namespaces::unshare(CloneFlags::CLONE_NEWUSER)?;
        // Only a process in the parent user namespace with CAP_SETUID may
        // write maps that name other ids (user_namespaces(7)): the shim does.
        chan.send(&FromInit::UserNsReady)?;
        match chan.recv()? {
            ToInit::MapsWritten => {}
            other => return Err(InitError::Unsupported(format!("expected the id maps, got {other:?}"))),
        }
        become_root_of_user_ns()?;
    }
    namespaces::unshare(plan.create - CloneFlags::CLONE_NEWUSER)?;
    if let Job::Init(bundle) = &job {
        set_time_offsets(bundle)?;
    }

    // Both stages share the sync socket: stage 2 waits on this pipe until
    // stage 1 has reported its pid, so the shim always hears Pid first.
    let (pid_sent_r, pid_sent_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys_err("create a pipe"))?;
    // SAFETY: this process is single-threaded (fresh from exec, no thread
    // spawned), so the child may run arbitrary code.
    match unsafe { fork() }.map_err(sys_err("fork into the pid namespace"))? {
        ForkResult::Parent { child } => {
            chan.send(&FromInit::Pid(child.as_raw()))?;
            drop(pid_sent_w);
            Ok(())
        }
        ForkResult::Child => {
            drop(pid_sent_w);
            let mut byte = [0u8; 1];
            // Returns at end-of-file, once stage 1 closed its end.
            let _ = nix::unistd::read(&pid_sent_r, &mut byte);
            drop(pid_sent_r);
            let r = guarded(|| match &job {
                Job::Init(bundle) => stage2_init(chan, bundle, &config, &plan, &idmapped),
                Job::Exec(process, seccomp) => stage2_exec(chan, process, seccomp.as_ref(), &plan),
            });
            let code = match r {
                Ok(never) => match never {},
                Err(e) => {
                    let _ = chan.send(&FromInit::Error(e.to_string()));
                    1
                }
            };
            std::process::exit(code)
        }
    }
}

/// In a user namespace, each bind mount's source (not id-mapped) as the
/// shim opens it for us (launch.rs, open_mount_source).
fn mount_sources(chan: &Channel, spec: &oci_spec::runtime::Spec, idmapped: &[Option<OwnedFd>]) -> Result<Vec<Option<OwnedFd>>, InitError> {
    let mounts = spec.mounts().as_deref().unwrap_or_default();
    let mut sources = Vec::with_capacity(mounts.len());
    for (i, m) in mounts.iter().enumerate() {
        let bind = rootfs::parse_options(m.options().as_deref().unwrap_or_default()).bind();
        let (Some(source), true, None) = (m.source(), bind, idmapped.get(i).and_then(|t| t.as_ref())) else {
            sources.push(None);
            continue;
        };
        chan.send(&FromInit::OpenMountSource(source.clone()))?;
        match chan.recv_fd::<ToInit>()? {
            (ToInit::MountSource, Some(fd)) => sources.push(Some(fd)),
            (ToInit::MountSourceError(e), _) => return Err(InitError::Unsupported(format!("mounts[{i}].source: {e}"))),
            (other, _) => return Err(InitError::Unsupported(format!("expected mounts[{i}]'s source, got {other:?}"))),
        }
    }
    Ok(sources)
}

fn set_oom_score_adj(bundle: &Bundle) -> Result<(), InitError> {
    let Some(score) = bundle.spec.process().as_ref().and_then(|p| p.oom_score_adj()) else { return Ok(()) };
    std::fs::write("/proc/self/oom_score_adj", score.to_string()).map_err(|e| {
        InitError::Unsupported(format!("set process.oomScoreAdj {score}: {e} (lowering the score below the shim's needs CAP_SYS_RESOURCE)"))
    })
}

fn become_root_of_user_ns() -> Result<(), InitError> {
    Linux.setresgid(0).map_err(sys_err("become gid 0 in the user namespace"))?;
    Linux.setresuid(0).map_err(sys_err("become uid 0 in the user namespace"))
}

/// For each spec mount, the id-mapped copy of its source when it has
/// `uidMappings` (validation made sure it then has `gidMappings` too and is
/// a bind mount). Mounts with the same maps share one user namespace.
fn idmapped_trees(bundle: &Bundle) -> Result<Vec<Option<OwnedFd>>, InitError> {
    use std::os::fd::AsFd;
    let mounts = bundle.spec.mounts().as_deref().unwrap_or_default();
    let maps = |m: &oci_spec::runtime::Mount| {
        let uids = m.uid_mappings().clone().unwrap_or_default();
        let gids = m.gid_mappings().clone().unwrap_or_default();
        (!uids.is_empty() || !gids.is_empty()).then_some((uids, gids))
    };
    if !mounts.iter().any(|m| maps(m).is_some()) {
        return Ok(Vec::new());
    }
    let mut namespaces: Vec<((Vec<LinuxIdMapping>, Vec<LinuxIdMapping>), OwnedFd)> = Vec::new();
    let mut trees = Vec::with_capacity(mounts.len());
    for (index, m) in mounts.iter().enumerate() {
        let Some((uids, gids)) = maps(m) else {
            trees.push(None);
            continue;
        };
        let err = |source| InitError::Idmap { index, dest: m.destination().clone(), source };
        let userns = match namespaces.iter().position(|((u, g), _)| *u == uids && *g == gids) {
            Some(i) => i,
            None => {
                let fd = crate::idmap::userns_fd(&uids, &gids).map_err(err)?;
                namespaces.push(((uids, gids), fd));
                namespaces.len() - 1
            }
        };
        let source = m.source().clone().unwrap_or_default();
        let words = m.options().as_deref().unwrap_or_default();
        let options = crate::idmap::TreeOptions {
            recursive: rootfs::parse_options(words).flags.contains(nix::mount::MsFlags::MS_REC),
            recursive_idmap: words.iter().any(|w| w == "ridmap"),
            readonly: false,
        };
        trees.push(Some(crate::idmap::clone_tree(&source, namespaces[userns].1.as_fd(), options).map_err(err)?));
    }
    Ok(trees)
}

/// containerd's CRI names the pod's user namespace by path and also gives
/// its maps; runc accepts that only when they agree (specconv's
/// setupUserNamespace), since every id check was made against the maps.
fn check_joined_mappings(bundle: &Bundle) -> Result<(), InitError> {
    let linux = bundle.spec.linux().clone().unwrap_or_default();
    for (field, file, given) in [("linux.uidMappings", "uid_map", linux.uid_mappings()), ("linux.gidMappings", "gid_map", linux.gid_mappings())] {
        let Some(given) = given.as_ref().filter(|g| !g.is_empty()) else { continue };
        let text = std::fs::read_to_string(format!("/proc/self/{file}")).map_err(|e| InitError::Unsupported(format!("read /proc/self/{file}: {e}")))?;
        let actual = crate::idmap::parse_map_file(&text);
        if !crate::idmap::same_mapping(&actual, given) {
            return Err(InitError::MappingMismatch { field, actual: crate::idmap::map_text(&actual), given: crate::idmap::map_text(given) });
        }
    }
    Ok(())
}

/// `linux.timeOffsets`: a new time namespace takes its offsets before any
/// process is in it (time_namespaces(7)), so between the unshare and the
/// fork that puts stage 2 there.
fn set_time_offsets(bundle: &Bundle) -> Result<(), InitError> {
    let Some(offsets) = bundle.spec.linux().as_ref().and_then(|l| l.time_offsets().clone()).filter(|o| !o.is_empty()) else { return Ok(()) };
    let text: String = offsets.iter().map(|(clock, o)| format!("{clock} {} {}\n", o.secs().unwrap_or(0), o.nanosecs().unwrap_or(0))).collect();
    std::fs::write("/proc/self/timens_offsets", text).map_err(|e| InitError::Unsupported(format!("set linux.timeOffsets through /proc/self/timens_offsets: {e}")))
}

/// Runs a stage, turning a panic into an error the shim reports for this
/// container alone.
fn guarded<T>(stage: impl FnOnce() -> Result<T, InitError>) -> Result<T, InitError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(stage)).unwrap_or_else(|panic| {
        let what = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
        Err(InitError::Unsupported(format!("internal error in the init stage: {what}")))
    })
}

/// Moves this (single-threaded) process into a v1 cgroup, one hierarchy
/// at a time: "0" names the writing thread itself.
fn join_cgroup(tasks: &[std::path::PathBuf]) -> Result<(), InitError> {
    for path in tasks {
        let err = |source| InitError::Cgroup { path: path.clone(), source };
        let mut file = std::fs::OpenOptions::new().write(true).open(path).map_err(err)?;
        std::io::Write::write_all(&mut file, b"0").map_err(err)?;
    }
    Ok(())
}

/// What stage 2 turns into.
enum Job {
    Init(Box<Bundle>),
    Exec(Process, Option<LinuxSeccomp>),
}

enum Never {}

/// Common start of stage 2: its own session, so that it can take a
/// controlling terminal, and a umask that leaves modes as asked.
fn stage2_common() -> Result<(), InitError> {
    set_name("rsv2-init2");
    // Restore what the shim changed for itself: the container starts with
    // default signal handling and nothing blocked, as after runc.
    // SAFETY: resetting a disposition and the signal mask.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
    nix::unistd::setsid().map_err(sys_err("setsid"))?;
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    Ok(())
}

fn stage2_init(chan: &Channel, bundle: &Bundle, config: &InitConfig, plan: &Plan, idmapped: &[Option<OwnedFd>]) -> Result<Never, InitError> {
    stage2_common()?;
    let sys = Linux;
    let spec = &bundle.spec;
    let linux = spec.linux().clone().unwrap_or_default();
    let process = spec.process().clone().unwrap_or_default();

    let bind_sources = if plan.has(CloneFlags::CLONE_NEWUSER) { mount_sources(chan, spec, idmapped)? } else { Vec::new() };
    let ctx = RootfsContext {
        rootfs: &bundle.rootfs,
        cgroups: &config.cgroups,
        in_user_ns: plan.has(CloneFlags::CLONE_NEWUSER),
        cgroup_ns: plan.has(CloneFlags::CLONE_NEWCGROUP),
        idmapped,
        bind_sources: &bind_sources,
    };
    rootfs::prepare(&sys, spec, &ctx)?;
    let hooks = spec.hooks().clone().unwrap_or_default();
    if hooks.prestart().is_some() || hooks.create_runtime().is_some() {
        chan.send(&FromInit::RuntimeHooks)?;
        match chan.recv()? {
            ToInit::HooksDone => {}
            other => return Err(InitError::Unsupported(format!("expected the runtime hooks, got {other:?}"))),
        }
    }
    let state = |status| hooks::State::new(spec, &config.id, status, std::process::id() as i32, &bundle.dir);
    // Before pivot_root, so the path resolves on the host, in our namespaces.
    hooks::run_all("createContainer", hooks.create_container().as_ref(), &state("creating"), &hooks::waitpid)?;
    rootfs::pivot(&sys, &bundle.rootfs)?;
    rootfs::root_propagation(&sys, linux.rootfs_propagation().as_deref())?;

    // sysctl writes need /proc/sys writable, so they precede readonlyPaths.
    for (key, value) in linux.sysctl().iter().flatten() {
        write_sysctl(key, value)?;
    }
    // The console is bound over /dev/console before the root turns
    // read-only.
    if process.terminal().unwrap_or(false) {
        console::setup(chan, true)?;
    }
    rootfs::readonly_paths(&sys, linux.readonly_paths().as_deref().unwrap_or_default())?;
    rootfs::mask_paths(&sys, linux.masked_paths().as_deref().unwrap_or_default())?;
    if spec.root().as_ref().and_then(|r| r.readonly()).unwrap_or(false) {
        rootfs::readonly_root(&sys)?;
    }

    if let Some(hostname) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        if !plan.has(CloneFlags::CLONE_NEWUTS) {
            return Err(InitError::Unsupported("cannot set the hostname without a private uts namespace".into()));
        }
        sys.sethostname(hostname).map_err(sys_err(format!("set hostname {hostname}")))?;
    }

    if config.new_keyring {
        // The host's session keyring must not be shared with the
        // container: join a fresh one named after it, as runc does.
        let name = std::ffi::CString::new(config.id.as_str()).unwrap_or_default();
        // SAFETY: KEYCTL_JOIN_SESSION_KEYRING with a NUL-terminated name.
        let r = unsafe { libc::syscall(libc::SYS_keyctl, 1 /* KEYCTL_JOIN_SESSION_KEYRING */, name.as_ptr()) };
        match nix::errno::Errno::result(r) {
            Ok(_) | Err(nix::errno::Errno::ENOSYS) => {}
            Err(errno) => return Err(InitError::Sys { what: "join a new session keyring".into(), errno }),
        }
    }

    let start_hooks = (hooks.start_container().clone(), state("created"));
    process::set_personality(linux.personality().as_ref())?;
    finish(chan, &process, linux.seccomp().as_ref(), plan, Some(start_hooks))
}

/// Writes one sysctl through a file that is verified to be procfs: no
/// symlink on the way (an image could make /proc/sys point elsewhere when
/// the spec mounts no /proc over it), and PROC_SUPER_MAGIC on the result.
fn write_sysctl(key: &str, value: &str) -> Result<(), InitError> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    let err = |what: String| InitError::Unsupported(format!("sysctl {key}={value}: {what}"));
    // The shim's validator refused a key with an empty, `.` or `..` part;
    // RESOLVE_BENEATH below holds even if it had not.
    let rel = crate::validate::sysctl_path(key);
    let sys = nix::fcntl::open("/proc/sys", nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
        .map_err(|e| err(format!("open /proc/sys: {e}")))?;
    let path = Path::new("/proc/sys").join(&rel);
    let how = OpenHow::new()
        .flags(OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS | ResolveFlag::RESOLVE_NO_XDEV);
    let fd = openat2(&sys, rel.as_str(), how).map_err(|e| err(e.to_string()))?;
    const PROC_SUPER_MAGIC: i64 = 0x9fa0;
    let fs = nix::sys::statfs::fstatfs(&fd).map_err(|e| err(e.to_string()))?;
    if fs.filesystem_type().0 as i64 != PROC_SUPER_MAGIC {
        return Err(err(format!("{} is not on procfs", path.display())));
    }
    nix::unistd::write(&fd, value.as_bytes()).map(drop).map_err(|e| err(e.to_string()))
}

fn stage2_exec(chan: &Channel, process: &Process, seccomp: Option<&LinuxSeccomp>, plan: &Plan) -> Result<Never, InitError> {
    stage2_common()?;
    if process.terminal().unwrap_or(false) {
        console::setup(chan, false)?;
    }
    finish(chan, process, seccomp, plan, None)
}

/// Identity, working directory and the program, then Ready, Start, execve.
///
/// seccomp goes as late as the kernel allows: with no_new_privs, right
/// before execve, so that our own setup syscalls need not pass the
/// container's filter; without it, installing a filter needs CAP_SYS_ADMIN,
/// so it goes before the capabilities are dropped (runc's order).
fn finish(
    chan: &Channel,
    process: &Process,
    seccomp: Option<&LinuxSeccomp>,
    plan: &Plan,
    start_hooks: Option<(Option<Vec<oci_spec::runtime::Hook>>, hooks::State)>,
) -> Result<Never, InitError> {
    let sys = Linux;
    let filter = seccomp.map(|s| seccomp::compile(s).map(|p| (s, p))).transpose()?;
    lsm::apply(process)?;
    process::set_rlimits(&sys, process)?;
    process::set_scheduling(process)?;
    process::set_no_new_privs(&sys, process)?;
    let nnp = process.no_new_privileges().unwrap_or(false);
    if let (Some((profile, program)), false) = (&filter, nnp) {
        seccomp::load(profile, program)?;
    }
    // setgroups(2) is denied in a user namespace whose setgroups file says
    // deny; runc skips it there too.
    let setgroups_allowed = !plan.has(CloneFlags::CLONE_NEWUSER)
        || std::fs::read_to_string("/proc/self/setgroups").map(|s| s.trim() == "allow").unwrap_or(true);
    process::switch_identity(&sys, process, setgroups_allowed)?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(process.user().umask().unwrap_or(0o022) as libc::mode_t));
    process::enter_cwd(&sys, process)?;
    let program = process::resolve_program(process)?;
    let exec = ExecArgs::new(&program, process)?;

    chan.send(&FromInit::Ready)?;
    // A container's init waits for Start, a call of its own. An exec is
    // built by its Start call, which is under way: it goes on at once
    // (the shim hears its execve as the sync socket closing), saving the
    // round trip through the shim on every exec.
    let started = if let Some((hooks, state)) = start_hooks {
        match chan.recv()? {
            ToInit::Start => {}
            other => return Err(InitError::Unsupported(format!("expected start, got {other:?}"))),
        }
        // A container's init has started once Start came, as under runc:
        // what fails from here (a startContainer hook, the filter, the
        // execve itself: E2BIG, ENOEXEC) is the process's own failure, said
        // on its stderr, and its exit (127), which containerd reports and
        // the client cleans up after. A failed Start instead left ctr run
        // --rm unable to delete the container.
        Some(
            (|| {
                // In the container, after Start and before the program.
                hooks::run_all("startContainer", hooks.as_ref(), &state, &hooks::waitpid)?;
                exec_program(&exec, &program, filter.as_ref(), nnp)
            })(),
        )
    } else {
        None
    };
    match started {
        Some(Err(e)) => {
            let text = format!("containerd-shim-rust-v2: {e}\n");
            // SAFETY: write(2) of a buffer we own to fd 2.
            unsafe { libc::write(2, text.as_ptr().cast(), text.len()) };
            // SAFETY: _exit ends this process without unwinding.
            unsafe { libc::_exit(127) }
        }
        Some(Ok(never)) => match never {},
        None => exec_program(&exec, &program, filter.as_ref(), nnp),
    }
}

/// The last steps: every fd above 2 closes on exec, the filter goes on
/// when no_new_privs allows it that late, execve.
fn exec_program(exec: &ExecArgs, program: &Path, filter: Option<&(&LinuxSeccomp, Vec<seccomp::Insn>)>, nnp: bool) -> Result<Never, InitError> {
    ExecArgs::close_fds();
    if let (Some((profile, program)), true) = (filter, nnp) {
        seccomp::load(profile, program)?;
    }
    let errno = exec.exec();
    Err(InitError::Sys { what: format!("exec {}", program.display()), errno })
}
