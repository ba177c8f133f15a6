//! From a split line to a typed instruction, with docker's checks and
//! messages (BuildKit's `instructions/parse.go`).

use std::time::Duration;

use super::words::{Flags, Kind, Split, parse_json, parse_words, split_command, split_ws};
use super::{Logical, ParseError, parse_heredoc_word};
use crate::ast::{Add, ArgDecl, Command, Copy, Healthcheck, Heredoc, Instruction, NetworkMode, Onbuild, Run};

/// A FROM line.
pub(crate) struct FromLine {
    pub name: Option<String>,
    pub base: String,
    pub platform: Option<String>,
}

pub(crate) enum Parsed {
    From(FromLine),
    Inst(Instruction),
}

/// The instruction being parsed, for its errors' positions.
struct Ctx<'a> {
    l: &'a Logical,
    s: &'a Split,
    escape: char,
}

type R<T> = Result<T, ParseError>;

impl Ctx<'_> {
    fn at_cmd(&self, m: impl Into<String>) -> ParseError {
        self.l.err(self.s.cmd.off, m)
    }
    fn at_args(&self, m: impl Into<String>) -> ParseError {
        self.l.err(self.s.args.off, m)
    }
    fn name(&self) -> String {
        self.s.cmd.text.to_ascii_uppercase()
    }
    fn args(&self) -> &str {
        &self.s.args.text
    }
    fn flags(&self, spec: &[(&str, Kind)]) -> R<Flags> {
        Flags::parse(self.l, &self.s.flags, spec)
    }
    fn no_flags(&self) -> R<()> {
        self.flags(&[]).map(drop)
    }
    /// The whole rest as one argument (WORKDIR, USER, STOPSIGNAL, MAINTAINER).
    fn one(&self) -> R<String> {
        if self.args().is_empty() {
            return Err(self.at_cmd(format!("{} requires exactly one argument", self.name())));
        }
        self.no_flags()?;
        Ok(self.args().to_string())
    }
    fn at_least_one(&self) -> ParseError {
        self.at_cmd(format!("{} requires at least one argument", self.name()))
    }
    /// JSON array, or None for the shell form.
    fn json(&self) -> R<Option<Vec<String>>> {
        parse_json(self.args()).map_err(|m| self.at_args(m))
    }
    /// RUN, CMD, ENTRYPOINT: the exec or the shell form.
    fn command(&self) -> R<Command> {
        Ok(match self.json()? {
            Some(v) => Command::Exec(v),
            None => Command::Shell(self.args().to_string()),
        })
    }
    /// COPY, ADD, VOLUME: the JSON array or whitespace-separated words.
    fn list(&self) -> R<Vec<String>> {
        Ok(self.json()?.unwrap_or_else(|| split_ws(self.args())))
    }
}

pub(crate) fn parse_instruction(l: &Logical, s: &Split, heredocs: Vec<Heredoc>, escape: char) -> R<Parsed> {
    let c = Ctx { l, s, escape };
    let inst = match s.cmd.text.to_ascii_lowercase().as_str() {
        "from" => return parse_from(&c).map(Parsed::From),
        "run" => Instruction::Run(parse_run(&c, heredocs)?),
        "copy" => Instruction::Copy(parse_copy(&c, heredocs)?),
        "add" => Instruction::Add(parse_add(&c, heredocs)?),
        "env" => Instruction::Env(parse_kv(&c)?),
        "label" => Instruction::Label(parse_kv(&c)?),
        "arg" => Instruction::Arg(parse_arg(&c)?),
        "workdir" => Instruction::Workdir(c.one()?),
        "user" => Instruction::User(c.one()?),
        "stopsignal" => Instruction::Stopsignal(c.one()?),
        "maintainer" => Instruction::Maintainer(c.one()?),
        "expose" => {
            let ports = split_ws(c.args());
            if ports.is_empty() {
                return Err(c.at_least_one());
            }
            c.no_flags()?;
            Instruction::Expose(ports)
        }
        "volume" => Instruction::Volume(parse_volume(&c)?),
        "cmd" => {
            c.no_flags()?;
            Instruction::Cmd(c.command()?)
        }
        "entrypoint" => {
            c.no_flags()?;
            Instruction::Entrypoint(c.command()?)
        }
        "shell" => Instruction::Shell(parse_shell(&c)?),
        "healthcheck" => Instruction::Healthcheck(parse_healthcheck(&c)?),
        "onbuild" => Instruction::Onbuild(parse_onbuild(&c, heredocs)?),
        _ => return Err(c.at_cmd(format!("unknown instruction: {}", s.cmd.text))),
    };
    Ok(Parsed::Inst(inst))
}

