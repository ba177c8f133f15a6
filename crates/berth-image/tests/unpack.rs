//! Layer unpacking: overlay form of whiteouts, metadata kept, and a corpus
//! of hostile layers, one per escape, each showing the host untouched.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_image::Error;
use berth_image::unpack::{UnpackOptions, unpack_layer};
use berth_testkit::image::{Layer, gzip, sha256, zstd};

/// A host directory with a victim file, and an empty snapshot inside it.
struct Scene {
    _tmp: tempfile::TempDir,
    host: PathBuf,
    snap: PathBuf,
}

impl Scene {
    fn new() -> Scene {
        berth_testkit::require_root();
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("host");
        std::fs::create_dir_all(host.join("dir")).unwrap();
        std::fs::write(host.join("victim"), "original").unwrap();
        let snap = tmp.path().join("host/snapshots/1/fs");
        std::fs::create_dir_all(&snap).unwrap();
        Scene { _tmp: tmp, host, snap }
    }

    fn unpack(&self, tar: &[u8]) -> Result<berth_image::unpack::Unpacked, Error> {
        unpack_layer(tar, &self.snap, "test", &UnpackOptions::default())
    }

    /// The host part (everything but the snapshot) is exactly as made.
    fn assert_host_untouched(&self) {
        let mut names: Vec<String> = std::fs::read_dir(&self.host)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["dir", "snapshots", "victim"], "new entries on the host");
        assert_eq!(std::fs::read_to_string(self.host.join("victim")).unwrap(), "original");
        let m = std::fs::symlink_metadata(self.host.join("victim")).unwrap();
        assert!(m.file_type().is_file());
        assert_eq!(m.nlink(), 1, "victim was hardlinked");
        assert_eq!(std::fs::read_dir(self.host.join("dir")).unwrap().count(), 0, "host dir written");
        assert!(xattr_of(&self.host.join("dir"), "trusted.overlay.opaque").is_none());
        assert_eq!(std::fs::read_dir(self.host.join("snapshots")).unwrap().count(), 1);
    }

    fn host_str(&self) -> String {
        self.host.to_str().unwrap().to_string()
    }
}

fn xattr_of(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::lgetxattr(p, name, &mut buf) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

#[test]
fn whiteouts_become_overlay_form_and_metadata_is_kept() {
    let s = Scene::new();
    let tar = Layer::new()
        .dir("etc", 0o755)
        .file_with(
            "etc/secret",
            b"x",
            0o4750,
            1000,
            1001,
            &[("user.test", b"value"), ("trusted.overlay.redirect", b"/x")],
        )
        .hardlink("etc/secret-link", "etc/secret")
        .symlink("etc/link", "/etc/secret")
        .char_dev("dev-null", 1, 3)
        .fifo("pipe")
        .whiteout("etc", "gone")
        .dir("opq", 0o700)
        .opaque("opq")
        .whiteout("", "top")
        .tar();
    let u = s.unpack(&tar).unwrap();
    assert_eq!(u.diff_id.to_string(), sha256(&tar));
    let fs = &s.snap;
    let m = std::fs::metadata(fs.join("etc/secret")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1000, 1001, 0o4750));
    assert_eq!(m.mtime(), 1_700_000_000);
    assert_eq!(m.nlink(), 2);
    assert_eq!(xattr_of(&fs.join("etc/secret"), "user.test").as_deref(), Some(&b"value"[..]));
    assert!(xattr_of(&fs.join("etc/secret"), "trusted.overlay.redirect").is_none(), "trusted xattr kept");
    assert_eq!(std::fs::read_link(fs.join("etc/link")).unwrap(), Path::new("/etc/secret"));
    let gone = std::fs::symlink_metadata(fs.join("etc/gone")).unwrap();
    assert!(gone.file_type().is_char_device() && gone.rdev() == 0, "whiteout is a 0:0 char device");
    assert!(std::fs::symlink_metadata(fs.join("top")).unwrap().file_type().is_char_device());
    assert_eq!(xattr_of(&fs.join("opq"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert!(!fs.join("opq/.wh..wh..opq").exists());
    let dev = std::fs::symlink_metadata(fs.join("dev-null")).unwrap();
    assert!(dev.file_type().is_char_device());
    assert_eq!(dev.rdev(), rustix::fs::makedev(1, 3));
    assert!(std::fs::symlink_metadata(fs.join("pipe")).unwrap().file_type().is_fifo());
    assert_eq!(std::fs::metadata(fs.join("etc")).unwrap().mtime(), 1_700_000_000, "dir mtime set last");
    assert_eq!(std::fs::metadata(fs.join("opq")).unwrap().permissions().mode() & 0o777, 0o700);
}

#[test]
fn gzip_and_zstd_layers_give_the_same_tree_and_diff_id() {
    let tar = Layer::new().dir("a", 0o755).file("a/b", b"hello").tar();
    for data in [tar.clone(), gzip(&tar), zstd(&tar)] {
        let s = Scene::new();
        let u = s.unpack(&data).unwrap();
        assert_eq!(u.diff_id.to_string(), sha256(&tar));
        assert_eq!(u.size, 5);
        assert_eq!(std::fs::read(s.snap.join("a/b")).unwrap(), b"hello");
    }
}

/// A blob stream that hands out one byte per read, as a slow registry
/// connection may: the first read holds less than the compression magic.
struct Trickle<'a>(&'a [u8]);

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some((first, rest)) = self.0.split_first() else { return Ok(0) };
        buf[0] = *first;
        self.0 = rest;
        Ok(1)
    }
}

