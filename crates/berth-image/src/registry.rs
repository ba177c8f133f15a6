//! A registry client to the OCI distribution spec: ping, manifests and
//! indexes (OCI and Docker schema 2), blobs streamed into the content
//! store with their digest checked, monolithic blob upload and manifest
//! push. Bearer tokens from WWW-Authenticate (realm, service, scope) and
//! basic auth, with credentials from ~/.docker/config.json. Plain HTTP for
//! loopback registries (as docker allows) and those listed insecure;
//! HTTPS with the system's CAs otherwise.
//!
//! Blocking (ureq): berth pulls a handful of blobs at once on threads, and
//! a runtime per CLI call would cost more than it saves.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;

use crate::digest::Digest;
use crate::reference::Reference;
use crate::store::content::{ContentError, ContentStore};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
                      application/vnd.docker.distribution.manifest.list.v2+json, \
                      application/vnd.docker.distribution.manifest.v2+json";
/// Manifests are small; a registry sending more is refused.
const MAX_MANIFEST: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{url}: {source}")]
    Http { url: String, source: Box<ureq::Error> },
    #[error("{url}: HTTP {status}: {body}")]
    Status { url: String, status: u16, body: String },
    #[error("{reference}: manifest unknown to {registry} (no such image or tag)")]
    NotFound { reference: String, registry: String },
    #[error("{0}: authentication required (berth login)")]
    Unauthorized(String),
    #[error("manifest {digest}: {why}")]
    BadManifest { digest: String, why: String },
    #[error("no image for platform {platform} in {reference} (it has: {available})")]
    NoPlatform { reference: String, platform: String, available: String },
    #[error(transparent)]
    Content(#[from] ContentError),
}

/// Credentials for one registry host.
#[derive(Debug, Clone, PartialEq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

pub struct Client {
    agent: ureq::Agent,
    /// Hosts spoken to over plain HTTP besides loopback ones.
    insecure: Vec<String>,
    credentials: HashMap<String, Credentials>,
    tokens: std::sync::Mutex<HashMap<String, String>>,
}

impl Default for Client {
    fn default() -> Client {
        Client::new()
    }
}

