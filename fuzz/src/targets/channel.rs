//! The sync channel between the shim and the init stage
//! (runtime/src/channel.rs): one JSON message per seqpacket datagram. The
//! init stage reads ToInit from the shim, and the shim reads FromInit from
//! a process that, once it runs the container's setup, is no longer
//! trusted. Each input is sent as one datagram and read back through the
//! real receive path as each of the two message types.

use std::os::fd::{AsRawFd, OwnedFd};

use runtime::channel::{Channel, FromInit, ToInit};

use crate::rng::Rng;
use crate::{mutate, Target};

pub struct ChannelTarget {
    reader: Channel,
    writer: OwnedFd,
}

impl ChannelTarget {
    pub fn new() -> Result<ChannelTarget, String> {
        let (reader, writer) = Channel::pair().map_err(|e| e.to_string())?;
        Ok(ChannelTarget { reader, writer })
    }

    fn send(&self, input: &[u8]) -> Result<(), String> {
        // SAFETY: a send of a valid buffer on our own socket.
        let n = unsafe { libc::send(self.writer.as_raw_fd(), input.as_ptr().cast(), input.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            return Err(format!("send a {}-byte datagram: {}", input.len(), std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

impl Target for ChannelTarget {
    fn name(&self) -> &'static str {
        "channel"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let config = serde_json::json!({"Config": {
            "id": "fuzz", "bundle": "/run/x/bundle",
            "cgroups": {"v1": [["memory", "/sys/fs/cgroup/memory/rsv2/fuzz"]], "unified": false},
            "cgroup_tasks": ["/sys/fs/cgroup/memory/rsv2/fuzz/tasks"],
            "exec": {"init_pid": 1234, "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}}, "seccomp": null},
            "new_keyring": true
        }});
        let mut seeds = vec![serde_json::to_vec(&config).unwrap_or_default()];
        for m in [r#""MapsWritten""#, r#""HooksDone""#, r#""Start""#, r#""UserNsReady""#, r#"{"Pid":42}"#, r#""RuntimeHooks""#, r#""Console""#, r#""Ready""#, r#"{"Error":"mount /proc: EPERM"}"#] {
            seeds.push(m.as_bytes().to_vec());
        }
        seeds
    }

    fn mutate(&self, rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
        if rng.chance(4) {
            mutate::bytes(rng, input, other)
        } else {
            mutate::json(rng, input, other)
        }
    }

    fn run(&mut self, input: &[u8]) -> Result<String, String> {
        self.send(input)?;
        let to_init = match self.reader.recv::<ToInit>() {
            Ok(m) => format!("ToInit {}", variant(&format!("{m:?}"))),
            Err(e) => format!("ToInit refused: {e}"),
        };
        self.send(input)?;
        let from_init = match self.reader.recv::<FromInit>() {
            Ok(m) => format!("FromInit {}", variant(&format!("{m:?}"))),
            Err(e) => format!("FromInit refused: {e}"),
        };
        Ok(format!("{to_init}; {from_init}"))
    }
}

/// The variant's name, from its Debug form.
fn variant(debug: &str) -> &str {
    debug.split(|c: char| !c.is_alphanumeric()).next().unwrap_or(debug)
}
