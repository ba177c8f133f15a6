//! A container the kernel's OOM killer ended shows `State.OOMKilled: true`
//! in `inspect`, as docker's does (the shim reads the cgroup's OOM-kill
//! count before the runtime's `delete` removes the cgroup); one killed
//! with SIGKILL from outside shows false, with the same 137; a start
//! clears it.

mod common;

use common::{Berth, leftovers};

/// Fills 8 MB of memory and more: busybox `tail` keeps the last "line" of
/// /dev/zero, which never ends. Once only, so that a start runs on.
const FILL_ONCE: &str = "test -e /filled && exec sleep 300; touch /filled; tail /dev/zero";

fn state(b: &Berth, name: &str) -> serde_json::Value {
    b.inspect(name)["State"].clone()
}

#[test]
fn memory_limit_kill_is_reported_as_oom_killed_and_a_start_clears_it() {
    let b = Berth::new();
    b.ok(&["pull", "-q", &b.image]);
    let out = b.cmd(&["run", "--name", "filler", "--network", "none", "-m", "8m", &b.image, "sh", "-c", FILL_ONCE]);
    assert_eq!(out.status.code(), Some(137), "{}", String::from_utf8_lossy(&out.stderr));
    let s = state(&b, "filler");
    assert_eq!((s["Status"].as_str(), s["ExitCode"].as_i64()), (Some("exited"), Some(137)), "{s}");
    assert_eq!(s["OOMKilled"], true, "the memory cgroup's OOM killer ended it: {s}");

    b.ok(&["start", "filler"]);
    let s = state(&b, "filler");
    assert_eq!((s["Running"].as_bool(), s["OOMKilled"].as_bool()), (Some(true), Some(false)), "{s}");
    b.ok(&["rm", "-f", "filler"]);
    assert!(leftovers(b.dir.path()).is_empty(), "{:?}", leftovers(b.dir.path()));
}

#[test]
fn sigkill_from_outside_is_not_an_oom_kill() {
    let b = Berth::new();
    b.ok(&["pull", "-q", &b.image]);
    b.ok(&["run", "-d", "--name", "sleeper", "--network", "none", "-m", "8m", &b.image, "sleep", "300"]);
    b.ok(&["kill", "sleeper"]);
    assert_eq!(b.ok(&["wait", "sleeper"]).trim(), "137");
    let s = state(&b, "sleeper");
    assert_eq!((s["ExitCode"].as_i64(), s["OOMKilled"].as_bool()), (Some(137), Some(false)), "{s}");
    b.ok(&["rm", "sleeper"]);
}

/// The shim reads the cgroup the bundle names, whichever runtime made it.
#[test]
fn an_oom_kill_under_runc_is_seen_too() {
    let b = Berth::new();
    let runc = std::path::Path::new("/usr/sbin/runc");
    if !runc.exists() {
        eprintln!("skipped: no runc at {}", runc.display());
        return;
    }
    let run = |args: &[&str]| {
        let mut c = b.command_with_runtime(runc);
        c.args(args);
        berth_testkit::output_via_files(&mut c)
    };
    let out = run(&["run", "--name", "filler", "--network", "none", "-m", "8m", &b.image, "sh", "-c", FILL_ONCE]);
    assert_eq!(out.status.code(), Some(137), "{}", String::from_utf8_lossy(&out.stderr));
    let inspect = run(&["inspect", "filler"]);
    let s = serde_json::from_slice::<serde_json::Value>(&inspect.stdout).unwrap()[0]["State"].clone();
    assert_eq!((s["ExitCode"].as_i64(), s["OOMKilled"].as_bool()), (Some(137), Some(true)), "{s}");
    assert!(run(&["rm", "filler"]).status.success());
}
