//! The CRI RuntimeService. Served now: `Version`, `Status`,
//! `RuntimeConfig`, `UpdateRuntimeConfig`, pods ([`crate::pods`]) and
//! containers ([`crate::containers`]) on the engine, and `Exec`, `Attach`
//! and `PortForward` when a streaming server runs (see [`crate::stream`]),
//! `GetContainerEvents` ([`crate::events`]), pod stats and metrics
//! ([`crate::stats`]); `CheckpointContainer` is refused with its reason.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_cri_api::v1;
use serde_json::json;
use tonic::{Request, Response, Status};

use crate::config::{Config, ResolvedHandler};
use crate::stream::{Pending, StdioOpts, StreamError};

/// The kubelet runtime API version berthd speaks (as containerd answers).
pub const KUBELET_API_VERSION: &str = "0.1.0";
/// `VersionResponse.runtime_name`.
pub const RUNTIME_NAME: &str = "berth";

/// What the services share.
pub struct Daemon {
    pub config: Config,
    pub handlers: Vec<ResolvedHandler>,
    pub root: PathBuf,
    pub runroot: PathBuf,
    pub cgroup_parent: String,
    /// berthd's own state: RUNROOT/berthd.
    pub state_dir: PathBuf,
    /// The pod CIDR(s) the kubelet gave in UpdateRuntimeConfig, also kept
    /// in STATE_DIR/pod-cidr so a restarted berthd knows it.
    pod_cidr: Mutex<String>,
    /// The streaming server behind Exec, Attach and PortForward, once
    /// something can run behind it (see [`crate::stream::Streamer`]).
    pub stream: Option<crate::stream::Server>,
    /// GetContainerEvents' hub (see [`crate::events`]).
    pub events: crate::events::Events,
}

impl Daemon {
    pub fn new(
        config: Config,
        handlers: Vec<ResolvedHandler>,
        root: PathBuf,
        runroot: PathBuf,
        cgroup_parent: String,
    ) -> Daemon {
        let state_dir = runroot.join("berthd");
        let pod_cidr = std::fs::read_to_string(state_dir.join("pod-cidr")).unwrap_or_default();
        Daemon {
            config,
            handlers,
            root,
            runroot,
            cgroup_parent,
            state_dir,
            pod_cidr: Mutex::new(pod_cidr),
            stream: None,
            events: crate::events::Events::default(),
        }
    }

    pub fn pod_cidr(&self) -> String {
        self.pod_cidr.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn set_pod_cidr(&self, cidr: &str) -> std::io::Result<()> {
        let mut held = self.pod_cidr.lock().map_err(|_| std::io::Error::other("pod CIDR lock poisoned"))?;
        write_atomic(&self.state_dir.join("pod-cidr"), cidr.as_bytes())?;
        *held = cidr.to_string();
        Ok(())
    }

    /// The effective configuration, as `crictl info` shows it.
    fn info_json(&self) -> serde_json::Value {
        json!({
            "root": self.root,
            "runroot": self.runroot,
            "cgroupParent": self.cgroup_parent,
            "cgroupDriver": self.config.cgroup_driver,
            "sandboxImage": self.config.sandbox_image,
            "defaultRuntime": self.config.default_runtime,
            "runtimes": self.handlers,
            "cni": self.config.cni,
            "stream": self.config.stream,
            "streamServer": self.stream.as_ref().map(|s| s.base_url()),
            "registryConfigPath": self.config.registry.config_path,
            "podCIDR": self.pod_cidr(),
        })
    }
}

/// Writes `data` to `path` through a temp file and a rename (berth-fs),
/// so a kill leaves the old content or the new, never a torn one.
fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new("/")))?;
    berth_fs::write_atomic_durable(path, data, 0o644)
}

/// Whether the CNI config dir holds a usable network config: `Err` says
/// why not. Like libcni, `*.conflist`, `*.conf` and `*.json` files count
/// when they parse as JSON objects with a name.
pub fn network_config_status(conf_dir: &Path) -> Result<PathBuf, String> {
    let entries = std::fs::read_dir(conf_dir).map_err(|e| format!("cannot read {}: {e}", conf_dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("conflist" | "conf" | "json")))
        .collect();
    files.sort();
    files
        .into_iter()
        .find(|p| {
            std::fs::read(p)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .is_some_and(|v| v.get("name").and_then(|n| n.as_str()).is_some_and(|n| !n.is_empty()))
        })
        .ok_or_else(|| format!("no network config found in {}", conf_dir.display()))
}

