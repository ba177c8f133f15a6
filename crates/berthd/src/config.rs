//! `/etc/berth/berthd.toml`: every key has a default, so no file is needed.
//!
//! ```toml
//! cgroup_driver = "cgroupfs"                    # "systemd" is refused
//! sandbox_image = "registry.k8s.io/pause:3.10"
//! default_runtime = "berth"                     # the handler for RuntimeClass ""
//! [runtimes.runc]                               # RuntimeClass handler "runc"
//!   path = "/usr/sbin/runc"
//!   # root = ...                                # not honoured yet: every runtime's --root is RUNROOT/runtime
//! [cni]
//!   conf_dir = "/etc/cni/net.d"
//!   bin_dirs = ["/usr/lib/cni", "/opt/cni/bin"]
//! [stream]                                      # exec/attach/port-forward server (see below)
//!   address = "127.0.0.1"                       # what Exec/Attach/PortForward URLs point at
//!   port = 0                                    # 0: a free port
//!   idle_timeout = "4h"                         # no data either way this long: the session ends
//!   max_sessions = 100                          # exec/attach/port-forward connections at once
//!   max_streams_per_session = 100               # SPDY streams open at once in one connection
//!   # tls_cert_file = "/etc/berth/stream.crt"   # both set: the URLs are https
//!   # tls_key_file = "/etc/berth/stream.key"
//!   # debug_host_streamer_dir = "/tmp/x"        # TEST ONLY: see StreamConfig
//! [docker]                                      # the Docker Engine API (off unless enabled or --docker-listen)
//!   enabled = false
//!   listen = "unix:///run/berth/docker.sock"   # or tcp://HOST:PORT, with TLS:
//!   # tls_cert = "/etc/berth/docker.crt"        # the server's certificate chain (PEM)
//!   # tls_key = "/etc/berth/docker.key"
//!   # tls_ca = "/etc/berth/docker-ca.crt"       # clients must show a certificate this CA signed
//!   # allow_insecure_tcp = false                # tcp:// without TLS: anyone reaching the port is root here
//! [registry]                                    # berth-image's RegistryConfig
//!   config_path = "/etc/berth/certs.d"          # containerd-style <host>/hosts.toml mirrors
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_image::registry::RegistryConfig;
use serde::{Deserialize, Serialize};

/// The handler name berth-runtime is registered under by default.
pub const BERTH_HANDLER: &str = "berth";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(
        "{path}: cgroup_driver = \"systemd\" is not supported: berthd manages cgroups itself \
         (cgroupfs; this host has no systemd); set cgroup_driver = \"cgroupfs\" and the kubelet's \
         --cgroup-driver=cgroupfs"
    )]
    SystemdDriver { path: PathBuf },
    #[error("{path}: default_runtime {name:?} is not a configured runtime (configured: {known})")]
    UnknownDefault { path: PathBuf, name: String, known: String },
    #[error("{path}: runtimes.{name}: the handler name must be a DNS label (lower-case letters, digits, '-')")]
    BadHandlerName { path: PathBuf, name: String },
    #[error("{path}: stream.{key}: {reason}")]
    Stream { path: PathBuf, key: &'static str, reason: String },
    #[error("{path}: docker.listen: {reason}")]
    DockerListen { path: PathBuf, reason: String },
    #[error("runtime handler {name:?}: {binary}: {reason}")]
    RuntimeBinary { name: String, binary: PathBuf, reason: String },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    #[default]
    Cgroupfs,
    Systemd,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub cgroup_driver: CgroupDriver,
    /// The pause image pods are built on.
    pub sandbox_image: String,
    /// The handler a pod without a RuntimeClass (handler "") uses.
    pub default_runtime: String,
    /// RuntimeClass handlers: name → OCI runtime (runc's command line).
    pub runtimes: BTreeMap<String, RuntimeHandler>,
    pub cni: CniConfig,
    pub stream: StreamConfig,
    pub docker: DockerConfig,
    #[serde(skip_serializing)]
    pub registry: RegistryConfig,
    pub events: EventsConfig,
}

/// `[events]`: GetContainerEvents.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// How often the engine's records are read again for containers that
    /// ended or went without berthd's call. A safety net: each running
    /// container's shim directory is watched with inotify, so an exit is
    /// told at once. Humantime: "5s", "500ms".
    #[serde(with = "humantime_serde")]
    pub poll_interval: std::time::Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig { poll_interval: std::time::Duration::from_secs(5) }
    }
}

