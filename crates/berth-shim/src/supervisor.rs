//! The shim's life: create and start the container through the runtime's
//! command line, then one poll(2) loop over the container's output, the
//! attach socket and a signalfd, until the container has exited (and has
//! been restarted as often as its policy says).
//!
//! The shim is the container's child subreaper: the runtime's init
//! process is reparented to it when the runtime exits, so the shim reaps
//! it and has its real exit status, as conmon and containerd's shim do.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use berth_oci_cli::{self as oci, CreateOpts, ExecOpts, LogFormat, Runtime};
use std::os::unix::ffi::OsStrExt;

use crate::config::Config;
use crate::logfile::{Log, Stream};
use crate::oom::OomCounter;
use crate::process::ProcessId;
use crate::{ShimError, protocol, time};

/// Signals the shim passes on to the container's init.
const FORWARDED: [Signal; 6] =
    [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGUSR2];

/// How long output is still collected after the init has exited (its
/// children may hold the pipes a little longer).
const DRAIN: Duration = Duration::from_secs(2);

/// The container's stdio as the shim holds it.
struct Io {
    /// stdout, or the terminal.
    out: Option<OwnedFd>,
    err: Option<OwnedFd>,
    /// Where stdin input goes: a pipe, or the terminal.
    stdin: Option<OwnedFd>,
    /// The terminal, for resizes: a copy of its own, so it stays open
    /// when the output side is dropped at EOF.
    pty: Option<OwnedFd>,
}

struct Client {
    stream: UnixStream,
    decoder: protocol::Decoder,
    /// Names the client in exec sessions (indexes shift as clients go).
    id: u64,
    /// Fds received with the bytes not yet decoded (SCM_RIGHTS).
    fds: Vec<OwnedFd>,
    /// Gets no container output: it asked for an exec session (and gets
    /// that session's frames), it only waits for the exit or only sends
    /// input, or it hung up (see [`send_output`]).
    quiet: bool,
}

/// A process started by an exec session, and the client to tell.
struct Session {
    pid: i32,
    client: u64,
}

/// How long exec sessions may outlive the container's init before they
/// are killed (with a pid namespace, the kernel has killed them already).
const SESSION_GRACE: Duration = Duration::from_secs(10);

