//! The seam between the isolation sequences and the kernel.
//!
//! Every mutating call that rootfs and process setup make goes through
//! [`Syscall`], so the order of mounts, device nodes and capability changes can
//! be checked by unit tests with [`Recorder`] without root. Real behaviour is
//! tested end to end through containerd.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};

/// A mount target: a path, or an fd opened with `O_PATH` inside the rootfs.
///
/// Mounting onto `/proc/self/fd/N` of an fd that was resolved with
/// `RESOLVE_IN_ROOT` is what keeps a symlinked destination from landing on
/// the host (CVE-2021-30465).
#[derive(Clone, Copy)]
pub enum Target<'a> {
    Path(&'a Path),
    Fd(BorrowedFd<'a>),
}

impl Target<'_> {
    fn to_path(self) -> PathBuf {
        match self {
            Target::Path(p) => p.to_path_buf(),
            Target::Fd(fd) => PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
        }
    }
}

pub trait Syscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: Target<'_>,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno>;
    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<(), Errno>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<(), Errno>;
    fn mknodat(&self, dir: BorrowedFd<'_>, name: &str, kind: SFlag, mode: Mode, dev: u64) -> Result<(), Errno>;
    fn symlinkat(&self, target: &str, dir: BorrowedFd<'_>, name: &str) -> Result<(), Errno>;
    fn chdir(&self, path: &Path) -> Result<(), Errno>;
    fn fchdir(&self, dir: BorrowedFd<'_>) -> Result<(), Errno>;
    fn sethostname(&self, name: &str) -> Result<(), Errno>;
    fn chmod(&self, target: Target<'_>, mode: u32) -> Result<(), Errno>;
    /// mount_setattr(2) on the tree at `target`, recursively.
    fn mount_setattr(&self, target: BorrowedFd<'_>, set: u64, clr: u64) -> Result<(), Errno>;
    /// move_mount(2) of a detached mount tree (an id-mapped bind,
    /// [`crate::idmap`]) onto `target`.
    fn attach_tree(&self, tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> Result<(), Errno>;
    fn prctl(&self, option: libc::c_int, arg2: libc::c_ulong, arg3: libc::c_ulong) -> Result<(), Errno>;
    fn capset(&self, effective: u64, permitted: u64, inheritable: u64) -> Result<(), Errno>;
    fn setresuid(&self, uid: u32) -> Result<(), Errno>;
    fn setresgid(&self, gid: u32) -> Result<(), Errno>;
    fn setgroups(&self, gids: &[u32]) -> Result<(), Errno>;
    fn setrlimit(&self, resource: u32, soft: u64, hard: u64) -> Result<(), Errno>;
}

/// The real kernel.
pub struct Linux;

impl Syscall for Linux {
    fn mount(
        &self,
        source: Option<&Path>,
        target: Target<'_>,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno> {
        nix::mount::mount(source, &target.to_path(), fstype, flags, data)
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<(), Errno> {
        nix::mount::umount2(target, flags)
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<(), Errno> {
        nix::unistd::pivot_root(new_root, put_old)
    }

    fn mknodat(&self, dir: BorrowedFd<'_>, name: &str, kind: SFlag, mode: Mode, dev: u64) -> Result<(), Errno> {
        nix::sys::stat::mknodat(dir, name, kind, mode, dev)
    }

    fn symlinkat(&self, target: &str, dir: BorrowedFd<'_>, name: &str) -> Result<(), Errno> {
        nix::unistd::symlinkat(target, dir, name)
    }

    fn chdir(&self, path: &Path) -> Result<(), Errno> {
        nix::unistd::chdir(path)
    }

    fn fchdir(&self, dir: BorrowedFd<'_>) -> Result<(), Errno> {
        nix::unistd::fchdir(dir)
    }

    fn sethostname(&self, name: &str) -> Result<(), Errno> {
        nix::unistd::sethostname(name)
    }

    fn mount_setattr(&self, target: BorrowedFd<'_>, set: u64, clr: u64) -> Result<(), Errno> {
        use crate::idmap::MountAttr;
        let attr = MountAttr { attr_set: set, attr_clr: clr, propagation: 0, userns_fd: 0 };
        // SAFETY: attr is valid for the call; the empty path names the fd.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                target.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        Errno::result(r).map(drop)
    }

    fn attach_tree(&self, tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> Result<(), Errno> {
        crate::idmap::attach(tree, target)
    }

    fn chmod(&self, target: Target<'_>, mode: u32) -> Result<(), Errno> {
        // An O_PATH fd cannot be fchmod'ed; its /proc/self/fd link can.
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            &target.to_path(),
            Mode::from_bits_truncate(mode as libc::mode_t),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
    }

    fn prctl(&self, option: libc::c_int, arg2: libc::c_ulong, arg3: libc::c_ulong) -> Result<(), Errno> {
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(option, arg2, arg3, 0 as libc::c_ulong, 0 as libc::c_ulong) };
        Errno::result(r).map(drop)
    }

    fn capset(&self, effective: u64, permitted: u64, inheritable: u64) -> Result<(), Errno> {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const VERSION_3: u32 = 0x2008_0522;
        let mut header = Header { version: VERSION_3, pid: 0 };
        let split = |v: u64| (v as u32, (v >> 32) as u32);
        let (e0, e1) = split(effective);
        let (p0, p1) = split(permitted);
        let (i0, i1) = split(inheritable);
        let data = [
            Data { effective: e0, permitted: p0, inheritable: i0 },
            Data { effective: e1, permitted: p1, inheritable: i1 },
        ];
        // SAFETY: header and data are valid for the duration of the call,
        // and version 3 takes exactly two data elements.
        let r = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
        Errno::result(r).map(drop)
    }

    fn setresuid(&self, uid: u32) -> Result<(), Errno> {
        // Raw syscall, not the libc wrapper: glibc's wrapper broadcasts the
        // change to every thread with a signal, which is not needed here
        // (the init stage is single-threaded) and not async-signal-safe.
        let r = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) };
        Errno::result(r).map(drop)
    }

    fn setresgid(&self, gid: u32) -> Result<(), Errno> {
        let r = unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) };
        Errno::result(r).map(drop)
    }

    fn setgroups(&self, gids: &[u32]) -> Result<(), Errno> {
        let r = unsafe { libc::syscall(libc::SYS_setgroups, gids.len(), gids.as_ptr()) };
        Errno::result(r).map(drop)
    }

    fn setrlimit(&self, resource: u32, soft: u64, hard: u64) -> Result<(), Errno> {
        let lim = libc::rlimit { rlim_cur: soft, rlim_max: hard };
        // SAFETY: lim is a valid rlimit for the duration of the call.
        let r = unsafe { libc::setrlimit(resource as _, &lim) };
        Errno::result(r).map(drop)
    }
}

/// A test double that records every call and succeeds, so tests can assert
/// the order of a sequence. Fd targets are recorded as the path they resolve
/// to, which is where the real mount would land.
#[derive(Default)]
pub struct Recorder {
    pub calls: Mutex<Vec<String>>,
}

impl Recorder {
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn push(&self, s: String) {
        self.calls.lock().unwrap().push(s);
    }
}

fn describe_target(t: Target<'_>) -> String {
    match t {
        Target::Path(p) => p.display().to_string(),
        Target::Fd(fd) => std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "<fd>".into()),
    }
}

fn describe_dir(dir: BorrowedFd<'_>, name: &str) -> String {
    let base = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd())).unwrap_or_default();
    base.join(name).display().to_string()
}

