//! Task lifecycle through the real `ctr` against a private containerd 1.6:
//! process listing, the event stream, shim groups and error paths.
//!
//! Facts about ctr 1.6 these tests rely on, checked against runc:
//! - `ctr task ps ID` prints a `PID INFO` header, then one host pid per line;
//! - `ctr events` prints `TIMESTAMP NAMESPACE TOPIC JSON`, with zero-valued
//!   payload fields left out (a `/tasks/exit` with status 0 has no
//!   `exit_status`);
//! - ctr parses `-s N` as a raw signal number without range check, so
//!   `-s 65` reaches the runtime;
//! - there is no way to create a task without starting it: `ctr task start`
//!   and `ctr run` both call Create then Start, and ctr 1.6 has no
//!   `task create` command, so a task in the CREATED state cannot be reached
//!   from ctr (and is not tested here).

use std::time::Duration;

use integration_tests::check::{assert_fails_naming, stays_true, stderr, REACT, RUNNING, STOPPED};
use integration_tests::host;
use integration_tests::{task_events, 
    testing_rust_shim, wait_until, Leftover, PrivateContainerd, SHIM_NAME,
};


#[test]
fn pids_lists_container_processes() {
    let ctd = PrivateContainerd::start();
    let id = ctd.unique_id("pids");
    let task = ctd
        .run(&id, &["/bin/sh", "-c", "sleep 1000 & sleep 1000 & wait"])
        .detach();
    let in_cgroup = ctd.wait_for_cgroup_procs(&id, 3, REACT);

    let mut listed = ctd.task_pids(&id);
    listed.sort_unstable();
    let mut expected = in_cgroup.clone();
    expected.sort_unstable();
    assert_eq!(
        listed, expected,
        "`ctr task ps {id}` must list exactly the host pids in the container's pids cgroup"
    );
    assert!(
        listed.contains(&task.pid),
        "`ctr task ps` lacks the init pid {}: {listed:?}",
        task.pid
    );
    let cgroup = host::cgroup_path("pids", &ctd.cgroup_rel(&id));
    for pid in &listed {
        assert!(
            host::cgroup_procs(&cgroup).contains(pid),
            "pid {pid} listed by ctr task ps is not in {}/cgroup.procs",
            cgroup.display()
        );
    }
    let commands: Vec<String> = listed
        .iter()
        .map(|pid| {
            host::process(*pid)
                .unwrap_or_else(|| panic!("pid {pid} listed by ctr task ps does not exist"))
                .command()
        })
        .collect();
    let sleeps = commands.iter().filter(|c| *c == "sleep 1000").count();
    assert_eq!(
        sleeps, 2,
        "two of the listed processes must be the sleeps: {listed:?} -> {commands:?}"
    );
    let init = host::process(task.pid).expect("init is alive");
    assert_eq!(
        init.cmdline.first().map(String::as_str),
        Some("/bin/sh"),
        "the init {} is not the shell: {}",
        task.pid,
        init.command()
    );

    ctd.ctr_ok(&["task", "kill", "--all", "--signal", "SIGKILL", &id]);
    ctd.wait_for_status(&id, STOPPED, REACT);
    assert!(
        wait_until(REACT, || listed.iter().all(|p| !host::is_alive(*p))),
        "processes of {id} survive SIGKILL --all: {listed:?}"
    );
    ctd.ctr_ok(&["task", "delete", &id]);
    ctd.ctr_ok(&["containers", "rm", &id]);
    ctd.assert_no_leftovers(&id);
    ctd.finish();
}

#[test]
fn events_in_order() {
    let ctd = PrivateContainerd::start();
    let expected = [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ];
    let cases: [(&[&str], u64); 2] = [(&["/bin/true"], 0), (&["/bin/sh", "-c", "exit 3"], 3)];
    for round in 0..5 {
        for (argv, code) in cases {
            let id = ctd.unique_id("events");
            let watcher = ctd.watch_events();
            let out = ctd.run(&id, argv).rm();
            assert_eq!(
                out.status.code(),
                Some(code as i32),
                "round {round}: `ctr run --rm {id} {argv:?}`\n--- stderr ---\n{}\n{}",
                stderr(&out),
                ctd.log_tail(40)
            );
            // The shim publishes asynchronously: the delete event may trail
            // ctr's return a little.
            watcher.wait_for(REACT, |e| {
                e.topic == "/tasks/delete" && e.container_id() == Some(id.as_str())
            });
            let raw = watcher.describe();
            let events = watcher.stop();
            let ours = task_events(&events, &id);
            let topics: Vec<&str> = ours.iter().map(|e| e.topic.as_str()).collect();
            assert_eq!(
                topics, expected,
                "round {round}, {id} running {argv:?}: task events out of order or missing\n{raw}\n{}",
                ctd.log_tail(40)
            );
            let exit = ours[2];
            assert_eq!(
                exit.number("exit_status"),
                code,
                "round {round}: /tasks/exit of {id} running {argv:?}: {}",
                exit.line
            );
            let create_pid = ours[0].number("pid");
            assert!(create_pid > 0, "/tasks/create has no pid: {}", ours[0].line);
            for e in &ours[1..] {
                assert_eq!(
                    e.number("pid"),
                    create_pid,
                    "round {round}: {} names another pid than /tasks/create: {}",
                    e.topic,
                    e.line
                );
            }
            assert_eq!(
                ours[3].number("exit_status"),
                code,
                "round {round}: /tasks/delete of {id} must carry the exit status: {}",
                ours[3].line
            );
            ctd.assert_no_leftovers(&id);
        }
    }
    ctd.finish();
}

