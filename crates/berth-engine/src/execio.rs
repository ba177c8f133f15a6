//! Exec sessions and port-forward dials for a front end that moves the
//! bytes itself (berthd's CRI streaming server), where `ops::exec` hands
//! the process this process's own stdio. The process runs as an exec
//! session of the container's shim (the shim reaps it and reports its
//! exit); its stdio are pipes or a pty whose other ends the caller gets,
//! and [`ExecKiller`] stops it when the caller's client is gone.
//!
//! Containers are named by ID or unique ID prefix only, as the CRI names
//! them: a container's name is not its ID there.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::Error;
use crate::engine::Engine;
use crate::store::{ContainerRecord, Status, StoreError};

/// The attach socket's frames, for a front end that speaks them itself
/// (an async one: [`berth_shim::client::Attach`] blocks).
pub use berth_shim::protocol as shim_protocol;

/// How long the runtime has to send the terminal of an `exec --tty`.
const CONSOLE_WAIT: Duration = Duration::from_secs(10);

/// A terminal size in characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TermSize {
    pub rows: u16,
    pub cols: u16,
}

/// A process running as an exec session of its container's shim.
pub struct ExecProcess {
    attach: berth_shim::client::Attach,
    pid: i32,
    killer: ExecKiller,
    /// The console socket's directory (tty only), removed with this.
    _console: Option<tempfile::TempDir>,
}

impl ExecProcess {
    /// The process's pid in the host's pid namespace.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// What kills the process from elsewhere (another thread or task).
    pub fn killer(&self) -> ExecKiller {
        self.killer.clone()
    }

    /// Blocks until the process has ended (the shim reaped it); its exit
    /// code, 128+N for signal N.
    pub fn wait(mut self) -> Result<i32, Error> {
        Ok(self.attach.exec_exit()?)
    }
}

/// An exec session nobody holds any more ends: its owner was dropped
/// (a client that left while the exec was still being made, its task
/// cancelled) and nobody else can wait for it. After `wait` the process
/// has ended and the kill is a no-op.
impl Drop for ExecProcess {
    fn drop(&mut self) {
        self.killer.kill();
    }
}

/// Kills an exec session's process: SIGKILL through a pidfd taken while
/// the process was known to be the shim's child, so a pid reused after
/// it was reaped is never hit. Harmless once the process has ended.
#[derive(Clone)]
pub struct ExecKiller(Option<Arc<OwnedFd>>);

impl ExecKiller {
    pub fn kill(&self) {
        if let Some(fd) = &self.0 {
            let _ = rustix::process::pidfd_send_signal(fd.as_fd(), rustix::process::Signal::KILL);
        }
    }
}

/// The caller's ends of a piped exec's stdio: write to `stdin` (drop it
/// for EOF), read `stdout` and `stderr`. `None` where none was asked for
/// (the process has /dev/null there).
pub struct ExecPipes {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// Which stdio streams a piped exec gets.
#[derive(Clone, Copy, Debug, Default)]
pub struct PipeSet {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), Error> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::Io {
        what: "create a pipe for",
        path: "an exec session".into(),
        source: e.into(),
    })
}

