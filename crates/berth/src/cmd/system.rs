//! The machine-wide commands: `container prune`, `system df`, `system
//! prune`, `system check`, `info` and `version`, with docker's flags and
//! output (podman's for `system check`, which docker lacks).

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use berth_engine::engine::Engine;
use berth_engine::prune::{Pruned, Usage};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use berth::format;
use berth_engine::units::bytes_size;
use berth_engine::units::human_size;

#[derive(Subcommand)]
pub enum SystemCmd {
    /// Show disk usage
    Df(DfArgs),
    /// Remove unused data
    Prune(SystemPruneArgs),
    /// Display system-wide information
    Info(InfoArgs),
    /// Check the stores and containers for consistency (and repair)
    Check(CheckArgs),
    /// Serve the Docker Engine API in the foreground (berthd on this root)
    Service(ServiceArgs),
}

#[derive(Args)]
pub struct ServiceArgs {
    /// Where to listen (unix:///PATH, or tcp://HOST:PORT with berthd.toml's TLS settings)
    #[arg(default_value = "unix:///run/berth/docker.sock")]
    uri: String,
    /// berthd's configuration (its [docker] TLS settings, registries, CNI)
    #[arg(long, default_value = "/etc/berth/berthd.toml")]
    daemon_config: PathBuf,
}

#[derive(Args)]
pub struct CheckArgs {
    /// Fix what is safe to fix: remove corrupt blobs, damaged unused
    /// images and what containers without a record left; mark containers
    /// whose process is gone exited
    #[arg(short, long)]
    repair: bool,
    /// Skip the slow checks (hashing every blob)
    #[arg(short, long)]
    quick: bool,
}

#[derive(Args)]
pub struct PruneArgs {
    /// Do not prompt for confirmation
    #[arg(short, long)]
    force: bool,
}

#[derive(Args)]
pub struct DfArgs {
    /// `table` (default) or `json` (one object per line)
    #[arg(long)]
    format: Option<String>,
}

#[derive(Args)]
pub struct SystemPruneArgs {
    /// Remove all unused images, not only dangling ones
    #[arg(short, long)]
    all: bool,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    force: bool,
    /// Prune volumes too
    #[arg(long)]
    volumes: bool,
}

#[derive(Args)]
pub struct InfoArgs {
    /// `json` for the whole record as one object
    #[arg(short, long)]
    format: Option<String>,
}

#[derive(Args)]
pub struct VersionArgs {
    /// `json` for the whole record as one object
    #[arg(short, long)]
    format: Option<String>,
}

/// docker's "Are you sure" (skipped with -f); false when the answer is
/// not yes.
fn confirm(warning: &str) -> Result<bool> {
    eprint!("{warning}\nAre you sure you want to continue? [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("read the answer")?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "Yes"))
}

fn print_deleted(title: &str, p: &Pruned) {
    if p.removed.is_empty() {
        return;
    }
    println!("{title}:");
    for r in &p.removed {
        println!("{r}");
    }
    println!();
}

/// `berth container prune`.
pub fn container_prune(engine: &Engine, a: PruneArgs) -> Result<()> {
    if !a.force && !confirm("WARNING! This will remove all stopped containers.")? {
        return Ok(());
    }
    let pruned = engine.prune_containers()?;
    print_deleted("Deleted Containers", &pruned);
    println!("Total reclaimed space: {}", human_size(pruned.bytes));
    Ok(())
}

pub fn system(engine: &Engine, c: SystemCmd) -> Result<()> {
    match c {
        SystemCmd::Df(a) => df(engine, a),
        SystemCmd::Prune(a) => prune(engine, a),
        SystemCmd::Info(a) => info(engine, a),
        SystemCmd::Check(a) => check(engine, a),
        SystemCmd::Service(a) => service(engine, a),
    }
}

/// `berth system service [URI]`, as podman's: the Docker Engine API in the
/// foreground until SIGTERM or Ctrl-C, on this root, runroot, runtime and
/// cgroup parent. It is berthd itself (exec'd: one server, not two), with
/// its CRI socket in the runroot.
fn service(engine: &Engine, a: ServiceArgs) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let berthd = crate::sibling("berthd");
    let err = std::process::Command::new(&berthd)
        .arg("--root")
        .arg(&engine.root)
        .arg("--runroot")
        .arg(&engine.runroot)
        .arg("--runtime")
        .arg(&engine.runtime)
        .arg("--cgroup-parent")
        .arg(&engine.cgroup_parent)
        .arg("--config")
        .arg(&a.daemon_config)
        .arg("--listen")
        .arg(engine.runroot.join("berthd.sock"))
        .arg("--docker-listen")
        .arg(&a.uri)
        .exec();
    bail!("run {}: {err}", berthd.display())
}

