//! The sync channel between the shim and the init stage: one JSON message
//! per datagram over a SOCK_SEQPACKET socketpair, so message boundaries come
//! from the kernel and a dead peer reads as end-of-file.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, send, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType};
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
    /// The prestart and createRuntime hooks ran.
    HooksDone,
    /// The source asked for with [`FromInit::OpenMountSource`] rides along
    /// as SCM_RIGHTS.
    MountSource,
    /// The shim could not open that source.
    MountSourceError(String),
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
    /// Stage 2, in a user namespace, asks the shim to open a bind mount's
    /// source (O_PATH, through /proc/PID/root, so in stage 2's own mount
    /// namespace): the container's root may not be allowed to reach it.
    OpenMountSource(PathBuf),
    /// The mounts are in place: run the prestart and createRuntime hooks.
    RuntimeHooks,
    /// The master side of the process's terminal rides along, as SCM_RIGHTS.
    Console,
    /// The rootfs and process are set up; waiting for Start.
    Ready,
    Error(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitConfig {
    /// The container's id, for hook state.
    pub id: String,
    pub bundle: PathBuf,
    pub cgroups: CgroupMounts,
    /// cgroup v1 `tasks` files that stage 1, still single-threaded, writes
    /// "0" into to move itself into the container's cgroup before it forks
    /// (the shim's cgroup::Entry::SelfTasks). Empty when the shim moves it.
    pub cgroup_tasks: Vec<PathBuf>,
    /// Set for an exec: join the container instead of creating it.
    pub exec: Option<ExecConfig>,
    /// Give the container a session keyring of its own (runc's default;
    /// the NoNewKeyring option turns it off).
    pub new_keyring: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecConfig {
    /// The container's init, whose namespaces the exec joins.
    pub init_pid: i32,
    pub process: oci_spec::runtime::Process,
    /// The container's seccomp profile, as created: an exec runs under it
    /// too. Sent rather than re-read from the bundle on every exec.
    pub seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
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

    /// Sends a message with an fd attached.
    pub fn send_fd<T: Serialize>(&self, msg: &T, fd: RawFd) -> Result<(), ChannelError> {
        let buf = serde_json::to_vec(msg).map_err(|e| ChannelError::Decode(e.to_string()))?;
        let fds = [fd];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        sendmsg::<()>(self.fd.as_raw_fd(), &[IoSlice::new(&buf)], &cmsg, MsgFlags::MSG_NOSIGNAL, None)
            .map(drop)
            .map_err(ChannelError::Io)
    }

    pub fn recv<T: for<'de> Deserialize<'de>>(&self) -> Result<T, ChannelError> {
        self.recv_fd().map(|(m, _)| m)
    }

    /// The size of the next message, without taking it: a seqpacket
    /// socket reports the whole datagram's length under MSG_TRUNC.
    fn next_len(&self) -> Result<usize, ChannelError> {
        loop {
            // SAFETY: a zero-length peek into no buffer.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), std::ptr::null_mut(), 0, libc::MSG_PEEK | libc::MSG_TRUNC) };
            match Errno::result(n) {
                Err(Errno::EINTR) => continue,
                Err(Errno::ECONNRESET) => return Err(ChannelError::Closed),
                Err(e) => return Err(ChannelError::Io(e)),
                Ok(n) => return Ok(n as usize),
            }
        }
    }

    /// Receives a message and the fd that came with it, if any.
    pub fn recv_fd<T: for<'de> Deserialize<'de>>(&self) -> Result<(T, Option<OwnedFd>), ChannelError> {
        // Sized to the message, so that a large one (an exec's seccomp
        // profile) is never cut short.
        let mut buf = vec![0u8; self.next_len()?.max(1)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let (n, fd) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(self.fd.as_fd().as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
                Err(Errno::EINTR) => continue,
                Err(Errno::ECONNRESET) => return Err(ChannelError::Closed),
                Err(e) => return Err(ChannelError::Io(e)),
                Ok(msg) => {
                    let mut fd = None;
                    for c in msg.cmsgs().map_err(ChannelError::Io)? {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            // SAFETY: the kernel installed these fds for us.
                            fd = fds.first().map(|f| unsafe { OwnedFd::from_raw_fd(*f) });
                        }
                    }
                    break (msg.bytes, fd);
                }
            }
        };
        if n == 0 {
            return Err(ChannelError::Closed);
        }
        let msg = serde_json::from_slice(&buf[..n]).map_err(|e| ChannelError::Decode(e.to_string()))?;
        Ok((msg, fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_larger_than_any_fixed_buffer_arrives_whole() {
        let (a, b) = Channel::pair().unwrap();
        let b = Channel::from_fd(b);
        // An exec's seccomp profile can be large; a 64 KiB receive buffer
        // used to cut such a message short.
        let big = "x".repeat(150 * 1024);
        a.send(&FromInit::Error(big.clone())).unwrap();
        a.send(&FromInit::Ready).unwrap();
        match b.recv::<FromInit>().unwrap() {
            FromInit::Error(s) => assert_eq!(s.len(), big.len()),
            other => panic!("got {other:?}"),
        }
        assert!(matches!(b.recv::<FromInit>().unwrap(), FromInit::Ready));
        drop(a);
        assert!(matches!(b.recv::<FromInit>(), Err(ChannelError::Closed)));
    }
}
