//! Conformance with runc (issue #3): "The same bundle started through
//! io.containerd.runc.v2 and through io.containerd.rust.v2 must look the same
//! from inside the container." Each test runs the same spec under runc's shim
//! and under the runtime under test, through the same private containerd,
//! and fails on any difference (printing a unified diff), plus absolute
//! checks so that both cannot be wrong together. The escape tests check
//! protections that must hold whatever runc does, each built so that it
//! would observe the escape if the protection were missing.
//!
//! Where runc 1.1.5 (Debian bookworm) itself departs from the runtime spec,
//! the test says so and holds only our shim to the spec:
//! - it runs poststart hooks during `create`, before startContainer hooks
//!   and with status "created" (runc#1710; moved to `runc start` by
//!   runc#5186);
//! - it binds whatever the image has at /dev/null over masked paths, so an
//!   image's /dev/null file or symlink is exposed through them
//!   (CVE-2025-31133, fixed in runc 1.2.8 and 1.3.3):
//!   `masked_paths_need_the_real_dev_null` runs only the runtime under test
//!   and fails under `IT_RUNTIME=io.containerd.runc.v2`.
//!
//! The shell scripts run in the container are busybox's; the escape tests
//! also need `cc` (the C compiler Rust links with) for their payload.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use integration_tests::check::{REACT, STOPPED};
use integration_tests::probe::{
    add_bind, add_mount, add_user_namespace, allow_default_devices, build_exe_payload, field,
    file_ids, host_runtime_binaries, normalise, plant_exe_payload, plant_symlink, private_rootfs,
    private_shim_copy, remove_namespace, section, stderr, stdout, unified_diff, ExeReport,
    HostBinary, PROBE,
};
use integration_tests::{
    host, runtime_under_test, testing_rust_shim, wait_until, PrivateContainerd, RUNC_RUNTIME,
};
use serde_json::{json, Value};


/// The two runtimes compared: runc's shim first (the reference), then ours.
fn runtimes() -> [String; 2] {
    [RUNC_RUNTIME.to_string(), runtime_under_test()]
}

/// [`runtimes`] with a tag each, for file names: `reference` (runc's shim)
/// and `tested` (the runtime under test, which may be runc's shim too).
fn tagged_runtimes() -> [(&'static str, String); 2] {
    let [reference, tested] = runtimes();
    [("reference", reference), ("tested", tested)]
}

/// `ctr task exec --exec-id EXEC_ID [FLAGS] ID ARGV...`, whatever its status.
fn exec(ctd: &PrivateContainerd, id: &str, exec_id: &str, flags: &[&str], argv: &[&str]) -> Output {
    ctd.exec(id, exec_id, argv).flags(flags).output()
}

/// Renders a ctr output and the end of containerd's log for a message.
fn show(ctd: &PrivateContainerd, out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n{}",
        out.status,
        stdout(out),
        stderr(out),
        ctd.log_tail(30)
    )
}

/// Asserts that a failed `ctr run --rm` left nothing: no container, no
/// task, nothing on the host.
fn assert_gone(ctd: &PrivateContainerd, id: &str) {
    assert!(
        !ctd.containers().contains(&id.to_string()),
        "a failed ctr run --rm left container {id}"
    );
    assert!(ctd.task(id).is_none(), "a failed ctr run left task {id}");
    ctd.assert_no_leftovers(id);
}

/// Fails with every problem found, one paragraph each.
fn assert_no_problems(problems: &[String], what: &str) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s)\n\n{}",
        problems.len(),
        problems.join("\n\n")
    );
}

// ---------------------------------------------------------------------------
// 1. The probe under runc and under ours, for each ctr flag set.
// ---------------------------------------------------------------------------

/// The flag sets of the matrix: a name and the `ctr run` flags.
const FLAG_SETS: &[(&str, &[&str])] = &[
    ("no flags", &[]),
    ("--seccomp", &["--seccomp"]),
    ("--read-only", &["--read-only"]),
    ("--privileged", &["--privileged"]),
    (
        "--cap-add CAP_SYS_ADMIN --cap-drop CAP_NET_RAW",
        &["--cap-add", "CAP_SYS_ADMIN", "--cap-drop", "CAP_NET_RAW"],
    ),
    ("--net-host", &["--net-host"]),
    (
        "--env FOO=bar --env X=y",
        &["--env", "FOO=bar", "--env", "X=y"],
    ),
    // A cwd that does not exist is created, as runc does.
    ("--cwd /tmp/newdir", &["--cwd", "/tmp/newdir"]),
    (
        "--memory-limit 33554432 --cpus 0.5",
        &["--memory-limit", "33554432", "--cpus", "0.5"],
    ),
];

/// Name of the matrix entry that runs a `--config` spec with a user namespace.
const USERNS: &str = "--config with a user namespace (0:100000:65536)";

/// The capability sets ctr's default spec gives.
const DEFAULT_CAPS: &str = "00000000a80425fb";

/// The fd numbers the fds section lists.
fn fds(out: &str) -> BTreeSet<String> {
    section(out, "fds")
        .iter()
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_string))
        .collect()
}

/// Our own capability bounding set: what `--privileged` hands a container.
fn own_bounding_set() -> String {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| v.trim().to_string())
        .expect("CapBnd in /proc/self/status")
}

/// Absolute expectations for one matrix entry, so that runc and ours cannot
/// agree on a wrong answer.
fn matrix_expectations(set: &str, out: &str) -> Vec<String> {
    let mut bad = Vec::new();
    let mut expect = |what: String, ok: bool| {
        if !ok {
            bad.push(what);
        }
    };
    let status = |key: &str| field(out, "status", key).unwrap_or_default();
    let fd_set = fds(out);
    expect(
        format!("only fds 0, 1 and 2 are open in the container, got {fd_set:?}"),
        fd_set == ["0", "1", "2"].iter().map(|s| s.to_string()).collect(),
    );
    expect(
        format!(
            "NoNewPrivs is 1 (ctr's spec sets it), got {:?}",
            status("NoNewPrivs")
        ),
        status("NoNewPrivs") == "1",
    );
    let masked_ok = |f: &str| field(out, "masked", f).is_some_and(|v| v == "empty");
    if set != "--privileged" {
        for f in ["/proc/keys", "/proc/timer_list"] {
            expect(format!("{f} is masked (reads empty)"), masked_ok(f));
        }
        expect(
            "/proc/sys is read-only".to_string(),
            section(out, "readonly")
                .iter()
                .any(|l| l == "domainname rc=1"),
        );
    }
    let expected_caps = match set {
        "--privileged" => own_bounding_set(),
        "--cap-add CAP_SYS_ADMIN --cap-drop CAP_NET_RAW" => "00000000a82405fb".to_string(),
        _ => DEFAULT_CAPS.to_string(),
    };
    for cap in ["CapPrm", "CapEff", "CapBnd"] {
        expect(
            format!("{cap} is {expected_caps}, got {:?}", status(cap)),
            status(cap) == expected_caps,
        );
    }
    let seccomp = if set == "--seccomp" { "2" } else { "0" };
    expect(
        format!("Seccomp is {seccomp}, got {:?}", status("Seccomp")),
        status("Seccomp") == seccomp,
    );
    let maps = if set == USERNS {
        "0 100000 65536"
    } else {
        "0 0 4294967295"
    };
    for f in ["uid_map", "gid_map"] {
        let v = field(out, "userns", f).unwrap_or_default();
        expect(format!("{f} is {maps:?}, got {v:?}"), v == maps);
    }
    match set {
        "--read-only" => {
            let root = section(out, "mounts")
                .into_iter()
                .find(|l| l.starts_with("/ "));
            expect(
                format!("/ is mounted read-only, got {root:?}"),
                root.as_deref().is_some_and(|l| l.contains(" ro,")),
            );
        }
        "--env FOO=bar --env X=y" => {
            let env = section(out, "environ");
            expect(
                format!("FOO=bar and X=y are in the process environment, got {env:?}"),
                env.iter().any(|l| l == "FOO=bar") && env.iter().any(|l| l == "X=y"),
            );
        }
        "--cwd /tmp/newdir" => {
            let cwd = section(out, "cwd");
            expect(
                format!("the cwd is /tmp/newdir, got {cwd:?}"),
                cwd.iter().all(|l| l == "/tmp/newdir") && !cwd.is_empty(),
            );
        }
        "--seccomp" => expect(
            "unshare is refused under the default seccomp profile".to_string(),
            section(out, "seccomp")
                .iter()
                .any(|l| l == "unshare -n rc=1"),
        ),
        "--cap-add CAP_SYS_ADMIN --cap-drop CAP_NET_RAW" | "--privileged" => expect(
            "unshare works with CAP_SYS_ADMIN".to_string(),
            section(out, "seccomp")
                .iter()
                .any(|l| l == "unshare -n rc=0"),
        ),
        _ => {}
    }
    bad
}

