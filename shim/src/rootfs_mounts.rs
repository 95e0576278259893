//! Mounting the rootfs containerd hands to Create (the snapshot's overlay
//! or bind mounts) at `<bundle>/rootfs`, and taking it down again.
//!
//! Done here with mount(2) directly: containerd-shim 0.12's mount_rootfs
//! forks a helper and waits for it through its own monitor, which our
//! reaper (the one waitpid(-1) of the shim) never notifies, so it hangs;
//! and a fork of the multithreaded server is what we avoid anyway.

use std::path::Path;

use containerd_shim_protos::api::Mount;
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
    let opts = parse_options(&m.options);
    let data = opts.data.join(",");
    let err = |errno| RootfsMountError::Mount { typ: m.type_.clone(), source_path: m.source.clone(), target: target.display().to_string(), errno };
    if data.len() > MAX_DATA {
        return Err(RootfsMountError::TooLong { typ: m.type_.clone(), target: target.display().to_string(), len: data.len(), max: MAX_DATA });
    }
    let bind = opts.bind() || m.type_ == "bind";
    let fstype = (!bind).then_some(m.type_.as_str());
    let first = if bind { opts.flags & (MsFlags::MS_BIND | MsFlags::MS_REC) | MsFlags::MS_BIND } else { opts.flags };
    nix::mount::mount(Some(m.source.as_str()), target, fstype, first, (!data.is_empty()).then_some(data.as_str())).map_err(err)?;
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
