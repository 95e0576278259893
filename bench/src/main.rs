//! `rsv2-bench`: containerd-shim-rust-v2 against containerd-shim-runc-v2 (+ runc),
//! side by side through one private containerd 1.6 (issue #7).
//!
//! The process runs in two parts:
//!
//! - the **supervisor** (what the user starts) starts the private containerd
//!   through the integration-test harness, re-executes itself as the worker,
//!   waits for it and then drops the harness instance, which removes every
//!   container, shim, mount, cgroup and file of the run;
//! - the **worker** does the measurements with `ctr` and writes the results.
//!
//! The split is what makes cleanup reliable: a panic in a thread other than
//! the harness's owner, or one raised while unwinding, would skip the
//! harness's Drop, and ^C would kill a single process before it could clean
//! up. The supervisor
//! survives both: it catches SIGINT/SIGTERM/SIGHUP, and a worker that panics,
//! fails or is killed only ends the measurements.

mod bench;
mod cri;
mod memory;
mod plot;
mod report;
mod run;
mod stats;

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use integration_tests::{PrivateContainerd, RUNC_RUNTIME, RUST_RUNTIME};

/// Set by the supervisor for the worker: the path of the plan (JSON).
const PLAN_ENV: &str = "RSV2_BENCH_PLAN";

/// The two runtimes compared, and the null shim (bench/src/null_shim.rs)
/// whose start and exec latencies are the floor (issue #19).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Runtime {
    Rust,
    Runc,
    Null,
}

/// The null shim's runtime type; its binary is linked into the private
/// containerd's PATH beside ours.
pub const NULL_RUNTIME: &str = "io.containerd.null.v2";

impl Runtime {
    pub const BOTH: [Runtime; 2] = [Runtime::Rust, Runtime::Runc];

    /// The containerd runtime type given to `ctr --runtime`.
    pub fn runtime_type(self) -> &'static str {
        match self {
            Runtime::Rust => RUST_RUNTIME,
            Runtime::Runc => RUNC_RUNTIME,
            Runtime::Null => NULL_RUNTIME,
        }
    }

    /// File name of the shim binary containerd runs for this runtime.
    pub fn shim_binary_name(self) -> &'static str {
        match self {
            Runtime::Rust => "containerd-shim-rust-v2",
            Runtime::Runc => "containerd-shim-runc-v2",
            Runtime::Null => "containerd-shim-null-v2",
        }
    }

    /// Short name for tables and ids.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Rust => "rust",
            Runtime::Runc => "runc",
            Runtime::Null => "null",
        }
    }

    /// The pair in the order of round `i`: rust first in even rounds.
    pub fn order(i: usize) -> [Runtime; 2] {
        if i % 2 == 0 {
            [Runtime::Rust, Runtime::Runc]
        } else {
            [Runtime::Runc, Runtime::Rust]
        }
    }

    /// The three in the order of round `i` for the latency phases: the
    /// pair as [`Runtime::order`] has it, with the null shim rotating
    /// through first, middle and last, so that no runtime always follows
    /// the same one.
    pub fn order_with_null(i: usize) -> [Runtime; 3] {
        let [a, b] = Runtime::order(i);
        match (i / 2) % 3 {
            0 => [Runtime::Null, a, b],
            1 => [a, Runtime::Null, b],
            _ => [a, b, Runtime::Null],
        }
    }
}

/// The phases, selectable with `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Start,
    Exec,
    Idle,
    Throughput,
}

impl Phase {
    const ALL: [Phase; 4] = [Phase::Start, Phase::Exec, Phase::Idle, Phase::Throughput];

    fn parse(s: &str) -> Result<Phase, String> {
        match s {
            "start" => Ok(Phase::Start),
            "exec" => Ok(Phase::Exec),
            "idle" | "memory" => Ok(Phase::Idle),
            "throughput" => Ok(Phase::Throughput),
            _ => Err(format!(
                "unknown phase {s:?} (start, exec, idle, throughput)"
            )),
        }
    }
}

