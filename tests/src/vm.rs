//! The test VMs: boots a lane's host script (qemu, TCG, Debian's cloud
//! kernel), reads the guest tests' results from its serial console and turns
//! them into assertions. Two lanes ([`Lane`]):
//!
//! - [`CGROUP_V2_LANE`], `tests/vm/run-vm.sh`: containerd and the shim in a
//!   busybox initramfs, cgroup2 mounted by hand. The host's cgroups are v1
//!   (hybrid), so everything about cgroup v2 is tested there by
//!   `tests/vm/guest-tests.sh`.
//! - [`NODE_LANE`], `tests/node-vm/run-node-vm.sh`: a Debian bookworm node,
//!   systemd as PID 1 on a unified cgroup v2 hierarchy, tested by
//!   `tests/node-vm/guest-node-tests.sh`.
//!
//! Both guests speak the same protocol, one line each on the console:
//!
//! - `RSV2-RESULT <name> PASS` / `RSV2-RESULT <name> FAIL <reason>`
//! - `RSV2-LOG <name> | <text>`, `RSV2-CTDLOG <name> | <text>`: a failing
//!   test's output and what containerd logged meanwhile
//! - `RSV2-TIME <label> <seconds>`: guest uptime at each stage, or a test's duration
//! - `RSV2-INFO ...`, `RSV2-FATAL ...`: facts about the guest, setup failures
//! - `RSV2-DONE`: the guest ran every test and is powering off
//!
//! [`boot`] and [`boot_lane`] never panic: whatever goes wrong (no root, no
//! shim, no qemu, kernel or image to be had, a VM that hangs) comes back as an
//! `Err` or as missing results, so every test reading the run can fail with
//! the reason.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{RUST_RUNTIME, SHIM_NAME};

/// How long qemu may run in the cgroup-v2 lane (the script kills it after
/// this), unless `RSV2_VM_TIMEOUT` says otherwise.
pub const DEFAULT_VM_TIMEOUT: Duration = Duration::from_secs(300);
/// Console lines quoted when a result is missing.
const TAIL_LINES: usize = 60;

/// One VM lane: the host script that boots it, and how it reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lane {
    /// For messages: "cgroup-v2 VM".
    pub name: &'static str,
    /// The host script, relative to the integration-tests crate (`tests/`).
    pub script: &'static str,
    /// How the script's own stderr lines start: `run-vm:`. It prints
    /// `<prefix> booting` when qemu starts and `<prefix> qemu exited` after.
    pub prefix: &'static str,
    /// Prefix of the script's settings: `<env>_RUNTIME`, `<env>_TIMEOUT`
    /// (also read here) and `<env>_TESTS`.
    pub env: &'static str,
    /// The `RSV2-TIME` label at which the guest is ready for its tests.
    pub ready_label: &'static str,
    /// How long qemu may run, unless `<env>_TIMEOUT` says otherwise.
    pub default_timeout: Duration,
    /// Extra time the whole script gets on top of the VM's limit: installing
    /// qemu, downloading the kernel, building the initramfs or image.
    pub setup_allowance: Duration,
}

/// The cgroup-v2 lane: `tests/vm/run-vm.sh`, a busybox initramfs.
pub const CGROUP_V2_LANE: Lane = Lane {
    name: "cgroup-v2 VM",
    script: "vm/run-vm.sh",
    prefix: "run-vm:",
    env: "RSV2_VM",
    ready_label: "containerd-ready",
    default_timeout: DEFAULT_VM_TIMEOUT,
    setup_allowance: Duration::from_secs(600),
};

/// The node lane: `tests/node-vm/run-node-vm.sh`, systemd as PID 1 on a
/// unified cgroup v2 hierarchy, Debian bookworm's containerd and runc. Its
/// setup may build the image with debootstrap (about a minute, more on a
/// slow mirror) and the integration-test binary it copies in.
pub const NODE_LANE: Lane = Lane {
    name: "node VM",
    script: "node-vm/run-node-vm.sh",
    prefix: "run-node-vm:",
    env: "RSV2_NODE_VM",
    ready_label: "node-ready",
    default_timeout: Duration::from_secs(1800),
    setup_allowance: Duration::from_secs(1200),
};

