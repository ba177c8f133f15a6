//! podman 4.3 with `--runtime <berth-runtime>`, configured entirely by
//! files in the test's scratch dir (CONTAINERS_CONF,
//! CONTAINERS_REGISTRIES_CONF, CONTAINERS_STORAGE_CONF):
//!
//! - storage (graphroot, runroot), podman's tmp dir, volumes, events log and
//!   network config dir under the scratch dir;
//! - `cgroup_manager = "cgroupfs"` (no systemd here), `events_logger =
//!   "file"`, `netns = "none"` (no CNI bridge needed);
//! - `default_ulimits` at the test process's own hard limits: podman asks
//!   for 1048576 open files by default, which needs CAP_SYS_RESOURCE;
//! - `runtime_supports_json = ["berth-runtime"]`: podman passes
//!   `--log-format=json --log FILE` only to runtimes on that list (runc and
//!   crun are on its built-in one) and then reads the runtime's error from
//!   that file, so this exercises berth's logrus-compatible JSON lines;
//! - the registry marked insecure (plain HTTP on 127.0.0.1).
//!
//! Every container gets `--cgroup-parent /<unique name>`; conmon goes to
//! `<parent>/conmon`. berth-runtime keeps its state in its default root
//! (/run/berth-runtime): podman 4.3 does not pass `--runtime-flag root=...`
//! on to the `podman container cleanup` process conmon runs when a
//! container exits, so a custom root would leave every exited container
//! behind in it (runc behaves the same way under podman). Container ids
//! are unique, and the tests check none is left there.
//!
//! What podman writes outside the scratch dir: its blob-info cache,
//! /var/lib/containers/cache/blob-info-cache-v1.boltdb (a cache of which
//! registry has which blob; podman 4.3 has no setting to move it).

use std::path::PathBuf;
use std::process::Command;

use crate::cgroup::CgroupParent;
use crate::proc::{Out, run};
use crate::{Registry, Scratch};

pub struct Podman {
    pub registry: Registry,
    pub cgroup: CgroupParent,
    runtime: PathBuf,
    env: Vec<(String, PathBuf)>,
    pub scratch: Scratch,
    /// Dropped last: userdel refuses while the user has processes.
    user: Option<berth_testkit::user::TestUser>,
}

/// Where berth-runtime keeps container state when podman drives it as root.
pub const BERTH_DEFAULT_ROOT: &str = "/run/berth-runtime";

impl Podman {
    /// podman as root with berth-runtime, the busybox image pulled.
    pub fn start() -> Podman {
        berth_testkit::require_root();
        crate::require_program("podman", "podman");
        crate::require_program("conmon", "conmon");
        let runtime = crate::berth_runtime();
        let scratch = Scratch::new("podman");
        let registry = Registry::start(&scratch);
        let cgroup = CgroupParent::new("podman");
        let env = write_config(&scratch, &registry, &scratch.path().join("storage"));
        let p = Podman { registry, cgroup, runtime, env, scratch, user: None };
        p.cmd_ok(&["pull", "--quiet", &p.registry.image]);
        p
    }

