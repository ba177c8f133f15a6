//! What front ends do to a running container besides start and stop:
//! `exec` (with and without a terminal), `kill`, `pause`/`unpause`,
//! `restart`, and docker's `inspect` view of a record.

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::Error;
use crate::engine::Engine;
use crate::spec::user;
use crate::store::{ContainerRecord, Status};

/// A process running on a pty in a container (`exec -t`): an exec session
/// of the container's shim, or (the shim is gone) the runtime's `exec`
/// in the foreground; the master carries its I/O.
pub struct TtyExec {
    waiter: TtyWaiter,
    pub master: std::os::fd::OwnedFd,
    _dir: tempfile::TempDir,
}

/// Who reports the end of an `exec -t` process.
enum TtyWaiter {
    Shim(berth_shim::client::Attach),
    Runtime(berth_oci_cli::Pending),
}

impl TtyExec {
    /// Waits for the process to end; its exit code.
    pub fn wait(self) -> Result<i32, Error> {
        match self.waiter {
            TtyWaiter::Shim(mut attach) => Ok(attach.exec_exit()?),
            // The runtime's exit status is the process's.
            TtyWaiter::Runtime(exec) => match exec.wait() {
                Ok(()) => Ok(0),
                Err(e) => e.status().map(exit_code).ok_or(Error::Runtime(e)),
            },
        }
    }
}

/// A process's exit code as a shell gives it (128+N for signal N).
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(255)
}

/// Whether the runtime logged an error of its own (runc's
/// `--log-format json`), as opposed to the exec'd process failing.
fn runtime_logged_error(log: &std::path::Path) -> bool {
    std::fs::read_to_string(log).ok().and_then(|t| berth_oci_cli::last_json_error(&t)).is_some()
}

fn io_err(what: &'static str, path: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, path: path.into(), source }
}

/// `docker exec`'s flags.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    /// Start it and return at once.
    pub detach: bool,
}

impl Engine {
    /// A running container by name, id or id prefix, freshly checked.
    pub(crate) fn running(&self, key: &str) -> Result<ContainerRecord, Error> {
        let rec = self.refresh(&self.containers()?.get(key)?);
        match rec.status {
            Status::Running => Ok(rec),
            Status::Paused => Err(Error::NotRunning(format!("container {} is paused, unpause it first", rec.id))),
            _ => Err(Error::NotRunning(format!("container {} is not running", rec.id))),
        }
    }

    /// Runs a process in the container as an exec session of its shim
    /// (the shim runs the runtime's `exec`, reaps the process and reports
    /// its exit), with this process's stdout and stderr, and stdin with
    /// `stdin`; its exit code. An error the runtime gives (a command that
    /// is not there) is [`Error::Shim`] with the runtime's words.
    pub fn exec(&self, key: &str, o: &ExecOptions, stdin: bool) -> Result<i32, Error> {
        use std::os::fd::AsFd;
        let rec = self.running(key)?;
        let args = self.exec_args(&rec, o, &[])?;
        if !self.shim_alive(&rec.id) {
            return self.exec_unsupervised(&rec, &args, o.detach, stdin);
        }
        let null = std::fs::File::open("/dev/null").map_err(io_err("open", "/dev/null"))?;
        let (i, out, err) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
        let stdio = if o.detach {
            [null.as_fd(), null.as_fd(), null.as_fd()]
        } else {
            // docker's exec reads no input without -i.
            [if stdin { i.as_fd() } else { null.as_fd() }, out.as_fd(), err.as_fd()]
        };
        let mut a = self.attach(&rec)?;
        a.exec(&args, stdio)?;
        if o.detach {
            return Ok(0);
        }
        Ok(a.exec_exit()?)
    }

