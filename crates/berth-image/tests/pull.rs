//! Pulling from a real registry (Debian's docker-registry, started by the
//! test): images pushed by berth's own client, verified on the way in,
//! unpacked once per layer; and a registry that lies about a blob.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;

use berth_image::digest::Digest;
use berth_image::pull::{chain_ids, pull};
use berth_image::reference::Reference;
use berth_image::registry::{Client, OCI_INDEX, OCI_MANIFEST, RegistryError};
use berth_image::snapshot::Snapshots;
use berth_image::store::content::{ContentError, ContentStore};
use berth_image::unpack::Limits;
use berth_testkit::registry::{self, Registry};
use serde_json::json;

/// A one-layer busybox image: (layer blob gz, diff_id, config bytes).
fn busybox_image() -> (Vec<u8>, Digest, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    berth_testkit::make_busybox_rootfs(dir.path());
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", dir.path()).unwrap();
    let tar = b.into_inner().unwrap();
    let diff_id = Digest::of(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Cmd": ["sh"], "Env": ["PATH=/bin"] },
        "rootfs": { "type": "layers", "diff_ids": [diff_id.to_string()] }
    });
    (gz.finish().unwrap(), diff_id, serde_json::to_vec(&config).unwrap())
}

fn manifest(config: &[u8], layer: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::of(config).to_string(), "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": Digest::of(layer).to_string(), "size": layer.len() }]
    }))
    .unwrap()
}

fn have_registry() -> bool {
    let found = registry::binary().is_some();
    if !found {
        eprintln!("skipped: docker-registry is not installed");
    }
    found
}

#[test]
fn an_image_pushed_by_berth_pulls_back_verified_and_unpacks_once() {
    if !have_registry() {
        return;
    }
    let reg = Registry::start();
    let client = Client::new();
    let r = Reference::parse(&format!("{}/test/busybox:1", reg.host())).unwrap();
    client.ping(&r).unwrap();
    let (layer, diff_id, config) = busybox_image();
    let m = manifest(&config, &layer);
    client.push_blob(&r, &Digest::of(&layer), &layer).unwrap();
    client.push_blob(&r, &Digest::of(&config), &config).unwrap();
    let mdigest = client.push_manifest(&r, "1", &m, OCI_MANIFEST).unwrap();
    // And a multi-platform index over it.
    let index = serde_json::to_vec(&json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        { "mediaType": OCI_MANIFEST, "digest": mdigest.to_string(), "size": m.len(), "platform": { "os": "linux", "architecture": "arm64", "variant": "v8" } },
        { "mediaType": OCI_MANIFEST, "digest": mdigest.to_string(), "size": m.len(), "platform": { "os": "linux", "architecture": "amd64" } }
    ]}))
    .unwrap();
    client.push_manifest(&r, "multi", &index, OCI_INDEX).unwrap();

    let root = tempfile::tempdir().unwrap();
    let store = ContentStore::open(root.path().join("content")).unwrap();
    let pulled = pull(&client, &r, &store, None).unwrap();
    assert_eq!(pulled.manifest_digest, mdigest);
    assert_eq!(pulled.config_digest, Digest::of(&config));
    assert_eq!(pulled.diff_ids, std::slice::from_ref(&diff_id));
    for d in [&mdigest, &Digest::of(&config), &Digest::of(&layer)] {
        assert!(store.contains(d), "{d} stored");
    }
    let snaps = Snapshots::open(root.path().join("snapshots")).unwrap();
    let dirs = snaps.prepare(&pulled, &store, Limits::default()).unwrap();
    assert_eq!(dirs, [snaps.fs(&chain_ids(&[diff_id])[0])]);
    let out =
        std::process::Command::new(dirs[0].join("bin/busybox")).args(["echo", "from the layer"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from the layer\n");
    let before = std::fs::metadata(dirs[0].join("bin/busybox")).unwrap();
    snaps.prepare(&pulled, &store, Limits::default()).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(dirs[0].join("bin/busybox")).unwrap().ino(), before.ino(), "unpacked once");

    let multi = Reference::parse(&format!("{}/test/busybox:multi", reg.host())).unwrap();
    assert_eq!(pull(&client, &multi, &store, None).unwrap().manifest_digest, mdigest, "the host's platform chosen");
    let err = pull(&client, &multi, &store, Some("linux/s390x")).unwrap_err();
    assert!(matches!(&err, RegistryError::NoPlatform { .. }) && err.to_string().contains("linux/arm64"), "{err}");
    let missing = Reference::parse(&format!("{}/test/busybox:nope", reg.host())).unwrap();
    assert!(matches!(pull(&client, &missing, &store, None), Err(RegistryError::NotFound { .. })));
}

/// A registry that serves a manifest honestly and a layer that is not
/// what the manifest says.
fn lying_registry(manifest: Vec<u8>, config: Vec<u8>, evil_layer: Vec<u8>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap() <= 2 {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            let (ctype, body): (&str, &[u8]) = if path.contains("/manifests/") {
                (OCI_MANIFEST, &manifest)
            } else if path.ends_with(&Digest::of(&config).to_string()) {
                ("application/octet-stream", &config)
            } else {
                ("application/octet-stream", &evil_layer)
            };
            let mut s = s;
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(body);
            let _ = r.read(&mut [0u8; 1]);
        }
    });
    port
}

#[test]
fn a_blob_that_does_not_match_its_digest_is_refused_and_never_stored() {
    let (layer, _, config) = busybox_image();
    let m = manifest(&config, &layer);
    let mut evil = layer.clone();
    let n = evil.len();
    evil[n / 2] ^= 0xff;
    let port = lying_registry(m, config, evil);
    let r = Reference::parse(&format!("127.0.0.1:{port}/lies:1")).unwrap();
    let root = tempfile::tempdir().unwrap();
    let store = ContentStore::open(root.path()).unwrap();
    let err = pull(&Client::new(), &r, &store, None).unwrap_err();
    let promised = Digest::of(&layer);
    assert!(
        matches!(&err, RegistryError::Content(ContentError::DigestMismatch { expected, .. }) if *expected == promised),
        "{err}"
    );
    assert!(err.to_string().contains(&promised.to_string()), "the error names the digest: {err}");
    assert!(!store.contains(&promised));
    assert_eq!(std::fs::read_dir(root.path().join("ingest")).unwrap().count(), 0);
}
