//! cgroup v2 limits: the unified hierarchy's files, with runc's
//! conversions from the v1-shaped values config.json carries.

use std::collections::HashMap;
use std::path::Path;

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxHugepageLimit, LinuxMemory};

use crate::error::{Error, Result};
use crate::fs;
use crate::resources::{blkio_weight_to_io_weight, shares_to_weight};

/// A v2 byte value: negative is "max".
fn max_or(v: i64) -> String {
    if v < 0 { "max".into() } else { v.to_string() }
}

pub fn memory(dir: &Path, m: &LinuxMemory) -> Result<()> {
    if let Some(r) = m.reservation() {
        fs::write(dir, "memory.low", &max_or(r))?;
    }
    // Unlike v1's memsw, memory.max and memory.swap.max are independent:
    // no ordering between them is needed.
    if let Some(l) = m.limit() {
        fs::write(dir, "memory.max", &max_or(l))?;
    }
    if let Some(s) = swap_max(m.limit(), m.swap())? {
        fs::write(dir, "memory.swap.max", &s)?;
    }
    if m.swappiness().is_some_and(|s| s != 60) {
        tracing::warn!("memory.swappiness is not supported on cgroup v2; ignored");
    }
    if m.disable_oom_killer() == Some(true) {
        tracing::warn!("memory.disableOOMKiller is not supported on cgroup v2; ignored");
    }
    if m.kernel().is_some() || m.kernel_tcp().is_some() {
        tracing::warn!("memory.kernel and memory.kernelTCP are not supported on cgroup v2; ignored");
    }
    Ok(())
}

/// config.json's swap is memory+swap (v1's memsw); v2's memory.swap.max is
/// swap alone. runc's conversion: -1 is unlimited; otherwise swap minus
/// limit, which needs a limit and may not be below it.
fn swap_max(limit: Option<i64>, swap: Option<i64>) -> Result<Option<String>> {
    let Some(swap) = swap else { return Ok(None) };
    if swap < 0 {
        return Ok(Some("max".into()));
    }
    if swap == 0 {
        return Ok(None);
    }
    match limit {
        Some(l) if l > 0 && swap >= l => Ok(Some((swap - l).to_string())),
        Some(l) if l > 0 => {
            Err(Error::InvalidValue(format!("memory.swap {swap} is below memory.limit {l} (swap counts memory+swap)")))
        }
        _ => Err(Error::InvalidValue("memory.swap needs memory.limit on cgroup v2".into())),
    }
}

pub fn cpu(dir: &Path, c: &LinuxCpu) -> Result<()> {
    if let Some(s) = c.shares().filter(|s| *s > 0) {
        fs::write(dir, "cpu.weight", &shares_to_weight(s).to_string())?;
    }
    if c.quota().is_some() || c.period().is_some() {
        let quota = match c.quota() {
            Some(q) if q > 0 => q.to_string(),
            _ => "max".into(),
        };
        let period = c.period().unwrap_or(100_000);
        fs::write(dir, "cpu.max", &format!("{quota} {period}"))?;
    }
    if let Some(b) = c.burst() {
        fs::write(dir, "cpu.max.burst", &b.to_string())?;
    }
    if let Some(i) = c.idle() {
        fs::write(dir, "cpu.idle", &i.to_string())?;
    }
    if c.realtime_runtime().is_some() || c.realtime_period().is_some() {
        return Err(Error::NeedsV1("cpu.realtimeRuntime and cpu.realtimePeriod"));
    }
    Ok(())
}

pub fn io(dir: &Path, b: &LinuxBlockIo) -> Result<()> {
    // BFQ takes blkio's 10..1000 weights as they are; the generic io.weight
    // takes 1..10000.
    let bfq = fs::exists(dir, "io.bfq.weight");
    if let Some(w) = b.weight() {
        if bfq {
            fs::write(dir, "io.bfq.weight", &w.to_string())?;
        } else {
            fs::write(dir, "io.weight", &format!("default {}", blkio_weight_to_io_weight(w as u64)))?;
        }
    }
    for d in b.weight_device().iter().flatten() {
        // A 0 is "not set" to runc (see resources::zero_means_unset).
        if let Some(w) = d.weight().filter(|w| *w != 0) {
            let (file, w) =
                if bfq { ("io.bfq.weight", w as u64) } else { ("io.weight", blkio_weight_to_io_weight(w as u64)) };
            fs::write(dir, file, &format!("{}:{} {w}", d.major(), d.minor()))?;
        }
    }
    if b.leaf_weight().is_some() {
        tracing::warn!("blockIO.leafWeight is not supported on cgroup v2; ignored");
    }
    let throttles = [
        ("rbps", b.throttle_read_bps_device()),
        ("wbps", b.throttle_write_bps_device()),
        ("riops", b.throttle_read_iops_device()),
        ("wiops", b.throttle_write_iops_device()),
    ];
    for (key, list) in throttles {
        for d in list.iter().flatten() {
            let rate = if d.rate() == 0 { "max".to_string() } else { d.rate().to_string() };
            fs::write(dir, "io.max", &format!("{}:{} {key}={rate}", d.major(), d.minor()))?;
        }
    }
    Ok(())
}

