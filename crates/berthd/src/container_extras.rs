//! The parts of a ContainerConfig the engine's docker-shaped flags do not
//! carry, checked as containerd checks them and turned into the engine's
//! [`CriOverrides`]: recursive read-only mounts, the
//! SupplementalGroupsPolicy, hugepage limits and cgroup v2 `unified`
//! values; and the identity a container's process really runs with, for
//! ContainerStatus.user.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use berth_cri_api::v1;
use berth_engine::spec::cri::{CriOverrides, GroupsPolicy};
use serde::{Deserialize, Serialize};

/// CreateContainer's extras; `rro_supported` is whether the pod's runtime
/// handler reports recursive read-only mounts. Errors name the field.
pub fn overrides(c: &v1::ContainerConfig, rro_supported: bool) -> Result<CriOverrides, String> {
    let linux = c.linux.clone().unwrap_or_default();
    let sec = linux.security_context.unwrap_or_default();
    let res = linux.resources.unwrap_or_default();
    Ok(CriOverrides {
        recursive_readonly: recursive_readonly(&c.mounts, rro_supported)?,
        groups_policy: Some(groups_policy(sec.supplemental_groups_policy)?),
        hugepage_limits: hugepages(&res.hugepage_limits)?,
        unified: unified(&res.unified)?,
    })
}

/// The container paths of the mounts asking for `recursive_read_only`,
/// with containerd's rules: the mount must be read-only and private, and
/// the runtime must support it.
fn recursive_readonly(mounts: &[v1::Mount], rro_supported: bool) -> Result<Vec<String>, String> {
    let mut paths = Vec::new();
    for m in mounts.iter().filter(|m| m.recursive_read_only) {
        let which = format!("mount {} (host path {:?})", m.container_path, m.host_path);
        if !m.readonly {
            return Err(format!(
                "{which}: recursive_read_only needs readonly too (a recursive read-only mount cannot be read-write)"
            ));
        }
        if m.propagation != v1::MountPropagation::PropagationPrivate as i32 {
            let p = v1::MountPropagation::try_from(m.propagation).map(|p| p.as_str_name()).unwrap_or("unknown");
            return Err(format!("{which}: recursive_read_only needs private propagation, got {p}"));
        }
        if !rro_supported {
            return Err(format!(
                "{which}: recursive_read_only: the pod's runtime handler does not support recursive read-only mounts"
            ));
        }
        paths.push(m.container_path.clone());
    }
    Ok(paths)
}

fn groups_policy(p: i32) -> Result<GroupsPolicy, String> {
    match v1::SupplementalGroupsPolicy::try_from(p) {
        Ok(v1::SupplementalGroupsPolicy::Merge) => Ok(GroupsPolicy::Merge),
        Ok(v1::SupplementalGroupsPolicy::Strict) => Ok(GroupsPolicy::Strict),
        Err(_) => Err(format!("supplemental_groups_policy {p} is not Merge (0) or Strict (1)")),
    }
}

/// hugepage_limits, each page size one this host has ("2MB" for
/// /sys/kernel/mm/hugepages/hugepages-2048kB) and a hugetlb controller
/// to put the limit in: berth-cgroups would skip a limit without one, and
/// a limit that is not applied must not look applied.
pub fn hugepages(limits: &[v1::HugepageLimit]) -> Result<Vec<(String, u64)>, String> {
    if limits.is_empty() {
        return Ok(Vec::new());
    }
    let sizes = host_hugepage_sizes(Path::new("/sys/kernel/mm/hugepages"));
    if !host_has_hugetlb_controller() {
        return Err("hugepage_limits: this host's cgroups have no hugetlb controller (neither a v1 hierarchy nor enabled in cgroup v2)".into());
    }
    limits
        .iter()
        .map(|l| {
            if !sizes.contains(&l.page_size) {
                return Err(format!(
                    "hugepage_limits: page size {:?} is not one this host has (it has {})",
                    l.page_size,
                    if sizes.is_empty() { "none".to_owned() } else { sizes.join(", ") }
                ));
            }
            Ok((l.page_size.clone(), l.limit))
        })
        .collect()
}

