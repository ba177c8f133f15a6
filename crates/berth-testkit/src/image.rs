//! Image building for tests, independent of berth-image (so the code under
//! test never checks itself): raw layer tarballs (hostile ones included,
//! with names the `tar` crate's safe API refuses), compression, and OCI
//! image layouts that `skopeo` pushes to a test registry.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A layer tarball built entry by entry with raw names.
pub struct Layer {
    b: tar::Builder<Vec<u8>>,
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

fn header(kind: tar::EntryType, name: &str, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(0);
    // Raw bytes: `set_path` would refuse `..` and absolute names, which is
    // exactly what hostile layers contain.
    let n = name.as_bytes();
    assert!(n.len() < 100, "test names stay short");
    let gnu = h.as_gnu_mut().unwrap();
    gnu.name[..n.len()].copy_from_slice(n);
    h
}

fn set_link(h: &mut tar::Header, target: &str) {
    let t = target.as_bytes();
    assert!(t.len() < 100);
    let gnu = h.as_gnu_mut().unwrap();
    gnu.linkname = [0; 100];
    gnu.linkname[..t.len()].copy_from_slice(t);
}

impl Layer {
    pub fn new() -> Layer {
        Layer { b: tar::Builder::new(Vec::new()) }
    }

    pub fn dir(mut self, name: &str, mode: u32) -> Self {
        let mut h = header(tar::EntryType::Directory, name, mode);
        h.set_cksum();
        self.b.append(&h, &[][..]).unwrap();
        self
    }

    pub fn file(self, name: &str, data: &[u8]) -> Self {
        self.file_with(name, data, 0o644, 0, 0, &[])
    }

