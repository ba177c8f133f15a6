//! Stores: [`content`] (blobs by digest), [`meta`] (the redb database) and
//! the snapshots, kept separate with small interfaces, as containerd does;
//! [`Store`] holds the three under one root.

pub mod content;
pub mod meta;

use std::fs::File;
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

use crate::error::{IoContext, Result};
use crate::snapshot::Snapshots;
use content::ContentStore;
use meta::Meta;

/// Everything under ROOT (default /var/lib/berth).
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
    pub content: ContentStore,
    pub meta: Meta,
    pub snapshots: Snapshots,
}

/// Held by work that adds content (pulls, loads) while it runs; garbage
/// collection takes it exclusively, so it never sweeps what a running pull
/// has stored but not yet recorded.
pub struct GcGuard(#[allow(dead_code)] File);

impl Store {
    pub fn open(root: &Path) -> Result<Store> {
        std::fs::create_dir_all(root).ctx(|| format!("create {}", root.display()))?;
        Ok(Store {
            root: root.to_path_buf(),
            content: ContentStore::open(&root.join("content"))?,
            meta: Meta::open(&root.join("meta.redb"))?,
            snapshots: Snapshots::open(&root.join("snapshots"))?,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn gc_lock(&self, op: FlockOperation) -> Result<GcGuard> {
        let p = self.root.join("gc.lock");
        let f = File::create(&p).ctx(|| format!("create {}", p.display()))?;
        rustix::fs::flock(&f, op).ctx(|| format!("lock {}", p.display()))?;
        Ok(GcGuard(f))
    }

    /// Shared: many pulls at once.
    pub fn adding(&self) -> Result<GcGuard> {
        self.gc_lock(FlockOperation::LockShared)
    }

    /// Exclusive: for garbage collection.
    pub fn collecting(&self) -> Result<GcGuard> {
        self.gc_lock(FlockOperation::LockExclusive)
    }
}
