//! Idmapped bind mounts: mounts of config.json that carry uidMappings and
//! gidMappings (runtime-spec 1.2), with runc's "idmap" / "ridmap" options.
//!
//! Setting MOUNT_ATTR_IDMAP on a host filesystem needs CAP_SYS_ADMIN in
//! the initial user namespace, which the container's init may not have (it
//! may sit in a user namespace of its own). So the runtime makes each
//! idmapped tree here, detached (open_tree + mount_setattr), and the init
//! only attaches it on its target (move_mount), as runc does.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::unistd::ForkResult;
use oci_spec::runtime::{LinuxIdMapping, Mount, Spec};

use crate::channel::{Channel, Msg};
use crate::error::{Context, Error, Result};
use crate::init::mount_opts::MountOpts;
use crate::init::namespaces::write_maps_for;
use crate::sys;

/// Detached idmapped trees, by the index of their mount in config.json.
pub type IdmappedTrees = HashMap<usize, OwnedFd>;

/// Makes a detached, idmapped tree for every mount that asks for one.
pub fn prepare(spec: &Spec) -> Result<IdmappedTrees> {
    let mut trees = IdmappedTrees::new();
    let mut userns: Vec<((String, String), OwnedFd)> = Vec::new();
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let (uids, gids) = match (m.uid_mappings(), m.gid_mappings()) {
            (None, None) => continue,
            (Some(u), Some(g)) => (u, g),
            _ => return Err(bad(i, m, "uidMappings and gidMappings go together")),
        };
        if !nix::unistd::geteuid().is_root() {
            return Err(bad(i, m, "idmapped mounts need root (CAP_SYS_ADMIN on the host)"));
        }
        let opts = MountOpts::parse(m.options().as_deref().unwrap_or_default());
        if !opts.is_bind() && m.typ().as_deref() != Some("bind") {
            return Err(bad(i, m, "only bind mounts can be idmapped"));
        }
        let source = m.source().as_deref().ok_or_else(|| bad(i, m, "a bind mount needs a source"))?;
        let key = (lines(uids), lines(gids));
        let ns = match userns.iter().position(|(k, _)| *k == key) {
            Some(pos) => &userns[pos].1,
            None => {
                userns.push((key, userns_with(uids, gids)?));
                &userns.last().expect("just pushed").1
            }
        };
        let tree = sys::open_tree_clone(source, opts.is_recursive_bind())
            .step(|| format!("mounts[{i}]: clone the mount at '{}'", source.display()))?;
        // "ridmap" maps the whole tree; "idmap" (or neither) only its top
        // mount, unless the bind itself is recursive.
        let recursive = opts.ridmap || (opts.is_recursive_bind() && !opts.idmap);
        sys::mount_setattr_idmap(tree.as_fd(), ns.as_fd(), recursive).step(|| {
            format!("mounts[{i}]: idmap '{}' (needs Linux 5.12 and a filesystem that supports it)", source.display())
        })?;
        trees.insert(i, tree);
    }
    Ok(trees)
}

fn bad(i: usize, m: &Mount, why: &str) -> Error {
    Error::Container(format!("mounts[{i}] ({}): {why}", m.destination().display()))
}

fn lines(maps: &[LinuxIdMapping]) -> String {
    maps.iter().map(|m| format!("{} {} {};", m.container_id(), m.host_id(), m.size())).collect()
}

/// A user namespace with these mappings, held by an fd: a child unshares
/// one, the runtime writes its maps and opens it, and the child exits.
fn userns_with(uids: &[LinuxIdMapping], gids: &[LinuxIdMapping]) -> Result<OwnedFd> {
    let (mine, theirs) = Channel::pair()?;
    match sys::fork().step(|| "fork a user namespace holder")? {
        ForkResult::Child => {
            drop(mine);
            let code = match nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER) {
                Ok(()) => {
                    let _ = theirs.send(&Msg::Hello);
                    // Wait until the runtime has what it needs (it closes).
                    let _ = theirs.recv();
                    0
                }
                Err(e) => {
                    let _ = theirs.send(&Msg::Error(format!("unshare a user namespace for an idmapped mount: {e}")));
                    1
                }
            };
            sys::exit_now(code)
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            let result = (|| {
                mine.expect(&Msg::Hello, "the user namespace holder")?;
                write_maps_for(child.as_raw(), uids, gids)?;
                let path = format!("/proc/{}/ns/user", child.as_raw());
                Ok(OwnedFd::from(std::fs::File::open(Path::new(&path)).step(|| format!("open {path}"))?))
            })();
            drop(mine);
            let _ = sys::wait_exit(child);
            result
        }
    }
}