/// How to boot the VM.
#[derive(Debug, Clone)]
pub struct VmOptions {
    /// Runtime the guest tests pass to `ctr run --runtime`.
    pub runtime: String,
    /// Only these guest tests (all when empty).
    pub tests: Vec<String>,
    /// Where the full console output is written (kept after the run).
    pub console_file: PathBuf,
    /// More kernel parameters (`<env>_APPEND`; the node lane reads it):
    /// `systemd.unified_cgroup_hierarchy=0` boots the node hybrid.
    pub append: String,
}

/// What a guest test reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
}

/// One finished VM run.
#[derive(Debug)]
pub struct VmRun {
    pub lane: Lane,
    pub runtime: String,
    /// The serial console, `\r` removed.
    pub console: String,
    /// The lane script's own messages (stderr).
    pub script_log: String,
    /// The lane script's exit status, as text.
    pub status: String,
    /// Results by guest test name, in the order reported.
    pub results: BTreeMap<String, Outcome>,
    /// `RSV2-LOG` and `RSV2-CTDLOG` lines by guest test name.
    pub logs: BTreeMap<String, Vec<String>>,
    /// Names reported more than once.
    pub duplicates: Vec<String>,
    /// Whether `RSV2-DONE` was seen.
    pub done: bool,
    /// `RSV2-TIME` lines: label and seconds (guest uptime, or a test's duration).
    pub guest_times: Vec<(String, f64)>,
    /// Host time from qemu's start (`run-vm: booting`) to the guest being
    /// ready (the lane's `ready_label`), when both were seen.
    pub boot_to_ready: Option<Duration>,
    /// Host time from qemu's start to its exit.
    pub vm_wall: Option<Duration>,
    /// Host time for the whole script (setup, initramfs or image, VM).
    pub total_wall: Duration,
    pub console_file: PathBuf,
}

/// Runs the cgroup-v2 VM ([`CGROUP_V2_LANE`]) once; see [`boot_lane`].
pub fn boot(opts: &VmOptions) -> Result<VmRun, String> {
    boot_lane(&CGROUP_V2_LANE, opts)
}

