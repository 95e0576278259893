//! The shim's one IO thread (`io` in `ps`): an epoll loop that moves every
//! container's stdio between pipes and containerd's FIFOs, and wakes the
//! reaper (a signalfd for SIGCHLD) and the OOM watcher (eventfd or
//! inotify fds).
//!
//! A thread per stream, as before, cost an idle shim five threads for one
//! container, each with a 32 KiB buffer and a dirty stack (issue #7). Here a
//! copy holds no buffer while it is idle: bytes go from one shared read
//! buffer straight to the sink, and only what a full sink refused is kept.
//! Back-pressure is kept: while a sink is full the copy stops reading its
//! source, so the container blocks on its own pipe, as it would on a thread
//! blocked in write.

use crate::LockExt;
use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, OnceLock};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

/// The loop's one read buffer, shared by every copy.
const CHUNK: usize = 64 * 1024;
/// At most this many reads per copy per wakeup, so that one container
/// printing without pause cannot starve the others (epoll is
/// level-triggered: it comes back).
const READS_PER_WAKEUP: usize = 16;

type Callback = Arc<Mutex<dyn FnMut() + Send>>;

enum Entry {
    /// An fd whose owner reacts to readability, outside the loop's lock.
    Watch { fd: RawFd, callback: Callback },
    Copy(Copy),
}

/// What a copy reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A pipe or FIFO: end of file ends the copy.
    Stream,
    /// A pty master. EIO there says only that no slave fd is open at the
    /// moment, and on this kernel it can come while output is still
    /// queued for the master (a tty exec lost the last 8 KiB of its
    /// output 1 time in 750). So until the process has exited
    /// ([`IoLoop::shutdown`]) an EIO parks the copy instead of ending it,
    /// as containerd's console reader treats EIO as EAGAIN until its
    /// Shutdown; after that the master is read until it has nothing left.
    Pty,
}

/// One direction of a stream: `src` into `dst`.
struct Copy {
    src: File,
    source: Source,
    /// None once it is closed.
    dst: Option<File>,
    /// Bytes read from `src` that `dst` has not taken yet.
    pending: Vec<u8>,
    /// Whether the loop waits for `dst` to become writable (and so does
    /// not read `src`).
    waiting_dst: bool,
    /// The process exited: a pty master is read to its end (see [`Source::Pty`]).
    closing: bool,
    /// A pty copy taken off the epoll set after an early EIO, until
    /// [`IoLoop::shutdown`] (a hung-up master is always readable, and the
    /// level-triggered loop would spin on it).
    parked: bool,
    done: Option<Sender<()>>,
}

enum Progress {
    /// `src` has nothing more for now.
    Idle,
    /// `dst` is full.
    DstFull,
    /// A pty master said EIO before its process exited.
    Parked,
    /// End of file on `src`, or `dst` is gone or broken.
    Finished,
}

impl Copy {
    fn pump(&mut self, buf: &mut [u8]) -> Progress {
        for _ in 0..READS_PER_WAKEUP {
            if let Some(p) = self.flush() {
                return p;
            }
            let pty = self.source == Source::Pty;
            let n = match self.src.read(buf) {
                Ok(0) => return Progress::Finished,
                Ok(n) => n,
                // A pty master whose process exited is read until it has
                // nothing left.
                Err(e) if e.kind() == ErrorKind::WouldBlock && pty && self.closing => return Progress::Finished,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Progress::Idle,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // A pty master reads EIO while no slave fd is open.
                Err(e) if pty && !self.closing && e.raw_os_error() == Some(libc::EIO) => return Progress::Parked,
                Err(_) => return Progress::Finished,
            };
            // Straight from the read buffer; only what the sink refuses is
            // kept.
            match self.write(&buf[..n]) {
                Err(p) => return p,
                Ok(w) if w < n => {
                    self.pending.extend_from_slice(&buf[w..n]);
                    return Progress::DstFull;
                }
                Ok(_) => {}
            }
        }
        Progress::Idle
    }

