//! CRI fixtures: a [`Berthd`] with its own root, runroot, socket, config and
//! cgroup parent (stopped by its PID and everything removed when dropped);
//! the critest stand-in images (`shared/critest-images/layout`) in a
//! testkit registry with containerd-style `hosts.toml` mirrors pointing at
//! it ([`StandIns`]); and crictl/critest from `shared/tools`.
//!
//! `shared/` is read-only and lives beside the repository (`../shared`
//! from the main checkout); it is found from this crate's directory
//! upwards, or named by `BERTH_SHARED_DIR`.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cgroup::CgroupParent;
use crate::registry::Registry;
use crate::workspace_bin;

/// The project's shared directory (tools, critest images): `BERTH_SHARED_DIR`,
/// else the first `shared/` with `tools/` in it above this crate.
pub fn shared_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BERTH_SHARED_DIR") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|a| a.join("shared"))
        .find(|s| s.join("tools").is_dir())
        .unwrap_or_else(|| {
            panic!("no shared/ directory with tools/ above {}: set BERTH_SHARED_DIR", env!("CARGO_MANIFEST_DIR"))
        })
}

/// crictl v1.36 (`BERTH_CRICTL` overrides).
pub fn crictl_bin() -> PathBuf {
    std::env::var_os("BERTH_CRICTL").map(PathBuf::from).unwrap_or_else(|| shared_dir().join("tools/crictl"))
}

/// The OCI layout of critest's stand-in images.
pub fn stand_in_layout() -> PathBuf {
    shared_dir().join("critest-images/layout")
}

/// The registries critest pulls from, with their upstream servers: each
/// gets a hosts.toml pointing at the stand-ins' registry.
pub const MIRRORED: &[(&str, &str)] = &[
    ("registry.k8s.io", "https://registry.k8s.io"),
    ("k8s.gcr.io", "https://k8s.gcr.io"),
    ("gcr.io", "https://gcr.io"),
    ("public.ecr.aws", "https://public.ecr.aws"),
    ("docker.io", "https://registry-1.docker.io"),
];

/// Every image reference the stand-in layout holds.
pub fn stand_in_refs() -> Vec<String> {
    let index = std::fs::read(stand_in_layout().join("index.json")).expect("read the stand-ins' index.json");
    let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
    let mut refs: Vec<String> = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str().map(String::from))
        .collect();
    refs.sort();
    refs.dedup();
    refs
}

/// The manifest digest of a stand-in (`sha256:...`), from the layout's index.
pub fn stand_in_digest(reference: &str) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(stand_in_layout().join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == reference)
        .and_then(|m| m["digest"].as_str())
        .unwrap_or_else(|| panic!("{reference} is not a stand-in"))
        .to_string()
}

/// A registry holding critest's stand-in images under their paths without
/// the registry host (as `push.sh` lays them out), and a certs.d directory
/// of hosts.toml files that mirror every registry of [`MIRRORED`] to it.
pub struct StandIns {
    pub registry: Registry,
    certs_d: tempfile::TempDir,
}

impl StandIns {
    /// Pushes `refs` (e.g. `registry.k8s.io/pause:3.10`), or every stand-in.
    pub fn start(refs: Option<&[&str]>) -> StandIns {
        let registry = Registry::start();
        let all;
        let refs: Vec<&str> = match refs {
            Some(r) => r.to_vec(),
            None => {
                all = stand_in_refs();
                all.iter().map(String::as_str).collect()
            }
        };
        let mut pushed = std::collections::HashSet::new();
        for r in refs {
            let path = r.split_once('/').map(|(_, p)| p).unwrap_or_else(|| panic!("{r} has no registry host"));
            // k8s.gcr.io/pause:3.9 and registry.k8s.io/pause:3.9 are one image.
            if pushed.insert(path.to_string()) {
                push_stand_in(r, &format!("{}/{path}", registry.addr()));
            }
        }
        let certs_d = tempfile::Builder::new().prefix("berth-certs.d-").tempdir().unwrap();
        write_mirror_hosts(certs_d.path(), &registry.addr());
        StandIns { registry, certs_d }
    }

    /// The directory for `registry.config_path`.
    pub fn certs_d(&self) -> &Path {
        self.certs_d.path()
    }
}

