//! `rsv2-bench --cri`: the Kubernetes path (issue #19). One private
//! containerd with the CRI plugin (the integration tests' CriContainerd and
//! their CRI client, so no client process start is measured) and three
//! runtime handlers: `rust` (ours), `runc` (runc's shim + runc) and `null`
//! (bench/src/null_shim.rs, which runs no container: the floor containerd
//! and the client impose). Each pod is timed call by call:
//! RunPodSandbox, CreateContainer + StartContainer (busybox `sleep`),
//! ExecSync (`true`), StopPodSandbox + RemovePodSandbox, and the whole.
//! The handlers take turns pod by pod, the first rotating. Every figure is
//! also given as the overhead above the null shim.
//!
//! A single process: the harness's Drop removes the pods, shims, mounts
//! and cgroups, on a panic too (the workspace unwinds).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use integration_tests::cri::{CriContainerd, CriOptions, Pod};

use crate::stats::Summary;

pub const HANDLERS: [&str; 3] = ["rust", "runc", "null"];
pub const STEPS: [&str; 5] = ["RunPodSandbox", "CreateContainer + StartContainer", "ExecSync", "StopPodSandbox + RemovePodSandbox", "whole lifecycle"];

/// Issue #19's goals: our overhead above the null shim at most this share
/// of runc's (CRI lifecycle, start, exec); the whole CRI lifecycle at most
/// this ratio of runc's; our shim's PSS per pod at 100 pods.
pub const OVERHEAD_GOAL: f64 = 1.0 / 3.0;
pub const LIFECYCLE_RATIO_GOAL: f64 = 0.6;
pub const POD_PSS_GOAL_MIB: f64 = 0.4;

/// Samples (ms) per handler and step.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CriResults {
    pub pods: usize,
    pub warmup: usize,
    /// handler → step → samples.
    pub samples: Vec<(String, Vec<Vec<f64>>)>,
    pub containerd: String,
    /// Density: handler → what `density_pods` pods cost.
    #[serde(default)]
    pub density: Vec<(String, Density)>,
    #[serde(default)]
    pub density_pods: usize,
    /// Concurrent starts: handler → wall seconds of each round.
    #[serde(default)]
    pub burst: Vec<(String, Vec<f64>)>,
    /// Pods per round, and how many at a time.
    #[serde(default)]
    pub burst_pods: usize,
    #[serde(default)]
    pub burst_concurrency: usize,
}

/// Memory of many pods at once, per pod.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Density {
    /// Summed PSS of the shim servers, KiB per pod.
    pub shim_pss_kib: f64,
    /// Summed PSS of the pause processes, KiB per pod.
    pub pause_pss_kib: f64,
    /// MemAvailable before minus after, KiB per pod.
    pub mem_available_kib: f64,
    pub shims: usize,
}

