//! File operations confined to one directory tree, by file descriptor.
//!
//! Three jobs in berth walk trees they must not trust: layer unpack
//! (berth-image) writes an untrusted tar into a snapshot, `cp`
//! (berth-engine) reads and writes a container's root, and a new volume is
//! filled from the image's files at its mount point. They share this
//! layer, so the rules are written once:
//!
//! - a path inside a root is resolved with pathrs (openat2
//!   `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`, or pathrs's checked
//!   emulation where openat2 is missing): a symlink in the tree, even
//!   `/evil -> /`, resolves inside the root ([`open_dir_in`],
//!   [`mkdir_all_in`]);
//! - below a directory already held, every entry is reached with `*at`
//!   calls relative to it and `O_NOFOLLOW` / `AT_SYMLINK_NOFOLLOW`: a
//!   symlink is replaced or copied as a link, never written or read
//!   through ([`remove_at`], [`copy`]);
//! - a file that readers must see whole is replaced by rename
//!   ([`write_atomic`]).

mod atomic;
mod clean;
pub mod copy;
mod mount_attr;
pub mod overlay;

pub use mount_attr::{MOUNT_ATTR_IDMAP, mount_setattr};

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use pathrs::flags::OpenFlags;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

pub use atomic::{write_atomic, write_atomic_durable};
pub use clean::CleanPath;
pub use pathrs::Root;

/// The OS error of a pathrs error, so callers can tell ENOENT from
/// ENOTDIR; pathrs's own refusals (a safety check tripped) keep their
/// words.
pub fn io_error(e: pathrs::error::Error) -> io::Error {
    match e.kind() {
        pathrs::error::ErrorKind::OsError(Some(n)) => io::Error::from_raw_os_error(n),
        _ => io::Error::other(e),
    }
}

/// Opens the directory `path` inside `root` (symlinks followed, but
/// confined to the root; `..` stops at it).
pub fn open_dir_in(root: BorrowedFd<'_>, path: &Path) -> io::Result<OwnedFd> {
    let flags = OpenFlags::O_DIRECTORY | OpenFlags::O_RDONLY | OpenFlags::O_CLOEXEC;
    let path = if path.as_os_str().is_empty() { Path::new(".") } else { path };
    pathrs::RootRef::from_fd(root).open_subpath(path, flags).map(OwnedFd::from).map_err(io_error)
}

/// Opens (creating as needed, mode 0755, owned by the caller) the
/// directory `parts` inside `root`. A non-directory in the way (a file, a
/// dangling symlink) is replaced, as docker does for the parents a layer
/// implies.
pub fn mkdir_all_in(root: BorrowedFd<'_>, parts: &[Vec<u8>]) -> io::Result<OwnedFd> {
    match open_dir_in(root, &CleanPath::path_of(parts)) {
        Ok(fd) => return Ok(fd),
        Err(e) if not_a_dir(&e) => {}
        Err(e) => return Err(e),
    }
    let mut dir = rustix::io::dup(root)?;
    for (i, c) in parts.iter().enumerate() {
        match open_dir_in(root, &CleanPath::path_of(&parts[..=i])) {
            Ok(fd) => dir = fd,
            Err(e) if not_a_dir(&e) => {
                // Whatever is there (a dangling symlink, a file) is not a
                // directory: replace it.
                let name = os(c);
                if rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).is_ok() {
                    remove_at(dir.as_fd(), name)?;
                }
                rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755))?;
                dir = open_dir_at(dir.as_fd(), name)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(dir)
}

/// ENOENT, ENOTDIR, ELOOP: what a lookup through a missing directory or a
/// non-directory (a dangling symlink, a file) gives.
fn not_a_dir(e: &io::Error) -> bool {
    e.raw_os_error()
        .map(Errno::from_raw_os_error)
        .is_some_and(|n| [Errno::NOENT, Errno::NOTDIR, Errno::LOOP].contains(&n))
}

/// Opens the directory `name` in `dir`, refusing a symlink there.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )?)
}

/// Removes `name` in `dir`, recursively if it is a directory, never
/// following a symlink. Nothing there is not an error.
pub fn remove_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
        clear_dir(open_dir_at(dir, name)?.as_fd())?;
        Ok(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?)
    } else {
        Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?)
    }
}

/// Removes everything inside `dir`.
pub fn clear_dir(dir: BorrowedFd<'_>) -> io::Result<()> {
    for name in entries(dir)? {
        remove_at(dir, OsStr::from_bytes(&name))?;
    }
    Ok(())
}

/// The names in `dir` but `.` and `..`, read in full first (so the caller
/// may change the directory while it goes through them).
pub fn entries(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for e in rustix::fs::Dir::read_from(dir)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    Ok(names)
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(dir: &Path) -> OwnedFd {
        rustix::fs::open(dir, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).unwrap()
    }

    #[test]
    fn a_symlink_to_the_host_resolves_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let inside = tmp.path().join("root");
        std::fs::create_dir_all(inside.join("etc")).unwrap();
        std::fs::create_dir_all(tmp.path().join("etc/host-only")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("etc"), inside.join("evil")).unwrap();
        let r = root(&inside);
        // `evil` points at the host's TMP/etc: inside the root that is
        // ROOT/TMP/etc, which does not exist.
        let e = open_dir_in(r.as_fd(), Path::new("evil/host-only")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(2), "{e}");
        assert!(open_dir_in(r.as_fd(), Path::new("../../etc")).is_ok(), "`..` stops at the root");
    }

    #[test]
    fn mkdir_all_replaces_what_is_in_the_way_inside_the_root_only() {
        let tmp = tempfile::tempdir().unwrap();
        let inside = tmp.path().join("root");
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::write(inside.join("file"), "x").unwrap();
        std::os::unix::fs::symlink(tmp.path(), inside.join("up")).unwrap();
        let r = root(&inside);
        let parts = |p: &str| CleanPath::new(p.as_bytes()).0;
        mkdir_all_in(r.as_fd(), &parts("file/a/b")).unwrap();
        assert!(inside.join("file/a/b").is_dir());
        // `up` points at TMP, outside: inside the root it dangles, so it
        // is replaced by a directory and nothing is made outside.
        mkdir_all_in(r.as_fd(), &parts("up/made")).unwrap();
        assert!(!tmp.path().join("made").exists());
        assert!(!inside.join("up").is_symlink());
        assert!(inside.join("up/made").is_dir());
    }

    #[test]
    fn remove_at_never_follows_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let keep = tmp.path().join("keep");
        std::fs::create_dir(&keep).unwrap();
        std::fs::write(keep.join("precious"), "x").unwrap();
        let dir = tmp.path().join("dir");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::os::unix::fs::symlink(&keep, dir.join("sub/link")).unwrap();
        let parent = root(tmp.path());
        remove_at(parent.as_fd(), OsStr::new("dir")).unwrap();
        assert!(!dir.exists());
        assert!(keep.join("precious").exists());
        remove_at(parent.as_fd(), OsStr::new("nothing")).unwrap();
    }
}
