//! Runtime options containerd attaches to Create.
//!
//! Which type arrives depends on the client: containerd's CRI sends
//! `containerd.runc.v1.Options` only to io.containerd.runc.v2, and
//! `runtimeoptions.v1.Options` (a TOML body or path) to every other runtime
//! type; `ctr --uidmap` sends `containerd.linux.runc.CreateOptions`; `ctr`
//! otherwise sends nothing. We decode all three, use what applies, log and
//! ignore the rest, and refuse only what we cannot honour.

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{CodedInputStream, Message};
use containerd_shim_protos::shim::oci::Options as RuncOptions;

#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error("decode runtime options {type_url}: {message}")]
    Decode { type_url: String, message: String },
    #[error("read runtime options file {path}: {source}")]
    ConfigPath { path: String, source: std::io::Error },
    #[error("runtime option {0} is not supported by containerd-shim-rust-v2")]
    Unsupported(&'static str),
}

/// The type name of runc's options, as containerd sends and resolves it.
pub const RUNC_OPTIONS_TYPE: &str = "containerd.runc.v1.Options";

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// Owner for the stdio pipes, so a container user (or a user namespace's
    /// root) can reopen /dev/stdout.
    pub io_uid: Option<u32>,
    pub io_gid: Option<u32>,
    pub systemd_cgroup: bool,
    pub no_new_keyring: bool,
    /// The cgroup the shim moves itself into at `start` (runc's ShimCgroup).
    pub shim_cgroup: Option<String>,
    /// The Task API version `start` offers, when the operator forces one
    /// (task_api.rs).
    pub task_api: Option<u32>,
}

fn decode_err(type_url: &str) -> impl Fn(String) -> OptionsError + '_ {
    move |message| OptionsError::Decode { type_url: type_url.to_string(), message }
}

/// Fields by number, for messages we have no generated type for.
fn fields(bytes: &[u8]) -> Result<Vec<(u32, Field)>, String> {
    let mut input = CodedInputStream::from_bytes(bytes);
    let mut out = Vec::new();
    while !input.eof().map_err(|e| e.to_string())? {
        let tag = input.read_raw_varint32().map_err(|e| e.to_string())?;
        let (number, wire) = (tag >> 3, tag & 7);
        let value = match wire {
            0 => Field::Varint(input.read_raw_varint64().map_err(|e| e.to_string())?),
            2 => Field::Bytes(input.read_bytes().map_err(|e| e.to_string())?),
            1 => Field::Varint(input.read_fixed64().map_err(|e| e.to_string())?),
            5 => Field::Varint(input.read_fixed32().map_err(|e| e.to_string())? as u64),
            w => return Err(format!("unsupported wire type {w}")),
        };
        out.push((number, value));
    }
    Ok(out)
}

enum Field {
    Varint(u64),
    Bytes(Vec<u8>),
}

/// The keys of a CRI `[...runtimes.rust.options]` table. containerd 1.6
/// sends only `config_path` (a file the operator names); 1.7 and later also
/// send the table itself as `config_body`. Either is flat `Key = value`
/// lines, so a line parser is enough.
fn apply_toml(body: &str, o: &mut RuntimeOptions) -> Result<(), OptionsError> {
    for line in body.lines() {
        let Some((k, v)) = line.split_once('=') else { continue };
        // TOML strings come double- or single-quoted (containerd 2.x
        // re-encodes the options table with single quotes).
        let (k, v) = (k.trim(), v.trim().trim_matches('"').trim_matches('\''));
        match k {
            "SystemdCgroup" => o.systemd_cgroup = v == "true",
            "NoNewKeyring" => o.no_new_keyring = v == "true",
            "IoUid" => o.io_uid = v.parse().ok(),
            "IoGid" => o.io_gid = v.parse().ok(),
            "ShimCgroup" => o.shim_cgroup = Some(v.to_string()).filter(|c| !c.is_empty()),
            "TaskAPIVersion" => o.task_api = v.parse().ok(),
            "NoPivotRoot" if v == "true" => return Err(OptionsError::Unsupported("NoPivotRoot")),
            "" => {}
            other => log::debug!("runtime option {other} ignored"),
        }
    }
    Ok(())
}

/// A runtime's TOML config file (CRI's ConfigPath): a regular file of at
/// most 1 MiB, so that a path such as /dev/zero or a FIFO cannot hold a
/// Create (and the shim's memory) forever.
fn read_config(path: &str) -> std::io::Result<String> {
    use std::io::Read;
    const MAX: u64 = 1 << 20;
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() > MAX {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file of at most 1 MiB"));
    }
    let mut body = String::new();
    file.take(MAX).read_to_string(&mut body)?;
    Ok(body)
}

