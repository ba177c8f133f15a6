//! `berth logs` and the output half of `run`, `start -a` and `attach`:
//! the shim's log copied to stdout and stderr by the engine's
//! [`LogFollower`] (shared with berthd's Docker API).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use berth_engine::engine::Engine;
use berth_engine::store::Status;
use chrono::Utc;
use clap::Args;

pub use berth_engine::logread::{LogFollower, parse_time};

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
    if !berth_engine::logconfig::LogConfig::of_record(&rec.config).readable() {
        bail!("configured logging driver does not support reading");
    }
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
