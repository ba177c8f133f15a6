//! What a pod needs beyond an ordinary container, for berthd's CRI pods
//! (the engine knows no CRI types): the namespaces a pod's members share
//! with its infra container ([`PodSettings`]), the pod's files (hosts,
//! resolv.conf, hostname) made once and bound into every member, spec
//! settings docker's flags do not have ([`SpecOverrides`]), and the pod's
//! network: an operator's CNI conflist attached to the infra container's
//! pinned namespace with CNI_ARGS and capability args
//! ([`Engine::attach_pod_network`]), as containerd's CRI plugin does.
//!
//! The attachment is recorded before ADD (conflist, args, ports) and after
//! it (the result) under `ROOT/pod-networks/ID.json` (kept across a
//! reboot, as the IPAM leases are, like libcni's cache), so DEL can always
//! be run with what ADD had, also after an ADD killed half-way, and after
//! the operator changed the conf dir. Removing the container (by berthd or
//! `berth rm`) runs that DEL too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;
use crate::engine::Engine;
use crate::network::{CniResult, NetworkError, PortMapping, cni};
use crate::spec::Namespaces;

/// The engine namespace berthd keeps Kubernetes' pods and containers in
/// (containerd's `k8s.io`).
pub const K8S_NAMESPACE: &str = "k8s";

/// What a container of a pod needs beyond [`crate::spec::RunFlags`].
#[derive(Debug, Clone, Default)]
pub struct PodSettings {
    /// The pid, ipc and uts namespaces it shares (or the host's).
    pub namespaces: Namespaces,
    /// A pod member: the infra container's pinned network namespace, joined
    /// instead of making one. None with the pod's own (the infra
    /// container's, made with network "none") or the host's ("host").
    pub join_netns: Option<PathBuf>,
    /// A pod member: the infra container's hosts, resolv.conf and hostname
    /// files, bound instead of its own.
    pub files_of: Option<String>,
    /// The infra container: its resolv.conf from these (empty: the host's).
    pub dns: Dns,
    /// linux.cgroupsPath is `PARENT/ID` under this parent instead of the
    /// engine's (the kubelet's pod cgroup, used as given, as containerd's
    /// cgroupfs driver does).
    pub cgroup_parent: Option<String>,
    pub overrides: SpecOverrides,
    /// The pod's user namespace (see [`crate::userns`]); None: the host's.
    pub userns: Option<crate::userns::PodUserns>,
}

/// A pod's DNS settings (the CRI's DnsConfig).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dns {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

