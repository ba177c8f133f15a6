//! CRI containers on the engine: each is an engine container (its CRI ID
//! is its engine ID) in [`K8S_NAMESPACE`], joined to its sandbox's network,
//! IPC and UTS namespaces (and PID, when the pod shares one), bound to the
//! sandbox's hosts, resolv.conf and hostname files, and run by the
//! sandbox's runtime handler. What the CRI needs back ([`ContainerMeta`])
//! is kept on the engine record.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_cri_api::v1;
use berth_engine::engine::{CreateOptions, Engine};
use berth_engine::logconfig::LogConfig;
use berth_engine::pod::{Device, K8S_NAMESPACE, PodSettings, ResourceUpdate, SpecOverrides};
use berth_engine::spec::{Namespaces, NsMode, RunFlags, UserMount};
use berth_engine::store::{ContainerRecord, Status as EngineStatus};
use serde::{Deserialize, Serialize};
use tonic::Status;

use crate::container_extras::ProcessUser;
use crate::events::Kind;
use crate::pods::{Sandbox, blocking, engine_status, find_sandbox, now_ns, selected};
use crate::runtime::Daemon;

/// The record extension a container's [`ContainerMeta`] is kept under.
pub const CONTAINER_EXT: &str = "io.berth.cri.container";

/// What the CRI asks of a container beyond the engine's record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerMeta {
    pub name: String,
    pub attempt: u32,
    pub sandbox_id: String,
    pub runtime_handler: String,
    /// The image as the kubelet named it.
    pub image: String,
    /// The sandbox's log_directory joined with the container's log_path
    /// (the CRI log format is written there once the shim has it).
    pub log_path: String,
    pub annotations: BTreeMap<String, String>,
    pub mounts: Vec<MountMeta>,
    pub created_at: i64,
    /// The identity its process ran with, read from /proc when it started
    /// (ContainerStatus.user, also once it has stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<ProcessUser>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MountMeta {
    pub container_path: String,
    pub host_path: String,
    pub readonly: bool,
    pub propagation: i32,
    #[serde(default)]
    pub recursive_read_only: bool,
}

/// A container: its record (refreshed) and meta.
pub struct Container {
    pub rec: ContainerRecord,
    pub meta: ContainerMeta,
}

fn container_of(engine: &Engine, rec: &ContainerRecord) -> Option<Container> {
    if rec.namespace != K8S_NAMESPACE {
        return None;
    }
    let meta: ContainerMeta = serde_json::from_value(rec.extensions.get(CONTAINER_EXT)?.clone()).ok()?;
    Some(Container { rec: engine.refresh(rec), meta })
}

fn all(engine: &Engine) -> Result<Vec<Container>, Status> {
    let recs = engine.containers().and_then(|s| Ok(s.list()?)).map_err(|e| engine_status("list containers", e))?;
    Ok(recs.iter().filter_map(|r| container_of(engine, r)).collect())
}

/// The records of sandbox `id`'s containers.
pub fn of_sandbox(engine: &Engine, id: &str) -> Result<Vec<ContainerRecord>, Status> {
    Ok(all(engine)?.into_iter().filter(|c| c.meta.sandbox_id == id).map(|c| c.rec).collect())
}

/// Container `id` (or an unambiguous prefix): NOT_FOUND names it.
fn find(engine: &Engine, id: &str) -> Result<Container, Status> {
    let missing = || Status::not_found(format!("container {id:?} not found"));
    if id.is_empty() {
        return Err(Status::invalid_argument("container_id is required"));
    }
    let rec = match engine.containers().and_then(|s| Ok(s.get(id)?)) {
        Ok(r) if r.id.starts_with(id) => r,
        Ok(_) | Err(berth_engine::Error::Store(berth_engine::store::StoreError::NotFound(_))) => return Err(missing()),
        Err(e) => return Err(engine_status("find container", e)),
    };
    container_of(engine, &rec).ok_or_else(missing)
}

fn state(s: EngineStatus) -> i32 {
    use v1::ContainerState as S;
    (match s {
        EngineStatus::Created => S::ContainerCreated,
        EngineStatus::Running | EngineStatus::Paused | EngineStatus::Restarting => S::ContainerRunning,
        EngineStatus::Exited => S::ContainerExited,
        EngineStatus::Removing | EngineStatus::Dead => S::ContainerUnknown,
    }) as i32
}

/// RFC 3339 (the shim's times) to nanoseconds since the epoch; 0 when unset.
fn ns_of(t: Option<&str>) -> i64 {
    t.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()).and_then(|t| t.timestamp_nanos_opt()).unwrap_or(0)
}

