//! podman 4.3 with berth-runtime as its OCI runtime (`podman --runtime
//! <berth-runtime>`), as root. See src/podman.rs for the configuration and
//! what is (not) isolated.
//!
//! Rootless podman is tested in podman_rootless.rs.

use berth_interop::podman::{BERTH_DEFAULT_ROOT, Podman};
use berth_interop::{COUNTER, TYPED, TYPED_ANSWER, assert_frozen_then_thawed, unique, wait_for};

#[test]
fn podman_run_rm_prints_the_echo() {
    let p = Podman::start();
    let out = p.run(&["--rm"], &["echo", "hi"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "hi\n"), "{out:#?}");
    assert_eq!(p.cmd_ok(&["ps", "-aq"]), "", "--rm removed the container");
    p.close();
}

#[test]
fn podman_reports_exit_codes_and_runtime_errors() {
    let p = Podman::start();
    assert_eq!(p.run(&["--rm"], &["sh", "-c", "exit 3"]).code, 3);
    // The runtime's error reaches podman through berth's --log-format=json
    // log, and podman maps "no such file" to 127 as it does for runc.
    let out = p.run(&["--rm"], &["/no/such/program"]);
    assert_eq!(out.code, 127, "{out:#?}");
    assert!(out.stderr.contains("/no/such/program") && out.stderr.contains("no such file or directory"), "{out:#?}");
    assert_eq!(p.cmd_ok(&["ps", "-aq"]), "");
    p.close();
}

