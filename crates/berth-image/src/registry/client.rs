//! A client for one registry, to the OCI distribution spec.
//!
//! Transport: HTTPS with the system CAs plus the registry's certs.d
//! directory; plain HTTP only for loopback and configured-insecure
//! registries (tried after HTTPS, as docker does). Auth: on a 401 the
//! `WWW-Authenticate` challenge decides: Basic with stored credentials, or a
//! Bearer token fetched from the realm for the request's scopes (cached per
//! scope set). Transient failures are retried with exponential backoff;
//! a connection that takes longer than `connect_timeout`, or a registry
//! silent for `idle_timeout`, is such a failure (so no pull hangs).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use bytes::Bytes;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, LOCATION,
    RANGE,
};
use reqwest::{Method, StatusCode, Url};
use tracing::{debug, warn};

use super::auth::{Challenge, Credentials, challenge_from_headers};
use super::config::{RegistryConfig, is_loopback};
use super::hosts::{Endpoint, HostConfig};
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::media::MANIFEST_ACCEPT;
use crate::store::content::Ingest;

/// Manifests bigger than this are refused (containerd uses the same bound):
/// they are read into memory whole.
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;

#[derive(Default)]
struct AuthState {
    challenge: Option<Challenge>,
    tokens: HashMap<String, String>,
}

/// A connection to one registry host.
pub struct Registry {
    registry: String,
    base: Url,
    http: reqwest::Client,
    creds: Option<Credentials>,
    auth: Mutex<AuthState>,
    cfg: RegistryConfig,
    /// The base URL is the API root itself (hosts.toml `override_path`):
    /// requests leave out the `v2/` prefix.
    override_path: bool,
}

/// The access a request needs, for Bearer token scopes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Pull,
    Push,
}

fn scope(repo: &str, access: Access) -> String {
    match access {
        Access::Pull => format!("repository:{repo}:pull"),
        Access::Push => format!("repository:{repo}:pull,push"),
    }
}

fn http_err(context: impl Into<String>) -> impl FnOnce(reqwest::Error) -> Error {
    let context = context.into();
    move |source| Error::Http { context, source }
}

impl Registry {
    /// Connects to `registry` (`host[:port]`, as in references; an
    /// `http://` or `https://` prefix forces the scheme, as mirrors may),
    /// finding out which scheme it speaks.
    pub async fn connect(registry: &str, cfg: &RegistryConfig) -> Result<Registry> {
        let (forced, host) = if let Some(h) = registry.strip_prefix("http://") {
            (Some("http"), h.trim_end_matches('/'))
        } else if let Some(h) = registry.strip_prefix("https://") {
            (Some("https"), h.trim_end_matches('/'))
        } else {
            (None, registry)
        };
        let api_host =
            if host == crate::reference::DEFAULT_REGISTRY { crate::reference::DEFAULT_REGISTRY_API_HOST } else { host };
        let insecure = cfg.is_insecure(host);
        let http = build_client(host, cfg, insecure)?;
        let creds = cfg.credentials(host)?;
        let schemes: Vec<&str> = match forced {
            Some(s) => vec![s],
            None if insecure || is_loopback(host) => vec!["https", "http"],
            None => vec!["https"],
        };
        let mut errors = Vec::new();
        for scheme in schemes {
            let base = Url::parse(&format!("{scheme}://{api_host}/"))
                .map_err(|e| Error::Unsupported(format!("registry {registry}: {e}")))?;
            let reg = Registry {
                registry: host.to_string(),
                base,
                http: http.clone(),
                creds: creds.clone(),
                auth: Mutex::new(AuthState::default()),
                cfg: cfg.clone(),
                override_path: false,
            };
            match reg.ping().await {
                Ok(()) => return Ok(reg),
                Err(e) => {
                    debug!(registry, scheme, error = %e, "ping failed");
                    errors.push(format!("{scheme}: {e}"));
                }
            }
        }
        Err(Error::Unsupported(format!("cannot reach registry {registry}: {}", errors.join("; "))))
    }

