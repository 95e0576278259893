//! The fixed-seed short pass of every fuzz target, in `cargo test` (the
//! README's test command). The long pass is `scripts/fuzz` (10^6 inputs
//! per target).
//!
//! Each target must find nothing, and must have got past its parser: the
//! valid seeds are accepted or answered, and the mutations reach many
//! different outcomes (a target that only ever saw "parse error" would
//! test nothing).

use rsv2_fuzz::{fuzz, targets, Report, Target};

const SEED: u64 = 0x5eed;

/// The driver records panics process-wide: one target at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn run(name: &str, runs: u64) -> Report {
    let _one = serial();
    let mut target = targets::by_name(name).unwrap_or_else(|e| panic!("{e}"));
    let report = fuzz(target.as_mut(), SEED, runs);
    println!("{name}: {} inputs in {:?}, {} outcome classes, corpus {}", report.runs, report.elapsed, report.outcomes.len(), report.corpus);
    assert!(report.findings.is_empty(), "{name} found {} inputs that broke something; the first: {} (input {:?})", report.findings.len() as u64 + report.more_findings, report.findings[0].what, String::from_utf8_lossy(&report.findings[0].input));
    report
}

fn has(report: &Report, needle: &str) -> bool {
    report.outcomes.keys().any(|k| k.contains(needle))
}

#[test]
fn spec_config_json_and_validator() {
    let r = run("spec", 20_000);
    assert!(has(&r, "accepted"), "no spec was accepted: {:?}", r.outcomes.keys().take(20).collect::<Vec<_>>());
    assert!(r.outcomes.keys().filter(|k| k.starts_with("refused:")).count() >= 30, "the validator refused in only a few ways");
}

#[test]
fn ttrpc_frames_and_requests() {
    let r = run("ttrpc", 5_000);
    assert!(has(&r, "NOT_FOUND"), "no call reached the service's container lookup");
    assert!(has(&r, "decoded, not run"), "Create, Checkpoint or Shutdown never decoded");
    assert!(has(&r, "INVALID_ARGUMENT") || has(&r, "closed without an answer"), "no malformed frame or request");
}

#[test]
fn runtime_options_decoder() {
    let r = run("options", 50_000);
    assert!(has(&r, "accepted: systemd true"), "runc's options were never decoded");
    assert!(has(&r, "refused"), "no option was refused");
}

#[test]
fn sync_channel_messages() {
    let r = run("channel", 20_000);
    assert!(has(&r, "ToInit Config"), "the init stage's config never decoded");
    assert!(has(&r, "FromInit Pid"), "the init stage's pid message never decoded");
}

/// The driver itself: a panic in another thread (as in the shim's workers,
/// which catch it and answer with an error) is a finding too.
#[test]
fn a_panic_in_any_thread_is_found() {
    struct Boom;
    impl Target for Boom {
        fn name(&self) -> &'static str {
            "boom"
        }
        fn seeds(&self) -> Vec<Vec<u8>> {
            vec![b"ok".to_vec(), b"boom".to_vec()]
        }
        fn run(&mut self, input: &[u8]) -> Result<String, String> {
            let input = input.to_vec();
            let _ = std::thread::spawn(move || assert!(input != b"boom", "boom")).join();
            Ok("ran".into())
        }
    }
    let r = {
        let _one = serial();
        fuzz(&mut Boom, SEED, 2)
    };
    assert_eq!(r.findings.len(), 1);
    assert!(r.findings[0].what.contains("boom"), "{}", r.findings[0].what);
}
