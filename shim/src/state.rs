//! What `delete` needs when the shim server is gone: a small file in the
//! bundle, written at Create. containerd removes the bundle after delete.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const FILE: &str = "rsv2-state.json";

#[derive(Debug, Serialize, Deserialize)]
pub struct Saved {
    pub pid: i32,
    pub cgroup: String,
    /// The rootfs we mounted from Create's mounts, if any.
    pub mounted_rootfs: Option<PathBuf>,
    /// The systemd unit that holds the cgroup (the systemd driver).
    #[serde(default)]
    pub systemd_unit: Option<String>,
}

impl Saved {
    pub fn write(&self, bundle: &Path) -> std::io::Result<()> {
        let tmp = bundle.join(format!(".{FILE}"));
        std::fs::write(&tmp, serde_json::to_vec(self)?)?;
        std::fs::rename(tmp, bundle.join(FILE))
    }

    pub fn read(bundle: &Path) -> std::io::Result<Saved> {
        Ok(serde_json::from_slice(&std::fs::read(bundle.join(FILE))?)?)
    }

    pub fn remove(bundle: &Path) {
        let _ = std::fs::remove_file(bundle.join(FILE));
    }
}
