//! The binary the init stage runs from, out of the container's reach.
//!
//! CVE-2019-5736: a container whose program is `#!/proc/self/exe` makes the
//! kernel run the init stage's own binary, our shim, as the container's
//! process; with a loader planted in the image it then holds the host
//! binary and can write to it. Being non-dumpable does not help there: the
//! process is that binary. So the init stage is executed from a read-only
//! clone: a detached bind mount of our binary (open_tree(2) with
//! OPEN_TREE_CLONE) made read-only with mount_setattr(2), as runc 1.2 does.
//! Writes through any /proc/PID/exe of ours fail with EROFS. No copy is
//! made, so every shim shares the page cache. Kernels before 5.12 get a
//! sealed memfd copy instead.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use crate::syscall::{Linux, Syscall};

#[derive(Debug, thiserror::Error)]
#[error("protect our binary from the container: {step}: {source}")]
pub struct ExeError {
    step: &'static str,
    source: std::io::Error,
}

fn last(step: &'static str) -> ExeError {
    ExeError { step, source: std::io::Error::last_os_error() }
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: u64 = 1;

fn readonly_clone() -> Result<OwnedFd, ExeError> {
    let path = c"/proc/self/exe";
    // SAFETY: open_tree with a valid path; returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint) };
    if fd < 0 {
        return Err(last("open_tree"));
    }
    // SAFETY: fd is new and ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    Linux
        .mount_setattr(fd.as_fd(), MOUNT_ATTR_RDONLY, 0)
        .map_err(|errno| ExeError { step: "mount_setattr", source: std::io::Error::from(errno) })?;
    Ok(fd)
}

fn sealed_copy() -> Result<OwnedFd, ExeError> {
    // SAFETY: memfd_create with a valid name.
    let fd = unsafe { libc::memfd_create(c"rsv2-init".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(last("memfd_create"));
    }
    // SAFETY: fd is new and ours.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let bin = std::fs::read("/proc/self/exe").map_err(|source| ExeError { step: "read our binary", source })?;
    file.write_all(&bin).map_err(|source| ExeError { step: "copy our binary", source })?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on our fd.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(last("seal the copy"));
    }
    Ok(OwnedFd::from(file))
}

/// Our binary, through an fd the init stage is executed by. Keep the fd
/// open for as long as init stages are started; execute the returned path.
pub fn protected() -> Result<(OwnedFd, PathBuf), ExeError> {
    let fd = match readonly_clone() {
        Ok(fd) => fd,
        Err(e) => {
            log::warn!("{e}; falling back to a sealed copy of the binary");
            sealed_copy()?
        }
    };
    // A child's exec resolves /proc/self/fd/N before close-on-exec fds go.
    let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    Ok((fd, path))
}

#[cfg(test)]
mod tests {
    #[test]
    fn clone_is_read_only_and_runs() {
        // open_tree needs CAP_SYS_ADMIN: root only, like the rest of the
        // isolation code; the integration tests cover it under containerd.
        if !nix::unistd::geteuid().is_root() {
            panic!("this test needs root");
        }
        use std::os::unix::fs::MetadataExt;
        let (fd, path) = super::protected().unwrap();
        // The same file as our binary, on a read-only mount. (Opening it for
        // writing here would say ETXTBSY first: this test binary is running.)
        let ours = std::fs::metadata("/proc/self/exe").unwrap();
        let clone = std::fs::metadata(&path).unwrap();
        assert_eq!((ours.ino(), ours.dev()), (clone.ino(), clone.dev()));
        let flags = nix::sys::statvfs::statvfs(&path).unwrap().flags();
        assert!(flags.contains(nix::sys::statvfs::FsFlags::ST_RDONLY), "{flags:?}");
        drop(fd);
    }
}
