use std::path::PathBuf;

/// Errors from cgroup operations. Each names the operation and the path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no cgroup hierarchy is mounted (looked in /proc/self/mountinfo)")]
    NoHierarchy,
    #[error("invalid cgroups path {0:?}: {1}")]
    InvalidPath(String, &'static str),
    #[error("cgroup {path} still has processes after {waited_ms} ms")]
    Busy { path: PathBuf, waited_ms: u64 },
    #[error("write {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the {0} controller is not available for this cgroup, so its limits cannot be applied")]
    NoController(&'static str),
    #[error("{0} need cgroup v2")]
    NeedsV2(&'static str),
    #[error("{0} need cgroup v1")]
    NeedsV1(&'static str),
    #[error("{0}")]
    InvalidValue(String),
    #[error("{what} are not supported here ({path})")]
    Unsupported { what: &'static str, path: PathBuf },
    #[error("freezing {path} did not complete")]
    FreezeTimeout { path: PathBuf },
    /// A bpf(2) call for the v2 device filter failed. `detail` is empty or
    /// starts with a separator: the verifier's log, or a hint on what the
    /// errno means here (missing capabilities, not a cgroup2 directory).
    #[error("bpf({op}) for the device filter of {path}: {source}{detail}")]
    Bpf {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
        detail: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io_err(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { op, path, source }
}
