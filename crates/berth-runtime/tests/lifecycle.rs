//! The container lifecycle through the CLI, as runc users drive it:
//! create/start/state/kill/delete, run, the state machine's refusals, and
//! what is left behind (nothing).

use std::time::{Duration, Instant};

use berth_testkit::{Bundle, Runtime, leaks, require_root, unique_id, unique_sleep};

fn runtime() -> Runtime {
    require_root();
    Runtime::new(env!("CARGO_BIN_EXE_berth-runtime"))
}

fn wait_for_status(rt: &Runtime, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = rt.state(id);
        if st["status"] == want {
            return;
        }
        assert!(Instant::now() < deadline, "{id} never became {want}: {st}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn run_propagates_exit_codes() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.sh("exit 3");
    assert_eq!(rt.run(&b, &unique_id("exit")).0, 3);
    b.args(&["true"]);
    assert_eq!(rt.run(&b, &unique_id("exit")).0, 0);
    // Killed by a signal: 128 + signal, as a shell reports it. (pid 1
    // ignores default-action signals, so a child is killed.)
    b.sh("sh -c 'kill -9 $$'; exit $?");
    assert_eq!(rt.run(&b, &unique_id("exit")).0, 137);
}

#[test]
fn created_container_waits_for_start_then_runs() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    let marker = unique_sleep();
    let out = b.rootfs().join("tmp/out");
    b.edit(|c| c["root"]["readonly"] = false.into());
    b.sh(&format!("echo started > /tmp/out; exec sleep {marker}"));
    let id = unique_id("life");
    let pid_file = b.path().join("pid");
    rt.ok(&["create", "--bundle", b.path().to_str().unwrap(), "--pid-file", pid_file.to_str().unwrap(), &id]);
    let st = rt.state(&id);
    assert_eq!(st["status"], "created");
    let pid: i64 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    assert_eq!(st["pid"], pid, "the pid file holds the init's pid");
    std::thread::sleep(Duration::from_millis(200));
    assert!(!out.exists(), "the program must not run before start");

    rt.ok(&["start", &id]);
    assert_eq!(rt.state(&id)["status"], "running");
    let deadline = Instant::now() + Duration::from_secs(5);
    // The shell creates the file before it writes to it: wait for the line.
    while std::fs::read_to_string(&out).map_or(true, |t| !t.ends_with('\n')) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "started\n");

    let err = rt.fails(&["start", &id]);
    assert!(err.contains("cannot start an already running container"), "{err}");
    let err = rt.fails(&["delete", &id]);
    assert!(err.contains("that is not stopped: running"), "{err}");

    rt.ok(&["kill", &id, "KILL"]);
    wait_for_status(&rt, &id, "stopped");
    assert_eq!(rt.state(&id)["pid"], 0);
    let err = rt.fails(&["start", &id]);
    assert!(err.contains("cannot start a container that has stopped"), "{err}");
    let err = rt.fails(&["kill", &id, "KILL"]);
    assert!(err.contains("container not running"), "{err}");
    rt.ok(&["delete", &id]);
    leaks::assert_none(&id, b.path(), rt.root(), Some(&marker));
    let err = rt.fails(&["state", &id]);
    assert!(err.contains("container does not exist"), "{err}");
}

#[test]
fn delete_of_a_created_container_needs_no_force() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    let marker = unique_sleep();
    b.args(&["sleep", &marker]);
    let id = unique_id("created");
    rt.ok(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    rt.ok(&["delete", &id]);
    leaks::assert_none(&id, b.path(), rt.root(), Some(&marker));
}

#[test]
fn force_delete_kills_a_running_container_and_leaves_nothing() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    let marker = unique_sleep();
    // A process tree, so stragglers beyond the init are covered.
    b.sh(&format!("sleep {marker} & sleep {marker} & wait"));
    let id = unique_id("force");
    rt.ok(&["run", "--detach", "--bundle", b.path().to_str().unwrap(), &id]);
    wait_for_status(&rt, &id, "running");
    let deadline = Instant::now() + Duration::from_secs(5);
    // Two sleeps, and the shell whose script names them.
    while leaks::processes_with(&marker).len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(leaks::processes_with(&marker).len(), 3);
    assert!(!leaks::cgroup_dirs_named(&id).is_empty(), "the container has a cgroup");
    rt.ok(&["delete", "--force", &id]);
    leaks::assert_none(&id, b.path(), rt.root(), Some(&marker));
}

