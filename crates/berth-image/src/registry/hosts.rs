//! Per-registry host configuration in containerd's format
//! (`<config_path>/<registry>/hosts.toml`), so that an existing node's
//! `certs.d` tree works unchanged:
//!
//! ```toml
//! server = "https://registry.k8s.io"          # the upstream, tried last
//! [host."http://127.0.0.1:5000"]              # mirrors, tried first, in file order
//!   capabilities = ["pull", "resolve"]
//!   skip_verify = true
//! ```
//!
//! The directory for `host:port` is `host_port_`, then `host:port`, then
//! `_default`, in each directory of `config_path` in turn (as containerd).
//! Files are read at each pull, so edits apply without a restart.
//!
//! A mirror serves a tag reference only with the `resolve` capability
//! (resolving a tag is trusting the mirror with what the name means) and
//! `pull` (berth fetches an image's blobs from the host that gave its
//! manifest); a digest reference needs `pull` alone: the content is checked
//! against the digest anyway. The image is recorded under the name asked
//! for, whichever host served it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use toml::Spanned;

use super::config::RegistryConfig;
use crate::error::{Error, Result};
use crate::reference::Reference;

/// What a host may be asked to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub pull: bool,
    pub resolve: bool,
    pub push: bool,
}

impl Capabilities {
    pub const ALL: Capabilities = Capabilities { pull: true, resolve: true, push: true };
}

/// One host of a hosts.toml: a mirror (`[host."URL"]`) or the `server`.
#[derive(Clone, Debug, PartialEq)]
pub struct HostConfig {
    /// The API root: `scheme://host[:port]/[prefix/]`; requests go to
    /// `v2/...` below it (or right below it with `override_path`).
    pub url: Url,
    pub capabilities: Capabilities,
    pub skip_verify: bool,
    /// Extra CA files (PEM), added to the system's.
    pub ca: Vec<PathBuf>,
    /// Client certificates: (cert, key); no key means the cert file holds both.
    pub client: Vec<(PathBuf, Option<PathBuf>)>,
    /// Headers sent with every request to this host.
    pub headers: Vec<(String, String)>,
    /// The URL's path is the API root itself (no `/v2` appended).
    pub override_path: bool,
    pub dial_timeout: Option<Duration>,
    pub proxy: Option<String>,
}

impl HostConfig {
    /// `host[:port]`, as credentials and messages name it.
    pub fn host(&self) -> String {
        match (self.url.host_str(), self.url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => self.url.to_string(),
        }
    }
}

/// Where the manifest of a reference may come from, in the order to try.
#[derive(Clone, Debug, PartialEq)]
pub enum Endpoint {
    /// A registry as references and `registry.mirrors` name it
    /// (`host[:port]`, optionally `http://`/`https://`).
    Named(String),
    /// A host from a hosts.toml.
    Host(HostConfig),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Named(n) => f.write_str(n),
            Endpoint::Host(h) => write!(f, "{}", h.url),
        }
    }
}

impl RegistryConfig {
    /// The endpoints to try for `reference`, mirrors first, the upstream
    /// last. With no hosts.toml for its registry: `registry.mirrors`, then
    /// the registry itself.
    pub fn endpoints(&self, reference: &Reference) -> Result<Vec<Endpoint>> {
        let registry = reference.registry();
        let Some(file) = find_hosts_file(&self.config_path, registry) else {
            let mut v: Vec<Endpoint> =
                self.mirrors.get(registry).into_iter().flatten().cloned().map(Endpoint::Named).collect();
            v.push(Endpoint::Named(registry.to_string()));
            return Ok(v);
        };
        let text = std::fs::read_to_string(&file)
            .map_err(|e| Error::Unsupported(format!("registry hosts file {}: {e}", file.display())))?;
        let dir = file.parent().unwrap_or(Path::new("/"));
        let parsed = parse_hosts(&text, dir)
            .map_err(|reason| Error::Unsupported(format!("registry hosts file {}: {reason}", file.display())))?;
        let by_tag = reference.digest().is_none();
        let usable = |c: &Capabilities| c.pull && (c.resolve || !by_tag);
        let mut v: Vec<Endpoint> =
            parsed.mirrors.into_iter().filter(|h| usable(&h.capabilities)).map(Endpoint::Host).collect();
        match parsed.server {
            Some(s) if usable(&s.capabilities) => v.push(Endpoint::Host(s)),
            Some(_) => {}
            None => v.push(Endpoint::Named(registry.to_string())),
        }
        if v.is_empty() {
            return Err(Error::Unsupported(format!(
                "registry hosts file {}: no host may {} {reference}",
                file.display(),
                if by_tag { "resolve and pull" } else { "pull" }
            )));
        }
        Ok(v)
    }
}

