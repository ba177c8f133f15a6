//! CRI pods and containers on the engine, through a CRI client (tonic with
//! berth-cri-api's generated client) as the kubelet drives them: a pod's
//! containers share its network, its hostPort is published through the
//! portmap plugin, the security context reaches the process, teardown is
//! idempotent and leaves nothing behind, and the `berth` CLI sees the
//! pod's containers only in the "k8s" namespace.
//!
//! Each test runs on a thread in a network namespace of its own that plays
//! the host (as crates/berth/tests/publish.rs does): the stand-in registry,
//! berthd, the pod's bridge and its iptables rules live and die there. The
//! pause and busybox images are critest's stand-ins (shared/critest-images)
//! pushed to a local registry that berthd's mirrors point at. Each test has
//! its own CNI conf dir (a bridge with a test-unique name and subnet,
//! host-local IPAM with its own dataDir, portmap) and its own berthd; the
//! [`Node`] guard removes every pod when the test ends, failed or not.

use berth_testkit::in_test_host;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_cri_api::v1;
use berth_testkit::workspace_bin;

mod common;
use common::{BUSYBOX, Node, PAUSE};

impl Node {
    /// `n` makes the bridge name and the subnet unique to the test.
    fn start(n: u8) -> Node {
        Node::start_with(n, "")
    }

    /// [`Node::start`] with more of berthd.toml (e.g. runtime handlers).
    fn start_with(n: u8, extra: &str) -> Node {
        Node::start_serving(n, &[PAUSE, BUSYBOX], extra)
    }

