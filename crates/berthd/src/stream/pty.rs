//! A process's terminal as the streaming server drives it: the pty
//! master, non-blocking and polled (never blocking reads and writes on
//! tokio's blocking threads: a write to a pty whose command reads nothing
//! blocks for ever, and would hold up berthd's shutdown).

use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Input, Output, TermSize};

/// The master `fd`, non-blocking and registered with tokio.
pub fn async_master(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    rustix::io::ioctl_fionbio(&fd, true)?;
    // SAFETY: the OwnedFd is owned by the AsyncFd from here on: it stays
    // open and is the same descriptor until the AsyncFd is dropped.
    unsafe { AsyncFd::register(fd) }.map_err(Into::into)
}

pub async fn copy_to_pty(mut from: Input, pty: &AsyncFd<OwnedFd>) -> std::io::Result<()> {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let mut data = &buf[..n];
        while !data.is_empty() {
            let mut ready = pty.writable().await?;
            // The command and all it started are gone (HUP): nobody will
            // read, and a full buffer would answer EAGAIN for ever.
            if ready.ready().is_write_closed() {
                return Ok(());
            }
            if let Ok(r) = ready.try_io(|fd| rustix::io::write(fd.get_ref(), data).map_err(Into::into)) {
                data = &data[r?..];
            }
            // Never a loop that does not yield, whatever the pty answers.
            tokio::task::consume_budget().await;
        }
    }
}

pub async fn copy_from_pty(pty: &AsyncFd<OwnedFd>, to: Option<Output>) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut to = to;
    loop {
        let Ok(mut ready) = pty.readable().await else { break };
        match ready.try_io(|fd| rustix::io::read(fd.get_ref(), &mut buf[..]).map_err(Into::into)) {
            Err(_would_block) => continue,
            // EIO: the slave side is closed, the command is done.
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => {
                if let Some(w) = to.as_mut()
                    && w.write_all(&buf[..n]).await.is_err()
                {
                    to = None;
                }
            }
        }
    }
    if let Some(mut w) = to {
        let _ = w.shutdown().await;
    }
}

pub fn winsize(s: TermSize) -> rustix::termios::Winsize {
    rustix::termios::Winsize { ws_row: s.height, ws_col: s.width, ws_xpixel: 0, ws_ypixel: 0 }
}

/// How long a tty exec waits for the client's terminal size before it
/// starts the command (clients send it first thing).
pub const FIRST_SIZE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
