//! Foundation tests: containers run through the real `ctr` against a private
//! containerd 1.6, with the runtime under test (`io.containerd.rust.v2`, or
//! `IT_RUNTIME`) and a busybox rootfs.
//!
//! Facts about ctr 1.6 these tests rely on, checked against runc:
//! - attached `ctr run` exits with the task's exit status; a failed start
//!   makes it exit 1 with the runtime's error on stderr;
//! - `ctr run --rm` removes the container even when the task failed to
//!   start, `ctr run -d` does not;
//! - `ctr task delete` reports a non-zero exit status only as a warning on
//!   stderr: `task X exit with non-zero exit code N`;
//! - ctr's default spec has no PATH in process.env and no hostname.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;
use std::time::Duration;

use integration_tests::check::{assert_exit, REACT, RUNNING, STOPPED, stderr, stdout};
use integration_tests::host;
use integration_tests::{testing_rust_shim, wait_until, Leftover, PrivateContainerd, RUNC_RUNTIME};


/// Polls until the container's cgroup holds `n` processes, i.e. a shell
/// script has forked its children, and returns their pids.
fn wait_for_procs(ctd: &PrivateContainerd, id: &str, n: usize) -> Vec<u32> {
    let dir = host::cgroup_path("pids", &ctd.cgroup_rel(id));
    let mut pids = Vec::new();
    let ok = wait_until(REACT, || {
        pids = host::cgroup_procs(&dir);
        pids.len() == n
    });
    assert!(
        ok,
        "{}: expected {n} processes, found {pids:?}",
        dir.display()
    );
    pids
}

/// `ctr task delete ID`, asserting success; returns its stderr, where ctr
/// reports a non-zero exit status.
fn delete_task(ctd: &PrivateContainerd, id: &str) -> String {
    let out = ctd.ctr(&["task", "delete", id]);
    assert!(
        out.status.success(),
        "ctr task delete {id} failed\n{}\n{}",
        stderr(&out),
        ctd.log_tail(40)
    );
    stderr(&out)
}

#[test]
fn exit_codes() {
    let ctd = PrivateContainerd::start();
    let cases: [(&[&str], i32, &str); 4] = [
        (&["/bin/sh", "-c", "exit 7"], 7, "exit 7"),
        (&["/bin/true"], 0, "true"),
        (&["/bin/false"], 1, "false"),
        // The shell is pid 1 of a new pid namespace, and the kernel drops
        // signals sent to such an init from inside its namespace unless it
        // handles them, SIGKILL included: the shell survives and reaches
        // `exit 3` (as under runc). Without a pid namespace this gives 137.
        (
            &["/bin/sh", "-c", "kill -9 $$; exit 3"],
            3,
            "kill -9 of pid 1 from inside",
        ),
    ];
    for (argv, code, what) in cases {
        let id = ctd.unique_id("exit");
        let out = ctd.run(&id, argv).rm();
        assert_exit(&ctd, &out, code, what);
        ctd.assert_no_leftovers(&id);
    }

    // Killed by a signal from outside: ctr reports 128 + signal, like a shell.
    let id = ctd.unique_id("exit");
    let attached = ctd.run(&id, &["/bin/sleep", "1000"]).spawn();
    ctd.wait_for_status(&id, RUNNING, REACT);
    ctd.ctr_ok(&["task", "kill", "--signal", "SIGKILL", &id]);
    let out = attached.wait(REACT);
    assert_exit(&ctd, &out, 137, "SIGKILL from ctr task kill");
    ctd.assert_no_leftovers(&id);
    ctd.finish();
}

#[test]
fn stdout_and_stderr() {
    let ctd = PrivateContainerd::start();
    let id = ctd.unique_id("stdio");
    let out = ctd
        .run(&id, &["/bin/sh", "-c", "echo out; echo err >&2"])
        .rm();
    assert_exit(&ctd, &out, 0, "echo");
    assert_eq!(
        stdout(&out),
        "out\n",
        "stdout must hold exactly the container's stdout"
    );
    assert!(
        stderr(&out).contains("err\n"),
        "stderr lacks the container's stderr: {:?}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("out"),
        "stdout leaked into stderr: {:?}",
        stderr(&out)
    );
    ctd.assert_no_leftovers(&id);

    // Output written right before a fast exit must still arrive whole.
    let id = ctd.unique_id("stdio");
    let out = ctd.run(&id, &["/bin/seq", "1", "20000"]).rm();
    assert_exit(&ctd, &out, 0, "seq");
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    let expected: Vec<String> = (1..=20000).map(|n| n.to_string()).collect();
    assert!(
        lines == expected,
        "seq output truncated or garbled: {} lines, last {:?}",
        lines.len(),
        lines.last()
    );
    ctd.assert_no_leftovers(&id);
    ctd.finish();
}

