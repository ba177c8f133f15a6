//! The CRI's `ExecSync`: run a command in a running container, collect
//! its stdout and stderr and its exit code, and kill it (with what it
//! started) when a timeout expires. As `berth exec`, the command is an
//! exec session of the container's shim (the shim runs the runtime's
//! `exec`, reaps the process and reports its exit); its output comes
//! back here through two pipes.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use berth_proc::ProcessId;
use berth_shim::client::Attach;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::Error;
use crate::engine::Engine;
use crate::ops::ExecOptions;

/// At most this much of each stream is kept (the kubelet's own cap on
/// exec output, 16 MiB). The rest is still read, so the command never
/// blocks on a full pipe, and dropped.
pub const MAX_OUTPUT: usize = 16 << 20;

/// After the command has exited, how long output is still read from
/// processes it left behind that hold its stdout or stderr.
const DRAIN: Duration = Duration::from_secs(2);

/// How long the shim may take to report the end of a killed command.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// What `exec_sync` collected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// At most [`MAX_OUTPUT`] bytes: the start of the output.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// As a shell reports it: 127 for a command that is not there, 128+N
    /// for a signal.
    pub exit_code: i32,
}

impl Engine {
    /// Runs `cmd` in the running container `key` and waits for it: its
    /// output and exit code. With a non-zero `timeout`, a command still
    /// running when it expires is killed (SIGKILL, with every process it
    /// started that is still its descendant) and the result is
    /// [`Error::ExecTimeout`]. A command the runtime cannot start (not
    /// found) is exit code 127 (126: not executable), as the kubelet and
    /// shells report it.
    pub fn exec_sync(&self, key: &str, cmd: &[String], timeout: Duration) -> Result<ExecOutput, Error> {
        let rec = self.running(key)?;
        if cmd.is_empty() {
            return Err(berth_shim::ShimError::Usage(format!("exec in container {}: no command given", rec.id)).into());
        }
        if !self.shim_alive(&rec.id) {
            return Err(Error::NotRunning(format!(
                "container {}: its shim is gone, exec needs it to reap the process",
                rec.id
            )));
        }
        let deadline = (!timeout.is_zero()).then(|| Instant::now() + timeout);
        let args = self.exec_args(&rec, &ExecOptions { args: cmd.to_vec(), ..Default::default() }, &[])?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let null = std::fs::File::open("/dev/null").map_err(|source| Error::Io {
            what: "open",
            path: "/dev/null".into(),
            source,
        })?;
        let mut attach = self.attach(&rec)?;
        let started = attach.exec(&args, [null.as_fd(), out_w.as_fd(), err_w.as_fd()]);
        // Only the command holds the write ends now: EOF comes when it
        // (and whatever it started) is done.
        drop((out_w, err_w));
        let pid = match started {
            Ok(pid) => pid,
            Err(e) => {
                let e = Error::from(e);
                // The runtime's words on stderr, as a shell prints its own.
                return match e.exec_failure() {
                    Some(f) => Ok(ExecOutput {
                        stdout: Vec::new(),
                        stderr: format!("{e}\n").into_bytes(),
                        exit_code: f.exit_code(),
                    }),
                    None => Err(e),
                };
            }
        };
        // Taken at once: a kill later checks that the pid is still it.
        let process = ProcessId::of(pid);
        let mut run = Run { attach, streams: [Some(out_r), Some(err_r)], out: [Vec::new(), Vec::new()], code: None };
        let timed_out = run.collect(deadline)?;
        if timed_out {
            if let Some(p) = process {
                kill_tree(p);
            }
            run.collect(Some(Instant::now() + KILL_GRACE))?;
            return Err(Error::ExecTimeout { id: rec.id, cmd: cmd.join(" "), timeout });
        }
        let [stdout, stderr] = run.out;
        Ok(ExecOutput { stdout, stderr, exit_code: run.code.unwrap_or(-1) })
    }
}

/// One command's output and end, as they come.
struct Run {
    attach: Attach,
    /// stdout and stderr, until their EOF.
    streams: [Option<OwnedFd>; 2],
    out: [Vec<u8>; 2],
    /// The exit code, once the shim has reported it.
    code: Option<i32>,
}