#[test]
fn conformance_matrix() {
    let ctd = PrivateContainerd::start();
    let newdir = ctd.rootfs().join("tmp/newdir");
    let mut problems = Vec::new();
    let mut compared = 0;

    let mut entries: Vec<(String, [Option<String>; 2])> = Vec::new();
    for (set, flags) in FLAG_SETS {
        let mut outputs: [Option<String>; 2] = [None, None];
        for (k, runtime) in runtimes().iter().enumerate() {
            // Each run must find /tmp/newdir missing, to see who creates it.
            let _ = fs::remove_dir_all(&newdir);
            let id = ctd.unique_id("matrix");
            let out = ctd
                .run(&id, &["/bin/sh", "-c", PROBE])
                .runtime(runtime)
                .flags(flags)
                .rm();
            if !out.status.success() {
                problems.push(format!(
                    "[{set}] the probe failed under {runtime}\n{}",
                    show(&ctd, &out)
                ));
            } else {
                outputs[k] = Some(normalise(&stdout(&out), &id));
            }
            ctd.assert_no_leftovers(&id);
            if *set == "--cwd /tmp/newdir" && out.status.success() && !newdir.is_dir() {
                problems.push(format!(
                    "[{set}] {runtime} did not create the missing cwd {}",
                    newdir.display()
                ));
            }
        }
        entries.push((set.to_string(), outputs));
    }
    let _ = fs::remove_dir_all(&newdir);

    // ctr 1.6's --uidmap does nothing with --rootfs: the user namespace comes
    // from a --config spec, `ctr oci spec` plus the namespace and the maps.
    let mut outputs: [Option<String>; 2] = [None, None];
    for (k, runtime) in runtimes().iter().enumerate() {
        let id = ctd.unique_id("matrix-userns");
        let mut spec = ctd.default_spec(&id, &["/bin/sh", "-c", PROBE]);
        add_user_namespace(&mut spec, 100000, 65536);
        let out = ctd
            .run_config(&id, ctd.write_spec(&id, &spec))
            .runtime(runtime)
            .rm();
        if !out.status.success() {
            problems.push(format!(
                "[{USERNS}] the probe failed under {runtime}\n{}",
                show(&ctd, &out)
            ));
        } else {
            outputs[k] = Some(normalise(&stdout(&out), &id));
        }
        ctd.assert_no_leftovers(&id);
    }
    entries.push((USERNS.to_string(), outputs));

    let [reference, ours] = runtimes();
    for (set, [r, o]) in &entries {
        for (runtime, out) in [(&reference, r), (&ours, o)] {
            if let Some(out) = out {
                for bad in matrix_expectations(set, out) {
                    problems.push(format!("[{set}] under {runtime}: {bad}"));
                }
            }
        }
        if let (Some(r), Some(o)) = (r, o) {
            compared += 1;
            if let Some(diff) = unified_diff(
                r,
                o,
                &format!("{reference} [{set}]"),
                &format!("{ours} [{set}]"),
            ) {
                problems.push(format!(
                    "[{set}] the container sees a different system:\n{diff}"
                ));
            }
        }
    }
    assert_no_problems(
        &problems,
        &format!(
            "conformance matrix ({compared} of {} flag sets compared)",
            entries.len()
        ),
    );
    ctd.finish();
}

// ---------------------------------------------------------------------------
// 2. One rich --config spec.
// ---------------------------------------------------------------------------

/// What the rich spec adds to the probe.
const RICH_EXTRAS: &str = r#"echo "== rich"
echo "secret=[$(cat /etc/secret 2>&1)]"
echo "touch=$(touch /etc/x 2>&1; echo rc=$?)" | tr '\n' ' '; echo
echo "scratch_kb=$(df -k /scratch | awk 'NR==2 {print $2}')"
echo "scratch_mode=$(stat -c %a /scratch)"
echo "srv_mode=$(stat -c %a /srv)"
echo "ip_forward=$(cat /proc/sys/net/ipv4/ip_forward 2>&1)"
echo "msgmax=$(cat /proc/sys/kernel/msgmax 2>&1)"
echo "hostname=$(hostname)"
echo "id=$(id)"
echo "umask=$(umask)"
echo "pwd=$(pwd)"
"#;

const RICH_SECRET: &str = "rich-secret-content";

