//! Soak and fault suite (issue #14, and #13 case 5: a terminal exec of a
//! million lines). Every load runs our shim and runc's shim side by side on
//! one private containerd 1.6, interleaved (operation k goes to runtime
//! k mod 2, `RSV2_SOAK_PARALLEL` at a time), checks each operation's stdout,
//! stderr and exit code byte for byte, and compares the losses: ours must
//! lose nothing, or, where a client-side race makes 0 impossible, no more
//! than runc's shim in the same run, kind by kind (failed calls, wrong exit
//! codes, lost output: a race in ctr or containerd hits both shims with the
//! same symptom). No such race has shown in ctr 1.6.20 here: what runc's
//! shim loses (output of a fast `ctr run --rm` or exec, one stream or both,
//! about 1 in 500 to 1000 under load; stderr of a container's `file://` log
//! across restarts) is its own. Every phase ends with the accounting of
//! `integration_tests::soak` (shims and their fds/threads/RSS, mounts,
//! cgroups, processes, shim sockets, FIFOs, bundles, runtime state,
//! zombies), which must come back to where it started, and a table row on
//! stderr and in `target/soak/results.md`.
//!
//! Counts come from the environment; the defaults are a short pass that
//! runs with the rest of `cargo test --workspace`. `scripts/soak` runs the
//! long pass (10,000 runs and execs, 2,000 CRI execs and logs, 10
//! restarts, 1,000 terminal execs):
//!
//! | variable | default | what |
//! |---|---|---|
//! | `RSV2_SOAK_RUNS` | 200 | `ctr run --rm` per runtime |
//! | `RSV2_SOAK_EXECS` | 200 | `ctr task exec` per runtime |
//! | `RSV2_SOAK_PARALLEL` | 10 | operations at a time |
//! | `RSV2_SOAK_CRI_EXECS` | 100 | CRI ExecSync per handler |
//! | `RSV2_SOAK_CRI_LOGS` | 50 | CRI containers whose log is read back, per handler |
//! | `RSV2_SOAK_RESTARTS` | 3 | containerd restarts during a load |
//! | `RSV2_SOAK_KILLS` | 6 | rounds of containerd SIGKILLed during creates |
//! | `RSV2_SOAK_FLOOD_SECS` | 8 | seconds of unread output |
//! | `RSV2_SOAK_TTY` | 3 | terminal execs of `seq 1 1000000` |
//!
//! Facts about ctr 1.6 and runc's shim these tests rely on, checked here:
//! - `ctr run -d` and `ctr task exec -d` leave their FIFO directory behind
//!   (ctr removes it only when it waits for the process itself, or at
//!   `ctr task delete` of a task), so tests remove those of their detached
//!   processes, named after them, before the accounting;
//! - `ctr task delete ID` warns `exit with non-zero exit code N` for a
//!   non-zero exit and says nothing for 0; `ctr task delete --exec-id E`
//!   exits with the exec's status;
//! - a CRI pod's cgroup parent (`/<ns>/<pod name>`) is made by the runtime
//!   for the sandbox and removed by nobody (the kubelet would): it is not
//!   counted as a leftover.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Mutex;
use std::process::Command;
use std::time::{Duration, Instant};

use integration_tests::check::{REACT, STOPPED};
use integration_tests::cri::{self, CriContainerd, Pod};
use integration_tests::host;
use integration_tests::soak::{
    self, env_count, interleaved, judge, judge_bounded, report, rss_growth, run_bounded,
    short_name, summarize, workload_argv, Outcome, Row, Sampler, Snapshot, Tally, Tracker,
    RUNTIMES,
};
use integration_tests::{
    output_with_input, task_events, wait_until, Logged, PrivateContainerd,
    RUST_RUNTIME,
};

/// Time limit of one client call of a load: a hang counts as a failure.
const OP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a phase's teardown may take to come back to where it started.
const SETTLE: Duration = Duration::from_secs(30);
/// Our shim's RSS may grow by this fraction over a load, no more.
const RSS_FLAT: f64 = 0.05;
/// How long a fault test waits for runc's shim to clean up before it
/// records what is left (its leaks are expected, ours are not).
const RUNC_SETTLE: Duration = Duration::from_secs(5);
const SCRIPT: &str = "/usr/bin/script";

fn runs() -> usize {
    env_count("RSV2_SOAK_RUNS", 200)
}
fn execs() -> usize {
    env_count("RSV2_SOAK_EXECS", 200)
}
fn parallel() -> usize {
    env_count("RSV2_SOAK_PARALLEL", 10)
}
fn cri_execs() -> usize {
    env_count("RSV2_SOAK_CRI_EXECS", 100)
}
fn cri_logs() -> usize {
    env_count("RSV2_SOAK_CRI_LOGS", 50)
}
fn restarts() -> usize {
    env_count("RSV2_SOAK_RESTARTS", 3)
}
fn kills() -> usize {
    env_count("RSV2_SOAK_KILLS", 6)
}
fn flood_secs() -> usize {
    env_count("RSV2_SOAK_FLOOD_SECS", 8)
}
fn tty_reps() -> usize {
    env_count("RSV2_SOAK_TTY", 3)
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Leftovers naming an id made by `Tracker::id` with a prefix ending in
/// `-<short>` (`run-rust.12`).
fn attributed<'a>(left: &'a [String], short: &str) -> Vec<String> {
    let tag = format!("-{short}.");
    left.iter().filter(|l| l.contains(&tag)).cloned().collect()
}

/// Leftovers naming no runtime's ids.
fn unattributed(left: &[String]) -> Vec<String> {
    left.iter()
        .filter(|l| !l.contains("-rust.") && !l.contains("-runc."))
        .cloned()
        .collect()
}

/// Whether a leftover line is about our shim: it names one of our ids or
/// one of our shim processes.
fn is_ours(l: &str) -> bool {
    l.contains("-rust.") || l.contains("(rust ")
}

/// Ours must lose nothing, or, kind by kind (failed calls, wrong exit
/// codes, lost output), no more than runc's shim in the same run: a race
/// in ctr or containerd would hit both shims with the same symptom, while a
/// count over all kinds could let a bug of ours hide behind one of runc's.
fn assert_no_more_lost(phase: &str, ours: &Tally, runc: &Tally, log: &str) {
    let kinds = [
        ("failed calls", ours.failed, runc.failed),
        ("wrong exit codes", ours.wrong_exit, runc.wrong_exit),
        ("lost output", ours.lost_output, runc.lost_output),
    ];
    let worse: Vec<String> = kinds
        .iter()
        .filter(|(_, o, r)| o > r)
        .map(|(k, o, r)| format!("{k}: ours {o}, runc's {r}"))
        .collect();
    assert!(
        worse.is_empty(),
        "{phase}: our shim got {} of {} operations wrong, runc's shim {} of {} in the same run ({})\n\
         ours:\n{}runc's:\n{}{log}",
        ours.lost(),
        ours.ops,
        runc.lost(),
        runc.ops,
        worse.join("; "),
        ours.describe(),
        runc.describe()
    );
}

/// Issue #14's goal through the CRI client: nothing lost at all, ours
/// (runc's shim is reported beside it, not held to it).
fn assert_none_lost(phase: &str, ours: &Tally, log: &str) {
    assert!(
        ours.lost() == 0,
        "{phase}: our shim got {} of {} operations wrong (failed calls {}, wrong exit codes {}, lost output {})\n{}{log}",
        ours.lost(),
        ours.ops,
        ours.failed,
        ours.wrong_exit,
        ours.lost_output,
        ours.describe()
    );
}

fn print_problems(phase: &str, tallies: &[Tally]) {
    for (rt, t) in RUNTIMES.iter().zip(tallies) {
        if t.lost() > 0 {
            eprintln!(
                "[soak] {phase}: {} got {} of {} wrong:\n{}",
                short_name(rt),
                t.lost(),
                t.ops,
                t.describe()
            );
        }
    }
}

/// Waits until the pids cgroup of `id` holds a process (other than `init`)
/// whose command line is `cmdline`; returns its pid.
fn wait_for_proc(ctd: &PrivateContainerd, id: &str, init: u32, cmdline: &str) -> Option<u32> {
    let cgroup = host::cgroup_path("pids", &ctd.cgroup_rel(id));
    let mut found = None;
    wait_until(REACT, || {
        found = host::cgroup_procs(&cgroup)
            .into_iter()
            .filter(|p| *p != init)
            .find(|p| host::process(*p).is_some_and(|p| p.command() == cmdline));
        found.is_some()
    });
    found
}

/// The shim server of `runtime` (`rust`/`runc`) in the instance's
/// namespace serving `id` (or, for a group, any one of the runtime).
fn shim_pid(ctd: &PrivateContainerd, short: &str, id: Option<&str>) -> Option<u32> {
    soak::shim_servers(&ctd.socket().display().to_string())
        .into_iter()
        .filter_map(|p| soak::shim_stat(&p))
        .find(|s| {
            s.runtime == short && s.namespace == ctd.namespace() && id.map_or(true, |i| s.id == i)
        })
        .map(|s| s.pid)
}

/// Waits for idle shims: threads that serve a burst end 2 s after it.
fn idle() {
    std::thread::sleep(Duration::from_millis(3000));
}

