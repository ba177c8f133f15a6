//! One container's cgroup, in every hierarchy of the host's layout.

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, io_err};
use crate::layout::{Hierarchy, Layout};

/// The key of the unified hierarchy in [`Cgroup::dirs`].
pub const UNIFIED: &str = "unified";

/// A container's cgroup: one directory per hierarchy.
///
/// Serializable so the runtime can keep it in the container's state and act
/// on it from a later invocation without detecting the layout again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    /// Hierarchy key ("memory", "cpu,cpuacct", "name=systemd", "unified")
    /// to the cgroup's directory in that hierarchy.
    pub dirs: BTreeMap<String, PathBuf>,
}

/// The state of a cgroup's freezer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezerState {
    Thawed,
    Frozen,
    /// No freezer is available (v1 without the freezer controller).
    Unsupported,
}

impl Cgroup {
    /// Where `cgroups_path` lands in every hierarchy. An absolute path is
    /// taken from each hierarchy's root; a relative one from this process's
    /// own cgroup in that hierarchy, as runc does.
    pub fn resolve(layout: &Layout, cgroups_path: &Path) -> Result<Cgroup> {
        let raw = cgroups_path.to_string_lossy();
        if cgroups_path.components().any(|c| c == Component::ParentDir) {
            return Err(Error::InvalidPath(raw.into_owned(), "'..' is not allowed"));
        }
        if cgroups_path.as_os_str().is_empty() || cgroups_path == Path::new("/") {
            return Err(Error::InvalidPath(raw.into_owned(), "a container cannot use a root cgroup"));
        }
        let dirs = layout.hierarchies().map(|h| (h.key(), h.fs_path(&absolute_in(h, cgroups_path)))).collect();
        Ok(Cgroup { dirs })
    }

    /// Creates the cgroup's directories (joining any that already exist).
    pub fn create(&self) -> Result<()> {
        for (key, dir) in &self.dirs {
            mkdir_all(dir)?;
            if key == UNIFIED {
                enable_v2_controllers(dir);
            }
            if key.split(',').any(|c| c == "cpuset") {
                init_cpuset(dir)?;
            }
        }
        Ok(())
    }

    /// Moves process `pid` (and its threads) into the cgroup.
    pub fn add_pid(&self, pid: i32) -> Result<()> {
        for dir in self.dirs.values() {
            let path = dir.join("cgroup.procs");
            std::fs::write(&path, pid.to_string()).map_err(io_err("write", path))?;
        }
        Ok(())
    }

