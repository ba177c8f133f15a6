//! The image commands: pull, push, images, image inspect/ls/rm/prune/tag/
//! save/load/import, rmi, tag, save, load, import, login, logout. Flags
//! in, the engine's typed results out, as docker prints them.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use berth::format;
use berth_engine::engine::Engine;
use berth_engine::images::{Credentials, ImageRow, ImportOptions, PullRequest, Removed, familiar};
use berth_engine::units::human_size;
use clap::{Args, Subcommand};

use crate::config::Config;
use crate::progress;

#[derive(Subcommand)]
pub enum ImageCmd {
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
    Import(ImportArgs),
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
pub struct PushArgs {
    #[arg(long, short)]
    quiet: bool,
    /// The local image; also the destination unless DEST is given.
    reference: String,
    dest: Option<String>,
}

#[derive(Args)]
pub struct ListArgs {
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
pub struct RmiArgs {
    #[arg(long, short)]
    force: bool,
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Args)]
pub struct TagArgs {
    source: String,
    target: String,
}

#[derive(Args)]
pub struct SaveArgs {
    /// Write to this file (default: stdout, if it is not a terminal).
    #[arg(long, short)]
    output: Option<PathBuf>,
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Args)]
pub struct LoadArgs {
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
pub struct PruneArgs {
    /// Remove all images nothing uses, not only untagged ones.
    #[arg(long, short)]
    all: bool,
    /// Do not prompt (there is no prompt; kept for docker compatibility).
    #[arg(long, short)]
    force: bool,
}

#[derive(Args)]
pub struct ImportArgs {
    /// Apply a Dockerfile instruction: CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE
    #[arg(short, long)]
    change: Vec<String>,
    /// A commit message for the image's history
    #[arg(short, long)]
    message: Option<String>,
    /// The tarball ("-" for stdin)
    file: String,
    /// The new image's name[:tag]
    reference: Option<String>,
}

#[derive(Args)]
pub struct LoginArgs {
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
pub struct LogoutArgs {
    server: Option<String>,
}

/// Runs one image command.
pub fn image(engine: &Engine, config: &Config, c: ImageCmd) -> Result<()> {
    match c {
        ImageCmd::Pull(a) => pull(engine, config, a),
        ImageCmd::Push(a) => push(engine, config, a),
        ImageCmd::Ls(a) => list(engine, config, a),
        ImageCmd::Inspect(a) => inspect(engine, config, a),
        ImageCmd::Rm(a) => rmi(engine, a),
        ImageCmd::Tag(a) => Ok(config.images(engine).tag(&a.source, &a.target)?),
        ImageCmd::Save(a) => save(engine, config, a),
        ImageCmd::Load(a) => load(engine, config, a),
        ImageCmd::Import(a) => import(engine, config, a),
        ImageCmd::Prune(a) => prune(engine, a),
    }
}

fn pull(engine: &Engine, config: &Config, a: PullArgs) -> Result<()> {
    let req = PullRequest { platform: a.platform, max_layer_size: a.max_layer_size };
    let pulled = config.images(engine).pull(&a.reference, &req, progress::reporter(a.quiet))?;
    println!("{}", pulled.reference);
    Ok(())
}

fn push(engine: &Engine, config: &Config, a: PushArgs) -> Result<()> {
    let images = config.images(engine);
    let (digest, size) = images.push(&a.reference, a.dest.as_deref(), progress::reporter(a.quiet))?;
    let dest = berth_engine::images::Reference::parse(a.dest.as_deref().unwrap_or(&a.reference))?;
    println!("{}: digest: {digest} size: {size}", dest.tag().unwrap_or("latest"));
    Ok(())
}

fn list(engine: &Engine, config: &Config, a: ListArgs) -> Result<()> {
    let rows = config.images(engine).list(a.repository.as_deref())?;
    let id = |r: &ImageRow| if a.no_trunc { r.id.to_string() } else { r.id.short().to_string() };
    if a.quiet {
        let mut seen = std::collections::BTreeSet::new();
        for r in &rows {
            if seen.insert(r.id.clone()) {
                println!("{}", id(r));
            }
        }
        return Ok(());
    }
    match a.format.as_deref() {
        Some("json") | Some("{{json .}}") => {
            for r in &rows {
                let v = serde_json::json!({
                    "Containers": "N/A",
                    "CreatedAt": r.created.clone().unwrap_or_default(),
                    "CreatedSince": format::since(r.created.as_deref()),
                    "Digest": r.digest,
                    "ID": id(r),
                    "Repository": r.repository,
                    "SharedSize": "N/A",
                    "Size": human_size(r.size),
                    "Tag": r.tag,
                    "UniqueSize": "N/A",
                    "VirtualSize": human_size(r.size),
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
            for r in &rows {
                let mut cols = vec![r.repository.clone(), r.tag.clone()];
                if a.digests {
                    cols.push(r.digest.clone());
                }
                cols.extend([id(r), format::since(r.created.as_deref()), human_size(r.size)]);
                t.push(cols);
            }
            print!("{}", format::table(&t));
        }
        Some(other) => bail!("unsupported --format {other:?}: use json or table"),
    }
    Ok(())
}

/// `image inspect`: what is found is printed, then what was not is an
/// error, as docker does.
pub fn inspect(engine: &Engine, config: &Config, a: InspectArgs) -> Result<()> {
    let images = config.images(engine);
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for name in &a.images {
        match images.inspect(name) {
            Ok(v) => out.push(v),
            Err(berth_engine::Error::NoSuchImage(_)) => missing.push(name.clone()),
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
fn rmi(engine: &Engine, a: RmiArgs) -> Result<()> {
    let mut failed = false;
    for name in &a.images {
        match engine.remove_image(name, a.force) {
            Ok(done) => {
                for d in done {
                    match d {
                        Removed::Untagged(t) => println!("Untagged: {}", familiar(&t)),
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

fn prune(engine: &Engine, a: PruneArgs) -> Result<()> {
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
    println!("Total reclaimed space: {}", human_size(report.bytes));
    Ok(())
}

fn save(engine: &Engine, config: &Config, a: SaveArgs) -> Result<()> {
    let images = config.images(engine);
    match &a.output {
        Some(p) => images.save_to(&a.images, p)?,
        None => {
            if std::io::stdout().is_terminal() {
                bail!("cowardly refusing to write an archive to a terminal: use -o FILE or redirect");
            }
            images.save(&a.images, std::io::BufWriter::new(std::io::stdout().lock()))?;
        }
    }
    Ok(())
}

fn load(engine: &Engine, config: &Config, a: LoadArgs) -> Result<()> {
    let images = config.images(engine);
    let loaded = match &a.input {
        Some(p) => images.load(p)?,
        None => images.load_stream(std::io::stdin().lock())?,
    };
    if a.quiet {
        return Ok(());
    }
    for l in loaded {
        if l.names.is_empty() {
            println!("Loaded image ID: {}", l.id);
        }
        for n in l.names {
            println!("Loaded image: {}", familiar(&n));
        }
    }
    Ok(())
}

/// `import`: a root filesystem tarball (plain, gzip or zstd; a file or
/// stdin) as a one-layer image; prints its ID.
fn import(engine: &Engine, config: &Config, a: ImportArgs) -> Result<()> {
    let input: Box<dyn Read> = if a.file == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(&a.file).with_context(|| format!("open {}", a.file))?)
    };
    let opts = ImportOptions { changes: a.change, message: a.message, source: a.file, reference: a.reference };
    println!("{}", config.images(engine).import(input, &opts)?);
    Ok(())
}

pub fn login(engine: &Engine, config: &Config, a: LoginArgs) -> Result<()> {
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
    config.images(engine).login(a.server.as_deref(), Credentials { username, password })?;
    println!("Login Succeeded");
    Ok(())
}

pub fn logout(engine: &Engine, config: &Config, a: LogoutArgs) -> Result<()> {
    let (server, had) = config.images(engine).logout(a.server.as_deref())?;
    if had {
        println!("Removing login credentials for {server}");
    } else {
        println!("Not logged in to {server}");
    }
    Ok(())
}
