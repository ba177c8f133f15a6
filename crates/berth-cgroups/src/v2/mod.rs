//! cgroup v2 (unified hierarchy) specifics.

pub mod devices;
pub mod limits;
