//! Id-mapped mounts (mount_setattr(2) with MOUNT_ATTR_IDMAP, Linux 5.12):
//! a user namespace that carries the mapping, and a detached copy of a
//! mount tree that shows its files' owners through it.
//!
//! Two callers: the init stage, for the spec's `mounts[].uidMappings`, and
//! the shim, for the `uidmap=`/`gidmap=` options containerd 2.x's overlay
//! snapshotter puts on a user-namespaced pod's rootfs. Both make the trees
//! while still in the host's user namespace: the kernel lets only a caller
//! with CAP_SYS_ADMIN in the user namespace that owns the filesystem's
//! superblock (the host's, for a host path) set an idmap, so a process
//! that has joined the container's user namespace can no longer do it.
//! The trees are attached later with move_mount(2), which needs only
//! CAP_SYS_ADMIN over the target's mount namespace, as runc 1.2 does.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use oci_spec::runtime::LinuxIdMapping;

#[derive(Debug, thiserror::Error)]
pub enum IdmapError {
    #[error("create a user namespace for an id-mapped mount: {what}: {errno}")]
    Userns { what: String, errno: Errno },
    #[error("clone the mount tree at {path} for an id mapping: {errno}")]
    OpenTree { path: PathBuf, errno: Errno },
    #[error("id-map the mount tree at {path}: {errno} (the filesystem may not support id-mapped mounts)")]
    SetAttr { path: PathBuf, errno: Errno },
    #[error("id mapping {text:?}: {problem}")]
    Parse { text: String, problem: &'static str },
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const OPEN_TREE_CLONE: libc::c_uint = 1;

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
pub(crate) struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

/// containerd's `uidmap=`/`gidmap=` option value: `cid:hid:size`, several
/// joined by commas (containerd's core/mount parseIDMappingList).
pub fn parse_list(text: &str) -> Result<Vec<LinuxIdMapping>, IdmapError> {
    let bad = |problem| IdmapError::Parse { text: text.to_string(), problem };
    text.split(',')
        .map(|one| {
            let n: Vec<u32> = one.split(':').map(|p| p.parse::<u32>()).collect::<Result<_, _>>().map_err(|_| bad("each part must be a number"))?;
            let [container, host, size] = n[..] else { return Err(bad("the format is container-id:host-id:size")) };
            if size == 0 || container.checked_add(size).is_none() || host.checked_add(size).is_none() {
                return Err(bad("the range is empty or overflows"));
            }
            Ok(mapping(container, host, size))
        })
        .collect()
}

fn mapping(container: u32, host: u32, size: u32) -> LinuxIdMapping {
    oci_spec::runtime::LinuxIdMappingBuilder::default().container_id(container).host_id(host).size(size).build().expect("every field is set")
}

/// The text of a uid_map or gid_map file.
pub fn map_text(maps: &[LinuxIdMapping]) -> String {
    maps.iter().map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size())).collect()
}

/// Whether two mappings say the same, whatever their order (runc's
/// userns.IsSameMapping).
pub fn same_mapping(a: &[LinuxIdMapping], b: &[LinuxIdMapping]) -> bool {
    let key = |m: &[LinuxIdMapping]| {
        let mut v: Vec<(u32, u32, u32)> = m.iter().map(|m| (m.container_id(), m.host_id(), m.size())).collect();
        v.sort_unstable();
        v
    };
    key(a) == key(b)
}

/// Parses a uid_map or gid_map file.
pub fn parse_map_file(text: &str) -> Vec<LinuxIdMapping> {
    text.lines()
        .filter_map(|l| {
            let n: Vec<u32> = l.split_whitespace().filter_map(|w| w.parse().ok()).collect();
            let [c, h, s] = n[..] else { return None };
            Some(mapping(c, h, s))
        })
        .collect()
}

