//! The soak and fault suite's harness (issue #14, `tests/tests/soak.rs`):
//! bounded command runs that never panic, the workload every load phase
//! checks byte for byte, what a phase left behind on the host (the
//! accounting), per-shim resources, a sampler for peaks during a load, and
//! the results table (stderr, and markdown in `target/soak/results.md`).
//!
//! The accounting is scoped to one [`PrivateContainerd`], so tests and
//! builds running at the same time on the host cannot disturb it:
//! - shim servers started by this containerd (`-address <its socket>`), and
//!   per shim its RSS, open fds and threads;
//! - mounts below the instance's directory, and below `/run/containerd`
//!   naming one of its namespaces;
//! - cgroup directories below `/sys/fs/cgroup/*/<namespace>`;
//! - shim sockets `/run/containerd/s/<sha256(socket/ns/id)>` of every id the
//!   [`Tracker`] handed out or was told about;
//! - FIFOs (and their directories) below the instance's ctr FIFO dir;
//! - bundles in the state dir, runtime state `/run/containerd/*/<ns>/<id>`;
//! - zombies whose parent is one of the instance's shims. Zombies of PID 1
//!   and of any shim on the host are counted too, for information only:
//!   other runs on the host make them as well.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};

use crate::host::{self, Process};
use crate::{wait_until, PrivateContainerd, RUNC_RUNTIME, RUST_RUNTIME};

/// The two runtimes every load phase runs side by side, ours first.
pub const RUNTIMES: [&str; 2] = [RUST_RUNTIME, RUNC_RUNTIME];

/// `rust` or `runc` for a runtime type, for ids and tables.
pub fn short_name(runtime: &str) -> &'static str {
    if runtime == RUNC_RUNTIME {
        "runc"
    } else if runtime == RUST_RUNTIME {
        "rust"
    } else {
        "other"
    }
}

/// A count from the environment (`RSV2_SOAK_*`), else `default`. Panics on
/// a value that is not a number rather than silently using the default.
pub fn env_count(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a count")),
        Err(_) => default,
    }
}

// --- bounded commands ---

/// What a command run with [`run_bounded`] did.
#[derive(Debug)]
pub struct Bounded {
    /// Its output; for a command that timed out, what it printed until it
    /// was killed.
    pub output: Output,
    /// From spawn to exit (or to the kill).
    pub elapsed: Duration,
    pub timed_out: bool,
}

impl Bounded {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    pub fn code(&self) -> Option<i32> {
        if self.timed_out {
            None
        } else {
            self.output.status.code()
        }
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// Runs `cmd` (stdin from /dev/null) and collects its output, killing it
/// after `timeout`. Never panics: a spawn failure is an output with the
/// reason on stderr and no exit code, so a load counts it as a failure.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> Bounded {
    let started = Instant::now();
    let mut child = match cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return Bounded {
                output: Output {
                    status: ExitStatus::default(),
                    stdout: Vec::new(),
                    stderr: format!("cannot spawn {cmd:?}: {e}").into_bytes(),
                },
                elapsed: started.elapsed(),
                timed_out: true,
            }
        }
    };
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = drain(child.stderr.take().expect("piped stderr"));
    let pid = child.id();
    // A waiter thread, so the exit is seen at once (latencies) without
    // polling; on timeout the child, not yet reaped, is killed by pid.
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        let _ = tx.send(());
        status
    });
    let timed_out = rx.recv_timeout(timeout).is_err();
    if timed_out {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    let status = waiter
        .join()
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let elapsed = started.elapsed();
    Bounded {
        output: Output {
            status,
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        },
        elapsed,
        timed_out,
    }
}

// --- the workload ---

/// The script every load operation runs, with its number N as `$1`: N on
/// stdout and on stderr, each tagged, and exit code N mod 7.
pub const WORKLOAD: &str =
    r#"printf 'out-%s\n' "$1"; printf 'err-%s\n' "$1" >&2; exit $(($1 % 7))"#;

/// `/bin/sh -c WORKLOAD sh N`.
pub fn workload_argv(n: usize) -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        WORKLOAD.into(),
        "sh".into(),
        n.to_string(),
    ]
}

/// What operation N must print and exit with: stdout, stderr, exit code.
pub fn expected(n: usize) -> (String, String, i32) {
    (format!("out-{n}\n"), format!("err-{n}\n"), (n % 7) as i32)
}

/// How one operation of a load went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The client call failed or timed out: nothing to compare.
    Failed(String),
    /// The exit code was not the one the process exited with.
    WrongExit(String),
    /// The exit code was right, but stdout or stderr was not byte for byte
    /// what the process printed.
    LostOutput(String),
}