/// Parses `key=value` lines; a key seen more than once keeps all its values.
fn parse_probe(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            map.entry(k.to_string()).or_default().push(v.to_string());
        }
    }
    for values in map.values_mut() {
        values.sort();
    }
    map
}

fn probe_value<'a>(probe: &'a BTreeMap<String, Vec<String>>, key: &str) -> &'a str {
    match probe.get(key).map(Vec::as_slice) {
        Some([v]) => v,
        other => panic!("probe key {key}: expected one value, got {other:?}\nprobe: {probe:#?}"),
    }
}

#[test]
fn pid_namespace_and_hostname() {
    let ctd = PrivateContainerd::start();
    let script = r#"echo "pid=$$"
echo "init=$(tr '\0\n' '  ' < /proc/1/cmdline)"
echo "hostname=$(hostname)"
for n in mnt pid ipc net uts cgroup user; do echo "ns_$n=$(readlink /proc/self/ns/$n)"; done"#;
    let id = ctd.unique_id("ns");
    let out = ctd.run(&id, &["/bin/sh", "-c", script]).rm();
    assert_exit(&ctd, &out, 0, "namespace probe");
    let probe = parse_probe(&stdout(&out));

    assert_eq!(
        probe_value(&probe, "pid"),
        "1",
        "the container's init must be pid 1"
    );
    let init = probe_value(&probe, "init");
    assert!(
        init.starts_with("/bin/sh -c echo \"pid=$$\" echo "),
        "/proc/1 inside is not our process: {init:?}"
    );
    // The default spec asks for these namespaces...
    for kind in ["mnt", "pid", "ipc", "net", "uts"] {
        let inside = probe_value(&probe, &format!("ns_{kind}"));
        assert_ne!(
            inside,
            host::namespace("self", kind),
            "{kind} namespace is the host's"
        );
    }
    // ...and not for these, which runc then leaves shared with the host.
    for kind in ["cgroup", "user"] {
        let inside = probe_value(&probe, &format!("ns_{kind}"));
        assert_eq!(
            inside,
            host::namespace("self", kind),
            "{kind} namespace must stay the host's"
        );
    }
    // The spec sets no hostname: the new UTS namespace keeps the copied one.
    let host_name = nix::unistd::gethostname().expect("gethostname");
    assert_eq!(
        probe_value(&probe, "hostname"),
        host_name.to_string_lossy(),
        "hostname"
    );
    ctd.assert_no_leftovers(&id);
    ctd.finish();
}

/// Mask targets of ctr's default spec. They are reported apart from the other
/// mounts: how a path is masked (which /dev/null is bound) is an
/// implementation detail, that it reads empty is not.
const MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];

/// Prints `key=value` lines describing the container's view of the system.
fn isolation_probe() -> String {
    let masked = MASKED.join("|");
    format!(
        r#"echo "pid1=$$"
echo "root=$(ls / | tr '\n' ' ')"
echo "procpids=$(ls /proc | grep -E '^[0-9]+$' | tr '\n' ' ')"
grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status | tr -d '\t' | sed 's/:/=/'
echo "id=$(id)"
echo "cwd=$(pwd)"
echo "umask=$(umask)"
echo "nofile=$(ulimit -n)"
echo "env=$(env | grep -v '^SHLVL=' | sort | tr '\n' ' ')"
echo "dev=$(ls -A /dev | tr '\n' ' ')"
if echo x > /proc/sys/kernel/domainname; then echo procsys=writable; else echo procsys=readonly; fi
if touch /probe-file; then echo rootfs=writable; rm /probe-file; else echo rootfs=readonly; fi
if touch /dev/shm/probe-file; then echo shm=writable; else echo shm=readonly; fi
for f in /proc/keys /proc/timer_list /proc/kcore; do echo "masked_read=$f $(cat $f 2>/dev/null | wc -c)"; done
for d in /proc/acpi /sys/firmware; do echo "masked_ls=$d $(ls -A $d 2>/dev/null | wc -l)"; done
while read -r src mp fstype opts rest; do
  case "$mp" in
    {masked}) echo "masked=$mp" ;;
    /) echo "mount=/ $fstype $opts" ;;
    *) echo "mount=$mp $fstype $src $opts" ;;
  esac
