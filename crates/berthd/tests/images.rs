//! The CRI ImageService, driven with crictl v1.36 as a user would (and
//! with a CRI client where crictl decides on its own): pulls through the
//! containerd-style mirrors to the stand-in registry, one store shared
//! with the `berth` CLI, the CRI's "absent is not an error" rules, gRPC
//! codes, and the image filesystem. Each test has its own berthd, root and
//! registry, removed when it ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use berth_testkit::cgroup::CgroupParent;
use berth_testkit::cri::{Berthd, StandIns, stand_in_digest, stand_in_layout};
use berth_testkit::registry::{Registry, RegistryOptions};
use berth_testkit::workspace_bin;
use serde_json::Value;

const BUSYBOX: &str = "docker.io/library/busybox:latest";
const USER_UID: &str = "gcr.io/k8s-staging-cri-tools/test-image-user-uid:latest";
const USER_NAME: &str = "gcr.io/k8s-staging-cri-tools/test-image-user-username:latest";
const PAUSE: &str = "registry.k8s.io/pause:3.10";

/// A berthd whose `[registry]` mirrors every upstream to `stand_ins`.
fn berthd(stand_ins: &StandIns) -> Berthd {
    Berthd::start(&format!("[registry]\nconfig_path = \"{}\"\n", stand_ins.certs_d().display()))
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn images_json(d: &Berthd) -> Vec<Value> {
    json(&d.crictl_ok(&["images", "-o", "json"]))["images"].as_array().cloned().unwrap_or_default()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The `berth` CLI on a berthd's root (its own runroot), with the same
/// mirrors; containers it makes are removed when this is dropped.
struct Cli<'a> {
    d: &'a Berthd,
    config: PathBuf,
    cgroup: CgroupParent,
    containers: std::cell::RefCell<Vec<String>>,
}

impl<'a> Cli<'a> {
    fn new(d: &'a Berthd, stand_ins: &StandIns) -> Cli<'a> {
        let config = d.dir.path().join("berth.toml");
        std::fs::write(&config, format!("[registry]\nconfig_path = \"{}\"\n", stand_ins.certs_d().display())).unwrap();
        Cli { d, config, cgroup: CgroupParent::new("cli"), containers: Default::default() }
    }

    fn cmd(&self, args: &[&str]) -> Output {
        let mut c = Command::new(workspace_bin("berth"));
        c.arg("--root").arg(self.d.dir.path().join("root"));
        c.arg("--runroot").arg(self.d.dir.path().join("cli-run"));
        c.arg("--config").arg(&self.config);
        c.arg("--runtime").arg(workspace_bin("berth-runtime"));
        c.env("BERTH_SHIM", workspace_bin("berth-shim")).env("BERTH_CGROUP_PARENT", self.cgroup.path());
        c.args(args);
        berth_testkit::output_via_files(&mut c)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(out.status.success(), "berth {args:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `berth create`: a container that holds `image`.
    fn create(&self, image: &str) -> String {
        let id = self.ok(&["create", "--network", "none", image, "true"]).trim().to_string();
        self.containers.borrow_mut().push(id.clone());
        id
    }
}

impl Drop for Cli<'_> {
    fn drop(&mut self) {
        for id in self.containers.borrow().iter() {
            let _ = self.cmd(&["rm", "-f", id]);
        }
    }
}

/// RemoveImage through a CRI client: crictl checks ImageStatus first and
/// refuses an absent image itself, before berthd is asked.
fn remove_image_rpc(d: &Berthd, image: &str) -> Result<(), tonic::Status> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut c = berth_cri_api::image_client(&d.endpoint()).await.unwrap();
        let spec = berth_cri_api::v1::ImageSpec { image: image.into(), ..Default::default() };
        c.remove_image(berth_cri_api::v1::RemoveImageRequest { image: Some(spec) }).await.map(|_| ())
    })
}

/// The image ID of a stand-in: its config's digest, from the layout.
fn stand_in_id(reference: &str) -> String {
    let manifest = stand_in_digest(reference);
    let blob = |d: &str| stand_in_layout().join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    let m: Value = serde_json::from_slice(&std::fs::read(blob(&manifest)).unwrap()).unwrap();
    let m = match m["manifests"].as_array() {
        // An index: the amd64 manifest.
        Some(list) => {
            let d = list.iter().find(|x| x["platform"]["architecture"] == "amd64").unwrap()["digest"].clone();
            serde_json::from_slice(&std::fs::read(blob(d.as_str().unwrap())).unwrap()).unwrap()
        }
        None => m,
    };
    m["config"]["digest"].as_str().unwrap().to_string()
}

