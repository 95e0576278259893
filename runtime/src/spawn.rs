//! Starting stage 1 straight inside a cgroup v2 directory, with
//! clone3(CLONE_INTO_CGROUP) (Linux 5.7).
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
    /// One more fd the child keeps (its close-on-exec flag is cleared).
    pub keep: RawFd,
}

fn cstring(b: &[u8]) -> std::io::Result<CString> {
    CString::new(b).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

/// Starts the process inside the cgroup v2 directory `cgroup` and returns
/// its pid once execve succeeded. ENOSYS (kernel before 5.3), E2BIG (before
/// 5.7) and EINVAL (no CLONE_INTO_CGROUP) tell the caller to start it
/// another way.
pub fn into_cgroup(spec: &Spawn<'_>, cgroup: BorrowedFd<'_>) -> std::io::Result<i32> {
    // Everything the child touches is built now: it must not allocate.
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
    let stdio = spec.stdio.map(|f| f.as_raw_fd());
    let keep = spec.keep;
    // The child reports a failed execve through this pipe; it closes on a
    // successful one.
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let err_w_fd = err_w.as_raw_fd();

    let mut args = CloneArgs { flags: CLONE_INTO_CGROUP, exit_signal: libc::SIGCHLD as u64, cgroup: cgroup.as_raw_fd() as u64, ..Default::default() };
    // SAFETY: clone3 without CLONE_VM is a fork: the child has its own copy
    // of memory and only the calling thread. It runs child() alone, which
    // makes async-signal-safe calls on the buffers above and never returns.
    let pid = unsafe { libc::syscall(libc::SYS_clone3, &mut args as *mut CloneArgs, std::mem::size_of::<CloneArgs>()) };
    if pid == 0 {
        // SAFETY: see above; every pointer stays valid in the child's copy.
        unsafe { child(&stdio, keep, &cwd, &exe, &argv_p, &envp_p, err_w_fd) }
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
unsafe fn child(stdio: &[RawFd; 3], keep: RawFd, cwd: &CString, exe: &CString, argv: &[*const libc::c_char], envp: &[*const libc::c_char], err: RawFd) -> ! {
    let fail = |err_fd: RawFd| -> ! {
        let code = *libc::__errno_location();
        libc::write(err_fd, code.to_ne_bytes().as_ptr().cast(), 4);
        libc::_exit(127)
    };
    if place_fds(*stdio, 0).is_err() || libc::fcntl(keep, libc::F_SETFD, 0) < 0 || libc::chdir(cwd.as_ptr()) < 0 {
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
