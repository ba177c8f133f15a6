//! Out-of-memory notifications for a cgroup, as a pollable fd, so a
//! single-threaded caller (the runtime's `events`) can wait for them next
//! to a timer.
//!
//! - v1: an eventfd registered on memory.oom_control through
//!   cgroup.event_control; the kernel bumps its counter on every OOM.
//! - v2: inotify on memory.events; the `oom_kill` count in it goes up.

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