/// `[docker]`: the Docker Engine API server (see [`crate::docker`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DockerConfig {
    /// Serve it (berthd's `--docker-listen` serves it too).
    pub enabled: bool,
    /// `unix:///ABSOLUTE/PATH`, or `tcp://HOST:PORT` (with TLS unless
    /// `allow_insecure_tcp`).
    pub listen: String,
    /// The server's certificate chain (PEM), for `tcp://`.
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Clients must present a certificate this CA (PEM) signed, as
    /// dockerd's `--tlsverify --tlscacert`.
    pub tls_ca: Option<PathBuf>,
    /// Serve `tcp://` without TLS: whoever reaches the port controls
    /// every container and so is root on this host (dockerd's 2375).
    pub allow_insecure_tcp: bool,
}

/// Where the Docker API listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DockerListen {
    Unix(PathBuf),
    /// `HOST:PORT`, with TLS unless the config allows plain TCP.
    Tcp(String),
}

/// The Docker API's socket when nothing else is said (dockerd's is
/// /run/docker.sock).
pub const DEFAULT_DOCKER_LISTEN: &str = "unix:///run/berth/docker.sock";

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            enabled: false,
            listen: DEFAULT_DOCKER_LISTEN.into(),
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            allow_insecure_tcp: false,
        }
    }
}

impl DockerConfig {
    /// `listen` (or the `--docker-listen` given instead), checked against
    /// the TLS settings: TCP without TLS only when the config says so.
    pub fn listen_on(&self, listen: &str) -> Result<DockerListen, String> {
        let Some(addr) = listen.strip_prefix("tcp://") else {
            return docker_socket_path(listen).map(DockerListen::Unix);
        };
        if addr.is_empty() || !addr.contains(':') {
            return Err(format!("{listen:?}: give tcp://HOST:PORT (tcp://127.0.0.1:2376)"));
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), Some(_)) => {}
            (None, None) if self.allow_insecure_tcp => {
                if self.tls_ca.is_some() {
                    return Err("tls_ca needs tls_cert and tls_key (the server's own certificate)".into());
                }
            }
            (None, None) => {
                return Err(format!(
                    "{listen:?}: TCP is served with TLS only (set [docker] tls_cert and tls_key, and tls_ca to \
                     verify clients): whoever reaches an open Docker API port is root on this host; \
                     allow_insecure_tcp = true serves it without TLS anyway"
                ));
            }
            _ => return Err("tls_cert and tls_key go together: set both".into()),
        }
        Ok(DockerListen::Tcp(addr.to_owned()))
    }
}

/// The socket path of a `unix:///PATH` listen address, or why it is not one.
pub fn docker_socket_path(listen: &str) -> Result<PathBuf, String> {
    let Some(path) = listen.strip_prefix("unix://") else {
        return Err(format!("{listen:?}: give unix:///PATH or tcp://HOST:PORT"));
    };
    let path = PathBuf::from(path);
    if !path.is_absolute() {
        return Err(format!("{listen:?}: the socket path must be absolute (unix:///run/berth/docker.sock)"));
    }
    Ok(path)
}

/// `[runtimes.NAME]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeHandler {
    /// The binary. Default (the "berth" handler only): berth-runtime next
    /// to berthd, or `--runtime`.
    pub path: Option<PathBuf>,
    /// Its state directory (`--root`). Not honoured yet (a warning says
    /// so): every runtime's is RUNROOT/runtime, the engine's.
    pub root: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CniConfig {
    /// Network configuration lists (`*.conflist`, `*.conf`, `*.json`).
    pub conf_dir: PathBuf,
    /// Where the plugin binaries are, searched in order.
    pub bin_dirs: Vec<PathBuf>,
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            bin_dirs: vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")],
        }
    }
}

