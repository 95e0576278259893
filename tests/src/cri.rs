//! The CRI path: a private containerd whose CRI plugin has a private CNI
//! network and the test images, driven through the CRI v1 gRPC API (the
//! `k8s-cri` crate over containerd's unix socket), as the kubelet drives it.
//!
//! [`CriContainerd`] is synchronous: each call runs on its own tokio runtime
//! with a time limit, so tests stay plain `#[test]` functions. Dropping it,
//! even after a failed assertion, stops and removes every pod sandbox through
//! CRI, then lets [`PrivateContainerd`] remove what is left (tasks and
//! containers of every namespace, `k8s.io` included, shims, mounts, cgroups)
//! and [`CniNetwork`] the bridge, IPAM state and network namespaces.
//!
//! Every pod's `cgroup_parent` is `/<containerd namespace>/<pod name>`, so its
//! containers' cgroups live below the instance's own cgroup, which the
//! harness removes.

use std::collections::HashMap;
use std::fs;
use std::future::Future;
use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use serde_json::Value;
use tonic::transport::{Channel, Endpoint, Uri};

pub use crate::containerd::CriSettings;
pub use k8s_cri::v1::{
    ContainerConfig, ContainerState, ContainerStats, ContainerStatus, ExecSyncResponse,
    LinuxContainerResources, NamespaceMode, PodSandboxConfig, PodSandboxState, PodSandboxStatus,
};
pub use tonic::{Code, Status};

use crate::cni::{CniNetwork, CNI_BIN_DIR};
use crate::host::{self, Process};
use crate::image::{self, BUSYBOX_IMAGE, K8S_NAMESPACE, PAUSE_IMAGE};
use crate::{runtime_under_test, wait_until, PrivateContainerd, RUNC_RUNTIME};

/// Time limit of one CRI call. RunPodSandbox and StopContainer take a few
/// seconds at most; a hung shim must fail the test, not hang the run.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit of the CRI calls Drop makes.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(15);

static INSTANCES: AtomicUsize = AtomicUsize::new(0);

/// The CRI runtime handler under test: `runc` when `IT_RUNTIME` is
/// `io.containerd.runc.v2` (checking the expectations), else `rust`.
pub fn handler_under_test() -> &'static str {
    if runtime_under_test() == RUNC_RUNTIME {
        "runc"
    } else {
        "rust"
    }
}

/// Options for [`CriContainerd::start_with`].
#[derive(Debug, Clone, Default)]
pub struct CriOptions {
    /// TOML appended to containerd's config, e.g. an `options` table of the
    /// `rust` runtime. `{work}` stands for the instance's work directory.
    pub extra_toml: String,
    /// Files (name, contents) written into the work directory before
    /// containerd starts, e.g. a runtime's `ConfigPath`.
    pub files: Vec<(String, String)>,
}

/// A pod sandbox created by [`CriContainerd::run_pod`].
#[derive(Debug, Clone)]
pub struct Pod {
    pub id: String,
    pub config: PodSandboxConfig,
}

impl Pod {
    /// The pod's log directory (`PodSandboxConfig.log_directory`).
    pub fn log_directory(&self) -> PathBuf {
        PathBuf::from(&self.config.log_directory)
    }
}

/// What a streaming (exec/attach) session delivered.
#[derive(Debug, Default)]
pub struct StreamOutput {
    /// The subprotocol the server agreed to.
    pub protocol: String,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The JSON `Status` of the error channel (v4 protocol), if any.
    pub status: Option<Value>,
}

impl StreamOutput {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// The exit code the v4 status reports: 0 for `Success`, the `ExitCode`
    /// cause of a `NonZeroExitCode` failure, `None` otherwise.
    pub fn exit_code(&self) -> Option<i32> {
        let status = self.status.as_ref()?;
        if status["status"] == "Success" {
            return Some(0);
        }
        status["details"]["causes"]
            .as_array()?
            .iter()
            .find(|c| c["reason"] == "ExitCode")?["message"]
            .as_str()?
            .parse()
            .ok()
    }
}

