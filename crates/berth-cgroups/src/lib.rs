//! cgroup management for berth.
//!
//! Three layouts are in use and all are handled: v1 (one hierarchy per
//! controller set), v2 (one unified hierarchy) and hybrid (v1 controllers plus
//! a cgroup2 mount, usually at /sys/fs/cgroup/unified).
//!
//! [`Layout`] says what the host has; [`Cgroup`] is one container's cgroup in
//! every hierarchy of that layout. The crate never mounts, remounts or
//! rebinds a hierarchy, and only creates or removes directories at the paths
//! it is asked for.

mod cgroup;
pub mod devices;
mod error;
mod fs;
mod join;
mod layout;
pub mod oom;
mod prime;
pub mod resources;
pub mod stats;
mod v1;
pub mod v2;

pub use cgroup::{Cgroup, FreezerState, UNIFIED};
pub use error::{Error, Result};
pub use join::SelfJoin;
pub use layout::{Hierarchy, Layout, LayoutKind};
pub use prime::prime_moves;
