//! Checking a spec before anything touches the host.
//!
//! A spec comes from ctr, the CRI or a user, and is untrusted input. Every
//! rule of runc's libcontainer validator (`validate/validator.go`) and of
//! its spec conversion (`specconv`) is here, checked in the shim at Create,
//! before a cgroup, a mount or a process exists; each refusal is a sentence
//! that names the field and its value. Where runc is unsafe or silently
//! ignores a field we do not implement, we refuse, and the rule says so
//! ("stricter than runc"); the README lists those cases.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{LinuxIdMapping, LinuxNamespace, LinuxNamespaceType, Mount, Spec};

/// A spec that cannot run, and why: `field` names the place in config.json
/// (`linux.sysctl["kernel.hostname"]`), `problem` says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Invalid {
    pub field: String,
    pub problem: String,
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Invalid {
    Invalid { field: field.into(), problem: problem.into() }
}

/// The largest id runc accepts for a user or group: setresuid(2) takes
/// -1 (4294967295) as "leave unchanged", so an id of 2^32-1 would leave
/// the process root.
pub const MAX_ID: u32 = i32::MAX as u32;

/// Checks `spec`, whose rootfs is `rootfs` (already joined onto the
/// bundle). Reads the host only to compare: namespace files, the rootfs.
pub fn check(spec: &Spec, rootfs: &Path) -> Result<(), Invalid> {
    check_rootfs(rootfs)?;
    let process = spec.process().as_ref().ok_or_else(|| invalid("process", "is missing: there is nothing to run"))?;
    check_process(process)?;
    for (field, lsm, label, enabled) in crate::lsm::requested(process) {
        if !enabled {
            return Err(invalid(field, format!("{label:?}: {lsm} is not enabled on this host")));
        }
    }
    let linux = spec.linux().clone().unwrap_or_default();
    check_resources(&linux, cgroup2_unified())?;
    let ns = Namespaces::from_spec(linux.namespaces().as_deref().unwrap_or_default())?;
    check_uts(spec, &ns)?;
    check_security(&linux, &ns)?;
    check_user_namespace(&linux, &ns, process)?;
    check_time_namespace(&linux, &ns)?;
    check_sysctl(&linux, &ns)?;
    check_mounts(spec.mounts().as_deref().unwrap_or_default())?;
    check_devices(&linux)?;
    check_unsupported(&linux)?;
    check_hooks(spec)?;
    if let Some(p) = linux.rootfs_propagation().as_deref().filter(|p| !p.is_empty()) {
        if crate::rootfs::propagation(p).is_none() {
            return Err(invalid("linux.rootfsPropagation", format!("{p:?} is not supported: use private, rprivate, slave, rslave, shared, rshared, unbindable or runbindable")));
        }
    }
    if let Some(seccomp) = linux.seccomp() {
        crate::seccomp::compile(seccomp).map_err(|e| invalid("linux.seccomp", e.to_string()))?;
    }
    Ok(())
}

/// runc: the rootfs must exist, and be named by a clean absolute path
/// with no symlink in it. Stricter than runc: the host's own root is
/// refused, since setting up /dev in it would write to the host's /dev.
fn check_rootfs(rootfs: &Path) -> Result<(), Invalid> {
    let field = "root.path";
    let shown = rootfs.display();
    let meta = std::fs::metadata(rootfs).map_err(|e| invalid(field, format!("{shown}: {e}")))?;
    if !meta.is_dir() {
        return Err(invalid(field, format!("{shown} is not a directory")));
    }
    let real = std::fs::canonicalize(rootfs).map_err(|e| invalid(field, format!("{shown}: {e}")))?;
    if real != lexically_clean(rootfs) {
        return Err(invalid(field, format!("{shown} is not an absolute path, or has a symlink in it (it resolves to {})", real.display())));
    }
    if std::fs::metadata("/").is_ok_and(|host| host.dev() == meta.dev() && host.ino() == meta.ino()) {
        return Err(invalid(field, format!("{shown} is the host's root directory")));
    }
    Ok(())
}

/// `path` with `.` dropped and `..` applied, as Go's filepath.Clean: a
/// `..` at the root stays at the root (`/../proc/sys` is `/proc/sys`, so
/// the /proc rules below see it), and only a relative path keeps leading
/// `..`s.
pub fn lexically_clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                let at_root = out.as_os_str() == "/";
                let only_parents = out.components().all(|c| c == Component::ParentDir);
                if at_root {
                } else if only_parents {
                    out.push("..");
                } else {
                    out.pop();
                }
            }
            other => out.push(other),
        }
    }
    out
}

