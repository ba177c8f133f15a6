//! The engine's event log: what happened to containers, images, networks
//! and volumes, whichever front end did it (the `berth` CLI, berthd's CRI
//! and Docker API) and whether or not one was there (each shim writes its
//! container's `die`). One file, `RUNROOT/events/events.log`, as podman's
//! file events backend: the format, the atomic appends and the rotation
//! are [`berth_shim::events`]'s (the shim writes it too); this module
//! emits, reads, filters and follows it.
//!
//! Emitting never fails an operation: a log that cannot be written is a
//! warning. Readers skip what they cannot parse (a line torn by a full
//! disk) and pick up the next event at its `{"time":`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read as _, Seek as _};
use std::os::fd::AsFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_shim::events::{LINE_START, LOG, ROTATED};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::store::ContainerRecord;

pub use berth_shim::events::now_nano;

/// One event, as the log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// ns since the epoch.
    #[serde(rename = "time")]
    pub time_nano: i64,
    /// container, image, network or volume.
    #[serde(rename = "type")]
    pub kind: String,
    pub action: String,
    /// The actor: a container's or image's ID, a network's or volume's name.
    pub id: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

impl Event {
    /// docker's `events` line: `2026-12-05T10:00:00.123456789Z container
    /// start ID (image=busybox, name=web)`.
    pub fn docker_line(&self) -> String {
        let mut s = format!("{} {} {} {}", rfc3339_nano(self.time_nano), self.kind, self.action, self.id);
        if !self.attributes.is_empty() {
            let attrs: Vec<String> = self.attributes.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!(" ({})", attrs.join(", ")));
        }
        s
    }

    /// dockerd's JSON message (`GET /events`, `docker events --format
    /// '{{json .}}'`): Type, Action, Actor, scope, time, timeNano, and for
    /// containers the legacy status, id and from.
    pub fn docker_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "Type": self.kind,
            "Action": self.action,
            "Actor": { "ID": self.id, "Attributes": self.attributes },
            "scope": "local",
            "time": self.time_nano.div_euclid(1_000_000_000),
            "timeNano": self.time_nano,
        });
        if self.kind == "container" {
            v["status"] = self.action.clone().into();
            v["id"] = self.id.clone().into();
            v["from"] = self.attributes.get("image").cloned().unwrap_or_default().into();
        }
        v
    }
}

/// Go's time.RFC3339Nano in UTC (trailing zeros of the fraction dropped),
/// as docker prints event times.
pub fn rfc3339_nano(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let frac = ns.rem_euclid(1_000_000_000);
    let t = chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default();
    let mut f = format!("{frac:09}");
    while f.ends_with('0') {
        f.pop();
    }
    let dot = if f.is_empty() { String::new() } else { format!(".{f}") };
    format!("{}{dot}Z", t.format("%Y-%m-%dT%H:%M:%S"))
}

/// One log line as an event; a line torn by a writer that failed mid-line
/// (and the line appended after it) yields the last event it holds.
pub fn parse_line(line: &str) -> Option<Event> {
    if let Ok(e) = serde_json::from_str(line) {
        return Some(e);
    }
    let at = line.rfind(LINE_START).filter(|i| *i > 0)?;
    serde_json::from_str(&line[at..]).ok()
}

/// docker's event filters: keys type, event (action), container (ID or
/// name), image, label (`KEY` or `KEY=VALUE`), network, volume. Values of
/// one key are alternatives; keys must all match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter(BTreeMap<String, Vec<String>>);

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FilterError {
    #[error("bad format of filter (expected name=value): {0}")]
    Format(String),
    #[error("invalid filter '{0}'")]
    Key(String),
    #[error("invalid filters: {0}")]
    Json(String),
}

const KEYS: &[&str] = &["type", "event", "container", "image", "label", "network", "volume", "scope", "daemon"];

impl Filter {
    /// `--filter KEY=VALUE` as given on the command line.
    pub fn from_args(args: &[String]) -> Result<Filter, FilterError> {
        let mut f = Filter::default();
        for a in args {
            let (k, v) = a.split_once('=').ok_or_else(|| FilterError::Format(a.clone()))?;
            f.add(k, v)?;
        }
        Ok(f)
    }

