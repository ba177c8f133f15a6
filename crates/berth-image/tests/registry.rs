//! Pull and push against a real registry (Debian's docker-registry on a
//! free loopback port): plain HTTP, TLS with a test CA, htpasswd auth;
//! images built here from busybox-static.

use std::sync::{Arc, Mutex};

use berth_image::gc;
use berth_image::progress::Progress;
use berth_image::pull::{PullOptions, pull};
use berth_image::registry::{AuthStore, Credentials, RegistryConfig};
use berth_image::snapshot::overlay;
use berth_image::store::Store;
use berth_image::{Digest, Error, Platform, Reference};
use berth_testkit::image::{BuiltImage, Comp, Layer, OciLayout, busybox_layer};
use berth_testkit::registry::{Registry, RegistryOptions};
use serde_json::json;

struct Env {
    tmp: tempfile::TempDir,
    store: Store,
    cfg: RegistryConfig,
}

fn env() -> Env {
    berth_testkit::require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("root")).unwrap();
    let cfg = RegistryConfig {
        certs_dirs: vec![],
        auth: Some(AuthStore { own: tmp.path().join("auth.json"), fallbacks: vec![] }),
        backoff: std::time::Duration::from_millis(10),
        ..Default::default()
    };
    Env { tmp, store, cfg }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn r(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

/// A busybox image pushed as `name:tag`.
fn push_busybox(reg: &Registry, name: &str, comp: Comp, extra: &[&str]) -> BuiltImage {
    let tmp = tempfile::tempdir().unwrap();
    let mut l = OciLayout::new(tmp.path());
    let img = l.image(&[busybox_layer()], comp, json!({"Cmd": ["sh"], "Env": ["PATH=/bin"]}), "amd64");
    l.tag(&img, "t");
    l.push("t", &format!("{}/{name}", reg.addr()), extra);
    img
}

/// Records progress events.
#[derive(Default)]
struct Events(Mutex<Vec<String>>);
impl Progress for Events {
    fn advance(&self, id: &str, n: u64) {
        self.0.lock().unwrap().push(format!("{id} +{n}"));
    }
    fn finish(&self, id: &str, status: &str) {
        self.0.lock().unwrap().push(format!("{id} {status}"));
    }
}

#[test]
fn pulls_a_one_layer_image_over_plain_http() {
    let reg = Registry::start();
    let img = push_busybox(&reg, "bb:1", Comp::Gzip, &[]);
    let e = env();
    let rf = r(&format!("{}/bb:1", reg.addr()));
    let rec = rt().block_on(pull(&e.store, &e.cfg, &rf, &PullOptions::default())).unwrap();
    assert_eq!(rec.id.to_string(), img.config_digest);
    assert_eq!(rec.manifest.to_string(), img.manifest_digest);
    assert_eq!(rec.layers[0].diff_id.to_string(), img.diff_ids[0]);
    let fs = e.store.snapshots.fs_path(&rec.layers[0].chain_id);
    assert!(fs.join("bin/busybox").is_file());
    assert_eq!(std::fs::read_link(fs.join("bin/sh")).unwrap().to_str(), Some("busybox"));
    let s = e.store.meta.read_all().unwrap();
    assert_eq!(s.tags_of(&rec.id), vec![rf.to_string()]);
    assert_eq!(s.digests_of(&rec.id), vec![format!("{}/bb@{}", reg.addr(), img.manifest_digest)]);

    // Again: nothing downloaded.
    let ev = Arc::new(Events::default());
    let opts = PullOptions { progress: ev.clone(), ..Default::default() };
    rt().block_on(pull(&e.store, &e.cfg, &rf, &opts)).unwrap();
    let ev = ev.0.lock().unwrap();
    assert!(ev.iter().all(|x| !x.contains('+')), "downloaded again: {ev:?}");
    assert!(ev.iter().any(|x| x.ends_with("Already exists")));
}

#[test]
fn pulls_layers_with_whiteouts_in_gzip_and_zstd_and_mounts_the_chain() {
    for comp in [Comp::Gzip, Comp::Zstd, Comp::None] {
        let reg = Registry::start();
        let tmp = tempfile::tempdir().unwrap();
        let mut l = OciLayout::new(tmp.path());
        let base = busybox_layer();
        let l2 = Layer::new()
            .dir("data", 0o755)
            .file("data/a", b"a")
            .file("data/b", b"b")
            .dir("keep", 0o755)
            .file("keep/old", b"old")
            .tar();
        let l3 = Layer::new().whiteout("data", "a").dir("keep", 0o755).opaque("keep").file("keep/new", b"new").tar();
        let img = l.image(&[base, l2, l3], comp, json!({"Cmd": ["sh"]}), "amd64");
        l.tag(&img, "t");
        l.push("t", &format!("{}/layers:v", reg.addr()), &[]);

        let e = env();
        let rec = rt()
            .block_on(pull(&e.store, &e.cfg, &r(&format!("{}/layers:v", reg.addr())), &PullOptions::default()))
            .unwrap();
        assert_eq!(rec.layers.len(), 3);
        let lowers: Vec<_> = rec.layers.iter().rev().map(|l| e.store.snapshots.fs_path(&l.chain_id)).collect();
        let mnt = e.tmp.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        overlay::mount_overlay(&lowers, None, &mnt).unwrap();
        let _umount = Unmount(mnt.clone());
        assert!(mnt.join("bin/busybox").is_file());
        assert!(!mnt.join("data/a").exists(), "whiteout ignored ({comp:?})");
        assert_eq!(std::fs::read(mnt.join("data/b")).unwrap(), b"b");
        assert!(!mnt.join("keep/old").exists(), "opaque dir ignored ({comp:?})");
        assert_eq!(std::fs::read(mnt.join("keep/new")).unwrap(), b"new");
    }
}

struct Unmount(std::path::PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = overlay::unmount(&self.0);
    }
}

