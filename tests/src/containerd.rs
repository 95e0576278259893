//! A private containerd per test, and everything needed to leave the host as
//! it was afterwards.

use std::fmt;
use std::fs;
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::ctr::{describe, output_within, Background, Run, TaskInfo, CTR_TIMEOUT};
use crate::events::EventWatcher;
use crate::flavor::{flavor, Flavor};
use crate::host::{self, Process};
use crate::{
    busybox_rootfs, require_root, runtime_under_test, shim_binary, wait_until, RUST_RUNTIME,
    SHIM_NAME,
};

/// PATH containerd gets: our `bin/` first, so it finds the shim under test
/// (containerd resolves `io.containerd.rust.v2` to `containerd-shim-rust-v2`).
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Shim binaries (ours, runc's) are all named `containerd-shim-*`.
const SHIM_PREFIX: &str = "containerd-shim";
/// Where shims put their sockets and runtime state, by protocol and by
/// convention (`s/<hash>`, `runc/<ns>/<id>`, ...). Shared with any other
/// containerd on the host, so only our own entries are ever removed.
const RUN_CONTAINERD: &str = "/run/containerd";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a container's traces may take to vanish after `ctr task delete`
/// returned (the shim exits asynchronously after its Shutdown call).
const LEFTOVER_TIMEOUT: Duration = Duration::from_secs(10);

static INSTANCES: AtomicUsize = AtomicUsize::new(0);

/// Counts live instances so the last one out can remove the directories
/// under `/run/containerd` (and itself) that the run created, without pulling
/// them from under a sibling test's shim or another containerd's.
struct RunDirUsers {
    live: usize,
    /// Directories that existed when the first live instance started.
    preexisting: Vec<PathBuf>,
}

static RUN_DIR_USERS: Mutex<RunDirUsers> = Mutex::new(RunDirUsers {
    live: 0,
    preexisting: Vec::new(),
});

fn run_dir_acquire() {
    let mut users = RUN_DIR_USERS.lock().unwrap_or_else(|e| e.into_inner());
    if users.live == 0 {
        users.preexisting = host::dirs_deepest_first(Path::new(RUN_CONTAINERD));
    }
    users.live += 1;
}

fn run_dir_release() {
    let mut users = RUN_DIR_USERS.lock().unwrap_or_else(|e| e.into_inner());
    users.live -= 1;
    if users.live == 0 {
        for dir in host::dirs_deepest_first(Path::new(RUN_CONTAINERD)) {
            if !users.preexisting.contains(&dir) {
                // rmdir only: whatever is still inside is not ours to delete.
                let _ = fs::remove_dir(dir);
            }
        }
    }
}

/// Something a container left on the host after it was deleted.
#[derive(Debug, Clone)]
pub enum Leftover {
    /// A process whose command line names the container's bundle, or a shim
    /// still serving the container.
    Process(Process),
    /// A mount below the bundle or the rootfs.
    Mount(PathBuf),
    /// A cgroup directory `/sys/fs/cgroup/<controller>/<ns>/<id>`.
    Cgroup(PathBuf),
    /// The bundle directory in containerd's state dir.
    Bundle(PathBuf),
    /// Runtime state such as `/run/containerd/runc/<ns>/<id>`.
    RuntimeState(PathBuf),
    /// The shim's socket `/run/containerd/s/<hash>`.
    ShimSocket(PathBuf),
    /// A directory named after the instance's namespace where no cgroup
    /// belongs: `/<ns>` at the host's root or `/sys/fs/cgroup/<ns>` outside
    /// any hierarchy, as a cgroup library that lost the hierarchy prefix of
    /// `/<ns>/<id>` creates.
    StrayDir(PathBuf),
}

impl fmt::Display for Leftover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Leftover::Process(p) => write!(f, "process {}: {}", p.pid, p.command()),
            Leftover::Mount(p) => write!(f, "mount {}", p.display()),
            Leftover::Cgroup(p) => write!(f, "cgroup {}", p.display()),
            Leftover::Bundle(p) => write!(f, "bundle {}", p.display()),
            Leftover::RuntimeState(p) => write!(f, "runtime state {}", p.display()),
            Leftover::ShimSocket(p) => write!(f, "shim socket {}", p.display()),
            Leftover::StrayDir(p) => write!(f, "stray directory {}", p.display()),
        }
    }
}

