//! What the container sees: its namespaces, its root filesystem, mounts in
//! order, devices, masked and read-only paths, and that nothing it does
//! reaches the host.

use berth_testkit::{Bundle, Runtime, leaks, require_root, unique_id};
use serde_json::json;

fn runtime() -> Runtime {
    require_root();
    Runtime::new(env!("CARGO_BIN_EXE_berth-runtime"))
}

/// Runs `script` in the bundle and returns its stdout, asserting success.
fn run_ok(rt: &Runtime, b: &mut Bundle, script: &str) -> String {
    b.sh(script);
    let id = unique_id("rootfs");
    let (code, out, err) = rt.run(b, &id);
    assert_eq!(code, 0, "script failed: {script}\nstdout: {out}\nstderr: {err}");
    leaks::assert_none(&id, b.path(), rt.root(), None);
    out
}

#[test]
fn the_container_sees_its_hostname_is_pid_1_and_sees_no_host_pids() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.edit(|c| {
        c["hostname"] = "box-a".into();
        c["domainname"] = "example.test".into();
    });
    let out =
        run_ok(&rt, &mut b, "hostname; cat /proc/sys/kernel/domainname; echo pid=$$; ls /proc | grep -c '^[0-9]'");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "box-a");
    assert_eq!(lines[1], "example.test");
    assert_eq!(lines[2], "pid=1");
    // Only the shell and the ls/grep it runs: nothing of the host's.
    let visible: u32 = lines[3].parse().unwrap();
    assert!(visible <= 3, "the container sees {visible} pids");
    let host = nix::unistd::gethostname().unwrap();
    assert_ne!(host.to_str().unwrap(), "box-a", "the host's hostname is untouched");
}

#[test]
fn a_readonly_root_refuses_writes_but_tmpfs_mounts_take_them() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.mount(json!({ "destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"] }));
    let out = run_ok(
        &rt,
        &mut b,
        "touch /newfile 2>&1 || echo refused; echo hi > /scratch/f && cat /scratch/f; grep ' / ' /proc/mounts | grep -c ro,",
    );
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(out.contains("refused"));
    assert!(out.contains("hi\n"));
    assert!(!b.rootfs().join("newfile").exists());
    // The bundle's own rootfs stays writable on the host.
    std::fs::write(b.rootfs().join("host-can-write"), "x").unwrap();
}

#[test]
fn masked_paths_read_empty_and_readonly_paths_refuse_writes() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.edit(|c| {
        c["linux"]["maskedPaths"] =
            json!(["/proc/kcore", "/proc/acpi", "/etc/secret", "/etc/secretdir", "/no/such/path"]);
        c["linux"]["readonlyPaths"] = json!(["/proc/sys", "/etc/ro"]);
        c["root"]["readonly"] = false.into();
    });
    std::fs::write(b.rootfs().join("etc/secret"), "password").unwrap();
    std::fs::create_dir_all(b.rootfs().join("etc/secretdir")).unwrap();
    std::fs::write(b.rootfs().join("etc/secretdir/key"), "k").unwrap();
    std::fs::create_dir_all(b.rootfs().join("etc/ro")).unwrap();
    let out = run_ok(
        &rt,
        &mut b,
        "echo secret=[$(cat /etc/secret)]; echo kcore=[$(head -c 10 /proc/kcore | wc -c)]; \
         echo dir=[$(ls /etc/secretdir)]; touch /etc/ro/x 2>/dev/null || echo ro-refused; \
         echo 1 > /proc/sys/kernel/domainname 2>/dev/null || echo sys-refused",
    );
    assert!(out.contains("secret=[]"), "{out}");
    assert!(out.contains("kcore=[0]"), "{out}");
    assert!(out.contains("dir=[]"), "{out}");
    assert!(out.contains("ro-refused"), "{out}");
    assert!(out.contains("sys-refused"), "{out}");
    assert_eq!(std::fs::read_to_string(b.rootfs().join("etc/secret")).unwrap(), "password");
}

