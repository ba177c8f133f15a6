//! The result: the image config with its layers' diff IDs, an OCI
//! manifest, the image record and its tags, in the store.

use berth_image::store::meta::ImageRecord;
use serde_json::{Value, json};

use super::state::{State, rfc3339, set_label};
use super::{Builder, Built};
use crate::error::{Error, Result};

impl Builder<'_> {
    /// The image: config with the layers' diff IDs, a manifest, the record
    /// and its tags.
    pub(super) fn write_image(&self, mut state: State) -> Result<Built> {
        for (k, v) in &self.opts.labels {
            set_label(&mut state, k, v);
        }
        let diff_ids: Vec<String> = state.layers.iter().map(|l| l.diff_id.to_string()).collect();
        state.config["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
        let created = match self.opts.source_date_epoch {
            Some(e) => json!(rfc3339(e)),
            None => state.last_created(),
        };
        if !created.is_null() {
            state.config["created"] = created;
        }
        let config = serde_json::to_vec(&state.config).map_err(|e| Error::Invalid(format!("image config: {e}")))?;
        let config_digest = self.store.content.write_bytes(None, &config)?;
        let layers: Vec<Value> = state
            .layers
            .iter()
            .map(|l| json!({"mediaType": l.media_type, "digest": l.digest.to_string(), "size": l.size}))
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": berth_image::media::OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest.to_string(), "size": config.len()},
            "layers": layers,
        });
        let manifest = serde_json::to_vec(&manifest).map_err(|e| Error::Invalid(format!("manifest: {e}")))?;
        let manifest_digest = self.store.content.write_bytes(None, &manifest)?;
        let record = ImageRecord {
            id: config_digest.clone(),
            manifest: manifest_digest,
            manifest_media_type: berth_image::media::OCI_MANIFEST.into(),
            index: None,
            config_media_type: OCI_CONFIG.into(),
            layers: state.layers.clone(),
            platform: format!(
                "{}/{}",
                state.config["os"].as_str().unwrap_or("linux"),
                state.config["architecture"].as_str().unwrap_or("amd64")
            ),
            created: state.config["created"].as_str().map(String::from),
            size: state.layers.iter().map(|l| self.store.snapshots.size(&l.chain_id)).sum(),
        };
        let mut tags = Vec::new();
        for t in &self.opts.tags {
            let r = berth_image::Reference::parse(t).map_err(|e| Error::Invalid(format!("invalid tag {t:?}: {e}")))?;
            tags.push(r.to_string());
        }
        self.store.meta.write(|tx| {
            tx.put_image(&record)?;
            for t in &tags {
                tx.set_tag(t, &record.id)?;
            }
            Ok(())
        })?;
        let n = self.progress.step("exporting to image");
        self.progress.line(n, &format!("writing image {config_digest} done"));
        for t in &tags {
            self.progress.line(n, &format!("naming to {t} done"));
        }
        Ok(Built { id: config_digest, record })
    }
}

const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
