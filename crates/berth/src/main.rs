//! `berth`: docker's commands and flags, no daemon (like podman). Images:
//! pull, push, images, image inspect/ls/rm/prune/tag/save/load, rmi, tag,
//! save, load, login, logout. Containers: run, ps, logs, stop, rm, exec,
//! kill, wait, top, stats, cp, port, rename, container prune. The machine:
//! system df/prune/info, info, version. This file parses and dispatches;
//! the commands (`cmd/`) turn flags into berth-engine calls and its typed
//! results into docker's output. Each command opens the stores under
//! `--root` itself and leaves running containers to their berth-shim.

mod cmd;
mod config;
mod progress;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use cmd::container::{ContainerCmd, ContainerGroup};
use cmd::image::{
    ImageCmd, ImportArgs, ListArgs, LoadArgs, LoginArgs, LogoutArgs, PullArgs, PushArgs, RmiArgs, SaveArgs, TagArgs,
};
use cmd::{network, system, volume};
use config::Config;

#[derive(Parser)]
#[command(name = "berth", version, about = "A container runtime stack: docker's commands, no daemon")]
struct Cli {
    /// Where images, snapshots and the metadata database live.
    #[arg(long, global = true, default_value = "/var/lib/berth")]
    root: PathBuf,
    /// Runtime state (locks, sockets, container state).
    #[arg(long, global = true, default_value = "/run/berth")]
    runroot: PathBuf,
    /// Configuration file (every key has a default; a missing file is fine).
    #[arg(long, global = true, env = "BERTH_CONFIG", default_value = "/etc/berth/config.toml")]
    config: PathBuf,
    /// Log debug messages to stderr.
    #[arg(long, short = 'D', global = true)]
    debug: bool,
    /// The OCI runtime (runc's command line): berth-runtime, runc, crun.
    #[arg(long, global = true)]
    runtime: Option<PathBuf>,
    /// The cgroup containers go under (PARENT/ID), as dockerd's
    /// --cgroup-parent.
    #[arg(long, global = true, env = "BERTH_CGROUP_PARENT", default_value = "/berth")]
    cgroup_parent: String,
    /// A registry reached over plain HTTP, or HTTPS without certificate
    /// checks (added to the config's `registry.insecure`).
    #[arg(long = "insecure-registry", global = true)]
    insecure_registry: Vec<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build an image from a Dockerfile.
    Build(cmd::build::BuildArgs),
    /// Manage builds.
    #[command(subcommand)]
    Builder(cmd::build::BuilderCmd),
    /// Download an image from a registry.
    Pull(PullArgs),
    /// Upload an image to a registry.
    Push(PushArgs),
    /// List images.
    Images(ListArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Remove one or more images.
    Rmi(RmiArgs),
    /// Create a tag TARGET that refers to SOURCE.
    Tag(TagArgs),
    /// Save images to a tar archive (docker-archive and OCI layout at once).
    Save(SaveArgs),
    /// Load images from a tar archive or an OCI layout directory.
    Load(LoadArgs),
    /// Import a root filesystem tarball as a one-layer image.
    Import(ImportArgs),
    /// Log in to a registry.
    Login(LoginArgs),
    /// Log out from a registry.
    Logout(LogoutArgs),
    #[command(flatten)]
    Containers(ContainerCmd),
    /// Manage containers.
    #[command(subcommand)]
    Container(ContainerGroup),
    /// Manage networks.
    #[command(subcommand)]
    Network(network::NetworkCmd),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(volume::VolumeCmd),
    /// Manage berth.
    #[command(subcommand)]
    System(system::SystemCmd),
    /// Get real time events from the engine.
    Events(cmd::events::EventsArgs),
    /// Display system-wide information.
    Info(system::InfoArgs),
    /// Show the berth version information.
    Version(system::VersionArgs),
}

/// Parses the command line; on a mistake exits with docker's code for it:
/// 125 for a flag it cannot take (unknown, missing or bad value), 1 for a
/// wrong command or arguments, 0 for help and version.
fn parse_args() -> Cli {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let e = match Cli::try_parse() {
        Ok(cli) => return cli,
        Err(e) => e,
    };
    let code = match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 0,
        ErrorKind::InvalidSubcommand | ErrorKind::MissingRequiredArgument | ErrorKind::MissingSubcommand => 1,
        // An extra positional argument is "unexpected argument" too, but
        // docker counts it as a wrong argument count, not a flag error.
        ErrorKind::UnknownArgument => match e.get(ContextKind::InvalidArg) {
            Some(ContextValue::String(arg)) if !arg.starts_with('-') => 1,
            _ => 125,
        },
        _ => 125,
    };
    let _ = e.print();
    std::process::exit(code);
}