    /// The API's `filters` parameter: `{"type":["container"]}` or the
    /// older `{"type":{"container":true}}`.
    pub fn from_json(s: &str) -> Result<Filter, FilterError> {
        let v: serde_json::Value = serde_json::from_str(s).map_err(|e| FilterError::Json(e.to_string()))?;
        let map = v.as_object().ok_or_else(|| FilterError::Json("not an object".into()))?;
        let mut f = Filter::default();
        for (k, vals) in map {
            let vals: Vec<String> = match vals {
                serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect(),
                serde_json::Value::Object(o) => {
                    o.iter().filter(|(_, on)| on.as_bool() == Some(true)).map(|(x, _)| x.clone()).collect()
                }
                _ => return Err(FilterError::Json(format!("{k}: not a list"))),
            };
            for x in vals {
                f.add(k, &x)?;
            }
        }
        Ok(f)
    }

    fn add(&mut self, key: &str, value: &str) -> Result<(), FilterError> {
        if !KEYS.contains(&key) {
            return Err(FilterError::Key(key.to_owned()));
        }
        self.0.entry(key.to_owned()).or_default().push(value.to_owned());
        Ok(())
    }

    pub fn matches(&self, e: &Event) -> bool {
        self.0.iter().all(|(k, vals)| vals.iter().any(|v| self.one(k, v, e)))
    }

    fn one(&self, key: &str, v: &str, e: &Event) -> bool {
        let attr = |k: &str| e.attributes.get(k).map(String::as_str);
        match key {
            "type" => e.kind == v,
            // docker: "exec_start: sh" is matched by "exec_start".
            "event" => e.action == v || e.action.split(':').next() == Some(v),
            "container" => e.kind == "container" && (e.id.starts_with(v) || attr("name") == Some(v)),
            "image" => match e.kind.as_str() {
                "image" => e.id == v || attr("name") == Some(v),
                _ => attr("image").is_some_and(|i| tagged(i) == tagged(v)),
            },
            "label" => match v.split_once('=') {
                Some((k, val)) => attr(k) == Some(val),
                None => attr(v).is_some(),
            },
            "network" => e.kind == "network" && (e.id == v || attr("name") == Some(v)),
            "volume" => e.kind == "volume" && (e.id == v || attr("name") == Some(v)),
            "scope" => v == "local",
            _ => true,
        }
    }
}

/// A reference with docker's default tag: `busybox` is `busybox:latest`.
fn tagged(r: &str) -> String {
    let last = r.rsplit('/').next().unwrap_or(r);
    if last.contains(':') || last.contains('@') { r.to_owned() } else { format!("{r}:latest") }
}

/// A time as `--since`/`--until` take it, in ns since the epoch: Unix
/// seconds (`1733392800`, `1733392800.5`), RFC 3339 (`2026-12-05T10:00:00Z`,
/// or a date), or a duration before `now` (`10m`, `1h30m`, `500ms`).
pub fn parse_time(s: &str, now: i64) -> Option<i64> {
    let s = s.trim();
    if let Some((secs, frac)) = s.split_once('.').or(Some((s, ""))).filter(|(a, b)| {
        !a.is_empty() && a.bytes().all(|c| c.is_ascii_digit()) && b.bytes().all(|c| c.is_ascii_digit())
    }) {
        let secs: i64 = secs.parse().ok()?;
        let frac: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
        return Some(secs.checked_mul(1_000_000_000)? + frac.parse::<i64>().ok()?);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return t.timestamp_nanos_opt();
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_nanos_opt();
    }
    go_duration(s).map(|d| now - d)
}

/// Go's time.ParseDuration (without signs): ns.
fn go_duration(s: &str) -> Option<i64> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).filter(|n| *n > 0)?;
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += value * unit;
        rest = &rest[u..];
    }
    Some(total as i64)
}

/// What a reader asks for.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// ns since the epoch; None: from the start of the log.
    pub since: Option<i64>,
    /// ns since the epoch; None: no end (follow, when following).
    pub until: Option<i64>,
    pub filter: Filter,
    /// Keep reading new events as they come (until `until`, if given).
    pub follow: bool,
}

