//! Garbage collection: mark and sweep over explicit references.
//!
//! Roots are every image record (an image stays until `rmi` or `prune`
//! removes its record) and every holder's references in the `refs` table
//! (the engine's containers). From an image: its index, manifest, config
//! and layer blobs, and its layers' snapshots. Everything else in the
//! content store and the snapshot directory is swept, as are partial
//! downloads, temporary snapshots nobody holds (killed pulls) and the lock
//! files of snapshots that are gone.
//!
//! Holds taken while a collection runs are safe: a holder references an
//! image that exists when it takes the hold (one transaction), and what an
//! existing image needs is live in this collection's view; pulls, which
//! add what no view has yet, wait for the collection (and it for them).

use std::collections::BTreeSet;

use tracing::info;

use crate::digest::Digest;
use crate::error::Result;
use crate::store::Store;
use crate::store::meta::Resource;

/// What a collection removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub blobs: Vec<Digest>,
    pub snapshots: Vec<Digest>,
    pub bytes: u64,
}

/// Runs one collection. Waits for running pulls to finish first.
pub fn collect(store: &Store) -> Result<GcReport> {
    let _guard = store.collecting()?;
    let s = store.meta.read_all()?;
    let mut blobs = BTreeSet::new();
    let mut snaps = BTreeSet::new();
    let mut images: Vec<&Digest> = s.images.iter().map(|i| &i.id).collect();
    for (_, rs) in &s.refs {
        for r in rs {
            match r {
                Resource::Image(d) => images.push(d),
                Resource::Snapshot(d) => {
                    snaps.insert(d.clone());
                }
                Resource::Blob(d) => {
                    blobs.insert(d.clone());
                }
            }
        }
    }
    for id in images {
        let Some(img) = s.image(id) else { continue };
        blobs.insert(img.id.clone());
        blobs.insert(img.manifest.clone());
        if let Some(i) = &img.index {
            blobs.insert(i.clone());
        }
        for l in &img.layers {
            blobs.insert(l.digest.clone());
            snaps.insert(l.chain_id.clone());
        }
    }
    // A snapshot needs its parents (an overlay mount stacks them all).
    let mut stack: Vec<Digest> = snaps.iter().cloned().collect();
    while let Some(c) = stack.pop() {
        if let Some(p) = s.snapshot(&c).and_then(|r| r.parent.clone())
            && snaps.insert(p.clone())
        {
            stack.push(p);
        }
    }

    let mut report = GcReport::default();
    for d in store.content.list()? {
        if !blobs.contains(&d) {
            report.bytes += store.content.size(&d).unwrap_or(0);
            store.content.delete(&d)?;
            report.blobs.push(d);
        }
    }
    let on_disk: BTreeSet<Digest> = store.snapshots.list()?.into_iter().collect();
    let recorded: BTreeSet<Digest> = s.snapshots.iter().map(|r| r.chain_id.clone()).collect();
    let doomed: Vec<Digest> = on_disk.union(&recorded).filter(|c| !snaps.contains(*c)).cloned().collect();
    for c in &doomed {
        store.snapshots.remove(c)?;
    }
    if !doomed.is_empty() {
        store.meta.write(|tx| doomed.iter().try_for_each(|c| tx.remove_snapshot(c)))?;
    }
    report.snapshots = doomed.into_iter().filter(|c| on_disk.contains(c)).collect();
    for p in store.content.stale_partials()? {
        let _ = std::fs::remove_file(p);
    }
    store.snapshots.clean_tmp()?;
    store.snapshots.clean_locks()?;
    store.clean_temp_dirs(&_guard)?;
    info!(blobs = report.blobs.len(), snapshots = report.snapshots.len(), bytes = report.bytes, "garbage collected");
    Ok(report)
}
