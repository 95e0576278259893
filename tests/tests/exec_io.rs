//! Exec, terminals and IO through the real `ctr` against a private
//! containerd 1.6 (issue #4): exec exit codes, streams and identity, the
//! exec event sequence, duplicate ids, execs killed with their init, `ctr
//! run -t` / `ctr task exec -t` under a pty, a 100 MB burst, `file://` and
//! `binary://` log URIs, exec ids in `ctr task ps`, output across a
//! containerd restart, (issue #14) stdin at CloseIO and a late reader of
//! a task's output, and an exec's slow reader holding up no other call.
//!
//! Facts about ctr 1.6 these tests rely on, checked against runc:
//! - `ctr task exec` has `--exec-id`, `-d`, `-t`, `--user`, `--cwd`,
//!   `--fifo-dir` and `--log-uri` (and refuses `--log-uri` together with
//!   `--fifo-dir`), but no `--env`: an exec's spec is the container's
//!   `process` with its args, terminal, cwd and user replaced;
//! - attached `ctr task exec` waits for the exec, deletes it and exits with
//!   its status; on stdin EOF it calls CloseIO; a detached exec stays
//!   registered after it exits until `ctr task delete --exec-id E`, which
//!   exits with the exec's status;
//! - `ctr task ps` prints the exec id of exec processes in its INFO column as
//!   `&ProcessDetails{ExecID:E,...}`, and fails outright when the runtime's
//!   Any does not resolve to `containerd.runc.v1.ProcessDetails`;
//! - `ctr run -t` / `ctr task exec -t` send the terminal size right after
//!   start and again on SIGWINCH;
//! - when containerd goes away, an attached `ctr run` or `ctr task attach`
//!   exits with `transport is closing` and removes the task's FIFOs on its
//!   way out, so a later `ctr task attach` could not reopen them; `ctr task
//!   attach` forwards SIGTERM to the task (it is stopped with SIGKILL here)
//!   and deletes the task once it exited;
//! - a `binary://` logger gets the container's stdout as fd 3, its stderr
//!   as fd 4 and a pipe as fd 5, which it closes once ready (the shim waits
//!   for EOF on it, so every process holding it must close it), with
//!   CONTAINER_ID and CONTAINER_NAMESPACE in its environment;
//! - runc's shim loses an exec's stderr with `ctr task exec --log-uri
//!   file://`, so exec log URIs are not tested;
//! - `ctr task delete` removes the task's FIFOs, and their directory when
//!   that is left empty.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use integration_tests::check::{assert_exit, REACT, RUNNING, STOPPED, assert_fails_naming, stays_true, stderr, stdout};
use integration_tests::host;
use integration_tests::{task_events, 
    output_with_input, runtime_under_test, shell_quote, wait_until, Event, PrivateContainerd,
    RUNC_RUNTIME,
};

/// Where `script` (util-linux / bsdutils) lives.
const SCRIPT: &str = "/usr/bin/script";

/// Asserts that task `id` is RUNNING with init `pid`, alive on the host.
fn assert_running(ctd: &PrivateContainerd, id: &str, pid: u32, when: &str) {
    let now = ctd.task(id);
    assert_eq!(
        now.as_ref().map(|t| (t.pid, t.status.as_str())),
        Some((pid, RUNNING)),
        "{id} {when}: {:?}\n{}",
        ctd.tasks(),
        ctd.log_tail(40)
    );
    assert!(host::is_alive(pid), "{id}'s init {pid} is dead {when}");
}

/// Polls the container's pids cgroup until exactly one process other than
/// `init` has the command line `cmdline`, and returns its pid.
fn wait_for_exec_pid(ctd: &PrivateContainerd, id: &str, init: u32, cmdline: &str) -> u32 {
    let cgroup = host::cgroup_path("pids", &ctd.cgroup_rel(id));
    let mut found = Vec::new();
    let ok = wait_until(REACT, || {
        found = host::cgroup_procs(&cgroup)
            .into_iter()
            .filter(|p| *p != init)
            .filter(|p| host::process(*p).is_some_and(|p| p.command() == cmdline))
            .collect();
        found.len() == 1
    });
    assert!(
        ok,
        "no single `{cmdline}` in {} within {REACT:?}: {found:?}; procs {:?}\n{}",
        cgroup.display(),
        host::cgroup_procs(&cgroup),
        ctd.log_tail(40)
    );
    found[0]
}

/// The numbers of `line N` lines in `text`.
fn line_numbers(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("line ")?.parse().ok())
        .collect()
}

fn max_line(text: &str) -> Option<u64> {
    line_numbers(text).into_iter().max()
}

/// A container script printing `line N` every 50 ms forever.
const TICKER: &str = "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.05; done";

#[test]
fn exec_exit_codes_and_streams() {
    let ctd = PrivateContainerd::start();
    let id = ctd.unique_id("exec");
    let task = ctd.run(&id, &["/bin/sleep", "100000"]).detach();

    let out = ctd.exec(&id, "true", &["/bin/true"]).output();
    assert_exit(&ctd, &out, 0, "exec /bin/true");
    let out = ctd.exec(&id, "five", &["/bin/sh", "-c", "exit 5"]).output();
    assert_exit(&ctd, &out, 5, "exec sh -c 'exit 5'");

    // stdout and stderr stay apart.
    let out = ctd
        .exec(&id, "streams", &["/bin/sh", "-c", "echo out; echo err >&2"])
        .output();
    assert_exit(&ctd, &out, 0, "exec echo");
    assert_eq!(
        stdout(&out),
        "out\n",
        "stdout must hold exactly the exec's stdout"
    );
    assert!(
        stderr(&out).contains("err\n") && !stderr(&out).contains("out"),
        "stderr must hold the exec's stderr and nothing of its stdout: {:?}",
        stderr(&out)
    );

    // The tail of the output is not lost when the exec exits right after.
    let out = ctd.exec(&id, "seq", &["/bin/seq", "1", "20000"]).output();
    assert_exit(&ctd, &out, 0, "exec seq");
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    let expected: Vec<String> = (1..=20000).map(|n| n.to_string()).collect();
    assert!(
        lines == expected,
        "exec seq output truncated or garbled: {} lines, last {:?}",
        lines.len(),
        lines.last()
    );

    // stdin is delivered, and its EOF (CloseIO) reaches cat, which exits.
    let out = ctd
        .exec(&id, "cat", &["/bin/cat"])
        .output_with_stdin(b"a\nb\n");
    assert_exit(
        &ctd,
        &out,
        0,
        "printf 'a\\nb\\n' | ctr task exec ... /bin/cat",
    );
    assert_eq!(stdout(&out), "a\nb\n", "cat must echo its whole stdin");

    // SIGKILL to one exec by its id: its attached ctr reports 128 + 9.
    let attached = ctd.exec(&id, "sleeper", &["/bin/sleep", "1000"]).spawn();
    let pid = wait_for_exec_pid(&ctd, &id, task.pid, "/bin/sleep 1000");
    ctd.ctr_ok(&[
        "task",
        "kill",
        "--exec-id",
        "sleeper",
        "--signal",
        "SIGKILL",
        &id,
    ]);
    let out = attached.wait(REACT);
    assert_exit(
        &ctd,
        &out,
        137,
        "exec sleep killed by ctr task kill --exec-id",
    );
    assert!(!host::exists(pid), "the killed exec {pid} was not reaped");
    assert_running(&ctd, &id, task.pid, "after its execs");
    // Attached execs are deleted by ctr once they exited: only init is left,
    // and the ids are free again.
    assert_eq!(ctd.task_pids(&id), vec![task.pid], "processes of {id}");
    let out = ctd.exec(&id, "five", &["/bin/sh", "-c", "exit 6"]).output();
    assert_exit(
        &ctd,
        &out,
        6,
        "exec id `five` reused after its exec was deleted",
    );

    ctd.remove(&id);
    ctd.assert_no_leftovers(&id);
    ctd.finish();
}

/// Prints `key=value` lines about the process running it: namespaces and
/// cgroups compared with the container's init, identity, capabilities.
const EXEC_PROBE: &str = r#"for n in pid mnt net ipc uts cgroup user; do
  a=$(readlink /proc/self/ns/$n); b=$(readlink /proc/1/ns/$n)
  if [ -z "$b" ]; then echo "ns_$n=init's unreadable"
  elif [ "$a" = "$b" ]; then echo "ns_$n=init's"; else echo "ns_$n=differs: $a vs init's $b"; fi
done
if [ "$(cat /proc/self/cgroup)" = "$(cat /proc/1/cgroup)" ]; then echo "cgroup=init's"; else echo "cgroup=differs"; fi
echo "cgroup_lines=$(tr '\n' ' ' < /proc/self/cgroup)"
echo "pid_is_1=$([ $$ = 1 ] && echo yes || echo no)"
echo "init=$(tr '\0' ' ' < /proc/1/cmdline)"
echo "id=$(id)"
echo "cwd=$(pwd)"
echo "env=$(env | grep -v -e '^SHLVL=' -e '^PWD=' -e '^_=' | sort | tr '\n' ' ')"
grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp|Groups):' /proc/self/status | tr -d '\t' | sed 's/:/=/'
echo "umask=$(umask)"
echo "nofile=$(ulimit -n)"
"#;

/// Keys of [`EXEC_PROBE`] that name the container and so differ between
/// two containers whatever the runtime.
const EXEC_PROBE_NOISE: &[&str] = &["cgroup_lines"];