fn check_process(process: &oci_spec::runtime::Process) -> Result<(), Invalid> {
    let args = process.args().as_deref().unwrap_or_default();
    if args.is_empty() {
        return Err(invalid("process.args", "is empty: it must name the program to run"));
    }
    if let Some(a) = args.iter().find(|a| a.contains('\0')) {
        return Err(invalid("process.args", format!("{a:?} contains a NUL byte")));
    }
    if let Some(e) = process.env().iter().flatten().find(|e| e.contains('\0')) {
        return Err(invalid("process.env", format!("{e:?} contains a NUL byte")));
    }
    // runc: "invalid environment variable".
    if let Some(e) = process.env().iter().flatten().find(|e| !e.contains('=') || e.starts_with('=')) {
        return Err(invalid("process.env", format!("{e:?} is not NAME=VALUE")));
    }
    let cwd = process.cwd();
    if !cwd.is_absolute() {
        return Err(invalid("process.cwd", format!("{} must be an absolute path", cwd.display())));
    }
    let user = process.user();
    for (field, id) in [("process.user.uid", user.uid()), ("process.user.gid", user.gid())]
        .into_iter()
        .chain(user.additional_gids().iter().flatten().map(|g| ("process.user.additionalGids", *g)))
    {
        if id > MAX_ID {
            return Err(invalid(field, format!("{id}: uids and gids must be in range 0-{MAX_ID}")));
        }
    }
    if let Some(score) = process.oom_score_adj() {
        if !(-1000..=1000).contains(&score) {
            return Err(invalid("process.oomScoreAdj", format!("{score} is outside -1000..1000")));
        }
    }
    for r in process.rlimits().iter().flatten() {
        if r.soft() > r.hard() {
            return Err(invalid(format!("process.rlimits[{}]", r.typ()), format!("soft limit {} is above hard limit {}", r.soft(), r.hard())));
        }
    }
    if let Some(s) = process.scheduler() {
        check_scheduler(s)?;
    }
    if let Some(io) = process.io_priority() {
        if !(0..=7).contains(&io.priority()) {
            return Err(invalid("process.ioPriority.priority", format!("{} is outside 0..7", io.priority())));
        }
    }
    Ok(())
}

/// runc's scheduler rules (validator.go, from runc 1.2).
fn check_scheduler(s: &oci_spec::runtime::Scheduler) -> Result<(), Invalid> {
    use oci_spec::runtime::LinuxSchedulerPolicy::*;
    let policy = *s.policy();
    // Whatever the policy, as runc checks it.
    if let Some(nice) = *s.nice() {
        if !(-20..=19).contains(&nice) {
            return Err(invalid("process.scheduler.nice", format!("{nice} is outside -20..19")));
        }
    }
    if let Some(p) = *s.priority() {
        let realtime = matches!(policy, SchedFifo | SchedRr);
        if realtime && !(1..=99).contains(&p) {
            return Err(invalid("process.scheduler.priority", format!("{p} is outside 1..99 for policy {policy}")));
        }
        if !realtime && p != 0 {
            return Err(invalid("process.scheduler.priority", format!("{p}: a priority can only be given for SCHED_FIFO or SCHED_RR")));
        }
    }
    let deadline_fields = s.runtime().is_some() || s.deadline().is_some() || s.period().is_some();
    if deadline_fields && policy != SchedDeadline {
        return Err(invalid("process.scheduler", "runtime, deadline and period can only be given for SCHED_DEADLINE"));
    }
    Ok(())
}

/// The spec's namespaces: which are listed, and which of those are joined
/// by path.
struct Namespaces {
    listed: Vec<LinuxNamespaceType>,
    paths: Vec<(LinuxNamespaceType, PathBuf)>,
}

/// The nsfs name of a namespace type, as in /proc/self/ns.
fn ns_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

impl Namespaces {
    fn from_spec(list: &[LinuxNamespace]) -> Result<Namespaces, Invalid> {
        let mut ns = Namespaces { listed: Vec::new(), paths: Vec::new() };
        for (i, n) in list.iter().enumerate() {
            let t = n.typ();
            if ns.listed.contains(&t) {
                return Err(invalid(format!("linux.namespaces[{i}]"), format!("the {} namespace is listed twice", ns_name(t))));
            }
            ns.listed.push(t);
            if !std::path::Path::new(&format!("/proc/self/ns/{}", ns_name(t))).exists() {
                return Err(invalid(format!("linux.namespaces[{i}]"), format!("{} namespaces are not enabled in this kernel", ns_name(t))));
            }
            if let Some(path) = n.path().as_ref().filter(|p| !p.as_os_str().is_empty()) {
                check_ns_path(i, t, path)?;
                ns.paths.push((t, path.clone()));
            }
        }
        if !ns.listed.contains(&LinuxNamespaceType::Mount) {
            // Stricter than runc: without a mount namespace the rootfs
            // would be set up in the host's.
            return Err(invalid("linux.namespaces", "has no mount namespace: the container's mounts would be made in the host's"));
        }
        if ns.is_hosts(LinuxNamespaceType::Mount) {
            return Err(invalid("linux.namespaces", "joins the host's mount namespace: the container's mounts and pivot_root would change the host's"));
        }
        Ok(ns)
    }

    fn has(&self, t: LinuxNamespaceType) -> bool {
        self.listed.contains(&t)
    }

    /// Listed, and not the namespace the shim itself is in (runc's
    /// isHostNetNS, for every type).
    fn private(&self, t: LinuxNamespaceType) -> bool {
        self.has(t) && !self.is_hosts(t)
    }

    /// Joined by a path that names the shim's own namespace of that type.
    fn is_hosts(&self, t: LinuxNamespaceType) -> bool {
        let Some((_, path)) = self.paths.iter().find(|(pt, _)| *pt == t) else { return false };
        let ours = std::fs::metadata(format!("/proc/self/ns/{}", ns_name(t)));
        let theirs = std::fs::metadata(path);
        matches!((ours, theirs), (Ok(a), Ok(b)) if a.dev() == b.dev() && a.ino() == b.ino())
    }
}

