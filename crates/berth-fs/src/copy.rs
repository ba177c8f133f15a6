//! A tree copied by file descriptor, as `cp -a` would copy it but never
//! following a symlink: `berth cp` (both ways) and filling a new volume
//! from the image.
//!
//! Each entry is opened with `openat(dir, name, O_NOFOLLOW)` relative to
//! a directory already held, never by a path string the kernel would
//! resolve again, so a source that swaps a directory for a symlink while
//! we copy cannot send the copy elsewhere. Symlinks are copied as
//! symlinks, device nodes and FIFOs as nodes (sockets are skipped, as tar
//! skips them). Kept: owners (or fixed ones), modes with set-id bits,
//! access and modification times, the xattrs worth keeping (see
//! [`KEPT_XATTRS`]), and hard links within the copy.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Stat, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;

/// What went wrong, and on which entry (as the caller names it).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} {}: {source}", path.display())]
    Io { what: &'static str, path: PathBuf, source: io::Error },
    /// docker's words ("cannot overwrite directory with non-directory").
    #[error("cannot overwrite {what} {}", path.display())]
    Overwrite { what: &'static str, path: PathBuf },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> Error + 'a {
    move |e| Error::Io { what, path: path.to_owned(), source: e.into() }
}

fn io_std<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io { what, path: path.to_owned(), source }
}

/// Who owns what a copy makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// These ids (docker's `cp` without `-a`).
    Fixed(u32, u32),
    /// The source's (`cp -a`, filling a volume).
    Keep,
}

/// The xattr namespaces a copy keeps: the user's, file capabilities and
/// ACLs. Not `trusted.*` (overlayfs's own, which would steer a later
/// overlay mount) nor `security.selinux` (a label belongs to where the
/// file lands).
pub const KEPT_XATTRS: [&str; 3] = ["user.", "security.capability", "system.posix_acl_"];

/// Copies `name` in `src_dir` to `dst_name` in `dst_dir`, recursively.
/// `shown` names the source in errors.
pub fn copy_entry(
    src_dir: BorrowedFd<'_>,
    name: &OsStr,
    dst_dir: BorrowedFd<'_>,
    dst_name: &OsStr,
    owner: Owner,
    shown: &Path,
) -> Result<()> {
    Walk::new(dst_dir, owner).entry(src_dir, name, dst_dir, dst_name, Path::new(dst_name), shown)
}

/// Copies what the directory `src` holds into the directory `dst`, then
/// gives `dst` the owner, mode, xattrs and times of `src` (as
/// `cp -a SRC/. DST` does).
pub fn copy_dir(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, owner: Owner, shown: &Path) -> Result<()> {
    let st = rustix::fs::fstat(src).map_err(io("read", shown))?;
    let mut walk = Walk::new(dst, owner);
    walk.contents(src, dst, Path::new(""), shown)?;
    walk.finish(src, dst, &st, shown)
}

/// Copies what the directory `src` holds into the directory `dst`, which
/// keeps its own metadata.
pub fn copy_contents(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, owner: Owner, shown: &Path) -> Result<()> {
    Walk::new(dst, owner).contents(src, dst, Path::new(""), shown)
}

/// A directory `name` in `dir`, made (mode 0700 until its copy is done)
/// if missing; an existing non-directory (a symlink included) is refused.
pub fn make_dir(dir: BorrowedFd<'_>, name: &OsStr, shown: &Path) -> Result<OwnedFd> {
    match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(io("make directory", shown)(e)),
    }
    rustix::fs::openat(dir, name, nofollow(OFlags::RDONLY | OFlags::DIRECTORY), Mode::empty()).map_err(|e| match e {
        Errno::NOTDIR | Errno::LOOP => {
            Error::Overwrite { what: "non-directory with directory", path: shown.to_owned() }
        }
        e => io("open directory", shown)(e),
    })
}

