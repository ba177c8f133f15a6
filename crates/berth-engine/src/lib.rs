//! berth's engine: what the `berth` CLI and `berthd` drive. It runs
//! containers only through `berth-shim` and the OCI runtime's command line,
//! keeps its records in redb, and attaches containers to networks through
//! the standard CNI plugins.

pub mod check;
pub mod copy;
pub mod engine;
pub mod liveness;
pub mod logconfig;
pub mod names;
pub mod network;
pub mod observe;
pub mod ops;
pub mod prune;
pub mod spec;
pub mod store;
pub mod volume;
