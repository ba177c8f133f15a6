//! CRI pod sandboxes on the engine. A sandbox is an infra (pause)
//! container from `sandbox_image`, in the engine's
//! [`K8S_NAMESPACE`]: the sandbox ID is its engine container ID, its
//! network namespace is the one the engine pins for every container
//! (`RUNROOT/containers/ID/netns`), attached to the first network config of
//! the CNI conf dir; the pod's containers join it and its IPC and UTS (and
//! PID, when the pod shares one) namespaces. What the CRI needs back
//! ([`SandboxMeta`]) is kept on the engine record, in the same transaction
//! (containerd keeps it in its container's extensions), so `berth ps
//! --namespace k8s` and berthd see one set of containers.
//!
//! The engine blocks (its database, the shim, CNI plugins): each RPC runs
//! on tokio's blocking pool.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_cri_api::v1;
use berth_engine::engine::{CreateOptions, Engine};
use berth_engine::images::{ImageSettings, PullPolicy, PullRequest, no_events};
use berth_engine::pod::{Dns, K8S_NAMESPACE, PodNetwork, PodSettings, SpecOverrides};
use berth_engine::spec::{Namespaces, NsMode, RunFlags};
use berth_engine::store::{ContainerRecord, Status as EngineStatus};
use berth_engine::userns::PodUserns;
use serde::{Deserialize, Serialize};
use tonic::Status;

use crate::events::Kind;
use crate::runtime::{Daemon, network_config_status};

/// The record extension a sandbox's [`SandboxMeta`] is kept under.
pub const SANDBOX_EXT: &str = "io.berth.cri.sandbox";

/// What the CRI asks of a sandbox beyond the engine's record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SandboxMeta {
    pub name: String,
    pub uid: String,
    pub namespace: String,
    pub attempt: u32,
    pub runtime_handler: String,
    pub log_directory: String,
    pub annotations: BTreeMap<String, String>,
    pub host_network: bool,
    /// NamespaceOption's pid and ipc modes (v1::NamespaceMode values).
    pub pid_mode: i32,
    pub ipc_mode: i32,
    /// The kubelet's cgroup parent for the pod (None: berthd's).
    #[serde(default)]
    pub cgroup_parent: Option<String>,
    /// The pod's hostname (its containers set the same in the UTS
    /// namespace they share); empty with the host's network.
    #[serde(default)]
    pub hostname: String,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    /// The pod's own user namespace (None: the host's); see [`crate::userns`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns: Option<berth_engine::userns::Mappings>,
}

/// Runs `f` on the blocking pool.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, Status> + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Status::internal(format!("engine call failed: {e}")))?
}

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

/// An engine error as a gRPC status: what names a missing thing is
/// NOT_FOUND, bad input INVALID_ARGUMENT, the rest INTERNAL.
pub fn engine_status(what: &str, e: berth_engine::Error) -> Status {
    use berth_engine::Error as E;
    use berth_engine::store::StoreError;
    let msg = format!("{what}: {e}");
    match e {
        E::Store(StoreError::NotFound(_)) | E::NoSuchImage(_) => Status::not_found(msg),
        E::Store(StoreError::NameInUse { .. }) => Status::already_exists(msg),
        E::Spec(_) | E::Userns(berth_engine::userns::UsernsError::Mapping(_)) => Status::invalid_argument(msg),
        E::Userns(berth_engine::userns::UsernsError::Refused(_)) => Status::failed_precondition(msg),
        _ => Status::internal(msg),
    }
}