#[test]
fn long_layer_chains_mount_beyond_one_page_of_options() {
    let e = env();
    // 90 one-file layers at long paths: far more than 4096 bytes of options.
    let mut lowers = Vec::new();
    for i in 0..90 {
        let d = e.tmp.path().join(format!("{}-{i:03}", "x".repeat(60)));
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join(format!("f{i}")), format!("{i}")).unwrap();
        std::fs::write(d.join("top"), format!("{i}")).unwrap();
        lowers.insert(0, d);
    }
    let mnt = e.tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    overlay::mount_overlay(&lowers, None, &mnt).unwrap();
    let _u = Unmount(mnt.clone());
    assert!(mnt.join("f0").exists() && mnt.join("f89").exists());
    assert_eq!(std::fs::read_to_string(mnt.join("top")).unwrap(), "89");
}

#[test]
fn multi_platform_index_gives_the_asked_platform() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut l = OciLayout::new(tmp.path());
    let amd = l.image(&[Layer::new().file("arch", b"amd64").tar()], Comp::Gzip, json!({}), "amd64");
    let arm = l.image(&[Layer::new().file("arch", b"arm64").tar()], Comp::Gzip, json!({}), "arm64");
    let index = l.multi(&[(&amd, "amd64"), (&arm, "arm64")], "multi");
    l.push("multi", &format!("{}/multi:1", reg.addr()), &[]);
    let rf = r(&format!("{}/multi:1", reg.addr()));

    let e = env();
    let opts = PullOptions { platform: "linux/arm64".parse().unwrap(), ..Default::default() };
    let rec = rt().block_on(pull(&e.store, &e.cfg, &rf, &opts)).unwrap();
    assert_eq!(rec.id.to_string(), arm.config_digest);
    assert_eq!(rec.index.as_ref().map(|d| d.to_string()), Some(index.clone()));
    assert_eq!(rec.platform, "linux/arm64");
    let fs = e.store.snapshots.fs_path(&rec.layers[0].chain_id);
    assert_eq!(std::fs::read(fs.join("arch")).unwrap(), b"arm64");
    let s = e.store.meta.read_all().unwrap();
    assert_eq!(s.digests_of(&rec.id), vec![format!("{}/multi@{index}", reg.addr())]);

    let opts = PullOptions { platform: "linux/amd64".parse().unwrap(), ..Default::default() };
    let rec = rt().block_on(pull(&e.store, &e.cfg, &rf, &opts)).unwrap();
    assert_eq!(rec.id.to_string(), amd.config_digest);

    let opts = PullOptions { platform: "linux/s390x".parse::<Platform>().unwrap(), ..Default::default() };
    let err = rt().block_on(pull(&e.store, &e.cfg, &rf, &opts)).unwrap_err();
    assert!(matches!(err, Error::NoPlatform { .. }), "{err}");
    assert!(err.to_string().contains("linux/arm64"), "{err}");

    // By digest, too.
    let by_digest = r(&format!("{}/multi@{}", reg.addr(), arm.manifest_digest));
    let rec = rt().block_on(pull(&e.store, &e.cfg, &by_digest, &PullOptions::default())).unwrap();
    assert_eq!(rec.id.to_string(), arm.config_digest);
}

