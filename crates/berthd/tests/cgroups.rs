//! A pod's containers in their cgroups, read from the cgroup files the
//! kernel enforces: limits at create, UpdateContainerResources, hugepage
//! limits, `unified` (applied on cgroup v2, refused on v1 in runc's
//! words), the kubelet's pod cgroup as the parent, the stats the kubelet
//! reads, and a memory-limit OOM kill reported as `OOMKilled`.
//!
//! The same test runs on this v1 hybrid host and, through
//! tests/v2-guest/all-tests.sh, on a pure cgroup v2 guest, reading the
//! files of the hierarchy it finds: one node and one pod, as a node and a
//! pod cost much under the guest's emulated CPU.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_cri_api::v1;
use berth_testkit::in_test_host;

mod common;
use common::{BUSYBOX, Node, PAUSE};

impl Node {
    fn start(n: u8) -> Node {
        let node = Node::start_serving(n, &[PAUSE, BUSYBOX], "");
        node.pull(BUSYBOX);
        node
    }

    fn run_pod(&mut self, config: &v1::PodSandboxConfig) -> String {
        let r = self.run_pod_with(config, "");
        r.unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", self.d.stderr()))
    }

    /// A started busybox container running `script` with `resources`.
    fn limited(&mut self, pod: &str, config: &v1::PodSandboxConfig, name: &str, script: &str, r: Resources) -> String {
        let id = self
            .create_container(pod, config, name, BUSYBOX, script, |c| {
                c.linux = Some(v1::LinuxContainerConfig { resources: Some(r), ..Default::default() });
            })
            .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", self.d.stderr()));
        self.start_container(&id);
        id
    }

    fn stats(&mut self, id: &str) -> v1::ContainerStats {
        let mut c = self.client.clone();
        let r = self.rt.block_on(c.container_stats(v1::ContainerStatsRequest { container_id: id.into() }));
        r.unwrap_or_else(|e| panic!("ContainerStats: {e}")).into_inner().stats.unwrap()
    }

    fn pod_stats(&mut self, id: &str) -> v1::PodSandboxStats {
        let mut c = self.client.clone();
        let r = self.rt.block_on(c.pod_sandbox_stats(v1::PodSandboxStatsRequest { pod_sandbox_id: id.into() }));
        r.unwrap_or_else(|e| panic!("PodSandboxStats: {e}")).into_inner().stats.unwrap()
    }
}

type Resources = v1::LinuxContainerResources;

/// Whether this host has cgroup v2 alone (no v1 controller mounted).
fn v2_only() -> bool {
    !Path::new("/sys/fs/cgroup/memory").exists() && Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The cgroup directory of `pid` for `controller` (v1: that hierarchy;
/// v2: the one unified hierarchy), as the host sees it.
fn cgroup_dir(pid: i32, controller: &str) -> PathBuf {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let rel = text
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (id, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            let ours =
                if v2_only() { id == "0" && ctrls.is_empty() } else { ctrls.split(',').any(|c| c == controller) };
            ours.then(|| path.to_owned())
        })
        .unwrap_or_else(|| panic!("no {controller} cgroup in\n{text}"));
    let root = if v2_only() { PathBuf::from("/sys/fs/cgroup") } else { Path::new("/sys/fs/cgroup").join(controller) };
    root.join(rel.trim_start_matches('/'))
}

fn read(dir: &Path, file: &str) -> String {
    let p = dir.join(file);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).trim().to_owned()
}

/// The memory limit, CPU quota/period and weight as the kernel holds them.
fn limits(pid: i32) -> (String, String, String) {
    if v2_only() {
        let d = cgroup_dir(pid, "memory");
        (read(&d, "memory.max"), read(&d, "cpu.max"), read(&d, "cpu.weight"))
    } else {
        let (m, c) = (cgroup_dir(pid, "memory"), cgroup_dir(pid, "cpu"));
        let quota = format!("{} {}", read(&c, "cpu.cfs_quota_us"), read(&c, "cpu.cfs_period_us"));
        (read(&m, "memory.limit_in_bytes"), quota, read(&c, "cpu.shares"))
    }
}

/// CPU shares as cgroup v2's cpu.weight, by the formula runc and crun use.
fn weight(shares: u64) -> String {
    if v2_only() { (1 + ((shares - 2) * 9999) / 262142).to_string() } else { shares.to_string() }
}

fn has_2mb_hugepages() -> bool {
    Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").is_dir()
}

/// The 2MB hugetlb limit of `pid`'s cgroup (v1 or v2 file name).
fn hugetlb_limit(pid: i32) -> String {
    let file = if v2_only() { "hugetlb.2MB.max" } else { "hugetlb.2MB.limit_in_bytes" };
    read(&cgroup_dir(pid, "hugetlb"), file)
}

