//! The CRI's security and resource extras, as the kubelet asks them and
//! as the container's process sees them: recursive read-only mounts
//! (reported per runtime handler, refused when asked wrongly), the
//! SupplementalGroupsPolicy with ContainerStatus.user, the pod's
//! resources on its sandbox. (Resources in the container's cgroups:
//! cgroups.rs.)
//!
//! Each test runs in a network namespace of its own that plays the host,
//! with its own stand-in registry, CNI config and berthd (tests/common);
//! the [`Node`] guard removes every pod when the test ends, failed or not.

use berth_cri_api::v1;
use berth_testkit::in_test_host;

mod common;
use common::{BUSYBOX, Node, PAUSE};

/// critest's image whose default-user (1000) is in group 50000 of its /etc/group.
const PREDEFINED_GROUP: &str = "gcr.io/k8s-staging-cri-tools/test-image-predefined-group:latest";

impl Node {
    /// A node serving `images` (pulled, but for pause) with more of
    /// berthd.toml.
    fn start(n: u8, images: &[&str], extra: &str) -> Node {
        let node = Node::start_serving(n, images, extra);
        for image in images.iter().filter(|i| **i != PAUSE) {
            node.pull(image);
        }
        node
    }

    fn pod_config(&self, name: &str) -> v1::PodSandboxConfig {
        self.base_pod_config(name)
    }

    fn run_pod(&mut self, config: &v1::PodSandboxConfig) -> String {
        let req = v1::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
        let mut c = self.client.clone();
        let r = self.rt.block_on(c.run_pod_sandbox(req));
        r.unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", self.d.stderr())).into_inner().pod_sandbox_id
    }

    fn status(&mut self) -> v1::StatusResponse {
        let mut c = self.client.clone();
        self.rt.block_on(c.status(v1::StatusRequest { verbose: false })).unwrap().into_inner()
    }
}

/// A host directory with a tmpfs on its `sub` (critest's layout for
/// recursive read-only mounts); unmounted and removed when dropped.
struct HostTree(tempfile::TempDir);

impl HostTree {
    fn new() -> HostTree {
        let dir = tempfile::Builder::new().prefix("berth-sec-rro-").tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let flags = nix::mount::MsFlags::empty();
        nix::mount::mount(Some("tmpfs"), &dir.path().join("sub"), Some("tmpfs"), flags, Some("size=1m")).unwrap();
        HostTree(dir)
    }

    fn mount(&self, readonly: bool, rro: bool, propagation: v1::MountPropagation) -> v1::Mount {
        v1::Mount {
            container_path: "/mnt".into(),
            host_path: self.0.path().to_string_lossy().into_owned(),
            readonly,
            recursive_read_only: rro,
            propagation: propagation as i32,
            ..Default::default()
        }
    }
}

impl Drop for HostTree {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0.path().join("sub"), nix::mount::MntFlags::MNT_DETACH);
    }
}

fn handler<'a>(s: &'a v1::StatusResponse, name: &str) -> &'a v1::RuntimeHandler {
    s.runtime_handlers.iter().find(|h| h.name == name).unwrap_or_else(|| panic!("no handler {name:?}: {s:?}"))
}

#[test]
fn status_reports_rro_only_for_runtimes_whose_features_list_it_and_the_groups_policy() {
    in_test_host(|| {
        // crun 1.8 here has no `features` command: it must not be guessed capable.
        let extra = "[runtimes.runc]\npath = \"/usr/sbin/runc\"\n[runtimes.crun]\npath = \"/usr/bin/crun\"\n";
        let mut n = Node::start(1, &[PAUSE], extra);
        let s = n.status();
        assert!(s.features.as_ref().is_some_and(|f| f.supplemental_groups_policy), "{s:?}");
        let rro = |s: &v1::StatusResponse, name: &str| {
            handler(s, name).features.unwrap_or_default().recursive_read_only_mounts
        };
        assert!(rro(&s, ""), "the default handler (berth-runtime) lists rro: {s:?}");
        let runc_lists = std::process::Command::new("/usr/sbin/runc")
            .arg("features")
            .output()
            .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("\"rro\""));
        assert_eq!(rro(&s, "runc"), runc_lists, "runc: as its own features say");
        let crun_answers =
            std::process::Command::new("/usr/bin/crun").arg("features").output().is_ok_and(|o| o.status.success());
        if !crun_answers {
            assert!(!rro(&s, "crun"), "crun without `features`: not guessed");
        }
    })
}