done < /proc/self/mounts
"#
    )
}

/// Runs the isolation probe under `runtime` and parses it.
fn run_probe(
    ctd: &PrivateContainerd,
    runtime: &str,
    flags: &[&str],
) -> BTreeMap<String, Vec<String>> {
    let id = ctd.unique_id("probe");
    let out = ctd
        .run(&id, &["/bin/sh", "-c", &isolation_probe()])
        .runtime(runtime)
        .flags(flags)
        .rm();
    assert_exit(
        ctd,
        &out,
        0,
        &format!("isolation probe under {runtime} {flags:?}"),
    );
    ctd.assert_no_leftovers(&id);
    parse_probe(&stdout(&out))
}

/// Keys whose values depend on the probe's own processes, not on the runtime.
const PROBE_NOISE: &[&str] = &["procpids"];

fn assert_same_view(
    reference: &BTreeMap<String, Vec<String>>,
    ours: &BTreeMap<String, Vec<String>>,
    what: &str,
) {
    let flatten = |m: &BTreeMap<String, Vec<String>>| -> BTreeSet<String> {
        m.iter()
            .filter(|(k, _)| !PROBE_NOISE.contains(&k.as_str()))
            .flat_map(|(k, vs)| vs.iter().map(move |v| format!("{k}={v}")))
            .collect()
    };
    let (r, o) = (flatten(reference), flatten(ours));
    let only_runc: Vec<_> = r.difference(&o).collect();
    let only_ours: Vec<_> = o.difference(&r).collect();
    assert!(
        only_runc.is_empty() && only_ours.is_empty(),
        "{what}: the container sees a different system than under runc\n\
         only under runc:\n  {}\nonly under {}:\n  {}",
        only_runc
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  "),
        integration_tests::runtime_under_test(),
        only_ours
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  "),
    );
}

#[test]
fn rootfs_isolation() {
    let ctd = PrivateContainerd::start();
    let runtime = integration_tests::runtime_under_test();

    let ours = run_probe(&ctd, &runtime, &[]);
    // Absolute expectations, from ctr's default spec (values seen under runc).
    assert_eq!(probe_value(&ours, "pid1"), "1");
    let root: BTreeSet<&str> = probe_value(&ours, "root").split_whitespace().collect();
    for expected in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
        assert!(root.contains(expected), "/ lacks {expected}: {root:?}");
    }
    for host_only in ["work", "root", "usr", "home", "opt", "var"] {
        assert!(
            !root.contains(host_only),
            "/ shows the host's /{host_only}: {root:?}"
        );
    }
    let pids: Vec<&str> = probe_value(&ours, "procpids").split_whitespace().collect();
    assert!(
        pids.contains(&"1") && pids.len() <= 10,
        "/proc shows more than the container's processes: {pids:?}"
    );
    for cap in ["CapPrm", "CapEff", "CapBnd"] {
        assert_eq!(
            probe_value(&ours, cap),
            "00000000a80425fb",
            "{cap}: ctr's default capability set"
        );
    }
    for cap in ["CapInh", "CapAmb"] {
        assert_eq!(probe_value(&ours, cap), "0000000000000000", "{cap}");
    }
    assert_eq!(
        probe_value(&ours, "NoNewPrivs"),
        "1",
        "ctr's spec sets noNewPrivileges"
    );
    assert_eq!(
        probe_value(&ours, "Seccomp"),
        "0",
        "ctr applies no seccomp profile without --seccomp"
    );
    assert_eq!(
        probe_value(&ours, "procsys"),
        "readonly",
        "/proc/sys is a readonly path"
    );
    assert_eq!(probe_value(&ours, "rootfs"), "writable");
    assert_eq!(probe_value(&ours, "shm"), "writable");
    for masked in &ours["masked_read"] {
        assert!(masked.ends_with(" 0"), "masked file is readable: {masked}");
    }
    for masked in &ours["masked_ls"] {
        assert!(
            masked.ends_with(" 0"),
            "masked directory is not empty: {masked}"
        );
    }
    let reference = run_probe(&ctd, RUNC_RUNTIME, &[]);
    assert_same_view(&reference, &ours, "default spec");

    let ours_ro = run_probe(&ctd, &runtime, &["--read-only"]);
    assert_eq!(
        probe_value(&ours_ro, "rootfs"),
        "readonly",
        "--read-only rootfs is writable"
    );
    assert_eq!(
        probe_value(&ours_ro, "shm"),
        "writable",
        "/dev/shm stays writable with --read-only"
    );
    let reference_ro = run_probe(&ctd, RUNC_RUNTIME, &["--read-only"]);
    assert_same_view(&reference_ro, &ours_ro, "--read-only");
    ctd.finish();
}

