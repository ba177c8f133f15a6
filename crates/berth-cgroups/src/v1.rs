//! cgroup v1: one directory per controller hierarchy, one file per knob.

use std::path::Path;

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxHugepageLimit, LinuxMemory};

use crate::devices::DeviceRule;
use crate::error::{Error, Result};
use crate::fs;

/// A v1 memory value: -1 (or anything negative) is "unlimited".
fn mem_value(v: i64) -> String {
    if v < 0 { "-1".into() } else { v.to_string() }
}

pub fn memory(dir: &Path, m: &LinuxMemory) -> Result<()> {
    if let Some(r) = m.reservation() {
        fs::write(dir, "memory.soft_limit_in_bytes", &mem_value(r))?;
    }
    limit_and_swap(dir, m.limit(), m.swap())?;
    if let Some(k) = m.kernel() {
        // Removed from the kernel in 5.16; runc and the spec deprecate it.
        if fs::exists(dir, "memory.kmem.limit_in_bytes") {
            fs::write(dir, "memory.kmem.limit_in_bytes", &mem_value(k))?;
        } else {
            tracing::warn!("memory.kernel is not supported by this kernel; ignored");
        }
    }
    if let Some(k) = m.kernel_tcp() {
        fs::write(dir, "memory.kmem.tcp.limit_in_bytes", &mem_value(k))?;
    }
    if let Some(s) = m.swappiness() {
        if s > 100 {
            return Err(Error::InvalidValue(format!("memory.swappiness {s}: must be 0 to 100")));
        }
        fs::write(dir, "memory.swappiness", &s.to_string())?;
    }
    if m.disable_oom_killer() == Some(true) {
        fs::write(dir, "memory.oom_control", "1")?;
    }
    Ok(())
}

/// memory.limit_in_bytes and memory.memsw.limit_in_bytes, in the order the
/// kernel accepts: memsw may never be below the limit, so when raising,
/// memsw goes first; when lowering, the limit does.
fn limit_and_swap(dir: &Path, limit: Option<i64>, swap: Option<i64>) -> Result<()> {
    let swap = match swap {
        Some(s) if !fs::exists(dir, "memory.memsw.limit_in_bytes") => {
            if s != 0 {
                return Err(Error::InvalidValue(
                    "memory.swap: this kernel does not account swap (boot with swapaccount=1)".into(),
                ));
            }
            None
        }
        // Swap unset but a limit set: swap as much as memory (docker's
        // default is twice the limit; runc leaves memsw alone unless the
        // limit would cross it).
        other => other,
    };
    match (limit, swap) {
        (Some(l), Some(s)) => {
            let current_swap = fs::parse_u64(&fs::read(dir, "memory.memsw.limit_in_bytes")?).unwrap_or(u64::MAX);
            let raising = s < 0 || (s as u64) > current_swap;
            if raising {
                fs::write(dir, "memory.memsw.limit_in_bytes", &mem_value(s))?;
                fs::write(dir, "memory.limit_in_bytes", &mem_value(l))?;
            } else {
                fs::write(dir, "memory.limit_in_bytes", &mem_value(l))?;
                fs::write(dir, "memory.memsw.limit_in_bytes", &mem_value(s))?;
            }
        }
        (Some(l), None) => {
            // Lowering the limit never conflicts; raising it above memsw
            // would, so lift memsw to match first when it is in the way.
            if l > 0 && fs::exists(dir, "memory.memsw.limit_in_bytes") {
                let current_swap = fs::parse_u64(&fs::read(dir, "memory.memsw.limit_in_bytes")?).unwrap_or(u64::MAX);
                if (l as u64) > current_swap {
                    fs::write(dir, "memory.memsw.limit_in_bytes", &mem_value(l))?;
                }
            }
            fs::write(dir, "memory.limit_in_bytes", &mem_value(l))?;
        }
        (None, Some(s)) => fs::write(dir, "memory.memsw.limit_in_bytes", &mem_value(s))?,
        (None, None) => {}
    }
    Ok(())
}

