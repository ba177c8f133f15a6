//! Pods with a user namespace of their own (the CRI's userns_options, mode
//! POD), through a CRI client as the kubelet drives them: root inside is a
//! host uid of the pod's range, the rootfs and idmapped volumes look owned
//! by their own ids inside while what the pod writes lands under its host
//! ids, every container of the pod shares the pinned user namespace, bad
//! options are refused with their reason, and RemovePodSandbox leaves no
//! mount or pin behind.
//!
//! The harness is tests/common's [`Node`]: a thread in a network namespace
//! of its own plays the host, with the stand-in registry, a bridge CNI
//! config and a berthd of its own.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_cri_api::v1;
use berth_testkit::in_test_host;

mod common;
use common::{BUSYBOX, Node, PAUSE};

/// The pod's range on the host: container ids 0-65535 are these.
const HOST_ID: u32 = 231072;
const SIZE: u32 = 65536;

impl Node {
    fn start(n: u8, extra: &str) -> Node {
        let node = Node::start_serving(n, &[PAUSE, BUSYBOX], extra);
        node.pull(BUSYBOX);
        node
    }

    fn pod_config(&self, name: &str, userns: Option<v1::UserNamespace>) -> v1::PodSandboxConfig {
        let mut config = self.base_pod_config(name);
        if let Some(linux) = config.linux.as_mut() {
            linux.security_context = Some(v1::LinuxSandboxSecurityContext {
                namespace_options: Some(v1::NamespaceOption { userns_options: userns, ..Default::default() }),
                ..Default::default()
            });
        }
        config
    }

    fn run_pod(&mut self, config: &v1::PodSandboxConfig, handler: &str) -> Result<String, tonic::Status> {
        self.run_pod_with(config, handler)
    }

