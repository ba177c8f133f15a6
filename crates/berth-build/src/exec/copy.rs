//! COPY and ADD: files from the context (or another stage's rootfs) into
//! the step's rootfs, by file descriptor on both sides (sources resolved
//! inside their root, destinations created inside the rootfs), with
//! `.dockerignore` applied, `--chown` and `--chmod`; ADD unpacks local
//! tar archives.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use berth_fs::CleanPath;
use berth_fs::copy::Owner;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::context::{open_parent, walk};
use crate::error::{Error, IoContext, Result};
use crate::ignore::Ignore;

/// Where the files come from.
pub struct Source<'a> {
    pub root: BorrowedFd<'a>,
    pub shown: &'a Path,
    pub ignore: Option<&'a Ignore>,
}

/// One COPY/ADD, its values expanded.
pub struct CopyOp<'a> {
    /// Selected sources, relative to the source root.
    pub sources: &'a [String],
    /// Whether the sources came from a wildcard or are several: the
    /// destination is then a directory.
    pub many: bool,
    /// Absolute, inside the rootfs.
    pub dest: String,
    pub owner: (u32, u32),
    pub chmod: Option<u32>,
    /// ADD: unpack local archives.
    pub extract: bool,
}

/// Does the copy into `rootfs`.
pub fn copy(src: &Source<'_>, op: &CopyOp<'_>, rootfs: &Path) -> Result<()> {
    let root = rustix::fs::open(rootfs, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .ctx("open", rootfs)?;
    let dest = CleanPath::new(op.dest.as_bytes());
    let dest_is_dir = op.many
        || op.dest.ends_with('/')
        || op.dest.ends_with("/.")
        || berth_fs::open_dir_in(root.as_fd(), &CleanPath::path_of(&dest.0)).is_ok();
    for s in op.sources {
        let (dir, name) = open_parent(src.root, s, src.shown)?;
        let st = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).ctx("stat", &src.shown.join(s))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind == FileType::Directory {
            let target = mkdir_in(root.as_fd(), &dest.0, rootfs)?;
            copy_dir(src, s, target.as_fd(), op)?;
            continue;
        }
        if op.extract && kind == FileType::RegularFile && is_archive(&dir, name)? {
            let target = mkdir_in(root.as_fd(), &dest.0, rootfs)?;
            let fd = rustix::fs::openat(&dir, name, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
                .ctx("open", &src.shown.join(s))?;
            let at = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&target));
            let opts = berth_image::unpack::UnpackOptions::default();
            berth_image::unpack::unpack_layer(std::fs::File::from(fd), Path::new(&at), s, &opts)?;
            continue;
        }
        let (parent, dst_name): (OwnedFd, Vec<u8>) = if dest_is_dir {
            (mkdir_in(root.as_fd(), &dest.0, rootfs)?, name.as_encoded_bytes().to_vec())
        } else {
            let Some((parts, last)) = dest.split_last() else {
                return Err(Error::Invalid(format!("cannot copy {s} onto /")));
            };
            (mkdir_in(root.as_fd(), parts, rootfs)?, last.to_vec())
        };
        let dst_name = os(&dst_name);
        berth_fs::copy::copy_entry(dir.as_fd(), name, parent.as_fd(), dst_name, own(op), &src.shown.join(s))?;
        finish(parent.as_fd(), dst_name, op, kind)?;
    }
    Ok(())
}

fn own(op: &CopyOp<'_>) -> Owner {
    Owner::Fixed(op.owner.0, op.owner.1)
}

/// A directory source: what it holds (not itself) into `target`, skipping
/// what `.dockerignore` excludes.
fn copy_dir(src: &Source<'_>, rel: &str, target: BorrowedFd<'_>, op: &CopyOp<'_>) -> Result<()> {
    let prefix_len = if rel.is_empty() { 0 } else { rel.len() + 1 };
    walk(src.root, src.shown, rel, src.ignore, &mut |path, dir, name, st| {
        if path.len() < prefix_len {
            return Ok(()); // the source directory itself
        }
        let inner = &path[prefix_len..];
        let clean = CleanPath::new(inner.as_bytes());
        let Some((parts, last)) = clean.split_last() else { return Ok(()) };
        let parent = berth_fs::mkdir_all_in(target, parts).ctx("create", Path::new(inner))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind == FileType::Directory {
            let d = os(last);
            if rustix::fs::statat(&parent, d, AtFlags::SYMLINK_NOFOLLOW).is_err() {
                rustix::fs::mkdirat(&parent, d, Mode::from_raw_mode(st.st_mode & 0o7777))
                    .ctx("create", Path::new(inner))?;
            }
            let fd = berth_fs::open_dir_at(parent.as_fd(), d).ctx("open", Path::new(inner))?;
            rustix::fs::fchown(&fd, Some(uid(op.owner.0)), Some(gid(op.owner.1))).ctx("chown", Path::new(inner))?;
            let mode = op.chmod.unwrap_or(st.st_mode & 0o7777);
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).ctx("chmod", Path::new(inner))?;
            return Ok(());
        }
        berth_fs::copy::copy_entry(dir, name, parent.as_fd(), os(last), own(op), &src.shown.join(path))?;
        finish(parent.as_fd(), os(last), op, kind)
    })
}