impl CriResults {
    /// What a results directory's `cri.json` holds, if it has one.
    pub fn load(dir: &Path) -> Result<Option<CriResults>, String> {
        let path = dir.join("cri.json");
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    pub fn summary(&self, handler: &str, step: usize) -> Option<Summary> {
        let (_, steps) = self.samples.iter().find(|(h, _)| h == handler)?;
        Summary::of(steps.get(step)?)
    }

    fn median(&self, handler: &str, step: usize) -> Option<f64> {
        self.summary(handler, step).map(|s| s.median)
    }

    pub fn density_of(&self, handler: &str) -> Option<&Density> {
        self.density.iter().find(|(h, _)| h == handler).map(|(_, d)| d)
    }

    /// The table: medians per handler, ours against runc's, and each
    /// runtime's overhead above the null shim.
    pub fn markdown(&self) -> String {
        let mut t = format!(
            "CRI pod lifecycle, {} pods per handler after {} warm-up pods each, {}; median ms per pod\n\n\
             | step | ours | runc's shim | null shim | ours / runc | our overhead | runc's overhead | ours / runc's overhead |\n|---|---|---|---|---|---|---|---|\n",
            self.pods, self.warmup, self.containerd
        );
        for (i, step) in STEPS.iter().enumerate() {
            let cells = against_null(self.median("rust", i), self.median("runc", i), self.median("null", i), 1);
            t.push_str(&format!("| {step} | {cells} |\n"));
        }
        if !self.burst.is_empty() {
            let median = |h: &str| self.burst.iter().find(|(n, _)| n == h).and_then(|(_, v)| Summary::of(v)).map(|s| s.median);
            t.push_str(&format!(
                "\n{} pods (RunPodSandbox, CreateContainer, StartContainer), {} at a time, median wall s of {} rounds\n\n| ours | runc's shim | null shim | ours / runc | our overhead | runc's overhead | ours / runc's overhead |\n|---|---|---|---|---|---|---|\n| {} |\n",
                self.burst_pods,
                self.burst_concurrency,
                self.burst.first().map(|(_, v)| v.len()).unwrap_or(0),
                against_null(median("rust"), median("runc"), median("null"), 2)
            ));
        }
        if !self.density.is_empty() {
            t.push_str(&format!(
                "\n{} pods with one container each, all running at once; per pod\n\n| | shim PSS (MiB) | pause PSS (MiB) | MemAvailable used (MiB) | shim servers |\n|---|---|---|---|---|\n",
                self.density_pods
            ));
            for (h, d) in &self.density {
                let name = match h.as_str() {
                    "rust" => "ours",
                    "runc" => "runc's shim",
                    other => other,
                };
                t.push_str(&format!("| {name} | {:.2} | {:.2} | {:.2} | {} |\n", d.shim_pss_kib / 1024.0, d.pause_pss_kib / 1024.0, d.mem_available_kib / 1024.0, d.shims));
            }
        }
        t
    }
}

/// The cells of one row: the three medians (`digits` decimals), ours over
/// runc's, each runtime's overhead above the null shim, and ours over
/// runc's overhead.
pub fn against_null(rust: Option<f64>, runc: Option<f64>, null: Option<f64>, digits: usize) -> String {
    let v = |x: Option<f64>| x.map(|x| format!("{x:.digits$}")).unwrap_or_else(|| "-".into());
    let r = |x: Option<f64>| x.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
    let over = |x: Option<f64>| x.zip(null).map(|(x, n)| x - n);
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b);
    [v(rust), v(runc), v(null), r(ratio(rust, runc)), v(over(rust)), v(over(runc)), r(ratio(over(rust), over(runc)))].join(" | ")
}

fn mem_available_kib() -> f64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines().find_map(|l| l.strip_prefix("MemAvailable:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0.0)
}

fn pss_kib(pid: u32) -> f64 {
    crate::memory::usage(pid).map(|u| u.pss_kib as f64).unwrap_or(0.0)
}

/// `n` pods of `handler` started `concurrency` at a time (each thread its
/// own pods in turn): the wall time until all run, s. Then every pod is
/// removed (not timed).
fn burst(cri: &CriContainerd, handler: &str, n: usize, concurrency: usize, round: usize) -> Result<f64, String> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let made = std::sync::Mutex::new(Vec::new());
    let t0 = Instant::now();
    let errors: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                s.spawn(|| -> Result<(), String> {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if i >= n {
                            return Ok(());
                        }
                        let pod = run_pod(cri, handler, cri.pod_config(&format!("t{round}-{i}-{handler}")))?;
                        made.lock().unwrap_or_else(|e| e.into_inner()).push(pod.id.clone());
                        start_sleeper(cri, handler, &pod)?;
                    }
                })
            })
            .collect();
        workers.into_iter().filter_map(|w| w.join().unwrap_or_else(|_| Err("a worker panicked".into())).err()).collect()
    });
    let wall = t0.elapsed().as_secs_f64();
    remove_pods(cri, &made.into_inner().unwrap_or_default());
    match errors.first() {
        Some(e) => Err(e.clone()),
        None => Ok(wall),
    }
}

