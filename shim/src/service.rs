//! The Task ttrpc service: containerd's calls mapped onto [`Container`]s.
//!
//! One server may hold several containers (a pod's sandbox and its
//! containers share one shim).

use crate::LockExt;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd_shim_protos::api::{self, Status as TaskStatus};
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused, TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::shim_ttrpc::Task;
use containerd_shim_protos::shim::oci::ProcessDetails;
use containerd_shim_protos::types::task::ProcessInfo;
use ttrpc::{Code, TtrpcContext};

use crate::container::{Cell, Container, ContainerError, CreateRequest, Exit, Io, Status};
use crate::events::Events;
use crate::oom::OomWatcher;
use crate::reaper::Reaper;
use crate::rpc::Quit;
use crate::stdio;
use crate::workers::Workers;

/// The full protobuf name of ProcessDetails, as containerd resolves it.
pub(crate) const PROCESS_DETAILS_TYPE: &str = "containerd.runc.v1.ProcessDetails";

pub struct Service {
    containers: Mutex<HashMap<String, Arc<Cell>>>,
    events: Arc<Events>,
    oom: Option<Arc<OomWatcher>>,
    reaper: Arc<Reaper>,
    exit: Arc<Quit>,
    /// Runs each exit's report (and, in rpc.rs, each Task call).
    workers: Workers,
    /// Our binary as the init stage executes it (see runtime::exe), and the
    /// fd that path goes through.
    exe: PathBuf,
    _exe_fd: Option<std::os::fd::OwnedFd>,
    namespace: String,
}

fn status(code: Code, msg: impl ToString) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg))
}

/// Publishes TaskOOM if the container's cgroup saw a new OOM kill. Called
/// under the container's lock by the OOM watcher and, before TaskExit, by
/// the exit path.
fn report_oom(c: &mut Container, events: &Arc<Events>) -> bool {
    let new = c.take_oom();
    if new {
        log::info!("container {} hit its memory limit: oom kill", c.id);
        events.publish(TaskOOM { container_id: c.id.clone(), ..Default::default() });
    }
    new
}

/// The OOM watcher woke for this container. The kernel signals the v1
/// eventfd before it picks a victim and counts the kill, so the counter is
/// watched for a moment rather than read once; the lock is not held while
/// waiting, so an exit can report the kill first (and then this finds
/// nothing new).
fn on_oom_wakeup(cell: &Cell, events: &Arc<Events>) {
    for _ in 0..50 {
        if report_oom(&mut cell.lock(), events) {
            return;
        }
        std::thread::sleep(Duration::from_millis(4));
    }
}

/// runc's rule for container ids (validateID): they name the default
/// cgroup and appear in paths, so nothing that could walk a path.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 1024 && id != "." && id != ".." && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+.-".contains(&b))
}


impl From<ContainerError> for ttrpc::Error {
    fn from(e: ContainerError) -> ttrpc::Error {
        let code = match &e {
            ContainerError::Spec(_) => Code::INVALID_ARGUMENT,
            ContainerError::Finished { .. } | ContainerError::NoExec { .. } => Code::NOT_FOUND,
            ContainerError::ExecExists { .. } => Code::ALREADY_EXISTS,
            ContainerError::ExecSpec(_) | ContainerError::Resources(_) => Code::INVALID_ARGUMENT,
            ContainerError::State { .. } => Code::FAILED_PRECONDITION,
            ContainerError::Unsupported(_) => Code::UNIMPLEMENTED,
            ContainerError::Criu(crate::criu::CriuError::NotInstalled | crate::criu::CriuError::CheckFailed(_)) => Code::FAILED_PRECONDITION,
            ContainerError::Criu(crate::criu::CriuError::Invalid(_)) => Code::INVALID_ARGUMENT,
            _ => Code::UNKNOWN,
        };
        status(code, e)
    }
}

impl Service {
    pub fn new(namespace: &str, events: Arc<Events>, reaper: Arc<Reaper>, exit: Arc<Quit>, workers: Workers) -> Service {
        // Resolved once per shim, through /proc/self/exe: this keeps working
        // after an upgrade replaced the binary on disk.
        let (exe_fd, exe) = match runtime::exe::protected() {
            Ok((fd, path)) => (Some(fd), path),
            Err(e) => {
                log::error!("{e}; the init stage runs from /proc/self/exe");
                (None, PathBuf::from("/proc/self/exe"))
            }
        };
        let for_oom = events.clone();
        let oom = OomWatcher::start(Arc::new(move |cell: &Arc<Cell>| on_oom_wakeup(cell, &for_oom)))
            .map_err(|e| log::error!("start oom watcher: {e}"))
            .ok();
        Service {
            containers: Mutex::new(HashMap::new()),
            events,
            oom,
            reaper,
            exit,
            workers,
            exe,
            _exe_fd: exe_fd,
            namespace: namespace.to_string(),
        }
    }

