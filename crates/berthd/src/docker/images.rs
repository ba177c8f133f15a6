//! The image routes: pull (`/images/create`, with docker's JSON progress
//! stream), list, inspect, history, tag and remove, on the engine's image
//! operations.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use berth_engine::images::{Credentials, ImageEvent, LayerProgress, PullRequest, Removed};
use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{Value, json};

use super::errors::ApiError;
use super::{ApiResult, Call, blocking, empty};

/// `fromImage` and `tag` as one reference: `busybox` + `1.36`,
/// `busybox:1.36` + "", or a digest.
pub(super) fn reference(from: &str, tag: Option<&str>) -> String {
    match tag {
        Some(t) if t.starts_with("sha256:") => format!("{from}@{t}"),
        Some(t) => format!("{from}:{t}"),
        None => from.to_owned(),
    }
}

/// The X-Registry-Auth header: base64url JSON of docker's AuthConfig
/// (`username`/`password`, `auth` = base64 of `USER:PASSWORD`, or an
/// `identitytoken`), and the servers it names. A header that is not one
/// (the CLI sends `{}` when it has nothing) gives none; a `registrytoken`
/// is refused, naming it.
pub(super) fn credentials(headers: &hyper::HeaderMap) -> Result<Option<(Credentials, Vec<String>)>, ApiError> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
    let Some(raw) = headers.get("x-registry-auth").and_then(|h| h.to_str().ok()) else { return Ok(None) };
    let raw = raw.trim();
    let Ok(bytes) = URL_SAFE.decode(raw).or_else(|_| URL_SAFE_NO_PAD.decode(raw)).or_else(|_| STANDARD.decode(raw))
    else {
        return Ok(None);
    };
    let Ok(v) = serde_json::from_slice::<Value>(&bytes) else { return Ok(None) };
    let text = |k: &str| v[k].as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    let servers = text("serveraddress").into_iter().collect();
    let creds = if let Some(token) = text("identitytoken") {
        Credentials { username: berth_image::registry::credentials::IDENTITY_TOKEN_USER.into(), password: token }
    } else if text("registrytoken").is_some() {
        return Err(ApiError::bad(
            "X-Registry-Auth: a registrytoken (a bearer token) is not supported by berthd: give username and \
             password, auth or identitytoken",
        ));
    } else if let Some(user) = text("username") {
        Credentials { username: user, password: text("password").unwrap_or_default() }
    } else if let Some(auth) = text("auth") {
        let bad = |why: &str| ApiError::bad(format!("X-Registry-Auth: auth {why}"));
        let decoded = STANDARD.decode(auth.trim()).map_err(|_| bad("is not base64"))?;
        let text = String::from_utf8(decoded).map_err(|_| bad("is not UTF-8 once decoded"))?;
        let (u, p) = text.split_once(':').ok_or_else(|| bad("is not base64 of USER:PASSWORD"))?;
        Credentials { username: u.to_owned(), password: p.to_owned() }
    } else {
        return Ok(None);
    };
    Ok(Some((creds, servers)))
}

/// docker's progress bar text: `[==>      ]  1.2MB/4.5MB`.
fn bar(current: u64, total: u64) -> String {
    use berth_engine::units::human_size;
    if total == 0 {
        return human_size(current);
    }
    let width = 50u64;
    let done = (current.min(total) * width / total) as usize;
    let arrow = if done < width as usize { ">" } else { "" };
    let fill = "=".repeat(done.saturating_sub(usize::from(!arrow.is_empty())));
    let pad = " ".repeat(width as usize - fill.len() - arrow.len());
    format!("[{fill}{arrow}{pad}] {:>8}/{}", human_size(current), human_size(total))
}

/// Turns the engine's pull and push events into docker's JSON lines.
pub(super) struct Progress {
    layers: Mutex<HashMap<String, (u64, u64)>>,
    /// Unbounded: the engine calls back from its own async tasks, where
    /// nothing may block.
    tx: tokio::sync::mpsc::UnboundedSender<Bytes>,
    /// What a layer's bytes moving is called: "Downloading", "Pushing".
    verb: &'static str,
}

