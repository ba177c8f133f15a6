//! Container networking through the standard CNI plugins (bridge,
//! host-local, portmap, firewall, loopback), as podman and containerd do.
//!
//! Each network is a CNI conflist file in the config directory, so any CNI
//! tool can read it. The default network is docker's `bridge` (device
//! `berth0`, 10.77.0.0/24); `berth network create` adds `berthN` bridges on
//! 10.77.N.0/24. Addresses are private and leave the machine only through
//! masquerading. A container's network namespace is pinned by [`netns`].
//! Each attachment is recorded before its ADD (the ports it publishes) and
//! after it (the result, which DEL gets as libcni gives it), so DEL can
//! always be run, also for an ADD killed half-way, and a host port is
//! published once (see `endpoint`).
//!
//! Speed: per container, only the plugins that do per-container work run
//! (bridge with host-local, and portmap). Masquerading and forwarding are a
//! network's business, not a container's: [`rules`] installs them once per
//! network, as docker does, instead of the bridge plugin's ipMasq and the
//! firewall plugin adding and removing iptables rules for every container
//! (measured here: attach ~40 -> ~15 ms, detach ~100 -> ~10 ms). On detach
//! the namespace goes first and DEL runs without one (the CNI spec allows
//! it): the kernel removes the veth with the namespace, in the background.

pub mod cni;
mod connect;
pub use connect::{check_aliases, networks_json};
mod endpoint;
pub mod hosts;
pub mod netns;
pub mod rules;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub use cni::CniResult;
pub use netns::NetNs;

/// Docker's name for the default network.
pub const DEFAULT_NETWORK: &str = "bridge";
/// The private /16 that berth's networks are cut from, one /24 each.
const POOL: [u8; 2] = [10, 77];
const CNI_VERSION: &str = "1.0.0";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("network {0} not found")]
    NotFound(String),
    #[error("network with name {0} already exists")]
    Exists(String),
    #[error("invalid network name {0:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit")]
    BadName(String),
    #[error("invalid subnet {0:?}: want an IPv4 network like 10.77.5.0/24 (prefix 8 to 30)")]
    BadSubnet(String),
    #[error("subnet {subnet} overlaps network {other}'s {other_subnet}")]
    Overlap { subnet: String, other: String, other_subnet: String },
    #[error("no free subnet left in {}.{}.0.0/16", POOL[0], POOL[1])]
    PoolExhausted,
    #[error("network {0} has active endpoints: remove its containers first")]
    InUse(String),
    #[error("the default network {DEFAULT_NETWORK} cannot be removed")]
    Default,
    #[error("CNI configuration: {0}")]
    BadConfig(String),
    #[error("CNI plugin {plugin:?} not found in {dirs:?} (install containernetworking-plugins)")]
    NoPlugin { plugin: String, dirs: Vec<PathBuf> },
    #[error("run CNI plugin {plugin}")]
    Exec { plugin: String, source: std::io::Error },
    #[error("CNI plugin {plugin} {command} failed (code {code}): {msg}")]
    Plugin { plugin: String, command: String, code: u32, msg: String },
    #[error("CNI plugin {plugin} printed a result berth cannot read: {msg}")]
    BadResult { plugin: String, msg: String },
    #[error("network namespace {}: {what}", path.display())]
    Netns { path: PathBuf, what: String, source: std::io::Error },
    #[error("{what} {}", path.display())]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("invalid port publication {spec:?}: {why}")]
    BadPort { spec: String, why: String },
    /// docker's words, for scripts that look for them.
    #[error("Bind for {addr} failed: port is already allocated")]
    PortAllocated { addr: String },
}

/// A network as `berth network inspect` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    /// The Linux bridge device on the host.
    pub bridge: String,
    /// CIDR, e.g. "10.77.0.0/24".
    pub subnet: String,
    pub gateway: Ipv4Addr,
    /// docker's network labels (compose finds its networks by them),
    /// kept in the conflist under a key of berth's that CNI ignores.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A port published from the host to a container (docker's `-p`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortMapping {
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    /// "tcp" or "udp".
    pub protocol: String,
    /// Empty for every address of the host.
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

