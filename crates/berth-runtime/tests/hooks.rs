//! Lifecycle hooks: each kind runs at its moment, in its namespaces, with
//! the state on stdin; a failing or hanging hook fails the operation and
//! leaves nothing behind.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_testkit::{Bundle, Runtime, leaks, require_root, unique_id, unique_sleep};
use serde_json::{Value, json};

fn runtime() -> Runtime {
    require_root();
    Runtime::new(env!("CARGO_BIN_EXE_berth-runtime"))
}

/// A hook script that saves its stdin, its hostname and its args.
fn recorder(dir: &Path, name: &str, out_dir: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("#!/bin/sh\ncat > {out_dir}/{name}.json\nhostname > {out_dir}/{name}.host\necho \"$@\" \"$HOOKVAR\" > {out_dir}/{name}.args\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn read_json(p: PathBuf) -> Value {
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn every_hook_runs_at_its_moment_with_the_state_on_stdin() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    let host_dir = tempfile::tempdir().unwrap();
    let hd = host_dir.path().to_str().unwrap().to_string();
    let host_name = nix::unistd::gethostname().unwrap().into_string().unwrap();
    // startContainer runs inside the container: its script lives there.
    std::fs::create_dir_all(b.rootfs().join("hooks")).unwrap();
    let start_hook = recorder(&b.rootfs().join("hooks"), "startContainer", "/hookout");
    let hook = |name: &str| json!({ "path": recorder(host_dir.path(), name, &hd), "args": [name, "a1"], "env": ["HOOKVAR=v"] });
    b.edit(|c| {
        c["hostname"] = "hooked".into();
        c["root"]["readonly"] = false.into();
        c["hooks"] = json!({
            "prestart": [hook("prestart")],
            "createRuntime": [hook("createRuntime")],
            "createContainer": [hook("createContainer")],
            "startContainer": [{ "path": Path::new("/hooks").join(start_hook.file_name().unwrap()), "args": ["startContainer"] }],
            "poststart": [hook("poststart")],
            "poststop": [hook("poststop")]
        });
    });
    std::fs::create_dir_all(b.rootfs().join("hookout")).unwrap();
    b.args(&["sleep", &unique_sleep()]);
    let id = unique_id("hooks");
    rt.ok(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    let init_pid = rt.state(&id)["pid"].as_i64().unwrap();
    for (name, status) in [("prestart", "creating"), ("createRuntime", "creating"), ("createContainer", "creating")] {
        let st = read_json(host_dir.path().join(format!("{name}.json")));
        assert_eq!(st["id"], id.as_str(), "{name}");
        assert_eq!(st["status"], status, "{name}");
        assert_eq!(st["pid"], init_pid, "{name} sees the init's pid");
        assert_eq!(st["bundle"], b.path().to_str().unwrap(), "{name}");
        let args = std::fs::read_to_string(host_dir.path().join(format!("{name}.args"))).unwrap();
        assert_eq!(args.trim(), "a1 v", "{name} gets its args (argv[0] is args[0]) and env");
    }
    // createRuntime runs in the runtime's namespaces, createContainer in the container's.
    let host_of =
        |n: &str| std::fs::read_to_string(host_dir.path().join(format!("{n}.host"))).unwrap().trim().to_string();
    assert_eq!(host_of("createRuntime"), host_name);
    assert_eq!(host_of("createContainer"), "hooked");
    assert!(!host_dir.path().join("poststart.json").exists(), "poststart waits for start");
    assert!(!b.rootfs().join("hookout/startContainer.json").exists());

    rt.ok(&["start", &id]);
    let st = read_json(b.rootfs().join("hookout/startContainer.json"));
    assert_eq!(st["status"], "created");
    assert_eq!(std::fs::read_to_string(b.rootfs().join("hookout/startContainer.host")).unwrap().trim(), "hooked");
    let st = read_json(host_dir.path().join("poststart.json"));
    assert_eq!(st["status"], "running");
    assert!(!host_dir.path().join("poststop.json").exists());

    rt.ok(&["delete", "--force", &id]);
    let st = read_json(host_dir.path().join("poststop.json"));
    assert_eq!(st["status"], "stopped");
    assert_eq!(st["id"], id.as_str());
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

#[test]
fn a_failing_hook_fails_create_says_why_and_cleans_up() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "#!/bin/sh\necho 'network setup exploded' >&2\nexit 3\n").unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o755)).unwrap();
    let poststop = recorder(dir.path(), "poststop", dir.path().to_str().unwrap());
    let marker = unique_sleep();
    b.edit(|c| c["hooks"] = json!({ "createRuntime": [{ "path": bad }], "poststop": [{ "path": poststop }] }));
    b.args(&["sleep", &marker]);
    let id = unique_id("badhook");
    let err = rt.fails(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    assert!(err.contains("createRuntime hook"), "{err}");
    assert!(err.contains("exit status: 3"), "{err}");
    assert!(err.contains("network setup exploded"), "the hook's stderr is in the error: {err}");
    assert!(dir.path().join("poststop.json").exists(), "poststop hooks run to undo what prestart hooks did");
    leaks::assert_none(&id, b.path(), rt.root(), Some(&marker));
}

#[test]
fn a_hook_that_overstays_its_timeout_is_killed_and_fails_the_operation() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    let dir = tempfile::tempdir().unwrap();
    let slow = dir.path().join("slow");
    std::fs::write(&slow, "#!/bin/sh\nsleep 30\n").unwrap();
    std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).unwrap();
    b.edit(|c| c["hooks"] = json!({ "prestart": [{ "path": slow, "timeout": 1 }] }));
    let id = unique_id("slowhook");
    let t = Instant::now();
    let err = rt.fails(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    assert!(t.elapsed() < Duration::from_secs(20), "the timeout was honoured");
    assert!(err.contains("prestart hook"), "{err}");
    assert!(err.contains("timed out after 1s"), "{err}");
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

#[test]
fn a_failing_start_container_hook_fails_start() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    std::fs::write(b.rootfs().join("failhook"), "#!/bin/sh\necho no-go >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(b.rootfs().join("failhook"), std::fs::Permissions::from_mode(0o755)).unwrap();
    b.edit(|c| c["hooks"] = json!({ "startContainer": [{ "path": "/failhook" }] }));
    b.args(&["sleep", &unique_sleep()]);
    let id = unique_id("failstart");
    rt.ok(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    let err = rt.fails(&["start", &id]);
    assert!(err.contains("startContainer hook"), "{err}");
    assert!(err.contains("no-go"), "{err}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while rt.state(&id)["status"] != "stopped" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(rt.state(&id)["status"], "stopped");
    rt.ok(&["delete", &id]);
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

#[test]
fn a_failing_poststart_hook_is_logged_and_the_rest_still_run() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "#!/bin/sh\necho poststart-broke >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o755)).unwrap();
    let good = recorder(dir.path(), "poststart", dir.path().to_str().unwrap());
    b.edit(|c| c["hooks"] = json!({ "poststart": [{ "path": bad }, { "path": good }] }));
    b.args(&["sleep", &unique_sleep()]);
    let id = unique_id("poststart");
    rt.ok(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    let out = rt.exec(&["start", &id]);
    assert!(out.status.success(), "runtime-spec: the lifecycle goes on");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("level=warning") && err.contains("poststart-broke"), "{err}");
    assert!(dir.path().join("poststart.json").exists(), "the next poststart hook still ran");
    assert_eq!(rt.state(&id)["status"], "running");
    rt.ok(&["delete", "-f", &id]);
    leaks::assert_none(&id, b.path(), rt.root(), None);
}