fn parse_from(c: &Ctx) -> R<FromLine> {
    let args = split_ws(c.args());
    let name = match args.as_slice() {
        [_, as_, name] if as_.eq_ignore_ascii_case("as") => {
            let lower = name.to_ascii_lowercase();
            if !valid_stage_name(&lower) {
                return Err(c.at_args(format!(
                    "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
                )));
            }
            Some(lower)
        }
        [_] => None,
        _ => return Err(c.at_cmd("FROM requires either one or three arguments")),
    };
    let flags = c.flags(&[("platform", Kind::Str)])?;
    Ok(FromLine { name, base: args[0].clone(), platform: flags.str("platform") })
}

/// `^[a-z][a-z0-9-_.]*$`
fn valid_stage_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

fn parse_run(c: &Ctx, heredocs: Vec<Heredoc>) -> R<Run> {
    let flags = c.flags(&[("mount", Kind::Strs), ("network", Kind::Str), ("security", Kind::Str)])?;
    let network = match flags.str("network").as_deref() {
        None => None,
        Some("default") => Some(NetworkMode::Default),
        Some("none") => Some(NetworkMode::None),
        Some("host") => Some(NetworkMode::Host),
        Some(v) => return Err(c.l.err(flags.off("network").unwrap_or(0), format!("invalid network mode {v:?}"))),
    };
    let security = flags.str("security");
    if let Some(v) = security.as_deref().filter(|v| !matches!(*v, "insecure" | "sandbox")) {
        return Err(c.l.err(flags.off("security").unwrap_or(0), format!("security {v:?} is not valid")));
    }
    let mounts = flags
        .all("mount")
        .into_iter()
        .map(|(spec, off)| super::mount::parse_at_parse_time(&spec).map_err(|m| c.l.err(off, m)))
        .collect::<R<Vec<_>>>()?;
    Ok(Run { command: c.command()?, mounts, network, security, heredocs })
}

/// COPY's and ADD's shared part: sources (heredocs apart) and destination.
fn sources_and_dest(c: &Ctx, heredocs: Vec<Heredoc>) -> R<(Vec<String>, String, Vec<Heredoc>)> {
    let mut args = c.list()?;
    if args.len() < 2 {
        return Err(c.at_cmd(format!(
            "{} requires at least two arguments, but only one was provided. Destination could not be determined",
            c.name()
        )));
    }
    let dest = args.pop().unwrap_or_default();
    let head = |w: &str| parse_heredoc_word(w).ok().flatten();
    if head(&dest).is_some() {
        return Err(c.at_args(format!("{} cannot accept a heredoc as a destination", c.name())));
    }
    let mut sources = Vec::new();
    let mut docs = Vec::new();
    for src in args {
        match head(&src) {
            // The body becomes a file of that name (BuildKit: in an empty
            // tree, where a path fails): a plain name only, so no executor
            // can be led to write it elsewhere.
            Some(h) if h.name.contains('/') || h.name == "." || h.name == ".." => {
                return Err(c.at_args(format!("{} heredoc name {:?} must be a plain file name", c.name(), h.name)));
            }
            Some(h) => docs.push(heredocs.iter().find(|d| d.name == h.name).cloned().unwrap_or(Heredoc {
                name: h.name,
                body: String::new(),
                expand: h.expand,
                strip_tabs: h.strip_tabs,
            })),
            None => sources.push(src),
        }
    }
    Ok((sources, dest, docs))
}

fn parse_copy(c: &Ctx, heredocs: Vec<Heredoc>) -> R<Copy> {
    let (sources, dest, heredocs) = sources_and_dest(c, heredocs)?;
    let flags = c.flags(&[
        ("chown", Kind::Str),
        ("from", Kind::Str),
        ("chmod", Kind::Str),
        ("link", Kind::Bool),
        ("exclude", Kind::Strs),
        ("parents", Kind::Bool),
    ])?;
    Ok(Copy {
        sources,
        dest,
        from: flags.str("from"),
        chown: flags.str("chown"),
        chmod: flags.str("chmod"),
        link: flags.bool("link"),
        parents: flags.bool("parents"),
        exclude: flags.all("exclude").into_iter().map(|(v, _)| v).collect(),
        heredocs,
    })
}

