//! Waiting for a container process in the foreground (`run` and `exec`
//! without --detach): forward signals to it, relay its terminal, reap it,
//! and return its exit code. One poll loop, no threads.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, SetArg, Termios};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::error::{Context, Result};
use crate::init::console::set_winsize;
use crate::sys;

/// Signals the runtime receives on the process's behalf. Synchronous
/// faults (SIGSEGV and friends) are the runtime's own and are not blocked.
fn forwarded() -> SigSet {
    let mut set = SigSet::empty();
    for sig in Signal::iterator() {
        use Signal::*;
        if !matches!(sig, SIGKILL | SIGSTOP | SIGSEGV | SIGBUS | SIGFPE | SIGILL | SIGTRAP | SIGABRT | SIGSYS | SIGPIPE)
        {
            set.add(sig);
        }
    }
    set
}

/// Signals blocked and readable through a signalfd. Block them before
/// forking the container so none is lost; the container's processes
/// restore an empty mask before exec.
pub struct Signals {
    fd: SignalFd,
    old: SigSet,
}

impl Signals {
    pub fn block() -> Result<Signals> {
        let set = forwarded();
        let mut old = SigSet::empty();
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)).step(|| "block signals")?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).step(|| "signalfd")?;
        Ok(Signals { fd, old })
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.old), None);
    }
}

/// Puts a terminal in raw mode until dropped.
struct RawMode {
    fd: i32,
    saved: Termios,
}

impl RawMode {
    fn enter(fd: BorrowedFd<'_>) -> Option<RawMode> {
        let saved = termios::tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { fd: fd.as_raw_fd(), saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: the fd is our stdin, open for the life of the process.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let _ = termios::tcsetattr(fd, SetArg::TCSANOW, &self.saved);
    }
}

/// Waits for process `pid` (our child or re-parented to us as subreaper),
/// relaying its pty if there is one, and returns its exit code.
pub fn wait(pid: i32, pty: Option<OwnedFd>, signals: &Signals) -> Result<i32> {
    let stdin = std::io::stdin();
    let stdin_tty = nix::unistd::isatty(stdin.as_fd()).unwrap_or(false);
    let _raw = if pty.is_some() && stdin_tty { RawMode::enter(stdin.as_fd()) } else { None };
    if let Some(m) = &pty {
        copy_winsize(m);
    }
    let mut stdin_open = pty.is_some();
    let mut pty_open = pty.is_some();
    let mut exit_code = None;
    let mut buf = [0u8; 16 * 1024];
    while exit_code.is_none() {
        let mut fds = vec![PollFd::new(signals.fd.as_fd(), PollFlags::POLLIN)];
        if let (true, Some(m)) = (pty_open, &pty) {
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
        }
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(Errno::EINTR) => continue,
            r => {
                r.step(|| "poll")?;
            }
        }
        let ready: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
        drop(fds);
        if ready[0] {
            exit_code = handle_signals(pid, signals, pty.as_ref())?;
        }
        let mut i = 1;
        if let (true, Some(m)) = (pty_open, &pty) {
            if ready[i] && !copy_once(m, &mut std::io::stdout(), &mut buf) {
                pty_open = false;
            }
            i += 1;
        }
        if let (true, Some(m)) = (stdin_open && ready.get(i) == Some(&true), &pty) {
            match stdin.lock().read(&mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => write_all_fd(m, &buf[..n]),
            }
        }
    }
    if let (true, Some(m)) = (pty_open, &pty) {
        drain(m, &mut buf);
    }
    Ok(exit_code.unwrap_or(0))
}

/// Handles pending signals; returns the exit code once `pid` is reaped.
fn handle_signals(pid: i32, signals: &Signals, pty: Option<&OwnedFd>) -> Result<Option<i32>> {
    let mut code = None;
    while let Ok(Some(info)) = signals.fd.read_signal() {
        let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else { continue };
        match sig {
            Signal::SIGCHLD => code = code.or(reap(pid)),
            Signal::SIGWINCH => {
                if let Some(m) = pty {
                    copy_winsize(m);
                }
            }
            sig => {
                let _ = kill(Pid::from_raw(pid), sig);
            }
        }
    }
    // A SIGCHLD may have been merged with one we already read.
    Ok(code.or_else(|| reap(pid)))
}

/// Reaps every exited child (as subreaper we inherit orphans too);
/// returns the exit code if `pid` was among them.
fn reap(pid: i32) -> Option<i32> {
    let mut code = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return code,
            Ok(s) => {
                if s.pid() == Some(Pid::from_raw(pid)) {
                    code = sys::exit_code(s);
                }
            }
        }
    }
}

/// Copies one read's worth from `from` to `to`; false at end of input.
fn copy_once(from: &OwnedFd, to: &mut impl Write, buf: &mut [u8]) -> bool {
    match nix::unistd::read(from.as_fd(), buf) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            let _ = to.write_all(&buf[..n]);
            let _ = to.flush();
            true
        }
    }
}

fn write_all_fd(fd: &OwnedFd, mut data: &[u8]) {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => continue,
            Err(_) => return,
        }
    }
}

/// After the process exits: whatever output is still buffered in the pty,
/// without waiting for processes that may still hold it open.
fn drain(master: &OwnedFd, buf: &mut [u8]) {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let _ = fcntl(master.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
    let mut out = std::io::stdout();
    while copy_once(master, &mut out, buf) {}
}

fn copy_winsize(master: &OwnedFd) {
    if let Ok(ws) = rustix::termios::tcgetwinsize(std::io::stdin())
        && ws.ws_row > 0
    {
        let _ = set_winsize(master, ws.ws_row, ws.ws_col);
    }
}