#[test]
fn pulls_over_tls_with_a_ca_from_certs_d_only() {
    let reg = Registry::start_with(RegistryOptions { tls: true, ..Default::default() });
    push_busybox(&reg, "secure:1", Comp::Gzip, &[]);
    let rf = r(&format!("{}/secure:1", reg.addr()));

    let e = env();
    // Without the CA, neither HTTPS (unknown issuer) nor HTTP works.
    let err = rt().block_on(pull(&e.store, &e.cfg, &rf, &PullOptions::default())).unwrap_err();
    assert!(err.to_string().contains("cannot reach registry"), "{err}");

    let certs = reg.certs_d(&e.tmp.path().join("certs.d"));
    let cfg = RegistryConfig { certs_dirs: vec![certs], ..e.cfg.clone() };
    let rec = rt().block_on(pull(&e.store, &cfg, &rf, &PullOptions::default())).unwrap();
    assert!(e.store.snapshots.fs_path(&rec.layers[0].chain_id).join("bin/busybox").exists());
}

#[test]
fn basic_auth_needs_credentials_and_uses_the_auth_file() {
    let reg =
        Registry::start_with(RegistryOptions { users: vec![("alice".into(), "s3cret".into())], ..Default::default() });
    push_busybox(&reg, "private:1", Comp::Gzip, &["--dest-creds", "alice:s3cret"]);
    let rf = r(&format!("{}/private:1", reg.addr()));
    let e = env();
    let err = rt().block_on(pull(&e.store, &e.cfg, &rf, &PullOptions::default())).unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err}");

    let auth = e.cfg.auth_store();
    auth.set(&reg.addr(), &Credentials { username: "alice".into(), password: "wrong".into() }).unwrap();
    let err = rt().block_on(pull(&e.store, &e.cfg, &rf, &PullOptions::default())).unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err}");

    auth.set(&reg.addr(), &Credentials { username: "alice".into(), password: "s3cret".into() }).unwrap();
    rt().block_on(pull(&e.store, &e.cfg, &rf, &PullOptions::default())).unwrap();
}

#[test]
fn a_blob_whose_digest_does_not_match_is_refused_and_never_stored() {
    let reg = Registry::start();
    let img = push_busybox(&reg, "bad:1", Comp::Gzip, &[]);
    // Corrupt the layer in the registry's storage: same size, other bytes.
    let p = reg.blob_path(&img.layer_digests[0]);
    let mut data = std::fs::read(&p).unwrap();
    let n = data.len();
    data[n / 2] ^= 0xff;
    std::fs::write(&p, &data).unwrap();

    let e = env();
    let err = rt()
        .block_on(pull(&e.store, &e.cfg, &r(&format!("{}/bad:1", reg.addr())), &PullOptions::default()))
        .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&img.layer_digests[0]), "error does not name the digest: {err}");
    let d: Digest = img.layer_digests[0].parse().unwrap();
    assert!(!e.store.content.contains(&d));
    assert!(e.store.snapshots.list().unwrap().is_empty());
    assert!(e.store.meta.read_all().unwrap().images.is_empty());
    assert_eq!(std::fs::read_dir(e.store.root().join("content/ingest")).unwrap().count(), 0, "partial kept");
}

#[test]
fn an_interrupted_download_resumes_from_its_partial_file() {
    let reg = Registry::start();
    let img = push_busybox(&reg, "resume:1", Comp::None, &[]);
    let e = env();
    // What a killed pull leaves: the first half of the layer in ingest/.
    let layer = std::fs::read(reg.blob_path(&img.layer_digests[0])).unwrap();
    let half = layer.len() / 2;
    let hex = &img.layer_digests[0][7..];
    std::fs::write(e.store.root().join(format!("content/ingest/{hex}.partial")), &layer[..half]).unwrap();

    let ev = Arc::new(Events::default());
    let opts = PullOptions { progress: ev.clone(), ..Default::default() };
    let rec = rt().block_on(pull(&e.store, &e.cfg, &r(&format!("{}/resume:1", reg.addr())), &opts)).unwrap();
    let ev = ev.0.lock().unwrap();
    let first = ev.iter().find(|x| x.contains('+')).unwrap();
    assert!(first.ends_with(&format!("+{half}")), "did not resume at {half}: {ev:?}");
    let total: u64 = ev.iter().filter_map(|x| x.split('+').nth(1)).map(|n| n.parse::<u64>().unwrap()).sum();
    assert_eq!(total, layer.len() as u64);
    assert!(e.store.snapshots.fs_path(&rec.layers[0].chain_id).join("bin/busybox").exists());
}