    /// A busybox container of the pod running `script`, with the pod's
    /// namespace options (as the kubelet passes them) and `mounts`.
    fn container(
        &mut self,
        pod: &str,
        config: &v1::PodSandboxConfig,
        name: &str,
        script: &str,
        mounts: Vec<v1::Mount>,
    ) -> Result<String, tonic::Status> {
        let ns =
            config.linux.as_ref().and_then(|l| l.security_context.as_ref()).and_then(|s| s.namespace_options.clone());
        let cc = v1::ContainerConfig {
            metadata: Some(v1::ContainerMetadata { name: name.into(), attempt: 0 }),
            image: Some(v1::ImageSpec { image: BUSYBOX.into(), ..Default::default() }),
            command: vec!["sh".into(), "-c".into(), script.into()],
            mounts,
            log_path: format!("{name}.log"),
            linux: Some(v1::LinuxContainerConfig {
                security_context: Some(v1::LinuxContainerSecurityContext {
                    namespace_options: ns,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let req = v1::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(cc),
            sandbox_config: Some(config.clone()),
        };
        let mut c = self.client.clone();
        let id = self.rt.block_on(c.create_container(req))?.into_inner().container_id;
        self.rt.block_on(c.start_container(v1::StartContainerRequest { container_id: id.clone() }))?;
        Ok(id)
    }
}

fn pod_userns() -> v1::UserNamespace {
    let m = vec![v1::IdMapping { container_id: 0, host_id: HOST_ID, length: SIZE }];
    v1::UserNamespace { mode: v1::NamespaceMode::Pod as i32, uids: m.clone(), gids: m }
}

fn bind(host: &Path, at: &str, idmapped: bool) -> v1::Mount {
    let m = if idmapped { vec![v1::IdMapping { container_id: 0, host_id: HOST_ID, length: SIZE }] } else { Vec::new() };
    v1::Mount {
        container_path: at.into(),
        host_path: host.to_string_lossy().into_owned(),
        uid_mappings: m.clone(),
        gid_mappings: m,
        ..Default::default()
    }
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

#[test]
fn a_pod_user_namespace_maps_root_idmaps_the_rootfs_and_volumes_and_leaves_nothing_behind() {
    in_test_host(|| {
        let mut n = Node::start(1, "");
        let config = n.pod_config("userns", Some(pod_userns()));
        let state = n.d.dir.path().to_owned();

        // With berthd's state dir 0700 (as an operator's may be), the pod's
        // root could not reach its rootfs below it: berthd says so, and
        // keeps nothing.
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
        let e = n.run_pod(&config, "").unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{}", e.message());
        assert!(
            e.message().contains(&state.display().to_string()) && e.message().contains("0711"),
            "the refusal names the directory and the fix: {}",
            e.message()
        );
        assert_eq!(n.pod_ids(), Vec::<String>::new(), "nothing kept of the refused pod");
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o711)).unwrap();

        let pod = n.run_pod(&config, "").expect("RunPodSandbox with userns POD");
        let pin = state.join("run/containers").join(&pod).join("userns");
        let netns = state.join("run/containers").join(&pod).join("netns");
        let pin_ino = std::fs::metadata(&pin).expect("the pod's user namespace is pinned").ino();

        // A host directory owned by root, bound idmapped; the plain shared
        // one is bound as it is.
        let idm = tempfile::Builder::new().prefix("berth-userns-idm-").tempdir().unwrap();
        std::fs::set_permissions(idm.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mounts = vec![bind(n.shared.path(), "/shared", false), bind(idm.path(), "/idm", true)];
        let script = "id -u > /shared/id; cat /proc/self/uid_map > /shared/uid_map; \
                      stat -c '%u %g' /bin/busybox / > /shared/owners; stat -c %u /idm > /shared/idm_owner; \
                      echo hi > /made-in-rootfs; echo hi > /shared/made-in-shared; echo hi > /idm/made-in-idm; \
                      readlink /proc/self/ns/user > /shared/ns1; sleep 600";
        let c1 = n.container(&pod, &config, "one", script, mounts.clone()).expect("a container in the pod");
        let c2 = n
            .container(
                &pod,
                &config,
                "two",
                "readlink /proc/self/ns/user > /shared/ns2; sleep 600",
                mounts[..1].to_vec(),
            )
            .expect("a second container");

        assert_eq!(n.shared_file("id"), "0\n", "root inside");
        assert_eq!(words(&n.shared_file("uid_map")), words(&format!("0 {HOST_ID} {SIZE}")), "the host range");
        assert_eq!(words(&n.shared_file("owners")), words("0 0\n0 0"), "image files and / look owned by root inside");
        assert_eq!(n.shared_file("idm_owner"), "0\n", "the idmapped volume looks owned by root inside");
        let ns = format!("user:[{pin_ino}]\n");
        assert_eq!(n.shared_file("ns1"), ns, "the first container is in the pinned user namespace");
        assert_eq!(n.shared_file("ns2"), ns, "so is the second");

        let owner = |p: &Path| {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match std::fs::metadata(p) {
                    Ok(m) => return (m.uid(), m.gid()),
                    Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                    Err(e) => panic!("{}: {e}", p.display()),
                }
            }
        };
        let upper = state.join("root/containers").join(&c1).join("upper/made-in-rootfs");
        assert_eq!(owner(&upper), (HOST_ID, HOST_ID), "the rootfs write lands under the pod root's host ids");
        assert_eq!(owner(&n.shared.path().join("made-in-shared")), (HOST_ID, HOST_ID), "so does a plain volume's");
        assert_eq!(owner(&idm.path().join("made-in-idm")), (0, 0), "an idmapped volume's maps back to its own ids");

        n.remove_pod(&pod).expect("RemovePodSandbox");
        let mut left = berth_testkit::leaks::mounts_mentioning(&state.to_string_lossy());
        left.extend([pin, netns].iter().filter(|p| p.exists()).map(|p| format!("pin {}", p.display())));
        for c in [&pod, &c1, &c2] {
            left.extend(berth_testkit::leaks::processes_with(c).into_iter().map(|p| format!("process {p}")));
        }
        assert_eq!(left, Vec::<String>::new(), "left behind after RemovePodSandbox");
    })
}

#[test]
fn bad_user_namespace_options_are_refused_with_the_reason_and_runc_is_not_offered_them() {
    in_test_host(|| {
        let mut n = Node::start(2, "[runtimes.runc]\npath = \"/usr/sbin/runc\"\n");
        let line = |c, h| v1::IdMapping { container_id: c, host_id: h, length: SIZE };
        let with = |mode: v1::NamespaceMode, uids: Vec<v1::IdMapping>| v1::UserNamespace {
            mode: mode as i32,
            gids: uids.clone(),
            uids,
        };
        use v1::NamespaceMode as M;
        for (userns, want) in [
            (with(M::Container, vec![]), "mode CONTAINER is not supported"),
            (with(M::Target, vec![]), "mode TARGET is not supported"),
            (with(M::Pod, vec![line(0, HOST_ID), line(0, HOST_ID * 2)]), "only one mapping line is supported, got 2"),
            (with(M::Pod, vec![line(1, HOST_ID)]), "container uid 0 must be mapped"),
            (with(M::Pod, vec![line(0, 0)]), "host uid 0 (the host's root) cannot be mapped"),
            (with(M::Pod, vec![]), "none given"),
            (with(M::Node, vec![line(0, HOST_ID)]), "mode NODE takes no mappings"),
        ] {
            let e = n.run_pod(&n.pod_config("bad", Some(userns.clone())), "").unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{userns:?}: {}", e.message());
            assert!(e.message().contains(want), "{userns:?}: {} lacks {want:?}", e.message());
        }
        let mut host_net = n.pod_config("bad", Some(pod_userns()));
        let opts =
            host_net.linux.as_mut().unwrap().security_context.as_mut().unwrap().namespace_options.as_mut().unwrap();
        opts.network = M::Node as i32;
        let e = n.run_pod(&host_net, "").unwrap_err();
        assert!(e.message().contains("host's network namespace"), "{}", e.message());

        // runc 1.1 has no idmapped mounts: its handler does not report user
        // namespaces and a pod asking for one on it is refused, naming it.
        let mut c = n.client.clone();
        let st = n.rt.block_on(c.status(v1::StatusRequest { verbose: false })).unwrap().into_inner();
        let feature: HashMap<String, bool> = st
            .runtime_handlers
            .iter()
            .map(|h| (h.name.clone(), h.features.as_ref().is_some_and(|f| f.user_namespaces)))
            .collect();
        assert_eq!(feature.get(""), Some(&true), "berth-runtime (the default) makes idmapped mounts: {feature:?}");
        assert_eq!(feature.get("runc"), Some(&false), "runc 1.1 does not: {feature:?}");
        let e = n.run_pod(&n.pod_config("on-runc", Some(pod_userns())), "runc").unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{}", e.message());
        assert!(e.message().contains("\"runc\"") && e.message().contains("idmap"), "{}", e.message());

        assert_eq!(n.pod_ids(), Vec::<String>::new(), "no refused pod is kept");
        let left: Vec<PathBuf> = std::fs::read_dir(n.d.dir.path().join("run/containers"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert_eq!(left, Vec::<PathBuf>::new(), "no container state is kept");
        assert_eq!(berth_testkit::leaks::mounts_mentioning(&n.d.dir.path().to_string_lossy()), Vec::<String>::new());
    })
}
