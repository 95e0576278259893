//! Which Task API `start` offers containerd: the newest it speaks.
//!
//! containerd 2.x reads what `start` prints with `parseStartResponse`
//! (core/runtime/v2/shim.go): JSON `{"version":3,...}` gets Task API v3,
//! anything that is not JSON is a plain address and gets v2 through its
//! bridge. containerd 1.7 refuses a version above 2 ("unsupported shim
//! version (3)", runtime/v2/shim.go) and 1.6 dials whatever it read as a
//! socket path, so neither may see JSON. Nothing in how `start` is called
//! tells 1.7 and 2.x apart: the same arguments, the same environment
//! names (both pass MAX_SHIM_VERSION=2, GRPC_ADDRESS and NAMESPACE), the
//! same stdin; both answer the same on the ttrpc socket (only
//! events.ttrpc.v1.Events/Forward).
//!
//! What does tell them apart is the binary that runs `start`: our parent,
//! containerd itself (binary.go execs the shim directly). Go records the
//! main package's import path in the binary's `.go.buildinfo` section:
//! `github.com/containerd/containerd/v2/cmd/containerd` in 2.x, without
//! the `/v2` in 1.x (Debian's 1.6.20 and the 1.7 release builds alike). A
//! binary we cannot read or do not recognise (containerd embedded in
//! another program) gets v2, which every version takes.
//!
//! `RSV2_TASK_API=2` or `=3` in the environment of `start` forces either
//! (containerd 2.x passes `[plugins.'io.containerd.shim.v1.manager'] env`
//! to it), as does the runtime option `TaskAPIVersion`.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The environment variable that forces a Task API version.
pub const FORCE_ENV: &str = "RSV2_TASK_API";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskApi {
    /// `containerd.task.v2.Task`, announced by a bare address.
    V2,
    /// `containerd.task.v3.Task`, announced by the JSON bootstrap.
    V3,
}

/// The version to offer, and why (for the log).
pub fn choose(forced: Option<&str>, parent_exe: &Path, publish_binary: &str) -> (TaskApi, String) {
    match forced.map(str::trim) {
        Some("2") => return (TaskApi::V2, format!("{FORCE_ENV}=2")),
        Some("3") => return (TaskApi::V3, format!("{FORCE_ENV}=3")),
        Some(other) if !other.is_empty() => log::warn!("{FORCE_ENV}={other:?} is neither 2 nor 3: ignored"),
        _ => {}
    }
    let candidates = [parent_exe.to_path_buf(), PathBuf::from(publish_binary)];
    for exe in candidates.iter().filter(|p| !p.as_os_str().is_empty()) {
        if let Some(path) = go_main_package(exe) {
            let major = containerd_major(&path);
            let api = if major.is_some_and(|m| m >= 2) { TaskApi::V3 } else { TaskApi::V2 };
            return (api, format!("{} is {path} (containerd major {major:?})", exe.display()));
        }
    }
    (TaskApi::V2, "containerd's version is unknown".into())
}

/// The containerd major version a main package path names:
/// `github.com/containerd/containerd/v2/cmd/containerd` is 2,
/// `github.com/containerd/containerd/cmd/containerd` is 1, anything else
/// is not containerd's own binary.
pub fn containerd_major(main_package: &str) -> Option<u32> {
    let rest = main_package.strip_prefix("github.com/containerd/containerd")?;
    if rest == "/cmd/containerd" {
        return Some(1);
    }
    let (v, tail) = rest.strip_prefix("/v")?.split_once('/')?;
    (tail == "cmd/containerd").then(|| v.parse().ok()).flatten()
}

/// What `start` prints for `address`.
pub fn announce(api: TaskApi, address: &str) -> String {
    match api {
        TaskApi::V2 => address.to_string(),
        TaskApi::V3 => serde_json::json!({ "version": 3, "address": address, "protocol": "ttrpc" }).to_string(),
    }
}

/// The `path` line of a Go binary's build information: its main package.
/// Reads only the ELF section headers and the `.go.buildinfo` section.
pub fn go_main_package(exe: &Path) -> Option<String> {
    let file = std::fs::File::open(exe).ok()?;
    let info = elf_section(&file, ".go.buildinfo")?;
    main_package(&info)
}

