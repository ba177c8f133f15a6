//! What cgroup hierarchies the host has mounted, and where this process sits
//! in each of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, io_err};

/// The three layouts in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutKind {
    /// Only v1 hierarchies.
    V1,
    /// Only the unified (cgroup2) hierarchy.
    V2,
    /// v1 hierarchies plus a cgroup2 mount (systemd's "hybrid" mode).
    Hybrid,
}

/// One mounted hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Where it is mounted, e.g. /sys/fs/cgroup/memory.
    pub mountpoint: PathBuf,
    /// The cgroup at the root of that mount (normally "/"; otherwise the
    /// mount shows only a subtree, as inside a container).
    pub mount_root: PathBuf,
    /// v1 controllers (including "name=systemd"-style named hierarchies);
    /// empty for the unified hierarchy.
    pub controllers: Vec<String>,
    /// This process's cgroup in this hierarchy, from /proc/self/cgroup.
    pub own_path: PathBuf,
}

impl Hierarchy {
    pub fn is_unified(&self) -> bool {
        self.controllers.is_empty()
    }

    /// The key runc uses for this hierarchy ("cpu,cpuacct", "name=systemd"),
    /// or "unified".
    pub fn key(&self) -> String {
        if self.is_unified() { "unified".to_string() } else { self.controllers.join(",") }
    }

    /// Filesystem path of the cgroup `cgroup` (absolute within the hierarchy).
    pub fn fs_path(&self, cgroup: &Path) -> PathBuf {
        let rel = cgroup.strip_prefix(&self.mount_root).unwrap_or(cgroup);
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        self.mountpoint.join(rel)
    }
}

/// The host's cgroup hierarchies.
#[derive(Debug, Clone)]
pub struct Layout {
    pub kind: LayoutKind,
    /// v1 hierarchies, in mountinfo order.
    pub v1: Vec<Hierarchy>,
    /// The cgroup2 hierarchy, if mounted.
    pub unified: Option<Hierarchy>,
}

impl Layout {
    /// Reads /proc/self/cgroup and finds each hierarchy it lists at its
    /// standard mount point (see [`Layout::from_standard_mounts`]), else
    /// reads /proc/self/mountinfo; then, in this process, only
    /// /proc/self/cgroup (a line per hierarchy) while it stays the same.
    /// mountinfo grows with every container's mounts (two thousand lines,
    /// ~200 reads, at a thousand containers) and every berth process (CLI,
    /// shim, runtime) asks for the layout once; a daemon asks per container
    /// create and per stats call. A hierarchy mounted or unmounted while
    /// the cgroup membership stays as it was is not seen until the process
    /// starts again.
    pub fn detect() -> Result<Layout> {
        use std::sync::Mutex;
        static SEEN: Mutex<Option<(String, Layout)>> = Mutex::new(None);
        let cgroup = read("/proc/self/cgroup")?;
        let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((text, layout)) = seen.as_ref()
            && *text == cgroup
        {
            return Ok(layout.clone());
        }
        let layout = match Layout::from_standard_mounts(Path::new(CGROUP_ROOT), &cgroup) {
            Some(layout) => layout,
            None => Layout::parse(&read("/proc/self/mountinfo")?, &cgroup)?,
        };
        *seen = Some((cgroup, layout.clone()));
        Ok(layout)
    }