/// One copy: where it writes, and the hard links it has made so far.
struct Walk<'a> {
    /// The directory the copy's relative paths start from.
    dst_root: BorrowedFd<'a>,
    owner: Owner,
    /// For each source inode with several links: where (relative to
    /// `dst_root`) its first copy went.
    links: HashMap<(u64, u64), PathBuf>,
}

impl<'a> Walk<'a> {
    fn new(dst_root: BorrowedFd<'a>, owner: Owner) -> Walk<'a> {
        Walk { dst_root, owner, links: HashMap::new() }
    }

    fn contents(&mut self, src: BorrowedFd<'_>, dst: BorrowedFd<'_>, rel: &Path, shown: &Path) -> Result<()> {
        let names = crate::entries(src).map_err(io_std("read directory", shown))?;
        for name in names {
            let name = OsStr::from_bytes(&name);
            self.entry(src, name, dst, name, &rel.join(name), &shown.join(name))?;
        }
        Ok(())
    }

    /// `rel` is where `dst_name` is, relative to `dst_root`.
    fn entry(
        &mut self,
        src_dir: BorrowedFd<'_>,
        name: &OsStr,
        dst_dir: BorrowedFd<'_>,
        dst_name: &OsStr,
        rel: &Path,
        shown: &Path,
    ) -> Result<()> {
        let st = rustix::fs::statat(src_dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(io("read", shown))?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                let src =
                    rustix::fs::openat(src_dir, name, nofollow(OFlags::RDONLY | OFlags::DIRECTORY), Mode::empty())
                        .map_err(io("open directory", shown))?;
                let dst = make_dir(dst_dir, dst_name, shown)?;
                self.contents(src.as_fd(), dst.as_fd(), rel, shown)?;
                self.finish(src.as_fd(), dst.as_fd(), &st, shown)
            }
            FileType::RegularFile => self.file(src_dir, name, &st, dst_dir, dst_name, rel, shown),
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(src_dir, name, Vec::new()).map_err(io("read link", shown))?;
                clear(dst_dir, dst_name, shown)?;
                rustix::fs::symlinkat(target.as_c_str(), dst_dir, dst_name).map_err(io("make link", shown))?;
                self.finish_at(dst_dir, dst_name, &st, false, shown)
            }
            kind @ (FileType::Fifo | FileType::CharacterDevice | FileType::BlockDevice) => {
                clear(dst_dir, dst_name, shown)?;
                rustix::fs::mknodat(dst_dir, dst_name, kind, Mode::from_raw_mode(st.st_mode & 0o7777), st.st_rdev)
                    .map_err(io("make node", shown))?;
                self.finish_at(dst_dir, dst_name, &st, true, shown)
            }
            // Sockets are not copied (nor are they by tar).
            _ => Ok(()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn file(
        &mut self,
        src_dir: BorrowedFd<'_>,
        name: &OsStr,
        st: &Stat,
        dst_dir: BorrowedFd<'_>,
        dst_name: &OsStr,
        rel: &Path,
        shown: &Path,
    ) -> Result<()> {
        let key = (st.st_dev, st.st_ino);
        if st.st_nlink > 1
            && let Some(first) = self.links.get(&key)
            && self.link(first, dst_dir, dst_name, shown)?
        {
            return Ok(());
        }
        let src =
            rustix::fs::openat(src_dir, name, nofollow(OFlags::RDONLY), Mode::empty()).map_err(io("open", shown))?;
        // Swapped for something else since the statat: not what we copy.
        if rustix::fs::fstat(&src).map(|s| FileType::from_raw_mode(s.st_mode)) != Ok(FileType::RegularFile) {
            return Err(io("open", shown)(Errno::INVAL));
        }
        let dst = create_file(dst_dir, dst_name, shown)?;
        let (mut r, mut w) = (File::from(src), File::from(dst));
        io::copy(&mut r, &mut w).map_err(io_std("copy", shown))?;
        self.finish(r.as_fd(), w.as_fd(), st, shown)?;
        if st.st_nlink > 1 {
            self.links.insert(key, rel.to_owned());
        }
        Ok(())
    }

    /// `dst_name` made a hard link to the copy at `first`; false when that
    /// cannot be (the first copy is gone, or the target is busy, e.g. a
    /// bind mount): the caller copies the data instead.
    fn link(&self, first: &Path, dst_dir: BorrowedFd<'_>, dst_name: &OsStr, shown: &Path) -> Result<bool> {
        let (Some(parent), Some(base)) = (first.parent(), first.file_name()) else { return Ok(false) };
        let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
        // Our own copy, but a racing writer may have swapped a directory
        // in it for a symlink: look it up without following any.
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        let flags = OFlags::DIRECTORY | OFlags::PATH | OFlags::CLOEXEC;
        let Ok(parent) = rustix::fs::openat2(self.dst_root, parent, flags, Mode::empty(), how) else {
            return Ok(false);
        };
        clear(dst_dir, dst_name, shown)?;
        Ok(rustix::fs::linkat(&parent, base, dst_dir, dst_name, AtFlags::empty()).is_ok())
    }

    /// Owner, then mode (a chown clears set-id bits and file
    /// capabilities), then xattrs, then times, on an open file.
    fn finish(&self, src: BorrowedFd<'_>, dst: BorrowedFd<'_>, st: &Stat, shown: &Path) -> Result<()> {
        let (uid, gid) = self.ids(st);
        rustix::fs::fchown(dst, Some(uid), Some(gid)).map_err(io("chown", shown))?;
        rustix::fs::fchmod(dst, Mode::from_raw_mode(st.st_mode & 0o7777)).map_err(io("chmod", shown))?;
        copy_xattrs(src, dst).map_err(io("copy xattrs of", shown))?;
        rustix::fs::futimens(dst, &times(st)).map_err(io("set times of", shown))
    }

    /// Owner, mode (`chmod`: not for a symlink) and times of what `name`
    /// in `dir` is, without following it.
    fn finish_at(&self, dir: BorrowedFd<'_>, name: &OsStr, st: &Stat, chmod: bool, shown: &Path) -> Result<()> {
        let (uid, gid) = self.ids(st);
        rustix::fs::chownat(dir, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW).map_err(io("chown", shown))?;
        if chmod {
            // Just made as a node here, so the name is not a symlink.
            rustix::fs::chmodat(dir, name, Mode::from_raw_mode(st.st_mode & 0o7777), AtFlags::empty())
                .map_err(io("chmod", shown))?;
        }
        rustix::fs::utimensat(dir, name, &times(st), AtFlags::SYMLINK_NOFOLLOW).map_err(io("set times of", shown))
    }

    fn ids(&self, st: &Stat) -> (Uid, Gid) {
        let (u, g) = match self.owner {
            Owner::Fixed(u, g) => (u, g),
            Owner::Keep => (st.st_uid, st.st_gid),
        };
        (Uid::from_raw_unchecked(u), Gid::from_raw_unchecked(g))
    }
}

/// Opening flags that never follow a symlink nor block on a FIFO.
fn nofollow(f: OFlags) -> OFlags {
    f | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK
}

/// A regular file `name` in `dir` to write: an existing one truncated
/// (its inode kept: it may be bind-mounted), anything else but a directory
/// replaced.
fn create_file(dir: BorrowedFd<'_>, name: &OsStr, shown: &Path) -> Result<OwnedFd> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map(|st| FileType::from_raw_mode(st.st_mode)) {
        Ok(FileType::RegularFile) => {
            let fd = rustix::fs::openat(dir, name, nofollow(OFlags::WRONLY | OFlags::TRUNC), Mode::empty())
                .map_err(io("open", shown))?;
            if rustix::fs::fstat(&fd).map(|s| FileType::from_raw_mode(s.st_mode)) != Ok(FileType::RegularFile) {
                return Err(io("open", shown)(Errno::INVAL));
            }
            return Ok(fd);
        }
        Ok(FileType::Directory) => {
            return Err(Error::Overwrite { what: "directory with non-directory", path: shown.to_owned() });
        }
        Ok(_) => clear(dir, name, shown)?,
        Err(Errno::NOENT) => {}
        Err(e) => return Err(io("read", shown)(e)),
    }
    rustix::fs::openat(dir, name, nofollow(OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL), Mode::from_raw_mode(0o600))
        .map_err(io("create", shown))
}

/// Removes a non-directory `name` from `dir`, if there is one.
fn clear(dir: BorrowedFd<'_>, name: &OsStr, shown: &Path) -> Result<()> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
            Err(Error::Overwrite { what: "directory with non-directory", path: shown.to_owned() })
        }
        Ok(_) => rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(io("remove", shown)),
        Err(_) => Ok(()),
    }
}

