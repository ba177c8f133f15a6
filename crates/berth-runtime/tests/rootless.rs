//! Rootless: an unprivileged user the test creates runs busybox containers
//! with `spec --rootless`, state under $XDG_RUNTIME_DIR, its own id mapped
//! to root (written directly), or a subordinate range (through newuidmap).
//!
//! One test at a time: they share the test user's name.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;

use berth_testkit::user::TestUser;
use berth_testkit::{leaks, make_busybox_rootfs, output_via_files, require_root, unique_id, unique_sleep};
use serde_json::Value;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The user's world: a copy of the runtime, a bundle and an XDG runtime
/// dir, all owned by the user, under one temp dir.
struct Rootless {
    user: TestUser,
    dir: tempfile::TempDir,
}

impl Rootless {
    fn new(subids: Option<(u32, u32)>) -> Rootless {
        require_root();
        let dir = tempfile::Builder::new().prefix("berth-rootless-").tempdir().unwrap();
        // The runtime may sit in a directory other users cannot enter.
        std::fs::copy(env!("CARGO_BIN_EXE_berth-runtime"), dir.path().join("berth-runtime")).unwrap();
        make_busybox_rootfs(&dir.path().join("bundle/rootfs"));
        std::fs::create_dir(dir.path().join("xdg")).unwrap();
        let user = TestUser::create(subids);
        user.own(dir.path());
        Rootless { user, dir }
    }

    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    fn xdg(&self) -> PathBuf {
        self.dir.path().join("xdg")
    }

    /// Runs the runtime as the user, with $XDG_RUNTIME_DIR set and no --root.
    fn runtime(&self, args: &[&str]) -> Output {
        output_via_files(
            self.user
                .command(self.dir.path().join("berth-runtime"))
                .args(args)
                .current_dir(self.bundle())
                .env_clear()
                .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
                .env("XDG_RUNTIME_DIR", self.xdg()),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.runtime(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn edit(&self, f: impl FnOnce(&mut Value)) {
        let path = self.bundle().join("config.json");
        let mut c: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        f(&mut c);
        std::fs::write(&path, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
    }
}

impl Drop for Rootless {
    fn drop(&mut self) {
        let root = self.xdg().join("berth-runtime");
        for id in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let id = id.file_name().to_string_lossy().into_owned();
            let _ = self.runtime(&["delete", "--force", &id]);
        }
    }
}

fn script(r: &Rootless, s: &str) {
    r.edit(|c| {
        c["process"]["terminal"] = false.into();
        c["process"]["args"] = serde_json::json!(["sh", "-c", s]);
    });
}

#[test]
fn an_unprivileged_user_runs_a_busybox_container() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let r = Rootless::new(None);
    r.ok(&["spec", "--rootless"]);
    script(&r, "id -u; hostname; echo pid=$$; cat /proc/self/uid_map; touch /dev/shm/x && echo shm-ok; ls /dev/null");
    let id = unique_id("rl");
    let out = r.runtime(&["run", &id]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "0", "root inside");
    assert_eq!(lines[1], "berth");
    assert_eq!(lines[2], "pid=1");
    let map: Vec<&str> = lines[3].split_whitespace().collect();
    assert_eq!(map, ["0", &r.user.uid.to_string(), "1"], "the user's own id is root inside");
    assert!(stdout.contains("shm-ok"));
    assert!(stdout.contains("/dev/null"));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"), "no warning for a plain rootless run");
    assert!(!r.xdg().join("berth-runtime").join(&id).exists(), "run removed its state");
    leaks::assert_none(&id, &r.bundle(), &r.xdg().join("berth-runtime"), None);
}

#[test]
fn the_whole_lifecycle_works_rootless_with_state_under_xdg_runtime_dir() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let r = Rootless::new(None);
    r.ok(&["spec", "--rootless"]);
    let marker = unique_sleep();
    r.edit(|c| {
        c["process"]["terminal"] = false.into();
        c["process"]["args"] = serde_json::json!(["sleep", marker]);
    });
    let id = unique_id("rl");
    r.ok(&["create", &id]);
    let state_dir = r.xdg().join("berth-runtime").join(&id);
    assert!(state_dir.is_dir(), "state lives under $XDG_RUNTIME_DIR");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&state_dir).unwrap().uid(), r.user.uid);
    r.ok(&["start", &id]);
    let st: Value = serde_json::from_str(&r.ok(&["state", &id])).unwrap();
    assert_eq!(st["status"], "running");
    assert!(r.ok(&["list"]).contains(&id));
    let exec = r.runtime(&["exec", &id, "sh", "-c", "id -u; cat /proc/1/cmdline | tr '\\0' ' '"]);
    let text = String::from_utf8_lossy(&exec.stdout);
    assert!(exec.status.success(), "{}", String::from_utf8_lossy(&exec.stderr));
    assert!(text.starts_with("0\n") && text.contains(&marker), "{text}");
    let ps: Vec<i32> = serde_json::from_str(&r.ok(&["ps", "--format", "json", &id])).unwrap();
    assert!(!ps.is_empty());
    r.ok(&["kill", &id, "KILL"]);
    r.ok(&["delete", "--force", &id]);
    assert!(!state_dir.exists());
    leaks::assert_none(&id, &r.bundle(), &r.xdg().join("berth-runtime"), Some(&marker));
}

#[test]
fn a_subordinate_id_range_is_mapped_through_newuidmap() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let start = 400_000 + (std::process::id() % 1000) * 70_000;
    let r = Rootless::new(Some((start, 65536)));
    r.ok(&["spec", "--rootless"]);
    // root inside is the user itself; ids 1..65536 come from /etc/subuid.
    let uid = r.user.uid;
    let gid = r.user.gid;
    r.edit(|c| {
        c["linux"]["uidMappings"] = serde_json::json!([
            { "containerID": 0, "hostID": uid, "size": 1 },
            { "containerID": 1, "hostID": start, "size": 65536 }
        ]);
        c["linux"]["gidMappings"] = serde_json::json!([
            { "containerID": 0, "hostID": gid, "size": 1 },
            { "containerID": 1, "hostID": start, "size": 65536 }
        ]);
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs"}));
        for set in ["bounding", "effective", "permitted"] {
            c["process"]["capabilities"][set].as_array_mut().unwrap().push("CAP_CHOWN".into());
        }
    });
    script(&r, "cat /proc/self/uid_map; touch /scratch/f && chown 1000:1000 /scratch/f && stat -c %u:%g /scratch/f");
    let id = unique_id("rlsub");
    let out = r.runtime(&["run", &id]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("{start}")) && stdout.contains("65536"), "{stdout}");
    assert!(stdout.contains("1000:1000"), "a mapped id other than root works: {stdout}");
    leaks::assert_none(&id, Path::new(&r.bundle()), &r.xdg().join("berth-runtime"), None);
}
