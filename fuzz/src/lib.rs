//! Helpers shared by berth's fuzz targets: oracles written independently
//! of the code under test, and the checks a target makes after a run.

pub mod confine;
pub mod docker_ref;
pub mod tree;