#[test]
fn limits_updates_stats_and_oom_kills_of_containers_in_the_pods_cgroup() {
    in_test_host(|| {
        let mut n = Node::start(1);
        let config = n.base_pod_config("limits");
        let pod_parent = config.linux.as_ref().unwrap().cgroup_parent.clone();
        let pod = n.run_pod(&config);
        let huge = |mb: u64| v1::HugepageLimit { page_size: "2MB".into(), limit: mb << 20 };
        let hugepage_limits = if has_2mb_hugepages() { vec![huge(4)] } else { Vec::new() };
        let unified = if v2_only() {
            HashMap::from([("memory.high".to_owned(), (48u64 << 20).to_string())])
        } else {
            HashMap::new()
        };
        let r = Resources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            hugepage_limits,
            unified,
            ..Default::default()
        };
        // Some CPU time to see in the stats, then nothing.
        let id = n.limited(&pod, &config, "limits", "i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done; sleep 1000", r);
        let pid = n.pid_of(&id);

        let mem = cgroup_dir(pid, "memory");
        assert!(
            mem.to_string_lossy().contains(pod_parent.trim_start_matches('/')),
            "the container's cgroup {} is under the kubelet's pod cgroup {pod_parent}",
            mem.display()
        );
        assert_eq!(limits(pid), ((64u64 << 20).to_string(), "50000 100000".to_owned(), weight(512)));
        if v2_only() {
            assert_eq!(read(&mem, "memory.high"), (48u64 << 20).to_string(), "unified reaches cgroup v2");
        }
        if has_2mb_hugepages() {
            assert_eq!(hugetlb_limit(pid), (4u64 << 20).to_string());
        }

        // The kubelet sends the whole set again on update.
        let update = Resources {
            cpu_period: 100_000,
            cpu_quota: 20_000,
            cpu_shares: 1024,
            memory_limit_in_bytes: 96 << 20,
            hugepage_limits: if has_2mb_hugepages() { vec![huge(8)] } else { Vec::new() },
            ..Default::default()
        };
        n.update(&id, update).unwrap_or_else(|e| panic!("UpdateContainerResources: {e}\n{}", n.d.stderr()));
        assert_eq!(limits(pid), ((96u64 << 20).to_string(), "20000 100000".to_owned(), weight(1024)));
        if has_2mb_hugepages() {
            assert_eq!(hugetlb_limit(pid), (8u64 << 20).to_string(), "UpdateContainerResources changes hugetlb");
        }

        // A page size the host lacks, named.
        let bad = Resources {
            hugepage_limits: vec![v1::HugepageLimit { page_size: "3MB".into(), limit: 1 << 20 }],
            ..Default::default()
        };
        let e = n.update(&id, bad).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("\"3MB\""), "{}", e.message());

        // unified needs cgroup v2 alone, as runc says.
        if !v2_only() {
            let unified = Resources {
                unified: HashMap::from([("memory.high".to_owned(), "100M".to_owned())]),
                ..Default::default()
            };
            let e = n
                .create_container(&pod, &config, "unified", BUSYBOX, "true", |c| {
                    c.linux = Some(v1::LinuxContainerConfig { resources: Some(unified.clone()), ..Default::default() })
                })
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().contains("cannot use unified on cgroup v1"), "{}", e.message());
            let e = n.update(&id, unified).unwrap_err();
            assert!(e.message().contains("memory.high") && e.message().contains("cgroup v1"), "{}", e.message());
        }

        // The stats the kubelet reads come from these cgroups.
        let s = n.stats(&id);
        let cpu = s.cpu.as_ref().and_then(|c| c.usage_core_nano_seconds.as_ref()).expect("cpu usage");
        assert!(cpu.value > 0, "{s:?}");
        let ws = s.memory.as_ref().and_then(|m| m.working_set_bytes.as_ref()).expect("memory working set");
        assert!(ws.value > 0 && ws.value <= 96 << 20, "{s:?}");
        let p = n.pod_stats(&pod);
        let linux = p.linux.as_ref().expect("linux pod stats");
        assert!(linux.containers.iter().any(|c| c.attributes.as_ref().is_some_and(|a| a.id == id)), "{p:?}");
        let pod_ws = linux.memory.as_ref().and_then(|m| m.working_set_bytes.as_ref()).expect("pod working set");
        assert!(pod_ws.value >= ws.value, "the pod's cgroup holds its containers: {p:?}");

        // critest's "Container OOM runtime should output OOMKilled reason":
        // dd's 20 MB buffer over a 15 MB limit is killed by the kernel and
        // exits 137 with reason OOMKilled, as containerd reports it (a
        // SIGKILL from outside keeps reason Error: pods.rs).
        let r = Resources { memory_limit_in_bytes: 15 << 20, ..Default::default() };
        let oom = n.limited(&pod, &config, "oom", "dd if=/dev/zero of=/dev/null bs=20M", r);
        let deadline = Instant::now() + Duration::from_secs(60);
        let st = loop {
            let st = n.container_status(&oom);
            if st.state == v1::ContainerState::ContainerExited as i32 {
                break st;
            }
            assert!(Instant::now() < deadline, "the container did not exit: {st:?}");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!((st.exit_code, st.reason.as_str(), st.message.as_str()), (137, "OOMKilled", ""), "{st:?}");

        n.stop_pod(&pod).unwrap();
        n.remove_pod(&pod).unwrap();
        assert!(!mem.exists(), "{} was removed with the pod", mem.display());
        assert!(n.pod_ids().is_empty());
    })
}
