//! linux.resources applied to a container's cgroup, on whatever layout the
//! host has. Each controller is written where it lives: its v1 hierarchy
//! if there is one, else the unified hierarchy if the controller is enabled
//! there (a hybrid host can have both kinds), else the resource is refused
//! (memory, cpu, pids: a limit that silently does nothing is a bug) or
//! skipped with a warning (the rest, as runc does).

use std::path::Path;

use oci_spec::runtime::LinuxResources;

use crate::cgroup::{Cgroup, UNIFIED};
use crate::devices;
use crate::error::{Error, Result};
use crate::{fs, v1, v2};

/// Where one controller lives for this cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    V1(&'a Path),
    V2(&'a Path),
    Missing,
}

impl Cgroup {
    /// Where `controller`'s files are for this cgroup.
    pub fn target(&self, controller: &str) -> Target<'_> {
        if let Some((_, dir)) =
            self.dirs.iter().find(|(k, _)| k.as_str() != UNIFIED && k.split(',').any(|c| c == controller))
        {
            return Target::V1(dir);
        }
        if let Some(dir) = self.dirs.get(UNIFIED) {
            // The device controller of v2 is an eBPF program, always there.
            if controller == "devices" || v2_enabled(dir, controller) {
                return Target::V2(dir);
            }
        }
        Target::Missing
    }

    /// Applies every resource in `r` to the cgroup. A zero where runc
    /// reads zero as "not set" is not written (see [`zero_means_unset`]).
    pub fn apply(&self, r: &LinuxResources) -> Result<()> {
        let r = &zero_means_unset(r);
        if let Some(m) = r.memory() {
            match self.target("memory") {
                Target::V1(d) => v1::memory(d, m)?,
                Target::V2(d) => v2::limits::memory(d, m)?,
                Target::Missing => required("memory")?,
            }
        }
        if let Some(c) = r.cpu() {
            let wants_cpu = c.shares().is_some()
                || c.quota().is_some()
                || c.period().is_some()
                || c.burst().is_some()
                || c.realtime_runtime().is_some()
                || c.realtime_period().is_some()
                || c.idle().is_some();
            if wants_cpu {
                match self.target("cpu") {
                    Target::V1(d) => v1::cpu(d, c)?,
                    Target::V2(d) => v2::limits::cpu(d, c)?,
                    Target::Missing => required("cpu")?,
                }
            }
            if c.cpus().is_some() || c.mems().is_some() {
                match self.target("cpuset") {
                    Target::V1(d) | Target::V2(d) => cpuset(d, c.cpus().as_deref(), c.mems().as_deref())?,
                    Target::Missing => required("cpuset")?,
                }
            }
        }
        if let Some(p) = r.pids() {
            match self.target("pids") {
                Target::V1(d) | Target::V2(d) => fs::write(d, "pids.max", &pids_max(p.limit()))?,
                Target::Missing => required("pids")?,
            }
        }
        if let Some(b) = r.block_io() {
            match (self.target("blkio"), self.target("io")) {
                (Target::V1(d), _) => v1::blkio(d, b)?,
                (_, Target::V2(d)) => v2::limits::io(d, b)?,
                _ => skipped("blockIO", "blkio/io"),
            }
        }
        if let Some(h) = r.hugepage_limits().as_ref().filter(|h| !h.is_empty()) {
            match self.target("hugetlb") {
                Target::V1(d) => v1::hugetlb(d, h)?,
                Target::V2(d) => v2::limits::hugetlb(d, h)?,
                Target::Missing => skipped("hugepageLimits", "hugetlb"),
            }
        }
        if let Some(n) = r.network() {
            network(self, n)?;
        }
        if let Some(rdma) = r.rdma().as_ref().filter(|m| !m.is_empty()) {
            match self.target("rdma") {
                Target::V1(d) | Target::V2(d) => write_rdma(d, rdma)?,
                Target::Missing => skipped("rdma", "rdma"),
            }
        }
        if let Some(u) = r.unified().as_ref().filter(|u| !u.is_empty()) {
            let dir = self.dirs.get(UNIFIED).ok_or(Error::NeedsV2("unified"))?;
            v2::limits::unified(dir, u)?;
        }
        if let Some(d) = r.devices() {
            self.apply_devices(&devices::effective_rules(&devices::from_spec(d)))?;
        }
        Ok(())
    }

    /// Replaces the cgroup's device rules.
    pub fn apply_devices(&self, rules: &[devices::DeviceRule]) -> Result<()> {
        match self.target("devices") {
            Target::V1(d) => v1::devices(d, rules),
            Target::V2(d) => v2::devices::apply(d, rules),
            Target::Missing if rules.is_empty() => Ok(()),
            Target::Missing => {
                skipped("devices", "devices");
                Ok(())
            }
        }
    }
}