impl Daemon {
    /// The engine for runtime handler `handler` ("" is the default one):
    /// its OCI runtime runs the pod and all its containers.
    pub fn engine_for(&self, handler: &str) -> Result<Engine, Status> {
        let name = if handler.is_empty() { self.config.default_runtime.as_str() } else { handler };
        let h = self.handlers.iter().find(|h| h.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.handlers.iter().map(|h| h.name.as_str()).collect();
            Status::not_found(format!("no runtime for {handler:?} is configured (runtime handlers: {known:?})"))
        })?;
        Ok(Engine {
            root: self.root.clone(),
            runroot: self.runroot.clone(),
            runtime: h.path.clone(),
            shim: std::env::var_os("BERTH_SHIM").map(PathBuf::from).unwrap_or_else(|| sibling("berth-shim")),
            cli: None,
            cgroup_parent: self.cgroup_parent.clone(),
        })
    }

    /// The default handler's engine: reads and removals (each container's
    /// record names the runtime its shim runs).
    pub fn engine(&self) -> Result<Engine, Status> {
        self.engine_for("")
    }
}

/// A program beside berthd, else by name on PATH.
fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// A sandbox: its record (refreshed) and meta.
pub struct Sandbox {
    pub rec: ContainerRecord,
    pub meta: SandboxMeta,
}

impl Sandbox {
    pub fn ready(&self) -> bool {
        matches!(self.rec.status, EngineStatus::Running | EngineStatus::Paused)
    }

    fn state(&self) -> i32 {
        if self.ready() {
            v1::PodSandboxState::SandboxReady as i32
        } else {
            v1::PodSandboxState::SandboxNotready as i32
        }
    }

    fn metadata(&self) -> v1::PodSandboxMetadata {
        let m = &self.meta;
        v1::PodSandboxMetadata {
            name: m.name.clone(),
            uid: m.uid.clone(),
            namespace: m.namespace.clone(),
            attempt: m.attempt,
        }
    }
}

/// The sandbox of a record, if it is one.
fn sandbox_of(engine: &Engine, rec: &ContainerRecord) -> Option<Sandbox> {
    if rec.namespace != K8S_NAMESPACE {
        return None;
    }
    let meta: SandboxMeta = serde_json::from_value(rec.extensions.get(SANDBOX_EXT)?.clone()).ok()?;
    Some(Sandbox { rec: engine.refresh(rec), meta })
}

/// Every sandbox.
pub fn sandboxes(engine: &Engine) -> Result<Vec<Sandbox>, Status> {
    let all = engine.containers().and_then(|s| Ok(s.list()?)).map_err(|e| engine_status("list sandboxes", e))?;
    Ok(all.iter().filter_map(|r| sandbox_of(engine, r)).collect())
}

/// The sandbox `id` (or an unambiguous prefix of it): NOT_FOUND names it.
pub fn find_sandbox(engine: &Engine, id: &str) -> Result<Sandbox, Status> {
    let missing = || Status::not_found(format!("pod sandbox {id:?} not found"));
    if id.is_empty() {
        return Err(Status::invalid_argument("pod_sandbox_id is required"));
    }
    let rec = match engine.containers().and_then(|s| Ok(s.get(id)?)) {
        Ok(r) => r,
        Err(berth_engine::Error::Store(berth_engine::store::StoreError::NotFound(_))) => return Err(missing()),
        Err(e) => return Err(engine_status("find pod sandbox", e)),
    };
    // Only by ID: a container name is no sandbox ID.
    if !rec.id.starts_with(id) {
        return Err(missing());
    }
    sandbox_of(engine, &rec).ok_or_else(missing)
}

