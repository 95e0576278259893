//! clone3(CLONE_INTO_CGROUP) for real: a child started by
//! `spawn::into_cgroup` is inside the cgroup v2 directory from its first
//! instruction. Needs root and a cgroup2 mount (the host's unified
//! hierarchy, at /sys/fs/cgroup or, on a hybrid host, /sys/fs/cgroup/unified).

use std::ffi::OsStr;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use runtime::spawn::{into_cgroup, Spawn};

fn cgroup2_root() -> PathBuf {
    for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        if nix::sys::statfs::statfs(root).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC) {
            return PathBuf::from(root);
        }
    }
    panic!("no cgroup2 mount at /sys/fs/cgroup or /sys/fs/cgroup/unified: this test needs one (and root)");
}

/// Removes the test cgroup even when an assertion fails.
struct TestCgroup(PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

#[test]
fn child_starts_inside_the_cgroup() {
    let root = cgroup2_root();
    let name = format!("rsv2-spawn-test-{}", std::process::id());
    let cg = TestCgroup(root.join(&name));
    fs::create_dir(&cg.0).expect("create the test cgroup (root needed)");
    let dir: OwnedFd = fs::File::open(&cg.0).expect("open the test cgroup").into();

    let out_path = std::env::temp_dir().join(format!("{name}.out"));
    let out: OwnedFd = fs::File::create(&out_path).expect("create the output file").into();
    let null_in: OwnedFd = fs::File::open("/dev/null").unwrap().into();
    let null_err: OwnedFd = fs::OpenOptions::new().write(true).open("/dev/null").unwrap().into();
    let (keep_r, keep_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    std::io::Write::write_all(&mut fs::File::from(keep_w), b"kept\n").unwrap();
    let argv = [OsStr::new("sh"), OsStr::new("-c"), OsStr::new("cat /proc/self/cgroup; read l <&3; echo \"fd3:$l\"; echo \"env:$SPAWN_TEST\"")];
    let spec = Spawn {
        exe: Path::new("/bin/sh"),
        argv: &argv,
        env: ("SPAWN_TEST", "yes".into()),
        cwd: Path::new("/"),
        stdio: [&null_in, &out, &null_err],
        keep: keep_r.as_raw_fd(),
    };
    let pid = into_cgroup(&spec, dir.as_fd()).expect("clone3 into the cgroup");
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).expect("wait for the child");
    assert!(matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)), "child: {status:?}");
    let text = fs::read_to_string(&out_path).expect("read the output");
    let _ = fs::remove_file(&out_path);

    // A hybrid host lists its v1 hierarchies too; the v2 line is "0::".
    let v2 = text.lines().find(|l| l.starts_with("0::")).unwrap_or_default();
    assert_eq!(v2, format!("0::/{name}"), "the child's /proc/self/cgroup:\n{text}");
    assert!(text.lines().any(|l| l == "env:yes"), "the extra variable reaches the child:\n{text}");
    // The kept fd is inherited, as fd 3, even though pipe(2) made it
    // close-on-exec.
    assert!(text.lines().any(|l| l == "fd3:kept"), "the kept pipe is the child's fd 3:\n{text}");
    drop(keep_r);
}

#[test]
fn a_missing_binary_is_reported_not_started() {
    let root = cgroup2_root();
    let name = format!("rsv2-spawn-missing-{}", std::process::id());
    let cg = TestCgroup(root.join(&name));
    fs::create_dir(&cg.0).expect("create the test cgroup (root needed)");
    let dir: OwnedFd = fs::File::open(&cg.0).unwrap().into();
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
    let err = into_cgroup(&spec, dir.as_fd()).expect_err("execve of a missing binary must fail");
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    // The failed child exits 127; reap it so that the cgroup can go.
    let _ = nix::sys::wait::waitpid(None, None);
}
