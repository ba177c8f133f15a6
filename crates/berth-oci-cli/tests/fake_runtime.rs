//! The wrapper against a fake runtime: a script that records its argv
//! (and stdin) and replies with canned stdout, stderr, log lines and exit
//! code, so every verb's command line and every error path is checked
//! without a container.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use berth_oci_cli::{CreateOpts, Error, ExecOpts, Io, LogFormat, Runtime};

struct Fake {
    dir: tempfile::TempDir,
}

const SCRIPT: &str = r#"#!/bin/sh
d="$(dirname "$0")"
printf '%s\n' "$@" > "$d/argv"
prev=""
for a in "$@"; do
    if [ "$prev" = "--log" ] && [ -f "$d/log" ]; then cat "$d/log" > "$a"; fi
    if [ "$prev" = "--pid-file" ] && [ -f "$d/pid" ]; then cat "$d/pid" > "$a"; fi
    prev="$a"
done
if [ -f "$d/read-stdin" ]; then cat > "$d/stdin"; fi
[ -f "$d/stdout" ] && cat "$d/stdout"
[ -f "$d/stderr" ] && cat "$d/stderr" >&2
exit "$(cat "$d/code" 2>/dev/null || echo 0)"
"#;

/// The script, written before any test spawns it; `$0` is the link, so
/// its directory is the calling test's.
fn script() -> &'static Path {
    static SCRIPT_PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    SCRIPT_PATH.get_or_init(|| {
        // Cargo's own scratch directory for integration tests: nothing to
        // clean up, and renamed into place so no writer holds it open.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        // A compile-time path: missing where the binary runs elsewhere
        // (the v2 guest's fresh tmpfs root).
        std::fs::create_dir_all(dir).unwrap();
        let tmp = dir.join(format!("fake-runtime.{}", std::process::id()));
        std::fs::write(&tmp, SCRIPT).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.join("fake-runtime");
        std::fs::rename(&tmp, &bin).unwrap();
        bin
    })
}

impl Fake {
    fn new() -> Fake {
        let dir = tempfile::tempdir().unwrap();
        // A link to one script written once: a script written while another
        // test forks would be busy (ETXTBSY) when that test's child execs.
        std::os::unix::fs::symlink(script(), dir.path().join("runtime")).unwrap();
        Fake { dir }
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("runtime")
    }

    fn reply(&self, name: &str, text: &str) -> &Fake {
        std::fs::write(self.dir.path().join(name), text).unwrap();
        self
    }

