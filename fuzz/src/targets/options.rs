//! The runtime options decoder (shim/src/options.rs): what containerd
//! attaches to Create, in the three types it sends (runc's Options, ctr's
//! CreateOptions, the CRI's runtimeoptions TOML) and any other. The first
//! byte of an input picks the type URL; the rest is the value.

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci::Options as RuncOptions;
use containerd_shim_rust_v2::options;

use crate::rng::Rng;
use crate::{mutate, Target};

const TYPE_URLS: &[&str] = &[
    "containerd.runc.v1.Options",
    "type.googleapis.com/containerd.runc.v1.Options",
    "containerd.linux.runc.CreateOptions",
    "runtimeoptions.v1.Options",
    "io.containerd.rust.v2.Options",
    "",
];

pub struct OptionsTarget;

/// A protobuf field: tag, wire type 2 (length-delimited), the bytes.
fn bytes_field(n: u8, b: &[u8]) -> Vec<u8> {
    let mut v = vec![(n << 3) | 2, b.len() as u8];
    v.extend_from_slice(b);
    v
}

impl Target for OptionsTarget {
    fn name(&self) -> &'static str {
        "options"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let runc = RuncOptions { systemd_cgroup: true, io_uid: 1000, io_gid: 1000, shim_cgroup: "/shim".into(), task_api_version: 3, ..Default::default() };
        let toml = b"SystemdCgroup = true\nIoUid = 1000\nNoNewKeyring = true\nShimCgroup = \"/x\"\n[extra]\nx = 1\n";
        vec![
            [vec![0], runc.write_to_bytes().unwrap_or_default()].concat(),
            [vec![2], vec![0x40, 1, 0x50, 0xe8, 0x07, 0x58, 0xe8, 0x07]].concat(),
            [vec![3], bytes_field(3, toml)].concat(),
            [vec![3], bytes_field(2, b"/nonexistent/rsv2-fuzz.toml")].concat(),
            vec![4, 1, 2, 3],
        ]
    }

    fn mutate(&self, rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
        let mut v = mutate::bytes(rng, input, other);
        if rng.chance(8) && !v.is_empty() {
            v[0] = rng.below(TYPE_URLS.len()) as u8;
        }
        v
    }

    fn run(&mut self, input: &[u8]) -> Result<String, String> {
        let Some((first, value)) = input.split_first() else { return Ok(options::parse(None).map(|o| format!("{o:?}")).unwrap_or_else(|e| e.to_string())) };
        let any = Any { type_url: TYPE_URLS[*first as usize % TYPE_URLS.len()].into(), value: value.to_vec(), ..Default::default() };
        Ok(match options::parse(Some(&any)) {
            Ok(o) => format!("accepted: systemd {} keyring {} shim cgroup {} task api {:?}", o.systemd_cgroup, o.no_new_keyring, o.shim_cgroup.is_some(), o.task_api.is_some()),
            Err(e) => format!("refused: {e}"),
        })
    }
}
