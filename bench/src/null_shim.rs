//! containerd-shim-null-v2: the bench's floor (issue #19). Never installed.
//!
//! It speaks what containerd needs of a shim, start, serve and delete, and
//! the Task API's lifecycle with its events, in the order containerd
//! expects (TaskCreate, TaskStart, TaskExecAdded, TaskExecStarted,
//! TaskExit, TaskDelete), but runs no container: a task's pid is the
//! shim's own, it "exits" when killed (128 + the signal), and an exec
//! exits 0 at once, as does a container whose program is `true` (the
//! bench's `ctr run --rm ... /bin/true`). It opens the write side of each stdout and stderr FIFO
//! and closes it at the exit, so containerd's copies end as with a real
//! shim. Like ours and runc's, it serves every container of a pod from one
//! process (grouped by the CRI's sandbox id).
//!
//! Its `start`, ttrpc server loop and event publisher are our shim's own
//! (containerd-shim-rust-v2's library: start.rs, rpc.rs, events.rs), so it
//! speaks the same protocol to each containerd (Task API v2 with a bare
//! address to 1.6 and 1.7, v3 to 2.x); only the Task service is null. The
//! figures the bench reports are each runtime's overhead above this one.
//! (containerd-shim 0.12's framework serves Task API v3 alone, which
//! containerd 1.6 cannot use.)

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use containerd_shim::util::timestamp;
use containerd_shim_protos::events::task::{TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskStart};
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_rust_v2::events::Events;
use containerd_shim_rust_v2::rpc::{self, Quit};
use containerd_shim_protos::shim::shim::*;
use containerd_shim_protos::api::Status;
use containerd_shim_protos::ttrpc::{self, Code, TtrpcContext};
use containerd_shim_protos::Task;

#[derive(Default)]
struct Process {
    status: Status,
    exit: Option<(u32, Timestamp)>,
    stdin: String,
    stdout: String,
    stderr: String,
    terminal: bool,
    /// The write sides of stdout and stderr, held until the exit.
    held: Vec<File>,
}

#[derive(Default)]
struct Container {
    bundle: String,
    /// The spec's program is `true`: the init exits 0 as it starts.
    exits_at_start: bool,
    init: Process,
    execs: HashMap<String, Process>,
}

struct Tasks {
    containers: Mutex<HashMap<String, Container>>,
    exited: Condvar,
    events: Arc<Events>,
    quit: Arc<Quit>,
}

fn not_found(what: String) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(Code::NOT_FOUND, what))
}

fn pid() -> u32 {
    std::process::id()
}

/// Opens the write side of an output FIFO whose reader containerd already
/// has open; anything else (empty, a binary:// or file:// URI) is left.
fn hold(path: &str) -> Option<File> {
    if path.is_empty() || path.contains("://") {
        return None;
    }
    std::fs::OpenOptions::new().write(true).open(path).ok()
}

/// Whether the bundle's program is `true` (any path), which the null shim
/// "runs" by exiting 0 at once. An unreadable spec runs until killed.
fn runs_true(bundle: &str) -> bool {
    let spec = std::fs::read(std::path::Path::new(bundle).join("config.json")).ok();
    let spec: Option<serde_json::Value> = spec.and_then(|b| serde_json::from_slice(&b).ok());
    let program = spec.as_ref().and_then(|s| s.pointer("/process/args/0")).and_then(|a| a.as_str());
    program.is_some_and(|p| p.rsplit('/').next() == Some("true"))
}

impl Tasks {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Container>> {
        self.containers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish<E: containerd_shim_rust_v2::events::TaskEvent>(&self, event: E) {
        self.events.publish(event);
    }

