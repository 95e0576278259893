//! OCI lifecycle hooks.
//!
//! Where each kind runs, per the runtime spec:
//! - prestart, createRuntime: in the runtime's namespaces, after the
//!   container's mounts and before pivot_root: the shim runs them when stage
//!   2 asks;
//! - createContainer: in the container's namespaces, before pivot_root, so
//!   the path resolves on the host: stage 2 runs them;
//! - startContainer: in the container, after Start, before the program:
//!   stage 2 runs them;
//! - poststart, poststop: in the runtime's namespaces, after Start and after
//!   Delete; a failure there is logged, not returned.
//!
//! The hook gets the container state as JSON on stdin. A hook that fails or
//! outlives its timeout fails its step, with its stderr in the error.

use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::{Hook, Spec};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{kind} hook {path}: {source}")]
    Spawn { kind: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{kind} hook {path} exited with {code}: {stderr}")]
    Failed { kind: &'static str, path: PathBuf, code: i32, stderr: String },
    #[error("{kind} hook {path} did not finish within {timeout}s: {stderr}")]
    Timeout { kind: &'static str, path: PathBuf, timeout: i64, stderr: String },
}

/// The state handed to a hook on stdin (runtime spec "State").
#[derive(Debug, Clone, Serialize)]
pub struct State {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub status: &'static str,
    pub pid: i32,
    pub bundle: PathBuf,
    pub annotations: std::collections::HashMap<String, String>,
}

impl State {
    pub fn new(spec: &Spec, id: &str, status: &'static str, pid: i32, bundle: &Path) -> State {
        State {
            oci_version: spec.version().clone(),
            id: id.to_string(),
            status,
            pid,
            bundle: bundle.to_path_buf(),
            annotations: spec.annotations().clone().unwrap_or_default(),
        }
    }
}

/// Waits for `pid`, spawned no earlier than the given instant, for at most
/// `timeout`, returning its exit code, or None on timeout. The shim waits
/// through its reaper, which must not hand it the exit of an earlier
/// process that had the same pid (pids come round fast under load);
/// stage 2 with waitpid.
pub type Wait<'a> = &'a dyn Fn(i32, std::time::Instant, Option<Duration>) -> Option<i32>;

/// Waits with waitpid, for a process with no reaper thread (stage 2).
pub fn waitpid(pid: i32, _spawned: std::time::Instant, timeout: Option<Duration>) -> Option<i32> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Some(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Some(128 + sig as i32),
            Ok(_) => {}
            Err(_) => return Some(-1),
        }
        if deadline.is_some_and(|d| std::time::Instant::now() > d) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn memfd(name: &str) -> std::io::Result<std::fs::File> {
    let c = std::ffi::CString::new(name).unwrap_or_default();
    // SAFETY: memfd_create with a valid name returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(c.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is new and ours.
    Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Runs every hook of one kind, in order, stopping at the first failure.
pub fn run_all(kind: &'static str, hooks: Option<&Vec<Hook>>, state: &State, wait: Wait<'_>) -> Result<(), HookError> {
    for hook in hooks.into_iter().flatten() {
        run(kind, hook, state, wait)?;
    }
    Ok(())
}

pub fn run(kind: &'static str, hook: &Hook, state: &State, wait: Wait<'_>) -> Result<(), HookError> {
    let path = hook.path().clone();
    let spawn_err = |source| HookError::Spawn { kind, path: path.clone(), source };
    // stdin and stderr are memfds, not pipes: nothing can block on a full
    // pipe while we wait, and the state is there in full before the hook
    // starts.
    let mut input = memfd("hook-state").map_err(spawn_err)?;
    input.write_all(&serde_json::to_vec(state).unwrap_or_default()).map_err(spawn_err)?;
    input.rewind().map_err(spawn_err)?;
    let mut errors = memfd("hook-output").map_err(spawn_err)?;

    let args = hook.args().clone().unwrap_or_else(|| vec![path.display().to_string()]);
    let args = if args.is_empty() { vec![path.display().to_string()] } else { args };
    let argv: Vec<&std::ffi::OsStr> = args.iter().map(|a| std::ffi::OsStr::new(a.as_str())).collect();
    // Only the hook's own environment. Output goes to the memfd too: no
    // /dev/null to open, which the container's device rules may already
    // deny inside the container.
    let env = hook.env().clone().unwrap_or_default();
    let fds = [input.as_raw_fd(), errors.as_raw_fd(), errors.as_raw_fd()];
    let spawned = std::time::Instant::now();
    let pid = crate::spawn::helper(&path, &argv, &env, &fds).map_err(spawn_err)?;
    let timeout = hook.timeout().filter(|t| *t > 0);
    let code = wait(pid, spawned, timeout.map(|t| Duration::from_secs(t as u64)));
    let mut stderr = String::new();
    let _ = errors.rewind();
    let _ = Read::by_ref(&mut errors).take(64 * 1024).read_to_string(&mut stderr);
    let stderr = stderr.trim().to_string();
    match code {
        Some(0) => Ok(()),
        Some(code) => Err(HookError::Failed { kind, path, code, stderr }),
        None => {
            // SAFETY: kill(2) on the hook we started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            wait(pid, spawned, None);
            Err(HookError::Timeout { kind, path, timeout: timeout.unwrap_or(0), stderr })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::HookBuilder;

    fn state() -> State {
        State {
            oci_version: "1.0.2".into(),
            id: "c1".into(),
            status: "creating",
            pid: 42,
            bundle: "/b".into(),
            annotations: Default::default(),
        }
    }

    fn sh(script: &str, timeout: Option<i64>) -> Hook {
        let mut b = HookBuilder::default().path("/bin/sh").args(vec!["sh".to_string(), "-c".to_string(), script.to_string()]).env(vec!["X=from-env".to_string()]);
        if let Some(t) = timeout {
            b = b.timeout(t);
        }
        b.build().unwrap()
    }

    #[test]
    fn hook_gets_state_on_stdin_and_its_env() {
        let out = tempfile::NamedTempFile::new().unwrap();
        let hook = sh(&format!("cat > {}; echo \" $X\" >> {}", out.path().display(), out.path().display()), None);
        run("createRuntime", &hook, &state(), &waitpid).unwrap();
        let text = std::fs::read_to_string(out.path()).unwrap();
        assert!(text.contains("\"id\":\"c1\"") && text.contains("\"pid\":42") && text.contains("\"status\":\"creating\""), "{text}");
        assert!(text.contains("from-env"), "{text}");
    }

    #[test]
    fn failing_hook_reports_stderr() {
        let err = run("prestart", &sh("echo broken-network >&2; exit 3", None), &state(), &waitpid).unwrap_err().to_string();
        assert!(err.contains("exited with 3") && err.contains("broken-network"), "{err}");
    }

    #[test]
    fn hook_past_its_timeout_is_killed() {
        let start = std::time::Instant::now();
        let err = run("poststart", &sh("sleep 30", Some(1)), &state(), &waitpid).unwrap_err().to_string();
        assert!(err.contains("within 1s"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}
