//! The content store: blobs by digest under `ROOT/content/sha256/<hex>`.
//!
//! A blob is only ever written through an [`Ingest`]: bytes go to
//! `ingest/<hex>.partial`, hashed and counted as they arrive; `commit`
//! checks digest and size, fsyncs, and renames into place (then fsyncs the
//! directory), so a blob at its final path is always whole and correct, and
//! a crash leaves at most a partial file, which the next attempt resumes.
//! A mismatch deletes the partial file and is never stored.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::digest::{Digest, Hasher};
use crate::error::{Error, IoContext, Result};

#[derive(Clone, Debug)]
pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    /// Opens (creating if needed) the store under `root` (ROOT/content).
    pub fn open(root: &Path) -> Result<ContentStore> {
        for d in [root.join("sha256"), root.join("ingest")] {
            fs::create_dir_all(&d).ctx(|| format!("create {}", d.display()))?;
        }
        Ok(ContentStore { root: root.to_path_buf() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob lives (whether or not it is there yet).
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.root.join("sha256").join(d.hex())
    }

    fn partial_path(&self, d: &Digest) -> PathBuf {
        self.root.join("ingest").join(format!("{}.partial", d.hex()))
    }

    /// The size of the blob, if stored.
    pub fn size(&self, d: &Digest) -> Option<u64> {
        fs::metadata(self.path(d)).ok().map(|m| m.len())
    }

    pub fn contains(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    /// Opens a stored blob for reading.
    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        let p = self.path(d);
        File::open(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(format!("blob {d}"))
            } else {
                Error::Io { context: format!("open {}", p.display()), source: e }
            }
        })
    }

    /// Reads a (small) blob whole, checking its digest again: manifests and
    /// configs are read back often and must never be trusted blindly.
    pub fn read(&self, d: &Digest) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        self.open_blob(d)?.read_to_end(&mut data).ctx(|| format!("read blob {d}"))?;
        let actual = Digest::of(&data);
        if &actual != d {
            return Err(Error::DigestMismatch { expected: d.clone(), actual });
        }
        Ok(data)
    }

    /// Stores `data`, which must have digest `expected` if given. Returns its digest.
    pub fn write_bytes(&self, expected: Option<&Digest>, data: &[u8]) -> Result<Digest> {
        let d = match expected {
            Some(d) => d.clone(),
            None => Digest::of(data),
        };
        if self.contains(&d) {
            // Checked like everything else: a caller's wrong digest must still fail.
            let actual = Digest::of(data);
            if actual != d {
                return Err(Error::DigestMismatch { expected: d, actual });
            }
            return Ok(d);
        }
        let mut w = self.ingest(&d, Some(data.len() as u64))?;
        if w.offset() > 0 {
            w.restart()?;
        }
        w.write_all(data)?;
        w.commit()?;
        Ok(d)
    }

    /// Stores the finished file `tmp` (in this store's `ingest/`, so on
    /// the same filesystem) as the blob `digest`, which its writer computed
    /// while writing it: renamed into place, not copied.
    pub fn adopt(&self, tmp: tempfile::NamedTempFile, digest: &Digest) -> Result<()> {
        if self.contains(digest) {
            return Ok(());
        }
        let f = tmp.as_file();
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .ctx(|| format!("chmod {}", tmp.path().display()))?;
        f.sync_all().ctx(|| format!("fsync {}", tmp.path().display()))?;
        let blob = self.path(digest);
        tmp.persist(&blob)
            .map_err(|e| Error::Io { context: format!("rename to {}", blob.display()), source: e.error })?;
        let dir = self.root.join("sha256");
        File::open(&dir).and_then(|d| d.sync_all()).ctx(|| format!("fsync {}", dir.display()))
    }

    /// Starts (or resumes) writing the blob `expected`. Blocks while another
    /// writer (thread or process) holds the same blob; when it returns, the
    /// blob may have been completed meanwhile: check [`Ingest::is_done`].
    pub fn ingest(&self, expected: &Digest, size: Option<u64>) -> Result<Ingest> {
        let path = self.partial_path(expected);
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .ctx(|| format!("open {}", path.display()))?;
            rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
                .ctx(|| format!("lock {}", path.display()))?;
            // The holder we waited for may have committed (renamed the file
            // away) or given up (deleted it): start over on the current file.
            let same = match (file.metadata(), fs::metadata(&path)) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            };
            if !same {
                if self.contains(expected) {
                    return Ok(Ingest::done(self, expected, path));
                }
                continue;
            }
            if self.contains(expected) {
                let _ = fs::remove_file(&path);
                return Ok(Ingest::done(self, expected, path));
            }
            return Ingest::resume(self, expected, size, file, path);
        }
    }

    /// Every stored blob.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let dir = self.root.join("sha256");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).ctx(|| format!("read {}", dir.display()))? {
            let e = e.ctx(|| format!("read {}", dir.display()))?;
            if let Some(name) = e.file_name().to_str()
                && let Ok(d) = Digest::from_hex(name)
            {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes a blob (no error if it is already gone).
    pub fn delete(&self, d: &Digest) -> Result<()> {
        match fs::remove_file(self.path(d)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io { context: format!("remove blob {d}"), source: e }),
        }
    }

    /// Partial downloads nobody is writing (for GC).
    pub fn stale_partials(&self) -> Result<Vec<PathBuf>> {
        let dir = self.root.join("ingest");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).ctx(|| format!("read {}", dir.display()))? {
            let e = e.ctx(|| format!("read {}", dir.display()))?;
            let Ok(f) = File::open(e.path()) else { continue };
            if rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok() {
                out.push(e.path());
            }
        }
        Ok(out)
    }
}