    /// Writes what a full sink refused before. None when all of it went.
    fn flush(&mut self) -> Option<Progress> {
        if self.pending.is_empty() {
            return None;
        }
        let mut pending = std::mem::take(&mut self.pending);
        match self.write(&pending) {
            Err(p) => Some(p),
            Ok(w) if w < pending.len() => {
                pending.drain(..w);
                self.pending = pending;
                Some(Progress::DstFull)
            }
            Ok(_) => None,
        }
    }

    /// Writes as much of `data` as the sink takes now. Err once the copy is
    /// over: the sink is closed (CloseIO) or broken.
    fn write(&mut self, data: &[u8]) -> Result<usize, Progress> {
        let Some(dst) = self.dst.as_mut() else { return Err(Progress::Finished) };
        let mut done = 0;
        while done < data.len() {
            match dst.write(&data[done..]) {
                Ok(0) => return Err(Progress::Finished),
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("copy: {e}");
                    return Err(Progress::Finished);
                }
            }
        }
        Ok(done)
    }
}

/// The loop's read buffer: its own mapping, so that its pages can be
/// dropped whenever the loop goes idle (a heap buffer would stay dirty).
struct Scratch {
    ptr: *mut u8,
    used: bool,
}

impl Scratch {
    fn new() -> Scratch {
        // SAFETY: a private anonymous mapping, ours alone.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), CHUNK, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
        assert!(ptr != libc::MAP_FAILED, "map the io loop's buffer: {}", std::io::Error::last_os_error());
        Scratch { ptr: ptr.cast(), used: false }
    }

    fn get(&mut self) -> &mut [u8] {
        self.used = true;
        // SAFETY: CHUNK bytes mapped read-write for the loop's lifetime,
        // borrowed mutably through &mut self only.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, CHUNK) }
    }

    fn release(&mut self) {
        if std::mem::take(&mut self.used) {
            // SAFETY: MADV_DONTNEED on our own mapping; it reads as zeroes
            // afterwards, which nothing relies on.
            unsafe { libc::madvise(self.ptr.cast(), CHUNK, libc::MADV_DONTNEED) };
        }
    }
}

pub struct IoLoop {
    epoll: Epoll,
    entries: Mutex<HashMap<u64, Entry>>,
    next: AtomicU64,
}

/// Tokens: an entry's id, with the low bit set for a copy's destination.
const DST: u64 = 1;

fn set_nonblocking(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// The shim's loop, started on first use.
pub fn io_loop() -> &'static IoLoop {
    static LOOP: OnceLock<&'static IoLoop> = OnceLock::new();
    LOOP.get_or_init(|| {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).expect("epoll_create");
        let l: &'static IoLoop = Box::leak(Box::new(IoLoop { epoll, entries: Mutex::new(HashMap::new()), next: AtomicU64::new(2) }));
        std::thread::Builder::new().name("io".into()).spawn(move || l.run()).expect("start the io thread");
        l
    })
}

impl IoLoop {
    fn id(&self) -> u64 {
        self.next.fetch_add(2, Ordering::Relaxed)
    }

