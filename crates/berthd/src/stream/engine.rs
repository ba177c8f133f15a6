//! The [`Streamer`] of the engine's containers: exec runs as an exec
//! session of the container's shim ([`berth_engine::execio`]), attach
//! goes through the shim's attach socket, port-forward connects inside
//! the pod's pinned network namespace. A CRI container ID is an engine
//! container ID; a pod sandbox ID is the engine ID of the pod's infra
//! container (whose network namespace is the pod's).
//!
//! A client that leaves drops the future of its exec: the exec'd process
//! is then killed (SIGKILL, by pidfd) and the shim reaps it, as
//! containerd kills an exec process whose stream is gone. What the
//! process started itself is not killed (neither is it by containerd),
//! except that a tty's session gets SIGHUP from the kernel when its
//! leader dies.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use berth_engine::Error as EngineError;
use berth_engine::engine::Engine;
use berth_engine::execio::{self, ExecKiller, PipeSet, shim_protocol as protocol};
use berth_engine::store::{ContainerRecord, StoreError};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::AbortHandle;

use super::pty::{FIRST_SIZE_WAIT, async_master, copy_from_pty, copy_to_pty, winsize};
use super::{Input, Output, ResizeRx, StreamError, StreamIo, Streamer, TermSize};

/// How long a port-forward connect inside the pod may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The label a container created with the CRI's `stdin_once` carries
/// (set by berthd's CreateContainer): the first attach client that closes
/// its stdin closes the container's.
pub const STDIN_ONCE_LABEL: &str = "io.berth.cri.stdin-once";

pub struct EngineStreamer {
    engine: Arc<Engine>,
}

impl EngineStreamer {
    pub fn new(engine: Arc<Engine>) -> Self {
        EngineStreamer { engine }
    }

    /// Runs `f` on the engine on tokio's blocking pool (the engine's
    /// calls block: its database, the shim's socket).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine) -> Result<T, EngineError> + Send + 'static,
    ) -> Result<Result<T, EngineError>, StreamError> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || f(&engine))
            .await
            .map_err(|e| StreamError::Failed(format!("engine call failed: {e}")))
    }

    async fn running(&self, id: &str) -> Result<ContainerRecord, StreamError> {
        let key = id.to_owned();
        self.blocking(move |e| e.running_by_id(&key)).await?.map_err(|e| container_err(id, e))
    }
}

/// The streaming error of an engine error about container `id`.
fn container_err(id: &str, e: EngineError) -> StreamError {
    match e {
        EngineError::Store(StoreError::NotFound(_)) => StreamError::ContainerNotFound(id.into()),
        EngineError::NotRunning(m) => StreamError::NotRunning(m),
        e => StreamError::Failed(e.to_string()),
    }
}

fn pod_err(id: &str, e: EngineError) -> StreamError {
    match e {
        EngineError::Store(StoreError::NotFound(_)) => StreamError::PodNotFound(id.into()),
        EngineError::NotRunning(m) => StreamError::NotRunning(m),
        e => StreamError::Failed(e.to_string()),
    }
}

/// What an exec started, stopped when its future is dropped: the
/// process (killed) and the tasks that copy its I/O.
struct ExecGuard {
    killer: ExecKiller,
    tasks: Vec<AbortHandle>,
}

impl Drop for ExecGuard {
    fn drop(&mut self) {
        // After a normal end the process is gone: the kill is a no-op.
        self.killer.kill();
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn io_err(context: &str) -> impl FnOnce(std::io::Error) -> StreamError + '_ {
    move |e| StreamError::io(context, e)
}

/// Client bytes → the process's stdin pipe; its end closes the pipe (EOF).
async fn copy_in(from: Option<Input>, to: Option<OwnedFd>) {
    let (Some(mut from), Some(to)) = (from, to) else { return };
    let Ok(mut to) = tokio::net::unix::pipe::Sender::from_owned_fd(to) else { return };
    let _ = tokio::io::copy(&mut from, &mut to).await;
}

/// The process's output pipe → the client, until the pipe's end.
async fn copy_out(from: Option<OwnedFd>, to: Option<Output>) {
    let (Some(from), Some(mut to)) = (from, to) else { return };
    let Ok(mut from) = tokio::net::unix::pipe::Receiver::from_owned_fd(from) else { return };
    let _ = tokio::io::copy(&mut from, &mut to).await;
    let _ = to.shutdown().await;
}

impl EngineStreamer {
    async fn exec_pipes(&self, id: &str, cmd: &[String], io: StreamIo) -> Result<i32, StreamError> {
        let want = PipeSet { stdin: io.stdin.is_some(), stdout: io.stdout.is_some(), stderr: io.stderr.is_some() };
        let (key, argv) = (id.to_owned(), cmd.to_vec());
        let (process, pipes) =
            self.blocking(move |e| e.exec_piped(&key, &argv, want)).await?.map_err(|e| container_err(id, e))?;
        let mut guard = ExecGuard { killer: process.killer(), tasks: Vec::new() };
        // stdin is not waited for: a command may exit without reading it all.
        guard.tasks.push(tokio::spawn(copy_in(io.stdin, pipes.stdin)).abort_handle());
        let stdout = tokio::spawn(copy_out(pipes.stdout, io.stdout));
        let stderr = tokio::spawn(copy_out(pipes.stderr, io.stderr));
        guard.tasks.extend([stdout.abort_handle(), stderr.abort_handle()]);
        let code = wait(process).await?;
        // The output is read to its end, as containerd waits for its
        // exec's I/O: something the command left in the background that
        // holds stdout keeps the session open (the client may leave).
        let _ = tokio::join!(stdout, stderr);
        Ok(code)
    }

