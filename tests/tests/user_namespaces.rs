//! User namespaces beyond a new one with id maps (conformance.rs has that):
//! id-mapped bind mounts (`mounts[].uidMappings`, runtime-spec 1.1) and a
//! user namespace joined by path with its maps given too, which is what
//! containerd's CRI sends for a `hostUsers: false` pod. Through ctr and
//! containerd; the CRI path is in lanes.rs (containerd 2.x).
//!
//! runc 1.1.5 has neither id-mapped mounts (runc 1.2 does) nor the check
//! of joined maps, so these run for our shim only.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Output;

use integration_tests::check::{stderr, stdout};
use integration_tests::probe::{add_user_namespace, allow_default_devices, private_rootfs};
use integration_tests::{testing_rust_shim, PrivateContainerd};
use serde_json::json;

fn show(ctd: &PrivateContainerd, out: &Output) -> String {
    format!("status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}\n{}", out.status, stdout(out), stderr(out), ctd.log_tail(30))
}

const MAP: u32 = 100000;

/// ctr's default spec in a user namespace mapping 0 to [`MAP`]: without its
/// /run tmpfs, whose mount point the busybox rootfs lacks and the mapped
/// root may not create in a directory the host's root owns.
fn userns_spec(ctd: &PrivateContainerd, id: &str, argv: &[&str], host_id: u32) -> serde_json::Value {
    let mut spec = ctd.default_spec(id, argv);
    allow_default_devices(&mut spec);
    add_user_namespace(&mut spec, host_id, 65536);
    spec["mounts"].as_array_mut().unwrap().retain(|m| m["destination"] != "/run");
    spec
}

/// A host directory with one file owned by root and one by 1000:1000.
fn volume(ctd: &PrivateContainerd) -> std::path::PathBuf {
    let dir = ctd.dir().join("idmapped-volume");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("root-file"), "r\n").unwrap();
    std::fs::write(dir.join("user-file"), "u\n").unwrap();
    std::os::unix::fs::chown(dir.join("user-file"), Some(1000), Some(1000)).unwrap();
    dir
}

fn bind(dest: &str, source: &Path, mapped: bool) -> serde_json::Value {
    let mut m = json!({"destination": dest, "type": "bind", "source": source.display().to_string(), "options": ["rbind", "rw"]});
    if mapped {
        let map = json!([{"containerID": 0, "hostID": MAP, "size": 65536}]);
        m["uidMappings"] = map.clone();
        m["gidMappings"] = map;
    }
    m
}

/// In a user namespace mapping 0 to 100000, a host directory bound with the
/// same maps shows its files' owners as they are on the host (root's file
/// is root's), and what the container's root creates there lands owned by
/// the host's root; bound without maps, root's file belongs to nobody.
#[test]
fn idmapped_bind_shows_host_owners_through_the_maps() {
    if !testing_rust_shim() {
        return;
    }
    let ctd = PrivateContainerd::start();
    let id = ctd.unique_id("idmap");
    let dir = volume(&ctd);
    let script = "stat -c '%n %u:%g' /mapped/root-file /mapped/user-file /plain/root-file; touch /mapped/created && echo created";
    let mut spec = userns_spec(&ctd, &id, &["/bin/sh", "-c", script], MAP);
    // Mount points the mapped root could not create in a host-owned rootfs.
    let rootfs = private_rootfs(&ctd, "idmap-rootfs");
    for d in ["mapped", "plain"] {
        std::fs::create_dir(rootfs.join(d)).unwrap();
    }
    spec["root"]["path"] = rootfs.display().to_string().into();
    for m in [bind("/mapped", &dir, true), bind("/plain", &dir, false)] {
        spec["mounts"].as_array_mut().unwrap().push(m);
    }
    let out = ctd.run_config(&id, ctd.write_spec(&id, &spec)).rm();
    assert!(out.status.success(), "{}", show(&ctd, &out));
    let text = stdout(&out);
    for want in ["/mapped/root-file 0:0", "/mapped/user-file 1000:1000", "/plain/root-file 65534:65534", "created"] {
        assert!(text.lines().any(|l| l == want), "missing {want:?}:\n{}", show(&ctd, &out));
    }
    let created = std::fs::metadata(dir.join("created")).expect("the container's file is on the host");
    assert_eq!((created.uid(), created.gid()), (0, 0), "the container's root wrote through the idmap as host root");
    // The host's own view of the directory is unchanged: nothing is left
    // mounted on it.
    assert!(integration_tests::host::mounts_under(&dir).is_empty());
    ctd.assert_no_leftovers(&id);
    ctd.finish();
}

