//! berth-shim supervising real containers: with berth-runtime, and with
//! runc and crun where installed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_shim::client::{self, Attach, Started};
use berth_shim::config::{Config, LogFormat, Restart};
use berth_shim::{ShimError, protocol};
use berth_testkit::{Bundle, Runtime, require_root, unique_id, workspace_bin};
use serde_json::Value;

/// A container under a shim, for one test: its bundle, state and runtime
/// root are temporary; dropping it kills what is left (shim, container).
struct Boxed {
    rt: Runtime,
    bundle: Bundle,
    state: tempfile::TempDir,
    cfg: Config,
    started: Option<Started>,
}

impl Boxed {
    fn new(runtime: PathBuf, args: &[&str]) -> Boxed {
        require_root();
        let rt = Runtime::new(runtime.clone());
        let mut bundle = Bundle::busybox();
        bundle.args(args);
        bundle.edit(|c| c["root"]["readonly"] = false.into());
        bundle.write();
        let state = tempfile::Builder::new().prefix("berth-shim-").tempdir().unwrap();
        let cfg = Config {
            id: unique_id("shim"),
            bundle: bundle.path().into(),
            runtime,
            runtime_root: Some(rt.root().into()),
            state_dir: state.path().join("state"),
            log_path: Some(state.path().join("container.log")),
            log_max_size: None,
            log_max_files: 1,
            log_format: LogFormat::JsonFile,
            terminal: false,
            stdin: false,
            restart: Restart::No,
            sync_fd: None,
            no_delete: false,
            exit_command: Vec::new(),
            events_dir: None,
            event_attrs: Vec::new(),
        };
        Boxed { rt, bundle, state, cfg, started: None }
    }

    fn start(&mut self) -> Result<Started, ShimError> {
        let s = client::spawn(Path::new(env!("CARGO_BIN_EXE_berth-shim")), &self.cfg)?;
        self.started = Some(s.clone());
        Ok(s)
    }

    fn wait_exit(&self) -> client::Exit {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(e) = client::exit_status(&self.cfg.state_dir)
                && !self.shim_alive()
            {
                return e;
            }
            assert!(Instant::now() < deadline, "the container did not end");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn shim_alive(&self) -> bool {
        self.started
            .as_ref()
            .is_some_and(|s| nix::sys::signal::kill(nix::unistd::Pid::from_raw(s.shim_pid), None).is_ok())
    }

    fn log(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.cfg.log_path.as_ref().unwrap()).unwrap_or_default();
        // Read while the shim may be mid-line: only whole lines count.
        let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        whole.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

impl Drop for Boxed {
    fn drop(&mut self) {
        if let Some(s) = &self.started
            && self.shim_alive()
        {
            let _ = client::mark_stopped(&self.cfg.state_dir);
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(s.pid), nix::sys::signal::Signal::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.shim_alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(s.shim_pid), nix::sys::signal::Signal::SIGKILL);
        }
        let _ = &self.bundle;
        let _ = &self.state;
        // `rt` deletes whatever container is left in its root.
    }
}

fn shim_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth-shim"))
}

fn berth() -> PathBuf {
    workspace_bin("berth-runtime")
}

