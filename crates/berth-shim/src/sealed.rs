//! Running berth-runtime from a read-only view of its binary.
//!
//! berth-runtime must run from a read-only mount before it enters a
//! container (CVE-2019-5736; see berth-runtime's `seal`): started from its
//! path, it makes a detached read-only bind mount of itself and re-executes
//! from it, a second exec (the dynamic loader, glibc's start-up) per
//! container. The shim, root like the runtime, makes that mount before it
//! runs the runtime and executes the runtime through it, so the runtime
//! finds itself sealed and goes straight on. Anything that fails here only
//! means the runtime seals itself, as before.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use berth_oci_cli::Runtime;

/// berth-runtime's mark for "started sealed": its value is the process
/// name the runtime takes back (an exec through an fd names the process
/// after the fd's number).
const MARK: &str = "_BERTH_SEALED_EXE";

/// `rt`, executed from a read-only view of its binary when it is
/// berth-runtime and the mount can be made (root, Linux 5.12+).
pub(crate) fn sealed(rt: Runtime) -> Runtime {
    let binary = rt.binary();
    let is_berth = binary.file_name().is_some_and(|n| n.as_bytes().starts_with(b"berth-runtime"));
    if !is_berth || !nix::unistd::geteuid().is_root() {
        return rt;
    }
    match readonly_bind(binary) {
        Ok(fd) => rt.exec_through(Arc::new(fd), MARK, "berth-runtime"),
        // Not fatal: the runtime then seals itself (one exec more).
        Err(_) => rt,
    }
}

/// A detached, read-only bind mount of the file at `path`: in no mount
/// namespace, gone once nothing holds it (the exec'd runtime does while it
/// runs), and neither remountable nor clonable since it is detached.
fn readonly_bind(path: &Path) -> std::io::Result<OwnedFd> {
    use rustix::mount::OpenTreeFlags;
    let path = CString::new(path.as_os_str().as_bytes()).map_err(|_| std::io::Error::other("NUL in path"))?;
    let flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    let fd = rustix::mount::open_tree(rustix::fs::CWD, path.as_c_str(), flags)?;
    berth_fs::mount_setattr(fd.as_fd(), false, libc::MOUNT_ATTR_RDONLY, 0, None)?;
    Ok(fd)
}
