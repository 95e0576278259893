//! Stable-Rust fuzzing of everything containerd-shim-rust-v2 parses that
//! it did not make itself (issue #12): a pod's shim that panics takes the
//! supervision of every container in the pod with it, so no input may
//! reach a panic.
//!
//! Targets (targets/): the bundle's config.json through the spec model and
//! the validator, ttrpc frames and requests through the shim's own server
//! and Task service, the runtime options decoder, and the sync channel's
//! messages between the shim and the init stage.
//!
//! No cargo-fuzz: it needs a nightly compiler for its sanitizer coverage.
//! The feedback here is the outcome instead: an input whose outcome (the
//! error, with its quoted values and numbers taken out) was not seen before
//! joins the corpus, so the mutations go on from inputs that got further.

pub mod mutate;
pub mod rng;
pub mod targets;

use std::collections::BTreeMap;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use rng::Rng;

/// One thing to fuzz.
pub trait Target {
    fn name(&self) -> &'static str;
    /// Valid inputs to start from: each runs first, as is.
    fn seeds(&self) -> Vec<Vec<u8>>;
    fn mutate(&self, rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
        mutate::bytes(rng, input, other)
    }
    /// Runs one input: Ok with what became of it (refused with this error,
    /// accepted, answered with this status), Err when an invariant broke
    /// (no answer, a path that left its root). A panic anywhere, in this
    /// thread or another, is caught by the driver.
    fn run(&mut self, input: &[u8]) -> Result<String, String>;
}

/// An input that broke something.
#[derive(Debug, Clone)]
pub struct Finding {
    pub what: String,
    pub input: Vec<u8>,
}

#[derive(Debug)]
pub struct Report {
    pub target: &'static str,
    pub seed: u64,
    pub runs: u64,
    pub corpus: usize,
    /// Outcome classes and how often each came.
    pub outcomes: BTreeMap<String, u64>,
    pub findings: Vec<Finding>,
    /// Findings past the ones kept.
    pub more_findings: u64,
    pub elapsed: Duration,
}

const MAX_CORPUS: usize = 4096;
const MAX_FINDINGS: usize = 20;

static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Every panic, in any thread (the shim's workers catch theirs and answer
/// the call with an error: that is still a panic reached from input).
fn record_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let what = format!("panic: {info}");
            PANICS.lock().unwrap_or_else(|e| e.into_inner()).push(what);
        }))
    });
}

fn take_panics() -> Vec<String> {
    std::mem::take(&mut *PANICS.lock().unwrap_or_else(|e| e.into_inner()))
}

/// The class of an outcome: quoted values and numbers taken out, and cut
/// at 100 bytes (each part, for outcomes of several parts joined by
/// "; "), so that
/// "refused: linux.sysctl \"a\"" and "... \"b\"" are one class.
pub fn outcome_class(outcome: &str) -> String {
    outcome.split("; ").map(class_of_one).collect::<Vec<_>>().join("; ")
}

fn class_of_one(outcome: &str) -> String {
    let mut out = String::new();
    let mut quoted = false;
    let mut prev = '\0';
    for c in outcome.chars() {
        if (c == '"' || c == '`') && prev != '\\' {
            quoted = !quoted;
            if quoted {
                out.push_str("\"…\"");
            }
        } else if !quoted {
            if c.is_ascii_digit() {
                if !out.ends_with('#') {
                    out.push('#');
                }
            } else {
                out.push(c);
            }
        }
        prev = c;
        if out.len() > 100 {
            break;
        }
    }
    out
}

/// Runs `target` for `runs` inputs from `seed`.
pub fn fuzz(target: &mut dyn Target, seed: u64, runs: u64) -> Report {
    record_panics();
    take_panics();
    let start = Instant::now();
    let mut rng = Rng::new(seed);
    let seeds = target.seeds();
    let mut corpus = seeds.clone();
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let mut findings: Vec<Finding> = Vec::new();
    let mut more_findings = 0;
    for i in 0..runs {
        let input = match seeds.get(i as usize) {
            Some(s) => s.clone(),
            None => {
                let a = rng.below(corpus.len());
                let b = rng.below(corpus.len());
                target.mutate(&mut rng, &corpus[a], &corpus[b])
            }
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target.run(&input)));
        let panics = take_panics();
        let broke = match (result, panics.first()) {
            (_, Some(p)) => Some(p.clone()),
            (Err(_), None) => Some("panic".to_string()),
            (Ok(Err(what)), None) => Some(what),
            (Ok(Ok(outcome)), None) => {
                let class = outcome_class(&outcome);
                let seen = outcomes.entry(class).or_insert(0);
                if *seen == 0 && corpus.len() < MAX_CORPUS {
                    corpus.push(input.clone());
                }
                *seen += 1;
                None
            }
        };
        if let Some(what) = broke {
            if findings.len() < MAX_FINDINGS {
                findings.push(Finding { what, input });
            } else {
                more_findings += 1;
            }
        }
    }
    Report { target: target.name(), seed, runs, corpus: corpus.len(), outcomes, findings, more_findings, elapsed: start.elapsed() }
}

impl Report {
    pub fn per_second(&self) -> f64 {
        self.runs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}
