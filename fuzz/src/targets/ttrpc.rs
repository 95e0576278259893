//! ttrpc frames and requests, through the shim's own server (shim/src/rpc.rs:
//! frame reading, the length limit, request decoding, method lookup, the
//! worker threads) and the generated Task handlers, which decode each
//! request, into the real Task service (shim/src/service.rs) with no
//! container: every call that names one must be answered NOT_FOUND.
//!
//! Create, Checkpoint and Shutdown are decoded by their generated handlers
//! and then answered UNIMPLEMENTED here, not run: a fuzzed Create would
//! mount its rootfs list on this host, and Shutdown would end the server.
//! Their request bodies come from the other targets: the spec (config.json)
//! and the options decoder.
//!
//! One server serves every input, as one shim serves a whole pod: each
//! input is one connection that writes the bytes, half-closes, and reads
//! every answer. Invariants: each answer is a well-formed response frame,
//! the server answers or closes within 5 s, and it still accepts the next
//! connection.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::shim_ttrpc::Task;
use containerd_shim_protos::types::mount::Mount;
use containerd_shim_rust_v2::events::Events;
use containerd_shim_rust_v2::reaper::Reaper;
use containerd_shim_rust_v2::rpc::{self, Quit};
use containerd_shim_rust_v2::service::Service;
use containerd_shim_rust_v2::workers::Workers;
use ttrpc::proto::{Codec, KeyValue, Request, Response, MESSAGE_HEADER_LENGTH, MESSAGE_TYPE_REQUEST, MESSAGE_TYPE_RESPONSE};
use ttrpc::{Code, TtrpcContext};

use crate::rng::Rng;
use crate::{mutate, Target};

const METHODS: &[&str] = &[
    "Create", "Start", "State", "Wait", "Kill", "Delete", "Pids", "Exec", "ResizePty", "CloseIO", "Pause", "Resume", "Update", "Stats", "Connect", "Shutdown", "Checkpoint",
];
const SERVICES: &[&str] = &["containerd.task.v2.Task", "containerd.task.v3.Task"];
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The real service, but for the calls that would touch the host or stop
/// the server (see the module's comment).
struct Guarded(Arc<Service>);

fn not_run<T>(what: &str) -> ttrpc::Result<T> {
    Err(ttrpc::Error::RpcStatus(ttrpc::get_status(Code::UNIMPLEMENTED, format!("{what}: decoded, not run by the fuzzer"))))
}

impl Task for Guarded {
    fn create(&self, _: &TtrpcContext, _: api::CreateTaskRequest) -> ttrpc::Result<api::CreateTaskResponse> {
        not_run("create")
    }
    fn checkpoint(&self, _: &TtrpcContext, _: api::CheckpointTaskRequest) -> ttrpc::Result<api::Empty> {
        not_run("checkpoint")
    }
    fn shutdown(&self, _: &TtrpcContext, _: api::ShutdownRequest) -> ttrpc::Result<api::Empty> {
        not_run("shutdown")
    }
    fn start(&self, c: &TtrpcContext, r: api::StartRequest) -> ttrpc::Result<api::StartResponse> {
        self.0.start(c, r)
    }
    fn state(&self, c: &TtrpcContext, r: api::StateRequest) -> ttrpc::Result<api::StateResponse> {
        self.0.state(c, r)
    }
    fn wait(&self, c: &TtrpcContext, r: api::WaitRequest) -> ttrpc::Result<api::WaitResponse> {
        self.0.wait(c, r)
    }
    fn kill(&self, c: &TtrpcContext, r: api::KillRequest) -> ttrpc::Result<api::Empty> {
        self.0.kill(c, r)
    }
    fn delete(&self, c: &TtrpcContext, r: api::DeleteRequest) -> ttrpc::Result<api::DeleteResponse> {
        self.0.delete(c, r)
    }
    fn pids(&self, c: &TtrpcContext, r: api::PidsRequest) -> ttrpc::Result<api::PidsResponse> {
        self.0.pids(c, r)
    }
    fn connect(&self, c: &TtrpcContext, r: api::ConnectRequest) -> ttrpc::Result<api::ConnectResponse> {
        self.0.connect(c, r)
    }
    fn exec(&self, c: &TtrpcContext, r: api::ExecProcessRequest) -> ttrpc::Result<api::Empty> {
        self.0.exec(c, r)
    }
    fn resize_pty(&self, c: &TtrpcContext, r: api::ResizePtyRequest) -> ttrpc::Result<api::Empty> {
        self.0.resize_pty(c, r)
    }
    fn close_io(&self, c: &TtrpcContext, r: api::CloseIORequest) -> ttrpc::Result<api::Empty> {
        self.0.close_io(c, r)
    }
    fn pause(&self, c: &TtrpcContext, r: api::PauseRequest) -> ttrpc::Result<api::Empty> {
        self.0.pause(c, r)
    }
    fn resume(&self, c: &TtrpcContext, r: api::ResumeRequest) -> ttrpc::Result<api::Empty> {
        self.0.resume(c, r)
    }
    fn update(&self, c: &TtrpcContext, r: api::UpdateTaskRequest) -> ttrpc::Result<api::Empty> {
        self.0.update(c, r)
    }
    fn stats(&self, c: &TtrpcContext, r: api::StatsRequest) -> ttrpc::Result<api::StatsResponse> {
        self.0.stats(c, r)
    }
}

