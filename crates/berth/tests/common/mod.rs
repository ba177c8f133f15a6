//! The harness the `berth` CLI tests share: a real registry holding a
//! busybox image, and berth's own root, runroot and cgroup parent for one
//! test, all removed when it ends (containers, mounts, cgroups), also
//! when it fails.

#![allow(dead_code)] // each test binary uses its own part of it

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use berth_testkit::cgroup::CgroupParent;
use berth_testkit::registry::Registry;
use berth_testkit::{require_root, workspace_bin};

pub struct Berth {
    pub dir: tempfile::TempDir,
    _registry: Registry,
    pub image: String,
    /// Dropped after the containers are removed (fields drop after
    /// `Drop::drop`): removes the parent's directories.
    cgroup: CgroupParent,
}

impl Berth {
    /// A registry holding busybox (every applet linked, as the runtime
    /// tests use it), and berth's own root and runroot.
    pub fn new() -> Berth {
        require_root();
        let (reg, image) = Registry::with_busybox();
        let dir = tempfile::Builder::new().prefix("berth-cli-").tempdir().unwrap();
        Berth { dir, _registry: reg, image, cgroup: CgroupParent::new("cli") }
    }

    /// `berth` with this test's root, runroot, cgroup parent and the
    /// workspace's berth-runtime and berth-shim.
    pub fn command(&self) -> Command {
        self.command_with_runtime(&workspace_bin("berth-runtime"))
    }

    pub fn command_with_runtime(&self, runtime: &Path) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
        c.arg("--root").arg(self.dir.path().join("root")).arg("--runroot").arg(self.dir.path().join("run"));
        c.arg("--runtime").arg(runtime);
        c.env("BERTH_SHIM", workspace_bin("berth-shim")).env("BERTH_CGROUP_PARENT", self.cgroup.path());
        c
    }

    pub fn cmd(&self, args: &[&str]) -> Output {
        let mut c = self.command();
        c.args(args);
        berth_testkit::output_via_files(&mut c)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(out.status.success(), "berth {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The cgroup parent this test's containers go under.
    pub fn cgroup(&self) -> &CgroupParent {
        &self.cgroup
    }

    pub fn inspect(&self, name: &str) -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(&self.ok(&["inspect", name])).unwrap()[0].clone()
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        let ids = self.cmd(&["ps", "-a", "-q"]);
        for id in String::from_utf8_lossy(&ids.stdout).lines() {
            let _ = self.cmd(&["rm", "-f", id]);
        }
        for m in leftovers(self.dir.path()).iter().rev() {
            if let Some(point) = m.split_whitespace().nth(4) {
                let _ = nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

/// Mounts under `dir` still in place.
impl Berth {
    /// Container cgroups left under this test's cgroup parent, in any
    /// hierarchy.
    pub fn cgroups_left(&self) -> Vec<PathBuf> {
        let mut left = Vec::new();
        for d in self.cgroup.dirs() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    left.push(e.path());
                }
            }
        }
        left
    }
}

pub fn leftovers(dir: &Path) -> Vec<String> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mounts.lines().filter(|l| l.contains(&dir.display().to_string())).map(str::to_owned).collect()
}
