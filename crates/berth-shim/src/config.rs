//! berth-shim's command line. Parsed by hand: the shim runs once per
//! container for its whole life, and a flag parser would be most of its
//! code and memory.

use std::path::PathBuf;

use crate::ShimError;

#[derive(Debug, Clone, PartialEq)]
pub enum Restart {
    No,
    /// Up to this many restarts (0: no limit) after a non-zero exit.
    OnFailure(u32),
    Always,
    UnlessStopped,
}

impl Restart {
    pub fn parse(s: &str) -> Result<Restart, ShimError> {
        let bad = || ShimError::Usage(format!("--restart {s:?}: want no, on-failure[:N], always or unless-stopped"));
        Ok(match s.split_once(':') {
            None if s == "no" || s.is_empty() => Restart::No,
            None if s == "always" => Restart::Always,
            None if s == "unless-stopped" => Restart::UnlessStopped,
            None if s == "on-failure" => Restart::OnFailure(0),
            Some(("on-failure", n)) => Restart::OnFailure(n.parse().map_err(|_| bad())?),
            _ => return Err(bad()),
        })
    }

    /// Whether a container that exited with `code` after `restarts`
    /// restarts again; `stopped`: the engine stopped it on purpose.
    pub fn again(&self, code: i32, restarts: u32, stopped: bool) -> bool {
        if stopped {
            return false;
        }
        match self {
            Restart::No => false,
            Restart::OnFailure(max) => code != 0 && (*max == 0 || restarts < *max),
            Restart::Always | Restart::UnlessStopped => true,
        }
    }
}

/// The log file's format (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// docker's json-file, rotated by the shim (`--log-max-size`).
    #[default]
    JsonFile,
    /// The kubelet's CRI format; the kubelet rotates it.
    Cri,
}

