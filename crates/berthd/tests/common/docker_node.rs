//! The harness of the Docker API tests (files, build, events, networks,
//! compose; docker_api.rs still has its own): a berthd of its own serving
//! the Docker API on a unix socket in a temp dir, a registry holding
//! busybox, the docker CLI and the `berth` CLI on the same root. Drop
//! removes every container, network and volume through the `berth` CLI
//! and unmounts what is left under berthd's dir, failed or not. Run inside
//! `in_test_host` (a network namespace of the test's own).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_testkit::cri::Berthd;
use berth_testkit::registry::Registry;
use berth_testkit::workspace_bin;

pub const DOCKER_28: &str = "/usr/local/bin/docker";
pub const DOCKER_20: &str = "/usr/bin/docker";

/// The newest docker CLI the machine has: 28.x where there is one, else
/// Debian's 20.10 (setup.sh installs it).
pub fn newest() -> &'static str {
    if Path::new(DOCKER_28).exists() { DOCKER_28 } else { DOCKER_20 }
}

pub struct Node {
    pub d: Berthd,
    /// `REGISTRY/test/busybox:1`.
    pub image: String,
    pub docker_sock: PathBuf,
    /// DOCKER_CONFIG, and the socket's directory.
    pub client_dir: tempfile::TempDir,
    pub registry: Registry,
}

impl Node {
    pub fn start() -> Node {
        Node::start_with("")
    }

    /// With `extra` added to berthd.toml's `[docker]` table.
    pub fn start_with(extra: &str) -> Node {
        let (registry, image) = Registry::with_busybox();
        let client_dir = tempfile::Builder::new().prefix("berth-docker-client-").tempdir().unwrap();
        let docker_sock = client_dir.path().join("docker.sock");
        let d = Berthd::start(&format!(
            "[docker]\nenabled = true\nlisten = \"unix://{}\"\n{extra}\n",
            docker_sock.display()
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&docker_sock).is_err() {
            assert!(Instant::now() < deadline, "no Docker API socket; berthd log:\n{}", d.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
        Node { d, image, docker_sock, client_dir, registry }
    }

    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.docker_sock.display())
    }

    pub fn berthd_log(&self) -> String {
        tail(&self.d.stderr(), 40)
    }

    pub fn docker_cmd(&self, cli: &str) -> Command {
        let mut c = Command::new(cli);
        c.env("DOCKER_HOST", format!("unix://{}", self.docker_sock.display()))
            .env("DOCKER_CONFIG", self.client_dir.path().join("config"))
            .env_remove("DOCKER_API_VERSION")
            .stdin(std::process::Stdio::null());
        c
    }

    pub fn docker(&self, cli: &str, args: &[&str]) -> Output {
        berth_testkit::output_via_files(self.docker_cmd(cli).args(args))
    }

    /// stdout; panics with stderr and berthd's log when it fails.
    pub fn docker_ok(&self, cli: &str, args: &[&str]) -> String {
        let out = self.docker(cli, args);
        assert!(
            out.status.success(),
            "{cli} {args:?}: {}\nberthd log (tail):\n{}",
            String::from_utf8_lossy(&out.stderr),
            tail(&self.d.stderr(), 40)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The `berth` CLI on berthd's root and runroot.
    pub fn berth(&self, args: &[&str]) -> Output {
        let mut c = Command::new(workspace_bin("berth"));
        c.arg("--root").arg(self.d.dir.path().join("root"));
        c.arg("--runroot").arg(self.d.dir.path().join("run"));
        c.arg("--runtime").arg(workspace_bin("berth-runtime"));
        c.env("BERTH_SHIM", workspace_bin("berth-shim")).env("BERTH_CGROUP_PARENT", self.d.cgroup.path());
        c.args(args);
        berth_testkit::output_via_files(&mut c)
    }

    pub fn berth_ok(&self, args: &[&str]) -> String {
        let out = self.berth(args);
        assert!(out.status.success(), "berth {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// berthd's root directory.
    pub fn root(&self) -> PathBuf {
        self.d.dir.path().join("root")
    }

    /// Runs a docker-py script with the API's URL and the image as
    /// `sys.argv[1]` and `[2]`; its stdout, or a panic with everything.
    pub fn python(&self, script: &str) -> String {
        let out = Command::new("python3")
            .args(["-c", script, &format!("unix://{}", self.docker_sock.display()), &self.image])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}\n{}\nberthd:\n{}", stderr(&out), tail(&self.d.stderr(), 40));
        text
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let ids = self.berth(&["ps", "-a", "-q", "--no-trunc"]);
        for id in String::from_utf8_lossy(&ids.stdout).lines() {
            let _ = self.berth(&["rm", "-f", id]);
        }
        let nets = self.berth(&["network", "ls", "-q"]);
        for n in String::from_utf8_lossy(&nets.stdout).lines().filter(|n| *n != "bridge") {
            let _ = self.berth(&["network", "rm", n]);
        }
        let vols = self.berth(&["volume", "ls", "-q"]);
        for v in String::from_utf8_lossy(&vols.stdout).lines() {
            let _ = self.berth(&["volume", "rm", v]);
        }
        for m in leftovers(self.d.dir.path()).iter().rev() {
            if let Some(point) = m.split_whitespace().nth(4) {
                let _ = nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

pub fn leftovers(dir: &Path) -> Vec<String> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mounts.lines().filter(|l| l.contains(&dir.display().to_string())).map(str::to_owned).collect()
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Now as docker's `--since`/`--until` take it (Unix seconds.nanoseconds).
pub fn now() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// A child process killed (and reaped) when dropped.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