    /// Whether the shim holds no container (rpc.rs ends an idle one).
    pub fn is_empty(&self) -> bool {
        self.containers.locked().is_empty()
    }

    fn get(&self, id: &str) -> ttrpc::Result<Arc<Cell>> {
        // A poisoned map (a panic elsewhere held it) still serves: one
        // failed call must not fail every later one of the pod.
        self.containers
            .locked()
            .get(id)
            .cloned()
            .ok_or_else(|| status(Code::NOT_FOUND, format!("container {id} not found")))
    }

    /// Waits for a hook through the reaper, which owns waitpid(-1).
    fn hook_wait(&self) -> impl Fn(i32, std::time::Instant, Option<Duration>) -> Option<i32> + '_ {
        move |pid, spawned, timeout| {
            let (tx, rx) = std::sync::mpsc::channel();
            self.reaper.on_exit(pid, spawned, Box::new(move |code| {
                let _ = tx.send(code);
            }));
            match timeout {
                Some(t) => rx.recv_timeout(t).ok(),
                None => rx.recv().ok(),
            }
        }
    }

    /// poststart and poststop: failures are logged, not returned (runtime
    /// spec).
    fn run_post_hooks(&self, kind: &'static str, c: &Container, status: &'static str) {
        let hooks = c.spec.hooks().clone().unwrap_or_default();
        let list = if kind == "poststart" { hooks.poststart() } else { hooks.poststop() };
        if list.is_none() {
            return;
        }
        let state = runtime::hooks::State::new(&c.spec, &c.id, status, c.init.pid, &c.bundle);
        if let Err(e) = runtime::hooks::run_all(kind, list.as_ref(), &state, &self.hook_wait()) {
            log::warn!("container {}: {e}", c.id);
        }
    }

    /// Called on the reaper thread when a process of the container exits.
    /// Draining output can take a moment, so it runs on a worker.
    fn watch(&self, cell: &Arc<Cell>, exec_id: &str, pid: i32, spawned: std::time::Instant) {
        let cell = cell.clone();
        let events = self.events.clone();
        let exec_id = exec_id.to_string();
        let workers = self.workers.clone();
        self.reaper.on_exit(
            pid,
            spawned,
            Box::new(move |code| {
                let reaped = std::time::Instant::now();
                let ran = workers.run("exit", move || {
                    let (mut c, exit) = cell.record_exit(&exec_id, code);
                    report_oom(&mut c, &events);
                    let which = if exec_id.is_empty() { "init".to_string() } else { format!("exec {exec_id}") };
                    log::info!("container {} {which} pid {pid} exited with {}", c.id, exit.code);
                    events.publish(TaskExit {
                        container_id: c.id.clone(),
                        id: if exec_id.is_empty() { c.id.clone() } else { exec_id.clone() },
                        pid: pid as u32,
                        exit_status: exit.code,
                        exited_at: MessageField::some(exit.at.clone()),
                        ..Default::default()
                    });
                    log::debug!("container {} {which}: TaskExit queued {:.2} ms after the reap (output drained)", c.id, reaped.elapsed().as_secs_f64() * 1e3);
                });
                if let Err(e) = ran {
                    log::error!("report the exit of pid {pid}: no thread for it: {e}");
                }
            }),
        );
    }
}

