//! The container commands: run, ps, logs, stop, rm. Each opens the
//! engine's stores, does its work and leaves running containers to their
//! berth-shim. Exit codes as docker's: 125 when berth itself fails `run`,
//! otherwise the container's.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use berth_engine::engine::{CreateOptions, Engine, EngineError};
use berth_engine::images::{PullPolicy, PullRequest};
use berth_engine::logconfig::LogConfig;
use berth_engine::network::PortMapping;
use berth_engine::ops::ExecOptions;
use berth_engine::spec::{RunFlags, flags};
use berth_engine::store::{ContainerRecord, Status};
use clap::Args;

use crate::cmd::image::InspectArgs;
use crate::config::{Config, INIT_CANDIDATES};
use crate::logs::LogFollower;

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

#[derive(Args)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    all: bool,
    /// Only display container IDs
    #[arg(short, long)]
    quiet: bool,
    /// Filter: id, name, label, status, exited, ancestor (key=value)
    #[arg(short, long)]
    filter: Vec<String>,
    /// table, json, or a Go template ({{.ID}} {{.Names}} ...)
    #[arg(long)]
    format: Option<String>,
    /// Do not truncate IDs and commands
    #[arg(long)]
    no_trunc: bool,
    /// Show the n last created containers
    #[arg(short = 'n', long)]
    last: Option<usize>,
    /// Show the latest created container
    #[arg(short, long)]
    latest: bool,
}

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

#[derive(clap::Subcommand)]
pub enum VolumeCmd {
    /// Create a volume
    Create {
        #[arg(short, long)]
        label: Vec<String>,
        name: String,
    },
    /// List volumes
    #[command(alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove volumes
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Display detailed information on volumes
    Inspect {
        #[arg(required = true)]
        volumes: Vec<String>,
    },
}

#[derive(clap::Subcommand)]
pub enum NetworkCmd {
    /// Create a network (a bridge with its own subnet)
    Create {
        #[arg(long)]
        subnet: Option<String>,
        name: String,
    },
    /// List networks
    #[command(alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove networks
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Display detailed information on networks
    Inspect {
        #[arg(required = true)]
        networks: Vec<String>,
    },
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
    let code = crate::lifecycle::follow(engine, &rec, interactive, tty, follower, Some(&mut watch))?;
    if rm {
        // Removed while the shim waits on the watch: it then finds its
        // container gone and runs no `rm` of its own. Should its exit
        // command be first (the watch was lost), nothing is left here.
        match engine.remove(&rec.id, true) {
            Err(EngineError::Store(berth_engine::store::StoreError::NotFound(_))) => {}
            other => other?,
        }
    }
    Ok(code)
}

/// docker's exit codes for a container that could not start: 127 when
/// its command (or a path it needs) does not exist, 126 when it cannot be
/// run; 125 (an error) for anything else. The runtime's message is
/// printed either way, as docker prints it.
pub(crate) fn start_failed(e: EngineError) -> Result<i32> {
    cannot_run(e, "start the container")
}