/// Reads the log in `dir`, giving `out` each event the query wants, in
/// order, replayed from the rotated log on; with `follow`, it then waits
/// for new ones (inotify on the directory) until `until` passes or `out`
/// (or `keep_going`, asked at least twice a second) says stop.
pub fn read(
    dir: &Path,
    q: &Query,
    mut out: impl FnMut(&Event) -> bool,
    mut keep_going: impl FnMut() -> bool,
) -> std::io::Result<()> {
    // The watch first: an event appended after the replay wakes us.
    let watch = if q.follow { watch(dir).ok() } else { None };
    let mut live = Tail::open(dir)?;
    if let Some(mut old) = File::open(dir.join(ROTATED)).ok().filter(|f| !live.is(f)) {
        let mut text = String::new();
        old.read_to_string(&mut text)?;
        for l in text.lines() {
            if !give(q, l, &mut out) {
                return Ok(());
            }
        }
    }
    loop {
        for l in live.new_lines()? {
            if !give(q, &l, &mut out) {
                return Ok(());
            }
        }
        let now = now_nano();
        if !q.follow || q.until.is_some_and(|u| now > u) || !keep_going() {
            return Ok(());
        }
        // Rotated since we opened it: drain the old file, then the new.
        if live.rotated(dir) {
            for l in live.new_lines()? {
                if !give(q, &l, &mut out) {
                    return Ok(());
                }
            }
            live = Tail::open(dir)?;
            continue;
        }
        wait(watch.as_ref(), Duration::from_millis(500));
    }
}

/// The events of `q` in the log now (no follow).
pub fn collect(dir: &Path, q: &Query) -> std::io::Result<Vec<Event>> {
    let mut all = Vec::new();
    let q = Query { follow: false, ..q.clone() };
    read(
        dir,
        &q,
        |e| {
            all.push(e.clone());
            true
        },
        || true,
    )?;
    Ok(all)
}

fn give(q: &Query, line: &str, out: &mut impl FnMut(&Event) -> bool) -> bool {
    let Some(e) = parse_line(line) else { return true };
    if q.since.is_some_and(|s| e.time_nano < s) || !q.filter.matches(&e) {
        return true;
    }
    if q.until.is_some_and(|u| e.time_nano > u) {
        // Later lines may still be in range (writers' clocks race a little).
        return true;
    }
    out(&e)
}

/// The live log, read as it grows; a line not yet ended waits for its end.
struct Tail {
    file: Option<File>,
    partial: Vec<u8>,
}

impl Tail {
    fn open(dir: &Path) -> std::io::Result<Tail> {
        match File::open(dir.join(LOG)) {
            Ok(f) => Ok(Tail { file: Some(f), partial: Vec::new() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Tail { file: None, partial: Vec::new() }),
            Err(e) => Err(e),
        }
    }

    fn is(&self, other: &File) -> bool {
        let ino = |f: &File| f.metadata().ok().map(|m| (m.dev(), m.ino()));
        self.file.as_ref().is_some_and(|f| ino(f).is_some() && ino(f) == ino(other))
    }

    /// Whether the log in `dir` is no longer the file being read (or
    /// appeared since there was none).
    fn rotated(&self, dir: &Path) -> bool {
        match (&self.file, std::fs::metadata(dir.join(LOG))) {
            (None, Ok(_)) => true,
            (Some(f), Ok(now)) => f.metadata().is_ok_and(|m| m.ino() != now.ino() || m.dev() != now.dev()),
            _ => false,
        }
    }

    fn new_lines(&mut self) -> std::io::Result<Vec<String>> {
        let Some(f) = self.file.as_mut() else { return Ok(Vec::new()) };
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else { return Ok(Vec::new()) };
        let whole: Vec<u8> = self.partial.drain(..=end).collect();
        // Keep the offset where read_to_end left it.
        let _ = f.stream_position();
        Ok(String::from_utf8_lossy(&whole).lines().map(str::to_owned).collect())
    }
}

fn watch(dir: &Path) -> nix::Result<Inotify> {
    let _ = std::fs::create_dir_all(dir);
    let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
    ino.add_watch(
        dir,
        AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_MOVED_FROM,
    )?;
    Ok(ino)
}

/// Until the directory changes, at most `limit` (no watch: a plain sleep).
fn wait(watch: Option<&Inotify>, limit: Duration) {
    let Some(ino) = watch else {
        std::thread::sleep(limit.min(Duration::from_millis(100)));
        return;
    };
    let mut fds = [PollFd::new(ino.as_fd(), PollFlags::POLLIN)];
    let ms = u16::try_from(limit.as_millis()).unwrap_or(u16::MAX);
    if poll(&mut fds, PollTimeout::from(ms)).is_ok_and(|n| n > 0) {
        // Drained: the next wait waits for the next change.
        while ino.read_events().is_ok_and(|e| !e.is_empty()) {}
    }
}

impl Engine {
    /// Where the event log lives.
    pub fn events_dir(&self) -> PathBuf {
        self.runroot.join("events")
    }

