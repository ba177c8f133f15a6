//! Rootless podman (a throwaway user with subordinate ids, see
//! `Podman::start_rootless`) with berth-runtime: podman runs the runtime as
//! uid 0 of the user's namespace with XDG_RUNTIME_DIR set, where berth
//! keeps its state (runc's rule) and runs without cgroups (none are
//! delegated on this cgroup v1 host). So pause, stats and limits are not
//! tested rootless: podman itself refuses them without cgroups.
//!
//! Timing: an attached rootless `podman run` returns only after podman's
//! 20 s "Exceeded conmon timeout waiting for container to exit" here, with
//! the right output and exit code. It is podman's own wait on this host,
//! not the runtime's: measured side by side in the same setup, runc takes
//! the same 20.2 s as berth-runtime (conmon writes the exit file and exits
//! at once; podman 4.3 rootless only notices after its timeout). Detached
//! runs, exec and stop are not affected.

use berth_interop::podman::Podman;
use berth_interop::{TYPED, TYPED_ANSWER, unique};

#[test]
fn rootless_podman_runs_execs_and_gets_a_pty() {
    let p = Podman::start_rootless();
    let out = p.run(&["--rm"], &["sh", "-c", "echo hi; id -u; cat /proc/self/uid_map"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(&lines[..2], ["hi", "0"], "{out:#?}");
    assert!(lines.len() >= 3 && lines[2].split_whitespace().nth(1) != Some("0"), "a user namespace: {out:#?}");

    let name = unique("p-rootless");
    let script = "trap 'exit 0' TERM; while true; do sleep 0.1; done";
    p.run(&["-d", "--name", &name], &["sh", "-c", script]).ok("podman run -d");
    let out = p.cmd_run(&["exec", &name, "sh", "-c", "echo from-exec; exit 5"]);
    assert_eq!((out.code, out.stdout.as_str()), (5, "from-exec\n"), "{out:#?}");
    p.cmd_ok(&["stop", "--time", "20", &name]);
    assert_eq!(p.inspect(&name, "{{.State.Status}} {{.State.ExitCode}}"), "exited 0");
    p.cmd_ok(&["rm", &name]);

    let mut cmd = p.cmd();
    cmd.args(["run", "-it", "--rm", &p.registry.image, "sh"]);
    let (code, out) = berth_testkit::run_on_pty(&mut cmd, TYPED.as_bytes(), std::time::Duration::from_secs(120));
    assert!(out.contains("/dev/pts/0") && out.contains(TYPED_ANSWER), "the shell answered on a pty: {out}");
    assert_eq!(code, Some(7), "{out}");
    p.close();
}