    /// Connects to an endpoint of [`RegistryConfig::endpoints`].
    pub async fn connect_endpoint(endpoint: &Endpoint, cfg: &RegistryConfig) -> Result<Registry> {
        match endpoint {
            Endpoint::Named(name) => Registry::connect(name, cfg).await,
            Endpoint::Host(h) => Registry::connect_host(h, cfg).await,
        }
    }

    /// Connects to a host of a hosts.toml: its scheme as written (plain
    /// HTTP when it says `http://`), its TLS settings, headers and proxy.
    pub async fn connect_host(h: &HostConfig, cfg: &RegistryConfig) -> Result<Registry> {
        let host = h.host();
        let mut b = client_builder(&host, cfg, h.skip_verify || cfg.is_insecure(&host))?;
        b = add_host_settings(b, h)?;
        let reg = Registry {
            registry: host.clone(),
            base: h.url.clone(),
            http: b.build().map_err(http_err(format!("HTTP client for {}", h.url)))?,
            creds: cfg.credentials(&host)?,
            auth: Mutex::new(AuthState::default()),
            cfg: cfg.clone(),
            override_path: h.override_path,
        };
        reg.ping().await.map_err(|e| Error::Unsupported(format!("cannot reach registry host {}: {e}", h.url)))?;
        Ok(reg)
    }

    /// Checks that the registry accepts our credentials (`berth login`).
    pub async fn check_login(&self) -> Result<()> {
        let url = self.url("v2/")?;
        let resp = self.send(Method::GET, url.clone(), &[], |r| r).await?;
        if resp.status().is_success() { Ok(()) } else { Err(registry_error("GET", &url, resp.status(), resp).await) }
    }

    /// The registry as named in references.
    pub fn name(&self) -> &str {
        &self.registry
    }