/// Runs the container to its end. Returns the last exit code.
pub fn run(cfg: &Config) -> Result<i32, ShimError> {
    std::fs::create_dir_all(&cfg.state_dir).map_err(|e| ShimError::io("create", &cfg.state_dir, e))?;
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .map_err(|e| ShimError::sys("become the child subreaper", Errno::from_raw(e.raw_os_error())))?;
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    for s in FORWARDED {
        mask.add(s);
    }
    mask.thread_block().map_err(|e| ShimError::sys("block signals", e))?;
    let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| ShimError::sys("signalfd", e))?;
    let listener = bind_attach(&cfg.state_dir)?;
    let mut log = Log::open(cfg)
        .map_err(|e| ShimError::io("open the log", cfg.log_path.as_deref().unwrap_or(Path::new("")), e))?;
    let mut sync = cfg.sync_fd.map(|fd| {
        // Not for the runtime, the container or the exit command: only the
        // engine and this shim may hold the line, or its end goes unseen.
        // SAFETY: F_SETFD on the fd the engine passed us.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        // SAFETY: the engine passed this fd to us for the start report and
        // the exit watch; nothing else in the shim uses it.
        unsafe { UnixStream::from_raw_fd(fd) }
    });
    let mut reported = false;
    let me = ProcessId::current();
    let mut clients: Vec<Client> = Vec::new();
    let mut restarts = 0u32;
    let oom = OomCounter::of_bundle(&cfg.bundle);
    loop {
        // Before the create: an OOM kill right after the start still counts.
        let oom_before = oom.kills();
        let (pid, mut io) = match start_container(cfg) {
            Ok(started) => started,
            Err(failure) => {
                if !reported && let Some(mut s) = sync.take() {
                    let _ = writeln!(s, "{}", failure.report());
                    return Err(failure.into());
                }
                // A restart that failed: the container stays exited.
                let ended = Ended {
                    code: 127,
                    restarts,
                    pid: None,
                    last: true,
                    error: Some(&failure.message),
                    oom_killed: false,
                };
                write_exit(cfg, &ended);
                finish(cfg, sync.as_mut(), 127);
                return Err(failure.into());
            }
        };
        let started_at = time::now();
        // state.json before exit.json goes: a reader never pairs this run's
        // init with the last run's exit (exit.json names its init).
        write_state(cfg, pid, me, &started_at);
        let _ = std::fs::remove_file(cfg.state_dir.join("exit.json"));
        // Here, not by the engine once it hears of the start: a container
        // that ends at once has its die after its start (and a restart
        // policy's runs each have theirs).
        emit(cfg, "start", None);
        if !reported && let Some(s) = sync.as_mut() {
            let shim_pid = std::process::id();
            let _ = writeln!(s, "{{\"pid\":{pid},\"shimPid\":{shim_pid},\"startedAt\":\"{started_at}\"}}");
            reported = true;
        }
        release_startup_memory();
        let code = supervise(cfg, pid, &mut io, &sigfd, &listener, &mut clients, log.as_mut())?;
        if let Some(l) = log.as_mut() {
            let _ = l.flush();
        }
        let stopped = cfg.state_dir.join("stopped").exists();
        let again = cfg.restart.again(code, restarts, stopped);
        // Read while the cgroup is still there: `delete` removes it.
        let oom_killed = oom.kills() > oom_before;
        // The runtime forgets the container before its exit is recorded:
        // whoever sees the exit (`stop`, then `start` at once) may create
        // it again, and must never meet this shim's late `delete`.
        if !cfg.no_delete {
            let _ = runtime(cfg).delete(&cfg.id, true);
        }
        // Before exit.json, as docker orders them: whoever sees the exit
        // (a `stop`, which then writes its own event) finds die before it.
        if oom_killed {
            emit(cfg, "oom", None);
        }
        emit(cfg, "die", Some(code));
        write_exit(cfg, &Ended { code, restarts, pid: Some(pid), last: !again, error: None, oom_killed });
        let frame = protocol::encode(protocol::EXIT, &code.to_be_bytes());
        clients.retain_mut(|c| c.stream.write_all(&frame).is_ok());
        if !again {
            finish(cfg, sync.as_mut(), code);
            return Ok(code);
        }
        restarts += 1;
        // docker's back-off: 100 ms, doubling, at most a minute.
        std::thread::sleep(Duration::from_millis(100u64.saturating_mul(1 << restarts.min(10)).min(60_000)));
    }
}

/// How long an attached client may take to read the rest of the log
/// after the last exit before the exit command runs anyway.
const WATCH_GRACE: Duration = Duration::from_secs(60);

/// After the last exit: tells the engine's watch (if it still listens),
/// waits until it lets go, then runs the exit command, unless the
/// container was removed meanwhile (its remover took this state directory
/// with it): an attached `run --rm` removes it before letting go, so one
/// `rm` runs, not two.
fn finish(cfg: &Config, watch: Option<&mut UnixStream>, code: i32) {
    if let Some(w) = watch
        && writeln!(w, "{{\"exitCode\":{code}}}").is_ok()
    {
        wait_for_close(w, WATCH_GRACE);
    }
    if cfg.state_dir.exists() {
        crate::client::spawn_exit_command(&cfg.exit_command);
    }
}

/// Until the other end of `s` is closed (read gives 0 or fails), at most
/// `grace`.
fn wait_for_close(s: &mut UnixStream, grace: Duration) {
    use std::io::Read;
    let deadline = Instant::now() + grace;
    let mut buf = [0u8; 64];
    while let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
        if s.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match s.read(&mut buf) {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    }
}

/// Hands the heap pages that starting the container used (the runtime's
/// command line and environment, its output, parsed files) back to the
/// kernel before the long wait: a node runs one shim per container, so
/// what each keeps is multiplied by their number (~150 KiB each here).
fn release_startup_memory() {
    // SAFETY: malloc_trim only returns free heap memory to the kernel; the
    // shim is single-threaded, and no allocation is in flight.
    unsafe { libc::malloc_trim(0) };
}

fn runtime(cfg: &Config) -> Runtime {
    let rt = Runtime::new(&cfg.runtime);
    match &cfg.runtime_root {
        Some(root) => rt.root(root),
        None => rt,
    }
}

