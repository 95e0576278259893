//! OCI images without a registry: an image layout tarball built from a
//! directory, imported into containerd with `ctr images import`. The CRI tests
//! use two: a pause image (the static `tests/pause` program) and a busybox
//! image (the host's static busybox with its applet links).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::ctr::{describe, output_within};
use crate::PrivateContainerd;

/// containerd namespace of the CRI plugin.
pub const K8S_NAMESPACE: &str = "k8s.io";
/// Name of the pause image, the CRI plugin's `sandbox_image`.
pub const PAUSE_IMAGE: &str = "rsv2.test/pause:3.9";
/// Name of the busybox image the CRI tests run their containers from.
pub const BUSYBOX_IMAGE: &str = "rsv2.test/busybox:1.35";

const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The runtime part of an image config (`config` in the OCI image config).
#[derive(Debug, Clone, Default)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
}

/// One content-addressed blob of the layout.
struct Blob {
    media_type: &'static str,
    data: Vec<u8>,
}

impl Blob {
    fn new(media_type: &'static str, data: Vec<u8>) -> Self {
        Self { media_type, data }
    }

    fn hex(&self) -> String {
        sha256_hex(&self.data)
    }

    fn digest(&self) -> String {
        format!("sha256:{}", self.hex())
    }

    fn descriptor(&self) -> Value {
        json!({
            "mediaType": self.media_type,
            "digest": self.digest(),
            "size": self.data.len(),
        })
    }
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// GOARCH of this machine, as image platforms spell it.
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// An uncompressed tar of `rootfs` (owner root, mtime 0, sorted, so the same
/// tree always gives the same digest). Directories, regular files and
/// symlinks only, which is all the test images hold.
pub fn layer_tar(rootfs: &Path) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    append_tree(&mut builder, rootfs, Path::new(""));
    builder
        .into_inner()
        .unwrap_or_else(|e| panic!("finish the layer tar of {}: {e}", rootfs.display()))
}

fn append_tree(builder: &mut tar::Builder<Vec<u8>>, root: &Path, rel: &Path) {
    let dir = root.join(rel);
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap_or_else(|e| panic!("read {}: {e}", dir.display())))
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = rel.join(entry.file_name());
        let meta =
            fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).unwrap_or_else(|e| fail(&path, e));
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            builder
                .append_link(&mut header, &name, &target)
                .unwrap_or_else(|e| fail(&path, e));
        } else if meta.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(if name == Path::new("tmp") {
                0o1777
            } else {
                0o755
            });
            header.set_size(0);
            builder
                .append_data(&mut header, &name, std::io::empty())
                .unwrap_or_else(|e| fail(&path, e));
            append_tree(builder, root, &name);
        } else if meta.is_file() {
            use std::os::unix::fs::PermissionsExt;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(meta.permissions().mode() & 0o7777);
            header.set_size(meta.len());
            let file = fs::File::open(&path).unwrap_or_else(|e| fail(&path, e));
            builder
                .append_data(&mut header, &name, file)
                .unwrap_or_else(|e| fail(&path, e));
        } else {
            panic!(
                "{}: only directories, files and symlinks go into a test image",
                path.display()
            );
        }
    }
}

