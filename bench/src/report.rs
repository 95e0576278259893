//! The markdown report.

use std::fmt::Write;

use crate::bench::{Idle, Latency, PerRuntime, Results, Throughput};
use crate::stats::{ratio, ratio_interval, Summary};
use crate::Runtime;

/// Target of issue #7 for rust/runc ratios.
pub const RATIO_TARGET: f64 = 0.5;
/// Target of issue #7 for the mean PSS of an idle shim, MiB.
pub const PSS_TARGET_MIB: f64 = 0.5;

/// `median (min–max)` with `digits` decimals.
pub fn cell(s: Option<Summary>, digits: usize) -> String {
    match s {
        Some(s) => format!("{:.d$} ({:.d$}–{:.d$})", s.median, s.min, s.max, d = digits),
        None => "–".to_string(),
    }
}

fn ratio_cell(r: Option<f64>) -> String {
    r.map_or("–".to_string(), |r| format!("{r:.2}"))
}

/// Bootstrap resamples behind a latency ratio's 95% interval.
const BOOTSTRAP_ROUNDS: usize = 2000;

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "–",
    }
}

fn medians<T>(p: &PerRuntime<T>, f: impl Fn(&T) -> Option<Summary>) -> (Option<f64>, Option<f64>) {
    (f(&p.rust).map(|s| s.median), f(&p.runc).map(|s| s.median))
}

/// One table row: metric, rust, runc, rust/runc, target, met.
struct Row([String; 6]);

fn latency_row(name: &str, p: &PerRuntime<Latency>) -> Row {
    let (a, b) = medians(p, |l| l.summary);
    let r = ratio(a, b);
    let failures = p.rust.failures.len() + p.runc.failures.len();
    let mut metric = name.to_string();
    if failures > 0 {
        let _ = write!(
            metric,
            " ({} rust / {} runc runs failed)",
            p.rust.failures.len(),
            p.runc.failures.len()
        );
    }
    let interval = ratio_interval(&p.rust.samples_ms, &p.runc.samples_ms, BOOTSTRAP_ROUNDS);
    let ratio_text = match (r, interval) {
        (Some(r), Some((lo, hi))) => format!("{r:.2} ({lo:.2}–{hi:.2})"),
        _ => ratio_cell(r),
    };
    Row([
        metric,
        cell(p.rust.summary, 1),
        cell(p.runc.summary, 1),
        ratio_text,
        format!("≤ {RATIO_TARGET}× runc"),
        verdict(r.map(|r| r <= RATIO_TARGET && p.rust.failures.is_empty())).into(),
    ])
}

fn throughput_rows(p: &PerRuntime<Throughput>, containers: usize, concurrency: usize) -> Vec<Row> {
    let (a, b) = medians(p, |t| t.summary);
    let r = ratio(a, b);
    let all_ok = |t: &Throughput| t.attempted > 0 && t.succeeded == t.attempted;
    let ok_cell = |t: &Throughput| format!("{}/{}", t.succeeded, t.attempted);
    let (pa, pb) = medians(p, |t| t.per_container_ms);
    vec![
        Row([
            format!("Throughput: {containers} × `ctr run --rm`, {concurrency} at a time, wall (s)"),
            cell(p.rust.summary, 2),
            cell(p.runc.summary, 2),
            ratio_cell(r),
            format!("≤ {RATIO_TARGET}× runc"),
            verdict(r.map(|r| r <= RATIO_TARGET)).into(),
        ]),
        Row([
            "Throughput: runs that exited 0".into(),
            ok_cell(&p.rust),
            ok_cell(&p.runc),
            "".into(),
            "all".into(),
            verdict(Some(all_ok(&p.rust))).into(),
        ]),
        Row([
            "Throughput: one `ctr run --rm` under that load (ms)".into(),
            cell(p.rust.per_container_ms, 0),
            cell(p.runc.per_container_ms, 0),
            ratio_cell(ratio(pa, pb)),
            "".into(),
            "".into(),
        ]),
    ]
}