fn bind_attach(dir: &Path) -> Result<UnixListener, ShimError> {
    let path = dir.join("attach.sock");
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path).map_err(|e| ShimError::io("bind", &path, e))?;
    // Only the shim's owner may connect: a client can run exec sessions.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| ShimError::io("chmod", &path, e))?;
    l.set_nonblocking(true).map_err(|e| ShimError::io("set non-blocking", &path, e))?;
    Ok(l)
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
}

/// Why a container or exec session did not start: the runtime's words,
/// and the errno of a failed exec when the runtime logged one.
struct Failure {
    message: String,
    errno: Option<i32>,
}

impl Failure {
    /// The start report's error line: `{"error":"..."}`, with `"errno":N`
    /// when known (an engine that does not know the field ignores it).
    fn report(&self) -> String {
        match self.errno {
            Some(n) => format!("{{\"error\":{},\"errno\":{n}}}", json_string(&self.message)),
            None => format!("{{\"error\":{}}}", json_string(&self.message)),
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure { message, errno: None }
    }
}

impl From<oci::Error> for Failure {
    fn from(e: oci::Error) -> Failure {
        let errno = match &e {
            oci::Error::Failed { errno, .. } => *errno,
            _ => None,
        };
        Failure { message: e.to_string(), errno }
    }
}

impl From<Failure> for ShimError {
    fn from(f: Failure) -> ShimError {
        ShimError::from_runtime(f.message, f.errno)
    }
}

/// `runtime create` + `runtime start`; the init's pid and its stdio, or
/// why the runtime did not start it.
fn start_container(cfg: &Config) -> Result<(i32, Io), Failure> {
    let pid_file = cfg.state_dir.join("container.pid");
    let runtime_log = cfg.state_dir.join("runtime.log");
    let _ = std::fs::remove_file(&pid_file);
    let _ = std::fs::remove_file(&runtime_log);
    // The container's stdio is the runtime's: its errors come from the log.
    let rt = crate::sealed::sealed(runtime(cfg)).log(&runtime_log).log_format(LogFormat::Json);
    // `run --detach`: create and start in one runtime process (one exec
    // less than `create` + `start`, a few ms of every start).
    let mut opts =
        CreateOpts { bundle: cfg.bundle.clone(), pid_file: Some(pid_file.clone()), detach: true, ..Default::default() };
    let mut io = Io { out: None, err: None, stdin: None, pty: None };
    let (console, stdio) = if cfg.terminal {
        let path = cfg.state_dir.join("console.sock");
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).map_err(|e| format!("bind {}: {e}", path.display()))?;
        l.set_nonblocking(true).map_err(|e| e.to_string())?;
        opts.console_socket = Some(path.clone());
        let null = || Some(Stdio::null());
        (Some((l, path)), oci::Io { stdin: null(), stdout: null(), stderr: null() })
    } else {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        io.out = Some(out_r);
        io.err = Some(err_r);
        let stdin = if cfg.stdin {
            let (in_r, in_w) = pipe()?;
            io.stdin = Some(in_w);
            Stdio::from(in_r)
        } else {
            Stdio::null()
        };
        (None, oci::Io { stdin: Some(stdin), stdout: Some(Stdio::from(out_w)), stderr: Some(Stdio::from(err_w)) })
    };
    let mut child = rt.spawn_run(&cfg.id, &opts, stdio)?;
    if let Some((listener, path)) = console {
        let master = match receive_console(&listener, &mut child) {
            Ok(m) => m,
            // The runtime's own words, when it failed; else why no
            // terminal came.
            Err(e) => return Err(child.wait().err().map_or(Failure::from(e), Failure::from)),
        };
        let _ = std::fs::remove_file(path);
        io.pty = Some(master.try_clone().map_err(|e| e.to_string())?);
        io.stdin = Some(master.try_clone().map_err(|e| e.to_string())?);
        io.out = Some(master);
    }
    // Our copies of the container's ends went with the runtime's command
    // (moved into it): only the container holds them now.
    if let Err(e) = child.wait() {
        let _ = runtime(cfg).delete(&cfg.id, true);
        return Err(e.into());
    }
    let pid = oci::read_pid_file(&pid_file)?;
    for fd in [&io.out, &io.err].into_iter().flatten() {
        set_nonblocking(fd.as_raw_fd());
    }
    Ok((pid, io))
}

