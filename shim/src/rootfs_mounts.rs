//! Mounting the rootfs containerd hands to Create (the snapshot's overlay
//! or bind mounts) at `<bundle>/rootfs`, and taking it down again.
//!
//! Done here with mount(2) directly: containerd-shim 0.12's mount_rootfs
//! forks a helper and waits for it through its own monitor, which our
//! reaper (the one waitpid(-1) of the shim) never notifies, so it hangs;
//! and a fork of the multithreaded server is what we avoid anyway.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use containerd_shim_protos::api::Mount;
use oci_spec::runtime::LinuxIdMapping;
use runtime::idmap::IdmapError;
use nix::mount::MsFlags;
use runtime::rootfs::parse_options;

#[derive(Debug, thiserror::Error)]
pub enum RootfsMountError {
    #[error("mount rootfs {typ} {source_path} on {target}: {errno}")]
    Mount { typ: String, source_path: String, target: String, errno: nix::errno::Errno },
    #[error("mount rootfs {typ} on {target}: its options are {len} bytes, more than a page ({max}); too many layers")]
    TooLong { typ: String, target: String, len: usize, max: usize },
    #[error("create {target}: {source}")]
    Create { target: String, source: std::io::Error },
    #[error("id-map rootfs {typ} on {target}: {source}")]
    Idmap { typ: String, target: String, source: runtime::idmap::IdmapError },
    #[error("mount rootfs {typ} on {target}: {problem}")]
    Options { typ: String, target: String, problem: String },
}

/// mount(2) takes filesystem data of at most a page.
const MAX_DATA: usize = 4095;

pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<bool, RootfsMountError> {
    if mounts.is_empty() {
        return Ok(false);
    }
    std::fs::create_dir_all(target).map_err(|source| RootfsMountError::Create { target: target.display().to_string(), source })?;
    for (i, m) in mounts.iter().enumerate() {
        if let Err(e) = mount_one(m, target) {
            for _ in 0..i {
                unmount(target);
            }
            return Err(e);
        }
    }
    Ok(true)
}

fn mount_one(m: &Mount, target: &Path) -> Result<(), RootfsMountError> {
    let mut opts = parse_options(&m.options);
    let idmap = take_idmap(&mut opts.data).map_err(|problem| RootfsMountError::Options { typ: m.type_.clone(), target: target.display().to_string(), problem })?;
    let idmap_err = |source| RootfsMountError::Idmap { typ: m.type_.clone(), target: target.display().to_string(), source };
    let userns = match &idmap {
        Some((uids, gids)) => Some(runtime::idmap::userns_fd(uids, gids).map_err(idmap_err)?),
        None => None,
    };
    // An overlay is id-mapped through its lower layers: each is cloned
    // id-mapped and read-only, attached under the bundle for as long as
    // the mount(2) below needs their paths (containerd's
    // prepareIDMappedOverlay). The overlay keeps its own references.
    let mut lowers = IdmappedLowers::default();
    if let (Some(userns), "overlay") = (&userns, m.type_.as_str()) {
        lowers.map(&mut opts.data, target, userns.as_fd()).map_err(idmap_err)?;
    }
    let data = opts.data.join(",");
    let err = |errno| RootfsMountError::Mount { typ: m.type_.clone(), source_path: m.source.clone(), target: target.display().to_string(), errno };
    if data.len() > MAX_DATA {
        return Err(RootfsMountError::TooLong { typ: m.type_.clone(), target: target.display().to_string(), len: data.len(), max: MAX_DATA });
    }
    let bind = opts.bind() || m.type_ == "bind";
    let fstype = (!bind).then_some(m.type_.as_str());
    let first = if bind { opts.flags & (MsFlags::MS_BIND | MsFlags::MS_REC) | MsFlags::MS_BIND } else { opts.flags };
    match (&userns, bind) {
        (Some(userns), true) => {
            let o = runtime::idmap::TreeOptions { recursive: opts.flags.contains(MsFlags::MS_REC), ..Default::default() };
            let tree = runtime::idmap::clone_tree(Path::new(&m.source), userns.as_fd(), o).map_err(idmap_err)?;
            let at = nix::fcntl::open(target, nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty()).map_err(err)?;
            runtime::idmap::attach(tree.as_fd(), at.as_fd()).map_err(err)?;
        }
        _ => nix::mount::mount(Some(m.source.as_str()), target, fstype, first, (!data.is_empty()).then_some(data.as_str())).map_err(err)?,
    }
    drop(lowers);
    // A bind mount takes ro and the like only on a remount.
    let rest = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
    if bind && !rest.is_empty() {
        nix::mount::mount(None::<&str>, target, None::<&str>, rest | MsFlags::MS_BIND | MsFlags::MS_REMOUNT, None::<&str>).map_err(err)?;
    }
    if !opts.propagation.is_empty() {
        nix::mount::mount(None::<&str>, target, None::<&str>, opts.propagation, None::<&str>).map_err(err)?;
    }
    Ok(())
}

