//! The engine's side of the shim: start one and learn whether the
//! container started, attach to it, stop its restarts, read its exit.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::config::Config;
use crate::{ShimError, protocol};

/// A started container.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Started {
    /// The container's init, in the host's pid namespace.
    pub pid: i32,
    pub shim_pid: i32,
}

/// Starts a shim for `cfg` and waits until the container runs (or the
/// runtime has refused it: its message is the error).
pub fn spawn(shim: &Path, cfg: &Config) -> Result<Started, ShimError> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| ShimError::sys("pipe", e))?;
    let mut cfg = cfg.clone();
    cfg.sync_fd = Some(3);
    let mut cmd = Command::new(shim);
    cmd.args(cfg.to_args()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let wfd = w.as_raw_fd();
    // SAFETY: dup2 is async-signal-safe; `w` stays open until spawn returns.
    unsafe {
        cmd.pre_exec(move || if libc::dup2(wfd, 3) < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) });
    }
    let mut child = cmd.spawn().map_err(|e| ShimError::Spawn { path: shim.into(), source: e })?;
    drop(w);
    // The shim forks and its first process exits at once.
    let _ = child.wait();
    let mut report = String::new();
    std::fs::File::from(r)
        .read_to_string(&mut report)
        .map_err(|e| ShimError::io("read the start report of", shim, e))?;
    let v: serde_json::Value = serde_json::from_str(report.trim())
        .map_err(|_| ShimError::NoReport(shim_log(&cfg.state_dir).map(|l| format!(": {l}")).unwrap_or_default()))?;
    if let Some(e) = v["error"].as_str() {
        return Err(ShimError::Runtime(e.to_owned()));
    }
    match (v["pid"].as_i64(), v["shimPid"].as_i64()) {
        (Some(pid), Some(shim_pid)) => Ok(Started { pid: pid as i32, shim_pid: shim_pid as i32 }),
        _ => Err(ShimError::NoReport(format!(": {report}"))),
    }
}

fn shim_log(state_dir: &Path) -> Option<String> {
    std::fs::read_to_string(state_dir.join("shim.log")).ok().map(|s| s.trim().to_owned())
}

/// How the container ended (exit.json), once it has.
#[derive(Debug, Clone, PartialEq)]
pub struct Exit {
    pub code: i32,
    pub exited_at: String,
    pub restart_count: u32,
}

pub fn exit_status(state_dir: &Path) -> Option<Exit> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(state_dir.join("exit.json")).ok()?).ok()?;
    Some(Exit {
        code: v["exitCode"].as_i64()? as i32,
        exited_at: v["exitedAt"].as_str()?.to_owned(),
        restart_count: v["restartCount"].as_u64().unwrap_or(0) as u32,
    })
}

/// Marks the container as stopped by the user: its shim will not restart
/// it (`always`, `unless-stopped`). The engine then kills it through the
/// runtime.
pub fn mark_stopped(state_dir: &Path) -> std::io::Result<()> {
    std::fs::write(state_dir.join("stopped"), "")
}

/// A connection to a container's attach socket.
pub struct Attach {
    stream: UnixStream,
}

impl Attach {
    pub fn connect(state_dir: &Path) -> Result<Attach, ShimError> {
        let path = state_dir.join("attach.sock");
        let stream = UnixStream::connect(&path).map_err(|e| ShimError::io("connect to", &path, e))?;
        Ok(Attach { stream })
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    pub fn send_stdin(&mut self, data: &[u8]) -> std::io::Result<()> {
        protocol::write_frame(&mut self.stream, protocol::STDIN, data)
    }

    pub fn close_stdin(&mut self) -> std::io::Result<()> {
        protocol::write_frame(&mut self.stream, protocol::CLOSE_STDIN, &[])
    }

    pub fn resize(&mut self, rows: u16, cols: u16) -> std::io::Result<()> {
        let mut p = rows.to_be_bytes().to_vec();
        p.extend_from_slice(&cols.to_be_bytes());
        protocol::write_frame(&mut self.stream, protocol::RESIZE, &p)
    }

    /// Asks the shim for an exec session: `args` are the runtime's `exec`
    /// arguments after `exec` (options, container ID, argv); `stdio` the
    /// process's stdin, stdout and stderr (sent with SCM_RIGHTS). Returns
    /// the process's pid once it runs, or the runtime's message.
    pub fn exec(&mut self, args: &[String], stdio: [std::os::fd::BorrowedFd<'_>; 3]) -> Result<i32, ShimError> {
        use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
        if args.iter().any(|a| a.contains('\0')) {
            return Err(ShimError::Usage("exec arguments cannot hold NUL bytes".into()));
        }
        let frame = protocol::encode(protocol::EXEC, args.join("\0").as_bytes());
        let fds = stdio.map(|f| f.as_raw_fd());
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let iov = [std::io::IoSlice::new(&frame)];
        let sent = sendmsg::<()>(self.stream.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
            .map_err(|e| ShimError::sys("send the exec request", e))?;
        if sent < frame.len() {
            use std::io::Write;
            self.stream
                .write_all(&frame[sent..])
                .map_err(|e| ShimError::io("send the exec request to", Path::new("the shim"), e))?;
        }
        // A shim that predates exec sessions would never answer.
        let _ = self.stream.set_read_timeout(Some(std::time::Duration::from_secs(60)));
        let answer = self.exec_answer();
        let _ = self.stream.set_read_timeout(None);
        answer
    }

    fn exec_answer(&mut self) -> Result<i32, ShimError> {
        loop {
            match self.next_frame() {
                Ok(Some((protocol::EXEC_STARTED, p))) if p.len() == 4 => {
                    return Ok(i32::from_be_bytes([p[0], p[1], p[2], p[3]]));
                }
                Ok(Some((protocol::EXEC_FAILED, msg))) => {
                    return Err(ShimError::Runtime(String::from_utf8_lossy(&msg).into_owned()));
                }
                Ok(Some(_)) => {}
                Ok(None) => return Err(ShimError::NoReport(": the shim closed the connection".into())),
                Err(e) => return Err(ShimError::io("read from", Path::new("the shim"), e)),
            }
        }
    }

    /// After [`Attach::exec`]: waits for the session's process to exit;
    /// its code (128+N for a signal).
    pub fn exec_exit(&mut self) -> Result<i32, ShimError> {
        loop {
            match self.next_frame() {
                Ok(Some((protocol::EXEC_EXIT, p))) if p.len() == 4 => {
                    return Ok(i32::from_be_bytes([p[0], p[1], p[2], p[3]]));
                }
                Ok(Some(_)) => {}
                Ok(None) => return Err(ShimError::NoReport(": the shim ended before the exec session".into())),
                Err(e) => return Err(ShimError::io("read from", Path::new("the shim"), e)),
            }
        }
    }

    /// The next frame from the shim: output, or the exit; `None` when the
    /// shim has closed the connection.
    pub fn next_frame(&mut self) -> std::io::Result<Option<(u8, Vec<u8>)>> {
        protocol::read_frame(&mut self.stream)
    }
}