/// [`start_failed`] for `what` (start, exec).
pub(crate) fn cannot_run(e: EngineError, what: &'static str) -> Result<i32> {
    let msg = e.to_string();
    let code = if msg.contains("executable file not found") || msg.contains("no such file or directory") {
        127
    } else if msg.contains("permission denied") || msg.contains("exec format error") {
        126
    } else {
        return Err(e).context(what);
    };
    eprintln!("Error: {what}: {msg}");
    Ok(code)
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
        Err(EngineError::NoSuchImage(_)) if policy == PullPolicy::Never => {
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

/// `berth ps`: docker's columns, `--filter`, `--format`, `--no-trunc`.
pub fn ps(engine: &Engine, a: PsArgs) -> Result<()> {
    let filters = a.filter.iter().map(|f| PsFilter::parse(f)).collect::<Result<Vec<_>>>()?;
    let mut recs: Vec<ContainerRecord> = engine.containers()?.list()?.iter().map(|r| engine.refresh(r)).collect();
    // Newest first, as docker lists them.
    recs.sort_by(|x, y| y.created.cmp(&x.created));
    let show_all =
        a.all || a.last.is_some() || a.latest || filters.iter().any(|f| f.key == "status" || f.key == "exited");
    let recs: Vec<ContainerRecord> = recs
        .into_iter()
        .filter(|r| show_all || matches!(r.status, Status::Running | Status::Paused | Status::Restarting))
        .filter(|r| filters_match(&filters, r))
        .take(if a.latest { 1 } else { a.last.unwrap_or(usize::MAX) })
        .collect();
    if a.quiet {
        for r in &recs {
            println!("{}", if a.no_trunc { &r.id[..] } else { &r.id[..12] });
        }
        return Ok(());
    }
    let rows: Vec<serde_json::Map<String, serde_json::Value>> = recs.iter().map(|r| ps_row(r, a.no_trunc)).collect();
    let template = match a.format.as_deref() {
        None | Some("table") => {
            "table {{.ID}}\\t{{.Image}}\\t{{.Command}}\\t{{.RunningFor}}\\t{{.Status}}\\t{{.Ports}}\\t{{.Names}}"
        }
        Some("json") => "{{json .}}",
        Some(t) => t,
    };
    let heads = [("ID", "CONTAINER ID"), ("RunningFor", "CREATED")];
    print!("{}", berth::format::Template::parse(template).headers(&heads).render(&rows)?);
    Ok(())
}

/// One container as docker's `ps --format` fields.
fn ps_row(r: &ContainerRecord, no_trunc: bool) -> serde_json::Map<String, serde_json::Value> {
    let cmd = r.config.args.join(" ");
    let cmd = if no_trunc || cmd.chars().count() <= 20 {
        format!("\"{cmd}\"")
    } else {
        format!("\"{}…\"", cmd.chars().take(19).collect::<String>())
    };
    let status = match r.status {
        Status::Running => format!("Up {}", up_for(r.started_at.as_deref())),
        Status::Paused => format!("Up {} (Paused)", up_for(r.started_at.as_deref())),
        Status::Exited => {
            format!("Exited ({}) {}", r.exit_code.unwrap_or(-1), berth::format::since(r.finished_at.as_deref()))
        }
        Status::Created => "Created".into(),
        // docker's words (container/state.go), which scripts match.
        Status::Restarting => {
            format!("Restarting ({}) {}", r.exit_code.unwrap_or(0), berth::format::since(r.finished_at.as_deref()))
        }
        Status::Removing => "Removal In Progress".into(),
        Status::Dead => "Dead".into(),
    };
    let state = serde_json::to_value(r.status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    let ports: Vec<String> = r
        .config
        .ports
        .iter()
        .map(|p| {
            let ip = if p.host_ip.is_empty() { "0.0.0.0" } else { p.host_ip.as_str() };
            format!("{ip}:{}->{}/{}", p.host_port, p.container_port, p.protocol)
        })
        .collect();
    let labels: Vec<String> = r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let v = serde_json::json!({
        "ID": if no_trunc { &r.id[..] } else { &r.id[..12] },
        "Image": r.image,
        "Command": cmd,
        "CreatedAt": r.created,
        "RunningFor": berth::format::since(Some(&r.created)),
        "Ports": ports.join(", "),
        "State": state,
        "Status": status,
        "Names": r.name,
        "Labels": labels.join(","),
        "Mounts": r.config.volumes.join(","),
        "Networks": r.config.network,
    });
    v.as_object().cloned().unwrap_or_default()
}

/// "5 seconds" since `started`.
fn up_for(started: Option<&str>) -> String {
    berth::format::since(started).trim_end_matches(" ago").to_owned()
}

/// One `--filter key=value`.
struct PsFilter {
    key: String,
    value: String,
}

impl PsFilter {
    fn parse(s: &str) -> Result<PsFilter> {
        let (k, v) = s.split_once('=').with_context(|| format!("--filter {s:?}: want key=value"))?;
        if !["id", "name", "label", "status", "exited", "ancestor"].contains(&k) {
            bail!("--filter {k:?}: berth filters on id, name, label, status, exited and ancestor");
        }
        Ok(PsFilter { key: k.to_owned(), value: v.to_owned() })
    }

    fn matches(&self, r: &ContainerRecord) -> bool {
        let v = self.value.as_str();
        match self.key.as_str() {
            "id" => r.id.starts_with(v),
            "name" => r.name.contains(v.trim_start_matches('/')),
            "label" => match v.split_once('=') {
                Some((k, want)) => r.labels.get(k).is_some_and(|have| have == want),
                None => r.labels.contains_key(v),
            },
            "status" => serde_json::to_value(r.status).is_ok_and(|s| s == v),
            "exited" => r.status == Status::Exited && r.exit_code.is_some_and(|c| c.to_string() == v),
            "ancestor" => {
                r.image == v || r.image_id.trim_start_matches("sha256:").starts_with(v.trim_start_matches("sha256:"))
            }
            _ => false,
        }
    }
}

/// docker's rule: filters with the same key are alternatives; different
/// keys must all hold.
fn filters_match(filters: &[PsFilter], r: &ContainerRecord) -> bool {
    let mut keys: Vec<&str> = filters.iter().map(|f| f.key.as_str()).collect();
    keys.dedup();
    keys.iter().all(|k| filters.iter().filter(|f| f.key == *k).any(|f| f.matches(r)))
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
    if a.tty {
        return crate::lifecycle::exec_tty(engine, &a.container, &o, a.interactive);
    }
    match engine.exec(&a.container, &o, a.interactive) {
        Ok(code) => Ok(code),
        // The runtime's words, from the shim or (no shim) its own log.
        Err(e @ (EngineError::Shim(_) | EngineError::Runtime(_))) => crate::lifecycle::exec_failed(e),
        Err(e) => Err(e.into()),
    }
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
            Err(EngineError::Store(berth_engine::store::StoreError::NotFound(_))) => images.push(name.clone()),
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

pub fn network(engine: &Engine, c: NetworkCmd) -> Result<()> {
    let nets = engine.networks();
    match c {
        NetworkCmd::Create { subnet, name } => {
            nets.create(&name, subnet.as_deref())?;
            println!("{name}");
        }
        NetworkCmd::Ls { quiet } => {
            let mut all = nets.list()?;
            if !all.iter().any(|n| n.name == berth_engine::network::DEFAULT_NETWORK) {
                all.insert(0, nets.ensure_default()?);
            }
            if !quiet {
                println!("{:<20} {:<10} {:<18} DRIVER", "NAME", "DEVICE", "SUBNET");
            }
            for n in all {
                if quiet {
                    println!("{}", n.name);
                } else {
                    println!("{:<20} {:<10} {:<18} bridge", n.name, n.bridge, n.subnet);
                }
            }
        }
        NetworkCmd::Rm { networks } => {
            for n in networks {
                let users = nets.endpoints(&n)?;
                if !users.is_empty() {
                    bail!("network {n} has active endpoints ({} containers): remove them first", users.len());
                }
                nets.remove(&n)?;
                println!("{n}");
            }
        }
        NetworkCmd::Inspect { networks } => {
            let mut out = Vec::new();
            for n in networks {
                let net = nets.get(&n)?;
                let containers = nets.endpoints(&n)?;
                out.push(serde_json::json!({
                    "Name": net.name, "Driver": "bridge",
                    "IPAM": { "Config": [{ "Subnet": net.subnet, "Gateway": net.gateway.to_string() }] },
                    "Options": { "com.docker.network.bridge.name": net.bridge },
                    "Containers": containers,
                }));
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(())
}

pub fn volume(engine: &Engine, c: VolumeCmd) -> Result<()> {
    let vols = engine.volumes();
    match c {
        VolumeCmd::Create { label, name } => {
            let labels = label
                .iter()
                .map(|l| l.split_once('=').map_or((l.clone(), String::new()), |(k, v)| (k.to_owned(), v.to_owned())))
                .collect();
            println!("{}", vols.create(&name, labels, false)?.name);
        }
        VolumeCmd::Ls { quiet } => {
            if !quiet {
                println!("DRIVER    VOLUME NAME");
            }
            for v in vols.list()? {
                if quiet { println!("{}", v.name) } else { println!("{:<9} {}", v.driver, v.name) }
            }
        }
        VolumeCmd::Rm { volumes } => {
            for v in volumes {
                vols.remove(&v, &engine.volume_users(&v)?)?;
                println!("{v}");
            }
        }
        VolumeCmd::Inspect { volumes } => {
            let all = volumes.iter().map(|v| vols.get(v)).collect::<Result<Vec<_>, _>>()?;
            println!("{}", serde_json::to_string_pretty(&all)?);
        }
    }
    Ok(())
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