#[test]
fn gc_removes_exactly_what_is_unreferenced_and_push_keeps_digests() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut l = OciLayout::new(tmp.path());
    let base = busybox_layer();
    let a = l.image(&[base.clone(), Layer::new().file("a", b"a").tar()], Comp::Gzip, json!({}), "amd64");
    let b = l.image(&[base, Layer::new().file("b", b"b").tar()], Comp::Gzip, json!({}), "amd64");
    l.tag(&a, "a");
    l.tag(&b, "b");
    l.push("a", &format!("{}/app:a", reg.addr()), &[]);
    l.push("b", &format!("{}/app:b", reg.addr()), &[]);
    let e = env();
    let ra =
        rt().block_on(pull(&e.store, &e.cfg, &r(&format!("{}/app:a", reg.addr())), &PullOptions::default())).unwrap();
    let rb =
        rt().block_on(pull(&e.store, &e.cfg, &r(&format!("{}/app:b", reg.addr())), &PullOptions::default())).unwrap();
    assert_eq!(ra.layers[0].chain_id, rb.layers[0].chain_id, "base layer shared");
    assert_eq!(e.store.snapshots.list().unwrap().len(), 3);

    // Push b elsewhere (chunked, and mounted across repositories), pull it back: same digests.
    let cfg = RegistryConfig { push_chunk_size: 64 << 10, ..e.cfg.clone() };
    let dest = r(&format!("{}/copy/app:b", reg.addr()));
    let ev = Arc::new(Events::default());
    let pushed = rt()
        .block_on(berth_image::push::push(&e.store, &cfg, &format!("{}/app:b", reg.addr()), &dest, ev.clone()))
        .unwrap();
    assert_eq!(pushed.to_string(), b.manifest_digest);
    let mounted = ev.0.lock().unwrap().iter().filter(|x| x.ends_with("Mounted from app")).count();
    assert_eq!(mounted, 3, "layers and config mounted across repositories: {:?}", ev.0.lock().unwrap());
    let reg2 = Registry::start();
    let dest2 = r(&format!("{}/other:b", reg2.addr()));
    rt().block_on(berth_image::push::push(&e.store, &cfg, &rb.id.to_string(), &dest2, Arc::new(Events::default())))
        .unwrap();
    let e2 = env();
    let back = rt().block_on(pull(&e2.store, &e2.cfg, &dest2, &PullOptions::default())).unwrap();
    assert_eq!(back.manifest, rb.manifest);
    assert_eq!(back.id, rb.id);

    // Nothing unreferenced yet.
    assert_eq!(gc::collect(&e.store).unwrap(), gc::GcReport::default());
    // Remove a: exactly a's own blobs (manifest, config, top layer) and its top snapshot go.
    let removed = berth_image::images::remove(&e.store, &format!("{}/app:a", reg.addr()), false, &|_| None).unwrap();
    assert!(removed.contains(&berth_image::images::Removed::Deleted(ra.id.clone())));
    let report = gc::collect(&e.store).unwrap();
    let mut want_blobs = vec![ra.manifest.clone(), ra.id.clone(), ra.layers[1].digest.clone()];
    want_blobs.sort();
    assert_eq!(report.blobs, want_blobs);
    assert_eq!(report.snapshots, vec![ra.layers[1].chain_id.clone()]);
    for l in &rb.layers {
        assert!(e.store.content.contains(&l.digest));
        assert!(e.store.snapshots.exists(&l.chain_id));
    }
    // A holder's reference keeps an image through prune and GC.
    e.store
        .meta
        .write(|tx| tx.set_refs("container/c1", &[berth_image::store::meta::Resource::Image(rb.id.clone())]))
        .unwrap();
    let stopped = |h: &str| Some(berth_image::images::Use::Stopped(h.to_string()));
    berth_image::images::prune(&e.store, true, &stopped).unwrap();
    assert!(gc::collect(&e.store).unwrap().blobs.is_empty());
    e.store.meta.write(|tx| tx.remove_refs("container/c1")).unwrap();
    berth_image::images::prune(&e.store, true, &stopped).unwrap();
    gc::collect(&e.store).unwrap();
    assert!(e.store.content.list().unwrap().is_empty());
    assert!(e.store.snapshots.list().unwrap().is_empty());
}