#[test]
fn shim_is_reparented_and_subreaper() {
    let ctd = PrivateContainerd::start();
    let id = ctd.unique_id("reparent");
    let task = ctd.run(&id, &["/bin/sleep", "1000"]).detach();

    let mut shim = None;
    assert!(
        wait_until(REACT, || {
            shim = ctd.shim_server(&id);
            shim.is_some()
        }),
        "no shim server process for {id} among {:?}",
        ctd.shims()
    );
    let shim = shim.expect("checked above").pid;
    let containerd = ctd.containerd_pid();

    // The `start` invocation daemonizes the server and exits, so the server
    // is an orphan adopted by init, outliving a containerd restart.
    assert_eq!(
        host::ppid(shim),
        Some(1),
        "shim {shim} is not reparented to init"
    );
    // Detached from containerd's process group, so signals to containerd's
    // group (^C, a service manager's stop) do not reach the shim.
    assert_ne!(
        host::pgid(shim),
        host::pgid(containerd),
        "shim shares containerd's process group"
    );
    if testing_rust_shim() {
        // Our shim starts a new session; runc's shim only does setpgid.
        assert_ne!(
            host::session(shim),
            host::session(containerd),
            "shim shares containerd's session"
        );
    }
    // runc forks the init from `runc create`, which then exits: the init is
    // the shim's child only because the shim is a child subreaper.
    assert_eq!(
        host::ppid(task.pid),
        Some(shim),
        "container init {} is not the shim's child",
        task.pid
    );

    ctd.remove(&id);
    ctd.assert_no_leftovers(&id);
    ctd.finish();
}

#[test]
fn task_ls_and_kill() {
    let ctd = PrivateContainerd::start();
    let id = ctd.unique_id("kill");
    // The trap is set before sleep starts, so once the sleep exists SIGTERM
    // is handled (pid 1 ignores signals it has no handler for).
    let task = ctd
        .run(
            &id,
            &["/bin/sh", "-c", "trap 'exit 42' TERM; sleep 1000 & wait"],
        )
        .detach();
    assert_eq!(task.status, RUNNING);
    assert!(task.pid > 1, "implausible pid {}", task.pid);
    let init =
        host::process(task.pid).unwrap_or_else(|| panic!("task pid {} does not exist", task.pid));
    assert_eq!(
        init.cmdline.first().map(String::as_str),
        Some("/bin/sh"),
        "pid {} is not the container's init",
        task.pid
    );
    wait_for_procs(&ctd, &id, 2);

    ctd.ctr_ok(&["task", "kill", "--signal", "SIGTERM", &id]);
    let stopped = ctd.wait_for_status(&id, STOPPED, REACT);
    assert_eq!(
        stopped.pid, task.pid,
        "a stopped task keeps its pid in ctr task ls"
    );
    assert!(
        !host::is_alive(task.pid),
        "init {} still alive after STOPPED",
        task.pid
    );

    let warning = delete_task(&ctd, &id);
    assert!(
        warning.contains("exit code 42"),
        "ctr task delete must report the trap's exit code 42: {warning:?}"
    );
    assert!(
        ctd.task(&id).is_none(),
        "deleted task still listed: {:?}",
        ctd.tasks()
    );
    ctd.ctr_ok(&["containers", "rm", &id]);
    ctd.assert_no_leftovers(&id);
    ctd.finish();
}