fn parse_probe(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn probe_value<'a>(probe: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    probe
        .get(key)
        .unwrap_or_else(|| panic!("probe has no {key}: {probe:#?}"))
}

/// One way of running [`EXEC_PROBE`]: `ctr run` and `ctr task exec` flags.
struct ProbeCase {
    name: &'static str,
    run_flags: &'static [&'static str],
    exec_flags: &'static [&'static str],
}

const PROBE_CASES: &[ProbeCase] = &[
    ProbeCase {
        name: "default",
        run_flags: &[],
        exec_flags: &[],
    },
    ProbeCase {
        name: "user-cwd",
        run_flags: &[],
        exec_flags: &["--user", "1000:1000", "--cwd", "/tmp"],
    },
    ProbeCase {
        name: "new-privs",
        run_flags: &["--allow-new-privs"],
        exec_flags: &[],
    },
];

/// Runs [`EXEC_PROBE`] in an exec of a fresh container under `runtime`.
/// The init exports a variable of its own, which the exec must not inherit:
/// an exec's environment is its spec's.
fn run_exec_probe(
    ctd: &PrivateContainerd,
    runtime: &str,
    case: &ProbeCase,
) -> (String, BTreeMap<String, String>) {
    let id = ctd.unique_id("probe");
    let mut run_flags = vec!["--env", "FOO=from-spec"];
    run_flags.extend(case.run_flags);
    ctd.run(
        &id,
        &[
            "/bin/sh",
            "-c",
            "export LEAK=init-only; exec /bin/sleep 100000",
        ],
    )
    .runtime(runtime)
    .flags(&run_flags)
    .detach();
    let out = ctd
        .exec(&id, "probe", &["/bin/sh", "-c", EXEC_PROBE])
        .flags(case.exec_flags)
        .output();
    assert_exit(
        ctd,
        &out,
        0,
        &format!("exec probe {} under {runtime}", case.name),
    );
    ctd.remove(&id);
    ctd.assert_no_leftovers(&id);
    (id, parse_probe(&stdout(&out)))
}

#[test]
fn exec_namespaces_and_identity() {
    let ctd = PrivateContainerd::start();
    let runtime = runtime_under_test();
    for case in PROBE_CASES {
        let (id, ours) = run_exec_probe(&ctd, &runtime, case);
        let what = format!("exec probe {} in {id}", case.name);
        // A non-root exec may not read init's namespace links; the host
        // view below covers it.
        let ns_ok: &[&str] = if case.name == "user-cwd" {
            &["init's", "init's unreadable"]
        } else {
            &["init's"]
        };
        for kind in ["pid", "mnt", "net", "ipc", "uts", "cgroup", "user"] {
            let value = probe_value(&ours, &format!("ns_{kind}"));
            assert!(
                ns_ok.contains(&value),
                "{what}: the exec is not in its container's {kind} namespace: {value}"
            );
        }
        assert_eq!(
            probe_value(&ours, "cgroup"),
            "init's",
            "{what}: /proc/self/cgroup differs from init's: {}",
            probe_value(&ours, "cgroup_lines")
        );
        let expected_cgroup = format!(":/{}", ctd.cgroup_rel(&id));
        let lines = probe_value(&ours, "cgroup_lines");
        for controller in ["memory", "cpu", "pids", "devices", "freezer"] {
            let line = lines.split_whitespace().find(|l| {
                l.split(':')
                    .nth(1)
                    .is_some_and(|c| c.split(',').any(|c| c == controller))
            });
            assert!(
                line.is_some_and(|l| l.ends_with(&expected_cgroup)),
                "{what}: the exec's {controller} cgroup is not {expected_cgroup}: {lines}"
            );
        }
        assert_eq!(
            probe_value(&ours, "pid_is_1"),
            "no",
            "{what}: exec is pid 1"
        );
        assert_eq!(
            probe_value(&ours, "init"),
            "/bin/sleep 100000",
            "{what}: /proc/1 inside the exec is not the container's init"
        );
        let env: BTreeSet<&str> = probe_value(&ours, "env").split_whitespace().collect();
        assert!(
            env.contains("FOO=from-spec"),
            "{what}: the spec's env is missing: {env:?}"
        );
        assert!(
            !env.iter().any(|e| e.starts_with("LEAK=")),
            "{what}: the exec inherited init's own environment: {env:?}"
        );
        assert_eq!(probe_value(&ours, "CapBnd"), "00000000a80425fb", "{what}");
        match case.name {
            "user-cwd" => {
                assert!(
                    probe_value(&ours, "id").starts_with("uid=1000 gid=1000"),
                    "{what}: --user 1000:1000 not applied: {}",
                    probe_value(&ours, "id")
                );
                assert_eq!(probe_value(&ours, "cwd"), "/tmp", "{what}: --cwd");
                // A non-root user without ambient capabilities keeps none.
                assert_eq!(probe_value(&ours, "CapEff"), "0000000000000000", "{what}");
            }
            _ => {
                assert!(
                    probe_value(&ours, "id").starts_with("uid=0(root) gid=0(root)"),
                    "{what}: {}",
                    probe_value(&ours, "id")
                );
                assert_eq!(probe_value(&ours, "cwd"), "/", "{what}: cwd");
                assert_eq!(probe_value(&ours, "CapEff"), "00000000a80425fb", "{what}");
            }
        }
        let nnp = if case.name == "new-privs" { "0" } else { "1" };
        assert_eq!(probe_value(&ours, "NoNewPrivs"), nnp, "{what}: NoNewPrivs");

        // Everything else as runc gives it.
        let (_, reference) = run_exec_probe(&ctd, RUNC_RUNTIME, case);
        let flatten = |m: &BTreeMap<String, String>| -> BTreeSet<String> {
            m.iter()
                .filter(|(k, _)| !EXEC_PROBE_NOISE.contains(&k.as_str()))
                .map(|(k, v)| format!("{k}={v}"))
                .collect()
        };
        let (r, o) = (flatten(&reference), flatten(&ours));
        assert!(
            r == o,
            "{what}: the exec sees another system than under runc\nonly under runc:\n  {}\nonly under {runtime}:\n  {}",
            r.difference(&o).cloned().collect::<Vec<_>>().join("\n  "),
            o.difference(&r).cloned().collect::<Vec<_>>().join("\n  ")
        );
    }

    // From the host: a running exec shares every namespace and cgroup of the
    // init, runs as its user, and is the shim's child.
    let id = ctd.unique_id("hostview");
    let task = ctd.run(&id, &["/bin/sleep", "100000"]).detach();
    ctd.exec(&id, "sleeper", &["/bin/sleep", "99999"])
        .flags(&["--user", "1000:1000"])
        .detach();
    let pid = wait_for_exec_pid(&ctd, &id, task.pid, "/bin/sleep 99999");
    for kind in ["pid", "mnt", "net", "ipc", "uts", "cgroup", "user"] {
        assert_eq!(
            host::namespace(&pid.to_string(), kind),
            host::namespace(&task.pid.to_string(), kind),
            "exec {pid} of {id} is not in init's {kind} namespace"
        );
    }
    let cgroup = |p: u32| fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap_or_default();
    assert_eq!(cgroup(pid), cgroup(task.pid), "exec {pid} of {id}: cgroups");
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    for (key, value) in [("Uid:", "1000"), ("Gid:", "1000")] {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap_or("");
        assert!(
            line.split_whitespace().skip(1).all(|v| v == value) && !line.is_empty(),
            "exec {pid}: {key} must all be {value}: {line:?}"
        );
    }
    let shim = ctd
        .shim_server(&id)
        .unwrap_or_else(|| panic!("no shim for {id}: {:?}", ctd.shims()));
    assert_eq!(
        host::ppid(pid),
        Some(shim.pid),
        "exec {pid} of {id} is not the shim's child"
    );
    ctd.remove(&id);
    assert!(
        wait_until(REACT, || !host::exists(pid)),
        "exec {pid} of {id} outlived its container"
    );
    ctd.assert_no_leftovers(&id);
    ctd.finish();
}

/// An event's process: `exec_id` for exec events, `id` for exits.
fn event_process(e: &Event) -> String {
    let field = if e.topic == "/tasks/exit" {
        "id"
    } else {
        "exec_id"
    };
    e.payload
        .get(field)
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string()
}

#[test]
fn exec_events_in_order() {
    let ctd = PrivateContainerd::start();
    let id = ctd.unique_id("execev");
    let task = ctd.run(&id, &["/bin/sleep", "100000"]).detach();
    let watcher = ctd.watch_events();
    let rounds = 5u64;
    for round in 0..rounds {
        let exec_id = format!("ev-{round}");
        let out = ctd
            .exec(&id, &exec_id, &["/bin/sh", "-c", &format!("exit {round}")])
            .output();
        assert_exit(&ctd, &out, round as i32, &format!("exec {exec_id}"));
        let seen = watcher.wait_for(REACT, |e| {
            e.topic == "/tasks/exit"
                && e.container_id() == Some(id.as_str())
                && event_process(e) == exec_id
        });
        assert!(
            seen,
            "no /tasks/exit for exec {exec_id} of {id}\n{}\n{}",
            watcher.describe(),
            ctd.log_tail(40)
        );
    }
    let raw = watcher.describe();
    let events = watcher.stop();
    let ours = task_events(&events, &id);
    let got: Vec<(String, String)> = ours
        .iter()
        .map(|e| (e.topic.clone(), event_process(e)))
        .collect();
    let expected: Vec<(String, String)> = (0..rounds)
        .flat_map(|round| {
            let exec_id = format!("ev-{round}");
            ["/tasks/exec-added", "/tasks/exec-started", "/tasks/exit"]
                .into_iter()
                .map(move |t| (t.to_string(), exec_id.clone()))
        })
        .collect();
    assert_eq!(
        got,
        expected,
        "exec events of {id} out of order, missing or extra\n{raw}\n{}",
        ctd.log_tail(40)
    );
    for round in 0..rounds as usize {
        let (started, exit) = (ours[round * 3 + 1], ours[round * 3 + 2]);
        let pid = started.number("pid");
        assert!(
            pid > 0 && pid != u64::from(task.pid),
            "round {round}: /tasks/exec-started must name the exec's own pid: {}",
            started.line
        );
        assert_eq!(
            exit.number("pid"),
            pid,
            "round {round}: /tasks/exit names another pid than /tasks/exec-started: {}",
            exit.line
        );
        assert_eq!(
            exit.number("exit_status"),
            round as u64,
            "round {round}: exit status in {}",
            exit.line
        );
    }
    assert_running(&ctd, &id, task.pid, "after five execs");
    ctd.remove(&id);
    ctd.assert_no_leftovers(&id);
    ctd.finish();
}