#[test]
fn a_recursive_read_only_mount_reaches_submounts_and_wrong_ones_are_refused() {
    in_test_host(|| {
        use v1::MountPropagation as P;
        let mut n = Node::start(2, &[PAUSE, BUSYBOX], "");
        let config = n.pod_config("rro");
        let pod = n.run_pod(&config);
        let tree = HostTree::new();
        let script = "for f in /mnt/top /mnt/sub/below; do if touch $f 2>/dev/null; then echo $f writable; \
                      else echo $f read-only; fi; done > /shared/rro.tmp; mv /shared/rro.tmp /shared/rro; sleep 1000";
        let id = n
            .create_container(&pod, &config, "rro", BUSYBOX, script, |c| {
                c.mounts.push(tree.mount(true, true, P::PropagationPrivate))
            })
            .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", n.d.stderr()));
        n.start_container(&id);
        assert_eq!(n.shared_file("rro"), "/mnt/top read-only\n/mnt/sub/below read-only\n");
        let st = n.container_status(&id);
        assert!(st.mounts.iter().any(|m| m.container_path == "/mnt" && m.recursive_read_only), "{:?}", st.mounts);

        // containerd's refusals, each naming why, before anything is made.
        for (name, m, why) in [
            ("rw", tree.mount(false, true, P::PropagationPrivate), "needs readonly"),
            ("slave", tree.mount(true, true, P::PropagationHostToContainer), "PROPAGATION_HOST_TO_CONTAINER"),
            ("shared", tree.mount(true, true, P::PropagationBidirectional), "PROPAGATION_BIDIRECTIONAL"),
        ] {
            let e = n.create_container(&pod, &config, name, BUSYBOX, "true", |c| c.mounts.push(m)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{name}: {e}");
            assert!(e.message().contains("/mnt") && e.message().contains(why), "{name}: {}", e.message());
        }
    })
}

/// `id -G` of the first process, and the identity ContainerStatus reports.
fn groups_under(
    n: &mut Node,
    pod: &str,
    config: &v1::PodSandboxConfig,
    policy: v1::SupplementalGroupsPolicy,
) -> (String, v1::ContainerStatus) {
    let name = format!("groups{}", policy as i32);
    let script = format!("id -G > /shared/{name}.tmp; mv /shared/{name}.tmp /shared/{name}; sleep 1000");
    let id = n
        .create_container(pod, config, &name, PREDEFINED_GROUP, &script, |c| {
            c.linux = Some(v1::LinuxContainerConfig {
                security_context: Some(v1::LinuxContainerSecurityContext {
                    run_as_user: Some(v1::Int64Value { value: 1000 }),
                    supplemental_groups: vec![1234],
                    supplemental_groups_policy: policy as i32,
                    ..Default::default()
                }),
                ..Default::default()
            })
        })
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", n.d.stderr()));
    n.start_container(&id);
    let groups = n.shared_file(&name);
    let running = n.container_status(&id);
    n.stop(&id);
    let stopped = n.container_status(&id);
    assert_eq!(stopped.state, v1::ContainerState::ContainerExited as i32);
    assert_eq!(stopped.user, running.user, "a stopped container still reports its process's identity");
    (groups, running)
}

fn user(uid: i64, gid: i64, mut groups: Vec<i64>) -> Option<v1::ContainerUser> {
    groups.sort_unstable();
    Some(v1::ContainerUser { linux: Some(v1::LinuxContainerUser { uid, gid, supplemental_groups: groups }) })
}

#[test]
fn supplemental_groups_policy_strict_drops_the_image_groups_and_status_reports_the_real_ones() {
    in_test_host(|| {
        let mut n = Node::start(3, &[PAUSE, BUSYBOX, PREDEFINED_GROUP], "");
        let config = n.pod_config("groups");
        let pod = n.run_pod(&config);
        let (merged, st) = groups_under(&mut n, &pod, &config, v1::SupplementalGroupsPolicy::Merge);
        assert_eq!(merged, "1000 1234 50000\n", "Merge: the image's group 50000 is added");
        assert_eq!(st.user, user(1000, 1000, vec![1000, 1234, 50000]));
        let (strict, st) = groups_under(&mut n, &pod, &config, v1::SupplementalGroupsPolicy::Strict);
        assert_eq!(strict, "1000 1234\n", "Strict: only the asked groups");
        assert_eq!(st.user, user(1000, 1000, vec![1000, 1234]));
    })
}

#[test]
fn pod_resources_reach_the_sandbox_as_containerds_annotations() {
    in_test_host(|| {
        let mut n = Node::start(4, &[PAUSE], "");
        let mut config = n.pod_config("res");
        let linux = config.linux.as_mut().unwrap();
        linux.resources = Some(v1::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 256 << 20,
            ..Default::default()
        });
        linux.overhead = Some(v1::LinuxContainerResources { memory_limit_in_bytes: 64 << 20, ..Default::default() });
        let pod = n.run_pod(&config);
        let a = n.spec_of(&pod)["annotations"].clone();
        assert_eq!(a["io.kubernetes.cri.sandbox-cpu-period"], "100000", "{a}");
        assert_eq!(a["io.kubernetes.cri.sandbox-cpu-quota"], "50000", "{a}");
        assert_eq!(a["io.kubernetes.cri.sandbox-cpu-shares"], "512", "{a}");
        assert_eq!(a["io.kubernetes.cri.sandbox-memory"], (256u64 << 20).to_string(), "{a}");
    })
}
