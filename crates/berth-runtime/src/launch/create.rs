//! `create`: from a bundle to a container whose init waits for `start`.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use berth_cgroups::{Cgroup, Layout, LayoutKind};
use nix::fcntl::{OFlag, open};
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, listen, socket};
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use super::{
    check_console, console_sockets, default_cgroup_path, inherited_fds, receive_master, seccomp_for, spawn,
    write_pid_file,
};
use crate::channel::Msg;
use crate::config::Bundle;
use crate::container::{CONFIG_FILE, Container, Persisted, START_SOCKET, StateRoot, Status, write_atomic};
use crate::error::{Context, Error, Result};
use crate::hooks::{self, HookKind};
use crate::init::namespaces::NsPlan;
use crate::init::{Plan, Role};
use crate::sys::{self, fd_path};

pub struct CreateOptions<'a> {
    pub root: &'a StateRoot,
    pub id: &'a str,
    pub bundle: &'a Path,
    pub console_socket: Option<&'a Path>,
    pub pid_file: Option<&'a Path>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: u32,
    /// A foreground `run`: with a terminal, the pty master comes back to
    /// the caller instead of going to a console socket.
    pub foreground: bool,
}

pub struct Created {
    pub container: Container,
    pub spec: Spec,
    /// The pty master, for a foreground `run` with a terminal.
    pub pty_master: Option<OwnedFd>,
}

