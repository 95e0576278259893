//! Distribution (issue #18), for real on this machine: `scripts/release`
//! builds the release tarball, the Debian package and the node installer's
//! image (tested in node_installer.rs); the tarball's checksum holds and its
//! binary is static and explains itself. The package ships its containerd
//! drop-ins (config version 2 and 3) under /usr/share/containerd-shim-rust-v2
//! and never edits /etc/containerd/config.toml:
//!
//! - with this machine's containerd 1.6 (`release_tarball_and_deb_on_containerd_1x`),
//!   which would replace config.toml's whole CRI section with an imported
//!   drop-in's (shown with the shipped one), `dpkg -i` installs nothing
//!   under /etc/containerd and prints the runtime's table for config.toml; a
//!   private containerd whose config has that table runs a container through
//!   io.containerd.rust.v2 with /usr/bin's shim; `dpkg -r` and `dpkg -P`
//!   leave /etc/containerd as it was;
//! - with containerd 2.2.7 (`deb_on_containerd_2x_copies_the_matching_drop_in`,
//!   `CONTAINERD_BIN` pointing the postinst at the lane's binary, and
//!   /etc/containerd/config.toml a `version = 3` scratch file, the real one
//!   renamed aside and back), `dpkg -i` copies the version 3 drop-in into
//!   conf.d and says config.toml must import conf.d; a private 2.2.7 whose
//!   version 3 config imports that file registers the CRI runtime "rust";
//!   `dpkg -r` deletes the untouched drop-in, and conf.d only if postinst
//!   made it (an operator's empty conf.d stays); an edited one survives
//!   `dpkg -i`, `dpkg -r` (with a warning naming it) and `dpkg -P`.
//!
//! Both end with /etc/containerd byte for byte as it was. They share one
//! build of the release and run one at a time (dpkg).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use integration_tests::{require_root, wait_until, PrivateContainerd};

const PACKAGE: &str = "containerd-shim-rust-v2";
const BIN: &str = "/usr/bin/containerd-shim-rust-v2";
const ETC: &str = "/etc/containerd";
const CONF_D: &str = "/etc/containerd/conf.d";
/// Where postinst notes that it made conf.d (so prerm may remove it).
const STATE: &str = "/var/lib/containerd-shim-rust-v2";
const DROP_IN: &str = "/etc/containerd/conf.d/containerd-shim-rust-v2.toml";
const CONFIG: &str = "/etc/containerd/config.toml";
const SHARE_V2: &str = "/usr/share/containerd-shim-rust-v2/conf.d-config-v2.toml";
const SHARE_V3: &str = "/usr/share/containerd-shim-rust-v2/conf.d-config-v3.toml";
/// The table the postinst gives containerd 1.6/1.7 for config.toml.
const TABLE_V2: &str = "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.rust]\n      runtime_type = \"io.containerd.rust.v2\"";
const IMPORTS_LINE: &str = "imports = [\"/etc/containerd/conf.d/*.toml\"]";

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn root_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The package's dpkg status: "install ok installed", "deinstall ok
/// config-files" after `dpkg -r`, or None when dpkg does not know it.
fn status() -> Option<String> {
    let (ok, out) = run(Command::new("dpkg-query").args(["-W", "-f=${Status}", PACKAGE]));
    (ok && !out.contains("not-installed")).then_some(out)
}

/// `dpkg ARGS`, its maintainer scripts asking `containerd` (None: the one
/// on PATH) for its version.
fn dpkg(args: &[&str], containerd: Option<&Path>) -> (bool, String) {
    let mut cmd = Command::new("dpkg");
    cmd.args(args).env_remove("CONTAINERD_BIN");
    if let Some(c) = containerd {
        cmd.env("CONTAINERD_BIN", c);
    }
    run(&mut cmd)
}

/// /etc/containerd, every file and directory below it with the bytes of
/// the files (None for a directory), and whether /usr/bin has the binary.
#[derive(Debug, PartialEq)]
struct Host {
    etc: Vec<(PathBuf, Option<Vec<u8>>)>,
    bin: bool,
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, Option<Vec<u8>>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() && !p.is_symlink() {
            out.push((p.clone(), None));
            walk(&p, out);
        } else {
            out.push((p.clone(), Some(std::fs::read(&p).unwrap_or_default())));
        }
    }
}

