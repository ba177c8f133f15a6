//! Thin wrappers over the system calls that neither nix nor rustix
//! covers, and small process helpers. The runtime's `unsafe` is at the
//! syscall boundary: mostly here, and where a call belongs to one step
//! (fd passing in `channel.rs`, the seccomp load and notify fd in
//! `seccomp`, sched/ioprio/personality/mempolicy in `init/attrs.rs`,
//! execveat in `seal.rs`, fd ownership in `launch`, `foreground`); each
//! block says why it is sound (`clippy::undocumented_unsafe_blocks`).

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

/// Is this process in a user namespace other than the initial one? (The
/// initial one maps every id: "0 0 4294967295".)
pub fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|m| !is_initial_uid_map(&m))
}

fn is_initial_uid_map(map: &str) -> bool {
    map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"]
}

/// Rootless, as runc decides it: not root, or root only of a user namespace
/// (rootless podman runs the runtime as uid 0 of the user's namespace).
/// Cgroups are then used only where delegated.
pub fn rootless() -> bool {
    !nix::unistd::geteuid().is_root() || in_user_namespace()
}

/// fork(2) for a single-threaded process.
///
/// berth-runtime never starts a thread (no async runtime, no logging
/// thread), so the child may allocate and use any library code until it
/// execs: there are no other threads whose locks it could inherit held.
/// Debug builds check that promise.
pub fn fork() -> nix::Result<ForkResult> {
    // (Unknown inside a mount namespace whose /proc does not show us.)
    debug_assert!(thread_count().is_none_or(|n| n == 1), "berth-runtime must stay single-threaded to fork safely");
    // SAFETY: the process is single-threaded (checked above in debug
    // builds), so the child inherits no lock held by another thread.
    unsafe { nix::unistd::fork() }
}

/// fork(2) straight into new namespaces: clone(2) with `flags` (CLONE_NEW*,
/// not CLONE_NEWTIME, which clone(2) cannot take) and no new stack, so the
/// child runs on a copy of ours, exactly as after fork. Same promise as
/// [`fork`]: the process is single-threaded. (nix's `clone` wants a
/// callback and a stack; libc has no fork-like wrapper for this.)
pub fn fork_into(flags: nix::sched::CloneFlags) -> nix::Result<ForkResult> {
    debug_assert!(thread_count().is_none_or(|n| n == 1), "berth-runtime must stay single-threaded to fork safely");
    let flags = flags.bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: x86_64/aarch64 clone(flags, newsp = 0 (keep our stack, as
    // fork does), parent_tid, child_tid, tls all unused). Single-threaded
    // (checked above in debug builds): the child inherits no lock held by
    // another thread, as with fork().
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            0 as libc::c_ulong,
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    match r {
        -1 => Err(nix::errno::Errno::last()),
        0 => Ok(ForkResult::Child),
        pid => Ok(ForkResult::Parent { child: nix::unistd::Pid::from_raw(pid as i32) }),
    }
}

/// linux/sched.h's CLONE_INTO_CGROUP (libc's constant is an overflowing
/// c_int, deprecated).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// [`fork_into`] with the child born in the cgroup v2 directory `cgroup`
/// (clone3's CLONE_INTO_CGROUP, kernel 5.7+): no migration, so none of
/// the migration lock's waits. ENOSYS/E2BIG on older kernels.
pub fn fork_into_cgroup(flags: nix::sched::CloneFlags, cgroup: BorrowedFd<'_>) -> nix::Result<ForkResult> {
    debug_assert!(thread_count().is_none_or(|n| n == 1), "berth-runtime must stay single-threaded to fork safely");
    // SAFETY: clone_args is plain data; all-zero is its "nothing asked" value.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.flags = flags.bits() as u64 | CLONE_INTO_CGROUP;
    args.exit_signal = libc::SIGCHLD as u64;
    args.cgroup = cgroup.as_raw_fd() as u64;
    // SAFETY: clone3 with a valid, fully initialised clone_args of the size
    // given; stack 0 keeps ours (a copy, as with fork). Single-threaded
    // (checked above in debug builds), so the child inherits no lock held
    // by another thread.
    let r = unsafe { libc::syscall(libc::SYS_clone3, &args as *const libc::clone_args, size_of::<libc::clone_args>()) };
    match r {
        -1 => Err(nix::errno::Errno::last()),
        0 => Ok(ForkResult::Child),
        pid => Ok(ForkResult::Parent { child: nix::unistd::Pid::from_raw(pid as i32) }),
    }
}

/// Number of threads of this process, from /proc/self/stat.
pub fn thread_count() -> Option<usize> {
    berth_proc::own_stat().map(|s| s.num_threads as usize)
}

/// The start time of `pid` in clock ticks since boot: with the pid, it
/// tells a process from a later one that reused its pid.
pub fn start_time(pid: i32) -> Option<u64> {
    berth_proc::stat(pid).map(|s| s.start)
}

/// True if `pid` is the process that started at `start_time` and has not
/// exited (a zombie has exited).
pub fn is_alive(pid: i32, start_time: u64) -> bool {
    berth_proc::ProcessId { pid, start: start_time }.is_alive()
}

/// pidfd_open(2): a handle that names one process, immune to pid reuse.
pub fn pidfd_open(pid: i32) -> nix::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// pidfd_send_signal(2).
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: Signal) -> nix::Result<()> {
    // SAFETY: a valid pidfd, a valid signal number, no siginfo, no flags.
    let r = unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), sig as libc::c_int, std::ptr::null::<u8>(), 0)
    };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// Waits until the process behind `pidfd` exits, or `timeout` passes.