fn rss_cell(before: &Snapshot, after: &Snapshot, pid: u32) -> String {
    let b = before.shims.iter().find(|s| s.pid == pid);
    let a = after.shims.iter().find(|s| s.pid == pid);
    match (b, a) {
        (Some(b), Some(a)) => format!(
            "{}→{} ({:+.1}%)",
            b.rss_kib,
            a.rss_kib,
            rss_growth(before, after, pid).unwrap_or(0.0) * 100.0
        ),
        _ => "-".into(),
    }
}

fn pair_cell(before: &Snapshot, after: &Snapshot, pid: u32, f: impl Fn(&soak::ShimStat) -> usize) -> String {
    let b = before.shims.iter().find(|s| s.pid == pid).map(&f);
    let a = after.shims.iter().find(|s| s.pid == pid).map(&f);
    match (b, a) {
        (Some(b), Some(a)) => format!("{b}→{a}"),
        (Some(b), None) => format!("{b}→gone"),
        _ => "-".into(),
    }
}

// ---------------------------------------------------------------------------
// Loads through ctr
// ---------------------------------------------------------------------------

/// `RSV2_SOAK_RUNS` × `ctr run --rm` per runtime, interleaved, each checked
/// byte for byte; then nothing of them may be left.
#[test]
fn load_ctr_run() {
    let ctd = PrivateContainerd::start();
    let tr = Tracker::new(&ctd);
    let before = tr.snapshot();
    let sampler = Sampler::start(&ctd, Duration::from_millis(250));
    let phase = "ctr run --rm";
    let tallies = interleaved(phase, 2, runs(), parallel(), |rt, k| {
        let runtime = RUNTIMES[rt];
        let id = tr.id(&format!("run-{}", short_name(runtime)));
        let argv = workload_argv(k);
        let args = ctd.run(&id, &strs(&argv)).runtime(runtime).args_with(&["--rm"]);
        let b = run_bounded(ctd.ctr_command(&args), OP_TIMEOUT);
        (judge_bounded(k, &b), b.elapsed, id)
    });
    let peaks = sampler.stop();
    print_problems(phase, &tallies);
    let containers: Vec<String> = ctd.containers();
    let (after, mut left) = tr.settle_by(&before, SETTLE, |l| !l.iter().any(|l| is_ours(l)));
    left.extend(containers.iter().map(|c| format!("container {c}")));
    let zombies = format!("host zombies (of PID 1 or any shim) {}→{}", before.host_zombies, after.host_zombies);
    let rows: Vec<Row> = RUNTIMES
        .iter()
        .zip(&tallies)
        .map(|(rt, t)| {
            let short = short_name(rt);
            let mut row = Row::from_tally(phase, short, t).with_peak(&peaks);
            row.leftovers = summarize(&attributed(&left, short));
            row.note = zombies.clone();
            row
        })
        .collect();
    const KEY: &str = "10-load-ctr-run";
    report(KEY, &rows);
    let saved = soak::save_log(&ctd, KEY);
    tr.clean_up(&ctd);

    assert_no_more_lost(phase, &tallies[0], &tallies[1], &format!("containerd's log: {}\n{}", saved.display(), ctd.log_tail(30)));
    let ours = attributed(&left, "rust");
    assert!(
        ours.is_empty(),
        "{phase}: our shim's runs left behind:\n  {}\n{}",
        ours.join("\n  "),
        ctd.log_tail(30)
    );
    let other = unattributed(&left);
    assert!(other.is_empty(), "{phase}: left behind:\n  {}", other.join("\n  "));
    ctd.finish();
}

/// `RSV2_SOAK_EXECS` × `ctr task exec` per runtime into one container each,
/// interleaved; the long-lived shim's fds and threads come back, and ours
/// keeps its RSS within 5%.
#[test]
fn load_ctr_exec() {
    let ctd = PrivateContainerd::start();
    let tr = Tracker::new(&ctd);
    let empty = tr.snapshot();
    let phase = "ctr task exec";
    let ids: Vec<String> = RUNTIMES
        .iter()
        .map(|rt| {
            let id = tr.id(&format!("exec-{}", short_name(rt)));
            ctd.run(&id, &["/bin/sleep", "1000000"]).runtime(rt).detach();
            id
        })
        .collect();
    // Warm-up: the first execs fault in code and grow the heap once.
    for (rt, id) in ids.iter().enumerate() {
        for w in 0..20 {
            let n = 1_000_000 + w * 2 + rt;
            let argv = workload_argv(n);
            let out = ctd.exec(id, &format!("warm{w}"), &strs(&argv)).output();
            assert_eq!(
                judge(n, out.status.code(), &out.stdout, &out.stderr),
                Outcome::Ok,
                "warm-up exec into {id}\n{}",
                ctd.log_tail(30)
            );
        }
    }
    idle();
    let base = tr.snapshot();
    let pids: Vec<u32> = RUNTIMES
        .iter()
        .zip(&ids)
        .map(|(rt, id)| {
            base.shim(short_name(rt), id)
                .unwrap_or_else(|| panic!("no shim for {id}: {:?}", base.shims))
                .pid
        })
        .collect();

    let sampler = Sampler::start(&ctd, Duration::from_millis(250));
    let tallies = interleaved(phase, 2, execs(), parallel(), |rt, k| {
        let id = &ids[rt];
        let exec_id = format!("x{k}");
        let argv = workload_argv(k);
        let args = ctd.exec(id, &exec_id, &strs(&argv)).args(&[]);
        let b = run_bounded(ctd.ctr_command(&args), OP_TIMEOUT);
        (judge_bounded(k, &b), b.elapsed, format!("{id} exec {exec_id}"))
    });
    let peaks = sampler.stop();
    print_problems(phase, &tallies);
    idle();
    let (after, left) = tr.settle_by(&base, SETTLE, |l| !l.iter().any(|l| is_ours(l)));
    let growth: Vec<Option<f64>> = pids.iter().map(|p| rss_growth(&base, &after, *p)).collect();
    let mut rows: Vec<Row> = Vec::new();
    for (i, rt) in RUNTIMES.iter().enumerate() {
        let short = short_name(rt);
        let mut row = Row::from_tally(phase, short, &tallies[i]);
        row.rss = rss_cell(&base, &after, pids[i]);
        row.fds = pair_cell(&base, &after, pids[i], |s| s.fds);
        row.threads = pair_cell(&base, &after, pids[i], |s| s.threads);
        row = row.with_peak(&peaks);
        row.leftovers = summarize(
            &left
                .iter()
                .filter(|l| l.contains(&format!("({short} ")) || l.contains(&format!("-{short}.")))
                .cloned()
                .collect::<Vec<_>>(),
        );
        rows.push(row);
    }

    for id in &ids {
        ctd.remove(id);
        tr.remove_detached_fifos(std::slice::from_ref(id));
    }
    let (_, end_left) = tr.settle(&empty, SETTLE);
    for (row, short) in rows.iter_mut().zip(["rust", "runc"]) {
        let a = attributed(&end_left, short);
        if !a.is_empty() {
            row.note = format!("after removal: {}", summarize(&a));
        }
    }
    const KEY: &str = "11-load-ctr-exec";
    report(KEY, &rows);
    let saved = soak::save_log(&ctd, KEY);
    tr.clean_up(&ctd);

    assert_no_more_lost(phase, &tallies[0], &tallies[1], &format!("containerd's log: {}\n{}", saved.display(), ctd.log_tail(30)));
    let ours: Vec<&String> = left.iter().filter(|l| is_ours(l)).collect();
    assert!(
        ours.is_empty(),
        "{phase}: after the execs our shim did not come back to where it was:\n  {}\nfds now: {:?}\n{}",
        ours.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n  "),
        soak::fd_targets(pids[0]),
        ctd.log_tail(30)
    );
    let g = growth[0].expect("our shim was measured before and after");
    assert!(
        g <= RSS_FLAT,
        "{phase}: our shim's RSS grew by {:.1}% over {} execs ({}), more than {:.0}%",
        g * 100.0,
        tallies[0].ops,
        rows[0].rss,
        RSS_FLAT * 100.0
    );
    assert!(end_left.is_empty(), "{phase}: left behind after removal:\n  {}", end_left.join("\n  "));
    ctd.finish();
}

// ---------------------------------------------------------------------------
// Loads through the CRI client
// ---------------------------------------------------------------------------

const HANDLERS: [&str; 2] = ["rust", "runc"];

/// One pod per handler, tracked.
fn cri_pods(cri: &CriContainerd, tr: &Tracker, name: &str) -> Vec<Pod> {
    HANDLERS
        .iter()
        .map(|h| {
            let config = cri.pod_config(&format!("{name}-{h}"));
            let id = cri.must(
                &format!("RunPodSandbox ({h})"),
                cri.try_run_pod_with_handler(&config, h),
            );
            tr.track("k8s.io", &id);
            Pod { id, config }
        })
        .collect()
}

/// Pod cgroup parents (`/<ns>/<pod>`), which nobody removes (see the
/// module's notes), are no leftover.
fn without_pod_cgroups(cri: &CriContainerd, pods: &[Pod], left: Vec<String>) -> Vec<String> {
    let parents: Vec<String> = pods.iter().map(|p| format!("/{}", cri.pod_cgroup(p))).collect();
    left.into_iter()
        .filter(|l| !(l.starts_with("cgroup ") && parents.iter().any(|p| l.ends_with(p.as_str()))))
        .collect()
}

