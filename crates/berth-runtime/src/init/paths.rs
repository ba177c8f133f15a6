//! The container's view of the kernel: sysctls, read-only paths and masked
//! paths. All run before pivot_root, on paths resolved inside the rootfs.
//! Sysctls go first, since /proc/sys is usually among the read-only paths.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::Path;

use nix::mount::{MsFlags, mount};
use nix::sys::statfs::{PROC_SUPER_MAGIC, fstatfs};
use pathrs::flags::OpenFlags;

use super::rootfs::{Rootfs, bind, remount_keeping_locked};
use crate::error::{Context, Error, Result};
use crate::sys::fd_path;

/// Writes linux.sysctl through the container's own /proc (which reflects
/// the container's namespaces).
pub fn write_sysctls<'a>(rootfs: &Rootfs, sysctls: impl IntoIterator<Item = (&'a String, &'a String)>) -> Result<()> {
    for (key, value) in sysctls {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        let handle = rootfs.resolve(&path).map_err(|e| sysctl_err(key, e))?;
        let st = fstatfs(handle.as_fd()).step(|| format!("sysctl {key}: statfs"))?;
        if st.filesystem_type() != PROC_SUPER_MAGIC {
            return Err(Error::Container(format!("sysctl {key}: /proc/sys is not procfs (is /proc mounted?)")));
        }
        let mut f = handle
            .reopen(OpenFlags::O_WRONLY | OpenFlags::O_CLOEXEC)
            .step(|| format!("sysctl {key}: open {}", path.display()))?;
        f.write_all(value.as_bytes()).step(|| format!("sysctl {key}={value}: write"))?;
    }
    Ok(())
}

fn sysctl_err(key: &str, e: Error) -> Error {
    match e {
        Error::Path { source, .. } => Error::Path { step: format!("sysctl {key}: no such kernel parameter"), source },
        other => other,
    }
}

/// Makes each path read-only by binding it over itself and remounting the
/// bind read-only. Paths that do not exist are skipped.
pub fn make_readonly(rootfs: &Rootfs, paths: &[String]) -> Result<()> {
    for p in paths {
        let path = Path::new(p);
        let Some(handle) = rootfs.resolve_opt(path)? else { continue };
        bind(&fd_path(&handle), &handle, true).step(|| format!("readonly path '{p}': bind"))?;
        let mounted = rootfs.resolve(path)?;
        remount_keeping_locked(&fd_path(&mounted), MsFlags::MS_RDONLY | MsFlags::MS_REC)
            .step(|| format!("readonly path '{p}': remount read-only"))?;
    }
    Ok(())
}

/// Hides each path: a file gets /dev/null bound over it, a directory an
/// empty read-only tmpfs. Paths that do not exist are skipped.
pub fn mask(rootfs: &Rootfs, paths: &[String]) -> Result<()> {
    for p in paths {
        let path = Path::new(p);
        let Some(handle) = rootfs.resolve_opt(path)? else { continue };
        let st = nix::sys::stat::fstat(handle.as_fd()).step(|| format!("masked path '{p}': stat"))?;
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            mount(Some("tmpfs"), &fd_path(&handle), Some("tmpfs"), MsFlags::MS_RDONLY, None::<&str>)
                .step(|| format!("masked path '{p}': mount tmpfs"))?;
        } else {
            bind(Path::new("/dev/null"), &handle, false).step(|| format!("masked path '{p}': bind /dev/null"))?;
        }
    }
    Ok(())
}