    async fn exec_tty(&self, id: &str, cmd: &[String], io: StreamIo, mut resize: ResizeRx) -> Result<i32, StreamError> {
        // The command starts with the client's size (clients send it first
        // thing), not at 0x0 until a resize arrives.
        let first = tokio::time::timeout(FIRST_SIZE_WAIT, resize.recv()).await.ok().flatten();
        let size = first.map(|s| execio::TermSize { rows: s.height, cols: s.width });
        let (key, argv) = (id.to_owned(), cmd.to_vec());
        let (process, master) =
            self.blocking(move |e| e.exec_pty(&key, &argv, size)).await?.map_err(|e| container_err(id, e))?;
        let mut guard = ExecGuard { killer: process.killer(), tasks: Vec::new() };
        let resizer = master.try_clone().map_err(io_err("dup the pty"))?;
        if let Some(s) = first {
            // Also set here: a runtime that ignores the spec's consoleSize.
            let _ = rustix::termios::tcsetwinsize(&resizer, winsize(s));
        }
        guard.tasks.push(tokio::spawn(resize_pty(resizer, resize)).abort_handle());
        let master = Arc::new(async_master(master).map_err(io_err("poll the pty"))?);
        let to_pty = master.clone();
        let stdin = io.stdin;
        guard.tasks.push(
            tokio::spawn(async move {
                if let Some(from) = stdin {
                    let _ = copy_to_pty(from, &to_pty).await;
                }
            })
            .abort_handle(),
        );
        let stdout = io.stdout;
        let output = tokio::spawn(async move { copy_from_pty(&master, stdout).await });
        guard.tasks.push(output.abort_handle());
        let code = wait(process).await?;
        // Reading the master ends (EIO) once every holder of the terminal
        // is gone: what the command printed last is read first.
        let _ = output.await;
        Ok(code)
    }
}

/// Waits on the blocking pool for the exec session's process to end.
async fn wait(process: execio::ExecProcess) -> Result<i32, StreamError> {
    tokio::task::spawn_blocking(move || process.wait())
        .await
        .map_err(|e| StreamError::Failed(format!("wait for the exec'd process: {e}")))?
        .map_err(|e| StreamError::Failed(format!("wait for the exec'd process: {e}")))
}

async fn resize_pty(fd: OwnedFd, mut resize: ResizeRx) {
    while let Some(s) = resize.recv().await {
        let _ = rustix::termios::tcsetwinsize(&fd, winsize(s));
    }
}

#[tonic::async_trait]
impl Streamer for EngineStreamer {
    async fn check_container(&self, id: &str) -> Result<(), StreamError> {
        self.running(id).await.map(drop)
    }

    async fn check_pod(&self, id: &str) -> Result<(), StreamError> {
        let key = id.to_owned();
        self.blocking(move |e| e.netns_of(&key)).await?.map(drop).map_err(|e| pod_err(id, e))
    }

    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        io: StreamIo,
        tty: bool,
        resize: ResizeRx,
    ) -> Result<i32, StreamError> {
        if cmd.is_empty() {
            return Err(StreamError::Unsupported("empty command".into()));
        }
        if tty { self.exec_tty(id, cmd, io, resize).await } else { self.exec_pipes(id, cmd, io).await }
    }

