//! Distribution (issue #18), for real on this machine: `scripts/release`
//! builds the release tarball, the Debian package and the node installer's
//! image (tested in node_installer.rs); the tarball's
//! checksum holds and its binary is static and explains itself; `dpkg -i`
//! installs the binary and the conf.d drop-in without touching
//! /etc/containerd/config.toml; containerd merges the drop-in when a config
//! imports it, but containerd 1.6/1.7 replace config.toml's own CRI section
//! with it (so the postinst gives them the runtime's table for config.toml
//! instead); a private containerd registers the runtime as the postinst
//! says (2.x: only by importing conf.d/*.toml) and runs a container through
//! it with /usr/bin's binary; `dpkg -r` removes the binary and moves the
//! drop-in out of conf.d/*.toml, so that containerd's merged config is what
//! it was before `dpkg -i` (and a restarted 2.x has no runtime "rust"); `dpkg -i` again brings the drop-in back; `dpkg -P` leaves the
//! machine as it was.

use std::path::{Path, PathBuf};
use std::process::Command;

use integration_tests::{require_root, PrivateContainerd};

const PACKAGE: &str = "containerd-shim-rust-v2";
const BIN: &str = "/usr/bin/containerd-shim-rust-v2";
const DROP_IN: &str = "/etc/containerd/conf.d/containerd-shim-rust-v2.toml";
const CONFIG: &str = "/etc/containerd/config.toml";
/// Where `dpkg -r` keeps the drop-in (and an operator's edits of it) until
/// a reinstall or `dpkg -P`: outside the `*.toml` glob config.toml imports.
const DROP_IN_REMOVED: &str = "/etc/containerd/conf.d/containerd-shim-rust-v2.toml.dpkg-removed";
const IMPORTS: &str = "/etc/containerd/conf.d/*.toml";

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The package's dpkg status: "install ok installed", "deinstall ok
/// config-files" after `dpkg -r`, or None when dpkg does not know it.
fn status() -> Option<String> {
    let (ok, out) = run(Command::new("dpkg-query").args(["-W", "-f=${Status}", PACKAGE]));
    (ok && !out.contains("not-installed")).then_some(out)
}

fn installed() -> bool {
    status().is_some_and(|s| s.contains("ok installed"))
}

/// What the package may touch, before and after.
#[derive(Debug, PartialEq)]
struct Host {
    config: Option<Vec<u8>>,
    conf_d: bool,
    bin: bool,
    drop_in: bool,
    drop_in_removed: bool,
    /// conf.d's `*.toml` files that mention our runtime, as containerd's
    /// imports glob sees them.
    imported: Vec<PathBuf>,
}

fn host() -> Host {
    let imported = std::fs::read_dir("/etc/containerd/conf.d")
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "toml") && std::fs::read_to_string(p).is_ok_and(|t| t.contains("io.containerd.rust.v2"))).collect())
        .unwrap_or_default();
    Host {
        config: std::fs::read(CONFIG).ok(),
        conf_d: Path::new("/etc/containerd/conf.d").exists(),
        bin: Path::new(BIN).exists(),
        drop_in: Path::new(DROP_IN).exists(),
        drop_in_removed: Path::new(DROP_IN_REMOVED).exists(),
        imported,
    }
}

/// `containerd config dump` of a config that imports conf.d/*.toml: what
/// a containerd whose config.toml has the imports line would run with.
fn merged_config(cfg: &Path) -> String {
    let (ok, dump) = run(Command::new("containerd").arg("--config").arg(cfg).args(["config", "dump"]));
    assert!(ok, "containerd config dump: {dump}");
    dump
}

/// Whether a merged config has the CRI runtime "rust" of type
/// io.containerd.rust.v2.
fn registers_rust(dump: &str) -> bool {
    let section = dump.split("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.rust]").nth(1).unwrap_or_default();
    section.contains("runtime_type = \"io.containerd.rust.v2\"")
}

/// Purges the package even when an assertion failed half-way, also from
/// the config-files state `dpkg -r` leaves.
struct Purge;
impl Drop for Purge {
    fn drop(&mut self) {
        if status().is_some() {
            let _ = Command::new("dpkg").args(["-P", PACKAGE]).status();
        }
    }
}

