//! A cgroup parent only this test uses, in every hierarchy the programs
//! under test create it in; removed (leaves first) when dropped, so a test
//! leaves no cgroup behind even when it fails.

use std::path::{Path, PathBuf};

pub struct CgroupParent {
    pub name: String,
}

impl CgroupParent {
    pub fn new(what: &str) -> CgroupParent {
        CgroupParent { name: crate::unique_id(&format!("berth-t-{what}")) }
    }

    /// "/<name>": the absolute cgroup path the clients are given.
    pub fn path(&self) -> String {
        format!("/{}", self.name)
    }

    /// The directories of this parent that exist, one per hierarchy.
    pub fn dirs(&self) -> Vec<PathBuf> {
        hierarchies().into_iter().map(|h| h.join(&self.name)).filter(|d| d.is_dir()).collect()
    }

    /// Pids of the processes in this parent or below it, in any hierarchy.
    pub fn procs(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for d in self.dirs() {
            walk(&d, &mut |dir| {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            });
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// The processes still in the parent after up to `secs` seconds, each
    /// as "pid cmdline". Supervisors (conmon, shims) finish their exit work
    /// a moment after the client returns: a leak is a process that stays.
    pub fn lingering(&self, secs: u64) -> Vec<String> {
        if wait_for_opt(secs, || self.procs().is_empty().then_some(())).is_some() {
            return Vec::new();
        }
        self.procs()
            .into_iter()
            .map(|p| {
                let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                format!("{p} {}", String::from_utf8_lossy(&cmd).replace('\0', " ").trim_end())
            })
            .collect()
    }

    /// Removes the parent and everything below it. Processes still in it
    /// (only ever ones this test started, in its uniquely named parent)
    /// are killed first. Returns what was left to clean.
    pub fn remove(&self) -> Vec<String> {
        let mut left = Vec::new();
        let procs = self.procs();
        if !procs.is_empty() {
            left.push(format!("processes in {}: {procs:?}", self.name));
            for p in &procs {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p), nix::sys::signal::Signal::SIGKILL);
            }
            let _ = wait_for_opt(10, || self.procs().is_empty().then_some(()));
        }
        for d in self.dirs() {
            let mut all = Vec::new();
            walk(&d, &mut |dir| all.push(dir.to_path_buf()));
            // walk lists parents before children: remove in reverse.
            for dir in all.iter().rev() {
                if let Err(e) = remove_cgroup_dir(dir) {
                    left.push(format!("rmdir {}: {e}", dir.display()));
                }
            }
        }
        left
    }
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        let left = self.remove();
        if !left.is_empty() {
            eprintln!("berth-interop: cgroup cleanup: {left:?}");
        }
    }
}

/// A cgroup dir can be busy for a moment after its last process exited.
fn remove_cgroup_dir(dir: &Path) -> std::io::Result<()> {
    let mut last = Ok(());
    for _ in 0..50 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last = Err(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    last
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    f(dir);
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            walk(&e.path(), f);
        }
    }
}

/// Every cgroup hierarchy's mount point (v1 and v2), from mountinfo.
pub fn hierarchies() -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v = Vec::new();
    for l in info.lines() {
        let Some((pre, post)) = l.split_once(" - ") else { continue };
        let fstype = post.split(' ').next().unwrap_or("");
        if (fstype == "cgroup" || fstype == "cgroup2")
            && let Some(mp) = pre.split(' ').nth(4)
        {
            v.push(PathBuf::from(mp));
        }
    }
    v.sort();
    v.dedup();
    v
}

fn wait_for_opt<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