pub fn hugetlb(dir: &Path, limits: &[LinuxHugepageLimit]) -> Result<()> {
    for l in limits {
        fs::write(dir, &format!("hugetlb.{}.max", l.page_size()), &l.limit().to_string())?;
    }
    Ok(())
}

/// linux.resources.unified: raw v2 files. Keys are file names in the
/// container's cgroup; a key may not leave it, and must belong to an
/// enabled controller (or be a cgroup.* file), as runc checks.
pub fn unified(dir: &Path, values: &HashMap<String, String>) -> Result<()> {
    let enabled = fs::read_opt(dir, "cgroup.controllers")?.unwrap_or_default();
    let mut keys: Vec<&String> = values.keys().collect();
    keys.sort();
    for key in keys {
        if key.contains('/') || key.starts_with('.') {
            return Err(Error::InvalidValue(format!("unified key {key:?} is not a file of the container's cgroup")));
        }
        let controller = key.split('.').next().unwrap_or("");
        if controller != "cgroup" && !enabled.split_whitespace().any(|c| c == controller) {
            return Err(Error::InvalidValue(format!(
                "unified key {key:?}: the {controller} controller is not enabled for this cgroup"
            )));
        }
        fs::write(dir, key, &values[key])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (f, v) in files {
            std::fs::write(dir.path().join(f), v).unwrap();
        }
        dir
    }

    fn get(d: &tempfile::TempDir, f: &str) -> String {
        std::fs::read_to_string(d.path().join(f)).unwrap()
    }

    #[test]
    fn memory_converts_swap_to_swap_alone() {
        let d = fake(&[("memory.max", "max"), ("memory.swap.max", "max"), ("memory.low", "0")]);
        let m: LinuxMemory =
            serde_json::from_str(r#"{"limit":33554432,"swap":50331648,"reservation":1048576}"#).unwrap();
        memory(d.path(), &m).unwrap();
        assert_eq!(get(&d, "memory.max"), "33554432");
        assert_eq!(get(&d, "memory.swap.max"), "16777216");
        assert_eq!(get(&d, "memory.low"), "1048576");
        let m: LinuxMemory = serde_json::from_str(r#"{"limit":-1,"swap":-1}"#).unwrap();
        memory(d.path(), &m).unwrap();
        assert_eq!(get(&d, "memory.max"), "max");
        assert_eq!(get(&d, "memory.swap.max"), "max");
        let m: LinuxMemory = serde_json::from_str(r#"{"limit":33554432,"swap":1}"#).unwrap();
        assert!(memory(d.path(), &m).is_err(), "swap below the limit");
    }

    #[test]
    fn cpu_converts_shares_and_quota() {
        let d = fake(&[("cpu.weight", "100"), ("cpu.max", "max 100000")]);
        let c: LinuxCpu = serde_json::from_str(r#"{"shares":1024,"quota":20000,"period":50000}"#).unwrap();
        cpu(d.path(), &c).unwrap();
        assert_eq!(get(&d, "cpu.weight"), "39");
        assert_eq!(get(&d, "cpu.max"), "20000 50000");
        let c: LinuxCpu = serde_json::from_str(r#"{"quota":-1}"#).unwrap();
        cpu(d.path(), &c).unwrap();
        assert_eq!(get(&d, "cpu.max"), "max 100000");
        let c: LinuxCpu = serde_json::from_str(r#"{"realtimeRuntime":1000}"#).unwrap();
        assert!(cpu(d.path(), &c).unwrap_err().to_string().contains("v1"));
    }

    #[test]
    fn io_uses_bfq_when_present_else_converts() {
        let d = fake(&[("io.weight", ""), ("io.max", "")]);
        let b: LinuxBlockIo =
            serde_json::from_str(r#"{"weight":500,"throttleWriteBpsDevice":[{"major":8,"minor":0,"rate":4096}]}"#)
                .unwrap();
        io(d.path(), &b).unwrap();
        assert_eq!(get(&d, "io.weight"), "default 4950");
        assert_eq!(get(&d, "io.max"), "8:0 wbps=4096");
        let d = fake(&[("io.bfq.weight", ""), ("io.weight", ""), ("io.max", "")]);
        io(d.path(), &b).unwrap();
        assert_eq!(get(&d, "io.bfq.weight"), "500");
    }

    #[test]
    fn unified_keys_stay_in_the_cgroup_and_need_their_controller() {
        let d = fake(&[("cgroup.controllers", "memory pids"), ("memory.high", "max"), ("pids.max", "max")]);
        let ok: HashMap<String, String> = [("memory.high".to_string(), "1000000".to_string())].into();
        unified(d.path(), &ok).unwrap();
        assert_eq!(get(&d, "memory.high"), "1000000");
        let bad: HashMap<String, String> = [("../../x".to_string(), "1".to_string())].into();
        assert!(unified(d.path(), &bad).is_err());
        let off: HashMap<String, String> = [("io.max".to_string(), "1".to_string())].into();
        assert!(unified(d.path(), &off).unwrap_err().to_string().contains("io controller"));
    }
}
