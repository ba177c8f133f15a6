//! The metadata database (redb): images, tags, repo digests, snapshots and
//! explicit references held by others (the engine's containers), which the
//! garbage collector treats as roots.
//!
//! Several berth processes (CLI commands, berthd) use the database at
//! once: it is opened in redb's multi-writer mode (byte-range locks, as
//! the engine's containers.redb) once per process and path, and each
//! operation is one transaction. (Opening it exclusively per operation,
//! as before, cost about seven fdatasyncs each time: the open's repair
//! check, the commit, and the allocator state written at close.) The long
//! parts of a pull (downloads, unpacking) never hold a write transaction.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{ConcurrencyMode, Database, DatabaseError, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};

/// image id (config digest) → [`ImageRecord`] as JSON.
const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
/// `registry/repo:tag` → image id.
const TAGS: TableDefinition<&str, &str> = TableDefinition::new("tags");
/// `registry/repo@sha256:…` (manifest or index digest) → image id.
const DIGESTS: TableDefinition<&str, &str> = TableDefinition::new("repo_digests");
/// chain id → [`SnapshotRecord`] as JSON.
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
/// holder (e.g. `container/<id>`) → JSON list of [`Resource`]s it uses.
const REFS: TableDefinition<&str, &[u8]> = TableDefinition::new("refs");

const LOCK_WAIT: Duration = Duration::from_secs(120);

/// A layer of an image as recorded.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LayerRecord {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub diff_id: Digest,
    pub chain_id: Digest,
}

/// One image: a config and the manifest (and index) it came with.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    /// The config digest: docker's image ID.
    pub id: Digest,
    pub manifest: Digest,
    pub manifest_media_type: String,
    /// The index the manifest was chosen from, when there was one.
    pub index: Option<Digest>,
    pub config_media_type: String,
    pub layers: Vec<LayerRecord>,
    pub platform: String,
    /// From the config, RFC 3339.
    pub created: Option<String>,
    /// Sum of the layers' unpacked sizes.
    pub size: u64,
}

/// An unpacked layer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SnapshotRecord {
    pub chain_id: Digest,
    pub diff_id: Digest,
    pub parent: Option<Digest>,
    pub size: u64,
}

/// What a holder can reference.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(tag = "kind", content = "id", rename_all = "lowercase")]
pub enum Resource {
    Image(Digest),
    Snapshot(Digest),
    Blob(Digest),
}

/// A database this process has open: the file's (device, inode), and the handle.
type Opened = ((u64, u64), Arc<Database>);

#[derive(Clone, Debug)]
pub struct Meta {
    path: PathBuf,
    db: Arc<Database>,
}

fn db_err(path: &Path) -> impl Fn(&dyn std::fmt::Display) -> Error + '_ {
    move |e| Error::Db { path: path.to_path_buf(), reason: e.to_string() }
}

/// Everything in the database, read in one transaction.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub images: Vec<ImageRecord>,
    pub tags: Vec<(String, Digest)>,
    pub digests: Vec<(String, Digest)>,
    pub snapshots: Vec<SnapshotRecord>,
    pub refs: Vec<(String, Vec<Resource>)>,
}

/// The operations of one write transaction.
pub struct Tx<'a> {
    tx: &'a redb::WriteTransaction,
    path: &'a Path,
}

macro_rules! e {
    ($p:expr) => {
        |e| db_err($p)(&e)
    };
}

