//! berth-runtime: a runc-compatible OCI runtime.
//!
//! The library does the work; the `berth-runtime` binary parses runc's
//! command line and calls it. Layout, in the order a container is made:
//! - [`config`]: config.json, parsed and checked;
//! - [`launch`]: the runtime's side of create and exec (fork, namespaces'
//!   id maps, cgroup, hooks), talking to the child over [`channel`];
//! - [`init`]: the container's side, step by step up to exec;
//! - [`container`]: state on disk and the state machine;
//! - [`lifecycle`]: start, kill, pause, resume, delete;
//! - [`foreground`]: waiting for a process in the foreground.
//!
//! The runtime is single-threaded and has no async runtime: it forks, and
//! its start-up time is part of every container's.

pub mod channel;
pub mod config;
pub mod container;
pub mod error;
pub mod foreground;
pub mod hooks;
pub mod init;
pub mod launch;
pub mod lifecycle;
pub mod lsm;
pub mod netdev;
pub mod seal;
pub mod seccomp;
pub mod sys;
pub mod template;

pub use error::{Error, Result};