/// Writes an OCI image layout tarball of one image, `name` (a full reference
/// such as `rsv2.test/busybox:1.35`), with `rootfs` as its only layer, to
/// `out`. Returns the manifest digest.
///
/// The index entry carries both `io.containerd.image.name` (the full name,
/// which `ctr images import` uses as is) and `org.opencontainers.image.ref.name`
/// (the tag, for other readers of the layout).
pub fn write_oci_archive(name: &str, rootfs: &Path, config: &ImageConfig, out: &Path) -> String {
    let layer = Blob::new(LAYER_TAR, layer_tar(rootfs));
    let mut runtime = json!({ "Env": config.env });
    if !config.entrypoint.is_empty() {
        runtime["Entrypoint"] = json!(config.entrypoint);
    }
    if !config.cmd.is_empty() {
        runtime["Cmd"] = json!(config.cmd);
    }
    if !config.working_dir.is_empty() {
        runtime["WorkingDir"] = json!(config.working_dir);
    }
    let image_config = json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": oci_arch(),
        "os": "linux",
        "config": runtime,
        "rootfs": { "type": "layers", "diff_ids": [layer.digest()] },
        "history": [{ "created": "1970-01-01T00:00:00Z", "created_by": "integration-tests image.rs" }],
    });
    let config_blob = Blob::new(CONFIG, to_json(&image_config));
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config_blob.descriptor(),
        "layers": [layer.descriptor()],
    });
    let manifest_blob = Blob::new(MANIFEST, to_json(&manifest));
    let tag = name.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
    let mut entry = manifest_blob.descriptor();
    entry["annotations"] = json!({
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": tag,
    });
    entry["platform"] = json!({ "architecture": oci_arch(), "os": "linux" });
    let index = json!({ "schemaVersion": 2, "mediaType": INDEX, "manifests": [entry] });

    let mut archive = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_size(data.len() as u64);
        archive
            .append_data(&mut header, path, data)
            .unwrap_or_else(|e| panic!("add {path} to {}: {e}", out.display()));
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &to_json(&index));
    for blob in [&layer, &config_blob, &manifest_blob] {
        add(&format!("blobs/sha256/{}", blob.hex()), &blob.data);
    }
    let bytes = archive
        .into_inner()
        .unwrap_or_else(|e| panic!("finish {}: {e}", out.display()));
    fs::write(out, bytes).unwrap_or_else(|e| panic!("write {}: {e}", out.display()));
    manifest_blob.digest()
}

fn fail<T>(path: &Path, e: std::io::Error) -> T {
    panic!("add {} to the layer: {e}", path.display())
}

fn to_json(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialize JSON")
}

/// `ctr -n k8s.io images import --all-platforms ARCHIVE` against `ctd`,
/// which also unpacks the image into the default snapshotter (overlayfs),
/// where the CRI plugin looks for it. Panics with ctr's output on failure.
pub fn import(ctd: &PrivateContainerd, archive: &Path) {
    let mut cmd = Command::new(&crate::flavor::flavor().ctr);
    cmd.arg("--address")
        .arg(ctd.socket())
        .args([
            "--namespace",
            K8S_NAMESPACE,
            "images",
            "import",
            "--all-platforms",
        ])
        .arg(archive);
    match output_within(&mut cmd, Duration::from_secs(60)) {
        Ok(out) if out.status.success() => {}
        Ok(out) | Err(out) => panic!(
            "`ctr images import {}` failed\n{}\n{}",
            archive.display(),
            describe(&out),
            ctd.log_tail(30)
        ),
    }
}

/// Names of the images in containerd's `k8s.io` namespace.
pub fn list(ctd: &PrivateContainerd) -> Vec<String> {
    let mut cmd = Command::new(&crate::flavor::flavor().ctr);
    cmd.arg("--address").arg(ctd.socket()).args([
        "--namespace",
        K8S_NAMESPACE,
        "images",
        "ls",
        "-q",
    ]);
    match output_within(&mut cmd, Duration::from_secs(30)) {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
        Ok(out) | Err(out) => panic!("`ctr images ls` failed\n{}", describe(&out)),
    }
}