#[test]
fn duplicate_exec_id() {
    let ctd = PrivateContainerd::start();
    let id = ctd.unique_id("dup");
    let task = ctd.run(&id, &["/bin/sleep", "100000"]).detach();
    ctd.exec(&id, "x", &["/bin/sleep", "1000"]).detach();
    let pid = wait_for_exec_pid(&ctd, &id, task.pid, "/bin/sleep 1000");

    let out = ctd.exec(&id, "x", &["/bin/true"]).output();
    assert_fails_naming(
        &ctd,
        &out,
        "a second exec with id x",
        &["x", "already exists"],
    );
    assert!(
        stays_true(Duration::from_secs(1), || host::is_alive(pid)),
        "the first exec x ({pid}) died of the duplicate"
    );

    // A detached exec stays registered after it exited, until deleted.
    ctd.ctr_ok(&["task", "kill", "--exec-id", "x", "--signal", "SIGKILL", &id]);
    assert!(
        wait_until(REACT, || !host::exists(pid)),
        "exec x ({pid}) survives SIGKILL"
    );
    let out = ctd.exec(&id, "x", &["/bin/true"]).output();
    assert_fails_naming(
        &ctd,
        &out,
        "an exec with the id of an exited, undeleted exec",
        &["x", "already exists"],
    );
    // Delete by exec id reports that exec's status (ctr exits with it).
    let out = ctd.ctr(&["task", "delete", "--exec-id", "x", &id]);
    assert_exit(&ctd, &out, 137, "ctr task delete --exec-id x");
    let out = ctd.ctr(&["task", "delete", "--exec-id", "x", &id]);
    assert_fails_naming(&ctd, &out, "deleting exec x twice", &["x", "not found"]);
    let out = ctd.ctr(&["task", "delete", "--exec-id", "nosuch", &id]);
    assert_fails_naming(
        &ctd,
        &out,
        "ctr task delete --exec-id nosuch",
        &["nosuch", "not found"],
    );
    let out = ctd.exec(&id, "x", &["/bin/sh", "-c", "exit 9"]).output();
    assert_exit(&ctd, &out, 9, "exec id x reused after its delete");

    assert_running(&ctd, &id, task.pid, "after the duplicate execs");
    ctd.remove(&id);
    ctd.assert_no_leftovers(&id);
    ctd.finish();
}

#[test]
fn init_exit_kills_execs() {
    let ctd = PrivateContainerd::start();
    let id = ctd.unique_id("initexit");
    // The init waits for a file the test creates (the rootfs is a host
    // directory), so the execs surely run before it exits.
    let go = ctd.rootfs().join("tmp").join(format!("{id}.go"));
    let script = format!("until [ -e /tmp/{id}.go ]; do sleep 0.1; done");
    let task = ctd.run(&id, &["/bin/sh", "-c", &script]).detach();
    let watcher = ctd.watch_events();
    ctd.exec(&id, "long-1", &["/bin/sleep", "1001"]).detach();
    ctd.exec(&id, "long-2", &["/bin/sleep", "1002"]).detach();
    let pids = [
        wait_for_exec_pid(&ctd, &id, task.pid, "/bin/sleep 1001"),
        wait_for_exec_pid(&ctd, &id, task.pid, "/bin/sleep 1002"),
    ];

    fs::write(&go, "").expect("create the go file");
    ctd.wait_for_status(&id, STOPPED, REACT);
    let _ = fs::remove_file(&go);
    for pid in pids {
        assert!(
            wait_until(REACT, || !host::exists(pid)),
            "exec {pid} of {id} survives its init's exit"
        );
    }
    for exec_id in ["long-1", "long-2"] {
        let seen = watcher.wait_for(REACT, |e| {
            e.topic == "/tasks/exit"
                && e.container_id() == Some(id.as_str())
                && event_process(e) == exec_id
        });
        assert!(
            seen,
            "no /tasks/exit for exec {exec_id} after {id}'s init exited\n{}\n{}",
            watcher.describe(),
            ctd.log_tail(40)
        );
    }
    let events = watcher.stop();
    let exits: Vec<&Event> = task_events(&events, &id)
        .into_iter()
        .filter(|e| e.topic == "/tasks/exit")
        .collect();
    for (exec_id, pid) in ["long-1", "long-2"].iter().zip(pids) {
        let exit = exits
            .iter()
            .find(|e| event_process(e) == *exec_id)
            .expect("checked above");
        assert_eq!(exit.number("pid"), u64::from(pid), "{}", exit.line);
        assert_eq!(
            exit.number("exit_status"),
            137,
            "exec {exec_id} is killed with SIGKILL: {}",
            exit.line
        );
    }
    let init_exit = exits.iter().find(|e| event_process(e) == id);
    assert!(
        init_exit.is_some_and(|e| e.number("exit_status") == 0),
        "the init's /tasks/exit is missing or not 0: {init_exit:?}"
    );

    let out = ctd.ctr(&["task", "delete", &id]);
    assert!(
        out.status.success(),
        "ctr task delete {id} after its execs were killed\n{}\n{}",
        stderr(&out),
        ctd.log_tail(40)
    );
    ctd.ctr_ok(&["containers", "rm", &id]);
    ctd.assert_no_leftovers(&id);
    ctd.finish();
}

/// Runs `shell` under a pty made by `script` (its stdin fed with `input`)
/// and returns its output with the terminal's `\r` and NULs removed; the
/// exit status is the shell's (`script -e`).
fn under_pty(ctd: &PrivateContainerd, shell: &str, input: &[u8]) -> Output {
    assert!(
        Path::new(SCRIPT).exists(),
        "{SCRIPT} is missing: apt-get install bsdutils"
    );
    let mut cmd = Command::new(SCRIPT);
    cmd.args(["-q", "-e", "-c", shell, "/dev/null"]);
    let timeout = Duration::from_secs(60);
    let mut out = output_with_input(&mut cmd, input, timeout).unwrap_or_else(|partial| {
        panic!(
            "`script -qec {shell:?}` did not finish within {timeout:?}\n{}\n{}",
            String::from_utf8_lossy(&partial.stdout),
            ctd.log_tail(40)
        )
    });
    out.stdout.retain(|b| *b != b'\r' && *b != 0);
    out
}

/// The lines of a pty transcript, trimmed, empty ones left out. A NUL that
/// ctr writes to the terminal comes back echoed as `^@`, which is dropped.
fn pty_lines(out: &Output) -> Vec<String> {
    stdout(out)
        .lines()
        .map(|l| l.replace("^@", "").trim().to_string())
        // ctr 2.2 warns on the terminal (its stderr) that cgroup v1 is
        // deprecated.
        .filter(|l| !l.is_empty() && !l.contains("DEPRECATION: The support for cgroup v1"))
        .collect()
}

/// The `MAJOR, MINOR` of a character device in an `ls -l` line, if it is one.
fn char_device(ls_line: &str) -> Option<(u32, u32)> {
    if !ls_line.starts_with('c') {
        return None;
    }
    let tokens: Vec<&str> = ls_line.split_whitespace().collect();
    let i = tokens.iter().position(|t| t.ends_with(','))?;
    Some((
        tokens[i].trim_end_matches(',').parse().ok()?,
        tokens.get(i + 1)?.parse().ok()?,
    ))
}

/// A command under the pty: the terminal starts at 33x101 and is resized to
/// 40x120 (then SIGWINCH to ctr) once the container side has created
/// `marker` (a host path: the rootfs is a host directory), i.e. printed the
/// size it started with. `ctr` is a background job of a non-interactive
/// shell, so its stdin is set to the terminal explicitly.
fn resize_script(ctr_line: &str, marker: &Path) -> String {
    let marker = shell_quote(&marker.display().to_string());
    format!(
        "stty rows 33 cols 101; {ctr_line} </dev/tty & \
         n=0; while [ ! -e {marker} ] && [ $n -lt 300 ]; do sleep 0.1; n=$((n+1)); done; \
         stty rows 40 cols 120; kill -WINCH $!; wait $!"
    )
}