#[test]
fn mounts_land_where_config_says_in_order() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    let host_dir = tempfile::tempdir().unwrap();
    std::fs::write(host_dir.path().join("file"), "from-host").unwrap();
    let host_file = host_dir.path().join("single");
    std::fs::write(&host_file, "single-file").unwrap();
    // /data is a tmpfs; the bind goes inside it (order matters), and the
    // single-file bind lands on a file the runtime creates.
    b.mount(json!({ "destination": "/data", "type": "tmpfs", "source": "tmpfs", "options": ["mode=700"] }));
    b.mount(
        json!({ "destination": "/data/in", "type": "bind", "source": host_dir.path(), "options": ["rbind", "ro"] }),
    );
    b.mount(json!({ "destination": "/etc/single", "type": "bind", "source": host_file, "options": ["bind"] }));
    // A later tmpfs on /later hides what an earlier one put there.
    b.mount(json!({ "destination": "/later", "type": "tmpfs", "source": "first" }));
    b.mount(json!({ "destination": "/later", "type": "tmpfs", "source": "second" }));
    let out = run_ok(
        &rt,
        &mut b,
        "cat /data/in/file; echo; cat /etc/single; echo; touch /data/in/x 2>/dev/null || echo bind-ro; \
         stat -c %a /data; grep ' /later ' /proc/mounts | cut -d' ' -f1 | tr '\\n' ,",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "from-host");
    assert_eq!(lines[1], "single-file");
    assert_eq!(lines[2], "bind-ro");
    assert_eq!(lines[3], "700");
    assert_eq!(lines[4], "first,second,", "both tmpfs mounted on /later, in order");
    assert!(!host_dir.path().join("x").exists());
}

#[test]
fn a_symlink_in_the_rootfs_cannot_send_a_mount_onto_the_host() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("precious"), "keep").unwrap();
    // rootfs/evil -> <host dir>, absolute, pointing out of the rootfs.
    std::os::unix::fs::symlink(host.path(), b.rootfs().join("evil")).unwrap();
    // ... and a relative one climbing out.
    std::os::unix::fs::symlink(
        "../../../../../../..".to_string() + host.path().to_str().unwrap(),
        b.rootfs().join("evil2"),
    )
    .unwrap();
    b.mount(json!({ "destination": "/evil", "type": "tmpfs", "source": "tmpfs" }));
    b.mount(json!({ "destination": "/evil2", "type": "tmpfs", "source": "tmpfs" }));
    b.edit(|c| c["root"]["readonly"] = false.into());
    let out = run_ok(&rt, &mut b, "ls /evil/ /evil2/; echo done");
    assert!(out.contains("done"));
    // The host directory was never mounted over, in any namespace's view
    // that matters: the host's.
    assert!(leaks::mounts_mentioning(host.path().to_str().unwrap()).is_empty());
    assert_eq!(std::fs::read_to_string(host.path().join("precious")).unwrap(), "keep");
    // The symlink was followed inside the rootfs instead.
    assert!(b.rootfs().join(host.path().strip_prefix("/").unwrap()).is_dir());
}

#[test]
fn devices_exist_with_the_modes_config_gives() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.edit(|c| {
        c["linux"]["devices"] = json!([
            { "path": "/dev/fuse-like", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600, "uid": 0, "gid": 0 },
            { "path": "/dev/sub/null2", "type": "c", "major": 1, "minor": 3, "fileMode": 0o640 }
        ]);
    });
    let out = run_ok(
        &rt,
        &mut b,
        "for d in null zero full random urandom tty fuse-like sub/null2; do stat -c '%n %a %t:%T' /dev/$d; done; \
         for l in ptmx fd stdin; do readlink /dev/$l; done; echo x > /dev/null && echo null-ok; head -c 4 /dev/zero | wc -c",
    );
    for want in [
        "/dev/null 666 1:3",
        "/dev/zero 666 1:5",
        "/dev/full 666 1:7",
        "/dev/random 666 1:8",
        "/dev/urandom 666 1:9",
        "/dev/tty 666 5:0",
        "/dev/fuse-like 600 1:3",
        "/dev/sub/null2 640 1:3",
        "pts/ptmx",
        "/proc/self/fd\n",
        "/proc/self/fd/0",
        "null-ok",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(out.trim_end().ends_with('4'));
}