/// Runs `lane`'s VM once and collects everything it reported. `Err` only
/// when the VM could not be started at all; a VM that died or hung is an
/// `Ok` with results missing and `done == false`.
pub fn boot_lane(lane: &Lane, opts: &VmOptions) -> Result<VmRun, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err(format!(
            "the {} test must run as root (it installs qemu with apt-get, caches \
             the kernel and images under /var/cache and runs containers in the VM)",
            lane.name
        ));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(lane.script);
    if !script.is_file() {
        return Err(format!("{} is missing", script.display()));
    }
    let shim = shim_for(&opts.runtime)?;
    let timeout_var = format!("{}_TIMEOUT", lane.env);
    let vm_timeout = std::env::var(&timeout_var)
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(lane.default_timeout);

    let mut cmd = Command::new("bash");
    cmd.arg(&script)
        .env(format!("{}_RUNTIME", lane.env), &opts.runtime)
        .env(&timeout_var, vm_timeout.as_secs().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Should this test process die, the script gets SIGTERM and its trap kills
    // qemu and removes its temporary directory. (It stays in our process
    // group, so a Ctrl-C reaches it and qemu directly too.)
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
        });
    }
    match &shim {
        Some(path) => cmd.env("SHIM_BIN", path),
        None => cmd.env_remove("SHIM_BIN"),
    };
    if !opts.tests.is_empty() {
        cmd.env(format!("{}_TESTS", lane.env), opts.tests.join(" "));
    }
    if !opts.append.is_empty() {
        cmd.env(format!("{}_APPEND", lane.env), &opts.append);
    }
    // The cargo that built us, for a script that builds test binaries to
    // copy into its guest (cargo does not hold its lock while tests run).
    if std::env::var_os("CARGO").is_none() {
        cmd.env("CARGO", env!("CARGO"));
    }

    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let pid = Pid::from_raw(child.id() as i32);

    // Both pipes feed one channel, each line stamped with its arrival time.
    enum Line {
        Console(String),
        Script(String),
    }
    let (tx, rx) = mpsc::channel::<(Instant, Line)>();
    let out = child.stdout.take().expect("piped stdout");
    let err = child.stderr.take().expect("piped stderr");
    let tx2 = tx.clone();
    let readers = [
        std::thread::spawn(move || {
            for line in split_lines(out) {
                let _ = tx.send((Instant::now(), Line::Console(line)));
            }
        }),
        std::thread::spawn(move || {
            for line in split_lines(err) {
                let _ = tx2.send((Instant::now(), Line::Script(line)));
            }
        }),
    ];

    let deadline = started + vm_timeout + lane.setup_allowance;
    let ready_tag = format!("RSV2-TIME {}", lane.ready_label);
    let booting = format!("{} booting", lane.prefix);
    let exited = format!("{} qemu exited", lane.prefix);
    let mut console = String::new();
    let mut script_log = String::new();
    let mut qemu_started = None;
    let mut ready_at = None;
    let mut qemu_exited = None;
    let mut killed = false;
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait.max(Duration::from_millis(1))) {
            Ok((at, Line::Console(line))) => {
                if line.contains(&ready_tag) {
                    ready_at.get_or_insert(at);
                }
                console.push_str(&line);
                console.push('\n');
            }
            Ok((at, Line::Script(line))) => {
                if line.starts_with(&booting) {
                    qemu_started.get_or_insert(at);
                } else if line.starts_with(&exited) {
                    qemu_exited.get_or_insert(at);
                }
                script_log.push_str(&line);
                script_log.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if Instant::now() >= deadline && !killed {
                    script_log.push_str(&format!(
                        "[vm.rs] {} still running after {:?}: killing it\n",
                        lane.script,
                        vm_timeout + lane.setup_allowance
                    ));
                    kill_script(pid, &mut child);
                    killed = true;
                }
                if killed && Instant::now() >= deadline + Duration::from_secs(30) {
                    // A grandchild kept a pipe open; give up on the rest.
                    break;
                }
            }
        }
    }
    let status = match child.try_wait() {
        Ok(Some(s)) => s,
        _ => {
            kill_script(pid, &mut child);
            child
                .wait()
                .map_err(|e| format!("waiting for {}: {e}", lane.script))?
        }
    };
    for r in readers {
        let _ = r.join();
    }

    let _ = std::fs::create_dir_all(opts.console_file.parent().unwrap_or(Path::new(".")));
    let _ = std::fs::write(
        &opts.console_file,
        format!("{console}\n--- {} ---\n{script_log}", lane.script),
    );

    let mut run = VmRun {
        lane: *lane,
        runtime: opts.runtime.clone(),
        console,
        script_log,
        status: status.to_string(),
        results: BTreeMap::new(),
        logs: BTreeMap::new(),
        duplicates: Vec::new(),
        done: false,
        guest_times: Vec::new(),
        boot_to_ready: qemu_started
            .zip(ready_at)
            .map(|(a, b)| b.saturating_duration_since(a)),
        vm_wall: qemu_started
            .zip(qemu_exited)
            .map(|(a, b)| b.saturating_duration_since(a)),
        total_wall: started.elapsed(),
        console_file: opts.console_file.clone(),
    };
    run.parse();
    Ok(run)
}

/// The shim binary to put in the VM: required for our runtime, optional
/// (included when built) for any other.
fn shim_for(runtime: &str) -> Result<Option<PathBuf>, String> {
    let path = match std::env::var_os("SHIM_BIN") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/debug")
            .join(SHIM_NAME),
    };
    if path.is_file() {
        return path
            .canonicalize()
            .map(Some)
            .map_err(|e| format!("cannot resolve shim binary {}: {e}", path.display()));
    }
    if runtime == RUST_RUNTIME {
        return Err(format!(
            "shim binary {} not found: run `cargo build -p {SHIM_NAME}` first, or point SHIM_BIN at it",
            path.display()
        ));
    }
    Ok(None)
}

/// SIGTERM, on which the lane script's trap kills qemu and removes its
/// temporary directory; SIGKILL if it is still there 15 s later.
fn kill_script(pid: Pid, child: &mut std::process::Child) {
    let _ = kill(pid, Signal::SIGTERM);
    for _ in 0..150 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
}

/// Lines of a pipe, lossily decoded, `\r` removed (the serial console sends CRLF).
fn split_lines(pipe: impl Read) -> impl Iterator<Item = String> {
    BufReader::new(pipe)
        .split(b'\n')
        .map_while(Result::ok)
        .map(|raw| String::from_utf8_lossy(&raw).replace('\r', ""))
}

