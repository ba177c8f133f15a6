//! Unpacking an image layer, an untrusted tar (plain, gzip or zstd), into
//! a snapshot directory in overlayfs form.
//!
//! Every entry lands inside the snapshot, whatever the archive says:
//!
//! - names are cleaned lexically as containerd does (`/a/../../b` is `b`),
//!   so `..` and absolute names cannot climb out;
//! - parents are resolved inside the snapshot with pathrs (openat2
//!   RESOLVE_IN_ROOT), so a symlink the layer planted (`evil -> /etc`)
//!   cannot carry a later entry (`evil/passwd`) onto the host;
//! - the entry itself is created and changed relative to its parent's fd,
//!   never followed if it is a symlink;
//! - hard links must point at a file this layer already holds;
//! - the uncompressed size and the entry count are bounded, so a
//!   decompression bomb stops with an error instead of filling the disk.
//!
//! Whiteouts become what overlayfs reads: `.wh.NAME` a 0:0 character
//! device NAME, `.wh..wh..opq` the `trusted.overlay.opaque` xattr on its
//! directory. Owners, modes, mtimes, xattrs (PAX `SCHILY.xattr.*`), hard
//! links, devices and fifos are kept.

use std::ffi::CString;
use std::fs::Permissions;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::AtFlags;
use nix::sys::stat::{FchmodatFlags, Mode, UtimensatFlags, fchmodat, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchownat};
use pathrs::flags::OpenFlags;
use pathrs::{InodeType, Root};

use crate::digest::Digest;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry {entry:?}: {why}")]
    Entry { entry: String, why: String },
    #[error("layer is larger than the limit of {limit} bytes uncompressed (a decompression bomb?)")]
    TooLarge { limit: u64 },
    #[error("layer has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("read the layer: {0}")]
    Read(std::io::Error),
    #[error("layer content hashes to {actual}, not the diff_id {expected} the image config promises")]
    DiffId { expected: Digest, actual: Digest },
    #[error("open the snapshot {}: {why}", path.display())]
    Root { path: PathBuf, why: String },
}

/// Bounds on what one layer may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_bytes: 64 << 30, max_entries: 10_000_000 }
    }
}

/// What an unpack wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Stats {
    pub entries: u64,
    pub bytes: u64,
}

/// Wraps `layer` in the decompressor its first bytes call for.
pub fn decompress<'a>(mut layer: impl Read + 'a) -> std::io::Result<Box<dyn Read + 'a>> {
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match layer.read(&mut magic[got..])? {
            0 => break,
            n => got += n,
        }
    }
    let head = std::io::Cursor::new(magic[..got].to_vec()).chain(layer);
    Ok(match &magic[..got] {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::GzDecoder::new(head)),
        [0x28, 0xb5, 0x2f, 0xfd] => Box::new(zstd::Decoder::new(head)?),
        _ => Box::new(head),
    })
}

/// Counts what passes and fails once `limit` is crossed.
struct Bounded<R> {
    inner: R,
    read: u64,
    limit: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(std::io::Error::other(TOO_LARGE));
        }
        Ok(n)
    }
}

const TOO_LARGE: &str = "berth: layer size limit";

