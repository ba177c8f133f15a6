//! The config.json the engine writes, run by the real runtime: docker's
//! defaults and the flags must hold inside the container.

use berth_engine::spec::{self, ImageDefaults, Paths, RunFlags};
use berth_testkit::{Runtime, leaks, make_busybox_rootfs, require_root, unique_id, workspace_bin};

fn run(flags: RunFlags, image: ImageDefaults) -> (i32, String, String) {
    require_root();
    let rt = Runtime::new(workspace_bin("berth-runtime"));
    let bundle = tempfile::Builder::new().prefix("berth-spec-").tempdir().unwrap();
    let rootfs = bundle.path().join("rootfs");
    make_busybox_rootfs(&rootfs);
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\napp:x:100:101::/home/app:/bin/sh\n")
        .unwrap();
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\napp:x:101:\nstaff:x:50:app\n").unwrap();
    let id = unique_id("spec");
    // A parent of this test's own, removed when it ends.
    let parent = berth_testkit::cgroup::CgroupParent::new("spec");
    let paths = Paths { rootfs: rootfs.clone(), cgroups_path: format!("{}/{id}", parent.path()), ..Default::default() };
    let s = spec::build(&format!("{id}0123456789"), &image, &flags, &paths).unwrap();
    s.save(bundle.path().join("config.json")).unwrap();
    let out = rt.exec(&["run", "--bundle", bundle.path().to_str().unwrap(), &id]);
    leaks::assert_none(&id, bundle.path(), rt.root(), None);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sh(script: &str) -> ImageDefaults {
    ImageDefaults {
        entrypoint: vec!["/bin/sh".into(), "-c".into()],
        cmd: vec![script.into()],
        user: "app".into(),
        working_dir: "/tmp".into(),
        ..Default::default()
    }
}

#[test]
fn dockers_defaults_hold_in_the_container() {
    let script = "id -u; id -G; pwd; hostname; grep CapBnd /proc/self/status; grep Seccomp: /proc/self/status; \
                  cat /proc/kcore 2>&1 | head -c 0; test -s /proc/kcore && echo kcore-readable; echo done";
    let (code, out, err) = run(RunFlags::default(), sh(script));
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "100", "the image's user");
    assert_eq!(lines[1], "101 50", "with the supplementary groups from /etc/group");
    assert_eq!(lines[2], "/tmp");
    assert_eq!(lines[3].len(), 12, "hostname is the short id: {}", lines[3]);
    // docker's 14 default capabilities: 0x00000000a80425fb.
    assert_eq!(lines[4].split_whitespace().nth(1), Some("00000000a80425fb"));
    assert_eq!(lines[5].split_whitespace().nth(1), Some("2"), "a seccomp filter is loaded");
    assert!(!out.contains("kcore-readable"), "masked paths are masked");
}

#[test]
fn the_default_seccomp_profile_refuses_what_docker_refuses() {
    // Root with docker's capabilities still may not unshare or mount.
    let image = ImageDefaults {
        user: "0".into(),
        ..sh("unshare -m true && echo unshared; mount -t tmpfs t /mnt && echo mounted; echo end")
    };
    let (code, out, err) = run(RunFlags::default(), image);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "end\n");
    // ...unless the user turns the filter off and adds the capability.
    let flags = RunFlags {
        security_opt: vec!["seccomp=unconfined".into()],
        cap_add: vec!["SYS_ADMIN".into()],
        ..Default::default()
    };
    let image = ImageDefaults { user: "0".into(), ..sh("unshare -m true && echo unshared") };
    let (code, out, err) = run(flags, image);
    assert_eq!((code, out.as_str()), (0, "unshared\n"), "{err}");
}

#[test]
fn limits_and_read_only_apply() {
    let flags = RunFlags { read_only: true, pids_limit: Some(5), memory: Some(64 << 20), ..Default::default() };
    let image = sh(
        "touch /x 2>/dev/null && echo wrote; sh -c 'for i in 1 2 3 4 5 6; do sleep 5 & done; echo all-started' 2>/dev/null; echo end",
    );
    let (code, out, err) = run(flags, image);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("wrote"), "the root is read-only: {out}");
    assert_eq!(out, "end\n", "the pids limit of 5 let six more processes start");
}