/// `ctr oci spec` plus everything the rich test asks for. Valid for runc:
/// /tmp (the cwd) exists in the image, /scratch is created by the runtime,
/// the masked /etc/secret exists, and both sysctls belong to namespaces the
/// spec creates (network, ipc). Plus a tmpfs over the image's /srv.
fn rich_spec(ctd: &PrivateContainerd, id: &str, rootfs: &Path) -> Value {
    let script = format!("{PROBE}{RICH_EXTRAS}");
    let mut spec = ctd.default_spec(id, &["/bin/sh", "-c", &script]);
    spec["root"]["path"] = rootfs.display().to_string().into();
    spec["hostname"] = "rich-host".into();
    let process = &mut spec["process"];
    process["user"] =
        json!({ "uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 0o027 });
    process["rlimits"] = json!([
        { "type": "RLIMIT_NOFILE", "hard": 512, "soft": 512 },
        { "type": "RLIMIT_NPROC", "hard": 100, "soft": 100 },
    ]);
    process["noNewPrivileges"] = true.into();
    process["cwd"] = "/tmp".into();
    for set in [
        "bounding",
        "effective",
        "permitted",
        "inheritable",
        "ambient",
    ] {
        let caps = &mut process["capabilities"][set];
        if !caps.is_array() {
            *caps = json!([]);
        }
        let caps = caps.as_array_mut().expect("array");
        if !caps.iter().any(|c| c == "CAP_NET_BIND_SERVICE") {
            caps.push("CAP_NET_BIND_SERVICE".into());
        }
    }
    spec["linux"]["sysctl"] = json!({ "net.ipv4.ip_forward": "1", "kernel.msgmax": "4096" });
    add_mount(
        &mut spec,
        "/scratch",
        "tmpfs",
        "tmpfs",
        &["size=1m", "mode=1777"],
    );
    // A tmpfs over a directory the image has (mode 0700), without a mode.
    add_mount(&mut spec, "/srv", "tmpfs", "tmpfs", &["size=1m"]);
    spec["linux"]["maskedPaths"]
        .as_array_mut()
        .expect("maskedPaths")
        .push("/etc/secret".into());
    spec["linux"]["readonlyPaths"]
        .as_array_mut()
        .expect("readonlyPaths")
        .push("/etc".into());
    spec
}

/// Absolute expectations of the rich spec.
fn rich_expectations(out: &str) -> Vec<String> {
    let mut bad = Vec::new();
    let mut eq = |what: &str, got: Option<String>, want: &str| {
        if got.as_deref() != Some(want) {
            bad.push(format!("{what}: expected {want:?}, got {got:?}"));
        }
    };
    eq("/etc/secret is masked", field(out, "rich", "secret"), "[]");
    eq(
        "the tmpfs at /scratch has size=1m",
        field(out, "rich", "scratch_kb"),
        "1024",
    );
    eq(
        "the tmpfs at /scratch has mode=1777",
        field(out, "rich", "scratch_mode"),
        "1777",
    );
    eq(
        "sysctl net.ipv4.ip_forward",
        field(out, "rich", "ip_forward"),
        "1",
    );
    eq("sysctl kernel.msgmax", field(out, "rich", "msgmax"), "4096");
    eq("hostname", field(out, "rich", "hostname"), "rich-host");
    eq(
        "id",
        field(out, "rich", "id"),
        "uid=1000 gid=1000 groups=10,20",
    );
    eq("umask", field(out, "rich", "umask"), "0027");
    eq("cwd", field(out, "rich", "pwd"), "/tmp");
    eq("Uid", field(out, "status", "Uid"), "1000 1000 1000 1000");
    eq("Gid", field(out, "status", "Gid"), "1000 1000 1000 1000");
    eq("Groups", field(out, "status", "Groups"), "10 20");
    // CAP_NET_BIND_SERVICE (bit 10) survives the switch to uid 1000 only
    // through the ambient set.
    for cap in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        eq(cap, field(out, "status", cap), "0000000000000400");
    }
    eq("CapBnd", field(out, "status", "CapBnd"), DEFAULT_CAPS);
    eq("NoNewPrivs", field(out, "status", "NoNewPrivs"), "1");
    let touch = field(out, "rich", "touch").unwrap_or_default();
    if !touch.contains("Read-only file system") {
        bad.push(format!(
            "touch /etc/x must fail with EROFS (/etc is a readonly path), got {touch:?}"
        ));
    }
    let limits = section(out, "limits");
    for (name, want) in [("Max open files", "512 512"), ("Max processes", "100 100")] {
        let got = limits.iter().find(|l| l.starts_with(name)).map(|l| {
            l[name.len()..]
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        });
        if got.as_deref() != Some(want) {
            bad.push(format!("{name}: expected {want}, got {got:?}"));
        }
    }
    let mounts = section(out, "mounts");
    let etc = mounts.iter().find(|l| l.starts_with("/etc "));
    if !etc.is_some_and(|l| l.contains(" ro,")) {
        bad.push(format!("/etc is not a read-only mount: {etc:?}"));
    }
    let scratch = mounts.iter().find(|l| l.starts_with("/scratch "));
    if !scratch.is_some_and(|l| l.starts_with("/scratch tmpfs ")) {
        bad.push(format!("/scratch is not a tmpfs: {scratch:?}"));
    }
    if out.contains(RICH_SECRET) {
        bad.push("the masked /etc/secret's content is visible".to_string());
    }
    bad
}

#[test]
fn rich_config_spec() {
    let ctd = PrivateContainerd::start();
    let mut problems = Vec::new();
    let mut outputs = Vec::new();
    for (name, runtime) in tagged_runtimes() {
        // Each runtime gets the same fresh image: what one run creates in
        // it (/scratch) must not change what the other sees.
        let rootfs = private_rootfs(&ctd, &format!("rich-rootfs-{name}"));
        fs::write(rootfs.join("etc/secret"), format!("{RICH_SECRET}\n")).expect("write etc/secret");
        fs::create_dir(rootfs.join("srv")).expect("mkdir srv");
        fs::set_permissions(
            rootfs.join("srv"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .expect("chmod srv");
        let id = ctd.unique_id("rich");
        let spec = rich_spec(&ctd, &id, &rootfs);
        let out = ctd
            .run_config(&id, ctd.write_spec(&id, &spec))
            .runtime(&runtime)
            .rm();
        ctd.assert_no_leftovers(&id);
        if !out.status.success() {
            problems.push(format!(
                "the rich spec failed under {runtime}\n{}",
                show(&ctd, &out)
            ));
            continue;
        }
        let text = normalise(&stdout(&out), &id);
        for bad in rich_expectations(&text) {
            problems.push(format!("under {runtime}: {bad}"));
        }
        outputs.push((runtime, text));
    }
    if let [(r_name, r), (o_name, o)] = outputs.as_slice() {
        if let Some(diff) = unified_diff(r, o, r_name, o_name) {
            problems.push(format!("the container sees a different system:\n{diff}"));
        }
    }
    assert_no_problems(&problems, "rich --config spec");
    ctd.finish();
}

// ---------------------------------------------------------------------------
// 3. Hooks.
// ---------------------------------------------------------------------------

const HOOK_KINDS: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// The status a hook of `kind` must see in its state (runtime spec,
/// "Lifecycle"): the create-time hooks run while the container is being
/// created, startContainer after create returned, poststart once the
/// program runs, poststop after it stopped.
fn hook_status(kind: &str) -> &'static str {
    match kind {
        "prestart" | "createRuntime" | "createContainer" => "creating",
        "startContainer" => "created",
        "poststart" => "running",
        _ => "stopped",
    }
}

/// A spec whose six hooks each append their kind to `<dir>/order` and save
/// their stdin (the state) to `<dir>/<kind>.json`. `dir` is bound at /hooks
/// for startContainer, which runs inside the container.
fn hooks_spec(ctd: &PrivateContainerd, id: &str, dir: &Path) -> Value {
    let mut spec = ctd.default_spec(id, &["/bin/sh", "-c", "echo main > /hooks/main"]);
    allow_default_devices(&mut spec);
    add_bind(&mut spec, "/hooks", dir);
    let mut hooks = serde_json::Map::new();
    for kind in HOOK_KINDS {
        let d = if kind == "startContainer" {
            "/hooks".to_string()
        } else {
            dir.display().to_string()
        };
        let script = format!("echo {kind} >> {d}/order && cat > {d}/{kind}.json");
        hooks.insert(
            kind.to_string(),
            json!([{ "path": "/bin/sh", "args": ["sh", "-c", script] }]),
        );
    }
    spec["hooks"] = Value::Object(hooks);
    spec
}

#[test]
fn hooks_order_and_state() {
    let ctd = PrivateContainerd::start();
    let mut problems = Vec::new();
    let mut statuses: BTreeMap<String, BTreeMap<&str, String>> = BTreeMap::new();
    for (name, runtime) in tagged_runtimes() {
        let dir = ctd.dir().join(format!("hooks-{name}"));
        fs::create_dir(&dir).expect("mkdir hooks dir");
        let id = ctd.unique_id("hooks");
        let spec = hooks_spec(&ctd, &id, &dir);
        let out = ctd
            .run_config(&id, ctd.write_spec(&id, &spec))
            .runtime(&runtime)
            .rm();
        if !out.status.success() {
            problems.push(format!(
                "the hooks spec failed under {runtime}\n{}",
                show(&ctd, &out)
            ));
            ctd.assert_no_leftovers(&id);
            continue;
        }
        let order_file = dir.join("order");
        let read_order = || -> Vec<String> {
            fs::read_to_string(&order_file)
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect()
        };
        wait_until(Duration::from_secs(10), || {
            read_order().iter().any(|k| k == "poststop")
        });
        ctd.assert_no_leftovers(&id);
        let order = read_order();
        if !dir.join("main").exists() {
            problems.push(format!("{runtime}: the container's program did not run"));
        }
        if runtime == RUNC_RUNTIME {
            // runc 1.1.5 runs poststart during create: hold it to the rest.
            let without = |v: &[String]| -> Vec<String> {
                v.iter().filter(|k| *k != "poststart").cloned().collect()
            };
            let expected: Vec<String> = HOOK_KINDS.iter().map(|s| s.to_string()).collect();
            if without(&order) != without(&expected) || !order.iter().any(|k| k == "poststart") {
                problems.push(format!("{runtime}: hooks ran in the order {order:?}"));
            }
        } else if order != HOOK_KINDS {
            problems.push(format!(
                "{runtime}: hooks ran in the order {order:?}, expected {HOOK_KINDS:?}"
            ));
        }

        let bundle = ctd.bundle(&id).display().to_string();
        let mut host_pids = BTreeSet::new();
        for kind in HOOK_KINDS {
            let file = dir.join(format!("{kind}.json"));
            let text = fs::read_to_string(&file).unwrap_or_default();
            let state: Value = match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(e) => {
                    problems.push(format!(
                        "{runtime}: {kind} got no state JSON ({e}): {text:?}"
                    ));
                    continue;
                }
            };
            let status = state["status"].as_str().unwrap_or_default().to_string();
            statuses
                .entry(kind.to_string())
                .or_default()
                .insert(name, status.clone());
            let mut bad = Vec::new();
            if state["id"] != id.as_str() {
                bad.push(format!("id {} instead of {id}", state["id"]));
            }
            if state["bundle"] != bundle.as_str() {
                bad.push(format!("bundle {} instead of {bundle}", state["bundle"]));
            }
            let pid = state["pid"].as_i64();
            if kind != "poststop" && !pid.is_some_and(|p| p > 0) {
                bad.push(format!("pid {} is not a pid", state["pid"]));
            }
            if ["prestart", "createRuntime", "poststart"].contains(&kind) {
                host_pids.extend(pid);
            }
            // runc 1.1.5's poststart runs at create time and says "created".
            let held = !(runtime == RUNC_RUNTIME && kind == "poststart");
            if held && status != hook_status(kind) {
                bad.push(format!(
                    "status {status:?} instead of {:?}",
                    hook_status(kind)
                ));
            }
            if !bad.is_empty() {
                problems.push(format!(
                    "{runtime}: the {kind} state is wrong: {}\n  {text}",
                    bad.join("; ")
                ));
            }
        }
        if host_pids.len() > 1 {
            problems.push(format!(
                "{runtime}: prestart, createRuntime and poststart saw different pids {host_pids:?} \
                 for the same container process"
            ));
        }
    }
    assert_no_problems(&problems, &format!("hooks (statuses seen: {statuses:?})"));
    ctd.finish();
}

#[test]
fn hook_failure_and_timeout() {
    let ctd = PrivateContainerd::start();
    let mut problems = Vec::new();
    for runtime in runtimes() {
        // A createRuntime hook that fails: ctr run fails with its stderr.
        let id = ctd.unique_id("hookfail");
        let message = format!("hook-failed-on-purpose-{}", ctd.namespace());
        let mut spec = ctd.default_spec(&id, &["/bin/true"]);
        spec["hooks"] = json!({ "createRuntime": [{
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("echo {message} >&2; exit 3")],
        }]});
        let out = ctd
            .run_config(&id, ctd.write_spec(&id, &spec))
            .runtime(&runtime)
            .rm();
        if out.status.success() {
            problems.push(format!(
                "{runtime}: a createRuntime hook exiting 3 did not fail the run\n{}",
                show(&ctd, &out)
            ));
        } else if !stderr(&out).contains(&message) {
            problems.push(format!(
                "{runtime}: the error does not carry the hook's stderr {message:?}\n{}",
                show(&ctd, &out)
            ));
        }
        assert_gone(&ctd, &id);

        // A hook that outlives its timeout fails the run within seconds.
        let id = ctd.unique_id("hooktimeout");
        // A sleep no other process has: its argument names our pid and id.
        let serial = id.rsplit('-').next().unwrap_or_default();
        let marker = format!("30.{}{serial}", std::process::id());
        let mut spec = ctd.default_spec(&id, &["/bin/true"]);
        spec["hooks"] = json!({ "createRuntime": [{
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("exec sleep {marker}")],
            "timeout": 1,
        }]});
        let started = Instant::now();
        let out = ctd
            .run_config(&id, ctd.write_spec(&id, &spec))
            .runtime(&runtime)
            .rm_within(Duration::from_secs(40));
        let took = started.elapsed();
        if out.status.success() {
            problems.push(format!(
                "{runtime}: a hook past its 1 s timeout did not fail the run\n{}",
                show(&ctd, &out)
            ));
        }
        if took > Duration::from_secs(10) {
            problems.push(format!(
                "{runtime}: a hook with a 1 s timeout held the run for {took:?}"
            ));
        }
        let sleeping = || {
            host::processes()
                .into_iter()
                .filter(|p| p.cmdline.iter().any(|a| a == &marker))
                .map(|p| p.pid)
                .collect::<Vec<_>>()
        };
        if !wait_until(Duration::from_secs(5), || sleeping().is_empty()) {
            problems.push(format!(
                "{runtime}: the timed-out hook still runs: {:?}",
                sleeping()
            ));
            for pid in sleeping() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        assert_gone(&ctd, &id);
    }
    assert_no_problems(&problems, "hook failures");
    ctd.finish();
}

