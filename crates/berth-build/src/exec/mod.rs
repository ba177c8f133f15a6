//! The executor: a parsed Dockerfile and a context into an image in the
//! store.
//!
//! Stages form a graph (FROM another stage, COPY --from); the stages the
//! target needs are built, each level of the graph in parallel threads.
//! Each instruction is expanded with the ARG/ENV state of its point
//! ([`crate::parse::expand`]); RUN, COPY, ADD and WORKDIR run on an
//! overlay of the parent's snapshots ([`step`]) and what they change
//! becomes a layer; the others only change the image config (history
//! entries with `empty_layer`). Steps that make layers are looked up in
//! the [`crate::cache`] first.

pub mod copy;
pub mod fetch;
pub mod run;
pub mod step;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use berth_engine::engine::Engine;
use berth_image::Digest;
use berth_image::store::Store;
use berth_image::store::meta::{ImageRecord, LayerRecord};
use serde_json::{Map, Value, json};

use crate::ast::{Command, Dockerfile, Healthcheck, Instruction, Located, MountKind, NetworkMode, Stage};
use crate::cache;
use crate::context::{Context, hash_sources, select};
use crate::error::{Error, Result};
use crate::parse::{expand, expand_words};

/// docker's predefined args: usable without ARG, never in the history or
/// the cache key.
pub const PREDEFINED_ARGS: [&str; 8] =
    ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy", "NO_PROXY", "no_proxy"];

/// What `berth build` asks for.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The Dockerfile's name, for messages.
    pub file_name: String,
    pub tags: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    pub labels: Vec<(String, String)>,
    /// "default", "none" or "host".
    pub network: String,
    /// `SOURCE_DATE_EPOCH`: every time in the image (history, created,
    /// layer mtimes clamped) is this one.
    pub source_date_epoch: Option<i64>,
    pub quiet: bool,
    /// `--secret id=x,src=FILE`: id → file.
    pub secrets: BTreeMap<String, PathBuf>,
}

/// Finds a base image by name (the CLI pulls it when missing).
pub type ResolveImage<'a> = dyn Fn(&str) -> Result<berth_engine::engine::Image> + Sync + 'a;

/// The state of a stage after an instruction.
#[derive(Clone, Debug)]
struct State {
    /// The whole image config (as the base had it, plus our changes).
    config: Value,
    layers: Vec<LayerRecord>,
    /// The cache key of the last step.
    key: Digest,
    /// ARGs declared in the stage, with their values.
    args: BTreeMap<String, String>,
    /// CMD was set in this stage (ENTRYPOINT then keeps it).
    cmd_set: bool,
}

impl State {
    fn cfg(&mut self) -> &mut Map<String, Value> {
        if !self.config.get("config").is_some_and(Value::is_object) {
            self.config["config"] = json!({});
        }
        self.config["config"].as_object_mut().unwrap_or_else(|| unreachable!("just made an object"))
    }

    fn env(&self) -> Vec<String> {
        self.config["config"]["Env"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default()
    }

    fn env_get(&self, name: &str) -> Option<String> {
        self.env().iter().find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
    }

    fn set_env(&mut self, k: &str, v: &str) {
        let mut env = self.env();
        env.retain(|kv| kv.split_once('=').map_or(kv.as_str(), |(n, _)| n) != k);
        env.push(format!("{k}={v}"));
        self.cfg().insert("Env".into(), json!(env));
    }

    fn str_field(&self, name: &str) -> String {
        self.config["config"][name].as_str().unwrap_or_default().to_string()
    }

    fn shell(&self) -> Vec<String> {
        match self.config["config"]["Shell"].as_array() {
            Some(a) if !a.is_empty() => a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
            _ => vec!["/bin/sh".into(), "-c".into()],
        }
    }

    fn last_created(&self) -> Value {
        self.config["history"].as_array().and_then(|h| h.last()).map(|h| h["created"].clone()).unwrap_or(Value::Null)
    }

    fn push_history(&mut self, entry: Value) {
        if !self.config["history"].is_array() {
            self.config["history"] = json!([]);
        }
        if let Some(h) = self.config["history"].as_array_mut() {
            h.push(entry);
        }
    }
}

/// A finished build.
#[derive(Debug, Clone)]
pub struct Built {
    pub id: Digest,
    pub record: ImageRecord,
}

/// Progress lines (stderr), numbered as BuildKit's plain output.
struct Progress {
    quiet: bool,
    n: Mutex<usize>,
}

impl Progress {
    fn step(&self, what: &str) -> usize {
        let mut n = self.n.lock().unwrap_or_else(|e| e.into_inner());
        *n += 1;
        if !self.quiet {
            let _ = writeln!(std::io::stderr(), "#{} {what}", *n);
        }
        *n
    }