#[test]
fn podman_detached_container_exec_stop_rm() {
    let p = Podman::start();
    let name = unique("p-detached");
    // pid 1 ignores SIGTERM unless it traps it: this one exits 0 on it, so
    // the exit code shows that `stop` delivered SIGTERM through the runtime.
    let script = "trap 'exit 0' TERM; while true; do sleep 0.1; done";
    let id = p.run(&["-d", "--name", &name], &["sh", "-c", script]).ok("podman run -d").stdout;
    let id = id.trim();
    assert_eq!(id.len(), 64, "run -d prints the id: {id}");
    assert_eq!(p.inspect(&name, "{{.State.Status}}"), "running");
    assert!(
        std::path::Path::new(BERTH_DEFAULT_ROOT).join(id).join("state.json").exists(),
        "berth-runtime holds the state"
    );

    let out = p.cmd_run(&["exec", &name, "sh", "-c", "echo from-exec; cat /proc/1/cmdline | tr '\\0' ' '"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.stdout.starts_with("from-exec\nsh -c trap"), "{out:#?}");
    assert_eq!(p.cmd_run(&["exec", &name, "sh", "-c", "exit 5"]).code, 5, "exec's exit code");
    let out = p.cmd_run(&["exec", "--user", "65534", &name, "id", "-u"]);
    assert_eq!(out.stdout, "65534\n", "{out:#?}");

    p.cmd_ok(&["stop", "--time", "20", &name]);
    assert_eq!(p.inspect(&name, "{{.State.Status}}"), "exited");
    assert_eq!(p.inspect(&name, "{{.State.ExitCode}}"), "0", "SIGTERM reached the trap");
    p.cmd_ok(&["rm", &name]);
    assert!(!std::path::Path::new(BERTH_DEFAULT_ROOT).join(id).exists(), "rm deleted the runtime state");
    p.close();
}

#[test]
fn podman_run_it_gets_a_real_pty() {
    let p = Podman::start();
    let cg = p.cgroup.path();
    let mut cmd = p.cmd();
    cmd.args(["run", "-it", "--rm", "--cgroup-parent", &cg, &p.registry.image, "sh"]);
    let (code, out) = berth_testkit::run_on_pty(&mut cmd, TYPED.as_bytes(), std::time::Duration::from_secs(120));
    assert!(out.contains("/dev/pts/0"), "the shell's stdin is a pty in the container: {out}");
    assert!(out.contains(TYPED_ANSWER), "the shell answered what was typed: {out}");
    assert_eq!(code, Some(7), "{out}");
    p.close();
}

#[test]
fn podman_pause_freezes_and_unpause_thaws() {
    let p = Podman::start();
    let name = unique("p-pause");
    p.run(&["-d", "--name", &name], &["sh", "-c", COUNTER]).ok("run -d");
    let pid = p.pid(&name);
    wait_for("the counter", 30, || berth_interop::read_counter(pid));
    p.cmd_ok(&["pause", &name]);
    assert_eq!(p.inspect(&name, "{{.State.Status}}"), "paused");
    assert_frozen_then_thawed(pid, || {
        p.cmd_ok(&["unpause", &name]);
    });
    assert_eq!(p.inspect(&name, "{{.State.Status}}"), "running");
    p.cmd_ok(&["rm", "--force", "--time", "0", &name]);
    p.close();
}

#[test]
fn podman_stats_no_stream_reads_the_containers_cgroup() {
    let p = Podman::start();
    let name = unique("p-stats");
    p.run(&["-d", "--name", &name, "--memory", "48m"], &["sleep", "1000"]).ok("run -d");
    let out = p.cmd_ok(&["stats", "--no-stream", "--format", "json", &name]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("stats JSON");
    let s = &v[0];
    assert_eq!(s["name"], name.as_str(), "{out}");
    assert_eq!(s["pids"], "1", "{out}");
    let mem = s["mem_usage"].as_str().unwrap();
    // "780.3kB / 50.33MB": usage above zero, and the limit berth wrote.
    assert!(mem.ends_with("/ 50.33MB") && !mem.starts_with("0B"), "{out}");
    p.cmd_ok(&["rm", "--force", "--time", "0", &name]);
    p.close();
}

#[test]
fn podman_memory_limit_is_enforced_by_the_oom_killer() {
    let p = Podman::start();
    // A string that doubles until it no longer fits in 32 MiB, in a child
    // shell; the container's shell then reports how the child ended and
    // the cgroup's OOM-kill count.
    let filler = "x=0123456789abcdef; while true; do x=$x$x; done";
    let script = format!(
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; sh -c '{filler}'; echo child=$?; \
         grep oom_kill /sys/fs/cgroup/memory/memory.oom_control"
    );
    let out = p.run(&["--rm", "--memory", "32m", "--memory-swap", "32m"], &["sh", "-c", &script]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.stdout.starts_with("33554432\nchild=137\n"), "the limit berth wrote; SIGKILL: {out:#?}");
    assert!(out.stdout.contains("oom_kill 1"), "the OOM killer did it: {out:#?}");
    // The container's own init as the victim: podman reports 137. (podman
    // 4.3's conmon does not see v1 OOM events here, with runc either, so
    // .State.OOMKilled stays false; docker's test checks that flag.)
    let out = p.run(&["--rm", "--memory", "32m", "--memory-swap", "32m"], &["sh", "-c", filler]);
    assert_eq!(out.code, 137, "killed by SIGKILL: {out:#?}");
    p.close();
}

#[test]
fn podman_pids_limit_stops_forks() {
    let p = Podman::start();
    let script = "cat /sys/fs/cgroup/pids/pids.max; \
                  for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 1000 & done; \
                  echo running $(ls /proc | grep -c '^[0-9]')";
    let out = p.run(&["--rm", "--pids-limit", "6"], &["sh", "-c", script]);
    assert!(out.stdout.starts_with("6\n"), "pids.max inside: {out:#?}");
    assert!(out.stderr.contains("can't fork"), "forks beyond the limit fail: {out:#?}");
    p.close();
}

#[test]
fn podman_cap_drop_all_leaves_no_capability() {
    let p = Podman::start();
    let caps = "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status";
    let default = p.run(&["--rm"], &["sh", "-c", caps]).ok("run").stdout;
    assert!(default.contains("CapEff:\t00000000a80425fb"), "podman's default set: {default}");
    let out = p.run(&["--rm", "--cap-drop", "ALL"], &["sh", "-c", caps]).ok("run --cap-drop ALL").stdout;
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert!(out.contains(&format!("{set}:\t0000000000000000")), "{set} empty: {out}");
    }
    let out = p.run(&["--rm", "--cap-drop", "ALL"], &["chown", "65534", "/tmp"]);
    assert_ne!(out.code, 0, "chown without CAP_CHOWN fails: {out:#?}");
    p.close();
}

#[test]
fn podman_read_only_rootfs() {
    let p = Podman::start();
    let out = p.run(&["--rm", "--read-only"], &["sh", "-c", "touch /x; touch /tmp/y && echo tmp-writable"]);
    assert!(out.stderr.contains("touch: /x: Read-only file system"), "{out:#?}");
    assert_eq!(out.stdout, "tmp-writable\n", "podman's tmpfs on /tmp: {out:#?}");
    let out = p.run(&["--rm"], &["sh", "-c", "touch /x && echo rootfs-writable"]);
    assert_eq!(out.stdout, "rootfs-writable\n", "{out:#?}");
    p.close();
}