#[test]
fn mirrors_are_tried_first() {
    let primary = Registry::start();
    let mirror = Registry::start();
    let img = push_busybox(&mirror, "mirrored:1", Comp::Gzip, &[]);
    let e = env();
    let mut cfg = e.cfg.clone();
    cfg.mirrors.insert(primary.addr(), vec!["http://127.0.0.1:1".into(), format!("http://{}", mirror.addr())]);
    // The primary does not have it; the first mirror is unreachable; the second has it.
    let rec = rt()
        .block_on(pull(&e.store, &cfg, &r(&format!("{}/mirrored:1", primary.addr())), &PullOptions::default()))
        .unwrap();
    assert_eq!(rec.id.to_string(), img.config_digest);
}

#[test]
fn concurrent_pulls_of_one_image_share_the_store() {
    let reg = Registry::start();
    let img = push_busybox(&reg, "twice:1", Comp::Zstd, &[]);
    let e = env();
    let rf = r(&format!("{}/twice:1", reg.addr()));
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (store, cfg, rf) = (e.store.clone(), e.cfg.clone(), rf.clone());
            std::thread::spawn(move || rt().block_on(pull(&store, &cfg, &rf, &PullOptions::default())).unwrap())
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap().id.to_string(), img.config_digest);
    }
    assert_eq!(e.store.snapshots.list().unwrap().len(), 1);
    assert_eq!(std::fs::read_dir(e.store.snapshots.dir().join("tmp")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(e.store.root().join("content/ingest")).unwrap().count(), 0);
}

/// Two images sharing a base layer, pulled into one store where the base
/// is already unpacked but not recorded (a pull killed after unpacking
/// it), or recorded by the other image: each image's size is the sum of
/// its own layers, the same as in a store of its own.
#[test]
fn image_size_is_the_sum_of_its_layers_whatever_the_store_had() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut l = OciLayout::new(tmp.path());
    let base = busybox_layer();
    let a = l.image(&[base.clone(), Layer::new().file("a", &[1u8; 5000]).tar()], Comp::Gzip, json!({}), "amd64");
    let b = l.image(&[base, Layer::new().file("b", &[2u8; 7000]).tar()], Comp::Gzip, json!({}), "amd64");
    l.tag(&a, "a");
    l.tag(&b, "b");
    l.push("a", &format!("{}/sz:a", reg.addr()), &[]);
    l.push("b", &format!("{}/sz:b", reg.addr()), &[]);
    let (ra, rb) = (r(&format!("{}/sz:a", reg.addr())), r(&format!("{}/sz:b", reg.addr())));
    let alone = |rf: &Reference| {
        let e = env();
        rt().block_on(pull(&e.store, &e.cfg, rf, &PullOptions::default())).unwrap().size
    };
    let (size_a, size_b) = (alone(&ra), alone(&rb));
    assert!(size_a > 1_000_000 && size_b - size_a == 2000, "{size_a} {size_b}");

    let e = env();
    // What a pull killed after unpacking the base leaves: its snapshot, no record.
    let base_digest: Digest = a.layer_digests[0].parse().unwrap();
    let diff_id: Digest = a.diff_ids[0].parse().unwrap();
    let blob = std::fs::read(l.dir.join("blobs/sha256").join(&a.layer_digests[0][7..])).unwrap();
    e.store.content.write_bytes(Some(&base_digest), &blob).unwrap();
    berth_image::pull::unpack_blob(&e.store, &base_digest, &diff_id, &diff_id, &Default::default(), false).unwrap();
    assert!(e.store.meta.read_all().unwrap().snapshots.is_empty());
    let got_a = rt().block_on(pull(&e.store, &e.cfg, &ra, &PullOptions::default())).unwrap();
    let got_b = rt().block_on(pull(&e.store, &e.cfg, &rb, &PullOptions::default())).unwrap();
    assert_eq!((got_a.size, got_b.size), (size_a, size_b));
    let s = e.store.meta.read_all().unwrap();
    assert_eq!(s.snapshot(&got_a.layers[0].chain_id).unwrap().size, size_a - 5000, "the base's record");
}