#[test]
fn kill_all() {
    let ctd = PrivateContainerd::start();
    let script = "sleep 1000 & sleep 1000 & wait";

    // SIGTERM: the sleeps die of it, the init shell ignores it (pid 1 without
    // a handler) but returns from `wait` and exits. Sent to init alone, it
    // would change nothing, so the task only stops if --all reached them all.
    let id = ctd.unique_id("killall");
    ctd.run(&id, &["/bin/sh", "-c", script]).detach();
    let pids = wait_for_procs(&ctd, &id, 3);
    ctd.ctr_ok(&["task", "kill", "--all", "--signal", "SIGTERM", &id]);
    ctd.wait_for_status(&id, STOPPED, REACT);
    assert!(
        pids.iter().all(|p| !host::is_alive(*p)),
        "processes of {id} survive: {pids:?}"
    );
    delete_task(&ctd, &id);
    ctd.ctr_ok(&["containers", "rm", &id]);
    ctd.assert_no_leftovers(&id);

    let id = ctd.unique_id("killall");
    ctd.run(&id, &["/bin/sh", "-c", script]).detach();
    let pids = wait_for_procs(&ctd, &id, 3);
    ctd.ctr_ok(&["task", "kill", "--all", "--signal", "SIGKILL", &id]);
    ctd.wait_for_status(&id, STOPPED, REACT);
    let survivors: Vec<_> = pids
        .iter()
        .filter_map(|p| host::process(*p))
        .filter(|p| p.command() == "sleep 1000")
        .collect();
    assert!(
        survivors.is_empty(),
        "sleeps of {id} survive SIGKILL --all: {survivors:?}"
    );
    let warning = delete_task(&ctd, &id);
    assert!(
        warning.contains("exit code 137"),
        "init killed by SIGKILL must exit 137: {warning:?}"
    );
    ctd.ctr_ok(&["containers", "rm", &id]);
    ctd.assert_no_leftovers(&id);
    ctd.finish();
}

#[test]
fn cgroup_limits() {
    let ctd = PrivateContainerd::start();
    let limits = ["--memory-limit", "33554432", "--cpus", "0.5"];

    // Inside: the process is in /<ns>/<id> of every hierarchy (no cgroup namespace).
    let id = ctd.unique_id("cg");
    let out = ctd
        .run(&id, &["/bin/cat", "/proc/self/cgroup"])
        .flags(&limits)
        .rm();
    assert_exit(&ctd, &out, 0, "cat /proc/self/cgroup");
    let expected_path = format!("/{}", ctd.cgroup_rel(&id));
    for controller in ["memory", "cpu", "pids"] {
        let line = stdout(&out)
            .lines()
            .find(|l| {
                l.split(':')
                    .nth(1)
                    .is_some_and(|c| c.split(',').any(|c| c == controller))
            })
            .map(str::to_string);
        let line = line.unwrap_or_else(|| panic!("no {controller} line in\n{}", stdout(&out)));
        assert!(
            line.ends_with(&format!(":{expected_path}")),
            "{controller} cgroup is not {expected_path}: {line}"
        );
    }
    ctd.assert_no_leftovers(&id);

    // From the host: the limits are applied to the cgroup holding the task.
    let id = ctd.unique_id("cg");
    let task = ctd
        .run(&id, &["/bin/sleep", "1000"])
        .flags(&limits)
        .detach();
    let rel = ctd.cgroup_rel(&id);
    assert_eq!(
        host::cgroup_file("memory", &rel, "memory.limit_in_bytes"),
        "33554432"
    );
    assert_eq!(host::cgroup_file("cpu", &rel, "cpu.cfs_quota_us"), "50000");
    assert_eq!(
        host::cgroup_file("cpu", &rel, "cpu.cfs_period_us"),
        "100000"
    );
    for controller in ["memory", "cpu", "pids", "devices", "freezer"] {
        let procs = host::cgroup_procs(&host::cgroup_path(controller, &rel));
        assert_eq!(
            procs,
            vec![task.pid],
            "{controller} cgroup {rel} must hold exactly the task"
        );
    }
    ctd.remove(&id);
    ctd.assert_no_leftovers(&id);

    // ctr 1.6 has no pids flag; a full spec via --config carries the limit.
    let id = ctd.unique_id("cg");
    let mut spec = ctd.default_spec(&id, &["/bin/sleep", "1000"]);
    spec["linux"]["resources"]["pids"] = serde_json::json!({ "limit": 42 });
    let task = ctd.run_config(&id, ctd.write_spec(&id, &spec)).detach();
    assert_eq!(
        host::cgroup_file("pids", &ctd.cgroup_rel(&id), "pids.max"),
        "42"
    );
    assert_eq!(
        host::cgroup_procs(&host::cgroup_path("pids", &ctd.cgroup_rel(&id))),
        vec![task.pid]
    );
    ctd.remove(&id);
    ctd.assert_no_leftovers(&id);
    ctd.finish();
}