/// The streaming server (exec, attach, port-forward): the HTTP server the
/// URLs of Exec, Attach and PortForward point at. Like containerd's, it
/// listens on loopback by default: the kubelet (on the node) proxies it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamConfig {
    /// An IP address to listen on.
    pub address: String,
    /// 0: a free port.
    pub port: u16,
    /// A session with no data either way for this long is closed and what
    /// it ran is killed (kubelet's `--streaming-connection-idle-timeout`,
    /// 4 h by default). Humantime: "4h", "30s", "500ms".
    #[serde(with = "humantime_serde")]
    pub idle_timeout: std::time::Duration,
    /// Streaming connections served at once; one more is refused (429).
    pub max_sessions: usize,
    /// Streams one SPDY connection may have open at once; more are reset
    /// (REFUSED_STREAM). A port-forward connection takes two.
    pub max_streams_per_session: usize,
    /// PEM certificate chain; with `tls_key_file`, the server speaks TLS
    /// and its URLs are https (containerd's `stream_server` TLS options).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// TEST ONLY, never in production: exec runs commands on the HOST, in
    /// `DIR/<container ID>`, and port-forward dials the host's localhost
    /// (see `stream::host`). Lets the streaming server be tested before
    /// containers are wired; berthd logs a warning when it is set.
    pub debug_host_streamer_dir: Option<PathBuf>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            address: "127.0.0.1".into(),
            port: 0,
            idle_timeout: std::time::Duration::from_secs(4 * 3600),
            max_sessions: 100,
            max_streams_per_session: 100,
            tls_cert_file: None,
            tls_key_file: None,
            debug_host_streamer_dir: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cgroup_driver: CgroupDriver::Cgroupfs,
            sandbox_image: "registry.k8s.io/pause:3.10".into(),
            default_runtime: BERTH_HANDLER.into(),
            runtimes: BTreeMap::new(),
            cni: CniConfig::default(),
            stream: StreamConfig::default(),
            docker: DockerConfig::default(),
            registry: RegistryConfig::default(),
            events: EventsConfig::default(),
        }
    }
}

impl Config {
    /// Reads `path` (a missing file means every default), then checks it.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let mut cfg = match std::fs::read_to_string(path) {
            Ok(s) => {
                toml::from_str(&s).map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(source) => return Err(ConfigError::Read { path: path.into(), source }),
        };
        cfg.runtimes.entry(BERTH_HANDLER.into()).or_default();
        cfg.check(path)?;
        Ok(cfg)
    }

    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        if self.cgroup_driver == CgroupDriver::Systemd {
            return Err(ConfigError::SystemdDriver { path: path.into() });
        }
        for name in self.runtimes.keys() {
            let label = !name.is_empty()
                && name.len() <= 63
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !name.starts_with('-')
                && !name.ends_with('-');
            if !label {
                return Err(ConfigError::BadHandlerName { path: path.into(), name: name.clone() });
            }
        }
        self.check_stream(path)?;
        self.docker
            .listen_on(&self.docker.listen)
            .map_err(|reason| ConfigError::DockerListen { path: path.into(), reason })?;
        if !self.runtimes.contains_key(&self.default_runtime) {
            let known = self.runtimes.keys().cloned().collect::<Vec<_>>().join(", ");
            return Err(ConfigError::UnknownDefault { path: path.into(), name: self.default_runtime.clone(), known });
        }
        Ok(())
    }

    fn check_stream(&self, path: &Path) -> Result<(), ConfigError> {
        let err = |key, reason: String| ConfigError::Stream { path: path.into(), key, reason };
        if self.stream.address.parse::<std::net::IpAddr>().is_err() {
            return Err(err("address", format!("{:?} is not an IP address", self.stream.address)));
        }
        if self.stream.idle_timeout.is_zero() {
            return Err(err("idle_timeout", "must be more than 0".into()));
        }
        if self.stream.max_sessions == 0 {
            return Err(err("max_sessions", "must be at least 1".into()));
        }
        // Exec with a tty opens four streams and a port-forward pair two.
        if self.stream.max_streams_per_session < 5 {
            return Err(err("max_streams_per_session", "must be at least 5 (an exec with stdio uses 5)".into()));
        }
        match (&self.stream.tls_cert_file, &self.stream.tls_key_file) {
            (Some(_), None) => return Err(err("tls_key_file", "tls_cert_file is set: so must this be".into())),
            (None, Some(_)) => return Err(err("tls_cert_file", "tls_key_file is set: so must this be".into())),
            _ => {}
        }
        if let Some(d) = &self.stream.debug_host_streamer_dir
            && !(d.is_absolute() && d.is_dir())
        {
            return Err(err(
                "debug_host_streamer_dir",
                format!("{} is not an absolute path to a directory", d.display()),
            ));
        }
        Ok(())
    }

    /// The handler a RuntimeClass name means ("" is the default one).
    pub fn handler(&self, name: &str) -> Option<(&str, &RuntimeHandler)> {
        let name = if name.is_empty() { self.default_runtime.as_str() } else { name };
        self.runtimes.get_key_value(name).map(|(k, v)| (k.as_str(), v))
    }
}

/// A runtime handler with its binary and state root found.
#[derive(Clone, Debug, Serialize)]
pub struct ResolvedHandler {
    pub name: String,
    pub path: PathBuf,
    pub root: PathBuf,
}

