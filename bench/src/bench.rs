//! The worker: the four measurements of issue #7, then the report.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::memory::{self, ShimUsage};
use crate::run::{timed, Ctr, Timed, CTR_TIMEOUT};
use crate::stats::Summary;
use crate::{plot, report, Config, Phase, Plan, Runtime};

/// A value per runtime. The null shim's is measured for the latency
/// phases only (the floor), and missing from results written before it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de> + Default"))]
pub struct PerRuntime<T> {
    pub rust: T,
    pub runc: T,
    #[serde(default)]
    pub null: T,
}

impl<T> PerRuntime<T> {
    pub fn get(&self, rt: Runtime) -> &T {
        match rt {
            Runtime::Rust => &self.rust,
            Runtime::Runc => &self.runc,
            Runtime::Null => &self.null,
        }
    }

    pub fn get_mut(&mut self, rt: Runtime) -> &mut T {
        match rt {
            Runtime::Rust => &mut self.rust,
            Runtime::Runc => &mut self.runc,
            Runtime::Null => &mut self.null,
        }
    }
}

/// Wall times of one kind of `ctr` call.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    pub samples_ms: Vec<f64>,
    pub failures: Vec<String>,
    pub summary: Option<Summary>,
    /// CPU time of the shim's side per measured run (execs only: one shim
    /// serves them all), ms; see [`memory::cpu_ms`].
    #[serde(default)]
    pub shim_cpu_ms: Option<f64>,
}

impl Latency {
    fn record(&mut self, id: &str, t: &Timed) {
        if t.ok() {
            self.samples_ms.push(t.wall_ms());
        } else {
            self.failures.push(format!("{id}: {}", t.failure()));
        }
        self.summary = Summary::of(&self.samples_ms);
    }
}

/// Idle shims of one runtime.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Idle {
    pub containers: usize,
    /// Shim server processes found for them.
    pub shims: usize,
    pub pss_mib: Option<Summary>,
    pub rss_mib: Option<Summary>,
    pub private_mib: Option<Summary>,
    pub threads: Option<Summary>,
    /// The shim of the first container.
    pub one: Option<ShimUsage>,
    pub all: Vec<ShimUsage>,
}

/// Throughput rounds of one runtime.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Throughput {
    /// Wall time of each round, s.
    pub rounds_s: Vec<f64>,
    pub summary: Option<Summary>,
    /// Wall time of each successful `ctr run` within the rounds, ms.
    pub per_container_ms: Option<Summary>,
    pub attempted: usize,
    pub succeeded: usize,
    pub failures: Vec<String>,
}

/// The machine and versions, for the report's header.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Environment {
    pub date_utc: String,
    pub kernel: String,
    pub cpus: usize,
    pub load_start: String,
    pub load_end: String,
    pub containerd: String,
    pub runc: String,
    pub runc_shim: String,
    pub shim: String,
    pub shim_built: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub env: Environment,
    pub config: Config,
    pub start: Option<PerRuntime<Latency>>,
    pub exec: Option<PerRuntime<Latency>>,
    pub idle: Option<PerRuntime<Idle>>,
    pub throughput: Option<PerRuntime<Throughput>>,
}

/// The container ids the supervisor handed out, used in order.
struct Ids(std::vec::IntoIter<String>);

impl Ids {
    fn next(&mut self) -> Result<String, String> {
        self.0
            .next()
            .ok_or_else(|| "ran out of container ids (bug in Config::ids_needed)".to_string())
    }

    fn take(&mut self, n: usize) -> Result<Vec<String>, String> {
        (0..n).map(|_| self.next()).collect()
    }
}