/// The container side of [`resize_script`]: prints its tty, `size R C` once
/// its size is set (the first resize arrives a moment after start, under
/// runc too; busybox `stty size` fails on a 0x0 terminal), creates
/// `/tmp/<marker>`, then prints `size R C` again once the size changed or
/// after 10 s, then runs `extra`.
fn resize_probe(marker: &str, extra: &str) -> String {
    format!(
        "tty; sz() {{ stty size 2>/dev/null; }}; \
         n=0; while {{ [ -z \"$(sz)\" ] || [ \"$(sz)\" = '0 0' ]; }} && [ $n -lt 50 ]; do sleep 0.2; n=$((n+1)); done; \
         first=$(sz); echo \"size $first\"; touch /tmp/{marker}; \
         n=0; while [ \"$(sz)\" = \"$first\" ] && [ $n -lt 50 ]; do sleep 0.2; n=$((n+1)); done; \
         echo \"size $(sz)\"; {extra}"
    )
}

/// Host path of `/tmp/<name>` in the containers' rootfs.
fn rootfs_tmp(ctd: &PrivateContainerd, name: &str) -> PathBuf {
    ctd.rootfs().join("tmp").join(name)
}

#[test]
fn terminals() {
    let ctd = PrivateContainerd::start();

    // ctr task exec -t: a pty from the container, sized by ResizePty.
    let id = ctd.unique_id("tty");
    let task = ctd.run(&id, &["/bin/sleep", "100000"]).detach();
    let exec = ctd
        .exec(
            &id,
            "tty",
            &["/bin/sh", "-c", &resize_probe("exec-sized", "")],
        )
        .args(&["-t"]);
    let marker = rootfs_tmp(&ctd, "exec-sized");
    let out = under_pty(
        &ctd,
        &resize_script(&ctd.ctr_shell_line(&exec), &marker),
        b"",
    );
    let _ = fs::remove_file(&marker);
    assert_exit(&ctd, &out, 0, "ctr task exec -t");
    let lines = pty_lines(&out);
    assert!(
        lines.len() >= 3
            && lines[0].starts_with("/dev/pts/")
            && lines[1] == "size 33 101"
            && lines[2] == "size 40 120",
        "ctr task exec -t: expected the exec's pty, its size 33x101 at start and 40x120 \
         after SIGWINCH, got {lines:?}\n{}",
        ctd.log_tail(40)
    );

    // Interactive: commands typed on the terminal reach the shell.
    let exec = ctd.exec(&id, "sh", &["/bin/sh"]).args(&["-t"]);
    let out = under_pty(
        &ctd,
        &ctd.ctr_shell_line(&exec),
        b"echo hi-$((1+1))\nexit 3\n",
    );
    assert_exit(&ctd, &out, 3, "interactive ctr task exec -t /bin/sh");
    assert!(
        pty_lines(&out).iter().any(|l| l == "hi-2"),
        "interactive exec: no `hi-2` line in {:?}",
        stdout(&out)
    );
    assert_running(&ctd, &id, task.pid, "after its terminal execs");
    ctd.remove(&id);
    ctd.assert_no_leftovers(&id);

    // ctr run -t: the init's terminal is the pty, bound over /dev/console.
    let id = ctd.unique_id("tty");
    let run = ctd
        .run(
            &id,
            &[
                "/bin/sh",
                "-c",
                &resize_probe("run-sized", "ls -l /dev/console; ls -l $(tty)"),
            ],
        )
        .args_with(&["-t", "--rm"]);
    let marker = rootfs_tmp(&ctd, "run-sized");
    let out = under_pty(
        &ctd,
        &resize_script(&ctd.ctr_shell_line(&run), &marker),
        b"",
    );
    let _ = fs::remove_file(&marker);
    assert_exit(&ctd, &out, 0, "ctr run -t");
    let lines = pty_lines(&out);
    assert!(
        lines.len() >= 5
            && lines[0].starts_with("/dev/pts/")
            && lines[1] == "size 33 101"
            && lines[2] == "size 40 120",
        "ctr run -t: expected the init's pty, its size 33x101 at start and 40x120 after \
         SIGWINCH, then ls -l of /dev/console and of the pty; got {lines:?}\n{}",
        ctd.log_tail(40)
    );
    let pts: u32 = lines[0]["/dev/pts/".len()..]
        .parse()
        .unwrap_or_else(|_| panic!("tty printed {:?}", lines[0]));
    let console = char_device(&lines[3]);
    assert_eq!(
        console,
        Some((136, pts)),
        "ctr run -t: /dev/console must be the init's pty {} (136:{pts}): {:?}",
        lines[0],
        lines[3]
    );
    assert_eq!(
        char_device(&lines[4]),
        Some((136, pts)),
        "ls -l {}: {:?}",
        lines[0],
        lines[4]
    );
    ctd.assert_no_leftovers(&id);

    let id = ctd.unique_id("tty");
    let run = ctd.run(&id, &["/bin/sh"]).args_with(&["-t", "--rm"]);
    let out = under_pty(
        &ctd,
        &ctd.ctr_shell_line(&run),
        b"echo hi-$((1+1))\nexit 3\n",
    );
    assert_exit(&ctd, &out, 3, "interactive ctr run -t /bin/sh");
    assert!(
        pty_lines(&out).iter().any(|l| l == "hi-2"),
        "interactive run: no `hi-2` line in {:?}",
        stdout(&out)
    );
    ctd.assert_no_leftovers(&id);
    ctd.finish();
}

/// `seq 1 BURST_LINES` prints 104 988 897 bytes, a little over 100 MiB.
const BURST_LINES: u64 = 12_900_000;

/// Bytes `seq 1 n` prints.
fn seq_bytes(n: u64) -> u64 {
    let mut total = 0;
    let (mut lo, mut digits) = (1u64, 1u64);
    while lo <= n {
        let hi = (lo * 10 - 1).min(n);
        total += (hi - lo + 1) * (digits + 1);
        lo *= 10;
        digits += 1;
    }
    total
}

/// sha256 of a file or of a shell pipeline's output, by the host's sha256sum.
fn sha256_of_shell(pipeline: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", &format!("{pipeline} | sha256sum")])
        .output()
        .expect("run sha256sum");
    assert!(out.status.success(), "{pipeline} | sha256sum: {out:?}");
    stdout(&out)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn burst_of_100_mb() {
    assert_eq!(seq_bytes(9), 18);
    assert_eq!(seq_bytes(12), 27);
    let ctd = PrivateContainerd::start();
    let id = ctd.unique_id("burst");
    let script = format!("seq 1 {BURST_LINES}; echo burst-done >&2");
    let started = Instant::now();
    let mut run = ctd
        .run(&id, &["/bin/sh", "-c", &script])
        .spawn_logged(&["--rm"], "burst");
    let status = run.wait(Duration::from_secs(600));
    let took = started.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "ctr run --rm of the burst\n{}\n{}",
        run.stderr(),
        ctd.log_tail(40)
    );
    assert!(
        run.stderr().contains("burst-done"),
        "stderr lost: {:?}",
        run.stderr()
    );
    let path = run.stdout_path().to_path_buf();
    let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let expected = seq_bytes(BURST_LINES);
    assert!(expected >= 100 << 20);
    let tail = |p: &Path| {
        let out = Command::new("tail").args(["-c", "64"]).arg(p).output();
        out.map(|o| stdout(&o)).unwrap_or_default()
    };
    assert_eq!(
        size,
        expected,
        "the burst reached ctr truncated or padded after {took:?}; it ends with {:?}\n{}",
        tail(&path),
        ctd.log_tail(40)
    );
    let got = sha256_of_shell(&format!("cat {}", shell_quote(&path.display().to_string())));
    let want = sha256_of_shell(&format!("seq 1 {BURST_LINES}"));
    assert_eq!(
        got, want,
        "the burst reached ctr garbled (same size, other bytes)"
    );
    let _ = fs::remove_file(&path);
    ctd.assert_no_leftovers(&id);
    ctd.finish();
}

/// Runs `echo one; echo two >&2` detached with `--log-uri file://<log>`,
/// deletes it, and asserts the file got both lines.
fn check_file_log(ctd: &PrivateContainerd, log: &Path) {
    let id = ctd.unique_id("filelog");
    let uri = format!("file://{}", log.display());
    let task = ctd
        .run(&id, &["/bin/sh", "-c", "echo one; echo two >&2"])
        .flags(&["--log-uri", &uri])
        .detach();
    ctd.wait_for_status(&id, STOPPED, REACT);
    ctd.ctr_ok(&["task", "delete", &id]);
    ctd.ctr_ok(&["containers", "rm", &id]);
    let text = fs::read_to_string(log).unwrap_or_else(|e| {
        panic!(
            "{id} (init {}) ran with --log-uri {uri}, but {} is unreadable: {e}\n{}",
            task.pid,
            log.display(),
            ctd.log_tail(40)
        )
    });
    // stdout and stderr go to the same file, in either order.
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        ["one", "two"],
        "{id}: the log file must hold the stdout and stderr lines: {text:?}"
    );
    ctd.assert_no_leftovers(&id);
}

#[test]
fn log_uri_file() {
    let ctd = PrivateContainerd::start();
    let logs = ctd.dir().join("logs");
    fs::create_dir(&logs).expect("mkdir logs");
    check_file_log(&ctd, &logs.join("existing-dir.log"));
    // runc's shim creates the file's directory (MkdirAll, 0755).
    check_file_log(&ctd, &logs.join("new").join("dir").join("new-dir.log"));
    ctd.finish();
}