impl Engine {
    /// A container by full ID or unique ID prefix (never by name: a name
    /// that happens to be hex is no ID).
    pub fn container_by_id(&self, id: &str) -> Result<ContainerRecord, Error> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::NotFound(id.into()).into());
        }
        let rec = self.containers()?.get(id)?;
        if !rec.id.starts_with(id) {
            return Err(StoreError::NotFound(id.into()).into());
        }
        Ok(rec)
    }

    /// [`Engine::container_by_id`], freshly checked, if it runs.
    pub fn running_by_id(&self, id: &str) -> Result<ContainerRecord, Error> {
        let rec = self.refresh(&self.container_by_id(id)?);
        match rec.status {
            Status::Running => Ok(rec),
            Status::Paused => Err(Error::NotRunning(format!("container {} is paused", rec.id))),
            s => Err(Error::NotRunning(format!("container {} is not running (it is {s:?})", rec.id).to_lowercase())),
        }
    }

    /// The shim of a running container, or why exec cannot go through it.
    fn exec_shim(&self, rec: &ContainerRecord) -> Result<berth_shim::client::Attach, Error> {
        if !self.shim_alive(&rec.id) {
            return Err(Error::NotRunning(format!(
                "container {}: its shim is gone (it was killed), so no exec session can be started; \
                 restart the container",
                rec.id
            )));
        }
        self.attach(rec)
    }

    /// Runs `cmd` in the running container `id` with pipes for the stdio
    /// in `want` (/dev/null for the others); the process and the
    /// caller's ends of its pipes.
    pub fn exec_piped(&self, id: &str, cmd: &[String], want: PipeSet) -> Result<(ExecProcess, ExecPipes), Error> {
        let rec = self.running_by_id(id)?;
        let mut attach = self.exec_shim(&rec)?;
        let null = std::fs::File::open("/dev/null").map_err(|source| Error::Io {
            what: "open",
            path: "/dev/null".into(),
            source,
        })?;
        let null: OwnedFd = null.into();
        let (mut theirs, mut ours) = (Vec::new(), Vec::new());
        for (wanted, inbound) in [(want.stdin, true), (want.stdout, false), (want.stderr, false)] {
            if !wanted {
                theirs.push(None);
                ours.push(None);
                continue;
            }
            let (r, w) = pipe()?;
            let (t, o) = if inbound { (r, w) } else { (w, r) };
            theirs.push(Some(t));
            ours.push(Some(o));
        }
        let fd = |i: usize| theirs[i].as_ref().map_or(null.as_fd(), |f| f.as_fd());
        let mut args = vec![rec.id.clone()];
        args.extend(cmd.iter().cloned());
        let pid = attach.exec(&args, [fd(0), fd(1), fd(2)])?;
        // Only the process holds its ends now: its exit closes them.
        drop(theirs);
        let killer = self.killer_for(&rec, pid);
        let mut ours = ours.into_iter();
        let pipes =
            ExecPipes { stdin: ours.next().flatten(), stdout: ours.next().flatten(), stderr: ours.next().flatten() };
        Ok((ExecProcess { attach, pid, killer, _console: None }, pipes))
    }

    /// Runs `cmd` in the running container `id` on a new terminal of
    /// `size` (given in the process's spec, so the command starts with it,
    /// as containerd does); the process and the terminal's master.
    pub fn exec_pty(&self, id: &str, cmd: &[String], size: Option<TermSize>) -> Result<(ExecProcess, OwnedFd), Error> {
        let rec = self.running_by_id(id)?;
        let mut attach = self.exec_shim(&rec)?;
        let (dir, sock, listener) = self.console_socket()?;
        let process = dir.path().join("process.json");
        self.write_exec_process(&rec, cmd, size, &process)?;
        let args = [
            "--process".to_owned(),
            process.to_string_lossy().into_owned(),
            "--console-socket".to_owned(),
            sock.to_string_lossy().into_owned(),
            rec.id.clone(),
        ];
        let null = std::fs::File::open("/dev/null").map_err(|source| Error::Io {
            what: "open",
            path: "/dev/null".into(),
            source,
        })?;
        let pid = attach.exec(&args, [null.as_fd(), null.as_fd(), null.as_fd()])?;
        let killer = self.killer_for(&rec, pid);
        // The runtime sent the master (it waits in our backlog) before it
        // reported the start.
        let master = match berth_shim::supervisor::receive_console_within(&listener, CONSOLE_WAIT) {
            Ok(m) => m,
            Err(e) => {
                killer.kill();
                return Err(Error::Console(e));
            }
        };
        Ok((ExecProcess { attach, pid, killer, _console: Some(dir) }, master))
    }

    /// The container's own process (config.json) with `cmd` on a
    /// terminal of `size`: what the runtime's `exec --process` runs.
    fn write_exec_process(
        &self,
        rec: &ContainerRecord,
        cmd: &[String],
        size: Option<TermSize>,
        path: &Path,
    ) -> Result<(), Error> {
        let config = rec.bundle.join("config.json");
        let read = std::fs::read(&config).map_err(|source| Error::Io { what: "read", path: config.clone(), source })?;
        let spec: serde_json::Value = serde_json::from_slice(&read).map_err(|e| Error::Io {
            what: "parse",
            path: config.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        let mut process = spec.get("process").cloned().unwrap_or_else(|| serde_json::json!({}));
        process["args"] = serde_json::json!(cmd);
        process["terminal"] = serde_json::Value::Bool(true);
        match size {
            Some(s) if s.rows > 0 && s.cols > 0 => {
                process["consoleSize"] = serde_json::json!({"height": s.rows, "width": s.cols});
            }
            _ => {
                if let Some(p) = process.as_object_mut() {
                    p.remove("consoleSize");
                }
            }
        }
        let mut f = std::fs::File::create(path).map_err(|source| Error::Io {
            what: "create",
            path: path.to_owned(),
            source,
        })?;
        f.write_all(process.to_string().as_bytes()).map_err(|source| Error::Io {
            what: "write",
            path: path.to_owned(),
            source,
        })
    }

    /// A pidfd for the exec session's process `pid`, if it is still the
    /// shim's child (the shim, its subreaper, has not reaped it: the pid
    /// is not reused yet).
    fn killer_for(&self, rec: &ContainerRecord, pid: i32) -> ExecKiller {
        let shim = berth_shim::client::shim_state(&self.state_dir(&rec.id)).map(|s| s.shim.pid);
        let fd = rustix::process::Pid::from_raw(pid)
            .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok());
        let ours = fd.filter(|_| shim.is_some() && crate::engine::parent_of(pid) == shim);
        ExecKiller(ours.map(Arc::new))
    }

    /// The pinned network namespace of the container `id` (by ID or ID
    /// prefix); `None` for one on the host's network.
    pub fn netns_of(&self, id: &str) -> Result<Option<PathBuf>, Error> {
        let rec = self.container_by_id(id)?;
        if rec.config.network == "host" {
            return Ok(None);
        }
        match self.netns_of_record(&rec) {
            Some(p) => Ok(Some(p)),
            None => {
                Err(Error::NotRunning(format!("container {} has no network namespace (it is not running)", rec.id)))
            }
        }
    }

    /// A path to the container's network namespace: its pin, or, for one
    /// the runtime made (`--network none`), its running init's
    /// /proc/PID/ns/net, the init checked to be the shim's child (a pid
    /// the record names may have been reused). `None` if neither.
    pub(crate) fn netns_of_record(&self, rec: &ContainerRecord) -> Option<PathBuf> {
        let pin = self.run_dir(&rec.id).join("netns");
        if pin.exists() {
            return Some(pin);
        }
        let (pid, shim) = (rec.pid?, rec.shim_pid?);
        (crate::engine::parent_of(pid) == Some(shim)).then(|| PathBuf::from(format!("/proc/{pid}/ns/net")))
    }
}