impl VmRun {
    fn parse(&mut self) {
        for line in self.console.lines() {
            // SeaBIOS' screen clearing can prefix the first line: look for the tag anywhere.
            let Some(at) = line.find("RSV2-") else {
                continue;
            };
            let line = &line[at..];
            if line.trim_end() == "RSV2-DONE" {
                self.done = true;
            } else if let Some(rest) = line.strip_prefix("RSV2-RESULT ") {
                let mut parts = rest.splitn(3, ' ');
                let name = parts.next().unwrap_or_default().to_string();
                let outcome = match parts.next() {
                    Some("PASS") => Outcome::Pass,
                    Some("FAIL") => Outcome::Fail(parts.next().unwrap_or("").to_string()),
                    other => {
                        Outcome::Fail(format!("malformed result line (status {other:?}): {line}"))
                    }
                };
                if self.results.insert(name.clone(), outcome).is_some() {
                    self.duplicates.push(name);
                }
            } else if let Some(rest) = line
                .strip_prefix("RSV2-LOG ")
                .or_else(|| line.strip_prefix("RSV2-CTDLOG "))
            {
                let name = rest.split(' ').next().unwrap_or_default().to_string();
                let kind = if line.starts_with("RSV2-LOG ") {
                    "test"
                } else {
                    "containerd"
                };
                let text = rest.split_once(" | ").map_or(rest, |(_, t)| t);
                self.logs
                    .entry(name)
                    .or_default()
                    .push(format!("{kind}: {text}"));
            } else if let Some(rest) = line.strip_prefix("RSV2-TIME ") {
                if let Some((label, secs)) = rest.rsplit_once(' ') {
                    if let Ok(secs) = secs.trim().parse() {
                        self.guest_times.push((label.to_string(), secs));
                    }
                }
            }
        }
    }

    /// The guest's uptime (or a test's duration) recorded under `label`.
    pub fn guest_time(&self, label: &str) -> Option<f64> {
        self.guest_times
            .iter()
            .find(|(l, _)| l == label)
            .map(|&(_, s)| s)
    }

