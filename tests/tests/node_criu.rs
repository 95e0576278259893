//! Checkpoint and restore through CRIU (issue #17), run inside the node VM
//! only (Debian's kernel, where `criu check` passes; this machine's kernel
//! fails it, see tests/tests/checkpoint.rs). tests/Cargo.toml has
//! `test = false`; tests/node-vm/guest-node-tests.sh runs each test and
//! tests/tests/node_vm.rs reports it.
//!
//! Every test does the same through containerd's Tasks API (Checkpoint
//! with runc's CheckpointOptions, then Create from the checkpoint in the
//! content store, and Start: what containerd's checkpoint and restore
//! clients do) with runc's shim (runc 1.1.5 and the same CRIU) and with
//! ours, and asserts the same results.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use integration_tests::tasks_api::{CheckpointOptions, Descriptor};
use integration_tests::image::{write_oci_archive, ImageConfig};
use integration_tests::{PrivateContainerd, RUNC_RUNTIME, RUST_RUNTIME};

fn require_criu() {
    let out = std::process::Command::new("criu").arg("check").output().expect("run criu check");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && !text.lines().any(|l| l.starts_with("Error ")), "these tests need a kernel where `criu check` passes: {text}");
}

/// A counter in the container: its count on stdout and in a file on the
/// container's /dev/shm (a tmpfs, whose contents CRIU saves and restores:
/// a file on the rootfs that the shell has open mid-write when the
/// checkpoint is taken would not match its size at the restore, and CRIU
/// would refuse it), read from the host through /proc/PID/root.
const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo $i > /dev/shm/count; echo $i; sleep 0.1; done";

