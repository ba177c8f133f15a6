//! What the CLI does to a running container besides start and stop:
//! `exec` (with and without a terminal), `kill`, `pause`/`unpause`,
//! `restart`, and docker's `inspect` view of a record.

use std::process::Stdio;

use serde_json::{Value, json};

use crate::engine::{Engine, EngineError};
use crate::spec::user;
use crate::store::{ContainerRecord, Status};

/// A process running on a pty in a container (`exec -t`): the runtime
/// waits for it in the foreground; the master carries its I/O.
pub struct TtyExec {
    pub runtime: std::process::Child,
    pub master: std::os::fd::OwnedFd,
    _dir: tempfile::TempDir,
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
    fn running(&self, key: &str) -> Result<ContainerRecord, EngineError> {
        let rec = self.refresh(&self.containers()?.get(key)?);
        match rec.status {
            Status::Running => Ok(rec),
            Status::Paused => Err(EngineError::NotRunning(format!("container {} is paused, unpause it first", rec.id))),
            _ => Err(EngineError::NotRunning(format!("container {} is not running", rec.id))),
        }
    }

    /// Runs a process in the container through the OCI runtime, with this
    /// process's stdio; its exit code (docker's 126/127 when it cannot be
    /// run, as the runtime reports them).
    pub fn exec(&self, key: &str, o: &ExecOptions, stdin: bool) -> Result<i32, EngineError> {
        let rec = self.running(key)?;
        // Names are looked up in the container's own /etc/passwd.
        let mut c = self.exec_cmd(&rec, o)?;
        if o.detach {
            c.arg("--detach").stdout(Stdio::null());
        }
        if o.detach || !stdin {
            // docker's exec reads no input without -i.
            c.stdin(Stdio::null());
        }
        c.arg(&rec.id).args(&o.args);
        let status = c.status().map_err(|source| EngineError::Io {
            what: "run the OCI runtime",
            path: self.runtime.clone(),
            source,
        })?;
        Ok(status.code().unwrap_or(128 + 9))
    }

