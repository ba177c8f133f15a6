//! Pulls through containerd-style `hosts.toml` mirrors: critest's stand-in
//! images in a local registry, pulled by their upstream names
//! (registry.k8s.io/..., docker.io/...) with no internet.

use berth_image::pull::{PullOptions, pull};
use berth_image::registry::{AuthStore, RegistryConfig};
use berth_image::store::Store;
use berth_image::{Error, Reference};
use berth_testkit::cri::{StandIns, stand_in_digest};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn config(tmp: &std::path::Path, config_path: &std::path::Path) -> RegistryConfig {
    RegistryConfig {
        certs_dirs: vec![],
        config_path: vec![config_path.to_path_buf()],
        auth: Some(AuthStore { own: tmp.join("auth.json"), fallbacks: vec![] }),
        backoff: std::time::Duration::from_millis(10),
        attempts: 1,
        connect_timeout: std::time::Duration::from_secs(2),
        ..Default::default()
    }
}

#[test]
fn pause_is_pulled_through_the_mirror_under_its_own_name() {
    berth_testkit::require_root();
    let s = StandIns::start(Some(&["registry.k8s.io/pause:3.10", "docker.io/library/busybox:latest"]));
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("root")).unwrap();
    let cfg = config(tmp.path(), s.certs_d());
    for name in ["registry.k8s.io/pause:3.10", "busybox"] {
        let reference = Reference::parse(name).unwrap();
        let rec = rt().block_on(pull(&store, &cfg, &reference, &PullOptions::default())).unwrap();
        let want = if name == "busybox" { "docker.io/library/busybox:latest" } else { name };
        assert_eq!(rec.manifest.to_string(), stand_in_digest(want), "{name}");
        // Recorded under the name asked for, not the mirror's.
        let snap = store.meta.read_all().unwrap();
        let tags = snap.tags_of(&rec.id);
        assert!(tags.contains(&reference.to_string().as_str()), "{name}: {tags:?}");
        assert!(!tags.iter().any(|t| t.contains("127.0.0.1")), "{tags:?}");
        let digests = snap.digests_of(&rec.id);
        assert!(digests.iter().any(|d| d.starts_with(&reference.name())), "{digests:?}");
    }
}

fn write_hosts(tmp: &std::path::Path, text: &str) -> std::path::PathBuf {
    let dir = tmp.join("certs.d/registry.k8s.io");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hosts.toml"), text).unwrap();
    tmp.join("certs.d")
}

#[test]
fn a_dead_mirror_is_skipped_and_the_next_host_serves() {
    berth_testkit::require_root();
    let s = StandIns::start(Some(&["registry.k8s.io/pause:3.10"]));
    let tmp = tempfile::tempdir().unwrap();
    // Port 1 on loopback: nothing listens there.
    let certs_d = write_hosts(
        tmp.path(),
        &format!(
            "server = \"http://127.0.0.1:1\"\n[host.\"http://127.0.0.1:1\"]\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            s.registry.addr()
        ),
    );
    let store = Store::open(&tmp.path().join("root")).unwrap();
    let cfg = config(tmp.path(), &certs_d);
    let reference = Reference::parse("registry.k8s.io/pause:3.10").unwrap();
    let rec = rt().block_on(pull(&store, &cfg, &reference, &PullOptions::default())).unwrap();
    assert_eq!(rec.manifest.to_string(), stand_in_digest("registry.k8s.io/pause:3.10"));
}

#[test]
fn a_pull_only_mirror_serves_digests_but_never_resolves_tags() {
    berth_testkit::require_root();
    let s = StandIns::start(Some(&["registry.k8s.io/pause:3.10"]));
    let tmp = tempfile::tempdir().unwrap();
    let certs_d = write_hosts(
        tmp.path(),
        &format!(
            "server = \"http://127.0.0.1:1\"\n[host.\"http://{}\"]\n  capabilities = [\"pull\"]\n",
            s.registry.addr()
        ),
    );
    let store = Store::open(&tmp.path().join("root")).unwrap();
    let cfg = config(tmp.path(), &certs_d);
    let digest = stand_in_digest("registry.k8s.io/pause:3.10");
    // By tag: only the (dead) server may resolve it.
    let by_tag = Reference::parse("registry.k8s.io/pause:3.10").unwrap();
    let err = rt().block_on(pull(&store, &cfg, &by_tag, &PullOptions::default())).unwrap_err().to_string();
    assert!(err.contains("127.0.0.1:1"), "{err}");
    // By digest: the mirror serves it, checked against the digest.
    let by_digest = Reference::parse(&format!("registry.k8s.io/pause@{digest}")).unwrap();
    let rec = rt().block_on(pull(&store, &cfg, &by_digest, &PullOptions::default())).unwrap();
    assert_eq!(rec.manifest.to_string(), digest);
}

#[test]
fn a_broken_hosts_file_fails_the_pull_naming_it() {
    berth_testkit::require_root();
    let tmp = tempfile::tempdir().unwrap();
    let certs_d = write_hosts(tmp.path(), "[host.\"http://127.0.0.1:1\"]\ncapabilities = [\"pul\"]\n");
    let store = Store::open(&tmp.path().join("root")).unwrap();
    let cfg = config(tmp.path(), &certs_d);
    let reference = Reference::parse("registry.k8s.io/pause:3.10").unwrap();
    let err = rt().block_on(pull(&store, &cfg, &reference, &PullOptions::default())).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Unsupported(_)), "{msg}");
    assert!(msg.contains("registry.k8s.io/hosts.toml") && msg.contains("unknown capability \"pul\""), "{msg}");
}

#[test]
fn a_tls_mirror_is_trusted_through_its_ca_or_skip_verify_only() {
    use berth_testkit::registry::{Registry, RegistryOptions};
    berth_testkit::require_root();
    let reg = Registry::start_with(RegistryOptions { tls: true, ..Default::default() });
    berth_testkit::cri::push_stand_in("registry.k8s.io/pause:3.10", &format!("{}/pause:3.10", reg.addr()));
    let reference = Reference::parse("registry.k8s.io/pause:3.10").unwrap();
    let attempt = |host_settings: &str| {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("certs.d/registry.k8s.io")).unwrap();
        std::fs::write(tmp.path().join("certs.d/registry.k8s.io/mirror-ca.crt"), reg.ca_pem().unwrap()).unwrap();
        let hosts = format!(
            "server = \"http://127.0.0.1:1\"\n[host.\"https://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n{host_settings}",
            reg.addr()
        );
        let certs_d = write_hosts(tmp.path(), &hosts);
        let store = Store::open(&tmp.path().join("root")).unwrap();
        rt().block_on(pull(&store, &config(tmp.path(), &certs_d), &reference, &PullOptions::default()))
            .map(|r| r.manifest)
    };
    let want = stand_in_digest("registry.k8s.io/pause:3.10");
    // The CA, relative to the hosts.toml's directory, as containerd reads it.
    assert_eq!(attempt("  ca = \"mirror-ca.crt\"\n").unwrap().to_string(), want);
    assert_eq!(attempt("  skip_verify = true\n").unwrap().to_string(), want);
    // Neither: the certificate is refused and the (dead) server is what is left.
    let err = attempt("").unwrap_err().to_string();
    assert!(err.contains("127.0.0.1:1"), "{err}");
}