impl PortMapping {
    /// docker's `-p [HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTO]`. A port
    /// the host picks (`-p 80`) is not supported: the portmap plugin
    /// needs the host port.
    pub fn parse(spec: &str) -> Result<PortMapping, NetworkError> {
        let bad = |why: &str| NetworkError::BadPort { spec: spec.to_owned(), why: why.to_owned() };
        let (rest, protocol) = match spec.rsplit_once('/') {
            Some((r, p @ ("tcp" | "udp"))) => (r, p),
            Some((_, p)) => return Err(bad(&format!("protocol {p:?} is not tcp or udp"))),
            None => (spec, "tcp"),
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let (host_ip, host, container) = match parts[..] {
            [h, c] => ("", h, c),
            [ip, h, c] => (ip, h, c),
            [_] => return Err(bad("give the host port too (HOST_PORT:CONTAINER_PORT)")),
            _ => return Err(bad("expected [HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTO]")),
        };
        if !host_ip.is_empty() && host_ip.parse::<Ipv4Addr>().is_err() {
            return Err(bad(&format!("{host_ip:?} is not an IPv4 address")));
        }
        let port =
            |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| bad(&format!("{p:?} is not a port")));
        Ok(PortMapping {
            host_port: port(host)?,
            container_port: port(container)?,
            protocol: protocol.to_owned(),
            host_ip: host_ip.to_owned(),
        })
    }
}

/// What attaching a container to a network gave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    pub network: String,
    pub ifname: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub mac: String,
}

/// The networks of one berth installation: conflists in `conf_dir`, IPAM
/// leases and cached results under `state_dir`, plugins in `plugin_dirs`.
#[derive(Debug, Clone)]
pub struct Networks {
    conf_dir: PathBuf,
    state_dir: PathBuf,
    plugin_dirs: Vec<PathBuf>,
}

impl Networks {
    pub fn new(conf_dir: impl Into<PathBuf>, state_dir: impl Into<PathBuf>, plugin_dirs: Vec<PathBuf>) -> Networks {
        Networks { conf_dir: conf_dir.into(), state_dir: state_dir.into(), plugin_dirs }
    }

    /// Debian's and the upstream plugin directories.
    pub fn default_plugin_dirs() -> Vec<PathBuf> {
        vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")]
    }

    fn conf_path(&self, name: &str) -> PathBuf {
        self.conf_dir.join(format!("{name}.conflist"))
    }

    fn results_dir(&self) -> PathBuf {
        self.state_dir.join("results")
    }

    fn result_path(&self, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.results_dir().join(format!("{network}-{container_id}-{ifname}.json"))
    }

    /// The default network, made on first use.
    pub fn ensure_default(&self) -> Result<Network, NetworkError> {
        match self.get(DEFAULT_NETWORK) {
            Err(NetworkError::NotFound(_)) => {}
            other => return other,
        }
        let net = network_for(DEFAULT_NETWORK, "berth0".into(), Ipv4Addr::new(POOL[0], POOL[1], 0, 0), 24);
        match self.write_new(&net) {
            Err(NetworkError::Exists(_)) => self.get(DEFAULT_NETWORK),
            other => other.map(|()| net),
        }
    }

    /// A new bridge network; `subnet` given, or the next free /24 of the
    /// pool. Names and subnets must not clash with existing networks.
    pub fn create(&self, name: &str, subnet: Option<&str>) -> Result<Network, NetworkError> {
        self.create_labelled(name, subnet, Default::default())
    }