/// Returns true if it exited. Works for processes that are not our children.
pub fn pidfd_wait(pidfd: BorrowedFd<'_>, timeout: Option<std::time::Duration>) -> nix::Result<bool> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let timeout = match timeout {
        None => PollTimeout::NONE,
        Some(t) => PollTimeout::try_from(t).unwrap_or(PollTimeout::MAX),
    };
    let mut fds = [PollFd::new(pidfd, PollFlags::POLLIN)];
    loop {
        match poll(&mut fds, timeout) {
            Ok(n) => return Ok(n > 0),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Marks every fd from `first` up as close-on-exec, so exec leaves the new
/// program only stdio and the fds it was meant to inherit
/// (CVE-2024-21626: no runtime fd may reach the container).
///
/// close_range may be refused: by a kernel older than 5.11 (ENOSYS,
/// EINVAL), or by the container's own seccomp filter, which without
/// no_new_privs is already loaded here, and whose allow-list may predate
/// close_range (EPERM, or ENOSYS as runc's filters answer for calls newer
/// than the profile). Then every fd listed in /proc/self/fd is marked one
/// by one with fcntl, as runc does.
pub fn cloexec_from(first: u32) -> nix::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range only changes fd flags in this process's table.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, CLOSE_RANGE_CLOEXEC) };
    if r == 0 {
        return Ok(());
    }
    cloexec_listed_from(first)
}

fn cloexec_listed_from(first: u32) -> nix::Result<()> {
    use nix::dir::Dir;
    use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
    let mut dir = Dir::open("/proc/self/fd", OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())?;
    let own = dir.as_raw_fd();
    let fds: Vec<RawFd> = dir
        .iter()
        .filter_map(|e| e.ok()?.file_name().to_str().ok()?.parse::<RawFd>().ok())
        .filter(|fd| *fd >= first as RawFd && *fd != own)
        .collect();
    for fd in fds {
        // SAFETY: fd was listed as open just now; only its flags change.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        match fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)) {
            Ok(_) | Err(Errno::EBADF) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Clears close-on-exec on `fd`, so it survives exec.
pub fn clear_cloexec(fd: RawFd) -> nix::Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    // SAFETY: only used on fds the caller has checked are open.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty())).map(|_| ())
}

/// Marks `fd` close-on-exec (EBADF if it is not open).
pub fn set_cloexec(fd: RawFd) -> nix::Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    // SAFETY: only changes the flags of an fd number; an unopened one
    // gives EBADF.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map(|_| ())
}

/// Restores default dispositions and an empty mask for every signal, so the
/// container's program starts clean: Rust ignores SIGPIPE at start-up and
/// `run` blocks the signals it forwards; neither may leak into the container.
pub fn reset_signals() -> nix::Result<()> {
    use nix::sys::signal::{SigHandler, signal};
    for sig in Signal::iterator() {
        if sig == Signal::SIGKILL || sig == Signal::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL runs no handler code of ours.
        let _ = unsafe { signal(sig, SigHandler::SigDfl) };
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
}

/// The exit code a shell would report for a wait status: the exit status,
/// or 128 + the signal that killed the process.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Waits for a child to end and returns its exit code.
pub fn wait_exit(pid: Pid) -> nix::Result<i32> {
    loop {
        match waitpid(pid, None) {
            Ok(s) => {
                if let Some(code) = exit_code(s) {
                    return Ok(code);
                }
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Ends a forked child at once, without running exit handlers or flushing
/// buffers it inherited from the runtime (which would print them twice).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit takes an int and never returns.
    unsafe { libc::_exit(code) }
}

/// PR_SET_CHILD_SUBREAPER: orphaned descendants are re-parented to us, so
/// `run` and `exec` can wait for a container process they did not fork
/// directly.
pub fn set_child_subreaper() -> nix::Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).map_err(errno)
}

/// PR_SET_NO_NEW_PRIVS.
pub fn set_no_new_privs() -> nix::Result<()> {
    rustix::thread::set_no_new_privs(true).map_err(errno)
}

/// PR_SET_KEEPCAPS: keep permitted capabilities across the setuid away
/// from root, so the container's own set can be applied after it.
pub fn set_keep_caps(on: bool) -> nix::Result<()> {
    rustix::thread::set_keep_capabilities(on).map_err(errno)
}

/// rustix's errno as nix's (the runtime's errors carry nix's). rustix
/// makes the raw system call, so these are safe between fork and exec.
fn errno(e: rustix::io::Errno) -> Errno {
    Errno::from_raw(e.raw_os_error())
}

/// Joins a new session keyring named `name` (keyctl has no wrapper in nix).
pub fn join_session_keyring(name: &str) -> nix::Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    let name = CString::new(name).map_err(|_| Errno::EINVAL)?;
    // SAFETY: keyctl(JOIN_SESSION_KEYRING, name) reads a NUL-terminated string.
    let r = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// setdomainname(2) (nix wraps only sethostname).
pub fn set_domainname(name: &str) -> nix::Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes.
    let r = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// mount_setattr(2) on a whole tree (AT_RECURSIVE), for the recursive
/// mount options (rro, rnosuid, ...). Needs Linux 5.12.
pub fn mount_setattr_recursive(target: BorrowedFd<'_>, set: u64, clear: u64) -> nix::Result<()> {
    berth_fs::mount_setattr(target, true, set, clear, None).map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))
}

/// Makes a detached mount tree idmapped through the mappings of user
/// namespace `userns` (MOUNT_ATTR_IDMAP, Linux 5.12).
pub fn mount_setattr_idmap(tree: BorrowedFd<'_>, userns: BorrowedFd<'_>, recursive: bool) -> nix::Result<()> {
    berth_fs::mount_setattr(tree, recursive, berth_fs::MOUNT_ATTR_IDMAP, 0, Some(userns))
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))
}