    /// The layout from /proc/self/cgroup's text alone, each hierarchy it
    /// lists found where systemd mounts it under `root` (/sys/fs/cgroup):
    /// v1 ones at ROOT/CONTROLLERS ("cpu,cpuacct", "systemd" for
    /// name=systemd), the unified one at ROOT itself or ROOT/unified. Each
    /// is checked with statfs (a cgroup or cgroup2 file system) and statx
    /// (the root of a mount, a superblock of its own); the cost is a few
    /// calls per hierarchy however many mounts the host has. The result is
    /// what [`Layout::parse`] makes of mountinfo, in the same (mount)
    /// order. None, for mountinfo to decide, when any hierarchy is not
    /// there or its mount does not show this process's cgroup at the
    /// listed path (a subtree mounted, as in a container without a cgroup
    /// namespace; the mount root is only in mountinfo).
    pub fn from_standard_mounts(root: &Path, proc_cgroup: &str) -> Option<Layout> {
        use nix::sys::statfs::{CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC};
        let mut v1 = Vec::new();
        let mut unified = None;
        for line in proc_cgroup.lines() {
            let mut parts = line.splitn(3, ':');
            let (_id, ctrls, own) = (parts.next()?, parts.next()?, parts.next()?);
            let own_path = PathBuf::from(own);
            if ctrls.is_empty() {
                let (mount, dir) = [root.to_path_buf(), root.join("unified")]
                    .into_iter()
                    .find_map(|d| cgroup_mount(&d, CGROUP2_SUPER_MAGIC).map(|m| (m, d)))?;
                unified = Some((mount, Self::hierarchy(dir, Vec::new(), own_path)?));
                continue;
            }
            let dir = root.join(ctrls.strip_prefix("name=").unwrap_or(ctrls));
            let mount = cgroup_mount(&dir, CGROUP_SUPER_MAGIC)?;
            let mut controllers: Vec<String> = ctrls.split(',').map(str::to_string).collect();
            controllers.sort();
            v1.push((mount, Self::hierarchy(dir, controllers, own_path)?));
        }
        // Each hierarchy is a superblock of its own: two lines found at one
        // mount mean the names did not say what is mounted.
        let mut devs: Vec<_> = v1.iter().chain(unified.iter()).map(|(m, _)| m.dev).collect();
        devs.sort_unstable();
        devs.dedup();
        if devs.len() != v1.len() + usize::from(unified.is_some()) {
            return None;
        }
        // Mount order, as mountinfo lists them.
        v1.sort_by_key(|(m, _)| m.id);
        let kind = match (v1.is_empty(), unified.is_some()) {
            (true, true) => LayoutKind::V2,
            (false, false) => LayoutKind::V1,
            (false, true) => LayoutKind::Hybrid,
            (true, false) => return None,
        };
        Some(Layout { kind, v1: v1.into_iter().map(|(_, h)| h).collect(), unified: unified.map(|(_, h)| h) })
    }

    /// A hierarchy mounted whole at `mountpoint`, if this process's cgroup
    /// is there.
    fn hierarchy(mountpoint: PathBuf, controllers: Vec<String>, own_path: PathBuf) -> Option<Hierarchy> {
        let own = mountpoint.join(own_path.strip_prefix("/").unwrap_or(&own_path));
        if !own.is_dir() {
            return None;
        }
        Some(Hierarchy { mountpoint, mount_root: "/".into(), controllers, own_path })
    }

    /// Builds the layout from the text of mountinfo and /proc/self/cgroup.
    pub fn parse(mountinfo: &str, proc_cgroup: &str) -> Result<Layout> {
        let own = parse_proc_cgroup(proc_cgroup);
        let mut v1: Vec<Hierarchy> = Vec::new();
        let mut unified: Option<Hierarchy> = None;
        for line in mountinfo.lines() {
            let Some(m) = MountLine::parse(line) else { continue };
            match m.fstype {
                "cgroup2" if unified.is_none() => {
                    unified = Some(Hierarchy {
                        mountpoint: m.mountpoint.into(),
                        mount_root: m.root.into(),
                        controllers: Vec::new(),
                        own_path: own.get("").cloned().unwrap_or_else(|| "/".into()),
                    });
                }
                "cgroup" => {
                    let controllers = v1_controllers(m.super_options);
                    if controllers.is_empty() || v1.iter().any(|h| h.controllers == controllers) {
                        continue;
                    }
                    let own_path = own.get(&controllers.join(",")).cloned().unwrap_or_else(|| "/".into());
                    v1.push(Hierarchy {
                        mountpoint: m.mountpoint.into(),
                        mount_root: m.root.into(),
                        controllers,
                        own_path,
                    });
                }
                _ => {}
            }
        }
        let kind = match (v1.is_empty(), unified.is_some()) {
            (true, true) => LayoutKind::V2,
            (false, false) => LayoutKind::V1,
            (false, true) => LayoutKind::Hybrid,
            (true, false) => return Err(Error::NoHierarchy),
        };
        Ok(Layout { kind, v1, unified })
    }

