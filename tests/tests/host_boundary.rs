//! The host boundary (issue #12): the six cases the issue reported, each
//! through containerd 1.6.20 with runc's shim beside ours in the same run.
//! Every one of them failed on the code before its fix:
//! 1. a `kernel.hostname` sysctl without a uts namespace changed the host's
//!    hostname;
//! 2. `linux.cgroupsPath` `/../../../../x` made a directory at the host's
//!    `/x` and wrote device rules into it;
//! 3. a hook that could not be executed killed the pod's shim
//!    (`hostile_specs.rs` holds the two-container version);
//! 4. a uid of 4294967295 ran as root, and uid mappings without a user
//!    namespace ran;
//! 5. containers got containerd's oom_score_adj instead of containerd's + 1;
//! 6. /sys/fs/cgroup under a `ro` cgroup mount (checked here on v1, and in
//!    the cgroup v2 VM).
//!
//! The wider sweep of hostile specs is `hostile_specs.rs`.

use std::path::Path;
use std::time::Duration;

use integration_tests::{host, runtime_under_test, wait_until, PrivateContainerd, RUNC_RUNTIME};
use serde_json::{json, Value};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The two runtimes: runc's shim (the reference) and the one under test.
fn runtimes() -> [String; 2] {
    [RUNC_RUNTIME.to_string(), runtime_under_test()]
}

/// Runs `spec` with `ctr run --rm` under `runtime`, then asserts the
/// container left nothing, whatever the verdict.
fn run(ctd: &PrivateContainerd, runtime: &str, id: &str, spec: &Value) -> std::process::Output {
    let out = ctd.run_config(id, ctd.write_spec(id, spec)).runtime(runtime).rm();
    if ctd.containers().contains(&id.to_string()) {
        ctd.ctr(&["containers", "rm", id]);
    }
    ctd.assert_no_leftovers(id);
    out
}

fn hostname() -> String {
    nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
}

