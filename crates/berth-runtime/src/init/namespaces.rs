//! Which namespaces a container process joins (by path) and which it
//! creates, and doing so in an order the kernel accepts.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{OFlag, open};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::stat::Mode;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

use crate::config::ns_name;
use crate::error::{Context, Error, Result};

/// The namespace work of one container process, prepared before the fork
/// (namespace files are opened while the runtime still sees the host).
#[derive(Debug)]
pub struct NsPlan {
    /// Namespaces to join, with their open files. The user namespace, if
    /// any, is joined first.
    pub join: Vec<(LinuxNamespaceType, OwnedFd)>,
    /// Namespaces to create, other than the user namespace.
    pub unshare: CloneFlags,
    /// Create a user namespace (the runtime then writes its id maps).
    pub new_user: bool,
    /// linux.timeOffsets, as /proc/self/timens_offsets wants them.
    pub time_offsets: Option<String>,
}

impl Default for NsPlan {
    fn default() -> Self {
        NsPlan { join: Vec::new(), unshare: CloneFlags::empty(), new_user: false, time_offsets: None }
    }
}

impl NsPlan {
    /// The plan for a new container: config.json's namespaces.
    pub fn for_create(spec: &Spec) -> Result<NsPlan> {
        let mut plan = NsPlan::default();
        let linux = spec.linux().as_ref();
        for ns in linux.and_then(|l| l.namespaces().as_ref()).into_iter().flatten() {
            match ns.path() {
                Some(path) => plan.join.push((ns.typ(), open_ns(ns.typ(), path)?)),
                None if ns.typ() == LinuxNamespaceType::User => plan.new_user = true,
                None => plan.unshare |= clone_flag(ns.typ()),
            }
        }
        plan.sort();
        if let Some(offsets) = linux.and_then(|l| l.time_offsets().as_ref()) {
            let mut text = String::new();
            for (clock, off) in offsets {
                text.push_str(&format!("{clock} {} {}\n", off.secs().unwrap_or(0), off.nanosecs().unwrap_or(0)));
            }
            plan.time_offsets = Some(text);
        }
        Ok(plan)
    }

    /// The plan for `exec`: join every namespace the container was given,
    /// through its init's /proc/<pid>/ns files.
    pub fn for_exec(spec: &Spec, init_pid: i32) -> Result<NsPlan> {
        let mut plan = NsPlan::default();
        for ns in spec.linux().as_ref().and_then(|l| l.namespaces().as_ref()).into_iter().flatten() {
            let path = format!("/proc/{init_pid}/ns/{}", proc_ns_file(ns.typ()));
            plan.join.push((ns.typ(), open_ns(ns.typ(), Path::new(&path))?));
        }
        plan.sort();
        Ok(plan)
    }

    /// User namespace first (joining it grants the capabilities needed to
    /// join the others), mount namespace last (it changes our root).
    fn sort(&mut self) {
        let rank = |t: &LinuxNamespaceType| match t {
            LinuxNamespaceType::User => 0,
            LinuxNamespaceType::Mount => 2,
            _ => 1,
        };
        self.join.sort_by_key(|(t, _)| rank(t));
    }

    pub fn has(&self, t: LinuxNamespaceType) -> bool {
        self.join.iter().any(|(j, _)| *j == t)
            || self.unshare.contains(clone_flag(t))
            || (t == LinuxNamespaceType::User && self.new_user)
    }

    /// Whether a new container's init can be forked straight into its
    /// namespaces (see launch::spawn_init_directly): no user namespace (its
    /// id maps are written between unshare and the fork), no pid namespace
    /// to join (setns into one applies to children only), no time
    /// namespace (clone(2) cannot make one; its offsets come first). Other
    /// namespaces to join (a network namespace made beforehand, as engines
    /// do) the init joins itself, first thing.
    pub fn can_clone_directly(&self) -> bool {
        use LinuxNamespaceType::{Pid, Time, User};
        !self.new_user
            && !self.join.iter().any(|(t, _)| matches!(t, User | Pid | Time))
            && self.time_offsets.is_none()
            && !self.unshare.contains(CloneFlags::from_bits_retain(libc::CLONE_NEWTIME))
    }

    /// The namespace of type `t` to join, if one is given by path.
    pub fn joined(&self, t: LinuxNamespaceType) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.join.iter().find(|(j, _)| *j == t).map(|(_, fd)| fd.as_fd())
    }

    /// setns into every namespace to join.
    pub fn join_all(&self) -> Result<()> {
        for (t, fd) in &self.join {
            setns(fd.as_fd(), clone_flag(*t)).step(|| format!("join {} namespace", ns_name(*t)))?;
        }
        Ok(())
    }

    /// Creates the user namespace, if one is wanted.
    pub fn unshare_user(&self) -> Result<()> {
        if self.new_user {
            unshare(CloneFlags::CLONE_NEWUSER).step(|| "create user namespace")?;
        }
        Ok(())
    }

    /// Creates every other new namespace. A new pid or time namespace
    /// applies to children only: the caller forks afterwards.
    pub fn unshare_rest(&self) -> Result<()> {
        if !self.unshare.is_empty() {
            unshare(self.unshare).step(|| format!("create namespaces {}", flag_names(self.unshare)))?;
        }
        if let Some(offsets) = &self.time_offsets {
            std::fs::write("/proc/self/timens_offsets", offsets).step(|| "write /proc/self/timens_offsets")?;
        }
        Ok(())
    }
}

