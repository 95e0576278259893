//! Hostile specs (issue #12): malformed, contradictory and hostile specs in
//! every section of the OCI runtime spec, each run through one private
//! containerd 1.6 under runc's shim (the reference, runc 1.1.5 on Debian
//! bookworm) and under the runtime under test, in the same run.
//!
//! Each case has a relation to runc:
//! - `Same`: our verdict (refused, or ran) is runc's;
//! - `StricterThanRunc(why)`: we refuse what runc 1.1.5 runs (or may run),
//!   because runc is unsafe there or silently ignores the field; runc's
//!   verdict is recorded in the summary;
//! - `OursOnly(why)`: runc 1.1.5 is not run at all, because it would damage
//!   the host (or hang); we must refuse.
//!
//! and optionally words our error must contain (the field, e.g.
//! `linux.sysctl`, `mounts[`). A verdict is "refused" when ctr fails (Create
//! or Start refused) and also when the task exits non-zero: every case runs
//! `/bin/true`, and runc reports an execve that fails after Start (E2BIG, a
//! NUL in an argument) as the task exiting 1. After every run, whatever the verdict, the
//! host must be as it was before: its hostname and domainname, the sysctls a
//! case names, `/etc` (names, sizes, mtimes) and `/etc/hostname`, the mount
//! table, the cgroup trees two levels deep, `/run/containerd/s`, no shim left,
//! no container record and nothing of the container (`leftovers`), and no
//! entry named like the escape target (`rsv2-hostile-escape-<pid>`) at `/`,
//! `/tmp`, `/etc`, `/sys/fs/cgroup` or in any hierarchy's root. Every problem
//! is collected and the test fails once at the end, listing them all, after
//! printing the summary table (case, runc, ours, relation) to stderr.
//!
//! Sysctls that would reach a host namespace under a runtime that lets them
//! through are given the host's current value, so that even then nothing
//! changes (runc 1.1.5 lets an ipc sysctl into the host's ipc namespace
//! joined by path, for one).
//!
//! The second test puts a hostile container into a shim group beside a
//! running one: the failed Create must leave the shim, and the other
//! container, serving.
//!
//! The two tests share nothing but take one lock: the host invariants of the
//! first must not see the second's shim sockets and cgroups. Other private
//! containerds on the host (another test run) are told apart by their
//! namespace `rsv2-<pid>-<n>` (cgroups, mounts) and by who serves a socket.
//!
//! `RSV2_HOSTILE_ONLY=<words>` runs only the cases whose name holds them.
//! Under `IT_RUNTIME=io.containerd.runc.v2` runc is compared with itself, and
//! the `StricterThanRunc` and `OursOnly` cases fail by design; `OursOnly`
//! specs are then not run at all, since runc must not get them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use integration_tests::check::{stderr, stdout, RUNNING};
use integration_tests::host;
use integration_tests::{runtime_under_test, wait_until, PrivateContainerd, RUNC_RUNTIME};
use serde_json::{json, Value};

/// Time limit of one `ctr run --rm`: a hostile spec must not hang a runtime.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long teardown may take after `ctr run --rm` returned (the shim exits
/// asynchronously, runc's shim after its Shutdown call).
const SETTLE: Duration = Duration::from_secs(10);
const SHIM_SOCKETS: &str = "/run/containerd/s";
const GROUP_ANNOTATION: &str = "io.containerd.runc.v2.group";

static SERIAL: Mutex<()> = Mutex::new(());

/// One test of this file at a time (see the header).
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Fails with every problem found, one paragraph each.
fn assert_no_problems(problems: &[String], what: &str) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s)\n\n{}",
        problems.len(),
        problems.join("\n\n")
    );
}

// ---------------------------------------------------------------------------
// The cases.
// ---------------------------------------------------------------------------

