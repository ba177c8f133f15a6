//! Operations on an existing container: start, kill, pause/resume, and
//! delete, each checked against the container's current state with runc's
//! messages.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::fcntl::{OFlag, open};
use nix::sys::signal::Signal;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
use nix::sys::stat::Mode;
use oci_spec::runtime::LinuxResources;

use crate::channel::Msg;
use crate::container::{Container, START_SOCKET, StateRoot, Status};
use crate::error::{Context, Error, Result};
use crate::hooks::{self, HookKind};
use crate::sys;

/// Starts a created container: its init runs startContainer hooks and
/// execs the program. Returns once the program is exec'd (or with the
/// reason it was not), after poststart hooks.
pub fn start(c: &Container) -> Result<()> {
    let _lock = c.lock()?;
    match c.status() {
        Status::Created => {}
        Status::Stopped => return Err(Error::State("cannot start a container that has stopped".into())),
        _ => return Err(Error::State("cannot start an already running container".into())),
    }
    let mut conn = connect_start(c)?;
    // From here on the container reads as running.
    let _ = std::fs::remove_file(c.dir.join(START_SOCKET));
    conn.write_all(b"S").step(|| "signal the container's init to start")?;
    let mut reply = String::new();
    let _ = conn.read_to_string(&mut reply);
    if !reply.is_empty() {
        return Err(start_failure(reply));
    }
    // A failing poststart hook is logged, not fatal (runtime-spec; runc
    // instead kills the container).
    if c.state.poststart_hooks {
        hooks::run(&c.spec()?, HookKind::Poststart, &c.oci_state(Status::Running))?;
    }
    Ok(())
}

/// The init's reply to `start` when its program did not run: a channel
/// failure message (JSON); plain text from an init of an older runtime.
fn start_failure(reply: String) -> Error {
    serde_json::from_str::<Msg>(&reply).ok().and_then(|m| m.into_error().ok()).unwrap_or(Error::Container(reply))
}

fn connect_start(c: &Container) -> Result<UnixStream> {
    let sock = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
        .step(|| "create a socket to start the container")?;
    let dirfd = open(&c.dir, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .step(|| format!("open {}", c.dir.display()))?;
    let addr = UnixAddr::new(&crate::launch::start_socket_path(&dirfd)).step(|| "start socket address")?;
    connect(std::os::fd::AsRawFd::as_raw_fd(&sock), &addr).step(|| "connect to the container's init")?;
    Ok(UnixStream::from(sock))
}

/// Sends `sig` to the container's init, or with `all` to every process in
/// its cgroup.
pub fn kill(c: &Container, sig: Signal, all: bool) -> Result<()> {
    if let (true, Some(cg)) = (all, &c.state.cgroup) {
        return cg.signal_all(sig).map_err(Into::into);
    }
    let Some(pidfd) = c.init_pidfd() else {
        return Err(Error::State("container not running".into()));
    };
    sys::pidfd_send_signal(pidfd.as_fd(), sig).step(|| format!("send {sig} to the container's init"))
}

/// Freezes every process of the container.
pub fn pause(c: &Container) -> Result<()> {
    let _lock = c.lock()?;
    match c.status() {
        Status::Running | Status::Created => {}
        Status::Paused => return Err(Error::State("container already paused".into())),
        _ => return Err(Error::State("container not running".into())),
    }
    let cg = c.state.cgroup.as_ref().ok_or_else(|| Error::State("container has no cgroup to freeze".into()))?;
    Ok(cg.freeze()?)
}

/// Thaws a paused container.
pub fn resume(c: &Container) -> Result<()> {
    let _lock = c.lock()?;
    if c.status() != Status::Paused {
        return Err(Error::State("container not paused".into()));
    }
    let cg = c.state.cgroup.as_ref().ok_or_else(|| Error::State("container has no cgroup".into()))?;
    Ok(cg.thaw()?)
}

/// Applies new resource limits to a container and records them in its
/// spec. Only the fields given change. With memory.checkBeforeUpdate, a
/// memory limit below the current usage is refused instead of making the
/// kernel reclaim (or OOM-kill) to meet it.
pub fn update(c: &Container, r: &LinuxResources) -> Result<()> {
    let _lock = c.lock()?;
    if c.status() == Status::Stopped {
        return Err(Error::State("cannot update a stopped container".into()));
    }
    let cg = c.state.cgroup.as_ref().ok_or_else(|| Error::State("container has no cgroup to update".into()))?;
    let mut spec = c.spec()?;
    let current = spec.linux().as_ref().and_then(|l| l.resources().clone()).unwrap_or_default();
    let merged = merge_resources(&current, r)?;
    let check = merged.memory().as_ref().and_then(|m| m.check_before_update()).unwrap_or(false);
    if let (true, Some(limit)) = (check, r.memory().as_ref().and_then(|m| m.limit()).filter(|l| *l > 0)) {
        let usage = cg.stats().memory.usage.usage;
        if usage > limit as u64 {
            return Err(Error::State(format!(
                "memory limit {limit} is below the container's current usage {usage} (checkBeforeUpdate)"
            )));
        }
    }
    cg.apply(r).map_err(Error::Resources)?;
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_resources(Some(merged));
    spec.set_linux(Some(linux));
    let bytes = serde_json::to_vec(&spec).expect("a parsed spec serializes");
    crate::container::write_atomic(&c.dir.join(crate::container::CONFIG_FILE), &bytes)
}

/// `new` over `old`, field by field (objects merge, everything else is
/// replaced), through their JSON form.
fn merge_resources(old: &LinuxResources, new: &LinuxResources) -> Result<LinuxResources> {
    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }
    let mut base = serde_json::to_value(old).expect("resources serialize");
    merge(&mut base, serde_json::to_value(new).expect("resources serialize"));
    serde_json::from_value(base).map_err(|e| Error::Usage(format!("resources: {e}")))
}

