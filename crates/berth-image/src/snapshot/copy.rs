//! The copying fallback: a chain of snapshots merged into one directory
//! as overlay would show it (whiteouts remove, opaque directories hide what
//! is below), for hosts without overlayfs.
//!
//! The target is built from the root down and every directory on the way
//! is made a real directory before it is entered, so a symlink from one
//! layer never redirects what a later layer writes.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use rustix::fs::{AtFlags, Mode, Timespec, Timestamps};

use crate::error::{IoContext, Result};

/// Copies `layers` (bottom first) into the empty directory `target`.
pub fn copy_chain(layers: &[&Path], target: &Path) -> Result<()> {
    for layer in layers {
        let mut links = HashMap::new();
        merge_dir(layer, target, &mut links)?;
        copy_meta(layer, target)?;
    }
    Ok(())
}

fn is_opaque(p: &Path) -> bool {
    let mut buf = [0u8; 4];
    matches!(rustix::fs::lgetxattr(p, "trusted.overlay.opaque", &mut buf), Ok(1) if buf[0] == b'y')
}

fn merge_dir(src: &Path, dst: &Path, links: &mut HashMap<(u64, u64), std::path::PathBuf>) -> Result<()> {
    for e in fs::read_dir(src).ctx(|| format!("read {}", src.display()))? {
        let e = e.ctx(|| format!("read {}", src.display()))?;
        let s = e.path();
        let d = dst.join(e.file_name());
        let m = fs::symlink_metadata(&s).ctx(|| format!("stat {}", s.display()))?;
        let existing = fs::symlink_metadata(&d).ok();
        let ft = m.file_type();
        // A whiteout: what is below is gone.
        if ft.is_char_device() && m.rdev() == 0 {
            remove_any(&d, existing.as_ref())?;
            continue;
        }
        if ft.is_dir() {
            let keep = existing.as_ref().is_some_and(|x| x.file_type().is_dir()) && !is_opaque(&s);
            if !keep {
                remove_any(&d, existing.as_ref())?;
                fs::create_dir(&d).ctx(|| format!("mkdir {}", d.display()))?;
            }
            merge_dir(&s, &d, links)?;
            copy_meta(&s, &d)?;
            continue;
        }
        remove_any(&d, existing.as_ref())?;
        if m.nlink() > 1
            && let Some(first) = links.get(&(m.dev(), m.ino()))
        {
            fs::hard_link(first, &d).ctx(|| format!("link {}", d.display()))?;
            continue;
        }
        if ft.is_symlink() {
            let t = fs::read_link(&s).ctx(|| format!("readlink {}", s.display()))?;
            std::os::unix::fs::symlink(&t, &d).ctx(|| format!("symlink {}", d.display()))?;
        } else if ft.is_file() {
            fs::copy(&s, &d).ctx(|| format!("copy {}", s.display()))?;
        } else {
            let kind = if ft.is_char_device() {
                rustix::fs::FileType::CharacterDevice
            } else if ft.is_block_device() {
                rustix::fs::FileType::BlockDevice
            } else if ft.is_fifo() {
                rustix::fs::FileType::Fifo
            } else {
                continue; // sockets are not image content
            };
            rustix::fs::mknodat(rustix::fs::CWD, &d, kind, Mode::from_raw_mode(m.mode() & 0o7777), m.rdev())
                .ctx(|| format!("mknod {}", d.display()))?;
        }
        copy_meta(&s, &d)?;
        if m.nlink() > 1 {
            links.insert((m.dev(), m.ino()), d.clone());
        }
    }
    Ok(())
}

fn remove_any(p: &Path, m: Option<&fs::Metadata>) -> Result<()> {
    match m {
        None => Ok(()),
        Some(m) if m.file_type().is_dir() => fs::remove_dir_all(p).ctx(|| format!("remove {}", p.display())),
        Some(_) => fs::remove_file(p).ctx(|| format!("remove {}", p.display())),
    }
}

/// Owner, mode, mtime and the xattrs that matter (file capabilities,
/// SELinux labels, user xattrs), never following a symlink.
fn copy_meta(src: &Path, dst: &Path) -> Result<()> {
    let m = fs::symlink_metadata(src).ctx(|| format!("stat {}", src.display()))?;
    rustix::fs::chownat(
        rustix::fs::CWD,
        dst,
        Some(rustix::fs::Uid::from_raw_unchecked(m.uid())),
        Some(rustix::fs::Gid::from_raw_unchecked(m.gid())),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .ctx(|| format!("chown {}", dst.display()))?;
    if !m.file_type().is_symlink() {
        fs::set_permissions(dst, std::os::unix::fs::PermissionsExt::from_mode(m.mode() & 0o7777))
            .ctx(|| format!("chmod {}", dst.display()))?;
        let mut names = vec![0u8; 4096];
        if let Ok(n) = rustix::fs::llistxattr(src, &mut names) {
            for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
                let Ok(name) = std::str::from_utf8(name) else { continue };
                if name.starts_with("trusted.") {
                    continue;
                }
                let mut val = vec![0u8; 65536];
                if let Ok(len) = rustix::fs::lgetxattr(src, name, &mut val) {
                    let _ = rustix::fs::lsetxattr(dst, name, &val[..len], rustix::fs::XattrFlags::empty());
                }
            }
        }
    }
    let t = |s: i64, ns: i64| Timespec { tv_sec: s, tv_nsec: ns as _ };
    let times =
        Timestamps { last_access: t(m.atime(), m.atime_nsec()), last_modification: t(m.mtime(), m.mtime_nsec()) };
    rustix::fs::utimensat(rustix::fs::CWD, dst, &times, AtFlags::SYMLINK_NOFOLLOW)
        .ctx(|| format!("set times of {}", dst.display()))?;
    Ok(())
}