/// A container's hold keeps its layers after `rmi -f` deleted the image
/// record (a stopped container), and a hold taken while a collection
/// runs is never swept.
#[test]
fn holds_keep_snapshots_without_the_image_record() {
    use berth_image::images::{self, Use};
    let reg = Registry::start();
    let img = push_busybox(&reg, "held:1", Comp::Gzip, &[]);
    let e = env();
    let name = format!("{}/held:1", reg.addr());
    rt().block_on(pull(&e.store, &e.cfg, &r(&name), &PullOptions::default())).unwrap();
    let rec = images::hold(&e.store, &name, "container/c1").unwrap();
    let top = rec.layers[0].chain_id.clone();
    let stopped = |h: &str| Some(Use::Stopped(h.to_string()));
    let err = images::remove(&e.store, &img.config_digest, false, &stopped).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "conflict: unable to delete {} (must be forced) - image is being used by stopped container container/c1",
            &img.config_digest[7..19]
        )
    );
    let running = |h: &str| Some(Use::Running(h.to_string()));
    let err = images::remove(&e.store, &img.config_digest, true, &running).unwrap_err().to_string();
    assert!(err.contains("(cannot be forced) - image is being used by running container container/c1"), "{err}");
    let done = images::remove(&e.store, &img.config_digest, true, &stopped).unwrap();
    assert!(done.contains(&images::Removed::Deleted(rec.id.clone())), "{done:?}");
    gc::collect(&e.store).unwrap();
    assert!(e.store.snapshots.exists(&top), "the stopped container's layer stays");
    assert!(e.store.content.contains(&rec.id), "and its config");
    assert!(images::hold(&e.store, &name, "container/c2").is_err(), "no image to hold any more");
    e.store.meta.write(|tx| tx.remove_refs("container/c1")).unwrap();
    gc::collect(&e.store).unwrap();
    assert!(!e.store.snapshots.exists(&top));

    // Holds and collections at once, many times: a hold that got its
    // image always has its snapshot afterwards.
    for i in 0..20 {
        rt().block_on(pull(&e.store, &e.cfg, &r(&name), &PullOptions::default())).unwrap();
        let holder = format!("container/race{i}");
        let (store, h, n) = (e.store.clone(), holder.clone(), name.clone());
        let taker = std::thread::spawn(move || images::hold(&store, &n, &h));
        let _ = images::remove(&e.store, &name, false, &|_| None);
        gc::collect(&e.store).unwrap();
        if let Ok(held) = taker.join().unwrap() {
            assert!(e.store.snapshots.exists(&held.layers[0].chain_id), "round {i}: held layer swept");
            e.store.meta.write(|tx| tx.remove_refs(&holder)).unwrap();
        }
    }
}

/// What killed pulls leave (a half-unpacked snapshot directory, lock files
/// of snapshots that are then removed) is gone after a collection.
#[test]
fn gc_removes_abandoned_unpacks_and_lock_files() {
    let reg = Registry::start();
    let _img = push_busybox(&reg, "gc:1", Comp::Gzip, &[]);
    let e = env();
    let name = format!("{}/gc:1", reg.addr());
    rt().block_on(pull(&e.store, &e.cfg, &r(&name), &PullOptions::default())).unwrap();
    let snaps = e.store.snapshots.dir().to_path_buf();
    // A pull killed mid-unpack: its temporary directory (lock dropped with
    // the process) and the chain's lock file.
    let abandoned = snaps.join("tmp/0123456789ab-00000000deadbeef");
    std::fs::create_dir_all(abandoned.join("fs/bin")).unwrap();
    std::fs::write(abandoned.join("fs/bin/half"), b"x").unwrap();
    std::fs::write(snaps.join("locks").join("ab".repeat(32)), b"").unwrap();
    gc::collect(&e.store).unwrap();
    assert_eq!(std::fs::read_dir(snaps.join("tmp")).unwrap().count(), 0);
    let locks = || std::fs::read_dir(snaps.join("locks")).unwrap().count();
    assert_eq!(locks(), 1, "only the lock of the snapshot that exists");
    berth_image::images::remove(&e.store, &name, false, &|_| None).unwrap();
    gc::collect(&e.store).unwrap();
    assert_eq!(locks(), 0, "a removed snapshot's lock goes with it");
    assert!(e.store.snapshots.list().unwrap().is_empty());
}
