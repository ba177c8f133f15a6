//! A container whose shim or CLI was SIGKILLed: the engine still knows
//! what runs (the shim's state.json names the init and the shim by pid
//! and start time), `stop` still stops it, `--rm` still removes it, and
//! StartedAt is the shim's.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Berth, leftovers};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A process by pid and start time (field 22 of /proc/PID/stat).
#[derive(Clone, Copy, Debug)]
struct Proc {
    pid: i32,
    start: u64,
}

impl Proc {
    fn of(pid: i64) -> Proc {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        Proc { pid: pid as i32, start: field(&stat, 22).parse().unwrap() }
    }

    fn parent(&self) -> Proc {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap();
        Proc::of(field(&stat, 4).parse().unwrap())
    }

    /// Runs (same process, not a zombie).
    fn alive(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .is_ok_and(|s| field(&s, 22).parse() == Ok(self.start) && field(&s, 3) != "Z")
    }

    fn kill9(&self) {
        kill(Pid::from_raw(self.pid), Signal::SIGKILL).unwrap();
    }
}

/// Field `n` (1-based, as proc(5) counts) of a stat line.
fn field(stat: &str, n: usize) -> String {
    stat.rsplit_once(')').unwrap().1.split_whitespace().nth(n - 3).unwrap().to_owned()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The running container's init and its shim.
fn init_and_shim(b: &Berth, name: &str) -> (Proc, Proc) {
    let state = &b.inspect(name)["State"];
    assert_eq!(state["Running"], true, "{name} runs: {state}");
    let init = Proc::of(state["Pid"].as_i64().unwrap());
    (init, init.parent())
}

fn ps_line(b: &Berth, name: &str) -> String {
    b.ok(&["ps", "-a"]).lines().find(|l| l.ends_with(name)).unwrap_or_default().to_owned()
}

#[test]
fn stop_kills_a_container_whose_shim_was_killed_and_start_runs_it_again() {
    let b = Berth::new();
    b.ok(&["run", "-d", "--name", "orphan", "--network", "none", &b.image, "sleep", "300"]);
    let (init, shim) = init_and_shim(&b, "orphan");
    shim.kill9();
    wait_for("the shim to die", || !shim.alive());
    assert!(init.alive(), "the container outlives its shim");
    assert!(ps_line(&b, "orphan").contains("Up "), "still running: {}", ps_line(&b, "orphan"));

    b.ok(&["stop", "-t", "1", "orphan"]);
    assert!(!init.alive(), "stop reached the container without its shim");
    let line = ps_line(&b, "orphan");
    assert!(line.contains("Exited (137)"), "the exit nobody saw is 137: {line}");
    let state = &b.inspect("orphan")["State"];
    assert_eq!((state["Status"].as_str(), state["ExitCode"].as_i64()), (Some("exited"), Some(137)));
    assert!(!state["FinishedAt"].as_str().unwrap().is_empty());

    // A new shim takes it on: the runtime's leftover state is gone.
    b.ok(&["start", "orphan"]);
    let (again, new_shim) = init_and_shim(&b, "orphan");
    assert!(again.alive() && new_shim.alive());
    assert_ne!(new_shim.pid, shim.pid);
    b.ok(&["stop", "-t", "1", "orphan"]);
    assert!(!again.alive(), "stop returns once the init is gone");
    // The shim ends on its own after it recorded the exit.
    wait_for("the new shim to end", || !new_shim.alive());
    b.ok(&["rm", "orphan"]);
    assert!(leftovers(b.dir.path()).is_empty(), "{:?}", leftovers(b.dir.path()));
}

/// `restart` starts the container the moment its exit is recorded: the
/// last shim must be done with the runtime by then, or its `delete
/// --force` kills the new init.
#[test]
fn a_container_restarted_at_once_is_not_deleted_by_its_last_shim() {
    let b = Berth::new();
    b.ok(&["run", "-d", "--name", "again", "--network", "none", &b.image, "sleep", "300"]);
    for round in 0..8 {
        b.ok(&["restart", "-t", "0", "again"]);
        let (init, _) = init_and_shim(&b, "again");
        std::thread::sleep(Duration::from_millis(150));
        assert!(init.alive(), "round {round}: the restarted init still runs");
        assert_eq!(b.inspect("again")["State"]["Running"], true, "round {round}");
    }
    b.ok(&["rm", "-f", "again"]);
    assert!(leftovers(b.dir.path()).is_empty(), "{:?}", leftovers(b.dir.path()));
}

#[test]
fn a_container_that_ends_after_its_shim_was_killed_is_seen_exited() {
    let b = Berth::new();
    let script = "while [ ! -e /tmp/go ]; do sleep 0.05; done; exit 3";
    b.ok(&["run", "-d", "--name", "job", "--network", "none", &b.image, "sh", "-c", script]);
    let (init, shim) = init_and_shim(&b, "job");
    shim.kill9();
    wait_for("the shim to die", || !shim.alive());
    assert_eq!(b.inspect("job")["State"]["Running"], true);
    // No shim to exec through: the file goes in through the init's root.
    std::fs::write(format!("/proc/{}/root/tmp/go", init.pid), "").unwrap();
    wait_for("the container to end", || !init.alive());

    assert_eq!(b.ok(&["wait", "job"]), "137\n", "wait knows it ended (its status went with the shim)");
    assert!(ps_line(&b, "job").contains("Exited (137)"), "{}", ps_line(&b, "job"));
    assert!(!b.ok(&["ps"]).contains("job"), "not listed as running");
    let state = &b.inspect("job")["State"];
    assert_eq!((state["Running"].as_bool(), state["Pid"].as_i64()), (Some(false), Some(0)));

    // Started again under a new shim, its real exit code is back.
    b.ok(&["start", "job"]);
    assert_eq!(b.ok(&["wait", "job"]), "3\n");
    b.ok(&["rm", "job"]);
    assert!(leftovers(b.dir.path()).is_empty(), "{:?}", leftovers(b.dir.path()));
}

#[test]
fn a_killed_attached_run_rm_is_removed_by_its_shim() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let mut cli = b.command();
    cli.args(["run", "--rm", "--name", "gone", "--network", "none", &b.image, "sh", "-c", "echo hi; sleep 2"]);
    let mut child = cli.stdout(std::process::Stdio::null()).spawn().unwrap();
    let mut id = String::new();
    wait_for("the container to run", || {
        let out = b.cmd(&["inspect", "gone"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        id = v[0]["Id"].as_str().unwrap_or_default().to_owned();
        v[0]["State"]["Running"] == true
    });
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for("the shim to remove the container", || b.ok(&["ps", "-a", "-q"]).is_empty());
    let (root, run) = (b.dir.path().join("root"), b.dir.path().join("run"));
    for dir in [root.join("containers").join(&id), run.join("containers").join(&id), run.join("s").join(&id[..12])] {
        assert!(!dir.exists(), "{} is left", dir.display());
    }
    assert!(!run.join("runtime").join(&id).exists(), "the runtime's state is left");
    assert!(leftovers(b.dir.path()).is_empty(), "mounts (rootfs, netns) left: {:?}", leftovers(b.dir.path()));
}

#[test]
fn an_attached_run_rm_still_prints_everything_and_its_code() {
    let b = Berth::new();
    // More output than a pipe holds, so the shim's removal would race the
    // CLI's copy if it did not wait for it.
    let script = "i=0; while [ $i -lt 3000 ]; do echo line$i; i=$((i+1)); done; exit 5";
    let out = b.cmd(&["run", "--rm", "--network", "none", &b.image, "sh", "-c", script]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 3000, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(text.lines().last(), Some("line2999"));
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(b.ok(&["ps", "-a", "-q"]), "");
}

/// A `berth-shim` that, once the shim has detached, SIGKILLs the `berth`
/// that ran it: the CLI dies after the shim started the container and
/// before it recorded anything.
fn shim_that_kills_its_cli(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("killing-shim");
    let real = berth_testkit::workspace_bin("berth-shim");
    std::fs::write(&path, format!("#!/bin/sh\n{} \"$@\"\nkill -9 $PPID\n", real.display())).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn started_at_comes_from_the_shim_when_the_cli_died_after_starting_it() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let shim = shim_that_kills_its_cli(b.dir.path());
    let mut cli = b.command();
    cli.env("BERTH_SHIM", &shim);
    cli.args(["run", "-d", "--name", "early", "--network", "none", &b.image, "sleep", "300"]);
    let out = berth_testkit::output_via_files(&mut cli);
    assert_eq!(out.status.code(), None, "the CLI was killed: {out:?}");
    wait_for("the container to run", || b.inspect("early")["State"]["Running"] == true);
    let started = b.inspect("early")["State"]["StartedAt"].as_str().unwrap().to_owned();
    assert!(chrono::DateTime::parse_from_rfc3339(&started).is_ok(), "StartedAt {started:?}");
    let line = ps_line(&b, "early");
    assert!(line.contains("Up ") && !line.contains("N/A"), "{line}");
    b.ok(&["rm", "-f", "early"]);
    assert!(leftovers(b.dir.path()).is_empty(), "{:?}", leftovers(b.dir.path()));
}

#[test]
fn wait_gets_the_code_of_a_detached_rm_container_removed_as_it_ends() {
    let b = Berth::new();
    let script = "sleep 0.5; exit 4";
    let id = b.ok(&["run", "-d", "--rm", "--network", "none", &b.image, "sh", "-c", script]);
    assert_eq!(b.ok(&["wait", id.trim()]), "4\n");
    wait_for("the --rm container to go", || b.ok(&["ps", "-a", "-q"]).is_empty());
}

#[test]
fn stop_reaches_sigkill_while_the_shim_is_frozen() {
    let b = Berth::new();
    // sh as pid 1 ignores SIGTERM: only SIGKILL ends it.
    let script = "while true; do sleep 0.05; done";
    b.ok(&["run", "-d", "--name", "stubborn", "--network", "none", &b.image, "sh", "-c", script]);
    let (init, shim) = init_and_shim(&b, "stubborn");
    kill(Pid::from_raw(shim.pid), Signal::SIGSTOP).unwrap();
    let stopped = b.cmd(&["stop", "-t", "1", "stubborn"]);
    // Thawed whatever stop did, so the test leaves nothing frozen.
    kill(Pid::from_raw(shim.pid), Signal::SIGCONT).unwrap();
    assert!(stopped.status.success(), "{}", String::from_utf8_lossy(&stopped.stderr));
    assert!(!init.alive(), "stop killed the container while its shim could do nothing");
    wait_for("the thawed shim to record the exit", || ps_line(&b, "stubborn").contains("Exited (137)"));
    b.ok(&["rm", "stubborn"]);
}

/// `exec` into a running container whose shim was SIGKILLed (there is no
/// attach socket to ask for an exec session): the runtime's exec runs it
/// directly, with this process's stdio (and a pty for -t); its output and
/// exit code come back, `-d` starts it in the background, and a command
/// that is not there gets docker's 127.
#[test]
fn exec_works_in_a_container_whose_shim_was_killed() {
    let b = Berth::new();
    b.ok(&["run", "-d", "--name", "orphan", "--network", "none", &b.image, "sleep", "300"]);
    let (init, shim) = init_and_shim(&b, "orphan");
    shim.kill9();
    wait_for("the shim to die", || !shim.alive());

    let out = b.cmd(&["exec", "orphan", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    assert_eq!((out.status.code(), text(&out.stdout), text(&out.stderr)), (Some(3), "out\n".into(), "err\n".into()));

    let mut c = b.command();
    c.args(["exec", "-i", "orphan", "sh", "-c", "read line; echo got:$line"]);
    c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"typed\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!((out.status.code(), text(&out.stdout)), (Some(0), "got:typed\n".into()), "-i passes stdin");

    assert_eq!(b.ok(&["exec", "-d", "orphan", "sh", "-c", "echo bg > /tmp/detached"]), "");
    wait_for("the detached exec to write", || std::fs::read(format!("/proc/{}/root/tmp/detached", init.pid)).is_ok());
    assert_eq!(b.ok(&["exec", "orphan", "cat", "/tmp/detached"]), "bg\n");

    let mut t = b.command();
    t.args(["exec", "-t", "orphan", "sh", "-c", "tty; exit 4"]);
    let (code, out) = berth_testkit::run_on_pty(&mut t, b"", Duration::from_secs(60));
    assert_eq!(code, Some(4), "{out}");
    assert!(out.contains("/dev/pts/"), "the process has a terminal: {out}");

    let out = b.cmd(&["exec", "orphan", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));

    assert!(init.alive(), "the container still runs");
    b.ok(&["rm", "-f", "orphan"]);
    assert!(leftovers(b.dir.path()).is_empty(), "{:?}", leftovers(b.dir.path()));
}

/// After a reboot the runroot (a tmpfs) is empty: a record that says
/// running has no shim files any more. While the process it names is its
/// init (started before the container did), it runs; once that pid is
/// gone, or is another process's (a reused pid started later), `ps` and
/// `inspect` say exited (137: the status went with the processes), the
/// process behind the reused pid is left alone, and `start` runs the
/// container again.
#[test]
fn a_running_record_without_shim_files_is_exited_once_its_init_is_gone_or_its_pid_reused() {
    let b = Berth::new();
    let id =
        b.ok(&["run", "-d", "--name", "rebooted", "--network", "none", &b.image, "sleep", "300"]).trim().to_owned();
    let (init, shim) = init_and_shim(&b, "rebooted");
    shim.kill9();
    wait_for("the shim to die", || !shim.alive());
    std::fs::remove_dir_all(b.dir.path().join("run/s").join(&id[..12])).unwrap();
    assert_eq!(b.inspect("rebooted")["State"]["Status"], "running", "its init still runs");

    init.kill9();
    wait_for("the init to die", || !init.alive());
    // Its pid now someone else's: a process that started after the
    // container (which, as before a reboot, started an hour ago).
    let mut other = std::process::Command::new("sleep").arg("300").spawn().unwrap();
    let store = berth_engine::store::ContainerStore::open(&b.dir.path().join("root/containers.redb")).unwrap();
    let an_hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    store
        .update(&id, |r| {
            r.pid = Some(other.id() as i32);
            r.started_at = Some(an_hour_ago.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
        })
        .unwrap();
    drop(store);

    let state = &b.inspect("rebooted")["State"];
    assert_eq!((state["Status"].as_str(), state["ExitCode"].as_i64()), (Some("exited"), Some(137)), "{state}");
    assert!(ps_line(&b, "rebooted").contains("Exited (137)"), "{}", ps_line(&b, "rebooted"));
    assert!(Proc::of(other.id() as i64).alive(), "the process behind the reused pid is not touched");
    other.kill().unwrap();
    other.wait().unwrap();

    b.ok(&["start", "rebooted"]);
    assert_eq!(b.ok(&["exec", "rebooted", "echo", "again"]), "again\n");
    b.ok(&["rm", "-f", "rebooted"]);
    assert!(leftovers(b.dir.path()).is_empty(), "{:?}", leftovers(b.dir.path()));
}
