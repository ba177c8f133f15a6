//! `berth`: docker's commands and flags, no daemon (like podman). Images:
//! pull, push, images, image inspect/ls/rm/prune/tag/save/load, rmi, tag,
//! save, load, login, logout. Containers: run, ps, logs, stop, rm, exec,
//! kill, wait, top, stats, cp, port, rename, container prune. The machine:
//! system df/prune/info, info, version. Each
//! command opens the stores under `--root` itself and leaves running
//! containers to their berth-shim.

mod attach;
mod containers;
mod import;
mod lifecycle;
mod logs;
mod observe;
mod progress;
mod system;

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
// The formats live in the library target, where the fuzz targets link them.
use berth::format;
use berth_image::images::Removed;
use berth_image::pull::PullOptions;
use berth_image::registry::{Credentials, Registry, RegistryConfig};
use berth_image::store::Store;
use berth_image::unpack::UnpackOptions;
use berth_image::{Platform, Reference};
use clap::{Args, Parser, Subcommand};
use observe::{ContainerCmd, ContainerGroup};
use serde::Deserialize;

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
    Import(import::ImportArgs),
    /// Log in to a registry.
    Login(LoginArgs),
    /// Log out from a registry.
    Logout(LogoutArgs),
    #[command(flatten)]
    Containers(observe::ContainerCmd),
    /// Manage containers.
    #[command(subcommand)]
    Container(observe::ContainerGroup),
    /// Manage networks.
    #[command(subcommand)]
    Network(containers::NetworkCmd),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(containers::VolumeCmd),
    /// Manage berth.
    #[command(subcommand)]
    System(system::SystemCmd),
    /// Display system-wide information.
    Info(system::InfoArgs),
    /// Show the berth version information.
    Version(system::VersionArgs),
}

#[derive(Subcommand)]
enum ImageCmd {
    Pull(PullArgs),
    Push(PushArgs),
    #[command(alias = "list")]
    Ls(ListArgs),
    Inspect(InspectArgs),
    #[command(alias = "remove")]
    Rm(RmiArgs),
    Tag(TagArgs),
    Save(SaveArgs),
    Load(LoadArgs),
    Import(import::ImportArgs),
    /// Remove unused images and collect garbage.
    Prune(PruneArgs),
}

#[derive(Args)]
pub struct PullArgs {
    /// os/arch[/variant] (default: this machine's)
    #[arg(long)]
    pub platform: Option<String>,
    /// Suppress progress output.
    #[arg(long, short)]
    pub quiet: bool,
    /// Bound on one layer's decompressed size, in bytes.
    #[arg(long)]
    pub max_layer_size: Option<u64>,
    pub reference: String,
}

#[derive(Args)]
struct PushArgs {
    #[arg(long, short)]
    quiet: bool,
    /// The local image; also the destination unless DEST is given.
    reference: String,
    dest: Option<String>,
}

#[derive(Args)]
struct ListArgs {
    /// Only show image IDs.
    #[arg(long, short)]
    quiet: bool,
    /// Show digests.
    #[arg(long)]
    digests: bool,
    /// Show all images (kept for docker compatibility; there are no intermediate images).
    #[arg(long, short)]
    all: bool,
    /// Do not truncate IDs.
    #[arg(long)]
    no_trunc: bool,
    /// `json` (one object per line) or `table`.
    #[arg(long)]
    format: Option<String>,
    /// Only images of this repository (and tag).
    repository: Option<String>,
}

#[derive(Args)]
struct RmiArgs {
    #[arg(long, short)]
    force: bool,
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Args)]
struct TagArgs {
    source: String,
    target: String,
}