pub fn parse(any: Option<&Any>) -> Result<RuntimeOptions, OptionsError> {
    let mut o = RuntimeOptions::default();
    let Some(any) = any.filter(|a| !a.type_url.is_empty()) else { return Ok(o) };
    let url = any.type_url.as_str();
    let name = url.rsplit('/').next().unwrap_or(url);
    match name {
        RUNC_OPTIONS_TYPE => {
            let r = RuncOptions::parse_from_bytes(&any.value).map_err(|e| decode_err(url)(e.to_string()))?;
            if r.no_pivot_root {
                return Err(OptionsError::Unsupported("NoPivotRoot"));
            }
            o.io_uid = (r.io_uid != 0).then_some(r.io_uid);
            o.io_gid = (r.io_gid != 0).then_some(r.io_gid);
            o.systemd_cgroup = r.systemd_cgroup;
            o.no_new_keyring = r.no_new_keyring;
            o.shim_cgroup = Some(r.shim_cgroup).filter(|c| !c.is_empty());
            o.task_api = (r.task_api_version != 0).then_some(r.task_api_version);
        }
        "containerd.linux.runc.CreateOptions" => {
            for (n, f) in fields(&any.value).map_err(decode_err(url))? {
                match (n, f) {
                    (1, Field::Varint(1)) => return Err(OptionsError::Unsupported("NoPivotRoot")),
                    (8, Field::Varint(v)) => o.no_new_keyring = v != 0,
                    (10, Field::Varint(v)) => o.io_uid = Some(v as u32),
                    (11, Field::Varint(v)) => o.io_gid = Some(v as u32),
                    (n, _) => log::debug!("create option field {n} ignored"),
                }
            }
        }
        "runtimeoptions.v1.Options" => {
            let mut body = String::new();
            for (n, f) in fields(&any.value).map_err(decode_err(url))? {
                match (n, f) {
                    (2, Field::Bytes(path)) if !path.is_empty() => {
                        let path = String::from_utf8_lossy(&path).into_owned();
                        body = read_config(&path).map_err(|source| OptionsError::ConfigPath { path, source })?;
                    }
                    (3, Field::Bytes(b)) if !b.is_empty() => body = String::from_utf8_lossy(&b).into_owned(),
                    _ => {}
                }
            }
            apply_toml(&body, &mut o)?;
        }
        other => log::debug!("runtime options of type {other} ignored"),
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(url: &str, value: Vec<u8>) -> Any {
        Any { type_url: url.into(), value, ..Default::default() }
    }

    #[test]
    fn runc_options() {
        let r = RuncOptions { io_uid: 1000, io_gid: 1001, systemd_cgroup: true, ..Default::default() };
        let o = parse(Some(&any("containerd.runc.v1.Options", r.write_to_bytes().unwrap()))).unwrap();
        assert_eq!(o, RuntimeOptions { io_uid: Some(1000), io_gid: Some(1001), systemd_cgroup: true, ..Default::default() });
        let r = RuncOptions { shim_cgroup: "/shims".into(), task_api_version: 3, ..Default::default() };
        let o = parse(Some(&any("containerd.runc.v1.Options", r.write_to_bytes().unwrap()))).unwrap();
        assert_eq!((o.shim_cgroup.as_deref(), o.task_api), (Some("/shims"), Some(3)));
    }

    #[test]
    fn create_options_by_field_number() {
        // io_uid = 10 (varint 100000), io_gid = 11 (varint 100000).
        let mut v = vec![0x50];
        v.extend([0xa0, 0x8d, 0x06]);
        v.push(0x58);
        v.extend([0xa0, 0x8d, 0x06]);
        let o = parse(Some(&any("types.containerd.io/containerd.linux.runc.CreateOptions", v))).unwrap();
        assert_eq!((o.io_uid, o.io_gid), (Some(100000), Some(100000)));
    }

    #[test]
    fn cri_runtime_options_toml_body() {
        let body = b"SystemdCgroup = true\nIoUid = 7\nBinaryName = \"x\"\nShimCgroup = '/s'\nTaskAPIVersion = 2\n";
        let mut v = vec![0x1a, body.len() as u8];
        v.extend_from_slice(body);
        let o = parse(Some(&any("runtimeoptions.v1.Options", v))).unwrap();
        assert!(o.systemd_cgroup);
        assert_eq!(o.io_uid, Some(7));
        assert_eq!((o.shim_cgroup.as_deref(), o.task_api), (Some("/s"), Some(2)));
        let mut v = vec![0x1a, 18];
        v.extend_from_slice(b"NoPivotRoot = true");
        assert!(parse(Some(&any("runtimeoptions.v1.Options", v))).unwrap_err().to_string().contains("NoPivotRoot"));
    }

    #[test]
    fn nothing_or_unknown_is_fine() {
        assert_eq!(parse(None).unwrap(), RuntimeOptions::default());
        assert_eq!(parse(Some(&any("example.com/other.Options", vec![1, 2, 3]))).unwrap(), RuntimeOptions::default());
    }
}
