//! Looking at running containers: `top` (their processes) and `stats`
//! (their resource use). Both ask the OCI runtime through its command line
//! (`ps --format json`, `events --stats`), so they work the same under
//! berth-runtime and runc; what the runtime does not report (a process's
//! details, network counters) is read from /proc. crun has no `events`:
//! then the container's cgroup (config.json's cgroupsPath) is read directly.

use std::time::Instant;

use serde_json::Value;

use crate::Error;
use crate::engine::Engine;
use crate::store::{ContainerRecord, Status};

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error(transparent)]
    Engine(#[from] Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// docker's words: "container X is not running".
    #[error("container {0} is not running")]
    NotRunning(String),
    /// The OCI runtime failed (its own message), could not be run, or
    /// printed what runc would not.
    #[error("OCI runtime {what}: {source}")]
    Runtime { what: String, source: berth_oci_cli::Error },
}

/// One process of a container, as `ps -ef` describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Process {
    pub uid: u32,
    pub pid: i32,
    pub ppid: i32,
    /// Percent of one CPU used over the process's life (ps's C).
    pub cpu_percent: u64,
    /// Start time, seconds since the epoch.
    pub start_time: u64,
    /// The controlling terminal ("pts/0"), or "?".
    pub tty: String,
    /// CPU time used (user + system), seconds.
    pub cpu_seconds: u64,
    /// The command line, or `[comm]` when it has none (kernel threads,
    /// zombies), as ps shows it.
    pub cmd: String,
}

/// One reading of a container's resource use.
#[derive(Debug, Clone)]
pub struct Sample {
    pub id: String,
    pub name: String,
    pub running: bool,
    pub at: Instant,
    /// CPU time used, nanoseconds.
    pub cpu_ns: u64,
    /// Memory in use without the page cache that can be dropped (docker's
    /// "MEM USAGE"), and the limit (the host's memory when there is none).
    pub mem_usage: u64,
    pub mem_limit: u64,
    pub pids: u64,
    pub net_rx: u64,
    pub net_tx: u64,
    pub blk_read: u64,
    pub blk_write: u64,
}

impl Sample {
    /// A reading taken now with nothing counted yet.
    fn empty(id: &str, name: &str, running: bool) -> Sample {
        Sample {
            id: id.to_owned(),
            name: name.to_owned(),
            running,
            at: Instant::now(),
            cpu_ns: 0,
            mem_usage: 0,
            mem_limit: 0,
            pids: 0,
            net_rx: 0,
            net_tx: 0,
            blk_read: 0,
            blk_write: 0,
        }
    }
}

impl Sample {
    /// CPU use between two readings, in percent of one CPU (docker's
    /// "CPU %": 200% is two CPUs busy).
    pub fn cpu_percent(&self, earlier: &Sample) -> f64 {
        let wall = self.at.saturating_duration_since(earlier.at).as_nanos() as f64;
        if wall <= 0.0 || !self.running {
            return 0.0;
        }
        self.cpu_ns.saturating_sub(earlier.cpu_ns) as f64 / wall * 100.0
    }

    pub fn mem_percent(&self) -> f64 {
        if self.mem_limit == 0 { 0.0 } else { self.mem_usage as f64 / self.mem_limit as f64 * 100.0 }
    }
}

impl Engine {
    /// A container by name, id or id prefix that is running now.
    fn running_container(&self, key: &str) -> Result<ContainerRecord, ObserveError> {
        let rec = self.refresh(&self.containers()?.get(key)?);
        if rec.status != Status::Running {
            return Err(ObserveError::NotRunning(rec.id));
        }
        Ok(rec)
    }

    /// The container's processes (docker's `top`), in pid order.
    pub fn top(&self, key: &str) -> Result<Vec<Process>, ObserveError> {
        let rec = self.running_container(key)?;
        let mut pids = self
            .oci_runtime_of(&rec)
            .ps(&rec.id)
            .map_err(|source| ObserveError::Runtime { what: format!("ps {}", rec.id), source })?;
        pids.sort_unstable();
        let clock = Clock::read();
        // A process that ended since the runtime listed it is left out.
        Ok(pids.into_iter().filter_map(|p| process(p, &clock)).collect())
    }