#[test]
fn the_container_sees_its_own_cgroup() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    let id_hint = unique_id("cgpath");
    b.edit(|c| c["linux"]["cgroupsPath"] = json!(format!("/berth-test/{id_hint}")));
    let out = run_ok(
        &rt,
        &mut b,
        // v1: a directory per hierarchy; v2: the files right there.
        "cat /proc/self/cgroup; (test -e /sys/fs/cgroup/pids/pids.max || test -e /sys/fs/cgroup/pids.max) && echo own-pids",
    );
    assert!(out.contains(&format!(":/berth-test/{id_hint}\n")), "{out}");
    assert!(out.contains("own-pids"), "{out}");
    assert!(leaks::cgroup_dirs_named(&id_hint).is_empty(), "the cgroup is removed with the container");
    // Our own parent is ours to remove.
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(h.path().join("berth-test"));
    }
}

#[test]
fn no_pivot_mode_runs_the_container() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.sh("hostname; ls /bin/busybox");
    let id = unique_id("nopivot");
    let out = rt.exec(&["run", "--no-pivot", "--bundle", b.path().to_str().unwrap(), &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("/bin/busybox"));
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

#[test]
fn sysctls_apply_inside_the_container_only() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.edit(|c| c["linux"]["sysctl"] = json!({ "net.ipv4.ip_forward": "1", "kernel.shmmax": "123456789" }));
    let out = run_ok(&rt, &mut b, "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmax");
    assert_eq!(out, "1\n123456789\n");
    let host = std::fs::read_to_string("/proc/sys/kernel/shmmax").unwrap();
    assert_ne!(host.trim(), "123456789");
}

#[test]
fn user_namespace_maps_ids() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.edit(|c| {
        c["linux"]["namespaces"].as_array_mut().unwrap().push(json!({ "type": "user" }));
        c["linux"]["uidMappings"] = json!([{ "containerID": 0, "hostID": 100000, "size": 65536 }]);
        c["linux"]["gidMappings"] = json!([{ "containerID": 0, "hostID": 100000, "size": 65536 }]);
        // sysfs and cgroup mounts need more than an unprivileged user ns has.
        let mounts = c["mounts"].as_array_mut().unwrap();
        mounts.retain(|m| m["type"] != "cgroup");
    });
    let out = run_ok(&rt, &mut b, "cat /proc/self/uid_map /proc/self/gid_map; id -u");
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(&words[..3], ["0", "100000", "65536"], "{out}");
    assert_eq!(&words[3..6], ["0", "100000", "65536"], "{out}");
    assert_eq!(words[6], "0");
}

#[test]
fn a_namespace_is_joined_by_path() {
    let rt = runtime();
    let mut a = Bundle::busybox();
    a.edit(|c| c["hostname"] = "shared-uts".into());
    a.args(&["sleep", "1000"]);
    let first = unique_id("ns-a");
    rt.ok(&["run", "-d", "--bundle", a.path().to_str().unwrap(), &first]);
    let pid = rt.state(&first)["pid"].as_i64().unwrap();
    let mut b = Bundle::busybox();
    b.edit(|c| {
        c.as_object_mut().unwrap().remove("hostname");
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "uts");
        ns.push(json!({ "type": "uts", "path": format!("/proc/{pid}/ns/uts") }));
    });
    let out = run_ok(&rt, &mut b, "hostname");
    assert_eq!(out.trim(), "shared-uts");
    rt.ok(&["delete", "-f", &first]);
}

#[test]
fn time_namespace_offsets_apply() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.edit(|c| {
        c["linux"]["namespaces"].as_array_mut().unwrap().push(json!({ "type": "time" }));
        c["linux"]["timeOffsets"] = json!({ "boottime": { "secs": 86400000, "nanosecs": 0 } });
    });
    let out = run_ok(&rt, &mut b, "cut -d. -f1 /proc/uptime");
    let uptime: u64 = out.trim().parse().unwrap();
    assert!(uptime >= 86_400_000, "uptime {uptime} carries the boottime offset");
}