impl Dns {
    /// resolv.conf: the host's when nothing is set, else these (as the
    /// kubelet gives them, complete: containerd writes them as they are).
    pub fn resolv_conf(&self) -> String {
        use crate::network::hosts::{host_resolv_conf, resolv_conf};
        if self.servers.is_empty() && self.searches.is_empty() && self.options.is_empty() {
            return resolv_conf(&host_resolv_conf(), &[], &[]);
        }
        let mut out = String::new();
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for s in &self.servers {
            out.push_str(&format!("nameserver {s}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// Settings of config.json that docker's flags do not reach and the CRI
/// does; each `None`/empty leaves the engine's value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpecOverrides {
    pub cpu_shares: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    /// Raised to this process's own when lower: lowering it needs
    /// CAP_SYS_RESOURCE, which the runtime may lack (containerd clamps the
    /// same way).
    pub oom_score_adj: Option<i32>,
    pub additional_gids: Vec<u32>,
    pub masked_paths: Option<Vec<String>>,
    pub readonly_paths: Option<Vec<String>>,
    pub annotations: BTreeMap<String, String>,
    /// The pod's sysctls (net.*, kernel.shm*...): set in the namespaces its
    /// containers share.
    pub sysctls: BTreeMap<String, String>,
    /// Host devices made in the container and allowed by its device cgroup.
    pub devices: Vec<Device>,
    /// linux.rootfsPropagation: "rshared" when a mount is bidirectional,
    /// "rslave" when one receives from the host (as containerd sets it),
    /// so the container's copies of host mounts stay in their peer groups.
    pub rootfs_propagation: Option<String>,
    /// The CRI's extras (rro mounts, the groups policy, hugepages,
    /// unified): see [`crate::spec::cri`].
    pub cri: crate::spec::cri::CriOverrides,
}

/// A host device node as it appears in a container (the CRI's Device).
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    /// Where in the container.
    pub path: String,
    /// 'c' or 'b'.
    pub kind: char,
    pub major: i64,
    pub minor: i64,
    pub file_mode: u32,
    /// The cgroup's access: some of "rwm".
    pub permissions: String,
}

impl Device {
    /// The device node `host` as `path` in the container; an error when
    /// `host` is not a character or block device, or `permissions` is not
    /// made of r, w and m.
    pub fn from_host(host: &Path, path: &str, permissions: &str) -> std::io::Result<Device> {
        use nix::sys::stat::{SFlag, major, minor, stat};
        let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, why);
        if !path.starts_with('/') {
            return Err(invalid(format!("device path {path:?} in the container must be absolute")));
        }
        let permissions = if permissions.is_empty() { "rwm" } else { permissions };
        if !permissions.chars().all(|c| "rwm".contains(c)) {
            return Err(invalid(format!("device permissions {permissions:?}: use r, w and m")));
        }
        let st = stat(host).map_err(std::io::Error::from)?;
        let kind = match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFCHR => 'c',
            SFlag::S_IFBLK => 'b',
            _ => return Err(invalid(format!("{} is not a device node", host.display()))),
        };
        Ok(Device {
            path: path.to_owned(),
            kind,
            major: major(st.st_rdev) as i64,
            minor: minor(st.st_rdev) as i64,
            file_mode: st.st_mode & 0o7777,
            permissions: permissions.to_owned(),
        })
    }
}

impl SpecOverrides {
    pub(crate) fn apply(&self, spec: &mut oci_spec::runtime::Spec) {
        if let Some(linux) = spec.linux_mut() {
            let mut res = linux.resources().clone().unwrap_or_default();
            if self.cpu_shares.is_some() || self.cpuset_cpus.is_some() || self.cpuset_mems.is_some() {
                let mut cpu = res.cpu().clone().unwrap_or_default();
                if let Some(s) = self.cpu_shares.filter(|s| *s > 0) {
                    cpu.set_shares(Some(s));
                }
                if let Some(c) = self.cpuset_cpus.as_ref().filter(|c| !c.is_empty()) {
                    cpu.set_cpus(Some(c.clone()));
                }
                if let Some(m) = self.cpuset_mems.as_ref().filter(|m| !m.is_empty()) {
                    cpu.set_mems(Some(m.clone()));
                }
                res.set_cpu(Some(cpu));
            }
            linux.set_resources(Some(res));
            if let Some(m) = &self.masked_paths {
                linux.set_masked_paths(Some(m.clone()));
            }
            if let Some(r) = &self.readonly_paths {
                linux.set_readonly_paths(Some(r.clone()));
            }
            self.apply_devices(linux);
            if let Some(p) = &self.rootfs_propagation {
                linux.set_rootfs_propagation(Some(p.clone()));
            }
            if !self.sysctls.is_empty() {
                let mut all = linux.sysctl().clone().unwrap_or_default();
                all.extend(self.sysctls.iter().map(|(k, v)| (k.clone(), v.clone())));
                linux.set_sysctl(Some(all));
            }
        }
        if let Some(process) = spec.process_mut() {
            if let Some(adj) = self.oom_score_adj {
                process.set_oom_score_adj(Some(clamp_oom_score_adj(adj)));
            }
            if self.cri.groups_policy.is_some() {
                self.cri.apply_groups(process, &self.additional_gids);
            } else if !self.additional_gids.is_empty() {
                let mut user = process.user().clone();
                let mut gids = user.additional_gids().clone().unwrap_or_default();
                for g in &self.additional_gids {
                    if !gids.contains(g) {
                        gids.push(*g);
                    }
                }
                user.set_additional_gids(Some(gids));
                process.set_user(user);
            }
        }
        self.cri.apply(spec);
        if !self.annotations.is_empty() {
            let mut a = spec.annotations().clone().unwrap_or_default();
            a.extend(self.annotations.iter().map(|(k, v)| (k.clone(), v.clone())));
            spec.set_annotations(Some(a));
        }
    }
}

impl SpecOverrides {
    fn apply_devices(&self, linux: &mut oci_spec::runtime::Linux) {
        use oci_spec::runtime::{LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType};
        let mut nodes = linux.devices().clone().unwrap_or_default();
        let mut res = linux.resources().clone().unwrap_or_default();
        let mut rules = res.devices().clone().unwrap_or_default();
        for d in &self.devices {
            let typ = if d.kind == 'b' { LinuxDeviceType::B } else { LinuxDeviceType::C };
            let node = LinuxDeviceBuilder::default()
                .path(&d.path)
                .typ(typ)
                .major(d.major)
                .minor(d.minor)
                .file_mode(d.file_mode)
                .uid(0u32)
                .gid(0u32)
                .build();
            let rule = LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(typ)
                .major(d.major)
                .minor(d.minor)
                .access(&d.permissions)
                .build();
            // Both builders have every field set: they cannot fail.
            if let (Ok(node), Ok(rule)) = (node, rule) {
                nodes.push(node);
                rules.push(rule);
            }
        }
        if !self.devices.is_empty() {
            linux.set_devices(Some(nodes));
            res.set_devices(Some(rules));
            linux.set_resources(Some(res));
        }
    }
}

/// `adj` within the kernel's range, and no lower than this process's own.
fn clamp_oom_score_adj(adj: i32) -> i32 {
    let own = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(-1000);
    adj.clamp(-1000, 1000).max(own)
}

/// The network of a pod: an operator's conflist (`name` and `plugins`),
/// attached to the infra container's namespace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodNetwork {
    pub conflist: Value,
    pub plugin_dirs: Vec<PathBuf>,
    /// CNI_ARGS, e.g. K8S_POD_NAMESPACE, K8S_POD_NAME.
    pub args: Vec<(String, String)>,
    /// Given to plugins with the `portMappings` capability (portmap).
    pub ports: Vec<PortMapping>,
    /// Set once ADD succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<CniResult>,
}

