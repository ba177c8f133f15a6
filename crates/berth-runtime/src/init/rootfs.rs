//! The container's root: a handle on it that resolves every path inside it,
//! its preparation before the mounts, and the switch into it (pivot_root).
//!
//! Every path under the rootfs is resolved through `pathrs` (openat2 with
//! RESOLVE_IN_ROOT, or its emulation): a symlink `rootfs/evil -> /etc` is
//! followed as `rootfs/etc`, never as the host's /etc. Mounts then target
//! the resolved fd through /proc/self/fd, so a path swapped after it was
//! resolved cannot redirect the mount (CVE-2021-30465).

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use berth_fs::overlay::Overlay;
use nix::fcntl::{OFlag, open};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::Mode;
use nix::unistd::{chdir, chroot, fchdir, pivot_root};
use pathrs::flags::OpenFlags;
use pathrs::{Handle, Root};

use crate::error::{Context, Error, Result};
use crate::sys::fd_path;

/// The container's root filesystem, as a path on the host and a pathrs root.
pub struct Rootfs {
    pub path: PathBuf,
    pub root: Root,
}

impl Rootfs {
    pub fn open(path: &Path) -> Result<Rootfs> {
        let root = Root::open(path).step(|| format!("open rootfs '{}'", path.display()))?;
        Ok(Rootfs { path: path.to_path_buf(), root })
    }

    /// Resolves `dest` inside the root.
    pub fn resolve(&self, dest: &Path) -> Result<Handle> {
        self.root.resolve(dest).step(|| format!("resolve '{}' in the rootfs", dest.display()))
    }

