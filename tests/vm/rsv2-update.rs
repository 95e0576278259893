//! `rsv2-update`: sends one `containerd.task.v2.Task/Update` call to a shim
//! over ttrpc, the call containerd makes for `Tasks.Update` (CRI's
//! UpdateContainerResources). ctr 1.6 has no `task update` command, so the
//! VM's `v2_update` test uses this instead.
//!
//! Built by `run-vm.sh` with plain `rustc` (no dependencies: the protobuf
//! fields and the ttrpc framing are encoded by hand) and run inside the guest:
//!
//! ```text
//! rsv2-update [--address unix:///run/containerd/s/...] --namespace NS --id ID --resources JSON
//! ```
//!
//! Without `--address`, the shim's socket is read from the `address` file that
//! containerd keeps in the task's bundle,
//! `/run/containerd/io.containerd.runtime.v2.task/NS/ID/address`. `JSON` is an
//! OCI `LinuxResources` object, e.g. `{"memory":{"limit":67108864}}`; it is
//! sent as containerd sends it: a `google.protobuf.Any` whose type URL is
//! `types.containerd.io/opencontainers/runtime-spec/1/LinuxResources` and whose
//! value is the JSON text. Exit status 0 when the shim answered OK, 1 with the
//! shim's status code and message otherwise, 2 on usage or I/O errors.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::exit;
use std::time::Duration;

const RESOURCES_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";
const SERVICE: &str = "containerd.task.v2.Task";
const METHOD: &str = "Update";
/// Metadata key through which containerd passes the namespace over ttrpc.
const NAMESPACE_KEY: &str = "containerd-namespace-ttrpc";
const MSG_REQUEST: u8 = 1;
const MSG_RESPONSE: u8 = 2;
const TIMEOUT: Duration = Duration::from_secs(30);

fn varint(buf: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            buf.push(b);
            return;
        }
        buf.push(b | 0x80);
    }
}

fn field_bytes(buf: &mut Vec<u8>, field: u64, data: &[u8]) {
    varint(buf, field << 3 | 2);
    varint(buf, data.len() as u64);
    buf.extend_from_slice(data);
}

fn field_varint(buf: &mut Vec<u8>, field: u64, v: u64) {
    varint(buf, field << 3);
    varint(buf, v);
}

/// One decoded protobuf field: number and either a varint or a byte string
/// (fixed-width fields are skipped, none of the messages read here has any).
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn read_varint(data: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

fn fields(data: &[u8]) -> Result<Vec<(u64, Value<'_>)>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let tag = read_varint(data, &mut pos)?;
        let (field, wire) = (tag >> 3, tag & 7);
        match wire {
            0 => out.push((field, Value::Varint(read_varint(data, &mut pos)?))),
            2 => {
                let len = read_varint(data, &mut pos)? as usize;
                let end = pos
                    .checked_add(len)
                    .filter(|&e| e <= data.len())
                    .ok_or("truncated field")?;
                out.push((field, Value::Bytes(&data[pos..end])));
                pos = end;
            }
            1 => pos += 8,
            5 => pos += 4,
            w => return Err(format!("unsupported wire type {w}")),
        }
    }
    Ok(out)
}

fn die(code: i32, msg: &str) -> ! {
    eprintln!("rsv2-update: {msg}");
    exit(code)
}