#[test]
fn one_shim_per_group() {
    let ctd = PrivateContainerd::start();
    let group = ctd.unique_group("grp");
    let ids = [ctd.unique_id("grouped"), ctd.unique_id("grouped")];
    let tasks: Vec<_> = ids
        .iter()
        .map(|id| {
            let mut spec = ctd.default_spec(id, &["/bin/sleep", "1000"]);
            spec["annotations"]["io.containerd.runc.v2.group"] = group.clone().into();
            ctd.run_config(id, ctd.write_spec(id, &spec)).detach()
        })
        .collect();

    // The long-running servers, not short-lived `start`/`delete` runs.
    let servers = || -> Vec<host::Process> {
        ctd.shims()
            .into_iter()
            .filter(|p| !p.cmdline.iter().any(|a| a == "start" || a == "delete"))
            .collect()
    };
    let found = servers();
    assert_eq!(
        found.len(),
        1,
        "two containers of group {group} must share one shim server: {:?}",
        found
            .iter()
            .map(|p| format!("{}: {}", p.pid, p.command()))
            .collect::<Vec<_>>()
    );
    let shim = found[0].clone();
    if testing_rust_shim() {
        assert!(
            shim.cmdline[0].ends_with(SHIM_NAME) && shim.cmdline.iter().any(|a| a == "serve"),
            "the server is not a `{SHIM_NAME} ... serve`: {}",
            shim.command()
        );
    }
    for (id, task) in ids.iter().zip(&tasks) {
        assert_eq!(
            host::ppid(task.pid),
            Some(shim.pid),
            "init {} of {id} is not a child of the group's shim {}",
            task.pid,
            shim.pid
        );
    }
    let socket = ctd.group_socket(&group);
    assert!(
        socket.exists(),
        "the group's shim socket {} does not exist",
        socket.display()
    );
    for id in &ids {
        assert!(
            !ctd.shim_socket(id).exists(),
            "a per-container shim socket exists for grouped {id}: {}",
            ctd.shim_socket(id).display()
        );
    }

    // Removing the first container must leave the shim serving the second.
    let [first, second] = &ids;
    ctd.remove(first);
    assert!(
        stays_true(Duration::from_secs(2), || host::is_alive(shim.pid)),
        "the group's shim {} exited while still serving {second}\n{}",
        shim.pid,
        ctd.log_tail(40)
    );
    assert!(
        socket.exists(),
        "the group's shim socket vanished with {first}"
    );
    let task = ctd.task(second);
    assert_eq!(
        task.as_ref().map(|t| (t.pid, t.status.as_str())),
        Some((tasks[1].pid, RUNNING)),
        "{second} after deleting {first}: {:?}",
        ctd.tasks()
    );
    assert!(
        host::is_alive(tasks[1].pid),
        "{second}'s init died with {first}"
    );
    // The shim was started for `first` and still carries its id.
    ctd.assert_no_leftovers_except(
        first,
        |l| matches!(l, Leftover::Process(p) if p.pid == shim.pid),
    );

    ctd.ctr_ok(&["task", "kill", "--signal", "SIGKILL", second]);
    ctd.wait_for_status(second, STOPPED, REACT);
    ctd.ctr_ok(&["task", "delete", second]);
    ctd.ctr_ok(&["containers", "rm", second]);
    assert!(
        wait_until(REACT, || !host::is_alive(shim.pid)),
        "the group's shim {} outlived its last container\n{}",
        shim.pid,
        ctd.log_tail(40)
    );
    assert!(
        wait_until(REACT, || !socket.exists()),
        "the group's shim exited but left its socket {}",
        socket.display()
    );
    for id in &ids {
        ctd.assert_no_leftovers(id);
    }
    ctd.finish();
}