/// Waits for the runtime to connect to the console socket and send the
/// pty master (SCM_RIGHTS), or to exit without doing so.
pub fn receive_console(listener: &UnixListener, child: &mut oci::Pending) -> Result<OwnedFd, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("accept on the console socket: {e}")),
        }
        if let Some(status) = child.try_exited() {
            return Err(format!("the runtime exited ({status}) without sending a terminal"));
        }
        if Instant::now() > deadline {
            return Err("the runtime sent no terminal within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    recv_fd(&conn)
}

/// Accepts one connection on a console socket and takes the pty master
/// it carries, within `timeout` (for a client whose runtime is run by
/// someone else, e.g. an exec session's by the shim).
pub fn receive_console_within(listener: &UnixListener, timeout: Duration) -> Result<OwnedFd, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((c, _)) => return recv_fd(&c),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("accept on the console socket: {e}")),
        }
        if Instant::now() > deadline {
            return Err("the runtime sent no terminal".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The fd a console-socket message carries (SCM_RIGHTS).
fn recv_fd(conn: &UnixStream) -> Result<OwnedFd, String> {
    conn.set_nonblocking(false).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| format!("receive the terminal: {e}"))?;
    for cmsg in msg.cmsgs().map_err(|e| e.to_string())? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = cmsg
            && let Some(fd) = fds.first()
        {
            // SAFETY: the kernel just installed this fd for us.
            return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
        }
    }
    Err("the console socket message carried no fd".into())
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: F_GETFL/F_SETFL on an fd the shim owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

/// The poll loop for one run of the container; returns its exit code.
fn supervise(
    cfg: &Config,
    pid: i32,
    io: &mut Io,
    sigfd: &SignalFd,
    listener: &UnixListener,
    clients: &mut Vec<Client>,
    mut log: Option<&mut Log>,
) -> Result<i32, ShimError> {
    let mut exit: Option<(i32, Instant)> = None;
    let mut buf = vec![0u8; 64 * 1024];
    let mut sessions: Vec<Session> = Vec::new();
    let mut next_client = clients.iter().map(|c| c.id + 1).max().unwrap_or(0);
    loop {
        if let Some((code, at)) = exit
            && ((io.out.is_none() && io.err.is_none()) || at.elapsed() > DRAIN)
        {
            if sessions.is_empty() {
                return Ok(code);
            }
            if at.elapsed() > SESSION_GRACE {
                for s in &sessions {
                    let _ = kill(Pid::from_raw(s.pid), Signal::SIGKILL);
                }
            }
        }
        // Fixed slots first, then one per client.
        let out_fd = io.out.as_ref().map(|f| f.as_fd());
        let err_fd = io.err.as_ref().map(|f| f.as_fd());
        let mut fds =
            vec![PollFd::new(sigfd.as_fd(), PollFlags::POLLIN), PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        let mut slots = vec![Slot::Signal, Slot::Listener];
        if let Some(fd) = out_fd {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
            slots.push(Slot::Out);
        }
        if let Some(fd) = err_fd {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
            slots.push(Slot::Err);
        }
        for c in clients.iter() {
            fds.push(PollFd::new(c.stream.as_fd(), PollFlags::POLLIN));
            slots.push(Slot::Client(c.id));
        }
        let timeout = if exit.is_some() { PollTimeout::from(100u16) } else { PollTimeout::NONE };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(ShimError::sys("poll", e)),
        }
        let ready: Vec<(Slot, bool)> = fds
            .iter()
            .zip(slots)
            .map(|(f, s)| (s, f.revents().is_some_and(|r| !r.is_empty())))
            .filter(|(_, r)| *r)
            .collect();
        drop(fds);
        let mut gone = Vec::new();
        for (slot, _) in ready {
            match slot {
                Slot::Signal => {
                    while let Ok(Some(info)) = sigfd.read_signal() {
                        let signo = info.ssi_signo as i32;
                        if signo == libc::SIGCHLD {
                            for (p, code) in reap() {
                                if p == pid {
                                    exit.get_or_insert((code, Instant::now()));
                                } else if let Some(i) = sessions.iter().position(|s| s.pid == p) {
                                    let s = sessions.remove(i);
                                    let frame = protocol::encode(protocol::EXEC_EXIT, &code.to_be_bytes());
                                    if let Some(c) = clients.iter_mut().find(|c| c.id == s.client) {
                                        let _ = c.stream.write_all(&frame);
                                    }
                                }
                            }
                        } else if exit.is_none()
                            && let Ok(sig) = Signal::try_from(signo)
                        {
                            let _ = kill(Pid::from_raw(pid), sig);
                        }
                    }
                }
                Slot::Listener => {
                    while let Ok((stream, _)) = listener.accept() {
                        let _ = stream.set_nonblocking(true);
                        let id = next_client;
                        next_client += 1;
                        clients.push(Client {
                            stream,
                            decoder: protocol::Decoder::default(),
                            id,
                            fds: Vec::new(),
                            quiet: false,
                        });
                    }
                }
                Slot::Out | Slot::Err => {
                    let (fd, kind, stream) = match slot {
                        Slot::Out => (&mut io.out, protocol::STDOUT, Stream::Stdout),
                        _ => (&mut io.err, protocol::STDERR, Stream::Stderr),
                    };
                    let n = match fd.as_ref().map(|f| nix::unistd::read(f, &mut buf)) {
                        Some(Ok(n)) => n,
                        Some(Err(Errno::EAGAIN | Errno::EINTR)) => continue,
                        // EIO: a terminal whose last holder is gone.
                        _ => 0,
                    };
                    if n == 0 {
                        *fd = None;
                        continue;
                    }
                    if let Some(l) = log.as_deref_mut() {
                        let _ = l.write(stream, &buf[..n]);
                    }
                    let frame = protocol::encode(kind, &buf[..n]);
                    clients.iter_mut().for_each(|c| send_output(c, &frame));
                }
                Slot::Client(id) => {
                    // By id: output written earlier in this round may have
                    // dropped clients, so indexes are stale.
                    let Some(c) = clients.iter_mut().find(|c| c.id == id) else { continue };
                    let running = exit.is_none();
                    if !client_input(c, io, log.as_deref_mut(), &mut |c: &mut Client, args: Vec<u8>| {
                        if let Some(s) = start_session(cfg, c, &args, running) {
                            sessions.push(s);
                        }
                    }) {
                        gone.push(id);
                    }
                }
            }
        }
        clients.retain(|c| !gone.contains(&c.id));
    }
}

/// Writes an output frame to client `c`. A client that cannot take it
/// (it hung up, or it is too slow: its buffer is full) gets no more
/// output: a slow reader sees its stream end where it fell behind (the
/// write side is shut; a frame may be cut), as when it was dropped. But
/// it is kept, deaf, until its input is read to the end: what it sent
/// (stdin's last bytes, the close of stdin) must still reach the
/// container. (Dropped at once, a `run -i` whose output came back as it
/// left, or whose connection the container's output filled before it said
/// it only sends input, lost its close of stdin; the container waited for
/// ever.)
fn send_output(c: &mut Client, frame: &[u8]) {
    if c.quiet {
        return;
    }
    if let Err(e) = c.stream.write_all(frame) {
        if !matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset) {
            let _ = c.stream.shutdown(std::net::Shutdown::Write);
        }
        c.quiet = true;
    }
}