/// The pod's name for the engine's name table, unique as containerd's:
/// `k8s_POD_<name>_<namespace>_<uid>_<attempt>`.
fn sandbox_name(m: &SandboxMeta) -> String {
    format!("k8s_POD_{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
}

fn mode(ns: Option<&v1::NamespaceOption>, f: impl Fn(&v1::NamespaceOption) -> i32) -> i32 {
    ns.map_or(v1::NamespaceMode::Pod as i32, f)
}

/// RunPodSandbox: the infra container made, attached to the pod network
/// and started; undone whole when a step fails.
pub async fn run(d: Arc<Daemon>, req: v1::RunPodSandboxRequest) -> Result<v1::RunPodSandboxResponse, Status> {
    let config = req.config.ok_or_else(|| Status::invalid_argument("RunPodSandbox: config is required"))?;
    let md = config
        .metadata
        .clone()
        .ok_or_else(|| Status::invalid_argument("RunPodSandbox: config.metadata is required"))?;
    if md.name.is_empty() || md.namespace.is_empty() || md.uid.is_empty() {
        return Err(Status::invalid_argument("RunPodSandbox: metadata needs name, namespace and uid"));
    }
    let handler = req.runtime_handler.clone();
    let engine = d.engine_for(&handler)?;
    let linux = config.linux.clone().unwrap_or_default();
    let sec = linux.security_context.clone().unwrap_or_default();
    let ns = sec.namespace_options.as_ref();
    let userns = crate::userns::of_pod(ns)?;
    if userns.is_some() {
        crate::userns::check_handler(&handler, &engine.runtime)?;
    }
    let meta = SandboxMeta {
        name: md.name.clone(),
        uid: md.uid.clone(),
        namespace: md.namespace.clone(),
        attempt: md.attempt,
        runtime_handler: handler.clone(),
        log_directory: config.log_directory.clone(),
        annotations: config.annotations.clone().into_iter().collect(),
        host_network: mode(ns, |n| n.network) == v1::NamespaceMode::Node as i32,
        pid_mode: mode(ns, |n| n.pid),
        ipc_mode: mode(ns, |n| n.ipc),
        cgroup_parent: Some(linux.cgroup_parent.clone()).filter(|p| !p.is_empty()),
        hostname: config.hostname.clone(),
        created_at: now_ns(),
        userns,
    };
    blocking(move || run_blocking(&d, &engine, &config, meta)).await
}

fn run_blocking(
    d: &Daemon,
    engine: &Engine,
    config: &v1::PodSandboxConfig,
    meta: SandboxMeta,
) -> Result<v1::RunPodSandboxResponse, Status> {
    let host = |m: i32| if m == v1::NamespaceMode::Node as i32 { NsMode::Host } else { NsMode::Private };
    let flags = RunFlags {
        hostname: pod_hostname(&meta, config),
        labels: config.labels.clone().into_iter().collect(),
        ..Default::default()
    };
    let dns = config.dns_config.clone().unwrap_or_default();
    let pod = PodSettings {
        namespaces: Namespaces {
            pid: host(meta.pid_mode),
            ipc: host(meta.ipc_mode),
            uts: if meta.host_network { NsMode::Host } else { NsMode::Private },
        },
        dns: Dns { servers: dns.servers, searches: dns.searches, options: dns.options },
        cgroup_parent: meta.cgroup_parent.clone(),
        // Set once, in the namespaces the pod's containers share (as
        // containerd sets them on the sandbox).
        overrides: SpecOverrides {
            sysctls: config.linux.as_ref().map(|l| l.sysctls.clone().into_iter().collect()).unwrap_or_default(),
            annotations: crate::container_extras::pod_resource_annotations(config),
            ..Default::default()
        },
        // The infra container pins the pod's user namespace (and the
        // network namespace it owns); the members join it.
        userns: meta.userns.clone().map(|mappings| PodUserns { mappings, join: None, idmapped_mounts: Vec::new() }),
        ..Default::default()
    };
    let opts = CreateOptions {
        name: Some(sandbox_name(&meta)),
        network: if meta.host_network { "host" } else { "none" }.into(),
        namespace: K8S_NAMESPACE.into(),
        extensions: BTreeMap::from([(SANDBOX_EXT.to_owned(), serde_json::to_value(&meta).unwrap_or_default())]),
        runtime: Some(engine.runtime.clone()),
        pod: Some(pod),
        ..Default::default()
    };
    // The pause image is pulled when missing, through the configured mirrors.
    let images = engine.images(d.config.registry.clone(), ImageSettings::default());
    let rec = images
        .create_container(
            &d.config.sandbox_image,
            PullPolicy::Missing,
            &PullRequest::default(),
            &flags,
            &opts,
            no_events(),
        )
        .map_err(|e| engine_status("RunPodSandbox: create the infra container", e))?;
    let undo = |status: Status| {
        if let Err(e) = engine.remove(&rec.id, true) {
            tracing::warn!(id = %rec.id, "RunPodSandbox: undo: {e}");
        }
        status
    };
    let net = match meta.host_network {
        true => None,
        false => Some(pod_network(d, config, &meta, &rec.id).map_err(undo)?),
    };
    // The namespace is pinned at create, so CNI ADD (three plugin
    // processes) and the infra container's start (shim and runtime) need
    // nothing of each other: run them side by side. Both are done, or
    // undone together, before the pod is reported.
    let (added, started) = std::thread::scope(|s| {
        let add = net.map(|net| s.spawn(|| engine.attach_pod_network(&rec.id, net)));
        let started = engine.start(&rec.id);
        let added = add.map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        (added, started)
    });
    if let Some(Err(e)) = added {
        return Err(undo(engine_status("RunPodSandbox: CNI ADD", e)));
    }
    started.map_err(|e| undo(engine_status("RunPodSandbox: start the infra container", e)))?;
    tracing::info!(id = %rec.id, pod = %meta.name, namespace = %meta.namespace, "pod sandbox ready");
    d.events.publish(&rec.id, &rec.id, Kind::ContainerCreatedEvent);
    d.events.publish(&rec.id, &rec.id, Kind::ContainerStartedEvent);
    Ok(v1::RunPodSandboxResponse { pod_sandbox_id: rec.id })
}

/// The name in the pod's /etc/hostname: the kubelet's, or with the host's
/// network the host's own (its UTS namespace is the host's too).
fn pod_hostname(meta: &SandboxMeta, config: &v1::PodSandboxConfig) -> Option<String> {
    if meta.host_network {
        return nix::unistd::gethostname().ok().map(|h| h.to_string_lossy().into_owned());
    }
    Some(config.hostname.clone()).filter(|h| !h.is_empty())
}

/// The pod's network: the first network config of the CNI conf dir, with
/// the arguments containerd passes and the pod's port mappings.
fn pod_network(d: &Daemon, config: &v1::PodSandboxConfig, meta: &SandboxMeta, id: &str) -> Result<PodNetwork, Status> {
    let path = network_config_status(&d.config.cni.conf_dir)
        .map_err(|e| Status::failed_precondition(format!("RunPodSandbox: network not ready: {e}")))?;
    let mut net = PodNetwork::load(&path, d.config.cni.bin_dirs.clone())
        .map_err(|e| Status::failed_precondition(format!("RunPodSandbox: {e}")))?;
    net.args = vec![
        ("IgnoreUnknown".into(), "1".into()),
        ("K8S_POD_NAMESPACE".into(), meta.namespace.clone()),
        ("K8S_POD_NAME".into(), meta.name.clone()),
        ("K8S_POD_INFRA_CONTAINER_ID".into(), id.to_owned()),
        ("K8S_POD_UID".into(), meta.uid.clone()),
    ];
    net.ports = config.port_mappings.iter().filter(|p| p.host_port > 0).map(port_mapping).collect::<Result<_, _>>()?;
    Ok(net)
}

fn port_mapping(p: &v1::PortMapping) -> Result<berth_engine::network::PortMapping, Status> {
    let port = |n: i32, what: &str| {
        u16::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| Status::invalid_argument(format!("port mapping: {what} {n} is not 1-65535")))
    };
    let protocol = match v1::Protocol::try_from(p.protocol) {
        Ok(v1::Protocol::Udp) => "udp",
        Ok(v1::Protocol::Sctp) => "sctp",
        _ => "tcp",
    };
    Ok(berth_engine::network::PortMapping {
        host_port: port(p.host_port, "host_port")?,
        container_port: port(p.container_port, "container_port")?,
        protocol: protocol.into(),
        host_ip: p.host_ip.clone(),
    })
}

