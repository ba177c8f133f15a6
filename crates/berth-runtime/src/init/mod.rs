//! What happens in the container's processes, in the order it happens.
//!
//! `create` forks an *intermediate* process, which joins or creates the
//! namespaces and forks the container's *init*; the intermediate then exits
//! (a new pid namespace only applies to children, so one fork is needed
//! after unshare). The init sets up the root filesystem and the process,
//! reports Ready, waits for `start`, and execs the user's program.
//!
//! `exec` follows the same path with the container's namespaces joined
//! instead of created, and no rootfs work.
//!
//! The runtime is single-threaded, so these forked processes may run
//! ordinary Rust code until they exec (see `sys::fork`).

pub mod attrs;
pub mod console;
mod devices;
pub mod mount_opts;
mod mounts;
pub mod namespaces;
mod paths;
pub mod process;
pub mod rootfs;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use berth_cgroups::{Cgroup, Layout, SelfJoin};
use nix::sys::stat::{Mode, umask};
use nix::unistd::{ForkResult, Gid, Uid, setresgid, setresuid, setsid};
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};

use crate::channel::{Channel, Msg};
use crate::container::OciState;
use crate::error::{Context, Error, Result};
use crate::hooks::{self, HookKind};
use crate::sys;
use namespaces::NsPlan;
use rootfs::Rootfs;

/// Everything a container's processes need, prepared by the runtime before
/// it forks (and so simply inherited).
pub struct Plan {
    pub id: String,
    pub spec: Spec,
    /// The process to run: config.json's for create, the exec'd one for exec.
    pub process: Process,
    pub rootfs: PathBuf,
    pub ns: NsPlan,
    pub layout: Option<Layout>,
    pub cgroup: Option<Cgroup>,
    /// A connected console socket: the pty master goes there.
    pub console: Option<OwnedFd>,
    /// create: the socket the init waits on for `start`.
    pub start_listener: Option<OwnedFd>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    /// The fds (3 and up, ascending) that pass to the program ($LISTEN_FDS
    /// and --preserve-fds); every other fd closes at exec.
    pub keep_fds: Vec<i32>,
    /// Added to the program's environment (LISTEN_FDS, LISTEN_PID).
    pub extra_env: Vec<String>,
    /// linux.seccomp, built and ready to load.
    pub seccomp: Option<crate::seccomp::Filter>,
    /// Connected to linux.seccomp.listenerPath, for a notifying filter.
    pub seccomp_listener: Option<OwnedFd>,
    /// exec: the container's state, sent to the seccomp listener (create
    /// sends the state the hooks got).
    pub exec_state: Option<OciState>,
    /// Idmapped trees for config.json's mounts, by index (create only).
    pub idmapped: crate::launch::IdmappedTrees,
    /// The engine's overlay to mount on the rootfs inside the container's
    /// mount namespace (create only; see [`berth_fs::overlay::ANNOTATION`]).
    pub rootfs_overlay: Option<berth_fs::overlay::Overlay>,
}

/// Which container process the intermediate forks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Init,
    Exec,
}

/// The intermediate process. Never returns.
pub fn intermediate(plan: &Plan, chan: &Channel, role: Role, join: Option<&SelfJoin>) -> ! {
    let code = match run_intermediate(plan, chan, role, join) {
        Ok(()) => 0,
        Err(e) => {
            let _ = chan.send(&Msg::failure(&e));
            1
        }
    };
    sys::exit_now(code)
}

