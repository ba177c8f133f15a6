//! cgroup v2 (unified hierarchy) specifics.

pub mod device_filter;
pub mod limits;
