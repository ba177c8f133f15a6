//! Warming the kernel's cgroup-migration lock before a container's first
//! move into its cgroup (cgroup v1 and hybrid hosts).

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::Layout;

/// Starts, in the background, the RCU grace period that the container's
/// first cgroup move will need on cgroup v1 (and hybrid), so that it runs
/// while the rootfs, network and shim are set up instead of after. Once
/// per process; best effort (nothing to report: the move is only slower).
///
/// Why: moving a task between cgroups takes the kernel's global
/// cgroup_threadgroup_rwsem for writing, and a writer after a quiet spell
/// first waits for an RCU grace period (rcu_sync; ~20 ms here), the
/// largest single cost of `runtime create` on this host. A writer within a
/// grace period of the last one does not wait. So a throwaway process
/// "moves" itself into the pids cgroup it is already in (writing 0 to its
/// cgroup.procs: no cgroup is made or changed) and exits; the runtime's
/// move of the container ~20 ms later finds the lock warm. Hosts without a
/// v1 pids hierarchy (pure cgroup v2) are left alone.
pub fn prime_moves() {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::Relaxed) {
        return;
    }
    let Ok(layout) = Layout::detect() else { return };
    let Some(pids) = layout.v1_hierarchy("pids") else { return };
    let procs = pids.fs_path(&pids.own_path).join("cgroup.procs");
    let Ok(procs) = std::fs::OpenOptions::new().write(true).open(procs) else { return };
    let fd = procs.as_raw_fd();
    // SAFETY: fork in a process that may have threads: the children only
    // make async-signal-safe calls (fork, write, _exit) on memory set up
    // before the fork. The middle child exits at once, so the grandchild
    // (the one that waits for the lock) is reparented and reaped by init,
    // and we only wait for the middle one, which is ours.
    unsafe {
        match libc::fork() {
            0 => {
                if libc::fork() == 0 {
                    // "0": the writing process itself.
                    libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::_exit(0);
                }
                libc::_exit(0);
            }
            pid if pid > 0 => {
                let mut status = 0;
                libc::waitpid(pid, &mut status, 0);
            }
            _ => {}
        }
    }
}