fn main() {
    let (mut address, mut namespace, mut id, mut resources) = (None, None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| die(2, &format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--address" => address = Some(value()),
            "--namespace" => namespace = Some(value()),
            "--id" => id = Some(value()),
            "--resources" => resources = Some(value()),
            _ => die(2, &format!("unknown argument {flag}; usage: rsv2-update [--address A] --namespace NS --id ID --resources JSON")),
        }
    }
    let namespace = namespace.unwrap_or_else(|| die(2, "--namespace is required"));
    let id = id.unwrap_or_else(|| die(2, "--id is required"));
    let resources = resources.unwrap_or_else(|| die(2, "--resources is required"));
    let address = address.unwrap_or_else(|| {
        let file =
            format!("/run/containerd/io.containerd.runtime.v2.task/{namespace}/{id}/address");
        std::fs::read_to_string(&file)
            .unwrap_or_else(|e| die(2, &format!("cannot read the shim address from {file}: {e}")))
            .trim()
            .to_string()
    });
    let path = address
        .strip_prefix("unix://")
        .unwrap_or(&address)
        .to_string();

    // UpdateTaskRequest { id = 1; google.protobuf.Any resources = 2; }
    let mut any = Vec::new();
    field_bytes(&mut any, 1, RESOURCES_TYPE_URL.as_bytes());
    field_bytes(&mut any, 2, resources.as_bytes());
    let mut payload = Vec::new();
    field_bytes(&mut payload, 1, id.as_bytes());
    field_bytes(&mut payload, 2, &any);

    // ttrpc Request { service = 1; method = 2; payload = 3; timeout_nano = 4; repeated KeyValue metadata = 5; }
    let mut kv = Vec::new();
    field_bytes(&mut kv, 1, NAMESPACE_KEY.as_bytes());
    field_bytes(&mut kv, 2, namespace.as_bytes());
    let mut request = Vec::new();
    field_bytes(&mut request, 1, SERVICE.as_bytes());
    field_bytes(&mut request, 2, METHOD.as_bytes());
    field_bytes(&mut request, 3, &payload);
    field_varint(&mut request, 4, TIMEOUT.as_nanos() as u64);
    field_bytes(&mut request, 5, &kv);

    // Frame header: length (u32 BE), stream id (u32 BE, odd from a client), type, flags.
    let stream_id: u32 = 1;
    let mut frame = Vec::with_capacity(10 + request.len());
    frame.extend_from_slice(&(request.len() as u32).to_be_bytes());
    frame.extend_from_slice(&stream_id.to_be_bytes());
    frame.push(MSG_REQUEST);
    frame.push(0);
    frame.extend_from_slice(&request);

    let mut sock = UnixStream::connect(&path)
        .unwrap_or_else(|e| die(2, &format!("cannot connect to the shim at {path}: {e}")));
    sock.set_read_timeout(Some(TIMEOUT)).ok();
    sock.set_write_timeout(Some(TIMEOUT)).ok();
    sock.write_all(&frame)
        .unwrap_or_else(|e| die(2, &format!("cannot send the request to {path}: {e}")));

    let mut header = [0u8; 10];
    sock.read_exact(&mut header)
        .unwrap_or_else(|e| die(2, &format!("no response from the shim at {path}: {e}")));
    let len = u32::from_be_bytes(header[0..4].try_into().unwrap()) as usize;
    let got_stream = u32::from_be_bytes(header[4..8].try_into().unwrap());
    if header[8] != MSG_RESPONSE || got_stream != stream_id {
        die(
            2,
            &format!(
                "unexpected ttrpc frame: type {} stream {got_stream}",
                header[8]
            ),
        );
    }
    let mut body = vec![0u8; len];
    sock.read_exact(&mut body)
        .unwrap_or_else(|e| die(2, &format!("truncated response from the shim: {e}")));

    // Response { google.rpc.Status status = 1; bytes payload = 2; }
    // Status { int32 code = 1; string message = 2; }
    let response = fields(&body).unwrap_or_else(|e| die(2, &format!("bad response: {e}")));
    let (mut code, mut message) = (0u64, String::new());
    for (field, value) in response {
        if let (1, Value::Bytes(status)) = (field, value) {
            for (f, v) in fields(status).unwrap_or_else(|e| die(2, &format!("bad status: {e}"))) {
                match (f, v) {
                    (1, Value::Varint(c)) => code = c,
                    (2, Value::Bytes(m)) => message = String::from_utf8_lossy(m).into_owned(),
                    _ => {}
                }
            }
        }
    }
    if code != 0 {
        die(
            1,
            &format!("shim answered Update with status {code}: {message}"),
        );
    }
    println!("updated {id}");
}