impl Syscall for Recorder {
    fn mount(
        &self,
        source: Option<&Path>,
        target: Target<'_>,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno> {
        self.push(format!(
            "mount {} {} {} {:?} {}",
            source.map(|s| s.display().to_string()).unwrap_or_else(|| "-".into()),
            describe_target(target),
            fstype.unwrap_or("-"),
            flags,
            data.unwrap_or("-")
        ));
        Ok(())
    }
    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<(), Errno> {
        self.push(format!("umount2 {} {:?}", target.display(), flags));
        Ok(())
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<(), Errno> {
        self.push(format!("pivot_root {} {}", new_root.display(), put_old.display()));
        Ok(())
    }
    fn mknodat(&self, dir: BorrowedFd<'_>, name: &str, kind: SFlag, mode: Mode, dev: u64) -> Result<(), Errno> {
        self.push(format!("mknod {} {:?} {:o} {}", describe_dir(dir, name), kind, mode.bits(), dev));
        Ok(())
    }
    fn symlinkat(&self, target: &str, dir: BorrowedFd<'_>, name: &str) -> Result<(), Errno> {
        self.push(format!("symlink {} -> {}", describe_dir(dir, name), target));
        Ok(())
    }
    fn chdir(&self, path: &Path) -> Result<(), Errno> {
        self.push(format!("chdir {}", path.display()));
        Ok(())
    }
    fn fchdir(&self, dir: BorrowedFd<'_>) -> Result<(), Errno> {
        self.push(format!("fchdir {}", describe_dir(dir, "")));
        Ok(())
    }
    fn sethostname(&self, name: &str) -> Result<(), Errno> {
        self.push(format!("sethostname {name}"));
        Ok(())
    }
    fn chmod(&self, target: Target<'_>, mode: u32) -> Result<(), Errno> {
        self.push(format!("chmod {} {mode:o}", describe_target(target)));
        Ok(())
    }
    fn attach_tree(&self, _tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> Result<(), Errno> {
        self.push(format!("attach id-mapped tree on {}", describe_target(Target::Fd(target))));
        Ok(())
    }

    fn mount_setattr(&self, target: BorrowedFd<'_>, set: u64, clr: u64) -> Result<(), Errno> {
        self.push(format!("mount_setattr {} set={set:#x} clr={clr:#x}", describe_target(Target::Fd(target))));
        Ok(())
    }
    fn prctl(&self, option: libc::c_int, arg2: libc::c_ulong, arg3: libc::c_ulong) -> Result<(), Errno> {
        self.push(if arg3 == 0 { format!("prctl {option} {arg2}") } else { format!("prctl {option} {arg2} {arg3}") });
        Ok(())
    }
    fn capset(&self, effective: u64, permitted: u64, inheritable: u64) -> Result<(), Errno> {
        self.push(format!("capset e={effective:#x} p={permitted:#x} i={inheritable:#x}"));
        Ok(())
    }
    fn setresuid(&self, uid: u32) -> Result<(), Errno> {
        self.push(format!("setresuid {uid}"));
        Ok(())
    }
    fn setresgid(&self, gid: u32) -> Result<(), Errno> {
        self.push(format!("setresgid {gid}"));
        Ok(())
    }
    fn setgroups(&self, gids: &[u32]) -> Result<(), Errno> {
        self.push(format!("setgroups {gids:?}"));
        Ok(())
    }
    fn setrlimit(&self, resource: u32, soft: u64, hard: u64) -> Result<(), Errno> {
        self.push(format!("setrlimit {resource} {soft} {hard}"));
        Ok(())
    }
}
