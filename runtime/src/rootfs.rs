//! The container's filesystem view: propagation, the spec's mounts in order,
//! /dev, pivot_root, then masked and readonly paths.
//!
//! The order follows runc's prepareRootfs/finalizeRootfs; each step says why
//! it sits where it does.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};
use serde::{Deserialize, Serialize};

use crate::paths::{open_in_root, Create, ResolveError};
use crate::syscall::{Syscall, Target};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("mount {what} on {dest}: {errno}")]
    Mount { what: String, dest: PathBuf, errno: Errno },
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("{path}: {problem}")]
    Refused { path: PathBuf, problem: String },
    #[error("create device {path}: {errno}")]
    Device { path: PathBuf, errno: Errno },
    #[error("pivot_root to {rootfs}: {step}: {errno}")]
    Pivot { rootfs: PathBuf, step: &'static str, errno: Errno },
    #[error("mask {path}: {errno}")]
    Mask { path: PathBuf, errno: Errno },
    #[error("make {path} read-only: {errno}")]
    Readonly { path: PathBuf, errno: Errno },
}

/// How the container's `cgroup` mount is served, decided by the shim, which
/// knows the host layout and the container's cgroup.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CgroupMounts {
    /// cgroup v1: (hierarchy directory under the mount, host directory of the
    /// container's cgroup in that hierarchy).
    pub v1: Vec<(String, PathBuf)>,
    /// Unified hierarchy: mount a cgroup2 filesystem.
    pub unified: bool,
}

/// Parsed `mounts[].options`.
#[derive(Debug, PartialEq, Eq)]
pub struct MountOptions {
    pub flags: MsFlags,
    pub propagation: MsFlags,
    pub data: Vec<String>,
    /// Recursive attributes (`rro`, `rnosuid`, ...) as mount_setattr(2)
    /// MOUNT_ATTR_* bits to set and to clear on the whole mount tree.
    pub rec_set: u64,
    pub rec_clr: u64,
}

impl MountOptions {
    pub fn bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }
}

/// Every option word [`parse_options`] turns into a flag, a propagation or
/// a recursive attribute, as `features` reports them (the recursive ones
/// need mount_setattr(2), Linux 5.12).
pub const MOUNT_OPTIONS: &[&str] = &[
    "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec", "mand", "noatime", "nodev", "nodiratime", "noexec", "nomand",
    "norelatime", "nostrictatime", "nosuid", "private", "rbind", "relatime", "remount", "ro", "rprivate", "rshared", "rslave", "runbindable",
    "rw", "shared", "slave", "strictatime", "suid", "sync", "unbindable",
];

/// The option words that ask for an id-mapped mount (mount_setattr(2)
/// MOUNT_ATTR_IDMAP, with the mount's uidMappings; crate::idmap).
pub const IDMAP_MOUNT_OPTIONS: &[&str] = &["idmap", "ridmap"];

/// The recursive attributes among the option words (mount_setattr(2)).
pub const RECURSIVE_MOUNT_OPTIONS: &[&str] = &["rdev", "rexec", "rnodev", "rnoexec", "rnosuid", "rro", "rrw", "rsuid"];

