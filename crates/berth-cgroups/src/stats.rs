//! Resource usage of a cgroup, in the shape runc's `events --stats` prints
//! (runc's types/events.go). Field names, order and which zero values are
//! left out follow Go's encoding: `omitempty` drops zero numbers and empty
//! lists and maps, but never a struct.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::cgroup::Cgroup;
use crate::fs;
use crate::resources::Target;

fn zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Stats {
    pub cpu: Cpu,
    pub cpuset: CpuSet,
    pub memory: Memory,
    pub pids: Pids,
    pub blkio: Blkio,
    /// Page size ("2MB") to usage. Always present, as runc prints it.
    pub hugetlb: BTreeMap<String, Hugetlb>,
    pub intel_rdt: IntelRdt,
    /// Not collected from cgroups (runc fills it from the network
    /// namespace); `null` as runc prints it when it has none.
    pub network_interfaces: Option<Vec<()>>,
}

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Cpu {
    pub usage: CpuUsage,
    pub throttling: Throttling,
}

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct CpuUsage {
    /// Nanoseconds.
    #[serde(skip_serializing_if = "zero")]
    pub total: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu_kernel: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu_user: Vec<u64>,
    pub kernel: u64,
    pub user: u64,
}

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Throttling {
    #[serde(skip_serializing_if = "zero")]
    pub periods: u64,
    #[serde(rename = "throttledPeriods", skip_serializing_if = "zero")]
    pub throttled_periods: u64,
    #[serde(rename = "throttledTime", skip_serializing_if = "zero")]
    pub throttled_time: u64,
}

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct CpuSet {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cpus: Vec<u16>,
    pub cpu_exclusive: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mems: Vec<u16>,
    pub mem_hardwall: u64,
    pub mem_exclusive: u64,
    pub memory_migrate: u64,
    pub memory_spread_page: u64,
    pub memory_spread_slab: u64,
    pub memory_pressure: u64,
    pub sched_load_balance: u64,
    pub sched_relax_domain_level: i64,
}

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct MemoryEntry {
    pub limit: u64,
    #[serde(skip_serializing_if = "zero")]
    pub usage: u64,
    #[serde(skip_serializing_if = "zero")]
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Memory {
    #[serde(skip_serializing_if = "zero")]
    pub cache: u64,
    pub usage: MemoryEntry,
    pub swap: MemoryEntry,
    pub kernel: MemoryEntry,
    #[serde(rename = "kernelTCP")]
    pub kernel_tcp: MemoryEntry,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub raw: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Pids {
    #[serde(skip_serializing_if = "zero")]
    pub current: u64,
    #[serde(skip_serializing_if = "zero")]
    pub limit: u64,
}

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct BlkioEntry {
    #[serde(skip_serializing_if = "zero")]
    pub major: u64,
    #[serde(skip_serializing_if = "zero")]
    pub minor: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub op: String,
    #[serde(skip_serializing_if = "zero")]
    pub value: u64,
}

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Blkio {
    #[serde(rename = "ioServiceBytesRecursive", skip_serializing_if = "Vec::is_empty")]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(rename = "ioServicedRecursive", skip_serializing_if = "Vec::is_empty")]
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Hugetlb {
    #[serde(skip_serializing_if = "zero")]
    pub usage: u64,
    #[serde(skip_serializing_if = "zero")]
    pub max: u64,
    pub failcnt: u64,
}

/// Intel RDT is not supported: an empty object, as runc prints without it.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct IntelRdt {}

/// USER_HZ: the unit of cpuacct.stat.
const CLOCK_TICKS: u64 = 100;

impl Cgroup {
    /// Current usage, from whichever hierarchy each controller lives in.
    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        match self.target("cpuacct") {
            Target::V1(d) => v1_cpuacct(d, &mut s.cpu),
            // v2's cpu.stat reports usage even without the cpu controller.
            _ => {
                if let Some(d) = self.dirs.get(crate::cgroup::UNIFIED) {
                    v2_cpu(d, &mut s.cpu);
                }
            }
        }
        if let Target::V1(d) = self.target("cpu") {
            s.cpu.throttling = throttling(&fs::read_keyed(d, "cpu.stat"), false);
        }
        match self.target("cpuset") {
            Target::V1(d) => s.cpuset = v1_cpuset(d),
            Target::V2(d) => {
                s.cpuset.cpus = fs::parse_list(&fs::read(d, "cpuset.cpus.effective").unwrap_or_default());
                s.cpuset.mems = fs::parse_list(&fs::read(d, "cpuset.mems.effective").unwrap_or_default());
            }
            Target::Missing => {}
        }
        match self.target("memory") {
            Target::V1(d) => s.memory = v1_memory(d),
            Target::V2(d) => s.memory = v2_memory(d),
            Target::Missing => {}
        }
        if let Target::V1(d) | Target::V2(d) = self.target("pids") {
            s.pids = Pids { current: fs::read_u64(d, "pids.current"), limit: limit(fs::read_u64(d, "pids.max")) };
        }
        match (self.target("blkio"), self.target("io")) {
            (Target::V1(d), _) => s.blkio = v1_blkio(d),
            (_, Target::V2(d)) => s.blkio = v2_io(d),
            _ => {}
        }
        match self.target("hugetlb") {
            Target::V1(d) => s.hugetlb = hugetlb(d, true),
            Target::V2(d) => s.hugetlb = hugetlb(d, false),
            Target::Missing => {}
        }
        s
    }
}

/// "max" (u64::MAX) means no limit, which runc reports as 0 for pids.
fn limit(v: u64) -> u64 {
    if v == u64::MAX { 0 } else { v }
}

fn numbers(s: &str) -> Vec<u64> {
    s.split_whitespace().filter_map(|n| n.parse().ok()).collect()
}

fn v1_cpuacct(d: &Path, cpu: &mut Cpu) {
    cpu.usage.total = fs::read_u64(d, "cpuacct.usage");
    cpu.usage.percpu = numbers(&fs::read(d, "cpuacct.usage_percpu").unwrap_or_default());
    cpu.usage.percpu_kernel = numbers(&fs::read(d, "cpuacct.usage_percpu_sys").unwrap_or_default());
    cpu.usage.percpu_user = numbers(&fs::read(d, "cpuacct.usage_percpu_user").unwrap_or_default());
    let st = fs::read_keyed(d, "cpuacct.stat");
    let ns = |ticks: u64| ticks * (1_000_000_000 / CLOCK_TICKS);
    cpu.usage.user = ns(st.get("user").copied().unwrap_or(0));
    cpu.usage.kernel = ns(st.get("system").copied().unwrap_or(0));
}

fn v2_cpu(d: &Path, cpu: &mut Cpu) {
    let st = fs::read_keyed(d, "cpu.stat");
    let us = |k: &str| st.get(k).copied().unwrap_or(0) * 1000;
    cpu.usage.total = us("usage_usec");
    cpu.usage.user = us("user_usec");
    cpu.usage.kernel = us("system_usec");
    cpu.throttling = throttling(&st, true);
}

fn throttling(st: &BTreeMap<String, u64>, v2: bool) -> Throttling {
    let get = |k: &str| st.get(k).copied().unwrap_or(0);
    Throttling {
        periods: get("nr_periods"),
        throttled_periods: get("nr_throttled"),
        throttled_time: if v2 { get("throttled_usec") * 1000 } else { get("throttled_time") },
    }
}

fn v1_cpuset(d: &Path) -> CpuSet {
    let n = |f: &str| fs::read_u64(d, f);
    CpuSet {
        cpus: fs::parse_list(&fs::read(d, "cpuset.cpus").unwrap_or_default()),
        cpu_exclusive: n("cpuset.cpu_exclusive"),
        mems: fs::parse_list(&fs::read(d, "cpuset.mems").unwrap_or_default()),
        mem_hardwall: n("cpuset.mem_hardwall"),
        mem_exclusive: n("cpuset.mem_exclusive"),
        memory_migrate: n("cpuset.memory_migrate"),
        memory_spread_page: n("cpuset.memory_spread_page"),
        memory_spread_slab: n("cpuset.memory_spread_slab"),
        memory_pressure: n("cpuset.memory_pressure"),
        sched_load_balance: n("cpuset.sched_load_balance"),
        sched_relax_domain_level: fs::read(d, "cpuset.sched_relax_domain_level")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0),
    }
}

fn v1_entry(d: &Path, prefix: &str) -> MemoryEntry {
    let n = |f: &str| fs::read_u64(d, &format!("{prefix}.{f}"));
    MemoryEntry {
        limit: n("limit_in_bytes"),
        usage: n("usage_in_bytes"),
        max: n("max_usage_in_bytes"),
        failcnt: n("failcnt"),
    }
}

fn v1_memory(d: &Path) -> Memory {
    let raw = fs::read_keyed(d, "memory.stat");
    Memory {
        cache: raw.get("cache").copied().unwrap_or(0),
        usage: v1_entry(d, "memory"),
        swap: v1_entry(d, "memory.memsw"),
        kernel: v1_entry(d, "memory.kmem"),
        kernel_tcp: v1_entry(d, "memory.kmem.tcp"),
        raw,
    }
}

fn v2_memory(d: &Path) -> Memory {
    let raw = fs::read_keyed(d, "memory.stat");
    let events = fs::read_keyed(d, "memory.events");
    let usage = fs::read_u64(d, "memory.current");
    let max = fs::read_u64(d, "memory.max");
    let swap_usage = fs::read_u64(d, "memory.swap.current");
    let swap_max = fs::read_u64(d, "memory.swap.max");
    Memory {
        cache: raw.get("file").copied().unwrap_or(0),
        usage: MemoryEntry {
            limit: max,
            usage,
            max: fs::read_u64(d, "memory.peak"),
            failcnt: events.get("max").copied().unwrap_or(0),
        },
        // As runc: v2 swap is reported as memory+swap, like v1's memsw.
        swap: MemoryEntry {
            limit: max.saturating_add(swap_max),
            usage: usage + swap_usage,
            max: 0,
            failcnt: events.get("max").copied().unwrap_or(0),
        },
        kernel: MemoryEntry { usage: raw.get("kernel").copied().unwrap_or(0), ..MemoryEntry::default() },
        kernel_tcp: MemoryEntry::default(),
        raw,
    }
}

/// blkio.throttle.io_service_bytes_recursive lines: "8:0 Read 4096".
fn blkio_entries(text: &str) -> Vec<BlkioEntry> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (maj, min) = it.next()?.split_once(':')?;
            let op = it.next()?.to_string();
            let value = it.next()?.parse().ok()?;
            Some(BlkioEntry { major: maj.parse().ok()?, minor: min.parse().ok()?, op, value })
        })
        .collect()
}

