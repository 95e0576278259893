//! The Kubernetes path: pods and containers through containerd 1.6's CRI
//! plugin (API v1), with the runtime handler `rust` (our shim), or `runc`
//! when `IT_RUNTIME=io.containerd.runc.v2` checks the expectations. Each test
//! has its own containerd, CNI bridge and /24, and pause and busybox images
//! imported from OCI layout tarballs (`integration_tests::image`).
//!
//! ```sh
//! cargo build -p containerd-shim-rust-v2
//! cargo test -p integration-tests --test cri
//! IT_RUNTIME=io.containerd.runc.v2 cargo test -p integration-tests --test cri
//! ```
//! Needs, besides the harness's own prerequisites: the CNI plugins
//! (`containernetworking-plugins`, installed with apt when missing) and the
//! static pause binary (`tests/pause`, built into `target/pause` when
//! `PAUSE_BIN` is not set).
//!
//! Facts about containerd 1.6.20's CRI plugin these tests rely on, checked
//! against runc:
//! - one shim serves a pod: every container of it carries the annotation
//!   `io.kubernetes.cri.sandbox-id`, and the shim's `start` returns the
//!   address of the shim already serving that group;
//! - the rootfs comes as overlay mounts in the Create request (not a ready
//!   `rootfs` directory as with `ctr run --rootfs`);
//! - the verbose `info` of ContainerStatus/PodSandboxStatus holds the host
//!   `pid`, the generated `runtimeSpec` and the `runtimeOptions` sent;
//! - a pod's containers get `cgroupsPath = <cgroup_parent>/<container id>`
//!   (cgroupfs driver) and join the pause process's namespaces through
//!   `/proc/<pause pid>/ns/*`; the pause container gets the netns file;
//! - the spec carries only a deny-all device rule; masked and read-only
//!   paths come from the kubelet (empty here); no seccomp unless asked for;
//! - `started_at` is taken after Start returned and `finished_at` from the
//!   exit event, so a short-lived container may finish "before" it started;
//! - the streaming server (Exec/Attach URLs, `http://127.0.0.1:<port>/...`)
//!   speaks the kubelet's remotecommand protocol over websocket too, with
//!   the `v4.channel.k8s.io` subprotocol.

use std::time::{Duration, Instant};

use integration_tests::check::{REACT};
use integration_tests::cri::{
    self, ContainerConfig, ContainerState, CriContainerd, CriOptions, LinuxContainerResources,
    NamespaceMode, Pod, PodSandboxState,
};
use integration_tests::host;
use integration_tests::wait_until;
use k8s_cri::v1::{LinuxContainerSecurityContext, NamespaceOption};


/// `sleep 1000` from the busybox image.
fn sleeper(cri: &CriContainerd, name: &str) -> ContainerConfig {
    cri.container_config(name, &["sleep", "1000"])
}

/// Waits until the container's CRI log contains `needle`; returns the log.
fn wait_for_log(cri: &CriContainerd, pod: &Pod, config: &ContainerConfig, needle: &str) -> String {
    let path = cri.log_path(pod, config);
    let mut log = String::new();
    let found = wait_until(REACT, || {
        log = cri::read_file(&path);
        log.contains(needle)
    });
    assert!(
        found,
        "{:?} not in {} within {REACT:?}:\n{log}\n{}",
        needle,
        path.display(),
        cri.log_tail(30)
    );
    log
}

/// The message lines of a CRI log (`<time> <stream> <tag> <message>`) of
/// `stream`, checking the format of every line on the way.
fn log_messages(log: &str, stream: &str) -> Vec<String> {
    log.lines()
        .map(|line| {
            let parts: Vec<&str> = line.splitn(4, ' ').collect();
            assert!(
                parts.len() >= 3,
                "not a CRI log line: {line:?}\nwhole log:\n{log}"
            );
            assert_rfc3339_nano(parts[0], line);
            assert!(
                parts[1] == "stdout" || parts[1] == "stderr",
                "bad stream in CRI log line {line:?}"
            );
            assert!(
                parts[2] == "F" || parts[2] == "P",
                "bad tag in CRI log line {line:?}"
            );
            (parts[1], parts.get(3).copied().unwrap_or("").to_string())
        })
        .filter(|(s, _)| *s == stream)
        .map(|(_, m)| m)
        .collect()
}

/// `2024-01-02T03:04:05.123456789Z` or with a `+hh:mm` offset.
fn assert_rfc3339_nano(ts: &str, line: &str) {
    let b = ts.as_bytes();
    let ok = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && ts[..4].chars().all(|c| c.is_ascii_digit())
        && (ts.ends_with('Z') || ts[ts.len() - 6..].starts_with(['+', '-']));
    assert!(
        ok,
        "timestamp {ts:?} of CRI log line {line:?} is not RFC 3339"
    );
}

/// Stops and removes the containers, then the pod, and asserts the pod left
/// nothing on the host.
fn tear_down(cri: &CriContainerd, pod: &Pod, containers: &[&str]) {
    for id in containers {
        cri.stop_container(id, 0);
        cri.remove_container(id);
    }
    cri.stop_pod(&pod.id);
    cri.remove_pod(&pod.id);
    cri.assert_pod_gone(pod);
    assert!(
        cri.list_containers().is_empty(),
        "containers left: {:?}",
        cri.list_containers()
    );
    assert!(
        cri.list_pods().is_empty(),
        "pods left: {:?}",
        cri.list_pods()
    );
}

