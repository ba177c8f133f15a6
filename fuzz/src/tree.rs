//! A file tree's shape (names, types, sizes, modes, mtimes, link targets),
//! to show that an operation confined to one directory changed nothing
//! outside it.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What is known of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub mode: u32,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub nlink: u64,
    pub link: Option<PathBuf>,
}

/// Every entry under `root` (not following symlinks), except the subtree
/// at `skip`, keyed by path.
pub fn snapshot(root: &Path, skip: Option<&Path>) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    walk(root, skip, &mut out);
    out
}

fn walk(dir: &Path, skip: Option<&Path>, out: &mut BTreeMap<PathBuf, Entry>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if Some(p.as_path()) == skip {
            continue;
        }
        let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
        let link = if m.file_type().is_symlink() { std::fs::read_link(&p).ok() } else { None };
        out.insert(
            p.clone(),
            Entry {
                mode: m.mode(),
                size: if m.is_dir() { 0 } else { m.size() },
                mtime: (m.mtime(), m.mtime_nsec()),
                ctime: (m.ctime(), m.ctime_nsec()),
                nlink: if m.is_dir() { 0 } else { m.nlink() },
                link,
            },
        );
        if m.is_dir() {
            walk(&p, skip, out);
        }
    }
}
