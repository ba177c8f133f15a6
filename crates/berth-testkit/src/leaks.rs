//! What a container can leave behind on the host. A runtime that leaks is a
//! broken runtime: tests assert all of these come back empty.

use std::path::{Path, PathBuf};

/// Host mounts whose mount point or source mentions `needle`.
pub fn mounts_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// cgroup directories named `name` anywhere under /sys/fs/cgroup (to a depth
/// that covers nested session cgroups).
pub fn cgroup_dirs_named(name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), name, 7, &mut out);
    out
}

fn walk(dir: &Path, name: &str, depth: usize, out: &mut Vec<PathBuf>) {
    if depth == 0 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let p = e.path();
        if e.file_name() == name {
            out.push(p.clone());
        }
        walk(&p, name, depth - 1, out);
    }
}

/// Pids of processes whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else { return out };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        // A zombie has an empty cmdline and is gone once reaped.
        if cmd.contains(marker) {
            out.push(pid);
        }
    }
    out
}

/// Asserts that nothing of container `id` (run from `bundle`) is left.
pub fn assert_none(id: &str, bundle: &Path, state_root: &Path, marker: Option<&str>) {
    let mounts = mounts_mentioning(&bundle.display().to_string());
    assert!(mounts.is_empty(), "mounts left on the host: {mounts:#?}");
    let cgroups = cgroup_dirs_named(id);
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    assert!(!state_root.join(id).exists(), "state dir left: {}", state_root.join(id).display());
    if let Some(m) = marker {
        let procs = processes_with(m);
        assert!(procs.is_empty(), "processes left: {procs:?}");
    }
}
