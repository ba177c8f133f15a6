//! Device nodes in the container's /dev: the defaults every container gets
//! (null, zero, full, random, urandom, tty), linux.devices, /dev/ptmx and
//! the /dev/fd and stdio links.

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::unistd::{Gid, Uid, chown};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Spec};
use pathrs::InodeType;

use super::rootfs::{Rootfs, bind, errno_of};
use crate::error::{Context, Error, Result};
use crate::sys::fd_path;

/// One node to create.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    path: PathBuf,
    kind: LinuxDeviceType,
    major: i64,
    minor: i64,
    mode: u32,
    uid: u32,
    gid: u32,
}

/// The devices runc gives every container (runtime-spec's default devices).
fn defaults() -> Vec<Node> {
    [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("tty", 5, 0), ("urandom", 1, 9), ("random", 1, 8)]
        .into_iter()
        .map(|(name, major, minor)| Node {
            path: Path::new("/dev").join(name),
            kind: LinuxDeviceType::C,
            major,
            minor,
            mode: 0o666,
            uid: 0,
            gid: 0,
        })
        .collect()
}

fn from_spec(d: &LinuxDevice) -> Node {
    Node {
        path: d.path().clone(),
        kind: d.typ(),
        major: d.major(),
        minor: d.minor(),
        mode: d.file_mode().unwrap_or(0o666) & 0o7777,
        uid: d.uid().unwrap_or(0),
        gid: d.gid().unwrap_or(0),
    }
}

/// True when config.json binds the host's /dev (then /dev is left alone).
fn binds_dev(spec: &Spec) -> bool {
    spec.mounts().iter().flatten().any(|m| {
        m.destination() == Path::new("/dev")
            && (m.typ().as_deref() == Some("bind") || m.options().iter().flatten().any(|o| o == "bind" || o == "rbind"))
    })
}

/// Creates the default devices (unless /dev is a bind mount), then
/// linux.devices, then /dev/ptmx and the links.
pub fn setup(rootfs: &Rootfs, spec: &Spec, in_userns: bool) -> Result<()> {
    let setup_dev = !binds_dev(spec);
    let mut nodes = if setup_dev { defaults() } else { Vec::new() };
    for d in spec.linux().as_ref().and_then(|l| l.devices().as_ref()).into_iter().flatten() {
        let node = from_spec(d);
        nodes.retain(|n| n.path != node.path);
        nodes.push(node);
    }
    for node in &nodes {
        create(rootfs, node, in_userns).map_err(|e| match e {
            Error::Os { step, source } => Error::os(format!("device '{}': {step}", node.path.display()), source),
            other => other,
        })?;
    }
    if setup_dev {
        setup_ptmx(rootfs)?;
        setup_links(rootfs)?;
    }
    Ok(())
}

fn create(rootfs: &Rootfs, node: &Node, in_userns: bool) -> Result<()> {
    if !node.path.is_absolute() {
        return Err(Error::Container(format!("linux.devices: path {:?} is not absolute", node.path)));
    }
    // A user namespace cannot mknod; bind the host's node instead.
    if in_userns {
        return bind_from_host(rootfs, node);
    }
    if let Some(parent) = node.path.parent() {
        rootfs.mkdir(parent)?;
    }
    let perm = Permissions::from_mode(node.mode);
    let dev = libc::makedev(node.major as u32, node.minor as u32);
    let inode = match node.kind {
        LinuxDeviceType::B => InodeType::BlockDevice(perm, dev),
        LinuxDeviceType::P => InodeType::Fifo(perm),
        _ => InodeType::CharacterDevice(perm, dev),
    };
    match rootfs.root.create(&node.path, &inode) {
        Ok(()) => {}
        Err(e) if errno_of(&e) == Some(libc::EEXIST) => return Ok(()),
        Err(e) if errno_of(&e) == Some(libc::EPERM) => return bind_from_host(rootfs, node),
        Err(e) => return Err(Error::Path { step: "mknod".into(), source: e }),
    }
    let handle = rootfs.resolve(&node.path)?;
    chown(&fd_path(&handle), Some(Uid::from_raw(node.uid)), Some(Gid::from_raw(node.gid))).step(|| "chown")?;
    Ok(())
}

fn bind_from_host(rootfs: &Rootfs, node: &Node) -> Result<()> {
    let target = rootfs.mkfile(&node.path)?;
    bind(&node.path, &target, false).step(|| format!("bind the host's '{}'", node.path.display()))
}

/// /dev/ptmx points into the container's own devpts instance.
fn setup_ptmx(rootfs: &Rootfs) -> Result<()> {
    match rootfs.root.remove_file("/dev/ptmx") {
        Ok(()) => {}
        Err(e) if errno_of(&e) == Some(libc::ENOENT) => {}
        Err(e) => return Err(Error::Path { step: "remove /dev/ptmx".into(), source: e }),
    }
    link(rootfs, "pts/ptmx", "/dev/ptmx")
}

fn setup_links(rootfs: &Rootfs) -> Result<()> {
    link(rootfs, "/proc/self/fd", "/dev/fd")?;
    link(rootfs, "/proc/self/fd/0", "/dev/stdin")?;
    link(rootfs, "/proc/self/fd/1", "/dev/stdout")?;
    link(rootfs, "/proc/self/fd/2", "/dev/stderr")?;
    if Path::new("/proc/kcore").exists() {
        link(rootfs, "/proc/kcore", "/dev/core")?;
    }
    Ok(())
}

fn link(rootfs: &Rootfs, target: &str, at: &str) -> Result<()> {
    match rootfs.root.create(at, &InodeType::Symlink(target.into())) {
        Ok(()) => Ok(()),
        Err(e) if errno_of(&e) == Some(Errno::EEXIST as i32) => Ok(()),
        Err(e) => Err(Error::Path { step: format!("symlink '{at}' -> '{target}'"), source: e }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_devices_replace_defaults_of_the_same_path() {
        let spec: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.2.0","linux":{"devices":[{"path":"/dev/null","type":"c","major":1,"minor":3,"fileMode":384}]}}"#,
        )
        .unwrap();
        let d = spec.linux().as_ref().unwrap().devices().as_ref().unwrap()[0].clone();
        let n = from_spec(&d);
        assert_eq!(n.mode, 0o600);
        assert_eq!(defaults().len(), 6);
    }

    #[test]
    fn a_bind_mounted_dev_is_left_alone() {
        let spec: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.2.0","mounts":[{"destination":"/dev","type":"bind","source":"/dev","options":["rbind"]}]}"#,
        )
        .unwrap();
        assert!(binds_dev(&spec));
    }
}