/// Asserts that a failed `ctr run --rm` named `needle` and left nothing.
fn assert_failed_cleanly(ctd: &PrivateContainerd, id: &str, out: &Output, needle: &str) {
    assert!(
        !out.status.success(),
        "ctr run {id} succeeded but should have failed\n{}",
        stdout(out)
    );
    assert!(
        stderr(out).contains(needle) || ctd.log().contains(needle),
        "the error does not name {needle:?}\n--- ctr stderr ---\n{}\n{}",
        stderr(out),
        ctd.log_tail(40)
    );
    assert!(
        !ctd.containers().contains(&id.to_string()),
        "ctr run --rm left container {id}"
    );
    assert!(ctd.task(id).is_none(), "failed run left task {id}");
    ctd.assert_no_leftovers(id);
}

#[test]
fn missing_binary() {
    let ctd = PrivateContainerd::start();
    let id = ctd.unique_id("missing");
    let out = ctd.run(&id, &["/no/such/binary"]).rm();
    assert_failed_cleanly(&ctd, &id, &out, "/no/such/binary");

    // Without a slash the runtime looks the name up in PATH.
    let id = ctd.unique_id("missing");
    let out = ctd.run(&id, &["nosuchcmd"]).rm();
    assert_failed_cleanly(&ctd, &id, &out, "nosuchcmd");
    ctd.finish();
}

#[test]
fn malformed_config() {
    let ctd = PrivateContainerd::start();

    // ctr and containerd pass a spec through unvalidated: these reach the runtime.
    let id = ctd.unique_id("badspec");
    let missing_root = ctd.dir().join("no-such-rootfs");
    let mut spec = ctd.default_spec(&id, &["/bin/true"]);
    spec["root"]["path"] = missing_root.display().to_string().into();
    let out = ctd.run_config(&id, ctd.write_spec(&id, &spec)).rm();
    assert_failed_cleanly(&ctd, &id, &out, &missing_root.display().to_string());

    let id = ctd.unique_id("badspec");
    let spec = ctd.default_spec(&id, &[]);
    let out = ctd.run_config(&id, ctd.write_spec(&id, &spec)).rm();
    assert!(
        stderr(&out).to_lowercase().contains("args"),
        "an empty process.args must be rejected naming args\n{}",
        stderr(&out)
    );
    assert_failed_cleanly(&ctd, &id, &out, "args");
    ctd.finish();
}