impl Client {
    pub fn new() -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .build()
            .into();
        Client { agent, insecure: Vec::new(), credentials: docker_config_credentials(), tokens: Default::default() }
    }

    pub fn insecure(mut self, host: &str) -> Client {
        self.insecure.push(host.into());
        self
    }

    pub fn with_credentials(mut self, host: &str, c: Credentials) -> Client {
        self.credentials.insert(host.into(), c);
        self
    }

    fn base(&self, r: &Reference) -> String {
        let host = r.api_host();
        let bare = host.rsplit_once(':').map_or(host, |(h, _)| h);
        let loopback = bare == "localhost" || bare.starts_with("127.") || bare == "[::1]";
        let scheme = if loopback || self.insecure.iter().any(|h| h == host) { "http" } else { "https" };
        format!("{scheme}://{host}/v2/{}", r.repository)
    }

    /// A request with whatever auth the registry asked for before; on a
    /// 401 it fetches a token (or uses basic auth) and tries once more.
    fn send(
        &self,
        r: &Reference,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<ureq::http::Response<ureq::Body>, RegistryError> {
        let mut retried = false;
        loop {
            let auth = self.tokens.lock().ok().and_then(|t| t.get(&r.registry).cloned());
            let mut req = ureq::http::Request::builder().method(method).uri(url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(a) = &auth {
                req = req.header("Authorization", a.as_str());
            }
            let http = |e: ureq::Error| RegistryError::Http { url: url.into(), source: Box::new(e) };
            let resp = match body {
                Some(b) => self.agent.run(req.body(b.to_vec()).map_err(|e| http(ureq::Error::Http(e)))?),
                None => self.agent.run(req.body(()).map_err(|e| http(ureq::Error::Http(e)))?),
            }
            .map_err(http)?;
            if resp.status() != 401 || retried {
                if resp.status() == 401 {
                    return Err(RegistryError::Unauthorized(r.registry.clone()));
                }
                return Ok(resp);
            }
            retried = true;
            let challenge =
                resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            let header = self.authenticate(r, &challenge)?;
            if let Ok(mut t) = self.tokens.lock() {
                t.insert(r.registry.clone(), header);
            }
        }
    }

    /// The Authorization header a challenge calls for.
    fn authenticate(&self, r: &Reference, challenge: &str) -> Result<String, RegistryError> {
        let creds = self.credentials.get(&r.registry);
        let basic = |c: &Credentials| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password))
            )
        };
        let Some(params) = challenge.strip_prefix("Bearer ") else {
            return creds.map(basic).ok_or_else(|| RegistryError::Unauthorized(r.registry.clone()));
        };
        let p = parse_challenge(params);
        let realm = p.get("realm").ok_or_else(|| RegistryError::Unauthorized(r.registry.clone()))?;
        let scope = p.get("scope").cloned().unwrap_or_else(|| format!("repository:{}:pull", r.repository));
        let mut url = format!("{realm}?scope={}", urlencode(&scope));
        if let Some(s) = p.get("service") {
            url.push_str(&format!("&service={}", urlencode(s)));
        }
        let mut req = self.agent.get(&url);
        if let Some(c) = creds {
            req = req.header("Authorization", &basic(c));
        }
        let mut resp = req.call().map_err(|e| RegistryError::Http { url: url.clone(), source: Box::new(e) })?;
        if resp.status() != 200 {
            return Err(RegistryError::Unauthorized(r.registry.clone()));
        }
        let v: serde_json::Value = serde_json::from_slice(&resp.body_mut().read_to_vec().unwrap_or_default())
            .map_err(|_| RegistryError::Unauthorized(r.registry.clone()))?;
        let token = v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .ok_or_else(|| RegistryError::Unauthorized(r.registry.clone()))?;
        Ok(format!("Bearer {token}"))
    }

    fn check(
        url: &str,
        mut resp: ureq::http::Response<ureq::Body>,
    ) -> Result<ureq::http::Response<ureq::Body>, RegistryError> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let body = resp.body_mut().with_config().limit(64 << 10).read_to_string().unwrap_or_default();
        Err(RegistryError::Status { url: url.into(), status: resp.status().as_u16(), body: body.trim().into() })
    }

    /// GET /v2/: reachable, and auth set up if the registry wants it.
    pub fn ping(&self, r: &Reference) -> Result<(), RegistryError> {
        let base = self.base(r);
        let url = format!("{}/", &base[..base.find("/v2/").map_or(base.len(), |i| i + 3)]);
        let resp = self.send(r, "GET", &url, &[], None)?;
        Self::check(&url, resp).map(|_| ())
    }

    /// The manifest or index `r` names (by digest, else by tag): its bytes,
    /// media type and digest (checked against the bytes when asked by
    /// digest).
    pub fn manifest(&self, r: &Reference, by: &str) -> Result<(Vec<u8>, String, Digest), RegistryError> {
        let url = format!("{}/manifests/{by}", self.base(r));
        let resp = self.send(r, "GET", &url, &[("Accept", ACCEPT)], None)?;
        if resp.status() == 404 {
            return Err(RegistryError::NotFound { reference: r.to_string(), registry: r.registry.clone() });
        }
        let mut resp = Self::check(&url, resp)?;
        let media = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_MANIFEST)
            .read_to_vec()
            .map_err(|e| RegistryError::Http { url: url.clone(), source: Box::new(e) })?;
        let digest = Digest::of(&bytes);
        if let Ok(asked) = Digest::parse(by)
            && asked != digest
        {
            return Err(ContentError::DigestMismatch { expected: asked, actual: digest }.into());
        }
        Ok((bytes, media, digest))
    }

    /// Streams blob `d` of `size` bytes into `store` (resuming a partial
    /// download with a Range request); verified before it is stored.
    pub fn fetch_blob(&self, r: &Reference, d: &Digest, size: u64, store: &ContentStore) -> Result<(), RegistryError> {
        if store.contains(d) {
            return Ok(());
        }
        let mut ingest = store.ingest(d, size)?;
        let url = format!("{}/blobs/{d}", self.base(r));
        let range = format!("bytes={}-", ingest.offset());
        let headers: Vec<(&str, &str)> = if ingest.offset() > 0 { vec![("Range", range.as_str())] } else { vec![] };
        let resp = Self::check(&url, self.send(r, "GET", &url, &headers, None)?)?;
        if resp.status() != 206 && ingest.offset() > 0 {
            // The registry sent it all again: start over.
            drop(ingest);
            store.discard_ingest(d);
            ingest = store.ingest(d, size)?;
            if ingest.offset() > 0 {
                return Err(RegistryError::Status {
                    url,
                    status: 200,
                    body: "no Range support for a resumed blob".into(),
                });
            }
        }
        let mut reader = resp.into_body().into_reader();
        ingest.copy_from(&mut reader)?;
        ingest.commit()?;
        Ok(())
    }

    /// Uploads a blob (monolithic: POST then PUT ?digest=), unless the
    /// registry has it.
    pub fn push_blob(&self, r: &Reference, d: &Digest, data: &[u8]) -> Result<(), RegistryError> {
        let base = self.base(r);
        let head = format!("{base}/blobs/{d}");
        if self.send(r, "HEAD", &head, &[], None)?.status() == 200 {
            return Ok(());
        }
        let url = format!("{base}/blobs/uploads/");
        let resp = Self::check(&url, self.send(r, "POST", &url, &[], Some(&[]))?)?;
        let loc = resp.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let loc = if loc.starts_with("http") {
            loc
        } else {
            let origin = &base[..base.find("/v2/").unwrap_or(base.len())];
            format!("{origin}{loc}")
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let put = format!("{loc}{sep}digest={}", urlencode(&d.to_string()));
        let len = data.len().to_string();
        let headers = [("Content-Type", "application/octet-stream"), ("Content-Length", len.as_str())];
        Self::check(&put, self.send(r, "PUT", &put, &headers, Some(data))?).map(|_| ())
    }

    pub fn push_manifest(&self, r: &Reference, tag: &str, bytes: &[u8], media: &str) -> Result<Digest, RegistryError> {
        let url = format!("{}/manifests/{tag}", self.base(r));
        Self::check(&url, self.send(r, "PUT", &url, &[("Content-Type", media)], Some(bytes))?)?;
        Ok(Digest::of(bytes))
    }

    /// Reads a blob whole (manifests' configs: small).
    pub fn blob_bytes(
        &self,
        r: &Reference,
        d: &Digest,
        size: u64,
        store: &ContentStore,
    ) -> Result<Vec<u8>, RegistryError> {
        self.fetch_blob(r, d, size, store)?;
        Ok(store.read(d)?)
    }
}

