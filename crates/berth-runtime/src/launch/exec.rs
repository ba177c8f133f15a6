//! `exec`: a new process in an existing container's namespaces and cgroup.

use std::os::fd::OwnedFd;
use std::path::Path;

use oci_spec::runtime::Process;

use super::{check_console, console_sockets, inherited_fds, receive_master, seccomp_for, spawn, write_pid_file};
use crate::channel::Msg;
use crate::config::validate_process;
use crate::container::{Container, Status};
use crate::error::{Error, Result};
use crate::init::namespaces::NsPlan;
use crate::init::{Plan, Role};

pub struct ExecOptions<'a> {
    pub container: &'a Container,
    pub process: Process,
    pub console_socket: Option<&'a Path>,
    pub pid_file: Option<&'a Path>,
    pub preserve_fds: u32,
    pub ignore_paused: bool,
    /// The caller waits for the process (with a terminal, it gets the
    /// pty master back).
    pub foreground: bool,
}

pub struct Execed {
    /// The process's pid, in the runtime's pid namespace.
    pub pid: i32,
    pub pty_master: Option<OwnedFd>,
}

/// Starts the process and returns once it has exec'd its program (or
/// failed to, with the reason).
pub fn exec(o: ExecOptions<'_>) -> Result<Execed> {
    let c = o.container;
    match c.status() {
        Status::Stopped => return Err(Error::State("cannot exec in a stopped container".into())),
        Status::Paused if !o.ignore_paused => {
            return Err(Error::State("cannot exec in a paused container (use --ignore-paused to override)".into()));
        }
        _ => {}
    }
    let spec = c.spec()?;
    validate_process(Path::new("process"), &o.process)?;
    crate::lsm::check(Path::new("process"), &o.process, None)?;
    let terminal = o.process.terminal().unwrap_or(false);
    check_console(terminal, o.console_socket.is_some(), o.foreground)?;
    let (keep_fds, extra_env) = inherited_fds(o.preserve_fds)?;
    let (console, ours) = console_sockets(terminal, o.console_socket)?;
    // exec'd processes get the container's seccomp profile, as with runc.
    let (seccomp, seccomp_listener) = seccomp_for(&spec, c.dir.parent())?;
    let exec_state = c.oci_state(c.status());
    let plan = Plan {
        id: c.id().to_string(),
        ns: NsPlan::for_exec(&spec, c.init_pid())?,
        spec,
        process: o.process,
        rootfs: c.state.rootfs.clone(),
        layout: None,
        cgroup: c.state.cgroup.clone(),
        console,
        start_listener: None,
        no_pivot: false,
        no_new_keyring: true,
        keep_fds,
        extra_env,
        seccomp,
        seccomp_listener,
        exec_state: Some(exec_state),
        idmapped: Default::default(),
    };
    let spawned = spawn(&plan, Role::Exec)?;
    drop(plan);
    // The channel closes when the program is exec'd (all our fds are
    // close-on-exec); an Error comes instead if it was not.
    match spawned.chan.recv()? {
        None => {}
        Some(Msg::Error(e)) => return Err(Error::Container(e)),
        Some(other) => return Err(Error::Container(format!("unexpected message from exec: {other:?}"))),
    }
    let pty_master = ours.as_ref().map(receive_master).transpose()?;
    if let Some(p) = o.pid_file {
        write_pid_file(p, spawned.pid)?;
    }
    Ok(Execed { pid: spawned.pid, pty_master })
}