    fn argv(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.dir.path().join("argv")).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn global_flags_come_before_the_verb() {
    let f = Fake::new();
    let rt = Runtime::new(f.bin()).root("/run/r").log("/dev/null").log_format(LogFormat::Json).systemd_cgroup(true);
    rt.start("c1").unwrap();
    assert_eq!(
        f.argv(),
        strs(&["--root", "/run/r", "--log", "/dev/null", "--log-format", "json", "--systemd-cgroup", "start", "c1"])
    );
}

#[test]
fn each_verb_builds_runcs_command_line() {
    let f = Fake::new();
    let rt = Runtime::new(f.bin());
    rt.kill("c1", "SIGKILL", true).unwrap();
    assert_eq!(f.argv(), strs(&["kill", "--all", "c1", "SIGKILL"]));
    rt.delete("c1", true).unwrap();
    assert_eq!(f.argv(), strs(&["delete", "--force", "c1"]));
    rt.delete("c1", false).unwrap();
    assert_eq!(f.argv(), strs(&["delete", "c1"]));
    rt.pause("c1").unwrap();
    assert_eq!(f.argv(), strs(&["pause", "c1"]));
    rt.resume("c1").unwrap();
    assert_eq!(f.argv(), strs(&["resume", "c1"]));
    let opts = CreateOpts {
        bundle: "/b".into(),
        pid_file: Some("/p".into()),
        console_socket: Some("/s".into()),
        ..CreateOpts::default()
    };
    rt.create("c1", &opts, Io::default()).unwrap();
    assert_eq!(f.argv(), strs(&["create", "--bundle", "/b", "--pid-file", "/p", "--console-socket", "/s", "c1"]));
    rt.run("c1", &CreateOpts { detach: true, bundle: "/b".into(), ..CreateOpts::default() }, Io::default()).unwrap();
    assert_eq!(f.argv(), strs(&["run", "--detach", "--bundle", "/b", "c1"]));
}

#[test]
fn exec_puts_options_before_the_id_and_argv() {
    let f = Fake::new();
    let rt = Runtime::new(f.bin());
    let opts = ExecOpts {
        detach: true,
        tty: true,
        pid_file: Some("/p".into()),
        cwd: Some("/w".into()),
        env: vec!["A=1".into()],
        user: Some("1000:1000".into()),
        ..ExecOpts::default()
    };
    let argv: Vec<OsString> = vec!["sh".into(), "-c".into(), "echo hi".into()];
    rt.exec("c1", &argv, &opts, Io::default()).unwrap();
    assert_eq!(
        f.argv(),
        strs(&[
            "exec",
            "--detach",
            "--tty",
            "--pid-file",
            "/p",
            "--cwd",
            "/w",
            "--env",
            "A=1",
            "--user",
            "1000:1000",
            "c1",
            "sh",
            "-c",
            "echo hi"
        ])
    );
    let process = ExecOpts { process: Some("/proc.json".into()), ..ExecOpts::default() };
    rt.exec_prepared(&["--tty".into(), "c1".into()], &process, Io::default()).unwrap();
    assert_eq!(f.argv(), strs(&["exec", "--process", "/proc.json", "--tty", "c1"]));
}

#[test]
fn state_ps_and_stats_are_parsed() {
    let f = Fake::new();
    let rt = Runtime::new(f.bin());
    f.reply(
        "stdout",
        r#"{"ociVersion":"1.0.2","id":"c1","pid":42,"status":"running","bundle":"/b","rootfs":"/b/rootfs","created":"2026-01-01T00:00:00Z","owner":""}"#,
    );
    let st = rt.state("c1").unwrap();
    assert_eq!((st.id.as_str(), st.pid, st.status.as_str()), ("c1", 42, "running"));
    assert_eq!(st.bundle, Path::new("/b"));
    f.reply("stdout", "[7,3,12]\n");
    assert_eq!(rt.ps("c1").unwrap(), [7, 3, 12]);
    assert_eq!(f.argv(), strs(&["ps", "--format", "json", "c1"]));
    f.reply("stdout", "{\"type\":\"stats\",\"id\":\"c1\",\"data\":{\"pids\":{\"current\":3}}}\n");
    let ev = rt.stats("c1").unwrap();
    assert_eq!((ev.kind.as_str(), ev.data["pids"]["current"].as_u64()), ("stats", Some(3)));
    assert_eq!(f.argv(), strs(&["events", "--stats", "c1"]));
    f.reply("stdout", "not json");
    let err = rt.ps("c1").unwrap_err();
    assert!(matches!(err, Error::Output { verb: "ps", .. }), "{err:?}");
}

#[test]
fn update_sends_the_resources_on_stdin() {
    let f = Fake::new();
    f.reply("read-stdin", "");
    let rt = Runtime::new(f.bin());
    rt.update("c1", &serde_json::json!({"pids": {"limit": 5}})).unwrap();
    assert_eq!(f.argv(), strs(&["update", "--resources", "-", "c1"]));
    let sent: serde_json::Value = serde_json::from_slice(&std::fs::read(f.path("stdin")).unwrap()).unwrap();
    assert_eq!(sent["pids"]["limit"], 5);
}

#[test]
fn a_failure_carries_the_runtimes_own_message_from_stderr() {
    let f = Fake::new();
    f.reply("code", "1")
        .reply("stderr", "time=\"2026-01-01T00:00:00Z\" level=error msg=\"container \\\"c9\\\" does not exist\"\n");
    let err = Runtime::new(f.bin()).kill("c9", "TERM", false).unwrap_err();
    assert_eq!(err.to_string(), "container \"c9\" does not exist");
    assert_eq!(err.status().and_then(|s| s.code()), Some(1));
    // A runtime that prints plain words (crun): those words.
    f.reply("stderr", "crun: container `c9` does not exist\n");
    assert_eq!(
        Runtime::new(f.bin()).delete("c9", false).unwrap_err().to_string(),
        "crun: container `c9` does not exist"
    );
}

#[test]
fn a_failure_carries_the_last_error_of_the_json_log() {
    let f = Fake::new();
    f.reply("code", "1").reply(
        "log",
        "{\"level\":\"error\",\"msg\":\"earlier\",\"time\":\"t\"}\n{\"level\":\"error\",\"msg\":\"exec: \\\"nosuch\\\": executable file not found in $PATH\",\"time\":\"t\"}\n",
    );
    let rt = Runtime::new(f.bin()).log(f.path("runtime.log")).log_format(LogFormat::Json);
    // The container's stderr is not ours to read: only the log tells.
    let io = Io { stderr: Some(std::process::Stdio::null()), ..Io::default() };
    let err = rt.run("c1", &CreateOpts { bundle: "/b".into(), ..CreateOpts::default() }, io).unwrap_err();
    assert_eq!(err.to_string(), "exec: \"nosuch\": executable file not found in $PATH");
}

#[test]
fn a_silent_failure_names_the_runtime_and_the_verb() {
    let f = Fake::new();
    f.reply("code", "3");
    let err = Runtime::new(f.bin()).pause("c1").unwrap_err().to_string();
    assert!(err.contains("runtime pause failed") && err.contains('3'), "{err}");
}

#[test]
fn a_missing_runtime_is_named() {
    let err = Runtime::new("/nonexistent/runc").start("c1").unwrap_err();
    assert!(matches!(err, Error::Spawn { .. }));
    assert!(err.to_string().contains("/nonexistent/runc"), "{err}");
}

#[test]
fn the_pid_file_is_read_back() {
    let f = Fake::new();
    f.reply("pid", "4242\n");
    let pid_file = f.path("init.pid");
    let opts = CreateOpts { bundle: "/b".into(), pid_file: Some(pid_file.clone()), ..CreateOpts::default() };
    let mut pending = Runtime::new(f.bin()).spawn_run("c1", &opts, Io::default()).unwrap();
    while pending.try_exited().is_none() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    pending.wait().unwrap();
    assert_eq!(berth_oci_cli::read_pid_file(&pid_file).unwrap(), 4242);
    let err = berth_oci_cli::read_pid_file(&f.path("none.pid")).unwrap_err();
    assert!(err.to_string().contains("none.pid"), "{err}");
}
