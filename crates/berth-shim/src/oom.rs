//! Whether a run of the container met the kernel's OOM killer. The shim
//! reads the memory cgroup's OOM-kill counter before it creates the
//! container and again after the init has exited, before `runtime delete`
//! removes the cgroup and its counters with it: nobody can ask later.
//! A counter read twice (not an event watched) needs no fd held or polled
//! while the container runs, and counts a cgroup kept across runs
//! (`--no-delete`) only for this run.

use std::path::Path;

use berth_cgroups::{Cgroup, Layout};

/// The container's cgroup, as its bundle names it (config.json's
/// linux.cgroupsPath, resolved as the runtime resolves it: the runtime is
/// the shim's child, in the shim's cgroups).
pub(crate) struct OomCounter(Option<Cgroup>);

impl OomCounter {
    /// Never fails: without a readable cgroupsPath (or a host layout) no
    /// OOM kill can be told, and the container still runs.
    pub(crate) fn of_bundle(bundle: &Path) -> OomCounter {
        OomCounter(cgroup_of(bundle))
    }

    /// The cgroup's OOM kills so far; 0 while it does not exist (the
    /// runtime's `create` makes it).
    pub(crate) fn kills(&self) -> u64 {
        self.0.as_ref().and_then(berth_cgroups::oom::kill_count).unwrap_or(0)
    }
}

fn cgroup_of(bundle: &Path) -> Option<Cgroup> {
    let config = std::fs::read(bundle.join("config.json")).ok()?;
    let spec: serde_json::Value = serde_json::from_slice(&config).ok()?;
    let path = spec["linux"]["cgroupsPath"].as_str().filter(|p| !p.is_empty())?;
    let layout = Layout::detect().ok()?;
    Cgroup::resolve(&layout, Path::new(path)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_without_a_cgroups_path_counts_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(OomCounter::of_bundle(tmp.path()).kills(), 0, "no config.json");
        std::fs::write(tmp.path().join("config.json"), r#"{"linux":{}}"#).unwrap();
        assert!(OomCounter::of_bundle(tmp.path()).0.is_none());
        std::fs::write(tmp.path().join("config.json"), r#"{"linux":{"cgroupsPath":"/a/../../etc"}}"#).unwrap();
        assert!(OomCounter::of_bundle(tmp.path()).0.is_none(), "'..' is refused");
    }
}
