//! config.json: the bytes of a bundle's spec through the spec model
//! (serde into oci-spec's Spec, as Bundle::load reads it) and every rule of
//! the validator (runtime/src/validate.rs), then the host paths the shim
//! derives from an accepted spec before it touches the host: the cgroup
//! path (cgroup/src/path.rs) and the sysctl files. Those must stay below
//! their roots whatever the spec says.

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::Spec;
use runtime::validate;

use crate::rng::Rng;
use crate::{mutate, Target};

pub struct SpecTarget {
    dir: PathBuf,
    rootfs: PathBuf,
}

impl SpecTarget {
    pub fn new() -> Result<SpecTarget, String> {
        let dir = std::env::temp_dir().join(format!("rsv2-fuzz-spec-{}", std::process::id()));
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(&rootfs).map_err(|e| format!("create {}: {e}", rootfs.display()))?;
        Ok(SpecTarget { dir, rootfs })
    }
}

impl Drop for SpecTarget {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A spec like the one ctr and containerd's CRI write, with every section
/// the validator looks at present in one seed or another.
fn base() -> serde_json::Value {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "fuzz",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0, "additionalGids": [1, 2]},
            "args": ["/bin/sh", "-c", "true"],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true,
            "oomScoreAdj": 100,
            "apparmorProfile": "",
            "ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 4},
            "scheduler": {"policy": "SCHED_OTHER"}
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro", "nosuid"]},
            {"destination": "/data", "type": "bind", "source": "/tmp", "options": ["rbind", "ro"]}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}, {"type": "cgroup"}],
            "cgroupsPath": "/fuzz/c1",
            "sysctl": {"net.ipv4.ip_forward": "1", "kernel.shmmax": "1024"},
            "resources": {
                "devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}],
                "memory": {"limit": 67108864},
                "cpu": {"shares": 512, "cpus": "0"},
                "pids": {"limit": 100}
            },
            "devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438}],
            "maskedPaths": ["/proc/kcore", "/sys/firmware"],
            "readonlyPaths": ["/proc/sys"],
            "rootfsPropagation": "rslave",
            "seccomp": {
                "defaultAction": "SCMP_ACT_ERRNO",
                "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [
                    {"names": ["read", "write", "exit"], "action": "SCMP_ACT_ALLOW"},
                    {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]}
                ]
            }
        },
        "hooks": {"prestart": [{"path": "/bin/true", "args": ["true"], "timeout": 5}]}
    })
}

fn seeds() -> Vec<serde_json::Value> {
    let mut out = vec![base()];
    // A user namespace with mappings.
    let mut userns = base();
    userns["linux"]["namespaces"].as_array_mut().expect("array").push(serde_json::json!({"type": "user"}));
    userns["linux"]["uidMappings"] = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    userns["linux"]["gidMappings"] = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    out.push(userns);
    // Namespaces joined by path, the systemd cgroup form, a terminal.
    let mut joined = base();
    joined["linux"]["namespaces"] = serde_json::json!([{"type": "network", "path": "/proc/1/ns/net"}, {"type": "pid"}, {"type": "mount"}]);
    joined["linux"]["cgroupsPath"] = "system.slice:rsv2:fuzz".into();
    joined["linux"]["sysctl"] = serde_json::json!({});
    joined["hostname"] = serde_json::Value::Null;
    joined["process"]["terminal"] = true.into();
    joined["process"]["consoleSize"] = serde_json::json!({"height": 24, "width": 80});
    out.push(joined);
    // The smallest spec that runs.
    out.push(serde_json::json!({"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}}}));
    out
}

/// Whether `path`, lexically cleaned, is `root` or below it.
fn below(root: &str, path: &Path) -> bool {
    let clean = validate::lexically_clean(path);
    clean.starts_with(root) && !clean.components().any(|c| c == Component::ParentDir)
}

impl Target for SpecTarget {
    fn name(&self) -> &'static str {
        "spec"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        seeds().iter().map(|s| serde_json::to_vec(s).unwrap_or_default()).collect()
    }

    fn mutate(&self, rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
        if rng.chance(5) {
            mutate::bytes(rng, input, other)
        } else {
            mutate::json(rng, input, other)
        }
    }

    fn run(&mut self, input: &[u8]) -> Result<String, String> {
        // The shim's own parser (runtime::spec::parse), which names the
        // field that does not parse; the outcome is serde_json's class.
        let Ok(text) = std::str::from_utf8(input) else { return Ok("parse: not UTF-8".into()) };
        let spec: Spec = match runtime::spec::parse(text) {
            Ok(s) => s,
            Err(e) => return Ok(format!("parse: {:?}", e.error.classify())),
        };
        if let Err(e) = validate::check(&spec, &self.rootfs) {
            return Ok(format!("refused: {e}"));
        }
        let linux = spec.linux().clone().unwrap_or_default();
        let cgroups_path = linux.cgroups_path().as_ref().map(|p| p.to_string_lossy().into_owned());
        match cgroup::path::resolve(cgroups_path.as_deref(), "fuzz") {
            Err(e) => return Ok(format!("refused at create: {e}")),
            Ok((path, _)) => {
                if path == "/" || !below("/", Path::new(&path)) || path.contains("/../") || path.ends_with("/..") {
                    return Err(format!("cgroupsPath {cgroups_path:?} resolved to {path:?}, not below the cgroup root"));
                }
            }
        }
        for key in linux.sysctl().iter().flatten().map(|(k, _)| k) {
            let file = Path::new("/proc/sys").join(validate::sysctl_path(key));
            if !below("/proc/sys/", &file) || file == Path::new("/proc/sys") {
                return Err(format!("sysctl {key:?} was accepted and is written to {}, outside /proc/sys", file.display()));
            }
        }
        Ok("accepted".to_string())
    }
}
