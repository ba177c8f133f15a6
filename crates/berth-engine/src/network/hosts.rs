//! The /etc/hosts and /etc/resolv.conf a container gets, as docker and
//! podman write them. Containers on a user network find each other by name
//! through /etc/hosts: the engine rewrites the file of every container on
//! the network when one joins or leaves (podman without a DNS plugin does
//! the same), so no resolver daemon is needed.

use std::net::Ipv4Addr;

use crate::Error;
use crate::engine::Engine;
use crate::store::ContainerRecord;

/// A name the container should resolve.
#[derive(Debug, Clone, PartialEq)]
pub struct HostEntry {
    pub address: Ipv4Addr,
    /// The first is the canonical name, the rest aliases.
    pub names: Vec<String>,
}

/// /etc/hosts: loopback, then the container itself, then `peers`, then
/// the user's `--add-host` entries (`extra`), as docker orders them.
pub fn hosts_file(own: Option<&HostEntry>, peers: &[HostEntry], extra: &[HostEntry]) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for e in own.into_iter().chain(peers).chain(extra) {
        if !e.names.is_empty() {
            out.push_str(&format!("{}\t{}\n", e.address, e.names.join(" ")));
        }
    }
    out
}

/// /etc/resolv.conf from the host's: nameservers on loopback cannot be
/// reached from the container's namespace, so they are dropped (with
/// systemd-resolved's stub, its upstream file is the better source, which
/// the caller passes instead). With no nameserver left, the container gets
/// none rather than a public resolver the machine may not be allowed to
/// use; `dns` (docker's --dns) replaces the host's servers.
pub fn resolv_conf(host: &str, dns: &[String], search: &[String]) -> String {
    let mut servers = Vec::new();
    let mut rest = Vec::new();
    for line in host.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(addr) = words.next() {
                    let loopback = addr.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback());
                    if !loopback {
                        servers.push(addr.to_owned());
                    }
                }
            }
            Some("search" | "domain") if !search.is_empty() => {}
            Some(_) => rest.push(line.trim().to_owned()),
            None => {}
        }
    }
    let servers = if dns.is_empty() { servers } else { dns.to_vec() };
    let mut out = String::new();
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    for line in rest.iter().filter(|l| !l.starts_with('#')) {
        out.push_str(line);
        out.push('\n');
    }
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    out
}

/// The host's resolv.conf to start from: systemd-resolved's upstream list
/// when the host points at its stub.
pub fn host_resolv_conf() -> String {
    let main = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if main.lines().any(|l| l.trim() == "nameserver 127.0.0.53")
        && let Ok(upstream) = std::fs::read_to_string("/run/systemd/resolve/resolv.conf")
    {
        return upstream;
    }
    main
}

/// Keeping the hosts files of the containers on one user network in step
/// as containers join and leave it.
impl Engine {
    /// The other containers on a user network, by name and short id, as
    /// their records say (docker resolves them with its embedded DNS; the
    /// hosts files do it here, see network::hosts).
    pub(crate) fn peers(&self, network: &str, id: &str) -> Result<Vec<HostEntry>, Error> {
        let store = self.containers()?;
        let mut out = Vec::new();
        for peer in self.networks().endpoints(network)? {
            let Ok(r) = store.get(&peer) else { continue };
            if r.id != id
                && !out.iter().any(|e: &HostEntry| e.names.get(1).is_some_and(|n| r.id.starts_with(n.as_str())))
                && let Some(e) = self.entry_on(&r, network)
            {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Adds `entry` to the hosts file of each peer. In place: the file is
    /// bind-mounted into the running container, and a rename would leave
    /// the container with the old inode.
    pub(crate) fn announce(&self, peers: &[HostEntry], entry: &HostEntry) {
        use std::io::Write as _;
        let line = format!("{}\t{}\n", entry.address, entry.names.join(" "));
        for p in peers {
            let Some(id) = p.names.get(1) else { continue };
            let Ok(rec) = self.containers().and_then(|s| Ok(s.get(id)?)) else { continue };
            let path = self.container_dirs(&rec.id).1.join("hosts");
            if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&path) {
                let _ = f.write_all(line.as_bytes());
            }
        }
    }

    /// Takes the container's lines out of its peers' hosts files.
    pub(crate) fn withdraw(&self, network: &str, rec: &ContainerRecord) {
        let Ok(peers) = self.peers(network, &rec.id) else { return };
        let Some(own) = self.entry_on(rec, network) else { return };
        let own = format!("{}\t{} ", own.address, rec.name);
        for p in &peers {
            let Some(id) = p.names.get(1) else { continue };
            let Ok(peer) = self.containers().and_then(|s| Ok(s.get(id)?)) else { continue };
            let path = self.container_dirs(&peer.id).1.join("hosts");
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            let kept: String = text.lines().filter(|l| !l.starts_with(&own)).map(|l| format!("{l}\n")).collect();
            // Truncate and rewrite the same inode (see announce).
            let _ = std::fs::write(&path, kept);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ip: [u8; 4], names: &[&str]) -> HostEntry {
        HostEntry { address: ip.into(), names: names.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn hosts_lists_loopback_self_peers_then_extras() {
        let own = entry([10, 77, 1, 2], &["3f2a9c1b7d4e", "web"]);
        let text = hosts_file(Some(&own), &[entry([10, 77, 1, 3], &["db"])], &[entry([192, 0, 2, 1], &["extra"])]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "127.0.0.1\tlocalhost");
        assert_eq!(&lines[lines.len() - 3..], ["10.77.1.2\t3f2a9c1b7d4e web", "10.77.1.3\tdb", "192.0.2.1\textra"]);
    }

    #[test]
    fn resolv_conf_drops_loopback_servers_and_honours_dns_and_search() {
        let host = "# generated\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch corp.example\noptions edns0\n";
        assert_eq!(resolv_conf(host, &[], &[]), "search corp.example\noptions edns0\nnameserver 192.0.2.53\n");
        assert_eq!(
            resolv_conf(host, &["198.51.100.1".into()], &["a.example".into()]),
            "search a.example\noptions edns0\nnameserver 198.51.100.1\n"
        );
        assert_eq!(resolv_conf("nameserver 127.0.0.1\nnameserver ::1\n", &[], &[]), "");
    }
}