/// `r` with every zero that runc treats as "not set" removed.
///
/// runc converts the spec into Go structs whose zero value means "leave
/// the kernel's default", so a 0 in these fields writes nothing. Clients
/// rely on it: dockerd puts `"cpu":{"shares":0}` and
/// `"blockIO":{"weight":0}` in every container's config.json, and the
/// kernel rejects a 0 in `blkio.weight` (ERANGE) and `cpu.shares` is
/// clamped to 2 (the lowest weight, not the default). The fields: memory
/// limit, reservation, swap, kernel, kernelTCP; cpu shares, quota, period,
/// realtimeRuntime, realtimePeriod; blockIO weight and leafWeight (per-device weights of 0
/// are skipped by the writers); pids.limit.
pub fn zero_means_unset(r: &LinuxResources) -> LinuxResources {
    fn nz<T: PartialEq + Default>(v: Option<T>) -> Option<T> {
        v.filter(|x| *x != T::default())
    }
    let mut r = r.clone();
    if let Some(mut m) = *r.memory() {
        let o = m;
        m.set_limit(nz(o.limit()))
            .set_reservation(nz(o.reservation()))
            .set_swap(nz(o.swap()))
            .set_kernel(nz(o.kernel()))
            .set_kernel_tcp(nz(o.kernel_tcp()));
        r.set_memory(Some(m));
    }
    if let Some(mut c) = r.cpu().clone() {
        let o = c.clone();
        c.set_shares(nz(o.shares()))
            .set_quota(nz(o.quota()))
            .set_period(nz(o.period()))
            .set_realtime_runtime(nz(o.realtime_runtime()))
            .set_realtime_period(nz(o.realtime_period()));
        r.set_cpu(Some(c));
    }
    if let Some(mut b) = r.block_io().clone() {
        let o = b.clone();
        // (Per-device weights of 0 are skipped where they are written.)
        b.set_weight(nz(o.weight())).set_leaf_weight(nz(o.leaf_weight()));
        r.set_block_io(Some(b));
    }
    if r.pids().is_some_and(|p| p.limit() == 0) {
        r.set_pids(None);
    }
    r
}

/// Is `controller` enabled for a v2 cgroup (listed in its cgroup.controllers)?
fn v2_enabled(dir: &Path, controller: &str) -> bool {
    fs::read_opt(dir, "cgroup.controllers")
        .ok()
        .flatten()
        .is_some_and(|s| s.split_whitespace().any(|c| c == controller))
}

fn required(controller: &'static str) -> Result<()> {
    Err(Error::NoController(controller))
}

fn skipped(what: &str, controller: &str) {
    tracing::warn!("{what} set but the {controller} controller is not available on this host; not applied");
}

fn cpuset(dir: &Path, cpus: Option<&str>, mems: Option<&str>) -> Result<()> {
    if let Some(c) = cpus.filter(|c| !c.is_empty()) {
        fs::write(dir, "cpuset.cpus", c)?;
    }
    if let Some(m) = mems.filter(|m| !m.is_empty()) {
        fs::write(dir, "cpuset.mems", m)?;
    }
    Ok(())
}

/// pids.limit: 0 or negative means no limit.
fn pids_max(limit: i64) -> String {
    if limit > 0 { limit.to_string() } else { "max".into() }
}