impl PodNetwork {
    /// A conflist file: a `.conflist`, or a single-plugin `.conf`/`.json`
    /// made a list of one, as libcni does.
    pub fn load(path: &Path, plugin_dirs: Vec<PathBuf>) -> Result<PodNetwork, NetworkError> {
        let bad = |why: String| NetworkError::BadConfig(format!("{}: {why}", path.display()));
        let text = std::fs::read(path).map_err(|e| NetworkError::Io { what: "read", path: path.into(), source: e })?;
        let mut conf: Value = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        if conf.get("plugins").is_none() {
            let list = serde_json::json!({
                "cniVersion": conf["cniVersion"].clone(),
                "name": conf["name"].clone(),
                "plugins": [conf.clone()],
            });
            conf = list;
        }
        if conf["name"].as_str().is_none_or(str::is_empty) {
            return Err(bad("the network config has no name".into()));
        }
        Ok(PodNetwork { conflist: conf, plugin_dirs, args: Vec::new(), ports: Vec::new(), result: None })
    }

    fn name(&self) -> &str {
        self.conflist["name"].as_str().unwrap_or("")
    }
}

impl Engine {
    /// Where a container's network namespace is pinned (the path a pod's
    /// members and its port-forwards join).
    pub fn netns_path(&self, id: &str) -> PathBuf {
        self.run_dir(id).join("netns")
    }

    fn pod_network_record(&self, id: &str) -> PathBuf {
        self.root.join("pod-networks").join(format!("{id}.json"))
    }

