//! Starting stage 1 from the multithreaded shim: straight inside a cgroup
//! v2 directory with clone3(CLONE_INTO_CGROUP) (Linux 5.7), or otherwise
//! with posix_spawn.
//!
//! Why not std's Command: stage 1 must inherit its sync socket, which is
//! close-on-exec in the shim (so no other child can leak it); clearing that
//! flag takes a pre_exec closure, and with one Command forks. A fork copies
//! the page tables of the shim's anonymous memory, and every page the shim
//! writes afterwards takes a copy-on-write fault. glibc's posix_spawn runs
//! the child as CLONE_VM|CLONE_VFORK instead, and its dup2 file actions
//! place the socket without a closure: 0.47 ms against 0.12 ms per spawn
//! of a small binary from a process with 4 MiB of heap, measured here.
//!
//! Moving a process by writing its pid into cgroup.procs takes
//! cgroup_threadgroup_rwsem for write, which waits for an RCU grace period
//! (6 to 14 ms on the hosts we measured), on every start and every exec. A
//! child cloned into its cgroup takes only the read side. On v1 the same
//! cost is avoided differently: stage 1 moves itself, thread by thread
//! (cgroup::Entry::SelfTasks); v1 hierarchies cannot be cloned into.
//!
//! The shim is multithreaded, so between clone3 and execve the child only
//! makes async-signal-safe calls on memory prepared before the clone, as
//! std's Command does.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `struct clone_args` of linux/sched.h, up to the `cgroup` field
/// (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The child's fd for [`Spawn::keep`].
pub const KEEP_FD: RawFd = 3;

/// What stage 1 is started with.
pub struct Spawn<'a> {
    pub exe: &'a Path,
    /// argv, the first entry being the name `ps` shows.
    pub argv: &'a [&'a OsStr],
    /// Set on top of the shim's own environment.
    pub env: (&'a str, String),
    pub cwd: &'a Path,
    /// The child's fds 0, 1 and 2.
    pub stdio: [&'a OwnedFd; 3],
    /// One more fd the child gets, as [`KEEP_FD`], without close-on-exec.
    pub keep: RawFd,
}

impl Spawn<'_> {
    /// The fds the child gets as 0, 1, 2 and [`KEEP_FD`], in that order.
    fn child_fds(&self) -> [RawFd; 4] {
        [self.stdio[0].as_raw_fd(), self.stdio[1].as_raw_fd(), self.stdio[2].as_raw_fd(), self.keep]
    }
}

/// The C strings the child needs, built before it exists: a vfork or
/// clone3 child must not allocate.
struct Prepared {
    exe: CString,
    cwd: CString,
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv_p: Vec<*const libc::c_char>,
    envp_p: Vec<*const libc::c_char>,
}