/// Judges operation `n` from its exit code (`None`: the call timed out or
/// failed before there was one), stdout and stderr. `client_error` tells a
/// failed client call from a wrong exit code when output and code are both
/// off (e.g. `ctr: ...` on stderr).
pub fn judge(n: usize, code: Option<i32>, stdout: &[u8], stderr: &[u8]) -> Outcome {
    let (out, err, want) = expected(n);
    let (got_out, got_err) = (
        String::from_utf8_lossy(stdout),
        String::from_utf8_lossy(stderr),
    );
    let streams_ok = got_out == out && got_err == err;
    let cut = |s: &str| -> String { s.chars().take(300).collect() };
    // ctr's own error (`ctr: ...` on its stderr) where the process's
    // stderr should be: the call failed, whatever its exit code.
    let client_error = !streams_ok && (got_err.starts_with("ctr: ") || got_err.contains("\nctr: "));
    match code {
        None => Outcome::Failed(format!(
            "no exit code; stdout {:?} stderr {:?}",
            cut(&got_out),
            cut(&got_err)
        )),
        Some(c) if c == want && streams_ok => Outcome::Ok,
        Some(c) if client_error => Outcome::Failed(format!(
            "exit {c} (want {want}); stdout {:?}; stderr {:?}",
            cut(&got_out),
            cut(&got_err)
        )),
        Some(c) if c == want => Outcome::LostOutput(format!(
            "exit {c} as expected, but stdout {:?} (want {out:?}), stderr {:?} (want {err:?})",
            cut(&got_out),
            cut(&got_err)
        )),
        Some(c) if streams_ok => Outcome::WrongExit(format!("exit {c}, want {want}; output right")),
        Some(c) if got_out.is_empty() && !got_err.contains(&err) => {
            Outcome::Failed(format!(
                "exit {c} (want {want}); stdout {:?}; stderr {:?}",
                cut(&got_out),
                cut(&got_err)
            ))
        }
        Some(c) => Outcome::WrongExit(format!(
            "exit {c}, want {want}; stdout {:?} stderr {:?}",
            cut(&got_out),
            cut(&got_err)
        )),
    }
}

/// [`judge`] for a [`Bounded`] command.
pub fn judge_bounded(n: usize, b: &Bounded) -> Outcome {
    if b.timed_out {
        return Outcome::Failed(format!(
            "timed out after {:?}; stdout {:?} stderr {:?}",
            b.elapsed,
            b.stdout(),
            b.stderr()
        ));
    }
    judge(n, b.code(), &b.output.stdout, &b.output.stderr)
}

/// The results of one runtime's operations in a load.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub ops: usize,
    pub failed: usize,
    pub wrong_exit: usize,
    pub lost_output: usize,
    pub latencies_ms: Vec<f64>,
    /// The first problems, described (at most 20 kept).
    pub samples: Vec<String>,
    /// Every problem's kind, by message, counted (ctr's own messages
    /// reduced to their first 120 characters), for telling races apart.
    pub kinds: BTreeMap<String, usize>,
}

impl Tally {
    pub fn add(&mut self, what: &str, outcome: Outcome, elapsed: Duration) {
        self.ops += 1;
        self.latencies_ms.push(elapsed.as_secs_f64() * 1e3);
        let (kind, text) = match outcome {
            Outcome::Ok => return,
            Outcome::Failed(t) => {
                self.failed += 1;
                ("failed", t)
            }
            Outcome::WrongExit(t) => {
                self.wrong_exit += 1;
                ("wrong exit", t)
            }
            Outcome::LostOutput(t) => {
                self.lost_output += 1;
                ("lost output", t)
            }
        };
        if self.samples.len() < 20 {
            self.samples.push(format!("{what}: {kind}: {text}"));
        }
        *self
            .kinds
            .entry(format!("{kind}: {}", message_kind(&text)))
            .or_default() += 1;
    }

    /// Operations that did not come back exactly right.
    pub fn lost(&self) -> usize {
        self.failed + self.wrong_exit + self.lost_output
    }

    /// The `p`th percentile (0-100) of the latencies, ms.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        percentile(&self.latencies_ms, p)
    }

    pub fn merge(&mut self, other: Tally) {
        self.ops += other.ops;
        self.failed += other.failed;
        self.wrong_exit += other.wrong_exit;
        self.lost_output += other.lost_output;
        self.latencies_ms.extend(other.latencies_ms);
        for s in other.samples {
            if self.samples.len() < 20 {
                self.samples.push(s);
            }
        }
        for (k, v) in other.kinds {
            *self.kinds.entry(k).or_default() += v;
        }
    }

    /// The problems for a message: counts by kind, then the first samples.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.kinds {
            s.push_str(&format!("  {v} x {k}\n"));
        }
        for sample in &self.samples {
            s.push_str(&format!("  e.g. {sample}\n"));
        }
        s
    }
}

/// A message without the parts that differ per operation (numbers, ids,
/// hashes), so that kinds of problems can be counted.
fn message_kind(text: &str) -> String {
    let text = text
        .find("stderr ")
        .map(|i| &text[i..])
        .unwrap_or(text);
    let mut out = String::new();
    let mut last_digit = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !last_digit {
                out.push('N');
            }
            last_digit = true;
        } else {
            out.push(c);
            last_digit = false;
        }
    }
    out.chars().take(160).collect()
}

