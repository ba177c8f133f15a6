//! What berthd asks of the engine for the kubelet: containers logging in
//! the CRI format (`--log-driver cri --log-opt path=...`), read back by
//! `berth logs`; `Engine::reopen_log` after a rotation; and
//! `Engine::exec_sync` (output, exit code, timeout).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_engine::Error;
use berth_engine::engine::Engine;
use berth_testkit::workspace_bin;
use common::Berth;

/// The engine the CLI of `b` uses, in this process.
fn engine(b: &Berth) -> Engine {
    Engine {
        root: b.dir.path().join("root"),
        runroot: b.dir.path().join("run"),
        runtime: workspace_bin("berth-runtime"),
        shim: workspace_bin("berth-shim"),
        cli: None,
        // Only for containers it creates; these tests create none through it.
        cgroup_parent: "/berth-cri-logs-test".into(),
    }
}

fn cri_log(b: &Berth, name: &str) -> PathBuf {
    b.dir.path().join("pods").join(name).join("0.log")
}

fn run_cri(b: &Berth, name: &str, script: &str) {
    let opt = format!("path={}", cri_log(b, name).display());
    b.ok(&[
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "none",
        "--log-driver",
        "cri",
        "--log-opt",
        &opt,
        &b.image,
        "sh",
        "-c",
        script,
    ]);
}

fn sleeper(b: &Berth, name: &str) {
    b.ok(&["run", "-d", "--name", name, "--network", "none", &b.image, "sleep", "300"]);
}

/// Pids of processes whose command line holds `needle`.
fn processes_with(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(needle))
        })
        .collect()
}

#[test]
fn logs_reads_a_cri_format_container() {
    let b = Berth::new();
    run_cri(&b, "kube", "echo hello; echo oops >&2; printf end");
    assert_eq!(b.ok(&["wait", "kube"]).trim(), "0");
    let text = std::fs::read_to_string(cri_log(&b, "kube")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines.iter().any(|l| l.ends_with(" stdout F hello")), "{text}");
    assert!(lines.iter().any(|l| l.ends_with(" stderr F oops")), "{text}");
    assert!(lines[2].ends_with(" stdout P end"), "{text}");
    let out = b.cmd(&["logs", "kube"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\nend");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    assert_eq!(b.ok(&["logs", "--tail", "1", "kube"]), "end");
    let stamped = b.ok(&["logs", "--timestamps", "kube"]);
    let first = stamped.lines().next().unwrap();
    let (time, rest) = first.split_once(' ').unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok() && rest == "hello", "{stamped}");
    assert_eq!(b.inspect("kube")["LogPath"], cri_log(&b, "kube").display().to_string());
}

#[test]
fn reopen_log_starts_a_new_file_and_refuses_a_stopped_container() {
    let b = Berth::new();
    run_cri(&b, "rot", "i=0; while :; do echo line $i; i=$((i+1)); sleep 0.02; done");
    let e = engine(&b);
    let path = cri_log(&b, "rot");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&path).unwrap_or_default().lines().count() < 2 {
        assert!(Instant::now() < deadline, "nothing logged");
        std::thread::sleep(Duration::from_millis(20));
    }
    let rotated = path.with_extension("log.1");
    std::fs::rename(&path, &rotated).unwrap();
    e.reopen_log("rot").unwrap();
    assert!(path.exists(), "the new file is there when reopen_log returns");
    while std::fs::read_to_string(&path).unwrap().lines().count() < 2 {
        assert!(Instant::now() < deadline, "nothing logged after the reopen");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A paused container's shim still writes its log: it reopens.
    b.ok(&["pause", "rot"]);
    std::fs::rename(&path, path.with_extension("log.2")).unwrap();
    e.reopen_log("rot").unwrap();
    assert!(path.exists(), "reopened while paused");
    b.ok(&["unpause", "rot"]);
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.lines().all(|l| l.contains(" stdout F line ")), "{old}");
    b.ok(&["stop", "-t", "1", "rot"]);
    let err = e.reopen_log("rot").unwrap_err();
    assert!(matches!(err, Error::NotRunning(_)), "{err:?}");
    assert!(err.to_string().contains("is not running"), "{err}");
}

#[test]
fn exec_sync_returns_output_and_exit_code() {
    let b = Berth::new();
    sleeper(&b, "box");
    let e = engine(&b);
    let cmd = |s: &[&str]| s.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let out = e.exec_sync("box", &cmd(&["sh", "-c", "echo out; echo err >&2; exit 3"]), Duration::ZERO).unwrap();
    assert_eq!((out.stdout.as_slice(), out.stderr.as_slice(), out.exit_code), (&b"out\n"[..], &b"err\n"[..], 3));
    let out = e.exec_sync("box", &cmd(&["/no/such/command"]), Duration::from_secs(10)).unwrap();
    assert_eq!(out.exit_code, 127, "{}", String::from_utf8_lossy(&out.stderr));
    let none = e.exec_sync("box", &[], Duration::ZERO).unwrap_err().to_string();
    assert!(none.contains("no command given"), "{none}");
    // More than the cap of one stream: the start is kept, the rest read
    // and dropped (the command does not block on a full pipe).
    let big = e.exec_sync("box", &cmd(&["sh", "-c", "head -c 17000000 /dev/zero; echo done >&2"]), Duration::ZERO);
    let big = big.unwrap();
    assert_eq!((big.stdout.len(), big.stderr.as_slice(), big.exit_code), (16 << 20, &b"done\n"[..], 0));
}

#[test]
fn exec_sync_kills_the_command_and_its_children_at_the_timeout() {
    let b = Berth::new();
    sleeper(&b, "slow");
    let e = engine(&b);
    let (a, c) = (berth_testkit::unique_sleep(), berth_testkit::unique_sleep());
    let script = format!("sleep {a} & sleep {c}");
    let started = Instant::now();
    let err = e.exec_sync("slow", &["sh".into(), "-c".into(), script], Duration::from_secs(1)).unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, Error::ExecTimeout { .. }), "{err:?}");
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(8), "took {took:?}");
    for s in [&a, &c] {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !processes_with(&format!("sleep {s}")).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(processes_with(&format!("sleep {s}")), Vec::<i32>::new(), "sleep {s} was left behind");
    }
    let out = e.exec_sync("slow", &["true".into()], Duration::from_secs(5)).unwrap();
    assert_eq!(out.exit_code, 0, "the container still runs");
}