/// Creates the container: state directory, cgroup, namespaces, rootfs,
/// hooks, then the init waits for `start`. On any failure everything made
/// so far is undone (processes killed, cgroup and state removed).
pub fn create(o: &CreateOptions<'_>) -> Result<Created> {
    StateRoot::check_id(o.id)?;
    let bundle = Bundle::load(o.bundle)?;
    // Paths from the command line are the caller's, not the bundle's.
    let absolute = |p: &Path| std::path::absolute(p).step(|| format!("resolve {}", p.display()));
    let pid_file = o.pid_file.map(absolute).transpose()?;
    let console_socket = o.console_socket.map(absolute).transpose()?;
    // Relative bind-mount sources are relative to the bundle, as with runc.
    std::env::set_current_dir(&bundle.dir).step(|| format!("chdir to bundle {}", bundle.dir.display()))?;
    let process = bundle.spec.process().clone().ok_or_else(|| Error::config(o.bundle, "process: missing"))?;
    let mount_label = bundle.spec.linux().as_ref().and_then(|l| l.mount_label().clone());
    crate::lsm::check(&bundle.dir.join("config.json"), &process, mount_label.as_deref())?;
    let terminal = process.terminal().unwrap_or(false);
    check_console(terminal, console_socket.is_some(), o.foreground)?;
    let (keep_fds, extra_env) = inherited_fds(o.preserve_fds);
    let rootfs_overlay = rootfs_overlay(&bundle.spec, &bundle.dir.join("config.json"))?;

    let dir = o.root.create_dir(o.id)?;
    let mut undo =
        Undo { dir: Some(dir.clone()), cgroup: None, pid: None, poststop: None, net_devices: None, disarmed: false };
    let planned = plan_cgroup(&bundle.spec, o.id, &bundle.dir.join("config.json"))?;
    // Saved before the cgroup is made, so a create killed from here on
    // leaves a container that reads as stopped and that `delete` cleans up,
    // its cgroup included (in every hierarchy it got to), as runc's state
    // directory lets its `delete` do.
    let me = std::process::id() as i32;
    let mut container = Container {
        dir: dir.clone(),
        state: Persisted {
            id: o.id.to_string(),
            init_pid: 0,
            init_start_time: 0,
            bundle: bundle.dir.clone(),
            rootfs: bundle.rootfs.clone(),
            created: berth_proc::time::format_go(SystemTime::now()),
            cgroup: planned.cgroup.clone(),
            default_cgroup: planned.default_path,
            joined_cgroup: planned.joined,
            annotations: bundle.spec.annotations().clone(),
            poststart_hooks: !hooks::of(&bundle.spec, HookKind::Poststart).is_empty(),
            poststop_hooks: !hooks::of(&bundle.spec, HookKind::Poststop).is_empty(),
            net_devices: Vec::new(),
            creator: sys::start_time(me).map(|s| (me, s)),
        },
    };
    let spec_json = serde_json::to_vec(&bundle.spec).expect("a parsed spec serializes");
    write_atomic(&dir.join(CONFIG_FILE), &spec_json)?;
    container.save()?;
    undo.cgroup = planned.cgroup.clone().filter(|_| !planned.joined).map(|c| (c, planned.default_path));
    let cgs = make_cgroup(planned, &bundle.spec, o.id)?;
    kill_point("runtime:cgroup-made");
    let (layout, cgroup) = (cgs.layout, cgs.cgroup);
    if cgroup.is_none() && container.state.cgroup.is_some() {
        // Rootless without a delegated cgroup: none after all.
        container.state.cgroup = None;
        container.save()?;
    }
    let (console, ours) = console_sockets(terminal, console_socket.as_deref())?;
    let listener = listen_for_start(&dir)?;
    let (seccomp, seccomp_listener) = seccomp_for(&bundle.spec, dir.parent())?;
    let plan = Plan {
        id: o.id.to_string(),
        spec: bundle.spec.clone(),
        process,
        rootfs: bundle.rootfs.clone(),
        ns: NsPlan::for_create(&bundle.spec)?,
        layout,
        cgroup: cgroup.clone(),
        console,
        start_listener: Some(listener),
        no_pivot: o.no_pivot,
        no_new_keyring: o.no_new_keyring,
        keep_fds,
        extra_env,
        seccomp,
        seccomp_listener,
        exec_state: None,
        idmapped: super::idmap::prepare(&bundle.spec)?,
        rootfs_overlay,
    };
    let init_waits = crate::init::waits_for_runtime(&plan.spec, plan.seccomp_listener.is_some());
    // A network namespace given by path: the init joins it itself, maybe
    // not yet when the devices move, so they go there by this handle.
    let joined_net = plan
        .ns
        .joined(oci_spec::runtime::LinuxNamespaceType::Network)
        .map(|fd| fd.try_clone_to_owned())
        .transpose()
        .step(|| "dup the network namespace's fd")?;
    let spawned = spawn(&plan, Role::Init)?;
    undo.pid = Some(spawned.pid);
    kill_point("runtime:init-spawned");
    // The init now holds what it needs; ours can go.
    drop(plan);
    // Before any hook runs, so hooks and the program see the devices.
    if let Some(devices) = bundle.spec.linux().as_ref().and_then(|l| l.net_devices().as_ref()).filter(|d| !d.is_empty())
    {
        let netns = match joined_net {
            Some(fd) => std::fs::File::from(fd),
            None => std::fs::File::open(format!("/proc/{}/ns/net", spawned.pid))
                .step(|| "open the container's network namespace")?,
        };
        let moved = crate::netdev::move_in(devices, std::os::fd::AsFd::as_fd(&netns))?;
        container.state.net_devices = moved.clone();
        undo.net_devices = Some((moved, OwnedFd::from(netns)));
        container.save()?;
    }

    if init_waits && spawned.early != Some(Msg::RunHooks) {
        spawned.chan.expect(&Msg::RunHooks, "the container's init")?;
    }
    let start_time = sys::start_time(spawned.pid)
        .ok_or_else(|| Error::Container("the container's init exited during setup".into()))?;
    container.state.init_pid = spawned.pid;
    container.state.init_start_time = start_time;
    let state = container.oci_state(Status::Creating);
    undo.poststop = Some((bundle.spec.clone(), container.oci_state(Status::Stopped)));
    if init_waits {
        hooks::run(&bundle.spec, HookKind::Prestart, &state)?;
        hooks::run(&bundle.spec, HookKind::CreateRuntime, &state)?;
        spawned.chan.send(&Msg::HooksDone(state.to_json()))?;
    }
    spawned.chan.expect(&Msg::Ready, "the container's init")?;

    let pty_master = ours.as_ref().map(receive_master).transpose()?;
    container.state.creator = None;
    container.save()?;
    if let Some(p) = &pid_file {
        write_pid_file(p, spawned.pid)?;
    }
    spawned.chan.send(&Msg::Committed)?;
    undo.disarm();
    Ok(Created { container, spec: bundle.spec, pty_master })
}