pub fn cpu(dir: &Path, c: &LinuxCpu) -> Result<()> {
    if let Some(s) = c.shares() {
        fs::write(dir, "cpu.shares", &s.to_string())?;
    }
    // The period first: the kernel checks quota against the current period.
    if let Some(p) = c.period() {
        fs::write(dir, "cpu.cfs_period_us", &p.to_string())?;
    }
    if let Some(q) = c.quota() {
        fs::write(dir, "cpu.cfs_quota_us", &(if q <= 0 { -1 } else { q }).to_string())?;
    }
    if let Some(b) = c.burst() {
        fs::write(dir, "cpu.cfs_burst_us", &b.to_string())?;
    }
    if let Some(p) = c.realtime_period() {
        fs::write(dir, "cpu.rt_period_us", &p.to_string())?;
    }
    if let Some(r) = c.realtime_runtime() {
        fs::write(dir, "cpu.rt_runtime_us", &r.to_string())?;
    }
    if let Some(i) = c.idle() {
        fs::write(dir, "cpu.idle", &i.to_string())?;
    }
    Ok(())
}

pub fn blkio(dir: &Path, b: &LinuxBlockIo) -> Result<()> {
    if let Some(w) = b.weight() {
        // Kernels with the BFQ scheduler name the file blkio.bfq.weight.
        let file = if fs::exists(dir, "blkio.weight") { "blkio.weight" } else { "blkio.bfq.weight" };
        fs::write(dir, file, &w.to_string())?;
    }
    if let Some(w) = b.leaf_weight() {
        fs::write(dir, "blkio.leaf_weight", &w.to_string())?;
    }
    for d in b.weight_device().iter().flatten() {
        // A 0 is "not set" to runc (see resources::zero_means_unset).
        if let Some(w) = d.weight().filter(|w| *w != 0) {
            fs::write(dir, "blkio.weight_device", &format!("{}:{} {w}", d.major(), d.minor()))?;
        }
        if let Some(w) = d.leaf_weight().filter(|w| *w != 0) {
            fs::write(dir, "blkio.leaf_weight_device", &format!("{}:{} {w}", d.major(), d.minor()))?;
        }
    }
    let throttles = [
        ("blkio.throttle.read_bps_device", b.throttle_read_bps_device()),
        ("blkio.throttle.write_bps_device", b.throttle_write_bps_device()),
        ("blkio.throttle.read_iops_device", b.throttle_read_iops_device()),
        ("blkio.throttle.write_iops_device", b.throttle_write_iops_device()),
    ];
    for (file, list) in throttles {
        for d in list.iter().flatten() {
            fs::write(dir, file, &format!("{}:{} {}", d.major(), d.minor(), d.rate()))?;
        }
    }
    Ok(())
}

pub fn hugetlb(dir: &Path, limits: &[LinuxHugepageLimit]) -> Result<()> {
    for l in limits {
        fs::write(dir, &format!("hugetlb.{}.limit_in_bytes", l.page_size()), &l.limit().to_string())?;
    }
    Ok(())
}

