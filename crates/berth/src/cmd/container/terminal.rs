//! `run -i` / `-it`: this terminal's input to the container through its
//! shim's attach socket, in raw mode with `-t`, and the window size with
//! it (on start and on every SIGWINCH).

use std::io::Read;
use std::os::fd::AsFd;

use anyhow::{Context, Result};
use berth_engine::engine::Attach;
use berth_engine::engine::Engine;
use berth_engine::store::ContainerRecord;
use nix::sys::termios::{self, SetArg, Termios};

/// Puts the terminal back as it was when dropped.
pub struct Terminal {
    saved: Option<Termios>,
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, t);
        }
    }
}

impl Terminal {
    /// Puts the terminal on stdin (if it is one) in raw mode, as docker
    /// does for `-t`, so keys reach the container's pty unchanged.
    pub fn enter() -> Result<Terminal> {
        let stdin = std::io::stdin();
        if !nix::unistd::isatty(stdin.as_fd()).unwrap_or(false) {
            return Ok(Terminal { saved: None });
        }
        let before = termios::tcgetattr(stdin.as_fd()).context("read the terminal's settings")?;
        let mut raw = before.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).context("make the terminal raw")?;
        Ok(Terminal { saved: Some(before) })
    }

    pub fn is_raw(&self) -> bool {
        self.saved.is_some()
    }
}

/// Calls `f` with the new size on each SIGWINCH, from a thread. The
/// signal is blocked here, before that thread starts: call this before
/// starting other threads, so that all inherit the mask and the watcher's
/// sigwait is the only taker.
pub fn on_resize(mut f: impl FnMut(u16, u16) + Send + 'static) -> Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut winch = SigSet::empty();
    winch.add(Signal::SIGWINCH);
    winch.thread_block().context("block SIGWINCH")?;
    std::thread::spawn(move || {
        while winch.wait().is_ok() {
            if let Some((rows, cols)) = window_size() {
                f(rows, cols);
            }
        }
    });
    Ok(())
}

/// Starts copying stdin to the container (a thread; it ends with stdin or
/// the process). With `tty` and a terminal on stdin, that terminal goes
/// raw and its size follows to the container.
pub fn forward_stdin(engine: &Engine, rec: &ContainerRecord, tty: bool) -> Result<Terminal> {
    let mut attach = match engine.attach(rec) {
        Ok(a) => a,
        // A container that ended at once has no shim left to take input;
        // its output and exit code still come from the log and exit file.
        Err(e) if engine.refresh(rec).status != berth_engine::store::Status::Running => {
            tracing::debug!("no attach: {e}");
            return Ok(Terminal { saved: None });
        }
        Err(e) => return Err(e).context("attach to the container"),
    };
    let terminal = if tty { Terminal::enter()? } else { Terminal { saved: None } };
    if terminal.is_raw() {
        if let Some((rows, cols)) = window_size() {
            let _ = attach.resize(rows, cols);
        }
        let mut resizer = engine.attach(rec).context("attach to the container")?;
        on_resize(move |rows, cols| {
            let _ = resizer.resize(rows, cols);
        })?;
    }
    std::thread::spawn(move || copy_stdin(&mut attach));
    Ok(terminal)
}

fn copy_stdin(attach: &mut Attach) {
    if attach.input_only().is_err() {
        return;
    }
    let mut buf = [0u8; 8192];
    let mut stdin = std::io::stdin().lock();
    loop {
        match stdin.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if attach.send_stdin(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = attach.close_stdin();
}

/// The terminal's size on stdin, if it is one.
pub fn window_size() -> Option<(u16, u16)> {
    let ws = rustix::termios::tcgetwinsize(std::io::stdin()).ok()?;
    (ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}
