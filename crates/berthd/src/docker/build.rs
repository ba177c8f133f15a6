//! `POST /build` (the classic builder's protocol, `version=1`) and `POST
//! /build/prune`, on berth's builder (berth-build), so `docker build` with
//! `DOCKER_BUILDKIT=0`, docker-py's `images.build` and compose's `build:`
//! work against berthd.
//!
//! The context tar (plain or compressed) is unpacked into the request's
//! scratch directory and the Dockerfile parsed before anything is
//! answered: bad input is an HTTP error, as dockerd's. Base images are
//! pulled here (berthd's registry settings, `X-Registry-Config`), then the
//! build runs in a worker process (berthd itself, [`WORKER_ARG`]): the
//! builder writes its progress and RUN output to stderr, which the worker
//! pipes to us, and its result to stdout. A client that goes away kills
//! the worker's process group, then what it left (a step's container, in
//! a session of its own; mounts; files) is cleaned as a killed build's.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use base64::Engine as _;
use berth_build::ast::{Dockerfile, Instruction};
use berth_build::context::Context;
use berth_engine::engine::Engine;
use berth_engine::images::Credentials;
use berth_engine::images::{PullRequest, familiar};
use berth_image::Reference;
use bytes::Bytes;
use hyper::StatusCode;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::sync::mpsc::UnboundedSender;

use super::errors::ApiError;
use super::{ApiResult, Call, blocking, bodyio};

/// berthd's first argument that makes it a build worker: `berthd
/// __build-worker JOB.json`.
pub const WORKER_ARG: &str = "__build-worker";

/// What the worker builds, and with which engine (berthd's).
#[derive(Serialize, Deserialize)]
struct Job {
    root: PathBuf,
    runroot: PathBuf,
    runtime: PathBuf,
    shim: PathBuf,
    cli: Option<PathBuf>,
    cgroup_parent: String,
    context: PathBuf,
    dockerfile_name: String,
    dockerfile: String,
    tags: Vec<String>,
    build_args: BTreeMap<String, String>,
    target: Option<String>,
    no_cache: bool,
    labels: Vec<(String, String)>,
    network: String,
    quiet: bool,
}

/// The worker's answer on stdout.
#[derive(Serialize, Deserialize)]
enum Outcome {
    Built(String),
    Failed(String),
}

/// The parameters of one build, checked.
struct Params {
    dockerfile: String,
    tags: Vec<String>,
    build_args: BTreeMap<String, String>,
    labels: Vec<(String, String)>,
    target: Option<String>,
    no_cache: bool,
    pull: bool,
    quiet: bool,
    network: String,
    /// The images to pull first (see [`base_images`]).
    bases: Vec<String>,
    /// `X-Registry-Config`'s credentials by registry.
    auths: BTreeMap<String, Credentials>,
}

fn params(c: &Call) -> Result<Params, ApiError> {
    let q = &c.query;
    if q.get("version") == Some("2") {
        return Err(ApiError::bad(
            "BuildKit's build protocol (version=2, a gRPC session) is not served by berthd: use the classic \
             builder (DOCKER_BUILDKIT=0 docker build ...)",
        ));
    }
    if let Some(r) = q.get("remote") {
        return Err(ApiError::bad(format!(
            "remote={r}: berthd does not fetch build contexts (URLs, git repositories); send the context as the \
             request body"
        )));
    }
    if let Some(p) = q.get("platform") {
        let host = berth_image::Platform::host();
        let wanted: berth_image::Platform = p.parse().map_err(|e| ApiError::bad(format!("platform {p:?}: {e}")))?;
        if wanted.os != host.os || wanted.architecture != host.architecture {
            return Err(ApiError::bad(format!("platform {p}: berth builds for this machine's platform ({host}) only")));
        }
    }
    let network = match q.get("networkmode").unwrap_or("default") {
        "default" | "bridge" => "default",
        "none" => "none",
        "host" => "host",
        other => {
            return Err(ApiError::bad(format!(
                "networkmode {other:?}: berth's RUN steps take default (bridge), none or host"
            )));
        }
    };
    let mut tags = Vec::new();
    for t in q.all("t") {
        let r = Reference::parse(t).map_err(|e| ApiError::bad(format!("invalid reference format: {e}")))?;
        if r.digest().is_some() {
            return Err(ApiError::bad(format!("invalid tag {t:?}: a tag cannot name a digest")));
        }
        tags.push(t.to_owned());
    }
    Ok(Params {
        dockerfile: q.get("dockerfile").unwrap_or("Dockerfile").to_owned(),
        tags,
        build_args: json_map(q.get("buildargs"), "buildargs")?.into_iter().collect(),
        labels: json_map(q.get("labels"), "labels")?,
        target: q.get("target").map(str::to_owned),
        no_cache: q.flag("nocache"),
        pull: q.flag("pull"),
        quiet: q.flag("q"),
        network: network.to_owned(),
        bases: Vec::new(),
        auths: registry_config(c.req.headers()),
    })
}