/// The hosts.toml for `registry` under the first directory of `roots`
/// that has one: `host_port_`, `host:port`, then `_default`.
pub fn find_hosts_file(roots: &[PathBuf], registry: &str) -> Option<PathBuf> {
    let mut names = Vec::new();
    if let Some((h, p)) = registry.rsplit_once(':')
        && !h.is_empty()
        && !p.is_empty()
        && p.bytes().all(|b| b.is_ascii_digit())
    {
        names.push(format!("{h}_{p}_"));
    }
    names.push(registry.to_string());
    names.push("_default".to_string());
    roots.iter().flat_map(|root| names.iter().map(move |n| root.join(n).join("hosts.toml"))).find(|p| p.is_file())
}

/// A parsed hosts.toml.
#[derive(Debug, Default, PartialEq)]
pub struct HostsFile {
    /// `[host."..."]` entries, in file order.
    pub mirrors: Vec<HostConfig>,
    /// The upstream (`server`), when the file names one.
    pub server: Option<HostConfig>,
}

const HOST_KEYS: &[&str] =
    &["capabilities", "ca", "client", "skip_verify", "header", "override_path", "dial_timeout", "proxy"];

#[derive(Deserialize, Default)]
struct RawHost {
    capabilities: Option<Vec<String>>,
    ca: Option<OneOrMany>,
    client: Option<ClientSpec>,
    skip_verify: Option<bool>,
    header: Option<BTreeMap<String, OneOrMany>>,
    #[serde(default)]
    override_path: bool,
    dial_timeout: Option<String>,
    proxy: Option<String>,
}

