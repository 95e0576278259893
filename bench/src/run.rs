//! Timed `ctr` invocations against the private containerd.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{Plan, Runtime};

/// Time limit of one ctr call: a hung shim fails that run, not the machine.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(60);

/// One finished command.
#[derive(Debug)]
pub struct Timed {
    /// From just before spawning ctr until it was reaped.
    pub wall: Duration,
    pub output: Output,
    pub timed_out: bool,
}

impl Timed {
    pub fn ok(&self) -> bool {
        !self.timed_out && self.output.status.success()
    }

    pub fn wall_ms(&self) -> f64 {
        self.wall.as_secs_f64() * 1e3
    }

    /// One line saying why it failed, for the report.
    pub fn failure(&self) -> String {
        let stderr = String::from_utf8_lossy(&self.output.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        if self.timed_out {
            format!("timed out after {:?}: {last}", self.wall)
        } else {
            format!("{}: {last}", self.output.status)
        }
    }
}

/// Runs `cmd` with stdout and stderr captured, timing it. A command still
/// running after `timeout` is SIGKILLed. The wait happens on a helper thread
/// that records the end time itself, so the timeout costs no precision.
pub fn timed(mut cmd: Command, timeout: Duration) -> Result<Timed, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot spawn {cmd:?}: {e}"))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send((out, Instant::now()));
    });
    let (result, timed_out) = match rx.recv_timeout(timeout) {
        Ok(r) => (r, false),
        Err(_) => {
            // Not reaped yet (the waiter has not returned), so the pid is still ours.
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            (
                rx.recv()
                    .map_err(|_| "waiter thread vanished".to_string())?,
                true,
            )
        }
    };
    let (out, t1) = result;
    let output = out.map_err(|e| format!("waiting for {cmd:?}: {e}"))?;
    Ok(Timed {
        wall: t1 - t0,
        output,
        timed_out,
    })
}

/// `ctr` bound to the private containerd.
#[derive(Debug, Clone)]
pub struct Ctr {
    socket: PathBuf,
    namespace: String,
    rootfs: PathBuf,
    fifo_dir: PathBuf,
}

impl Ctr {
    pub fn new(plan: &Plan) -> Self {
        Self {
            socket: plan.socket.clone(),
            namespace: plan.namespace.clone(),
            rootfs: plan.rootfs.clone(),
            fifo_dir: plan.fifo_dir.clone(),
        }
    }

    pub fn socket(&self) -> String {
        self.socket.display().to_string()
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args);
        cmd
    }

    /// Runs ctr untimed-for-the-report and returns its output, or an error
    /// naming the command if it failed.
    pub fn ok(&self, args: &[&str]) -> Result<String, String> {
        let t = timed(self.command(args), CTR_TIMEOUT)?;
        if t.ok() {
            Ok(String::from_utf8_lossy(&t.output.stdout).into_owned())
        } else {
            Err(format!("`ctr {}` failed: {}", args.join(" "), t.failure()))
        }
    }

    /// `ctr run MODE --fifo-dir F --runtime RT --rootfs R ID ARGV...`: the
    /// command of issue #7 (plus a private FIFO dir, as the tests use).
    pub fn run_command(&self, mode: &str, runtime: Runtime, id: &str, argv: &[&str]) -> Command {
        let fifo = self.fifo_dir.display().to_string();
        let rootfs = self.rootfs.display().to_string();
        let mut args = vec![
            "run",
            mode,
            "--fifo-dir",
            &fifo,
            "--runtime",
            runtime.runtime_type(),
            "--rootfs",
            &rootfs,
            id,
        ];
        args.extend_from_slice(argv);
        self.command(&args)
    }

    /// `ctr task exec --fifo-dir F --exec-id EXEC ID ARGV...`, attached.
    pub fn exec_command(&self, id: &str, exec_id: &str, argv: &[&str]) -> Command {
        let fifo = self.fifo_dir.display().to_string();
        let mut args = vec![
            "task",
            "exec",
            "--fifo-dir",
            &fifo,
            "--exec-id",
            exec_id,
            id,
        ];
        args.extend_from_slice(argv);
        self.command(&args)
    }

    /// Task ids of the namespace.
    pub fn tasks(&self) -> Result<Vec<String>, String> {
        Ok(self
            .ok(&["task", "ls", "-q"])?
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// Container ids of the namespace.
    pub fn containers(&self) -> Result<Vec<String>, String> {
        Ok(self
            .ok(&["containers", "ls", "-q"])?
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// Kills and deletes the task (if any) and the container `id`.
    pub fn remove(&self, id: &str) -> Result<(), String> {
        if self.tasks()?.iter().any(|t| t == id) {
            self.ok(&["task", "delete", "--force", id])?;
        }
        if self.containers()?.iter().any(|c| c == id) {
            self.ok(&["containers", "rm", id])?;
        }
        Ok(())
    }
}