impl Prepared {
    fn new(spec: &Spawn<'_>) -> std::io::Result<Prepared> {
        let exe = cstring(spec.exe.as_os_str().as_bytes())?;
        let cwd = cstring(spec.cwd.as_os_str().as_bytes())?;
        let argv: Vec<CString> = spec.argv.iter().map(|a| cstring(a.as_bytes())).collect::<Result<_, _>>()?;
        let mut envp: Vec<CString> = std::env::vars_os()
            .filter(|(k, _)| k.as_bytes() != spec.env.0.as_bytes())
            .map(|(k, v)| cstring(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
            .collect::<Result<_, _>>()?;
        envp.push(cstring(format!("{}={}", spec.env.0, spec.env.1).as_bytes())?);
        let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_p.push(std::ptr::null());
        let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
        envp_p.push(std::ptr::null());
        Ok(Prepared { exe, cwd, _argv: argv, _envp: envp, argv_p, envp_p })
    }
}

/// Starts the process and returns its pid once execve succeeded: with
/// posix_spawn, or with a clone3 fork when a source fd is one the child's
/// dup2s would overwrite before it is copied (the shim's own 0 to 3 are
/// always open, so in practice never).
pub fn start(spec: &Spawn<'_>) -> std::io::Result<i32> {
    let sources = spec.child_fds();
    if sources.iter().any(|&fd| fd <= KEEP_FD) {
        return clone(spec, None);
    }
    let p = Prepared::new(spec)?;
    posix_spawn(&p.exe, &p.argv_p, &p.envp_p, &sources, Some(&p.cwd))
}

/// Starts a helper of the shim (a hook, a `binary://` logger) with
/// posix_spawn: `fds` become its fds 0, 1, 2, 3, …; its environment is
/// exactly `env`; it keeps the shim's working directory. Returns its pid,
/// or the error of its execve.
///
/// Not std's Command: with a pre_exec closure it forks, and when the
/// execve fails it waits for the child with waitpid(pid) and panics if
/// that fails. In the shim the reaper's waitpid(-1) can reap the child
/// first, and a hook that did not exist took the pod's shim down with
/// that panic (issue #12, case 3). Here the child is the reaper's alone.
pub fn helper(exe: &Path, argv: &[&OsStr], env: &[String], fds: &[RawFd]) -> std::io::Result<i32> {
    let exe = cstring(exe.as_os_str().as_bytes())?;
    let argv: Vec<CString> = argv.iter().map(|a| cstring(a.as_bytes())).collect::<Result<_, _>>()?;
    let env: Vec<CString> = env.iter().map(|e| cstring(e.as_bytes())).collect::<Result<_, _>>()?;
    let argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).chain([std::ptr::null()]).collect();
    let envp_p: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).chain([std::ptr::null()]).collect();
    // Sources above every target, so that no dup2 overwrites a source
    // still to be placed; these copies are close-on-exec and ours.
    let above = fds.len() as RawFd + 3;
    let high: Vec<OwnedFd> = fds
        .iter()
        .map(|&fd| {
            // SAFETY: F_DUPFD_CLOEXEC returns a new fd, owned here.
            let h = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, above) };
            if h < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: h is a new fd.
            Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(h) })
        })
        .collect::<Result<_, _>>()?;
    let sources: Vec<RawFd> = high.iter().map(|f| f.as_raw_fd()).collect();
    posix_spawn(&exe, &argv_p, &envp_p, &sources, None)
}

/// posix_spawn with `fds` dup2'ed onto 0, 1, 2, …, SIGPIPE at its default
/// and no signal blocked, and `cwd` if given. glibc runs the child as
/// CLONE_VM|CLONE_VFORK and returns its execve error.
fn posix_spawn(exe: &CString, argv: &[*const libc::c_char], envp: &[*const libc::c_char], fds: &[RawFd], cwd: Option<&CString>) -> std::io::Result<i32> {
    let mut actions = std::mem::MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit();
    let mut attr = std::mem::MaybeUninit::<libc::posix_spawnattr_t>::uninit();
    // SAFETY: the posix_spawn objects are initialised before use and
    // destroyed once; every pointer handed over outlives the call.
    unsafe {
        let r = libc::posix_spawn_file_actions_init(actions.as_mut_ptr());
        if r != 0 {
            return Err(std::io::Error::from_raw_os_error(r));
        }
        let r = libc::posix_spawnattr_init(attr.as_mut_ptr());
        if r != 0 {
            libc::posix_spawn_file_actions_destroy(actions.as_mut_ptr());
            return Err(std::io::Error::from_raw_os_error(r));
        }
        let result = (|| {
            // dup2 onto another number clears close-on-exec on the copy;
            // the sources (all above the targets) stay close-on-exec.
            for (target, &fd) in (0..).zip(fds) {
                check(libc::posix_spawn_file_actions_adddup2(actions.as_mut_ptr(), fd, target))?;
            }
            if let Some(cwd) = cwd {
                check(libc::posix_spawn_file_actions_addchdir_np(actions.as_mut_ptr(), cwd.as_ptr()))?;
            }
            // What std's Command also restores: default SIGPIPE (the shim
            // ignores it) and no blocked signal (the shim blocks SIGCHLD).
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            check(libc::posix_spawnattr_setsigmask(attr.as_mut_ptr(), &set))?;
            libc::sigaddset(&mut set, libc::SIGPIPE);
            check(libc::posix_spawnattr_setsigdefault(attr.as_mut_ptr(), &set))?;
            check(libc::posix_spawnattr_setflags(attr.as_mut_ptr(), (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short))?;
            let mut pid: libc::pid_t = 0;
            check(libc::posix_spawn(&mut pid, exe.as_ptr(), actions.as_ptr(), attr.as_ptr(), argv.as_ptr() as *const *mut libc::c_char, envp.as_ptr() as *const *mut libc::c_char))?;
            Ok(pid)
        })();
        libc::posix_spawnattr_destroy(attr.as_mut_ptr());
        libc::posix_spawn_file_actions_destroy(actions.as_mut_ptr());
        result
    }
}

/// posix_spawn's functions return the error number itself.
fn check(r: libc::c_int) -> std::io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(r))
    }
}

