//! The build context: a directory (or a tar read from stdin, unpacked into
//! one), its `.dockerignore`, and the two things COPY/ADD ask of it: which
//! files a source names (wildcards included), and a hash of their content
//! for the cache.
//!
//! Every lookup is confined to the context: sources are cleaned lexically
//! (a `..` that climbs out is refused, as docker refuses it) and resolved
//! with RESOLVE_IN_ROOT, so a symlink in the context never leads out of it.
//! The walk opens each entry relative to its directory, never following a
//! symlink.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::ignore::Ignore;

/// A build context.
pub struct Context {
    root: PathBuf,
    fd: OwnedFd,
    ignore: Ignore,
    /// The directory a tar context was unpacked into, removed on drop.
    _tmp: Option<tempfile::TempDir>,
}

impl Context {
    /// A directory context and its `.dockerignore`.
    pub fn dir(root: &Path) -> Result<Context> {
        Self::open(root, None)
    }

    /// A tar context (possibly compressed), unpacked into a new directory
    /// under `tmp_parent`.
    pub fn tar(input: impl Read, tmp_parent: &Path) -> Result<Context> {
        let tmp = tempfile::Builder::new()
            .prefix("context-")
            .tempdir_in(tmp_parent)
            .ctx("create a directory in", tmp_parent)?;
        let opts = berth_image::unpack::UnpackOptions::default();
        berth_image::unpack::unpack_layer(input, tmp.path(), "build context", &opts)?;
        let root = tmp.path().to_path_buf();
        Self::open(&root, Some(tmp))
    }

    fn open(root: &Path, tmp: Option<tempfile::TempDir>) -> Result<Context> {
        let fd = rustix::fs::open(root, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .ctx("open the build context", root)?;
        let ignore = match std::fs::read_to_string(root.join(".dockerignore")) {
            Ok(text) => Ignore::parse(&text).map_err(|e| Error::Invalid(format!(".dockerignore: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ignore::default(),
            Err(e) => return Err(e).ctx("read", &root.join(".dockerignore")),
        };
        Ok(Context { root: root.to_path_buf(), fd, ignore, _tmp: tmp })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn ignore(&self) -> &Ignore {
        &self.ignore
    }

    /// Reads a file of the context (the Dockerfile), confined to it.
    pub fn read_file(&self, rel: &str) -> Result<String> {
        let clean = clean_source(rel).map_err(Error::Invalid)?;
        let (dir, name) = open_parent(self.fd(), &clean, &self.root)?;
        let fd = rustix::fs::openat(&dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .ctx("open", &self.root.join(&clean))?;
        let mut s = String::new();
        std::fs::File::from(fd).read_to_string(&mut s).ctx("read", &self.root.join(&clean))?;
        Ok(s)
    }
}

/// The relative, cleaned form of a source path; an error when `..` climbs
/// out of the root.
pub fn clean_source(src: &str) -> Result<String, String> {
    let mut out: Vec<&str> = Vec::new();
    for c in src.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(format!("forbidden path outside the build context: {src}"));
                }
            }
            c => out.push(c),
        }
    }
    Ok(out.join("/"))
}

/// The directory holding `rel` inside `root` (confined) and its last name.
pub(crate) fn open_parent<'a>(root: BorrowedFd<'_>, rel: &'a str, shown: &Path) -> Result<(OwnedFd, &'a OsStr)> {
    let (parent, name) = match rel.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", rel),
    };
    let name = if name.is_empty() { "." } else { name };
    let dir = berth_fs::open_dir_in(root, Path::new(parent)).ctx("open", &shown.join(parent))?;
    Ok((dir, OsStr::new(name)))
}