    /// CNI ADD of `net` on container `id`'s pinned namespace as eth0; the
    /// result. Recorded before and after, so [`Engine::detach_pod_network`]
    /// undoes it (also a half-done one); a failed ADD is undone here.
    pub fn attach_pod_network(&self, id: &str, mut net: PodNetwork) -> Result<CniResult, Error> {
        let record = self.pod_network_record(id);
        write_record(&record, &net)?;
        let netns = self.netns_path(id);
        let rc = crate::network::runtime_config(&net.ports);
        let inv = invocation(&net, id, &netns, &rc);
        let added = cni::add(&net.conflist, &inv);
        let result = match added {
            Ok(r) => r,
            Err(e) => {
                if crate::network::del_checked(&net.conflist, &inv, None, net.name(), &net.ports).is_ok() {
                    let _ = std::fs::remove_file(&record);
                }
                return Err(attach_error(id, &net, e));
            }
        };
        net.result = Some(result.clone());
        write_record(&record, &net)?;
        Ok(result)
    }

    /// CNI DEL of what [`Engine::attach_pod_network`] recorded for `id`,
    /// with the same conflist, args and ports; nothing recorded is nothing
    /// to do (a second call succeeds).
    pub fn detach_pod_network(&self, id: &str) -> Result<(), Error> {
        let record = self.pod_network_record(id);
        let net: PodNetwork = match std::fs::read(&record) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                attach_error(id, &PodNetwork::empty(), NetworkError::BadConfig(format!("{}: {e}", record.display())))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::Io { what: "read", path: record, source: e }),
        };
        let netns = self.netns_path(id);
        // A namespace already gone: DEL without one (the veth went with it).
        let netns = if netns.exists() { netns } else { PathBuf::new() };
        let rc = crate::network::runtime_config(&net.ports);
        let inv = invocation(&net, id, &netns, &rc);
        crate::network::del_checked(&net.conflist, &inv, net.result.as_ref(), net.name(), &net.ports)
            .map_err(|e| Error::Detach { id: id.to_owned(), network: net.name().to_owned(), source: Box::new(e) })?;
        match std::fs::remove_file(&record) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::Io { what: "remove", path: record, source: e })
            }
            _ => Ok(()),
        }
    }

    /// What [`Engine::attach_pod_network`] got for `id`, if it is attached.
    pub fn pod_network(&self, id: &str) -> Option<PodNetwork> {
        serde_json::from_slice(&std::fs::read(self.pod_network_record(id)).ok()?).ok()
    }
}

/// New CPU and memory limits for a container (the CRI's
/// UpdateContainerResources); `None`/0 leaves a value as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceUpdate {
    pub memory_limit: Option<i64>,
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    /// linux.resources.hugepageLimits (page size as "2MB", bytes).
    pub hugepage_limits: Vec<(String, u64)>,
    /// linux.resources.unified (cgroup v2 file -> value).
    pub unified: BTreeMap<String, String>,
}

impl ResourceUpdate {
    /// Merged into `res`.
    fn merge(&self, res: &mut oci_spec::runtime::LinuxResources) {
        if let Some(limit) = self.memory_limit {
            let mut m = (*res.memory()).unwrap_or_default();
            m.set_limit(Some(limit));
            res.set_memory(Some(m));
        }
        let mut cpu = res.cpu().clone().unwrap_or_default();
        let before = cpu.clone();
        cpu.set_shares(self.cpu_shares.or(cpu.shares()));
        cpu.set_quota(self.cpu_quota.or(cpu.quota()));
        cpu.set_period(self.cpu_period.or(cpu.period()));
        cpu.set_cpus(self.cpuset_cpus.clone().or(cpu.cpus().clone()));
        cpu.set_mems(self.cpuset_mems.clone().or(cpu.mems().clone()));
        if cpu != before {
            res.set_cpu(Some(cpu));
        }
        crate::spec::cri::merge_hugepages_and_unified(res, &self.hugepage_limits, &self.unified);
    }
}