    /// Every hierarchy a container's cgroup lives in: all v1 hierarchies and
    /// the unified one.
    pub fn hierarchies(&self) -> impl Iterator<Item = &Hierarchy> {
        self.v1.iter().chain(self.unified.iter())
    }

    /// The v1 hierarchy holding `controller`, if any.
    pub fn v1_hierarchy(&self, controller: &str) -> Option<&Hierarchy> {
        self.v1.iter().find(|h| h.controllers.iter().any(|c| c == controller))
    }
}

/// Where systemd (and every distribution) mounts the cgroup file systems.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A mount found by [`cgroup_mount`]: its id (the unique one where the
/// kernel has it, which grows in mount order) and its device.
struct MountStat {
    id: u64,
    dev: (u32, u32),
}

/// `dir` when it is the root of a mount of a file system with `magic`
/// (not a symlink to one, not a directory inside one).
fn cgroup_mount(dir: &Path, magic: nix::sys::statfs::FsType) -> Option<MountStat> {
    use std::os::unix::ffi::OsStrExt;
    if nix::sys::statfs::statfs(dir).ok()?.filesystem_type() != magic {
        return None;
    }
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    let mask = libc::STATX_MNT_ID | libc::STATX_MNT_ID_UNIQUE;
    // SAFETY: `path` is NUL-terminated and outlives the call; `stx` is a
    // statx buffer the kernel fills (zeroed first, so it is initialised
    // whatever the kernel writes).
    let rc = unsafe { libc::statx(libc::AT_FDCWD, path.as_ptr(), libc::AT_SYMLINK_NOFOLLOW, mask, stx.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: zero-initialised above and filled by a successful statx.
    let stx = unsafe { stx.assume_init() };
    let mount_root = libc::STATX_ATTR_MOUNT_ROOT as u64;
    if stx.stx_attributes_mask & mount_root == 0 || stx.stx_attributes & mount_root == 0 {
        return None;
    }
    if stx.stx_mask & (libc::STATX_MNT_ID | libc::STATX_MNT_ID_UNIQUE) == 0 {
        return None;
    }
    Some(MountStat { id: stx.stx_mnt_id, dev: (stx.stx_dev_major, stx.stx_dev_minor) })
}

fn read(path: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(io_err("read", path))
}

/// The controllers of a v1 mount, from its super options
/// ("rw,cpu,cpuacct" -> ["cpu", "cpuacct"], "rw,name=systemd" -> ["name=systemd"]).
fn v1_controllers(super_options: &str) -> Vec<String> {
    const NOT_CONTROLLERS: &[&str] = &["rw", "ro", "relatime", "noatime", "nosuid", "nodev", "noexec", "xattr"];
    let mut out: Vec<String> = super_options
        .split(',')
        .filter(|o| !NOT_CONTROLLERS.contains(o))
        .filter(|o| {
            !o.starts_with("release_agent=") && !o.contains("clone_children") && !o.starts_with("cpuset_v2_mode")
        })
        .filter(|o| !o.contains('=') || o.starts_with("name="))
        .map(str::to_string)
        .collect();
    // /proc/self/cgroup lists a hierarchy's controllers in the kernel's
    // order, which is alphabetical for the built-in ones.
    out.sort();
    out
}

/// /proc/self/cgroup as a map from the controller list ("" for v2) to path.
fn parse_proc_cgroup(text: &str) -> BTreeMap<String, PathBuf> {
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let mut ctrls: Vec<&str> = ctrls.split(',').filter(|c| !c.is_empty()).collect();
        ctrls.sort();
        map.insert(ctrls.join(","), PathBuf::from(path));
    }
    map
}

/// The fields of a mountinfo line this crate needs.
struct MountLine<'a> {
    root: &'a str,
    mountpoint: &'a str,
    fstype: &'a str,
    super_options: &'a str,
}

impl<'a> MountLine<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        // id parent maj:min root mountpoint options [optional...] - fstype source super
        let (pre, post) = line.split_once(" - ")?;
        let mut pre = pre.split(' ');
        let root = pre.nth(3)?;
        let mountpoint = pre.next()?;
        let mut post = post.split(' ');
        let fstype = post.next()?;
        let _source = post.next()?;
        let super_options = post.next().unwrap_or("");
        Some(MountLine { root, mountpoint, fstype, super_options })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