// ---------------------------------------------------------------------------
// 4a. CVE-2019-5736: overwriting the runtime binary through /proc/PID/exe.
// ---------------------------------------------------------------------------

/// A busybox shell function `scan`: for every process visible in /proc
/// (with `ALL` set) or only the runtime's (its shims and init stages), print
/// `SEEN pid comm` for runtime processes, run the payload on its
/// /proc/PID/exe (an open for reading and an open for writing, see
/// `probe::PAYLOAD_C`) and try to write to it from the shell:
/// `echo x >>` with `ALL` (only the container's own files and our private
/// copy of the shim can be hit there), an open without writing (`: >>`)
/// otherwise, since the host's processes are visible then.
const SCAN: &str = r#"
scan() {
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [ "$pid" = "$$" ] && continue
    { read -r comm < $p/comm; } 2>/dev/null || continue
    case "$comm" in
      rsv2-init*|containerd-shim*|runc*) echo "SEEN $pid $comm" ;;
      *) [ -n "$ALL" ] || continue ;;
    esac
    /payload $p/exe 2>/dev/null
    if [ -n "$ALL" ]; then
      (echo x >> $p/exe) 2>/dev/null && echo "WROTE $pid $comm"
    else
      (: >> $p/exe) 2>/dev/null && echo "WROTE $pid $comm"
    fi
  done
}
"#;

/// Every CVE-2019-5736 finding in `text` (payload reports and WROTE lines).
/// With `runtime_only`, only reports on the host's runtime binaries count:
/// in the host's pid namespace other containers' processes are visible,
/// and what their images hold is not the runtime's to protect.
fn exe_escapes(
    text: &str,
    own: &BTreeSet<(u64, u64)>,
    host: &[HostBinary],
    runtime_only: bool,
    what: &str,
) -> Vec<String> {
    let mut out: Vec<String> = ExeReport::parse_all(text)
        .iter()
        .filter(|r| !runtime_only || r.is_runtime_binary(host))
        .filter_map(|r| r.escape(own, host))
        .map(|e| format!("{what}: {e}"))
        .collect();
    out.extend(
        text.lines()
            .filter(|l| l.starts_with("WROTE "))
            .map(|l| format!("{what}: the shell could open a process's exe for writing: {l}")),
    );
    out.sort();
    out.dedup();
    out
}