/// open_tree(2) with OPEN_TREE_CLONE: a detached copy of the mount at
/// `path` (the whole tree under it with `recursive`), not yet attached
/// anywhere.
pub fn open_tree_clone(path: &Path, recursive: bool) -> nix::Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let path = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)?;
    let flags = OPEN_TREE_CLONE
        | libc::O_CLOEXEC as libc::c_uint
        | if recursive { libc::AT_RECURSIVE as libc::c_uint } else { 0 };
    // SAFETY: a NUL-terminated path and flags; returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// move_mount(2) of a detached tree onto the inode `target` names.
pub fn move_mount_to(tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> nix::Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x04;
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
    // SAFETY: two valid fds, empty C-string paths used with the EMPTY_PATH flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// The /proc/self/fd path of an fd: mounting on it mounts on exactly the
/// inode the fd names, whatever has been renamed or swapped since it was
/// resolved (how runc defeats mount-target races, CVE-2021-30465).
pub fn fd_path(fd: &impl std::os::fd::AsFd) -> std::path::PathBuf {
    Path::new("/proc/self/fd").join(fd.as_fd().as_raw_fd().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_user_namespace_maps_every_id() {
        assert!(is_initial_uid_map("         0          0 4294967295\n"));
        assert!(!is_initial_uid_map("         0        994          1\n         1    3000000      65536\n"));
        assert!(!is_initial_uid_map("         0       1000          1\n"));
    }

    #[test]
    fn own_stat_is_readable_and_alive() {
        let me = std::process::id() as i32;
        let start = start_time(me).unwrap();
        assert!(is_alive(me, start));
        assert!(!is_alive(me, start + 1), "a different start time is another process");
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        let pid = Pid::from_raw(1);
        assert_eq!(exit_code(WaitStatus::Exited(pid, 7)), Some(7));
        assert_eq!(exit_code(WaitStatus::Signaled(pid, Signal::SIGKILL, false)), Some(137));
    }
}
