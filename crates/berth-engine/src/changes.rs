//! `diff` (docker's `changes`): what a container changed in its image's
//! filesystem, read from its overlay's upper directory as docker's overlay2
//! driver reads it: a whiteout (a 0:0 character device) is a deletion, an
//! entry that one of the image's layers has is a change, anything else an
//! addition.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::Error;
use crate::engine::Engine;

/// docker's change kinds, numbered as the API sends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Modified = 0,
    Added = 1,
    Deleted = 2,
}

impl ChangeKind {
    /// The letter `docker diff` prints.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Modified => 'C',
            ChangeKind::Added => 'A',
            ChangeKind::Deleted => 'D',
        }
    }
}

/// One changed path (absolute, as seen in the container).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: String,
    pub kind: ChangeKind,
}

impl Engine {
    /// Container `key`'s changes to its image, sorted by path. A container
    /// whose rootfs is gone (or was never made) has none.
    pub fn changes(&self, key: &str) -> Result<Vec<Change>, Error> {
        let rec = self.containers()?.get(key)?;
        let image = self.image(&rec.image_id)?;
        let store = self.store()?;
        let lowers: Vec<std::fs::File> = image
            .record
            .layers
            .iter()
            .filter_map(|l| std::fs::File::open(store.snapshots.fs_path(&l.chain_id)).ok())
            .collect();
        let upper = self.root.join("containers").join(&rec.id).join("upper");
        let mut out = Vec::new();
        let mut dirs = Vec::new();
        walk(&upper, Path::new("/"), &lowers, &mut out, &mut dirs).map_err(|e| Error::Io {
            what: "read",
            path: upper.clone(),
            source: e,
        })?;
        // An image's directory is in the upper layer once anything under it
        // was: it is a change when something under it still shows (not only
        // the runtime's mount points).
        let shown: std::collections::BTreeSet<String> = out.iter().map(|c| c.path.clone()).collect();
        let dirs: std::collections::HashSet<String> = dirs.into_iter().collect();
        out.retain(|c| {
            // Paths under D sort between "D/" and "D0" ('0' follows '/').
            !dirs.contains(&c.path) || shown.range(format!("{}/", c.path)..format!("{}0", c.path)).next().is_some()
        });
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
}

/// Collects the changes under `dir` (the upper directory at `rel`) into
/// `out`, and in `dirs` the image's directories among them.
fn walk(
    dir: &Path,
    rel: &Path,
    lowers: &[std::fs::File],
    out: &mut Vec<Change>,
    dirs: &mut Vec<String>,
) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let meta = entry.metadata()?; // not followed: DirEntry::metadata is lstat
        let path: PathBuf = rel.join(entry.file_name());
        let shown = path.to_string_lossy().into_owned();
        if meta.file_type().is_char_device() && meta.rdev() == 0 {
            out.push(Change { path: shown, kind: ChangeKind::Deleted });
            continue;
        }
        let kind = if lowers.iter().any(|l| in_layer(l, &path)) { ChangeKind::Modified } else { ChangeKind::Added };
        // The mount points the runtime made for the mounts every container
        // has (/etc/hosts over an image without one): docker keeps those in
        // a layer of its own under the container's, so they are no change.
        if kind == ChangeKind::Added && crate::ops::SYSTEM_MOUNTS.contains(&shown.as_str()) {
            continue;
        }
        if meta.is_dir() && kind == ChangeKind::Modified {
            dirs.push(shown.clone());
        }
        out.push(Change { path: shown, kind });
        if meta.is_dir() {
            walk(&entry.path(), &path, lowers, out, dirs)?;
        }
    }
    Ok(())
}

/// Whether a layer has `path`, looked up inside it with no symlink
/// followed: a layer's symlink must not send the lookup to the host.
fn in_layer(layer: &std::fs::File, path: &Path) -> bool {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let rel = path.strip_prefix("/").unwrap_or(path);
    rustix::fs::openat2(layer, rel, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty(), how).is_ok()
}
