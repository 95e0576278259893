//! The systemd cgroup driver on a node (issue #16), run inside the node VM
//! only (systemd as PID 1 on cgroup v2; tests/Cargo.toml: `test = false`,
//! run by tests/node-vm/guest-node-tests.sh and reported per test by
//! tests/tests/node_vm.rs).
//!
//! Every test does the same with runc's shim (runc 1.1.5's systemd driver,
//! the reference) and with ours, in one private containerd, and asserts
//! that what systemd and the cgroup files show is the same for both, and
//! what the spec asked for.

use std::process::Command;
use std::time::Duration;

use integration_tests::cri::{
    ContainerState, CriContainerd, CriOptions, LinuxContainerResources, Pod,
};
use integration_tests::{wait_until, PrivateContainerd, RUNC_RUNTIME, RUST_RUNTIME};

const CG: &str = "/sys/fs/cgroup";

/// The unit properties the spec's resources map to (runc's systemd
/// driver: libcontainer/cgroups/systemd/v2.go), and the ones every
/// container unit has.
const PROPS: &[&str] = &[
    "ActiveState",
    "Slice",
    "Delegate",
    "MemoryMax",
    "MemoryLow",
    "MemorySwapMax",
    "CPUWeight",
    "CPUQuotaPerSecUSec",
    "CPUQuotaPeriodUSec",
    "AllowedCPUs",
    "AllowedMemoryNodes",
    "TasksMax",
    "IOWeight",
    "DevicePolicy",
    "DeviceAllow",
];

/// The cgroup files those properties (and what has no property) end in.
const FILES: &[&str] = &[
    "memory.max",
    "memory.low",
    "memory.swap.max",
    "cpu.weight",
    "cpu.max",
    "cpuset.cpus",
    "cpuset.mems",
    "pids.max",
];

fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn unit_prop(unit: &str, prop: &str) -> String {
    sh("systemctl", &["show", "-P", prop, unit])
}

fn unit_props(unit: &str) -> Vec<(String, String)> {
    PROPS
        .iter()
        .map(|p| (p.to_string(), unit_prop(unit, p)))
        .collect()
}

fn cgroup_files(dir: &str) -> Vec<(String, String)> {
    FILES
        .iter()
        .map(|f| {
            let v = std::fs::read_to_string(format!("{CG}{dir}/{f}"))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|e| format!("<{e}>"));
            (f.to_string(), v)
        })
        .collect()
}

/// Units whose name contains `needle`, loaded in any state.
fn units_like(needle: &str) -> Vec<String> {
    sh(
        "systemctl",
        &["list-units", "--all", "--plain", "--no-legend"],
    )
    .lines()
    .filter_map(|l| l.split_whitespace().next())
    .filter(|u| u.contains(needle))
    .map(str::to_string)
    .collect()
}

fn unit_gone(unit: &str) -> bool {
    let load = unit_prop(unit, "LoadState");
    let active = unit_prop(unit, "ActiveState");
    load == "not-found" || active == "inactive"
}

fn require_systemd_v2() {
    let comm = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
    assert_eq!(
        comm.trim(),
        "systemd",
        "these tests run on a systemd host (the node VM), PID 1 is {comm:?}"
    );
    assert!(
        std::path::Path::new(CG)
            .join("cgroup.controllers")
            .is_file(),
        "{CG} is not a unified cgroup v2 hierarchy"
    );
}

/// What one runtime made of the same spec through ctr.
#[derive(Debug, PartialEq)]
struct CtrObservation {
    props: Vec<(String, String)>,
    files: Vec<(String, String)>,
    proc_cgroup: String,
    exec_cgroup: String,
    frozen_when_paused: String,
    thawed_after_resume: String,
    metrics_ok: bool,
    killed_all_status: String,
    left_units: Vec<String>,
    left_dir: bool,
}

