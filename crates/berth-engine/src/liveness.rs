//! What the engine does when a shim is gone: the container's state read
//! from its init (pid + start time), an exit nobody saw recorded, and the
//! signals of `stop` sent without the shim.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_proc::ProcessId;
use berth_shim::client::{Exit, ShimState};
use nix::sys::signal::Signal;

use crate::engine::{Engine, parent_of};
use crate::store::{ContainerRecord, Status};

/// The exit code recorded for a container whose shim died before it: its
/// real status went to whoever reaped it (init), so it is unknown.
/// 128 + SIGKILL, as containerd reports the task of a dead shim, and
/// what docker shows for a container it killed: scripts already read
/// 137 as "did not end on its own".
pub const LOST_EXIT_CODE: i32 = 128 + 9;

impl Engine {
    /// The shim's state directory (state.json, exit.json, attach.sock).
    /// Short: unix socket paths (attach, console) must fit in 108 bytes,
    /// whatever the runroot.
    pub fn state_dir(&self, id: &str) -> PathBuf {
        self.runroot.join("s").join(&id[..12.min(id.len())])
    }

    /// Records the exit of a container whose shim is dead and whose init
    /// has ended, once; the first to notice also does what the shim would
    /// have done after it: deletes the runtime's container and runs the
    /// exit command (`rm` for `--rm`).
    pub(crate) fn lost_exit(&self, rec: &ContainerRecord, dir: &Path, st: &ShimState) -> Exit {
        if berth_shim::client::record_lost_exit(dir, st.init.pid, LOST_EXIT_CODE) {
            tracing::warn!(id = %rec.id, shim = st.shim.pid, "the shim died before the container: exit status unknown");
            // The shim cannot write the die event now; this call recorded
            // the exit, once (record_lost_exit is true for one caller).
            self.container_event(rec, "die", &[("exitCode", LOST_EXIT_CODE.to_string())]);
            // Not --force: the runtime refuses to delete a container it
            // still sees running.
            let _ = self.oci_runtime_of(rec).delete(&rec.id, false);
            berth_shim::client::spawn_exit_command(&self.exit_command(rec));
        }
        berth_shim::client::exit_status(dir).unwrap_or_else(|| Exit {
            code: LOST_EXIT_CODE,
            exited_at: berth_proc::time::now(),
            restart_count: 0,
            pid: Some(st.init.pid),
            last: true,
            oom_killed: false,
        })
    }

    /// A runtime container left by a shim that died (or never recorded
    /// its start): deleted before a new shim creates it again. The caller
    /// has found the container not running.
    pub(crate) fn delete_runtime_leftover(&self, id: &str) {
        // runc, crun and berth-runtime all keep their state in ROOT/ID.
        if self.runroot.join("runtime").join(id).exists() {
            let _ = self.oci_runtime_for(id).delete(id, true);
        }
    }

    /// Whether the init a record names still runs: its pid is alive and
    /// that process started no later than the container did (a reused pid
    /// is a process that started after: after a reboot, or after the init
    /// ended). Without a recorded start, an alive pid is taken for it.
    pub(crate) fn recorded_init_runs(&self, r: &ContainerRecord) -> bool {
        let Some(stat) = r.pid.and_then(berth_proc::stat).filter(|s| s.state != 'Z') else { return false };
        let Some(started) = r.started_at.as_deref().and_then(epoch_secs) else { return true };
        process_start_secs(stat.start).is_none_or(|p| p <= started + START_SLACK_SECS)
    }