/// `n` pods of `handler` at once: their shims' and pause processes' PSS
/// and the node's MemAvailable, per pod, then every pod removed.
fn density(cri: &CriContainerd, handler: &str, n: usize) -> Result<Density, String> {
    let settle = || std::thread::sleep(std::time::Duration::from_secs(3));
    settle();
    let before = mem_available_kib();
    let mut pods = Vec::with_capacity(n);
    let result = (|| {
        for i in 0..n {
            let pod = run_pod(cri, handler, cri.pod_config(&format!("d{i}-{handler}")))?;
            pods.push(pod.id.clone());
            start_sleeper(cri, handler, &pod)?;
        }
        // Past the 2 s after which an idle shim of ours ends its workers.
        settle();
        let after = mem_available_kib();
        let socket = cri.ctd().socket().display().to_string();
        let binary = format!("containerd-shim-{handler}-v2");
        let shims: Vec<u32> = crate::memory::instance_shims(&socket)
            .into_iter()
            .filter(|p| p.cmdline[0].rsplit('/').next() == Some(binary.as_str()) && !p.cmdline.iter().any(|a| a == "start" || a == "delete"))
            .map(|p| p.pid)
            .collect();
        let pause: f64 = pods.iter().map(|id| pss_kib(cri.pod_pid(id))).sum();
        let per = |v: f64| v / n as f64;
        Ok(Density { shim_pss_kib: per(shims.iter().map(|p| pss_kib(*p)).sum()), pause_pss_kib: per(pause), mem_available_kib: per(before - after), shims: shims.len() })
    })();
    remove_pods(cri, &pods);
    result
}

/// RunPodSandbox under `handler`.
fn run_pod(cri: &CriContainerd, handler: &str, config: integration_tests::cri::PodSandboxConfig) -> Result<Pod, String> {
    let id = cri.try_run_pod_with_handler(&config, handler).map_err(|e| format!("{handler}: RunPodSandbox: {}", e.message()))?;
    Ok(Pod { id, config })
}

/// CreateContainer and StartContainer of a busybox `sleep` in `pod`: its id.
fn start_sleeper(cri: &CriContainerd, handler: &str, pod: &Pod) -> Result<String, String> {
    let id = cri.try_create_container(pod, &cri.container_config("c", &["sleep", "1000"])).map_err(|e| format!("{handler}: CreateContainer: {}", e.message()))?;
    cri.try_start_container(&id).map_err(|e| format!("{handler}: StartContainer: {}", e.message()))?;
    Ok(id)
}

/// Teardown after a measurement, whatever failed.
fn remove_pods(cri: &CriContainerd, ids: &[String]) {
    for id in ids {
        let _ = cri.try_stop_pod(id);
        let _ = cri.try_remove_pod(id);
    }
}

/// The null shim next to this binary (cargo builds both), linked as our
/// shim `ours` is: a floor loaded by ld.so where ours is static is no
/// floor (under the VM's TCG, a dynamic null shim's start took 540 ms
/// against our static shim's 405).
pub fn null_shim(ours: &Path) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let p = exe.with_file_name("containerd-shim-null-v2");
    if !p.is_file() {
        return Err(format!("{} is missing: build it with `cargo build --release -p rsv2-bench`", p.display()));
    }
    let (null_dynamic, ours_dynamic) = (integration_tests::image::is_dynamic(&p)?, integration_tests::image::is_dynamic(ours)?);
    if null_dynamic != ours_dynamic {
        let link = |dynamic: bool| if dynamic { "dynamically" } else { "statically" };
        return Err(format!(
            "{} is linked {} and our shim {} {}: build the null shim as the shim is, e.g. `cargo rustc --release -p rsv2-bench --bin containerd-shim-null-v2 -- -C target-feature=+crt-static -C relocation-model=static` (after `cargo build`, which would rebuild it)",
            p.display(),
            link(null_dynamic),
            ours.display(),
            link(ours_dynamic)
        ));
    }
    Ok(p)
}

/// One pod's lifecycle under `handler`: the time of each step, ms.
fn one_pod(cri: &CriContainerd, handler: &str, name: &str) -> Result<[f64; 5], String> {
    let config = cri.pod_config(name);
    let t0 = Instant::now();
    let pod = run_pod(cri, handler, config)?;
    let t1 = Instant::now();
    let id = start_sleeper(cri, handler, &pod)?;
    let t2 = Instant::now();
    let out = cri.try_exec_sync(&id, &["true"], 30).map_err(|e| format!("{handler}: ExecSync: {}", e.message()))?;
    if out.exit_code != 0 {
        return Err(format!("{handler}: ExecSync true exited {}", out.exit_code));
    }
    let t3 = Instant::now();
    cri.try_stop_pod(&pod.id).map_err(|e| format!("{handler}: StopPodSandbox: {}", e.message()))?;
    cri.try_remove_pod(&pod.id).map_err(|e| format!("{handler}: RemovePodSandbox: {}", e.message()))?;
    let t4 = Instant::now();
    let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
    Ok([ms(t0, t1), ms(t1, t2), ms(t2, t3), ms(t3, t4), ms(t0, t4)])
}

