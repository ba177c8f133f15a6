//! Image metadata in redb: images by id (their config digest, as docker
//! names them) and tags ("registry/repo:tag") pointing at ids. Opened in
//! redb's multi-writer mode, since several daemonless `berth` processes
//! may pull at once; a tag moves in the same transaction that records its
//! image.

use std::path::{Path, PathBuf};

use redb::{ConcurrencyMode, Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
const TAGS: TableDefinition<&str, &str> = TableDefinition::new("tags");

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("No such image: {0}")]
    NotFound(String),
    #[error("image database {}: {source}", path.display())]
    Db { path: PathBuf, source: redb::Error },
    #[error("image record {0} is corrupt")]
    Corrupt(String),
}

/// What `berth images` and `image inspect` show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// "sha256:<config digest hex>".
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub manifest: String,
    pub layers: Vec<String>,
    pub diff_ids: Vec<String>,
    /// Bytes of the compressed layers.
    pub size: u64,
    pub created: String,
    /// The image config (docker's "Config" is its `config` object).
    pub config: serde_json::Value,
}

pub struct MetaStore {
    db: Database,
    path: PathBuf,
}

impl MetaStore {
    pub fn open(path: &Path) -> Result<MetaStore, MetaError> {
        if let Some(d) = path.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        let err = |e: redb::Error| MetaError::Db { path: path.into(), source: e };
        let db = Database::builder()
            .set_concurrency_mode(ConcurrencyMode::MultiWriter)
            .create(path)
            .map_err(|e| err(e.into()))?;
        let tx = db.begin_write().map_err(|e| err(e.into()))?;
        tx.open_table(IMAGES).map_err(|e| err(e.into()))?;
        tx.open_table(TAGS).map_err(|e| err(e.into()))?;
        tx.commit().map_err(|e| err(e.into()))?;
        Ok(MetaStore { db, path: path.into() })
    }

    fn err(&self, e: impl Into<redb::Error>) -> MetaError {
        MetaError::Db { path: self.path.clone(), source: e.into() }
    }

    /// Records an image and points `tag` (if any) at it; the tag leaves
    /// the image it named before.
    pub fn put(&self, mut rec: ImageRecord, tag: Option<&str>) -> Result<ImageRecord, MetaError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut images = tx.open_table(IMAGES).map_err(|e| self.err(e))?;
            let mut tags = tx.open_table(TAGS).map_err(|e| self.err(e))?;
            if let Some(old) = images.get(rec.id.as_str()).map_err(|e| self.err(e))? {
                let old: ImageRecord =
                    serde_json::from_slice(old.value()).map_err(|_| MetaError::Corrupt(rec.id.clone()))?;
                for t in old.repo_tags {
                    if !rec.repo_tags.contains(&t) {
                        rec.repo_tags.push(t);
                    }
                }
                for d in old.repo_digests {
                    if !rec.repo_digests.contains(&d) {
                        rec.repo_digests.push(d);
                    }
                }
            }
            if let Some(tag) = tag {
                let previous = tags.get(tag).map_err(|e| self.err(e))?.map(|v| v.value().to_owned());
                if let Some(prev) = previous.filter(|p| *p != rec.id) {
                    let bytes = images.get(prev.as_str()).map_err(|e| self.err(e))?.map(|v| v.value().to_vec());
                    if let Some(bytes) = bytes {
                        let mut p: ImageRecord =
                            serde_json::from_slice(&bytes).map_err(|_| MetaError::Corrupt(prev.clone()))?;
                        p.repo_tags.retain(|t| t != tag);
                        images
                            .insert(prev.as_str(), serde_json::to_vec(&p).unwrap_or_default().as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                }
                tags.insert(tag, rec.id.as_str()).map_err(|e| self.err(e))?;
                if !rec.repo_tags.iter().any(|t| t == tag) {
                    rec.repo_tags.push(tag.to_owned());
                }
            }
            images
                .insert(rec.id.as_str(), serde_json::to_vec(&rec).unwrap_or_default().as_slice())
                .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(rec)
    }

    /// By tag ("docker.io/library/busybox:latest"), full id, or id prefix.
    pub fn get(&self, key: &str) -> Result<ImageRecord, MetaError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let images = tx.open_table(IMAGES).map_err(|e| self.err(e))?;
        let tags = tx.open_table(TAGS).map_err(|e| self.err(e))?;
        let id = match tags.get(key).map_err(|e| self.err(e))? {
            Some(id) => id.value().to_owned(),
            None => {
                let want = if key.starts_with("sha256:") { key.to_owned() } else { format!("sha256:{key}") };
                let mut found = None;
                for entry in images.range(want.as_str()..).map_err(|e| self.err(e))? {
                    let (k, _) = entry.map_err(|e| self.err(e))?;
                    if !k.value().starts_with(&want) {
                        break;
                    }
                    if found.is_some() || want.len() < "sha256:".len() + 4 {
                        return Err(MetaError::NotFound(key.into()));
                    }
                    found = Some(k.value().to_owned());
                }
                found.ok_or_else(|| MetaError::NotFound(key.into()))?
            }
        };
        let bytes = images.get(id.as_str()).map_err(|e| self.err(e))?.ok_or_else(|| MetaError::NotFound(key.into()))?;
        serde_json::from_slice(bytes.value()).map_err(|_| MetaError::Corrupt(id))
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>, MetaError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let images = tx.open_table(IMAGES).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for entry in images.iter().map_err(|e| self.err(e))? {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            out.push(serde_json::from_slice(v.value()).map_err(|_| MetaError::Corrupt(k.value().to_owned()))?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str) -> ImageRecord {
        ImageRecord {
            id: id.into(),
            repo_tags: vec![],
            repo_digests: vec![],
            manifest: "m".into(),
            layers: vec![],
            diff_ids: vec![],
            size: 1,
            created: "2026-11-23T00:00:00Z".into(),
            config: serde_json::Value::Null,
        }
    }

    #[test]
    fn tags_move_between_images() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(&dir.path().join("meta.redb")).unwrap();
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        m.put(rec(&a), Some("docker.io/library/x:latest")).unwrap();
        assert_eq!(m.get("docker.io/library/x:latest").unwrap().id, a);
        assert_eq!(m.get("aaaaaa").unwrap().id, a, "by id prefix");
        m.put(rec(&b), Some("docker.io/library/x:latest")).unwrap();
        assert_eq!(m.get("docker.io/library/x:latest").unwrap().id, b);
        assert!(m.get(&a).unwrap().repo_tags.is_empty(), "the old image lost the tag");
        assert_eq!(m.list().unwrap().len(), 2);
        assert!(matches!(m.get("nope:1"), Err(MetaError::NotFound(_))));
    }
}