#[test]
fn crictl_pull_images_inspecti_and_rmi() {
    let s = StandIns::start(Some(&[BUSYBOX]));
    let d = berthd(&s);
    let id = stand_in_id(BUSYBOX);
    let out = d.crictl_ok(&["pull", "busybox"]);
    assert!(out.contains(&format!("Image is up to date for {id}")), "PullImage answers the image ID: {out}");

    let table = d.crictl_ok(&["images"]);
    assert!(table.lines().any(|l| l.starts_with("docker.io/library/busybox") && l.contains("latest")), "{table}");
    let images = images_json(&d);
    assert_eq!(images.len(), 1, "{images:?}");
    let img = &images[0];
    assert_eq!(img["id"], id.as_str());
    assert_eq!(img["repoTags"], serde_json::json!([BUSYBOX]));
    let digest = format!("docker.io/library/busybox@{}", stand_in_digest(BUSYBOX));
    assert_eq!(img["repoDigests"], serde_json::json!([digest]));
    let size: u64 = img["size"].as_str().unwrap().parse().unwrap();
    assert!(size > 100_000, "busybox's unpacked size: {img}");
    assert_eq!(img["pinned"], false);
    assert_eq!(img["spec"]["image"], id.as_str());

    // By name, ID and digest; verbose info as containerd's.
    for key in ["busybox", id.as_str(), &id[7..19], digest.as_str()] {
        let st = json(&d.crictl_ok(&["inspecti", "-o", "json", key]));
        assert_eq!(st["status"]["id"], id.as_str(), "{key}: {st}");
        // crictl shows the "info" entry's JSON as the info itself.
        let info = &st["info"];
        assert!(info["chainID"].as_str().is_some_and(|c| c.starts_with("sha256:")), "{st}");
        assert_eq!(info["imageSpec"]["rootfs"]["type"], "layers", "{st}");
        assert!(info["imageSpec"]["config"]["Cmd"].is_array(), "{st}");
    }
    // Filtered lists: by a name it has, and one it has not.
    let f = json(&d.crictl_ok(&["images", "-o", "json", "busybox:latest"]));
    assert_eq!(f["images"].as_array().map(Vec::len), Some(1), "{f}");
    let f = json(&d.crictl_ok(&["images", "-o", "json", "nginx"]));
    assert!(f["images"].as_array().is_none_or(Vec::is_empty), "{f}");

    let out = d.crictl_ok(&["rmi", "busybox"]);
    assert!(out.contains(&format!("Deleted: {BUSYBOX}")), "{out}");
    assert!(d.crictl_ok(&["images", "-q"]).trim().is_empty());
    // Absent: ImageStatus is an empty answer, RemoveImage a success.
    let st = d.crictl(&["inspecti", "busybox"]);
    assert!(stderr(&st).contains("no such image"), "{}", stderr(&st));
    remove_image_rpc(&d, "busybox").expect("removing an absent image succeeds");
    remove_image_rpc(&d, &id).expect("removing an absent image by ID succeeds");
}

#[test]
fn the_image_config_user_is_a_uid_or_a_username() {
    let s = StandIns::start(Some(&[USER_UID, USER_NAME]));
    let d = berthd(&s);
    d.crictl_ok(&["pull", USER_UID]);
    d.crictl_ok(&["pull", USER_NAME]);
    let st = json(&d.crictl_ok(&["inspecti", "-o", "json", USER_UID]));
    assert_eq!(st["status"]["uid"]["value"], "1002", "{st}");
    assert_eq!(st["status"]["username"], "", "{st}");
    let st = json(&d.crictl_ok(&["inspecti", "-o", "json", USER_NAME]));
    assert!(st["status"]["uid"].is_null(), "{st}");
    assert_eq!(st["status"]["username"], "www-data", "{st}");
}

#[test]
fn berthd_and_the_cli_share_one_store() {
    let s = StandIns::start(Some(&[BUSYBOX, PAUSE]));
    let d = berthd(&s);
    let cli = Cli::new(&d, &s);
    d.crictl_ok(&["pull", "busybox"]);
    let listed = cli.ok(&["images"]);
    assert!(listed.lines().any(|l| l.starts_with("busybox ") && l.contains("latest")), "{listed}");

    cli.ok(&["pull", "-q", PAUSE]);
    let tags: Vec<Value> = images_json(&d).iter().flat_map(|i| i["repoTags"].as_array().cloned().unwrap()).collect();
    assert!(tags.contains(&Value::from(PAUSE)), "crictl sees the CLI's pull: {tags:?}");

    // crictl's rmi is the CLI's too.
    d.crictl_ok(&["rmi", PAUSE]);
    assert!(!cli.ok(&["images"]).contains("pause"));
}