    async fn attach(&self, id: &str, io: StreamIo, _tty: bool, resize: ResizeRx) -> Result<(), StreamError> {
        let rec = self.running(id).await?;
        let r = rec.clone();
        let conn = self.blocking(move |e| e.attach(&r)).await?.map_err(|e| container_err(id, e))?;
        let sock = conn.stream().try_clone().map_err(io_err("connect to the shim"))?;
        drop(conn);
        sock.set_nonblocking(true).map_err(io_err("connect to the shim"))?;
        let sock = tokio::net::UnixStream::from_std(sock).map_err(io_err("connect to the shim"))?;
        let (from_shim, to_shim) = sock.into_split();
        let stdin = if rec.config.stdin { io.stdin } else { None };
        let stdin_once = rec.labels.get(STDIN_ONCE_LABEL).is_some_and(|v| v == "true");
        let input = tokio::spawn(attach_input(to_shim, stdin, resize, stdin_once, rec.config.tty));
        let _input = AbortOnDrop(input.abort_handle());
        attach_output(from_shim, io.stdout, io.stderr).await
    }

    async fn port_forward(&self, pod: &str, port: u16, mut stream: DuplexStream) -> Result<(), StreamError> {
        let key = pod.to_owned();
        let netns = self.blocking(move |e| e.netns_of(&key)).await?.map_err(|e| pod_err(pod, e))?;
        let conn = tokio::task::spawn_blocking(move || execio::dial_localhost(netns.as_deref(), port, DIAL_TIMEOUT))
            .await
            .map_err(|e| StreamError::Failed(format!("dial port {port}: {e}")))?
            // The message is containerd's whole: no prefix of ours.
            .map_err(|e| StreamError::Failed(e.to_string()))?;
        conn.set_nonblocking(true).map_err(io_err("forward"))?;
        let mut conn = tokio::net::TcpStream::from_std(conn).map_err(io_err("forward"))?;
        match tokio::io::copy_bidirectional(&mut conn, &mut stream).await {
            Ok(_) => Ok(()),
            // The client went away first: not the target's failure.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => Err(StreamError::io(format!("forward port {port}"), e)),
        }
    }
}

struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Client stdin and terminal sizes → the shim's frames. With
/// `stdin_once`, the end of the client's stdin closes the container's.
async fn attach_input(
    mut to: tokio::net::unix::OwnedWriteHalf,
    stdin: Option<Input>,
    mut resize: ResizeRx,
    stdin_once: bool,
    tty: bool,
) {
    let mut stdin = stdin;
    let mut resizing = tty;
    let mut buf = vec![0u8; 32 * 1024];
    while stdin.is_some() || resizing {
        tokio::select! {
            n = async {
                match stdin.as_mut() {
                    Some(s) => s.read(&mut buf).await,
                    None => std::future::pending().await,
                }
            }, if stdin.is_some() => {
                match n {
                    Ok(n) if n > 0 => {
                        if to.write_all(&protocol::encode(protocol::STDIN, &buf[..n])).await.is_err() {
                            return;
                        }
                    }
                    _ => {
                        stdin = None;
                        if stdin_once && to.write_all(&protocol::encode(protocol::CLOSE_STDIN, &[])).await.is_err() {
                            return;
                        }
                    }
                }
            }
            s = resize.recv(), if resizing => match s {
                Some(TermSize { width, height }) => {
                    let mut p = height.to_be_bytes().to_vec();
                    p.extend_from_slice(&width.to_be_bytes());
                    if to.write_all(&protocol::encode(protocol::RESIZE, &p)).await.is_err() {
                        return;
                    }
                }
                None => resizing = false,
            },
        }
    }
    // Kept open: closing the connection would detach the output too.
    std::future::pending::<()>().await;
}

/// The shim's output frames → the client, until the container exits or
/// the shim goes.
async fn attach_output(
    mut from: tokio::net::unix::OwnedReadHalf,
    mut stdout: Option<Output>,
    mut stderr: Option<Output>,
) -> Result<(), StreamError> {
    loop {
        let mut head = [0u8; 5];
        match from.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(StreamError::io("read from the shim", e)),
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        if len > protocol::MAX_PAYLOAD {
            return Err(StreamError::Failed(format!("the shim sent a frame of {len} bytes")));
        }
        let mut payload = vec![0u8; len as usize];
        from.read_exact(&mut payload).await.map_err(io_err("read from the shim"))?;
        let to = match head[0] {
            protocol::STDOUT => &mut stdout,
            protocol::STDERR => &mut stderr,
            protocol::EXIT => break,
            _ => continue,
        };
        if let Some(w) = to
            && w.write_all(&payload).await.is_err()
        {
            *to = None;
        }
    }
    for w in [stdout, stderr].into_iter().flatten() {
        let mut w = w;
        let _ = w.shutdown().await;
    }
    Ok(())
}