/// Maps option words to mount flags as mount(8) and runc do; anything else is
/// filesystem data (`mode=755`, `size=64k`, `newinstance`).
pub fn parse_options(options: &[String]) -> MountOptions {
    let mut o = MountOptions { flags: MsFlags::empty(), propagation: MsFlags::empty(), data: Vec::new(), rec_set: 0, rec_clr: 0 };
    for opt in options {
        let (clear, flag) = match opt.as_str() {
            "defaults" => continue,
            "ro" => (false, MsFlags::MS_RDONLY),
            "rw" => (true, MsFlags::MS_RDONLY),
            "suid" => (true, MsFlags::MS_NOSUID),
            "nosuid" => (false, MsFlags::MS_NOSUID),
            "dev" => (true, MsFlags::MS_NODEV),
            "nodev" => (false, MsFlags::MS_NODEV),
            "exec" => (true, MsFlags::MS_NOEXEC),
            "noexec" => (false, MsFlags::MS_NOEXEC),
            "sync" => (false, MsFlags::MS_SYNCHRONOUS),
            "async" => (true, MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (false, MsFlags::MS_DIRSYNC),
            "remount" => (false, MsFlags::MS_REMOUNT),
            "mand" => (false, MsFlags::MS_MANDLOCK),
            "nomand" => (true, MsFlags::MS_MANDLOCK),
            "atime" => (true, MsFlags::MS_NOATIME),
            "noatime" => (false, MsFlags::MS_NOATIME),
            "diratime" => (true, MsFlags::MS_NODIRATIME),
            "nodiratime" => (false, MsFlags::MS_NODIRATIME),
            "relatime" => (false, MsFlags::MS_RELATIME),
            "norelatime" => (true, MsFlags::MS_RELATIME),
            "strictatime" => (false, MsFlags::MS_STRICTATIME),
            "nostrictatime" => (true, MsFlags::MS_STRICTATIME),
            "bind" => (false, MsFlags::MS_BIND),
            "rbind" => (false, MsFlags::MS_BIND | MsFlags::MS_REC),
            word @ ("rro" | "rrw" | "rnosuid" | "rsuid" | "rnodev" | "rdev" | "rnoexec" | "rexec") => {
                let (clear, attr) = match word {
                    "rro" => (false, MOUNT_ATTR_RDONLY),
                    "rrw" => (true, MOUNT_ATTR_RDONLY),
                    "rnosuid" => (false, MOUNT_ATTR_NOSUID),
                    "rsuid" => (true, MOUNT_ATTR_NOSUID),
                    "rnodev" => (false, MOUNT_ATTR_NODEV),
                    "rdev" => (true, MOUNT_ATTR_NODEV),
                    "rnoexec" => (false, MOUNT_ATTR_NOEXEC),
                    _ => (true, MOUNT_ATTR_NOEXEC),
                };
                if clear {
                    o.rec_clr |= attr;
                    o.rec_set &= !attr;
                } else {
                    o.rec_set |= attr;
                    o.rec_clr &= !attr;
                }
                continue;
            }
            // Id mapping comes from the mount's uidMappings and gidMappings
            // (runtime-spec 1.2; crate::idmap), not from flags.
            "idmap" | "ridmap" => continue,
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable" | "runbindable" => {
                o.propagation |= propagation(opt).unwrap_or(MsFlags::empty());
                continue;
            }
            _ => {
                o.data.push(opt.clone());
                continue;
            }
        };
        if clear {
            o.flags.remove(flag);
        } else {
            o.flags.insert(flag);
        }
    }
    o
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// A propagation word as mount flags.
pub fn propagation(word: &str) -> Option<MsFlags> {
    let (rec, base) = match word.strip_prefix('r') {
        Some(b) if b != "" && word != "rw" && word != "ro" => (MsFlags::MS_REC, b),
        _ => (MsFlags::empty(), word),
    };
    let f = match base {
        "private" => MsFlags::MS_PRIVATE,
        "shared" => MsFlags::MS_SHARED,
        "slave" => MsFlags::MS_SLAVE,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        _ => return None,
    };
    Some(f | rec)
}

/// Everything rootfs setup needs besides the spec.
pub struct RootfsContext<'a> {
    pub rootfs: &'a Path,
    pub cgroups: &'a CgroupMounts,
    /// Device nodes cannot be created in a user namespace: bind them instead.
    pub in_user_ns: bool,
    /// Whether the container has its own cgroup namespace.
    pub cgroup_ns: bool,
    /// For each spec mount, in order, the id-mapped tree stage 1 made of
    /// its source while still in the host's user namespace
    /// ([`crate::idmap`]); `None` for a mount without mappings.
    pub idmapped: &'a [Option<OwnedFd>],
    /// For each spec mount, in order, its bind source as the shim opened
    /// it for a container in a user namespace (launch.rs,
    /// open_mount_source); bound through /proc/self/fd.
    pub bind_sources: &'a [Option<OwnedFd>],
}

