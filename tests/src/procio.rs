//! Process IO helpers for the exec, terminal and stream tests: `ctr task exec`
//! as a builder, commands fed from a byte string, background commands whose
//! output goes to files that can be read while they run, and `ctr` command
//! lines for a shell (`script -c "..."`).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::containerd::PrivateContainerd;
use crate::ctr::{describe, Background, CTR_TIMEOUT};
use crate::wait_until;

/// Runs `cmd` with `input` on its stdin (closed after it), collecting stdout
/// and stderr, within `timeout`. `Err` carries the partial output of a
/// command that had to be killed.
pub fn output_with_input(
    cmd: &mut Command,
    input: &[u8],
    timeout: Duration,
) -> Result<Output, Output> {
    let mut child = match cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return Err(Output {
                status: ExitStatus::default(),
                stdout: Vec::new(),
                stderr: format!("cannot spawn {cmd:?}: {e}").into_bytes(),
            })
        }
    };
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    // A writer thread: the child may not read its input before it has
    // written output we must drain.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let exited = wait_until(timeout, || matches!(child.try_wait(), Ok(Some(_))));
    if !exited {
        let _ = child.kill();
    }
    let status = child.wait().unwrap_or_else(|_| ExitStatus::default());
    let _ = writer.join();
    let output = Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    if exited {
        Ok(output)
    } else {
        Err(output)
    }
}

fn drain(mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// Quotes `word` for a POSIX shell.
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@%+".contains(&b))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

static LOGGED: AtomicUsize = AtomicUsize::new(0);

/// A command running in the background with its stdout and stderr going to
/// files, so the test can read what it printed so far while it runs (an
/// attached `ctr run`, `ctr task attach`). SIGKILLed if dropped while running.
pub struct Logged {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    what: String,
    status: Option<ExitStatus>,
}

impl Logged {
    /// Spawns `cmd` with stdin from /dev/null and its output in
    /// `<dir>/<name>-<n>.out` and `.err`.
    pub fn spawn(mut cmd: Command, dir: &Path, name: &str, what: String) -> Logged {
        let n = LOGGED.fetch_add(1, Ordering::SeqCst);
        let out = dir.join(format!("{name}-{n}.out"));
        let err = dir.join(format!("{name}-{n}.err"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(File::create(&out).expect("create output file"))
            .stderr(File::create(&err).expect("create error file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn `{what}`: {e}"));
        Logged {
            child,
            out,
            err,
            what,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file its stdout goes to.
    pub fn stdout_path(&self) -> &Path {
        &self.out
    }

    /// Everything it printed on stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.out).unwrap_or_default()).into_owned()
    }

    /// Everything it printed on stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.err).unwrap_or_default()).into_owned()
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `timeout` for it to exit; `None` if it is still running.
    pub fn wait_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, || self.exited().is_some());
        self.exited()
    }

    /// Waits for it to exit; panics (after killing it) if it runs longer
    /// than `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        match self.wait_within(timeout) {
            Some(status) => status,
            None => {
                self.kill();
                panic!(
                    "`{}` did not exit within {timeout:?}; killed it\n{}",
                    self.what,
                    self.describe()
                )
            }
        }
    }

    /// SIGKILLs it (if still running) and reaps it.
    pub fn kill(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }

    /// The command, its status and output, for messages. Long output is cut
    /// to its last 4000 bytes.
    pub fn describe(&self) -> String {
        let tail = |s: String| {
            if s.len() > 4000 {
                let mut at = s.len() - 4000;
                while !s.is_char_boundary(at) {
                    at += 1;
                }
                format!("[...]{}", &s[at..])
            } else {
                s
            }
        };
        format!(
            "`{}`: status {:?}\n--- stdout ({}) ---\n{}\n--- stderr ---\n{}",
            self.what,
            self.status,
            self.out.display(),
            tail(self.stdout()),
            tail(self.stderr())
        )
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `ctr task exec` invocation being put together; see
/// [`PrivateContainerd::exec`].
pub struct Exec<'a> {
    ctd: &'a PrivateContainerd,
    id: String,
    exec_id: String,
    flags: Vec<String>,
    argv: Vec<String>,
}

impl<'a> Exec<'a> {
    /// Adds `ctr task exec` flags such as `--user 1000:1000`, `--cwd DIR`, `-t`.
    pub fn flags(mut self, flags: &[&str]) -> Self {
        self.flags.extend(flags.iter().map(|s| s.to_string()));
        self
    }

    /// The ctr arguments, with `modes` (`-d`, `-t`) right after `exec`.
    pub fn args(&self, modes: &[&str]) -> Vec<String> {
        let mut args = vec!["task".to_string(), "exec".to_string()];
        args.extend(modes.iter().map(|s| s.to_string()));
        // ctr's default FIFO dir is /run/containerd/fifo; keep ours private.
        args.extend([
            "--fifo-dir".to_string(),
            self.ctd.fifo_dir().display().to_string(),
        ]);
        args.extend(self.flags.iter().cloned());
        args.extend([
            "--exec-id".to_string(),
            self.exec_id.clone(),
            self.id.clone(),
        ]);
        args.extend(self.argv.iter().cloned());
        args
    }

    /// Attached, stdin from /dev/null: ctr's output, whose exit status is the
    /// exec's. Panics if it takes longer than [`CTR_TIMEOUT`].
    pub fn output(self) -> Output {
        self.ctd.ctr(&self.args(&[]))
    }

    /// Attached with `input` on stdin, closed after it.
    pub fn output_with_stdin(self, input: &[u8]) -> Output {
        let args = self.args(&[]);
        output_with_input(&mut self.ctd.ctr_command(&args), input, CTR_TIMEOUT).unwrap_or_else(
            |partial| {
                panic!(
                    "`ctr {}` did not finish within {CTR_TIMEOUT:?}\n{}\n{}",
                    args.join(" "),
                    describe(&partial),
                    self.ctd.log_tail(40)
                )
            },
        )
    }

    /// `ctr task exec -d`: asserts it succeeded.
    pub fn detach(self) {
        self.ctd.ctr_ok(&self.args(&["-d"]));
    }

    /// Attached, in the background.
    pub fn spawn(self) -> Background {
        self.ctd.spawn_ctr(&self.args(&[]))
    }
}

impl PrivateContainerd {
    /// `ctr task exec --fifo-dir <ours> --exec-id EXEC_ID ID ARGV...`, to be
    /// finished with [`Exec::output`], [`Exec::detach`], ...
    pub fn exec(&self, id: &str, exec_id: &str, argv: &[&str]) -> Exec<'_> {
        Exec {
            ctd: self,
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            flags: Vec::new(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Starts ctr with ARGS in the background, its output going to files in
    /// the instance's directory (see [`Logged`]).
    pub fn spawn_ctr_logged<S: AsRef<str>>(&self, args: &[S], name: &str) -> Logged {
        let what = format!(
            "ctr {}",
            args.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(" ")
        );
        Logged::spawn(self.ctr_command(args), self.dir(), name, what)
    }

    /// The full `ctr --address ... --namespace ... ARGS` command line, quoted
    /// for a shell, e.g. for `script -c`.
    pub fn ctr_shell_line<S: AsRef<str>>(&self, args: &[S]) -> String {
        let cmd = self.ctr_command(args);
        std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| shell_quote(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn quotes_for_the_shell() {
        assert_eq!(shell_quote("/bin/sh"), "/bin/sh");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$x"), "'$x'");
    }
}
