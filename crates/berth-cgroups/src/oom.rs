//! Out-of-memory notifications for a cgroup, as a pollable fd, so a
//! single-threaded caller (the runtime's `events`) can wait for them next
//! to a timer.
//!
//! - v1: an eventfd registered on memory.oom_control through
//!   cgroup.event_control; the kernel bumps its counter on every OOM.
//! - v2: inotify on memory.events; the `oom_kill` count in it goes up.
//!
//! [`kill_count`] reads the same counter once, for a caller that only
//! needs to know afterwards whether a run saw an OOM kill (the shim, just
//! before the runtime's `delete` takes the cgroup away).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::cgroup::Cgroup;
use crate::error::{Result, io_err};
use crate::fs;
use crate::resources::Target;

enum Source {
    V1 {
        efd: EventFd,
        /// Kept open: the registration lives as long as this fd.
        _oom_control: OwnedFd,
        dir: PathBuf,
    },
    V2 {
        inotify: Inotify,
        dir: PathBuf,
        seen: u64,
    },
}

/// Watches one cgroup for OOM kills.
pub struct OomWatcher(Source);

impl OomWatcher {
    /// None when the cgroup has no memory controller.
    pub fn new(cg: &Cgroup) -> Result<Option<OomWatcher>> {
        match cg.target("memory") {
            Target::V1(d) => v1(d).map(Some),
            Target::V2(d) => v2(d).map(Some),
            Target::Missing => Ok(None),
        }
    }

    /// The fd to poll for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        match &self.0 {
            Source::V1 { efd, .. } => efd.as_fd(),
            Source::V2 { inotify, .. } => inotify.as_fd(),
        }
    }

    /// After the fd polled readable: how many new OOM kills happened, and
    /// whether the cgroup is gone (then stop watching).
    pub fn read(&mut self) -> Result<(u64, bool)> {
        match &mut self.0 {
            Source::V1 { efd, dir, .. } => {
                // The eventfd also fires when the cgroup is removed.
                let n = efd.read().unwrap_or(0);
                let gone = !dir.exists();
                Ok((if gone { 0 } else { n }, gone))
            }
            Source::V2 { inotify, dir, seen } => {
                let _ = inotify.read_events();
                if !dir.exists() {
                    return Ok((0, true));
                }
                let now = oom_kills(dir);
                let new = now.saturating_sub(*seen);
                *seen = now;
                Ok((new, false))
            }
        }
    }
}

/// How many processes of the cgroup the kernel's OOM killer has killed
/// (v1: memory.oom_control's `oom_kill`, kernel 4.13+; v2: memory.events'
/// `oom_kill`, which counts sub-cgroups too). None when the cgroup has no
/// memory controller or is gone.
pub fn kill_count(cg: &Cgroup) -> Option<u64> {
    let (dir, file) = match cg.target("memory") {
        Target::V1(d) => (d, "memory.oom_control"),
        Target::V2(d) => (d, "memory.events"),
        Target::Missing => return None,
    };
    let text = fs::read_opt(dir, file).ok().flatten()?;
    Some(text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(fs::parse_u64).unwrap_or(0))
}

fn v1(dir: &Path) -> Result<OomWatcher> {
    let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(|e| io_err("eventfd for", dir)(e.into()))?;
    let ctl = dir.join("memory.oom_control");
    let oom_control: OwnedFd = std::fs::File::open(&ctl).map_err(io_err("open", &ctl))?.into();
    let line = format!("{} {}", efd.as_fd().as_raw_fd(), oom_control.as_raw_fd());
    fs::write(dir, "cgroup.event_control", &line)?;
    Ok(OomWatcher(Source::V1 { efd, _oom_control: oom_control, dir: dir.to_path_buf() }))
}

fn v2(dir: &Path) -> Result<OomWatcher> {
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
        .map_err(|e| io_err("inotify for", dir)(e.into()))?;
    let events = dir.join("memory.events");
    inotify.add_watch(&events, AddWatchFlags::IN_MODIFY).map_err(|e| io_err("watch", &events)(e.into()))?;
    Ok(OomWatcher(Source::V2 { inotify, dir: dir.to_path_buf(), seen: oom_kills(dir) }))
}

fn oom_kills(dir: &Path) -> u64 {
    fs::read_keyed(dir, "memory.events").get("oom_kill").copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cgroup(key: &str, dir: &Path) -> Cgroup {
        Cgroup { dirs: [(key.to_string(), dir.to_path_buf())].into() }
    }

    #[test]
    fn kill_count_reads_v1_oom_control_and_v2_memory_events() {
        let tmp = tempfile::tempdir().unwrap();
        let v1 = tmp.path().join("memory");
        std::fs::create_dir(&v1).unwrap();
        std::fs::write(v1.join("memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n").unwrap();
        assert_eq!(kill_count(&cgroup("memory", &v1)), Some(3));

        let v2 = tmp.path().join("unified");
        std::fs::create_dir(&v2).unwrap();
        std::fs::write(v2.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        std::fs::write(v2.join("memory.events"), "low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\noom_group_kill 0\n")
            .unwrap();
        assert_eq!(kill_count(&cgroup(crate::UNIFIED, &v2)), Some(1));
    }

    #[test]
    fn kill_count_is_none_without_a_memory_cgroup_and_zero_on_old_kernels() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(kill_count(&cgroup("memory", &tmp.path().join("gone"))), None);
        assert_eq!(kill_count(&cgroup("pids", tmp.path())), None);
        // Before 4.13, v1 has no oom_kill line.
        std::fs::write(tmp.path().join("memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\n").unwrap();
        assert_eq!(kill_count(&cgroup("memory", tmp.path())), Some(0));
    }
}
