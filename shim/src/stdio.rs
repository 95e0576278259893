//! The container's standard streams.
//!
//! The container writes into pipes that the shim owns, and copy threads
//! move the bytes to containerd's FIFOs. Holding our own ends (as the
//! rust-extensions runc shim does) means a reader that goes away, such as a
//! restarting containerd, never SIGPIPEs the container, and lets the shim
//! drain the tail of the output before it reports the exit.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use runtime::launch::Stdio3;

#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    #[error("open {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("create pipe: {0}")]
    Pipe(nix::errno::Errno),
    #[error("stdio uri {0} is not supported yet: use a fifo or file path")]
    Unsupported(String),
}

/// Threads copying the container's output; each signals when it hit EOF.
pub struct Copies {
    done: Vec<Receiver<()>>,
}

impl Copies {
    /// Waits until every output copy has finished, at most `timeout`: a
    /// process that left a child holding the pipe must not hold up its exit.
    pub fn drain(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for rx in self.done.drain(..) {
            let left = deadline.saturating_duration_since(Instant::now());
            if rx.recv_timeout(left).is_err() {
                log::warn!("output copy did not finish within {timeout:?}");
            }
        }
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

fn local_path(uri: &str) -> Result<&str, StdioError> {
    if let Some(p) = uri.strip_prefix("file://") {
        return Ok(p);
    }
    if uri.contains("://") {
        return Err(StdioError::Unsupported(uri.to_string()));
    }
    Ok(uri)
}

fn spawn_copy(name: &str, mut from: File, mut to: File, done: Option<std::sync::mpsc::Sender<()>>) {
    let _ = std::thread::Builder::new().name(name.into()).spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Err(e) = to.write_all(&buf[..n]) {
                        log::debug!("copy: {e}");
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        drop(to);
        if let Some(d) = done {
            let _ = d.send(());
        }
    });
}

/// Opens containerd's stdio paths. An empty path means /dev/null.
pub fn open(stdin: &str, stdout: &str, stderr: &str) -> Result<(Stdio3, Copies), StdioError> {
    let mut done = Vec::new();

    let stdin_fd = if stdin.is_empty() {
        devnull(false)?
    } else {
        let path = PathBuf::from(local_path(stdin)?);
        let (r, w) = pipe()?;
        // Opening a FIFO for reading blocks until containerd's writer shows
        // up, so it happens on the copy thread, not in Create.
        let _ = std::thread::Builder::new().name("stdin".into()).spawn(move || match File::open(&path) {
            Ok(f) => spawn_copy("stdin-copy", f, File::from(w), None),
            Err(e) => log::warn!("open stdin {}: {e}", path.display()),
        });
        r
    };

    let mut output = |uri: &str| -> Result<OwnedFd, StdioError> {
        if uri.is_empty() {
            return devnull(true);
        }
        let path = Path::new(local_path(uri)?);
        // O_RDWR on a FIFO never blocks on open and never raises SIGPIPE,
        // whether or not containerd's reader is there right now.
        let is_file = uri.starts_with("file://");
        let sink = OpenOptions::new()
            .read(!is_file)
            .write(true)
            .append(is_file)
            .create(is_file)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|source| StdioError::Open { path: path.into(), source })?;
        let (r, w) = pipe()?;
        let (tx, rx) = channel();
        done.push(rx);
        spawn_copy("output-copy", File::from(r), sink, Some(tx));
        Ok(w)
    };
    let stdout_fd = output(stdout)?;
    let stderr_fd = output(stderr)?;
    Ok((Stdio3 { stdin: stdin_fd, stdout: stdout_fd, stderr: stderr_fd }, Copies { done }))
}