#[derive(Deserialize)]
struct RawFile {
    server: Option<String>,
    #[serde(default)]
    host: BTreeMap<String, Spanned<RawHost>>,
    #[serde(flatten)]
    root: RawHost,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ClientSpec {
    One(String),
    Many(Vec<ClientEntry>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ClientEntry {
    Combined(String),
    Pair(Vec<String>),
}

/// Parses a hosts.toml; relative paths in it are relative to `dir`.
/// Unknown keys are refused (a misspelt `capabilities` would otherwise
/// silently make a mirror a full registry).
pub fn parse_hosts(text: &str, dir: &Path) -> Result<HostsFile, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    check_keys(&table, "", true)?;
    if let Some(toml::Value::Table(hosts)) = table.get("host") {
        for (name, h) in hosts {
            match h {
                toml::Value::Table(t) => check_keys(t, &format!("host.{name:?}."), false)?,
                _ => return Err(format!("host.{name:?} must be a table")),
            }
        }
    }
    let raw: RawFile = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut hosts: Vec<(String, Spanned<RawHost>)> = raw.host.into_iter().collect();
    // containerd tries hosts in the order the file lists them.
    hosts.sort_by_key(|(_, h)| h.span().start);
    let mut mirrors = Vec::new();
    for (name, h) in hosts {
        mirrors.push(host_config(&name, h.into_inner(), dir).map_err(|e| format!("host.{name:?}: {e}"))?);
    }
    let server = match raw.server {
        Some(s) => Some(host_config(&s, raw.root, dir).map_err(|e| format!("server {s:?}: {e}"))?),
        None => {
            if raw.root.capabilities.is_some() || raw.root.ca.is_some() || raw.root.skip_verify.is_some() {
                return Err("settings at the top level apply to `server`, which is not set".into());
            }
            None
        }
    };
    Ok(HostsFile { mirrors, server })
}

fn check_keys(t: &toml::Table, prefix: &str, top: bool) -> Result<(), String> {
    for k in t.keys() {
        let known = HOST_KEYS.contains(&k.as_str()) || top && (k == "server" || k == "host");
        if !known {
            return Err(format!("unknown key {prefix}{k} (known: server, host, {})", HOST_KEYS.join(", ")));
        }
    }
    Ok(())
}

fn host_config(server: &str, raw: RawHost, dir: &Path) -> Result<HostConfig, String> {
    let with_scheme = if server.starts_with("http://") || server.starts_with("https://") {
        server.to_string()
    } else {
        format!("https://{server}")
    };
    let mut url = Url::parse(&with_scheme).map_err(|e| format!("bad URL: {e}"))?;
    if url.host_str().is_none_or(str::is_empty) || url.query().is_some() || url.fragment().is_some() {
        return Err("expected scheme://host[:port][/path]".into());
    }
    // The API root ends in a slash so that `v2/...` joins below it; a
    // trailing /v2 is the API version, added back per request.
    let mut path = url.path().trim_end_matches('/').to_string();
    if !raw.override_path && path.ends_with("/v2") {
        path.truncate(path.len() - 3);
    }
    url.set_path(&format!("{path}/"));
    let capabilities = match raw.capabilities {
        None => Capabilities::ALL,
        Some(list) => {
            let mut c = Capabilities::default();
            for cap in list {
                match cap.to_ascii_lowercase().as_str() {
                    "pull" => c.pull = true,
                    "resolve" => c.resolve = true,
                    "push" => c.push = true,
                    _ => return Err(format!("unknown capability {cap:?} (pull, resolve, push)")),
                }
            }
            c
        }
    };
    let abs = |p: String| if Path::new(&p).is_absolute() { PathBuf::from(p) } else { dir.join(p) };
    let client = match raw.client {
        None => Vec::new(),
        Some(ClientSpec::One(p)) => vec![(abs(p), None)],
        Some(ClientSpec::Many(entries)) => entries
            .into_iter()
            .map(|e| match e {
                ClientEntry::Combined(p) => Ok((abs(p), None)),
                ClientEntry::Pair(v) if v.len() == 2 => {
                    let mut it = v.into_iter();
                    let (c, k) = (it.next().unwrap_or_default(), it.next().unwrap_or_default());
                    Ok((abs(c), (!k.is_empty()).then(|| abs(k))))
                }
                ClientEntry::Pair(v) => Err(format!("client pair {v:?} must be [cert, key]")),
            })
            .collect::<Result<_, _>>()?,
    };
    let mut headers = Vec::new();
    for (k, v) in raw.header.unwrap_or_default() {
        for value in v.into_vec() {
            headers.push((k.clone(), value));
        }
    }
    let dial_timeout = raw.dial_timeout.map(|d| parse_go_duration(&d)).transpose()?;
    if let Some(p) = &raw.proxy {
        let u = Url::parse(p).map_err(|e| format!("bad proxy URL {p:?}: {e}"))?;
        if !matches!(u.scheme(), "http" | "https" | "socks5" | "socks5h") || u.host_str().is_none() {
            return Err(format!("proxy {p:?} must be an http, https, socks5 or socks5h URL with a host"));
        }
    }
    Ok(HostConfig {
        url,
        capabilities,
        skip_verify: raw.skip_verify.unwrap_or(false),
        ca: raw.ca.map(OneOrMany::into_vec).unwrap_or_default().into_iter().map(abs).collect(),
        client,
        headers,
        override_path: raw.override_path,
        dial_timeout,
        proxy: raw.proxy,
    })
}

/// A Go duration (`"1s"`, `"1.5s"`, `"1m30s"`, `"300ms"`), as containerd
/// reads `dial_timeout`.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (e.g. \"1s\", \"500ms\", \"1m30s\")");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > 1e9 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> HostsFile {
        parse_hosts(text, Path::new("/etc/berth/certs.d/docker.io")).unwrap()
    }

