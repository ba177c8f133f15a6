//! How to reach registries: insecure hosts, mirrors, CA directories,
//! timeouts, retries.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::auth::{AuthStore, Credentials};

/// The `[registry]` part of berth's configuration. Every key has a default.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Registries (`host:port`) reached over plain HTTP, or HTTPS without
    /// certificate checks (docker's `insecure-registries`). Loopback
    /// registries may always fall back to plain HTTP, as docker allows.
    pub insecure: Vec<String>,
    /// Per registry, mirrors to try first (`http://host:port` or `host:port`).
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Directories holding `<host:port>/*.crt` (extra CAs) and
    /// `client.cert`/`client.key`, as docker's and containerd's certs.d.
    pub certs_dirs: Vec<PathBuf>,
    /// Attempts for a request that fails transiently (connection errors,
    /// 429, 5xx), with exponential backoff.
    pub attempts: u32,
    /// First backoff; doubled each retry.
    #[serde(with = "millis")]
    pub backoff: Duration,
    /// Blobs at most this big are pushed in one request; bigger ones in chunks.
    pub push_chunk_size: u64,
    /// Seconds to wait for a connection (TCP, and TLS) to a registry.
    #[serde(with = "secs")]
    pub connect_timeout: Duration,
    /// Seconds a registry may send nothing (no answer yet, or a pause in
    /// a body) before the request fails and is retried: a registry that
    /// accepts connections and never answers cannot hang a pull. Each
    /// byte that arrives restarts the clock, so big blobs are fine.
    #[serde(with = "secs")]
    pub idle_timeout: Duration,
    /// Directories (a `:`-separated list, as containerd's `config_path`)
    /// holding `<registry>/hosts.toml`: per-registry mirrors and TLS
    /// settings in containerd's format (see [`super::hosts`]). A registry
    /// with a hosts.toml ignores `mirrors`. Empty: none.
    #[serde(deserialize_with = "path_list::deserialize")]
    pub config_path: Vec<PathBuf>,
    #[serde(skip)]
    pub auth: Option<AuthStore>,
    /// Credentials given for one operation (a CRI PullImage's AuthConfig),
    /// by registry (`host:port`): they win over every store and live only
    /// in memory, so no secret of a pull is ever written to disk.
    #[serde(skip)]
    pub given: BTreeMap<String, Credentials>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            insecure: Vec::new(),
            mirrors: BTreeMap::new(),
            certs_dirs: vec![
                PathBuf::from("/etc/berth/certs.d"),
                PathBuf::from("/etc/docker/certs.d"),
                PathBuf::from("/etc/containerd/certs.d"),
            ],
            attempts: 4,
            backoff: Duration::from_millis(200),
            push_chunk_size: 32 << 20,
            connect_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            config_path: Vec::new(),
            auth: None,
            given: BTreeMap::new(),
        }
    }
}

impl RegistryConfig {
    pub fn auth_store(&self) -> AuthStore {
        self.auth.clone().unwrap_or_else(AuthStore::default_paths)
    }

    /// The credentials for `registry`: the given ones, else the store's.
    pub fn credentials(&self, registry: &str) -> crate::error::Result<Option<Credentials>> {
        match self.given.get(registry) {
            Some(c) => Ok(Some(c.clone())),
            None => self.auth_store().get(registry),
        }
    }

    pub fn is_insecure(&self, registry: &str) -> bool {
        self.insecure.iter().any(|h| h == registry)
    }
}

/// True for localhost and loopback addresses, where docker allows plain HTTP.
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A `:`-separated list of directories (empty entries skipped).
mod path_list {
    use std::path::PathBuf;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
        let s = String::deserialize(d)?;
        Ok(s.split(':').filter(|p| !p.is_empty()).map(PathBuf::from).collect())
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// A duration in seconds (integer or fractional, more than 0).
mod secs {
    use std::time::Duration;

    use serde::de::Error;
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = f64::deserialize(d)?;
        if !(s.is_finite() && s > 0.0 && s < 1e9) {
            return Err(D::Error::custom(format!("{s} is not a number of seconds above 0")));
        }
        Ok(Duration::from_secs_f64(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("127.1.2.3"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("example.com:5000"));
        assert!(!is_loopback("10.0.0.1"));
    }

    #[test]
    fn config_path_is_a_colon_separated_list() {
        assert!(RegistryConfig::default().config_path.is_empty());
        let c: RegistryConfig =
            serde_json::from_str(r#"{"config_path": "/etc/berth/certs.d::/etc/containerd/certs.d"}"#).unwrap();
        assert_eq!(c.config_path, [PathBuf::from("/etc/berth/certs.d"), PathBuf::from("/etc/containerd/certs.d")]);
    }

    #[test]
    fn timeouts_are_seconds_with_defaults() {
        let d = RegistryConfig::default();
        assert_eq!((d.connect_timeout, d.idle_timeout), (Duration::from_secs(30), Duration::from_secs(60)));
        let c: RegistryConfig = serde_json::from_str(r#"{"connect_timeout": 2, "idle_timeout": 0.5}"#).unwrap();
        assert_eq!((c.connect_timeout, c.idle_timeout), (Duration::from_secs(2), Duration::from_millis(500)));
        for bad in [r#"{"idle_timeout": 0}"#, r#"{"connect_timeout": -1}"#, r#"{"idle_timeout": "1s"}"#] {
            assert!(serde_json::from_str::<RegistryConfig>(bad).is_err(), "{bad}");
        }
    }
}
