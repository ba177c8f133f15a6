//! The engine's side of the shim: start one and learn whether the
//! container started, attach to it, stop its restarts, read its exit.

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::config::Config;
use crate::process::ProcessId;
use crate::{ShimError, protocol};

/// A started container.
#[derive(Debug, Clone, PartialEq)]
pub struct Started {
    /// The container's init, in the host's pid namespace.
    pub pid: i32,
    pub shim_pid: i32,
    /// When the container started, as the shim saw it (RFC 3339).
    pub started_at: String,
}

/// Starts a container's exit command (`argv`, e.g. `berth rm ID` for
/// `--rm`) and leaves it running, in its own process group and without
/// stdio, so it outlives whoever started it: the shim when its container
/// ends, the engine when it finds the shim gone.
pub fn spawn_exit_command(argv: &[String]) {
    let Some((prog, args)) = argv.split_first() else { return };
    let _ = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
}

/// Starts a shim for `cfg` and waits until the container runs (or the
/// runtime has refused it: its message is the error).
pub fn spawn(shim: &Path, cfg: &Config) -> Result<Started, ShimError> {
    // The watch is dropped at once: the shim learns that nobody waits.
    spawn_watched(shim, cfg).map(|(started, _)| started)
}

/// [`spawn`], and a line to the shim that stays open: it reports the
/// container's last exit, and the shim holds back its exit command
/// (`rm` for `--rm`) until the watch is dropped, so an attached client
/// reads the whole log before anything is removed. A client that dies
/// drops it too (the kernel closes the socket).
pub fn spawn_watched(shim: &Path, cfg: &Config) -> Result<(Started, ExitWatch), ShimError> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)
        .map_err(|e| ShimError::sys("socketpair", e))?;
    let mut cfg = cfg.clone();
    cfg.sync_fd = Some(3);
    let mut cmd = Command::new(shim);
    cmd.args(cfg.to_args()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let wfd = theirs.as_raw_fd();
    // SAFETY: dup2 is async-signal-safe; `theirs` stays open until spawn
    // returns. dup2 clears close-on-exec on fd 3 only.
    unsafe {
        cmd.pre_exec(move || if libc::dup2(wfd, 3) < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) });
    }
    let mut child = cmd.spawn().map_err(|e| ShimError::Spawn { path: shim.into(), source: e })?;
    drop(theirs);
    // The shim forks and its first process exits at once.
    let _ = child.wait();
    let mut reader = BufReader::new(UnixStream::from(ours));
    let mut report = String::new();
    reader.read_line(&mut report).map_err(|e| ShimError::io("read the start report of", shim, e))?;
    let v: serde_json::Value = serde_json::from_str(report.trim())
        .map_err(|_| ShimError::NoReport(shim_log(&cfg.state_dir).map(|l| format!(": {l}")).unwrap_or_default()))?;
    if let Some(e) = v["error"].as_str() {
        // "errno" is there when the runtime logged one (berth-runtime).
        return Err(ShimError::from_runtime(e.to_owned(), v["errno"].as_i64().map(|n| n as i32)));
    }
    match (v["pid"].as_i64(), v["shimPid"].as_i64()) {
        (Some(pid), Some(shim_pid)) => {
            let started_at = v["startedAt"].as_str().unwrap_or_default().to_owned();
            Ok((Started { pid: pid as i32, shim_pid: shim_pid as i32, started_at }, ExitWatch { reader }))
        }
        _ => Err(ShimError::NoReport(format!(": {report}"))),
    }
}

/// The open line from [`spawn_watched`].
pub struct ExitWatch {
    reader: BufReader<UnixStream>,
}

/// What an [`ExitWatch`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    /// The container's last exit, with its code.
    Exited(i32),
    /// Nothing yet.
    Running,
    /// The shim ended without reporting an exit (it was killed).
    Lost,
}

impl ExitWatch {
    /// Waits up to `timeout` for the last exit.
    pub fn wait(&mut self, timeout: Duration) -> Watched {
        if self.reader.get_ref().set_read_timeout(Some(timeout.max(Duration::from_millis(1)))).is_err() {
            return Watched::Lost;
        }
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            // One short line, written whole: a timeout never splits it.
            Ok(_) if line.ends_with('\n') => serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|v| v["exitCode"].as_i64())
                .map_or(Watched::Lost, |c| Watched::Exited(c as i32)),
            Ok(_) => Watched::Lost,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                Watched::Running
            }
            Err(_) => Watched::Lost,
        }
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
    /// The init whose exit this is (None from shims that did not say).
    pub pid: Option<i32>,
    /// No restart follows: the shim is done with the container.
    pub last: bool,
    /// The kernel's OOM killer killed a process of the container's cgroup
    /// during the run that ended (false in files of shims that predate it).
    pub oom_killed: bool,
}

pub fn exit_status(state_dir: &Path) -> Option<Exit> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(state_dir.join("exit.json")).ok()?).ok()?;
    Some(Exit {
        code: v["exitCode"].as_i64()? as i32,
        exited_at: v["exitedAt"].as_str()?.to_owned(),
        restart_count: v["restartCount"].as_u64().unwrap_or(0) as u32,
        pid: v["pid"].as_i64().map(|p| p as i32),
        last: v["last"].as_bool().unwrap_or(false),
        oom_killed: v["oomKilled"].as_bool().unwrap_or(false),
    })
}

