//! cgroup v1 behaviour of the runtime under test, through the real `ctr`
//! against a private containerd 1.6, on this host's hybrid layout (v1
//! controllers at `/sys/fs/cgroup/<controller>`, cpu and cpuacct in separate
//! hierarchies, an empty cgroup2 at `/sys/fs/cgroup/unified`): pause and
//! resume through the freezer, `ctr task metrics`, OOM events, device rules,
//! `kill --all` of a paused task and the removal of every cgroup on delete.
//!
//! Facts about ctr 1.6 and runc 1.1 these tests rely on, checked against
//! `IT_RUNTIME=io.containerd.runc.v2`:
//! - `ctr task metrics ID` prints `ID TIMESTAMP`, the values, a blank line,
//!   then a `METRIC VALUE` table of the v1 metrics: memory.usage_in_bytes,
//!   memory.limit_in_bytes, memory.stat.cache, cpuacct.usage,
//!   cpuacct.usage_percpu (`[n n ...]`), pids.current, pids.limit;
//! - `ctr task pause`/`resume` print nothing and publish `/tasks/paused` and
//!   `/tasks/resumed` with the container id;
//! - runc allows mknod of every device (`c *:* m`, `b *:* m`) and denies
//!   only the open; our shim denies the mknod of a device the spec does not
//!   allow, on purpose;
//! - runc 1.1's `kill --all` freezes the cgroup, signals every process and
//!   thaws it, so it un-pauses a paused container (see `kill_all_paused`).

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use integration_tests::check::{assert_exit, REACT, RUNNING, STOPPED, assert_fails_naming, stays_true, stderr, stdout};
use integration_tests::host;
use integration_tests::{
    runtime_under_test, testing_rust_shim, wait_until, Event, PrivateContainerd, RUNC_RUNTIME,
};
use serde_json::json;

const PAUSED: &str = "PAUSED";

/// `freezer.state` of container `id`'s freezer cgroup.
fn freezer_state(ctd: &PrivateContainerd, id: &str) -> String {
    host::cgroup_file("freezer", &ctd.cgroup_rel(id), "freezer.state")
}

/// The status `ctr task ls` shows for `id`, `None` without a task.
fn status(ctd: &PrivateContainerd, id: &str) -> Option<String> {
    ctd.task(id).map(|t| t.status)
}

/// Asserts the task's status in `ctr task ls` and its freezer state.
fn assert_state(
    ctd: &PrivateContainerd,
    id: &str,
    want_status: &str,
    want_freezer: &str,
    when: &str,
) {
    assert_eq!(
        status(ctd, id).as_deref(),
        Some(want_status),
        "{when}: `ctr task ls` status of {id}: {:?}\n{}",
        ctd.tasks(),
        ctd.log_tail(40)
    );
    assert_eq!(
        freezer_state(ctd, id),
        want_freezer,
        "{when}: freezer.state of {id}"
    );
}

/// The `/tasks/*` events of container `id` whose topic is among `topics`, in order.
fn task_topics<'a>(events: &'a [Event], id: &str, topics: &[&str]) -> Vec<&'a str> {
    events
        .iter()
        .filter(|e| topics.contains(&e.topic.as_str()) && e.container_id() == Some(id))
        .map(|e| e.topic.as_str())
        .collect()
}

/// A fresh host directory for a bind mount, in the instance's directory.
fn host_dir(ctd: &PrivateContainerd, name: &str) -> PathBuf {
    let dir = ctd.dir().join(name);
    fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    dir
}

/// `ctr run --mount` value binding `src` read-write at `dst`.
fn bind(src: &std::path::Path, dst: &str) -> String {
    format!("type=bind,src={},dst={dst},options=rbind:rw", src.display())
}

