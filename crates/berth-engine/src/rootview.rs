//! Where the engine itself reads and writes a container's files.
//!
//! With berth-runtime, the engine does not mount a container's overlay on
//! the host: it names it in config.json ([`berth_fs::overlay::ANNOTATION`])
//! and the runtime mounts it inside the container's own mount namespace.
//! A host mount per container made every later mount namespace copy (each
//! container start), pivot_root teardown and mountinfo read slower with
//! the number of containers. The engine reaches the files instead:
//! - of a running container, through its init's `/proc/PID/root` (what the
//!   container sees, its volumes included, as `docker cp` does), checked
//!   to be the container's with a pidfd;
//! - otherwise through a detached overlay mount of its layers: in no mount
//!   table, gone when its descriptor closes.
//!
//! A rootfs the engine did mount on the host (another runtime's container,
//! a pod's idmapped user namespace, containers made before) is used where
//! it is.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use berth_fs::overlay::{ANNOTATION, Overlay};

use crate::engine::Engine;
use crate::error::Error;
use crate::store::{ContainerRecord, Status};

/// A container's (or an image's) root directory, held by a descriptor.
pub(crate) struct View {
    fd: OwnedFd,
}

impl View {
    /// A path that names it while the view lives (the descriptor through
    /// /proc/self/fd), for code that opens a root by path. The `/.` lets
    /// an open with O_NOFOLLOW (pathrs's Root::open) through the magic link.
    pub(crate) fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}/.", self.fd.as_raw_fd()))
    }

    pub(crate) fn into_root(self) -> pathrs::Root {
        pathrs::Root::from_fd(self.fd)
    }

    /// A detached mount of `overlay` (or its only layer's directory).
    pub(crate) fn detached(overlay: &Overlay, at: &Path) -> Result<View, Error> {
        let fd = overlay.detached().map_err(|e| overlay_error("mount a view of", at, e))?;
        Ok(View { fd })
    }
}

/// An overlay mount's failure as the engine's error: what, where, and
/// the step of the mount that failed with the kernel's reason.
pub(crate) fn overlay_error(what: &'static str, at: &Path, e: berth_fs::overlay::OverlayError) -> Error {
    Error::Io {
        what,
        path: at.to_owned(),
        source: std::io::Error::new(e.source.kind(), format!("{}: {}", e.what, e.source)),
    }
}

/// Whether `runtime` is berth-runtime, which mounts the rootfs overlay
/// itself and moves its processes into their cgroups itself (runc and
/// crun are given a mounted rootfs, and wait for the kernel's migration
/// lock).
pub(crate) fn is_berth_runtime(runtime: &Path) -> bool {
    runtime.file_name().is_some_and(|n| n.to_string_lossy().starts_with("berth-runtime"))
}

impl Engine {
    /// The overlay the container's config.json has its runtime mount;
    /// None when its rootfs is a host mount (or there is no config.json).
    pub(crate) fn rootfs_overlay(&self, id: &str) -> Option<Overlay> {
        let config = std::fs::read(self.run_dir(id).join("config.json")).ok()?;
        let spec: serde_json::Value = serde_json::from_slice(&config).ok()?;
        let json = spec.get("annotations")?.get(ANNOTATION)?.as_str()?;
        serde_json::from_str(json).ok()
    }

    /// The root a running container's init sees: `/proc/PID/root`, held
    /// only if the pid is still that container's process once it is open
    /// (a pidfd taken first pins the pid; the process's cgroup names the
    /// container). None when it does not run.
    pub(crate) fn live_root(&self, rec: &ContainerRecord) -> Option<View> {
        use rustix::fs::{Mode, OFlags};
        let pid = rustix::process::Pid::from_raw(rec.pid?)?;
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()?;
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::open(format!("/proc/{}/root", pid.as_raw_nonzero()), flags, Mode::empty()).ok()?;
        let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", pid.as_raw_nonzero())).ok()?;
        let ours = cgroups.lines().any(|l| l.rsplit(':').next().is_some_and(|p| p.ends_with(&format!("/{}", rec.id))));
        // Still alive (a pidfd polls readable once its process has
        // exited): the pid was this process's at both opens.
        use std::os::fd::AsFd;
        let mut poll = [nix::poll::PollFd::new(pidfd.as_fd(), nix::poll::PollFlags::POLLIN)];
        let alive = nix::poll::poll(&mut poll, nix::poll::PollTimeout::ZERO).is_ok_and(|n| n == 0);
        (ours && alive).then_some(View { fd })
    }

