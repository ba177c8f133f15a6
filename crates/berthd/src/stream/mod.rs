//! The CRI streaming server: `Exec`, `Attach` and `PortForward` answer a
//! URL on this HTTP server with a single-use token, and the client
//! (kubelet/apiserver, crictl) connects there and upgrades the connection
//! to SPDY/3.1 or WebSocket, as kubelet's `cri/streaming` server does
//! (containerd and CRI-O embed that one).
//!
//! The protocols: [`remotecommand`] (exec/attach: `v4.channel.k8s.io` and
//! older over SPDY, `v5`/`v4.channel.k8s.io` over WebSocket) and
//! [`portforward`] (`portforward.k8s.io` over SPDY, also tunnelled in a
//! WebSocket as `SPDY/3.1+portforward.k8s.io`). What runs behind a stream
//! is a [`Streamer`]: the engine's containers ([`engine::EngineStreamer`],
//! what berthd runs), or for tests the [`host::HostStreamer`].
//!
//! Limits (`[stream]` in berthd.toml): a session with no data either way
//! for `idle_timeout` is closed ([`idle`]) and what it ran is killed (the
//! exec'd process gets SIGKILL when its future is dropped, as containerd
//! kills an exec whose client is gone); at most `max_sessions` upgraded
//! connections run at once (one more gets 429 and keeps its token); a
//! SPDY connection has at most `max_streams_per_session` streams open;
//! what berthd buffers per stream is bounded (see [`spdy`] on flow
//! control, [`ws`] on stdin). With `tls_cert_file`/`tls_key_file` the
//! server speaks TLS and its URLs are https.

pub mod engine;
pub mod host;
pub mod idle;
pub mod portforward;
pub mod pty;
pub mod remotecommand;
pub mod spdy;
pub mod ws;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::config::StreamConfig;

/// How long a token is valid (kubelet's token cache keeps them a minute).
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Tokens waiting at once before new requests are refused (kubelet's
/// limit), so a client calling Exec in a loop cannot grow the cache.
pub const MAX_PENDING: usize = 1000;
/// How long a client has to open the streams of a request.
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// What a container process reads.
pub type Input = Box<dyn AsyncRead + Send + Unpin>;
/// Where a container process writes.
pub type Output = Box<dyn AsyncWrite + Send + Unpin>;

/// The stdio of an exec or attach, as the client asked for it.
#[derive(Default)]
pub struct StreamIo {
    pub stdin: Option<Input>,
    pub stdout: Option<Output>,
    /// Never set with a tty (the terminal has one output).
    pub stderr: Option<Output>,
}

/// A terminal size, as the resize stream carries it (`{"Width":80,"Height":24}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct TermSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

pub type ResizeRx = mpsc::Receiver<TermSize>;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("container {0:?} not found")]
    ContainerNotFound(String),
    #[error("pod sandbox {0:?} not found")]
    PodNotFound(String),
    #[error("{0}")]
    Unsupported(String),
    /// Exec and attach need a running container, port-forward a pod
    /// with its network namespace.
    #[error("{0}")]
    NotRunning(String),
    /// What the engine or the shim answered.
    #[error("{0}")]
    Failed(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("stream.{key}: {reason}")]
    Tls { key: &'static str, reason: String },
    #[error("bind the streaming server on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

impl StreamError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StreamError::Io { context: context.into(), source }
    }
}

/// What the streaming server runs: implemented on the engine's containers
/// (and by [`host::HostStreamer`] for tests). The future of `exec` or
/// `attach` is dropped when the client goes away: the implementation stops
/// what it started then (kill on drop).
#[tonic::async_trait]
pub trait Streamer: Send + Sync + 'static {
    /// Whether exec/attach can reach `container_id` (asked before a URL
    /// is handed out, so a wrong ID fails the RPC).
    async fn check_container(&self, container_id: &str) -> Result<(), StreamError>;
    /// Whether `pod_sandbox_id` exists.
    async fn check_pod(&self, pod_sandbox_id: &str) -> Result<(), StreamError>;
    /// Runs `cmd` in the container with `io`; the exit code.
    async fn exec(
        &self,
        container_id: &str,
        cmd: &[String],
        io: StreamIo,
        tty: bool,
        resize: ResizeRx,
    ) -> Result<i32, StreamError>;
    /// Connects `io` to the container's own stdio until it ends or the
    /// client leaves.
    async fn attach(&self, container_id: &str, io: StreamIo, tty: bool, resize: ResizeRx) -> Result<(), StreamError>;
    /// Connects `stream` to `port` on localhost in the pod's network
    /// namespace, both ways, until both sides are done.
    async fn port_forward(&self, pod_sandbox_id: &str, port: u16, stream: DuplexStream) -> Result<(), StreamError>;
}