    /// The directory of one hierarchy (by key, e.g. "memory" or "unified";
    /// a controller name also finds a combined v1 hierarchy like "cpu,cpuacct").
    pub fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(k, _)| k.as_str() == controller || k.split(',').any(|c| c == controller))
            .map(|(_, d)| d.as_path())
    }

    /// True when only the unified hierarchy is in use.
    pub fn is_v2_only(&self) -> bool {
        self.dirs.len() == 1 && self.dirs.contains_key(UNIFIED)
    }

    /// The directory whose process list is authoritative: the freezer's on
    /// v1 (what pause and kill --all act on), else the first hierarchy.
    fn procs_dir(&self) -> Option<&Path> {
        if self.is_v2_only() {
            return self.dir(UNIFIED);
        }
        self.dir("freezer")
            .or_else(|| self.dir("pids"))
            .or_else(|| self.dirs.iter().find(|(k, _)| k.as_str() != UNIFIED).map(|(_, d)| d.as_path()))
    }

    /// Every process in the cgroup and its descendants.
    pub fn pids(&self) -> Result<Vec<i32>> {
        let Some(dir) = self.procs_dir() else { return Ok(Vec::new()) };
        let mut out = BTreeSet::new();
        collect_pids(dir, &mut out)?;
        Ok(out.into_iter().collect())
    }

    /// Sends `signal` to every process in the cgroup. On v1 the cgroup is
    /// frozen while the list is read and signalled, so no process can fork
    /// away from the signal.
    pub fn signal_all(&self, signal: Signal) -> Result<()> {
        if signal == Signal::SIGKILL && self.try_cgroup_kill()? {
            return Ok(());
        }
        let was = self.freezer_state()?;
        if was == FreezerState::Thawed {
            self.freeze()?;
        }
        let result = self.pids().map(|pids| {
            for pid in pids {
                // ESRCH: it exited meanwhile, which is what we wanted.
                let _ = kill(Pid::from_raw(pid), signal);
            }
        });
        if was == FreezerState::Thawed || signal == Signal::SIGKILL {
            // A killed process only dies once thawed.
            self.thaw()?;
        }
        result
    }

    /// v2's cgroup.kill kills the whole subtree atomically (kernel 5.14+).
    fn try_cgroup_kill(&self) -> Result<bool> {
        if !self.is_v2_only() {
            return Ok(false);
        }
        let Some(dir) = self.dir(UNIFIED) else { return Ok(false) };
        let path = dir.join("cgroup.kill");
        match std::fs::write(&path, "1") {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("write", path)(e)),
        }
    }

    /// The freezer's current state.
    pub fn freezer_state(&self) -> Result<FreezerState> {
        if let Some(dir) = self.dir("freezer") {
            let path = dir.join("freezer.state");
            return match std::fs::read_to_string(&path) {
                Ok(s) if s.trim() == "THAWED" => Ok(FreezerState::Thawed),
                Ok(_) => Ok(FreezerState::Frozen),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(FreezerState::Thawed),
                Err(e) => Err(io_err("read", path)(e)),
            };
        }
        if self.is_v2_only() {
            let dir = self.dir(UNIFIED).unwrap_or(Path::new("/"));
            let path = dir.join("cgroup.freeze");
            return match std::fs::read_to_string(&path) {
                Ok(s) if s.trim() == "1" => Ok(FreezerState::Frozen),
                Ok(_) => Ok(FreezerState::Thawed),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(FreezerState::Thawed),
                Err(e) => Err(io_err("read", path)(e)),
            };
        }
        Ok(FreezerState::Unsupported)
    }

    /// Freezes every process in the cgroup and waits until they are frozen.
    pub fn freeze(&self) -> Result<()> {
        self.set_frozen(true)
    }

    /// Thaws the cgroup.
    pub fn thaw(&self) -> Result<()> {
        self.set_frozen(false)
    }

    fn set_frozen(&self, frozen: bool) -> Result<()> {
        if let Some(dir) = self.dir("freezer") {
            let path = dir.join("freezer.state");
            let want = if frozen { "FROZEN" } else { "THAWED" };
            return write_and_wait(&path, want, &path, want);
        }
        if self.is_v2_only() {
            let dir = self.dir(UNIFIED).unwrap_or(Path::new("/"));
            let want = if frozen { "1" } else { "0" };
            let events = dir.join("cgroup.events");
            return write_and_wait(&dir.join("cgroup.freeze"), want, &events, &format!("frozen {want}"));
        }
        Ok(())
    }

    /// Removes the (now empty) parent directories the runtime made for
    /// this cgroup, up to `levels` levels; a parent still in use stays.
    pub fn remove_empty_parents(&self, levels: usize) {
        for dir in self.dirs.values() {
            for parent in dir.ancestors().skip(1).take(levels) {
                if std::fs::remove_dir(parent).is_err() {
                    break;
                }
            }
        }
    }

    /// True if any of the cgroup's directories still exists.
    pub fn exists(&self) -> bool {
        self.dirs.values().any(|d| d.exists())
    }

    /// Kills whatever is still running in the cgroup, then removes its
    /// directories (and any sub-cgroups the container made). Directories that
    /// are already gone are fine.
    pub fn destroy(&self) -> Result<()> {
        // Usually the container is gone and its cgroup empty: one rmdir per
        // hierarchy. Only a cgroup that refuses gets the slow path.
        let busy: Vec<&PathBuf> = self.dirs.values().filter(|d| !try_rmdir(d)).collect();
        if busy.is_empty() {
            return Ok(());
        }
        self.kill_stragglers()?;
        for dir in busy {
            remove_tree(dir)?;
        }
        Ok(())
    }

    fn kill_stragglers(&self) -> Result<()> {
        let start = Instant::now();
        let mut backoff = Duration::from_millis(1);
        loop {
            let pids = match self.pids() {
                Ok(p) => p,
                Err(Error::Io { source, .. }) if source.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            if pids.is_empty() {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(10) {
                let path = self.procs_dir().unwrap_or(Path::new("/")).to_path_buf();
                return Err(Error::Busy { path, waited_ms: start.elapsed().as_millis() as u64 });
            }
            self.signal_all(Signal::SIGKILL)?;
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(100));
        }
    }
}