    /// Calls `callback` with `source` on the loop thread whenever `source`
    /// is readable, until [`IoLoop::remove`], which closes it. The callback
    /// must not block.
    pub fn watch<T: AsFd + Send + 'static>(&self, source: T, mut callback: impl FnMut(&T) + Send + 'static) -> std::io::Result<u64> {
        let id = self.id();
        let fd = source.as_fd().as_raw_fd();
        let mut entries = self.entries.locked();
        self.epoll.add(source.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, id))?;
        // The entry owns `source`: its fd stays open while it is watched.
        entries.insert(id, Entry::Watch { fd, callback: Arc::new(Mutex::new(move || callback(&source))) });
        Ok(id)
    }

    /// Copies `src` into `dst` until end of file on `src` or an error on
    /// `dst`, then closes both and sends on `done`. Both become
    /// non-blocking.
    pub fn copy(&self, src: File, source: Source, dst: File, done: Option<Sender<()>>) -> std::io::Result<u64> {
        set_nonblocking(src.as_fd())?;
        set_nonblocking(dst.as_fd())?;
        let id = self.id();
        let mut entries = self.entries.locked();
        self.epoll.add(&src, EpollEvent::new(EpollFlags::EPOLLIN, id))?;
        let copy = Copy { src, source, dst: Some(dst), pending: Vec::new(), waiting_dst: false, closing: false, parked: false, done };
        entries.insert(id, Entry::Copy(copy));
        Ok(id)
    }

    /// The process of a [`Source::Pty`] copy exited: read its master until
    /// it has nothing left, then finish.
    pub fn shutdown(&self, id: u64) {
        if let Some(Entry::Copy(c)) = self.entries.locked().get_mut(&id) {
            c.closing = true;
            if std::mem::take(&mut c.parked) {
                // A hung-up master is readable at once: the loop reads it
                // to its end.
                if let Err(e) = self.epoll.add(&c.src, EpollEvent::new(EpollFlags::EPOLLIN, id)) {
                    log::warn!("io loop: watch a pty master again: {e}");
                }
            }
        }
    }

    /// Stops a watch or a copy and closes what it owns.
    pub fn remove(&self, id: u64) {
        let entry = self.entries.locked().remove(&id);
        match entry {
            Some(Entry::Copy(c)) => self.finish(c),
            Some(Entry::Watch { fd, callback }) => {
                // SAFETY: `callback` owns the watched source, so the fd is
                // open until it is dropped, after this.
                let _ = self.epoll.delete(unsafe { BorrowedFd::borrow_raw(fd) });
                drop(callback);
            }
            None => {}
        }
    }

    fn finish(&self, c: Copy) {
        match (c.waiting_dst, &c.dst) {
            (true, Some(dst)) => drop(self.epoll.delete(dst)),
            _ if c.parked => {}
            _ => drop(self.epoll.delete(&c.src)),
        }
        drop((c.src, c.dst));
        if let Some(done) = c.done {
            let _ = done.send(());
        }
    }

    fn run(&self) {
        let mut events = [EpollEvent::empty(); 16];
        let mut buf = Scratch::new();
        loop {
            // Nothing ready: give the buffer's pages back before sleeping,
            // so an idle shim does not carry them.
            let mut n = self.wait(&mut events, EpollTimeout::ZERO);
            if n == 0 {
                buf.release();
                n = self.wait(&mut events, EpollTimeout::NONE);
            }
            for ev in &events[..n] {
                let id = ev.data() & !DST;
                let callback = {
                    let mut entries = self.entries.locked();
                    match entries.get_mut(&id) {
                        Some(Entry::Watch { callback, .. }) => Some(callback.clone()),
                        Some(Entry::Copy(c)) => {
                            if self.step(id, c, buf.get()) {
                                if let Some(Entry::Copy(c)) = entries.remove(&id) {
                                    self.finish(c);
                                }
                            }
                            None
                        }
                        None => None,
                    }
                };
                // Outside the lock: a callback may watch or remove.
                if let Some(cb) = callback {
                    (cb.locked())();
                }
            }
        }
    }

    fn wait(&self, events: &mut [EpollEvent], timeout: EpollTimeout) -> usize {
        loop {
            match self.epoll.wait(events, timeout) {
                Ok(n) => return n,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    // Only a bad epoll fd or buffer gets here: not something
                    // to spin on.
                    log::error!("io loop: epoll_wait: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        }
    }

    /// Moves what it can. Returns true once the copy is finished.
    fn step(&self, id: u64, c: &mut Copy, buf: &mut [u8]) -> bool {
        match c.pump(buf) {
            Progress::Finished => return true,
            Progress::Parked => {
                // Read in pump: the source is on the set, not the sink.
                let _ = self.epoll.delete(&c.src);
                c.parked = true;
            }
            Progress::DstFull if !c.waiting_dst => {
                // Stop reading until the sink takes more. The source
                // leaves the set altogether: epoll reports a hang-up
                // whatever the mask, and level-triggered, it would spin.
                let dst = c.dst.as_ref().expect("a full sink exists");
                let _ = self.epoll.delete(&c.src);
                let _ = self.epoll.add(dst, EpollEvent::new(EpollFlags::EPOLLOUT, id | DST));
                c.waiting_dst = true;
            }
            Progress::DstFull => {}
            Progress::Idle if c.waiting_dst => {
                if let Some(dst) = &c.dst {
                    let _ = self.epoll.delete(dst);
                }
                let _ = self.epoll.add(&c.src, EpollEvent::new(EpollFlags::EPOLLIN, id));
                c.waiting_dst = false;
            }
            Progress::Idle => {}
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    fn pipe() -> (File, File) {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        (File::from(r), File::from(w))
    }

    #[test]
    fn copies_everything_in_order_through_a_slow_reader_then_says_done() {
        let (src_r, mut src_w) = pipe();
        let (mut dst_r, dst_w) = pipe();
        let (tx, rx) = channel();
        io_loop().copy(src_r, Source::Stream, dst_w, Some(tx)).unwrap();
        // Four times what the two pipes hold: the copy must wait for the
        // reader (back-pressure) without losing or reordering a byte.
        let data: Vec<u8> = (0..512 * 1024u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let writer = std::thread::spawn(move || {
            src_w.write_all(&data).unwrap();
            // Dropping the writer is the end of file the copy waits for.
        });
        let mut got = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            std::thread::sleep(Duration::from_micros(200));
            match dst_r.read(&mut chunk).unwrap() {
                0 => break,
                n => got.extend_from_slice(&chunk[..n]),
            }
        }
        writer.join().unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "the bytes arrived changed or out of order");
        rx.recv_timeout(Duration::from_secs(5)).expect("done once the source ended");
    }

    #[test]
    fn remove_closes_everything() {
        let (src_r, mut src_w) = pipe();
        let (_dst_r, dst_w) = pipe();
        let (tx, rx) = channel();
        let id = io_loop().copy(src_r, Source::Stream, dst_w, Some(tx)).unwrap();
        io_loop().remove(id);
        rx.recv_timeout(Duration::from_secs(5)).expect("done when removed");
        // Our read end is closed: the writer gets EPIPE (SIGPIPE is
        // ignored by Rust test binaries, as by the shim).
        let err = src_w.write_all(b"after").expect_err("the source's read end is closed");
        assert_eq!(err.kind(), ErrorKind::BrokenPipe);
    }

    /// A pty pair: (master, slave).
    fn pty() -> (File, File) {
        let master = nix::pty::posix_openpt(nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY).unwrap();
        nix::pty::grantpt(&master).unwrap();
        nix::pty::unlockpt(&master).unwrap();
        let name = nix::pty::ptsname_r(&master).unwrap();
        let slave = std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOCTTY).open(name).unwrap();
        // Raw: no echo, no newline translation, bytes as written.
        let mut t = nix::sys::termios::tcgetattr(&slave).unwrap();
        nix::sys::termios::cfmakeraw(&mut t);
        nix::sys::termios::tcsetattr(&slave, nix::sys::termios::SetArg::TCSANOW, &t).unwrap();
        (File::from(std::os::fd::OwnedFd::from(master)), slave)
    }

    #[test]
    fn a_pty_copy_outlives_eio_until_shutdown_then_reads_to_the_end() {
        let (master, mut slave) = pty();
        let (mut dst_r, dst_w) = pipe();
        let (tx, rx) = channel();
        let id = io_loop().copy(master, Source::Pty, dst_w, Some(tx)).unwrap();
        slave.write_all(b"first").unwrap();
        let mut buf = [0u8; 5];
        dst_r.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"first");
        // Every slave fd closed: the master reads EIO. The copy must not
        // end (the process has not exited as far as the shim knows), nor
        // spin on the hung-up master.
        drop(slave);
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "an EIO before the exit ended the copy");
        io_loop().shutdown(id);
        rx.recv_timeout(Duration::from_secs(5)).expect("done once shut down and read to the end");
        let mut rest = Vec::new();
        dst_r.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{rest:?}");
    }}
