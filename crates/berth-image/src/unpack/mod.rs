//! Layer unpacking into a snapshot directory: untrusted input.
//!
//! Each layer goes into its own empty directory (as docker's overlay2 does),
//! whiteouts in overlay form: `.wh.NAME` becomes a 0:0 character device
//! NAME, `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr on its
//! directory. Ownership, modes (incl. setuid), xattrs, hardlinks, device
//! nodes and mtimes are kept. Paths are cleaned and resolved inside the
//! snapshot by berth-fs (the fd-confined layer `cp` and volumes use too);
//! the decompressed stream is bounded, and its sha256 is the layer's diff
//! ID.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use tar::EntryType;
use tracing::debug;

use crate::digest::{Digest, HashingReader};
use crate::error::{Error, IoContext, Result};
use berth_fs::{CleanPath, mkdir_all_in, open_dir_in, remove_at};

/// Default bound on one layer's decompressed size: far above any real
/// layer, far below a disk-filling bomb.
pub const DEFAULT_MAX_LAYER_SIZE: u64 = 64 << 30;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

#[derive(Clone, Debug)]
pub struct UnpackOptions {
    /// Decompressed bytes allowed for one layer, and bytes its files may
    /// hold (sparse entries expand to more than the stream carries).
    pub max_size: u64,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions { max_size: DEFAULT_MAX_LAYER_SIZE }
    }
}

/// What unpacking a layer found out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unpacked {
    /// sha256 of the uncompressed tar stream.
    pub diff_id: Digest,
    /// Sum of the regular files' sizes.
    pub size: u64,
}

/// Counts decompressed bytes and stops at the limit.
struct Limit<R> {
    inner: R,
    left: u64,
    hit: bool,
}