    fn line(&self, n: usize, what: &str) {
        if !self.quiet {
            let _ = writeln!(std::io::stderr(), "#{n} {what}");
        }
    }
}

/// Builds `df` with `ctx`; the result is recorded (and tagged) in the store.
pub fn build(
    engine: &Engine,
    df: &Dockerfile,
    ctx: &Context,
    opts: &BuildOptions,
    resolve: &ResolveImage<'_>,
) -> Result<Built> {
    let store = engine.store()?;
    let _adding = store.adding()?;
    step::clean_stale(engine);
    let work = step::WorkDir::new(&engine.root)?;
    let b = Builder {
        engine,
        store: &store,
        df,
        ctx,
        opts,
        resolve,
        work: &work,
        progress: Progress { quiet: opts.quiet, n: Mutex::new(0) },
        done: Mutex::new(HashMap::new()),
        seq: Mutex::new(0),
    };
    let target = match &opts.target {
        Some(t) => df.stage(t).ok_or_else(|| Error::Invalid(format!("target stage \"{t}\" could not be found")))?,
        None => df.stages.last().ok_or_else(|| Error::Invalid("the Dockerfile has no stages".into()))?,
    };
    let mut order = Vec::new();
    b.needed(target.index, &mut order, &mut Vec::new())?;
    b.build_stages(&order)?;
    let state = b.done.lock().unwrap_or_else(|e| e.into_inner()).get(&target.index).cloned();
    let state = state.ok_or_else(|| Error::Invalid("target stage was not built".into()))?;
    let built = b.write_image(state)?;
    let unused = unused_build_args(df, opts);
    if !unused.is_empty() && !opts.quiet {
        eprintln!("[Warning] One or more build-args [{}] were not consumed", unused.join(" "));
    }
    Ok(built)
}

/// Build args no ARG of the Dockerfile declares (docker warns of them).
fn unused_build_args(df: &Dockerfile, opts: &BuildOptions) -> Vec<String> {
    let mut declared: Vec<&str> = df.meta_args.iter().map(|a| a.inner.name.as_str()).collect();
    for s in &df.stages {
        for ins in &s.instructions {
            if let Instruction::Arg(decls) = &ins.inner {
                declared.extend(decls.iter().map(|d| d.name.as_str()));
            }
        }
    }
    opts.build_args
        .keys()
        .filter(|k| {
            !declared.contains(&k.as_str()) && !PREDEFINED_ARGS.contains(&k.as_str()) && *k != "SOURCE_DATE_EPOCH"
        })
        .cloned()
        .collect()
}

struct Builder<'a> {
    engine: &'a Engine,
    store: &'a Store,
    df: &'a Dockerfile,
    ctx: &'a Context,
    opts: &'a BuildOptions,
    resolve: &'a ResolveImage<'a>,
    work: &'a step::WorkDir,
    progress: Progress,
    /// Finished stages by index.
    done: Mutex<HashMap<usize, State>>,
    /// Step directory names.
    seq: Mutex<usize>,
}

