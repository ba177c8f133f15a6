//! The parsed Dockerfile: the contract between the parser and the executor.
//!
//! Values stay as written (raw words, `$VAR` not substituted): the executor
//! expands them when it dispatches each instruction, with the ARG/ENV state
//! of that point, as BuildKit does ([`crate::parse::expand`]). Which
//! instructions docker expands is documented there.
//!
//! Flags, JSON arrays and heredocs are already parsed; what needs the build
//! state (expansion, stage lookup by name, file access) is left to the
//! executor.

use std::time::Duration;

/// A whole Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The escape character (`# escape=`): `\` (default) or `` ` ``. The
    /// executor needs it for [`crate::parse::expand`].
    pub escape: char,
    /// The `# syntax=` directive, if any (informational: berth has one
    /// frontend).
    pub syntax: Option<String>,
    /// The ARGs before the first FROM: usable in FROM lines, and inside a
    /// stage only after a bare `ARG NAME` re-declares them.
    pub meta_args: Vec<Located<ArgDecl>>,
    /// The stages, in file order (index = position).
    pub stages: Vec<Stage>,
}

/// One `FROM` and the instructions up to the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Position in [`Dockerfile::stages`] (`COPY --from=0` names it).
    pub index: usize,
    /// `AS name`, lower-cased as docker does (names are case-insensitive).
    pub name: Option<String>,
    /// The base as written: an image reference, a stage name, or `scratch`;
    /// may hold `${ARG}` of meta args (expand with the meta args only).
    pub base: String,
    /// `FROM --platform=...`, raw (may hold `$BUILDPLATFORM` etc.).
    pub platform: Option<String>,
    /// Line of the FROM instruction (1-based).
    pub line: usize,
    /// The FROM instruction's text as written (continuations joined).
    pub original: String,
    /// The stage's instructions, FROM excluded.
    pub instructions: Vec<Located<Instruction>>,
}

/// A value with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    /// First line of the instruction (1-based).
    pub line: usize,
    /// Last line (heredoc bodies and continuation lines included).
    pub end_line: usize,
    /// The instruction as written, its continuation lines joined (the escape
    /// character and newline removed, as docker's `Node.Original`), without
    /// heredoc bodies. The executor uses it in history `created_by` and in
    /// cache keys.
    pub original: String,
    pub inner: T,
}

/// `ARG name[=default]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    pub name: String,
    /// The default as written (unexpanded); `None` for a bare `ARG name`.
    pub default: Option<String>,
}

/// Every instruction except FROM (which starts a [`Stage`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    Run(Run),
    Copy(Copy),
    Add(Add),
    /// `ENV k=v ...` or the legacy `ENV k v`; values raw (quotes kept, as
    /// docker keeps them until expansion removes them).
    Env(Vec<(String, String)>),
    Arg(Vec<ArgDecl>),
    Workdir(String),
    User(String),
    /// Raw words (`80/tcp`, `${PORT}`); expand with `expand_words`.
    Expose(Vec<String>),
    /// Paths, from the JSON form or the space-separated form.
    Volume(Vec<String>),
    Label(Vec<(String, String)>),
    Entrypoint(Command),
    Cmd(Command),
    /// Always the JSON form (docker refuses the shell form).
    Shell(Vec<String>),
    Healthcheck(Healthcheck),
    Stopsignal(String),
    Onbuild(Onbuild),
    Maintainer(String),
}

/// The exec (JSON array) or shell form of RUN, CMD, ENTRYPOINT.
///
/// Docker's rule: a line that starts with `[` but is not a valid JSON array
/// of strings is the shell form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Exec(Vec<String>),
    Shell(String),
}

/// `RUN [--mount=...]... [--network=...] [--security=...] command`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// With heredocs, the shell form holds the line after the flags (e.g.
    /// `<<EOF` or `python3 <<EOF > out`), the bodies are in
    /// [`Run::heredocs`]. BuildKit then runs: for a command that is one
    /// heredoc word (`<<EOF`), the body itself: as an executable file when
    /// it starts with `#!`, else as the shell's command string; otherwise
    /// the shell gets the line, then for each heredoc `\n`, its body and
    /// its name (a real shell heredoc). The bodies are never expanded by
    /// the builder.
    pub command: Command,
    pub mounts: Vec<RunMount>,
    pub network: Option<NetworkMode>,
    /// `--security=insecure|sandbox`, raw.
    pub security: Option<String>,
    pub heredocs: Vec<Heredoc>,
}

/// `RUN --network=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    Default,
    None,
    Host,
}

