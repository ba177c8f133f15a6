//! The cgroup v2 device controller: an eBPF program of type
//! BPF_PROG_TYPE_CGROUP_DEVICE attached to the container's cgroup.
//!
//! cgroup v2 has no devices.allow/devices.deny files. Instead the kernel runs
//! the BPF programs attached to a process's cgroup (and its ancestors) on
//! every open and mknod of a device node; each gets a `bpf_cgroup_dev_ctx`
//! (access_type = access << 16 | type, major, minor) and returns 1 to allow
//! or 0 to deny. [`program`] turns a rule list into such a program,
//! [`bpf`] loads it and swaps it in for the one attached before (the
//! split youki's `v2/devices/{program,bpf}.rs` has).

pub mod bpf;
pub mod program;

use std::path::Path;

use crate::devices::DeviceRule;
use crate::error::Result;

/// The name our programs are loaded under. Only programs with this name are
/// replaced: a cgroup manager (systemd, for one) may attach its own device
/// program to the same cgroup, and both must keep applying.
pub const PROGRAM_NAME: &str = "berth_devices";
const _: () = assert!(PROGRAM_NAME.len() < bpf::BPF_OBJ_NAME_LEN, "the kernel keeps 15 bytes and a NUL");

/// Replaces the device filter of the cgroup at `dir` with one enforcing
/// `rules` (see `crate::devices` for their semantics). An empty list removes
/// our filter: no restrictions.
///
/// The new program is attached (BPF_F_ALLOW_MULTI) before the old ones are
/// detached. In between both run and an access needs both to allow it, so
/// the cgroup is never without a filter, only briefly under the stricter of
/// the two.
pub fn apply(dir: &Path, rules: &[DeviceRule]) -> Result<()> {
    let cgroup = bpf::open_cgroup(dir)?;
    let old: Vec<_> =
        bpf::attached_programs(&cgroup, dir)?.into_iter().filter(|p| p.name == PROGRAM_NAME).map(|p| p.fd).collect();
    if !rules.is_empty() {
        let insns = program::program(rules);
        let prog = bpf::load(&insns, PROGRAM_NAME, dir)?;
        bpf::attach(&cgroup, &prog, dir)?;
        tracing::debug!(cgroup = %dir.display(), rules = rules.len(), insns = insns.len(), "device filter attached");
    }
    for prog in &old {
        bpf::detach(&cgroup, prog, dir)?;
    }
    Ok(())
}

/// A device program attached directly to a cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub id: u32,
    /// The name it was loaded with; ours are [`PROGRAM_NAME`].
    pub name: String,
}

/// The device programs attached directly to the cgroup at `dir` (not those
/// it inherits from its ancestors).
pub fn attached(dir: &Path) -> Result<Vec<Attached>> {
    let cgroup = bpf::open_cgroup(dir)?;
    Ok(bpf::attached_programs(&cgroup, dir)?.into_iter().map(|p| Attached { id: p.id, name: p.name }).collect())
}