/// `cgroups_path` as an absolute cgroup path within hierarchy `h`.
fn absolute_in(h: &Hierarchy, cgroups_path: &Path) -> PathBuf {
    if cgroups_path.is_absolute() { cgroups_path.to_path_buf() } else { h.own_path.join(cgroups_path) }
}

/// mkdir -p, retried when a concurrent delete removed an empty parent
/// between our creating it and creating the child under it.
fn mkdir_all(dir: &Path) -> Result<()> {
    let mut tries = 0;
    loop {
        match std::fs::create_dir_all(dir) {
            Err(e) if e.kind() == ErrorKind::NotFound && tries < 5 => tries += 1,
            r => return r.map_err(io_err("mkdir", dir)),
        }
    }
}

/// v2 hands a controller to a cgroup only if every ancestor enables it in
/// cgroup.subtree_control. Enable what is available on each ancestor below
/// the hierarchy's root, top down (the root's own setting belongs to the
/// host and is left alone). An ancestor that holds processes cannot enable
/// controllers ("no internal processes"); the container then simply lacks
/// them, and a limit that needs one is refused when applied.
fn enable_v2_controllers(dir: &Path) {
    let mut chain: Vec<&Path> = dir
        .ancestors()
        .skip(1)
        .take_while(|p| p.parent().is_some_and(|pp| pp.join("cgroup.controllers").exists()))
        .collect();
    chain.reverse();
    for ancestor in chain {
        let available = std::fs::read_to_string(ancestor.join("cgroup.controllers")).unwrap_or_default();
        // Written even when subtree_control already lists them all: another
        // container's runtime may have just enabled them, and the kernel
        // shows them in subtree_control before it has made their files in
        // the children. The write takes the cgroup mutex, so it returns
        // only once that work is done (already enabled ones are a no-op);
        // a leaf without memory.max was seen on the v2 guest without it.
        let all: Vec<String> = available.split_whitespace().map(|c| format!("+{c}")).collect();
        if all.is_empty() {
            continue;
        }
        if let Err(e) = std::fs::write(ancestor.join("cgroup.subtree_control"), all.join(" ")) {
            tracing::warn!("enable {} in {}: {e}", all.join(" "), ancestor.display());
        }
    }
}

/// A new v1 cpuset cgroup starts with empty cpus and mems, and no task can
/// join it until they are set. Fill every empty level from its parent, top
/// down, as runc does (cgroup.clone_children is off by default).
///
/// A level above the leaf that had to be filled is one some runtime made
/// to hold containers: it gets cgroup.clone_children, so the kernel fills
/// the cgroups made in it later at their mkdir. That saves each new
/// container a write of cpuset.cpus, which the kernel checks against every
/// sibling (validate_change): a cost that grew with the number running.
fn init_cpuset(dir: &Path) -> Result<()> {
    let mut levels: Vec<&Path> = dir.ancestors().take_while(|p| p.join("cpuset.cpus").exists()).collect();
    levels.reverse();
    for pair in levels.windows(2) {
        let (parent, child) = (pair[0], pair[1]);
        let mut filled = false;
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let cur = std::fs::read_to_string(child.join(file)).map_err(io_err("read", child.join(file)))?;
            if cur.trim().is_empty() {
                let from = std::fs::read_to_string(parent.join(file)).map_err(io_err("read", parent.join(file)))?;
                std::fs::write(child.join(file), from.trim()).map_err(io_err("write", child.join(file)))?;
                filled = true;
            }
        }
        if filled && child != dir {
            // Only an optimisation: without it each child is filled as above.
            let _ = std::fs::write(child.join("cgroup.clone_children"), "1");
        }
    }
    Ok(())
}

fn collect_pids(dir: &Path, out: &mut BTreeSet<i32>) -> Result<()> {
    let procs = dir.join("cgroup.procs");
    let text = std::fs::read_to_string(&procs).map_err(io_err("read", &procs))?;
    out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    for sub in subdirs(dir)? {
        collect_pids(&sub, out)?;
    }
    Ok(())
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("read dir", dir)(e)),
    };
    Ok(rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect())
}

/// rmdir that counts "already gone" as done.
fn try_rmdir(dir: &Path) -> bool {
    match std::fs::remove_dir(dir) {
        Ok(()) => true,
        Err(e) => e.kind() == ErrorKind::NotFound,
    }
}