#[test]
fn an_image_a_container_uses_is_not_removed() {
    let s = StandIns::start(Some(&[BUSYBOX]));
    let d = berthd(&s);
    let cli = Cli::new(&d, &s);
    d.crictl_ok(&["pull", "busybox"]);
    let ctr = cli.create("busybox");
    let err = remove_image_rpc(&d, "busybox").unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("conflict") && err.message().contains(&ctr[..12]), "{err:?}");
    assert_eq!(images_json(&d).len(), 1, "the image is still there");
    cli.ok(&["rm", "-f", &ctr]);
    remove_image_rpc(&d, "busybox").unwrap();
    assert!(images_json(&d).is_empty());
}

#[test]
fn pulling_a_missing_tag_is_not_found_and_names_the_reference() {
    let s = StandIns::start(Some(&[BUSYBOX]));
    let d = berthd(&s);
    // Straight from the registry. (Through a mirror, the mirror's 404 is
    // followed by the upstream server, unreachable here, whose error is
    // the one reported, as containerd's resolver does.)
    let image = format!("{}/library/busybox:no-such-tag", s.registry.addr());
    let out = d.crictl(&["pull", &image]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("code = NotFound") && err.contains(&image), "{err}");
    let out = d.crictl(&["pull", "Not/A:Reference!"]);
    let err = stderr(&out);
    assert!(err.contains("code = InvalidArgument") && err.contains("Not/A:Reference!"), "{err}");
    assert!(images_json(&d).is_empty());
}

#[test]
fn pulls_use_the_credentials_of_the_request() {
    let reg = Registry::start_with(RegistryOptions { users: vec![("bob".into(), "pw".into())], ..Default::default() });
    let image = format!("{}/private/busybox:1", reg.addr());
    push_with_creds(BUSYBOX, &image, "bob:pw");
    let d = Berthd::start("");
    for creds in [None, Some("bob:wrong")] {
        let mut args = vec!["pull"];
        args.extend(creds.iter().flat_map(|c| ["--creds", *c]));
        args.push(&image);
        let out = d.crictl(&args);
        assert!(!out.status.success(), "{creds:?}");
        let err = stderr(&out);
        assert!(err.contains("code = Unauthenticated") && err.contains("authentication"), "{creds:?}: {err}");
    }
    d.crictl_ok(&["pull", "--creds", "bob:pw", &image]);
    // The credentials were for that pull only and never reached the disk:
    // no file of berthd's holds them, in clear or base64 ("Ym9iOnB3").
    let holders = files_containing(d.dir.path(), &[b"Ym9iOnB3", b"\"pw\""]);
    assert!(holders.is_empty(), "credentials written to {holders:?}");
    d.crictl_ok(&["rmi", &image]);
    let out = d.crictl(&["pull", &image]);
    assert!(!out.status.success(), "a later pull without credentials is refused again");
}

/// The files under `dir` (recursively) that contain one of `needles`.
fn files_containing(dir: &std::path::Path, needles: &[&[u8]]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let (path, ty) = (e.path(), e.file_type().unwrap());
            if ty.is_dir() {
                todo.push(path);
            } else if ty.is_file()
                && let Ok(data) = std::fs::read(&path)
                && needles.iter().any(|n| data.windows(n.len()).any(|w| w == *n))
            {
                found.push(path);
            }
        }
    }
    found
}

fn push_with_creds(stand_in: &str, dest: &str, creds: &str) {
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false", "--dest-creds", creds])
        .arg(format!("oci:{}:{stand_in}", stand_in_layout().display()))
        .arg(format!("docker://{dest}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo: {}", stderr(&out));
}

#[test]
fn imagefsinfo_reports_the_store_under_the_root() {
    let s = StandIns::start(Some(&[BUSYBOX]));
    let d = berthd(&s);
    let used = |fs: &Value| fs["usedBytes"]["value"].as_str().unwrap().parse::<u64>().unwrap();
    let before = json(&d.crictl_ok(&["imagefsinfo", "-o", "json"]));
    d.crictl_ok(&["pull", "busybox"]);
    let after = json(&d.crictl_ok(&["imagefsinfo", "-o", "json"]));
    let root = d.dir.path().join("root");
    let images = &after["status"]["imageFilesystems"][0];
    assert_eq!(Path::new(images["fsId"]["mountpoint"].as_str().unwrap()), root, "{after}");
    let grown = used(images) - used(&before["status"]["imageFilesystems"][0]);
    assert!(grown > 1_000_000, "busybox's blobs and layer count: {before} -> {after}");
    assert!(images["inodesUsed"]["value"].as_str().unwrap().parse::<u64>().unwrap() > 10, "{after}");
    let containers = &after["status"]["containerFilesystems"][0];
    assert_eq!(Path::new(containers["fsId"]["mountpoint"].as_str().unwrap()), root.join("containers"), "{after}");
}