/// The `p`th percentile (nearest rank) of `values`.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// Runs `per_runtime` operations for each of `runtimes`, interleaved (op k
/// is runtime k mod R, numbered k), `parallel` at a time on threads, and
/// tallies them per runtime. `op(runtime index, n)` returns the outcome,
/// its latency and a label for messages. Prints progress to stderr.
pub fn interleaved<F>(
    label: &str,
    runtimes: usize,
    per_runtime: usize,
    parallel: usize,
    op: F,
) -> Vec<Tally>
where
    F: Fn(usize, usize) -> (Outcome, Duration, String) + Sync,
{
    let total = runtimes * per_runtime;
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let tallies: Mutex<Vec<Tally>> = Mutex::new(vec![Tally::default(); runtimes]);
    let started = Instant::now();
    let step = (total / 10).max(1);
    std::thread::scope(|s| {
        for _ in 0..parallel.max(1).min(total.max(1)) {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                if k >= total {
                    break;
                }
                let rt = k % runtimes;
                let (outcome, elapsed, what) = op(rt, k);
                tallies.lock().unwrap_or_else(|e| e.into_inner())[rt].add(&what, outcome, elapsed);
                let d = done.fetch_add(1, Ordering::SeqCst) + 1;
                if d % step == 0 || d == total {
                    let t = tallies.lock().unwrap_or_else(|e| e.into_inner());
                    let lost: Vec<String> = t.iter().map(|t| t.lost().to_string()).collect();
                    eprintln!(
                        "[soak] {label}: {d}/{total} in {:.1} s, not right so far (per runtime): {}",
                        started.elapsed().as_secs_f64(),
                        lost.join("/")
                    );
                }
            });
        }
    });
    tallies.into_inner().unwrap_or_else(|e| e.into_inner())
}

// --- shims and their resources ---

/// One shim server and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimStat {
    pub pid: u32,
    /// `rust`, `runc` or the binary's name.
    pub runtime: String,
    pub namespace: String,
    pub id: String,
    pub rss_kib: u64,
    pub fds: usize,
    pub threads: usize,
}

impl ShimStat {
    fn label(&self) -> String {
        format!(
            "shim {} ({} {}/{})",
            self.pid, self.runtime, self.namespace, self.id
        )
    }
}

/// Long-running shim servers (not `start`/`delete` invocations) started by
/// the containerd listening on `socket`, any namespace.
pub fn shim_servers(socket: &str) -> Vec<Process> {
    host::processes()
        .into_iter()
        .filter(|p| {
            let exe = p.cmdline[0].rsplit('/').next().unwrap_or_default();
            exe.starts_with("containerd-shim")
                && p.flag("-address") == Some(socket)
                && !p.cmdline.iter().any(|a| a == "start" || a == "delete")
        })
        .collect()
}

/// `VmRSS` of `pid`, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS")
}

fn status_field(pid: u32, name: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(name)?
            .strip_prefix(':')?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// Open fds of `pid`.
pub fn fd_count(pid: u32) -> Option<usize> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Threads of `pid`.
pub fn thread_count(pid: u32) -> Option<usize> {
    Some(fs::read_dir(format!("/proc/{pid}/task")).ok()?.count())
}

/// The fds of `pid` with what they point to, for messages.
pub fn fd_targets(pid: u32) -> Vec<String> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut v: Vec<(u32, String)> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n: u32 = e.file_name().to_str()?.parse().ok()?;
            let t = fs::read_link(e.path()).ok()?;
            Some((n, t.display().to_string()))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(n, t)| format!("{n} -> {t}")).collect()
}

/// utime + stime of `pid` itself (not its children), ms.
pub fn cpu_ms(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)?
        .iter()
        .map(|f| f.parse::<u64>().ok())
        .sum::<Option<u64>>()?;
    // SAFETY: sysconf with a constant name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ticks as f64 * 1e3 / hz)
}

fn runtime_of(p: &Process) -> String {
    let exe = p.cmdline[0].rsplit('/').next().unwrap_or_default();
    if exe.contains("runc") {
        "runc".into()
    } else if exe.contains("rust") {
        "rust".into()
    } else {
        exe.to_string()
    }
}

/// [`ShimStat`] of a shim server; `None` once it is gone.
pub fn shim_stat(p: &Process) -> Option<ShimStat> {
    Some(ShimStat {
        pid: p.pid,
        runtime: runtime_of(p),
        namespace: p.flag("-namespace").unwrap_or_default().to_string(),
        id: p.flag("-id").unwrap_or_default().to_string(),
        rss_kib: rss_kib(p.pid)?,
        fds: fd_count(p.pid)?,
        threads: thread_count(p.pid)?,
    })
}

/// Fields of `/proc/PID/stat` after the command name: state, ppid.
fn state_and_ppid(pid: u32) -> Option<(char, u32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some((state, ppid))
}

fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// All zombies of the host: (pid, ppid).
fn zombies() -> Vec<(u32, u32)> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| match state_and_ppid(pid)? {
            ('Z', ppid) => Some((pid, ppid)),
            _ => None,
        })
        .collect()
}

