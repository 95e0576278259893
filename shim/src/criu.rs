//! Checkpoint and restore through CRIU, driven on its command line as
//! runc drives it through its RPC (libcontainer's Checkpoint and Restore):
//! the same dump and restore options, the container's external mounts and
//! stdio described to CRIU, so that a restore lands in our own layout.
//!
//! CRIU cannot run everywhere: this machine's kernel fails `criu check`
//! (its vDSO). Checkpoint and a Create from a checkpoint then fail with a
//! sentence that quotes CRIU's own error.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CriuError {
    #[error("checkpoint and restore need CRIU, and no criu is on the PATH (install the criu package)")]
    NotInstalled,
    #[error("CRIU cannot work on this host: `criu check` failed: {0}")]
    CheckFailed(String),
    #[error("run {what}: {source}")]
    Run { what: String, source: std::io::Error },
    #[error("criu {action} failed (exit {code:?}); its log {log} ends with: {tail}")]
    Failed { action: &'static str, code: Option<i32>, log: PathBuf, tail: String },
    #[error("{0}")]
    Invalid(String),
}

/// The criu binary, from the PATH or where Debian puts it.
pub fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin")]).map(|d| d.join("criu")).find(|p| p.is_file())
}

/// The last lines of `text` that say something, for an error message.
pub fn tail(text: &str, lines: usize) -> String {
    let kept: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    kept[kept.len().saturating_sub(lines)..].join(" | ")
}

/// Whether CRIU can work here: installed, and `criu check` passes.
///
/// `criu check` runs as the shim's other helpers do (spawn::helper, waited
/// for through `wait`): std's Command waits with waitpid(pid), and the
/// shim's reaper, a subreaper's waitpid(-1), took the child first, so
/// every checkpoint failed with ECHILD.
pub fn preflight(wait: runtime::hooks::Wait<'_>) -> Result<PathBuf, CriuError> {
    use std::io::{Read, Seek};
    use std::os::fd::{AsRawFd, FromRawFd};
    let criu = binary().ok_or(CriuError::NotInstalled)?;
    let what = || format!("{} check", criu.display());
    // Its output, into memory: no file to leave behind.
    // SAFETY: memfd_create with a NUL-terminated name; the fd is ours.
    let fd = unsafe { libc::memfd_create(c"criu-check".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(CriuError::Run { what: what(), source: std::io::Error::last_os_error() });
    }
    // SAFETY: a new fd that nothing else owns.
    let mut out = unsafe { std::fs::File::from_raw_fd(fd) };
    let null = std::fs::File::open("/dev/null").map_err(|source| CriuError::Run { what: what(), source })?;
    let argv = [std::ffi::OsStr::new("criu"), std::ffi::OsStr::new("check")];
    let spawned = std::time::Instant::now();
    let pid = runtime::spawn::helper(&criu, &argv, &[], &[null.as_raw_fd(), out.as_raw_fd(), out.as_raw_fd()]).map_err(|source| CriuError::Run { what: what(), source })?;
    let code = wait(pid, spawned, Some(std::time::Duration::from_secs(60)));
    let mut text = String::new();
    let _ = out.rewind();
    let _ = out.read_to_string(&mut text);
    // criu 3.17 exits 0 even when its kernel checks fail: its error lines
    // say so.
    if code != Some(0) || text.lines().any(|l| l.starts_with("Error ")) {
        let text = if text.trim().is_empty() { format!("exit {code:?}") } else { text };
        return Err(CriuError::CheckFailed(tail(&text, 3)));
    }
    Ok(criu)
}

/// The end of a CRIU log file, for an error message.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("Error") || l.contains("error")).collect();
    if errors.is_empty() {
        tail(&text, 5)
    } else {
        errors[errors.len().saturating_sub(3)..].join(" | ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails() {
        assert_eq!(tail("a\n\nb\nc\n", 2), "b | c");
        assert_eq!(tail("", 2), "");
    }
}

/// What a checkpoint asks for: containerd.runc.v1.CheckpointOptions,
/// which containerd (2.x's ctr and CRI alike) sends only to runc shims by
/// name; with none, the container keeps running, as runc's shim defaults.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DumpOptions {
    pub exit: bool,
    pub open_tcp: bool,
    pub external_unix_sockets: bool,
    pub terminal: bool,
    pub file_locks: bool,
    pub work_path: Option<PathBuf>,
    /// none, props, soft, full, strict, ignore (`--manage-cgroups=`).
    pub cgroups_mode: Option<String>,
    /// The container's terminal, `tty[rdev:dev]` of its pty slave, dumped
    /// as external: its master is the shim's, outside the dumped tree. A
    /// restore hands CRIU a new pty's slave for it (`--inherit-fd`), the
    /// CLI's counterpart of runc's RPC orphan-pts-master.
    #[serde(default)]
    pub external_tty: Option<String>,
}