/// A JSON object of strings (`buildargs`, `labels`); a null value is left
/// out (docker's "declared, no value").
fn json_map(raw: Option<&str>, what: &str) -> Result<Vec<(String, String)>, ApiError> {
    let Some(raw) = raw else { return Ok(Vec::new()) };
    let map: BTreeMap<String, Option<String>> =
        serde_json::from_str(raw).map_err(|e| ApiError::bad(format!("{what}: invalid JSON object of strings: {e}")))?;
    Ok(map.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect())
}

/// `POST /build`.
pub async fn build(c: Call) -> ApiResult {
    let mut p = params(&c)?;
    let api = c.api.clone();
    let scratch = bodyio::scratch(&api.engine.root)?;
    let body = bodyio::BodyReader::new(c.req.into_body());
    let dir = scratch.path().to_path_buf();
    let name = p.dockerfile.clone();
    let (ctx, df, text) = blocking(move || {
        let ctx = Context::tar(body, &dir).map_err(|e| ApiError::bad(format!("unpack the build context: {e}")))?;
        let text = ctx
            .read_file(&name)
            .map_err(|e| ApiError::bad(format!("Cannot locate specified Dockerfile: {name} ({e})")))?;
        let df = berth_build::parse(&text).map_err(|e| {
            ApiError::bad(format!(
                "dockerfile parse error on line {}: {} ({name}:{}:{})",
                e.line, e.message, e.line, e.column
            ))
        })?;
        Ok((ctx, df, text))
    })
    .await?;
    p.bases = base_images(&df, &p.build_args);
    let steps = Steps::new(&df);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    tokio::spawn(async move {
        let out = Out(tx);
        if let Err(m) = run(&api, &p, &ctx, text, steps, &out).await {
            out.error(&m);
        }
        // The context and the scratch directory go once the build is over.
        drop(ctx);
        drop(scratch);
    });
    let frames = tokio_stream::StreamExt::map(tokio_stream::wrappers::UnboundedReceiverStream::new(rx), |b| {
        Ok::<_, std::io::Error>(hyper::body::Frame::data(b))
    });
    let mut r = hyper::Response::new(http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(frames)));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(r)
}

/// The response stream: docker's JSON messages, one a line.
struct Out(UnboundedSender<Bytes>);

impl Out {
    fn send(&self, v: Value) {
        let _ = self.0.send(Bytes::from(v.to_string() + "\r\n"));
    }

    fn stream(&self, text: &str) {
        self.send(json!({ "stream": text }));
    }

    /// What `docker build` prints (and exits 1 on).
    fn error(&self, message: &str) {
        self.send(json!({ "errorDetail": { "message": message }, "error": message }));
    }
}