fn ns(pid: u32, kind: &str) -> String {
    host::namespace(&pid.to_string(), kind)
}

/// One shim serves the sandbox and both containers, which are its
/// children; the containers join the pause container's net, ipc, uts and
/// (with `pid = POD`) pid namespaces but have their own mount namespace.
#[test]
fn pod_is_served_by_one_shim_and_shares_namespaces() {
    let cri = CriContainerd::start();
    let pod = cri.run_pod(cri.pod_config("shared"));
    assert_eq!(
        cri.pod_status(&pod.id).state,
        PodSandboxState::SandboxReady as i32
    );
    let c1 = cri.run_container(&pod, &sleeper(&cri, "one"));
    let c2 = cri.run_container(&pod, &sleeper(&cri, "two"));
    cri.wait_container_state(&c1, ContainerState::ContainerRunning, REACT);
    cri.wait_container_state(&c2, ContainerState::ContainerRunning, REACT);

    let shims = cri.shim_servers();
    assert_eq!(
        shims.len(),
        1,
        "expected one shim for the pod, found:\n{}",
        shims
            .iter()
            .map(|p| format!("  {}: {}", p.pid, p.command()))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let shim = &shims[0];
    assert_eq!(
        shim.flag("-id"),
        Some(pod.id.as_str()),
        "the shim is named after the sandbox: {}",
        shim.command()
    );
    if cri.handler() == "rust" {
        assert!(
            shim.cmdline.iter().any(|a| a == "serve"),
            "our shim's server runs as `serve`: {}",
            shim.command()
        );
    }

    let pause = cri.pod_pid(&pod.id);
    let p1 = cri.container_pid(&c1);
    let p2 = cri.container_pid(&c2);
    for (what, pid) in [
        ("pause", pause),
        ("container one", p1),
        ("container two", p2),
    ] {
        assert_eq!(
            host::ppid(pid),
            Some(shim.pid),
            "{what} (pid {pid}: {:?}) is not a child of the shim {}",
            host::process(pid).map(|p| p.command()),
            shim.pid
        );
    }
    assert!(
        host::process(pause).is_some_and(|p| p.cmdline[0] == "/pause"),
        "the sandbox runs the pause image's /pause: {:?}",
        host::process(pause)
    );

    for kind in ["net", "ipc", "uts", "pid"] {
        let want = ns(pause, kind);
        assert_eq!(
            ns(p1, kind),
            want,
            "container one's {kind} namespace is not the pod's"
        );
        assert_eq!(
            ns(p2, kind),
            want,
            "container two's {kind} namespace is not the pod's"
        );
        if kind != "pid" {
            assert_ne!(
                want,
                ns(std::process::id(), kind),
                "the pod's {kind} namespace is the test's"
            );
        }
    }
    let me = std::process::id();
    assert_ne!(
        ns(pause, "pid"),
        ns(me, "pid"),
        "the pod's pid namespace is the test's"
    );
    let mnt = [
        ns(pause, "mnt"),
        ns(p1, "mnt"),
        ns(p2, "mnt"),
        ns(me, "mnt"),
    ];
    for i in 0..mnt.len() {
        for j in i + 1..mnt.len() {
            assert_ne!(mnt[i], mnt[j], "mount namespaces must all differ: {mnt:?}");
        }
    }
    // In the shared pid namespace the pause process is PID 1.
    let ps = cri.exec_sync(&c1, &["cat", "/proc/1/cmdline"]);
    assert_eq!(ps.exit_code, 0, "{ps:?}");
    assert_eq!(
        String::from_utf8_lossy(&ps.stdout).trim_end_matches('\0'),
        "/pause"
    );

    tear_down(&cri, &pod, &[&c1, &c2]);
}

/// With `pid = CONTAINER` every container gets its own pid namespace, in
/// which it is PID 1, while still sharing the pod's network.
#[test]
fn container_pid_namespace_when_requested() {
    let cri = CriContainerd::start();
    let mut config = cri.pod_config("pidns");
    config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
        .expect("namespace options")
        .pid = NamespaceMode::Container as i32;
    let pod = cri.run_pod(config);
    // The kubelet repeats the pod's namespace options in each container's
    // security context; containerd reads the container's.
    let own_pidns = |name: &str| {
        let mut config = sleeper(&cri, name);
        config.linux.as_mut().expect("linux").security_context =
            Some(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            });
        config
    };
    let c1 = cri.run_container(&pod, &own_pidns("one"));
    let c2 = cri.run_container(&pod, &own_pidns("two"));
    let (pause, p1, p2) = (
        cri.pod_pid(&pod.id),
        cri.container_pid(&c1),
        cri.container_pid(&c2),
    );
    let pidns = [ns(pause, "pid"), ns(p1, "pid"), ns(p2, "pid")];
    assert!(
        pidns[0] != pidns[1] && pidns[0] != pidns[2] && pidns[1] != pidns[2],
        "pid namespaces must differ: {pidns:?}"
    );
    assert_eq!(ns(p1, "net"), ns(pause, "net"));
    let out = cri.exec_sync(&c1, &["cat", "/proc/1/cmdline"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .replace('\0', " ")
            .trim(),
        "sleep 1000",
        "{out:?}"
    );
    tear_down(&cri, &pod, &[&c1, &c2]);
}

/// The pod gets an address from the CNI network; its containers see it on
/// eth0 (through their own output and through ExecSync), `lo` is up, and
/// the hostname is the pod's.
#[test]
fn pod_network_and_hostname() {
    let cri = CriContainerd::start();
    let pod = cri.run_pod(cri.pod_config("net"));
    let ip = cri.pod_ip(&pod.id);
    assert!(
        cri.cni().contains(&ip),
        "pod IP {ip:?} is not in the instance's subnet {}\n{}",
        cri.cni().subnet(),
        cri.log_tail(30)
    );
    assert_eq!(
        cri.cni().allocated_ips(),
        vec![ip.clone()],
        "host-local's allocations"
    );

    let config = cri.container_config(
        "net",
        &["sh", "-c", "ip -4 addr show dev eth0; ip link show dev lo; echo host=$(hostname); echo done; sleep 1000"],
    );
    let c = cri.run_container(&pod, &config);
    let log = wait_for_log(&cri, &pod, &config, "done");
    let stdout = log_messages(&log, "stdout").join("\n");
    assert!(
        stdout.contains(&format!("inet {ip}/24")),
        "eth0 of the container lacks {ip}/24:\n{stdout}"
    );
    assert!(stdout.contains("LOOPBACK,UP"), "lo is not up:\n{stdout}");
    let hostname = &pod.config.hostname;
    assert!(
        stdout.contains(&format!("host={hostname}")),
        "hostname is not {hostname}:\n{stdout}"
    );

    let out = cri.exec_sync(&c, &["ip", "-4", "addr", "show", "dev", "eth0"]);
    assert_eq!(out.exit_code, 0, "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("inet {ip}/24")),
        "ExecSync ip addr: {text}"
    );
    let fib = cri.exec_sync(&c, &["cat", "/proc/net/fib_trie"]);
    assert!(
        String::from_utf8_lossy(&fib.stdout).contains(&ip),
        "{fib:?}"
    );

    tear_down(&cri, &pod, &[&c]);
    assert!(
        cri.cni().allocated_ips().is_empty(),
        "IP not released: {:?}",
        cri.cni().allocated_ips()
    );
}

/// ExecSync: stdout, stderr and the exit code; a missing binary is an
/// error naming it; the timeout ends a command that runs too long.
#[test]
fn exec_sync() {
    let cri = CriContainerd::start();
    let pod = cri.run_pod(cri.pod_config("exec"));
    let c = cri.run_container(&pod, &sleeper(&cri, "exec"));

    let out = cri.exec_sync(&c, &["sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(out.exit_code, 3, "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    let out = cri.exec_sync(&c, &["true"]);
    assert_eq!(
        (out.exit_code, out.stdout.len(), out.stderr.len()),
        (0, 0, 0),
        "{out:?}"
    );

    // The exec runs in the container: same pid namespace, same root.
    let out = cri.exec_sync(
        &c,
        &[
            "sh",
            "-c",
            "cat /proc/$$/root/etc/passwd | head -1; readlink /proc/1/exe",
        ],
    );
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("root:x:0:0:"),
        "{out:?}"
    );

    let started = Instant::now();
    let result = cri.try_exec_sync(&c, &["sleep", "30"], 1);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "ExecSync with a 1 s timeout took {:?}: {result:?}",
        started.elapsed()
    );
    assert!(
        result.is_err(),
        "ExecSync past its timeout must fail: {result:?}"
    );
    // The timed-out exec was killed: only `sleep 1000` remains.
    let gone = wait_until(REACT, || {
        let out = cri.exec_sync(
            &c,
            &["sh", "-c", "ps -o args | grep -c '^sleep 30' || true"],
        );
        String::from_utf8_lossy(&out.stdout).trim() == "0"
    });
    assert!(
        gone,
        "the timed-out exec process still runs\n{}",
        cri.log_tail(30)
    );

    tear_down(&cri, &pod, &[&c]);
}

/// ExecSync of a binary that does not exist (absolute, or looked up in
/// PATH) fails promptly with a message naming it, and the container goes on.
#[test]
fn exec_sync_missing_binary() {
    let cri = CriContainerd::start();
    let pod = cri.run_pod(cri.pod_config("execmiss"));
    let c = cri.run_container(&pod, &sleeper(&cri, "exec"));
    for cmd in ["/no/such/bin", "no-such-command"] {
        let started = Instant::now();
        match cri.try_exec_sync(&c, &[cmd], 10) {
            Ok(out) => assert!(
                out.exit_code != 0 && String::from_utf8_lossy(&out.stderr).contains(cmd),
                "exec of a missing {cmd}: {out:?}"
            ),
            Err(e) => assert!(
                e.message().contains(cmd),
                "exec of a missing {cmd}: {e:?}\n{}",
                cri.log_tail(20)
            ),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "exec of a missing {cmd} took {:?}",
            started.elapsed()
        );
    }
    let out = cri.exec_sync(&c, &["echo", "still here"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "still here\n",
        "{out:?}"
    );
    tear_down(&cri, &pod, &[&c]);
}

/// ContainerStatus through CREATED, RUNNING and EXITED with the exit code
/// and reason; ContainerStats with memory and cpu usage.
#[test]
fn container_status_and_stats() {
    let cri = CriContainerd::start();
    let pod = cri.run_pod(cri.pod_config("status"));

    let busy = cri.container_config(
        "busy",
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; echo spun; sleep 1000",
        ],
    );
    let c = cri.create_container(&pod, &busy);
    let st = cri.container_status(&c);
    assert_eq!(st.state, ContainerState::ContainerCreated as i32, "{st:?}");
    assert!(st.created_at > 0 && st.started_at == 0, "{st:?}");
    cri.start_container(&c);
    let st = cri.wait_container_state(&c, ContainerState::ContainerRunning, REACT);
    assert!(st.started_at >= st.created_at, "{st:?}");
    assert_eq!(st.metadata.as_ref().map(|m| m.name.as_str()), Some("busy"));
    wait_for_log(&cri, &pod, &busy, "spun");

    let stats = cri.must("ContainerStats", cri.try_container_stats(&c));
    let mem = stats.memory.as_ref().expect("memory stats");
    let working_set = mem.working_set_bytes.as_ref().map_or(0, |v| v.value);
    let usage = mem.usage_bytes.as_ref().map_or(0, |v| v.value);
    assert!(working_set > 0, "memory working set is 0: {stats:?}");
    assert!(usage > 0, "memory usage is 0: {stats:?}");
    let cpu = stats.cpu.as_ref().expect("cpu stats");
    assert!(
        cpu.usage_core_nano_seconds.as_ref().map_or(0, |v| v.value) > 0,
        "cpu usage is 0 after a busy loop: {stats:?}"
    );
    assert_eq!(
        stats.attributes.as_ref().map(|a| a.id.as_str()),
        Some(c.as_str())
    );

    // Exits: code and reason.
    let fails = cri.container_config("fails", &["sh", "-c", "exit 7"]);
    let f = cri.run_container(&pod, &fails);
    let st = cri.wait_container_state(&f, ContainerState::ContainerExited, REACT);
    assert_eq!((st.exit_code, st.reason.as_str()), (7, "Error"), "{st:?}");
    // Both set; not ordered: CRI takes started_at after Start returned, and
    // finished_at from the exit event, so a short-lived process may finish
    // "before" it started (runc too).
    assert!(st.finished_at > 0 && st.started_at > 0, "{st:?}");
    let ok = cri.container_config("ok", &["true"]);
    let o = cri.run_container(&pod, &ok);
    let st = cri.wait_container_state(&o, ContainerState::ContainerExited, REACT);
    assert_eq!(
        (st.exit_code, st.reason.as_str()),
        (0, "Completed"),
        "{st:?}"
    );
    let killed = cri.container_config("killed", &["sh", "-c", "kill -9 $$"]);
    let k = cri.run_container(&pod, &killed);
    let st = cri.wait_container_state(&k, ContainerState::ContainerExited, REACT);
    assert_eq!(st.exit_code, 137, "{st:?}");

    tear_down(&cri, &pod, &[&c, &f, &o, &k]);
}

fn cgroup_value(controller: &str, rel: &str, file: &str) -> String {
    host::cgroup_file(controller, rel, file)
}

/// Resources from the ContainerConfig reach the host cgroup, and
/// UpdateContainerResources changes them on a running container.
#[test]
fn update_container_resources() {
    let cri = CriContainerd::start();
    let pod = cri.run_pod(cri.pod_config("update"));
    let mut config = sleeper(&cri, "update");
    config.linux.as_mut().expect("linux").resources = Some(LinuxContainerResources {
        memory_limit_in_bytes: 128 << 20,
        cpu_shares: 256,
        ..Default::default()
    });
    let c = cri.run_container(&pod, &config);
    let pid = cri.container_pid(&c);

    let rel = cri.container_cgroup(&c);
    assert!(
        rel.starts_with(&cri.pod_cgroup(&pod)),
        "container cgroup {rel} is not below the pod's cgroup parent {}",
        cri.pod_cgroup(&pod)
    );
    // The container's process is in that cgroup.
    let proc_cgroup =
        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("read /proc/pid/cgroup");
    let memory_line = proc_cgroup
        .lines()
        .find(|l| {
            l.split(':')
                .nth(1)
                .is_some_and(|c| c.split(',').any(|c| c == "memory"))
        })
        .unwrap_or_else(|| panic!("no memory line in /proc/{pid}/cgroup:\n{proc_cgroup}"));
    assert_eq!(
        memory_line.split(':').nth(2),
        Some(format!("/{rel}").as_str()),
        "{proc_cgroup}"
    );

    assert_eq!(
        cgroup_value("memory", &rel, "memory.limit_in_bytes"),
        (128u64 << 20).to_string()
    );
    assert_eq!(cgroup_value("cpu", &rel, "cpu.shares"), "256");

    let update = LinuxContainerResources {
        memory_limit_in_bytes: 64 << 20,
        cpu_period: 100_000,
        cpu_quota: 20_000,
        cpu_shares: 512,
        ..Default::default()
    };
    cri.must(
        "UpdateContainerResources",
        cri.try_update_resources(&c, update),
    );
    assert_eq!(
        cgroup_value("memory", &rel, "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(cgroup_value("cpu", &rel, "cpu.cfs_period_us"), "100000");
    assert_eq!(cgroup_value("cpu", &rel, "cpu.cfs_quota_us"), "20000");
    assert_eq!(cgroup_value("cpu", &rel, "cpu.shares"), "512");
    // containerd keeps the new resources in the container's spec.
    let spec = &cri.container_info(&c)["runtimeSpec"]["linux"]["resources"];
    assert_eq!(spec["memory"]["limit"], 64 << 20, "{spec}");
    assert_eq!(spec["cpu"]["quota"], 20_000, "{spec}");

    tear_down(&cri, &pod, &[&c]);
}

/// StopContainer: a container that handles SIGTERM stops through it within
/// the timeout; one whose PID 1 ignores SIGTERM is SIGKILLed once the
/// timeout passed.
#[test]
fn stop_container_term_then_kill() {
    let cri = CriContainerd::start();
    let pod = cri.run_pod(cri.pod_config("stop"));

    let polite = cri.container_config(
        "polite",
        &[
            "sh",
            "-c",
            "trap 'echo got-TERM; exit 0' TERM; echo ready; while true; do sleep 0.1; done",
        ],
    );
    let p = cri.run_container(&pod, &polite);
    wait_for_log(&cri, &pod, &polite, "ready");
    let started = Instant::now();
    cri.stop_container(&p, 10);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "a container handling SIGTERM took {took:?} to stop"
    );
    let st = cri.wait_container_state(&p, ContainerState::ContainerExited, REACT);
    assert_eq!(st.exit_code, 0, "{st:?}");
    wait_for_log(&cri, &pod, &polite, "got-TERM");

    let stubborn = cri.container_config(
        "stubborn",
        &["sh", "-c", "trap '' TERM; echo ready; sleep 1000"],
    );
    let s = cri.run_container(&pod, &stubborn);
    wait_for_log(&cri, &pod, &stubborn, "ready");
    let started = Instant::now();
    cri.stop_container(&s, 2);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "a container ignoring SIGTERM stopped after {took:?}, not after the 2 s timeout"
    );
    let st = cri.wait_container_state(&s, ContainerState::ContainerExited, REACT);
    assert_eq!(st.exit_code, 137, "SIGKILL is exit code 137: {st:?}");

    tear_down(&cri, &pod, &[&p, &s]);
}

/// StopPodSandbox with containers still running stops them all; after
/// RemovePodSandbox nothing of the pod is left: no shim, process, mount,
/// network namespace, veth, IP or cgroup.
#[test]
fn stop_and_remove_pod_with_running_containers() {
    let cri = CriContainerd::start();
    let pod = cri.run_pod(cri.pod_config("remove"));
    let c1 = cri.run_container(&pod, &sleeper(&cri, "one"));
    let c2 = cri.run_container(
        &pod,
        &cri.container_config("two", &["sh", "-c", "sleep 1000 & sleep 1000 & wait"]),
    );
    cri.wait_container_state(&c2, ContainerState::ContainerRunning, REACT);
    let netns = cri
        .pod_netns(&pod.id)
        .expect("the pod has a network namespace path");
    assert!(
        netns.exists(),
        "{} missing while the pod runs",
        netns.display()
    );
    assert!(!cri.shim_servers().is_empty());

    cri.stop_pod(&pod.id);
    assert_eq!(
        cri.pod_status(&pod.id).state,
        PodSandboxState::SandboxNotready as i32
    );
    for c in [&c1, &c2] {
        let st = cri.container_status(c);
        assert_eq!(st.state, ContainerState::ContainerExited as i32, "{st:?}");
    }
    cri.remove_pod(&pod.id);
    assert!(
        cri.list_containers().is_empty(),
        "containers left: {:?}",
        cri.list_containers()
    );
    assert!(
        cri.list_pods().is_empty(),
        "pods left: {:?}",
        cri.list_pods()
    );
    cri.assert_pod_gone(&pod);
    assert!(!netns.exists(), "{} left", netns.display());
    assert!(
        host::cgroup_dirs(&cri.pod_cgroup(&pod))
            .iter()
            .all(|d| host::dirs_deepest_first(d).len() == 1),
        "container cgroups left below {}",
        cri.pod_cgroup(&pod)
    );
}

/// Container output lands in `<log_directory>/<log_path>` in the CRI format
/// `<RFC 3339 nano> <stream> <F|P> <line>`.
#[test]
fn container_logs_in_cri_format() {
    let cri = CriContainerd::start();
    let pod = cri.run_pod(cri.pod_config("logs"));
    let config = cri.container_config(
        "logs",
        &[
            "sh",
            "-c",
            "echo out-1; echo err-1 >&2; echo out-2; printf 'no newline'",
        ],
    );
    let c = cri.run_container(&pod, &config);
    cri.wait_container_state(&c, ContainerState::ContainerExited, REACT);
    let log = wait_for_log(&cri, &pod, &config, "no newline");
    let out = log_messages(&log, "stdout");
    let err = log_messages(&log, "stderr");
    assert_eq!(out[..2], ["out-1", "out-2"], "stdout lines:\n{log}");
    assert_eq!(
        out[2..],
        ["no newline"],
        "the last, unterminated line:\n{log}"
    );
    assert_eq!(err, ["err-1"], "stderr lines:\n{log}");
    for line in log
        .lines()
        .filter(|l| l.ends_with("out-1") || l.ends_with("err-1"))
    {
        assert!(line.contains(" F "), "a complete line is tagged F: {line}");
    }
    let st = cri.container_status(&c);
    assert_eq!(
        st.log_path,
        cri.log_path(&pod, &config).display().to_string()
    );
    tear_down(&cri, &pod, &[&c]);
}

/// A command that does not exist fails CreateContainer or StartContainer
/// with a message naming it, whether an absolute path or a name looked up
/// in PATH.
#[test]
fn missing_command_is_a_clear_error() {
    let cri = CriContainerd::start();
    let pod = cri.run_pod(cri.pod_config("missing"));
    let mut created = Vec::new();
    for cmd in ["/no/such/bin", "no-such-command"] {
        let config = cri.container_config(&format!("missing-{}", created.len()), &[cmd]);
        let err = match cri.try_create_container(&pod, &config) {
            Err(e) => e,
            Ok(id) => {
                created.push(id.clone());
                match cri.try_start_container(&id) {
                    Err(e) => e,
                    Ok(()) => panic!(
                        "container running {cmd} started\n{:?}",
                        cri.container_status(&id)
                    ),
                }
            }
        };
        assert!(
            err.message().contains(cmd),
            "the error for a missing {cmd} does not name it: {:?}: {}",
            err.code(),
            err.message()
        );
    }
    // Nothing keeps running; a good container still works in the pod.
    let good = cri.container_config("good", &["echo", "fine"]);
    let g = cri.run_container(&pod, &good);
    wait_for_log(&cri, &pod, &good, "fine");
    cri.wait_container_state(&g, ContainerState::ContainerExited, REACT);
    created.push(g);
    for id in &created {
        cri.remove_container(id);
    }
    tear_down(&cri, &pod, &[]);
}

/// Exec and Attach through containerd's streaming server, driven over
/// websocket (`v4.channel.k8s.io`): output per stream, the exit code in the
/// v4 status, and stdin reaching an attached container.
#[test]
fn exec_and_attach_streaming() {
    let cri = CriContainerd::start();
    let pod = cri.run_pod(cri.pod_config("stream"));
    let c = cri.run_container(&pod, &sleeper(&cri, "exec"));

    let url = cri.must(
        "Exec",
        cri.try_exec_url(k8s_cri::v1::ExecRequest {
            container_id: c.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "echo out; echo err >&2; exit 3".into(),
            ],
            stdout: true,
            stderr: true,
            ..Default::default()
        }),
    );
    assert!(url.starts_with("http://127.0.0.1:"), "exec URL {url}");
    let out = cri::stream(&url, None, REACT, |_| false)
        .unwrap_or_else(|e| panic!("{e}\n{}", cri.log_tail(30)));
    assert_eq!(out.protocol, "v4.channel.k8s.io");
    assert_eq!(out.stdout_str(), "out\n", "{out:?}");
    assert_eq!(out.stderr_str(), "err\n", "{out:?}");
    assert_eq!(out.exit_code(), Some(3), "{out:?}");

    // An exec with stdin: cat echoes what it reads.
    let url = cri.must(
        "Exec",
        cri.try_exec_url(k8s_cri::v1::ExecRequest {
            container_id: c.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "read line; echo \"read:$line\"".into(),
            ],
            stdin: true,
            stdout: true,
            ..Default::default()
        }),
    );
    let out = cri::stream(&url, Some(b"hello exec\n"), REACT, |_| false)
        .unwrap_or_else(|e| panic!("{e}\n{}", cri.log_tail(30)));
    assert_eq!(out.stdout_str(), "read:hello exec\n", "{out:?}");
    assert_eq!(out.exit_code(), Some(0), "{out:?}");

    // Attach to a container waiting on its stdin.
    let mut config = cri.container_config(
        "attach",
        &[
            "sh",
            "-c",
            "read line; echo \"got:$line\"; echo \"err:$line\" >&2",
        ],
    );
    config.stdin = true;
    config.stdin_once = true;
    let a = cri.run_container(&pod, &config);
    cri.wait_container_state(&a, ContainerState::ContainerRunning, REACT);
    let url = cri.must(
        "Attach",
        cri.try_attach_url(k8s_cri::v1::AttachRequest {
            container_id: a.clone(),
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        }),
    );
    let out = cri::stream(&url, Some(b"hello attach\n"), REACT, |o| {
        o.stdout_str().contains("got:") && o.stderr_str().contains("err:") && o.status.is_some()
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cri.log_tail(30)));
    assert_eq!(out.stdout_str(), "got:hello attach\n", "{out:?}");
    assert_eq!(out.stderr_str(), "err:hello attach\n", "{out:?}");
    let st = cri.wait_container_state(&a, ContainerState::ContainerExited, REACT);
    assert_eq!(st.exit_code, 0, "{st:?}");
    wait_for_log(&cri, &pod, &config, "got:hello attach");

    tear_down(&cri, &pod, &[&c, &a]);
}

