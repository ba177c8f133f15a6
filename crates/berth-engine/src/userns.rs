//! User namespaces for pods (the CRI's `userns_options`, mode POD).
//!
//! The pod's infra container makes nothing itself: the engine makes the
//! pod's user namespace and a network namespace owned by it, and pins both
//! under the infra container's run directory (`userns`, `netns`), as
//! containerd pins a pod's user namespace and CRI-O's pinns does. The infra
//! container and every member join them by path, so they share one user
//! namespace, and sysfs, net sysctls and CNI see a network namespace the
//! pod's root owns.
//!
//! The rootfs is the container's overlay with each image layer an
//! idmapped mount (through the pod's mappings) given to overlayfs by file
//! descriptor, and the upper directory owned by the pod root's host ids: so
//! the image's files look owned by their own ids inside, and what the
//! container writes lands in the upper directory under the mapped host ids.
//! Nothing is chowned or copied. CRI mounts that carry uid/gid mappings go
//! to the runtime as idmapped bind mounts (runtime-spec `uidMappings`).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::unistd::{ForkResult, Pid};
use serde::{Deserialize, Serialize};

/// The pin file of a pod's user namespace in its infra container's run
/// directory (the network namespace's is `netns` beside it).
pub const PIN: &str = "userns";

/// One line of a uid_map or gid_map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub container_id: u32,
    pub host_id: u32,
    pub size: u32,
}

/// A pod's uid and gid mappings, checked by [`Mappings::new`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mappings {
    pub uids: Vec<IdMap>,
    pub gids: Vec<IdMap>,
}

#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error("user namespace: {0}")]
    Mapping(String),
    #[error("user namespace: {0}")]
    Refused(String),
    #[error("user namespace: {what}: {source}")]
    Os { what: String, source: std::io::Error },
}

fn os(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> UsernsError {
    let what = what.into();
    move |source| UsernsError::Os { what, source }
}

fn errno(what: impl Into<String>) -> impl FnOnce(nix::Error) -> UsernsError {
    let f = os(what);
    move |e| f(e.into())
}

impl Mappings {
    /// The pod's mappings, as berthd accepts them (containerd's rules and
    /// ours): exactly one line each for uids and gids, starting at
    /// container id 0 (the pod's root must be someone on the host, and the
    /// rootfs is owned by root's host ids), not empty, not past 2^32-1,
    /// and not mapping the host's root into the pod (that is no isolation).
    pub fn new(uids: Vec<IdMap>, gids: Vec<IdMap>) -> Result<Mappings, UsernsError> {
        for (what, maps) in [("uid", &uids), ("gid", &gids)] {
            check(what, maps).map_err(|why| UsernsError::Mapping(format!("{what} mappings: {why}")))?;
        }
        Ok(Mappings { uids, gids })
    }

    /// The host uid and gid of the pod's root.
    pub fn root(&self) -> (u32, u32) {
        (self.uids[0].host_id, self.gids[0].host_id)
    }

    fn map_file(maps: &[IdMap]) -> String {
        maps.iter().map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size)).collect()
    }

    fn oci(maps: &[IdMap]) -> Vec<oci_spec::runtime::LinuxIdMapping> {
        maps.iter()
            .filter_map(|m| {
                oci_spec::runtime::LinuxIdMappingBuilder::default()
                    .container_id(m.container_id)
                    .host_id(m.host_id)
                    .size(m.size)
                    .build()
                    .ok()
            })
            .collect()
    }
}

fn check(what: &str, maps: &[IdMap]) -> Result<(), String> {
    let m = match maps {
        [] => return Err("none given (mode POD needs one)".into()),
        [m] => m,
        more => return Err(format!("only one mapping line is supported, got {}", more.len())),
    };
    if m.container_id != 0 {
        return Err(format!(
            "container {what} 0 must be mapped (the line starts at container {what} {})",
            m.container_id
        ));
    }
    if m.size == 0 {
        return Err("the length is 0".into());
    }
    if m.host_id == 0 {
        return Err(format!("host {what} 0 (the host's root) cannot be mapped into a pod"));
    }
    if u64::from(m.host_id) + u64::from(m.size) > u64::from(u32::MAX) {
        return Err(format!("host {what}s {}+{} go past {}", m.host_id, m.size, u32::MAX));
    }
    Ok(())
}

