//! berth-runtime under the real high-level runtimes: podman, containerd
//! (driven with `ctr`) and dockerd (driven with the `docker` CLI).
//!
//! Every test starts what it needs itself, in its own temporary directory:
//! a registry (Debian's `docker-registry`) on a free loopback port serving
//! a busybox-static image built with umoci and pushed with skopeo, and the
//! client's daemon with its own root, state dir and sockets. Nothing
//! system-wide is used or changed, with the exceptions each client module
//! names (paths the clients hard-code).
//!
//! Cleanup runs on drop, so also when a test fails: containers removed
//! through the client, daemons stopped by the PID the test started, any
//! process still running with the test's scratch path on its command line
//! killed by PID, mounts under the scratch dir detached, the test's cgroup
//! parent removed, the scratch dir deleted.
//!
//! The tests need root and the clients (scripts/setup.sh installs them).

pub mod cgroup;
pub mod containerd;
pub mod docker;
pub mod podman;
pub mod proc;
pub mod registry;
pub mod scratch;

use std::path::PathBuf;

pub use proc::{Out, run};
pub use registry::Registry;
pub use scratch::Scratch;

/// The berth-runtime binary under test: `$BERTH_RUNTIME`, else the one
/// cargo built next to this test binary (target/<profile>/berth-runtime).
/// Refuses a binary older than the runtime's sources, so a test never
/// silently runs yesterday's runtime.
pub fn berth_runtime() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_RUNTIME") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test binary>
    let bin = exe.parent().and_then(|d| d.parent()).expect("target/<profile>").join("berth-runtime");
    assert!(
        bin.exists(),
        "{} not found: run `cargo build -p berth-runtime` first (or set BERTH_RUNTIME)",
        bin.display()
    );
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).expect("binary mtime");
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    for src in ["crates/berth-runtime/src", "crates/berth-cgroups/src"] {
        if let Some(newer) = newest(&repo.join(src)).filter(|(t, _)| *t > built) {
            panic!(
                "{} is older than {}: run `cargo build -p berth-runtime` first (or set BERTH_RUNTIME)",
                bin.display(),
                newer.1.display()
            );
        }
    }
    bin
}

fn newest(dir: &std::path::Path) -> Option<(std::time::SystemTime, PathBuf)> {
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let cand = if p.is_dir() { newest(&p) } else { e.metadata().ok()?.modified().ok().map(|t| (t, p)) };
        if let Some(c) = cand
            && best.as_ref().is_none_or(|b| c.0 > b.0)
        {
            best = Some(c);
        }
    }
    best
}

/// Panics with a clear message unless `program` is on PATH.
pub fn require_program(program: &str, package: &str) {
    let found =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file())).unwrap_or(false);
    assert!(found, "{program} not found: install Debian's {package} (scripts/setup.sh does)");
}

/// A name no other test (or test run) uses: `berth-iop-<pid>-<n>-<what>`.
pub fn unique(what: &str) -> String {
    berth_testkit::unique_id(&format!("berth-iop-{what}"))
}

/// Polls `f` until it returns Some, for at most `secs` seconds.
pub fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out after {secs}s waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The shell loop the pause tests run: a counter in /tmp/count that goes
/// up as long as the container is not frozen.
pub const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done";

/// Reads the counter of [`COUNTER`] through the host's view of the
/// container's root (/proc/PID/root), which works while it is frozen.
pub fn read_counter(pid: i32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/root/tmp/count")).ok()?.trim().parse().ok()
}

/// Asserts that the container whose init is `pid` is frozen (its counter
/// stands still across a pause long enough for many increments), then
/// runs `resume` and asserts the counter moves again.
pub fn assert_frozen_then_thawed(pid: i32, resume: impl FnOnce()) {
    let before = wait_for("the counter file", 30, || read_counter(pid));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let after = read_counter(pid);
    assert_eq!(after, Some(before), "the counter moved while the container was paused");
    let state = proc::proc_state(pid);
    assert!(state.starts_with('S') || state.starts_with('D'), "paused init is in state {state}");
    resume();
    wait_for("the counter to move after resume", 30, || read_counter(pid).filter(|n| *n > before));
}

/// Text that a busybox shell prints for `echo typed-$((6*7))`: present in
/// a pty's output only if the shell in the container evaluated the input
/// (the echoed input itself shows the unevaluated `$((6*7))`).
pub const TYPED: &str = "tty; echo typed-$((6*7)); exit 7\n";
pub const TYPED_ANSWER: &str = "typed-42";

/// Like [`wait_for`], but returns None instead of panicking on timeout.
pub fn wait_for_opt<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
