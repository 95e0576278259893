//! The node VM lane (issue #16): a VM that looks like a Kubernetes node.
//!
//! `tests/node-vm/run-node-vm.sh` boots Debian's cloud kernel under qemu
//! (TCG) on a Debian bookworm disk image made once by
//! `tests/node-vm/build-image.sh` (debootstrap, cached under
//! /var/cache/rsv2-node-vm): systemd as PID 1 on a unified cgroup v2
//! hierarchy, dbus, udev, Debian's containerd 1.6.20, runc, the CNI plugins
//! and criu. The run's files (our shim, the `foundation` integration-test
//! binary, the guest test script) come in on a second disk, and
//! `tests/node-vm/guest-node-tests.sh` runs the tests there. The VM boots
//! once for the whole file (a minute or two); each guest test is one
//! `#[test]` here, and `node_vm_ran_every_guest_test` fails when the guest
//! did not finish (no RSV2-DONE) or a result is missing.
//!
//! The runtime is `IT_RUNTIME` (default `io.containerd.rust.v2`), for the
//! integration-test binary run in the guest; `node_containerd_runc` and
//! `node_containerd_rust` each use their own. The console is kept in
//! `target/tmp/rsv2-node-vm-<runtime>.log`.
//!
//! Nothing is skipped: no root, no shim binary, no qemu, kernel or image to
//! be had (the scripts install qemu, debootstrap and the rest with apt and
//! build the image when missing) all fail every test with the reason.

use std::path::Path;
use std::sync::OnceLock;

use integration_tests::runtime_under_test;
use integration_tests::vm::{self, VmOptions, VmRun, NODE_LANE};

/// Boots the node lane once for `tests` (kernel parameters `append`); the
/// console goes to target/tmp/rsv2-node-vm<suffix>-<runtime>.log.
fn boot(what: &str, suffix: &str, tests: &[&str], append: &str) -> Result<VmRun, String> {
    let runtime = runtime_under_test();
    let console_file = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("rsv2-node-vm{suffix}-{runtime}.log"));
    let tests = tests.iter().map(|t| t.to_string()).collect();
    let run = vm::boot_lane(&NODE_LANE, &VmOptions { runtime, tests, console_file, append: append.into() });
    if let Ok(run) = &run {
        // Visible with --nocapture, and in the captured output of any failure.
        println!("{what}: {}", run.timing_summary());
    }
    run
}

/// The node on cgroup v2, once, for [`GUEST_TESTS`] (the hybrid boot's
/// tests are not for this one).
fn vm_run() -> &'static Result<VmRun, String> {
    static RUN: OnceLock<Result<VmRun, String>> = OnceLock::new();
    RUN.get_or_init(|| boot("node VM", "", GUEST_TESTS, ""))
}

fn check(name: &str) {
    match vm_run() {
        Err(e) => panic!("cannot run the node VM: {e}"),
        Ok(run) => {
            if let Err(msg) = run.check(name) {
                panic!("{msg}");
            }
        }
    }
}

macro_rules! guest_tests {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Every test guest-node-tests.sh runs, in its order.
        const GUEST_TESTS: &[&str] = &[$(stringify!($name)),*];
        $(
            $(#[doc = $doc])*
            #[test]
            fn $name() {
                check(stringify!($name));
            }
        )*
    };
}

