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
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant};

use runtime::launch::Stdio3;

use crate::io_loop::{io_loop, Source};

#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    #[error("open {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("create pipe: {0}")]
    Pipe(nix::errno::Errno),
    #[error("stdio uri {0} is not supported yet: use a fifo or file path")]
    Unsupported(String),
    #[error("resize terminal: {0}")]
    Resize(nix::errno::Errno),
    #[error("hand a stream to the io loop: {0}")]
    Copy(std::io::Error),
    #[error("no reader opened the output fifo {path} within {waited:?}: the client must open its fifos before Create and Exec, as containerd's clients do")]
    NoReader { path: PathBuf, waited: Duration },
}

/// How long Create (or an exec's Start) waits for the client's reader of
/// an output FIFO, as runc's shim does (its open of the write side blocks
/// under a 30 s deadline).
const READER_TIMEOUT: Duration = Duration::from_secs(30);

/// A process's side of the IO: output copies to drain, the stdin copy to
/// close, and the terminal master to resize.
pub struct IoHandles {
    done: Vec<Receiver<()>>,
    /// The IO loop's copy of containerd's stdin FIFO into the process.
    stdin: Option<u64>,
    /// Our own writer on the stdin FIFO, so that the copy reads end of file
    /// only once CloseIO dropped it and the client closed its writer too:
    /// a client that goes away and comes back (containerd restarts,
    /// `ctr task attach`) does not end the process's input, and CloseIO
    /// does not cut off what the client wrote before it (runc's shim keeps
    /// the same writer, and CloseIO closes just that).
    stdin_keepalive: Option<File>,
    /// The IO loop's copies of the process's output into containerd's FIFOs.
    outputs: Vec<u64>,
    /// The copy from the terminal master, among `outputs`.
    pty_output: Option<u64>,
    /// A second handle on each output FIFO, for [`Drain::drain`].
    fifos: Vec<File>,
    console: Option<File>,
    /// Writers on output FIFOs whose reader came before the caller took
    /// the container's lock ([`await_readers`]), used up by [`Self::output`].
    readers: Readers,
}

/// Writers held on the output FIFOs of a process, each opened once the
/// client's reader was there. An exec's Start waits for them before it
/// takes the container's lock: a client that is slow to open its readers
/// (up to [`READER_TIMEOUT`]) then holds up only its own Start, not State,
/// Kill or the exit of the container's other processes.
#[derive(Default)]
pub struct Readers(Vec<(String, File)>);

impl Readers {
    fn take(&mut self, uri: &str) -> Option<File> {
        let at = self.0.iter().position(|(u, _)| u == uri)?;
        Some(self.0.swap_remove(at).1)
    }
}

/// Waits for the client's reader of each output FIFO among `uris` (an
/// empty path, a `file://` log and a `binary://` logger have none).
pub fn await_readers(uris: &[&str]) -> Result<Readers, StdioError> {
    let mut readers = Readers::default();
    for uri in uris {
        if uri.is_empty() || uri.contains("://") || readers.0.iter().any(|(u, _)| u == uri) {
            continue;
        }
        let path = Path::new(uri);
        if std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo()) {
            readers.0.push((uri.to_string(), wait_for_reader(path)?));
        }
    }
    Ok(readers)
}

/// The output of a process that exited, to deliver before its exit is
/// reported.
pub struct Drain {
    done: Vec<Receiver<()>>,
    pty_output: Option<u64>,
    fifos: Vec<File>,
}

impl Drain {
    /// Waits, at most `timeout` in all, until every output copy has
    /// finished and the readers of containerd's FIFOs have taken what the
    /// copies put there. A process that left a child holding the pipe
    /// must not hold up its exit, so the wait is bounded.
    pub fn drain(self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        if let Some(id) = self.pty_output {
            io_loop().shutdown(id);
        }
        for rx in self.done {
            let left = deadline.saturating_duration_since(Instant::now());
            if rx.recv_timeout(left).is_err() {
                log::warn!("output copy did not finish within {timeout:?}");
            }
        }
        for fifo in self.fifos {
            wait_consumed(fifo, deadline);
        }
    }
}

