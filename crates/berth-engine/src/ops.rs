//! What the CLI does to a running container besides start and stop:
//! `exec`, `kill` and docker's `inspect` view of a record.

use std::process::Stdio;

use serde_json::{Value, json};

use crate::engine::{Engine, EngineError};
use crate::spec::user;
use crate::store::{ContainerRecord, Status};

/// `docker exec`'s flags (without a terminal).
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
    pub fn exec(&self, key: &str, o: &ExecOptions) -> Result<i32, EngineError> {
        let rec = self.running(key)?;
        let mut c = self.runtime_cmd();
        c.args(["exec"]);
        if let Some(u) = o.user.as_deref().filter(|u| !u.is_empty()) {
            // Names are looked up in the container's own /etc/passwd.
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
        if o.detach {
            c.arg("--detach").stdin(Stdio::null()).stdout(Stdio::null());
        }
        c.arg(&rec.id).args(&o.args);
        let status = c.status().map_err(|source| EngineError::Io {
            what: "run the OCI runtime",
            path: self.runtime.clone(),
            source,
        })?;
        Ok(status.code().unwrap_or(128 + 9))
    }

    /// Sends `signal` (a name or number, as `kill -s` takes it).
    pub fn kill(&self, key: &str, signal: &str) -> Result<(), EngineError> {
        let rec = self.running(key)?;
        let out = self.runtime_cmd().args(["kill", &rec.id, signal]).output().map_err(|source| EngineError::Io {
            what: "run the OCI runtime",
            path: self.runtime.clone(),
            source,
        })?;
        if !out.status.success() {
            return Err(EngineError::Runtime(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
        }
        Ok(())
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