/// A containerd of our own: its root, state, socket, config, log and a
/// busybox rootfs live in `/tmp/rsv2-it-<pid>-<n>`, and it works in the
/// containerd namespace `rsv2-<pid>-<n>`, which also names the parent cgroup
/// of all its containers. Dropping it removes every trace.
pub struct PrivateContainerd {
    dir: PathBuf,
    namespace: String,
    daemon: Option<Child>,
    /// Container ids handed out, to find their shim sockets at cleanup.
    ids: Mutex<Vec<String>>,
    /// Shim group names handed out, likewise.
    groups: Mutex<Vec<String>>,
    next_id: AtomicUsize,
    /// CRI plugin settings of [`Self::start_with_cri`]; `None` for the ctr tests.
    cri: Option<CriSettings>,
}

/// Settings of the CRI plugin for the CRI tests (`tests/src/cri.rs`), given
/// to [`PrivateContainerd::start_with_cri`]. Plain [`PrivateContainerd::start`]
/// leaves the CRI plugin at its defaults (no CNI, the stock sandbox image).
#[derive(Debug, Clone, Default)]
pub struct CriSettings {
    /// `sandbox_image`: the pause image, already imported or to be imported
    /// before the first RunPodSandbox.
    pub sandbox_image: String,
    /// `cni.bin_dir` and `cni.conf_dir`.
    pub cni_bin_dir: PathBuf,
    pub cni_conf_dir: PathBuf,
    /// `netns_mounts_under_state_dir`: pod network namespaces are mounted
    /// below containerd's state dir (ours) instead of `/var/run/netns`.
    pub netns_under_state_dir: bool,
    /// TOML appended to the config as is, e.g. a
    /// `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.rust.options]` table.
    pub extra_toml: String,
}

impl CriSettings {
    /// Lines for the `[plugins."io.containerd.grpc.v1.cri"]` table and the
    /// tables to append, as a pair.
    fn toml(&self) -> (String, String) {
        let keys = format!(
            "  sandbox_image = {:?}\n  netns_mounts_under_state_dir = {}\n",
            self.sandbox_image, self.netns_under_state_dir
        );
        let tables = format!(
            "\n[plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = {:?}\n  conf_dir = {:?}\n{}",
            self.cni_bin_dir.display().to_string(),
            self.cni_conf_dir.display().to_string(),
            self.extra_toml
        );
        (keys, tables)
    }
}

impl PrivateContainerd {
    /// Creates the instance's directory and starts containerd on it. Panics
    /// (after cleaning up) if containerd does not answer within 20 s.
    pub fn start() -> Self {
        Self::start_inner(None, None)
    }

    /// Like [`Self::start`], with the CRI plugin configured by `cri`.
    pub fn start_with_cri(cri: CriSettings) -> Self {
        Self::start_inner(Some(cri), None)
    }

    /// Like [`Self::start`], with a tmpfs of `size` (tmpfs's `size=`
    /// syntax, e.g. `"4m"`) mounted over the state directory before
    /// containerd starts, for tests that fill it. Drop unmounts it.
    pub fn start_with_state_tmpfs(size: &str) -> Self {
        Self::start_inner(None, Some(size))
    }