    /// [`Engine::exec`] with the caller's fds as the process's stdin,
    /// stdout and stderr (a daemon's pipes, not its own stdio): the shim's
    /// session, whose [`berth_shim::client::Attach::exec_exit`] gives the
    /// exit code, and the process's pid. Only through the shim: a
    /// container whose shim is gone is refused (its exec would have no
    /// one to report the exit code).
    pub fn exec_with_stdio(
        &self,
        key: &str,
        o: &ExecOptions,
        stdio: [std::os::fd::BorrowedFd<'_>; 3],
    ) -> Result<(berth_shim::client::Attach, i32), Error> {
        let rec = self.running(key)?;
        let args = self.exec_args(&rec, o, &[])?;
        if !self.shim_alive(&rec.id) {
            return Err(Error::NotRunning(format!(
                "container {} has lost its shim (it was killed): exec through it is not possible",
                rec.id
            )));
        }
        let mut a = self.attach(&rec)?;
        let pid = a.exec(&args, stdio)?;
        Ok((a, pid))
    }

    /// A console socket for a runtime's `--console-socket` (runc's
    /// protocol), in a private directory under the runroot that goes with
    /// the returned guard: the directory, the socket's path, its listener
    /// (non-blocking).
    pub(crate) fn console_socket(
        &self,
    ) -> Result<(tempfile::TempDir, std::path::PathBuf, std::os::unix::net::UnixListener), Error> {
        let dir = tempfile::Builder::new()
            .prefix("exec-")
            .tempdir_in(self.runroot.join("s"))
            .map_err(|source| Error::Io { what: "create a console dir in", path: self.runroot.clone(), source })?;
        let sock = dir.path().join("c.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).map_err(|source| Error::Io {
            what: "bind",
            path: sock.clone(),
            source,
        })?;
        listener.set_nonblocking(true).map_err(|source| Error::Io { what: "set up", path: sock.clone(), source })?;
        Ok((dir, sock, listener))
    }

    /// `exec -t`: an exec session on a new pty, whose master the runtime
    /// sends to a console socket of ours (runc's protocol).
    pub fn exec_tty(&self, key: &str, o: &ExecOptions) -> Result<TtyExec, Error> {
        use std::os::fd::AsFd;
        let rec = self.running(key)?;
        let (dir, sock, listener) = self.console_socket()?;
        let tty = ["--tty".to_owned(), "--console-socket".to_owned(), sock.to_string_lossy().into_owned()];
        let args = self.exec_args(&rec, o, &tty)?;
        if !self.shim_alive(&rec.id) {
            return self.exec_tty_unsupervised(&rec, &args, o.detach, &listener, dir);
        }
        let null = std::fs::File::open("/dev/null").map_err(io_err("open", "/dev/null"))?;
        let mut attach = self.attach(&rec)?;
        // The runtime has sent the master (it waits in our backlog) by the
        // time the shim reports the start.
        attach.exec(&args, [null.as_fd(), null.as_fd(), null.as_fd()])?;
        let master = berth_shim::supervisor::receive_console_within(&listener, std::time::Duration::from_secs(10))
            .map_err(Error::Console)?;
        Ok(TtyExec { waiter: TtyWaiter::Shim(attach), master, _dir: dir })
    }

    /// [`Engine::exec`] for a container whose shim is gone (killed; the
    /// container runs on, see [`Engine::refresh`]): the runtime's `exec`
    /// run by this process with its stdio, as berth ran exec before the
    /// shim took exec sessions over. What is lost without the shim: no
    /// berth process is the parent of the exec'd process, so a detached
    /// one (`-d`) is reaped by whoever adopts it (the container's init or
    /// the host's) and its exit code is recorded nowhere. An attached one
    /// is waited for by the runtime, which gives its code.
    fn exec_unsupervised(
        &self,
        rec: &ContainerRecord,
        args: &[String],
        detach: bool,
        stdin: bool,
    ) -> Result<i32, Error> {
        use std::process::Stdio;
        let log = tempfile::Builder::new()
            .prefix("berth-exec-")
            .suffix(".log")
            .tempfile()
            .map_err(io_err("create a log file for", "the OCI runtime's exec"))?;
        // Its own errors go to the log: its stderr is the process's.
        let runtime = self.oci_runtime_of(rec).log(log.path()).log_format(berth_oci_cli::LogFormat::Json);
        let io = if detach {
            berth_oci_cli::Io::default()
        } else {
            berth_oci_cli::Io {
                // docker's exec reads no input without -i.
                stdin: Some(if stdin { Stdio::inherit() } else { Stdio::null() }),
                stdout: Some(Stdio::inherit()),
                stderr: Some(Stdio::inherit()),
            }
        };
        let rest: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
        let opts = berth_oci_cli::ExecOpts { detach, ..Default::default() };
        match runtime.exec_prepared(&rest, &opts, io) {
            Ok(()) => Ok(0),
            Err(e) if runtime_logged_error(log.path()) => Err(Error::Runtime(e)),
            Err(e) if detach => Err(Error::Runtime(e)),
            // The runtime's exit status is the process's.
            Err(e) => e.status().map(exit_code).ok_or(Error::Runtime(e)),
        }
    }

