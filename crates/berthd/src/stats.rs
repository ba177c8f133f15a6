//! Pod sandbox stats (`PodSandboxStats`, `ListPodSandboxStats`) and
//! cAdvisor-style metrics (`ListMetricDescriptors`,
//! `ListPodSandboxMetrics`), as containerd 1.7+ and CRI-O serve them.
//!
//! A pod's CPU, memory and process count are its cgroup's (the kubelet's
//! `cgroup_parent`, kept on the sandbox record: the infra container and
//! every container of the pod live under it); a pod without one is the sum
//! of its infra container and containers. Its network is what the infra
//! container's network namespace counts (/proc/PID/net/dev). Its
//! containers' stats are ContainerStats' (see [`crate::containers`]).

use std::path::Path;
use std::sync::Arc;

use berth_cri_api::v1;
use berth_engine::engine::Engine;
use tonic::Status;

use crate::pods::{Sandbox, blocking, find_sandbox, now_ns, sandboxes, selected};
use crate::runtime::Daemon;

fn val(value: u64) -> Option<v1::UInt64Value> {
    Some(v1::UInt64Value { value })
}

/// One interface's counters from /proc/PID/net/dev.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_errors: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
}

/// The interfaces of a /proc/PID/net/dev text, loopback left out.
pub fn parse_net_dev(text: &str) -> Vec<Iface> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let name = name.trim();
            let c: Vec<u64> = counters.split_whitespace().map(|v| v.parse().unwrap_or(0)).collect();
            (name != "lo" && c.len() >= 16).then(|| Iface {
                name: name.to_owned(),
                rx_bytes: c[0],
                rx_errors: c[2],
                tx_bytes: c[8],
                tx_errors: c[10],
            })
        })
        .collect()
}

/// The pod's interfaces, read in its infra container's network namespace
/// (none for a pod on the host's network, or one that does not run).
fn pod_ifaces(sb: &Sandbox) -> Vec<Iface> {
    if sb.meta.host_network || !sb.ready() {
        return Vec::new();
    }
    sb.rec
        .pid
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok())
        .map(|t| parse_net_dev(&t))
        .unwrap_or_default()
}

/// CPU (ns), memory working set (bytes) and process count of the cgroup
/// at `path` (a cgroupsPath), if it exists.
fn cgroup_usage(path: &str) -> Option<(u64, u64, u64)> {
    let layout = berth_cgroups::Layout::detect().ok()?;
    let cg = berth_cgroups::Cgroup::resolve(&layout, Path::new(path)).ok()?;
    if !cg.exists() {
        return None;
    }
    let s = cg.stats();
    let raw = &s.memory.raw;
    // The kubelet's working set: usage less the inactive page cache.
    let inactive = raw.get("total_inactive_file").or_else(|| raw.get("inactive_file")).copied().unwrap_or(0);
    Some((s.cpu.usage.total, s.memory.usage.usage.saturating_sub(inactive), s.pids.current))
}

/// The stats of one pod.
fn pod_stats(d: &Daemon, engine: &Engine, sb: &Sandbox) -> Result<v1::PodSandboxStats, Status> {
    let now = now_ns();
    let containers = crate::containers::running_stats(d, engine, &sb.rec.id)?;
    let usage = sb.meta.cgroup_parent.as_deref().and_then(cgroup_usage).or_else(|| {
        // No cgroup of its own: the infra container and its containers.
        let infra = engine.sample(&sb.rec).ok()?;
        let (mut cpu, mut mem, mut pids) = (infra.cpu_ns, infra.mem_usage, infra.pids);
        for c in &containers {
            cpu += c.cpu.as_ref().and_then(|u| u.usage_core_nano_seconds.as_ref()).map_or(0, |v| v.value);
            mem += c.memory.as_ref().and_then(|u| u.working_set_bytes.as_ref()).map_or(0, |v| v.value);
        }
        pids += containers.len() as u64;
        Some((cpu, mem, pids))
    });
    let (cpu, mem, pids) = usage.unwrap_or_default();
    let ifaces: Vec<v1::NetworkInterfaceUsage> = pod_ifaces(sb)
        .into_iter()
        .map(|i| v1::NetworkInterfaceUsage {
            name: i.name,
            rx_bytes: val(i.rx_bytes),
            rx_errors: val(i.rx_errors),
            tx_bytes: val(i.tx_bytes),
            tx_errors: val(i.tx_errors),
        })
        .collect();
    let network = (!ifaces.is_empty()).then(|| v1::NetworkUsage {
        timestamp: now,
        default_interface: ifaces.iter().find(|i| i.name == "eth0").or(ifaces.first()).cloned(),
        interfaces: ifaces.clone(),
    });
    let m = &sb.meta;
    Ok(v1::PodSandboxStats {
        attributes: Some(v1::PodSandboxAttributes {
            id: sb.rec.id.clone(),
            metadata: Some(v1::PodSandboxMetadata {
                name: m.name.clone(),
                uid: m.uid.clone(),
                namespace: m.namespace.clone(),
                attempt: m.attempt,
            }),
            labels: sb.rec.labels.clone().into_iter().collect(),
            annotations: m.annotations.clone().into_iter().collect(),
        }),
        linux: Some(v1::LinuxPodSandboxStats {
            cpu: Some(v1::CpuUsage { timestamp: now, usage_core_nano_seconds: val(cpu), usage_nano_cores: None }),
            memory: Some(v1::MemoryUsage { timestamp: now, working_set_bytes: val(mem), ..Default::default() }),
            network,
            process: Some(v1::ProcessUsage { timestamp: now, process_count: val(pids) }),
            containers,
        }),
        windows: None,
    })
}