#[test]
fn cve_2019_5736_runtime_binary_through_proc_exe() {
    let ctd = PrivateContainerd::start();
    let shim = testing_rust_shim().then(|| private_shim_copy(&ctd));
    let host = host_runtime_binaries(shim.as_deref());
    let payload = build_exe_payload(ctd.dir());
    let rootfs = private_rootfs(&ctd, "exe-rootfs");
    plant_exe_payload(&rootfs, &payload);
    let own = file_ids(&rootfs);
    let mut problems = Vec::new();

    for (name, runtime) in tagged_runtimes() {
        // The container's program is `#!/proc/self/exe`: the kernel runs the
        // binary that exec'd it, with the image's loader.
        let id = ctd.unique_id("exe-init");
        let mut spec = ctd.default_spec(&id, &["/evil"]);
        spec["root"]["path"] = rootfs.display().to_string().into();
        allow_default_devices(&mut spec);
        let out = ctd
            .run_config(&id, ctd.write_spec(&id, &spec))
            .runtime(&runtime)
            .rm();
        ctd.assert_no_leftovers(&id);
        let reports = ExeReport::parse_all(&stdout(&out));
        if reports.is_empty() {
            problems.push(format!(
                "{runtime}: /evil as the container's program ran no payload\n{}",
                show(&ctd, &out)
            ));
        }
        problems.extend(exe_escapes(
            &stdout(&out),
            &own,
            &host,
            false,
            &format!("{runtime}, /evil as the container's program"),
        ));

        // A container scanning /proc all along, a startContainer hook (an
        // image binary run by the init stage after it dropped privileges,
        // before execve) scanning too, and execs, of /evil and of a scan.
        let out_dir = ctd.dir().join(format!("exe-out-{name}"));
        fs::create_dir(&out_dir).expect("mkdir out dir");
        let id = ctd.unique_id("exe-scan");
        let script = format!(
            "{SCAN}\nALL=1\nwhile [ ! -e /out/stop ]; do scan; done > /out/attack.log 2>&1"
        );
        let mut spec = ctd.default_spec(&id, &["/bin/sh", "-c", &script]);
        spec["root"]["path"] = rootfs.display().to_string().into();
        allow_default_devices(&mut spec);
        add_bind(&mut spec, "/out", &out_dir);
        let hook = format!("{SCAN}\nALL=1\nscan > /out/hook.log 2>&1");
        spec["hooks"] =
            json!({ "startContainer": [{ "path": "/bin/sh", "args": ["sh", "-c", hook] }] });
        ctd.run_config(&id, ctd.write_spec(&id, &spec))
            .runtime(&runtime)
            .detach();
        for i in 0..5 {
            let out = exec(&ctd, &id, &format!("evil-{i}"), &[], &["/evil"]);
            if ExeReport::parse_all(&stdout(&out)).is_empty() {
                problems.push(format!(
                    "{runtime}: exec of /evil ran no payload\n{}",
                    show(&ctd, &out)
                ));
            }
            problems.extend(exe_escapes(
                &stdout(&out),
                &own,
                &host,
                false,
                &format!("{runtime}, exec of /evil"),
            ));
            let scan_once = format!("{SCAN}\nALL=1\nscan");
            let out = exec(
                &ctd,
                &id,
                &format!("scan-{i}"),
                &[],
                &["/bin/sh", "-c", &scan_once],
            );
            problems.extend(exe_escapes(
                &stdout(&out),
                &own,
                &host,
                false,
                &format!("{runtime}, a scan in an exec"),
            ));
        }
        fs::write(out_dir.join("stop"), "").expect("stop the scan");
        ctd.wait_for_status(&id, STOPPED, REACT);
        ctd.remove(&id);
        ctd.assert_no_leftovers(&id);
        let hook_log = fs::read_to_string(out_dir.join("hook.log")).unwrap_or_default();
        if !hook_log.lines().any(|l| l.starts_with("SEEN 1 ")) {
            problems.push(format!(
                "{runtime}: the startContainer hook did not see the init stage as pid 1:\n{hook_log}"
            ));
        }
        problems.extend(exe_escapes(
            &hook_log,
            &own,
            &host,
            false,
            &format!("{runtime}, a startContainer hook"),
        ));
        let attack_log = fs::read_to_string(out_dir.join("attack.log")).unwrap_or_default();
        problems.extend(exe_escapes(
            &attack_log,
            &own,
            &host,
            false,
            &format!("{runtime}, the container's scan loop"),
        ));
    }
    for binary in &host {
        if std::panic::catch_unwind(|| binary.assert_unchanged()).is_err() {
            problems.push(format!("{} changed", binary.path.display()));
        }
    }
    assert_no_problems(&problems, "CVE-2019-5736");
    ctd.finish();
}

#[test]
fn cve_2019_5736_host_pid_namespace() {
    let ctd = PrivateContainerd::start();
    let shim = testing_rust_shim().then(|| private_shim_copy(&ctd));
    let host = host_runtime_binaries(shim.as_deref());
    let payload = build_exe_payload(ctd.dir());
    let rootfs = private_rootfs(&ctd, "hostpid-rootfs");
    plant_exe_payload(&rootfs, &payload);
    let own = file_ids(&rootfs);
    let mut problems = Vec::new();

    for (name, runtime) in tagged_runtimes() {
        let out_dir = ctd.dir().join(format!("hostpid-out-{name}"));
        fs::create_dir(&out_dir).expect("mkdir out dir");
        let log = out_dir.join("attack.log");

        // The host's pid and network namespaces (`--net-host` and no pid
        // namespace): the shim and every init stage are visible.
        let id = ctd.unique_id("hostpid");
        let script =
            format!("{SCAN}\nwhile [ ! -e /out/stop ]; do scan; done > /out/attack.log 2>&1");
        let mut spec = ctd.default_spec(&id, &["/bin/sh", "-c", &script]);
        spec["root"]["path"] = rootfs.display().to_string().into();
        remove_namespace(&mut spec, "pid");
        remove_namespace(&mut spec, "network");
        allow_default_devices(&mut spec);
        add_bind(&mut spec, "/out", &out_dir);
        ctd.run_config(&id, ctd.write_spec(&id, &spec))
            .runtime(&runtime)
            .detach();
        let scanning = wait_until(REACT, || {
            fs::read_to_string(&log).is_ok_and(|l| l.contains(" containerd-shim"))
        });
        if !scanning {
            problems.push(format!(
                "{runtime}: the scan never saw a shim:\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            ));
        }

        // Another container whose init stage lingers after dropping its
        // privileges: a startContainer hook that sleeps.
        let other = ctd.unique_id("hostpid-other");
        let mut spec = ctd.default_spec(&other, &["/bin/true"]);
        spec["root"]["path"] = rootfs.display().to_string().into();
        allow_default_devices(&mut spec);
        spec["hooks"] =
            json!({ "startContainer": [{ "path": "/bin/sleep", "args": ["sleep", "2"] }] });
        let out = ctd
            .run_config(&other, ctd.write_spec(&other, &spec))
            .runtime(&runtime)
            .rm();
        if !out.status.success() {
            problems.push(format!(
                "{runtime}: the container with a sleeping hook failed\n{}",
                show(&ctd, &out)
            ));
        }
        ctd.assert_no_leftovers(&other);
        // Execs into the scanning container: their init stages in the host's pid namespace.
        for i in 0..5 {
            let out = exec(&ctd, &id, &format!("x{i}"), &[], &["/bin/true"]);
            if !out.status.success() {
                problems.push(format!(
                    "{runtime}: exec /bin/true failed\n{}",
                    show(&ctd, &out)
                ));
            }
        }
        fs::write(out_dir.join("stop"), "").expect("stop the scan");
        ctd.wait_for_status(&id, STOPPED, REACT);
        ctd.remove(&id);
        ctd.assert_no_leftovers(&id);

        let text = fs::read_to_string(&log).unwrap_or_default();
        let init_stage = if runtime == RUNC_RUNTIME {
            "runc:[2:INIT]"
        } else {
            "rsv2-init"
        };
        if !text
            .lines()
            .any(|l| l.starts_with("SEEN ") && l.contains(init_stage))
        {
            problems.push(format!(
                "{runtime}: the scan never saw an init stage ({init_stage}), so it tested nothing:\n{text}"
            ));
        }
        problems.extend(exe_escapes(
            &text,
            &own,
            &host,
            true,
            &format!("{runtime}, a container in the host's pid namespace"),
        ));
        // The runtime's processes must refuse an open for writing outright
        // (EACCES, EPERM) or as busy (ETXTBSY); ENOENT/ESRCH: it exited.
        let seen: BTreeSet<String> = text
            .lines()
            .filter_map(|l| {
                l.strip_prefix("SEEN ")?
                    .split(' ')
                    .next()
                    .map(|p| format!("/proc/{p}/exe"))
            })
            .collect();
        for r in ExeReport::parse_all(&text) {
            if seen.contains(&r.path) && ![-13, -1, -26, -2, -3].contains(&r.wopen) {
                problems.push(format!(
                    "{runtime}: opening a runtime process's exe for writing gave {}: {}",
                    r.wopen, r.line
                ));
            }
        }
    }
    for binary in &host {
        if std::panic::catch_unwind(|| binary.assert_unchanged()).is_err() {
            problems.push(format!("{} changed", binary.path.display()));
        }
    }
    assert_no_problems(&problems, "CVE-2019-5736 in the host's pid namespace");
    ctd.finish();
}

// ---------------------------------------------------------------------------
// 4b. CVE-2024-21626: leaked fds and a cwd through /proc/self/fd.
// ---------------------------------------------------------------------------

/// The fds `ls -l /proc/self/fd` lists, minus the one ls opened for itself
/// (it is closed again when ls reads the links: "cannot read link").
/// `ls_output` holds ls's stdout and stderr.
fn listed_fds(ls_output: &str) -> BTreeMap<String, String> {
    let own: BTreeSet<&str> = ls_output
        .lines()
        .filter_map(|l| l.strip_prefix("ls: /proc/self/fd/")?.split(':').next())
        .collect();
    ls_output
        .lines()
        .filter(|l| !l.starts_with("ls: ") && !l.starts_with("total"))
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let fd = cols.get(8)?.to_string();
            let target = cols.get(10..).map(|t| t.join(" ")).unwrap_or_default();
            (!own.contains(fd.as_str())).then_some((fd, target))
        })
        .collect()
}

