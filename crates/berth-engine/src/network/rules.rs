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