impl Progress {
    pub(super) fn new(tx: tokio::sync::mpsc::UnboundedSender<Bytes>, verb: &'static str) -> Progress {
        Progress { layers: Mutex::default(), tx, verb }
    }

    pub(super) fn send(&self, v: Value) {
        let _ = self.tx.send(Bytes::from(v.to_string() + "\r\n"));
    }

    pub(super) fn event(&self, e: ImageEvent) {
        match e {
            ImageEvent::Pulling { what, repository } => {
                self.send(json!({ "status": format!("Pulling from {repository}"), "id": what }));
            }
            ImageEvent::Layer { id, progress } => self.layer(id, progress),
            ImageEvent::Pulled(p) => {
                self.send(json!({ "status": format!("Digest: {}", p.digest) }));
                let name = berth_engine::images::familiar(&p.reference.to_string());
                let words = if p.up_to_date { "Image is up to date for" } else { "Downloaded newer image for" };
                self.send(json!({ "status": format!("Status: {words} {name}") }));
            }
            ImageEvent::Pushing { repository } => {
                self.send(json!({ "status": format!("The push refers to repository [{repository}]") }));
            }
            ImageEvent::Missing { .. } => {}
        }
    }

    fn layer(&self, id: String, p: LayerProgress) {
        let mut layers = self.layers.lock().unwrap_or_else(|e| e.into_inner());
        match p {
            LayerProgress::Start { total } => {
                layers.insert(id.clone(), (0, total));
                self.send(json!({ "status": "Pulling fs layer", "progressDetail": {}, "id": id }));
            }
            LayerProgress::Advance { bytes } => {
                let e = layers.entry(id.clone()).or_default();
                e.0 += bytes;
                let (current, total) = *e;
                self.send(json!({
                    "status": self.verb,
                    "progressDetail": { "current": current, "total": total },
                    "progress": bar(current, total),
                    "id": id,
                }));
            }
            LayerProgress::Status(s) | LayerProgress::Finish(s) => {
                self.send(json!({ "status": s, "progressDetail": {}, "id": id }));
            }
        }
    }
}

/// `POST /images/create?fromImage=X&tag=Y`: a pull, its progress streamed
/// as docker's JSON lines. A pull that fails before any progress is a
/// plain error answer (404 for an unknown image); later, an `error` line.
pub async fn create(c: Call) -> ApiResult {
    if let Some(from_body) = c.query.get("fromSrc").map(|s| s == "-") {
        return import(c, from_body).await;
    }
    let (_, c) = c.json().await?;
    let from = c.query.get("fromImage").ok_or_else(|| ApiError::bad("fromImage or fromSrc is required"))?;
    let reference = reference(from, c.query.get("tag"));
    let platform = c.query.get("platform").map(str::to_owned);
    let creds = credentials(&c.headers)?;
    let images = c.api.images();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let progress = Arc::new(Progress::new(tx.clone(), "Downloading"));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Result<Vec<Value>, ApiError>>();
    tokio::task::spawn_blocking(move || {
        let req = PullRequest { platform, max_layer_size: None };
        let sink = progress.clone();
        let on_event: berth_engine::images::OnEvent = Arc::new(move |e| sink.event(e));
        let pulled = match &creds {
            Some((c, servers)) => images.pull_with_credentials(&reference, &req, c, servers, on_event),
            None => images.pull(&reference, &req, on_event),
        };
        let _ = done_tx.send(pulled.map(|_| Vec::new()).map_err(|e| pull_error(&reference, e)));
    });
    drop(tx);
    progress_response(rx, done_rx).await
}

