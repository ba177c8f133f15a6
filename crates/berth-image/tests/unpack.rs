//! Layers unpacked as overlayfs reads them, and hostile layers (one per
//! way out) leaving the host untouched.

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use berth_image::unpack::{Limits, UnpackError, unpack};

/// A tar entry with a name written as is (tar's own setters refuse `..`,
/// which is the point here).
fn entry(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>, mode: u32) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_uid(1234);
    h.set_gid(5678);
    h.set_mtime(1_000_000_000);
    if kind == tar::EntryType::Char || kind == tar::EntryType::Block {
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
    }
    let gnu = h.as_gnu_mut().unwrap();
    gnu.name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(l) = link {
        gnu.linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn layer(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    b.into_inner().unwrap()
}

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "unpack tests need root (owners, devices, trusted xattrs)");
}

fn snapshot() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("berth-snap-").tempdir().unwrap()
}

fn xattr(path: &Path, key: &str) -> Option<Vec<u8>> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let k = std::ffi::CString::new(key).unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: valid strings and buffer for the call.
    let n = unsafe { libc::lgetxattr(p.as_ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

#[test]
fn a_layer_keeps_owners_modes_times_links_devices_and_whiteouts() {
    require_root();
    let tar = layer(|b| {
        entry(b, "etc/", tar::EntryType::Directory, b"", None, 0o755);
        entry(b, "etc/conf", tar::EntryType::Regular, b"key=value\n", None, 0o4750);
        entry(b, "etc/link", tar::EntryType::Symlink, b"", Some("/etc/conf"), 0o777);
        entry(b, "etc/hard", tar::EntryType::Link, b"", Some("etc/conf"), 0o644);
        entry(b, "dev/null", tar::EntryType::Char, b"", None, 0o666);
        entry(b, "run/fifo", tar::EntryType::Fifo, b"", None, 0o600);
        entry(b, "gone/.wh.old", tar::EntryType::Regular, b"", None, 0o644);
        entry(b, "opaque/.wh..wh..opq", tar::EntryType::Regular, b"", None, 0o644);
    });
    let snap = snapshot();
    let stats = unpack(&tar[..], snap.path(), Limits::default()).unwrap();
    assert_eq!(stats.entries, 8);
    let conf = snap.path().join("etc/conf");
    let m = std::fs::metadata(&conf).unwrap();
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), "key=value\n");
    assert_eq!((m.uid(), m.gid(), m.permissions().mode() & 0o7777, m.mtime()), (1234, 5678, 0o4750, 1_000_000_000));
    assert_eq!(std::fs::read_link(snap.path().join("etc/link")).unwrap(), Path::new("/etc/conf"));
    assert_eq!(std::fs::metadata(snap.path().join("etc/hard")).unwrap().ino(), m.ino(), "a hard link");
    let null = std::fs::metadata(snap.path().join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert!(std::fs::metadata(snap.path().join("run/fifo")).unwrap().file_type().is_fifo());
    let wh = std::fs::symlink_metadata(snap.path().join("gone/old")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0, "a whiteout is a 0:0 device");
    assert!(!snap.path().join("gone/.wh.old").exists());
    assert_eq!(xattr(&snap.path().join("opaque"), "trusted.overlay.opaque"), Some(b"y".to_vec()));
}

#[test]
fn gzip_and_zstd_layers_unpack_the_same() {
    require_root();
    let tar = layer(|b| entry(b, "hello", tar::EntryType::Regular, b"hi\n", None, 0o644));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    for data in [gz.finish().unwrap(), zst] {
        let snap = snapshot();
        unpack(&data[..], snap.path(), Limits::default()).unwrap();
        assert_eq!(std::fs::read_to_string(snap.path().join("hello")).unwrap(), "hi\n");
    }
}

/// A directory on the host that hostile layers aim at.
fn host_target() -> tempfile::TempDir {
    let d = tempfile::Builder::new().prefix("berth-host-").tempdir().unwrap();
    std::fs::write(d.path().join("precious"), "host data").unwrap();
    d
}

fn untouched(host: &Path) {
    let names: Vec<String> =
        std::fs::read_dir(host).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, ["precious"], "the host directory gained files");
    assert_eq!(std::fs::read_to_string(host.join("precious")).unwrap(), "host data");
}