/// Leftovers of `pod`: naming its id (its shim, its sandbox), its cgroup
/// parent, or one of its containers `ids`.
fn of_pod(cri: &CriContainerd, left: &[String], pod: &Pod, ids: &Mutex<Vec<String>>) -> Vec<String> {
    let cgroup = format!("/{}/", cri.pod_cgroup(pod));
    let ids = ids.lock().unwrap_or_else(|e| e.into_inner());
    left.iter()
        .filter(|l| {
            l.contains(&pod.id) || l.contains(&cgroup) || ids.iter().any(|id| l.contains(id.as_str()))
        })
        .cloned()
        .collect()
}

fn cri_teardown(cri: &CriContainerd, pods: &[Pod], containers: &[String]) {
    for c in containers {
        let _ = cri.try_stop_container(c, 0);
        let _ = cri.try_remove_container(c);
    }
    for p in pods {
        let _ = cri.try_stop_pod(&p.id);
        let _ = cri.try_remove_pod(&p.id);
    }
}

/// `RSV2_SOAK_CRI_EXECS` ExecSync calls per handler into one container,
/// interleaved, checked byte for byte; the pod's shim comes back, and
/// ours keeps its RSS within 5%.
#[test]
fn load_cri_exec_sync() {
    let cri = CriContainerd::start();
    let tr = Tracker::new(cri.ctd());
    let empty = tr.snapshot();
    let phase = "CRI ExecSync";
    let pods = cri_pods(&cri, &tr, "execsync");
    let containers: Vec<String> = pods
        .iter()
        .map(|p| {
            let c = cri.run_container(p, &cri.container_config("sleeper", &["sleep", "1000000"]));
            tr.track("k8s.io", &c);
            c
        })
        .collect();
    let ids: Vec<Mutex<Vec<String>>> = containers.iter().map(|c| Mutex::new(vec![c.clone()])).collect();
    for (h, c) in containers.iter().enumerate() {
        for w in 0..10 {
            let n = 1_000_000 + w * 2 + h;
            let argv = workload_argv(n);
            let r = cri.exec_sync(c, &strs(&argv));
            assert_eq!(
                judge(n, Some(r.exit_code), &r.stdout, &r.stderr),
                Outcome::Ok,
                "warm-up ExecSync ({})\n{}",
                HANDLERS[h],
                cri.log_tail(30)
            );
        }
    }
    idle();
    let base = tr.snapshot();
    let pids: Vec<Option<u32>> = HANDLERS
        .iter()
        .zip(&pods)
        .map(|(h, p)| base.shims.iter().find(|s| s.runtime == *h && s.id == p.id).map(|s| s.pid))
        .collect();
    let sampler = Sampler::start(cri.ctd(), Duration::from_millis(250));
    let tallies = interleaved(phase, 2, cri_execs(), parallel(), |h, k| {
        let argv = workload_argv(k);
        let started = Instant::now();
        let outcome = match cri.try_exec_sync(&containers[h], &strs(&argv), 30) {
            Ok(r) => judge(k, Some(r.exit_code), &r.stdout, &r.stderr),
            Err(s) => Outcome::Failed(format!("ExecSync: {:?}: {}", s.code(), s.message())),
        };
        (outcome, started.elapsed(), format!("ExecSync {k}"))
    });
    let peaks = sampler.stop();
    print_problems(phase, &tallies);
    idle();
    let (after, left) = tr.settle_by(&base, SETTLE, |l| of_pod(&cri, l, &pods[0], &ids[0]).is_empty());
    let mut rows = Vec::new();
    for (h, handler) in HANDLERS.iter().enumerate() {
        let mut row = Row::from_tally(phase, handler, &tallies[h]);
        if let Some(pid) = pids[h] {
            row.rss = rss_cell(&base, &after, pid);
            row.fds = pair_cell(&base, &after, pid, |s| s.fds);
            row.threads = pair_cell(&base, &after, pid, |s| s.threads);
        }
        row = row.with_peak(&peaks);
        row.leftovers = summarize(&of_pod(&cri, &left, &pods[h], &ids[h]));
        rows.push(row);
    }
    cri_teardown(&cri, &pods, &containers);
    let (_, end_left) = tr.settle(&empty, SETTLE);
    let end_left = without_pod_cgroups(&cri, &pods, end_left);
    if !end_left.is_empty() {
        rows[0].note = format!("after teardown: {}", summarize(&end_left));
    }
    const KEY: &str = "20-cri-exec-sync";
    report(KEY, &rows);
    let saved = soak::save_log(cri.ctd(), KEY);

    assert_no_more_lost(phase, &tallies[0], &tallies[1], &format!("containerd's log: {}\n{}", saved.display(), cri.log_tail(30)));
    assert_none_lost(phase, &tallies[0], &format!("containerd's log: {}\n{}", saved.display(), cri.log_tail(30)));
    let ours = of_pod(&cri, &left, &pods[0], &ids[0]);
    assert!(
        ours.is_empty(),
        "{phase}: our pod's shim did not come back to where it was:\n  {}\n{}",
        ours.join("\n  "),
        cri.log_tail(30)
    );
    let pid = pids[0].expect("our pod's shim was measured");
    let g = rss_growth(&base, &after, pid).expect("our pod's shim is still there");
    assert!(
        g <= RSS_FLAT,
        "{phase}: our shim's RSS grew by {:.1}% over {} ExecSync calls ({})",
        g * 100.0,
        tallies[0].ops,
        rows[0].rss
    );
    assert!(end_left.is_empty(), "{phase}: left after teardown:\n  {}", end_left.join("\n  "));
}

/// The stdout and stderr a CRI log file holds (`<time> <stream> <F|P>
/// <message>` lines; F ends a line, P is part of one).
fn cri_log_streams(log: &str) -> (String, String) {
    let (mut out, mut err) = (String::new(), String::new());
    for line in log.lines() {
        let parts: Vec<&str> = line.splitn(4, ' ').collect();
        if parts.len() < 3 {
            continue;
        }
        let msg = parts.get(3).copied().unwrap_or("");
        let target = match parts[1] {
            "stdout" => &mut out,
            "stderr" => &mut err,
            _ => continue,
        };
        target.push_str(msg);
        if parts[2] == "F" {
            target.push('\n');
        }
    }
    (out, err)
}

/// One short-lived CRI container running the workload: created, started,
/// waited for, its exit code and its log file checked byte for byte, then
/// removed with its log.
fn cri_log_op(cri: &CriContainerd, tr: &Tracker, pod: &Pod, ids: &Mutex<Vec<String>>, k: usize) -> Outcome {
    let name = format!("log-{k}");
    let argv = workload_argv(k);
    let config = cri.container_config(&name, &strs(&argv));
    let id = match cri.try_create_container(pod, &config) {
        Ok(id) => id,
        Err(s) => return Outcome::Failed(format!("CreateContainer: {:?}: {}", s.code(), s.message())),
    };
    tr.track("k8s.io", &id);
    ids.lock().unwrap_or_else(|e| e.into_inner()).push(id.clone());
    let path = cri.log_path(pod, &config);
    let outcome = (|| {
        if let Err(s) = cri.try_start_container(&id) {
            return Outcome::Failed(format!("StartContainer: {:?}: {}", s.code(), s.message()));
        }
        let mut exit = None;
        let mut last_err = String::new();
        wait_until(Duration::from_secs(30), || match cri.container_status_verbose(&id) {
            Ok((st, _)) if st.state == cri::ContainerState::ContainerExited as i32 => {
                exit = Some(st.exit_code);
                true
            }
            Ok(_) => false,
            Err(s) => {
                last_err = s.message().to_string();
                false
            }
        });
        let Some(code) = exit else {
            return Outcome::Failed(format!("not exited within 30 s {last_err}"));
        };
        let (want_out, want_err, _) = soak::expected(k);
        let mut streams = (String::new(), String::new());
        wait_until(Duration::from_secs(5), || {
            streams = cri_log_streams(&cri::read_file(&path));
            streams.0 == want_out && streams.1 == want_err
        });
        judge(k, Some(code), streams.0.as_bytes(), streams.1.as_bytes())
    })();
    let removed = cri.try_remove_container(&id);
    let _ = fs::remove_file(&path);
    match (outcome, removed) {
        (Outcome::Ok, Err(s)) => Outcome::Failed(format!("RemoveContainer: {:?}: {}", s.code(), s.message())),
        (o, _) => o,
    }
}