/// PodSandboxStats of one pod (ready or not, as containerd answers).
pub async fn pod_sandbox_stats(
    d: Arc<Daemon>,
    req: v1::PodSandboxStatsRequest,
) -> Result<v1::PodSandboxStatsResponse, Status> {
    let engine = d.engine()?;
    blocking(move || {
        let sb = find_sandbox(&engine, &req.pod_sandbox_id)?;
        Ok(v1::PodSandboxStatsResponse { stats: Some(pod_stats(&d, &engine, &sb)?) })
    })
    .await
}

/// The ready pods a filter selects (ID prefix, labels).
fn ready_pods(
    engine: &Engine,
    id: &str,
    labels: &std::collections::HashMap<String, String>,
) -> Result<Vec<Sandbox>, Status> {
    Ok(sandboxes(engine)?
        .into_iter()
        .filter(|sb| sb.ready() && sb.rec.id.starts_with(id) && selected(&sb.rec.labels, labels))
        .collect())
}

/// ListPodSandboxStats: the ready pods', filtered by ID prefix and labels.
pub async fn list_pod_sandbox_stats(
    d: Arc<Daemon>,
    req: v1::ListPodSandboxStatsRequest,
) -> Result<v1::ListPodSandboxStatsResponse, Status> {
    let engine = d.engine()?;
    blocking(move || {
        let f = req.filter.unwrap_or_default();
        let mut stats = Vec::new();
        for sb in ready_pods(&engine, &f.id, &f.label_selector)? {
            match pod_stats(&d, &engine, &sb) {
                Ok(s) => stats.push(s),
                // Gone since it was listed.
                Err(e) => tracing::debug!(id = %sb.rec.id, "ListPodSandboxStats: {}", e.message()),
            }
        }
        Ok(v1::ListPodSandboxStatsResponse { stats })
    })
    .await
}

/// The metrics berthd serves: (name, help, type, label keys). Container
/// metrics carry the container's name and ID; network ones the interface.
const CONTAINER_LABELS: &[&str] = &["container", "id"];
const NETWORK_LABELS: &[&str] = &["interface"];
const METRICS: &[(&str, &str, v1::MetricType, &[&str])] = &[
    (
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds (whole seconds: the CRI carries integers).",
        v1::MetricType::Counter,
        CONTAINER_LABELS,
    ),
    ("container_memory_working_set_bytes", "Current working set in bytes.", v1::MetricType::Gauge, CONTAINER_LABELS),
    (
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received.",
        v1::MetricType::Counter,
        NETWORK_LABELS,
    ),
    (
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving.",
        v1::MetricType::Counter,
        NETWORK_LABELS,
    ),
    (
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted.",
        v1::MetricType::Counter,
        NETWORK_LABELS,
    ),
    (
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting.",
        v1::MetricType::Counter,
        NETWORK_LABELS,
    ),
];

/// ListMetricDescriptors: one per metric [`list_pod_sandbox_metrics`] gives.
pub fn metric_descriptors() -> v1::ListMetricDescriptorsResponse {
    let descriptors = METRICS
        .iter()
        .map(|(name, help, _, keys)| v1::MetricDescriptor {
            name: (*name).into(),
            help: (*help).into(),
            label_keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        })
        .collect();
    v1::ListMetricDescriptorsResponse { descriptors }
}

fn metric(name: &str, at: i64, label_values: Vec<String>, value: u64) -> v1::Metric {
    let kind = METRICS.iter().find(|m| m.0 == name).map_or(v1::MetricType::Gauge, |m| m.2);
    v1::Metric { name: name.into(), timestamp: at, metric_type: kind as i32, label_values, value: val(value) }
}

