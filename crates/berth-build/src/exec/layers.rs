//! The instructions that make layers: RUN (its command, network and
//! mounts) and COPY/ADD (sources from the context, a stage, an image, a
//! heredoc or a URL), each through [`Builder::layer_step`].

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use berth_image::Digest;
use berth_image::store::meta::LayerRecord;

use super::state::{State, command_argv};
use super::{Builder, PREDEFINED_ARGS, copy, fetch, run, step};
use crate::ast::{Command, Instruction, Located, MountKind, NetworkMode, Stage};
use crate::cache;
use crate::context::{hash_sources, select};
use crate::error::{Error, Result};
use crate::parse::expand_heredoc;

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
        let err = |m: String| self.step_err(ins.line, &ins.original, m);
        let shell = state.shell();
        // A `#!` script's file (BuildKit mounts it on /dev/pipes), kept
        // until the step is done.
        let mut script = None;
        let argv = match (&r.command, single_heredoc(r)) {
            (Command::Shell(_), Some(h)) if h.body.starts_with("#!") => {
                let dir = tempfile::tempdir_in(self.work.path()).map_err(|e| err(e.to_string()))?;
                // Readable by the step's user, whoever it is.
                std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))
                    .map_err(|e| err(e.to_string()))?;
                copy::write_heredoc(dir.path(), &h.name, h.body.as_bytes(), 0o755).map_err(|e| err(e.to_string()))?;
                let mut a = shell.clone();
                a.push(format!("{PIPES}/{}", h.name));
                script = Some(dir);
                a
            }
            (Command::Shell(_), Some(h)) => {
                let mut a = shell.clone();
                a.push(h.body.clone());
                a
            }
            (Command::Shell(s), None) if !r.heredocs.is_empty() => {
                // The line and the bodies as a real shell heredoc.
                let mut full = s.clone();
                for h in &r.heredocs {
                    full.push('\n');
                    full.push_str(&h.body);
                    full.push_str(&h.name);
                }
                let mut a = shell.clone();
                a.push(full);
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
        let (mut mounts, _mounted, bound) = self.run_mounts(stage, state, ins, r)?;
        if let Some(dir) = &script {
            mounts.push(berth_engine::spec::ResolvedMount::Bind {
                source: dir.path().to_path_buf(),
                target: PIPES.into(),
                readonly: true,
                propagation: None,
            });
        }
        // The bodies are not all in the command (a `#!` script is a file).
        let bodies: Vec<&str> = r.heredocs.iter().map(|h| h.body.as_str()).collect();
        let mount_key = format!("{:?} {bound} {bodies:?}", r.mounts);
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
                    let dir = self.engine.root.join(crate::api::CACHE_MOUNTS_DIR).join(Digest::of(id.as_bytes()).hex());
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
        let urls = add && sources.iter().any(|s| fetch::is_url(s));
        // The source trees, as BuildKit adds them: the named sources (from
        // the context, URLs, a stage or an image), then the heredocs' files.
        let mut trees = Vec::new();
        if !sources.is_empty() {
            trees.push(self.source_tree(stage, ins, c, &sources, urls, checksum)?);
        }
        if !c.heredocs.is_empty() {
            trees.push(self.heredoc_tree(state, ins, &c.heredocs)?);
        }
        let mut many = sources.len() + c.heredocs.len() > 1;
        let mut content = String::new();
        for t in &mut trees {
            let fd = t.root.as_fd();
            for s in &t.names {
                let found = select(fd, &t.path, s, t.ignore).map_err(|e| err(e.to_string()))?;
                many |= found.len() > 1 || s.contains(['*', '?', '[']);
                t.selected.extend(found);
            }
            let hashed = match &t.key {
                None => hash_sources(fd, &t.path, &t.selected, t.ignore)?,
                Some(k) => format!("{k} {}", t.selected.join(" ")),
            };
            content.push_str(&hashed);
            content.push('\n');
        }
        let selected: Vec<String> = trees.iter().flat_map(|t| t.selected.iter().cloned()).collect();
        let created_by = format!("{} {} {dest}", if add { "ADD" } else { "COPY" }, selected.join(" "));
        let key = cache::key(&[&state.key.to_string(), &created_by, &content, &format!("{chown:?} {chmod:?}")]);
        self.progress.line(n, &format!("transferring {}", selected.join(" ")));
        self.layer_step(state, key, &created_by, n, |fs| {
            let owner = match &chown {
                Some(spec) => copy::resolve_chown(&fs.rootfs, spec)?,
                None => (0, 0),
            };
            for t in &trees {
                let src = copy::Source { root: t.fd(), shown: &t.path, ignore: t.ignore };
                // A downloaded archive is added as it is (docker unpacks
                // local ones only); a heredoc's file is never unpacked.
                let extract = add && !urls && !t.heredocs;
                let op = copy::CopyOp { sources: &t.selected, many, dest: dest.clone(), owner, chmod, extract };
                copy::copy(&src, &op, &fs.rootfs)?;
            }
            Ok(())
        })
        .map_err(|e| match e {
            Error::Step { .. } => e,
            e => err(e.to_string()),
        })
    }

    /// Where COPY/ADD's named sources come from: downloaded URLs, a stage's
    /// (or an image's) rootfs mounted read-only, or the context.
    fn source_tree(
        &self,
        stage: &Stage,
        ins: &Located<Instruction>,
        c: &crate::ast::Copy,
        sources: &[String],
        urls: bool,
        checksum: Option<&str>,
    ) -> Result<Tree<'_>> {
        let err = |m: String| self.step_err(ins.line, &ins.original, m);
        if urls {
            if !sources.iter().all(|s| fetch::is_url(s)) || c.from.is_some() {
                return Err(err("ADD cannot mix URLs with other sources".into()));
            }
            let dir = tempfile::tempdir_in(self.work.path()).map_err(|e| err(e.to_string()))?;
            let mut names = Vec::new();
            for url in sources {
                let (path, _digest) = fetch::fetch(url, dir.path(), checksum).map_err(|e| err(e.to_string()))?;
                names.push(path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            }
            return Tree::open(dir.path().to_path_buf(), names, None, None, Held::Dir { _dir: dir }, false)
                .map_err(err);
        }
        if let Some(f) = &c.from {
            // Never expanded: checked in dispatch.
            let (layers, key) = self.layers_of(f, stage.index).map_err(|e| err(e.to_string()))?;
            let fs = step::ReadOnly::mount(self.store, self.work.path(), &self.next_dir(), &layers)?;
            let p = fs.path.clone();
            return Tree::open(p, sources.to_vec(), None, Some(key), Held::Mount { _fs: fs }, false).map_err(err);
        }
        let ctx = self.ctx.root().to_path_buf();
        Tree::open(ctx, sources.to_vec(), Some(self.ctx.ignore()), None, Held::Nothing, false).map_err(err)
    }

    /// The heredocs' bodies as files (each named after its heredoc, in a
    /// directory of the step's own); bodies with an unquoted delimiter
    /// expanded as BuildKit does (quotes kept).
    fn heredoc_tree(
        &self,
        state: &State,
        ins: &Located<Instruction>,
        docs: &[crate::ast::Heredoc],
    ) -> Result<Tree<'_>> {
        let err = |m: String| self.step_err(ins.line, &ins.original, m);
        let dir = tempfile::tempdir_in(self.work.path()).map_err(|e| err(e.to_string()))?;
        let mut names = Vec::new();
        for h in docs {
            let body = if h.expand {
                expand_heredoc(&h.body, self.lookup(state)).map_err(|e| err(e.to_string()))?
            } else {
                h.body.clone()
            };
            copy::write_heredoc(dir.path(), &h.name, body.as_bytes(), 0o644).map_err(|e| err(e.to_string()))?;
            names.push(h.name.clone());
        }
        Tree::open(dir.path().to_path_buf(), names, None, None, Held::Dir { _dir: dir }, true).map_err(err)
    }
}

