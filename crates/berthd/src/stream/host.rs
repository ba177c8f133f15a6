//! TEST ONLY: a [`Streamer`] whose "containers" are directories and whose
//! processes run on the host, so the streaming server can be driven end to
//! end (by crictl) before pods and containers are wired to the engine.
//! Enabled only by `[stream] debug_host_streamer_dir`, which berthd warns
//! about at start: anyone who can reach the CRI socket could run commands
//! on the host through it.
//!
//! A container or pod ID is valid when `DIR/ID` is a directory; exec runs
//! there. Port-forward dials 127.0.0.1 (then ::1) on the host: the hook
//! for a pod's network namespace is [`Dialer`].

use std::future::Future;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;

use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio::process::Command;

use super::pty::{FIRST_SIZE_WAIT, copy_from_pty, copy_to_pty, winsize};
use super::{Input, Output, ResizeRx, StreamError, StreamIo, Streamer};

/// Connects to `port` for the pod in `pod_dir`. The engine's version
/// enters the pod's network namespace (setns on a dedicated thread) and
/// connects to localhost there; the host's connects on the host.
pub type Dialer =
    Arc<dyn Fn(&Path, u16) -> Pin<Box<dyn Future<Output = std::io::Result<TcpStream>> + Send>> + Send + Sync>;

pub struct HostStreamer {
    dir: PathBuf,
    dial: Dialer,
}

impl HostStreamer {
    pub fn new(dir: PathBuf) -> Self {
        HostStreamer { dir, dial: Arc::new(|_, port| Box::pin(dial_localhost(port))) }
    }

    /// `DIR/ID` when `id` is a plain name and that is a directory.
    fn resolve(&self, id: &str) -> Option<PathBuf> {
        let plain = !id.is_empty()
            && id != "."
            && id != ".."
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        let p = self.dir.join(id);
        (plain && p.is_dir()).then_some(p)
    }

    fn container(&self, id: &str) -> Result<PathBuf, StreamError> {
        self.resolve(id).ok_or_else(|| StreamError::ContainerNotFound(id.into()))
    }
}

async fn dial_localhost(port: u16) -> std::io::Result<TcpStream> {
    // As kubelet's runtimes do: IPv4 localhost, else IPv6.
    match TcpStream::connect(("127.0.0.1", port)).await {
        Ok(s) => Ok(s),
        Err(e4) => TcpStream::connect(("::1", port)).await.map_err(|_| e4),
    }
}

#[tonic::async_trait]
impl Streamer for HostStreamer {
    async fn check_container(&self, id: &str) -> Result<(), StreamError> {
        self.container(id).map(drop)
    }

    async fn check_pod(&self, id: &str) -> Result<(), StreamError> {
        self.resolve(id).map(drop).ok_or_else(|| StreamError::PodNotFound(id.into()))
    }

    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        io: StreamIo,
        tty: bool,
        resize: ResizeRx,
    ) -> Result<i32, StreamError> {
        let dir = self.container(id)?;
        let (prog, args) = cmd.split_first().ok_or_else(|| StreamError::Unsupported("empty command".into()))?;
        let mut c = Command::new(prog);
        c.args(args).current_dir(&dir).kill_on_drop(true);
        if tty { exec_tty(c, io, resize).await } else { exec_pipes(c, io).await }
    }

    async fn attach(&self, id: &str, _io: StreamIo, _tty: bool, _resize: ResizeRx) -> Result<(), StreamError> {
        self.container(id)?;
        Err(StreamError::Unsupported(format!(
            "container {id:?}: the host streamer (test only) runs no container process to attach to"
        )))
    }

    async fn port_forward(&self, pod: &str, port: u16, mut stream: DuplexStream) -> Result<(), StreamError> {
        let dir = self.resolve(pod).ok_or_else(|| StreamError::PodNotFound(pod.into()))?;
        let mut conn = (self.dial)(&dir, port).await.map_err(|e| StreamError::io(format!("dial port {port}"), e))?;
        match tokio::io::copy_bidirectional(&mut conn, &mut stream).await {
            Ok(_) => Ok(()),
            // The client went away first: not the target's failure.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => Err(StreamError::io(format!("forward port {port}"), e)),
        }
    }
}