impl Tx<'_> {
    /// Everything, as this transaction sees it: a decision made on it and
    /// written in the same transaction cannot race another berth process.
    pub fn read_all(&self) -> Result<Snapshot> {
        load(self.tx, self.path)
    }
    /// The images, tags and digests only (snapshots and refs left empty).
    pub fn read_images(&self) -> Result<Snapshot> {
        load_images(self.tx, self.path)
    }
    pub fn put_image(&self, rec: &ImageRecord) -> Result<()> {
        let v = serde_json::to_vec(rec).map_err(crate::error::json_err("image record"))?;
        let mut t = self.tx.open_table(IMAGES).map_err(e!(self.path))?;
        t.insert(rec.id.to_string().as_str(), v.as_slice()).map_err(e!(self.path))?;
        Ok(())
    }
    pub fn remove_image(&self, id: &Digest) -> Result<()> {
        let mut t = self.tx.open_table(IMAGES).map_err(e!(self.path))?;
        t.remove(id.to_string().as_str()).map_err(e!(self.path))?;
        Ok(())
    }
    pub fn set_tag(&self, name: &str, id: &Digest) -> Result<()> {
        let mut t = self.tx.open_table(TAGS).map_err(e!(self.path))?;
        t.insert(name, id.to_string().as_str()).map_err(e!(self.path))?;
        Ok(())
    }
    pub fn remove_tag(&self, name: &str) -> Result<bool> {
        let mut t = self.tx.open_table(TAGS).map_err(e!(self.path))?;
        Ok(t.remove(name).map_err(e!(self.path))?.is_some())
    }
    pub fn set_digest(&self, name: &str, id: &Digest) -> Result<()> {
        let mut t = self.tx.open_table(DIGESTS).map_err(e!(self.path))?;
        t.insert(name, id.to_string().as_str()).map_err(e!(self.path))?;
        Ok(())
    }
    pub fn remove_digest(&self, name: &str) -> Result<bool> {
        let mut t = self.tx.open_table(DIGESTS).map_err(e!(self.path))?;
        Ok(t.remove(name).map_err(e!(self.path))?.is_some())
    }
    pub fn put_snapshot(&self, rec: &SnapshotRecord) -> Result<()> {
        let v = serde_json::to_vec(rec).map_err(crate::error::json_err("snapshot record"))?;
        let mut t = self.tx.open_table(SNAPSHOTS).map_err(e!(self.path))?;
        t.insert(rec.chain_id.to_string().as_str(), v.as_slice()).map_err(e!(self.path))?;
        Ok(())
    }
    pub fn remove_snapshot(&self, chain_id: &Digest) -> Result<()> {
        let mut t = self.tx.open_table(SNAPSHOTS).map_err(e!(self.path))?;
        t.remove(chain_id.to_string().as_str()).map_err(e!(self.path))?;
        Ok(())
    }
    /// Records that `holder` uses `resources` (replacing what it had).
    pub fn set_refs(&self, holder: &str, resources: &[Resource]) -> Result<()> {
        let v = serde_json::to_vec(resources).map_err(crate::error::json_err("refs"))?;
        let mut t = self.tx.open_table(REFS).map_err(e!(self.path))?;
        t.insert(holder, v.as_slice()).map_err(e!(self.path))?;
        Ok(())
    }
    pub fn remove_refs(&self, holder: &str) -> Result<()> {
        let mut t = self.tx.open_table(REFS).map_err(e!(self.path))?;
        t.remove(holder).map_err(e!(self.path))?;
        Ok(())
    }
}

impl Meta {
    /// The database at `path`, created with every table when missing.
    /// One handle per process and file: a later open of the same file
    /// (same device and inode) shares it.
    pub fn open(path: &Path) -> Result<Meta> {
        static OPEN: Mutex<Option<HashMap<PathBuf, Opened>>> = Mutex::new(None);
        let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
        let map = open.get_or_insert_with(HashMap::new);
        let file_id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
        if let Some((id, db)) = map.get(path)
            && file_id(path) == Some(*id)
        {
            return Ok(Meta { path: path.to_path_buf(), db: db.clone() });
        }
        let m = Meta { path: path.to_path_buf(), db: Arc::new(Self::db(path)?) };
        // Create every table once. Only when one is missing: a commit costs
        // fsyncs, and the readers take a missing table as an empty one.
        let present = m.db.begin_read().is_ok_and(|r| {
            r.open_table(IMAGES).is_ok()
                && r.open_table(TAGS).is_ok()
                && r.open_table(DIGESTS).is_ok()
                && r.open_table(SNAPSHOTS).is_ok()
                && r.open_table(REFS).is_ok()
        });
        if !present {
            m.write(|_| Ok(()))?;
        }
        if let Some(id) = file_id(path) {
            map.insert(path.to_path_buf(), (id, m.db.clone()));
        }
        Ok(m)
    }