    /// [`Engine::exec_tty`] for a container whose shim is gone: the
    /// runtime's `exec --tty` in the foreground (its exit status is the
    /// process's), or `--detach`ed; see [`Engine::exec_unsupervised`].
    fn exec_tty_unsupervised(
        &self,
        rec: &ContainerRecord,
        args: &[String],
        detach: bool,
        listener: &std::os::unix::net::UnixListener,
        dir: tempfile::TempDir,
    ) -> Result<TtyExec, Error> {
        use std::process::Stdio;
        let log = dir.path().join("runtime.log");
        let runtime = self.oci_runtime_of(rec).log(&log).log_format(berth_oci_cli::LogFormat::Json);
        let rest: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
        let opts = berth_oci_cli::ExecOpts { detach, ..Default::default() };
        let io =
            berth_oci_cli::Io { stdin: Some(Stdio::null()), stdout: Some(Stdio::null()), stderr: Some(Stdio::null()) };
        let mut exec = runtime.spawn_exec_prepared(&rest, &opts, io)?;
        match console_from(listener, &mut exec) {
            Ok(master) => Ok(TtyExec { waiter: TtyWaiter::Runtime(exec), master, _dir: dir }),
            Err(e) => {
                exec.kill();
                // The runtime's own message if it logged one.
                Err(match exec.wait() {
                    Err(err) if runtime_logged_error(&log) => Error::Runtime(err),
                    _ => Error::Console(e),
                })
            }
        }
    }

    /// The runtime's `exec` arguments after `exec`: options, `extra`, the
    /// container's ID and the command.
    pub(crate) fn exec_args(
        &self,
        rec: &ContainerRecord,
        o: &ExecOptions,
        extra: &[String],
    ) -> Result<Vec<String>, Error> {
        let mut a = Vec::new();
        if let Some(u) = o.user.as_deref().filter(|u| !u.is_empty()) {
            // Names are looked up in the container's own /etc/passwd.
            let view = self.container_root(rec, true)?;
            let root = view.as_ref().map_or_else(|| self.run_dir(&rec.id).join("rootfs"), |v| v.path());
            let id = user::resolve(&root, u)?;
            a.extend(["--user".to_owned(), format!("{}:{}", id.uid, id.gid)]);
            for g in id.additional_gids {
                a.extend(["--additional-gids".to_owned(), g.to_string()]);
            }
        }
        for e in &o.env {
            a.extend(["--env".to_owned(), e.clone()]);
        }
        if let Some(w) = &o.workdir {
            a.extend(["--cwd".to_owned(), w.clone()]);
        }
        a.extend(extra.iter().cloned());
        a.push(rec.id.clone());
        a.extend(o.args.iter().cloned());
        Ok(a)
    }

    /// Sends `signal` (a name or number, as `kill -s` takes it).
    pub fn kill(&self, key: &str, signal: &str) -> Result<(), Error> {
        let rec = self.running(key)?;
        self.oci_runtime_of(&rec).kill(&rec.id, signal, false)?;
        let number = signal_number(signal).map_or_else(|| signal.to_owned(), |n| n.to_string());
        self.container_event(&rec, "kill", &[("signal", number)]);
        Ok(())
    }

    /// `pause`: the runtime freezes the container's cgroup.
    pub fn pause(&self, key: &str) -> Result<ContainerRecord, Error> {
        let rec = self.running(key)?;
        self.oci_runtime_of(&rec).pause(&rec.id)?;
        self.container_event(&rec, "pause", &[]);
        Ok(self.containers()?.update(&rec.id, |r| r.status = Status::Paused)?)
    }

    /// `unpause`.
    pub fn unpause(&self, key: &str) -> Result<ContainerRecord, Error> {
        let rec = self.refresh(&self.containers()?.get(key)?);
        if rec.status != Status::Paused {
            return Err(Error::NotRunning(format!("Container {} is not paused", rec.id)));
        }
        self.resume(&rec.id)?;
        self.container_event(&rec, "unpause", &[]);
        Ok(self.containers()?.get(&rec.id)?)
    }