fn only_stdio(fds: &BTreeMap<String, String>) -> bool {
    fds.keys().map(String::as_str).collect::<Vec<_>>() == ["0", "1", "2"]
}

/// Names in the host's / that the container's rootfs does not have: seeing
/// one means a process got out of the container.
fn host_only_names(rootfs: &Path) -> BTreeSet<String> {
    let names = |dir: &Path| -> BTreeSet<String> {
        fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let inside = names(rootfs);
    let mut out: BTreeSet<String> = names(Path::new("/")).difference(&inside).cloned().collect();
    for mount_point in ["proc", "sys", "dev", "run", "tmp", "etc", "bin"] {
        out.remove(mount_point);
    }
    out
}

#[test]
fn cve_2024_21626_fds_and_proc_self_fd_cwd() {
    let ctd = PrivateContainerd::start();
    let rootfs = ctd.rootfs();
    let host_only = host_only_names(&rootfs);
    assert!(
        host_only.contains("work") || host_only.contains("usr"),
        "the host's / has no entry the container lacks: {host_only:?}"
    );
    let shows_host = |text: &str| -> Vec<String> {
        text.split_whitespace()
            .filter(|w| host_only.contains(*w))
            .map(str::to_string)
            .collect()
    };
    let mut problems = Vec::new();
    let look = "pwd; ls; ls ..; ls ../../..; ls ../../../../../..";
    for (name, runtime) in tagged_runtimes() {
        // The container's program: only stdin, stdout and stderr.
        let id = ctd.unique_id("fds");
        let out = ctd
            .run(&id, &["/bin/ls", "-l", "/proc/self/fd"])
            .runtime(&runtime)
            .rm();
        let fds = listed_fds(&format!("{}{}", stdout(&out), stderr(&out)));
        if !out.status.success() || !only_stdio(&fds) {
            problems.push(format!(
                "{runtime}: the container's program has fds {fds:?}\n{}",
                show(&ctd, &out)
            ));
        }
        ctd.assert_no_leftovers(&id);

        // A startContainer hook: an image binary the init stage runs in the
        // container before execve.
        let dir = ctd.dir().join(format!("fds-hook-{name}"));
        fs::create_dir(&dir).expect("mkdir hook dir");
        let id = ctd.unique_id("fds-hook");
        let mut spec = ctd.default_spec(&id, &["/bin/true"]);
        allow_default_devices(&mut spec);
        add_bind(&mut spec, "/hooks", &dir);
        spec["hooks"] = json!({ "startContainer": [{
            "path": "/bin/sh", "args": ["sh", "-c", "ls -l /proc/self/fd > /hooks/fds 2>&1"],
        }]});
        let out = ctd
            .run_config(&id, ctd.write_spec(&id, &spec))
            .runtime(&runtime)
            .rm();
        let listing = fs::read_to_string(dir.join("fds")).unwrap_or_default();
        let fds = listed_fds(&listing);
        if !out.status.success() || !only_stdio(&fds) {
            problems.push(format!(
                "{runtime}: a startContainer hook (an image binary, in the container) inherits fds {fds:?}\n\
                 --- ls -l /proc/self/fd in the hook ---\n{listing}\n{}",
                show(&ctd, &out)
            ));
        }
        ctd.assert_no_leftovers(&id);

        // process.cwd through /proc/self/fd/N: an error, or inside.
        for n in 3..=8 {
            let id = ctd.unique_id("fdcwd");
            let mut spec = ctd.default_spec(&id, &["/bin/sh", "-c", look]);
            spec["process"]["cwd"] = format!("/proc/self/fd/{n}").into();
            let out = ctd
                .run_config(&id, ctd.write_spec(&id, &spec))
                .runtime(&runtime)
                .rm();
            let seen = shows_host(&format!("{}{}", stdout(&out), stderr(&out)));
            if !seen.is_empty() {
                problems.push(format!(
                    "{runtime}: cwd /proc/self/fd/{n} shows the host's {seen:?}\n{}",
                    show(&ctd, &out)
                ));
            }
            if out.status.success() {
                eprintln!(
                    "{runtime}: cwd /proc/self/fd/{n} started inside the container: {}",
                    stdout(&out).trim()
                );
            }
            ctd.assert_no_leftovers(&id);
        }

        // Execs: their fds, and --cwd /proc/self/fd/N.
        let id = ctd.unique_id("fdexec");
        ctd.run(&id, &["/bin/sleep", "1000"])
            .runtime(&runtime)
            .detach();
        let out = exec(&ctd, &id, "ls", &[], &["/bin/ls", "-l", "/proc/self/fd"]);
        let fds = listed_fds(&format!("{}{}", stdout(&out), stderr(&out)));
        if !out.status.success() || !only_stdio(&fds) {
            problems.push(format!(
                "{runtime}: an exec'd process has fds {fds:?}\n{}",
                show(&ctd, &out)
            ));
        }
        for n in 3..=8 {
            let cwd = format!("/proc/self/fd/{n}");
            let out = exec(
                &ctd,
                &id,
                &format!("cwd{n}"),
                &["--cwd", &cwd],
                &["/bin/sh", "-c", look],
            );
            let seen = shows_host(&format!("{}{}", stdout(&out), stderr(&out)));
            if !seen.is_empty() {
                problems.push(format!(
                    "{runtime}: exec --cwd {cwd} shows the host's {seen:?}\n{}",
                    show(&ctd, &out)
                ));
            }
        }
        ctd.remove(&id);
        ctd.assert_no_leftovers(&id);
    }
    assert_no_problems(&problems, "CVE-2024-21626");
    ctd.finish();
}

// ---------------------------------------------------------------------------
// 4c. Mount destinations through the image's symlinks; a tmpfs on /proc.
// ---------------------------------------------------------------------------

const ESCAPE_TARGET: &str = "/tmp/rsv2-escape-target";
const ESCAPE_TARGET2: &str = "/tmp/rsv2-escape-target2";

fn host_escape_traces() -> Vec<String> {
    let mut found: Vec<String> = fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("rsv2-escape-target"))
        .map(|l| format!("host mount: {l}"))
        .collect();
    for p in [ESCAPE_TARGET, ESCAPE_TARGET2] {
        if Path::new(p).symlink_metadata().is_ok() {
            found.push(format!("host path {p} exists"));
        }
    }
    found
}

#[test]
fn mount_destinations_stay_in_the_rootfs() {
    let ctd = PrivateContainerd::start();
    let before = host_escape_traces();
    assert!(
        before.is_empty(),
        "traces of an earlier escape on the host, remove them first: {before:?}"
    );
    let mut problems = Vec::new();
    for (name, runtime) in tagged_runtimes() {
        let rootfs = private_rootfs(&ctd, &format!("symlink-rootfs-{name}"));
        plant_symlink(ESCAPE_TARGET, &rootfs.join("evil"));
        plant_symlink(
            &format!("../../../../../..{ESCAPE_TARGET2}"),
            &rootfs.join("up"),
        );

        let id = ctd.unique_id("mntlink");
        let mut spec = ctd.default_spec(&id, &["/bin/sleep", "1000"]);
        spec["root"]["path"] = rootfs.display().to_string().into();
        allow_default_devices(&mut spec);
        add_mount(&mut spec, "/evil/x", "tmpfs", "tmpfs", &["size=1m"]);
        add_mount(&mut spec, "/up/y", "tmpfs", "tmpfs", &["size=1m"]);
        ctd.run_config(&id, ctd.write_spec(&id, &spec))
            .runtime(&runtime)
            .detach();
        // While the container lives: nothing on the host, everything inside.
        for trace in host_escape_traces() {
            problems.push(format!("{runtime}: {trace}"));
        }
        for (dir, sub) in [(ESCAPE_TARGET, "x"), (ESCAPE_TARGET2, "y")] {
            let inside = rootfs.join(dir.trim_start_matches('/')).join(sub);
            if !inside.is_dir() {
                problems.push(format!(
                    "{runtime}: {} was not created inside the rootfs",
                    inside.display()
                ));
            }
        }
        let out = exec(&ctd, &id, "mounts", &[], &["/bin/cat", "/proc/self/mounts"]);
        let mounts = stdout(&out);
        for target in [format!("{ESCAPE_TARGET}/x"), format!("{ESCAPE_TARGET2}/y")] {
            let found = mounts.lines().any(|l| {
                l.split_whitespace().nth(1) == Some(target.as_str())
                    && l.split_whitespace().nth(2) == Some("tmpfs")
            });
            if !found {
                problems.push(format!(
                    "{runtime}: no tmpfs at {target} inside the container\n{}",
                    show(&ctd, &out)
                ));
            }
        }
        ctd.remove(&id);
        ctd.assert_no_leftovers(&id);
        for trace in host_escape_traces() {
            problems.push(format!("{runtime}, after the container: {trace}"));
        }

        // Only a procfs may cover /proc (runc refuses too, if less clearly:
        // its fd cleanup finds no /proc/self/fd).
        let id = ctd.unique_id("proctmpfs");
        let mut spec = ctd.default_spec(&id, &["/bin/true"]);
        add_mount(&mut spec, "/proc", "tmpfs", "tmpfs", &["size=1m"]);
        let out = ctd
            .run_config(&id, ctd.write_spec(&id, &spec))
            .runtime(&runtime)
            .rm();
        if out.status.success() {
            problems.push(format!(
                "{runtime}: a tmpfs on /proc was accepted\n{}",
                show(&ctd, &out)
            ));
        } else if runtime != RUNC_RUNTIME
            && !stderr(&out).contains("only a procfs may be mounted on /proc")
        {
            problems.push(format!(
                "{runtime}: the refusal of a tmpfs on /proc does not say why\n{}",
                show(&ctd, &out)
            ));
        }
        assert_gone(&ctd, &id);
    }
    assert_no_problems(&problems, "mount destinations");
    ctd.finish();
}