/// A `binary://` logger following containerd's convention: copies fd 3 and
/// fd 4 to `<dir>/<id>.out` and `.err`, records its environment, and closes
/// fd 5 (in every process holding it) to say it is ready.
fn write_logger(dir: &Path) -> PathBuf {
    fs::create_dir_all(dir).expect("mkdir the logger's dir");
    let logger = dir.join("logger.sh");
    let d = dir.display();
    fs::write(
        &logger,
        format!(
            "#!/bin/sh\n\
             cat <&3 > {d}/$CONTAINER_ID.out 5>&- &\n\
             cat <&4 > {d}/$CONTAINER_ID.err 5>&- &\n\
             echo \"$CONTAINER_NAMESPACE $CONTAINER_ID\" > {d}/$CONTAINER_ID.env\n\
             exec 5>&-\n\
             wait\n"
        ),
    )
    .expect("write the logger");
    fs::set_permissions(&logger, fs::Permissions::from_mode(0o755)).expect("chmod the logger");
    logger
}

#[test]
fn log_uri_binary() {
    let ctd = PrivateContainerd::start();
    let dir = ctd.dir().join("binlog");
    let logger = write_logger(&dir);
    let id = ctd.unique_id("binlog");
    let uri = format!("binary://{}", logger.display());
    ctd.run(&id, &["/bin/sh", "-c", "echo one; echo two >&2"])
        .flags(&["--log-uri", &uri])
        .detach();
    ctd.wait_for_status(&id, STOPPED, REACT);
    ctd.ctr_ok(&["task", "delete", &id]);
    ctd.ctr_ok(&["containers", "rm", &id]);
    let logger_str = logger.display().to_string();
    let mut loggers = Vec::new();
    assert!(
        wait_until(REACT, || {
            loggers = host::processes()
                .into_iter()
                .filter(|p| p.command().contains(&logger_str))
                .collect();
            loggers.is_empty()
        }),
        "the logger outlived {id}: {loggers:?}"
    );
    let read = |ext: &str| {
        let path = dir.join(format!("{id}.{ext}"));
        fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "--log-uri {uri}: {} unreadable: {e}\n{}",
                path.display(),
                ctd.log_tail(40)
            )
        })
    };
    assert_eq!(
        read("env"),
        format!("{} {id}\n", ctd.namespace()),
        "the logger's CONTAINER_NAMESPACE and CONTAINER_ID"
    );
    assert_eq!(
        read("out"),
        "one\n",
        "the logger's fd 3 is the container's stdout"
    );
    assert_eq!(
        read("err"),
        "two\n",
        "the logger's fd 4 is the container's stderr"
    );
    ctd.assert_no_leftovers(&id);
    ctd.finish();
}

/// `ctr task ps ID` as (pid, info) pairs.
fn task_ps(ctd: &PrivateContainerd, id: &str) -> Vec<(u32, String)> {
    ctd.ctr_ok(&["task", "ps", id])
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (pid, info) = l.trim().split_once(char::is_whitespace)?;
            Some((pid.parse().ok()?, info.trim().to_string()))
        })
        .collect()
}

#[test]
fn pids_show_exec_ids() {
    let ctd = PrivateContainerd::start();
    let id = ctd.unique_id("execps");
    let task = ctd.run(&id, &["/bin/sleep", "100000"]).detach();
    ctd.exec(&id, "watcher-1", &["/bin/sleep", "1000"]).detach();
    let pid = wait_for_exec_pid(&ctd, &id, task.pid, "/bin/sleep 1000");

    let ps = task_ps(&ctd, &id);
    let mut listed: Vec<u32> = ps.iter().map(|(p, _)| *p).collect();
    listed.sort_unstable();
    let mut in_cgroup = host::cgroup_procs(&host::cgroup_path("pids", &ctd.cgroup_rel(&id)));
    in_cgroup.sort_unstable();
    assert_eq!(
        listed, in_cgroup,
        "ctr task ps must list the cgroup's processes"
    );
    let info = |p: u32| ps.iter().find(|(q, _)| *q == p).map(|(_, i)| i.as_str());
    assert_eq!(info(task.pid), Some("-"), "init has no exec id: {ps:?}");
    assert!(
        // ctr 1.x prints the details as `&ProcessDetails{ExecID:watcher-1,}`,
        // ctr 2.x as `exec_id:"watcher-1"`.
        info(pid).is_some_and(|i| i.contains("ExecID:watcher-1") || i.contains("exec_id:\"watcher-1\"")),
        "ctr task ps must show exec id watcher-1 for {pid}: {ps:?}"
    );

    ctd.ctr_ok(&[
        "task",
        "kill",
        "--exec-id",
        "watcher-1",
        "--signal",
        "SIGKILL",
        &id,
    ]);
    assert!(
        wait_until(REACT, || !host::exists(pid)),
        "exec {pid} survives SIGKILL"
    );
    let out = ctd.ctr(&["task", "delete", "--exec-id", "watcher-1", &id]);
    assert_exit(&ctd, &out, 137, "ctr task delete --exec-id watcher-1");
    assert_eq!(task_ps(&ctd, &id), vec![(task.pid, "-".to_string())]);
    ctd.remove(&id);
    ctd.assert_no_leftovers(&id);
    ctd.finish();
}

#[test]
fn file_log_across_containerd_restart() {
    let mut ctd = PrivateContainerd::start();
    let id = ctd.unique_id("restartlog");
    fs::create_dir(ctd.dir().join("logs")).expect("mkdir logs");
    let log = ctd.dir().join("logs").join(format!("{id}.log"));
    let uri = format!("file://{}", log.display());
    let task = ctd
        .run(&id, &["/bin/sh", "-c", TICKER])
        .flags(&["--log-uri", &uri])
        .detach();
    let lines = || max_line(&fs::read_to_string(&log).unwrap_or_default());
    assert!(
        wait_until(REACT, || lines().is_some_and(|n| n >= 5)),
        "{} does not fill: {:?}\n{}",
        log.display(),
        lines(),
        ctd.log_tail(40)
    );

    ctd.stop();
    let before = lines().unwrap_or(0);
    assert!(
        stays_true(Duration::from_secs(2), || host::is_alive(task.pid)),
        "{id}'s init {} died while containerd was down",
        task.pid
    );
    assert!(
        wait_until(REACT, || lines().is_some_and(|n| n >= before + 10)),
        "{} stopped growing while containerd was down: {before} -> {:?}",
        log.display(),
        lines()
    );
    ctd.restart();

    assert_running(&ctd, &id, task.pid, "after the containerd restart");
    let after = lines().unwrap_or(0);
    assert!(
        wait_until(REACT, || lines().is_some_and(|n| n >= after + 10)),
        "{} stopped growing after the containerd restart: {after} -> {:?}",
        log.display(),
        lines()
    );
    let numbers = line_numbers(&fs::read_to_string(&log).unwrap_or_default());
    let expected: Vec<u64> = (0..numbers.len() as u64).collect();
    assert!(
        numbers == expected,
        "lines lost or repeated in {}: {} lines, last {:?}",
        log.display(),
        numbers.len(),
        numbers.last()
    );
    ctd.remove(&id);
    ctd.assert_no_leftovers(&id);
    ctd.finish();
}

/// The FIFOs ctr made for container `id` (`<fifo dir>/<random>/<id>-std*`).
fn task_fifos(ctd: &PrivateContainerd, id: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in fs::read_dir(ctd.dir().join("fifo"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for f in fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            let is_fifo = f.file_type().is_ok_and(|t| t.is_fifo());
            if is_fifo && name.starts_with(&format!("{id}-std")) {
                found.push(f.path());
            }
        }
    }
    found
}

#[test]
fn fifo_output_across_containerd_restart() {
    let mut ctd = PrivateContainerd::start();
    let id = ctd.unique_id("restartfifo");
    let mut first = ctd
        .run(&id, &["/bin/sh", "-c", TICKER])
        .spawn_logged(&[], "attached-run");
    let task = ctd.wait_for_status(&id, RUNNING, REACT);
    assert!(
        wait_until(REACT, || max_line(&first.stdout()).is_some_and(|n| n >= 5)),
        "the attached ctr run receives nothing\n{}",
        first.describe()
    );
    // ctr removes the task's FIFOs when it loses containerd. Hard links keep
    // them, so that `ctr task attach` can reopen the very FIFOs the shim
    // writes to after the restart, as a client reconnecting would.
    let fifos = task_fifos(&ctd, &id);
    assert_eq!(fifos.len(), 3, "FIFOs of {id}: {fifos:?}");
    let keep = ctd.dir().join(format!("keep-{id}"));
    fs::create_dir(&keep).expect("mkdir keep");
    for (n, f) in fifos.iter().enumerate() {
        fs::hard_link(f, keep.join(n.to_string())).expect("hard-link a FIFO");
    }

    ctd.stop();
    let client = first.wait_within(REACT);
    let seen_before = max_line(&first.stdout()).unwrap_or(0);
    // Not SIGPIPEd (nor otherwise stopped) by its reader going away.
    assert!(
        stays_true(Duration::from_secs(2), || host::is_alive(task.pid)),
        "{id}'s init {} died after its attached ctr went away with containerd ({client:?})\n{}",
        task.pid,
        first.describe()
    );
    ctd.restart();
    assert_running(&ctd, &id, task.pid, "after the containerd restart");

    for (n, f) in fifos.iter().enumerate() {
        if !f.exists() {
            fs::create_dir_all(f.parent().expect("FIFO dir")).expect("mkdir the FIFO dir");
            fs::hard_link(keep.join(n.to_string()), f).expect("restore a FIFO");
        }
    }
    let mut attach = ctd.spawn_ctr_logged(&["task", "attach", &id], "attach");
    // The output flows again: lines the first client never saw, and more
    // coming.
    let mut resumed = 0;
    assert!(
        wait_until(REACT, || {
            resumed = max_line(&attach.stdout()).unwrap_or(0);
            resumed > seen_before
        }),
        "after the restart, ctr task attach gets no new output (the first client saw up to \
         line {seen_before})\n{}\n{}",
        attach.describe(),
        ctd.log_tail(40)
    );
    assert!(
        wait_until(REACT, || max_line(&attach.stdout()).unwrap_or(0)
            >= resumed + 10),
        "the output stalls after resuming at line {resumed}\n{}",
        attach.describe()
    );
    assert_running(&ctd, &id, task.pid, "while attached again");

    // ctr task attach exits with the task's status and deletes the task.
    ctd.ctr_ok(&["task", "kill", "--signal", "SIGKILL", &id]);
    let status = attach.wait(REACT);
    assert_eq!(status.code(), Some(137), "{}", attach.describe());
    drop(first);
    if ctd.task(&id).is_some() {
        ctd.wait_for_status(&id, STOPPED, REACT);
        ctd.ctr_ok(&["task", "delete", &id]);
    }
    ctd.ctr_ok(&["containers", "rm", &id]);
    ctd.assert_no_leftovers(&id);
    ctd.finish();
}