/// A user namespace with the given maps, as an fd of /proc/PID/ns/user.
///
/// A namespace is reachable only through a process in it, so a child is
/// cloned into a new one and killed once its namespace is open. The child
/// is cloned with no exit signal: that makes it a "clone child" (wait(2))
/// that the shim's reaper, a waitpid(-1) without __WALL, never collects, so
/// our own waitpid with __WCLONE does. The child runs nothing but pause(2),
/// which is all a fork of a multithreaded process may do.
pub fn userns_fd(uids: &[LinuxIdMapping], gids: &[LinuxIdMapping]) -> Result<OwnedFd, IdmapError> {
    let err = |what: &str| {
        let what = what.to_string();
        move |errno| IdmapError::Userns { what, errno }
    };
    // SAFETY: a raw clone without CLONE_VM is a fork; the child only calls
    // pause(2) and _exit(2), both async-signal-safe.
    let pid = unsafe { libc::syscall(libc::SYS_clone, libc::CLONE_NEWUSER as libc::c_ulong, 0usize, 0usize, 0usize, 0usize) };
    let pid = Errno::result(pid).map_err(err("clone(CLONE_NEWUSER)"))? as libc::pid_t;
    if pid == 0 {
        loop {
            // SAFETY: no memory is touched; the parent kills us.
            unsafe { libc::pause() };
        }
    }
    let result = (|| {
        // The parent, root in the host's namespace with CAP_SETUID and
        // CAP_SETGID, may write any map without setgroups=deny
        // (user_namespaces(7), "Defining user and group ID mappings").
        for (file, maps) in [("uid_map", uids), ("gid_map", gids)] {
            std::fs::write(format!("/proc/{pid}/{file}"), map_text(maps))
                .map_err(|e| IdmapError::Userns { what: format!("write {file}"), errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)) })?;
        }
        let path = std::ffi::CString::new(format!("/proc/{pid}/ns/user")).expect("no NUL in a number");
        // SAFETY: a NUL-terminated path.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        let fd = Errno::result(fd).map_err(err("open the namespace"))?;
        // SAFETY: open just returned this fd, owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    })();
    // SAFETY: signalling and reaping our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        while libc::waitpid(pid, std::ptr::null_mut(), libc::__WCLONE) == -1 && Errno::last() == Errno::EINTR {}
    }
    result
}

/// How a tree is cloned and mapped.
#[derive(Debug, Clone, Copy, Default)]
pub struct TreeOptions {
    /// Take the mounts below `source` too (`rbind`).
    pub recursive: bool,
    /// Id-map every mount of the tree (`ridmap`), not only its top (`idmap`).
    pub recursive_idmap: bool,
    /// MOUNT_ATTR_RDONLY too, as containerd does for an overlay's lower layers.
    pub readonly: bool,
}

/// A detached copy of the mount at `source`, id-mapped through `userns`.
pub fn clone_tree(source: &Path, userns: BorrowedFd<'_>, o: TreeOptions) -> Result<OwnedFd, IdmapError> {
    let path = std::ffi::CString::new(source.as_os_str().as_encoded_bytes()).map_err(|_| IdmapError::OpenTree { path: source.into(), errno: Errno::EINVAL })?;
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | if o.recursive { libc::AT_RECURSIVE as libc::c_uint } else { 0 };
    // SAFETY: a NUL-terminated path; the fd returned is ours.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    let fd = Errno::result(fd).map_err(|errno| IdmapError::OpenTree { path: source.into(), errno })?;
    // SAFETY: open_tree just returned this fd.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr { attr_set: MOUNT_ATTR_IDMAP | if o.readonly { MOUNT_ATTR_RDONLY } else { 0 }, attr_clr: 0, propagation: 0, userns_fd: userns.as_raw_fd() as u64 };
    let at = libc::AT_EMPTY_PATH | if o.recursive_idmap { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: attr lives across the call; the empty path names the fd.
    let r = unsafe {
        libc::syscall(libc::SYS_mount_setattr, tree.as_raw_fd(), c"".as_ptr(), at, &attr as *const MountAttr, std::mem::size_of::<MountAttr>())
    };
    Errno::result(r).map_err(|errno| IdmapError::SetAttr { path: source.into(), errno })?;
    Ok(tree)
}

/// move_mount(2) of a detached tree onto `target`, both given as fds.
pub fn attach(tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> Result<(), Errno> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
    // SAFETY: both paths are empty strings naming the fds.
    let r = unsafe {
        libc::syscall(libc::SYS_move_mount, tree.as_raw_fd(), c"".as_ptr(), target.as_raw_fd(), c"".as_ptr(), MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)
    };
    Errno::result(r).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_option_lists_parse() {
        let m = parse_list("0:100000:65536,65536:300000:1").unwrap();
        assert_eq!(map_text(&m), "0 100000 65536\n65536 300000 1\n");
        for bad in ["", "0:1", "0:1:2:3", "a:1:2", "0:1:0", "4294967295:0:2", "0:-1:5"] {
            assert!(parse_list(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn map_files_compare_regardless_of_order() {
        let file = parse_map_file("         0     100000      65536\n     65536     300000          1\n");
        assert!(same_mapping(&file, &parse_list("65536:300000:1,0:100000:65536").unwrap()));
        assert!(!same_mapping(&file, &parse_list("0:100000:65536").unwrap()));
    }
}