impl<R: Read> Read for Limit<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            self.hit = true;
            return Err(std::io::Error::other("decompressed size limit exceeded"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Unpacks the (possibly compressed) layer `blob` into the empty directory
/// `dest`. `layer` names it in errors.
pub fn unpack_layer(blob: impl Read, dest: &Path, layer: &str, opts: &UnpackOptions) -> Result<Unpacked> {
    let root = rustix::fs::open(dest, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .ctx(|| format!("open {}", dest.display()))?;
    let decompressed = crate::decompress::decompress(blob).ctx(|| format!("layer {layer}: read"))?;
    let limited = Limit { inner: decompressed, left: opts.max_size, hit: false };
    let hashing = HashingReader::new(limited);
    let mut archive = tar::Archive::new(hashing);
    let mut u = Unpacker { root: root.as_fd(), layer, dirs: Vec::new(), size: 0, max_size: opts.max_size };
    let result = (|| -> Result<()> {
        let entries = archive.entries().ctx(|| format!("layer {layer}: read tar"))?;
        for entry in entries {
            let entry = entry.ctx(|| format!("layer {layer}: read tar"))?;
            u.entry(entry)?;
        }
        Ok(())
    })();
    let mut hashing = archive.into_inner();
    // The diff ID covers the whole stream, including what follows the
    // end-of-archive blocks.
    let drained =
        result.and_then(|()| std::io::copy(&mut hashing, &mut std::io::sink()).ctx(|| format!("layer {layer}: read")));
    if hashing.get_ref().hit {
        return Err(Error::TooLarge { layer: layer.to_string(), limit: opts.max_size });
    }
    drained?;
    let (digest, _len) = hashing.finish();
    u.finish_dirs()?;
    Ok(Unpacked { diff_id: digest, size: u.size })
}

struct Unpacker<'a> {
    root: BorrowedFd<'a>,
    layer: &'a str,
    /// Directories whose mtimes are set last (creating entries in them
    /// changes them).
    dirs: Vec<(CleanPath, i64)>,
    size: u64,
    /// Bound on `size`: see [`UnpackOptions::max_size`].
    max_size: u64,
}

impl Unpacker<'_> {
    fn err(&self, path: &CleanPath, reason: impl std::fmt::Display) -> Error {
        Error::Layer { layer: self.layer.to_string(), entry: path.display(), reason: reason.to_string() }
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let path = CleanPath::new(&raw);
        let kind = entry.header().entry_type();
        let hdr = entry.header();
        let uid = hdr.uid().map_err(|e| self.err(&path, e))?;
        let gid = hdr.gid().map_err(|e| self.err(&path, e))?;
        let (uid, gid) = match (u32::try_from(uid), u32::try_from(gid)) {
            (Ok(u), Ok(g)) if u != u32::MAX && g != u32::MAX => (u, g),
            _ => return Err(self.err(&path, "owner id out of range")),
        };
        let mode = hdr.mode().map_err(|e| self.err(&path, e))? & 0o7777;
        let mtime = hdr.mtime().map_err(|e| self.err(&path, e))? as i64;
        if matches!(
            kind,
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let Some((parent_parts, base)) = path.split_last() else {
            // "./": the layer's root directory itself.
            if kind == EntryType::Directory {
                rustix::fs::fchown(self.root, Some(uid_of(uid)), Some(gid_of(gid))).ctx(|| self.ctx(&path, "chown"))?;
                rustix::fs::fchmod(self.root, Mode::from_raw_mode(mode)).ctx(|| self.ctx(&path, "chmod"))?;
                self.dirs.push((path, mtime));
            }
            return Ok(());
        };
        let parent = mkdir_all_in(self.root, parent_parts).ctx(|| self.ctx(&path, "open parent"))?;

        // Whiteouts.
        if base == OPAQUE {
            rustix::fs::fsetxattr(&parent, OPAQUE_XATTR, b"y", XattrFlags::empty())
                .ctx(|| self.ctx(&path, "set opaque xattr"))?;
            return Ok(());
        }
        if let Some(hidden) = base.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.starts_with(WHITEOUT_PREFIX) || hidden.is_empty() || hidden == b"." || hidden == b".." {
                // aufs metadata (.wh..wh.plnk and the like): not for overlay.
                debug!(layer = self.layer, entry = %path.display(), "skipping aufs metadata");
                return Ok(());
            }
            remove_at(parent.as_fd(), name(hidden)).ctx(|| self.ctx(&path, "remove before whiteout"))?;
            rustix::fs::mknodat(&parent, name(hidden), FileType::CharacterDevice, Mode::empty(), 0)
                .ctx(|| self.ctx(&path, "mknod whiteout"))?;
            return Ok(());
        }

        // Replace whatever is there, unless a directory meets a directory.
        let existing = rustix::fs::statat(&parent, name(base), AtFlags::SYMLINK_NOFOLLOW).ok();
        let existing_dir = existing.is_some_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory);
        if existing.is_some() && !(kind == EntryType::Directory && existing_dir) {
            remove_at(parent.as_fd(), name(base)).ctx(|| self.ctx(&path, "replace"))?;
        }

        let xattrs = self.xattrs(&mut entry)?;
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let fd = rustix::fs::openat(
                    &parent,
                    name(base),
                    OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .ctx(|| self.ctx(&path, "create"))?;
                let mut file = std::fs::File::from(fd);
                // A sparse entry's holes are zeros the stream never held,
                // so the stream's bound does not cover what is written.
                let left = self.max_size.saturating_sub(self.size);
                let n = std::io::copy(&mut (&mut entry).take(left), &mut file).ctx(|| self.ctx(&path, "write"))?;
                if entry.read(&mut [0u8]).ctx(|| self.ctx(&path, "read"))? > 0 {
                    return Err(Error::TooLarge { layer: self.layer.to_string(), limit: self.max_size });
                }
                self.size += n;
                let fd = OwnedFd::from(file);
                self.meta_fd(&fd, &path, uid, gid, mode, &xattrs)?;
                rustix::fs::futimens(&fd, &times(mtime)).ctx(|| self.ctx(&path, "set times"))?;
            }
            EntryType::Directory => {
                if !existing_dir {
                    rustix::fs::mkdirat(&parent, name(base), Mode::from_raw_mode(0o700))
                        .ctx(|| self.ctx(&path, "mkdir"))?;
                }
                let fd = rustix::fs::openat(
                    &parent,
                    name(base),
                    OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .ctx(|| self.ctx(&path, "open dir"))?;
                self.meta_fd(&fd, &path, uid, gid, mode, &xattrs)?;
                self.dirs.push((path.clone(), mtime));
            }
            EntryType::Symlink => {
                let target =
                    entry.link_name_bytes().ok_or_else(|| self.err(&path, "symlink without a target"))?.into_owned();
                // The target is stored as is: it is only ever resolved
                // inside a root (by us, or by the container's kernel view).
                rustix::fs::symlinkat(name(&target), &parent, name(base)).ctx(|| self.ctx(&path, "symlink"))?;
                self.meta_at(&parent, base, &path, (uid, gid), None, mtime)?;
            }
            EntryType::Link => {
                let target =
                    entry.link_name_bytes().ok_or_else(|| self.err(&path, "hardlink without a target"))?.into_owned();
                let target = CleanPath::new(&target);
                let Some((tparent_parts, tbase)) = target.split_last() else {
                    return Err(self.err(&path, "hardlink to the root directory"));
                };
                // The target is looked up inside this layer only: a link
                // to anything outside cannot even be named.
                let tparent = open_dir_in(self.root, &CleanPath::path_of(tparent_parts))
                    .ctx(|| self.ctx(&path, &format!("hardlink target {}", target.display())))?;
                rustix::fs::linkat(&tparent, name(tbase), &parent, name(base), AtFlags::empty())
                    .ctx(|| self.ctx(&path, &format!("hardlink to {}", target.display())))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let ft = match kind {
                    EntryType::Char => FileType::CharacterDevice,
                    EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let hdr = entry.header();
                let major = hdr.device_major().ok().flatten().unwrap_or(0);
                let minor = hdr.device_minor().ok().flatten().unwrap_or(0);
                let dev = rustix::fs::makedev(major, minor);
                rustix::fs::mknodat(&parent, name(base), ft, Mode::from_raw_mode(mode & 0o777), dev)
                    .ctx(|| self.ctx(&path, "mknod"))?;
                self.meta_at(&parent, base, &path, (uid, gid), Some(mode), mtime)?;
            }
            other => {
                debug!(layer = self.layer, entry = %path.display(), kind = ?other, "skipping unsupported entry type");
            }
        }
        Ok(())
    }

    /// Owner, mode (`Some`: for a node just made here, so not a symlink)
    /// and mtime of `base` in `parent`, never following it.
    fn meta_at(
        &self,
        parent: &OwnedFd,
        base: &[u8],
        path: &CleanPath,
        (uid, gid): (u32, u32),
        mode: Option<u32>,
        mtime: i64,
    ) -> Result<()> {
        rustix::fs::chownat(parent, name(base), Some(uid_of(uid)), Some(gid_of(gid)), AtFlags::SYMLINK_NOFOLLOW)
            .ctx(|| self.ctx(path, "chown"))?;
        if let Some(mode) = mode {
            // After chown, which clears setuid/setgid.
            rustix::fs::chmodat(parent, name(base), Mode::from_raw_mode(mode), AtFlags::empty())
                .ctx(|| self.ctx(path, "chmod"))?;
        }
        rustix::fs::utimensat(parent, name(base), &times(mtime), AtFlags::SYMLINK_NOFOLLOW)
            .ctx(|| self.ctx(path, "set times"))
    }

    fn ctx(&self, path: &CleanPath, what: &str) -> String {
        format!("layer {}: entry {:?}: {what}", self.layer, path.display())
    }

    /// The xattrs of an entry worth keeping. trusted.* is dropped: trusted
    /// overlay xattrs (redirect, metacopy, opaque) would steer the overlay
    /// mount itself; opaque directories come from `.wh..wh..opq` entries.
    fn xattrs<R: Read>(&self, entry: &mut tar::Entry<'_, R>) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        let Some(exts) = entry.pax_extensions().ctx(|| format!("layer {}: pax header", self.layer))? else {
            return Ok(out);
        };
        for ext in exts {
            let ext = ext.ctx(|| format!("layer {}: pax header", self.layer))?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.")
                && (name.starts_with("user.") || name.starts_with("security.") || name.starts_with("system.posix_acl_"))
            {
                out.push((name.to_string(), ext.value_bytes().to_vec()));
            }
        }
        Ok(out)
    }

    fn meta_fd(
        &self,
        fd: &OwnedFd,
        path: &CleanPath,
        uid: u32,
        gid: u32,
        mode: u32,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<()> {
        rustix::fs::fchown(fd, Some(uid_of(uid)), Some(gid_of(gid))).ctx(|| self.ctx(path, "chown"))?;
        // After chown, which clears setuid/setgid.
        rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)).ctx(|| self.ctx(path, "chmod"))?;
        for (k, v) in xattrs {
            rustix::fs::fsetxattr(fd, k.as_str(), v, XattrFlags::empty())
                .ctx(|| self.ctx(path, &format!("set xattr {k}")))?;
        }
        Ok(())
    }

    fn finish_dirs(&mut self) -> Result<()> {
        // Deepest first, so setting a child's time does not touch a
        // parent's after it was set.
        self.dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.0.len()));
        for (path, mtime) in std::mem::take(&mut self.dirs) {
            let fd = open_dir_in(self.root, &CleanPath::path_of(&path.0)).ctx(|| self.ctx(&path, "reopen dir"))?;
            rustix::fs::futimens(&fd, &times(mtime)).ctx(|| self.ctx(&path, "set times"))?;
        }
        Ok(())
    }
}

fn name(b: &[u8]) -> &OsStr {
    std::os::unix::ffi::OsStrExt::from_bytes(b)
}

fn uid_of(u: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw_unchecked(u)
}

fn gid_of(g: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw_unchecked(g)
}

fn times(mtime: i64) -> Timestamps {
    let t = Timespec { tv_sec: mtime, tv_nsec: 0 };
    Timestamps { last_access: t, last_modification: t }
}
