//! The Docker Engine API on berthd: the docker CLI, the docker SDKs and
//! compose drive berth's engine (the same engine and store as the `berth`
//! CLI and the CRI server) through dockerd's REST API on a unix socket.
//!
//! hyper 1 serves HTTP/1.1; every route is also served under `/vX.Y/`
//! ([`version`]). Handlers parse the request, call the engine (blocking
//! work on tokio's blocking pool) and answer in dockerd's shapes; errors
//! are dockerd's ([`errors`]). attach and exec start take the connection
//! over (`Upgrade: tcp`, [`hijack`]) and carry docker's multiplexed
//! frames ([`frames`]).
//!
//! Served: `/_ping`, `/version`, `/info`; containers (create, list,
//! inspect, start, stop, restart, kill, pause, unpause, wait, attach,
//! logs, resize, rename, top, remove); exec (create, start, resize,
//! inspect); images (create = pull, list, inspect, tag, remove, history).
//! Files and transfers: container archive (GET/HEAD/PUT: `docker cp`) and
//! export ([`archive`]); image push, save (get), load, `/auth` and search
//! (a clear error) ([`transfer`]); the prunes and `/system/df`
//! ([`prune`]). Unix socket or TCP with TLS ([`listen`]).
//! Anything else answers 404 with dockerd's "page not found".

pub mod archive;
pub mod bodyio;
pub mod build;
pub mod containers;
pub mod create;
pub mod errors;
pub mod events;
pub mod exec;
pub mod frames;
pub mod hijack;
pub mod images;
pub mod listen;
pub mod networks;
pub mod prune;
pub mod stats;
pub mod system;
pub mod transfer;
pub mod version;
pub mod volumes;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use berth_engine::engine::{Engine, ExitWatch};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;

use self::errors::ApiError;
use self::version::ApiVersion;
use crate::runtime::Daemon;

/// A response body: whole, or streamed as it comes.
pub type Body = BoxBody<Bytes, std::io::Error>;
pub type Resp = Response<Body>;
pub type ApiResult = Result<Resp, ApiError>;

/// What the handlers share: the engine and the state dockerd keeps in
/// memory (exec instances; attach sessions waiting for a start).
pub struct Api {
    pub daemon: Arc<Daemon>,
    pub engine: Engine,
    /// Exec instances by ID, as dockerd keeps them (in memory: they go
    /// with the daemon).
    pub execs: Mutex<HashMap<String, Arc<exec::Exec>>>,
    /// Attach sessions open per container ID: a start then keeps the
    /// shim's exit watch (see [`Api::watches`]).
    pub attached: Mutex<HashMap<String, usize>>,
    /// The exit watch of containers started while attached: the shim of
    /// an auto-remove container removes it only once the watch is
    /// dropped, after the attach session has sent the last output.
    pub watches: Mutex<HashMap<String, ExitWatch>>,
}

/// A program beside berthd (the `berth` CLI: an auto-remove container's
/// shim runs its `rm`).
fn sibling(name: &str) -> Option<PathBuf> {
    std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join(name))).filter(|p| p.exists())
}

impl Api {
    pub fn new(daemon: Arc<Daemon>) -> Result<Api, ApiError> {
        let mut engine = daemon.engine().map_err(|s| ApiError::internal(s.message().to_owned()))?;
        engine.cli = std::env::var_os("BERTH_CLI").map(PathBuf::from).or_else(|| sibling("berth"));
        if engine.cli.is_none() {
            tracing::warn!("no berth CLI beside berthd: auto-remove containers are removed only while berthd waits");
        }
        bodyio::clear_scratch(&engine.root);
        Ok(Api { daemon, engine, execs: Mutex::default(), attached: Mutex::default(), watches: Mutex::default() })
    }

    /// The engine's image operations with berthd's registry configuration.
    pub fn images(&self) -> berth_engine::images::Images {
        self.engine.images(self.daemon.config.registry.clone(), Default::default())
    }
}

/// Serves the API on `listener` until `stop` turns true. Connections in
/// flight (a `logs -f`, an attach) end with the daemon.
pub async fn serve(daemon: Arc<Daemon>, listener: listen::Listener, mut stop: tokio::sync::watch::Receiver<bool>) {
    let api = match Api::new(daemon) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            tracing::error!(error = %e.message, "cannot serve the Docker API");
            return;
        }
    };
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = stop.changed() => break,
        };
        let accepted = match conn {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "docker API: accept");
                continue;
            }
        };
        let api = api.clone();
        tokio::spawn(async move {
            let stream = match accepted.ready().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::info!(error = %e, "docker API: TLS handshake failed");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| handle(api.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "docker API connection");
            }
        });
    }
}

