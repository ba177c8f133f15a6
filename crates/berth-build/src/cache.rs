//! The build cache: a step's key → what the step produced (its layer, if
//! any, and its history entry), kept across builds.
//!
//! An entry is a small JSON blob in the content store; the metadata
//! database's `refs` table maps `build-cache/<key>` to it, its layer blob
//! and its snapshot. Those references are garbage-collection roots, so a
//! cached layer survives `image prune` while its entry exists;
//! [`prune`] drops every entry (`builder prune`), after which a collection
//! sweeps what only the cache held.
//!
//! A key is the sha256 of the parent step's key, the instruction after
//! expansion, the build args it sees and, for COPY/ADD, the hash of the
//! files it reads (see [`crate::context::hash_sources`]).

use berth_image::Digest;
use berth_image::store::Store;
use berth_image::store::meta::{LayerRecord, Resource};
use serde::{Deserialize, Serialize};

use crate::error::Result;

const PREFIX: &str = "build-cache/";

/// What a cached step produced.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub layer: Option<LayerRecord>,
    /// The step's history entry (its `created` time included, so a fully
    /// cached build gives the same image ID).
    pub history: serde_json::Value,
    /// Config fields the step set (e.g. WORKDIR's WorkingDir), merged into
    /// the image config's `config` object on a hit.
    #[serde(default)]
    pub config: serde_json::Map<String, serde_json::Value>,
}

/// A step's cache key from its parts.
pub fn key(parts: &[&str]) -> Digest {
    let mut joined = Vec::new();
    for p in parts {
        joined.extend_from_slice(&(p.len() as u64).to_le_bytes());
        joined.extend_from_slice(p.as_bytes());
    }
    Digest::of(&joined)
}

/// The entry for `key`, when it and everything it needs are still there.
pub fn get(store: &Store, key: &Digest) -> Result<Option<Entry>> {
    let Some(refs) = store.meta.refs(&format!("{PREFIX}{}", key.hex()))? else { return Ok(None) };
    let Some(Resource::Blob(entry)) = refs.first() else { return Ok(None) };
    let Ok(bytes) = store.content.read(entry) else { return Ok(None) };
    let Ok(e) = serde_json::from_slice::<Entry>(&bytes) else { return Ok(None) };
    if let Some(l) = &e.layer
        && !store.content.contains(&l.digest)
    {
        return Ok(None);
    }
    Ok(Some(e))
}

/// Records `entry` under `key`.
pub fn put(store: &Store, key: &Digest, entry: &Entry) -> Result<()> {
    let bytes = serde_json::to_vec(entry).map_err(|e| crate::error::Error::Invalid(format!("cache entry: {e}")))?;
    let blob = store.content.write_bytes(None, &bytes)?;
    let mut refs = vec![Resource::Blob(blob)];
    if let Some(l) = &entry.layer {
        refs.push(Resource::Blob(l.digest.clone()));
        refs.push(Resource::Snapshot(l.chain_id.clone()));
    }
    store.meta.write(|tx| tx.set_refs(&format!("{PREFIX}{}", key.hex()), &refs))?;
    Ok(())
}

/// Drops every cache entry; how many. A garbage collection then removes
/// what only they held.
pub fn prune(store: &Store) -> Result<usize> {
    let holders: Vec<String> =
        store.meta.read_all()?.refs.into_iter().map(|(h, _)| h).filter(|h| h.starts_with(PREFIX)).collect();
    store.meta.write(|tx| holders.iter().try_for_each(|h| tx.remove_refs(h)))?;
    Ok(holders.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parts_cannot_run_into_each_other() {
        assert_ne!(key(&["ab", "c"]), key(&["a", "bc"]));
        assert_eq!(key(&["a", "b"]), key(&["a", "b"]));
    }
}
