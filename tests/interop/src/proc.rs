//! Running client commands (with a timeout, output through files) and
//! stopping processes the tests started, by PID.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// What a command did: exit code (-1 if killed by a signal), stdout, stderr.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Panics unless the command exited 0.
    pub fn ok(self, what: &str) -> Out {
        assert_eq!(self.code, 0, "{what} failed: {self:#?}");
        self
    }
}

/// Runs `cmd` with stdin /dev/null and stdout/stderr in temp files (a
/// pipe would stay open as long as any daemon or container the command
/// started holds it). Kills it and panics after `secs` seconds.
pub fn run(cmd: &mut Command, secs: u64) -> Out {
    let out = tempfile::tempfile().expect("temp file");
    let err = tempfile::tempfile().expect("temp file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(err.try_clone().expect("dup"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {secs}s; stderr so far: {}", read_all(err));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if std::env::var_os("BERTH_INTEROP_TRACE").is_some() {
        eprintln!("[{:.1}s] {cmd:?}", (Instant::now() + Duration::from_secs(secs) - deadline).as_secs_f32());
    }
    Out { code: status.code().unwrap_or(-1), stdout: read_all(out), stderr: read_all(err) }
}

fn read_all(mut f: std::fs::File) -> String {
    use std::io::{Read, Seek};
    let mut s = Vec::new();
    f.seek(std::io::SeekFrom::Start(0)).expect("seek");
    f.read_to_end(&mut s).expect("read");
    String::from_utf8_lossy(&s).into_owned()
}

/// The state letter of /proc/PID/stat (R, S, D, T, Z ...), or "" if gone.
pub fn proc_state(pid: i32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ").map(|(_, rest)| rest.chars().take(1).collect()).unwrap_or_default()
}

pub fn alive(pid: i32) -> bool {
    !matches!(proc_state(pid).as_str(), "" | "Z")
}

/// Sends SIGTERM to `pid`, waits up to `secs` for it to go, then SIGKILLs.
/// `reap` waits for our own child (so it does not stay a zombie).
pub fn stop_pid(pid: i32, secs: u64, reap: impl Fn() -> bool) {
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if reap() || !alive(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !reap() && alive(pid) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pids of processes whose command line mentions `marker` (a path only
/// this test uses), other than this process.
pub fn pids_mentioning(marker: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    berth_testkit::leaks::processes_with(marker).into_iter().filter(|p| *p != me).collect()
}

/// SIGKILLs every process whose command line mentions `marker`: what a
/// failed test's daemons left (shims, conmon, containers started with a
/// bundle in the scratch dir). Returns the pids it killed.
pub fn kill_mentioning(marker: &str) -> Vec<i32> {
    let pids = pids_mentioning(marker);
    for p in &pids {
        let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
    }
    if !pids.is_empty() {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && pids.iter().any(|p| alive(*p)) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    pids
}

/// A daemon this test started: stopped by its PID (SIGTERM, then SIGKILL
/// after `stop_secs`) when dropped. Its output goes to `log`.
pub struct Daemon {
    pub name: String,
    child: Option<std::process::Child>,
    pub log: std::path::PathBuf,
    stop_secs: u64,
}

impl Daemon {
    pub fn spawn(name: &str, cmd: &mut Command, log: std::path::PathBuf, stop_secs: u64) -> Daemon {
        use std::os::unix::process::CommandExt;
        let f = std::fs::File::create(&log).expect("daemon log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("dup"))
            .stderr(f)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({cmd:?}): {e}"));
        Daemon { name: name.into(), child: Some(child), log, stop_secs }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// Has the daemon exited (or been stopped)?
    pub fn has_exited(&mut self) -> bool {
        self.child.as_mut().is_none_or(|c| !matches!(c.try_wait(), Ok(None)))
    }

    /// Panics (with the log) if the daemon has exited.
    pub fn check_running(&mut self) {
        if self.has_exited() {
            panic!("{} exited; its log:\n{}", self.name, self.log_tail());
        }
    }

    /// The last 60 lines of the log.
    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let pid = child.id() as i32;
        let child = std::cell::RefCell::new(&mut child);
        stop_pid(pid, self.stop_secs, || matches!(child.borrow_mut().try_wait(), Ok(Some(_))));
        let _ = child.borrow_mut().try_wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}
