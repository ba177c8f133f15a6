//! `berth build`: docker's flags, berth-build's executor. Progress goes to
//! stderr (as BuildKit's), `-q` prints only the image ID on stdout.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use berth_build::context::Context;
use berth_build::exec::{BuildOptions, build as run_build};
use berth_engine::engine::Engine;
use berth_engine::images::PullRequest;
use clap::{Args, Subcommand};

use crate::config::Config;
use crate::progress;

#[derive(Args)]
pub struct BuildArgs {
    /// Name and optionally a tag (name:tag); repeatable.
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// Name of the Dockerfile (default: CONTEXT/Dockerfile; `-` reads it from stdin).
    #[arg(short = 'f', long = "file")]
    pub file: Option<String>,
    /// Set a build-time variable (KEY=VALUE, or KEY to take it from the environment).
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// The stage to build.
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Always pull the base images.
    #[arg(long)]
    pub pull: bool,
    /// Set metadata on the image (KEY=VALUE); repeatable.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Write the image ID to this file.
    #[arg(long)]
    pub iidfile: Option<PathBuf>,
    /// Print only the image ID.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// auto, plain or tty (berth prints plain lines for all three).
    #[arg(long, default_value = "auto")]
    pub progress: String,
    /// The RUN steps' network: default, none or host.
    #[arg(long, default_value = "default")]
    pub network: String,
    /// Also write the image to a file: type=docker|oci,dest=FILE (one
    /// archive that is both a docker-archive and an OCI layout, as `save`).
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    /// The platform to build for: only this machine's (no cross builds).
    #[arg(long)]
    pub platform: Option<String>,
    /// A secret for RUN --mount=type=secret: id=ID,src=FILE.
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// The directory (or `-`: a tar on stdin) the build reads files from.
    pub context: String,
}

#[derive(Subcommand)]
pub enum BuilderCmd {
    /// Remove the build cache.
    Prune(BuilderPruneArgs),
}

#[derive(Args)]
pub struct BuilderPruneArgs {
    /// Do not prompt for confirmation (berth never prompts).
    #[arg(short, long)]
    pub force: bool,
    /// Remove all of the cache (berth's cache has no other kind).
    #[arg(short, long)]
    pub all: bool,
}

/// `builder prune`: drops every cache entry, then collects what only the
/// cache held (layers of no image, snapshots, entry blobs).
pub fn builder(engine: &Engine, c: BuilderCmd) -> Result<()> {
    match c {
        BuilderCmd::Prune(a) => {
            let _ = (a.force, a.all);
            prune_build_cache(engine)?;
            let report = engine.collect_garbage()?;
            println!("Total:\t{}", berth_engine::units::human_size(report.bytes));
            Ok(())
        }
    }
}

/// Drops the build cache (`builder prune`, `system prune`): the step
/// cache's entries and the RUN --mount=type=cache directories, as docker's.
/// What only the cache held goes at the next garbage collection.
pub fn prune_build_cache(engine: &Engine) -> Result<()> {
    berth_build::api::prune_cache(engine)?;
    Ok(())
}

pub fn build(engine: &Engine, config: &Config, a: BuildArgs) -> Result<()> {
    if !matches!(a.progress.as_str(), "auto" | "plain" | "tty" | "quiet") {
        bail!("invalid --progress {:?}: auto, plain or tty", a.progress);
    }
    if !matches!(a.network.as_str(), "default" | "none" | "host" | "bridge") {
        bail!("invalid --network {:?}: default, none or host", a.network);
    }
    let build_args = parse_build_args(&a.build_args)?;
    let output = a.output.as_deref().map(parse_output).transpose()?;
    if let Some(p) = &a.platform {
        let host = berth_engine::images::Platform::host();
        let wanted: berth_engine::images::Platform = p.parse()?;
        if wanted.os != host.os || wanted.architecture != host.architecture {
            bail!("--platform {p}: berth builds for this machine's platform ({host}) only");
        }
    }
    let labels = a
        .labels
        .iter()
        .map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).unwrap_or((l.clone(), String::new())))
        .collect();
    let secrets = parse_secrets(&a.secrets)?;
    let epoch = match build_args.get("SOURCE_DATE_EPOCH").cloned().or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok()) {
        Some(s) if !s.is_empty() => Some(s.parse::<i64>().with_context(|| format!("invalid SOURCE_DATE_EPOCH {s:?}"))?),
        _ => None,
    };

    // A context from stdin is unpacked into a locked work directory under
    // the root: removed when done, or by the next build if this one is
    // killed.
    let ctx_dir;
    let ctx = if a.context == "-" {
        if a.file.as_deref() == Some("-") {
            bail!("invalid argument: can't use stdin for both build context and dockerfile");
        }
        ctx_dir = berth_build::exec::step::WorkDir::new(&engine.root)?;
        Context::tar(std::io::stdin().lock(), ctx_dir.path())?
    } else {
        let dir = Path::new(&a.context);
        if !dir.is_dir() {
            bail!("unable to prepare context: path {:?} not found", a.context);
        }
        Context::dir(dir)?
    };
    let (file_name, text) = dockerfile(&a, &ctx)?;
    let df = berth_build::parse(&text)
        .map_err(|e| anyhow::anyhow!("{file_name}:{}:{}: {}", e.line, e.column, e.message))
        .context("failed to solve: dockerfile parse error")?;

    let opts = BuildOptions {
        file_name,
        tags: a.tags.clone(),
        build_args,
        target: a.target.clone(),
        no_cache: a.no_cache,
        labels,
        network: if a.network == "bridge" { "default".into() } else { a.network.clone() },
        source_date_epoch: epoch,
        quiet: a.quiet,
        secrets,
    };
    let images = config.images(engine);
    let pulled = std::sync::Mutex::new(std::collections::HashSet::new());
    let resolve = |name: &str| -> berth_build::error::Result<berth_engine::engine::Image> {
        let first = pulled.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string());
        match engine.image(name) {
            Ok(img) if !(a.pull && first) => Ok(img),
            Ok(_) | Err(berth_engine::Error::NoSuchImage(_)) => {
                let req = PullRequest { platform: None, max_layer_size: None };
                images.pull(name, &req, progress::reporter(true))?;
                Ok(engine.image(name)?)
            }
            Err(e) => Err(e.into()),
        }
    };
    let built = run_build(engine, &df, &ctx, &opts, &resolve).context("failed to solve")?;
    if let Some(f) = &a.iidfile {
        std::fs::write(f, built.id.to_string()).with_context(|| format!("write {}", f.display()))?;
    }
    if let Some(dest) = output {
        images.save_to(&[built.id.to_string()], &dest).with_context(|| format!("write {}", dest.display()))?;
    }
    if a.quiet {
        println!("{}", built.id);
    }
    Ok(())
}

