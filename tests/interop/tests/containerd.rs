//! containerd 1.6 (started by each test, see src/containerd.rs) with
//! berth-runtime as the runc of its shims, driven with `ctr`.

use std::process::Command;

use berth_interop::containerd::{Containerd, V1_RUNTIME};
use berth_interop::{COUNTER, TYPED, TYPED_ANSWER, assert_frozen_then_thawed, read_counter, run, unique, wait_for};

/// `berth-runtime --root ROOT state ID` as JSON: proves the container is
/// berth's (runc's state files are a different format berth cannot load).
fn berth_state(c: &Containerd, root: &std::path::Path, id: &str) -> serde_json::Value {
    let out = run(Command::new(&c.runtime).arg("--root").arg(root).args(["state", id]), 30).ok("berth-runtime state");
    serde_json::from_str(&out.stdout).expect("state JSON")
}

#[test]
fn ctr_run_with_runc_binary_prints_the_echo() {
    let c = Containerd::start();
    let id = unique("c-echo");
    let out = c.run(&["--rm"], &id, &["echo", "hi"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "hi\n"), "{out:#?}");
    let out = c.run(&["--rm"], &unique("c-exit"), &["sh", "-c", "exit 3"]);
    assert_eq!(out.code, 3, "ctr exits with the task's code: {out:#?}");
    assert_eq!(c.ok(&["container", "ls", "-q"]), "", "--rm removed them");
    c.close();
}

#[test]
fn ctr_runtime_from_containerds_config() {
    let c = Containerd::start();
    let id = unique("c-v1");
    // No --runc-binary: the runtime comes from containerd's config.
    let mut cmd = c.ctr();
    cmd.args(["run", "-d", "--runtime", V1_RUNTIME, "--cgroup", &c.cgroup_of(&id)])
        .arg("--fifo-dir")
        .arg(&c.fifo_dir)
        .args([&c.registry.image, &id, "sleep", "1000"]);
    run(&mut cmd, 120).ok("ctr run --runtime io.containerd.runtime.v1.linux");
    let st = berth_state(&c, &c.v1_runtime_root(), &id);
    assert_eq!(st["status"], "running", "{st}");
    assert_eq!(st["pid"], c.task_pid(&id), "{st}");
    let out = c.exec(&id, "e1", &[], &["echo", "exec-via-v1"]);
    assert_eq!(out.stdout, "exec-via-v1\n", "{out:#?}");
    c.ok(&["task", "kill", "-s", "SIGKILL", &id]);
    wait_for("the task to stop", 30, || (c.task_status(&id).as_deref() == Some("STOPPED")).then_some(()));
    c.ok(&["task", "rm", &id]);
    c.ok(&["container", "rm", &id]);
    c.close();
}

#[test]
fn ctr_task_exec_and_kill() {
    let c = Containerd::start();
    let id = unique("c-exec");
    // The trap writes to /dev/shm (tmpfs): after `ctr task exec --user`,
    // creating files in the overlay rootfs fails with ENOENT on this host's
    // kernel, with runc as much as with berth.
    let script = "trap 'echo got-usr1 > /dev/shm/usr1' USR1; while true; do sleep 0.1; done";
    c.run(&["-d"], &id, &["sh", "-c", script]).ok("ctr run -d");
    assert_eq!(c.task_status(&id).as_deref(), Some("RUNNING"));
    let st = berth_state(&c, &c.runc_root.join(&c.namespace), &id);
    assert_eq!(st["status"], "running", "{st}");

    let out = c.exec(&id, "e1", &[], &["sh", "-c", "echo from-exec; exit 4"]);
    assert_eq!((out.code, out.stdout.as_str()), (4, "from-exec\n"), "{out:#?}");
    let out = c.exec(&id, "e2", &["--user", "65534"], &["id", "-u"]);
    assert_eq!(out.stdout, "65534\n", "{out:#?}");
    // The processes ps sees through the shim (berth-runtime ps --format json).
    let pid = c.task_pid(&id);
    let ps = c.ok(&["task", "ps", &id]);
    assert!(ps.lines().any(|l| l.split_whitespace().next() == Some(&pid.to_string())), "{ps}");

    c.ok(&["task", "kill", "-s", "SIGUSR1", &id]);
    wait_for("the USR1 trap", 30, || {
        std::fs::read_to_string(format!("/proc/{pid}/root/dev/shm/usr1")).ok().filter(|s| s == "got-usr1\n")
    });
    c.ok(&["task", "kill", "-s", "SIGKILL", &id]);
    wait_for("the task to stop", 30, || (c.task_status(&id).as_deref() == Some("STOPPED")).then_some(()));
    let out = c.run_ctr(&["task", "rm", &id]);
    assert!(out.stderr.contains("exit code 137"), "{out:#?}");
    c.ok(&["container", "rm", &id]);
    assert!(!c.runc_root.join(&c.namespace).join(&id).exists(), "berth's state deleted");
    c.close();
}