/// containerd's container name: `k8s_<container>_<pod>_<namespace>_<uid>_<attempt>`.
fn container_name(name: &str, sb: &Sandbox, attempt: u32) -> String {
    format!("k8s_{name}_{}_{}_{}_{attempt}", sb.meta.name, sb.meta.namespace, sb.meta.uid)
}

/// CreateContainer in a ready sandbox.
pub async fn create(d: Arc<Daemon>, req: v1::CreateContainerRequest) -> Result<v1::CreateContainerResponse, Status> {
    let engine = d.engine()?;
    blocking(move || {
        let sb = find_sandbox(&engine, &req.pod_sandbox_id)?;
        if !sb.ready() {
            return Err(Status::failed_precondition(format!("pod sandbox {} is not ready", sb.rec.id)));
        }
        let config = req.config.ok_or_else(|| Status::invalid_argument("CreateContainer: config is required"))?;
        let md = config.metadata.clone().unwrap_or_default();
        if md.name.is_empty() {
            return Err(Status::invalid_argument("CreateContainer: config.metadata.name is required"));
        }
        let image = config.image.as_ref().map(|i| i.image.clone()).unwrap_or_default();
        if image.is_empty() {
            return Err(Status::invalid_argument("CreateContainer: config.image.image is required"));
        }
        let handler_engine = d.engine_for(&sb.meta.runtime_handler)?;
        // Checked before spec_of, which makes missing host directories.
        let rro = crate::features::of_handler(&d, &sb.meta.runtime_handler).recursive_read_only_mounts;
        let extras = crate::container_extras::overrides(&config, rro)
            .map_err(|e| Status::invalid_argument(format!("CreateContainer: {e}")))?;
        let (mut flags, mounts, mut overrides) = spec_of(&config)?;
        overrides.cri = extras;
        if config.stdin_once {
            // The streaming server's attach closes the container's stdin
            // when the first client's ends.
            flags.labels.push((crate::stream::engine::STDIN_ONCE_LABEL.to_owned(), "true".to_owned()));
        }
        // The UTS namespace is the pod's: its containers keep its name.
        flags.hostname = (!sb.meta.host_network).then(|| match sb.meta.hostname.as_str() {
            "" => sb.rec.id[..12].to_owned(),
            h => h.to_owned(),
        });
        let pod = PodSettings {
            namespaces: namespaces(&sb, &config, &engine)?,
            join_netns: (!sb.meta.host_network).then(|| engine.netns_path(&sb.rec.id)),
            files_of: Some(sb.rec.id.clone()),
            cgroup_parent: sb.meta.cgroup_parent.clone(),
            overrides,
            userns: crate::userns::of_container(&sb, engine.userns_path(&sb.rec.id), &config)?,
            ..Default::default()
        };
        let log_path = match (sb.meta.log_directory.as_str(), config.log_path.as_str()) {
            (_, "") => String::new(),
            ("", p) => p.to_owned(),
            (dir, p) => PathBuf::from(dir).join(p).to_string_lossy().into_owned(),
        };
        let meta = ContainerMeta {
            name: md.name.clone(),
            attempt: md.attempt,
            sandbox_id: sb.rec.id.clone(),
            runtime_handler: sb.meta.runtime_handler.clone(),
            image: image.clone(),
            log_path,
            annotations: config.annotations.clone().into_iter().collect(),
            mounts: config
                .mounts
                .iter()
                .map(|m| MountMeta {
                    container_path: m.container_path.clone(),
                    host_path: m.host_path.clone(),
                    readonly: m.readonly,
                    propagation: m.propagation,
                    recursive_read_only: m.recursive_read_only,
                })
                .collect(),
            created_at: now_ns(),
            user: None,
        };
        // The kubelet's log file, in the CRI format; none asked, none kept.
        let log = match meta.log_path.as_str() {
            "" => LogConfig::defaults("none", "", 0),
            p => LogConfig::cri(Path::new(p))
                .map_err(|e| Status::invalid_argument(format!("CreateContainer: log_path: {e}")))?,
        };
        let opts = CreateOptions {
            name: Some(container_name(&md.name, &sb, md.attempt)),
            log: Some(log),
            network: if sb.meta.host_network { "host" } else { "none" }.into(),
            mounts,
            stdin: config.stdin,
            namespace: K8S_NAMESPACE.into(),
            extensions: BTreeMap::from([(CONTAINER_EXT.to_owned(), serde_json::to_value(&meta).unwrap_or_default())]),
            runtime: Some(handler_engine.runtime.clone()),
            pod: Some(pod),
            ..Default::default()
        };
        // The kubelet pulls first: a missing image is NOT_FOUND, as containerd answers.
        let rec = handler_engine.create(&image, &flags, &opts).map_err(|e| engine_status("CreateContainer", e))?;
        d.events.publish(&rec.id, &sb.rec.id, Kind::ContainerCreatedEvent);
        Ok(v1::CreateContainerResponse { container_id: rec.id })
    })
    .await
}