#[test]
fn exec_across_containerd_restart() {
    let mut ctd = PrivateContainerd::start();
    let id = ctd.unique_id("restartexec");
    let task = ctd.run(&id, &["/bin/sleep", "100000"]).detach();
    ctd.exec(&id, "before", &["/bin/sleep", "1000"]).detach();
    let before = wait_for_exec_pid(&ctd, &id, task.pid, "/bin/sleep 1000");

    ctd.restart();
    assert_running(&ctd, &id, task.pid, "after the containerd restart");
    assert!(host::is_alive(before), "exec {before} died with containerd");

    let out = ctd
        .exec(
            &id,
            "after",
            &["/bin/sh", "-c", "echo after-restart; echo err >&2; exit 4"],
        )
        .output();
    assert_exit(&ctd, &out, 4, "exec after the restart");
    assert_eq!(stdout(&out), "after-restart\n");
    assert!(stderr(&out).contains("err\n"), "{:?}", stderr(&out));
    let out = ctd
        .exec(&id, "cat", &["/bin/cat"])
        .output_with_stdin(b"a\nb\n");
    assert_exit(&ctd, &out, 0, "exec cat after the restart");
    assert_eq!(stdout(&out), "a\nb\n");

    // The exec started before the restart is still known by its id.
    ctd.ctr_ok(&[
        "task",
        "kill",
        "--exec-id",
        "before",
        "--signal",
        "SIGKILL",
        &id,
    ]);
    assert!(
        wait_until(REACT, || !host::exists(before)),
        "exec {before} survives SIGKILL"
    );
    let out = ctd.ctr(&["task", "delete", "--exec-id", "before", &id]);
    assert_exit(&ctd, &out, 137, "ctr task delete --exec-id before");
    assert_running(&ctd, &id, task.pid, "after its execs");
    ctd.remove(&id);
    ctd.assert_no_leftovers(&id);
    ctd.finish();
}

/// Every pty of the container's devpts opens (issue #13): the default
/// device rule `c 136:* rwm` used to land in devices.list as `c 136:0`
/// (cgroups-rs turned the wildcard minor into 0), so only /dev/pts/0
/// opened. A container that has a terminal, and two terminal execs at
/// once into it, each get a pty of their own; runc's shim the same.
#[test]
fn terminal_execs_each_get_a_pty() {
    let ctd = PrivateContainerd::start();
    for runtime in [integration_tests::RUNC_RUNTIME.to_string(), integration_tests::runtime_under_test()] {
        let id = ctd.unique_id("ptys");
        // The init holds /dev/pts/0 for as long as it runs.
        let run = ctd.run(&id, &["/bin/sleep", "100000"]).runtime(&runtime).args_with(&["-t", "-d"]);
        let out = under_pty(&ctd, &ctd.ctr_shell_line(&run), b"");
        assert_exit(&ctd, &out, 0, &format!("{runtime}: ctr run -t -d"));
        ctd.wait_for_status(&id, RUNNING, Duration::from_secs(20));
        let lines: Vec<String> = (0..2)
            .map(|n| ctd.ctr_shell_line(&ctd.exec(&id, &format!("pty{n}"), &["/bin/sh", "-c", "tty; sleep 2; echo done"]).args(&["-t"])))
            .collect();
        let execs: Vec<_> = lines
            .into_iter()
            .map(|line| {
                std::thread::spawn(move || {
                    let mut cmd = Command::new(SCRIPT);
                    cmd.args(["-q", "-e", "-c", &line, "/dev/null"]);
                    integration_tests::output_with_input(&mut cmd, b"", Duration::from_secs(60))
                })
            })
            .collect();
        let mut ptys = BTreeSet::new();
        for (n, e) in execs.into_iter().enumerate() {
            let mut out = e.join().expect("exec thread").unwrap_or_else(|o| panic!("{runtime}: exec {n} hung: {}", stdout(&o)));
            out.stdout.retain(|b| *b != b'\r' && *b != 0);
            let lines = pty_lines(&out);
            assert!(
                out.status.success() && lines.first().is_some_and(|l| l.starts_with("/dev/pts/")) && lines.iter().any(|l| l == "done"),
                "{runtime}: terminal exec {n}: {lines:?}\n{}\n{}",
                stderr(&out),
                ctd.log_tail(30)
            );
            ptys.insert(lines[0].clone());
        }
        assert_eq!(ptys.len(), 2, "{runtime}: the two execs shared a pty: {ptys:?}");
        assert!(!ptys.contains("/dev/pts/0"), "{runtime}: an exec got the init's pty: {ptys:?}");
        let list = fs::read_to_string(host::cgroup_path("devices", &ctd.cgroup_rel(&id)).join("devices.list")).unwrap_or_default();
        assert!(list.lines().any(|l| l == "c 136:* rwm"), "{runtime}: devices.list has no rule for every pty:\n{list}");
        ctd.remove(&id);
        ctd.assert_no_leftovers(&id);
    }
    ctd.finish();
}

/// ResizePty of a process without a terminal answers OK and changes
/// nothing, as runc's shim does (issue #13): containerd's clients resize
/// whatever they attach to. An unknown exec is still NOT_FOUND.
#[test]
fn resize_of_a_process_without_a_terminal_is_ok() {
    let ctd = PrivateContainerd::start();
    for runtime in [integration_tests::RUNC_RUNTIME.to_string(), integration_tests::runtime_under_test()] {
        let id = ctd.unique_id("noresize");
        let task = ctd.run(&id, &["/bin/sleep", "100000"]).runtime(&runtime).detach();
        ctd.exec(&id, "sleeper", &["/bin/sleep", "100000"]).detach();
        for exec_id in ["", "sleeper"] {
            if let Err(s) = ctd.resize_pty(&id, exec_id, 120, 40) {
                panic!("{runtime}: ResizePty of {exec_id:?} without a terminal: {:?} {}\n{}", s.code(), s.message(), ctd.log_tail(20));
            }
        }
        let err = ctd.resize_pty(&id, "nosuchexec", 120, 40).expect_err("ResizePty of an unknown exec");
        assert_eq!(err.code(), tonic::Code::NotFound, "{runtime}: {}", err.message());
        assert_running(&ctd, &id, task.pid, "after the resizes");
        ctd.remove(&id);
        ctd.assert_no_leftovers(&id);
    }
    ctd.finish();
}

/// The stdin of the CloseIO test: four times a FIFO's 64 KiB buffer, so
/// that part of it is still in the stdin FIFO, or in the shim's copy, when
/// the client's CloseIO comes.
const STDIN_BYTES: usize = 256 * 1024;

/// How long a reader of one of our own FIFOs waits for its end of file.
const FIFO_TIMEOUT: Duration = Duration::from_secs(60);

/// A FIFO `name` in `dir`, for a Tasks API call.
fn make_fifo(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
    path
}

/// Reads the FIFO at `path` to its end of file: what the reader got, or,
/// after `timeout`, `Err` with what it got so far. Opened non-blocking, so
/// that a FIFO nobody ever writes cannot hang the test in open(2); poll
/// reports it hung up only once a writer came and went.
fn read_fifo_to_eof(path: &Path, timeout: Duration) -> Result<Vec<u8>, Vec<u8>> {
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::os::unix::fs::OpenOptionsExt;
    let mut fifo = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .unwrap_or_else(|e| panic!("open {} for reading: {e}", path.display()));
    let deadline = Instant::now() + timeout;
    let (mut got, mut chunk) = (Vec::new(), vec![0u8; 64 * 1024]);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(got);
        }
        let mut fds = [nix::poll::PollFd::new(fifo.as_fd(), nix::poll::PollFlags::POLLIN)];
        let slice = nix::poll::PollTimeout::from(left.min(Duration::from_millis(100)).as_millis() as u16);
        match nix::poll::poll(&mut fds, slice) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => panic!("poll {}: {e}", path.display()),
        }
        loop {
            match fifo.read(&mut chunk) {
                Ok(0) => return Ok(got),
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read {}: {e}", path.display()),
            }
        }
    }
}