/// Checks a pod CIDR list as the kubelet sends it ("10.0.0.0/24" or
/// dual-stack "10.0.0.0/24,fd00::/64").
pub fn parse_pod_cidrs(s: &str) -> Result<Vec<String>, String> {
    s.split(',')
        .map(str::trim)
        .map(|c| {
            let (addr, len) = c.split_once('/').ok_or_else(|| format!("{c:?} is not a CIDR (address/length)"))?;
            let ip: std::net::IpAddr = addr.parse().map_err(|_| format!("{c:?}: {addr:?} is not an IP address"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            match len.parse::<u8>() {
                Ok(n) if n <= max => Ok(c.to_string()),
                _ => Err(format!("{c:?}: prefix length must be 0-{max}")),
            }
        })
        .collect()
}

fn condition(kind: &str, ok: Result<(), String>, reason: &str) -> v1::RuntimeCondition {
    let (status, reason, message) = match ok {
        Ok(()) => (true, String::new(), String::new()),
        Err(m) => (false, reason.to_string(), m),
    };
    v1::RuntimeCondition { r#type: kind.into(), status, reason, message }
}

pub struct RuntimeService(pub Arc<Daemon>);

/// The stdio options of an exec or attach, checked as kubelet checks them.
fn stdio_opts(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<StdioOpts, Status> {
    if !(stdin || stdout || stderr) {
        return Err(Status::invalid_argument("one of stdin, stdout, or stderr must be specified"));
    }
    if tty && stderr {
        return Err(Status::invalid_argument("tty and stderr cannot both be true"));
    }
    Ok(StdioOpts { stdin, stdout, stderr, tty })
}

fn stream_status(e: StreamError) -> Status {
    match e {
        StreamError::ContainerNotFound(_) | StreamError::PodNotFound(_) => Status::not_found(e.to_string()),
        StreamError::NotRunning(_) => Status::failed_precondition(e.to_string()),
        e => Status::internal(e.to_string()),
    }
}

impl RuntimeService {
    /// The streaming server, or why there is none.
    fn stream(&self, rpc: &str) -> Result<&crate::stream::Server, Status> {
        self.0.stream.as_ref().ok_or_else(|| {
            Status::unimplemented(format!("{rpc}: containers are not wired to berthd's streaming server yet"))
        })
    }

    async fn container_url(
        &self,
        rpc: &str,
        container_id: String,
        p: impl FnOnce(String) -> Pending,
    ) -> Result<String, Status> {
        let server = self.stream(rpc)?;
        if container_id.is_empty() {
            return Err(Status::invalid_argument(format!("{rpc}: container_id is required")));
        }
        server.streamer.check_container(&container_id).await.map_err(stream_status)?;
        server.url_for(p(container_id))
    }
}

impl RuntimeService {
    fn status_response(&self, verbose: bool) -> v1::StatusResponse {
        let d = &self.0;
        let cni = network_config_status(&d.config.cni.conf_dir);
        let conditions = vec![
            condition("RuntimeReady", Ok(()), ""),
            condition("NetworkReady", cni.as_ref().map(|_| ()).map_err(Clone::clone), "NetworkPluginNotReady"),
        ];
        // The default handler is listed under "" too: that is the name a
        // pod without a RuntimeClass asks for.
        let runtime_handlers = std::iter::once(String::new())
            .chain(d.handlers.iter().map(|h| h.name.clone()))
            .map(|name| {
                let f = crate::features::of_handler(d, &name);
                let features = Some(v1::RuntimeHandlerFeatures {
                    recursive_read_only_mounts: f.recursive_read_only_mounts,
                    user_namespaces: f.user_namespaces,
                });
                v1::RuntimeHandler { name, features }
            })
            .collect();
        let mut info = HashMap::new();
        if verbose {
            info.insert("config".to_string(), d.info_json().to_string());
            let cni_status = match &cni {
                Ok(p) => format!("OK ({})", p.display()),
                Err(e) => e.clone(),
            };
            info.insert("lastCNILoadStatus".to_string(), serde_json::Value::String(cni_status).to_string());
        }
        v1::StatusResponse {
            status: Some(v1::RuntimeStatus { conditions }),
            info,
            runtime_handlers,
            // Merge and Strict are both honoured (see containers::groups_policy).
            features: Some(v1::RuntimeFeatures { supplemental_groups_policy: true }),
        }
    }
}

crate::cri_service! {
    impl v1::runtime_service_server::RuntimeService for RuntimeService {
        type GetContainerEventsStream = std::pin::Pin<
            Box<dyn tokio_stream::Stream<Item = Result<v1::ContainerEventResponse, Status>> + Send>,
        >;

        async fn get_container_events(
            &self,
            _req: Request<v1::GetEventsRequest>,
        ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
            crate::events::spawn(&self.0);
            Ok(Response::new(Box::pin(self.0.events.subscribe())))
        }

        async fn version(&self, _req: Request<v1::VersionRequest>) -> Result<Response<v1::VersionResponse>, Status> {
            Ok(Response::new(v1::VersionResponse {
                version: KUBELET_API_VERSION.into(),
                runtime_name: RUNTIME_NAME.into(),
                runtime_version: env!("CARGO_PKG_VERSION").into(),
                runtime_api_version: "v1".into(),
            }))
        }

        async fn status(&self, req: Request<v1::StatusRequest>) -> Result<Response<v1::StatusResponse>, Status> {
            Ok(Response::new(self.status_response(req.get_ref().verbose)))
        }

        async fn runtime_config(
            &self,
            _req: Request<v1::RuntimeConfigRequest>,
        ) -> Result<Response<v1::RuntimeConfigResponse>, Status> {
            // Config::load refuses "systemd": cgroupfs is the only driver.
            let linux = v1::LinuxRuntimeConfiguration { cgroup_driver: v1::CgroupDriver::Cgroupfs as i32 };
            Ok(Response::new(v1::RuntimeConfigResponse { linux: Some(linux) }))
        }

        async fn update_runtime_config(
            &self,
            req: Request<v1::UpdateRuntimeConfigRequest>,
        ) -> Result<Response<v1::UpdateRuntimeConfigResponse>, Status> {
            let cidr = req
                .into_inner()
                .runtime_config
                .and_then(|c| c.network_config)
                .map(|n| n.pod_cidr)
                .unwrap_or_default();
            // The kubelet sends an empty CIDR before it knows one: nothing to change.
            if cidr.is_empty() {
                return Ok(Response::new(v1::UpdateRuntimeConfigResponse {}));
            }
            let cidrs = parse_pod_cidrs(&cidr).map_err(|e| Status::invalid_argument(format!("pod CIDR: {e}")))?;
            let cidr = cidrs.join(",");
            if cidr != self.0.pod_cidr() {
                self.0.set_pod_cidr(&cidr).map_err(|e| Status::internal(format!("record pod CIDR: {e}")))?;
                tracing::info!(pod_cidr = %cidr, "pod CIDR updated");
            }
            Ok(Response::new(v1::UpdateRuntimeConfigResponse {}))
        }

        async fn exec(&self, req: Request<v1::ExecRequest>) -> Result<Response<v1::ExecResponse>, Status> {
            let r = req.into_inner();
            let opts = stdio_opts(r.stdin, r.stdout, r.stderr, r.tty)?;
            if r.cmd.is_empty() {
                return Err(Status::invalid_argument("Exec: cmd is required"));
            }
            let cmd = r.cmd;
            let url = self.container_url("Exec", r.container_id, |container_id| Pending::Exec { container_id, cmd, opts }).await?;
            Ok(Response::new(v1::ExecResponse { url }))
        }

        async fn attach(&self, req: Request<v1::AttachRequest>) -> Result<Response<v1::AttachResponse>, Status> {
            let r = req.into_inner();
            let opts = stdio_opts(r.stdin, r.stdout, r.stderr, r.tty)?;
            let url = self.container_url("Attach", r.container_id, |container_id| Pending::Attach { container_id, opts }).await?;
            Ok(Response::new(v1::AttachResponse { url }))
        }

        async fn port_forward(
            &self,
            req: Request<v1::PortForwardRequest>,
        ) -> Result<Response<v1::PortForwardResponse>, Status> {
            let r = req.into_inner();
            let server = self.stream("PortForward")?;
            if r.pod_sandbox_id.is_empty() {
                return Err(Status::invalid_argument("PortForward: pod_sandbox_id is required"));
            }
            // The ports are chosen per connection by the client; any listed
            // here must still be real ports.
            if let Some(p) = r.port.iter().find(|p| !(1..=65535).contains(*p)) {
                return Err(Status::invalid_argument(format!("PortForward: port {p} is not 1-65535")));
            }
            server.streamer.check_pod(&r.pod_sandbox_id).await.map_err(stream_status)?;
            let url = server.url_for(Pending::PortForward { pod_sandbox_id: r.pod_sandbox_id })?;
            Ok(Response::new(v1::PortForwardResponse { url }))
        }

        // Pods and containers: crate::pods, crate::containers.
        async fn run_pod_sandbox(&self, r: Request<v1::RunPodSandboxRequest>) -> Result<Response<v1::RunPodSandboxResponse>, Status> {
            crate::pods::run(self.0.clone(), r.into_inner()).await.map(Response::new)
        }
        async fn stop_pod_sandbox(&self, r: Request<v1::StopPodSandboxRequest>) -> Result<Response<v1::StopPodSandboxResponse>, Status> {
            crate::pods::stop(self.0.clone(), r.into_inner()).await.map(Response::new)
        }
        async fn remove_pod_sandbox(&self, r: Request<v1::RemovePodSandboxRequest>) -> Result<Response<v1::RemovePodSandboxResponse>, Status> {
            crate::pods::remove(self.0.clone(), r.into_inner()).await.map(Response::new)
        }
        async fn pod_sandbox_status(&self, r: Request<v1::PodSandboxStatusRequest>) -> Result<Response<v1::PodSandboxStatusResponse>, Status> {
            crate::pods::status(self.0.clone(), r.into_inner()).await.map(Response::new)
        }
        async fn list_pod_sandbox(&self, r: Request<v1::ListPodSandboxRequest>) -> Result<Response<v1::ListPodSandboxResponse>, Status> {
            crate::pods::list(self.0.clone(), r.into_inner()).await.map(Response::new)
        }
        async fn create_container(&self, r: Request<v1::CreateContainerRequest>) -> Result<Response<v1::CreateContainerResponse>, Status> {
            crate::containers::create(self.0.clone(), r.into_inner()).await.map(Response::new)
        }
        async fn start_container(&self, r: Request<v1::StartContainerRequest>) -> Result<Response<v1::StartContainerResponse>, Status> {
            crate::containers::start(self.0.clone(), r.into_inner()).await.map(Response::new)
        }
        async fn stop_container(&self, r: Request<v1::StopContainerRequest>) -> Result<Response<v1::StopContainerResponse>, Status> {
            crate::containers::stop(self.0.clone(), r.into_inner()).await.map(Response::new)
        }
        async fn remove_container(&self, r: Request<v1::RemoveContainerRequest>) -> Result<Response<v1::RemoveContainerResponse>, Status> {
            crate::containers::remove(self.0.clone(), r.into_inner()).await.map(Response::new)
        }
        async fn list_containers(&self, r: Request<v1::ListContainersRequest>) -> Result<Response<v1::ListContainersResponse>, Status> {
            crate::containers::list(self.0.clone(), r.into_inner()).await.map(Response::new)
        }
        async fn container_status(&self, r: Request<v1::ContainerStatusRequest>) -> Result<Response<v1::ContainerStatusResponse>, Status> {
            crate::containers::status(self.0.clone(), r.into_inner()).await.map(Response::new)
        }
        async fn update_container_resources(&self, r: Request<v1::UpdateContainerResourcesRequest>) -> Result<Response<v1::UpdateContainerResourcesResponse>, Status> {
            crate::containers::update(self.0.clone(), r.into_inner()).await.map(Response::new)
        }
        async fn exec_sync(&self, r: Request<v1::ExecSyncRequest>) -> Result<Response<v1::ExecSyncResponse>, Status> {
            crate::containers::exec_sync(self.0.clone(), r.into_inner()).await.map(Response::new)
        }
        async fn reopen_container_log(&self, r: Request<v1::ReopenContainerLogRequest>) -> Result<Response<v1::ReopenContainerLogResponse>, Status> {
            crate::containers::reopen_log(self.0.clone(), r.into_inner()).await.map(|()| Response::new(v1::ReopenContainerLogResponse {}))
        }
        async fn container_stats(&self, r: Request<v1::ContainerStatsRequest>) -> Result<Response<v1::ContainerStatsResponse>, Status> {
            crate::containers::stats(self.0.clone(), r.into_inner()).await.map(Response::new)
        }
        async fn list_container_stats(&self, r: Request<v1::ListContainerStatsRequest>) -> Result<Response<v1::ListContainerStatsResponse>, Status> {
            crate::containers::list_stats(self.0.clone(), r.into_inner()).await.map(Response::new)
        }
        // Pod stats, metrics and checkpoint: crate::stats.
        async fn pod_sandbox_stats(&self, r: Request<v1::PodSandboxStatsRequest>) -> Result<Response<v1::PodSandboxStatsResponse>, Status> {
            crate::stats::pod_sandbox_stats(self.0.clone(), r.into_inner()).await.map(Response::new)
        }
        async fn list_pod_sandbox_stats(&self, r: Request<v1::ListPodSandboxStatsRequest>) -> Result<Response<v1::ListPodSandboxStatsResponse>, Status> {
            crate::stats::list_pod_sandbox_stats(self.0.clone(), r.into_inner()).await.map(Response::new)
        }
        async fn list_metric_descriptors(&self, _r: Request<v1::ListMetricDescriptorsRequest>) -> Result<Response<v1::ListMetricDescriptorsResponse>, Status> {
            Ok(Response::new(crate::stats::metric_descriptors()))
        }
        async fn list_pod_sandbox_metrics(&self, _r: Request<v1::ListPodSandboxMetricsRequest>) -> Result<Response<v1::ListPodSandboxMetricsResponse>, Status> {
            crate::stats::list_pod_sandbox_metrics(self.0.clone()).await.map(Response::new)
        }
        async fn checkpoint_container(&self, r: Request<v1::CheckpointContainerRequest>) -> Result<Response<v1::CheckpointContainerResponse>, Status> {
            Err(crate::stats::checkpoint(r.get_ref()))
        }
    }
    not_yet {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_cidrs() {
        assert_eq!(parse_pod_cidrs("10.0.0.0/24, fd00::/64").unwrap(), ["10.0.0.0/24", "fd00::/64"]);
        for (bad, want) in [
            ("10.0.0.0", "not a CIDR"),
            ("10.0.0/24", "not an IP address"),
            ("10.0.0.0/33", "0-32"),
            ("fd00::/129", "0-128"),
        ] {
            let e = parse_pod_cidrs(bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn exec_and_attach_stdio_is_checked_as_kubelet_does() {
        let msg = |r: Result<StdioOpts, Status>| r.unwrap_err().message().to_string();
        assert_eq!(msg(stdio_opts(false, false, false, false)), "one of stdin, stdout, or stderr must be specified");
        assert_eq!(msg(stdio_opts(true, true, true, true)), "tty and stderr cannot both be true");
        let o = stdio_opts(true, true, false, true).unwrap();
        assert_eq!(o, StdioOpts { stdin: true, stdout: true, stderr: false, tty: true });
    }

    #[tokio::test]
    async fn without_a_streamer_exec_says_it_is_not_wired() {
        let d = Daemon::new(Config::default(), Vec::new(), "/r".into(), "/nonexistent/run".into(), "/b".into());
        let svc = RuntimeService(Arc::new(d));
        use v1::runtime_service_server::RuntimeService as _;
        let req =
            v1::ExecRequest { container_id: "x".into(), cmd: vec!["true".into()], stdout: true, ..Default::default() };
        let e = svc.exec(Request::new(req)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented);
        assert!(e.message().contains("not wired"), "{}", e.message());
    }

    #[test]
    fn network_needs_a_named_config() {
        let d = tempfile::tempdir().unwrap();
        assert!(network_config_status(&d.path().join("none")).unwrap_err().contains("cannot read"));
        assert!(network_config_status(d.path()).unwrap_err().contains("no network config found"));
        std::fs::write(d.path().join("10-x.conflist"), "{ not json").unwrap();
        std::fs::write(d.path().join("README"), r#"{"name": "x"}"#).unwrap();
        assert!(network_config_status(d.path()).is_err());
        std::fs::write(d.path().join("20-y.conflist"), r#"{"cniVersion": "1.0.0", "name": "y", "plugins": []}"#)
            .unwrap();
        assert_eq!(network_config_status(d.path()).unwrap(), d.path().join("20-y.conflist"));
    }
}
