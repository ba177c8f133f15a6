//! `network connect` and `disconnect`: one more CNI attachment in a
//! container's network namespace (eth1, eth2 ...), or one less, for
//! created and running containers alike (the namespace is pinned from
//! create to rm). The container's record lists the connections, so `rm`
//! detaches them all; the hosts files of the containers on the network
//! are kept in step (see [`super::hosts`]), aliases included.

use std::path::Path;

use super::DEFAULT_NETWORK;
use super::hosts::HostEntry;
use crate::Error;
use crate::engine::Engine;
use crate::store::{Connection, ContainerRecord};

impl Engine {
    /// `network create`, with docker's labels; its `create` event.
    pub fn create_network(
        &self,
        name: &str,
        subnet: Option<&str>,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<super::Network, super::NetworkError> {
        let net = self.networks().create_labelled(name, subnet, labels)?;
        self.named_event("network", "create", name, &[]);
        Ok(net)
    }

    /// `network rm`: refused while containers are attached; its `destroy`
    /// event.
    pub fn remove_network(&self, name: &str) -> Result<(), super::NetworkError> {
        self.networks().remove(name)?;
        self.named_event("network", "destroy", name, &[]);
        Ok(())
    }

    /// `network connect NETWORK CONTAINER [--alias A]...`: attaches the
    /// container on its next free interface; `network` event `connect`.
    pub fn connect(&self, network: &str, key: &str, aliases: &[String]) -> Result<ContainerRecord, Error> {
        check_aliases(aliases)?;
        let store = self.containers()?;
        let id = store.get(key)?.id;
        let (_lock, rec) = self.lock_record(&id)?;
        let nets = self.networks();
        let net = if network == DEFAULT_NETWORK { nets.ensure_default()? } else { nets.get(network)? };
        if matches!(rec.config.network.as_str(), "host") || rec.namespace == crate::pod::K8S_NAMESPACE {
            return Err(Error::Endpoint(
                "container cannot be disconnected from host network or connected to host network".into(),
            ));
        }
        let netns = self.run_dir(&rec.id).join("netns");
        if !netns.exists() {
            // Made with `--network none` (its runtime's namespace, not
            // pinned), as docker refuses: only one disconnected from its
            // network (pinned) is `none` and connectable.
            return Err(Error::Endpoint(match rec.config.network.as_str() {
                "none" => "container cannot be connected to multiple networks with one of the networks in private \
                           (none) mode"
                    .into(),
                _ => format!("container {} has no network namespace of its own", rec.name),
            }));
        }
        if connected(&rec, &net.name) {
            return Err(Error::Endpoint(format!(
                "endpoint with name {} already exists in network {}",
                rec.name, net.name
            )));
        }
        // Disconnected from every network (compose disconnects and
        // connects again a container's own): this one becomes its own
        // again, on eth0 with the ports it publishes.
        let own = rec.config.network == "none" && rec.config.networks.is_empty();
        let ifname = if own { "eth0".to_owned() } else { free_ifname(&rec) };
        let ports = if own { rec.config.ports.clone() } else { Vec::new() };
        let a = nets.attach(&net.name, &rec.id, &netns, &ifname, &ports)?;
        let conn =
            Connection { network: net.name.clone(), ifname, address: a.address.to_string(), aliases: aliases.to_vec() };
        let updated = store.update(&rec.id, |r| {
            if own {
                r.config.network = conn.network.clone();
                r.config.address = Some(conn.address.clone());
                r.config.aliases = conn.aliases.clone();
            } else {
                r.config.networks.push(conn.clone());
            }
        });
        let rec = match updated {
            Ok(r) => r,
            Err(e) => {
                let _ = nets.detach(&net.name, &rec.id, Some(&netns), &conn.ifname);
                return Err(e.into());
            }
        };
        let hosts = self.run_dir(&rec.id).join("hosts");
        if own {
            // Its own line, with its new address (see disconnect).
            let hostname = std::fs::read_to_string(self.run_dir(&rec.id).join("hostname")).unwrap_or_default();
            let me = HostEntry { address: a.address, names: vec![hostname.trim().to_owned()] };
            append_lines(&hosts, std::slice::from_ref(&me));
        }
        if net.name != DEFAULT_NETWORK {
            let peers = self.peers(&net.name, &rec.id)?;
            self.announce(&peers, &self.entry_on(&rec, &net.name).unwrap_or_else(|| entry(&rec, &conn)));
            append_lines(&hosts, &peers);
        }
        self.named_event("network", "connect", &net.name, &[("container", rec.id.clone())]);
        Ok(rec)
    }

    /// `network disconnect NETWORK CONTAINER`: the attachment goes (its
    /// DEL runs whatever `force` says: the container is running or not
    /// alike here); `network` event `disconnect`.
    pub fn disconnect(&self, network: &str, key: &str, _force: bool) -> Result<ContainerRecord, Error> {
        let store = self.containers()?;
        let id = store.get(key)?.id;
        let (_lock, rec) = self.lock_record(&id)?;
        let name = if network.is_empty() { DEFAULT_NETWORK } else { network };
        self.networks().get(name).or_else(|e| match name {
            DEFAULT_NETWORK => self.networks().ensure_default(),
            _ => Err(e),
        })?;
        if !connected(&rec, name) {
            return Err(Error::Endpoint(format!("container {} is not connected to network {name}", rec.id)));
        }
        let netns = self.run_dir(&rec.id).join("netns");
        let netns = Some(netns.as_path()).filter(|p| p.exists());
        if name != DEFAULT_NETWORK {
            self.withdraw(name, &rec);
            // And its peers there out of its own hosts file.
            remove_lines(&self.run_dir(&rec.id).join("hosts"), &self.peers(name, &rec.id).unwrap_or_default());
        }
        let rec = if primary(&rec) == name {
            // Its ports stay on the record: a connect gives them back.
            self.networks().detach(name, &rec.id, netns, "eth0")?;
            // Its own line goes with the address (a connect writes the new).
            if let Some(addr) = &rec.config.address {
                remove_address(&self.run_dir(&rec.id).join("hosts"), addr);
            }
            store.update(&rec.id, |r| {
                r.config.network = "none".into();
                r.config.address = None;
                r.config.aliases.clear();
            })?
        } else {
            let ifname = rec.config.networks.iter().find(|c| c.network == name).map(|c| c.ifname.clone());
            self.networks().detach(name, &rec.id, netns, ifname.as_deref().unwrap_or("eth1"))?;
            store.update(&rec.id, |r| r.config.networks.retain(|c| c.network != name))?
        };
        self.named_event("network", "disconnect", name, &[("container", rec.id.clone())]);
        Ok(rec)
    }

    /// Detaches the connections `network connect` made (part of `rm`; the
    /// namespace is gone by then, and the veths with it).
    pub(crate) fn disconnect_all(&self, rec: &ContainerRecord) -> Result<(), Error> {
        for c in &rec.config.networks {
            if c.network != DEFAULT_NETWORK {
                self.withdraw(&c.network, rec);
            }
            self.networks().detach(&c.network, &rec.id, None, &c.ifname).map_err(|source| Error::Detach {
                id: rec.id.clone(),
                network: c.network.clone(),
                source: Box::new(source),
            })?;
            self.named_event("network", "disconnect", &c.network, &[("container", rec.id.clone())]);
        }
        Ok(())
    }

    /// The container's address on `network` and the names it answers to
    /// there: its name, short ID, then its aliases.
    pub fn entry_on(&self, rec: &ContainerRecord, network: &str) -> Option<HostEntry> {
        if primary(rec) == network {
            let address = rec.config.address.as_deref()?.parse().ok()?;
            let mut names = vec![rec.name.clone(), rec.id[..12].to_owned()];
            names.extend(rec.config.aliases.iter().filter(|a| **a != rec.name).cloned());
            return Some(HostEntry { address, names });
        }
        rec.config.networks.iter().find(|c| c.network == network).map(|c| entry(rec, c))
    }
}

/// docker's `NetworkSettings.Networks` of a container: its own network
/// and those it was connected to, each with its address and aliases.
pub fn networks_json(rec: &ContainerRecord) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    let one = |net: &str, addr: &str, aliases: &[String]| {
        serde_json::json!({
            "NetworkID": net, "EndpointID": rec.id, "IPAddress": addr, "IPPrefixLen": 24,
            "Aliases": aliases, "MacAddress": "", "Gateway": "",
        })
    };
    if !matches!(rec.config.network.as_str(), "none" | "host") {
        let addr = rec.config.address.as_deref().unwrap_or_default();
        out.insert(primary(rec).to_owned(), one(primary(rec), addr, &rec.config.aliases));
    }
    for c in &rec.config.networks {
        out.insert(c.network.clone(), one(&c.network, &c.address, &c.aliases));
    }
    serde_json::Value::Object(out)
}

