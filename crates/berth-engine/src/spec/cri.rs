//! What the CRI asks of config.json beyond docker's flags, as containerd's
//! CRI plugin writes it: recursively read-only bind mounts (`rro`), the
//! SupplementalGroupsPolicy, hugepage limits and cgroup v2 `unified`
//! values. The CRI server checks the request (berthd); this only writes.

use std::collections::BTreeMap;

use oci_spec::runtime::{LinuxHugepageLimit, LinuxResources, Process, Spec};

/// How process.user.additionalGids is made (the CRI's SupplementalGroupsPolicy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupsPolicy {
    /// The image's /etc/group memberships of the user, then the requested ones.
    Merge,
    /// Only the requested ones.
    Strict,
}

/// The CRI's settings; empty leaves the spec as the engine made it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CriOverrides {
    /// Destinations of bind mounts made read-only recursively ("rro"
    /// instead of "ro": submounts of the source are read-only too).
    pub recursive_readonly: Vec<String>,
    /// With `Some`, additionalGids starts with the primary gid (containerd
    /// lists it, and the kubelet reads it back in ContainerStatus.user).
    pub groups_policy: Option<GroupsPolicy>,
    /// linux.resources.hugepageLimits: page size ("2MB") and bytes.
    pub hugepage_limits: Vec<(String, u64)>,
    /// linux.resources.unified.
    pub unified: BTreeMap<String, String>,
}

impl CriOverrides {
    pub(crate) fn apply(&self, spec: &mut Spec) {
        let is_rro = |m: &oci_spec::runtime::Mount| self.recursive_readonly.iter().any(|d| m.destination() == d);
        for m in spec.mounts_mut().iter_mut().flatten().filter(|m| is_rro(m)) {
            let opts = m.options().clone().unwrap_or_default();
            let mut opts: Vec<String> = opts.into_iter().filter(|o| o != "ro" && o != "rw").collect();
            opts.push("rro".to_owned());
            m.set_options(Some(opts));
        }
        if let Some(linux) = spec.linux_mut() {
            let mut res = linux.resources().clone().unwrap_or_default();
            merge_hugepages_and_unified(&mut res, &self.hugepage_limits, &self.unified);
            linux.set_resources(Some(res));
        }
    }

    /// additionalGids under the policy: the primary gid, the image's
    /// groups of the user (Merge: the engine resolved them already), then
    /// `requested`, each once.
    pub(crate) fn apply_groups(&self, process: &mut Process, requested: &[u32]) {
        let mut user = process.user().clone();
        let image_groups = match self.groups_policy {
            Some(GroupsPolicy::Merge) => user.additional_gids().clone().unwrap_or_default(),
            _ => Vec::new(),
        };
        let mut gids = vec![user.gid()];
        for g in image_groups.into_iter().chain(requested.iter().copied()) {
            if !gids.contains(&g) {
                gids.push(g);
            }
        }
        user.set_additional_gids(Some(gids));
        process.set_user(user);
    }
}

/// Adds hugepage limits (replacing one of the same page size) and unified
/// values to `res`.
pub fn merge_hugepages_and_unified(
    res: &mut LinuxResources,
    hugepages: &[(String, u64)],
    unified: &BTreeMap<String, String>,
) {
    if !hugepages.is_empty() {
        let mut limits = res.hugepage_limits().clone().unwrap_or_default();
        for (size, bytes) in hugepages {
            limits.retain(|l| l.page_size() != size);
            let mut l = LinuxHugepageLimit::default();
            l.set_page_size(size.clone());
            l.set_limit(i64::try_from(*bytes).unwrap_or(i64::MAX));
            limits.push(l);
        }
        res.set_hugepage_limits(Some(limits));
    }
    if !unified.is_empty() {
        let mut all = res.unified().clone().unwrap_or_default();
        all.extend(unified.iter().map(|(k, v)| (k.clone(), v.clone())));
        res.set_unified(Some(all));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{MountBuilder, UserBuilder};

    fn process(gid: u32, image_groups: Vec<u32>) -> Process {
        let mut p = Process::default();
        p.set_user(UserBuilder::default().uid(1000u32).gid(gid).additional_gids(image_groups).build().unwrap());
        p
    }

    #[test]
    fn merge_keeps_the_image_groups_and_strict_drops_them() {
        let merge = CriOverrides { groups_policy: Some(GroupsPolicy::Merge), ..Default::default() };
        let mut p = process(1000, vec![50000]);
        merge.apply_groups(&mut p, &[1234]);
        assert_eq!(p.user().additional_gids().as_deref(), Some(&[1000, 50000, 1234][..]));

        let strict = CriOverrides { groups_policy: Some(GroupsPolicy::Strict), ..Default::default() };
        let mut p = process(1000, vec![50000]);
        strict.apply_groups(&mut p, &[1234, 1000]);
        assert_eq!(p.user().additional_gids().as_deref(), Some(&[1000, 1234][..]));
    }

    #[test]
    fn rro_replaces_ro_on_the_named_mount_only() {
        let bind = |d: &str| {
            MountBuilder::default()
                .destination(d)
                .typ("bind")
                .source("/src")
                .options(vec!["rbind".to_owned(), "ro".to_owned(), "rprivate".to_owned()])
                .build()
                .unwrap()
        };
        let mut spec = Spec::default();
        spec.set_mounts(Some(vec![bind("/a"), bind("/b")]));
        CriOverrides { recursive_readonly: vec!["/b".into()], ..Default::default() }.apply(&mut spec);
        let opts: Vec<Vec<String>> =
            spec.mounts().as_ref().unwrap().iter().map(|m| m.options().clone().unwrap()).collect();
        assert_eq!(opts[0], ["rbind", "ro", "rprivate"]);
        assert_eq!(opts[1], ["rbind", "rprivate", "rro"]);
    }

    #[test]
    fn hugepages_replace_the_same_size_and_unified_is_added() {
        let mut res = LinuxResources::default();
        merge_hugepages_and_unified(&mut res, &[("2MB".into(), 4 << 20)], &BTreeMap::new());
        merge_hugepages_and_unified(
            &mut res,
            &[("2MB".into(), 8 << 20)],
            &BTreeMap::from([("memory.high".to_owned(), "1G".to_owned())]),
        );
        let h = res.hugepage_limits().clone().unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!((h[0].page_size().as_str(), h[0].limit()), ("2MB", 8 << 20));
        assert_eq!(res.unified().as_ref().unwrap()["memory.high"], "1G");
    }
}