/// containerd 1.6 sends the handler's `options` table to non-runc runtime
/// types as `runtimeoptions.v1.Options`, of which 1.6 fills only
/// `TypeUrl` and `ConfigPath` (keys such as `SystemdCgroup` are dropped;
/// 1.7 adds the table as `ConfigBody`), and to runc as runc's own options.
/// Pods and containers work with them.
#[test]
fn runtime_options_are_accepted() {
    let handler = cri::handler_under_test();
    let (options, files) = if handler == "runc" {
        ("  SystemdCgroup = false\n".to_string(), Vec::new())
    } else {
        (
            "  TypeUrl = \"io.containerd.rust.v2.options\"\n  ConfigPath = \"{work}/rust-options.toml\"\n  SystemdCgroup = false\n"
                .to_string(),
            vec![("rust-options.toml".to_string(), "SystemdCgroup = false\nNoNewKeyring = true\n".to_string())],
        )
    };
    let cri = CriContainerd::start_with(CriOptions {
        extra_toml: format!("\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{handler}.options]\n{options}"),
        files,
    });
    let pod = cri.run_pod(cri.pod_config("options"));
    let config = cri.container_config("options", &["echo", "with options"]);
    let c = cri.run_container(&pod, &config);
    let st = cri.wait_container_state(&c, ContainerState::ContainerExited, REACT);
    assert_eq!(st.exit_code, 0, "{st:?}");
    wait_for_log(&cri, &pod, &config, "with options");
    let info = cri.container_info(&c);
    assert_eq!(
        info["runtimeType"],
        format!("io.containerd.{handler}.v2"),
        "{info}"
    );
    tear_down(&cri, &pod, &[&c]);
}

