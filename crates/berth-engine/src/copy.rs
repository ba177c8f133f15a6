//! `berth cp`: files between the host and a container, both ways, with
//! docker's rules for what lands where.
//!
//! The container's side is hostile ground: its symlinks may point anywhere
//! (`/evil -> /`), and a running container may swap a directory for a
//! symlink while we copy. So a path given for the container is resolved
//! inside its root with pathrs (RESOLVE_IN_ROOT: an absolute symlink means
//! the container's `/`), and from there berth-fs's copy walks both trees
//! by file descriptor: each entry is opened with `openat(dirfd, name,
//! O_NOFOLLOW)` relative to a directory already held, never by a path
//! string the kernel would resolve again. Symlinks are copied as symlinks,
//! never followed; hard links within the copy stay links (as docker's tar
//! stream keeps them).
//!
//! The container's root is `/proc/PID/root` while it runs (so its volumes
//! and tmpfs mounts are seen as it sees them), else its overlay rootfs,
//! which stays mounted until the container is removed.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use berth_fs::copy::{self as walk, Owner};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use pathrs::flags::OpenFlags;

use crate::Error;
use crate::engine::Engine;
use crate::rootview::View;
use crate::store::{ContainerRecord, Status};

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Engine(#[from] Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// docker's words.
    #[error("Could not find the file {path} in container {container}")]
    NotFound { path: String, container: String },
    #[error("the root filesystem of container {0} is not mounted (was the host rebooted?): remove the container")]
    NotMounted(String),
    #[error("resolve {path} in container {container}: {source}")]
    Resolve { path: String, container: String, source: pathrs::error::Error },
    #[error("cannot copy a directory to a file: {0}")]
    DirectoryToFile(String),
    /// The copy itself (berth-fs): the entry and what failed.
    #[error(transparent)]
    Copy(#[from] walk::Error),
    #[error("destination directory {0} does not exist")]
    NoDirectory(String),
    #[error("{what} {}: {source}", path.display())]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> CopyError + 'a {
    move |e| CopyError::Io { what, path: path.to_owned(), source: e.into() }
}

fn io_std<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CopyError + 'a {
    move |source| CopyError::Io { what, path: path.to_owned(), source }
}

/// What a copy reads: one entry of a directory, or (for `SRC/.`) all
/// that a directory holds.
struct Source {
    dir: OwnedFd,
    name: Option<OsString>,
    is_dir: bool,
}

/// Where a copy writes: `name` in `dir`, or (a directory source into an
/// existing directory with `SRC/.`) straight into `dir`.
struct Target {
    dir: OwnedFd,
    name: Option<OsString>,
}

impl Engine {
    /// `cp CONTAINER:SRC DST`.
    pub fn copy_from_container(&self, key: &str, src: &str, dst: &Path, archive: bool) -> Result<(), CopyError> {
        let rec = self.refresh(&self.containers()?.get(key)?);
        let root = self.copy_root(&rec)?;
        let source = container_source(&root, &rec, src)?;
        let target = host_target(dst, &source)?;
        let owner = if archive {
            Owner::Keep
        } else {
            Owner::Fixed(nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw())
        };
        copy(&source, &target, owner, Path::new(src))
    }

    /// `cp SRC CONTAINER:DST`. What is made belongs to root in the
    /// container, or with `archive` to the source's owner (docker's `-a`).
    pub fn copy_into_container(&self, key: &str, src: &Path, dst: &str, archive: bool) -> Result<(), CopyError> {
        let rec = self.refresh(&self.containers()?.get(key)?);
        let root = self.copy_root(&rec)?;
        let source = host_source(src)?;
        let target = container_target(&root, &rec, dst, &source)?;
        copy(&source, &target, if archive { Owner::Keep } else { Owner::Fixed(0, 0) }, src)
    }

    /// What `path` in the container is (docker's `HEAD .../archive`): the
    /// entry itself, a symlink not followed.
    pub fn stat_in_container(&self, key: &str, path: &str) -> Result<PathStat, CopyError> {
        let rec = self.refresh(&self.containers()?.get(key)?);
        let root = self.copy_root(&rec)?;
        let source = container_source(&root, &rec, path)?;
        let not_found = || CopyError::NotFound { path: path.to_owned(), container: rec.name.clone() };
        let st = match &source.name {
            Some(name) => fstatat(&source.dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW),
            None => fstat(&source.dir),
        }
        .map_err(|_| not_found())?;
        let link_target = match &source.name {
            Some(name) if kind_of(&st) == SFlag::S_IFLNK => {
                let target = nix::fcntl::readlinkat(&source.dir, name.as_os_str()).map_err(|_| not_found())?;
                Some(link_target(&container_path(path), Path::new(&target)))
            }
            _ => None,
        };
        let shown = Path::new(path);
        let name = match shown.file_name() {
            Some(n) if !wants_contents(path) => n.to_string_lossy().into_owned(),
            _ if path.ends_with("/.") || path == "." => ".".to_owned(),
            _ => "/".to_owned(),
        };
        Ok(PathStat {
            name,
            size: st.st_size as u64,
            mode: st.st_mode,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            link_target,
        })
    }