fn host() -> Host {
    let mut etc = Vec::new();
    if Path::new(ETC).is_dir() {
        etc.push((PathBuf::from(ETC), None));
        walk(Path::new(ETC), &mut etc);
    }
    Host { etc, bin: Path::new(BIN).exists() }
}

/// Purges the package even when an assertion failed half-way, also from
/// the config-files state `dpkg -r` leaves.
struct Purge;
impl Drop for Purge {
    fn drop(&mut self) {
        if status().is_some() {
            let _ = Command::new("dpkg").args(["-P", PACKAGE]).env_remove("CONTAINERD_BIN").status();
        }
    }
}

/// One test at a time: both install the package.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The release, built once for both tests into target/packaging-test.
fn release() -> &'static Path {
    static DIST: OnceLock<PathBuf> = OnceLock::new();
    DIST.get_or_init(|| {
        let out = root_dir().join("target/packaging-test/dist");
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).expect("create target/packaging-test/dist");
        let (ok, log) = run(Command::new(root_dir().join("scripts/release")).arg("--out").arg(&out));
        assert!(ok, "scripts/release failed:\n{log}");
        out
    })
}

fn dist_file(out: &Path, pred: impl Fn(&str) -> bool) -> String {
    let files: Vec<String> = std::fs::read_dir(out).expect("read dist").flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    files.iter().find(|f| pred(f)).unwrap_or_else(|| panic!("not in {files:?}")).clone()
}

fn deb() -> PathBuf {
    let out = release();
    out.join(dist_file(out, |f| f.ends_with("_amd64.deb")))
}

fn assert_starts_clean(before: &Host) {
    assert!(status().is_none(), "{PACKAGE} is known to dpkg on this machine already ({:?}): the test would change it", status());
    assert!(!before.bin && !Path::new(DROP_IN).exists(), "{BIN} or {DROP_IN} exists without the package: {before:?}");
}

/// The shipped drop-ins are the repository's.
fn assert_shipped() {
    for (share, repo) in [(SHARE_V2, "packaging/conf.d-containerd-shim-rust-v2.toml"), (SHARE_V3, "packaging/conf.d-containerd-shim-rust-v2-config-v3.toml")] {
        assert_eq!(std::fs::read(share).ok(), std::fs::read(root_dir().join(repo)).ok(), "{share} is not {repo}");
    }
}