fn run_intermediate(plan: &Plan, chan: &Channel, role: Role, join: Option<&SelfJoin>) -> Result<()> {
    // First, while still one thread in the runtime's namespaces (see
    // berth_cgroups::SelfJoin); the container process forked below inherits it.
    if let Some(join) = join {
        join.join_v1()?;
    }
    plan.ns.join_all()?;
    plan.ns.unshare_user()?;
    chan.send(&Msg::Hello)?;
    chan.expect(&Msg::Proceed, "runtime")?;
    if role == Role::Init && plan.ns.has(LinuxNamespaceType::User) {
        // Become the namespace's root; the program's own ids come later.
        setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0)).step(|| "setgid 0 in the user namespace")?;
        setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).step(|| "setuid 0 in the user namespace")?;
    }
    plan.ns.unshare_rest()?;
    // An exec'd process cannot learn its pid in the runtime's pid namespace
    // (its /proc is the container's), and the seccomp agent is told that
    // pid: this process, still outside, passes it down.
    let pid_pipe = if role == Role::Exec && plan.seccomp_listener.is_some() {
        Some(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).step(|| "pipe for the process's pid")?)
    } else {
        None
    };
    match sys::fork().step(|| "fork the container process")? {
        ForkResult::Child => match role {
            Role::Init => init_main(plan, chan),
            Role::Exec => exec_main(plan, chan, pid_pipe.map(|(r, _)| r)),
        },
        ForkResult::Parent { child } => {
            if let Some((_, w)) = &pid_pipe {
                nix::unistd::write(w, &child.as_raw().to_ne_bytes()).step(|| "pass the process its pid")?;
            }
            chan.send(&Msg::Pid(child.as_raw()))
        }
    }
}

/// A new container's init that was forked straight into its namespaces
/// (launch::spawn_init_directly): it joins its cgroup in every v1
/// hierarchy itself (still one thread), and the namespaces it shares, waits for the runtime when that
/// has the unified one to do, makes its cgroup namespace (rooted where it
/// now is), then does the init's work.
pub fn direct_init(plan: &Plan, chan: &Channel, join: Option<&SelfJoin>, runtime_moves_it: bool) -> ! {
    let cgroupns = nix::sched::CloneFlags::CLONE_NEWCGROUP;
    let ready = (|| {
        if let Some(join) = join {
            join.join_v1()?;
        }
        plan.ns.join_all()?;
        if runtime_moves_it {
            chan.expect(&Msg::Proceed, "runtime")?;
        }
        if plan.ns.unshare.contains(cgroupns) {
            nix::sched::unshare(cgroupns).step(|| "create cgroup namespace")?;
        }
        Ok(())
    })();
    if let Err(e) = ready {
        let _ = chan.send(&Msg::failure(&e));
        sys::exit_now(1)
    }
    init_main(plan, chan)
}

/// The program to exec once the container is set up.
struct Prepared {
    program: PathBuf,
    env: Vec<String>,
    /// The state hooks get (create only).
    state: Option<OciState>,
    /// exec: the process's pid in the runtime's pid namespace, for the
    /// seccomp agent (an init's is in its state).
    pid: Option<i32>,
}

fn init_main(plan: &Plan, chan: &Channel) -> ! {
    let prepared = match prepare_init(plan, chan) {
        Ok(p) => p,
        Err(e) => {
            let _ = chan.send(&Msg::failure(&e));
            sys::exit_now(1)
        }
    };
    if chan.expect(&Msg::Committed, "runtime").is_err() {
        sys::exit_now(1)
    }
    let Some(listener) = plan.start_listener.as_ref() else { sys::exit_now(1) };
    let mut conn = match wait_for_start(listener) {
        Ok(c) => c,
        Err(_) => sys::exit_now(1),
    };
    let err = match start_program(plan, &prepared) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    // `start` is reading: it reports this and exits non-zero. The reply is
    // the channel's failure message (JSON), so an exec failure's errno
    // reaches `start` typed.
    let reply = serde_json::to_vec(&Msg::failure(&err)).unwrap_or_else(|_| err.to_string().into_bytes());
    let _ = conn.write_all(&reply);
    sys::exit_now(1)
}

/// Everything up to Ready, in order.
fn prepare_init(plan: &Plan, chan: &Channel) -> Result<Prepared> {
    setsid().step(|| "setsid")?;
    // Device nodes and files get exactly the modes config.json gives.
    umask(Mode::empty());
    set_names(&plan.spec)?;
    if plan.ns.unshare.contains(nix::sched::CloneFlags::CLONE_NEWNET) {
        crate::netdev::loopback_up()?;
    }
    let state = if plan.ns.has(LinuxNamespaceType::Mount) {
        build_rootfs(plan, chan)?
    } else {
        share_host_mount_ns(plan, chan)?
    };
    if !plan.no_new_keyring {
        join_keyring(&plan.id)?;
    }
    let prepared = finish_process(plan, Some(state), None)?;
    chan.send(&Msg::Ready)?;
    Ok(prepared)
}