    /// [`Networks::create`] with docker's labels.
    pub fn create_labelled(
        &self,
        name: &str,
        subnet: Option<&str>,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<Network, NetworkError> {
        check_name(name)?;
        let existing = self.list()?;
        if existing.iter().any(|n| n.name == name) {
            return Err(NetworkError::Exists(name.into()));
        }
        let (addr, len) = match subnet {
            Some(s) => parse_subnet(s)?,
            None => {
                let free = (1..=255u8).find(|n| {
                    let s = (Ipv4Addr::new(POOL[0], POOL[1], *n, 0), 24);
                    !existing.iter().any(|e| parse_subnet(&e.subnet).is_ok_and(|o| overlaps(s, o)))
                });
                (Ipv4Addr::new(POOL[0], POOL[1], free.ok_or(NetworkError::PoolExhausted)?, 0), 24)
            }
        };
        for e in &existing {
            if parse_subnet(&e.subnet).is_ok_and(|o| overlaps((addr, len), o)) {
                return Err(NetworkError::Overlap {
                    subnet: format!("{addr}/{len}"),
                    other: e.name.clone(),
                    other_subnet: e.subnet.clone(),
                });
            }
        }
        let bridge =
            (1..).map(|i| format!("berth{i}")).find(|b| !existing.iter().any(|e| &e.bridge == b)).unwrap_or_default();
        let net = Network { labels, ..network_for(name, bridge, addr, len) };
        self.write_new(&net)?;
        Ok(net)
    }

    fn write_new(&self, net: &Network) -> Result<(), NetworkError> {
        fn io<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> NetworkError + 'p {
            move |e| NetworkError::Io { what, path: path.to_owned(), source: e }
        }
        std::fs::create_dir_all(&self.conf_dir).map_err(io("create", &self.conf_dir))?;
        let path = self.conf_path(&net.name);
        let text = serde_json::to_vec_pretty(&self.conflist(net)).unwrap_or_default();
        // Unique per writer: two writers of one name (concurrent first
        // uses of the default network) must not share, and so unlink, it.
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self.conf_dir.join(format!(".{}.{}.{seq}.tmp", net.name, std::process::id()));
        std::fs::write(&tmp, text).map_err(io("write", &tmp))?;
        // hard_link, not rename: it fails if another berth made the same
        // network meanwhile, instead of replacing its file.
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(NetworkError::Exists(net.name.clone())),
            Err(e) => Err(io("create", &path)(e)),
        }
    }

    /// The CNI conflist of a network.
    fn conflist(&self, net: &Network) -> Value {
        json!({
            "cniVersion": CNI_VERSION,
            "name": net.name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": net.bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{ "subnet": net.subnet, "gateway": net.gateway.to_string() }]],
                        "routes": [{ "dst": "0.0.0.0/0" }],
                        "dataDir": self.state_dir.join("ipam"),
                    }
                },
                { "type": "portmap", "capabilities": { "portMappings": true } }
            ],
            "berth": { "labels": net.labels },
        })
    }

    pub fn get(&self, name: &str) -> Result<Network, NetworkError> {
        check_name(name)?;
        let path = self.conf_path(name);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(NetworkError::NotFound(name.into())),
            Err(e) => return Err(NetworkError::Io { what: "read", path, source: e }),
        };
        let list: Value =
            serde_json::from_slice(&text).map_err(|e| NetworkError::BadConfig(format!("{}: {e}", path.display())))?;
        network_of(&list).ok_or_else(|| {
            NetworkError::BadConfig(format!("{}: not a berth bridge network (bridge + host-local)", path.display()))
        })
    }

    /// Every network, by name.
    pub fn list(&self) -> Result<Vec<Network>, NetworkError> {
        let entries = match std::fs::read_dir(&self.conf_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(NetworkError::Io { what: "read", path: self.conf_dir.clone(), source: e }),
        };
        let mut nets: Vec<Network> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok()?.strip_suffix(".conflist").map(str::to_owned))
            .filter_map(|name| self.get(&name).ok())
            .collect();
        nets.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(nets)
    }

    /// Removes a network that no container uses, with its bridge device.
    pub fn remove(&self, name: &str) -> Result<(), NetworkError> {
        if name == DEFAULT_NETWORK {
            return Err(NetworkError::Default);
        }
        let net = self.get(name)?;
        if !self.endpoints(name)?.is_empty() {
            return Err(NetworkError::InUse(name.into()));
        }
        let path = self.conf_path(name);
        std::fs::remove_file(&path).map_err(|e| NetworkError::Io { what: "remove", path, source: e })?;
        let _ = std::fs::remove_dir_all(self.state_dir.join("ipam").join(name));
        rules::remove(&net);
        delete_link(&net.bridge);
        Ok(())
    }

    /// Container ids attached to `network` (or being attached: an ADD
    /// under way, or killed, until its DEL).
    pub fn endpoints(&self, network: &str) -> Result<Vec<String>, NetworkError> {
        // NETWORK-ID-IFNAME.json, read from the right: network names may
        // hold '-', container ids and interface names do not.
        Ok(endpoint::records(&self.results_dir())?
            .iter()
            .filter_map(|p| {
                let stem = p.file_name()?.to_str()?.strip_suffix(".json")?;
                let (rest, _ifname) = stem.rsplit_once('-')?;
                let (net, id) = rest.rsplit_once('-')?;
                (net == network).then(|| id.to_owned())
            })
            .collect())
    }

    /// Brings up `lo` in the namespace (every container has it, also with
    /// `--network none`).
    pub fn loopback_up(&self, netns: &Path, container_id: &str) -> Result<(), NetworkError> {
        let list = json!({ "cniVersion": CNI_VERSION, "name": "lo", "plugins": [{ "type": "loopback" }] });
        let none = Map::new();
        let inv = self.invocation(container_id, netns, "lo", &none);
        cni::add(&list, &inv).map(|_| ())
    }

    fn invocation<'a>(
        &'a self,
        container_id: &'a str,
        netns: &'a Path,
        ifname: &'a str,
        runtime_config: &'a Map<String, Value>,
    ) -> cni::Invocation<'a> {
        cni::Invocation { plugin_dirs: &self.plugin_dirs, container_id, netns, ifname, runtime_config, args: &[] }
    }

    /// Attaches the container's namespace to `network` as `ifname`, with
    /// `ports` published: docker's "port is already allocated" if another
    /// attachment has one of them. The ports are recorded before ADD and
    /// the result after it, for [`Networks::detach`]; a failed ADD is
    /// deleted again whole.
    pub fn attach(
        &self,
        network: &str,
        container_id: &str,
        netns: &Path,
        ifname: &str,
        ports: &[PortMapping],
    ) -> Result<Attachment, NetworkError> {
        let net = if network == DEFAULT_NETWORK { self.ensure_default()? } else { self.get(network)? };
        let record = self.result_path(network, container_id, ifname);
        endpoint::reserve(&self.results_dir(), &self.state_dir.join("ports.lock"), &record, ports)?;
        let list = self.conflist(&net);
        let rc = runtime_config(ports);
        let inv = self.invocation(container_id, netns, ifname, &rc);
        let undo = |result: Option<&CniResult>, e: NetworkError| {
            // DEL is idempotent: whatever part of ADD happened is undone.
            if let Err(d) = del_checked(&list, &inv, result, network, ports) {
                tracing::warn!(container_id, network, "undo a failed attach: {d}");
            } else {
                let _ = std::fs::remove_file(&record);
            }
            e
        };
        // The bridge plugin makes the bridge on first use (since boot):
        // that is when the network's own rules go in too.
        let first = nix::net::if_::if_nametoindex(net.bridge.as_str()).is_err();
        let result = cni::add(&list, &inv).map_err(|e| undo(None, e))?;
        if first && let Err(e) = rules::install(&net) {
            return Err(undo(Some(&result), e));
        }
        let done = endpoint::Endpoint { result: Some(result.clone()), ports: ports.to_vec() };
        if let Err(e) = endpoint::write(&record, &done) {
            return Err(undo(Some(&result), e));
        }
        attachment_of(network, ifname, &result)
    }

    /// Undoes [`Networks::attach`]: address lease, published ports, and
    /// the veth if `netns` is given (`None`: the namespace is already gone,
    /// and the veth with it). Always runs DEL, idempotent by the CNI spec,
    /// with the recorded ports and result when there are some: an ADD that
    /// was killed half-way is undone too. Detaching what is not attached is
    /// not an error.
    pub fn detach(
        &self,
        network: &str,
        container_id: &str,
        netns: Option<&Path>,
        ifname: &str,
    ) -> Result<(), NetworkError> {
        let record = self.result_path(network, container_id, ifname);
        let net = match self.get(network) {
            Ok(n) => n,
            // Removed with its leases (and, being removable, its rules).
            Err(NetworkError::NotFound(_)) => {
                let _ = std::fs::remove_file(&record);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let known = endpoint::read(&record).unwrap_or_default();
        let rc = runtime_config(&known.ports);
        let inv = self.invocation(container_id, netns.unwrap_or(Path::new("")), ifname, &rc);
        del_checked(&self.conflist(&net), &inv, known.result.as_ref(), network, &known.ports)?;
        match std::fs::remove_file(&record) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(NetworkError::Io { what: "remove", path: record, source: e })
            }
            _ => Ok(()),
        }
    }
}