/// What a pod's container needs of the pod's user namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct PodUserns {
    pub mappings: Mappings,
    /// A member: the pinned user namespace of its infra container, joined.
    /// None: the infra container, which makes and pins the pod's user and
    /// network namespaces.
    pub join: Option<PathBuf>,
    /// Mount targets bound idmapped through these mappings.
    pub idmapped_mounts: Vec<(String, Mappings)>,
}

impl crate::engine::Engine {
    /// Where pod `id`'s user namespace is pinned (its members join it).
    pub fn userns_path(&self, id: &str) -> PathBuf {
        self.run_dir(id).join(PIN)
    }
}

/// The user namespace a container of a pod is made in: its pin, and an fd
/// of it for idmapped mounts.
pub(crate) struct Prepared {
    pub path: PathBuf,
    pub fd: OwnedFd,
}

/// The infra container's: the pod's user namespace and a network
/// namespace it owns, pinned at `run/userns` and `run/netns` (lo up); a
/// member's: the pod's pin opened. Undone by [`unpin`] (and the engine's
/// netns removal) when a step fails.
pub(crate) fn prepare(run: &Path, runroot: &Path, u: &PodUserns) -> Result<Prepared, UsernsError> {
    reachable(run, runroot)?;
    let path = match &u.join {
        Some(p) => p.clone(),
        None => {
            pin_new(run, &u.mappings).inspect_err(|_| {
                let _ = unpin(run);
                let _ = crate::network::NetNs::remove(&run.join("netns"));
            })?;
            run.join(PIN)
        }
    };
    let fd = std::fs::File::open(&path).map_err(os(format!("open {}", path.display())))?;
    Ok(Prepared { path, fd: fd.into() })
}

/// The runtime sets up the rootfs and binds the pod's files from inside
/// the pod's user namespace, whose root is nobody to the host's
/// directories: every directory above `run` must be searchable by others.
/// Those of berth's runroot are made so (0711, as containerd makes its
/// state directories for user namespaces); one above it that is not is an
/// error naming it.
fn reachable(run: &Path, runroot: &Path) -> Result<(), UsernsError> {
    use std::os::unix::fs::PermissionsExt;
    for dir in run.ancestors() {
        let meta = std::fs::metadata(dir).map_err(os(format!("stat {}", dir.display())))?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o001 != 0 {
            continue;
        }
        if !dir.starts_with(runroot) {
            return Err(UsernsError::Refused(format!(
                "{} (mode {mode:04o}) is not searchable by others: the pod's root, a host uid of its own, \
                 cannot reach the container's rootfs below it (make it 0711)",
                dir.display()
            )));
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o011)).map_err(os(format!(
            "chmod {} to {:04o}",
            dir.display(),
            mode | 0o011
        )))?;
    }
    Ok(())
}

/// Unpins the user namespace pinned in `run`, if any (idempotent).
pub(crate) fn unpin(run: &Path) -> Result<(), UsernsError> {
    let pin = run.join(PIN);
    match umount2(&pin, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::ENOENT | nix::errno::Errno::EINVAL) => {}
        Err(e) => return Err(errno(format!("unmount {}", pin.display()))(e)),
    }
    match std::fs::remove_file(&pin) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(os(format!("remove {}", pin.display()))(e)),
        _ => Ok(()),
    }
}

/// A holder process unshares a user and a network namespace at once (so
/// the new user namespace owns the new network namespace); we write its
/// maps, pin both, bring lo up and let it go.
fn pin_new(run: &Path, m: &Mappings) -> Result<(), UsernsError> {
    let holder = Holder::spawn()?;
    let pid = holder.pid.as_raw();
    for (file, maps) in [("uid_map", &m.uids), ("gid_map", &m.gids)] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, Mappings::map_file(maps)).map_err(os(format!("write {path}")))?;
    }
    for kind in ["user", "net"] {
        let pin = run.join(if kind == "user" { PIN } else { "netns" });
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&pin)
            .map_err(os(format!("create {}", pin.display())))?;
        let ns = format!("/proc/{pid}/ns/{kind}");
        mount(Some(ns.as_str()), &pin, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(errno(format!("pin {ns} at {}", pin.display())))?;
    }
    holder.release();
    crate::network::NetNs { path: run.join("netns") }
        .run(crate::network::netns::loopback_up)
        .map_err(|e| os("bring up lo in the pod's network namespace")(std::io::Error::other(e.to_string())))?
        .map_err(os("bring up lo in the pod's network namespace"))
}