/// The pid, ipc and uts namespaces of a container of `sb`, as the
/// kubelet's NamespaceOption asks.
fn namespaces(sb: &Sandbox, config: &v1::ContainerConfig, engine: &Engine) -> Result<Namespaces, Status> {
    let infra = sb.rec.pid.filter(|_| sb.ready()).ok_or_else(|| {
        Status::failed_precondition(format!("pod sandbox {}: its infra container is not running", sb.rec.id))
    })?;
    let of = |pid: i32, kind: &str| NsMode::Join(PathBuf::from(format!("/proc/{pid}/ns/{kind}")));
    let ns = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    use v1::NamespaceMode as M;
    let pid = match M::try_from(ns.pid).unwrap_or(M::Container) {
        M::Pod => of(infra, "pid"),
        M::Node => NsMode::Host,
        M::Container => NsMode::Private,
        M::Target => {
            let target = find(engine, &ns.target_id)?;
            let pid = target.rec.pid.filter(|_| target.rec.status == EngineStatus::Running).ok_or_else(|| {
                Status::failed_precondition(format!("target container {} is not running", ns.target_id))
            })?;
            of(pid, "pid")
        }
    };
    let ipc = if ns.ipc == M::Node as i32 { NsMode::Host } else { of(infra, "ipc") };
    let uts = if sb.meta.host_network { NsMode::Host } else { of(infra, "uts") };
    Ok(Namespaces { pid, ipc, uts })
}

/// The engine's run flags, mounts and spec overrides for a ContainerConfig.
fn spec_of(c: &v1::ContainerConfig) -> Result<(RunFlags, Vec<UserMount>, SpecOverrides), Status> {
    let linux = c.linux.clone().unwrap_or_default();
    let sec = linux.security_context.unwrap_or_default();
    let res = linux.resources.unwrap_or_default();
    let bad = |what: String| Status::invalid_argument(format!("CreateContainer: {what}"));
    let (entrypoint, args) = match c.command.split_first() {
        // The command replaces the image's entrypoint and cmd; args follow it.
        Some((first, rest)) => (Some(first.clone()), rest.iter().chain(&c.args).cloned().collect()),
        None => (None, c.args.clone()),
    };
    let mut flags = RunFlags {
        entrypoint,
        args,
        env: c.envs.iter().map(|kv| format!("{}={}", kv.key, kv.value)).collect(),
        workdir: Some(c.working_dir.clone()).filter(|w| !w.is_empty()),
        user: user_of(&sec).map_err(bad)?,
        tty: c.tty,
        read_only: sec.readonly_rootfs,
        privileged: sec.privileged,
        labels: c.labels.clone().into_iter().collect(),
        memory: Some(res.memory_limit_in_bytes).filter(|m| *m > 0),
        cpus: (res.cpu_quota > 0)
            .then_some((res.cpu_quota, if res.cpu_period > 0 { res.cpu_period as u64 } else { 100_000 })),
        ..Default::default()
    };
    if let Some(caps) = &sec.capabilities {
        flags.cap_add = caps.add_capabilities.clone();
        flags.cap_drop = caps.drop_capabilities.clone();
    }
    flags.security_opt = security_opts(&sec).map_err(bad)?;
    let mut mounts = Vec::new();
    for m in &c.mounts {
        mounts.push(mount_of(m).map_err(bad)?);
    }
    let overrides = SpecOverrides {
        cpu_shares: u64::try_from(res.cpu_shares).ok().filter(|s| *s > 0),
        cpuset_cpus: Some(res.cpuset_cpus).filter(|s| !s.is_empty()),
        cpuset_mems: Some(res.cpuset_mems).filter(|s| !s.is_empty()),
        oom_score_adj: i32::try_from(res.oom_score_adj).ok().filter(|a| *a != 0),
        additional_gids: sec.supplemental_groups.iter().filter_map(|g| u32::try_from(*g).ok()).collect(),
        masked_paths: Some(sec.masked_paths.clone()).filter(|p| !p.is_empty()),
        readonly_paths: Some(sec.readonly_paths.clone()).filter(|p| !p.is_empty()),
        annotations: c.annotations.clone().into_iter().collect(),
        devices: c
            .devices
            .iter()
            .map(|d| {
                Device::from_host(Path::new(&d.host_path), &d.container_path, &d.permissions)
                    .map_err(|e| bad(format!("device {:?}: {e}", d.host_path)))
            })
            .collect::<Result<_, _>>()?,
        rootfs_propagation: rootfs_propagation(&c.mounts),
        ..Default::default()
    };
    Ok((flags, mounts, overrides))
}

