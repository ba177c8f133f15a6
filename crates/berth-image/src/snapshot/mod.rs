//! Snapshots: one directory per unpacked layer, keyed by chain ID, under
//! `ROOT/snapshots/<hex>/fs`. A layer is unpacked into
//! `ROOT/snapshots/tmp/<random>/` and renamed into place only when whole
//! and verified, so a snapshot at its final path is always complete; a
//! per-chain-ID lock makes concurrent pulls unpack each layer once.
//!
//! [`diff`] turns an overlay upper directory back into a layer (builds).
//! [`overlay`] mounts a chain as a rootfs (berth needs overlayfs: there is
//! no copying fallback).

pub mod diff;
pub mod overlay;

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};

/// The chain IDs of a list of diff IDs (image spec: ChainID(L₀) = DiffID(L₀),
/// ChainID(L₀|…|Lₙ) = sha256(ChainID(L₀|…|Lₙ₋₁) + " " + DiffID(Lₙ))).
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[derive(Clone, Debug)]
pub struct Snapshots {
    dir: PathBuf,
}

impl Snapshots {
    pub fn open(dir: &Path) -> Result<Snapshots> {
        for d in [dir.to_path_buf(), dir.join("tmp"), dir.join("locks")] {
            fs::create_dir_all(&d).ctx(|| format!("create {}", d.display()))?;
        }
        Ok(Snapshots { dir: dir.to_path_buf() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The unpacked tree of a snapshot.
    pub fn fs_path(&self, chain_id: &Digest) -> PathBuf {
        self.dir.join(chain_id.hex()).join("fs")
    }

    pub fn exists(&self, chain_id: &Digest) -> bool {
        self.fs_path(chain_id).is_dir()
    }

    /// Every complete snapshot on disk.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir).ctx(|| format!("read {}", self.dir.display()))? {
            let e = e.ctx(|| format!("read {}", self.dir.display()))?;
            if let Some(n) = e.file_name().to_str()
                && let Ok(d) = Digest::from_hex(n)
            {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Starts a snapshot. Returns None when it already exists (possibly
    /// made by a concurrent pull we waited for).
    pub fn prepare(&self, chain_id: &Digest) -> Result<Option<Prepared>> {
        let lock_path = self.dir.join("locks").join(chain_id.hex());
        let lock = File::create(&lock_path).ctx(|| format!("create {}", lock_path.display()))?;
        rustix::fs::flock(&lock, FlockOperation::LockExclusive).ctx(|| format!("lock {}", lock_path.display()))?;
        if self.exists(chain_id) {
            return Ok(None);
        }
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{}-", chain_id.short()))
            // What a committed snapshot's directory has, whatever the umask.
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .tempdir_in(self.dir.join("tmp"))
            .ctx(|| format!("create a directory in {}", self.dir.join("tmp").display()))?
            .keep();
        fs::create_dir(tmp.join("fs")).ctx(|| format!("create {}", tmp.display()))?;
        // Held while the directory is in use, so cleanup can tell an
        // abandoned one (pull killed) from a live one.
        let tmp_lock = File::open(&tmp).ctx(|| format!("open {}", tmp.display()))?;
        rustix::fs::flock(&tmp_lock, FlockOperation::LockExclusive).ctx(|| format!("lock {}", tmp.display()))?;
        Ok(Some(Prepared { tmp, target: self.dir.join(chain_id.hex()), _lock: lock, _tmp_lock: tmp_lock, done: false }))
    }

    /// Removes a snapshot (no error if it is gone).
    pub fn remove(&self, chain_id: &Digest) -> Result<()> {
        let p = self.dir.join(chain_id.hex());
        // Rename first, so a half-removed snapshot is never taken for whole.
        let doomed = tempfile::Builder::new()
            .prefix(&format!("rm-{}-", chain_id.short()))
            .disable_cleanup(true)
            .make_in(self.dir.join("tmp"), |name| fs::rename(&p, name));
        match doomed {
            Ok(doomed) => remove_tree(doomed.path()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io { context: format!("remove snapshot {}", p.display()), source: e }),
        }
    }

    /// The unpacked size of a snapshot (its regular files' bytes, as the
    /// unpack counted them): from the `size` file its commit wrote, else
    /// (a snapshot made before there was one) counted on disk.
    pub fn size(&self, chain_id: &Digest) -> u64 {
        let dir = self.dir.join(chain_id.hex());
        match fs::read_to_string(dir.join(SIZE_FILE)).ok().and_then(|s| s.trim().parse().ok()) {
            Some(n) => n,
            None => tree_size(&dir.join("fs"), &mut std::collections::HashSet::new()),
        }
    }

    /// Removes the per-chain-ID lock files of snapshots that are not on
    /// disk (removed ones, and those of pulls that never finished). Only
    /// the garbage collector calls it, while no pull runs; a lock someone
    /// still holds is left all the same.
    pub fn clean_locks(&self) -> Result<usize> {
        let locks = self.dir.join("locks");
        let mut n = 0;
        for e in fs::read_dir(&locks).ctx(|| format!("read {}", locks.display()))? {
            let e = e.ctx(|| format!("read {}", locks.display()))?;
            let live = e.file_name().to_str().and_then(|n| Digest::from_hex(n).ok()).is_some_and(|d| self.exists(&d));
            if live {
                continue;
            }
            let Ok(f) = File::open(e.path()) else { continue };
            if rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive).is_ok() {
                fs::remove_file(e.path()).ctx(|| format!("remove {}", e.path().display()))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Removes temporary directories nobody holds (left by killed pulls).
    pub fn clean_tmp(&self) -> Result<usize> {
        let tmp = self.dir.join("tmp");
        let mut n = 0;
        for e in fs::read_dir(&tmp).ctx(|| format!("read {}", tmp.display()))? {
            let e = e.ctx(|| format!("read {}", tmp.display()))?;
            let Ok(f) = File::open(e.path()) else { continue };
            if rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive).is_ok() {
                remove_tree(&e.path())?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// The file beside a snapshot's `fs` that holds its unpacked size.
const SIZE_FILE: &str = "size";

/// Bytes of the regular files under `dir`, each inode once (hardlinks
/// were unpacked once).
fn tree_size(dir: &Path, seen: &mut std::collections::HashSet<(u64, u64)>) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    let mut n = 0;
    for e in entries.flatten() {
        let Ok(m) = e.metadata() else { continue };
        if m.is_dir() {
            n += tree_size(&e.path(), seen);
        } else if m.is_file() && seen.insert((m.dev(), m.ino())) {
            n += m.len();
        }
    }
    n
}

/// Removes a tree we made (snapshots hold device nodes, read-only dirs and
/// immutable-looking modes; root bypasses those).
pub fn remove_tree(p: &Path) -> Result<()> {
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io { context: format!("remove {}", p.display()), source: e }),
    }
}

/// A snapshot being unpacked. Dropped without `commit`, it is removed.
pub struct Prepared {
    tmp: PathBuf,
    target: PathBuf,
    _lock: File,
    _tmp_lock: File,
    done: bool,
}

impl Prepared {
    /// Where to unpack.
    pub fn fs_path(&self) -> PathBuf {
        self.tmp.join("fs")
    }

    /// Makes the snapshot visible, with its unpacked `size` recorded in it
    /// (so whoever finds the snapshot later, a pull that did not unpack it
    /// included, knows its size). With `durable`, its data reach the disk
    /// first (one syncfs), so even a power loss never leaves a partial
    /// snapshot at a final path.
    pub fn commit(mut self, size: u64, durable: bool) -> Result<()> {
        let size_file = self.tmp.join(SIZE_FILE);
        fs::write(&size_file, size.to_string()).ctx(|| format!("write {}", size_file.display()))?;
        if durable {
            let d = File::open(&self.tmp).ctx(|| format!("open {}", self.tmp.display()))?;
            rustix::fs::syncfs(&d).ctx(|| format!("syncfs {}", self.tmp.display()))?;
        }
        fs::rename(&self.tmp, &self.target)
            .ctx(|| format!("rename {} to {}", self.tmp.display(), self.target.display()))?;
        if let Some(parent) = self.target.parent() {
            File::open(parent).and_then(|d| d.sync_all()).ctx(|| format!("fsync {}", parent.display()))?;
        }
        self.done = true;
        Ok(())
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(c[1], Digest::of(format!("{a} {b}").as_bytes()));
    }
}
