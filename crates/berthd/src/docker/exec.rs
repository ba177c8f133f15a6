//! Exec instances: made by `POST /containers/{id}/exec`, run by
//! `/exec/{id}/start` (attached on the taken-over connection, or
//! detached), inspected for their exit code. Kept in memory, as dockerd
//! keeps them. The process runs as an exec session of the container's
//! shim (the engine's exec), with pipes or a pty of berthd's as its stdio.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};

use berth_engine::ops::ExecOptions;
use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::containers::find;
use super::errors::ApiError;
use super::frames::{STDERR, STDOUT, content_type, frame};
use super::{ApiResult, Call, blocking, empty};

/// One exec instance.
pub struct Exec {
    pub id: String,
    pub container: String,
    pub opts: ExecOptions,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub privileged: bool,
    pub state: Mutex<ExecState>,
    /// For its events (exec_die when it ends).
    pub engine: berth_engine::engine::Engine,
    pub record: berth_engine::store::ContainerRecord,
}

#[derive(Default)]
pub struct ExecState {
    pub started: bool,
    pub running: bool,
    pub exit_code: Option<i32>,
    pub pid: i32,
    /// The pty's master while it runs with a terminal (for resize).
    pub master: Option<Arc<OwnedFd>>,
    /// When it ended (finished instances are forgotten after a while).
    pub ended: Option<std::time::Instant>,
}

impl Exec {
    fn set(&self, f: impl FnOnce(&mut ExecState)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
            if !s.running
                && let (Some(code), None) = (s.exit_code, s.ended)
            {
                s.ended = Some(std::time::Instant::now());
                self.engine.exec_event(&self.record, "exec_die", &self.opts.args, &self.id, Some(code));
            }
        }
    }

    /// Ended long enough ago for its client to have read its exit code
    /// (dockerd also forgets finished exec instances).
    fn stale(&self) -> bool {
        self.state.lock().is_ok_and(|s| s.ended.is_some_and(|t| t.elapsed() > EXEC_KEPT))
    }
}

/// How long a finished exec instance can still be inspected.
const EXEC_KEPT: std::time::Duration = std::time::Duration::from_secs(600);

fn new_exec_id() -> String {
    berth_engine::store::new_id()
}

fn exec_of(c: &Call, id: &str) -> Result<Arc<Exec>, ApiError> {
    c.api
        .execs
        .lock()
        .ok()
        .and_then(|m| m.get(id).cloned())
        .ok_or_else(|| ApiError::not_found(format!("No such exec instance: {id}")))
}

