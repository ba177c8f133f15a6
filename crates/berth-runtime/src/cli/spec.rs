use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use anyhow::{Context, Result, bail};
use berth_runtime::template::{default_spec, to_runc_json};

/// Writes config.json into the bundle (default: here), as `runc spec`.
pub fn run(a: liboci_cli::Spec) -> Result<i32> {
    let dir = a.bundle.unwrap_or_else(|| ".".into());
    let file = dir.join("config.json");
    if file.exists() {
        bail!("File {} exists. Remove it first", file.display());
    }
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let spec = default_spec(a.rootless, cgroup2_unified(), uid, gid);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o666)
        .open(&file)
        .with_context(|| format!("create {}", file.display()))?;
    f.write_all(to_runc_json(&spec).as_bytes()).with_context(|| format!("write {}", file.display()))?;
    Ok(0)
}

/// On a cgroup v2 host the default spec adds a cgroup namespace, as runc's does.
fn cgroup2_unified() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}
