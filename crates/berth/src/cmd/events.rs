//! `events`: the engine's event log (see berth_engine::events), as
//! `docker events` prints it: replayed from `--since`, then followed as
//! it grows until `--until` passes or the command is killed.

use std::io::Write as _;

use anyhow::{Context, Result};
use berth_engine::engine::Engine;
use berth_engine::events::{self, Filter, Query};

use berth::format::Template;

#[derive(clap::Args)]
pub struct EventsArgs {
    /// Show all events created since timestamp
    #[arg(long)]
    since: Option<String>,
    /// Stream events until this timestamp
    #[arg(long)]
    until: Option<String>,
    /// Filter output based on conditions provided
    #[arg(short, long)]
    filter: Vec<String>,
    /// Format the output using the given Go template
    #[arg(long)]
    format: Option<String>,
}

pub fn events(engine: &Engine, a: EventsArgs) -> Result<()> {
    let now = events::now_nano();
    let time = |flag: &str, v: &Option<String>| -> Result<Option<i64>> {
        v.as_deref()
            .map(|s| events::parse_time(s, now).with_context(|| format!("invalid value for --{flag}: {s:?}")))
            .transpose()
    };
    let (since, until) = (time("since", &a.since)?, time("until", &a.until)?);
    let q = Query {
        // docker: neither given, only what happens from now on.
        since: since.or(if until.is_none() { Some(now) } else { None }),
        until,
        filter: Filter::from_args(&a.filter)?,
        // docker: with --until in the past, only the replay.
        follow: true,
    };
    let template = a.format.as_deref().map(Template::parse);
    let mut out = std::io::stdout().lock();
    let mut failed = None;
    events::read(
        &engine.events_dir(),
        &q,
        |e| {
            let line = match &template {
                Some(t) => t.render_values(&[template_value(e)]).map(|s| s.trim_end_matches('\n').to_owned()),
                None => Ok(e.docker_line()),
            };
            let written = line
                .map_err(|e| e.to_string())
                .and_then(|l| writeln!(out, "{l}").and_then(|()| out.flush()).map_err(|e| e.to_string()));
            match written {
                Ok(()) => true,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        },
        || true,
    )
    .with_context(|| format!("read the event log in {}", engine.events_dir().display()))?;
    match failed {
        // A closed pipe (`| head`) ends the command quietly.
        Some(e) if !e.contains("Broken pipe") => anyhow::bail!(e),
        _ => Ok(()),
    }
}

/// The event as docker's templates see it: its JSON message with the Go
/// field names of the legacy ones too (`.Status`, `.ID`, `.From`, `.Time`).
fn template_value(e: &events::Event) -> serde_json::Value {
    let mut v = e.docker_json();
    for (go, json) in [
        ("Status", "status"),
        ("ID", "id"),
        ("From", "from"),
        ("Time", "time"),
        ("TimeNano", "timeNano"),
        ("Scope", "scope"),
    ] {
        if let Some(x) = v.get(json).cloned() {
            v[go] = x;
        }
    }
    v
}