#[test]
fn dot_dot_and_absolute_names_stay_inside() {
    require_root();
    let host = host_target();
    let h = host.path().display().to_string();
    let tar = layer(|b| {
        entry(b, &format!("../../../../../../..{h}/dotdot"), tar::EntryType::Regular, b"x", None, 0o644);
        entry(b, &format!("{h}/absolute"), tar::EntryType::Regular, b"x", None, 0o644);
        entry(b, &format!("{h}/precious"), tar::EntryType::Regular, b"overwritten", None, 0o644);
    });
    let snap = snapshot();
    unpack(&tar[..], snap.path(), Limits::default()).unwrap();
    untouched(host.path());
    let inside = snap.path().join(host.path().strip_prefix("/").unwrap());
    assert!(inside.join("dotdot").is_file() && inside.join("absolute").is_file(), "they land in the snapshot");
}

#[test]
fn writing_through_a_planted_symlink_stays_inside() {
    require_root();
    let host = host_target();
    let h = host.path().display().to_string();
    let layers = [
        layer(|b| {
            entry(b, "evil", tar::EntryType::Symlink, b"", Some(&h), 0o777);
            entry(b, "evil/pwned", tar::EntryType::Regular, b"x", None, 0o644);
        }),
        layer(|b| {
            entry(b, "rel", tar::EntryType::Symlink, b"", Some(&format!("../../../../../../../..{h}")), 0o777);
            entry(b, "rel/pwned2", tar::EntryType::Regular, b"x", None, 0o644);
        }),
        layer(|b| {
            entry(b, "file", tar::EntryType::Symlink, b"", Some(&format!("{h}/precious")), 0o777);
            // A regular file over the symlink replaces the link, never
            // writes through it.
            entry(b, "file", tar::EntryType::Regular, b"overwritten", None, 0o644);
        }),
    ];
    for (i, tar) in layers.iter().enumerate() {
        let snap = snapshot();
        // Refused (a directory to be made through a dangling link) or
        // placed inside: either way, never on the host.
        let r = unpack(&tar[..], snap.path(), Limits::default());
        untouched(host.path());
        if i == 2 {
            r.unwrap();
            assert!(std::fs::symlink_metadata(snap.path().join("file")).unwrap().is_file());
        }
    }
}

#[test]
fn hard_links_out_of_the_layer_are_refused() {
    require_root();
    let host = host_target();
    let h = host.path().display().to_string();
    for (name, tar) in [
        ("absolute", layer(|b| entry(b, "steal", tar::EntryType::Link, b"", Some(&format!("{h}/precious")), 0o644))),
        (
            "through a symlink",
            layer(|b| {
                entry(b, "dir", tar::EntryType::Symlink, b"", Some(&h), 0o777);
                entry(b, "steal", tar::EntryType::Link, b"", Some("dir/precious"), 0o644);
            }),
        ),
    ] {
        let snap = snapshot();
        let err = unpack(&tar[..], snap.path(), Limits::default()).unwrap_err();
        assert!(matches!(&err, UnpackError::Entry { entry, .. } if entry == "steal"), "{name}: {err}");
        assert!(!snap.path().join("steal").exists(), "{name}");
        let m = std::fs::metadata(host.path().join("precious")).unwrap();
        assert_eq!(m.nlink(), 1, "{name}: the host file got a link");
    }
    untouched(host.path());
}

#[test]
fn a_decompression_bomb_stops_at_the_limit() {
    require_root();
    let big = vec![0u8; 8 << 20];
    let tar = layer(|b| entry(b, "zeros", tar::EntryType::Regular, &big, None, 0o644));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    assert!(gz.len() < 256 << 10, "8 MiB of zeros compress to {} bytes", gz.len());
    let snap = snapshot();
    let err = unpack(&gz[..], snap.path(), Limits { max_bytes: 1 << 20, max_entries: 100 }).unwrap_err();
    assert!(matches!(err, UnpackError::TooLarge { limit } if limit == 1 << 20), "{err}");
    let many = layer(|b| {
        for i in 0..50 {
            entry(b, &format!("f{i}"), tar::EntryType::Regular, b"", None, 0o644);
        }
    });
    let err = unpack(&many[..], snapshot().path(), Limits { max_bytes: 1 << 30, max_entries: 10 }).unwrap_err();
    assert!(matches!(err, UnpackError::TooManyEntries { limit: 10 }), "{err}");
}
