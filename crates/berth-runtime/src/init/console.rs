//! The container's terminal: a pty from the container's own devpts, its
//! master handed out over the console socket exactly as runc does it, its
//! slave made the process's controlling terminal and stdio.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::unistd::dup2_stdin;
use oci_spec::runtime::Process;
use pathrs::flags::OpenFlags;

use super::rootfs::{Rootfs, bind};
use crate::channel::send_packet;
use crate::error::{Context, Error, Result};

/// The payload runc sends with the pty master; receivers use it as the
/// file's name.
pub const CONSOLE_NAME: &[u8] = b"/dev/ptmx";

pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Opens a new pty through `ptmx` (an open /dev/ptmx of the container's
/// devpts) and its peer, without looking the slave up by path.
pub fn open_pty(ptmx: OwnedFd) -> Result<Pty> {
    use rustix::pty::OpenptFlags;
    rustix::pty::unlockpt(&ptmx).map_err(|e| Error::os("unlock pty", errno(e)))?;
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let slave =
        rustix::pty::ioctl_tiocgptpeer(&ptmx, flags).map_err(|e| Error::os("open pty peer (TIOCGPTPEER)", errno(e)))?;
    Ok(Pty { master: ptmx, slave })
}

/// rustix's errno as the runtime's errors carry it (nix's).
fn errno(e: rustix::io::Errno) -> Errno {
    Errno::from_raw(e.raw_os_error())
}

/// A pty of the container's devpts, opened through its /dev/ptmx, with the
/// slave also bound on /dev/console as runc does.
pub fn open_in_rootfs(rootfs: &Rootfs, process: &Process) -> Result<Pty> {
    let ptmx = rootfs
        .resolve(Path::new("/dev/ptmx"))?
        .reopen(OpenFlags::O_RDWR | OpenFlags::O_NOCTTY | OpenFlags::O_CLOEXEC)
        .step(|| "open /dev/ptmx in the container")?;
    let pty = open_pty(OwnedFd::from(ptmx))?;
    if let Some(size) = process.console_size() {
        set_winsize(&pty.master, size.height() as u16, size.width() as u16)?;
    }
    let console = rootfs.mkfile(Path::new("/dev/console"))?;
    bind(&crate::sys::fd_path(&pty.slave), &console, false).step(|| "bind the pty on /dev/console")?;
    Ok(pty)
}

/// Opens a pty from /dev/ptmx as seen by the calling process (exec, which
/// already runs inside the container's mount namespace and root).
pub fn open_here(process: &Process) -> Result<Pty> {
    let ptmx = nix::fcntl::open(
        "/dev/ptmx",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .step(|| "open /dev/ptmx in the container")?;
    let pty = open_pty(ptmx)?;
    if let Some(size) = process.console_size() {
        set_winsize(&pty.master, size.height() as u16, size.width() as u16)?;
    }
    Ok(pty)
}

/// Sends the master over the console socket.
pub fn send_master(socket: &OwnedFd, master: &OwnedFd) -> Result<()> {
    send_packet(socket.as_fd(), CONSOLE_NAME, &[master.as_raw_fd()])
        .step(|| "send the pty master on the console socket")
}

/// Makes the slave this process's controlling terminal and its stdio.
/// The caller must be a session leader.
pub fn attach_slave(slave: &OwnedFd) -> Result<()> {
    dup2_stdin(slave).step(|| "dup the pty to stdin")?;
    nix::unistd::dup2_stdout(slave).step(|| "dup the pty to stdout")?;
    nix::unistd::dup2_stderr(slave).step(|| "dup the pty to stderr")?;
    rustix::process::ioctl_tiocsctty(std::io::stdin())
        .map_err(|e| Error::os("make the pty the controlling terminal", errno(e)))
}

pub fn set_winsize(fd: impl AsFd, rows: u16, cols: u16) -> Result<()> {
    let ws = rustix::termios::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    rustix::termios::tcsetwinsize(fd, ws).map_err(|e| Error::os("set the terminal size", errno(e)))
}
