//! The test-unique cgroup parent the clients are given: berth-testkit's.

pub use berth_testkit::cgroup::CgroupParent;