/// Finds each handler's binary (`--runtime`, else berth-runtime next to
/// berthd, for handlers without a path) and state root; a binary that is
/// missing or not executable is an error naming the handler.
pub fn resolve_handlers(
    cfg: &Config,
    runroot: &Path,
    runtime_flag: Option<&Path>,
) -> Result<Vec<ResolvedHandler>, ConfigError> {
    let next_to_us = std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.join("berth-runtime")));
    let mut out = Vec::new();
    for (name, h) in &cfg.runtimes {
        let path = match (&h.path, name.as_str()) {
            (Some(p), _) => p.clone(),
            (None, BERTH_HANDLER) => runtime_flag
                .map(Path::to_path_buf)
                .or_else(|| next_to_us.clone())
                .unwrap_or_else(|| PathBuf::from("berth-runtime")),
            (None, _) => {
                return Err(ConfigError::RuntimeBinary {
                    name: name.clone(),
                    binary: PathBuf::new(),
                    reason: format!("runtimes.{name}.path is not set"),
                });
            }
        };
        check_executable(name, &path)?;
        // Every runtime keeps its state under the engine's one runtime
        // root (state directories are per container ID, so runtimes never
        // meet there): the engine's stop/kill/exec/stats reach a container
        // through the root its record's runtime used.
        let root = runroot.join("runtime");
        if let Some(asked) = h.root.as_ref().filter(|r| **r != root) {
            tracing::warn!(handler = %name, asked = %asked.display(), used = %root.display(),
                "runtimes.{name}.root is not honoured yet: every runtime keeps its state under RUNROOT/runtime");
        }
        out.push(ResolvedHandler { name: name.clone(), path, root });
    }
    Ok(out)
}