/// What keeps a source tree there while the step reads it (removed or
/// unmounted when dropped).
enum Held {
    Nothing,
    Dir { _dir: tempfile::TempDir },
    Mount { _fs: step::ReadOnly },
}

/// One tree COPY/ADD reads: its directory (held open), the names asked
/// for and what they selected.
struct Tree<'a> {
    path: PathBuf,
    root: OwnedFd,
    names: Vec<String>,
    selected: Vec<String>,
    ignore: Option<&'a crate::ignore::Ignore>,
    /// For a stage or image: its key (its files are not hashed); None:
    /// the selected files' content is.
    key: Option<String>,
    heredocs: bool,
    _held: Held,
}

impl<'a> Tree<'a> {
    fn open(
        path: PathBuf,
        names: Vec<String>,
        ignore: Option<&'a crate::ignore::Ignore>,
        key: Option<String>,
        held: Held,
        heredocs: bool,
    ) -> Result<Tree<'a>, String> {
        let root = rustix::fs::open(
            &path,
            rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| format!("open {}: {e}", path.display()))?;
        Ok(Tree { path, root, names, selected: Vec::new(), ignore, key, heredocs, _held: held })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }
}

/// Where a RUN's `#!` heredoc is mounted, as BuildKit's.
const PIPES: &str = "/dev/pipes";

/// The heredoc of a RUN whose command is that heredoc alone (`<<EOF`,
/// `<< EOF`, `<<-EOF`, `3<<EOF`): BuildKit runs its body as the script
/// rather than handing the line to the shell.
fn single_heredoc(r: &crate::ast::Run) -> Option<&crate::ast::Heredoc> {
    let (Command::Shell(s), [h]) = (&r.command, r.heredocs.as_slice()) else { return None };
    let head = crate::parse::parse_heredoc_word(s.trim()).ok().flatten()?;
    (head.name == h.name).then_some(h)
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
