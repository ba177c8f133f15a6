//! The runtime's side of starting container processes: `create` (a new
//! container's init) and `exec` (a process in a running container).

mod create;
mod exec;
mod idmap;

pub(crate) use create::start_socket_path;
pub use create::{CreateOptions, Created, create};
pub use exec::{ExecOptions, Execed, exec};
pub use idmap::IdmappedTrees;

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::fcntl::{FcntlArg, fcntl};
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::unistd::{ForkResult, Pid};

use crate::channel::{Channel, Msg, recv_packet};
use crate::error::{Context, Error, Result};
use crate::init::{self, Plan, Role, namespaces};
use crate::sys;
use berth_cgroups::SelfJoin;

/// A container process that has been forked and is running its setup.
pub(crate) struct Spawned {
    /// Its pid, in the runtime's pid namespace.
    pub pid: i32,
    /// The runtime's end of the channel to it.
    pub chan: Channel,
    /// A message the container process sent before the intermediate's
    /// `Pid` arrived: both write to one socket, and a fast init can be
    /// first (its RunHooks overtaking the Pid).
    pub early: Option<Msg>,
}

/// Forks the intermediate process and takes it through its part of the
/// conversation (see `channel`): id maps, cgroup, then the container
/// process's pid. The intermediate is reaped before this returns.
pub(crate) fn spawn(plan: &Plan, role: Role) -> Result<Spawned> {
    if role == Role::Init && plan.ns.can_clone_directly() {
        return spawn_init_directly(plan);
    }
    let (mine, theirs) = Channel::pair()?;
    let affinity = exec_cpu_affinity(plan, role);
    // execCPUAffinity.initial is for the process before it joins (a cpuset
    // resets it), so with one set the runtime moves it, in order.
    let join = match (affinity, &plan.cgroup) {
        (None, Some(cg)) => Some(cg.self_join()?),
        _ => None,
    };
    let (forked, unified_left) = fork_joined(nix::sched::CloneFlags::empty(), join.as_ref());
    match forked.step(|| "fork")? {
        ForkResult::Child => {
            drop(mine);
            init::intermediate(plan, &theirs, role, join.as_ref())
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            let mut reaper = Reaper(Some(child));
            mine.expect(&Msg::Hello, "the runtime's helper process")?;
            if plan.ns.new_user {
                namespaces::write_id_maps(child.as_raw(), &plan.spec)?;
            }
            if let Some(initial) = affinity.and_then(|a| a.initial().as_deref()) {
                crate::init::attrs::set_affinity(child.as_raw(), initial, "process.execCPUAffinity.initial")?;
            }
            match (&join, &plan.cgroup) {
                (Some(join), _) if unified_left => join.add_pid_unified(child.as_raw())?,
                (None, Some(cg)) => cg.add_pid(child.as_raw())?,
                _ => {}
            }
            // After the move: joining a cpuset resets the affinity.
            if let Some(last) = affinity.and_then(|a| a.cpu_affinity_final().as_deref()) {
                crate::init::attrs::set_affinity(child.as_raw(), last, "process.execCPUAffinity.final")?;
            }
            mine.send(&Msg::Proceed)?;
            let mut early = None;
            let pid = loop {
                match mine.recv()? {
                    Some(Msg::Pid(pid)) => break pid,
                    Some(Msg::RunHooks) if early.is_none() => early = Some(Msg::RunHooks),
                    other => {
                        let ended =
                            |other| Error::Container(format!("the runtime's helper process ended early ({other:?})"));
                        return Err(match other {
                            Some(m) => m.into_error().unwrap_or_else(|m| ended(Some(m))),
                            None => ended(None),
                        });
                    }
                }
            };
            reaper.0 = None;
            sys::wait_exit(child).step(|| "wait for the runtime's helper process")?;
            Ok(Spawned { pid, chan: mine, early })
        }
    }
}

/// Forks (into `flags`' new namespaces) a child that will put itself in
/// its cgroup (`join`): born in the unified hierarchy's by clone3 where
/// there is one. The flag says the unified move is left to the runtime
/// (a kernel without clone3).
fn fork_joined(flags: nix::sched::CloneFlags, join: Option<&SelfJoin>) -> (nix::Result<ForkResult>, bool) {
    match join.and_then(SelfJoin::unified_dir) {
        Some(dir) => match sys::fork_into_cgroup(flags, dir) {
            Err(nix::errno::Errno::ENOSYS | nix::errno::Errno::E2BIG) => (sys::fork_into(flags), true),
            other => (other, false),
        },
        None => (sys::fork_into(flags), false),
    }
}

