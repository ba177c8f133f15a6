//! `prime_moves`: warms the cgroup-migration lock without changing where
//! anything runs or leaving a process behind. A file of its own: it
//! checks this process's children, which no other test may have.

#[test]
fn priming_moves_no_cgroup_and_leaves_no_child() {
    let before = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    berth_cgroups::prime_moves();
    berth_cgroups::prime_moves(); // once per process: the second does nothing
    assert_eq!(std::fs::read_to_string("/proc/self/cgroup").unwrap(), before, "this process was moved");
    // The middle child was reaped; the grandchild was never ours.
    let r = nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
    assert_eq!(r, Err(nix::errno::Errno::ECHILD), "a child is left: {r:?}");
}