pub struct TtrpcTarget {
    dir: PathBuf,
    socket: PathBuf,
    quit: Arc<Quit>,
    server: Option<std::thread::JoinHandle<()>>,
}

impl TtrpcTarget {
    pub fn new() -> Result<TtrpcTarget, String> {
        let dir = std::env::temp_dir().join(format!("rsv2-fuzz-ttrpc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let socket = dir.join("shim.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).map_err(|e| format!("bind {}: {e}", socket.display()))?;
        let quit = Arc::new(Quit::new().map_err(|e| format!("quit eventfd: {e}"))?);
        let workers = Workers::new(|| {});
        // Events go nowhere: there is no containerd, and no call here
        // publishes one (nothing is created).
        let events = Events::start(dir.join("no-containerd.sock").to_string_lossy().into_owned(), "fuzz".into());
        let service = Arc::new(Service::new("fuzz", events, Arc::new(Reaper::default()), quit.clone(), workers.clone()));
        let guarded = Arc::new(Guarded(service));
        let v3 = containerd_shim_protos::shim::shim_ttrpc::create_task(guarded.clone());
        let v2 = containerd_shim_protos::shim::shim_ttrpc::create_task(guarded).into_iter().map(|(k, v)| (k.replace("containerd.task.v3.Task", "containerd.task.v2.Task"), v));
        let methods: rpc::Methods = v3.into_iter().chain(v2).collect();
        let q = quit.clone();
        let server = std::thread::Builder::new()
            .name("fuzz-ttrpc".into())
            .spawn(move || {
                if let Err(e) = rpc::serve(listener.into(), methods, &workers, &q, &|| false, rpc::IDLE_EXIT) {
                    panic!("the ttrpc server ended: {e}");
                }
            })
            .map_err(|e| format!("spawn the server: {e}"))?;
        Ok(TtrpcTarget { dir, socket, quit, server: Some(server) })
    }
}

impl Drop for TtrpcTarget {
    fn drop(&mut self) {
        self.quit.signal();
        if let Some(s) = self.server.take() {
            let _ = s.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn frame(stream: u32, typ: u8, payload: &[u8]) -> Vec<u8> {
    rpc::frame(stream, typ, payload)
}

/// A request for `method` that names container `fuzz`, with the fields
/// each call reads filled in.
fn request_body(method: &str) -> Vec<u8> {
    let id = "fuzz".to_string();
    let exec_id = "e1".to_string();
    let any = |type_url: &str, value: Vec<u8>| Any { type_url: type_url.into(), value, ..Default::default() };
    let r: Result<Vec<u8>, _> = match method {
        "Create" => api::CreateTaskRequest {
            id,
            bundle: "/nonexistent/rsv2-fuzz/bundle".into(),
            rootfs: vec![Mount { type_: "overlay".into(), source: "overlay".into(), options: vec!["lowerdir=/a".into(), "upperdir=/b".into()], ..Default::default() }],
            stdout: "/nonexistent/stdout".into(),
            options: Some(any("containerd.runc.v1.Options", vec![0x50, 1])).into(),
            ..Default::default()
        }
        .write_to_bytes(),
        "Start" => api::StartRequest { id, exec_id, ..Default::default() }.write_to_bytes(),
        "State" => api::StateRequest { id, exec_id, ..Default::default() }.write_to_bytes(),
        "Wait" => api::WaitRequest { id, exec_id, ..Default::default() }.write_to_bytes(),
        "Kill" => api::KillRequest { id, exec_id, signal: 9, all: true, ..Default::default() }.write_to_bytes(),
        "Delete" => api::DeleteRequest { id, exec_id, ..Default::default() }.write_to_bytes(),
        "Pids" => api::PidsRequest { id, ..Default::default() }.write_to_bytes(),
        "Exec" => api::ExecProcessRequest {
            id,
            exec_id,
            terminal: true,
            spec: Some(any("types.containerd.io/opencontainers/runtime-spec/1/Process", br#"{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}}"#.to_vec())).into(),
            ..Default::default()
        }
        .write_to_bytes(),
        "ResizePty" => api::ResizePtyRequest { id, exec_id, width: 80, height: 24, ..Default::default() }.write_to_bytes(),
        "CloseIO" => api::CloseIORequest { id, exec_id, stdin: true, ..Default::default() }.write_to_bytes(),
        "Pause" => api::PauseRequest { id, ..Default::default() }.write_to_bytes(),
        "Resume" => api::ResumeRequest { id, ..Default::default() }.write_to_bytes(),
        "Update" => api::UpdateTaskRequest { id, resources: Some(any("types.containerd.io/opencontainers/runtime-spec/1/LinuxResources", br#"{"memory":{"limit":1}}"#.to_vec())).into(), ..Default::default() }
            .write_to_bytes(),
        "Stats" => api::StatsRequest { id, ..Default::default() }.write_to_bytes(),
        "Connect" => api::ConnectRequest { id, ..Default::default() }.write_to_bytes(),
        "Shutdown" => api::ShutdownRequest { id, now: true, ..Default::default() }.write_to_bytes(),
        _ => api::CheckpointTaskRequest { id, path: "/nonexistent/rsv2-fuzz/checkpoint".into(), ..Default::default() }.write_to_bytes(),
    };
    r.unwrap_or_default()
}

fn request(service: &str, method: &str, payload: Vec<u8>) -> Vec<u8> {
    let mut req = Request::new();
    req.service = service.into();
    req.method = method.into();
    req.payload = payload;
    req.timeout_nano = 1_000_000_000;
    req.encode().unwrap_or_default()
}

/// The frames of `input`, as far as they parse.
fn frames(input: &[u8]) -> Vec<(u32, u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = input;
    while rest.len() >= MESSAGE_HEADER_LENGTH {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let stream = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if rest.len() < MESSAGE_HEADER_LENGTH + len {
            break;
        }
        out.push((stream, rest[8], rest[MESSAGE_HEADER_LENGTH..MESSAGE_HEADER_LENGTH + len].to_vec()));
        rest = &rest[MESSAGE_HEADER_LENGTH + len..];
    }
    out
}

impl Target for TtrpcTarget {
    fn name(&self) -> &'static str {
        "ttrpc"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let mut seeds: Vec<Vec<u8>> = Vec::new();
        for service in SERVICES {
            for (i, method) in METHODS.iter().enumerate() {
                seeds.push(frame(1 + 2 * i as u32, MESSAGE_TYPE_REQUEST, &request(service, method, request_body(method))));
            }
        }
        // Two requests on one connection, pipelined.
        let two = [frame(1, MESSAGE_TYPE_REQUEST, &request(SERVICES[0], "State", request_body("State"))), frame(3, MESSAGE_TYPE_REQUEST, &request(SERVICES[0], "Pids", request_body("Pids")))].concat();
        seeds.push(two);
        seeds
    }

    /// Half the time bytes anywhere; otherwise one frame's request is
    /// changed (its method, its body, its metadata) and every length is
    /// made right again, so the change reaches the handlers.
    fn mutate(&self, rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
        let mut fs = frames(input);
        if fs.is_empty() || rng.chance(2) {
            return mutate::bytes(rng, input, other);
        }
        let i = rng.below(fs.len());
        match rng.below(6) {
            0 => fs.push(frames(other).into_iter().next().unwrap_or_default()),
            1 => fs[i].0 = rng.next() as u32,
            2 => fs[i].1 = rng.below(5) as u8,
            _ => {
                let Ok(mut req) = Request::decode(&fs[i].2) else {
                    fs[i].2 = mutate::bytes(rng, &fs[i].2, other);
                    return fs.iter().flat_map(|(s, t, p)| frame(*s, *t, p)).collect();
                };
                match rng.below(5) {
                    0 => req.method = rng.pick(METHODS).to_string(),
                    1 => req.service = rng.pick(&["containerd.task.v2.Task", "containerd.task.v3.Task", "", "containerd.task.v1.Task", "grpc.health.v1.Health"]).to_string(),
                    2 => req.metadata.push(KeyValue { key: "k".into(), value: String::from_utf8_lossy(&mutate::bytes(rng, b"v", other)).into_owned(), ..Default::default() }),
                    3 => req.timeout_nano = rng.next() as i64,
                    _ => req.payload = mutate::bytes(rng, &req.payload, other),
                }
                fs[i].2 = req.encode().unwrap_or_default();
            }
        }
        let mut out: Vec<u8> = fs.iter().flat_map(|(s, t, p)| frame(*s, *t, p)).collect();
        out.truncate(mutate::MAX_INPUT);
        out
    }

    fn run(&mut self, input: &[u8]) -> Result<String, String> {
        let mut conn = UnixStream::connect(&self.socket).map_err(|e| format!("the server no longer accepts: {e}"))?;
        conn.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(|e| e.to_string())?;
        conn.set_write_timeout(Some(ANSWER_TIMEOUT)).map_err(|e| e.to_string())?;
        // The server may close first (an oversized frame): not a finding.
        let _ = conn.write_all(input);
        let _ = conn.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        if let Err(e) = conn.read_to_end(&mut answer) {
            if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
                return Err(format!("no answer and no close within {ANSWER_TIMEOUT:?}"));
            }
        }
        let mut codes: Vec<String> = Vec::new();
        let answered = frames(&answer);
        let framed: usize = answered.iter().map(|(_, _, p)| MESSAGE_HEADER_LENGTH + p.len()).sum();
        if framed != answer.len() {
            return Err(format!("{} bytes of the answer are not a whole frame", answer.len() - framed));
        }
        for (_, typ, payload) in answered {
            if typ != MESSAGE_TYPE_RESPONSE {
                return Err(format!("the server sent a frame of type {typ}"));
            }
            let res = Response::decode(&payload).map_err(|e| format!("a response does not decode: {e:?}"))?;
            let code = res.status.as_ref().map(|s| format!("{:?} {}", s.code, s.message)).unwrap_or_else(|| "OK".into());
            codes.push(code);
        }
        codes.sort();
        codes.dedup();
        Ok(if codes.is_empty() { "closed without an answer".to_string() } else { codes.join(" | ") })
    }
}