fn ctr_scenario(ctd: &PrivateContainerd, runtime: &str, name: &str) -> CtrObservation {
    let id = ctd.unique_id(name);
    let unit = format!("rsv2-{id}.scope");
    let mut spec = ctd.default_spec(&id, &["/bin/sh", "-c", "sleep 1000 & sleep 1000"]);
    spec["linux"]["cgroupsPath"] = format!("system.slice:rsv2:{id}").into();
    spec["linux"]["resources"]["memory"] = serde_json::json!({ "limit": 64u64 << 20, "reservation": 32u64 << 20, "swap": 96u64 << 20 });
    spec["linux"]["resources"]["cpu"] = serde_json::json!({ "shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0" });
    spec["linux"]["resources"]["pids"] = serde_json::json!({ "limit": 100 });
    let path = ctd.write_spec(&id, &spec);
    let mut flags: Vec<&str> = Vec::new();
    if runtime == RUNC_RUNTIME {
        // runc's shim takes the driver from its options, not from the
        // path; ctr sends that option only with --cgroup beside it.
        flags.extend(["--runc-systemd-cgroup", "--cgroup"]);
    }
    let cgroup_flag = format!("system.slice:rsv2:{id}");
    if runtime == RUNC_RUNTIME {
        flags.push(&cgroup_flag);
    }
    let task = ctd
        .run_config(&id, path)
        .runtime(runtime)
        .flags(&flags)
        .detach();
    let dir = format!("/system.slice/{unit}");
    let props = unit_props(&unit);
    let files = cgroup_files(&dir);
    let proc_cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", task.pid))
        .unwrap_or_default()
        .trim()
        .to_string();
    let exec = ctd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "cg",
        &id,
        "/bin/cat",
        "/proc/self/cgroup",
    ]);
    let exec_cgroup = String::from_utf8_lossy(&exec.stdout).trim().to_string();

    ctd.ctr_ok(&["task", "pause", &id]);
    let frozen_when_paused = std::fs::read_to_string(format!("{CG}{dir}/cgroup.freeze"))
        .unwrap_or_default()
        .trim()
        .to_string();
    ctd.ctr_ok(&["task", "resume", &id]);
    let thawed_after_resume = std::fs::read_to_string(format!("{CG}{dir}/cgroup.freeze"))
        .unwrap_or_default()
        .trim()
        .to_string();
    let metrics = ctd.ctr(&["task", "metrics", "--format", "json", &id]);
    let metrics_text = String::from_utf8_lossy(&metrics.stdout);
    // Both shims report v2 metrics: memory usage and pids from the unit's cgroup.
    let metrics_ok = metrics.status.success()
        && metrics_text.contains("memory")
        && metrics_text.contains("pids");

    // kill --all reaches the background sleep too: nothing is left in the unit.
    ctd.ctr_ok(&["task", "kill", "--all", "--signal", "SIGKILL", &id]);
    ctd.wait_for_status(&id, "STOPPED", Duration::from_secs(20));
    let killed_all_status = ctd.task(&id).map(|t| t.status).unwrap_or_default();
    ctd.ctr_ok(&["task", "delete", &id]);
    ctd.ctr_ok(&["containers", "rm", &id]);
    wait_until(Duration::from_secs(10), || unit_gone(&unit));
    let left_units = units_like(&id)
        .into_iter()
        .filter(|u| !unit_gone(u))
        .collect();
    let left_dir = std::path::Path::new(&format!("{CG}{dir}")).exists();
    CtrObservation {
        props,
        files,
        proc_cgroup: proc_cgroup.replace(&id, "ID"),
        exec_cgroup: exec_cgroup.replace(&id, "ID"),
        frozen_when_paused,
        thawed_after_resume,
        metrics_ok,
        killed_all_status,
        left_units,
        left_dir,
    }
}