fn idle_rows(p: &PerRuntime<Idle>) -> Vec<Row> {
    let mean = |i: &Idle| i.pss_mib.map(|s| s.mean);
    let pss = |i: &Idle| match i.pss_mib {
        Some(s) => format!("{:.2} ({:.2}–{:.2})", s.mean, s.min, s.max),
        None => "–".into(),
    };
    let one_rss = |i: &Idle| match (i.one, i.rss_mib) {
        (Some(u), Some(s)) => format!(
            "{:.2} (all: {:.2}–{:.2})",
            u.rss_kib as f64 / 1024.0,
            s.min,
            s.max
        ),
        _ => "–".into(),
    };
    let one_threads = |i: &Idle| match (i.one, i.threads) {
        (Some(u), Some(s)) => format!("{} (all: {}–{})", u.threads, s.min, s.max),
        _ => "–".into(),
    };
    let uss = |i: &Idle| match i.private_mib {
        Some(s) => format!("{:.2} ({:.2}–{:.2})", s.mean, s.min, s.max),
        None => "–".into(),
    };
    let n = p.rust.containers.max(p.runc.containers);
    let rss = |i: &Idle| i.one.map(|u| u.rss_kib as f64);
    let threads = |i: &Idle| i.one.map(|u| u.threads as f64);
    vec![
        Row([
            format!("Idle PSS per shim, mean (min–max) of {n} shims (MiB)"),
            pss(&p.rust),
            pss(&p.runc),
            ratio_cell(ratio(mean(&p.rust), mean(&p.runc))),
            format!("≤ {PSS_TARGET_MIB} MiB"),
            verdict(
                mean(&p.rust).map(|m| m <= PSS_TARGET_MIB && p.rust.shims == p.rust.containers),
            )
            .into(),
        ]),
        Row([
            "Idle private memory (USS) per shim, mean (min–max) (MiB)".into(),
            uss(&p.rust),
            uss(&p.runc),
            ratio_cell(ratio(
                p.rust.private_mib.map(|s| s.mean),
                p.runc.private_mib.map(|s| s.mean),
            )),
            "".into(),
            "".into(),
        ]),
        Row([
            "RSS of one idle shim (MiB)".into(),
            one_rss(&p.rust),
            one_rss(&p.runc),
            ratio_cell(ratio(rss(&p.rust), rss(&p.runc))),
            "report".into(),
            "".into(),
        ]),
        Row([
            "Threads of one idle shim".into(),
            one_threads(&p.rust),
            one_threads(&p.runc),
            ratio_cell(ratio(threads(&p.rust), threads(&p.runc))),
            "report".into(),
            "".into(),
        ]),
    ]
}