#[test]
fn release_tarball_and_deb_on_containerd_1x() {
    require_root();
    let _serial = serial();
    let before = host();
    assert_starts_clean(&before);
    let system_major = containerd_major(Path::new("containerd"));
    assert!(system_major < 2, "this test is for a machine whose containerd is 1.6/1.7 (this one's is {system_major}.x); deb_on_containerd_2x_copies_the_matching_drop_in covers 2.x");

    let out = release();
    let tarball = dist_file(out, |f| f.ends_with("-linux-amd64.tar.gz"));
    let deb = dist_file(out, |f| f.ends_with("_amd64.deb"));
    let installer_image = dist_file(out, |f| f.contains("-node-installer-") && f.ends_with(".oci.tar"));
    for f in [&tarball, &deb, &installer_image] {
        let (ok, log) = run(Command::new("sha256sum").arg("-c").arg(format!("{f}.sha256")).current_dir(out));
        assert!(ok, "sha256sum -c {f}.sha256: {log}");
    }

    // The tarball: a static binary that says its version, revision and
    // Task APIs, with the config snippets and the manifest beside it.
    let untar = Scratch::new("untar");
    let (ok, log) = run(Command::new("tar").arg("-xzf").arg(out.join(&tarball)).arg("-C").arg(&untar));
    assert!(ok, "untar: {log}");
    let dir = untar.join(tarball.trim_end_matches(".tar.gz"));
    for f in ["bin/containerd-shim-rust-v2", "containerd-config-v2.toml", "containerd-config-v3.toml", "conf.d-containerd-shim-rust-v2.toml", "conf.d-containerd-shim-rust-v2-config-v3.toml", "runtimeclass.yaml", "daemonset.yaml", "README.md"] {
        assert!(dir.join(f).is_file(), "{f} is not in {tarball}");
    }
    let bin = dir.join("bin/containerd-shim-rust-v2");
    let (ok, version) = run(Command::new(&bin).arg("--version"));
    assert!(ok && version.contains("revision: ") && version.contains("containerd.task.v3.Task") && !version.contains("revision: unknown"), "--version: {version}");
    let elf = std::fs::read(&bin).expect("read the binary");
    assert!(!String::from_utf8_lossy(&elf[..elf.len().min(4096)]).contains("ld-linux"), "the release binary has an ELF interpreter: it is not static");
    let (ok, help) = run(Command::new(&bin).arg("-h"));
    assert!(ok && help.contains("usage:"), "-h: {help}");

    // The package: the binary and the shipped drop-ins, nothing under
    // /etc/containerd, and the table for config.toml.
    let _purge = Purge;
    let (ok, log) = dpkg(&["-i", &out.join(&deb).to_string_lossy()], None);
    assert!(ok, "dpkg -i {deb}: {log}");
    assert!(log.contains("nothing goes to /etc/containerd/conf.d") && log.contains(TABLE_V2), "postinst did not give containerd {system_major}.x the runtime's table for config.toml: {log}");
    let during = host();
    assert!(during.bin, "after dpkg -i: no {BIN}");
    assert_eq!(during.etc, before.etc, "dpkg -i changed {ETC}");
    assert_shipped();

    // Why nothing goes to conf.d: containerd 1.x replaces config.toml's CRI
    // section (its runc runtime, the CNI bin_dir) with an imported drop-in's.
    let cfg_dir = Scratch::new("config");
    let own = cfg_dir.join("own-cri.toml");
    std::fs::write(&own, format!("version = 2\nimports = [\"{SHARE_V2}\"]\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\n[plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = \"/rsv2-test/cni\"\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n", cfg_dir.display())).expect("write config");
    let (ok, dump) = run(Command::new("containerd").arg("--config").arg(&own).args(["config", "dump"]));
    assert!(ok, "containerd config dump: {dump}");
    let kept = dump.contains("containerd.runtimes.runc]") && dump.contains("/rsv2-test/cni");
    assert!(dump.contains("runtimes.rust]") && !kept, "containerd {system_major}.x kept config.toml's CRI section beside an imported drop-in: the postinst's reason to install none is gone\n{dump}");

    // A private containerd whose config has the table the postinst prints
    // (the harness's) runs a container through io.containerd.rust.v2, and
    // containerd starts /usr/bin's binary for it.
    std::env::set_var("SHIM_BIN", BIN);
    let ctd = PrivateContainerd::start();
    let private = std::fs::read_to_string(ctd.dir().join("config.toml")).expect("read the private containerd's config");
    let table = if ctd.flavor().major >= 2 { "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.rust]\n  runtime_type = \"io.containerd.rust.v2\"".to_string() } else { TABLE_V2.replace("\n    ", "\n") };
    assert!(private.contains(&table), "the private containerd's config has no\n{table}\n{private}");
    assert!(cri_loaded_rust(&ctd), "the private containerd's CRI plugin did not load the runtime \"rust\"\n{}", ctd.log_tail(30));
    let runtime = "io.containerd.rust.v2";
    let id = ctd.unique_id("deb");
    let out_run = ctd.run(&id, &["/bin/echo", "hello from the packaged shim"]).runtime(runtime).rm();
    assert!(out_run.status.success() && String::from_utf8_lossy(&out_run.stdout).contains("hello from the packaged shim"), "ctr run --runtime {runtime} with {BIN}: {out_run:?}\n{}", ctd.log_tail(30));
    ctd.assert_no_leftovers(&id);
    let id = ctd.unique_id("deb-exe");
    ctd.run(&id, &["/bin/sleep", "60"]).runtime(runtime).detach();
    let shim = ctd.shim_server(&id).unwrap_or_else(|| panic!("no shim serves {id}: {:?}", ctd.shims()));
    let exe = std::fs::read_link(format!("/proc/{}/exe", shim.pid));
    assert_eq!(exe.ok().as_deref(), Some(Path::new(BIN)), "the shim serving {id} ({}) is not {BIN}", shim.command());
    ctd.remove(&id);
    ctd.assert_no_leftovers(&id);
    ctd.finish();

    // dpkg -r: the binary goes, /etc/containerd is as it was.
    let (ok, log) = dpkg(&["-r", PACKAGE], None);
    assert!(ok, "dpkg -r: {log}");
    let removed = host();
    assert!(!removed.bin, "after dpkg -r: {BIN} is still there");
    assert_eq!(removed.etc, before.etc, "dpkg -r changed {ETC}");

    let (ok, log) = dpkg(&["-P", PACKAGE], None);
    assert!(ok, "dpkg -P: {log}");
    assert!(status().is_none(), "after dpkg -P dpkg still knows {PACKAGE}: {:?}", status());
    assert_eq!(host(), before, "the machine is not as it was after dpkg -P");
}