/// The two differences from runc's units that are ours by design, checked
/// and then taken out so that everything else must be equal:
/// - DeviceAllow: runc appends `c *:* m` and `b *:* m` (mknod of any
///   device) to every container's rules, we do not (devices.rs), so its
///   list has `char-* m` and `block-* m` where ours has neither; ours has
///   /dev/net/tun, which runc 1.2.4 has again and Debian's 1.1.5 lacks;
///   every other entry must be the same.
/// - MemorySwapMax when the spec's swap equals its memory limit (no swap,
///   which containerd's CRI sets): runc writes memory.swap.max 0 but sends
///   systemd no property (libcontainer/cgroups/systemd/v2.go: only a
///   non-zero swap), so its unit says `infinity` and a systemd re-apply of
///   the unit would give the container swap again; ours tells systemd 0.
///   The file must be 0 for both.
fn by_design(
    props: &mut Vec<(String, String)>,
    files: &[(String, String)],
    runc_props: &mut Vec<(String, String)>,
    runc_files: &[(String, String)],
) {
    let take = |v: &mut Vec<(String, String)>, k: &str| {
        let i = v.iter().position(|(p, _)| p == k);
        i.map(|i| v.remove(i).1).unwrap_or_default()
    };
    // A group name from /proc/devices (runc 1.1's `char-pts`) as the
    // major it names (`char-136`, systemd 240's form, which we send).
    let devices = std::fs::read_to_string("/proc/devices").unwrap_or_default();
    let group_major = |group: &str| {
        devices
            .lines()
            .filter_map(|l| l.trim().split_once(' '))
            .find(|(_, name)| *name == group)
            .map(|(major, _)| major.to_string())
    };
    let entries = |list: &str| -> std::collections::BTreeSet<String> {
        let words: Vec<&str> = list.split_whitespace().collect();
        words
            .chunks(2)
            .map(|w| match w[0].strip_prefix("char-").and_then(group_major) {
                Some(major) => format!("char-{major} {}", w.get(1).unwrap_or(&"")),
                None => w.join(" "),
            })
            .collect()
    };
    let ours = entries(&take(props, "DeviceAllow"));
    let theirs = entries(&take(runc_props, "DeviceAllow"));
    // /dev/net/tun: runc 1.2.4 allows it again, Debian's runc 1.1.5 does not.
    let ours_extra: Vec<&String> = ours.difference(&theirs).collect();
    let theirs_extra: Vec<&String> = theirs.difference(&ours).collect();
    assert!(
        ours_extra.iter().all(|e| *e == "/dev/char/10:200 rwm")
            && theirs_extra
                .iter()
                .all(|e| *e == "char-* m" || *e == "block-* m"),
        "DeviceAllow: ours {ours:?}, runc's {theirs:?}"
    );
    let file = |f: &[(String, String)]| {
        f.iter()
            .find(|(n, _)| n == "memory.swap.max")
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let swap = props
        .iter()
        .find(|(p, _)| p == "MemorySwapMax")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let runc_swap = runc_props
        .iter()
        .find(|(p, _)| p == "MemorySwapMax")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    if swap != runc_swap {
        assert_eq!(
            (
                swap.as_str(),
                runc_swap.as_str(),
                file(files).as_str(),
                file(runc_files).as_str()
            ),
            ("0", "infinity", "0", "0"),
            "MemorySwapMax and memory.swap.max (ours, runc's)"
        );
        take(props, "MemorySwapMax");
        take(runc_props, "MemorySwapMax");
    }
}

/// `ctr run` with a `system.slice:rsv2:ID` cgroupsPath and the resources
/// systemd has properties for: the transient scope `rsv2-ID.scope` in
/// system.slice is delegated, holds the task and the exec, has the spec's
/// resources as properties and in its cgroup files, freezes on pause,
/// reports metrics, loses every process to kill --all, and is gone after
/// delete; the same as under runc's shim.
#[test]
fn systemd_ctr_scope_matches_runc() {
    require_systemd_v2();
    let ctd = PrivateContainerd::start();
    let runc = ctr_scenario(&ctd, RUNC_RUNTIME, "sd-runc");
    let rust = ctr_scenario(&ctd, RUST_RUNTIME, "sd-rust");
    println!("runc: {runc:#?}\nrust: {rust:#?}");
    let expected_props = [
        ("ActiveState", "active"),
        ("Slice", "system.slice"),
        ("Delegate", "yes"),
        ("MemoryMax", "67108864"),
        ("MemoryLow", "33554432"),
        ("MemorySwapMax", "33554432"),
        ("CPUQuotaPerSecUSec", "500ms"),
        ("CPUQuotaPeriodUSec", "100ms"),
        ("AllowedCPUs", "0"),
        ("AllowedMemoryNodes", "0"),
        ("TasksMax", "100"),
    ];
    for (prop, want) in expected_props {
        let got = rust
            .props
            .iter()
            .find(|(p, _)| p == prop)
            .map(|(_, v)| v.as_str());
        assert_eq!(got, Some(want), "our unit's {prop}; all: {:?}", rust.props);
    }
    let expected_files = [
        ("memory.max", "67108864"),
        ("memory.low", "33554432"),
        ("memory.swap.max", "33554432"),
        ("cpu.max", "50000 100000"),
        ("cpuset.cpus", "0"),
        ("pids.max", "100"),
    ];
    for (file, want) in expected_files {
        let got = rust
            .files
            .iter()
            .find(|(f, _)| f == file)
            .map(|(_, v)| v.as_str());
        assert_eq!(got, Some(want), "our unit's {file}; all: {:?}", rust.files);
    }
    assert_eq!(rust.proc_cgroup, "0::/system.slice/rsv2-ID.scope");
    assert_eq!(rust.frozen_when_paused, "1");
    assert_eq!(rust.thawed_after_resume, "0");
    assert!(rust.metrics_ok, "ctr task metrics failed with our shim");
    assert_eq!(rust.killed_all_status, "STOPPED");
    assert!(
        rust.left_units.is_empty() && !rust.left_dir,
        "our unit is left: {:?}",
        rust.left_units
    );
    let (mut rust, mut runc) = (rust, runc);
    by_design(&mut rust.props, &rust.files, &mut runc.props, &runc.files);
    assert_eq!(
        rust, runc,
        "our shim and runc's differ (left: ours, right: runc's)"
    );
    ctd.finish();
}

/// What one CRI handler made of the same pod.
#[derive(Debug, PartialEq)]
struct CriObservation {
    props: Vec<(String, String)>,
    files: Vec<(String, String)>,
    in_unit: bool,
    exec_stdout: String,
    exec_exit: i32,
    stats_nonzero: bool,
    updated_props: Vec<(String, String)>,
    updated_files: Vec<(String, String)>,
    oom_reason: String,
    oom_exit: i32,
    left_units: Vec<String>,
}

/// The unit and cgroup directory of a CRI container from its
/// `slice:prefix:name` cgroupsPath.
fn cri_unit(cri: &CriContainerd, id: &str) -> (String, String) {
    let path = cri.container_info(id)["runtimeSpec"]["linux"]["cgroupsPath"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut parts = path.splitn(3, ':');
    let (slice, prefix, name) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    assert!(
        slice.ends_with(".slice") && !name.is_empty(),
        "container {id}'s cgroupsPath {path:?} is not slice:prefix:name"
    );
    let unit = format!("{prefix}-{name}.scope");
    // systemd's slice nesting: a-b.slice lives in a.slice.
    let mut dir = String::new();
    let stem = slice.trim_end_matches(".slice");
    let mut acc = String::new();
    for part in stem.split('-') {
        if !acc.is_empty() {
            acc.push('-');
        }
        acc.push_str(part);
        dir.push_str(&format!("/{acc}.slice"));
    }
    (unit.clone(), format!("{dir}/{unit}"))
}

fn cri_scenario(cri: &CriContainerd, handler: &str) -> CriObservation {
    let mut config = cri.pod_config(&format!("sd-{handler}"));
    let slice = format!("rsv2pods-{handler}{}.slice", std::process::id());
    config.linux.as_mut().expect("linux").cgroup_parent = slice.clone();
    let id = cri.must(
        "RunPodSandbox",
        cri.try_run_pod_with_handler(&config, handler),
    );
    let pod = Pod { id, config };

    let mut c = cri.container_config("app", &["sleep", "1000"]);
    c.linux.get_or_insert_with(Default::default).resources = Some(LinuxContainerResources {
        memory_limit_in_bytes: 128 << 20,
        cpu_shares: 256,
        ..Default::default()
    });
    let app = cri.run_container(&pod, &c);
    let (unit, dir) = cri_unit(cri, &app);
    let props = unit_props(&unit);
    let files = cgroup_files(&dir);
    let pid = cri.container_pid(&app);
    let in_unit = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .trim()
        == format!("0::{dir}");

    let exec = cri.exec_sync(
        &app,
        &["sh", "-c", "echo hello from $(cat /proc/self/cgroup)"],
    );
    let exec_stdout = String::from_utf8_lossy(&exec.stdout)
        .trim()
        .replace(&dir, "DIR")
        .replace(&app, "ID");
    let exec_exit = exec.exit_code;

    let stats = cri.must("ContainerStats", cri.try_container_stats(&app));
    let stats_nonzero = stats
        .memory
        .and_then(|m| m.working_set_bytes)
        .is_some_and(|v| v.value > 0)
        && stats.cpu.is_some();

    cri.must(
        "UpdateContainerResources",
        cri.try_update_resources(
            &app,
            LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                cpu_period: 100_000,
                cpu_quota: 20_000,
                cpu_shares: 512,
                ..Default::default()
            },
        ),
    );
    let updated_props = unit_props(&unit);
    let updated_files = cgroup_files(&dir);

    // A container past its memory limit: the kernel's OOM kill, reported.
    let mut hog = cri.container_config(
        "hog",
        &[
            "sh",
            "-c",
            "x=0123456789abcdef; while true; do x=$x$x; done",
        ],
    );
    hog.linux.get_or_insert_with(Default::default).resources = Some(LinuxContainerResources {
        memory_limit_in_bytes: 32 << 20,
        ..Default::default()
    });
    let hog = cri.run_container(&pod, &hog);
    let st = cri.wait_container_state(
        &hog,
        ContainerState::ContainerExited,
        Duration::from_secs(60),
    );

    cri.stop_pod(&pod.id);
    cri.remove_pod(&pod.id);
    // The kubelet removes a pod's slice after the pod; so does the test.
    wait_until(Duration::from_secs(10), || unit_gone(&unit));
    let _ = Command::new("systemctl").args(["stop", &slice]).status();
    let needle = format!("{handler}{}", std::process::id());
    let left_units = units_like(&needle)
        .into_iter()
        .chain(units_like(&app))
        .filter(|u| !unit_gone(u))
        .collect();
    // The slice names the handler; the rest must match.
    let norm = |v: Vec<(String, String)>| {
        v.into_iter()
            .map(|(k, x)| (k, x.replace(&slice, "SLICE")))
            .collect::<Vec<_>>()
    };
    let (props, updated_props) = (norm(props), norm(updated_props));
    CriObservation {
        props,
        files,
        in_unit,
        exec_stdout,
        exec_exit,
        stats_nonzero,
        updated_props,
        updated_files,
        oom_reason: st.reason,
        oom_exit: st.exit_code,
        left_units,
    }
}

/// A CRI pod with `SystemdCgroup = true` for both handlers and a slice as
/// its cgroup parent, as the kubelet's systemd driver makes: the container
/// is a delegated `cri-containerd-ID.scope` in the pod's slice with the
/// resources as properties and files; ExecSync runs in it; stats come from
/// it; UpdateContainerResources changes both the unit and the files; a
/// container past its memory limit is OOMKilled; after the pod's removal
/// no unit is left. The same under handler `runc`.
#[test]
fn systemd_cri_pod_matches_runc() {
    require_systemd_v2();
    let mut toml = String::new();
    for rt in ["runc", "rust"] {
        toml.push_str(&format!("\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{rt}.options]\n  SystemdCgroup = true\n"));
    }
    let cri = CriContainerd::start_with(CriOptions {
        extra_toml: toml,
        files: Vec::new(),
    });
    let runc = cri_scenario(&cri, "runc");
    let rust = cri_scenario(&cri, "rust");
    println!("runc: {runc:#?}\nrust: {rust:#?}");
    let get = |v: &[(String, String)], k: &str| {
        v.iter()
            .find(|(p, _)| p == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(get(&rust.props, "ActiveState"), "active");
    assert_eq!(get(&rust.props, "Delegate"), "yes");
    assert_eq!(get(&rust.props, "MemoryMax"), "134217728");
    assert_eq!(get(&rust.files, "memory.max"), "134217728");
    assert!(rust.in_unit, "our container's init is not in its unit");
    assert_eq!(rust.exec_exit, 0);
    assert!(
        rust.exec_stdout.starts_with("hello from 0::"),
        "{}",
        rust.exec_stdout
    );
    assert!(rust.stats_nonzero, "ContainerStats has no memory or cpu");
    assert_eq!(get(&rust.updated_props, "MemoryMax"), "67108864");
    assert_eq!(get(&rust.updated_props, "CPUQuotaPerSecUSec"), "200ms");
    assert_eq!(get(&rust.updated_files, "memory.max"), "67108864");
    assert_eq!(get(&rust.updated_files, "cpu.max"), "20000 100000");
    assert_eq!(
        (rust.oom_reason.as_str(), rust.oom_exit),
        ("OOMKilled", 137)
    );
    assert!(
        rust.left_units.is_empty(),
        "units left after the pod: {:?}",
        rust.left_units
    );
    assert_eq!(get(&rust.props, "DevicePolicy"), "strict");
    let (mut rust, mut runc) = (rust, runc);
    by_design(&mut rust.props, &rust.files, &mut runc.props, &runc.files);
    by_design(
        &mut rust.updated_props,
        &rust.updated_files,
        &mut runc.updated_props,
        &runc.updated_files,
    );
    assert_eq!(
        rust, runc,
        "our shim and runc's differ (left: ours, right: runc's)"
    );
}

/// What one runtime made of a container under the systemd driver on a
/// hybrid host (systemd.unified_cgroup_hierarchy=0: v1 controllers, and
/// systemd's own tree in cgroup v2 at /sys/fs/cgroup/unified).
#[derive(Debug, PartialEq)]
struct HybridObservation {
    props: Vec<(String, String)>,
    /// (controller file, value) in the unit's v1 directories.
    files: Vec<(String, String)>,
    /// The init's /proc/PID/cgroup lines for these hierarchies.
    proc_cgroup: Vec<String>,
    exec_in_unit: bool,
    frozen_when_paused: String,
    left_units: Vec<String>,
    left_dirs: Vec<String>,
}

const HYBRID_PROPS: &[&str] = &["ActiveState", "Slice", "Delegate", "MemoryLimit", "CPUShares", "TasksMax", "DevicePolicy"];
const HYBRID_FILES: &[(&str, &str)] = &[
    ("memory", "memory.limit_in_bytes"),
    ("cpu,cpuacct", "cpu.shares"),
    ("cpu,cpuacct", "cpu.cfs_quota_us"),
    ("pids", "pids.max"),
    ("cpuset", "cpuset.cpus"),
];

fn require_systemd_hybrid() {
    let comm = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
    assert_eq!(comm.trim(), "systemd", "this test runs on a systemd host (the node VM), PID 1 is {comm:?}");
    assert!(
        !std::path::Path::new(CG).join("cgroup.controllers").is_file() && std::path::Path::new(CG).join("memory").is_dir(),
        "{CG} is not a hybrid (v1) cgroup layout: boot with systemd.unified_cgroup_hierarchy=0"
    );
}

fn hybrid_scenario(ctd: &PrivateContainerd, runtime: &str, name: &str) -> HybridObservation {
    let id = ctd.unique_id(name);
    let unit = format!("rsv2-{id}.scope");
    let path_arg = format!("system.slice:rsv2:{id}");
    let mut spec = ctd.default_spec(&id, &["/bin/sh", "-c", "sleep 1000 & sleep 1000"]);
    spec["linux"]["cgroupsPath"] = path_arg.clone().into();
    spec["linux"]["resources"]["memory"] = serde_json::json!({ "limit": 64u64 << 20 });
    spec["linux"]["resources"]["cpu"] = serde_json::json!({ "shares": 512, "quota": 50000, "period": 100000, "cpus": "0" });
    spec["linux"]["resources"]["pids"] = serde_json::json!({ "limit": 100 });
    let path = ctd.write_spec(&id, &spec);
    let mut flags: Vec<&str> = Vec::new();
    if runtime == RUNC_RUNTIME {
        flags.extend(["--runc-systemd-cgroup", "--cgroup", &path_arg]);
    }
    let task = ctd.run_config(&id, path).runtime(runtime).flags(&flags).detach();
    let dir = format!("system.slice/{unit}");
    let props = HYBRID_PROPS.iter().map(|p| (p.to_string(), unit_prop(&unit, p))).collect();
    let files = HYBRID_FILES
        .iter()
        .map(|(c, f)| (format!("{c}/{f}"), std::fs::read_to_string(format!("{CG}/{c}/{dir}/{f}")).unwrap_or_else(|e| format!("({e})")).trim().to_string()))
        .collect();
    let wanted = ["memory", "pids", "name=systemd", "freezer"];
    let proc_cgroup: Vec<String> = std::fs::read_to_string(format!("/proc/{}/cgroup", task.pid))
        .unwrap_or_default()
        .lines()
        .filter(|l| wanted.iter().any(|w| l.split(':').nth(1) == Some(*w)))
        .map(|l| l.split_once(':').map(|x| x.1).unwrap_or(l).replace(&id, "ID"))
        .collect();
    let exec = ctd.ctr(&["task", "exec", "--exec-id", "cg", &id, "/bin/cat", "/proc/self/cgroup"]);
    let exec_in_unit = String::from_utf8_lossy(&exec.stdout).lines().any(|l| l.contains("memory:") && l.ends_with(&format!("/{dir}")));
    ctd.ctr_ok(&["task", "pause", &id]);
    let frozen_when_paused = std::fs::read_to_string(format!("{CG}/freezer/{dir}/freezer.state")).unwrap_or_default().trim().to_string();
    ctd.ctr_ok(&["task", "resume", &id]);
    ctd.ctr_ok(&["task", "kill", "-s", "SIGKILL", "--all", &id]);
    ctd.wait_for_status(&id, "STOPPED", Duration::from_secs(30));
    ctd.remove(&id);
    wait_until(Duration::from_secs(10), || unit_gone(&unit));
    let left_units = units_like(&id).into_iter().filter(|u| !unit_gone(u)).collect();
    let left_dirs = ["memory", "pids", "cpu,cpuacct", "cpuset", "freezer", "devices", "systemd", "unified"]
        .iter()
        .filter(|c| std::path::Path::new(&format!("{CG}/{c}/{dir}")).exists())
        .map(|c| c.to_string())
        .collect();
    HybridObservation { props, files, proc_cgroup, exec_in_unit, frozen_when_paused, left_units, left_dirs }
}

/// The systemd driver on a hybrid host (the node VM booted with
/// systemd.unified_cgroup_hierarchy=0): `ctr run` with a
/// `system.slice:rsv2:ID` path makes the scope with the v1 properties
/// (MemoryLimit, CPUShares, TasksMax), the resources land in the v1
/// files of every hierarchy (systemd's and ours), the init and an exec
/// are in the unit, pause freezes it, and after delete no unit and no
/// directory is left in any hierarchy; the same under runc's shim.
#[test]
fn systemd_hybrid_ctr_scope_matches_runc() {
    require_systemd_hybrid();
    let ctd = PrivateContainerd::start();
    let runc = hybrid_scenario(&ctd, RUNC_RUNTIME, "sdh-runc");
    let rust = hybrid_scenario(&ctd, RUST_RUNTIME, "sdh-rust");
    println!("runc: {runc:#?}\nrust: {rust:#?}");
    let get = |v: &[(String, String)], k: &str| v.iter().find(|(p, _)| p == k).map(|(_, v)| v.clone()).unwrap_or_default();
    assert_eq!(get(&rust.props, "ActiveState"), "active");
    assert_eq!(get(&rust.props, "MemoryLimit"), "67108864");
    assert_eq!(get(&rust.files, "memory/memory.limit_in_bytes"), "67108864");
    assert_eq!(get(&rust.files, "pids/pids.max"), "100");
    assert_eq!(get(&rust.files, "cpu,cpuacct/cpu.cfs_quota_us"), "50000");
    assert!(rust.exec_in_unit, "our exec is not in the unit's memory cgroup");
    assert_eq!(rust.frozen_when_paused, "FROZEN");
    assert!(rust.left_units.is_empty() && rust.left_dirs.is_empty(), "left after delete: units {:?}, directories in {:?}", rust.left_units, rust.left_dirs);
    assert_eq!(rust, runc, "our shim and runc's differ (left: ours, right: runc's)");
    ctd.finish();
}