// --- the accounting ---

/// What the host holds for one containerd instance at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub shims: Vec<ShimStat>,
    pub mounts: BTreeSet<String>,
    pub cgroups: BTreeSet<String>,
    /// Processes in the instance's cgroups (the `pids` hierarchy).
    pub procs: BTreeSet<String>,
    pub sockets: BTreeSet<String>,
    pub fifos: BTreeSet<String>,
    pub bundles: BTreeSet<String>,
    pub run_state: BTreeSet<String>,
    /// Zombies whose parent is one of the instance's shims.
    pub zombies: BTreeSet<String>,
    /// Zombies on the whole host whose parent is PID 1 or any shim
    /// (information only).
    pub host_zombies: usize,
}

impl Snapshot {
    /// The shim of `runtime` (`rust`/`runc`) serving `id`, if any.
    pub fn shim(&self, runtime: &str, id: &str) -> Option<&ShimStat> {
        self.shims
            .iter()
            .find(|s| s.runtime == runtime && s.id == id)
    }

    pub fn shims_of(&self, runtime: &str) -> Vec<&ShimStat> {
        self.shims.iter().filter(|s| s.runtime == runtime).collect()
    }

    /// Everything `self` (taken after a phase) holds that `before` did
    /// not, and every shim of `before` that died or changed its fds or
    /// threads. Empty when the host is back where it started (RSS is
    /// compared separately, with [`rss_growth`]).
    pub fn leftovers_since(&self, before: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        for s in &self.shims {
            match before.shims.iter().find(|b| b.pid == s.pid) {
                None => out.push(format!(
                    "{} still runs (rss {} KiB, {} fds, {} threads)",
                    s.label(),
                    s.rss_kib,
                    s.fds,
                    s.threads
                )),
                Some(b) => {
                    if s.fds != b.fds {
                        out.push(format!("{}: fds {} -> {}", s.label(), b.fds, s.fds));
                    }
                    if s.threads != b.threads {
                        out.push(format!(
                            "{}: threads {} -> {}",
                            s.label(),
                            b.threads,
                            s.threads
                        ));
                    }
                }
            }
        }
        for b in &before.shims {
            if !self.shims.iter().any(|s| s.pid == b.pid) {
                out.push(format!("{} is gone (it was serving before)", b.label()));
            }
        }
        let sets = [
            ("mount", &self.mounts, &before.mounts),
            ("cgroup", &self.cgroups, &before.cgroups),
            ("process", &self.procs, &before.procs),
            ("shim socket", &self.sockets, &before.sockets),
            ("fifo", &self.fifos, &before.fifos),
            ("bundle", &self.bundles, &before.bundles),
            ("runtime state", &self.run_state, &before.run_state),
            ("zombie", &self.zombies, &before.zombies),
        ];
        for (what, now, then) in sets {
            for item in now.difference(then) {
                out.push(format!("{what} {item}"));
            }
        }
        out
    }
}

/// RSS growth of the shim `pid` between two snapshots, as a fraction of
/// its RSS before (0.05 = 5%); `None` if it is missing from either.
pub fn rss_growth(before: &Snapshot, after: &Snapshot, pid: u32) -> Option<f64> {
    let b = before.shims.iter().find(|s| s.pid == pid)?.rss_kib as f64;
    let a = after.shims.iter().find(|s| s.pid == pid)?.rss_kib as f64;
    Some((a - b) / b.max(1.0))
}