/// How our verdict must relate to runc's.
#[derive(Clone, Copy)]
enum Relation {
    /// Refused by both, or run by both.
    Same,
    /// We refuse; runc 1.1.5 may run it, for the reason given.
    StricterThanRunc(&'static str),
    /// Only ours is run (runc 1.1.5 would harm the host or hang); we refuse.
    OursOnly(&'static str),
}

impl Relation {
    fn label(&self) -> &'static str {
        match self {
            Relation::Same => "Same",
            Relation::StricterThanRunc(_) => "StricterThanRunc",
            Relation::OursOnly(_) => "OursOnly",
        }
    }
}

/// What is written to the spec file ctr reads.
enum Body {
    Spec(Value),
    Raw(Vec<u8>),
}

/// What the cases may refer to: files made once, the host's current values.
struct Fixtures {
    /// The busybox rootfs of the instance (ctr's default spec points there).
    rootfs: PathBuf,
    /// A symlink to `rootfs`.
    rootfs_link: PathBuf,
    /// A regular file, as a bind source or as a bogus rootfs or namespace.
    file: PathBuf,
    /// A FIFO, as a namespace path.
    fifo: PathBuf,
    /// `rsv2-hostile-escape-<pid>`: the name every traversal aims at.
    esc: String,
    hostname: String,
    domainname: String,
    /// Current values of the host's sysctls the cases name, by key.
    sysctls: BTreeMap<&'static str, String>,
}

/// The host sysctls a case sets (with the host's own value) or that a
/// broken runtime could change; watched after every run.
const WATCHED_SYSCTLS: [&str; 7] = [
    "kernel.shmmax",
    "kernel.msgmax",
    "fs.mqueue.msg_max",
    "net.ipv4.ip_forward",
    "vm.swappiness",
    "user.max_user_namespaces",
    "kernel.domainname",
];

fn sysctl_file(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

fn read_sysctl(key: &str) -> String {
    fs::read_to_string(sysctl_file(key))
        .unwrap_or_default()
        .trim_end_matches('\n')
        .to_string()
}

impl Fixtures {
    fn make(ctd: &PrivateContainerd) -> Fixtures {
        let dir = ctd.dir().join("hostile-fixtures");
        fs::create_dir(&dir).expect("mkdir hostile-fixtures");
        let file = dir.join("file");
        fs::write(&file, "a regular file\n").expect("write the fixture file");
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo the fixture FIFO");
        let rootfs = ctd.rootfs();
        let rootfs_link = dir.join("rootfs-link");
        symlink(&rootfs, &rootfs_link).expect("symlink to the rootfs");
        // Inside the container, /rsv2-hostile-link is /etc; on the host it
        // must stay <rootfs>/etc.
        symlink("/etc", rootfs.join("rsv2-hostile-link")).expect("plant a symlink in the rootfs");
        Fixtures {
            rootfs,
            rootfs_link,
            file,
            fifo,
            esc: format!("rsv2-hostile-escape-{}", std::process::id()),
            hostname: hostname(),
            domainname: read_sysctl("kernel.domainname"),
            sysctls: WATCHED_SYSCTLS.iter().map(|k| (*k, read_sysctl(k))).collect(),
        }
    }

    fn sysctl(&self, key: &str) -> String {
        self.sysctls.get(key).cloned().unwrap_or_default()
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

type Make = Box<dyn Fn(Value, &Fixtures) -> Body>;

struct Case {
    name: &'static str,
    relation: Relation,
    /// Words our error must contain when we refuse.
    words: &'static [&'static str],
    make: Make,
}

/// A case patching ctr's default spec (`process.args` is `/bin/true`).
fn patch(
    name: &'static str,
    relation: Relation,
    words: &'static [&'static str],
    f: impl Fn(&mut Value, &Fixtures) + 'static,
) -> Case {
    Case {
        name,
        relation,
        words,
        make: Box::new(move |mut spec, fx| {
            f(&mut spec, fx);
            Body::Spec(spec)
        }),
    }
}

/// A case whose spec file is written byte for byte.
fn raw(
    name: &'static str,
    relation: Relation,
    words: &'static [&'static str],
    f: impl Fn(&Value, &Fixtures) -> Vec<u8> + 'static,
) -> Case {
    Case {
        name,
        relation,
        words,
        make: Box::new(move |spec, fx| Body::Raw(f(&spec, fx))),
    }
}

fn namespaces(spec: &mut Value) -> &mut Vec<Value> {
    spec["linux"]["namespaces"]
        .as_array_mut()
        .expect("ctr's default spec has linux.namespaces")
}

fn drop_ns(spec: &mut Value, kind: &str) {
    namespaces(spec).retain(|n| n["type"] != kind);
}

/// Replaces (or adds) the namespace of `kind` with one joined at `path`.
fn join_ns(spec: &mut Value, kind: &str, path: &str) {
    drop_ns(spec, kind);
    namespaces(spec).push(json!({"type": kind, "path": path}));
}

fn add_ns(spec: &mut Value, kind: &str) {
    namespaces(spec).push(json!({ "type": kind }));
}

fn push_mount(spec: &mut Value, mount: Value) {
    spec["mounts"]
        .as_array_mut()
        .expect("ctr's default spec has mounts")
        .push(mount);
}

fn tmpfs_at(dest: &str) -> Value {
    json!({"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]})
}

fn bind(source: &str, dest: &str) -> Value {
    json!({"destination": dest, "type": "bind", "source": source, "options": ["rbind", "ro"]})
}

fn user_ns(spec: &mut Value) {
    add_ns(spec, "user");
    let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    spec["linux"]["uidMappings"] = map.clone();
    spec["linux"]["gidMappings"] = map;
}

/// `/proc/<this test's pid>/ns/<kind>`: a namespace of the host (the test
/// runs in the host's), readable by the runtimes.
fn host_ns(kind: &str) -> String {
    format!("/proc/{}/ns/{kind}", std::process::id())
}

fn hook(path: &str) -> Value {
    json!({ "path": path })
}

/// A hook that sleeps 2 s, with `timeout` seconds allowed.
fn sleepy_hook(timeout: i64) -> Value {
    json!({"path": "/bin/sh", "args": ["sh", "-c", "sleep 2"], "timeout": timeout})
}

fn seccomp(default_action: &str, arch: &str, rules: Value) -> Value {
    json!({"defaultAction": default_action, "architectures": [arch], "syscalls": rules})
}

/// `[[[ ... ]]]` nested `depth` deep, as text.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// The spec as text, with `"junk": <junk>` added at the top level.
fn with_junk(spec: &Value, junk: &str) -> Vec<u8> {
    let text = serde_json::to_string(spec).expect("serialize spec");
    let body = text.strip_prefix('{').expect("a spec is an object");
    format!("{{\"junk\": {junk}, {body}").into_bytes()
}

const RUNC_HOST_ROOT: &str = "runc 1.1.5 has no rule against the host's own root: it sets up \
    /proc, /dev, ... on it (in the container's mount namespace) and fails only at pivot_root \
    (EBUSY); we refuse before anything, since mount points and nodes made in it are the host's";
const RUNC_RELATIVE_MOUNT: &str =
    "runc 1.1.5 only warns and takes a relative destination as relative to /";
const RUNC_MAPPINGS_IGNORED: &str =
    "runc 1.1.5 ignores uid/gid mappings when no user namespace is listed: the container \
     runs unmapped, as real root";
const RUNC_RELATIVE_MASK: &str =
    "runc 1.1.5 takes a relative path as relative to the container's working directory";
const RUNC_RELATIVE_HOOK: &str =
    "runc 1.1.5 runs a relative hook path from its own working directory (the bundle): \
     ../../.. reaches the host's /bin/true";
const RUNC_HOST_UTS: &str =
    "runc 1.1.5 joins the host's uts namespace by path and sets the name in it, which \
     would rename the host (the case gives the host's own name, so nothing changes)";
const RUNC_HOST_IPC_SYSCTL: &str =
    "runc 1.1.5 counts an ipc namespace joined by path as the container's own and writes \
     the ipc sysctl into the host's (the case gives the host's own value)";
const RUNC_HOST_UTS_SYSCTL: &str =
    "runc 1.1.5 counts a uts namespace joined by path as the container's own and writes \
     kernel.domainname into the host's (the case gives the host's own value)";
const RUNC_HOST_MNT: &str =
    "runc 1.1.5 would join the host's mount namespace and set up the rootfs and pivot_root in it";
const RUNC_UNKNOWN_CAP: &str =
    "runc 1.1.5 drops an unknown capability with a warning and runs without it; we refuse \
     (oci-spec's parser names the value, not the field)";
const RUNC_AMBIENT: &str =
    "runc 1.1.5 ignores an ambient capability it cannot raise (not in the inheritable set) \
     and runs without it; we fail Create";
const RUNC_DOMAINNAME: &str =
    "runc 1.1.5 does not implement domainname and ignores it, uts namespace or not: the \
     container runs without it";
const RUNC_HOSTNAME_NUL: &str =
    "runc 1.1.5 hands the NUL to sethostname(2): the container's name is cut at it";
const RUNC_TMPFS_IN_PROC: &str =
    "runc 1.1.5 checks destinations inside /proc only for bind and other mounts, not tmpfs: \
     a tmpfs hides /proc/sys (runc 1.2 refuses it)";
const RUNC_RELATIVE_DEVICE: &str =
    "runc 1.1.5 makes a relative device path relative to the rootfs";
const RUNC_DEVICE_ACCESS: &str =
    "runc 1.1.5 accepts an access string with letters other than r, w and m";
const RUNC_ROOT_CGROUP: &str =
    "the path cleans to the hierarchy's root: runc 1.1.5 would put the container, its \
     limits and device rules into the host's root cgroup";
const RUNC_SYSTEMD_TRAVERSAL: &str =
    "with the cgroupfs driver runc 1.1.5 takes a systemd-looking path as a plain path and \
     cleans it to /<escape target>; a systemd unit name cannot hold '/', so we refuse";

/// Every case. `Same` cases record what runc 1.1.5 does; the summary shows it.
fn cases() -> Vec<Case> {
    use Relation::*;
    vec![
        // --- root -----------------------------------------------------------
        patch("root.path is the host's /", StricterThanRunc(RUNC_HOST_ROOT), &["root.path", "host's root"], |s, _| {
            s["root"]["path"] = json!("/");
        }),
        patch("root.path is a symlink to the rootfs", Same, &["root.path", "symlink"], |s, fx| {
            s["root"]["path"] = json!(fx.rootfs_link);
        }),
        patch("root.path does not exist", Same, &["does not exist"], |s, fx| {
            s["root"]["path"] = json!(format!("/nonexistent/{}", fx.esc));
        }),
        patch("root.path is a regular file", Same, &["not a directory"], |s, fx| {
            s["root"]["path"] = json!(fx.file);
        }),
        // Relative to the bundle, <dir>/state/io.containerd.runtime.v2.task/<ns>/<id>.
        patch("root.path is relative and climbs out of the bundle", Same, &[], |s, _| {
            s["root"]["path"] = json!("../../../../rootfs");
        }),
        patch("root.path walks out and back in with ..", Same, &[], |s, fx| {
            let name = fx.rootfs.file_name().unwrap().to_string_lossy().into_owned();
            s["root"]["path"] = json!(fx.rootfs.join("..").join(name));
        }),
        // --- process ----------------------------------------------------------
        patch("process is missing", Same, &["process", "missing"], |s, _| {
            s.as_object_mut().unwrap().remove("process");
        }),
        patch("process.args is empty", Same, &["process.args"], |s, _| {
            s["process"]["args"] = json!([]);
        }),
        patch("process.args names no program", Same, &[], |s, fx| {
            s["process"]["args"] = json!([format!("/nonexistent/{}", fx.esc)]);
        }),
        patch("process.args holds a NUL byte", Same, &["process.args"], |s, _| {
            s["process"]["args"] = json!(["/bin/true", "a\u{0}b"]);
        }),
        patch("process.args: one argument of 200 KiB", Same, &[], |s, _| {
            s["process"]["args"] = json!(["/bin/true", "x".repeat(200 << 10)]);
        }),
        patch("process.env holds a NUL byte", Same, &["process.env"], |s, _| {
            s["process"]["env"] = json!(["PATH=/bin", "A=b\u{0}c"]);
        }),
        patch("process.env: an entry without '='", Same, &["process.env", "NAME=VALUE"], |s, _| {
            s["process"]["env"] = json!(["PATH=/bin", "JUNK"]);
        }),
        patch("process.env: 10 variables of 100 KiB", Same, &[], |s, _| {
            let env: Vec<String> = (0..10).map(|i| format!("BIG{i}={}", "y".repeat(100 << 10))).collect();
            s["process"]["env"] = json!(env);
        }),
        patch("process.cwd is relative", Same, &["process.cwd"], |s, _| {
            s["process"]["cwd"] = json!("tmp");
        }),
        patch("process.cwd is a file", Same, &["working directory"], |s, _| {
            s["process"]["cwd"] = json!("/bin/busybox");
        }),
        patch("process.cwd climbs out with ..", Same, &[], |s, fx| {
            s["process"]["cwd"] = json!(format!("/../../../../../tmp/{}", fx.esc));
        }),
        patch("process.user.uid is 4294967295", Same, &["process.user.uid"], |s, _| {
            s["process"]["user"] = json!({"uid": 4294967295u32, "gid": 0});
        }),
        patch("process.user.gid is 2147483648", Same, &["process.user.gid"], |s, _| {
            s["process"]["user"] = json!({"uid": 0, "gid": 2147483648u32});
        }),
        patch("process.user.additionalGids holds 4294967295", Same, &["process.user.additionalGids"], |s, _| {
            s["process"]["user"] = json!({"uid": 0, "gid": 0, "additionalGids": [4294967295u32]});
        }),
        patch("process.user.umask is 4294967295", Same, &[], |s, _| {
            s["process"]["user"]["umask"] = json!(4294967295u32);
        }),
        patch("process.rlimits: soft above hard", Same, &["process.rlimits"], |s, _| {
            s["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 2048, "hard": 1024}]);
        }),
        patch("process.rlimits: an unknown type", Same, &["process.rlimits[", "RLIMIT_BOGUS"], |s, _| {
            s["process"]["rlimits"] = json!([{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]);
        }),
        patch("process.rlimits: RLIMIT_NOFILE above fs.nr_open", Same, &["RLIMIT_NOFILE"], |s, _| {
            s["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 1u64 << 40, "hard": 1u64 << 40}]);
        }),
        patch("process.rlimits: one type twice", Same, &[], |s, _| {
            s["process"]["rlimits"] = json!([
                {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1024},
                {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 512},
            ]);
        }),
        patch("process.capabilities: an unknown capability", StricterThanRunc(RUNC_UNKNOWN_CAP), &["CAP_BOGUS"], |s, _| {
            s["process"]["capabilities"]["bounding"].as_array_mut().unwrap().push(json!("CAP_BOGUS"));
        }),
        patch("process.capabilities: ambient without inheritable", StricterThanRunc(RUNC_AMBIENT), &["ambient"], |s, _| {
            s["process"]["capabilities"]["ambient"] = json!(["CAP_SYS_ADMIN"]);
        }),
        patch("process.oomScoreAdj is 2000", Same, &["process.oomScoreAdj"], |s, _| {
            s["process"]["oomScoreAdj"] = json!(2000);
        }),
        patch("process.oomScoreAdj is -2000", Same, &["process.oomScoreAdj"], |s, _| {
            s["process"]["oomScoreAdj"] = json!(-2000);
        }),
        // containerd 1.6 decodes specs with runtime-spec 1.0.2, which has
        // neither field: both runtimes get the spec without them.
        patch("process.scheduler: a priority for SCHED_OTHER (dropped by containerd 1.6)", Same, &[], |s, _| {
            s["process"]["scheduler"] = json!({"policy": "SCHED_OTHER", "priority": 5});
        }),
        patch("process.ioPriority: priority 9 (dropped by containerd 1.6)", Same, &[], |s, _| {
            s["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 9});
        }),
        patch("process.selinuxLabel on a host without SELinux", Same, &["process.selinuxLabel", "not enabled"], |s, _| {
            s["process"]["selinuxLabel"] = json!("system_u:system_r:bogus_t:s0");
        }),
        patch("process.apparmorProfile that is not loaded", Same, &["process.apparmorProfile"], |s, _| {
            s["process"]["apparmorProfile"] = json!("rsv2-hostile-no-such-profile");
        }),
        patch("process.terminal without a console", Same, &[], |s, _| {
            s["process"]["terminal"] = json!(true);
        }),
        // --- hostname, domainname ---------------------------------------------
        patch("hostname without a uts namespace", Same, &["hostname", "uts"], |s, fx| {
            drop_ns(s, "uts");
            s["hostname"] = json!(format!("{}-pwned", fx.esc));
        }),
        patch("domainname without a uts namespace", StricterThanRunc(RUNC_DOMAINNAME), &["domainname", "uts"], |s, fx| {
            drop_ns(s, "uts");
            s["domainname"] = json!(format!("{}-pwned", fx.esc));
        }),
        patch("hostname of 65 bytes", Same, &["hostname"], |s, _| {
            s["hostname"] = json!("h".repeat(65));
        }),
        patch("hostname of 100 KiB", Same, &["hostname"], |s, _| {
            s["hostname"] = json!("h".repeat(100 << 10));
        }),
        patch("hostname holds a NUL byte", StricterThanRunc(RUNC_HOSTNAME_NUL), &["hostname"], |s, _| {
            s["hostname"] = json!("a\u{0}b");
        }),
        patch("hostname in the host's uts namespace joined by path", StricterThanRunc(RUNC_HOST_UTS), &["hostname", "uts"], |s, fx| {
            join_ns(s, "uts", &host_ns("uts"));
            s["hostname"] = json!(fx.hostname);
        }),
        // --- mounts -------------------------------------------------------------
        patch("mounts: a relative destination", StricterThanRunc(RUNC_RELATIVE_MOUNT), &["mounts[", "absolute"], |s, _| {
            push_mount(s, tmpfs_at("tmp/relative"));
        }),
        patch("mounts: destination /", Same, &["mounts[", "root of the container"], |s, _| {
            push_mount(s, tmpfs_at("/"));
        }),
        patch("mounts: a destination that cleans to /", Same, &["mounts[", "root of the container"], |s, _| {
            push_mount(s, tmpfs_at("/sys/fs/cgroup/../../../.."));
        }),
        patch("mounts: tmpfs on /proc", Same, &["mounts[", "/proc"], |s, _| {
            push_mount(s, tmpfs_at("/proc"));
        }),
        patch("mounts: bind over /proc/sys/kernel/core_pattern", Same, &["mounts[", "/proc"], |s, fx| {
            push_mount(s, bind(&fx.file.display().to_string(), "/proc/sys/kernel/core_pattern"));
        }),
        patch("mounts: tmpfs on /proc/sys through /dev/..", StricterThanRunc(RUNC_TMPFS_IN_PROC), &["mounts[", "/proc"], |s, _| {
            push_mount(s, tmpfs_at("/dev/../proc/sys"));
        }),
        patch("mounts: tmpfs on /proc/sys spelled /../proc/sys", StricterThanRunc(RUNC_TMPFS_IN_PROC), &["mounts[", "/proc"], |s, _| {
            push_mount(s, tmpfs_at("/../proc/sys"));
        }),
        patch("mounts: bind over /proc/sys/kernel/core_pattern spelled /../proc/...", Same, &["mounts[", "/proc"], |s, fx| {
            push_mount(s, bind(&fx.file.display().to_string(), "/../proc/sys/kernel/core_pattern"));
        }),
        patch("mounts: bind a file over /proc/meminfo (allowed)", Same, &[], |s, fx| {
            push_mount(s, bind(&fx.file.display().to_string(), "/proc/meminfo"));
        }),
        patch("mounts: NUL byte in a destination", Same, &["mounts[", "NUL"], |s, _| {
            push_mount(s, tmpfs_at("/tmp/a\u{0}b"));
        }),
        patch("mounts: NUL byte in a source", Same, &["mounts[", "NUL"], |s, fx| {
            push_mount(s, bind(&format!("{}\u{0}x", fx.file.display()), "/tmp/x"));
        }),
        patch("mounts: a read-only cgroup mount", Same, &[], |s, _| {
            push_mount(s, json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                                 "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}));
        }),
        patch("mounts: bind from a nonexistent source", Same, &["/nonexistent/"], |s, fx| {
            push_mount(s, bind(&format!("/nonexistent/{}", fx.esc), "/mnt"));
        }),
        patch("mounts: an unknown filesystem type", Same, &["rsv2nosuchfs"], |s, _| {
            push_mount(s, json!({"destination": "/mnt", "type": "rsv2nosuchfs", "source": "none"}));
        }),
        patch("mounts: an unknown tmpfs option", Same, &["tmpfs", "/mnt"], |s, _| {
            push_mount(s, json!({"destination": "/mnt", "type": "tmpfs", "source": "tmpfs", "options": ["rsv2nosuchoption=1"]}));
        }),
        patch("mounts: destination climbs out with ..", Same, &[], |s, fx| {
            push_mount(s, tmpfs_at(&format!("/../../../../../tmp/{}", fx.esc)));
        }),
        patch("mounts: destination through a rootfs symlink to /etc", Same, &[], |s, fx| {
            push_mount(s, tmpfs_at(&format!("/rsv2-hostile-link/{}", fx.esc)));
        }),
        // --- namespaces ---------------------------------------------------------
        patch("linux.namespaces: pid listed twice", Same, &["linux.namespaces[", "twice"], |s, _| {
            add_ns(s, "pid");
        }),
        patch("linux.namespaces: an unknown type", Same, &["linux.namespaces[", "rsv2bogus"], |s, _| {
            add_ns(s, "rsv2bogus");
        }),
        patch("linux.namespaces: a path that does not exist", Same, &["linux.namespaces["], |s, fx| {
            join_ns(s, "network", &format!("/nonexistent/{}", fx.esc));
        }),
        patch("linux.namespaces: a path to a regular file", Same, &["linux.namespaces[", "not a namespace file"], |s, fx| {
            join_ns(s, "network", &fx.file.display().to_string());
        }),
        patch("linux.namespaces: a relative path", Same, &["linux.namespaces[", "absolute"], |s, _| {
            join_ns(s, "network", "proc/1/ns/net");
        }),
        patch("linux.namespaces: a path to a FIFO", OursOnly("runc 1.1.5 opens the FIFO for setns and blocks until someone writes"), &["linux.namespaces[", "not a namespace file"], |s, fx| {
            join_ns(s, "network", &fx.fifo.display().to_string());
        }),
        patch("linux.namespaces: network joined at a uts namespace", Same, &["linux.namespaces[", "not a net namespace"], |s, _| {
            join_ns(s, "network", &host_ns("uts"));
        }),
        patch("linux.namespaces: the host's mount namespace", OursOnly(RUNC_HOST_MNT), &["linux.namespaces", "host's mount namespace"], |s, _| {
            join_ns(s, "mount", &host_ns("mnt"));
        }),
        // On this VM pid 1's namespaces cannot even be read (a sandbox's
        // init); on a plain host /proc/1/ns/mnt is the host's.
        patch("linux.namespaces: mount at /proc/1/ns/mnt", OursOnly(RUNC_HOST_MNT), &["linux.namespaces", "/proc/1/ns/mnt"], |s, _| {
            join_ns(s, "mount", "/proc/1/ns/mnt");
        }),
        patch("linux.namespaces: no mount namespace (masked paths kept)", Same, &["linux.namespaces", "mount namespace"], |s, _| {
            drop_ns(s, "mount");
        }),
        patch("linux.namespaces: no mount namespace, nothing masked", OursOnly("without masked or readonly paths runc 1.1.5 would mount /proc, /dev, ... and pivot_root in the host's mount namespace"), &["linux.namespaces", "mount namespace"], |s, _| {
            drop_ns(s, "mount");
            s["linux"].as_object_mut().unwrap().remove("maskedPaths");
            s["linux"].as_object_mut().unwrap().remove("readonlyPaths");
        }),
        patch("linux.namespaces: the host's user namespace joined by path", Same, &[], |s, _| {
            join_ns(s, "user", &host_ns("user"));
        }),
        patch("linux.namespaces: a user namespace without mappings", Same, &["linux.uidMappings"], |s, _| {
            add_ns(s, "user");
        }),
        // --- id mappings ----------------------------------------------------------
        patch("linux.uidMappings without a user namespace", StricterThanRunc(RUNC_MAPPINGS_IGNORED), &["linux.uidMappings", "not listed"], |s, _| {
            let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
            s["linux"]["uidMappings"] = map.clone();
            s["linux"]["gidMappings"] = map;
        }),
        patch("linux.uidMappings of size 0", Same, &["linux.uidMappings"], |s, _| {
            user_ns(s);
            s["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 0}]);
        }),
        patch("linux.uidMappings running past 2^32", Same, &["linux.uidMappings"], |s, _| {
            user_ns(s);
            s["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 4294967295u32, "size": 65536}]);
        }),
        patch("process.user.uid not mapped in the user namespace", Same, &["process.user.uid", "not mapped"], |s, _| {
            user_ns(s);
            s["process"]["user"] = json!({"uid": 70000, "gid": 0});
        }),
        // --- sysctl -----------------------------------------------------------------
        patch("sysctl kernel.hostname without a uts namespace", Same, &["linux.sysctl", "kernel.hostname"], |s, fx| {
            drop_ns(s, "uts");
            s["linux"]["sysctl"] = json!({"kernel.hostname": format!("{}-pwned", fx.esc)});
        }),
        patch("sysctl kernel.hostname with a uts namespace", Same, &["linux.sysctl", "kernel.hostname"], |s, _| {
            s["linux"]["sysctl"] = json!({"kernel.hostname": "rsv2-hostile"});
        }),
        patch("sysctl kernel.domainname without a uts namespace (host's value)", Same, &["linux.sysctl", "kernel.domainname"], |s, fx| {
            drop_ns(s, "uts");
            s["linux"]["sysctl"] = json!({"kernel.domainname": fx.domainname});
        }),
        patch("sysctl kernel.domainname with a uts namespace", Same, &[], |s, _| {
            s["linux"]["sysctl"] = json!({"kernel.domainname": "rsv2-hostile"});
        }),
        patch("sysctl kernel.domainname in the host's uts joined by path (host's value)", StricterThanRunc(RUNC_HOST_UTS_SYSCTL), &["linux.sysctl", "kernel.domainname"], |s, fx| {
            join_ns(s, "uts", &host_ns("uts"));
            s["linux"]["sysctl"] = json!({"kernel.domainname": fx.domainname});
        }),
        patch("sysctl kernel.shmmax with an ipc namespace", Same, &[], |s, _| {
            s["linux"]["sysctl"] = json!({"kernel.shmmax": "1048576"});
        }),
        patch("sysctl kernel.shmmax without an ipc namespace (host's value)", Same, &["linux.sysctl", "kernel.shmmax"], |s, fx| {
            drop_ns(s, "ipc");
            s["linux"]["sysctl"] = json!({"kernel.shmmax": fx.sysctl("kernel.shmmax")});
        }),
        patch("sysctl kernel.shmmax in the host's ipc joined by path (host's value)", StricterThanRunc(RUNC_HOST_IPC_SYSCTL), &["linux.sysctl", "kernel.shmmax"], |s, fx| {
            join_ns(s, "ipc", &host_ns("ipc"));
            s["linux"]["sysctl"] = json!({"kernel.shmmax": fx.sysctl("kernel.shmmax")});
        }),
        patch("sysctl fs.mqueue.msg_max without an ipc namespace (host's value)", Same, &["linux.sysctl", "fs.mqueue.msg_max"], |s, fx| {
            drop_ns(s, "ipc");
            s["linux"]["sysctl"] = json!({"fs.mqueue.msg_max": fx.sysctl("fs.mqueue.msg_max")});
        }),
        patch("sysctl net.ipv4.ip_forward with a network namespace", Same, &[], |s, _| {
            s["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
        }),
        patch("sysctl net.ipv4.ip_forward without a network namespace (host's value)", Same, &["linux.sysctl", "net.ipv4.ip_forward"], |s, fx| {
            drop_ns(s, "network");
            s["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": fx.sysctl("net.ipv4.ip_forward")});
        }),
        patch("sysctl net.ipv4.ip_forward in the host's netns joined by path (host's value)", Same, &["linux.sysctl", "net.ipv4.ip_forward"], |s, fx| {
            join_ns(s, "network", &host_ns("net"));
            s["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": fx.sysctl("net.ipv4.ip_forward")});
        }),
        patch("sysctl vm.swappiness (host's value)", Same, &["linux.sysctl", "vm.swappiness"], |s, fx| {
            s["linux"]["sysctl"] = json!({"vm.swappiness": fx.sysctl("vm.swappiness")});
        }),
        patch("sysctl user.max_user_namespaces without a user namespace (host's value)", Same, &["linux.sysctl", "user.max_user_namespaces"], |s, fx| {
            s["linux"]["sysctl"] = json!({"user.max_user_namespaces": fx.sysctl("user.max_user_namespaces")});
        }),
        patch("sysctl user.max_user_namespaces in a user namespace of its own", Same, &["linux.sysctl", "user.max_user_namespaces", "not in a separate"], |s, _| {
            user_ns(s);
            s["linux"]["sysctl"] = json!({"user.max_user_namespaces": "0"});
        }),
        patch("sysctl key net/../../../etc/<escape>", Same, &["linux.sysctl", "not a sysctl name"], |s, fx| {
            s["linux"]["sysctl"] = json!({ format!("net/../../../etc/{}", fx.esc): "1" });
        }),
        patch("sysctl key net.x/../../../../etc/<escape>", Same, &["linux.sysctl", "not a sysctl name"], |s, fx| {
            s["linux"]["sysctl"] = json!({ format!("net.x/../../../../etc/{}", fx.esc): "1" });
        }),
        patch("sysctl key kernel..hostname", Same, &["linux.sysctl", "not a sysctl name"], |s, _| {
            s["linux"]["sysctl"] = json!({"kernel..hostname": "rsv2-hostile"});
        }),
        patch("sysctl value holds a NUL byte", Same, &["linux.sysctl", "NUL"], |s, _| {
            s["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1\u{0}0"});
        }),
        // --- cgroupsPath ------------------------------------------------------------
        patch("linux.cgroupsPath /../../../../<escape>", Same, &[], |s, fx| {
            s["linux"]["cgroupsPath"] = json!(format!("/../../../../{}", fx.esc));
        }),
        patch("linux.cgroupsPath ..", OursOnly(RUNC_ROOT_CGROUP), &["linux.cgroupsPath", "root of the cgroup hierarchy"], |s, _| {
            s["linux"]["cgroupsPath"] = json!("..");
        }),
        patch("linux.cgroupsPath /", OursOnly(RUNC_ROOT_CGROUP), &["linux.cgroupsPath", "root of the cgroup hierarchy"], |s, _| {
            s["linux"]["cgroupsPath"] = json!("/");
        }),
        patch("linux.cgroupsPath a/../..", OursOnly(RUNC_ROOT_CGROUP), &["linux.cgroupsPath", "root of the cgroup hierarchy"], |s, _| {
            s["linux"]["cgroupsPath"] = json!("a/../..");
        }),
        patch("linux.cgroupsPath x.slice:p:n/../../<escape>", StricterThanRunc(RUNC_SYSTEMD_TRAVERSAL), &["linux.cgroupsPath", "'/'"], |s, fx| {
            s["linux"]["cgroupsPath"] = json!(format!("x.slice:p:n/../../{}", fx.esc));
        }),
        patch("linux.cgroupsPath holds a NUL byte", Same, &["linux.cgroupsPath", "NUL"], |s, fx| {
            s["linux"]["cgroupsPath"] = json!(format!("/{}\u{0}x", fx.esc));
        }),
        patch("linux.cgroupsPath longer than PATH_MAX", Same, &[], |s, fx| {
            let deep: Vec<String> = (0..24).map(|i| format!("{i:0>200}")).collect();
            s["linux"]["cgroupsPath"] = json!(format!("/{}-long/{}", fx.esc, deep.join("/")));
        }),
        // --- devices ------------------------------------------------------------------
        patch("linux.devices: a wildcard major", Same, &["linux.devices[", "wildcards"], |s, _| {
            s["linux"]["devices"] = json!([{"path": "/dev/rsv2-wild", "type": "c", "major": -1, "minor": 3}]);
        }),
        patch("linux.devices: type a", Same, &["linux.devices[", "type"], |s, _| {
            s["linux"]["devices"] = json!([{"path": "/dev/rsv2-all", "type": "a", "major": 1, "minor": 3}]);
        }),
        patch("linux.devices: a relative path", StricterThanRunc(RUNC_RELATIVE_DEVICE), &["linux.devices[", "absolute"], |s, _| {
            s["linux"]["devices"] = json!([{"path": "dev/rsv2-rel", "type": "c", "major": 1, "minor": 3}]);
        }),
        patch("linux.devices: a path that climbs out with ..", Same, &[], |s, fx| {
            s["linux"]["devices"] = json!([{"path": format!("/dev/../../../../etc/{}", fx.esc), "type": "c", "major": 1, "minor": 3}]);
        }),
        patch("linux.resources.devices: empty access", Same, &["linux.resources.devices[", "access"], |s, _| {
            s["linux"]["resources"]["devices"].as_array_mut().unwrap()
                .push(json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": ""}));
        }),
        patch("linux.resources.devices: access rwx", StricterThanRunc(RUNC_DEVICE_ACCESS), &["linux.resources.devices[", "access"], |s, _| {
            s["linux"]["resources"]["devices"].as_array_mut().unwrap()
                .push(json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwx"}));
        }),
        // --- masked and readonly paths --------------------------------------------------
        patch("linux.maskedPaths: a relative path", StricterThanRunc(RUNC_RELATIVE_MASK), &["linux.maskedPaths"], |s, _| {
            s["linux"]["maskedPaths"].as_array_mut().unwrap().push(json!("etc/passwd"));
        }),
        patch("linux.maskedPaths: a path that climbs out with ..", Same, &[], |s, _| {
            s["linux"]["maskedPaths"].as_array_mut().unwrap().push(json!("/proc/../../../../etc/passwd"));
        }),
        patch("linux.readonlyPaths: a relative path", StricterThanRunc(RUNC_RELATIVE_MASK), &["linux.readonlyPaths"], |s, _| {
            s["linux"]["readonlyPaths"].as_array_mut().unwrap().push(json!("etc"));
        }),
        patch("linux.readonlyPaths: the root, spelled /../../..", Same, &[], |s, _| {
            s["linux"]["readonlyPaths"].as_array_mut().unwrap().push(json!("/../../.."));
        }),
        patch("linux.rootfsPropagation: a bogus value", Same, &["linux.rootfsPropagation"], |s, _| {
            s["linux"]["rootfsPropagation"] = json!("sideways");
        }),
        // --- seccomp ----------------------------------------------------------------------
        patch("linux.seccomp: an unknown architecture", Same, &["SCMP_ARCH_BOGUS"], |s, _| {
            s["linux"]["seccomp"] = seccomp("SCMP_ACT_ALLOW", "SCMP_ARCH_BOGUS", json!([]));
        }),
        patch("linux.seccomp: an unknown default action", Same, &["SCMP_ACT_BOGUS"], |s, _| {
            s["linux"]["seccomp"] = seccomp("SCMP_ACT_BOGUS", "SCMP_ARCH_X86_64", json!([]));
        }),
        patch("linux.seccomp: an unknown rule action", Same, &["SCMP_ACT_BOGUS"], |s, _| {
            s["linux"]["seccomp"] = seccomp("SCMP_ACT_ALLOW", "SCMP_ARCH_X86_64",
                json!([{"names": ["getpid"], "action": "SCMP_ACT_BOGUS"}]));
        }),
        patch("linux.seccomp: SCMP_ACT_NOTIFY without a listener", Same, &["linux.seccomp"], |s, _| {
            s["linux"]["seccomp"] = seccomp("SCMP_ACT_ALLOW", "SCMP_ARCH_X86_64",
                json!([{"names": ["getpid"], "action": "SCMP_ACT_NOTIFY"}]));
        }),
        patch("linux.seccomp: an unknown syscall name", Same, &[], |s, _| {
            s["linux"]["seccomp"] = seccomp("SCMP_ACT_ALLOW", "SCMP_ARCH_X86_64",
                json!([{"names": ["rsv2_no_such_syscall"], "action": "SCMP_ACT_ERRNO"}]));
        }),
        // --- hooks ------------------------------------------------------------------------
        patch("hooks.prestart: missing at an absolute path", Same, &["prestart"], |s, fx| {
            s["hooks"] = json!({"prestart": [hook(&format!("/nonexistent/{}/hook", fx.esc))]});
        }),
        patch("hooks.prestart: a relative path", StricterThanRunc(RUNC_RELATIVE_HOOK), &["hooks.prestart", "absolute"], |s, _| {
            s["hooks"] = json!({"prestart": [hook("../../../../../../../../../../../../bin/true")]});
        }),
        patch("hooks.createRuntime: missing at an absolute path", Same, &["createRuntime"], |s, fx| {
            s["hooks"] = json!({"createRuntime": [hook(&format!("/nonexistent/{}/hook", fx.esc))]});
        }),
        patch("hooks.createContainer: missing at an absolute path", Same, &["createContainer"], |s, fx| {
            s["hooks"] = json!({"createContainer": [hook(&format!("/nonexistent/{}/hook", fx.esc))]});
        }),
        patch("hooks.createRuntime: timeout 0", Same, &["hooks.createRuntime", "timeout"], |s, _| {
            s["hooks"] = json!({"createRuntime": [sleepy_hook(0)]});
        }),
        patch("hooks.createRuntime: a negative timeout", Same, &["hooks.createRuntime", "timeout"], |s, _| {
            s["hooks"] = json!({"createRuntime": [sleepy_hook(-1)]});
        }),
        patch("hooks.poststop: missing at an absolute path (poststop errors do not fail)", Same, &[], |s, fx| {
            s["hooks"] = json!({"poststop": [hook(&format!("/nonexistent/{}/hook", fx.esc))]});
        }),
        // --- the rest of linux --------------------------------------------------------------
        patch("linux.intelRdt on a host without RDT", Same, &["linux.intelRdt"], |s, _| {
            s["linux"]["intelRdt"] = json!({"closID": "rsv2-hostile", "l3CacheSchema": "L3:0=f"});
        }),
        // runtime-spec 1.0.2 has no timeOffsets: containerd 1.6 drops them.
        patch("linux.timeOffsets without a time namespace (dropped by containerd 1.6)", Same, &[], |s, _| {
            s["linux"]["timeOffsets"] = json!({"monotonic": {"secs": 1}});
        }),
        patch("linux.resources.hugepageLimits pageSize ../../x", Same, &["hugepageLimits", "pageSize"], |s, _| {
            s["linux"]["resources"]["hugepageLimits"] = json!([{"pageSize": "../../x", "limit": 1048576}]);
        }),
        patch("linux.resources.unified on cgroup v1", Same, &["linux.resources.unified", "v1"], |s, _| {
            s["linux"]["resources"]["unified"] = json!({"memory.max": "10000000"});
        }),
        patch("linux.resources.memory.swap below the memory limit", Same, &["linux.resources.memory.swap", "at least memory"], |s, _| {
            s["linux"]["resources"]["memory"] = json!({"limit": 209715200, "swap": 104857600});
        }),
        patch("linux.resources.cpu.cpus names no CPU", Same, &[], |s, _| {
            s["linux"]["resources"]["cpu"] = json!({"cpus": "1000-1001"});
        }),
        patch("linux.mountLabel on a host without SELinux", Same, &["linux.mountLabel"], |s, _| {
            s["linux"]["mountLabel"] = json!("system_u:object_r:bogus_t:s0");
        }),
        // --- the document as a whole ---------------------------------------------------------
        patch("ociVersion is bogus", Same, &[], |s, _| {
            s["ociVersion"] = json!("0.0.0-rsv2-bogus");
        }),
        patch("annotations: a 1 MiB value", Same, &[], |s, _| {
            s["annotations"] = json!({"rsv2.hostile/big": "z".repeat(1 << 20)});
        }),
        patch("annotations: a shim group that climbs out with ..", Same, &[], |s, fx| {
            s["annotations"] = json!({ GROUP_ANNOTATION: format!("../../../../etc/{}", fx.esc) });
        }),
        raw("not JSON at all", Same, &[], |_, _| b"this is not a spec\n\x00\xff".to_vec()),
        raw("JSON that is not an object", Same, &[], |_, _| b"[1, 2, 3]".to_vec()),
        raw("a JSON object that is not a spec", Same, &["root"], |_, _| br#"{"hello": "world"}"#.to_vec()),
        raw("deeply nested junk in an unknown field (depth 5000)", Same, &[], |s, _| with_junk(s, &nested(5000))),
        raw("nesting beyond the JSON decoder's limit (depth 20000)", Same, &[], |s, _| with_junk(s, &nested(20000))),
    ]
}

// ---------------------------------------------------------------------------
// Running a case.
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Verdict {
    /// ctr or the runtime refused: the first line of ctr's error.
    Refused(String),
    /// The task ran `/bin/true`: it exited 0.
    Ran,
    /// The task was started but exited with this status: the program did
    /// not run as asked (runc reports a failed execve so, after Start).
    Failed(i32),
    /// `ctr run` did not return within [`RUN_TIMEOUT`].
    Hung,
    /// Not run (`OursOnly`).
    NotRun,
}

impl Verdict {
    fn refused(&self) -> bool {
        matches!(self, Verdict::Refused(_) | Verdict::Failed(_))
    }

    fn short(&self) -> String {
        match self {
            Verdict::Refused(why) => format!("refused: {}", cut(why, 110)),
            Verdict::Ran => "ran".to_string(),
            Verdict::Failed(code) => format!("failed: the task exited {code}"),
            Verdict::Hung => "HUNG".to_string(),
            Verdict::NotRun => "not run".to_string(),
        }
    }
}

fn cut(s: &str, n: usize) -> String {
    let s = s.replace('|', "/");
    if s.chars().count() <= n {
        s
    } else {
        format!("{}...", s.chars().take(n).collect::<String>())
    }
}

/// The line of ctr's stderr that says why, without ctr's own prefixes.
fn reason(err: &str) -> String {
    let line = err
        .lines()
        .find(|l| l.starts_with("ctr: ") || l.contains("panic"))
        .or_else(|| err.lines().find(|l| !l.trim().is_empty()))
        .unwrap_or("(no message)");
    let mut s = line.trim_start_matches("ctr: ").to_string();
    // Ours: "invalid config.json at <bundle>/config.json: <field>: <problem>".
    if let Some(at) = s.find("config.json: ") {
        s = s[at + "config.json: ".len()..].to_string();
    }
    for noise in [
        "failed to create shim task: ",
        "OCI runtime create failed: ",
        "runc create failed: ",
        "unable to start container process: ",
    ] {
        s = s.replace(noise, "");
    }
    s
}

/// Everything a case might change on the host, and what we compare.
#[derive(Clone, PartialEq, Eq, Debug)]
struct HostState {
    hostname: String,
    domainname: String,
    sysctls: BTreeMap<&'static str, String>,
    /// `/etc` entries: name, type, size, mtime.
    etc: BTreeSet<String>,
    etc_hostname: String,
    /// Mount table rows (all but the ids), under no `/tmp/rsv2-it-*`.
    mounts: Vec<String>,
    /// Cgroup directories two levels deep (see [`cgroup_tree`]).
    cgroups: BTreeSet<String>,
    /// Entries of `/run/containerd/s`.
    sockets: BTreeSet<String>,
}

fn etc_listing() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    walk_etc(Path::new("/etc"), &mut out);
    out
}

/// Every entry below `dir`, with its type, size and mtime: a file a spec
/// wrote anywhere in /etc shows.
fn walk_etc(dir: &Path, out: &mut BTreeSet<String>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.filter_map(|e| e.ok()) {
        let path = e.path();
        match path.symlink_metadata() {
            Ok(m) => {
                out.insert(format!(
                    "{} {:o} size={} mtime={}.{:09}",
                    path.display(),
                    m.mode() & 0o170000,
                    m.len(),
                    m.mtime(),
                    m.mtime_nsec()
                ));
                if m.is_dir() {
                    walk_etc(&path, out);
                }
            }
            Err(err) => {
                out.insert(format!("{} ({err})", path.display()));
            }
        }
    }
}

/// The rows of the mount table, without mount ids and device numbers
/// (they say nothing a row's other fields do not), except mounts below a
/// private containerd's directory (live containers' rootfs and bundles) and
/// those of another instance's namespace (runc's sealed copy of itself
/// under `/run/containerd/runc/<ns>/<id>/` while it execs).
fn mount_table(ns: &str) -> Vec<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut rows: Vec<String> = info
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let point = *f.get(4)?;
            if point.starts_with("/tmp/rsv2-it-") || point.split('/').any(|c| other_instance(c, ns)) {
                return None;
            }
            Some(f[3..].join(" "))
        })
        .collect();
    rows.sort();
    rows
}

/// Whether `name` is the namespace (and cgroup) of another private
/// containerd: `rsv2-<pid>-<n>`.
fn other_instance(name: &str, ours: &str) -> bool {
    let Some(rest) = name.strip_prefix("rsv2-") else {
        return false;
    };
    let mut parts = rest.split('-');
    let numeric = |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    name != ours && numeric(parts.next()) && numeric(parts.next()) && parts.next().is_none()
}

/// Cgroup directories two levels deep in every hierarchy. Left out: other
/// private containerds' namespaces (another test run's live containers),
/// the directory of our own namespace (made by the first container and
/// kept), though not what is inside it, and what is below a systemd slice
/// or the sandbox's own `process_api`, which come and go on their own.
fn cgroup_tree(ns: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let subdirs = |d: &Path| -> Vec<String> {
        fs::read_dir(d)
            .map(|it| {
                it.filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    for h in host::cgroup_hierarchies() {
        let hname = h.file_name().unwrap_or_default().to_string_lossy().into_owned();
        for l1 in subdirs(&h) {
            if other_instance(&l1, ns) {
                continue;
            }
            if l1 != ns {
                out.insert(format!("{hname}/{l1}"));
            }
            if l1.ends_with(".slice") || l1 == "process_api" {
                continue;
            }
            // Every level below: a case's own cgroup must be gone too.
            walk_cgroups(&h.join(&l1), &format!("{hname}/{l1}"), 8, &mut out);
        }
    }
    out
}

fn walk_cgroups(dir: &Path, name: &str, depth: usize, out: &mut BTreeSet<String>) {
    if depth == 0 {
        return;
    }
    for e in fs::read_dir(dir).into_iter().flatten().filter_map(|e| e.ok()) {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            let child = format!("{name}/{}", e.file_name().to_string_lossy());
            out.insert(child.clone());
            walk_cgroups(&e.path(), &child, depth - 1, out);
        }
    }
}

fn shim_sockets() -> BTreeSet<String> {
    fs::read_dir(SHIM_SOCKETS)
        .map(|it| {
            it.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

impl HostState {
    fn take(ns: &str) -> HostState {
        HostState {
            hostname: hostname(),
            domainname: read_sysctl("kernel.domainname"),
            sysctls: WATCHED_SYSCTLS.iter().map(|k| (*k, read_sysctl(k))).collect(),
            etc: etc_listing(),
            etc_hostname: fs::read_to_string("/etc/hostname").unwrap_or_default(),
            mounts: mount_table(ns),
            cgroups: cgroup_tree(ns),
            sockets: shim_sockets(),
        }
    }

    /// What changed from `self` to `now`, one line each (see
    /// [`Ours::judges`] for the shim sockets).
    fn diff(&self, now: &HostState, ours: &Ours) -> Vec<String> {
        let mut out = Vec::new();
        if self.hostname != now.hostname {
            out.push(format!("hostname {:?} became {:?}", self.hostname, now.hostname));
        }
        if self.domainname != now.domainname {
            out.push(format!("domainname {:?} became {:?}", self.domainname, now.domainname));
        }
        for (k, v) in &self.sysctls {
            let n = now.sysctls.get(k).cloned().unwrap_or_default();
            if *v != n {
                out.push(format!("sysctl {k} {v:?} became {n:?}"));
            }
        }
        set_diff(&mut out, "/etc entry", &self.etc, &now.etc);
        if self.etc_hostname != now.etc_hostname {
            out.push(format!("/etc/hostname {:?} became {:?}", self.etc_hostname, now.etc_hostname));
        }
        if self.mounts != now.mounts {
            let before: BTreeSet<_> = self.mounts.iter().cloned().collect();
            let after: BTreeSet<_> = now.mounts.iter().cloned().collect();
            set_diff(&mut out, "mount", &before, &after);
            if before == after {
                out.push("the mount table holds a row a different number of times".into());
            }
        }
        set_diff(&mut out, "cgroup", &self.cgroups, &now.cgroups);
        let new_sockets: BTreeSet<String> = now
            .sockets
            .difference(&self.sockets)
            .filter(|s| ours.judges(s))
            .cloned()
            .collect();
        for s in new_sockets {
            out.push(format!("new shim socket {SHIM_SOCKETS}/{s}"));
        }
        out
    }

    /// Whether the state is back to `self`, for polling.
    fn settled(&self, now: &HostState, ours: &Ours) -> bool {
        self.diff(now, ours).is_empty()
    }
}

fn set_diff(out: &mut Vec<String>, what: &str, before: &BTreeSet<String>, after: &BTreeSet<String>) {
    for gone in before.difference(after) {
        out.push(format!("{what} gone: {gone}"));
    }
    for new in after.difference(before) {
        out.push(format!("{what} new: {new}"));
    }
}

/// What tells this case's shim sockets from those of another containerd
/// on the host (another test run, a system containerd), which share
/// `/run/containerd/s`.
struct Ours {
    /// Our containerd's socket, which our shims get as `-address`.
    socket: String,
    /// Our containerd's config file.
    config: String,
    /// The socket names the shims of this case would use: keyed by the
    /// container id, or by the shim group the spec names.
    names: Vec<String>,
}

impl Ours {
    /// Whether a new entry of `/run/containerd/s` is this case's to answer
    /// for: named after the case's id or group, or served by one of our
    /// shims. One served by another containerd's shim is not; one that
    /// nothing serves (a stale socket) is, unless another containerd runs
    /// on the host and may have left it (its shims get SIGKILLed too).
    fn judges(&self, name: &str) -> bool {
        if self.names.iter().any(|n| n == name) {
            return true;
        }
        match socket_server(&Path::new(SHIM_SOCKETS).join(name)) {
            Some(p) => p.flag("-address").is_some_and(|a| a == self.socket),
            None => !self.other_containerd_runs(),
        }
    }

    fn other_containerd_runs(&self) -> bool {
        host::processes().iter().any(|p| {
            p.cmdline[0].rsplit('/').next() == Some("containerd")
                && p.flag("--config") != Some(self.config.as_str())
        })
    }
}

/// The process listening on the unix socket `path`, if any.
fn socket_server(path: &Path) -> Option<host::Process> {
    let shown = path.display().to_string();
    let inodes: BTreeSet<String> = fs::read_to_string("/proc/net/unix")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 8 && f[7] == shown).then(|| f[6].to_string())
        })
        .collect();
    if inodes.is_empty() {
        return None;
    }
    host::processes().into_iter().find(|p| {
        let Ok(fds) = fs::read_dir(format!("/proc/{}/fd", p.pid)) else { return false };
        fds.filter_map(|e| e.ok()).any(|e| {
            fs::read_link(e.path()).is_ok_and(|t| {
                let t = t.to_string_lossy();
                inodes.iter().any(|i| t == format!("socket:[{i}]"))
            })
        })
    })
}

fn socket_name(path: &Path) -> String {
    path.file_name().unwrap_or_default().to_string_lossy().into_owned()
}

/// Entries named like the escape target where no container may put
/// anything: `/`, `/tmp`, `/etc`, `/sys/fs/cgroup` and each hierarchy's root
/// (a cleaned cgroupsPath legitimately makes one there while the container
/// runs; it must be gone after).
fn escape_traces(esc: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = ["/", "/tmp", "/etc", host::CGROUP_ROOT]
        .iter()
        .map(PathBuf::from)
        .collect();
    dirs.extend(host::cgroup_hierarchies());
    let mut out = Vec::new();
    for d in dirs {
        if let Ok(it) = fs::read_dir(&d) {
            out.extend(
                it.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().starts_with(esc))
                    .map(|e| e.path()),
            );
        }
    }
    out
}

/// Removes an escape trace: cgroups deepest first with rmdir, anything else
/// (never across a mount) as a tree. The names hold our pid.
fn remove_trace(path: &Path) {
    if !host::mounts_under(path).is_empty() {
        eprintln!("{} has mounts below it; left in place", path.display());
        return;
    }
    if path.starts_with(host::CGROUP_ROOT) {
        for d in host::dirs_deepest_first(path) {
            let _ = fs::remove_dir(d);
        }
    } else if path.is_dir() && !path.is_symlink() {
        let _ = fs::remove_dir_all(path);
    } else {
        let _ = fs::remove_file(path);
    }
}

/// Puts back what a case changed that matters beyond this test: the
/// host's names and the watched sysctls.
fn restore(before: &HostState) {
    if hostname() != before.hostname {
        let _ = nix::unistd::sethostname(&before.hostname);
    }
    for (k, v) in &before.sysctls {
        if read_sysctl(k) != *v {
            let _ = fs::write(sysctl_file(k), v);
        }
    }
}

/// One run of a case under one runtime: the verdict, our error text, and
/// every problem seen on the host afterwards.
fn run_case(
    ctd: &PrivateContainerd,
    fx: &Fixtures,
    case: &Case,
    runtime: &str,
    problems: &mut Vec<String>,
) -> (Verdict, String) {
    let id = ctd.unique_id("hostile");
    let spec = ctd.default_spec(&id, &["/bin/true"]);
    let mut ours = Ours {
        socket: ctd.socket().display().to_string(),
        config: ctd.dir().join("config.toml").display().to_string(),
        names: vec![socket_name(&ctd.shim_socket(&id))],
    };
    let path = match (case.make)(spec, fx) {
        Body::Spec(v) => {
            if let Some(group) = v["annotations"][GROUP_ANNOTATION].as_str() {
                ours.names.push(socket_name(&ctd.group_socket(group)));
            }
            ctd.write_spec(&id, &v)
        }
        Body::Raw(bytes) => {
            // Where write_spec puts it, written byte for byte.
            let path = ctd.write_spec(&id, &json!({}));
            fs::write(&path, bytes).expect("write the raw spec");
            path
        }
    };
    let tag = format!("[{}] {runtime}", case.name);
    let ns = ctd.namespace().to_string();
    let before = HostState::take(&ns);

    let mut ctr = ctd
        .run_config(&id, path)
        .runtime(runtime)
        .spawn_logged(&["--rm"], "hostile-run");
    let started = Instant::now();
    let verdict = match ctr.wait_within(RUN_TIMEOUT) {
        None => {
            ctr.kill();
            problems.push(format!("{tag}: `ctr run --rm` did not return within {RUN_TIMEOUT:?}\n{}", ctr.describe()));
            Verdict::Hung
        }
        Some(status) => {
            let err = ctr.stderr();
            let ctr_failed = err.lines().any(|l| l.starts_with("ctr: ")) || err.contains("panic:");
            match status.code() {
                Some(0) if !ctr_failed => Verdict::Ran,
                Some(code) if !ctr_failed => Verdict::Failed(code),
                _ => Verdict::Refused(reason(&err)),
            }
        }
    };
    let took = started.elapsed();
    let err = ctr.stderr();

    // Whatever the verdict, the container must be gone.
    if matches!(verdict, Verdict::Hung) {
        ctd.ctr(&["task", "kill", "--all", "--signal", "SIGKILL", &id]);
        ctd.ctr(&["task", "delete", "--force", &id]);
    }
    if ctd.containers().contains(&id) {
        let task = ctd.task(&id);
        // What ctr's own (unchecked) task delete got.
        let delete = task.as_ref().map(|_| ctd.ctr(&["task", "delete", &id]));
        problems.push(format!(
            "{tag}: `ctr run --rm` left the container record {id} ({}), its task: {task:?}; \
             `ctr task delete` now: {:?}\n{}\n{}",
            verdict.short(),
            delete.map(|o| format!("{}{}", stdout(&o), stderr(&o))),
            ctr.describe(),
            ctd.log_tail(25)
        ));
        ctd.ctr(&["task", "delete", "--force", &id]);
        ctd.ctr(&["containers", "rm", &id]);
    }
    let mut left = Vec::new();
    if !wait_until(SETTLE, || {
        left = ctd.leftovers(&id);
        left.is_empty()
    }) {
        problems.push(format!(
            "{tag}: container {id} left behind:\n{}\n{}",
            left.iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n"),
            ctd.log_tail(30)
        ));
    }
    let mut shims = Vec::new();
    if !wait_until(SETTLE, || {
        shims = ctd.shims();
        shims.is_empty()
    }) {
        problems.push(format!(
            "{tag}: shims still running after the case: {:?}",
            shims.iter().map(|p| format!("{}: {}", p.pid, p.command())).collect::<Vec<_>>()
        ));
    }
    let mut now = HostState::take(&ns);
    wait_until(SETTLE, || {
        now = HostState::take(&ns);
        before.settled(&now, &ours)
    });
    let changed = before.diff(&now, &ours);
    if !changed.is_empty() {
        problems.push(format!("{tag}: the host changed ({}):\n  {}", verdict.short(), changed.join("\n  ")));
        restore(&before);
    }
    let mut traces = Vec::new();
    if !wait_until(SETTLE, || {
        traces = escape_traces(&fx.esc);
        traces.is_empty()
    }) {
        problems.push(format!("{tag}: escape target left on the host: {traces:?}"));
        for t in &traces {
            remove_trace(t);
        }
    }
    eprintln!("{tag}: {} in {took:?}", verdict.short());
    (verdict, err)
}

#[test]
fn hostile_specs_are_refused_or_run_safely() {
    let _serial = serial();
    let ctd = PrivateContainerd::start();
    let fx = Fixtures::make(&ctd);
    let ours = runtime_under_test();
    let mut cases = cases();
    let mut names = BTreeSet::new();
    for case in &cases {
        assert!(names.insert(case.name), "two cases are named {:?}", case.name);
    }
    assert!(cases.len() >= 60, "the suite must hold at least 60 cases, it has {}", cases.len());
    if let Ok(only) = std::env::var("RSV2_HOSTILE_ONLY") {
        cases.retain(|c| c.name.contains(&only));
        eprintln!("RSV2_HOSTILE_ONLY={only:?}: {} case(s)", cases.len());
    }
    let mut problems = Vec::new();
    let mut rows = Vec::new();
    for case in &cases {
        let runc = match case.relation {
            Relation::OursOnly(_) => Verdict::NotRun,
            _ => run_case(&ctd, &fx, case, RUNC_RUNTIME, &mut problems).0,
        };
        let (mine, err) = match case.relation {
            Relation::OursOnly(why) if ours == RUNC_RUNTIME => {
                problems.push(format!("[{}]: not run under {ours}: {why}", case.name));
                (Verdict::NotRun, String::new())
            }
            _ => run_case(&ctd, &fx, case, &ours, &mut problems),
        };
        let tag = format!("[{}]", case.name);
        let mut ok = true;
        let mut fail = |p: String| {
            ok = false;
            problems.push(p)
        };
        match case.relation {
            Relation::Same => match (&runc, &mine) {
                (a, b) if a.refused() != b.refused() => fail(format!(
                    "{tag}: runc {} but ours {}\n--- our stderr ---\n{err}",
                    a.short(),
                    b.short()
                )),
                _ => {}
            },
            Relation::StricterThanRunc(_) | Relation::OursOnly(_) => {
                if !mine.refused() {
                    fail(format!("{tag}: ours must refuse ({}) but {}\n{err}", case.relation.label(), mine.short()));
                }
            }
        }
        if mine.refused() {
            let missing: Vec<&str> = case.words.iter().copied().filter(|w| !err.contains(w)).collect();
            if !missing.is_empty() {
                fail(format!("{tag}: our error does not say {missing:?}:\n{err}"));
            }
            if reason(&err).trim().len() < 10 {
                fail(format!("{tag}: our error says nothing useful:\n{err}"));
            }
        }
        rows.push((case.name, runc.short(), mine.short(), case.relation, ok));
    }

    eprintln!("\nHostile specs: {} cases, runc's shim and {ours}\n", cases.len());
    eprintln!("| case | runc 1.1.5 | ours | relation |");
    eprintln!("|---|---|---|---|");
    for (name, runc, mine, relation, ok) in &rows {
        let mark = if *ok { "" } else { " **FAILED**" };
        eprintln!("| {name} | {} | {} | {}{mark} |", cut(runc, 90), cut(mine, 90), relation.label());
    }
    eprintln!();
    for (name, _, _, relation, _) in &rows {
        match relation {
            Relation::StricterThanRunc(why) => eprintln!("- StricterThanRunc, {name}: {why}"),
            Relation::OursOnly(why) => eprintln!("- OursOnly, {name}: {why}"),
            Relation::Same => {}
        }
    }
    assert_no_problems(&problems, "hostile specs");
    ctd.finish();
}

// ---------------------------------------------------------------------------
// A hostile spec beside a running container in one shim group.
// ---------------------------------------------------------------------------

/// The long-running shim servers of the instance (not `start`/`delete`).
fn servers(ctd: &PrivateContainerd) -> Vec<host::Process> {
    ctd.shims()
        .into_iter()
        .filter(|p| !p.cmdline.iter().any(|a| a == "start" || a == "delete"))
        .collect()
}

type Hostile = (&'static str, fn(&mut Value, &str), &'static [&'static str]);

/// Specs that fail Create at three stages: in the validator, in a hook
/// run by the runtime, and inside the container's init (its mounts).
const GROUP_CASES: [Hostile; 6] = [
    (
        "a uid of 4294967295 (refused before anything runs)",
        |s, _| s["process"]["user"] = json!({"uid": 4294967295u32, "gid": 0}),
        &["process.user.uid"],
    ),
    (
        "a createRuntime hook that does not exist",
        |s, id| s["hooks"] = json!({"createRuntime": [{"path": format!("/nonexistent/{id}/hook")}]}),
        &["createRuntime", "/nonexistent/"],
    ),
    (
        "a bind mount from a nonexistent source (refused before anything runs)",
        |s, id| {
            s["mounts"].as_array_mut().unwrap().push(json!({
                "destination": "/mnt", "type": "bind",
                "source": format!("/nonexistent/{id}/src"), "options": ["rbind", "ro"],
            }))
        },
        &["/nonexistent/"],
    ),
    (
        "a mount below a file of the rootfs (fails in the init stage)",
        |s, _| s["mounts"].as_array_mut().unwrap().push(json!({"destination": "/bin/sh/x", "type": "tmpfs", "source": "tmpfs"})),
        &["/bin/sh/x"],
    ),
    (
        "a cpuset that names no CPU (fails in the cgroup)",
        |s, _| s["linux"]["resources"]["cpu"] = json!({"cpus": "1000-1001"}),
        &["cpuset"],
    ),
    (
        "a program that does not exist (fails at execve)",
        |s, id| s["process"]["args"] = json!([format!("/nonexistent/{id}/program")]),
        &["/nonexistent/"],
    ),
];

/// Files below `dir` (ctr's FIFO dir: a directory per task) whose name
/// starts with `id`.
fn fifos_named(dir: &Path, id: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for sub in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(sub.path()).into_iter().flatten().flatten() {
            if f.file_name().to_string_lossy().starts_with(id) {
                found.push(f.path());
            }
        }
    }
    found
}

#[test]
fn a_failed_create_in_a_shim_group_leaves_the_group_serving() {
    let _serial = serial();
    let ctd = PrivateContainerd::start();
    let mut problems = Vec::new();
    // Ours first; runc's shim serves groups too.
    for runtime in [runtime_under_test(), RUNC_RUNTIME.to_string()] {
        let ours = runtime != RUNC_RUNTIME;
        let group = ctd.unique_group("hostile");
        let keeper = ctd.unique_id("keeper");
        let mut spec = ctd.default_spec(&keeper, &["/bin/sleep", "1000"]);
        spec["annotations"][GROUP_ANNOTATION] = group.clone().into();
        let task = ctd
            .run_config(&keeper, ctd.write_spec(&keeper, &spec))
            .runtime(&runtime)
            .detach();
        let found = servers(&ctd);
        assert_eq!(found.len(), 1, "{runtime}: one shim server for group {group}: {found:?}");
        let shim = found[0].pid;
        let socket = ctd.group_socket(&group);
        // What our shim holds while it serves only the keeper: a failed
        // member must give back every fd it took (its FIFOs, pipes, cgroup
        // and sync sockets). runc's shim, a Go program, keeps a varying set.
        let base_fds = integration_tests::soak::fd_count(shim);

        for (n, (what, hostile, words)) in GROUP_CASES.iter().enumerate() {
            let tag = format!("{runtime}, {what}");
            let id = ctd.unique_id("member");
            let mut spec = ctd.default_spec(&id, &["/bin/true"]);
            spec["annotations"][GROUP_ANNOTATION] = group.clone().into();
            hostile(&mut spec, &id);
            let out = ctd
                .run_config(&id, ctd.write_spec(&id, &spec))
                .runtime(&runtime)
                .rm_within(RUN_TIMEOUT);
            let err = stderr(&out);
            if out.status.success() {
                problems.push(format!("{tag}: ran\n{}", stdout(&out)));
            } else if ours {
                let missing: Vec<&&str> = words.iter().filter(|w| !err.contains(**w)).collect();
                if !missing.is_empty() || err.contains("ttrpc: closed") {
                    problems.push(format!("{tag}: the error does not say {missing:?} (or the shim died):\n{err}"));
                }
            }
            eprintln!("{tag}: {}", reason(&err));
            if ctd.containers().contains(&id) {
                problems.push(format!("{tag}: the failed container {id} is still listed"));
                ctd.ctr(&["containers", "rm", &id]);
            }
            let mut left = Vec::new();
            if !wait_until(SETTLE, || {
                left = ctd.leftovers(&id);
                left.is_empty()
            }) {
                problems.push(format!(
                    "{tag}: the failed container {id} left behind:\n{}",
                    left.iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
                ));
            }
            // The shim serving the group is the same process, still serving.
            let now: Vec<u32> = servers(&ctd).iter().map(|p| p.pid).collect();
            if now != [shim] || !host::is_alive(shim) {
                problems.push(format!("{tag}: the group's shim was {shim}, now {now:?}\n{}", ctd.log_tail(30)));
            }
            if !socket.exists() {
                problems.push(format!("{tag}: the group's socket {} is gone", socket.display()));
            }
            match ctd.task(&keeper) {
                Some(t) if t.pid == task.pid && t.status == RUNNING => {}
                other => problems.push(format!("{tag}: the running container {keeper} is now {other:?}")),
            }
            let exec = ctd
                .exec(&keeper, &format!("alive-{n}"), &["/bin/echo", "alive"])
                .output();
            if !exec.status.success() || stdout(&exec).trim() != "alive" {
                problems.push(format!(
                    "{tag}: an exec into {keeper} failed: {}\n{}",
                    stdout(&exec),
                    stderr(&exec)
                ));
            }
            // No FIFO of the failed member is left in the client's FIFO dir.
            let fifos = fifos_named(&ctd.dir().join("fifo"), &id);
            if !fifos.is_empty() {
                problems.push(format!("{tag}: FIFOs of {id} left behind: {fifos:?}"));
            }
            if ours {
                let mut fds = None;
                if !wait_until(SETTLE, || {
                    fds = integration_tests::soak::fd_count(shim);
                    fds == base_fds
                }) {
                    problems.push(format!("{tag}: the group's shim held {base_fds:?} fds before, {fds:?} after"));
                }
            }
        }
        ctd.remove(&keeper);
        ctd.assert_no_leftovers(&keeper);
        if !wait_until(SETTLE, || ctd.shims().is_empty()) {
            problems.push(format!("{runtime}: the group's shim did not exit after its last container"));
        }
    }
    assert_no_problems(&problems, "a hostile spec in a shim group");
    ctd.finish();
}