#[test]
fn deb_on_containerd_2x_copies_the_matching_drop_in() {
    require_root();
    let _serial = serial();
    let containerd2 = containerd_2x();
    assert_eq!(containerd_major(&containerd2), 2, "{} is not containerd 2.x", containerd2.display());
    let before = host();
    assert_starts_clean(&before);
    let deb = deb();
    let deb = deb.to_string_lossy();
    let v3 = std::fs::read(root_dir().join("packaging/conf.d-containerd-shim-rust-v2-config-v3.toml")).expect("read the v3 drop-in");

    // Dropped in this order: the package purged, then /etc/containerd
    // restored.
    let etc = EtcGuard::new();
    let _purge = Purge;
    std::fs::write(CONFIG, "version = 3\n").expect("write the scratch config.toml");
    let config = std::fs::read(CONFIG).expect("read config.toml");

    // dpkg -i: the version 3 drop-in goes to conf.d, config.toml stays, and
    // the postinst says config.toml must import conf.d (2.x reads it only
    // then).
    let (ok, log) = dpkg(&["-i", &deb], Some(&containerd2));
    assert!(ok, "dpkg -i {deb} (CONTAINERD_BIN={}): {log}", containerd2.display());
    assert!(log.contains(&format!("wrote {DROP_IN} (config version 3)")) && log.contains(IMPORTS_LINE), "postinst did not say it wrote the version 3 drop-in and what config.toml must import: {log}");
    assert_shipped();
    assert_eq!(std::fs::read(DROP_IN).ok().as_ref(), Some(&v3), "{DROP_IN} is not the version 3 drop-in");
    assert_eq!(std::fs::read(CONFIG).ok().as_ref(), Some(&config), "dpkg -i changed {CONFIG}");

    // containerd 2.2.7 with a version 3 config that imports it registers
    // the CRI runtime "rust" (the config has no runtime "rust" of its own).
    let log = start_cri_2x(&containerd2, &format!("imports = [\"{DROP_IN}\"]\n"));
    assert!(cri_config_has_rust(&log), "containerd 2.x importing {DROP_IN} did not register the runtime \"rust\":\n{log}");
    let log = start_cri_2x(&containerd2, "");
    assert!(!cri_config_has_rust(&log), "containerd 2.x registers \"rust\" without the drop-in: the check above proves nothing:\n{log}");

    // dpkg -r deletes the untouched drop-in, and the conf.d it made.
    let (ok, log) = dpkg(&["-r", PACKAGE], Some(&containerd2));
    assert!(ok, "dpkg -r: {log}");
    assert!(!Path::new(DROP_IN).exists(), "dpkg -r left the untouched {DROP_IN}: {log}");
    assert_eq!(Path::new(CONF_D).exists(), etc.conf_d_existed, "dpkg -r: {CONF_D}");
    assert_eq!(std::fs::read(CONFIG).ok().as_ref(), Some(&config), "dpkg -r changed {CONFIG}");

    // A conf.d the operator made, even an empty one, stays.
    std::fs::create_dir_all(CONF_D).expect("make conf.d as an operator would");
    let (ok, log) = dpkg(&["-i", &deb], Some(&containerd2));
    assert!(ok && std::fs::read(DROP_IN).ok().as_ref() == Some(&v3), "dpkg -i with conf.d there: {log}");
    let (ok, log) = dpkg(&["-r", PACKAGE], Some(&containerd2));
    assert!(ok && !Path::new(DROP_IN).exists(), "dpkg -r with the operator's conf.d: {log}");
    assert!(Path::new(CONF_D).is_dir(), "dpkg -r removed {CONF_D}, which the operator made before the install: {log}");
    assert!(!Path::new(STATE).exists(), "dpkg -r left {STATE}");
    if !etc.conf_d_existed {
        std::fs::remove_dir(CONF_D).expect("remove the operator's conf.d again");
    }

    // An edited drop-in is the operator's: a reinstall leaves it, and
    // dpkg -r and -P leave it with a warning naming it.
    let (ok, log) = dpkg(&["-i", &deb], Some(&containerd2));
    assert!(ok && std::fs::read(DROP_IN).ok().as_ref() == Some(&v3), "dpkg -i again did not copy the version 3 drop-in: {log}");
    let mut edited = v3.clone();
    edited.extend_from_slice(b"# the operator's line\n");
    std::fs::write(DROP_IN, &edited).expect("edit the drop-in");
    let (ok, log) = dpkg(&["-i", &deb], Some(&containerd2));
    assert!(ok && log.contains(&format!("{DROP_IN} exists and is not the packaged drop-in")), "dpkg -i over an edited drop-in: {log}");
    assert_eq!(std::fs::read(DROP_IN).ok(), Some(edited.clone()), "dpkg -i over an edited drop-in changed it");
    let (ok, log) = dpkg(&["-r", PACKAGE], Some(&containerd2));
    assert!(ok && log.contains(&format!("WARNING: {DROP_IN} is not the packaged drop-in")), "dpkg -r did not warn about the edited drop-in: {log}");
    assert_eq!(std::fs::read(DROP_IN).ok(), Some(edited.clone()), "dpkg -r did not leave the edited drop-in as it was");
    let (ok, log) = dpkg(&["-P", PACKAGE], Some(&containerd2));
    assert!(ok, "dpkg -P: {log}");
    assert!(status().is_none(), "after dpkg -P dpkg still knows {PACKAGE}: {:?}", status());
    assert_eq!(std::fs::read(DROP_IN).ok(), Some(edited), "dpkg -P did not leave the edited drop-in as it was");
    assert!(!Path::new(STATE).exists(), "dpkg -P left {STATE}");
    assert_eq!(std::fs::read(CONFIG).ok().as_ref(), Some(&config), "dpkg -P changed {CONFIG}");

    drop(etc);
    assert_eq!(host(), before, "the machine is not as it was");
}