    fn process<'a>(containers: &'a mut HashMap<String, Container>, id: &str, exec_id: &str) -> ttrpc::Result<&'a mut Process> {
        let c = containers.get_mut(id).ok_or_else(|| not_found(format!("container {id} not found")))?;
        if exec_id.is_empty() {
            return Ok(&mut c.init);
        }
        c.execs.get_mut(exec_id).ok_or_else(|| not_found(format!("exec {exec_id} of {id} not found")))
    }

    /// Marks a process exited and publishes TaskExit, its output closed first.
    fn exit(&self, id: &str, exec_id: &str, code: u32) -> ttrpc::Result<()> {
        let at = timestamp().map_err(|e| ttrpc::Error::Others(e.to_string()))?;
        {
            let mut containers = self.lock();
            let p = Self::process(&mut containers, id, exec_id)?;
            if p.exit.is_some() {
                return Err(not_found(format!("process {id}/{exec_id} already finished")));
            }
            p.held.clear();
            p.status = Status::STOPPED;
            p.exit = Some((code, at.clone()));
        }
        self.exited.notify_all();
        let ev = TaskExit { container_id: id.into(), id: if exec_id.is_empty() { id.into() } else { exec_id.into() }, pid: pid(), exit_status: code, exited_at: MessageField::some(at), ..Default::default() };
        self.publish(ev);
        Ok(())
    }
}

