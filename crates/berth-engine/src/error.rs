//! The engine's one error type: what an engine operation can fail with.
//! Each module keeps its own typed failures (StoreError, SpecError,
//! NetworkError, VolumeError, LogConfigError, ObserveError, CopyError),
//! nested here as variants, so a front end matches on one type and still
//! sees which part failed and how.

use std::path::PathBuf;

use crate::{network, spec, volume::VolumeError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Image(#[from] berth_image::Error),
    /// No local image by that name: `Images::create_container` pulls and
    /// tries again, as `docker run` does (unless `--pull never`).
    #[error("Unable to find image '{0}' locally")]
    NoSuchImage(String),
    /// `run --pull` names no policy docker knows.
    #[error("--pull {0:?}: use always, missing or never")]
    PullPolicy(String),
    /// `import` read nothing.
    #[error("import: the tarball is empty")]
    EmptyImport,
    /// `import --change` that docker would not apply either.
    #[error("--change {change:?}: {reason}")]
    Change { change: String, reason: String },
    #[error("import: image config: {0}")]
    ImportConfig(String),
    #[error("login to {server}: {source}")]
    Login { server: String, source: berth_image::Error },
    #[error("image {id}: config is not JSON: {source}")]
    ImageConfig { id: String, source: serde_json::Error },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error(transparent)]
    Network(#[from] network::NetworkError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Shim(#[from] berth_shim::ShimError),
    #[error("{what} {}: {source}", path.display())]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("You cannot remove a running container {0}. Stop the container before attempting removal or force remove")]
    Running(String),
    /// Dead (its creation never finished) or half removed: only `rm` is
    /// left (docker's words for its Dead and removal-in-progress ones).
    #[error(
        "container {0} is marked for removal and cannot be started (its creation or removal was interrupted: remove it)"
    )]
    Defunct(String),
    /// docker's words: "container X is not running".
    #[error("{0}")]
    NotRunning(String),
    /// The OCI runtime failed (its own message) or could not be run.
    #[error("OCI runtime: {0}")]
    Runtime(#[from] berth_oci_cli::Error),
    /// No terminal came from the runtime's `exec --tty`.
    #[error("OCI runtime: {0}")]
    Console(String),
    /// `exec_sync`'s command ran past its timeout: it was killed, with
    /// the processes it started.
    #[error("timeout {timeout:?} exceeded running {cmd:?} in container {id}: the command was killed")]
    ExecTimeout { id: String, cmd: String, timeout: std::time::Duration },
    #[error("container {id} did not stop: its init (pid {pid}) still runs after SIGKILL")]
    DidNotStop { id: String, pid: i32 },
    #[error("container {0} is already running")]
    AlreadyRunning(String),
    #[error("unknown network mode {0:?} (none, host, bridge or a network name)")]
    NetworkMode(String),
    /// A network attachment that could not be undone: the container
    /// stays, marked for removal, so that its attachment is not forgotten
    /// and the next `rm -f` runs the DEL again (idempotent by the CNI spec).
    /// Boxed: an observation's failure may itself hold an engine error.
    #[error(transparent)]
    Observe(Box<crate::observe::ObserveError>),
    /// Boxed, as [`Error::Observe`].
    #[error(transparent)]
    Copy(Box<crate::copy::CopyError>),
    #[error(transparent)]
    LogConfig(#[from] crate::logconfig::LogConfigError),
    #[error(
        "remove container {id}: detach it from network {network}: {source} (the container stays, marked for removal: run rm -f again)"
    )]
    Detach { id: String, network: String, source: Box<network::NetworkError> },
    /// A pod's CNI ADD (see [`crate::pod`]); undone before this is returned.
    #[error("attach pod {id} to network {network}: {source}")]
    Attach { id: String, network: String, source: Box<network::NetworkError> },
    /// A network alias that is not a host name: it would go into hosts
    /// files as it is.
    #[error("invalid network alias {0:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit")]
    BadAlias(String),
    /// A `network connect`/`disconnect` that docker refuses too (its
    /// words: already connected, not connected, host network).
    #[error("{0}")]
    Endpoint(String),
    /// A pod's user namespace (see [`crate::userns`]).
    #[error(transparent)]
    Userns(#[from] crate::userns::UsernsError),
}

impl From<crate::observe::ObserveError> for Error {
    fn from(e: crate::observe::ObserveError) -> Error {
        Error::Observe(Box::new(e))
    }
}

impl From<crate::copy::CopyError> for Error {
    fn from(e: crate::copy::CopyError) -> Error {
        Error::Copy(Box::new(e))
    }
}

impl Error {
    /// The runtime could not exec the container's (or an exec's) command,
    /// and why: from the runtime's own error when the engine ran it, or
    /// from the words the shim passed on when the shim did.
    pub fn exec_failure(&self) -> Option<berth_oci_cli::ExecFailure> {
        match self {
            Error::Runtime(e) => e.exec_failure(),
            // The runtime's errno, passed on by the shim (berth-runtime).
            Error::Shim(berth_shim::ShimError::ExecFailed { message, errno }) => {
                berth_oci_cli::ExecFailure::from_cause(Some(*errno), message)
            }
            // Words only (runc, crun): read as dockerd reads them.
            Error::Shim(berth_shim::ShimError::Runtime(message)) => berth_oci_cli::ExecFailure::from_message(message),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_oci_cli::ExecFailure;
    use berth_shim::ShimError;

    #[test]
    fn the_shims_errno_decides_127_and_126_without_the_words() {
        let typed = |errno| Error::Shim(ShimError::ExecFailed { message: "it did not run".into(), errno });
        assert_eq!(typed(libc::ENOENT).exec_failure(), Some(ExecFailure::NotFound));
        assert_eq!(typed(libc::EACCES).exec_failure(), Some(ExecFailure::NotExecutable));
        assert_eq!(typed(libc::E2BIG).exec_failure(), None);
        // runc and crun give only words.
        let words = Error::Shim(ShimError::Runtime("exec: \"x\": executable file not found in $PATH".into()));
        assert_eq!(words.exec_failure(), Some(ExecFailure::NotFound));
    }
}