/// The bytes of ELF64 little-endian section `name`, up to 1 MiB.
fn elf_section(file: &std::fs::File, name: &str) -> Option<Vec<u8>> {
    let read = |at: u64, len: usize| -> Option<Vec<u8>> {
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, at).ok()?;
        Some(buf)
    };
    let header = read(0, 64)?;
    // \x7fELF, 64-bit, little-endian.
    if header[..4] != *b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or([0; 4]));
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
    let shoff = u64_at(&header, 0x28);
    let (shentsize, shnum, shstrndx) = (u16_at(&header, 0x3a) as usize, u16_at(&header, 0x3c) as usize, u16_at(&header, 0x3e) as usize);
    if shentsize < 64 || shnum == 0 || shnum > 4096 || shstrndx >= shnum {
        return None;
    }
    let table = read(shoff, shentsize * shnum)?;
    let section = |i: usize| {
        let o = i * shentsize;
        (u32_at(&table, o) as usize, u64_at(&table, o + 0x18), u64_at(&table, o + 0x20))
    };
    let (_, names_at, names_len) = section(shstrndx);
    let names = read(names_at, names_len.min(1 << 20) as usize)?;
    (0..shnum).find_map(|i| {
        let (name_at, at, len) = section(i);
        let end = names.get(name_at..)?.iter().position(|&b| b == 0)? + name_at;
        (names.get(name_at..end)? == name.as_bytes() && len <= 1 << 20).then(|| read(at, len as usize)).flatten()
    })
}

/// Parses Go's build information (`debug/buildinfo`, Go 1.18 and later:
/// the magic, pointer size, a flags byte whose bit 1 says the version and
/// module strings follow inline as varint-prefixed strings).
fn main_package(info: &[u8]) -> Option<String> {
    if info.len() < 32 || &info[..14] != b"\xff Go buildinf:" || info[15] & 0x2 == 0 {
        return None;
    }
    let mut at = 32;
    let mut string = || -> Option<&[u8]> {
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let b = *info.get(at)?;
            at += 1;
            len |= ((b & 0x7f) as usize).checked_shl(shift)?;
            shift += 7;
            if b < 0x80 || shift > 63 {
                break;
            }
        }
        let s = info.get(at..at.checked_add(len)?)?;
        at += len;
        Some(s)
    };
    let _go_version = string()?;
    let modinfo = String::from_utf8_lossy(string()?).into_owned();
    modinfo.lines().find_map(|l| l.strip_prefix("path\t")).map(str::to_string).or_else(|| {
        // A 16-byte sentinel precedes the module information.
        modinfo.split('\n').next().and_then(|first| first.find("path\t").map(|i| first[i + 5..].to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_package_paths() {
        assert_eq!(containerd_major("github.com/containerd/containerd/cmd/containerd"), Some(1));
        assert_eq!(containerd_major("github.com/containerd/containerd/v2/cmd/containerd"), Some(2));
        assert_eq!(containerd_major("github.com/containerd/containerd/v3/cmd/containerd"), Some(3));
        assert_eq!(containerd_major("github.com/containerd/containerd/v2/cmd/ctr"), None);
        assert_eq!(containerd_major("github.com/k3s-io/k3s"), None);
    }

    #[test]
    fn buildinfo_inline_strings() {
        let mut info = b"\xff Go buildinf:\x08\x02".to_vec();
        info.resize(32, 0);
        info.push(8);
        info.extend_from_slice(b"go1.22.1");
        let modinfo = b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6path\tgithub.com/containerd/containerd/v2/cmd/containerd\nmod\tx\n";
        info.push(modinfo.len() as u8);
        info.extend_from_slice(modinfo);
        assert_eq!(main_package(&info).as_deref(), Some("github.com/containerd/containerd/v2/cmd/containerd"));
        assert_eq!(main_package(b"not build info at all, not at all"), None);
        // Truncated and absurd lengths are no answer, not a panic.
        info.truncate(50);
        let _ = main_package(&info);
        let mut huge = b"\xff Go buildinf:\x08\x02".to_vec();
        huge.resize(32, 0);
        huge.extend_from_slice(&[0xff; 12]);
        assert_eq!(main_package(&huge), None);
    }

    #[test]
    fn forcing_and_announcing() {
        assert_eq!(choose(Some("3"), Path::new("/nonexistent"), "").0, TaskApi::V3);
        assert_eq!(choose(Some("2"), Path::new("/nonexistent"), "").0, TaskApi::V2);
        assert_eq!(choose(None, Path::new("/nonexistent"), "").0, TaskApi::V2);
        assert_eq!(announce(TaskApi::V2, "unix:///run/containerd/s/x"), "unix:///run/containerd/s/x");
        assert_eq!(announce(TaskApi::V3, "unix:///run/containerd/s/x"), r#"{"address":"unix:///run/containerd/s/x","protocol":"ttrpc","version":3}"#);
    }

    /// Debian's containerd 1.6; the 1.7 and 2.2 release builds are read by
    /// the test lanes (tests/tests/lanes.rs).
    #[test]
    fn reads_real_containerd_binaries() {
        let p = go_main_package(Path::new("/usr/bin/containerd")).expect("Debian's containerd (scripts/test installs it) has build information");
        assert_eq!(containerd_major(&p), Some(1), "{p}");
        // Our own binary is Rust, not Go: no build information.
        assert_eq!(go_main_package(&std::env::current_exe().unwrap()), None);
    }
}