fn exit_code(s: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.code().or_else(|| s.signal().map(|sig| 128 + sig)).unwrap_or(255)
}

async fn exec_pipes(mut c: Command, io: StreamIo) -> Result<i32, StreamError> {
    let piped = |b: bool| if b { Stdio::piped() } else { Stdio::null() };
    c.stdin(piped(io.stdin.is_some())).stdout(piped(io.stdout.is_some())).stderr(piped(io.stderr.is_some()));
    let mut child = c.spawn().map_err(|e| StreamError::io("start the command", e))?;
    let stdin = copy_in(io.stdin, child.stdin.take());
    let stdout = copy_out(child.stdout.take(), io.stdout);
    let stderr = copy_out(child.stderr.take(), io.stderr);
    // stdin is not waited for: a command may exit without reading it all.
    let stdin = tokio::spawn(stdin);
    let (status, (), ()) = tokio::join!(child.wait(), stdout, stderr);
    stdin.abort();
    Ok(exit_code(status.map_err(|e| StreamError::io("wait for the command", e))?))
}

async fn copy_in(from: Option<Input>, to: Option<tokio::process::ChildStdin>) {
    if let (Some(mut from), Some(mut to)) = (from, to) {
        let _ = tokio::io::copy(&mut from, &mut to).await;
        let _ = to.shutdown().await;
    }
}

async fn copy_out<R: tokio::io::AsyncRead + Unpin>(from: Option<R>, to: Option<Output>) {
    if let (Some(mut from), Some(mut to)) = (from, to) {
        let _ = tokio::io::copy(&mut from, &mut to).await;
        let _ = to.shutdown().await;
    }
}

async fn exec_tty(mut c: Command, io: StreamIo, mut resize: ResizeRx) -> Result<i32, StreamError> {
    // The command starts with the client's size, as `docker exec -t` does,
    // not at 0x0 until a resize arrives.
    let first = tokio::time::timeout(FIRST_SIZE_WAIT, resize.recv()).await.ok().flatten();
    let size = first.map(|s| nix::pty::Winsize { ws_row: s.height, ws_col: s.width, ws_xpixel: 0, ws_ypixel: 0 });
    let pty = nix::pty::openpty(size.as_ref(), None).map_err(|e| StreamError::io("open a pty", e.into()))?;
    let (master, slave): (OwnedFd, OwnedFd) = (pty.master, pty.slave);
    let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| StreamError::io("dup the pty", e));
    c.stdin(Stdio::from(dup(&slave)?)).stdout(Stdio::from(dup(&slave)?)).stderr(Stdio::from(dup(&slave)?));
    // SAFETY: runs between fork and exec: setsid and ioctl(TIOCSCTTY) are
    // plain syscalls (async-signal-safe); they make the pty the
    // controlling terminal of a new session, as a login does.
    unsafe {
        c.pre_exec(|| {
            rustix::process::setsid()?;
            rustix::process::ioctl_tiocsctty(std::io::stdin())?;
            Ok(())
        });
    }
    let mut child = c.spawn().map_err(|e| StreamError::io("start the command", e))?;
    // Only the child holds the slave now: when it (and what it started)
    // exits, reading the master ends.
    drop(c);
    drop(slave);
    let resizer = dup(&master)?;
    let resizes = tokio::spawn(async move {
        while let Some(s) = resize.recv().await {
            let _ = rustix::termios::tcsetwinsize(resizer.as_fd(), winsize(s));
        }
    });
    // Non-blocking and polled, not blocking reads and writes on tokio's
    // blocking threads: a write to a pty whose command reads nothing
    // blocks for ever, and would hold up berthd's shutdown.
    let master = Arc::new(super::pty::async_master(master).map_err(|e| StreamError::io("poll the pty", e))?);
    let to_pty = master.clone();
    let stdin = tokio::spawn(async move {
        if let Some(from) = io.stdin {
            let _ = copy_to_pty(from, &to_pty).await;
        }
    });
    // Reading the master fails with EIO once the slave is closed: the end.
    let stdout = copy_from_pty(&master, io.stdout);
    let (status, ()) = tokio::join!(child.wait(), stdout);
    stdin.abort();
    resizes.abort();
    Ok(exit_code(status.map_err(|e| StreamError::io("wait for the command", e))?))
}
