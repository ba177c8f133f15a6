//! The container's terminal: a pty from the container's own devpts, its
//! master handed out over the console socket exactly as runc does it, its
//! slave made the process's controlling terminal and stdio.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
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
    let fd = ptmx.as_raw_fd();
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int from the pointer, which is valid.
    if unsafe { libc::ioctl(fd, libc::TIOCSPTLCK, &unlock) } < 0 {
        return Err(Error::os("unlock pty", Errno::last()));
    }
    // SAFETY: TIOCGPTPEER takes open flags by value and returns a new fd.
    let slave = unsafe { libc::ioctl(fd, libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if slave < 0 {
        return Err(Error::os("open pty peer (TIOCGPTPEER)", Errno::last()));
    }
    // SAFETY: the kernel just returned this fd; nothing else owns it.
    let slave = unsafe { OwnedFd::from_raw_fd(slave as RawFd) };
    Ok(Pty { master: ptmx, slave })
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
        set_winsize(pty.master.as_raw_fd(), size.height() as u16, size.width() as u16)?;
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
        set_winsize(pty.master.as_raw_fd(), size.height() as u16, size.width() as u16)?;
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
    // SAFETY: TIOCSCTTY on fd 0 with an integer argument.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err(Error::os("make the pty the controlling terminal", Errno::last()));
    }
    Ok(())
}

pub fn set_winsize(fd: RawFd, rows: u16, cols: u16) -> Result<()> {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(Error::os("set the terminal size", Errno::last()));
    }
    Ok(())
}
