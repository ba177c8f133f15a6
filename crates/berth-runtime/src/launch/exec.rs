//! `exec`: a new process in an existing container's namespaces and cgroup.

use std::os::fd::OwnedFd;
use std::path::Path;

use oci_spec::runtime::Process;

use super::{check_console, console_sockets, inherited_fds, receive_master, seccomp_for, spawn, write_pid_file};
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
    let mut process = o.process;
    if let Some(container) = spec.process() {
        inherit_from_container(&mut process, container);
    }
    validate_process(Path::new("process"), &process)?;
    crate::lsm::check(Path::new("process"), &process, None)?;
    let terminal = process.terminal().unwrap_or(false);
    check_console(terminal, o.console_socket.is_some(), o.foreground)?;
    let (keep_fds, extra_env) = inherited_fds(o.preserve_fds);
    let (console, ours) = console_sockets(terminal, o.console_socket)?;
    // exec'd processes get the container's seccomp profile, as with runc.
    let (seccomp, seccomp_listener) = seccomp_for(&spec, c.dir.parent())?;
    let exec_state = c.oci_state(c.status());
    let plan = Plan {
        id: c.id().to_string(),
        ns: NsPlan::for_exec(&spec, c.init_pid())?,
        spec,
        process,
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
        rootfs_overlay: None,
    };
    let spawned = spawn(&plan, Role::Exec)?;
    drop(plan);
    // The channel closes when the program is exec'd (all our fds are
    // close-on-exec); an Error comes instead if it was not.
    match spawned.chan.recv()? {
        None => {}
        Some(m) => {
            return Err(m
                .into_error()
                .unwrap_or_else(|other| Error::Container(format!("unexpected message from exec: {other:?}"))));
        }
    }
    let pty_master = ours.as_ref().map(receive_master).transpose()?;
    if let Some(p) = o.pid_file {
        write_pid_file(p, spawned.pid)?;
    }
    Ok(Execed { pid: spawned.pid, pty_master })
}

/// Fills in what an exec'd process leaves out from the container's own
/// process, so `exec --process p.json` never gets more than the container
/// was given (the runtime itself holds every capability). Field by field,
/// with what runc 1.1.5 does when p.json lacks it:
///
/// | field                        | runc 1.1.5                                  | berth                         |
/// |------------------------------|---------------------------------------------|-------------------------------|
/// | capabilities                 | the container's                             | the container's               |
/// | noNewPrivileges              | false (Go cannot tell missing from false)   | the container's; false if set |
/// | apparmorProfile, selinuxLabel| the container's (also when "")              | the container's (also when "")|
/// | rlimits (missing or [])      | meant to be the container's; the caller's in practice | the container's     |
/// | oomScoreAdj                  | always the container's (p.json's ignored)   | the container's               |
/// | user.umask                   | the caller's (exec never sets one)          | the container's               |
/// | scheduler, ioPriority        | not known to 1.1.5 (1.2+: the container's)  | the container's               |
/// | execCPUAffinity              | not known to 1.1.5 (1.3: p.json's own only) | p.json's own only             |
/// | user.uid/gid, cwd, args      | 0:0, refused, refused                       | required: refused             |
/// | user.additionalGids          | none                                        | none                          |
/// | env                          | empty                                       | empty                         |
/// | terminal, consoleSize        | false, none                                 | false, none                   |
///
/// noNewPrivileges is where berth parts from runc on purpose: p.json may
/// turn it off explicitly, but leaving it out must not.
fn inherit_from_container(p: &mut Process, container: &Process) {
    let unset = |s: &Option<String>| s.as_deref().is_none_or(str::is_empty);
    if p.capabilities().is_none() {
        p.set_capabilities(container.capabilities().clone());
    }
    if p.no_new_privileges().is_none() {
        p.set_no_new_privileges(container.no_new_privileges());
    }
    if unset(p.apparmor_profile()) {
        p.set_apparmor_profile(container.apparmor_profile().clone());
    }
    if unset(p.selinux_label()) {
        p.set_selinux_label(container.selinux_label().clone());
    }
    if p.rlimits().as_ref().is_none_or(|r| r.is_empty()) {
        p.set_rlimits(container.rlimits().clone());
    }
    if p.oom_score_adj().is_none() {
        p.set_oom_score_adj(container.oom_score_adj());
    }
    if p.user().umask().is_none() {
        let umask = container.user().umask();
        p.user_mut().set_umask(umask);
    }
    if p.scheduler().is_none() {
        p.set_scheduler(container.scheduler().clone());
    }
    if p.io_priority().is_none() {
        p.set_io_priority(*container.io_priority());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(json: &str) -> Process {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn what_an_exec_process_leaves_out_comes_from_the_container() {
        let container = process(
            r#"{"user":{"uid":1000,"gid":1000,"umask":23,"additionalGids":[7]},"cwd":"/srv","args":["init"],"env":["A=1"],
                "capabilities":{"bounding":["CAP_KILL"],"effective":["CAP_KILL"]},"noNewPrivileges":true,
                "apparmorProfile":"ctr-profile","selinuxLabel":"ctr-label","oomScoreAdj":300,
                "rlimits":[{"type":"RLIMIT_NOFILE","soft":10,"hard":20}]}"#,
        );
        let mut bare = process(r#"{"user":{"uid":0,"gid":0},"cwd":"/","args":["sh"],"apparmorProfile":""}"#);
        inherit_from_container(&mut bare, &container);
        assert_eq!(bare.capabilities(), container.capabilities());
        assert_eq!(bare.no_new_privileges(), Some(true));
        assert_eq!(bare.apparmor_profile().as_deref(), Some("ctr-profile"));
        assert_eq!(bare.selinux_label().as_deref(), Some("ctr-label"));
        assert_eq!(bare.oom_score_adj(), Some(300));
        assert_eq!(bare.rlimits(), container.rlimits());
        assert_eq!(bare.user().umask(), Some(23));
        // Identity, place and environment are the process's own.
        assert_eq!((bare.user().uid(), bare.user().gid()), (0, 0));
        assert_eq!(bare.user().additional_gids(), &None);
        assert_eq!(bare.cwd(), Path::new("/"));
        assert_eq!(bare.env(), &None);

        let mut explicit = process(
            r#"{"user":{"uid":0,"gid":0,"umask":0},"cwd":"/","args":["sh"],"noNewPrivileges":false,
                "capabilities":{},"oomScoreAdj":500,"rlimits":[{"type":"RLIMIT_NOFILE","soft":1,"hard":2}]}"#,
        );
        let before = explicit.clone();
        inherit_from_container(&mut explicit, &container);
        assert_eq!(explicit.no_new_privileges(), Some(false));
        assert_eq!(explicit.capabilities(), before.capabilities(), "empty sets stay empty");
        assert_eq!(explicit.oom_score_adj(), Some(500));
        assert_eq!(explicit.rlimits(), before.rlimits());
        assert_eq!(explicit.user().umask(), Some(0));
    }
}