/// Command-line settings, shared by supervisor and worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// Measured `ctr run --rm` (and `ctr task exec`) runs per runtime.
    pub runs: usize,
    /// Unmeasured runs per runtime before those.
    pub warmup: usize,
    /// Idle shims per runtime for the memory figures.
    pub idle: usize,
    /// How long idle containers sit before they are measured, ms.
    pub settle_ms: u64,
    /// Containers per throughput round.
    pub containers: usize,
    /// `ctr run` processes at a time in a throughput round.
    pub concurrency: usize,
    /// Throughput rounds per runtime, alternating which goes first.
    pub rounds: usize,
    pub out: PathBuf,
    pub shim: PathBuf,
    pub phases: Vec<Phase>,
    /// containerd (and so the shims) at debug level, its log kept in `out`.
    #[serde(default)]
    pub debug: bool,
}

impl Config {
    /// The workspace root: the parent of this crate's directory.
    fn workspace() -> PathBuf {
        let bench = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        bench.parent().unwrap_or(bench).to_path_buf()
    }

    fn parse(args: &[String]) -> Result<Config, String> {
        let ws = Self::workspace();
        let mut cfg = Config {
            runs: 100,
            warmup: 2,
            idle: 20,
            settle_ms: 3000,
            containers: 100,
            concurrency: 10,
            rounds: 3,
            out: ws.join("bench/results"),
            shim: std::env::var_os("SHIM_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| ws.join("target/release/containerd-shim-rust-v2")),
            phases: Phase::ALL.to_vec(),
            debug: false,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            if flag == "-h" || flag == "--help" {
                return Err(String::new());
            }
            if flag == "--debug" {
                cfg.debug = true;
                continue;
            }
            let value = it
                .next()
                .ok_or_else(|| format!("{flag} needs a value"))?
                .as_str();
            let num = |v: &str| {
                v.parse::<usize>()
                    .map_err(|_| format!("{flag}: not a number: {v}"))
            };
            match flag.as_str() {
                "--runs" => cfg.runs = num(value)?,
                "--warmup" => cfg.warmup = num(value)?,
                "--idle" => cfg.idle = num(value)?,
                "--settle-ms" => cfg.settle_ms = num(value)? as u64,
                "--containers" => cfg.containers = num(value)?,
                "--concurrency" => cfg.concurrency = num(value)?,
                "--rounds" => cfg.rounds = num(value)?,
                "--out" => cfg.out = PathBuf::from(value),
                "--shim" => cfg.shim = PathBuf::from(value),
                "--only" => {
                    cfg.phases = value
                        .split(',')
                        .map(Phase::parse)
                        .collect::<Result<_, _>>()?
                }
                _ => return Err(format!("unknown option {flag}")),
            }
        }
        if cfg.runs == 0 || cfg.idle == 0 || cfg.containers == 0 || cfg.rounds == 0 {
            return Err("--runs, --idle, --containers and --rounds must be at least 1".into());
        }
        if cfg.concurrency == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        Ok(cfg)
    }

    pub fn has(&self, phase: Phase) -> bool {
        self.phases.contains(&phase)
    }

    /// How many container ids the worker uses, so that the supervisor can
    /// hand out exactly those (the harness then knows their shim sockets).
    fn ids_needed(&self) -> usize {
        let mut n = 0;
        if self.has(Phase::Start) {
            n += 3 * (self.warmup + self.runs);
        }
        if self.has(Phase::Exec) {
            n += 3;
        }
        if self.has(Phase::Idle) {
            n += 2 * self.idle;
        }
        if self.has(Phase::Throughput) {
            n += 2 * self.rounds * self.containers;
        }
        n
    }
}

const USAGE: &str = "\
usage: rsv2-bench [options]     (as root; see bench/README.md)

