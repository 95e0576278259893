//! Capabilities: the five sets of `process.capabilities`, applied in the
//! order the kernel allows.

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

use crate::syscall::Syscall;

#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    #[error("unknown capability {0}")]
    Unknown(String),
    #[error("{step}: {errno}")]
    Apply { step: &'static str, errno: nix::errno::Errno },
}

/// Kernel capability numbers, from include/uapi/linux/capability.h.
pub const NAMES: &[&str] = &[
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
];

pub fn number(cap: &Capability) -> Result<u32, CapsError> {
    let name = serde_json::to_value(cap).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    NAMES.iter().position(|n| *n == name).map(|i| i as u32).ok_or(CapsError::Unknown(name))
}

fn mask(set: &Option<Capabilities>) -> Result<u64, CapsError> {
    set.iter().flatten().try_fold(0u64, |m, c| Ok(m | 1u64 << number(c)?))
}

/// The last capability this kernel knows, so that the bounding set is
/// dropped for every capability, including ones newer than our table.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(NAMES.len() as u32 - 1)
}

/// The sets as bit masks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CapSets {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

impl CapSets {
    pub fn from_spec(caps: Option<&LinuxCapabilities>) -> Result<CapSets, CapsError> {
        let Some(c) = caps else { return Ok(CapSets::default()) };
        Ok(CapSets {
            bounding: mask(c.bounding())?,
            effective: mask(c.effective())?,
            permitted: mask(c.permitted())?,
            inheritable: mask(c.inheritable())?,
            ambient: mask(c.ambient())?,
        })
    }
}

/// Drops the bounding set. This must happen before the switch to the
/// container user: PR_CAPBSET_DROP needs CAP_SETPCAP, which a non-root user
/// no longer has once setuid clears the permitted set.
pub fn drop_bounding(sys: &dyn Syscall, sets: &CapSets) -> Result<(), CapsError> {
    for cap in 0..=last_cap() {
        if sets.bounding & (1u64 << cap) == 0 {
            match sys.prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0) {
                // A capability the kernel does not know is not in the set.
                Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
                Err(errno) => return Err(CapsError::Apply { step: "drop bounding capability", errno }),
            }
        }
    }
    Ok(())
}

/// Sets effective, permitted and inheritable, then raises ambient. Ambient
/// capabilities can only be raised when they are both permitted and
/// inheritable (capabilities(7)), so capset comes first.
pub fn apply(sys: &dyn Syscall, sets: &CapSets) -> Result<(), CapsError> {
    sys.capset(sets.effective, sets.permitted, sets.inheritable)
        .map_err(|errno| CapsError::Apply { step: "capset", errno })?;
    if sets.ambient != 0 {
        for cap in 0..64u32 {
            if sets.ambient & (1u64 << cap) != 0 {
                sys.prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong, cap as libc::c_ulong)
                    .map_err(|errno| CapsError::Apply { step: "raise ambient capability", errno })?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_kernel() {
        assert_eq!(number(&Capability::Chown).unwrap(), 0);
        assert_eq!(number(&Capability::SysAdmin).unwrap(), 21);
        assert_eq!(number(&Capability::AuditWrite).unwrap(), 29);
        assert_eq!(number(&Capability::CheckpointRestore).unwrap(), 40);
    }

    #[test]
    fn default_docker_set_mask() {
        // containerd's default set, whose CapEff runc shows as 00000000a80425fb.
        let caps = [
            Capability::Chown, Capability::DacOverride, Capability::Fsetid, Capability::Fowner,
            Capability::Mknod, Capability::NetRaw, Capability::Setgid, Capability::Setuid,
            Capability::Setfcap, Capability::Setpcap, Capability::NetBindService, Capability::SysChroot,
            Capability::Kill, Capability::AuditWrite,
        ];
        assert_eq!(mask(&Some(caps.into_iter().collect())).unwrap(), 0xa80425fb);
    }
}