/// The type name of the options, with or without the type URL prefix.
pub const OPTIONS_TYPE: &str = "containerd.runc.v1.CheckpointOptions";

impl DumpOptions {
    pub fn from_any(any: Option<&containerd_shim_protos::protobuf::well_known_types::any::Any>) -> Result<DumpOptions, CriuError> {
        use containerd_shim_protos::protobuf::Message;
        let Some(any) = any.filter(|a| !a.type_url.is_empty()) else { return Ok(DumpOptions::default()) };
        let name = any.type_url.rsplit('/').next().unwrap_or(&any.type_url);
        if name != OPTIONS_TYPE {
            log::debug!("checkpoint options of type {} ignored", any.type_url);
            return Ok(DumpOptions::default());
        }
        let o = containerd_shim_protos::shim::oci::CheckpointOptions::parse_from_bytes(&any.value)
            .map_err(|e| CriuError::Invalid(format!("decode {}: {e}", any.type_url)))?;
        if let Some(ns) = o.empty_namespaces.iter().find(|n| n.as_str() != "network") {
            return Err(CriuError::Invalid(format!("empty_namespaces {ns:?}: only network can be left empty")));
        }
        let mode = Some(o.cgroups_mode.clone()).filter(|m| !m.is_empty());
        if let Some(m) = &mode {
            if !["none", "props", "soft", "full", "strict", "ignore"].contains(&m.as_str()) {
                return Err(CriuError::Invalid(format!("cgroups_mode {m:?}: use none, props, soft, full, strict or ignore")));
            }
        }
        Ok(DumpOptions {
            exit: o.exit,
            open_tcp: o.open_tcp,
            external_unix_sockets: o.external_unix_sockets,
            terminal: o.terminal,
            file_locks: o.file_locks,
            work_path: Some(PathBuf::from(&o.work_path)).filter(|p| !p.as_os_str().is_empty()),
            cgroups_mode: mode,
            external_tty: None,
        })
    }

    /// The flags a restore must replay (CRIU refuses an image with an
    /// established TCP connection unless told, and would silently drop
    /// file locks).
    fn replayed(&self) -> Vec<String> {
        let mut a = Vec::new();
        if self.open_tcp {
            a.push("--tcp-established".into());
        }
        if self.external_unix_sockets {
            a.push("--ext-unix-sk".into());
        }
        // An external terminal is the container's own session's: the
        // restored init must lead its session and take the new pty as its
        // controlling terminal, which --shell-job (inherit criu's session)
        // would prevent.
        if self.terminal && self.external_tty.is_none() {
            a.push("--shell-job".into());
        }
        if self.file_locks {
            a.push("--file-locks".into());
        }
        a
    }
}

