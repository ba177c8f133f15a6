//! config.json's mounts, in order, each on a target resolved inside the
//! rootfs.

use std::os::fd::AsFd;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use berth_cgroups::{Cgroup, Layout, LayoutKind};
use nix::errno::Errno;
use nix::mount::{MsFlags, mount};
use oci_spec::runtime::Mount;
use pathrs::Handle;
use pathrs::flags::OpenFlags;

use super::mount_opts::MountOpts;
use super::rootfs::{Rootfs, bind, remount_keeping_locked};
use crate::error::{Context, Error, Result};
use crate::sys::{self, fd_path};

/// What the mounts need to know about the container beyond the mount list.
pub struct MountEnv<'a> {
    pub rootfs: &'a Rootfs,
    pub in_userns: bool,
    pub new_cgroupns: bool,
    pub layout: Option<&'a Layout>,
    pub cgroup: Option<&'a Cgroup>,
    /// linux.mountLabel: the SELinux context of the filesystems mounted fresh.
    pub mount_label: Option<&'a str>,
    /// Idmapped trees the runtime made, by mount index (see launch::idmap).
    pub idmapped: &'a std::collections::HashMap<usize, std::os::fd::OwnedFd>,
}

/// Mounts every entry of config.json's `mounts`, in order.
pub fn mount_all(env: &MountEnv<'_>, mounts: &[Mount]) -> Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        mount_one(env, i, m).map_err(|e| with_mount_context(m, e))?;
    }
    Ok(())
}

fn with_mount_context(m: &Mount, e: Error) -> Error {
    let what = m.typ().clone().unwrap_or_else(|| "bind".into());
    let src = m.source().as_ref().map(|s| s.display().to_string()).unwrap_or_else(|| what.clone());
    match e {
        Error::Os { step, source } => {
            Error::os(format!("mount {what} '{src}' on '{}': {step}", m.destination().display()), source)
        }
        Error::Path { step, source } => {
            Error::Path { step: format!("mount {what} '{src}' on '{}': {step}", m.destination().display()), source }
        }
        other => other,
    }
}

fn mount_one(env: &MountEnv<'_>, index: usize, m: &Mount) -> Result<()> {
    let opts = MountOpts::parse(m.options().as_deref().unwrap_or_default());
    let dest = m.destination();
    let typ = m.typ().as_deref().unwrap_or("");
    if opts.is_bind() || typ == "bind" {
        let source = m.source().as_deref().ok_or_else(|| Error::Container("bind mount without a source".into()))?;
        return mount_bind(env.rootfs, source, dest, &opts, env.idmapped.get(&index));
    }
    match typ {
        "cgroup" | "cgroup2" => mount_cgroup(env, dest, &opts),
        _ => mount_fs(env, m, &opts),
    }
}

/// A bind mount: the target is a directory or file to match the source,
/// then flags are applied by remounting the new mount (a bind ignores
/// them on the first call).
fn mount_bind(
    rootfs: &Rootfs,
    source: &Path,
    dest: &Path,
    opts: &MountOpts,
    idmapped: Option<&std::os::fd::OwnedFd>,
) -> Result<()> {
    let meta = std::fs::metadata(source).step(|| "stat source")?;
    let target = if meta.is_dir() { rootfs.mkdir(dest)? } else { rootfs.mkfile(dest)? };
    check_not_over_proc(&target, dest)?;
    match idmapped {
        Some(tree) => sys::move_mount_to(tree.as_fd(), target.as_fd()).step(|| "attach the idmapped mount")?,
        None => bind(source, &target, opts.is_recursive_bind()).step(|| "bind")?,
    }
    finish(rootfs, dest, opts, true)
}

/// After a mount: flags that need a remount, propagation, recursive attributes.
fn finish(rootfs: &Rootfs, dest: &Path, opts: &MountOpts, is_bind: bool) -> Result<()> {
    if !opts.remount_flags().is_empty() && is_bind {
        // Resolve again: the old handle names the directory under the new mount.
        let mounted = rootfs.resolve(dest)?;
        remount_keeping_locked(&fd_path(&mounted), opts.remount_flags()).step(|| "remount with the mount's flags")?;
    }
    if opts.propagation.is_empty() && opts.rec_set == 0 && opts.rec_clear == 0 {
        return Ok(());
    }
    let mounted = rootfs.resolve(dest)?;
    for p in &opts.propagation {
        mount(None::<&str>, &fd_path(&mounted), None::<&str>, *p, None::<&str>).step(|| "set propagation")?;
    }
    if opts.rec_set != 0 || opts.rec_clear != 0 {
        sys::mount_setattr_recursive(mounted.as_fd(), opts.rec_set, opts.rec_clear).map_err(|e| match e {
            Errno::ENOSYS => Error::os("recursive mount options need mount_setattr (Linux 5.12 or later)", e),
            e => Error::os("mount_setattr (recursive options)", e),
        })?;
    }
    Ok(())
}

