//! linux.netDevices: host network interfaces moved into the container's
//! network namespace (renamed when `name` is given) during `create`, and
//! moved back under their own names on `delete` while that namespace still
//! exists, as runc 1.3 does.
//!
//! A move drops the interface's addresses and takes it down, so its
//! permanent addresses (IFA_F_PERMANENT, as runtime-spec asks) and its up
//! state are carried over. Everything goes through rtnetlink; the runtime
//! is single-threaded, so it can step into the container's network
//! namespace (setns) for the part that must happen there, and back.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use nix::sched::{CloneFlags, setns};
use oci_spec::runtime::LinuxNetDevice;
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

/// An interface `create` moved, as kept in the container's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    /// Its name in the runtime's network namespace.
    pub host: String,
    /// Its name in the container's.
    pub container: String,
}

/// linux.netDevices, before anything is done: valid names, no two devices
/// with one name in the container, and a network namespace to move into.
pub fn check(devices: &HashMap<String, LinuxNetDevice>, has_netns: bool) -> std::result::Result<(), String> {
    if devices.is_empty() {
        return Ok(());
    }
    if !has_netns {
        return Err("linux.netDevices: the container has no network namespace of its own to move devices into".into());
    }
    let mut targets = HashMap::new();
    for (host, d) in devices {
        check_name(host).map_err(|why| format!("linux.netDevices: {host:?}: {why}"))?;
        let target = d.name().as_deref().filter(|n| !n.is_empty()).unwrap_or(host);
        check_name(target).map_err(|why| format!("linux.netDevices.{host}.name: {target:?}: {why}"))?;
        if let Some(other) = targets.insert(target.to_string(), host) {
            return Err(format!("linux.netDevices: {other:?} and {host:?} would both be {target:?} in the container"));
        }
    }
    Ok(())
}

/// The kernel's rules for an interface name (dev_valid_name).
fn check_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() || name.len() > 15 {
        return Err("an interface name has 1 to 15 bytes");
    }
    if name == "." || name == ".." || name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        return Err("not a valid interface name");
    }
    Ok(())
}

/// Moves the devices into the network namespace `netns` (in a fixed
/// order). On failure, those already moved are moved back.
pub fn move_in(devices: &HashMap<String, LinuxNetDevice>, netns: BorrowedFd<'_>) -> Result<Vec<Moved>> {
    let mut names: Vec<(&String, &LinuxNetDevice)> = devices.iter().collect();
    names.sort_by_key(|(host, _)| *host);
    let own = own_netns()?;
    let mut moved = Vec::new();
    for (host, d) in names {
        let target = d.name().clone().filter(|n| !n.is_empty()).unwrap_or_else(|| host.clone());
        let m = Moved { host: host.clone(), container: target };
        match transfer(&m.host, &m.container, own.as_fd(), netns) {
            Ok(()) => moved.push(m),
            Err(e) => {
                move_back(&moved, netns);
                return Err(Error::Container(format!("linux.netDevices: {host:?}: {e}")));
            }
        }
    }
    Ok(moved)
}

/// Moves the devices back from `netns` into the runtime's namespace under
/// their host names. Best effort: a device that is gone is logged.
pub fn move_back(moved: &[Moved], netns: BorrowedFd<'_>) {
    let Ok(own) = own_netns() else { return };
    for m in moved {
        if let Err(e) = transfer(&m.container, &m.host, netns, own.as_fd()) {
            tracing::warn!("linux.netDevices: cannot move {:?} back to the host as {:?}: {e}", m.container, m.host);
        }
    }
}

fn own_netns() -> Result<OwnedFd> {
    let f = std::fs::File::open("/proc/thread-self/ns/net").step(|| "open the runtime's network namespace")?;
    Ok(OwnedFd::from(f))
}

/// Moves interface `from` of namespace `src` into `dst`, named `to`, with
/// its permanent addresses and up state.
fn transfer(from: &str, to: &str, src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> Result<()> {
    let (addresses, up) = in_netns(src, || {
        let nl = Netlink::open()?;
        let index = index_of(from)?;
        let up = nl.link_flags(index)?.contains(LinkFlags::Up);
        let addresses = nl.permanent_addresses(index)?;
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::NetNsFd(dst.as_raw_fd()));
        msg.attributes.push(LinkAttribute::IfName(to.to_string()));
        nl.request(RouteNetlinkMessage::SetLink(msg), 0)
            .step(|| format!("move {from:?} to the other namespace as {to:?}"))?;
        Ok((addresses, up))
    })?;
    in_netns(dst, || {
        let nl = Netlink::open()?;
        let index = index_of(to)?;
        for mut a in addresses.clone() {
            a.header.index = index;
            nl.request(RouteNetlinkMessage::NewAddress(a), NLM_F_CREATE | NLM_F_EXCL)
                .step(|| format!("restore an address of {to:?}"))?;
        }
        if up {
            let mut msg = LinkMessage::default();
            msg.header.index = index;
            msg.header.flags = LinkFlags::Up;
            msg.header.change_mask = LinkFlags::Up;
            nl.request(RouteNetlinkMessage::SetLink(msg), 0).step(|| format!("set {to:?} up"))?;
        }
        Ok(())
    })
}

/// The loopback device's index: the kernel gives it 1 in every network
/// namespace (LOOPBACK_IFINDEX), before anything else exists there.
const LOOPBACK_INDEX: u32 = 1;