fn v1_blkio(d: &Path) -> Blkio {
    let read = |f: &str| fs::read(d, f).unwrap_or_default();
    Blkio {
        io_service_bytes_recursive: blkio_entries(&read("blkio.throttle.io_service_bytes_recursive")),
        io_serviced_recursive: blkio_entries(&read("blkio.throttle.io_serviced_recursive")),
    }
}

/// io.stat lines: "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0".
fn v2_io(d: &Path) -> Blkio {
    let mut b = Blkio::default();
    for line in fs::read(d, "io.stat").unwrap_or_default().lines() {
        let mut it = line.split_whitespace();
        let Some((maj, min)) = it.next().and_then(|dev| dev.split_once(':')) else { continue };
        let (Ok(major), Ok(minor)) = (maj.parse(), min.parse()) else { continue };
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else { continue };
            let value = v.parse().unwrap_or(0);
            let entry = |op: &str| BlkioEntry { major, minor, op: op.into(), value };
            match k {
                "rbytes" => b.io_service_bytes_recursive.push(entry("Read")),
                "wbytes" => b.io_service_bytes_recursive.push(entry("Write")),
                "rios" => b.io_serviced_recursive.push(entry("Read")),
                "wios" => b.io_serviced_recursive.push(entry("Write")),
                _ => {}
            }
        }
    }
    b
}