fn parse_challenge(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while let Some((k, v)) = rest.split_once('=') {
        let k = k.trim().trim_start_matches(',').trim().to_owned();
        let v = v.trim_start();
        let (val, after) = if let Some(q) = v.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (q[..end].to_owned(), q.get(end + 1..).unwrap_or(""))
        } else {
            let end = v.find(',').unwrap_or(v.len());
            (v[..end].to_owned(), &v[end..])
        };
        out.insert(k, val);
        rest = after.trim_start_matches(',').trim();
    }
    out
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `auths` of ~/.docker/config.json ($DOCKER_CONFIG/config.json): base64
/// "user:password" per host.
fn docker_config_credentials() -> HashMap<String, Credentials> {
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".docker")));
    let Some(text) = dir.and_then(|d| std::fs::read(d.join("config.json")).ok()) else { return HashMap::new() };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&text) else { return HashMap::new() };
    let mut out = HashMap::new();
    for (host, entry) in v["auths"].as_object().into_iter().flatten() {
        let decoded = entry["auth"].as_str().and_then(|a| base64::engine::general_purpose::STANDARD.decode(a).ok());
        if let Some((u, p)) =
            decoded.as_deref().and_then(|d| std::str::from_utf8(d).ok()).and_then(|s| s.split_once(':'))
        {
            let host = host.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/');
            let host = if host == "index.docker.io/v1" { "docker.io" } else { host };
            out.insert(host.to_owned(), Credentials { username: u.into(), password: p.into() });
        }
    }
    out
}

/// The platform's manifest in an index: os/architecture (and variant).
pub fn select_platform(
    index: &serde_json::Value,
    os: &str,
    arch: &str,
    variant: Option<&str>,
) -> Option<serde_json::Value> {
    index["manifests"]
        .as_array()?
        .iter()
        .find(|m| {
            let p = &m["platform"];
            p["os"] == os && p["architecture"] == arch && variant.is_none_or(|v| p["variant"] == v)
        })
        .cloned()
}

/// This machine's platform in OCI's words.
pub fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    ("linux", arch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_parse() {
        let p = parse_challenge(
            r#"realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/busybox:pull");
    }

    #[test]
    fn platforms_are_chosen_from_an_index() {
        let index = serde_json::json!({ "manifests": [
            { "digest": "a", "platform": { "os": "linux", "architecture": "arm64", "variant": "v8" } },
            { "digest": "b", "platform": { "os": "linux", "architecture": "amd64" } }
        ]});
        assert_eq!(select_platform(&index, "linux", "amd64", None).unwrap()["digest"], "b");
        assert_eq!(select_platform(&index, "linux", "arm64", Some("v8")).unwrap()["digest"], "a");
        assert!(select_platform(&index, "windows", "amd64", None).is_none());
    }

    #[test]
    fn loopback_registries_speak_plain_http() {
        let c = Client::new().insecure("registry.lan:5000");
        let base = |s: &str| c.base(&Reference::parse(s).unwrap());
        assert_eq!(base("127.0.0.1:5000/x"), "http://127.0.0.1:5000/v2/x");
        assert_eq!(base("localhost:5000/x"), "http://localhost:5000/v2/x");
        assert_eq!(base("registry.lan:5000/x"), "http://registry.lan:5000/v2/x");
        assert_eq!(base("example.com/x"), "https://example.com/v2/x");
        assert_eq!(base("busybox"), "https://registry-1.docker.io/v2/library/busybox");
    }
}