/// A new container's init forked straight into its new namespaces, as
/// crun does: without a user namespace or namespaces to join there is
/// nothing an intermediate process must do first, and a fork, an exit and
/// a round trip fewer per container.
///
/// The init also puts itself in its cgroup (berth_cgroups::SelfJoin): born
/// in the unified hierarchy's cgroup by clone3, it moves itself in every v1
/// hierarchy, which spares it the kernel's global migration lock and the
/// RCU grace period a move by the runtime waits for after a quiet spell (on
/// this host ~10 ms, most of a container's start). Then it makes its
/// cgroup namespace there, as the intermediate would have. Only on a kernel
/// without clone3 does the runtime still move it in the unified hierarchy,
/// and the init waits for that (Proceed).
fn spawn_init_directly(plan: &Plan) -> Result<Spawned> {
    let (mine, theirs) = Channel::pair()?;
    let flags = plan.ns.unshare - nix::sched::CloneFlags::CLONE_NEWCGROUP;
    let join = plan.cgroup.as_ref().map(|cg| cg.self_join()).transpose()?;
    let step = || format!("fork into namespaces {}", namespaces::flag_names(flags));
    let (forked, runtime_moves_it) = fork_joined(flags, join.as_ref());
    match forked.step(step)? {
        ForkResult::Child => {
            drop(mine);
            init::direct_init(plan, &theirs, join.as_ref(), runtime_moves_it)
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            if runtime_moves_it {
                let mut reaper = Reaper(Some(child));
                join.as_ref().map(|j| j.add_pid_unified(child.as_raw())).transpose()?;
                mine.send(&Msg::Proceed)?;
                reaper.0 = None;
            }
            Ok(Spawned { pid: child.as_raw(), chan: mine, early: None })
        }
    }
}

/// process.execCPUAffinity, which runtime-spec applies to exec'd processes
/// only ("not applicable to the container's init process"). `exec`
/// without --process copies config.json's process, so its setting applies
/// there, as with runc.
fn exec_cpu_affinity(plan: &Plan, role: Role) -> Option<&oci_spec::runtime::ExecCPUAffinity> {
    (role == Role::Exec).then(|| plan.process.exec_cpu_affinity().as_ref()).flatten()
}

/// Kills and reaps the intermediate if setup fails half-way.
struct Reaper(Option<Pid>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = sys::wait_exit(pid);
        }
    }
}

/// runc's rules for terminals: a tty needs somewhere to send the master
/// (a console socket, or the foreground runtime itself), and a console
/// socket is only for a tty.
pub(crate) fn check_console(terminal: bool, has_socket: bool, foreground: bool) -> Result<()> {
    if terminal && !has_socket && !foreground {
        return Err(Error::Usage(
            "cannot allocate tty if berth-runtime will detach without setting console socket".into(),
        ));
    }
    if !terminal && has_socket {
        return Err(Error::Usage("cannot use console socket if berth-runtime will not detach or allocate tty".into()));
    }
    Ok(())
}

/// Where the pty master goes: a connected console socket, or a socketpair
/// whose other end the foreground runtime keeps. Returns (for the
/// container, kept here).
pub(crate) fn console_sockets(
    terminal: bool,
    console_socket: Option<&Path>,
) -> Result<(Option<OwnedFd>, Option<OwnedFd>)> {
    if let Some(path) = console_socket {
        let s = UnixStream::connect(path).step(|| format!("connect to console socket '{}'", path.display()))?;
        return Ok((Some(OwnedFd::from(s)), None));
    }
    if !terminal {
        return Ok((None, None));
    }
    let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
        .step(|| "socketpair for the terminal")?;
    Ok((Some(theirs), Some(ours)))
}