guest_tests! {
    /// PID 1 is systemd (in /init.scope), `systemctl is-system-running` says
    /// running or degraded (the failed units are named), and /sys/fs/cgroup is
    /// cgroup2fs with no v1 hierarchy mounted.
    node_systemd_pid1,
    /// A private containerd (own root, state and sockets; `SystemdCgroup = true`
    /// for runc and rust in its CRI section) runs a busybox container with
    /// `ctr run --runtime io.containerd.runc.v2 --runc-systemd-cgroup --cgroup
    /// system.slice:rsv2:smoke --memory-limit 33554432`: `rsv2-smoke.scope` is
    /// active in system.slice and holds the task, memory.max is set, an exec
    /// joins it, and the scope is gone after delete.
    node_containerd_runc,
    /// The same with our shim (`--runtime io.containerd.rust.v2 --cgroup
    /// system.slice:rsv2:smoke-rust`): its systemd cgroup driver makes
    /// `rsv2-smoke-rust.scope`.
    node_containerd_rust,
    /// The host-built `foundation` integration-test binary runs in the guest:
    /// `exit_codes`, on a private containerd of its own, with `IT_RUNTIME`.
    node_integration_binary,
    /// tests/tests/node_systemd.rs: `ctr run` with a `system.slice:rsv2:ID`
    /// cgroupsPath and memory, swap, cpu, cpuset and pids limits, under
    /// runc's shim and ours: `systemctl show` of the scope (Slice, Delegate,
    /// MemoryMax/Low/SwapMax, CPUQuota, AllowedCPUs/MemoryNodes, TasksMax,
    /// DevicePolicy and DeviceAllow) and its cgroup files match the spec,
    /// an exec joins it, pause freezes it, metrics work, kill --all empties
    /// it, and no unit is left after delete; the same for both shims.
    systemd_ctr_scope_matches_runc,
    /// tests/tests/node_systemd.rs: a CRI pod under `SystemdCgroup = true`
    /// with handlers `runc` and `rust`: the container's scope in the pod's
    /// slice, ExecSync in it, ContainerStats, UpdateContainerResources
    /// (unit properties and files), an OOMKilled container (exit 137), and
    /// no unit left after the pod's removal; the same for both shims.
    systemd_cri_pod_matches_runc,
    /// tests/tests/node_criu.rs: a counter checkpointed through containerd's
    /// Tasks API (runc's CheckpointOptions, left running), killed, and
    /// restored from the checkpoint in the content store goes on counting
    /// from where it was, its output reaches the new stdout, it is in the
    /// container's cgroup and its SIGKILL is reported as 137; the same
    /// under runc's shim.
    criu_counter_checkpoint_kill_restore_matches_runc,
    /// tests/tests/node_criu.rs: the same with `exit` (STOPPED after the
    /// checkpoint).
    criu_checkpoint_with_exit_matches_runc,
    /// tests/tests/node_criu.rs: a restore on cgroup v2 lands in a cgroup
    /// with the spec's memory.max and pids.max.
    criu_restore_with_limits_on_v2_matches_runc,
    /// tests/tests/node_criu.rs: `ctr containers checkpoint --task --rw` of
    /// an image-based counter, `ctr images export` and `import` of the
    /// checkpoint image, and `ctr containers restore --live` from it.
    criu_checkpoint_image_export_import_matches_runc,
    /// tests/tests/node_criu.rs: a counter with a terminal, created as
    /// `ctr run -t` does, checkpointed, killed and restored with a new
    /// terminal: it goes on counting, its output reaches the new terminal,
    /// its stdio is a terminal and its controlling one, ResizePty works.
    criu_terminal_checkpoint_restore_matches_runc,
}

#[test]
fn node_vm_ran_every_guest_test() {
    match vm_run() {
        Err(e) => panic!("cannot run the node VM: {e}"),
        Ok(run) => {
            if let Err(msg) = run.check_complete(GUEST_TESTS) {
                panic!("{msg}");
            }
        }
    }
}

/// The node booted hybrid (systemd.unified_cgroup_hierarchy=0: cgroup v1
/// controllers, systemd's tree in v2 at /sys/fs/cgroup/unified), once, for
/// the tests in [`HYBRID_TESTS`].
fn hybrid_run() -> &'static Result<VmRun, String> {
    static RUN: OnceLock<Result<VmRun, String>> = OnceLock::new();
    RUN.get_or_init(|| {
        // One VM at a time: the v2 boot first (TCG is CPU-bound).
        let _ = vm_run();
        boot("node VM, hybrid", "-hybrid", HYBRID_TESTS, "systemd.unified_cgroup_hierarchy=0")
    })
}

const HYBRID_TESTS: &[&str] = &["systemd_hybrid_ctr_scope_matches_runc"];

/// tests/tests/node_systemd.rs, on the node booted hybrid: `ctr run` with a
/// `system.slice:rsv2:ID` path under runc's shim and ours: the scope's v1
/// properties (MemoryLimit, CPUShares, TasksMax, DevicePolicy), the v1
/// files of every hierarchy, the init and an exec in the unit, the freezer
/// on pause, and no unit or directory left after delete; the same for both.
#[test]
fn systemd_hybrid_ctr_scope_matches_runc() {
    match hybrid_run() {
        Err(e) => panic!("cannot run the node VM (hybrid): {e}"),
        Ok(run) => {
            if let Err(msg) = run.check("systemd_hybrid_ctr_scope_matches_runc") {
                panic!("{msg}");
            }
            if let Err(msg) = run.check_complete(HYBRID_TESTS) {
                panic!("{msg}");
            }
        }
    }
}