/// run_as_user / run_as_username with run_as_group, as `--user` takes them.
fn user_of(sec: &v1::LinuxContainerSecurityContext) -> Result<Option<String>, String> {
    let user = match (&sec.run_as_user, sec.run_as_username.as_str()) {
        (Some(u), _) => u.value.to_string(),
        (None, name) if !name.is_empty() => name.to_owned(),
        // containerd's words: a group alone would run as the image's user
        // with another group, which nobody asked for.
        (None, _) => match &sec.run_as_group {
            Some(g) => return Err(format!("user group \"{}\" is specified without user", g.value)),
            None => return Ok(None),
        },
    };
    Ok(Some(match &sec.run_as_group {
        Some(g) => format!("{user}:{}", g.value),
        None => user,
    }))
}

/// seccomp and no_new_privs as the engine's `--security-opt`s; an AppArmor
/// profile is refused (this host has no AppArmor). The deprecated string
/// fields are read too: older kubelets send only those.
#[allow(deprecated)]
fn security_opts(sec: &v1::LinuxContainerSecurityContext) -> Result<Vec<String>, String> {
    use v1::security_profile::ProfileType as P;
    let mut opts = Vec::new();
    if sec.no_new_privs {
        opts.push("no-new-privileges".to_owned());
    }
    let seccomp = match &sec.seccomp {
        Some(p) => match P::try_from(p.profile_type).unwrap_or(P::RuntimeDefault) {
            P::RuntimeDefault => None,
            P::Unconfined => Some("unconfined".to_owned()),
            P::Localhost => Some(p.localhost_ref.clone()),
        },
        // Nothing asked: unconfined, as containerd (and critest) have it.
        None => match sec.seccomp_profile_path.as_str() {
            "runtime/default" | "docker/default" => None,
            "" | "unconfined" => Some("unconfined".to_owned()),
            p => Some(p.strip_prefix("localhost/").unwrap_or(p).to_owned()),
        },
    };
    // A privileged container is not confined by seccomp, as containerd
    // has it (critest checks a blocking profile is ignored then).
    if let Some(s) = seccomp.filter(|_| !sec.privileged) {
        if s != "unconfined" && !s.starts_with('/') {
            return Err(format!("seccomp localhost profile {s:?} must be an absolute path"));
        }
        opts.push(format!("seccomp={s}"));
    }
    let apparmor = match &sec.apparmor {
        Some(p) if p.profile_type == P::Localhost as i32 => Some(p.localhost_ref.clone()),
        _ => Some(sec.apparmor_profile.clone()).filter(|p| p.starts_with("localhost/")),
    };
    if let Some(p) = apparmor {
        return Err(format!(
            "AppArmor profile {p:?} requested, but this host has no AppArmor (berthd cannot apply it)"
        ));
    }
    Ok(opts)
}

/// The rootfs propagation the mounts need (containerd's rule): "rshared"
/// for a bidirectional mount, else "rslave" for one that receives from
/// the host, else the runtime's default.
fn rootfs_propagation(mounts: &[v1::Mount]) -> Option<String> {
    let has = |p: v1::MountPropagation| mounts.iter().any(|m| m.propagation == p as i32);
    if has(v1::MountPropagation::PropagationBidirectional) {
        Some("rshared".into())
    } else if has(v1::MountPropagation::PropagationHostToContainer) {
        Some("rslave".into())
    } else {
        None
    }
}