/// A private containerd with the CRI plugin set up (CNI network, pause and
/// busybox images), and a CRI client to it.
pub struct CriContainerd {
    // Dropped in this order, after Drop::drop removed the pods through CRI.
    ctd: Option<PrivateContainerd>,
    cni: Option<CniNetwork>,
    rt: tokio::runtime::Runtime,
    channel: Channel,
    work: PathBuf,
    handler: String,
    pods: Mutex<Vec<String>>,
    next: AtomicUsize,
    /// Set when a CRI call ran out of time: containerd or a shim hangs, so
    /// Drop skips the orderly CRI teardown and goes straight to the
    /// harness's blunt cleanup.
    hung: AtomicBool,
}

impl CriContainerd {
    /// Starts containerd with the CRI plugin, the handler under test being
    /// [`handler_under_test`].
    pub fn start() -> Self {
        Self::start_with(CriOptions::default())
    }

    /// Like [`Self::start`] with extra settings.
    pub fn start_with(options: CriOptions) -> Self {
        crate::require_root();
        let pid = std::process::id();
        let (work, n) = loop {
            let n = INSTANCES.fetch_add(1, Ordering::SeqCst);
            let dir = PathBuf::from(format!("/tmp/rsv2-cri-{pid}-{n}"));
            match fs::create_dir(&dir) {
                Ok(()) => break (dir, n),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create {}: {e}", dir.display()),
            }
        };
        // A guard removes the directory (and the network) if setup panics
        // before `Self` exists to do it.
        struct Setup {
            work: PathBuf,
            cni: Option<CniNetwork>,
            ctd: Option<PrivateContainerd>,
        }
        impl Drop for Setup {
            fn drop(&mut self) {
                drop(self.ctd.take());
                drop(self.cni.take());
                let _ = fs::remove_dir_all(&self.work);
            }
        }
        let mut setup = Setup {
            work: work.clone(),
            cni: None,
            ctd: None,
        };
        let cni = setup
            .cni
            .insert(CniNetwork::create(&work.join("cni"), &format!("{pid}x{n}")));
        let settings = CriSettings {
            sandbox_image: PAUSE_IMAGE.to_string(),
            cni_bin_dir: PathBuf::from(CNI_BIN_DIR),
            cni_conf_dir: cni.conf_dir().to_path_buf(),
            netns_under_state_dir: true,
            extra_toml: options
                .extra_toml
                .replace("{work}", &work.display().to_string()),
        };
        for (name, contents) in &options.files {
            let path = work.join(name);
            fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        }
        let ctd = setup
            .ctd
            .insert(PrivateContainerd::start_with_cri(settings));
        image::import_test_images(ctd, &work.join("images"));

        // Multi-threaded, so that calls from several threads at once (the
        // bench's pods N at a time) run at once: a current-thread runtime
        // lets only one block_on drive it.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("build a tokio runtime");
        let socket = ctd.socket();
        let channel = rt
            .block_on(async {
                // The URI is a placeholder: the connector dials the socket.
                Endpoint::try_from("http://[::1]:50051")
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
            })
            .unwrap_or_else(|e| panic!("cannot connect to containerd's CRI: {e}"));

        let this = Self {
            ctd: setup.ctd.take(),
            cni: setup.cni.take(),
            rt,
            channel,
            work,
            handler: handler_under_test().to_string(),
            pods: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            hung: AtomicBool::new(false),
        };
        std::mem::forget(setup);
        this.wait_for_network_ready();
        this
    }

    /// The underlying containerd instance.
    pub fn ctd(&self) -> &PrivateContainerd {
        self.ctd.as_ref().expect("containerd is running")
    }

    /// The instance's CNI network.
    pub fn cni(&self) -> &CniNetwork {
        self.cni.as_ref().expect("the network exists")
    }

    /// The runtime handler pods are created with (`rust` or `runc`).
    pub fn handler(&self) -> &str {
        &self.handler
    }

    /// The instance's scratch directory (CNI config, images, pod logs).
    pub fn work_dir(&self) -> &Path {
        &self.work
    }

    /// Where the CRI plugin mounts pod network namespaces
    /// (`netns_mounts_under_state_dir`).
    pub fn netns_dir(&self) -> PathBuf {
        self.ctd()
            .state_dir()
            .join("io.containerd.grpc.v1.cri/netns")
    }

