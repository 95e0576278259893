//! The node installer (issue #18): `packaging/node-installer/installer.sh`
//! against a directory that stands in for a node's root (containerd config
//! version 2 and 3, none yet, installed already, registered by someone
//! else, removal, SystemdCgroup copied from runc's options or set when
//! systemd runs the node, containerd restarted through a pid file), and
//! its image (built by
//! `packaging/node-installer/build-image.sh`) run through the CRI on a
//! private containerd with that directory mounted as the host's root, as
//! the DaemonSet runs it, with the preStop hook's uninstall as an exec.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use integration_tests::cri::CriContainerd;
use integration_tests::{image, shim_binary, wait_until};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A stand-in for a node's root, removed on drop.
struct FakeRoot(PathBuf);

impl FakeRoot {
    fn new(name: &str, config: Option<&str>) -> FakeRoot {
        let dir = std::env::temp_dir().join(format!("rsv2-node-root-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etc/containerd")).expect("create the fake root");
        std::fs::create_dir_all(dir.join("usr/local/bin")).expect("create the fake root");
        if let Some(c) = config {
            std::fs::write(dir.join("etc/containerd/config.toml"), c).expect("write config.toml");
        }
        FakeRoot(dir)
    }
    fn config(&self) -> Option<String> {
        std::fs::read_to_string(self.0.join("etc/containerd/config.toml")).ok()
    }
    fn shim(&self) -> PathBuf {
        self.0.join("usr/local/bin/containerd-shim-rust-v2")
    }
    fn restarted(&self) -> bool {
        std::fs::remove_file(self.0.join("restarted")).is_ok()
    }
    /// `installer.sh ACTION` with this root, the test's shim, and a restart
    /// command that leaves a mark.
    fn run(&self, action: &str, env: &[(&str, &str)]) -> String {
        let mut env = env.to_vec();
        let mark = format!("touch {}/restarted", self.0.display());
        env.insert(0, ("RESTART_CMD", &mark));
        let (ok, text) = self.try_run(action, &env);
        assert!(ok, "installer.sh {action} failed: {text}");
        text
    }
    /// `installer.sh ACTION` with this root and the test's shim, and no
    /// RESTART_CMD unless `env` has one: whether it succeeded, and what it
    /// said.
    fn try_run(&self, action: &str, env: &[(&str, &str)]) -> (bool, String) {
        let mut cmd = Command::new("sh");
        cmd.arg(repo().join("packaging/node-installer/installer.sh")).arg(action);
        cmd.env("HOST_ROOT", &self.0).env("SHIM_SOURCE", shim_binary()).env_remove("RESTART_CMD").env_remove("CONTAINERD_PIDFILE").env_remove("SYSTEMD_CGROUP").env_remove("NODE_NAME");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run installer.sh");
        (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

impl Drop for FakeRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const V2: &str = "version = 2\nroot = \"/var/lib/containerd\"\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n";
const V3: &str = "version = 3\n\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n";

/// What `containerd config dump` makes of a config: whether it registers
/// the CRI runtime "rust" as io.containerd.rust.v2.
fn containerd_registers_rust(config: &Path) -> bool {
    let out = Command::new("containerd").arg("--config").arg(config).args(["config", "dump"]).output().expect("run containerd config dump");
    let dump = String::from_utf8_lossy(&out.stdout);
    out.status.success() && dump.split("containerd.runtimes.rust]").nth(1).is_some_and(|s| s.contains("runtime_type = \"io.containerd.rust.v2\""))
}

#[test]
fn installer_on_a_config_v2_installs_once_and_uninstalls_to_the_original() {
    let root = FakeRoot::new("v2", Some(V2));
    let log = root.run("install", &[]);
    assert!(log.contains("config version 2"), "{log}");
    assert!(root.shim().is_file(), "no shim in the host's /usr/local/bin");
    let installed = root.config().unwrap_or_default();
    assert!(installed.starts_with(V2) && installed.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.rust]"), "{installed}");
    assert_eq!(std::fs::read_to_string(root.0.join("etc/containerd/config.toml.rsv2-backup")).ok().as_deref(), Some(V2), "no backup of the original");
    assert!(root.restarted(), "containerd was not restarted after the config changed");
    assert!(containerd_registers_rust(&root.0.join("etc/containerd/config.toml")), "containerd does not read the runtime from the installed config:\n{installed}");
    // No NODE_NAME and no kubectl here: it says it did not label.
    assert!(log.contains("node not labelled"), "{log}");

    // Installed already: nothing changes, no restart.
    let log = root.run("install", &[]);
    assert!(log.contains("already"), "{log}");
    assert_eq!(root.config().unwrap_or_default(), installed);
    assert!(!root.restarted(), "a second install restarted containerd");

    let log = root.run("uninstall", &[]);
    assert!(!root.shim().exists(), "the shim is left: {log}");
    assert_eq!(root.config().as_deref(), Some(V2), "the config is not the original after uninstall");
    assert!(!root.0.join("etc/containerd/config.toml.rsv2-backup").exists(), "the backup is left");
    assert!(root.restarted(), "containerd was not restarted after uninstall");
}

#[test]
fn installer_on_a_config_v3_and_on_none() {
    let root = FakeRoot::new("v3", Some(V3));
    root.run("install", &[]);
    let installed = root.config().unwrap_or_default();
    assert!(installed.contains("[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.rust]"), "{installed}");
    root.run("uninstall", &[]);
    assert_eq!(root.config().as_deref(), Some(V3));

    // No config yet: made in the version asked for, removed on uninstall.
    let none = FakeRoot::new("none", None);
    none.run("install", &[("CONTAINERD_CONFIG_VERSION", "2")]);
    let made = none.config().unwrap_or_default();
    assert!(made.starts_with("version = 2\n") && made.contains("io.containerd.rust.v2"), "{made}");
    assert!(containerd_registers_rust(&none.0.join("etc/containerd/config.toml")));
    none.run("uninstall", &[]);
    assert_eq!(none.config(), None, "the config the installer made is left");
    assert!(!none.0.join("etc/containerd/config.toml.rsv2-created").exists());
}

/// A node on systemd's cgroup driver, whose runc runtime says so: in the
/// flat layout of config version 2, and in the indented, single-quoted
/// layout `containerd config default` writes for version 3 (2.x).
const V2_SYSTEMD: &str = "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n  [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n    BinaryName = \"\"\n    SystemdCgroup = true\n";
const V3_SYSTEMD: &str = "version = 3\n\n[plugins]\n  [plugins.'io.containerd.cri.v1.runtime']\n    [plugins.'io.containerd.cri.v1.runtime'.containerd]\n      default_runtime_name = 'runc'\n      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes]\n        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]\n          runtime_type = 'io.containerd.runc.v2'\n          [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]\n            SystemdCgroup = true # the kubelet's driver too\n\n  [plugins.'io.containerd.grpc.v1.cri']\n    disable_tcp_service = true\n";

/// Whether the installed config gives the runtime "rust" SystemdCgroup = true
/// (in the plugin of config version `v`).
fn rust_systemd_cgroup(config: &str, v: u32) -> bool {
    let plugin = if v == 2 { "io.containerd.grpc.v1.cri" } else { "io.containerd.cri.v1.runtime" };
    config.contains(&format!("[plugins.\"{plugin}\".containerd.runtimes.rust.options]\n    SystemdCgroup = true\n"))
}

#[test]
fn installer_copies_runcs_systemd_cgroup_on_configs_v2_and_v3() {
    for (name, original, v) in [("sd-v2", V2_SYSTEMD, 2), ("sd-v3", V3_SYSTEMD, 3)] {
        let root = FakeRoot::new(name, Some(original));
        let log = root.run("install", &[]);
        let installed = root.config().unwrap_or_default();
        assert!(installed.starts_with(original) && rust_systemd_cgroup(&installed, v), "config v{v}: no SystemdCgroup = true for rust:\n{installed}");
        assert!(log.contains("SystemdCgroup = true: runc's SystemdCgroup = true"), "{log}");
        if v == 2 {
            // containerd reads it as the runtime's options.
            let out = Command::new("containerd").arg("--config").arg(root.0.join("etc/containerd/config.toml")).args(["config", "dump"]).output().expect("run containerd config dump");
            let dump = String::from_utf8_lossy(&out.stdout);
            let options = dump.split("containerd.runtimes.rust.options]").nth(1).unwrap_or_default();
            assert!(out.status.success() && options.split("\n\n").next().unwrap_or_default().contains("SystemdCgroup = true"), "containerd config dump:\n{dump}");
        }
        // Installed already: unchanged; then removal restores the original.
        root.run("install", &[]);
        assert_eq!(root.config().unwrap_or_default(), installed);
        root.run("uninstall", &[]);
        assert_eq!(root.config().as_deref(), Some(original), "config v{v} is not the original after uninstall");
    }
}

#[test]
fn installer_sets_systemd_cgroup_from_the_host_when_runc_does_not_say() {
    // runc says nothing; systemd runs the node: set.
    let root = FakeRoot::new("sd-host", Some(V2));
    std::fs::create_dir_all(root.0.join("run/systemd/system")).expect("mkdir run/systemd/system");
    let log = root.run("install", &[]);
    assert!(rust_systemd_cgroup(&root.config().unwrap_or_default(), 2) && log.contains("systemd runs the host"), "{log}\n{:?}", root.config());
    root.run("uninstall", &[]);
    assert_eq!(root.config().as_deref(), Some(V2));
    // SYSTEMD_CGROUP=false overrides it.
    root.run("install", &[("SYSTEMD_CGROUP", "false")]);
    assert!(!root.config().unwrap_or_default().contains("SystemdCgroup"), "{:?}", root.config());
    root.run("uninstall", &[]);
    // runc says false (the kubelet uses cgroupfs) on a systemd host: runc's
    // setting wins.
    let cgroupfs = V2_SYSTEMD.replace("SystemdCgroup = true", "SystemdCgroup = false");
    let root = FakeRoot::new("sd-false", Some(&cgroupfs));
    std::fs::create_dir_all(root.0.join("run/systemd/system")).expect("mkdir run/systemd/system");
    root.run("install", &[]);
    let installed = root.config().unwrap_or_default();
    assert!(installed.contains("runtimes.rust]") && !rust_systemd_cgroup(&installed, 2), "{installed}");
    root.run("uninstall", &[]);
    assert_eq!(root.config().as_deref(), Some(cgroupfs.as_str()));
    // No systemd, runc silent: not set (the other tests' roots).
}

/// A stand-in for containerd: `sleep` run as `containerd` (so that its
/// comm is containerd), or under another name, optionally ignoring
/// SIGTERM; killed and reaped on drop.
struct Dummy {
    child: std::process::Child,
    dir: PathBuf,
}

impl Dummy {
    fn start(name: &str, ignore_term: bool) -> Dummy {
        use std::os::unix::process::CommandExt;
        let dir = std::env::temp_dir().join(format!("rsv2-dummy-{name}-{}-{ignore_term}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir the dummy's directory");
        let sleep = Command::new("sh").args(["-c", "command -v sleep"]).output().expect("find sleep");
        std::os::unix::fs::symlink(String::from_utf8_lossy(&sleep.stdout).trim(), dir.join(name)).expect("symlink sleep");
        let mut cmd = Command::new(dir.join(name));
        cmd.arg("600");
        if ignore_term {
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    libc::signal(libc::SIGTERM, libc::SIG_IGN);
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().expect("start the dummy");
        Dummy { child, dir }
    }
    fn pid(&self) -> u32 {
        self.child.id()
    }
    /// Whether it has exited (reaping it, as a supervisor would).
    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Dummy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// On a host whose containerd no systemd runs, CONTAINERD_PIDFILE: the
/// installer sends SIGTERM to the containerd the pid file names and waits
/// for it to go (the supervisor starts it again), on install and on
/// uninstall; it refuses a pid that is not containerd's, and fails when
/// containerd outlives CONTAINERD_STOP_TIMEOUT.
#[test]
fn installer_restarts_containerd_through_a_pid_file() {
    let root = FakeRoot::new("pidfile", Some(V2));
    std::fs::create_dir_all(root.0.join("run/containerd")).expect("mkdir run/containerd");
    let pidfile = root.0.join("run/containerd/containerd.pid");
    let env = [("CONTAINERD_PIDFILE", "/run/containerd/containerd.pid")];

    // Install: the dummy containerd gets SIGTERM and goes. Its reaper (the
    // test, as a supervisor) runs beside the installer's wait.
    for action in ["install", "uninstall"] {
        let mut ctd = Dummy::start("containerd", false);
        std::fs::write(&pidfile, format!("{}\n", ctd.pid())).expect("write the pid file");
        let installer = std::thread::scope(|s| {
            let run = s.spawn(|| root.try_run(action, &env));
            let gone = wait_until(Duration::from_secs(20), || ctd.exited());
            (run.join().expect("the installer thread"), gone)
        });
        let ((ok, log), gone) = installer;
        assert!(ok && gone, "installer.sh {action} with a pid file: ok {ok}, containerd gone {gone}: {log}");
        assert!(log.contains(&format!("SIGTERM to pid {}", ctd.pid())) && log.contains("stopped"), "{log}");
    }
    assert_eq!(root.config().as_deref(), Some(V2));

    // A pid that is not containerd's (a pod without hostPID sees other
    // processes): refused, and the process lives on.
    let mut other = Dummy::start("not-containerd", false);
    std::fs::write(&pidfile, format!("{}\n", other.pid())).expect("write the pid file");
    let (ok, log) = root.try_run("install", &env);
    assert!(!ok && log.contains("not containerd: not signalled"), "{log}");
    assert!(!other.exited(), "the installer signalled a process that is not containerd");
    root.run("uninstall", &[("RESTART_CMD", "none")]);

    // A containerd that ignores SIGTERM past the timeout: the installer fails.
    let stubborn = Dummy::start("containerd", true);
    std::fs::write(&pidfile, format!("{}\n", stubborn.pid())).expect("write the pid file");
    let (ok, log) = root.try_run("install", &[env[0], ("CONTAINERD_STOP_TIMEOUT", "1")]);
    assert!(!ok && log.contains("still runs"), "{log}");
    drop(stubborn);
    root.run("uninstall", &[("RESTART_CMD", "none")]);
    assert_eq!(root.config().as_deref(), Some(V2));
}

#[test]
fn installer_leaves_a_registration_it_did_not_make() {
    let theirs = format!("{V2}\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.rust]\n  runtime_type = \"io.containerd.rust.v2\"\n");
    let root = FakeRoot::new("theirs", Some(&theirs));
    let log = root.run("install", &[]);
    assert!(log.contains("not by us"), "{log}");
    assert_eq!(root.config().as_deref(), Some(theirs.as_str()));
    assert!(!root.restarted());
    root.run("uninstall", &[]);
    assert_eq!(root.config().as_deref(), Some(theirs.as_str()), "uninstall touched a registration the installer did not make");
}

/// The image, as the DaemonSet runs it: a pod with the fake root mounted
/// at /host installs (binary and config, with runc's SystemdCgroup read by
/// the image's busybox awk), and the preStop command uninstalls; run under
/// our own runtime.
#[test]
fn installer_image_through_the_cri() {
    let root = FakeRoot::new("cri", Some(V2_SYSTEMD));
    let cri = CriContainerd::start();
    let archive = cri.work_dir().join("node-installer.oci.tar");
    let name = "rsv2.test/node-installer:1";
    let out = Command::new(repo().join("packaging/node-installer/build-image.sh")).arg(&archive).arg(name).arg(shim_binary()).output().expect("run build-image.sh");
    assert!(out.status.success(), "build-image.sh: {}", String::from_utf8_lossy(&out.stderr));
    image::import(cri.ctd(), &archive);

    let pod = cri.run_pod(cri.pod_config("node-installer"));
    let mut c = cri.container_config("installer", &[]);
    c.image = Some(k8s_cri::v1::ImageSpec { image: name.to_string(), ..Default::default() });
    c.mounts = vec![k8s_cri::v1::Mount { container_path: "/host".into(), host_path: root.0.display().to_string(), ..Default::default() }];
    c.envs = vec![k8s_cri::v1::KeyValue { key: "RESTART_CMD".into(), value: "touch /host/restarted".into() }];
    let id = cri.run_container(&pod, &c);
    assert!(wait_until(Duration::from_secs(30), || root.config().is_some_and(|c| c.contains("io.containerd.rust.v2")) && root.shim().is_file()), "the installer pod did not install: config {:?}", root.config());
    assert!(root.restarted(), "the installer pod did not restart containerd");
    assert!(rust_systemd_cgroup(&root.config().unwrap_or_default(), 2), "the installer pod did not copy runc's SystemdCgroup: {:?}", root.config());
    let shim_copy = std::fs::read(root.shim()).expect("read the installed shim");
    assert_eq!(shim_copy, std::fs::read(shim_binary()).expect("read the shim"), "the installed shim is not the image's");

    let res = cri.exec_sync(&id, &["/installer.sh", "uninstall"]);
    assert_eq!(res.exit_code, 0, "uninstall: {}", String::from_utf8_lossy(&res.stderr));
    assert!(!root.shim().exists());
    assert_eq!(root.config().as_deref(), Some(V2_SYSTEMD), "the config is not the original after the preStop uninstall");
    cri.stop_pod(&pod.id);
    cri.remove_pod(&pod.id);
}