/// The container's cgroup, as `create` set it up.
struct CgroupSetup {
    layout: Option<Layout>,
    cgroup: Option<Cgroup>,
    /// The path is berth's default (berth/<id>), not config.json's.
    default_path: bool,
    /// The cgroup existed before: joined, not made.
    joined: bool,
}

/// The container's cgroup as it will be: where, and whether it exists
/// already (then it is joined, not made, and never removed). Nothing is
/// made yet. No cgroup when the host has none.
fn plan_cgroup(spec: &Spec, id: &str, file: &Path) -> Result<CgroupSetup> {
    let layout = match Layout::detect() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("no cgroups for container {id}: {e}");
            return Ok(CgroupSetup { layout: None, cgroup: None, default_path: false, joined: false });
        }
    };
    check_unified(spec, &layout, file)?;
    let configured = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone());
    let default = configured.is_none();
    let path = configured.unwrap_or_else(|| default_cgroup_path(id));
    let cg = Cgroup::resolve(&layout, &path)?;
    let joined = cg.exists();
    Ok(CgroupSetup { layout: Some(layout), cgroup: Some(cg), default_path: default, joined })
}

/// linux.resources.unified is cgroup v2's alone: refused (in runc's words)
/// on a v1 or hybrid host, where the keys would land in the cgroup2 mount
/// beside the v1 controllers that really hold the limits, or fail there.
fn check_unified(spec: &Spec, layout: &Layout, file: &Path) -> Result<()> {
    let unified = spec.linux().as_ref().and_then(|l| l.resources().as_ref()).and_then(|r| r.unified().as_ref());
    match unified {
        Some(u) if !u.is_empty() && layout.kind != LayoutKind::V2 => Err(Error::config(
            file,
            "linux.resources.unified: invalid configuration: cannot use unified on cgroup v1 (this host's cgroups are v1 or hybrid)",
        )),
        _ => Ok(()),
    }
}

/// Creates (or joins) the planned cgroup and applies its limits. No
/// cgroup when the host has none, or when a rootless caller (see
/// [`crate::sys::rootless`]) has none delegated.
fn make_cgroup(planned: CgroupSetup, spec: &Spec, id: &str) -> Result<CgroupSetup> {
    let none = |layout| CgroupSetup { layout, cgroup: None, default_path: false, joined: false };
    let CgroupSetup { layout: Some(layout), cgroup: Some(cg), default_path: default, joined } = planned else {
        return Ok(planned);
    };
    let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
    // Limits go in before any process of the container joins the cgroup.
    let made = cg
        .create()
        .map_err(Error::Cgroup)
        .and_then(|()| resources.map_or(Ok(()), |r| cg.apply(r).map_err(Error::Resources)));
    match made {
        Ok(()) => Ok(CgroupSetup { layout: Some(layout), cgroup: Some(cg), default_path: default, joined }),
        // Rootless: cgroups only where delegated. Without one, say so only
        // if limits were asked for (they cannot be applied).
        Err(e) if crate::sys::rootless() => {
            if resources.is_some_and(has_limits) {
                tracing::warn!("container {id}: linux.resources not applied, no delegated cgroup ({e})");
            } else {
                tracing::debug!("container {id} runs without a cgroup: {e}");
            }
            if !joined {
                let _ = cg.destroy();
            }
            Ok(none(Some(layout)))
        }
        Err(e) => {
            if !joined {
                let _ = cg.destroy();
                if default {
                    cg.remove_empty_parents(1);
                }
            }
            Err(e)
        }
    }
}