    /// `GET /v2/`: any answer from a registry (200, or 401 with a
    /// challenge) proves it speaks the protocol.
    async fn ping(&self) -> Result<()> {
        let url = self.url("v2/")?;
        let resp = self.http.get(url.clone()).send().await.map_err(self.request_err(format!("GET {url}")))?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            StatusCode::UNAUTHORIZED => {
                self.remember_challenge(&resp);
                Ok(())
            }
            s => Err(registry_error("GET", &url, s, resp).await),
        }
    }

    /// A failed request as an error naming it, and for a timeout, the
    /// registry and which of the configured limits it hit.
    fn request_err(&self, what: String) -> impl FnOnce(reqwest::Error) -> Error + '_ {
        move |source| {
            let context = if source.is_connect() && source.is_timeout() {
                format!(
                    "{what}: no connection to registry {} within {:?} (registry.connect_timeout)",
                    self.registry, self.cfg.connect_timeout
                )
            } else if source.is_timeout() {
                format!(
                    "{what}: registry {} sent nothing for {:?} (registry.idle_timeout)",
                    self.registry, self.cfg.idle_timeout
                )
            } else {
                what
            };
            Error::Http { context, source }
        }
    }

    fn url(&self, path: &str) -> Result<Url> {
        let path = if self.override_path { path.strip_prefix("v2/").unwrap_or(path) } else { path };
        self.base.join(path).map_err(|e| Error::Unsupported(format!("bad URL path {path}: {e}")))
    }

    fn remember_challenge(&self, resp: &reqwest::Response) {
        if let Some(c) = challenge_from_headers(resp.headers())
            && let Ok(mut st) = self.auth.lock()
        {
            st.challenge = Some(c);
        }
    }

    fn auth_header(&self, scopes: &[String]) -> Option<String> {
        let st = self.auth.lock().ok()?;
        match st.challenge.as_ref()? {
            Challenge::Basic => self.creds.as_ref().map(|c| c.basic_header()),
            Challenge::Bearer { .. } => st.tokens.get(&scopes.join(" ")).map(|t| format!("Bearer {t}")),
        }
    }

    /// Answers the last challenge for `scopes`.
    async fn authenticate(&self, scopes: &[String]) -> Result<()> {
        let challenge = self.auth.lock().ok().and_then(|s| s.challenge.clone());
        match challenge {
            None => Err(Error::Auth { registry: self.registry.clone(), reason: "401 without a challenge".into() }),
            Some(Challenge::Basic) => {
                if self.creds.is_none() {
                    return Err(Error::Auth {
                        registry: self.registry.clone(),
                        reason: "credentials required (berth login)".into(),
                    });
                }
                Ok(())
            }
            Some(Challenge::Bearer { realm, service, .. }) => {
                let mut url = Url::parse(&realm).map_err(|e| Error::Auth {
                    registry: self.registry.clone(),
                    reason: format!("bad token realm {realm:?}: {e}"),
                })?;
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = &service {
                        q.append_pair("service", s);
                    }
                    for s in scopes {
                        q.append_pair("scope", s);
                    }
                }
                let req = super::auth::token_request(&self.http, url.clone(), self.creds.as_ref());
                let resp = req.send().await.map_err(http_err(format!("token from {realm}")))?;
                if !resp.status().is_success() {
                    return Err(Error::Auth {
                        registry: self.registry.clone(),
                        reason: format!("token server {realm} answered {}", resp.status()),
                    });
                }
                #[derive(serde::Deserialize)]
                struct Token {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let t: Token = resp.json().await.map_err(http_err(format!("token from {realm}")))?;
                let token = t.token.or(t.access_token).filter(|t| !t.is_empty()).ok_or_else(|| Error::Auth {
                    registry: self.registry.clone(),
                    reason: format!("token server {realm} sent no token"),
                })?;
                if let Ok(mut st) = self.auth.lock() {
                    st.tokens.insert(scopes.join(" "), token);
                }
                Ok(())
            }
        }
    }

    /// Sends a request built by `build`, answering auth challenges and
    /// retrying transient failures.
    async fn send(
        &self,
        method: Method,
        url: Url,
        scopes: &[String],
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let mut attempt = 0;
        let mut authenticated = false;
        let mut pause = self.cfg.backoff;
        loop {
            attempt += 1;
            let mut req = build(self.http.request(method.clone(), url.clone()));
            if let Some(h) = self.auth_header(scopes) {
                req = req.header(AUTHORIZATION, h);
            }
            match req.send().await {
                Err(e) if attempt < self.cfg.attempts && (e.is_connect() || e.is_timeout() || e.is_request()) => {
                    warn!(%url, error = %e, attempt, "request failed, retrying");
                }
                Err(e) => return Err(self.request_err(format!("{method} {url}"))(e)),
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !authenticated => {
                    self.remember_challenge(&resp);
                    self.authenticate(scopes).await?;
                    authenticated = true;
                    continue;
                }
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED => {
                    return Err(Error::Auth {
                        registry: self.registry.clone(),
                        reason: format!("{method} {url}: unauthorized"),
                    });
                }
                Ok(resp)
                    if attempt < self.cfg.attempts
                        && (resp.status() == StatusCode::TOO_MANY_REQUESTS || resp.status().is_server_error()) =>
                {
                    warn!(%url, status = %resp.status(), attempt, "registry busy, retrying");
                }
                Ok(resp) => return Ok(resp),
            }
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
    }

    /// Fetches a manifest or index: its bytes and content type. The caller
    /// checks the digest.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Result<(Vec<u8>, Option<String>)> {
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"))?;
        let scopes = [scope(repo, Access::Pull)];
        let resp = self.send(Method::GET, url.clone(), &scopes, |r| r.header(ACCEPT, MANIFEST_ACCEPT)).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(Error::NotFound(format!("manifest {repo}:{reference} on {}", self.registry)));
        }
        if !resp.status().is_success() {
            return Err(registry_error("GET", &url, resp.status(), resp).await);
        }
        let ct = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(String::from);
        let body = self.read_limited(resp, MAX_MANIFEST_SIZE, &url).await?;
        Ok((body, ct))
    }

    /// Fetches a small blob (a config) whole.
    pub async fn get_blob_bytes(&self, repo: &str, digest: &Digest, limit: usize) -> Result<Vec<u8>> {
        let url = self.url(&format!("v2/{repo}/blobs/{digest}"))?;
        let resp = self.send(Method::GET, url.clone(), &[scope(repo, Access::Pull)], |r| r).await?;
        if !resp.status().is_success() {
            return Err(registry_error("GET", &url, resp.status(), resp).await);
        }
        self.read_limited(resp, limit, &url).await
    }

    /// Downloads a blob into `ingest`, resuming from what it already holds
    /// (HTTP Range) and again after a dropped connection. `progress` gets
    /// each chunk's length.
    pub async fn fetch_blob(
        &self,
        repo: &str,
        digest: &Digest,
        ingest: &mut Ingest,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<()> {
        let url = self.url(&format!("v2/{repo}/blobs/{digest}"))?;
        let scopes = [scope(repo, Access::Pull)];
        let mut drops = 0;
        loop {
            let offset = ingest.offset();
            if offset > 0 {
                debug!(%digest, offset, "resuming download");
                progress(offset);
            }
            let resp = self
                .send(Method::GET, url.clone(), &scopes, |r| {
                    if offset > 0 { r.header(RANGE, format!("bytes={offset}-")) } else { r }
                })
                .await?;
            match resp.status() {
                StatusCode::PARTIAL_CONTENT if offset > 0 => {}
                StatusCode::RANGE_NOT_SATISFIABLE if offset > 0 => {
                    // What we hold is already the whole blob, or garbage.
                    return Ok(());
                }
                StatusCode::OK => {
                    if offset > 0 {
                        // The server ignored Range: start over.
                        ingest.restart()?;
                        progress(0);
                    }
                }
                s => return Err(registry_error("GET", &url, s, resp).await),
            }
            let mut resp = resp;
            let result = loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        ingest.write_all(&chunk)?;
                        progress(chunk.len() as u64);
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) if drops + 1 < self.cfg.attempts => {
                    drops += 1;
                    warn!(%digest, error = %e, "download interrupted, resuming");
                    tokio::time::sleep(self.cfg.backoff * drops).await;
                }
                Err(e) => return Err(self.request_err(format!("GET {url}"))(e)),
            }
        }
    }

    /// The size of a blob if the registry has it in `repo`.
    pub async fn blob_exists(&self, repo: &str, digest: &Digest, access: Access) -> Result<Option<u64>> {
        let url = self.url(&format!("v2/{repo}/blobs/{digest}"))?;
        let resp = self.send(Method::HEAD, url.clone(), &[scope(repo, access)], |r| r).await?;
        match resp.status() {
            s if s.is_success() => Ok(resp
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .or(Some(0))),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(registry_error("HEAD", &url, s, resp).await),
        }
    }

    fn scopes_push(repo: &str, from: Option<&str>) -> Vec<String> {
        let mut s = vec![scope(repo, Access::Push)];
        if let Some(f) = from
            && f != repo
        {
            s.push(scope(f, Access::Pull));
        }
        s
    }

    /// Tries to mount `digest` from `from` into `repo` (cross-repository
    /// blob mount). Returns false when the registry wants an upload instead.
    pub async fn mount_blob(&self, repo: &str, from: &str, digest: &Digest) -> Result<bool> {
        let mut url = self.url(&format!("v2/{repo}/blobs/uploads/"))?;
        url.query_pairs_mut().append_pair("mount", &digest.to_string()).append_pair("from", from);
        let resp = self
            .send(Method::POST, url.clone(), &Self::scopes_push(repo, Some(from)), |r| r.header(CONTENT_LENGTH, "0"))
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                // An upload session was opened instead; cancel it politely.
                if let Some(loc) = location(&resp, &url) {
                    let _ = self.send(Method::DELETE, loc, &Self::scopes_push(repo, None), |r| r).await;
                }
                Ok(false)
            }
            s => Err(registry_error("POST", &url, s, resp).await),
        }
    }

    /// Uploads the blob in `file`: in one PUT when it is small, else in
    /// PATCH chunks of the configured size.
    pub async fn upload_blob(&self, repo: &str, digest: &Digest, file: &Path, size: u64) -> Result<()> {
        let scopes = Self::scopes_push(repo, None);
        let start = self.url(&format!("v2/{repo}/blobs/uploads/"))?;
        let resp = self.send(Method::POST, start.clone(), &scopes, |r| r.header(CONTENT_LENGTH, "0")).await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(registry_error("POST", &start, resp.status(), resp).await);
        }
        let mut loc = location(&resp, &start)
            .ok_or_else(|| Error::Unsupported(format!("POST {start}: no Location in the answer")))?;
        let chunk = self.cfg.push_chunk_size.max(1);
        let mut f = tokio::fs::File::open(file).await.ctx(|| format!("open {}", file.display()))?;
        if size > chunk {
            use tokio::io::AsyncReadExt;
            let mut sent = 0u64;
            while sent < size {
                let n = chunk.min(size - sent);
                let mut buf = vec![0u8; n as usize];
                f.read_exact(&mut buf).await.ctx(|| format!("read {}", file.display()))?;
                let body = Bytes::from(buf);
                let range = format!("{}-{}", sent, sent + n - 1);
                let resp = self
                    .send(Method::PATCH, loc.clone(), &scopes, |r| {
                        r.header(CONTENT_TYPE, "application/octet-stream")
                            .header(CONTENT_RANGE, range.clone())
                            .header(CONTENT_LENGTH, n.to_string())
                            .body(body.clone())
                    })
                    .await?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(registry_error("PATCH", &loc, resp.status(), resp).await);
                }
                loc = location(&resp, &loc).unwrap_or(loc);
                sent += n;
            }
            loc.query_pairs_mut().append_pair("digest", &digest.to_string());
            let resp = self.send(Method::PUT, loc.clone(), &scopes, |r| r.header(CONTENT_LENGTH, "0")).await?;
            if resp.status() != StatusCode::CREATED {
                return Err(registry_error("PUT", &loc, resp.status(), resp).await);
            }
        } else {
            let data = tokio::fs::read(file).await.ctx(|| format!("read {}", file.display()))?;
            let body = Bytes::from(data);
            loc.query_pairs_mut().append_pair("digest", &digest.to_string());
            let resp = self
                .send(Method::PUT, loc.clone(), &scopes, |r| {
                    r.header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_LENGTH, body.len().to_string())
                        .body(body.clone())
                })
                .await?;
            if resp.status() != StatusCode::CREATED {
                return Err(registry_error("PUT", &loc, resp.status(), resp).await);
            }
        }
        Ok(())
    }

    /// A small document's body, refused past `limit` bytes.
    async fn read_limited(&self, mut resp: reqwest::Response, limit: usize, url: &Url) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(c) = resp.chunk().await.map_err(self.request_err(format!("GET {url}")))? {
            if out.len() + c.len() > limit {
                return Err(Error::Unsupported(format!("GET {url}: document larger than {limit} bytes")));
            }
            out.extend_from_slice(&c);
        }
        Ok(out)
    }

    /// Puts a manifest (or index) under a tag or digest.
    pub async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, data: &[u8]) -> Result<()> {
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"))?;
        let body = Bytes::copy_from_slice(data);
        let resp = self
            .send(Method::PUT, url.clone(), &Self::scopes_push(repo, None), |r| {
                r.header(CONTENT_TYPE, media_type).body(body.clone())
            })
            .await?;
        if !resp.status().is_success() {
            return Err(registry_error("PUT", &url, resp.status(), resp).await);
        }
        Ok(())
    }
}

