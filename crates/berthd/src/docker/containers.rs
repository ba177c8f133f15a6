//! The container routes, each on the engine call the `berth` CLI makes
//! for the same command.

use std::sync::Arc;
use std::time::Duration;

use berth_engine::engine::Engine;
use berth_engine::logread::{LogFollower, parse_time};
use berth_engine::store::{ContainerRecord, Status, StoreError};
use bytes::Bytes;
use chrono::Utc;
use hyper::StatusCode;
use serde_json::{Value, json};

use super::errors::ApiError;
use super::frames::{FrameWriter, STDERR, STDOUT, content_type};
use super::{Api, ApiResult, Call, blocking, empty};

/// The default namespace's record `key` (the kubelet's containers, in
/// the "k8s" namespace, are not the Docker API's), refreshed.
pub fn find(engine: &Engine, key: &str) -> Result<ContainerRecord, ApiError> {
    let rec = engine.containers()?.get(key).map_err(berth_engine::Error::from)?;
    if !rec.namespace.is_empty() {
        return Err(ApiError::not_found(format!("No such container: {key}")));
    }
    Ok(engine.refresh(&rec))
}

fn running(s: Status) -> bool {
    matches!(s, Status::Running | Status::Paused | Status::Restarting)
}

pub async fn create(c: Call) -> ApiResult {
    let (body, c) = c.json().await?;
    let name = c.query.get("name").map(str::to_owned);
    if let Some(p) = c.query.get("platform").filter(|p| !p.starts_with("linux")) {
        return Err(ApiError::bad(format!("platform {p:?}: berth runs linux containers only")));
    }
    let mut req = super::create::parse(&body, name.as_deref())?;
    let own = c.api.engine.runtime.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    req.opts.runtime = super::create::runtime(&body, &c.api.daemon, &own)?;
    let engine = c.api.engine.clone();
    let rec = blocking(move || {
        // berthd's creates let go of their creating lock when they return
        // (main: creates_end_with_their_call): the start is a request of its own.
        let rec = engine.create(&req.image, &req.flags, &req.opts)?;
        for (net, aliases) in &req.connect {
            if let Err(e) = engine.connect(net, &rec.id, aliases) {
                let _ = engine.remove(&rec.id, true);
                return Err(e.into());
            }
        }
        Ok(rec)
    })
    .await?;
    Ok(super::json(StatusCode::CREATED, &json!({ "Id": rec.id, "Warnings": [] })))
}

/// docker's filters: `{"status":["running"]}`, or the older
/// `{"status":{"running":true}}` the CLI still sends.
pub fn filters(q: &super::Query) -> Result<Vec<(String, String)>, ApiError> {
    let Some(text) = q.get("filters") else { return Ok(Vec::new()) };
    let v: Value = serde_json::from_str(text).map_err(|e| ApiError::bad(format!("invalid filters: {e}")))?;
    let mut out = Vec::new();
    for (k, vals) in v.as_object().into_iter().flatten() {
        match vals {
            Value::Array(a) => out.extend(a.iter().filter_map(Value::as_str).map(|s| (k.clone(), s.to_owned()))),
            Value::Object(o) => out.extend(o.keys().map(|s| (k.clone(), s.clone()))),
            _ => return Err(ApiError::bad(format!("invalid filter {k:?}"))),
        }
    }
    Ok(out)
}

fn filter_matches(key: &str, v: &str, r: &ContainerRecord) -> Result<bool, ApiError> {
    Ok(match key {
        "id" => r.id.starts_with(v),
        "name" => r.name.contains(v.trim_start_matches('/')),
        "label" => match v.split_once('=') {
            Some((k, want)) => r.labels.get(k).is_some_and(|have| have == want),
            None => r.labels.contains_key(v),
        },
        "status" => status_word(r.status) == v,
        "exited" => r.status == Status::Exited && r.exit_code.is_some_and(|c| c.to_string() == v),
        "ancestor" => {
            r.image == v || r.image_id.trim_start_matches("sha256:").starts_with(v.trim_start_matches("sha256:"))
        }
        other => return Err(ApiError::bad(format!("invalid filter '{other}'"))),
    })
}

