//! The `delete` action: containerd's cleanup after a shim it cannot reach.
//!
//! The server is gone, so everything comes from the state file the server
//! wrote at Create: the container is killed through its cgroup, the cgroup
//! and our rootfs mounts are removed, and a DeleteResponse goes to stdout.

use std::path::PathBuf;

use cgroup::{FsCgroup, Manager};
use containerd_shim::Flags;
use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::{Message, MessageField};

use crate::rootfs_mounts;
use crate::state::Saved;

#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error("{0}")]
    Cgroup(#[from] cgroup::CgroupError),
    #[error("write delete response: {0}")]
    Write(String),
}

pub fn run(flags: &Flags) -> Result<Vec<u8>, DeleteError> {
    let bundle = if flags.bundle.is_empty() { std::env::current_dir().unwrap_or_default() } else { PathBuf::from(&flags.bundle) };
    let mut pid = 0;
    if let Ok(saved) = Saved::read(&bundle) {
        pid = saved.pid;
        FsCgroup::new(&saved.cgroup)?.destroy()?;
        if let Some(unit) = &saved.systemd_unit {
            cgroup::systemd::stop_unit(unit)?;
        }
        if let Some(rootfs) = &saved.mounted_rootfs {
            rootfs_mounts::unmount(rootfs);
        }
        Saved::remove(&bundle);
    }
    // The dead server's socket: remove it unless a live shim (another
    // container of the same pod) still answers on it.
    if let Ok(address) = std::fs::read_to_string(bundle.join("address")) {
        let path = address.trim().trim_start_matches("unix://").to_string();
        if std::os::unix::net::UnixStream::connect(&path).is_err() {
            let _ = std::fs::remove_file(&path);
        }
    }
    let resp = DeleteResponse {
        pid: pid as u32,
        // What runc's shim reports for a container it had to kill.
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: MessageField::some(containerd_shim::util::timestamp().unwrap_or_default()),
        ..Default::default()
    };
    resp.write_to_bytes().map_err(|e| DeleteError::Write(e.to_string()))
}
