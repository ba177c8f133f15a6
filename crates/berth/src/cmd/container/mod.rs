//! The container commands, one module per verb group: `run`/`create`,
//! `start`/`attach`/`restart`/`pause` (lifecycle), `ps`, `logs`,
//! `stop`/`rm`/`kill`/`wait`/`exec`/`inspect` (ops), and
//! `top`/`stats`/`cp`/`port`/`rename` (observe).

pub mod lifecycle;
pub mod logs;
pub mod observe;
pub mod ops;
pub mod ps;
pub mod run;
pub mod terminal;

use anyhow::Result;
use berth_engine::engine::Engine;
use clap::Subcommand;

use crate::config::Config;

/// `berth container ...`: the container commands, and `prune`, which
/// only exists under `container`.
#[derive(Subcommand)]
pub enum ContainerGroup {
    #[command(flatten)]
    Cmd(ContainerCmd),
    /// Remove all stopped containers
    Prune(crate::cmd::system::PruneArgs),
}

/// The container commands, at the top level (`berth run`) and under
/// `berth container` alike, as docker has them.
#[derive(Subcommand)]
pub enum ContainerCmd {
    /// Display the running processes of a container
    Top(observe::TopArgs),
    /// Display a live stream of containers' resource usage
    Stats(observe::StatsArgs),
    /// Copy files/folders between a container and the local filesystem
    Cp(observe::CpArgs),
    /// List port mappings or a specific mapping for the container
    Port(observe::PortArgs),
    /// Rename a container
    Rename(observe::RenameArgs),
    /// Inspect changes to files or directories on a container's filesystem
    Diff(observe::DiffArgs),
    /// List containers
    #[command(alias = "ls", alias = "list")]
    Ps(ps::PsArgs),
    /// Run a command in a new container
    Run(Box<run::RunArgs>),
    /// Create a new container
    Create(Box<run::RunArgs>),
    /// Start stopped or created containers
    Start(lifecycle::StartArgs),
    /// Stop running containers
    Stop(ops::StopArgs),
    /// Restart containers
    Restart(ops::StopArgs),
    /// Send a signal to running containers
    Kill(ops::KillArgs),
    /// Remove containers
    #[command(alias = "remove")]
    Rm(ops::RmArgs),
    /// Run a command in a running container
    Exec(ops::ExecArgs),
    /// Fetch a container's logs
    Logs(logs::LogsArgs),
    /// Attach to a running container
    Attach(lifecycle::AttachArgs),
    /// Pause all processes within containers
    Pause {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Unpause all processes within containers
    Unpause {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Wait for containers to stop; print their exit codes
    Wait {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Display detailed information on containers (or images)
    Inspect(crate::cmd::image::InspectArgs),
}

/// Runs one container command; the exit code (a container's, where it
/// has one).
pub fn container(engine: &Engine, config: &Config, c: ContainerCmd) -> Result<i32> {
    match c {
        ContainerCmd::Run(a) => return run::run(engine, config, *a),
        ContainerCmd::Start(a) => return lifecycle::start(engine, a),
        ContainerCmd::Attach(a) => return lifecycle::attach(engine, a),
        ContainerCmd::Exec(a) => return ops::exec(engine, a),
        ContainerCmd::Create(a) => lifecycle::create(engine, config, *a)?,
        ContainerCmd::Restart(a) => lifecycle::restart(engine, a)?,
        ContainerCmd::Pause { containers } => lifecycle::pause(engine, &containers, true)?,
        ContainerCmd::Unpause { containers } => lifecycle::pause(engine, &containers, false)?,
        ContainerCmd::Ps(a) => ps::ps(engine, a)?,
        ContainerCmd::Logs(a) => logs::logs(engine, a)?,
        ContainerCmd::Stop(a) => ops::stop(engine, a)?,
        ContainerCmd::Rm(a) => ops::rm(engine, a)?,
        ContainerCmd::Kill(a) => ops::kill(engine, a)?,
        ContainerCmd::Wait { containers } => ops::wait(engine, &containers)?,
        ContainerCmd::Inspect(a) => ops::inspect(engine, config, a)?,
        ContainerCmd::Top(a) => observe::top(engine, a)?,
        ContainerCmd::Stats(a) => observe::stats(engine, a)?,
        ContainerCmd::Cp(a) => observe::cp(engine, a)?,
        ContainerCmd::Port(a) => observe::port(engine, a)?,
        ContainerCmd::Rename(a) => observe::rename(engine, a)?,
        ContainerCmd::Diff(a) => observe::diff(engine, a)?,
    }
    Ok(0)
}
