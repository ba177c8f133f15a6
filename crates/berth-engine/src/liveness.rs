//! What the engine does when a shim is gone: the container's state read
//! from its init (pid + start time), an exit nobody saw recorded, and the
//! signals of `stop` sent without the shim.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use berth_shim::client::{Exit, ShimState};
use berth_shim::process::ProcessId;
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
    pub(crate) fn state_dir(&self, id: &str) -> PathBuf {
        self.runroot.join("s").join(&id[..12.min(id.len())])
    }

    /// Records the exit of a container whose shim is dead and whose init
    /// has ended, once; the first to notice also does what the shim would
    /// have done after it: deletes the runtime's container and runs the
    /// exit command (`rm` for `--rm`).
    pub(crate) fn lost_exit(&self, rec: &ContainerRecord, dir: &Path, st: &ShimState) -> Exit {
        if berth_shim::client::record_lost_exit(dir, st.init.pid, LOST_EXIT_CODE) {
            tracing::warn!(id = %rec.id, shim = st.shim.pid, "the shim died before the container: exit status unknown");
            // Not --force: the runtime refuses to delete a container it
            // still sees running.
            let _ = self.runtime_cmd().args(["delete", &rec.id]).stdout(Stdio::null()).stderr(Stdio::null()).status();
            self.run_exit_command(rec);
        }
        berth_shim::client::exit_status(dir).unwrap_or_else(|| Exit {
            code: LOST_EXIT_CODE,
            exited_at: berth_shim::time::now(),
            restart_count: 0,
            pid: Some(st.init.pid),
            last: true,
        })
    }

    fn run_exit_command(&self, rec: &ContainerRecord) {
        use std::os::unix::process::CommandExt;
        let cmd = self.exit_command(rec);
        let Some((prog, args)) = cmd.split_first() else { return };
        let _ = std::process::Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
    }

    /// A runtime container left by a shim that died (or never recorded
    /// its start): deleted before a new shim creates it again. The caller
    /// has found the container not running.
    pub(crate) fn delete_runtime_leftover(&self, id: &str) {
        // runc, crun and berth-runtime all keep their state in ROOT/ID.
        if self.runroot.join("runtime").join(id).exists() {
            let _ =
                self.runtime_cmd().args(["delete", "--force", id]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
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
        let through_runtime = self
            .runtime_cmd()
            .args(["kill", id, sig.as_str()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
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
        });
    }
}