/// The hugepage sizes under `dir` as cgroups name them ("2MB", "1GB").
fn host_hugepage_sizes(dir: &Path) -> Vec<String> {
    let mut sizes: Vec<(u64, String)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let kb: u64 = e.file_name().to_str()?.strip_prefix("hugepages-")?.strip_suffix("kB")?.parse().ok()?;
            Some((kb, page_size_name(kb)))
        })
        .collect();
    sizes.sort();
    sizes.into_iter().map(|(_, n)| n).collect()
}

/// The kernel's hugetlb file name of a page size in kB (mem_fmt in
/// mm/hugetlb_cgroup.c): the largest unit that divides it.
fn page_size_name(kb: u64) -> String {
    let bytes = kb * 1024;
    for (unit, size) in [("GB", 1u64 << 30), ("MB", 1 << 20), ("KB", 1 << 10)] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
}

fn host_has_hugetlb_controller() -> bool {
    let Ok(layout) = berth_cgroups::Layout::detect() else { return false };
    layout.v1.iter().any(|h| h.controllers.iter().any(|c| c == "hugetlb"))
        || (layout.v1.is_empty()
            && layout.unified.as_ref().is_some_and(|u| {
                std::fs::read_to_string(u.mountpoint.join("cgroup.controllers"))
                    .is_ok_and(|c| c.split_whitespace().any(|c| c == "hugetlb"))
            }))
}