/// The images the Dockerfile's stages start from (or copy from), its
/// stages and `scratch` left out; FROM's meta ARGs expanded as far as
/// they can be (what cannot be is left for the builder to report).
fn base_images(df: &Dockerfile, build_args: &BTreeMap<String, String>) -> Vec<String> {
    let lookup = |name: &str| -> Option<String> {
        build_args.get(name).cloned().or_else(|| {
            let d = df.meta_args.iter().rev().find(|a| a.inner.name == name)?.inner.default.clone()?;
            berth_build::parse::expand(&d, |n| build_args.get(n).cloned(), df.escape).ok()
        })
    };
    let mut out: Vec<String> = Vec::new();
    for (i, stage) in df.stages.iter().enumerate() {
        let mut names = vec![stage.base.clone()];
        for ins in &stage.instructions {
            match &ins.inner {
                Instruction::Copy(c) => names.extend(c.from.clone()),
                Instruction::Run(r) => names.extend(r.mounts.iter().filter_map(|m| m.from.clone())),
                _ => {}
            }
        }
        for n in names {
            let Ok(n) = berth_build::parse::expand(&n, lookup, df.escape) else { continue };
            let is_stage = df.stage(&n).is_some_and(|s| s.index < i);
            if !is_stage && !n.eq_ignore_ascii_case("scratch") && !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

/// The build after the request was read: pulls, then the worker.
async fn run(
    api: &Arc<super::Api>,
    p: &Params,
    ctx: &Context,
    dockerfile: String,
    mut steps: Steps,
    out: &Out,
) -> Result<(), String> {
    for base in &p.bases {
        pull_base(api, base, p.pull, &p.auths, out).await?;
    }
    let e = &api.engine;
    let job = Job {
        root: e.root.clone(),
        runroot: e.runroot.clone(),
        runtime: e.runtime.clone(),
        shim: e.shim.clone(),
        cli: e.cli.clone(),
        cgroup_parent: e.cgroup_parent.clone(),
        context: ctx.root().to_path_buf(),
        dockerfile_name: PathBuf::from(&p.dockerfile)
            .file_name()
            .map_or_else(|| p.dockerfile.clone(), |n| n.to_string_lossy().into_owned()),
        dockerfile,
        tags: p.tags.clone(),
        build_args: p.build_args.clone(),
        target: p.target.clone(),
        no_cache: p.no_cache,
        labels: p.labels.clone(),
        network: p.network.clone(),
        quiet: p.quiet,
    };
    let id = run_worker(&api.engine, &job, ctx, &mut steps, out).await?;
    if !p.quiet {
        steps.rest().iter().for_each(|l| out.stream(l));
    }
    let digest: berth_image::Digest = id.parse().map_err(|e| format!("the build worker's image ID {id:?}: {e}"))?;
    out.send(json!({ "aux": { "ID": id } }));
    if p.quiet {
        out.stream(&format!("{id}\n"));
        return Ok(());
    }
    out.stream(&format!("Successfully built {}\n", &digest.hex()[..12]));
    for t in &p.tags {
        let shown = Reference::parse(t).map(|r| familiar(&r.to_string())).unwrap_or_else(|_| t.clone());
        out.stream(&format!("Successfully tagged {shown}\n"));
    }
    Ok(())
}

/// Pulls `name` when it is not in the store (or always, with `pull=1`),
/// its progress in the stream as `docker pull`'s.
async fn pull_base(
    api: &Arc<super::Api>,
    name: &str,
    always: bool,
    auths: &BTreeMap<String, Credentials>,
    out: &Out,
) -> Result<(), String> {
    let engine = api.engine.clone();
    let n = name.to_owned();
    let present = blocking(move || Ok(engine.image(&n).is_ok())).await.map_err(|e| e.message)?;
    if present && !always {
        return Ok(());
    }
    let images = api.images();
    let creds = Reference::parse(name).ok().and_then(|r| auths.get(r.registry()).cloned());
    let progress = Arc::new(super::images::Progress::new(out.0.clone(), "Downloading"));
    let n = name.to_owned();
    blocking(move || {
        let req = PullRequest { platform: None, max_layer_size: None };
        let sink = progress.clone();
        let on_event: berth_engine::images::OnEvent = Arc::new(move |e| sink.event(e));
        let pulled = match creds {
            Some(c) => {
                let registry = Reference::parse(&n).map(|r| r.registry().to_owned()).unwrap_or_default();
                images.pull_with_credentials(&n, &req, &c, &[registry], on_event)
            }
            None => images.pull(&n, &req, on_event),
        };
        pulled.map(|_| ()).map_err(|e| ApiError::internal(format!("pull {n}: {e}")))
    })
    .await
    .map_err(|e| e.message)
}

/// `X-Registry-Config`: base64 of a JSON map registry → AuthConfig (what
/// the docker CLI has for each), for the FROM pulls. What cannot be read
/// is ignored (logged), as dockerd does.
fn registry_config(headers: &hyper::HeaderMap) -> BTreeMap<String, Credentials> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    let Some(raw) = headers.get("x-registry-config").and_then(|h| h.to_str().ok()) else { return BTreeMap::new() };
    let decoded = URL_SAFE.decode(raw.trim()).or_else(|_| STANDARD.decode(raw.trim()));
    let Some(map) = decoded.ok().and_then(|b| serde_json::from_slice::<BTreeMap<String, Value>>(&b).ok()) else {
        tracing::debug!("X-Registry-Config: not base64 JSON; ignored");
        return BTreeMap::new();
    };
    map.into_iter()
        .filter_map(|(server, auth)| {
            let creds = auth_config(&auth)?;
            let host = server.trim_start_matches("https://").trim_start_matches("http://");
            let host = host.split('/').next().unwrap_or(host);
            let host = if host == "index.docker.io" { "docker.io" } else { host };
            Some((host.to_owned(), creds))
        })
        .collect()
}

/// Credentials from one AuthConfig: username/password, `auth`
/// (base64 USER:PASSWORD) or an identity token.
fn auth_config(v: &Value) -> Option<Credentials> {
    let text = |k: &str| v[k].as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    if let Some(token) = text("identitytoken") {
        return Some(Credentials {
            username: berth_image::registry::credentials::IDENTITY_TOKEN_USER.into(),
            password: token,
        });
    }
    if let Some(user) = text("username") {
        return Some(Credentials { username: user, password: text("password").unwrap_or_default() });
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(text("auth")?.trim()).ok()?;
    let decoded = String::from_utf8(raw).ok()?;
    let (u, p) = decoded.split_once(':')?;
    Some(Credentials { username: u.to_owned(), password: p.to_owned() })
}

/// Runs the worker on `job`: its stderr (progress, RUN output) into the
/// stream as it comes; its image ID, or why it failed.
async fn run_worker(engine: &Engine, job: &Job, ctx: &Context, steps: &mut Steps, out: &Out) -> Result<String, String> {
    let job_file = ctx.root().with_extension("job.json");
    let text = serde_json::to_vec(job).map_err(|e| format!("encode the build job: {e}"))?;
    std::fs::write(&job_file, text).map_err(|e| format!("write {}: {e}", job_file.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("find berthd's own program: {e}"))?;
    let mut child = tokio::process::Command::new(exe)
        .arg(WORKER_ARG)
        .arg(&job_file)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // Its own group: a client that goes away takes the steps' runtimes too.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("start the build worker: {e}"))?;
    let pid = child.id();
    let (Some(mut stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err("the build worker has no pipes".into());
    };
    let mut lines = tokio::io::BufReader::new(stderr);
    let mut last = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = tokio::select! {
            r = lines.read_until(b'\n', &mut line) => r,
            _ = out.0.closed() => {
                if let Some(pid) = pid {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.wait().await;
                // A step's process is in a session of its own (the
                // runtime's): the worker's work directory, now unlocked,
                // is cleaned as a killed build's (runtime delete --force
                // ends the step, then mounts and files go).
                let engine = engine.clone();
                let _ = blocking(move || {
                    berth_build::exec::step::clean_stale(&engine);
                    Ok(())
                })
                .await;
                return Err("the client went away".into());
            }
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line).into_owned();
                last.push(text.clone());
                if last.len() > 20 {
                    last.remove(0);
                }
                steps.lines(&text).iter().for_each(|l| out.stream(l));
            }
        }
    }
    let mut answer = String::new();
    let _ = stdout.read_to_string(&mut answer).await;
    let status = child.wait().await.map_err(|e| format!("wait for the build worker: {e}"))?;
    match serde_json::from_str::<Outcome>(answer.trim()) {
        Ok(Outcome::Built(id)) => Ok(id),
        Ok(Outcome::Failed(m)) => Err(m),
        Err(_) => Err(format!("the build worker ended ({status}) without an answer: {}", last.concat().trim_end())),
    }
}

/// One line of the builder's progress (BuildKit's plain style) as the
/// classic builder's: `#3 [2/4] RUN x` → `Step 2/4 : RUN x`, `#3 CACHED` →
/// ` ---> Using cache`, `#1 resolved X to sha256:...` → ` ---> 0123456789ab`;
/// other lines (a RUN's output, warnings) as they are.
/// A step line's label and instruction: `#3 [stage-0 2/4] RUN x` gives
/// `stage-0 2/4` and `RUN x`.
fn step_line(line: &str) -> Option<(&str, &str)> {
    let (n, what) = line.strip_prefix('#')?.split_once(' ')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    what.trim_end_matches('\n').strip_prefix('[')?.split_once("] ")
}

/// The classic builder shows every instruction as a step; berth's builder
/// reports FROM and the steps that make layers. The ones between (ENV,
/// CMD, ...) are filled in from the Dockerfile, in order, per stage.
pub struct Steps {
    /// Per stage: its name (or `stage-N`, as the builder labels it) and
    /// its steps' text, FROM first.
    stages: Vec<(String, Vec<String>)>,
    /// Per stage: the last step shown.
    shown: Vec<usize>,
}

impl Steps {
    pub fn new(df: &Dockerfile) -> Steps {
        let stages: Vec<(String, Vec<String>)> = df
            .stages
            .iter()
            .map(|s| {
                let label = s.name.clone().unwrap_or_else(|| format!("stage-{}", s.index));
                let all = std::iter::once(s.original.clone()).chain(s.instructions.iter().map(|i| i.original.clone()));
                (label, all.collect())
            })
            .collect();
        Steps { shown: vec![0; stages.len()], stages }
    }

    /// What to stream for one line of the worker's stderr.
    pub fn lines(&mut self, line: &str) -> Vec<String> {
        let mut out = Vec::new();
        if let Some((label, _)) = step_line(line)
            && let Some((stage, count)) = label.rsplit_once(' ').or(Some(("", label)))
            && let Some((i, _)) = count.split_once('/')
            && let Ok(i) = i.parse::<usize>()
        {
            let s = if stage.is_empty() { Some(0) } else { self.stages.iter().position(|(l, _)| l == stage) };
            if let Some(s) = s.filter(|s| *s < self.stages.len()) {
                for j in self.shown[s] + 1..i {
                    out.push(self.step(s, j));
                }
                self.shown[s] = self.shown[s].max(i);
            }
        }
        out.extend(translate(line));
        out
    }

    /// The steps not shown yet of the stages that were built (after the
    /// last of them).
    pub fn rest(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for s in 0..self.stages.len() {
            if self.shown[s] > 0 {
                for j in self.shown[s] + 1..=self.stages[s].1.len() {
                    out.push(self.step(s, j));
                }
                self.shown[s] = self.stages[s].1.len();
            }
        }
        out
    }

    fn step(&self, s: usize, j: usize) -> String {
        let all = &self.stages[s].1;
        format!("Step {j}/{} : {}\n", all.len(), all.get(j - 1).map_or("", String::as_str))
    }
}

pub fn translate(line: &str) -> Option<String> {
    let Some(rest) = line.strip_prefix('#') else { return Some(line.to_owned()) };
    let Some((n, what)) = rest.split_once(' ') else { return Some(line.to_owned()) };
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Some(line.to_owned());
    }
    let what = what.trim_end_matches('\n');
    if what == "CACHED" {
        return Some(" ---> Using cache\n".into());
    }
    if let Some(r) = what.strip_prefix("resolved ")
        && let Some((_, id)) = r.rsplit_once(" to sha256:")
    {
        return Some(format!(" ---> {}\n", &id[..id.len().min(12)]));
    }
    if let Some(label) = what.strip_prefix('[')
        && let Some((label, ins)) = label.split_once("] ")
    {
        // "[stage-0 2/4]" or "[2/4]": the count is the last word.
        let count = label.rsplit(' ').next().unwrap_or(label);
        return Some(format!("Step {count} : {ins}\n"));
    }
    Some(format!("{what}\n"))
}

/// `POST /build/prune`: the build cache (every entry: berth's cache has
/// one kind) and RUN cache mounts, then what only they held.
pub async fn prune(c: Call) -> ApiResult {
    let engine = c.api.engine.clone();
    let (pruned, report) = blocking(move || {
        let pruned = berth_build::api::prune_cache(&engine)
            .map_err(|e| ApiError::internal(format!("prune the build cache: {e}")))?;
        let report = engine.collect_garbage()?;
        Ok((pruned, report))
    })
    .await?;
    Ok(super::json(StatusCode::OK, &json!({ "CachesDeleted": pruned.entries, "SpaceReclaimed": report.bytes })))
}

/// The worker: `berthd __build-worker JOB`. Progress on stderr (the
/// builder's own), the [`Outcome`] on stdout.
pub fn worker_main() -> ExitCode {
    let outcome = match std::env::args_os().nth(2).map(PathBuf::from) {
        Some(job) => match work(&job) {
            Ok(id) => Outcome::Built(id),
            Err(m) => Outcome::Failed(m),
        },
        None => Outcome::Failed(format!("usage: berthd {WORKER_ARG} JOB.json")),
    };
    let ok = matches!(outcome, Outcome::Built(_));
    println!("{}", serde_json::to_string(&outcome).unwrap_or_default());
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn work(job: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read(job).map_err(|e| format!("read {}: {e}", job.display()))?;
    let job: Job = serde_json::from_slice(&text).map_err(|e| format!("read {}: {e}", job.display()))?;
    let engine = berth_engine::engine::Engine {
        root: job.root,
        runroot: job.runroot,
        runtime: job.runtime,
        shim: job.shim,
        cli: job.cli,
        cgroup_parent: job.cgroup_parent,
    };
    let ctx = Context::dir(&job.context).map_err(|e| e.to_string())?;
    let df = berth_build::parse(&job.dockerfile)
        .map_err(|e| format!("dockerfile parse error on line {}: {}", e.line, e.message))?;
    let opts = berth_build::exec::BuildOptions {
        file_name: job.dockerfile_name,
        tags: job.tags,
        build_args: job.build_args,
        target: job.target,
        no_cache: job.no_cache,
        labels: job.labels,
        network: job.network,
        quiet: job.quiet,
        ..Default::default()
    };
    // berthd pulled every base before starting us: the store has them.
    let resolve = |name: &str| -> berth_build::error::Result<berth_engine::engine::Image> { Ok(engine.image(name)?) };
    let built = berth_build::exec::build(&engine, &df, &ctx, &opts, &resolve).map_err(|e| e.to_string())?;
    Ok(built.id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_become_the_classic_builders() {
        assert_eq!(translate("#2 [1/3] FROM busybox\n").unwrap(), "Step 1/3 : FROM busybox\n");
        assert_eq!(translate("#5 [build 2/4] RUN make\n").unwrap(), "Step 2/4 : RUN make\n");
        assert_eq!(translate("#3 CACHED\n").unwrap(), " ---> Using cache\n");
        assert_eq!(translate("#2 resolved busybox to sha256:0123456789abcdef\n").unwrap(), " ---> 0123456789ab\n");
        assert_eq!(translate("hello from RUN\n").unwrap(), "hello from RUN\n");
        assert_eq!(translate("#!/bin/sh\n").unwrap(), "#!/bin/sh\n");
    }

    #[test]
    fn steps_the_builder_does_not_report_are_filled_in() {
        let df = berth_build::parse("FROM a AS b\nENV X=1\nRUN x\nCMD y\nFROM b\nLABEL l=1\nRUN z\n").unwrap();
        let mut steps = Steps::new(&df);
        assert_eq!(steps.lines("#1 [b 1/4] FROM a AS b\n"), ["Step 1/4 : FROM a AS b\n"]);
        assert_eq!(steps.lines("#2 [b 3/4] RUN x\n"), ["Step 2/4 : ENV X=1\n", "Step 3/4 : RUN x\n"]);
        assert_eq!(steps.lines("out\n"), ["out\n"]);
        assert_eq!(steps.lines("#3 [stage-1 1/3] FROM b\n"), ["Step 1/3 : FROM b\n"]);
        assert_eq!(steps.lines("#4 [stage-1 3/3] RUN z\n"), ["Step 2/3 : LABEL l=1\n", "Step 3/3 : RUN z\n"]);
        assert_eq!(steps.rest(), ["Step 4/4 : CMD y\n"]);
    }

    #[test]
    fn registry_config_gives_credentials_per_registry() {
        let map = json!({
            "localhost:5000": { "username": "u", "password": "p" },
            "https://index.docker.io/v1/": { "auth": base64::engine::general_purpose::STANDARD.encode("a:b") },
        });
        let mut h = hyper::HeaderMap::new();
        let v = base64::engine::general_purpose::URL_SAFE.encode(map.to_string());
        h.insert("x-registry-config", v.parse().unwrap());
        let got = registry_config(&h);
        assert_eq!(got["localhost:5000"].username, "u");
        assert_eq!(got["docker.io"].password, "b");
    }
}