/// A forked child that sits in new user and network namespaces until
/// released (or until it is dropped: then it is killed).
struct Holder {
    pid: Pid,
    release: Option<OwnedFd>,
}

impl Holder {
    fn spawn() -> Result<Holder, UsernsError> {
        let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(errno("pipe"))?;
        let (release_r, release_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(errno("pipe"))?;
        // SAFETY: the child runs only raw syscalls (unshare, write, read,
        // _exit), all async-signal-safe, so the other threads of this
        // process (locks they held at fork) cannot hurt it.
        match unsafe { nix::unistd::fork() }.map_err(errno("fork a namespace holder"))? {
            ForkResult::Child => {
                // SAFETY: plain syscalls on fds this process owns, and
                // _exit, which never returns.
                unsafe {
                    let rc = libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET);
                    let code: i32 = if rc == 0 { 0 } else { *libc::__errno_location() };
                    libc::write(ready_w.as_raw_fd(), (&code as *const i32).cast(), 4);
                    let mut b = 0u8;
                    libc::read(release_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
                    libc::_exit(0)
                }
            }
            ForkResult::Parent { child } => {
                drop((ready_w, release_r));
                let holder = Holder { pid: child, release: Some(release_w) };
                let mut code = [0u8; 4];
                let n = nix::unistd::read(&ready_r, &mut code).map_err(errno("read from the namespace holder"))?;
                let code = i32::from_ne_bytes(code);
                if n != 4 || code != 0 {
                    let e =
                        if n == 4 { std::io::Error::from_raw_os_error(code) } else { std::io::Error::other("it died") };
                    return Err(os("unshare(CLONE_NEWUSER|CLONE_NEWNET)")(e));
                }
                Ok(holder)
            }
        }
    }

    fn release(mut self) {
        if let Some(fd) = self.release.take() {
            let _ = nix::unistd::write(&fd, &[1]);
        }
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if self.release.is_some() {
            let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(self.pid, None);
        }
    }
}

/// The container's overlay rootfs at `target`: each lower layer an
/// idmapped clone of its directory (through `userns`), given to overlayfs
/// by fd (Linux 6.13's `lowerdir+` with FSCONFIG_SET_FD); the upper
/// directory owned by the pod root's host ids, so the root of the rootfs
/// is root's inside.
pub(crate) fn mount_rootfs(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    userns: BorrowedFd<'_>,
    m: &Mappings,
) -> Result<(), UsernsError> {
    use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags};
    let (uid, gid) = m.root();
    nix::unistd::chown(upper, Some(uid.into()), Some(gid.into()))
        .map_err(errno(format!("chown {} to {uid}:{gid}", upper.display())))?;
    let fs =
        rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| os("fsopen overlay")(e.into()))?;
    // Each detached tree is dissolved when its last fd closes: they are
    // held until overlayfs has made its own private clones (at create).
    let mut trees = Vec::with_capacity(lowers.len());
    for l in lowers {
        let tree = idmapped_clone(l, userns)?;
        rustix::mount::fsconfig_set_fd(&fs, "lowerdir+", tree.as_fd()).map_err(|e| {
            os(format!("give overlayfs the idmapped layer {} by fd (needs Linux 6.13)", l.display()))(e.into())
        })?;
        trees.push(tree);
    }
    rustix::mount::fsconfig_set_string(&fs, "upperdir", upper).map_err(|e| os("overlay upperdir")(e.into()))?;
    rustix::mount::fsconfig_set_string(&fs, "workdir", work).map_err(|e| os("overlay workdir")(e.into()))?;
    rustix::mount::fsconfig_create(&fs)
        .map_err(|e| os(format!("create the idmapped overlay{}", kernel_says(fs.as_fd())))(e.into()))?;
    drop(trees);
    let mnt = rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
        .map_err(|e| os("fsmount the overlay")(e.into()))?;
    rustix::mount::move_mount(&mnt, "", rustix::fs::CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .map_err(|e| os(format!("mount the overlay on {}", target.display()))(e.into()))
}