    /// The last `lines` lines of containerd's log, for messages, without
    /// the startup noise (plugin loading, the one-line CRI config dump) and
    /// with very long lines cut.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.ctd().log();
        let kept: Vec<String> = log
            .lines()
            .filter(|l| {
                !l.contains("loading plugin") && !l.contains("Start cri plugin with config")
            })
            .map(|l| match l.char_indices().nth(600) {
                Some((i, _)) => format!("{}...", &l[..i]),
                None => l.to_string(),
            })
            .collect();
        format!(
            "--- containerd log ({}/containerd.log), last {lines} lines ---\n{}",
            self.ctd().dir().display(),
            kept[kept.len().saturating_sub(lines)..].join("\n")
        )
    }

    fn runtime_client(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
    }

    fn image_client(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel.clone())
    }

    fn block<T, F>(&self, what: &str, timeout: Duration, fut: F) -> Result<T, Status>
    where
        F: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.rt
            .block_on(async { tokio::time::timeout(timeout, fut).await })
            .map_err(|_| {
                self.hung.store(true, Ordering::SeqCst);
                Status::deadline_exceeded(format!("{what}: no answer within {timeout:?}"))
            })?
            .map(tonic::Response::into_inner)
    }

    /// Unwraps a CRI result, panicking with the call, the status and the
    /// tail of containerd's log.
    pub fn must<T>(&self, what: &str, result: Result<T, Status>) -> T {
        result.unwrap_or_else(|s| {
            panic!(
                "CRI {what} failed: {:?}: {}\n{}",
                s.code(),
                s.message(),
                self.log_tail(40)
            )
        })
    }

    /// Polls the CRI `Status` until `NetworkReady` holds: the CNI config is
    /// loaded asynchronously after startup.
    fn wait_for_network_ready(&self) {
        let mut last = String::new();
        let ready = wait_until(Duration::from_secs(20), || {
            let req = cri::StatusRequest { verbose: false };
            match self.block("Status", CALL_TIMEOUT, self.runtime_client().status(req)) {
                Ok(resp) => {
                    let conds = resp.status.map(|s| s.conditions).unwrap_or_default();
                    last = format!("{conds:?}");
                    // The two readiness conditions; containerd 2.2 adds an
                    // informational one (ContainerdHasNoDeprecationWarnings,
                    // false on this cgroup v1 host).
                    ["RuntimeReady", "NetworkReady"].iter().all(|t| conds.iter().any(|c| c.r#type == *t && c.status))
                }
                Err(e) => {
                    last = e.to_string();
                    false
                }
            }
        });
        assert!(
            ready,
            "CRI runtime not ready within 20s: {last}\n{}",
            self.log_tail(40)
        );
    }

    /// CRI Status: the readiness conditions and, from containerd 2.x, the
    /// features of each runtime handler.
    pub fn status(&self) -> cri::StatusResponse {
        let req = cri::StatusRequest { verbose: false };
        self.must("Status", self.block("Status", CALL_TIMEOUT, self.runtime_client().status(req)))
    }

    /// A name unique within this instance, made from `prefix`.
    pub fn unique_name(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.next.fetch_add(1, Ordering::SeqCst))
    }

    // --- pod sandboxes ---

    /// A pod config named `name` (made unique): pod-scoped network, IPC and
    /// PID namespaces, a log directory in the work dir and a cgroup parent
    /// below the instance's cgroup.
    pub fn pod_config(&self, name: &str) -> PodSandboxConfig {
        let name = self.unique_name(name);
        let log_directory = self.work.join("logs").join(&name);
        fs::create_dir_all(&log_directory)
            .unwrap_or_else(|e| panic!("mkdir {}: {e}", log_directory.display()));
        let pod = NamespaceMode::Pod as i32;
        PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.clone(),
                uid: format!("uid-{}-{name}", self.ctd().namespace()),
                namespace: "rsv2-tests".into(),
                attempt: 0,
            }),
            hostname: name.clone(),
            log_directory: log_directory.display().to_string(),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: format!("/{}/{name}", self.ctd().namespace()),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: pod,
                        pid: pod,
                        ipc: pod,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// RunPodSandbox with the handler under test.
    pub fn try_run_pod(&self, config: &PodSandboxConfig) -> Result<String, Status> {
        self.try_run_pod_with_handler(config, &self.handler.clone())
    }

    /// RunPodSandbox with the runtime handler `handler` (`rust`, `runc`),
    /// e.g. to compare the two in one instance.
    pub fn try_run_pod_with_handler(
        &self,
        config: &PodSandboxConfig,
        handler: &str,
    ) -> Result<String, Status> {
        let req = cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.to_string(),
        };
        let id = self
            .block(
                "RunPodSandbox",
                CALL_TIMEOUT,
                self.runtime_client().run_pod_sandbox(req),
            )?
            .pod_sandbox_id;
        self.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(id.clone());
        if let Some(ns) = self.pod_netns(&id) {
            self.cni().track_netns(&ns);
        }
        Ok(id)
    }

    /// RunPodSandbox, panicking on failure.
    pub fn run_pod(&self, config: PodSandboxConfig) -> Pod {
        let id = self.must("RunPodSandbox", self.try_run_pod(&config));
        Pod { id, config }
    }

    /// PodSandboxStatus (verbose): the status and the `info` JSON.
    pub fn pod_status_verbose(&self, id: &str) -> Result<(PodSandboxStatus, Value), Status> {
        let req = cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: true,
        };
        let resp = self.block(
            "PodSandboxStatus",
            CALL_TIMEOUT,
            self.runtime_client().pod_sandbox_status(req),
        )?;
        let info = parse_info(&resp.info);
        let status = resp
            .status
            .ok_or_else(|| Status::internal("PodSandboxStatus without status"))?;
        Ok((status, info))
    }

    /// PodSandboxStatus, panicking on failure.
    pub fn pod_status(&self, id: &str) -> PodSandboxStatus {
        self.must("PodSandboxStatus", self.pod_status_verbose(id)).0
    }

    /// The verbose `info` of a pod (pid, runtimeSpec, ...).
    pub fn pod_info(&self, id: &str) -> Value {
        self.must("PodSandboxStatus", self.pod_status_verbose(id)).1
    }

    /// Host pid of the pod's pause process.
    pub fn pod_pid(&self, id: &str) -> u32 {
        let info = self.pod_info(id);
        info["pid"]
            .as_u64()
            .filter(|p| *p > 0)
            .unwrap_or_else(|| panic!("pod {id}: no pid in the verbose info: {info}"))
            as u32
    }

    /// The pod's IP as PodSandboxStatus reports it.
    pub fn pod_ip(&self, id: &str) -> String {
        self.pod_status(id)
            .network
            .map(|n| n.ip)
            .unwrap_or_default()
    }

    /// The path of the pod's network namespace, from its runtime spec.
    pub fn pod_netns(&self, id: &str) -> Option<PathBuf> {
        let (_, info) = self.pod_status_verbose(id).ok()?;
        info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()?
            .iter()
            .find(|n| n["type"] == "network")?["path"]
            .as_str()
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    }

    pub fn try_stop_pod(&self, id: &str) -> Result<(), Status> {
        let req = cri::StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.block(
            "StopPodSandbox",
            CALL_TIMEOUT,
            self.runtime_client().stop_pod_sandbox(req),
        )
        .map(drop)
    }

    pub fn stop_pod(&self, id: &str) {
        self.must("StopPodSandbox", self.try_stop_pod(id))
    }

    pub fn try_remove_pod(&self, id: &str) -> Result<(), Status> {
        let req = cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.block(
            "RemovePodSandbox",
            CALL_TIMEOUT,
            self.runtime_client().remove_pod_sandbox(req),
        )?;
        self.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| p != id);
        Ok(())
    }

    pub fn remove_pod(&self, id: &str) {
        self.must("RemovePodSandbox", self.try_remove_pod(id))
    }

    /// Ids of all pod sandboxes CRI knows.
    pub fn list_pods(&self) -> Vec<String> {
        let req = cri::ListPodSandboxRequest { filter: None };
        self.must(
            "ListPodSandbox",
            self.block(
                "ListPodSandbox",
                CALL_TIMEOUT,
                self.runtime_client().list_pod_sandbox(req),
            ),
        )
        .items
        .into_iter()
        .map(|p| p.id)
        .collect()
    }

    // --- containers ---

    /// A container config from the busybox image running `command` (empty:
    /// the image's entrypoint/cmd), logging to `<name>.log` in the pod's log
    /// directory.
    pub fn container_config(&self, name: &str, command: &[&str]) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.to_string(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: BUSYBOX_IMAGE.to_string(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            linux: Some(cri::LinuxContainerConfig::default()),
            ..Default::default()
        }
    }

    pub fn try_create_container(
        &self,
        pod: &Pod,
        config: &ContainerConfig,
    ) -> Result<String, Status> {
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config.clone()),
            sandbox_config: Some(pod.config.clone()),
        };
        self.block(
            "CreateContainer",
            CALL_TIMEOUT,
            self.runtime_client().create_container(req),
        )
        .map(|r| r.container_id)
    }

    pub fn create_container(&self, pod: &Pod, config: &ContainerConfig) -> String {
        self.must("CreateContainer", self.try_create_container(pod, config))
    }

    pub fn try_start_container(&self, id: &str) -> Result<(), Status> {
        let req = cri::StartContainerRequest {
            container_id: id.to_string(),
        };
        self.block(
            "StartContainer",
            CALL_TIMEOUT,
            self.runtime_client().start_container(req),
        )
        .map(drop)
    }

    pub fn start_container(&self, id: &str) {
        self.must("StartContainer", self.try_start_container(id))
    }

    /// CreateContainer then StartContainer; returns the container id.
    pub fn run_container(&self, pod: &Pod, config: &ContainerConfig) -> String {
        let id = self.create_container(pod, config);
        self.start_container(&id);
        id
    }

    /// ContainerStatus (verbose): the status and the `info` JSON.
    pub fn container_status_verbose(&self, id: &str) -> Result<(ContainerStatus, Value), Status> {
        let req = cri::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: true,
        };
        let resp = self.block(
            "ContainerStatus",
            CALL_TIMEOUT,
            self.runtime_client().container_status(req),
        )?;
        let info = parse_info(&resp.info);
        let status = resp
            .status
            .ok_or_else(|| Status::internal("ContainerStatus without status"))?;
        Ok((status, info))
    }

    pub fn container_status(&self, id: &str) -> ContainerStatus {
        self.must("ContainerStatus", self.container_status_verbose(id))
            .0
    }

    /// The verbose `info` of a container (pid, runtimeSpec, ...).
    pub fn container_info(&self, id: &str) -> Value {
        self.must("ContainerStatus", self.container_status_verbose(id))
            .1
    }

    /// Host pid of a container's init process.
    pub fn container_pid(&self, id: &str) -> u32 {
        let info = self.container_info(id);
        info["pid"]
            .as_u64()
            .filter(|p| *p > 0)
            .unwrap_or_else(|| panic!("container {id}: no pid in the verbose info: {info}"))
            as u32
    }

    /// Polls ContainerStatus until the container is in `state`; panics after
    /// `timeout` with the last status.
    pub fn wait_container_state(
        &self,
        id: &str,
        state: ContainerState,
        timeout: Duration,
    ) -> ContainerStatus {
        let mut last = None;
        let ok = wait_until(timeout, || {
            let s = self.container_status(id);
            let reached = s.state == state as i32;
            last = Some(s);
            reached
        });
        let last = last.expect("polled at least once");
        assert!(
            ok,
            "container {id} not {state:?} within {timeout:?}: {last:?}\n{}",
            self.log_tail(30)
        );
        last
    }

    pub fn try_exec_sync(
        &self,
        id: &str,
        cmd: &[&str],
        timeout_secs: i64,
    ) -> Result<ExecSyncResponse, Status> {
        let req = cri::ExecSyncRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: timeout_secs,
        };
        self.block(
            "ExecSync",
            CALL_TIMEOUT,
            self.runtime_client().exec_sync(req),
        )
    }

    /// ExecSync (10 s limit), panicking if the call itself fails.
    pub fn exec_sync(&self, id: &str, cmd: &[&str]) -> ExecSyncResponse {
        self.must(
            &format!("ExecSync {cmd:?}"),
            self.try_exec_sync(id, cmd, 10),
        )
    }

    pub fn try_container_stats(&self, id: &str) -> Result<ContainerStats, Status> {
        let req = cri::ContainerStatsRequest {
            container_id: id.to_string(),
        };
        self.block(
            "ContainerStats",
            CALL_TIMEOUT,
            self.runtime_client().container_stats(req),
        )?
        .stats
        .ok_or_else(|| Status::internal("ContainerStats without stats"))
    }

    pub fn try_update_resources(
        &self,
        id: &str,
        linux: LinuxContainerResources,
    ) -> Result<(), Status> {
        let req = cri::UpdateContainerResourcesRequest {
            container_id: id.to_string(),
            linux: Some(linux),
            ..Default::default()
        };
        self.block(
            "UpdateContainerResources",
            CALL_TIMEOUT,
            self.runtime_client().update_container_resources(req),
        )
        .map(drop)
    }

    pub fn try_stop_container(&self, id: &str, timeout_secs: i64) -> Result<(), Status> {
        let req = cri::StopContainerRequest {
            container_id: id.to_string(),
            timeout: timeout_secs,
        };
        self.block(
            "StopContainer",
            CALL_TIMEOUT,
            self.runtime_client().stop_container(req),
        )
        .map(drop)
    }

    pub fn stop_container(&self, id: &str, timeout_secs: i64) {
        self.must("StopContainer", self.try_stop_container(id, timeout_secs))
    }

    pub fn try_remove_container(&self, id: &str) -> Result<(), Status> {
        let req = cri::RemoveContainerRequest {
            container_id: id.to_string(),
        };
        self.block(
            "RemoveContainer",
            CALL_TIMEOUT,
            self.runtime_client().remove_container(req),
        )
        .map(drop)
    }

    pub fn remove_container(&self, id: &str) {
        self.must("RemoveContainer", self.try_remove_container(id))
    }

    /// Ids of all containers CRI knows.
    pub fn list_containers(&self) -> Vec<String> {
        let req = cri::ListContainersRequest { filter: None };
        self.must(
            "ListContainers",
            self.block(
                "ListContainers",
                CALL_TIMEOUT,
                self.runtime_client().list_containers(req),
            ),
        )
        .containers
        .into_iter()
        .map(|c| c.id)
        .collect()
    }

    /// The CRI log file of a container of `pod`.
    pub fn log_path(&self, pod: &Pod, config: &ContainerConfig) -> PathBuf {
        pod.log_directory().join(&config.log_path)
    }

    // --- streaming ---

    /// Exec: the streaming URL.
    pub fn try_exec_url(&self, req: cri::ExecRequest) -> Result<String, Status> {
        self.block("Exec", CALL_TIMEOUT, self.runtime_client().exec(req))
            .map(|r| r.url)
    }

    /// Attach: the streaming URL.
    pub fn try_attach_url(&self, req: cri::AttachRequest) -> Result<String, Status> {
        self.block("Attach", CALL_TIMEOUT, self.runtime_client().attach(req))
            .map(|r| r.url)
    }

    // --- images ---

    /// Image names the CRI image service lists.
    pub fn list_images(&self) -> Vec<String> {
        let req = cri::ListImagesRequest { filter: None };
        self.must(
            "ListImages",
            self.block(
                "ListImages",
                CALL_TIMEOUT,
                self.image_client().list_images(req),
            ),
        )
        .images
        .into_iter()
        .flat_map(|i| i.repo_tags)
        .collect()
    }

    // --- host views ---

    /// Long-running shim processes of this containerd in the `k8s.io`
    /// namespace (not short-lived `start`/`delete` invocations).
    pub fn shim_servers(&self) -> Vec<Process> {
        self.ctd()
            .shims()
            .into_iter()
            .filter(|p| {
                p.flag("-namespace") == Some(K8S_NAMESPACE)
                    && !p.cmdline.iter().any(|a| a == "start" || a == "delete")
            })
            .collect()
    }

    /// The cgroup of a pod's container relative to a hierarchy root, from the
    /// runtime spec containerd generated.
    pub fn container_cgroup(&self, id: &str) -> String {
        let info = self.container_info(id);
        info["runtimeSpec"]["linux"]["cgroupsPath"]
            .as_str()
            .unwrap_or_else(|| panic!("container {id}: no cgroupsPath in its spec: {info}"))
            .trim_start_matches('/')
            .to_string()
    }

    /// The cgroup directory of `pod` (its `cgroup_parent`) relative to a
    /// hierarchy root.
    pub fn pod_cgroup(&self, pod: &Pod) -> String {
        pod.config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.trim_start_matches('/').to_string())
            .unwrap_or_default()
    }

    /// What a removed pod left on the host: shims, processes in its
    /// cgroups, mounts (its shm, network namespaces, container rootfs),
    /// bundles, cgroup directories, veths and IP allocations. Empty when
    /// clean. Meant for an instance with one pod: shims, rootfs mounts and
    /// bundles of any pod count.
    pub fn pod_leftovers(&self, pod: &Pod) -> Vec<String> {
        let mut found = Vec::new();
        for s in self.shim_servers() {
            found.push(format!("shim {}: {}", s.pid, s.command()));
        }
        let cg = self.pod_cgroup(pod);
        for dir in host::cgroup_dirs(&cg) {
            for sub in host::dirs_deepest_first(&dir) {
                for pid in host::cgroup_procs(&sub) {
                    found.push(format!("process {pid} in {}", sub.display()));
                }
                if sub != dir {
                    found.push(format!("cgroup {}", sub.display()));
                }
            }
        }
        let state = self.ctd().state_dir();
        let bundles = state
            .join("io.containerd.runtime.v2.task")
            .join(K8S_NAMESPACE);
        for m in host::mount_points() {
            let s = m.display().to_string();
            // The pod's shm and netns, and any container rootfs.
            if m.starts_with(&state)
                && (s.contains(&pod.id)
                    || m.starts_with(self.netns_dir())
                    || m.starts_with(&bundles))
            {
                found.push(format!("mount {s}"));
            }
        }
        if let Ok(entries) = fs::read_dir(self.netns_dir()) {
            for e in entries.filter_map(|e| e.ok()) {
                found.push(format!("netns {}", e.path().display()));
            }
        }
        for port in self.cni().bridge_ports() {
            found.push(format!("veth {port} on {}", self.cni().bridge()));
        }
        for ip in self.cni().allocated_ips() {
            found.push(format!("IP {ip} still allocated"));
        }
        if let Ok(entries) = fs::read_dir(&bundles) {
            for e in entries.filter_map(|e| e.ok()) {
                found.push(format!("bundle {}", e.path().display()));
            }
        }
        found
    }

    /// Asserts that [`Self::pod_leftovers`] becomes empty within 10 s.
    pub fn assert_pod_gone(&self, pod: &Pod) {
        let mut last = Vec::new();
        let clean = wait_until(Duration::from_secs(10), || {
            last = self.pod_leftovers(pod);
            last.is_empty()
        });
        assert!(
            clean,
            "pod {} left behind:\n  {}\n{}",
            pod.id,
            last.join("\n  "),
            self.log_tail(40)
        );
    }
}