fn count(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/root/dev/shm/count")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

fn wait_count(pid: u32, at_least: u64, timeout: Duration) -> u64 {
    let start = Instant::now();
    loop {
        let n = count(pid);
        if n >= at_least || start.elapsed() > timeout {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What one runtime made of a checkpoint and restore.
#[derive(Debug, PartialEq)]
struct Observation {
    /// The checkpoint's media types in the content store.
    media_types: Vec<String>,
    /// The task's status right after the checkpoint.
    after_checkpoint: String,
    /// The count went on from where the checkpoint left it (not from 1).
    continued: bool,
    /// And it is still counting.
    counting: bool,
    status_after_restore: String,
    /// The restored init's output reaches the new stdout.
    output_after_restore: bool,
    /// memory.max and pids.max of the restored task's cgroup.
    limits: Option<(String, String)>,
    /// The restored init is in the container's cgroup.
    in_cgroup: bool,
    /// Its exit is reported: SIGKILL, 137.
    exit_137: bool,
}

/// SIGKILLs task `id` and deletes it: whether its exit was reported as 137
/// (ctr prints the exit status on delete).
fn kill_reports_137(ctd: &PrivateContainerd, id: &str) -> bool {
    ctd.ctr_ok(&["task", "kill", "-s", "SIGKILL", id]);
    ctd.wait_for_status(id, "STOPPED", Duration::from_secs(30));
    let out = ctd.ctr(&["task", "delete", id]);
    String::from_utf8_lossy(&out.stderr).contains("exit code 137")
}

fn cgroup_of(pid: u32) -> PathBuf {
    let line = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let rel = line.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or("").to_string();
    PathBuf::from(format!("/sys/fs/cgroup{rel}"))
}

fn scenario(ctd: &PrivateContainerd, runtime: &str, name: &str, exit: bool, limits: bool) -> Observation {
    let id = ctd.unique_id(name);
    let mut spec = ctd.default_spec(&id, &["/bin/sh", "-c", COUNTER]);
    if limits {
        spec["linux"]["resources"]["memory"] = serde_json::json!({ "limit": 96u64 << 20 });
        spec["linux"]["resources"]["pids"] = serde_json::json!({ "limit": 50 });
    }
    let path = ctd.write_spec(&id, &spec);
    let first = ctd.run_config(&id, path).runtime(runtime).detach();
    let before = wait_count(first.pid, 20, Duration::from_secs(60));
    assert!(before >= 20, "{runtime}: the counter did not count ({before})");

    let opts = CheckpointOptions { exit, ..Default::default() };
    let descriptors: Vec<Descriptor> = ctd.checkpoint_task(&id, &opts).unwrap_or_else(|e| panic!("{runtime}: checkpoint: {e}\n{}", ctd.log_tail(40)));
    let media_types: Vec<String> = descriptors.iter().map(|d| d.media_type.clone()).collect();
    let images = descriptors.iter().find(|d| d.media_type.contains("checkpoint") && !d.media_type.contains("config")).unwrap_or_else(|| panic!("{runtime}: no CRIU images among {media_types:?}")).clone();
    std::thread::sleep(Duration::from_millis(500));
    let after_checkpoint = ctd.task(&id).map(|t| t.status).unwrap_or_else(|| "gone".into());

    // Killed (when it ran on) and its task deleted; the container stays.
    if !exit {
        ctd.ctr_ok(&["task", "kill", "-s", "SIGKILL", &id]);
        ctd.wait_for_status(&id, "STOPPED", Duration::from_secs(30));
    }
    ctd.ctr_ok(&["task", "delete", &id]);
    assert!(!integration_tests::host::is_alive(first.pid), "{runtime}: the checkpointed init {} is still alive", first.pid);

    let log = ctd.dir().join(format!("{id}-restored.log"));
    let pid = ctd.restore_task(&id, &images, &format!("file://{}", log.display())).unwrap_or_else(|e| panic!("{runtime}: restore: {e}\n{}", ctd.log_tail(40)));
    // The first count after the restore continues from the checkpoint:
    // at least what it was before it, not the 1 of a fresh start.
    let resumed = wait_count(pid, 1, Duration::from_secs(30));
    let continued = resumed >= before;
    let later = wait_count(pid, resumed + 5, Duration::from_secs(30));
    let counting = later >= resumed + 5;
    let status_after_restore = ctd.task(&id).map(|t| t.status).unwrap_or_default();
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let output_after_restore = output.lines().filter_map(|l| l.trim().parse::<u64>().ok()).any(|n| n > before);
    let cgroup = cgroup_of(pid);
    let in_cgroup = cgroup.join("cgroup.procs").is_file() && cgroup != PathBuf::from("/sys/fs/cgroup/") && std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default().lines().any(|l| l.trim() == pid.to_string());
    let read = |f: &str| std::fs::read_to_string(cgroup.join(f)).unwrap_or_default().trim().to_string();
    let limits = limits.then(|| (read("memory.max"), read("pids.max")));

    let exit_137 = kill_reports_137(ctd, &id);
    ctd.remove(&id);
    let _ = std::fs::remove_file(&log);
    ctd.assert_no_leftovers(&id);
    Observation { media_types, after_checkpoint, continued, counting, status_after_restore, output_after_restore, limits, in_cgroup, exit_137 }
}

fn compare(exit: bool, limits: bool, name: &str) -> Observation {
    require_criu();
    let ctd = PrivateContainerd::start();
    let runc = scenario(&ctd, RUNC_RUNTIME, &format!("{name}-runc"), exit, limits);
    let rust = scenario(&ctd, RUST_RUNTIME, &format!("{name}-rust"), exit, limits);
    println!("runc: {runc:#?}\nrust: {rust:#?}");
    assert!(rust.continued && rust.counting, "our restored counter did not go on: {rust:?}");
    assert_eq!(rust.status_after_restore, "RUNNING");
    assert!(rust.output_after_restore, "the restored counter's output did not reach the new stdout");
    assert!(rust.in_cgroup, "the restored init is not in the container's cgroup");
    assert!(rust.exit_137, "the restored init's SIGKILL was not reported as exit 137");
    assert_eq!(rust, runc, "our shim and runc's differ (left: ours, right: runc's)");
    ctd.finish();
    rust
}

/// A counter checkpointed while it runs on (`exit` false: the task is
/// still RUNNING after), killed, its task deleted, and restored from the
/// checkpoint in containerd's content store: it goes on counting from
/// where the checkpoint left it, its output reaches the restored task's
/// stdout, and its exit is reported; the same under runc's shim.
#[test]
fn criu_counter_checkpoint_kill_restore_matches_runc() {
    let o = compare(false, false, "ckpt");
    assert_eq!(o.after_checkpoint, "RUNNING");
}

/// The same with `exit`: the checkpoint stops the task (STOPPED after it).
#[test]
fn criu_checkpoint_with_exit_matches_runc() {
    let o = compare(true, false, "ckexit");
    assert_eq!(o.after_checkpoint, "STOPPED");
}

/// A restore on cgroup v2 of a container with a memory and a pids limit:
/// the restored init is in a cgroup with the spec's limits.
#[test]
fn criu_restore_with_limits_on_v2_matches_runc() {
    let o = compare(false, true, "cklim");
    assert_eq!(o.limits, Some(((96u64 << 20).to_string(), "50".to_string())));
}

const COUNTER_IMAGE: &str = "rsv2.test/counter:1";

/// `ctr containers checkpoint --task --rw` of a counter run from an image
/// (ctr pauses the task for it), `ctr images export` of the checkpoint
/// image, the image and the container removed, `ctr images import`, and
/// `ctr containers restore --live`: the counter goes on from where the
/// checkpoint left it. Returns (went on, status after the restore).
fn export_import_scenario(ctd: &PrivateContainerd, runtime: &str, name: &str) -> (bool, String) {
    let id = ctd.unique_id(name);
    ctd.ctr_ok(&["run", "-d", "--runtime", runtime, COUNTER_IMAGE, &id, "/bin/sh", "-c", COUNTER]);
    let pid = ctd.task(&id).map(|t| t.pid).unwrap_or_else(|| panic!("{runtime}: no task"));
    let before = wait_count(pid, 20, Duration::from_secs(60));
    assert!(before >= 20, "{runtime}: the counter did not count ({before})");
    let reference = format!("rsv2.test/checkpoint/{id}:1");
    let out = ctd.ctr(&["containers", "checkpoint", "--task", "--rw", &id, &reference]);
    assert!(out.status.success(), "{runtime}: ctr containers checkpoint: {}\n{}", String::from_utf8_lossy(&out.stderr), ctd.log_tail(40));
    let archive = ctd.dir().join(format!("{id}-checkpoint.tar"));
    // A checkpoint index has no Docker manifest.json form.
    ctd.ctr_ok(&["images", "export", "--skip-manifest-json", "--all-platforms", &archive.display().to_string(), &reference]);
    ctd.ctr_ok(&["images", "rm", &reference]);
    ctd.ctr_ok(&["task", "kill", "-s", "SIGKILL", &id]);
    ctd.wait_for_status(&id, "STOPPED", Duration::from_secs(30));
    ctd.ctr_ok(&["task", "delete", &id]);
    ctd.ctr_ok(&["containers", "rm", &id]);
    // Not unpacked: a checkpoint is no filesystem image.
    ctd.ctr_ok(&["images", "import", "--no-unpack", "--all-platforms", &archive.display().to_string()]);
    // Attached, as `ctr containers restore` is: it ends with the task.
    let mut restore = ctd.spawn_ctr(&["containers", "restore", "--live", &id, &reference]);
    let start = Instant::now();
    let restored = loop {
        if let Some(t) = ctd.task(&id).filter(|t| t.status == "RUNNING" && t.pid != 0) {
            break Some(t);
        }
        if start.elapsed() > Duration::from_secs(90) || restore.exited() {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (went_on, status) = match &restored {
        Some(t) => {
            let first = wait_count(t.pid, 1, Duration::from_secs(30));
            let later = wait_count(t.pid, first + 5, Duration::from_secs(30));
            (first >= before && later >= first + 5, t.status.clone())
        }
        None => (false, "not restored".to_string()),
    };
    if restored.is_some() {
        ctd.ctr_ok(&["task", "kill", "-s", "SIGKILL", &id]);
    }
    let out = restore.wait(Duration::from_secs(60));
    if !went_on {
        println!("{runtime}: ctr containers restore: {}\n{}", String::from_utf8_lossy(&out.stderr), ctd.log_tail(40));
    }
    let _ = ctd.ctr(&["task", "delete", &id]);
    let _ = ctd.ctr(&["containers", "rm", &id]);
    let _ = ctd.ctr(&["images", "rm", &reference]);
    let _ = std::fs::remove_file(&archive);
    ctd.assert_no_leftovers(&id);
    (went_on, status)
}

/// A checkpoint into an image that ctr exports and imports, restored from
/// the imported image; the same under runc's shim.
#[test]
fn criu_checkpoint_image_export_import_matches_runc() {
    require_criu();
    let ctd = PrivateContainerd::start();
    let root = ctd.dir().join("counter-rootfs");
    integration_tests::busybox_rootfs(&root);
    let archive = ctd.dir().join("counter.oci.tar");
    let config = ImageConfig { entrypoint: vec!["/bin/sh".into()], env: vec!["PATH=/bin".into()], working_dir: "/".into(), ..Default::default() };
    write_oci_archive(COUNTER_IMAGE, &root, &config, &archive);
    ctd.ctr_ok(&["images", "import", &archive.display().to_string()]);
    let runc = export_import_scenario(&ctd, RUNC_RUNTIME, "ckimg-runc");
    let rust = export_import_scenario(&ctd, RUST_RUNTIME, "ckimg-rust");
    println!("runc: {runc:?}\nrust: {rust:?}");
    assert_eq!(rust, (true, "RUNNING".to_string()), "our restore from the imported image");
    assert_eq!(rust, runc, "our shim and runc's differ (left: ours, right: runc's)");
    let _ = ctd.ctr(&["images", "rm", COUNTER_IMAGE]);
    ctd.finish();
}

/// What a checkpoint and restore of a container with a terminal gave.
#[derive(Debug, PartialEq)]
struct TerminalObservation {
    continued: bool,
    /// The restored init's output reaches the new task's terminal.
    output_after_restore: bool,
    /// The restored init's stdin, stdout and stderr are a terminal, its
    /// controlling one.
    has_terminal: bool,
    /// ResizePty of the restored task.
    resized: bool,
    exit_137: bool,
}

/// The counter with a terminal (`process.terminal`, a Create with
/// `terminal`), created and started through the Tasks API as `ctr run -t`
/// does, checkpointed, killed and restored with a terminal again.
fn terminal_scenario(ctd: &PrivateContainerd, runtime: &str, name: &str) -> TerminalObservation {
    let id = ctd.unique_id(name);
    // The counter also records whether its fds 0 to 2 are a terminal and
    // /dev/tty opens (a controlling terminal), each time round.
    let script = "i=0; while true; do i=$((i+1)); t=no; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && : < /dev/tty && t=yes; echo $i > /dev/shm/count; echo $t > /dev/shm/tty; echo $i; sleep 0.1; done";
    let mut spec = ctd.default_spec(&id, &["/bin/sh", "-c", script]);
    spec["process"]["terminal"] = true.into();
    let path = ctd.write_spec(&id, &spec);
    ctd.ctr_ok(&["containers", "create", "--runtime", runtime, "--config", &path.display().to_string(), &id]);
    // A terminal's output goes to a FIFO (containerd 1.6's runc shim takes
    // no file:// for a console), which `cat` copies into a log.
    let fifo_log = |name: &str| {
        let fifo = ctd.dir().join(format!("{id}-{name}.fifo"));
        let log = ctd.dir().join(format!("{id}-{name}.log"));
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        let cat = std::process::Command::new("sh").arg("-c").arg(format!("exec cat {} > {}", fifo.display(), log.display())).spawn().expect("spawn cat");
        (fifo, log, cat)
    };
    let (first_fifo, first_log, mut first_cat) = fifo_log("first");
    let first = ctd.create_and_start_task(&id, None, &first_fifo.display().to_string(), true).unwrap_or_else(|e| panic!("{runtime}: create with a terminal: {e}\n{}", ctd.log_tail(40)));
    let before = wait_count(first, 20, Duration::from_secs(60));
    assert!(before >= 20, "{runtime}: the counter did not count ({before})");
    let descriptors = ctd.checkpoint_task(&id, &CheckpointOptions::default()).unwrap_or_else(|e| panic!("{runtime}: checkpoint: {e}\n{}", ctd.log_tail(40)));
    let images = descriptors.iter().find(|d| d.media_type.contains("checkpoint") && !d.media_type.contains("config")).expect("CRIU images").clone();
    ctd.ctr_ok(&["task", "kill", "-s", "SIGKILL", &id]);
    ctd.wait_for_status(&id, "STOPPED", Duration::from_secs(30));
    ctd.ctr_ok(&["task", "delete", &id]);

    let (fifo, log, mut cat) = fifo_log("restored");
    let pid = ctd.create_and_start_task(&id, Some(&images), &fifo.display().to_string(), true).unwrap_or_else(|e| panic!("{runtime}: restore with a terminal: {e}\n{}", ctd.log_tail(40)));
    let resumed = wait_count(pid, 1, Duration::from_secs(30));
    let later = wait_count(pid, resumed + 5, Duration::from_secs(30));
    // The loop rewrites the file (truncate, then write) ten times a second:
    // the first reading that is not empty is the answer.
    let mut seen = String::new();
    integration_tests::wait_until(Duration::from_secs(10), || {
        seen = std::fs::read_to_string(format!("/proc/{pid}/root/dev/shm/tty")).unwrap_or_default().trim().to_string();
        !seen.is_empty()
    });
    let has_terminal = seen == "yes";
    let resized = ctd.resize_pty(&id, "", 100, 30).is_ok();
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let output_after_restore = output.lines().filter_map(|l| l.trim().parse::<u64>().ok()).any(|n| n > before);
    let exit_137 = kill_reports_137(ctd, &id);
    ctd.remove(&id);
    for c in [&mut first_cat, &mut cat] {
        let _ = c.kill();
        let _ = c.wait();
    }
    for f in [&first_fifo, &first_log, &fifo, &log] {
        let _ = std::fs::remove_file(f);
    }
    ctd.assert_no_leftovers(&id);
    TerminalObservation { continued: resumed >= before && later >= resumed + 5, output_after_restore, has_terminal, resized, exit_137 }
}

/// A container with a terminal: checkpointed with its pty slave described
/// to CRIU as external (the master is the shim's), restored with a new
/// pty whose slave CRIU gives the restored init as its stdio and
/// controlling terminal; the counter goes on, its output reaches the new
/// task's terminal, ResizePty works; the same under runc's shim (which
/// gets its new master over CRIU's RPC, orphan-pts-master).
#[test]
fn criu_terminal_checkpoint_restore_matches_runc() {
    require_criu();
    let ctd = PrivateContainerd::start();
    let runc = terminal_scenario(&ctd, RUNC_RUNTIME, "cktty-runc");
    let rust = terminal_scenario(&ctd, RUST_RUNTIME, "cktty-rust");
    println!("runc: {runc:#?}\nrust: {rust:#?}");
    let want = TerminalObservation { continued: true, output_after_restore: true, has_terminal: true, resized: true, exit_137: true };
    assert_eq!(rust, want, "ours");
    assert_eq!(rust, runc, "our shim and runc's differ (left: ours, right: runc's)");
    ctd.finish();
}