    /// Thaws a paused container and records it running.
    pub(crate) fn resume(&self, id: &str) -> Result<(), Error> {
        self.oci_runtime_for(id).resume(id)?;
        self.containers()?.update(id, |r| r.status = Status::Running)?;
        Ok(())
    }

    /// `restart`: stop (SIGTERM, SIGKILL after `timeout`) and start again
    /// on the same rootfs, network and log.
    pub fn restart(&self, key: &str, timeout: std::time::Duration) -> Result<ContainerRecord, Error> {
        let rec = self.containers()?.get(key)?;
        self.stop(&rec.id, timeout)?;
        let rec = self.start(&rec.id)?;
        self.container_event(&rec, "restart", &[]);
        Ok(rec)
    }

    /// `rename`: the record's new name (unique, as at create), and docker's
    /// rename event with the old name.
    pub fn rename(&self, key: &str, new: &str) -> Result<ContainerRecord, Error> {
        let store = self.containers()?;
        let rec = store.get(key)?;
        store.rename(&rec.id, new)?;
        let renamed = store.get(&rec.id)?;
        // Its shim's die event names it as it is now.
        let dir = self.state_dir(&rec.id);
        if dir.exists() {
            let attrs = serde_json::to_vec(&Engine::container_attributes(&renamed)).unwrap_or_default();
            let _ = berth_fs::write_atomic(&dir.join(berth_shim::events::ATTRS_FILE), &attrs, 0o644);
        }
        self.container_event(&renamed, "rename", &[("oldName", format!("/{}", rec.name))]);
        Ok(renamed)
    }

    /// docker's `inspect` shape of a container (the fields scripts use).
    pub fn inspect(&self, key: &str) -> Result<Value, Error> {
        let rec = self.refresh(&self.containers()?.get(key)?);
        let args = &rec.config.args;
        let (path, rest) = match args.split_first() {
            Some((p, r)) => (p.clone(), r.to_vec()),
            None => (String::new(), Vec::new()),
        };
        let status = serde_json::to_value(rec.status).unwrap_or(Value::Null);
        let running = rec.status == Status::Running;
        let ports: serde_json::Map<String, Value> = rec
            .config
            .ports
            .iter()
            .map(|p| {
                let key = format!("{}/{}", p.container_port, p.protocol);
                let ip = if p.host_ip.is_empty() { "0.0.0.0" } else { p.host_ip.as_str() };
                (key, json!([{ "HostIp": ip, "HostPort": p.host_port.to_string() }]))
            })
            .collect();
        let network = if rec.config.network.is_empty() { "bridge" } else { rec.config.network.as_str() };
        let address = rec.config.address.clone().unwrap_or_default();
        Ok(json!({
            "Id": rec.id,
            "Created": rec.created,
            "Path": path,
            "Args": rest,
            "State": {
                "Status": status,
                "Running": running,
                "Paused": rec.status == Status::Paused,
                "Restarting": rec.status == Status::Restarting,
                "OOMKilled": rec.oom_killed,
                "Dead": rec.status == Status::Dead,
                "Pid": if running { rec.pid.unwrap_or(0) } else { 0 },
                "ExitCode": rec.exit_code.unwrap_or(0),
                "StartedAt": rec.started_at.clone().unwrap_or_default(),
                "FinishedAt": rec.finished_at.clone().unwrap_or_default(),
            },
            "Image": rec.image_id,
            "Name": format!("/{}", rec.name),
            "RestartCount": rec.restart_count,
            "LogPath": self.log_path(&rec),
            "Config": { "Image": rec.image, "Cmd": args, "Tty": rec.config.tty, "Labels": rec.labels },
            "HostConfig": {
                "NetworkMode": network,
                "RestartPolicy": restart_policy(rec.config.restart.as_deref()),
            },
            "NetworkSettings": {
                "IPAddress": address,
                "Ports": ports,
                "Networks": crate::network::networks_json(&rec),
            },
            "Mounts": self.user_mounts(&rec),
        }))
    }