/// Each refusal names its field before anything touches the host.
#[test]
fn bad_idmapped_mounts_are_refused() {
    if !testing_rust_shim() {
        return;
    }
    let ctd = PrivateContainerd::start();
    let dir = volume(&ctd);
    let cases: Vec<(&str, Box<dyn Fn(&mut serde_json::Value)>, &str)> = vec![
        ("a tmpfs with maps", Box::new(|m| { m["type"] = "tmpfs".into(); m["source"] = "tmpfs".into(); m["options"] = json!(["nosuid"]); }), "only supported for bind mounts"),
        ("uid maps without gid maps", Box::new(|m| { m.as_object_mut().unwrap().remove("gidMappings"); }), "gidMappings"),
        ("a map of size 0", Box::new(|m| { m["uidMappings"][0]["size"] = 0.into(); }), "uidMappings[0]"),
        ("idmap without maps", Box::new(|m| { m.as_object_mut().unwrap().remove("uidMappings"); m.as_object_mut().unwrap().remove("gidMappings"); m["options"] = json!(["rbind", "idmap"]); }), "needs mounts["),
    ];
    for (what, patch, want) in cases {
        let id = ctd.unique_id("badidmap");
        let mut spec = userns_spec(&ctd, &id, &["/bin/true"], MAP);
        let mut m = bind("/tmp", &dir, true);
        patch(&mut m);
        spec["mounts"].as_array_mut().unwrap().push(m);
        let out = ctd.run_config(&id, ctd.write_spec(&id, &spec)).rm();
        assert!(!out.status.success(), "{what} ran:\n{}", show(&ctd, &out));
        assert!(stderr(&out).contains(want), "{what}: the error does not say {want:?}:\n{}", show(&ctd, &out));
        ctd.assert_no_leftovers(&id);
    }
    ctd.finish();
}

/// containerd's CRI joins a pod's user namespace by path and gives its maps
/// too: accepted when they are the namespace's, refused naming
/// linux.uidMappings when they are not (runc's rule).
#[test]
fn joined_user_namespace_with_its_maps() {
    if !testing_rust_shim() {
        return;
    }
    let ctd = PrivateContainerd::start();
    let owner = ctd.unique_id("userns-owner");
    let spec = userns_spec(&ctd, &owner, &["/bin/sleep", "1000"], MAP);
    ctd.run_config(&owner, ctd.write_spec(&owner, &spec)).detach();
    let pid = ctd.task(&owner).expect("the owner runs").pid;
    let path = format!("/proc/{pid}/ns/user");

    let joined = |host_id: u32| {
        let id = ctd.unique_id("userns-join");
        let mut spec = userns_spec(&ctd, &id, &["/bin/cat", "/proc/self/uid_map"], host_id);
        for ns in spec["linux"]["namespaces"].as_array_mut().unwrap() {
            if ns["type"] == "user" {
                ns["path"] = path.clone().into();
            }
        }
        let out = ctd.run_config(&id, ctd.write_spec(&id, &spec)).rm();
        ctd.assert_no_leftovers(&id);
        out
    };
    let out = joined(MAP);
    assert!(out.status.success(), "{}", show(&ctd, &out));
    let words: Vec<String> = stdout(&out).split_whitespace().map(String::from).collect();
    assert_eq!(words, ["0", &MAP.to_string(), "65536"], "{}", show(&ctd, &out));

    let out = joined(MAP + 65536);
    assert!(!out.status.success(), "maps that are not the joined namespace's ran:\n{}", show(&ctd, &out));
    assert!(stderr(&out).contains("linux.uidMappings"), "{}", show(&ctd, &out));

    ctd.remove(&owner);
    ctd.assert_no_leftovers(&owner);
    ctd.finish();
}