fn status_word(s: Status) -> String {
    serde_json::to_value(s).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

fn unix_time(rfc3339: Option<&str>) -> i64 {
    rfc3339.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()).map_or(0, |t| t.timestamp())
}

fn ports_json(r: &ContainerRecord) -> Vec<Value> {
    r.config
        .ports
        .iter()
        .map(|p| {
            let ip = if p.host_ip.is_empty() { "0.0.0.0" } else { p.host_ip.as_str() };
            json!({ "IP": ip, "PrivatePort": p.container_port, "PublicPort": p.host_port, "Type": p.protocol })
        })
        .collect()
}

fn network_name(r: &ContainerRecord) -> &str {
    if r.config.network.is_empty() { "bridge" } else { r.config.network.as_str() }
}

/// One `/containers/json` entry.
fn summary(r: &ContainerRecord) -> Value {
    let networks = berth_engine::network::networks_json(r);
    json!({
        "Id": r.id,
        "Names": [format!("/{}", r.name)],
        "Image": r.image,
        "ImageID": r.image_id,
        "Command": r.config.args.join(" "),
        "Created": unix_time(Some(&r.created)),
        "Ports": ports_json(r),
        "Labels": r.labels,
        "State": status_word(r.status),
        "Status": r.status_text(),
        "HostConfig": { "NetworkMode": network_name(r) },
        "NetworkSettings": { "Networks": networks },
        "Mounts": [],
    })
}

pub async fn list(c: Call) -> ApiResult {
    let filters = filters(&c.query)?;
    let all = c.query.flag("all") || filters.iter().any(|(k, _)| k == "status" || k == "exited");
    let limit = c.query.int("limit")?.filter(|n| *n > 0).map_or(usize::MAX, |n| n as usize);
    let engine = c.api.engine.clone();
    let mut recs = blocking(move || Ok(engine.current_containers()?)).await?;
    recs.sort_by(|x, y| y.created.cmp(&x.created));
    let mut out = Vec::new();
    for r in recs.iter().filter(|r| r.namespace.is_empty()) {
        if !(all || running(r.status)) {
            continue;
        }
        // Same key: any may match, but every label must (dockerd's
        // rule: compose asks for project=P and oneoff=False at once);
        // different keys: all must.
        let mut keys: Vec<&str> = filters.iter().map(|(k, _)| k.as_str()).collect();
        keys.sort();
        keys.dedup();
        let mut ok = true;
        for k in keys {
            let mut matched = filters.iter().filter(|(fk, _)| fk == k).map(|(_, v)| filter_matches(k, v, r));
            let hit = if k == "label" {
                matched.try_fold(true, |all, m| m.map(|m| all && m))?
            } else {
                matched.try_fold(false, |any, m| m.map(|m| any || m))?
            };
            ok &= hit;
        }
        if ok {
            out.push(summary(r));
        }
        if out.len() >= limit {
            break;
        }
    }
    Ok(super::json(StatusCode::OK, &Value::Array(out)))
}

/// docker's inspect document: the engine's, with what the request gave
/// (kept on the record) filled in where docker shows it.
pub async fn inspect(c: Call, key: &str) -> ApiResult {
    let engine = c.api.engine.clone();
    let key = key.to_owned();
    let v = blocking(move || {
        let rec = find(&engine, &key)?;
        let mut v = engine.inspect(&rec.id)?;
        merge_docker_fields(&mut v, &rec, &engine);
        Ok(v)
    })
    .await?;
    Ok(super::json(StatusCode::OK, &v))
}