    /// A regular file with mode, owner and PAX xattrs.
    pub fn file_with(
        mut self,
        name: &str,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
        xattrs: &[(&str, &[u8])],
    ) -> Self {
        if !xattrs.is_empty() {
            let mut pax = Vec::new();
            for (k, v) in xattrs {
                let key = format!("SCHILY.xattr.{k}");
                // "len key=value\n", where len counts itself.
                let body_len = 1 + key.len() + 1 + v.len() + 1;
                let mut len = body_len + 1;
                while format!("{len}").len() + body_len != len {
                    len += 1;
                }
                pax.extend_from_slice(format!("{len} {key}=").as_bytes());
                pax.extend_from_slice(v);
                pax.push(b'\n');
            }
            let mut h = header(tar::EntryType::XHeader, "PaxHeaders/x", 0o644);
            h.set_size(pax.len() as u64);
            h.set_cksum();
            self.b.append(&h, pax.as_slice()).unwrap();
        }
        let mut h = header(tar::EntryType::Regular, name, mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn symlink(mut self, name: &str, target: &str) -> Self {
        let mut h = header(tar::EntryType::Symlink, name, 0o777);
        set_link(&mut h, target);
        h.set_cksum();
        self.b.append(&h, &[][..]).unwrap();
        self
    }

    pub fn hardlink(mut self, name: &str, target: &str) -> Self {
        let mut h = header(tar::EntryType::Link, name, 0o644);
        set_link(&mut h, target);
        h.set_cksum();
        self.b.append(&h, &[][..]).unwrap();
        self
    }

    pub fn char_dev(mut self, name: &str, major: u32, minor: u32) -> Self {
        let mut h = header(tar::EntryType::Char, name, 0o600);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.b.append(&h, &[][..]).unwrap();
        self
    }

    pub fn fifo(mut self, name: &str) -> Self {
        let mut h = header(tar::EntryType::Fifo, name, 0o640);
        h.set_cksum();
        self.b.append(&h, &[][..]).unwrap();
        self
    }

    /// `.wh.NAME` in DIR (docker's whiteout form).
    pub fn whiteout(self, dir: &str, name: &str) -> Self {
        let p = if dir.is_empty() { format!(".wh.{name}") } else { format!("{dir}/.wh.{name}") };
        self.file(&p, b"")
    }

    /// `.wh..wh..opq` in DIR.
    pub fn opaque(self, dir: &str) -> Self {
        self.file(&format!("{dir}/.wh..wh..opq"), b"")
    }

    /// Adds a whole host directory tree under `prefix` (e.g. a busybox rootfs).
    pub fn tree(mut self, prefix: &str, dir: &Path) -> Self {
        self.b.follow_symlinks(false);
        self.b.append_dir_all(prefix, dir).unwrap();
        self
    }

    /// The uncompressed tarball.
    pub fn tar(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// Layer compression in an [`OciLayout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
}

/// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/`).
pub struct OciLayout {
    pub dir: PathBuf,
    manifests: Vec<Value>,
}

/// What was written for one image.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
    pub diff_ids: Vec<String>,
    pub manifest: Vec<u8>,
}

impl OciLayout {
    pub fn new(dir: &Path) -> OciLayout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        OciLayout { dir: dir.to_path_buf(), manifests: Vec::new() }
    }

    pub fn blob(&self, data: &[u8]) -> String {
        let d = sha256(data);
        std::fs::write(self.dir.join("blobs/sha256").join(&d[7..]), data).unwrap();
        d
    }

    /// Writes an image of `layers` (uncompressed tars, compressed as asked)
    /// with `config` (the runtime part: Cmd, Env, ...), for `arch`.
    pub fn image(&mut self, layers: &[Vec<u8>], comp: Comp, config: Value, arch: &str) -> BuiltImage {
        let mut layer_descs = Vec::new();
        let mut diff_ids = Vec::new();
        let mut layer_digests = Vec::new();
        for l in layers {
            diff_ids.push(sha256(l));
            let (data, mt) = match comp {
                Comp::None => (l.clone(), "application/vnd.oci.image.layer.v1.tar"),
                Comp::Gzip => (gzip(l), "application/vnd.oci.image.layer.v1.tar+gzip"),
                Comp::Zstd => (zstd(l), "application/vnd.oci.image.layer.v1.tar+zstd"),
            };
            let d = self.blob(&data);
            layer_digests.push(d.clone());
            layer_descs.push(json!({"mediaType": mt, "digest": d, "size": data.len()}));
        }
        let cfg = json!({
            "created": "2024-01-01T00:00:00Z",
            "architecture": arch,
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": layers.iter().map(|_| json!({"created_by": "berth-testkit"})).collect::<Vec<_>>(),
        });
        let cfg = serde_json::to_vec(&cfg).unwrap();
        let config_digest = self.blob(&cfg);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": cfg.len()},
            "layers": layer_descs,
        }))
        .unwrap();
        let manifest_digest = self.blob(&manifest);
        BuiltImage { manifest_digest, config_digest, layer_digests, diff_ids, manifest }
    }

    /// Lists a manifest in index.json under `tag`.
    pub fn tag(&mut self, img: &BuiltImage, tag: &str) {
        self.manifests.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": img.manifest_digest, "size": img.manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
        self.write_index();
    }

    /// Writes a multi-platform index of `imgs` (with their archs) as a blob,
    /// and lists it in index.json under `tag`. Returns its digest.
    pub fn multi(&mut self, imgs: &[(&BuiltImage, &str)], tag: &str) -> String {
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": imgs.iter().map(|(i, arch)| json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": i.manifest_digest, "size": i.manifest.len(),
                "platform": {"architecture": arch, "os": "linux"},
            })).collect::<Vec<_>>(),
        }))
        .unwrap();
        let d = self.blob(&index);
        self.manifests.push(json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": d, "size": index.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
        self.write_index();
        d
    }

    fn write_index(&self) {
        let idx = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": self.manifests});
        std::fs::write(self.dir.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
    }

    /// Pushes `tag` to `dest` (`127.0.0.1:PORT/name:tag`) with skopeo,
    /// keeping every digest (`--all` for indexes).
    pub fn push(&self, tag: &str, dest: &str, extra: &[&str]) {
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--all", "--preserve-digests", "--dest-tls-verify=false"])
            .args(extra)
            .arg(format!("oci:{}:{tag}", self.dir.display()))
            .arg(format!("docker://{dest}"))
            .output()
            .expect("run skopeo (install Debian's skopeo)");
        assert!(out.status.success(), "skopeo copy to {dest}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// A busybox-static rootfs as an uncompressed layer: /bin/busybox, applet
/// links for a few applets, /etc/passwd and /etc/group.
pub fn busybox_layer() -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::copy(crate::busybox(), root.join("bin/busybox")).unwrap();
    for a in ["sh", "ls", "cat", "echo", "true", "sleep", "env", "id"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    Layer::new().tree(".", root).tar()
}