/// StopPodSandbox: every container of the pod killed, the infra
/// container stopped, the network deleted. Idempotent.
pub async fn stop(d: Arc<Daemon>, req: v1::StopPodSandboxRequest) -> Result<v1::StopPodSandboxResponse, Status> {
    let engine = d.engine()?;
    blocking(move || {
        // Idempotent, as the CRI asks: a pod that is not there is stopped.
        let sb = match find_sandbox(&engine, &req.pod_sandbox_id) {
            Ok(sb) => sb,
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(v1::StopPodSandboxResponse {}),
            Err(s) => return Err(s),
        };
        stop_blocking(&d, &engine, &sb)?;
        Ok(v1::StopPodSandboxResponse {})
    })
    .await
}

fn stop_blocking(d: &Daemon, engine: &Engine, sb: &Sandbox) -> Result<(), Status> {
    let id = &sb.rec.id;
    // The pod's handler signals its containers (a handler gone from the
    // config since: the default one, and the engine's direct kill).
    let engine = &d.engine_for(&sb.meta.runtime_handler).unwrap_or_else(|_| engine.clone());
    for c in crate::containers::of_sandbox(engine, id)? {
        engine.stop(&c.id, Duration::ZERO).map_err(|e| engine_status("StopPodSandbox: stop a container", e))?;
        d.events.publish(&c.id, id, Kind::ContainerStoppedEvent);
    }
    engine.stop(id, Duration::ZERO).map_err(|e| engine_status("StopPodSandbox: stop the infra container", e))?;
    d.events.publish(id, id, Kind::ContainerStoppedEvent);
    engine.detach_pod_network(id).map_err(|e| engine_status("StopPodSandbox: CNI DEL", e))?;
    Ok(())
}

