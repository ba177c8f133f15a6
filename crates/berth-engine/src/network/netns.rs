//! Network namespaces that outlive the process that made them: a new
//! namespace is pinned by bind-mounting its nsfs file onto a file of ours,
//! as `ip netns add` and containerd do. The container's runtime then joins
//! it by path (linux.namespaces[].path), and CNI plugins are given the path.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use super::NetworkError;

/// A pinned network namespace at `path`.
#[derive(Debug, Clone)]
pub struct NetNs {
    pub path: PathBuf,
}

impl NetNs {
    /// Makes a new network namespace pinned at `path` (its directory is
    /// created). Only a fresh thread unshares: the caller's namespaces,
    /// and the other threads', stay as they are.
    pub fn create(path: &Path) -> Result<NetNs, NetworkError> {
        let err =
            |what: &str, e: std::io::Error| NetworkError::Netns { path: path.to_owned(), what: what.into(), source: e };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err("create its directory", e))?;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| err("create the pin file", e))?;
        let target = path.to_owned();
        let made = std::thread::spawn(move || -> Result<(), (&'static str, std::io::Error)> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| ("unshare(CLONE_NEWNET)", e.into()))?;
            loopback_up().map_err(|e| ("bring up lo", e))?;
            mount(Some("/proc/thread-self/ns/net"), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(|e| ("bind-mount the namespace", e.into()))
        })
        .join()
        .map_err(|_| err("the thread that makes it", std::io::Error::other("panicked")))?;
        if let Err((what, e)) = made {
            let _ = std::fs::remove_file(path);
            return Err(err(what, e));
        }
        Ok(NetNs { path: path.to_owned() })
    }

    /// Unpins the namespace (it ends when nothing else holds it) and
    /// removes the pin file. Missing is fine: removal is idempotent.
    pub fn remove(path: &Path) -> Result<(), NetworkError> {
        let err =
            |what: &str, e: std::io::Error| NetworkError::Netns { path: path.to_owned(), what: what.into(), source: e };
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::ENOENT | nix::errno::Errno::EINVAL) => {}
            Err(e) => return Err(err("unmount", e.into())),
        }
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err("remove the pin file", e)),
        }
    }

    /// Runs `f` on a thread that has joined this namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, NetworkError> {
        let file = std::fs::File::open(&self.path).map_err(|e| NetworkError::Netns {
            path: self.path.clone(),
            what: "open".into(),
            source: e,
        })?;
        let path = self.path.clone();
        std::thread::spawn(move || {
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| NetworkError::Netns {
                path,
                what: "setns".into(),
                source: e.into(),
            })?;
            Ok(f())
        })
        .join()
        .map_err(|_| NetworkError::Netns {
            path: self.path.clone(),
            what: "run in it".into(),
            source: std::io::Error::other("the thread panicked"),
        })?
    }
}

/// Sets `lo` up in this thread's network namespace: what the CNI loopback
/// plugin does, without starting a program for it (a few ms per
/// container). Two ioctls on a socket; no crate wraps SIOCSIFFLAGS.
pub(crate) fn loopback_up() -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: socket(2) with constant arguments; the fd is owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass,
    // whose name is NUL-terminated; the flags are in the union's
    // ifru_flags member, which these requests use.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