/// The static pause binary: `PAUSE_BIN` if set, else built from
/// `tests/pause` (`cargo rustc --release ... -C target-feature=+crt-static`)
/// into its own target directory `target/pause`, so the build neither waits
/// for the lock `cargo test` holds on `target/` nor needs the host's libc in
/// the image. Built once per test process.
pub fn pause_binary() -> PathBuf {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    if let Some(p) = std::env::var_os("PAUSE_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "PAUSE_BIN={} does not exist", p.display());
        return p;
    }
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.as_ref() {
        return p.clone();
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target_dir = workspace.join("target/pause");
    let cargo = std::env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").map(Into::into))
        .unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args([
            "rustc",
            "--quiet",
            "-p",
            "rsv2-pause",
            "--release",
            "--bin",
            "pause",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .args(["--", "-C", "target-feature=+crt-static"]);
    let out = output_within(&mut cmd, Duration::from_secs(300))
        .unwrap_or_else(|o| panic!("building the pause binary timed out\n{}", describe(&o)));
    assert!(
        out.status.success(),
        "building the pause binary (cargo rustc -p rsv2-pause --release --bin pause -- -C target-feature=+crt-static) failed\n{}",
        describe(&out)
    );
    let bin = target_dir.join("release/pause");
    assert_static(&bin);
    *built = Some(bin.clone());
    bin
}

/// Panics unless `bin` is a 64-bit ELF without a program interpreter
/// (no PT_INTERP program header), i.e. it runs in an image holding nothing
/// else.
fn assert_static(bin: &Path) {
    let dynamic = is_dynamic(bin).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !dynamic,
        "{} is dynamically linked (has PT_INTERP); it must be built with -C target-feature=+crt-static",
        bin.display()
    );
}

/// Whether the 64-bit little-endian ELF `bin` has a program interpreter
/// (a PT_INTERP program header): dynamically linked, loaded by ld.so.
pub fn is_dynamic(bin: &Path) -> Result<bool, String> {
    let mut data = Vec::new();
    fs::File::open(bin)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(|e| format!("read {}: {e}", bin.display()))?;
    if !(data.len() > 64 && data.starts_with(b"\x7fELF\x02\x01")) {
        return Err(format!("{} is not a 64-bit little-endian ELF file", bin.display()));
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(data[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    const PT_INTERP: u32 = 3;
    Ok((0..phnum).any(|i| {
        let o = phoff.saturating_add(i * phentsize);
        data.get(o..o + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().expect("4 bytes")) == PT_INTERP)
    }))
}

/// Fills `dir` with the pause image's rootfs: `/pause` and the mount points.
pub fn pause_rootfs(dir: &Path) {
    for d in ["dev", "proc", "sys", "etc"] {
        fs::create_dir_all(dir.join(d)).unwrap_or_else(|e| panic!("mkdir {d}: {e}"));
    }
    let bin = pause_binary();
    fs::copy(&bin, dir.join("pause"))
        .unwrap_or_else(|e| panic!("copy {} into the pause rootfs: {e}", bin.display()));
}

/// Builds the pause and busybox images under `work` (a scratch directory)
/// and imports them into `ctd`'s `k8s.io` namespace.
pub fn import_test_images(ctd: &PrivateContainerd, work: &Path) {
    let pause_root = work.join("pause-rootfs");
    pause_rootfs(&pause_root);
    let pause = work.join("pause.oci.tar");
    write_oci_archive(
        PAUSE_IMAGE,
        &pause_root,
        &ImageConfig {
            entrypoint: vec!["/pause".into()],
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            working_dir: "/".into(),
            ..Default::default()
        },
        &pause,
    );

    let busybox_root = work.join("busybox-rootfs");
    crate::busybox_rootfs(&busybox_root);
    let busybox = work.join("busybox.oci.tar");
    write_oci_archive(
        BUSYBOX_IMAGE,
        &busybox_root,
        &ImageConfig {
            cmd: vec!["sh".into()],
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            ..Default::default()
        },
        &busybox,
    );

    import(ctd, &pause);
    import(ctd, &busybox);
    let names = list(ctd);
    for want in [PAUSE_IMAGE, BUSYBOX_IMAGE] {
        assert!(
            names.iter().any(|n| n == want),
            "image {want} missing after import; k8s.io has {names:?}"
        );
    }
    // The image trees are in the snapshotter now.
    let _ = fs::remove_dir_all(&pause_root);
    let _ = fs::remove_dir_all(&busybox_root);
}
