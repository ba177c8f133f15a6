//! runc's command line. Flags come from youki's liboci-cli where its
//! definitions match runc's; `kill` and `list` are our own (see kill.rs,
//! list.rs). One file per
//! verb, each thin: parse, call the library, print what runc prints.

mod create;
mod delete;
mod events;
mod exec;
mod features;
mod kill;
mod list;
pub mod logging;
mod pause;
mod ps;
mod run;
mod spec;
mod start;
mod state;
mod update;

use std::path::PathBuf;

use anyhow::{Result, bail};
use berth_runtime::container::{Container, StateRoot};
use clap::{Args, FromArgMatches, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "berth-runtime",
    about = "berth-runtime: an OCI runtime with runc's command line",
    disable_version_flag = true
)]
pub struct Cli {
    #[command(flatten)]
    pub top: Top,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The flags that come before the verb.
#[derive(Args, Debug)]
pub struct Top {
    #[command(flatten)]
    pub global: liboci_cli::GlobalOpts,
    /// Print the version
    #[arg(short = 'v', long = "version")]
    pub version: bool,
    /// Accepted for runc compatibility; rootless mode is detected from the caller
    #[arg(long, value_name = "true|false|auto", hide = true)]
    pub rootless: Option<String>,
    /// Accepted for runc compatibility (checkpointing is not supported)
    #[arg(long, value_name = "PATH", hide = true)]
    pub criu: Option<String>,
}

impl Cli {
    /// Parses the process's arguments. The verbs a container engine runs
    /// for every container go through a parser that knows only their own
    /// flags: clap's derived parser builds all fifteen verbs' definitions on
    /// every call, ~130 KiB of code the runtime would map for nothing (its
    /// peak RSS) and time it would spend. Anything that parser does not
    /// take (help, an error, another verb) goes to the full one, so what
    /// users see is clap's, word for word.
    pub fn parse_args() -> Cli {
        let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        lean_parse(&args).unwrap_or_else(|| Cli::parse_from(args))
    }
}

/// [`Cli`] for a command line whose verb is one of the lifecycle verbs,
/// with only that verb's definition built; None for anything else.
fn lean_parse(args: &[std::ffi::OsString]) -> Option<Cli> {
    fn verb<T: Args>(name: &'static str) -> clap::Command {
        T::augment_args(clap::Command::new(name))
    }
    let sub = match verb_of(args.iter().skip(1).cloned())?.as_str() {
        "create" => verb::<liboci_cli::Create>("create"),
        "start" => verb::<liboci_cli::Start>("start"),
        "state" => verb::<liboci_cli::State>("state"),
        "kill" => verb::<kill::Kill>("kill"),
        "delete" => verb::<liboci_cli::Delete>("delete"),
        "run" => verb::<liboci_cli::Run>("run"),
        "exec" => verb::<liboci_cli::Exec>("exec"),
        _ => return None,
    };
    let top = Top::augment_args(clap::Command::new("berth-runtime").disable_version_flag(true));
    let mut matches = top.subcommand(sub).try_get_matches_from(args).ok()?;
    Some(Cli {
        top: Top::from_arg_matches_mut(&mut matches).ok()?,
        command: Some(Command::from_arg_matches_mut(&mut matches).ok()?),
    })
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a container (its process waits for `start`)
    Create(liboci_cli::Create),
    /// Start a created container
    Start(liboci_cli::Start),
    /// Print a container's state as JSON
    State(liboci_cli::State),
    /// Send a signal to a container's init (default SIGTERM)
    Kill(kill::Kill),
    /// Delete a container and everything it holds
    Delete(liboci_cli::Delete),
    /// Create and start a container
    Run(liboci_cli::Run),
    /// Run a new process in a container
    Exec(liboci_cli::Exec),
    /// List containers
    List(list::List),
    /// List a container's processes
    Ps(liboci_cli::Ps),
    /// Write a default config.json
    Spec(liboci_cli::Spec),
    /// Print the features this runtime supports, as JSON
    Features(liboci_cli::Features),
    /// Freeze every process of a container
    Pause(liboci_cli::Pause),
    /// Thaw a paused container
    Resume(liboci_cli::Resume),
    /// Change a container's resource limits
    Update(update::Update),
    /// Print a container's stats (and OOM events) as JSON lines
    Events(events::Events),
}

/// Global options every verb may need.
pub struct Globals {
    pub root: StateRoot,
    pub systemd_cgroup: bool,
}

impl Globals {
    fn new(g: &liboci_cli::GlobalOpts) -> Globals {
        Globals { root: StateRoot(g.root.clone().unwrap_or_else(default_root)), systemd_cgroup: g.systemd_cgroup }
    }

