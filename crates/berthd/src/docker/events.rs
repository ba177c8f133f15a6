//! `GET /events`: the engine's event log (berth_engine::events, the one
//! the `berth` CLI, the CRI server and the shims write) as dockerd streams
//! it: one JSON message per event, replayed from `since`, then followed
//! until `until` passes or the client goes.

use berth_engine::events::{self, Filter, Query};
use bytes::Bytes;

use super::errors::ApiError;
use super::{ApiResult, Call, stream_response};

/// Events buffered for a slow client before the reader waits for it.
const BUFFER: usize = 256;

pub async fn events(c: Call) -> ApiResult {
    let now = events::now_nano();
    let time = |key: &str| -> Result<Option<i64>, ApiError> {
        c.query
            .get(key)
            .map(|v| events::parse_time(v, now).ok_or_else(|| ApiError::bad(format!("invalid value for {key}: {v:?}"))))
            .transpose()
    };
    let (since, until) = (time("since")?, time("until")?);
    let filter = match c.query.get("filters") {
        Some(f) => Filter::from_json(f).map_err(|e| ApiError::bad(e.to_string()))?,
        None => Filter::default(),
    };
    let q = Query {
        // dockerd: neither given, only what happens from now on.
        since: since.or(if until.is_none() { Some(now) } else { None }),
        until,
        filter,
        follow: true,
    };
    let dir = c.api.engine.events_dir();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(BUFFER);
    // A thread of the blocking pool per subscriber: it sleeps in poll(2)
    // on the log's inotify watch, and ends when the client hangs up.
    tokio::task::spawn_blocking(move || {
        let sent = |e: &events::Event| {
            let mut line = e.docker_json().to_string();
            line.push('\n');
            tx.blocking_send(Bytes::from(line)).is_ok()
        };
        if let Err(e) = events::read(&dir, &q, sent, || !tx.is_closed()) {
            tracing::warn!(error = %e, "docker API events: read the event log");
        }
    });
    Ok(stream_response("application/json", rx))
}