/// A pod's metrics from its stats.
fn pod_metrics(s: &v1::PodSandboxStats) -> v1::PodSandboxMetrics {
    let at = now_ns();
    let linux = s.linux.clone().unwrap_or_default();
    let mut metrics = Vec::new();
    for i in linux.network.map(|n| n.interfaces).unwrap_or_default() {
        let n = |v: &Option<v1::UInt64Value>| v.as_ref().map_or(0, |v| v.value);
        let l = || vec![i.name.clone()];
        metrics.push(metric("container_network_receive_bytes_total", at, l(), n(&i.rx_bytes)));
        metrics.push(metric("container_network_receive_errors_total", at, l(), n(&i.rx_errors)));
        metrics.push(metric("container_network_transmit_bytes_total", at, l(), n(&i.tx_bytes)));
        metrics.push(metric("container_network_transmit_errors_total", at, l(), n(&i.tx_errors)));
    }
    let container_metrics = linux
        .containers
        .iter()
        .map(|c| {
            let attrs = c.attributes.clone().unwrap_or_default();
            let name = attrs.metadata.map(|m| m.name).unwrap_or_default();
            let l = || vec![name.clone(), attrs.id.clone()];
            let cpu = c.cpu.as_ref().and_then(|u| u.usage_core_nano_seconds.as_ref()).map_or(0, |v| v.value);
            let mem = c.memory.as_ref().and_then(|u| u.working_set_bytes.as_ref()).map_or(0, |v| v.value);
            v1::ContainerMetrics {
                container_id: attrs.id.clone(),
                metrics: vec![
                    metric("container_cpu_usage_seconds_total", at, l(), cpu / 1_000_000_000),
                    metric("container_memory_working_set_bytes", at, l(), mem),
                ],
            }
        })
        .collect();
    v1::PodSandboxMetrics {
        pod_sandbox_id: s.attributes.as_ref().map(|a| a.id.clone()).unwrap_or_default(),
        metrics,
        container_metrics,
    }
}

/// ListPodSandboxMetrics: every ready pod's.
pub async fn list_pod_sandbox_metrics(d: Arc<Daemon>) -> Result<v1::ListPodSandboxMetricsResponse, Status> {
    let req = v1::ListPodSandboxStatsRequest { filter: None };
    let stats = list_pod_sandbox_stats(d, req).await?.stats;
    Ok(v1::ListPodSandboxMetricsResponse { pod_metrics: stats.iter().map(pod_metrics).collect() })
}

/// CheckpointContainer: never done. Without CRIU it cannot be (containerd
/// fails the same way, naming CRIU); with it, berthd does not checkpoint
/// yet. FAILED_PRECONDITION either way, never a success.
pub fn checkpoint(req: &v1::CheckpointContainerRequest) -> Status {
    let criu = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|dir| dir.join("criu").is_file()))
        .unwrap_or(false);
    if criu {
        Status::unimplemented(format!(
            "CheckpointContainer {}: berthd does not checkpoint containers yet (criu is installed)",
            req.container_id
        ))
    } else {
        Status::failed_precondition(format!(
            "CheckpointContainer {}: CRIU is not installed on this host (no criu on PATH): berthd cannot checkpoint",
            req.container_id
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_counters_are_read_by_column_and_loopback_is_left_out() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
 lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  \
 eth0:    1500      10    2    0    0     0          0         0      900       7    3    0    0     0       0          0\n";
        let want = Iface { name: "eth0".into(), rx_bytes: 1500, rx_errors: 2, tx_bytes: 900, tx_errors: 3 };
        assert_eq!(parse_net_dev(text), vec![want]);
    }

    #[test]
    fn every_metric_given_has_a_descriptor_with_as_many_label_keys() {
        let stats = v1::PodSandboxStats {
            attributes: Some(v1::PodSandboxAttributes { id: "p".into(), ..Default::default() }),
            linux: Some(v1::LinuxPodSandboxStats {
                network: Some(v1::NetworkUsage {
                    interfaces: vec![v1::NetworkInterfaceUsage { name: "eth0".into(), ..Default::default() }],
                    ..Default::default()
                }),
                containers: vec![v1::ContainerStats {
                    attributes: Some(v1::ContainerAttributes { id: "c".into(), ..Default::default() }),
                    cpu: Some(v1::CpuUsage { usage_core_nano_seconds: val(3_500_000_000), ..Default::default() }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            windows: None,
        };
        let m = pod_metrics(&stats);
        let descriptors = metric_descriptors().descriptors;
        let all = m.metrics.iter().chain(m.container_metrics.iter().flat_map(|c| &c.metrics));
        let mut names = Vec::new();
        for metric in all {
            let d = descriptors.iter().find(|d| d.name == metric.name).expect("a descriptor");
            assert_eq!(d.label_keys.len(), metric.label_values.len(), "{}", metric.name);
            names.push(metric.name.clone());
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), descriptors.len(), "every descriptor is served");
        let cpu = &m.container_metrics[0].metrics[0];
        assert_eq!((cpu.name.as_str(), cpu.value.as_ref().unwrap().value), ("container_cpu_usage_seconds_total", 3));
    }
}
