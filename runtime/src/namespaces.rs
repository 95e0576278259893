//! Namespaces: which to create, which to join by path, and in what order.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use nix::fcntl::{open, OFlag};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("open {kind} namespace {path}: {errno}")]
    Open { kind: &'static str, path: PathBuf, errno: nix::errno::Errno },
    #[error("join {kind} namespace {path}: {errno}")]
    Join { kind: &'static str, path: PathBuf, errno: nix::errno::Errno },
    #[error("create namespaces {flags:?}: {errno}")]
    Unshare { flags: CloneFlags, errno: nix::errno::Errno },
}

pub fn flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

fn name(f: CloneFlags) -> &'static str {
    match f {
        CloneFlags::CLONE_NEWNS => "mnt",
        CloneFlags::CLONE_NEWCGROUP => "cgroup",
        CloneFlags::CLONE_NEWUTS => "uts",
        CloneFlags::CLONE_NEWIPC => "ipc",
        CloneFlags::CLONE_NEWUSER => "user",
        CloneFlags::CLONE_NEWPID => "pid",
        CloneFlags::CLONE_NEWNET => "net",
        _ => "time",
    }
}

/// What the spec asks for: namespaces to create and namespaces to join.
#[derive(Debug, Clone)]
pub struct Plan {
    pub create: CloneFlags,
    pub join: Vec<(CloneFlags, PathBuf)>,
}

impl Plan {
    pub fn from_spec(namespaces: &[LinuxNamespace]) -> Plan {
        let mut plan = Plan { create: CloneFlags::empty(), join: Vec::new() };
        for ns in namespaces {
            let f = flag(ns.typ());
            match ns.path() {
                Some(p) if !p.as_os_str().is_empty() => plan.join.push((f, p.clone())),
                _ => plan.create |= f,
            }
        }
        // The user namespace goes first: joining it grants the capabilities
        // that setns(2) needs for the namespaces it owns.
        plan.join.sort_by_key(|(f, _)| *f != CloneFlags::CLONE_NEWUSER);
        plan
    }

    pub fn creates(&self, f: CloneFlags) -> bool {
        self.create.contains(f)
    }

    pub fn has(&self, f: CloneFlags) -> bool {
        self.creates(f) || self.join.iter().any(|(j, _)| *j == f)
    }
}

/// The namespaces of `pid` that differ from ours, to join for an exec.
/// Joining one's own user namespace fails with EINVAL, so equal ones are
/// skipped.
pub fn plan_join(pid: i32) -> Result<Plan, nix::errno::Errno> {
    use std::os::unix::fs::MetadataExt;
    let mut plan = Plan { create: CloneFlags::empty(), join: Vec::new() };
    for f in [
        CloneFlags::CLONE_NEWUSER,
        CloneFlags::CLONE_NEWCGROUP,
        CloneFlags::CLONE_NEWIPC,
        CloneFlags::CLONE_NEWUTS,
        CloneFlags::CLONE_NEWNET,
        CloneFlags::CLONE_NEWPID,
        CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
        CloneFlags::CLONE_NEWNS,
    ] {
        let target = PathBuf::from(format!("/proc/{pid}/ns/{}", name(f)));
        let theirs = match std::fs::metadata(&target) {
            Ok(m) => m,
            // A kernel without time namespaces has no such file.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && name(f) == "time" => continue,
            Err(e) => return Err(nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))),
        };
        let ours = std::fs::metadata(format!("/proc/self/ns/{}", name(f))).ok();
        if ours.is_some_and(|o| o.ino() == theirs.ino() && o.dev() == theirs.dev()) {
            continue;
        }
        plan.join.push((f, target));
    }
    Ok(plan)
}

/// Opens every namespace path before joining any: once the mount namespace
/// is joined, the paths would resolve in the container's view.
pub fn open_all(plan: &Plan) -> Result<Vec<(CloneFlags, PathBuf, OwnedFd)>, NamespaceError> {
    plan.join
        .iter()
        .map(|(f, path)| {
            // Non-blocking: a path swapped for a FIFO since the shim checked it
            // must not hang this stage (setns then refuses it).
            open(path.as_path(), OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC, Mode::empty())
                .map(|fd| (*f, path.clone(), fd))
                .map_err(|errno| NamespaceError::Open { kind: name(*f), path: path.clone(), errno })
        })
        .collect()
}

pub fn join_all(fds: Vec<(CloneFlags, PathBuf, OwnedFd)>) -> Result<(), NamespaceError> {
    for (f, path, fd) in fds {
        nix::sched::setns(&fd, f).map_err(|errno| NamespaceError::Join { kind: name(f), path, errno })?;
    }
    Ok(())
}

pub fn unshare(flags: CloneFlags) -> Result<(), NamespaceError> {
    if flags.is_empty() {
        return Ok(());
    }
    nix::sched::unshare(flags).map_err(|errno| NamespaceError::Unshare { flags, errno })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxNamespaceBuilder;

    #[test]
    fn user_namespace_is_joined_first() {
        let ns = vec![
            LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network).path("/proc/1/ns/net").build().unwrap(),
            LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::User).path("/proc/1/ns/user").build().unwrap(),
            LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Pid).build().unwrap(),
        ];
        let plan = Plan::from_spec(&ns);
        assert_eq!(plan.create, CloneFlags::CLONE_NEWPID);
        assert_eq!(plan.join[0].0, CloneFlags::CLONE_NEWUSER);
        assert_eq!(plan.join[1].0, CloneFlags::CLONE_NEWNET);
    }
}