fn parse_add(c: &Ctx, heredocs: Vec<Heredoc>) -> R<Add> {
    let (sources, dest, heredocs) = sources_and_dest(c, heredocs)?;
    let flags = c.flags(&[
        ("chown", Kind::Str),
        ("chmod", Kind::Str),
        ("link", Kind::Bool),
        ("keep-git-dir", Kind::Bool),
        ("checksum", Kind::Str),
        ("exclude", Kind::Strs),
    ])?;
    Ok(Add {
        copy: Copy {
            sources,
            dest,
            from: None,
            chown: flags.str("chown"),
            chmod: flags.str("chmod"),
            link: flags.bool("link"),
            parents: false,
            exclude: flags.all("exclude").into_iter().map(|(v, _)| v).collect(),
            heredocs,
        },
        checksum: flags.str("checksum"),
        keep_git_dir: flags.bool("keep-git-dir"),
    })
}

/// ENV and LABEL: `k=v ...`, or the legacy `k v` (the rest of the line is
/// the value).
fn parse_kv(c: &Ctx) -> R<Vec<(String, String)>> {
    c.no_flags()?;
    let name = c.name();
    let words = parse_words(c.args(), c.escape);
    if words.is_empty() {
        return Err(c.at_least_one());
    }
    let pairs = if !words[0].contains('=') {
        let rest = c.args();
        let Some(i) = rest.find(super::words::is_sep) else {
            return Err(c.at_args(format!("{name} must have two arguments")));
        };
        vec![(rest[..i].to_string(), rest[i..].trim_start_matches(super::words::is_sep).to_string())]
    } else {
        let mut pairs = Vec::new();
        for w in words {
            let Some((k, v)) = w.split_once('=') else {
                return Err(c.at_args(format!("Syntax error - can't find = in {w:?}. Must be of the form: name=value")));
            };
            pairs.push((k.to_string(), v.to_string()));
        }
        pairs
    };
    if pairs.iter().any(|(k, _)| k.is_empty()) {
        return Err(c.at_args(format!("{name} names can not be blank")));
    }
    Ok(pairs)
}

fn parse_arg(c: &Ctx) -> R<Vec<ArgDecl>> {
    let words = parse_words(c.args(), c.escape);
    if words.is_empty() {
        return Err(c.at_least_one());
    }
    c.no_flags()?;
    words
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some(("", _)) => Err(c.at_args("ARG names can not be blank")),
            Some((k, v)) => Ok(ArgDecl { name: k.to_string(), default: Some(v.to_string()) }),
            None => Ok(ArgDecl { name: w, default: None }),
        })
        .collect()
}

fn parse_volume(c: &Ctx) -> R<Vec<String>> {
    let list = c.list()?;
    if list.is_empty() {
        return Err(c.at_least_one());
    }
    c.no_flags()?;
    list.into_iter()
        .map(|v| {
            let v = v.trim();
            if v.is_empty() {
                return Err(c.at_args("VOLUME specified can not be an empty string"));
            }
            Ok(v.to_string())
        })
        .collect()
}

fn parse_shell(c: &Ctx) -> R<Vec<String>> {
    c.no_flags()?;
    match c.json()? {
        Some(v) if !v.is_empty() => Ok(v),
        Some(_) => Err(c.at_least_one()),
        None if c.args().is_empty() => Err(c.at_least_one()),
        None => Err(c.at_args("SHELL requires the arguments to be in JSON form")),
    }
}