/// A namespace path must name a namespace file (nsfs) of that type:
/// anything else would be opened by stage 1 on the host (a FIFO would
/// block it forever).
fn check_ns_path(i: usize, t: LinuxNamespaceType, path: &Path) -> Result<(), Invalid> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let field = format!("linux.namespaces[{i}].path");
    let shown = path.display();
    if !path.is_absolute() {
        return Err(invalid(field, format!("{shown} must be an absolute path")));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| invalid(&field, format!("{shown}: {e}")))?;
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    let fs = nix::sys::statfs::fstatfs(&file).map_err(|e| invalid(&field, format!("{shown}: {e}")))?;
    if fs.filesystem_type().0 as i64 != NSFS_MAGIC {
        return Err(invalid(field, format!("{shown} is not a namespace file")));
    }
    // NS_GET_NSTYPE (_IO(0xb7, 0x3)): the CLONE_NEW* type of the namespace.
    // SAFETY: an ioctl with no argument on an fd we own.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), 0xb703 as _) };
    let want = crate::namespaces::flag(t).bits();
    if kind >= 0 && kind != want {
        return Err(invalid(field, format!("{shown} is not a {} namespace", ns_name(t))));
    }
    Ok(())
}

/// runc: hostname and domainname need a UTS namespace. Stricter than runc:
/// one joined by a path to the shim's own is the host's, whose name would
/// change.
fn check_uts(spec: &Spec, ns: &Namespaces) -> Result<(), Invalid> {
    for (field, value) in [("hostname", spec.hostname()), ("domainname", spec.domainname())] {
        let Some(v) = value.as_deref().filter(|v| !v.is_empty()) else { continue };
        if !ns.private(LinuxNamespaceType::Uts) {
            return Err(invalid(field, format!("{v:?} cannot be set without a private uts namespace")));
        }
        // Stricter than runc, which hands a NUL to sethostname (the name
        // is cut there).
        if v.len() > 64 || v.contains('\0') {
            return Err(invalid(field, format!("{v:?} is not a valid name (at most 64 bytes, no NUL)")));
        }
    }
    Ok(())
}

/// runc: masked and readonly paths need a mount namespace (always there,
/// see [`Namespaces::from_spec`]); stricter than runc, they must be
/// absolute, as the runtime spec says.
fn check_security(linux: &oci_spec::runtime::Linux, _ns: &Namespaces) -> Result<(), Invalid> {
    for (field, paths) in [("linux.maskedPaths", linux.masked_paths()), ("linux.readonlyPaths", linux.readonly_paths())] {
        for p in paths.iter().flatten() {
            if !p.starts_with('/') || p.contains('\0') {
                return Err(invalid(field, format!("{p:?} must be an absolute path")));
            }
        }
    }
    Ok(())
}

fn check_mappings(field: &str, maps: &[LinuxIdMapping]) -> Result<(), Invalid> {
    for (i, m) in maps.iter().enumerate() {
        let f = format!("{field}[{i}]");
        if m.size() == 0 {
            return Err(invalid(f, "size is 0"));
        }
        if m.container_id().checked_add(m.size() - 1).is_none() || m.host_id().checked_add(m.size() - 1).is_none() {
            return Err(invalid(f, format!("{} {} {} runs past the largest id", m.container_id(), m.host_id(), m.size())));
        }
    }
    Ok(())
}

fn mapped(maps: &[LinuxIdMapping], id: u32) -> bool {
    maps.iter().any(|m| id >= m.container_id() && id - m.container_id() < m.size())
}

/// runc: a new user namespace needs mappings, and mappings need a user
/// namespace (runc 1.1 ignores them then; refused here, stricter). The
/// container's root and the process's ids must be mapped. A namespace
/// joined by path may come with its maps too (containerd's CRI sends both
/// for a `hostUsers: false` pod): runc then requires that they agree with
/// the namespace's, which the init stage checks once it has joined it.
fn check_user_namespace(linux: &oci_spec::runtime::Linux, ns: &Namespaces, process: &oci_spec::runtime::Process) -> Result<(), Invalid> {
    let uids = linux.uid_mappings().clone().unwrap_or_default();
    let gids = linux.gid_mappings().clone().unwrap_or_default();
    let has_maps = !uids.is_empty() || !gids.is_empty();
    if !ns.has(LinuxNamespaceType::User) {
        if has_maps {
            return Err(invalid("linux.uidMappings", "user namespace mappings are given, but the user namespace is not listed in linux.namespaces"));
        }
        return Ok(());
    }
    let joined = ns.paths.iter().any(|(t, _)| *t == LinuxNamespaceType::User);
    if joined && !has_maps {
        return Ok(());
    }
    if uids.is_empty() || gids.is_empty() {
        let field = if uids.is_empty() { "linux.uidMappings" } else { "linux.gidMappings" };
        let problem = if joined { "the user namespace is joined by path with only one of uid and gid mappings" } else { "a new user namespace needs both uid and gid mappings" };
        return Err(invalid(field, problem));
    }
    check_mappings("linux.uidMappings", &uids)?;
    check_mappings("linux.gidMappings", &gids)?;
    if !mapped(&uids, 0) || !mapped(&gids, 0) {
        return Err(invalid("linux.uidMappings", "the container's uid and gid 0 must be mapped"));
    }
    let user = process.user();
    if !mapped(&uids, user.uid()) {
        return Err(invalid("process.user.uid", format!("{} is not mapped by linux.uidMappings", user.uid())));
    }
    for (field, gid) in std::iter::once(("process.user.gid", user.gid())).chain(user.additional_gids().iter().flatten().map(|g| ("process.user.additionalGids", *g))) {
        if !mapped(&gids, gid) {
            return Err(invalid(field, format!("{gid} is not mapped by linux.gidMappings")));
        }
    }
    Ok(())
}

