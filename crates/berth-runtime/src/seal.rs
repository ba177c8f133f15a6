//! CVE-2019-5736: a process in a container must never be able to write the
//! host's runtime binary through `/proc/<pid>/exe` of a runtime process
//! that entered the container (the exec'd process before it execs, a
//! container's init before `start`, or the runtime itself, run in the
//! container by a `#!/proc/self/exe` script).
//!
//! [`seal`] makes this process's `/proc/self/exe` a read-only view of the
//! binary, without copying it: a detached read-only bind mount of the
//! binary (open_tree(OPEN_TREE_CLONE) + mount_setattr(MOUNT_ATTR_RDONLY)),
//! which the runtime re-executes in place (execveat, same pid, argv,
//! environment, fds, signal mask). The mount is in no mount namespace: the
//! host's mount table and the containers' never see it, and it dissolves
//! when its fd is closed by that exec, so it can be neither remounted
//! read-write nor cloned (mount_setattr and open_tree refuse a mount that
//! is in no namespace). Every process the runtime forks inherits the sealed
//! exe, and reopening it for writing, through any /proc path, fails with
//! EROFS, even after the runtime has exited.
//!
//! Only the verbs that enter a container pay (about one exec of the
//! binary); a binary on a read-only mount already is sealed and costs a
//! statvfs. An unprivileged caller makes the mount in a child process's
//! own user and mount namespace, unless the binary is root's and not
//! writable by others (then no container it can start could write it).

