//! Fd-based file operations confined to one directory tree.
//!
//! Every path from a layer is first cleaned lexically (`..` cannot climb
//! above the root, leading `/` is dropped), then its parent directory is
//! opened with openat2 `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`, so even a
//! symlink in the tree that points at `/etc` resolves inside the root. The
//! last component is then created with *at calls and O_NOFOLLOW / no
//! AT_SYMLINK_FOLLOW: a symlink there is replaced, never written through.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// A path inside the root, as its normal components (never empty strings,
/// `.` or `..`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CleanPath(pub Vec<Vec<u8>>);

impl CleanPath {
    /// Cleans a raw tar path. `..` at the root stays at the root, as
    /// RESOLVE_IN_ROOT would have it.
    pub fn new(raw: &[u8]) -> CleanPath {
        let mut out: Vec<Vec<u8>> = Vec::new();
        for c in raw.split(|&b| b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    out.pop();
                }
                c => out.push(c.to_vec()),
            }
        }
        CleanPath(out)
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The parent's components and the last one.
    pub fn split_last(&self) -> Option<(&[Vec<u8>], &[u8])> {
        let (last, parent) = self.0.split_last()?;
        Some((parent, last.as_slice()))
    }

    pub fn join(parts: &[Vec<u8>]) -> Vec<u8> {
        let mut p = Vec::new();
        for (i, c) in parts.iter().enumerate() {
            if i > 0 {
                p.push(b'/');
            }
            p.extend_from_slice(c);
        }
        if p.is_empty() {
            p.push(b'.');
        }
        p
    }

    pub fn display(&self) -> String {
        String::from_utf8_lossy(&CleanPath::join(&self.0)).into_owned()
    }
}

fn os(b: &[u8]) -> &std::ffi::OsStr {
    std::os::unix::ffi::OsStrExt::from_bytes(b)
}

const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

/// Opens the directory at `parts` inside `root` (symlinks followed but
/// confined to the root).
pub fn open_dir_in(root: BorrowedFd<'_>, parts: &[Vec<u8>]) -> rustix::io::Result<OwnedFd> {
    let p = CleanPath::join(parts);
    loop {
        match rustix::fs::openat2(
            root,
            os(&p),
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        ) {
            // openat2 with RESOLVE_IN_ROOT returns EAGAIN if a rename raced
            // with the lookup; just try again.
            Err(Errno::AGAIN) | Err(Errno::INTR) => continue,
            r => return r,
        }
    }
}

/// Opens (creating as needed, mode 0755, owned by the caller) the
/// directory at `parts` inside `root`. A non-directory in the way is
/// replaced, as docker does for parents a layer implies.
pub fn mkdir_all_in(root: BorrowedFd<'_>, parts: &[Vec<u8>]) -> rustix::io::Result<OwnedFd> {
    match open_dir_in(root, parts) {
        Ok(fd) => return Ok(fd),
        Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::LOOP) => {}
        Err(e) => return Err(e),
    }
    let mut dir = rustix::io::dup(root)?;
    for (i, c) in parts.iter().enumerate() {
        match open_dir_in(root, &parts[..=i]) {
            Ok(fd) => dir = fd,
            Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                // Whatever is there (a dangling symlink, a file) is not a
                // directory: replace it.
                if rustix::fs::statat(&dir, os(c), AtFlags::SYMLINK_NOFOLLOW).is_ok() {
                    remove_at(dir.as_fd(), c)?;
                }
                rustix::fs::mkdirat(&dir, os(c), Mode::from_raw_mode(0o755))?;
                dir = rustix::fs::openat(
                    &dir,
                    os(c),
                    OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                    Mode::empty(),
                )?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(dir)
}

/// Removes `name` in `dir`, recursively if it is a directory, never
/// following symlinks.
pub fn remove_at(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<()> {
    let st = match rustix::fs::statat(dir, os(name), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory {
        let sub = rustix::fs::openat(
            dir,
            os(name),
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )?;
        clear_dir(sub.as_fd())?;
        rustix::fs::unlinkat(dir, os(name), AtFlags::REMOVEDIR)
    } else {
        rustix::fs::unlinkat(dir, os(name), AtFlags::empty())
    }
}

/// Removes everything inside `dir`.
pub fn clear_dir(dir: BorrowedFd<'_>) -> rustix::io::Result<()> {
    let mut names = Vec::new();
    {
        let d = rustix::fs::Dir::read_from(dir)?;
        for e in d {
            let e = e?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(n.to_vec());
            }
        }
    }
    for n in names {
        remove_at(dir, &n)?;
    }
    Ok(())
}

pub fn name(b: &[u8]) -> &std::ffi::OsStr {
    os(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_never_climbs_out() {
        let c = |s: &str| CleanPath::new(s.as_bytes()).display();
        assert_eq!(c("../../etc/passwd"), "etc/passwd");
        assert_eq!(c("/etc/passwd"), "etc/passwd");
        assert_eq!(c("a/../../b"), "b");
        assert_eq!(c("./a/./b/"), "a/b");
        assert_eq!(c(".."), ".");
        assert!(CleanPath::new(b"./").is_root());
    }
}