impl LogFormat {
    pub fn parse(s: &str) -> Result<LogFormat, ShimError> {
        match s {
            "json-file" => Ok(LogFormat::JsonFile),
            "cri" => Ok(LogFormat::Cri),
            _ => Err(ShimError::Usage(format!("--log-format {s:?}: want json-file or cri"))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LogFormat::JsonFile => "json-file",
            LogFormat::Cri => "cri",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub id: String,
    pub bundle: PathBuf,
    pub runtime: PathBuf,
    pub runtime_root: Option<PathBuf>,
    /// Holds attach.sock, exit.json, the container's pid file.
    pub state_dir: PathBuf,
    pub log_path: Option<PathBuf>,
    pub log_max_size: Option<u64>,
    pub log_max_files: u32,
    pub log_format: LogFormat,
    pub terminal: bool,
    pub stdin: bool,
    pub restart: Restart,
    /// Where to report the start (a pipe the engine reads).
    pub sync_fd: Option<i32>,
    /// Leave the runtime's container in place after the exit (default:
    /// `runtime delete`, so the engine can create it again).
    pub no_delete: bool,
    /// Run after the container's last exit, as conmon's --exit-command:
    /// the engine's `rm` for `run -d --rm`. Program, then its arguments.
    pub exit_command: Vec<String>,
    /// The engine's events directory: each start and exit of the
    /// container is appended to its log as a `start` and a `die` event
    /// (see [`crate::events`]), whoever is watching or not.
    pub events_dir: Option<PathBuf>,
    /// The die event's attributes (`name=web`, `image=busybox`, labels),
    /// as the engine knows them.
    pub event_attrs: Vec<(String, String)>,
}

pub const USAGE: &str = "usage: berth-shim --id ID --bundle DIR --state-dir DIR [--runtime PATH] [--runtime-root DIR]
       [--log-path FILE [--log-format json-file|cri] [--log-max-size BYTES] [--log-max-files N]] [--terminal] [--stdin]
       [--restart no|on-failure[:N]|always|unless-stopped] [--sync-fd N] [--no-delete]
       [--exit-command PATH [--exit-command-arg ARG]...] [--events-dir DIR [--event-attr KEY=VALUE]...]";

impl Config {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Config, ShimError> {
        let mut c = Config {
            id: String::new(),
            bundle: PathBuf::new(),
            runtime: "berth-runtime".into(),
            runtime_root: None,
            state_dir: PathBuf::new(),
            log_path: None,
            log_max_size: None,
            log_max_files: 1,
            log_format: LogFormat::JsonFile,
            terminal: false,
            stdin: false,
            restart: Restart::No,
            sync_fd: None,
            no_delete: false,
            exit_command: Vec::new(),
            events_dir: None,
            event_attrs: Vec::new(),
        };
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or_else(|| ShimError::Usage(format!("{flag} needs a value")));
            let num = |v: String| v.parse::<u64>().map_err(|_| ShimError::Usage(format!("{flag}: not a number: {v}")));
            match flag.as_str() {
                "--id" => c.id = value()?,
                "--bundle" => c.bundle = value()?.into(),
                "--runtime" => c.runtime = value()?.into(),
                "--runtime-root" => c.runtime_root = Some(value()?.into()),
                "--state-dir" => c.state_dir = value()?.into(),
                "--log-path" => c.log_path = Some(value()?.into()),
                "--log-max-size" => c.log_max_size = Some(num(value()?)?),
                "--log-max-files" => c.log_max_files = num(value()?)? as u32,
                "--log-format" => c.log_format = LogFormat::parse(&value()?)?,
                "--terminal" => c.terminal = true,
                "--stdin" => c.stdin = true,
                "--restart" => c.restart = Restart::parse(&value()?)?,
                "--sync-fd" => c.sync_fd = Some(num(value()?)? as i32),
                "--no-delete" => c.no_delete = true,
                "--exit-command" => c.exit_command.insert(0, value()?),
                "--exit-command-arg" => c.exit_command.push(value()?),
                "--events-dir" => c.events_dir = Some(value()?.into()),
                "--event-attr" => {
                    let v = value()?;
                    let (k, v) = v
                        .split_once('=')
                        .ok_or_else(|| ShimError::Usage(format!("--event-attr {v:?}: want KEY=VALUE")))?;
                    c.event_attrs.push((k.to_owned(), v.to_owned()));
                }
                "-h" | "--help" => return Err(ShimError::Usage(USAGE.into())),
                other => return Err(ShimError::Usage(format!("unknown flag {other}\n{USAGE}"))),
            }
        }
        for (set, name) in [
            (!c.id.is_empty(), "--id"),
            (!c.bundle.as_os_str().is_empty(), "--bundle"),
            (!c.state_dir.as_os_str().is_empty(), "--state-dir"),
        ] {
            if !set {
                return Err(ShimError::Usage(format!("{name} is required\n{USAGE}")));
            }
        }
        Ok(c)
    }

    /// The flags that reproduce this config (the client side).
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec!["--id".into(), self.id.clone(), "--bundle".into(), path(&self.bundle)];
        a.extend(["--state-dir".into(), path(&self.state_dir), "--runtime".into(), path(&self.runtime)]);
        if let Some(r) = &self.runtime_root {
            a.extend(["--runtime-root".into(), path(r)]);
        }
        if let Some(l) = &self.log_path {
            a.extend(["--log-path".into(), path(l), "--log-max-files".into(), self.log_max_files.to_string()]);
            if let Some(s) = self.log_max_size {
                a.extend(["--log-max-size".into(), s.to_string()]);
            }
            if self.log_format != LogFormat::JsonFile {
                a.extend(["--log-format".into(), self.log_format.name().into()]);
            }
        }
        for (on, flag) in [(self.terminal, "--terminal"), (self.stdin, "--stdin"), (self.no_delete, "--no-delete")] {
            if on {
                a.push(flag.into());
            }
        }
        let restart = match &self.restart {
            Restart::No => "no".to_owned(),
            Restart::OnFailure(n) => format!("on-failure:{n}"),
            Restart::Always => "always".into(),
            Restart::UnlessStopped => "unless-stopped".into(),
        };
        a.extend(["--restart".into(), restart]);
        if let Some(fd) = self.sync_fd {
            a.extend(["--sync-fd".into(), fd.to_string()]);
        }
        if let Some((prog, args)) = self.exit_command.split_first() {
            a.extend(["--exit-command".into(), prog.clone()]);
            for arg in args {
                a.extend(["--exit-command-arg".into(), arg.clone()]);
            }
        }
        if let Some(d) = &self.events_dir {
            a.extend(["--events-dir".into(), path(d)]);
            for (k, v) in &self.event_attrs {
                a.extend(["--event-attr".into(), format!("{k}={v}")]);
            }
        }
        a
    }
}

fn path(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_follow_docker() {
        let p = |s| Restart::parse(s).unwrap();
        assert!(!p("no").again(1, 0, false));
        assert!(p("on-failure:2").again(1, 1, false));
        assert!(!p("on-failure:2").again(1, 2, false), "at most two restarts");
        assert!(!p("on-failure").again(0, 0, false), "a clean exit is not a failure");
        assert!(p("on-failure").again(1, 99, false));
        assert!(p("always").again(0, 5, false));
        assert!(!p("always").again(0, 5, true), "a stop by the engine ends it");
        assert!(p("unless-stopped").again(3, 0, false));
        assert!(Restart::parse("sometimes").is_err() && Restart::parse("on-failure:x").is_err());
    }

    #[test]
    fn flags_round_trip() {
        let args = [
            "--id",
            "c1",
            "--bundle",
            "/b",
            "--state-dir",
            "/s",
            "--terminal",
            "--restart",
            "on-failure:3",
            "--log-path",
            "/l",
            "--log-max-size",
            "100",
            "--log-max-files",
            "2",
            "--sync-fd",
            "3",
            "--log-format",
            "cri",
            "--exit-command-arg",
            "rm",
            "--exit-command",
            "/bin/berth",
            "--exit-command-arg",
            "x y",
            "--events-dir",
            "/ev",
            "--event-attr",
            "name=a=b",
        ];
        let c = Config::parse(args.iter().map(|s| s.to_string())).unwrap();
        assert_eq!(
            (c.id.as_str(), c.terminal, c.restart.clone(), c.log_max_size),
            ("c1", true, Restart::OnFailure(3), Some(100))
        );
        let again = Config::parse(c.to_args()).unwrap();
        assert_eq!((again.log_max_files, again.sync_fd, again.restart), (2, Some(3), Restart::OnFailure(3)));
        assert_eq!(again.exit_command, ["/bin/berth", "rm", "x y"]);
        assert_eq!(again.log_format, LogFormat::Cri);
        assert_eq!(again.events_dir.as_deref(), Some(std::path::Path::new("/ev")));
        assert_eq!(again.event_attrs, [("name".to_owned(), "a=b".to_owned())]);
        assert!(LogFormat::parse("journald").is_err());
        assert!(
            Config::parse(["--id".to_string(), "x".into()]).unwrap_err().to_string().contains("--bundle is required")
        );
        assert!(Config::parse(["--bogus".to_string()]).is_err());
    }
}