fn entry(rec: &ContainerRecord, c: &Connection) -> HostEntry {
    let mut names = vec![rec.name.clone(), rec.id[..12].to_owned()];
    names.extend(c.aliases.iter().filter(|a| **a != rec.name).cloned());
    HostEntry { address: c.address.parse().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED), names }
}

/// Aliases go into hosts files as they are: host names only (docker's
/// container-name rule), never whitespace or line breaks.
pub fn check_aliases(aliases: &[String]) -> Result<(), Error> {
    match aliases.iter().find(|a| !crate::names::is_valid(a)) {
        Some(bad) => Err(Error::BadAlias(bad.clone())),
        None => Ok(()),
    }
}

/// The network it was made on ("" and "bridge": the default one).
pub(crate) fn primary(rec: &ContainerRecord) -> &str {
    match rec.config.network.as_str() {
        "" | "bridge" => DEFAULT_NETWORK,
        n => n,
    }
}

fn connected(rec: &ContainerRecord, network: &str) -> bool {
    (primary(rec) == network && !matches!(rec.config.network.as_str(), "none" | "host"))
        || rec.config.networks.iter().any(|c| c.network == network)
}

/// eth1, eth2 ...: the first one no connection of the container uses.
fn free_ifname(rec: &ContainerRecord) -> String {
    (1..).map(|i| format!("eth{i}")).find(|n| !rec.config.networks.iter().any(|c| &c.ifname == n)).unwrap_or_default()
}