/// [`cni::del`], and for an attachment that published ports, a look at
/// the nat table after it: portmap's DEL can report success having done
/// nothing (see [`rules::port_forwards_left`]), so rules it left get one
/// more DEL, and an error if they are still there (the caller then keeps
/// the attachment's record, for a later DEL).
pub(crate) fn del_checked(
    list: &Value,
    inv: &cni::Invocation<'_>,
    result: Option<&CniResult>,
    network: &str,
    ports: &[PortMapping],
) -> Result<(), NetworkError> {
    cni::del(list, inv, result)?;
    if ports.is_empty() {
        return Ok(());
    }
    let left = |msg: String| NetworkError::Plugin { plugin: "portmap".into(), command: "DEL".into(), code: 0, msg };
    if !rules::port_forwards_left(network, inv.container_id).map_err(left)? {
        return Ok(());
    }
    tracing::warn!(container_id = inv.container_id, network, "portmap DEL left the port forwards: once more");
    cni::del(list, inv, result)?;
    match rules::port_forwards_left(network, inv.container_id).map_err(left)? {
        false => Ok(()),
        true => Err(left("it reported success, but the container's port forwards are still in the nat table".into())),
    }
}

/// The runtime values the conflist's plugins ask for: `portMappings`.
pub(crate) fn runtime_config(ports: &[PortMapping]) -> Map<String, Value> {
    let mut rc = Map::new();
    if !ports.is_empty() {
        rc.insert("portMappings".into(), serde_json::to_value(ports).unwrap_or(Value::Null));
    }
    rc
}