/// Reads each FIFO of `paths` to its end of file at the same time (see
/// [`read_fifo_to_eof`]), as a client reads a process's stdout and stderr.
fn read_fifos_to_eof(paths: &[PathBuf], timeout: Duration) -> Vec<Result<Vec<u8>, Vec<u8>>> {
    std::thread::scope(|s| {
        let readers: Vec<_> = paths.iter().map(|p| s.spawn(move || read_fifo_to_eof(p, timeout))).collect();
        readers.into_iter().map(|r| r.join().expect("a FIFO reader")).collect()
    })
}

/// A process's stdout and stderr FIFOs in `dir`, named after `name`.
/// Separate FIFOs, as ctr makes them: runc's shim opens the write side of
/// an exec's stdout and its stderr one after the other, after the exec
/// started, so with a single FIFO for both, a short exec's stdout copy
/// could end before its stderr was opened, and the reader, seeing end of
/// file, left before the shim's blocking open of the stderr writer.
fn output_fifos(dir: &Path, name: &str) -> [PathBuf; 2] {
    [make_fifo(dir, &format!("{name}.out")), make_fifo(dir, &format!("{name}.err"))]
}

/// Container `id`'s process spec (as `ctr containers info` shows it) with
/// `argv`: the spec of an exec, as ctr makes it.
fn exec_process_spec(ctd: &PrivateContainerd, id: &str, argv: &[&str]) -> serde_json::Value {
    let text = ctd.ctr_ok(&["containers", "info", id]);
    let info: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("`ctr containers info {id}` is not JSON: {e}\n{text}"));
    let mut process = info["Spec"]["process"].clone();
    assert!(process.is_object(), "`ctr containers info {id}` has no Spec.process:\n{text}");
    process["args"] = argv.iter().map(|a| a.to_string()).collect();
    process["terminal"] = false.into();
    process
}

/// `wc -c` exec'd into `id` through the Tasks API with FIFOs of our own in
/// `dir`: `input` is written into its stdin FIFO, then CloseIO is called
/// while our writer is still open, as ctr does (its CloseIO comes as its
/// copy reads end of file, before it closes the FIFO), and then the writer
/// is closed. What wc printed.
fn wc_through_close_io(ctd: &PrivateContainerd, runtime: &str, id: &str, exec_id: &str, dir: &Path, input: &[u8]) -> String {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let what = format!("{runtime}: exec {exec_id} through the Tasks API");
    let stdin = make_fifo(dir, &format!("{exec_id}.in"));
    let outputs = output_fifos(dir, exec_id);
    let [stdin_path, stdout_path, stderr_path] = [&stdin, &outputs[0], &outputs[1]].map(|p| p.display().to_string());
    let process = exec_process_spec(ctd, id, &["/bin/sh", "-c", "wc -c"]);
    let got = std::thread::scope(|s| {
        let readers = s.spawn(|| read_fifos_to_eof(&outputs, FIFO_TIMEOUT));
        ctd.exec_process(id, exec_id, &process, &stdin_path, &stdout_path, &stderr_path)
            .unwrap_or_else(|e| panic!("{what}: Exec: {e}\n{}", ctd.log_tail(30)));
        ctd.start_process(id, exec_id).unwrap_or_else(|e| panic!("{what}: Start: {e}\n{}", ctd.log_tail(30)));
        // runc's shim opens its reader in the background, so it may come
        // after Start answered: non-blocking opens (ENXIO while there is
        // no reader) until it is there, then blocking writes.
        let mut writer = None;
        let opened = wait_until(REACT, || match fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&stdin) {
            Ok(w) => {
                writer = Some(w);
                true
            }
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => false,
            Err(e) => panic!("{what}: open the stdin FIFO: {e}"),
        });
        assert!(opened, "{what}: no reader on its stdin FIFO within {REACT:?} of Start");
        let mut writer = writer.expect("the stdin writer");
        nix::fcntl::fcntl(&writer, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty())).expect("clear O_NONBLOCK");
        writer.write_all(input).unwrap_or_else(|e| panic!("{what}: write its stdin: {e}"));
        ctd.close_stdin(id, exec_id).unwrap_or_else(|e| panic!("{what}: CloseIO: {e}\n{}", ctd.log_tail(30)));
        drop(writer);
        readers.join().expect("the output readers")
    });
    let [out, err] = [&got[0], &got[1]].map(|r| {
        r.as_ref().unwrap_or_else(|partial| panic!("{what}: no end of file on its outputs within {FIFO_TIMEOUT:?}: {:?}", String::from_utf8_lossy(partial)))
    });
    assert!(err.is_empty(), "{what}: stderr {:?}", String::from_utf8_lossy(err));
    let status = ctd.wait_process(id, exec_id).unwrap_or_else(|e| panic!("{what}: Wait: {e}"));
    assert_eq!(status, 0, "{what}: exit status");
    ctd.delete_process(id, exec_id).unwrap_or_else(|e| panic!("{what}: DeleteProcess: {e}"));
    for f in std::iter::once(&stdin).chain(&outputs) {
        fs::remove_file(f).unwrap_or_else(|e| panic!("remove {}: {e}", f.display()));
    }
    String::from_utf8_lossy(out).trim().to_string()
}

/// CloseIO delivers every stdin byte the client wrote before it (issue
/// #14): the shim's copy reads the stdin FIFO to its end, and only then
/// does the process read end of file. The shim used to close the process's
/// stdin at CloseIO and drop what was still in the FIFO or in its copy: as
/// little as 128 KiB of 256 KiB arrived (6 of 10 execs short; runc's shim
/// none). Ten `ctr task exec` (ctr calls CloseIO as its stdin reaches end
/// of file), and three execs closed by a CloseIO of our own, per runtime.
#[test]
fn close_io_delivers_every_stdin_byte() {
    let ctd = PrivateContainerd::start();
    let input: Vec<u8> = (0..STDIN_BYTES).map(|i| (i % 251) as u8).collect();
    let expected = STDIN_BYTES.to_string();
    for runtime in [RUNC_RUNTIME.to_string(), runtime_under_test()] {
        let id = ctd.unique_id("closeio");
        ctd.run(&id, &["/bin/sleep", "100000"]).runtime(&runtime).detach();
        let mut short = Vec::new();
        for n in 0..10 {
            let out = ctd.exec(&id, &format!("wc{n}"), &["/bin/sh", "-c", "wc -c"]).output_with_stdin(&input);
            assert_exit(&ctd, &out, 0, &format!("{runtime}: ctr task exec wc -c, run {n}"));
            let got = stdout(&out).trim().to_string();
            if got != expected {
                short.push(format!("run {n}: {got:?}"));
            }
        }
        assert!(short.is_empty(), "{runtime}: {} of 10 `ctr task exec ... wc -c` did not get all {expected} bytes of stdin: {short:?}", short.len());

        let dir = ctd.dir().join(format!("{id}-fifos"));
        fs::create_dir(&dir).expect("create the FIFO dir");
        for n in 0..3 {
            let got = wc_through_close_io(&ctd, &runtime, &id, &format!("api{n}"), &dir, &input);
            assert_eq!(got, expected, "{runtime}: exec api{n} closed by Tasks.CloseIO did not get all of its stdin");
        }
        fs::remove_dir(&dir).expect("remove the FIFO dir");
        ctd.remove(&id);
        ctd.assert_no_leftovers(&id);
    }
    ctd.finish();
}

/// How late the reader of the late-reader test comes.
const LATE_DELAYS: [Duration; 2] = [Duration::from_millis(50), Duration::from_millis(200)];

/// The sizes of `seq 1 N` in the late-reader test: 2000 lines (8893 bytes)
/// fit in a FIFO's buffer, so the process writes them all and exits before
/// the reader comes (what a shim that closes its end of the FIFO after its
/// copy loses); 20000 lines (108893 bytes) do not, so the process waits for
/// the reader.
const LATE_LINES: [u32; 2] = [2000, 20000];

/// Runs `calls` (the client's Create and Start, or Exec and Start) on a
/// thread and opens the readers of `fifos` `delay` after they were issued;
/// if they returned before that (a shim that does not wait for its
/// reader), `delay` after they returned, so that the process has written
/// and likely exited by then. What each reader read to its end of file,
/// the calls' result, and whether they had returned before the readers
/// came.
fn late_read(fifos: &[PathBuf], delay: Duration, calls: impl FnOnce() -> Result<(), tonic::Status> + Send) -> (Vec<Result<Vec<u8>, Vec<u8>>>, Result<(), tonic::Status>, bool) {
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel();
        let client = s.spawn(move || {
            let result = calls();
            let _ = tx.send(Instant::now());
            result
        });
        let returned = match rx.recv_timeout(delay) {
            Ok(at) => {
                std::thread::sleep((at + delay).saturating_duration_since(Instant::now()));
                true
            }
            Err(_) => false,
        };
        let out = read_fifos_to_eof(fifos, FIFO_TIMEOUT);
        (out, client.join().expect("the client thread"), returned)
    })
}

/// Asserts that `outputs` (stdout, stderr) are exactly `seq 1 n`'s.
fn assert_seq(what: &str, outputs: Vec<Result<Vec<u8>, Vec<u8>>>, n: u32) {
    let [out, err]: [_; 2] = outputs.try_into().expect("stdout and stderr");
    let (out, eof) = match out {
        Ok(o) => (o, true),
        Err(o) => (o, false),
    };
    let text = String::from_utf8_lossy(&out);
    let expected: String = (1..=n).map(|i| format!("{i}\n")).collect();
    assert!(
        eof && text == expected,
        "{what}: the late reader got {} of {n} lines ({} of {} bytes{}), first {:?}, last {:?}",
        text.lines().count(),
        out.len(),
        expected.len(),
        if eof { "" } else { ", and no end of file" },
        text.lines().next(),
        text.lines().last()
    );
    match err {
        Ok(e) if e.is_empty() => {}
        Ok(e) => panic!("{what}: stderr {:?}", String::from_utf8_lossy(&e)),
        Err(e) => panic!("{what}: no end of file on stderr ({:?} so far)", String::from_utf8_lossy(&e)),
    }
}

