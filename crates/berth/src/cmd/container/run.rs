//! `run` and `create`: flags into the engine's RunFlags and
//! CreateOptions, the image pulled as `--pull` says (by the engine), the
//! container made, started and followed. Exit codes as docker's: 125 when
//! berth itself fails `run`, 126/127 when the command cannot run,
//! otherwise the container's.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use berth_engine::Error;
use berth_engine::engine::{CreateOptions, Engine};
use berth_engine::images::{PullPolicy, PullRequest};
use berth_engine::logconfig::LogConfig;
use berth_engine::network::PortMapping;
use berth_engine::spec::{RunFlags, flags};
use berth_engine::store::ContainerRecord;
use clap::Args;

use super::logs::LogFollower;
use crate::config::{Config, INIT_CANDIDATES};

#[derive(Args)]
pub struct RunArgs {
    /// Remove the container when it exits
    #[arg(long)]
    rm: bool,
    /// Run in the background and print the container's ID
    #[arg(short, long)]
    detach: bool,
    #[arg(long)]
    name: Option<String>,
    #[arg(short, long = "env")]
    env: Vec<String>,
    #[arg(short, long)]
    tty: bool,
    /// none, host, bridge or a network's name
    #[arg(long, alias = "net", default_value = "bridge")]
    network: String,
    /// Add a network-scoped alias for the container (user networks)
    #[arg(long = "network-alias", alias = "net-alias")]
    network_alias: Vec<String>,
    /// Publish a port: [HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTO]
    #[arg(short, long = "publish")]
    publish: Vec<String>,
    /// Bind mount or volume: SRC:DST[:ro], NAME:DST[:ro] or DST
    #[arg(short, long = "volume")]
    volume: Vec<String>,
    /// type=bind|volume|tmpfs,source=...,target=...[,readonly]
    #[arg(long)]
    mount: Vec<String>,
    /// A tmpfs: DST[:OPTIONS]
    #[arg(long)]
    tmpfs: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines)
    #[arg(long)]
    env_file: Vec<PathBuf>,
    /// KEY=VALUE metadata
    #[arg(short, long)]
    label: Vec<String>,
    /// Keep stdin open
    #[arg(short, long)]
    interactive: bool,
    /// no, always, unless-stopped, on-failure[:N]
    #[arg(long)]
    restart: Option<String>,
    #[arg(long)]
    entrypoint: Option<String>,
    #[arg(short, long)]
    workdir: Option<String>,
    #[arg(short, long)]
    user: Option<String>,
    #[arg(long)]
    hostname: Option<String>,
    /// Memory limit (512m, 2g; -1 or 0: none)
    #[arg(short, long, allow_negative_numbers = true)]
    memory: Option<String>,
    /// CPUs (1.5: one and a half; 0: no limit)
    #[arg(long, allow_negative_numbers = true)]
    cpus: Option<String>,
    #[arg(long)]
    pids_limit: Option<i64>,
    #[arg(long)]
    read_only: bool,
    #[arg(long)]
    privileged: bool,
    #[arg(long)]
    cap_add: Vec<String>,
    #[arg(long)]
    cap_drop: Vec<String>,
    #[arg(long)]
    security_opt: Vec<String>,
    /// Pull this platform's image if it is not here (os/arch[/variant])
    #[arg(long)]
    platform: Option<String>,
    /// Pull the image before creating: always, missing or never
    #[arg(long, default_value = "missing")]
    pull: String,
    /// Run an init (tini) as pid 1 that forwards signals and reaps zombies
    #[arg(long)]
    init: bool,
    /// Logging driver: json-file, local or none (default: the config's [logs] driver)
    #[arg(long)]
    log_driver: Option<String>,
    /// Log driver options: max-size=SIZE (10m, 1g), max-file=N
    #[arg(long)]
    log_opt: Vec<String>,
    image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// `berth run`: create (pulling the image if it is not here), start, and
/// unless detached follow the logs and exit with the container's code.
pub fn run(engine: &Engine, config: &Config, r: RunArgs) -> Result<i32> {
    let (detach, rm, interactive, tty) = (r.detach, r.rm, r.interactive, r.tty);
    let rec = create_container(engine, config, r)?;
    let (rec, mut watch) = match engine.start_watched(&rec.id) {
        Ok(started) => started,
        Err(e) => {
            let _ = engine.remove(&rec.id, true);
            return start_failed(e);
        }
    };
    if detach {
        println!("{}", rec.id);
        return Ok(0);
    }
    // Output comes from the log file, which has all of it from the first
    // byte (the attach socket only has what comes after connecting); the
    // socket carries stdin and the terminal size.
    let follower = LogFollower::new(engine.log_path(&rec));
    let code = super::lifecycle::follow(engine, &rec, interactive, tty, follower, Some(&mut watch))?;
    if rm {
        // Removed while the shim waits on the watch: it then finds its
        // container gone and runs no `rm` of its own. Should its exit
        // command be first (the watch was lost), nothing is left here.
        match engine.remove(&rec.id, true) {
            Err(Error::Store(berth_engine::store::StoreError::NotFound(_))) => {}
            other => other?,
        }
    }
    Ok(code)
}