#[derive(Clone, Copy)]
enum Slot {
    Signal,
    Listener,
    Out,
    Err,
    /// A client, by its id.
    Client(u64),
}

/// Reaps every exited child: (pid, exit code as a shell reports it).
fn reap() -> Vec<(i32, i32)> {
    let mut out = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, c)) => out.push((p.as_raw(), c)),
            Ok(WaitStatus::Signaled(p, s, _)) => out.push((p.as_raw(), 128 + s as i32)),
            Ok(WaitStatus::StillAlive) | Err(_) => return out,
            Ok(_) => {}
        }
    }
}

/// Runs an exec session's process through the runtime (`exec --detach`,
/// so it becomes the shim's child) with the client's fds as its stdio;
/// tells the client its pid or the runtime's error.
fn start_session(cfg: &Config, c: &mut Client, args: &[u8], running: bool) -> Option<Session> {
    c.quiet = true;
    let fds: Vec<OwnedFd> = std::mem::take(&mut c.fds);
    let result = if !running {
        Err(Failure::from("the container is not running".to_owned()))
    } else if fds.len() != 3 {
        Err(Failure::from(format!("an exec session needs 3 fds (stdin, stdout, stderr), got {}", fds.len())))
    } else {
        run_exec(cfg, c.id, args, fds)
    };
    let frame = match &result {
        Ok(pid) => protocol::encode(protocol::EXEC_STARTED, &pid.to_be_bytes()),
        Err(f) => {
            // The errno first, in a frame of its own: a client that does
            // not know it skips it and still reads the message.
            let mut frame = f.errno.map_or_else(Vec::new, |n| protocol::encode(protocol::EXEC_ERRNO, &n.to_be_bytes()));
            frame.extend(protocol::encode(protocol::EXEC_FAILED, f.message.as_bytes()));
            frame
        }
    };
    let _ = c.stream.write_all(&frame);
    result.ok().map(|pid| Session { pid, client: c.id })
}