/// linux.seccomp, built now so a bad profile fails before anything starts,
/// and, for a notifying filter, the connection to its agent (listenerPath
/// is a host path the container process cannot reach).
/// `state_root` holds the compiled-filter cache.
pub(crate) fn seccomp_for(
    spec: &oci_spec::runtime::Spec,
    state_root: Option<&std::path::Path>,
) -> Result<(Option<crate::seccomp::Filter>, Option<OwnedFd>)> {
    let Some(s) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) else { return Ok((None, None)) };
    let cache = state_root.map(|r| r.join(crate::seccomp::CACHE_DIR));
    let filter = crate::seccomp::build_cached(s, cache.as_deref())?;
    let listener = match (filter.notifies(), s.listener_path()) {
        (true, Some(path)) => Some(OwnedFd::from(
            UnixStream::connect(path).step(|| format!("connect to linux.seccomp.listenerPath '{}'", path.display()))?,
        )),
        _ => None,
    };
    Ok((Some(filter), listener))
}

/// Receives the pty master the container process sent to our end.
pub(crate) fn receive_master(ours: &OwnedFd) -> Result<OwnedFd> {
    use std::os::fd::AsFd;
    let (_, mut fds) = recv_packet(ours.as_fd())
        .step(|| "receive the pty master")?
        .ok_or_else(|| Error::Container("the container sent no pty master".into()))?;
    fds.pop().ok_or_else(|| Error::Container("the container sent no pty master".into()))
}

/// The fds above stdio this process was started with, noted by
/// [`note_inherited_fds`] before the runtime opens any of its own.
static INHERITED: std::sync::OnceLock<Vec<i32>> = std::sync::OnceLock::new();

/// Notes which fds the caller handed over. Call first thing in main: an
/// fd the runtime opens later (its signalfd, sockets) may take a number in
/// the --preserve-fds range and must not pass to the container.
pub fn note_inherited_fds() {
    let listed: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).filter(|fd| *fd >= 3).collect())
        .unwrap_or_default();
    // The listing's own directory fd is closed by now: probing drops it.
    let open = listed.into_iter().filter(|&fd| is_open(fd)).collect();
    let _ = INHERITED.set(open);
}

fn is_open(fd: i32) -> bool {
    // SAFETY: only queries the flags of a possibly-open fd number.
    let bfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    fcntl(bfd, FcntlArg::F_GETFD).is_ok()
}

/// The fds the program inherits beyond stdio: systemd socket activation's
/// (when LISTEN_PID names us) then --preserve-fds. Returns those of them
/// that the caller handed over, and the environment that tells the
/// program about them.
///
/// A number in the range that the caller did not hand over is skipped, not
/// an error: runc and crun start the container all the same
/// (`--preserve-fds 5` from a shell that holds fewer is common), and crun
/// passes exactly the open ones, as berth does.
pub(crate) fn inherited_fds(preserve: u32) -> (Vec<i32>, Vec<String>) {
    let listen = match (std::env::var("LISTEN_FDS"), std::env::var("LISTEN_PID")) {
        (Ok(n), Ok(pid)) if pid.parse::<u32>().ok() == Some(std::process::id()) => n.parse::<u32>().unwrap_or(0),
        _ => 0,
    };
    let total = listen.saturating_add(preserve).min(i32::MAX as u32 - 3) as i32;
    let handed_over = |fd: &i32| INHERITED.get().is_none_or(|fds| fds.contains(fd));
    let open: Vec<i32> = (3..3 + total).filter(|fd| handed_over(fd) && is_open(*fd)).collect();
    if open.len() < total as usize {
        tracing::debug!(
            "of fds 3-{} (LISTEN_FDS/--preserve-fds) only {open:?} are open; the rest are skipped",
            2 + total
        );
    }
    let env = if listen > 0 { vec![format!("LISTEN_FDS={listen}"), "LISTEN_PID=1".to_string()] } else { Vec::new() };
    (open, env)
}

/// Writes a pid file as runc does: the number, no newline, atomically.
pub(crate) fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let path = std::path::absolute(path).step(|| format!("pid file {}", path.display()))?;
    crate::container::write_atomic(&path, pid.to_string().as_bytes())
}

/// The cgroup a new container gets.
pub(crate) fn default_cgroup_path(id: &str) -> std::path::PathBuf {
    // Relative, as runc's default is: under the caller's own cgroup, in a
    // parent of berth's own.
    Path::new("berth").join(id)
}