    /// Takes a running record whose shim left nothing behind (its state
    /// directory is gone: a reboot emptied the runroot, a tmpfs) and whose
    /// init is gone as exited, as podman resets its containers after a
    /// reboot. The exit code is unknown: [`LOST_EXIT_CODE`], as for the
    /// container of a shim that died. Saved at once when no other berth
    /// works on the container (its lock is free), so that every reader
    /// sees one finish time; the runtime's state, if any is left, goes
    /// with the next `start` or `rm`, as after a dead shim.
    pub(crate) fn lost_without_trace(&self, r: &mut ContainerRecord) {
        let seen = r.clone();
        r.status = Status::Exited;
        r.exit_code = Some(LOST_EXIT_CODE);
        r.finished_at = Some(berth_proc::time::now());
        r.oom_killed = false;
        let Some((_lock, now)) = self.try_lock_record(&r.id) else { return };
        // A `start` may have come in between: only what was seen is changed.
        let same =
            |x: &ContainerRecord| x.status == seen.status && x.pid == seen.pid && x.started_at == seen.started_at;
        if !same(&now) || self.state_dir(&r.id).exists() {
            return;
        }
        tracing::warn!(id = %r.id, "its shim's files and its process are gone (a reboot?): exited, status unknown");
        let Ok(store) = self.containers() else { return };
        let _ = store.update(&r.id, |x| {
            x.status = Status::Exited;
            x.exit_code = r.exit_code;
            x.finished_at = r.finished_at.clone();
            x.oom_killed = false;
        });
    }

    /// Whether the container's shim runs (the one its state.json names, by
    /// pid and start time): exec sessions go through it only then.
    pub(crate) fn shim_alive(&self, id: &str) -> bool {
        berth_shim::client::shim_state(&self.state_dir(id)).is_some_and(|st| st.shim.is_alive())
    }

    /// The container's init: from the shim's state.json; for a shim that
    /// predates it, the recorded pid while it is still that shim's child.
    pub(crate) fn init_of(&self, rec: &ContainerRecord) -> Option<ProcessId> {
        if let Some(st) = berth_shim::client::shim_state(&self.state_dir(&rec.id)) {
            return Some(st.init);
        }
        let pid = rec.pid.filter(|p| rec.shim_pid.is_some() && parent_of(*p) == rec.shim_pid)?;
        ProcessId::of(pid)
    }

    /// `sig` to the container: through the runtime, else (the runtime has
    /// lost it, or its state is gone) to the init itself.
    pub(crate) fn signal(&self, id: &str, init: Option<ProcessId>, sig: Signal) {
        let through_runtime = self.oci_runtime_for(id).kill(id, sig.as_str(), false).is_ok();
        if !through_runtime && let Some(p) = init.filter(ProcessId::is_alive) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid), sig);
        }
    }

    /// Until the container has stopped (recorded exited, or its init is
    /// gone), at most `timeout`; whether it has.
    pub(crate) fn wait_stopped(&self, rec: &ContainerRecord, init: Option<ProcessId>, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let gone = init.is_some_and(|p| !p.is_alive());
            if gone || self.refresh(rec).status == Status::Exited {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes what `refresh` found into the record: the state fields only,
    /// so a concurrent rename or label change is kept. A record removed
    /// meanwhile stays removed.
    pub(crate) fn save_state(&self, now: &ContainerRecord) {
        let Ok(store) = self.containers() else { return };
        let _ = store.update(&now.id, |r| {
            r.status = now.status;
            r.pid = now.pid;
            r.shim_pid = now.shim_pid;
            r.exit_code = now.exit_code;
            r.started_at = now.started_at.clone();
            r.finished_at = now.finished_at.clone();
            r.restart_count = now.restart_count;
            r.oom_killed = now.oom_killed;
        });
    }
}

/// How much later than the container's recorded start its init may seem
/// to have started: the boot time /proc gives is whole seconds, and it
/// moves with clock adjustments.
const START_SLACK_SECS: f64 = 2.0;

/// An RFC 3339 time as seconds since the epoch.
fn epoch_secs(t: &str) -> Option<f64> {
    let t = chrono::DateTime::parse_from_rfc3339(t).ok()?;
    Some(t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9)
}

/// When a process started, in seconds since the epoch, from its start in
/// clock ticks after boot (/proc/PID/stat field 22) and the boot time.
fn process_start_secs(ticks: u64) -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let boot: u64 = stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    Some(boot as f64 + ticks as f64 / hz as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_started_before_now_and_after_boot() {
        let me = berth_proc::ProcessId::current().unwrap();
        let started = process_start_secs(me.start).unwrap();
        let now = epoch_secs(&berth_proc::time::now()).unwrap();
        assert!(started <= now + START_SLACK_SECS, "{started} > {now}");
        assert!(started > now - 24.0 * 3600.0 * 365.0, "{started}");
        assert_eq!(epoch_secs("2026-11-23T01:02:03.5Z"), Some(1_795_395_723.5));
    }
}
