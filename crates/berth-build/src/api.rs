//! Entry points for front ends other than the `berth` CLI (berthd's Docker
//! API): what they need of the builder beyond [`crate::exec::build`].

use berth_engine::engine::Engine;

use crate::error::{IoContext, Result};

/// Where RUN `--mount=type=cache` directories live under the engine root.
pub const CACHE_MOUNTS_DIR: &str = "build-cache-mounts";

/// What [`prune_cache`] dropped.
#[derive(Debug, Default, Clone)]
pub struct Pruned {
    /// The cache entries dropped (their keys, as docker lists cache IDs).
    pub entries: Vec<String>,
    /// Whether RUN cache-mount directories were removed.
    pub cache_mounts: bool,
}

/// Drops every build cache entry and the RUN cache-mount directories (as
/// `docker builder prune -a`); a garbage collection then frees what only
/// the cache held. The mounts go under the store's collecting lock, so a
/// running build (which holds the adding guard) never loses one.
pub fn prune_cache(engine: &Engine) -> Result<Pruned> {
    let store = engine.store()?;
    // The keys as cache.rs names its holders (`build-cache/<hex>`).
    let entries: Vec<String> = store
        .meta
        .read_all()?
        .refs
        .into_iter()
        .filter_map(|(holder, _)| holder.strip_prefix("build-cache/").map(str::to_owned))
        .collect();
    crate::cache::prune(&store)?;
    let _collecting = store.collecting()?;
    let mounts = engine.root.join(CACHE_MOUNTS_DIR);
    let cache_mounts = match std::fs::remove_dir_all(&mounts) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e).ctx("remove", &mounts),
    };
    Ok(Pruned { entries, cache_mounts })
}