pub fn worker(plan_path: PathBuf) -> ExitCode {
    let plan: Plan = match std::fs::read(&plan_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "rsv2-bench worker: cannot read {}: {e}",
                plan_path.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let cfg = plan.config.clone();
    let ctr = Ctr::new(&plan);
    let mut ids = Ids(plan.ids.clone().into_iter());
    let mut results = Results {
        env: Environment::collect(&cfg.shim),
        config: cfg.clone(),
        start: None,
        exec: None,
        idle: None,
        throughput: None,
    };
    let mut failed = false;
    for phase in Phase::ALL.into_iter().filter(|p| cfg.has(*p)) {
        let outcome = match phase {
            Phase::Start => start_latency(&ctr, &cfg, &mut ids).map(|r| results.start = Some(r)),
            Phase::Exec => exec_latency(&ctr, &cfg, &mut ids).map(|r| results.exec = Some(r)),
            Phase::Idle => idle_memory(&ctr, &cfg, &mut ids).map(|r| results.idle = Some(r)),
            Phase::Throughput => {
                throughput(&ctr, &cfg, &mut ids).map(|r| results.throughput = Some(r))
            }
        };
        if let Err(e) = outcome {
            eprintln!("rsv2-bench: {phase:?} phase failed: {e}");
            failed = true;
        }
        if let Err(e) = wait_no_shims(&ctr, Duration::from_secs(20)) {
            eprintln!("rsv2-bench: {e}");
            failed = true;
        }
    }
    results.env.load_end = loadavg();

    let markdown = report::markdown(&results);
    println!("{markdown}");
    if let Err(e) = write_outputs(&cfg.out, &results, &markdown) {
        eprintln!("rsv2-bench: {e}");
        failed = true;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// What `DIR/results.json` holds: `None` if there is none.
fn load(dir: &Path) -> Result<Option<Results>, String> {
    let path = dir.join("results.json");
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| format!("cannot read {}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// `--replot DIR`: the report and plot again from `DIR/results.json`.
pub fn replot(dir: &Path) -> ExitCode {
    let results = match load(dir) {
        Ok(Some(r)) => r,
        Ok(None) => {
            eprintln!("rsv2-bench: {} has no results.json", dir.display());
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("rsv2-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let markdown = report::markdown(&results);
    println!("{markdown}");
    match write_outputs(dir, &results, &markdown) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rsv2-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Redraws `results.png` after a CRI run wrote `cri.json` beside a `ctr`
/// run's `results.json` (nothing to draw without one).
pub fn redraw(dir: &Path) -> Result<(), String> {
    let Some(results) = load(dir)? else { return Ok(()) };
    let cri = crate::cri::CriResults::load(dir)?;
    plot::render(&results, cri.as_ref(), &dir.join("results.png"))?;
    eprintln!("rsv2-bench: redrew {}/results.png", dir.display());
    Ok(())
}

fn write_outputs(out: &Path, results: &Results, markdown: &str) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("mkdir {}: {e}", out.display()))?;
    let write = |name: &str, bytes: &[u8]| {
        let path = out.join(name);
        std::fs::write(&path, bytes).map_err(|e| format!("write {}: {e}", path.display()))
    };
    write("results.md", markdown.as_bytes())?;
    write(
        "results.json",
        &serde_json::to_vec_pretty(results).expect("serialize results"),
    )?;
    let png = out.join("results.png");
    let cri = crate::cri::CriResults::load(out)?;
    plot::render(results, cri.as_ref(), &png)?;
    eprintln!(
        "rsv2-bench: wrote {}/results.{{md,json,png}}",
        out.display()
    );
    Ok(())
}

/// Issue #7's start latency: `ctr run --rm ... /bin/true`, rust and runc
/// alternating run by run, which goes first alternating too (rust, runc,
/// runc, rust, …): each runtime follows itself as often as the other, so
/// neither always runs in the other's wake (its exited shim's teardown,
/// containerd's garbage collection). The null shim's run (its `true`
/// exits as it starts) rotates through the rounds as the floor (#19).
fn start_latency(ctr: &Ctr, cfg: &Config, ids: &mut Ids) -> Result<PerRuntime<Latency>, String> {
    eprintln!(
        "== start latency: {} runs per runtime after {} warm-up",
        cfg.runs, cfg.warmup
    );
    let mut lat = PerRuntime::<Latency>::default();
    for i in 0..cfg.warmup + cfg.runs {
        let mut line = Vec::new();
        for rt in Runtime::order_with_null(i) {
            let id = ids.next()?;
            let t = timed(
                ctr.run_command("--rm", rt, &id, &["/bin/true"]),
                CTR_TIMEOUT,
            )?;
            if !t.ok() {
                eprintln!("   {} {id} failed: {}", rt.name(), t.failure());
                let _ = ctr.remove(&id);
            }
            if i >= cfg.warmup {
                lat.get_mut(rt).record(&id, &t);
            }
            line.push(format!("{} {:6.1} ms", rt.name(), t.wall_ms()));
        }
        let tag = if i < cfg.warmup { "warm-up" } else { "run" };
        eprintln!("   {tag} {:>2}: {}", i + 1, line.join("  "));
    }
    Ok(lat)
}

/// Issue #7's exec latency: `ctr task exec` of /bin/true into one running
/// container per runtime, alternating as [`start_latency`] does, the null
/// shim's too.
fn exec_latency(ctr: &Ctr, cfg: &Config, ids: &mut Ids) -> Result<PerRuntime<Latency>, String> {
    eprintln!(
        "== exec latency: {} runs per runtime after {} warm-up",
        cfg.runs, cfg.warmup
    );
    let targets = PerRuntime {
        rust: ids.next()?,
        runc: ids.next()?,
        null: ids.next()?,
    };
    const ALL: [Runtime; 3] = [Runtime::Rust, Runtime::Runc, Runtime::Null];
    let measure = || -> Result<PerRuntime<Latency>, String> {
        for rt in ALL {
            start_detached(ctr, rt, targets.get(rt))?;
        }
        let mut lat = PerRuntime::<Latency>::default();
        let mut cpu_before = PerRuntime::<Option<(u32, f64)>>::default();
        for i in 0..cfg.warmup + cfg.runs {
            if i == cfg.warmup {
                for rt in ALL {
                    *cpu_before.get_mut(rt) = shim_cpu(ctr, rt, targets.get(rt));
                }
            }
            let mut line = Vec::new();
            for rt in Runtime::order_with_null(i) {
                let id = targets.get(rt);
                let exec_id = format!("e{i}");
                let t = timed(ctr.exec_command(id, &exec_id, &["/bin/true"]), CTR_TIMEOUT)?;
                if !t.ok() {
                    eprintln!("   {} exec {exec_id} failed: {}", rt.name(), t.failure());
                }
                if i >= cfg.warmup {
                    lat.get_mut(rt).record(&format!("{id} {exec_id}"), &t);
                }
                line.push(format!("{} {:6.1} ms", rt.name(), t.wall_ms()));
            }
            let tag = if i < cfg.warmup { "warm-up" } else { "run" };
            eprintln!("   {tag} {:>2}: {}", i + 1, line.join("  "));
        }
        for rt in ALL {
            let after = shim_cpu(ctr, rt, targets.get(rt));
            lat.get_mut(rt).shim_cpu_ms = match (*cpu_before.get(rt), after) {
                // The same shim process before and after.
                (Some((pid, a)), Some((pid2, b))) if pid == pid2 => Some((b - a) / cfg.runs as f64),
                _ => None,
            };
        }
        Ok(lat)
    };
    let result = measure();
    let cleanup = remove_all(ctr, &[targets.rust.clone(), targets.runc.clone(), targets.null.clone()]);
    let lat = result?;
    cleanup?;
    Ok(lat)
}

/// Issue #7's idle memory: `idle` detached `sleep 1000` containers, each in
/// its own shim, for one runtime at a time; PSS, RSS, USS and threads of
/// every shim server from procfs.
fn idle_memory(ctr: &Ctr, cfg: &Config, ids: &mut Ids) -> Result<PerRuntime<Idle>, String> {
    eprintln!(
        "== idle memory: {} idle containers (one shim each) per runtime",
        cfg.idle
    );
    let mut out = PerRuntime::<Idle>::default();
    for rt in Runtime::BOTH {
        let batch = ids.take(cfg.idle)?;
        let measure = || -> Result<Idle, String> {
            for id in &batch {
                start_detached(ctr, rt, id)?;
            }
            std::thread::sleep(Duration::from_millis(cfg.settle_ms));
            let wanted: HashSet<String> = batch.iter().cloned().collect();
            let servers = memory::shim_servers(rt, &ctr.socket(), ctr.namespace(), &wanted);
            let mut usages: Vec<(String, ShimUsage)> = servers
                .iter()
                .filter_map(|p| Some((p.flag("-id")?.to_string(), memory::usage(p.pid)?)))
                .collect();
            // In the order the containers were started, so `one` is the first.
            usages.sort_by_key(|(id, _)| batch.iter().position(|b| b == id));
            let all: Vec<ShimUsage> = usages.into_iter().map(|(_, u)| u).collect();
            if all.is_empty() {
                return Err(format!("no {} shim server found", rt.shim_binary_name()));
            }
            let mib = |f: fn(&ShimUsage) -> u64| -> Vec<f64> {
                all.iter().map(|u| f(u) as f64 / 1024.0).collect()
            };
            let idle = Idle {
                containers: batch.len(),
                shims: all.len(),
                pss_mib: Summary::of(&mib(|u| u.pss_kib)),
                rss_mib: Summary::of(&mib(|u| u.rss_kib)),
                private_mib: Summary::of(&mib(|u| u.private_kib)),
                threads: Summary::of(&all.iter().map(|u| u.threads as f64).collect::<Vec<_>>()),
                one: all.first().copied(),
                all,
            };
            eprintln!(
                "   {}: {} shims, PSS mean {:.2} MiB, RSS {:.2} MiB and {} threads in the first",
                rt.name(),
                idle.shims,
                idle.pss_mib.map_or(0.0, |s| s.mean),
                idle.one.map_or(0.0, |u| u.rss_kib as f64 / 1024.0),
                idle.one.map_or(0, |u| u.threads),
            );
            if idle.shims != idle.containers {
                return Err(format!(
                    "{} containers but {} {} servers: each container should have its own shim",
                    idle.containers,
                    idle.shims,
                    rt.shim_binary_name()
                ));
            }
            Ok(idle)
        };
        let result = measure();
        let cleanup = remove_all(ctr, &batch);
        *out.get_mut(rt) = result?;
        cleanup?;
        wait_no_shims(ctr, Duration::from_secs(20))?;
    }
    Ok(out)
}

/// Issue #7's throughput: `containers` × `ctr run --rm ... /bin/true`,
/// `concurrency` at a time; `rounds` per runtime, alternating which runtime
/// goes first.
fn throughput(ctr: &Ctr, cfg: &Config, ids: &mut Ids) -> Result<PerRuntime<Throughput>, String> {
    eprintln!(
        "== throughput: {} containers, {} at a time, {} round(s) per runtime",
        cfg.containers, cfg.concurrency, cfg.rounds
    );
    let mut out = PerRuntime::<Throughput>::default();
    let mut per_container = PerRuntime::<Vec<f64>>::default();
    for round in 0..cfg.rounds {
        for rt in Runtime::order(round) {
            let batch = ids.take(cfg.containers)?;
            let next = AtomicUsize::new(0);
            let done: Mutex<Vec<(usize, Result<Timed, String>)>> = Mutex::new(Vec::new());
            let t0 = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..cfg.concurrency.min(batch.len()) {
                    s.spawn(|| loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(id) = batch.get(i) else { break };
                        let t = timed(ctr.run_command("--rm", rt, id, &["/bin/true"]), CTR_TIMEOUT);
                        done.lock().unwrap().push((i, t));
                    });
                }
            });
            let wall = t0.elapsed().as_secs_f64();
            let done = done.into_inner().unwrap();
            let tp = out.get_mut(rt);
            let mut failed_ids = Vec::new();
            for (i, t) in &done {
                tp.attempted += 1;
                match t {
                    Ok(t) if t.ok() => {
                        tp.succeeded += 1;
                        per_container.get_mut(rt).push(t.wall_ms());
                    }
                    Ok(t) => {
                        tp.failures.push(format!("{}: {}", batch[*i], t.failure()));
                        failed_ids.push(batch[*i].clone());
                    }
                    Err(e) => {
                        tp.failures.push(format!("{}: {e}", batch[*i]));
                        failed_ids.push(batch[*i].clone());
                    }
                }
            }
            tp.rounds_s.push(wall);
            tp.summary = Summary::of(&tp.rounds_s);
            eprintln!(
                "   round {}: {} {:.2} s, {} of {} failed",
                round + 1,
                rt.name(),
                wall,
                failed_ids.len(),
                batch.len()
            );
            if !failed_ids.is_empty() {
                remove_all(ctr, &failed_ids)?;
            }
            wait_no_shims(ctr, Duration::from_secs(30))?;
        }
    }
    for rt in Runtime::BOTH {
        out.get_mut(rt).per_container_ms = Summary::of(per_container.get(rt));
    }
    Ok(out)
}

/// The pid and CPU time (ms, reaped children included) of the shim server
/// of container `id`.
fn shim_cpu(ctr: &Ctr, rt: Runtime, id: &str) -> Option<(u32, f64)> {
    let wanted: HashSet<String> = [id.to_string()].into();
    let servers = memory::shim_servers(rt, &ctr.socket(), ctr.namespace(), &wanted);
    let [server] = servers.as_slice() else { return None };
    Some((server.pid, memory::cpu_ms(server.pid)?))
}

/// `ctr run -d ... ID sleep 1000`; on failure the container record ctr
/// leaves behind is removed.
fn start_detached(ctr: &Ctr, rt: Runtime, id: &str) -> Result<(), String> {
    let t = timed(
        ctr.run_command("-d", rt, id, &["/bin/sleep", "1000"]),
        CTR_TIMEOUT,
    )?;
    if t.ok() {
        Ok(())
    } else {
        let _ = ctr.remove(id);
        Err(format!(
            "`ctr run -d --runtime {} ... {id} /bin/sleep 1000` failed: {}",
            rt.runtime_type(),
            t.failure()
        ))
    }
}

/// Deletes the tasks and containers `ids` that exist; the first error is
/// returned after trying all of them.
fn remove_all(ctr: &Ctr, ids: &[String]) -> Result<(), String> {
    let wanted: HashSet<&String> = ids.iter().collect();
    let tasks = ctr.tasks()?;
    let mut first_err = None;
    for t in tasks.iter().filter(|t| wanted.contains(t)) {
        if let Err(e) = ctr.ok(&["task", "delete", "--force", t]) {
            first_err.get_or_insert(e);
        }
    }
    for c in ctr.containers()?.iter().filter(|c| wanted.contains(c)) {
        if let Err(e) = ctr.ok(&["containers", "rm", c]) {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Waits until no shim of the instance runs (a shim exits a little after
/// `ctr` returned), so a phase starts on a quiet containerd.
fn wait_no_shims(ctr: &Ctr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let shims = memory::instance_shims(&ctr.socket());
        if shims.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} shim(s) still running after {timeout:?}: {}",
                shims.len(),
                shims
                    .iter()
                    .map(|p| format!("{} ({})", p.pid, p.command()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// First line of a command's stdout, or "" if it cannot run.
fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_default()
}

impl Environment {
    fn collect(shim: &Path) -> Environment {
        let shim_s = shim.display().to_string();
        Environment {
            date_utc: first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            kernel: first_line("uname", &["-r"]),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            load_start: loadavg(),
            load_end: String::new(),
            containerd: first_line("containerd", &["--version"]),
            runc: first_line("runc", &["--version"]),
            runc_shim: first_line("dpkg-query", &["-W", "-f", "${Version}", "containerd"]),
            shim_built: first_line("date", &["-u", "-r", &shim_s, "+%Y-%m-%d %H:%M UTC"]),
            shim: shim_s,
        }
    }
}
