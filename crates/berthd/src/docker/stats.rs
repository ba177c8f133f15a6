//! `GET /containers/ID/stats`: the engine's resource readings in docker's
//! JSON shape, one object (`stream=false`) or one a second. The docker CLI
//! works CPU % out from two readings (`cpu_stats` against
//! `precpu_stats`) and the host's CPU time (`system_cpu_usage`, from
//! /proc/stat), as dockerd sends them.

use std::time::Duration;

use berth_engine::observe::Sample;
use bytes::Bytes;
use serde_json::{Value, json};

use super::containers::find;
use super::errors::ApiError;
use super::{ApiResult, Call, blocking};

/// The host's CPU time in nanoseconds (/proc/stat's first line, in
/// clock ticks of 1/100 s, as dockerd reads it), and its online CPUs.
fn host_cpu() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .map(|l| l.split_whitespace().skip(1).take(7).filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    (ticks * 10_000_000, cpus)
}

fn cpu_stats(s: Option<&Sample>, host: (u64, u64)) -> Value {
    json!({
        "cpu_usage": { "total_usage": s.map_or(0, |s| s.cpu_ns), "usage_in_kernelmode": 0, "usage_in_usermode": 0 },
        "system_cpu_usage": if s.is_some() { host.0 } else { 0 },
        "online_cpus": host.1,
        "throttling_data": { "periods": 0, "throttled_periods": 0, "throttled_time": 0 },
    })
}

/// One stats object: `now` against the reading before it, if any.
fn shape(now: &Sample, host: (u64, u64), before: Option<(&Sample, (u64, u64))>) -> Value {
    let stamp = |age: Duration| (chrono::Utc::now() - age).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    json!({
        "id": now.id,
        "name": format!("/{}", now.name),
        "read": stamp(Duration::ZERO),
        "preread": before.map_or("0001-01-01T00:00:00Z".to_owned(), |(b, _)| stamp(now.at.saturating_duration_since(b.at))),
        "pids_stats": { "current": now.pids },
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": cpu_stats(Some(now), host),
        "precpu_stats": before.map_or_else(|| cpu_stats(None, host), |(b, h)| cpu_stats(Some(b), h)),
        "memory_stats": { "usage": now.mem_usage, "limit": now.mem_limit, "stats": {} },
        "blkio_stats": { "io_service_bytes_recursive": [
            { "major": 0, "minor": 0, "op": "read", "value": now.blk_read },
            { "major": 0, "minor": 0, "op": "write", "value": now.blk_write },
        ] },
        "networks": { "eth0": {
            "rx_bytes": now.net_rx, "rx_packets": 0, "rx_errors": 0, "rx_dropped": 0,
            "tx_bytes": now.net_tx, "tx_packets": 0, "tx_errors": 0, "tx_dropped": 0,
        } },
    })
}

pub async fn stats(c: Call, id: &str) -> ApiResult {
    let stream = c.query.get("stream").is_none_or(|_| c.query.flag("stream"));
    let one_shot = c.query.flag("one-shot");
    let engine = c.api.engine.clone();
    let key = id.to_owned();
    let rec = {
        let engine = engine.clone();
        blocking(move || find(&engine, &key)).await?
    };
    let read = move |engine: &berth_engine::engine::Engine| -> Result<(Sample, (u64, u64)), ApiError> {
        let s = engine.sample(&rec).map_err(berth_engine::Error::from)?;
        Ok((s, host_cpu()))
    };
    if !stream {
        let e = engine.clone();
        let r = read.clone();
        let (first, host0) = blocking(move || r(&e)).await?;
        if one_shot {
            return Ok(super::json(hyper::StatusCode::OK, &shape(&first, host0, None)));
        }
        // dockerd's no-stream answer carries a reading a second old, so
        // CPU % means something.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (now, host) = blocking(move || read(&engine)).await?;
        return Ok(super::json(hyper::StatusCode::OK, &shape(&now, host, Some((&first, host0)))));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    super::spawn(async move {
        let mut before: Option<(Sample, (u64, u64))> = None;
        loop {
            let (e, r) = (engine.clone(), read.clone());
            let Ok(Ok((now, host))) = tokio::task::spawn_blocking(move || r(&e)).await else { return };
            let mut line =
                serde_json::to_vec(&shape(&now, host, before.as_ref().map(|(s, h)| (s, *h)))).unwrap_or_default();
            line.push(b'\n');
            // The client hung up.
            if tx.send(Bytes::from(line)).await.is_err() || !now.running {
                return;
            }
            before = Some((now, host));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    Ok(super::stream_response("application/json", rx))
}
