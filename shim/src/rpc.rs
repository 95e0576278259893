//! The ttrpc server of the `serve` role.
//!
//! One epoll loop, on the shim's main thread, accepts containerd's
//! connections and reads their request frames; each request then runs on a
//! worker (workers.rs), which writes the response. Workers end after a
//! moment without requests, so an idle shim keeps no thread for ttrpc but
//! this loop, blocked in epoll_wait.
//!
//! Why not ttrpc's sync `Server`: per connection it keeps a control thread,
//! a reader and a pool of handlers, and its listener polls every 10 ms:
//! seven idle threads (each with the dirty stack of its deepest request)
//! and a hundred wakeups a second in every idle shim (issue #7). The
//! handlers themselves are still the generated ones of containerd-shim-protos,
//! registered under the v2 and v3 service names.
//!
//! A request never waits for a busy worker, so Wait can block for as long
//! as the process runs without holding up anything else on the connection.

use crate::LockExt;
use std::collections::HashMap;
use std::io::ErrorKind;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use ttrpc::proto::{Codec, MESSAGE_HEADER_LENGTH, MESSAGE_LENGTH_MAX, MESSAGE_TYPE_REQUEST, MESSAGE_TYPE_RESPONSE};
use ttrpc::{get_status, Code, ConnectionContext, MessageHeader, MethodHandler, Request, Response, TtrpcContext};

use crate::workers::Workers;

pub type Methods = HashMap<String, Box<dyn MethodHandler + Send + Sync>>;

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("ttrpc server: {what}: {errno}")]
    Sys { what: &'static str, errno: nix::errno::Errno },
}

fn sys(what: &'static str) -> impl FnOnce(nix::errno::Errno) -> RpcError {
    move |errno| RpcError::Sys { what, errno }
}

/// Ends [`serve`]: Shutdown signals it once no container is left.
pub struct Quit(EventFd);

impl Quit {
    pub fn new() -> std::io::Result<Quit> {
        Ok(Quit(EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?))
    }

    pub fn signal(&self) {
        let _ = self.0.write(1);
    }
}

/// How long a response write may wait for containerd to read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long, after Shutdown, the loop waits for requests still running
/// (the Shutdown response itself among them).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

const LISTENER: u64 = 0;
const QUIT: u64 = 1;

/// One client connection. The fd closes when the loop and every request
/// thread of the connection have let go of it, so a request still running
/// never writes into a reused fd number.
struct Conn {
    fd: OwnedFd,
    write: Mutex<()>,
}

