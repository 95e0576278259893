//! The container's standard streams.
//!
//! The container writes into pipes that the shim owns, and the shim's IO
//! loop ([`crate::io_loop`]) moves the bytes to containerd's FIFOs. Holding
//! our own ends (as the rust-extensions runc shim does) means a reader that
//! goes away, such as a restarting containerd, never SIGPIPEs the
//! container, and lets the shim drain the tail of the output before it
//! reports the exit.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant};

use runtime::launch::Stdio3;

use crate::io_loop::io_loop;

#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    #[error("open {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("create pipe: {0}")]
    Pipe(nix::errno::Errno),
    #[error("stdio uri {0} is not supported yet: use a fifo or file path")]
    Unsupported(String),
    #[error("the process has no terminal")]
    NoTerminal,
    #[error("resize terminal: {0}")]
    Resize(nix::errno::Errno),
    #[error("hand a stream to the io loop: {0}")]
    Copy(std::io::Error),
}

/// A process's side of the IO: output copies to drain, the stdin copy to
/// close, and the terminal master to resize.
pub struct IoHandles {
    done: Vec<Receiver<()>>,
    /// The IO loop's copy of containerd's stdin FIFO into the process.
    stdin: Option<u64>,
    /// The IO loop's copies of the process's output into containerd's FIFOs.
    outputs: Vec<u64>,
    console: Option<File>,
}

/// The output copies of a process, to wait for before reporting its exit.
pub struct Drain(Vec<Receiver<()>>);

impl Drain {
    /// Waits until every output copy has finished, at most `timeout`: a
    /// process that left a child holding the pipe must not hold up its exit.
    pub fn drain(self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for rx in self.0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if rx.recv_timeout(left).is_err() {
                log::warn!("output copy did not finish within {timeout:?}");
            }
        }
    }
}

impl IoHandles {
    pub fn take_outputs(&mut self) -> Drain {
        Drain(std::mem::take(&mut self.done))
    }

    /// CloseIO: the process sees end-of-file on stdin once it has read
    /// what was already delivered.
    pub fn close_stdin(&self) {
        if let Some(id) = self.stdin {
            io_loop().close_dst(id);
        }
    }

    /// The process is deleted: stop feeding it, and close our reader of the
    /// stdin FIFO, whether or not containerd ever opened its writer (it
    /// never does with `ctr run -d`). Output copies still running go too:
    /// one whose FIFO nobody reads (`ctr run -d` again) would otherwise wait
    /// for the reader forever, holding its fds in a pod's long-lived shim.
    pub fn release(&self) {
        for id in self.stdin.iter().chain(&self.outputs) {
            io_loop().remove(*id);
        }
    }

    /// ResizePty.
    pub fn resize(&self, width: u32, height: u32) -> Result<(), StdioError> {
        let Some(console) = &self.console else { return Err(StdioError::NoTerminal) };
        let ws = libc::winsize { ws_row: height as u16, ws_col: width as u16, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ with a valid winsize on the pty master we own.
        let r = unsafe { libc::ioctl(console.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        nix::errno::Errno::result(r).map(drop).map_err(StdioError::Resize)
    }

    /// Connects a terminal's master to containerd's FIFOs: stdin into it,
    /// everything it prints to stdout (a terminal has no separate stderr).
    pub fn attach_console(&mut self, master: OwnedFd, stdin: &str, stdout: &str) -> Result<(), StdioError> {
        let master = File::from(master);
        let writer = master.try_clone().map_err(|e| StdioError::Open { path: "pty master".into(), source: e })?;
        if !stdin.is_empty() {
            self.stdin = Some(copy(open_stdin(Path::new(local_path(stdin)?))?, writer, None)?);
        }
        if !stdout.is_empty() {
            let sink = open_sink(stdout)?;
            let (tx, rx) = channel();
            self.done.push(rx);
            let reader = master.try_clone().map_err(|e| StdioError::Open { path: "pty master".into(), source: e })?;
            self.outputs.push(copy(reader, sink, Some(tx))?);
        }
        self.console = Some(master);
        Ok(())
    }
}

fn devnull(write: bool) -> Result<OwnedFd, StdioError> {
    let path = Path::new("/dev/null");
    OpenOptions::new()
        .read(!write)
        .write(write)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|source| StdioError::Open { path: path.into(), source })
}

fn pipe() -> Result<(OwnedFd, OwnedFd), StdioError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(StdioError::Pipe)
}

/// Gives the process's end of a pipe to the IoUid/IoGid owner.
fn own(fd: &OwnedFd, owner: Option<(u32, u32)>) -> Result<(), StdioError> {
    if let Some((uid, gid)) = owner {
        nix::unistd::fchown(fd, Some(uid.into()), Some(gid.into())).map_err(StdioError::Pipe)?;
    }
    Ok(())
}

fn local_path(uri: &str) -> Result<&str, StdioError> {
    if let Some(p) = uri.strip_prefix("file://") {
        return Ok(p);
    }
    if uri.contains("://") {
        return Err(StdioError::Unsupported(uri.to_string()));
    }
    Ok(uri)
}

fn copy(from: File, to: File, done: Option<Sender<()>>) -> Result<u64, StdioError> {
    io_loop().copy(from, to, done).map_err(StdioError::Copy)
}

/// Opens containerd's stdin FIFO for the IO loop. A blocking open of a
/// FIFO for reading waits for a writer, so it is opened non-blocking; epoll
/// reports such a FIFO neither readable nor hung up until a writer has
/// come, so the copy simply waits for it.
fn open_stdin(path: &Path) -> Result<File, StdioError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| StdioError::Open { path: path.into(), source })
}