/// Counts leftovers by kind (`3 cgroup, 1 shim socket`), or `none`.
pub fn summarize(leftovers: &[String]) -> String {
    if leftovers.is_empty() {
        return "none".into();
    }
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for l in leftovers {
        let kind = if l.starts_with("shim ") && l.contains(" still runs") {
            "shim".to_string()
        } else if l.starts_with("shim ") && l.contains(": fds") {
            "shim fds".to_string()
        } else if l.starts_with("shim ") && l.contains(": threads") {
            "shim threads".to_string()
        } else if l.starts_with("shim ") && l.contains(" is gone") {
            "shim died".to_string()
        } else {
            [
                "mount", "cgroup", "process", "shim socket", "fifo dir", "fifo", "bundle",
                "runtime state", "zombie", "container", "task",
            ]
            .iter()
            .find(|k| l.starts_with(&format!("{k} ")))
            .map(|k| k.to_string())
            .unwrap_or_else(|| l.split(' ').next().unwrap_or_default().to_string())
        };
        *kinds.entry(kind).or_default() += 1;
    }
    kinds
        .into_iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Hands out container ids and keeps the list of (namespace, id) whose
/// shim sockets and runtime state the accounting checks; takes snapshots
/// of one containerd instance. It holds no borrow of the instance, so a
/// test can still restart or kill containerd. Declared after the
/// instance, it is dropped first: it then kills shims still serving its
/// ids and removes their sockets; [`PrivateContainerd`]'s own cleanup
/// removes everything else (it only knows the sockets of ids it handed
/// out itself).
pub struct Tracker {
    socket: PathBuf,
    dir: PathBuf,
    namespace: String,
    state_dir: PathBuf,
    keys: Mutex<BTreeSet<(String, String)>>,
    next: AtomicUsize,
}

impl Tracker {
    pub fn new(ctd: &PrivateContainerd) -> Self {
        Self {
            socket: ctd.socket(),
            dir: ctd.dir().to_path_buf(),
            namespace: ctd.namespace().to_string(),
            state_dir: ctd.state_dir(),
            keys: Mutex::new(BTreeSet::new()),
            next: AtomicUsize::new(0),
        }
    }

    /// A new container id in the instance's namespace, `<prefix>.<n>`
    /// (never one `PrivateContainerd::unique_id` makes), tracked.
    pub fn id(&self, prefix: &str) -> String {
        let id = format!("{prefix}.{}", self.next.fetch_add(1, Ordering::SeqCst));
        self.track(&self.namespace.clone(), &id);
        id
    }

    /// Tracks the shim socket and runtime state of `id` (a container id,
    /// a shim group, a pod sandbox id) in containerd namespace `ns`.
    pub fn track(&self, ns: &str, id: &str) {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((ns.to_string(), id.to_string()));
    }

    fn keys(&self) -> Vec<(String, String)> {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The socket containerd 1.6 gives the shim of `id` in `ns`:
    /// `/run/containerd/s/<sha256("<containerd socket>/<ns>/<id>")>`.
    pub fn socket_path(&self, ns: &str, id: &str) -> PathBuf {
        let key = format!("{}/{ns}/{id}", self.socket.display());
        let hash = Sha256::digest(key.as_bytes());
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        Path::new("/run/containerd/s").join(hex)
    }

    /// The ctr FIFO dir of the instance.
    pub fn fifo_dir(&self) -> PathBuf {
        self.dir.join("fifo")
    }

    /// What the host holds for the instance now.
    pub fn snapshot(&self) -> Snapshot {
        let socket = self.socket.display().to_string();
        let shims: Vec<ShimStat> = shim_servers(&socket).iter().filter_map(shim_stat).collect();
        let shim_pids: BTreeSet<u32> = shims.iter().map(|s| s.pid).collect();
        let keys = self.keys();
        let mut namespaces: BTreeSet<String> = keys.iter().map(|(ns, _)| ns.clone()).collect();
        namespaces.insert(self.namespace.clone());

        let mut snap = Snapshot {
            shims,
            ..Default::default()
        };
        for m in host::mount_points() {
            let s = m.display().to_string();
            let under_run = m.starts_with("/run/containerd")
                && namespaces.iter().any(|ns| {
                    s.split('/').any(|c| c == ns) && (ns != "k8s.io" || keys.iter().any(|(_, id)| s.contains(id.as_str())))
                });
            if m.starts_with(&self.dir) || under_run {
                snap.mounts.insert(s);
            }
        }
        for root in host::cgroup_dirs(&self.namespace) {
            for d in host::dirs_deepest_first(&root) {
                if d != root {
                    let rel = d.strip_prefix(host::CGROUP_ROOT).unwrap_or(&d);
                    snap.cgroups.insert(rel.display().to_string());
                }
            }
        }
        let pids_root = host::cgroup_path("pids", &self.namespace);
        for d in host::dirs_deepest_first(&pids_root) {
            for pid in host::cgroup_procs(&d) {
                let rel = d.strip_prefix(&pids_root).unwrap_or(&d);
                snap.procs.insert(format!(
                    "{pid} ({}) in {}/{}",
                    comm(pid),
                    self.namespace,
                    rel.display()
                ));
            }
        }
        for (ns, id) in &keys {
            let sock = self.socket_path(ns, id);
            if sock.symlink_metadata().is_ok() {
                snap.sockets.insert(format!("{} ({ns}/{id})", sock.display()));
            }
            if let Ok(entries) = fs::read_dir("/run/containerd") {
                for e in entries.filter_map(|e| e.ok()) {
                    let state = e.path().join(ns).join(id);
                    if state.symlink_metadata().is_ok() {
                        snap.run_state.insert(state.display().to_string());
                    }
                }
            }
        }
        if let Ok(entries) = fs::read_dir("/run/containerd") {
            for e in entries.filter_map(|e| e.ok()) {
                let ours = e.path().join(&self.namespace);
                if let Ok(inner) = fs::read_dir(&ours) {
                    for i in inner.filter_map(|i| i.ok()) {
                        snap.run_state.insert(i.path().display().to_string());
                    }
                }
            }
        }
        collect_fifos(&self.fifo_dir(), &mut snap.fifos);
        let tasks = self.state_dir.join("io.containerd.runtime.v2.task");
        if let Ok(nss) = fs::read_dir(&tasks) {
            for ns in nss.filter_map(|e| e.ok()) {
                if let Ok(bundles) = fs::read_dir(ns.path()) {
                    for b in bundles.filter_map(|e| e.ok()) {
                        snap.bundles.insert(b.path().display().to_string());
                    }
                }
            }
        }
        let all_shims: BTreeSet<u32> = host::processes()
            .into_iter()
            .filter(|p| {
                p.cmdline[0]
                    .rsplit('/')
                    .next()
                    .is_some_and(|e| e.starts_with("containerd-shim"))
            })
            .map(|p| p.pid)
            .collect();
        for (pid, ppid) in zombies() {
            if shim_pids.contains(&ppid) {
                snap.zombies
                    .insert(format!("{pid} ({}) child of shim {ppid}", comm(pid)));
            }
            if ppid == 1 || all_shims.contains(&ppid) {
                snap.host_zombies += 1;
            }
        }
        snap
    }

    /// Waits up to `timeout` for the host to come back to `before`
    /// (asynchronous teardown: shims exit after Shutdown, idle workers end
    /// after 2 s); returns the last snapshot and what is still left.
    pub fn settle(&self, before: &Snapshot, timeout: Duration) -> (Snapshot, Vec<String>) {
        self.settle_by(before, timeout, |left| left.is_empty())
    }

    /// Like [`Self::settle`], waiting only until `done` accepts what is
    /// left (e.g. nothing of our shim's, whatever runc's shim left).
    pub fn settle_by(
        &self,
        before: &Snapshot,
        timeout: Duration,
        done: impl Fn(&[String]) -> bool,
    ) -> (Snapshot, Vec<String>) {
        let mut last = (Snapshot::default(), Vec::new());
        wait_until(timeout, || {
            let snap = self.snapshot();
            let left = snap.leftovers_since(before);
            let finished = done(&left);
            last = (snap, left);
            finished
        });
        last
    }

    /// Removes the FIFO directories ctr left for detached tasks and execs
    /// (`ctr run -d` and `ctr task exec -d` exit without removing theirs):
    /// every directory below the FIFO dir holding a FIFO named
    /// `<name>-stdout` etc. for one of `names`.
    pub fn remove_detached_fifos(&self, names: &[String]) {
        let Ok(dirs) = fs::read_dir(self.fifo_dir()) else {
            return;
        };
        for d in dirs.filter_map(|e| e.ok()) {
            let Ok(files) = fs::read_dir(d.path()) else {
                continue;
            };
            let ours = files.filter_map(|f| f.ok()).any(|f| {
                let n = f.file_name().to_string_lossy().into_owned();
                names.iter().any(|id| {
                    ["-stdin", "-stdout", "-stderr"]
                        .iter()
                        .any(|s| n == format!("{id}{s}"))
                })
            });
            if ours {
                let _ = fs::remove_dir_all(d.path());
            }
        }
    }

    /// Removes what a phase left so the next phase (and the host) starts
    /// clean, after it was recorded: tasks and containers of the
    /// namespace (through ctr), shims still serving a tracked id (killed),
    /// and dead sockets of tracked ids.
    pub fn clean_up(&self, ctd: &PrivateContainerd) {
        let timeout = Duration::from_secs(30);
        let list = |args: &[&str]| -> Vec<String> {
            let b = run_bounded(ctd.ctr_command(args), timeout);
            b.stdout().lines().map(str::to_string).collect()
        };
        for task in list(&["task", "ls", "-q"]) {
            run_bounded(
                ctd.ctr_command(&["task", "kill", "--all", "--signal", "SIGKILL", &task]),
                timeout,
            );
            run_bounded(ctd.ctr_command(&["task", "delete", "--force", &task]), timeout);
        }
        for c in list(&["containers", "ls", "-q"]) {
            run_bounded(ctd.ctr_command(&["containers", "rm", &c]), timeout);
        }
        self.kill_and_unlink();
    }

    fn kill_and_unlink(&self) {
        let keys = self.keys();
        let ids: BTreeSet<&str> = keys.iter().map(|(_, id)| id.as_str()).collect();
        let socket = self.socket.display().to_string();
        let strays: Vec<u32> = shim_servers(&socket)
            .into_iter()
            .filter(|p| p.flag("-id").is_some_and(|id| ids.contains(id)))
            .map(|p| p.pid)
            .collect();
        for pid in &strays {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
        wait_until(Duration::from_secs(10), || {
            strays.iter().all(|p| !host::is_alive(*p))
        });
        for (ns, id) in &keys {
            let sock = self.socket_path(ns, id);
            if sock.symlink_metadata().is_ok()
                && std::os::unix::net::UnixStream::connect(&sock).is_err()
            {
                let _ = fs::remove_file(&sock);
            }
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.kill_and_unlink();
    }
}

fn collect_fifos(dir: &Path, out: &mut BTreeSet<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            out.insert(format!("dir {}", e.path().display()));
            collect_fifos(&e.path(), out);
        } else if t.is_fifo() {
            out.insert(e.path().display().to_string());
        }
    }
}

// --- peaks during a load ---

/// The most seen at once during a load, per runtime.
#[derive(Debug, Clone, Default)]
pub struct Peak {
    pub shims: usize,
    pub rss_kib: u64,
    pub fds: usize,
    pub threads: usize,
}

/// Samples the shim servers of one containerd every `period` on a thread,
/// keeping the peaks per runtime (`rust`, `runc`).
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<BTreeMap<String, Peak>>>,
}

impl Sampler {
    pub fn start(ctd: &PrivateContainerd, period: Duration) -> Self {
        let socket = ctd.socket().display().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peaks: BTreeMap<String, Peak> = BTreeMap::new();
            loop {
                let stats: Vec<ShimStat> =
                    shim_servers(&socket).iter().filter_map(shim_stat).collect();
                let mut count: BTreeMap<String, usize> = BTreeMap::new();
                for s in &stats {
                    *count.entry(s.runtime.clone()).or_default() += 1;
                    let p = peaks.entry(s.runtime.clone()).or_default();
                    p.rss_kib = p.rss_kib.max(s.rss_kib);
                    p.fds = p.fds.max(s.fds);
                    p.threads = p.threads.max(s.threads);
                }
                for (rt, n) in count {
                    let p = peaks.entry(rt).or_default();
                    p.shims = p.shims.max(n);
                }
                if flag.load(Ordering::SeqCst) {
                    return peaks;
                }
                std::thread::sleep(period);
            }
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops sampling and returns the peaks by runtime.
    pub fn stop(mut self) -> BTreeMap<String, Peak> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// --- the results table ---

/// One line of the results table.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub phase: String,
    pub runtime: String,
    pub ops: usize,
    pub failed: usize,
    pub wrong_exit: usize,
    pub lost_output: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Most shim servers of the runtime at once.
    pub shims: usize,
    pub max_rss_kib: u64,
    /// RSS of the long-lived shim before → after, if the phase had one.
    pub rss: String,
    /// fds and threads: peak, or before → after of the long-lived shim.
    pub fds: String,
    pub threads: String,
    pub leftovers: String,
    pub note: String,
}

impl Row {
    /// A row from a load's tally; peaks and leftovers are filled in later.
    pub fn from_tally(phase: &str, runtime: &str, t: &Tally) -> Row {
        Row {
            phase: phase.to_string(),
            runtime: runtime.to_string(),
            ops: t.ops,
            failed: t.failed,
            wrong_exit: t.wrong_exit,
            lost_output: t.lost_output,
            p50_ms: t.percentile(50.0),
            p99_ms: t.percentile(99.0),
            ..Default::default()
        }
    }

    /// A row for a fault test: one scenario, its outcome in `note`.
    pub fn fault(phase: &str, runtime: &str, ops: usize, failed: usize, leftovers: &[String], note: &str) -> Row {
        Row {
            phase: phase.to_string(),
            runtime: runtime.to_string(),
            ops,
            failed,
            leftovers: summarize(leftovers),
            note: note.to_string(),
            ..Default::default()
        }
    }

    /// Fills the peak columns from a [`Sampler`]'s result.
    pub fn with_peak(mut self, peaks: &BTreeMap<String, Peak>) -> Row {
        if let Some(p) = peaks.get(&self.runtime) {
            self.shims = p.shims;
            self.max_rss_kib = p.rss_kib;
            if self.fds.is_empty() {
                self.fds = format!("max {}", p.fds);
            }
            if self.threads.is_empty() {
                self.threads = format!("max {}", p.threads);
            }
        }
        self
    }

    fn cells(&self) -> Vec<String> {
        let ms = |v: Option<f64>| v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into());
        let dash = |s: &str| if s.is_empty() { "-".to_string() } else { s.to_string() };
        vec![
            self.phase.clone(),
            self.runtime.clone(),
            self.ops.to_string(),
            self.failed.to_string(),
            self.wrong_exit.to_string(),
            self.lost_output.to_string(),
            ms(self.p50_ms),
            ms(self.p99_ms),
            self.shims.to_string(),
            if self.max_rss_kib == 0 { "-".into() } else { self.max_rss_kib.to_string() },
            dash(&self.rss),
            dash(&self.fds),
            dash(&self.threads),
            dash(&self.leftovers),
            dash(&self.note),
        ]
    }
}

const HEADER: [&str; 15] = [
    "phase",
    "runtime",
    "ops",
    "failed",
    "lost exit",
    "lost output",
    "p50 ms",
    "p99 ms",
    "shims",
    "max RSS KiB",
    "RSS KiB before→after",
    "fds",
    "threads",
    "leftovers",
    "notes",
];

/// `target/soak` (or `$CARGO_TARGET_DIR/soak`).
pub fn results_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("soak")
}

