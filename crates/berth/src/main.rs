//! berth: docker's commands and flags, no daemon (like podman). Each call
//! opens the engine's stores, does its work and leaves running containers
//! to their berth-shim. Exit codes as docker's: 125 when berth itself
//! fails, otherwise the container's.

use std::io::{BufRead, Seek, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use berth_engine::engine::{CreateOptions, Engine, RegistryOptions};
use berth_engine::spec::{RunFlags, flags};
use berth_engine::store::Status;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "berth", about = "berth: run containers, docker's way, without a daemon", version)]
struct Cli {
    /// Where images, containers and volumes are kept
    #[arg(long, global = true, default_value = "/var/lib/berth")]
    root: PathBuf,
    /// Where running containers' state is kept
    #[arg(long, global = true, default_value = "/run/berth")]
    runroot: PathBuf,
    /// The OCI runtime (runc's command line): berth-runtime, runc, crun
    #[arg(long, global = true)]
    runtime: Option<PathBuf>,
    /// A registry spoken to over plain HTTP (loopback ones always are)
    #[arg(long = "insecure-registry", global = true)]
    insecure_registry: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pull an image from a registry
    Pull {
        #[arg(long)]
        platform: Option<String>,
        image: String,
    },
    /// List images
    Images {
        #[arg(short, long)]
        quiet: bool,
    },
    /// Run a command in a new container
    Run(Box<Run>),
    /// List containers
    Ps {
        #[arg(short, long)]
        all: bool,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Print a container's logs
    Logs { container: String },
    /// Stop running containers
    Stop {
        #[arg(short, long, default_value_t = 10)]
        time: u64,
        containers: Vec<String>,
    },
    /// Remove containers
    Rm {
        #[arg(short, long)]
        force: bool,
        containers: Vec<String>,
    },
}

#[derive(clap::Args)]
struct Run {
    #[arg(long)]
    rm: bool,
    #[arg(short, long)]
    detach: bool,
    #[arg(long)]
    name: Option<String>,
    #[arg(short, long = "env")]
    env: Vec<String>,
    #[arg(short, long)]
    tty: bool,
    #[arg(long, default_value = "bridge")]
    network: String,
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
    #[arg(long)]
    platform: Option<String>,
    image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn main() {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("berth: {e:#}");
            std::process::exit(125);
        }
    }
}

/// A program beside this binary, else on PATH.
fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn run(cli: Cli) -> Result<i32> {
    let engine = Engine {
        root: cli.root,
        runroot: cli.runroot,
        runtime: cli.runtime.unwrap_or_else(|| sibling("berth-runtime")),
        shim: std::env::var_os("BERTH_SHIM").map(PathBuf::from).unwrap_or_else(|| sibling("berth-shim")),
        registry: RegistryOptions { insecure: cli.insecure_registry },
    };
    match cli.command {
        Command::Pull { platform, image } => {
            let i = engine.pull(&image, platform.as_deref())?;
            println!(
                "{}",
                i.repo_digests.first().map(|d| d.rsplit_once('@').map_or(d.as_str(), |x| x.1)).unwrap_or("")
            );
            Ok(0)
        }
        Command::Images { quiet } => {
            let images = engine.list_images()?;
            if !quiet {
                println!("{:<40} {:<10} {:<14} {:>10}", "REPOSITORY", "TAG", "IMAGE ID", "SIZE");
            }
            for i in images {
                let short = &i.id.trim_start_matches("sha256:")[..12];
                if quiet {
                    println!("{short}");
                    continue;
                }
                let tags = if i.repo_tags.is_empty() { vec!["<none>:<none>".to_owned()] } else { i.repo_tags.clone() };
                for t in tags {
                    let (repo, tag) = t.rsplit_once(':').unwrap_or((&t, "<none>"));
                    let repo = repo.strip_prefix("docker.io/library/").unwrap_or(repo);
                    println!("{repo:<40} {tag:<10} {short:<14} {:>9.1}MB", i.size as f64 / 1e6);
                }
            }
            Ok(0)
        }
        Command::Run(r) => run_container(&engine, *r),
        Command::Ps { all, quiet } => {
            if !quiet {
                println!("{:<14} {:<30} {:<24} {:<20} NAMES", "CONTAINER ID", "IMAGE", "COMMAND", "STATUS");
            }
            for rec in engine.containers()?.list()? {
                let rec = engine.refresh(&rec);
                if !all && rec.status != Status::Running {
                    continue;
                }
                if quiet {
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
                println!(
                    "{:<14} {:<30} {:<24} {:<20} {}",
                    &rec.id[..12],
                    rec.image,
                    format!("\"{cmd}\""),
                    status,
                    rec.name
                );
            }
            Ok(0)
        }
        Command::Logs { container } => {
            let rec = engine.containers()?.get(&container)?;
            let mut follower = LogFollower::new(engine.log_path(&rec));
            follower.pump()?;
            Ok(0)
        }
        Command::Stop { time, containers } => {
            for c in containers {
                engine.stop(&c, Duration::from_secs(time))?;
                println!("{c}");
            }
            Ok(0)
        }
        Command::Rm { force, containers } => {
            for c in containers {
                engine.remove(&c, force)?;
                println!("{c}");
            }
            Ok(0)
        }
    }
}

fn run_container(engine: &Engine, r: Run) -> Result<i32> {
    let mut f = RunFlags {
        entrypoint: r.entrypoint,
        args: r.command,
        env: r.env,
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
    if r.tty && !r.detach {
        bail!("-t without -d is not supported yet: use berth run -d -t, or drop -t");
    }
    let opts = CreateOptions { name: r.name, network: r.network, restart: r.restart, platform: r.platform };
    let rec = engine.create(&r.image, &f, &opts).context("create the container")?;
    let started = engine.start(&rec.id);
    if let Err(e) = started {
        let _ = engine.remove(&rec.id, true);
        return Err(e).context("start the container");
    }
    if r.detach {
        println!("{}", rec.id);
        return Ok(0);
    }
    let mut follower = LogFollower::new(engine.log_path(&rec));
    let code = engine.wait(&rec.id, || {
        let _ = follower.pump();
    })?;
    if r.rm {
        engine.remove(&rec.id, true)?;
    }
    Ok(code)
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