fn merge_docker_fields(v: &mut Value, rec: &ContainerRecord, engine: &Engine) {
    let given = rec.extensions.get("docker").cloned().unwrap_or(Value::Null);
    let run = engine.runroot.join("containers").join(&rec.id);
    let config = &mut v["Config"];
    for (k, dflt) in [
        ("Hostname", json!(rec.id.get(..12).unwrap_or(&rec.id))),
        ("Domainname", json!("")),
        ("User", json!("")),
        ("AttachStdin", json!(false)),
        ("AttachStdout", json!(true)),
        ("AttachStderr", json!(true)),
        ("OpenStdin", json!(rec.config.stdin)),
        ("StdinOnce", json!(false)),
        ("Env", json!([])),
        ("Entrypoint", Value::Null),
        ("WorkingDir", json!("")),
        ("ExposedPorts", json!({})),
    ] {
        let have = given["Config"].get(k).filter(|x| !x.is_null()).cloned();
        config[k] = have.unwrap_or(dflt);
    }
    let host = &mut v["HostConfig"];
    for (k, dflt) in [
        ("Binds", Value::Null),
        ("AutoRemove", json!(rec.config.auto_remove)),
        ("Privileged", json!(false)),
        ("ReadonlyRootfs", json!(false)),
        ("Memory", json!(0)),
        ("NanoCpus", json!(0)),
        ("CapAdd", Value::Null),
        ("CapDrop", Value::Null),
        ("SecurityOpt", Value::Null),
        ("Tmpfs", Value::Null),
        ("Mounts", Value::Null),
        ("PortBindings", json!({})),
        (
            "LogConfig",
            json!({ "Type": berth_engine::logconfig::LogConfig::of_record(&rec.config).driver, "Config": {} }),
        ),
        ("Init", json!(rec.config.init)),
    ] {
        let have = given["HostConfig"].get(k).filter(|x| !x.is_null()).cloned();
        host[k] = have.unwrap_or(dflt);
    }
    v["Platform"] = json!("linux");
    v["Driver"] = json!("overlay2");
    v["ResolvConfPath"] = json!(run.join("resolv.conf"));
    v["HostnamePath"] = json!(run.join("hostname"));
    v["HostsPath"] = json!(run.join("hosts"));
    v["State"]["Error"] = json!("");
    v["ExecIDs"] = Value::Null;
}

/// Start; 304 when it already runs. With an attach session open, the
/// shim's exit watch is kept until the session has sent the last output.
pub async fn start(c: Call, key: &str) -> ApiResult {
    let api = c.api.clone();
    let key = key.to_owned();
    blocking(move || {
        let rec = find(&api.engine, &key)?;
        if running(rec.status) {
            return Ok(empty(StatusCode::NOT_MODIFIED));
        }
        let attached = |api: &Api| api.attached.lock().map(|m| m.get(&rec.id).copied().unwrap_or(0)).unwrap_or(0);
        let started = if attached(&api) > 0 {
            api.engine.start_watched(&rec.id).map(|(_, watch)| {
                // Kept only while a session is still attached, decided under
                // the sessions' lock: a short-lived container's session may
                // have ended already, and a watch kept then would hold back
                // an auto-remove forever.
                if let Ok(m) = api.attached.lock()
                    && m.get(&rec.id).is_some_and(|n| *n > 0)
                    && let Ok(mut w) = api.watches.lock()
                {
                    w.insert(rec.id.clone(), watch);
                }
            })
        } else {
            api.engine.start(&rec.id).map(drop)
        };
        if let Err(e) = started {
            // As dockerd: an auto-remove container that cannot start is
            // removed (`run --rm` waits for that).
            if rec.config.auto_remove {
                let _ = api.engine.remove(&rec.id, true);
            }
            return Err(e.into());
        }
        Ok(empty(StatusCode::NO_CONTENT))
    })
    .await
}

fn timeout(c: &Call) -> Result<Duration, ApiError> {
    Ok(Duration::from_secs(c.query.int("t")?.filter(|t| *t >= 0).unwrap_or(10) as u64))
}