/// A reader that opens a task's stdout FIFO late still gets all of its
/// output (issue #14): the shim holds the FIFO's write side until a
/// reader is there and until its copy is done. Our shim used to open the
/// FIFO, copy, and close it while nobody read it: with the reader 50 ms
/// late, 0 of 3 outputs arrived (runc's shim: 3 of 3, also 200 ms late).
/// Through the Tasks API with FIFOs of our own, since ctr opens its
/// readers itself: an init (Create and Start) and an exec (Exec and Start)
/// of `seq 1 N`, the reader 50 ms and 200 ms late, for runc's shim and
/// ours. Both shims' Create, and Start of an exec, wait for the reader
/// (no assertion on that): when the calls do return first, the reader
/// comes that long after they did.
#[test]
fn a_late_reader_gets_all_output() {
    let ctd = PrivateContainerd::start();
    let rootfs = ctd.rootfs().display().to_string();
    for runtime in [RUNC_RUNTIME.to_string(), runtime_under_test()] {
        // The container the execs run in.
        let host = ctd.unique_id("latehost");
        ctd.run(&host, &["/bin/sleep", "100000"]).runtime(&runtime).detach();
        let dir = ctd.dir().join(format!("{host}-fifos"));
        fs::create_dir(&dir).expect("create the FIFO dir");
        for delay in LATE_DELAYS {
            for n in LATE_LINES {
                let count = n.to_string();
                let argv = ["/bin/seq", "1", count.as_str()];

                // The init.
                let id = ctd.unique_id("lateinit");
                let what = format!("{runtime}: init `seq 1 {n}` of {id}, the reader {delay:?} late");
                let mut create = vec!["containers", "create", "--runtime", runtime.as_str(), "--rootfs", rootfs.as_str(), id.as_str()];
                create.extend(argv);
                ctd.ctr_ok(&create);
                // In a directory of its own: `ctr task delete` removes the
                // task's FIFOs, and their directory when that is empty.
                let own = dir.join(&id);
                fs::create_dir(&own).expect("create the init's FIFO dir");
                let fifos = output_fifos(&own, "init");
                let [stdout, stderr] = [&fifos[0], &fifos[1]].map(|p| p.display().to_string());
                let (out, calls, returned) = late_read(&fifos, delay, || {
                    ctd.create_task(&id, "", &stdout, &stderr)?;
                    ctd.start_process(&id, "").map(drop)
                });
                calls.unwrap_or_else(|e| panic!("{what}: Create and Start: {e}\n{}", ctd.log_tail(30)));
                eprintln!("{what}: Create and Start returned before the reader came: {returned}");
                assert_seq(&what, out, n);
                ctd.wait_for_status(&id, STOPPED, Duration::from_secs(20));
                ctd.ctr_ok(&["task", "delete", &id]);
                ctd.ctr_ok(&["containers", "rm", &id]);
                for path in fifos.iter().chain([&own]) {
                    let gone = if path == &own { fs::remove_dir(path) } else { fs::remove_file(path) };
                    if let Some(e) = gone.err().filter(|e| e.kind() != std::io::ErrorKind::NotFound) {
                        panic!("remove {}: {e}", path.display());
                    }
                }
                ctd.assert_no_leftovers(&id);

                // An exec.
                let exec_id = format!("seq{n}-{}ms", delay.as_millis());
                let what = format!("{runtime}: exec {exec_id} `seq 1 {n}` in {host}, the reader {delay:?} late");
                let process = exec_process_spec(&ctd, &host, &argv);
                let fifos = output_fifos(&dir, &exec_id);
                let [stdout, stderr] = [&fifos[0], &fifos[1]].map(|p| p.display().to_string());
                let (out, calls, returned) = late_read(&fifos, delay, || {
                    ctd.exec_process(&host, &exec_id, &process, "", &stdout, &stderr)?;
                    ctd.start_process(&host, &exec_id).map(drop)
                });
                calls.unwrap_or_else(|e| panic!("{what}: Exec and Start: {e}\n{}", ctd.log_tail(30)));
                eprintln!("{what}: Exec and Start returned before the reader came: {returned}");
                assert_seq(&what, out, n);
                let status = ctd.wait_process(&host, &exec_id).unwrap_or_else(|e| panic!("{what}: Wait: {e}"));
                assert_eq!(status, 0, "{what}: exit status");
                ctd.delete_process(&host, &exec_id).unwrap_or_else(|e| panic!("{what}: DeleteProcess: {e}"));
                for f in &fifos {
                    fs::remove_file(f).expect("remove a FIFO");
                }
            }
        }
        fs::remove_dir(&dir).expect("remove the FIFO dir");
        ctd.remove(&host);
        ctd.assert_no_leftovers(&host);
    }
    ctd.finish();
}

/// An exec whose client is slow to open its output readers holds up only
/// its own Start. A shim waits for those readers (up to 30 s, as runc's
/// shim's blocking open does), so that nothing the exec writes before
/// they come is lost; ours used to wait while holding the container's
/// lock, so every other call on the container (another exec's Start, the
/// process list, State, Kill, the exits it reports) waited with it. Here,
/// with an exec's Start still waiting for its reader, another exec runs to
/// its end and `ctr task ps` answers; then the reader comes and the slow
/// exec's output arrives whole.
///
/// Ours only: runc's shim (containerd 1.6.20's) has the stall this test
/// guards against. Run here, its exec's Start held the other exec, `ctr
/// task ps` and containerd's State ("get state for ...: context deadline
/// exceeded") until its open of the FIFO gave up, then failed ("opening
/// w/o fifo ...: context deadline exceeded"), so the slow exec never ran.
#[test]
fn a_slow_exec_reader_holds_up_only_its_own_start() {
    let ctd = PrivateContainerd::start();
    let runtime = runtime_under_test();
    let host = ctd.unique_id("slowhost");
    ctd.run(&host, &["/bin/sleep", "100000"]).runtime(&runtime).detach();
    let dir = ctd.dir().join(format!("{host}-fifos"));
    fs::create_dir(&dir).expect("create the FIFO dir");
    let what = format!("{runtime}: exec slow in {host}, its reader not open yet");
    let fifos = output_fifos(&dir, "slow");
    let [stdout_path, stderr_path] = [&fifos[0], &fifos[1]].map(|p| p.display().to_string());
    let process = exec_process_spec(&ctd, &host, &["/bin/echo", "slow"]);
    ctd.exec_process(&host, "slow", &process, "", &stdout_path, &stderr_path).unwrap_or_else(|e| panic!("{what}: Exec: {e}\n{}", ctd.log_tail(30)));
    let (started, other, ps, pending, out) = std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel();
        let (ctd, host) = (&ctd, &host);
        let start = s.spawn(move || {
            let result = ctd.start_process(host, "slow");
            let _ = tx.send(());
            result
        });
        // Not a timing assertion: time for the Start to reach the
        // shim, where it waits for the reader. Had it not got there,
        // the test would pass against either behaviour, never fail.
        std::thread::sleep(Duration::from_secs(1));
        let other = ctd.exec(host, "other", &["/bin/echo", "other"]).output();
        let ps = task_ps(ctd, host);
        let pending = rx.try_recv().is_err();
        let out = read_fifos_to_eof(&fifos, FIFO_TIMEOUT);
        (start.join().expect("the Start thread"), other, ps, pending, out)
    });
    assert_exit(&ctd, &other, 0, &format!("{runtime}: `ctr task exec` of another process while {what}"));
    assert_eq!(stdout(&other), "other\n", "{runtime}: the other exec's output");
    assert!(!ps.is_empty(), "{runtime}: `ctr task ps {host}` listed no process while {what}");
    assert!(pending, "{what}: its Start answered before the reader came, or the other exec and `ctr task ps` waited for it until it gave up: they must not wait for another process's reader");
    let pid = started.unwrap_or_else(|e| panic!("{what}: Start, once the reader came: {e}\n{}", ctd.log_tail(30)));
    assert!(pid > 0, "{what}: Start answered pid {pid}");
    let [out, err]: [_; 2] = out.try_into().expect("stdout and stderr");
    assert_eq!(out.map(|o| String::from_utf8_lossy(&o).into_owned()), Ok("slow\n".to_string()), "{what}: its stdout, read to end of file");
    assert_eq!(err.map(|o| o.len()), Ok(0), "{what}: its stderr, read to end of file");
    let status = ctd.wait_process(&host, "slow").unwrap_or_else(|e| panic!("{what}: Wait: {e}"));
    assert_eq!(status, 0, "{what}: exit status");
    ctd.delete_process(&host, "slow").unwrap_or_else(|e| panic!("{what}: DeleteProcess: {e}"));
    for f in &fifos {
        fs::remove_file(f).unwrap_or_else(|e| panic!("remove {}: {e}", f.display()));
    }
    fs::remove_dir(&dir).expect("remove the FIFO dir");
    ctd.remove(&host);
    ctd.assert_no_leftovers(&host);
    ctd.finish();
}