fn run_exec(cfg: &Config, n: u64, args: &[u8], fds: Vec<OwnedFd>) -> Result<i32, Failure> {
    let pid_file = cfg.state_dir.join(format!("exec-{n}.pid"));
    let log = cfg.state_dir.join(format!("exec-{n}.log"));
    let args: Vec<std::ffi::OsString> =
        args.split(|b| *b == 0).map(|a| std::ffi::OsStr::from_bytes(a).to_owned()).collect();
    let mut fds = fds.into_iter().map(|fd| Some(Stdio::from(fd)));
    let stdio = oci::Io { stdin: fds.next().flatten(), stdout: fds.next().flatten(), stderr: fds.next().flatten() };
    let opts = ExecOpts { detach: true, pid_file: Some(pid_file.clone()), ..Default::default() };
    // Waited for here, by pid: the reaper's waitpid(-1) only runs between
    // polls, so it cannot take this status.
    let result = crate::sealed::sealed(runtime(cfg))
        .log(&log)
        .log_format(LogFormat::Json)
        .exec_prepared(&args, &opts, stdio)
        .and_then(|()| oci::read_pid_file(&pid_file))
        .map_err(Failure::from);
    let _ = std::fs::remove_file(&pid_file);
    let _ = std::fs::remove_file(&log);
    result
}

