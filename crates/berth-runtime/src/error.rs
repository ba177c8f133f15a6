//! The runtime library's one error type.
//!
//! Messages follow crun's habit: the step, the path, then the OS error
//! (`mount 'proc' on '/proc': Operation not permitted`), so a user never needs
//! strace to see what failed. Where runc has a fixed message that scripts
//! match on ("container does not exist"), the same words are used.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("container does not exist")]
    NotExist,
    #[error("container with id exists: {0}")]
    Exists(String),
    #[error("invalid container id {0:?}: an id may use only letters, digits, '_', '+', '-' and '.'")]
    InvalidId(String),
    /// An operation that the container's current state does not allow; the
    /// message names the state.
    #[error("{0}")]
    State(String),
    /// config.json (or a process.json) is malformed or asks for something
    /// impossible; the message names the field.
    #[error("{file}: {msg}")]
    Config { file: PathBuf, msg: String },
    /// A bad command line value.
    #[error("{0}")]
    Usage(String),
    /// A system call or file operation failed.
    #[error("{step}: {source}")]
    Os {
        step: String,
        #[source]
        source: std::io::Error,
    },
    /// Resolving a path inside the container's root failed (pathrs).
    #[error("{step}: {source}")]
    Path {
        step: String,
        #[source]
        source: pathrs::error::Error,
    },
    /// An error reported by a process of the container before it ran the
    /// user's program (its message already names the step).
    #[error("{0}")]
    Container(String),
    /// The container's program could not be exec'd: not found by the PATH
    /// lookup, or refused by execve. The message is runc's words; `errno`
    /// travels beside it (to the log's `errno` field) so a caller picks
    /// docker's 127/126 from the cause, not from the words.
    #[error("{message}")]
    Exec { errno: i32, message: String },
    /// A lifecycle hook failed.
    #[error("{kind} hook {path}: {reason}")]
    Hook { kind: &'static str, path: PathBuf, reason: String },
    #[error(transparent)]
    Cgroup(#[from] berth_cgroups::Error),
    /// linux.resources could not be applied.
    #[error("linux.resources: {0}")]
    Resources(#[source] berth_cgroups::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn os(step: impl Into<String>, source: impl Into<std::io::Error>) -> Error {
        Error::Os { step: step.into(), source: source.into() }
    }

    pub fn config(file: &Path, msg: impl Into<String>) -> Error {
        Error::Config { file: file.to_path_buf(), msg: msg.into() }
    }
}

/// Adds the step to a failed system call: `.step(|| format!("mount {dst}"))`.
pub trait Context<T> {
    fn step<S: Into<String>>(self, step: impl FnOnce() -> S) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, nix::Error> {
    fn step<S: Into<String>>(self, step: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::os(step(), e))
    }
}

impl<T> Context<T> for std::io::Result<T> {
    fn step<S: Into<String>>(self, step: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::os(step(), e))
    }
}

impl<T> Context<T> for std::result::Result<T, pathrs::error::Error> {
    fn step<S: Into<String>>(self, step: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::Path { step: step().into(), source: e })
    }
}