/// What the container looks like to CRIU: its mounts that come from
/// outside (described as external, so that a restore takes them from the
/// host again), its namespaces joined by path, its freezer.
#[derive(Debug, Default, Clone)]
pub struct Layout {
    /// (destination in the container, host source) of every bind mount,
    /// the v1 cgroup hierarchies included.
    pub binds: Vec<(String, String)>,
    /// Masked files: /dev/null bound over them (found in the running
    /// container, at a checkpoint).
    pub masked_files: Vec<String>,
    /// Whether the spec masks any path: a restore, which has no running
    /// container to look into, then maps /dev/null for them (runc does).
    pub masks: bool,
    /// Device nodes of linux.devices.
    pub devices: Vec<String>,
    /// (kind "net" or "pid", the inode of the namespace joined by path, the
    /// path), which CRIU leaves alone and a restore joins again.
    pub external_ns: Vec<(&'static str, u64, PathBuf)>,
    /// The cgroup the container's processes are in, as a path below the
    /// hierarchies' roots, and the freezer directory of it.
    pub cgroup: String,
    pub freezer: Option<PathBuf>,
}

fn ns_key(kind: &str) -> String {
    // runc's criuNsToKey: extRootNetNS, extRootPidNS.
    let mut k = kind.to_string();
    k[..1].make_ascii_uppercase();
    format!("extRoot{k}NS")
}

/// The `criu dump` command line of a checkpoint of `pid` into `images`.
pub fn dump_args(pid: i32, images: &Path, work: &Path, opts: &DumpOptions, layout: &Layout) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "dump".into(),
        "--tree".into(),
        pid.to_string(),
        "--images-dir".into(),
        images.display().to_string(),
        "--work-dir".into(),
        work.display().to_string(),
        "--log-file".into(),
        "dump.log".into(),
        "-v4".into(),
        match &opts.cgroups_mode {
            Some(m) => format!("--manage-cgroups={m}"),
            None => "--manage-cgroups".into(),
        },
        // runc's CLI always leaves the network namespace's devices to the
        // runtime ("runc doesn't manage network devices").
        "--empty-ns".into(),
        "net".into(),
    ];
    // A paused container: ptrace cannot stop frozen tasks, and containerd's
    // clients pause before they checkpoint.
    if let Some(f) = &layout.freezer {
        a.extend(["--freeze-cgroup".into(), f.display().to_string()]);
    }
    if !opts.exit {
        a.push("--leave-running".into());
    }
    a.extend(opts.replayed());
    for (dest, _) in &layout.binds {
        a.extend(["--external".into(), format!("mnt[{dest}]:{dest}")]);
    }
    for m in &layout.masked_files {
        a.extend(["--external".into(), format!("mnt[{m}]:/dev/null")]);
    }
    for d in &layout.devices {
        a.extend(["--external".into(), format!("mnt[{d}]:{d}")]);
    }
    for (kind, ino, _) in &layout.external_ns {
        a.extend(["--external".into(), format!("{kind}[{ino}]:{}", ns_key(kind))]);
    }
    if let Some(tty) = &opts.external_tty {
        a.extend(["--external".into(), tty.clone()]);
    }
    a
}