fn network(cg: &Cgroup, n: &oci_spec::runtime::LinuxNetwork) -> Result<()> {
    if let Some(id) = n.class_id() {
        match cg.target("net_cls") {
            Target::V1(d) => fs::write(d, "net_cls.classid", &id.to_string())?,
            _ => skipped("network.classID", "net_cls (v1 only)"),
        }
    }
    if let Some(prios) = n.priorities().as_ref().filter(|p| !p.is_empty()) {
        match cg.target("net_prio") {
            Target::V1(d) => {
                for p in prios {
                    fs::write(d, "net_prio.ifpriomap", &format!("{} {}", p.name(), p.priority()))?;
                }
            }
            _ => skipped("network.priorities", "net_prio (v1 only)"),
        }
    }
    Ok(())
}

fn write_rdma(dir: &Path, rdma: &std::collections::HashMap<String, oci_spec::runtime::LinuxRdma>) -> Result<()> {
    for (device, limit) in rdma {
        let mut line = device.clone();
        if let Some(h) = limit.hca_handles() {
            line.push_str(&format!(" hca_handle={h}"));
        }
        if let Some(o) = limit.hca_objects() {
            line.push_str(&format!(" hca_object={o}"));
        }
        fs::write(dir, "rdma.max", &line)?;
    }
    Ok(())
}

/// cpu.shares (v1, 2..262144) to cpu.weight (v2, 1..10000), runc's
/// mapping, so the same spec gives the same relative weights on both.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 { 0 } else { 1 + (shares.saturating_sub(2) * 9999) / 262_142 }
}

/// blkio.weight (v1, 10..1000) to io.weight (v2, 1..10000), runc's mapping.
pub fn blkio_weight_to_io_weight(weight: u64) -> u64 {
    if weight == 0 { 0 } else { 1 + (weight.saturating_sub(10) * 9999) / 990 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_match_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(500), 4950);
        assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
    }

    #[test]
    fn controllers_are_found_where_they_live() {
        let tmp = tempfile::tempdir().unwrap();
        let uni = tmp.path().join("unified");
        std::fs::create_dir_all(&uni).unwrap();
        std::fs::write(uni.join("cgroup.controllers"), "hugetlb\n").unwrap();
        let cg = Cgroup {
            dirs: [("memory".to_string(), tmp.path().join("memory")), (UNIFIED.to_string(), uni.clone())].into(),
        };
        assert_eq!(cg.target("memory"), Target::V1(&tmp.path().join("memory")));
        assert_eq!(cg.target("hugetlb"), Target::V2(&uni));
        assert_eq!(cg.target("pids"), Target::Missing);
        assert_eq!(cg.target("devices"), Target::V2(&uni));
    }

    #[test]
    fn zeros_that_runc_reads_as_unset_are_not_written() {
        // The resources dockerd 20.10 writes for `docker run` without limits.
        let r: LinuxResources = serde_json::from_str(
            r#"{"memory":{"disableOOMKiller":false},"cpu":{"shares":0},"blockIO":{"weight":0},"pids":{"limit":0}}"#,
        )
        .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dirs = ["memory", "cpu", "blkio", "pids"].map(|c| (c.to_string(), tmp.path().join(c)));
        for (_, d) in &dirs {
            std::fs::create_dir(d).unwrap();
        }
        // The cgroup's files do not exist: any write would fail.
        let cg = Cgroup { dirs: dirs.into_iter().collect() };
        cg.apply(&r).unwrap();
        for d in cg.dirs.values() {
            assert_eq!(std::fs::read_dir(d).unwrap().count(), 0, "nothing written in {}", d.display());
        }
        let n = zero_means_unset(&r);
        assert_eq!(n.cpu().as_ref().unwrap().shares(), None);
        assert_eq!(n.block_io().as_ref().unwrap().weight(), None);
        assert!(n.pids().is_none());
        let kept: LinuxResources =
            serde_json::from_str(r#"{"memory":{"limit":33554432,"swap":-1},"cpu":{"shares":512,"quota":-1}}"#).unwrap();
        assert_eq!(zero_means_unset(&kept), kept);
    }

    #[test]
    fn a_limit_without_its_controller_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let cg = Cgroup { dirs: [("cpu".to_string(), tmp.path().to_path_buf())].into() };
        let r: LinuxResources = serde_json::from_str(r#"{"memory":{"limit":1048576}}"#).unwrap();
        let err = cg.apply(&r).unwrap_err();
        assert!(err.to_string().contains("memory"), "{err}");
    }
}