/// docker's exit codes for a container that could not start: 127 when
/// its command (or a path it needs) does not exist, 126 when it cannot be
/// run; 125 (an error) for anything else. The runtime's message is
/// printed either way, as docker prints it.
pub(crate) fn start_failed(e: Error) -> Result<i32> {
    cannot_run(e, "start the container")
}

/// [`start_failed`] for `what` (start, exec).
pub(crate) fn cannot_run(e: Error, what: &'static str) -> Result<i32> {
    match e.exec_failure() {
        Some(failure) => {
            eprintln!("Error: {what}: {e}");
            Ok(failure.exit_code())
        }
        None => Err(e).context(what),
    }
}

/// `berth create` (and the first half of `run`): the container made, not
/// started; the image pulled first as `--pull` says.
pub fn create_container(engine: &Engine, config: &Config, r: RunArgs) -> Result<ContainerRecord> {
    let mut env = Vec::new();
    for file in &r.env_file {
        env.extend(env_file(file)?);
    }
    for kv in &r.env {
        env.extend(flags::env_from_caller(kv, |k| std::env::var(k).ok())?);
    }
    let labels = r
        .label
        .iter()
        .map(|l| l.split_once('=').map_or((l.clone(), String::new()), |(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let mut f = RunFlags {
        entrypoint: r.entrypoint,
        args: r.command,
        env,
        labels,
        workdir: r.workdir,
        user: r.user,
        hostname: r.hostname,
        tty: r.tty,
        read_only: r.read_only,
        privileged: r.privileged,
        cap_add: r.cap_add,
        cap_drop: r.cap_drop,
        security_opt: r.security_opt,
        pids_limit: r.pids_limit,
        ..Default::default()
    };
    f.memory = r.memory.as_deref().map(flags::parse_memory).transpose()?.flatten();
    f.cpus = r.cpus.as_deref().map(flags::parse_cpus).transpose()?.flatten();
    // Before any pull: bad flags cost nothing.
    f.validate()?;
    let ports = r.publish.iter().map(|p| PortMapping::parse(p)).collect::<Result<Vec<_>, _>>()?;
    if !ports.is_empty() && matches!(r.network.as_str(), "none" | "host") {
        bail!("-p needs a bridge network: --network {} publishes nothing", r.network);
    }
    let mut mounts = Vec::new();
    for v in &r.volume {
        mounts.push(flags::parse_volume(v)?);
    }
    for m in &r.mount {
        mounts.push(flags::parse_mount(m)?);
    }
    for t in &r.tmpfs {
        mounts.push(flags::parse_tmpfs(t)?);
    }
    let init = if r.init { Some(init_binary(config)?) } else { None };
    let log = LogConfig::resolve(r.log_driver.as_deref(), &r.log_opt, &config.logs.defaults())?;
    let opts = CreateOptions {
        name: r.name,
        network: r.network,
        restart: r.restart,
        ports,
        mounts,
        stdin: r.interactive,
        // The shim removes it (its exit command) once it has ended and no
        // attached CLI still reads its log: the container goes even if the
        // CLI is killed. An attached CLI removes it too, and waits for it.
        auto_remove: r.rm,
        init,
        log: Some(log),
        aliases: r.network_alias,
        // As podman: a container made with `--runtime X` stays X's (only X
        // knows its state), whatever runtime later commands are given.
        runtime: (engine.runtime != crate::sibling("berth-runtime")).then(|| engine.runtime.clone()),
        ..Default::default()
    };
    let policy: PullPolicy = r.pull.parse()?;
    let pull = PullRequest { platform: r.platform.clone(), max_layer_size: None };
    let rec = match config.images(engine).create_container(
        &r.image,
        policy,
        &pull,
        &f,
        &opts,
        crate::progress::reporter(false),
    ) {
        Err(Error::NoSuchImage(_)) if policy == PullPolicy::Never => {
            bail!("No such image: {} (--pull never: pull it first, or load it with berth load)", r.image)
        }
        other => other,
    }
    .context("create the container")?;
    Ok(rec)
}

/// `--init`'s binary: the configured one, else the first static init
/// installed.
fn init_binary(config: &Config) -> Result<PathBuf> {
    if let Some(p) = &config.containers.init_path {
        if !p.exists() {
            bail!("--init: containers.init_path {} does not exist", p.display());
        }
        return Ok(p.clone());
    }
    INIT_CANDIDATES.iter().map(PathBuf::from).find(|p| p.exists()).with_context(|| {
        format!(
            "--init needs a static init (tini): install Debian's tini (apt-get install tini) or set \
             containers.init_path in the config; looked for {}",
            INIT_CANDIDATES.join(", ")
        )
    })
}

/// docker's --env-file: KEY=VALUE lines; `#` comments and blank lines
/// skipped; a bare KEY takes this process's value (and is dropped if unset).
fn env_file(path: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read --env-file {}", path.display()))?;
    let mut env = Vec::new();
    for l in text.lines().map(str::trim_start).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let kv = flags::env_from_caller(l, |k| std::env::var(k).ok())
            .with_context(|| format!("--env-file {}", path.display()))?;
        env.extend(kv);
    }
    Ok(env)
}