    /// Resolves `dest` inside the root, `None` if it does not exist.
    pub fn resolve_opt(&self, dest: &Path) -> Result<Option<Handle>> {
        match self.probe(dest, rustix::fs::ResolveFlags::empty()) {
            Ok(fd) => Ok(Some(Handle::from_fd(fd))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            // pathrs again, for its error (or its answer, if the kernel's
            // openat2 refused something pathrs can do).
            Err(_) => match self.root.resolve(dest) {
                Ok(h) => Ok(Some(h)),
                Err(e) if errno_of(&e) == Some(libc::ENOENT) => Ok(None),
                Err(e) => Err(Error::Path { step: format!("resolve '{}' in the rootfs", dest.display()), source: e }),
            },
        }
    }

    /// `dest` resolved inside the root by the kernel: openat2 with
    /// RESOLVE_IN_ROOT and no magic links, the call pathrs itself makes on
    /// this kernel (the runtime needs Linux 5.12 anyway). For lookups that
    /// may miss: pathrs builds each error eagerly, reading the root's path
    /// through a verified procfs (some thirty system calls per miss), and a
    /// start looks up a dozen paths that are not there (masked paths, the
    /// v1 hierarchies' mount points).
    fn probe(&self, dest: &Path, extra: rustix::fs::ResolveFlags) -> rustix::io::Result<std::os::fd::OwnedFd> {
        use rustix::fs::{Mode as RMode, OFlags, ResolveFlags};
        let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | extra;
        rustix::fs::openat2(&self.root, dest, OFlags::PATH | OFlags::CLOEXEC, RMode::empty(), how)
    }

    /// Makes `dest` (and its parents) a directory inside the root.
    pub fn mkdir(&self, dest: &Path) -> Result<Handle> {
        if let Some(h) = self.existing_dir(dest).or_else(|| self.mkdir_last(dest)) {
            return Ok(h);
        }
        let perm = Permissions::from_mode(0o755);
        let step = || format!("mkdir '{}' in the rootfs", dest.display());
        match self.root.mkdir_all(dest, &perm) {
            // pathrs will not create through a dangling symlink; runc
            // (securejoin) follows it inside the root, and images rely on
            // that. Resolve the links ourselves, within the root, and retry.
            Err(e) => match self.follow_links(dest) {
                Ok(target) if target != dest => self.root.mkdir_all(&target, &perm).step(step),
                _ => Err(e).step(step),
            },
            ok => ok.step(step),
        }
    }

    /// Makes `dest` a directory inside the root, refusing any symlink on
    /// the way (for proc and sysfs: CVE-2019-16884, CVE-2023-27561). `why`
    /// is the error's text when that fails.
    pub fn mkdir_no_symlinks(&self, dest: &Path, why: impl FnOnce() -> String) -> Result<Handle> {
        let existing = self.probe(dest, rustix::fs::ResolveFlags::NO_SYMLINKS).ok().map(Handle::from_fd);
        if let Some(h) = existing.filter(is_dir) {
            return Ok(h);
        }
        let strict = self.root.as_ref().with_resolver_flags(pathrs::flags::ResolverFlags::NO_SYMLINKS);
        strict.mkdir_all(dest, &Permissions::from_mode(0o755)).step(why)
    }

    /// `dest` if it already is a directory (symlinks followed inside the
    /// root, as mkdir_all follows them): one openat2 and an fstat. pathrs's mkdir_all
    /// checks its procfs handle and reopens each component through
    /// /proc/thread-self/fd (some thirty system calls) even when there is
    /// nothing to make, and a container's start makes a dozen such calls.
    fn existing_dir(&self, dest: &Path) -> Option<Handle> {
        self.probe(dest, rustix::fs::ResolveFlags::empty()).ok().map(Handle::from_fd).filter(is_dir)
    }

    /// The common case of a missing directory, cheaply: its parent exists
    /// and only the last component is missing (/dev/pts on a fresh /dev,
    /// each v1 hierarchy under the cgroup tmpfs). The parent is resolved
    /// inside the root by openat2 (RESOLVE_IN_ROOT, as pathrs does it), the
    /// name made with mkdirat on that handle, and opened beneath it with no
    /// symlink allowed, so a swapped path cannot lead out of the root.
    /// Anything else (a missing parent, a symlink or a file at `dest`) is
    /// left to the full path (None).
    fn mkdir_last(&self, dest: &Path) -> Option<Handle> {
        use rustix::fs::{Mode as RMode, OFlags, ResolveFlags};
        let name = dest.file_name()?;
        let parent = self.probe(dest.parent()?, rustix::fs::ResolveFlags::empty()).ok()?;
        match rustix::fs::mkdirat(&parent, name, RMode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(_) => return None,
        }
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat2(&parent, name, flags, RMode::empty(), how).ok()?;
        Some(Handle::from_fd(fd))
    }

    /// `path` with every symlink among its existing components replaced by
    /// its target, read inside the root and clamped to it ("/.." is "/").
    /// Only ever names a path inside the root; pathrs does the opening.
    pub fn follow_links(&self, path: &Path) -> Result<PathBuf> {
        use std::path::Component;
        let mut todo: Vec<std::ffi::OsString> = path
            .components()
            .rev()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect();
        let mut done = PathBuf::from("/");
        let mut hops = 0;
        while let Some(part) = todo.pop() {
            if part == ".." {
                done.pop();
                continue;
            }
            let next = done.join(&part);
            match self.root.readlink(&next) {
                Ok(target) => {
                    hops += 1;
                    if hops > 40 {
                        return Err(Error::os(
                            format!("resolve '{}' in the rootfs", path.display()),
                            nix::errno::Errno::ELOOP,
                        ));
                    }
                    if target.is_absolute() {
                        done = PathBuf::from("/");
                    }
                    for c in target.components().rev() {
                        match c {
                            Component::Normal(n) => todo.push(n.to_os_string()),
                            Component::ParentDir => todo.push("..".into()),
                            _ => {}
                        }
                    }
                }
                // Not a symlink, or not there yet: keep it as it is.
                Err(_) => done = next,
            }
        }
        Ok(done)
    }

    /// Makes `dest` an (empty) file inside the root, unless something is
    /// already there, and returns a handle on it.
    pub fn mkfile(&self, dest: &Path) -> Result<Handle> {
        if let Some(h) = self.resolve_opt(dest)? {
            return Ok(h);
        }
        // A dangling symlink is followed inside the root, as for mkdir.
        let dest = &self.follow_links(dest)?;
        if let Some(parent) = dest.parent() {
            self.mkdir(parent)?;
        }
        match self.root.create_file(dest, OpenFlags::O_WRONLY | OpenFlags::O_CLOEXEC, &Permissions::from_mode(0o644)) {
            Ok(_) => {}
            Err(e) if errno_of(&e) == Some(libc::EEXIST) => {}
            Err(e) => {
                return Err(Error::Path { step: format!("create '{}' in the rootfs", dest.display()), source: e });
            }
        }
        self.resolve(dest)
    }
}

fn is_dir(h: &Handle) -> bool {
    nix::sys::stat::fstat(h).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

/// The errno behind a pathrs error, if it came from a system call.
pub fn errno_of(e: &pathrs::error::Error) -> Option<i32> {
    match e.kind() {
        pathrs::error::ErrorKind::OsError(errno) => errno,
        _ => None,
    }
}

/// Before any mount: stop mount events from leaking out to the host
/// (rslave, or what rootfsPropagation asks), and make the rootfs a mount
/// point of its own, as pivot_root requires.
///
/// With the engine's `overlay`, the rootfs is that overlay, mounted here,
/// in the container's namespace only: the host's mount table never holds
/// it, and it goes with the namespace when the container's last process
/// ends.
pub fn prepare(rootfs: &Path, propagation: Option<&str>, overlay: Option<&Overlay>) -> Result<()> {
    let flags = initial_propagation(propagation)?;
    mount(None::<&str>, "/", None::<&str>, flags, None::<&str>).step(|| "make / a slave mount (rootfsPropagation)")?;
    // After rslave or rprivate no mount here is shared (a shared one
    // became a slave or private): pivot_root cannot trip on the parent
    // mount, and its search through mountinfo (a line per mount on the
    // host: thousands with a thousand containers) is only needed when the
    // tree stays shared.
    if flags.contains(MsFlags::MS_SHARED) {
        make_parent_mount_private(rootfs)?;
    }
    if let Some(o) = overlay {
        return o.mount(rootfs).map_err(|e| Error::Os {
            step: format!("mount the rootfs overlay on '{}': {}", rootfs.display(), e.what),
            source: e.source,
        });
    }
    mount(Some(rootfs), rootfs, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .step(|| format!("bind mount rootfs '{}' on itself", rootfs.display()))?;
    Ok(())
}

/// The propagation the whole tree gets before the rootfs is bound, so the
/// rootfs's own mount (an engine's overlay is one) has it too, not only
/// "/". unbindable starts as rslave (an unbindable source cannot be bound
/// onto itself) and becomes unbindable after the switch, as with crun and
/// youki.
fn initial_propagation(propagation: Option<&str>) -> Result<MsFlags> {
    let flags = match propagation {
        None | Some("") => MsFlags::MS_SLAVE,
        Some(p) => {
            let f = root_propagation(p)
                .ok_or_else(|| Error::Container(format!("linux.rootfsPropagation: unknown propagation {p:?}")))?;
            if f.contains(MsFlags::MS_UNBINDABLE) { MsFlags::MS_SLAVE } else { f - MsFlags::MS_REC }
        }
    };
    Ok(flags | MsFlags::MS_REC)
}

fn root_propagation(p: &str) -> Option<MsFlags> {
    Some(match p {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// After the switch: shared and unbindable apply to the new root itself (as
/// runtime-spec describes them: a new peer group, a private mount that
/// cannot be bound). slave and private are already so after `prepare`.
pub fn propagate_new_root(propagation: Option<&str>) -> Result<()> {
    let Some(flags) = propagation.and_then(root_propagation) else { return Ok(()) };
    if !flags.intersects(MsFlags::MS_SHARED | MsFlags::MS_UNBINDABLE) {
        return Ok(());
    }
    mount(None::<&str>, "/", None::<&str>, flags, None::<&str>).step(|| "apply rootfsPropagation to the new root")
}

/// pivot_root fails if the mount holding the new root is shared; make that
/// one mount private (only in our mount namespace).
fn make_parent_mount_private(rootfs: &Path) -> Result<()> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").step(|| "read /proc/self/mountinfo")?;
    let mut best: Option<(&str, bool)> = None;
    for line in info.lines() {
        let Some((pre, _)) = line.split_once(" - ") else { continue };
        let fields: Vec<&str> = pre.split(' ').collect();
        let Some(mp) = fields.get(4) else { continue };
        if rootfs.starts_with(mp) && best.is_none_or(|(b, _)| mp.len() >= b.len()) {
            let shared = fields.iter().skip(6).any(|f| f.starts_with("shared:"));
            best = Some((mp, shared));
        }
    }
    if let Some((mp, true)) = best {
        mount(None::<&str>, mp, None::<&str>, MsFlags::MS_PRIVATE, None::<&str>)
            .step(|| format!("make '{mp}' private for pivot_root"))?;
    }
    Ok(())
}

/// Switches root to `rootfs` with pivot_root and detaches the old root, so
/// nothing of the host's mount tree stays reachable.
pub fn pivot(rootfs: &Path) -> Result<()> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let old = open("/", flags, Mode::empty()).step(|| "open old root '/'")?;
    let new = open(rootfs, flags, Mode::empty()).step(|| format!("open new root '{}'", rootfs.display()))?;
    fchdir(&new).step(|| format!("chdir to '{}'", rootfs.display()))?;
    // pivot_root(".", ".") stacks the old root on top of the new one; no
    // directory for it is needed inside the container.
    pivot_root(".", ".").step(|| format!("pivot_root to '{}'", rootfs.display()))?;
    fchdir(&old).step(|| "chdir to the old root")?;
    // Slave first, so unmounting does not propagate to the host.
    mount(None::<&str>, ".", None::<&str>, MsFlags::MS_SLAVE | MsFlags::MS_REC, None::<&str>)
        .step(|| "make the old root a slave mount")?;
    umount2(".", MntFlags::MNT_DETACH).step(|| "unmount the old root")?;
    chdir("/").step(|| "chdir to the new root")
}

/// --no-pivot: move the rootfs over / and chroot into it (for ramdisk
/// roots, where pivot_root is not possible). Less strict than pivot_root:
/// the old root stays mounted underneath.
pub fn move_root(rootfs: &Path) -> Result<()> {
    chdir(rootfs).step(|| format!("chdir to '{}'", rootfs.display()))?;
    mount(Some(rootfs), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .step(|| format!("move '{}' to /", rootfs.display()))?;
    chroot(".").step(|| "chroot into the rootfs")?;
    chdir("/").step(|| "chdir to the new root")
}

/// Without a mount namespace: chroot into the rootfs, touching no mount.
pub fn chroot_into(rootfs: &Path) -> Result<()> {
    chdir(rootfs).step(|| format!("chdir to '{}'", rootfs.display()))?;
    chroot(".").step(|| format!("chroot into '{}'", rootfs.display()))?;
    chdir("/").step(|| "chdir to the new root")
}

/// root.readonly: remount / read-only, keeping the flags the kernel locks
/// on mounts inherited into a user namespace.
pub fn make_root_readonly() -> Result<()> {
    remount_keeping_locked(Path::new("/"), MsFlags::MS_RDONLY).step(|| "remount / read-only (root.readonly)")
}

/// Remounts the bind mount at `target` with `flags`. In a user namespace
/// the kernel refuses to clear nosuid/nodev/noexec/atime flags of mounts
/// inherited from the host; on EPERM retry with those flags kept.
pub fn remount_keeping_locked(target: &Path, flags: MsFlags) -> nix::Result<()> {
    let base = MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    match mount(None::<&str>, target, None::<&str>, base | flags, None::<&str>) {
        Err(nix::errno::Errno::EPERM) => {
            let locked = locked_flags(target)?;
            mount(None::<&str>, target, None::<&str>, base | flags | locked, None::<&str>)
        }
        other => other,
    }
}

fn locked_flags(target: &Path) -> nix::Result<MsFlags> {
    use nix::sys::statvfs::{FsFlags, statvfs};
    let st = statvfs(target)?;
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs) {
            out |= ms;
        }
    }
    Ok(out)
}

/// Mounts `source` (a host path or fd path) as a bind mount on `target`.
pub fn bind(source: &Path, target: &Handle, recursive: bool) -> nix::Result<()> {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    mount(Some(source), &fd_path(target), None::<&str>, flags, None::<&str>)
}
