//! Embeds the git revision the binary is built from (RSV2_GIT_REVISION)
//! and the compiler's version, for `-v`, `-info` and `features`. A build outside a git checkout (a
//! source tarball) says "unknown" unless RSV2_GIT_REVISION is set.
fn main() {
    let revision = std::env::var("RSV2_GIT_REVISION").ok().filter(|r| !r.is_empty()).or_else(|| {
        let out = std::process::Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output().ok()?;
        let rev = String::from_utf8(out.stdout).ok()?.trim().to_string();
        if !out.status.success() || rev.is_empty() {
            return None;
        }
        let dirty = std::process::Command::new("git").args(["status", "--porcelain", "--untracked-files=no"]).output().ok().is_some_and(|o| !o.stdout.is_empty());
        Some(if dirty { format!("{rev}-dirty") } else { rev })
    });
    println!("cargo:rustc-env=RSV2_GIT_REVISION={}", revision.unwrap_or_else(|| "unknown".into()));
    // The compiler that builds us, for `-v` (cargo gives build scripts its
    // path in RUSTC).
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rust_version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "rustc (unknown version)".into());
    println!("cargo:rustc-env=RSV2_RUST_VERSION={rust_version}");
    println!("cargo:rerun-if-env-changed=RSV2_GIT_REVISION");
    // A new commit changes HEAD or the ref it points at (not the index:
    // every `git add` would rebuild the shim).
    for f in ["../.git/HEAD", "../.git/refs/heads", "../.git/packed-refs"] {
        println!("cargo:rerun-if-changed={f}");
    }
}