/// Takes containerd's `uidmap=`/`gidmap=` out of a mount's data: containerd
/// 2.x's overlay snapshotter adds them for a user-namespaced pod where the
/// kernel id-maps overlay layers (its "remap-ids" capability), and expects
/// the mounter to do the mapping (core/mount's mount_linux.go).
fn take_idmap(data: &mut Vec<String>) -> Result<Option<(Vec<LinuxIdMapping>, Vec<LinuxIdMapping>)>, String> {
    let mut take = |key: &str| {
        let i = data.iter().position(|d| d.starts_with(key))?;
        Some(data.remove(i)[key.len()..].to_string())
    };
    match (take("uidmap="), take("gidmap=")) {
        (None, None) => Ok(None),
        (Some(u), Some(g)) => {
            let parse = |t: &str| runtime::idmap::parse_list(t).map_err(|e| e.to_string());
            Ok(Some((parse(&u)?, parse(&g)?)))
        }
        _ => Err("uidmap= and gidmap= come together: containerd remaps both or neither".into()),
    }
}

/// The id-mapped copies of an overlay's lower layers, attached at
/// `<target>.lower-N` until dropped, which detaches and removes them.
#[derive(Default)]
struct IdmappedLowers {
    dirs: Vec<PathBuf>,
}

impl IdmappedLowers {
    fn map(&mut self, data: &mut [String], target: &Path, userns: BorrowedFd<'_>) -> Result<(), IdmapError> {
        let Some(lower) = data.iter_mut().find(|d| d.starts_with("lowerdir=")) else { return Ok(()) };
        let mut mapped = Vec::new();
        for (i, dir) in lower["lowerdir=".len()..].split(':').enumerate() {
            let tree = runtime::idmap::clone_tree(Path::new(dir), userns, runtime::idmap::TreeOptions { readonly: true, ..Default::default() })?;
            let at = PathBuf::from(format!("{}.lower-{i}", target.display()));
            let attach = || -> Result<(), nix::errno::Errno> {
                std::fs::create_dir_all(&at).map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
                let fd = nix::fcntl::open(&at, nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())?;
                runtime::idmap::attach(tree.as_fd(), fd.as_fd())
            };
            self.dirs.push(at.clone());
            attach().map_err(|errno| IdmapError::OpenTree { path: at.clone(), errno })?;
            mapped.push(at.display().to_string());
        }
        *lower = format!("lowerdir={}", mapped.join(":"));
        Ok(())
    }
}

impl Drop for IdmappedLowers {
    fn drop(&mut self) {
        for dir in &self.dirs {
            let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Unmounts everything stacked on `target`.
pub fn unmount(target: &Path) {
    for _ in 0..16 {
        match nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return,
            Err(e) => {
                log::warn!("unmount {}: {e}", target.display());
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_idmap_options_leave_the_data() {
        let mut data: Vec<String> = ["index=off", "uidmap=0:300000:65536", "lowerdir=/a:/b", "gidmap=0:300000:65536"].map(String::from).to_vec();
        let (uids, gids) = take_idmap(&mut data).unwrap().expect("both maps");
        assert_eq!(data, ["index=off", "lowerdir=/a:/b"]);
        assert_eq!(runtime::idmap::map_text(&uids), "0 300000 65536\n");
        assert_eq!(runtime::idmap::map_text(&gids), "0 300000 65536\n");
        let mut plain = vec!["index=off".to_string()];
        assert!(take_idmap(&mut plain).unwrap().is_none());
        let mut half = vec!["uidmap=0:1:1".to_string()];
        assert!(take_idmap(&mut half).unwrap_err().contains("together"));
        let mut bad = vec!["uidmap=0:1".to_string(), "gidmap=0:1:1".to_string()];
        assert!(take_idmap(&mut bad).is_err());
    }
}