/// runc 1.2: time offsets need a new time namespace.
fn check_time_namespace(linux: &oci_spec::runtime::Linux, ns: &Namespaces) -> Result<(), Invalid> {
    let Some(offsets) = linux.time_offsets().as_ref().filter(|o| !o.is_empty()) else { return Ok(()) };
    if !ns.has(LinuxNamespaceType::Time) {
        return Err(invalid("linux.timeOffsets", "time offsets are given, but the time namespace is not listed in linux.namespaces"));
    }
    if ns.paths.iter().any(|(t, _)| *t == LinuxNamespaceType::Time) {
        return Err(invalid("linux.timeOffsets", "the time namespace is joined by path and offsets are given: only one of them may be"));
    }
    for (clock, o) in offsets {
        if clock != "monotonic" && clock != "boottime" {
            return Err(invalid(format!("linux.timeOffsets[{clock:?}]"), "only the monotonic and boottime clocks have offsets"));
        }
        if o.nanosecs().unwrap_or(0) >= 1_000_000_000 {
            return Err(invalid(format!("linux.timeOffsets[{clock:?}].nanosecs"), "must be below 1000000000"));
        }
    }
    Ok(())
}

/// The IPC sysctls of ipc_namespaces(7).
const IPC_SYSCTLS: [&str; 8] =
    ["kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"];

/// A sysctl key in dotted form: runc reads `a/b.c` as `a.b/c` (the first
/// separator says which is which).
pub fn sysctl_key(key: &str) -> String {
    match key.find(['.', '/']) {
        Some(i) if key.as_bytes()[i] == b'/' => key.chars().map(|c| if c == '.' { '/' } else if c == '/' { '.' } else { c }).collect(),
        _ => key.to_string(),
    }
}

/// Where a sysctl lives under /proc/sys: its dotted name with dots as
/// directories, and a slash in it (an interface named `eno2.100`) as a
/// dot. runc's writer turns every dot into a slash, even in the slash
/// form, and so writes `eno2/100`.
pub fn sysctl_path(key: &str) -> String {
    sysctl_key(key).chars().map(|c| if c == '.' { '/' } else if c == '/' { '.' } else { c }).collect()
}

/// runc's sysctl rules: a sysctl is allowed only where its namespace is
/// the container's own. Stricter than runc: an ipc or uts namespace
/// joined by a path to the host's counts as the host's, as runc already
/// does for the network namespace. Keys are confined: no empty, `.` or
/// `..` part, so the write under /proc/sys never leaves it.
fn check_sysctl(linux: &oci_spec::runtime::Linux, ns: &Namespaces) -> Result<(), Invalid> {
    let mut keys: Vec<&String> = linux.sysctl().iter().flatten().map(|(k, _)| k).collect();
    keys.sort();
    for raw in keys {
        let key = sysctl_key(raw);
        let field = format!("linux.sysctl[{raw:?}]");
        if key.is_empty() || key.contains('\0') || key.split('.').any(|p| p.is_empty() || p == ".." || p.split('/').any(|q| q.is_empty() || q == "." || q == "..")) {
            return Err(invalid(field, "is not a sysctl name"));
        }
        let value = linux.sysctl().as_ref().and_then(|m| m.get(raw)).map(String::as_str).unwrap_or_default();
        if value.contains('\0') {
            return Err(invalid(field, "the value contains a NUL byte"));
        }
        let not_separate = || invalid(&field, format!("sysctl {key:?} is not in a separate kernel namespace"));
        if IPC_SYSCTLS.contains(&key.as_str()) || key.starts_with("fs.mqueue.") {
            if !ns.private(LinuxNamespaceType::Ipc) {
                return Err(invalid(&field, format!("sysctl {key:?} is not allowed in the host's ipc namespace")));
            }
            continue;
        }
        if key.starts_with("net.") {
            if !ns.private(LinuxNamespaceType::Network) {
                return Err(invalid(&field, format!("sysctl {key:?} is not allowed in the host's network namespace")));
            }
            continue;
        }
        if key == "kernel.hostname" || key == "kernel.domainname" {
            if !ns.private(LinuxNamespaceType::Uts) {
                return Err(not_separate());
            }
            if key == "kernel.hostname" {
                return Err(invalid(&field, "sysctl \"kernel.hostname\" conflicts with the OCI \"hostname\" field: set that instead"));
            }
            continue;
        }
        // Everything else, user.* (per user namespace ucounts) included, is
        // refused as runc refuses it.
        return Err(not_separate());
    }
    Ok(())
}

/// Files under /proc a mount may cover (runc's checkProcMount): the ones
/// lxcfs-style tools fake. Anything else there could hide what
/// maskedPaths masks, or redirect the runtime's own writes to /proc.
const PROC_MOUNT_ALLOWED: [&str; 11] = [
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
    "/proc/sys/crypto/fips_enabled",
];

