//! The bench's floor must be a correct shim, or the overheads above it
//! mean nothing: the null shim (src/null_shim.rs) through containerd's CRI
//! and through ctr, with no timing. One shim serves the pod; the pod and
//! its container start, ExecSync answers exit 0, the container's kill is
//! reported, and everything goes away.

use integration_tests::cri::{CriContainerd, CriOptions, Pod};
use integration_tests::{host, PrivateContainerd};

fn null_shim() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_containerd-shim-null-v2"))
}

#[test]
fn null_shim_serves_a_cri_pod() {
    let cri = CriContainerd::start_with(CriOptions {
        extra_toml: "\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.null]\n  runtime_type = \"io.containerd.null.v2\"\n".into(),
        files: Vec::new(),
    });
    std::os::unix::fs::symlink(null_shim(), cri.ctd().dir().join("bin/containerd-shim-null-v2")).expect("link the null shim");
    let config = cri.pod_config("null");
    let id = cri.must("RunPodSandbox", cri.try_run_pod_with_handler(&config, "null"));
    let pod = Pod { id: id.clone(), config };
    let c = cri.must("CreateContainer", cri.try_create_container(&pod, &cri.container_config("c", &["sleep", "1000"])));
    cri.must("StartContainer", cri.try_start_container(&c));
    let out = cri.must("ExecSync", cri.try_exec_sync(&c, &["true"], 10));
    assert_eq!(out.exit_code, 0);
    let socket = cri.ctd().socket().display().to_string();
    let shims: Vec<u32> = host::processes()
        .into_iter()
        .filter(|p| p.cmdline[0].ends_with("containerd-shim-null-v2") && p.flag("-address") == Some(socket.as_str()) && p.cmdline.last().is_some_and(|a| a == "serve"))
        .map(|p| p.pid)
        .collect();
    assert_eq!(shims.len(), 1, "one null shim serves the pod and its container: {shims:?}");
    // A stop kills the container: the null shim reports the signal's exit.
    cri.must("StopContainer", cri.try_stop_container(&c, 0));
    let status = cri.container_status(&c);
    assert_eq!(status.exit_code, 137, "{status:?}");
    cri.must("StopPodSandbox", cri.try_stop_pod(&id));
    cri.must("RemovePodSandbox", cri.try_remove_pod(&id));
    assert!(integration_tests::wait_until(std::time::Duration::from_secs(10), || shims.iter().all(|p| !host::is_alive(*p))), "the null shim outlived its pod");
}

/// The bench's start and exec rows through ctr: `ctr run --rm ... /bin/true`
/// ends with exit 0 (the null shim's `true` exits as it starts), an exec
/// into a detached container exits 0, a kill is reported as 137, and no
/// null shim is left.
#[test]
fn null_shim_serves_ctr_run_and_exec() {
    let ctd = PrivateContainerd::start();
    std::os::unix::fs::symlink(null_shim(), ctd.dir().join("bin/containerd-shim-null-v2")).expect("link the null shim");
    let id = ctd.unique_id("null-true");
    let out = ctd.run(&id, &["/bin/true"]).runtime("io.containerd.null.v2").rm();
    assert!(out.status.success(), "ctr run --rm of /bin/true on the null shim: {}", String::from_utf8_lossy(&out.stderr));
    assert!(!ctd.containers().contains(&id), "--rm left the container");

    let id = ctd.unique_id("null-sleep");
    let task = ctd.run(&id, &["/bin/sleep", "1000"]).runtime("io.containerd.null.v2").detach();
    assert_eq!(task.status, "RUNNING", "{task:?}");
    let exec = ctd.ctr(&["task", "exec", "--fifo-dir", &ctd.dir().join("fifo").display().to_string(), "--exec-id", "e1", &id, "/bin/true"]);
    assert!(exec.status.success(), "exec on the null shim: {}", String::from_utf8_lossy(&exec.stderr));
    ctd.ctr_ok(&["task", "kill", "-s", "SIGKILL", &id]);
    let stopped = ctd.wait_for_status(&id, "STOPPED", std::time::Duration::from_secs(10));
    assert_eq!(stopped.status, "STOPPED");
    let ls = ctd.ctr_ok(&["task", "ls"]);
    ctd.ctr_ok(&["task", "delete", &id]);
    ctd.ctr_ok(&["containers", "rm", &id]);
    assert!(integration_tests::wait_until(std::time::Duration::from_secs(10), || ctd.shims().is_empty()), "a null shim outlived its containers; task ls was:\n{ls}");
    ctd.finish();
}
