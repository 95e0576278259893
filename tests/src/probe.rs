//! Shared pieces of the conformance tests (`tests/conformance.rs`): the probe
//! script a container runs to describe what it sees, the normalisation and
//! diff of two such descriptions (runc's and ours), spec edits, and the
//! helpers of the escape tests (a private copy of the shim binary, a payload
//! that stands in for a malicious dynamic loader, host binary fingerprints).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::{busybox_rootfs, PrivateContainerd, SHIM_NAME};

/// The conformance probe: a busybox `sh -c` script printing, section by
/// section (`== name` headers), what a process of the container sees. Every
/// value that legitimately differs between two runs (pipe inodes, the fd
/// `ls` opens for itself, tmpfs inode counts, key serials, timestamps) is
/// normalised away inside the script; [`normalise`] replaces the container
/// id. It never redirects to /dev/null outside its `devices` section, so a
/// container whose /dev/null cannot be opened still yields every section.
pub const PROBE: &str = r#"echo "== status"
grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp|Uid|Gid|Groups):' /proc/$$/status | tr -s '\t ' ' '
echo "== id"
id
echo "== userns"
for f in uid_map gid_map setgroups; do echo "$f: $(tr -s ' ' < /proc/$$/$f)"; done
echo "== mounts"
while read -r src mp fstype opts rest; do
  keep=$(echo "$opts" | tr ',' '\n' | grep -E '^(ro|rw|nosuid|nodev|noexec)$' | tr '\n' ',')
  if [ "$fstype" = tmpfs ]; then keep="$keep$(echo "$opts" | tr ',' '\n' | grep -E '^(mode|size)=' | tr '\n' ',')"; fi
  echo "$mp $fstype $keep"
done < /proc/$$/mounts | sort
echo "== dev"
find /dev -xdev | sort | while read -r f; do stat -c '%N %F %a %u:%g %t:%T' "$f"; done
echo "== devices"
for d in null zero full random urandom; do echo "open /dev/$d: $( (exec 3<>/dev/$d) 2>&1 && echo ok)"; done
echo "mknod c 1:3: $(mknod /dev/.probe-c c 1 3 2>&1 && { (exec 3<>/dev/.probe-c) 2>&1 && echo opened; })"
echo "mknod c 10:200: $(mknod /dev/.probe-tun c 10 200 2>&1 && { (exec 3<>/dev/.probe-tun) 2>&1 && echo opened; })"
rm -f /dev/.probe-c /dev/.probe-tun
echo "== limits"
cat /proc/$$/limits
echo "== environ"
tr '\0' '\n' < /proc/$$/environ | sort
echo "== env"
env | sort
echo "== cwd"
pwd
readlink /proc/$$/cwd
echo "== hostname"
hostname
echo "== fds"
ls -l /proc/self/fd > /dev/shm/.probe-fds 2>&1
own=$(sed -n 's|^ls: /proc/self/fd/\([0-9]*\): cannot read link.*|\1|p' /dev/shm/.probe-fds)
sed -E 's/\[[0-9]+\]/[N]/' /dev/shm/.probe-fds | grep -v '^ls: ' | awk -v own="$own" '$1 != "total" && $9 != own {print $1, $3, $4, $9, $10, $11}'
rm -f /dev/shm/.probe-fds
echo "== umask"
umask
echo "== masked"
for f in /proc/kcore /proc/keys /proc/timer_list; do
  if out=$(head -c 100 "$f" 2>&1); then
    if [ -z "$out" ]; then echo "$f: empty"; else echo "$f: readable: $(echo "$out" | head -1 | cut -c1-10 | tr '0-9a-f' '.')"; fi
  else echo "$f: $out"; fi
done
echo "ls /proc/acpi /sys/firmware: $(ls /proc/acpi /sys/firmware 2>&1 | tr '\n' ' ')"
echo "== readonly"
(echo 1 > /proc/sys/kernel/domainname) 2>&1; echo "domainname rc=$?"
(echo > /proc/sysrq-trigger) 2>&1; echo "sysrq-trigger rc=$?"
echo "== seccomp"
unshare -n true 2>&1; echo "unshare -n rc=$?"
mount -t tmpfs none /tmp 2>&1; rc=$?; if [ $rc = 0 ]; then umount /tmp; fi; echo "mount tmpfs rc=$rc"
"#;