/// `--output type=docker|oci,dest=FILE` (also `-o FILE`, docker's short
/// form for a local tar).
fn parse_output(s: &str) -> Result<PathBuf> {
    if !s.contains('=') {
        return Ok(PathBuf::from(s));
    }
    let (mut kind, mut dest) = (None, None);
    for kv in s.split(',') {
        match kv.split_once('=') {
            Some(("type", v)) => kind = Some(v),
            Some(("dest", v)) => dest = Some(PathBuf::from(v)),
            _ => bail!("invalid --output {s:?}: type=docker|oci,dest=FILE"),
        }
    }
    match (kind, dest) {
        (Some("docker" | "oci" | "tar") | None, Some(d)) => Ok(d),
        (Some(k), _) if !matches!(k, "docker" | "oci" | "tar") => {
            bail!("--output type={k}: berth writes docker and oci archives only")
        }
        _ => bail!("invalid --output {s:?}: dest=FILE is needed"),
    }
}

/// The Dockerfile's name (for messages) and text: `-f -` from stdin, `-f
/// PATH` from the filesystem, else the context's `Dockerfile`.
fn dockerfile(a: &BuildArgs, ctx: &Context) -> Result<(String, String)> {
    match a.file.as_deref() {
        Some("-") => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).context("read the Dockerfile from stdin")?;
            Ok(("Dockerfile".into(), s))
        }
        Some(f) if a.context != "-" => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("failed to read dockerfile: open {f}: no such file or directory"))?;
            Ok((file_base(f), text))
        }
        Some(f) => Ok((file_base(f), ctx.read_file(f).context("failed to read dockerfile")?)),
        None => Ok((
            "Dockerfile".into(),
            ctx.read_file("Dockerfile").map_err(|_| {
                anyhow::anyhow!("failed to read dockerfile: open Dockerfile: no such file or directory")
            })?,
        )),
    }
}

fn file_base(f: &str) -> String {
    Path::new(f).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| f.to_string())
}

/// `--build-arg K=V`, or `K` alone: the value from our environment (left
/// out when unset, as docker does).
fn parse_build_args(args: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in args {
        match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_string(), v.to_string());
            }
            Some(_) => bail!("invalid --build-arg {a:?}: KEY=VALUE expected"),
            None => {
                if let Ok(v) = std::env::var(a) {
                    out.insert(a.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

/// `--secret id=ID,src=FILE` (also `source=`, and `type=file`).
fn parse_secrets(secrets: &[String]) -> Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    for s in secrets {
        let (mut id, mut src) = (None, None);
        for kv in s.split(',') {
            match kv.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src" | "source", v)) => src = Some(PathBuf::from(v)),
                Some(("type", "file")) => {}
                _ => bail!("invalid --secret {s:?}: id=ID,src=FILE expected"),
            }
        }
        match (id, src) {
            (Some(id), Some(src)) => {
                let src = src.canonicalize().with_context(|| format!("--secret {s}: {}", src.display()))?;
                out.insert(id, src);
            }
            _ => bail!("invalid --secret {s:?}: id=ID,src=FILE expected"),
        }
    }
    Ok(out)
}
