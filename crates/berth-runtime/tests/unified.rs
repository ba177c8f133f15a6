//! linux.resources.unified on a host whose controllers are in cgroup v1
//! (v1 alone or hybrid): refused before anything is made, in runc's
//! words, as runc refuses it; on a cgroup v2 host there is nothing to
//! check here (tests/cgroups.rs covers applying it).

use std::path::Path;

use berth_testkit::{Bundle, Runtime, leaks, require_root, unique_id};
use serde_json::json;

fn v2_only() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

#[test]
fn unified_on_a_v1_host_is_refused_in_runcs_words_and_nothing_is_left() {
    require_root();
    if v2_only() {
        eprintln!("note: a cgroup v2 host: unified is allowed here");
        return;
    }
    let id = unique_id("unified");
    let mut b = Bundle::busybox();
    // A key of no v1-split controller: without the check it would be
    // written to the cgroup2 mount and the container would run.
    b.edit(|c| {
        c["linux"]["resources"] = json!({ "unified": { "cgroup.max.depth": "5" } });
        c["linux"]["cgroupsPath"] = json!(format!("/berth-test-{id}"));
    });
    b.sh("true");
    let berth = Runtime::new(env!("CARGO_BIN_EXE_berth-runtime"));
    let (code, _, err) = berth.run(&b, &id);
    assert_ne!(code, 0, "berth-runtime ran a container with unified on a v1 host");
    assert!(err.contains("linux.resources.unified") && err.contains("cannot use unified on cgroup v1"), "{err}");
    leaks::assert_none(&id, b.path(), berth.root(), None);
    for hierarchy in ["unified", "memory", "pids"] {
        let dir = Path::new("/sys/fs/cgroup").join(hierarchy).join(format!("berth-test-{id}"));
        assert!(!dir.exists(), "{} was left", dir.display());
    }
    if let Some(runc) = ["/usr/sbin/runc", "/usr/bin/runc"].into_iter().find(|p| Path::new(p).is_file()) {
        let runc = Runtime::new(runc);
        let (code, _, err) = runc.run(&b, &format!("{id}-runc"));
        assert_ne!(code, 0);
        assert!(err.contains("cannot use unified on cgroup v1"), "runc says the same: {err}");
    }
}
