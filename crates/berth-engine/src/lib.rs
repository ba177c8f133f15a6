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

impl engine::Engine {
    /// The OCI runtime's command line with the engine's state root: the
    /// one way the engine runs the runtime (the shim uses the same
    /// wrapper).
    pub fn oci_runtime(&self) -> berth_oci_cli::Runtime {
        berth_oci_cli::Runtime::new(&self.runtime).root(self.runroot.join("runtime"))
    }
}