impl Drop for CriContainerd {
    fn drop(&mut self) {
        if let Some(ctd) = self
            .ctd
            .as_ref()
            .filter(|_| !self.hung.load(Ordering::SeqCst))
        {
            // Every pod CRI still knows, plus those we created (in case the
            // list call fails): stop, then remove, each with a short limit.
            let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let req = cri::ListPodSandboxRequest { filter: None };
            if let Ok(list) = self.block(
                "ListPodSandbox",
                CLEANUP_TIMEOUT,
                self.runtime_client().list_pod_sandbox(req),
            ) {
                for p in list.items {
                    if !pods.contains(&p.id) {
                        pods.push(p.id);
                    }
                }
            }
            for id in &pods {
                if self.hung.load(Ordering::SeqCst) {
                    break;
                }
                let req = cri::StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                };
                if let Err(e) = self.block(
                    "StopPodSandbox",
                    CLEANUP_TIMEOUT,
                    self.runtime_client().stop_pod_sandbox(req),
                ) {
                    eprintln!("[{}] cleanup: StopPodSandbox {id}: {e}", ctd.namespace());
                }
                let req = cri::RemovePodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                };
                if let Err(e) = self.block(
                    "RemovePodSandbox",
                    CLEANUP_TIMEOUT,
                    self.runtime_client().remove_pod_sandbox(req),
                ) {
                    eprintln!("[{}] cleanup: RemovePodSandbox {id}: {e}", ctd.namespace());
                }
            }
        }
        // containerd (its Drop deletes what CRI left in every namespace,
        // kills shims, unmounts, removes cgroups), then the network.
        let socket = self.ctd.as_ref().map(|c| c.socket().display().to_string());
        drop(self.ctd.take());
        // A shim binary not named `containerd-shim-*` (a SHIM_BIN copy) is
        // missed by the harness's shim filter: anything still serving our
        // socket goes now.
        if let Some(socket) = socket {
            for p in host::processes() {
                if p.flag("-address") == Some(socket.as_str()) {
                    eprintln!("cleanup: killing leftover shim {}: {}", p.pid, p.command());
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p.pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        drop(self.cni.take());
        // Mounts a test made in its scratch directory (volumes), deepest
        // first, even when it panicked before unmounting them.
        let mut mounts = host::mounts_under(&self.work);
        mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for m in mounts {
            if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
                eprintln!("cleanup: umount {}: {e}", m.display());
            }
        }
        if host::mounts_under(&self.work).is_empty() {
            if let Err(e) = fs::remove_dir_all(&self.work) {
                eprintln!("cannot remove {}: {e}", self.work.display());
            }
        } else {
            eprintln!(
                "leaving {} in place: still mounted below it",
                self.work.display()
            );
        }
    }
}

