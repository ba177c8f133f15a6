//! Push: an image's layers, config and manifest to a registry, skipping
//! blobs it has, mounting blobs from another repository of the same
//! registry where the image came from there, and uploading the rest
//! (monolithic or chunked). The manifest's bytes are pushed as stored, so
//! its digest is the same everywhere.

use std::sync::Arc;

use tracing::{Instrument, info, info_span};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::media;
use crate::progress::Progress;
use crate::reference::Reference;
use crate::registry::{Access, Registry, RegistryConfig};
use crate::store::Store;

/// Pushes the local image `source` (a name or ID) as `dest`. Returns the
/// manifest digest.
pub async fn push(
    store: &Store,
    cfg: &RegistryConfig,
    source: &str,
    dest: &Reference,
    progress: Arc<dyn Progress>,
) -> Result<Digest> {
    let span = info_span!("push", reference = %dest);
    async move {
        let snap = store.meta.read_all()?;
        let id = crate::images::find(&snap, source)?;
        let img = snap.image(&id).ok_or_else(|| Error::NotFound(format!("image {source}")))?.clone();
        let reg = Registry::connect(dest.registry(), cfg).await?;
        let repo = dest.repository();
        // Repositories of the same registry that already hold this image.
        let mount_from: Vec<String> = snap
            .digests_of(&id)
            .iter()
            .chain(snap.tags_of(&id).iter())
            .filter_map(|n| Reference::parse(n).ok())
            .filter(|r| r.registry() == dest.registry() && r.repository() != repo)
            .map(|r| r.repository().to_string())
            .collect();
        let mut blobs: Vec<(Digest, u64, String)> =
            img.layers.iter().map(|l| (l.digest.clone(), l.size, l.media_type.clone())).collect();
        let config_size = store.content.size(&img.id).unwrap_or(0);
        blobs.push((img.id.clone(), config_size, img.config_media_type.clone()));
        for (digest, size, mt) in &blobs {
            let pid = digest.short().to_string();
            if media::is_non_distributable(mt) {
                progress.finish(&pid, "Skipped foreign layer");
                continue;
            }
            if reg.blob_exists(repo, digest, Access::Push).await?.is_some() {
                progress.finish(&pid, "Layer already exists");
                continue;
            }
            let mut mounted = false;
            for from in &mount_from {
                if reg.mount_blob(repo, from, digest).await? {
                    progress.finish(&pid, &format!("Mounted from {from}"));
                    mounted = true;
                    break;
                }
            }
            if mounted {
                continue;
            }
            if !store.content.contains(digest) {
                return Err(Error::NotFound(format!("blob {digest} of image {id} (pull it again to push)")));
            }
            progress.start(&pid, *size);
            progress.status(&pid, "Pushing");
            reg.upload_blob(repo, digest, &store.content.path(digest), *size).await?;
            progress.finish(&pid, "Pushed");
        }
        let manifest = store.content.read(&img.manifest)?;
        let reference = dest.tag().map(String::from).unwrap_or_else(|| img.manifest.to_string());
        reg.put_manifest(repo, &reference, &img.manifest_media_type, &manifest).await?;
        let rd = dest.with_digest(img.manifest.clone());
        store.meta.write(|tx| tx.set_digest(&rd.to_string(), &id))?;
        info!(manifest = %img.manifest, "pushed");
        Ok(img.manifest.clone())
    }
    .instrument(span)
    .await
}
