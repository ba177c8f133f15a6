//! What a container gets by default, as Docker gives it: the capability
//! set and the seccomp profile. Data both the runtime (`berth-runtime
//! spec`, its tests) and the engine (every config.json it writes) use, in
//! a crate of its own so the engine does not link the runtime for it.

pub mod seccomp;

/// Docker's default capability set (moby's oci/caps/defaults.go): what a
/// container gets, and so what the default profile is usually evaluated for.
pub const DOCKER_DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Why the default profile could not be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The embedded profile is malformed (a bug caught by its unit tests).
    #[error("the default seccomp profile is malformed: {0}")]
    Malformed(String),
    #[error("seccomp default profile: {0}")]
    Evaluate(String),
    #[error("read {path}: {source}")]
    Io { path: &'static str, source: std::io::Error },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