/// runc: destinations are absolute (runc 1.1 only warns, and takes a
/// relative one as relative to /: refused here, stricter), hold no NUL,
/// are not the root itself, and inside /proc only what checkProcMount
/// allows (runc 1.1 checks binds only there, so a tmpfs over /proc/sys
/// runs under it: stricter here, as runc 1.2).
fn check_mounts(mounts: &[Mount]) -> Result<(), Invalid> {
    for (i, m) in mounts.iter().enumerate() {
        let field = format!("mounts[{i}]");
        let dest = m.destination();
        let shown = dest.display();
        let typ = m.typ().as_deref().unwrap_or("");
        let nul = |s: &str| s.contains('\0');
        if nul(&dest.to_string_lossy()) || nul(typ) || m.source().as_ref().is_some_and(|s| nul(&s.to_string_lossy())) || m.options().iter().flatten().any(|o| nul(o)) {
            return Err(invalid(field, "a field contains a NUL byte"));
        }
        if !dest.is_absolute() {
            return Err(invalid(format!("{field}.destination"), format!("{shown} must be an absolute path")));
        }
        let clean = lexically_clean(dest);
        if clean == Path::new("/") {
            return Err(invalid(format!("{field}.destination"), format!("{shown} is the root of the container: mount the rootfs through root.path")));
        }
        if clean == Path::new("/proc") {
            if typ != "proc" {
                return Err(invalid(format!("{field}.type"), format!("only a procfs may be mounted on /proc, not {typ:?}")));
            }
        } else if clean.starts_with("/proc") && !PROC_MOUNT_ALLOWED.iter().any(|a| clean == Path::new(a)) {
            return Err(invalid(format!("{field}.destination"), format!("{shown} is inside /proc, where only {} may be mounted over", PROC_MOUNT_ALLOWED.join(", "))));
        }
        // A bind's source is a host path: say which is missing, before
        // anything is mounted (runc names it at mount time).
        let bind = typ == "bind" || m.options().iter().flatten().any(|o| o == "bind" || o == "rbind");
        if bind {
            match m.source() {
                None => return Err(invalid(format!("{field}.source"), format!("a bind mount on {shown} needs a source"))),
                Some(src) if std::fs::metadata(src).is_err() => {
                    return Err(invalid(format!("{field}.source"), format!("{} does not exist (bind mount on {shown})", src.display())))
                }
                Some(_) => {}
            }
        }
        check_idmapped_mount(&field, &shown.to_string(), m, bind)?;
    }
    Ok(())
}

/// runc 1.2's checkIDMapMounts: an id-mapped mount is a bind mount with
/// both uid and gid mappings. `idmap`/`ridmap` without mappings would ask
/// for the container's own maps, which we do not offer: refused.
fn check_idmapped_mount(field: &str, shown: &str, m: &oci_spec::runtime::Mount, bind: bool) -> Result<(), Invalid> {
    let uids = m.uid_mappings().clone().unwrap_or_default();
    let gids = m.gid_mappings().clone().unwrap_or_default();
    let word = m.options().iter().flatten().any(|o| o == "idmap" || o == "ridmap");
    if uids.is_empty() && gids.is_empty() {
        if word {
            return Err(invalid(format!("{field}.options"), format!("idmap on {shown} needs {field}.uidMappings and gidMappings")));
        }
        return Ok(());
    }
    if !bind {
        return Err(invalid(format!("{field}.uidMappings"), format!("id-mapped mounts are only supported for bind mounts ({shown})")));
    }
    if uids.is_empty() || gids.is_empty() {
        let f = if uids.is_empty() { "uidMappings" } else { "gidMappings" };
        return Err(invalid(format!("{field}.{f}"), format!("an id-mapped mount needs both uid and gid mappings ({shown})")));
    }
    check_mappings(&format!("{field}.uidMappings"), &uids)?;
    check_mappings(&format!("{field}.gidMappings"), &gids)
}

/// runc's device checks: `linux.devices` nodes have a real type and
/// number (no wildcard to mknod) and a path; `linux.resources.devices`
/// rules have an access and a type of a, b or c. Stricter than runc: a
/// node's path must be absolute (runc takes a relative one from the
/// rootfs), and an access holds only r, w and m (runc passes other letters
/// to the kernel). Device paths are made
/// inside the rootfs (paths.rs), so they cannot reach the host.
fn check_devices(linux: &oci_spec::runtime::Linux) -> Result<(), Invalid> {
    use oci_spec::runtime::LinuxDeviceType;
    for (i, d) in linux.devices().iter().flatten().enumerate() {
        let field = format!("linux.devices[{i}]");
        let path = d.path().to_string_lossy();
        if !path.starts_with('/') || path.contains('\0') {
            return Err(invalid(format!("{field}.path"), format!("{path:?} must be an absolute path")));
        }
        if d.typ() == LinuxDeviceType::A {
            return Err(invalid(format!("{field}.type"), "\"a\" is not a device type: use c, b, u or p"));
        }
        if d.typ() != LinuxDeviceType::P && (d.major() < 0 || d.minor() < 0) {
            return Err(invalid(&field, format!("{path}: major {} and minor {} must be real numbers, not wildcards", d.major(), d.minor())));
        }
    }
    for (i, r) in linux.resources().iter().flat_map(|r| r.devices().iter().flatten()).enumerate() {
        let field = format!("linux.resources.devices[{i}]");
        let access = r.access().as_deref().unwrap_or("");
        if access.is_empty() && r.allow() {
            return Err(invalid(format!("{field}.access"), "is empty"));
        }
        if let Some(c) = access.chars().find(|c| !matches!(c, 'r' | 'w' | 'm')) {
            return Err(invalid(format!("{field}.access"), format!("{access:?} holds {c:?}: only r, w and m are allowed")));
        }
        if matches!(r.typ(), Some(LinuxDeviceType::U) | Some(LinuxDeviceType::P)) {
            return Err(invalid(format!("{field}.type"), "device rules take a, b or c"));
        }
    }
    Ok(())
}