fn main() {
    let cli = parse_args();
    let level = if cli.debug { "debug" } else { "warn" };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level.parse::<tracing::Level>().unwrap_or(tracing::Level::WARN))
        .with_target(false)
        .init();
    // docker's codes: `run` fails with 125 when the engine does (the
    // container's own code otherwise); the other commands with 1.
    let failed = if matches!(
        cli.cmd,
        Cmd::Containers(ContainerCmd::Run(_) | ContainerCmd::Create(_) | ContainerCmd::Start(_))
            | Cmd::Container(ContainerGroup::Cmd(
                ContainerCmd::Run(_) | ContainerCmd::Create(_) | ContainerCmd::Start(_)
            ))
    ) {
        125
    } else {
        1
    };
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::exit(failed);
        }
    }
}

/// A program beside this binary, else on PATH.
pub(crate) fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn run(cli: Cli) -> Result<i32> {
    let mut config = Config::load(&cli.config)?;
    config.registry.insecure.extend(cli.insecure_registry);
    std::fs::create_dir_all(&cli.runroot).with_context(|| format!("create {}", cli.runroot.display()))?;
    let engine = berth_engine::engine::Engine {
        root: cli.root.clone(),
        runroot: cli.runroot.clone(),
        runtime: cli.runtime.clone().unwrap_or_else(|| sibling("berth-runtime")),
        shim: std::env::var_os("BERTH_SHIM").map(PathBuf::from).unwrap_or_else(|| sibling("berth-shim")),
        cli: std::env::current_exe().ok(),
        cgroup_parent: cli.cgroup_parent.clone(),
    };
    let engine = &engine;
    let image = |c| cmd::image::image(engine, &config, c);
    match cli.cmd {
        Cmd::Build(a) => cmd::build::build(engine, &config, a)?,
        Cmd::Builder(c) => cmd::build::builder(engine, c)?,
        Cmd::Pull(a) => image(ImageCmd::Pull(a))?,
        Cmd::Push(a) => image(ImageCmd::Push(a))?,
        Cmd::Images(a) => image(ImageCmd::Ls(a))?,
        Cmd::Rmi(a) => image(ImageCmd::Rm(a))?,
        Cmd::Tag(a) => image(ImageCmd::Tag(a))?,
        Cmd::Save(a) => image(ImageCmd::Save(a))?,
        Cmd::Load(a) => image(ImageCmd::Load(a))?,
        Cmd::Import(a) => image(ImageCmd::Import(a))?,
        Cmd::Image(c) => image(c)?,
        Cmd::Login(a) => cmd::image::login(engine, &config, a)?,
        Cmd::Logout(a) => cmd::image::logout(engine, &config, a)?,
        Cmd::Containers(c) | Cmd::Container(ContainerGroup::Cmd(c)) => {
            return cmd::container::container(engine, &config, c);
        }
        Cmd::Container(ContainerGroup::Prune(a)) => system::container_prune(engine, a)?,
        Cmd::Network(c) => network::network(engine, c)?,
        Cmd::Volume(c) => volume::volume(engine, c)?,
        Cmd::System(c) => system::system(engine, c)?,
        Cmd::Events(a) => cmd::events::events(engine, a)?,
        Cmd::Info(a) => system::info(engine, a)?,
        Cmd::Version(a) => system::version(engine, a)?,
    }
    Ok(0)
}