/// In the container's own mount namespace: the rootfs, its mounts and
/// devices, hooks, the kernel's view (sysctl, read-only and masked paths),
/// then pivot_root and the terminal. Returns the state hooks get.
fn build_rootfs(plan: &Plan, chan: &Channel) -> Result<OciState> {
    let spec = &plan.spec;
    let process = &plan.process;
    let linux = spec.linux().as_ref();
    rootfs::prepare(&plan.rootfs, linux.and_then(|l| l.rootfs_propagation().as_deref()), plan.rootfs_overlay.as_ref())?;
    let root = Rootfs::open(&plan.rootfs)?;
    let in_userns = plan.ns.has(LinuxNamespaceType::User);
    let env = mounts::MountEnv {
        rootfs: &root,
        in_userns,
        new_cgroupns: plan.ns.unshare.contains(namespaces::clone_flag(LinuxNamespaceType::Cgroup)),
        layout: plan.layout.as_ref(),
        cgroup: plan.cgroup.as_ref(),
        mount_label: linux
            .and_then(|l| l.mount_label().as_deref())
            .filter(|l| !l.is_empty() && crate::lsm::selinux_enabled()),
        idmapped: &plan.idmapped,
    };
    mounts::mount_all(&env, spec.mounts().as_deref().unwrap_or_default())?;
    devices::setup(&root, spec, in_userns)?;
    let pty = if process.terminal().unwrap_or(false) { Some(console::open_in_rootfs(&root, process)?) } else { None };
    let state = state_for_hooks(plan, chan)?;
    hooks::run(spec, HookKind::CreateContainer, &state)?;
    if let Some(sysctl) = linux.and_then(|l| l.sysctl().as_ref()) {
        paths::write_sysctls(&root, sysctl)?;
    }
    paths::make_readonly(&root, linux.and_then(|l| l.readonly_paths().as_deref()).unwrap_or_default())?;
    paths::mask(&root, linux.and_then(|l| l.masked_paths().as_deref()).unwrap_or_default())?;
    ensure_cwd(&root, process.cwd())?;
    process::apply_oom_score_adj(process)?;
    process::apply_rlimits(process)?;
    drop(root);
    if plan.no_pivot {
        rootfs::move_root(&plan.rootfs)?;
    } else {
        rootfs::pivot(&plan.rootfs)?;
    }
    rootfs::propagate_new_root(linux.and_then(|l| l.rootfs_propagation().as_deref()))?;
    if spec.root().as_ref().and_then(|r| r.readonly()).unwrap_or(false) {
        rootfs::make_root_readonly()?;
    }
    if let Some(pty) = pty {
        hand_over_terminal(plan, &pty)?;
    }
    Ok(state)
}