/// `RUN --mount=type=...,...`, as BuildKit reads it. String values are raw
/// (the executor expands them); keys are checked at parse time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunMount {
    pub kind: MountKind,
    /// `target`/`dst`/`destination`; for secrets defaults to
    /// `/run/secrets/<id>` (the executor fills that in).
    pub target: Option<String>,
    /// `source`/`src`: a path in `from` (bind/cache) or the context.
    pub source: Option<String>,
    /// `from`: a stage name or index, or an image.
    pub from: Option<String>,
    /// `ro`/`readonly` (or `rw=false`). Bind mounts default to read-only,
    /// the others to read-write: [`RunMount::readonly`] already holds the
    /// effective value.
    pub readonly: bool,
    /// `id` (cache, secret, ssh).
    pub id: Option<String>,
    /// `sharing` (cache): defaults to shared.
    pub sharing: Sharing,
    /// `mode` (octal, e.g. `0644`).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// `size` (tmpfs), in bytes (`size=64m` accepted as docker's units).
    pub size: Option<u64>,
    /// `required` (secret, ssh).
    pub required: bool,
    /// `env` (secret): also expose the secret as this environment variable.
    pub env: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    Shared,
    Private,
    Locked,
}

/// `COPY [flags] src... dest` (also the body of [`Add`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// Raw source paths (from the JSON form or split on whitespace, no
    /// quote removal: docker splits COPY's shell form on whitespace only).
    /// Heredoc sources (`COPY <<EOF /dst`) are not here but in
    /// [`Copy::heredocs`], each to be written as a file named after it (as
    /// BuildKit's `SourceContents`).
    pub sources: Vec<String>,
    pub dest: String,
    /// `--from=stage|index|image` (COPY only).
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    /// `--parents` (COPY only).
    pub parents: bool,
    /// `--exclude=pattern`, repeatable.
    pub exclude: Vec<String>,
    pub heredocs: Vec<Heredoc>,
}

/// `ADD [flags] src... dest`: COPY's fields (never `from` or `parents`) plus
/// ADD's own flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Add {
    pub copy: Copy,
    /// `--checksum=sha256:...` (remote sources only).
    pub checksum: Option<String>,
    /// `--keep-git-dir` (git sources).
    pub keep_git_dir: bool,
}

/// A here-document (`<<EOF`, `<<-EOF`, `<<"EOF"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter, quotes removed.
    pub name: String,
    /// The lines between the instruction and the delimiter, each ending in
    /// `\n`; already without leading tabs when [`Heredoc::strip_tabs`].
    pub body: String,
    /// False when the delimiter was quoted (`<<"EOF"`, `<<'EOF'`): no
    /// variable expansion in the body.
    pub expand: bool,
    /// `<<-`: leading tabs were removed from each body line.
    pub strip_tabs: bool,
}

/// `HEALTHCHECK NONE` or `HEALTHCHECK [flags] CMD command`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// Disables a healthcheck inherited from the base image.
    None,
    Check {
        /// Docker records the shell form as `["CMD-SHELL", cmd]`, the exec
        /// form as `["CMD", args...]`.
        command: Command,
        interval: Option<Duration>,
        timeout: Option<Duration>,
        start_period: Option<Duration>,
        start_interval: Option<Duration>,
        retries: Option<u32>,
    },
}

/// `ONBUILD INSTRUCTION ...`: recorded in the image config, run by builds
/// FROM this image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Onbuild {
    /// The trigger as written after `ONBUILD` (what docker stores in the
    /// config's `OnBuild` list).
    pub trigger: String,
    /// The trigger parsed (never ONBUILD, FROM or MAINTAINER).
    pub instruction: Box<Instruction>,
}

impl Dockerfile {
    /// The stage named `name` (case-insensitive) or with index `name`.
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        let lower = name.to_ascii_lowercase();
        self.stages
            .iter()
            .find(|s| s.name.as_deref() == Some(lower.as_str()))
            .or_else(|| name.parse::<usize>().ok().and_then(|i| self.stages.get(i)))
    }
}

impl Healthcheck {
    /// The image config's `Healthcheck.Test`, as docker writes it:
    /// `["NONE"]`, `["CMD", args...]` or `["CMD-SHELL", command]`.
    pub fn test(&self) -> Vec<String> {
        match self {
            Healthcheck::None => vec!["NONE".into()],
            Healthcheck::Check { command: Command::Exec(args), .. } => {
                std::iter::once("CMD".to_string()).chain(args.iter().cloned()).collect()
            }
            Healthcheck::Check { command: Command::Shell(cmd), .. } => vec!["CMD-SHELL".into(), cmd.clone()],
        }
    }
}