/// A request the RPC validated, waiting for its client to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pending {
    Exec { container_id: String, cmd: Vec<String>, opts: StdioOpts },
    Attach { container_id: String, opts: StdioOpts },
    PortForward { pod_sandbox_id: String },
}

/// Which stdio streams an exec/attach has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StdioOpts {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Pending {
    fn path(&self) -> &'static str {
        match self {
            Pending::Exec { .. } => "exec",
            Pending::Attach { .. } => "attach",
            Pending::PortForward { .. } => "portforward",
        }
    }
}

/// The single-use tokens of pending requests.
#[derive(Default)]
pub struct Tokens(Mutex<HashMap<String, (Instant, Pending)>>);

impl Tokens {
    /// A new token for `p`; `None` when too many are pending.
    pub fn insert(&self, p: Pending) -> Option<String> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (at, _)| at.elapsed() < TOKEN_TTL);
        if map.len() >= MAX_PENDING {
            return None;
        }
        // 128 random bits, URL-safe: not guessable, not reusable.
        let token: String = rand::random::<[u8; 16]>().iter().map(|b| format!("{b:02x}")).collect();
        map.insert(token.clone(), (Instant::now(), p));
        Some(token)
    }

    /// Takes the request of `token` (gone afterwards) unless it expired.
    pub fn take(&self, token: &str) -> Option<Pending> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(token).filter(|(at, _)| at.elapsed() < TOKEN_TTL).map(|(_, p)| p)
    }
}

/// What every upgraded session gets: its limits, and its place among
/// `[stream] max_sessions` (given back when the session ends with it).
pub struct SessionCtx {
    pub idle_timeout: Duration,
    pub spdy: spdy::SessionLimits,
    _place: OwnedSemaphorePermit,
}

impl SessionCtx {
    /// `io` with the idle-stream timeout.
    pub fn wrap<T>(&self, io: T) -> idle::IdleIo<T> {
        idle::IdleIo::new(io, self.idle_timeout)
    }
}

/// What the accept loop shares with every connection.
struct Shared {
    tokens: Arc<Tokens>,
    streamer: Arc<dyn Streamer>,
    /// One permit per session that may run at once.
    sessions: Arc<Semaphore>,
    max_sessions: usize,
    idle_timeout: Duration,
    spdy: spdy::SessionLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// The running streaming server.
pub struct Server {
    base_url: String,
    tokens: Arc<Tokens>,
    pub streamer: Arc<dyn Streamer>,
}

impl Server {
    /// Binds `[stream] address:port` (port 0: a free one) and serves in
    /// the background of the current tokio runtime.
    pub async fn start(cfg: &StreamConfig, streamer: Arc<dyn Streamer>) -> Result<Server, StreamError> {
        let tls = match (&cfg.tls_cert_file, &cfg.tls_key_file) {
            (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
            _ => None,
        };
        let addr = format_addr(&cfg.address, cfg.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|source| StreamError::Bind { addr: addr.clone(), source })?;
        let local = listener.local_addr().map_err(|source| StreamError::Bind { addr, source })?;
        let tokens = Arc::new(Tokens::default());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base_url = format!("{scheme}://{}", format_addr(&local.ip().to_string(), local.port()));
        tracing::info!(url = %base_url, "streaming server (exec, attach, port-forward) listening");
        let shared = Arc::new(Shared {
            tokens: tokens.clone(),
            streamer: streamer.clone(),
            sessions: Arc::new(Semaphore::new(cfg.max_sessions)),
            max_sessions: cfg.max_sessions,
            idle_timeout: cfg.idle_timeout,
            spdy: spdy::SessionLimits { max_streams: cfg.max_streams_per_session },
            tls,
        });
        tokio::spawn(accept_loop(listener, shared));
        Ok(Server { base_url, tokens, streamer })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The URL the client connects to for `p`.
    pub fn url_for(&self, p: Pending) -> Result<String, tonic::Status> {
        let path = p.path();
        let token = self.tokens.insert(p).ok_or_else(|| {
            tonic::Status::resource_exhausted(format!("too many pending streaming requests (at most {MAX_PENDING})"))
        })?;
        Ok(format!("{}/{path}/{token}", self.base_url))
    }
}

fn format_addr(ip: &str, port: u16) -> String {
    if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") }
}

/// The TLS server config of a PEM certificate chain and key.
fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<tokio_rustls::TlsAcceptor, StreamError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let tls = |key, reason| StreamError::Tls { key, reason };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls("tls_cert_file", format!("read certificates from {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(tls("tls_cert_file", format!("{}: no PEM certificate in it", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| tls("tls_key_file", format!("read a PEM private key from {}: {e}", key.display())))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls("tls_cert_file", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls("tls_key_file", format!("does not go with tls_cert_file: {e}")))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let (conn, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and the like: wait, as a server must not spin.
                tracing::warn!("streaming server accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Frames go out as several small writes (a SETTINGS, then a
        // SYN_REPLY; data, FINs, the status): with Nagle each waits for the
        // client's delayed ACK (tens of ms per round trip). Go's clients and
        // servers set TCP_NODELAY too.
        if let Err(e) = conn.set_nodelay(true) {
            tracing::debug!("streaming server: TCP_NODELAY: {e}");
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let res = match &shared.tls {
                None => serve_connection(conn, shared.clone()).await,
                // A handshake that does not finish in time is dropped.
                Some(tls) => match tokio::time::timeout(Duration::from_secs(30), tls.accept(conn)).await {
                    Ok(Ok(conn)) => serve_connection(conn, shared.clone()).await,
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("TLS handshake timed out".into()),
                },
            };
            if let Err(e) = res {
                tracing::debug!(%peer, "streaming connection: {e}");
            }
        });
    }
}

async fn serve_connection<IO>(conn: IO, shared: Arc<Shared>) -> Result<(), String>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let svc = hyper::service::service_fn(move |req| handle(req, shared.clone()));
    hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(conn), svc)
        .with_upgrades()
        .await
        .map_err(|e| e.to_string())
}

pub type HttpResponse = Response<Full<Bytes>>;

/// A plain-text answer.
pub fn text(status: StatusCode, msg: impl Into<String>) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from(msg.into() + "\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain"));
    r
}

