//! Hostile or careless config.json values that must be refused before
//! anything starts, with an error naming the field, and leave nothing
//! behind: ids a setuid would read as "keep root", an empty root that
//! would make the bundle the rootfs, mounts over the container's root.

use berth_testkit::{Bundle, Runtime, leaks, require_root, unique_id};
use serde_json::{Value, json};

fn runtime() -> Runtime {
    require_root();
    Runtime::new(env!("CARGO_BIN_EXE_berth-runtime"))
}

/// Runs the bundle after `edit`; asserts it fails before the program ran,
/// that the error names every one of `names`, and that nothing is left.
fn refused(rt: &Runtime, b: &mut Bundle, edit: impl FnOnce(&mut Value), names: &[&str]) {
    let saved = b.config.clone();
    b.edit(edit);
    let id = unique_id("badcfg");
    let (code, out, err) = rt.run(b, &id);
    assert_ne!(code, 0, "must be refused; stdout: {out}");
    assert!(!out.contains("ran-as"), "the program must not run at all: {out}");
    for name in names {
        assert!(err.contains(name), "the error names {name}: {err}");
    }
    leaks::assert_none(&id, b.path(), rt.root(), None);
    b.config = saved;
    b.write();
}

#[test]
fn user_ids_outside_runcs_range_are_refused_and_nothing_runs_as_root() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.sh("echo ran-as-$(id -u):$(id -g)");
    // 4294967295 is (uid_t)-1, which setresuid reads as "leave unchanged":
    // the container would keep the runtime's root.
    let user = |c: &mut Value, u: Value| c["process"]["user"] = u;
    refused(
        &rt,
        &mut b,
        |c| user(c, json!({"uid": 4294967295u32, "gid": 1000})),
        &["process.user.uid", "4294967295", "0-2147483647"],
    );
    refused(&rt, &mut b, |c| user(c, json!({"uid": 1000, "gid": 4294967295u32})), &["process.user.gid", "4294967295"]);
    refused(&rt, &mut b, |c| user(c, json!({"uid": 2147483648u32, "gid": 1000})), &["process.user.uid", "2147483648"]);
    refused(
        &rt,
        &mut b,
        |c| user(c, json!({"uid": 1000, "gid": 1000, "additionalGids": [5, 4294967295u32]})),
        &["process.user.additionalGids[1]", "4294967295"],
    );
    // The top of the range is a valid id, as with runc.
    b.edit(|c| user(c, json!({"uid": 2147483647, "gid": 2147483647})));
    let id = unique_id("maxid");
    let (code, out, err) = rt.run(&b, &id);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "ran-as-2147483647:2147483647");
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

#[test]
fn an_empty_or_missing_root_is_refused_not_taken_as_the_bundle_directory() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.sh("echo ran-as-$(id -u)");
    // Make the bundle directory itself look like a rootfs, so taking it
    // as one would run.
    std::os::unix::fs::symlink("rootfs/bin", b.path().join("bin")).unwrap();
    refused(&rt, &mut b, |c| c["root"] = json!({}), &["root.path", "must not be empty"]);
    refused(&rt, &mut b, |c| c["root"]["path"] = "".into(), &["root.path", "must not be empty"]);
    refused(&rt, &mut b, |c| c["root"]["path"] = ".".into(), &["root.path", "bundle directory"]);
    let bundle_dir = b.path().to_str().unwrap().to_string();
    refused(&rt, &mut b, |c| c["root"]["path"] = bundle_dir.into(), &["root.path", "bundle directory"]);
    refused(
        &rt,
        &mut b,
        |c| {
            c.as_object_mut().unwrap().remove("root");
        },
        &["root", "must be specified"],
    );
}

#[test]
fn a_mount_over_the_containers_root_is_refused() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.sh("echo ran-as-$(id -u)");
    let tmpfs_on = |dest: &str| json!({"destination": dest, "type": "tmpfs", "source": "tmpfs"});
    for dest in ["", "/", ".", "/tmp/..", "//"] {
        let m = tmpfs_on(dest);
        let (field, why) = if dest.is_empty() {
            ("mounts[7].destination", "must not be empty")
        } else {
            ("mounts[7].destination", "root")
        };
        refused(&rt, &mut b, |c| c["mounts"].as_array_mut().unwrap().push(m), &[field, why]);
    }
    // Masking the root would hide the whole rootfs; an empty entry names no path.
    refused(&rt, &mut b, |c| c["linux"]["maskedPaths"] = json!(["/proc/kcore", "/"]), &["linux.maskedPaths[1]"]);
    refused(&rt, &mut b, |c| c["linux"]["readonlyPaths"] = json!([""]), &["linux.readonlyPaths[0]", "empty"]);
}

#[test]
fn a_umask_that_is_not_a_mode_mask_is_refused() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.sh("echo ran-as-$(id -u)");
    refused(&rt, &mut b, |c| c["process"]["user"]["umask"] = json!(-1), &["process.user.umask"]);
    refused(&rt, &mut b, |c| c["process"]["user"]["umask"] = json!(4294967295u32), &["process.user.umask", "0o777"]);
}

#[test]
fn a_cgroups_path_naming_no_cgroup_of_its_own_is_refused() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.sh("echo ran-as-$(id -u)");
    // "." would be the runtime's own cgroup: the container would join it,
    // and its limits would land on the caller.
    for path in [".", "./", "/"] {
        refused(&rt, &mut b, |c| c["linux"]["cgroupsPath"] = path.into(), &["linux.cgroupsPath"]);
    }
}