/// `berth system check`: one line per problem (and what was done about
/// it), a summary; fails (exit 1) while problems remain.
fn check(engine: &Engine, a: CheckArgs) -> Result<()> {
    let opts = berth_engine::check::CheckOptions { repair: a.repair, quick: a.quick };
    let report = engine.check(opts)?;
    for f in &report.findings {
        println!("{f}");
    }
    let (found, left) = (report.findings.len(), report.remaining());
    match (found, left) {
        (0, _) => println!("No problems found"),
        (n, 0) => println!("{n} problem{} found, all repaired", plural(n)),
        (n, left) if a.repair => bail!("{n} problem{} found, {left} not repaired", plural(n)),
        (n, _) => bail!("{n} problem{} found (berth system check --repair fixes what is safe to fix)", plural(n)),
    }
    Ok(())
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `berth system df`.
fn df(engine: &Engine, a: DfArgs) -> Result<()> {
    let u = engine.disk_usage()?;
    let rows = [
        ("Images", &u.images, true),
        ("Containers", &u.containers, true),
        ("Local Volumes", &u.volumes, true),
        ("Build Cache", &u.build_cache, false),
    ];
    let reclaimable = |x: &Usage, pct: bool| {
        if pct && x.size > 0 {
            format!("{} ({}%)", human_size(x.reclaimable), x.reclaimable * 100 / x.size)
        } else {
            human_size(x.reclaimable)
        }
    };
    match a.format.as_deref() {
        Some("json") | Some("{{json .}}") => {
            for (kind, x, pct) in rows {
                let v = json!({
                    "Active": x.active.to_string(), "Reclaimable": reclaimable(x, pct),
                    "Size": human_size(x.size), "TotalCount": x.total.to_string(), "Type": kind,
                });
                println!("{v}");
            }
        }
        None | Some("table") => {
            let mut t = vec![["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"].map(String::from).to_vec()];
            for (kind, x, pct) in rows {
                t.push(vec![
                    kind.into(),
                    x.total.to_string(),
                    x.active.to_string(),
                    human_size(x.size),
                    reclaimable(x, pct),
                ]);
            }
            print!("{}", format::table(&t));
        }
        Some(other) => bail!("unsupported --format {other:?}: use table or json"),
    }
    Ok(())
}

/// `berth system prune`: stopped containers, networks nothing uses,
/// dangling (with -a: unused) images, and with --volumes unused volumes.
fn prune(engine: &Engine, a: SystemPruneArgs) -> Result<()> {
    let mut what = vec!["  - all stopped containers", "  - all networks not used by at least one container"];
    if a.volumes {
        what.push("  - all anonymous volumes not used by at least one container");
    }
    what.push(if a.all {
        "  - all images without at least one container associated to them"
    } else {
        "  - all dangling images"
    });
    what.push("  - unused build cache");
    if !a.force && !confirm(&format!("WARNING! This will remove:\n{}", what.join("\n")))? {
        return Ok(());
    }
    let containers = engine.prune_containers()?;
    print_deleted("Deleted Containers", &containers);
    let networks = engine.prune_networks()?;
    print_deleted("Deleted Networks", &networks);
    let volumes = if a.volumes { engine.prune_volumes()? } else { Pruned::default() };
    print_deleted("Deleted Volumes", &volumes);
    let images = engine.prune_images(a.all)?;
    if !images.is_empty() {
        println!("Deleted Images:");
        for id in &images {
            println!("deleted: {id}");
        }
        println!();
    }
    crate::cmd::build::prune_build_cache(engine)?;
    let gc = engine.collect_garbage()?;
    println!("Total reclaimed space: {}", human_size(containers.bytes + volumes.bytes + gc.bytes));
    Ok(())
}

/// `berth info` as docker's /info fields.
fn info_record(engine: &Engine) -> Result<Value> {
    let i = engine.info()?;
    Ok(json!({
        "Containers": i.containers,
        "ContainersRunning": i.running,
        "ContainersPaused": i.paused,
        "ContainersStopped": i.stopped,
        "Images": i.images,
        "Driver": "overlay2",
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": i.cgroup_version,
        "Runtimes": { i.runtime_name.clone(): { "path": i.runtime_path } },
        "DefaultRuntime": i.runtime_name,
        "KernelVersion": i.kernel_version,
        "OperatingSystem": i.operating_system,
        "OSType": "linux",
        "Architecture": i.architecture,
        "NCPU": i.cpus,
        "MemTotal": i.mem_total,
        "Name": i.name,
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "DockerRootDir": i.root,
        "RunRoot": i.runroot,
    }))
}

/// `berth info`.
pub fn info(engine: &Engine, a: InfoArgs) -> Result<()> {
    let v = info_record(engine)?;
    match a.format.as_deref() {
        Some("json") | Some("{{json .}}") => {
            println!("{v}");
            return Ok(());
        }
        None => {}
        Some(other) => bail!("unsupported --format {other:?}: use json"),
    }
    let s = |k: &str| match &v[k] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let runtime = v["Runtimes"][s("DefaultRuntime")]["path"].as_str().unwrap_or_default().to_owned();
    let text = format!(
        "Client:\n Version:    {version}\n Context:    default (daemonless)\n\n\
         Server:\n Containers: {}\n  Running: {}\n  Paused: {}\n  Stopped: {}\n Images: {}\n \
         Server Version: {version}\n Storage Driver: {}\n Logging Driver: {}\n Cgroup Driver: {}\n \
         Cgroup Version: {}\n Runtimes: {}\n Default Runtime: {}\n Runtime Path: {runtime}\n \
         Kernel Version: {}\n Operating System: {}\n OSType: {}\n Architecture: {}\n CPUs: {}\n \
         Total Memory: {}\n Name: {}\n Docker Root Dir: {}\n Run Root: {}\n",
        s("Containers"),
        s("ContainersRunning"),
        s("ContainersPaused"),
        s("ContainersStopped"),
        s("Images"),
        s("Driver"),
        s("LoggingDriver"),
        s("CgroupDriver"),
        s("CgroupVersion"),
        s("DefaultRuntime"),
        s("DefaultRuntime"),
        s("KernelVersion"),
        s("OperatingSystem"),
        s("OSType"),
        s("Architecture"),
        s("NCPU"),
        bytes_size(v["MemTotal"].as_u64().unwrap_or(0)),
        s("Name"),
        s("DockerRootDir"),
        s("RunRoot"),
        version = s("ServerVersion"),
    );
    print!("{text}");
    Ok(())
}

/// The minimum Rust the crate declares (docker shows its Go version).
fn rust_version() -> &'static str {
    match env!("CARGO_PKG_RUST_VERSION") {
        "" => "n/a",
        v => v,
    }
}