    /// Appends an event; a failure is a warning, never the operation's.
    pub fn emit(&self, kind: &str, action: &str, id: &str, attributes: BTreeMap<String, String>) {
        let line = berth_shim::events::line(now_nano(), kind, action, id, &attributes);
        if let Err(e) = berth_shim::events::append(&self.events_dir(), &line) {
            tracing::warn!(kind, action, id, "append to the event log {}: {e}", self.events_dir().display());
        }
    }

    /// A container's attributes as docker gives them: its labels, image
    /// and name.
    pub fn container_attributes(rec: &ContainerRecord) -> BTreeMap<String, String> {
        let mut a = rec.labels.clone();
        a.insert("image".into(), rec.image.clone());
        a.insert("name".into(), rec.name.clone());
        a
    }

    /// A container event, with `extra` attributes (a kill's signal).
    pub fn container_event(&self, rec: &ContainerRecord, action: &str, extra: &[(&str, String)]) {
        let mut a = Engine::container_attributes(rec);
        a.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        self.emit("container", action, &rec.id, a);
    }

    /// An exec's event, as docker names them: `exec_create: CMD`,
    /// `exec_start: CMD`, then `exec_die` with its exit code, each with
    /// the exec's ID.
    pub fn exec_event(&self, rec: &ContainerRecord, action: &str, cmd: &[String], exec_id: &str, code: Option<i32>) {
        let mut extra = vec![("execID", exec_id.to_owned())];
        let action = match code {
            Some(c) => {
                extra.push(("exitCode", c.to_string()));
                action.to_owned()
            }
            None => format!("{action}: {}", cmd.join(" ")),
        };
        self.container_event(rec, &action, &extra);
    }

    /// A network or volume event (its name is its ID).
    pub fn named_event(&self, kind: &str, action: &str, name: &str, extra: &[(&str, String)]) {
        let mut a: BTreeMap<String, String> = extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        a.insert("name".into(), name.to_owned());
        if kind == "network" {
            a.entry("type".into()).or_insert_with(|| "bridge".into());
        }
        if kind == "volume" {
            a.entry("driver".into()).or_insert_with(|| "local".into());
        }
        self.emit(kind, action, name, a);
    }

