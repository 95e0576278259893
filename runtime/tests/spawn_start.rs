//! `spawn::start`, how stage 1 leaves the shim when it is not cloned into a
//! cgroup v2 directory: posix_spawn (vfork), or a clone3 fork when a source
//! fd is one the child's dup2s would overwrite. Either way the child gets
//! its stdio, the kept fd as fd 3, its cwd and variable, default SIGPIPE
//! and no blocked signal, and a missing binary is an error, not a child.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use runtime::spawn::{start, Spawn, KEEP_FD};

const SCRIPT: &str = r#"read line <&3; echo "keep:$line"; echo "cwd:$(pwd)"; echo "env:$SPAWN_TEST"; grep -E '^Sig(Blk|Ign)' /proc/self/status"#;

struct Output(PathBuf);

impl Drop for Output {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// The fd moved to a number above 3, as the shim's own fds always are
/// (its 0 to 3 stay open), so that only the caller picks the fork path.
fn high(fd: OwnedFd) -> OwnedFd {
    let n = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10)).unwrap();
    // SAFETY: F_DUPFD_CLOEXEC returned a new fd, ours alone.
    unsafe { OwnedFd::from_raw_fd(n) }
}

/// Runs SCRIPT through `start` with `stdin` as the child's stdin, and
/// returns what it printed.
fn run(name: &str, stdin: &OwnedFd) -> String {
    let out = Output(std::env::temp_dir().join(format!("rsv2-spawn-{name}-{}.out", std::process::id())));
    let out_fd = high(fs::File::create(&out.0).expect("create the output file").into());
    let err_fd = high(fs::OpenOptions::new().write(true).open("/dev/null").unwrap().into());
    let (keep_r, keep_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let keep_r = high(keep_r);
    fs::File::from(keep_w).write_all(b"through fd 3\n").unwrap();
    let argv = [OsStr::new("sh"), OsStr::new("-c"), OsStr::new(SCRIPT)];
    let spec = Spawn {
        exe: Path::new("/bin/sh"),
        argv: &argv,
        env: ("SPAWN_TEST", "yes".into()),
        cwd: Path::new("/tmp"),
        stdio: [stdin, &out_fd, &err_fd],
        keep: keep_r.as_raw_fd(),
    };
    // The shim blocks SIGCHLD in every thread (for its signalfd) and
    // ignores SIGPIPE; the child must get neither.
    let mut blocked = nix::sys::signal::SigSet::empty();
    blocked.add(nix::sys::signal::Signal::SIGUSR2);
    let mut old = nix::sys::signal::SigSet::empty();
    nix::sys::signal::pthread_sigmask(nix::sys::signal::SigmaskHow::SIG_BLOCK, Some(&blocked), Some(&mut old)).unwrap();
    // SAFETY: setting a disposition to SIG_IGN.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let pid = start(&spec);
    nix::sys::signal::pthread_sigmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&old), None).unwrap();
    let pid = pid.expect("spawn /bin/sh");
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).expect("wait for the child");
    assert!(matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)), "child: {status:?}");
    fs::read_to_string(&out.0).expect("read the output")
}

fn check(text: &str) {
    let line = |prefix: &str| text.lines().find_map(|l| l.strip_prefix(prefix)).unwrap_or_default().trim().to_string();
    assert_eq!(line("keep:"), "through fd 3", "fd {KEEP_FD} is the kept pipe:\n{text}");
    assert_eq!(line("cwd:"), "/tmp", "{text}");
    assert_eq!(line("env:"), "yes", "{text}");
    assert_eq!(u64::from_str_radix(&line("SigBlk:"), 16).unwrap(), 0, "no signal blocked:\n{text}");
    let ignored = u64::from_str_radix(&line("SigIgn:"), 16).unwrap();
    assert_eq!(ignored & (1 << (libc::SIGPIPE - 1)), 0, "SIGPIPE back to default:\n{text}");
}

#[test]
fn posix_spawn_places_fds_and_resets_signals() {
    let null = high(fs::File::open("/dev/null").unwrap().into());
    check(&run("posix", &null));
}

#[test]
fn a_low_source_fd_takes_the_fork_path_with_the_same_result() {
    // The test's own stdin (fd 0) as the child's: posix_spawn's dup2s
    // would overwrite it, so start() forks instead.
    // SAFETY: fd 0 is open for the whole test; ManuallyDrop never closes it.
    let stdin = ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(0) });
    check(&run("fork", &stdin));
}

#[test]
fn a_missing_binary_is_an_error_not_a_child() {
    let null: OwnedFd = fs::OpenOptions::new().read(true).write(true).open("/dev/null").unwrap().into();
    let (keep_r, _keep_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let argv = [OsStr::new("nothing")];
    let spec = Spawn {
        exe: Path::new("/nonexistent/binary"),
        argv: &argv,
        env: ("X", "y".into()),
        cwd: Path::new("/"),
        stdio: [&null, &null, &null],
        keep: keep_r.as_raw_fd(),
    };
    let err = start(&spec).expect_err("a missing binary must fail");
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
}
