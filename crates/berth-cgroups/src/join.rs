//! A new process joining its cgroup by itself, without the kernel's global
//! migration lock.
//!
//! Why: a write to `cgroup.procs` takes cgroup_threadgroup_rwsem for
//! writing, and a writer after a quiet spell first waits for an RCU grace
//! period (~10-20 ms on this kind of host): on cgroup v1 that wait was the
//! largest single cost of starting a container, for runc and crun too. The
//! kernel skips the lock for a thread that moves *itself* ("0" written to a
//! v1 `tasks` file: cgroup_procs_write_start), and a process that is one
//! thread moves whole. The unified hierarchy has no such door (a domain
//! cgroup refuses single-thread moves), but clone3's CLONE_INTO_CGROUP
//! places the child there at birth, under the lock's cheap read side.
//!
//! The files are opened by the runtime before it forks, so the child needs
//! no path lookup (it may already be in other mount namespaces), and the
//! kernel checks the opener's credentials, the runtime's.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use crate::cgroup::{Cgroup, UNIFIED};
use crate::error::{Result, io_err};

/// What a process forked for a container needs to put itself in the
/// container's cgroup: see the module's doc.
#[derive(Debug)]
pub struct SelfJoin {
    /// Each v1 hierarchy's `tasks` file, open for writing.
    tasks: Vec<(PathBuf, File)>,
    /// The unified hierarchy's directory (for CLONE_INTO_CGROUP).
    unified: Option<(PathBuf, File)>,
}

impl Cgroup {
    /// Opens what [`SelfJoin`] needs. The cgroup must exist.
    pub fn self_join(&self) -> Result<SelfJoin> {
        let mut tasks = Vec::new();
        let mut unified = None;
        for (key, dir) in &self.dirs {
            if key == UNIFIED {
                let f = OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
                    .open(dir)
                    .map_err(io_err("open", dir))?;
                unified = Some((dir.clone(), f));
            } else {
                let path = dir.join("tasks");
                let f = OpenOptions::new().write(true).open(&path).map_err(io_err("open", &path))?;
                tasks.push((path, f));
            }
        }
        Ok(SelfJoin { tasks, unified })
    }
}

impl SelfJoin {
    /// The unified hierarchy's cgroup directory, to pass to clone3 as
    /// CLONE_INTO_CGROUP's fd.
    pub fn unified_dir(&self) -> Option<BorrowedFd<'_>> {
        self.unified.as_ref().map(|(_, f)| f.as_fd())
    }

    /// Moves the calling thread into the cgroup in every v1 hierarchy.
    /// Call it in the new process while it is a single thread: it then
    /// moves whole. Only write(2) on open fds, so also fine between fork
    /// and exec.
    pub fn join_v1(&self) -> Result<()> {
        for (path, f) in &self.tasks {
            // "0": the writer itself (a thread; see the module's doc).
            nix::unistd::write(f, b"0").map_err(|e| io_err("write 0 to", path)(e.into()))?;
        }
        Ok(())
    }

    /// Moves process `pid` into the unified hierarchy's cgroup, for when
    /// clone3 could not place it there (kernels before 5.7).
    pub fn add_pid_unified(&self, pid: i32) -> Result<()> {
        let Some((dir, _)) = &self.unified else { return Ok(()) };
        let path = dir.join("cgroup.procs");
        std::fs::write(&path, pid.to_string()).map_err(io_err("write", path))
    }
}