/// The whole report: a header naming the setup, the table, then notes and
/// any failures.
pub fn markdown(r: &Results) -> String {
    let c = &r.config;
    let e = &r.env;
    let mut rows = Vec::new();
    if let Some(p) = &r.start {
        rows.push(latency_row(
            "Start: `ctr run --rm --runtime RT --rootfs R id /bin/true` (ms)",
            p,
        ));
    }
    if let Some(p) = &r.exec {
        rows.push(latency_row("Exec: `ctr task exec` of /bin/true (ms)", p));
        let (a, b) = (p.rust.shim_cpu_ms, p.runc.shim_cpu_ms);
        let ms = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.1}"));
        rows.push(Row([
            "Exec: CPU of the shim's side per exec (the shim, and what it reaped: stages or runc, /bin/true) (ms)".into(),
            ms(a),
            ms(b),
            ratio_cell(ratio(a, b)),
            "".into(),
            "".into(),
        ]));
    }
    if let Some(p) = &r.throughput {
        rows.extend(throughput_rows(p, c.containers, c.concurrency));
    }
    if let Some(p) = &r.idle {
        rows.extend(idle_rows(p));
    }

    let mut md = String::new();
    let _ = writeln!(
        md,
        "### containerd-shim-rust-v2 vs containerd-shim-runc-v2\n"
    );
    let _ = writeln!(
        md,
        "{} on one private containerd {} (Debian {}, whose containerd-shim-runc-v2 is the \
         runc shim), runc {}, kernel {}, {} CPUs, load average {} at the start and {} at the end. \
         Our shim: `{}` (built {}).\n",
        e.date_utc,
        // `containerd github.com/containerd/containerd 1.6.20~ds1 REV`
        e.containerd
            .split_whitespace()
            .nth(2)
            .unwrap_or(&e.containerd),
        e.runc_shim,
        e.runc.trim_start_matches("runc version "),
        e.kernel,
        e.cpus,
        e.load_start,
        e.load_end,
        e.shim,
        e.shim_built
    );
    let mut how = Vec::new();
    if r.start.is_some() || r.exec.is_some() {
        how.push(format!(
            "Latency: {} measured runs per runtime after {} warm-up runs, alternating rust, runc, \
             runc, rust, … (the null shim's runs, where measured, rotating through first, middle \
             and last); median (min–max); the latency ratios carry a 95% bootstrap interval \
             in parentheses.",
            c.runs, c.warmup
        ));
    }
    if r.throughput.is_some() {
        how.push(format!(
            "Throughput: {} round(s) per runtime, alternating which goes first; median (min–max) \
             of the rounds' wall times.",
            c.rounds
        ));
    }
    if r.idle.is_some() {
        how.push(format!(
            "Idle: {} `sleep 1000` containers per runtime, each in its own shim, measured {} ms \
             after the last one started, from `/proc/PID/smaps_rollup` and `/proc/PID/task`.",
            c.idle, c.settle_ms
        ));
    }
    how.push("rust/runc is the ratio of medians (of means for PSS and USS).".into());
    if c.debug {
        how.push("**containerd ran at debug level (`--debug`): slower than normal.**".into());
    }
    let _ = writeln!(md, "{}\n", how.join(" "));
    let header = ["Metric", "rust", "runc", "rust/runc", "Target (#7)", "Met"];
    let _ = writeln!(md, "| {} |", header.join(" | "));
    let _ = writeln!(md, "|{}", "---|".repeat(header.len()));
    for Row(cols) in &rows {
        let _ = writeln!(md, "| {} |", cols.join(" | "));
    }

    md.push_str(&floor_table(r));

    let mut failures = Vec::new();
    let mut add = |what: &str, rt: Runtime, list: &[String]| {
        for f in list.iter().take(5) {
            failures.push(format!("- {what}, {}: {f}", rt.name()));
        }
        if list.len() > 5 {
            failures.push(format!(
                "- {what}, {}: … {} more",
                rt.name(),
                list.len() - 5
            ));
        }
    };
    for rt in [Runtime::Rust, Runtime::Runc, Runtime::Null] {
        if let Some(p) = &r.start {
            add("start", rt, &p.get(rt).failures);
        }
        if let Some(p) = &r.exec {
            add("exec", rt, &p.get(rt).failures);
        }
        if rt == Runtime::Null {
            continue;
        }
        if let Some(p) = &r.throughput {
            add("throughput", rt, &p.get(rt).failures);
        }
    }
    if !failures.is_empty() {
        let _ = writeln!(md, "\nFailed runs:\n\n{}", failures.join("\n"));
    }
    md
}

