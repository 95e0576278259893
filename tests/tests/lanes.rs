//! What differs between containerd 1.6, 1.7 and 2.x, checked on the lane
//! that runs (`RSV2_CONTAINERD`, tests/src/flavor.rs): the Task API each
//! version gets (issue #15), what containerd 2.x's CRI learns from `-info`,
//! and recursive read-only volumes through it. scripts/test runs this file,
//! with foundation, exec_io, lifecycle and cri, on each lane.

use std::time::Duration;

use integration_tests::cri::CriContainerd;
use integration_tests::{host, wait_until, PrivateContainerd};

/// containerd 2.x says which Task API it speaks to each shim
/// (`connecting to shim ... version=N`); our shim logs what it offered,
/// and why, into containerd's log through its log FIFO.
#[test]
fn each_containerd_gets_its_newest_task_api() {
    let ctd = PrivateContainerd::start();
    let flavor = ctd.flavor();
    let id = ctd.unique_id("api");
    let out = ctd.run(&id, &["/bin/echo", "hello"]).rm();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = ctd.log();
    let offered = log.lines().find(|l| l.contains("offering containerd Task API")).unwrap_or_else(|| panic!("the shim did not log its Task API\n{}", ctd.log_tail(40)));
    let want = if flavor.major >= 2 { "Task API V3" } else { "Task API V2" };
    assert!(offered.contains(want), "containerd {}: {offered}", flavor.name);
    if flavor.major >= 2 {
        let connected = log.lines().find(|l| l.contains("connecting to shim") && l.contains(&id)).unwrap_or_else(|| panic!("no 'connecting to shim' line\n{}", ctd.log_tail(40)));
        assert!(connected.contains("version=3"), "containerd {} speaks {connected}", flavor.name);
    }
    ctd.finish();
}

/// containerd 2.x's CRI runs `<shim> -info` for each handler and reports
/// the features in Status: recursive read-only mounts and user namespaces
/// (which need id-mapped mounts) where the kernel has mount_setattr (Linux
/// 5.12; this host's has). containerd 1.x reports no handler features at
/// all.
#[test]
fn cri_reports_the_handlers_features() {
    let cri = CriContainerd::start();
    let status = cri.status();
    let rust = status.runtime_handlers.iter().find(|h| h.name == "rust");
    if cri.ctd().flavor().major >= 2 {
        let features = rust.and_then(|h| h.features).unwrap_or_else(|| panic!("no features for the rust handler: {:?}", status.runtime_handlers));
        assert!(features.recursive_read_only_mounts, "{features:?}");
        assert!(features.user_namespaces, "{features:?}");
    } else {
        assert!(status.runtime_handlers.is_empty(), "containerd {} reported handlers: {:?}", cri.ctd().flavor().name, status.runtime_handlers);
    }
}

