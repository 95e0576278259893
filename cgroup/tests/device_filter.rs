//! The v2 device filter against the real kernel. This host's cgroup2 at
//! /sys/fs/cgroup/unified has no controllers, but device programs attach to
//! any cgroup2 directory, so the filter is enforced there too.

use std::path::Path;
use std::process::Command;

use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxDeviceType};

fn unified_root() -> &'static Path {
    for p in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        let p = Path::new(p);
        if p.join("cgroup.procs").exists() && nix::sys::statfs::statfs(p).map(|s| s.filesystem_type().0 as i64 == 0x6367_7270).unwrap_or(false) {
            return p;
        }
    }
    panic!("no cgroup2 mount at /sys/fs/cgroup/unified or /sys/fs/cgroup: the device filter cannot be tested here");
}

#[test]
fn filter_denies_host_disks_and_allows_null() {
    assert!(nix::unistd::geteuid().is_root(), "this test needs root: it creates a cgroup and attaches a BPF program");
    let dir = unified_root().join(format!("rsv2-devtest-{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let rules = vec![
        LinuxDeviceCgroupBuilder::default().allow(false).access("rwm").build().unwrap(),
        LinuxDeviceCgroupBuilder::default().allow(true).typ(LinuxDeviceType::C).major(1).minor(3).access("rwm").build().unwrap(),
    ];
    let prog = cgroup::ebpf::attach(&dir, &rules, None);
    let result = prog.as_ref().map(|_| {
        let script = format!(
            "echo $$ > {procs}; mknod {s}/disk b 8 0; echo mknod-disk=$?; echo x > /dev/null; echo write-null=$?; head -c1 /dev/zero > /dev/null; echo read-zero=$?",
            procs = dir.join("cgroup.procs").display(),
            s = scratch.path().display()
        );
        Command::new("/bin/sh").arg("-c").arg(script).output().unwrap()
    });
    // Leave nothing behind: the shell has exited, so the cgroup is empty.
    std::fs::remove_dir(&dir).unwrap();
    let out = result.expect("load and attach the device filter");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("mknod-disk=1"), "mknod of a host disk was allowed:\n{text}");
    assert!(!scratch.path().join("disk").exists());
    assert!(text.contains("write-null=0"), "/dev/null was denied:\n{text}");
    assert!(text.contains("read-zero=1"), "/dev/zero (not allowed) was readable:\n{text}");
}