/// RemovePodSandbox: stopped first if it runs, then its containers and
/// itself removed. A sandbox that is not there is removed already.
pub async fn remove(d: Arc<Daemon>, req: v1::RemovePodSandboxRequest) -> Result<v1::RemovePodSandboxResponse, Status> {
    let engine = d.engine()?;
    blocking(move || {
        let sb = match find_sandbox(&engine, &req.pod_sandbox_id) {
            Ok(sb) => sb,
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(v1::RemovePodSandboxResponse {}),
            Err(s) => return Err(s),
        };
        stop_blocking(&d, &engine, &sb)?;
        let engine = d.engine_for(&sb.meta.runtime_handler).unwrap_or(engine);
        for c in crate::containers::of_sandbox(&engine, &sb.rec.id)? {
            engine.remove(&c.id, true).map_err(|e| engine_status("RemovePodSandbox: remove a container", e))?;
            d.events.publish(&c.id, &sb.rec.id, Kind::ContainerDeletedEvent);
        }
        engine
            .remove(&sb.rec.id, true)
            .map_err(|e| engine_status("RemovePodSandbox: remove the infra container", e))?;
        tracing::info!(id = %sb.rec.id, "pod sandbox removed");
        d.events.publish(&sb.rec.id, &sb.rec.id, Kind::ContainerDeletedEvent);
        Ok(v1::RemovePodSandboxResponse {})
    })
    .await
}