fn cstring(b: &[u8]) -> std::io::Result<CString> {
    CString::new(b).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

/// Starts the process inside the cgroup v2 directory `cgroup` and returns
/// its pid once execve succeeded. ENOSYS (kernel before 5.3), E2BIG (before
/// 5.7) and EINVAL (no CLONE_INTO_CGROUP) tell the caller to start it
/// another way.
pub fn into_cgroup(spec: &Spawn<'_>, cgroup: BorrowedFd<'_>) -> std::io::Result<i32> {
    clone(spec, Some(cgroup))
}

/// A clone3 fork, into `cgroup` if given.
fn clone(spec: &Spawn<'_>, cgroup: Option<BorrowedFd<'_>>) -> std::io::Result<i32> {
    let p = Prepared::new(spec)?;
    let fds = spec.child_fds();
    // The child reports a failed execve through this pipe; it closes on a
    // successful one.
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let err_w_fd = err_w.as_raw_fd();

    let mut args = CloneArgs { exit_signal: libc::SIGCHLD as u64, ..Default::default() };
    if let Some(cg) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = cg.as_raw_fd() as u64;
    }
    // SAFETY: clone3 without CLONE_VM is a fork: the child has its own copy
    // of memory and only the calling thread. It runs child() alone, which
    // makes async-signal-safe calls on the buffers above and never returns.
    let pid = unsafe { libc::syscall(libc::SYS_clone3, &mut args as *mut CloneArgs, std::mem::size_of::<CloneArgs>()) };
    if pid == 0 {
        // SAFETY: see above; every pointer stays valid in the child's copy.
        unsafe { child(fds, &p.cwd, &p.exe, &p.argv_p, &p.envp_p, err_w_fd) }
    }
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    drop(err_w);
    let mut code = [0u8; 4];
    match nix::unistd::read(&err_r, &mut code) {
        Ok(4) => Err(std::io::Error::from_raw_os_error(i32::from_ne_bytes(code))),
        _ => Ok(pid as i32),
    }
}

/// The child between clone3 and execve.
///
/// # Safety
/// Only in the child of clone3, with every pointer prepared before it.
unsafe fn child(fds: [RawFd; 4], cwd: &CString, exe: &CString, argv: &[*const libc::c_char], envp: &[*const libc::c_char], err: RawFd) -> ! {
    let fail = |err_fd: RawFd| -> ! {
        let code = *libc::__errno_location();
        libc::write(err_fd, code.to_ne_bytes().as_ptr().cast(), 4);
        libc::_exit(127)
    };
    // The error pipe must survive place_fds, whose dup2s target 0 to KEEP_FD.
    let err = libc::fcntl(err, libc::F_DUPFD_CLOEXEC, KEEP_FD + 1);
    if err < 0 {
        libc::_exit(127);
    }
    if place_fds(fds, 0).is_err() || libc::chdir(cwd.as_ptr()) < 0 {
        fail(err);
    }
    // What std's Command also restores: default SIGPIPE (the shim ignores
    // it) and no blocked signal (the shim blocks SIGCHLD).
    libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut set);
    libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
    fail(err)
}

/// Moves `fds` onto `first`, `first + 1`, … in a child about to execve,
/// where they stay open across it. Every source is first copied above all
/// the targets, so that no dup2 clobbers a source still to be moved.
///
/// # Safety
/// Only between fork (or clone3, or Command's pre_exec) and execve: it
/// makes only fcntl and dup2 calls, which are async-signal-safe.
pub unsafe fn place_fds<const N: usize>(fds: [RawFd; N], first: RawFd) -> std::io::Result<()> {
    let above = first + N as RawFd;
    let mut high = [0; N];
    for (h, fd) in high.iter_mut().zip(fds) {
        *h = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, above);
        if *h < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    for (target, fd) in (first..).zip(high) {
        // dup2 leaves the copy without close-on-exec.
        if libc::dup2(fd, target) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether a failure of [`into_cgroup`] means "this kernel cannot", rather
/// than a problem with the cgroup or the binary.
pub fn unsupported(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::E2BIG) | Some(libc::EINVAL))
}
