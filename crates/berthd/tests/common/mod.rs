//! The node the CRI tests share (pods.rs, security.rs, userns.rs): critest's
//! stand-in registry with the images a test needs, a CNI conf dir of its
//! own (a bridge with a test-unique name and subnet, host-local IPAM with
//! its own dataDir, portmap), a berthd of its own and a CRI client on it.
//! Each test file adds the methods it needs in its own `impl Node`.
//! Dropped, a node removes every pod berthd has (then berthd and its state
//! go with their own guards), also when the test failed.

#![allow(dead_code)] // each test binary uses its own part of it

use std::collections::HashMap;
use std::path::PathBuf;

use berth_cri_api::v1;
use berth_testkit::cri::{Berthd, StandIns};

pub const BUSYBOX: &str = "docker.io/library/busybox:latest";
pub const PAUSE: &str = "registry.k8s.io/pause:3.10";

pub struct Node {
    pub rt: tokio::runtime::Runtime,
    pub client: v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    pub bridge: String,
    pub ipam_dir: PathBuf,
    /// Shared with the containers (bind-mounted), world-writable.
    pub shared: tempfile::TempDir,
    /// A berthd started again by a test on the first one's state (stopped
    /// before that state goes).
    pub restarted: Option<std::process::Child>,
    pub d: Berthd,
    _cni: tempfile::TempDir,
    _stand_ins: StandIns,
}