    /// `export`: the container's root filesystem (its overlay, without
    /// the mounts a running container has over it) copied into the new
    /// directory `dst`, owners kept.
    pub fn export_rootfs(&self, key: &str, dst: &Path) -> Result<(), CopyError> {
        let rec = self.refresh(&self.containers()?.get(key)?);
        let root = self.overlay_root(&rec)?;
        let source = container_source(&root, &rec, "/.")?;
        let target = host_target(dst, &source)?;
        copy(&source, &target, Owner::Keep, Path::new("/"))
    }

    /// The container's overlay rootfs, without the mounts a running
    /// container has over it.
    fn overlay_root(&self, rec: &ContainerRecord) -> Result<pathrs::Root, CopyError> {
        self.container_root(rec, false)?.map(View::into_root).ok_or_else(|| CopyError::NotMounted(rec.id.clone()))
    }

    /// The container's `/`: as its init process sees it while it runs
    /// (with its volumes and tmpfs mounts), else its overlay rootfs.
    fn copy_root(&self, rec: &ContainerRecord) -> Result<pathrs::Root, CopyError> {
        let live = rec.status == Status::Running;
        self.container_root(rec, live)?.map(View::into_root).ok_or_else(|| CopyError::NotMounted(rec.id.clone()))
    }
}

/// One entry in a container, as docker's `X-Docker-Container-Path-Stat`
/// describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathStat {
    /// The last component of the path asked for (`.` for `DIR/.`).
    pub name: String,
    pub size: u64,
    /// `st_mode`: the type and permission bits.
    pub mode: u32,
    /// Seconds and nanoseconds.
    pub mtime: (i64, i64),
    /// A symlink's target, absolute in the container (resolved against
    /// the link's directory, not followed further).
    pub link_target: Option<String>,
}

/// `target` of the symlink at `link`, as an absolute path.
fn link_target(link: &Path, target: &Path) -> String {
    let joined = link.parent().unwrap_or(Path::new("/")).join(target);
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out.display().to_string()
}

/// `SRC/.` (or `/`) means what the directory holds.
fn wants_contents(p: &str) -> bool {
    p.ends_with("/.") || p == "." || Path::new(p).file_name().is_none()
}

fn container_path(p: &str) -> PathBuf {
    Path::new("/").join(p)
}

/// A directory handle as a readable directory fd.
fn reopen_dir(h: &pathrs::Handle, path: &Path) -> Result<OwnedFd, CopyError> {
    h.reopen(OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY | OpenFlags::O_CLOEXEC)
        .map(OwnedFd::from)
        .map_err(|e| io_std("open directory", path)(std::io::Error::other(e.to_string())))
}

fn is_enoent(e: &pathrs::error::Error) -> bool {
    matches!(e.kind(), pathrs::error::ErrorKind::OsError(Some(n)) if n == libc::ENOENT || n == libc::ENOTDIR)
}

fn kind_of(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

fn container_source(root: &pathrs::Root, rec: &ContainerRecord, src: &str) -> Result<Source, CopyError> {
    let path = container_path(src);
    let not_found = || CopyError::NotFound { path: src.to_owned(), container: rec.name.clone() };
    let resolve = |p: &Path| {
        root.resolve(p).map_err(|e| {
            if is_enoent(&e) {
                not_found()
            } else {
                CopyError::Resolve { path: p.display().to_string(), container: rec.name.clone(), source: e }
            }
        })
    };
    if wants_contents(src) {
        let dir = reopen_dir(&resolve(&path)?, &path).map_err(|_| not_found())?;
        return Ok(Source { dir, name: None, is_dir: true });
    }
    let (parent, name) = split(&path).ok_or_else(not_found)?;
    let dir = reopen_dir(&resolve(parent)?, parent)?;
    let st = fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|_| not_found())?;
    Ok(Source { dir, name: Some(name.to_owned()), is_dir: kind_of(&st) == SFlag::S_IFDIR })
}