33 24 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
34 33 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 33 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 33 0:31 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,release_agent=/x,name=systemd
37 33 0:32 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
38 33 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpuacct,cpu
";
    const HYBRID_CGROUP: &str = "\
9:name=systemd:/
4:memory:/session/abc
1:cpu,cpuacct:/
0::/
";

    #[test]
    fn hybrid_layout_is_detected_with_own_paths() {
        let l = Layout::parse(HYBRID_MOUNTINFO, HYBRID_CGROUP).unwrap();
        assert_eq!(l.kind, LayoutKind::Hybrid);
        let keys: Vec<String> = l.v1.iter().map(Hierarchy::key).collect();
        assert_eq!(keys, ["cpu", "memory", "name=systemd", "cpu,cpuacct"]);
        assert_eq!(l.v1_hierarchy("memory").unwrap().own_path, PathBuf::from("/session/abc"));
        assert_eq!(l.v1_hierarchy("cpuacct").unwrap().mountpoint, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(l.unified.as_ref().unwrap().mountpoint, PathBuf::from("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn pure_v2_layout() {
        let mi = "30 24 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let l = Layout::parse(mi, "0::/user.slice\n").unwrap();
        assert_eq!(l.kind, LayoutKind::V2);
        assert_eq!(l.unified.unwrap().own_path, PathBuf::from("/user.slice"));
    }

    fn same_layout(a: &Layout, b: &Layout) {
        assert_eq!(a.kind, b.kind);
        assert_eq!(a.v1, b.v1);
        assert_eq!(a.unified, b.unified);
    }

    #[test]
    fn the_standard_mounts_give_the_layout_mountinfo_gives() {
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let from_mountinfo = Layout::parse(&mountinfo, &cgroup).unwrap();
        let fast = Layout::from_standard_mounts(Path::new("/sys/fs/cgroup"), &cgroup)
            .expect("this host's hierarchies are at /sys/fs/cgroup/NAME");
        same_layout(&fast, &from_mountinfo);
        same_layout(&Layout::detect().unwrap(), &from_mountinfo);
    }

    #[test]
    fn hierarchies_not_at_the_standard_mounts_are_left_to_mountinfo() {
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        // Not a cgroup file system.
        let dir = tempfile::tempdir().unwrap();
        assert!(Layout::from_standard_mounts(dir.path(), &cgroup).is_none());
        let root = Path::new("/sys/fs/cgroup");
        // Pure v2 (the v2 guest): no v1 hierarchy to place elsewhere.
        let Some(some_v1) = cgroup.lines().find(|l| !l.contains("::")).map(str::to_owned) else { return };
        let (id, rest) = some_v1.split_once(':').unwrap();
        let ctrls = rest.split_once(':').unwrap().0;
        // A cgroup the mount does not show (a subtree mounted: the mount
        // root is only in mountinfo).
        let elsewhere = format!("{id}:{ctrls}:/berth-no-such-cgroup-{}\n", std::process::id());
        assert!(Layout::from_standard_mounts(root, &elsewhere).is_none());
        // Two hierarchies named at one mount.
        let twice = format!("{some_v1}\n99:{ctrls}:/\n");
        assert!(Layout::from_standard_mounts(root, &twice).is_none());
        // A hierarchy named where nothing is mounted.
        assert!(Layout::from_standard_mounts(root, "3:berth_no_such_controller:/\n").is_none());
    }

    #[test]
    fn no_cgroups_is_an_error() {
        assert!(matches!(Layout::parse("", ""), Err(Error::NoHierarchy)));
    }

    #[test]
    fn fs_path_strips_the_mount_root() {
        let h = Hierarchy {
            mountpoint: "/sys/fs/cgroup/memory".into(),
            mount_root: "/ctr".into(),
            controllers: vec!["memory".into()],
            own_path: "/ctr".into(),
        };
        assert_eq!(h.fs_path(Path::new("/ctr/a/b")), PathBuf::from("/sys/fs/cgroup/memory/a/b"));
        assert_eq!(h.fs_path(Path::new("/other")), PathBuf::from("/sys/fs/cgroup/memory/other"));
    }
}