fn times(st: &Stat) -> Timestamps {
    let t = |sec, nsec| rustix::fs::Timespec { tv_sec: sec, tv_nsec: nsec as _ };
    Timestamps { last_access: t(st.st_atime, st.st_atime_nsec), last_modification: t(st.st_mtime, st.st_mtime_nsec) }
}

/// The xattrs of `src` in [`KEPT_XATTRS`]'s namespaces, onto `dst`. A
/// destination that cannot hold one (a filesystem without user xattrs)
/// goes without, as with `cp -a`.
fn copy_xattrs(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> rustix::io::Result<()> {
    let mut list = vec![0u8; 4096];
    let n = match rustix::fs::flistxattr(src, &mut list[..]) {
        Ok(n) => n,
        Err(Errno::RANGE) => {
            list.resize(rustix::fs::flistxattr_query(src)?, 0);
            rustix::fs::flistxattr(src, &mut list[..])?
        }
        Err(Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut value = Vec::new();
    for name in list[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if !KEPT_XATTRS.iter().any(|k| name.starts_with(k.as_bytes())) {
            continue;
        }
        let name = OsStr::from_bytes(name);
        value.resize(rustix::fs::fgetxattr_query(src, name)?, 0);
        let len = rustix::fs::fgetxattr(src, name, &mut value[..])?;
        match rustix::fs::fsetxattr(dst, name, &value[..len], XattrFlags::empty()) {
            Ok(()) | Err(Errno::NOTSUP) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    use super::*;

    fn dir_fd(p: &Path) -> OwnedFd {
        rustix::fs::open(p, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).unwrap()
    }

    fn lxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 256];
        rustix::fs::lgetxattr(p, name, &mut buf[..]).ok().map(|n| buf[..n].to_vec())
    }

    /// A tree with what a copy must keep: owners, set-id modes, times,
    /// xattrs, hard links, a symlink to the host, a FIFO.
    fn sample(src: &Path) {
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/f"), "data").unwrap();
        rustix::fs::chown(src.join("sub/f"), Some(Uid::from_raw(1000)), Some(Gid::from_raw(1001))).unwrap();
        std::fs::set_permissions(src.join("sub/f"), std::fs::Permissions::from_mode(0o4751)).unwrap();
        rustix::fs::setxattr(src.join("sub/f"), "user.k", b"v", XattrFlags::empty()).unwrap();
        rustix::fs::setxattr(src.join("sub/f"), "trusted.overlay.redirect", b"/x", XattrFlags::empty()).unwrap();
        std::fs::hard_link(src.join("sub/f"), src.join("twin")).unwrap();
        std::os::unix::fs::symlink("/etc", src.join("sub/evil")).unwrap();
        rustix::fs::mknodat(rustix::fs::CWD, src.join("pipe"), FileType::Fifo, Mode::from_raw_mode(0o640), 0).unwrap();
        let old = Timestamps {
            last_access: rustix::fs::Timespec { tv_sec: 1_600_000_000, tv_nsec: 5 },
            last_modification: rustix::fs::Timespec { tv_sec: 1_700_000_000, tv_nsec: 7 },
        };
        for p in ["sub/f", "sub", ""] {
            rustix::fs::utimensat(rustix::fs::CWD, src.join(p), &old, AtFlags::SYMLINK_NOFOLLOW).unwrap();
        }
        rustix::fs::chown(src, Some(Uid::from_raw(999)), Some(Gid::from_raw(998))).unwrap();
        std::fs::set_permissions(src, std::fs::Permissions::from_mode(0o750)).unwrap();
    }

    /// Owners other than ours need root, as berth's integration tests do.
    fn require_root() {
        assert!(rustix::process::geteuid().is_root(), "this test needs root (chown to other users); run it as root");
    }

    #[test]
    fn a_directory_copies_as_cp_a_would_without_following_symlinks() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        sample(&src);
        std::fs::create_dir(&dst).unwrap();
        copy_dir(dir_fd(&src).as_fd(), dir_fd(&dst).as_fd(), Owner::Keep, Path::new("src")).unwrap();

        let f = std::fs::metadata(dst.join("sub/f")).unwrap();
        assert_eq!((f.uid(), f.gid(), f.mode() & 0o7777), (1000, 1001, 0o4751));
        assert_eq!((f.mtime(), f.mtime_nsec(), f.atime()), (1_700_000_000, 7, 1_600_000_000));
        assert_eq!(std::fs::read_to_string(dst.join("sub/f")).unwrap(), "data");
        assert_eq!(lxattr(&dst.join("sub/f"), "user.k").as_deref(), Some(&b"v"[..]));
        assert_eq!(lxattr(&dst.join("sub/f"), "trusted.overlay.redirect"), None, "overlay's own xattrs stay behind");
        assert_eq!(std::fs::metadata(dst.join("twin")).unwrap().ino(), f.ino(), "hard links kept");
        assert_eq!(std::fs::read_link(dst.join("sub/evil")).unwrap(), Path::new("/etc"));
        assert!(std::fs::symlink_metadata(dst.join("pipe")).unwrap().file_type().is_fifo());
        assert_eq!(std::fs::metadata(dst.join("sub")).unwrap().mtime(), 1_700_000_000, "directory times set last");
        let top = std::fs::metadata(&dst).unwrap();
        assert_eq!((top.uid(), top.gid(), top.mode() & 0o7777), (999, 998, 0o750), "the top directory too");
    }

    #[test]
    fn fixed_owners_replace_the_sources() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        sample(&src);
        std::fs::create_dir(&dst).unwrap();
        let d = dir_fd(&dst);
        copy_entry(dir_fd(&src).as_fd(), OsStr::new("sub"), d.as_fd(), OsStr::new("s"), Owner::Fixed(5, 6), &src)
            .unwrap();
        let f = std::fs::metadata(dst.join("s/f")).unwrap();
        assert_eq!((f.uid(), f.gid()), (5, 6));
        let l = std::fs::symlink_metadata(dst.join("s/evil")).unwrap();
        assert_eq!((l.uid(), l.gid()), (5, 6));
    }

    #[test]
    fn a_file_never_overwrites_a_directory_nor_writes_through_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("x"), "payload").unwrap();
        std::fs::create_dir_all(dst.join("x")).unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "host").unwrap();
        std::os::unix::fs::symlink(&victim, dst.join("y")).unwrap();
        let (s, d) = (dir_fd(&src), dir_fd(&dst));
        let me = (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw());
        let owner = Owner::Fixed(me.0, me.1);
        let e = copy_entry(s.as_fd(), OsStr::new("x"), d.as_fd(), OsStr::new("x"), owner, Path::new("x")).unwrap_err();
        assert_eq!(e.to_string(), "cannot overwrite directory with non-directory x");
        copy_entry(s.as_fd(), OsStr::new("x"), d.as_fd(), OsStr::new("y"), owner, Path::new("x")).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host");
        assert!(!dst.join("y").is_symlink());
        assert_eq!(std::fs::read_to_string(dst.join("y")).unwrap(), "payload");
    }
}