/// The container's processes: its cgroup's, or just the init without one.
pub fn pids(c: &Container) -> Result<Vec<i32>> {
    if let Some(cg) = c.state.cgroup.as_ref().filter(|cg| cg.exists()) {
        return Ok(cg.pids()?);
    }
    Ok(if c.is_alive() { vec![c.init_pid()] } else { Vec::new() })
}

/// Deletes a container: stopped ones always, created ones always (as
/// runc), running or paused ones only with `force` (they are killed).
/// With `force`, a container that does not exist is not an error.
pub fn delete(root: &StateRoot, id: &str, force: bool) -> Result<()> {
    let c = match root.load(id) {
        Ok(c) => c,
        Err(Error::NotExist) => {
            // A create that died before writing its state leaves a bare
            // directory behind; it is never a live container.
            let dir = root.container_dir(id);
            if StateRoot::check_id(id).is_ok() && dir.is_dir() {
                let _ = std::fs::remove_dir_all(&dir);
            }
            return if force { Ok(()) } else { Err(Error::NotExist) };
        }
        Err(e) => return Err(e),
    };
    let _lock = c.lock()?;
    let kill = match c.status() {
        Status::Stopped => false,
        Status::Created => true,
        _ if force => true,
        status => {
            return Err(Error::State(format!("cannot delete container {id} that is not stopped: {status}")));
        }
    };
    // Before the init dies: a namespace of its own dies with it.
    return_net_devices(&c);
    if kill {
        kill_all_now(&c)?;
    }
    destroy(&c)
}

/// Moves linux.netDevices back to the runtime's network namespace, if the
/// container's still exists: the init's while it runs, or one named by
/// path in config.json. Otherwise the kernel already dealt with them (a
/// physical device went back to the initial namespace, a virtual one is
/// gone).
fn return_net_devices(c: &Container) {
    if c.state.net_devices.is_empty() {
        return;
    }
    let from_init =
        c.init_pidfd().and_then(|_pinned| std::fs::File::open(format!("/proc/{}/ns/net", c.init_pid())).ok());
    let from_path = || {
        let spec = c.spec().ok()?;
        let ns = spec
            .linux()
            .as_ref()?
            .namespaces()
            .as_ref()?
            .iter()
            .find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network)?;
        std::fs::File::open(ns.path().as_ref()?).ok()
    };
    match from_init.or_else(from_path) {
        Some(netns) => crate::netdev::move_back(&c.state.net_devices, netns.as_fd()),
        None => tracing::debug!("container {}: its network namespace is gone with its devices", c.id()),
    }
}

/// SIGKILLs every process of the container and waits for the init to die.
fn kill_all_now(c: &Container) -> Result<()> {
    if let Some(cg) = c.state.cgroup.as_ref().filter(|cg| !c.state.joined_cgroup && cg.exists()) {
        cg.signal_all(Signal::SIGKILL)?;
    }
    if let Some(pidfd) = c.init_pidfd() {
        let _ = sys::pidfd_send_signal(pidfd.as_fd(), Signal::SIGKILL);
        sys::pidfd_wait(pidfd.as_fd(), Some(Duration::from_secs(10)))
            .step(|| "wait for the container's init to die")?;
    }
    Ok(())
}

/// Removes what is left of a stopped container: stray processes and its
/// cgroup, then poststop hooks, then its state. A failing poststop hook is
/// a warning (runtime-spec), not a reason to keep the container.
pub fn destroy(c: &Container) -> Result<()> {
    if let Some(cg) = c.state.cgroup.as_ref().filter(|_| !c.state.joined_cgroup) {
        cg.destroy()?;
        if c.state.default_cgroup {
            cg.remove_empty_parents(1);
        }
    }
    if c.state.poststop_hooks {
        match c.spec() {
            Ok(spec) => hooks::run(&spec, HookKind::Poststop, &c.oci_state(Status::Stopped))?,
            Err(e) => tracing::warn!("poststop hooks skipped: {e}"),
        }
    }
    std::fs::remove_dir_all(&c.dir).step(|| format!("remove {}", c.dir.display()))
}