/// Issue #19's goal for start and exec: our overhead above the null shim
/// (its median), against runc's. Empty where no null run was measured
/// (results written before the null shim).
fn floor_table(r: &Results) -> String {
    let rows: Vec<(&str, &PerRuntime<Latency>)> = [("Start", r.start.as_ref()), ("Exec", r.exec.as_ref())]
        .into_iter()
        .filter_map(|(name, p)| p.filter(|p| p.null.summary.is_some()).map(|p| (name, p)))
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut md = String::from(
        "\nAgainst the floor (issue #19): the null shim (`containerd-shim-null-v2`) runs no container, \
         so its latency is what ctr and containerd cost; each runtime's overhead is its median above \
         the null shim's (ms).\n\n\
         | | ours | runc's shim | null shim | ours / runc | our overhead | runc's overhead | ours / runc's overhead |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for (name, p) in rows {
        let m = |l: &Latency| l.summary.map(|s| s.median);
        let cells = crate::cri::against_null(m(&p.rust), m(&p.runc), m(&p.null), 1);
        let _ = writeln!(md, "| {name} | {cells} |");
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Environment;
    use crate::memory::ShimUsage;
    use crate::Config;

    fn latency(samples: &[f64]) -> Latency {
        Latency {
            samples_ms: samples.to_vec(),
            failures: Vec::new(),
            summary: Summary::of(samples),
            shim_cpu_ms: None,
        }
    }

    #[test]
    fn cells() {
        assert_eq!(cell(Summary::of(&[1.0, 2.0, 4.0]), 1), "2.0 (1.0–4.0)");
        assert_eq!(cell(None, 1), "–");
    }

    #[test]
    fn table_has_ratios_and_verdicts() {
        let usage = |pss, threads| ShimUsage {
            pid: 1,
            pss_kib: pss,
            rss_kib: 2048,
            private_kib: pss,
            threads,
        };
        let idle = |u: ShimUsage| Idle {
            containers: 1,
            shims: 1,
            pss_mib: Summary::of(&[u.pss_kib as f64 / 1024.0]),
            rss_mib: Summary::of(&[2.0]),
            private_mib: Summary::of(&[u.private_kib as f64 / 1024.0]),
            threads: Summary::of(&[u.threads as f64]),
            one: Some(u),
            all: vec![u],
        };
        let results = Results {
            env: Environment::default(),
            config: Config::parse(&[]).unwrap(),
            start: Some(PerRuntime {
                rust: latency(&[10.0, 20.0, 30.0]),
                runc: latency(&[100.0, 100.0]),
                null: latency(&[5.0]),
            }),
            exec: Some(PerRuntime {
                rust: latency(&[80.0]),
                runc: latency(&[100.0]),
                null: Latency::default(),
            }),
            idle: Some(PerRuntime {
                rust: idle(usage(256, 3)),
                runc: idle(usage(4096, 10)),
                null: Idle::default(),
            }),
            throughput: None,
        };
        let md = markdown(&results);
        let row = |prefix: &str| {
            md.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no row {prefix} in\n{md}"))
                .to_string()
        };
        assert_eq!(
            row("| Start"),
            "| Start: `ctr run --rm --runtime RT --rootfs R id /bin/true` (ms) | 20.0 (10.0–30.0) \
             | 100.0 (100.0–100.0) | 0.20 (0.10–0.30) | ≤ 0.5× runc | yes |"
        );
        assert!(
            row("| Exec").ends_with("| 0.80 (0.80–0.80) | ≤ 0.5× runc | **no** |"),
            "{md}"
        );
        assert!(
            row("| Idle PSS")
                .contains("| 0.25 (0.25–0.25) | 4.00 (4.00–4.00) | 0.06 | ≤ 0.5 MiB | yes |"),
            "{md}"
        );
        assert!(
            row("| Threads").contains("| 3 (all: 3–3) | 10 (all: 10–10) | 0.30 |"),
            "{md}"
        );
        assert!(
            !md.contains("| Throughput"),
            "no throughput rows without results\n{md}"
        );
        assert!(!md.contains("Failed runs"));
        // Start has a null run: ours 20 and runc 100 over a floor of 5 are
        // overheads of 15 and 95. Exec has none, so no floor row.
        assert_eq!(row("| Start |"), "| Start | 20.0 | 100.0 | 5.0 | 0.20 | 15.0 | 95.0 | 0.16 |");
        assert!(!md.contains("| Exec |"), "{md}");
    }
}