/// A test hook of debug builds (release builds have none):
/// `BERTH_KILL_AT=STEP` makes the runtime SIGKILL itself at STEP
/// (runtime:cgroup-made: the cgroup is made, the init not yet forked), so
/// tests can stop a create exactly where a kill leaves the most behind.
fn kill_point(step: &str) {
    if cfg!(debug_assertions) && std::env::var_os("BERTH_KILL_AT").is_some_and(|s| s == step) {
        let _ = nix::sys::signal::raise(Signal::SIGKILL);
    }
}

/// True if `r` limits anything (runc's default spec has only a device
/// rule, which a rootless container gets from its user namespace anyway).
fn has_limits(r: &oci_spec::runtime::LinuxResources) -> bool {
    r.memory().is_some()
        || r.cpu().is_some()
        || r.pids().is_some()
        || r.block_io().is_some()
        || r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty())
        || r.unified().as_ref().is_some_and(|u| !u.is_empty())
}

/// The socket the init waits on until `start` connects. Bound through the
/// state directory's fd, so a long --root cannot overflow sun_path.
fn listen_for_start(dir: &Path) -> Result<OwnedFd> {
    let sock = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
        .step(|| "create the start socket")?;
    let dirfd = open(dir, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .step(|| format!("open {}", dir.display()))?;
    let addr = UnixAddr::new(&start_socket_path(&dirfd)).step(|| "start socket address")?;
    bind(std::os::fd::AsRawFd::as_raw_fd(&sock), &addr).step(|| format!("bind {}/{START_SOCKET}", dir.display()))?;
    listen(&sock, Backlog::new(4).expect("4 is a valid backlog")).step(|| "listen on the start socket")?;
    Ok(sock)
}

/// /proc/self/fd/<dir>/start.sock
pub(crate) fn start_socket_path(dirfd: &OwnedFd) -> PathBuf {
    fd_path(dirfd).join(START_SOCKET)
}

/// Undoes a half-made container when `create` fails.
struct Undo {
    dir: Option<PathBuf>,
    cgroup: Option<(Cgroup, bool)>,
    pid: Option<i32>,
    /// Set once prestart/createRuntime hooks may have run: poststop hooks
    /// then get their chance to clean up after them.
    poststop: Option<(Spec, crate::container::OciState)>,
    /// linux.netDevices moved in so far, and the namespace they are in.
    net_devices: Option<(Vec<crate::netdev::Moved>, OwnedFd)>,
    disarmed: bool,
}

impl Undo {
    fn disarm(&mut self) {
        self.disarmed = true;
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if self.disarmed {
            return;
        }
        // While the namespace still lives (a new one dies with the init).
        if let Some((moved, netns)) = &self.net_devices {
            crate::netdev::move_back(moved, std::os::fd::AsFd::as_fd(netns));
        }
        if let Some(pid) = self.pid {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if let Some((cg, default)) = &self.cgroup {
            if let Err(e) = cg.destroy() {
                tracing::warn!("cleaning up after a failed create: {e}");
            }
            if *default {
                cg.remove_empty_parents(1);
            }
        }
        if let Some((spec, state)) = &self.poststop {
            let _ = hooks::run(spec, HookKind::Poststop, state);
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The engine's rootfs overlay (berth_fs::overlay::ANNOTATION), checked
/// before anything is made: it is mounted in the container's own mount
/// namespace, so there must be one.
fn rootfs_overlay(spec: &oci_spec::runtime::Spec, file: &Path) -> Result<Option<berth_fs::overlay::Overlay>> {
    use berth_fs::overlay::{ANNOTATION, Overlay};
    let Some(json) = spec.annotations().as_ref().and_then(|a| a.get(ANNOTATION)) else { return Ok(None) };
    let what = |msg: String| Error::config(file, format!("annotations[{ANNOTATION:?}]: {msg}"));
    let overlay: Overlay = serde_json::from_str(json).map_err(|e| what(e.to_string()))?;
    overlay.validate().map_err(|e| what(e.to_string()))?;
    let own_mount_ns = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref()).is_some_and(|ns| {
        ns.iter().any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Mount && n.path().is_none())
    });
    if !own_mount_ns {
        return Err(what("needs a new mount namespace (linux.namespaces: mount, without a path)".into()));
    }
    Ok(Some(overlay))
}