pub async fn create(c: Call, key: &str) -> ApiResult {
    let (body, c) = c.json().await?;
    let cmd: Vec<String> = match &body["Cmd"] {
        Value::Array(a) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        Value::String(s) => vec![s.clone()],
        _ => Vec::new(),
    };
    if cmd.is_empty() {
        return Err(ApiError::bad("No exec command specified"));
    }
    let engine = c.api.engine.clone();
    let key = key.to_owned();
    let rec = blocking(move || find(&engine, &key)).await?;
    match rec.status {
        berth_engine::store::Status::Running => {}
        berth_engine::store::Status::Paused => {
            return Err(ApiError::conflict(format!(
                "Container {} is paused, unpause the container before exec",
                rec.id
            )));
        }
        _ => return Err(ApiError::conflict(format!("container {} is not running", rec.id))),
    }
    let s = |k: &str| body[k].as_str().filter(|v| !v.is_empty()).map(str::to_owned);
    let b = |k: &str| body[k].as_bool().unwrap_or(false);
    let env = body["Env"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect();
    if b("Privileged") {
        return Err(ApiError::bad("exec Privileged is not supported by berth yet"));
    }
    let exec = Exec {
        id: new_exec_id(),
        container: rec.id.clone(),
        opts: ExecOptions { args: cmd, env, user: s("User"), workdir: s("WorkingDir"), detach: false },
        tty: b("Tty"),
        stdin: b("AttachStdin"),
        stdout: b("AttachStdout"),
        stderr: b("AttachStderr"),
        privileged: false,
        state: Mutex::default(),
        engine: c.api.engine.clone(),
        record: rec,
    };
    let id = exec.id.clone();
    exec.engine.exec_event(&exec.record, "exec_create", &exec.opts.args, &id, None);
    if let Ok(mut m) = c.api.execs.lock() {
        m.retain(|_, e| !e.stale());
        m.insert(id.clone(), Arc::new(exec));
    }
    Ok(super::json(StatusCode::CREATED, &json!({ "Id": id })))
}

pub async fn inspect(c: Call, id: &str) -> ApiResult {
    let e = exec_of(&c, id)?;
    let st = e.state.lock().map_err(|_| ApiError::internal("exec state lock poisoned"))?;
    let (entry, args) = e.opts.args.split_first().map_or((String::new(), Vec::new()), |(a, r)| (a.clone(), r.to_vec()));
    Ok(super::json(
        StatusCode::OK,
        &json!({
            "ID": e.id,
            "Running": st.running,
            "ExitCode": st.exit_code,
            "Pid": st.pid,
            "ContainerID": e.container,
            "OpenStdin": e.stdin,
            "OpenStdout": e.stdout,
            "OpenStderr": e.stderr,
            "CanRemove": false,
            "DetachKeys": "",
            "ProcessConfig": {
                "tty": e.tty,
                "entrypoint": entry,
                "arguments": args,
                "privileged": e.privileged,
                "user": e.opts.user.clone().unwrap_or_default(),
            },
        }),
    ))
}

pub async fn resize(c: Call, id: &str) -> ApiResult {
    let e = exec_of(&c, id)?;
    let (h, w) = (c.query.int("h")?.unwrap_or(0), c.query.int("w")?.unwrap_or(0));
    let master = e.state.lock().ok().and_then(|s| s.master.clone());
    if let Some(m) = master {
        let size = rustix::termios::Winsize {
            ws_row: h.clamp(0, u16::MAX.into()) as u16,
            ws_col: w.clamp(0, u16::MAX.into()) as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(m.as_fd(), size).map_err(|e| ApiError::internal(format!("resize: {e}")))?;
    }
    Ok(empty(StatusCode::CREATED))
}

pub async fn start(c: Call, id: &str) -> ApiResult {
    let e = exec_of(&c, id)?;
    let (body, c) = c.json().await?;
    let detach = body["Detach"].as_bool().unwrap_or(false);
    {
        let mut st = e.state.lock().map_err(|_| ApiError::internal("exec state lock poisoned"))?;
        if st.started {
            return Err(ApiError::conflict(format!("Error: Exec command {} is already running", e.id)));
        }
        st.started = true;
        st.running = true;
    }
    e.engine.exec_event(&e.record, "exec_start", &e.opts.args, &e.id, None);
    let engine = c.api.engine.clone();
    if detach {
        let null = || std::fs::File::open("/dev/null").map(OwnedFd::from);
        let stdio = (null(), null(), null());
        let (i, o, er) = match stdio {
            (Ok(i), Ok(o), Ok(er)) => (i, o, er),
            _ => return Err(ApiError::internal("open /dev/null")),
        };
        let ex = e.clone();
        let (mut attach, pid) = blocking(move || {
            Ok(engine.exec_with_stdio(&ex.container, &ex.opts, [i.as_fd(), o.as_fd(), er.as_fd()])?)
        })
        .await
        .inspect_err(|_| e.set(|s| s.running = false))?;
        e.set(|s| s.pid = pid);
        tokio::task::spawn_blocking(move || {
            let code = attach.exec_exit().unwrap_or(-1);
            e.set(|s| {
                s.running = false;
                s.exit_code = Some(code);
            });
        });
        return Ok(super::json(StatusCode::OK, &json!({})));
    }
    let (resp, mut ch) = super::hijack::respond(&c.headers, c.upgrade, content_type(e.tty, c.version));
    tokio::spawn(async move {
        // As dockerd: the process starts once the connection is taken over;
        // a failure to start is told on the stream, its code by inspect.
        if (&mut ch.ready).await.is_err() {
            e.set(|s| s.running = false);
            return;
        }
        let out = ch.out.clone();
        let started =
            if e.tty { start_tty(engine, e.clone(), ch).await } else { start_piped(engine, e.clone(), ch).await };
        if let Err((err, code)) = started {
            let _ = out.send(frame(STDERR, format!("{}\n", err.message).as_bytes(), e.tty)).await;
            e.set(|s| {
                s.running = false;
                s.exit_code = Some(code);
            });
        }
    });
    Ok(resp)
}

/// A failure to start an exec: the error, and the exit code docker gives
/// (127: no such command, 126: cannot run it or anything else).
type StartError = (ApiError, i32);

fn internal(e: ApiError) -> StartError {
    (e, 126)
}

fn start_error(e: berth_engine::Error) -> StartError {
    let code = e.exec_failure().map_or(126, |f| f.exit_code());
    (ApiError::from(e), code)
}

/// A blocking pipe (the process's end must be blocking) with close-on-exec.
fn pipe() -> Result<(OwnedFd, OwnedFd), ApiError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| ApiError::internal(format!("pipe: {e}")))
}