    /// The last `n` console lines, plus the script's messages.
    pub fn console_tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.console.lines().collect();
        let tail = lines[lines.len().saturating_sub(n)..].join("\n");
        format!(
            "--- last {} console lines ---\n{tail}\n--- {} ({}) ---\n{}",
            n.min(lines.len()),
            self.lane.script,
            self.status,
            self.script_log.trim_end()
        )
    }

    /// Timings, one line each, for reports and failure messages.
    pub fn timing_summary(&self) -> String {
        let secs =
            |d: Option<Duration>| d.map_or("?".to_string(), |d| format!("{:.1}s", d.as_secs_f64()));
        let stages: Vec<String> = self
            .guest_times
            .iter()
            .filter(|(l, _)| !l.starts_with("test:"))
            .map(|(l, t)| format!("{l} {t:.1}s"))
            .collect();
        let mut s = format!(
            "runtime {}: total {:.1}s (setup + VM), VM {}, qemu start to {} {}; \
             guest uptime: {}",
            self.runtime,
            self.total_wall.as_secs_f64(),
            secs(self.vm_wall),
            self.lane.ready_label,
            secs(self.boot_to_ready),
            if stages.is_empty() {
                "?".to_string()
            } else {
                stages.join(", ")
            },
        );
        let per_test: Vec<String> = self
            .guest_times
            .iter()
            .filter_map(|(l, t)| l.strip_prefix("test:").map(|n| format!("{n} {t:.1}s")))
            .collect();
        if !per_test.is_empty() {
            s.push_str(&format!("; tests: {}", per_test.join(", ")));
        }
        s
    }

    /// `Ok` when guest test `name` reported PASS; otherwise the reason, its
    /// log lines, and the console tail when it reported nothing at all.
    pub fn check(&self, name: &str) -> Result<(), String> {
        let logs = self
            .logs
            .get(name)
            .map(|l| format!("\n--- guest log of {name} ---\n{}", l.join("\n")))
            .unwrap_or_default();
        match self.results.get(name) {
            Some(Outcome::Pass) => Ok(()),
            Some(Outcome::Fail(reason)) => Err(format!(
                "guest test {name} failed in the {} (runtime {}): {reason}{logs}\n\
                 (full console: {})",
                self.lane.name,
                self.runtime,
                self.console_file.display()
            )),
            None => Err(format!(
                "guest test {name} reported no result{}; the VM {}\n{}\n(full console: {})",
                if self.done {
                    " although the guest printed RSV2-DONE"
                } else {
                    ""
                },
                if self.done {
                    "finished"
                } else {
                    "never printed RSV2-DONE"
                },
                self.console_tail(TAIL_LINES),
                self.console_file.display()
            )),
        }
    }

    /// `Ok` when the guest printed RSV2-DONE and reported exactly the
    /// `expected` names, once each.
    pub fn check_complete(&self, expected: &[&str]) -> Result<(), String> {
        let mut problems = Vec::new();
        if !self.done {
            problems.push(
                "the guest never printed RSV2-DONE (it died, hung or was killed)".to_string(),
            );
        }
        let missing: Vec<&&str> = expected
            .iter()
            .filter(|n| !self.results.contains_key(**n))
            .collect();
        if !missing.is_empty() {
            problems.push(format!("no result for {missing:?}"));
        }
        let unknown: Vec<&String> = self
            .results
            .keys()
            .filter(|n| !expected.contains(&n.as_str()))
            .collect();
        if !unknown.is_empty() {
            problems.push(format!(
                "results for tests this file does not expect: {unknown:?}"
            ));
        }
        if !self.duplicates.is_empty() {
            problems.push(format!("reported more than once: {:?}", self.duplicates));
        }
        if problems.is_empty() {
            return Ok(());
        }
        Err(format!(
            "{} run incomplete: {}\n{}\n{}\n(full console: {})",
            self.lane.name,
            problems.join("; "),
            self.timing_summary(),
            self.console_tail(TAIL_LINES),
            self.console_file.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_from(console: &str) -> VmRun {
        let mut run = VmRun {
            lane: CGROUP_V2_LANE,
            runtime: RUST_RUNTIME.into(),
            console: console.into(),
            script_log: String::new(),
            status: "exit status: 0".into(),
            results: BTreeMap::new(),
            logs: BTreeMap::new(),
            duplicates: Vec::new(),
            done: false,
            guest_times: Vec::new(),
            boot_to_ready: None,
            vm_wall: None,
            total_wall: Duration::ZERO,
            console_file: PathBuf::from("/dev/null"),
        };
        run.parse();
        run
    }

    #[test]
    fn parses_results_logs_times_and_done() {
        let run = run_from(
            "\x1bc\x1b[2JRSV2-TIME initramfs 4.82\n\
             RSV2-RESULT a PASS\n\
             RSV2-LOG b | FAIL: it broke\n\
             RSV2-CTDLOG b | level=error\n\
             RSV2-RESULT b FAIL memory.max is 'max', expected '1'\n\
             RSV2-TIME test:b 2.5\n\
             RSV2-DONE\n",
        );
        assert!(run.done);
        assert_eq!(run.guest_time("initramfs"), Some(4.82));
        assert_eq!(run.guest_time("test:b"), Some(2.5));
        assert!(run.check("a").is_ok());
        let err = run.check("b").unwrap_err();
        assert!(err.contains("memory.max is 'max', expected '1'"), "{err}");
        assert!(
            err.contains("test: FAIL: it broke") && err.contains("containerd: level=error"),
            "{err}"
        );
        assert!(run.check_complete(&["a", "b"]).is_ok());
        assert!(run
            .check_complete(&["a", "b", "c"])
            .unwrap_err()
            .contains("no result for [\"c\"]"));
        assert!(run
            .check_complete(&["a"])
            .unwrap_err()
            .contains("does not expect"));
    }

    #[test]
    fn missing_done_and_missing_result_fail_with_the_console_tail() {
        let run = run_from("RSV2-RESULT a PASS\nkernel panic here\n");
        assert!(!run.done);
        let err = run.check("z").unwrap_err();
        assert!(
            err.contains("never printed RSV2-DONE") && err.contains("kernel panic here"),
            "{err}"
        );
        let err = run.check_complete(&["a"]).unwrap_err();
        assert!(
            err.contains("never printed RSV2-DONE") && err.contains("kernel panic here"),
            "{err}"
        );
    }

    #[test]
    fn a_repeated_result_is_reported() {
        let run = run_from("RSV2-RESULT a PASS\nRSV2-RESULT a FAIL x\nRSV2-DONE\n");
        assert!(run
            .check_complete(&["a"])
            .unwrap_err()
            .contains("more than once"));
    }
}
