//! An OCI runtime driven through runc's command line, as containerd drives
//! runc through go-runc: one typed call per verb, global flags set once,
//! and errors that carry the runtime's own message (from its JSON log when
//! one was asked for, else from its stderr).
//!
//! Both the shim (which creates, runs and execs) and the engine (which
//! kills, deletes, pauses and observes) use it, so any runtime that speaks
//! runc's CLI (runc, crun, berth-runtime) can serve under either. It is a
//! crate of its own, not a module of berth-shim or berth-runtime: the
//! engine must not link the runtime, and the shim's binary only pays for
//! the verbs it calls.

mod message;

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

pub use message::{Logged, last_json_error, last_json_failure, last_text_error, last_text_failure};

/// What went wrong running the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The runtime could not be started at all.
    #[error("run the OCI runtime {}: {source}", binary.display())]
    Spawn { binary: PathBuf, source: std::io::Error },
    /// The runtime ran and failed: `message` is its own words; `errno`
    /// the errno of a failed exec of the process, when the runtime logged
    /// one (berth-runtime does; runc and crun do not).
    #[error("{message}")]
    Failed { verb: &'static str, status: ExitStatus, message: String, errno: Option<i32> },
    /// The runtime succeeded but printed something runc would not.
    #[error("OCI runtime {verb}: output is not what runc prints: {source}")]
    Output { verb: &'static str, source: serde_json::Error },
    /// The runtime succeeded but left no pid in the pid file.
    #[error("the OCI runtime wrote no pid to {}", path.display())]
    NoPid { path: PathBuf },
    /// Writing the runtime's input, or waiting for it.
    #[error("OCI runtime {verb}: {source}")]
    Io { verb: &'static str, source: std::io::Error },
}

/// Why the runtime could not start a container's or an exec's process:
/// what decides docker's exit codes 127 and 126.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecFailure {
    /// The command, or a path it needs, does not exist (127).
    NotFound,
    /// It exists but cannot be run: not executable, a directory, a binary
    /// of another architecture (126).
    NotExecutable,
}

impl ExecFailure {
    /// From the runtime's message. runc and crun report an exec failure
    /// only in words (their exit status is 1 for every failure, and the
    /// errno stays in their child), and berth-runtime uses runc's words;
    /// so this reads them as dockerd does for the same runtimes (its
    /// start error translation): "executable file not found" or "no such
    /// file or directory" for 127, "permission denied" or "exec format
    /// error" for 126. It is the one place that reads a runtime's
    /// message for its meaning.
    pub fn from_message(message: &str) -> Option<ExecFailure> {
        let m = message.to_ascii_lowercase();
        if m.contains("executable file not found") || m.contains("no such file or directory") {
            Some(ExecFailure::NotFound)
        } else if m.contains("permission denied") || m.contains("exec format error") {
            Some(ExecFailure::NotExecutable)
        } else {
            None
        }
    }

    /// From the errno of the failed exec (or of the PATH lookup before
    /// it), as docker maps them: ENOENT is 127; EACCES, EPERM, ENOEXEC and
    /// EISDIR 126; any other errno is no exec failure of that kind (125).
    pub fn from_errno(errno: i32) -> Option<ExecFailure> {
        match errno {
            libc::ENOENT => Some(ExecFailure::NotFound),
            libc::EACCES | libc::EPERM | libc::ENOEXEC | libc::EISDIR => Some(ExecFailure::NotExecutable),
            _ => None,
        }
    }

    /// From the runtime's typed cause when it gave one (berth-runtime's
    /// `errno`), else from its words (runc, crun: see [`from_message`]).
    ///
    /// [`from_message`]: ExecFailure::from_message
    pub fn from_cause(errno: Option<i32>, message: &str) -> Option<ExecFailure> {
        match errno {
            Some(n) => ExecFailure::from_errno(n),
            None => ExecFailure::from_message(message),
        }
    }

    /// docker's exit code for it.
    pub fn exit_code(self) -> i32 {
        match self {
            ExecFailure::NotFound => 127,
            ExecFailure::NotExecutable => 126,
        }
    }
}

impl Error {
    /// Why the process could not be started, if the runtime said it
    /// could not exec it.
    pub fn exec_failure(&self) -> Option<ExecFailure> {
        match self {
            Error::Failed { message, errno, .. } => ExecFailure::from_cause(*errno, message),
            _ => None,
        }
    }

    /// The runtime's exit status, for an error the runtime itself reported.
    pub fn status(&self) -> Option<ExitStatus> {
        match self {
            Error::Failed { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// runc's `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The runtime binary and the global flags every call carries.
#[derive(Debug, Clone)]
pub struct Runtime {
    binary: PathBuf,
    root: Option<PathBuf>,
    log: Option<PathBuf>,
    log_format: Option<LogFormat>,
    systemd_cgroup: bool,
    /// Run the binary through this fd instead of its path (see
    /// [`Runtime::exec_through`]), with this variable set.
    through: Option<(std::sync::Arc<std::os::fd::OwnedFd>, OsString, OsString)>,
}

/// Where the runtime's (and so, for create/run/exec, the container's)
/// stdio goes. The default: no stdin, stdout discarded, stderr collected
/// for the error message.
#[derive(Debug, Default)]
pub struct Io {
    pub stdin: Option<Stdio>,
    pub stdout: Option<Stdio>,
    pub stderr: Option<Stdio>,
}

/// `create` and `run`'s options.
#[derive(Debug, Clone, Default)]
pub struct CreateOpts {
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    /// `run` only: return once the container has started.
    pub detach: bool,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
}

/// `exec`'s options.
#[derive(Debug, Clone, Default)]
pub struct ExecOpts {
    pub detach: bool,
    pub tty: bool,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    /// A process.json to run instead of argv.
    pub process: Option<PathBuf>,
    pub cwd: Option<PathBuf>,
    pub env: Vec<String>,
    /// "uid[:gid]".
    pub user: Option<String>,
}

/// `runc state`'s output (the OCI state, plus runc's extras).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct State {
    #[serde(rename = "ociVersion", default)]
    pub oci_version: String,
    pub id: String,
    #[serde(default)]
    pub pid: i32,
    pub status: String,
    #[serde(default)]
    pub bundle: PathBuf,
    #[serde(default)]
    pub rootfs: PathBuf,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub annotations: std::collections::HashMap<String, String>,
}

/// One line of `runc events`: `{"type":"stats","id":...,"data":{...}}`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    /// For "stats": runc's types/events.go Stats, as printed.
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Runtime {
    pub fn new(binary: impl Into<PathBuf>) -> Runtime {
        Runtime { binary: binary.into(), root: None, log: None, log_format: None, systemd_cgroup: false, through: None }
    }

    /// `--root`: where the runtime keeps its containers' state.
    pub fn root(mut self, root: impl Into<PathBuf>) -> Runtime {
        self.root = Some(root.into());
        self
    }

    /// `--log`: the runtime logs (and reports its errors) there.
    pub fn log(mut self, log: impl Into<PathBuf>) -> Runtime {
        self.log = Some(log.into());
        self
    }

    pub fn log_format(mut self, format: LogFormat) -> Runtime {
        self.log_format = Some(format);
        self
    }

    pub fn systemd_cgroup(mut self, on: bool) -> Runtime {
        self.systemd_cgroup = on;
        self
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Executes the binary through `fd` (an open handle of it, e.g. on a
    /// read-only mount; exec'd as /proc/self/fd/N, argv[0] still the path)
    /// with `var=value` added to its environment. The fd may be
    /// close-on-exec: the kernel opens the binary before it closes those.
    pub fn exec_through(mut self, fd: std::sync::Arc<std::os::fd::OwnedFd>, var: &str, value: &str) -> Runtime {
        self.through = Some((fd, var.into(), value.into()));
        self
    }

    /// The command line with the global flags, before the verb.
    pub fn command(&self) -> Command {
        let mut c = match &self.through {
            Some((fd, var, value)) => {
                use std::os::fd::AsRawFd;
                use std::os::unix::process::CommandExt;
                let mut c = Command::new(format!("/proc/self/fd/{}", fd.as_raw_fd()));
                c.arg0(&self.binary).env(var, value);
                c
            }
            None => Command::new(&self.binary),
        };
        if let Some(root) = &self.root {
            c.arg("--root").arg(root);
        }
        if let Some(log) = &self.log {
            c.arg("--log").arg(log);
        }
        match self.log_format {
            Some(LogFormat::Json) => c.args(["--log-format", "json"]),
            Some(LogFormat::Text) => c.args(["--log-format", "text"]),
            None => &mut c,
        };
        if self.systemd_cgroup {
            c.arg("--systemd-cgroup");
        }
        c
    }

    /// `create --bundle B [--pid-file F] [--console-socket S] ID`.
    pub fn create(&self, id: &str, opts: &CreateOpts, io: Io) -> Result<()> {
        self.spawn("create", create_args(opts, false), id, io)?.wait()
    }

    /// `run`, started and not waited for: the caller may have to serve the
    /// console socket while the runtime runs (see [`Pending`]).
    pub fn spawn_run(&self, id: &str, opts: &CreateOpts, io: Io) -> Result<Pending> {
        self.spawn("run", create_args(opts, true), id, io)
    }

    /// `run` to its end (with `detach`: until the container has started).
    pub fn run(&self, id: &str, opts: &CreateOpts, io: Io) -> Result<()> {
        self.spawn_run(id, opts, io)?.wait()
    }

    pub fn start(&self, id: &str) -> Result<()> {
        self.simple("start", &[], id)
    }

    /// `kill ID SIGNAL` (a name or a number, as runc takes it).
    pub fn kill(&self, id: &str, signal: &str, all: bool) -> Result<()> {
        let mut args: Vec<OsString> = Vec::new();
        if all {
            args.push("--all".into());
        }
        args.push(id.into());
        args.push(signal.into());
        self.spawn("kill", args, "", Io::default())?.wait()
    }

    /// `delete [--force] ID`.
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        self.spawn_delete(id, force)?.wait()
    }

    /// `delete`, started: the caller does other work and then waits.
    pub fn spawn_delete(&self, id: &str, force: bool) -> Result<Pending> {
        let flags: Vec<OsString> = if force { vec!["--force".into()] } else { Vec::new() };
        self.spawn("delete", flags, id, Io::default())
    }

    pub fn pause(&self, id: &str) -> Result<()> {
        self.simple("pause", &[], id)
    }

    pub fn resume(&self, id: &str) -> Result<()> {
        self.simple("resume", &[], id)
    }

    /// `state ID`, parsed.
    pub fn state(&self, id: &str) -> Result<State> {
        let out = self.output("state", &[], id)?;
        serde_json::from_slice(&out).map_err(|source| Error::Output { verb: "state", source })
    }

    /// `ps --format json ID`: the container's pids, as the runtime lists them.
    pub fn ps(&self, id: &str) -> Result<Vec<i32>> {
        let out = self.output("ps", &["--format", "json"], id)?;
        serde_json::from_slice(&out).map_err(|source| Error::Output { verb: "ps", source })
    }

    /// `events --stats ID`: one reading of the container's resource use.
    pub fn stats(&self, id: &str) -> Result<Event> {
        let out = self.output("events", &["--stats"], id)?;
        let line = out.split(|b| *b == b'\n').find(|l| !l.is_empty()).unwrap_or_default();
        serde_json::from_slice(line).map_err(|source| Error::Output { verb: "events", source })
    }

    /// `update --resources - ID`, the resources (an OCI LinuxResources) on
    /// stdin.
    pub fn update(&self, id: &str, resources: &serde_json::Value) -> Result<()> {
        let io = Io { stdin: Some(Stdio::piped()), ..Io::default() };
        let mut p = self.spawn("update", vec!["--resources".into(), "-".into(), id.into()], "", io)?;
        if let Some(mut stdin) = p.child.stdin.take() {
            let body = serde_json::to_vec(resources).map_err(|source| Error::Output { verb: "update", source })?;
            stdin.write_all(&body).map_err(|source| Error::Io { verb: "update", source })?;
        }
        p.wait()
    }

    /// `exec [options] ID ARGV...`.
    pub fn exec(&self, id: &str, argv: &[OsString], opts: &ExecOpts, io: Io) -> Result<()> {
        let mut args = exec_args(opts);
        args.push(id.into());
        args.extend(argv.iter().cloned());
        self.spawn("exec", args, "", io)?.wait()
    }

    /// `exec [options] REST...` where `rest` holds further options, the
    /// container's ID and argv as a caller prepared them (the engine sends
    /// the shim such a list for an exec session).
    pub fn exec_prepared(&self, rest: &[OsString], opts: &ExecOpts, io: Io) -> Result<()> {
        let mut args = exec_args(opts);
        args.extend(rest.iter().cloned());
        self.spawn("exec", args, "", io)?.wait()
    }

    /// [`Runtime::exec_prepared`], started and not waited for: the caller
    /// serves the console socket of an `exec --tty` while it runs.
    pub fn spawn_exec_prepared(&self, rest: &[OsString], opts: &ExecOpts, io: Io) -> Result<Pending> {
        let mut args = exec_args(opts);
        args.extend(rest.iter().cloned());
        self.spawn("exec", args, "", io)
    }

    fn simple(&self, verb: &'static str, flags: &[&str], id: &str) -> Result<()> {
        let args = flags.iter().map(OsString::from).collect();
        self.spawn(verb, args, id, Io::default())?.wait()
    }

    /// Runs a verb whose stdout is its answer.
    fn output(&self, verb: &'static str, flags: &[&str], id: &str) -> Result<Vec<u8>> {
        let args = flags.iter().map(OsString::from).collect();
        let io = Io { stdout: Some(Stdio::piped()), ..Io::default() };
        self.spawn(verb, args, id, io)?.wait_output()
    }

    /// `binary GLOBALS verb args [id]`, started.
    fn spawn(&self, verb: &'static str, args: Vec<OsString>, id: &str, io: Io) -> Result<Pending> {
        let mut c = self.command();
        c.arg(verb).args(args);
        if !id.is_empty() {
            c.arg(id);
        }
        let captured = io.stderr.is_none();
        c.stdin(io.stdin.unwrap_or_else(Stdio::null));
        c.stdout(io.stdout.unwrap_or_else(Stdio::null));
        c.stderr(io.stderr.unwrap_or_else(Stdio::piped));
        let child = c.spawn().map_err(|source| Error::Spawn { binary: self.binary.clone(), source })?;
        Ok(Pending { child, verb, captured, runtime: self.clone() })
    }
}

/// A runtime process under way.
pub struct Pending {
    child: Child,
    verb: &'static str,
    /// Its stderr is a pipe to us.
    captured: bool,
    runtime: Runtime,
}

impl Pending {
    /// Its exit status if it has ended, without waiting.
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILLs it (a caller that gave up on it); [`Pending::wait`] reaps.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
    }

    /// Waits for it; Ok if it succeeded, else its own message.
    pub fn wait(self) -> Result<()> {
        self.wait_output().map(drop)
    }

    fn wait_output(self) -> Result<Vec<u8>> {
        let verb = self.verb;
        let out = self.child.wait_with_output().map_err(|source| Error::Io { verb, source })?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        let logged = match (&self.runtime.log, self.runtime.log_format) {
            (Some(log), Some(LogFormat::Json)) => std::fs::read_to_string(log).ok().and_then(|t| last_json_failure(&t)),
            (Some(log), _) => std::fs::read_to_string(log).ok().and_then(|t| last_text_failure(&t)),
            _ => None,
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        let logged = logged.or_else(|| self.captured.then(|| last_text_failure(&stderr)).flatten());
        let errno = logged.as_ref().and_then(|l| l.errno);
        let message = logged
            .map(|l| l.message)
            .or_else(|| Some(stderr.trim().to_owned()).filter(|s| !s.is_empty()))
            .unwrap_or_else(|| format!("{} {verb} failed ({})", self.runtime.binary.display(), out.status));
        Err(Error::Failed { verb, status: out.status, message, errno })
    }
}

/// The pid a runtime wrote to `--pid-file`.
pub fn read_pid_file(path: &Path) -> Result<i32> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| Error::NoPid { path: path.to_owned() })
}

fn create_args(o: &CreateOpts, run: bool) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    if run && o.detach {
        a.push("--detach".into());
    }
    a.push("--bundle".into());
    a.push(o.bundle.clone().into());
    push_path(&mut a, "--pid-file", o.pid_file.as_deref());
    push_path(&mut a, "--console-socket", o.console_socket.as_deref());
    for (on, flag) in [(o.no_pivot, "--no-pivot"), (o.no_new_keyring, "--no-new-keyring")] {
        if on {
            a.push(flag.into());
        }
    }
    a
}

fn exec_args(o: &ExecOpts) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    for (on, flag) in [(o.detach, "--detach"), (o.tty, "--tty")] {
        if on {
            a.push(flag.into());
        }
    }
    push_path(&mut a, "--pid-file", o.pid_file.as_deref());
    push_path(&mut a, "--console-socket", o.console_socket.as_deref());
    push_path(&mut a, "--process", o.process.as_deref());
    push_path(&mut a, "--cwd", o.cwd.as_deref());
    for e in &o.env {
        a.push("--env".into());
        a.push(e.into());
    }
    if let Some(u) = &o.user {
        a.push("--user".into());
        a.push(u.into());
    }
    a
}

fn push_path(a: &mut Vec<OsString>, flag: &str, value: Option<&Path>) {
    if let Some(v) = value {
        a.push(flag.into());
        a.push(OsStr::new(v).to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::ExecFailure;

    #[test]
    fn exec_failures_read_as_dockerd_reads_them() {
        let runc = "exec failed: unable to start container process: exec: \"nope\": executable file not found in $PATH";
        assert_eq!(ExecFailure::from_message(runc), Some(ExecFailure::NotFound));
        let denied = "exec: \"/etc/passwd\": permission denied";
        assert_eq!(ExecFailure::from_message(denied), Some(ExecFailure::NotExecutable));
        let ours = "exec: \"/x\": stat /x: no such file or directory";
        assert_eq!(ExecFailure::from_message(ours).map(ExecFailure::exit_code), Some(127));
        assert_eq!(ExecFailure::from_message("exec format error").map(ExecFailure::exit_code), Some(126));
        assert_eq!(ExecFailure::from_message("cgroup: device or resource busy"), None);
    }

    #[test]
    fn a_logged_errno_decides_without_the_words() {
        use super::{Error, last_json_failure};
        use std::os::unix::process::ExitStatusExt;
        // Words that name neither cause: only the errno field can tell.
        let failed = |log: &str| {
            let l = last_json_failure(log).unwrap();
            Error::Failed { verb: "create", status: ExitStatusExt::from_raw(256), message: l.message, errno: l.errno }
        };
        let code = |log: &str| failed(log).exec_failure().map(ExecFailure::exit_code);
        assert_eq!(code(r#"{"errno":2,"level":"error","msg":"the program is absent","time":"t"}"#), Some(127));
        assert_eq!(code(r#"{"errno":13,"level":"error","msg":"the program is refused","time":"t"}"#), Some(126));
        assert_eq!(code(r#"{"errno":8,"level":"error","msg":"bad binary","time":"t"}"#), Some(126));
        assert_eq!(code(r#"{"errno":21,"level":"error","msg":"a dir","time":"t"}"#), Some(126));
        assert_eq!(code(r#"{"errno":1,"level":"error","msg":"refused","time":"t"}"#), Some(126));
        // The errno wins over words that say otherwise.
        assert_eq!(code(r#"{"errno":7,"level":"error","msg":"no such file or directory","time":"t"}"#), None);
        // No errno (runc, crun): the words decide.
        let runc = r#"{"level":"error","msg":"exec: \"x\": executable file not found in $PATH","time":"t"}"#;
        assert_eq!(code(runc), Some(127));
        assert_eq!(code(r#"{"level":"error","msg":"exec: \"/etc\": permission denied","time":"t"}"#), Some(126));
        assert_eq!(code(r#"{"level":"error","msg":"the program is absent","time":"t"}"#), None);
    }
}
