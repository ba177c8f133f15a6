//! containerd 1.6 started by the test (its own config: root, state, grpc
//! and ttrpc sockets, opt dir, all under the scratch dir; the CRI plugin
//! off), driven with `ctr`.
//!
//! berth-runtime is swapped in two ways:
//! - per container, `ctr run --runc-binary <berth-runtime>` (the runc v2
//!   shim's `BinaryName` option), with `--runc-root` in the scratch dir;
//! - in containerd's config: the v1 Linux runtime plugin's `runtime =
//!   "<berth-runtime>"` (what dockerd 20.10 configures its containerd
//!   with), used with `ctr run --runtime io.containerd.runtime.v1.linux`.
//!
//! Containers get `--cgroup /<unique parent>/<id>`; FIFOs go to the scratch
//! dir (`--fifo-dir`). What containerd 1.6 writes outside it: shim sockets
//! in /run/containerd/s/ (hard-coded; each removed when its shim exits).

use std::path::PathBuf;
use std::process::Command;

use crate::cgroup::CgroupParent;
use crate::proc::{Daemon, Out, run};
use crate::{Registry, Scratch};

pub const V1_RUNTIME: &str = "io.containerd.runtime.v1.linux";

pub struct Containerd {
    /// ctr's namespace (unique per test).
    pub namespace: String,
    pub socket: PathBuf,
    pub runtime: PathBuf,
    /// berth-runtime's --root for the v2 shim (`--runc-root`).
    pub runc_root: PathBuf,
    pub fifo_dir: PathBuf,
    pub cgroup: CgroupParent,
    daemon: Daemon,
    pub registry: Registry,
    pub scratch: Scratch,
}