impl Conn {
    /// Writes one response frame. The socket is non-blocking (the loop
    /// reads it), so a full socket buffer is waited out here.
    fn write_frame(&self, stream_id: u32, payload: &[u8]) -> std::io::Result<()> {
        let frame = frame(stream_id, MESSAGE_TYPE_RESPONSE, payload);
        let _guard = self.write.locked();
        let deadline = Instant::now() + WRITE_TIMEOUT;
        let mut rest = &frame[..];
        while !rest.is_empty() {
            match nix::unistd::write(&self.fd, rest) {
                Ok(n) => rest = &rest[n..],
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(ErrorKind::TimedOut.into());
                    }
                    let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// One ttrpc frame: the 10-byte header (length, stream id, type, no
/// flags), then the payload.
pub fn frame(stream_id: u32, type_: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(MESSAGE_HEADER_LENGTH + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&stream_id.to_be_bytes());
    frame.extend_from_slice(&[type_, 0]);
    frame.extend_from_slice(payload);
    frame
}

/// Requests still running, for the drain at shutdown.
#[derive(Default)]
struct InFlight {
    count: Mutex<usize>,
    idle: Condvar,
}

impl InFlight {
    fn enter(&self) {
        *self.count.locked() += 1;
    }

    fn leave(&self) {
        let mut n = self.count.locked();
        *n -= 1;
        if *n == 0 {
            self.idle.notify_all();
        }
    }

    fn wait_idle(&self, timeout: Duration) {
        let n = self.count.locked();
        let _ = self.idle.wait_timeout_while(n, timeout, |n| *n > 0);
    }
}

/// A connection's read side, owned by the loop.
struct Reader {
    conn: Arc<Conn>,
    buf: Vec<u8>,
}

/// How long a shim that holds no container, and hears nothing, waits
/// before it ends: one whose containerd died between `start` and Create,
/// or between a Delete and its Shutdown, is otherwise left for good (runc's
/// shim is: containerd SIGKILLed during creates leaked dozens of them).
/// Any connection or request starts the wait again, so the shim that a
/// pod's next `start` just probed stays for the Create that follows.
pub const IDLE_EXIT: Duration = Duration::from_secs(10);

/// While a request runs, the loop looks again this often: the request may
/// have removed the last container.
const RECHECK: Duration = Duration::from_secs(2);

/// Serves `methods` on `listener` until `quit` is signalled, or until it
/// has held no container (`empty`) and heard nothing for `idle_exit`.
pub fn serve(listener: OwnedFd, methods: Methods, workers: &Workers, quit: &Quit, empty: &dyn Fn() -> bool, idle_exit: Duration) -> Result<(), RpcError> {
    let methods = Arc::new(methods);
    let in_flight = Arc::new(InFlight::default());
    nix::fcntl::fcntl(&listener, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK)).map_err(sys("set the listener non-blocking"))?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(sys("epoll_create"))?;
    epoll.add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER)).map_err(sys("watch the listener"))?;
    epoll.add(quit.0.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, QUIT)).map_err(sys("watch the quit eventfd"))?;
    let next = AtomicU64::new(QUIT + 1);
    let mut readers: HashMap<u64, Reader> = HashMap::new();
    let mut events = [EpollEvent::empty(); 8];
    let mut last_heard = Instant::now();
    'serve: loop {
        // An idle shim that holds containers sleeps without a timeout.
        let timeout = if *in_flight.count.locked() > 0 {
            Some(RECHECK)
        } else if empty() {
            let left = idle_exit.saturating_sub(last_heard.elapsed());
            if left.is_zero() {
                log::info!("no container and no call for {idle_exit:?}: exiting");
                break 'serve;
            }
            Some(left)
        } else {
            None
        };
        let timeout = timeout.map(|t| EpollTimeout::try_from(t).unwrap_or(EpollTimeout::MAX)).unwrap_or(EpollTimeout::NONE);
        let n = match epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(sys("epoll_wait")(e)),
        };
        if n > 0 {
            last_heard = Instant::now();
        }
        for ev in &events[..n] {
            match ev.data() {
                LISTENER => accept_all(&listener, &epoll, &next, &mut readers),
                QUIT => break 'serve,
                token => {
                    let open = readers.get_mut(&token).is_some_and(|r| read_requests(r, &methods, workers, &in_flight));
                    if !open {
                        if let Some(r) = readers.remove(&token) {
                            let _ = epoll.delete(&r.conn.fd);
                            log::debug!("ttrpc connection closed");
                        }
                    }
                }
            }
        }
    }
    in_flight.wait_idle(DRAIN_TIMEOUT);
    Ok(())
}

fn accept_all(listener: &OwnedFd, epoll: &Epoll, next: &AtomicU64, readers: &mut HashMap<u64, Reader>) {
    loop {
        // SAFETY: accept4 on our listener; a returned fd is ours.
        let fd = unsafe { libc::accept4(listener.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) };
        if fd < 0 {
            let e = nix::errno::Errno::last();
            if e != nix::errno::Errno::EAGAIN && e != nix::errno::Errno::EINTR {
                // Out of fds, say: the listener stays readable and the
                // level-triggered loop would spin. Let a moment pass.
                log::warn!("accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
            return;
        }
        // SAFETY: accept4 returned a new fd.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let token = next.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = epoll.add(&fd, EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP, token)) {
            log::warn!("watch a ttrpc connection: {e}");
            continue;
        }
        readers.insert(token, Reader { conn: Arc::new(Conn { fd, write: Mutex::new(()) }), buf: Vec::new() });
    }
}

/// Reads what the connection has and starts every complete request.
/// Returns false once the connection is finished with.
fn read_requests(r: &mut Reader, methods: &Arc<Methods>, workers: &Workers, in_flight: &Arc<InFlight>) -> bool {
    let mut open = true;
    let mut chunk = [0u8; 4096];
    loop {
        match nix::unistd::read(&r.conn.fd, &mut chunk) {
            Ok(0) => {
                open = false;
                break;
            }
            Ok(n) => r.buf.extend_from_slice(&chunk[..n]),
            Err(nix::errno::Errno::EAGAIN) => break,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => {
                open = false;
                break;
            }
        }
    }
    while r.buf.len() >= MESSAGE_HEADER_LENGTH {
        let mh = MessageHeader::from(&r.buf[..MESSAGE_HEADER_LENGTH]);
        let len = mh.length as usize;
        if len > MESSAGE_LENGTH_MAX {
            log::warn!("ttrpc frame of {len} bytes is over the {MESSAGE_LENGTH_MAX} limit: closing the connection");
            return false;
        }
        if r.buf.len() < MESSAGE_HEADER_LENGTH + len {
            break;
        }
        let payload = r.buf[MESSAGE_HEADER_LENGTH..MESSAGE_HEADER_LENGTH + len].to_vec();
        r.buf.drain(..MESSAGE_HEADER_LENGTH + len);
        if mh.type_ == MESSAGE_TYPE_REQUEST {
            start_request(workers, r.conn.clone(), mh, payload, methods.clone(), in_flight.clone());
        }
    }
    r.buf.shrink_to_fit();
    open
}

fn start_request(workers: &Workers, conn: Arc<Conn>, mh: MessageHeader, payload: Vec<u8>, methods: Arc<Methods>, in_flight: Arc<InFlight>) {
    in_flight.enter();
    let done = in_flight.clone();
    let ran = workers.run("rpc", move || {
        handle(&conn, mh, &payload, &methods);
        done.leave();
    });
    if let Err(e) = ran {
        log::error!("start a thread for a ttrpc request: {e}");
        in_flight.leave();
    }
}

/// The message a panic carried, for the log and the error answered.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_else(|| "a panic".into())
}

