//! The sync channel between the shim and the init stage: one JSON message
//! per datagram over a SOCK_SEQPACKET socketpair, so message boundaries come
//! from the kernel and a dead peer reads as end-of-file.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use serde::{Deserialize, Serialize};

use crate::rootfs::CgroupMounts;

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("sync socket: {0}")]
    Io(Errno),
    #[error("sync socket: bad message: {0}")]
    Decode(String),
    #[error("sync socket: peer closed")]
    Closed,
}

/// What the shim tells the init stage.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToInit {
    Config(InitConfig),
    /// The uid and gid maps of the new user namespace are written.
    MapsWritten,
    /// Run the program.
    Start,
}

/// What the init stage tells the shim.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromInit {
    /// Stage 1 created a user namespace: write its id maps.
    UserNsReady,
    /// The host pid of the process that will exec the container's program.
    Pid(i32),
    /// The rootfs and process are set up; waiting for Start.
    Ready,
    Error(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitConfig {
    pub bundle: PathBuf,
    pub cgroups: CgroupMounts,
}

pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// A connected pair, both ends close-on-exec.
    pub fn pair() -> Result<(Channel, OwnedFd), ChannelError> {
        let (a, b) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).map_err(ChannelError::Io)?;
        Ok((Channel { fd: a }, b))
    }

    pub fn from_fd(fd: OwnedFd) -> Channel {
        Channel { fd }
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn send<T: Serialize>(&self, msg: &T) -> Result<(), ChannelError> {
        let buf = serde_json::to_vec(msg).map_err(|e| ChannelError::Decode(e.to_string()))?;
        loop {
            match send(self.fd.as_raw_fd(), &buf, MsgFlags::MSG_NOSIGNAL) {
                Err(Errno::EINTR) => continue,
                Err(Errno::EPIPE) | Err(Errno::ECONNRESET) => return Err(ChannelError::Closed),
                r => return r.map(drop).map_err(ChannelError::Io),
            }
        }
    }

    pub fn recv<T: for<'de> Deserialize<'de>>(&self) -> Result<T, ChannelError> {
        let mut buf = vec![0u8; 64 * 1024];
        let n = loop {
            match recv(self.fd.as_fd().as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Err(Errno::EINTR) => continue,
                Err(Errno::ECONNRESET) => return Err(ChannelError::Closed),
                r => break r.map_err(ChannelError::Io)?,
            }
        };
        if n == 0 {
            return Err(ChannelError::Closed);
        }
        serde_json::from_slice(&buf[..n]).map_err(|e| ChannelError::Decode(e.to_string()))
    }
}