/// containerd 2.2.7 as the test lanes have it: `target/containerd/2.2.7`
/// when a lane unpacked it already, otherwise unpacked from
/// `containerd-2.2.7-linux-amd64.tar.xz` in `RSV2_CONTAINERD_TARBALLS`
/// (default ../shared/containerd) into target/packaging-test.
fn containerd_2x() -> PathBuf {
    let lane = root_dir().join("target/containerd/2.2.7/containerd");
    if lane.is_file() {
        return lane;
    }
    let dir = root_dir().join("target/packaging-test/containerd-2.2.7");
    if dir.join("containerd").is_file() {
        return dir.join("containerd");
    }
    let tarballs = std::env::var_os("RSV2_CONTAINERD_TARBALLS").map(PathBuf::from).unwrap_or_else(|| root_dir().join("../shared/containerd"));
    let tarball = tarballs.join("containerd-2.2.7-linux-amd64.tar.xz");
    assert!(tarball.is_file(), "this test needs {} (the project's ../shared/containerd holds it; RSV2_CONTAINERD_TARBALLS names another directory)", tarball.display());
    let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("create the unpack directory");
    let (ok, log) = run(Command::new("tar").arg("-xJf").arg(&tarball).arg("-C").arg(&tmp));
    assert!(ok, "unpack {}: {log}", tarball.display());
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    dir.join("containerd")
}

