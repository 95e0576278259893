//! What this runtime supports, in the JSON shape of `runc features`
//! (runtime-spec features.Features), filled from what the code really
//! does and what this kernel allows. containerd 2.x's CRI reads it
//! through `-info` (RuntimeInfo.features) to decide whether a handler takes
//! recursive read-only mounts and user namespaces; `features` prints it.

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::types::introspection::{RuntimeInfo, RuntimeVersion};
use serde_json::{json, Value};

/// The runtime type containerd knows us by.
pub const RUNTIME_NAME: &str = "io.containerd.rust.v2";
/// The type URL containerd decodes RuntimeInfo.features with
/// (core/runtime/typeurl.go).
pub const FEATURES_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/features/Features";
/// The version, and the git revision the build was made from
/// (shim/build.rs).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("RSV2_GIT_REVISION");

/// Whether mount_setattr(2) exists (Linux 5.12): it is what makes `rro`
/// and the other recursive attributes work. Probed with a bad fd, which
/// only a kernel that has the call answers with EBADF.
fn have_mount_setattr() -> bool {
    // SAFETY: mount_setattr on fd -1 with a null attr; the kernel checks
    // the fd before reading anything.
    let r = unsafe { libc::syscall(libc::SYS_mount_setattr, -1, c"".as_ptr(), libc::AT_EMPTY_PATH, std::ptr::null::<u8>(), 0usize) };
    r == -1 && std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS)
}

fn kernel_has_namespace(name: &str) -> bool {
    std::path::Path::new("/proc/self/ns").join(name).exists()
}

pub fn features() -> Value {
    let mut mount_options: Vec<&str> = runtime::rootfs::MOUNT_OPTIONS.to_vec();
    if have_mount_setattr() {
        mount_options.extend(runtime::rootfs::RECURSIVE_MOUNT_OPTIONS);
        mount_options.extend(runtime::rootfs::IDMAP_MOUNT_OPTIONS);
    }
    mount_options.sort_unstable();
    let namespaces: Vec<&str> = [("cgroup", "cgroup"), ("ipc", "ipc"), ("mount", "mnt"), ("network", "net"), ("pid", "pid"), ("time", "time"), ("user", "user"), ("uts", "uts")]
        .into_iter()
        .filter(|(_, file)| kernel_has_namespace(file))
        .map(|(spec, _)| spec)
        .collect();
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.1",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": mount_options,
        "linux": {
            "namespaces": namespaces,
            "capabilities": runtime::caps::NAMES,
            // cgroupfs on v1, hybrid and unified; the system instance's
            // systemd driver (cgroup/src/systemd.rs), not a user's.
            "cgroup": {"v1": true, "v2": true, "systemd": true, "systemdUser": false, "rdma": false},
            // Our own BPF compiler (runtime/src/seccomp.rs): the native
            // architecture only, and no notify listener.
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": [native_arch()],
                "knownFlags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
                "supportedFlags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_TSYNC"],
            },
            "apparmor": {"enabled": true},
            "selinux": {"enabled": true},
            "intelRdt": {"enabled": false},
            // Id-mapped mounts (runtime/src/idmap.rs) need mount_setattr.
            // containerd 2.x's CRI takes user-namespaced pods only from a
            // runtime that has them and the user namespace
            // (internal/cri/server/service.go, supportsCRIUserns).
            "mountExtensions": {"idmap": {"enabled": have_mount_setattr()}},
            "netDevices": {"enabled": false},
        },
        "annotations": {
            "io.containerd.rust.version": VERSION,
            "io.containerd.rust.revision": REVISION,
        },
    })
}

fn native_arch() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "SCMP_ARCH_AARCH64"
    } else {
        "SCMP_ARCH_X86_64"
    }
}

/// The answer to `-info`: name, version and revision, the runtime options
/// we were given (decoded and re-encoded as runc's options type, which is
/// what we understand), and the features.
pub fn runtime_info(options: &crate::options::RuntimeOptions) -> RuntimeInfo {
    let runc = containerd_shim_protos::shim::oci::Options {
        io_uid: options.io_uid.unwrap_or(0),
        io_gid: options.io_gid.unwrap_or(0),
        systemd_cgroup: options.systemd_cgroup,
        no_new_keyring: options.no_new_keyring,
        shim_cgroup: options.shim_cgroup.clone().unwrap_or_default(),
        task_api_version: options.task_api.unwrap_or(0),
        ..Default::default()
    };
    RuntimeInfo {
        name: RUNTIME_NAME.into(),
        version: MessageField::some(RuntimeVersion { version: VERSION.into(), revision: REVISION.into(), ..Default::default() }),
        options: MessageField::some(Any { type_url: crate::options::RUNC_OPTIONS_TYPE.into(), value: runc.write_to_bytes().unwrap_or_default(), ..Default::default() }),
        features: MessageField::some(Any { type_url: FEATURES_TYPE.into(), value: serde_json::to_vec(&features()).unwrap_or_default(), ..Default::default() }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_say_what_we_do() {
        let f = features();
        // This kernel (6.x) has mount_setattr: id-mapped mounts and rro.
        assert_eq!(f["linux"]["mountExtensions"]["idmap"]["enabled"], true);
        assert_eq!(f["linux"]["cgroup"]["systemd"], true);
        let ns = f["linux"]["namespaces"].as_array().unwrap();
        for n in ["mount", "pid", "user", "network", "ipc", "uts", "cgroup"] {
            assert!(ns.iter().any(|v| v == n), "{n} missing from {ns:?}");
        }
        let opts = f["mountOptions"].as_array().unwrap();
        for o in ["rro", "idmap", "ridmap"] {
            assert!(opts.iter().any(|v| v == o), "{o} missing from {opts:?}");
        }
        assert_eq!(f["linux"]["capabilities"].as_array().unwrap().len(), runtime::caps::NAMES.len());
        // The shape containerd decodes.
        let _: oci_spec::runtime::Features = serde_json::from_value(f).expect("runtime-spec features JSON");
    }

    #[test]
    fn runtime_info_round_trips() {
        let info = runtime_info(&Default::default());
        let back = RuntimeInfo::parse_from_bytes(&info.write_to_bytes().unwrap()).unwrap();
        assert_eq!(back.name, RUNTIME_NAME);
        assert_eq!(back.version.version, VERSION);
        assert_eq!(back.features.type_url, FEATURES_TYPE);
        let f: Value = serde_json::from_slice(&back.features.value).unwrap();
        assert_eq!(f["ociVersionMin"], "1.0.0");
    }
}