#[derive(Args)]
struct SaveArgs {
    /// Write to this file (default: stdout, if it is not a terminal).
    #[arg(long, short)]
    output: Option<PathBuf>,
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Args)]
struct LoadArgs {
    /// Read from this file or OCI layout directory (default: stdin).
    #[arg(long, short)]
    input: Option<PathBuf>,
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
pub struct InspectArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Args)]
struct PruneArgs {
    /// Remove all images nothing uses, not only untagged ones.
    #[arg(long, short)]
    all: bool,
    /// Do not prompt (there is no prompt; kept for docker compatibility).
    #[arg(long, short)]
    force: bool,
}

#[derive(Args)]
struct LoginArgs {
    #[arg(long, short)]
    username: Option<String>,
    #[arg(long, short)]
    password: Option<String>,
    /// Take the password from stdin.
    #[arg(long)]
    password_stdin: bool,
    /// Registry (default docker.io).
    server: Option<String>,
}

#[derive(Args)]
struct LogoutArgs {
    server: Option<String>,
}

/// /etc/berth/config.toml.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Config {
    registry: RegistryConfig,
    images: ImagesConfig,
    pub containers: ContainersConfig,
    pub logs: LogsConfig,
}

/// `[logs]`: what containers log when `run` names no `--log-driver` /
/// `--log-opt` (each `--log-opt` overrides its key). By default capped
/// as docker's local driver is: 20 MB x 5 files.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogsConfig {
    /// json-file, local or none.
    pub driver: String,
    /// docker's max-size syntax (`20m`, `1g`); "" for no cap.
    pub max_size: String,
    pub max_file: u32,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            driver: "json-file".into(),
            max_size: berth_engine::logconfig::DEFAULT_MAX_SIZE.into(),
            max_file: berth_engine::logconfig::DEFAULT_MAX_FILE,
        }
    }
}

impl LogsConfig {
    pub fn defaults(&self) -> berth_engine::logconfig::LogConfig {
        berth_engine::logconfig::LogConfig::defaults(&self.driver, &self.max_size, self.max_file)
    }
}

/// `[containers]`: what `run` uses beyond its flags.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ContainersConfig {
    /// `--init`'s binary: a static init such as tini-static (docker's
    /// docker-init). Unset: the first of [`INIT_CANDIDATES`] present.
    pub init_path: Option<PathBuf>,
}

/// Where Debian's tini and docker.io put a static init.
pub const INIT_CANDIDATES: &[&str] =
    &["/usr/bin/tini-static", "/usr/libexec/docker/docker-init", "/usr/sbin/docker-init", "/usr/bin/docker-init"];

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ImagesConfig {
    /// Bound on one layer's decompressed size.
    max_layer_size: u64,
    /// Layers downloaded and unpacked at once.
    concurrency: usize,
    /// syncfs each unpacked layer before it becomes visible.
    durable_unpack: bool,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            max_layer_size: berth_image::unpack::DEFAULT_MAX_LAYER_SIZE,
            concurrency: 4,
            durable_unpack: true,
        }
    }
}