/// Brings up `lo` in a network namespace the runtime made, as runc and
/// crun do: a new namespace's loopback starts down, and programs expect
/// 127.0.0.1 to answer (docker's `--network none` has it up).
pub fn loopback_up() -> Result<()> {
    let nl = Netlink::open()?;
    let mut msg = LinkMessage::default();
    msg.header.index = LOOPBACK_INDEX;
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    nl.request(RouteNetlinkMessage::SetLink(msg), 0).step(|| "set the loopback device up")
}

fn index_of(name: &str) -> Result<u32> {
    nix::net::if_::if_nametoindex(name).map_err(|e| match e {
        nix::errno::Errno::ENODEV => Error::Container(format!("no network interface {name:?} here")),
        e => Error::os(format!("find network interface {name:?}"), e),
    })
}

/// Runs `f` in network namespace `ns`, then returns to the runtime's own.
fn in_netns<T>(ns: BorrowedFd<'_>, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let own = own_netns()?;
    setns(ns, CloneFlags::CLONE_NEWNET).step(|| "enter a network namespace")?;
    let out = f();
    setns(own.as_fd(), CloneFlags::CLONE_NEWNET).step(|| "return to the runtime's network namespace")?;
    out
}

/// An rtnetlink socket in the namespace it was opened in.
struct Netlink {
    sock: Socket,
}

impl Netlink {
    fn open() -> Result<Netlink> {
        let mut sock = Socket::new(NETLINK_ROUTE).step(|| "open an rtnetlink socket")?;
        sock.bind_auto().step(|| "bind the rtnetlink socket")?;
        sock.connect(&SocketAddr::new(0, 0)).step(|| "connect the rtnetlink socket")?;
        Ok(Netlink { sock })
    }

    fn send(&self, msg: RouteNetlinkMessage, flags: u16) -> std::io::Result<()> {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.sock.send(&buf, 0).map(|_| ())
    }

    /// Every message of the answer, until its ACK or DONE.
    fn answers(&self) -> std::io::Result<Vec<RouteNetlinkMessage>> {
        let mut out = Vec::new();
        loop {
            let (buf, _) = self.sock.recv_from_full()?;
            let mut offset = 0;
            while offset < buf.len() {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[offset..])
                    .map_err(|e| std::io::Error::other(format!("bad netlink answer: {e}")))?;
                let len = msg.header.length as usize;
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(code) => Err(std::io::Error::from_raw_os_error(-code.get())),
                        };
                    }
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                offset += len.next_multiple_of(4);
            }
        }
    }

    /// Sends a request and waits for its acknowledgement.
    fn request(&self, msg: RouteNetlinkMessage, flags: u16) -> std::io::Result<()> {
        self.send(msg, NLM_F_ACK | flags)?;
        self.answers().map(|_| ())
    }

    fn link_flags(&self, index: u32) -> Result<LinkFlags> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        // With an ACK to end the answer (a plain get has no DONE).
        self.send(RouteNetlinkMessage::GetLink(msg), NLM_F_ACK).step(|| "ask for a link")?;
        let answers = self.answers().step(|| "read a link")?;
        answers
            .into_iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) if l.header.index == index => Some(l.header.flags),
                _ => None,
            })
            .ok_or_else(|| Error::Container(format!("no link with index {index}")))
    }

    /// The interface's permanent addresses (the kernel's dump, filtered).
    fn permanent_addresses(&self, index: u32) -> Result<Vec<AddressMessage>> {
        self.send(RouteNetlinkMessage::GetAddress(AddressMessage::default()), NLM_F_DUMP)
            .step(|| "ask for addresses")?;
        let answers = self.answers().step(|| "read addresses")?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index && is_permanent(&a) => Some(a),
                _ => None,
            })
            .map(|mut a| {
                // Only what re-creates the address; the rest (the label
                // too, which carries the old name) is the kernel's.
                a.attributes.retain(|attr| {
                    matches!(
                        attr,
                        AddressAttribute::Address(_) | AddressAttribute::Local(_) | AddressAttribute::Broadcast(_)
                    )
                });
                a
            })
            .collect())
    }
}

fn is_permanent(a: &AddressMessage) -> bool {
    let flags = a.attributes.iter().find_map(|attr| match attr {
        AddressAttribute::Flags(f) => Some(*f),
        _ => None,
    });
    match flags {
        Some(f) => f.contains(AddressFlags::Permanent),
        None => a.header.flags.contains(AddressHeaderFlags::Permanent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devices(json: &str) -> HashMap<String, LinuxNetDevice> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn names_and_the_namespace_are_checked() {
        check(&devices(r#"{"dummy0":{"name":"eth1"}}"#), true).unwrap();
        let msg = check(&devices(r#"{"dummy0":{}}"#), false).unwrap_err();
        assert!(msg.contains("no network namespace"), "{msg}");
        let msg = check(&devices(r#"{"dummy0":{"name":"a/b"}}"#), true).unwrap_err();
        assert!(msg.contains("linux.netDevices.dummy0.name"), "{msg}");
        let msg = check(&devices(r#"{"averyveryverylongname":{}}"#), true).unwrap_err();
        assert!(msg.contains("1 to 15 bytes"), "{msg}");
        let msg = check(&devices(r#"{"a":{"name":"x"},"b":{"name":"x"}}"#), true).unwrap_err();
        assert!(msg.contains("would both be \"x\""), "{msg}");
    }
}