    /// Rootless podman: a throwaway user (with subordinate ids) runs it,
    /// with its storage, XDG_RUNTIME_DIR and HOME in the scratch dir (which
    /// it then owns). podman runs berth-runtime as uid 0 of the user's
    /// namespace; on this cgroup v1 host it has no cgroups (none are
    /// delegated), so no limits, pause or stats.
    pub fn start_rootless() -> Podman {
        berth_testkit::require_root();
        crate::require_program("podman", "podman");
        crate::require_program("newuidmap", "uidmap");
        let runtime = crate::berth_runtime();
        let scratch = Scratch::new("podman-rootless");
        let registry = Registry::start(&scratch);
        let cgroup = CgroupParent::new("podman-rootless");
        // A range per test process, clear of the rootless test's.
        let start = 3_000_000 + (std::process::id() % 1000) * 65536;
        let user = berth_testkit::user::TestUser::create(Some((start, 65536)));
        let mut env = write_config(&scratch, &registry, &scratch.path().join("storage"));
        let xdg = scratch.dir("xdg");
        let home = scratch.dir("home");
        std::fs::set_permissions(&xdg, std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod");
        user.own(scratch.path());
        // The user must reach its dirs: the scratch dir's parents are /tmp.
        env.extend([
            ("XDG_RUNTIME_DIR".into(), xdg),
            ("HOME".into(), home),
            ("USER".into(), PathBuf::from(&user.name)),
            ("LOGNAME".into(), PathBuf::from(&user.name)),
        ]);
        let p = Podman { registry, cgroup, runtime, env, scratch, user: Some(user) };
        p.cmd_ok(&["pull", "--quiet", &p.registry.image]);
        p
    }

    /// A `podman --runtime <berth-runtime>` command with this test's
    /// configuration.
    pub fn cmd(&self) -> Command {
        self.cmd_with_runtime(&self.runtime)
    }

    /// The same with another OCI runtime (for side-by-side checks).
    pub fn cmd_with_runtime(&self, runtime: &std::path::Path) -> Command {
        let mut c = match &self.user {
            Some(u) => u.command("podman"),
            None => Command::new("podman"),
        };
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.arg("--runtime").arg(runtime);
        c
    }

    /// Runs podman with `args`.
    pub fn cmd_run(&self, args: &[&str]) -> Out {
        run(self.cmd().args(args), 180)
    }

    /// Runs podman with `args`, asserts success, returns stdout.
    pub fn cmd_ok(&self, args: &[&str]) -> String {
        self.cmd_run(args).ok(&format!("podman {}", args.join(" "))).stdout
    }

    /// `podman run --cgroup-parent P FLAGS... IMAGE CMD...`.
    pub fn run(&self, flags: &[&str], cmd: &[&str]) -> Out {
        let cg = self.cgroup.path();
        let mut args = vec!["run"];
        if self.user.is_none() {
            args.extend(["--cgroup-parent", &cg]);
        }
        args.extend(flags);
        args.push(&self.registry.image);
        args.extend(cmd);
        self.cmd_run(&args)
    }

    /// The container's init pid (from `podman inspect`).
    pub fn pid(&self, name: &str) -> i32 {
        self.inspect(name, "{{.State.Pid}}").parse().expect("a pid")
    }

    pub fn inspect(&self, name: &str, format: &str) -> String {
        self.cmd_ok(&["inspect", "--format", format, name]).trim().to_string()
    }

    /// Removes every container, then checks that nothing of them is left:
    /// no container known to podman, no state in berth-runtime's root, no
    /// process in the test's cgroup parent, no container mount.
    pub fn close(mut self) {
        let left = self.remove_all();
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    fn remove_all(&mut self) -> Vec<String> {
        let mut left = Vec::new();
        let ids: Vec<String> = run(self.cmd().args(["ps", "-aq", "--no-trunc"]), 60)
            .stdout
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect();
        if !ids.is_empty() {
            left.push(format!("podman containers {ids:?}"));
            run(self.cmd().args(["rm", "--all", "--force", "--time", "0"]), 120);
        }
        let state_root = match self.env.iter().find(|(k, _)| k == "XDG_RUNTIME_DIR") {
            Some((_, xdg)) => xdg.join("berth-runtime"),
            None => PathBuf::from(BERTH_DEFAULT_ROOT),
        };
        {
            for id in &ids {
                if state_root.join(id).exists() {
                    left.push(format!("berth-runtime state {}/{id}", state_root.display()));
                    let _ = run(
                        Command::new(&self.runtime).arg("--root").arg(&state_root).args(["delete", "--force", id]),
                        60,
                    );
                }
            }
        }
        // conmon outlives an attached `podman run --rm` by the time its
        // exit command takes.
        let procs = self.cgroup.lingering(20);
        if !procs.is_empty() {
            left.push(format!("processes in the cgroup parent: {procs:?}"));
        }
        let containers = self.scratch.path().join("storage/overlay");
        let mounts: Vec<_> = crate::scratch::mounts_under(&containers)
            .into_iter()
            .filter(|m| m.file_name().is_some_and(|n| n == "merged"))
            .collect();
        if !mounts.is_empty() {
            left.push(format!("container rootfs mounts {mounts:?}"));
        }
        left
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.remove_all();
        // Rootless podman leaves a "pause" process holding its user
        // namespace; it mentions nothing of ours on its command line, so
        // stop it by the pid podman recorded.
        if self.user.is_some() {
            // podman's tmp_dir (containers.conf) holds it.
            let pidfile = self.scratch.path().join("podman/tmp/pause.pid");
            if let Some(pid) = std::fs::read_to_string(pidfile).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
                crate::proc::stop_pid(pid, 5, || false);
            }
        }
    }
}

/// Writes containers.conf, registries.conf and storage.conf into the
/// scratch dir; returns the environment that points podman at them.
fn write_config(scratch: &Scratch, registry: &Registry, storage: &std::path::Path) -> Vec<(String, PathBuf)> {
    let dir = scratch.dir("podman");
    let (nofile, nproc) = (hard_limit(libc::RLIMIT_NOFILE), hard_limit(libc::RLIMIT_NPROC).min(32768));
    let p = |name: &str| dir.join(name).display().to_string();
    let containers = format!(
        r#"[containers]
netns = "none"
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{events}"
tmp_dir = "{tmp}"
volume_path = "{volumes}"
runtime_supports_json = ["berth-runtime"]

[network]
network_config_dir = "{net}"
"#,
        events = p("events.log"),
        tmp = p("tmp"),
        volumes = p("volumes"),
        net = p("net"),
    );
    let registries = format!(
        "unqualified-search-registries = []\n\n[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
        registry.addr
    );
    let storage_conf =
        format!("[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n", storage.display(), p("run"));
    std::fs::write(dir.join("containers.conf"), containers).expect("containers.conf");
    std::fs::write(dir.join("registries.conf"), registries).expect("registries.conf");
    std::fs::write(dir.join("storage.conf"), storage_conf).expect("storage.conf");
    vec![
        ("CONTAINERS_CONF".into(), dir.join("containers.conf")),
        ("CONTAINERS_REGISTRIES_CONF".into(), dir.join("registries.conf")),
        ("CONTAINERS_STORAGE_CONF".into(), dir.join("storage.conf")),
    ]
}

fn hard_limit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    let rc = unsafe { libc::getrlimit(resource, &mut r) };
    assert_eq!(rc, 0, "getrlimit");
    r.rlim_max
}
