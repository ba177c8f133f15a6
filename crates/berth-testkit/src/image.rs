//! The busybox image the tests push to their registry: one gzip layer of
//! [`crate::make_busybox_rootfs`], Cmd ["sh"], as OCI blobs.

use std::io::Write;

use serde_json::json;
use sha2::Digest as _;

pub struct TestImage {
    pub layer: Vec<u8>,
    /// "sha256:..." of the uncompressed layer.
    pub diff_id: String,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect::<String>())
}

pub fn busybox() -> TestImage {
    let dir = tempfile::tempdir().unwrap();
    crate::make_busybox_rootfs(dir.path());
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", dir.path()).unwrap();
    let tar = b.into_inner().unwrap();
    let diff_id = sha256(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let layer = gz.finish().unwrap();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Cmd": ["sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] }
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(&layer), "size": layer.len() }]
    }))
    .unwrap();
    TestImage { layer, diff_id, config, manifest }
}