fn lines(log: &[Value], stream: &str) -> Vec<String> {
    log.iter().filter(|e| e["stream"] == stream).map(|e| e["log"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn output_goes_to_the_json_file_log_and_the_exit_is_recorded() {
    let mut b = Boxed::new(berth(), &["/bin/sh", "-c", "echo out; echo err >&2; echo more; exit 3"]);
    let s = b.start().unwrap();
    assert!(s.pid > 1 && s.shim_pid > 1);
    let exit = b.wait_exit();
    assert_eq!((exit.code, exit.restart_count), (3, 0));
    let log = b.log();
    assert_eq!(lines(&log, "stdout"), ["out\n", "more\n"]);
    assert_eq!(lines(&log, "stderr"), ["err\n"]);
    assert!(log.iter().all(|e| e["time"].as_str().is_some_and(|t| t.ends_with('Z'))));
    assert!(b.rt.ids().is_empty(), "the runtime's container is deleted after the exit");
}

#[test]
fn the_shim_is_detached_from_its_starter_and_reaps_the_real_exit_status() {
    let mut b = Boxed::new(berth(), &["/bin/sleep", "30"]);
    let s = b.start().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", s.shim_pid)).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let (ppid, sid): (u32, i32) = (fields[1].parse().unwrap(), fields[3].parse().unwrap());
    assert_ne!(ppid, std::process::id(), "the shim is not the starter's child");
    assert_eq!(sid, s.shim_pid, "the shim leads a session of its own");
    let init_ppid = std::fs::read_to_string(format!("/proc/{}/stat", s.pid)).unwrap();
    let init_ppid: i32 = init_ppid.rsplit_once(')').unwrap().1.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(init_ppid, s.shim_pid, "the container's init is the shim's child (subreaper)");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(s.pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    assert_eq!(b.wait_exit().code, 137);
}

#[test]
fn signals_to_the_shim_reach_the_container() {
    let mut b = Boxed::new(
        berth(),
        &["/bin/sh", "-c", "trap 'echo got-term; exit 0' TERM; echo ready; while true; do sleep 0.05; done"],
    );
    let s = b.start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lines(&b.log(), "stdout").contains(&"ready\n".to_owned()) {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(s.shim_pid), nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(b.wait_exit().code, 0);
    assert!(lines(&b.log(), "stdout").contains(&"got-term\n".to_owned()));
}

#[test]
fn stdin_through_the_attach_socket_reaches_the_container() {
    let mut b = Boxed::new(berth(), &["/bin/cat"]);
    b.cfg.stdin = true;
    b.start().unwrap();
    let mut a = Attach::connect(&b.cfg.state_dir).unwrap();
    a.send_stdin(b"ping\n").unwrap();
    let mut out = Vec::new();
    let code = loop {
        match a.next_frame().unwrap() {
            Some((protocol::STDOUT, d)) => {
                out.extend(d);
                if out.ends_with(b"ping\n") {
                    a.close_stdin().unwrap();
                }
            }
            Some((protocol::EXIT, c)) => break i32::from_be_bytes(c.try_into().unwrap()),
            Some(_) => {}
            None => panic!("the shim hung up before the exit"),
        }
    };
    assert_eq!((String::from_utf8_lossy(&out).as_ref(), code), ("ping\n", 0));
}

/// The input a client sent before it hung up reaches the container, also
/// when output came back as it left: the shim dropped a client whose
/// write failed before reading what it had sent (a `run -i` whose close
/// of stdin was lost waited for ever). The container writes all the
/// time, so output is due in every round of the shim's loop.
#[test]
fn stdin_sent_just_before_hanging_up_is_not_lost_to_output() {
    for round in 0..5 {
        let mut b = Boxed::new(
            berth(),
            &["/bin/sh", "-c", "while :; do echo tick; done & cat > /got; kill $!; wait $!; cat /got; echo done"],
        );
        b.cfg.stdin = true;
        b.start().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !lines(&b.log(), "stdout").contains(&"tick\n".to_owned()) {
            assert!(Instant::now() < deadline, "round {round}: never ticked");
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut a = Attach::connect(&b.cfg.state_dir).unwrap();
        a.send_stdin(b"ping\n").unwrap();
        a.close_stdin().unwrap();
        drop(a);
        let exit = b.wait_exit();
        let out = lines(&b.log(), "stdout");
        assert!(out.ends_with(&["ping\n".to_owned(), "done\n".to_owned()]), "round {round}: {exit:?}");
    }
}

#[test]
fn a_terminal_container_answers_through_attach_and_follows_resizes() {
    let mut b = Boxed::new(berth(), &["/bin/sh"]);
    b.cfg.terminal = true;
    b.bundle.edit(|c| c["process"]["terminal"] = true.into());
    b.bundle.write();
    b.start().unwrap();
    let mut a = Attach::connect(&b.cfg.state_dir).unwrap();
    a.resize(33, 77).unwrap();
    a.send_stdin(b"stty size; tty; exit 5\n").unwrap();
    let mut out = Vec::new();
    let code = loop {
        match a.next_frame().unwrap() {
            Some((protocol::STDOUT, d)) => out.extend(d),
            Some((protocol::EXIT, c)) => break i32::from_be_bytes(c.try_into().unwrap()),
            Some(_) => {}
            None => panic!("the shim hung up before the exit"),
        }
    };
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("33 77"), "the resize reached the terminal: {text:?}");
    assert!(text.contains("/dev/pts/"), "a real terminal: {text:?}");
    assert_eq!(code, 5);
}

#[test]
fn on_failure_2_restarts_exactly_twice() {
    let mut b = Boxed::new(berth(), &["/bin/sh", "-c", "echo run >> /runs; exit 1"]);
    b.cfg.restart = Restart::OnFailure(2);
    b.start().unwrap();
    let exit = b.wait_exit();
    assert_eq!((exit.code, exit.restart_count), (1, 2));
    let runs = std::fs::read_to_string(b.bundle.rootfs().join("runs")).unwrap();
    assert_eq!(runs.lines().count(), 3, "the first run and two restarts");
}

#[test]
fn the_log_is_rotated_by_size_and_count() {
    let mut b = Boxed::new(berth(), &["/bin/sh", "-c", "i=0; while [ $i -lt 200 ]; do echo line $i; i=$((i+1)); done"]);
    b.cfg.log_max_size = Some(2000);
    b.cfg.log_max_files = 3;
    b.start().unwrap();
    assert_eq!(b.wait_exit().code, 0);
    let log = b.cfg.log_path.clone().unwrap();
    let names = ["", ".1", ".2"].map(|s| PathBuf::from(format!("{}{s}", log.display())));
    for n in &names {
        let len = std::fs::metadata(n).unwrap().len();
        assert!(len <= 2000 && len > 0, "{} is {len} bytes", n.display());
    }
    assert!(!PathBuf::from(format!("{}.3", log.display())).exists(), "at most 3 files");
    assert_eq!(lines(&b.log(), "stdout").last().map(String::as_str), Some("line 199\n"));
}

#[test]
fn a_runtime_error_is_the_spawn_error() {
    let mut b = Boxed::new(berth(), &["/nonexistent-program"]);
    match b.start() {
        // berth-runtime's errno comes typed through the start report.
        Err(ShimError::ExecFailed { message, errno }) => {
            assert!(message.contains("nonexistent-program"), "{message}");
            assert_eq!(errno, libc::ENOENT);
        }
        other => panic!("expected the runtime's typed error, got {other:?}"),
    }
    assert!(b.rt.ids().is_empty(), "nothing left in the runtime");
}

/// The same contract with runc and crun as the runtime (skipped where the
/// binary is not installed, e.g. in the cgroup v2 guest).
#[test]
fn runc_and_crun_work_under_the_shim() {
    for name in ["runc", "crun"] {
        let Some(bin) = ["/usr/sbin", "/usr/bin"].iter().map(|d| Path::new(d).join(name)).find(|p| p.exists()) else {
            eprintln!("skipped: {name} is not installed");
            continue;
        };
        let mut b = Boxed::new(bin, &["/bin/sh", "-c", "echo via-$0; exit 4"]);
        // crun 1.8 knows runtime-spec versions up to 1.0.x.
        b.bundle.edit(|c| c["ociVersion"] = "1.0.2".into());
        b.bundle.write();
        b.start().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(b.wait_exit().code, 4, "{name}");
        assert_eq!(lines(&b.log(), "stdout"), ["via-/bin/sh\n"], "{name}");
    }
}

#[test]
fn the_exit_command_runs_after_the_last_exit_only() {
    let mut b = Boxed::new(berth(), &["/bin/sh", "-c", "exit 1"]);
    let marker = b.state.path().join("exit-command-ran");
    b.cfg.restart = Restart::OnFailure(1);
    b.cfg.exit_command = vec!["/bin/sh".into(), "-c".into(), format!("echo once >> {}", marker.display())];
    b.start().unwrap();
    let exit = b.wait_exit();
    assert_eq!((exit.code, exit.restart_count), (1, 1));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the exit command did not run");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "once\n", "once, after the restart, not per exit");
}

#[test]
fn exec_sessions_run_as_the_shims_children_and_report_their_exit() {
    use std::io::Read;
    use std::os::fd::AsFd;
    let mut b = Boxed::new(berth(), &["/bin/sleep", "30"]);
    let s = b.start().unwrap();
    let id = b.cfg.id.clone();
    let null = std::fs::File::open("/dev/null").unwrap();
    // Output through a pipe the test holds: the process writes to it.
    let (r, w) = nix::unistd::pipe().unwrap();
    let mut a = Attach::connect(&b.cfg.state_dir).unwrap();
    let args: Vec<String> = [&id, "sh", "-c", "echo in-exec $(cat /proc/self/stat | cut -d' ' -f4); sleep 0.3; exit 4"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let pid = a.exec(&args, [null.as_fd(), w.as_fd(), w.as_fd()]).unwrap();
    drop(w);
    assert!(pid > 1);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ppid: i32 = stat.rsplit_once(')').unwrap().1.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(ppid, s.shim_pid, "the session's process is the shim's child");
    assert_eq!(a.exec_exit().unwrap(), 4);
    let mut out = String::new();
    std::fs::File::from(r).read_to_string(&mut out).unwrap();
    assert!(out.starts_with("in-exec "), "{out}");
    // The runtime's own error comes back for a command that is not there.
    let mut a = Attach::connect(&b.cfg.state_dir).unwrap();
    let bad: Vec<String> = vec![id.clone(), "no-such-program".into()];
    match a.exec(&bad, [null.as_fd(), null.as_fd(), null.as_fd()]) {
        // With its errno, typed (the EXEC_ERRNO frame).
        Err(ShimError::ExecFailed { message, errno }) => {
            assert!(message.contains("executable file not found"), "{message}");
            assert_eq!(errno, libc::ENOENT);
        }
        other => panic!("expected the runtime's typed error, got {other:?}"),
    }
    // The shim stays while a session runs after the init ended, and
    // reports it; here the pid namespace ends it with the init.
    let mut a = Attach::connect(&b.cfg.state_dir).unwrap();
    let long: Vec<String> = vec![id.clone(), "sleep".into(), "60".into()];
    a.exec(&long, [null.as_fd(), null.as_fd(), null.as_fd()]).unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(s.pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    assert_eq!(a.exec_exit().unwrap(), 128 + 9, "killed with the pid namespace");
    assert_eq!(b.wait_exit().code, 137);
}

#[test]
fn clients_that_come_and_go_during_output_never_take_the_shim_down() {
    let mut b = Boxed::new(
        berth(),
        &["/bin/sh", "-c", "i=0; while [ $i -lt 20000 ]; do echo line$i; i=$((i+1)); done; sleep 0.3; exit 6"],
    );
    b.start().unwrap();
    let state = b.cfg.state_dir.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn: Vec<_> = (0..8)
        .map(|_| {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Connect, read a little, hang up mid-stream.
                    if let Ok(mut a) = Attach::connect(&state) {
                        let _ = a.next_frame();
                    }
                }
            })
        })
        .collect();
    let exit = b.wait_exit();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in churn {
        t.join().unwrap();
    }
    assert_eq!(exit.code, 6, "the shim recorded the exit");
    assert_eq!(lines(&b.log(), "stdout").len(), 20000, "and logged every line");
}

#[test]
fn state_json_names_the_init_and_the_shim_by_pid_and_start_time() {
    let mut b = Boxed::new(berth(), &["/bin/sleep", "30"]);
    let s = b.start().unwrap();
    let st = client::shim_state(&b.cfg.state_dir).expect("state.json after the start");
    assert_eq!((st.init.pid, st.shim.pid), (s.pid, s.shim_pid));
    assert!(st.init.is_alive() && st.shim.is_alive());
    assert_eq!(st.started_at, s.started_at, "the start time the engine was told");
    assert!(chrono_like(&st.started_at), "{}", st.started_at);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(s.pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let exit = b.wait_exit();
    assert_eq!((exit.code, exit.pid, exit.last), (137, Some(s.pid), true), "the exit names its init");
    assert!(!st.init.is_alive() && !st.shim.is_alive());
}

/// "2026-11-23T01:02:03.123456789Z"
fn chrono_like(t: &str) -> bool {
    t.len() == 30 && t.ends_with('Z') && t.as_bytes()[10] == b'T'
}

#[test]
fn the_exit_command_waits_until_the_watch_lets_go() {
    let mut b = Boxed::new(berth(), &["/bin/sh", "-c", "echo bye; exit 7"]);
    let released = b.state.path().join("released");
    let marker = b.state.path().join("exit-command-saw");
    let script =
        format!("if [ -e {} ]; then echo after; else echo before; fi > {}", released.display(), marker.display());
    b.cfg.exit_command = vec!["/bin/sh".into(), "-c".into(), script];
    let (started, mut watch) = client::spawn_watched(shim_bin(), &b.cfg).unwrap();
    b.started = Some(started);
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        match watch.wait(Duration::from_millis(100)) {
            client::Watched::Exited(c) => break c,
            client::Watched::Running => assert!(Instant::now() < deadline, "no exit reported"),
            client::Watched::Lost => panic!("the shim ended without reporting the exit"),
        }
    };
    assert_eq!(code, 7);
    assert_eq!(lines(&b.log(), "stdout"), ["bye\n"], "the whole log is there when the exit is reported");
    std::fs::write(&released, "").unwrap();
    drop(watch);
    while std::fs::read_to_string(&marker).map_or(true, |m| m.is_empty()) {
        assert!(Instant::now() < deadline, "the exit command did not run after the watch let go");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "after\n", "the exit command ran before the watch let go");
}

#[test]
fn a_killed_shim_is_lost_to_its_watch() {
    let mut b = Boxed::new(berth(), &["/bin/sleep", "30"]);
    let (started, mut watch) = client::spawn_watched(shim_bin(), &b.cfg).unwrap();
    b.started = Some(started.clone());
    assert_eq!(watch.wait(Duration::from_millis(50)), client::Watched::Running);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(started.shim_pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match watch.wait(Duration::from_millis(100)) {
            client::Watched::Lost => break,
            client::Watched::Running => assert!(Instant::now() < deadline, "the watch never saw the shim go"),
            client::Watched::Exited(c) => panic!("a killed shim reported an exit ({c})"),
        }
    }
    // The container outlives its shim, as runc's outlive a killed conmon.
    // The socket closes as the killed shim's files go, a moment before
    // its /proc entry stops reading as running: wait for that.
    let st = client::shim_state(&b.cfg.state_dir).unwrap();
    while st.shim.is_alive() {
        assert!(Instant::now() < deadline, "the killed shim still runs");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(st.init.is_alive(), "the container outlives its shim");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(started.pid), nix::sys::signal::Signal::SIGKILL).unwrap();
}

/// Processes whose command line holds `needle`.
fn processes_with(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

#[test]
fn no_exit_command_for_a_container_removed_while_the_watch_was_held() {
    let mut b = Boxed::new(berth(), &["/bin/sh", "-c", "exit 0"]);
    let needle = unique_id("exit-command");
    // Still sleeping when the shim has gone, had it been started.
    b.cfg.exit_command = vec!["/bin/sh".into(), "-c".into(), format!("sleep 5 # {needle}")];
    let (started, mut watch) = client::spawn_watched(shim_bin(), &b.cfg).unwrap();
    b.started = Some(started);
    let deadline = Instant::now() + Duration::from_secs(20);
    while watch.wait(Duration::from_millis(100)) == client::Watched::Running {
        assert!(Instant::now() < deadline, "no exit reported");
    }
    // What an attached `run --rm` does: remove, then let go.
    std::fs::remove_dir_all(&b.cfg.state_dir).unwrap();
    drop(watch);
    while b.shim_alive() {
        assert!(Instant::now() < deadline, "the shim did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = processes_with(&needle);
    for pid in &left {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::Signal::SIGKILL);
    }
    assert!(left.is_empty(), "the exit command ran for a removed container");
}

/// The CRI records of a log file: (stream, tag, message); each timestamp
/// is checked to be RFC 3339 in UTC with nanoseconds.
fn cri_records(path: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut f = l.splitn(4, ' ');
            let time = f.next().unwrap();
            assert!(time.ends_with('Z') && time.len() <= 30, "{l}");
            chrono::DateTime::parse_from_rfc3339(time).unwrap_or_else(|e| panic!("{time}: {e}"));
            let (s, t, m) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap_or(""));
            (s.to_owned(), t.to_owned(), m.to_owned())
        })
        .collect()
}

fn rec(s: &str, t: &str, m: &str) -> (String, String, String) {
    (s.into(), t.into(), m.into())
}

fn cri_box(args: &[&str]) -> Boxed {
    let mut b = Boxed::new(berth(), args);
    b.cfg.log_format = LogFormat::Cri;
    // containerd makes the pod's log directory if it is missing.
    b.cfg.log_path = Some(b.state.path().join("pods/ns_pod_uid/ctr/0.log"));
    b
}

#[test]
fn cri_log_lines_are_exact() {
    // 20000 bytes on one line: one P record of 16 KiB, then an F with the
    // rest; "tail" has no newline when the container exits: a P record.
    let script = "echo hello; echo oops >&2; printf '%20000s\\n' x | tr ' ' a; printf tail";
    let mut b = cri_box(&["/bin/sh", "-c", script]);
    b.start().unwrap();
    assert_eq!(b.wait_exit().code, 0);
    let path = b.cfg.log_path.clone().unwrap();
    let all = cri_records(&path);
    let of = |s: &str| all.iter().filter(|r| r.0 == s).cloned().collect::<Vec<_>>();
    let long = "a".repeat(19_999) + "x";
    assert_eq!(
        of("stdout"),
        [
            rec("stdout", "F", "hello"),
            rec("stdout", "P", &long[..16 * 1024]),
            rec("stdout", "F", &long[16 * 1024..]),
            rec("stdout", "P", "tail"),
        ]
    );
    assert_eq!(of("stderr"), [rec("stderr", "F", "oops")]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & !0o640, 0, "at most 0640 as containerd makes it: {mode:o}");
}

#[test]
fn a_terminal_container_logs_everything_as_stdout_without_carriage_returns() {
    let mut b = cri_box(&["/bin/sh", "-c", "echo out; echo err >&2"]);
    b.cfg.terminal = true;
    b.bundle.edit(|c| c["process"]["terminal"] = true.into());
    b.bundle.write();
    b.start().unwrap();
    assert_eq!(b.wait_exit().code, 0);
    assert_eq!(cri_records(b.cfg.log_path.as_ref().unwrap()), [rec("stdout", "F", "out"), rec("stdout", "F", "err")]);
}

#[test]
fn after_a_rename_and_a_reopen_new_lines_go_to_a_new_file() {
    let script = "i=0; while :; do echo line $i; i=$((i+1)); sleep 0.02; done";
    let mut b = cri_box(&["/bin/sh", "-c", script]);
    b.start().unwrap();
    let path = b.cfg.log_path.clone().unwrap();
    let rotated = path.with_extension("log.20261205-010203");
    let deadline = Instant::now() + Duration::from_secs(10);
    while cri_records(&path).len() < 3 {
        assert!(Instant::now() < deadline, "no output logged");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::rename(&path, &rotated).unwrap();
    let mut a = Attach::connect(&b.cfg.state_dir).unwrap();
    a.reopen_log(Duration::from_secs(10)).unwrap();
    assert!(path.exists(), "the new file is there when the reopen returns");
    while cri_records(&path).len() < 3 {
        assert!(Instant::now() < deadline, "nothing logged after the reopen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let n = |r: &(String, String, String)| r.2.trim_start_matches("line ").parse::<u32>().unwrap();
    let (old, new) = (cri_records(&rotated), cri_records(&path));
    assert!(old.iter().chain(&new).all(|r| r.1 == "F"));
    assert_eq!(n(old.last().unwrap()) + 1, n(&new[0]), "no line lost or doubled between the files");
    assert!(old.windows(2).all(|w| n(&w[0]) + 1 == n(&w[1])));
}

/// A shim's container in a cgroup of `parent` with an 8 MB memory limit.
fn limited(parent: &berth_testkit::cgroup::CgroupParent, args: &[&str]) -> Boxed {
    let mut b = Boxed::new(berth(), args);
    let path = format!("{}/{}", parent.path(), b.cfg.id);
    b.bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = path.into();
        c["linux"]["resources"]["memory"] = serde_json::json!({ "limit": 8 << 20 });
    });
    b.bundle.write();
    b
}

#[test]
fn an_oom_kill_in_the_containers_cgroup_is_recorded_and_a_sigkill_is_not() {
    let parent = berth_testkit::cgroup::CgroupParent::new("shim-oom");
    // busybox tail keeps the last "line" of /dev/zero, which never ends.
    let mut filler = limited(&parent, &["/bin/sh", "-c", "tail /dev/zero"]);
    filler.start().unwrap();
    let exit = filler.wait_exit();
    assert_eq!((exit.code, exit.oom_killed), (137, true), "{exit:?}");
    let text = std::fs::read_to_string(filler.cfg.state_dir.join("exit.json")).unwrap();
    assert!(text.contains("\"oomKilled\":true"), "{text}");

    let mut sleeper = limited(&parent, &["sleep", "300"]);
    let s = sleeper.start().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(s.pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let exit = sleeper.wait_exit();
    assert_eq!((exit.code, exit.oom_killed), (137, false), "{exit:?}");
    let text = std::fs::read_to_string(sleeper.cfg.state_dir.join("exit.json")).unwrap();
    assert!(!text.contains("oomKilled"), "only written when true: {text}");
}