impl Task for Service {
    fn create(&self, _ctx: &TtrpcContext, req: api::CreateTaskRequest) -> ttrpc::Result<api::CreateTaskResponse> {
        log::info!("create {} bundle {}", req.id, req.bundle);
        if !valid_id(&req.id) {
            return Err(status(Code::INVALID_ARGUMENT, format!("container id {:?} is not valid: it must be 1 to 1024 of A-Z a-z 0-9 _ + . - and not . or ..", req.id)));
        }
        if self.containers.locked().contains_key(&req.id) {
            return Err(status(Code::ALREADY_EXISTS, format!("container {} already exists", req.id)));
        }
        let options = crate::options::parse(req.options.as_ref()).map_err(|e| status(Code::INVALID_ARGUMENT, e))?;
        let wait = self.hook_wait();
        let container = Container::create(CreateRequest {
            id: &req.id,
            options,
            wait: &wait,
            namespace: &self.namespace,
            bundle: Path::new(&req.bundle),
            rootfs: &req.rootfs,
            io: Io { stdin: req.stdin.clone(), stdout: req.stdout.clone(), stderr: req.stderr.clone(), terminal: req.terminal },
            exe: &self.exe,
            checkpoint: &req.checkpoint,
        })
        .map_err(|e| {
            log::error!("create {}: {e}", req.id);
            ttrpc::Error::from(e)
        })?;
        let pid = container.init.pid;
        let oom_source = container.cgroup.oom_source();
        let cell = Cell::new(container);
        match (&self.oom, oom_source) {
            (Some(w), Ok(source)) => {
                let seen = cell.lock().oom_seen.clone();
                let token = w.watch(&cell, source, seen).map_err(|e| log::warn!("watch oom of {}: {e}", req.id)).ok();
                cell.lock().oom_token = token;
            }
            (_, Err(e)) => log::warn!("no oom events for {}: {e}", req.id),
            (None, _) => {}
        }
        self.containers.locked().insert(req.id.clone(), cell.clone());
        // A container restored from a checkpoint has its init only once
        // Start restored it.
        if pid != 0 {
            let spawned = cell.lock().init.spawned;
            self.watch(&cell, "", pid, spawned);
        }
        self.events.publish(TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: MessageField::some(TaskIO { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal, ..Default::default() }),
                checkpoint: req.checkpoint,
                pid: pid as u32,
                ..Default::default()
            },
        );
        Ok(api::CreateTaskResponse { pid: pid as u32, ..Default::default() })
    }

    fn start(&self, _ctx: &TtrpcContext, req: api::StartRequest) -> ttrpc::Result<api::StartResponse> {
        let t = std::time::Instant::now();
        let cell = self.get(&req.id)?;
        // An exec's output FIFOs are waited for (up to 30 s, until the
        // client's readers are there) before the container's lock is taken:
        // under it, a slow client would hold up State, Kill and the exits
        // of the container's other processes.
        let readers = match req.exec_id.is_empty() {
            true => Ok(stdio::Readers::default()),
            false => {
                let io = cell.lock().process(&req.exec_id)?.io.clone();
                stdio::await_readers(&[&io.stdout, &io.stderr])
            }
        };
        let mut c = cell.lock();
        let restores = req.exec_id.is_empty() && c.restores();
        let wait = self.hook_wait();
        let pid = c.start(&req.exec_id, &self.exe, &wait, readers).inspect_err(|_| cell.notify())?;
        if !req.exec_id.is_empty() || restores {
            // Registered before the exec may exit; the reaper holds an exit
            // that beats us here.
            let spawned = c.process(&req.exec_id).map(|p| p.spawned).unwrap_or_else(|_| std::time::Instant::now());
            self.watch(&cell, &req.exec_id, pid, spawned);
        }
        // Published under the container's lock: the exit path takes the same
        // lock, so the exit event can never overtake the start event.
        if req.exec_id.is_empty() {
            self.run_post_hooks("poststart", &c, "running");
            self.events.publish(TaskStart { container_id: c.id.clone(), pid: pid as u32, ..Default::default() });
        } else {
            self.events.publish(TaskExecStarted { container_id: c.id.clone(), exec_id: req.exec_id.clone(), pid: pid as u32, ..Default::default() },
            );
        }
        log::debug!("start {} {:?}: pid {pid} running after {:.1} ms", req.id, req.exec_id, t.elapsed().as_secs_f64() * 1e3);
        Ok(api::StartResponse { pid: pid as u32, ..Default::default() })
    }

    fn state(&self, _ctx: &TtrpcContext, req: api::StateRequest) -> ttrpc::Result<api::StateResponse> {
        let cell = self.get(&req.id)?;
        let c = cell.lock();
        let p = c.process(&req.exec_id)?;
        let st = match p.status {
            Status::Created => TaskStatus::CREATED,
            Status::Running => TaskStatus::RUNNING,
            Status::Paused => TaskStatus::PAUSED,
            Status::Stopped => TaskStatus::STOPPED,
        };
        Ok(api::StateResponse {
            id: if req.exec_id.is_empty() { c.id.clone() } else { req.exec_id.clone() },
            bundle: c.bundle.display().to_string(),
            pid: p.pid as u32,
            status: st.into(),
            stdin: p.io.stdin.clone(),
            stdout: p.io.stdout.clone(),
            stderr: p.io.stderr.clone(),
            terminal: p.io.terminal,
            exit_status: p.exit.as_ref().map(|e| e.code).unwrap_or(0),
            exited_at: p.exit.as_ref().map(|e| MessageField::some(e.at.clone())).unwrap_or_default(),
            exec_id: req.exec_id,
            ..Default::default()
        })
    }

    fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> ttrpc::Result<api::WaitResponse> {
        let exit = self.get(&req.id)?.wait(&req.exec_id)?;
        Ok(api::WaitResponse { exit_status: exit.code, exited_at: MessageField::some(exit.at), ..Default::default() })
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> ttrpc::Result<api::Empty> {
        if req.signal == 0 || req.signal > 64 {
            return Err(status(Code::INVALID_ARGUMENT, format!("invalid signal {}: must be 1 to 64", req.signal)));
        }
        let cell = self.get(&req.id)?;
        let mut c = cell.lock();
        log::info!("kill {} {:?} signal {} all={}", c.id, req.exec_id, req.signal, req.all);
        c.kill(&req.exec_id, req.signal, req.all)?;
        Ok(api::Empty::new())
    }

    fn delete(&self, _ctx: &TtrpcContext, req: api::DeleteRequest) -> ttrpc::Result<api::DeleteResponse> {
        let t = std::time::Instant::now();
        let cell = self.get(&req.id)?;
        if !req.exec_id.is_empty() {
            let p = cell.lock().delete_exec(&req.exec_id)?;
            let exit = p.exit.unwrap_or(Exit { code: 0, at: Default::default() });
            return Ok(api::DeleteResponse { pid: p.pid as u32, exit_status: exit.code, exited_at: MessageField::some(exit.at), ..Default::default() });
        }
        // A container that never started is killed, as runc's delete does;
        // one created from a checkpoint has no process yet.
        cell.lock().discard_restore();
        let never_started = cell.lock().init.status == Status::Created;
        if never_started {
            let _ = cell.lock().kill("", libc::SIGKILL as u32, false);
            if cell.wait_init_timeout(Duration::from_secs(10)).is_none() {
                return Err(status(Code::DEADLINE_EXCEEDED, format!("container {} did not exit after SIGKILL", req.id)));
            }
        }
        let mut c = cell.lock();
        c.destroy()?;
        if let (Some(w), Some(token)) = (&self.oom, c.oom_token.take()) {
            w.forget(token);
        }
        let exit = c.init.exit.clone().unwrap_or(Exit { code: 0, at: Default::default() });
        self.containers.locked().remove(&req.id);
        self.run_post_hooks("poststop", &c, "stopped");
        log::info!("deleted {} in {:.1} ms", c.id, t.elapsed().as_secs_f64() * 1e3);
        self.events.publish(TaskDelete {
                container_id: c.id.clone(),
                id: c.id.clone(),
                pid: c.init.pid as u32,
                exit_status: exit.code,
                exited_at: MessageField::some(exit.at.clone()),
                ..Default::default()
            },
        );
        Ok(api::DeleteResponse { pid: c.init.pid as u32, exit_status: exit.code, exited_at: MessageField::some(exit.at), ..Default::default() })
    }

    fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> ttrpc::Result<api::PidsResponse> {
        let cell = self.get(&req.id)?;
        let c = cell.lock();
        let pids = c.cgroup.procs().map_err(|e| status(Code::UNKNOWN, e))?;
        let processes = pids
            .into_iter()
            .map(|pid| {
                // Execs are named, as containerd's runc shim does, so
                // `ctr task ps` can show which exec a pid belongs to.
                // The type URL is the bare message name, as runc's shim sends
                // it: ctr 1.6 does not resolve a type.googleapis.com/ prefix.
                let info = c.execs.values().find(|e| e.pid == pid).and_then(|e| {
                    let details = ProcessDetails { exec_id: e.exec_id.clone(), ..Default::default() };
                    // Named by hand: protobuf reflection would build and keep
                    // the descriptors of every imported proto file.
                    let value = details.write_to_bytes().ok()?;
                    Some(Any { type_url: PROCESS_DETAILS_TYPE.into(), value, ..Default::default() })
                });
                ProcessInfo { pid: pid as u32, info: info.into(), ..Default::default() }
            })
            .collect();
        Ok(api::PidsResponse { processes, ..Default::default() })
    }

    fn connect(&self, _ctx: &TtrpcContext, req: api::ConnectRequest) -> ttrpc::Result<api::ConnectResponse> {
        let task_pid = self.containers.locked().get(&req.id).map(|c| c.lock().init.pid as u32).unwrap_or(0);
        Ok(api::ConnectResponse { shim_pid: std::process::id(), task_pid, version: env!("CARGO_PKG_VERSION").into(), ..Default::default() })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> ttrpc::Result<api::Empty> {
        let left = self.containers.locked().len();
        if left == 0 {
            log::info!("shutdown: no container left");
            self.exit.signal();
        } else {
            log::debug!("shutdown ignored: {left} containers left");
        }
        Ok(api::Empty::new())
    }

    fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> ttrpc::Result<api::Empty> {
        let cell = self.get(&req.id)?;
        let mut c = cell.lock();
        let spec = req.spec.as_ref().map(|a| a.value.as_slice()).unwrap_or_default();
        let io = Io { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal };
        c.add_exec(&req.exec_id, spec, io)?;
        log::info!("exec {} added to {}", req.exec_id, c.id);
        self.events.publish(TaskExecAdded { container_id: c.id.clone(), exec_id: req.exec_id, ..Default::default() });
        Ok(api::Empty::new())
    }

    fn resize_pty(&self, _ctx: &TtrpcContext, req: api::ResizePtyRequest) -> ttrpc::Result<api::Empty> {
        self.get(&req.id)?.lock().resize(&req.exec_id, req.width, req.height)?;
        Ok(api::Empty::new())
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> ttrpc::Result<api::Empty> {
        if req.stdin {
            self.get(&req.id)?.lock().close_io(&req.exec_id)?;
        }
        Ok(api::Empty::new())
    }

    fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> ttrpc::Result<api::Empty> {
        let cell = self.get(&req.id)?;
        let mut c = cell.lock();
        c.pause()?;
        self.events.publish(TaskPaused { container_id: c.id.clone(), ..Default::default() });
        Ok(api::Empty::new())
    }

    fn resume(&self, _ctx: &TtrpcContext, req: api::ResumeRequest) -> ttrpc::Result<api::Empty> {
        let cell = self.get(&req.id)?;
        let mut c = cell.lock();
        c.resume()?;
        self.events.publish(TaskResumed { container_id: c.id.clone(), ..Default::default() });
        Ok(api::Empty::new())
    }

    fn update(&self, _ctx: &TtrpcContext, req: api::UpdateTaskRequest) -> ttrpc::Result<api::Empty> {
        let cell = self.get(&req.id)?;
        let resources = req.resources.as_ref().map(|a| a.value.as_slice()).unwrap_or_default();
        cell.lock().update(resources)?;
        Ok(api::Empty::new())
    }

    fn stats(&self, _ctx: &TtrpcContext, req: api::StatsRequest) -> ttrpc::Result<api::StatsResponse> {
        let cell = self.get(&req.id)?;
        let metrics = cell.lock().cgroup.stats().map_err(|e| status(Code::UNKNOWN, e))?;
        // The Any's type URL is the message's full name
        // (io.containerd.cgroups.v1.Metrics or .v2.Metrics), which is how
        // containerd's typeurl registry knows these types.
        let any = match metrics {
            cgroup::Metrics::V1(m) => containerd_shim::util::convert_to_any(Box::new(m)),
            cgroup::Metrics::V2(m) => containerd_shim::util::convert_to_any(Box::new(m)),
        }
        .map_err(|e| status(Code::INTERNAL, e))?;
        Ok(api::StatsResponse { stats: MessageField::some(any), ..Default::default() })
    }

    fn checkpoint(&self, _ctx: &TtrpcContext, req: api::CheckpointTaskRequest) -> ttrpc::Result<api::Empty> {
        let cell = self.get(&req.id)?;
        let opts = crate::criu::DumpOptions::from_any(req.options.as_ref()).map_err(|e| status(Code::INVALID_ARGUMENT, e))?;
        if req.path.is_empty() {
            return Err(status(Code::INVALID_ARGUMENT, "checkpoint: no image path given"));
        }
        let wait = self.hook_wait();
        let t = std::time::Instant::now();
        cell.lock().checkpoint(Path::new(&req.path), &opts, &wait).map_err(|e| {
            log::error!("checkpoint {}: {e}", req.id);
            ttrpc::Error::from(e)
        })?;
        log::info!("checkpoint of {} into {} done in {:.0} ms", req.id, req.path, t.elapsed().as_secs_f64() * 1e3);
        Ok(api::Empty::new())
    }
}
