//! A network's iptables rules, installed once when its bridge appears:
//! masquerade what leaves the subnet for elsewhere, and accept forwarding
//! to and from the bridge (a host with docker has FORWARD's policy at
//! DROP). In chains of berth's own, so they are found and removed whole.
//! `iptables -w` waits for the xtables lock other tools hold.

use std::process::Command;

use super::{Network, NetworkError};

const NAT_CHAIN: &str = "BERTH-POSTROUTING";
const FILTER_CHAIN: &str = "BERTH-FORWARD";

fn iptables(args: &[&str]) -> Result<(), String> {
    let out = Command::new("iptables").arg("-w").args(args).output().map_err(|e| format!("run iptables: {e}"))?;
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()) }
}

/// Adds `rule` to `chain` of `table` unless it is there.
fn ensure(table: &str, chain: &str, rule: &[&str]) -> Result<(), String> {
    let check: Vec<&str> = ["-t", table, "-C", chain].iter().copied().chain(rule.iter().copied()).collect();
    if iptables(&check).is_ok() {
        return Ok(());
    }
    let add: Vec<&str> = ["-t", table, "-A", chain].iter().copied().chain(rule.iter().copied()).collect();
    iptables(&add)
}

/// berth's chains, hooked into the built-in ones.
fn ensure_chains() -> Result<(), String> {
    for (table, chain, hook) in [("nat", NAT_CHAIN, "POSTROUTING"), ("filter", FILTER_CHAIN, "FORWARD")] {
        // -N fails if the chain exists: fine.
        let _ = iptables(&["-t", table, "-N", chain]);
        ensure(table, hook, &["-j", chain])?;
    }
    Ok(())
}

fn nat_rule(net: &Network) -> [&str; 7] {
    ["-s", &net.subnet, "!", "-d", &net.subnet, "-j", "MASQUERADE"]
}

pub fn install(net: &Network) -> Result<(), NetworkError> {
    let fail =
        |msg: String| NetworkError::Plugin { plugin: "iptables".into(), command: "install".into(), code: 0, msg };
    ensure_chains().map_err(fail)?;
    let nat = nat_rule(net);
    ensure("nat", NAT_CHAIN, &nat).map_err(fail)?;
    ensure("filter", FILTER_CHAIN, &["-o", &net.bridge, "-j", "ACCEPT"]).map_err(fail)?;
    ensure("filter", FILTER_CHAIN, &["-i", &net.bridge, "-j", "ACCEPT"]).map_err(fail)?;
    Ok(())
}

/// Removes the network's rules (best effort: a network whose rules are
/// already gone is removed all the same).
pub fn remove(net: &Network) {
    let nat = nat_rule(net);
    let del = |table: &str, chain: &str, rule: &[&str]| {
        let args: Vec<&str> = ["-t", table, "-D", chain].iter().copied().chain(rule.iter().copied()).collect();
        while iptables(&args).is_ok() {}
    };
    del("nat", NAT_CHAIN, &nat);
    del("filter", FILTER_CHAIN, &["-o", &net.bridge, "-j", "ACCEPT"]);
    del("filter", FILTER_CHAIN, &["-i", &net.bridge, "-j", "ACCEPT"]);
}

/// The per-container chain the portmap plugin makes: "CNI-DN-" and the
/// first hex digits of sha512(network name + container id), 28 bytes in
/// all (its `formatChainName`).
fn portmap_chain(network: &str, container_id: &str) -> String {
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha512::digest(format!("{network}{container_id}").as_bytes()));
    format!("CNI-DN-{}", &hash[..21])
}

/// Whether portmap's rules for `container_id` on `network` are (partly)
/// still in the nat table: its chain, or a rule naming the container.
/// portmap's DEL reports success when it finds iptables unusable (its
/// `iptables --version` killed, say) and then leaves them all. Err when
/// the answer cannot be had (the iptables run was killed); a host where
/// iptables cannot list the nat table has no such rules.
pub fn port_forwards_left(network: &str, container_id: &str) -> Result<bool, String> {
    use std::os::unix::process::ExitStatusExt;
    let out = match Command::new("iptables").args(["-w", "-t", "nat", "-S"]).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(format!("run iptables: {e}")),
    };
    if let Some(sig) = out.status.signal() {
        return Err(format!("iptables -t nat -S killed by signal {sig}"));
    }
    if !out.status.success() {
        tracing::debug!("iptables -t nat -S: {}", String::from_utf8_lossy(&out.stderr).trim());
        return Ok(false);
    }
    let chain = portmap_chain(network, container_id);
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().any(|l| l.contains(container_id) || l.split_whitespace().any(|w| w == chain)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn portmap_chains_are_named_as_the_plugin_names_them() {
        // Seen in iptables-save after a portmap ADD on network "bridge".
        let id = "01a02b19cab00fbc91d4d8d4aa5582cd5298e3ae5f0383678c258644384693c9";
        assert_eq!(super::portmap_chain("bridge", id), "CNI-DN-d44670cda2ca7589c24ac");
    }
}