/// `ctr run` (and `ctr task delete`) output as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Replaces what differs between two runs of the same probe and is not a
/// difference we hold the runtimes to:
/// - the container id;
/// - the group of /dev/mqueue in a user namespace: runc 1.1.5 mounts it
///   before it takes gid 0 inside the namespace, so its root shows the
///   overflow gid 65534; we mount it as gid 0, which is what the spec's
///   mapping asks for. Owner 0 is still compared.
pub fn normalise(text: &str, id: &str) -> String {
    text.replace(id, "<id>")
        .lines()
        .map(|l| match l.strip_prefix("/dev/mqueue directory 1777 0:") {
            Some(rest) if rest.starts_with("65534 ") || rest.starts_with("0 ") => {
                format!("/dev/mqueue directory 1777 0:<gid> {}", rest.split_once(' ').map(|x| x.1).unwrap_or(""))
            }
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The lines of section `name` (after `== name`, up to the next header).
pub fn section(text: &str, name: &str) -> Vec<String> {
    let header = format!("== {name}");
    text.lines()
        .skip_while(|l| *l != header)
        .skip(1)
        .take_while(|l| !l.starts_with("== "))
        .map(str::to_string)
        .collect()
}

/// The value of `key: value` (or `key=value`) in section `name`, if present.
pub fn field(text: &str, name: &str, key: &str) -> Option<String> {
    section(text, name).into_iter().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(": ").or_else(|| rest.strip_prefix('=')))
            .map(|v| v.trim().to_string())
    })
}

/// A unified diff (3 lines of context) of `a` and `b`, or `None` when they
/// are equal. Line-based longest common subsequence: the probe's outputs
/// are a few hundred lines.
pub fn unified_diff(a: &str, b: &str, a_label: &str, b_label: &str) -> Option<String> {
    if a == b {
        return None;
    }
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    let (n, m) = (a.len(), b.len());
    // lcs[i][j]: length of the LCS of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    // The edit script: (tag, line index in a, line index in b).
    let mut ops: Vec<(char, usize, usize)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', i, j));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            ops.push(('+', i, j));
            j += 1;
        } else {
            ops.push(('-', i, j));
            i += 1;
        }
    }
    if ops.iter().all(|(t, _, _)| *t == ' ') {
        // Equal lines, different line endings: say so rather than print nothing.
        return Some(format!(
            "--- {a_label}\n+++ {b_label}\n(differ only in line endings)\n"
        ));
    }
    const CONTEXT: usize = 3;
    let mut out = format!("--- {a_label}\n+++ {b_label}\n");
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != ' ').collect();
    let mut k = 0;
    while k < changed.len() {
        let start = changed[k].saturating_sub(CONTEXT);
        let mut end = changed[k];
        while k < changed.len() && changed[k] <= end + 2 * CONTEXT {
            end = changed[k];
            k += 1;
        }
        let end = (end + CONTEXT + 1).min(ops.len());
        let hunk = &ops[start..end];
        let a_start = hunk[0].1;
        let b_start = hunk[0].2;
        let a_len = hunk.iter().filter(|(t, _, _)| *t != '+').count();
        let b_len = hunk.iter().filter(|(t, _, _)| *t != '-').count();
        let _ = writeln!(
            out,
            "@@ -{},{a_len} +{},{b_len} @@",
            a_start + 1,
            b_start + 1
        );
        for (tag, ai, bj) in hunk {
            let line = if *tag == '+' { b[*bj] } else { a[*ai] };
            let _ = writeln!(out, "{tag}{line}");
        }
    }
    Some(out)
}

/// sha256 of a file, through coreutils' sha256sum, as lowercase hex.
pub fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("sha256sum {}: {e}", path.display()));
    assert!(
        out.status.success(),
        "sha256sum {} failed: {}",
        path.display(),
        stderr(&out)
    );
    stdout(&out)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A busybox rootfs of the test's own at `<instance dir>/<name>`, for tests
/// that plant files or symlinks in the image. Removed with the instance.
pub fn private_rootfs(ctd: &PrivateContainerd, name: &str) -> PathBuf {
    let dir = ctd.dir().join(name);
    fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    busybox_rootfs(&dir);
    dir
}

/// Adds a new user namespace mapping container ids 0..size to host ids
/// host_id.., for both uids and gids.
pub fn add_user_namespace(spec: &mut Value, host_id: u32, size: u32) {
    spec["linux"]["namespaces"]
        .as_array_mut()
        .expect("spec has linux.namespaces")
        .push(json!({ "type": "user" }));
    let map = json!([{ "containerID": 0, "hostID": host_id, "size": size }]);
    spec["linux"]["uidMappings"] = map.clone();
    spec["linux"]["gidMappings"] = map;
}