/// `unified` needs a host on cgroup v2 alone; on v1 (or hybrid, where the
/// controllers live in v1) it is refused as runc refuses it.
pub fn unified(values: &HashMap<String, String>) -> Result<BTreeMap<String, String>, String> {
    if values.is_empty() {
        return Ok(BTreeMap::new());
    }
    let v2_only = berth_cgroups::Layout::detect().is_ok_and(|l| l.kind == berth_cgroups::LayoutKind::V2);
    if !v2_only {
        let mut keys: Vec<&str> = values.keys().map(String::as_str).collect();
        keys.sort_unstable();
        return Err(format!(
            "unified {keys:?}: cannot use unified on cgroup v1 (this host's controllers are in cgroup v1 hierarchies)"
        ));
    }
    Ok(values.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// containerd's annotation keys for the pod's resources on its sandbox
/// (internal/cri/annotations): what runtimes that size a VM per pod (Kata)
/// read.
pub const SANDBOX_CPU_PERIOD: &str = "io.kubernetes.cri.sandbox-cpu-period";
pub const SANDBOX_CPU_QUOTA: &str = "io.kubernetes.cri.sandbox-cpu-quota";
pub const SANDBOX_CPU_SHARES: &str = "io.kubernetes.cri.sandbox-cpu-shares";
pub const SANDBOX_MEMORY: &str = "io.kubernetes.cri.sandbox-memory";

/// LinuxPodSandboxConfig.resources and .overhead, as containerd treats
/// them: the resources (the sum of the containers' limits) become
/// annotations of the sandbox's spec, for the OCI runtime; no limit is
/// set from them, because the kubelet has already sized the pod's cgroup
/// (`cgroup_parent`, which berthd uses) with the containers' limits plus
/// the overhead. The overhead reaches no runtime in containerd either
/// (only its NRI plugins see it; berthd has none), so it sets nothing.
pub fn pod_resource_annotations(config: &v1::PodSandboxConfig) -> BTreeMap<String, String> {
    let Some(r) = config.linux.as_ref().and_then(|l| l.resources.as_ref()) else { return BTreeMap::new() };
    BTreeMap::from([
        (SANDBOX_CPU_PERIOD.to_owned(), r.cpu_period.to_string()),
        (SANDBOX_CPU_QUOTA.to_owned(), r.cpu_quota.to_string()),
        (SANDBOX_CPU_SHARES.to_owned(), r.cpu_shares.to_string()),
        (SANDBOX_MEMORY.to_owned(), r.memory_limit_in_bytes.to_string()),
    ])
}

/// The identity of a container's process, as ContainerStatus.user gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessUser {
    pub uid: i64,
    pub gid: i64,
    pub groups: Vec<i64>,
}

impl ProcessUser {
    /// From /proc/PID/status: the effective uid and gid, and the
    /// supplementary groups the kernel holds (what the process really
    /// has, whatever the spec asked). None once the process is gone.
    pub fn of_pid(pid: i32) -> Option<ProcessUser> {
        ProcessUser::parse(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
    }

    fn parse(status: &str) -> Option<ProcessUser> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().filter_map(|n| n.parse::<i64>().ok()).collect::<Vec<_>>())
        };
        // Uid:/Gid: are real, effective, saved, filesystem.
        let uid = *field("Uid:")?.get(1)?;
        let gid = *field("Gid:")?.get(1)?;
        Some(ProcessUser { uid, gid, groups: field("Groups:").unwrap_or_default() })
    }

    pub fn to_cri(&self) -> v1::ContainerUser {
        v1::ContainerUser {
            linux: Some(v1::LinuxContainerUser {
                uid: self.uid,
                gid: self.gid,
                supplemental_groups: self.groups.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(readonly: bool, rro: bool, propagation: v1::MountPropagation) -> v1::Mount {
        v1::Mount {
            container_path: "/mnt".into(),
            host_path: "/tmp/x".into(),
            readonly,
            recursive_read_only: rro,
            propagation: propagation as i32,
            ..Default::default()
        }
    }

    #[test]
    fn recursive_read_only_is_checked_as_containerd_checks_it() {
        use v1::MountPropagation as P;
        assert_eq!(recursive_readonly(&[mount(true, true, P::PropagationPrivate)], true).unwrap(), ["/mnt"]);
        assert!(recursive_readonly(&[mount(true, false, P::PropagationPrivate)], false).unwrap().is_empty());
        let e = recursive_readonly(&[mount(false, true, P::PropagationPrivate)], true).unwrap_err();
        assert!(e.contains("/mnt") && e.contains("readonly"), "{e}");
        for p in [P::PropagationHostToContainer, P::PropagationBidirectional] {
            let e = recursive_readonly(&[mount(true, true, p)], true).unwrap_err();
            assert!(e.contains("private propagation") && e.contains(p.as_str_name()), "{e}");
        }
        let e = recursive_readonly(&[mount(true, true, P::PropagationPrivate)], false).unwrap_err();
        assert!(e.contains("does not support recursive read-only"), "{e}");
    }

    #[test]
    fn an_unknown_groups_policy_is_named() {
        assert_eq!(groups_policy(0), Ok(GroupsPolicy::Merge));
        assert_eq!(groups_policy(1), Ok(GroupsPolicy::Strict));
        assert!(groups_policy(7).unwrap_err().contains("supplemental_groups_policy 7"));
    }

    #[test]
    fn page_sizes_are_named_as_the_kernel_names_them() {
        assert_eq!(page_size_name(2048), "2MB");
        assert_eq!(page_size_name(1_048_576), "1GB");
        assert_eq!(page_size_name(64), "64KB");
        let d = tempfile::tempdir().unwrap();
        for s in ["hugepages-2048kB", "hugepages-1048576kB", "junk"] {
            std::fs::create_dir(d.path().join(s)).unwrap();
        }
        assert_eq!(host_hugepage_sizes(d.path()), ["2MB", "1GB"]);
    }

    #[test]
    fn the_process_identity_is_the_effective_one_with_its_groups() {
        let status = "Name:\tsh\nUid:\t1000\t1001\t1001\t1001\nGid:\t50\t1000\t1000\t1000\nGroups:\t1000 1234 50000 \n";
        assert_eq!(
            ProcessUser::parse(status),
            Some(ProcessUser { uid: 1001, gid: 1000, groups: vec![1000, 1234, 50000] })
        );
        assert_eq!(ProcessUser::parse("Name:\tx\n"), None);
        let none = ProcessUser::parse("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n").unwrap();
        assert!(none.groups.is_empty());
    }
}