/// `--chmod` on what was just copied (not through a symlink).
fn finish(parent: BorrowedFd<'_>, name: &OsStr, op: &CopyOp<'_>, kind: FileType) -> Result<()> {
    if let Some(mode) = op.chmod
        && kind != FileType::Symlink
    {
        rustix::fs::chmodat(parent, name, Mode::from_raw_mode(mode), AtFlags::empty()).ctx("chmod", Path::new(name))?;
    }
    Ok(())
}

/// The directory `parts` inside the rootfs, created (root-owned, 0755)
/// as needed, confined to it.
fn mkdir_in(root: BorrowedFd<'_>, parts: &[Vec<u8>], rootfs: &Path) -> Result<OwnedFd> {
    berth_fs::mkdir_all_in(root, parts).ctx("create", &rootfs.join(CleanPath::path_of(parts)))
}

/// Whether a file is a tar archive, plain or compressed (gzip, zstd).
fn is_archive(dir: &OwnedFd, name: &OsStr) -> Result<bool> {
    let fd = rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
        .ctx("open", Path::new(name))?;
    let f = std::fs::File::from(fd);
    let Ok(mut r) = berth_image::decompress::decompress(f) else { return Ok(false) };
    let mut head = vec![0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match std::io::Read::read(&mut r, &mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    Ok(n == 512 && &head[257..262] == b"ustar")
}

fn os(b: &[u8]) -> &OsStr {
    std::os::unix::ffi::OsStrExt::from_bytes(b)
}

fn uid(u: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw_unchecked(u)
}

fn gid(g: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw_unchecked(g)
}

/// `--chown=user[:group]`: names looked up in the rootfs's passwd/group;
/// a user alone gives its id as the group too, as docker does.
pub fn resolve_chown(rootfs: &Path, spec: &str) -> Result<(u32, u32)> {
    let ident = berth_engine::spec::user::resolve(rootfs, spec)?;
    if spec.contains(':') { Ok((ident.uid, ident.gid)) } else { Ok((ident.uid, ident.uid)) }
}

/// `--chmod=0755`: octal only.
pub fn parse_chmod(s: &str) -> Result<u32> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| Error::Invalid(format!("invalid chmod parameter {s:?}: an octal mode is expected")))
}

/// Writes a heredoc's body as the file `name` in `dir` (a directory of the
/// step's own), mode `mode`. The name must be one plain path component:
/// the parser refuses others for COPY/ADD, and this write is confined by
/// itself too (a body never lands outside `dir`, whatever the AST holds).
pub fn write_heredoc(dir: &Path, name: &str, body: &[u8], mode: u32) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(Error::Invalid(format!("heredoc name {name:?} must be a plain file name")));
    }
    let d =
        rustix::fs::open(dir, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ctx("open", dir)?;
    let fd = rustix::fs::openat(
        &d,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )
    .ctx("create", &dir.join(name))?;
    // The umask does not decide the mode (a `#!` script must be executable).
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).ctx("chmod", &dir.join(name))?;
    std::io::Write::write_all(&mut std::fs::File::from(fd), body).ctx("write", &dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heredoc_names_cannot_leave_their_directory() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("step");
        std::fs::create_dir(&dir).unwrap();
        let abs = top.path().join("abs");
        for bad in ["../escape", "sub/x", ".", "..", "", abs.to_str().unwrap()] {
            let e = write_heredoc(&dir, bad, b"x", 0o644).expect_err(bad);
            assert!(e.to_string().contains(&format!("heredoc name {bad:?}")), "{e}");
        }
        assert!(!top.path().join("escape").exists(), "a heredoc was written outside its directory");
        assert!(!abs.exists(), "a heredoc was written at an absolute path");
        write_heredoc(&dir, "EOF", b"body\n", 0o755).unwrap();
        assert_eq!(std::fs::read(dir.join("EOF")).unwrap(), b"body\n");
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir.join("EOF")).unwrap().permissions());
        assert_eq!(mode & 0o7777, 0o755);
    }
}