/// Copies one stand-in to `dest` (`host:port/path:tag`) with its digests.
pub fn push_stand_in(reference: &str, dest: &str) {
    let layout = stand_in_layout();
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:{reference}", layout.display()))
        .arg(format!("docker://{dest}"))
        .output()
        .expect("run skopeo (apt-get install skopeo)");
    assert!(out.status.success(), "skopeo copy {reference} -> {dest}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Writes `DIR/<registry>/hosts.toml` for each of [`MIRRORED`]: pull and
/// resolve from `http://MIRROR` first, the upstream server last.
pub fn write_mirror_hosts(dir: &Path, mirror: &str) {
    for (host, server) in MIRRORED {
        let d = dir.join(host);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("hosts.toml"),
            format!("server = \"{server}\"\n\n[host.\"http://{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"),
        )
        .unwrap();
    }
}

/// A running berthd with its own state, started from the workspace's
/// binary (build it first: `cargo build -p berthd`).
pub struct Berthd {
    child: Child,
    pub dir: tempfile::TempDir,
    /// Removed (its processes killed) after the daemon is stopped.
    pub cgroup: CgroupParent,
}

/// How [`Berthd::start`] failed: the exit status and the log.
#[derive(Debug)]
pub struct StartFailure {
    pub status: Option<ExitStatus>,
    pub stderr: String,
}

impl Berthd {
    /// A berthd whose berthd.toml is `config` plus, unless `config` sets
    /// them, an empty private CNI conf dir and a runtime root under its dir.
    pub fn start(config: &str) -> Berthd {
        Berthd::try_start(config).unwrap_or_else(|f| panic!("berthd did not start: {f:?}"))
    }

    pub fn try_start(config: &str) -> Result<Berthd, StartFailure> {
        crate::require_root();
        let dir = tempfile::Builder::new().prefix("berthd-").tempdir().unwrap();
        let mut toml = config.to_string();
        if !config.contains("[cni]") {
            std::fs::create_dir_all(dir.path().join("net.d")).unwrap();
            toml.push_str(&format!("\n[cni]\nconf_dir = \"{}\"\n", dir.path().join("net.d").display()));
        }
        std::fs::write(dir.path().join("berthd.toml"), toml).unwrap();
        std::fs::write(dir.path().join("crictl.yaml"), "").unwrap();
        let cgroup = CgroupParent::new("berthd");
        let stderr = std::fs::File::create(dir.path().join("stderr")).unwrap();
        let child = Command::new(workspace_bin("berthd"))
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--runroot")
            .arg(dir.path().join("run"))
            .arg("--listen")
            .arg(dir.path().join("berthd.sock"))
            .arg("--config")
            .arg(dir.path().join("berthd.toml"))
            .arg("--cgroup-parent")
            .arg(cgroup.path())
            .arg("--runtime")
            .arg(workspace_bin("berth-runtime"))
            .arg("--log-level")
            .arg("debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start berthd");
        let mut d = Berthd { child, dir, cgroup };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if UnixStream::connect(d.socket()).is_ok() {
                return Ok(d);
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                return Err(StartFailure { status: Some(status), stderr: d.stderr() });
            }
            if Instant::now() > deadline {
                return Err(StartFailure { status: None, stderr: d.stderr() });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("berthd.sock")
    }

    /// `unix://SOCKET`, as CRI clients take endpoints.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What berthd logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// The daemon's CNI conf dir (when the test did not configure one).
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.path().join("net.d")
    }

    /// crictl on this daemon's socket for both services.
    pub fn crictl_cmd(&self) -> Command {
        let mut c = Command::new(crictl_bin());
        c.arg("--config").arg(self.dir.path().join("crictl.yaml"));
        c.args(["--runtime-endpoint", &self.endpoint(), "--image-endpoint", &self.endpoint(), "--timeout", "20s"]);
        c.stdin(Stdio::null());
        c
    }

    pub fn crictl(&self, args: &[&str]) -> Output {
        self.crictl_cmd().args(args).output().expect("run crictl")
    }

    /// crictl's stdout; panics with its stderr when it fails.
    pub fn crictl_ok(&self, args: &[&str]) -> String {
        let out = self.crictl(args);
        assert!(
            out.status.success(),
            "crictl {args:?}: {}\nberthd log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.stderr()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sends `sig` and waits (up to 30 s) for berthd to exit.
    pub fn stop_with(&mut self, sig: Signal) -> Option<ExitStatus> {
        let _ = kill(Pid::from_raw(self.child.id() as i32), sig);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Berthd {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) && self.stop_with(Signal::SIGTERM).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
