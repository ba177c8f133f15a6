//! A container's state on disk, and the runtime-spec state machine
//! (creating → created → running → stopped, plus paused).
//!
//! Each container has a directory `<root>/<id>/` (mode 0700) holding:
//! - `state.json`: what later invocations need (init pid and start time,
//!   bundle, cgroup paths, creation time), written atomically;
//! - `config.json`: the spec the container was created from, for exec and
//!   hooks (the bundle may change or go away after create);
//! - `start.sock`: while the container is `created`, the socket its init
//!   waits on; `start` connects to it, removes it, and learns whether the
//!   program was exec'd.
//!
//! The status is never stored: it is read off the live system (is the init
//! alive, is start.sock there, is the cgroup frozen), so it cannot go stale
//! when a process dies behind the runtime's back.

mod status;

use std::collections::HashMap;
use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_cgroups::{Cgroup, FreezerState};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};
use crate::sys;

pub use status::{OciState, Status};

pub const STATE_FILE: &str = "state.json";
pub const CONFIG_FILE: &str = "config.json";
pub const START_SOCKET: &str = "start.sock";

/// What is kept in state.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Persisted {
    pub id: String,
    /// The container's first process, in the runtime's pid namespace.
    pub init_pid: i32,
    /// Its start time (clock ticks since boot), to detect pid reuse.
    pub init_start_time: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// RFC 3339 with nanoseconds, as runc writes it.
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<Cgroup>,
    /// True when the runtime made the cgroup path up (no cgroupsPath in
    /// config.json), so it may remove the parent it made too.
    #[serde(default)]
    pub default_cgroup: bool,
    /// True when cgroupsPath named a cgroup that already existed (runc
    /// joins it, as sandboxes share one): it is not ours to empty or remove.
    #[serde(default)]
    pub joined_cgroup: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<HashMap<String, String>>,
    /// Whether config.json has poststart / poststop hooks, so `start` and
    /// `delete` read and parse the recorded spec only when they need it.
    /// (Old state files without the field: assume there are.)
    #[serde(default = "yes")]
    pub poststart_hooks: bool,
    #[serde(default = "yes")]
    pub poststop_hooks: bool,
    /// linux.netDevices that `create` moved in, for `delete` to move back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub net_devices: Vec<crate::netdev::Moved>,
    /// While `create` runs (init_pid is still 0): the creating runtime
    /// process and its start time. If it dies half-way, the container reads
    /// as stopped and `delete` removes what it left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator: Option<(i32, u64)>,
}

fn yes() -> bool {
    true
}

/// A container known to the runtime.
#[derive(Debug)]
pub struct Container {
    pub dir: PathBuf,
    pub state: Persisted,
}

/// The directory that holds every container's state (`--root`).
#[derive(Debug, Clone)]
pub struct StateRoot(pub PathBuf);

impl StateRoot {
    /// runc's rule for ids: letters, digits and `_ + - .`, not "." or "..".
    pub fn check_id(id: &str) -> Result<()> {
        let ok = !id.is_empty()
            && id != "."
            && id != ".."
            && id.chars().all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c));
        if ok { Ok(()) } else { Err(Error::InvalidId(id.to_string())) }
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.0.join(id)
    }

    /// Makes the state directory of a new container; an existing one means
    /// the id is taken.
    pub fn create_dir(&self, id: &str) -> Result<PathBuf> {
        Self::check_id(id)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&self.0)
            .step(|| format!("create state root {}", self.0.display()))?;
        let dir = self.container_dir(id);
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(Error::Exists(id.to_string())),
            Err(e) => Err(Error::os(format!("create state dir {}", dir.display()), e)),
        }
    }

    /// Loads a container's state.
    pub fn load(&self, id: &str) -> Result<Container> {
        Self::check_id(id)?;
        let dir = self.container_dir(id);
        let file = dir.join(STATE_FILE);
        let bytes = match std::fs::read(&file) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(Error::NotExist),
            Err(e) => return Err(Error::os(format!("read {}", file.display()), e)),
        };
        let state = crate::config::parse_json(&file, &bytes)?;
        Ok(Container { dir, state })
    }

    /// Ids of every container with a state file, sorted.
    pub fn ids(&self) -> Result<Vec<String>> {
        let rd = match std::fs::read_dir(&self.0) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::os(format!("read {}", self.0.display()), e)),
        };
        let mut ids: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join(STATE_FILE).exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

impl Container {
    pub fn id(&self) -> &str {
        &self.state.id
    }

    pub fn init_pid(&self) -> i32 {
        self.state.init_pid
    }

    /// Writes state.json atomically (temp file, fsync, rename).
    pub fn save(&self) -> Result<()> {
        let bytes = serde_json::to_vec(&self.state).expect("state always serializes");
        write_atomic(&self.dir.join(STATE_FILE), &bytes)
    }

    /// The spec the container was created from.
    pub fn spec(&self) -> Result<Spec> {
        crate::config::load_json(&self.dir.join(CONFIG_FILE))
    }

    /// True while the init process is alive.
    pub fn is_alive(&self) -> bool {
        sys::is_alive(self.state.init_pid, self.state.init_start_time)
    }