    /// One reading of a container's resource use; zeros for a container
    /// that is not running (as docker shows it with `stats -a`).
    pub fn sample(&self, rec: &ContainerRecord) -> Result<Sample, ObserveError> {
        let rec = self.refresh(rec);
        let mut s = Sample::empty(&rec.id, &rec.name, rec.status == Status::Running);
        if !s.running {
            return Ok(s);
        }
        let data = match self.oci_runtime_of(&rec).stats(&rec.id) {
            Ok(event) => event.data,
            // crun has no `events`: the container's cgroup, read as
            // berth-runtime reads it for its own `events --stats`.
            Err(source @ berth_oci_cli::Error::Failed { .. }) => {
                let what = format!("events --stats {}", rec.id);
                self.cgroup_stats(&rec.id).ok_or(ObserveError::Runtime { what, source })?
            }
            Err(source) => return Err(ObserveError::Runtime { what: format!("events --stats {}", rec.id), source }),
        };
        s.at = Instant::now();
        read_stats(&data, &mut s);
        s.mem_limit = match host_memory() {
            Some(host) if s.mem_limit == 0 || s.mem_limit > host => host,
            _ => s.mem_limit,
        };
        if let Some(pid) = rec.pid
            && let Ok(dev) = std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
        {
            (s.net_rx, s.net_tx) = net_totals(&dev);
        }
        Ok(s)
    }
}

impl Engine {
    /// The stats of the cgroup the container's config.json names, in the
    /// shape of runc's `events --stats` data; None if there is no such
    /// cgroup.
    fn cgroup_stats(&self, id: &str) -> Option<Value> {
        let config = std::fs::read(self.run_dir(id).join("config.json")).ok()?;
        let spec: Value = serde_json::from_slice(&config).ok()?;
        let path = std::path::Path::new(spec["linux"]["cgroupsPath"].as_str()?);
        let layout = berth_cgroups::Layout::detect().ok()?;
        let cg = berth_cgroups::Cgroup::resolve(&layout, path).ok()?;
        if !cg.exists() {
            return None;
        }
        serde_json::to_value(cg.stats()).ok()
    }
}

/// The numbers docker shows, from runc's `events --stats` data.
fn read_stats(d: &Value, s: &mut Sample) {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    s.cpu_ns = n(&d["cpu"]["usage"]["total"]);
    let raw = &d["memory"]["raw"];
    // docker subtracts the inactive page cache: total_inactive_file on v1,
    // inactive_file on v2.
    let inactive = raw.get("total_inactive_file").or_else(|| raw.get("inactive_file")).map_or(0, n);
    s.mem_usage = n(&d["memory"]["usage"]["usage"]).saturating_sub(inactive);
    s.mem_limit = n(&d["memory"]["usage"]["limit"]);
    s.pids = n(&d["pids"]["current"]);
    for e in d["blkio"]["ioServiceBytesRecursive"].as_array().into_iter().flatten() {
        match e["op"].as_str().map(str::to_ascii_lowercase).as_deref() {
            Some("read") => s.blk_read += n(&e["value"]),
            Some("write") => s.blk_write += n(&e["value"]),
            _ => {}
        }
    }
}

/// Bytes received and sent on every interface but loopback, from the
/// text of /proc/PID/net/dev.
fn net_totals(dev: &str) -> (u64, u64) {
    let (mut rx, mut tx) = (0, 0);
    for line in dev.lines().skip(2) {
        let Some((iface, counters)) = line.split_once(':') else { continue };
        if iface.trim() == "lo" {
            continue;
        }
        let c: Vec<u64> = counters.split_whitespace().map(|v| v.parse().unwrap_or(0)).collect();
        rx += c.first().copied().unwrap_or(0);
        tx += c.get(8).copied().unwrap_or(0);
    }
    (rx, tx)
}

/// The host's memory, bytes (MemTotal in /proc/meminfo).
pub fn host_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// What turns /proc/PID/stat's clock ticks into times.
struct Clock {
    ticks_per_sec: u64,
    boot_time: u64,
    uptime: f64,
}

impl Clock {
    fn read() -> Clock {
        let ticks_per_sec = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .and_then(|t| u64::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(100);
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let boot_time =
            stat.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        let uptime = std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|u| u.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        Clock { ticks_per_sec, boot_time, uptime }
    }
}

/// A process's details from /proc/PID/{stat,status,cmdline}.
fn process(pid: i32, clock: &Clock) -> Option<Process> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    parse_process(pid, &stat, &status, &cmdline, clock)
}

