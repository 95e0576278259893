//! Running `ctr` (and other short-lived commands) with a time limit, and the
//! `ctr run` builder the tests use.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::containerd::PrivateContainerd;
use crate::procio::Logged;

/// Time limit for one `ctr` call. Generous: it only exists so a hung shim
/// fails the test instead of hanging the whole run.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(60);

/// A child whose stdout and stderr are drained by threads, so it can never
/// block on a full pipe while we wait for it with a deadline.
struct Collected {
    child: Child,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
}

impl Collected {
    fn spawn(cmd: &mut Command) -> std::io::Result<Self> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = drain(child.stdout.take().expect("piped stdout"));
        let stderr = drain(child.stderr.take().expect("piped stderr"));
        Ok(Self {
            child,
            stdout,
            stderr,
        })
    }

    /// Waits up to `timeout`. On timeout the child is killed and the output
    /// gathered so far is returned as the error.
    fn wait(mut self, timeout: Duration) -> Result<Output, Output> {
        let deadline = Instant::now() + timeout;
        let (status, timed_out) = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break (status, false),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = self.child.kill();
                    break (
                        self.child.wait().unwrap_or_else(|_| ExitStatus::default()),
                        true,
                    );
                }
            }
        };
        let output = Output {
            status,
            stdout: self.stdout.join().unwrap_or_default(),
            stderr: self.stderr.join().unwrap_or_default(),
        };
        if timed_out {
            Err(output)
        } else {
            Ok(output)
        }
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// Runs `cmd` to completion within `timeout`. `Err` carries the partial output
/// of a command that had to be killed; spawn failures are `Err` too, with the
/// reason in stderr.
pub(crate) fn output_within(cmd: &mut Command, timeout: Duration) -> Result<Output, Output> {
    match Collected::spawn(cmd) {
        Ok(c) => c.wait(timeout),
        Err(e) => Err(Output {
            status: ExitStatus::default(),
            stdout: Vec::new(),
            stderr: format!("cannot spawn {cmd:?}: {e}").into_bytes(),
        }),
    }
}

/// Renders an output for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A `ctr` process left running in the background, e.g. an attached
/// `ctr run`. It is killed if dropped before [`Background::wait`].
pub struct Background {
    inner: Option<Collected>,
    what: String,
}

impl Background {
    pub(crate) fn spawn(mut cmd: Command, what: String) -> Self {
        let inner =
            Collected::spawn(&mut cmd).unwrap_or_else(|e| panic!("cannot spawn `{what}`: {e}"));
        Self {
            inner: Some(inner),
            what,
        }
    }

    /// Whether the process has exited (it is not reaped here: [`Self::wait`]
    /// still returns its output).
    pub fn exited(&mut self) -> bool {
        self.inner.as_mut().is_some_and(|c| matches!(c.child.try_wait(), Ok(Some(_))))
    }

    /// Waits for the process to exit and returns its output; panics if it is
    /// still running after `timeout`.
    pub fn wait(mut self, timeout: Duration) -> Output {
        let inner = self.inner.take().expect("Background waited twice");
        inner.wait(timeout).unwrap_or_else(|partial| {
            panic!(
                "`{}` did not exit within {timeout:?}; killed it\n{}",
                self.what,
                describe(&partial)
            )
        })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.inner.take() {
            let _ = c.child.kill();
            let _ = c.child.wait();
        }
    }
}

/// One line of `ctr task ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    pub id: String,
    pub pid: u32,
    /// `CREATED`, `RUNNING`, `STOPPED`, `PAUSED`, ... as ctr prints it.
    pub status: String,
}

impl TaskInfo {
    /// Parses the output of `ctr task ls` (a header line, then
    /// `ID PID STATUS` per task).
    pub fn parse_list(text: &str) -> Vec<TaskInfo> {
        text.lines()
            .skip(1)
            .filter_map(|line| {
                let mut f = line.split_whitespace();
                let (id, pid, status) = (f.next()?, f.next()?, f.next()?);
                Some(TaskInfo {
                    id: id.to_string(),
                    pid: pid.parse().ok()?,
                    status: status.to_string(),
                })
            })
            .collect()
    }
}

enum Source {
    /// `--rootfs <busybox rootfs> ID ARGS...`
    Rootfs(Vec<String>),
    /// `--config <spec> ID`: ctr takes the whole OCI spec from the file.
    Config(PathBuf),
}

/// A `ctr run` invocation being put together; see [`PrivateContainerd::run`].
pub struct Run<'a> {
    ctd: &'a PrivateContainerd,
    id: String,
    runtime: String,
    flags: Vec<String>,
    source: Source,
}