fn network_for(name: &str, bridge: String, addr: Ipv4Addr, len: u8) -> Network {
    let gateway = Ipv4Addr::from(u32::from(addr) + 1);
    Network { name: name.into(), bridge, subnet: format!("{addr}/{len}"), gateway, labels: Default::default() }
}

/// Reads a [`Network`] back from its conflist.
fn network_of(list: &Value) -> Option<Network> {
    let bridge = list["plugins"].as_array()?.iter().find(|p| p["type"] == "bridge")?;
    let range = &bridge["ipam"]["ranges"][0][0];
    Some(Network {
        name: list["name"].as_str()?.into(),
        bridge: bridge["bridge"].as_str()?.into(),
        subnet: range["subnet"].as_str()?.into(),
        gateway: range["gateway"].as_str()?.parse().ok()?,
        labels: serde_json::from_value(list["berth"]["labels"].clone()).unwrap_or_default(),
    })
}

fn attachment_of(network: &str, ifname: &str, r: &CniResult) -> Result<Attachment, NetworkError> {
    let idx = r.interfaces.iter().position(|i| i.name == ifname && !i.sandbox.is_empty());
    let ip = r.ips.iter().find(|ip| idx.is_none() || ip.interface == idx).ok_or_else(|| NetworkError::BadResult {
        plugin: "bridge".into(),
        msg: "no IP address in the result".into(),
    })?;
    let bad = |msg: &str| NetworkError::BadResult { plugin: "bridge".into(), msg: format!("{msg}: {}", ip.address) };
    let (addr, len) = ip.address.split_once('/').ok_or_else(|| bad("address without a prefix length"))?;
    Ok(Attachment {
        network: network.into(),
        ifname: ifname.into(),
        address: addr.parse().map_err(|_| bad("not an IPv4 address"))?,
        prefix_len: len.parse().map_err(|_| bad("bad prefix length"))?,
        gateway: ip.gateway.as_deref().and_then(|g| g.parse().ok()),
        mac: idx.map(|i| r.interfaces[i].mac.clone()).unwrap_or_default(),
    })
}

/// Docker's rule for network names.
fn check_name(name: &str) -> Result<(), NetworkError> {
    if crate::names::is_valid(name) { Ok(()) } else { Err(NetworkError::BadName(name.into())) }
}

/// "10.77.5.0/24" → (network address, prefix length); host bits must be 0.
fn parse_subnet(s: &str) -> Result<(Ipv4Addr, u8), NetworkError> {
    let bad = || NetworkError::BadSubnet(s.into());
    let (addr, len) = s.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    if !(8..=30).contains(&len) || u32::from(addr) & !mask(len) != 0 {
        return Err(bad());
    }
    Ok((addr, len))
}

fn mask(len: u8) -> u32 {
    if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) }
}

fn overlaps(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
    let m = mask(a.1.min(b.1));
    u32::from(a.0) & m == u32::from(b.0) & m
}

