//! cgroup v2 behaviour of the runtime under test, checked inside a VM.
//!
//! This host's cgroups are v1 (hybrid), so `tests/vm/run-vm.sh` boots Debian's
//! cloud kernel under qemu (TCG) with cgroup2 mounted at /sys/fs/cgroup and
//! containerd, ctr, runc and our shim in the initramfs, and
//! `tests/vm/guest-tests.sh` runs the tests there. The VM boots once for the
//! whole file (about a minute); each guest test is one `#[test]` here, so
//! cargo reports them one by one, and `vm_ran_every_guest_test` fails when
//! the guest did not finish (no RSV2-DONE) or a result is missing.
//!
//! The runtime is `IT_RUNTIME` (default `io.containerd.rust.v2`), as for the
//! other integration tests: `IT_RUNTIME=io.containerd.runc.v2` checks the
//! expectations against runc. The console is kept in
//! `target/tmp/rsv2-vm-<runtime>.log`.
//!
//! Nothing is skipped: no root, no shim binary, no qemu or kernel to be had
//! (run-vm.sh installs qemu-system-x86 and downloads the kernel with apt when
//! missing) all fail every test with the reason.

use std::path::Path;
use std::sync::OnceLock;

use integration_tests::runtime_under_test;
use integration_tests::vm::{self, VmOptions, VmRun};

fn vm_run() -> &'static Result<VmRun, String> {
    static RUN: OnceLock<Result<VmRun, String>> = OnceLock::new();
    RUN.get_or_init(|| {
        let runtime = runtime_under_test();
        let console_file =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("rsv2-vm-{runtime}.log"));
        let run = vm::boot(&VmOptions {
            runtime,
            tests: Vec::new(),
            console_file,
            append: String::new(),
        });
        if let Ok(run) = &run {
            // Visible with --nocapture, and in the captured output of any failure.
            println!("cgroup-v2 VM: {}", run.timing_summary());
        }
        run
    })
}

fn check(name: &str) {
    match vm_run() {
        Err(e) => panic!("cannot run the cgroup-v2 VM: {e}"),
        Ok(run) => {
            if let Err(msg) = run.check(name) {
                panic!("{msg}");
            }
        }
    }
}

macro_rules! guest_tests {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Every test guest-tests.sh runs, in its order.
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
    /// `ctr run --rm` prints `hi`; the container's /proc/self/cgroup is a single `0::/...` line.
    v2_basic_run,
    /// `--memory-limit 33554432 --cpus 0.5`: memory.max 33554432, cpu.max `50000 100000`,
    /// the task pid in cgroup.procs; the cgroup directory is gone after delete.
    v2_limits,
    /// The init stage of a create and of an exec is cloned into the container's
    /// cgroup (clone3 CLONE_INTO_CGROUP): the exec sees `0::/`, and our shim never
    /// logs that it moved the init stage by pid.
    v2_clone_into_cgroup,
    /// `sh -c 'exit 7'` exits 7.
    v2_exit_code,
    /// `ctr task pause` gives PAUSED, cgroup.freeze 1 and `frozen 1` in cgroup.events;
    /// `ctr task resume` gives RUNNING and unfreezes.
    v2_pause_resume,
    /// Task/Update (sent to the shim over ttrpc by tests/vm/rsv2-update.rs; ctr 1.6
    /// has no `task update`) with memory limit 67108864 sets memory.max.
    v2_update,
    /// `ctr task metrics` prints the cgroup v2 table with a non-zero `memory.usage`.
    v2_metrics,
    /// A 16 MiB container allocating 64 MiB exits 137, and `ctr events` shows
    /// /tasks/oom for it before its /tasks/exit.
    v2_oom,
    /// The eBPF device filter: block device 8:0 cannot be used (EPERM), /dev/null can.
    v2_devices,
    /// mknod of a host disk: refused by our shim (the requirement);
    /// runc allows any mknod (`b *:* m`, `c *:* m`) and refuses only the open.
    v2_devices_mknod,
    /// A `ro` cgroup mount is a read-only cgroup2: writes under it fail with EROFS.
    v2_cgroup_ro,
    /// A terminal container and two terminal execs at once each get their own pty.
    v2_ptys,
    /// The device filter's verdicts for 18 devices (mknod, then open) under our
    /// shim are runc's, in the same boot.
    v2_device_verdicts_match_runc,
    /// ShimCgroup from a runtime options file: the shim runs in /rsv2-shims.
    v2_shim_cgroup,
}

#[test]
fn vm_ran_every_guest_test() {
    match vm_run() {
        Err(e) => panic!("cannot run the cgroup-v2 VM: {e}"),
        Ok(run) => {
            if let Err(msg) = run.check_complete(GUEST_TESTS) {
                panic!("{msg}");
            }
        }
    }
}