    /// The current status, read off the live system.
    pub fn status(&self) -> Status {
        if self.state.init_pid == 0 {
            let creating = self.state.creator.is_some_and(|(pid, start)| sys::is_alive(pid, start));
            return if creating { Status::Creating } else { Status::Stopped };
        }
        if !self.is_alive() {
            return Status::Stopped;
        }
        if self.dir.join(START_SOCKET).exists() {
            return Status::Created;
        }
        let frozen = self.state.cgroup.as_ref().and_then(|c| c.freezer_state().ok());
        if frozen == Some(FreezerState::Frozen) { Status::Paused } else { Status::Running }
    }

    /// The runtime-spec state of this container, as `state` prints it and
    /// hooks receive it.
    pub fn oci_state(&self, status: Status) -> OciState {
        OciState {
            oci_version: crate::template::OCI_VERSION.to_string(),
            id: self.state.id.clone(),
            pid: if status == Status::Stopped { 0 } else { self.state.init_pid },
            status,
            bundle: self.state.bundle.clone(),
            rootfs: self.state.rootfs.clone(),
            created: self.state.created.clone(),
            owner: String::new(),
            annotations: self.state.annotations.clone(),
        }
    }

    /// The uid that owns the state directory (`list` shows it as OWNER).
    pub fn owner_uid(&self) -> Option<u32> {
        std::fs::metadata(&self.dir).ok().map(|m| m.uid())
    }

    /// Takes an exclusive lock on the container, released when the guard
    /// drops, so two invocations (say, `start` and `delete`) never act on
    /// it at once.
    pub fn lock(&self) -> Result<Lock> {
        lock_dir(&self.dir)
    }

    /// A pidfd for the init, checked against its start time so a reused pid
    /// is never signalled. `None` if the init has exited.
    pub fn init_pidfd(&self) -> Option<std::os::fd::OwnedFd> {
        let fd = sys::pidfd_open(self.state.init_pid).ok()?;
        // The pidfd pins the process; if it is still the one we started,
        // every later use of the fd reaches that process and no other.
        self.is_alive().then_some(fd)
    }
}

/// An flock(2) on a container's state directory.
#[derive(Debug)]
pub struct Lock(#[allow(dead_code)] nix::fcntl::Flock<File>);

pub fn lock_dir(dir: &Path) -> Result<Lock> {
    let f = File::open(dir).map_err(|e| match e.kind() {
        ErrorKind::NotFound => Error::NotExist,
        _ => Error::os(format!("open {}", dir.display()), e),
    })?;
    let lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::os(format!("lock {}", dir.display()), e))?;
    Ok(Lock(lock))
}

/// Writes a file atomically (berth-fs: temp file in the same directory,
/// then rename). Readers see the old contents or the new, never a mix,
/// and a crash of the writer leaves the old file. No fsync: runtime state
/// lives on tmpfs (/run) and describes processes that do not survive a
/// reboot anyway, and a sync here would sit on every container's start-up
/// path.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    berth_fs::write_atomic(path, bytes, 0o644).map_err(|e| Error::os(format!("write {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_runc_rules() {
        for ok in ["a", "demo-1", "x_y.z+w", "A9"] {
            StateRoot::check_id(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a b", "../x", "ä"] {
            assert!(StateRoot::check_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_taken_id_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = StateRoot(tmp.path().join("state"));
        root.create_dir("c1").unwrap();
        let err = root.create_dir("c1").unwrap_err();
        assert_eq!(err.to_string(), "container with id exists: c1");
    }

    #[test]
    fn a_dead_init_means_stopped() {
        let tmp = tempfile::tempdir().unwrap();
        let root = StateRoot(tmp.path().to_path_buf());
        let dir = root.create_dir("c1").unwrap();
        let me = std::process::id() as i32;
        let start = sys::start_time(me).unwrap();
        let c = Container {
            dir: dir.clone(),
            state: Persisted {
                id: "c1".into(),
                init_pid: me,
                init_start_time: start,
                bundle: "/b".into(),
                rootfs: "/b/rootfs".into(),
                created: berth_proc::time::format_go(std::time::SystemTime::now()),
                cgroup: None,
                default_cgroup: false,
                joined_cgroup: false,
                poststart_hooks: false,
                poststop_hooks: false,
                net_devices: Vec::new(),
                annotations: None,
                creator: None,
            },
        };
        c.save().unwrap();
        assert_eq!(c.status(), Status::Running);
        std::fs::write(dir.join(START_SOCKET), "").unwrap();
        assert_eq!(c.status(), Status::Created);
        let reused = Container { dir, state: Persisted { init_start_time: start + 1, ..c.state.clone() } };
        assert_eq!(reused.status(), Status::Stopped);
        assert_eq!(reused.oci_state(Status::Stopped).pid, 0);
        let loaded = root.load("c1").unwrap();
        assert_eq!(loaded.state.init_pid, me);
        assert!(matches!(root.load("nope"), Err(Error::NotExist)));
        assert_eq!(root.ids().unwrap(), vec!["c1".to_string()]);
    }
}
