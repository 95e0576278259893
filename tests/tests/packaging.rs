//! Distribution (issue #18), for real on this machine: `scripts/release`
//! builds the release tarball, the Debian package and the node installer's
//! image (tested in node_installer.rs); the tarball's
//! checksum holds and its binary is static and explains itself; `dpkg -i`
//! installs the binary and the conf.d drop-in without touching
//! /etc/containerd/config.toml; containerd merges the drop-in when a config
//! imports it; a private containerd runs a container with the packaged
//! binary; `dpkg -P` leaves the machine as it was.

use std::path::{Path, PathBuf};
use std::process::Command;

use integration_tests::{require_root, PrivateContainerd};

const PACKAGE: &str = "containerd-shim-rust-v2";
const BIN: &str = "/usr/bin/containerd-shim-rust-v2";
const DROP_IN: &str = "/etc/containerd/conf.d/containerd-shim-rust-v2.toml";
const CONFIG: &str = "/etc/containerd/config.toml";

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn installed() -> bool {
    run(Command::new("dpkg-query").args(["-W", "-f=${Status}", PACKAGE])).1.contains("ok installed")
}

/// What the package may touch, before and after.
#[derive(Debug, PartialEq)]
struct Host {
    config: Option<Vec<u8>>,
    conf_d: bool,
    bin: bool,
    drop_in: bool,
}

fn host() -> Host {
    Host { config: std::fs::read(CONFIG).ok(), conf_d: Path::new("/etc/containerd/conf.d").exists(), bin: Path::new(BIN).exists(), drop_in: Path::new(DROP_IN).exists() }
}

/// Purges the package even when an assertion failed half-way.
struct Purge;
impl Drop for Purge {
    fn drop(&mut self) {
        if installed() {
            let _ = Command::new("dpkg").args(["-P", PACKAGE]).status();
        }
    }
}

#[test]
fn release_tarball_and_deb_install_run_and_purge() {
    require_root();
    assert!(!installed(), "{PACKAGE} is installed on this machine already: the test would change it");
    let before = host();
    assert!(!before.bin && !before.drop_in, "{BIN} or {DROP_IN} exists without the package: {before:?}");

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = tempdir("dist");
    let (ok, log) = run(Command::new(root.join("scripts/release")).arg("--out").arg(&out));
    assert!(ok, "scripts/release failed:\n{log}");
    let files: Vec<String> = std::fs::read_dir(&out).expect("read dist").flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    let tarball = files.iter().find(|f| f.ends_with("-linux-amd64.tar.gz")).unwrap_or_else(|| panic!("no tarball in {files:?}")).clone();
    let deb = files.iter().find(|f| f.ends_with("_amd64.deb")).unwrap_or_else(|| panic!("no .deb in {files:?}")).clone();
    let installer_image = files.iter().find(|f| f.contains("-node-installer-") && f.ends_with(".oci.tar")).unwrap_or_else(|| panic!("no node installer image in {files:?}")).clone();
    for f in [&tarball, &deb, &installer_image] {
        let (ok, log) = run(Command::new("sha256sum").arg("-c").arg(format!("{f}.sha256")).current_dir(&out));
        assert!(ok, "sha256sum -c {f}.sha256: {log}");
    }

    // The tarball: a static binary that says its version, revision and
    // Task APIs, with the config snippets and the manifest beside it.
    let (ok, log) = run(Command::new("tar").arg("-xzf").arg(out.join(&tarball)).arg("-C").arg(&out));
    assert!(ok, "untar: {log}");
    let dir = out.join(tarball.trim_end_matches(".tar.gz"));
    for f in ["bin/containerd-shim-rust-v2", "containerd-config-v2.toml", "containerd-config-v3.toml", "conf.d-containerd-shim-rust-v2.toml", "runtimeclass.yaml", "daemonset.yaml", "README.md"] {
        assert!(dir.join(f).is_file(), "{f} is not in {tarball}");
    }
    let bin = dir.join("bin/containerd-shim-rust-v2");
    let (ok, version) = run(Command::new(&bin).arg("--version"));
    assert!(ok && version.contains("revision: ") && version.contains("containerd.task.v3.Task") && !version.contains("revision: unknown"), "--version: {version}");
    let elf = std::fs::read(&bin).expect("read the binary");
    assert!(!String::from_utf8_lossy(&elf[..elf.len().min(4096)]).contains("ld-linux"), "the release binary has an ELF interpreter: it is not static");
    let (ok, help) = run(Command::new(&bin).arg("-h"));
    assert!(ok && help.contains("usage:"), "-h: {help}");

    // The package.
    let _purge = Purge;
    let (ok, log) = run(Command::new("dpkg").arg("-i").arg(out.join(&deb)));
    assert!(ok, "dpkg -i {deb}: {log}");
    assert!(log.contains("imports") || log.contains("imports conf.d"), "postinst did not say how to import the drop-in: {log}");
    let during = host();
    assert!(during.bin && during.drop_in, "after dpkg -i: {during:?}");
    assert_eq!(during.config, before.config, "dpkg -i changed {CONFIG}");

    // containerd merges the drop-in into a config that imports conf.d.
    let cfg_dir = tempdir("config");
    let cfg = cfg_dir.join("config.toml");
    std::fs::write(&cfg, format!("version = 2\nimports = [\"/etc/containerd/conf.d/*.toml\"]\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n", cfg_dir.display())).expect("write config");
    let (ok, dump) = run(Command::new("containerd").arg("--config").arg(&cfg).args(["config", "dump"]));
    assert!(ok, "containerd config dump: {dump}");
    let section = dump.split("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.rust]").nth(1).unwrap_or_default();
    assert!(section.contains("runtime_type = \"io.containerd.rust.v2\""), "the merged config has no runtime \"rust\" of type io.containerd.rust.v2:\n{dump}");

    // A private containerd runs a container with the packaged binary.
    std::env::set_var("SHIM_BIN", BIN);
    let ctd = PrivateContainerd::start();
    let id = ctd.unique_id("deb");
    let out_run = ctd.run(&id, &["/bin/echo", "hello from the packaged shim"]).rm();
    assert!(out_run.status.success() && String::from_utf8_lossy(&out_run.stdout).contains("hello from the packaged shim"), "ctr run with {BIN}: {out_run:?}\n{}", ctd.log_tail(30));
    ctd.assert_no_leftovers(&id);
    ctd.finish();

    let (ok, log) = run(Command::new("dpkg").args(["-P", PACKAGE]));
    assert!(ok, "dpkg -P: {log}");
    assert_eq!(host(), before, "the machine is not as it was after dpkg -P");
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&cfg_dir);
}

fn tempdir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rsv2-packaging-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}