    /// Opens the file in multi-writer mode, waiting (bounded) while a
    /// process that opens it exclusively (a berth from before this mode)
    /// holds it.
    fn db(path: &Path) -> Result<Database> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            match Database::builder().set_concurrency_mode(ConcurrencyMode::MultiWriter).create(path) {
                Ok(db) => return Ok(db),
                Err(DatabaseError::DatabaseAlreadyOpen) if start.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Err(e) => return Err(db_err(path)(&e)),
            }
        }
    }

    /// Runs `f` in one write transaction, committed if it returns Ok
    /// (waiting while another process writes).
    pub fn write<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        let tx = self.db.begin_write().map_err(e!(&self.path))?;
        {
            // Touch every table so it exists.
            tx.open_table(IMAGES).map_err(e!(&self.path))?;
            tx.open_table(TAGS).map_err(e!(&self.path))?;
            tx.open_table(DIGESTS).map_err(e!(&self.path))?;
            tx.open_table(SNAPSHOTS).map_err(e!(&self.path))?;
            tx.open_table(REFS).map_err(e!(&self.path))?;
        }
        let out = f(&Tx { tx: &tx, path: &self.path })?;
        tx.commit().map_err(e!(&self.path))?;
        Ok(out)
    }

    /// What `holder` references, if it has an entry (one lookup: the
    /// build cache asks this once per step).
    pub fn refs(&self, holder: &str) -> Result<Option<Vec<Resource>>> {
        let rx = self.db.begin_read().map_err(e!(&self.path))?;
        let t = match rx.open_table(REFS) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(db_err(&self.path)(&e)),
        };
        let Some(v) = t.get(holder).map_err(e!(&self.path))? else { return Ok(None) };
        let r = serde_json::from_slice(v.value())
            .map_err(|_| Error::Db { path: self.path.clone(), reason: format!("corrupt ref entry {holder}") })?;
        Ok(Some(r))
    }

    /// Reads everything in one consistent view.
    pub fn read_all(&self) -> Result<Snapshot> {
        let rx = self.db.begin_read().map_err(e!(&self.path))?;
        load(&rx, &self.path)
    }

    /// The images, tags and digests only (snapshots and refs left empty):
    /// enough to find an image by name or ID.
    pub fn read_images(&self) -> Result<Snapshot> {
        let rx = self.db.begin_read().map_err(e!(&self.path))?;
        load_images(&rx, &self.path)
    }
}

/// The raw rows of a table, from a read or a write transaction.
trait Rows {
    fn bytes(&self, def: TableDefinition<&str, &[u8]>) -> Result<Vec<(String, Vec<u8>)>, redb::Error>;
    fn strs(&self, def: TableDefinition<&str, &str>) -> Result<Vec<(String, String)>, redb::Error>;
}