fn parse_healthcheck(c: &Ctx) -> R<Healthcheck> {
    let args = c.args();
    let sep = args.find(char::is_whitespace).unwrap_or(args.len());
    if sep == 0 {
        return Err(c.at_least_one());
    }
    let typ = args[..sep].to_ascii_uppercase();
    let rest = args[sep..].trim_start();
    let spec = [
        ("interval", Kind::Str),
        ("timeout", Kind::Str),
        ("start-period", Kind::Str),
        ("start-interval", Kind::Str),
        ("retries", Kind::Str),
    ];
    let flags = c.flags(&spec)?;
    if typ == "NONE" {
        if !rest.is_empty() {
            return Err(c.at_args("HEALTHCHECK NONE takes no arguments"));
        }
        return Ok(Healthcheck::None);
    }
    if typ != "CMD" {
        return Err(c.at_args(format!("Unknown type {typ:?} in HEALTHCHECK (try CMD)")));
    }
    let rest_off = c.s.args.off + (args.len() - rest.len());
    let command = match parse_json(rest).map_err(|m| c.l.err(rest_off, m))? {
        Some(v) if !v.is_empty() => Command::Exec(v),
        None if !rest.is_empty() => Command::Shell(rest.to_string()),
        _ => return Err(c.at_args("Missing command after HEALTHCHECK CMD")),
    };
    let interval = |name: &str| -> R<Option<Duration>> {
        let Some(v) = flags.str(name) else { return Ok(None) };
        let at = |m: String| c.l.err(flags.off(name).unwrap_or(0), m);
        let d = go_duration(&v).map_err(at)?;
        if d.is_some_and(|d| d < Duration::from_millis(1)) {
            return Err(at(format!("Interval {name:?} cannot be less than 1ms")));
        }
        Ok(d)
    };
    let retries = match flags.str("retries") {
        None => None,
        Some(v) => {
            let at = |m: String| c.l.err(flags.off("retries").unwrap_or(0), m);
            let n: i32 = v.parse().map_err(|_| at(format!("invalid value for --retries: {v:?}")))?;
            Some(u32::try_from(n).map_err(|_| at(format!("--retries cannot be negative ({n})")))?)
        }
    };
    Ok(Healthcheck::Check {
        command,
        interval: interval("interval")?,
        timeout: interval("timeout")?,
        start_period: interval("start-period")?,
        start_interval: interval("start-interval")?,
        retries,
    })
}

fn parse_onbuild(c: &Ctx, heredocs: Vec<Heredoc>) -> R<Onbuild> {
    if c.args().is_empty() {
        return Err(c.at_least_one());
    }
    c.no_flags()?;
    let sub = split_command(c.l, c.s.args.off, c.escape);
    let trigger_name = sub.cmd.text.to_ascii_uppercase();
    match trigger_name.as_str() {
        "ONBUILD" => return Err(c.at_args("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")),
        "MAINTAINER" | "FROM" => return Err(c.at_args(format!("{trigger_name} isn't allowed as an ONBUILD trigger"))),
        _ => {}
    }
    let mut trigger = c.l.text[c.s.args.off..].to_string();
    for h in &heredocs {
        trigger.push('\n');
        trigger.push_str(&h.body);
        trigger.push_str(&h.name);
    }
    let Parsed::Inst(inst) = parse_instruction(c.l, &sub, heredocs, c.escape)? else {
        return Err(c.at_args("FROM isn't allowed as an ONBUILD trigger"));
    };
    Ok(Onbuild { trigger, instruction: Box::new(inst) })
}

/// Go's `time.ParseDuration` (HEALTHCHECK's flags): `1h30m`, `1.5s`,
/// `300ms`, `0`; None for zero. A negative value is below the minimum.
pub(crate) fn go_duration(orig: &str) -> Result<Option<Duration>, String> {
    let invalid = || format!("time: invalid duration {orig:?}");
    let (neg, mut s) = match orig.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, orig.strip_prefix('+').unwrap_or(orig)),
    };
    if s == "0" {
        return Ok(None);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !s.is_empty() {
        let int_len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let int = &s[..int_len];
        s = &s[int_len..];
        let mut frac = "";
        if let Some(r) = s.strip_prefix('.') {
            let n = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            frac = &r[..n];
            s = &r[n..];
        } else if int.is_empty() {
            return Err(invalid());
        }
        if int.is_empty() && frac.is_empty() {
            return Err(invalid());
        }
        let unit_len = s.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(s.len());
        let unit = &s[..unit_len];
        s = &s[unit_len..];
        let nanos: f64 = match unit {
            "" => return Err(format!("time: missing unit in duration {orig:?}")),
            "ns" => 1.0,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(format!("time: unknown unit {unit:?} in duration {orig:?}")),
        };
        let number: f64 =
            format!("{}.{}", if int.is_empty() { "0" } else { int }, if frac.is_empty() { "0" } else { frac })
                .parse()
                .map_err(|_| invalid())?;
        total += number * nanos;
    }
    if total > i64::MAX as f64 {
        return Err(invalid());
    }
    if neg && total > 0.0 {
        // Below any minimum: report it as the smallest positive value.
        return Ok(Some(Duration::ZERO));
    }
    Ok((total > 0.0).then(|| Duration::from_nanos(total as u64)))
}
