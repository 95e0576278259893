//! The process's terminal: a pty opened inside the container, whose master
//! side goes to the shim over SCM_RIGHTS.
//!
//! The pty must come from the container's own devpts (opened after
//! pivot_root, or after joining the mount namespace for an exec), or the
//! container would hold a terminal of the host's devpts.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::MsFlags;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::stat::Mode;

use crate::channel::{Channel, ChannelError, FromInit};

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("terminal: {step}: {errno}")]
    Sys { step: &'static str, errno: Errno },
    #[error("terminal: {0}")]
    Channel(#[from] ChannelError),
}

fn err(step: &'static str) -> impl FnOnce(Errno) -> ConsoleError {
    move |errno| ConsoleError::Sys { step, errno }
}

/// Opens a pty, makes its slave the controlling terminal and stdio, and
/// sends the master to the shim. With `bind_console`, the slave is also
/// bind-mounted over /dev/console, as runc does for init.
pub fn setup(chan: &Channel, bind_console: bool) -> Result<(), ConsoleError> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).map_err(err("open /dev/ptmx"))?;
    grantpt(&master).map_err(err("grantpt"))?;
    unlockpt(&master).map_err(err("unlockpt"))?;
    let name = ptsname_r(&master).map_err(err("ptsname"))?;
    let slave: OwnedFd = open(Path::new(&name), OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC, Mode::empty()).map_err(err("open pty slave"))?;
    if bind_console {
        let console = Path::new("/dev/console");
        match open(console, OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW, Mode::from_bits_truncate(0o600)) {
            Ok(_) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(err("create /dev/console")(e)),
        }
        nix::mount::mount(Some(Path::new(&name)), console, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(err("bind /dev/console"))?;
    }
    // SAFETY: TIOCSCTTY on an fd we own; we are a session leader (setsid).
    Errno::result(unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) }).map_err(err("set controlling terminal"))?;
    for target in 0..3 {
        // SAFETY: dup2 onto the standard descriptors; dup2 clears
        // close-on-exec on the copies.
        Errno::result(unsafe { libc::dup2(slave.as_raw_fd(), target) }).map_err(err("dup pty slave to stdio"))?;
    }
    chan.send_fd(&FromInit::Console, master.as_raw_fd())?;
    Ok(())
}