pub async fn stop(c: Call, key: &str) -> ApiResult {
    let t = timeout(&c)?;
    let engine = c.api.engine.clone();
    let key = key.to_owned();
    blocking(move || {
        let rec = find(&engine, &key)?;
        if !running(rec.status) {
            return Ok(empty(StatusCode::NOT_MODIFIED));
        }
        engine.stop(&rec.id, t)?;
        Ok(empty(StatusCode::NO_CONTENT))
    })
    .await
}

pub async fn restart(c: Call, key: &str) -> ApiResult {
    let t = timeout(&c)?;
    let engine = c.api.engine.clone();
    let key = key.to_owned();
    blocking(move || {
        let rec = find(&engine, &key)?;
        engine.restart(&rec.id, t)?;
        Ok(empty(StatusCode::NO_CONTENT))
    })
    .await
}

pub async fn kill(c: Call, key: &str) -> ApiResult {
    let signal = c.query.get("signal").unwrap_or("SIGKILL").to_owned();
    let engine = c.api.engine.clone();
    let key = key.to_owned();
    blocking(move || {
        let rec = find(&engine, &key)?;
        if !running(rec.status) {
            return Err(ApiError::conflict(format!(
                "Cannot kill container: {key}: container {} is not running",
                rec.id
            )));
        }
        engine.kill(&rec.id, &signal)?;
        Ok(empty(StatusCode::NO_CONTENT))
    })
    .await
}

pub async fn pause(c: Call, key: &str, pause: bool) -> ApiResult {
    let engine = c.api.engine.clone();
    let key = key.to_owned();
    blocking(move || {
        let rec = find(&engine, &key)?;
        if pause {
            engine.pause(&rec.id)?;
        } else {
            engine.unpause(&rec.id)?;
        }
        Ok(empty(StatusCode::NO_CONTENT))
    })
    .await
}

pub async fn rename(c: Call, key: &str) -> ApiResult {
    let new = c.query.get("name").ok_or_else(|| ApiError::bad("rename: name is required"))?.to_owned();
    let engine = c.api.engine.clone();
    let key = key.to_owned();
    blocking(move || {
        let rec = find(&engine, &key)?;
        let new = new.strip_prefix('/').unwrap_or(&new);
        if rec.name == new {
            return Err(ApiError::bad("Renaming a container with the same name as its current name"));
        }
        engine.rename(&rec.id, new)?;
        Ok(empty(StatusCode::NO_CONTENT))
    })
    .await
}

