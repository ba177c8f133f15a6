//! Lifecycle hooks: run each with the container's state on stdin, honour
//! its timeout, and turn a failure into an error that carries what the hook
//! printed.
//!
//! Who runs which hook, and where (runtime-spec config.md#posix-platform-hooks):
//! - prestart, createRuntime: the runtime, in its own namespaces, once the
//!   container's namespaces and mounts exist and before pivot_root;
//! - createContainer: the init, in the container's namespaces, before
//!   pivot_root (so the hook's path resolves on the host);
//! - startContainer: the init, inside the container, just before the
//!   user's program is exec'd;
//! - poststart: `start`, after the program was exec'd;
//! - poststop: `delete`, after the container is gone.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use oci_spec::runtime::{Hook, Spec};

use crate::container::OciState;
use crate::error::{Error, Result};
use crate::sys;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl HookKind {
    pub fn name(self) -> &'static str {
        match self {
            HookKind::Prestart => "prestart",
            HookKind::CreateRuntime => "createRuntime",
            HookKind::CreateContainer => "createContainer",
            HookKind::StartContainer => "startContainer",
            HookKind::Poststart => "poststart",
            HookKind::Poststop => "poststop",
        }
    }
}

/// The hooks of one kind in a spec (empty if none).
pub fn of(spec: &Spec, kind: HookKind) -> Vec<Hook> {
    let Some(h) = spec.hooks().as_ref() else { return Vec::new() };
    #[allow(deprecated)]
    let list = match kind {
        HookKind::Prestart => h.prestart(),
        HookKind::CreateRuntime => h.create_runtime(),
        HookKind::CreateContainer => h.create_container(),
        HookKind::StartContainer => h.start_container(),
        HookKind::Poststart => h.poststart(),
        HookKind::Poststop => h.poststop(),
    };
    list.clone().unwrap_or_default()
}

/// Runs the hooks of `kind` in order. Before the program runs, the first
/// failure stops the rest and fails the operation. poststart and poststop
/// failures are logged and the rest still run: the runtime spec says the
/// lifecycle MUST go on as if they had succeeded.
pub fn run(spec: &Spec, kind: HookKind, state: &OciState) -> Result<()> {
    run_with_env(spec, kind, state, None)
}

/// [`run`], where a hook without an `env` of its own gets `default_env`
/// (when given) instead of the runtime's environment.
pub fn run_with_env(spec: &Spec, kind: HookKind, state: &OciState, default_env: Option<&[String]>) -> Result<()> {
    let hooks = of(spec, kind);
    if hooks.is_empty() {
        return Ok(());
    }
    let input = state.to_json();
    let fatal = !matches!(kind, HookKind::Poststart | HookKind::Poststop);
    for hook in &hooks {
        match run_one(kind, hook, &input, default_env) {
            Err(e) if fatal => return Err(e),
            Err(e) => tracing::warn!("{e}"),
            Ok(()) => {}
        }
    }
    Ok(())
}

fn run_one(kind: HookKind, hook: &Hook, input: &str, default_env: Option<&[String]>) -> Result<()> {
    let fail = |reason: String| Error::Hook { kind: kind.name(), path: hook.path().clone(), reason };
    let mut cmd = Command::new(hook.path());
    if let Some(args) = hook.args().as_ref().filter(|a| !a.is_empty()) {
        cmd.arg0(&args[0]).args(&args[1..]);
    }
    // As runc (Go's exec.Cmd): no env in the hook means the environment of
    // the process that runs it: the runtime's, or in the container's init
    // (startContainer) the container process's, as runc's init has it.
    if let Some(env) = hook.env().as_deref().or(default_env) {
        cmd.env_clear();
        for kv in env {
            let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| fail(format!("start: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that never reads its state closes the pipe: not an error.
        let _ = stdin.write_all(input.as_bytes());
    }
    let timeout = hook.timeout().filter(|t| *t > 0).map(|t| Duration::from_secs(t as u64));
    let (out, err, timed_out) = collect_output(&mut child, timeout).map_err(|e| fail(format!("wait: {e}")))?;
    if timed_out {
        let _ = child.kill();
        let _ = child.wait();
        return Err(fail(format!("timed out after {}s", timeout.map(|t| t.as_secs()).unwrap_or(0))));
    }
    let status = child.wait().map_err(|e| fail(format!("wait: {e}")))?;
    if status.success() {
        return Ok(());
    }
    let mut reason = format!("{status}");
    for (name, text) in [("stdout", out), ("stderr", err)] {
        let text = String::from_utf8_lossy(&text);
        if !text.trim().is_empty() {
            reason.push_str(&format!(", {name}: {}", text.trim()));
        }
    }
    Err(fail(reason))
}

/// Reads the hook's stdout and stderr until it exits or the deadline
/// passes. Returns (stdout, stderr, timed_out). Both pipes are drained as
/// they fill, so a chatty hook cannot block on a full pipe; once the hook
/// has exited, a pipe held open by something it left running in the
/// background is not waited for.
fn collect_output(
    child: &mut std::process::Child,
    timeout: Option<Duration>,
) -> std::io::Result<(Vec<u8>, Vec<u8>, bool)> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let pidfd = sys::pidfd_open(child.id() as i32)?;
    let mut pipes = [child.stdout.take().map(Pipe::Out), child.stderr.take().map(Pipe::Err)];
    let mut bufs = [Vec::new(), Vec::new()];
    let mut exited = false;
    loop {
        if exited && pipes.iter().all(Option::is_none) {
            break;
        }
        let wait = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    let [out, err] = bufs;
                    return Ok((out, err, true));
                }
                PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        let open: Vec<usize> = (0..2).filter(|i| pipes[*i].is_some()).collect();
        for i in &open {
            fds.push(PollFd::new(pipes[*i].as_ref().expect("filtered to open pipes").as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, wait) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
        drop(fds);
        exited |= ready[0];
        let mut got_data = false;
        for (slot, i) in open.into_iter().enumerate() {
            if !ready[slot + 1] {
                continue;
            }
            if drain(pipes[i].as_mut().expect("open pipe"), &mut bufs[i]) {
                pipes[i] = None;
            } else {
                got_data = true;
            }
        }
        if exited && !got_data {
            break;
        }
    }
    let [out, err] = bufs;
    Ok((out, err, false))
}

enum Pipe {
    Out(std::process::ChildStdout),
    Err(std::process::ChildStderr),
}

impl AsFd for Pipe {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Pipe::Out(p) => p.as_fd(),
            Pipe::Err(p) => p.as_fd(),
        }
    }
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Pipe::Out(p) => p.read(buf),
            Pipe::Err(p) => p.read(buf),
        }
    }
}

/// Reads what is available; true at end of file.
fn drain(p: &mut impl Read, into: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 8192];
    match p.read(&mut buf) {
        Ok(0) | Err(_) => true,
        Ok(n) => {
            // Keep the first 64 KiB; that is plenty for an error message.
            if into.len() < 64 * 1024 {
                into.extend_from_slice(&buf[..n]);
            }
            false
        }
    }
}