/// A CRI mount as a bind mount; a missing host directory is made, as
/// containerd makes it.
fn mount_of(m: &v1::Mount) -> Result<UserMount, String> {
    if m.selinux_relabel {
        if Path::new("/sys/fs/selinux/enforce").exists() {
            return Err(format!("mount {}: SELinux relabeling is not supported by berthd", m.container_path));
        }
        // As containerd and CRI-O: relabeling is a no-op where SELinux is
        // off (the kubelet asks only where it is on; critest asks always).
        tracing::debug!(mount = %m.container_path, "SELinux relabel asked; this host has no SELinux: nothing to relabel");
    }
    if !m.container_path.starts_with('/') || m.host_path.is_empty() {
        return Err(format!(
            "mount {:?} from {:?}: want an absolute container path and a host path",
            m.container_path, m.host_path
        ));
    }
    let source = PathBuf::from(&m.host_path);
    if !source.exists() {
        std::fs::create_dir_all(&source)
            .map_err(|e| format!("mount {}: create {}: {e}", m.container_path, m.host_path))?;
    }
    let propagation = match v1::MountPropagation::try_from(m.propagation) {
        Ok(v1::MountPropagation::PropagationHostToContainer) => "rslave",
        Ok(v1::MountPropagation::PropagationBidirectional) => "rshared",
        _ => "rprivate",
    };
    Ok(UserMount::Bind {
        source,
        target: m.container_path.clone(),
        readonly: m.readonly,
        propagation: Some(propagation.to_owned()),
    })
}

/// StartContainer.
pub async fn start(d: Arc<Daemon>, req: v1::StartContainerRequest) -> Result<v1::StartContainerResponse, Status> {
    let engine = d.engine()?;
    blocking(move || {
        let c = find(&engine, &req.container_id)?;
        let e = d.engine_for(&c.meta.runtime_handler)?;
        let rec = e.start(&c.rec.id).map_err(|e| engine_status("StartContainer", e))?;
        record_user(&engine, &rec);
        d.events.publish(&c.rec.id, &c.meta.sandbox_id, Kind::ContainerStartedEvent);
        Ok(v1::StartContainerResponse {})
    })
    .await
}

/// Keeps the identity the started process has (its init set it up before
/// `start`) in the container's meta, so ContainerStatus reports it after
/// the process is gone, as containerd does. A process that is gone
/// already has none to keep.
fn record_user(engine: &Engine, rec: &ContainerRecord) {
    let Some(user) = rec.pid.and_then(ProcessUser::of_pid) else { return };
    let stored = engine.containers().and_then(|s| {
        Ok(s.update(&rec.id, |r| {
            let Some(v) = r.extensions.get_mut(CONTAINER_EXT) else { return };
            if let Ok(mut meta) = serde_json::from_value::<ContainerMeta>(v.clone()) {
                meta.user = Some(user);
                *v = serde_json::to_value(&meta).unwrap_or_else(|_| v.clone());
            }
        })?)
    });
    if let Err(e) = stored {
        tracing::warn!(id = %rec.id, "StartContainer: cannot keep the process's identity: {e}");
    }
}

/// StopContainer: SIGTERM, SIGKILL after the timeout. Stopping a stopped
/// container succeeds.
pub async fn stop(d: Arc<Daemon>, req: v1::StopContainerRequest) -> Result<v1::StopContainerResponse, Status> {
    let engine = d.engine()?;
    blocking(move || {
        // Idempotent, as the CRI asks: a container that is not there is
        // stopped already.
        let c = match find(&engine, &req.container_id) {
            Ok(c) => c,
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(v1::StopContainerResponse {}),
            Err(s) => return Err(s),
        };
        let e = d.engine_for(&c.meta.runtime_handler)?;
        let timeout = Duration::from_secs(u64::try_from(req.timeout).unwrap_or(0));
        e.stop(&c.rec.id, timeout).map_err(|e| engine_status("StopContainer", e))?;
        d.events.publish(&c.rec.id, &c.meta.sandbox_id, Kind::ContainerStoppedEvent);
        Ok(v1::StopContainerResponse {})
    })
    .await
}

/// RemoveContainer: a running one is killed first; one that is not there
/// is removed already.
pub async fn remove(d: Arc<Daemon>, req: v1::RemoveContainerRequest) -> Result<v1::RemoveContainerResponse, Status> {
    let engine = d.engine()?;
    blocking(move || {
        let c = match find(&engine, &req.container_id) {
            Ok(c) => c,
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(v1::RemoveContainerResponse {}),
            Err(s) => return Err(s),
        };
        let e = d.engine_for(&c.meta.runtime_handler)?;
        e.remove(&c.rec.id, true).map_err(|e| engine_status("RemoveContainer", e))?;
        d.events.publish(&c.rec.id, &c.meta.sandbox_id, Kind::ContainerDeletedEvent);
        Ok(v1::RemoveContainerResponse {})
    })
    .await
}

fn metadata(c: &Container) -> v1::ContainerMetadata {
    v1::ContainerMetadata { name: c.meta.name.clone(), attempt: c.meta.attempt }
}

fn image_spec(c: &Container) -> v1::ImageSpec {
    v1::ImageSpec { image: c.meta.image.clone(), ..Default::default() }
}