fn host_source(src: &Path) -> Result<Source, CopyError> {
    let contents = wants_contents(&src.to_string_lossy());
    let open = |p: &Path| {
        openat(nix::fcntl::AT_FDCWD, p, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(io("open directory", p))
    };
    if contents {
        return Ok(Source { dir: open(src)?, name: None, is_dir: true });
    }
    let meta = std::fs::symlink_metadata(src).map_err(io_std("read", src))?;
    let (parent, name) = split(src).ok_or_else(|| io_std("read", src)(std::io::ErrorKind::InvalidInput.into()))?;
    let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
    Ok(Source { dir: open(parent)?, name: Some(name.to_owned()), is_dir: meta.is_dir() })
}

/// `path`'s directory and last component.
fn split(path: &Path) -> Option<(&Path, &OsStr)> {
    Some((path.parent().unwrap_or(Path::new("/")), path.file_name()?))
}

/// docker's rules, on the host: into an existing directory; over an
/// existing file (not with a directory); else as a new entry named DST.
fn host_target(dst: &Path, src: &Source) -> Result<Target, CopyError> {
    let open = |p: &Path| {
        openat(nix::fcntl::AT_FDCWD, p, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(io("open directory", p))
    };
    match std::fs::metadata(dst) {
        Ok(m) if m.is_dir() => Ok(Target { dir: open(dst)?, name: src.name.clone() }),
        Ok(_) if src.is_dir => Err(CopyError::DirectoryToFile(dst.display().to_string())),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_std("read", dst)(e)),
        _ => {
            if dst.as_os_str().as_bytes().ends_with(b"/") {
                return Err(CopyError::NoDirectory(dst.display().to_string()));
            }
            let (parent, name) = split(dst).ok_or_else(|| CopyError::NoDirectory(dst.display().to_string()))?;
            let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
            Ok(Target { dir: open(parent)?, name: Some(name.to_owned()) })
        }
    }
}

/// docker's rules, in the container, every lookup inside its root.
fn container_target(root: &pathrs::Root, rec: &ContainerRecord, dst: &str, src: &Source) -> Result<Target, CopyError> {
    let path = container_path(dst);
    let resolve_err =
        |p: &Path, e| CopyError::Resolve { path: p.display().to_string(), container: rec.name.clone(), source: e };
    match root.resolve(&path) {
        Ok(h) if fstat(&h).is_ok_and(|st| kind_of(&st) == SFlag::S_IFDIR) => {
            Ok(Target { dir: reopen_dir(&h, &path)?, name: src.name.clone() })
        }
        Ok(_) if src.is_dir => Err(CopyError::DirectoryToFile(dst.to_owned())),
        Err(e) if !is_enoent(&e) => Err(resolve_err(&path, e)),
        _ => {
            if dst.ends_with('/') {
                return Err(CopyError::NoDirectory(dst.to_owned()));
            }
            let (parent, name) = split(&path).ok_or_else(|| CopyError::NoDirectory(dst.to_owned()))?;
            let h = root.resolve(parent).map_err(|e| {
                if is_enoent(&e) {
                    CopyError::NoDirectory(parent.display().to_string())
                } else {
                    resolve_err(parent, e)
                }
            })?;
            Ok(Target { dir: reopen_dir(&h, parent)?, name: Some(name.to_owned()) })
        }
    }
}

fn copy(src: &Source, dst: &Target, owner: Owner, shown: &Path) -> Result<(), CopyError> {
    let (from, to) = (src.dir.as_fd(), dst.dir.as_fd());
    match (&src.name, &dst.name) {
        (Some(s), Some(d)) => walk::copy_entry(from, s, to, d, owner, shown)?,
        // Everything a directory holds, as a new (or existing) directory.
        (None, Some(d)) => walk::copy_dir(from, walk::make_dir(to, d, shown)?.as_fd(), owner, shown)?,
        (None, None) => walk::copy_contents(from, to, owner, shown)?,
        // A named source always gives the target a name.
        (Some(s), None) => walk::copy_entry(from, s, to, s, owner, shown)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn source_in(root: &pathrs::Root, path: &str) -> Source {
        let rec = ContainerRecord::new(&"a".repeat(64), "c", "i", "sha256:0", "/b".into());
        container_source(root, &rec, path).unwrap()
    }

    #[test]
    fn a_tree_copies_out_with_symlinks_as_symlinks_and_no_escape() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc/sub")).unwrap();
        std::fs::write(rootfs.join("etc/hostname"), "box\n").unwrap();
        std::fs::write(rootfs.join("etc/sub/f"), "deep").unwrap();
        std::os::unix::fs::symlink("/", rootfs.join("evil")).unwrap();
        std::os::unix::fs::symlink("/", rootfs.join("etc/sub/up")).unwrap();
        let root = pathrs::Root::open(&rootfs).unwrap();

        // Through /evil -> / the container's own /etc is reached.
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let src = source_in(&root, "/evil/etc/hostname");
        copy(&src, &host_target(&out.join("h"), &src).unwrap(), Owner::Keep, Path::new("x")).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("h")).unwrap(), "box\n");

        let src = source_in(&root, "/etc");
        assert!(src.is_dir);
        copy(&src, &host_target(&out, &src).unwrap(), Owner::Keep, Path::new("x")).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("etc/sub/f")).unwrap(), "deep");
        assert_eq!(std::fs::read_link(out.join("etc/sub/up")).unwrap(), Path::new("/"));

        // SRC/. into a new directory: the contents.
        let src = source_in(&root, "/etc/.");
        copy(&src, &host_target(&out.join("flat"), &src).unwrap(), Owner::Keep, Path::new("x")).unwrap();
        assert!(out.join("flat/hostname").is_file());
        // A directory onto a file, a missing directory: docker's errors.
        let src = source_in(&root, "/etc");
        assert!(matches!(host_target(&out.join("h"), &src), Err(CopyError::DirectoryToFile(_))));
        assert!(matches!(host_target(&out.join("nope/"), &src), Err(CopyError::NoDirectory(_))));
    }

    #[test]
    fn link_targets_are_absolute_in_the_container_and_never_climb_above_it() {
        assert_eq!(link_target(Path::new("/etc/x"), Path::new("y")), "/etc/y");
        assert_eq!(link_target(Path::new("/etc/x"), Path::new("../../../usr/y")), "/usr/y");
        assert_eq!(link_target(Path::new("/etc/x"), Path::new("/abs/./z")), "/abs/z");
        assert_eq!(link_target(Path::new("/x"), Path::new("..")), "/");
    }

    #[test]
    fn hard_links_copy_out_as_links_as_docker_cp_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("usr/bin")).unwrap();
        std::fs::write(rootfs.join("usr/bin/git"), "elf").unwrap();
        std::fs::hard_link(rootfs.join("usr/bin/git"), rootfs.join("usr/bin/git-upload-pack")).unwrap();
        let root = pathrs::Root::open(&rootfs).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let src = source_in(&root, "/usr");
        copy(&src, &host_target(&out, &src).unwrap(), Owner::Keep, Path::new("/usr")).unwrap();
        let a = std::fs::metadata(out.join("usr/bin/git")).unwrap();
        let b = std::fs::metadata(out.join("usr/bin/git-upload-pack")).unwrap();
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 2), "one file, two names");
    }

    #[test]
    fn writes_into_the_container_stay_inside_it() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        let host_secret = dir.path().join("secret");
        std::fs::write(&host_secret, "host").unwrap();
        std::os::unix::fs::symlink("/", rootfs.join("evil")).unwrap();
        std::os::unix::fs::symlink(&host_secret, rootfs.join("etc/x")).unwrap();
        let root = pathrs::Root::open(&rootfs).unwrap();
        let rec = ContainerRecord::new(&"a".repeat(64), "c", "i", "sha256:0", "/b".into());
        let file = dir.path().join("payload");
        std::fs::write(&file, "payload").unwrap();

        let src = host_source(&file).unwrap();
        // /evil/<host dir>/secret is the container's path of that name.
        let through = format!("/evil{}", dir.path().display());
        assert!(matches!(
            container_target(&root, &rec, &format!("{through}/secret"), &src),
            Err(CopyError::NoDirectory(_))
        ));
        // A symlink to a host path is replaced, the host file untouched.
        let t = container_target(&root, &rec, "/etc/x", &src).unwrap();
        copy(&src, &t, Owner::Fixed(0, 0), &file).unwrap();
        assert_eq!(std::fs::read_to_string(&host_secret).unwrap(), "host");
        assert_eq!(std::fs::read_to_string(rootfs.join("etc/x")).unwrap(), "payload");
        assert!(!rootfs.join("etc/x").is_symlink());
        let t = container_target(&root, &rec, "/evil/etc/", &src).unwrap();
        copy(&src, &t, Owner::Fixed(0, 0), &file).unwrap();
        assert_eq!(std::fs::read_to_string(rootfs.join("etc/payload")).unwrap(), "payload");
    }
}