/// No mount namespace in config.json: the container shares the runtime's,
/// as the runtime spec says it must. Mounting anything there would change
/// the host's mount table (runc does, and leaves the mounts behind after
/// delete), so berth only chroots into the rootfs and says what that
/// leaves out.
fn share_host_mount_ns(plan: &Plan, chan: &Channel) -> Result<OciState> {
    let spec = &plan.spec;
    let process = &plan.process;
    let linux = spec.linux().as_ref();
    let skipped: Vec<&str> = [
        (spec.mounts().as_ref().is_some_and(|m| !m.is_empty()), "mounts"),
        (linux.and_then(|l| l.devices().as_ref()).is_some_and(|d| !d.is_empty()), "linux.devices"),
        (linux.and_then(|l| l.masked_paths().as_ref()).is_some_and(|m| !m.is_empty()), "linux.maskedPaths"),
        (linux.and_then(|l| l.readonly_paths().as_ref()).is_some_and(|r| !r.is_empty()), "linux.readonlyPaths"),
        (spec.root().as_ref().and_then(|r| r.readonly()).unwrap_or(false), "root.readonly"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect();
    if !skipped.is_empty() {
        tracing::warn!(
            "no mount namespace in linux.namespaces: the container shares the host's, so {} are not applied \
             (they would change the host's mounts)",
            skipped.join(", ")
        );
    }
    let state = state_for_hooks(plan, chan)?;
    hooks::run(spec, HookKind::CreateContainer, &state)?;
    if let Some(sysctl) = linux.and_then(|l| l.sysctl().as_ref()) {
        // The host's /proc/sys shows this process's own namespaces.
        paths::write_sysctls(&Rootfs::open(Path::new("/"))?, sysctl)?;
    }
    process::apply_oom_score_adj(process)?;
    process::apply_rlimits(process)?;
    rootfs::chroot_into(&plan.rootfs)?;
    if process.terminal().unwrap_or(false) {
        hand_over_terminal(plan, &console::open_here(process)?)?;
    }
    Ok(state)
}

/// Whether the init must wait for the runtime between its mounts and the
/// rest of its setup: the runtime then runs the prestart and createRuntime
/// hooks and has moved netDevices in (sysctls may name them), and sends
/// the state that createContainer and startContainer hooks and a seccomp
/// agent are given. Without any of those the init goes on alone: a round
/// trip fewer per container start.
pub fn waits_for_runtime(spec: &Spec, seccomp_listener: bool) -> bool {
    use HookKind::*;
    seccomp_listener
        || [Prestart, CreateRuntime, CreateContainer, StartContainer]
            .into_iter()
            .any(|k| !hooks::of(spec, k).is_empty())
        || spec.linux().as_ref().and_then(|l| l.net_devices().as_ref()).is_some_and(|d| !d.is_empty())
}

/// The state from the runtime if the init waits for it (see
/// [`waits_for_runtime`]); else one that no hook or agent will see (there
/// is none), for the init to know itself an init.
fn state_for_hooks(plan: &Plan, chan: &Channel) -> Result<OciState> {
    if waits_for_runtime(&plan.spec, plan.seccomp_listener.is_some()) {
        return runtime_hooks(chan);
    }
    Ok(OciState {
        oci_version: plan.spec.version().clone(),
        id: plan.id.clone(),
        pid: 0,
        status: crate::container::Status::Creating,
        bundle: PathBuf::new(),
        rootfs: plan.rootfs.clone(),
        created: String::new(),
        owner: String::new(),
        annotations: None,
    })
}

/// Asks the runtime to run prestart and createRuntime hooks; returns the
/// state that hooks in the container get.
fn runtime_hooks(chan: &Channel) -> Result<OciState> {
    chan.send(&Msg::RunHooks)?;
    match chan.recv()? {
        Some(Msg::HooksDone(json)) => {
            serde_json::from_str(&json).map_err(|e| Error::Container(format!("bad state from the runtime: {e}")))
        }
        Some(Msg::Error(e)) => Err(Error::Container(e)),
        _ => Err(Error::Container("the runtime vanished while running hooks".into())),
    }
}

/// Sends the pty master to whoever holds the console socket and makes the
/// slave this process's terminal.
fn hand_over_terminal(plan: &Plan, pty: &console::Pty) -> Result<()> {
    let sock =
        plan.console.as_ref().ok_or_else(|| Error::Container("terminal requested without a console socket".into()))?;
    console::send_master(sock, &pty.master)?;
    console::attach_slave(&pty.slave)
}

fn set_names(spec: &Spec) -> Result<()> {
    if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(h).step(|| format!("sethostname {h:?}"))?;
    }
    if let Some(d) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
        sys::set_domainname(d).step(|| format!("setdomainname {d:?}"))?;
    }
    Ok(())
}

/// runc makes process.cwd if it is missing; resolved inside the rootfs.
fn ensure_cwd(root: &Rootfs, cwd: &Path) -> Result<()> {
    if root.resolve_opt(cwd)?.is_none() {
        root.mkdir(cwd)?;
    }
    Ok(())
}

fn join_keyring(id: &str) -> Result<()> {
    match sys::join_session_keyring(id) {
        Ok(()) => Ok(()),
        // No keyrings in this kernel, or keyctl filtered by the caller's
        // own sandbox: the container shares the caller's keyring.
        Err(nix::errno::Errno::ENOSYS) => Ok(()),
        Err(e @ (nix::errno::Errno::EPERM | nix::errno::Errno::EACCES)) => {
            tracing::warn!("cannot create a session keyring ({e}); the container shares the caller's");
            Ok(())
        }
        Err(e) => Err(Error::os("join a new session keyring", e)),
    }
}