impl Builder<'_> {
    /// The meta ARGs' values (build args override the defaults), and the
    /// platform args BuildKit defines (berth builds for its own platform).
    fn meta_lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        move |name: &str| {
            if let Some(v) = self.opts.build_args.get(name) {
                return Some(v.clone());
            }
            let declared = self.df.meta_args.iter().rev().find(|a| a.inner.name == name).and_then(|a| {
                let d = a.inner.default.as_deref()?;
                expand(d, |n| self.opts.build_args.get(n).cloned(), self.df.escape).ok()
            });
            declared.or_else(|| platform_arg(name))
        }
    }

    /// FROM --platform: only this machine's platform can be built.
    fn check_platform(&self, stage: &Stage) -> Result<()> {
        let Some(p) = &stage.platform else { return Ok(()) };
        let p =
            expand(p, self.meta_lookup(), self.df.escape).map_err(|e| self.step_err(stage.line, &stage.original, e))?;
        let host = berth_image::Platform::host();
        let wanted: berth_image::Platform =
            p.parse().map_err(|e| self.step_err(stage.line, &stage.original, format!("--platform {p}: {e}")))?;
        if wanted.os != host.os || wanted.architecture != host.architecture {
            return Err(self.step_err(
                stage.line,
                &stage.original,
                format!("--platform {p}: berth builds for this machine's platform ({host}) only"),
            ));
        }
        Ok(())
    }

    fn base_of(&self, stage: &Stage) -> Result<String> {
        expand(&stage.base, self.meta_lookup(), self.df.escape)
            .map_err(|e| self.step_err(stage.line, &stage.original, e))
    }

    /// The stage `name` refers to, if it is an earlier stage.
    fn stage_ref(&self, name: &str, before: usize) -> Option<usize> {
        self.df.stage(name).map(|s| s.index).filter(|i| *i < before)
    }

    /// Stages `index` depends on, dependencies first.
    fn needed(&self, index: usize, order: &mut Vec<usize>, visiting: &mut Vec<usize>) -> Result<()> {
        if order.contains(&index) {
            return Ok(());
        }
        if visiting.contains(&index) {
            return Err(Error::Invalid(format!("stage {index} depends on itself")));
        }
        visiting.push(index);
        for d in self.deps(index)? {
            self.needed(d, order, visiting)?;
        }
        visiting.pop();
        order.push(index);
        Ok(())
    }

    fn deps(&self, index: usize) -> Result<Vec<usize>> {
        let stage = &self.df.stages[index];
        let mut out = Vec::new();
        if let Some(i) = self.stage_ref(&self.base_of(stage)?, index) {
            out.push(i);
        }
        for ins in &stage.instructions {
            let from = match &ins.inner {
                Instruction::Copy(c) => c.from.clone(),
                Instruction::Run(r) => r.mounts.iter().find_map(|m| m.from.clone()),
                _ => None,
            };
            if let Some(f) = from
                && let Some(i) = self.stage_ref(&f, index)
            {
                out.push(i);
            }
        }
        Ok(out)
    }

    /// Builds the stages of `order`, each as soon as its dependencies are
    /// done, independent ones in parallel.
    fn build_stages(&self, order: &[usize]) -> Result<()> {
        let mut left: Vec<usize> = order.to_vec();
        while !left.is_empty() {
            let done: Vec<usize> = self.done.lock().unwrap_or_else(|e| e.into_inner()).keys().copied().collect();
            let mut ready = Vec::new();
            for &i in &left {
                if self.deps(i)?.iter().all(|d| done.contains(d)) {
                    ready.push(i);
                }
            }
            left.retain(|i| !ready.contains(i));
            let results: Vec<Result<()>> = std::thread::scope(|s| {
                let handles: Vec<_> = ready.iter().map(|&i| s.spawn(move || self.build_stage(i))).collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| Err(Error::Invalid("a build thread panicked".into()))))
                    .collect()
            });
            results.into_iter().collect::<Result<Vec<()>>>()?;
        }
        Ok(())
    }

    fn build_stage(&self, index: usize) -> Result<()> {
        let stage = &self.df.stages[index];
        let mut state = self.from(stage)?;
        // Only an image's triggers run (a stage's ONBUILD is for images
        // built FROM the result).
        let from_image = self.stage_ref(&self.base_of(stage)?, index).is_none();
        let triggers = if from_image { self.onbuild_triggers(stage, &mut state)? } else { Vec::new() };
        for (trigger, ins) in triggers {
            let label = format!("[{}1/{}] ONBUILD {trigger}", stage_label(stage), stage.instructions.len() + 1);
            self.dispatch(stage, &mut state, &ins, &label)?;
        }
        let total = stage.instructions.len() + 1;
        for (i, ins) in stage.instructions.iter().enumerate() {
            let label = format!("[{}{}/{}] {}", stage_label(stage), i + 2, total, ins.original);
            self.dispatch(stage, &mut state, ins, &label)?;
        }
        self.done.lock().unwrap_or_else(|e| e.into_inner()).insert(index, state);
        Ok(())
    }

    /// The base image's ONBUILD triggers, run before the stage's own
    /// instructions; the new image does not inherit them (as docker).
    fn onbuild_triggers(&self, stage: &Stage, state: &mut State) -> Result<Vec<(String, Located<Instruction>)>> {
        let Some(triggers) = state.config["config"]["OnBuild"].as_array().cloned() else { return Ok(Vec::new()) };
        state.cfg().insert("OnBuild".into(), Value::Null);
        let mut out = Vec::new();
        for t in triggers.iter().filter_map(Value::as_str) {
            let mut ins = crate::parse::parse_trigger(t)
                .map_err(|e| self.step_err(stage.line, &stage.original, format!("ONBUILD {t}: {}", e.message)))?;
            ins.line = stage.line;
            out.push((t.to_string(), ins));
        }
        Ok(out)
    }

    fn step_err(&self, line: usize, original: &str, message: impl std::fmt::Display) -> Error {
        Error::Step {
            file: self.opts.file_name.clone(),
            line,
            instruction: original.to_string(),
            message: message.to_string(),
        }
    }

    /// FROM: a stage's result, scratch, or an image.
    fn from(&self, stage: &Stage) -> Result<State> {
        self.check_platform(stage)?;
        let base = self.base_of(stage)?;
        let n = self.progress.step(&format!(
            "[{}1/{}] {}",
            stage_label(stage),
            stage.instructions.len() + 1,
            stage.original
        ));
        if let Some(i) = self.stage_ref(&base, stage.index) {
            let mut s = self
                .done
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&i)
                .cloned()
                .ok_or_else(|| self.step_err(stage.line, &stage.original, format!("stage {base} was not built")))?;
            s.args.clear();
            s.cmd_set = false;
            return Ok(s);
        }
        if base.eq_ignore_ascii_case("scratch") {
            let platform = berth_image::Platform::host();
            let mut s = State {
                config: json!({
                    "architecture": platform.architecture,
                    "os": platform.os,
                    "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
                    "rootfs": {"type": "layers", "diff_ids": []},
                    "history": [],
                }),
                layers: Vec::new(),
                key: cache::key(&["scratch"]),
                args: BTreeMap::new(),
                cmd_set: false,
            };
            s.cfg();
            return Ok(s);
        }
        let image = (self.resolve)(&base).map_err(|e| self.step_err(stage.line, &stage.original, e))?;
        let config: Value = serde_json::from_slice(&self.store.content.read(&image.record.id)?)
            .map_err(|e| self.step_err(stage.line, &stage.original, e))?;
        self.progress.line(n, &format!("resolved {base} to {}", image.record.id));
        let mut s = State {
            config,
            layers: image.record.layers.clone(),
            key: cache::key(&["image", &image.record.id.to_string()]),
            args: BTreeMap::new(),
            cmd_set: false,
        };
        if s.env_get("PATH").is_none() {
            s.set_env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        }
        Ok(s)
    }

    /// A variable's value at this point: ENV wins over ARG.
    fn lookup<'s>(&self, state: &'s State) -> impl Fn(&str) -> Option<String> + 's {
        move |name: &str| state.env_get(name).or_else(|| state.args.get(name).cloned())
    }

    fn ex(&self, state: &State, ins: &Located<Instruction>, word: &str) -> Result<String> {
        expand(word, self.lookup(state), self.df.escape).map_err(|e| self.step_err(ins.line, &ins.original, e))
    }

    fn history(&self, state: &State, created_by: &str, empty: bool) -> Value {
        let created = match self.opts.source_date_epoch {
            Some(e) => json!(rfc3339(e)),
            None if empty => state.last_created(),
            None => json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)),
        };
        let mut h = json!({"created": created, "created_by": created_by, "comment": "buildkit.dockerfile.v0"});
        if created.is_null() {
            h.as_object_mut().map(|o| o.remove("created"));
        }
        if empty {
            h["empty_layer"] = json!(true);
        }
        h
    }

    /// An instruction that only changes the config.
    fn meta_step(&self, state: &mut State, ins: &Located<Instruction>, expanded: &str) {
        state.key = cache::key(&[&state.key.to_string(), &ins.original, expanded]);
        let h = self.history(state, &ins.original, true);
        state.push_history(h);
    }

    fn dispatch(&self, stage: &Stage, state: &mut State, ins: &Located<Instruction>, label: &str) -> Result<()> {
        let err = |m: String| self.step_err(ins.line, &ins.original, m);
        match &ins.inner {
            Instruction::Run(r) => {
                if r.security.as_deref().is_some_and(|s| s != "sandbox") {
                    return Err(err("RUN --security=insecure is not supported".into()));
                }
                self.run_step(stage, state, ins, r, label)?;
            }
            Instruction::Copy(c) => {
                unsupported_copy_flags(c).map_err(err)?;
                self.copy_step(stage, state, ins, c, None, label)?
            }
            Instruction::Add(a) => {
                let git = |s: &String| s.starts_with("git@") || s.starts_with("git://") || s.ends_with(".git");
                if a.copy.sources.iter().any(|s| git(s) || (s.contains("://") && !fetch::is_url(s))) {
                    return Err(err(
                        "ADD from a git repository (or a URL other than http/https) is not supported yet".into()
                    ));
                }
                unsupported_copy_flags(&a.copy).map_err(err)?;
                self.copy_step(stage, state, ins, &a.copy, Some(a.checksum.as_deref()), label)?
            }
            Instruction::Workdir(w) => {
                let n = self.progress.step(label);
                let w = self.ex(state, ins, w)?;
                let cur = state.str_field("WorkingDir");
                let dir = if w.starts_with('/') {
                    w
                } else {
                    format!("{}/{w}", if cur.is_empty() { "" } else { cur.trim_end_matches('/') })
                };
                let dir = format!("/{}", crate::context::clean_source(&dir).unwrap_or_default());
                state.cfg().insert("WorkingDir".into(), json!(dir));
                let key = cache::key(&[&state.key.to_string(), "WORKDIR", &dir]);
                self.layer_step(state, key, &format!("WORKDIR {dir}"), n, |fs| {
                    let root = rustix::fs::open(
                        &fs.rootfs,
                        rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
                        rustix::fs::Mode::empty(),
                    )
                    .map_err(|e| Error::Io { context: format!("open {}", fs.rootfs.display()), source: e.into() })?;
                    berth_fs::mkdir_all_in(
                        std::os::fd::AsFd::as_fd(&root),
                        &berth_fs::CleanPath::new(dir.as_bytes()).0,
                    )
                    .map_err(|e| Error::Io { context: format!("create {dir}"), source: e })?;
                    Ok(())
                })?;
            }
            Instruction::Env(pairs) => {
                let mut shown = Vec::new();
                for (k, v) in pairs {
                    let k = self.ex(state, ins, k)?;
                    let v = self.ex(state, ins, v)?;
                    shown.push(format!("{k}={v}"));
                    state.set_env(&k, &v);
                }
                self.meta_step(state, ins, &shown.join(" "));
            }
            Instruction::Arg(decls) => {
                let mut shown = Vec::new();
                for d in decls {
                    let value = match self.opts.build_args.get(&d.name) {
                        Some(v) => Some(v.clone()),
                        None => match &d.default {
                            Some(def) => Some(self.ex(state, ins, def)?),
                            // A bare ARG re-declares a meta ARG (or a
                            // platform arg).
                            None => (self.meta_lookup())(&d.name),
                        },
                    };
                    if let Some(v) = value {
                        shown.push(format!("{}={v}", d.name));
                        state.args.insert(d.name.clone(), v);
                    }
                }
                // No history entry (as BuildKit); the key sees the values.
                state.key = cache::key(&[&state.key.to_string(), &ins.original, &shown.join(" ")]);
            }
            Instruction::User(u) => {
                let u = self.ex(state, ins, u)?;
                state.cfg().insert("User".into(), json!(u));
                self.meta_step(state, ins, &u);
            }
            Instruction::Expose(ports) => {
                let mut all = state.config["config"]["ExposedPorts"].as_object().cloned().unwrap_or_default();
                for p in ports {
                    for w in expand_words(p, self.lookup(state), self.df.escape).map_err(|e| err(e.to_string()))? {
                        let p = if w.contains('/') { w.to_lowercase() } else { format!("{w}/tcp") };
                        all.insert(p, json!({}));
                    }
                }
                let shown = all.keys().cloned().collect::<Vec<_>>().join(" ");
                state.cfg().insert("ExposedPorts".into(), Value::Object(all));
                self.meta_step(state, ins, &shown);
            }
            Instruction::Volume(vols) => {
                let mut all = state.config["config"]["Volumes"].as_object().cloned().unwrap_or_default();
                for v in vols {
                    for w in expand_words(v, self.lookup(state), self.df.escape).map_err(|e| err(e.to_string()))? {
                        all.insert(w, json!({}));
                    }
                }
                let shown = all.keys().cloned().collect::<Vec<_>>().join(" ");
                state.cfg().insert("Volumes".into(), Value::Object(all));
                self.meta_step(state, ins, &shown);
            }
            Instruction::Label(pairs) => {
                let mut shown = Vec::new();
                for (k, v) in pairs {
                    let (k, v) = (self.ex(state, ins, k)?, self.ex(state, ins, v)?);
                    shown.push(format!("{k}={v}"));
                    set_label(state, &k, &v);
                }
                self.meta_step(state, ins, &shown.join(" "));
            }
            Instruction::Entrypoint(c) => {
                let argv = command_argv(c, &state.shell());
                state.cfg().insert("Entrypoint".into(), json!(argv));
                if !state.cmd_set {
                    // docker: an ENTRYPOINT drops a CMD inherited from the base.
                    state.cfg().insert("Cmd".into(), Value::Null);
                }
                self.meta_step(state, ins, &serde_json::to_string(&argv).unwrap_or_default());
            }
            Instruction::Cmd(c) => {
                let argv = command_argv(c, &state.shell());
                state.cfg().insert("Cmd".into(), json!(argv));
                state.cmd_set = true;
                self.meta_step(state, ins, &serde_json::to_string(&argv).unwrap_or_default());
            }
            Instruction::Shell(sh) => {
                state.cfg().insert("Shell".into(), json!(sh));
                self.meta_step(state, ins, &sh.join(" "));
            }
            Instruction::Healthcheck(h) => {
                let v = healthcheck(h, &state.shell());
                state.cfg().insert("Healthcheck".into(), v.clone());
                self.meta_step(state, ins, &v.to_string());
            }
            Instruction::Stopsignal(s) => {
                let s = self.ex(state, ins, s)?;
                state.cfg().insert("StopSignal".into(), json!(s));
                self.meta_step(state, ins, &s);
            }
            Instruction::Onbuild(o) => {
                let mut all = state.config["config"]["OnBuild"].as_array().cloned().unwrap_or_default();
                all.push(json!(o.trigger));
                state.cfg().insert("OnBuild".into(), Value::Array(all));
                self.meta_step(state, ins, &o.trigger);
            }
            Instruction::Maintainer(m) => {
                state.config["author"] = json!(m);
                self.meta_step(state, ins, m);
            }
        }
        Ok(())
    }

    fn next_dir(&self) -> String {
        let mut n = self.seq.lock().unwrap_or_else(|e| e.into_inner());
        *n += 1;
        format!("s{}", *n)
    }

    /// A step that may make a layer: from the cache, else `f` on a fresh
    /// overlay, committed.
    fn layer_step(
        &self,
        state: &mut State,
        key: Digest,
        created_by: &str,
        n: usize,
        f: impl FnOnce(&step::StepFs) -> Result<()>,
    ) -> Result<()> {
        // A layer made with SOURCE_DATE_EPOCH has other times in it.
        let key = match self.opts.source_date_epoch {
            Some(e) => cache::key(&[&key.to_string(), &format!("SOURCE_DATE_EPOCH={e}")]),
            None => key,
        };
        if !self.opts.no_cache
            && let Some(hit) = cache::get(self.store, &key)?
        {
            if let Some(l) = &hit.layer {
                step::ensure_snapshot(self.store, l, state.layers.last())?;
                state.layers.push(l.clone());
            }
            for (k, v) in hit.config.clone() {
                state.cfg().insert(k, v);
            }
            state.push_history(hit.history);
            state.key = key;
            self.progress.line(n, "CACHED");
            return Ok(());
        }
        let mut fs = step::StepFs::mount(self.store, self.work.path(), &self.next_dir(), &state.layers)?;
        f(&fs)?;
        fs.unmount()?;
        let layer = if fs.changed()? {
            Some(step::commit(self.store, &fs, &state.layers, self.opts.source_date_epoch)?)
        } else {
            None
        };
        let history = self.history(state, created_by, layer.is_none());
        let mut config = Map::new();
        if created_by.starts_with("WORKDIR ") {
            config.insert("WorkingDir".into(), state.config["config"]["WorkingDir"].clone());
        }
        let entry = cache::Entry { layer: layer.clone(), history: history.clone(), config };
        cache::put(self.store, &key, &entry)?;
        if let Some(l) = layer {
            state.layers.push(l);
        }
        state.push_history(history);
        state.key = key;
        Ok(())
    }

    fn run_step(
        &self,
        stage: &Stage,
        state: &mut State,
        ins: &Located<Instruction>,
        r: &crate::ast::Run,
        label: &str,
    ) -> Result<()> {
        let n = self.progress.step(label);
        let shell = state.shell();
        let argv = match (&r.command, r.heredocs.as_slice()) {
            (Command::Shell(s), [h]) if s.trim().starts_with("<<") && !s.trim().contains(' ') => {
                let mut a = shell.clone();
                a.push(h.body.clone());
                a
            }
            (Command::Shell(s), hs) if !hs.is_empty() => {
                let mut script = s.clone();
                for h in hs {
                    script.push('\n');
                    script.push_str(&h.body);
                    script.push_str(&h.name);
                }
                let mut a = shell.clone();
                a.push(script);
                a
            }
            (c, _) => command_argv(c, &shell),
        };
        // The args in scope are the step's environment (ENV wins), and
        // part of its key and history, as docker records them.
        let args: Vec<(String, String)> = state
            .args
            .iter()
            .filter(|(k, _)| state.env_get(k).is_none() && !PREDEFINED_ARGS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut env = state.env();
        for (k, v) in &args {
            env.push(format!("{k}={v}"));
        }
        // The proxies change no result: not in the key (as docker).
        let env_key = format!("{env:?}");
        for p in PREDEFINED_ARGS {
            if let Some(v) = self.opts.build_args.get(p) {
                env.push(format!("{p}={v}"));
            }
        }
        let shown_args = if args.is_empty() {
            String::new()
        } else {
            format!("|{} {} ", args.len(), args.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "))
        };
        let created_by = format!("RUN {shown_args}{}", argv.join(" "));
        let network = match r.network {
            Some(NetworkMode::None) => "none",
            Some(NetworkMode::Host) => "host",
            Some(NetworkMode::Default) | None => self.opts.network.as_str(),
        };
        let (mounts, _mounted, bound) = self.run_mounts(stage, state, ins, r)?;
        let mount_key = format!("{:?} {bound}", r.mounts);
        let key = cache::key(&[&state.key.to_string(), &created_by, network, &mount_key, &env_key]);
        let user = state.str_field("User");
        let workdir = state.str_field("WorkingDir");
        let engine = self.engine;
        let quiet = self.opts.quiet;
        let state_root = self.work.runtime_root();
        let bundle_base = self.work.path().to_path_buf();
        let bundle_name = self.next_dir();
        self.layer_step(state, key, &created_by, n, |fs| {
            let targets = run::mount_targets(&mounts);
            let missing = run::missing_in(&fs.rootfs, &targets);
            let out = || -> Option<std::process::Stdio> {
                if quiet {
                    None
                } else {
                    std::os::fd::AsFd::as_fd(&std::io::stderr())
                        .try_clone_to_owned()
                        .ok()
                        .map(std::process::Stdio::from)
                }
            };
            let p = run::Process {
                argv: argv.clone(),
                env,
                user,
                workdir,
                network,
                mounts: mounts.clone(),
                output: out(),
                output_err: out(),
            };
            let bundle = bundle_base.join(format!("{bundle_name}-bundle"));
            let res = run::run(engine, &state_root, &bundle, &fs.rootfs, p);
            let _ = berth_image::snapshot::remove_tree(&bundle);
            res?;
            step::remove_stubs(&fs.upper, &missing);
            Ok(())
        })
    }

    /// RUN --mount: cache dirs under the root, tmpfs, binds from the
    /// context or a stage, secrets.
    fn run_mounts(
        &self,
        stage: &Stage,
        state: &State,
        ins: &Located<Instruction>,
        r: &crate::ast::Run,
    ) -> Result<(Vec<berth_engine::spec::ResolvedMount>, Vec<step::Held>, String)> {
        use berth_engine::spec::ResolvedMount;
        let err = |m: String| self.step_err(ins.line, &ins.original, m);
        let mut out = Vec::new();
        // Stages' rootfs mounted for binds, kept until the step is done.
        let mut mounted = Vec::new();
        // What the binds read, for the cache key.
        let mut bound = String::new();
        for m in &r.mounts {
            let target = m.target.as_deref().map(|t| self.ex(state, ins, t)).transpose()?;
            match m.kind {
                MountKind::Cache => {
                    let target = target.ok_or_else(|| err("a cache mount needs a target".into()))?;
                    let id = m.id.clone().unwrap_or_else(|| target.clone());
                    let dir = self.engine.root.join("build-cache-mounts").join(Digest::of(id.as_bytes()).hex());
                    step::cache_dir(&dir, m.uid.unwrap_or(0), m.gid.unwrap_or(0), m.mode.unwrap_or(0o755))
                        .map_err(|e| err(e.to_string()))?;
                    if m.sharing == crate::ast::Sharing::Locked {
                        // One step at a time uses it (across builds too).
                        mounted.push(step::Held::Lock(step::lock(&dir).map_err(|e| err(e.to_string()))?));
                    }
                    out.push(ResolvedMount::Bind { source: dir, target, readonly: m.readonly, propagation: None });
                }
                MountKind::Tmpfs => {
                    let target = target.ok_or_else(|| err("a tmpfs mount needs a target".into()))?;
                    let options = m.size.map(|s| vec![format!("size={s}")]).unwrap_or_default();
                    out.push(ResolvedMount::Tmpfs { target, options });
                }
                MountKind::Secret => {
                    let id =
                        m.id.clone().or_else(|| target.as_deref().and_then(|t| t.rsplit('/').next().map(String::from)));
                    let id = id.ok_or_else(|| err("a secret mount needs an id".into()))?;
                    let target = target.unwrap_or_else(|| format!("/run/secrets/{id}"));
                    match self.opts.secrets.get(&id) {
                        Some(src) => out.push(ResolvedMount::Bind {
                            source: src.clone(),
                            target,
                            readonly: true,
                            propagation: None,
                        }),
                        None if m.required => {
                            return Err(err(format!("secret {id}: not provided (--secret id={id},src=FILE)")));
                        }
                        None => {}
                    }
                }
                MountKind::Bind => {
                    let target = target.ok_or_else(|| err("a bind mount needs a target".into()))?;
                    let src = m.source.as_deref().map(|s| self.ex(state, ins, s)).transpose()?.unwrap_or_default();
                    let src = crate::context::clean_source(&src).map_err(err)?;
                    let root = match &m.from {
                        Some(f) => {
                            let (layers, key) = self.layers_of(f, stage.index).map_err(|e| err(e.to_string()))?;
                            let ro = step::ReadOnly::mount(self.store, self.work.path(), &self.next_dir(), &layers)?;
                            bound.push_str(&format!("{key} {src}\n"));
                            let root = ro.path.clone();
                            mounted.push(step::Held::Mount(ro));
                            root
                        }
                        None => {
                            let h = hash_sources(
                                self.ctx.fd(),
                                self.ctx.root(),
                                std::slice::from_ref(&src),
                                Some(self.ctx.ignore()),
                            )
                            .map_err(|e| err(e.to_string()))?;
                            bound.push_str(&format!("context {src} {h}\n"));
                            self.ctx.root().to_path_buf()
                        }
                    };
                    let source = root.join(&src);
                    // Resolved here and checked to stay in the context.
                    let real = source.canonicalize().map_err(|e| err(format!("{src}: {e}")))?;
                    let base = root.canonicalize().map_err(|e| err(format!("{}: {e}", root.display())))?;
                    if !real.starts_with(&base) {
                        return Err(err(format!("{src}: outside the build context")));
                    }
                    out.push(ResolvedMount::Bind { source: real, target, readonly: m.readonly, propagation: None });
                }
                MountKind::Ssh => return Err(err("RUN --mount=type=ssh is not supported yet".into())),
            }
        }
        Ok((out, mounted, bound))
    }

    /// The layers (and cache key) of a stage (by name or index, before
    /// `before`) or of an image.
    fn layers_of(&self, name: &str, before: usize) -> Result<(Vec<LayerRecord>, String)> {
        match self.stage_ref(name, before) {
            Some(i) => {
                let s = self.done.lock().unwrap_or_else(|e| e.into_inner()).get(&i).cloned();
                let s = s.ok_or_else(|| Error::Invalid(format!("stage {name} was not built")))?;
                Ok((s.layers, s.key.to_string()))
            }
            None => {
                let img = (self.resolve)(name)?;
                Ok((img.record.layers.clone(), img.record.id.to_string()))
            }
        }
    }

    fn copy_step(
        &self,
        stage: &Stage,
        state: &mut State,
        ins: &Located<Instruction>,
        c: &crate::ast::Copy,
        // ADD, with its --checksum.
        add: Option<Option<&str>>,
        label: &str,
    ) -> Result<()> {
        let checksum = add.flatten();
        let add = add.is_some();
        let n = self.progress.step(label);
        let err = |m: String| self.step_err(ins.line, &ins.original, m);
        let mut sources = Vec::new();
        for s in &c.sources {
            sources.push(self.ex(state, ins, s)?);
        }
        let dest_raw = self.ex(state, ins, &c.dest)?;
        let workdir = state.str_field("WorkingDir");
        let dest = if dest_raw.starts_with('/') {
            dest_raw.clone()
        } else {
            format!("{}/{dest_raw}", if workdir.is_empty() { "" } else { workdir.trim_end_matches('/') })
        };
        let chmod = c.chmod.as_deref().map(|m| self.ex(state, ins, m)).transpose()?;
        let chmod = chmod.as_deref().map(copy::parse_chmod).transpose()?;
        let chown = c.chown.as_deref().map(|m| self.ex(state, ins, m)).transpose()?;
        // The source tree: the context, a heredoc's files, or a stage's
        // (or an image's) rootfs, mounted read-only for the copy.
        let heredoc_dir;
        let _from_fs;
        let urls = add && sources.iter().any(|s| fetch::is_url(s));
        let (root_path, ignore, from_key): (PathBuf, Option<&crate::ignore::Ignore>, String) = if urls {
            if !sources.iter().all(|s| fetch::is_url(s)) || c.from.is_some() {
                return Err(err("ADD cannot mix URLs with other sources".into()));
            }
            heredoc_dir = tempfile::tempdir_in(self.work.path()).map_err(|e| err(e.to_string()))?;
            let mut names = Vec::new();
            for url in &sources {
                let (path, _digest) =
                    fetch::fetch(url, heredoc_dir.path(), checksum).map_err(|e| err(e.to_string()))?;
                names.push(path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            }
            sources = names;
            (heredoc_dir.path().to_path_buf(), None, "url".into())
        } else if !c.heredocs.is_empty() {
            heredoc_dir = tempfile::tempdir_in(self.work.path()).map_err(|e| err(e.to_string()))?;
            for h in &c.heredocs {
                let body = if h.expand { self.ex(state, ins, &h.body)? } else { h.body.clone() };
                std::fs::write(heredoc_dir.path().join(&h.name), body).map_err(|e| err(e.to_string()))?;
                sources.push(h.name.clone());
            }
            (heredoc_dir.path().to_path_buf(), None, "heredoc".into())
        } else if let Some(f) = &c.from {
            let f = self.ex(state, ins, f)?;
            let (layers, key) = self.layers_of(&f, stage.index).map_err(|e| err(e.to_string()))?;
            let fs = step::ReadOnly::mount(self.store, self.work.path(), &self.next_dir(), &layers)?;
            let p = fs.path.clone();
            _from_fs = fs;
            (p, None, key)
        } else {
            (self.ctx.root().to_path_buf(), Some(self.ctx.ignore()), String::new())
        };
        let root = rustix::fs::open(
            &root_path,
            rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| err(format!("open {}: {e}", root_path.display())))?;
        let root_fd = std::os::fd::AsFd::as_fd(&root);
        let mut selected = Vec::new();
        let mut many = sources.len() > 1;
        for s in &sources {
            let found = select(root_fd, &root_path, s, ignore).map_err(|e| err(e.to_string()))?;
            many |= found.len() > 1 || s.contains(['*', '?', '[']);
            selected.extend(found);
        }
        let content = if from_key.is_empty() || from_key == "heredoc" || from_key == "url" {
            hash_sources(root_fd, &root_path, &selected, ignore)?
        } else {
            format!("{from_key} {}", selected.join(" "))
        };
        let created_by = format!("{} {} {dest}", if add { "ADD" } else { "COPY" }, selected.join(" "));
        let key = cache::key(&[&state.key.to_string(), &created_by, &content, &format!("{chown:?} {chmod:?}")]);
        self.progress.line(n, &format!("transferring {}", selected.join(" ")));
        let src = copy::Source { root: root_fd, shown: &root_path, ignore };
        self.layer_step(state, key, &created_by, n, |fs| {
            let owner = match &chown {
                Some(spec) => copy::resolve_chown(&fs.rootfs, spec)?,
                None => (0, 0),
            };
            // A downloaded archive is added as it is (docker unpacks local ones only).
            let op = copy::CopyOp { sources: &selected, many, dest: dest.clone(), owner, chmod, extract: add && !urls };
            copy::copy(&src, &op, &fs.rootfs)
        })
        .map_err(|e| match e {
            Error::Step { .. } => e,
            e => err(e.to_string()),
        })
    }

    /// The image: config with the layers' diff IDs, a manifest, the record
    /// and its tags.
    fn write_image(&self, mut state: State) -> Result<Built> {
        for (k, v) in &self.opts.labels {
            set_label(&mut state, k, v);
        }
        let diff_ids: Vec<String> = state.layers.iter().map(|l| l.diff_id.to_string()).collect();
        state.config["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
        let created = match self.opts.source_date_epoch {
            Some(e) => json!(rfc3339(e)),
            None => state.last_created(),
        };
        if !created.is_null() {
            state.config["created"] = created;
        }
        let config = serde_json::to_vec(&state.config).map_err(|e| Error::Invalid(format!("image config: {e}")))?;
        let config_digest = self.store.content.write_bytes(None, &config)?;
        let layers: Vec<Value> = state
            .layers
            .iter()
            .map(|l| json!({"mediaType": l.media_type, "digest": l.digest.to_string(), "size": l.size}))
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": berth_image::media::OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest.to_string(), "size": config.len()},
            "layers": layers,
        });
        let manifest = serde_json::to_vec(&manifest).map_err(|e| Error::Invalid(format!("manifest: {e}")))?;
        let manifest_digest = self.store.content.write_bytes(None, &manifest)?;
        let record = ImageRecord {
            id: config_digest.clone(),
            manifest: manifest_digest,
            manifest_media_type: berth_image::media::OCI_MANIFEST.into(),
            index: None,
            config_media_type: OCI_CONFIG.into(),
            layers: state.layers.clone(),
            platform: format!(
                "{}/{}",
                state.config["os"].as_str().unwrap_or("linux"),
                state.config["architecture"].as_str().unwrap_or("amd64")
            ),
            created: state.config["created"].as_str().map(String::from),
            size: state.layers.iter().map(|l| self.store.snapshots.size(&l.chain_id)).sum(),
        };
        let mut tags = Vec::new();
        for t in &self.opts.tags {
            let r = berth_image::Reference::parse(t).map_err(|e| Error::Invalid(format!("invalid tag {t:?}: {e}")))?;
            tags.push(r.to_string());
        }
        self.store.meta.write(|tx| {
            tx.put_image(&record)?;
            for t in &tags {
                tx.set_tag(t, &record.id)?;
            }
            Ok(())
        })?;
        let n = self.progress.step("exporting to image");
        self.progress.line(n, &format!("writing image {config_digest} done"));
        for t in &tags {
            self.progress.line(n, &format!("naming to {t} done"));
        }
        Ok(Built { id: config_digest, record })
    }
}

const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

fn rfc3339(epoch: i64) -> String {
    chrono::DateTime::from_timestamp(epoch, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

/// BuildKit's automatic platform args, for this machine (build and target
/// platforms are the same: berth does not cross-build).
fn platform_arg(name: &str) -> Option<String> {
    let p = berth_image::Platform::host();
    let field = name.strip_prefix("TARGET").or_else(|| name.strip_prefix("BUILD"))?;
    match field {
        "PLATFORM" => Some(p.to_string()),
        "OS" => Some(p.os.clone()),
        "ARCH" => Some(p.architecture.clone()),
        "VARIANT" => Some(p.variant.clone().unwrap_or_default()),
        _ => None,
    }
}

fn stage_label(stage: &Stage) -> String {
    match &stage.name {
        Some(n) => format!("{n} "),
        None => format!("stage-{} ", stage.index),
    }
}

fn set_label(state: &mut State, k: &str, v: &str) {
    let mut labels = state.config["config"]["Labels"].as_object().cloned().unwrap_or_default();
    labels.insert(k.to_string(), json!(v));
    state.cfg().insert("Labels".into(), Value::Object(labels));
}

/// COPY/ADD flags berth does not carry out yet: refused rather than
/// silently giving another layout. (`--link` only changes how BuildKit
/// stores the layer, not what it holds: accepted.)
fn unsupported_copy_flags(c: &crate::ast::Copy) -> Result<(), String> {
    if c.parents {
        return Err("--parents is not supported yet".into());
    }
    if !c.exclude.is_empty() {
        return Err("--exclude is not supported yet".into());
    }
    Ok(())
}

/// RUN/CMD/ENTRYPOINT's argv: the exec form as is, the shell form through
/// the stage's SHELL.
fn command_argv(c: &Command, shell: &[String]) -> Vec<String> {
    match c {
        Command::Exec(v) => v.clone(),
        Command::Shell(s) => {
            let mut a = shell.to_vec();
            a.push(s.clone());
            a
        }
    }
}

fn healthcheck(h: &Healthcheck, shell: &[String]) -> Value {
    let _ = shell;
    match h {
        Healthcheck::None => json!({"Test": ["NONE"]}),
        Healthcheck::Check { command, interval, timeout, start_period, start_interval, retries } => {
            let test: Vec<String> = match command {
                Command::Exec(v) => std::iter::once("CMD".to_string()).chain(v.iter().cloned()).collect(),
                Command::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
            };
            let mut v = json!({"Test": test});
            let ns = |d: &Option<std::time::Duration>| d.map(|d| d.as_nanos() as u64);
            for (k, d) in [
                ("Interval", interval),
                ("Timeout", timeout),
                ("StartPeriod", start_period),
                ("StartInterval", start_interval),
            ] {
                if let Some(n) = ns(d) {
                    v[k] = json!(n);
                }
            }
            if let Some(r) = retries {
                v["Retries"] = json!(r);
            }
            v
        }
    }
}