#[test]
fn restart_survival() {
    let mut ctd = PrivateContainerd::start();
    let a = ctd.unique_id("survivor");
    let b = ctd.unique_id("exiter");
    let task_a = ctd.run(&a, &["/bin/sleep", "1000"]).detach();
    let task_b = ctd.run(&b, &["/bin/sh", "-c", "sleep 3; exit 5"]).detach();
    let shim_a = ctd
        .shim_server(&a)
        .unwrap_or_else(|| panic!("no shim for {a}: {:?}", ctd.shims()));

    ctd.stop();
    // B exits while containerd is down: its shim must reap it and keep the
    // exit status for containerd to collect after the restart.
    assert!(
        wait_until(REACT, || !host::exists(task_b.pid)),
        "{b}'s init {} was not reaped while containerd was down",
        task_b.pid
    );
    assert!(
        host::is_alive(task_a.pid),
        "{a}'s init died with containerd"
    );
    assert!(
        host::is_alive(shim_a.pid),
        "{a}'s shim died with containerd"
    );
    ctd.restart();

    let tasks = ctd.tasks();
    let now_a = tasks.iter().find(|t| t.id == a);
    assert_eq!(
        now_a.map(|t| (t.pid, t.status.as_str())),
        Some((task_a.pid, RUNNING)),
        "{a} after restart: {tasks:?}"
    );
    let now_b = tasks.iter().find(|t| t.id == b);
    assert_eq!(
        ctd.shim_server(&a).map(|p| p.pid),
        Some(shim_a.pid),
        "{a} is served by a new shim"
    );
    if ctd.flavor().name != "1.6" {
        // containerd 1.7 and 2.x take a shim whose task has no process
        // left, and that serves no sandbox, for a leak at restart, and
        // delete it ("cleaning leaked shim process", shim_load.go, after
        // containerd#6860): the task is gone, with their runc shims alike.
        assert!(now_b.is_none(), "{b} after a containerd {} restart: {tasks:?}", ctd.flavor().name);
        assert!(wait_until(REACT, || ctd.shim_server(&b).is_none()), "{b}'s shim still runs");
    } else {
        assert_eq!(
            now_b.map(|t| (t.pid, t.status.as_str())),
            Some((task_b.pid, STOPPED)),
            "{b} after restart: {tasks:?}"
        );
        let warning = delete_task(&ctd, &b);
        assert!(
            warning.contains("exit code 5"),
            "exit status of {b} lost across the restart: {warning:?}"
        );
    }
    ctd.ctr_ok(&["containers", "rm", &b]);
    ctd.remove(&a);
    ctd.assert_no_leftovers(&a);
    ctd.assert_no_leftovers(&b);
    ctd.finish();
}

#[test]
fn shim_sigkill_cleanup() {
    let ctd = PrivateContainerd::start();
    let id = ctd.unique_id("shimkill");
    let task = ctd.run(&id, &["/bin/sleep", "1000"]).detach();
    let shim = ctd
        .shim_server(&id)
        .unwrap_or_else(|| panic!("no shim for {id}: {:?}", ctd.shims()));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the shim");

    // containerd sees the connection drop and runs the shim binary's
    // `delete` action, which must kill the container and clean up after it.
    let mut last = None;
    let noticed = wait_until(REACT, || {
        last = ctd.task(&id);
        last.as_ref().map_or(true, |t| t.status == STOPPED)
    });
    assert!(
        noticed,
        "containerd still lists {last:?} after its shim died\n{}",
        ctd.log_tail(40)
    );
    if last.is_some() {
        ctd.ctr_ok(&["task", "delete", "--force", &id]);
    }
    ctd.ctr_ok(&["containers", "rm", &id]);
    assert!(
        wait_until(REACT, || !host::is_alive(task.pid)),
        "container init {} outlived its shim",
        task.pid
    );
    // Nobody is left to remove a SIGKILLed shim's socket: neither containerd
    // 1.6 nor runc's `delete` action does. The harness removes it at the end.
    ctd.assert_no_leftovers_except(&id, |l| matches!(l, Leftover::ShimSocket(_)));
    ctd.finish();
}

#[test]
fn many_quick_exits() {
    let ctd = PrivateContainerd::start();
    // A lost exit of a fast container makes ctr hang: bound every run.
    let bound = Duration::from_secs(20);
    for _ in 0..10 {
        let id = ctd.unique_id("quick");
        let out = ctd.run(&id, &["/bin/true"]).rm_within(bound);
        assert_exit(&ctd, &out, 0, &format!("/bin/true as {id}"));
    }
    for _ in 0..5 {
        let id = ctd.unique_id("quick");
        let out = ctd.run(&id, &["/bin/echo", &id]).rm_within(bound);
        assert_exit(&ctd, &out, 0, &format!("/bin/echo as {id}"));
        assert_eq!(
            stdout(&out),
            format!("{id}\n"),
            "output of a fast exit lost"
        );
    }
    assert!(
        ctd.containers().is_empty(),
        "ctr run --rm left containers: {:?}",
        ctd.containers()
    );
    ctd.finish();
}