    /// The container's files for the engine: a running container's live
    /// root, else its host mount, else a detached writable overlay of its
    /// layers. None when there is none of these (a rootfs that was a host
    /// mount and is gone: the host rebooted).
    pub(crate) fn container_root(&self, rec: &ContainerRecord, live: bool) -> Result<Option<View>, Error> {
        let live_view = self.live_root(rec);
        if live && live_view.is_some() {
            return Ok(live_view);
        }
        let rootfs = self.run_dir(&rec.id).join("rootfs");
        if let Some(overlay) = self.rootfs_overlay(&rec.id) {
            let live = live_view;
            let running = live.is_some() || matches!(rec.status, Status::Running | Status::Paused | Status::Restarting);
            if !running {
                return View::detached(&overlay, &rootfs).map(Some);
            }
            // A second writable instance over the upper a running container
            // writes to is undefined; read it as one more layer. A kernel
            // that cannot (before 6.8, with paths past fsconfig's 256
            // bytes) gives the live root, its mounts included.
            return match (View::detached(&read_only_with_upper(overlay), &rootfs), live) {
                (Ok(view), _) => Ok(Some(view)),
                (Err(_), Some(live)) => Ok(Some(live)),
                (Err(e), None) => Err(e),
            };
        }
        if is_mountpoint(&rootfs) {
            let fd = rustix::fs::open(
                &rootfs,
                rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| Error::Io { what: "open the rootfs", path: rootfs.clone(), source: e.into() })?;
            return Ok(Some(View { fd }));
        }
        Ok(None)
    }
}

/// `overlay` read-only, its upper as the topmost layer.
fn read_only_with_upper(overlay: Overlay) -> Overlay {
    let lower = overlay.upper.into_iter().chain(overlay.lower).collect();
    Overlay { lower, upper: None, work: None, volatile: false }
}

/// Whether `p` is a mount point: a different mount id from its parent's.
pub(crate) fn is_mountpoint(p: &Path) -> bool {
    let id = |p: &Path| {
        rustix::fs::statx(rustix::fs::CWD, p, rustix::fs::AtFlags::empty(), rustix::fs::StatxFlags::MNT_ID)
            .ok()
            .map(|s| s.stx_mnt_id)
    };
    match (id(p), p.parent().and_then(id)) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::engine::test_engine as engine;

    /// A recorded pid that is now some other process (the container
    /// ended and the pid was reused) is not taken for the container's
    /// root: its cgroup does not name the container. A pid that is gone
    /// gives nothing either.
    #[test]
    fn a_pid_that_is_not_the_containers_gives_no_live_root() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        let mut sleeper = std::process::Command::new("sleep").arg("100").spawn().unwrap();
        let mut rec = ContainerRecord::new(&"c".repeat(64), "x", "img", "", e.run_dir(&"c".repeat(64)));
        rec.pid = Some(sleeper.id() as i32);
        assert!(e.live_root(&rec).is_none(), "a host process taken for the container");
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        assert!(e.live_root(&rec).is_none(), "an ended process taken for the container");
        // The same process, once its cgroup is named for it, is (the pid
        // check is what the first case refused, not something else).
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let last = own.lines().filter_map(|l| l.rsplit(':').next()?.rsplit('/').next()).find(|n| !n.is_empty());
        if let Some(last) = last {
            let mut me = ContainerRecord::new(last, "x", "img", "", e.run_dir(last));
            me.pid = Some(std::process::id() as i32);
            let view = e.live_root(&me).expect("this process's root");
            let st = rustix::fs::fstat(&view.fd).unwrap();
            let root = std::fs::metadata("/").unwrap();
            use std::os::unix::fs::MetadataExt;
            assert_eq!((st.st_dev, st.st_ino), (root.dev(), root.ino()));
        }
    }
}