/// Our shim reads `ConfigPath`: a file that does not exist fails
/// RunPodSandbox with a message naming it, and leaves nothing behind.
#[test]
fn runtime_options_missing_config_path_is_a_clear_error() {
    if cri::handler_under_test() != "rust" {
        return; // ConfigPath is not a runc option.
    }
    let cri = CriContainerd::start_with(CriOptions {
        extra_toml: "\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.rust.options]\n  ConfigPath = \"{work}/no-such-options.toml\"\n".into(),
        files: Vec::new(),
    });
    let config = cri.pod_config("badopts");
    let err = cri
        .try_run_pod(&config)
        .expect_err("RunPodSandbox with a missing ConfigPath");
    assert!(
        err.message().contains("no-such-options.toml"),
        "{:?}: {}",
        err.code(),
        err.message()
    );
    let pod = Pod {
        id: String::new(),
        config,
    };
    cri.assert_pod_gone(&pod);
    assert!(
        cri.list_pods().is_empty(),
        "a failed RunPodSandbox left pods: {:?}",
        cri.list_pods()
    );
}

/// `seccomp: RuntimeDefault` (what the kubelet sends with `--seccomp-default`
/// or a pod's `seccompProfile: RuntimeDefault`): containerd generates its
/// default profile into the spec; the container and its execs run in
/// seccomp filter mode (`Seccomp: 2`) and still work.
#[test]
fn seccomp_runtime_default() {
    let cri = CriContainerd::start();
    let pod = cri.run_pod(cri.pod_config("seccomp"));
    let mut config = cri.container_config(
        "seccomp",
        &[
            "sh",
            "-c",
            "grep Seccomp: /proc/self/status; echo done; sleep 1000",
        ],
    );
    config.linux.as_mut().expect("linux").security_context = Some(LinuxContainerSecurityContext {
        seccomp: Some(k8s_cri::v1::SecurityProfile {
            profile_type: k8s_cri::v1::security_profile::ProfileType::RuntimeDefault as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    let c = cri.run_container(&pod, &config);
    let spec = &cri.container_info(&c)["runtimeSpec"]["linux"]["seccomp"];
    assert_eq!(
        spec["defaultAction"], "SCMP_ACT_ERRNO",
        "containerd's default profile: {spec}"
    );
    let log = wait_for_log(&cri, &pod, &config, "done");
    let out = log_messages(&log, "stdout");
    assert!(
        out.iter()
            .any(|l| l.replace(' ', "\t").ends_with("Seccomp:\t2")),
        "not in seccomp filter mode:\n{log}"
    );
    let out = cri.exec_sync(&c, &["grep", "Seccomp:", "/proc/self/status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .trim_end()
            .ends_with('2'),
        "exec not under seccomp: {out:?}"
    );
    tear_down(&cri, &pod, &[&c]);
}

/// CRI sends only a deny-all device rule (`{"allow": false, "access":
/// "rwm"}`) and no device list: the runtime adds runc's defaults. The
/// standard character devices work; the host's disk, even through a node
/// made inside the container, cannot be read.
#[test]
fn device_access() {
    use std::os::unix::fs::MetadataExt;
    let cri = CriContainerd::start();
    let pod = cri.run_pod(cri.pod_config("devices"));
    let c = cri.run_container(&pod, &sleeper(&cri, "devices"));
    let out = cri.exec_sync(
        &c,
        &[
            "sh",
            "-c",
            "echo x > /dev/null && head -c 4 /dev/urandom | wc -c && head -c 2 /dev/zero | wc -c && test -c /dev/pts/ptmx && echo ok",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["4", "2", "ok"],
        "standard devices: {out:?}"
    );
    let dev = std::fs::metadata("/").expect("stat /").dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let script = format!(
        "mknod /tmp/disk b {major} {minor} 2>&1; head -c 1 /tmp/disk >/dev/null 2>&1 && echo READ || echo DENIED"
    );
    let out = cri.exec_sync(&c, &["sh", "-c", &script]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("DENIED"),
        "the host's root disk ({major}:{minor}) is readable from the container: {out:?}"
    );
    tear_down(&cri, &pod, &[&c]);
}

/// Volume mount propagation (issue #13): a volume with Bidirectional
/// propagation makes containerd ask for `rootfsPropagation: rshared`, and
/// pivot_root refuses a new root whose parent mount is shared (EINVAL), so
/// such a pod could not start. For each CRI propagation mode, a mount the
/// host makes under the volume after the container started, and one the
/// container makes there, must show up on the other side exactly as the
/// mode says: private neither way, HostToContainer (rslave) host to
/// container only, Bidirectional (rshared) both ways.
#[test]
fn volume_mount_propagation_both_directions() {
    use k8s_cri::v1::MountPropagation;
    let cri = CriContainerd::start();
    // The volume's host path sits on a mount of its own made shared, as
    // containerd requires for Bidirectional (and shared or slave for
    // HostToContainer).
    let base = cri.work_dir().join("propagation");
    std::fs::create_dir_all(&base).expect("mkdir propagation");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(args[0]).args(&args[1..]).output().expect("run a host command");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let b = base.display().to_string();
    run(&["mount", "-t", "tmpfs", "rsv2-prop", &b]);
    run(&["mount", "--make-shared", &b]);
    let modes = [
        ("private", MountPropagation::PropagationPrivate, false, false),
        ("rslave", MountPropagation::PropagationHostToContainer, true, false),
        ("rshared", MountPropagation::PropagationBidirectional, true, true),
    ];
    let mut pod_config = cri.pod_config("propagation");
    if let Some(sc) = pod_config.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.privileged = true;
    }
    let pod = cri.run_pod(pod_config);
    let mut containers = Vec::new();
    for (name, mode, _, _) in modes {
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).expect("mkdir volume");
        let mut config = sleeper(&cri, &format!("prop-{name}"));
        config.mounts = vec![k8s_cri::v1::Mount {
            container_path: "/mnt/v".into(),
            host_path: dir.display().to_string(),
            propagation: mode as i32,
            ..Default::default()
        }];
        if let Some(l) = config.linux.as_mut() {
            l.security_context = Some(LinuxContainerSecurityContext { privileged: true, ..Default::default() });
        }
        let id = cri.run_container(&pod, &config);
        let spec = cri.container_info(&id)["runtimeSpec"].clone();
        containers.push((name, id, spec));
    }
    let mut problems = Vec::new();
    for ((name, _, host_to_ctr, ctr_to_host), (_, id, spec)) in modes.iter().zip(&containers) {
        if *name == "rshared" && spec["linux"]["rootfsPropagation"] != "rshared" {
            problems.push(format!("containerd did not ask for an rshared rootfs: {}", spec["linux"]));
        }
        // Host to container: a tmpfs mounted under the volume now.
        let from_host = base.join(name).join("from-host");
        std::fs::create_dir_all(&from_host).expect("mkdir from-host");
        run(&["mount", "-t", "tmpfs", "from-host", &from_host.display().to_string()]);
        std::fs::write(from_host.join("marker"), "host").expect("write marker");
        let seen = cri.exec_sync(id, &["sh", "-c", "cat /mnt/v/from-host/marker 2>/dev/null || echo none"]);
        let seen = String::from_utf8_lossy(&seen.stdout).trim().to_string();
        if (seen == "host") != *host_to_ctr {
            problems.push(format!("{name}: a host mount under the volume is {} in the container ({seen:?})", if *host_to_ctr { "not visible" } else { "visible" }));
        }
        // Container to host.
        let out = cri.exec_sync(id, &["sh", "-c", "mkdir -p /mnt/v/from-ctr && mount -t tmpfs from-ctr /mnt/v/from-ctr && echo ctr > /mnt/v/from-ctr/marker && echo mounted"]);
        if !String::from_utf8_lossy(&out.stdout).contains("mounted") {
            problems.push(format!("{name}: the container could not mount under its volume: {out:?}"));
        }
        let marker = std::fs::read_to_string(base.join(name).join("from-ctr/marker")).unwrap_or_default();
        if (marker.trim() == "ctr") != *ctr_to_host {
            problems.push(format!("{name}: a container mount under the volume is {} on the host", if *ctr_to_host { "not visible" } else { "visible" }));
        }
    }
    let ids: Vec<&str> = containers.iter().map(|(_, id, _)| id.as_str()).collect();
    tear_down(&cri, &pod, &ids);
    // Everything under the base, deepest first, then the base.
    let mut mounts = host::mounts_under(&base);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in mounts {
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir_all(&base);
    assert!(problems.is_empty(), "mount propagation:\n{}", problems.join("\n"));
}
