//! The `start` action: containerd asks for a shim address.
//!
//! Nothing but the address may reach stdout or stderr: containerd reads
//! both, combined, as the address.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use containerd_shim::Flags;

use crate::options::RuntimeOptions;
use crate::server::LISTEN_FD;
use crate::task_api;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("read bundle config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("listen on {path}: {source}")]
    Listen { path: PathBuf, source: std::io::Error },
    #[error("spawn shim server: {0}")]
    Spawn(std::io::Error),
    #[error("write address file: {0}")]
    Address(std::io::Error),
    #[error("read the runtime options on stdin: {0}")]
    Options(String),
    #[error("move the shim into its ShimCgroup: {0}")]
    ShimCgroup(String),
    #[error("set the shim's oom_score_adj from containerd's ({path}): {source}")]
    OomScore { path: String, source: std::io::Error },
}

/// The highest oom_score_adj the kernel takes.
const OOM_SCORE_ADJ_MAX: i32 = 1000;

/// Gives this process, and so the server it spawns and every container
/// that does not set `process.oomScoreAdj`, containerd's oom_score_adj + 1,
/// as runc's shim does (`shim.AdjustOOMScore`): under memory pressure the
/// kernel then picks a container before containerd. Raising the score
/// needs no privilege; lowering it would need CAP_SYS_RESOURCE.
fn adjust_oom_score() -> Result<(), StartError> {
    let parent = format!("/proc/{}/oom_score_adj", std::os::unix::process::parent_id());
    let err = |path: &str| {
        let path = path.to_string();
        move |source| StartError::OomScore { path, source }
    };
    let text = std::fs::read_to_string(&parent).map_err(err(&parent))?;
    let score: i32 = text.trim().parse().map_err(|e| err(&parent)(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    let own = "/proc/self/oom_score_adj";
    std::fs::write(own, (score + 1).min(OOM_SCORE_ADJ_MAX).to_string()).map_err(err(own))
}

/// The annotations that put containers in one shim: every container of a
/// CRI pod names its sandbox, and runc's shim honours an explicit group.
const GROUP_ANNOTATIONS: [&str; 2] = ["io.kubernetes.cri.sandbox-id", "io.containerd.runc.v2.group"];

fn group_of(bundle: &Path, id: &str) -> Result<String, StartError> {
    let path = bundle.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| StartError::Config { path: path.clone(), message: e.to_string() })?;
    // Only annotations are needed here; a full parse (and its errors)
    // belongs to Create, where containerd shows the message to the user.
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| StartError::Config { path, message: e.to_string() })?;
    let group = GROUP_ANNOTATIONS.iter().find_map(|k| v.get("annotations")?.get(*k)?.as_str().map(str::to_owned));
    Ok(group.unwrap_or_else(|| id.to_string()))
}

/// Wall-clock time now, for the server's debug log of how long its spawn
/// took (two processes cannot share an Instant).
fn started_at_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// The runtime options containerd wrote to our stdin (a protobuf Any),
/// if any: `ctr` sends none and stdin is /dev/null then.
pub fn read_options() -> Result<RuntimeOptions, StartError> {
    use containerd_shim_protos::protobuf::Message;
    // SAFETY: isatty on fd 0.
    if unsafe { libc::isatty(0) } == 1 {
        return Ok(RuntimeOptions::default());
    }
    let mut bytes = Vec::new();
    std::io::stdin().read_to_end(&mut bytes).map_err(|e| StartError::Options(e.to_string()))?;
    if bytes.is_empty() {
        return Ok(RuntimeOptions::default());
    }
    let any = containerd_shim_protos::protobuf::well_known_types::any::Any::parse_from_bytes(&bytes).map_err(|e| StartError::Options(e.to_string()))?;
    crate::options::parse(Some(&any)).map_err(|e| StartError::Options(e.to_string()))
}

/// What `start` prints: the address, as the Task API version containerd
/// gets wants it (task_api.rs).
pub fn run(flags: &Flags) -> Result<String, StartError> {
    let options = read_options()?;
    let forced = std::env::var(task_api::FORCE_ENV).ok().or(options.task_api.map(|v| v.to_string()));
    let parent = PathBuf::from(format!("/proc/{}/exe", std::os::unix::process::parent_id()));
    let (api, why) = task_api::choose(forced.as_deref(), &parent, &flags.publish_binary);
    // containerd shows a failed start's output, never a successful one's:
    // the choice goes to the log of the server (a new one logs it).
    let address = serve(flags, &options, &format!("offering containerd Task API {api:?}: {why}"))?;
    Ok(task_api::announce(api, &address))
}

fn serve(flags: &Flags, options: &RuntimeOptions, note: &str) -> Result<String, StartError> {
    let bundle = std::env::current_dir().map_err(|e| StartError::Config { path: ".".into(), message: e.to_string() })?;
    let group = group_of(&bundle, &flags.id)?;
    let address = containerd_shim::socket_address(&flags.address, &flags.namespace, &group);
    let path = PathBuf::from(address.strip_prefix("unix://").unwrap_or(&address));

    if UnixStream::connect(&path).is_ok() {
        // The pod's shim is already serving: reuse it.
        std::fs::write(bundle.join("address"), &address).map_err(StartError::Address)?;
        return Ok(address);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| StartError::Listen { path: path.clone(), source })?;
    }
    // A socket file nobody answers on is left over from a dead shim.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(|source| StartError::Listen { path: path.clone(), source })?;

    adjust_oom_score()?;
    let exe = std::env::current_exe().map_err(StartError::Spawn)?;
    let mut cmd = Command::new(exe);
    cmd.args(["-namespace", &flags.namespace, "-id", &flags.id, "-address", &flags.address, "-socket", &address]);
    if !flags.publish_binary.is_empty() {
        cmd.args(["-publish-binary", &flags.publish_binary]);
    }
    if flags.debug {
        cmd.arg("-debug");
    }
    cmd.arg("serve").current_dir(&bundle).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    cmd.env(crate::server::STARTED_AT_ENV, started_at_nanos().to_string());
    cmd.env(crate::server::START_NOTE_ENV, note);
    cmd.env(crate::server::TUNABLES_ENV, crate::server::with_server_tunables(std::env::var(crate::server::TUNABLES_ENV).ok().as_deref()));
    let fd = listener.as_raw_fd();
    // SAFETY: dup2 and setsid are async-signal-safe. The server gets the
    // listener at a fixed fd, and its own session so that nothing aimed at
    // containerd's process group or session reaches it.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep close-on-exec set.
            let moved = if fd == LISTEN_FD { libc::fcntl(fd, libc::F_SETFD, 0) } else { libc::dup2(fd, LISTEN_FD) };
            if moved == -1 || libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // The server's parent (this process) exits right away, so it is
    // reparented to PID 1 (or the nearest subreaper).
    let child = cmd.spawn().map_err(StartError::Spawn)?;
    if let Some(cg) = &options.shim_cgroup {
        // runc's ShimCgroup: the server, and so the init stages it starts
        // until they join their containers' cgroups, runs in the cgroup
        // the operator named.
        cgroup::move_into(cg, child.id() as i32).map_err(|e| StartError::ShimCgroup(e.to_string()))?;
    }
    std::fs::write(bundle.join("address"), &address).map_err(StartError::Address)?;
    Ok(address)
}

pub fn print(address: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(address.as_bytes());
    let _ = out.flush();
}