#[test]
fn without_namespaces_the_container_shares_the_hosts_and_mounts_nothing() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.edit(|c| {
        c["linux"]["namespaces"] = json!([]);
        c.as_object_mut().unwrap().remove("hostname");
    });
    b.args(&["sleep", "1000"]);
    let id = unique_id("nons");
    // Mounts under the bundle or the state root: other tests (and CI's
    // other jobs) mount and unmount elsewhere on the host meanwhile.
    let ours = |b: &Bundle, rt: &Runtime| {
        let (bundle, root) = (b.path().display().to_string(), rt.root().display().to_string());
        let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        table.lines().filter(|l| l.contains(&bundle) || l.contains(&root)).count()
    };
    let before = ours(&b, &rt);
    let out = rt.exec(&["run", "-d", "--bundle", b.path().to_str().unwrap(), &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let warning = String::from_utf8_lossy(&out.stderr);
    assert!(warning.contains("no mount namespace") && warning.contains("mounts"), "says what it skipped: {warning}");
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    for ns in ["mnt", "pid", "net", "ipc", "uts", "cgroup"] {
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert_eq!(ours, theirs, "the container inherits the {ns} namespace");
    }
    // Chrooted into the rootfs, with the host's mount table untouched.
    assert_eq!(std::fs::read_link(format!("/proc/{pid}/root")).unwrap(), b.rootfs());
    assert_eq!(before, ours(&b, &rt), "no mount was made on the host");
    rt.ok(&["delete", "-f", &id]);
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

#[test]
fn lsm_process_labels_the_host_cannot_apply_are_refused_by_name() {
    if berth_runtime::lsm::apparmor_enabled() || berth_runtime::lsm::selinux_enabled() {
        eprintln!("SKIPPED: this host has AppArmor or SELinux; the refusal path needs a host without");
        return;
    }
    let rt = runtime();
    for (edit, field) in [
        (json!({ "process": { "apparmorProfile": "docker-default" } }), "process.apparmorProfile"),
        (json!({ "process": { "selinuxLabel": "system_u:system_r:container_t:s0" } }), "process.selinuxLabel"),
    ] {
        let mut b = Bundle::busybox();
        b.edit(|c| {
            for (section, values) in edit.as_object().unwrap() {
                for (k, v) in values.as_object().unwrap() {
                    c[section][k] = v.clone();
                }
            }
        });
        let id = unique_id("lsm");
        let err = rt.fails(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
        assert!(err.contains(field) && err.contains("not enabled on this host"), "{err}");
        leaks::assert_none(&id, b.path(), rt.root(), None);
    }
}

#[test]
fn an_idmapped_bind_mount_shows_host_ids_through_its_mapping() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    let host = tempfile::tempdir().unwrap();
    if let Some(why) = idmap_unsupported(host.path()) {
        eprintln!("skipped: {why}");
        return;
    }
    let file = host.path().join("owned");
    std::fs::write(&file, "x").unwrap();
    std::os::unix::fs::chown(&file, Some(1000), Some(1000)).unwrap();
    // The directory too, or root inside (on-disk 0, unmapped) cannot write.
    std::os::unix::fs::chown(host.path(), Some(1000), Some(1000)).unwrap();
    // A mount mapping reads like a user namespace's: containerID is the id
    // on the source filesystem, hostID the id seen through the mount. So
    // files owned by 1000.. on disk appear as 0.. in the container.
    b.mount(json!({
        "destination": "/data", "type": "bind", "source": host.path(), "options": ["rbind"],
        "uidMappings": [{ "containerID": 1000, "hostID": 0, "size": 10 }],
        "gidMappings": [{ "containerID": 1000, "hostID": 0, "size": 10 }]
    }));
    let out = run_ok(&rt, &mut b, "stat -c %u:%g /data/owned; touch /data/new && stat -c %u:%g /data/new");
    assert_eq!(out, "0:0\n0:0\n", "{out}");
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(&file).unwrap();
    assert_eq!((m.uid(), m.gid()), (1000, 1000), "the host file is untouched");
    let created = std::fs::metadata(host.path().join("new")).unwrap();
    assert_eq!((created.uid(), created.gid()), (1000, 1000), "root inside writes as host 1000");
}

/// Why the filesystem at `dir` cannot take idmapped mounts, if it cannot:
/// tmpfs gained them only in Linux 6.3 (the v2 guest's kernel is 6.1 and
/// its every directory is on tmpfs). Other filesystems here have had them
/// since 5.12, which the runtime requires anyway.
fn idmap_unsupported(dir: &std::path::Path) -> Option<String> {
    let fs = nix::sys::statfs::statfs(dir).unwrap();
    if fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC {
        return None;
    }
    let release = nix::sys::utsname::uname().unwrap().release().to_string_lossy().into_owned();
    let mut v = release.split(|c: char| !c.is_ascii_digit()).map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    ((major, minor) < (6, 3))
        .then(|| format!("{} is on tmpfs, which Linux {release} cannot idmap (6.3+)", dir.display()))
}

/// The engine's rootfs overlay (annotation org.berth.rootfs.overlay):
/// mounted on root.path inside the container's mount namespace only, its
/// writes in the upper directory; what is wrong with it is refused by
/// name before anything is made.
#[test]
fn an_annotated_overlay_is_the_rootfs_and_never_a_host_mount() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    let dirs = tempfile::tempdir().unwrap();
    let (layer, upper, work) = (dirs.path().join("layer"), dirs.path().join("upper"), dirs.path().join("work"));
    for d in [&layer, &upper, &work] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(layer.join("from-layer"), "top layer\n").unwrap();
    std::fs::create_dir(b.path().join("merged")).unwrap();
    let overlay = json!({ "lower": [layer, b.rootfs()], "upper": upper, "work": work }).to_string();
    b.edit(|c| {
        c["root"] = json!({ "path": "merged", "readonly": false });
        c["annotations"] = json!({ "org.berth.rootfs.overlay": overlay });
    });
    b.args(&["sleep", "1000"]);
    let id = unique_id("ovl");
    let bundle = b.path().display().to_string();
    let on_host = || std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().any(|l| l.contains(&bundle));
    let out = rt.exec(&["run", "-d", "--bundle", &bundle, &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let guard = Deleted(&rt, id.clone());
    assert!(!on_host(), "the overlay is mounted on the host");
    let exec = |script: &str| rt.ok(&["exec", &id, "sh", "-c", script]);
    assert_eq!(exec("cat /from-layer"), "top layer\n");
    assert!(exec("grep ' / ' /proc/mounts").starts_with("overlay / overlay "));
    exec("echo written > /new");
    assert_eq!(std::fs::read_to_string(upper.join("new")).unwrap(), "written\n");
    assert!(!b.rootfs().join("new").exists() && !b.path().join("merged/new").exists());
    drop(guard);
    assert!(!on_host());
    leaks::assert_none(&id, b.path(), rt.root(), None);

    // Refused, each naming the annotation, nothing made.
    for (annotation, namespaces, says) in [
        (json!({ "lower": ["relative"] }).to_string(), None, "relative is not an absolute path"),
        ("{\"lower\": 7}".to_owned(), None, "invalid type"),
        (
            json!({ "lower": [layer] }).to_string(),
            Some(json!([{ "type": "pid" }, { "type": "uts" }])),
            "needs a new mount namespace",
        ),
    ] {
        b.edit(|c| {
            c["annotations"] = json!({ "org.berth.rootfs.overlay": annotation });
            if let Some(ns) = &namespaces {
                c["linux"]["namespaces"] = ns.clone();
            }
        });
        b.write();
        let id = unique_id("ovl-bad");
        let err = rt.fails(&["run", "--bundle", &bundle, &id]);
        assert!(err.contains("org.berth.rootfs.overlay") && err.contains(says), "{err}");
        leaks::assert_none(&id, b.path(), rt.root(), None);
    }
}

/// Deletes the container when the test ends, passed or not.
struct Deleted<'a>(&'a Runtime, String);

impl Drop for Deleted<'_> {
    fn drop(&mut self) {
        let _ = self.0.exec(&["delete", "-f", &self.1]);
    }
}