/// What overlayfs logged on its fs context (why it refused), as
/// "` (e: ...)`"; empty when it said nothing.
fn kernel_says(fs: BorrowedFd<'_>) -> String {
    let mut said = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(n @ 1..) = rustix::io::read(fs, &mut buf) {
        said.push(String::from_utf8_lossy(&buf[..n]).trim().to_owned());
    }
    if said.is_empty() { String::new() } else { format!(" ({})", said.join("; ")) }
}

/// A detached clone of the mount at `dir`, idmapped through `userns`. An
/// error names the filesystem when the kernel cannot idmap it.
fn idmapped_clone(dir: &Path, userns: BorrowedFd<'_>) -> Result<OwnedFd, UsernsError> {
    use rustix::mount::OpenTreeFlags;
    let tree = rustix::mount::open_tree(
        rustix::fs::CWD,
        dir,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
    .map_err(|e| os(format!("clone the mount of {}", dir.display()))(e.into()))?;
    set_idmap(tree.as_fd(), userns).map_err(|e| {
        let fs = rustix::fs::fstatfs(&tree).map(|s| format!("{:#x}", s.f_type)).unwrap_or_else(|_| "?".into());
        os(format!(
            "idmap {} (its filesystem, magic {fs}, cannot be idmapped by this kernel; berthd does not fall back to chowned copies)",
            dir.display()
        ))(e)
    })?;
    Ok(tree)
}

/// mount_setattr(2) with MOUNT_ATTR_IDMAP (Linux 5.12).
fn set_idmap(tree: BorrowedFd<'_>, userns: BorrowedFd<'_>) -> std::io::Result<()> {
    berth_fs::mount_setattr(tree, false, berth_fs::MOUNT_ATTR_IDMAP, 0, Some(userns))
}

/// config.json joins the pod's user namespace at `path` (the mappings are
/// stated too, as runc wants them to match) and binds the idmapped mounts
/// through their mappings.
pub(crate) fn apply(spec: &mut oci_spec::runtime::Spec, path: &Path, u: &PodUserns) {
    use oci_spec::runtime::{LinuxNamespaceBuilder, LinuxNamespaceType};
    if let Some(linux) = spec.linux_mut() {
        let mut list = linux.namespaces().clone().unwrap_or_default();
        list.retain(|n| n.typ() != LinuxNamespaceType::User);
        if let Ok(ns) = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::User).path(path).build() {
            list.insert(0, ns);
        }
        linux.set_namespaces(Some(list));
        linux.set_uid_mappings(Some(Mappings::oci(&u.mappings.uids)));
        linux.set_gid_mappings(Some(Mappings::oci(&u.mappings.gids)));
    }
    if u.idmapped_mounts.is_empty() {
        return;
    }
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for m in &mut mounts {
        let dest = m.destination().to_string_lossy().into_owned();
        if let Some((_, maps)) = u.idmapped_mounts.iter().find(|(t, _)| *t == dest) {
            m.set_uid_mappings(Some(Mappings::oci(&maps.uids)));
            m.set_gid_mappings(Some(Mappings::oci(&maps.gids)));
        }
    }
    spec.set_mounts(Some(mounts));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(container_id: u32, host_id: u32, size: u32) -> Vec<IdMap> {
        vec![IdMap { container_id, host_id, size }]
    }

    #[test]
    fn mappings_are_checked_as_berthd_takes_them() {
        assert!(Mappings::new(one(0, 1000, 100000), one(0, 1000, 100000)).is_ok());
        for (uids, gids, want) in [
            (vec![], one(0, 1000, 1), "uid mappings: none given"),
            ([one(0, 1000, 1), one(0, 2000, 1)].concat(), one(0, 1000, 1), "only one mapping line"),
            (one(1, 1000, 1), one(0, 1000, 1), "container uid 0 must be mapped"),
            (one(0, 1000, 1), one(0, 0, 65536), "host gid 0 (the host's root)"),
            (one(0, 1000, 0), one(0, 1000, 1), "the length is 0"),
            (one(0, u32::MAX - 5, 10), one(0, 1000, 1), "go past"),
        ] {
            let e = Mappings::new(uids, gids).unwrap_err().to_string();
            assert!(e.contains(want), "{e} lacks {want}");
        }
    }
}