#[test]
fn pause_resume() {
    let ctd = PrivateContainerd::start();
    let id = ctd.unique_id("pause");
    let out_dir = host_dir(&ctd, &format!("{id}-out"));
    let ticks = out_dir.join("ticks");
    // One line every 50 ms into a host file: its size is the counter.
    let count = || fs::metadata(&ticks).map(|m| m.len()).unwrap_or(0);
    let watcher = ctd.watch_events();
    let mount = bind(&out_dir, "/out");
    let task = ctd
        .run(
            &id,
            &[
                "/bin/sh",
                "-c",
                "while true; do echo tick >> /out/ticks; sleep 0.05; done",
            ],
        )
        .flags(&["--mount", &mount])
        .detach();
    assert_eq!(task.status, RUNNING);
    let advancing = |what: &str| {
        let from = count();
        assert!(
            wait_until(REACT, || count() >= from + 5 * 5),
            "{what}: the counter of {id} does not advance (stuck at {} bytes)\n{}",
            count(),
            ctd.log_tail(40)
        );
    };
    advancing("before pause");
    assert_eq!(
        freezer_state(&ctd, &id),
        "THAWED",
        "freezer.state before pause"
    );

    ctd.ctr_ok(&["task", "pause", &id]);
    // Pause returns once the cgroup is frozen, not merely FREEZING.
    assert_state(&ctd, &id, PAUSED, "FROZEN", "after ctr task pause");
    let frozen_at = count();
    assert!(
        stays_true(Duration::from_millis(600), || count() == frozen_at),
        "the counter of paused {id} advanced from {frozen_at} to {} bytes",
        count()
    );
    assert!(
        host::is_alive(task.pid),
        "init {} of paused {id} is gone",
        task.pid
    );

    // Pausing a paused task fails, says why, and changes nothing.
    let out = ctd.ctr(&["task", "pause", &id]);
    assert_fails_naming(&ctd, &out, "ctr task pause of a paused task", &["paused"]);
    assert_state(&ctd, &id, PAUSED, "FROZEN", "after a second pause");
    assert_eq!(count(), frozen_at, "the second pause let {id} run");

    ctd.ctr_ok(&["task", "resume", &id]);
    assert_state(&ctd, &id, RUNNING, "THAWED", "after ctr task resume");
    advancing("after resume");

    // Resuming a running task fails, says why, and changes nothing.
    let out = ctd.ctr(&["task", "resume", &id]);
    assert_fails_naming(
        &ctd,
        &out,
        "ctr task resume of a running task",
        &["running"],
    );
    assert_state(
        &ctd,
        &id,
        RUNNING,
        "THAWED",
        "after resuming a running task",
    );
    advancing("after the failed resume");

    // One /tasks/paused, then one /tasks/resumed: the failed calls publish nothing.
    let resumed = watcher.wait_for(REACT, |e| {
        e.topic == "/tasks/resumed" && e.container_id() == Some(id.as_str())
    });
    // Give a wrongly published event of the failed calls time to show up.
    std::thread::sleep(Duration::from_millis(500));
    let raw = watcher.describe();
    let events = watcher.stop();
    let topics = task_topics(&events, &id, &["/tasks/paused", "/tasks/resumed"]);
    assert!(
        resumed && topics == ["/tasks/paused", "/tasks/resumed"],
        "expected /tasks/paused then /tasks/resumed for {id}, got {topics:?}\n{raw}"
    );

    // A paused task can be killed and deleted.
    ctd.ctr_ok(&["task", "pause", &id]);
    assert_state(&ctd, &id, PAUSED, "FROZEN", "paused again");
    ctd.ctr_ok(&["task", "kill", "--signal", "SIGKILL", &id]);
    ctd.wait_for_status(&id, STOPPED, REACT);
    assert!(
        wait_until(REACT, || !host::is_alive(task.pid)),
        "init {} of {id} survives SIGKILL while paused",
        task.pid
    );
    let out = ctd.ctr(&["task", "delete", &id]);
    assert!(
        out.status.success(),
        "ctr task delete of {id}, killed while paused\n{}\n{}",
        stderr(&out),
        ctd.log_tail(40)
    );
    assert!(
        stderr(&out).contains("exit code 137"),
        "init killed by SIGKILL while paused must exit 137: {:?}",
        stderr(&out)
    );
    ctd.ctr_ok(&["containers", "rm", &id]);
    ctd.assert_no_leftovers(&id);
    ctd.finish();
}