/// Runs one request through its generated handler and writes what the
/// handler answered (or the error it returned).
fn handle(conn: &Conn, mh: MessageHeader, payload: &[u8], methods: &Methods) {
    let (tx, rx) = std::sync::mpsc::channel();
    let conn_ctx = Arc::new(ConnectionContext::default());
    let failed = match <Request as Codec>::decode(payload) {
        Err(e) => Some(ttrpc::Error::RpcStatus(get_status(Code::INVALID_ARGUMENT, format!("decode request: {e}")))),
        Ok(req) => {
            let path = format!("/{}/{}", req.service, req.method);
            match methods.get(&path) {
                None => Some(ttrpc::Error::RpcStatus(get_status(Code::UNIMPLEMENTED, format!("{path} is not served by this shim")))),
                Some(method) => {
                    let mut metadata: HashMap<String, Vec<String>> = HashMap::new();
                    for kv in &req.metadata {
                        metadata.entry(kv.key.clone()).or_default().push(kv.value.clone());
                    }
                    let ctx = TtrpcContext {
                        fd: conn.fd.as_raw_fd(),
                        cancel_rx: crossbeam_channel::never(),
                        mh,
                        res_tx: tx.clone(),
                        metadata,
                        timeout_nano: req.timeout_nano,
                        conn_ctx: conn_ctx.clone(),
                    };
                    let t = Instant::now();
                    // One container's failure must not take the pod's
                    // shim with it: a panic fails this call only.
                    let failed = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| method.handler(ctx, req))) {
                        Ok(r) => r.err(),
                        Err(panic) => {
                            let what = panic_message(&*panic);
                            log::error!("{path} panicked: {what}");
                            Some(ttrpc::Error::RpcStatus(get_status(Code::INTERNAL, format!("{path}: internal error in containerd-shim-rust-v2: {what}"))))
                        }
                    };
                    log::debug!("{path} answered in {:.2} ms", t.elapsed().as_secs_f64() * 1e3);
                    failed
                }
            }
        }
    };
    if let Some(e) = failed {
        let res: Response = e.into();
        if let Err(e) = ttrpc::send_response(mh.stream_id, res, tx.clone(), &conn_ctx) {
            log::warn!("encode a ttrpc error response: {e}");
        }
    }
    drop(tx);
    for (out, buf) in rx.try_iter() {
        match conn.write_frame(out.stream_id, &buf) {
            Ok(()) => {}
            // The client went away meanwhile (a Wait outlives a restarting
            // containerd): nobody is left to answer.
            Err(e) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => log::debug!("write a ttrpc response: {e}"),
            Err(e) => log::warn!("write a ttrpc response: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// Answers with the request's payload.
    struct Echo;

    impl MethodHandler for Echo {
        fn handler(&self, ctx: TtrpcContext, req: Request) -> ttrpc::Result<()> {
            let res = Response { payload: req.payload, ..Default::default() };
            ctx.respond(ctx.mh.stream_id, res)
        }
    }

    /// Answers once released, as Wait does once its process exits.
    struct Gate(Arc<(Mutex<bool>, Condvar)>);

    impl MethodHandler for Gate {
        fn handler(&self, ctx: TtrpcContext, _req: Request) -> ttrpc::Result<()> {
            let (open, cv) = &*self.0;
            let _open = cv.wait_while(open.locked(), |o| !*o).unwrap();
            ctx.respond(ctx.mh.stream_id, Response::default())
        }
    }

    /// Panics, as a bug reached by some input would.
    struct Boom;

    impl MethodHandler for Boom {
        fn handler(&self, _ctx: TtrpcContext, _req: Request) -> ttrpc::Result<()> {
            panic!("boom from a test");
        }
    }

    fn request(method: &str, payload: &[u8]) -> Request {
        Request { service: "test.Service".into(), method: method.into(), payload: payload.to_vec(), ..Default::default() }
    }

    #[test]
    fn serves_requests_concurrently_and_names_unknown_methods() {
        let path = std::env::temp_dir().join(format!("rsv2-rpc-test-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener: OwnedFd = UnixListener::bind(&path).expect("bind a test socket").into();
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let mut methods: Methods = HashMap::new();
        methods.insert("/test.Service/Echo".into(), Box::new(Echo));
        methods.insert("/test.Service/Gate".into(), Box::new(Gate(gate.clone())));
        methods.insert("/test.Service/Boom".into(), Box::new(Boom));
        let quit = Arc::new(Quit::new().unwrap());
        let q = quit.clone();
        let server = std::thread::spawn(move || serve(listener, methods, &Workers::new(|| {}), &q, &|| false, IDLE_EXIT));

        let client = ttrpc::Client::connect(&format!("unix://{}", path.display())).expect("connect");
        // A request that blocks holds up nothing else on the connection.
        let c = client.clone();
        let blocked = std::thread::spawn(move || c.request(request("Gate", b"")));
        std::thread::sleep(Duration::from_millis(50));
        let res = client.request(request("Echo", b"hello")).expect("echo while another request waits");
        assert_eq!(res.payload, b"hello");
        // A large payload crosses several reads of the loop.
        let big = vec![7u8; 300 * 1024];
        assert_eq!(client.request(request("Echo", &big)).expect("a 300 KiB echo").payload, big);

        match client.request(request("Nope", b"")) {
            Err(ttrpc::Error::RpcStatus(s)) => {
                assert_eq!(s.code(), Code::UNIMPLEMENTED);
                assert!(s.message().contains("/test.Service/Nope"), "{}", s.message());
            }
            other => panic!("an unknown method must be UNIMPLEMENTED, got {other:?}"),
        }
        // A panic fails its own call with INTERNAL; the server goes on.
        match client.request(request("Boom", b"")) {
            Err(ttrpc::Error::RpcStatus(s)) => {
                assert_eq!(s.code(), Code::INTERNAL);
                assert!(s.message().contains("boom from a test"), "{}", s.message());
            }
            other => panic!("a panicking method must answer INTERNAL, got {other:?}"),
        }
        assert_eq!(client.request(request("Echo", b"after")).expect("echo after a panic").payload, b"after");

        *gate.0.locked() = true;
        gate.1.notify_all();
        blocked.join().unwrap().expect("the blocked request is answered once released");

        quit.signal();
        server.join().unwrap().expect("serve returns once quit is signalled");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn an_empty_shim_that_hears_nothing_ends() {
        let dir = tempfile_dir();
        let path = dir.join("idle.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let q = Quit::new().unwrap();
        let started = Instant::now();
        serve(listener.into(), Methods::new(), &Workers::new(|| {}), &q, &|| true, Duration::from_millis(300)).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300), "ended early");
        // A connection starts the wait again.
        let listener = UnixListener::bind(dir.join("idle2.sock")).unwrap();
        let p2 = dir.join("idle2.sock");
        let poke = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let _c = std::os::unix::net::UnixStream::connect(&p2).unwrap();
            std::thread::sleep(Duration::from_millis(50));
        });
        let started = Instant::now();
        serve(listener.into(), Methods::new(), &Workers::new(|| {}), &q, &|| true, Duration::from_millis(300)).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(480), "a connection did not restart the wait: {:?}", started.elapsed());
        poke.join().unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("rsv2-rpc-idle-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