#[test]
fn a_compressed_layer_arriving_a_byte_at_a_time_is_still_decompressed() {
    let tar = Layer::new().dir("a", 0o755).file("a/b", b"hello").tar();
    for data in [gzip(&tar), zstd(&tar)] {
        let s = Scene::new();
        let u = unpack_layer(Trickle(&data), &s.snap, "test", &UnpackOptions::default()).unwrap();
        assert_eq!(u.diff_id.to_string(), sha256(&tar));
        assert_eq!(std::fs::read(s.snap.join("a/b")).unwrap(), b"hello");
    }
}

#[test]
fn hostile_layer_cannot_escape_with_dotdot() {
    let s = Scene::new();
    s.unpack(&Layer::new().file("../../../escaped", b"x").file("a/../../../../escaped2", b"x").tar()).unwrap();
    assert!(s.snap.join("escaped").exists() && s.snap.join("escaped2").exists());
    s.assert_host_untouched();
}

#[test]
fn hostile_layer_absolute_names_stay_inside() {
    let s = Scene::new();
    let abs = format!("{}/victim", s.host_str());
    s.unpack(&Layer::new().file(&abs, b"pwned").file(&format!("{}/dir/new", s.host_str()), b"x").tar()).unwrap();
    assert_eq!(std::fs::read(s.snap.join(abs.trim_start_matches('/'))).unwrap(), b"pwned");
    s.assert_host_untouched();
}

#[test]
fn hostile_layer_cannot_write_through_symlink() {
    let s = Scene::new();
    let tar = Layer::new()
        .symlink("out", &s.host_str())
        .file("out/victim", b"pwned")
        .file("out/dir/new", b"x")
        .symlink("rel", "../../../../../../../../..")
        .file(&format!("rel{}/dir/new2", s.host_str()), b"x")
        .tar();
    s.unpack(&tar).unwrap();
    s.assert_host_untouched();
}

#[test]
fn hostile_layer_cannot_replace_a_file_through_a_final_symlink() {
    let s = Scene::new();
    let victim = format!("{}/victim", s.host_str());
    let tar = Layer::new().symlink("f", &victim).file("f", b"pwned").symlink("g", &victim).dir("g", 0o755).tar();
    s.unpack(&tar).unwrap();
    assert_eq!(std::fs::read(s.snap.join("f")).unwrap(), b"pwned");
    assert!(s.snap.join("g").is_dir());
    s.assert_host_untouched();
}

