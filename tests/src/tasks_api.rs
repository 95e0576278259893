//! Calls to containerd's own Tasks API (`containerd.services.tasks.v1`)
//! that ctr does not make, over containerd's gRPC socket: containerd
//! forwards them to the shim as it would for any client. The few messages
//! needed are written out here by hand (field numbers from containerd's
//! api/services/tasks/v1/tasks.proto).

use std::time::Duration;

use tonic::transport::{Endpoint, Uri};

use crate::PrivateContainerd;

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResizePtyRequest {
    #[prost(string, tag = "1")]
    pub container_id: String,
    #[prost(string, tag = "2")]
    pub exec_id: String,
    #[prost(uint32, tag = "3")]
    pub width: u32,
    #[prost(uint32, tag = "4")]
    pub height: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CloseIoRequest {
    #[prost(string, tag = "1")]
    pub container_id: String,
    #[prost(string, tag = "2")]
    pub exec_id: String,
    #[prost(bool, tag = "3")]
    pub stdin: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

/// google.protobuf.Any.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// containerd.types.Descriptor: a blob in containerd's content store.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Descriptor {
    #[prost(string, tag = "1")]
    pub media_type: String,
    #[prost(string, tag = "2")]
    pub digest: String,
    #[prost(int64, tag = "3")]
    pub size: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckpointTaskRequest {
    #[prost(string, tag = "1")]
    pub container_id: String,
    #[prost(string, tag = "2")]
    pub parent_checkpoint: String,
    #[prost(message, optional, tag = "3")]
    pub options: Option<Any>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckpointTaskResponse {
    #[prost(message, repeated, tag = "1")]
    pub descriptors: Vec<Descriptor>,
}

/// runc's CheckpointOptions (containerd.runc.v1), which containerd passes
/// to the shim as they are, for either runtime.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckpointOptions {
    #[prost(bool, tag = "1")]
    pub exit: bool,
    #[prost(bool, tag = "2")]
    pub open_tcp: bool,
    #[prost(bool, tag = "3")]
    pub external_unix_sockets: bool,
    #[prost(bool, tag = "4")]
    pub terminal: bool,
    #[prost(bool, tag = "5")]
    pub file_locks: bool,
    #[prost(string, repeated, tag = "6")]
    pub empty_namespaces: Vec<String>,
    #[prost(string, tag = "7")]
    pub cgroups_mode: String,
    #[prost(string, tag = "8")]
    pub image_path: String,
    #[prost(string, tag = "9")]
    pub work_path: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateTaskRequest {
    #[prost(string, tag = "1")]
    pub container_id: String,
    #[prost(string, tag = "4")]
    pub stdin: String,
    #[prost(string, tag = "5")]
    pub stdout: String,
    #[prost(string, tag = "6")]
    pub stderr: String,
    #[prost(bool, tag = "7")]
    pub terminal: bool,
    #[prost(message, optional, tag = "8")]
    pub checkpoint: Option<Descriptor>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateTaskResponse {
    #[prost(string, tag = "1")]
    pub container_id: String,
    #[prost(uint32, tag = "2")]
    pub pid: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StartRequest {
    #[prost(string, tag = "1")]
    pub container_id: String,
    #[prost(string, tag = "2")]
    pub exec_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StartResponse {
    #[prost(uint32, tag = "1")]
    pub pid: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExecProcessRequest {
    #[prost(string, tag = "1")]
    pub container_id: String,
    #[prost(string, tag = "2")]
    pub stdin: String,
    #[prost(string, tag = "3")]
    pub stdout: String,
    #[prost(string, tag = "4")]
    pub stderr: String,
    #[prost(bool, tag = "5")]
    pub terminal: bool,
    /// The process spec, as JSON (containerd's typeurl registers the OCI
    /// types as JSON).
    #[prost(message, optional, tag = "6")]
    pub spec: Option<Any>,
    #[prost(string, tag = "7")]
    pub exec_id: String,
}

/// Tasks.Wait's and Tasks.DeleteProcess's request: a process of a task.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProcessRequest {
    #[prost(string, tag = "1")]
    pub container_id: String,
    #[prost(string, tag = "2")]
    pub exec_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WaitResponse {
    #[prost(uint32, tag = "1")]
    pub exit_status: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteResponse {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(uint32, tag = "2")]
    pub pid: u32,
    #[prost(uint32, tag = "3")]
    pub exit_status: u32,
}

/// The type URL containerd's clients give an exec's process spec.
pub const PROCESS_SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// One unary call of `containerd.services.tasks.v1.Tasks/<method>` in the
/// instance's namespace.
fn call<Req>(ctd: &PrivateContainerd, method: &'static str, req: Req) -> Result<(), tonic::Status>
where
    Req: prost::Message + Send + Sync + 'static,
{
    call_for::<Req, Empty>(ctd, method, req).map(drop)
}

/// The same, with the response.
fn call_for<Req, Resp>(ctd: &PrivateContainerd, method: &'static str, req: Req) -> Result<Resp, tonic::Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("build a tokio runtime");
    let socket = ctd.socket();
    let namespace = ctd.namespace().to_string();
    rt.block_on(async move {
        let channel = Endpoint::try_from("http://[::1]:50051")
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(10))
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(socket).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await
            .map_err(|e| tonic::Status::unavailable(format!("connect to containerd: {e}")))?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut request = tonic::Request::new(req);
        request.metadata_mut().insert("containerd-namespace", namespace.parse().expect("namespace as metadata"));
        // A checkpoint or restore under qemu's TCG takes a while.
        request.set_timeout(Duration::from_secs(120));
        let path = http::uri::PathAndQuery::from_static(method);
        grpc.unary::<Req, Resp, _>(request, path, tonic_prost::ProstCodec::default()).await.map(|r| r.into_inner())
    })
}

impl PrivateContainerd {
    /// Tasks.ResizePty of container `id`'s process `exec_id` (empty: init).
    pub fn resize_pty(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<(), tonic::Status> {
        let req = ResizePtyRequest { container_id: id.into(), exec_id: exec_id.into(), width, height };
        call(self, "/containerd.services.tasks.v1.Tasks/ResizePty", req)
    }

    /// Tasks.CloseIO (stdin) of container `id`'s process `exec_id`.
    pub fn close_stdin(&self, id: &str, exec_id: &str) -> Result<(), tonic::Status> {
        let req = CloseIoRequest { container_id: id.into(), exec_id: exec_id.into(), stdin: true };
        call(self, "/containerd.services.tasks.v1.Tasks/CloseIO", req)
    }

    /// Tasks.Checkpoint of container `id`'s task with runc's
    /// CheckpointOptions: the checkpoint's descriptors in containerd's
    /// content store (the CRIU images as a tar, and the spec).
    pub fn checkpoint_task(&self, id: &str, opts: &CheckpointOptions) -> Result<Vec<Descriptor>, tonic::Status> {
        let any = Any { type_url: "containerd.runc.v1.CheckpointOptions".into(), value: prost::Message::encode_to_vec(opts) };
        let req = CheckpointTaskRequest { container_id: id.into(), parent_checkpoint: String::new(), options: Some(any) };
        call_for::<_, CheckpointTaskResponse>(self, "/containerd.services.tasks.v1.Tasks/Checkpoint", req).map(|r| r.descriptors)
    }

    /// Tasks.Create of a task for container `id` from `checkpoint` (the
    /// CRIU images descriptor of a checkpoint), its stdout and stderr to
    /// `stdout` (a path; empty: none), then Tasks.Start: the restored
    /// init's pid.
    pub fn restore_task(&self, id: &str, checkpoint: &Descriptor, stdout: &str) -> Result<u32, tonic::Status> {
        self.create_and_start_task(id, Some(checkpoint), stdout, false)
    }

    /// Tasks.Create of container `id`'s task (from `checkpoint` if given),
    /// its output to `stdout` (with `terminal`, the terminal's), then
    /// Tasks.Start: the init's pid.
    pub fn create_and_start_task(&self, id: &str, checkpoint: Option<&Descriptor>, stdout: &str, terminal: bool) -> Result<u32, tonic::Status> {
        let stderr = if terminal { String::new() } else { stdout.to_string() };
        let req = CreateTaskRequest { container_id: id.into(), stdout: stdout.into(), stderr, terminal, checkpoint: checkpoint.cloned(), ..Default::default() };
        call_for::<_, CreateTaskResponse>(self, "/containerd.services.tasks.v1.Tasks/Create", req)?;
        self.start_process(id, "")
    }

    /// Tasks.Create of container `id`'s task, without a terminal, its stdio
    /// at these paths (empty: none): the init's pid. Tasks.Start
    /// ([`Self::start_process`] with no exec id) starts it.
    pub fn create_task(&self, id: &str, stdin: &str, stdout: &str, stderr: &str) -> Result<u32, tonic::Status> {
        let req = CreateTaskRequest { container_id: id.into(), stdin: stdin.into(), stdout: stdout.into(), stderr: stderr.into(), ..Default::default() };
        call_for::<_, CreateTaskResponse>(self, "/containerd.services.tasks.v1.Tasks/Create", req).map(|r| r.pid)
    }

    /// Tasks.Exec of process `exec_id` in container `id`'s task, `process`
    /// being its OCI process spec (JSON), with its stdio at these paths
    /// (empty: none; runc's shim wants stderr whenever stdout is a FIFO).
    /// Tasks.Start starts it.
    pub fn exec_process(&self, id: &str, exec_id: &str, process: &serde_json::Value, stdin: &str, stdout: &str, stderr: &str) -> Result<(), tonic::Status> {
        let spec = Any { type_url: PROCESS_SPEC_TYPE.into(), value: serde_json::to_vec(process).expect("serialize a process spec") };
        let req = ExecProcessRequest { container_id: id.into(), exec_id: exec_id.into(), stdin: stdin.into(), stdout: stdout.into(), stderr: stderr.into(), terminal: false, spec: Some(spec) };
        call(self, "/containerd.services.tasks.v1.Tasks/Exec", req)
    }

    /// Tasks.Start of container `id`'s process `exec_id` (empty: init): its pid.
    pub fn start_process(&self, id: &str, exec_id: &str) -> Result<u32, tonic::Status> {
        let req = StartRequest { container_id: id.into(), exec_id: exec_id.into() };
        call_for::<_, StartResponse>(self, "/containerd.services.tasks.v1.Tasks/Start", req).map(|r| r.pid)
    }

    /// Tasks.Wait for container `id`'s process `exec_id` (empty: init): its
    /// exit status, once it exited.
    pub fn wait_process(&self, id: &str, exec_id: &str) -> Result<u32, tonic::Status> {
        let req = ProcessRequest { container_id: id.into(), exec_id: exec_id.into() };
        call_for::<_, WaitResponse>(self, "/containerd.services.tasks.v1.Tasks/Wait", req).map(|r| r.exit_status)
    }

    /// Tasks.DeleteProcess of container `id`'s exec `exec_id`: its exit status.
    pub fn delete_process(&self, id: &str, exec_id: &str) -> Result<u32, tonic::Status> {
        let req = ProcessRequest { container_id: id.into(), exec_id: exec_id.into() };
        call_for::<_, DeleteResponse>(self, "/containerd.services.tasks.v1.Tasks/DeleteProcess", req).map(|r| r.exit_status)
    }
}