/// proc, sysfs, tmpfs, devpts, mqueue and any other filesystem.
fn mount_fs(env: &MountEnv<'_>, m: &Mount, opts: &MountOpts) -> Result<()> {
    let dest = m.destination();
    let typ = m.typ().as_deref().unwrap_or("none");
    // proc and sysfs over a symlinked target could land somewhere an LSM
    // does not expect (CVE-2019-16884, CVE-2023-27561): no symlinks at all.
    let target = if typ == "proc" || typ == "sysfs" {
        // runc's words: tools match on them.
        let why = || format!("filesystem {typ:?} must be mounted on ordinary directory");
        let t = env.rootfs.mkdir_no_symlinks(dest, why)?;
        check_plain_directory(&t, dest, why)?;
        t
    } else {
        env.rootfs.mkdir(dest)?
    };
    check_not_over_proc(&target, dest)?;
    // tmpcopyup: keep a handle on what the tmpfs is about to cover.
    let covered = if opts.tmpcopyup { Some(target.reopen(OpenFlags::O_DIRECTORY | OpenFlags::O_RDONLY)) } else { None };
    let source = m.source().as_ref().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| typ.to_string());
    let mut data = opts.data();
    if let (Some(label), "tmpfs" | "devpts" | "mqueue") = (env.mount_label, typ) {
        let context = format!("context=\"{label}\"");
        data = Some(data.map_or(context.clone(), |d| format!("{d},{context}")));
    }
    let flags = opts.flags & !MsFlags::MS_REMOUNT;
    match mount(Some(source.as_str()), &fd_path(&target), Some(typ), flags, data.as_deref()) {
        Ok(()) => {}
        // Without its own network namespace (or as an unprivileged user
        // namespace) sysfs cannot be mounted fresh; bind the host's, as runc does.
        Err(Errno::EPERM) if typ == "sysfs" => {
            bind(Path::new("/sys"), &target, true).step(|| "bind /sys (sysfs mount not permitted)")?;
            return finish(env.rootfs, dest, &MountOpts { flags: opts.flags | MsFlags::MS_BIND, ..opts.clone() }, true);
        }
        Err(Errno::EPERM) if typ == "mqueue" && env.in_userns => {
            bind(Path::new("/dev/mqueue"), &target, false).step(|| "bind /dev/mqueue (mqueue mount not permitted)")?;
            return finish(env.rootfs, dest, &MountOpts { flags: opts.flags | MsFlags::MS_BIND, ..opts.clone() }, true);
        }
        Err(e) => return Err(Error::os("mount", e)),
    }
    if let Some(covered) = covered {
        let covered = covered.step(|| "open the directory under the tmpfs")?;
        let fresh = env.rootfs.resolve(dest)?;
        copy_tree(&fd_path(&covered), &fd_path(&fresh)).step(|| "copy up into the tmpfs (tmpcopyup)")?;
    }
    finish(env.rootfs, dest, opts, false)
}

/// proc and sysfs may only go on a real directory: mounting them over a
/// symlink or a file would let the container redirect them (CVE-2019-16884).
fn check_plain_directory(target: &Handle, dest: &Path, why: impl FnOnce() -> String) -> Result<()> {
    let st = nix::sys::stat::fstat(target.as_fd()).step(|| format!("stat '{}'", dest.display()))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(Error::Container(format!("mount on '{}': {}", dest.display(), why())));
    }
    Ok(())
}

/// Files of /proc a mount may cover: what lxcfs and similar tools replace
/// (runc's list). Anything else of procfs stays the kernel's, so a mount
/// cannot hide, say, /proc/self/attr from an LSM.
const PROC_ALLOWED: &[&str] = &[
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
];

/// Refuses a mount whose target (wherever symlinks led) is inside procfs,
/// unless it is one of PROC_ALLOWED.
fn check_not_over_proc(target: &Handle, dest: &Path) -> Result<()> {
    use nix::sys::statfs::{PROC_SUPER_MAGIC, fstatfs};
    let fs = fstatfs(target.as_fd()).step(|| format!("statfs '{}'", dest.display()))?;
    if fs.filesystem_type() == PROC_SUPER_MAGIC && !PROC_ALLOWED.iter().any(|p| Path::new(p) == dest) {
        return Err(Error::Container(format!(
            "'{}' is inside /proc: only /proc itself and {} may be mounted there",
            dest.display(),
            PROC_ALLOWED.join(", ")
        )));
    }
    Ok(())
}

