//! What `info` and `version` report about this engine and its host, for
//! every front end (`berth info`, the Docker API's `/info`).

use std::path::PathBuf;

use crate::Error;
use crate::engine::Engine;
use crate::store::Status;

/// docker's `/info` fields that berth knows.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemInfo {
    pub containers: usize,
    pub running: usize,
    pub paused: usize,
    pub stopped: usize,
    pub images: usize,
    /// "1" or "2".
    pub cgroup_version: &'static str,
    /// The OCI runtime: its file name and path.
    pub runtime_name: String,
    pub runtime_path: PathBuf,
    pub kernel_version: String,
    /// /etc/os-release's PRETTY_NAME.
    pub operating_system: String,
    pub architecture: String,
    pub cpus: usize,
    /// Bytes.
    pub mem_total: u64,
    /// The host name.
    pub name: String,
    pub root: PathBuf,
    pub runroot: PathBuf,
}

impl Engine {
    /// Counts of containers and images, and what the host is.
    pub fn info(&self) -> Result<SystemInfo, Error> {
        let containers = self.current_containers()?;
        let count = |f: &dyn Fn(Status) -> bool| containers.iter().filter(|c| f(c.status)).count();
        let running = count(&|s| s == Status::Running);
        let paused = count(&|s| s == Status::Paused);
        let uts = rustix::system::uname();
        let text = |s: &std::ffi::CStr| s.to_string_lossy().into_owned();
        let runtime_path = self.runtime.clone();
        Ok(SystemInfo {
            containers: containers.len(),
            running,
            paused,
            stopped: containers.len() - running - paused,
            images: self.store()?.meta.read_all()?.images.len(),
            cgroup_version: cgroup_version(),
            runtime_name: runtime_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| runtime_path.display().to_string()),
            runtime_path,
            kernel_version: text(uts.release()),
            operating_system: os_name(),
            architecture: text(uts.machine()),
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            mem_total: crate::observe::host_memory().unwrap_or(0),
            name: text(uts.nodename()),
            root: self.root.clone(),
            runroot: self.runroot.clone(),
        })
    }

    /// The OCI runtime's `--version` output, or why there is none.
    pub fn runtime_version(&self) -> String {
        match std::process::Command::new(&self.runtime).arg("--version").output() {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
            Ok(o) => format!("unknown ({})", String::from_utf8_lossy(&o.stderr).trim()),
            Err(e) => format!("unknown ({}: {e})", self.runtime.display()),
        }
    }
}

/// 2 when /sys/fs/cgroup is the unified hierarchy (cgroup2fs), else 1
/// (v1 and hybrid hosts have a tmpfs of v1 hierarchies there).
fn cgroup_version() -> &'static str {
    match berth_cgroups::Layout::detect() {
        Ok(l) if l.kind == berth_cgroups::LayoutKind::V2 => "2",
        _ => "1",
    }
}

fn os_name() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| "Linux".into())
}
