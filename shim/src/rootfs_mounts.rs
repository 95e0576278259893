//! Mounting the rootfs containerd hands to Create (the snapshot's overlay
//! or bind mounts) at `<bundle>/rootfs`, and taking it down again.

use std::path::Path;

use containerd_shim_protos::api::Mount;

#[derive(Debug, thiserror::Error)]
pub enum RootfsMountError {
    #[error("mount rootfs {typ} {source_path} on {target}: {message}")]
    Mount { typ: String, source_path: String, target: String, message: String },
    #[error("create {target}: {source}")]
    Create { target: String, source: std::io::Error },
}

pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<bool, RootfsMountError> {
    if mounts.is_empty() {
        return Ok(false);
    }
    std::fs::create_dir_all(target).map_err(|source| RootfsMountError::Create { target: target.display().to_string(), source })?;
    for (i, m) in mounts.iter().enumerate() {
        if let Err(e) = containerd_shim::mount::mount_rootfs(Some(m.type_.as_str()), Some(m.source.as_str()), &m.options, target) {
            for _ in 0..i {
                unmount(target);
            }
            return Err(RootfsMountError::Mount {
                typ: m.type_.clone(),
                source_path: m.source.clone(),
                target: target.display().to_string(),
                message: e.to_string(),
            });
        }
    }
    Ok(true)
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
