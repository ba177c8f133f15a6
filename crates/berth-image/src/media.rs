//! Media types (OCI and Docker schema2) and the manifest/index documents,
//! parsed with `oci-spec`'s image types. Manifests are always kept as the
//! bytes the registry sent: re-serializing would change their digests.

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

use crate::digest::Digest;
use crate::error::{Error, Result, json_err};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_FOREIGN_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// What berth asks registries for, in order of preference.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Layers the image spec marks non-distributable: not pushed (registries
/// refuse or skip them), fetched only where the registry has them.
pub fn is_non_distributable(mt: &str) -> bool {
    mt.contains("nondistributable") || mt.contains(".foreign.")
}

/// True for layer media types berth can unpack.
pub fn is_layer(mt: &str) -> bool {
    mt.starts_with("application/vnd.oci.image.layer.") || mt.starts_with("application/vnd.docker.image.rootfs.")
}

/// A manifest or an index, with the bytes it was parsed from.
#[derive(Clone, Debug)]
pub enum Document {
    Manifest(Box<ImageManifest>),
    Index(Box<ImageIndex>),
}

impl Document {
    /// Parses `bytes`, using `content_type` (the registry's header) or the
    /// document's own mediaType, or its shape when neither says.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Document> {
        #[derive(serde::Deserialize)]
        struct Probe {
            #[serde(rename = "mediaType")]
            media_type: Option<String>,
            manifests: Option<serde_json::Value>,
            #[serde(rename = "schemaVersion")]
            schema_version: Option<u32>,
        }
        let probe: Probe = serde_json::from_slice(bytes).map_err(json_err("manifest"))?;
        if probe.schema_version == Some(1) {
            return Err(Error::Unsupported(
                "Docker image manifest schema 1 is deprecated and not supported; push the image again with a current tool"
                    .into(),
            ));
        }
        let mt =
            probe.media_type.or_else(|| content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_string()));
        let is_index = match mt.as_deref() {
            Some(OCI_INDEX) | Some(DOCKER_MANIFEST_LIST) => true,
            Some(OCI_MANIFEST) | Some(DOCKER_MANIFEST) => false,
            _ => probe.manifests.is_some(),
        };
        if is_index {
            Ok(Document::Index(serde_json::from_slice(bytes).map_err(json_err("image index"))?))
        } else {
            Ok(Document::Manifest(serde_json::from_slice(bytes).map_err(json_err("image manifest"))?))
        }
    }
}

/// The media type string of a descriptor.
pub fn media_type_of(d: &Descriptor) -> String {
    d.media_type().to_string()
}

/// The berth digest of a descriptor (refusing anything but sha256).
pub fn digest_of(d: &Descriptor) -> Result<Digest> {
    Digest::try_from(d.digest())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_distributable_media_types() {
        assert!(is_non_distributable(DOCKER_FOREIGN_LAYER_GZIP));
        assert!(is_non_distributable("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"));
        assert!(!is_non_distributable(OCI_LAYER_GZIP));
    }

    #[test]
    fn parses_docker_schema2_and_lists() {
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
          "config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},
          "layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":3,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"}]}"#;
        assert!(matches!(Document::parse(m, None).unwrap(), Document::Manifest(_)));
        let l = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json",
          "manifests":[{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":3,
          "digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
          "platform":{"architecture":"arm64","os":"linux","variant":"v8"}}]}"#;
        assert!(matches!(Document::parse(l, None).unwrap(), Document::Index(_)));
        let s1 = br#"{"schemaVersion":1,"name":"x"}"#;
        assert!(Document::parse(s1, None).is_err());
    }
}
