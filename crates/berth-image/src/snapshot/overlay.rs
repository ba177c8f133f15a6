//! Overlay mounts of a snapshot chain.
//!
//! mount(2) takes its options in one page, which a long chain of absolute
//! lower paths overflows (~60 layers at /var/lib/berth/snapshots/<64 hex>/fs).
//! Then the new mount API is used instead, one `lowerdir+` per layer
//! (Linux 6.8+), so no option string grows with the chain.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags};

use crate::error::{Error, Result};

/// What goes on top of the read-only layers.
pub struct Upper<'a> {
    pub upper: &'a Path,
    pub work: &'a Path,
    /// overlayfs `volatile` (Linux 5.10+): no sync of the upper layer's
    /// filesystem, at umount above all (there it flushes the whole
    /// filesystem's journal, ~1 ms per container on this kind of host).
    /// For an upper that is thrown away with its container (`run --rm`,
    /// as podman does for them): after a crash the kernel refuses to mount
    /// it again, and nothing does. Ignored by a kernel without it.
    pub volatile: bool,
}

/// The most mount(2) takes as its data argument.
const MOUNT_DATA_MAX: usize = 4095;

fn merr(target: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Mount { target: target.to_path_buf(), reason: format!("{what}: {e}") }
}

/// Mounts `lowers` (topmost first) at `target`, with `upper` for a
/// writable rootfs or read-only without. One lower and no upper is a
/// read-only bind mount (overlay needs two layers to merge).
pub fn mount_overlay(lowers: &[PathBuf], upper: Option<Upper<'_>>, target: &Path) -> Result<()> {
    if lowers.is_empty() {
        return Err(merr(target, "overlay", "no layers"));
    }
    if lowers.len() == 1 && upper.is_none() {
        rustix::mount::mount_bind(&lowers[0], target).map_err(|e| merr(target, "bind", e))?;
        return rustix::mount::mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "")
            .map_err(|e| merr(target, "remount read-only", e));
    }
    let lowerdir: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    let mut data = format!("lowerdir={}", lowerdir.join(":"));
    if let Some(u) = &upper {
        data.push_str(&format!(",upperdir={},workdir={}", u.upper.display(), u.work.display()));
        if u.volatile {
            data.push_str(",volatile");
        }
    }
    let flags = if upper.is_none() { MountFlags::RDONLY } else { MountFlags::empty() };
    let mut all: Vec<&Path> = lowers.iter().map(PathBuf::as_path).collect();
    if let Some(u) = &upper {
        all.extend([u.upper, u.work]);
    }
    // mount(2)'s option string cannot carry these; the new API can.
    let plain = all.iter().all(|p| !p.as_os_str().as_bytes().iter().any(|b| *b == b':' || *b == b','));
    if plain && data.len() <= MOUNT_DATA_MAX {
        let c = std::ffi::CString::new(data.as_str()).map_err(|e| merr(target, "overlay options", e))?;
        return match rustix::mount::mount("overlay", target, "overlay", flags, c.as_c_str()) {
            // A kernel before 5.10 does not know `volatile`.
            Err(rustix::io::Errno::INVAL) if data.ends_with(",volatile") => {
                let c = std::ffi::CString::new(data.trim_end_matches(",volatile")).expect("no NUL");
                rustix::mount::mount("overlay", target, "overlay", flags, c.as_c_str())
            }
            other => other,
        }
        .map_err(|e| merr(target, "mount overlay", e));
    }
    mount_overlay_fsconfig(lowers, upper, target)
}

/// The new mount API: one `lowerdir+` per layer, no page limit.
pub fn mount_overlay_fsconfig(lowers: &[PathBuf], upper: Option<Upper<'_>>, target: &Path) -> Result<()> {
    let fs =
        rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| merr(target, "fsopen overlay", e))?;
    for l in lowers {
        rustix::mount::fsconfig_set_string(&fs, "lowerdir+", l)
            .map_err(|e| merr(target, &format!("lowerdir+ {} (needs Linux 6.8)", l.display()), e))?;
    }
    if let Some(u) = &upper {
        rustix::mount::fsconfig_set_string(&fs, "upperdir", u.upper).map_err(|e| merr(target, "upperdir", e))?;
        rustix::mount::fsconfig_set_string(&fs, "workdir", u.work).map_err(|e| merr(target, "workdir", e))?;
        if u.volatile {
            rustix::mount::fsconfig_set_flag(&fs, "volatile").map_err(|e| merr(target, "volatile", e))?;
        }
    }
    rustix::mount::fsconfig_create(&fs).map_err(|e| merr(target, "create overlay", e))?;
    let attrs = if upper.is_none() { MountAttrFlags::MOUNT_ATTR_RDONLY } else { MountAttrFlags::empty() };
    let mnt =
        rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs).map_err(|e| merr(target, "fsmount", e))?;
    rustix::mount::move_mount(&mnt, "", rustix::fs::CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .map_err(|e| merr(target, "move_mount", e))
}

/// Unmounts `target`.
pub fn unmount(target: &Path) -> Result<()> {
    rustix::mount::unmount(target, rustix::mount::UnmountFlags::empty()).map_err(|e| merr(target, "umount", e))
}