impl Containerd {
    /// containerd running, the busybox image pulled into the namespace.
    pub fn start() -> Containerd {
        berth_testkit::require_root();
        crate::require_program("containerd", "containerd");
        crate::require_program("ctr", "containerd");
        let runtime = crate::berth_runtime();
        let scratch = Scratch::new("containerd");
        let registry = Registry::start(&scratch);
        let dir = scratch.dir("containerd");
        let socket = dir.join("containerd.sock");
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.runtime.v1.linux"]
  runtime = "{runtime}"
  runtime_root = "{v1root}"
"#,
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            sock = socket.display(),
            opt = dir.join("opt").display(),
            runtime = runtime.display(),
            v1root = dir.join("v1-runtime-root").display(),
        );
        std::fs::write(dir.join("config.toml"), config).expect("containerd config");
        let mut daemon = Daemon::spawn(
            "containerd",
            Command::new("containerd").arg("--config").arg(dir.join("config.toml")),
            dir.join("containerd.log"),
            20,
        );
        let c = Containerd {
            namespace: crate::unique("ns"),
            runc_root: dir.join("runc-root"),
            fifo_dir: dir.join("fifo"),
            socket,
            runtime,
            cgroup: CgroupParent::new("ctr"),
            daemon: {
                crate::wait_for("containerd's socket", 30, || {
                    daemon.check_running();
                    (dir.join("containerd.sock").exists()
                        && run(Command::new("ctr").arg("-a").arg(dir.join("containerd.sock")).arg("version"), 30).code
                            == 0)
                        .then_some(())
                });
                daemon
            },
            registry,
            scratch,
        };
        c.ok(&["image", "pull", "--plain-http", &c.registry.image]);
        c
    }

    /// `ctr -a SOCK -n NS`.
    pub fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("-a").arg(&self.socket).arg("-n").arg(&self.namespace);
        c
    }

    pub fn run_ctr(&self, args: &[&str]) -> Out {
        run(self.ctr().args(args), 180)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        self.run_ctr(args).ok(&format!("ctr {}", args.join(" "))).stdout
    }

    /// `ctr task exec --fifo-dir <scratch> ARGS...` (without --fifo-dir, ctr
    /// makes its FIFOs under /run/containerd/fifo).
    pub fn task_exec(&self) -> Command {
        let mut c = self.ctr();
        c.args(["task", "exec", "--fifo-dir"]).arg(&self.fifo_dir);
        c
    }

    /// `ctr task exec --exec-id NAME-N [FLAGS] ID ARGS...`, its output.
    ///
    /// ctr can drop the output of an exec that exits right after printing,
    /// with runc as with berth (containerd#5741: its fifo copier races the
    /// exit). A dropped output is retried under a new exec id, up to three
    /// times; a process that never prints still fails the caller's check.
    pub fn exec(&self, id: &str, name: &str, flags: &[&str], args: &[&str]) -> Out {
        let mut last = None;
        for n in 1..=3 {
            let exec_id = format!("{name}-{n}");
            let out = run(self.task_exec().args(["--exec-id", &exec_id]).args(flags).arg(id).args(args), 120);
            if !out.stdout.is_empty() {
                return out;
            }
            last = Some(out);
        }
        last.expect("three attempts")
    }

    /// The cgroup path for container `id`: /<parent>/<id>.
    pub fn cgroup_of(&self, id: &str) -> String {
        format!("{}/{id}", self.cgroup.path())
    }

    /// `ctr run` flags that make the runc v2 shim run berth-runtime.
    pub fn berth_flags(&self, id: &str) -> Vec<String> {
        vec![
            "--runc-binary".into(),
            self.runtime.display().to_string(),
            "--runc-root".into(),
            self.runc_root.display().to_string(),
            "--fifo-dir".into(),
            self.fifo_dir.display().to_string(),
            "--cgroup".into(),
            self.cgroup_of(id),
        ]
    }

    /// `ctr run [berth flags] FLAGS IMAGE ID CMD...`
    pub fn run(&self, flags: &[&str], id: &str, cmd: &[&str]) -> Out {
        let mut c = self.ctr();
        c.arg("run").args(self.berth_flags(id)).args(flags).arg(&self.registry.image).arg(id).args(cmd);
        run(&mut c, 180)
    }

    /// berth-runtime's --root for containers of the v1 runtime plugin.
    pub fn v1_runtime_root(&self) -> PathBuf {
        self.scratch.path().join("containerd/v1-runtime-root").join(&self.namespace)
    }

    /// A task's status as `ctr task ls` shows it (RUNNING, PAUSED, ...).
    pub fn task_status(&self, id: &str) -> Option<String> {
        let out = self.ok(&["task", "ls"]);
        out.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&id)).then(|| f.get(2).unwrap_or(&"").to_string())
        })
    }

    pub fn task_pid(&self, id: &str) -> i32 {
        let out = self.ok(&["task", "ls"]);
        out.lines()
            .skip(1)
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.first() == Some(&id)).then(|| f[1].parse().expect("a pid"))
            })
            .unwrap_or_else(|| panic!("no task {id}: {out}"))
    }

    /// Removes every task and container of the namespace, stops
    /// containerd, and checks that nothing is left: no task, no shim, no
    /// berth-runtime state, nothing in the cgroup parent.
    pub fn close(mut self) {
        let left = self.remove_all();
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    fn remove_all(&mut self) -> Vec<String> {
        let mut left = Vec::new();
        if self.daemon.has_exited() {
            return left;
        }
        let ids: Vec<String> = run(self.ctr().args(["container", "ls", "-q"]), 60)
            .stdout
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        for id in &ids {
            left.push(format!("container {id}"));
            run(self.ctr().args(["task", "kill", "-s", "SIGKILL", id]), 60);
            let _ = crate::wait_for_opt(20, || {
                matches!(self.task_status(id).as_deref(), None | Some("STOPPED")).then_some(())
            });
            run(self.ctr().args(["task", "rm", "-f", id]), 60);
            run(self.ctr().args(["container", "rm", id]), 60);
        }
        let v1_root = self.scratch.path().join("containerd/v1-runtime-root");
        for root in [self.runc_root.join(&self.namespace), v1_root.join(&self.namespace)] {
            if let Ok(rd) = std::fs::read_dir(&root) {
                for e in rd.flatten() {
                    left.push(format!("runtime state {}", e.path().display()));
                }
            }
        }
        let procs = self.cgroup.lingering(20);
        if !procs.is_empty() {
            left.push(format!("processes in the cgroup parent: {procs:?}"));
        }
        self.daemon.stop();
        let shims = crate::proc::pids_mentioning(&self.socket.display().to_string());
        if !shims.is_empty() {
            left.push(format!("shims still running: {shims:?}"));
        }
        left
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.remove_all();
    }
}