/// Identity, capabilities, no_new_privs, cwd, umask, and the program's
/// path and environment: shared by init and exec.
fn finish_process(plan: &Plan, state: Option<OciState>, pid: Option<i32>) -> Result<Prepared> {
    let process = &plan.process;
    let seccomp_at = seccomp_at(plan, state.is_some());
    // Before seccomp (a profile may filter these calls) and while the
    // capabilities a real-time policy or a raised priority needs are held.
    apply_attrs(plan)?;
    // Enter the cwd as root first (it may be unreadable to the user but is
    // still the place to start); if that fails, try again as the user.
    let early_cwd = process::enter_cwd(process.cwd());
    crate::lsm::set_exec_labels(process)?;
    if seccomp_at == SeccompAt::Identity {
        load_seccomp(plan, state.as_ref(), pid)?;
    }
    process::apply_identity(process)?;
    if early_cwd.is_err() {
        process::enter_cwd(process.cwd())?;
    }
    if process.no_new_privileges().unwrap_or(false) {
        sys::set_no_new_privs().step(|| "prctl(PR_SET_NO_NEW_PRIVS)")?;
    }
    let mask = process.user().umask().unwrap_or(0o022);
    umask(Mode::from_bits_truncate(mask));
    let env = process::environment(process, &plan.extra_env);
    let args = process.args().as_deref().unwrap_or_default();
    let arg0 = args.first().ok_or_else(|| Error::Container("process.args is empty".into()))?;
    let program = process::find_program(arg0, &env)?;
    if seccomp_at == SeccompAt::Ready {
        load_seccomp(plan, state.as_ref(), pid)?;
    }
    Ok(Prepared { program, env, state, pid })
}

/// process.scheduler and process.ioPriority (the process's own),
/// linux.personality and linux.memoryPolicy (the container's, so exec'd
/// processes get them too): all kept across exec.
fn apply_attrs(plan: &Plan) -> Result<()> {
    if let Some(s) = plan.process.scheduler() {
        attrs::apply_scheduler(s)?;
    }
    if let Some(io) = plan.process.io_priority() {
        attrs::apply_io_priority(io)?;
    }
    let linux = plan.spec.linux().as_ref();
    if let Some(p) = linux.and_then(|l| l.personality().as_ref()) {
        attrs::apply_personality(p)?;
    }
    if let Some(m) = linux.and_then(|l| l.memory_policy().as_ref()) {
        attrs::apply_memory_policy(m)?;
    }
    Ok(())
}

/// When a container process loads linux.seccomp: just before it takes
/// its identity, reports Ready, or execs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeccompAt {
    /// Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: before
    /// the capabilities go.
    Identity,
    /// An init whose filter notifies: before it reports Ready, so the agent
    /// at listenerPath gets the fd during `create`, as runc sends it (an
    /// agent may wait for it before anyone runs `start`).
    Ready,
    /// Otherwise as late as it gets, so only the exec runs filtered.
    Exec,
}

fn seccomp_at(plan: &Plan, init: bool) -> SeccompAt {
    if !no_new_privs(plan) {
        SeccompAt::Identity
    } else if init && plan.seccomp.as_ref().is_some_and(|f| f.notifies()) {
        SeccompAt::Ready
    } else {
        SeccompAt::Exec
    }
}

fn no_new_privs(plan: &Plan) -> bool {
    plan.process.no_new_privileges().unwrap_or(false)
}