fn rows<K, V, T, F>(t: &T, f: F) -> Result<Vec<(String, V)>, redb::Error>
where
    K: redb::Value + 'static,
    T: ReadableTable<&'static str, K>,
    F: Fn(K::SelfType<'_>) -> V,
{
    let mut out = Vec::new();
    for row in t.iter()? {
        let (k, v) = row?;
        out.push((k.value().to_string(), f(v.value())));
    }
    Ok(out)
}

impl Rows for redb::ReadTransaction {
    fn bytes(&self, def: TableDefinition<&str, &[u8]>) -> Result<Vec<(String, Vec<u8>)>, redb::Error> {
        match self.open_table(def) {
            Ok(t) => rows(&t, |v: &[u8]| v.to_vec()),
            // Readers take a missing table as an empty one (see Meta::open).
            Err(TableError::TableDoesNotExist(_)) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }
    fn strs(&self, def: TableDefinition<&str, &str>) -> Result<Vec<(String, String)>, redb::Error> {
        match self.open_table(def) {
            Ok(t) => rows(&t, |v: &str| v.to_string()),
            Err(TableError::TableDoesNotExist(_)) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }
}

impl Rows for redb::WriteTransaction {
    fn bytes(&self, def: TableDefinition<&str, &[u8]>) -> Result<Vec<(String, Vec<u8>)>, redb::Error> {
        rows(&self.open_table(def)?, |v: &[u8]| v.to_vec())
    }
    fn strs(&self, def: TableDefinition<&str, &str>) -> Result<Vec<(String, String)>, redb::Error> {
        rows(&self.open_table(def)?, |v: &str| v.to_string())
    }
}

/// Everything in the database as one transaction sees it.
fn load(tx: &impl Rows, p: &Path) -> Result<Snapshot> {
    let bad = |what: &str, k: &str| Error::Db { path: p.to_path_buf(), reason: format!("corrupt {what} entry {k}") };
    let mut s = load_images(tx, p)?;
    for (k, v) in tx.bytes(SNAPSHOTS).map_err(e!(p))? {
        s.snapshots.push(serde_json::from_slice(&v).map_err(|_| bad("snapshot", &k))?);
    }
    for (k, v) in tx.bytes(REFS).map_err(e!(p))? {
        let r: Vec<Resource> = serde_json::from_slice(&v).map_err(|_| bad("ref", &k))?;
        s.refs.push((k, r));
    }
    Ok(s)
}

/// The images and their names only: what finding one by name or ID needs.
/// Not the refs, one row per container (a create that read them all took
/// longer the more containers there were), nor the snapshots.
fn load_images(tx: &impl Rows, p: &Path) -> Result<Snapshot> {
    let bad = |what: &str, k: &str| Error::Db { path: p.to_path_buf(), reason: format!("corrupt {what} entry {k}") };
    let mut s = Snapshot::default();
    for (k, v) in tx.bytes(IMAGES).map_err(e!(p))? {
        s.images.push(serde_json::from_slice(&v).map_err(|_| bad("image", &k))?);
    }
    for (k, v) in tx.strs(TAGS).map_err(e!(p))? {
        let id = v.parse().map_err(|_| bad("tag", &k))?;
        s.tags.push((k, id));
    }
    for (k, v) in tx.strs(DIGESTS).map_err(e!(p))? {
        let id = v.parse().map_err(|_| bad("digest", &k))?;
        s.digests.push((k, id));
    }
    Ok(s)
}

impl Snapshot {
    pub fn image(&self, id: &Digest) -> Option<&ImageRecord> {
        self.images.iter().find(|i| &i.id == id)
    }
    pub fn tags_of(&self, id: &Digest) -> Vec<&str> {
        self.tags.iter().filter(|(_, i)| i == id).map(|(t, _)| t.as_str()).collect()
    }
    pub fn digests_of(&self, id: &Digest) -> Vec<&str> {
        self.digests.iter().filter(|(_, i)| i == id).map(|(t, _)| t.as_str()).collect()
    }
    pub fn snapshot(&self, chain_id: &Digest) -> Option<&SnapshotRecord> {
        self.snapshots.iter().find(|s| &s.chain_id == chain_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_concurrent_openers_wait() {
        let tmp = tempfile::tempdir().unwrap();
        let m = Meta::open(&tmp.path().join("meta.redb")).unwrap();
        let id = Digest::of(b"config");
        let rec = ImageRecord {
            id: id.clone(),
            manifest: Digest::of(b"m"),
            manifest_media_type: "x".into(),
            index: None,
            config_media_type: "y".into(),
            layers: vec![],
            platform: "linux/amd64".into(),
            created: None,
            size: 0,
        };
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let (m, rec) = (m.clone(), rec.clone());
                std::thread::spawn(move || {
                    m.write(|tx| {
                        tx.put_image(&rec)?;
                        tx.set_tag(&format!("docker.io/library/t:{i}"), &rec.id)
                    })
                    .unwrap()
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = m.read_all().unwrap();
        assert_eq!(s.images, vec![rec]);
        assert_eq!(s.tags_of(&id).len(), 4);
        m.write(|tx| tx.remove_tag("docker.io/library/t:0").map(|_| ())).unwrap();
        assert_eq!(m.read_all().unwrap().tags_of(&id).len(), 3);
    }
}
