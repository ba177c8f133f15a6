//! `stop`, `rm`, `kill`, `wait`, `exec` and `inspect`.

use std::time::Duration;

use anyhow::{Result, bail};
use berth_engine::Error;
use berth_engine::engine::Engine;
use berth_engine::ops::ExecOptions;
use clap::Args;

use crate::cmd::image::InspectArgs;
use crate::config::Config;

#[derive(Args)]
pub struct StopArgs {
    /// Seconds to wait for the container to stop before SIGKILL
    #[arg(short, long, default_value_t = 10)]
    pub time: u64,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args)]
pub struct RmArgs {
    /// Stop a running container first (SIGKILL)
    #[arg(short, long)]
    force: bool,
    /// Remove the container's anonymous volumes too
    #[arg(short, long)]
    volumes: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct ExecArgs {
    /// Run in the background
    #[arg(short, long)]
    detach: bool,
    #[arg(short, long = "env")]
    env: Vec<String>,
    #[arg(short, long)]
    user: Option<String>,
    #[arg(short, long)]
    workdir: Option<String>,
    /// Keep stdin open
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    tty: bool,
    container: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Args)]
pub struct KillArgs {
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn stop(engine: &Engine, a: StopArgs) -> Result<()> {
    for c in a.containers {
        engine.stop(&c, Duration::from_secs(a.time))?;
        println!("{c}");
    }
    Ok(())
}

pub fn rm(engine: &Engine, a: RmArgs) -> Result<()> {
    for c in a.containers {
        engine.remove_with(&c, a.force, a.volumes)?;
        println!("{c}");
    }
    Ok(())
}

/// `berth exec`: without `-t` the process shares this one's stdio
/// (stdin only with `-i`); with `-t` it gets a pty of its own.
pub fn exec(engine: &Engine, a: ExecArgs) -> Result<i32> {
    let o = ExecOptions { args: a.command, env: a.env, user: a.user, workdir: a.workdir, detach: a.detach };
    // docker's exec events (an exec with no container fails below).
    let rec = engine.containers()?.get(&a.container).ok();
    let exec_id = berth_engine::store::new_id();
    if let Some(r) = &rec {
        engine.exec_event(r, "exec_create", &o.args, &exec_id, None);
        engine.exec_event(r, "exec_start", &o.args, &exec_id, None);
    }
    let result = if a.tty {
        super::lifecycle::exec_tty(engine, &a.container, &o, a.interactive)
    } else {
        match engine.exec(&a.container, &o, a.interactive) {
            Ok(code) => Ok(code),
            // The runtime's words, from the shim or (no shim) its own log.
            Err(e @ (Error::Shim(_) | Error::Runtime(_))) => super::lifecycle::exec_failed(e),
            Err(e) => Err(e.into()),
        }
    };
    if let (Some(r), Ok(code)) = (&rec, &result)
        && !a.detach
    {
        engine.exec_event(r, "exec_die", &o.args, &exec_id, Some(*code));
    }
    result
}

pub fn kill(engine: &Engine, a: KillArgs) -> Result<()> {
    for c in a.containers {
        engine.kill(&c, &a.signal)?;
        println!("{c}");
    }
    Ok(())
}

pub fn wait(engine: &Engine, containers: &[String]) -> Result<()> {
    for c in containers {
        let rec = engine.containers()?.get(c)?;
        println!("{}", engine.wait(&rec.id, || {})?);
    }
    Ok(())
}

/// `inspect`: containers first, then images, as docker looks them up.
pub fn inspect(engine: &Engine, config: &Config, a: InspectArgs) -> Result<()> {
    let mut out = Vec::new();
    let mut images = Vec::new();
    for name in &a.images {
        match engine.inspect(name) {
            Ok(v) => out.push(v),
            Err(Error::Store(berth_engine::store::StoreError::NotFound(_))) => images.push(name.clone()),
            Err(e) => return Err(e.into()),
        }
    }
    if images.is_empty() {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if out.is_empty() {
        return crate::cmd::image::inspect(engine, config, InspectArgs { images });
    }
    bail!("inspect containers and images separately (berth image inspect for {})", images.join(", "))
}