fn open_ns(t: LinuxNamespaceType, path: &Path) -> Result<OwnedFd> {
    open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| Error::os(format!("open {} namespace '{}' (linux.namespaces)", ns_name(t), path.display()), e))
}

pub fn clone_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// The file name under /proc/<pid>/ns/.
pub fn proc_ns_file(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

pub fn flag_names(f: CloneFlags) -> String {
    let names = [
        (CloneFlags::CLONE_NEWNS, "mount"),
        (CloneFlags::CLONE_NEWUTS, "uts"),
        (CloneFlags::CLONE_NEWIPC, "ipc"),
        (CloneFlags::CLONE_NEWNET, "network"),
        (CloneFlags::CLONE_NEWPID, "pid"),
        (CloneFlags::CLONE_NEWCGROUP, "cgroup"),
        (CloneFlags::from_bits_retain(libc::CLONE_NEWTIME), "time"),
    ];
    names.iter().filter(|(flag, _)| f.contains(*flag)).map(|(_, n)| *n).collect::<Vec<_>>().join(",")
}

/// Writes a user namespace's uid and gid maps (from the runtime, which is
/// outside the namespace).
///
/// Root writes any mapping. An unprivileged caller may write only a single
/// line mapping its own id, and for gid_map only after setgroups is denied
/// (the kernel's rule); wider mappings (ranges from /etc/subuid) go through
/// the setuid helpers newuidmap and newgidmap, as runc and podman do.
pub fn write_id_maps(pid: i32, spec: &Spec) -> Result<()> {
    let Some(linux) = spec.linux().as_ref() else { return Ok(()) };
    let uids = linux.uid_mappings().clone().unwrap_or_default();
    let gids = linux.gid_mappings().clone().unwrap_or_default();
    let euid = nix::unistd::geteuid();
    if euid.is_root() {
        return write_maps_directly(pid, &uids, &gids);
    }
    let own = |maps: &[LinuxIdMapping], id: u32| maps.len() == 1 && maps[0].host_id() == id && maps[0].size() == 1;
    if own(&uids, euid.as_raw()) && own(&gids, nix::unistd::getegid().as_raw()) {
        std::fs::write(format!("/proc/{pid}/setgroups"), "deny").step(|| "write setgroups \"deny\"")?;
        return write_maps_directly(pid, &uids, &gids);
    }
    run_map_helper("newuidmap", pid, &uids)?;
    run_map_helper("newgidmap", pid, &gids)
}

fn map_lines(maps: &[LinuxIdMapping]) -> String {
    maps.iter().map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size())).collect()
}

/// Writes `uids` and `gids` as the maps of process `pid`'s user namespace
/// (the runtime as root; for idmapped mounts).
pub fn write_maps_for(pid: i32, uids: &[LinuxIdMapping], gids: &[LinuxIdMapping]) -> Result<()> {
    write_maps_directly(pid, uids, gids)
}

fn write_maps_directly(pid: i32, uids: &[LinuxIdMapping], gids: &[LinuxIdMapping]) -> Result<()> {
    let (uid, gid) = (map_lines(uids), map_lines(gids));
    std::fs::write(format!("/proc/{pid}/uid_map"), &uid).step(|| format!("write uid_map {:?}", uid.trim()))?;
    std::fs::write(format!("/proc/{pid}/gid_map"), &gid).step(|| format!("write gid_map {:?}", gid.trim()))?;
    Ok(())
}

/// newuidmap PID CONTAINER HOST SIZE ... (likewise newgidmap).
fn run_map_helper(tool: &str, pid: i32, maps: &[LinuxIdMapping]) -> Result<()> {
    let mut cmd = std::process::Command::new(tool);
    cmd.arg(pid.to_string());
    for m in maps {
        cmd.args([m.container_id().to_string(), m.host_id().to_string(), m.size().to_string()]);
    }
    let out = cmd.output().map_err(|e| {
        Error::os(format!("run {tool} for the user namespace's mappings (install the uidmap package)"), e)
    })?;
    if !out.status.success() {
        return Err(Error::Container(format!(
            "{tool} {pid} {}: {} (does /etc/sub{}id give this user those ids?)",
            map_lines(maps).trim().replace('\n', " "),
            String::from_utf8_lossy(&out.stderr).trim(),
            if tool == "newuidmap" { "u" } else { "g" }
        )));
    }
    Ok(())
}