/// `POST /containers/{id}/update`: new limits (applied now to a running
/// container, at its next start to a stopped one) and restart policy, kept
/// where inspect shows them.
pub async fn update(c: Call, key: &str) -> ApiResult {
    let (body, c) = c.json().await?;
    let engine = c.api.engine.clone();
    let key = key.to_owned();
    blocking(move || {
        let rec = find(&engine, &key)?;
        let num = |k: &str| body.get(k).and_then(Value::as_i64).filter(|v| *v != 0);
        let text = |k: &str| body.get(k).and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_owned);
        let mut u = berth_engine::pod::ResourceUpdate {
            memory_limit: num("Memory"),
            cpu_shares: num("CpuShares").map(|v| v as u64),
            cpu_quota: num("CpuQuota"),
            cpu_period: num("CpuPeriod").map(|v| v as u64),
            cpuset_cpus: text("CpusetCpus"),
            cpuset_mems: text("CpusetMems"),
            ..Default::default()
        };
        if let Some(nano) = num("NanoCpus") {
            if u.cpu_quota.is_some() || u.cpu_period.is_some() {
                return Err(ApiError::bad(
                    "Conflicting options: CPU Quota cannot be updated as NanoCPUs has already been set",
                ));
            }
            // docker's --cpus: a quota over the default 100 ms period.
            (u.cpu_period, u.cpu_quota) = (Some(100_000), Some(nano / 10_000));
        }
        let restart = match body.get("RestartPolicy") {
            Some(p) if p.get("Name").and_then(Value::as_str).is_some_and(|n| !n.is_empty()) => {
                Some(super::create::restart_policy(p)?)
            }
            _ => None,
        };
        if restart.as_ref().is_some_and(|r| r.is_some()) && rec.config.auto_remove {
            return Err(ApiError::bad(
                "Restart policy cannot be updated because AutoRemove is enabled for the container",
            ));
        }
        if u != berth_engine::pod::ResourceUpdate::default() {
            engine.update_resources(&rec.id, &u)?;
        }
        engine
            .containers()?
            .update(&rec.id, |r| {
                if let Some(restart) = &restart {
                    r.config.restart = restart.clone();
                }
                let docker = r.extensions.entry("docker".to_owned()).or_insert_with(|| json!({}));
                if !docker["HostConfig"].is_object() {
                    docker["HostConfig"] = json!({});
                }
                for k in ["Memory", "CpuShares", "CpuQuota", "CpuPeriod", "NanoCpus", "CpusetCpus", "CpusetMems"] {
                    if let Some(v) = body.get(k).filter(|v| !v.is_null() && **v != json!(0) && **v != json!("")) {
                        docker["HostConfig"][k] = v.clone();
                    }
                }
                if let Some(p) = body.get("RestartPolicy").filter(|_| restart.is_some()) {
                    docker["HostConfig"]["RestartPolicy"] = p.clone();
                }
            })
            .map_err(berth_engine::Error::from)?;
        Ok(super::json(StatusCode::OK, &json!({ "Warnings": [] })))
    })
    .await
}

/// `GET /containers/{id}/changes`: docker's `diff` (Kind 0 changed, 1
/// added, 2 deleted).
pub async fn changes(c: Call, key: &str) -> ApiResult {
    let engine = c.api.engine.clone();
    let key = key.to_owned();
    blocking(move || {
        let rec = find(&engine, &key)?;
        let list: Vec<Value> =
            engine.changes(&rec.id)?.iter().map(|c| json!({ "Path": c.path, "Kind": c.kind as u8 })).collect();
        Ok(super::json(StatusCode::OK, &Value::Array(list)))
    })
    .await
}

pub async fn remove(c: Call, key: &str) -> ApiResult {
    let (force, volumes) = (c.query.flag("force"), c.query.flag("v"));
    let engine = c.api.engine.clone();
    let key = key.to_owned();
    blocking(move || {
        let rec = find(&engine, &key)?;
        match engine.remove_with(&rec.id, force, volumes) {
            Err(berth_engine::Error::Running(_)) => Err(ApiError::conflict(format!(
                "cannot remove container \"/{}\": container is running: stop the container before removing or force remove",
                rec.name
            ))),
            // Gone meanwhile (its shim's auto-remove): what was asked is done.
            Err(berth_engine::Error::Store(StoreError::NotFound(_))) => Ok(empty(StatusCode::NO_CONTENT)),
            other => other.map(|()| empty(StatusCode::NO_CONTENT)).map_err(Into::into),
        }
    })
    .await
}

