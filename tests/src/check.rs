//! Small assertions and constants the test files share.

use std::process::Output;
use std::time::Duration;

use crate::{wait_until, PrivateContainerd};

pub const RUNNING: &str = "RUNNING";
pub const STOPPED: &str = "STOPPED";
/// Upper bound for a task to react to a signal or a shim to tear down.
pub const REACT: Duration = Duration::from_secs(20);

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that a ctr call exited with `code`, showing everything otherwise.
pub fn assert_exit(ctd: &PrivateContainerd, out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: expected exit status {code}\n--- stdout ---\n{}\n--- stderr ---\n{}\n{}",
        stdout(out),
        stderr(out),
        ctd.log_tail(40)
    );
}

/// Asserts that a ctr call failed with a message on stderr that names
/// every needle.
pub fn assert_fails_naming(ctd: &PrivateContainerd, out: &Output, what: &str, needles: &[&str]) {
    assert!(
        !out.status.success(),
        "{what} succeeded but must fail\n--- stdout ---\n{}\n--- stderr ---\n{}",
        stdout(out),
        stderr(out)
    );
    let err = stderr(out);
    assert!(err.trim().len() > "ctr: ".len(), "{what} failed without a message\n--- stderr ---\n{err}");
    for needle in needles {
        assert!(err.contains(needle), "{what}: the error does not mention {needle:?}\n--- stderr ---\n{err}\n{}", ctd.log_tail(40));
    }
}

/// Asserts that `cond` holds on every poll for `period`: for things that
/// must not happen, such as a shim exiting while it still serves a container.
pub fn stays_true(period: Duration, mut cond: impl FnMut() -> bool) -> bool {
    !wait_until(period, || !cond())
}