#[test]
fn release_tarball_and_deb_install_run_and_purge() {
    require_root();
    assert!(status().is_none(), "{PACKAGE} is known to dpkg on this machine already ({:?}): the test would change it", status());
    let before = host();
    assert!(!before.bin && !before.drop_in && !before.drop_in_removed && before.imported.is_empty(), "{BIN} or the drop-in exists without the package: {before:?}");
    // A config that imports conf.d, as the postinst tells the operator to
    // write, and what containerd makes of it before the package is there.
    let cfg_dir = Scratch::new("config");
    let cfg = cfg_dir.join("config.toml");
    std::fs::write(&cfg, format!("version = 2\nimports = [\"{IMPORTS}\"]\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n", cfg_dir.display())).expect("write config");
    let merged_before = merged_config(&cfg);
    assert!(!registers_rust(&merged_before), "containerd registers \"rust\" before the package is installed:\n{merged_before}");

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Scratch::new("dist");
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
    // What the postinst tells the operator depends on the machine's
    // containerd: 1.6 and 1.7 replace config.toml's whole CRI section with
    // an imported file's (checked below), so for them it gives the table
    // to add to config.toml instead of the imports line.
    let system_major = containerd_major();
    if system_major < 2 {
        assert!(log.contains("do not make it import conf.d") && log.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.rust]"), "postinst did not give containerd {system_major}.x the runtime's table for config.toml: {log}");
    } else {
        assert!(log.contains("imports"), "postinst did not say how to import the drop-in: {log}");
    }
    let during = host();
    assert!(during.bin && during.drop_in, "after dpkg -i: {during:?}");
    assert_eq!(during.config, before.config, "dpkg -i changed {CONFIG}");

    assert_eq!(during.imported, vec![PathBuf::from(DROP_IN)], "conf.d/*.toml after dpkg -i");

    // containerd merges the drop-in into a config that imports conf.d.
    let dump = merged_config(&cfg);
    assert!(registers_rust(&dump), "the merged config has no runtime \"rust\" of type io.containerd.rust.v2:\n{dump}");
    // A config with CRI settings of its own (a runc runtime, as every
    // node's has, and the CNI bin_dir): containerd 1.x replaces them with
    // the drop-in's section, and the CRI plugin would fail to load for want
    // of its default runtime runc; 2.x keeps them.
    let own = cfg_dir.join("own-cri.toml");
    std::fs::write(&own, format!("version = 2\nimports = [\"{IMPORTS}\"]\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\n[plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = \"/rsv2-test/cni\"\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n", cfg_dir.display())).expect("write config");
    let dump = merged_config(&own);
    let kept = dump.contains("containerd.runtimes.runc]") && dump.contains("/rsv2-test/cni");
    assert_eq!(kept, system_major >= 2, "containerd {system_major}.x {} config.toml's CRI section when it imports the drop-in:\n{dump}", if kept { "keeps" } else { "drops" });

    // A private containerd registers "rust" as the postinst tells the
    // operator to, for its version: containerd 2.x (RSV2_CONTAINERD=2.2)
    // only through the drop-in (the harness's config without its own
    // `rust` runtime, plus the imports line); 1.6 and 1.7 with the table in
    // config.toml (the harness's config as it is). It runs a container
    // through the runtime the drop-in names, and containerd starts
    // /usr/bin's binary for it.
    std::env::set_var("SHIM_BIN", BIN);
    let mut ctd = PrivateContainerd::start();
    let through_imports = ctd.flavor().major >= 2;
    let mut starts = 1;
    if through_imports {
        import_the_drop_in_only(&mut ctd);
        starts += 1;
    }
    assert!(cri_loaded_rust(&ctd, starts), "the private containerd's CRI plugin did not load the runtime \"rust\" (through imports: {through_imports})\n{}", ctd.log_tail(30));
    let runtime = drop_in_runtime_type();
    assert_eq!(runtime, "io.containerd.rust.v2", "the runtime type in {DROP_IN}");
    let id = ctd.unique_id("deb");
    let out_run = ctd.run(&id, &["/bin/echo", "hello from the packaged shim"]).runtime(&runtime).rm();
    assert!(out_run.status.success() && String::from_utf8_lossy(&out_run.stdout).contains("hello from the packaged shim"), "ctr run --runtime {runtime} with {BIN}: {out_run:?}\n{}", ctd.log_tail(30));
    ctd.assert_no_leftovers(&id);
    let id = ctd.unique_id("deb-exe");
    ctd.run(&id, &["/bin/sleep", "60"]).runtime(&runtime).detach();
    let shim = ctd.shim_server(&id).unwrap_or_else(|| panic!("no shim serves {id}: {:?}", ctd.shims()));
    let exe = std::fs::read_link(format!("/proc/{}/exe", shim.pid));
    assert_eq!(exe.ok().as_deref(), Some(Path::new(BIN)), "the shim serving {id} ({}) is not {BIN}", shim.command());
    ctd.remove(&id);
    ctd.assert_no_leftovers(&id);

    // dpkg -r: the binary goes, the drop-in (a conffile, kept until purge)
    // leaves the glob, and containerd's merged config is what it was.
    let (ok, log) = run(Command::new("dpkg").args(["-r", PACKAGE]));
    assert!(ok, "dpkg -r: {log}");
    assert!(status().is_some_and(|s| s.contains("config-files")), "after dpkg -r: status {:?}", status());
    let removed = host();
    assert!(!removed.bin && !removed.drop_in && removed.drop_in_removed && removed.imported.is_empty(), "after dpkg -r: {removed:?}");
    assert_eq!(removed.config, before.config, "dpkg -r changed {CONFIG}");
    let dump = merged_config(&cfg);
    assert_eq!(dump, merged_before, "after dpkg -r containerd's merged config is not what it was before dpkg -i");
    if through_imports {
        ctd.restart();
        starts += 1;
        assert!(!cri_loaded_rust(&ctd, starts), "after dpkg -r and a restart the private containerd still registers \"rust\"\n{}", ctd.log_tail(30));
    }

    // dpkg -i from the config-files state: the drop-in is back in the glob.
    let (ok, log) = run(Command::new("dpkg").arg("-i").arg(out.join(&deb)));
    assert!(ok, "dpkg -i {deb} again: {log}");
    let again = host();
    assert!(installed() && again.bin && again.drop_in && !again.drop_in_removed && again.imported == vec![PathBuf::from(DROP_IN)], "after dpkg -i again: {again:?}");
    assert_eq!(std::fs::read(DROP_IN).ok(), std::fs::read(root.join("packaging/conf.d-containerd-shim-rust-v2.toml")).ok(), "the drop-in that came back is not the packaged one");
    assert!(registers_rust(&merged_config(&cfg)), "after dpkg -i again containerd does not register \"rust\"");
    if through_imports {
        ctd.restart();
        starts += 1;
        assert!(cri_loaded_rust(&ctd, starts), "after dpkg -i again and a restart the private containerd does not register \"rust\"\n{}", ctd.log_tail(30));
    }
    ctd.finish();

    let (ok, log) = run(Command::new("dpkg").args(["-P", PACKAGE]));
    assert!(ok, "dpkg -P: {log}");
    assert!(status().is_none(), "after dpkg -P dpkg still knows {PACKAGE}: {:?}", status());
    assert_eq!(host(), before, "the machine is not as it was after dpkg -P");
}