use std::ffi::{CStr, CString, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;

use nix::errno::Errno;
use nix::sched::{CloneFlags, unshare};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::sys::statvfs::{FsFlags, statvfs};
use nix::unistd::ForkResult;

use crate::channel::{recv_packet, send_packet};
use crate::error::{Error, Result};
use crate::sys;

/// Set (to the process's name) for the re-executed runtime: it then only
/// checks that it is sealed, and restores its name. Forging it gains
/// nothing: an exe that is not on a read-only mount is an error.
const MARK: &str = "_BERTH_SEALED_EXE";

const EXE: &CStr = c"/proc/self/exe";

fn fail(step: impl std::fmt::Display, e: impl Into<std::io::Error>) -> Error {
    Error::os(format!("seal the runtime binary: {step}"), e)
}

/// Makes sure this process runs from a read-only view of its binary,
/// re-executing itself if needed. Returns when sealed (at once, if the
/// binary already is on a read-only mount); the runtime must still be
/// single-threaded.
pub fn seal() -> Result<()> {
    let mark = std::env::var_os(MARK);
    if is_sealed()? {
        if let Some(name) = mark {
            restore_name(name);
        }
        return Ok(());
    }
    if mark.is_some() {
        return Err(fail(
            format!("{MARK} is set, but /proc/self/exe is not on a read-only mount"),
            std::io::Error::from(Errno::EROFS),
        ));
    }
    let exe = match readonly_exe() {
        Ok(fd) => fd,
        Err(Errno::EPERM) if !nix::unistd::geteuid().is_root() => {
            let meta = std::fs::metadata("/proc/self/exe").map_err(|e| fail("stat /proc/self/exe", e))?;
            if meta.uid() == 0 && meta.gid() == 0 && meta.mode() & 0o022 == 0 {
                tracing::debug!("runtime binary is root's and read-only to us: no seal needed");
                return Ok(());
            }
            readonly_exe_in_userns()?
        }
        Err(e) => return Err(fail("make a read-only bind mount of /proc/self/exe (needs Linux 5.12)", e)),
    };
    Err(reexec(&exe))
}

/// True if /proc/self/exe is on a read-only mount.
fn is_sealed() -> Result<bool> {
    let st = statvfs(EXE).map_err(|e| fail("statvfs /proc/self/exe", e))?;
    Ok(st.flags().contains(FsFlags::ST_RDONLY))
}

/// A detached, read-only bind mount of `path` (a file): an O_PATH fd.
fn readonly_bind(path: &CStr) -> nix::Result<OwnedFd> {
    use rustix::mount::OpenTreeFlags;
    let flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    let fd = rustix::mount::open_tree(rustix::fs::CWD, path, flags).map_err(|e| Errno::from_raw(e.raw_os_error()))?;
    sys::mount_setattr_recursive(fd.as_fd(), libc::MOUNT_ATTR_RDONLY, 0)?;
    Ok(fd)
}

fn readonly_exe() -> nix::Result<OwnedFd> {
    readonly_bind(EXE)
}

/// Without CAP_SYS_ADMIN: a child process in a new user and mount
/// namespace (where it has it) makes the mount and sends it back. The
/// binary is looked up there by its path (open_tree only clones mounts of
/// the caller's namespace) and checked to be the same file.
fn readonly_exe_in_userns() -> Result<OwnedFd> {
    let meta = std::fs::metadata("/proc/self/exe").map_err(|e| fail("stat /proc/self/exe", e))?;
    let path = std::fs::read_link("/proc/self/exe").map_err(|e| fail("readlink /proc/self/exe", e))?;
    let path = CString::new(path.into_os_string().into_vec()).map_err(|_| fail("path", Errno::EINVAL))?;
    let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
        .map_err(|e| fail("socketpair", e))?;
    match sys::fork().map_err(|e| fail("fork", e))? {
        ForkResult::Child => {
            drop(ours);
            let made = unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
                .and_then(|()| readonly_bind(&path))
                .and_then(|fd| {
                    let st = nix::sys::stat::fstat(&fd)?;
                    let same = st.st_dev == meta.dev() && st.st_ino == meta.ino();
                    if same { Ok(fd) } else { Err(Errno::ESTALE) }
                });
            let sent = match made {
                Ok(fd) => send_packet(theirs.as_fd(), b"", &[fd.as_raw_fd()]),
                Err(e) => send_packet(theirs.as_fd(), &(e as i32).to_ne_bytes(), &[]),
            };
            sys::exit_now(i32::from(sent.is_err()))
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            let got = recv_packet(ours.as_fd());
            let _ = sys::wait_exit(child);
            let step = "make a read-only bind mount of /proc/self/exe in a new user namespace";
            match got.map_err(|e| fail(step, e))? {
                Some((_, mut fds)) if fds.len() == 1 => Ok(fds.remove(0)),
                Some((errno, _)) if errno.len() == 4 => {
                    let n = i32::from_ne_bytes(errno.try_into().expect("4 bytes"));
                    Err(fail(step, Errno::from_raw(n)))
                }
                _ => Err(fail(step, Errno::EPROTO)),
            }
        }
    }
}

/// Executes the binary behind `exe` in place of this process, with the
/// same arguments and environment plus [`MARK`]. Returns only on failure.
fn reexec(exe: &OwnedFd) -> Error {
    let cstr = |v: Vec<u8>| CString::new(v).expect("argv and environ hold no NUL");
    let args: Vec<CString> = std::env::args_os().map(|a| cstr(a.into_vec())).collect();
    let name = rustix::thread::name().unwrap_or_default();
    let name = name.to_bytes();
    let mut env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            cstr(kv)
        })
        .collect();
    env.push(cstr([MARK.as_bytes(), b"=", name].concat()));
    let ptrs = |v: &[CString]| v.iter().map(|s| s.as_ptr()).chain([std::ptr::null()]).collect::<Vec<_>>();
    let (argv, envp) = (ptrs(&args), ptrs(&env));
    // SAFETY: argv and envp are NULL-terminated arrays of NUL-terminated
    // strings that outlive the call; the path is empty with AT_EMPTY_PATH.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            exe.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    fail("re-execute it from a read-only bind mount", Errno::last())
}

/// In the re-executed runtime: drops the mark and takes back the name the
/// process had (execveat of an fd would name it after the file).
fn restore_name(name: OsString) {
    // SAFETY: the runtime is single-threaded (see `sys::fork`): nothing
    // reads the environment concurrently.
    unsafe { std::env::remove_var(MARK) };
    if let Ok(name) = CString::new(name.into_vec()) {
        // Truncated to 15 bytes by the kernel, as comm always is.
        let _ = rustix::thread::set_name(&name);
    }
}
