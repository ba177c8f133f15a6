//! A layer from an overlay upper directory (what `berth build` commits
//! after a RUN): unpacked by berth's own unpack over the same parent, it
//! gives back exactly the tree the overlay showed.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_image::snapshot::diff::{LayerOptions, store_layer};
use berth_image::snapshot::overlay::{Upper, mount_overlay, unmount};
use berth_image::store::content::ContentStore;
use berth_image::unpack::{UnpackOptions, unpack_layer};
use berth_testkit::image::Layer;

/// A mount point unmounted on drop, even when an assertion failed.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = unmount(&self.0);
    }
}

/// Every entry under `root`: kind, mode, owner, link count, content or
/// link target, user xattr.
fn listing(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let mut buf = [0u8; 64];
        let xattr = rustix::fs::lgetxattr(&p, "user.test", &mut buf).map(|n| buf[..n].to_vec()).ok();
        let what = if m.is_dir() {
            walk(root, &p, out);
            "dir".to_string()
        } else if m.file_type().is_symlink() {
            format!("-> {}", std::fs::read_link(&p).unwrap().display())
        } else {
            format!("file {:?} nlink {}", std::fs::read_to_string(&p).unwrap(), m.nlink())
        };
        out.insert(rel, format!("{what} mode {:o} {}:{} xattr {xattr:?}", m.mode() & 0o7777, m.uid(), m.gid()));
    }
}

fn tar_names(blob: &Path) -> Vec<String> {
    let mut data = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(blob).unwrap()).read_to_end(&mut data).unwrap();
    let mut ar = tar::Archive::new(data.as_slice());
    ar.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect()
}

struct Scene {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    lower: PathBuf,
    content: ContentStore,
}

impl Scene {
    fn new() -> Scene {
        berth_testkit::require_root();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let lower = dir.join("lower");
        std::fs::create_dir(&lower).unwrap();
        let base = Layer::new()
            .file("gone", b"deleted later")
            .dir("replaced", 0o755)
            .file("replaced/old", b"hidden by the opaque dir")
            .dir("kept", 0o755)
            .file("kept/k", b"k")
            .tar();
        unpack_layer(base.as_slice(), &lower, "base", &UnpackOptions::default()).unwrap();
        let content = ContentStore::open(&dir.join("content")).unwrap();
        Scene { _tmp: tmp, dir, lower, content }
    }

    fn mkdirs(&self, names: &[&str]) -> Vec<PathBuf> {
        names
            .iter()
            .map(|n| {
                let p = self.dir.join(n);
                std::fs::create_dir_all(&p).unwrap();
                p
            })
            .collect()
    }
}

/// The changes a RUN step could make, through the merged view.
fn change(merged: &Path) {
    std::fs::remove_file(merged.join("gone")).unwrap();
    std::fs::remove_dir_all(merged.join("replaced")).unwrap();
    std::fs::create_dir(merged.join("replaced")).unwrap();
    std::fs::write(merged.join("replaced/new"), "new").unwrap();
    std::fs::write(merged.join("kept/k2"), "k2").unwrap();
    let b = merged.join("b");
    std::fs::write(&b, "linked").unwrap();
    std::os::unix::fs::chown(&b, Some(1234), Some(5678)).unwrap();
    std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o4750)).unwrap();
    rustix::fs::setxattr(&b, "user.test", b"v", rustix::fs::XattrFlags::empty()).unwrap();
    std::fs::hard_link(&b, merged.join("b2")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", merged.join("s")).unwrap();
}

#[test]
fn layer_from_upper_unpacks_to_the_tree_the_overlay_showed() {
    let s = Scene::new();
    let [upper, work, merged, unpacked, check] =
        s.mkdirs(&["upper", "work", "merged", "unpacked", "check"]).try_into().unwrap();
    let before = {
        mount_overlay(
            std::slice::from_ref(&s.lower),
            Some(Upper { upper: &upper, work: &work, volatile: false }),
            &merged,
        )
        .unwrap();
        let _m = Mounted(merged.clone());
        change(&merged);
        listing(&merged)
    };
    assert!(!before.contains_key("gone") && !before.contains_key("replaced/old"));

    let layer = store_layer(&s.content, &upper, &LayerOptions::default()).unwrap();
    let blob = s.content.path(&layer.digest);
    assert_eq!(std::fs::metadata(&blob).unwrap().len(), layer.size);
    let names = tar_names(&blob);
    assert!(names.contains(&".wh.gone".to_string()), "{names:?}");
    assert!(names.contains(&"replaced/.wh..wh..opq".to_string()), "{names:?}");
    assert_eq!(names.iter().filter(|n| n.as_str() == "b" || n.as_str() == "b2").count(), 2);

    let u = unpack_layer(std::fs::File::open(&blob).unwrap(), &unpacked, "built", &UnpackOptions::default()).unwrap();
    assert_eq!(u.diff_id, layer.diff_id, "diff ID is the uncompressed tar's sha256");
    mount_overlay(&[unpacked.clone(), s.lower.clone()], None, &check).unwrap();
    let _m = Mounted(check.clone());
    assert_eq!(listing(&check), before);
}

#[test]
fn source_date_epoch_makes_layers_byte_identical_and_clamps_mtimes() {
    let s = Scene::new();
    let mut digests = Vec::new();
    for i in 0..2 {
        let [upper, work, merged] =
            s.mkdirs(&[&format!("u{i}"), &format!("w{i}"), &format!("m{i}")]).try_into().unwrap();
        mount_overlay(
            std::slice::from_ref(&s.lower),
            Some(Upper { upper: &upper, work: &work, volatile: false }),
            &merged,
        )
        .unwrap();
        let m = Mounted(merged.clone());
        change(&merged);
        // Different times on disk in the two runs.
        let t = rustix::fs::Timespec { tv_sec: 2_000_000 + i, tv_nsec: 0 };
        let times = rustix::fs::Timestamps { last_access: t, last_modification: t };
        rustix::fs::utimensat(rustix::fs::CWD, merged.join("b"), &times, rustix::fs::AtFlags::empty()).unwrap();
        drop(m);
        let layer = store_layer(&s.content, &upper, &LayerOptions { source_date_epoch: Some(1_000_000) }).unwrap();
        let mut data = Vec::new();
        let blob = std::fs::File::open(s.content.path(&layer.digest)).unwrap();
        flate2::read::GzDecoder::new(blob).read_to_end(&mut data).unwrap();
        for e in tar::Archive::new(data.as_slice()).entries().unwrap() {
            let e = e.unwrap();
            assert!(e.header().mtime().unwrap() <= 1_000_000, "{:?} not clamped", e.path().unwrap());
        }
        digests.push(layer.digest);
    }
    assert_eq!(digests[0], digests[1]);
}
