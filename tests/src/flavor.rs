//! Which containerd the tests drive: Debian's 1.6.20 by default, or one of
//! the upstream release builds of the test lanes (1.7 and 2.x), chosen with
//! `RSV2_CONTAINERD`:
//!
//! - unset or `1.6`: `/usr/bin/containerd`, `/usr/bin/ctr` and Debian's
//!   runc shim;
//! - `1.7` or `2.2`: `containerd-<version>-linux-amd64.tar.xz` from
//!   `RSV2_CONTAINERD_TARBALLS` (default `../shared/containerd` beside the
//!   workspace), checked against its SHA256SUMS and unpacked once into
//!   `target/containerd/<version>/`: containerd, ctr and that version's
//!   containerd-shim-runc-v2, the reference shim of the lane;
//! - a directory holding `containerd`, `ctr` and `containerd-shim-runc-v2`
//!   (another build).
//!
//! A lane whose tarball is missing fails, saying where to put it: it never
//! passes by testing 1.6 instead.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The binaries of one containerd, and its major version.
#[derive(Debug, Clone)]
pub struct Flavor {
    /// `1.6`, `1.7`, `2.2`, or the directory's name.
    pub name: String,
    pub containerd: PathBuf,
    pub ctr: PathBuf,
    /// containerd-shim-runc-v2 of this version, put on containerd's PATH
    /// (Debian's is already on the system PATH).
    pub runc_shim: Option<PathBuf>,
    pub major: u32,
}

/// The release versions the lanes know, by short name.
const LANES: [(&str, &str); 2] = [("1.7", "1.7.34"), ("2.2", "2.2.7")];

/// The containerd under test, resolved once per test process.
pub fn flavor() -> &'static Flavor {
    static FLAVOR: OnceLock<Flavor> = OnceLock::new();
    FLAVOR.get_or_init(|| resolve(std::env::var("RSV2_CONTAINERD").ok().as_deref().unwrap_or("1.6")))
}

fn resolve(choice: &str) -> Flavor {
    if choice == "1.6" || choice.is_empty() {
        return Flavor {
            name: "1.6".into(),
            containerd: "/usr/bin/containerd".into(),
            ctr: "/usr/bin/ctr".into(),
            runc_shim: None,
            major: 1,
        };
    }
    let dir = match LANES.iter().find(|(short, full)| choice == *short || choice == *full) {
        Some((_, version)) => unpack(version),
        None => PathBuf::from(choice),
    };
    let bin = |name: &str| {
        let p = dir.join(name);
        assert!(p.is_file(), "RSV2_CONTAINERD={choice}: {} is missing", p.display());
        p
    };
    let containerd = bin("containerd");
    let out = Command::new(&containerd).arg("--version").output().unwrap_or_else(|e| panic!("{} --version: {e}", containerd.display()));
    // `containerd github.com/containerd/containerd/v2 v2.2.7 v2.2.7-tarball`
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let version = text.split_whitespace().nth(2).unwrap_or_default().trim_start_matches('v').to_string();
    let major = version.split('.').next().and_then(|m| m.parse().ok()).unwrap_or_else(|| panic!("cannot read the version of {}: {text}", containerd.display()));
    Flavor { name: version, ctr: bin("ctr"), runc_shim: Some(bin("containerd-shim-runc-v2")), containerd, major }
}

/// Where the tarballs are.
fn tarballs() -> PathBuf {
    std::env::var_os("RSV2_CONTAINERD_TARBALLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/containerd"))
}

/// Unpacks `containerd-<version>-linux-amd64.tar.xz` into
/// `target/containerd/<version>`, once: into a fresh directory first, then
/// renamed into place, so a test process that finds the directory finds it
/// whole.
fn unpack(version: &str) -> PathBuf {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/containerd").join(version);
    if target.join("containerd").is_file() {
        return target;
    }
    let name = format!("containerd-{version}-linux-amd64.tar.xz");
    let tarball = tarballs().join(&name);
    assert!(
        tarball.is_file(),
        "the containerd {version} lane needs {}: put {name} there (the project's ../shared/containerd holds it), \
         or point RSV2_CONTAINERD_TARBALLS at its directory",
        tarball.display()
    );
    let sums = std::fs::read_to_string(tarball.with_file_name("SHA256SUMS")).unwrap_or_default();
    if let Some(want) = sums.lines().find(|l| l.ends_with(&name)).and_then(|l| l.split_whitespace().next()) {
        let out = Command::new("sha256sum").arg(&tarball).output().expect("run sha256sum");
        let got = String::from_utf8_lossy(&out.stdout);
        assert!(got.starts_with(want), "{} does not match its SHA256SUMS entry {want}: {got}", tarball.display());
    }
    let tmp = target.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap_or_else(|e| panic!("mkdir {}: {e}", tmp.display()));
    let out = Command::new("tar").arg("-xJf").arg(&tarball).arg("-C").arg(&tmp).output().expect("run tar");
    assert!(out.status.success(), "unpack {}: {}", tarball.display(), String::from_utf8_lossy(&out.stderr));
    // Another test process may have won the race: then ours goes.
    if std::fs::rename(&tmp, &target).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    assert!(target.join("containerd").is_file(), "{} holds no containerd after unpacking {}", target.display(), tarball.display());
    target
}

impl Flavor {
    /// containerd 2.x takes a version 3 config, where the CRI plugin is
    /// split into `io.containerd.cri.v1.runtime` and `.images`.
    pub fn v3_config(&self) -> bool {
        self.major >= 2
    }
}
