//! The instructions that make layers: RUN (its command, network and
//! mounts) and COPY/ADD (sources from the context, a stage, an image, a
//! heredoc or a URL), each through [`Builder::layer_step`].

use std::path::PathBuf;

use berth_image::Digest;
use berth_image::store::meta::LayerRecord;

use super::state::{State, command_argv};
use super::{Builder, PREDEFINED_ARGS, copy, fetch, run, step};
use crate::ast::{Command, Instruction, Located, MountKind, NetworkMode, Stage};
use crate::cache;
use crate::context::{hash_sources, select};
use crate::error::{Error, Result};

impl Builder<'_> {
    pub(super) fn run_step(
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

    pub(super) fn copy_step(
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
}

/// COPY/ADD flags berth does not carry out yet: refused rather than
/// silently giving another layout. (`--link` only changes how BuildKit
/// stores the layer, not what it holds: accepted.)
pub(super) fn unsupported_copy_flags(c: &crate::ast::Copy) -> Result<(), String> {
    if c.parents {
        return Err("--parents is not supported yet".into());
    }
    if !c.exclude.is_empty() {
        return Err("--exclude is not supported yet".into());
    }
    Ok(())
}