/// `RSV2_SOAK_CRI_LOGS` short-lived containers per handler, interleaved,
/// each printing its own lines, read back from the CRI log files.
#[test]
fn load_cri_container_logs() {
    let cri = CriContainerd::start();
    let tr = Tracker::new(cri.ctd());
    let empty = tr.snapshot();
    let phase = "CRI container logs";
    let pods = cri_pods(&cri, &tr, "logs");
    let ids: Vec<Mutex<Vec<String>>> = pods.iter().map(|_| Mutex::new(Vec::new())).collect();
    // Warm-up, then the base: the pods' shims, idle.
    for (h, pod) in pods.iter().enumerate() {
        let k = 1_000_000 + h;
        assert_eq!(cri_log_op(&cri, &tr, pod, &ids[h], k), Outcome::Ok, "warm-up ({})\n{}", HANDLERS[h], cri.log_tail(30));
    }
    idle();
    let base = tr.snapshot();
    let pids: Vec<Option<u32>> = HANDLERS
        .iter()
        .zip(&pods)
        .map(|(h, p)| base.shims.iter().find(|s| s.runtime == *h && s.id == p.id).map(|s| s.pid))
        .collect();
    let sampler = Sampler::start(cri.ctd(), Duration::from_millis(250));
    let tallies = interleaved(phase, 2, cri_logs(), parallel(), |h, k| {
        let started = Instant::now();
        let outcome = cri_log_op(&cri, &tr, &pods[h], &ids[h], k);
        (outcome, started.elapsed(), format!("log-{k}"))
    });
    let peaks = sampler.stop();
    print_problems(phase, &tallies);
    idle();
    let (after, left) = tr.settle_by(&base, SETTLE, |l| of_pod(&cri, l, &pods[0], &ids[0]).is_empty());
    let left = without_pod_cgroups(&cri, &pods, left);
    let mut rows = Vec::new();
    for (h, handler) in HANDLERS.iter().enumerate() {
        let mut row = Row::from_tally(phase, handler, &tallies[h]);
        if let Some(pid) = pids[h] {
            row.rss = rss_cell(&base, &after, pid);
            row.fds = pair_cell(&base, &after, pid, |s| s.fds);
            row.threads = pair_cell(&base, &after, pid, |s| s.threads);
        }
        row = row.with_peak(&peaks);
        row.leftovers = summarize(&of_pod(&cri, &left, &pods[h], &ids[h]));
        rows.push(row);
    }
    cri_teardown(&cri, &pods, &[]);
    let (_, end_left) = tr.settle(&empty, SETTLE);
    let end_left = without_pod_cgroups(&cri, &pods, end_left);
    if !end_left.is_empty() {
        rows[0].note = format!("after teardown: {}", summarize(&end_left));
    }
    const KEY: &str = "21-cri-container-logs";
    report(KEY, &rows);
    let saved = soak::save_log(cri.ctd(), KEY);

    assert_no_more_lost(phase, &tallies[0], &tallies[1], &format!("containerd's log: {}\n{}", saved.display(), cri.log_tail(30)));
    assert_none_lost(phase, &tallies[0], &format!("containerd's log: {}\n{}", saved.display(), cri.log_tail(30)));
    let ours = of_pod(&cri, &left, &pods[0], &ids[0]);
    assert!(
        ours.is_empty(),
        "{phase}: our pod's shim or containers left behind:\n  {}\n{}",
        ours.join("\n  "),
        cri.log_tail(30)
    );
    if let Some(pid) = pids[0] {
        let g = rss_growth(&base, &after, pid).expect("our pod's shim is still there");
        assert!(
            g <= RSS_FLAT,
            "{phase}: our shim's RSS grew by {:.1}% over {} containers ({})",
            g * 100.0,
            tallies[0].ops,
            rows[0].rss
        );
    }
    assert!(end_left.is_empty(), "{phase}: left after teardown:\n  {}", end_left.join("\n  "));
}

// ---------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------

/// The shim is SIGKILLed while its container runs an exec: containerd's
/// `delete` cleans up, the container's processes are gone, and nothing is
/// left (runc's shim leaves its socket; ours removes it).
#[test]
fn fault_shim_sigkill() {
    let ctd = PrivateContainerd::start();
    let tr = Tracker::new(&ctd);
    let phase = "fault: shim SIGKILLed";
    let mut rows = Vec::new();
    let mut problems: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for runtime in RUNTIMES {
        let short = short_name(runtime);
        let before = tr.snapshot();
        let id = tr.id(&format!("shimkill-{short}"));
        let task = ctd.run(&id, &["/bin/sleep", "1000000"]).runtime(runtime).detach();
        ctd.exec(&id, "sleeper", &["/bin/sleep", "1000001"]).detach();
        let exec_pid = wait_for_proc(&ctd, &id, task.pid, "/bin/sleep 1000001")
            .unwrap_or_else(|| panic!("{short}: the exec did not start\n{}", ctd.log_tail(30)));
        let shim = shim_pid(&ctd, short, Some(&id))
            .unwrap_or_else(|| panic!("no {short} shim for {id}: {:?}", ctd.shims()));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(shim as i32), nix::sys::signal::Signal::SIGKILL)
            .expect("kill the shim");

        let mut p = Vec::new();
        let mut last = None;
        let noticed = wait_until(REACT, || {
            last = ctd.task(&id);
            last.as_ref().map_or(true, |t| t.status == STOPPED)
        });
        if !noticed {
            p.push(format!("containerd still lists {last:?} {REACT:?} after the shim died"));
        }
        let mut notes = Vec::new();
        if ctd.task(&id).is_some() {
            let out = run_bounded(ctd.ctr_command(&["task", "delete", "--force", &id]), OP_TIMEOUT);
            if out.code() != Some(0) {
                p.push(format!("ctr task delete --force: {:?} {}", out.code(), out.stderr()));
            }
        }
        let out = run_bounded(ctd.ctr_command(&["containers", "rm", &id]), OP_TIMEOUT);
        if out.code() != Some(0) {
            p.push(format!("ctr containers rm: {}", out.stderr()));
        }
        for (what, pid) in [("init", task.pid), ("exec", exec_pid)] {
            if !wait_until(REACT, || !host::is_alive(pid)) {
                p.push(format!("the container's {what} {pid} outlived its shim"));
            }
        }
        tr.remove_detached_fifos(&[id.clone(), "sleeper".into()]);
        let (_, left) = tr.settle(&before, if runtime == RUST_RUNTIME { SETTLE } else { RUNC_SETTLE });
        if left.iter().any(|l| l.starts_with("shim socket")) {
            notes.push("socket left");
        }
        rows.push(Row::fault(phase, short, 1, p.len(), &left, &notes.join(", ")));
        p.extend(left.iter().map(|l| format!("left: {l}")));
        problems.insert(short, p);
        tr.clean_up(&ctd);
    }
    const KEY: &str = "30-fault-shim-sigkill";
    report(KEY, &rows);
    let saved = soak::save_log(&ctd, KEY);
    let ours = &problems["rust"];
    assert!(
        ours.is_empty(),
        "{phase}: our shim:\n  {}\n(runc's shim: {:?})\ncontainerd's log: {}\n{}",
        ours.join("\n  "),
        problems["runc"],
        saved.display(),
        ctd.log_tail(40)
    );
    ctd.finish();
}

/// The container's init is SIGKILLed while an attached exec runs: the exec
/// ends, its ctr returns 137, and both exits are published (137 each).
#[test]
fn fault_init_sigkill_during_exec() {
    let ctd = PrivateContainerd::start();
    let tr = Tracker::new(&ctd);
    let phase = "fault: init SIGKILLed during an exec";
    let watcher = ctd.watch_events();
    let mut rows = Vec::new();
    let mut problems: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for runtime in RUNTIMES {
        let short = short_name(runtime);
        let before = tr.snapshot();
        let id = tr.id(&format!("initkill-{short}"));
        let task = ctd.run(&id, &["/bin/sleep", "1000000"]).runtime(runtime).detach();
        let args = ctd
            .exec(&id, "during", &["/bin/sh", "-c", "echo started; exec /bin/sleep 1000002"])
            .args(&[]);
        let mut exec = ctd.spawn_ctr_logged(&args, "initkill");
        let exec_pid = wait_for_proc(&ctd, &id, task.pid, "/bin/sleep 1000002")
            .unwrap_or_else(|| panic!("{short}: the exec did not start\n{}", exec.describe()));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(task.pid as i32), nix::sys::signal::Signal::SIGKILL)
            .expect("kill the init");

        let mut p = Vec::new();
        match exec.wait_within(REACT) {
            Some(st) if st.code() == Some(137) => {}
            Some(st) => p.push(format!("the exec's ctr exited with {st:?}, want 137: {}", exec.describe())),
            None => {
                p.push(format!("the exec's ctr still waits {REACT:?} after the init was killed"));
                exec.kill();
            }
        }
        if !exec.stdout().starts_with("started\n") {
            p.push(format!("the exec's output was lost: {:?}", exec.stdout()));
        }
        if !wait_until(REACT, || !host::exists(exec_pid)) {
            p.push(format!("the exec {exec_pid} survives its init"));
        }
        let mut exits = Vec::new();
        for (proc_id, what) in [("during", "exec"), (id.as_str(), "init")] {
            let seen = watcher.wait_for(REACT, |e| {
                e.topic == "/tasks/exit" && e.container_id() == Some(id.as_str()) && e.payload["id"] == proc_id
            });
            let events = watcher.events();
            let exit = task_events(&events, &id)
                .into_iter()
                .find(|e| e.topic == "/tasks/exit" && e.payload["id"] == proc_id)
                .cloned();
            match exit {
                Some(e) if seen && e.number("exit_status") == 137 => exits.push(format!("{what} 137")),
                Some(e) => {
                    exits.push(format!("{what} {}", e.number("exit_status")));
                    p.push(format!("the {what}'s exit: {}", e.line));
                }
                None => {
                    exits.push(format!("{what} missing"));
                    p.push(format!("no /tasks/exit for the {what}"));
                }
            }
        }
        ctd.wait_for_status(&id, STOPPED, REACT);
        let out = run_bounded(ctd.ctr_command(&["task", "delete", &id]), OP_TIMEOUT);
        if out.code() != Some(0) {
            p.push(format!("ctr task delete: {}", out.stderr()));
        }
        ctd.ctr_ok(&["containers", "rm", &id]);
        tr.remove_detached_fifos(std::slice::from_ref(&id));
        let (_, left) = tr.settle(&before, if runtime == RUST_RUNTIME { SETTLE } else { RUNC_SETTLE });
        let note = format!("exec's ctr {:?}; exits: {}", exec.exited().and_then(|s| s.code()), exits.join(", "));
        rows.push(Row::fault(phase, short, 1, p.len(), &left, &note));
        p.extend(left.iter().map(|l| format!("left: {l}")));
        problems.insert(short, p);
        tr.clean_up(&ctd);
    }
    drop(watcher);
    const KEY: &str = "31-fault-init-sigkill";
    report(KEY, &rows);
    let saved = soak::save_log(&ctd, KEY);
    let ours = &problems["rust"];
    assert!(
        ours.is_empty(),
        "{phase}: our shim:\n  {}\n(runc's shim: {:?})\ncontainerd's log: {}\n{}",
        ours.join("\n  "),
        problems["runc"],
        saved.display(),
        ctd.log_tail(40)
    );
    ctd.finish();
}