/// Removes the namespace of `kind` (`pid`, `network`, ...): the container
/// shares the runtime's.
pub fn remove_namespace(spec: &mut Value, kind: &str) {
    spec["linux"]["namespaces"]
        .as_array_mut()
        .expect("spec has linux.namespaces")
        .retain(|n| n["type"] != kind);
}

/// Appends a mount to the spec.
pub fn add_mount(spec: &mut Value, destination: &str, typ: &str, source: &str, options: &[&str]) {
    spec["mounts"]
        .as_array_mut()
        .expect("spec has mounts")
        .push(json!({ "destination": destination, "type": typ, "source": source, "options": options }));
}

/// Appends a read-write bind mount of the host directory `source`.
pub fn add_bind(spec: &mut Value, destination: &str, source: &Path) {
    add_mount(
        spec,
        destination,
        "bind",
        &source.display().to_string(),
        &["rbind", "rw"],
    );
}

/// The device-cgroup rules `ctr run --rootfs` puts into its spec (and the
/// CRI plugin too) on top of `ctr oci spec`'s deny-all: the usual character
/// devices. Tests whose subject is not the device cgroup add them, so a
/// container can use /dev/null whatever the runtime adds on its own.
pub fn allow_default_devices(spec: &mut Value) {
    let rules = spec["linux"]["resources"]["devices"]
        .as_array_mut()
        .expect("spec has linux.resources.devices");
    for (major, minor) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 1),
        (5, 2),
    ] {
        rules.push(
            json!({ "allow": true, "type": "c", "major": major, "minor": minor, "access": "rwm" }),
        );
    }
    rules.push(json!({ "allow": true, "type": "c", "major": 136, "access": "rwm" }));
}

/// Replaces the `bin/` symlink through which the instance's containerd finds
/// our shim with a private copy of the binary, so that the escape tests can
/// fingerprint exactly the file the shims run (nobody rebuilds it under
/// them) and nothing an escape might do reaches the workspace's build.
/// Returns the copy's path. Call before the first container of our runtime.
pub fn private_shim_copy(ctd: &PrivateContainerd) -> PathBuf {
    let link = ctd.dir().join("bin").join(SHIM_NAME);
    let target =
        fs::canonicalize(&link).unwrap_or_else(|e| panic!("resolve {}: {e}", link.display()));
    let tmp = ctd.dir().join("bin").join(format!(".{SHIM_NAME}.copy"));
    fs::copy(&target, &tmp).unwrap_or_else(|e| panic!("copy {}: {e}", target.display()));
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).expect("chmod the shim copy");
    fs::rename(&tmp, &link).unwrap_or_else(|e| panic!("replace {}: {e}", link.display()));
    link
}

/// A host file a container must never be able to write: a runtime binary.
#[derive(Debug, Clone)]
pub struct HostBinary {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    pub sha256: String,
}

