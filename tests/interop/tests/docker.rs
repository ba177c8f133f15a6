//! dockerd 20.10 (started by each test, see src/docker.rs) with
//! `--add-runtime berth=<berth-runtime>`, driven with the docker CLI:
//! `docker run --runtime berth ...`.

use berth_interop::docker::Docker;
use berth_interop::{COUNTER, TYPED, TYPED_ANSWER, assert_frozen_then_thawed, read_counter, unique, wait_for};

#[test]
fn docker_run_rm_prints_the_echo() {
    let d = Docker::start();
    let out = d.run(&["--rm"], &["echo", "hi"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "hi\n"), "{out:#?}");
    assert_eq!(d.run(&["--rm"], &["sh", "-c", "exit 3"]).code, 3);
    // berth's error, from its --log-format json log, in docker's message.
    let out = d.run(&["--rm"], &["/no/such/program"]);
    assert_eq!(out.code, 127, "{out:#?}");
    assert!(out.stderr.contains("/no/such/program") && out.stderr.contains("no such file or directory"), "{out:#?}");
    assert_eq!(d.ok(&["ps", "-aq"]), "");
    d.close();
}

#[test]
fn docker_detached_container_exec_stop_rm() {
    let d = Docker::start();
    let name = unique("d-detached");
    let script = "trap 'exit 0' TERM; while true; do sleep 0.1; done";
    d.run(&["-d", "--name", &name], &["sh", "-c", script]).ok("docker run -d");
    assert_eq!(d.inspect(&name, "{{.HostConfig.Runtime}} {{.State.Status}}"), "berth running");
    let out = d.cmd_run(&["exec", &name, "sh", "-c", "echo from-exec; cat /proc/1/cmdline | tr '\\0' ' '"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.stdout.starts_with("from-exec\nsh -c trap"), "{out:#?}");
    assert_eq!(d.cmd_run(&["exec", &name, "sh", "-c", "exit 5"]).code, 5, "exec's exit code");
    assert_eq!(d.cmd_run(&["exec", "--user", "65534", &name, "id", "-u"]).stdout, "65534\n");
    // `docker top` runs `berth-runtime ps --format json` through the shim.
    let top = d.ok(&["top", &name]);
    assert!(top.contains("while true"), "{top}");
    d.ok(&["stop", "--time", "20", &name]);
    assert_eq!(d.inspect(&name, "{{.State.Status}} {{.State.ExitCode}}"), "exited 0", "SIGTERM reached the trap");
    d.ok(&["rm", &name]);
    d.close();
}

#[test]
fn docker_run_it_gets_a_real_pty() {
    let d = Docker::start();
    let mut cmd = d.docker();
    cmd.args(["run", "-it", "--rm", "--runtime", "berth", "--network", "none", &d.registry.image, "sh"]);
    let (code, out) = berth_testkit::run_on_pty(&mut cmd, TYPED.as_bytes(), std::time::Duration::from_secs(120));
    assert!(out.contains("/dev/pts/0") && out.contains(TYPED_ANSWER), "the shell answered on a pty: {out}");
    assert_eq!(code, Some(7), "{out}");
    d.close();
}

#[test]
fn docker_memory_limit_is_enforced_by_the_oom_killer() {
    let d = Docker::start();
    let out = d.run(&["--rm", "--memory", "32m"], &["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]);
    assert_eq!(out.stdout, "33554432\n", "{out:#?}");
    let name = unique("d-oom");
    let filler = "x=0123456789abcdef; while true; do x=$x$x; done";
    let out = d.run(&["--name", &name, "--memory", "32m", "--memory-swap", "32m"], &["sh", "-c", filler]);
    assert_eq!(out.code, 137, "killed by SIGKILL: {out:#?}");
    assert_eq!(d.inspect(&name, "{{.State.OOMKilled}} {{.State.ExitCode}}"), "true 137");
    d.ok(&["rm", &name]);
    d.close();
}

#[test]
fn docker_stats_reads_the_containers_cgroup() {
    let d = Docker::start();
    let name = unique("d-stats");
    d.run(&["-d", "--name", &name, "--memory", "48m"], &["sleep", "1000"]).ok("docker run -d");
    let out = d.ok(&["stats", "--no-stream", "--format", "{{json .}}", &name]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("stats JSON");
    assert_eq!(v["PIDs"], "1", "{out}");
    let mem = v["MemUsage"].as_str().unwrap();
    assert!(mem.ends_with("/ 48MiB") && !mem.starts_with("0B"), "usage and the limit berth wrote: {out}");
    d.ok(&["rm", "--force", &name]);
    d.close();
}

#[test]
fn docker_pause_freezes_and_unpause_thaws() {
    let d = Docker::start();
    let name = unique("d-pause");
    d.run(&["-d", "--name", &name], &["sh", "-c", COUNTER]).ok("docker run -d");
    let pid: i32 = d.inspect(&name, "{{.State.Pid}}").parse().expect("pid");
    wait_for("the counter", 30, || read_counter(pid));
    d.ok(&["pause", &name]);
    assert_eq!(d.inspect(&name, "{{.State.Status}} {{.State.Paused}}"), "paused true");
    assert_frozen_then_thawed(pid, || {
        d.ok(&["unpause", &name]);
    });
    assert_eq!(d.inspect(&name, "{{.State.Status}}"), "running");
    d.ok(&["rm", "--force", &name]);
    d.close();
}