/// What `--cri` measures.
pub struct CriPlan {
    pub pods: usize,
    pub warmup: usize,
    pub density_pods: usize,
    pub burst_pods: usize,
    pub burst_concurrency: usize,
    pub burst_rounds: usize,
}

pub fn run(plan: &CriPlan, shim: &Path, out: &Path) -> Result<CriResults, String> {
    let CriPlan { pods, warmup, density_pods, .. } = *plan;
    let null = null_shim(shim)?;
    let cri = CriContainerd::start_with(CriOptions {
        extra_toml: "\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.null]\n  runtime_type = \"io.containerd.null.v2\"\n".into(),
        files: Vec::new(),
    });
    // containerd looks the shim up on its PATH, whose first entry is the
    // instance's bin/ (where the harness put ours).
    std::os::unix::fs::symlink(&null, cri.ctd().dir().join("bin/containerd-shim-null-v2")).map_err(|e| format!("link the null shim: {e}"))?;
    let mut samples: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); STEPS.len()]; HANDLERS.len()];
    for round in 0..warmup + pods {
        for k in 0..HANDLERS.len() {
            let h = (round + k) % HANDLERS.len();
            let times = one_pod(&cri, HANDLERS[h], &format!("b{round}-{}", HANDLERS[h]))?;
            if round >= warmup {
                for (s, t) in times.iter().enumerate() {
                    samples[h][s].push(*t);
                }
            }
        }
    }
    let mut results = CriResults {
        pods,
        warmup,
        samples: HANDLERS.iter().map(|h| h.to_string()).zip(samples).collect(),
        containerd: format!("containerd {}", cri.ctd().flavor().name),
        density: Vec::new(),
        density_pods,
        burst: Vec::new(),
        burst_pods: plan.burst_pods,
        burst_concurrency: plan.burst_concurrency,
    };
    if plan.burst_pods > 0 {
        let mut walls: Vec<Vec<f64>> = vec![Vec::new(); HANDLERS.len()];
        for round in 0..plan.burst_rounds {
            for k in 0..HANDLERS.len() {
                let h = (round + k) % HANDLERS.len();
                walls[h].push(burst(&cri, HANDLERS[h], plan.burst_pods, plan.burst_concurrency, round)?);
            }
        }
        results.burst = HANDLERS.iter().map(|h| h.to_string()).zip(walls).collect();
    }
    if density_pods > 0 {
        for h in ["rust", "runc"] {
            results.density.push((h.to_string(), density(&cri, h, density_pods)?));
        }
    }
    std::fs::create_dir_all(out).map_err(|e| format!("mkdir {}: {e}", out.display()))?;
    std::fs::write(out.join("cri.json"), serde_json::to_vec_pretty(&results).expect("serialize")).map_err(|e| e.to_string())?;
    std::fs::write(out.join("cri.md"), results.markdown()).map_err(|e| e.to_string())?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_overheads_above_the_null_shim() {
        let s = |v: f64| vec![vec![v; 3]; STEPS.len()];
        let d = Density { shim_pss_kib: 307.2, pause_pss_kib: 102.4, mem_available_kib: 2048.0, shims: 100 };
        let r = CriResults { pods: 3, warmup: 1, samples: vec![("rust".into(), s(30.0)), ("runc".into(), s(50.0)), ("null".into(), s(20.0))], containerd: "containerd 1.6".into(), density: vec![("rust".into(), d)], density_pods: 100, burst: vec![("rust".into(), vec![1.0]), ("runc".into(), vec![2.0]), ("null".into(), vec![0.5])], burst_pods: 50, burst_concurrency: 10 };
        assert!(r.markdown().contains("| 1.00 | 2.00 | 0.50 | 0.50 | 0.50 | 1.50 | 0.33 |"), "{}", r.markdown());
        let t = r.markdown();
        assert!(t.contains("| ours | 0.30 | 0.10 | 2.00 | 100 |"), "{t}");
        // ours 30, runc 50, null 20: overheads 10 and 30, a third.
        assert!(t.contains("| RunPodSandbox | 30.0 | 50.0 | 20.0 | 0.60 | 10.0 | 30.0 | 0.33 |"), "{t}");
    }
}
