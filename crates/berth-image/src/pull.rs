//! `pull`: a reference to verified blobs in the content store, and the
//! image's layers unpacked into snapshots.

use std::thread;

use serde_json::Value;

use crate::digest::Digest;
use crate::reference::Reference;
use crate::registry::{self, Client, RegistryError};
use crate::store::content::ContentStore;

/// A layer as the manifest describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

/// What a pull brought.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub reference: Reference,
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    pub config: Value,
    pub layers: Vec<Layer>,
    /// The uncompressed layers' digests, from the config.
    pub diff_ids: Vec<Digest>,
}

fn bad(d: &Digest, why: &str) -> RegistryError {
    RegistryError::BadManifest { digest: d.to_string(), why: why.into() }
}

fn descriptor(v: &Value, owner: &Digest) -> Result<(Digest, u64, String), RegistryError> {
    let d = v["digest"]
        .as_str()
        .and_then(|s| Digest::parse(s).ok())
        .ok_or_else(|| bad(owner, "a descriptor without a sha256 digest"))?;
    let size = v["size"].as_u64().ok_or_else(|| bad(owner, "a descriptor without a size"))?;
    Ok((d, size, v["mediaType"].as_str().unwrap_or_default().to_owned()))
}

/// Pulls `r` for this machine's platform (or `platform`: os/arch[/variant]).
pub fn pull(
    client: &Client,
    r: &Reference,
    store: &ContentStore,
    platform: Option<&str>,
) -> Result<Pulled, RegistryError> {
    let by = r.digest.as_ref().map(|d| d.to_string()).or(r.tag.clone()).unwrap_or_else(|| "latest".into());
    let (mut bytes, mut media, mut digest) = client.manifest(r, &by)?;
    let mut v: Value = serde_json::from_slice(&bytes).map_err(|e| bad(&digest, &e.to_string()))?;
    if media.is_empty() || media == "application/json" {
        media = v["mediaType"].as_str().unwrap_or_default().to_owned();
    }
    if media == registry::OCI_INDEX || media == registry::DOCKER_LIST || v["manifests"].is_array() {
        let (host_os, host_arch) = registry::host_platform();
        let mut parts = platform.unwrap_or("").split('/');
        let os = parts.next().filter(|s| !s.is_empty()).unwrap_or(host_os);
        let arch = parts.next().unwrap_or(host_arch);
        let variant = parts.next();
        let chosen = registry::select_platform(&v, os, arch, variant).ok_or_else(|| RegistryError::NoPlatform {
            reference: r.to_string(),
            platform: format!("{os}/{arch}{}", variant.map(|v| format!("/{v}")).unwrap_or_default()),
            available: v["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    format!(
                        "{}/{}",
                        m["platform"]["os"].as_str().unwrap_or("?"),
                        m["platform"]["architecture"].as_str().unwrap_or("?")
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        store.put(&digest, bytes.len() as u64, &bytes[..])?;
        let (d, _, _) = descriptor(&chosen, &digest)?;
        (bytes, media, digest) = client.manifest(r, &d.to_string())?;
        v = serde_json::from_slice(&bytes).map_err(|e| bad(&digest, &e.to_string()))?;
    }
    let _ = media;
    store.put(&digest, bytes.len() as u64, &bytes[..])?;
    let (config_digest, config_size, _) = descriptor(&v["config"], &digest)?;
    let config_bytes = client.blob_bytes(r, &config_digest, config_size, store)?;
    let config: Value = serde_json::from_slice(&config_bytes).map_err(|e| bad(&config_digest, &e.to_string()))?;
    let diff_ids: Vec<Digest> = config["rootfs"]["diff_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| d.as_str().and_then(|s| Digest::parse(s).ok()).ok_or_else(|| bad(&config_digest, "a bad diff_id")))
        .collect::<Result<_, _>>()?;
    let mut layers = Vec::new();
    for l in v["layers"].as_array().into_iter().flatten() {
        let (d, size, media_type) = descriptor(l, &digest)?;
        // Non-distributable layers are not fetched (image-spec: they come
        // from elsewhere); berth does not run such images.
        if media_type.contains("nondistributable") || media_type.contains("foreign") {
            return Err(bad(&digest, "non-distributable layers are not supported"));
        }
        layers.push(Layer { digest: d, size, media_type });
    }
    if layers.len() != diff_ids.len() {
        return Err(bad(&digest, "the number of layers and of diff_ids differ"));
    }
    // Layers download in parallel (a few at a time), each verified.
    let results: Vec<Result<(), RegistryError>> = thread::scope(|s| {
        layers
            .chunks(4.max(layers.len().div_ceil(4)))
            .map(|chunk| s.spawn(move || chunk.iter().try_for_each(|l| client.fetch_blob(r, &l.digest, l.size, store))))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(bad(&digest, "a download thread panicked"))))
            .collect()
    });
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok(Pulled { reference: r.clone(), manifest_digest: digest, config_digest, config, layers, diff_ids })
}

/// Chain IDs (image-spec): the first layer's diff_id, then
/// sha256(parent + " " + diff_id): the key of a snapshot.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => Digest::of(format!("{parent} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], Digest::of(format!("{a} {b}").as_bytes()));
    }
}