/// Our own end of an output FIFO (or a `file://` log).
fn open_sink(uri: &str) -> Result<File, StdioError> {
    let path = Path::new(local_path(uri)?);
    // O_RDWR on a FIFO never blocks on open and never raises SIGPIPE,
    // whether or not containerd's reader is there right now.
    let is_file = uri.starts_with("file://");
    if is_file {
        // As runc's shim does, a log file's directory is created.
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| StdioError::Open { path: dir.into(), source })?;
        }
    }
    OpenOptions::new()
        .read(!is_file)
        .write(true)
        .append(is_file)
        .create(is_file)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| StdioError::Open { path: path.into(), source })
}

/// Who the process's stdio is for.
pub struct LogTarget<'a> {
    pub container_id: &'a str,
    /// containerd's namespace, for `binary://` loggers.
    pub namespace: &'a str,
    /// IoUid/IoGid from the runtime options: the owner of the pipes the
    /// process gets, so it can reopen them through /proc/self/fd.
    pub owner: Option<(u32, u32)>,
}

/// Starts a `binary://` logger the way containerd's shims do: the process's
/// stdout and stderr pipes are its fds 3 and 4, and it closes fd 5 when it
/// is ready. Its arguments come from the URI's query, and its environment
/// holds only CONTAINER_ID and CONTAINER_NAMESPACE.
fn start_logger(uri: &str, target: &LogTarget<'_>) -> Result<(OwnedFd, OwnedFd), StdioError> {
    let rest = uri.strip_prefix("binary://").unwrap_or(uri);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let args: Vec<String> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .flat_map(|kv| match kv.split_once('=') {
            Some((k, v)) => vec![percent_decode(k), percent_decode(v)],
            None => vec![percent_decode(kv)],
        })
        .collect();
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (ready_r, ready_w) = pipe()?;
    let fds = [out_r.as_raw_fd(), err_r.as_raw_fd(), ready_w.as_raw_fd()];
    let mut cmd = std::process::Command::new(path);
    cmd.args(&args)
        .env_clear()
        .env("CONTAINER_ID", target.container_id)
        .env("CONTAINER_NAMESPACE", target.namespace)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: place_fds is async-signal-safe; the logger gets the two
    // streams and the ready pipe as fds 3, 4 and 5.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || runtime::spawn::place_fds(fds, 3));
    }
    // The logger's exit is reaped and dropped by the shim's reaper: the
    // handle is never waited on, as in containerd's own shims.
    runtime::unblock_signals_in_child(&mut cmd);
    cmd.spawn().map_err(|source| StdioError::Open { path: path.into(), source })?;
    drop((out_r, err_r, ready_w));
    let mut byte = [0u8; 1];
    File::from(ready_r).read(&mut byte).map_err(|source| StdioError::Open { path: path.into(), source })?;
    Ok((out_w, err_w))
}

/// URL query decoding, as Go's url.Query() does for the logger's arguments.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Opens containerd's stdio paths for a process. An empty path means
/// /dev/null. With a terminal, the process gets /dev/null here and its pty
/// later ([`IoHandles::attach_console`]).
pub fn open(stdin: &str, stdout: &str, stderr: &str, terminal: bool, target: &LogTarget<'_>) -> Result<(Stdio3, IoHandles), StdioError> {
    let mut io = IoHandles { done: Vec::new(), stdin: None, outputs: Vec::new(), console: None };
    if terminal {
        return Ok((Stdio3 { stdin: devnull(false)?, stdout: devnull(true)?, stderr: devnull(true)? }, io));
    }
    let stdin_fd = if stdin.is_empty() {
        devnull(false)?
    } else {
        let (r, w) = pipe()?;
        own(&r, target.owner)?;
        io.stdin = Some(copy(open_stdin(Path::new(local_path(stdin)?))?, File::from(w), None)?);
        r
    };
    let mut output = |uri: &str| -> Result<OwnedFd, StdioError> {
        if uri.is_empty() {
            return devnull(true);
        }
        let sink = open_sink(uri)?;
        let (r, w) = pipe()?;
        own(&w, target.owner)?;
        let (tx, rx) = channel();
        io.done.push(rx);
        io.outputs.push(copy(File::from(r), sink, Some(tx))?);
        Ok(w)
    };
    if stdout.starts_with("binary://") {
        // One logger takes both streams; containerd passes the same URI as
        // stdout and stderr.
        let (out, err) = start_logger(stdout, target)?;
        own(&out, target.owner)?;
        own(&err, target.owner)?;
        return Ok((Stdio3 { stdin: stdin_fd, stdout: out, stderr: err }, io));
    }
    let stdout_fd = output(stdout)?;
    let stderr_fd = output(stderr)?;
    Ok((Stdio3 { stdin: stdin_fd, stdout: stdout_fd, stderr: stderr_fd }, io))
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn logger_arguments_are_query_decoded() {
        assert_eq!(percent_decode("a%2Fb+c"), "a/b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