#[test]
fn kill_all_reaches_every_process() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    let marker = unique_sleep();
    // No pid namespace: killing the init would not take the others along.
    b.edit(|c| c["linux"]["namespaces"] = serde_json::json!([{ "type": "mount" }, { "type": "uts" }]));
    b.sh(&format!("sleep {marker} & exec sleep {marker}"));
    let id = unique_id("killall");
    rt.ok(&["run", "-d", "--bundle", b.path().to_str().unwrap(), &id]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while leaks::processes_with(&marker).len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let ps: Vec<i32> = serde_json::from_str(&rt.ok(&["ps", "--format", "json", &id])).unwrap();
    assert_eq!(ps.len(), 2, "ps lists both processes: {ps:?}");
    rt.ok(&["kill", "--all", &id, "KILL"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !leaks::processes_with(&marker).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(leaks::processes_with(&marker).is_empty());
    // A process past exit_mm has no cmdline yet may not be a zombie for a
    // while under load: the container is stopped once the init is.
    wait_for_status(&rt, &id, "stopped");
    rt.ok(&["delete", &id]);
    leaks::assert_none(&id, b.path(), rt.root(), Some(&marker));
}

#[test]
fn run_removes_the_container_when_it_exits() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.args(&["true"]);
    let id = unique_id("rm");
    assert_eq!(rt.run(&b, &id).0, 0);
    assert!(rt.ids().is_empty());
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

#[test]
fn an_id_in_use_is_refused() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.args(&["sleep", "1000"]);
    let id = unique_id("dup");
    rt.ok(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    let err = rt.fails(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    assert!(err.contains(&format!("container with id exists: {id}")), "{err}");
    let err = rt.fails(&["create", "--bundle", b.path().to_str().unwrap(), "../escape"]);
    assert!(err.contains("invalid container id"), "{err}");
}

#[test]
fn pause_and_resume_freeze_the_container() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.edit(|c| c["root"]["readonly"] = false.into());
    // Written then renamed, so a reader never sees a half-written file
    // (even when the freeze lands between the two).
    b.sh("i=0; while true; do i=$((i+1)); echo $i > /tmp/c; mv /tmp/c /tmp/count; sleep 0.01; done");
    let id = unique_id("pause");
    rt.ok(&["run", "-d", "--bundle", b.path().to_str().unwrap(), &id]);
    let count = b.rootfs().join("tmp/count");
    let read = || std::fs::read_to_string(&count).unwrap_or_default().trim().parse::<u64>().unwrap_or(0);
    std::thread::sleep(Duration::from_millis(200));
    rt.ok(&["pause", &id]);
    assert_eq!(rt.state(&id)["status"], "paused");
    let frozen = read();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(read(), frozen, "a paused container does not count");
    rt.ok(&["resume", &id]);
    assert_eq!(rt.state(&id)["status"], "running");
    let deadline = Instant::now() + Duration::from_secs(10);
    while read() <= frozen && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(read() > frozen, "a resumed container counts on");
    let err = rt.fails(&["resume", &id]);
    assert!(err.contains("container not paused"), "{err}");
    rt.ok(&["delete", "--force", &id]);
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

#[test]
fn state_survives_the_runtime_process() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.args(&["sleep", "1000"]);
    let id = unique_id("persist");
    rt.ok(&["run", "-d", "--bundle", b.path().to_str().unwrap(), &id]);
    // Each call is a fresh process reading the state under --root.
    let st = rt.state(&id);
    assert_eq!(st["id"], id.as_str());
    assert_eq!(st["bundle"], b.path().to_str().unwrap());
    assert!(rt.ok(&["list"]).contains(&id));
    let list: serde_json::Value = serde_json::from_str(&rt.ok(&["list", "--format", "json"])).unwrap();
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["owner"], "root");
    rt.ok(&["delete", "-f", &id]);
    assert_eq!(rt.ok(&["list", "--format", "json"]).trim(), "null");
}

#[test]
fn a_create_killed_half_way_leaves_nothing_delete_cannot_clean() {
    use std::os::unix::fs::PermissionsExt;
    let rt = runtime();
    let mut b = Bundle::busybox();
    let dir = tempfile::tempdir().unwrap();
    // The createRuntime hook's parent is the runtime: kill it mid-create.
    let hook = dir.path().join("kill-runtime");
    std::fs::write(&hook, "#!/bin/sh\nkill -9 $PPID\n").unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let marker = unique_sleep();
    b.edit(|c| c["hooks"] = serde_json::json!({ "createRuntime": [{ "path": hook }] }));
    b.args(&["sleep", &marker]);
    let id = unique_id("killed");
    let out = rt.exec(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    assert_eq!(out.status.code(), None, "the runtime was killed by a signal");
    // The init notices its runtime is gone and exits; the container reads
    // as stopped and still holds its cgroup.
    wait_for_status(&rt, &id, "stopped");
    assert!(!leaks::cgroup_dirs_named(&id).is_empty());
    rt.ok(&["delete", &id]);
    leaks::assert_none(&id, b.path(), rt.root(), Some(&marker));
}

#[test]
fn deleting_a_missing_container_fails_unless_forced() {
    let rt = runtime();
    let err = rt.fails(&["delete", "never-existed"]);
    assert!(err.contains("container does not exist"), "{err}");
    rt.ok(&["delete", "--force", "never-existed"]);
}

#[test]
fn foreground_run_forwards_signals_to_the_container() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.sh("trap 'echo got-term; exit 42' TERM; echo ready; while true; do sleep 0.05; done");
    let id = unique_id("sig");
    let out_file = tempfile::NamedTempFile::new().unwrap();
    let mut child = rt
        .cmd()
        .args(["run", "--bundle", b.path().to_str().unwrap(), &id])
        .stdout(out_file.reopen().unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(out_file.path()).unwrap().contains("ready") {
        assert!(Instant::now() < deadline, "the container never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(42), "the container's trap ran and its code came back");
    assert!(std::fs::read_to_string(out_file.path()).unwrap().contains("got-term"));
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

#[test]
fn shared_root_propagation_does_not_leak_mounts_to_the_host() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.edit(|c| c["linux"]["rootfsPropagation"] = "rshared".into());
    b.sh("mkdir -p /dev/x && mount -t tmpfs none /dev/x && grep -c ' / ' /proc/self/mountinfo");
    b.edit(|c| c["process"]["capabilities"]["bounding"].as_array_mut().unwrap().push("CAP_SYS_ADMIN".into()));
    b.edit(|c| c["process"]["capabilities"]["effective"].as_array_mut().unwrap().push("CAP_SYS_ADMIN".into()));
    b.edit(|c| c["process"]["capabilities"]["permitted"].as_array_mut().unwrap().push("CAP_SYS_ADMIN".into()));
    let id = unique_id("rshared");
    let before = std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().count();
    let (code, out, err) = rt.run(&b, &id);
    assert_eq!(code, 0, "{out}{err}");
    let after = std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().count();
    assert_eq!(before, after, "the host's mount table is unchanged");
    leaks::assert_none(&id, b.path(), rt.root(), None);
}