impl HostBinary {
    pub fn new(path: &Path) -> Self {
        let path =
            fs::canonicalize(path).unwrap_or_else(|e| panic!("resolve {}: {e}", path.display()));
        let meta = fs::metadata(&path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
        HostBinary {
            sha256: sha256_file(&path),
            dev: meta.dev(),
            ino: meta.ino(),
            path,
        }
    }

    /// Panics unless the file still has the content it had when fingerprinted.
    pub fn assert_unchanged(&self) {
        let now = sha256_file(&self.path);
        assert_eq!(
            now,
            self.sha256,
            "{} was modified: sha256 {} before, {now} after",
            self.path.display(),
            self.sha256
        );
    }
}

/// The runtime binaries on the host that containers of `ctd` run next to:
/// runc's shim, runc, containerd, and our shim (`shim`, when given).
pub fn host_runtime_binaries(shim: Option<&Path>) -> Vec<HostBinary> {
    let mut paths: Vec<PathBuf> = [
        "/usr/bin/containerd-shim-runc-v2",
        "/usr/bin/runc",
        "/usr/bin/containerd",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    paths.extend(shim.map(Path::to_path_buf));
    paths.iter().map(|p| HostBinary::new(p)).collect()
}

/// (device, inode) of every regular file below `dir`, without following
/// symlinks: what a container's processes may legitimately run and open.
pub fn file_ids(dir: &Path) -> BTreeSet<(u64, u64)> {
    let mut out = BTreeSet::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let Ok(meta) = fs::symlink_metadata(e.path()) else {
            continue;
        };
        if meta.is_dir() {
            out.extend(file_ids(&e.path()));
        } else if meta.is_file() {
            out.insert((meta.dev(), meta.ino()));
        }
    }
    out
}

/// C source of the exe payload: a static program without libc that reports
/// what it can do with an executable it reaches through procfs. Run as the
/// dynamic loader of a runtime binary (planted at the loader's path in the
/// image and reached through a `#!/proc/self/exe` script, the CVE-2019-5736
/// technique) it inspects `/proc/self/exe`, i.e. the runtime binary; run as
/// `/payload /proc/PID/exe...` it inspects those. Per path it prints one line:
///
/// `payload path=P exe=LINK open=FD dev=D ino=I nlink=N rdonly=R seals=S wopen=W`
///
/// with `open`/`wopen` the result of open(O_RDONLY) and of
/// open(O_WRONLY|O_APPEND) (closed at once, nothing is ever written),
/// negative errno on failure; `rdonly` whether the file's mount is
/// read-only (fstatfs ST_RDONLY) and `seals` its memfd seals (F_GET_SEALS,
/// negative errno for a plain file).
const PAYLOAD_C: &str = r#"
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>

static long sys3(long n, long a, long b, long c) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}
static unsigned long slen(const char *s) { unsigned long n = 0; while (s[n]) n++; return n; }
static void put(const char *s) { sys3(SYS_write, 1, (long)s, (long)slen(s)); }
static void putnum(long v) {
    char b[32]; int i = 31; int neg = v < 0; unsigned long u = neg ? -(unsigned long)v : (unsigned long)v;
    b[i] = 0;
    do { b[--i] = '0' + u % 10; u /= 10; } while (u);
    if (neg) b[--i] = '-';
    put(b + i);
}
static void report(const char *path) {
    char link[512];
    long n = sys3(SYS_readlink, (long)path, (long)link, sizeof link - 1);
    put("payload path="); put(path);
    put(" exe=");
    if (n >= 0) { link[n] = 0; put(link); } else { putnum(n); }
    long fd = sys3(SYS_open, (long)path, O_RDONLY | O_CLOEXEC, 0);
    put(" open="); putnum(fd);
    if (fd >= 0) {
        struct stat st;
        struct statfs sf;
        long r = sys3(SYS_fstat, fd, (long)&st, 0);
        long rf = sys3(SYS_fstatfs, fd, (long)&sf, 0);
        long seals = sys3(SYS_fcntl, fd, 1034 /* F_GET_SEALS */, 0);
        if (r == 0) {
            put(" dev="); putnum((long)st.st_dev);
            put(" ino="); putnum((long)st.st_ino);
            put(" nlink="); putnum((long)st.st_nlink);
        }
        put(" rdonly="); putnum(rf < 0 ? rf : (long)(sf.f_flags & 1 /* ST_RDONLY */));
        put(" seals="); putnum(seals);
        sys3(SYS_close, fd, 0, 0);
    }
    long w = sys3(SYS_open, (long)path, O_WRONLY | O_APPEND | O_CLOEXEC, 0);
    if (w >= 0) { sys3(SYS_close, w, 0, 0); w = 0; }
    put(" wopen="); putnum(w);
    put("\n");
}
static int is_proc(const char *s) {
    return s[0] == '/' && s[1] == 'p' && s[2] == 'r' && s[3] == 'o' && s[4] == 'c' && s[5] == '/';
}
void cmain(long *sp) {
    long argc = sp[0];
    char **argv = (char **)(sp + 1);
    if (argc > 1 && is_proc(argv[1])) {
        for (long i = 1; i < argc; i++) report(argv[i]);
    } else {
        report("/proc/self/exe");
    }
    sys3(SYS_exit_group, 0, 0, 0);
}
__asm__(".globl _start\n_start:\n xor %rbp,%rbp\n mov %rsp,%rdi\n and $-16,%rsp\n call cmain\n hlt\n");
"#;

/// Compiles the exe payload (see [`PAYLOAD_C`]) into `dir/payload` with the
/// C compiler Rust links with. x86_64 only.
pub fn build_exe_payload(dir: &Path) -> PathBuf {
    if cfg!(not(target_arch = "x86_64")) {
        panic!("the exe payload is written for x86_64 syscalls");
    }
    let src = dir.join("payload.c");
    let bin = dir.join("payload");
    fs::write(&src, PAYLOAD_C).expect("write payload.c");
    let out = Command::new("cc")
        .args([
            "-static",
            "-nostdlib",
            "-ffreestanding",
            "-fno-stack-protector",
            "-fno-builtin",
            "-O1",
            "-o",
        ])
        .arg(&bin)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run cc (the C compiler Rust links with): {e}"));
    assert!(
        out.status.success(),
        "cc payload.c failed\n{}",
        stderr(&out)
    );
    bin
}