/// Runs ctr in the background (output to files), not borrowing the
/// instance, so containerd can be killed or restarted meanwhile.
fn spawn_ctr(ctd: &PrivateContainerd, args: &[String], name: &str) -> Logged {
    ctd.spawn_ctr_logged(args, name)
}

/// Removes container `id` whatever state it is in; returns the steps that
/// failed.
fn remove_any(ctd: &PrivateContainerd, id: &str) -> Vec<String> {
    let mut failed = Vec::new();
    let tasks = ctd.tasks();
    if let Some(t) = tasks.iter().find(|t| t.id == id) {
        if t.status != STOPPED {
            let out = run_bounded(ctd.ctr_command(&["task", "kill", "--all", "--signal", "SIGKILL", id]), OP_TIMEOUT);
            if out.code() != Some(0) {
                failed.push(format!("{id}: ctr task kill: {}", out.stderr().trim()));
            }
            let mut last = None;
            if !wait_until(REACT, || {
                last = ctd.task(id);
                last.as_ref().map_or(true, |t| t.status == STOPPED)
            }) {
                failed.push(format!("{id}: not STOPPED {REACT:?} after SIGKILL: {last:?}"));
            }
        }
        let out = run_bounded(ctd.ctr_command(&["task", "delete", "--force", id]), OP_TIMEOUT);
        if out.code() != Some(0) {
            failed.push(format!("{id}: ctr task delete --force: {}", out.stderr().trim()));
        }
    }
    if ctd.containers().iter().any(|c| c == id) {
        let out = run_bounded(ctd.ctr_command(&["containers", "rm", id]), OP_TIMEOUT);
        if out.code() != Some(0) {
            failed.push(format!("{id}: ctr containers rm: {}", out.stderr().trim()));
        }
    }
    failed
}

/// containerd is SIGKILLed while `ctr run -d` creates are in flight, for
/// both runtimes at once; after it is started again everything can be
/// removed, and nothing is left: no shim, cgroup, process, mount, bundle,
/// runtime state or socket. runc's shim leaks here (recorded in the table
/// and cleaned up by the test); ours must not.
#[test]
fn fault_containerd_sigkill_during_creates() {
    let mut ctd = PrivateContainerd::start();
    let tr = Tracker::new(&ctd);
    let phase = "fault: containerd SIGKILLed during creates";
    let per_runtime = parallel();
    // The early kills are the telling ones: containerd dies after a shim
    // started and before its Create arrived; later ones catch creates and
    // starts in flight.
    let delays = [60u64, 150, 250, 100, 200, 400, 800, 1500, 300, 50];
    let mut totals: BTreeMap<&str, (usize, usize, Vec<String>)> = BTreeMap::new();
    let mut ctr_failed_total = 0;
    let mut ids_of: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for round in 0..kills() {
        let before = tr.snapshot();
        let delay = delays[round % delays.len()];
        let mut inflight = Vec::new();
        let mut ids: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for k in 0..2 * per_runtime {
            let runtime = RUNTIMES[k % 2];
            let short = short_name(runtime);
            let id = tr.id(&format!("ckill-{short}"));
            let args = ctd.run(&id, &["/bin/sleep", "1000000"]).runtime(runtime).args_with(&["-d"]);
            inflight.push(spawn_ctr(&ctd, &args, "ckill"));
            ids.entry(short).or_default().push(id);
        }
        std::thread::sleep(Duration::from_millis(delay));
        ctd.kill_hard();
        let mut ctr_failed = 0;
        for mut c in inflight {
            match c.wait_within(OP_TIMEOUT) {
                Some(st) if st.success() => {}
                _ => ctr_failed += 1,
            }
        }
        eprintln!("[soak] {phase}: round {round}: killed after {delay} ms; {ctr_failed} of {} ctr run -d failed", 2 * per_runtime);
        ctr_failed_total += ctr_failed;
        for (short, list) in &ids {
            let mut failed = Vec::new();
            for id in list {
                failed.extend(remove_any(&ctd, id));
            }
            tr.remove_detached_fifos(list);
            let entry = totals.entry(short).or_default();
            entry.0 += list.len();
            entry.1 += failed.len();
            entry.2.extend(failed);
            ids_of.entry(short).or_default().extend(list.iter().cloned());
        }
        let (_, left) = tr.settle_by(&before, SETTLE, |l| !l.iter().any(|l| is_ours(l)));
        for short in ["rust", "runc"] {
            totals.entry(short).or_default().2.extend(attributed(&left, short).into_iter().map(|l| format!("round {round}: left: {l}")));
        }
        let other = unattributed(&left);
        if !other.is_empty() {
            eprintln!("[soak] {phase}: round {round}: unattributed leftovers:\n  {}", other.join("\n  "));
        }
        // What runc's shim leaked goes now, so the next round starts clean.
        tr.clean_up(&ctd);
        let snap = tr.snapshot();
        let still = snap.leftovers_since(&before);
        if !still.is_empty() {
            eprintln!("[soak] {phase}: round {round}: after clean-up still:\n  {}", still.join("\n  "));
        }
    }
    let mut rows = Vec::new();
    for short in ["rust", "runc"] {
        let (ops, failed, problems) = &totals[short];
        let left: Vec<String> = problems.iter().filter_map(|p| p.split_once("left: ").map(|(_, l)| l.to_string())).collect();
        rows.push(Row::fault(
            phase,
            short,
            *ops,
            *failed,
            &left,
            &format!(
                "{} rounds of {} creates (both runtimes), killed 50-1500 ms in; {ctr_failed_total} ctr run -d failed in all",
                kills(),
                2 * per_runtime
            ),
        ));
    }
    const KEY: &str = "32-fault-containerd-sigkill";
    report(KEY, &rows);
    let saved = soak::save_log(&ctd, KEY);
    for (short, (_, _, p)) in &totals {
        if !p.is_empty() {
            eprintln!("[soak] {phase}: {short}:\n  {}", p.join("\n  "));
        }
    }
    let ours = &totals["rust"].2;
    assert!(
        ours.is_empty(),
        "{phase}: with our shim, after the restart:\n  {}\ncontainerd's log: {}\n{}",
        ours.join("\n  "),
        saved.display(),
        ctd.log_tail(60)
    );
    ctd.finish();
}