/// A read-only volume whose host path has a mount below it: with
/// `recursive_read_only`, containerd 2.x asks for `rro` and the mount
/// below is read-only too; a plain read-only volume leaves it writable (as
/// runc does), and containerd 1.x knows no recursive_read_only.
#[test]
fn recursive_read_only_volume() {
    let cri = CriContainerd::start();
    let base = cri.work_dir().join("rro");
    let sub = base.join("sub");
    std::fs::create_dir_all(&sub).expect("mkdir rro/sub");
    let mount = |args: &[&str]| {
        let out = std::process::Command::new("mount").args(args).output().expect("run mount");
        assert!(out.status.success(), "mount {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    mount(&["-t", "tmpfs", "rsv2-rro-sub", &sub.display().to_string()]);
    let pod = cri.run_pod(cri.pod_config("rro"));
    let mut results = Vec::new();
    for recursive in [false, true] {
        let mut config = cri.container_config(&format!("rro-{recursive}"), &["sleep", "1000"]);
        config.mounts = vec![k8s_cri::v1::Mount {
            container_path: "/mnt/v".into(),
            host_path: base.display().to_string(),
            readonly: true,
            recursive_read_only: recursive,
            ..Default::default()
        }];
        let id = cri.run_container(&pod, &config);
        let out = cri.exec_sync(&id, &["sh", "-c", "touch /mnt/v/top 2>&1; touch /mnt/v/sub/x 2>&1 && echo SUB-WRITABLE; rm -f /mnt/v/sub/x"]);
        results.push((recursive, String::from_utf8_lossy(&out.stdout).into_owned(), id));
    }
    let major = cri.ctd().flavor().major;
    let mut problems = Vec::new();
    for (recursive, out, _) in &results {
        if !out.contains("Read-only file system") {
            problems.push(format!("recursive={recursive}: the volume's top is writable: {out}"));
        }
        let sub_writable = out.contains("SUB-WRITABLE");
        let want_writable = !(*recursive && major >= 2);
        if sub_writable != want_writable {
            problems.push(format!("containerd {}: recursive={recursive}: the mount below the volume is {}: {out}", cri.ctd().flavor().name, if sub_writable { "writable" } else { "read-only" }));
        }
    }
    for (_, _, id) in &results {
        cri.stop_container(id, 0);
        cri.remove_container(id);
    }
    cri.stop_pod(&pod.id);
    cri.remove_pod(&pod.id);
    let _ = nix::mount::umount2(&sub, nix::mount::MntFlags::MNT_DETACH);
    assert!(wait_until(Duration::from_secs(5), || host::mounts_under(&base).is_empty()));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A `hostUsers: false` pod: the kubelet sends the pod's uid and gid maps
/// in the pod's and the container's namespace options, and maps for each
/// volume. containerd 2.x makes the pod's network namespace inside a new
/// user namespace, joins it by path (with its maps) in every container's
/// spec, and has its overlay snapshotter put `uidmap=`/`gidmap=` on the
/// rootfs mounts, which the shim id-maps. Inside, the image's files belong
/// to root and a volume shows its host owners through its maps; on the
/// host, the container runs as the mapped uid. containerd 1.6 and 1.7 do
/// not make user-namespaced pods for a runtime handler (1.6's CRI ignores
/// the option; 1.7 asks for nothing id-mapped): the same pod runs in the
/// host's user namespace there, which this test holds too.
#[test]
fn user_namespaced_pod() {
    use k8s_cri::v1 as cri;
    use std::os::unix::fs::MetadataExt;
    const HOST_ID: u32 = 300000;
    let cri = CriContainerd::start();
    let major = cri.ctd().flavor().major;
    let map = vec![cri::IdMapping { host_id: HOST_ID, container_id: 0, length: 65536 }];
    let userns = cri::UserNamespace { mode: cri::NamespaceMode::Pod as i32, uids: map.clone(), gids: map.clone() };
    let with_userns = |opts: &mut Option<cri::NamespaceOption>| {
        let pod = cri::NamespaceMode::Pod as i32;
        let o = opts.get_or_insert_with(|| cri::NamespaceOption { network: pod, pid: pod, ipc: pod, ..Default::default() });
        o.userns_options = Some(userns.clone());
    };
    let mut pod_config = cri.pod_config("userns");
    with_userns(&mut pod_config.linux.as_mut().unwrap().security_context.as_mut().unwrap().namespace_options);
    let pod = cri.run_pod(pod_config);

    let vol = cri.work_dir().join("userns-volume");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("root-file"), "r\n").unwrap();
    let mut config = cri.container_config("userns", &["sleep", "1000"]);
    let linux = config.linux.get_or_insert_with(Default::default);
    with_userns(&mut linux.security_context.get_or_insert_with(Default::default).namespace_options);
    // containerd 1.7 refuses volume maps ("idmap mounts not yet supported").
    let volume_map = if major >= 2 { map.clone() } else { Vec::new() };
    config.mounts = vec![cri::Mount { container_path: "/vol".into(), host_path: vol.display().to_string(), uid_mappings: volume_map.clone(), gid_mappings: volume_map, ..Default::default() }];
    let id = cri.run_container(&pod, &config);
    let out = cri.exec_sync(&id, &["sh", "-c", "cat /proc/self/uid_map; stat -c '%n %u:%g' /bin/busybox /vol/root-file; touch /vol/created && echo created || echo not-created"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let report = format!("containerd {}: exit {}\n--- stdout ---\n{text}--- stderr ---\n{}\n{}", cri.ctd().flavor().name, out.exit_code, String::from_utf8_lossy(&out.stderr), cri.log_tail(30));
    assert_eq!(out.exit_code, 0, "{report}");
    let uid_map: Vec<&str> = text.lines().next().unwrap_or_default().split_whitespace().collect();
    let host_uid = |pid: u32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().next().map(String::from)).unwrap_or_default()
    };
    let pid = cri.container_pid(&id);
    let created = || std::fs::metadata(vol.join("created")).expect("the container's file is on the host");
    let is_1_7 = cri.ctd().flavor().name.starts_with("1.7");
    if major >= 2 {
        assert_eq!(uid_map, ["0", &HOST_ID.to_string(), "65536"], "{report}");
        for want in ["/bin/busybox 0:0", "/vol/root-file 0:0", "created"] {
            assert!(text.lines().any(|l| l == want), "missing {want:?}: {report}");
        }
        assert_eq!(host_uid(pid), HOST_ID.to_string(), "the container's process on the host: {report}");
        assert_eq!(host_uid(cri.pod_pid(&pod.id)), HOST_ID.to_string(), "the pause process on the host: {report}");
        let created = created();
        assert_eq!((created.uid(), created.gid()), (0, 0), "root's write through the volume's maps: {report}");
    } else if is_1_7 {
        // A user-namespaced pod with its image's files mapped, but a volume
        // without maps: the host's root owns it, which the pod's root is not.
        assert_eq!(uid_map, ["0", &HOST_ID.to_string(), "65536"], "{report}");
        for want in ["/bin/busybox 0:0", "/vol/root-file 65534:65534", "not-created"] {
            assert!(text.lines().any(|l| l == want), "missing {want:?}: {report}");
        }
        assert_eq!(host_uid(pid), HOST_ID.to_string(), "the container's process on the host: {report}");
    } else {
        assert_eq!(uid_map, ["0", "0", "4294967295"], "{report}");
        assert_eq!(host_uid(pid), "0", "{report}");
    }
    cri.stop_container(&id, 0);
    cri.remove_container(&id);
    cri.stop_pod(&pod.id);
    cri.remove_pod(&pod.id);
    cri.assert_pod_gone(&pod);
    assert!(wait_until(Duration::from_secs(5), || host::mounts_under(&vol).is_empty()));
}

/// Removes a cgroup from every hierarchy when dropped, after the
/// processes in it are gone (declared before the containerd that runs
/// them, so dropped after it).
struct CgroupGone(String);

impl Drop for CgroupGone {
    fn drop(&mut self) {
        for dir in host::cgroup_dirs(&self.0) {
            for d in host::dirs_deepest_first(&dir) {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

/// runc's `ShimCgroup` option: the shim moves itself into the cgroup the
/// runtime's options name (containerd 2.2's TestShimInCgroup). CRI sends
/// our handler its options table as TOML (a ConfigPath file on 1.6).
#[test]
fn shim_moves_into_its_shim_cgroup() {
    let rel = format!("rsv2-shims-{}", std::process::id());
    let _gone = CgroupGone(rel.clone());
    // runc's shim only joins a cgroup that exists, in the hierarchies
    // where it does (ours creates it where it is missing).
    for controller in ["memory", "pids"] {
        std::fs::create_dir_all(host::cgroup_path(controller, &rel)).expect("create the shim cgroup");
    }
    let cri = CriContainerd::start_with(integration_tests::cri::CriOptions {
        extra_toml: format!(
            "\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{h}.options]\n  ConfigPath = \"{{work}}/shim-options.toml\"\n  ShimCgroup = \"/{rel}\"\n",
            h = integration_tests::cri::handler_under_test()
        ),
        files: vec![("shim-options.toml".into(), format!("ShimCgroup = \"/{rel}\"\n"))],
    });
    let pod = cri.run_pod(cri.pod_config("shimcg"));
    let shims = cri.shim_servers();
    assert_eq!(shims.len(), 1, "{shims:?}");
    let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", shims[0].pid)).unwrap_or_default();
    for line in cgroups.lines().filter(|l| l.contains(":memory:") || l.contains(":pids:")) {
        assert!(line.ends_with(&format!(":/{rel}")), "the shim is not in /{rel}: {line}\n{cgroups}");
    }
    cri.stop_pod(&pod.id);
    cri.remove_pod(&pod.id);
    assert!(wait_until(Duration::from_secs(10), || cri.shim_servers().is_empty()));
}
