//! The command line as tools see it: `spec`, `features`, log formats, and
//! errors for bad input that name what was wrong.

use std::time::Duration;

use berth_testkit::{Bundle, Runtime, leaks, make_busybox_rootfs, require_root, run_on_pty, unique_id};
use serde_json::Value;

fn runtime() -> Runtime {
    require_root();
    Runtime::new(env!("CARGO_BIN_EXE_berth-runtime"))
}

#[test]
fn a_malformed_config_gets_an_error_naming_the_field() {
    let rt = runtime();
    let b = Bundle::busybox();
    let cases = [
        (
            r#"{"ociVersion":"1.2.0","process":{"user":{"uid":"zero","gid":0},"cwd":"/","args":["sh"]},"root":{"path":"rootfs"}}"#,
            "process.user.uid",
        ),
        (
            r#"{"ociVersion":"1.2.0","process":{"user":{"uid":0,"gid":0},"cwd":"/","args":["sh"],"capabilities":{"bounding":["CAP_FLY"]}},"root":{"path":"rootfs"}}"#,
            "process.capabilities.bounding",
        ),
        (
            r#"{"ociVersion":"1.2.0","process":{"user":{"uid":0,"gid":0},"cwd":"/","args":["sh"]},"root":{"path":"rootfs"},"linux":{"namespaces":[{"type":"galaxy"}]}}"#,
            "linux.namespaces",
        ),
        (
            r#"{"ociVersion":"1.2.0","process":{"user":{"uid":0,"gid":0},"cwd":"/","args":["sh"]},"root":{"path":"nope"}}"#,
            "root.path",
        ),
        (
            r#"{"ociVersion":"1.2.0","process":{"user":{"uid":0,"gid":0},"cwd":"/","args":["sh"]},"root":{"path":"rootfs"},"hostname":"h","linux":{"namespaces":[{"type":"mount"}]}}"#,
            "hostname",
        ),
        (r#"{"ociVersion":"1.2.0","process":{"user":{"uid":0,"gid":0},"cwd":"/","args":["sh"]}"#, "line 1"),
    ];
    for (json, field) in cases {
        std::fs::write(b.path().join("config.json"), json).unwrap();
        let id = unique_id("bad");
        let err = rt.fails(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
        assert!(err.contains("config.json"), "the error names the file: {err}");
        assert!(err.contains(field), "the error names {field}: {err}");
        leaks::assert_none(&id, b.path(), rt.root(), None);
    }
    std::fs::remove_file(b.path().join("config.json")).unwrap();
    let err = rt.fails(&["create", "--bundle", b.path().to_str().unwrap(), &unique_id("bad")]);
    assert!(err.contains("no such file"), "{err}");
}

#[test]
fn spec_writes_runcs_default_and_refuses_to_overwrite() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.ok(&["spec", "--bundle", dir.path().to_str().unwrap()]);
    let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    assert!(text.starts_with("{\n\t\"ociVersion\""), "tab-indented like runc");
    let spec: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(spec["process"]["args"], serde_json::json!(["sh"]));
    assert_eq!(spec["process"]["terminal"], true);
    assert_eq!(spec["root"]["readonly"], true);
    assert!(spec["process"]["capabilities"].get("inheritable").is_none());
    assert_eq!(spec["linux"]["resources"]["devices"][0]["allow"], false);
    let err = rt.fails(&["spec", "--bundle", dir.path().to_str().unwrap()]);
    assert!(err.contains("exists"), "{err}");

    let rootless = tempfile::tempdir().unwrap();
    rt.ok(&["spec", "--rootless", "--bundle", rootless.path().to_str().unwrap()]);
    let spec: Value = serde_json::from_slice(&std::fs::read(rootless.path().join("config.json")).unwrap()).unwrap();
    let ns: Vec<&str> =
        spec["linux"]["namespaces"].as_array().unwrap().iter().map(|n| n["type"].as_str().unwrap()).collect();
    assert!(ns.contains(&"user") && !ns.contains(&"network"), "{ns:?}");
    assert_eq!(spec["linux"]["uidMappings"][0]["hostID"], 0);
}

/// `berth-runtime spec && berth-runtime run demo` in a busybox bundle:
/// an interactive shell on a pty, as with runc.
#[test]
fn spec_then_run_gives_an_interactive_shell_on_a_pty() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    make_busybox_rootfs(&dir.path().join("rootfs"));
    rt.ok(&["spec", "--bundle", dir.path().to_str().unwrap()]);
    let id = unique_id("demo");
    let (code, text) = run_on_pty(
        rt.cmd().args(["run", "--bundle", dir.path().to_str().unwrap(), &id]),
        b"echo hello-$((6*7)); hostname; tty; exit 3\n",
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(3), "run exits with the shell's code: {text}");
    assert!(text.contains("hello-42"), "{text}");
    assert!(text.contains("\nberth"), "the default hostname: {text}");
    assert!(text.contains("/dev/pts/0"), "{text}");
    leaks::assert_none(&id, dir.path(), rt.root(), None);
}

