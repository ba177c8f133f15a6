//! A layer from an overlay upper directory: what a build step changed,
//! as an OCI layer tar (the inverse of [`crate::unpack`]).
//!
//! The upper directory is already a diff in overlay form: a deleted file is
//! a 0:0 character device, a directory whose lower content is hidden has
//! `trusted.overlay.opaque=y`. Those become `.wh.NAME` and `.wh..wh..opq`
//! entries. Entries are sorted by name, hardlinks are stored once (later
//! names are link entries), owners, modes, xattrs and device numbers are
//! kept, and no user or group names nor access times are written, so the
//! same tree always gives the same bytes; with `source_date_epoch`, mtimes
//! are clamped to it (reproducible builds, as BuildKit does).
//!
//! The upper directory was written by an untrusted process: nothing in it
//! is followed (symlinks are read as links, files opened `O_NOFOLLOW`).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;
use tar::{EntryType, Header};

use crate::digest::{Digest, Hasher};
use crate::error::{Error, IoContext, Result};
use crate::media;
use crate::store::content::ContentStore;

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Set on a directory renamed with overlay's redirect_dir feature: its
/// content comes from elsewhere in the lower layers, which a tar of the
/// upper directory cannot express (berth's mounts leave the feature off).
const REDIRECT_XATTR: &str = "trusted.overlay.redirect";
/// Set on a metadata-only copy-up (metacopy feature): the data is below.
const METACOPY_XATTR: &str = "trusted.overlay.metacopy";
/// The xattr namespaces kept, as unpack keeps them.
const KEPT_XATTRS: [&str; 3] = ["user.", "security.", "system.posix_acl_"];

/// How to write a layer.
#[derive(Clone, Debug, Default)]
pub struct LayerOptions {
    /// Clamp every mtime to this (seconds since the epoch).
    pub source_date_epoch: Option<i64>,
}

/// A layer stored in the content store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// sha256 of the gzip blob.
    pub digest: Digest,
    /// The blob's size.
    pub size: u64,
    pub media_type: &'static str,
    /// Bytes of the regular files in it (each hardlinked file once), as
    /// [`crate::unpack::Unpacked::size`] counts them.
    pub unpacked_size: u64,
}

/// Writes the diff in `upper` as a gzip layer into the content store.
pub fn store_layer(content: &ContentStore, upper: &Path, opts: &LayerOptions) -> Result<Layer> {
    let ingest = content.root().join("ingest");
    let mut tmp = tempfile::Builder::new()
        .prefix("layer-")
        .tempfile_in(&ingest)
        .ctx(|| format!("create a file in {}", ingest.display()))?;
    // Held while written, so a collection leaves it alone (see
    // ContentStore::stale_partials); a killed build's file is swept.
    rustix::fs::flock(tmp.as_file(), rustix::fs::FlockOperation::LockExclusive)
        .ctx(|| format!("lock {}", tmp.path().display()))?;
    let shown = tmp.path().display().to_string();
    let blob = HashingWriter::new(io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut()));
    let gz = GzEncoder::new(blob, Compression::fast());
    let mut tar = HashingWriter::new(gz);
    let unpacked_size = write_tar(upper, &mut tar, opts)?;
    let (gz, diff_id, _) = tar.finish();
    let blob = gz.finish().ctx(|| format!("write {shown}"))?;
    let (mut buffered, digest, size) = blob.finish();
    buffered.flush().ctx(|| format!("write {shown}"))?;
    drop(buffered);
    content.adopt(tmp, &digest)?;
    Ok(Layer { diff_id, digest, size, media_type: media::OCI_LAYER_GZIP, unpacked_size })
}

/// Writes the diff in `upper` as an uncompressed tar to `out`; the bytes
/// of its regular files.
pub fn write_tar(upper: &Path, out: impl Write, opts: &LayerOptions) -> Result<u64> {
    let mut w = TarWriter { tar: tar::Builder::new(out), opts, links: HashMap::new(), size: 0 };
    w.dir(upper, "")?;
    w.tar.finish().ctx(|| "finish layer tar".into())?;
    Ok(w.size)
}

struct TarWriter<'a, W: Write> {
    tar: tar::Builder<W>,
    opts: &'a LayerOptions,
    /// (dev, ino) of files with several links → the first name written.
    links: HashMap<(u64, u64), String>,
    /// Bytes of the regular files written.
    size: u64,
}