/// Hashes what passes, for the layer's diff_id.
struct Hashing<R> {
    inner: R,
    hasher: sha2::Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest as _;
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Unpacks `layer` (compressed or not) into `dest`, an existing
/// directory that becomes the layer's snapshot.
pub fn unpack(layer: impl Read, dest: &Path, limits: Limits) -> Result<Stats, UnpackError> {
    unpack_checked(layer, dest, limits, None)
}

/// [`unpack`], and the uncompressed stream must hash to `diff_id` (the
/// image config's promise); the caller discards `dest` if it does not.
pub fn unpack_checked(
    layer: impl Read,
    dest: &Path,
    limits: Limits,
    diff_id: Option<&Digest>,
) -> Result<Stats, UnpackError> {
    use sha2::Digest as _;
    let root = Root::open(dest).map_err(|e| UnpackError::Root { path: dest.into(), why: e.to_string() })?;
    let stream = decompress(layer).map_err(UnpackError::Read)?;
    let hashing = Hashing { inner: stream, hasher: sha2::Sha256::new() };
    let bounded = Bounded { inner: hashing, read: 0, limit: limits.max_bytes };
    let mut archive = tar::Archive::new(bounded);
    let mut stats = Stats::default();
    let too_large = |e: &std::io::Error| e.to_string().contains(TOO_LARGE);
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) if too_large(&e) => return Err(UnpackError::TooLarge { limit: limits.max_bytes }),
            Err(e) => return Err(UnpackError::Read(e)),
        };
        stats.entries += 1;
        if stats.entries > limits.max_entries {
            return Err(UnpackError::TooManyEntries { limit: limits.max_entries });
        }
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let fail = |why: String| UnpackError::Entry { entry: raw.clone(), why };
        let Some(path) = clean(Path::new(&raw)) else { continue };
        match apply(&root, &path, &mut entry) {
            Ok(n) => stats.bytes += n,
            Err(ApplyError::Io(e)) if too_large(&e) => return Err(UnpackError::TooLarge { limit: limits.max_bytes }),
            Err(ApplyError::Io(e)) => return Err(fail(e.to_string())),
            Err(ApplyError::Refused(why)) => return Err(fail(why)),
        }
    }
    if let Some(expected) = diff_id {
        // The tar's end blocks and any padding count too.
        let mut rest = archive.into_inner();
        std::io::copy(&mut rest, &mut std::io::sink()).map_err(UnpackError::Read)?;
        let actual = Digest::from_sha256(&rest.inner.hasher.finalize());
        if &actual != expected {
            return Err(UnpackError::DiffId { expected: expected.clone(), actual });
        }
    }
    Ok(stats)
}

/// The entry's path relative to the snapshot root, cleaned lexically
/// (`None` for the root itself).
pub fn clean(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

enum ApplyError {
    Io(std::io::Error),
    Refused(String),
}

impl From<std::io::Error> for ApplyError {
    fn from(e: std::io::Error) -> ApplyError {
        ApplyError::Io(e)
    }
}

impl From<pathrs::error::Error> for ApplyError {
    fn from(e: pathrs::error::Error) -> ApplyError {
        ApplyError::Io(std::io::Error::other(e.to_string()))
    }
}

impl From<nix::errno::Errno> for ApplyError {
    fn from(e: nix::errno::Errno) -> ApplyError {
        ApplyError::Io(e.into())
    }
}

/// Creates one entry; returns the bytes of file data written.
fn apply<R: Read>(root: &Root, path: &Path, entry: &mut tar::Entry<'_, R>) -> Result<u64, ApplyError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
    let parent_path = path.parent().unwrap_or(Path::new(""));
    let parent = root.mkdir_all(parent_path, &Permissions::from_mode(0o755))?;
    let parent = parent.reopen(OpenFlags::O_DIRECTORY | OpenFlags::O_RDONLY)?;
    let parent: OwnedFd = parent.into();
    if name == OPAQUE {
        setxattr_at(&parent, None, "trusted.overlay.opaque", b"y")?;
        return Ok(0);
    }
    if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
        let target = parent_path.join(hidden);
        if hidden.is_empty() || hidden.contains('/') {
            return Err(ApplyError::Refused("a whiteout without a name".into()));
        }
        let _ = root.remove_all(&target);
        root.create(&target, &InodeType::CharacterDevice(Permissions::from_mode(0o000), 0))?;
        return Ok(0);
    }
    let header = entry.header().clone();
    let mode = header.mode().unwrap_or(0o644) & 0o7777;
    let kind = header.entry_type();
    // What is there already is replaced (a later entry wins), except a
    // directory by a directory, which keeps its contents.
    let existing = nix::sys::stat::fstatat(&parent, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW).ok();
    let existing_dir = existing.is_some_and(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR);
    if existing.is_some() && !(kind.is_dir() && existing_dir) {
        root.remove_all(path)?;
    }
    let mut written = 0;
    match kind {
        tar::EntryType::Directory => {
            if !existing_dir {
                root.create(path, &InodeType::Directory(Permissions::from_mode(0o700)))?;
            }
        }
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            let flags = OpenFlags::O_WRONLY | OpenFlags::O_CREAT | OpenFlags::O_EXCL | OpenFlags::O_NOFOLLOW;
            let mut f = root.create_file(path, flags, &Permissions::from_mode(0o600))?;
            written = std::io::copy(entry, &mut f)?;
        }
        tar::EntryType::Symlink => {
            let target = entry.link_name()?.ok_or_else(|| ApplyError::Refused("a symlink without a target".into()))?;
            root.create(path, &InodeType::Symlink(target.into_owned()))?;
        }
        tar::EntryType::Link => {
            let target =
                entry.link_name()?.ok_or_else(|| ApplyError::Refused("a hard link without a target".into()))?;
            let target = clean(&target).ok_or_else(|| ApplyError::Refused("a hard link to the root".into()))?;
            // The target must be a non-directory this layer already holds;
            // resolved without following a final symlink.
            let h = root.resolve_nofollow(&target).map_err(|e| {
                ApplyError::Refused(format!("hard link to {:?}, which is not in this layer ({e})", target.display()))
            })?;
            let st = nix::sys::stat::fstat(&h)?;
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                return Err(ApplyError::Refused(format!("hard link to the directory {:?}", target.display())));
            }
            root.create(path, &InodeType::Hardlink(target))?;
            // A hard link shares its target's metadata.
            return Ok(0);
        }
        tar::EntryType::Char | tar::EntryType::Block => {
            let dev = libc::makedev(header.device_major()?.unwrap_or(0), header.device_minor()?.unwrap_or(0));
            let perm = Permissions::from_mode(mode);
            let t = if kind == tar::EntryType::Char {
                InodeType::CharacterDevice(perm, dev)
            } else {
                InodeType::BlockDevice(perm, dev)
            };
            root.create(path, &t)?;
        }
        tar::EntryType::Fifo => root.create(path, &InodeType::Fifo(Permissions::from_mode(mode)))?,
        tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => return Ok(0),
        other => return Err(ApplyError::Refused(format!("unsupported entry type {other:?}"))),
    }
    let is_link = kind == tar::EntryType::Symlink;
    // Owner first: chown clears set-id bits, which the mode then restores.
    let (uid, gid) = (header.uid()? as u32, header.gid()? as u32);
    fchownat(&parent, name.as_str(), Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)), AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if !is_link {
        fchmodat(&parent, name.as_str(), Mode::from_bits_truncate(mode), FchmodatFlags::FollowSymlink)?;
    }
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts.flatten() {
            if let Some(key) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                setxattr_at(&parent, Some(&name), key, ext.value_bytes())?;
            }
        }
    }
    let mtime = TimeSpec::new(header.mtime().unwrap_or(0) as i64, 0);
    utimensat(&parent, name.as_str(), &mtime, &mtime, UtimensatFlags::NoFollowSymlink)?;
    Ok(written)
}