fn location(resp: &reqwest::Response, base: &Url) -> Option<Url> {
    let l = resp.headers().get(LOCATION)?.to_str().ok()?;
    base.join(l).ok()
}

async fn registry_error(method: &str, url: &Url, status: StatusCode, resp: reqwest::Response) -> Error {
    #[derive(serde::Deserialize)]
    struct Errs {
        errors: Vec<E>,
    }
    #[derive(serde::Deserialize)]
    struct E {
        code: Option<String>,
        message: Option<String>,
    }
    let body = resp.text().await.unwrap_or_default();
    let message = match serde_json::from_str::<Errs>(&body) {
        Ok(e) => e
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code.as_deref().unwrap_or("error"), e.message.as_deref().unwrap_or("")))
            .collect::<Vec<_>>()
            .join("; "),
        Err(_) => body.chars().take(200).collect(),
    };
    Error::Registry { method: method.into(), url: url.to_string(), status: status.as_u16(), message }
}

/// An HTTP client with the system CAs plus the registry's certs.d files.
fn build_client(host: &str, cfg: &RegistryConfig, insecure: bool) -> Result<reqwest::Client> {
    client_builder(host, cfg, insecure)?.build().map_err(http_err("build HTTP client"))
}

/// A hosts.toml host's own CAs, client certificates, headers, dial
/// timeout and proxy, on top of [`client_builder`]'s.
fn add_host_settings(mut b: reqwest::ClientBuilder, h: &HostConfig) -> Result<reqwest::ClientBuilder> {
    let read = |p: &Path| std::fs::read(p).ctx(|| format!("read {} (hosts.toml of {})", p.display(), h.url));
    for ca in &h.ca {
        for c in reqwest::Certificate::from_pem_bundle(&read(ca)?)
            .map_err(http_err(format!("CA certificates in {}", ca.display())))?
        {
            b = b.add_root_certificate(c);
        }
    }
    for (cert, key) in &h.client {
        let mut pem = read(cert)?;
        if let Some(k) = key {
            pem.push(b'\n');
            pem.extend_from_slice(&read(k)?);
        }
        b = b.identity(reqwest::Identity::from_pem(&pem).map_err(http_err(format!("client key {}", cert.display())))?);
    }
    let mut headers = HeaderMap::new();
    for (k, v) in &h.headers {
        let bad = |e: String| Error::Unsupported(format!("hosts.toml of {}: header {k:?}: {e}", h.url));
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| bad(e.to_string()))?;
        headers.append(name, HeaderValue::from_str(v).map_err(|e| bad(e.to_string()))?);
    }
    b = b.default_headers(headers);
    if let Some(t) = h.dial_timeout {
        b = b.connect_timeout(t);
    }
    if let Some(p) = &h.proxy {
        b = b.proxy(reqwest::Proxy::all(p).map_err(http_err(format!("proxy {p}")))?);
    }
    Ok(b)
}