impl<W: Write> TarWriter<'_, W> {
    /// The entries of the directory `abs` (`rel` in the layer), sorted.
    fn dir(&mut self, abs: &Path, rel: &str) -> Result<()> {
        let mut names: Vec<Vec<u8>> = Vec::new();
        for e in fs::read_dir(abs).ctx(|| format!("read {}", abs.display()))? {
            let e = e.ctx(|| format!("read {}", abs.display()))?;
            names.push(e.file_name().as_bytes().to_vec());
        }
        names.sort();
        for n in names {
            let name = OsStr::from_bytes(&n);
            let child_rel = if rel.is_empty() {
                name.to_string_lossy().into_owned()
            } else {
                format!("{rel}/{}", name.to_string_lossy())
            };
            if String::from_utf8(n.clone()).is_err() {
                return Err(self.err(&child_rel, "file name is not UTF-8 (not representable in the layer)"));
            }
            self.entry(&abs.join(name), &child_rel)?;
        }
        Ok(())
    }

    fn err(&self, rel: &str, reason: impl std::fmt::Display) -> Error {
        Error::Layer { layer: "build".into(), entry: rel.to_string(), reason: reason.to_string() }
    }

    fn header(&self, kind: EntryType, m: &fs::Metadata) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(m.mode() & 0o7777);
        h.set_uid(m.uid().into());
        h.set_gid(m.gid().into());
        let mtime = m.mtime().max(0);
        let mtime = match self.opts.source_date_epoch {
            Some(epoch) => mtime.min(epoch.max(0)),
            None => mtime,
        };
        h.set_mtime(mtime as u64);
        h.set_size(0);
        h
    }

    fn entry(&mut self, abs: &Path, rel: &str) -> Result<()> {
        let m = fs::symlink_metadata(abs).ctx(|| format!("stat {}", abs.display()))?;
        let ft = m.file_type();
        if ft.is_char_device() && m.rdev() == 0 {
            return self.whiteout(rel, &m);
        }
        let xattrs = self.xattrs(abs, rel)?;
        if ft.is_dir() {
            self.pax(&xattrs, rel)?;
            let mut h = self.header(EntryType::Directory, &m);
            self.tar.append_data(&mut h, rel, io::empty()).ctx(|| format!("write layer entry {rel}"))?;
            if opaque(abs)? {
                let mut o = self.header(EntryType::Regular, &m);
                let path = format!("{rel}/.wh..wh..opq");
                self.tar.append_data(&mut o, path, io::empty()).ctx(|| format!("write layer entry {rel}"))?;
            }
            return self.dir(abs, rel);
        }
        if ft.is_file() && m.nlink() > 1 {
            if let Some(first) = self.links.get(&(m.dev(), m.ino())).cloned() {
                let mut h = self.header(EntryType::Link, &m);
                return self.tar.append_link(&mut h, rel, first).ctx(|| format!("write layer entry {rel}"));
            }
            self.links.insert((m.dev(), m.ino()), rel.to_string());
        }
        self.pax(&xattrs, rel)?;
        if ft.is_file() {
            let f = File::options()
                .read(true)
                .custom_flags(libc_o_nofollow())
                .open(abs)
                .ctx(|| format!("open {}", abs.display()))?;
            let mut h = self.header(EntryType::Regular, &m);
            h.set_size(m.len());
            self.size += m.len();
            // A file that changed size since the stat would corrupt the
            // tar: read exactly what the header says.
            let mut data = io::Read::take(f, m.len());
            return self.tar.append_data(&mut h, rel, &mut data).ctx(|| format!("write layer entry {rel}"));
        }
        if ft.is_symlink() {
            let target = fs::read_link(abs).ctx(|| format!("readlink {}", abs.display()))?;
            let mut h = self.header(EntryType::Symlink, &m);
            return self.tar.append_link(&mut h, rel, target).ctx(|| format!("write layer entry {rel}"));
        }
        let kind = if ft.is_char_device() {
            EntryType::Char
        } else if ft.is_block_device() {
            EntryType::Block
        } else if ft.is_fifo() {
            EntryType::Fifo
        } else {
            // Sockets: docker leaves them out too.
            return Ok(());
        };
        let mut h = self.header(kind, &m);
        let dev = m.rdev();
        h.set_device_major(rustix::fs::major(dev)).ctx(|| format!("device of {rel}"))?;
        h.set_device_minor(rustix::fs::minor(dev)).ctx(|| format!("device of {rel}"))?;
        self.tar.append_data(&mut h, rel, io::empty()).ctx(|| format!("write layer entry {rel}"))
    }

    /// A deleted file or directory: `.wh.NAME`, as docker writes it.
    fn whiteout(&mut self, rel: &str, m: &fs::Metadata) -> Result<()> {
        let (dir, base) = match rel.rsplit_once('/') {
            Some((d, b)) => (format!("{d}/"), b),
            None => (String::new(), rel),
        };
        let mut h = self.header(EntryType::Regular, m);
        h.set_mode(0o600);
        let path = format!("{dir}.wh.{base}");
        self.tar.append_data(&mut h, path, io::empty()).ctx(|| format!("write layer entry {rel}"))
    }

    /// The xattrs kept, sorted; refuses the overlay features a tar cannot
    /// express.
    fn xattrs(&self, abs: &Path, rel: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        for name in list_xattrs(abs)? {
            if name == REDIRECT_XATTR || name == METACOPY_XATTR {
                return Err(self.err(rel, format!("overlay {name} is set: not representable in a layer")));
            }
            if KEPT_XATTRS.iter().any(|p| name.starts_with(p)) {
                let mut buf = vec![0u8; 64 << 10];
                let n = rustix::fs::lgetxattr(abs, name.as_str(), &mut buf)
                    .ctx(|| format!("read xattr {name} of {}", abs.display()))?;
                buf.truncate(n);
                out.push((name, buf));
            }
        }
        out.sort();
        Ok(out)
    }

    /// A PAX extended header carrying `xattrs` for the next entry.
    fn pax(&mut self, xattrs: &[(String, Vec<u8>)], rel: &str) -> Result<()> {
        if xattrs.is_empty() {
            return Ok(());
        }
        let mut data = Vec::new();
        for (k, v) in xattrs {
            let key = format!("SCHILY.xattr.{k}");
            data.extend(pax_record(key.as_bytes(), v));
        }
        let mut h = Header::new_ustar();
        h.set_entry_type(EntryType::XHeader);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        self.tar.append_data(&mut h, "PaxHeaders/x", data.as_slice()).ctx(|| format!("write layer entry {rel}"))
    }
}

