//! `berth system check [--repair] [--quick]`: things broken on purpose
//! (a flipped byte in a blob, a deleted snapshot, a container whose
//! processes died unseen, a created container without its bundle, the
//! leftovers of a container without a record) are each reported, and
//! `--repair` fixes what is safe to fix.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

use berth_testkit::cgroup::CgroupParent;
use berth_testkit::invariants::Scope;
use common::Berth;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `system check` with `flags`: its exit code and output (both streams).
fn check(b: &Berth, flags: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["system", "check"];
    args.extend(flags);
    let o = b.cmd(&args);
    let out = format!("{}{}", stdout(&o), stderr(&o));
    eprintln!("$ berth {} -> {:?}\n{out}", args.join(" "), o.status.code());
    (o.status.code(), out)
}

fn assert_clean(b: &Berth) {
    let (code, out) = check(b, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out, "No problems found\n");
}

fn root(b: &Berth) -> PathBuf {
    b.dir.path().join("root")
}

/// The image's layer blobs (the big ones: not JSON).
fn layer_blobs(b: &Berth) -> Vec<PathBuf> {
    let dir = root(b).join("content/sha256");
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::read(p).is_ok_and(|d| d.first() != Some(&b'{')))
        .collect()
}

#[test]
fn a_corrupt_blob_is_found_removed_by_repair_and_pulled_again() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    assert_clean(&b);
    let blob = layer_blobs(&b).pop().expect("a layer blob");
    let mut data = std::fs::read(&blob).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x20;
    std::fs::write(&blob, &data).unwrap();
    let name = format!("blob sha256:{}", blob.file_name().unwrap().to_string_lossy());

    let (code, out) = check(&b, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&format!("{name}: corrupt: its content hashes to sha256:")), "{out}");
    assert!(out.contains("1 problem found (berth system check --repair fixes"), "{out}");
    let (code, out) = check(&b, &["--quick"]);
    assert_eq!((code, out.as_str()), (Some(0), "No problems found\n"), "--quick does not hash blobs");

    let (code, out) = check(&b, &["--repair"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("{name}: corrupt")) && out.contains("repaired: removed it"), "{out}");
    // Its image lost a blob: nothing uses it, so it goes too (a pull brings it back).
    assert!(out.contains("damaged: missing layer blob") && out.contains("repaired: removed the image"), "{out}");
    assert!(!blob.exists());
    assert_clean(&b);
    b.ok(&["pull", &b.image]);
    assert_eq!(std::fs::read(&blob).unwrap().len(), data.len(), "fetched again");
    assert_eq!(b.ok(&["run", "--rm", "--network", "none", &b.image, "echo", "whole"]), "whole\n");
    assert_clean(&b);
}

/// The snapshot dirs of unpacked layers.
fn snapshot_dirs(b: &Berth) -> Vec<PathBuf> {
    let dir = root(b).join("snapshots");
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n.len() == 64))
        .collect()
}

#[test]
fn a_deleted_snapshot_is_found_and_an_image_in_use_is_left_alone() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let created = b.ok(&["create", "--network", "none", &b.image, "true"]);
    let snap = snapshot_dirs(&b).pop().expect("a snapshot");
    std::fs::remove_dir_all(&snap).unwrap();
    let chain = snap.file_name().unwrap().to_string_lossy().into_owned();

    let (code, out) = check(&b, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&format!("snapshot sha256:{chain}: recorded, but")), "{out}");
    assert!(out.contains(&format!("damaged: missing layer snapshot sha256:{chain}")), "{out}");
    let short = &created.trim()[..12];
    assert!(
        out.contains(&format!("container {short}")) && out.contains("what it uses is gone"),
        "the container that needs it is named: {out}"
    );
    // The image is in use: repair leaves it (and says so), and fails.
    let (code, out) = check(&b, &["--repair"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("repair failed: container/") && out.contains("uses it"), "{out}");
    assert!(out.contains("not repaired"), "{out}");
    assert!(b.ok(&["images"]).contains("test/busybox"), "an image in use stays");

    // Once the container is gone, repair removes the image and a pull restores it.
    b.ok(&["rm", "-f", created.trim()]);
    let (code, out) = check(&b, &["--repair"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("repaired: removed the image"), "{out}");
    assert_clean(&b);
    b.ok(&["pull", &b.image]);
    assert!(snap.join("fs").is_dir(), "unpacked again");
    assert_eq!(b.ok(&["run", "--rm", "--network", "none", &b.image, "echo", "whole"]), "whole\n");
}

fn inspect_state(b: &Berth, id: &str) -> serde_json::Value {
    b.inspect(id)["State"].clone()
}

fn parent_of(pid: i64) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit_once(')').unwrap().1.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn sigkill(pid: i64) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
}