#[test]
fn bad_signal_and_unknown_ids() {
    let ctd = PrivateContainerd::start();
    let id = ctd.unique_id("errors");
    let task = ctd.run(&id, &["/bin/sleep", "1000"]).detach();
    let still_running = |what: &str| {
        let now = ctd.task(&id);
        assert_eq!(
            now.as_ref().map(|t| (t.pid, t.status.as_str())),
            Some((task.pid, RUNNING)),
            "{id} after {what}: {:?}",
            ctd.tasks()
        );
        assert!(host::is_alive(task.pid), "{id}'s init died after {what}");
    };

    // Linux signals end at 64: 65 is no signal, and ctr passes numbers through.
    // runc only says "unable to signal init: invalid argument"; our shim must
    // name the offending signal.
    let out = ctd.ctr(&["task", "kill", "--signal", "65", &id]);
    let needles: &[&str] = if testing_rust_shim() { &["65"] } else { &[] };
    assert_fails_naming(&ctd, &out, "ctr task kill -s 65", needles);
    still_running("kill -s 65");

    let out = ctd.ctr(&["task", "kill", "--exec-id", "nosuch", &id]);
    assert_fails_naming(
        &ctd,
        &out,
        "ctr task kill --exec-id nosuch",
        &["nosuch", "not found"],
    );
    still_running("kill --exec-id nosuch");

    // Ids without a task: an unknown container, and a container with no task.
    let unknown = ctd.unique_id("unknown");
    for args in [["task", "kill"], ["task", "delete"]] {
        let out = ctd.ctr(&[args[0], args[1], &unknown]);
        assert_fails_naming(
            &ctd,
            &out,
            &format!("ctr {} {} {unknown}", args[0], args[1]),
            &[&unknown, "not found"],
        );
    }
    let taskless = ctd.unique_id("taskless");
    let runtime = integration_tests::runtime_under_test();
    let rootfs = ctd.rootfs().display().to_string();
    ctd.ctr_ok(&[
        "containers",
        "create",
        "--runtime",
        &runtime,
        "--rootfs",
        &rootfs,
        &taskless,
        "/bin/true",
    ]);
    for args in [["task", "kill"], ["task", "delete"]] {
        let out = ctd.ctr(&[args[0], args[1], &taskless]);
        assert_fails_naming(
            &ctd,
            &out,
            &format!("ctr {} {} {taskless}", args[0], args[1]),
            &["no running task", "not found"],
        );
    }
    ctd.ctr_ok(&["containers", "rm", &taskless]);
    ctd.assert_no_leftovers(&taskless);
    still_running("commands on other ids");

    // An exec of a missing binary fails, names it, and changes nothing.
    let out = ctd.exec(&id, "x", &["/no/such/exec-binary"]).output();
    assert_fails_naming(&ctd, &out, "ctr task exec", &["/no/such/exec-binary"]);
    assert_eq!(
        ctd.task_pids(&id),
        vec![task.pid],
        "a failed exec left processes in {id}"
    );
    still_running("a failed ctr task exec");
    // A good exec with the same id afterwards works: the failed one left
    // no registration behind.
    let out = ctd.exec(&id, "x", &["/bin/true"]).output();
    assert!(
        out.status.success(),
        "ctr task exec /bin/true\n--- stderr ---\n{}",
        stderr(&out)
    );
    still_running("ctr task exec");

    ctd.remove(&id);
    ctd.assert_no_leftovers(&id);
    ctd.finish();
}

/// A pod's shim outlives many containers: each one that comes and goes must
/// leave no thread and no fd behind (a stdin copy waiting for a writer that
/// never comes, as with `ctr run -d`, was one; an output copy waiting for a
/// reader of its full FIFO, also `ctr run -d`, another).
#[test]
fn grouped_shim_keeps_nothing_of_deleted_containers() {
    if !testing_rust_shim() {
        return;
    }
    let ctd = PrivateContainerd::start();
    let group = ctd.unique_group("pod");
    let spec_for = |id: &str, argv: &[&str]| {
        let mut spec = ctd.default_spec(id, argv);
        spec["annotations"]["io.containerd.runc.v2.group"] = group.clone().into();
        ctd.write_spec(id, &spec)
    };
    let keeper = ctd.unique_id("keeper");
    ctd.run_config(&keeper, spec_for(&keeper, &["/bin/sleep", "1000"])).detach();
    let server = ctd
        .shims()
        .into_iter()
        .find(|p| p.cmdline.iter().any(|a| a == "serve"))
        .expect("the pod's shim server");
    let threads = || std::fs::read_dir(format!("/proc/{}/task", server.pid)).map(|d| d.count()).unwrap_or(0);
    let fds = || std::fs::read_dir(format!("/proc/{}/fd", server.pid)).map(|d| d.count()).unwrap_or(0);
    // Let the first container's threads (events connection, ...) settle.
    std::thread::sleep(Duration::from_millis(500));
    let (threads_before, fds_before) = (threads(), fds());
    for _ in 0..3 {
        let id = ctd.unique_id("short");
        ctd.run_config(&id, spec_for(&id, &["/bin/true"])).detach();
        ctd.wait_for_status(&id, STOPPED, REACT);
        ctd.remove(&id);
    }
    // More output than the pipe and the unread FIFO hold: the writer blocks
    // until it is killed, and its output copy never sees the FIFO drain.
    for _ in 0..2 {
        let id = ctd.unique_id("chatty");
        ctd.run_config(&id, spec_for(&id, &["/bin/sh", "-c", "head -c 400000 /dev/zero; echo never"])).detach();
        std::thread::sleep(Duration::from_millis(300));
        ctd.remove(&id);
    }
    let settled = wait_until(REACT, || threads() <= threads_before && fds() <= fds_before);
    assert!(
        settled,
        "over 5 deleted containers the shim grew from {threads_before} to {} threads and from {fds_before} to {} fds",
        threads(),
        fds()
    );
    ctd.remove(&keeper);
    ctd.finish();
}

