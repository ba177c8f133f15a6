//! Images moving in and out: push (`POST /images/{name}/push`, with
//! docker's JSON progress and X-Registry-Auth), save (`GET /images/get`,
//! `GET /images/{name}/get`: a docker-archive tar), load (`POST
//! /images/load`), the login check (`POST /auth`) and `GET
//! /images/search` (no index: a clear error). The work is the engine's,
//! the same as `berth push/save/load/login`.

use std::sync::Arc;

use berth_engine::images::{Credentials, familiar};
use bytes::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::json;

use super::bodyio::{BodyReader, BodyWriter};
use super::errors::ApiError;
use super::images::{Progress, credentials, progress_response, reference};
use super::{ApiResult, Call, blocking};

/// dockerd's words for a push of an image that is not here.
fn push_error(name: &str, e: berth_engine::Error) -> ApiError {
    match &e {
        berth_engine::Error::NoSuchImage(_) | berth_engine::Error::Image(berth_image::Error::NotFound(_)) => {
            ApiError::not_found(format!("An image does not exist locally with the tag: {name}"))
        }
        _ => ApiError::from(e),
    }
}

/// `POST /images/{name}/push?tag=T`: the push's progress as docker's JSON
/// lines, then the digest line and the `aux` record the CLI reads.
pub async fn push(c: Call, name: &str) -> ApiResult {
    let (_, c) = c.json().await?;
    let target = match c.query.get("tag") {
        Some(t) => reference(name, Some(t)),
        None => name.to_owned(),
    };
    let parsed = berth_engine::images::Reference::parse(&target).map_err(|e| ApiError::bad(e.to_string()))?;
    let images = match credentials(&c.headers)? {
        Some((creds, servers)) => c.api.images().with_credentials(&creds, &servers, parsed.registry()),
        None => c.api.images(),
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let progress = Arc::new(Progress::new(tx.clone(), "Pushing"));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let sink = progress.clone();
        let on_event: berth_engine::images::OnEvent = Arc::new(move |e| sink.event(e));
        let pushed = images.push(&target, None, on_event).map_err(|e| push_error(&target, e));
        let lines = pushed.map(|(digest, size)| {
            let tag = parsed.tag().unwrap_or("latest").to_owned();
            vec![
                json!({ "status": format!("{tag}: digest: {digest} size: {size}") }),
                json!({ "progressDetail": {}, "aux": { "Tag": tag, "Digest": digest.to_string(), "Size": size } }),
            ]
        });
        let _ = done_tx.send(lines);
    });
    drop(tx);
    progress_response(rx, done_rx).await
}

/// Every `names` parameter (`?names=a&names=b`), in order.
fn names(c: &Call) -> Vec<String> {
    let q = c.req.uri().query().unwrap_or_default();
    form_urlencoded::parse(q.as_bytes())
        .filter(|(k, v)| k == "names" && !v.is_empty())
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// `GET /images/get?names=...`.
pub async fn save_many(c: Call) -> ApiResult {
    let names = names(&c);
    if names.is_empty() {
        return Err(ApiError::bad("no images given: use names=IMAGE"));
    }
    save(c, names).await
}

/// `GET /images/{name}/get`.
pub async fn save_one(c: Call, name: &str) -> ApiResult {
    save(c, vec![name.to_owned()]).await
}

/// A docker-archive of `names`, streamed as it is written. Each name is
/// checked first, so one that is not here is a plain 404.
async fn save(c: Call, names: Vec<String>) -> ApiResult {
    let images = c.api.images();
    let checked = names.clone();
    let images = blocking(move || {
        for n in &checked {
            if images.detail(n)?.is_none() {
                return Err(ApiError::not_found(format!("No such image: {n}")));
            }
        }
        Ok(images)
    })
    .await?;
    let (w, rx) = BodyWriter::new();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = images.save(&names, w) {
            tracing::warn!(error = %e, "docker API: save ended early");
        }
    });
    let mut r = Response::new(super::streamed(rx));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    Ok(r)
}

/// `POST /images/load?quiet=`: the archive in the body (docker-archive
/// or OCI layout tar, any compression); docker's "Loaded image" lines.
pub async fn load(c: Call) -> ApiResult {
    let images = c.api.images();
    let body = BodyReader::new(c.req.into_body());
    let loaded = blocking(move || Ok(images.load_stream(body)?)).await?;
    let mut out = String::new();
    for l in loaded {
        if l.names.is_empty() {
            out += &json!({ "stream": format!("Loaded image ID: {}\n", l.id) }).to_string();
            out += "\n";
        }
        for n in l.names {
            out += &json!({ "stream": format!("Loaded image: {}\n", familiar(&n)) }).to_string();
            out += "\n";
        }
    }
    let mut r = Response::new(super::full(out));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(r)
}

/// `POST /auth`: checks docker's AuthConfig against the registry; the
/// client keeps the credentials (dockerd stores none either).
pub async fn auth(c: Call) -> ApiResult {
    let (body, c) = c.json().await?;
    let text = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
    let (username, password, server) = (text("username"), text("password"), text("serveraddress"));
    if username.is_empty() {
        return Err(ApiError::bad("username is required"));
    }
    let images = c.api.images();
    let server = (!server.is_empty()).then_some(server);
    blocking(move || {
        images.check_login(server.as_deref(), &Credentials { username, password }).map_err(|e| match e {
            berth_engine::Error::Login { .. } => ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()),
            e => ApiError::from(e),
        })
    })
    .await?;
    Ok(super::json(StatusCode::OK, &json!({ "Status": "Login Succeeded", "IdentityToken": "" })))
}

/// `GET /images/search`: berth knows no index to search.
pub async fn search(c: Call) -> ApiResult {
    let term = c.query.get("term").unwrap_or_default();
    Err(ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        format!("search {term:?}: berth has no registry index to search (pull by name instead)"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_errors_name_the_tag_as_dockerd_does() {
        let e = push_error("x:1", berth_engine::Error::NoSuchImage("x:1".into()));
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(e.message, "An image does not exist locally with the tag: x:1");
    }
}
