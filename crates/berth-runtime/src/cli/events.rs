use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use berth_cgroups::oom::OomWatcher;
use berth_runtime::container::Status;
use clap::Args;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde::Serialize;

use super::Globals;

/// runc's `events`. liboci-cli's Events takes whole seconds; runc takes Go
/// durations ("5s", "100ms"), so this one is ours.
#[derive(Args, Debug)]
pub struct Events {
    /// Stats interval (Go duration: 5s, 500ms, 1m)
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Print the container's stats once and exit
    #[arg(long)]
    pub stats: bool,
    /// Container identifier
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new(), required = true)]
    pub container_id: String,
}

/// One line of output, as runc's types.Event.
#[derive(Serialize)]
struct Event<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<T>,
}

pub fn run(g: &Globals, a: Events) -> Result<i32> {
    let c = g.load(&a.container_id)?;
    if c.status() == Status::Stopped {
        bail!("container not running");
    }
    let Some(cg) = c.state.cgroup.clone() else { bail!("container has no cgroup to report on") };
    let emit = |kind: &str, data: Option<berth_cgroups::stats::Stats>| -> Result<()> {
        let line = serde_json::to_string(&Event { kind, id: &a.container_id, data })?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
        Ok(())
    };
    if a.stats {
        emit("stats", Some(cg.stats()))?;
        return Ok(0);
    }
    let mut oom = OomWatcher::new(&cg)?;
    let mut next = Instant::now();
    loop {
        if Instant::now() >= next {
            if c.status() == Status::Stopped {
                return Ok(0);
            }
            emit("stats", Some(cg.stats()))?;
            next += a.interval;
        }
        let wait = next.saturating_duration_since(Instant::now());
        let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
        let Some(w) = oom.as_mut() else {
            std::thread::sleep(wait);
            continue;
        };
        let mut fds = [PollFd::new(w.fd(), PollFlags::POLLIN)];
        let ready = match poll(&mut fds, timeout) {
            Ok(n) => n > 0,
            Err(nix::errno::Errno::EINTR) => false,
            Err(e) => return Err(e.into()),
        };
        if ready {
            let (kills, gone) = w.read()?;
            for _ in 0..kills {
                emit("oom", None)?;
            }
            if gone {
                oom = None;
            }
        }
    }
}

/// A Go duration: a sequence of number+unit (h, m, s, ms, us, ns).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}: use e.g. 5s, 500ms, 1m30s");
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let n_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let n: f64 = rest[..n_end].parse().map_err(|_| bad())?;
        rest = &rest[n_end..];
        let u_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = match &rest[..u_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(bad()),
        };
        total += Duration::from_secs_f64(n * unit);
        rest = &rest[u_end..];
    }
    if total.is_zero() {
        return Err(format!("duration {s:?} must be more than zero"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("0s").is_err());
    }
}
