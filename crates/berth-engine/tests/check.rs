//! `Engine::check` on the image holds of containers (no root needed): a
//! container that holds nothing (GC could take its layers) and a hold
//! whose container is gone (its image could never be removed) are found,
//! and repaired.

use berth_engine::check::CheckOptions;
use berth_engine::engine::Engine;
use berth_engine::store::{ContainerRecord, Status, new_id};
use berth_image::digest::Digest;
use berth_image::store::meta::{ImageRecord, LayerRecord, Resource, SnapshotRecord};

fn engine(dir: &std::path::Path) -> Engine {
    Engine {
        root: dir.join("root"),
        runroot: dir.join("run"),
        runtime: "/nonexistent/runtime".into(),
        shim: "/nonexistent/shim".into(),
        cli: None,
        cgroup_parent: "/berth-check-test".into(),
    }
}

/// A whole one-layer image in the store; its id.
fn image(e: &Engine) -> Digest {
    let store = e.store().unwrap();
    let layer = store.content.write_bytes(None, b"a layer").unwrap();
    let config = store.content.write_bytes(None, br#"{"config":{}}"#).unwrap();
    let manifest = store.content.write_bytes(None, br#"{"schemaVersion":2}"#).unwrap();
    let diff = Digest::of(b"a layer, unpacked");
    std::fs::create_dir_all(store.snapshots.fs_path(&diff)).unwrap();
    let rec = ImageRecord {
        id: config.clone(),
        manifest,
        manifest_media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        index: None,
        config_media_type: "application/vnd.oci.image.config.v1+json".into(),
        layers: vec![LayerRecord {
            digest: layer,
            size: 7,
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            diff_id: diff.clone(),
            chain_id: diff.clone(),
        }],
        platform: "linux/amd64".into(),
        created: None,
        size: 0,
    };
    store
        .meta
        .write(|tx| {
            tx.put_snapshot(&SnapshotRecord { chain_id: diff.clone(), diff_id: diff.clone(), parent: None, size: 0 })?;
            tx.put_image(&rec)?;
            tx.set_tag("example.org/held:1", &config)
        })
        .unwrap();
    config
}

#[test]
fn a_missing_hold_and_a_hold_without_a_container_are_found_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let id = image(&e);
    assert_eq!(e.check(CheckOptions::default()).unwrap().findings, vec![], "a whole image is fine");

    let rec = ContainerRecord::new(&new_id(), "holds-nothing", "example.org/held:1", &id.to_string(), "/b".into());
    let store = e.containers().unwrap();
    store.insert(&rec).unwrap();
    store.update(&rec.id, |r| r.status = Status::Exited).unwrap();
    let ghost = new_id();
    let meta = e.store().unwrap().meta;
    meta.write(|tx| tx.set_refs(&format!("container/{ghost}"), &[Resource::Image(id.clone())])).unwrap();

    let report = e.check(CheckOptions::default()).unwrap();
    let lines: Vec<String> = report.findings.iter().map(ToString::to_string).collect();
    assert_eq!(report.remaining(), 2, "{lines:#?}");
    let own = format!("container {} (holds-nothing): holds nothing in the image store", &rec.id[..12]);
    assert!(lines.iter().any(|l| l.starts_with(&own)), "{lines:#?}");
    let orphan = format!("container {}: no record, but left behind: its hold on an image", &ghost[..12]);
    assert!(lines.iter().any(|l| l.starts_with(&orphan)), "{lines:#?}");

    let report = e.check(CheckOptions { repair: true, quick: false }).unwrap();
    assert_eq!((report.findings.len(), report.remaining()), (2, 0), "{:#?}", report.findings);
    let refs = meta.read_all().unwrap().refs;
    assert_eq!(refs, vec![(format!("container/{}", rec.id), vec![Resource::Image(id)])]);
    assert_eq!(e.check(CheckOptions::default()).unwrap().findings, vec![]);
}