/// Starts a private containerd 2.x with a version 3 config (its own root,
/// state and sockets; `extra` top-level keys) until its CRI plugin logs
/// its config, stops it, and returns its log.
fn start_cri_2x(containerd: &Path, extra: &str) -> String {
    let dir = Scratch::new("containerd2");
    let config = integration_tests::private_config_v3_head(&dir, extra);
    std::fs::write(dir.join("config.toml"), config).expect("write the private config");
    let log_path = dir.join("containerd.log");
    let log = std::fs::File::create(&log_path).expect("create containerd.log");
    let mut child = Command::new(containerd)
        .arg("--config")
        .arg(dir.join("config.toml"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup the log"))
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", containerd.display()));
    let read = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let started = wait_until(Duration::from_secs(120), || read().contains("starting cri plugin") || matches!(child.try_wait(), Ok(Some(_))));
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let stopped = wait_until(Duration::from_secs(20), || matches!(child.try_wait(), Ok(Some(_))));
    if !stopped {
        let _ = child.kill();
        let _ = child.wait();
    }
    let log = read();
    assert!(started && log.contains("starting cri plugin"), "containerd 2.x did not start its CRI plugin:\n{log}");
    log
}

/// Whether a containerd log's CRI plugin config has the runtime "rust" of
/// type io.containerd.rust.v2: `Start cri plugin with config {...
/// Runtimes:map[... rust:{Type:io.containerd.rust.v2 ...` (1.6, 1.7) or
/// `starting cri plugin config="{... \"rust\":{\"runtimeType\":...` (2.x),
/// of its last start.
fn cri_config_has_rust(log: &str) -> bool {
    let last = log.lines().filter(|l| l.contains("Start cri plugin with config") || l.contains("starting cri plugin")).last().map(|l| l.replace(['\\', '"', ' '], "")).unwrap_or_default();
    last.contains("rust:{Type:io.containerd.rust.v2") || last.contains("rust:{runtimeType:io.containerd.rust.v2")
}

fn cri_loaded_rust(ctd: &PrivateContainerd) -> bool {
    cri_config_has_rust(&ctd.log())
}

/// The major version of a containerd: `containerd
/// github.com/containerd/containerd 1.6.20~ds1 ...`.
fn containerd_major(containerd: &Path) -> u32 {
    let (ok, version) = run(Command::new(containerd).arg("--version"));
    let v = version.split_whitespace().nth(2).unwrap_or_default().trim_start_matches('v');
    v.split('.').next().and_then(|m| m.parse().ok()).filter(|_| ok).unwrap_or_else(|| panic!("cannot read the version of {}: {version}", containerd.display()))
}

/// /etc/containerd for the 2.x test, restored byte for byte on drop (a
/// failed assertion too): the real config.toml renamed aside (mode, owner
/// and times kept) and back, conf.d and /etc/containerd removed again if
/// the test made them. The drop-in must not exist before.
struct EtcGuard {
    etc_existed: bool,
    conf_d_existed: bool,
    backup: Option<PathBuf>,
}

const BACKUP: &str = "/etc/containerd/config.toml.rsv2-packaging-test";

impl EtcGuard {
    fn new() -> EtcGuard {
        assert!(!Path::new(DROP_IN).exists() && !Path::new(BACKUP).exists(), "{DROP_IN} or {BACKUP} exists before the test");
        let etc_existed = Path::new(ETC).is_dir();
        let conf_d_existed = Path::new(CONF_D).is_dir();
        std::fs::create_dir_all(ETC).expect("create /etc/containerd");
        let guard = EtcGuard { etc_existed, conf_d_existed, backup: None };
        if Path::new(CONFIG).exists() {
            std::fs::rename(CONFIG, BACKUP).expect("move the real config.toml aside");
            return EtcGuard { backup: Some(PathBuf::from(BACKUP)), ..guard };
        }
        guard
    }
}

impl Drop for EtcGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(DROP_IN);
        if !self.conf_d_existed {
            let _ = std::fs::remove_dir(CONF_D);
        }
        match &self.backup {
            Some(b) => {
                if let Err(e) = std::fs::rename(b, CONFIG) {
                    eprintln!("cannot restore {CONFIG} from {}: {e}", b.display());
                }
            }
            None => {
                let _ = std::fs::remove_file(CONFIG);
            }
        }
        if !self.etc_existed {
            let _ = std::fs::remove_dir(ETC);
        }
    }
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
