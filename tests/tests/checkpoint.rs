//! Task Checkpoint on this host (issue #17). CRIU 3.17.1 cannot work on
//! this machine's kernel (`criu check` fails on its vDSO), so here the
//! checkpoint must fail with a sentence that quotes CRIU's own error,
//! leave the container running, and leave nothing behind; the real
//! checkpoint and restore run in the node VM (tests/tests/node_vm.rs), on
//! Debian's kernel. Where `criu check` passes, this checks that a
//! checkpoint works instead: either way something is asserted.

use std::process::Command;

use integration_tests::{host, PrivateContainerd};

/// What `criu check` says here: None when it passes.
fn criu_check_error() -> Option<String> {
    let out = Command::new("criu").arg("check").output().expect("criu is installed by scripts/test");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let last_error = text.lines().filter(|l| l.starts_with("Error ")).last().map(str::to_string);
    (!out.status.success() || last_error.is_some()).then(|| last_error.unwrap_or(text))
}

#[test]
fn checkpoint_quotes_criu_when_it_cannot_work() {
    let ctd = PrivateContainerd::start();
    let id = ctd.unique_id("ckpt");
    let task = ctd.run(&id, &["/bin/sh", "-c", "i=0; while true; do i=$((i+1)); sleep 0.1; done"]).detach();
    let out = ctd.ctr(&["task", "checkpoint", &id]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    match criu_check_error() {
        Some(criu_error) => {
            assert!(!out.status.success(), "a checkpoint succeeded although criu check fails: {criu_error}");
            assert!(stderr.contains("criu check") && !stderr.contains("not implemented"), "{stderr}");
            // CRIU's own words, e.g. "vdso: Failed to fill self vdso symtable".
            let quoted = criu_error.rsplit("): ").next().unwrap_or(&criu_error).trim();
            assert!(stderr.contains(quoted), "the error does not quote CRIU's {quoted:?}: {stderr}");
        }
        None => assert!(out.status.success(), "criu check passes, but the checkpoint failed: {stderr}\n{}", ctd.log_tail(30)),
    }
    // The container runs on, untouched.
    assert!(host::is_alive(task.pid), "the container's init died");
    assert_eq!(ctd.task(&id).map(|t| t.status), Some("RUNNING".to_string()));
    ctd.remove(&id);
    ctd.assert_no_leftovers(&id);
    ctd.finish();
}
