//! The CRI's user namespaces (`NamespaceOption.userns_options`) on the
//! engine's ([`berth_engine::userns`]): NODE is the host's user namespace
//! (as before), POD gives the pod one of its own, pinned with its network
//! namespace, that every container of the pod joins; CONTAINER and TARGET
//! are refused, as the CRI allows only NODE and POD (containerd's rule).
//! A handler reports `user_namespaces` only when its runtime says it makes
//! idmapped mounts (`RUNTIME features`).

use std::path::{Path, PathBuf};

use berth_cri_api::v1;
use berth_engine::userns::{IdMap, Mappings, PodUserns};
use tonic::Status;

use crate::pods::Sandbox;

fn maps(lines: &[v1::IdMapping]) -> Vec<IdMap> {
    lines.iter().map(|m| IdMap { container_id: m.container_id, host_id: m.host_id, size: m.length }).collect()
}

/// The pod's user namespace mappings as RunPodSandbox asks (None: the
/// host's), or INVALID_ARGUMENT saying why not.
pub fn of_pod(ns: Option<&v1::NamespaceOption>) -> Result<Option<Mappings>, Status> {
    let bad = |why: String| Status::invalid_argument(format!("RunPodSandbox: user namespace: {why}"));
    let Some(u) = ns.and_then(|n| n.userns_options.as_ref()) else { return Ok(None) };
    let ns = ns.cloned().unwrap_or_default();
    match v1::NamespaceMode::try_from(u.mode) {
        Ok(v1::NamespaceMode::Node) => {
            if !u.uids.is_empty() || !u.gids.is_empty() {
                return Err(bad(format!(
                    "mode NODE takes no mappings (got {} uid and {} gid lines)",
                    u.uids.len(),
                    u.gids.len()
                )));
            }
            Ok(None)
        }
        Ok(v1::NamespaceMode::Pod) => {
            for (what, mode) in [("network", ns.network), ("pid", ns.pid), ("ipc", ns.ipc)] {
                if mode == v1::NamespaceMode::Node as i32 {
                    return Err(bad(format!("mode POD cannot be used with the host's {what} namespace")));
                }
            }
            Mappings::new(maps(&u.uids), maps(&u.gids))
                .map(Some)
                .map_err(|e| Status::invalid_argument(format!("RunPodSandbox: {e}")))
        }
        Ok(m) => Err(bad(format!("mode {} is not supported (only NODE and POD)", m.as_str_name()))),
        Err(_) => Err(bad(format!("unknown mode {}", u.mode))),
    }
}

/// RunPodSandbox's refusal when the handler's runtime cannot make the
/// idmapped mounts a pod's user namespace needs.
pub fn check_handler(handler: &str, runtime: &Path) -> Result<(), Status> {
    if crate::features::of_runtime(runtime).user_namespaces {
        return Ok(());
    }
    Err(Status::failed_precondition(format!(
        "RunPodSandbox: user namespace: runtime handler {handler:?} ({}) does not report idmapped mounts \
         (features: linux.mountExtensions.idmap), which pods with their own user namespace need",
        runtime.display()
    )))
}

/// The pod's user namespace for a container of `sb`: the container's own
/// userns_options, when set, must be the pod's (mode and mappings); CRI
/// mounts with uid/gid mappings are bound idmapped through them.
pub fn of_container(sb: &Sandbox, pin: PathBuf, config: &v1::ContainerConfig) -> Result<Option<PodUserns>, Status> {
    let bad = |why: String| Status::invalid_argument(format!("CreateContainer: user namespace: {why}"));
    let asked = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .and_then(|n| n.userns_options.as_ref());
    let pod = sb.meta.userns.as_ref();
    if let Some(u) = asked {
        let same = match pod {
            None => u.mode == v1::NamespaceMode::Node as i32 && u.uids.is_empty() && u.gids.is_empty(),
            Some(m) => u.mode == v1::NamespaceMode::Pod as i32 && maps(&u.uids) == m.uids && maps(&u.gids) == m.gids,
        };
        if !same {
            return Err(bad(format!("the container's userns_options differ from its pod's ({})", describe(pod))));
        }
    }
    let mut idmapped = Vec::new();
    for m in config.mounts.iter().filter(|m| !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty()) {
        if pod.is_none() {
            return Err(bad(format!(
                "mount {}: uid/gid mappings need a pod with its own user namespace",
                m.container_path
            )));
        }
        let maps = Mappings::new(maps(&m.uid_mappings), maps(&m.gid_mappings))
            .map_err(|e| bad(format!("mount {}: {e}", m.container_path)))?;
        idmapped.push((m.container_path.clone(), maps));
    }
    Ok(pod.map(|m| PodUserns { mappings: m.clone(), join: Some(pin), idmapped_mounts: idmapped }))
}

fn describe(pod: Option<&Mappings>) -> String {
    match pod {
        None => "the host's".into(),
        Some(m) => {
            let l = |v: &[IdMap]| {
                v.iter().map(|m| format!("{}:{}:{}", m.container_id, m.host_id, m.size)).collect::<Vec<_>>()
            };
            format!("POD, uids {:?}, gids {:?}", l(&m.uids), l(&m.gids))
        }
    }
}

/// The CRI's UserNamespace for PodSandboxStatus.
pub fn status(pod: Option<&Mappings>) -> v1::UserNamespace {
    let cri = |v: &[IdMap]| {
        v.iter().map(|m| v1::IdMapping { container_id: m.container_id, host_id: m.host_id, length: m.size }).collect()
    };
    match pod {
        None => v1::UserNamespace { mode: v1::NamespaceMode::Node as i32, ..Default::default() },
        Some(m) => v1::UserNamespace { mode: v1::NamespaceMode::Pod as i32, uids: cri(&m.uids), gids: cri(&m.gids) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(mode: v1::NamespaceMode, lines: &[(u32, u32, u32)]) -> v1::NamespaceOption {
        let l: Vec<v1::IdMapping> =
            lines.iter().map(|(c, h, n)| v1::IdMapping { container_id: *c, host_id: *h, length: *n }).collect();
        v1::NamespaceOption {
            userns_options: Some(v1::UserNamespace { mode: mode as i32, uids: l.clone(), gids: l }),
            ..Default::default()
        }
    }

    #[test]
    fn pod_modes_and_mappings_are_checked_as_containerd_does() {
        use v1::NamespaceMode as M;
        assert_eq!(of_pod(None).unwrap(), None);
        assert_eq!(of_pod(Some(&opts(M::Node, &[]))).unwrap(), None);
        assert!(of_pod(Some(&opts(M::Pod, &[(0, 1000, 100000)]))).unwrap().is_some());
        for (o, want) in [
            (opts(M::Container, &[]), "mode CONTAINER is not supported"),
            (opts(M::Target, &[]), "mode TARGET is not supported"),
            (opts(M::Node, &[(0, 1000, 1)]), "mode NODE takes no mappings"),
            (opts(M::Pod, &[(0, 1000, 100000), (0, 2000, 100000)]), "only one mapping line"),
            (opts(M::Pod, &[(1, 1000, 100000)]), "container uid 0 must be mapped"),
            (opts(M::Pod, &[]), "none given"),
        ] {
            let e = of_pod(Some(&o)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().contains(want), "{} lacks {want}", e.message());
        }
        let mut host_net = opts(M::Pod, &[(0, 1000, 100000)]);
        host_net.network = M::Node as i32;
        assert!(of_pod(Some(&host_net)).unwrap_err().message().contains("host's network namespace"));
    }
}
