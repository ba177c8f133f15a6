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

    /// A new temporary directory under the root, `PREFIX-…` with a prefix
    /// of [`TEMP_DIR_PREFIXES`], for work that adds content (`load`,
    /// `import`). The caller holds an [`Store::adding`] guard for as long
    /// as it uses it: a collection (which holds the guard exclusively)
    /// then knows every such directory it sees is a killed one's.
    pub fn temp_dir(&self, prefix: &str, _held: &GcGuard) -> Result<tempfile::TempDir> {
        debug_assert!(TEMP_DIR_PREFIXES.iter().any(|p| prefix.starts_with(p)));
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&self.root)
            .ctx(|| format!("create a temporary directory in {}", self.root.display()))
    }

    /// Removes the temporary directories of killed `load`s and `import`s;
    /// how many. Only under [`Store::collecting`] (see [`Store::temp_dir`]).
    pub(crate) fn clean_temp_dirs(&self, _held: &GcGuard) -> Result<usize> {
        let mut n = 0;
        for e in std::fs::read_dir(&self.root).ctx(|| format!("read {}", self.root.display()))? {
            let e = e.ctx(|| format!("read {}", self.root.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if TEMP_DIR_PREFIXES.iter().any(|p| name.starts_with(p)) && e.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(e.path()).ctx(|| format!("remove {}", e.path().display()))?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// What the temporary directories of `load` and `import` under the root
/// are named after (see [`Store::temp_dir`]).
pub const TEMP_DIR_PREFIXES: [&str; 2] = ["import-", "load-"];