  --runs N          start and exec latency runs per runtime (100)
  --warmup N        unmeasured runs per runtime before them (2)
  --idle N          idle containers, each in its own shim, per runtime (20)
  --settle-ms MS    wait before measuring idle shims (3000)
  --containers N    containers per throughput round (100)
  --concurrency N   ctr run processes at a time (10)
  --rounds N        throughput rounds per runtime, alternating (3)
  --only LIST       phases, comma-separated: start,exec,idle,throughput
  --out DIR         results directory (bench/results)
  --shim PATH       our shim (SHIM_BIN, else target/release/containerd-shim-rust-v2)
  --debug           containerd and shims at debug level (slower: for phase
                    timing, not for the table); keeps DIR/containerd-debug.log

usage: rsv2-bench --cri [--pods N] [--warmup N] [--burst N] [--burst-concurrency N]
                       [--burst-rounds N] [--density N] [--out DIR] [--shim PATH]
  the CRI pod lifecycle with handlers rust, runc and null (the null shim,
  containerd-shim-null-v2, built beside this binary), N pods each (30);
  N pods started C at a time, R rounds per handler (50, 10, 3; 0: none);
  then density: N pods of rust, then of runc, all at once (100; 0: none)

usage: rsv2-bench --replot DIR
  rewrites DIR/results.md and DIR/results.png from DIR/results.json and,
  for the plot's CRI panels, DIR/cri.json (no root needed)
";

/// What the supervisor tells the worker: the private containerd and the
/// container ids to use.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub config: Config,
    pub socket: PathBuf,
    pub namespace: String,
    pub dir: PathBuf,
    pub rootfs: PathBuf,
    pub fifo_dir: PathBuf,
    pub ids: Vec<String>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, dir] = args.as_slice() {
        if flag == "--replot" {
            return bench::replot(std::path::Path::new(dir));
        }
    }
    if args.first().is_some_and(|a| a == "--cri") {
        return cri_main(&args[1..]);
    }
    let config = match Config::parse(&args) {
        Ok(c) => c,
        Err(e) => {
            if e.is_empty() {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            eprintln!("rsv2-bench: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match std::env::var_os(PLAN_ENV) {
        Some(plan) => bench::worker(PathBuf::from(plan)),
        None => supervise(config),
    }
}

/// `--cri`: see USAGE.
fn cri_main(args: &[String]) -> ExitCode {
    let ws = Config::workspace();
    let mut plan = cri::CriPlan { pods: 30, warmup: 2, density_pods: 100, burst_pods: 50, burst_concurrency: 10, burst_rounds: 3 };
    let mut out = ws.join("bench/results");
    let mut shim = std::env::var_os("SHIM_BIN").map(PathBuf::from).unwrap_or_else(|| ws.join("target/release/containerd-shim-rust-v2"));
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let Some(value) = it.next() else {
            eprintln!("rsv2-bench --cri: {flag} needs a value\n\n{USAGE}");
            return ExitCode::from(2);
        };
        let num = |v: &str| v.parse::<usize>().ok();
        match (flag.as_str(), num(value)) {
            ("--pods", Some(n)) if n > 0 => plan.pods = n,
            ("--warmup", Some(n)) => plan.warmup = n,
            ("--density", Some(n)) => plan.density_pods = n,
            ("--burst", Some(n)) => plan.burst_pods = n,
            ("--burst-concurrency", Some(n)) if n > 0 => plan.burst_concurrency = n,
            ("--burst-rounds", Some(n)) if n > 0 => plan.burst_rounds = n,
            ("--out", _) => out = PathBuf::from(value),
            ("--shim", _) => shim = PathBuf::from(value),
            _ => {
                eprintln!("rsv2-bench --cri: bad option {flag} {value}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    if !nix::unistd::geteuid().is_root() || !shim.is_file() {
        eprintln!("rsv2-bench --cri: must run as root, with our shim at {} (--shim)", shim.display());
        return ExitCode::from(2);
    }
    // The harness links SHIM_BIN into containerd's PATH.
    std::env::set_var("SHIM_BIN", &shim);
    match cri::run(&plan, &shim, &out) {
        Ok(results) => {
            println!("{}", results.markdown());
            eprintln!("rsv2-bench: wrote {}/cri.{{md,json}}", out.display());
            if let Err(e) = bench::redraw(&out) {
                eprintln!("rsv2-bench --cri: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rsv2-bench --cri: {e}");
            ExitCode::FAILURE
        }
    }
}

fn supervise(mut config: Config) -> ExitCode {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("rsv2-bench: must run as root (it starts containerd and containers)");
        return ExitCode::from(2);
    }
    if !config.shim.is_file() {
        eprintln!(
            "rsv2-bench: shim binary {} not found. Build it first:\n  \
             cargo build --release -p containerd-shim-rust-v2\n\
             or point --shim / SHIM_BIN at one.",
            config.shim.display()
        );
        return ExitCode::from(2);
    }
    if let Ok(p) = config.shim.canonicalize() {
        config.shim = p;
    }
    if let Ok(p) = std::path::absolute(&config.out) {
        config.out = p;
    }
    if !config
        .shim
        .ends_with("target/release/containerd-shim-rust-v2")
    {
        eprintln!(
            "rsv2-bench: note: {} is not the workspace's release build",
            config.shim.display()
        );
    }
    for tool in ["/usr/bin/containerd", "/usr/bin/containerd-shim-runc-v2"] {
        if !std::path::Path::new(tool).exists() {
            eprintln!("rsv2-bench: {tool} is missing (apt-get install containerd runc)");
            return ExitCode::from(2);
        }
    }
    // Signals only set a flag here: the worker is told to stop, and the
    // cleanup below still runs. Handlers (unlike ignored signals) do not
    // survive exec, so the worker gets the default actions.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&stop)) {
            eprintln!("rsv2-bench: cannot handle signal {sig}: {e}");
            return ExitCode::from(2);
        }
    }

    // The harness reads these: our shim goes into the instance's bin/, where
    // containerd looks up io.containerd.rust.v2.
    std::env::set_var("SHIM_BIN", &config.shim);
    std::env::remove_var("IT_RUNTIME");
    eprintln!("rsv2-bench: starting a private containerd");
    let mut ctd = PrivateContainerd::start();
    // The null shim (built beside this binary) in containerd's PATH: the
    // start and exec rows' floor.
    let linked = cri::null_shim(&config.shim).and_then(|null| {
        std::os::unix::fs::symlink(&null, ctd.dir().join("bin").join(Runtime::Null.shim_binary_name()))
            .map_err(|e| format!("link the null shim: {e}"))
    });
    if let Err(e) = linked {
        eprintln!("rsv2-bench: {e}");
        return ExitCode::FAILURE;
    }
    if config.debug {
        // The harness writes no [debug] table; add one and restart on it.
        let path = ctd.dir().join("config.toml");
        let appended = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| {
                std::io::Write::write_all(&mut f, b"\n[debug]\n  level = \"debug\"\n")
            });
        if let Err(e) = appended {
            eprintln!("rsv2-bench: cannot enable debug in {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        ctd.restart();
    }

    let code = run_worker(&ctd, &config, &stop);

    if config.debug {
        let kept = config.out.join("containerd-debug.log");
        let copied = std::fs::create_dir_all(&config.out)
            .and_then(|()| std::fs::copy(ctd.dir().join("containerd.log"), &kept));
        match copied {
            Ok(_) => eprintln!("rsv2-bench: containerd's debug log: {}", kept.display()),
            Err(e) => eprintln!("rsv2-bench: cannot keep containerd's log: {e}"),
        }
    }
    eprintln!("rsv2-bench: cleaning up {}", ctd.dir().display());
    let shims_left = ctd.shims().len();
    if shims_left > 0 {
        eprintln!("rsv2-bench: {shims_left} shim(s) still running; the cleanup removes them");
    }
    drop(ctd);
    code
}

/// Runs the worker in its own process group and waits for it; returns the
/// exit code to report.
fn run_worker(ctd: &PrivateContainerd, config: &Config, stop: &AtomicBool) -> ExitCode {
    let ids = (0..config.ids_needed())
        .map(|_| ctd.unique_id("b"))
        .collect();
    let plan = Plan {
        config: config.clone(),
        socket: ctd.socket(),
        namespace: ctd.namespace().to_string(),
        dir: ctd.dir().to_path_buf(),
        rootfs: ctd.rootfs(),
        fifo_dir: ctd.dir().join("fifo"),
        ids,
    };
    let plan_path = ctd.dir().join("bench-plan.json");
    if let Err(e) = std::fs::write(&plan_path, serde_json::to_vec_pretty(&plan).unwrap()) {
        eprintln!("rsv2-bench: cannot write {}: {e}", plan_path.display());
        return ExitCode::FAILURE;
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("rsv2-bench: cannot find my own executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut child = match Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(PLAN_ENV, &plan_path)
        // Its own group: the worker and every ctr it started can be
        // signalled at once, and a terminal's ^C reaches only us.
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rsv2-bench: cannot start the worker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let group = Pid::from_raw(child.id() as i32);
    let mut told = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(e) => {
                eprintln!("rsv2-bench: waiting for the worker: {e}");
                break None;
            }
        }
        if stop.load(Ordering::SeqCst) && !told {
            eprintln!("rsv2-bench: interrupted; stopping the worker");
            let _ = killpg(group, Signal::SIGTERM);
            told = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Whatever the worker left running in its group (ctr clients) goes too.
    let _ = killpg(group, Signal::SIGKILL);
    match status {
        Some(s) if s.success() && !stop.load(Ordering::SeqCst) => ExitCode::SUCCESS,
        Some(s) => {
            match (s.code(), s.signal()) {
                (Some(c), _) => eprintln!("rsv2-bench: the worker exited with {c}"),
                (_, Some(sig)) => eprintln!("rsv2-bench: the worker died of signal {sig}"),
                _ => eprintln!("rsv2-bench: the worker failed: {s}"),
            }
            eprintln!("{}", ctd.log_tail(30));
            ExitCode::FAILURE
        }
        None => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn parses_options_and_counts_ids() {
        let c = Config::parse(&args("--runs 5 --idle 3 --only start,idle --out /tmp/r")).unwrap();
        assert_eq!((c.runs, c.idle, c.warmup), (5, 3, 2));
        assert_eq!(c.phases, vec![Phase::Start, Phase::Idle]);
        assert_eq!(c.out, PathBuf::from("/tmp/r"));
        assert_eq!(c.ids_needed(), 3 * (2 + 5) + 2 * 3);
        let d = Config::parse(&[]).unwrap();
        assert_eq!(d.ids_needed(), 3 * (2 + 100) + 3 + 2 * 20 + 2 * 3 * 100);
        assert!(Config::parse(&args("--runs")).is_err());
        assert!(Config::parse(&args("--runs 0")).is_err());
        assert!(Config::parse(&args("--only bogus")).is_err());
    }

    #[test]
    fn alternates_order() {
        assert_eq!(Runtime::order(0), [Runtime::Rust, Runtime::Runc]);
        assert_eq!(Runtime::order(1), [Runtime::Runc, Runtime::Rust]);
        // Over six rounds the null shim is first, middle and last twice,
        // and each of the pair goes first three times.
        let rounds: Vec<[Runtime; 3]> = (0..6).map(Runtime::order_with_null).collect();
        for pos in 0..3 {
            assert_eq!(rounds.iter().filter(|r| r[pos] == Runtime::Null).count(), 2);
        }
        let rust_before_runc = |r: &[Runtime; 3]| r.iter().position(|x| *x == Runtime::Rust) < r.iter().position(|x| *x == Runtime::Runc);
        assert_eq!(rounds.iter().filter(|r| rust_before_runc(r)).count(), 3);
    }
}