/// The cgroup filesystem at `dest`. Without a cgroup namespace the
/// container sees only its own cgroup, bound from the host (as runc does);
/// with one, the hierarchies are mounted fresh and the kernel shows the
/// namespace's root.
fn mount_cgroup(env: &MountEnv<'_>, dest: &Path, opts: &MountOpts) -> Result<()> {
    let Some(layout) = env.layout else {
        tracing::warn!("no cgroup hierarchy on this host; skipping the cgroup mount on {}", dest.display());
        return Ok(());
    };
    let target = env.rootfs.mkdir(dest)?;
    if layout.kind == LayoutKind::V2 {
        let h = layout.unified.as_ref().expect("a v2 layout has a unified hierarchy");
        if env.new_cgroupns {
            match mount(Some("cgroup2"), &fd_path(&target), Some("cgroup2"), opts.flags, None::<&str>) {
                Ok(()) => return finish(env.rootfs, dest, opts, false),
                // A user namespace that does not own the cgroup hierarchy's
                // delegation (rootless, no cgroup of its own) may not mount
                // cgroup2: bind the cgroup the container is in instead, as
                // runc does (its #2158).
                Err(e @ (Errno::EPERM | Errno::EBUSY)) => {
                    tracing::debug!("mount cgroup2 on '{}': {e}; binding the container's cgroup", dest.display())
                }
                Err(e) => return Err(e).step(|| "mount cgroup2"),
            }
        }
        let src = own_dir(env.cgroup, &h.key()).unwrap_or_else(|| h.fs_path(&h.own_path));
        bind(&src, &target, false).step(|| "bind the container's cgroup")?;
        return finish(env.rootfs, dest, &with_bind(opts), true);
    }
    // v1 and hybrid: a tmpfs holding one directory per v1 hierarchy (the
    // hybrid's cgroup2 part is left out, as runc does).
    let tmpfs_flags = (opts.flags & !MsFlags::MS_RDONLY) | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("tmpfs"), &fd_path(&target), Some("tmpfs"), tmpfs_flags, Some("mode=755"))
        .step(|| "mount tmpfs for cgroup hierarchies")?;
    for h in &layout.v1 {
        let name = h.mountpoint.file_name().map(PathBuf::from).unwrap_or_else(|| h.key().into());
        let sub = dest.join(&name);
        let sub_target = env.rootfs.mkdir(&sub)?;
        if env.new_cgroupns {
            mount(
                Some("cgroup"),
                &fd_path(&sub_target),
                Some("cgroup"),
                opts.flags,
                Some(h.controllers.join(",").as_str()),
            )
            .step(|| format!("mount cgroup {} on '{}'", h.key(), sub.display()))?;
        } else {
            let src = own_dir(env.cgroup, &h.key()).unwrap_or_else(|| h.fs_path(&h.own_path));
            bind(&src, &sub_target, false).step(|| format!("bind '{}' on '{}'", src.display(), sub.display()))?;
            finish(env.rootfs, &sub, &with_bind(opts), true)?;
        }
        // A combined hierarchy ("cpu,cpuacct") is also reachable by each
        // controller's name, as on the host.
        for c in h.controllers.iter().filter(|c| !c.starts_with("name=")) {
            if Path::new(c) != name {
                let link = env.rootfs.resolve(dest)?;
                let _ = symlink(&name, fd_path(&link).join(c));
            }
        }
    }
    if opts.flags.contains(MsFlags::MS_RDONLY) {
        let mounted = env.rootfs.resolve(dest)?;
        remount_keeping_locked(&fd_path(&mounted), tmpfs_flags | MsFlags::MS_RDONLY)
            .step(|| "remount the cgroup tmpfs read-only")?;
    }
    Ok(())
}

fn own_dir(cgroup: Option<&Cgroup>, key: &str) -> Option<PathBuf> {
    cgroup.and_then(|c| c.dirs.get(key)).cloned()
}

fn with_bind(opts: &MountOpts) -> MountOpts {
    MountOpts { flags: opts.flags | MsFlags::MS_BIND, ..opts.clone() }
}

/// Copies a directory tree (files, directories, symlinks; modes and
/// owners), for tmpcopyup.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(from)?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(meta.permissions().mode()))?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let ft = entry.file_type()?;
        let meta = entry.metadata()?;
        if ft.is_dir() {
            std::fs::create_dir(&dst)?;
            copy_tree(&src, &dst)?;
        } else if ft.is_symlink() {
            symlink(std::fs::read_link(&src)?, &dst)?;
        } else if ft.is_file() {
            std::fs::copy(&src, &dst)?;
        } else {
            continue;
        }
        use std::os::unix::fs::MetadataExt;
        std::os::unix::fs::lchown(&dst, Some(meta.uid()), Some(meta.gid()))?;
    }
    Ok(())
}