pub async fn top(c: Call, key: &str) -> ApiResult {
    let engine = c.api.engine.clone();
    let key = key.to_owned();
    let v = blocking(move || {
        let rec = find(&engine, &key)?;
        let procs = engine.top(&rec.id).map_err(|e| ApiError::conflict(e.to_string()))?;
        let rows: Vec<Value> = procs
            .iter()
            .map(|p| {
                let t = p.cpu_seconds;
                json!([
                    p.uid.to_string(),
                    p.pid.to_string(),
                    p.ppid.to_string(),
                    p.cpu_percent.to_string(),
                    chrono::DateTime::from_timestamp(p.start_time as i64, 0)
                        .map(|d| d.with_timezone(&chrono::Local).format("%H:%M").to_string())
                        .unwrap_or_default(),
                    p.tty,
                    format!("{:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60),
                    p.cmd,
                ])
            })
            .collect();
        Ok(json!({ "Titles": ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"], "Processes": rows }))
    })
    .await?;
    Ok(super::json(StatusCode::OK, &v))
}

pub async fn resize(c: Call, key: &str) -> ApiResult {
    let (h, w) = (c.query.int("h")?.unwrap_or(0), c.query.int("w")?.unwrap_or(0));
    let engine = c.api.engine.clone();
    let key = key.to_owned();
    blocking(move || {
        let rec = find(&engine, &key)?;
        if !running(rec.status) {
            return Err(ApiError::conflict(format!("Container {} is not running", rec.id)));
        }
        if rec.config.tty {
            let mut a = engine.attach(&rec)?;
            a.resize(h.clamp(0, u16::MAX.into()) as u16, w.clamp(0, u16::MAX.into()) as u16)
                .map_err(|e| ApiError::internal(format!("resize: {e}")))?;
        }
        Ok(empty(StatusCode::OK))
    })
    .await
}

/// `wait`: the answer's headers go at once (as dockerd's do), its body
/// when the condition is met.
pub async fn wait(c: Call, key: &str) -> ApiResult {
    let condition = c.query.get("condition").unwrap_or("not-running").to_owned();
    if !matches!(condition.as_str(), "not-running" | "next-exit" | "removed") {
        return Err(ApiError::bad(format!("invalid condition: \"{condition}\"")));
    }
    let engine = c.api.engine.clone();
    let key = key.to_owned();
    let rec = {
        let engine = engine.clone();
        blocking(move || find(&engine, &key)).await?
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    tokio::task::spawn_blocking(move || {
        // A client that hung up stops the wait (its body's receiver goes).
        let code = wait_for(&engine, &rec, &condition, || !tx.is_closed());
        let body = match code {
            Ok(Some(code)) => json!({ "StatusCode": code, "Error": null }),
            Ok(None) => {
                tracing::debug!(container = %rec.id, "wait: the client hung up; no longer waiting");
                return;
            }
            Err(e) => json!({ "StatusCode": -1, "Error": { "Message": e.message } }),
        };
        let _ = tx.blocking_send(Bytes::from(body.to_string() + "\n"));
    });
    Ok(super::stream_response("application/json", rx))
}

/// The exit code once `condition` holds; None when `keep_waiting` says
/// to stop first.
fn wait_for(
    engine: &Engine,
    rec: &ContainerRecord,
    condition: &str,
    keep_waiting: impl Fn() -> bool,
) -> Result<Option<i64>, ApiError> {
    if condition == "not-running" && !running(rec.status) {
        return Ok(Some(rec.exit_code.unwrap_or(0).into()));
    }
    // The engine's wait hears the exit from the container's shim, so it
    // learns the code even when an auto-remove container is gone before a
    // poll sees it exited; a wait made before `start` (as `run` makes it)
    // has no shim yet to listen to: it first waits for the start.
    let store = engine.containers()?;
    while let Ok(r) = store.get(&rec.id) {
        if engine.refresh(&r).status != Status::Created {
            break;
        }
        if !keep_waiting() {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let code = match engine.wait_while(&rec.id, &keep_waiting) {
        Ok(Some(code)) => code,
        Ok(None) => return Ok(None),
        Err(berth_engine::Error::Store(StoreError::NotFound(_))) => rec.exit_code.unwrap_or(0),
        Err(e) => return Err(e.into()),
    };
    if condition == "removed" {
        // Short at first: `run --rm` waits for this (the shim's exit
        // command removes the container a few ms after the exit).
        let mut pause = Duration::from_millis(2);
        while store.get(&rec.id).is_ok() {
            if !keep_waiting() {
                return Ok(None);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
    Ok(Some(code.into()))
}

/// The options of logs and attach's output: which streams, from where.
struct Output {
    stdout: bool,
    stderr: bool,
    raw: bool,
}

fn writers(o: &Output, tx: &tokio::sync::mpsc::Sender<Bytes>) -> (FrameWriter, FrameWriter) {
    let w = |stream, enabled| FrameWriter { stream, raw: o.raw, enabled, tx: tx.clone() };
    (w(STDOUT, o.stdout), w(STDERR, o.stderr))
}

pub async fn logs(c: Call, key: &str) -> ApiResult {
    let q = &c.query;
    let (stdout, stderr) = (q.flag("stdout"), q.flag("stderr"));
    if !(stdout || stderr) {
        return Err(ApiError::bad("Bad parameters: you must choose at least one stream"));
    }
    let now = Utc::now();
    let time = |k: &str| -> Result<_, ApiError> {
        q.get(k).filter(|v| *v != "0").map(|v| parse_time(v, now).map_err(|e| ApiError::bad(e.to_string()))).transpose()
    };
    let (since, until) = (time("since")?, time("until")?);
    let tail = match q.get("tail") {
        None | Some("all") => None,
        Some(n) => {
            Some(n.parse::<i64>().map_err(|_| ApiError::bad(format!("invalid tail {n:?}")))?).filter(|n| *n >= 0)
        }
    };
    let (follow, timestamps) = (q.flag("follow"), q.flag("timestamps"));
    let engine = c.api.engine.clone();
    let rec = {
        let engine = engine.clone();
        let key = key.to_owned();
        blocking(move || find(&engine, &key)).await?
    };
    if !berth_engine::logconfig::LogConfig::of_record(&rec.config).readable() {
        return Err(ApiError::bad("configured logging driver does not support reading"));
    }
    let o = Output { stdout, stderr, raw: rec.config.tty };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let ct = content_type(o.raw, c.version);
    tokio::task::spawn_blocking(move || {
        let (mut out, mut err) = writers(&o, &tx);
        let mut f = LogFollower::new(engine.log_path(&rec));
        f.timestamps = timestamps;
        f.since = since;
        f.until = until;
        if let Some(n) = tail {
            let _ = f.skip_to_last(n as usize);
        }
        if f.pump_to(&mut out, &mut err).is_err() || !follow {
            return;
        }
        // As docker's -f: until the container ends or the client goes.
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let now = engine.containers().ok().and_then(|s| s.get(&rec.id).ok()).map(|r| engine.refresh(&r));
            if f.pump_to(&mut out, &mut err).is_err() || tx.is_closed() {
                return;
            }
            if !now.is_some_and(|r| running(r.status)) {
                return;
            }
        }
    });
    Ok(super::stream_response(ct, rx))
}

/// attach: the container's output from its log (from its start, or with
/// `logs` everything logged), and its stdin from the client, until it
/// ends.
pub async fn attach(c: Call, key: &str) -> ApiResult {
    let (_, c) = c.json().await?;
    let q = &c.query;
    let (stream, logs, stdin) = (q.flag("stream"), q.flag("logs"), q.flag("stdin"));
    let (stdout, stderr) = (q.flag("stdout"), q.flag("stderr"));
    let api = c.api.clone();
    let rec = {
        let engine = api.engine.clone();
        let key = key.to_owned();
        blocking(move || find(&engine, &key)).await?
    };
    let o = Output { stdout, stderr, raw: rec.config.tty };
    api.engine.container_event(&rec, "attach", &[]);
    let (resp, ch) = super::hijack::respond(&c.headers, c.upgrade, content_type(o.raw, c.version));
    let id = rec.id.clone();
    if let Ok(mut m) = api.attached.lock() {
        *m.entry(id.clone()).or_default() += 1;
    }
    let super::hijack::Channels { out, input, gone, ready } = ch;
    if stdin && rec.config.stdin {
        let stdin_once = rec.extensions.get("docker").and_then(|d| d["Config"]["StdinOnce"].as_bool()).unwrap_or(false);
        tokio::task::spawn_blocking({
            let (engine, rec) = (api.engine.clone(), rec.clone());
            move || forward_stdin(&engine, &rec, input, stdin_once)
        });
    }
    // Where the output starts is now; it is sent once the connection is
    // handed over (see Channels::ready).
    let path = api.engine.log_path(&rec);
    let mut f = if logs { LogFollower::new(path) } else { LogFollower::at_end(path) };
    tokio::task::spawn_blocking(move || {
        let (mut w_out, mut w_err) = writers(&o, &out);
        if ready.blocking_recv().is_err() {
            // Never handed over: nothing to send.
        } else if stream {
            follow_until_exit(&api.engine, &rec, &mut f, &mut w_out, &mut w_err, &gone);
        } else {
            let _ = f.pump_to(&mut w_out, &mut w_err);
        }
        // The last output is sent: an auto-remove container's shim may go on.
        // Under the sessions' lock, as start decides to keep a watch.
        if let Ok(mut m) = api.attached.lock() {
            let n = m.entry(id.clone()).or_default();
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&id);
                drop(api.watches.lock().map(|mut w| w.remove(&id)));
            }
        }
    });
    Ok(resp)
}

/// Copies output until the container ends after having run (an attach
/// made before `start` waits for it) or the client goes.
fn follow_until_exit(
    engine: &Engine,
    rec: &ContainerRecord,
    f: &mut LogFollower,
    out: &mut FrameWriter,
    err: &mut FrameWriter,
    gone: &Arc<std::sync::atomic::AtomicBool>,
) {
    let first_start = rec.started_at.clone();
    let mut has_run = running(rec.status);
    loop {
        if f.pump_to(out, err).is_err() || gone.load(std::sync::atomic::Ordering::Relaxed) || out.tx.is_closed() {
            return;
        }
        let now = match engine.containers().map(|s| s.get(&rec.id)) {
            Ok(Ok(r)) => engine.refresh(&r),
            // Removed (auto-remove): what was logged is sent.
            _ => return,
        };
        has_run |= running(now.status) || now.started_at != first_start;
        if has_run && !running(now.status) {
            let _ = f.pump_to(out, err);
            return;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// The client's input to the container's stdin (through its shim, once it
/// runs); at the client's EOF the container's stdin is closed when it was
/// made with StdinOnce (`docker run -i`).
fn forward_stdin(engine: &Engine, rec: &ContainerRecord, mut input: tokio::sync::mpsc::Receiver<Bytes>, once: bool) {
    let mut shim = None;
    while let Some(data) = input.blocking_recv() {
        let Some(a) = connect(engine, rec, &mut shim) else { return };
        if let Err(e) = a.send_stdin(&data) {
            tracing::debug!(container = %rec.id, error = %e, "attach: stdin to the shim");
            return;
        }
        tracing::trace!(container = %rec.id, bytes = data.len(), "attach: stdin sent");
    }
    if once && let Some(a) = connect(engine, rec, &mut shim) {
        let closed = a.close_stdin();
        tracing::debug!(container = %rec.id, ?closed, "attach: the client's input ended; stdin closed");
    }
}

/// The shim's attach connection, waiting (a minute at most) for a
/// container attached before its start to run.
fn connect<'a>(
    engine: &Engine,
    rec: &ContainerRecord,
    shim: &'a mut Option<berth_engine::engine::Attach>,
) -> Option<&'a mut berth_engine::engine::Attach> {
    if shim.is_none() {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            // The record says running once `start` has the shim started
            // with the container's stdin in place (its state file may say
            // so a little earlier).
            let now = engine.containers().ok()?.get(&rec.id).ok()?;
            if running(now.status)
                && let Ok(mut a) = engine.attach(&now)
                && a.input_only().is_ok()
            {
                *shim = Some(a);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    shim.as_mut()
}