/// Plants the payload in `rootfs`: as `/payload`, as the dynamic loader
/// every glibc binary of the host names (`/lib64/ld-linux-x86-64.so.2`), and
/// `/evil`, a script whose interpreter is `/proc/self/exe`. Exec'ing `/evil`
/// makes the kernel run whatever binary exec'd it (the runtime) with the
/// image's loader, i.e. the payload, with `/proc/self/exe` the runtime's.
pub fn plant_exe_payload(rootfs: &Path, payload: &Path) {
    fs::copy(payload, rootfs.join("payload")).expect("copy the payload into the rootfs");
    fs::create_dir_all(rootfs.join("lib64")).expect("mkdir lib64");
    fs::copy(payload, rootfs.join("lib64/ld-linux-x86-64.so.2"))
        .expect("plant the payload as ld.so");
    fs::write(rootfs.join("evil"), "#!/proc/self/exe\n").expect("write /evil");
    for f in ["payload", "lib64/ld-linux-x86-64.so.2", "evil"] {
        fs::set_permissions(rootfs.join(f), fs::Permissions::from_mode(0o755))
            .expect("chmod payload");
    }
}

/// One line of the payload's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExeReport {
    pub line: String,
    pub path: String,
    pub exe: String,
    pub open: i64,
    pub dev: Option<u64>,
    pub ino: Option<u64>,
    pub rdonly: Option<i64>,
    pub seals: Option<i64>,
    pub wopen: i64,
}

impl ExeReport {
    /// Parses every `payload ...` line of `text` (other lines are ignored).
    pub fn parse_all(text: &str) -> Vec<ExeReport> {
        text.lines()
            .filter_map(|l| l.find("payload path=").map(|at| &l[at..]))
            .filter_map(ExeReport::parse)
            .collect()
    }

    fn parse(line: &str) -> Option<ExeReport> {
        let get = |key: &str| -> Option<&str> {
            let at = line.find(&format!(" {key}="))? + key.len() + 2;
            line[at..].split(' ').next()
        };
        let path = line
            .strip_prefix("payload path=")?
            .split(' ')
            .next()?
            .to_string();
        Some(ExeReport {
            line: line.to_string(),
            path,
            exe: get("exe").unwrap_or_default().to_string(),
            open: get("open")?.parse().ok()?,
            dev: get("dev").and_then(|v| v.parse().ok()),
            ino: get("ino").and_then(|v| v.parse().ok()),
            rdonly: get("rdonly").and_then(|v| v.parse().ok()),
            seals: get("seals").and_then(|v| v.parse().ok()),
            wopen: get("wopen")?.parse().ok()?,
        })
    }

    /// Whether the file reported is one of the host's runtime binaries:
    /// one of `host`, or named like a containerd shim, containerd or runc.
    pub fn is_runtime_binary(&self, host: &[HostBinary]) -> bool {
        let id = self.dev.zip(self.ino);
        let name = self.exe.rsplit('/').next().unwrap_or_default();
        host.iter().any(|h| Some((h.dev, h.ino)) == id)
            || name.starts_with("containerd")
            || name == "runc"
    }

    /// Why this report shows a container holding a host file it could
    /// overwrite, if it does: the file is not one of the container's own
    /// (`own`: (dev, ino) of its rootfs files) and it was opened for
    /// writing, or opened on a writable mount without a memfd write seal,
    /// so it can be reopened for writing through /proc/self/fd once the
    /// kernel no longer refuses it as busy (ETXTBSY).
    pub fn escape(&self, own: &BTreeSet<(u64, u64)>, host: &[HostBinary]) -> Option<String> {
        const F_SEAL_WRITE: i64 = 0x8;
        let id = self.dev.zip(self.ino);
        if id.is_some_and(|id| own.contains(&id)) {
            return None;
        }
        let what = match id.and_then(|(d, i)| host.iter().find(|h| h.dev == d && h.ino == i)) {
            Some(h) => format!("the host's {}", h.path.display()),
            None => format!("a host file ({})", self.exe),
        };
        if self.wopen == 0 {
            return Some(format!("opened {what} for writing: {}", self.line));
        }
        let sealed = self.seals.is_some_and(|s| s >= 0 && s & F_SEAL_WRITE != 0);
        if self.open >= 0 && self.rdonly == Some(0) && !sealed {
            return Some(format!(
                "holds {what} open on a writable mount (reopenable for writing through /proc/self/fd \
                 once no process runs it): {}",
                self.line
            ));
        }
        None
    }
}

/// Creates `path` as a symlink to `target` (absolute or relative, as given).
pub fn plant_symlink(target: &str, path: &Path) {
    symlink(target, path).unwrap_or_else(|e| panic!("symlink {} -> {target}: {e}", path.display()));
}