/// `ctr task metrics ID` as (metric, value) rows of its `METRIC VALUE` table,
/// with the whole output for messages.
fn metrics_table(ctd: &PrivateContainerd, id: &str) -> (Vec<(String, String)>, String) {
    let text = ctd.ctr_ok(&["task", "metrics", id]);
    let rows = text
        .lines()
        .skip_while(|l| !l.starts_with("METRIC"))
        .skip(1)
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(char::is_whitespace)?;
            Some((k.to_string(), v.trim().to_string()))
        })
        .collect();
    (rows, text)
}

fn metric<'a>(rows: &'a [(String, String)], name: &str, text: &str) -> &'a str {
    rows.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} in `ctr task metrics`:\n{text}"))
}

fn number(rows: &[(String, String)], name: &str, text: &str) -> u64 {
    let v = metric(rows, name, text);
    v.parse()
        .unwrap_or_else(|e| panic!("{name} = {v:?} is not a number ({e}):\n{text}"))
}

#[test]
fn metrics() {
    let ctd = PrivateContainerd::start();
    let limit: u64 = 64 << 20;
    let limit_flag = limit.to_string();
    // The shell keeps a 4 MB string while sleep runs (the trailing echo
    // keeps busybox from exec'ing sleep in its place).
    let argv = [
        "/bin/sh",
        "-c",
        r#"x=$(head -c 4000000 /dev/zero | tr "\0" a); sleep 1000; echo ${#x}"#,
    ];
    let runtime = runtime_under_test();
    let mut tables = Vec::new();
    for rt in [runtime.as_str(), RUNC_RUNTIME] {
        let id = ctd.unique_id("metrics");
        ctd.run(&id, &argv)
            .runtime(rt)
            .flags(&["--memory-limit", &limit_flag])
            .detach();
        // sh and sleep: the string is built once sleep runs.
        let procs = ctd.wait_for_cgroup_procs(&id, 2, REACT);
        let (rows, text) = metrics_table(&ctd, &id);
        let what = format!("`ctr task metrics {id}` under {rt}");
        let usage = number(&rows, "memory.usage_in_bytes", &text);
        assert!(
            usage >= 4_000_000,
            "{what}: memory.usage_in_bytes {usage} does not count the 4 MB string\n{text}"
        );
        assert!(
            usage <= limit,
            "{what}: memory.usage_in_bytes {usage} above the limit\n{text}"
        );
        assert_eq!(
            number(&rows, "memory.limit_in_bytes", &text),
            limit,
            "{what}: memory.limit_in_bytes is not --memory-limit\n{text}"
        );
        assert!(
            number(&rows, "cpuacct.usage", &text) > 0,
            "{what}: cpuacct.usage\n{text}"
        );
        let percpu = metric(&rows, "cpuacct.usage_percpu", &text);
        let cpus = percpu.trim_matches(['[', ']']).split_whitespace().count();
        assert_eq!(
            cpus,
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            "{what}: cpuacct.usage_percpu has one value per cpu\n{text}"
        );
        assert_eq!(
            number(&rows, "pids.current", &text),
            procs.len() as u64,
            "{what}: pids.current is not the number of processes {procs:?}\n{text}"
        );
        assert!(
            text.lines().next().is_some_and(|l| l.starts_with("ID")) && text.contains(&id),
            "{what}: no `ID TIMESTAMP` header naming {id}\n{text}"
        );
        tables.push((rt, id.clone(), rows, text));
        ctd.remove(&id);
        ctd.assert_no_leftovers(&id);
    }
    // Same table shape as runc's: the same metrics, in the same order, and
    // the same unlimited pids.limit.
    let (ours, runc) = (&tables[0], &tables[1]);
    let names = |rows: &[(String, String)]| rows.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&ours.2),
        names(&runc.2),
        "metrics of {} under {} and {} under runc differ in shape\n--- {} ---\n{}\n--- runc ---\n{}",
        ours.1,
        ours.0,
        runc.1,
        ours.0,
        ours.3,
        runc.3
    );
    assert_eq!(
        metric(&ours.2, "pids.limit", &ours.3),
        metric(&runc.2, "pids.limit", &runc.3),
        "pids.limit without a pids limit\n--- {} ---\n{}\n--- runc ---\n{}",
        ours.0,
        ours.3,
        runc.3
    );
    ctd.finish();
}