/// Deletes a network device if it exists (the bridge plugin makes bridges
/// but, by design, never removes them). `ip` is what the plugins' hosts
/// have; a missing device is not an error.
fn delete_link(name: &str) {
    let out = std::process::Command::new("ip").args(["link", "delete", name]).output();
    if let Ok(o) = out
        && !o.status.success()
    {
        let err = String::from_utf8_lossy(&o.stderr);
        if !err.contains("Cannot find device") {
            tracing::warn!("delete bridge {name}: {}", err.trim());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_checked_and_compared() {
        assert_eq!(parse_subnet("10.77.5.0/24").unwrap(), (Ipv4Addr::new(10, 77, 5, 0), 24));
        for bad in ["10.77.5.1/24", "10.77.5.0", "10.77.5.0/31", "x/24", "10.77.5.0/4"] {
            assert!(matches!(parse_subnet(bad), Err(NetworkError::BadSubnet(_))), "{bad}");
        }
        let s = |t| parse_subnet(t).unwrap();
        assert!(overlaps(s("10.77.0.0/16"), s("10.77.9.0/24")));
        assert!(!overlaps(s("10.77.8.0/24"), s("10.77.9.0/24")));
    }

    #[test]
    fn names_follow_dockers_rule() {
        for ok in ["bridge", "my-net", "a.b_c", "9lives"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "-x", "a/b", "../etc", "sp ace"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn networks_are_stored_as_conflists_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let nets = Networks::new(dir.path().join("conf"), dir.path().join("state"), vec![]);
        let def = nets.ensure_default().unwrap();
        assert_eq!((def.bridge.as_str(), def.subnet.as_str()), ("berth0", "10.77.0.0/24"));
        assert_eq!(def.gateway, Ipv4Addr::new(10, 77, 0, 1));
        let a = nets.create("a", None).unwrap();
        assert_eq!((a.bridge.as_str(), a.subnet.as_str()), ("berth1", "10.77.1.0/24"));
        let b = nets.create("b", Some("10.77.9.0/24")).unwrap();
        assert_eq!(b.bridge, "berth2");
        assert!(matches!(nets.create("a", None), Err(NetworkError::Exists(_))));
        assert!(matches!(nets.create("c", Some("10.77.9.128/25")), Err(NetworkError::Overlap { .. })));
        assert_eq!(nets.create("c", None).unwrap().subnet, "10.77.2.0/24");
        let names: Vec<_> = nets.list().unwrap().into_iter().map(|n| n.name).collect();
        assert_eq!(names, ["a", "b", "bridge", "c"]);
        assert_eq!(nets.get("b").unwrap(), b);
        let list: Value = serde_json::from_slice(&std::fs::read(dir.path().join("conf/a.conflist")).unwrap()).unwrap();
        assert_eq!(list["plugins"][0]["type"], "bridge");
        assert_eq!(list["plugins"][1]["capabilities"]["portMappings"], true);
        assert!(matches!(nets.remove(DEFAULT_NETWORK), Err(NetworkError::Default)));
        nets.remove("a").unwrap();
        assert!(matches!(nets.get("a"), Err(NetworkError::NotFound(_))));
    }
}

#[cfg(test)]
mod endpoint_tests {
    use super::*;

    #[test]
    fn endpoints_of_a_network_are_not_those_of_one_whose_name_extends_it() {
        let dir = tempfile::tempdir().unwrap();
        let nets = Networks::new(dir.path().join("conf"), dir.path().join("state"), vec![]);
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        endpoint::write(&nets.result_path("my", &a, "eth0"), &Default::default()).unwrap();
        endpoint::write(&nets.result_path("my-net", &b, "eth0"), &Default::default()).unwrap();
        assert_eq!(nets.endpoints("my").unwrap(), [a]);
        assert_eq!(nets.endpoints("my-net").unwrap(), [b]);
        assert!(nets.endpoints("net").unwrap().is_empty());
    }
}

#[cfg(test)]
mod port_tests {
    use super::PortMapping;

    #[test]
    fn publish_specs_parse_as_docker_reads_them() {
        let p = PortMapping::parse("8080:80").unwrap();
        assert_eq!((p.host_port, p.container_port, p.protocol.as_str(), p.host_ip.as_str()), (8080, 80, "tcp", ""));
        let p = PortMapping::parse("127.0.0.1:53:5353/udp").unwrap();
        assert_eq!(
            (p.host_port, p.container_port, p.protocol.as_str(), p.host_ip.as_str()),
            (53, 5353, "udp", "127.0.0.1")
        );
        for bad in ["80", "0:80", "a:80", "80:80/sctp", "1.2.3:80:80", "1:2:3:4"] {
            assert!(PortMapping::parse(bad).is_err(), "{bad}");
        }
    }
}