/// Whether /sys/fs/cgroup is a cgroup2 file system (unified mode); v1 and
/// hybrid hosts say no, as runc's IsCgroup2UnifiedMode does.
fn cgroup2_unified() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup").is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// runc's cgroupsCheck, before a cgroup exists: `unified` only on a
/// unified host, and swap that the memory limit can hold
/// (ConvertMemorySwapToCgroupV2Value's rules; on v1 the kernel refuses
/// memory.memsw.limit_in_bytes below memory.limit_in_bytes too, only later).
fn check_resources(linux: &oci_spec::runtime::Linux, unified_host: bool) -> Result<(), Invalid> {
    let Some(r) = linux.resources() else { return Ok(()) };
    if !unified_host && r.unified().as_ref().is_some_and(|u| !u.is_empty()) {
        return Err(invalid("linux.resources.unified", "needs cgroup v2 in unified mode; this host's controllers are v1"));
    }
    if let Some(m) = r.memory() {
        let (limit, swap) = (m.limit().unwrap_or(0), m.swap().unwrap_or(0));
        if swap != 0 && swap != -1 && !(limit == -1 && swap == 0) {
            if limit == 0 || limit == -1 {
                return Err(invalid("linux.resources.memory.swap", format!("{swap}: a swap limit needs a memory limit")));
            }
            if swap < limit {
                return Err(invalid("linux.resources.memory.swap", format!("{swap} is below linux.resources.memory.limit {limit}: memory+swap must be at least memory")));
            }
        }
    }
    Ok(())
}

/// Fields this runtime does not implement: refused, not silently dropped,
/// so that a container never runs without what it asked for.
fn check_unsupported(linux: &oci_spec::runtime::Linux) -> Result<(), Invalid> {
    if let Some(label) = linux.mount_label().as_deref().filter(|l| !l.is_empty()) {
        // Dropped silently, the container's mounts would carry no label.
        let why = if Path::new("/sys/fs/selinux/enforce").exists() { "SELinux mount labels are not supported by containerd-shim-rust-v2 yet" } else { "SELinux is not enabled on this host" };
        return Err(invalid("linux.mountLabel", format!("{label:?}: {why}")));
    }
    if linux.intel_rdt().is_some() {
        return Err(invalid("linux.intelRdt", "Intel RDT is not supported by containerd-shim-rust-v2"));
    }
    if linux.net_devices().as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(invalid("linux.netDevices", "moving network devices is not supported by containerd-shim-rust-v2"));
    }
    if linux.memory_policy().is_some() {
        return Err(invalid("linux.memoryPolicy", "memory policies are not supported by containerd-shim-rust-v2"));
    }
    if let Some(r) = linux.resources() {
        for (i, h) in r.hugepage_limits().iter().flatten().enumerate() {
            let size = h.page_size();
            let digits = size.trim_end_matches(['B']).trim_end_matches(['K', 'M', 'G', 'T']);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || !size.ends_with('B') {
                return Err(invalid(format!("linux.resources.hugepageLimits[{i}].pageSize"), format!("{size:?} is not a page size such as 2MB")));
            }
        }
    }
    Ok(())
}