/// Sets an xattr on `dir` itself (fsetxattr), or on `name` in it by its
/// /proc/self/fd path with lsetxattr: nothing on the way is followed but
/// the directory's own fd, and a final symlink is not followed.
fn setxattr_at(dir: &OwnedFd, name: Option<&str>, key: &str, value: &[u8]) -> Result<(), ApplyError> {
    let Ok(k) = CString::new(key) else { return Err(ApplyError::Refused(format!("xattr {key:?}: NUL in name"))) };
    let rc = match name {
        // SAFETY: a valid fd, NUL-terminated key, valid value slice.
        None => unsafe { libc::fsetxattr(dir.as_fd().as_raw_fd(), k.as_ptr(), value.as_ptr().cast(), value.len(), 0) },
        Some(n) => {
            let p = format!("/proc/self/fd/{}/{n}", dir.as_fd().as_raw_fd());
            let Ok(p) = CString::new(p) else { return Err(ApplyError::Refused(format!("{n:?}: NUL in name"))) };
            // SAFETY: both strings are NUL-terminated; the value slice is valid.
            unsafe { libc::lsetxattr(p.as_ptr(), k.as_ptr(), value.as_ptr().cast(), value.len(), 0) }
        }
    };
    if rc != 0 {
        return Err(ApplyError::Io(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned_like_containerd() {
        let c = |s: &str| clean(Path::new(s)).map(|p| p.display().to_string());
        assert_eq!(c("a/b"), Some("a/b".into()));
        assert_eq!(c("/etc/passwd"), Some("etc/passwd".into()));
        assert_eq!(c("../../../etc/shadow"), Some("etc/shadow".into()));
        assert_eq!(c("a/../../b"), Some("b".into()));
        assert_eq!(c("./"), None);
    }
}