/// Loads linux.seccomp into this process and hands a notification fd to
/// the seccomp agent, with the container's state: "creating" from an init
/// (as runc sends it), the container's current state from exec, whose
/// `pid` is given.
fn load_seccomp(plan: &Plan, state: Option<&OciState>, pid: Option<i32>) -> Result<()> {
    let Some(filter) = &plan.seccomp else { return Ok(()) };
    let notify_fd = filter.load()?;
    let (Some(fd), Some(sock)) = (notify_fd, plan.seccomp_listener.as_ref()) else { return Ok(()) };
    let state =
        state.or(plan.exec_state.as_ref()).ok_or_else(|| Error::Container("no state for the seccomp agent".into()))?;
    let metadata =
        plan.spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()).and_then(|s| s.listener_metadata().clone());
    let pid = pid.unwrap_or(state.pid);
    crate::seccomp::send_to_listener(sock.as_fd(), &fd, pid, state, metadata.as_deref().unwrap_or(""))
}

/// Blocks until `start` connects and asks for the program.
fn wait_for_start(listener: &OwnedFd) -> Result<UnixStream> {
    loop {
        let fd = rustix::net::accept_with(listener, rustix::net::SocketFlags::CLOEXEC)
            .map_err(std::io::Error::from)
            .step(|| "wait for start")?;
        let mut conn = UnixStream::from(fd);
        let mut byte = [0u8; 1];
        if conn.read_exact(&mut byte).is_ok() && byte[0] == b'S' {
            return Ok(conn);
        }
    }
}

/// After `start`: startContainer hooks, then exec. Returns only on failure.
fn start_program(plan: &Plan, p: &Prepared) -> Result<Infallible> {
    if let Some(state) = &p.state {
        let state = OciState { status: crate::container::Status::Created, ..state.clone() };
        // A hook without an env of its own sees the program's (runc and crun
        // run it from an init whose environment is already the program's),
        // never the caller's of `create`.
        hooks::run_with_env(&plan.spec, HookKind::StartContainer, &state, Some(&p.env))?;
    }
    Err(exec_program(plan, p))
}

/// Leaves the program only stdio and the fds it is meant to inherit,
/// restores signal defaults, and execs.
fn exec_program(plan: &Plan, p: &Prepared) -> Error {
    let end = plan.keep_fds.last().map_or(3, |fd| fd + 1);
    for fd in 3..end {
        // A gap in the kept range may hold one of the runtime's own fds.
        let r = if plan.keep_fds.contains(&fd) { sys::clear_cloexec(fd) } else { sys::set_cloexec(fd) };
        match r {
            Ok(()) | Err(nix::errno::Errno::EBADF) => {}
            Err(e) => return Error::os(format!("keep fd {fd} for the container"), e),
        }
    }
    if let Err(e) = sys::cloexec_from(end as u32) {
        return Error::os("close the runtime's fds", e);
    }
    if let Err(e) = sys::reset_signals() {
        return Error::os("reset signals", e);
    }
    if seccomp_at(plan, p.state.is_some()) == SeccompAt::Exec
        && let Err(e) = load_seccomp(plan, p.state.as_ref(), p.pid)
    {
        return e;
    }
    let args = plan.process.args().as_deref().unwrap_or_default();
    process::exec(&p.program, args, &p.env)
}

fn exec_main(plan: &Plan, chan: &Channel, pid_pipe: Option<OwnedFd>) -> ! {
    let err = match exec_setup(plan, pid_pipe) {
        Ok(p) => exec_program(plan, &p),
        Err(e) => e,
    };
    let _ = chan.send(&Msg::failure(&err));
    sys::exit_now(1)
}

/// exec's container process, up to the exec: it already runs in the
/// container's namespaces and root.
fn exec_setup(plan: &Plan, pid_pipe: Option<OwnedFd>) -> Result<Prepared> {
    setsid().step(|| "setsid")?;
    let pid = pid_pipe.map(read_pid).transpose()?;
    let process = &plan.process;
    if process.terminal().unwrap_or(false) {
        hand_over_terminal(plan, &console::open_here(process)?)?;
    }
    process::apply_oom_score_adj(process)?;
    process::apply_rlimits(process)?;
    finish_process(plan, None, pid)
}

/// The pid the intermediate wrote (see run_intermediate).
fn read_pid(pipe: OwnedFd) -> Result<i32> {
    let mut bytes = [0u8; 4];
    std::fs::File::from(pipe).read_exact(&mut bytes).step(|| "read the process's pid")?;
    Ok(i32::from_ne_bytes(bytes))
}