/// Every page size the hierarchy knows, from its file names.
fn hugetlb(d: &Path, v1: bool) -> BTreeMap<String, Hugetlb> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(d) else { return out };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let suffix = if v1 { ".limit_in_bytes" } else { ".max" };
        let Some(size) = name.strip_prefix("hugetlb.").and_then(|n| n.strip_suffix(suffix)) else { continue };
        if size.contains(".rsvd") {
            continue;
        }
        let h = if v1 {
            Hugetlb {
                usage: fs::read_u64(d, &format!("hugetlb.{size}.usage_in_bytes")),
                max: fs::read_u64(d, &format!("hugetlb.{size}.max_usage_in_bytes")),
                failcnt: fs::read_u64(d, &format!("hugetlb.{size}.failcnt")),
            }
        } else {
            Hugetlb {
                usage: fs::read_u64(d, &format!("hugetlb.{size}.current")),
                max: 0,
                failcnt: fs::read_keyed(d, &format!("hugetlb.{size}.events")).get("max").copied().unwrap_or(0),
            }
        };
        out.insert(size.to_string(), h);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::UNIFIED;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (f, v) in files {
            std::fs::write(d.path().join(f), v).unwrap();
        }
        d
    }

    #[test]
    fn empty_stats_serialize_like_runc() {
        let json = serde_json::to_string(&Stats::default()).unwrap();
        assert_eq!(
            json,
            r#"{"cpu":{"usage":{"kernel":0,"user":0},"throttling":{}},"cpuset":{"cpu_exclusive":0,"mem_hardwall":0,"mem_exclusive":0,"memory_migrate":0,"memory_spread_page":0,"memory_spread_slab":0,"memory_pressure":0,"sched_load_balance":0,"sched_relax_domain_level":0},"memory":{"usage":{"limit":0,"failcnt":0},"swap":{"limit":0,"failcnt":0},"kernel":{"limit":0,"failcnt":0},"kernelTCP":{"limit":0,"failcnt":0}},"pids":{},"blkio":{},"hugetlb":{},"intel_rdt":{},"network_interfaces":null}"#
        );
    }

    #[test]
    fn v1_memory_and_pids() {
        let mem = dir_with(&[
            ("memory.usage_in_bytes", "811008\n"),
            ("memory.limit_in_bytes", "67108864\n"),
            ("memory.max_usage_in_bytes", "2240512\n"),
            ("memory.failcnt", "0\n"),
            ("memory.stat", "cache 12288\nrss 57344\n"),
        ]);
        let pids = dir_with(&[("pids.current", "3\n"), ("pids.max", "max\n")]);
        let cg = Cgroup {
            dirs: [("memory".to_string(), mem.path().into()), ("pids".to_string(), pids.path().into())].into(),
        };
        let s = cg.stats();
        assert_eq!(s.memory.usage.usage, 811008);
        assert_eq!(s.memory.usage.limit, 67108864);
        assert_eq!(s.memory.cache, 12288);
        assert_eq!(s.memory.raw["rss"], 57344);
        assert_eq!(s.pids.current, 3);
        assert_eq!(s.pids.limit, 0, "no limit reads as 0, as runc reports it");
    }

    #[test]
    fn v2_cpu_memory_and_io() {
        let d = dir_with(&[
            ("cgroup.controllers", "cpu memory io pids"),
            (
                "cpu.stat",
                "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 4\nnr_throttled 2\nthrottled_usec 30\n",
            ),
            ("memory.current", "4096\n"),
            ("memory.max", "max\n"),
            ("memory.events", "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\n"),
            ("memory.stat", "file 100\nanon 200\n"),
            ("io.stat", "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n"),
        ]);
        let cg = Cgroup { dirs: [(UNIFIED.to_string(), d.path().into())].into() };
        let s = cg.stats();
        assert_eq!(s.cpu.usage.total, 1_500_000);
        assert_eq!(s.cpu.usage.kernel, 500_000);
        assert_eq!(s.cpu.throttling.throttled_periods, 2);
        assert_eq!(s.cpu.throttling.throttled_time, 30_000);
        assert_eq!(s.memory.usage.usage, 4096);
        assert_eq!(s.memory.usage.failcnt, 7);
        assert_eq!(s.memory.cache, 100);
        assert_eq!(s.blkio.io_service_bytes_recursive.len(), 2);
        assert_eq!(s.blkio.io_service_bytes_recursive[1].op, "Write");
        assert_eq!(s.blkio.io_service_bytes_recursive[1].value, 20);
    }
}