/// Connects to `port` on localhost (127.0.0.1, then ::1, as the kubelet's
/// runtimes do) in the network namespace pinned at `netns` (`None`: the
/// host's). The socket is made on a thread of its own that entered the
/// namespace and then ends: a socket stays in the namespace it was made
/// in, and no thread of the caller changes namespace. The error reads as
/// containerd's.
pub fn dial_localhost(netns: Option<&Path>, port: u16, timeout: Duration) -> std::io::Result<std::net::TcpStream> {
    let netns = netns.map(Path::to_owned);
    let dial = move || -> std::io::Result<std::net::TcpStream> {
        let name = match &netns {
            Some(p) => {
                let ns = std::fs::File::open(p)?;
                rustix::thread::move_into_link_name_space(
                    ns.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )?;
                p.display().to_string()
            }
            None => "host".to_owned(),
        };
        let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
        std::net::TcpStream::connect_timeout(&v4, timeout).or_else(|e4| {
            std::net::TcpStream::connect_timeout(&v6, timeout).map_err(|e6| {
                std::io::Error::new(
                    e4.kind(),
                    format!("failed to connect to localhost:{port} inside namespace {name:?}, IPv4: {e4} IPv6 {e6}"),
                )
            })
        })
    };
    std::thread::Builder::new()
        .name("berth-netns-dial".into())
        .spawn(dial)
        .map_err(|e| std::io::Error::new(e.kind(), format!("start a thread to enter the network namespace: {e}")))?
        .join()
        .map_err(|_| std::io::Error::other("the network namespace thread panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dial_to_nothing_names_both_addresses_and_the_namespace() {
        // A port nobody listens on: bound then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e = dial_localhost(None, port, Duration::from_secs(2)).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("failed to connect to localhost:{port} inside namespace \"host\"")), "{msg}");
        assert!(msg.contains("IPv4: Connection refused"), "{msg}");
    }

    #[test]
    fn a_dial_in_the_hosts_namespace_reaches_a_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let c = dial_localhost(None, port, Duration::from_secs(2)).unwrap();
        assert_eq!(c.peer_addr().unwrap().port(), port);
    }
}
