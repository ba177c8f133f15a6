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
mod image;
mod layers;
pub mod run;
mod state;
pub mod step;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use berth_engine::engine::Engine;
use berth_image::Digest;
use berth_image::store::Store;
use berth_image::store::meta::ImageRecord;
use serde_json::{Map, Value, json};

use crate::ast::{Dockerfile, Instruction, Located, Stage};
use crate::cache;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::parse::{expand, expand_words};
use layers::unsupported_copy_flags;
use state::{State, command_argv, healthcheck, rfc3339, set_label};

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
                from_not_expanded(c.from.as_deref(), self.df.escape).map_err(err)?;
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
                // Cleaned as a path in the rootfs: `..` stops at its root.
                let clean = berth_fs::CleanPath::new(dir.as_bytes());
                let dir = if clean.is_root() { "/".to_string() } else { format!("/{}", clean.display()) };
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
                let v = healthcheck(h);
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
}

/// `COPY --from` is never expanded: BuildKit refuses a value expansion
/// would change (the stage graph is known before any ARG has a value).
fn from_not_expanded(from: Option<&str>, escape: char) -> Result<(), String> {
    let Some(f) = from else { return Ok(()) };
    match expand(f, |_| None, escape) {
        Ok(e) if e == f => Ok(()),
        _ => Err("variable expansion is not supported for --from, define a new stage with FROM using ARG from global \
                  scope as a workaround"
            .into()),
    }
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