/// Which upgrade the client asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upgrade {
    Spdy,
    WebSocket,
}

fn upgrade_of(req: &hyper::Request<Incoming>) -> Option<Upgrade> {
    let up = req.headers().get(hyper::header::UPGRADE)?.to_str().ok()?;
    if up.eq_ignore_ascii_case("SPDY/3.1") {
        Some(Upgrade::Spdy)
    } else if up.eq_ignore_ascii_case("websocket") {
        Some(Upgrade::WebSocket)
    } else {
        None
    }
}

/// Every value of a header that may be repeated or comma-separated.
pub fn header_list(req: &hyper::Request<Incoming>, name: &str) -> Vec<String> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

async fn handle(req: hyper::Request<Incoming>, shared: Arc<Shared>) -> Result<HttpResponse, Infallible> {
    let path = req.uri().path().trim_start_matches('/').to_string();
    let Some((kind, token)) = path.split_once('/') else {
        return Ok(text(StatusCode::NOT_FOUND, "not found"));
    };
    // Checked before the token is spent: the client may try again later.
    let Ok(place) = shared.sessions.clone().try_acquire_owned() else {
        let msg = format!("too many streaming sessions (at most {}): try again later", shared.max_sessions);
        tracing::info!("{msg}");
        return Ok(text(StatusCode::TOO_MANY_REQUESTS, msg));
    };
    let ctx = SessionCtx { idle_timeout: shared.idle_timeout, spdy: shared.spdy, _place: place };
    let (tokens, streamer) = (&shared.tokens, shared.streamer.clone());
    // The token is spent by any attempt, as kubelet's is: a URL that
    // leaked cannot be tried again.
    let pending = match tokens.take(token) {
        Some(p) if p.path() == kind => p,
        _ => return Ok(text(StatusCode::NOT_FOUND, format!("{kind}: unknown or expired token"))),
    };
    let Some(upgrade) = upgrade_of(&req) else {
        return Ok(text(StatusCode::BAD_REQUEST, "the request must upgrade the connection to SPDY/3.1 or websocket"));
    };
    tracing::debug!(?pending, ?upgrade, "streaming request");
    Ok(match pending {
        Pending::PortForward { pod_sandbox_id } => portforward::serve(req, upgrade, pod_sandbox_id, streamer, ctx),
        p => remotecommand::serve(req, upgrade, p, streamer, ctx),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_use_and_random() {
        let t = Tokens::default();
        let p = Pending::PortForward { pod_sandbox_id: "p".into() };
        let a = t.insert(p.clone()).unwrap();
        let b = t.insert(p.clone()).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert_eq!(t.take(&a), Some(p));
        assert_eq!(t.take(&a), None);
        assert_eq!(t.take("nonsense"), None);
    }

    #[test]
    fn expired_tokens_are_refused_and_the_cache_is_bounded() {
        let t = Tokens::default();
        let p = Pending::PortForward { pod_sandbox_id: "p".into() };
        let old = t.insert(p.clone()).unwrap();
        {
            let mut map = t.0.lock().unwrap();
            let at = Instant::now().checked_sub(TOKEN_TTL + Duration::from_secs(1)).unwrap();
            map.get_mut(&old).unwrap().0 = at;
        }
        assert_eq!(t.take(&old), None);
        for _ in 0..MAX_PENDING {
            t.insert(p.clone()).unwrap();
        }
        assert!(t.insert(p).is_none());
    }
}