async fn start_piped(
    engine: berth_engine::engine::Engine,
    e: Arc<Exec>,
    ch: super::hijack::Channels,
) -> Result<(), StartError> {
    let (out_r, out_w) = pipe().map_err(internal)?;
    let (err_r, err_w) = pipe().map_err(internal)?;
    let (in_r, in_w) = if e.stdin {
        let (r, w) = pipe().map_err(internal)?;
        (r, Some(w))
    } else {
        (
            std::fs::File::open("/dev/null")
                .map(OwnedFd::from)
                .map_err(|e| internal(ApiError::internal(format!("open /dev/null: {e}"))))?,
            None,
        )
    };
    let ex = e.clone();
    // The process's ends are dropped here once the shim has them: EOF on
    // ours means the process (and whatever it started) closed them.
    let (mut attach, pid) = tokio::task::spawn_blocking(move || {
        engine.exec_with_stdio(&ex.container, &ex.opts, [in_r.as_fd(), out_w.as_fd(), err_w.as_fd()])
    })
    .await
    .map_err(|e| internal(ApiError::internal(format!("exec task: {e}"))))?
    .map_err(start_error)?;
    e.set(|s| s.pid = pid);
    let super::hijack::Channels { out, mut input, .. } = ch;
    if let Some(w) = in_w {
        let mut w = tokio::net::unix::pipe::Sender::from_owned_fd(w)
            .map_err(|e| internal(ApiError::internal(format!("stdin pipe: {e}"))))?;
        tokio::spawn(async move {
            while let Some(b) = input.recv().await {
                if w.write_all(&b).await.is_err() {
                    break;
                }
            }
        });
    }
    let readers = [(out_r, STDOUT, e.stdout), (err_r, STDERR, e.stderr)].map(|(fd, stream, wanted)| {
        let out = out.clone();
        tokio::spawn(async move {
            let Ok(mut r) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else { return };
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = r.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                // Read even when not wanted: a full pipe would stall it.
                if wanted && out.send(frame(stream, &buf[..n], false)).await.is_err() {
                    break;
                }
            }
        })
    });
    tokio::spawn(async move {
        let code = tokio::task::spawn_blocking(move || attach.exec_exit().unwrap_or(-1)).await.unwrap_or(-1);
        for r in readers {
            let _ = r.await;
        }
        // Before the connection closes (with the last sender, `out`): the
        // client inspects the exit code right after.
        e.set(|s| {
            s.running = false;
            s.exit_code = Some(code);
        });
        drop(out);
    });
    Ok(())
}

async fn start_tty(
    engine: berth_engine::engine::Engine,
    e: Arc<Exec>,
    ch: super::hijack::Channels,
) -> Result<(), StartError> {
    let ex = e.clone();
    let tty = tokio::task::spawn_blocking(move || engine.exec_tty(&ex.container, &ex.opts))
        .await
        .map_err(|e| internal(ApiError::internal(format!("exec task: {e}"))))?
        .map_err(start_error)?;
    let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| internal(ApiError::internal(format!("dup the pty: {e}"))));
    let (reader, writer) = (std::fs::File::from(dup(&tty.master)?), std::fs::File::from(dup(&tty.master)?));
    let master = Arc::new(dup(&tty.master)?);
    e.set(|s| s.master = Some(master));
    let super::hijack::Channels { out, mut input, .. } = ch;
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut w = writer;
        while let Some(b) = input.blocking_recv() {
            if w.write_all(&b).is_err() {
                break;
            }
        }
    });
    let out2 = out.clone();
    let pump = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut r = reader;
        let mut buf = vec![0u8; 32 * 1024];
        // EIO once the process and everything on the pty have ended.
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 || out2.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        let code = tokio::task::spawn_blocking(move || tty.wait().unwrap_or(-1)).await.unwrap_or(-1);
        let _ = pump.await;
        e.set(|s| {
            s.running = false;
            s.exit_code = Some(code);
            s.master = None;
        });
        drop(out);
    });
    Ok(())
}