/// 64 MB of 'a' into a shell variable: more than a 16 MB memory cgroup holds.
const HOG: &str = r#"x=$(head -c 67108864 /dev/zero | tr "\0" a)"#;
const SMALL_LIMIT: &str = "16777216";

#[test]
fn oom_event_before_exit() {
    let ctd = PrivateContainerd::start();

    // The init shell itself is OOM-killed: exit 137, /tasks/oom before /tasks/exit.
    let id = ctd.unique_id("oom");
    let watcher = ctd.watch_events();
    let script = format!("{HOG}; echo ${{#x}}");
    let out = ctd
        .run(&id, &["/bin/sh", "-c", &script])
        .flags(&["--memory-limit", SMALL_LIMIT])
        .rm();
    assert_exit(&ctd, &out, 137, "a shell filling a 16 MB cgroup with 64 MB");
    assert!(
        !stdout(&out).contains("67108864"),
        "the hog completed its 64 MB under a 16 MB limit: {}",
        stdout(&out)
    );
    watcher.wait_for(REACT, |e| {
        e.topic == "/tasks/delete" && e.container_id() == Some(id.as_str())
    });
    let raw = watcher.describe();
    let events = watcher.stop();
    let topics = task_topics(&events, &id, &["/tasks/oom", "/tasks/exit"]);
    let oom = topics.iter().position(|t| *t == "/tasks/oom");
    let exit = topics.iter().position(|t| *t == "/tasks/exit");
    // Our shim publishes the OOM before the exit it caused. runc's shim
    // publishes OOMs from its own epoll goroutine, unordered with the exit:
    // about one run in ten shows /tasks/exit first, so only both are required.
    let ordered = if testing_rust_shim() {
        matches!((oom, exit), (Some(o), Some(x)) if o < x)
    } else {
        oom.is_some() && exit.is_some()
    };
    assert!(
        ordered,
        "expected /tasks/oom before /tasks/exit for {id}, got {topics:?}\n{raw}\n{}",
        ctd.log_tail(40)
    );
    let exit_event = events
        .iter()
        .find(|e| e.topic == "/tasks/exit" && e.container_id() == Some(id.as_str()))
        .expect("found above");
    assert_eq!(
        exit_event.number("exit_status"),
        137,
        "/tasks/exit of the OOM-killed init: {}",
        exit_event.line
    );
    ctd.assert_no_leftovers(&id);

    // A subshell is OOM-killed, init lives on: /tasks/oom, and still RUNNING.
    let id = ctd.unique_id("oom");
    let watcher = ctd.watch_events();
    // The trailing echo keeps busybox from exec'ing sleep in init's place.
    // The subshell and its pipeline volunteer as OOM victims: when the
    // memory of the first victim is not yet freed, the kernel picks a
    // second one, and it was once init (dmesg: "Killed process ... (sh)
    // total-vm:2268kB", the container's 2 MB shell).
    let script = format!("(echo 1000 > /proc/self/oom_score_adj; {HOG}); echo survived; sleep 1000; echo done");
    let task = ctd
        .run(&id, &["/bin/sh", "-c", &script])
        .flags(&["--memory-limit", SMALL_LIMIT])
        .detach();
    let got_oom = watcher.wait_for(REACT, |e| {
        e.topic == "/tasks/oom" && e.container_id() == Some(id.as_str())
    });
    let oom_control = host::cgroup_file("memory", &ctd.cgroup_rel(&id), "memory.oom_control");
    assert!(
        got_oom,
        "no /tasks/oom for {id}, whose subshell was OOM-killed\n\
         memory.oom_control:\n{oom_control}\nprocesses: {:?}\n{}\n{}",
        host::cgroup_procs(&host::cgroup_path("memory", &ctd.cgroup_rel(&id)))
            .iter()
            .filter_map(|p| host::process(*p))
            .map(|p| format!("{}: {}", p.pid, p.command()))
            .collect::<Vec<_>>(),
        watcher.describe(),
        ctd.log_tail(40)
    );
    assert!(
        oom_control
            .lines()
            .any(|l| l.strip_prefix("oom_kill ").is_some_and(|n| n != "0")),
        "the kernel recorded no OOM kill in {id}'s memory cgroup:\n{oom_control}"
    );
    // Once the subshell is gone, init runs `sleep 1000`.
    let procs = ctd.wait_for_cgroup_procs(&id, 2, REACT);
    assert!(
        procs.contains(&task.pid)
            && procs
                .iter()
                .any(|p| host::process(*p).is_some_and(|p| p.command() == "sleep 1000")),
        "{id} should hold its init {} and `sleep 1000`: {procs:?}",
        task.pid
    );
    assert!(
        stays_true(Duration::from_secs(1), || status(&ctd, &id).as_deref()
            == Some(RUNNING)),
        "{id} is not RUNNING after the OOM kill of a subshell: {:?}",
        ctd.tasks()
    );
    let raw = watcher.describe();
    let events = watcher.stop();
    assert_eq!(
        task_topics(&events, &id, &["/tasks/exit"]),
        Vec::<&str>::new(),
        "a /tasks/exit for {id}, whose init survived\n{raw}"
    );
    ctd.remove(&id);
    ctd.assert_no_leftovers(&id);
    ctd.finish();
}