// ---------------------------------------------------------------------------
// 4d. Masked paths are masked with the real /dev/null only.
// ---------------------------------------------------------------------------

#[test]
fn masked_paths_need_the_real_dev_null() {
    let ctd = PrivateContainerd::start();
    let runtime = runtime_under_test();
    let host_secret = ctd.dir().join("secret-host-file");
    let host_content = format!("HOST-SECRET-{}", ctd.namespace());
    fs::write(&host_secret, format!("{host_content}\n")).expect("write the host's secret");
    const IMAGE_CONTENT: &str = "IMAGE-DEV-NULL-CONTENT";
    const CONTAINER_CONTENT: &str = "CONTAINER-SECRET-CONTENT";
    // (name, what dev/null is in the image, whether /dev is the image's own
    // directory bound at /dev rather than a directory the spec leaves alone)
    let host_target = host_secret.display().to_string();
    let variants: [(&str, Option<&str>, bool); 5] = [
        ("a regular file", None, false),
        ("a symlink to a host path", Some(&host_target), false),
        ("a symlink to /etc/secret", Some("/etc/secret"), false),
        (
            "a symlink to a host path, /dev bound from the image",
            Some(&host_target),
            true,
        ),
        (
            "a symlink to /etc/secret, /dev bound from the image",
            Some("/etc/secret"),
            true,
        ),
    ];
    let reads = "for f in /proc/keys /proc/timer_list /proc/kcore /proc/latency_stats /proc/sched_debug; do \
                 echo \"== $f\"; head -c 200 $f 2>&1; done; ls -la /dev/null";
    let mut problems = Vec::new();
    for (k, (what, link, bind_dev)) in variants.into_iter().enumerate() {
        let rootfs = private_rootfs(&ctd, &format!("mask-rootfs-{k}"));
        fs::write(rootfs.join("etc/secret"), format!("{CONTAINER_CONTENT}\n"))
            .expect("write etc/secret");
        let null = rootfs.join("dev/null");
        match link {
            None => fs::write(&null, format!("{IMAGE_CONTENT}\n")).expect("write dev/null"),
            Some(target) => plant_symlink(target, &null),
        }
        let id = ctd.unique_id("masknull");
        let mut spec = ctd.default_spec(&id, &["/bin/sh", "-c", reads]);
        spec["root"]["path"] = rootfs.display().to_string().into();
        allow_default_devices(&mut spec);
        // No tmpfs on /dev: the image's dev directory is the container's.
        spec["mounts"]
            .as_array_mut()
            .expect("mounts")
            .retain(|m| m["destination"] != "/dev");
        if bind_dev {
            add_bind(&mut spec, "/dev", &rootfs.join("dev"));
            // The bind must come before /dev/pts and friends.
            let mounts = spec["mounts"].as_array_mut().expect("mounts");
            let bind = mounts.pop().expect("the bind just added");
            mounts.insert(1, bind);
        }
        let out = ctd
            .run_config(&id, ctd.write_spec(&id, &spec))
            .runtime(&runtime)
            .rm();
        let all = format!("{}\n{}", stdout(&out), stderr(&out));
        if all.contains(&host_content) {
            problems.push(format!(
                "/dev/null is {what}: the host's file is readable\n{}",
                show(&ctd, &out)
            ));
        }
        if out.status.success() {
            for secret in [IMAGE_CONTENT, CONTAINER_CONTENT] {
                if stdout(&out).contains(secret) {
                    problems.push(format!(
                        "/dev/null is {what}: a masked path shows the file /dev/null points at\n{}",
                        show(&ctd, &out)
                    ));
                }
            }
            ctd.assert_no_leftovers(&id);
        } else {
            if !stderr(&out).contains("/dev/null") {
                problems.push(format!(
                    "/dev/null is {what}: the error does not name /dev/null\n{}",
                    show(&ctd, &out)
                ));
            }
            assert_gone(&ctd, &id);
        }
    }
    assert_no_problems(&problems, &format!("masked paths under {runtime}"));
    ctd.finish();
}

// ---------------------------------------------------------------------------
// 4e. The program's first instruction already runs with the reduced
// privileges.
// ---------------------------------------------------------------------------

#[test]
fn privileges_dropped_before_the_first_instruction() {
    let ctd = PrivateContainerd::start();
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    for runtime in runtimes() {
        let id = ctd.unique_id("firstinsn");
        // cat reads its own status as its first action: no shell in between.
        let out = ctd
            .run(&id, &["/bin/cat", "/proc/self/status"])
            .runtime(&runtime)
            .flags(&["--seccomp"])
            .rm();
        ctd.assert_no_leftovers(&id);
        if !out.status.success() {
            problems.push(format!("{runtime}: cat failed\n{}", show(&ctd, &out)));
            continue;
        }
        let status: BTreeMap<String, String> = stdout(&out)
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| {
                k.starts_with("Cap")
                    || ["NoNewPrivs", "Seccomp", "Uid", "Gid", "Groups"].contains(k)
            })
            .map(|(k, v)| {
                (
                    k.to_string(),
                    v.split_whitespace().collect::<Vec<_>>().join(" "),
                )
            })
            .collect();
        for (key, want) in [
            ("CapInh", "0000000000000000"),
            ("CapPrm", DEFAULT_CAPS),
            ("CapEff", DEFAULT_CAPS),
            ("CapBnd", DEFAULT_CAPS),
            ("CapAmb", "0000000000000000"),
            ("NoNewPrivs", "1"),
            ("Seccomp", "2"),
        ] {
            if status.get(key).map(String::as_str) != Some(want) {
                problems.push(format!(
                    "{runtime}: {key} is {:?} at the first instruction, expected {want}",
                    status.get(key)
                ));
            }
        }
        seen.push((runtime, status));
    }
    if let [(r, rs), (o, os)] = seen.as_slice() {
        if rs != os {
            problems.push(format!(
                "{r} and {o} differ at the first instruction:\n{rs:#?}\n{os:#?}"
            ));
        }
    }
    assert_no_problems(&problems, "privileges at the first instruction");
    ctd.finish();
}

// ---------------------------------------------------------------------------
// Without a pid namespace, the rest of the container dies with its init.
// ---------------------------------------------------------------------------

