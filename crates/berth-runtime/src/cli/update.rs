use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use berth_runtime::config::parse_json;
use berth_runtime::lifecycle;
use clap::Args;
use oci_spec::runtime::LinuxResources;
use serde_json::{Map, Value, json};

use super::Globals;

/// runc's `update`. liboci-cli's Update takes sizes as plain integers;
/// runc takes "512m" and "-1" (unlimited swap), and scripts pass those, so
/// this one is ours.
#[derive(Args, Debug)]
pub struct Update {
    /// Path to a JSON file with the resources to update, or - for stdin; all other options are then ignored
    #[arg(short, long)]
    pub resources: Option<PathBuf>,
    /// Block IO weight (10 to 1000)
    #[arg(long)]
    pub blkio_weight: Option<u16>,
    /// CPU CFS period, in microseconds
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// CPU CFS quota, in microseconds per period (-1: none)
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CPU shares (relative weight)
    #[arg(long)]
    pub cpu_share: Option<u64>,
    /// CPU realtime period, in microseconds
    #[arg(long)]
    pub cpu_rt_period: Option<u64>,
    /// CPU realtime runtime, in microseconds
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_rt_runtime: Option<i64>,
    /// CPU idle (SCHED_IDLE) for the cgroup: 0 or 1
    #[arg(long)]
    pub cpu_idle: Option<i64>,
    /// CPUs to run on, e.g. 0-3,7
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes to use, e.g. 0
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Memory limit, in bytes or with a unit (512m, 1g)
    #[arg(long, value_parser = parse_size, allow_hyphen_values = true)]
    pub memory: Option<i64>,
    /// Memory reservation (soft limit)
    #[arg(long, value_parser = parse_size, allow_hyphen_values = true)]
    pub memory_reservation: Option<i64>,
    /// Memory plus swap limit; -1 for unlimited swap
    #[arg(long, value_parser = parse_size, allow_hyphen_values = true)]
    pub memory_swap: Option<i64>,
    /// Maximum number of processes (0 or -1: no limit)
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Intel RDT L3 cache schema (not supported)
    #[arg(long)]
    pub l3_cache_schema: Option<String>,
    /// Intel RDT memory bandwidth schema (not supported)
    #[arg(long)]
    pub mem_bw_schema: Option<String>,
    /// Container identifier
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new(), required = true)]
    pub container_id: String,
}

pub fn run(g: &Globals, a: Update) -> Result<i32> {
    let c = g.load(&a.container_id)?;
    let resources = match &a.resources {
        Some(path) => read_resources(path)?,
        None => from_flags(&a)?,
    };
    lifecycle::update(&c, &resources)?;
    Ok(0)
}

fn read_resources(path: &std::path::Path) -> Result<LinuxResources> {
    let mut bytes = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut bytes).context("read resources from stdin")?;
    } else {
        bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    }
    Ok(parse_json(path, &bytes)?)
}

fn from_flags(a: &Update) -> Result<LinuxResources> {
    if a.l3_cache_schema.is_some() || a.mem_bw_schema.is_some() {
        bail!("Intel RDT (--l3-cache-schema, --mem-bw-schema) is not supported by berth-runtime");
    }
    let mut memory = Map::new();
    put(&mut memory, "limit", a.memory.map(Value::from));
    put(&mut memory, "reservation", a.memory_reservation.map(Value::from));
    put(&mut memory, "swap", a.memory_swap.map(Value::from));
    let mut cpu = Map::new();
    put(&mut cpu, "shares", a.cpu_share.map(Value::from));
    put(&mut cpu, "quota", a.cpu_quota.map(Value::from));
    put(&mut cpu, "period", a.cpu_period.map(Value::from));
    put(&mut cpu, "realtimePeriod", a.cpu_rt_period.map(Value::from));
    put(&mut cpu, "realtimeRuntime", a.cpu_rt_runtime.map(Value::from));
    put(&mut cpu, "idle", a.cpu_idle.map(Value::from));
    put(&mut cpu, "cpus", a.cpuset_cpus.clone().map(Value::from));
    put(&mut cpu, "mems", a.cpuset_mems.clone().map(Value::from));
    let mut r = Map::new();
    put(&mut r, "memory", Some(Value::Object(memory)).filter(|m| m.as_object().is_some_and(|o| !o.is_empty())));
    put(&mut r, "cpu", Some(Value::Object(cpu)).filter(|m| m.as_object().is_some_and(|o| !o.is_empty())));
    put(&mut r, "pids", a.pids_limit.map(|l| json!({ "limit": l })));
    put(&mut r, "blockIO", a.blkio_weight.map(|w| json!({ "weight": w })));
    if r.is_empty() {
        bail!("update: nothing to change (give --resources or a limit flag; see --help)");
    }
    Ok(serde_json::from_value(Value::Object(r))?)
}

fn put(m: &mut Map<String, Value>, k: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(k.to_string(), v);
    }
}

/// docker's RAMInBytes: a number with an optional binary unit (k, m, g, t,
/// with or without a trailing b), or -1.
pub fn parse_size(s: &str) -> Result<i64, String> {
    let t = s.trim().to_ascii_lowercase();
    if t == "-1" {
        return Ok(-1);
    }
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num.trim().parse().map_err(|_| format!("invalid size {s:?}: use a number with k, m, g or t"))?;
    if n < 0.0 {
        return Err(format!("invalid size {s:?}: must not be negative (only -1 means unlimited)"));
    }
    Ok((n * mult as f64) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_docker() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("2KB").unwrap(), 2048);
        assert_eq!(parse_size("-1").unwrap(), -1);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-5").is_err());
    }
}