/// containerd is restarted `RSV2_SOAK_RESTARTS` times while waves of
/// containers (`ctr run -d` with a `file://` log) and detached execs run
/// and exit, some while containerd is down. No exit is lost: every task
/// ends STOPPED with its exit code, every exec's delete returns its code,
/// and every container's log holds its output.
#[test]
fn fault_containerd_restarts_during_load() {
    let mut ctd = PrivateContainerd::start();
    let tr = Tracker::new(&ctd);
    let empty = tr.snapshot();
    let phase = "fault: containerd restarted during a load";
    let logs = ctd.dir().join("logs");
    fs::create_dir_all(&logs).expect("mkdir logs");
    let targets: Vec<String> = RUNTIMES
        .iter()
        .map(|rt| {
            let id = tr.id(&format!("rtarget-{}", short_name(rt)));
            ctd.run(&id, &["/bin/sleep", "1000000"]).runtime(rt).detach();
            id
        })
        .collect();
    let script = format!(r#"sleep "$2"; {}"#, soak::WORKLOAD);
    let sleeps = ["0", "0.2", "0.5", "0.9", "1.4", "2.5"];
    let wave = parallel();
    // (runtime index, n, container id or (target, exec id)).
    let mut containers: Vec<(usize, usize, String)> = Vec::new();
    let mut execs: Vec<(usize, usize, String)> = Vec::new();
    let mut start_failed: Vec<Tally> = vec![Tally::default(), Tally::default()];
    let mut k = 0;
    let started = Instant::now();
    for r in 0..restarts() {
        let mut inflight = Vec::new();
        for j in 0..2 * wave {
            let rt = j % 2;
            let runtime = RUNTIMES[rt];
            let s = sleeps[k % sleeps.len()];
            if j < wave {
                let id = tr.id(&format!("rst-{}", short_name(runtime)));
                let uri = format!("file://{}", logs.join(format!("{id}.log")).display());
                let args = ctd
                    .run(&id, &["/bin/sh", "-c", &script, "sh", &k.to_string(), s])
                    .runtime(runtime)
                    .flags(&["--log-uri", &uri])
                    .args_with(&["-d"]);
                inflight.push((rt, k, id.clone(), true, spawn_ctr(&ctd, &args, "rst")));
                containers.push((rt, k, id));
            } else {
                let exec_id = format!("rx{k}");
                let args = ctd
                    .exec(&targets[rt], &exec_id, &["/bin/sh", "-c", &script, "sh", &k.to_string(), s])
                    .args(&["-d"]);
                inflight.push((rt, k, exec_id.clone(), false, spawn_ctr(&ctd, &args, "rst")));
                execs.push((rt, k, exec_id));
            }
            k += 1;
        }
        for (rt, n, name, is_container, mut c) in inflight {
            let st = c.wait_within(OP_TIMEOUT);
            if st.map_or(true, |s| !s.success()) {
                start_failed[rt].add(&name, Outcome::Failed(format!("start: {}", c.describe())), Duration::ZERO);
                if is_container {
                    containers.retain(|(_, m, _)| *m != n);
                } else {
                    execs.retain(|(_, m, _)| *m != n);
                }
                c.kill();
            }
        }
        // Let some exit before, some while containerd is down (0.7 s),
        // some after it is back.
        std::thread::sleep(Duration::from_millis(300));
        ctd.stop();
        std::thread::sleep(Duration::from_millis(700));
        ctd.restart();
        eprintln!("[soak] {phase}: restart {}/{} done at {:.1} s", r + 1, restarts(), started.elapsed().as_secs_f64());
    }
    // Every process has exited by now or soon; check what containerd says.
    let mut tallies = start_failed;
    for (rt, n, id) in &containers {
        let t0 = Instant::now();
        let (want_out, want_err, code) = soak::expected(*n);
        let mut last = None;
        let stopped = wait_until(REACT, || {
            last = ctd.task(id);
            last.as_ref().is_some_and(|t| t.status == STOPPED)
        });
        let outcome = if !stopped {
            Outcome::WrongExit(format!("{id}: not STOPPED {REACT:?} after it exited: {last:?}"))
        } else {
            let out = run_bounded(ctd.ctr_command(&["task", "delete", id]), OP_TIMEOUT);
            let err = out.stderr();
            let reported = if err.contains("non-zero exit code") {
                err.rsplit("exit code ").next().and_then(|s| s.trim().trim_end_matches('"').trim().parse::<i32>().ok())
            } else if out.code() == Some(0) {
                Some(0)
            } else {
                None
            };
            let log = fs::read_to_string(logs.join(format!("{id}.log"))).unwrap_or_default();
            let mut lines: Vec<&str> = log.lines().collect();
            lines.sort();
            let log_ok = lines == [want_err.trim_end(), want_out.trim_end()];
            match reported {
                None => Outcome::Failed(format!("{id}: ctr task delete: {:?} {err}", out.code())),
                Some(c) if c != code => Outcome::WrongExit(format!("{id}: exit code {c}, want {code}")),
                Some(_) if !log_ok => Outcome::LostOutput(format!("{id}: log {log:?}")),
                Some(_) => Outcome::Ok,
            }
        };
        run_bounded(ctd.ctr_command(&["containers", "rm", id]), OP_TIMEOUT);
        tallies[*rt].add(id, outcome, t0.elapsed());
    }
    for (rt, n, exec_id) in &execs {
        let t0 = Instant::now();
        let code = (*n % 7) as i32;
        let out = run_bounded(
            ctd.ctr_command(&["task", "delete", "--exec-id", exec_id, &targets[*rt]]),
            OP_TIMEOUT,
        );
        // The exec may still run (its sleep), then delete fails: wait once.
        let out = if out.code() != Some(code) && out.stderr().contains("running") {
            std::thread::sleep(Duration::from_secs(3));
            run_bounded(ctd.ctr_command(&["task", "delete", "--exec-id", exec_id, &targets[*rt]]), OP_TIMEOUT)
        } else {
            out
        };
        let outcome = if out.code() == Some(code) {
            Outcome::Ok
        } else {
            Outcome::WrongExit(format!("exec {exec_id}: ctr task delete --exec-id: {:?}, want {code}: {}", out.code(), out.stderr().trim()))
        };
        tallies[*rt].add(exec_id, outcome, t0.elapsed());
    }
    print_problems(phase, &tallies);
    for id in &targets {
        ctd.remove(id);
    }
    let names: Vec<String> = containers
        .iter()
        .map(|c| c.2.clone())
        .chain(execs.iter().map(|e| e.2.clone()))
        .chain(targets.iter().cloned())
        .collect();
    tr.remove_detached_fifos(&names);
    let (_, left) = tr.settle_by(&empty, SETTLE, |l| !l.iter().any(|l| is_ours(l)));
    let rows: Vec<Row> = RUNTIMES
        .iter()
        .zip(&tallies)
        .map(|(rt, t)| {
            let short = short_name(rt);
            let mut row = Row::from_tally(phase, short, t);
            // Latencies here would be of the checks, not of the load.
            (row.p50_ms, row.p99_ms) = (None, None);
            row.leftovers = summarize(&attributed(&left, short));
            row.note = format!("{} restarts; containers with a file:// log and detached execs", restarts());
            row
        })
        .collect();
    const KEY: &str = "33-fault-containerd-restarts";
    report(KEY, &rows);
    let saved = soak::save_log(&ctd, KEY);
    tr.clean_up(&ctd);

    let ours = &tallies[0];
    assert!(
        ours.failed + ours.wrong_exit == 0,
        "{phase}: our shim lost exits ({} of {}):\n{}(runc's shim:\n{})\ncontainerd's log: {}\n{}",
        ours.failed + ours.wrong_exit,
        ours.ops,
        ours.describe(),
        tallies[1].describe(),
        saved.display(),
        ctd.log_tail(40)
    );
    assert!(
        ours.lost_output == 0 || ours.lost_output <= tallies[1].lost_output,
        "{phase}: our shim lost output of {} containers (runc's: {}):\n{}",
        ours.lost_output,
        tallies[1].lost_output,
        ours.describe()
    );
    let mine = attributed(&left, "rust");
    assert!(mine.is_empty(), "{phase}: left behind:\n  {}", mine.join("\n  "));
    ctd.finish();
}

/// A container floods stdout (and an exec stderr) that nobody reads
/// (`ctr run -d` and `ctr task exec -d` exit; their FIFOs stay unread): the
/// shim's memory stays bounded, and it still serves an exec meanwhile.
#[test]
fn fault_output_flood_unread() {
    let ctd = PrivateContainerd::start();
    let tr = Tracker::new(&ctd);
    let phase = "fault: unread output flood";
    let mut rows = Vec::new();
    let mut problems: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    const BOUND_KIB: u64 = 16 * 1024;
    for (rt, runtime) in RUNTIMES.iter().enumerate() {
        let short = short_name(runtime);
        let before = tr.snapshot();
        let id = tr.id(&format!("flood-{short}"));
        let go = ctd.rootfs().join("tmp").join(format!("{id}.go"));
        let script = format!(
            "until [ -e /tmp/{id}.go ]; do sleep 0.05; done; exec yes 0123456789abcdefghijklmnopqrstuvwxyz"
        );
        let task = ctd.run(&id, &["/bin/sh", "-c", &script]).runtime(runtime).detach();
        let shim = shim_pid(&ctd, short, Some(&id)).unwrap_or_else(|| panic!("no {short} shim for {id}"));
        ctd.exec(&id, "flood-err", &["/bin/sh", "-c", &format!("until [ -e /tmp/{id}.go ]; do sleep 0.05; done; exec yes e-0123456789 >&2")])
            .detach();
        std::thread::sleep(Duration::from_millis(500));
        let base = soak::rss_kib(shim).unwrap_or(0);
        let cpu0 = soak::cpu_ms(shim).unwrap_or(0.0);
        fs::write(&go, "").expect("create the go file");
        let mut samples = Vec::new();
        let t0 = Instant::now();
        let mut p = Vec::new();
        let mut live = None;
        for s in 0..flood_secs() {
            std::thread::sleep(Duration::from_secs(1));
            samples.push(soak::rss_kib(shim).unwrap_or(0));
            if s == flood_secs() / 2 {
                // The shim still serves while the flood is stuck.
                let n = 2_000_000 + rt;
                let argv = workload_argv(n);
                let args = ctd.exec(&id, "alive", &strs(&argv)).args(&[]);
                let b = run_bounded(ctd.ctr_command(&args), Duration::from_secs(30));
                let o = judge_bounded(n, &b);
                if o != Outcome::Ok {
                    p.push(format!("an exec during the flood: {o:?}"));
                }
                live = Some(o == Outcome::Ok);
            }
        }
        let cpu = soak::cpu_ms(shim).unwrap_or(0.0) - cpu0;
        // The flood really ran: the container's `yes` wrote more than the
        // pipe and the FIFO hold, and is now stuck.
        let cgroup = host::cgroup_path("pids", &ctd.cgroup_rel(&id));
        let procs: Vec<String> = host::cgroup_procs(&cgroup)
            .into_iter()
            .map(|pid| format!("{pid}: {:?} wchar {}", host::process(pid).map(|p| p.command()), io_wchar(pid)))
            .collect();
        let wrote_kib = io_wchar(task.pid) / 1024;
        if wrote_kib < 100 {
            p.push(format!("the container wrote only {wrote_kib} KiB: no flood to test; its processes: {procs:?}"));
        }
        let secs = t0.elapsed().as_secs_f64();
        let max = samples.iter().copied().max().unwrap_or(0);
        if max > base + BOUND_KIB {
            p.push(format!(
                "RSS grew from {base} KiB to {max} KiB in {secs:.0} s of unread output (samples {samples:?})"
            ));
        }
        if !host::is_alive(shim) {
            p.push("the shim died".into());
        }
        let _ = fs::remove_file(&go);
        ctd.ctr(&["task", "kill", "--all", "--signal", "SIGKILL", &id]);
        let stopped = wait_until(REACT, || ctd.task(&id).is_some_and(|t| t.status == STOPPED));
        if !stopped {
            p.push(format!("not STOPPED {REACT:?} after SIGKILL: {:?}", ctd.task(&id)));
        }
        let _ = task;
        p.extend(remove_any(&ctd, &id));
        tr.remove_detached_fifos(&[id.clone(), "flood-err".into()]);
        let (_, left) = tr.settle(&before, if rt == 0 { SETTLE } else { RUNC_SETTLE });
        let mut row = Row::fault(
            phase,
            short,
            1,
            p.len(),
            &left,
            &format!(
                "{secs:.0} s; container wrote {wrote_kib} KiB; shim CPU {:.0}%; exec meanwhile {}",
                cpu / secs / 10.0,
                match live {
                    Some(true) => "ok",
                    Some(false) => "FAILED",
                    None => "-",
                }
            ),
        );
        row.max_rss_kib = max;
        row.rss = format!("{base}→{}", samples.last().copied().unwrap_or(0));
        rows.push(row);
        p.extend(left.iter().map(|l| format!("left: {l}")));
        problems.insert(short, p);
        tr.clean_up(&ctd);
    }
    const KEY: &str = "34-fault-output-flood";
    report(KEY, &rows);
    let saved = soak::save_log(&ctd, KEY);
    let ours = &problems["rust"];
    assert!(
        ours.is_empty(),
        "{phase}: our shim:\n  {}\n(runc's shim: {:?})\ncontainerd's log: {}\n{}",
        ours.join("\n  "),
        problems["runc"],
        saved.display(),
        ctd.log_tail(40)
    );
    ctd.finish();
}

/// `wchar` of `/proc/PID/io`: bytes the process wrote.
fn io_wchar(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("wchar:")?.trim().parse().ok())
        .unwrap_or(0)
}

