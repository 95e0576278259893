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

/// One unary call of `containerd.services.tasks.v1.Tasks/<method>` in the
/// instance's namespace.
fn call<Req>(ctd: &PrivateContainerd, method: &'static str, req: Req) -> Result<(), tonic::Status>
where
    Req: prost::Message + Send + Sync + 'static,
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
        request.set_timeout(Duration::from_secs(30));
        let path = http::uri::PathAndQuery::from_static(method);
        grpc.unary::<Req, Empty, _>(request, path, tonic_prost::ProstCodec::default()).await.map(drop)
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
}
