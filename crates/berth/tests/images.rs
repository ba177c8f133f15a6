//! The `berth` image commands end to end, against a real registry.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use berth_testkit::image::{Comp, Layer, OciLayout, busybox_layer};
use berth_testkit::registry::{Registry, RegistryOptions};
use serde_json::{Value, json};

/// A `berth` with its own root, runroot, config and auth files.
struct Berth {
    tmp: tempfile::TempDir,
}

impl Berth {
    fn new() -> Berth {
        berth_testkit::require_root();
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("config.toml"), "[registry]\ncerts_dirs = []\n").unwrap();
        Berth { tmp }
    }

    fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
        c.arg("--root")
            .arg(self.root())
            .arg("--runroot")
            .arg(self.tmp.path().join("run"))
            .arg("--config")
            .arg(self.tmp.path().join("config.toml"))
            .args(args)
            .env("BERTH_AUTH_FILE", self.tmp.path().join("auth.json"))
            .env("DOCKER_CONFIG", self.tmp.path().join("docker"))
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "berth {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    }
}

fn push_busybox(reg: &Registry, name: &str, extra: &[&str]) -> berth_testkit::image::BuiltImage {
    let tmp = tempfile::tempdir().unwrap();
    let mut l = OciLayout::new(tmp.path());
    let img = l.image(
        &[busybox_layer(), Layer::new().file("etc/motd", b"hi").tar()],
        Comp::Gzip,
        json!({"Cmd": ["sh"], "Env": ["PATH=/bin"], "Labels": {"a": "b"}}),
        "amd64",
    );
    l.tag(&img, "t");
    l.push("t", &format!("{}/{name}", reg.addr()), extra);
    img
}

