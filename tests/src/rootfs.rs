//! A minimal root filesystem made from the host's static busybox.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

const BUSYBOX: &str = "/bin/busybox";

/// Fills `dir` with a busybox rootfs: `bin/busybox` plus one symlink per
/// applet, the mount-point directories a container needs, and passwd/group
/// files with root and nobody. Panics on failure, naming the step.
pub fn busybox_rootfs(dir: &Path) {
    let bin = dir.join("bin");
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
        let path = dir.join(d);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    }
    fs::copy(BUSYBOX, bin.join("busybox"))
        .unwrap_or_else(|e| panic!("copy {BUSYBOX} (apt-get install busybox-static): {e}"));

    let list = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .unwrap_or_else(|e| panic!("{BUSYBOX} --list: {e}"));
    assert!(list.status.success(), "{BUSYBOX} --list failed: {list:?}");
    let applets = String::from_utf8_lossy(&list.stdout);
    // `busybox --list` names busybox itself too; linking it would replace the binary.
    for applet in applets
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        let link = bin.join(applet);
        symlink("busybox", &link).unwrap_or_else(|e| panic!("symlink {}: {e}", link.display()));
    }
    assert!(
        bin.join("sh").exists(),
        "busybox at {BUSYBOX} has no sh applet"
    );

    let etc = dir.join("etc");
    fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .expect("write etc/passwd");
    fs::write(etc.join("group"), "root:x:0:\nnogroup:x:65534:\n").expect("write etc/group");
}