async fn handle(api: Arc<Api>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let began = std::time::Instant::now();
    let resp = match route(api, req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%method, %path, status = e.status.as_u16(), message = %e.message, "docker API error");
            json_text(e.status, e.body())
        }
    };
    let ms = began.elapsed().as_millis();
    tracing::debug!(%method, %path, status = resp.status().as_u16(), ms, "docker API");
    Ok(resp)
}

/// A request's query parameters (`?all=1&filters=...`), decoded.
pub struct Query(HashMap<String, String>, Vec<(String, String)>);

impl Query {
    fn of(req: &Request<Incoming>) -> Query {
        let q = req.uri().query().unwrap_or_default();
        let pairs: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes()).into_owned().collect();
        Query(pairs.iter().cloned().collect(), pairs)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// Every value of a repeated parameter (`changes=A&changes=B`), in order.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.1.iter().filter(|(k, v)| k == key && !v.is_empty()).map(|(_, v)| v.as_str()).collect()
    }

    /// A boolean as dockerd reads one: "1", "true", "True" (anything but
    /// "", "0", "false", "no", "none").
    pub fn flag(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "0" | "false" | "no" | "none"))
    }

    /// An integer, or 400 naming the parameter.
    pub fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        self.get(key)
            .map(|v| v.parse::<i64>().map_err(|_| ApiError::bad(format!("invalid value for {key}: {v:?}"))))
            .transpose()
    }
}

/// One request, as the handlers get it.
pub struct Call {
    pub api: Arc<Api>,
    pub version: ApiVersion,
    pub query: Query,
    pub req: Request<Incoming>,
}

impl Call {
    /// The JSON body (at most 4 MiB); `Value::Null` when there is none.
    pub async fn json(self) -> Result<(Value, Call0), ApiError> {
        let Call { api, version, query, req } = self;
        let (mut parts, body) = req.into_parts();
        let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        let bytes = Limited::new(body, 4 << 20)
            .collect()
            .await
            .map_err(|e| ApiError::bad(format!("read the request body: {e}")))?
            .to_bytes();
        let v = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| ApiError::bad(format!("invalid JSON: {e}")))?
        };
        Ok((v, Call0 { api, version, query, headers: parts.headers, upgrade }))
    }
}

/// A [`Call`] whose body has been read.
pub struct Call0 {
    pub api: Arc<Api>,
    pub version: ApiVersion,
    pub query: Query,
    pub headers: hyper::HeaderMap,
    /// The connection, for attach and exec start to take over.
    pub upgrade: Option<hyper::upgrade::OnUpgrade>,
}

