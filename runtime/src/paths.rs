//! Resolving paths inside the container's rootfs without leaving it.
//!
//! Every mount destination is opened with `openat2(RESOLVE_IN_ROOT)`, so a
//! symlink in the image (absolute, `../..`, or swapped in during setup)
//! resolves inside the rootfs, never on the host (CVE-2021-30465 and the
//! 2025 /dev/null and /dev/pts variants). Missing components are created one
//! at a time with `mkdirat` on an fd, never by joining strings.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

#[derive(Debug, thiserror::Error)]
#[error("resolve {path} inside the rootfs: {errno}")]
pub struct ResolveError {
    pub path: PathBuf,
    pub errno: Errno,
}

/// What to create when the path does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    Nothing,
    Dir,
    File,
}

fn how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// Opens `path` (absolute, as seen in the container) below `root` as an
/// `O_PATH` fd, creating what is missing.
pub fn open_in_root(root: BorrowedFd<'_>, path: &Path, create: Create) -> Result<OwnedFd, ResolveError> {
    let err = |errno| ResolveError { path: path.to_path_buf(), errno };
    let mut rel = relative(path);
    match openat2(root, &rel, how(OFlag::O_PATH)) {
        Err(Errno::ENOENT) if create != Create::Nothing => {}
        r => return r.map_err(err),
    }
    // A dangling symlink on the way is followed by creating its target
    // inside the root, as many times as the kernel would follow links.
    'restart: for _ in 0..40 {
        let parts: Vec<_> = rel.components().collect();
        let mut dir = openat2(root, ".", how(OFlag::O_PATH | OFlag::O_DIRECTORY)).map_err(err)?;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let name = part.as_os_str();
            // Resolve the prefix so far from the root again, so ".." and
            // symlinks in it stay inside the root.
            let prefix: PathBuf = parts[..=i].iter().collect();
            match openat2(root, &prefix, how(OFlag::O_PATH)) {
                Ok(fd) => {
                    dir = fd;
                    continue;
                }
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(err(e)),
            }
            if let Ok(target) = nix::fcntl::readlinkat(dir.as_fd(), name) {
                let parent: PathBuf = parts[..i].iter().collect();
                let mut next = if Path::new(&target).is_absolute() { relative(Path::new(&target)) } else { parent.join(target) };
                next.extend(&parts[i + 1..]);
                rel = next;
                continue 'restart;
            }
            if last && create == Create::File {
                let fd = nix::fcntl::openat(
                    dir.as_fd(),
                    name,
                    OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o644),
                );
                match fd {
                    Ok(_) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(err(e)),
                }
            } else {
                match nix::sys::stat::mkdirat(dir.as_fd(), name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(err(e)),
                }
            }
            dir = openat2(root, &prefix, how(OFlag::O_PATH)).map_err(err)?;
        }
        return Ok(dir);
    }
    Err(err(Errno::ELOOP))
}

/// `path` without its leading `/`, with `.` components dropped.
fn relative(path: &Path) -> PathBuf {
    let rel: PathBuf = path.components().filter(|c| !matches!(c, Component::RootDir | Component::CurDir)).collect();
    if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn real(fd: &OwnedFd) -> PathBuf {
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap()
    }

    fn root_fd(dir: &Path) -> OwnedFd {
        nix::fcntl::open(dir, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).unwrap()
    }

    #[test]
    fn creates_missing_dirs_and_files() {
        let d = tempfile::tempdir().unwrap();
        let root = root_fd(d.path());
        let fd = open_in_root(root.as_fd(), Path::new("/a/b/c"), Create::Dir).unwrap();
        assert_eq!(real(&fd), d.path().join("a/b/c"));
        let fd = open_in_root(root.as_fd(), Path::new("/a/f"), Create::File).unwrap();
        assert_eq!(real(&fd), d.path().join("a/f"));
        assert!(d.path().join("a/f").is_file());
    }

    #[test]
    fn absolute_symlink_stays_inside_root() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("evil")).unwrap();
        let root = root_fd(d.path());
        let fd = open_in_root(root.as_fd(), Path::new("/evil/x"), Create::Dir).unwrap();
        let got = real(&fd);
        assert!(got.starts_with(d.path()), "escaped to {}", got.display());
        assert!(!outside.path().join("x").exists());
    }

    #[test]
    fn dotdot_symlink_stays_inside_root() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("../../../../../tmp", d.path().join("sub/up")).unwrap();
        let root = root_fd(d.path());
        let fd = open_in_root(root.as_fd(), Path::new("/sub/up/y"), Create::Dir).unwrap();
        assert!(real(&fd).starts_with(d.path()));
    }
}
