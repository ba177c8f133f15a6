//! AppArmor and SELinux labels. Applied when the host has the LSM; when
//! config.json asks for a process label the host lacks, create fails with
//! an error naming the field, rather than running the container unconfined
//! in silence. linux.mountLabel without SELinux is ignored with a warning
//! (it labels files, and no label is checked without SELinux).

use std::path::Path;

use oci_spec::runtime::Process;

use crate::error::{Context, Error, Result};

pub fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.trim() == "Y")
}

pub fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

fn set(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

/// Refuses labels the host cannot apply. `file` names the source (config.json
/// or a process.json) in the error.
pub fn check(file: &Path, process: &Process, mount_label: Option<&str>) -> Result<()> {
    if let (Some(p), false) = (set(process.apparmor_profile()), apparmor_enabled()) {
        return Err(Error::config(
            file,
            format!("process.apparmorProfile {p:?}: AppArmor is not enabled on this host"),
        ));
    }
    if let (Some(l), false) = (set(process.selinux_label()), selinux_enabled()) {
        return Err(Error::config(file, format!("process.selinuxLabel {l:?}: SELinux is not enabled on this host")));
    }
    if let (Some(l), false) = (mount_label.filter(|l| !l.is_empty()), selinux_enabled()) {
        // A mount label is only SELinux's context= for the container's
        // filesystems: without SELinux no file carries a label and none is
        // checked, so there is nothing to apply or to enforce. runc and crun
        // ignore it too; a process label is different (above), since the
        // process would run unconfined.
        tracing::warn!("{}: linux.mountLabel {l:?} ignored: SELinux is not enabled on this host", file.display());
    }
    Ok(())
}

/// Sets the labels the process takes at its next exec (in the container,
/// before capabilities are dropped).
pub fn set_exec_labels(process: &Process) -> Result<()> {
    if let Some(profile) = set(process.apparmor_profile()) {
        // Newer kernels have a per-LSM attr directory; older ones only the shared file.
        let file = if Path::new("/proc/self/attr/apparmor/exec").exists() {
            "/proc/self/attr/apparmor/exec"
        } else {
            "/proc/self/attr/exec"
        };
        std::fs::write(file, format!("exec {profile}")).step(|| format!("set AppArmor profile {profile:?}"))?;
    }
    if let Some(label) = set(process.selinux_label()) {
        std::fs::write("/proc/self/attr/exec", label).step(|| format!("set SELinux label {label:?}"))?;
    }
    Ok(())
}