    /// `exec -t`: the process runs on a new pty whose master the runtime
    /// sends to a console socket (runc's protocol). The runtime stays in
    /// the foreground until the process ends; its exit status is the
    /// process's.
    pub fn exec_tty(&self, key: &str, o: &ExecOptions) -> Result<TtyExec, EngineError> {
        use std::os::unix::net::UnixListener;
        let rec = self.running(key)?;
        let dir = tempfile::Builder::new().prefix("exec-").tempdir_in(self.runroot.join("s")).map_err(|source| {
            EngineError::Io { what: "create a console dir in", path: self.runroot.clone(), source }
        })?;
        let sock = dir.path().join("c.sock");
        let listener =
            UnixListener::bind(&sock).map_err(|source| EngineError::Io { what: "bind", path: sock.clone(), source })?;
        listener.set_nonblocking(true).map_err(|source| EngineError::Io {
            what: "set up",
            path: sock.clone(),
            source,
        })?;
        let mut c = self.exec_cmd(&rec, o)?;
        c.arg("--tty").arg("--console-socket").arg(&sock);
        if o.detach {
            c.arg("--detach");
        }
        c.arg(&rec.id).args(&o.args).stdin(Stdio::null()).stdout(Stdio::null());
        let mut child = c.spawn().map_err(|source| EngineError::Io {
            what: "run the OCI runtime",
            path: self.runtime.clone(),
            source,
        })?;
        let master = match berth_shim::supervisor::receive_console(&listener, &mut child) {
            Ok(m) => m,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(EngineError::Runtime(e));
            }
        };
        Ok(TtyExec { runtime: child, master, _dir: dir })
    }

    /// The runtime's `exec` with the options that do not depend on stdio.
    fn exec_cmd(&self, rec: &ContainerRecord, o: &ExecOptions) -> Result<std::process::Command, EngineError> {
        let mut c = self.runtime_cmd();
        c.arg("exec");
        if let Some(u) = o.user.as_deref().filter(|u| !u.is_empty()) {
            let id = user::resolve(&self.run_dir(&rec.id).join("rootfs"), u)?;
            c.arg("--user").arg(format!("{}:{}", id.uid, id.gid));
            for g in id.additional_gids {
                c.arg("--additional-gids").arg(g.to_string());
            }
        }
        for e in &o.env {
            c.arg("--env").arg(e);
        }
        if let Some(w) = &o.workdir {
            c.arg("--cwd").arg(w);
        }
        Ok(c)
    }

    /// Sends `signal` (a name or number, as `kill -s` takes it).
    pub fn kill(&self, key: &str, signal: &str) -> Result<(), EngineError> {
        let rec = self.running(key)?;
        self.runtime_ok(&["kill", &rec.id, signal])
    }

    /// Runs the OCI runtime with `args`; its own message if it fails.
    fn runtime_ok(&self, args: &[&str]) -> Result<(), EngineError> {
        let out = self.runtime_cmd().args(args).output().map_err(|source| EngineError::Io {
            what: "run the OCI runtime",
            path: self.runtime.clone(),
            source,
        })?;
        if !out.status.success() {
            return Err(EngineError::Runtime(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
        }
        Ok(())
    }

    /// `pause`: the runtime freezes the container's cgroup.
    pub fn pause(&self, key: &str) -> Result<ContainerRecord, EngineError> {
        let rec = self.running(key)?;
        self.runtime_ok(&["pause", &rec.id])?;
        Ok(self.containers()?.update(&rec.id, |r| r.status = Status::Paused)?)
    }

    /// `unpause`.
    pub fn unpause(&self, key: &str) -> Result<ContainerRecord, EngineError> {
        let rec = self.refresh(&self.containers()?.get(key)?);
        if rec.status != Status::Paused {
            return Err(EngineError::NotRunning(format!("Container {} is not paused", rec.id)));
        }
        self.resume(&rec.id)?;
        Ok(self.containers()?.get(&rec.id)?)
    }

    /// Thaws a paused container and records it running.
    pub(crate) fn resume(&self, id: &str) -> Result<(), EngineError> {
        self.runtime_ok(&["resume", id])?;
        self.containers()?.update(id, |r| r.status = Status::Running)?;
        Ok(())
    }

    /// `restart`: stop (SIGTERM, SIGKILL after `timeout`) and start again
    /// on the same rootfs, network and log.
    pub fn restart(&self, key: &str, timeout: std::time::Duration) -> Result<ContainerRecord, EngineError> {
        let rec = self.containers()?.get(key)?;
        self.stop(&rec.id, timeout)?;
        self.start(&rec.id)
    }

    /// docker's `inspect` shape of a container (the fields scripts use).
    pub fn inspect(&self, key: &str) -> Result<Value, EngineError> {
        let rec = self.refresh(&self.containers()?.get(key)?);
        let args: Vec<Value> = rec.config["args"].as_array().cloned().unwrap_or_default();
        let (path, rest) = match args.split_first() {
            Some((p, r)) => (p.clone(), r.to_vec()),
            None => (Value::String(String::new()), Vec::new()),
        };
        let status = serde_json::to_value(rec.status).unwrap_or(Value::Null);
        let running = rec.status == Status::Running;
        let ports: serde_json::Map<String, Value> = rec.config["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let key = format!("{}/{}", p["containerPort"], p["protocol"].as_str().unwrap_or("tcp"));
                let host = json!([{ "HostIp": p["hostIP"].as_str().unwrap_or("0.0.0.0"), "HostPort": p["hostPort"].to_string() }]);
                (key, host)
            })
            .collect();
        let network = rec.config["network"].as_str().unwrap_or("bridge").to_owned();
        let address = rec.config["address"].as_str().unwrap_or("").to_owned();
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
            "Config": { "Image": rec.image, "Cmd": args, "Tty": rec.config["tty"], "Labels": rec.labels },
            "HostConfig": {
                "NetworkMode": network,
                "RestartPolicy": { "Name": rec.config["restart"].as_str().unwrap_or("no") },
            },
            "NetworkSettings": {
                "IPAddress": address,
                "Ports": ports,
                "Networks": if address.is_empty() { json!({}) } else { json!({ network: { "IPAddress": address } }) },
            },
        }))
    }
}