/// The runtime spec: a hook's path is absolute. Stricter than runc,
/// which runs a relative one from its own working directory.
fn check_hooks(spec: &Spec) -> Result<(), Invalid> {
    let Some(hooks) = spec.hooks() else { return Ok(()) };
    #[allow(deprecated)]
    let kinds = [
        ("prestart", hooks.prestart()),
        ("createRuntime", hooks.create_runtime()),
        ("createContainer", hooks.create_container()),
        ("startContainer", hooks.start_container()),
        ("poststart", hooks.poststart()),
        ("poststop", hooks.poststop()),
    ];
    for (kind, list) in kinds {
        for (i, h) in list.iter().flatten().enumerate() {
            let p = h.path();
            if !p.is_absolute() || p.to_string_lossy().contains('\0') {
                return Err(invalid(format!("hooks.{kind}[{i}].path"), format!("{} must be an absolute path", p.display())));
            }
            if h.timeout().is_some_and(|t| t <= 0) {
                return Err(invalid(format!("hooks.{kind}[{i}].timeout"), format!("{} must be positive", h.timeout().unwrap_or(0))));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A minimal valid spec on a fresh rootfs, with `patch` merged in.
    fn verdict(patch: serde_json::Value) -> Result<(), Invalid> {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = std::fs::canonicalize(dir.path()).unwrap().join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        let mut spec = json!({
            "ociVersion": "1.0.2",
            "root": {"path": rootfs},
            "process": {"cwd": "/", "args": ["/bin/true"], "user": {"uid": 0, "gid": 0}},
            "linux": {"namespaces": [{"type": "mount"}, {"type": "pid"}]}
        });
        merge(&mut spec, patch);
        let spec: Spec = serde_json::from_value(spec).unwrap();
        let root = spec.root().as_ref().unwrap().path().clone();
        check(&spec, &root)
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn refused(patch: serde_json::Value, words: &[&str]) {
        let e = verdict(patch.clone()).expect_err(&format!("accepted {patch}")).to_string();
        for w in words {
            assert!(e.contains(w), "{patch}: {e:?} does not say {w:?}");
        }
    }

    fn ns(list: &[&str]) -> serde_json::Value {
        json!({"linux": {"namespaces": list.iter().map(|t| json!({"type": t})).collect::<Vec<_>>()}})
    }

    #[test]
    fn a_minimal_spec_passes() {
        verdict(json!({})).unwrap();
    }

    #[test]
    fn sysctls_need_their_namespace() {
        let with = |list: &[&str], sysctl: serde_json::Value| {
            let mut p = ns(list);
            p["linux"]["sysctl"] = sysctl;
            p
        };
        refused(with(&["mount"], json!({"kernel.hostname": "x"})), &["kernel.hostname", "not in a separate kernel namespace"]);
        refused(with(&["mount", "uts"], json!({"kernel.hostname": "x"})), &["conflicts", "hostname"]);
        verdict(with(&["mount", "uts"], json!({"kernel.domainname": "x"}))).unwrap();
        refused(with(&["mount"], json!({"kernel.shmmax": "1"})), &["ipc"]);
        verdict(with(&["mount", "ipc"], json!({"kernel.shmmax": "1", "fs.mqueue.msg_max": "5"}))).unwrap();
        refused(with(&["mount"], json!({"net.ipv4.ip_forward": "1"})), &["network"]);
        verdict(with(&["mount", "network"], json!({"net.ipv4.ip_forward": "1", "net/ipv4/conf/lo/rp_filter": "1"}))).unwrap();
        refused(with(&["mount", "uts", "ipc", "network"], json!({"vm.swappiness": "1"})), &["vm.swappiness", "not in a separate"]);
        refused(with(&["mount", "network"], json!({"net.ipv4...x": "1"})), &["not a sysctl name"]);
        refused(with(&["mount", "network"], json!({"net/../../etc": "1"})), &["not a sysctl name"]);
        // The host's network namespace, joined by path, is the host's.
        let mut p = json!({"linux": {"namespaces": [{"type": "mount"}, {"type": "network", "path": "/proc/self/ns/net"}], "sysctl": {"net.ipv4.ip_forward": "1"}}});
        refused(p.take(), &["host's network namespace"]);
        // user.* is refused even in a user namespace of the container's own,
        // as runc refuses everything outside its lists.
        let mut p = with(&["mount", "user"], json!({"user.max_user_namespaces": "0"}));
        p["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        p["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        refused(p, &["user.max_user_namespaces", "not in a separate kernel namespace"]);
    }

    #[test]
    fn cgroup_resources_as_runc_checks_them() {
        let mem = |limit: i64, swap: i64| {
            let linux: oci_spec::runtime::Linux = serde_json::from_value(json!({"resources": {"memory": {"limit": limit, "swap": swap}}})).unwrap();
            check_resources(&linux, true)
        };
        assert!(mem(100 << 20, 200 << 20).is_ok());
        assert!(mem(100 << 20, -1).is_ok());
        assert!(mem(-1, 0).is_ok());
        let low = mem(200 << 20, 100 << 20).unwrap_err().to_string();
        assert!(low.contains("linux.resources.memory.swap") && low.contains("at least memory"), "{low}");
        let alone = mem(-1, 100 << 20).unwrap_err().to_string();
        assert!(alone.contains("needs a memory limit"), "{alone}");
        let unified: oci_spec::runtime::Linux = serde_json::from_value(json!({"resources": {"unified": {"memory.high": "1000000"}}})).unwrap();
        assert!(check_resources(&unified, true).is_ok());
        let v1 = check_resources(&unified, false).unwrap_err().to_string();
        assert!(v1.contains("linux.resources.unified") && v1.contains("v1"), "{v1}");
    }

    #[test]
    fn ids_and_mappings() {
        refused(json!({"process": {"user": {"uid": 4294967295u32, "gid": 0}}}), &["process.user.uid", "4294967295", "0-2147483647"]);
        refused(json!({"process": {"user": {"uid": 0, "gid": 0, "additionalGids": [2147483648u32]}}}), &["additionalGids"]);
        refused(json!({"linux": {"uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}}), &["uidMappings", "not listed"]);
        let mut p = ns(&["mount", "user"]);
        refused(p.clone(), &["needs both uid and gid mappings"]);
        p["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        p["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        verdict(p.clone()).unwrap();
        p["process"] = json!({"cwd": "/", "args": ["/bin/true"], "user": {"uid": 70000, "gid": 0}});
        refused(p, &["process.user.uid", "70000", "not mapped"]);
        // Joined by path with the namespace's maps, as containerd's CRI
        // sends it (the init stage compares them with the namespace's).
        let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        let mut p = json!({"linux": {"namespaces": [{"type": "mount"}, {"type": "user", "path": "/proc/self/ns/user"}], "uidMappings": map}});
        refused(p.clone(), &["linux.gidMappings", "only one of"]);
        p["linux"]["gidMappings"] = map;
        verdict(p).unwrap();
    }

    #[test]
    fn idmapped_mounts() {
        let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        let with = |m: serde_json::Value| json!({"mounts": [m]});
        let dir = std::env::temp_dir().display().to_string();
        let good = json!({"destination": "/v", "type": "bind", "source": dir, "options": ["rbind"], "uidMappings": map, "gidMappings": map});
        verdict(with(good.clone())).unwrap();
        let mut m = good.clone();
        m["type"] = json!("tmpfs");
        m["options"] = json!([]);
        refused(with(m), &["mounts[0].uidMappings", "only supported for bind mounts"]);
        let mut m = good.clone();
        m.as_object_mut().unwrap().remove("uidMappings");
        refused(with(m), &["mounts[0].uidMappings", "both"]);
        let mut m = good.clone();
        m["gidMappings"][0]["size"] = json!(0);
        refused(with(m), &["mounts[0].gidMappings[0]", "size is 0"]);
        let plain = json!({"destination": "/v", "type": "bind", "source": dir, "options": ["rbind", "idmap"]});
        refused(with(plain), &["mounts[0].options", "idmap"]);
    }

    #[test]
    fn uts_and_namespaces() {
        refused(json!({"hostname": "h"}), &["hostname", "uts"]);
        refused(json!({"domainname": "d"}), &["domainname", "uts"]);
        let mut p = ns(&["mount", "uts"]);
        p["hostname"] = json!("h");
        verdict(p).unwrap();
        refused(ns(&["pid"]), &["no mount namespace"]);
        refused(ns(&["mount", "pid", "pid"]), &["listed twice"]);
        refused(json!({"linux": {"namespaces": [{"type": "mount", "path": "/proc/self/ns/mnt"}]}}), &["host's mount namespace"]);
        refused(json!({"linux": {"namespaces": [{"type": "mount"}, {"type": "network", "path": "/proc/self/ns/uts"}]}}), &["not a net namespace"]);
        refused(json!({"linux": {"namespaces": [{"type": "mount"}, {"type": "network", "path": "/etc/hostname"}]}}), &["not a namespace file"]);
        refused(json!({"linux": {"namespaces": [{"type": "mount"}, {"type": "network", "path": "/nonexistent"}]}}), &["linux.namespaces[1].path", "/nonexistent"]);
    }

    #[test]
    fn paths_mounts_and_the_rest() {
        refused(json!({"root": {"path": "/"}}), &["root.path", "host's root"]);
        refused(json!({"root": {"path": "/nonexistent-rootfs"}}), &["root.path"]);
        refused(json!({"process": {"cwd": "relative"}}), &["process.cwd"]);
        refused(json!({"process": {"args": []}}), &["process.args"]);
        refused(json!({"process": {"env": ["JUNK"]}}), &["process.env", "NAME=VALUE"]);
        refused(json!({"linux": {"mountLabel": "system_u:object_r:container_file_t:s0"}}), &["linux.mountLabel"]);
        refused(json!({"mounts": [{"destination": "/mnt", "type": "bind", "source": "/nonexistent-source", "options": ["rbind"]}]}), &["mounts[0].source", "/nonexistent-source"]);
        refused(json!({"mounts": [{"destination": "tmp", "type": "tmpfs", "source": "tmpfs"}]}), &["mounts[0].destination", "absolute"]);
        refused(json!({"mounts": [{"destination": "/proc", "type": "tmpfs", "source": "tmpfs"}]}), &["only a procfs"]);
        refused(json!({"mounts": [{"destination": "/proc/sys", "type": "tmpfs", "source": "tmpfs"}]}), &["inside /proc"]);
        verdict(json!({"mounts": [{"destination": "/proc/meminfo", "type": "bind", "source": "/etc/hostname", "options": ["bind"]}]})).unwrap();
        refused(json!({"mounts": [{"destination": "/", "type": "tmpfs", "source": "tmpfs"}]}), &["root of the container"]);
        refused(json!({"linux": {"maskedPaths": ["proc/kcore"]}}), &["linux.maskedPaths"]);
        refused(json!({"linux": {"rootfsPropagation": "sideways"}}), &["rootfsPropagation", "sideways"]);
        refused(json!({"linux": {"devices": [{"path": "/dev/x", "type": "c", "major": -1, "minor": 1}]}}), &["wildcards"]);
        refused(json!({"linux": {"resources": {"devices": [{"allow": true, "type": "c", "major": 1, "minor": 3, "access": ""}]}}}), &["access"]);
        refused(json!({"linux": {"intelRdt": {"closID": "x"}}}), &["intelRdt"]);
        refused(json!({"process": {"oomScoreAdj": 2000}}), &["oomScoreAdj"]);
        refused(json!({"process": {"rlimits": [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 5}]}}), &["RLIMIT_NOFILE", "soft"]);
        refused(json!({"hooks": {"prestart": [{"path": "relative/hook"}]}}), &["hooks.prestart[0].path"]);
        refused(json!({"linux": {"resources": {"hugepageLimits": [{"pageSize": "../../x", "limit": 1}]}}}), &["pageSize"]);
        refused(json!({"process": {"scheduler": {"policy": "SCHED_OTHER", "priority": 5}}}), &["scheduler.priority"]);
        refused(json!({"process": {"scheduler": {"policy": "SCHED_FIFO", "priority": 5, "nice": 40}}}), &["scheduler.nice", "40"]);
        if !Path::new("/sys/fs/selinux/enforce").exists() {
            refused(json!({"process": {"selinuxLabel": "system_u:system_r:container_t:s0"}}), &["process.selinuxLabel", "not enabled"]);
        }
        refused(json!({"process": {"ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 9}}}), &["ioPriority"]);
        refused(json!({"linux": {"timeOffsets": {"monotonic": {"secs": 1}}}}), &["timeOffsets", "not listed"]);
    }

    #[test]
    fn cleaning_stops_at_the_root() {
        assert_eq!(lexically_clean(Path::new("/../proc/sys")), Path::new("/proc/sys"));
        assert_eq!(lexically_clean(Path::new("/sys/fs/cgroup/../../../..")), Path::new("/"));
        assert_eq!(lexically_clean(Path::new("/a/./b/../c")), Path::new("/a/c"));
        assert_eq!(lexically_clean(Path::new("../../a")), Path::new("../../a"));
        assert_eq!(lexically_clean(Path::new("a/../../b")), Path::new("../b"));
        refused(json!({"mounts": [{"destination": "/../proc/sys", "type": "tmpfs", "source": "tmpfs"}]}), &["inside /proc"]);
        refused(json!({"mounts": [{"destination": "/sys/fs/cgroup/../../../..", "type": "tmpfs", "source": "tmpfs"}]}), &["root of the container"]);
    }

    #[test]
    fn dotted_and_slashed_sysctl_keys() {
        assert_eq!(sysctl_key("net/ipv4/conf/eno2.100/rp_filter"), "net.ipv4.conf.eno2/100.rp_filter");
        assert_eq!(sysctl_key("kernel.msgmax"), "kernel.msgmax");
        assert_eq!(sysctl_key("kernel/msgmax"), "kernel.msgmax");
        assert_eq!(sysctl_path("net/ipv4/conf/eno2.100/rp_filter"), "net/ipv4/conf/eno2.100/rp_filter");
        assert_eq!(sysctl_path("net.ipv4.conf.all.forwarding"), "net/ipv4/conf/all/forwarding");
    }
}