static RESULTS: Mutex<bool> = Mutex::new(false);

/// Prints `rows` as a table to stderr, and rewrites
/// `target/soak/results.md`: every phase's rows of this test run, in the
/// order of their `key`s (each test writes `target/soak/phases/<key>.md`;
/// the first report of a process clears the phases of an earlier run).
pub fn report(key: &str, rows: &[Row]) {
    let cells: Vec<Vec<String>> = rows.iter().map(Row::cells).collect();
    let mut widths: Vec<usize> = HEADER.iter().map(|h| h.chars().count()).collect();
    for r in &cells {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |r: &[String]| {
        r.iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}", w = *w))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let header: Vec<String> = HEADER.iter().map(|h| h.to_string()).collect();
    let mut text = format!("\n[soak] {key}\n{}\n", line(&header));
    for r in &cells {
        text.push_str(&line(r));
        text.push('\n');
    }
    eprintln!("{text}");

    let mut cleared = RESULTS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = results_dir();
    let phases = dir.join("phases");
    if !*cleared {
        let _ = fs::remove_dir_all(&phases);
        *cleared = true;
    }
    if let Err(e) = fs::create_dir_all(&phases) {
        eprintln!("[soak] cannot create {}: {e}", phases.display());
        return;
    }
    let md: String = cells
        .iter()
        .map(|r| format!("| {} |\n", r.iter().map(|c| c.replace('|', "\\|")).collect::<Vec<_>>().join(" | ")))
        .collect();
    let _ = fs::write(phases.join(format!("{key}.md")), md);

    let mut files: Vec<PathBuf> = fs::read_dir(&phases)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    let counts = [
        "RSV2_SOAK_RUNS",
        "RSV2_SOAK_EXECS",
        "RSV2_SOAK_PARALLEL",
        "RSV2_SOAK_CRI_EXECS",
        "RSV2_SOAK_CRI_LOGS",
        "RSV2_SOAK_RESTARTS",
        "RSV2_SOAK_KILLS",
        "RSV2_SOAK_FLOOD_SECS",
        "RSV2_SOAK_TTY",
    ]
    .iter()
    .map(|v| format!("{v}={}", std::env::var(v).unwrap_or_else(|_| "default".into())))
    .collect::<Vec<_>>()
    .join(" ");
    let shim = std::env::var("SHIM_BIN").unwrap_or_else(|_| "target/debug/containerd-shim-rust-v2".into());
    let mut out = format!(
        "# Soak and fault results\n\n{} UTC; shim {shim}; {counts}\n\n\
         `lost exit` and `lost output`: operations whose exit code, or stdout/stderr byte for byte, \
         was not what the process produced; `failed`: the client call failed or timed out. \
         `leftovers`: what the phase left on the host after it (shims, cgroups, mounts, sockets, \
         FIFOs, bundles, runtime state, zombies; for a long-lived shim, fds or threads that did \
         not come back).\n\n| {} |\n|{}|\n",
        utc_now(),
        HEADER.join(" | "),
        HEADER.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    );
    for f in files {
        out.push_str(&fs::read_to_string(f).unwrap_or_default());
    }
    let _ = fs::write(dir.join("results.md"), out);
}

/// Copies containerd's log of `ctd` (the shims' logs included; its last
/// 20 MiB) to `target/soak/logs/<key>.log`, the evidence behind a phase's
/// row, and returns the path; the instance's own copy goes at Drop.
pub fn save_log(ctd: &PrivateContainerd, key: &str) -> PathBuf {
    let dir = results_dir().join("logs");
    let _ = fs::create_dir_all(&dir);
    let path = dir.join(format!("{key}.log"));
    let log = ctd.log();
    let mut at = log.len().saturating_sub(20 << 20);
    while !log.is_char_boundary(at) {
        at += 1;
    }
    let _ = fs::write(&path, &log[at..]);
    path
}

fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_outputs() {
        assert_eq!(judge(9, Some(2), b"out-9\n", b"err-9\n"), Outcome::Ok);
        assert!(matches!(judge(9, Some(2), b"out-9\n", b""), Outcome::LostOutput(_)));
        assert!(matches!(judge(9, Some(0), b"out-9\n", b"err-9\n"), Outcome::WrongExit(_)));
        assert!(matches!(judge(9, None, b"", b""), Outcome::Failed(_)));
        assert!(matches!(
            judge(9, Some(1), b"", b"ctr: failed to create shim task\n"),
            Outcome::Failed(_)
        ));
        // ctr's error with the exit code the process would have had.
        assert!(matches!(
            judge(8, Some(1), b"", b"ctr: create pipe: EMFILE\n"),
            Outcome::Failed(_)
        ));
        assert_eq!(expected(14), ("out-14\n".into(), "err-14\n".into(), 0));
    }

    #[test]
    fn percentiles_and_kinds() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(message_kind("exit 3 stderr \"id run.12 x\""), "stderr \"id run.N x\"");
        assert_eq!(
            summarize(&["cgroup a".into(), "cgroup b".into(), "shim 1 (rust ns/x) still runs".into()]),
            "2 cgroup, 1 shim"
        );
    }

    #[test]
    fn runs_bounded_commands() {
        let b = run_bounded(Command::new("true"), Duration::from_secs(10));
        assert_eq!(b.code(), Some(0));
        let mut sleep = Command::new("sleep");
        sleep.arg("10");
        let b = run_bounded(sleep, Duration::from_millis(100));
        assert!(b.timed_out && b.code().is_none());
    }
}