    #[test]
    fn mirrors_keep_file_order_and_server_is_last() {
        let mut f = parse(
            r#"
server = "https://registry-1.docker.io"
[host."https://z-mirror.example.com/v2"]
  capabilities = ["pull"]
  skip_verify = true
  ca = "mirror.crt"
[host."http://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]
[host."https://b.example.com/prefix"]
"#,
        );
        // File order, not the alphabetical order of a TOML table.
        let urls: Vec<&str> = f.mirrors.iter().map(|h| h.url.as_str()).collect();
        assert_eq!(urls, ["https://z-mirror.example.com/", "http://127.0.0.1:5000/", "https://b.example.com/prefix/"]);
        f.mirrors.swap(0, 1);
        assert_eq!(f.mirrors[0].capabilities, Capabilities { pull: true, resolve: true, push: false });
        assert_eq!(f.mirrors[1].capabilities, Capabilities { pull: true, resolve: false, push: false });
        assert!(f.mirrors[1].skip_verify && !f.mirrors[0].skip_verify);
        assert_eq!(f.mirrors[1].ca, [PathBuf::from("/etc/berth/certs.d/docker.io/mirror.crt")]);
        assert_eq!(f.mirrors[2].capabilities, Capabilities::ALL);
        assert_eq!(f.mirrors[0].host(), "127.0.0.1:5000");
        assert_eq!(f.server.unwrap().url.as_str(), "https://registry-1.docker.io/");
    }

    #[test]
    fn every_containerd_field_is_read() {
        let f = parse(
            r#"
server = "registry.example.com"
capabilities = ["pull", "resolve", "push"]
[host."https://m.example.com/api"]
  client = [["/c.pem", "/k.pem"], ["both.pem", ""]]
  ca = ["/a.crt", "b.crt"]
  override_path = true
  dial_timeout = "1.5s"
  proxy = "http://proxy:8080"
  [host."https://m.example.com/api".header]
    x-one = "1"
    x-two = ["a", "b"]
"#,
        );
        let m = &f.mirrors[0];
        assert_eq!(m.url.as_str(), "https://m.example.com/api/");
        assert!(m.override_path);
        assert_eq!(
            m.client,
            [
                (PathBuf::from("/c.pem"), Some(PathBuf::from("/k.pem"))),
                (PathBuf::from("/etc/berth/certs.d/docker.io/both.pem"), None)
            ]
        );
        assert_eq!(m.ca, [PathBuf::from("/a.crt"), PathBuf::from("/etc/berth/certs.d/docker.io/b.crt")]);
        assert_eq!(m.dial_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(m.proxy.as_deref(), Some("http://proxy:8080"));
        let h: Vec<(&str, &str)> = m.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(h, [("x-one", "1"), ("x-two", "a"), ("x-two", "b")]);
        // A server without a scheme is https, as containerd has it.
        assert_eq!(f.server.unwrap().url.as_str(), "https://registry.example.com/");
    }

    #[test]
    fn bad_files_are_refused_naming_what_is_wrong() {
        let cases = [
            ("[host.\"http://m:5000\"]\ncapabilites = [\"pull\"]", "unknown key host.\"http://m:5000\".capabilites"),
            ("[host.\"http://m:5000\"]\ncapabilities = [\"fetch\"]", "unknown capability \"fetch\""),
            ("[host.\"http://m:5000\"]\ndial_timeout = \"soon\"", "invalid duration \"soon\""),
            ("[host.\"http://m:5000\"]\nclient = [[\"a\"]]", "must be [cert, key]"),
            ("[host.\"http://m:5000\"]\nproxy = \"ftp://p\"", "proxy \"ftp://p\""),
            ("[host.\"http://\"]", "host.\"http://\""),
            ("skip_verify = true", "`server`, which is not set"),
            ("mirrors = []", "unknown key mirrors"),
            ("server = [", "expected"),
        ];
        for (text, want) in cases {
            let err = parse_hosts(text, Path::new("/d")).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_go_duration("300ms").unwrap(), Duration::from_millis(300));
        for bad in ["", "1", "s", "1x", "-1s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    fn write_hosts(root: &Path, dir: &str, text: &str) {
        std::fs::create_dir_all(root.join(dir)).unwrap();
        std::fs::write(root.join(dir).join("hosts.toml"), text).unwrap();
    }

    #[test]
    fn host_directories_are_found_as_containerd_names_them() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let roots = [a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(find_hosts_file(&roots, "quay.io"), None);
        write_hosts(b.path(), "_default", "");
        assert_eq!(find_hosts_file(&roots, "quay.io"), Some(b.path().join("_default/hosts.toml")));
        write_hosts(b.path(), "quay.io", "");
        assert_eq!(find_hosts_file(&roots, "quay.io"), Some(b.path().join("quay.io/hosts.toml")));
        write_hosts(a.path(), "_default", "");
        assert_eq!(find_hosts_file(&roots, "quay.io"), Some(a.path().join("_default/hosts.toml")));
        write_hosts(a.path(), "reg:5000", "");
        write_hosts(a.path(), "reg_5000_", "");
        assert_eq!(find_hosts_file(&roots, "reg:5000"), Some(a.path().join("reg_5000_/hosts.toml")));
    }

    #[test]
    fn endpoints_follow_capabilities_and_fall_back_to_the_registry() {
        let d = tempfile::tempdir().unwrap();
        write_hosts(
            d.path(),
            "registry.k8s.io",
            "[host.\"http://127.0.0.1:1\"]\ncapabilities = [\"pull\"]\n[host.\"http://127.0.0.1:2\"]\ncapabilities = [\"pull\", \"resolve\"]\n",
        );
        let cfg = RegistryConfig { config_path: vec![d.path().to_path_buf()], ..RegistryConfig::default() };
        let names = |r: &str| -> Vec<String> {
            cfg.endpoints(&Reference::parse(r).unwrap()).unwrap().iter().map(|e| e.to_string()).collect()
        };
        // A tag needs a host trusted to resolve; a digest only one to pull from.
        assert_eq!(names("registry.k8s.io/pause:3.10"), ["http://127.0.0.1:2/", "registry.k8s.io"]);
        let by_digest = format!("registry.k8s.io/pause@sha256:{}", "a".repeat(64));
        assert_eq!(names(&by_digest), ["http://127.0.0.1:1/", "http://127.0.0.1:2/", "registry.k8s.io"]);
        // No hosts.toml for the registry: the legacy mirrors, then itself.
        let mut cfg2 = cfg.clone();
        cfg2.mirrors.insert("quay.io".into(), vec!["http://127.0.0.1:3".into()]);
        let e = cfg2.endpoints(&Reference::parse("quay.io/x:1").unwrap()).unwrap();
        assert_eq!(e, [Endpoint::Named("http://127.0.0.1:3".into()), Endpoint::Named("quay.io".into())]);
        // A broken file is an error naming it, not a silent direct pull.
        write_hosts(d.path(), "registry.k8s.io", "[host.\"http://127.0.0.1:1\"]\ncapabilities = \"pull\"\n");
        let err = cfg.endpoints(&Reference::parse("registry.k8s.io/pause:3.10").unwrap()).unwrap_err().to_string();
        assert!(err.contains("registry.k8s.io/hosts.toml"), "{err}");
    }
}