/// Handles what a client sent; false when it has gone. `exec` starts an
/// exec session for the client.
fn client_input(
    c: &mut Client,
    io: &mut Io,
    mut log: Option<&mut Log>,
    exec: &mut dyn FnMut(&mut Client, Vec<u8>),
) -> bool {
    let mut buf = [0u8; 16 * 1024];
    match receive(c, &mut buf) {
        Ok(0) => return false,
        Ok(n) => c.decoder.push(&buf[..n]),
        Err(Errno::EAGAIN) => return true,
        Err(_) => return false,
    }
    loop {
        match c.decoder.next_frame() {
            Ok(Some((protocol::EXEC, args))) => exec(c, args),
            Ok(Some((protocol::WAIT, _))) => c.quiet = true,
            Ok(Some((protocol::REOPEN_LOG, _))) => {
                c.quiet = true;
                let answer = reopen_log(log.as_deref_mut());
                if c.stream.write_all(&protocol::encode(protocol::LOG_REOPENED, answer.as_bytes())).is_err() {
                    return false;
                }
            }
            Ok(Some((protocol::STDIN, data))) => {
                if let Some(fd) = &io.stdin {
                    let _ = write_all(fd.as_raw_fd(), &data);
                }
            }
            Ok(Some((protocol::CLOSE_STDIN, _))) => {
                // A terminal stays: closing it would hang up the container.
                if io.pty.is_none() {
                    io.stdin = None;
                } else if let Some(fd) = &io.stdin {
                    let _ = write_all(fd.as_raw_fd(), &[4]);
                }
            }
            Ok(Some((protocol::RESIZE, size))) if size.len() == 4 => {
                if let Some(pty) = &io.pty {
                    let ws = rustix::termios::Winsize {
                        ws_row: u16::from_be_bytes([size[0], size[1]]),
                        ws_col: u16::from_be_bytes([size[2], size[3]]),
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    let _ = rustix::termios::tcsetwinsize(pty, ws);
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

/// Opens the log file anew (the old one was renamed); empty, or why not.
fn reopen_log(log: Option<&mut Log>) -> String {
    match log {
        None => "the container has no log file".into(),
        Some(l) => match l.reopen() {
            Ok(()) => String::new(),
            Err(e) => format!("reopen the log {}: {e}", l.path().display()),
        },
    }
}

/// Reads from a client, keeping any fds it sent (SCM_RIGHTS) for the
/// frame they came with.
fn receive(c: &mut Client, buf: &mut [u8]) -> nix::Result<usize> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; 3]);
    let msg = recvmsg::<()>(c.stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let n = msg.bytes;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            // SAFETY: the kernel just installed these fds for us.
            c.fds.extend(fds.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    Ok(n)
}

fn write_all(fd: RawFd, mut data: &[u8]) -> nix::Result<()> {
    // SAFETY: the fd is open for the duration of the call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Appends the container's event `action` to the engine's event log, once
/// per exit (this shim is the one that saw it). A failure is only logged:
/// the container's exit is recorded either way.
fn emit(cfg: &Config, action: &str, exit_code: Option<i32>) {
    let Some(dir) = &cfg.events_dir else { return };
    let renamed = std::fs::read(cfg.state_dir.join(crate::events::ATTRS_FILE)).ok();
    let mut attrs: std::collections::BTreeMap<String, String> =
        match renamed.and_then(|b| serde_json::from_slice(&b).ok()) {
            Some(a) => a,
            None => cfg.event_attrs.iter().cloned().collect(),
        };
    if let Some(code) = exit_code {
        attrs.insert("exitCode".into(), code.to_string());
    }
    let line = crate::events::line(crate::events::now_nano(), "container", action, &cfg.id, &attrs);
    if let Err(e) = crate::events::append(dir, &line) {
        eprintln!("berth-shim: append the {action} event to {}: {e}", dir.display());
    }
}

/// One end of the container, as exit.json records it.
struct Ended<'a> {
    code: i32,
    restarts: u32,
    /// The init that ended (None: none started).
    pid: Option<i32>,
    /// No restart follows.
    last: bool,
    error: Option<&'a str>,
    /// The kernel's OOM killer killed a process of the container's cgroup
    /// during this run (docker's State.OOMKilled, the CRI's OOMKilled).
    oom_killed: bool,
}

/// exit.json, written whole (temp file + rename) for the engine to read.
fn write_exit(cfg: &Config, e: &Ended) {
    let mut text = format!(
        "{{\"exitCode\":{},\"exitedAt\":\"{}\",\"restartCount\":{},\"last\":{}",
        e.code,
        time::now(),
        e.restarts,
        e.last
    );
    if let Some(pid) = e.pid {
        text.push_str(&format!(",\"pid\":{pid}"));
    }
    if let Some(err) = e.error {
        text.push_str(&format!(",\"error\":{}", json_string(err)));
    }
    // Only when true: an engine that predates the field reads the same file.
    if e.oom_killed {
        text.push_str(",\"oomKilled\":true");
    }
    text.push_str("}\n");
    write_whole(cfg, "exit.json", &text);
}

/// state.json: who runs (the init and this shim, each by pid and start
/// time, so a reused pid is never taken for them) and since when. The
/// engine reads it to tell a dead shim from a live one, and for StartedAt
/// (the CLI that started the shim may have died before recording it).
fn write_state(cfg: &Config, pid: i32, shim: Option<ProcessId>, started_at: &str) {
    let init_start = ProcessId::of(pid).map_or(0, |p| p.start);
    let (shim_pid, shim_start) = shim.map_or((std::process::id() as i32, 0), |s| (s.pid, s.start));
    let text = format!(
        "{{\"pid\":{pid},\"pidStart\":{init_start},\"shimPid\":{shim_pid},\"shimStart\":{shim_start},\"startedAt\":\"{started_at}\"}}\n"
    );
    write_whole(cfg, "state.json", &text);
}

/// Temp file + rename (berth-fs): readers see the old file or the new
/// one. A failure leaves the old file: the engine then reads the exit
/// from the container's state, as for a killed shim.
fn write_whole(cfg: &Config, name: &str, text: &str) {
    let _ = berth_fs::write_atomic(&cfg.state_dir.join(name), text.as_bytes(), 0o644);
}

/// `s` as a JSON string literal.
pub(crate) fn json_string(s: &str) -> String {
    // Serializing a str cannot fail.
    serde_json::to_string(s).unwrap_or_default()
}
