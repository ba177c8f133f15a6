use anyhow::{Context, Result};
use berth_runtime::launch::{self, CreateOptions};

use super::Globals;

pub fn run(g: &Globals, a: liboci_cli::Create) -> Result<i32> {
    g.refuse_systemd()?;
    let preserve_fds = u32::try_from(a.preserve_fds).context("--preserve-fds must not be negative")?;
    launch::create(&CreateOptions {
        root: &g.root,
        id: &a.container_id,
        bundle: &a.bundle,
        console_socket: a.console_socket.as_deref(),
        pid_file: a.pid_file.as_deref(),
        no_pivot: a.no_pivot,
        no_new_keyring: a.no_new_keyring,
        preserve_fds,
        foreground: false,
    })
    .context("create failed")?;
    Ok(0)
}