/// Waits until the reader of an output FIFO has read everything in it, no
/// reader is left, or the deadline passes. ctr 1.6 closes its readers as
/// soon as Wait answers (the client's task.Delete closes its FIFOs before
/// it waits for its copies), so bytes still in the FIFO then are lost;
/// runc's shim, which reports the exit without waiting for its copies,
/// loses them too. Here the exit is reported once the reader has them.
fn wait_consumed(fifo: File, deadline: Instant) {
    // Through a write-only handle, once every handle of ours that also
    // reads is closed (the copy's closed as it finished; `fifo` below): the
    // kernel then reports POLLERR when no reader is left (pipe_poll).
    let writer = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", fifo.as_raw_fd()));
    drop(fifo);
    let Ok(writer) = writer else { return };
    loop {
        let mut unread: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int, the bytes not yet read.
        let r = unsafe { libc::ioctl(writer.as_raw_fd(), libc::FIONREAD, &mut unread) };
        if r != 0 || unread == 0 {
            return;
        }
        let mut fds = [nix::poll::PollFd::new(writer.as_fd(), nix::poll::PollFlags::POLLOUT)];
        let hung_up = nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO)
            .map(|_| fds[0].revents().is_some_and(|e| e.contains(nix::poll::PollFlags::POLLERR)))
            .unwrap_or(true);
        if hung_up {
            log::debug!("output fifo: {unread} bytes left with no reader");
            return;
        }
        if Instant::now() >= deadline {
            log::warn!("output fifo: the reader left {unread} bytes unread");
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Handles dropped without a Delete (a Create or exec Start that failed
/// after its stdio was opened) must not leave copies in the IO loop.
impl Drop for IoHandles {
    fn drop(&mut self) {
        self.release();
    }
}

impl IoHandles {
    pub fn take_outputs(&mut self) -> Drain {
        Drain { done: std::mem::take(&mut self.done), pty_output: self.pty_output, fifos: std::mem::take(&mut self.fifos) }
    }

    /// CloseIO: our writer on the stdin FIFO goes. The process sees end of
    /// file once it has read everything the client wrote and the client's
    /// writer is closed too.
    pub fn close_stdin(&mut self) {
        self.stdin_keepalive = None;
    }

    /// The process is deleted: stop feeding it, and close our reader of the
    /// stdin FIFO, whether or not containerd ever opened its writer (it
    /// never does with `ctr run -d`). Output copies still running go too:
    /// one whose FIFO nobody reads (`ctr run -d` again) would otherwise wait
    /// for the reader forever, holding its fds in a pod's long-lived shim.
    pub fn release(&mut self) {
        for id in self.stdin.iter().chain(&self.outputs) {
            io_loop().remove(*id);
        }
        self.stdin_keepalive = None;
        self.fifos.clear();
    }

    /// ResizePty; nothing to do for a process without a terminal.
    pub fn resize(&self, width: u32, height: u32) -> Result<(), StdioError> {
        let Some(console) = &self.console else { return Ok(()) };
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
            self.open_stdin(stdin, writer)?;
        }
        if !stdout.is_empty() {
            let reader = master.try_clone().map_err(|e| StdioError::Open { path: "pty master".into(), source: e })?;
            let id = self.output(reader, Source::Pty, stdout)?;
            self.pty_output = Some(id);
        }
        self.console = Some(master);
        self.readers = Readers::default();
        Ok(())
    }

    /// Copies containerd's stdin FIFO into `to`, keeping our own writer on
    /// the FIFO until CloseIO.
    fn open_stdin(&mut self, uri: &str, to: File) -> Result<(), StdioError> {
        let path = Path::new(local_path(uri)?);
        // A blocking open of a FIFO for reading waits for a writer, so it
        // is opened non-blocking; epoll reports such a FIFO neither
        // readable nor hung up until a writer has come, so the copy simply
        // waits for it.
        let open = |write: bool| {
            OpenOptions::new()
                .read(!write)
                .write(write)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(path)
                .map_err(|source| StdioError::Open { path: path.into(), source })
        };
        let reader = open(false)?;
        // Opened after our reader, so it never meets ENXIO. A file://
        // stdin (not a FIFO) needs none.
        let is_fifo = reader.metadata().map(|m| m.file_type().is_fifo()).unwrap_or(false);
        self.stdin_keepalive = if is_fifo { Some(open(true)?) } else { None };
        self.stdin = Some(copy(reader, Source::Stream, to, None)?);
        Ok(())
    }

    /// Copies `from` into the output `uri`, to be drained at exit.
    fn output(&mut self, from: File, source: Source, uri: &str) -> Result<u64, StdioError> {
        let ready = self.readers.take(uri);
        let (sink, fifo) = open_sink(uri, ready)?;
        let (tx, rx) = channel();
        self.done.push(rx);
        self.fifos.extend(fifo);
        let id = copy(from, source, sink, Some(tx))?;
        self.outputs.push(id);
        Ok(id)
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

fn copy(from: File, source: Source, to: File, done: Option<Sender<()>>) -> Result<u64, StdioError> {
    io_loop().copy(from, source, to, done).map_err(StdioError::Copy)
}

/// Waits until a reader has the FIFO at `path` open, and returns a writer
/// that holds it for the caller: runc's shim opens the write side of an
/// output FIFO with a blocking open, which returns once a reader is there.
/// Without that, what the process writes before the client's reader comes
/// sits in a FIFO we alone hold, and is lost when we close it. containerd's
/// clients (ctr, the CRI, the Go client's cio) open their readers before
/// Create and Exec, but in a goroutine that may run late under load: an
/// exec could start, write and exit before it did. Polled with O_NONBLOCK
/// (ENXIO while no reader is there), so no thread is left blocked in
/// open(2) if none ever comes.
fn wait_for_reader(path: &Path) -> Result<File, StdioError> {
    let started = Instant::now();
    let mut pause = Duration::from_micros(50);
    loop {
        match OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(path) {
            Ok(w) => {
                if started.elapsed() > Duration::from_millis(1) {
                    log::debug!("output fifo {}: reader came after {:.1} ms", path.display(), started.elapsed().as_secs_f64() * 1e3);
                }
                return Ok(w);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
            Err(source) => return Err(StdioError::Open { path: path.into(), source }),
        }
        if started.elapsed() >= READER_TIMEOUT {
            return Err(StdioError::NoReader { path: path.into(), waited: READER_TIMEOUT });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// Our own end of an output FIFO (or a `file://` log), and for a FIFO a
/// second handle on it for the drain at exit. `ready` is a writer from
/// [`await_readers`]: the reader came already, so there is no wait here.
fn open_sink(uri: &str, ready: Option<File>) -> Result<(File, Option<File>), StdioError> {
    let path = Path::new(local_path(uri)?);
    let is_file = uri.starts_with("file://");
    if is_file {
        // As runc's shim does, a log file's directory is created.
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| StdioError::Open { path: dir.into(), source })?;
        }
    }
    let is_fifo = !is_file && std::fs::metadata(path).map(|m| m.file_type().is_fifo()).unwrap_or(false);
    // Held until our own handle is open, so that the FIFO never loses its
    // last writer in between (the reader would read end of file).
    let reader_there = match ready {
        Some(w) => Some(w),
        None if is_fifo => Some(wait_for_reader(path)?),
        None => None,
    };
    // O_RDWR on a FIFO never blocks on open and never raises SIGPIPE: when
    // containerd's reader goes (a restart), the FIFO's buffer takes the
    // output, then back-pressure holds the process until a reader is back.
    let sink = OpenOptions::new()
        .read(!is_file)
        .write(true)
        .append(is_file)
        .create(is_file)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| StdioError::Open { path: path.into(), source })?;
    drop(reader_there);
    let fifo = if is_fifo { Some(sink.try_clone().map_err(|source| StdioError::Open { path: path.into(), source })?) } else { None };
    Ok((sink, fifo))
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
    let null_in = devnull(false)?;
    let null_out = devnull(true)?;
    let env = [format!("CONTAINER_ID={}", target.container_id), format!("CONTAINER_NAMESPACE={}", target.namespace)];
    let argv: Vec<&std::ffi::OsStr> = std::iter::once(path).chain(args.iter().map(String::as_str)).map(std::ffi::OsStr::new).collect();
    let fds = [null_in.as_raw_fd(), null_out.as_raw_fd(), null_out.as_raw_fd(), out_r.as_raw_fd(), err_r.as_raw_fd(), ready_w.as_raw_fd()];
    // The logger's exit is reaped and dropped by the shim's reaper: nothing
    // waits for it, as in containerd's own shims.
    runtime::spawn::helper(Path::new(path), &argv, &env, &fds).map_err(|source| StdioError::Open { path: path.into(), source })?;
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
/// later ([`IoHandles::attach_console`]). `readers` are what
/// [`await_readers`] found for these paths, if the caller waited already.
pub fn open(stdin: &str, stdout: &str, stderr: &str, terminal: bool, target: &LogTarget<'_>, readers: Readers) -> Result<(Stdio3, IoHandles), StdioError> {
    let mut io = IoHandles { done: Vec::new(), stdin: None, stdin_keepalive: None, outputs: Vec::new(), pty_output: None, fifos: Vec::new(), console: None, readers };
    if terminal {
        return Ok((Stdio3 { stdin: devnull(false)?, stdout: devnull(true)?, stderr: devnull(true)? }, io));
    }
    let stdin_fd = if stdin.is_empty() {
        devnull(false)?
    } else {
        let (r, w) = pipe()?;
        own(&r, target.owner)?;
        io.open_stdin(stdin, File::from(w))?;
        r
    };
    let mut output = |uri: &str| -> Result<OwnedFd, StdioError> {
        if uri.is_empty() {
            return devnull(true);
        }
        let (r, w) = pipe()?;
        own(&w, target.owner)?;
        io.output(File::from(r), Source::Stream, uri)?;
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
    io.readers = Readers::default();
    Ok((Stdio3 { stdin: stdin_fd, stdout: stdout_fd, stderr: stderr_fd }, io))
}

#[cfg(test)]
mod tests {
    use super::{await_readers, percent_decode};
    use std::os::unix::fs::OpenOptionsExt;

    #[test]
    fn await_readers_holds_a_writer_on_each_fifo_with_a_reader() {
        let dir = std::env::temp_dir().join(format!("rsv2-stdio-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("out");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let file = dir.join("log");
        std::fs::write(&file, b"").unwrap();
        let reader = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&fifo).unwrap();
        let (f, l) = (fifo.display().to_string(), file.display().to_string());
        let file_uri = format!("file://{l}");
        // The FIFO once (named twice), no regular file, no log URI, no
        // empty path.
        let mut readers = await_readers(&[&f, &f, &l, &file_uri, "", "binary:///bin/logger"]).unwrap();
        assert_eq!(readers.0.len(), 1);
        assert!(readers.take(&f).is_some());
        assert!(readers.take(&f).is_none());
        drop(reader);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn logger_arguments_are_query_decoded() {
        assert_eq!(percent_decode("a%2Fb+c"), "a/b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