#[test]
fn ctr_task_pause_and_resume() {
    let c = Containerd::start();
    let id = unique("c-pause");
    c.run(&["-d"], &id, &["sh", "-c", COUNTER]).ok("ctr run -d");
    let pid = c.task_pid(&id);
    wait_for("the counter", 30, || read_counter(pid));
    c.ok(&["task", "pause", &id]);
    assert_eq!(c.task_status(&id).as_deref(), Some("PAUSED"));
    let st = berth_state(&c, &c.runc_root.join(&c.namespace), &id);
    assert_eq!(st["status"], "paused", "{st}");
    assert_frozen_then_thawed(pid, || {
        c.ok(&["task", "resume", &id]);
    });
    assert_eq!(c.task_status(&id).as_deref(), Some("RUNNING"));
    c.ok(&["task", "kill", "-s", "SIGKILL", &id]);
    wait_for("the task to stop", 30, || (c.task_status(&id).as_deref() == Some("STOPPED")).then_some(()));
    c.ok(&["task", "rm", &id]);
    c.ok(&["container", "rm", &id]);
    c.close();
}

#[test]
fn ctr_task_metrics_reads_the_limits_berth_set() {
    let c = Containerd::start();
    let id = unique("c-metrics");
    c.run(&["-d", "--memory-limit", "50331648"], &id, &["sleep", "1000"]).ok("ctr run -d --memory-limit");
    let out = c.ok(&["task", "metrics", "--format", "json", &id]);
    let m: serde_json::Value = serde_json::from_str(&out).expect("metrics JSON");
    assert_eq!(m["memory"]["usage"]["limit"], 50331648u64, "{out}");
    assert!(m["memory"]["usage"]["usage"].as_u64().unwrap_or(0) > 0, "{out}");
    assert_eq!(m["pids"]["current"], 1, "{out}");
    assert!(m["cpu"]["usage"]["total"].as_u64().unwrap_or(0) > 0, "{out}");
    c.ok(&["task", "kill", "-s", "SIGKILL", &id]);
    wait_for("the task to stop", 30, || (c.task_status(&id).as_deref() == Some("STOPPED")).then_some(()));
    c.ok(&["task", "rm", &id]);
    c.ok(&["container", "rm", &id]);
    c.close();
}

#[test]
fn ctr_run_t_and_exec_t_get_a_terminal() {
    let c = Containerd::start();
    let id = unique("c-tty");
    let mut cmd = c.ctr();
    cmd.args(["run", "-t", "--rm"]).args(c.berth_flags(&id)).args([&c.registry.image, &id, "sh"]);
    let (code, out) = berth_testkit::run_on_pty(&mut cmd, TYPED.as_bytes(), std::time::Duration::from_secs(120));
    assert!(out.contains("/dev/pts/0") && out.contains(TYPED_ANSWER), "the shell answered on a pty: {out}");
    assert_eq!(code, Some(7), "{out}");

    let id = unique("c-exec-tty");
    c.run(&["-d"], &id, &["sleep", "1000"]).ok("ctr run -d");
    let mut cmd = c.task_exec();
    cmd.args(["-t", "--exec-id", "t1", &id, "sh"]);
    let (code, out) = berth_testkit::run_on_pty(&mut cmd, TYPED.as_bytes(), std::time::Duration::from_secs(120));
    assert!(out.contains("/dev/pts/0") && out.contains(TYPED_ANSWER), "exec -t answered on a pty: {out}");
    assert_eq!(code, Some(7), "{out}");
    c.ok(&["task", "kill", "-s", "SIGKILL", &id]);
    wait_for("the task to stop", 30, || (c.task_status(&id).as_deref() == Some("STOPPED")).then_some(()));
    c.ok(&["task", "rm", &id]);
    c.ok(&["container", "rm", &id]);
    c.close();
}