/// The container's mounts and /dev, up to (not including) pivot_root, which
/// [`pivot`] does once the hooks that need the host's paths have run. Runs in
/// the container's new mount namespace, as root of its user namespace.
pub fn prepare(sys: &dyn Syscall, spec: &Spec, ctx: &RootfsContext<'_>) -> Result<(), RootfsError> {
    let linux = spec.linux().as_ref();
    // Stop our mounts from propagating to the host before making any: the
    // new mount namespace starts as a copy whose mounts may be shared.
    let root_prop = linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .and_then(propagation)
        .unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    mount(sys, None, Target::Path(Path::new("/")), None, root_prop | MsFlags::MS_REC, None, "propagation", Path::new("/"))?;
    // pivot_root(2) fails with EINVAL when the new root's parent mount is
    // shared, which it is after an `rshared` above (CRI asks for that when
    // a volume has Bidirectional propagation). runc makes the mount that
    // holds the rootfs private, so that the bind below is private too, and
    // applies the propagation asked for to the new root after the pivot
    // ([`pivot`]).
    parent_mount_private(sys, ctx.rootfs)?;

    // pivot_root needs the new root to be a mount point.
    mount(
        sys,
        Some(ctx.rootfs),
        Target::Path(ctx.rootfs),
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
        "rootfs bind",
        ctx.rootfs,
    )?;

    let root = open(ctx.rootfs, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|errno| RootfsError::Mount { what: "open rootfs".into(), dest: ctx.rootfs.into(), errno })?;

    let mounts = spec.mounts().as_deref().unwrap_or_default();
    for (i, m) in mounts.iter().enumerate() {
        let prepared = Prepared {
            tree: ctx.idmapped.get(i).and_then(|t| t.as_ref()),
            source: ctx.bind_sources.get(i).and_then(|t| t.as_ref()),
        };
        mount_one(sys, &root, m, ctx, prepared)?;
    }

    // runc creates device nodes only when /dev is not bind-mounted from
    // elsewhere; a bound /dev already has them.
    let dev_is_bind = mounts
        .iter()
        .any(|m| m.destination() == Path::new("/dev") && parse_options(m.options().as_deref().unwrap_or_default()).bind());
    if !dev_is_bind {
        let devices = linux.and_then(|l| l.devices().clone()).unwrap_or_default();
        setup_dev(sys, &root, &devices, ctx.in_user_ns)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn mount(
    sys: &dyn Syscall,
    source: Option<&Path>,
    target: Target<'_>,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
    what: &str,
    dest: &Path,
) -> Result<(), RootfsError> {
    sys.mount(source, target, fstype, flags, data)
        .map_err(|errno| RootfsError::Mount { what: what.to_string(), dest: dest.to_path_buf(), errno })
}

/// What was opened for one bind mount before stage 2 lost the host's
/// credentials.
#[derive(Default, Clone, Copy)]
struct Prepared<'a> {
    /// An id-mapped detached tree to attach instead of binding.
    tree: Option<&'a OwnedFd>,
    /// The source, opened by the shim.
    source: Option<&'a OwnedFd>,
}

fn mount_one(sys: &dyn Syscall, root: &OwnedFd, m: &Mount, ctx: &RootfsContext<'_>, prepared: Prepared<'_>) -> Result<(), RootfsError> {
    let dest = m.destination();
    let typ = m.typ().as_deref().unwrap_or("");
    let opts = parse_options(m.options().as_deref().unwrap_or_default());
    let data = (!opts.data.is_empty()).then(|| opts.data.join(","));

    // Only a real procfs may cover /proc: anything else there could hide
    // the masked paths and fake /proc/self (runc's checkProcMount).
    if dest == Path::new("/proc") && typ != "proc" {
        return Err(RootfsError::Refused { path: dest.clone(), problem: format!("only a procfs may be mounted on /proc, not {typ:?}") });
    }

    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroup(sys, root, dest, &opts, ctx);
    }

    let source_fd_path = prepared.source.map(fd_path);
    let source = source_fd_path.as_deref().or(m.source().as_deref());
    let source_is_dir = match prepared.tree.or(prepared.source) {
        Some(fd) => nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR),
        None => source.is_some_and(|s| s.is_dir()),
    };
    let create = if opts.bind() && source.is_some() && !source_is_dir { Create::File } else { Create::Dir };
    let target = open_in_root(root.as_fd(), dest, create)?;

    if opts.bind() {
        let bind = opts.flags & (MsFlags::MS_BIND | MsFlags::MS_REC);
        match prepared.tree {
            Some(tree) => sys
                .attach_tree(tree.as_fd(), target.as_fd())
                .map_err(|errno| RootfsError::Mount { what: "id-mapped bind".into(), dest: dest.clone(), errno })?,
            None => mount(sys, source, Target::Fd(target.as_fd()), None, bind, None, "bind", dest)?,
        }
        // A bind mount ignores every other flag on creation; they only take
        // effect on a remount of the new mount point.
        let rest = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !rest.is_empty() {
            let target = open_in_root(root.as_fd(), dest, Create::Nothing)?;
            mount(sys, None, Target::Fd(target.as_fd()), None, rest | MsFlags::MS_BIND | MsFlags::MS_REMOUNT, None, "bind remount", dest)?;
        }
    } else {
        // A tmpfs with no mode= takes the mode of the directory it covers,
        // as under runc, not tmpfs's default 1777.
        let keep_mode = (typ == "tmpfs" && !opts.data.iter().any(|d| d.starts_with("mode=")))
            .then(|| nix::sys::stat::fstat(&target).ok().map(|st| st.st_mode & 0o7777))
            .flatten();
        let r = sys.mount(source.or(Some(Path::new(typ))), Target::Fd(target.as_fd()), Some(typ), opts.flags, data.as_deref());
        match r {
            // Without a network namespace of its own, the kernel refuses a
            // new sysfs; runc falls back to a recursive bind of the host's.
            Err(Errno::EPERM) if typ == "sysfs" => {
                mount(sys, Some(Path::new("/sys")), Target::Fd(target.as_fd()), None, MsFlags::MS_BIND | MsFlags::MS_REC, None, "sysfs bind", dest)?;
                let target = open_in_root(root.as_fd(), dest, Create::Nothing)?;
                let rest = opts.flags | MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
                mount(sys, None, Target::Fd(target.as_fd()), None, rest, None, "sysfs bind remount", dest)?;
            }
            r => r.map_err(|errno| RootfsError::Mount { what: typ.to_string(), dest: dest.clone(), errno })?,
        }
        if let Some(mode) = keep_mode {
            let mounted = open_in_root(root.as_fd(), dest, Create::Nothing)?;
            sys.chmod(Target::Fd(mounted.as_fd()), mode).map_err(|errno| RootfsError::Mount { what: "tmpfs mode".into(), dest: dest.clone(), errno })?;
        }
    }
    if !opts.propagation.is_empty() {
        let target = open_in_root(root.as_fd(), dest, Create::Nothing)?;
        mount(sys, None, Target::Fd(target.as_fd()), None, opts.propagation, None, "propagation", dest)?;
    }
    if opts.rec_set | opts.rec_clr != 0 {
        // `rro` and friends apply to every mount below the destination,
        // which only mount_setattr(2) with AT_RECURSIVE can do (5.12+).
        let target = open_in_root(root.as_fd(), dest, Create::Nothing)?;
        sys.mount_setattr(target.as_fd(), opts.rec_set, opts.rec_clr)
            .map_err(|errno| RootfsError::Mount { what: "recursive attributes (needs Linux 5.12)".into(), dest: dest.clone(), errno })?;
    }
    Ok(())
}

