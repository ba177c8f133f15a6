//! Snapshots: each layer unpacked once, into ROOT/<chain id hex>/fs, so
//! images sharing layers share their snapshots. A snapshot is unpacked
//! into a temporary directory and renamed into place whole: a pull killed
//! half way leaves no half snapshot under a real name.

use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::pull::{Pulled, chain_ids};
use crate::store::content::{ContentError, ContentStore};
use crate::unpack::{Limits, UnpackError, unpack_checked};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error("layer {layer}: {source}")]
    Unpack { layer: Digest, source: UnpackError },
    #[error("{what} {}: {source}", path.display())]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
}

pub struct Snapshots {
    root: PathBuf,
}

impl Snapshots {
    pub fn open(root: impl Into<PathBuf>) -> Result<Snapshots, SnapshotError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| SnapshotError::Io {
            what: "create",
            path: root.clone(),
            source: e,
        })?;
        Ok(Snapshots { root })
    }

    /// The directory holding a snapshot's files.
    pub fn fs(&self, chain_id: &Digest) -> PathBuf {
        self.root.join(chain_id.hex()).join("fs")
    }

    /// Unpacks every layer of `image` not yet unpacked; returns the
    /// snapshot dirs bottom first (overlay's lowerdir wants them reversed).
    pub fn prepare(&self, image: &Pulled, store: &ContentStore, limits: Limits) -> Result<Vec<PathBuf>, SnapshotError> {
        let mut dirs = Vec::new();
        for ((layer, diff_id), chain) in image.layers.iter().zip(&image.diff_ids).zip(chain_ids(&image.diff_ids)) {
            let fs = self.fs(&chain);
            if !fs.is_dir() {
                self.unpack_one(&chain, &layer.digest, diff_id, store, limits)?;
            }
            dirs.push(fs);
        }
        Ok(dirs)
    }

    fn unpack_one(
        &self,
        chain: &Digest,
        layer: &Digest,
        diff_id: &Digest,
        store: &ContentStore,
        limits: Limits,
    ) -> Result<(), SnapshotError> {
        let io = |what, path: &Path| {
            let path = path.to_owned();
            move |e| SnapshotError::Io { what, path, source: e }
        };
        let tmp = self.root.join(format!(".tmp-{}-{}", chain.hex(), std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(tmp.join("fs")).map_err(io("create", &tmp))?;
        let blob = store.open_blob(layer)?;
        let done = unpack_checked(std::io::BufReader::new(blob), &tmp.join("fs"), limits, Some(diff_id));
        if let Err(e) = done {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(SnapshotError::Unpack { layer: layer.clone(), source: e });
        }
        let dest = self.root.join(chain.hex());
        match std::fs::rename(&tmp, &dest) {
            Ok(()) => Ok(()),
            // Another pull unpacked it meanwhile: theirs is as good.
            Err(_) if dest.join("fs").is_dir() => {
                let _ = std::fs::remove_dir_all(&tmp);
                Ok(())
            }
            Err(e) => Err(io("rename into place", &dest)(e)),
        }
    }
}