/// Records an exit that no shim saw (its shim was killed): `code` for the
/// init `pid`. Only if there is none yet, and only in a state directory
/// that still exists (a removed container stays removed). True if this
/// call wrote it.
pub fn record_lost_exit(state_dir: &Path, pid: i32, code: i32) -> bool {
    let text = format!(
        "{{\"exitCode\":{code},\"exitedAt\":\"{}\",\"restartCount\":0,\"pid\":{pid},\"last\":true,\"error\":\"the shim ended before the container: exit status unknown\"}}\n",
        crate::time::now()
    );
    let tmp = state_dir.join(format!(".exit.json.{}", std::process::id()));
    if std::fs::write(&tmp, text).is_err() {
        return false;
    }
    // A link, not a rename: the first to record wins, the others see it.
    let won = std::fs::hard_link(&tmp, state_dir.join("exit.json")).is_ok();
    let _ = std::fs::remove_file(&tmp);
    won
}

/// What the shim wrote when it started the container (state.json): who
/// runs, since when.
#[derive(Debug, Clone, PartialEq)]
pub struct ShimState {
    pub init: ProcessId,
    pub shim: ProcessId,
    pub started_at: String,
}

pub fn shim_state(state_dir: &Path) -> Option<ShimState> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(state_dir.join("state.json")).ok()?).ok()?;
    let id = |pid: &str, start: &str| {
        Some(ProcessId { pid: i32::try_from(v[pid].as_i64()?).ok()?, start: v[start].as_u64()? })
    };
    Some(ShimState {
        init: id("pid", "pidStart")?,
        shim: id("shimPid", "shimStart")?,
        started_at: v["startedAt"].as_str()?.to_owned(),
    })
}

/// Marks the container as stopped by the user: its shim will not restart
/// it (`always`, `unless-stopped`). The engine then kills it through the
/// runtime.
pub fn mark_stopped(state_dir: &Path) -> std::io::Result<()> {
    std::fs::write(state_dir.join("stopped"), "")
}

/// Removes what the last run's shim left in `state_dir` (its state, its
/// exit, the stop mark) before a new shim starts there: a reader in
/// between sees no stale shim's state as if it were the new run's.
pub fn clear_last_run(state_dir: &Path) {
    for f in ["stopped", "exit.json", "state.json"] {
        let _ = std::fs::remove_file(state_dir.join(f));
    }
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

    /// Says this connection only sends input (stdin, its close): the shim
    /// sends it no container output, which nobody would read. Unread
    /// output fills a connection's buffer, and the shim drops a client it
    /// cannot write to, with the input it had not read yet. (The waiters'
    /// frame: it makes the client quiet and nothing else.)
    pub fn input_only(&mut self) -> std::io::Result<()> {
        protocol::write_frame(&mut self.stream, protocol::WAIT, &[])
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
        let mut errno = None;
        loop {
            match self.next_frame() {
                Ok(Some((protocol::EXEC_STARTED, p))) if p.len() == 4 => {
                    return Ok(i32::from_be_bytes([p[0], p[1], p[2], p[3]]));
                }
                Ok(Some((protocol::EXEC_ERRNO, p))) if p.len() == 4 => {
                    errno = Some(i32::from_be_bytes([p[0], p[1], p[2], p[3]]));
                }
                Ok(Some((protocol::EXEC_FAILED, msg))) => {
                    return Err(ShimError::from_runtime(String::from_utf8_lossy(&msg).into_owned(), errno));
                }
                Ok(Some(_)) => {}
                Ok(None) => return Err(ShimError::NoReport(": the shim closed the connection".into())),
                Err(e) => return Err(ShimError::io("read from", Path::new("the shim"), e)),
            }
        }
    }

    /// Asks the shim to open its log file anew at the same path (the
    /// kubelet renamed it), and waits until it has (at most `timeout`: a
    /// shim between two runs of a restarting container answers late).
    /// Ok once the new file exists; the shim's reason when it could not
    /// open it.
    pub fn reopen_log(&mut self, timeout: Duration) -> Result<(), ShimError> {
        let shim = Path::new("the shim");
        protocol::write_frame(&mut self.stream, protocol::REOPEN_LOG, &[])
            .map_err(|e| ShimError::io("ask for a log reopen:", shim, e))?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(ShimError::NoAnswer(format!("log reopen within {timeout:?}")));
            }
            self.stream.set_read_timeout(Some(left)).map_err(|e| ShimError::io("read from", shim, e))?;
            match self.next_frame() {
                Ok(Some((protocol::LOG_REOPENED, why))) if why.is_empty() => return Ok(()),
                Ok(Some((protocol::LOG_REOPENED, why))) => {
                    return Err(ShimError::LogReopen(String::from_utf8_lossy(&why).into_owned()));
                }
                Ok(Some(_)) => {}
                Ok(None) => return Err(ShimError::NoAnswer("it closed the connection before the log reopen".into())),
                // Frames are written whole: a timeout falls between them.
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(ShimError::io("read from", shim, e)),
            }
        }
    }

    /// Makes this connection a waiter: no output comes to it, only the
    /// exit of each run ([`Attach::exit_within`]).
    pub fn only_exits(&mut self) -> std::io::Result<()> {
        protocol::write_frame(&mut self.stream, protocol::WAIT, &[])
    }

    /// The next exit's code, if one comes within `timeout` (None: not
    /// yet). An error once the shim has gone.
    pub fn exit_within(&mut self, timeout: Duration) -> std::io::Result<Option<i32>> {
        self.stream.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        loop {
            match self.next_frame() {
                Ok(Some((protocol::EXIT, p))) if p.len() == 4 => {
                    return Ok(Some(i32::from_be_bytes([p[0], p[1], p[2], p[3]])));
                }
                Ok(Some(_)) => {}
                Ok(None) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                // Frames are written whole: a timeout falls between them.
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return Ok(None);
                }
                Err(e) => return Err(e),
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