/// The `cgroup` mount: a fresh cgroup2 on the unified layout, otherwise the
/// v1 layout runc builds: a tmpfs with the container's own cgroup directory
/// of every hierarchy bound under it.
fn mount_cgroup(sys: &dyn Syscall, root: &OwnedFd, dest: &Path, opts: &MountOptions, ctx: &RootfsContext<'_>) -> Result<(), RootfsError> {
    let target = open_in_root(root.as_fd(), dest, Create::Dir)?;
    if ctx.cgroups.unified {
        return mount(sys, Some(Path::new("cgroup2")), Target::Fd(target.as_fd()), Some("cgroup2"), opts.flags, None, "cgroup2", dest);
    }
    let tmpfs_flags = opts.flags & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
    mount(sys, Some(Path::new("tmpfs")), Target::Fd(target.as_fd()), Some("tmpfs"), tmpfs_flags, Some("mode=755"), "cgroup tmpfs", dest)?;
    for (name, host) in &ctx.cgroups.v1 {
        let sub = dest.join(name);
        let t = open_in_root(root.as_fd(), &sub, Create::Dir)?;
        if ctx.cgroup_ns {
            // A fresh mount of the hierarchy, in the container's cgroup
            // namespace: named by its controllers (`cpu,cpuacct`) or its
            // name (`name=systemd`), not by its directory.
            let option = v1_hierarchy(host).unwrap_or_else(|| name.clone());
            mount(sys, Some(Path::new("cgroup")), Target::Fd(t.as_fd()), Some("cgroup"), opts.flags, Some(&option), "cgroup", &sub)?;
        } else {
            mount(sys, Some(host), Target::Fd(t.as_fd()), None, MsFlags::MS_BIND | MsFlags::MS_REC, None, "cgroup bind", &sub)?;
            let t = open_in_root(root.as_fd(), &sub, Create::Nothing)?;
            let flags = opts.flags | MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
            mount(sys, None, Target::Fd(t.as_fd()), None, flags, None, "cgroup bind remount", &sub)?;
        }
    }
    if opts.flags.contains(MsFlags::MS_RDONLY) {
        let target = open_in_root(root.as_fd(), dest, Create::Nothing)?;
        mount(sys, None, Target::Fd(target.as_fd()), None, tmpfs_flags | MsFlags::MS_RDONLY | MsFlags::MS_REMOUNT, Some("mode=755"), "cgroup tmpfs ro", dest)?;
    }
    Ok(())
}