async fn route(api: Arc<Api>, req: Request<Incoming>) -> ApiResult {
    let path = req.uri().path().to_owned();
    let (route, version) = version::split(&path)?;
    let method = req.method().clone();
    let query = Query::of(&req);
    let seg: Vec<&str> = route.trim_start_matches('/').split('/').collect();
    let c = Call { api, version, query, req };
    use Method as M;
    match (&method, seg.as_slice()) {
        (&M::GET | &M::HEAD, ["_ping"]) => Ok(system::ping(method == M::HEAD)),
        (&M::GET, ["version"]) => system::version(c).await,
        (&M::GET, ["info"]) => system::info(c).await,
        (&M::POST, ["containers", "create"]) => containers::create(c).await,
        (&M::GET, ["containers", "json"]) => containers::list(c).await,
        (&M::GET, ["containers", id, "json"]) => containers::inspect(c, id).await,
        (&M::POST, ["containers", id, "start"]) => containers::start(c, id).await,
        (&M::POST, ["containers", id, "stop"]) => containers::stop(c, id).await,
        (&M::POST, ["containers", id, "restart"]) => containers::restart(c, id).await,
        (&M::POST, ["containers", id, "kill"]) => containers::kill(c, id).await,
        (&M::POST, ["containers", id, "pause"]) => containers::pause(c, id, true).await,
        (&M::POST, ["containers", id, "unpause"]) => containers::pause(c, id, false).await,
        (&M::POST, ["containers", id, "wait"]) => containers::wait(c, id).await,
        (&M::POST, ["containers", id, "attach"]) => containers::attach(c, id).await,
        (&M::GET, ["containers", id, "logs"]) => containers::logs(c, id).await,
        (&M::POST, ["containers", id, "resize"]) => containers::resize(c, id).await,
        (&M::POST, ["containers", id, "rename"]) => containers::rename(c, id).await,
        (&M::GET, ["containers", id, "top"]) => containers::top(c, id).await,
        (&M::POST, ["containers", id, "update"]) => containers::update(c, id).await,
        (&M::GET, ["containers", id, "changes"]) => containers::changes(c, id).await,
        (&M::GET, ["containers", id, "stats"]) => stats::stats(c, id).await,
        (&M::DELETE, ["containers", id]) => containers::remove(c, id).await,
        (&M::POST, ["containers", id, "exec"]) => exec::create(c, id).await,
        (&M::POST, ["exec", id, "start"]) => exec::start(c, id).await,
        (&M::POST, ["exec", id, "resize"]) => exec::resize(c, id).await,
        (&M::GET, ["exec", id, "json"]) => exec::inspect(c, id).await,
        (&M::POST, ["images", "create"]) => images::create(c).await,
        (&M::GET, ["images", "json"]) => images::list(c).await,
        // Image names have slashes: /images/localhost:5000/x:1/json.
        (&M::GET, ["images", name @ .., "json"]) if !name.is_empty() => images::inspect(c, &name.join("/")).await,
        (&M::GET, ["images", name @ .., "history"]) if !name.is_empty() => images::history(c, &name.join("/")).await,
        (&M::POST, ["images", name @ .., "tag"]) if !name.is_empty() => images::tag(c, &name.join("/")).await,
        (&M::DELETE, ["images", name @ ..]) if !name.is_empty() => images::remove(c, &name.join("/")).await,
        (&M::POST, ["networks", "create"]) => networks::create(c).await,
        (&M::GET, ["networks"]) => networks::list(c).await,
        (&M::GET, ["networks", name]) => networks::inspect(c, name).await,
        (&M::DELETE, ["networks", name]) => networks::remove(c, name).await,
        (&M::POST, ["volumes", "create"]) => volumes::create(c).await,
        (&M::GET, ["volumes"]) => volumes::list(c).await,
        (&M::GET, ["volumes", name]) => volumes::inspect(c, name).await,
        (&M::DELETE, ["volumes", name]) => volumes::remove(c, name).await,
        // Files, image transfer, prunes, df, auth (wip-dockfs).
        (&M::GET, ["containers", id, "archive"]) => archive::get(c, id).await,
        (&M::HEAD, ["containers", id, "archive"]) => archive::head(c, id).await,
        (&M::PUT, ["containers", id, "archive"]) => archive::put(c, id).await,
        (&M::GET, ["containers", id, "export"]) => archive::export(c, id).await,
        (&M::POST, ["containers", "prune"]) => prune::containers(c).await,
        (&M::POST, ["images", "prune"]) => prune::images(c).await,
        (&M::POST, ["volumes", "prune"]) => prune::volumes(c).await,
        (&M::GET, ["system", "df"]) => prune::df(c).await,
        (&M::GET, ["images", "get"]) => transfer::save_many(c).await,
        (&M::GET, ["images", "search"]) => transfer::search(c).await,
        (&M::GET, ["images", name @ .., "get"]) if !name.is_empty() => transfer::save_one(c, &name.join("/")).await,
        (&M::POST, ["images", "load"]) => transfer::load(c).await,
        (&M::POST, ["images", name @ .., "push"]) if !name.is_empty() => transfer::push(c, &name.join("/")).await,
        (&M::POST, ["auth"]) => transfer::auth(c).await,
        // End of wip-dockfs's routes.
        // Events and network connect/disconnect (issue 15, wip-dockev).
        (&M::GET, ["events"]) => events::events(c).await,
        (&M::POST, ["networks", name, "connect"]) => networks::connect(c, name).await,
        (&M::POST, ["networks", name, "disconnect"]) => networks::disconnect(c, name).await,
        (&M::POST, ["networks", "prune"]) => networks::prune(c).await,
        // The builder (wip-dockbuild).
        (&M::POST, ["build"]) => build::build(c).await,
        (&M::POST, ["build", "prune"]) => build::prune(c).await,
        _ => Err(ApiError::not_found("page not found")),
    }
}

/// `status` with a JSON document.
pub fn json(status: StatusCode, v: &Value) -> Resp {
    json_text(status, v.to_string())
}

fn json_text(status: StatusCode, text: String) -> Resp {
    let mut r = Response::new(full(text));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// 204 (or 304) with no body.
pub fn empty(status: StatusCode) -> Resp {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = status;
    r
}

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// A body streamed from `rx`, ending when every sender is gone.
pub fn streamed(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Body {
    use tokio_stream::StreamExt;
    let frames = tokio_stream::wrappers::ReceiverStream::new(rx).map(|b| Ok::<_, std::io::Error>(Frame::data(b)));
    BodyExt::boxed(StreamBody::new(frames))
}

/// A 200 whose body streams from `rx`, with `content_type`.
pub fn stream_response(content_type: &'static str, rx: tokio::sync::mpsc::Receiver<Bytes>) -> Resp {
    let mut r = Response::new(streamed(rx));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Runs blocking engine work on tokio's blocking pool.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::internal(format!("engine task failed: {e}")))?
}

/// Spawns `f` on the runtime, logging nothing: for sessions that outlive
/// their request.
pub fn spawn<F: Future<Output = ()> + Send + 'static>(f: F) {
    tokio::spawn(f);
}