/// `POST /images/create?fromSrc=-`: `docker import`, the root filesystem
/// tarball in the body (any compression the engine reads), with `repo`,
/// `tag`, `message` and repeated `changes`; answered, as dockerd does, with
/// one status line holding the new image's ID. A URL source is refused:
/// berthd fetches nothing on a client's behalf.
async fn import(c: Call, from_body: bool) -> ApiResult {
    if !from_body {
        return Err(ApiError::bad("fromSrc: only \"-\" (the request body) is supported; berthd does not fetch URLs"));
    }
    let reference = c.query.get("repo").map(|r| reference(r, c.query.get("tag")));
    let opts = berth_engine::images::ImportOptions {
        changes: c.query.all("changes").into_iter().map(str::to_owned).collect(),
        message: c.query.get("message").map(str::to_owned),
        source: "-".into(),
        reference,
    };
    let images = c.api.images();
    let body = super::bodyio::BodyReader::new(c.req.into_body());
    let id = blocking(move || Ok(images.import(body, &opts)?)).await?;
    let line = serde_json::json!({ "status": id.to_string() }).to_string() + "\r\n";
    let mut r = hyper::Response::new(super::full(line));
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    Ok(r)
}

/// docker's JSON progress stream of work that sends its lines to `rx`
/// and its end to `done` (with last lines to add). An end before any line
/// (an error then) is a plain error answer (404 for an unknown image);
/// later, an `error` line.
pub(super) async fn progress_response(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Bytes>,
    mut done: tokio::sync::oneshot::Receiver<Result<Vec<Value>, ApiError>>,
) -> ApiResult {
    let mut last = None;
    let first = tokio::select! {
        line = rx.recv() => line,
        d = &mut done => {
            last = Some(d.map_err(|_| ApiError::internal("the image task ended"))??);
            rx.recv().await
        }
    };
    let (out, out_rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        if let Some(l) = first {
            let _ = out.send(l).await;
        }
        while let Some(l) = rx.recv().await {
            let _ = out.send(l).await;
        }
        // After the last progress line: how it ended, as docker's lines.
        let ended = match last {
            Some(lines) => Ok(lines),
            None => done.await.unwrap_or_else(|_| Err(ApiError::internal("the image task ended"))),
        };
        let lines = match ended {
            Ok(lines) => lines,
            Err(e) => vec![json!({ "errorDetail": { "message": e.message }, "error": e.message })],
        };
        for l in lines {
            let _ = out.send(Bytes::from(l.to_string() + "\r\n")).await;
        }
    });
    Ok(super::stream_response("application/json", out_rx))
}

fn pull_error(reference: &str, e: berth_engine::Error) -> ApiError {
    match &e {
        berth_engine::Error::Image(berth_image::Error::Registry { status: 404, .. })
        | berth_engine::Error::Image(berth_image::Error::NotFound(_)) => {
            ApiError::not_found(format!("manifest for {reference} not found: manifest unknown: {e}"))
        }
        _ => ApiError::from(e),
    }
}

pub async fn list(c: Call) -> ApiResult {
    let images = c.api.images();
    let rows = blocking(move || Ok(images.list(None)?)).await?;
    let mut by_id: BTreeMap<String, (Vec<String>, Vec<String>, i64, u64)> = BTreeMap::new();
    let mut order = Vec::new();
    for r in rows {
        let id = r.id.to_string();
        let e = by_id.entry(id.clone()).or_insert_with(|| {
            order.push(id.clone());
            let created = r.created.as_deref().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            (Vec::new(), Vec::new(), created.map_or(0, |t| t.timestamp()), r.size)
        });
        if r.repository != "<none>" && r.tag != "<none>" {
            let t = format!("{}:{}", r.repository, r.tag);
            if !e.0.contains(&t) {
                e.0.push(t);
            }
        }
        if r.repository != "<none>" && r.digest != "<none>" {
            let d = format!("{}@{}", r.repository, r.digest);
            if !e.1.contains(&d) {
                e.1.push(d);
            }
        }
    }
    let out: Vec<Value> = order
        .iter()
        .filter_map(|id| by_id.get(id).map(|e| (id, e)))
        .map(|(id, (tags, digests, created, size))| {
            json!({
                "Id": id, "ParentId": "", "RepoTags": tags, "RepoDigests": digests, "Created": created,
                "Size": size, "VirtualSize": size, "SharedSize": -1, "Labels": {}, "Containers": -1,
            })
        })
        .collect();
    Ok(super::json(StatusCode::OK, &Value::Array(out)))
}