#[test]
fn features_describe_what_is_supported() {
    let rt = runtime();
    let out = rt.ok(&["features"]);
    assert!(out.starts_with("{\n    \"ociVersionMin\": \"1.0.0\""), "runc's key order and indentation: {out}");
    let f: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(f["hooks"].as_array().unwrap().len(), 6);
    assert!(f["mountOptions"].as_array().unwrap().iter().any(|o| o == "rro"));
    assert!(f["linux"]["namespaces"].as_array().unwrap().iter().any(|n| n == "time"));
    assert!(f["linux"]["capabilities"].as_array().unwrap().iter().any(|c| c == "CAP_SYS_ADMIN"));
}

#[test]
fn errors_go_to_the_log_in_json_when_asked() {
    let rt = runtime();
    let log = tempfile::NamedTempFile::new().unwrap();
    let out = rt
        .cmd()
        .args(["--log", log.path().to_str().unwrap(), "--log-format", "json", "state", "no-such-container"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let line = std::fs::read_to_string(log.path()).unwrap();
    let entry: Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
    assert_eq!(entry["level"], "error");
    assert_eq!(entry["msg"], "container does not exist");
    assert!(entry["time"].as_str().unwrap().ends_with('Z'));
    // runc also prints the error on stderr when logging elsewhere.
    assert!(String::from_utf8_lossy(&out.stderr).contains("container does not exist"));
}

#[test]
fn systemd_cgroup_is_refused_clearly() {
    let rt = runtime();
    let b = Bundle::busybox();
    let out = rt
        .cmd()
        .args(["--systemd-cgroup", "create", "--bundle", b.path().to_str().unwrap(), &unique_id("sd")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--systemd-cgroup"));
}

/// More --preserve-fds than are open is not an error (runc and crun start
/// the container); tests/spec12.rs checks what the program gets.
#[test]
fn preserve_fds_beyond_those_open_still_runs() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.args(&["true"]);
    let id = unique_id("pfd");
    rt.ok(&["run", "--preserve-fds", "40", "--bundle", b.path().to_str().unwrap(), &id]);
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

/// The runtime has its own entry point (see main.rs), so it does what
/// std's start-up did: a standard fd it was started without is /dev/null,
/// never a file the runtime opened that the container would then get as
/// stdio; and the container's program starts with SIGPIPE at its default
/// (the runtime ignores it, the init restores it).
#[test]
fn a_runtime_started_without_stdin_gives_the_container_dev_null_and_sigpipe_at_default() {
    use std::os::unix::process::CommandExt;
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.sh("readlink /proc/self/fd/0; grep SigIgn /proc/self/status");
    let id = unique_id("stdio");
    let mut cmd = rt.cmd();
    cmd.args(["run", "--bundle", b.path().to_str().unwrap(), &id]);
    // SAFETY: close(2) is async-signal-safe; fd 0 is the child's own.
    unsafe {
        cmd.pre_exec(|| {
            libc::close(0);
            Ok(())
        });
    }
    let out = berth_testkit::output_via_files(&mut cmd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "run failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("/dev/null"), "the container's stdin: {stdout}");
    let ignored = lines.next().and_then(|l| l.strip_prefix("SigIgn:")).map(str::trim).expect("SigIgn line");
    let mask = u64::from_str_radix(ignored, 16).unwrap();
    assert_eq!(mask & (1 << (libc::SIGPIPE - 1)), 0, "SIGPIPE is ignored in the container: {stdout}");
    leaks::assert_none(&id, b.path(), rt.root(), None);
}
