//! mount_setattr(2) (Linux 5.12), which neither libc nor rustix nor nix
//! wraps: the runtime (recursive mount options, idmapped mounts), the
//! engine (a pod's idmapped rootfs) and the shim (a read-only view of the
//! runtime binary) all set attributes on a mount fd through this one.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// MOUNT_ATTR_IDMAP (linux/mount.h; not in libc for every target).
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// struct mount_attr (linux/mount.h).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Sets `set` and clears `clear` (MOUNT_ATTR_* bits) on the mount `target`
/// (a mount fd, e.g. from open_tree), on its whole tree when `recursive`;
/// `userns` goes with MOUNT_ATTR_IDMAP.
pub fn mount_setattr(
    target: BorrowedFd<'_>,
    recursive: bool,
    set: u64,
    clear: u64,
    userns: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: userns.map_or(0, |u| u.as_raw_fd() as u64),
    };
    let flags = libc::AT_EMPTY_PATH | if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: `attr` is a valid struct mount_attr of the size passed; the
    // path is an empty C string used with AT_EMPTY_PATH on a valid fd.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            target.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            size_of::<MountAttr>(),
        )
    };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}