/// The v1 controllers, or `name=...`, of the hierarchy holding `dir`, from
/// the super options of its mount in /proc/self/mountinfo (which, in our
/// new mount namespace before pivot_root, still shows the host's).
fn v1_hierarchy(dir: &Path) -> Option<String> {
    const CONTROLLERS: [&str; 14] =
        ["cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls", "net_prio", "blkio", "perf_event", "hugetlb", "pids", "rdma", "misc"];
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let (_, options) = info
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut r = right.split_whitespace();
            (r.next()? == "cgroup").then_some(())?;
            let options = r.nth(1)?;
            let point = Path::new(left.split_whitespace().nth(4)?);
            dir.starts_with(point).then(|| (point.components().count(), options))
        })
        .max_by_key(|(depth, _)| *depth)?;
    let wanted: Vec<&str> = options.split(',').filter(|o| o.starts_with("name=") || CONTROLLERS.contains(o)).collect();
    (!wanted.is_empty()).then(|| wanted.join(","))
}

/// The devices every container gets, as in runc's specconv.AllowedDevices.
fn default_devices() -> Vec<(&'static str, u64, u64)> {
    vec![("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]
}

fn setup_dev(sys: &dyn Syscall, root: &OwnedFd, spec_devices: &[LinuxDevice], in_user_ns: bool) -> Result<(), RootfsError> {
    let dev = open_in_root(root.as_fd(), Path::new("/dev"), Create::Dir)?;
    let mut nodes: Vec<(PathBuf, SFlag, u32, u64, u64)> = spec_devices
        .iter()
        .map(|d| {
            let kind = match d.typ() {
                LinuxDeviceType::B => SFlag::S_IFBLK,
                LinuxDeviceType::P => SFlag::S_IFIFO,
                _ => SFlag::S_IFCHR,
            };
            (d.path().clone(), kind, d.file_mode().unwrap_or(0o666), d.major() as u64, d.minor() as u64)
        })
        .collect();
    for (name, major, minor) in default_devices() {
        let path = Path::new("/dev").join(name);
        if !nodes.iter().any(|n| n.0 == path) {
            nodes.push((path, SFlag::S_IFCHR, 0o666, major, minor));
        }
    }
    for (path, kind, mode, major, minor) in nodes {
        let parent = path.parent().unwrap_or(Path::new("/dev"));
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let dir = open_in_root(root.as_fd(), parent, Create::Dir)?;
        if in_user_ns {
            // mknod(2) needs CAP_MKNOD in the initial user namespace: bind
            // the host's node over an empty file instead.
            let t = open_in_root(root.as_fd(), &path, Create::File)?;
            mount(sys, Some(&path), Target::Fd(t.as_fd()), None, MsFlags::MS_BIND, None, "device bind", &path)?;
            continue;
        }
        let dev = nix::sys::stat::makedev(major, minor);
        match sys.mknodat(dir.as_fd(), &name, kind, Mode::from_bits_truncate(mode), dev) {
            Ok(()) => {}
            // An image may ship the node already; runc leaves it alone too.
            Err(Errno::EEXIST) => {}
            Err(errno) => return Err(RootfsError::Device { path, errno }),
        }
    }
    let links = [("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"), ("/proc/self/fd/1", "stdout"), ("/proc/self/fd/2", "stderr")];
    let kcore = Path::new("/proc/kcore").exists();
    for (target, name) in links.iter().copied().chain(kcore.then_some(("/proc/kcore", "core"))) {
        match sys.symlinkat(target, dev.as_fd(), name) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(errno) => return Err(RootfsError::Device { path: Path::new("/dev").join(name), errno }),
        }
    }
    // /dev/ptmx must be the devpts instance's own ptmx, so a pty opened in
    // the container belongs to the container's devpts.
    let _ = nix::unistd::unlinkat(dev.as_fd(), "ptmx", nix::unistd::UnlinkatFlags::NoRemoveDir);
    match sys.symlinkat("pts/ptmx", dev.as_fd(), "ptmx") {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(errno) => Err(RootfsError::Device { path: "/dev/ptmx".into(), errno }),
    }
}

/// Makes the mount that holds `path` private (not recursively): runc's
/// rootfsParentMountPrivate. MS_PRIVATE on a directory that is not a mount
/// point fails with EINVAL, so the walk goes up until one takes it.
fn parent_mount_private(sys: &dyn Syscall, path: &Path) -> Result<(), RootfsError> {
    let mut at = path.to_path_buf();
    loop {
        match sys.mount(None, Target::Path(&at), None, MsFlags::MS_PRIVATE, None) {
            Ok(()) => return Ok(()),
            Err(Errno::EINVAL) if at.pop() => {}
            Err(errno) => return Err(RootfsError::Mount { what: "make the rootfs's parent mount private".into(), dest: at, errno }),
        }
    }
}

/// After pivot_root: `linux.rootfsPropagation` for the new root, when it
/// asks for more than private (shared or slave). The rootfs was made
/// private for the pivot ([`prepare`]); a mount in the container must
/// propagate as asked (runc 1.2 does this too; 1.1 left it private).
pub fn root_propagation(sys: &dyn Syscall, propagation_word: Option<&str>) -> Result<(), RootfsError> {
    let Some(flags) = propagation_word.and_then(propagation) else { return Ok(()) };
    if flags.contains(MsFlags::MS_PRIVATE) {
        return Ok(());
    }
    mount(sys, None, Target::Path(Path::new("/")), None, flags, None, "root propagation", Path::new("/"))
}

/// pivot_root(".", ".") as runc does it: no put_old directory is needed in
/// the image, and the old root is detached before anything else runs.
pub fn pivot(sys: &dyn Syscall, rootfs: &Path) -> Result<(), RootfsError> {
    let err = |step| move |errno| RootfsError::Pivot { rootfs: rootfs.to_path_buf(), step, errno };
    let old = open("/", OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(err("open old root"))?;
    let new = open(rootfs, OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(err("open new root"))?;
    sys.fchdir(new.as_fd()).map_err(err("chdir to new root"))?;
    sys.pivot_root(Path::new("."), Path::new(".")).map_err(err("pivot_root"))?;
    sys.fchdir(old.as_fd()).map_err(err("chdir to old root"))?;
    // Make the old root a slave first, so that unmounting it cannot
    // propagate an unmount to the host.
    sys.mount(None, Target::Path(Path::new(".")), None, MsFlags::MS_SLAVE | MsFlags::MS_REC, None)
        .map_err(err("make old root slave"))?;
    sys.umount2(Path::new("."), MntFlags::MNT_DETACH).map_err(err("detach old root"))?;
    sys.chdir(Path::new("/")).map_err(err("chdir /"))
}

/// Flags of the mount at `fd` that a bind remount must keep: in a user
/// namespace the kernel refuses to clear a locked nosuid, nodev or noexec.
fn locked_flags(fd: &OwnedFd) -> MsFlags {
    use nix::sys::statvfs::FsFlags;
    let Ok(st) = nix::sys::statvfs::fstatvfs(fd) else { return MsFlags::empty() };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs) {
            out |= ms;
        }
    }
    out
}

/// Opens `path`, after pivot_root, resolved inside the new root: a symlink
/// in the image (or one swapped in by a process sharing a volume) cannot
/// send a masked or readonly path's mount elsewhere, nor hand us something
/// else as /dev/null (CVE-2025-31133). None if it does not exist.
fn open_after_pivot(path: &Path) -> Result<Option<OwnedFd>, RootfsError> {
    let root = open("/", OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|errno| RootfsError::Mount { what: "open the root".into(), dest: "/".into(), errno })?;
    match open_in_root(root.as_fd(), path, Create::Nothing) {
        Ok(fd) => Ok(Some(fd)),
        Err(ResolveError { errno: Errno::ENOENT, .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Masked and readonly paths are mounted through /proc/self/fd (see
/// [`open_after_pivot`]): after pivot_root that is the container's procfs.
fn need_proc() -> Result<(), RootfsError> {
    if Path::new("/proc/self/fd").is_dir() {
        return Ok(());
    }
    Err(RootfsError::Refused { path: "/proc".into(), problem: "masked and readonly paths need a procfs mounted at /proc in the container".into() })
}

/// The path mount(2) resolves to the file an fd holds.
fn fd_path(fd: &OwnedFd) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// `linux.readonlyPaths`, after pivot_root.
pub fn readonly_paths(sys: &dyn Syscall, paths: &[String]) -> Result<(), RootfsError> {
    if !paths.is_empty() {
        need_proc()?;
    }
    for p in paths {
        let path = Path::new(p);
        let Some(fd) = open_after_pivot(path)? else { continue };
        sys.mount(Some(&fd_path(&fd)), Target::Fd(fd.as_fd()), None, MsFlags::MS_BIND | MsFlags::MS_REC, None)
            .map_err(|errno| RootfsError::Readonly { path: path.into(), errno })?;
        // The bind is a new mount on top: remount that one.
        let Some(bound) = open_after_pivot(path)? else { continue };
        let flags = locked_flags(&bound) | MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC;
        sys.mount(None, Target::Fd(bound.as_fd()), None, flags, None).map_err(|errno| RootfsError::Readonly { path: path.into(), errno })?;
    }
    Ok(())
}

/// `linux.maskedPaths`, after pivot_root: /dev/null over files, an empty
/// read-only tmpfs over directories.
pub fn mask_paths(sys: &dyn Syscall, paths: &[String]) -> Result<(), RootfsError> {
    if paths.is_empty() {
        return Ok(());
    }
    need_proc()?;
    // Never bind something else over a secret: /dev/null must be the real
    // character device 1:3, not a file or symlink planted by the image. It
    // is checked and bound through one fd, so it cannot be swapped between.
    let null_path = Path::new("/dev/null");
    let not_null = || RootfsError::Refused { path: null_path.into(), problem: "is not the null device; refusing to mask paths with it".into() };
    let null = open_after_pivot(null_path)?.ok_or_else(not_null)?;
    let st = nix::sys::stat::fstat(&null).map_err(|errno| RootfsError::Mask { path: null_path.into(), errno })?;
    let is_null = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR
        && nix::sys::stat::major(st.st_rdev) == 1
        && nix::sys::stat::minor(st.st_rdev) == 3;
    if !is_null {
        return Err(not_null());
    }
    for p in paths {
        let path = Path::new(p);
        let Some(fd) = open_after_pivot(path)? else { continue };
        let is_dir = nix::sys::stat::fstat(&fd).map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR).unwrap_or(false);
        let r = if is_dir {
            sys.mount(Some(Path::new("tmpfs")), Target::Fd(fd.as_fd()), Some("tmpfs"), MsFlags::MS_RDONLY, None)
        } else {
            sys.mount(Some(&fd_path(&null)), Target::Fd(fd.as_fd()), None, MsFlags::MS_BIND, None)
        };
        r.map_err(|errno| RootfsError::Mask { path: path.into(), errno })?;
    }
    Ok(())
}

/// `root.readonly`: the last mount change, after masked and readonly paths
/// (which need mount points, not writes, but sysctl writes come earlier).
pub fn readonly_root(sys: &dyn Syscall) -> Result<(), RootfsError> {
    let root = Path::new("/");
    let fd = open(root, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|errno| RootfsError::Readonly { path: root.into(), errno })?;
    let flags = locked_flags(&fd) | MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    sys.mount(None, Target::Path(root), None, flags, None).map_err(|errno| RootfsError::Readonly { path: root.into(), errno })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::Recorder;
    use oci_spec::runtime::{MountBuilder, SpecBuilder};

    fn opts(words: &[&str]) -> MountOptions {
        parse_options(&words.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o = opts(&["nosuid", "noexec", "nodev", "mode=755", "size=65536k", "rslave", "ro"]);
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV | MsFlags::MS_RDONLY);
        assert_eq!(o.propagation, MsFlags::MS_SLAVE | MsFlags::MS_REC);
        assert_eq!(o.data, vec!["mode=755", "size=65536k"]);
        let o = opts(&["rbind", "ro", "rw"]);
        assert_eq!(o.flags, MsFlags::MS_BIND | MsFlags::MS_REC);
        let o = opts(&["rbind", "rro", "rnosuid", "rexec"]);
        assert_eq!((o.rec_set, o.rec_clr), (MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, MOUNT_ATTR_NOEXEC));
        assert!(o.data.is_empty(), "{:?}", o.data);
    }

    #[test]
    fn every_listed_option_is_understood() {
        for word in MOUNT_OPTIONS.iter().chain(RECURSIVE_MOUNT_OPTIONS) {
            assert!(opts(&[word]).data.is_empty(), "{word} would be passed as filesystem data");
        }
    }

    #[test]
    fn propagation_words() {
        assert_eq!(propagation("rprivate"), Some(MsFlags::MS_PRIVATE | MsFlags::MS_REC));
        assert_eq!(propagation("shared"), Some(MsFlags::MS_SHARED));
        assert_eq!(propagation("rw"), None);
    }

    #[test]
    fn mount_sequence_binds_then_remounts_and_resolves_inside_root() {
        let rootfs = tempfile::tempdir().unwrap();
        let src = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", rootfs.path().join("escape")).unwrap();
        let spec = SpecBuilder::default()
            .mounts(vec![
                MountBuilder::default().destination("/proc").typ("proc").source("proc").build().unwrap(),
                MountBuilder::default()
                    .destination("/escape/data")
                    .typ("bind")
                    .source(src.path())
                    .options(vec!["rbind".into(), "ro".into(), "nosuid".into()])
                    .build()
                    .unwrap(),
            ])
            .build()
            .unwrap();
        let rec = Recorder::default();
        let ctx = RootfsContext { rootfs: rootfs.path(), cgroups: &CgroupMounts::default(), in_user_ns: false, cgroup_ns: false, idmapped: &[], bind_sources: &[] };
        // pivot_root itself opens real directories, which the recorder can
        // not fake; everything before it is what this test checks.
        prepare(&rec, &spec, &ctx).unwrap();
        pivot(&rec, rootfs.path()).unwrap();
        let calls = rec.calls();
        let r = rootfs.path().display().to_string();
        assert!(calls[0].starts_with("mount - / - MsFlags(MS_REC | MS_SLAVE)"), "{calls:#?}");
        // The mount holding the rootfs goes private before the bind, so
        // that pivot_root works under rshared too.
        assert!(calls[1].starts_with(&format!("mount - {r} - MsFlags(MS_PRIVATE)")), "{calls:#?}");
        assert!(calls[2].starts_with(&format!("mount {r} {r} - MsFlags(MS_BIND | MS_REC)")), "{calls:#?}");
        assert!(calls[3].starts_with(&format!("mount proc {r}/proc proc")), "{calls:#?}");
        // The symlink to /etc resolved inside the rootfs.
        assert!(calls[4].starts_with(&format!("mount {} {r}/etc/data - MsFlags(MS_BIND | MS_REC)", src.path().display())), "{calls:#?}");
        assert!(calls[5].contains("MS_RDONLY") && calls[5].contains("MS_REMOUNT") && calls[5].contains("MS_NOSUID"), "{calls:#?}");
        assert!(!Path::new("/etc/data").exists());
        assert!(calls.iter().any(|c| c == &format!("mknod {r}/dev/null SFlag(S_IFCHR) 666 259")), "{calls:#?}");
        assert!(calls.iter().any(|c| c == &format!("symlink {r}/dev/ptmx -> pts/ptmx")), "{calls:#?}");
        assert!(calls.iter().any(|c| c.starts_with("pivot_root . .")), "{calls:#?}");
    }

    /// A bind whose source stage 1 id-mapped is attached, not bound; one
    /// whose source the shim opened is bound from /proc/self/fd, with a
    /// file mount point for a file. Both take their flags on a remount.
    #[test]
    fn prepared_sources_replace_the_bind_source() {
        let rootfs = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let bind = |dest: &str, src: &Path| {
            MountBuilder::default().destination(dest).typ("bind").source(src).options(vec!["rbind".into(), "ro".into()]).build().unwrap()
        };
        let spec = SpecBuilder::default().mounts(vec![bind("/mapped", dir.path()), bind("/file", &file)]).build().unwrap();
        let o_path = |p: &Path| open(p, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).unwrap();
        let idmapped = [Some(o_path(dir.path())), None];
        let sources = [None, Some(o_path(&file))];
        let rec = Recorder::default();
        let ctx = RootfsContext { rootfs: rootfs.path(), cgroups: &CgroupMounts::default(), in_user_ns: true, cgroup_ns: false, idmapped: &idmapped, bind_sources: &sources };
        prepare(&rec, &spec, &ctx).unwrap();
        let calls = rec.calls();
        let r = rootfs.path().display().to_string();
        let at = |prefix: &str| calls.iter().position(|c| c.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix:?} in {calls:#?}"));
        let attach = at(&format!("attach id-mapped tree on {r}/mapped"));
        assert!(calls[attach + 1].contains("MS_REMOUNT") && calls[attach + 1].contains("MS_RDONLY"), "{calls:#?}");
        let fd = std::os::fd::AsRawFd::as_raw_fd(sources[1].as_ref().unwrap());
        let bound = at(&format!("mount /proc/self/fd/{fd} {r}/file - MsFlags(MS_BIND | MS_REC)"));
        assert!(calls[bound + 1].contains("MS_REMOUNT"), "{calls:#?}");
        assert!(rootfs.path().join("file").is_file(), "the mount point of a file source is a file");
        assert!(!calls.iter().any(|c| c.contains(&format!("mount {}", dir.path().display()))), "{calls:#?}");
    }

    #[test]
    fn refuses_non_proc_on_proc() {
        let rootfs = tempfile::tempdir().unwrap();
        let spec = SpecBuilder::default()
            .mounts(vec![MountBuilder::default().destination("/proc").typ("tmpfs").source("tmpfs").build().unwrap()])
            .build()
            .unwrap();
        let ctx = RootfsContext { rootfs: rootfs.path(), cgroups: &CgroupMounts::default(), in_user_ns: false, cgroup_ns: false, idmapped: &[], bind_sources: &[] };
        let err = prepare(&Recorder::default(), &spec, &ctx).unwrap_err();
        assert!(err.to_string().contains("only a procfs"), "{err}");
    }
}
