//! `berth logs` and the output half of `run`, `start -a` and `attach`:
//! the shim's json-file log (docker's format, one JSON object per line
//! with `log`, `stream` and `time`) copied to stdout and stderr.

use std::io::{BufRead, Seek, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use berth_engine::engine::Engine;
use berth_engine::store::Status;
use chrono::{DateTime, FixedOffset, Utc};
use clap::Args;

#[derive(Args)]
pub struct LogsArgs {
    /// Follow log output until the container stops
    #[arg(short, long)]
    follow: bool,
    /// Number of lines to show from the end of the logs ("all" for all)
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Show logs since a timestamp (RFC 3339, Unix seconds) or a relative time (e.g. 42m)
    #[arg(long)]
    since: Option<String>,
    /// Show logs before a timestamp or relative time
    #[arg(long)]
    until: Option<String>,
    /// Show timestamps
    #[arg(short, long)]
    timestamps: bool,
    container: String,
}

pub fn logs(engine: &Engine, a: LogsArgs) -> Result<()> {
    let rec = engine.containers()?.get(&a.container)?;
    let tail = match a.tail.as_str() {
        "all" | "-1" => None,
        n => Some(n.parse::<usize>().with_context(|| format!("--tail {n:?}: not a number of lines or \"all\""))?),
    };
    let now = Utc::now();
    let since = a.since.as_deref().map(|s| parse_time(s, now)).transpose()?;
    let until = a.until.as_deref().map(|s| parse_time(s, now)).transpose()?;
    let mut f = LogFollower::new(engine.log_path(&rec));
    f.timestamps = a.timestamps;
    f.since = since;
    f.until = until;
    if let Some(n) = tail {
        f.skip_to_last(n)?;
    }
    f.pump()?;
    if a.follow {
        // docker's -f ends when the container does.
        loop {
            let now = engine.refresh(&engine.containers()?.get(&rec.id)?);
            f.pump()?;
            if !matches!(now.status, Status::Running | Status::Paused | Status::Restarting) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// docker's `--since`/`--until`: RFC 3339 (with or without a zone), Unix
/// seconds (with fractions), or a duration back from now (`10m`, `1h30m`).
pub fn parse_time(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Ok(t.and_utc());
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(s, f) {
            return Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
        }
    }
    if let Ok(secs) = s.parse::<f64>() {
        let nanos = (secs.fract() * 1e9) as u32;
        return DateTime::from_timestamp(secs.trunc() as i64, nanos).context("timestamp out of range");
    }
    Ok(now - parse_duration(s)?)
}

/// Go's duration syntax as docker takes it: `1h30m`, `90s`, `250ms`.
fn parse_duration(s: &str) -> Result<chrono::Duration> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        bail!("empty time");
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_end);
        let unit_end = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_end);
        let n: f64 = num.parse().with_context(|| format!("{s:?}: not a time, Unix timestamp or duration"))?;
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => bail!("{s:?}: not a time, Unix timestamp or duration (units: ns us ms s m h)"),
        };
        total += n * scale;
        rest = next;
    }
    Ok(chrono::Duration::milliseconds((total * 1000.0) as i64))
}

/// Copies new json-file log entries to stdout and stderr, from where the
/// last call stopped.
pub struct LogFollower {
    path: PathBuf,
    offset: u64,
    pub timestamps: bool,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl LogFollower {
    pub fn new(path: PathBuf) -> LogFollower {
        LogFollower { path, offset: 0, timestamps: false, since: None, until: None }
    }

    /// Starts at the log's current end: only what comes next is copied.
    pub fn at_end(path: PathBuf) -> LogFollower {
        let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        LogFollower { offset, ..LogFollower::new(path) }
    }

    /// Moves to the start of the last `n` entries.
    fn skip_to_last(&mut self, n: usize) -> Result<()> {
        let Ok(f) = std::fs::File::open(&self.path) else { return Ok(()) };
        let mut starts = vec![0u64];
        let mut pos = 0u64;
        for line in std::io::BufReader::new(f).split(b'\n') {
            pos += line?.len() as u64 + 1;
            starts.push(pos);
        }
        // `starts` ends with the offset after the last line.
        let lines = starts.len() - 1;
        self.offset = starts[lines.saturating_sub(n)];
        Ok(())
    }

    pub fn pump(&mut self) -> Result<()> {
        let Ok(mut f) = std::fs::File::open(&self.path) else { return Ok(()) };
        f.seek(std::io::SeekFrom::Start(self.offset))?;
        let mut r = std::io::BufReader::new(f);
        let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
        loop {
            let mut line = String::new();
            let n = r.read_line(&mut line)?;
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            self.offset += n as u64;
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            let time = v["time"].as_str().unwrap_or_default();
            if self.since.is_some() || self.until.is_some() {
                let t = DateTime::<FixedOffset>::parse_from_rfc3339(time).map(|t| t.with_timezone(&Utc)).ok();
                if t.is_some_and(|t| self.since.is_some_and(|s| t < s) || self.until.is_some_and(|u| t > u)) {
                    continue;
                }
            }
            let text = v["log"].as_str().unwrap_or_default();
            let w: &mut dyn Write = if v["stream"] == "stderr" { &mut err } else { &mut out };
            if self.timestamps {
                write!(w, "{time} ")?;
            }
            w.write_all(text.as_bytes())?;
        }
        out.flush()?;
        err.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_dockers() {
        let now = DateTime::parse_from_rfc3339("2026-12-04T12:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_time("10m", now).unwrap().to_rfc3339(), "2026-12-04T11:50:00+00:00");
        assert_eq!(parse_time("1h30m", now).unwrap().to_rfc3339(), "2026-12-04T10:30:00+00:00");
        assert_eq!(parse_time("2026-12-04T11:00:00Z", now).unwrap().to_rfc3339(), "2026-12-04T11:00:00+00:00");
        assert_eq!(parse_time("2026-12-04", now).unwrap().to_rfc3339(), "2026-12-04T00:00:00+00:00");
        assert_eq!(parse_time("1764849600", now).unwrap().to_rfc3339(), "2025-12-04T12:00:00+00:00");
        assert!(parse_time("yesterday", now).is_err());
    }

    #[test]
    fn tail_starts_at_the_last_entries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.log");
        let lines: String =
            (0..5).map(|i| format!("{{\"log\":\"{i}\\n\",\"stream\":\"stdout\",\"time\":\"t\"}}\n")).collect();
        std::fs::write(&p, &lines).unwrap();
        let mut f = LogFollower::new(p.clone());
        f.skip_to_last(2).unwrap();
        let rest = &lines.as_bytes()[f.offset as usize..];
        assert_eq!(String::from_utf8_lossy(rest).lines().count(), 2);
        assert!(String::from_utf8_lossy(rest).starts_with("{\"log\":\"3"));
        f.skip_to_last(10).unwrap();
        assert_eq!(f.offset, 0);
    }
}