impl Task for Tasks {
    fn create(&self, _ctx: &TtrpcContext, req: CreateTaskRequest) -> ttrpc::Result<CreateTaskResponse> {
        let init = Process { status: Status::CREATED, stdin: req.stdin.clone(), stdout: req.stdout.clone(), stderr: req.stderr.clone(), terminal: req.terminal, ..Default::default() };
        let exits_at_start = runs_true(&req.bundle);
        self.lock().insert(req.id.clone(), Container { bundle: req.bundle.clone(), exits_at_start, init, execs: HashMap::new() });
        let ev = TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: MessageField::some(containerd_shim_protos::events::task::TaskIO { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal, ..Default::default() }),
            checkpoint: req.checkpoint,
            pid: pid(),
            ..Default::default()
        };
        self.publish(ev);
        Ok(CreateTaskResponse { pid: pid(), ..Default::default() })
    }

    fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        let exits_at_start = {
            let mut containers = self.lock();
            let exits = req.exec_id.is_empty() && containers.get(&req.id).is_some_and(|c| c.exits_at_start);
            let p = Tasks::process(&mut containers, &req.id, &req.exec_id)?;
            let (out, err) = (p.stdout.clone(), p.stderr.clone());
            p.held = [hold(&out), hold(&err)].into_iter().flatten().collect();
            p.status = Status::RUNNING;
            exits
        };
        if req.exec_id.is_empty() {
            self.publish(TaskStart { container_id: req.id.clone(), pid: pid(), ..Default::default() });
            if exits_at_start {
                self.exit(&req.id, "", 0)?;
            }
        } else {
            self.publish(TaskExecStarted { container_id: req.id.clone(), exec_id: req.exec_id.clone(), pid: pid(), ..Default::default() });
            self.exit(&req.id, &req.exec_id, 0)?;
        }
        Ok(StartResponse { pid: pid(), ..Default::default() })
    }

    fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        {
            let mut containers = self.lock();
            let c = containers.get_mut(&req.id).ok_or_else(|| not_found(format!("container {} not found", req.id)))?;
            let p = Process { status: Status::CREATED, stdin: req.stdin.clone(), stdout: req.stdout.clone(), stderr: req.stderr.clone(), terminal: req.terminal, ..Default::default() };
            c.execs.insert(req.exec_id.clone(), p);
        }
        self.publish(TaskExecAdded { container_id: req.id, exec_id: req.exec_id, ..Default::default() });
        Ok(Empty::new())
    }

    fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        self.exit(&req.id, &req.exec_id, 128 + req.signal)?;
        Ok(Empty::new())
    }

    fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        let mut containers = self.lock();
        loop {
            let p = Tasks::process(&mut containers, &req.id, &req.exec_id)?;
            if let Some((code, at)) = &p.exit {
                return Ok(WaitResponse { exit_status: *code, exited_at: MessageField::some(at.clone()), ..Default::default() });
            }
            containers = self.exited.wait(containers).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        let (code, at) = {
            let mut containers = self.lock();
            let p = Tasks::process(&mut containers, &req.id, &req.exec_id)?;
            let exit = p.exit.clone().unwrap_or((0, Timestamp::default()));
            if req.exec_id.is_empty() {
                containers.remove(&req.id);
            } else if let Some(c) = containers.get_mut(&req.id) {
                c.execs.remove(&req.exec_id);
            }
            exit
        };
        if req.exec_id.is_empty() {
            let ev = TaskDelete { container_id: req.id.clone(), id: req.id.clone(), pid: pid(), exit_status: code, exited_at: MessageField::some(at.clone()), ..Default::default() };
            self.publish(ev);
        }
        Ok(DeleteResponse { pid: pid(), exit_status: code, exited_at: MessageField::some(at), ..Default::default() })
    }

    fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        let mut containers = self.lock();
        let bundle = containers.get(&req.id).map(|c| c.bundle.clone()).unwrap_or_default();
        let p = Tasks::process(&mut containers, &req.id, &req.exec_id)?;
        let (code, at) = p.exit.clone().unwrap_or_default();
        Ok(StateResponse {
            id: req.id.clone(),
            bundle,
            pid: pid(),
            status: p.status.into(),
            stdin: p.stdin.clone(),
            stdout: p.stdout.clone(),
            stderr: p.stderr.clone(),
            terminal: p.terminal,
            exit_status: code,
            exited_at: MessageField::some(at),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    fn pids(&self, _ctx: &TtrpcContext, _req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        let info = containerd_shim_protos::types::task::ProcessInfo { pid: pid(), ..Default::default() };
        Ok(PidsResponse { processes: vec![info], ..Default::default() })
    }

    fn connect(&self, _ctx: &TtrpcContext, _req: ConnectRequest) -> ttrpc::Result<ConnectResponse> {
        Ok(ConnectResponse { shim_pid: pid(), task_pid: pid(), ..Default::default() })
    }

    fn close_io(&self, _ctx: &TtrpcContext, _req: CloseIORequest) -> ttrpc::Result<Empty> {
        Ok(Empty::new())
    }

    fn resize_pty(&self, _ctx: &TtrpcContext, _req: ResizePtyRequest) -> ttrpc::Result<Empty> {
        Ok(Empty::new())
    }

    fn update(&self, _ctx: &TtrpcContext, _req: UpdateTaskRequest) -> ttrpc::Result<Empty> {
        Ok(Empty::new())
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> ttrpc::Result<Empty> {
        if self.lock().is_empty() {
            self.quit.signal();
        }
        Ok(Empty::new())
    }
}

fn serve(flags: &containerd_shim::Flags) -> Result<(), String> {
    use std::os::fd::FromRawFd;
    let address = std::env::var("TTRPC_ADDRESS").map_err(|_| "TTRPC_ADDRESS is not set: `start` starts the server".to_string())?;
    let events = Events::start(address, flags.namespace.clone());
    let quit = Arc::new(Quit::new().map_err(|e| e.to_string())?);
    let tasks = Arc::new(Tasks { containers: Mutex::new(HashMap::new()), exited: Condvar::new(), events: events.clone(), quit: quit.clone() });
    let workers = containerd_shim_rust_v2::workers::Workers::new(|| {});
    // SAFETY: our start.rs hands the bound listener over as this fd.
    let listener = unsafe { std::os::fd::OwnedFd::from_raw_fd(containerd_shim_rust_v2::server::LISTEN_FD) };
    let held = tasks.clone();
    rpc::serve(listener, containerd_shim_rust_v2::server::task_methods(tasks), &workers, &quit, &move || held.lock().is_empty(), rpc::IDLE_EXIT).map_err(|e| e.to_string())?;
    events.close();
    let _ = std::fs::remove_file(flags.socket.strip_prefix("unix://").unwrap_or(&flags.socket));
    Ok(())
}

fn main() {
    let args: Vec<_> = std::env::args_os().collect();
    let result = containerd_shim::parse(&args[1..]).map_err(|e| e.to_string()).and_then(|flags| match flags.action.as_str() {
        // Our start: one server per pod (the CRI's sandbox id), the Task API
        // and address form each containerd wants.
        "start" => containerd_shim_rust_v2::start::run(&flags).map(|a| containerd_shim_rust_v2::start::print(&a)).map_err(|e| e.to_string()),
        "delete" => {
            let at = timestamp().map_err(|e| e.to_string())?;
            let resp = DeleteResponse { exit_status: 137, exited_at: MessageField::some(at), ..Default::default() };
            std::io::Write::write_all(&mut std::io::stdout(), &resp.write_to_bytes().unwrap_or_default()).map_err(|e| e.to_string())
        }
        "serve" => serve(&flags),
        other => Err(format!("unknown action {other:?}")),
    });
    if let Err(e) = result {
        eprintln!("containerd-shim-null-v2: {e}");
        std::process::exit(1);
    }
}