    fn start_inner(cri: Option<CriSettings>, state_tmpfs: Option<&str>) -> Self {
        require_root();
        let shim = (runtime_under_test() == RUST_RUNTIME).then(shim_binary);
        run_dir_acquire();

        let pid = std::process::id();
        let (dir, n) = loop {
            let n = INSTANCES.fetch_add(1, Ordering::SeqCst);
            let dir = PathBuf::from(format!("/tmp/rsv2-it-{pid}-{n}"));
            match fs::create_dir(&dir) {
                Ok(()) => break (dir, n),
                // A leftover of an earlier run with the same pid: never reuse it.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    run_dir_release();
                    panic!("cannot create {}: {e}", dir.display());
                }
            }
        };
        // From here on Drop does the cleanup, even if the setup below panics.
        let mut ctd = Self {
            dir,
            namespace: format!("rsv2-{pid}-{n}"),
            daemon: None,
            ids: Mutex::new(Vec::new()),
            groups: Mutex::new(Vec::new()),
            next_id: AtomicUsize::new(0),
            cri,
        };
        for sub in ["root", "state", "bin", "fifo", "specs", "rootfs"] {
            fs::create_dir(ctd.dir.join(sub)).unwrap_or_else(|e| panic!("mkdir {sub}: {e}"));
        }
        if let Some(size) = state_tmpfs {
            nix::mount::mount(
                Some("tmpfs"),
                &ctd.state_dir(),
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some(format!("size={size},mode=0711").as_str()),
            )
            .unwrap_or_else(|e| panic!("mount a tmpfs of {size} over the state dir: {e}"));
        }
        if let Some(shim) = shim {
            symlink(&shim, ctd.dir.join("bin").join(SHIM_NAME))
                .expect("symlink the shim into bin/");
        }
        // A lane's own runc shim, found before Debian's on containerd's PATH.
        if let Some(runc_shim) = &flavor().runc_shim {
            symlink(runc_shim, ctd.dir.join("bin").join("containerd-shim-runc-v2"))
                .expect("symlink the lane's runc shim into bin/");
        }
        busybox_rootfs(&ctd.rootfs());
        fs::write(ctd.config_path(), ctd.config()).expect("write config.toml");
        ctd.spawn_daemon();
        ctd
    }

    fn config(&self) -> String {
        if flavor().v3_config() {
            return self.config_v3();
        }
        let d = self.dir.display();
        let (cri_keys, cri_tables) = self.cri.as_ref().map(CriSettings::toml).unwrap_or_default();
        // The CRI plugin stays enabled (later tests use it); it refuses to load
        // unless its default runtime ("runc") is configured, so both are.
        // Disabled plugins: snapshotters that cannot work here and only log
        // errors, and `opt`, which would create /opt/containerd on the host.
        format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
{cri_keys}
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.rust]
  runtime_type = "{RUST_RUNTIME}"
{cri_tables}"#
        )
    }

    /// The same settings for containerd 2.x, in its version 3 layout: the
    /// CRI plugin's runtime half (`io.containerd.cri.v1.runtime`: runtimes,
    /// CNI, oom score, netns) and image half (`io.containerd.cri.v1.images`:
    /// the sandbox image). Tables a test appends in the 1.x layout are
    /// moved over.
    fn config_v3(&self) -> String {
        const RUNTIME: &str = "plugins.'io.containerd.cri.v1.runtime'";
        let (cri_runtime_keys, images, extra) = match &self.cri {
            Some(c) => (
                format!("  netns_mounts_under_state_dir = {}\n", c.netns_under_state_dir),
                format!(
                    "\n[plugins.'io.containerd.cri.v1.images'.pinned_images]\n  sandbox = {:?}\n\n[{RUNTIME}.cni]\n  bin_dirs = [{:?}]\n  conf_dir = {:?}\n",
                    c.sandbox_image,
                    c.cni_bin_dir.display().to_string(),
                    c.cni_conf_dir.display().to_string()
                ),
                c.extra_toml.replace("plugins.\"io.containerd.grpc.v1.cri\".containerd", &format!("{RUNTIME}.containerd")),
            ),
            None => Default::default(),
        };
        let head = private_config_v3_head(&self.dir, "");
        format!(
            r#"{head}
[{RUNTIME}]
  restrict_oom_score_adj = true
{cri_runtime_keys}
[{RUNTIME}.containerd]
  default_runtime_name = "runc"

[{RUNTIME}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{RUNTIME}.containerd.runtimes.rust]
  runtime_type = "{RUST_RUNTIME}"
{images}{extra}"#
        )
    }

    /// The containerd under test (see [`flavor`]).
    pub fn flavor(&self) -> &'static Flavor {
        flavor()
    }

    fn spawn_daemon(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open containerd.log");
        let child = Command::new(&flavor().containerd)
            .arg("--config")
            .arg(self.config_path())
            .env(
                "PATH",
                format!("{}:{SYSTEM_PATH}", self.dir.join("bin").display()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log)
            // Its own process group: signals aimed at the test (^C) or at
            // containerd must not reach each other.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", flavor().containerd.display()));
        self.daemon = Some(child);

        let ready = wait_until(STARTUP_TIMEOUT, || {
            let exited = self
                .daemon
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            assert!(
                !exited,
                "containerd exited during startup\n{}",
                self.log_tail(60)
            );
            self.try_ctr(&["version"], Duration::from_secs(5))
                .is_some_and(|o| o.status.success())
        });
        assert!(
            ready,
            "containerd did not answer within {STARTUP_TIMEOUT:?}\n{}",
            self.log_tail(60)
        );
        // `ctr plugins ls` prints `TYPE ID PLATFORMS STATUS` columns.
        let plugins = self.ctr_ok(&["plugins", "ls"]);
        let cri_ok = plugins.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.first() == Some(&"io.containerd.grpc.v1")
                && cols.get(1) == Some(&"cri")
                && cols.last() == Some(&"ok")
        });
        assert!(
            cri_ok,
            "the CRI plugin did not load\n{plugins}\n{}",
            self.log_tail(60)
        );
    }

    /// Stops containerd: SIGTERM, then SIGKILL to its process group after
    /// 15 s. Shims are in their own groups and keep running.
    pub fn stop(&mut self) {
        let Some(mut child) = self.daemon.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let exited = wait_until(SHUTDOWN_TIMEOUT, || matches!(child.try_wait(), Ok(Some(_))));
        if !exited {
            eprintln!("containerd {pid} ignored SIGTERM for {SHUTDOWN_TIMEOUT:?}; killing it");
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Stops and starts containerd again on the same directories.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn_daemon();
    }

    /// SIGKILLs containerd alone, as the OOM killer would (not its process
    /// group: shims and their in-flight `start` invocations live on), reaps
    /// it, and starts it again on the same directories.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
        self.spawn_daemon();
    }

    /// Pid of the running containerd.
    pub fn containerd_pid(&self) -> u32 {
        self.daemon
            .as_ref()
            .expect("containerd is not running")
            .id()
    }

    /// The instance's directory under /tmp.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The containerd namespace all `ctr` calls of this instance use.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// containerd's GRPC socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// containerd's state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The busybox rootfs passed to `ctr run --rootfs`.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    pub(crate) fn fifo_dir(&self) -> PathBuf {
        self.dir.join("fifo")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    /// The bundle containerd writes for container `id` (holds config.json).
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.state_dir()
            .join("io.containerd.runtime.v2.task")
            .join(&self.namespace)
            .join(id)
    }

    /// The cgroup path ctr gives container `id`, relative to a hierarchy root.
    pub fn cgroup_rel(&self, id: &str) -> String {
        format!("{}/{id}", self.namespace)
    }

    /// containerd's whole log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last `lines` lines of containerd's log, headed, for messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!(
            "--- containerd log ({}), last {lines} lines ---\n{tail}",
            self.log_path().display()
        )
    }

    /// A container id unique within this instance, made from `prefix`.
    pub fn unique_id(&self, prefix: &str) -> String {
        let id = format!("{prefix}-{}", self.next_id.fetch_add(1, Ordering::SeqCst));
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(id.clone());
        id
    }

    /// A shim group name (the value of the `io.containerd.runc.v2.group`
    /// annotation) unique to this instance, made from `prefix`.
    pub fn unique_group(&self, prefix: &str) -> String {
        let group = format!(
            "{prefix}-{}-{}",
            self.namespace,
            self.next_id.fetch_add(1, Ordering::SeqCst)
        );
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(group.clone());
        group
    }

    /// `ctr --address <sock> --namespace <ns> ARGS` ready to run.
    pub fn ctr_command<S: AsRef<str>>(&self, args: &[S]) -> Command {
        self.ctr_command_in(&self.namespace, args)
    }

    fn ctr_command_in<S: AsRef<str>>(&self, namespace: &str, args: &[S]) -> Command {
        let mut cmd = Command::new(&flavor().ctr);
        cmd.arg("--address")
            .arg(self.socket())
            .arg("--namespace")
            .arg(namespace);
        cmd.args(args.iter().map(AsRef::as_ref));
        cmd
    }

    /// Runs ctr with ARGS and returns its output, whatever its exit status.
    /// Panics, naming the command, if ctr runs longer than 60 s.
    pub fn ctr<S: AsRef<str>>(&self, args: &[S]) -> Output {
        self.ctr_within(args, CTR_TIMEOUT)
    }

    /// Like [`Self::ctr`] with a custom time limit.
    pub fn ctr_within<S: AsRef<str>>(&self, args: &[S], timeout: Duration) -> Output {
        output_within(&mut self.ctr_command(args), timeout).unwrap_or_else(|partial| {
            panic!(
                "`ctr {}` did not finish within {timeout:?}\n{}\n{}",
                join(args),
                describe(&partial),
                self.log_tail(40)
            )
        })
    }

    /// Runs ctr, asserts it succeeded and returns its stdout.
    pub fn ctr_ok<S: AsRef<str>>(&self, args: &[S]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "`ctr {}` failed\n{}\n{}",
            join(args),
            describe(&out),
            self.log_tail(40)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts ctr with ARGS in the background, e.g. an attached `ctr run` or
    /// `ctr events`; it is killed if the handle is dropped.
    pub fn spawn_ctr<S: AsRef<str>>(&self, args: &[S]) -> Background {
        Background::spawn(self.ctr_command(args), format!("ctr {}", join(args)))
    }

    /// ctr for cleanup paths, which must not panic.
    fn try_ctr<S: AsRef<str>>(&self, args: &[S], timeout: Duration) -> Option<Output> {
        self.try_ctr_in(&self.namespace, args, timeout)
    }

    fn try_ctr_in<S: AsRef<str>>(
        &self,
        namespace: &str,
        args: &[S],
        timeout: Duration,
    ) -> Option<Output> {
        output_within(&mut self.ctr_command_in(namespace, args), timeout).ok()
    }

    /// Starts `ctr events` in the background, returning once it is
    /// subscribed; see [`EventWatcher`].
    pub fn watch_events(&self) -> EventWatcher {
        EventWatcher::start(self)
    }

    /// `ctr run ... --rootfs <busybox rootfs> ID ARGV...`, to be finished
    /// with [`Run::rm`], [`Run::detach`] or [`Run::spawn`].
    pub fn run(&self, id: &str, argv: &[&str]) -> Run<'_> {
        Run::rootfs(self, id, argv)
    }

    /// `ctr run ... --config SPEC ID`: the OCI spec comes from the file.
    pub fn run_config(&self, id: &str, spec: PathBuf) -> Run<'_> {
        Run::config(self, id, spec)
    }

    /// ctr's default spec (`ctr oci spec`) made runnable for container `id`:
    /// our rootfs, `argv`, and the cgroup path plain `ctr run` would use.
    pub fn default_spec(&self, id: &str, argv: &[&str]) -> serde_json::Value {
        let text = self.ctr_ok(&["oci", "spec"]);
        let mut spec: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("`ctr oci spec` is not JSON: {e}\n{text}"));
        spec["root"]["path"] = self.rootfs().display().to_string().into();
        spec["process"]["args"] = argv.iter().map(|a| a.to_string()).collect();
        spec["linux"]["cgroupsPath"] = format!("/{}", self.cgroup_rel(id)).into();
        spec
    }

    /// Writes `spec` to a file for [`Self::run_config`] and returns its path.
    pub fn write_spec(&self, id: &str, spec: &serde_json::Value) -> PathBuf {
        let path = self.dir.join("specs").join(format!("{id}.json"));
        fs::write(
            &path,
            serde_json::to_vec_pretty(spec).expect("serialize spec"),
        )
        .expect("write spec");
        path
    }

    /// All tasks of the namespace, from `ctr task ls`.
    pub fn tasks(&self) -> Vec<TaskInfo> {
        TaskInfo::parse_list(&self.ctr_ok(&["task", "ls"]))
    }

    /// The task of container `id`, if there is one.
    pub fn task(&self, id: &str) -> Option<TaskInfo> {
        self.tasks().into_iter().find(|t| t.id == id)
    }

    /// Polls `ctr task ls` until task `id` has `status`; panics after `timeout`.
    pub fn wait_for_status(&self, id: &str, status: &str, timeout: Duration) -> TaskInfo {
        let mut last = None;
        let reached = wait_until(timeout, || {
            last = self.task(id);
            last.as_ref().is_some_and(|t| t.status == status)
        });
        assert!(
            reached,
            "task {id} not {status} within {timeout:?}; last seen: {last:?}\n{}",
            self.log_tail(40)
        );
        last.expect("checked above")
    }

    /// Host pids of the processes of task `id`, from `ctr task ps` (a
    /// `PID INFO` header, then one process per line).
    pub fn task_pids(&self, id: &str) -> Vec<u32> {
        self.ctr_ok(&["task", "ps", id])
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    }

    /// Polls until the pids cgroup of container `id` holds exactly `n`
    /// processes (e.g. a shell script has forked its children) and returns
    /// them; panics after `timeout`.
    pub fn wait_for_cgroup_procs(&self, id: &str, n: usize, timeout: Duration) -> Vec<u32> {
        let dir = host::cgroup_path("pids", &self.cgroup_rel(id));
        let mut pids = Vec::new();
        let ok = wait_until(timeout, || {
            pids = host::cgroup_procs(&dir);
            pids.len() == n
        });
        assert!(
            ok,
            "{}: expected {n} processes within {timeout:?}, found {pids:?}",
            dir.display()
        );
        pids
    }

    /// Container ids of the namespace, from `ctr containers ls -q`.
    pub fn containers(&self) -> Vec<String> {
        self.ctr_ok(&["containers", "ls", "-q"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Orderly end of container `id`: SIGKILL its task if still running,
    /// delete the task and the container, asserting each step works.
    pub fn remove(&self, id: &str) {
        if let Some(task) = self.task(id) {
            if task.status != "STOPPED" {
                // The task may end on its own between `task ls` and the
                // kill: the shim then says "already finished" (our shim
                // also while it drains the process's last output, before
                // State says STOPPED). Any other failed kill of a task
                // still running is an error.
                let kill = self.ctr(&["task", "kill", "--signal", "SIGKILL", id]);
                let finished = String::from_utf8_lossy(&kill.stderr).contains("already finished");
                if !kill.status.success() && !finished && self.task(id).is_some_and(|t| t.status != "STOPPED") {
                    panic!("`ctr task kill --signal SIGKILL {id}` failed\n{}\n{}", crate::ctr::describe(&kill), self.log_tail(30));
                }
                self.wait_for_status(id, "STOPPED", Duration::from_secs(20));
            }
            self.ctr_ok(&["task", "delete", id]);
        }
        self.ctr_ok(&["containers", "rm", id]);
    }

    /// Shim processes (ours, runc's) serving this containerd instance, i.e.
    /// started with `-address <our socket>`.
    pub fn shims(&self) -> Vec<Process> {
        let socket = self.socket().display().to_string();
        host::processes()
            .into_iter()
            .filter(|p| {
                let exe = p.cmdline[0].rsplit('/').next().unwrap_or_default();
                exe.starts_with(SHIM_PREFIX) && p.flag("-address") == Some(&socket)
            })
            .collect()
    }

    /// The long-running shim serving container `id`: not a short-lived
    /// `start` or `delete` invocation of the binary.
    pub fn shim_server(&self, id: &str) -> Option<Process> {
        self.shims().into_iter().find(|p| {
            p.flag("-id") == Some(id)
                && p.flag("-namespace") == Some(self.namespace.as_str())
                && !p.cmdline.iter().any(|a| a == "start" || a == "delete")
        })
    }

    /// The socket a shim for container `id` listens on. containerd 1.6 names
    /// it `/run/containerd/s/<sha256("<containerd socket>/<ns>/<id>")>`.
    pub fn shim_socket(&self, id: &str) -> PathBuf {
        self.try_shim_socket(id)
            .unwrap_or_else(|e| panic!("cannot compute the shim socket of {id}: {e}"))
    }

    /// The socket of the shim serving the containers annotated with
    /// `io.containerd.runc.v2.group = group`: the same scheme, keyed by the
    /// group instead of a container id.
    pub fn group_socket(&self, group: &str) -> PathBuf {
        self.try_shim_socket(group)
            .unwrap_or_else(|e| panic!("cannot compute the shim socket of group {group}: {e}"))
    }

    /// Directories named after our namespace that no correct runtime makes:
    /// `/<ns>` and `/sys/fs/cgroup/<ns>` (see [`Leftover::StrayDir`]). On a
    /// unified cgroup v2 hierarchy the latter is the containers' parent
    /// cgroup, which Drop removes, not a stray directory.
    pub fn stray_dirs(&self) -> Vec<PathBuf> {
        let cgroup =
            (!host::cgroup_unified()).then(|| Path::new(host::CGROUP_ROOT).join(&self.namespace));
        [Some(Path::new("/").join(&self.namespace)), cgroup]
            .into_iter()
            .flatten()
            .filter(|p| p.symlink_metadata().is_ok())
            .collect()
    }

    fn try_shim_socket(&self, id: &str) -> Result<PathBuf, String> {
        let key = format!("{}/{}/{id}", self.socket().display(), self.namespace);
        let mut cmd = Command::new("sh");
        cmd.args(["-c", r#"printf %s "$1" | sha256sum"#, "sh", &key]);
        let out = output_within(&mut cmd, Duration::from_secs(10)).map_err(|o| describe(&o))?;
        let text = String::from_utf8_lossy(&out.stdout);
        match text.split_whitespace().next() {
            Some(hash) if out.status.success() && hash.len() == 64 => {
                Ok(Path::new(RUN_CONTAINERD).join("s").join(hash))
            }
            _ => Err(format!("unexpected sha256sum output\n{}", describe(&out))),
        }
    }

    /// What container `id` left behind right now (see [`Leftover`]).
    pub fn leftovers(&self, id: &str) -> Vec<Leftover> {
        let bundle = self.bundle(id);
        let bundle_str = bundle.display().to_string();
        let mut found: Vec<Leftover> = self
            .shims()
            .into_iter()
            .filter(|s| s.flag("-id") == Some(id))
            .chain(
                host::processes()
                    .into_iter()
                    .filter(|p| p.command().contains(&bundle_str)),
            )
            .map(Leftover::Process)
            .collect();
        found.extend(
            host::mount_points()
                .into_iter()
                .filter(|m| m.starts_with(&bundle) || m.starts_with(self.rootfs()))
                .map(Leftover::Mount),
        );
        found.extend(
            host::cgroup_dirs(&self.cgroup_rel(id))
                .into_iter()
                .map(Leftover::Cgroup),
        );
        if bundle.exists() {
            found.push(Leftover::Bundle(bundle));
        }
        if let Ok(entries) = fs::read_dir(RUN_CONTAINERD) {
            for e in entries.filter_map(|e| e.ok()) {
                let state = e.path().join(&self.namespace).join(id);
                if state.exists() {
                    found.push(Leftover::RuntimeState(state));
                }
            }
        }
        let socket = self.shim_socket(id);
        if socket.exists() {
            found.push(Leftover::ShimSocket(socket));
        }
        found.extend(self.stray_dirs().into_iter().map(Leftover::StrayDir));
        found
    }

    /// Asserts that container `id` left nothing behind, allowing
    /// [`LEFTOVER_TIMEOUT`] for asynchronous teardown.
    pub fn assert_no_leftovers(&self, id: &str) {
        self.assert_no_leftovers_except(id, |_| false);
    }

    /// Like [`Self::assert_no_leftovers`], ignoring leftovers for which
    /// `expected` returns true.
    pub fn assert_no_leftovers_except(&self, id: &str, expected: impl Fn(&Leftover) -> bool) {
        let mut last = Vec::new();
        let clean = wait_until(LEFTOVER_TIMEOUT, || {
            last = self
                .leftovers(id)
                .into_iter()
                .filter(|l| !expected(l))
                .collect();
            last.is_empty()
        });
        assert!(
            clean,
            "container {id} left behind:\n{}\n{}",
            last.iter()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n"),
            self.log_tail(40)
        );
    }

    /// The closing check of a test: no task, no container and no shim of this
    /// instance remain. Consumes the instance, whose Drop then cleans up.
    pub fn finish(self) {
        let tasks = self.tasks();
        assert!(
            tasks.is_empty(),
            "tasks left at the end of the test: {tasks:?}"
        );
        let containers = self.containers();
        assert!(
            containers.is_empty(),
            "containers left at the end of the test: {containers:?}"
        );
        let stray = self.stray_dirs();
        assert!(
            stray.is_empty(),
            "directories named after the namespace {} outside the cgroup hierarchies: {stray:?}",
            self.namespace
        );
        let mut shims = Vec::new();
        let gone = wait_until(LEFTOVER_TIMEOUT, || {
            shims = self.shims();
            shims.is_empty()
        });
        assert!(
            gone,
            "shims still running with no container left:\n{}\n{}",
            shims
                .iter()
                .map(|p| format!("  {}: {}", p.pid, p.command()))
                .collect::<Vec<_>>()
                .join("\n"),
            self.log_tail(40)
        );
    }

    /// Deletes every task and container of every namespace through ctr, as
    /// a well-behaved client would. Errors are ignored: the blunt
    /// process/mount/cgroup cleanup that follows catches what this misses.
    fn delete_all_through_ctr(&self) {
        // Short: a hung shim must not stall the cleanup for minutes.
        let timeout = Duration::from_secs(10);
        let Some(ns_out) = self.try_ctr(&["namespaces", "ls", "-q"], timeout) else {
            return;
        };
        for ns in String::from_utf8_lossy(&ns_out.stdout).lines() {
            let in_ns = |args: &[&str]| self.try_ctr_in(ns, args, timeout);
            let listed = in_ns(&["task", "ls", "-q"])
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            for task in listed.unwrap_or_default().lines() {
                in_ns(&["task", "kill", "--all", "--signal", "SIGKILL", task]);
                in_ns(&["task", "delete", "--force", task]);
            }
            let listed = in_ns(&["containers", "ls", "-q"])
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            for container in listed.unwrap_or_default().lines() {
                in_ns(&["containers", "rm", container]);
            }
        }
    }

    /// SIGKILLs whatever of ours still runs: shims of this instance and every
    /// process in the instance's cgroups. Waits (bounded) until they are gone.
    fn kill_stragglers(&self) {
        let cgroups: Vec<PathBuf> = host::cgroup_dirs(&self.namespace)
            .iter()
            .flat_map(|d| host::dirs_deepest_first(d))
            .collect();
        for cg in &cgroups {
            // A frozen process cannot die; thaw it first.
            if cg.join("freezer.state").exists() {
                let _ = fs::write(cg.join("freezer.state"), "THAWED");
            }
        }
        let victims = || {
            let mut pids: Vec<u32> = self.shims().iter().map(|p| p.pid).collect();
            pids.extend(cgroups.iter().flat_map(|cg| host::cgroup_procs(cg)));
            pids.retain(|pid| host::is_alive(*pid));
            pids
        };
        let gone = wait_until(Duration::from_secs(10), || {
            let pids = victims();
            for pid in &pids {
                let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
            }
            pids.is_empty()
        });
        if !gone {
            eprintln!(
                "[{}] processes survive SIGKILL: {:?}",
                self.namespace,
                victims()
            );
        }
    }

    /// Detaches every mount below our directory, deepest first.
    fn unmount_all(&self) {
        for _ in 0..10 {
            let mut mounts = host::mounts_under(&self.dir);
            if mounts.is_empty() {
                return;
            }
            mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
            for m in mounts {
                if let Err(e) = umount2(&m, MntFlags::MNT_DETACH) {
                    eprintln!("[{}] umount {}: {e}", self.namespace, m.display());
                }
            }
        }
    }

    /// Removes `/sys/fs/cgroup/*/<ns>` subtrees. A cgroup only goes once its
    /// processes have left, which can lag behind their death a little.
    fn remove_cgroups(&self) {
        let removed = wait_until(Duration::from_secs(5), || {
            for root in host::cgroup_dirs(&self.namespace) {
                for cg in host::dirs_deepest_first(&root) {
                    let _ = fs::remove_dir(cg);
                }
            }
            host::cgroup_dirs(&self.namespace).is_empty()
        });
        if !removed {
            eprintln!(
                "[{}] cgroups left: {:?}",
                self.namespace,
                host::cgroup_dirs(&self.namespace)
            );
        }
    }

    /// Removes [`Self::stray_dirs`]. Their names hold our pid and instance
    /// number, so nothing else can own them; never across a mount, and
    /// cgroups (which only rmdir removes) deepest first.
    fn remove_stray_dirs(&self) {
        for dir in self.stray_dirs() {
            eprintln!("[{}] removing stray {}", self.namespace, dir.display());
            if !host::mounts_under(&dir).is_empty() {
                eprintln!(
                    "[{}] {} has mounts below it; left in place",
                    self.namespace,
                    dir.display()
                );
                continue;
            }
            for d in host::dirs_deepest_first(&dir) {
                let _ = fs::remove_dir(d);
            }
            if dir.symlink_metadata().is_ok() {
                if let Err(e) = fs::remove_dir_all(&dir) {
                    eprintln!("[{}] cannot remove {}: {e}", self.namespace, dir.display());
                }
            }
        }
    }

    /// Removes our entries from `/run/containerd`: the sockets of our shims
    /// (a killed shim cannot remove its own) and `<dir>/<ns>` state trees.
    fn remove_run_entries(&self) {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner()).clone();
        ids.extend(
            self.groups
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned(),
        );
        for socket in ids.iter().filter_map(|id| self.try_shim_socket(id).ok()) {
            let _ = fs::remove_file(socket);
        }
        let Ok(entries) = fs::read_dir(RUN_CONTAINERD) else {
            return;
        };
        for e in entries.filter_map(|e| e.ok()) {
            let ours = e.path().join(&self.namespace);
            if ours.is_dir() && host::mounts_under(&ours).is_empty() {
                let _ = fs::remove_dir_all(&ours);
            }
        }
    }
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        if self.daemon.is_some() {
            self.delete_all_through_ctr();
        }
        self.stop();
        self.kill_stragglers();
        self.unmount_all();
        self.remove_cgroups();
        self.remove_run_entries();
        self.remove_stray_dirs();
        // remove_dir_all crosses mount points: never run it over a mount.
        let mounts = host::mounts_under(&self.dir);
        if mounts.is_empty() {
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                eprintln!("cannot remove {}: {e}", self.dir.display());
            }
        } else {
            eprintln!(
                "leaving {} in place: still mounted below it: {mounts:?}",
                self.dir.display()
            );
        }
        run_dir_release();
    }
}

fn join<S: AsRef<str>>(args: &[S]) -> String {
    args.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(" ")
}

/// The top of a private containerd 2.x config (version 3) in `dir`: its own
/// root, state and sockets, NRI's socket too, and none of the plugins that
/// cannot work here. `top` holds more top-level keys (`imports = ...`),
/// which must come before the first table.
pub fn private_config_v3_head(dir: &Path, top: &str) -> String {
    let d = dir.display();
    format!(
        r#"version = 3
{top}root = "{d}/root"
state = "{d}/state"
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.erofs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

# containerd 2.x enables NRI and binds /var/run/nri/nri.sock, one path for the
# whole host: a second private containerd, or a stale socket from a killed one,
# would make it refuse to start ("bind: address already in use").
[plugins.'io.containerd.nri.v1.nri']
  socket_path = "{d}/nri.sock"
"#
    )
}