impl Engine {
    /// Changes a container's CPU and memory limits: in its config.json (a
    /// restart keeps them) and, when it runs, in its cgroup through the
    /// OCI runtime's `update`.
    pub fn update_resources(&self, id: &str, update: &ResourceUpdate) -> Result<(), Error> {
        if update.memory_limit.is_some_and(|m| m < crate::spec::MIN_MEMORY) {
            return Err(crate::spec::SpecError::MemoryTooLow.into());
        }
        let rec = self.refresh(&self.containers()?.get(id)?);
        let config = self.run_dir(&rec.id).join("config.json");
        let io = |what: &'static str| {
            let path = config.clone();
            move |e: oci_spec::OciSpecError| Error::Io { what, path, source: std::io::Error::other(e.to_string()) }
        };
        let mut spec = oci_spec::runtime::Spec::load(&config).map_err(io("read"))?;
        let mut res = spec.linux().as_ref().and_then(|l| l.resources().clone()).unwrap_or_default();
        update.merge(&mut res);
        if let Some(linux) = spec.linux_mut() {
            linux.set_resources(Some(res.clone()));
        }
        spec.save(&config).map_err(io("write"))?;
        if matches!(rec.status, crate::store::Status::Running | crate::store::Status::Paused) {
            let mut json = serde_json::to_value(&res).unwrap_or_default();
            // The device rules stay as they are: only limits change.
            if let Some(o) = json.as_object_mut() {
                o.remove("devices");
            }
            self.oci_runtime_of(&rec).update(&rec.id, &json)?;
        }
        Ok(())
    }
}

impl PodNetwork {
    fn empty() -> PodNetwork {
        PodNetwork { conflist: Value::Null, plugin_dirs: Vec::new(), args: Vec::new(), ports: Vec::new(), result: None }
    }
}

fn invocation<'a>(
    net: &'a PodNetwork,
    id: &'a str,
    netns: &'a Path,
    rc: &'a serde_json::Map<String, Value>,
) -> cni::Invocation<'a> {
    cni::Invocation {
        plugin_dirs: &net.plugin_dirs,
        container_id: id,
        netns,
        ifname: "eth0",
        runtime_config: rc,
        args: &net.args,
    }
}

fn attach_error(id: &str, net: &PodNetwork, e: NetworkError) -> Error {
    Error::Attach { id: id.to_owned(), network: net.name().to_owned(), source: Box::new(e) }
}

fn write_record(path: &Path, net: &PodNetwork) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(|e| Error::Io { what: "create", path: dir.to_owned(), source: e })?;
    let data = serde_json::to_vec(net).unwrap_or_default();
    berth_fs::write_atomic_durable(path, &data, 0o600).map_err(|e| Error::Io {
        what: "write",
        path: path.to_owned(),
        source: e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_config_becomes_resolv_conf_as_given() {
        let d = Dns {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into(), "svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            d.resolv_conf(),
            "search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
    }

    #[test]
    fn a_single_plugin_conf_becomes_a_list_and_a_nameless_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("10-x.conf");
        std::fs::write(&p, r#"{"cniVersion":"1.0.0","name":"x","type":"bridge"}"#).unwrap();
        let n = PodNetwork::load(&p, Vec::new()).unwrap();
        assert_eq!(n.conflist["plugins"][0]["type"], "bridge");
        assert_eq!(n.name(), "x");
        std::fs::write(&p, r#"{"cniVersion":"1.0.0","plugins":[]}"#).unwrap();
        let e = PodNetwork::load(&p, Vec::new()).unwrap_err();
        assert!(e.to_string().contains("no name"), "{e}");
    }

    #[test]
    fn oom_score_adj_is_not_lowered_below_our_own() {
        let own: i32 = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap().trim().parse().unwrap();
        assert_eq!(clamp_oom_score_adj(-2000), own.max(-1000));
        assert_eq!(clamp_oom_score_adj(2000), 1000);
    }
}