    fn load(&self, id: &str) -> Result<Container> {
        Ok(self.root.load(id)?)
    }

    /// --systemd-cgroup: there is no systemd cgroup driver (yet); say so
    /// clearly instead of silently using cgroupfs.
    fn refuse_systemd(&self) -> Result<()> {
        if !self.systemd_cgroup {
            return Ok(());
        }
        if !std::path::Path::new("/run/systemd/system").exists() {
            bail!(
                "--systemd-cgroup: systemd is not running on this host (no /run/systemd/system); drop the flag to use cgroupfs"
            );
        }
        bail!(
            "--systemd-cgroup: the systemd cgroup driver is not supported by berth-runtime yet; drop the flag to use cgroupfs"
        )
    }
}

/// /run/berth-runtime for root; $XDG_RUNTIME_DIR/berth-runtime otherwise.
fn default_root() -> PathBuf {
    let xdg = std::env::var_os("XDG_RUNTIME_DIR");
    let user = std::env::var("USER").ok();
    default_root_for(nix::unistd::geteuid().is_root(), berth_runtime::sys::in_user_namespace, xdg, user.as_deref())
}

/// runc's rule (`shouldHonorXDGRuntimeDir`): $XDG_RUNTIME_DIR is used when
/// set and the caller is not root, or is root only inside a user namespace
/// and not $USER=root. The second case is rootless podman, which runs the
/// runtime as uid 0 of its own user namespace with XDG_RUNTIME_DIR set to
/// the user's directory (where /run is not writable).
fn default_root_for(
    euid_root: bool,
    in_userns: impl Fn() -> bool,
    xdg: Option<std::ffi::OsString>,
    user: Option<&str>,
) -> PathBuf {
    let system = PathBuf::from("/run/berth-runtime");
    let Some(dir) = xdg.filter(|d| !d.is_empty()) else { return system };
    if !euid_root || (in_userns() && user != Some("root")) {
        return PathBuf::from(dir).join("berth-runtime");
    }
    system
}

/// Whether the verb in `args` (the arguments after the program name) runs
/// a process that enters a container: `create`, `run` or `exec`. A quick
/// look for [`berth_runtime::seal`], before clap.
pub fn enters_container(args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    verb_of(args).is_some_and(|v| matches!(v.as_str(), "create" | "run" | "exec"))
}

/// The verb in `args` (the arguments after the program name): the first
/// argument that is neither a flag nor a global flag's value. None if
/// there is none, or it is not UTF-8, or `--help`/`-h`/`--version`/`-v`
/// comes first (clap answers those).
fn verb_of(args: impl Iterator<Item = std::ffi::OsString>) -> Option<String> {
    const TAKE_VALUE: [&str; 5] = ["--root", "--log", "--log-format", "--rootless", "--criu"];
    let mut args = args;
    while let Some(arg) = args.next() {
        let arg = arg.into_string().ok()?;
        if TAKE_VALUE.contains(&arg.as_str()) {
            args.next();
        } else if !arg.starts_with('-') {
            return Some(arg);
        } else if matches!(arg.as_str(), "-h" | "--help" | "-v" | "--version") {
            return None;
        }
    }
    None
}

/// Runs the command; returns the process exit code.
pub fn dispatch(cli: Cli) -> Result<i32> {
    if cli.top.version {
        println!("berth-runtime version {}", env!("CARGO_PKG_VERSION"));
        println!("spec: {}", berth_runtime::template::OCI_VERSION);
        return Ok(0);
    }
    let g = Globals::new(&cli.top.global);
    let Some(command) = cli.command else {
        bail!("no command given; see berth-runtime --help");
    };
    if matches!(command, Command::Create(_) | Command::Run(_) | Command::Exec(_)) {
        berth_runtime::seal::seal()?;
    }
    match command {
        Command::Create(a) => create::run(&g, a),
        Command::Start(a) => start::run(&g, a),
        Command::State(a) => state::run(&g, a),
        Command::Kill(a) => kill::run(&g, a),
        Command::Delete(a) => delete::run(&g, a),
        Command::Run(a) => run::run(&g, a),
        Command::Exec(a) => exec::run(&g, a),
        Command::List(a) => list::run(&g, a),
        Command::Ps(a) => ps::run(&g, a),
        Command::Spec(a) => spec::run(a),
        Command::Features(_) => features::run(),
        Command::Pause(a) => pause::pause(&g, a),
        Command::Resume(a) => pause::resume(&g, a),
        Command::Update(a) => update::run(&g, a),
        Command::Events(a) => events::run(&g, a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_root_follows_runcs_xdg_rule() {
        let xdg = || Some(std::ffi::OsString::from("/run/user/1000"));
        let user_dir = PathBuf::from("/run/user/1000/berth-runtime");
        let system = PathBuf::from("/run/berth-runtime");
        // Real root ignores XDG_RUNTIME_DIR (e.g. /run/user/0).
        assert_eq!(default_root_for(true, || false, xdg(), Some("root")), system);
        assert_eq!(default_root_for(true, || false, xdg(), None), system);
        // An unprivileged caller uses it.
        assert_eq!(default_root_for(false, || false, xdg(), Some("alice")), user_dir);
        // Root of a user namespace (rootless podman) uses it, unless USER=root.
        assert_eq!(default_root_for(true, || true, xdg(), Some("alice")), user_dir);
        assert_eq!(default_root_for(true, || true, xdg(), None), user_dir);
        assert_eq!(default_root_for(true, || true, xdg(), Some("root")), system);
        // Without XDG_RUNTIME_DIR: the system root.
        assert_eq!(default_root_for(false, || true, None, Some("alice")), system);
        assert_eq!(default_root_for(false, || true, Some("".into()), Some("alice")), system);
    }

    #[test]
    fn the_lean_parser_reads_every_lifecycle_command_line_as_clap_does() {
        let lines = [
            "--root /r --log /l --log-format json create --bundle /b --pid-file /p --console-socket /s id",
            "--systemd-cgroup create --bundle=/b --no-pivot --preserve-fds 2 id",
            "start id",
            "--root /r state id",
            "kill id KILL",
            "kill --all id 9",
            "delete --force id",
            "run -d --bundle /b --keep id",
            "run --detach --no-new-keyring --bundle /b id",
            "exec --tty --cwd /w -e A=1 --env B=2 --user 1:2 --process /p id",
            "exec -d id sh -c 'echo hi'",
            "--debug --rootless true --criu /c run --bundle /b id",
        ];
        for line in lines {
            let args: Vec<std::ffi::OsString> =
                std::iter::once("berth-runtime").chain(line.split_whitespace()).map(Into::into).collect();
            let lean = lean_parse(&args).unwrap_or_else(|| panic!("{line}: the lean parser refused it"));
            let full = Cli::try_parse_from(&args).unwrap();
            assert_eq!(format!("{lean:?}"), format!("{full:?}"), "{line}");
        }
    }

    #[test]
    fn help_errors_and_other_verbs_go_to_the_full_parser() {
        for line in ["create --help", "--help", "-v", "run", "create --bogus id", "list", "spec", "kill", ""] {
            let args: Vec<std::ffi::OsString> =
                std::iter::once("berth-runtime").chain(line.split_whitespace()).map(Into::into).collect();
            assert!(lean_parse(&args).is_none(), "{line:?} was taken by the lean parser");
        }
    }

    fn check(args: &str) -> bool {
        enters_container(args.split_whitespace().map(Into::into))
    }

    #[test]
    fn the_verbs_that_enter_a_container_are_found_past_global_flags() {
        assert!(check("create --bundle b id"));
        assert!(check("--root /r --log l --log-format json --debug run -d id"));
        assert!(check("--rootless true exec id sh"));
        assert!(check("--systemd-cgroup --root=/r exec id sh"));
        assert!(!check("--root run state run"), "--root's value is not the verb");
        assert!(!check("state id"));
        assert!(!check("--log exec delete exec"));
        assert!(!check("--version"));
        assert!(!check(""));
    }
}