    /// docker's `Mounts`: the volumes, binds and tmpfs the user asked for,
    /// read from the container's config.json (the one place that holds
    /// them all as resolved), without the mounts every container has.
    fn user_mounts(&self, rec: &ContainerRecord) -> Value {
        let spec = rec.bundle.join("config.json");
        let Ok(spec) =
            std::fs::read(&spec).map_err(drop).and_then(|b| serde_json::from_slice::<Value>(&b).map_err(drop))
        else {
            return json!([]);
        };
        let volumes = self.root.join("volumes");
        let mounts = spec["mounts"].as_array().map(Vec::as_slice).unwrap_or_default();
        Value::Array(mounts.iter().filter_map(|m| docker_mount(m, &volumes)).collect())
    }
}

/// `--restart` as docker's inspect shows it: on-failure's count apart.
fn restart_policy(given: Option<&str>) -> Value {
    let given = given.unwrap_or("no");
    let (name, count) = given.split_once(':').map_or((given, 0), |(n, c)| (n, c.parse::<i64>().unwrap_or(0)));
    json!({ "Name": name, "MaximumRetryCount": count })
}

/// Destinations every container gets from the engine, not the user.
pub(crate) const SYSTEM_MOUNTS: &[&str] = &[
    "/proc",
    "/dev",
    "/dev/pts",
    "/dev/shm",
    "/dev/mqueue",
    "/sys",
    "/sys/fs/cgroup",
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    crate::spec::INIT_PATH,
];

/// One OCI mount in docker's `Mounts` shape, if the user asked for it: a
/// bind from ROOT/volumes/NAME/_data is volume NAME.
fn docker_mount(m: &Value, volumes: &std::path::Path) -> Option<Value> {
    let dest = m["destination"].as_str()?;
    if SYSTEM_MOUNTS.contains(&dest) {
        return None;
    }
    let opts: Vec<&str> =
        m["options"].as_array().map(|o| o.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let rw = !opts.contains(&"ro");
    let source = m["source"].as_str().unwrap_or_default();
    let propagation = opts
        .iter()
        .find(|o| matches!(**o, "rprivate" | "private" | "rshared" | "shared" | "rslave" | "slave"))
        .copied()
        .unwrap_or("rprivate");
    if m["type"] == "tmpfs" {
        return Some(
            json!({ "Type": "tmpfs", "Source": "", "Destination": dest, "Mode": "", "RW": rw, "Propagation": "" }),
        );
    }
    if !opts.iter().any(|o| *o == "bind" || *o == "rbind") && m["type"] != "bind" {
        return None;
    }
    let volume = std::path::Path::new(source)
        .strip_prefix(volumes)
        .ok()
        .filter(|rest| rest.ends_with("_data") && rest.components().count() == 2)
        .and_then(|rest| rest.components().next())
        .map(|c| c.as_os_str().to_string_lossy().into_owned());
    Some(match volume {
        Some(name) => json!({
            "Type": "volume", "Name": name, "Source": source, "Destination": dest,
            "Driver": "local", "Mode": "z", "RW": rw, "Propagation": "",
        }),
        None => json!({
            "Type": "bind", "Source": source, "Destination": dest, "Mode": "", "RW": rw, "Propagation": propagation,
        }),
    })
}

/// The terminal `child` (the runtime's `exec --tty`) sends to `listener`,
/// or why none came: it exited first, or a minute passed.
fn console_from(
    listener: &std::os::unix::net::UnixListener,
    exec: &mut berth_oci_cli::Pending,
) -> Result<std::os::fd::OwnedFd, String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match berth_shim::supervisor::receive_console_within(listener, std::time::Duration::from_millis(50)) {
            Ok(fd) => return Ok(fd),
            Err(e) if !e.contains("no terminal") => return Err(e),
            Err(_) => {}
        }
        if let Some(status) = exec.try_exited() {
            return Err(format!("the runtime exited ({status}) without sending a terminal"));
        }
        if std::time::Instant::now() > deadline {
            return Err("the runtime sent no terminal within 60 s".into());
        }
    }
}

/// A signal's number from a name (`TERM`, `SIGTERM`) or number, as the
/// kill event shows it.
fn signal_number(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return Some(n);
    }
    let name = s.to_ascii_uppercase();
    let name = if name.starts_with("SIG") { name } else { format!("SIG{name}") };
    name.parse::<Signal>().ok().map(|s| s as i32)
}
