//! berth-shim: one small supervisor per container, as conmon and
//! containerd-shim-runc-v2 are. It creates and starts the container
//! through the OCI runtime's command line (berth-runtime, runc or crun),
//! holds its stdio, writes its log (docker's json-file, or the kubelet's
//! CRI format), serves an attach socket, forwards signals, reaps the
//! container as its subreaper, records the exit in exit.json and applies
//! the restart policy. It runs detached from whoever started it, so
//! containers outlive the engine and the CLI.
//!
//! Single-threaded, no async runtime, no flag parser: its memory is paid
//! once per running container. The two flat JSON shapes it writes (log
//! lines, exit.json) are formatted in place, their strings escaped by
//! serde_json, which the runtime wrapper (berth-oci-cli) links anyway.
//!
//! The engine's side is [`client`].

pub mod client;
pub mod config;
pub mod crilog;
pub mod events;
pub mod logfile;
mod oom;
pub mod protocol;
mod sealed;
/// A process by pid and start time (berth-proc, shared with the runtime).
pub use berth_proc as process;
pub mod supervisor;
/// RFC 3339 timestamps (berth-proc's, shared with the runtime).
pub use berth_proc::time;

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("{0}")]
    Usage(String),
    #[error("{what} {}: {source}", path.display())]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{what}: {source}")]
    Sys { what: &'static str, source: nix::errno::Errno },
    /// The OCI runtime refused (its own message).
    #[error("{0}")]
    Runtime(String),
    /// The OCI runtime could not exec the process and said why with an
    /// errno (berth-runtime's log field): the engine's 127/126 come from
    /// it. `message` is the runtime's own words.
    #[error("{message}")]
    ExecFailed { message: String, errno: i32 },
    #[error("start berth-shim {}: {source}", path.display())]
    Spawn { path: PathBuf, source: std::io::Error },
    #[error("berth-shim ended without reporting the start{0}")]
    NoReport(String),
    /// The shim did not answer a request in time (busy, or a shim that
    /// predates the request).
    #[error("berth-shim gave no answer: {0}")]
    NoAnswer(String),
    /// The shim could not open its log file anew (its words).
    #[error("{0}")]
    LogReopen(String),
}

impl ShimError {
    pub fn io(what: &'static str, path: &Path, source: std::io::Error) -> ShimError {
        ShimError::Io { what, path: path.into(), source }
    }

    pub fn sys(what: &'static str, source: nix::errno::Errno) -> ShimError {
        ShimError::Sys { what, source }
    }

    /// The runtime's refusal, typed when it came with an errno.
    pub fn from_runtime(message: String, errno: Option<i32>) -> ShimError {
        match errno {
            Some(errno) => ShimError::ExecFailed { message, errno },
            None => ShimError::Runtime(message),
        }
    }
}