fn gone(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z"))
}

#[test]
fn a_running_record_whose_processes_died_is_marked_exited_and_starts_again() {
    let b = Berth::new();
    let id = b.ok(&["run", "-d", "--network", "none", &b.image, "sleep", "1000"]).trim().to_owned();
    let pid = inspect_state(&b, &id)["Pid"].as_i64().unwrap();
    let shim = parent_of(pid);
    // The shim first, so nobody records the exit.
    sigkill(shim);
    sigkill(pid);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !(gone(pid) && gone(shim)) {
        assert!(std::time::Instant::now() < deadline, "the processes did not die");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // What a reboot leaves: the runroot (a tmpfs) is empty, so no shim
    // files say how the container ended (with them, `inspect` finds the
    // dead shim and records the exit). Here the runtime's state is left,
    // which a real reboot takes too: `system check` finds that.
    std::fs::remove_dir_all(b.dir.path().join("run/s").join(&id[..12])).unwrap();
    // Refresh sees it (it said running before): exited, code unknown
    // (137, as for the container of a dead shim).
    let state = inspect_state(&b, &id);
    assert_eq!((state["Status"].as_str(), state["ExitCode"].as_i64()), (Some("exited"), Some(137)), "{state}");
    assert!(!state["FinishedAt"].as_str().unwrap_or_default().is_empty(), "{state}");
    assert_eq!(inspect_state(&b, &id)["FinishedAt"], state["FinishedAt"], "saved: one finish time");

    let (code, out) = check(&b, &[]);
    assert_eq!(code, Some(1), "{out}");
    let line = format!("container {} (", &id[..12]);
    assert!(out.contains(&line) && out.contains("exited, but the runtime still has its state"), "{out}");
    let (code, out) = check(&b, &["--repair"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("repaired: deleted the runtime's state"), "{out}");
    assert_clean(&b);
    b.ok(&["start", &id]);
    assert_eq!(b.ok(&["exec", &id, "echo", "again"]), "again\n");
    b.ok(&["rm", "-f", &id]);
    assert_clean(&b);
}

#[test]
fn a_created_container_without_its_bundle_is_marked_dead_and_removed_by_rm() {
    let b = Berth::new();
    let id = b.ok(&["create", "--network", "none", &b.image, "true"]).trim().to_owned();
    // What a `run -d` killed before it wrote the bundle leaves.
    let config = b.dir.path().join("run/containers").join(&id).join("config.json");
    std::fs::remove_file(&config).unwrap();

    let (code, out) = check(&b, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&format!("created, but its bundle is incomplete (no {})", config.display())), "{out}");
    let (code, out) = check(&b, &["--repair"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("repaired: marked it dead (rm removes it)"), "{out}");
    assert_eq!(inspect_state(&b, &id)["Status"], "dead");
    assert!(b.ok(&["ps", "-a"]).contains("Dead") || b.ok(&["ps", "-a", "--format", "{{.State}}"]).contains("dead"));
    assert_clean(&b);
    b.ok(&["rm", "-f", &id]);
    let scope =
        Scope { root: root(&b), runroot: b.dir.path().join("run"), cgroup_parent: String::new(), private_netns: false };
    assert_eq!(scope.leftovers_of(&id), vec![]);
}

/// What a container whose record is gone (an `rm` killed after removing
/// it, or a record lost) can leave: a runtime state with a process, a
/// mount, a run directory, an address lease, a lock file.
fn leave_an_orphan(b: &Berth, id: &str, cgroups: &CgroupParent) -> PathBuf {
    let run = b.dir.path().join("run");
    let bundle = run.join("containers").join(id);
    berth_testkit::make_busybox_rootfs(&bundle.join("rootfs"));
    let mut config = berth_testkit::default_config();
    config["process"]["args"] = serde_json::json!(["sleep", "1000"]);
    config["linux"]["cgroupsPath"] = format!("{}/{id}", cgroups.path()).into();
    std::fs::write(bundle.join("config.json"), serde_json::to_vec(&config).unwrap()).unwrap();
    let runtime = berth_testkit::workspace_bin("berth-runtime");
    let mut c = Command::new(runtime);
    c.arg("--root").arg(run.join("runtime")).args(["create", "--bundle"]).arg(&bundle).arg(id);
    let o = berth_testkit::output_via_files(&mut c);
    assert!(o.status.success(), "runtime create: {}", stderr(&o));
    let extra = bundle.join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    nix::mount::mount(Some("tmpfs"), &extra, Some("tmpfs"), nix::mount::MsFlags::empty(), None::<&str>).unwrap();
    // A pod's user namespace pin (berthd's pods with userns_options POD).
    let pin = bundle.join("userns");
    std::fs::write(&pin, "").unwrap();
    nix::mount::mount(Some("/proc/self/ns/user"), &pin, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>)
        .unwrap();
    let ipam = run.join("cni/ipam/bridge");
    std::fs::create_dir_all(&ipam).unwrap();
    std::fs::write(ipam.join("10.77.0.9"), format!("{id}\r\neth0")).unwrap();
    std::fs::create_dir_all(run.join("locks")).unwrap();
    std::fs::write(run.join("locks").join(format!("{id}.lock")), "").unwrap();
    extra
}

fn is_mounted(p: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().any(|l| l.split(' ').nth(4) == p.to_str())
}

#[test]
fn what_a_container_without_a_record_left_is_found_and_removed() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let cgroups = CgroupParent::new("check");
    let id = berth_engine::store::new_id();
    let extra = leave_an_orphan(&b, &id, &cgroups);
    let init = berth_testkit::leaks::processes_with(&id);
    assert!(!init.is_empty(), "the orphan's init waits");
    let mut guard = Orphan { extra: extra.clone(), runtime_root: b.dir.path().join("run/runtime"), id: id.clone() };

    let (code, out) = check(&b, &[]);
    assert_eq!(code, Some(1), "{out}");
    let line = out.lines().find(|l| l.starts_with(&format!("container {}: no record", &id[..12]))).unwrap_or("");
    for what in [
        "its run directory",
        "the runtime's state",
        "a mount (",
        "its user namespace pin (",
        "its address lease 10.77.0.9",
        "its lock file",
    ] {
        assert!(line.contains(what), "{what} is reported: {out}");
    }
    let (code, out) = check(&b, &["--repair"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("repaired: removed them"), "{out}");
    assert!(!is_mounted(&extra), "unmounted");
    assert!(!is_mounted(&extra.with_file_name("userns")), "the pin unmounted");
    assert!(berth_testkit::leaks::processes_with(&id).is_empty(), "its process is gone with the runtime's state");
    let scope = Scope {
        root: root(&b),
        runroot: b.dir.path().join("run"),
        cgroup_parent: cgroups.name.clone(),
        private_netns: false,
    };
    assert_eq!(scope.leftovers_of(&id), vec![]);
    assert_clean(&b);
    guard.id.clear();
}

/// Cleans an orphan a failed test left (the repair did not).
struct Orphan {
    extra: PathBuf,
    runtime_root: PathBuf,
    id: String,
}

impl Drop for Orphan {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.extra, nix::mount::MntFlags::MNT_DETACH);
        let _ = nix::mount::umount2(&self.extra.with_file_name("userns"), nix::mount::MntFlags::MNT_DETACH);
        if !self.id.is_empty() {
            let mut c = Command::new(berth_testkit::workspace_bin("berth-runtime"));
            c.arg("--root").arg(&self.runtime_root).args(["delete", "--force", &self.id]);
            let _ = berth_testkit::output_via_files(&mut c);
        }
    }
}