#[test]
fn hostile_layer_cannot_hardlink_outside() {
    for target in [format!("{}/victim", "HOST"), "../../../victim".to_string(), "out/victim".to_string()] {
        let s = Scene::new();
        let target = target.replace("HOST", &s.host_str());
        let tar = Layer::new().symlink("out", &s.host_str()).hardlink("stolen", &target).tar();
        let r = s.unpack(&tar);
        assert!(matches!(r, Err(Error::Io { .. })), "hardlink to {target} accepted: {r:?}");
        assert!(r.unwrap_err().to_string().contains("stolen"));
        s.assert_host_untouched();
    }
}

#[test]
fn hostile_layer_whiteouts_and_opaque_dirs_stay_inside() {
    let s = Scene::new();
    let tar = Layer::new()
        .file("../.wh.victim", b"")
        .symlink("out", &s.host_str())
        .whiteout("out", "victim")
        .opaque("out/dir")
        .whiteout("..", "dir")
        .tar();
    s.unpack(&tar).unwrap();
    s.assert_host_untouched();
}

#[test]
fn hostile_layer_device_and_fifo_names_stay_inside() {
    let s = Scene::new();
    let tar = Layer::new().char_dev("../../devnode", 1, 3).fifo(&format!("{}/fifo", s.host_str())).tar();
    s.unpack(&tar).unwrap();
    assert!(s.snap.join("devnode").exists());
    s.assert_host_untouched();
}

#[test]
fn decompression_bomb_is_stopped_at_the_limit() {
    let s = Scene::new();
    let big = vec![0u8; 24 << 20];
    let tar = Layer::new().file("zeros", &big).tar();
    let bomb = gzip(&tar);
    assert!(bomb.len() < 1 << 20);
    let r = unpack_layer(&bomb[..], &s.snap, "bomb", &UnpackOptions { max_size: 4 << 20 });
    assert!(matches!(r, Err(Error::TooLarge { limit, .. }) if limit == 4 << 20), "{r:?}");
    let written = std::fs::metadata(s.snap.join("zeros")).map(|m| m.len()).unwrap_or(0);
    assert!(written <= 4 << 20, "wrote {written} bytes");
    s.assert_host_untouched();
}

#[test]
fn sparse_bomb_is_stopped_at_the_limit() {
    // A GNU sparse entry's holes come out of the tar reader as zeros that
    // the stream never held: this 1.5 KiB layer asks for 64 MiB of them.
    let s = Scene::new();
    let real: u64 = 64 << 20;
    let octal = |v: u64| -> [u8; 12] { format!("{v:011o}\0").as_bytes().try_into().unwrap() };
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_path("sparse").unwrap();
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(0);
    let gnu = h.as_gnu_mut().unwrap();
    gnu.realsize = octal(real);
    gnu.sparse[0].offset = octal(real);
    gnu.sparse[0].numbytes = octal(0);
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend([0u8; 1024]);
    let r = unpack_layer(&tar[..], &s.snap, "sparse", &UnpackOptions { max_size: 4 << 20 });
    assert!(matches!(r, Err(Error::TooLarge { limit, .. }) if limit == 4 << 20), "{r:?}");
    let written = std::fs::metadata(s.snap.join("sparse")).map(|m| m.len()).unwrap_or(0);
    assert!(written <= 4 << 20, "wrote {written} bytes");
    s.assert_host_untouched();
}

#[test]
fn corrupt_layers_fail_cleanly() {
    let s = Scene::new();
    let mut gz = gzip(&Layer::new().file("a", &[7u8; 10000]).tar());
    let n = gz.len();
    gz.truncate(n / 2);
    assert!(s.unpack(&gz).is_err());
    s.assert_host_untouched();
}