impl Node {
    /// `n` makes the bridge name and the subnet unique to the test (in its
    /// test binary); `images` are served (the pause image always), not
    /// pulled; `extra` is more of berthd.toml.
    pub fn start_serving(n: u8, images: &[&str], extra: &str) -> Node {
        let mut served = vec![PAUSE];
        served.extend(images.iter().copied().filter(|i| *i != PAUSE));
        let stand_ins = StandIns::start(Some(&served));
        let cni = tempfile::Builder::new().prefix("berth-cri-cni-").tempdir().unwrap();
        let bridge = format!("bpod{}{n}", std::process::id() % 10000);
        let ipam_dir = cni.path().join("ipam");
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": format!("podnet{n}"),
            "plugins": [
                {
                    "type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false, "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{ "subnet": format!("10.99.{n}.0/24") }]],
                        "routes": [{ "dst": "0.0.0.0/0" }],
                        "dataDir": ipam_dir,
                    }
                },
                { "type": "portmap", "capabilities": { "portMappings": true } }
            ]
        });
        let conf_dir = cni.path().join("net.d");
        std::fs::create_dir_all(&conf_dir).unwrap();
        std::fs::write(conf_dir.join("10-pods.conflist"), conflist.to_string()).unwrap();
        let config = format!(
            "[registry]\nconfig_path = \"{}\"\n[cni]\nconf_dir = \"{}\"\n{extra}",
            stand_ins.certs_d().display(),
            conf_dir.display()
        );
        let d = Berthd::start(&config);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = rt.block_on(berth_cri_api::runtime_client(&d.endpoint())).unwrap();
        let shared = tempfile::Builder::new().prefix("berth-cri-shared-").tempdir().unwrap();
        std::fs::set_permissions(shared.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        Node { rt, client, bridge, ipam_dir, shared, restarted: None, d, _cni: cni, _stand_ins: stand_ins }
    }

    pub fn pull(&self, image: &str) {
        self.d.crictl_ok(&["pull", image]);
    }

    /// A pod config as the kubelet makes one: its name as hostname, a log
    /// directory, and a kubelet-style absolute pod cgroup under the
    /// daemon's cgroup parent.
    pub fn base_pod_config(&self, name: &str) -> v1::PodSandboxConfig {
        let uid = format!("uid-{name}-{}", std::process::id());
        v1::PodSandboxConfig {
            metadata: Some(v1::PodSandboxMetadata {
                name: name.into(),
                uid: uid.clone(),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: self.d.dir.path().join("logs").join(&uid).to_string_lossy().into_owned(),
            labels: HashMap::from([("app".to_owned(), name.to_owned())]),
            linux: Some(v1::LinuxPodSandboxConfig {
                cgroup_parent: format!("{}/pod{uid}", self.d.cgroup.path()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn run_pod_with(&mut self, config: &v1::PodSandboxConfig, handler: &str) -> Result<String, tonic::Status> {
        let req = v1::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: handler.into() };
        let mut c = self.client.clone();
        self.rt.block_on(c.run_pod_sandbox(req)).map(|r| r.into_inner().pod_sandbox_id)
    }

    pub fn stop_pod(&mut self, id: &str) -> Result<(), tonic::Status> {
        let mut c = self.client.clone();
        self.rt.block_on(c.stop_pod_sandbox(v1::StopPodSandboxRequest { pod_sandbox_id: id.into() })).map(|_| ())
    }

    pub fn remove_pod(&mut self, id: &str) -> Result<(), tonic::Status> {
        let mut c = self.client.clone();
        self.rt.block_on(c.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: id.into() })).map(|_| ())
    }

    /// The shared file `name` once it is complete (ends with a newline).
    pub fn shared_file(&self, name: &str) -> String {
        let p = self.shared.path().join(name);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match std::fs::read_to_string(&p) {
                Ok(s) if s.ends_with('\n') => return s,
                _ if std::time::Instant::now() > deadline => {
                    panic!("{} was not written\nberthd:\n{}", p.display(), self.d.stderr())
                }
                _ => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
        }
    }

    /// Creates (does not start) a container of `image` running `sh -c
    /// script`, with the shared dir at /shared; `edit` changes the config.
    pub fn create_container(
        &mut self,
        pod: &str,
        config: &v1::PodSandboxConfig,
        name: &str,
        image: &str,
        script: &str,
        edit: impl FnOnce(&mut v1::ContainerConfig),
    ) -> Result<String, tonic::Status> {
        let mut cc = v1::ContainerConfig {
            metadata: Some(v1::ContainerMetadata { name: name.into(), attempt: 0 }),
            image: Some(v1::ImageSpec { image: image.into(), ..Default::default() }),
            command: vec!["sh".into(), "-c".into(), script.into()],
            mounts: vec![v1::Mount {
                container_path: "/shared".into(),
                host_path: self.shared.path().to_string_lossy().into_owned(),
                ..Default::default()
            }],
            ..Default::default()
        };
        edit(&mut cc);
        let req = v1::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(cc),
            sandbox_config: Some(config.clone()),
        };
        let mut c = self.client.clone();
        Ok(self.rt.block_on(c.create_container(req))?.into_inner().container_id)
    }

    pub fn start_container(&mut self, id: &str) {
        let mut c = self.client.clone();
        let r = self.rt.block_on(c.start_container(v1::StartContainerRequest { container_id: id.into() }));
        r.unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", self.d.stderr()));
    }

    /// StopContainer with no grace period.
    pub fn stop(&mut self, id: &str) {
        let mut c = self.client.clone();
        self.rt.block_on(c.stop_container(v1::StopContainerRequest { container_id: id.into(), timeout: 0 })).unwrap();
    }

    pub fn container_status(&mut self, id: &str) -> v1::ContainerStatus {
        let mut c = self.client.clone();
        let req = v1::ContainerStatusRequest { container_id: id.into(), verbose: true };
        self.rt.block_on(c.container_status(req)).unwrap().into_inner().status.unwrap()
    }

    pub fn pid_of(&mut self, id: &str) -> i32 {
        let mut c = self.client.clone();
        let req = v1::ContainerStatusRequest { container_id: id.into(), verbose: true };
        let info = self.rt.block_on(c.container_status(req)).unwrap().into_inner().info;
        let v: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
        v["pid"].as_i64().unwrap() as i32
    }

    pub fn update(&mut self, id: &str, r: v1::LinuxContainerResources) -> Result<(), tonic::Status> {
        let mut c = self.client.clone();
        let req = v1::UpdateContainerResourcesRequest { container_id: id.into(), linux: Some(r), ..Default::default() };
        self.rt.block_on(c.update_container_resources(req)).map(|_| ())
    }

    /// Container `id`'s config.json as the engine wrote it.
    pub fn spec_of(&self, id: &str) -> serde_json::Value {
        let p = self.d.dir.path().join("run/containers").join(id).join("config.json");
        serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
    }
    pub fn pod_ids(&mut self) -> Vec<String> {
        let mut c = self.client.clone();
        let r = self.rt.block_on(c.list_pod_sandbox(v1::ListPodSandboxRequest { filter: None }));
        r.map(|r| r.into_inner().items.into_iter().map(|p| p.id).collect()).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for id in self.pod_ids() {
            let _ = self.remove_pod(&id);
        }
        // SIGKILL: a SIGTERMed berthd waits for this node's client to hang
        // up, and the client goes only after this.
        if let Some(mut child) = self.restarted.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