pub async fn inspect(c: Call, name: &str) -> ApiResult {
    let images = c.api.images();
    let name = name.to_owned();
    let v = blocking(move || Ok(images.inspect(&name)?)).await?;
    Ok(super::json(StatusCode::OK, &v))
}

/// The image config's history, newest first, as `docker history` reads it.
pub async fn history(c: Call, name: &str) -> ApiResult {
    let images = c.api.images();
    let name = name.to_owned();
    let v = blocking(move || {
        let doc = images.inspect(&name)?;
        let id = doc["Id"].clone();
        let detail = images.detail(&name)?.ok_or_else(|| ApiError::not_found(format!("No such image: {name}")))?;
        let mut out: Vec<Value> = detail
            .config
            .history()
            .iter()
            .flatten()
            .map(|h| {
                let created = h.created().as_deref().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
                json!({
                    "Id": "<missing>",
                    "Created": created.map_or(0, |t| t.timestamp()),
                    "CreatedBy": h.created_by().clone().unwrap_or_default(),
                    "Tags": null,
                    "Size": 0,
                    "Comment": h.comment().clone().unwrap_or_default(),
                })
            })
            .collect();
        out.reverse();
        if let Some(first) = out.first_mut() {
            first["Id"] = id;
            first["Tags"] = json!(detail.tags.iter().map(|t| berth_engine::images::familiar(t)).collect::<Vec<_>>());
        }
        Ok(Value::Array(out))
    })
    .await?;
    Ok(super::json(StatusCode::OK, &v))
}

pub async fn tag(c: Call, name: &str) -> ApiResult {
    let repo = c.query.get("repo").ok_or_else(|| ApiError::bad("repo is required"))?;
    let target = reference(repo, Some(c.query.get("tag").unwrap_or("latest")));
    let images = c.api.images();
    let name = name.to_owned();
    blocking(move || Ok(images.tag(&name, &target)?)).await?;
    Ok(empty(StatusCode::CREATED))
}

pub async fn remove(c: Call, name: &str) -> ApiResult {
    let force = c.query.flag("force");
    let engine = c.api.engine.clone();
    let name = name.to_owned();
    let removed = blocking(move || Ok(engine.remove_image(&name, force)?)).await?;
    let out: Vec<Value> = removed
        .iter()
        .map(|r| match r {
            Removed::Untagged(n) => json!({ "Untagged": n }),
            Removed::Deleted(d) => json!({ "Deleted": d.to_string() }),
        })
        .collect();
    Ok(super::json(StatusCode::OK, &Value::Array(out)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};

    fn header(v: Value) -> hyper::HeaderMap {
        let mut h = hyper::HeaderMap::new();
        h.insert("x-registry-auth", URL_SAFE.encode(v.to_string()).parse().unwrap());
        h
    }

    #[test]
    fn registry_auth_headers_read_as_docker_writes_them() {
        let (c, s) = credentials(&header(json!({"username": "bob", "password": "pw", "serveraddress": "r:5000"})))
            .unwrap()
            .unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str(), s), ("bob", "pw", vec!["r:5000".to_owned()]));
        let (c, _) = credentials(&header(json!({"auth": STANDARD.encode("amy:secret")}))).unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("amy", "secret"));
        let (c, _) = credentials(&header(json!({"identitytoken": "refresh"}))).unwrap().unwrap();
        assert_eq!(c.password, "refresh");
        assert!(credentials(&header(json!({}))).unwrap().is_none());
        assert!(credentials(&hyper::HeaderMap::new()).unwrap().is_none());
        let e = credentials(&header(json!({"registrytoken": "t"}))).unwrap_err();
        assert!(e.message.contains("registrytoken"), "{e}");
        let e = credentials(&header(json!({"auth": STANDARD.encode("nocolon")}))).unwrap_err();
        assert!(e.message.contains("USER:PASSWORD"), "{e}");
    }
}
