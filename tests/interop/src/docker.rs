//! dockerd 20.10 (Debian's docker.io) started by the test with
//! `--add-runtime berth=<berth-runtime>`, its own data root, exec root,
//! unix socket, pid file, containerd namespaces and cgroup parent, and no
//! network setup of its own (`--bridge none --iptables=false
//! --ip6tables=false --ip-masq=false`; containers run with `--network
//! none`). It starts its own containerd, configured under the exec root.
//! Driven with the `docker` CLI (`-H unix://...`, DOCKER_CONFIG in the
//! scratch dir).
//!
//! What dockerd writes outside the scratch dir: its containerd's shim
//! sockets in /run/containerd/s/ (hard-coded in containerd 1.6; each
//! removed when its shim exits).

use std::path::PathBuf;
use std::process::Command;

use crate::cgroup::CgroupParent;
use crate::proc::{Daemon, Out, run};
use crate::{Registry, Scratch};

pub struct Docker {
    pub socket: PathBuf,
    pub cgroup: CgroupParent,
    cli_config: PathBuf,
    daemon: Daemon,
    pub registry: Registry,
    pub scratch: Scratch,
}

impl Docker {
    /// dockerd running with the `berth` runtime, the busybox image pulled.
    pub fn start() -> Docker {
        berth_testkit::require_root();
        crate::require_program("dockerd", "docker.io");
        crate::require_program("docker", "docker.io");
        let runtime = crate::berth_runtime();
        let scratch = Scratch::new("docker");
        let registry = Registry::start(&scratch);
        let dir = scratch.dir("docker");
        let socket = dir.join("docker.sock");
        let cgroup = CgroupParent::new("dockerd");
        let ns = crate::unique("moby");
        let mut cmd = Command::new("dockerd");
        cmd.arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .arg("--config-file")
            .arg(write_daemon_json(&dir))
            .args(["--bridge", "none", "--iptables=false", "--ip6tables=false", "--ip-masq=false"])
            .args(["--insecure-registry", &registry.addr])
            .arg("--add-runtime")
            .arg(format!("berth={}", runtime.display()))
            .args(["--cgroup-parent", &cgroup.path()])
            .args(["--containerd-namespace", &ns, "--containerd-plugins-namespace", &format!("{ns}-plugins")])
            .args(["--shutdown-timeout", "5"]);
        let daemon = Daemon::spawn("dockerd", &mut cmd, dir.join("dockerd.log"), 60);
        let mut d = Docker { socket, cgroup, cli_config: dir.join("cli"), daemon, registry, scratch };
        crate::wait_for("dockerd's API", 60, || {
            d.daemon.check_running();
            (d.socket.exists() && run(d.docker().arg("version"), 30).code == 0).then_some(())
        });
        d.ok(&["pull", "--quiet", &d.registry.image]);
        d
    }

    /// `docker -H unix://SOCK` with its own client config dir.
    pub fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_CONFIG", &self.cli_config).arg("-H").arg(format!("unix://{}", self.socket.display()));
        c
    }

    pub fn cmd_run(&self, args: &[&str]) -> Out {
        run(self.docker().args(args), 180)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        self.cmd_run(args).ok(&format!("docker {}", args.join(" "))).stdout
    }

    /// `docker run --runtime berth --network none FLAGS IMAGE CMD...`
    pub fn run(&self, flags: &[&str], cmd: &[&str]) -> Out {
        let mut args = vec!["run", "--runtime", "berth", "--network", "none"];
        args.extend(flags);
        args.push(&self.registry.image);
        args.extend(cmd);
        self.cmd_run(&args)
    }

    pub fn inspect(&self, name: &str, format: &str) -> String {
        self.ok(&["inspect", "--format", format, name]).trim().to_string()
    }

    /// Removes every container, stops dockerd, and checks that nothing is
    /// left: no container, no shim, no process in the cgroup parent.
    pub fn close(mut self) {
        let left = self.remove_all();
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    fn remove_all(&mut self) -> Vec<String> {
        let mut left = Vec::new();
        if !self.daemon.has_exited() {
            let ids: Vec<String> = run(self.docker().args(["ps", "-aq"]), 60)
                .stdout
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                left.push(format!("docker containers {ids:?}"));
                let mut rm = self.docker();
                rm.args(["rm", "--force"]).args(&ids);
                run(&mut rm, 120);
            }
        }
        let procs = self.cgroup.lingering(20);
        if !procs.is_empty() {
            left.push(format!("processes in the cgroup parent: {procs:?}"));
        }
        self.daemon.stop();
        let registry = self.registry.pid();
        let mut rest = crate::proc::pids_mentioning(&self.scratch.path().display().to_string());
        rest.retain(|p| *p != registry);
        if !rest.is_empty() {
            left.push(format!("processes still running from the scratch dir: {rest:?}"));
        }
        left
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        let _ = self.remove_all();
    }
}

/// An empty daemon.json, so a host's /etc/docker/daemon.json is not read.
fn write_daemon_json(dir: &std::path::Path) -> PathBuf {
    let p = dir.join("daemon.json");
    std::fs::write(&p, "{}\n").expect("daemon.json");
    p
}