/// The host's first disk as (major, minor), from /proc/partitions; sda's
/// 8:0 if there is none.
fn host_disk() -> (u32, u32) {
    let partitions = fs::read_to_string("/proc/partitions").unwrap_or_default();
    partitions
        .lines()
        .skip(2)
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.parse().ok()?, f.get(1)?.parse().ok()?))
        })
        .unwrap_or((8, 0))
}

/// Probe of the device cgroup, as `key=value` lines: opening the default
/// character devices, writing /dev/null, reading /dev/urandom, mknod of the
/// host disk in /dev (a tmpfs, so nothing reaches the host) and opening
/// that, and opening /dev/probe-blk if the spec created it.
fn device_probe(major: u32, minor: u32) -> String {
    format!(
        r#"for d in null zero full random urandom tty ptmx; do echo "open_$d=$( (exec 3<>/dev/$d) 2>&1 && echo ok)"; done
echo "write_null=$( (echo x > /dev/null) 2>&1 && echo ok)"
echo "urandom_bytes=$(head -c1 /dev/urandom | wc -c)"
echo "mknod=$(mknod /dev/probe-disk b {major} {minor} 2>&1 && echo ok)"
if [ -b /dev/probe-disk ]; then echo "open_mknod=$( (exec 3</dev/probe-disk) 2>&1 && echo ok)"; fi
rm -f /dev/probe-disk
if [ -b /dev/probe-blk ]; then echo "open_blk=$( (exec 3</dev/probe-blk) 2>&1 && echo ok)"; else echo open_blk=absent; fi
"#
    )
}