/// runc's shim kills what is left of a container that shares the host's pid
/// namespace when its init exits (no pid namespace teardown does it); the
/// task is STOPPED with nothing left running, before any `ctr task delete`.
#[test]
fn init_exit_without_pid_namespace_kills_the_rest() {
    let ctd = PrivateContainerd::start();
    let mut problems = Vec::new();
    for runtime in runtimes() {
        let id = ctd.unique_id("nopidns");
        let mut spec = ctd.default_spec(
            &id,
            &["/bin/sh", "-c", "sleep 1000 & sleep 1000 & sleep 1; exit 0"],
        );
        remove_namespace(&mut spec, "pid");
        ctd.run_config(&id, ctd.write_spec(&id, &spec))
            .runtime(&runtime)
            .detach();
        ctd.wait_for_status(&id, STOPPED, REACT);
        let cgroup = host::cgroup_path("pids", &ctd.cgroup_rel(&id));
        let mut left = Vec::new();
        let emptied = wait_until(Duration::from_secs(10), || {
            left = host::cgroup_procs(&cgroup);
            left.is_empty()
        });
        if !emptied {
            let procs: Vec<String> = left
                .iter()
                .map(|p| {
                    format!(
                        "{p}: {}",
                        host::process(*p).map(|p| p.command()).unwrap_or_default()
                    )
                })
                .collect();
            problems.push(format!(
                "{runtime}: the init exited (task STOPPED) but its processes still run: {procs:?}"
            ));
        }
        ctd.ctr_ok(&["task", "delete", &id]);
        ctd.ctr_ok(&["containers", "rm", &id]);
        ctd.assert_no_leftovers(&id);
    }
    assert_no_problems(&problems, "init exit without a pid namespace");
    ctd.finish();
}

// ---------------------------------------------------------------------------
// 6. What containerd and Kubernetes look at closely (issue #13), compared
//    with runc's shim in the same run.
// ---------------------------------------------------------------------------

/// The optional fields of the mountinfo line of `/` (`shared:N`,
/// `master:N`), as propagation words, for a comparison that does not
/// depend on the peer group numbers.
const ROOT_PROPAGATION: &str = "awk '$5 == \"/\" { p=\"private\"; for (i=7; $i != \"-\"; i++) { if ($i ~ /^shared:/) p=\"shared\"; if ($i ~ /^master:/) p=(p==\"shared\" ? \"shared+slave\" : \"slave\") }; print p }' /proc/self/mountinfo | tail -n 1";

#[test]
fn runc_diff_of_what_kubernetes_looks_at() {
    let ctd = PrivateContainerd::start();
    let mut seen: BTreeMap<String, BTreeMap<&str, String>> = BTreeMap::new();
    for (tag, runtime) in tagged_runtimes() {
        let mut got = BTreeMap::new();
        // oom_score_adj the container inherits: containerd's + 1.
        let id = ctd.unique_id("diffoom");
        let out = ctd.run(&id, &["/bin/cat", "/proc/self/oom_score_adj"]).runtime(&runtime).rm();
        got.insert("oom_score_adj", stdout(&out).trim().to_string());
        // The mount options of a read-only cgroup mount, and the device
        // rules (v1 devices.list) of a default container with a terminal
        // exec's rule for every pty.
        let id = ctd.unique_id("diffcg");
        let mut spec = ctd.default_spec(&id, &["/bin/sh", "-c", "grep ' /sys/fs/cgroup' /proc/self/mounts | cut -d' ' -f2,3,4 | sort; sleep 1000"]);
        spec["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        }));
        let log = ctd.run_config(&id, ctd.write_spec(&id, &spec)).runtime(&runtime).spawn_logged(&[], &id);
        ctd.wait_for_status(&id, "RUNNING", Duration::from_secs(20));
        assert!(wait_until(Duration::from_secs(10), || log.stdout().lines().count() > 3), "{runtime}: {}", log.stdout());
        got.insert("cgroup mounts", log.stdout());
        let list = fs::read_to_string(host::cgroup_path("devices", &ctd.cgroup_rel(&id)).join("devices.list")).unwrap_or_default();
        let mut rules: Vec<&str> = list.lines().collect();
        rules.sort();
        got.insert("devices.list", rules.join("\n"));
        got.insert("pty rule", rules.iter().any(|r| *r == "c 136:* rwm").to_string());
        // An exec into the paused container: refused at Exec, nothing
        // published for it, in the same order of events.
        let watcher = ctd.watch_events();
        ctd.ctr_ok(&["task", "pause", &id]);
        let exec = ctd.exec(&id, "paused-exec", &["/bin/true"]).output();
        ctd.ctr_ok(&["task", "resume", &id]);
        assert!(watcher.wait_for(REACT, |e| e.topic == "/tasks/resumed" && e.container_id() == Some(id.as_str())), "{runtime}: no /tasks/resumed");
        let events = watcher.stop();
        let topics: Vec<String> = integration_tests::task_events(&events, &id).iter().map(|e| e.topic.clone()).collect();
        got.insert("exec while paused", format!("exit status {:?}; events {topics:?}", exec.status.code()));
        // The attached ctr goes first: it would delete the task as it ends.
        drop(log);
        ctd.remove(&id);
        // Root propagation inside the container, for each rootfsPropagation.
        for prop in ["private", "rslave", "rshared"] {
            let id = ctd.unique_id("diffprop");
            let mut spec = ctd.default_spec(&id, &["/bin/sh", "-c", ROOT_PROPAGATION]);
            spec["linux"]["rootfsPropagation"] = json!(prop);
            let out = ctd.run_config(&id, ctd.write_spec(&id, &spec)).runtime(&runtime).rm();
            got.insert(if prop == "private" { "root propagation private" } else if prop == "rslave" { "root propagation rslave" } else { "root propagation rshared" }, format!("{} {}", stdout(&out).trim(), stderr(&out).trim()));
        }
        seen.insert(tag.to_string(), got);
    }
    let (reference, tested) = (&seen["reference"], &seen["tested"]);
    let mut problems = Vec::new();
    let containerd_score = fs::read_to_string(format!("/proc/{}/oom_score_adj", ctd.containerd_pid())).unwrap_or_default().trim().parse::<i32>().unwrap_or(0);
    let want_score = (containerd_score + 1).min(1000).to_string();
    for (tag, got) in &seen {
        if got["oom_score_adj"] != want_score {
            problems.push(format!("{tag}: oom_score_adj {} (containerd's is {containerd_score})", got["oom_score_adj"]));
        }
        if got["pty rule"] != "true" {
            problems.push(format!("{tag}: no c 136:* rwm rule:\n{}", got["devices.list"]));
        }
        if !got["exec while paused"].contains("events [\"/tasks/paused\", \"/tasks/resumed\"]") {
            problems.push(format!("{tag}: exec while paused: {}", got["exec while paused"]));
        }
    }
    // Deliberate differences (README): runc 1.1.5 leaves the cgroup tmpfs
    // read-write under a `ro` cgroup mount; we make it read-only.
    let cg = |s: &str| s.replace("/sys/fs/cgroup tmpfs rw,", "/sys/fs/cgroup tmpfs ro,");
    if cg(&reference["cgroup mounts"]) != tested["cgroup mounts"] {
        problems.push(format!("cgroup mounts differ:\n{}", unified_diff(&cg(&reference["cgroup mounts"]), &tested["cgroup mounts"], "runc", "ours").unwrap_or_default()));
    }
    // runc allows mknod of any device (`c *:* m`, `b *:* m`) and denies only
    // its open; we deny the mknod too (README).
    let rules = |s: &str| s.lines().filter(|l| *l != "c *:* m" && *l != "b *:* m").collect::<Vec<_>>().join("\n");
    if rules(&reference["devices.list"]) != rules(&tested["devices.list"]) {
        problems.push(format!("devices.list differs:\n{}", unified_diff(&rules(&reference["devices.list"]), &rules(&tested["devices.list"]), "runc", "ours").unwrap_or_default()));
    }
    for key in ["exec while paused", "root propagation private", "root propagation rslave"] {
        if reference[key] != tested[key] {
            problems.push(format!("{key}: runc {:?}, ours {:?}", reference[key], tested[key]));
        }
    }
    // runc 1.1.5 pivots into a private root and does not re-apply rshared
    // (runc 1.2 does, as we do): a mount the container makes on its own
    // root then propagates back to its peers.
    if testing_rust_shim() && tested["root propagation rshared"].trim() != "shared" {
        problems.push(format!("rshared: the container's root is {:?}, not shared", tested["root propagation rshared"]));
    }
    assert_no_problems(&problems, "runc diff of what Kubernetes looks at");
    ctd.finish();
}
