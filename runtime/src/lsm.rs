//! AppArmor and SELinux labels for the process.
//!
//! Set through /proc/self/attr so they take effect at the next execve.
//! Where the LSM is not enabled, an empty label is a no-op and a non-empty
//! one is an error: silently running a container without the confinement
//! it asked for is the failure mode this refuses.

use std::path::Path;

use oci_spec::runtime::Process;

#[derive(Debug, thiserror::Error)]
pub enum LsmError {
    #[error("{lsm} label {label:?} requested, but {lsm} is not enabled on this host")]
    NotEnabled { lsm: &'static str, label: String },
    #[error("set {lsm} label {label:?}: {source}")]
    Apply { lsm: &'static str, label: String, source: std::io::Error },
}

fn write_attr(lsm: &'static str, files: &[&str], value: &str, label: &str) -> Result<(), LsmError> {
    let file = files.iter().find(|f| Path::new(f).exists()).unwrap_or(&files[0]);
    std::fs::write(file, value).map_err(|source| LsmError::Apply { lsm, label: label.to_string(), source })
}

fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").map(|s| s.trim() == "Y").unwrap_or(false)
}

fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

/// The labels `process` asks for, each with whether its LSM is enabled
/// here: the validator refuses a label whose LSM is not before anything
/// (a hook included) runs, as runc's validator does for SELinux.
pub fn requested(process: &Process) -> Vec<(&'static str, &'static str, String, bool)> {
    let mut out = Vec::new();
    if let Some(profile) = process.apparmor_profile().as_deref().filter(|p| !p.is_empty()) {
        out.push(("process.apparmorProfile", "AppArmor", profile.to_string(), apparmor_enabled()));
    }
    if let Some(label) = process.selinux_label().as_deref().filter(|l| !l.is_empty()) {
        out.push(("process.selinuxLabel", "SELinux", label.to_string(), selinux_enabled()));
    }
    out
}

pub fn apply(process: &Process) -> Result<(), LsmError> {
    if let Some(profile) = process.apparmor_profile().as_deref().filter(|p| !p.is_empty()) {
        if !apparmor_enabled() {
            return Err(LsmError::NotEnabled { lsm: "AppArmor", label: profile.to_string() });
        }
        write_attr("AppArmor", &["/proc/self/attr/apparmor/exec", "/proc/self/attr/exec"], &format!("exec {profile}"), profile)?;
    }
    if let Some(label) = process.selinux_label().as_deref().filter(|l| !l.is_empty()) {
        if !selinux_enabled() {
            return Err(LsmError::NotEnabled { lsm: "SELinux", label: label.to_string() });
        }
        write_attr("SELinux", &["/proc/self/attr/exec"], label, label)?;
    }
    Ok(())
}