#[test]
fn sysctl_of_a_shared_namespace_is_refused_and_the_host_keeps_its_name() {
    let ctd = PrivateContainerd::start();
    let before = hostname();
    for runtime in runtimes() {
        let id = ctd.unique_id("sysctl-uts");
        let mut spec = ctd.default_spec(&id, &["/bin/true"]);
        spec["linux"]["namespaces"] = json!(spec["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["type"] != "uts")
            .cloned()
            .collect::<Vec<_>>());
        spec["linux"]["sysctl"] = json!({ "kernel.hostname": format!("pwned-{id}") });
        let out = run(&ctd, &runtime, &id, &spec);
        let after = hostname();
        if after != before {
            // Put it back before failing: later tests and sessions need it.
            let _ = nix::unistd::sethostname(&before);
        }
        assert_eq!(after, before, "{runtime}: the host's hostname changed");
        assert!(!out.status.success(), "{runtime}: ran a spec that sets kernel.hostname without a uts namespace");
        assert!(stderr(&out).contains("kernel.hostname"), "{runtime}: the error does not name the sysctl: {}", stderr(&out));
        if runtime != RUNC_RUNTIME {
            assert!(stderr(&out).contains("linux.sysctl"), "the error does not name the field: {}", stderr(&out));
        }
    }
    ctd.finish();
}

#[test]
fn cgroups_path_never_leaves_the_hierarchy() {
    let ctd = PrivateContainerd::start();
    for runtime in runtimes() {
        let id = ctd.unique_id("cgescape");
        let target = format!("rsv2-escape-{}-{id}", std::process::id());
        let mut spec = ctd.default_spec(&id, &["/bin/sh", "-c", "cat /proc/self/cgroup"]);
        spec["linux"]["cgroupsPath"] = json!(format!("/../../../../{target}"));
        let out = run(&ctd, &runtime, &id, &spec);
        assert!(out.status.success(), "{runtime}: {}", stderr(&out));
        let escaped = [Path::new("/").join(&target), Path::new(host::CGROUP_ROOT).join(&target)];
        for e in &escaped {
            let there = e.exists();
            if there && e.starts_with(host::CGROUP_ROOT) {
                let _ = std::fs::remove_dir(e);
            } else if there {
                // A plain directory with the device rules written into it.
                let _ = std::fs::remove_dir_all(e);
            }
            assert!(!there, "{runtime}: {} was created outside the cgroup hierarchies", e.display());
        }
        // Cleaned, the path is /<target> in each hierarchy: inside it.
        assert!(stdout(&out).contains(&format!(":/{target}")), "{runtime}: not in /{target}: {}", stdout(&out));
        for dir in host::cgroup_dirs(&target) {
            let _ = std::fs::remove_dir(&dir);
        }
    }
    // The root itself, and a systemd-looking path that walks up, are refused.
    for (path, words) in [("/..", "root of the cgroup hierarchy"), ("x.slice:p:n/../../y", "'/'")] {
        let id = ctd.unique_id("cgroot");
        let mut spec = ctd.default_spec(&id, &["/bin/true"]);
        spec["linux"]["cgroupsPath"] = json!(path);
        let out = run(&ctd, &runtime_under_test(), &id, &spec);
        assert!(!out.status.success(), "{path}: ran");
        assert!(stderr(&out).contains("linux.cgroupsPath") && stderr(&out).contains(words), "{path}: {}", stderr(&out));
    }
    ctd.finish();
}

#[test]
fn ids_that_cannot_be_set_are_refused() {
    let ctd = PrivateContainerd::start();
    for runtime in runtimes() {
        for (field, user) in [
            ("process.user.uid", json!({"uid": 4294967295u32, "gid": 0})),
            ("process.user.uid", json!({"uid": 2147483648u32, "gid": 0})),
            ("process.user.gid", json!({"uid": 0, "gid": 4294967295u32})),
            ("process.user.additionalGids", json!({"uid": 0, "gid": 0, "additionalGids": [4294967295u32]})),
        ] {
            let id = ctd.unique_id("badid");
            let mut spec = ctd.default_spec(&id, &["/bin/id", "-u"]);
            spec["process"]["user"] = user.clone();
            let out = run(&ctd, &runtime, &id, &spec);
            assert!(!out.status.success(), "{runtime}: {user} ran as {:?}", stdout(&out));
            assert!(stderr(&out).contains("2147483647"), "{runtime}: {user}: {}", stderr(&out));
            if runtime != RUNC_RUNTIME {
                assert!(stderr(&out).contains(field), "{user}: the error does not name {field}: {}", stderr(&out));
            }
        }
    }
    // Mappings without a user namespace mean nothing: runc 1.1.5 ignores
    // them, we refuse (a deliberate difference, README).
    let id = ctd.unique_id("mapnouserns");
    let mut spec = ctd.default_spec(&id, &["/bin/true"]);
    spec["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    spec["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    let out = run(&ctd, &runtime_under_test(), &id, &spec);
    assert!(!out.status.success(), "uidMappings without a user namespace ran");
    assert!(stderr(&out).contains("linux.uidMappings"), "{}", stderr(&out));
    ctd.finish();
}

/// oom_score_adj of a process.
fn oom_score(pid: u32) -> i32 {
    std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap_or_default().trim().parse().unwrap_or(i32::MIN)
}

#[test]
fn shims_and_containers_score_one_above_containerd() {
    let ctd = PrivateContainerd::start();
    let containerd = oom_score(ctd.containerd_pid());
    let want = (containerd + 1).min(1000);
    for runtime in runtimes() {
        let id = ctd.unique_id("oomscore");
        let task = ctd.run(&id, &["/bin/sh", "-c", "cat /proc/self/oom_score_adj; sleep 600"]).runtime(&runtime).detach();
        let shim = ctd.shim_server(&id).unwrap_or_else(|| panic!("{runtime}: no shim for {id}"));
        assert_eq!(oom_score(shim.pid), want, "{runtime}: the shim's oom_score_adj (containerd's is {containerd})");
        assert_eq!(oom_score(task.pid), want, "{runtime}: the container's oom_score_adj (containerd's is {containerd})");
        // An exec inherits it too.
        let out = ctd.exec(&id, "score", &["/bin/cat", "/proc/self/oom_score_adj"]).output();
        assert_eq!(stdout(&out).trim(), want.to_string(), "{runtime}: the exec's oom_score_adj");
        ctd.remove(&id);
    }
    ctd.finish();
}

#[test]
fn a_read_only_cgroup_mount_is_read_only_on_v1() {
    let ctd = PrivateContainerd::start();
    let script = "grep ' /sys/fs/cgroup ' /proc/self/mounts; touch /sys/fs/cgroup/x 2>&1; \
                  for d in /sys/fs/cgroup/*; do touch $d/x 2>/dev/null && echo WRITABLE $d; done; \
                  ls /sys/fs/cgroup";
    for cgroupns in [false, true] {
        let id = ctd.unique_id("cgro");
        let mut spec = ctd.default_spec(&id, &["/bin/sh", "-c", script]);
        spec["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        }));
        if cgroupns {
            // Each hierarchy is then mounted afresh, by its controllers or
            // its name= (a named hierarchy mounted by its directory's name
            // failed with EINVAL).
            spec["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "cgroup"}));
        }
        let out = run(&ctd, &runtime_under_test(), &id, &spec);
        let text = stdout(&out);
        assert!(out.status.success(), "cgroupns={cgroupns}: {}{}", text, stderr(&out));
        let tmpfs = text.lines().find(|l| l.contains(" /sys/fs/cgroup tmpfs ")).unwrap_or_default();
        assert!(tmpfs.split_whitespace().nth(3).is_some_and(|o| o.split(',').any(|f| f == "ro")), "cgroupns={cgroupns}: the tmpfs is not ro: {text}");
        assert!(text.contains("Read-only file system"), "cgroupns={cgroupns}: {text}");
        assert!(!text.contains("WRITABLE"), "cgroupns={cgroupns}: {text}");
        for h in ["memory", "cpu", "pids", "systemd"] {
            assert!(text.lines().any(|l| l == h), "cgroupns={cgroupns}: no {h} hierarchy: {text}");
        }
    }
    ctd.finish();
}

#[test]
fn a_failed_create_leaves_the_shim_serving() {
    // A hook that cannot be executed, at an absolute path (a relative one
    // is refused before anything runs): the shim survives, says why, and
    // nothing of the container is left.
    let ctd = PrivateContainerd::start();
    let id = ctd.unique_id("nohook");
    let mut spec = ctd.default_spec(&id, &["/bin/true"]);
    spec["hooks"] = json!({"prestart": [{"path": format!("/nonexistent/{id}/hook")}]});
    for _ in 0..5 {
        let out = run(&ctd, &runtime_under_test(), &id, &spec);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("prestart hook") && stderr(&out).contains("No such file"), "{}", stderr(&out));
        assert!(!stderr(&out).contains("ttrpc: closed"), "the shim died: {}", stderr(&out));
    }
    assert!(wait_until(Duration::from_secs(10), || ctd.shims().is_empty()));
    ctd.finish();
}