/// Removes a cgroup directory and its sub-cgroups, deepest first. cgroupfs
/// directories are removed with rmdir even though they hold control files.
fn remove_tree(dir: &Path) -> Result<()> {
    for sub in subdirs(dir)? {
        remove_tree(&sub)?;
    }
    let mut backoff = Duration::from_millis(1);
    for _ in 0..12 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            // EBUSY: the last task is still leaving; give it a moment.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(200));
            }
            Err(e) => return Err(io_err("rmdir", dir)(e)),
        }
    }
    std::fs::remove_dir(dir).map_err(io_err("rmdir", dir))
}

/// Writes `value` to `file`, then polls `check` until it contains `expect`.
fn write_and_wait(file: &Path, value: &str, check: &Path, expect: &str) -> Result<()> {
    std::fs::write(file, value).map_err(io_err("write", file))?;
    let mut backoff = Duration::from_micros(100);
    for _ in 0..200 {
        let now = std::fs::read_to_string(check).map_err(io_err("read", check))?;
        if now.lines().any(|l| l.trim() == expect) {
            return Ok(());
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_millis(10));
        // v1's freezer can stall in FREEZING; writing again retries it.
        let _ = std::fs::write(file, value);
    }
    Err(Error::FreezeTimeout { path: file.to_path_buf() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_layout(root: &Path) -> Layout {
        let mi = format!(
            "1 0 0:1 / {r}/memory rw - cgroup cgroup rw,memory\n\
             2 0 0:2 / {r}/cpuset rw - cgroup cgroup rw,cpuset\n\
             3 0 0:3 / {r}/unified rw - cgroup2 cgroup2 rw\n",
            r = root.display()
        );
        Layout::parse(&mi, "4:memory:/session\n3:cpuset:/\n0::/\n").unwrap()
    }

    #[test]
    fn relative_paths_nest_under_own_cgroup_and_absolute_ones_do_not() {
        let l = fake_layout(Path::new("/cg"));
        let rel = Cgroup::resolve(&l, Path::new("berth/c1")).unwrap();
        assert_eq!(rel.dirs["memory"], PathBuf::from("/cg/memory/session/berth/c1"));
        assert_eq!(rel.dirs["cpuset"], PathBuf::from("/cg/cpuset/berth/c1"));
        let abs = Cgroup::resolve(&l, Path::new("/berth/c1")).unwrap();
        assert_eq!(abs.dirs["memory"], PathBuf::from("/cg/memory/berth/c1"));
        assert_eq!(abs.dirs["unified"], PathBuf::from("/cg/unified/berth/c1"));
    }

    #[test]
    fn parent_components_and_root_are_refused() {
        let l = fake_layout(Path::new("/cg"));
        assert!(Cgroup::resolve(&l, Path::new("/a/../../etc")).is_err());
        assert!(Cgroup::resolve(&l, Path::new("/")).is_err());
    }

    #[test]
    fn cpuset_levels_are_filled_from_their_parent() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("cpuset");
        let leaf = root.join("a/b");
        std::fs::create_dir_all(&leaf).unwrap();
        for (dir, cpus) in [(&root, "0-1"), (&root.join("a"), ""), (&leaf, "")] {
            std::fs::write(dir.join("cpuset.cpus"), cpus).unwrap();
            std::fs::write(dir.join("cpuset.mems"), if cpus.is_empty() { "" } else { "0" }).unwrap();
        }
        init_cpuset(&leaf).unwrap();
        assert_eq!(std::fs::read_to_string(leaf.join("cpuset.cpus")).unwrap(), "0-1");
        assert_eq!(std::fs::read_to_string(leaf.join("cpuset.mems")).unwrap(), "0");
        let clone_children = |d: &Path| std::fs::read_to_string(d.join("cgroup.clone_children")).ok();
        assert_eq!(clone_children(&root.join("a")).as_deref(), Some("1"), "the level made to hold containers");
        assert_eq!(clone_children(&root), None, "a level that was filled already is not ours to change");
        assert_eq!(clone_children(&leaf), None, "nor the container's own");
    }

    #[test]
    fn pids_include_sub_cgroups() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("cgroup.procs"), "10\n12\n").unwrap();
        std::fs::write(dir.join("sub/cgroup.procs"), "11\n").unwrap();
        let cg = Cgroup { dirs: [("pids".to_string(), dir)].into() };
        assert_eq!(cg.pids().unwrap(), vec![10, 11, 12]);
    }
}