/// ListContainers with its filters (ID prefix, state, sandbox, labels).
pub async fn list(d: Arc<Daemon>, req: v1::ListContainersRequest) -> Result<v1::ListContainersResponse, Status> {
    let engine = d.engine()?;
    blocking(move || {
        let f = req.filter.unwrap_or_default();
        let containers = all(&engine)?
            .into_iter()
            .filter(|c| c.rec.id.starts_with(&f.id))
            .filter(|c| c.meta.sandbox_id.starts_with(&f.pod_sandbox_id))
            .filter(|c| f.state.as_ref().is_none_or(|s| s.state == state(c.rec.status)))
            .filter(|c| selected(&c.rec.labels, &f.label_selector))
            .map(|c| v1::Container {
                id: c.rec.id.clone(),
                pod_sandbox_id: c.meta.sandbox_id.clone(),
                metadata: Some(metadata(&c)),
                image: Some(image_spec(&c)),
                image_ref: c.rec.image_id.clone(),
                state: state(c.rec.status),
                created_at: c.meta.created_at,
                labels: c.rec.labels.clone().into_iter().collect(),
                annotations: c.meta.annotations.clone().into_iter().collect(),
                image_id: c.rec.image_id.clone(),
            })
            .collect();
        Ok(v1::ListContainersResponse { containers })
    })
    .await
}

/// ContainerStatus, with verbose info (pid, sandbox, runtime handler).
pub async fn status(d: Arc<Daemon>, req: v1::ContainerStatusRequest) -> Result<v1::ContainerStatusResponse, Status> {
    let engine = d.engine()?;
    blocking(move || {
        let c = find(&engine, &req.container_id)?;
        let exited = c.rec.status == EngineStatus::Exited;
        let exit_code = if exited { c.rec.exit_code.unwrap_or(-1) } else { 0 };
        // containerd's reasons; an OOM kill first, whatever the code.
        let reason = match (exited, exit_code) {
            (false, _) => "",
            (true, _) if c.rec.oom_killed => "OOMKilled",
            (true, 0) => "Completed",
            (true, _) => "Error",
        };
        let mounts = c
            .meta
            .mounts
            .iter()
            .map(|m| v1::Mount {
                container_path: m.container_path.clone(),
                host_path: m.host_path.clone(),
                readonly: m.readonly,
                propagation: m.propagation,
                recursive_read_only: m.recursive_read_only,
                ..Default::default()
            })
            .collect();
        // What start recorded; else (berthd restarted between start and
        // the record) what the running process has now.
        let running_pid = c.rec.pid.filter(|_| c.rec.status == EngineStatus::Running);
        let user = c.meta.user.clone().or_else(|| running_pid.and_then(ProcessUser::of_pid)).map(|u| u.to_cri());
        let mut info = HashMap::new();
        if req.verbose {
            let v = serde_json::json!({
                "pid": c.rec.pid.filter(|_| c.rec.status == EngineStatus::Running).unwrap_or(0),
                "sandboxID": c.meta.sandbox_id,
                "runtimeHandler": c.meta.runtime_handler,
                "name": c.rec.name,
                "engineNamespace": c.rec.namespace,
            });
            info.insert("info".to_owned(), v.to_string());
        }
        let status = v1::ContainerStatus {
            id: c.rec.id.clone(),
            metadata: Some(metadata(&c)),
            state: state(c.rec.status),
            created_at: c.meta.created_at,
            started_at: if c.rec.status == EngineStatus::Created { 0 } else { ns_of(c.rec.started_at.as_deref()) },
            finished_at: if exited { ns_of(c.rec.finished_at.as_deref()) } else { 0 },
            exit_code,
            image: Some(image_spec(&c)),
            image_ref: c.rec.image_id.clone(),
            reason: reason.into(),
            labels: c.rec.labels.clone().into_iter().collect(),
            annotations: c.meta.annotations.clone().into_iter().collect(),
            mounts,
            log_path: c.meta.log_path.clone(),
            image_id: c.rec.image_id.clone(),
            user,
            ..Default::default()
        };
        Ok(v1::ContainerStatusResponse { status: Some(status), info })
    })
    .await
}