fn parse_probe(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const EPERM: &str = "Operation not permitted";

#[test]
fn device_rules() {
    let ctd = PrivateContainerd::start();
    let (major, minor) = host_disk();
    let probe = device_probe(major, minor);
    let argv = ["/bin/sh", "-c", probe.as_str()];
    let runtime = runtime_under_test();
    let rust = testing_rust_shim();

    let run = |rt: &str, config: bool| {
        let id = ctd.unique_id("devices");
        let out = if config {
            // `ctr oci spec` as is: its only device rule is deny-all. One
            // extra node, a block device the spec never allows.
            let mut spec = ctd.default_spec(&id, &argv);
            spec["linux"]["devices"] = json!([{
                "path": "/dev/probe-blk", "type": "b", "major": major, "minor": minor,
                "fileMode": 0o600, "uid": 0, "gid": 0,
            }]);
            ctd.run_config(&id, ctd.write_spec(&id, &spec))
                .runtime(rt)
                .rm()
        } else {
            ctd.run(&id, &argv).runtime(rt).rm()
        };
        let what = format!(
            "device probe under {rt} ({})",
            if config {
                "--config from ctr oci spec"
            } else {
                "ctr run --rootfs"
            }
        );
        assert_exit(&ctd, &out, 0, &what);
        ctd.assert_no_leftovers(&id);
        let p = parse_probe(&stdout(&out));
        (what, p, stdout(&out))
    };

    for config in [false, true] {
        let (what, ours, text) = run(&runtime, config);
        for dev in ["null", "zero", "urandom"] {
            assert_eq!(
                ours.get(&format!("open_{dev}")).map(String::as_str),
                Some("ok"),
                "{what}: /dev/{dev} cannot be opened\n{text}"
            );
        }
        assert_eq!(
            ours.get("write_null").map(String::as_str),
            Some("ok"),
            "{what}: echo > /dev/null\n{text}"
        );
        assert_eq!(
            ours.get("urandom_bytes").map(String::as_str),
            Some("1"),
            "{what}: head -c1 /dev/urandom\n{text}"
        );
        let mknod = ours.get("mknod").map(String::as_str).unwrap_or("");
        if rust {
            // Our shim refuses to create a node of a disk nobody allowed.
            assert!(
                mknod.contains(EPERM) && !ours.contains_key("open_mknod"),
                "{what}: mknod of the host disk {major}:{minor} must fail with EPERM\n{text}"
            );
        } else {
            // runc allows mknod of anything; the open is what fails.
            let open = ours.get("open_mknod").map(String::as_str).unwrap_or("");
            assert!(
                mknod == "ok" && open.contains(EPERM),
                "{what}: runc allows the mknod of {major}:{minor} and denies its open\n{text}"
            );
        }
        let blk = ours.get("open_blk").map(String::as_str).unwrap_or("");
        if config {
            assert!(
                blk.contains(EPERM),
                "{what}: opening the spec's block device /dev/probe-blk ({major}:{minor}), \
                 which no rule allows, must fail with EPERM\n{text}"
            );
        } else {
            assert_eq!(blk, "absent", "{what}\n{text}");
        }

        // The default character devices behave as under runc.
        let (runc_what, reference, runc_text) = run(RUNC_RUNTIME, config);
        for dev in ["null", "zero", "full", "random", "urandom", "tty", "ptmx"] {
            let key = format!("open_{dev}");
            assert_eq!(
                ours.get(&key),
                reference.get(&key),
                "opening /dev/{dev}: {what} differs from {runc_what}\n--- ours ---\n{text}\n--- runc ---\n{runc_text}"
            );
        }
    }
    ctd.finish();
}

#[test]
fn kill_all_paused() {
    let ctd = PrivateContainerd::start();
    let id = ctd.unique_id("killpaused");
    let task = ctd
        .run(&id, &["/bin/sh", "-c", "sleep 1000 & sleep 1000 & wait"])
        .detach();
    let pids = ctd.wait_for_cgroup_procs(&id, 3, REACT);
    ctd.ctr_ok(&["task", "pause", &id]);
    assert_state(&ctd, &id, PAUSED, "FROZEN", "after pause");

    ctd.ctr_ok(&["task", "kill", "--all", "--signal", "SIGTERM", &id]);
    if testing_rust_shim() {
        // Signals wait for the thaw: the task stays paused, nothing dies.
        assert!(
            stays_true(Duration::from_secs(1), || {
                status(&ctd, &id).as_deref() == Some(PAUSED)
                    && freezer_state(&ctd, &id) == "FROZEN"
                    && pids.iter().all(|p| host::is_alive(*p))
            }),
            "kill --all SIGTERM of paused {id} changed it: status {:?}, freezer {}, alive {:?} of {pids:?}",
            status(&ctd, &id),
            freezer_state(&ctd, &id),
            pids.iter().filter(|p| host::is_alive(**p)).collect::<Vec<_>>()
        );
    } else {
        // runc 1.1 freezes, signals and thaws: the paused container is thawed
        // and the sleeps die of SIGTERM, so init's `wait` returns and it exits.
        assert!(
            wait_until(REACT, || freezer_state(&ctd, &id) == "THAWED"),
            "runc's kill --all of paused {id}: freezer {}",
            freezer_state(&ctd, &id)
        );
        ctd.wait_for_status(&id, STOPPED, REACT);
    }

    if status(&ctd, &id).as_deref() != Some(STOPPED) {
        ctd.ctr_ok(&["task", "kill", "--all", "--signal", "SIGKILL", &id]);
        ctd.wait_for_status(&id, STOPPED, REACT);
    }
    assert!(
        wait_until(REACT, || pids.iter().all(|p| !host::is_alive(*p))),
        "processes of {id} survive: {:?} of {pids:?}",
        pids.iter()
            .filter(|p| host::is_alive(**p))
            .collect::<Vec<_>>()
    );
    assert!(!host::is_alive(task.pid));
    let out = ctd.ctr(&["task", "delete", &id]);
    assert!(
        out.status.success(),
        "ctr task delete of {id}\n{}\n{}",
        stderr(&out),
        ctd.log_tail(40)
    );
    ctd.ctr_ok(&["containers", "rm", &id]);
    ctd.assert_no_leftovers(&id);
    ctd.finish();
}

/// The v1 hierarchies a container's cgroup must be in, and gone from after delete.
const CONTROLLERS: &[&str] = &[
    "freezer", "devices", "cpu", "cpuacct", "pids", "memory", "blkio", "systemd",
];

#[test]
fn stats_cgroup_removed_after_delete() {
    let ctd = PrivateContainerd::start();
    let id = ctd.unique_id("cgrm");
    let task = ctd
        .run(&id, &["/bin/sh", "-c", "sleep 1000 & wait"])
        .flags(&["--memory-limit", "67108864"])
        .detach();
    let rel = ctd.cgroup_rel(&id);
    ctd.wait_for_cgroup_procs(&id, 2, REACT);
    // An exec enters the cgroup by its own path (stage 1 moves itself
    // through each hierarchy's `tasks` file): it, init and init's child
    // must all be in every hierarchy, and nothing else.
    ctd.exec(&id, "in-cgroup", &["/bin/sleep", "1000"]).detach();
    let mut pids = ctd.wait_for_cgroup_procs(&id, 3, REACT);
    pids.sort_unstable();
    let mut listed = ctd.task_pids(&id);
    listed.sort_unstable();
    assert_eq!(pids, listed, "cgroup.procs of {id} against ctr task ps");
    assert!(pids.contains(&task.pid), "init {} of {id} is not in {pids:?}", task.pid);
    for c in CONTROLLERS {
        let dir = host::cgroup_path(c, &rel);
        let mut here = host::cgroup_procs(&dir);
        here.sort_unstable();
        assert_eq!(here, pids, "{} does not hold every process of {id}", dir.display());
    }
    let (rows, text) = metrics_table(&ctd, &id);
    assert!(number(&rows, "pids.current", &text) >= 1, "{text}");

    ctd.ctr_ok(&["task", "kill", "--signal", "SIGKILL", &id]);
    ctd.wait_for_status(&id, STOPPED, REACT);
    // Stats of a stopped task, before delete: whatever it answers, it must
    // not keep or recreate a cgroup past the delete.
    let _ = ctd.ctr(&["task", "metrics", &id]);
    ctd.ctr_ok(&["task", "delete", &id]);
    let out = ctd.ctr(&["task", "metrics", &id]);
    assert_fails_naming(&ctd, &out, "ctr task metrics after delete", &[&id]);

    let mut left = Vec::new();
    let gone = wait_until(Duration::from_secs(10), || {
        left = host::cgroup_dirs(&rel);
        left.extend(
            CONTROLLERS
                .iter()
                .map(|c| host::cgroup_path(c, &rel))
                .filter(|d| d.exists()),
        );
        left.is_empty()
    });
    assert!(
        gone,
        "cgroups of {id} left after ctr task delete: {left:?}\n{}",
        ctd.log_tail(40)
    );
    ctd.ctr_ok(&["containers", "rm", &id]);
    ctd.assert_no_leftovers(&id);
    ctd.finish();
}