/// PodSandboxStatus, with containerd's verbose info (pid, netns path,
/// runtime handler, image, CNI result).
pub async fn status(d: Arc<Daemon>, req: v1::PodSandboxStatusRequest) -> Result<v1::PodSandboxStatusResponse, Status> {
    let engine = d.engine()?;
    blocking(move || {
        let sb = find_sandbox(&engine, &req.pod_sandbox_id)?;
        let net = engine.pod_network(&sb.rec.id);
        let mut ips = net.as_ref().and_then(|n| n.result.as_ref()).map_or_else(Vec::new, |r| {
            r.ips.iter().map(|ip| ip.address.split('/').next().unwrap_or("").to_owned()).collect::<Vec<_>>()
        });
        // IPv4 first, as the kubelet takes the first as the pod's IP.
        ips.sort_by_key(|ip| ip.contains(':'));
        let network = (!sb.meta.host_network).then(|| v1::PodSandboxNetworkStatus {
            ip: ips.first().cloned().unwrap_or_default(),
            additional_ips: ips.iter().skip(1).map(|ip| v1::PodIp { ip: ip.clone() }).collect(),
        });
        let ns_opts = v1::NamespaceOption {
            network: if sb.meta.host_network { v1::NamespaceMode::Node as i32 } else { v1::NamespaceMode::Pod as i32 },
            pid: sb.meta.pid_mode,
            ipc: sb.meta.ipc_mode,
            userns_options: Some(crate::userns::status(sb.meta.userns.as_ref())),
            ..Default::default()
        };
        let linux = Some(v1::LinuxPodSandboxStatus { namespaces: Some(v1::Namespace { options: Some(ns_opts) }) });
        let mut info = HashMap::new();
        if req.verbose {
            let netns = (!sb.meta.host_network).then(|| engine.netns_path(&sb.rec.id));
            let v = serde_json::json!({
                "pid": sb.rec.pid.filter(|_| sb.ready()).unwrap_or(0),
                "netNamespacePath": netns,
                "runtimeHandler": sb.meta.runtime_handler,
                "image": sb.rec.image,
                "cniResult": net.and_then(|n| n.result),
                "engineNamespace": sb.rec.namespace,
            });
            info.insert("info".to_owned(), v.to_string());
        }
        let status = v1::PodSandboxStatus {
            id: sb.rec.id.clone(),
            metadata: Some(sb.metadata()),
            state: sb.state(),
            created_at: sb.meta.created_at,
            network,
            linux,
            labels: sb.rec.labels.clone().into_iter().collect(),
            annotations: sb.meta.annotations.clone().into_iter().collect(),
            runtime_handler: sb.meta.runtime_handler.clone(),
        };
        Ok(v1::PodSandboxStatusResponse { status: Some(status), info, ..Default::default() })
    })
    .await
}

/// Whether `labels` has every pair of `selector`.
pub fn selected(labels: &BTreeMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// ListPodSandbox with its filters (ID prefix, state, label selector).
pub async fn list(d: Arc<Daemon>, req: v1::ListPodSandboxRequest) -> Result<v1::ListPodSandboxResponse, Status> {
    let engine = d.engine()?;
    blocking(move || {
        let f = req.filter.unwrap_or_default();
        let items = sandboxes(&engine)?
            .into_iter()
            .filter(|sb| sb.rec.id.starts_with(&f.id))
            .filter(|sb| f.state.as_ref().is_none_or(|s| s.state == sb.state()))
            .filter(|sb| selected(&sb.rec.labels, &f.label_selector))
            .map(|sb| v1::PodSandbox {
                id: sb.rec.id.clone(),
                metadata: Some(sb.metadata()),
                state: sb.state(),
                created_at: sb.meta.created_at,
                labels: sb.rec.labels.clone().into_iter().collect(),
                annotations: sb.meta.annotations.clone().into_iter().collect(),
                runtime_handler: sb.meta.runtime_handler.clone(),
            })
            .collect();
        Ok(v1::ListPodSandboxResponse { items })
    })
    .await
}

/// For PortForward: the network namespace of sandbox `id` (None for a pod
/// on the host's network, whose ports are the host's).
pub fn netns_of(d: &Daemon, id: &str) -> Result<Option<PathBuf>, Status> {
    let engine = d.engine()?;
    let sb = find_sandbox(&engine, id)?;
    if !sb.ready() {
        return Err(Status::failed_precondition(format!("pod sandbox {} is not ready", sb.rec.id)));
    }
    Ok((!sb.meta.host_network).then(|| engine.netns_path(&sb.rec.id)))
}