/// `berth version`: this build, and the OCI runtime it drives.
pub fn version(engine: &Engine, a: VersionArgs) -> Result<()> {
    let version = env!("CARGO_PKG_VERSION");
    let arch = berth_engine::images::Platform::host().architecture;
    let os_arch = format!("linux/{arch}");
    let runtime = engine.runtime_version();
    match a.format.as_deref() {
        Some("json") | Some("{{json .}}") => {
            let v = json!({
                "Client": { "Version": version, "ApiVersion": "n/a", "RustVersion": rust_version(),
                            "Os": "linux", "Arch": arch },
                "Server": { "Version": version, "Daemonless": true,
                            "Components": [{ "Name": "OCI runtime", "Path": engine.runtime, "Version": runtime }] },
            });
            println!("{v}");
            return Ok(());
        }
        None => {}
        Some(other) => bail!("unsupported --format {other:?}: use json"),
    }
    println!("Client:");
    println!(" Version:           {version}");
    println!(" API version:       n/a (daemonless)");
    println!(" Rust version:      {}", rust_version());
    println!(" OS/Arch:           {os_arch}");
    println!();
    println!("Server: berth engine (in-process, no daemon)");
    println!(" Engine:");
    println!("  Version:          {version}");
    println!("  OS/Arch:          {os_arch}");
    println!(" OCI runtime:");
    println!("  Path:             {}", engine.runtime.display());
    let mut lines = runtime.lines();
    println!("  Version:          {}", lines.next().unwrap_or_default());
    for l in lines {
        println!("                    {l}");
    }
    Ok(())
}
