use anyhow::{Context, Result, bail};
use berth_runtime::config::{load_json, validate_process};
use berth_runtime::foreground::{self, Signals};
use berth_runtime::launch::{self, ExecOptions};
use berth_runtime::sys;
use oci_spec::runtime::{Capabilities, Capability, Process, Spec};

use super::Globals;

pub fn run(g: &Globals, a: liboci_cli::Exec) -> Result<i32> {
    let c = g.load(&a.container_id)?;
    let spec = c.spec()?;
    let process = build_process(&a, &spec)?;
    let preserve_fds = u32::try_from(a.preserve_fds).context("--preserve-fds must not be negative")?;
    if a.cgroup.is_some() {
        bail!("--cgroup (exec in a sub-cgroup) is not supported yet");
    }
    let foreground = !a.detach;
    let signals = if foreground { Some(Signals::block()?) } else { None };
    if foreground {
        sys::set_child_subreaper().context("prctl(PR_SET_CHILD_SUBREAPER)")?;
    }
    let execed = launch::exec(ExecOptions {
        container: &c,
        process,
        console_socket: a.console_socket.as_deref(),
        pid_file: a.pid_file.as_deref(),
        preserve_fds,
        ignore_paused: a.ignore_paused,
        foreground,
    })
    .context("exec failed")?;
    let Some(signals) = signals else { return Ok(0) };
    Ok(foreground::wait(execed.pid, execed.pty_master, &signals)?)
}

/// The process to exec: --process as given, or the container's process
/// with the command line's arguments and overrides, as runc builds it.
fn build_process(a: &liboci_cli::Exec, spec: &Spec) -> Result<Process> {
    if let Some(file) = &a.process {
        // Checked here too, so an error names the file.
        let p = load_json(file)?;
        validate_process(file, &p)?;
        return Ok(p);
    }
    if a.command.is_empty() {
        bail!("exec: no command given (pass the program and its arguments, or --process FILE)");
    }
    let mut p = spec.process().clone().unwrap_or_default();
    p.set_args(Some(a.command.clone()));
    p.set_terminal(Some(a.tty));
    if !a.env.is_empty() {
        let mut env = p.env().clone().unwrap_or_default();
        env.extend(a.env.iter().map(|(k, v)| format!("{k}={v}")));
        p.set_env(Some(env));
    }
    if let Some(cwd) = &a.cwd {
        p.set_cwd(cwd.clone());
    }
    if let Some((uid, gid)) = a.user {
        let mut user = p.user().clone();
        user.set_uid(uid);
        if let Some(gid) = gid {
            user.set_gid(gid);
        }
        p.set_user(user);
    }
    if !a.additional_gids.is_empty() {
        let mut user = p.user().clone();
        user.set_additional_gids(Some(a.additional_gids.clone()));
        p.set_user(user);
    }
    if a.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    // Checked against the host's LSMs with the rest of the process.
    if let Some(profile) = &a.apparmor {
        p.set_apparmor_profile(Some(profile.clone()));
    }
    if let Some(label) = &a.process_label {
        p.set_selinux_label(Some(label.clone()));
    }
    if !a.cap.is_empty() {
        add_caps(&mut p, &a.cap)?;
    }
    Ok(p)
}

/// --cap adds to the bounding, effective and permitted sets (and ambient
/// when the process has inheritable ones), as runc does.
fn add_caps(p: &mut Process, names: &[String]) -> Result<()> {
    let mut caps = p.capabilities().clone().unwrap_or_default();
    for name in names {
        let cap: Capability = serde_json::from_value(serde_json::Value::String(name.clone()))
            .map_err(|_| anyhow::anyhow!("--cap: unknown capability {name:?}"))?;
        let add = |set: &Option<Capabilities>| -> Option<Capabilities> {
            let mut s = set.clone().unwrap_or_default();
            s.insert(cap);
            Some(s)
        };
        caps.set_bounding(add(caps.bounding()));
        caps.set_effective(add(caps.effective()));
        caps.set_permitted(add(caps.permitted()));
        if caps.inheritable().as_ref().is_some_and(|i| !i.is_empty()) {
            caps.set_ambient(add(caps.ambient()));
        }
    }
    p.set_capabilities(Some(caps));
    Ok(())
}