/// Free bytes of the filesystem at `path`.
fn free_bytes(path: &Path) -> u64 {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed statvfs to fill.
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    assert_eq!(r, 0, "statvfs {}", path.display());
    st.f_bavail as u64 * st.f_frsize as u64
}

/// Fills the filesystem of `filler` to the last byte, then frees `keep`
/// bytes of it again.
fn fill_leaving(filler: &Path, keep: u64) {
    use std::io::Write;
    let mut f = fs::OpenOptions::new().create(true).append(true).open(filler).expect("open the filler");
    let chunk = vec![0x5au8; 4096];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.flush();
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    f.set_len(len.saturating_sub(keep)).expect("shrink the filler");
}

/// The state directory's filesystem is full (a small tmpfs): Create fails
/// with an error saying so, and leaves nothing. Free space is tried from 0
/// up in small steps, so that each step of Create (containerd's bundle,
/// the shim's start, its own files) meets the full disk in turn.
#[test]
fn fault_state_dir_full() {
    let ctd = PrivateContainerd::start_with_state_tmpfs("4m");
    let tr = Tracker::new(&ctd);
    let phase = "fault: state dir full";
    let filler = ctd.state_dir().join("filler");
    let levels_kib: [u64; 13] = [0, 4, 8, 12, 16, 20, 24, 32, 40, 48, 64, 128, 512];
    let mut rows = Vec::new();
    let mut problems: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut failures: BTreeMap<&str, usize> = BTreeMap::new();
    for runtime in RUNTIMES {
        let short = short_name(runtime);
        let mut p = Vec::new();
        let mut outcomes = Vec::new();
        let mut all_left = Vec::new();
        for kib in levels_kib {
            let before = tr.snapshot();
            let id = tr.id(&format!("full-{short}"));
            fill_leaving(&filler, kib * 1024);
            let free = free_bytes(&ctd.state_dir());
            let args = ctd.run(&id, &["/bin/sleep", "1000000"]).runtime(runtime).args_with(&["-d"]);
            let b = run_bounded(ctd.ctr_command(&args), OP_TIMEOUT);
            // Room again for the clean-up.
            let _ = fs::remove_file(&filler);
            if b.timed_out {
                p.push(format!("{kib} KiB free: ctr run -d hung: {}", b.stderr()));
                outcomes.push(format!("{kib}K hang"));
            } else if b.code() == Some(0) {
                outcomes.push(format!("{kib}K ok"));
                p.extend(remove_any(&ctd, &id));
            } else {
                *failures.entry(short).or_default() += 1;
                let err = b.stderr();
                let lower = err.to_lowercase();
                if !lower.contains("no space left on device") && !err.contains("ENOSPC") {
                    p.push(format!("{kib} KiB free ({free} B): the error does not say the disk is full: {}", err.trim()));
                }
                outcomes.push(format!("{kib}K failed"));
                eprintln!("[soak] {phase}: {short}, {kib} KiB free ({free} B): {}", err.trim());
                p.extend(remove_any(&ctd, &id));
            }
            tr.remove_detached_fifos(std::slice::from_ref(&id));
            let (_, left) = tr.settle(&before, if runtime == RUST_RUNTIME { SETTLE } else { RUNC_SETTLE });
            p.extend(left.iter().map(|l| format!("{kib} KiB free: left: {l}")));
            all_left.extend(left);
            tr.clean_up(&ctd);
        }
        if failures.get(short).copied().unwrap_or(0) == 0 {
            p.push("Create never failed: the disk was never full enough".into());
        }
        rows.push(Row::fault(
            phase,
            short,
            levels_kib.len(),
            failures.get(short).copied().unwrap_or(0),
            &all_left,
            &outcomes.join(" "),
        ));
        problems.insert(short, p);
    }
    const KEY: &str = "35-fault-state-dir-full";
    report(KEY, &rows);
    let saved = soak::save_log(&ctd, KEY);
    let ours = &problems["rust"];
    assert!(
        ours.is_empty(),
        "{phase}: our shim:\n  {}\n(runc's shim: {:?})\ncontainerd's log: {}\n{}",
        ours.join("\n  "),
        problems["runc"],
        saved.display(),
        ctd.log_tail(60)
    );
    ctd.finish();
}

/// Soft and hard `Max open files` of `pid`.
fn nofile(pid: u32) -> (String, String) {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap_or_default();
    let f: Vec<&str> = line["Max open files".len().min(line.len())..].split_whitespace().collect();
    (f.first().unwrap_or(&"").to_string(), f.get(1).unwrap_or(&"").to_string())
}

fn prlimit(pid: u32, soft: &str, hard: &str) {
    let out = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={soft}:{hard}")])
        .output()
        .expect("run prlimit (util-linux)");
    assert!(out.status.success(), "prlimit --pid {pid} --nofile={soft}:{hard}: {out:?}");
}