#[test]
fn pull_list_inspect_tag_and_remove() {
    let reg = Registry::start();
    let img = push_busybox(&reg, "bb:1", &[]);
    let b = Berth::new();
    let name = format!("{}/bb:1", reg.addr());
    let out = b.ok(&["pull", &name]);
    assert_eq!(out.trim(), name);

    let table = b.ok(&["images"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("REPOSITORY") && lines[0].contains("IMAGE ID") && lines[0].ends_with("SIZE"));
    assert!(lines[1].starts_with(&format!("{}/bb", reg.addr())) && lines[1].contains(&img.config_digest[7..19]));
    let id = b.ok(&["images", "-q"]);
    assert_eq!(id.trim(), &img.config_digest[7..19]);
    let digests = b.ok(&["images", "--digests"]);
    assert!(digests.contains("DIGEST") && digests.contains(&img.manifest_digest));
    let json_line = b.ok(&["images", "--format", "json"]);
    let v: Value = serde_json::from_str(json_line.lines().next().unwrap()).unwrap();
    assert_eq!(v["Repository"], format!("{}/bb", reg.addr()));
    assert_eq!(v["Tag"], "1");
    assert_eq!(v["Digest"], img.manifest_digest);

    let inspect: Value = serde_json::from_str(&b.ok(&["image", "inspect", &name])).unwrap();
    let i = &inspect[0];
    assert_eq!(i["Id"], img.config_digest);
    assert_eq!(i["RepoTags"], json!([name]));
    assert_eq!(i["RepoDigests"], json!([format!("{}/bb@{}", reg.addr(), img.manifest_digest)]));
    assert_eq!(i["Config"]["Cmd"], json!(["sh"]));
    assert_eq!(i["Config"]["Labels"]["a"], "b");
    assert_eq!(i["RootFS"]["Type"], "layers");
    assert_eq!(i["RootFS"]["Layers"], json!(img.diff_ids));
    assert!(i["Size"].as_u64().unwrap() > 1_000_000);
    assert_eq!(i["Os"], "linux");

    b.ok(&["tag", &name, "mine:latest"]);
    assert!(b.ok(&["images"]).lines().any(|l| l.starts_with("mine ") && l.contains("latest")));
    assert_eq!(b.ok(&["images", "-q"]).lines().count(), 1, "one image, two tags");
    let by_id = b.run(&["rmi", &img.config_digest[7..19]]);
    assert!(!by_id.status.success(), "an image with two tags must need -f");
    assert!(String::from_utf8_lossy(&by_id.stderr).contains("must be forced"));
    assert_eq!(b.ok(&["rmi", "mine"]).trim(), "Untagged: mine:latest");
    let out = b.ok(&["rmi", &name]);
    assert!(
        out.contains(&format!("Untagged: {name}")) && out.contains(&format!("Deleted: {}", img.config_digest)),
        "{out}"
    );
    assert_eq!(b.ok(&["images", "-q"]), "");
    // GC ran: nothing left in the store.
    assert_eq!(std::fs::read_dir(b.root().join("content/sha256")).unwrap().count(), 0);
    let snaps: Vec<_> = std::fs::read_dir(b.root().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.len() == 64)
        .collect();
    assert!(snaps.is_empty(), "{snaps:?}");
    let missing = b.run(&["image", "inspect", "nope"]);
    assert!(!missing.status.success());
}

#[test]
fn save_and_load_round_trip_in_both_archive_formats() {
    let reg = Registry::start();
    let img = push_busybox(&reg, "saved:2", &[]);
    let b = Berth::new();
    let name = format!("{}/saved:2", reg.addr());
    b.ok(&["pull", "-q", &name]);
    let archive = b.tmp.path().join("out.tar");
    b.ok(&["save", "-o", archive.to_str().unwrap(), &name]);

    // The anchors read it both ways.
    for transport in ["docker-archive", "oci-archive"] {
        let o = Command::new("skopeo")
            .args(["inspect", "--raw", &format!("{transport}:{}", archive.display())])
            .output()
            .unwrap();
        assert!(o.status.success(), "skopeo {transport}: {}", String::from_utf8_lossy(&o.stderr));
    }

    let other = Berth::new();
    let out = other.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(out.trim(), format!("Loaded image: {name}"));
    let i: Value = serde_json::from_str(&other.ok(&["inspect", &name])).unwrap();
    assert_eq!(i[0]["Id"], img.config_digest);
    assert_eq!(i[0]["Descriptor"]["digest"], img.manifest_digest, "manifest digest kept");

    // A plain docker-archive with uncompressed layers (as skopeo writes it).
    let dockerar = b.tmp.path().join("docker.tar");
    let o = Command::new("skopeo")
        .args(["copy", "--quiet", &format!("docker-archive:{}", archive.display())])
        .arg(format!("docker-archive:{}:again/x:1", dockerar.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let third = Berth::new();
    assert_eq!(third.ok(&["load", "-i", dockerar.to_str().unwrap()]).trim(), "Loaded image: again/x:1");
    let i: Value = serde_json::from_str(&third.ok(&["inspect", "again/x:1"])).unwrap();
    assert_eq!(i[0]["Id"], img.config_digest, "same config, same ID");
    assert_eq!(i[0]["RootFS"]["Layers"], json!(img.diff_ids));

    // An OCI layout directory, the testkit's own.
    let tmp = tempfile::tempdir().unwrap();
    let mut l = OciLayout::new(tmp.path());
    let lone = l.image(&[Layer::new().file("x", b"x").tar()], Comp::Zstd, json!({}), "amd64");
    l.tag(&lone, "t");
    let out = third.ok(&["load", "-i", tmp.path().to_str().unwrap()]);
    assert_eq!(out.trim(), format!("Loaded image ID: {}", lone.config_digest));
    assert_eq!(third.ok(&["images", "-q"]).lines().count(), 2);
    let pruned = third.ok(&["image", "prune", "-f"]);
    assert!(pruned.contains(&lone.config_digest), "{pruned}");
    assert_eq!(third.ok(&["images", "-q"]).lines().count(), 1);
}

#[test]
fn login_logout_and_push_with_credentials() {
    let reg = Registry::start_with(RegistryOptions { users: vec![("bob".into(), "pw".into())], ..Default::default() });
    let img = push_busybox(&reg, "p:1", &["--dest-creds", "bob:pw"]);
    let b = Berth::new();
    let name = format!("{}/p:1", reg.addr());
    assert!(!b.run(&["pull", "-q", &name]).status.success());

    let mut bad = b.cmd(&["login", "-u", "bob", "--password-stdin", &reg.addr()]);
    bad.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = bad.spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"wrong\n").unwrap();
    assert!(!child.wait_with_output().unwrap().status.success());

    let mut good = b.cmd(&["login", "-u", "bob", "--password-stdin", &reg.addr()]);
    good.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = good.spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"pw\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Login Succeeded");

    b.ok(&["pull", "-q", &name]);
    let dest = format!("{}/copied/p:2", reg.addr());
    b.ok(&["tag", &name, &dest]);
    let out = b.ok(&["push", "-q", &dest]);
    assert!(out.contains(&img.manifest_digest), "{out}");
    let o = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", "--creds", "bob:pw", &format!("docker://{dest}")])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(berth_testkit::image::sha256(&o.stdout), img.manifest_digest);

    assert!(b.ok(&["logout", &reg.addr()]).contains("Removing login credentials"));
    b.ok(&["rmi", &name, &dest]);
    assert!(!b.run(&["pull", "-q", &name]).status.success());
}

#[test]
fn a_pull_killed_with_sigkill_leaves_a_consistent_store_and_the_next_pull_completes() {
    let reg = Registry::start();
    // A big incompressible layer, so the kill likely lands mid-download.
    let mut noise = vec![0u8; 48 << 20];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for chunk in noise.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut l = OciLayout::new(tmp.path());
    let img = l.image(&[busybox_layer(), Layer::new().file("noise", &noise).tar()], Comp::None, json!({}), "amd64");
    l.tag(&img, "t");
    let name = format!("{}/big:1", reg.addr());
    l.push("t", &name, &[]);

    let b = Berth::new();
    let ingest = b.root().join("content/ingest");
    let mut child = b.cmd(&["pull", "-q", &name]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Kill as soon as a download has started (or give up waiting: the
    // pull may simply have finished first).
    for _ in 0..2000 {
        let started = std::fs::read_dir(&ingest)
            .map(|d| d.flatten().any(|e| e.metadata().map(|m| m.len() > 0).unwrap_or(false)))
            .unwrap_or(false);
        if started || child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let _ = child.kill();
    let _ = child.wait();

    // Whatever state the kill left, the store is consistent and the next pull finishes.
    b.ok(&["pull", "-q", &name]);
    let i: Value = serde_json::from_str(&b.ok(&["inspect", &name])).unwrap();
    assert_eq!(i[0]["Id"], img.config_digest);
    b.ok(&["image", "prune", "-f"]);
    assert_eq!(std::fs::read_dir(&ingest).unwrap().count(), 0, "partial downloads left after prune");
    assert_eq!(std::fs::read_dir(b.root().join("snapshots/tmp")).unwrap().count(), 0);
    let layer = b.root().join("content/sha256").join(&img.layer_digests[1][7..]);
    assert_eq!(berth_testkit::image::sha256(&std::fs::read(layer).unwrap()), img.layer_digests[1]);
}

/// A pull killed while it unpacks: after `image prune` no half-unpacked
/// directory and no lock file of a snapshot that does not exist remain,
/// and the next pull records the image's whole size (what a store of its
/// own says), although a layer it needs was unpacked by the killed pull
/// and never recorded.
#[test]
fn a_pull_killed_mid_unpack_leaves_no_temp_dirs_or_locks_and_the_size_stays_right() {
    let reg = Registry::start();
    let mut noise = vec![0u8; 48 << 20];
    let mut x: u64 = 0x2545f4914f6cdd1d;
    for chunk in noise.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut l = OciLayout::new(tmp.path());
    let img = l.image(&[busybox_layer(), Layer::new().file("noise", &noise).tar()], Comp::None, json!({}), "amd64");
    l.tag(&img, "t");
    let name = format!("{}/unpack:1", reg.addr());
    l.push("t", &name, &[]);
    let size = |b: &Berth| {
        let i: Value = serde_json::from_str(&b.ok(&["image", "inspect", &name])).unwrap();
        i[0]["Size"].as_u64().unwrap()
    };
    let alone = Berth::new();
    alone.ok(&["pull", "-q", &name]);
    let want = size(&alone);

    let b = Berth::new();
    let snaps = b.root().join("snapshots");
    let mut child = b.cmd(&["pull", "-q", &name]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Kill once the small base layer is unpacked and the big one is being unpacked.
    let unpacking = || {
        let done = std::fs::read_dir(&snaps).into_iter().flatten().flatten().any(|e| e.path().join("fs").is_dir());
        let busy = std::fs::read_dir(snaps.join("tmp")).is_ok_and(|mut d| d.next().is_some());
        done && busy
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !unpacking() {
        assert!(child.try_wait().unwrap().is_none(), "the pull ended before it was caught unpacking");
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // Pulled again before anything collects the unrecorded base snapshot.
    b.ok(&["pull", "-q", &name]);
    assert_eq!(size(&b), want, "size after a killed pull");
    b.ok(&["image", "prune", "-f"]);
    assert_eq!(std::fs::read_dir(snaps.join("tmp")).unwrap().count(), 0, "half-unpacked directories left");
    for lock in std::fs::read_dir(snaps.join("locks")).unwrap() {
        let lock = lock.unwrap().file_name();
        assert!(snaps.join(&lock).join("fs").is_dir(), "lock of a snapshot that is not there: {lock:?}");
    }
    b.ok(&["rmi", &name]);
    assert_eq!(std::fs::read_dir(snaps.join("locks")).unwrap().count(), 0, "locks of removed snapshots");
}
