//! The container commands: run, ps, logs, stop, rm. Each opens the
//! engine's stores, does its work and leaves running containers to their
//! berth-shim. Exit codes as docker's: 125 when berth itself fails `run`,
//! otherwise the container's.

use std::io::{BufRead, Seek, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use berth_engine::engine::{CreateOptions, Engine, EngineError};
use berth_engine::network::PortMapping;
use berth_engine::ops::ExecOptions;
use berth_engine::spec::{RunFlags, flags};
use berth_engine::store::Status;
use clap::Args;

use crate::{Config, PullArgs};

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
    #[arg(short, long)]
    memory: Option<String>,
    #[arg(long)]
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
    image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Args)]
pub struct PsArgs {
    #[arg(short, long)]
    all: bool,
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args)]
pub struct StopArgs {
    /// Seconds to wait for the container to stop before SIGKILL
    #[arg(short, long, default_value_t = 10)]
    time: u64,
    #[arg(required = true)]
    containers: Vec<String>,
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
    /// Keep stdin open (it is always passed through)
    #[arg(short, long)]
    interactive: bool,
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
    let mut env = Vec::new();
    for file in &r.env_file {
        env.extend(env_file(file)?);
    }
    env.extend(r.env);
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
    if let Some(m) = &r.memory {
        f.memory = Some(flags::parse_size("--memory", m)?);
    }
    if let Some(c) = &r.cpus {
        f.cpus = Some(flags::parse_cpus(c)?);
    }
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
    let opts =
        CreateOptions { name: r.name, network: r.network, restart: r.restart, ports, mounts, stdin: r.interactive };
    let rec = match engine.create(&r.image, &f, &opts) {
        Err(EngineError::NoSuchImage(_)) => {
            eprintln!("Unable to find image '{}' locally", r.image);
            let store = engine.store()?;
            let pull =
                PullArgs { platform: r.platform, quiet: false, max_layer_size: None, reference: r.image.clone() };
            crate::pull_image(&store, config, pull)?;
            engine.create(&r.image, &f, &opts)
        }
        other => other,
    }
    .context("create the container")?;
    if let Err(e) = engine.start(&rec.id) {
        let _ = engine.remove(&rec.id, true);
        return Err(e).context("start the container");
    }
    if r.detach {
        println!("{}", rec.id);
        return Ok(0);
    }
    // Output comes from the log file, which has all of it from the first
    // byte (the attach socket only has what comes after connecting); the
    // socket carries stdin and the terminal size.
    let _terminal =
        if r.interactive || r.tty { Some(crate::attach::forward_stdin(engine, &rec, r.tty)?) } else { None };
    let mut follower = LogFollower::new(engine.log_path(&rec));
    let code = engine.wait(&rec.id, || {
        let _ = follower.pump();
    })?;
    drop(_terminal);
    if r.rm {
        engine.remove(&rec.id, true)?;
    }
    Ok(code)
}

pub fn ps(engine: &Engine, a: PsArgs) -> Result<()> {
    if !a.quiet {
        println!("{:<14} {:<30} {:<24} {:<20} NAMES", "CONTAINER ID", "IMAGE", "COMMAND", "STATUS");
    }
    for rec in engine.containers()?.list()? {
        let rec = engine.refresh(&rec);
        if !a.all && rec.status != Status::Running {
            continue;
        }
        if a.quiet {
            println!("{}", &rec.id[..12]);
            continue;
        }
        let status = match rec.status {
            Status::Running => "Up".to_owned(),
            Status::Exited => format!("Exited ({})", rec.exit_code.unwrap_or(-1)),
            s => format!("{s:?}"),
        };
        let cmd = rec.config["args"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        println!("{:<14} {:<30} {:<24} {:<20} {}", &rec.id[..12], rec.image, format!("\"{cmd}\""), status, rec.name);
    }
    Ok(())
}

pub fn logs(engine: &Engine, container: &str) -> Result<()> {
    let rec = engine.containers()?.get(container)?;
    LogFollower::new(engine.log_path(&rec)).pump()
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

pub fn exec(engine: &Engine, a: ExecArgs) -> Result<i32> {
    if a.tty {
        bail!("exec -t is not supported yet: drop -t");
    }
    let _ = a.interactive;
    let o = ExecOptions { args: a.command, env: a.env, user: a.user, workdir: a.workdir, detach: a.detach };
    Ok(engine.exec(&a.container, &o)?)
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
pub fn inspect(engine: &Engine, store: &berth_image::store::Store, a: crate::InspectArgs) -> Result<()> {
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
        return crate::inspect(store, crate::InspectArgs { images });
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
    Ok(text
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| match l.split_once('=') {
            Some(_) => Some(l.to_owned()),
            None => std::env::var(l).ok().map(|v| format!("{l}={v}")),
        })
        .collect())
}

/// Copies new json-file log entries to stdout and stderr.
struct LogFollower {
    path: PathBuf,
    offset: u64,
}

impl LogFollower {
    fn new(path: PathBuf) -> LogFollower {
        LogFollower { path, offset: 0 }
    }

    fn pump(&mut self) -> Result<()> {
        let Ok(mut f) = std::fs::File::open(&self.path) else { return Ok(()) };
        f.seek(std::io::SeekFrom::Start(self.offset))?;
        let mut r = std::io::BufReader::new(f);
        let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
        loop {
            let mut line = String::new();
            let n = r.read_line(&mut line)?;
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            self.offset += n as u64;
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            let text = v["log"].as_str().unwrap_or_default();
            if v["stream"] == "stderr" {
                err.write_all(text.as_bytes())?;
            } else {
                out.write_all(text.as_bytes())?;
            }
        }
        out.flush()?;
        err.flush()?;
        Ok(())
    }
}