/// One blob being written. Dropping it without `commit` keeps the partial
/// file for a later resume.
pub struct Ingest {
    expected: Digest,
    size: Option<u64>,
    file: Option<File>,
    hasher: Hasher,
    partial: PathBuf,
    blob: PathBuf,
    dir: PathBuf,
}

impl Ingest {
    fn done(store: &ContentStore, expected: &Digest, partial: PathBuf) -> Ingest {
        Ingest {
            expected: expected.clone(),
            size: None,
            file: None,
            hasher: Hasher::new(),
            partial,
            blob: store.path(expected),
            dir: store.root.join("sha256"),
        }
    }

    fn resume(
        store: &ContentStore,
        expected: &Digest,
        size: Option<u64>,
        mut file: File,
        partial: PathBuf,
    ) -> Result<Ingest> {
        // Re-hash what is already there: the hash state is not on disk, and
        // a partial file is only as trustworthy as its bytes.
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; 1 << 16];
        file.seek(SeekFrom::Start(0)).ctx(|| format!("seek {}", partial.display()))?;
        loop {
            let n = file.read(&mut buf).ctx(|| format!("read {}", partial.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let mut ing = Ingest {
            expected: expected.clone(),
            size,
            file: Some(file),
            hasher,
            partial,
            blob: store.path(expected),
            dir: store.root.join("sha256"),
        };
        if size.is_some_and(|s| ing.hasher.len() > s) {
            ing.restart()?;
        }
        Ok(ing)
    }

    /// True when the blob was already stored (nothing to write).
    pub fn is_done(&self) -> bool {
        self.file.is_none()
    }

    /// How many bytes are already written (where a resumed download starts).
    pub fn offset(&self) -> u64 {
        self.hasher.len()
    }

    pub fn digest(&self) -> &Digest {
        &self.expected
    }

    /// Throws away what was written (e.g. the server ignored a Range request).
    pub fn restart(&mut self) -> Result<()> {
        if let Some(f) = &mut self.file {
            f.set_len(0).ctx(|| format!("truncate {}", self.partial.display()))?;
            f.seek(SeekFrom::Start(0)).ctx(|| format!("seek {}", self.partial.display()))?;
        }
        self.hasher = Hasher::new();
        Ok(())
    }

    /// Appends bytes. Fails early once more bytes arrive than expected.
    pub fn write_all(&mut self, data: &[u8]) -> Result<()> {
        let Some(f) = &mut self.file else { return Ok(()) };
        if let Some(s) = self.size
            && self.hasher.len() + data.len() as u64 > s
        {
            let got = self.hasher.len() + data.len() as u64;
            self.discard();
            return Err(Error::SizeMismatch { digest: self.expected.clone(), expected: s, actual: got });
        }
        f.seek(SeekFrom::End(0)).ctx(|| format!("seek {}", self.partial.display()))?;
        f.write_all(data).ctx(|| format!("write {}", self.partial.display()))?;
        self.hasher.update(data);
        Ok(())
    }

    fn discard(&mut self) {
        let _ = fs::remove_file(&self.partial);
        self.file = None;
    }

    /// Verifies size and digest, then makes the blob durable and visible.
    pub fn commit(mut self) -> Result<()> {
        let Some(f) = self.file.take() else { return Ok(()) };
        let len = self.hasher.len();
        if let Some(s) = self.size
            && s != len
        {
            let _ = fs::remove_file(&self.partial);
            return Err(Error::SizeMismatch { digest: self.expected.clone(), expected: s, actual: len });
        }
        let actual = std::mem::take(&mut self.hasher).finish();
        if actual != self.expected {
            let _ = fs::remove_file(&self.partial);
            return Err(Error::DigestMismatch { expected: self.expected.clone(), actual });
        }
        f.sync_all().ctx(|| format!("fsync {}", self.partial.display()))?;
        fs::rename(&self.partial, &self.blob)
            .ctx(|| format!("rename {} to {}", self.partial.display(), self.blob.display()))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).ctx(|| format!("fsync {}", self.dir.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_verified_blobs_and_refuses_mismatches() {
        let tmp = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(tmp.path()).unwrap();
        let d = cs.write_bytes(None, b"hello").unwrap();
        assert_eq!(cs.read(&d).unwrap(), b"hello");
        assert_eq!(cs.size(&d), Some(5));

        let wrong = Digest::of(b"other");
        let e = cs.write_bytes(Some(&wrong), b"hello").unwrap_err();
        assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
        assert!(e.to_string().contains(&wrong.to_string()));
        assert!(!cs.contains(&wrong));
        assert!(fs::read_dir(tmp.path().join("ingest")).unwrap().next().is_none(), "partial left");
    }

    #[test]
    fn size_mismatch_is_never_stored() {
        let tmp = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(tmp.path()).unwrap();
        let d = Digest::of(b"abc");
        let mut w = cs.ingest(&d, Some(2)).unwrap();
        assert!(matches!(w.write_all(b"abc"), Err(Error::SizeMismatch { .. })));
        assert!(!cs.contains(&d));
    }

    #[test]
    fn interrupted_ingest_resumes_where_it_stopped() {
        let tmp = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(tmp.path()).unwrap();
        let data = b"0123456789abcdef".repeat(1000);
        let d = Digest::of(&data);
        let mut w = cs.ingest(&d, Some(data.len() as u64)).unwrap();
        w.write_all(&data[..7000]).unwrap();
        drop(w); // interrupted
        let mut w = cs.ingest(&d, Some(data.len() as u64)).unwrap();
        assert_eq!(w.offset(), 7000);
        w.write_all(&data[7000..]).unwrap();
        w.commit().unwrap();
        assert_eq!(cs.read(&d).unwrap(), data);
        assert_eq!(cs.list().unwrap(), vec![d]);
    }

    #[test]
    fn concurrent_writers_of_one_blob_share_the_work() {
        let tmp = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(tmp.path()).unwrap();
        let data = vec![7u8; 100_000];
        let d = Digest::of(&data);
        let w1 = cs.ingest(&d, None).unwrap();
        let (cs2, d2) = (cs.clone(), d.clone());
        let t = std::thread::spawn(move || cs2.ingest(&d2, None).unwrap().is_done());
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut w1 = w1;
        w1.write_all(&data).unwrap();
        w1.commit().unwrap();
        assert!(t.join().unwrap(), "second writer should find the blob done");
    }
}