/// One container's CRI stats from the engine's cgroup sample; a container
/// that does not run has none of its own to report (zeros).
fn stats_of(engine: &Engine, c: &Container) -> Result<v1::ContainerStats, Status> {
    let s = engine.sample(&c.rec).map_err(|e| Status::internal(format!("stats of {}: {e}", c.rec.id)))?;
    let now = now_ns();
    let val = |value: u64| Some(v1::UInt64Value { value });
    Ok(v1::ContainerStats {
        attributes: Some(v1::ContainerAttributes {
            id: c.rec.id.clone(),
            metadata: Some(metadata(c)),
            labels: c.rec.labels.clone().into_iter().collect(),
            annotations: c.meta.annotations.clone().into_iter().collect(),
        }),
        cpu: Some(v1::CpuUsage { timestamp: now, usage_core_nano_seconds: val(s.cpu_ns), usage_nano_cores: None }),
        memory: Some(v1::MemoryUsage {
            timestamp: now,
            // The sample's usage is docker's: usage less inactive file
            // pages, which is the kubelet's working set.
            working_set_bytes: val(s.mem_usage),
            ..Default::default()
        }),
        writable_layer: Some(v1::FilesystemUsage {
            timestamp: now,
            fs_id: Some(v1::FilesystemIdentifier {
                mountpoint: engine.root.join("containers").to_string_lossy().into_owned(),
            }),
            used_bytes: val(engine.container_size(&c.rec.id)),
            inodes_used: None,
        }),
        swap: None,
    })
}

/// ContainerStats.
pub async fn stats(d: Arc<Daemon>, req: v1::ContainerStatsRequest) -> Result<v1::ContainerStatsResponse, Status> {
    let engine = d.engine()?;
    blocking(move || {
        let c = find(&engine, &req.container_id)?;
        let e = d.engine_for(&c.meta.runtime_handler).unwrap_or(engine);
        Ok(v1::ContainerStatsResponse { stats: Some(stats_of(&e, &c)?) })
    })
    .await
}

/// The stats of sandbox `sandbox_id`'s running containers (for its
/// PodSandboxStats).
pub fn running_stats(d: &Daemon, engine: &Engine, sandbox_id: &str) -> Result<Vec<v1::ContainerStats>, Status> {
    let mut stats = Vec::new();
    for c in
        all(engine)?.into_iter().filter(|c| c.rec.status == EngineStatus::Running && c.meta.sandbox_id == sandbox_id)
    {
        let e = d.engine_for(&c.meta.runtime_handler).unwrap_or_else(|_| engine.clone());
        match stats_of(&e, &c) {
            Ok(s) => stats.push(s),
            Err(err) => tracing::debug!(id = %c.rec.id, "PodSandboxStats: {}", err.message()),
        }
    }
    Ok(stats)
}

/// ListContainerStats with its filters (ID prefix, sandbox, labels): the
/// running containers', as containerd lists them.
pub async fn list_stats(
    d: Arc<Daemon>,
    req: v1::ListContainerStatsRequest,
) -> Result<v1::ListContainerStatsResponse, Status> {
    let engine = d.engine()?;
    blocking(move || {
        let f = req.filter.unwrap_or_default();
        let mut stats = Vec::new();
        for c in all(&engine)?
            .into_iter()
            .filter(|c| c.rec.status == EngineStatus::Running)
            .filter(|c| c.rec.id.starts_with(&f.id) && c.meta.sandbox_id.starts_with(&f.pod_sandbox_id))
            .filter(|c| selected(&c.rec.labels, &f.label_selector))
        {
            let e = d.engine_for(&c.meta.runtime_handler).unwrap_or_else(|_| engine.clone());
            match stats_of(&e, &c) {
                Ok(s) => stats.push(s),
                // Ended since it was listed: no stats, as for one not running.
                Err(err) => tracing::debug!(id = %c.rec.id, "ListContainerStats: {}", err.message()),
            }
        }
        Ok(v1::ListContainerStatsResponse { stats })
    })
    .await
}

/// UpdateContainerResources: CPU, memory and hugepage limits and unified
/// values, checked as at create (in the cgroup when it runs, and in its
/// config for a restart).
pub async fn update(
    d: Arc<Daemon>,
    req: v1::UpdateContainerResourcesRequest,
) -> Result<v1::UpdateContainerResourcesResponse, Status> {
    let engine = d.engine()?;
    blocking(move || {
        let c = find(&engine, &req.container_id)?;
        let Some(r) = req.linux else { return Ok(v1::UpdateContainerResourcesResponse {}) };
        let bad = |e: String| Status::invalid_argument(format!("UpdateContainerResources: {e}"));
        let hugepage_limits = crate::container_extras::hugepages(&r.hugepage_limits).map_err(bad)?;
        let unified = crate::container_extras::unified(&r.unified).map_err(bad)?;
        let update = ResourceUpdate {
            memory_limit: Some(r.memory_limit_in_bytes).filter(|m| *m > 0),
            cpu_shares: u64::try_from(r.cpu_shares).ok().filter(|s| *s > 0),
            cpu_quota: Some(r.cpu_quota).filter(|q| *q != 0),
            cpu_period: u64::try_from(r.cpu_period).ok().filter(|p| *p > 0),
            cpuset_cpus: Some(r.cpuset_cpus).filter(|s| !s.is_empty()),
            cpuset_mems: Some(r.cpuset_mems).filter(|s| !s.is_empty()),
            hugepage_limits,
            unified,
        };
        let e = d.engine_for(&c.meta.runtime_handler)?;
        e.update_resources(&c.rec.id, &update).map_err(|e| engine_status("UpdateContainerResources", e))?;
        Ok(v1::UpdateContainerResourcesResponse {})
    })
    .await
}