/// A burst of execs, eight of them at once, leaves the shim as it was:
/// the workers that ran their Task calls and exit reports end after their
/// 2 s linger, the events sender after its idle time, and no exec keeps an
/// fd (issue #7 counts an idle shim's threads and memory).
#[test]
fn shim_returns_to_idle_after_a_burst_of_execs() {
    if !testing_rust_shim() {
        return;
    }
    let ctd = PrivateContainerd::start();
    let id = ctd.unique_id("burst");
    ctd.run(&id, &["/bin/sleep", "1000"]).detach();
    let server = ctd.shim_server(&id).expect("the shim server");
    let threads = || std::fs::read_dir(format!("/proc/{}/task", server.pid)).map(|d| d.count()).unwrap_or(0);
    let fds = || std::fs::read_dir(format!("/proc/{}/fd", server.pid)).map(|d| d.count()).unwrap_or(0);
    // Idle: the calls of the start have been answered and their workers
    // and the events sender have ended.
    assert!(wait_until(REACT, || threads() == 2), "an idle shim has 2 threads, found {}", threads());
    let fds_before = fds();

    for round in 0..3 {
        let running: Vec<_> = (0..8)
            .map(|i| ctd.exec(&id, &format!("e{round}-{i}"), &["/bin/sh", "-c", &format!("echo out{i}")]).spawn())
            .collect();
        for (i, exec) in running.into_iter().enumerate() {
            let out = exec.wait(REACT);
            assert!(out.status.success(), "exec e{round}-{i}: {}", stderr(&out));
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("out{i}"));
        }
    }
    assert!(threads() > 2, "the burst's workers and the events sender linger a moment");
    let settled = wait_until(REACT, || threads() == 2 && fds() <= fds_before);
    assert!(settled, "after 24 execs the shim has {} threads (idle: 2) and {} fds (before: {fds_before})", threads(), fds());
    ctd.remove(&id);
    ctd.finish();
}


/// runc's shim refuses an exec into a paused container at Exec and
/// publishes nothing for it (issue #13); so do we, on every containerd
/// lane, with runc's shim beside ours. After Resume, the same exec id
/// runs.
#[test]
fn exec_into_a_paused_container_is_refused_at_exec() {
    let ctd = PrivateContainerd::start();
    for runtime in [integration_tests::RUNC_RUNTIME.to_string(), integration_tests::runtime_under_test()] {
        let id = ctd.unique_id("paused-exec");
        ctd.run(&id, &["/bin/sleep", "1000"]).runtime(&runtime).detach();
        let watcher = ctd.watch_events();
        ctd.ctr_ok(&["task", "pause", &id]);
        ctd.wait_for_status(&id, "PAUSED", REACT);
        let out = ctd.exec(&id, "x1", &["/bin/echo", "ran"]).output();
        assert!(!out.status.success(), "{runtime}: an exec into a paused container ran:\n{}", integration_tests::check::stdout(&out));
        assert!(stderr(&out).contains("paused"), "{runtime}: the refusal does not say the container is paused: {}", stderr(&out));
        ctd.ctr_ok(&["task", "resume", &id]);
        assert!(watcher.wait_for(REACT, |e| e.topic == "/tasks/resumed" && e.container_id() == Some(id.as_str())), "{runtime}: no /tasks/resumed");
        let events = watcher.stop();
        let topics: Vec<&str> = task_events(&events, &id).iter().map(|e| e.topic.as_str()).collect();
        assert_eq!(topics, ["/tasks/paused", "/tasks/resumed"], "{runtime}: events of {id} around the refused exec");
        // The refused exec left nothing: the same id runs after Resume.
        let out = ctd.exec(&id, "x1", &["/bin/echo", "ran"]).output();
        assert!(out.status.success() && integration_tests::check::stdout(&out).trim() == "ran", "{runtime}: exec after resume: {}", stderr(&out));
        ctd.remove(&id);
        ctd.assert_no_leftovers(&id);
    }
    ctd.finish();
}