/// The shim runs out of file descriptors (its soft RLIMIT_NOFILE lowered
/// with prlimit to what it has open, then to a few more): an exec and a
/// Create into its group fail with an error, promptly, and the shim lives
/// on; raised again, it serves both, and holds no more fds than before.
#[test]
fn fault_shim_out_of_fds() {
    let ctd = PrivateContainerd::start();
    let tr = Tracker::new(&ctd);
    let phase = "fault: shim out of fds";
    let mut rows = Vec::new();
    let mut problems: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (rt, runtime) in RUNTIMES.iter().enumerate() {
        let short = short_name(runtime);
        let before = tr.snapshot();
        let group = format!("fdgrp-{short}.{}", ctd.namespace());
        tr.track(ctd.namespace(), &group);
        let grouped = |id: &str| {
            let mut spec = ctd.default_spec(id, &["/bin/sleep", "1000000"]);
            spec["annotations"]["io.containerd.runc.v2.group"] = group.clone().into();
            ctd.write_spec(id, &spec)
        };
        let a = tr.id(&format!("fd-{short}"));
        ctd.run_config(&a, grouped(&a)).runtime(runtime).detach();
        let shim = shim_pid(&ctd, short, None).unwrap_or_else(|| panic!("no {short} shim"));
        let mut n = 3_000_000 + rt;
        let mut exec_once = |exec_id: &str, timeout: Duration| -> (ExecTry, Duration) {
            n += 2;
            let argv = workload_argv(n);
            let args = ctd.exec(&a, exec_id, &strs(&argv)).args(&[]);
            let b = run_bounded(ctd.ctr_command(&args), timeout);
            (ExecTry { outcome: judge_bounded(n, &b), timed_out: b.timed_out, stderr: b.stderr() }, b.elapsed)
        };
        for w in 0..3 {
            let (o, _) = exec_once(&format!("w{w}"), OP_TIMEOUT);
            assert_eq!(o.outcome, Outcome::Ok, "{short}: warm-up exec\n{}", ctd.log_tail(30));
        }
        idle();
        let base_fds = soak::fd_count(shim).expect("the shim's fds");
        let base_targets = soak::fd_targets(shim);
        let (soft, hard) = nofile(shim);
        let mut p = Vec::new();
        let mut notes = Vec::new();
        let mut attempts = 0;
        let mut failed = 0;
        let b = tr.id(&format!("fd-{short}"));
        for extra in [0usize, 1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32] {
            // The soft limit only: root here lacks CAP_SYS_RESOURCE, so a
            // lowered hard limit could not be raised again.
            let limit = (base_fds + extra).to_string();
            prlimit(shim, &limit, &hard);
            let (o, took) = exec_once(&format!("lim{extra}"), Duration::from_secs(30));
            attempts += 1;
            let what = match (&o.outcome, o.timed_out) {
                (_, true) => {
                    p.push(format!("exec with {extra} free fds hung ({took:?})"));
                    "hang"
                }
                (Outcome::Ok, _) => "ok",
                (Outcome::Failed(_), _) if !o.stderr.trim().is_empty() => {
                    failed += 1;
                    "error"
                }
                (other, _) => {
                    failed += 1;
                    p.push(format!("exec with {extra} free fds: {other:?}"));
                    "wrong"
                }
            };
            notes.push(format!("exec+{extra}: {what}"));
            if extra == 0 {
                if what == "ok" {
                    p.push("an exec succeeded with no fd free".into());
                }
                eprintln!("[soak] {phase}: {short}: exec with no fd free: {}", o.stderr.trim());
                // A Create served by the same shim (the group).
                let args = ctd.run_config(&b, grouped(&b)).runtime(runtime).args_with(&["-d"]);
                let r = run_bounded(ctd.ctr_command(&args), Duration::from_secs(30));
                attempts += 1;
                if r.timed_out {
                    p.push(format!("Create with no fd free hung: {}", r.stderr()));
                    notes.push("create+0: hang".into());
                } else if r.code() == Some(0) {
                    p.push("a Create succeeded with no fd free".into());
                    notes.push("create+0: ok".into());
                } else {
                    failed += 1;
                    eprintln!("[soak] {phase}: {short}: Create with no fd free: {}", r.stderr().trim());
                    notes.push("create+0: error".into());
                }
                p.extend(remove_any(&ctd, &b));
                let ps = run_bounded(ctd.ctr_command(&["task", "ps", &a]), Duration::from_secs(30));
                if ps.code() != Some(0) {
                    notes.push("ps+0: error".into());
                }
            }
            if shim_pid(&ctd, short, None) != Some(shim) {
                p.push(format!("the shim {shim} is gone with {extra} free fds"));
                break;
            }
        }
        prlimit(shim, &soft, &hard);
        let mut fds_now = 0;
        let back = wait_until(Duration::from_secs(15), || {
            fds_now = soak::fd_count(shim).unwrap_or(0);
            fds_now == base_fds
        });
        if !back {
            let now = soak::fd_targets(shim);
            let extra: Vec<&String> = now.iter().filter(|t| !base_targets.contains(t)).collect();
            p.push(format!("fds {base_fds} before, {fds_now} after the failures: new {extra:?}"));
        }
        let (o, _) = exec_once("after", OP_TIMEOUT);
        if o.outcome != Outcome::Ok {
            p.push(format!("exec after the limit was raised: {:?}", o.outcome));
        }
        let args = ctd.run_config(&b, grouped(&b)).runtime(runtime).args_with(&["-d"]);
        let r = run_bounded(ctd.ctr_command(&args), OP_TIMEOUT);
        if r.code() != Some(0) {
            p.push(format!("Create after the limit was raised: {}", r.stderr().trim()));
        }
        p.extend(remove_any(&ctd, &b));
        p.extend(remove_any(&ctd, &a));
        tr.remove_detached_fifos(&[a.clone(), b.clone()]);
        let (_, left) = tr.settle(&before, if rt == 0 { SETTLE } else { RUNC_SETTLE });
        let mut row = Row::fault(phase, short, attempts, failed, &left, &notes.join(" "));
        row.fds = format!("{base_fds}→{fds_now}");
        rows.push(row);
        p.extend(left.iter().map(|l| format!("left: {l}")));
        problems.insert(short, p);
        tr.clean_up(&ctd);
    }
    const KEY: &str = "36-fault-shim-out-of-fds";
    report(KEY, &rows);
    let saved = soak::save_log(&ctd, KEY);
    let ours = &problems["rust"];
    assert!(
        ours.is_empty(),
        "{phase}: our shim:\n  {}\n(runc's shim: {:?})\ncontainerd's log: {}\n{}",
        ours.join("\n  "),
        problems["runc"],
        saved.display(),
        ctd.log_tail(60)
    );
    ctd.finish();
}

struct ExecTry {
    outcome: Outcome,
    timed_out: bool,
    stderr: String,
}

// ---------------------------------------------------------------------------
// A terminal exec of a million lines (#13 case 5)
// ---------------------------------------------------------------------------

/// `ctr task exec -t ... seq 1 1000000` under a pty made by `script`,
/// `RSV2_SOAK_TTY` times: every line arrives, in order.
#[test]
fn tty_exec_million_lines() {
    assert!(Path::new(SCRIPT).exists(), "{SCRIPT} is missing: apt-get install bsdutils");
    let ctd = PrivateContainerd::start();
    let tr = Tracker::new(&ctd);
    let empty = tr.snapshot();
    let phase = "tty exec: seq 1 1000000";
    let id = tr.id("tty-rust");
    ctd.run(&id, &["/bin/sleep", "1000000"]).runtime(RUST_RUNTIME).detach();
    let shim = shim_pid(&ctd, "rust", Some(&id)).expect("our shim");
    const LINES: usize = 1_000_000;
    let mut tally = Tally::default();
    let mut first: Option<Snapshot> = None;
    for rep in 0..tty_reps() {
        let exec_id = format!("tty{rep}");
        let args = ctd.exec(&id, &exec_id, &["/bin/seq", "1", &LINES.to_string()]).args(&["-t"]);
        let line = ctd.ctr_shell_line(&args);
        let mut cmd = Command::new(SCRIPT);
        cmd.args(["-q", "-e", "-c", &line, "/dev/null"]);
        let t0 = Instant::now();
        let result = output_with_input(&mut cmd, b"", Duration::from_secs(300));
        let took = t0.elapsed();
        let outcome = match result {
            Err(partial) => Outcome::Failed(format!("timed out after {took:?} with {} bytes", partial.stdout.len())),
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stdout).replace(['\r', '\0'], "").replace("^@", "");
                let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
                let bad = lines
                    .iter()
                    .enumerate()
                    .find(|(i, l)| l.parse::<usize>().ok() != Some(i + 1));
                match (out.status.code(), bad) {
                    (Some(0), None) if lines.len() == LINES => Outcome::Ok,
                    (Some(0), None) => Outcome::LostOutput(format!(
                        "{} lines, last {:?}",
                        lines.len(),
                        lines.last()
                    )),
                    (Some(0), Some((i, l))) => Outcome::LostOutput(format!(
                        "line {} is {l:?} (of {} lines; around it: {:?})",
                        i + 1,
                        lines.len(),
                        &lines[i.saturating_sub(2)..(i + 3).min(lines.len())]
                    )),
                    (code, _) => Outcome::WrongExit(format!(
                        "script exited {code:?}; {} lines; stderr {}",
                        lines.len(),
                        String::from_utf8_lossy(&out.stderr)
                    )),
                }
            }
        };
        if outcome != Outcome::Ok {
            eprintln!("[soak] {phase}: rep {rep}: {outcome:?}");
        }
        tally.add(&exec_id, outcome, took);
        if rep == 0 {
            idle();
            first = Some(tr.snapshot());
        }
        if (rep + 1) % 50 == 0 {
            eprintln!("[soak] {phase}: {}/{} done, {} wrong", rep + 1, tty_reps(), tally.lost());
        }
    }
    idle();
    let last = tr.snapshot();
    let mut row = Row::from_tally(phase, "rust", &tally);
    if let Some(first) = &first {
        row.rss = rss_cell(first, &last, shim);
        row.fds = pair_cell(first, &last, shim, |s| s.fds);
        row.threads = pair_cell(first, &last, shim, |s| s.threads);
    }
    ctd.remove(&id);
    tr.remove_detached_fifos(std::slice::from_ref(&id));
    let (_, left) = tr.settle(&empty, SETTLE);
    row.leftovers = summarize(&left);
    const KEY: &str = "40-tty-million-lines";
    report(KEY, &[row]);
    let saved = soak::save_log(&ctd, KEY);
    assert_eq!(
        tally.lost(),
        0,
        "{phase}: {} of {} terminal execs lost lines:\n{}containerd's log: {}\n{}",
        tally.lost(),
        tally.ops,
        tally.describe(),
        saved.display(),
        ctd.log_tail(30)
    );
    if let Some(first) = &first {
        let left_shim = last.leftovers_since(first);
        assert!(
            !left_shim.iter().any(|l| l.contains(": fds") || l.contains(": threads")),
            "{phase}: our shim's fds or threads grew over the terminal execs: {left_shim:?}"
        );
    }
    assert!(left.is_empty(), "{phase}: left behind:\n  {}", left.join("\n  "));
    ctd.finish();
}