/// Takes the lines of `peers` out of a hosts file, in place (see
/// [`append_lines`]).
fn remove_lines(path: &Path, peers: &[HostEntry]) {
    let Ok(text) = std::fs::read_to_string(path) else { return };
    let gone: Vec<String> =
        peers.iter().filter_map(|p| p.names.first().map(|n| format!("{}\t{n} ", p.address))).collect();
    let kept: String =
        text.lines().filter(|l| !gone.iter().any(|g| l.starts_with(g.as_str()))).map(|l| format!("{l}\n")).collect();
    if kept.len() != text.len() {
        let _ = std::fs::write(path, kept);
    }
}

/// Takes every line of `address` out of a hosts file, in place.
fn remove_address(path: &Path, address: &str) {
    let Ok(text) = std::fs::read_to_string(path) else { return };
    let prefix = format!("{address}\t");
    let kept: String = text.lines().filter(|l| !l.starts_with(&prefix)).map(|l| format!("{l}\n")).collect();
    if kept.len() != text.len() {
        let _ = std::fs::write(path, kept);
    }
}

/// Appends `peers` to a hosts file in place (it is bind-mounted into the
/// running container: a rename would leave the container the old inode).
fn append_lines(path: &Path, peers: &[HostEntry]) {
    use std::io::Write as _;
    let text: String = peers.iter().map(|p| format!("{}\t{}\n", p.address, p.names.join(" "))).collect();
    if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(path) {
        let _ = f.write_all(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_that_would_write_lines_into_hosts_files_are_refused() {
        check_aliases(&["web".into(), "db-1.internal".into()]).unwrap();
        for bad in ["web\n10.0.0.1 evil", "two words", "", "-x", "a\tb"] {
            assert!(matches!(check_aliases(&[bad.into()]), Err(Error::BadAlias(_))), "{bad:?}");
        }
    }
}
