use anyhow::{Context, Result};
use berth_runtime::foreground::{self, Signals};
use berth_runtime::launch::{self, CreateOptions};
use berth_runtime::{lifecycle, sys};

use super::Globals;

/// create + start; in the foreground, wait, remove the container (unless
/// --keep) and exit with the container's exit code.
pub fn run(g: &Globals, a: liboci_cli::Run) -> Result<i32> {
    g.refuse_systemd()?;
    let preserve_fds = u32::try_from(a.preserve_fds).context("--preserve-fds must not be negative")?;
    let foreground = !a.detach;
    // Signals are blocked before the container is forked, so none is lost;
    // its processes unblock them before exec.
    let signals = if foreground { Some(Signals::block()?) } else { None };
    if foreground {
        // The init is forked by a helper that exits; as subreaper we
        // inherit it and can wait for it. (runc's --no-subreaper is
        // accepted, but waiting needs this.)
        sys::set_child_subreaper().context("prctl(PR_SET_CHILD_SUBREAPER)")?;
    }
    let created = launch::create(&CreateOptions {
        root: &g.root,
        id: &a.container_id,
        bundle: &a.bundle,
        console_socket: a.console_socket.as_deref(),
        pid_file: a.pid_file.as_deref(),
        no_pivot: a.no_pivot,
        no_new_keyring: a.no_new_keyring,
        preserve_fds,
        foreground,
    })
    .context("run failed")?;
    if let Err(e) = lifecycle::start(&created.container) {
        let _ = lifecycle::delete(&g.root, &a.container_id, true);
        return Err(anyhow::Error::new(e).context("run failed"));
    }
    let Some(signals) = signals else { return Ok(0) };
    let code = foreground::wait(created.container.init_pid(), created.pty_master, &signals)?;
    if !a.keep {
        lifecycle::delete(&g.root, &a.container_id, true)?;
    }
    Ok(code)
}