/// The verbose `info` map of a status response: containerd puts one JSON
/// document under the key `info`.
fn parse_info(info: &HashMap<String, String>) -> Value {
    info.get("info")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null)
}

// --- the kubelet's streaming protocol over websocket ---

/// Channel numbers of the `channel.k8s.io` framing: each binary message
/// starts with the channel byte.
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;

/// Drives an exec or attach URL of containerd's streaming server over a
/// websocket with the `v4.channel.k8s.io` subprotocol: sends `stdin` (if
/// any) once connected, then collects stdout, stderr and the status until the
/// server closes the connection or `timeout` passes (an error then).
/// `stop_when` may end the session early once the output so far satisfies it
/// (the client then closes the connection), for a process that never exits.
pub fn stream(
    url: &str,
    stdin: Option<&[u8]>,
    timeout: Duration,
    stop_when: impl Fn(&StreamOutput) -> bool,
) -> Result<StreamOutput, String> {
    use tungstenite::client::IntoClientRequest;
    use tungstenite::Message;

    let ws_url = url
        .strip_prefix("http://")
        .map(|rest| format!("ws://{rest}"))
        .ok_or_else(|| format!("streaming URL {url} is not http://"))?;
    let host_port = ws_url["ws://".len()..]
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let mut request = ws_url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("bad URL {ws_url}: {e}"))?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v4.channel.k8s.io".parse().expect("header value"),
    );
    let tcp = TcpStream::connect(&host_port).map_err(|e| format!("connect {host_port}: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let (mut ws, response) = tungstenite::client::client(request, tcp).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp)) => format!(
            "websocket handshake with {ws_url} refused: {} {}",
            resp.status(),
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default())
        ),
        e => format!("websocket handshake with {ws_url}: {e}"),
    })?;
    let mut out = StreamOutput {
        protocol: response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        ..Default::default()
    };
    if let Some(data) = stdin {
        let mut frame = vec![STDIN];
        frame.extend_from_slice(data);
        ws.send(Message::Binary(frame.into()))
            .map_err(|e| format!("send stdin: {e}"))?;
    }
    let deadline = Instant::now() + timeout;
    loop {
        if stop_when(&out) {
            let _ = ws.close(None);
            let _ = ws.flush();
            return Ok(out);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "streaming session {url} still open after {timeout:?}; got so far: {out:?}"
            ));
        }
        match ws.read() {
            Ok(Message::Binary(data)) => demux(&mut out, &data),
            // The base64 protocols send text frames: channel digit + base64.
            Ok(Message::Text(text)) => {
                return Err(format!("unexpected text frame on {}: {text}", out.protocol));
            }
            // RFC 6455 §5.5.1: nothing follows a Close frame, so the session's
            // output is complete. Reading on would only meet frames some servers
            // send after their Close ("Remote sent after having closed").
            Ok(Message::Close(_)) => return Ok(out),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                return Ok(out);
            }
            Err(tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake
                | tungstenite::error::ProtocolError::ReceivedAfterClosing,
            )) => return Ok(out),
            Err(e) => return Err(format!("websocket read: {e}; got so far: {out:?}")),
        }
    }
}

fn demux(out: &mut StreamOutput, data: &[u8]) {
    let Some((&channel, payload)) = data.split_first() else {
        return;
    };
    match channel {
        STDOUT => out.stdout.extend_from_slice(payload),
        STDERR => out.stderr.extend_from_slice(payload),
        ERROR if !payload.is_empty() => {
            out.status = Some(
                serde_json::from_slice(payload)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(payload).into())),
            );
        }
        _ => {}
    }
}

/// Reads a file fully, empty if missing.
pub fn read_file(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}