impl Run {
    /// Reads output and waits for the exit until both are in, or until
    /// `deadline`; true if the deadline came before the exit.
    fn collect(&mut self, deadline: Option<Instant>) -> Result<bool, Error> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut drain_end: Option<Instant> = None;
        loop {
            if self.code.is_some() && self.streams.iter().all(Option::is_none) {
                return Ok(false);
            }
            if self.code.is_some() {
                drain_end.get_or_insert_with(|| Instant::now() + DRAIN);
            }
            let now = Instant::now();
            let end = match (deadline, drain_end) {
                (Some(d), Some(e)) => Some(d.min(e)),
                (d, e) => d.or(e),
            };
            if let Some(end) = end
                && now >= end
            {
                return Ok(self.code.is_none());
            }
            let wait = end.map_or(PollTimeout::NONE, |e| {
                PollTimeout::try_from(e.saturating_duration_since(now).as_millis().min(60_000) as i32 + 1)
                    .unwrap_or(PollTimeout::MAX)
            });
            self.poll_once(wait, &mut buf)?;
        }
    }

    fn poll_once(&mut self, wait: PollTimeout, buf: &mut [u8]) -> Result<(), Error> {
        let mut fds = vec![];
        let mut slots = vec![];
        if self.code.is_none() {
            fds.push(PollFd::new(self.attach.stream().as_fd(), PollFlags::POLLIN));
            slots.push(None);
        }
        for (i, s) in self.streams.iter().enumerate() {
            if let Some(fd) = s {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                slots.push(Some(i));
            }
        }
        match poll(&mut fds, wait) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(io("poll the output of", "an exec'd command", e)),
        }
        let ready: Vec<Option<usize>> =
            fds.iter().zip(slots).filter(|(f, _)| f.revents().is_some_and(|r| !r.is_empty())).map(|(_, s)| s).collect();
        drop(fds);
        for slot in ready {
            match slot {
                None => self.code = Some(self.attach.exec_exit()?),
                Some(i) => self.read(i, buf)?,
            }
        }
        Ok(())
    }

    /// One read from stream `i`: kept up to the cap, the stream closed at
    /// its end.
    fn read(&mut self, i: usize, buf: &mut [u8]) -> Result<(), Error> {
        let Some(fd) = &self.streams[i] else { return Ok(()) };
        match nix::unistd::read(fd, buf) {
            Ok(0) => self.streams[i] = None,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(self.out[i].len());
                self.out[i].extend_from_slice(&buf[..n.min(room)]);
            }
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(e) => return Err(io("read the output of", "an exec'd command", e)),
        }
        Ok(())
    }
}

fn io(what: &'static str, path: &str, e: Errno) -> Error {
    Error::Io { what, path: path.into(), source: std::io::Error::from(e) }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), Error> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io("create a pipe for", "an exec'd command", e))
}

/// Kills `root` and every process descending from it. They are stopped
/// first, from the top down, until a walk of /proc finds no new one: a
/// stopped process forks no more, and a child whose parent is killed
/// first would be reparented out of reach. Then all get SIGKILL (which
/// works on stopped processes). A process group the root leads (a
/// command that called setsid) is killed as a whole too.
fn kill_tree(root: ProcessId) {
    if !root.is_alive() {
        return;
    }
    let mut tree = vec![root.pid];
    let _ = kill(Pid::from_raw(root.pid), Signal::SIGSTOP);
    loop {
        let new: Vec<i32> = processes()
            .into_iter()
            .filter(|(pid, ppid)| tree.contains(ppid) && !tree.contains(pid))
            .map(|(pid, _)| pid)
            .collect();
        if new.is_empty() {
            break;
        }
        for pid in new {
            let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
            tree.push(pid);
        }
    }
    if nix::unistd::getpgid(Some(Pid::from_raw(root.pid))).is_ok_and(|g| g.as_raw() == root.pid) {
        let _ = kill(Pid::from_raw(-root.pid), Signal::SIGKILL);
    }
    for pid in tree {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Every process on the host: (pid, parent pid).
fn processes() -> Vec<(i32, i32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, berth_proc::stat(pid)?.ppid)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_tree_kills_the_children_a_command_started() {
        // A shell with a child and a grandchild, all sleeping.
        let mut sh = std::process::Command::new("/bin/sh")
            .args(["-c", "sh -c 'sleep 1001 & wait' & sleep 1002 & wait"])
            .spawn()
            .unwrap();
        let root = ProcessId::of(sh.id() as i32).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let descendants = || {
            let all = processes();
            let mut tree = vec![root.pid];
            loop {
                let more: Vec<i32> =
                    all.iter().filter(|(p, pp)| tree.contains(pp) && !tree.contains(p)).map(|(p, _)| *p).collect();
                if more.is_empty() {
                    return tree;
                }
                tree.extend(more);
            }
        };
        let mut tree = descendants();
        while tree.len() < 4 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            tree = descendants();
        }
        assert_eq!(tree.len(), 4, "sh, sleep 1002, sh, sleep 1001: {tree:?}");
        kill_tree(root);
        let _ = sh.wait();
        for pid in &tree[1..] {
            let deadline = Instant::now() + Duration::from_secs(5);
            // Reparented to init (or a subreaper) and reaped there.
            while berth_proc::stat(*pid).is_some_and(|s| s.running()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(!berth_proc::stat(*pid).is_some_and(|s| s.running()), "pid {pid} still runs");
        }
    }
}
