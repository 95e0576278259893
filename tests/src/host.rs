//! Read-only views of the host: processes, mounts and cgroups, taken straight
//! from procfs and cgroupfs so the tests check what really exists rather than
//! what containerd reports.

use std::fs;
use std::path::{Path, PathBuf};

/// Root of the cgroup v1 hierarchies (`/sys/fs/cgroup/<controller>`), or the
/// unified cgroup v2 hierarchy itself (see [`cgroup_unified`]).
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Whether [`CGROUP_ROOT`] is a unified cgroup v2 hierarchy, as on a systemd
/// host with cgroup v2 (the node VM, `tests/node-vm`), rather than a tmpfs
/// of v1 hierarchies (this project's usual host). There, every "hierarchy"
/// below is the root itself, and a controller names no directory.
pub fn cgroup_unified() -> bool {
    Path::new(CGROUP_ROOT).join("cgroup.controllers").is_file()
}

/// One process of the host.
#[derive(Debug, Clone)]
pub struct Process {
    pub pid: u32,
    pub cmdline: Vec<String>,
}

impl Process {
    /// The command line joined with spaces, for messages and substring checks.
    pub fn command(&self) -> String {
        self.cmdline.join(" ")
    }

    /// The value following `flag` on the command line (`-id X` gives `X`).
    pub fn flag(&self, flag: &str) -> Option<&str> {
        let i = self.cmdline.iter().position(|a| a == flag)?;
        self.cmdline.get(i + 1).map(String::as_str)
    }
}

/// All live processes with a command line (kernel threads and zombies have
/// none and are left out).
pub fn processes() -> Vec<Process> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        if raw.is_empty() {
            return None;
        }
        let cmdline = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        Some(Process { pid, cmdline })
    })
    .collect()
}

/// The command line of `pid`, if it is alive.
pub fn process(pid: u32) -> Option<Process> {
    processes().into_iter().find(|p| p.pid == pid)
}

/// Fields of `/proc/PID/stat` after the command name, so that index 0 is the
/// state (field 3 in proc(5)), 1 the ppid, 2 the pgrp and 3 the session.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; it ends at the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Whether `/proc/PID` exists, zombies included: false once it was reaped.
pub fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|f| f[0] != "Z")
}

/// Parent pid of `pid`.
pub fn ppid(pid: u32) -> Option<u32> {
    stat_fields(pid)?[1].parse().ok()
}

/// Process group of `pid`.
pub fn pgid(pid: u32) -> Option<u32> {
    stat_fields(pid)?[2].parse().ok()
}

/// Session id of `pid`.
pub fn session(pid: u32) -> Option<u32> {
    stat_fields(pid)?[3].parse().ok()
}

/// Target of `/proc/PID/ns/<kind>`, e.g. `mnt:[4026531832]`.
pub fn namespace(pid: &str, kind: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/ns/{kind}: {e}"))
        .to_string_lossy()
        .into_owned()
}

/// Mount points of the test's mount namespace (the host's), unescaped.
pub fn mount_points() -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount_path(p)))
        .collect()
}

/// Mount points at or below `dir`.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    mount_points()
        .into_iter()
        .filter(|m| m.starts_with(dir))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mount_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup v1 hierarchy directories, one per mounted controller set.
/// Symlinks such as `cpu -> cpu,cpuacct` are skipped so nothing is seen twice.
pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    if cgroup_unified() {
        return vec![PathBuf::from(CGROUP_ROOT)];
    }
    let Ok(dir) = fs::read_dir(CGROUP_ROOT) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = dir
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Existing cgroup directories `<hierarchy>/<rel>` over all hierarchies,
/// e.g. `rel = "ns/id"` for the cgroup ctr gives a container.
pub fn cgroup_dirs(rel: &str) -> Vec<PathBuf> {
    cgroup_hierarchies()
        .into_iter()
        .map(|h| h.join(rel))
        .filter(|d| d.is_dir())
        .collect()
}

/// Path of the cgroup `rel` in the hierarchy of `controller` (e.g. `memory`).
pub fn cgroup_path(controller: &str, rel: &str) -> PathBuf {
    if cgroup_unified() {
        return Path::new(CGROUP_ROOT).join(rel);
    }
    Path::new(CGROUP_ROOT).join(controller).join(rel)
}

/// Reads a cgroup control file, trimmed.
pub fn cgroup_file(controller: &str, rel: &str, file: &str) -> String {
    let path = cgroup_path(controller, rel).join(file);
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// Pids listed in `cgroup.procs` of `dir`.
pub fn cgroup_procs(dir: &Path) -> Vec<u32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// `dir` and every directory below it (not following symlinks), children
/// before their parents, so that rmdir in this order can empty a tree of
/// cgroups or of empty directories.
pub fn dirs_deepest_first(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.filter_map(|e| e.ok()) {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(dirs_deepest_first(&e.path()));
            }
        }
    }
    if dir.is_dir() {
        out.push(dir.to_path_buf());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::unescape_mount_path;

    #[test]
    fn unescapes_mountinfo_octal() {
        assert_eq!(unescape_mount_path(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mount_path(r"/tmp/a\134b\011"), "/tmp/a\\b\t");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
        assert_eq!(unescape_mount_path(r"/x\04"), r"/x\04");
    }
}
