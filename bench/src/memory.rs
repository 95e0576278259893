//! Memory, threads and CPU time of shim servers, from procfs.

use std::collections::HashSet;
use std::fs;

use integration_tests::host::{self, Process};
use serde::{Deserialize, Serialize};

use crate::Runtime;

/// What procfs says about one shim server process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ShimUsage {
    pub pid: u32,
    /// `Pss` of `/proc/PID/smaps_rollup`, KiB.
    pub pss_kib: u64,
    /// `Rss`, KiB.
    pub rss_kib: u64,
    /// `Private_Clean + Private_Dirty` (USS), KiB.
    pub private_kib: u64,
    /// Entries of `/proc/PID/task`.
    pub threads: usize,
}

/// Reads the usage of `pid`; `None` if it is gone or unreadable.
pub fn usage(pid: u32) -> Option<ShimUsage> {
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name| rollup_field(&rollup, name);
    let threads = fs::read_dir(format!("/proc/{pid}/task")).ok()?.count();
    Some(ShimUsage {
        pid,
        pss_kib: field("Pss")?,
        rss_kib: field("Rss")?,
        private_kib: field("Private_Clean")? + field("Private_Dirty")?,
        threads,
    })
}

/// CPU time of `pid` and of the children it has reaped, ms: utime, stime,
/// cutime and cstime of `/proc/PID/stat`. A shim reaps what it starts (our
/// init stages; runc and the process `runc init` became) and, as a child
/// subreaper, the container's processes, so the difference over a run of
/// execs is what one exec cost the shim's side. `None` if it is gone.
pub fn cpu_ms(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    cpu_ticks(&stat).map(|t| t as f64 * 1e3 / clock_ticks())
}

/// utime + stime + cutime + cstime from `/proc/PID/stat` text. The command
/// name may hold spaces and parentheses, so fields count from its last `)`.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After ")": state is field 3 of proc(5), so utime (14) is index 11.
    fields.get(11..15)?.iter().map(|f| f.parse::<u64>().ok()).sum()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf with a constant name.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The value in kB of `name:` in smaps_rollup text (`Pss:  123 kB`).
/// Only the exact field: `Pss` does not match `Pss_Anon`.
pub fn rollup_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Whether `p` is the long-running shim server of `runtime` for a container
/// of `ids`, started by the containerd listening on `socket` in `namespace`.
///
/// - ours: `containerd-shim-rust-v2 -namespace NS -id ID -address SOCK ... serve`
/// - runc's: `containerd-shim-runc-v2 -namespace NS -id ID -address SOCK`
///
/// The short-lived `start` and `delete` invocations have the same flags and
/// are excluded by their action word.
pub fn is_shim_server(
    p: &Process,
    runtime: Runtime,
    socket: &str,
    namespace: &str,
    ids: &HashSet<String>,
) -> bool {
    let exe = p
        .cmdline
        .first()
        .and_then(|a| a.rsplit('/').next())
        .unwrap_or_default();
    if exe != runtime.shim_binary_name()
        || p.flag("-address") != Some(socket)
        || p.flag("-namespace") != Some(namespace)
        || !p.flag("-id").is_some_and(|id| ids.contains(id))
        || p.cmdline.iter().any(|a| a == "start" || a == "delete")
    {
        return false;
    }
    match runtime {
        // Ours and the null shim (our start) re-execute as `serve`.
        Runtime::Rust | Runtime::Null => p.cmdline.last().is_some_and(|a| a == "serve"),
        Runtime::Runc => true,
    }
}

/// Shim servers of `runtime` for the containers `ids`.
pub fn shim_servers(
    runtime: Runtime,
    socket: &str,
    namespace: &str,
    ids: &HashSet<String>,
) -> Vec<Process> {
    host::processes()
        .into_iter()
        .filter(|p| is_shim_server(p, runtime, socket, namespace, ids))
        .collect()
}

/// Every shim process (any runtime, any action) started by the containerd
/// listening on `socket`.
pub fn instance_shims(socket: &str) -> Vec<Process> {
    host::processes()
        .into_iter()
        .filter(|p| {
            let exe = p.cmdline[0].rsplit('/').next().unwrap_or_default();
            exe.starts_with("containerd-shim") && p.flag("-address") == Some(socket)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLLUP: &str =
        "55d0c0a00000-7ffd2d5f1000 ---p 00000000 00:00 0                          [rollup]
Rss:                1532 kB
Pss:                 412 kB
Pss_Anon:            300 kB
Pss_File:            112 kB
Pss_Shmem:             0 kB
Shared_Clean:       1100 kB
Shared_Dirty:          0 kB
Private_Clean:        32 kB
Private_Dirty:       400 kB
";

    #[test]
    fn reads_cpu_ticks_past_a_name_with_parentheses() {
        let stat = "4242 (rsv2 (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 20 10 20 0 2 0 100 1000 200";
        assert_eq!(cpu_ticks(stat), Some(7 + 3 + 20 + 10));
        assert_eq!(cpu_ticks("1 (short) S 1"), None);
    }

    #[test]
    fn parses_smaps_rollup() {
        assert_eq!(rollup_field(ROLLUP, "Rss"), Some(1532));
        assert_eq!(rollup_field(ROLLUP, "Pss"), Some(412));
        assert_eq!(rollup_field(ROLLUP, "Pss_Anon"), Some(300));
        assert_eq!(rollup_field(ROLLUP, "Private_Dirty"), Some(400));
        assert_eq!(rollup_field(ROLLUP, "Swap"), None);
    }

    fn process(cmd: &str) -> Process {
        Process {
            pid: 1,
            cmdline: cmd.split(' ').map(str::to_string).collect(),
        }
    }

    #[test]
    fn recognises_shim_servers() {
        let ids: HashSet<String> = ["c1".to_string()].into();
        let sock = "/tmp/x/containerd.sock";
        let ours = |cmd| is_shim_server(&process(cmd), Runtime::Rust, sock, "ns", &ids);
        let runc = |cmd| is_shim_server(&process(cmd), Runtime::Runc, sock, "ns", &ids);
        assert!(ours(
            "/w/target/release/containerd-shim-rust-v2 -namespace ns -id c1 -address /tmp/x/containerd.sock \
             -socket unix:///run/containerd/s/ab -publish-binary /usr/bin/containerd serve"
        ));
        assert!(!ours(
            "/w/containerd-shim-rust-v2 -namespace ns -id c1 -address /tmp/x/containerd.sock start"
        ));
        assert!(!ours(
            "/w/containerd-shim-rust-v2 -namespace ns -id c2 -address /tmp/x/containerd.sock serve"
        ));
        assert!(!ours(
            "/w/containerd-shim-rust-v2 -namespace ns -id c1 -address /other.sock serve"
        ));
        assert!(runc(
            "/usr/bin/containerd-shim-runc-v2 -namespace ns -id c1 -address /tmp/x/containerd.sock"
        ));
        assert!(!runc(
            "/usr/bin/containerd-shim-runc-v2 -namespace ns -id c1 -address /tmp/x/containerd.sock \
             -publish-binary /usr/bin/containerd start"
        ));
        assert!(!ours(
            "/usr/bin/containerd-shim-runc-v2 -namespace ns -id c1 -address /tmp/x/containerd.sock"
        ));
    }
}