/// Whether `s` holds a wildcard (docker's filepath.Match metacharacters).
fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The sources `src` names in the tree at `root` (a context or a stage's
/// rootfs): itself, or what its wildcards match, relative and cleaned.
/// None matched is docker's error.
pub fn select(root: BorrowedFd<'_>, shown: &Path, src: &str, ignore: Option<&Ignore>) -> Result<Vec<String>> {
    let clean = clean_source(src).map_err(Error::Invalid)?;
    if !has_wildcard(&clean) {
        let (dir, name) =
            open_parent(root, &clean, shown).map_err(|_| Error::Invalid(format!("\"/{clean}\": not found")))?;
        if rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).is_err()
            || ignore.is_some_and(|i| i.excluded(&clean))
        {
            return Err(Error::Invalid(format!("\"/{clean}\": not found")));
        }
        return Ok(vec![clean]);
    }
    let pattern = Ignore::from_patterns([clean.as_str()]).map_err(|e| Error::Invalid(format!("{src}: {e}")))?;
    let depth = clean.split('/').count();
    let mut out = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(dir) = stack.pop() {
        let fd = match berth_fs::open_dir_in(root, Path::new(if dir.is_empty() { "." } else { &dir })) {
            Ok(fd) => fd,
            Err(_) => continue,
        };
        for name in berth_fs::entries(fd.as_fd()).ctx("read", &shown.join(&dir))? {
            let name = String::from_utf8_lossy(&name).into_owned();
            let rel = if dir.is_empty() { name } else { format!("{dir}/{name}") };
            let d = rel.split('/').count();
            if d == depth {
                if pattern.excluded(&rel) && !ignore.is_some_and(|i| i.excluded(&rel)) {
                    out.push(rel);
                }
            } else if d < depth {
                stack.push(rel);
            }
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(Error::Invalid(format!("lstat {src}: no source files were specified")));
    }
    Ok(out)
}

/// What a walk of a source sees: each entry not excluded, with its stat.
pub(crate) fn walk(
    root: BorrowedFd<'_>,
    shown: &Path,
    rel: &str,
    ignore: Option<&Ignore>,
    visit: &mut dyn FnMut(&str, BorrowedFd<'_>, &OsStr, &rustix::fs::Stat) -> Result<()>,
) -> Result<()> {
    let (dir, name) = open_parent(root, rel, shown)?;
    walk_at(dir.as_fd(), name, rel, shown, ignore, visit)
}

fn walk_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    rel: &str,
    shown: &Path,
    ignore: Option<&Ignore>,
    visit: &mut dyn FnMut(&str, BorrowedFd<'_>, &OsStr, &rustix::fs::Stat) -> Result<()>,
) -> Result<()> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ctx("stat", &shown.join(rel))?;
    let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
    let excluded = ignore.is_some_and(|i| i.excluded(rel));
    if is_dir && excluded && ignore.is_some_and(|i| i.skip_dir(rel)) {
        return Ok(());
    }
    if !excluded {
        visit(rel, dir, name, &st)?;
    }
    if is_dir {
        let sub = berth_fs::open_dir_at(dir, name).ctx("open", &shown.join(rel))?;
        let mut names = berth_fs::entries(sub.as_fd()).ctx("read", &shown.join(rel))?;
        names.sort();
        for n in names {
            let n = OsStr::from_bytes(&n);
            let child = if rel.is_empty() {
                n.to_string_lossy().into_owned()
            } else {
                format!("{rel}/{}", n.to_string_lossy())
            };
            walk_at(sub.as_fd(), n, &child, shown, ignore, visit)?;
        }
    }
    Ok(())
}

/// sha256 over the selected sources: for each entry its path (relative to
/// the source), type, mode, owner, and content or link target; never
/// times, so touching a file keeps the cache.
pub fn hash_sources(root: BorrowedFd<'_>, shown: &Path, sources: &[String], ignore: Option<&Ignore>) -> Result<String> {
    let mut h = Sha256::new();
    for src in sources {
        h.update(format!("source {src}\n").as_bytes());
        walk(root, shown, src, ignore, &mut |rel, dir, name, st| {
            let kind = FileType::from_raw_mode(st.st_mode);
            h.update(format!("{rel}\0{kind:?}\0{:o}\0{}:{}\0", st.st_mode & 0o7777, st.st_uid, st.st_gid).as_bytes());
            match kind {
                FileType::RegularFile => {
                    let fd = rustix::fs::openat(
                        dir,
                        name,
                        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .ctx("open", &shown.join(rel))?;
                    let mut f = std::fs::File::from(fd);
                    let mut buf = vec![0u8; 1 << 16];
                    loop {
                        let n = f.read(&mut buf).ctx("read", &shown.join(rel))?;
                        if n == 0 {
                            break;
                        }
                        h.update(&buf[..n]);
                    }
                }
                FileType::Symlink => {
                    let t = rustix::fs::readlinkat(dir, name, Vec::new()).ctx("readlink", &shown.join(rel))?;
                    h.update(t.as_bytes());
                }
                _ => {}
            }
            h.update(b"\n");
            Ok(())
        })?;
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_climbing_out_of_the_context_are_refused() {
        assert_eq!(clean_source("./a/../b/").unwrap(), "b");
        let e = clean_source("../x").unwrap_err();
        assert!(e.contains("outside the build context"), "{e}");
        assert!(clean_source("a/../../x").is_err());
    }
}