    fn pull_busybox(&self) {
        let out = self.d.crictl(&["pull", BUSYBOX]);
        assert!(out.status.success(), "crictl pull: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A pod config as the kubelet makes one, with `ports` published
    /// (container, host).
    fn pod_config(&self, name: &str, ports: &[(i32, i32)]) -> v1::PodSandboxConfig {
        let mut config = self.base_pod_config(name);
        config.port_mappings = ports
            .iter()
            .map(|(c, h)| v1::PortMapping { container_port: *c, host_port: *h, ..Default::default() })
            .collect();
        config.annotations = HashMap::from([("note".to_owned(), "kept".to_owned())]);
        config
    }

    fn run_pod(&mut self, config: &v1::PodSandboxConfig) -> Result<String, tonic::Status> {
        self.run_pod_with(config, "")
    }

    /// A started busybox container running `script`, with the shared dir
    /// at /shared, a label naming it and its log at NAME.log.
    fn container(
        &mut self,
        pod: &str,
        config: &v1::PodSandboxConfig,
        name: &str,
        script: &str,
        edit: impl FnOnce(&mut v1::ContainerConfig),
    ) -> Result<String, tonic::Status> {
        let id = self.create_container(pod, config, name, BUSYBOX, script, |c| {
            c.labels = HashMap::from([("container".to_owned(), name.to_owned())]);
            c.log_path = format!("{name}.log");
            edit(c);
        })?;
        let mut c = self.client.clone();
        self.rt.block_on(c.start_container(v1::StartContainerRequest { container_id: id.clone() }))?;
        Ok(id)
    }

    fn pod_status(&mut self, id: &str) -> (v1::PodSandboxStatus, HashMap<String, String>) {
        let mut c = self.client.clone();
        let r = self
            .rt
            .block_on(c.pod_sandbox_status(v1::PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: true }))
            .unwrap()
            .into_inner();
        (r.status.unwrap(), r.info)
    }

    fn pods(&mut self, filter: Option<v1::PodSandboxFilter>) -> Vec<v1::PodSandbox> {
        let mut c = self.client.clone();
        self.rt.block_on(c.list_pod_sandbox(v1::ListPodSandboxRequest { filter })).unwrap().into_inner().items
    }

    fn containers(&mut self, filter: Option<v1::ContainerFilter>) -> Vec<v1::Container> {
        let mut c = self.client.clone();
        self.rt.block_on(c.list_containers(v1::ListContainersRequest { filter })).unwrap().into_inner().containers
    }

    /// `berth ARGS` on berthd's root and runroot; its stdout.
    fn berth(&self, args: &[&str]) -> String {
        let dir = self.d.dir.path();
        let out = Command::new(workspace_bin("berth"))
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--runroot")
            .arg(dir.join("run"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "berth {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `berth ps -a -q --no-trunc ARGS`.
    fn berth_ps(&self, args: &[&str]) -> String {
        let all: Vec<&str> = ["ps", "-a", "-q", "--no-trunc"].iter().copied().chain(args.iter().copied()).collect();
        self.berth(&all)
    }

    /// The veths on the pod bridge (its ports).
    fn bridge_ports(&self) -> Vec<String> {
        let out = Command::new("ip").args(["-o", "link", "show", "master", &self.bridge]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
    }

    /// host-local's lease files (one per address, named by it).
    fn leases(&self) -> Vec<String> {
        let mut out = Vec::new();
        for d in std::fs::read_dir(&self.ipam_dir).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if name.parse::<std::net::IpAddr>().is_ok() {
                    out.push(name);
                }
            }
        }
        out
    }
}

impl Node {
    /// SIGKILLs berthd and starts it again with the same command line
    /// (state, socket, config); a new client on its socket.
    fn kill_and_restart_berthd(&mut self) {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", self.d.pid())).unwrap();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        assert!(self.d.stop_with(nix::sys::signal::Signal::SIGKILL).is_some(), "berthd did not die");
        let log = std::fs::OpenOptions::new().append(true).open(self.d.dir.path().join("stderr")).unwrap();
        let child =
            Command::new(&args[0]).args(&args[1..]).stdin(std::process::Stdio::null()).stderr(log).spawn().unwrap();
        self.restarted = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(self.d.socket()).is_err() {
            assert!(Instant::now() < deadline, "berthd did not come back:\n{}", self.d.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
        self.client = self.rt.block_on(berth_cri_api::runtime_client(&self.d.endpoint())).unwrap();
    }
}

/// What is left of pod `id` on the host.
fn leftovers(n: &Node, id: &str, netns: &Path, pids: &[i32]) -> Vec<String> {
    let mut left = Vec::new();
    let root = n.d.dir.path().to_string_lossy().into_owned();
    left.extend(berth_testkit::leaks::mounts_mentioning(&root).into_iter().map(|m| format!("mount {m}")));
    if netns.exists() {
        left.push(format!("netns pin {}", netns.display()));
    }
    left.extend(n.bridge_ports().into_iter().map(|p| format!("bridge port {p}")));
    left.extend(n.leases().into_iter().map(|l| format!("IPAM lease {l}")));
    left.extend(berth_testkit::leaks::cgroup_dirs_named(id).into_iter().map(|c| format!("cgroup {}", c.display())));
    for p in pids {
        if Path::new(&format!("/proc/{p}")).exists() {
            left.push(format!("process {p}"));
        }
    }
    left.extend(berth_testkit::leaks::processes_with(id).into_iter().map(|p| format!("process {p} naming the pod")));
    left
}

fn info_json(info: &HashMap<String, String>) -> serde_json::Value {
    serde_json::from_str(info.get("info").expect("verbose info")).unwrap()
}

#[test]
fn pod_containers_share_the_network_publish_a_host_port_and_leave_nothing_behind() {
    in_test_host(|| {
        let mut n = Node::start(1);
        n.pull_busybox();
        let host_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = n.pod_config("web", &[(80, i32::from(host_port))]);
        let pod = n.run_pod(&config).unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", n.d.stderr()));
        assert_eq!(pod.len(), 64, "a sandbox ID is an engine container ID: {pod}");

        let (st, info) = n.pod_status(&pod);
        assert_eq!(st.state, v1::PodSandboxState::SandboxReady as i32);
        let ip = st.network.as_ref().unwrap().ip.clone();
        assert!(ip.starts_with("10.99.1."), "the pod's IP comes from its network's subnet: {ip:?}");
        assert_eq!(st.metadata.as_ref().unwrap().name, "web");
        assert_eq!(st.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(st.annotations.get("note").map(String::as_str), Some("kept"));
        assert!(st.created_at > 0);
        let info = info_json(&info);
        let netns = PathBuf::from(info["netNamespacePath"].as_str().unwrap());
        assert_eq!(netns, n.d.dir.path().join("run/containers").join(&pod).join("netns"));
        let infra_pid = info["pid"].as_i64().unwrap() as i32;
        assert!(infra_pid > 0);

        // One listens on the pod's localhost, the other connects there.
        let server = n
            .container(&pod, &config, "server", "echo from-the-server | nc -l -p 7000; sleep 1000", |_| {})
            .unwrap_or_else(|e| panic!("server: {e}\n{}", n.d.stderr()));
        let client_script = "for i in $(seq 100); do nc 127.0.0.1 7000 > /shared/got && [ -s /shared/got ] && break; \
                             sleep 0.2; done; sleep 1000";
        let client = n.container(&pod, &config, "client", client_script, |_| {}).unwrap();
        assert_eq!(n.shared_file("got"), "from-the-server\n", "the two containers share the pod's network");
        // hostPort: the host's port reaches the pod's port 80 (portmap).
        let web = "while true; do echo from-port-80 | nc -l -p 80; done";
        let web_id = n.container(&pod, &config, "web", web, |_| {}).unwrap();
        let answer = served(&format!("127.0.0.1:{host_port}"));
        assert_eq!(answer, "from-port-80\n", "the hostPort reaches the pod");

        let cs = n.container_status(&server);
        assert_eq!(cs.state, v1::ContainerState::ContainerRunning as i32);
        assert!(cs.started_at >= cs.created_at && cs.created_at > 0, "{cs:?}");
        assert_eq!(cs.labels.get("container").map(String::as_str), Some("server"));
        assert!(cs.log_path.ends_with("server.log"), "{}", cs.log_path);
        let in_pod = n.containers(Some(v1::ContainerFilter { pod_sandbox_id: pod.clone(), ..Default::default() }));
        let mut ids: Vec<String> = in_pod.iter().map(|c| c.id.clone()).collect();
        ids.sort();
        let mut want = vec![server.clone(), client.clone(), web_id.clone()];
        want.sort();
        assert_eq!(ids, want);
        let by_label = HashMap::from([("container".to_owned(), "client".to_owned())]);
        let f = v1::ContainerFilter { label_selector: by_label, ..Default::default() };
        let listed: Vec<String> = n.containers(Some(f)).into_iter().map(|c| c.id).collect();
        assert_eq!(listed, vec![client.clone()]);

        // The CLI sees them only in the k8s namespace.
        let default_ns = n.berth_ps(&[]);
        assert!(!default_ns.contains(&pod) && !default_ns.contains(&server), "berth ps lists k8s's: {default_ns}");
        // Commands by ID reach them whatever their namespace.
        let inspected: serde_json::Value = serde_json::from_str(&n.berth(&["inspect", &server])).unwrap();
        assert_eq!(inspected[0]["Id"], server.as_str(), "{inspected}");
        assert!(inspected[0]["Name"].as_str().unwrap().contains("k8s_server_web_default_"), "{inspected}");
        let k8s = n.berth_ps(&["--namespace", "k8s"]);
        for id in [&pod, &server, &client, &web_id] {
            assert!(k8s.contains(id.as_str()), "berth ps --namespace k8s misses {id}: {k8s}");
        }

        let member_pids: Vec<i32> = [&server, &client, &web_id]
            .iter()
            .map(|id| {
                let mut c = n.client.clone();
                let req = v1::ContainerStatusRequest { container_id: id.to_string(), verbose: true };
                let r = n.rt.block_on(c.container_status(req)).unwrap().into_inner();
                info_json(&r.info)["pid"].as_i64().unwrap() as i32
            })
            .collect();
        assert!(!n.bridge_ports().is_empty() && !n.leases().is_empty(), "attached: a veth and a lease");

        n.stop_pod(&pod).unwrap();
        let (st, _) = n.pod_status(&pod);
        assert_eq!(st.state, v1::PodSandboxState::SandboxNotready as i32);
        assert_eq!(n.container_status(&server).state, v1::ContainerState::ContainerExited as i32);
        assert!(n.leases().is_empty(), "StopPodSandbox releases the address: {:?}", n.leases());
        n.stop_pod(&pod).unwrap_or_else(|e| panic!("a second StopPodSandbox fails: {e}"));
        // The CLI's prune leaves the kubelet's stopped containers alone.
        n.berth(&["container", "prune", "-f"]);
        assert_eq!(n.containers(None).len(), 3, "berth container prune removed k8s containers");
        assert_eq!(n.pods(None).len(), 1);
        n.remove_pod(&pod).unwrap();
        assert!(n.pods(None).is_empty() && n.containers(None).is_empty(), "removed whole");
        let mut pids = member_pids;
        pids.push(infra_pid);
        let left = leftovers(&n, &pod, &netns, &pids);
        assert!(left.is_empty(), "left behind after RemovePodSandbox: {left:#?}");
        n.remove_pod(&pod).unwrap_or_else(|e| panic!("removing a removed pod fails: {e}"));
    });
}

/// What the server at `addr` says once it answers.
fn served(addr: &str) -> String {
    use std::io::Read;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got =
            std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(3)).and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                let mut out = String::new();
                s.read_to_string(&mut out)?;
                Ok(out)
            });
        match got {
            Ok(s) if !s.is_empty() => return s,
            other if Instant::now() > deadline => panic!("{addr} never answered: {other:?}"),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
fn security_context_reaches_the_process_and_bad_requests_are_named() {
    in_test_host(|| {
        let mut n = Node::start(2);
        n.pull_busybox();
        let mut config = n.pod_config("sec", &[]);
        let sysctls = HashMap::from([("net.ipv4.ip_local_port_range".to_owned(), "40000 50000".to_owned())]);
        config.linux.as_mut().unwrap().sysctls = sysctls;
        config.dns_config = Some(v1::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        });
        let pod = n.run_pod(&config).unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", n.d.stderr()));

        let ro_dir = tempfile::tempdir().unwrap();
        let script = "{ id -u; id -g; id -G; echo $FOO; pwd; wc -c < /proc/version; \
                      if touch /ro/x 2>/dev/null; then echo ro-writable; else echo ro-refused; fi; } > /shared/uid.tmp; \
                      mv /shared/uid.tmp /shared/uid; sleep 1000";
        let ro_path = ro_dir.path().to_string_lossy().into_owned();
        n.container(&pod, &config, "uid", script, |c| {
            c.envs = vec![v1::KeyValue { key: "FOO".into(), value: "bar".into() }];
            c.working_dir = "/tmp".into();
            c.mounts.push(v1::Mount {
                container_path: "/ro".into(),
                host_path: ro_path,
                readonly: true,
                ..Default::default()
            });
            c.linux = Some(v1::LinuxContainerConfig {
                security_context: Some(v1::LinuxContainerSecurityContext {
                    run_as_user: Some(v1::Int64Value { value: 1234 }),
                    run_as_group: Some(v1::Int64Value { value: 2345 }),
                    supplemental_groups: vec![5555],
                    masked_paths: vec!["/proc/version".into()],
                    ..Default::default()
                }),
                ..Default::default()
            });
        })
        .unwrap_or_else(|e| panic!("uid: {e}\n{}", n.d.stderr()));
        assert_eq!(
            n.shared_file("uid"),
            "1234\n2345\n2345 5555\nbar\n/tmp\n0\nro-refused\n",
            "run_as_user/group, supplemental groups, env, working dir, masked paths and a read-only mount"
        );
        assert_eq!(std::fs::read_dir(ro_dir.path()).unwrap().count(), 0);
        n.container(
            &pod,
            &config,
            "named",
            "id -u > /shared/named.tmp; mv /shared/named.tmp /shared/named; sleep 1000",
            |c| {
                c.linux = Some(v1::LinuxContainerConfig {
                    security_context: Some(v1::LinuxContainerSecurityContext {
                        run_as_username: "nobody".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            },
        )
        .unwrap();
        assert_eq!(n.shared_file("named"), "65534\n", "run_as_username is looked up in the image");
        let script = "{ hostname; cat /etc/hostname /etc/resolv.conf; } > /shared/names.tmp; mv /shared/names.tmp /shared/names; \
                      sleep 1000";
        n.container(&pod, &config, "names", script, |_| {}).unwrap();
        assert_eq!(
            n.shared_file("names"),
            "sec\nsec\nsearch default.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n",
            "the pod's hostname and DNS config reach its containers"
        );

        // seccomp, no_new_privs and capabilities as the process sees them
        // in /proc/self/status; the pod's sysctl in its network namespace.
        let script = "grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status | tr '\\t' ' ' > /shared/status.tmp; \
                      cat /proc/sys/net/ipv4/ip_local_port_range | tr '\\t' ' ' > /shared/sysctl.tmp; \
                      mv /shared/sysctl.tmp /shared/sysctl; mv /shared/status.tmp /shared/status; sleep 1000";
        n.container(&pod, &config, "confined", script, |c| {
            c.linux = Some(v1::LinuxContainerConfig {
                security_context: Some(v1::LinuxContainerSecurityContext {
                    seccomp: Some(v1::SecurityProfile::default()),
                    no_new_privs: true,
                    capabilities: Some(v1::Capability {
                        drop_capabilities: vec!["ALL".into()],
                        add_capabilities: vec!["NET_RAW".into()],
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        })
        .unwrap_or_else(|e| panic!("confined: {e}\n{}", n.d.stderr()));
        assert_eq!(
            n.shared_file("status"),
            "CapEff: 0000000000002000\nNoNewPrivs: 1\nSeccomp: 2\n",
            "RuntimeDefault seccomp filters, no_new_privs is set, only NET_RAW is left"
        );
        assert_eq!(n.shared_file("sysctl"), "40000 50000\n", "the pod's sysctl is its network namespace's");
        // A host device: made in the container and allowed by its cgroup.
        let script = "if (exec 3<> /dev/xfuse) 2>/dev/null; then echo opened; else echo refused; fi > /shared/dev.tmp; \
                      mv /shared/dev.tmp /shared/dev; sleep 1000";
        let fuse = |host: &str| {
            let host = host.to_owned();
            move |c: &mut v1::ContainerConfig| {
                c.devices =
                    vec![v1::Device { container_path: "/dev/xfuse".into(), host_path: host, permissions: "rw".into() }]
            }
        };
        n.container(&pod, &config, "dev", script, fuse("/dev/fuse")).unwrap();
        assert_eq!(n.shared_file("dev"), "opened\n", "the device is there and the cgroup lets it be opened");
        let e = n.container(&pod, &config, "notdev", "true", fuse("/etc/passwd")).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        assert!(e.message().contains("/etc/passwd is not a device node"), "{}", e.message());
        // No seccomp asked: unconfined, as containerd runs it.
        n.container(
            &pod,
            &config,
            "open",
            "grep ^Seccomp: /proc/self/status > /shared/open.tmp; mv /shared/open.tmp /shared/open; sleep 1000",
            |_| {},
        )
        .unwrap();
        assert_eq!(n.shared_file("open"), "Seccomp:\t0\n");

        let script = "if touch /new-file 2>/dev/null; then echo wrote; else echo refused; fi > /shared/ro.tmp; \
                      mv /shared/ro.tmp /shared/ro; sleep 1000";
        n.container(&pod, &config, "ro", script, |c| {
            c.linux = Some(v1::LinuxContainerConfig {
                security_context: Some(v1::LinuxContainerSecurityContext {
                    readonly_rootfs: true,
                    ..Default::default()
                }),
                ..Default::default()
            });
        })
        .unwrap();
        assert_eq!(n.shared_file("ro"), "refused\n", "a read-only rootfs refuses a write");

        // Resources reach the cgroup; stats see the process and the layer.
        let script = "head -c 3000000 /dev/zero > /big; \
                      cat /sys/fs/cgroup/memory/memory.limit_in_bytes > /shared/mem.tmp; \
                      cat /sys/fs/cgroup/cpu/cpu.shares > /shared/shares.tmp; \
                      cat /proc/self/oom_score_adj > /shared/oom.tmp; mv /shared/oom.tmp /shared/oom; \
                      mv /shared/mem.tmp /shared/mem; mv /shared/shares.tmp /shared/shares; sleep 1000";
        let big = n
            .container(&pod, &config, "big", script, |c| {
                c.linux = Some(v1::LinuxContainerConfig {
                    resources: Some(v1::LinuxContainerResources {
                        memory_limit_in_bytes: 64 << 20,
                        cpu_shares: 512,
                        oom_score_adj: 500,
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            })
            .unwrap();
        assert_eq!(n.shared_file("mem"), format!("{}\n", 64 << 20), "memory_limit_in_bytes is the cgroup's limit");
        assert_eq!(n.shared_file("shares"), "512\n", "cpu_shares is the cgroup's");
        assert_eq!(n.shared_file("oom"), "500\n", "oom_score_adj is the process's");
        let mut c = n.client.clone();
        let st =
            n.rt.block_on(c.container_stats(v1::ContainerStatsRequest { container_id: big.clone() }))
                .unwrap()
                .into_inner()
                .stats
                .unwrap();
        assert_eq!(st.attributes.as_ref().unwrap().id, big);
        assert!(st.memory.unwrap().working_set_bytes.unwrap().value > 0, "a running container uses memory");
        assert!(st.cpu.unwrap().usage_core_nano_seconds.unwrap().value > 0, "and CPU time");
        let used = st.writable_layer.unwrap().used_bytes.unwrap().value;
        assert!(used >= 3_000_000, "the writable layer holds the 3 MB file: {used}");
        // UpdateContainerResources changes the running container's cgroup.
        let cg = |ctl: &str, file: &str| {
            let parent = config.linux.as_ref().unwrap().cgroup_parent.clone();
            let p = format!("/sys/fs/cgroup/{ctl}{parent}/{big}/{file}");
            std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}")).trim().to_owned()
        };
        assert_eq!(cg("memory", "memory.limit_in_bytes"), (64 << 20).to_string());
        let update = v1::UpdateContainerResourcesRequest {
            container_id: big.clone(),
            linux: Some(v1::LinuxContainerResources {
                memory_limit_in_bytes: 128 << 20,
                cpu_shares: 256,
                ..Default::default()
            }),
            ..Default::default()
        };
        n.rt.block_on(c.update_container_resources(update)).unwrap_or_else(|e| panic!("update: {e}\n{}", n.d.stderr()));
        assert_eq!(cg("memory", "memory.limit_in_bytes"), (128 << 20).to_string());
        assert_eq!(cg("cpu", "cpu.shares"), "256");
        let filter = v1::ContainerStatsFilter { pod_sandbox_id: pod.clone(), ..Default::default() };
        let all =
            n.rt.block_on(c.list_container_stats(v1::ListContainerStatsRequest { filter: Some(filter) }))
                .unwrap()
                .into_inner()
                .stats;
        assert_eq!(all.len(), 8, "the pod's eight running containers: {all:?}");

        let e = n
            .container(&pod, &config, "aa", "true", |c| {
                c.linux = Some(v1::LinuxContainerConfig {
                    security_context: Some(v1::LinuxContainerSecurityContext {
                        apparmor: Some(v1::SecurityProfile {
                            profile_type: v1::security_profile::ProfileType::Localhost as i32,
                            localhost_ref: "my-profile".into(),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            })
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        assert!(e.message().contains("AppArmor") && e.message().contains("my-profile"), "{}", e.message());

        let mut bad = config.clone();
        bad.metadata.as_mut().unwrap().name = "other".into();
        let mut c = n.client.clone();
        let req = v1::RunPodSandboxRequest { config: Some(bad), runtime_handler: "nosuch".into() };
        let e = n.rt.block_on(c.run_pod_sandbox(req)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
        assert!(e.message().contains("nosuch"), "the error names the handler: {}", e.message());

        // Filters: by state and by label.
        let ready = v1::PodSandboxFilter {
            state: Some(v1::PodSandboxStateValue { state: v1::PodSandboxState::SandboxReady as i32 }),
            ..Default::default()
        };
        assert_eq!(n.pods(Some(ready.clone())).len(), 1);
        let other = HashMap::from([("app".to_owned(), "nope".to_owned())]);
        assert!(n.pods(Some(v1::PodSandboxFilter { label_selector: other, ..Default::default() })).is_empty());

        // RemovePodSandbox of a running pod stops it first.
        n.remove_pod(&pod).unwrap();
        assert!(n.pods(None).is_empty());
    });
}

/// The containers `runc --root ROOT list` knows.
fn runc_list(root: &Path) -> String {
    let out = Command::new("runc").arg("--root").arg(root).args(["list", "-q"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_runtime_handler_runs_the_pod_and_host_network_and_a_shared_pid_namespace_are_honoured() {
    in_test_host(|| {
        let mut n = Node::start_with(3, "[runtimes.runc]\npath = \"/usr/sbin/runc\"\n");
        n.pull_busybox();
        let mut config = n.pod_config("hostnet", &[]);
        config.linux.as_mut().unwrap().security_context = Some(v1::LinuxSandboxSecurityContext {
            namespace_options: Some(v1::NamespaceOption {
                network: v1::NamespaceMode::Node as i32,
                pid: v1::NamespaceMode::Pod as i32,
                ..Default::default()
            }),
            ..Default::default()
        });
        let pod = n.run_pod_with(&config, "runc").unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", n.d.stderr()));
        let (st, info) = n.pod_status(&pod);
        assert_eq!(st.runtime_handler, "runc");
        assert!(st.network.is_none(), "a host-network pod has no pod IP of its own: {:?}", st.network);
        assert!(info_json(&info)["netNamespacePath"].is_null(), "no netns is made for a host-network pod");

        let script = "{ cat /etc/hostname; hostname; } > /shared/h.tmp; cat /proc/1/cmdline | tr '\\0' ' ' > /shared/p1.tmp; echo >> /shared/p1.tmp; \
                      readlink /proc/self/ns/net > /shared/net.tmp; \
                      mv /shared/h.tmp /shared/h; mv /shared/net.tmp /shared/net; mv /shared/p1.tmp /shared/p1; sleep 1000";
        let id = n
            .container(&pod, &config, "probe", script, |c| {
                c.linux = Some(v1::LinuxContainerConfig {
                    security_context: Some(v1::LinuxContainerSecurityContext {
                        namespace_options: Some(v1::NamespaceOption {
                            network: v1::NamespaceMode::Node as i32,
                            pid: v1::NamespaceMode::Pod as i32,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            })
            .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", n.d.stderr()));
        let host_name = nix::unistd::gethostname().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            n.shared_file("h"),
            format!("{host_name}\n{host_name}\n"),
            "the host's name goes with its network (/etc/hostname and the UTS namespace)"
        );
        assert_eq!(n.shared_file("p1").trim(), "/pause", "the pod's PID namespace is shared: pid 1 is its pause");
        let host_net = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        assert_eq!(
            n.shared_file("net").trim(),
            host_net.to_string_lossy(),
            "a host-network pod is in the host's netns"
        );

        // runc, the handler's runtime, runs the pod and its container.
        let listed = runc_list(&n.d.dir.path().join("run/runtime"));
        assert!(listed.contains(&pod) && listed.contains(&id), "runc does not know them: {listed:?}");
        n.remove_pod(&pod).unwrap();
        assert!(runc_list(&n.d.dir.path().join("run/runtime")).trim().is_empty());
    });
}

#[test]
fn exits_are_reported_with_code_and_reason_and_stop_kills_after_its_timeout() {
    in_test_host(|| {
        let mut n = Node::start(4);
        n.pull_busybox();
        let config = n.pod_config("exits", &[]);
        let pod = n.run_pod(&config).unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", n.d.stderr()));
        // By image ID, as the kubelet names the image it pulled.
        let inspected: serde_json::Value = serde_json::from_str(&n.d.crictl_ok(&["inspecti", BUSYBOX])).unwrap();
        let image_id = inspected["status"]["id"].as_str().unwrap().to_owned();
        let ok = n
            .container(&pod, &config, "ok", "true", |c| {
                c.image = Some(v1::ImageSpec { image: image_id.clone(), ..Default::default() });
            })
            .unwrap_or_else(|e| panic!("by image ID: {e}"));
        let fail = n.container(&pod, &config, "fail", "exit 3", |_| {}).unwrap();
        // Ignores SIGTERM: only the SIGKILL after the timeout ends it.
        let stubborn =
            n.container(&pod, &config, "stubborn", "trap '' TERM; while true; do sleep 1; done", |_| {}).unwrap();

        let exited = |n: &mut Node, id: &str| {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let st = n.container_status(id);
                if st.state == v1::ContainerState::ContainerExited as i32 {
                    return st;
                }
                assert!(Instant::now() < deadline, "{id} did not exit: {st:?}");
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        let st = exited(&mut n, &ok);
        assert_eq!((st.exit_code, st.reason.as_str()), (0, "Completed"));
        assert_eq!(st.image_ref, image_id);
        assert!(st.finished_at >= st.started_at && st.started_at > 0, "{st:?}");
        let st = exited(&mut n, &fail);
        assert_eq!((st.exit_code, st.reason.as_str()), (3, "Error"));

        let mut c = n.client.clone();
        let stop = v1::StopContainerRequest { container_id: stubborn.clone(), timeout: 1 };
        n.rt.block_on(c.stop_container(stop.clone())).unwrap();
        let st = n.container_status(&stubborn);
        assert_eq!(st.state, v1::ContainerState::ContainerExited as i32);
        assert_eq!((st.exit_code, st.reason.as_str()), (137, "Error"), "SIGKILLed after the timeout");
        n.rt.block_on(c.stop_container(stop)).unwrap_or_else(|e| panic!("stopping a stopped container fails: {e}"));

        let exited_filter = v1::ContainerFilter {
            state: Some(v1::ContainerStateValue { state: v1::ContainerState::ContainerExited as i32 }),
            ..Default::default()
        };
        assert_eq!(n.containers(Some(exited_filter)).len(), 3);
        n.rt.block_on(c.remove_container(v1::RemoveContainerRequest { container_id: fail.clone() })).unwrap();
        n.rt.block_on(c.remove_container(v1::RemoveContainerRequest { container_id: fail.clone() }))
            .unwrap_or_else(|e| panic!("removing a removed container fails: {e}"));
        let e = n.rt.block_on(c.start_container(v1::StartContainerRequest { container_id: fail.clone() })).unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
        assert!(e.message().contains(&fail), "{}", e.message());
        assert_eq!(n.containers(None).len(), 2);
        // `berth rm -f` of the infra container releases the pod's network
        // too (the engine runs its recorded DEL).
        for id in [&ok, &stubborn] {
            n.rt.block_on(c.remove_container(v1::RemoveContainerRequest { container_id: id.to_string() })).unwrap();
        }
        assert!(!n.leases().is_empty() && !n.bridge_ports().is_empty());
        n.berth(&["rm", "-f", &pod]);
        assert!(n.pods(None).is_empty());
        assert!(n.leases().is_empty(), "berth rm -f left the pod's lease: {:?}", n.leases());
        assert!(n.bridge_ports().is_empty(), "berth rm -f left the pod's veth: {:?}", n.bridge_ports());
    });
}

#[test]
fn crictl_runs_a_pod_and_a_container_as_a_user_would() {
    in_test_host(|| {
        let n = Node::start(5);
        n.pull_busybox();
        let dir = n.d.dir.path();
        let pod_json = serde_json::json!({
            "metadata": { "name": "crictl-pod", "namespace": "default", "uid": format!("crictl-{}", std::process::id()) },
            "hostname": "crictl-pod",
            "log_directory": dir.join("logs"),
            "linux": { "cgroup_parent": format!("{}/podcrictl", n.d.cgroup.path()) }
        });
        let ctr_json = serde_json::json!({
            "metadata": { "name": "sleeper" },
            "image": { "image": BUSYBOX },
            "command": ["sh", "-c", "echo started > /shared/crictl; sleep 1000"],
            "mounts": [{ "container_path": "/shared", "host_path": n.shared.path() }],
            "log_path": "sleeper.log"
        });
        std::fs::write(dir.join("pod.json"), pod_json.to_string()).unwrap();
        std::fs::write(dir.join("ctr.json"), ctr_json.to_string()).unwrap();
        let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
        let pod = n.d.crictl_ok(&["runp", &p("pod.json")]).trim().to_owned();
        let ctr = n.d.crictl_ok(&["create", &pod, &p("ctr.json"), &p("pod.json")]).trim().to_owned();
        // Each create let go of its container's creating lock when it
        // returned (a daemon's creates end with their call): none is left
        // for prune to mistake for one still being made, and berthd keeps
        // no descriptor per container.
        let creating: Vec<_> = std::fs::read_dir(dir.join("run/creating"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(creating.is_empty(), "creating locks left: {creating:?}");
        n.d.crictl_ok(&["start", &ctr]);
        assert_eq!(n.shared_file("crictl"), "started\n");

        let pods = n.d.crictl_ok(&["pods", "-q"]);
        assert_eq!(pods.trim(), pod);
        let ps = n.d.crictl_ok(&["ps", "-q"]);
        assert_eq!(ps.trim(), ctr);
        let inspectp: serde_json::Value = serde_json::from_str(&n.d.crictl_ok(&["inspectp", &pod])).unwrap();
        assert_eq!(inspectp["status"]["state"], "SANDBOX_READY", "{inspectp}");
        assert!(inspectp["status"]["network"]["ip"].as_str().unwrap().starts_with("10.99.5."), "{inspectp}");
        let inspect: serde_json::Value = serde_json::from_str(&n.d.crictl_ok(&["inspect", &ctr])).unwrap();
        assert_eq!(inspect["status"]["state"], "CONTAINER_RUNNING", "{inspect}");
        assert_eq!(inspect["status"]["metadata"]["name"], "sleeper");
        // By a unique prefix, as crictl users type IDs.
        n.d.crictl_ok(&["stop", &ctr[..12]]);
        let inspect: serde_json::Value = serde_json::from_str(&n.d.crictl_ok(&["inspect", &ctr])).unwrap();
        assert_eq!(inspect["status"]["state"], "CONTAINER_EXITED", "{inspect}");
        n.d.crictl_ok(&["stopp", &pod]);
        n.d.crictl_ok(&["stopp", &pod]);
        n.d.crictl_ok(&["rmp", &pod]);
        assert!(n.d.crictl_ok(&["pods", "-q"]).trim().is_empty());
        assert!(n.d.crictl_ok(&["ps", "-a", "-q"]).trim().is_empty());
    });
}

#[test]
fn a_sigkilled_berthd_finds_every_pod_and_container_again() {
    in_test_host(|| {
        let mut n = Node::start(6);
        n.pull_busybox();
        let config = n.pod_config("survivor", &[]);
        let pod = n.run_pod(&config).unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", n.d.stderr()));
        let (before, _) = n.pod_status(&pod);
        let runs = n.container(&pod, &config, "runs", "sleep 1000", |_| {}).unwrap();
        // Ends while berthd is down: its exit is found afterwards.
        let ends = n
            .container(&pod, &config, "ends", "while [ ! -e /shared/go ]; do sleep 0.1; done; exit 7", |_| {})
            .unwrap();

        n.kill_and_restart_berthd();
        std::fs::write(n.shared.path().join("go"), "").unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while n.container_status(&ends).state != v1::ContainerState::ContainerExited as i32 {
            assert!(Instant::now() < deadline, "the exit of a container that ended while berthd was down is lost");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(n.container_status(&ends).exit_code, 7);
        assert_eq!(n.container_status(&runs).state, v1::ContainerState::ContainerRunning as i32);
        let (after, _) = n.pod_status(&pod);
        assert_eq!(after.state, v1::PodSandboxState::SandboxReady as i32);
        assert_eq!(after.network, before.network, "the pod keeps its address");
        assert_eq!(after.created_at, before.created_at);
        assert_eq!(n.pods(None).len(), 1, "listed once");
        assert_eq!(n.containers(None).len(), 2, "listed once");
        n.stop_pod(&pod).unwrap();
        n.remove_pod(&pod).unwrap();
        assert!(n.leases().is_empty() && n.bridge_ports().is_empty(), "the network is released after a restart too");
    });
}

/// One CRI log record: `TIME STREAM TAG MESSAGE`, the time RFC 3339 with
/// nanoseconds in UTC.
fn cri_record(line: &str) -> (String, String, String) {
    let mut f = line.splitn(4, ' ');
    let (time, stream, tag) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
    let t = chrono::DateTime::parse_from_rfc3339(time).unwrap_or_else(|e| panic!("{time:?}: {e}"));
    assert_eq!(t.offset().local_minus_utc(), 0, "{time}");
    assert!(time.ends_with('Z') && time.contains('.'), "{time}");
    (stream.to_owned(), tag.to_owned(), f.next().unwrap_or_default().to_owned())
}

#[test]
fn logs_are_the_kubelets_format_exec_sync_reports_and_times_out_and_the_log_reopens() {
    in_test_host(|| {
        let n = Node::start(7);
        n.pull_busybox();
        let dir = n.d.dir.path();
        let logs = dir.join("logs");
        let pod_json = serde_json::json!({
            "metadata": { "name": "logs-pod", "namespace": "default", "uid": format!("logs-{}", std::process::id()) },
            "log_directory": logs,
            "linux": { "cgroup_parent": format!("{}/podlogs", n.d.cgroup.path()) }
        });
        let script = "echo out; echo err >&2; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo again; sleep 1000";
        let ctr_json = serde_json::json!({
            "metadata": { "name": "talker" },
            "image": { "image": BUSYBOX },
            "command": ["sh", "-c", script],
            "log_path": "talker/0.log"
        });
        std::fs::write(dir.join("pod.json"), pod_json.to_string()).unwrap();
        std::fs::write(dir.join("ctr.json"), ctr_json.to_string()).unwrap();
        let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
        let pod = n.d.crictl_ok(&["runp", &p("pod.json")]).trim().to_owned();
        let ctr = n.d.crictl_ok(&["create", &pod, &p("ctr.json"), &p("pod.json")]).trim().to_owned();
        // Each create let go of its container's creating lock when it
        // returned (a daemon's creates end with their call): none is left
        // for prune to mistake for one still being made, and berthd keeps
        // no descriptor per container.
        let creating: Vec<_> = std::fs::read_dir(dir.join("run/creating"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(creating.is_empty(), "creating locks left: {creating:?}");
        n.d.crictl_ok(&["start", &ctr]);

        // The file the kubelet named, in its format.
        let log = logs.join("talker/0.log");
        let mut lines = Vec::new();
        for _ in 0..500 {
            lines = std::fs::read_to_string(&log).unwrap_or_default().lines().map(String::from).collect();
            if lines.len() >= 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut records: Vec<_> = lines.iter().map(|l| cri_record(l)).collect();
        records.sort();
        let want = [("stderr", "F", "err"), ("stdout", "F", "out")].map(|(a, b, c)| (a.into(), b.into(), c.into()));
        assert_eq!(records, want, "{lines:?}");
        // crictl reads it as the kubelet does.
        let out = n.d.crictl(&["logs", &ctr]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n", "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n", "{out:?}");

        // ExecSync: output, code, and a timeout that kills the command.
        let cmd = ["sh", "-c", "echo hi; echo oops >&2; exit 3"].map(String::from).to_vec();
        let req = v1::ExecSyncRequest { container_id: ctr.clone(), cmd, timeout: 0 };
        let r = n.rt.block_on(n.client.clone().exec_sync(req)).unwrap().into_inner();
        assert_eq!((r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code), (&b"hi\n"[..], &b"oops\n"[..], 3));
        // crictl says it the same way.
        let out = n.d.crictl(&["exec", "-s", &ctr, "sh", "-c", "echo oops >&2; exit 3"]);
        assert!(String::from_utf8_lossy(&out.stderr).contains("exited with 3: oops"), "{out:?}");
        let sleep = berth_testkit::unique_sleep();
        let out = n.d.crictl(&["exec", "-s", "--timeout", "1", &ctr, "sleep", &sleep]);
        assert!(!out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("DeadlineExceeded"), "{out:?}");
        let left = Command::new("pgrep").args(["-f", &format!("sleep {sleep}")]).output().unwrap();
        assert!(left.stdout.is_empty(), "the timed-out command still runs");

        // The kubelet rotates: rename, then ReopenContainerLog.
        std::fs::rename(&log, logs.join("talker/0.log.1")).unwrap();
        n.d.crictl_ok(&["logs", "--reopen", &ctr]);
        assert!(log.exists(), "a new log file after the reopen");
        n.d.crictl_ok(&["exec", "-s", &ctr, "touch", "/tmp/go"]);
        let mut now = String::new();
        for _ in 0..500 {
            now = std::fs::read_to_string(&log).unwrap();
            if !now.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let got: Vec<_> = now.lines().map(cri_record).collect();
        assert_eq!(got, [("stdout".into(), "F".into(), "again".into())], "{now}");
        let old = std::fs::read_to_string(logs.join("talker/0.log.1")).unwrap();
        assert!(!old.contains("again"), "{old}");

        n.d.crictl_ok(&["stop", &ctr]);
        let out = n.d.crictl(&["logs", "--reopen", &ctr]);
        assert!(String::from_utf8_lossy(&out.stderr).contains("not running"), "{out:?}");
        n.d.crictl_ok(&["rmp", "-f", &pod]);
    });
}

type Events = tonic::Streaming<v1::ContainerEventResponse>;

fn subscribe(n: &mut Node) -> Events {
    let mut c = n.client.clone();
    n.rt.block_on(c.get_container_events(v1::GetEventsRequest {})).unwrap().into_inner()
}

/// The events of `s` until `done` holds for those received (30 s at most).
fn events_until(
    n: &Node,
    s: &mut Events,
    done: impl Fn(&[v1::ContainerEventResponse]) -> bool,
) -> Vec<v1::ContainerEventResponse> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(&got) {
        let left = deadline.saturating_duration_since(Instant::now());
        match n.rt.block_on(async { tokio::time::timeout(left, s.message()).await }) {
            Ok(Ok(Some(e))) => got.push(e),
            r => panic!("events ended or timed out ({r:?}); got {got:#?}\nberthd:\n{}", n.d.stderr()),
        }
    }
    got
}

/// The kinds of `id`'s events, in order.
fn kinds_of(events: &[v1::ContainerEventResponse], id: &str) -> Vec<v1::ContainerEventType> {
    events
        .iter()
        .filter(|e| e.container_id == id)
        .map(|e| v1::ContainerEventType::try_from(e.container_event_type).unwrap())
        .collect()
}

/// eth0's (rx, tx) bytes in the pod's stats.
fn eth0_bytes(s: &v1::PodSandboxStats) -> (u64, u64) {
    let net = s.linux.as_ref().and_then(|l| l.network.as_ref()).expect("network stats");
    let eth0 = net.default_interface.as_ref().expect("a default interface");
    assert_eq!(eth0.name, "eth0");
    (eth0.rx_bytes.as_ref().unwrap().value, eth0.tx_bytes.as_ref().unwrap().value)
}

#[test]
fn container_events_reach_every_subscriber_in_order_and_pod_stats_count_traffic_and_checkpoint_is_refused() {
    use v1::ContainerEventType as K;
    in_test_host(|| {
        let mut n = Node::start(9);
        n.pull_busybox();
        let mut subs = [subscribe(&mut n), subscribe(&mut n)];
        let config = n.pod_config("events", &[]);
        let pod = n.run_pod(&config).unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", n.d.stderr()));
        let sleeper = n.container(&pod, &config, "sleeper", "sleep 1000", |_| {}).unwrap();
        // Ends on its own: its STOPPED comes from berthd noticing.
        let quitter = n.container(&pod, &config, "quitter", "exit 0", |_| {}).unwrap();

        // Stats: memory in use, traffic counted on eth0.
        let mut c = n.client.clone();
        let stats = |n: &Node, c: &mut v1::runtime_service_client::RuntimeServiceClient<_>| {
            let req = v1::PodSandboxStatsRequest { pod_sandbox_id: pod.clone() };
            n.rt.block_on(c.pod_sandbox_stats(req))
                .unwrap_or_else(|e| panic!("PodSandboxStats: {e}"))
                .into_inner()
                .stats
                .unwrap()
        };
        let before = stats(&n, &mut c);
        assert_eq!(before.attributes.as_ref().unwrap().id, pod);
        let linux = before.linux.as_ref().unwrap();
        assert!(linux.memory.as_ref().unwrap().working_set_bytes.as_ref().unwrap().value > 0, "{linux:?}");
        assert!(linux.process.as_ref().unwrap().process_count.as_ref().unwrap().value >= 2, "{linux:?}");
        assert!(linux.containers.iter().any(|c| c.attributes.as_ref().unwrap().id == sleeper), "{linux:?}");
        let (rx0, tx0) = eth0_bytes(&before);
        let ping = v1::ExecSyncRequest {
            container_id: sleeper.clone(),
            cmd: vec!["ping".into(), "-c".into(), "3".into(), "-W".into(), "1".into(), "10.99.9.1".into()],
            timeout: 20,
        };
        let out = n.rt.block_on(c.exec_sync(ping)).unwrap().into_inner();
        assert_eq!(out.exit_code, 0, "ping the gateway: {}", String::from_utf8_lossy(&out.stderr));
        let (rx1, tx1) = eth0_bytes(&stats(&n, &mut c));
        assert!(rx1 > rx0 && tx1 > tx0, "eth0 did not count the ping: rx {rx0}->{rx1}, tx {tx0}->{tx1}");
        let by = |app: &str| {
            let f = v1::PodSandboxStatsFilter {
                label_selector: HashMap::from([("app".to_owned(), app.to_owned())]),
                ..Default::default()
            };
            let req = v1::ListPodSandboxStatsRequest { filter: Some(f) };
            n.rt.block_on(c.clone().list_pod_sandbox_stats(req)).unwrap().into_inner().stats
        };
        assert_eq!(by("events").len(), 1);
        assert!(by("other").is_empty());
        let metrics =
            n.rt.block_on(c.list_pod_sandbox_metrics(v1::ListPodSandboxMetricsRequest {})).unwrap().into_inner();
        let pm = metrics.pod_metrics.iter().find(|m| m.pod_sandbox_id == pod).expect("the pod's metrics");
        let rx_metric = pm.metrics.iter().find(|m| m.name == "container_network_receive_bytes_total").unwrap();
        assert_eq!(rx_metric.label_values, ["eth0"]);
        assert!(rx_metric.value.as_ref().unwrap().value >= rx1);
        let descriptors = n.rt.block_on(c.list_metric_descriptors(v1::ListMetricDescriptorsRequest {})).unwrap();
        assert!(descriptors.into_inner().descriptors.iter().any(|d| d.name == "container_memory_working_set_bytes"));

        // Checkpoint: refused, saying why.
        let req = v1::CheckpointContainerRequest { container_id: sleeper.clone(), ..Default::default() };
        let e = n.rt.block_on(c.checkpoint_container(req)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
        assert!(e.message().contains("CRIU is not installed"), "{}", e.message());

        n.rt.block_on(c.stop_container(v1::StopContainerRequest { container_id: sleeper.clone(), timeout: 0 }))
            .unwrap();
        n.rt.block_on(c.remove_container(v1::RemoveContainerRequest { container_id: sleeper.clone() })).unwrap();
        for s in &mut subs {
            let got = events_until(&n, s, |got| {
                kinds_of(got, &sleeper).contains(&K::ContainerDeletedEvent)
                    && kinds_of(got, &quitter).contains(&K::ContainerStoppedEvent)
            });
            assert_eq!(kinds_of(&got, &pod), [K::ContainerCreatedEvent, K::ContainerStartedEvent], "{got:#?}");
            let life = [K::ContainerCreatedEvent, K::ContainerStartedEvent, K::ContainerStoppedEvent];
            assert_eq!(kinds_of(&got, &quitter), life, "{got:#?}");
            let mut all = life.to_vec();
            all.push(K::ContainerDeletedEvent);
            assert_eq!(kinds_of(&got, &sleeper), all, "{got:#?}");
            for e in &got {
                assert!(e.created_at > 0, "{e:?}");
                let ps = e.pod_sandbox_status.as_ref().unwrap_or_else(|| panic!("no pod status: {e:?}"));
                assert_eq!(ps.id, pod);
            }
            let stopped = got
                .iter()
                .find(|e| e.container_id == quitter && e.container_event_type == K::ContainerStoppedEvent as i32)
                .unwrap();
            let st = stopped.containers_statuses.iter().find(|s| s.id == quitter).expect("the quitter's status");
            assert_eq!(st.state, v1::ContainerState::ContainerExited as i32);
        }
        n.remove_pod(&pod).unwrap();
        for s in &mut subs {
            let got = events_until(&n, s, |got| kinds_of(got, &pod).contains(&K::ContainerDeletedEvent));
            assert_eq!(kinds_of(&got, &pod), [K::ContainerStoppedEvent, K::ContainerDeletedEvent], "{got:#?}");
            assert_eq!(kinds_of(&got, &quitter), [K::ContainerDeletedEvent], "{got:#?}");
        }
    });
}

#[test]
fn twenty_pods_run_at_once_with_distinct_ips_and_leave_nothing_behind() {
    in_test_host(|| {
        let mut n = Node::start(10);
        n.pull_busybox();
        let configs: Vec<v1::PodSandboxConfig> = (0..20).map(|i| n.pod_config(&format!("many{i}"), &[])).collect();
        let shared = n.shared.path().to_string_lossy().into_owned();
        let tasks: Vec<_> = configs
            .iter()
            .map(|config| {
                let mut c = n.client.clone();
                let config = config.clone();
                let shared = shared.clone();
                n.rt.spawn(async move {
                    let req = v1::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
                    let pod = c.run_pod_sandbox(req).await?.into_inner().pod_sandbox_id;
                    let cc = v1::ContainerConfig {
                        metadata: Some(v1::ContainerMetadata { name: "main".into(), attempt: 0 }),
                        image: Some(v1::ImageSpec { image: BUSYBOX.into(), ..Default::default() }),
                        command: vec!["sh".into(), "-c".into(), "sleep 1000".into()],
                        mounts: vec![v1::Mount {
                            container_path: "/shared".into(),
                            host_path: shared,
                            ..Default::default()
                        }],
                        ..Default::default()
                    };
                    let req = v1::CreateContainerRequest {
                        pod_sandbox_id: pod.clone(),
                        config: Some(cc),
                        sandbox_config: Some(config),
                    };
                    let ctr = c.create_container(req).await?.into_inner().container_id;
                    c.start_container(v1::StartContainerRequest { container_id: ctr.clone() }).await?;
                    Ok::<_, tonic::Status>((pod, ctr))
                })
            })
            .collect();
        let started: Vec<(String, String)> =
            n.rt.block_on(async {
                let mut out = Vec::new();
                for t in tasks {
                    out.push(t.await.unwrap());
                }
                out
            })
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("20 pods at once: {e}\nberthd:\n{}", n.d.stderr()));

        let mut ips = std::collections::BTreeSet::new();
        let mut netns = Vec::new();
        let mut pids = Vec::new();
        for (pod, ctr) in &started {
            let (st, info) = n.pod_status(pod);
            assert_eq!(st.state, v1::PodSandboxState::SandboxReady as i32);
            ips.insert(st.network.unwrap().ip);
            let info = info_json(&info);
            netns.push(PathBuf::from(info["netNamespacePath"].as_str().unwrap()));
            pids.push(info["pid"].as_i64().unwrap() as i32);
            let mut c = n.client.clone();
            let r = n
                .rt
                .block_on(c.container_status(v1::ContainerStatusRequest { container_id: ctr.clone(), verbose: true }));
            let r = r.unwrap().into_inner();
            assert_eq!(r.status.unwrap().state, v1::ContainerState::ContainerRunning as i32, "{ctr}");
            pids.push(info_json(&r.info)["pid"].as_i64().unwrap() as i32);
        }
        assert_eq!(ips.len(), 20, "each pod has its own IP: {ips:?}");
        assert_eq!(n.leases().len(), 20);

        let tasks: Vec<_> = started
            .iter()
            .map(|(pod, _)| {
                let mut c = n.client.clone();
                let pod = pod.clone();
                n.rt.spawn(async move {
                    c.stop_pod_sandbox(v1::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await?;
                    c.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: pod }).await?;
                    Ok::<_, tonic::Status>(())
                })
            })
            .collect();
        n.rt.block_on(async {
            for t in tasks {
                t.await.unwrap().unwrap_or_else(|e| panic!("stop and remove at once: {e}"));
            }
        });
        assert!(n.pods(None).is_empty() && n.containers(None).is_empty(), "removed whole");
        let mut left = Vec::new();
        for (i, (pod, _)) in started.iter().enumerate() {
            left.extend(leftovers(&n, pod, &netns[i], &pids));
        }
        left.sort();
        left.dedup();
        assert!(left.is_empty(), "left behind by 20 pods: {left:#?}");
    });
}

/// A container that ends on its own is told at once, from the watch on
/// its shim's directory: with the periodic look an hour apart, both one
/// that exits later and one that exits before berthd could watch it are
/// reported STOPPED (the look would take an hour).
#[test]
fn exits_are_told_from_the_shims_directory_without_waiting_for_a_look() {
    use v1::ContainerEventType as K;
    in_test_host(|| {
        let mut n = Node::start_with(11, "[events]\npoll_interval = \"1h\"\n");
        n.pull_busybox();
        let mut events = subscribe(&mut n);
        let config = n.pod_config("exits", &[]);
        let pod = n.run_pod(&config).unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", n.d.stderr()));
        let at_once = n.container(&pod, &config, "at-once", "exit 0", |_| {}).unwrap();
        let later = n
            .container(&pod, &config, "later", "while [ ! -e /shared/go ]; do sleep 0.1; done; exit 3", |_| {})
            .unwrap();
        let got = events_until(&n, &mut events, |e| {
            kinds_of(e, &at_once).contains(&K::ContainerStoppedEvent)
                && kinds_of(e, &later).contains(&K::ContainerStartedEvent)
        });
        assert_eq!(
            kinds_of(&got, &at_once),
            [K::ContainerCreatedEvent, K::ContainerStartedEvent, K::ContainerStoppedEvent]
        );
        std::fs::write(n.shared.path().join("go"), "").unwrap();
        let got = events_until(&n, &mut events, |e| kinds_of(e, &later).contains(&K::ContainerStoppedEvent));
        let stopped = got.iter().find(|e| e.container_id == later).unwrap();
        let status = stopped.containers_statuses.iter().find(|s| s.id == later).expect("its status in the event");
        assert_eq!(status.exit_code, 3, "{status:?}");
        n.stop_pod(&pod).unwrap();
        n.remove_pod(&pod).unwrap();
    });
}