/// The v1 devices controller: rules written in order. A leading deny-all
/// switches the cgroup to allow-list mode, which is what makes the later
/// allows mean anything.
pub fn devices(dir: &Path, rules: &[DeviceRule]) -> Result<()> {
    for r in rules {
        let (file, value) = match (r.allow, r.is_all()) {
            (true, true) => ("devices.allow", "a".to_string()),
            (false, true) => ("devices.deny", "a".to_string()),
            (true, false) => ("devices.allow", r.to_v1()),
            (false, false) => ("devices.deny", r.to_v1()),
        };
        fs::write(dir, file, &value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A fake v1 directory: the given files, recording every write in order.
    struct Fake {
        dir: tempfile::TempDir,
    }

    impl Fake {
        fn new(files: &[(&str, &str)]) -> Fake {
            let dir = tempfile::tempdir().unwrap();
            for (f, v) in files {
                std::fs::write(dir.path().join(f), v).unwrap();
            }
            Fake { dir }
        }
        fn get(&self, f: &str) -> String {
            std::fs::read_to_string(self.dir.path().join(f)).unwrap()
        }
        fn all(&self) -> BTreeMap<String, String> {
            std::fs::read_dir(self.dir.path())
                .unwrap()
                .flatten()
                .map(|e| (e.file_name().into_string().unwrap(), std::fs::read_to_string(e.path()).unwrap()))
                .collect()
        }
    }

    fn mem(json: &str) -> LinuxMemory {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn memory_limit_reservation_and_swap() {
        let f = Fake::new(&[
            ("memory.limit_in_bytes", "9223372036854771712"),
            ("memory.memsw.limit_in_bytes", "9223372036854771712"),
            ("memory.soft_limit_in_bytes", ""),
            ("memory.swappiness", "60"),
            ("memory.oom_control", "0"),
        ]);
        memory(
            f.dir.path(),
            &mem(
                r#"{"limit":33554432,"reservation":16777216,"swap":67108864,"swappiness":10,"disableOOMKiller":true}"#,
            ),
        )
        .unwrap();
        assert_eq!(f.get("memory.limit_in_bytes"), "33554432");
        assert_eq!(f.get("memory.memsw.limit_in_bytes"), "67108864");
        assert_eq!(f.get("memory.soft_limit_in_bytes"), "16777216");
        assert_eq!(f.get("memory.swappiness"), "10");
        assert_eq!(f.get("memory.oom_control"), "1");
    }

    #[test]
    fn raising_a_limit_above_memsw_lifts_memsw_first() {
        let f = Fake::new(&[("memory.limit_in_bytes", "1048576"), ("memory.memsw.limit_in_bytes", "2097152")]);
        memory(f.dir.path(), &mem(r#"{"limit":8388608}"#)).unwrap();
        assert_eq!(f.get("memory.memsw.limit_in_bytes"), "8388608");
        assert_eq!(f.get("memory.limit_in_bytes"), "8388608");
    }

    #[test]
    fn swap_without_swap_accounting_is_an_error_naming_it() {
        let f = Fake::new(&[("memory.limit_in_bytes", "0")]);
        let err = memory(f.dir.path(), &mem(r#"{"limit":1048576,"swap":2097152}"#)).unwrap_err();
        assert!(err.to_string().contains("swapaccount"), "{err}");
    }

    #[test]
    fn cpu_writes_period_before_quota_and_maps_unlimited() {
        let f = Fake::new(&[("cpu.shares", ""), ("cpu.cfs_period_us", ""), ("cpu.cfs_quota_us", "")]);
        let c: LinuxCpu = serde_json::from_str(r#"{"shares":512,"quota":50000,"period":100000}"#).unwrap();
        cpu(f.dir.path(), &c).unwrap();
        assert_eq!(f.get("cpu.shares"), "512");
        assert_eq!(f.get("cpu.cfs_period_us"), "100000");
        assert_eq!(f.get("cpu.cfs_quota_us"), "50000");
        let c: LinuxCpu = serde_json::from_str(r#"{"quota":-1}"#).unwrap();
        cpu(f.dir.path(), &c).unwrap();
        assert_eq!(f.get("cpu.cfs_quota_us"), "-1");
    }

    #[test]
    fn blkio_weights_and_throttles() {
        let f = Fake::new(&[
            ("blkio.weight", ""),
            ("blkio.weight_device", ""),
            ("blkio.throttle.read_bps_device", ""),
            ("blkio.throttle.write_iops_device", ""),
        ]);
        let b: LinuxBlockIo = serde_json::from_str(
            r#"{"weight":300,"weightDevice":[{"major":8,"minor":0,"weight":500}],
                "throttleReadBpsDevice":[{"major":8,"minor":0,"rate":1048576}],
                "throttleWriteIOPSDevice":[{"major":8,"minor":16,"rate":100}]}"#,
        )
        .unwrap();
        blkio(f.dir.path(), &b).unwrap();
        let all = f.all();
        assert_eq!(all["blkio.weight"], "300");
        assert_eq!(all["blkio.weight_device"], "8:0 500");
        assert_eq!(all["blkio.throttle.read_bps_device"], "8:0 1048576");
        assert_eq!(all["blkio.throttle.write_iops_device"], "8:16 100");
    }

    #[test]
    fn device_rules_are_written_in_order_in_v1_syntax() {
        // A file can only hold the last write, so check the last of each.
        let f = Fake::new(&[("devices.allow", ""), ("devices.deny", "")]);
        let rules = crate::devices::effective_rules(&[DeviceRule {
            allow: false,
            kind: crate::devices::DeviceKind::All,
            major: None,
            minor: None,
            access: "rwm".into(),
        }]);
        devices(f.dir.path(), &rules).unwrap();
        assert_eq!(f.get("devices.deny"), "a");
        assert_eq!(f.get("devices.allow"), "c 10:200 rwm");
    }
}