fn parse_process(pid: i32, stat: &str, status: &str, cmdline: &[u8], clock: &Clock) -> Option<Process> {
    let stat = berth_proc::parse_stat(stat)?;
    let cpu_ticks = stat.utime + stat.stime;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let hz = clock.ticks_per_sec;
    let age = clock.uptime - stat.start as f64 / hz as f64;
    let cpu_percent = if age > 0.0 { (cpu_ticks as f64 / hz as f64 / age * 100.0) as u64 } else { 0 };
    let args: Vec<String> =
        cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let cmd = if args.is_empty() { format!("[{}]", stat.comm) } else { args.join(" ") };
    Some(Process {
        uid,
        pid,
        ppid: stat.ppid,
        cpu_percent,
        start_time: clock.boot_time + stat.start / hz,
        tty: tty_name(stat.tty_nr),
        cpu_seconds: cpu_ticks / hz,
        cmd,
    })
}

/// /proc/PID/stat's tty_nr as ps names it.
fn tty_name(nr: u64) -> String {
    if nr == 0 {
        return "?".into();
    }
    let major = (nr >> 8) & 0xfff;
    let minor = (nr & 0xff) | ((nr >> 12) & 0xfff00);
    match major {
        136..=143 => format!("pts/{}", (major - 136) * 256 + minor),
        4 if minor < 64 => format!("tty{minor}"),
        4 => format!("ttyS{}", minor - 64),
        5 if minor == 1 => "console".into(),
        _ => "?".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock() -> Clock {
        Clock { ticks_per_sec: 100, boot_time: 1_000_000, uptime: 1000.0 }
    }

    #[test]
    fn a_processes_stat_and_status_read_as_ps_shows_them() {
        // pid (comm) state ppid pgrp session tty_nr tpgid flags minflt
        // cminflt majflt cmajflt utime stime cutime cstime priority nice
        // num_threads itrealvalue starttime ...
        let stat = "42 (sleep) x) S 7 42 42 34816 42 0 0 0 0 0 300 200 0 0 20 0 1 0 50000 0 0";
        let status = "Name:\tsleep\nUid:\t1000\t1000\t1000\t1000\n";
        let p = parse_process(42, stat, status, b"sleep\x001000\x00", &clock()).unwrap();
        assert_eq!((p.pid, p.ppid, p.uid), (42, 7, 1000));
        assert_eq!(p.cmd, "sleep 1000");
        assert_eq!(p.tty, "pts/0");
        assert_eq!(p.cpu_seconds, 5);
        assert_eq!(p.start_time, 1_000_500);
        assert_eq!(p.cpu_percent, 1, "5 s of CPU in 500 s");
        let kthread = "2 (kworker/0:1) I 0 0 0 0 -1 69238880 0 0 0 0 0 0 0 0 20 0 1 0 2 0 0";
        let p = parse_process(2, kthread, "", b"", &clock()).unwrap();
        assert_eq!((p.cmd.as_str(), p.tty.as_str()), ("[kworker/0:1]", "?"));
    }

    #[test]
    fn runc_stats_become_dockers_numbers() {
        let data = serde_json::json!({
            "cpu": {"usage": {"total": 1_500_000_000u64}},
            "memory": {"usage": {"usage": 5_000_000, "limit": 67_108_864}, "raw": {"total_inactive_file": 1_000_000}},
            "pids": {"current": 3},
            "blkio": {"ioServiceBytesRecursive": [
                {"major": 8, "op": "Read", "value": 4096}, {"major": 8, "op": "Write", "value": 8192},
                {"major": 8, "op": "Total", "value": 12288}, {"major": 9, "op": "read", "value": 1}
            ]}
        });
        let mut s = Sample::empty("x", "x", true);
        let before = s.clone();
        read_stats(&data, &mut s);
        assert_eq!((s.cpu_ns, s.mem_usage, s.mem_limit, s.pids), (1_500_000_000, 4_000_000, 67_108_864, 3));
        assert_eq!((s.blk_read, s.blk_write), (4097, 8192));
        s.at = before.at + std::time::Duration::from_secs(3);
        assert!((s.cpu_percent(&before) - 50.0).abs() < 1e-9);
    }

    #[test]
    fn net_dev_totals_leave_out_loopback() {
        let dev = "Inter-|   Receive                                                |  Transmit\n \
             face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
             lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  \
             eth0:    2000      10    0    0    0     0          0         0      300       3    0    0    0     0       0          0\n";
        assert_eq!(net_totals(dev), (2000, 300));
    }

    #[test]
    fn ttys_are_named_as_ps_names_them() {
        assert_eq!(tty_name(0), "?");
        assert_eq!(tty_name((136 << 8) | 3), "pts/3");
        assert_eq!(tty_name((4 << 8) | 1), "tty1");
    }
}
