//! Blobs by digest: ROOT/blobs/sha256/<hex>. A blob is written to
//! ROOT/ingest/<hex>.partial while its digest and size are checked, then
//! fsync'd and renamed into place: a blob in blobs/ is always whole and
//! always what its name says. A download cut short (a kill, a dropped
//! connection) leaves its partial file, and the next ingest of the same
//! digest resumes from its end (the registry client asks for a Range).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::Digest as _;

use crate::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("blob {expected} failed verification: its content hashes to {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {digest} is {actual} bytes, not the {expected} its descriptor says")]
    SizeMismatch { digest: Digest, expected: u64, actual: u64 },
    #[error("blob {0} not found")]
    NotFound(Digest),
    #[error("{what} {}: {source}", path.display())]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
}

fn io<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> ContentError + 'p {
    move |source| ContentError::Io { what, path: path.to_owned(), source }
}

pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    pub fn open(root: impl Into<PathBuf>) -> Result<ContentStore, ContentError> {
        let root = root.into();
        for d in [root.join("blobs/sha256"), root.join("ingest")] {
            std::fs::create_dir_all(&d).map_err(io("create", &d))?;
        }
        Ok(ContentStore { root })
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File, ContentError> {
        let p = self.path(digest);
        File::open(&p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ContentError::NotFound(digest.clone()),
            _ => io("open", &p)(e),
        })
    }

    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, ContentError> {
        let mut v = Vec::new();
        let p = self.path(digest);
        self.open_blob(digest)?.read_to_end(&mut v).map_err(io("read", &p))?;
        Ok(v)
    }

    /// Starts (or resumes) writing the blob `digest` of `size` bytes.
    /// The writer's [`Ingest::offset`] says how much is already there.
    pub fn ingest(&self, digest: &Digest, size: u64) -> Result<Ingest<'_>, ContentError> {
        let partial = self.root.join("ingest").join(format!("{}.partial", digest.hex()));
        let mut file =
            OpenOptions::new().create(true).read(true).append(true).open(&partial).map_err(io("open", &partial))?;
        // The hash of what is already there, so the digest covers it all.
        let mut hasher = sha2::Sha256::new();
        let mut offset = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut buf).map_err(io("read", &partial))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        if offset > size {
            // More than the blob can hold: start over.
            file.set_len(0).map_err(io("truncate", &partial))?;
            hasher = sha2::Sha256::new();
            offset = 0;
        }
        Ok(Ingest { store: self, digest: digest.clone(), size, partial, file, hasher, offset })
    }

    /// Drops what an interrupted ingest of `digest` left.
    pub fn discard_ingest(&self, digest: &Digest) {
        let _ = std::fs::remove_file(self.root.join("ingest").join(format!("{}.partial", digest.hex())));
    }

    /// Writes a whole blob from `data` (verified like any other).
    pub fn put(&self, digest: &Digest, size: u64, data: impl Read) -> Result<(), ContentError> {
        if self.contains(digest) {
            return Ok(());
        }
        let mut w = self.ingest(digest, size)?;
        w.copy_from(data)?;
        w.commit()
    }

    /// Blobs present, for the garbage collector.
    pub fn list(&self) -> Result<Vec<Digest>, ContentError> {
        let dir = self.root.join("blobs/sha256");
        let mut v: Vec<Digest> = std::fs::read_dir(&dir)
            .map_err(io("read", &dir))?
            .filter_map(|e| Digest::parse(&format!("sha256:{}", e.ok()?.file_name().to_str()?)).ok())
            .collect();
        v.sort();
        Ok(v)
    }

    pub fn delete(&self, digest: &Digest) -> Result<(), ContentError> {
        let p = self.path(digest);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", &p)(e)),
            _ => Ok(()),
        }
    }
}

/// A blob being written.
pub struct Ingest<'a> {
    store: &'a ContentStore,
    digest: Digest,
    size: u64,
    partial: PathBuf,
    file: File,
    hasher: sha2::Sha256,
    offset: u64,
}

impl Ingest<'_> {
    /// Bytes already written (by this or an earlier, interrupted ingest).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn write(&mut self, data: &[u8]) -> Result<(), ContentError> {
        if self.offset + data.len() as u64 > self.size {
            return Err(ContentError::SizeMismatch {
                digest: self.digest.clone(),
                expected: self.size,
                actual: self.offset + data.len() as u64,
            });
        }
        self.file.write_all(data).map_err(io("write", &self.partial))?;
        self.hasher.update(data);
        self.offset += data.len() as u64;
        Ok(())
    }

    pub fn copy_from(&mut self, mut r: impl Read) -> Result<(), ContentError> {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = r.read(&mut buf).map_err(io("read into", &self.partial))?;
            if n == 0 {
                return Ok(());
            }
            self.write(&buf[..n])?;
        }
    }

    /// Checks size and digest; on success the blob is in the store, on a
    /// mismatch the partial data is discarded (it can never become right).
    pub fn commit(self) -> Result<(), ContentError> {
        let actual = Digest::from_sha256(&self.hasher.clone().finalize());
        if self.offset != self.size || actual != self.digest {
            let _ = std::fs::remove_file(&self.partial);
            if self.offset != self.size {
                return Err(ContentError::SizeMismatch {
                    digest: self.digest,
                    expected: self.size,
                    actual: self.offset,
                });
            }
            return Err(ContentError::DigestMismatch { expected: self.digest, actual });
        }
        self.file.sync_all().map_err(io("fsync", &self.partial))?;
        let dest = self.store.path(&self.digest);
        std::fs::rename(&self.partial, &dest).map_err(io("rename into place", &dest))?;
        // The rename itself is durable only with its directory.
        if let Ok(d) = File::open(dest.parent().unwrap_or(Path::new("/"))) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verified_blob_is_stored_and_a_wrong_one_never_is() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        let data = b"layer bytes".to_vec();
        let d = Digest::of(&data);
        s.put(&d, data.len() as u64, &data[..]).unwrap();
        assert_eq!(s.read(&d).unwrap(), data);
        assert_eq!(s.list().unwrap(), std::slice::from_ref(&d));

        let claimed = Digest::of(b"what the manifest promised");
        let err = s.put(&claimed, data.len() as u64, &data[..]).unwrap_err();
        assert!(
            matches!(&err, ContentError::DigestMismatch { expected, actual } if *expected == claimed && *actual == d)
        );
        assert!(err.to_string().contains(&claimed.to_string()), "the error names the digest: {err}");
        assert!(!s.contains(&claimed));
        assert_eq!(std::fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0, "nothing half-written kept");

        let err = s.put(&Digest::of(b"abc"), 2, &b"abc"[..]).unwrap_err();
        assert!(matches!(err, ContentError::SizeMismatch { expected: 2, .. }), "{err}");
    }

    #[test]
    fn an_interrupted_ingest_resumes_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let d = Digest::of(&data);
        {
            let mut w = s.ingest(&d, data.len() as u64).unwrap();
            w.write(&data[..150_000]).unwrap();
            // Dropped without commit: the process died.
        }
        assert!(!s.contains(&d));
        let mut w = s.ingest(&d, data.len() as u64).unwrap();
        assert_eq!(w.offset(), 150_000);
        w.copy_from(&data[150_000..]).unwrap();
        w.commit().unwrap();
        assert_eq!(s.read(&d).unwrap(), data);
    }
}