/// Rewrites the private containerd's config (the harness writes it to
/// `<dir>/config.toml` and reads it again on restart) so that the runtime
/// "rust" comes from the drop-in alone: the harness's own `rust` runtime
/// table goes, `imports` of conf.d/*.toml comes in; then restarts it.
fn import_the_drop_in_only(ctd: &mut PrivateContainerd) {
    let path = ctd.dir().join("config.toml");
    let harness = std::fs::read_to_string(&path).expect("read the private containerd's config");
    let mut lines = harness.lines();
    let version = lines.next().unwrap_or_default();
    assert!(version.starts_with("version = "), "the harness's config does not start with its version: {harness}");
    let mut config = format!("{version}\nimports = [\"{IMPORTS}\"]\n");
    let mut in_rust = false;
    for line in lines {
        if line.starts_with('[') || line.trim().is_empty() {
            in_rust = line.ends_with(".containerd.runtimes.rust]");
        }
        if !in_rust {
            config.push_str(line);
            config.push('\n');
        }
    }
    assert!(!config.contains("io.containerd.rust.v2") && harness.contains("io.containerd.rust.v2"), "the harness's rust runtime is not where the test takes it out:\n{config}");
    std::fs::write(&path, config).expect("write the private containerd's config");
    ctd.restart();
}

/// Whether the CRI plugin of the private containerd's `starts`-th start
/// (the last) registered the runtime "rust" as io.containerd.rust.v2, from
/// the config the plugin logs as it starts: `Start cri plugin with config
/// {... Runtimes:map[... rust:{Type:io.containerd.rust.v2 ...` (1.6, 1.7) or
/// `starting cri plugin config="{... \"rust\":{\"runtimeType\":...` (2.x).
fn cri_loaded_rust(ctd: &PrivateContainerd, starts: usize) -> bool {
    let log = ctd.log();
    let configs: Vec<String> = log.lines().filter(|l| l.contains("Start cri plugin with config") || l.contains("starting cri plugin")).map(|l| l.replace(['\\', '"', ' '], "")).collect();
    assert_eq!(configs.len(), starts, "containerd's log does not have the CRI config of each of its {starts} starts\n{}", ctd.log_tail(30));
    let last = configs.last().expect("counted above");
    last.contains("rust:{Type:io.containerd.rust.v2") || last.contains("rust:{runtimeType:io.containerd.rust.v2")
}

/// The major version of the machine's containerd, the one the postinst asks.
fn containerd_major() -> u32 {
    let (ok, version) = run(Command::new("containerd").arg("--version"));
    // `containerd github.com/containerd/containerd 1.6.20~ds1 ...`
    let v = version.split_whitespace().nth(2).unwrap_or_default().trim_start_matches('v');
    v.split('.').next().and_then(|m| m.parse().ok()).filter(|_| ok).unwrap_or_else(|| panic!("cannot read containerd's version: {version}"))
}

/// The runtime type the drop-in gives the CRI runtime "rust".
fn drop_in_runtime_type() -> String {
    let text = std::fs::read_to_string(DROP_IN).expect("read the drop-in");
    text.lines().find_map(|l| l.trim().strip_prefix("runtime_type = ")).map(|v| v.trim_matches('"').to_string()).unwrap_or_else(|| panic!("no runtime_type in {DROP_IN}:\n{text}"))
}

/// A scratch directory under /tmp, removed on drop (a failed assertion
/// too).
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("rsv2-packaging-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        Scratch(dir)
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for Scratch {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