    /// An image event: `id` is the reference or ID docker shows.
    pub fn image_event(&self, action: &str, id: &str, name: &str) {
        self.emit("image", action, id, [("name".to_owned(), name.to_owned())].into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: i64, kind: &str, action: &str, id: &str, attrs: &[(&str, &str)]) -> Event {
        Event {
            time_nano: t,
            kind: kind.into(),
            action: action.into(),
            id: id.into(),
            attributes: attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn lines_print_as_docker_events_prints_them() {
        let e = ev(1_764_928_800_123_456_789, "container", "start", "abc", &[("name", "web"), ("image", "busybox")]);
        assert_eq!(e.docker_line(), "2025-12-05T10:00:00.123456789Z container start abc (image=busybox, name=web)");
        assert_eq!(rfc3339_nano(1_764_928_800_100_000_000), "2025-12-05T10:00:00.1Z");
        assert_eq!(rfc3339_nano(1_764_928_800_000_000_000), "2025-12-05T10:00:00Z");
        let j = e.docker_json();
        assert_eq!(
            (j["status"].as_str(), j["from"].as_str(), j["time"].as_i64()),
            (Some("start"), Some("busybox"), Some(1_764_928_800))
        );
        assert_eq!(j["Actor"]["Attributes"]["name"], "web");
    }

    #[test]
    fn filters_match_as_dockers_do() {
        let e = ev(1, "container", "die", "abcdef", &[("name", "web"), ("image", "busybox"), ("com.x", "1")]);
        let f = |args: &[&str]| Filter::from_args(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        assert!(f(&["event=die", "event=start"]).matches(&e));
        assert!(!f(&["event=start"]).matches(&e));
        assert!(f(&["container=web", "type=container"]).matches(&e));
        assert!(f(&["container=abc"]).matches(&e));
        assert!(f(&["image=busybox:latest"]).matches(&e) && !f(&["image=alpine"]).matches(&e));
        assert!(f(&["label=com.x"]).matches(&e) && f(&["label=com.x=1"]).matches(&e));
        assert!(!f(&["label=com.x=2"]).matches(&e));
        assert!(!f(&["network=web"]).matches(&e));
        assert_eq!(Filter::from_args(&["bogus=1".into()]), Err(FilterError::Key("bogus".into())));
        let j = Filter::from_json(r#"{"type":{"container":true},"event":["die"]}"#).unwrap();
        assert!(j.matches(&e));
    }

    #[test]
    fn times_parse_as_docker_takes_them() {
        assert_eq!(parse_time("1733392800", 0), Some(1_733_392_800_000_000_000));
        assert_eq!(parse_time("1733392800.5", 0), Some(1_733_392_800_500_000_000));
        assert_eq!(parse_time("2024-12-05T10:00:00Z", 0), Some(1_733_392_800_000_000_000));
        assert_eq!(parse_time("1m30s", 100_000_000_000), Some(10_000_000_000));
        assert_eq!(parse_time("soon", 0), None);
    }

    #[test]
    fn a_torn_line_is_skipped_and_the_event_after_it_kept() {
        let dir = tempfile::tempdir().unwrap();
        let good = berth_shim::events::line(5, "container", "start", "b", &BTreeMap::new());
        // A writer that died mid-line, then one more whole line.
        let text = format!("{{\"time\":3,\"type\":\"conta{good}garbage\n");
        std::fs::write(dir.path().join(LOG), text).unwrap();
        let all = collect(dir.path(), &Query::default()).unwrap();
        assert_eq!(all.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn a_follower_reads_on_across_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        // A full log: the next append rotates it.
        let filler = format!("{}\n", "x".repeat(berth_shim::events::MAX_SIZE as usize));
        std::fs::write(dir.path().join(LOG), filler).unwrap();
        let path = dir.path().to_owned();
        let reader = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let q = Query { follow: true, ..Default::default() };
            read(
                &path,
                &q,
                |e| {
                    seen.push(e.id.clone());
                    seen.len() < 2
                },
                || true,
            )
            .unwrap();
            seen
        });
        // Give the reader the old file first (it follows either way).
        std::thread::sleep(Duration::from_millis(100));
        let l = |id: &str| berth_shim::events::line(now_nano(), "volume", "create", id, &BTreeMap::new());
        berth_shim::events::append(dir.path(), &l("after-rotation")).unwrap();
        berth_shim::events::append(dir.path(), &l("next")).unwrap();
        assert!(dir.path().join(ROTATED).exists(), "rotated");
        assert_eq!(reader.join().unwrap(), ["after-rotation", "next"]);
    }

    #[test]
    fn the_rotated_log_is_read_first_and_since_until_select() {
        let dir = tempfile::tempdir().unwrap();
        let l = |t, id: &str| berth_shim::events::line(t, "volume", "create", id, &BTreeMap::new());
        std::fs::write(dir.path().join(ROTATED), l(1, "a") + &l(2, "b")).unwrap();
        std::fs::write(dir.path().join(LOG), l(3, "c")).unwrap();
        let ids = |q: &Query| collect(dir.path(), q).unwrap().into_iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(&Query::default()), ["a", "b", "c"]);
        assert_eq!(ids(&Query { since: Some(2), until: Some(2), ..Default::default() }), ["b"]);
    }
}