fn load_config(path: &Path) -> Result<Config> {
    match std::fs::read_to_string(path) {
        Ok(s) => toml::from_str(&s).with_context(|| format!("parse {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
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
fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("start the async runtime")
}

fn run(cli: Cli) -> Result<i32> {
    let mut config = load_config(&cli.config)?;
    config.registry.insecure.extend(cli.insecure_registry);
    std::fs::create_dir_all(&cli.runroot).with_context(|| format!("create {}", cli.runroot.display()))?;
    let open = || Store::open(&cli.root).with_context(|| format!("open the store at {}", cli.root.display()));
    let engine = || berth_engine::engine::Engine {
        root: cli.root.clone(),
        runroot: cli.runroot.clone(),
        runtime: cli.runtime.clone().unwrap_or_else(|| sibling("berth-runtime")),
        shim: std::env::var_os("BERTH_SHIM").map(PathBuf::from).unwrap_or_else(|| sibling("berth-shim")),
        cli: std::env::current_exe().ok(),
        cgroup_parent: cli.cgroup_parent.clone(),
    };
    match cli.cmd {
        Cmd::Pull(a) | Cmd::Image(ImageCmd::Pull(a)) => pull(&open()?, &config, a)?,
        Cmd::Push(a) | Cmd::Image(ImageCmd::Push(a)) => push(&open()?, &config, a)?,
        Cmd::Images(a) | Cmd::Image(ImageCmd::Ls(a)) => list(&open()?, a)?,
        Cmd::Image(ImageCmd::Inspect(a)) => inspect(&open()?, a)?,
        Cmd::Rmi(a) | Cmd::Image(ImageCmd::Rm(a)) => rmi(&engine(), a)?,
        Cmd::Tag(a) | Cmd::Image(ImageCmd::Tag(a)) => {
            berth_image::images::tag(&open()?, &a.source, &Reference::parse(&a.target)?)?
        }
        Cmd::Save(a) | Cmd::Image(ImageCmd::Save(a)) => save(&open()?, a)?,
        Cmd::Load(a) | Cmd::Image(ImageCmd::Load(a)) => load(&open()?, &config, a)?,
        Cmd::Image(ImageCmd::Prune(a)) => prune(&engine(), a)?,
        Cmd::Import(a) | Cmd::Image(ImageCmd::Import(a)) => import::import(&open()?, config.images.max_layer_size, a)?,
        Cmd::Login(a) => login(&config, a)?,
        Cmd::Logout(a) => {
            let server = registry_name(a.server.as_deref());
            if config.registry.auth_store().remove(&server)? {
                println!("Removing login credentials for {server}");
            } else {
                println!("Not logged in to {server}");
            }
        }
        Cmd::Containers(c) | Cmd::Container(ContainerGroup::Cmd(c)) => {
            return container(&engine(), &config, &open, c);
        }
        Cmd::Container(ContainerGroup::Prune(a)) => system::container_prune(&engine(), a)?,
        Cmd::Network(c) => containers::network(&engine(), c)?,
        Cmd::Volume(c) => containers::volume(&engine(), c)?,
        Cmd::System(c) => system::system(&engine(), c)?,
        Cmd::Info(a) => system::info(&engine(), a)?,
        Cmd::Version(a) => system::version(&engine(), a)?,
    }
    Ok(0)
}

/// The container commands; the exit code (a container's, where it has one).
fn container(
    engine: &berth_engine::engine::Engine,
    config: &Config,
    open: &dyn Fn() -> Result<Store>,
    c: ContainerCmd,
) -> Result<i32> {
    match c {
        ContainerCmd::Run(a) => return containers::run(engine, config, *a),
        ContainerCmd::Start(a) => return lifecycle::start(engine, a),
        ContainerCmd::Attach(a) => return lifecycle::attach(engine, a),
        ContainerCmd::Exec(a) => return containers::exec(engine, a),
        ContainerCmd::Create(a) => lifecycle::create(engine, config, *a)?,
        ContainerCmd::Restart(a) => lifecycle::restart(engine, a)?,
        ContainerCmd::Pause { containers } => lifecycle::pause(engine, &containers, true)?,
        ContainerCmd::Unpause { containers } => lifecycle::pause(engine, &containers, false)?,
        ContainerCmd::Ps(a) => containers::ps(engine, a)?,
        ContainerCmd::Logs(a) => logs::logs(engine, a)?,
        ContainerCmd::Stop(a) => containers::stop(engine, a)?,
        ContainerCmd::Rm(a) => containers::rm(engine, a)?,
        ContainerCmd::Kill(a) => containers::kill(engine, a)?,
        ContainerCmd::Wait { containers } => containers::wait(engine, &containers)?,
        ContainerCmd::Inspect(a) => containers::inspect(engine, &open()?, a)?,
        ContainerCmd::Top(a) => observe::top(engine, a)?,
        ContainerCmd::Stats(a) => observe::stats(engine, a)?,
        ContainerCmd::Cp(a) => observe::cp(engine, a)?,
        ContainerCmd::Port(a) => observe::port(engine, a)?,
        ContainerCmd::Rename(a) => observe::rename(engine, a)?,
    }
    Ok(0)
}

fn pull(store: &Store, config: &Config, a: PullArgs) -> Result<()> {
    let r = pull_image(store, config, a)?;
    println!("{r}");
    Ok(())
}

/// Pulls an image, with docker's progress and status lines on stderr;
/// returns the reference pulled.
pub fn pull_image(store: &Store, config: &Config, a: PullArgs) -> Result<Reference> {
    let r = Reference::parse(&a.reference)?;
    let opts = PullOptions {
        platform: match &a.platform {
            Some(p) => p.parse::<Platform>()?,
            None => Platform::host(),
        },
        unpack: UnpackOptions { max_size: a.max_layer_size.unwrap_or(config.images.max_layer_size) },
        concurrency: config.images.concurrency,
        durable: config.images.durable_unpack,
        progress: progress::reporter(a.quiet),
    };
    if !a.quiet {
        let what = r.tag().map(String::from).unwrap_or_else(|| r.manifest_reference());
        eprintln!("{what}: Pulling from {}", r.familiar_name());
    }
    let before = berth_image::images::find(&store.meta.read_all()?, &r.to_string()).ok();
    let rec = runtime()?.block_on(berth_image::pull::pull(store, &config.registry, &r, &opts))?;
    if !a.quiet {
        eprintln!("Digest: {}", rec.index.as_ref().unwrap_or(&rec.manifest));
        if before.as_ref() == Some(&rec.id) {
            eprintln!("Status: Image is up to date for {}", familiar(&r));
        } else {
            eprintln!("Status: Downloaded newer image for {}", familiar(&r));
        }
    }
    Ok(r)
}

fn familiar(r: &Reference) -> String {
    match (r.tag(), r.digest()) {
        (Some(t), _) => format!("{}:{t}", r.familiar_name()),
        (None, Some(d)) => format!("{}@{d}", r.familiar_name()),
        _ => r.familiar_name(),
    }
}

fn push(store: &Store, config: &Config, a: PushArgs) -> Result<()> {
    let dest = Reference::parse(a.dest.as_deref().unwrap_or(&a.reference))?;
    if !a.quiet {
        eprintln!("The push refers to repository [{}]", dest.name());
    }
    let d = runtime()?.block_on(berth_image::push::push(
        store,
        &config.registry,
        &a.reference,
        &dest,
        progress::reporter(a.quiet),
    ))?;
    let size = store.content.size(&d).unwrap_or(0);
    println!("{}: digest: {d} size: {size}", dest.tag().unwrap_or("latest"));
    Ok(())
}

fn list(store: &Store, a: ListArgs) -> Result<()> {
    let s = store.meta.read_all()?;
    let filter = a.repository.as_deref().map(Reference::parse).transpose()?;
    let explicit_tag = a.repository.as_deref().is_some_and(|r| r.rsplit('/').next().is_some_and(|l| l.contains(':')));
    let mut rows = Vec::new(); // (repo, tag, digest, image)
    for img in &s.images {
        let tags: Vec<Reference> = s.tags_of(&img.id).iter().filter_map(|t| Reference::parse(t).ok()).collect();
        let digests: Vec<Reference> = s.digests_of(&img.id).iter().filter_map(|t| Reference::parse(t).ok()).collect();
        let digest_for = |name: &str| {
            digests
                .iter()
                .find(|d| d.name() == name)
                .and_then(|d| d.digest())
                .map(|d| d.to_string())
                .unwrap_or("<none>".into())
        };
        let mut mine: Vec<(String, String, String, String)> = tags
            .iter()
            .map(|t| (t.familiar_name(), t.tag().unwrap_or("latest").to_string(), digest_for(&t.name()), t.name()))
            .collect();
        // Repositories known only by digest show with tag <none> (as docker does with --digests).
        for d in &digests {
            if !tags.iter().any(|t| t.name() == d.name()) {
                mine.push((d.familiar_name(), "<none>".into(), digest_for(&d.name()), d.name()));
            }
        }
        if mine.is_empty() {
            mine.push(("<none>".into(), "<none>".into(), "<none>".into(), String::new()));
        }
        for (repo, tag, digest, full) in mine {
            if let Some(f) = &filter
                && (full != f.name() || (explicit_tag && Some(tag.as_str()) != f.tag()))
            {
                continue;
            }
            rows.push((repo, tag, digest, img));
        }
    }
    rows.sort_by(|x, y| y.3.created.cmp(&x.3.created).then(x.0.cmp(&y.0)).then(x.1.cmp(&y.1)));
    let id = |img: &berth_image::store::meta::ImageRecord| {
        if a.no_trunc { img.id.to_string() } else { img.id.short().to_string() }
    };
    if a.quiet {
        let mut seen = std::collections::BTreeSet::new();
        for (_, _, _, img) in &rows {
            if seen.insert(img.id.clone()) {
                println!("{}", id(img));
            }
        }
        return Ok(());
    }
    match a.format.as_deref() {
        Some("json") | Some("{{json .}}") => {
            for (repo, tag, digest, img) in &rows {
                let v = serde_json::json!({
                    "Containers": "N/A",
                    "CreatedAt": img.created.clone().unwrap_or_default(),
                    "CreatedSince": format::since(img.created.as_deref()),
                    "Digest": digest,
                    "ID": id(img),
                    "Repository": repo,
                    "SharedSize": "N/A",
                    "Size": format::human_size(img.size),
                    "Tag": tag,
                    "UniqueSize": "N/A",
                    "VirtualSize": format::human_size(img.size),
                });
                println!("{v}");
            }
        }
        None | Some("table") => {
            let mut t = vec![if a.digests {
                ["REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "CREATED", "SIZE"].map(String::from).to_vec()
            } else {
                ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"].map(String::from).to_vec()
            }];
            for (repo, tag, digest, img) in &rows {
                let mut r = vec![repo.clone(), tag.clone()];
                if a.digests {
                    r.push(digest.clone());
                }
                r.extend([id(img), format::since(img.created.as_deref()), format::human_size(img.size)]);
                t.push(r);
            }
            print!("{}", format::table(&t));
        }
        Some(other) => bail!("unsupported --format {other:?}: use json or table"),
    }
    Ok(())
}

pub fn inspect(store: &Store, a: InspectArgs) -> Result<()> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for name in &a.images {
        match berth_image::archive::inspect(store, name) {
            Ok(v) => out.push(v),
            Err(berth_image::Error::NotFound(_)) => missing.push(name.clone()),
            Err(e) => return Err(e.into()),
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    if !missing.is_empty() {
        bail!("No such image: {}", missing.join(", "));
    }
    Ok(())
}

/// `rmi`: through the engine, which knows which containers use an image.
fn rmi(engine: &berth_engine::engine::Engine, a: RmiArgs) -> Result<()> {
    let mut failed = false;
    for name in &a.images {
        match engine.remove_image(name, a.force) {
            Ok(done) => {
                for d in done {
                    match d {
                        Removed::Untagged(t) => {
                            let t = Reference::parse(&t).map(|r| familiar(&r)).unwrap_or(t);
                            println!("Untagged: {t}");
                        }
                        Removed::Deleted(id) => println!("Deleted: {id}"),
                    }
                }
            }
            Err(e) => {
                eprintln!("Error response: {e}");
                failed = true;
            }
        }
    }
    engine.collect_garbage()?;
    if failed {
        bail!("some images were not removed");
    }
    Ok(())
}

fn prune(engine: &berth_engine::engine::Engine, a: PruneArgs) -> Result<()> {
    let _ = a.force;
    let removed = engine.prune_images(a.all)?;
    if !removed.is_empty() {
        println!("Deleted Images:");
        for id in &removed {
            println!("deleted: {id}");
        }
        println!();
    }
    let report = engine.collect_garbage()?;
    println!("Total reclaimed space: {}", format::human_size(report.bytes));
    Ok(())
}

fn save(store: &Store, a: SaveArgs) -> Result<()> {
    match &a.output {
        Some(p) => {
            let tmp = p.with_extension("berth-partial");
            let f = std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
            let mut w = std::io::BufWriter::new(f);
            berth_image::archive::save(store, &a.images, &mut w)?;
            let f = w.into_inner().map_err(|e| e.into_error()).context("flush")?;
            f.sync_all().context("fsync")?;
            std::fs::rename(&tmp, p).with_context(|| format!("rename to {}", p.display()))?;
        }
        None => {
            if std::io::stdout().is_terminal() {
                bail!("cowardly refusing to write an archive to a terminal: use -o FILE or redirect");
            }
            berth_image::archive::save(store, &a.images, std::io::BufWriter::new(std::io::stdout().lock()))?;
        }
    }
    Ok(())
}

fn load(store: &Store, config: &Config, a: LoadArgs) -> Result<()> {
    let opts = UnpackOptions { max_size: config.images.max_layer_size };
    let (input, _tmp) = match a.input {
        Some(p) => (p, None),
        None => {
            let tmp = tempfile_in(store.root())?;
            let mut f = std::fs::File::create(&tmp.0)?;
            std::io::copy(&mut std::io::stdin().lock(), &mut f).context("read stdin")?;
            (tmp.0.clone(), Some(tmp))
        }
    };
    for (rec, names) in berth_image::archive::load(store, &input, &opts)? {
        if a.quiet {
            continue;
        }
        if names.is_empty() {
            println!("Loaded image ID: {}", rec.id);
        }
        for n in names {
            let n = Reference::parse(&n).map(|r| familiar(&r)).unwrap_or(n);
            println!("Loaded image: {n}");
        }
    }
    Ok(())
}

struct TmpFile(PathBuf);
impl Drop for TmpFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn tempfile_in(dir: &Path) -> Result<TmpFile> {
    let p = dir.join(format!("stdin-{}.tar", std::process::id()));
    Ok(TmpFile(p))
}

fn registry_name(server: Option<&str>) -> String {
    let s = server.unwrap_or("docker.io");
    let s = s.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/');
    match s {
        "index.docker.io" | "index.docker.io/v1" | "registry-1.docker.io" => "docker.io".into(),
        s => s.to_string(),
    }
}

fn login(config: &Config, a: LoginArgs) -> Result<()> {
    let server = registry_name(a.server.as_deref());
    let username = match a.username {
        Some(u) => u,
        None => bail!("--username is required"),
    };
    let password = match (a.password, a.password_stdin) {
        (Some(_), true) => bail!("--password and --password-stdin are mutually exclusive"),
        (Some(p), false) => {
            eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
            p
        }
        (None, true) => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).context("read the password from stdin")?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => bail!("give the password with --password-stdin"),
    };
    let creds = Credentials { username, password };
    // Check the credentials before storing them, as docker does: a
    // throwaway auth store holding only them.
    let dir = std::env::temp_dir().join(format!("berth-login-{}", std::process::id()));
    let check = berth_image::registry::AuthStore { own: dir.join("auth.json"), fallbacks: vec![] };
    check.set(&server, &creds)?;
    let cfg = RegistryConfig { auth: Some(check), ..config.registry.clone() };
    let result = runtime()?.block_on(async {
        let reg = Registry::connect(&server, &cfg).await?;
        reg.check_login().await
    });
    let _ = std::fs::remove_dir_all(&dir);
    result.with_context(|| format!("login to {server}"))?;
    config.registry.auth_store().set(&server, &creds)?;
    println!("Login Succeeded");
    Ok(())
}