/// [`build_client`]'s settings, before building.
fn client_builder(host: &str, cfg: &RegistryConfig, insecure: bool) -> Result<reqwest::ClientBuilder> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(cfg.connect_timeout)
        .read_timeout(cfg.idle_timeout)
        .danger_accept_invalid_certs(insecure);
    // docker names the directory host:port; containerd also allows "_default".
    for dir in &cfg.certs_dirs {
        let d = dir.join(host);
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        let mut cert = None;
        let mut key = None;
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if name.ends_with(".crt") {
                let pem = std::fs::read(&p).ctx(|| format!("read {}", p.display()))?;
                for c in reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(http_err(format!("CA certificates in {}", p.display())))?
                {
                    b = b.add_root_certificate(c);
                }
            } else if name.ends_with(".cert") {
                cert = Some(std::fs::read(&p).ctx(|| format!("read {}", p.display()))?);
            } else if name.ends_with(".key") {
                key = Some(std::fs::read(&p).ctx(|| format!("read {}", p.display()))?);
            }
        }
        if let (Some(mut c), Some(k)) = (cert, key) {
            c.extend_from_slice(&k);
            b = b
                .identity(reqwest::Identity::from_pem(&c).map_err(http_err(format!("client key in {}", d.display())))?);
        }
    }
    Ok(b)
}