/// The `criu restore` command line: the restored tree's root becomes a
/// child of whoever runs criu (--restore-sibling), that is the shim, our
/// subreaper; the new stdio pipes stand in for the recorded ones
/// (`stdio`: the recorded link targets, each with the fd criu has the new
/// end on), the external mounts come from the host again, the namespaces
/// joined by path are joined again (`ns_fds`: their fds in criu).
#[allow(clippy::too_many_arguments)]
pub fn restore_args(images: &Path, work: &Path, root: &Path, pidfile: &Path, opts: &DumpOptions, layout: &Layout, stdio: &[(String, i32)], ns_fds: &[(&'static str, i32)], tty_fd: Option<i32>) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "restore".into(),
        "--images-dir".into(),
        images.display().to_string(),
        "--work-dir".into(),
        work.display().to_string(),
        "--log-file".into(),
        "restore.log".into(),
        "-v4".into(),
        "--root".into(),
        root.display().to_string(),
        "--restore-detached".into(),
        "--restore-sibling".into(),
        "--pidfile".into(),
        pidfile.display().to_string(),
        "--evasive-devices".into(),
        match &opts.cgroups_mode {
            Some(m) => format!("--manage-cgroups={m}"),
            None => "--manage-cgroups".into(),
        },
        "--cgroup-root".into(),
        layout.cgroup.clone(),
        "--empty-ns".into(),
        "net".into(),
    ];
    a.extend(opts.replayed());
    for (dest, source) in &layout.binds {
        a.extend(["--external".into(), format!("mnt[{dest}]:{source}")]);
    }
    if layout.masks || !layout.masked_files.is_empty() {
        a.extend(["--external".into(), "mnt[/dev/null]:/dev/null".into()]);
    }
    for d in &layout.devices {
        a.extend(["--external".into(), format!("mnt[{d}]:{d}")]);
    }
    for (key, fd) in stdio {
        a.extend(["--inherit-fd".into(), format!("fd[{fd}]:{key}")]);
    }
    for (kind, fd) in ns_fds {
        a.extend(["--inherit-fd".into(), format!("fd[{fd}]:{}", ns_key(kind))]);
    }
    if let (Some(tty), Some(fd)) = (&opts.external_tty, tty_fd) {
        a.extend(["--inherit-fd".into(), format!("fd[{fd}]:{tty}")]);
    }
    a
}

/// CRIU's key for a tty: `tty[rdev:dev]` in hex, as its tty_d_name and
/// get_tty_driver print them.
pub fn tty_key(rdev: u64, dev: u64) -> String {
    format!("tty[{rdev:x}:{dev:x}]")
}

/// Written next to the images: the stdio the process had (runc's
/// descriptors.json: the restore must map the old pipes to new ones), and
/// the dump's options, which the restore replays.
pub const DESCRIPTORS: &str = "descriptors.json";
pub const OPTIONS_FILE: &str = "rsv2-criu-options.json";

#[cfg(test)]
mod args_tests {
    use super::*;

    #[test]
    fn dump_and_restore_command_lines() {
        let layout = Layout {
            binds: vec![("/data".into(), "/srv/data".into())],
            masked_files: vec!["/proc/kcore".into()],
            masks: true,
            devices: vec![],
            external_ns: vec![("net", 4026532000, "/proc/1/ns/net".into())],
            cgroup: "/default/c1".into(),
            freezer: Some("/sys/fs/cgroup/freezer/default/c1".into()),
        };
        let opts = DumpOptions { exit: false, open_tcp: true, ..Default::default() };
        let d = dump_args(42, Path::new("/ck"), Path::new("/w"), &opts, &layout).join(" ");
        assert!(d.starts_with("dump --tree 42 --images-dir /ck --work-dir /w"), "{d}");
        for want in ["--leave-running", "--tcp-established", "--external mnt[/data]:/data", "--external mnt[/proc/kcore]:/dev/null", "--external net[4026532000]:extRootNetNS", "--freeze-cgroup /sys/fs/cgroup/freezer/default/c1", "--manage-cgroups --empty-ns net"] {
            assert!(d.contains(want), "{want} missing: {d}");
        }
        let r = restore_args(Path::new("/ck"), Path::new("/w"), Path::new("/b/criu-root"), Path::new("/w/pid"), &opts, &layout, &[("pipe:[7]".into(), 3)], &[("net", 6)], None).join(" ");
        for want in ["--restore-detached --restore-sibling", "--root /b/criu-root", "--cgroup-root /default/c1", "--external mnt[/data]:/srv/data", "--external mnt[/dev/null]:/dev/null", "--inherit-fd fd[3]:pipe:[7]", "--inherit-fd fd[6]:extRootNetNS", "--tcp-established"] {
            assert!(r.contains(want), "{want} missing: {r}");
        }
        // A terminal: dumped as external, handed a new slave at restore,
        // and no --shell-job either way.
        let tty = DumpOptions { terminal: true, external_tty: Some(tty_key(0x8800, 0x1a)), ..Default::default() };
        let d = dump_args(42, Path::new("/ck"), Path::new("/w"), &tty, &layout).join(" ");
        assert!(d.contains("--external tty[8800:1a]") && !d.contains("--shell-job"), "{d}");
        let r = restore_args(Path::new("/ck"), Path::new("/w"), Path::new("/r"), Path::new("/w/pid"), &tty, &layout, &[], &[], Some(9)).join(" ");
        assert!(r.contains("--inherit-fd fd[9]:tty[8800:1a]") && !r.contains("--shell-job"), "{r}");
        let shell = DumpOptions { terminal: true, ..Default::default() };
        assert!(dump_args(1, Path::new("/c"), Path::new("/w"), &shell, &Layout::default()).contains(&"--shell-job".to_string()));
        let exit = DumpOptions { exit: true, ..Default::default() };
        assert!(!dump_args(1, Path::new("/c"), Path::new("/w"), &exit, &Layout::default()).contains(&"--leave-running".to_string()));
    }

    #[test]
    fn options_from_containerd() {
        use containerd_shim_protos::protobuf::Message;
        let o = containerd_shim_protos::shim::oci::CheckpointOptions { exit: true, file_locks: true, work_path: "/w".into(), ..Default::default() };
        let any = containerd_shim_protos::protobuf::well_known_types::any::Any { type_url: format!("type.googleapis.com/{OPTIONS_TYPE}"), value: o.write_to_bytes().unwrap(), ..Default::default() };
        let d = DumpOptions::from_any(Some(&any)).unwrap();
        assert!(d.exit && d.file_locks && !d.open_tcp);
        assert_eq!(d.work_path.as_deref(), Some(Path::new("/w")));
        assert_eq!(DumpOptions::from_any(None).unwrap(), DumpOptions::default());
        let bad = containerd_shim_protos::shim::oci::CheckpointOptions { empty_namespaces: vec!["ipc".into()], ..Default::default() };
        let any = containerd_shim_protos::protobuf::well_known_types::any::Any { type_url: OPTIONS_TYPE.into(), value: bad.write_to_bytes().unwrap(), ..Default::default() };
        assert!(DumpOptions::from_any(Some(&any)).unwrap_err().to_string().contains("ipc"));
    }
}