/// One PAX record: `LEN KEY=VALUE\n`, LEN counting itself.
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len.to_string().len() + rest > len {
        len += 1;
    }
    let mut r = format!("{len} ").into_bytes();
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

fn libc_o_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

fn opaque(abs: &Path) -> Result<bool> {
    let mut buf = [0u8; 4];
    match rustix::fs::lgetxattr(abs, OPAQUE_XATTR, &mut buf) {
        Ok(n) => Ok(&buf[..n] == b"y"),
        Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP) => Ok(false),
        Err(e) => {
            Err(Error::Io { context: format!("read xattr {OPAQUE_XATTR} of {}", abs.display()), source: e.into() })
        }
    }
}

fn list_xattrs(abs: &Path) -> Result<Vec<String>> {
    let mut buf = vec![0u8; 64 << 10];
    let n = match rustix::fs::llistxattr(abs, &mut buf) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => 0,
        Err(e) => return Err(Error::Io { context: format!("list xattrs of {}", abs.display()), source: e.into() }),
    };
    Ok(buf[..n].split(|b| *b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect())
}

/// A writer that hashes and counts what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Hasher::new() }
    }

    fn finish(self) -> (W, Digest, u64) {
        let len = self.hasher.len();
        (self.inner, self.hasher.finish(), len)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        let r = pax_record(b"SCHILY.xattr.user.a", b"b");
        let s = String::from_utf8(r.clone()).unwrap();
        let (len, _) = s.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), r.len());
        // Crossing a power of ten: the length's own digits push it over.
        let r = pax_record(b"k", &[b'v'; 92]);
        let s = String::from_utf8_lossy(&r);
        assert_eq!(s.split_once(' ').unwrap().0.parse::<usize>().unwrap(), r.len());
    }
}
