//! rsv2-fuzz: runs the fuzz targets and prints what they found.
//!
//!     rsv2-fuzz [--runs N] [--seed S] [--out DIR] [-v] [TARGET...]
//!
//! -v lists the most frequent outcome classes of each target.
//!
//! TARGET is one of spec, ttrpc, options, channel (all by default). Inputs
//! that broke something are written to DIR (default target/fuzz-findings),
//! one file per finding; the exit status is 1 when there was any.

use std::path::PathBuf;

fn main() {
    let mut runs: u64 = 1_000_000;
    let mut seed: u64 = 1;
    let mut out = PathBuf::from("target/fuzz-findings");
    let mut names: Vec<String> = Vec::new();
    let mut verbose = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |what: &str| args.next().unwrap_or_else(|| die(&format!("{a} needs {what}")));
        match a.as_str() {
            "--runs" => runs = value("a count").parse().unwrap_or_else(|_| die("--runs: not a count")),
            "--seed" => seed = value("a number").parse().unwrap_or_else(|_| die("--seed: not a number")),
            "-v" | "--verbose" => verbose = true,
            "--out" => out = PathBuf::from(value("a directory")),
            "-h" | "--help" => {
                println!("usage: rsv2-fuzz [--runs N] [--seed S] [--out DIR] [{}]...", rsv2_fuzz::targets::NAMES.join("|"));
                return;
            }
            name => names.push(name.to_string()),
        }
    }
    if names.is_empty() {
        names = rsv2_fuzz::targets::NAMES.iter().map(|s| s.to_string()).collect();
    }
    println!("| target | inputs | seed | inputs/s | corpus | outcome classes | findings |");
    println!("|---|---|---|---|---|---|---|");
    let mut found = 0;
    for name in &names {
        let mut target = rsv2_fuzz::targets::by_name(name).unwrap_or_else(|e| die(&e));
        let report = rsv2_fuzz::fuzz(target.as_mut(), seed, runs);
        let total = report.findings.len() as u64 + report.more_findings;
        println!("| {} | {} | {} | {:.0} | {} | {} | {} |", report.target, report.runs, report.seed, report.per_second(), report.corpus, report.outcomes.len(), total);
        if verbose {
            let mut classes: Vec<(&String, &u64)> = report.outcomes.iter().collect();
            classes.sort_by(|a, b| b.1.cmp(a.1));
            for (class, n) in classes.iter().take(60) {
                eprintln!("  {n:>8}  {class}");
            }
        }
        for (i, f) in report.findings.iter().enumerate() {
            let _ = std::fs::create_dir_all(&out);
            let file = out.join(format!("{}-{seed}-{i}", report.target));
            let _ = std::fs::write(&file, &f.input);
            eprintln!("{}: {} (input: {})", report.target, f.what, file.display());
        }
        found += total;
    }
    if found > 0 {
        std::process::exit(1);
    }
}

fn die(msg: &str) -> ! {
    eprintln!("rsv2-fuzz: {msg}");
    std::process::exit(2);
}