impl<'a> Run<'a> {
    pub(crate) fn rootfs(ctd: &'a PrivateContainerd, id: &str, argv: &[&str]) -> Self {
        Self::new(
            ctd,
            id,
            Source::Rootfs(argv.iter().map(|s| s.to_string()).collect()),
        )
    }

    pub(crate) fn config(ctd: &'a PrivateContainerd, id: &str, spec: PathBuf) -> Self {
        Self::new(ctd, id, Source::Config(spec))
    }

    fn new(ctd: &'a PrivateContainerd, id: &str, source: Source) -> Self {
        Self {
            ctd,
            id: id.to_string(),
            runtime: crate::runtime_under_test(),
            flags: Vec::new(),
            source,
        }
    }

    /// Uses `runtime` instead of the runtime under test.
    pub fn runtime(mut self, runtime: &str) -> Self {
        self.runtime = runtime.to_string();
        self
    }

    /// Adds `ctr run` flags such as `--memory-limit N` or `--read-only`.
    pub fn flags(mut self, flags: &[&str]) -> Self {
        self.flags.extend(flags.iter().map(|s| s.to_string()));
        self
    }

    fn args(&self, mode: Option<&str>) -> Vec<String> {
        self.args_with(mode.as_slice())
    }

    /// The `ctr run` arguments, with `modes` (`--rm`, `-d`, `-t`) right
    /// after `run`: for running ctr some other way, e.g. under `script`.
    pub fn args_with(&self, modes: &[&str]) -> Vec<String> {
        let mut args = vec!["run".to_string()];
        args.extend(modes.iter().map(|m| m.to_string()));
        // ctr's default FIFO dir is /run/containerd/fifo; keep ours private.
        args.extend([
            "--fifo-dir".to_string(),
            self.ctd.fifo_dir().display().to_string(),
        ]);
        args.extend(["--runtime".to_string(), self.runtime.clone()]);
        args.extend(self.flags.iter().cloned());
        match &self.source {
            Source::Rootfs(argv) => {
                args.extend([
                    "--rootfs".to_string(),
                    self.ctd.rootfs().display().to_string(),
                    self.id.clone(),
                ]);
                args.extend(argv.iter().cloned());
            }
            Source::Config(spec) => {
                args.extend([
                    "--config".to_string(),
                    spec.display().to_string(),
                    self.id.clone(),
                ]);
            }
        }
        args
    }

    /// `ctr run --rm`, attached: returns ctr's output, whose exit status is the
    /// task's exit status. Panics if it takes longer than [`CTR_TIMEOUT`].
    pub fn rm(self) -> Output {
        self.rm_within(CTR_TIMEOUT)
    }

    /// Like [`Run::rm`] with a custom time limit.
    pub fn rm_within(self, timeout: Duration) -> Output {
        let args = self.args(Some("--rm"));
        self.ctd.ctr_within(&args, timeout)
    }

    /// `ctr run -d`: panics with ctr's stderr if the task did not start (after
    /// removing the container record, which ctr leaves behind on failure) and
    /// returns the running task.
    pub fn detach(self) -> TaskInfo {
        let args = self.args(Some("-d"));
        let out = self.ctd.ctr(&args);
        if !out.status.success() {
            self.ctd.ctr(&["containers", "rm", &self.id]);
            panic!(
                "`ctr {}` failed\n{}\n{}",
                args.join(" "),
                describe(&out),
                self.ctd.log_tail(40)
            );
        }
        self.ctd.task(&self.id).unwrap_or_else(|| {
            panic!(
                "`ctr run -d` succeeded but `ctr task ls` has no task {}",
                self.id
            )
        })
    }

    /// `ctr run --rm` attached, in the background.
    pub fn spawn(self) -> Background {
        self.ctd.spawn_ctr(&self.args(Some("--rm")))
    }

    /// `ctr run MODES...` attached, in the background, its output going to
    /// files readable while it runs (see [`Logged`]).
    pub fn spawn_logged(self, modes: &[&str], name: &str) -> Logged {
        self.ctd.spawn_ctr_logged(&self.args_with(modes), name)
    }
}

#[cfg(test)]
mod tests {
    use super::TaskInfo;

    #[test]
    fn parses_task_list() {
        let text = "TASK    PID     STATUS    \nc2      6468    RUNNING\nc3      6624    STOPPED\n";
        let tasks = TaskInfo::parse_list(text);
        assert_eq!(
            tasks,
            vec![
                TaskInfo {
                    id: "c2".into(),
                    pid: 6468,
                    status: "RUNNING".into()
                },
                TaskInfo {
                    id: "c3".into(),
                    pid: 6624,
                    status: "STOPPED".into()
                },
            ]
        );
        assert!(TaskInfo::parse_list("TASK    PID    STATUS    \n").is_empty());
    }
}