fn check_executable(name: &str, path: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |reason: String| ConfigError::RuntimeBinary { name: name.into(), binary: path.into(), reason };
    if !path.is_absolute() {
        return Err(err("must be an absolute path".into()));
    }
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(err("not an executable file".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<Config, ConfigError> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("berthd.toml");
        std::fs::write(&p, text).unwrap();
        Config::load(&p)
    }

    #[test]
    fn a_missing_file_is_every_default() {
        let c = Config::load(Path::new("/nonexistent/berthd.toml")).unwrap();
        assert_eq!(c.cgroup_driver, CgroupDriver::Cgroupfs);
        assert_eq!(c.sandbox_image, "registry.k8s.io/pause:3.10");
        assert_eq!(c.handler("").map(|(n, _)| n), Some("berth"));
        assert_eq!(c.cni.conf_dir, Path::new("/etc/cni/net.d"));
        assert_eq!(c.cni.bin_dirs, [Path::new("/usr/lib/cni"), Path::new("/opt/cni/bin")]);
        assert!(c.registry.config_path.is_empty());
        // An empty file is the same.
        assert_eq!(load_str("").unwrap().sandbox_image, c.sandbox_image);
    }

    #[test]
    fn stream_limits_and_tls_are_read_and_checked() {
        let c =
            load_str("[stream]\nidle_timeout = \"4h0m0s\"\nmax_sessions = 7\nmax_streams_per_session = 9\n").unwrap();
        assert_eq!(c.stream.idle_timeout, std::time::Duration::from_secs(4 * 3600));
        assert_eq!((c.stream.max_sessions, c.stream.max_streams_per_session), (7, 9));
        let d = Config::default().stream;
        assert_eq!((d.idle_timeout.as_secs(), d.max_sessions, d.max_streams_per_session), (4 * 3600, 100, 100));
        for (text, want) in [
            ("idle_timeout = \"0s\"", "stream.idle_timeout: must be more than 0"),
            ("idle_timeout = \"soon\"", "idle_timeout"),
            ("max_sessions = 0", "stream.max_sessions: must be at least 1"),
            ("max_streams_per_session = 2", "stream.max_streams_per_session: must be at least 5"),
            ("tls_cert_file = \"/x.crt\"", "stream.tls_key_file: tls_cert_file is set"),
            ("tls_key_file = \"/x.key\"", "stream.tls_cert_file: tls_key_file is set"),
        ] {
            let e = load_str(&format!("[stream]\n{text}\n")).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn every_section_is_read() {
        let c = load_str(
            r#"
sandbox_image = "registry.k8s.io/pause:3.9"
default_runtime = "runc"
[runtimes.runc]
path = "/usr/sbin/runc"
[cni]
conf_dir = "/tmp/net.d"
[stream]
port = 10010
[registry]
config_path = "/etc/berth/certs.d"
"#,
        )
        .unwrap();
        assert_eq!(c.sandbox_image, "registry.k8s.io/pause:3.9");
        assert_eq!(c.handler("").map(|(n, _)| n), Some("runc"));
        assert_eq!(c.handler("berth").map(|(n, _)| n), Some("berth"));
        assert!(c.handler("kata").is_none());
        assert_eq!(c.cni.conf_dir, Path::new("/tmp/net.d"));
        assert_eq!(c.cni.bin_dirs.len(), 2);
        assert_eq!((c.stream.address.as_str(), c.stream.port), ("127.0.0.1", 10010));
        assert_eq!(c.registry.config_path, [Path::new("/etc/berth/certs.d")]);
        assert!(!c.docker.enabled && c.docker.listen == DEFAULT_DOCKER_LISTEN);
        let c = load_str("[docker]\nenabled = true\nlisten = \"unix:///tmp/d.sock\"\n").unwrap();
        assert!(c.docker.enabled);
        assert_eq!(docker_socket_path(&c.docker.listen).unwrap(), Path::new("/tmp/d.sock"));
        let c = load_str("[docker]\nlisten = \"tcp://127.0.0.1:2375\"\nallow_insecure_tcp = true\n").unwrap();
        assert_eq!(c.docker.listen_on(&c.docker.listen), Ok(DockerListen::Tcp("127.0.0.1:2375".into())));
        let c = load_str("[docker]\nlisten = \"tcp://127.0.0.1:2376\"\ntls_cert = \"/c\"\ntls_key = \"/k\"\n").unwrap();
        assert_eq!(c.docker.listen_on(&c.docker.listen), Ok(DockerListen::Tcp("127.0.0.1:2376".into())));
    }

    #[test]
    fn bad_configs_name_what_is_wrong() {
        let cases = [
            ("cgroup_driver = \"systemd\"", "cgroup_driver = \"systemd\" is not supported"),
            ("cgroup_driver = \"cgroupv3\"", "unknown variant `cgroupv3`"),
            ("default_runtime = \"kata\"", "default_runtime \"kata\" is not a configured runtime (configured: berth)"),
            ("[runtimes.Bad_Name]\npath = \"/bin/true\"", "runtimes.Bad_Name"),
            ("sandbox_imag = \"x\"", "unknown field `sandbox_imag`"),
            ("[cni]\nconfdir = \"/x\"", "unknown field `confdir`"),
            ("[stream]\naddress = \"localhost\"", "stream.address: \"localhost\" is not an IP address"),
            ("[stream]\ndebug_host_streamer_dir = \"rel\"", "stream.debug_host_streamer_dir: rel is not an absolute"),
            ("[stream]\nport = 70000", "port"),
            (
                "[docker]\nlisten = \"tcp://0.0.0.0:2375\"",
                "docker.listen: \"tcp://0.0.0.0:2375\": TCP is served with TLS only (set [docker] tls_cert",
            ),
            ("[docker]\nlisten = \"tcp://0.0.0.0:2375\"\ntls_cert = \"/c\"", "tls_cert and tls_key go together"),
            ("[docker]\nlisten = \"http://x\"", "give unix:///PATH or tcp://HOST:PORT"),
            (
                "[docker]\nlisten = \"unix://rel.sock\"",
                "docker.listen: \"unix://rel.sock\": the socket path must be absolute",
            ),
            ("[docker]\nenable = true", "unknown field `enable`"),
        ];
        for (text, want) in cases {
            let err = load_str(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn handlers_resolve_to_executables_and_the_engines_runtime_root() {
        let c =
            load_str("[runtimes.sh]\npath = \"/bin/sh\"\n[runtimes.missing]\npath = \"/nonexistent/runc\"").unwrap();
        let err = resolve_handlers(&c, Path::new("/run/b"), Some(Path::new("/bin/sh"))).unwrap_err().to_string();
        assert!(err.contains("runtime handler \"missing\": /nonexistent/runc"), "{err}");
        let c = load_str("[runtimes.sh]\npath = \"/bin/sh\"").unwrap();
        let h = resolve_handlers(&c, Path::new("/run/b"), Some(Path::new("/bin/true"))).unwrap();
        let got: Vec<(&str, &Path, &Path)> = h.iter().map(|h| (h.name.as_str(), &*h.path, &*h.root)).collect();
        assert_eq!(
            got,
            [
                ("berth", Path::new("/bin/true"), Path::new("/run/b/runtime")),
                ("sh", Path::new("/bin/sh"), Path::new("/run/b/runtime"))
            ]
        );
    }
}