/// For the streaming server (Exec, Attach): container `id`'s record and
/// the engine of its pod's runtime handler (its runtime must run the exec).
pub fn engine_of(d: &Daemon, id: &str) -> Result<(Engine, ContainerRecord), Status> {
    let c = find(&d.engine()?, id)?;
    Ok((d.engine_for(&c.meta.runtime_handler)?, c.rec))
}

/// ExecSync: `cmd` in the running container, both streams captured (at
/// most 16 MiB each), killed with what it started at `timeout` seconds
/// (0: none), as containerd answers: DEADLINE_EXCEEDED then.
pub async fn exec_sync(d: Arc<Daemon>, req: v1::ExecSyncRequest) -> Result<v1::ExecSyncResponse, Status> {
    if req.cmd.is_empty() {
        return Err(Status::invalid_argument("ExecSync: cmd is required"));
    }
    let engine = d.engine()?;
    blocking(move || {
        let c = find(&engine, &req.container_id)?;
        let engine = d.engine_for(&c.meta.runtime_handler)?;
        let timeout = Duration::from_secs(u64::try_from(req.timeout).unwrap_or(0));
        match engine.exec_sync(&c.rec.id, &req.cmd, timeout) {
            Ok(out) => Ok(v1::ExecSyncResponse { stdout: out.stdout, stderr: out.stderr, exit_code: out.exit_code }),
            Err(e @ berth_engine::Error::ExecTimeout { .. }) => {
                Err(Status::deadline_exceeded(format!("ExecSync {}: {e}", c.rec.id)))
            }
            Err(e @ berth_engine::Error::NotRunning(_)) => {
                Err(Status::failed_precondition(format!("ExecSync {}: {e}", c.rec.id)))
            }
            Err(e) => Err(engine_status("ExecSync", e)),
        }
    })
    .await
}

/// ReopenContainerLog: after the kubelet renamed the log file, the shim
/// opens a new one at the same path (the call returns once it exists).
pub async fn reopen_log(d: Arc<Daemon>, req: v1::ReopenContainerLogRequest) -> Result<(), Status> {
    let engine = d.engine()?;
    blocking(move || {
        let c = find(&engine, &req.container_id)?;
        match engine.reopen_log(&c.rec.id) {
            Ok(()) => Ok(()),
            Err(e @ berth_engine::Error::NotRunning(_)) => Err(Status::failed_precondition(e.to_string())),
            Err(e) => Err(engine_status("ReopenContainerLog", e)),
        }
    })
    .await
}

#[cfg(test)]
mod security_tests {
    use super::*;

    #[test]
    fn a_group_without_a_user_is_refused_as_containerd_words_it() {
        let group = Some(v1::Int64Value { value: 7 });
        let sec = v1::LinuxContainerSecurityContext { run_as_group: group, ..Default::default() };
        assert_eq!(user_of(&sec).unwrap_err(), "user group \"7\" is specified without user");
        let sec = v1::LinuxContainerSecurityContext {
            run_as_user: Some(v1::Int64Value { value: 1000 }),
            run_as_group: group,
            ..Default::default()
        };
        assert_eq!(user_of(&sec).unwrap().as_deref(), Some("1000:7"));
        assert_eq!(user_of(&v1::LinuxContainerSecurityContext::default()).unwrap(), None);
    }

    #[test]
    fn a_privileged_container_is_not_confined_by_seccomp() {
        let profile = v1::SecurityProfile {
            profile_type: v1::security_profile::ProfileType::Localhost as i32,
            localhost_ref: "/etc/block-sethostname.json".into(),
        };
        let mut sec = v1::LinuxContainerSecurityContext { seccomp: Some(profile), ..Default::default() };
        assert_eq!(security_opts(&sec).unwrap(), ["seccomp=/etc/block-sethostname.json"]);
        sec.privileged = true;
        assert!(security_opts(&sec).unwrap().is_empty());
    }
}
