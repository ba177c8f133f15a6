//! Overlay mounts of a snapshot chain (berth-fs's [`Overlay`], with this
//! crate's errors).

use std::path::{Path, PathBuf};

use berth_fs::overlay::Overlay;

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

fn merr(target: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Mount { target: target.to_path_buf(), reason: format!("{what}: {e}") }
}

/// The berth-fs overlay these make.
fn overlay(lowers: &[PathBuf], upper: Option<Upper<'_>>) -> Overlay {
    Overlay {
        lower: lowers.to_vec(),
        upper: upper.as_ref().map(|u| u.upper.to_path_buf()),
        work: upper.as_ref().map(|u| u.work.to_path_buf()),
        volatile: upper.is_some_and(|u| u.volatile),
    }
}

/// Mounts `lowers` (topmost first) at `target`, with `upper` for a
/// writable rootfs or read-only without. One lower and no upper is a
/// read-only bind mount (overlay needs two layers to merge).
pub fn mount_overlay(lowers: &[PathBuf], upper: Option<Upper<'_>>, target: &Path) -> Result<()> {
    overlay(lowers, upper).mount(target).map_err(|e| merr(target, &e.what, e.source))
}

/// Unmounts `target`.
pub fn unmount(target: &Path) -> Result<()> {
    rustix::mount::unmount(target, rustix::mount::UnmountFlags::empty()).map_err(|e| merr(target, "umount", e))
}
