//! Resource limits doing their job, on whatever cgroup layout the host has
//! (v1 hybrid here; pure v2 in the qemu guest of tests/v2-guest): memory,
//! pids, cpu, devices, cpuset, update, events.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_testkit::{Bundle, Runtime, leaks, require_root, unique_id};
use serde_json::{Value, json};

fn runtime() -> Runtime {
    require_root();
    Runtime::new(env!("CARGO_BIN_EXE_berth-runtime"))
}

/// True on a pure cgroup v2 host.
fn v2() -> bool {
    std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// A test's own cgroup parent: berth-testkit's guard, which on drop kills
/// what is still in it (a container a failed assertion left running) and
/// removes it leaves first, in every hierarchy.
struct CgParent(berth_testkit::cgroup::CgroupParent);

impl CgParent {
    fn new() -> CgParent {
        CgParent(berth_testkit::cgroup::CgroupParent::new("cgtest"))
    }
    /// An absolute cgroupsPath for container `id` under this parent.
    fn path_for(&self, id: &str) -> String {
        format!("{}/{id}", self.0.path())
    }
    /// The directory holding `controller`'s files for container `id`.
    fn dir(&self, controller: &str, id: &str) -> PathBuf {
        let name = &self.0.name;
        if v2() {
            PathBuf::from(format!("/sys/fs/cgroup/{name}/{id}"))
        } else {
            PathBuf::from(format!("/sys/fs/cgroup/{controller}/{name}/{id}"))
        }
    }
    fn read(&self, controller: &str, id: &str, v1_file: &str, v2_file: &str) -> String {
        let f = self.dir(controller, id).join(if v2() { v2_file } else { v1_file });
        std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display())).trim().to_string()
    }
}

fn with_resources(b: &mut Bundle, parent: &CgParent, id: &str, resources: Value) {
    b.edit(|c| {
        c["linux"]["cgroupsPath"] = json!(parent.path_for(id));
        let r = c["linux"]["resources"].as_object_mut().unwrap();
        for (k, v) in resources.as_object().unwrap() {
            r.insert(k.clone(), v.clone());
        }
    });
}

#[test]
fn memory_limit_stops_a_tmpfs_filler() {
    let rt = runtime();
    let parent = CgParent::new();
    let mut b = Bundle::busybox();
    let id = unique_id("oom");
    with_resources(&mut b, &parent, &id, json!({ "memory": { "limit": 33554432, "swap": 33554432 } }));
    b.mount(json!({ "destination": "/fill", "type": "tmpfs", "source": "tmpfs", "options": ["size=512m"] }));
    // dd volunteers for the OOM killer (raising one's own score needs no
    // privilege), so the shell survives to report.
    b.sh("(echo 1000 > /proc/self/oom_score_adj; exec dd if=/dev/zero of=/fill/f bs=1M count=200 2>/dev/null); \
          echo dd-exit=$?; echo mb=$(du -m /fill/f | cut -f1)");
    let (code, out, err) = rt.run(&b, &id);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("dd-exit=137"), "dd was killed: {out}");
    let mb: u64 = out.lines().find_map(|l| l.strip_prefix("mb=")).unwrap().parse().unwrap();
    assert!(mb <= 32, "the tmpfs got {mb} MiB past a 32 MiB limit");
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

#[test]
fn pids_limit_makes_fork_fail() {
    let rt = runtime();
    let parent = CgParent::new();
    let mut b = Bundle::busybox();
    let id = unique_id("pids");
    with_resources(&mut b, &parent, &id, json!({ "pids": { "limit": 8 } }));
    // busybox sh exits when a fork fails, so a child shell does the
    // forking; once the limit is hit nothing can fork, so the counters are
    // read with the `read` builtin.
    let dir = if v2() { "/sys/fs/cgroup" } else { "/sys/fs/cgroup/pids" };
    b.sh(&format!(
        "sh -c 'for i in $(seq 20); do sleep 5 & done'; read cur < {dir}/pids.current; read max < {dir}/pids.max; \
         echo running=$cur; echo max=$max; exit 0"
    ));
    let (code, out, err) = rt.run(&b, &id);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("can't fork") || err.contains("Resource temporarily unavailable"), "fork failed: {err}");
    let running: u32 = out.lines().find_map(|l| l.strip_prefix("running=")).unwrap().parse().unwrap();
    assert!(running <= 8, "{running} processes under a limit of 8");
    assert!(out.contains("max=8\n"), "the container sees its limit: {out}");
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

/// CPU time a busy loop gets in `wall` seconds, in seconds, from its
/// cgroup as the container sees it.
fn busy_cpu_seconds(rt: &Runtime, parent: &CgParent, resources: Value) -> f64 {
    let mut b = Bundle::busybox();
    let id = unique_id("cpu");
    with_resources(&mut b, parent, &id, resources);
    // Usage before and after the loop, so the container's own start-up
    // (slow under emulation) does not count. v2's cpu.stat starts with
    // "usage_usec N".
    let usage_file = if v2() { "/sys/fs/cgroup/cpu.stat" } else { "/sys/fs/cgroup/cpuacct/cpuacct.usage" };
    b.sh(&format!(
        "read a < {usage_file}; timeout 1 sh -c 'while :; do :; done'; read b < {usage_file}; \
         a=${{a#usage_usec }}; b=${{b#usage_usec }}; echo $((b - a))"
    ));
    let (code, out, err) = rt.run(&b, &id);
    assert!(code == 0 || code == 143, "{out}{err}");
    let n: f64 = out.trim().lines().last().unwrap().parse().unwrap();
    // v1 reports nanoseconds, v2's usage_usec microseconds.
    if v2() { n / 1e6 } else { n / 1e9 }
}

#[test]
fn cpu_quota_bounds_a_busy_loop() {
    let rt = runtime();
    let parent = CgParent::new();
    let limited = busy_cpu_seconds(&rt, &parent, json!({ "cpu": { "quota": 20000, "period": 100000 } }));
    let free = busy_cpu_seconds(&rt, &parent, json!({}));
    assert!(limited < 0.45, "a 20% quota let the loop use {limited:.2}s of CPU in 1s");
    assert!(free > 0.6, "without a quota the loop uses a whole CPU ({free:.2}s)");
}

#[test]
fn a_device_rule_denies_a_device_the_defaults_allow() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    let id = unique_id("dev");
    b.edit(|c| {
        c["linux"]["resources"]["devices"] = json!([
            { "allow": false, "access": "rwm" },
            { "allow": false, "type": "c", "major": 1, "minor": 9, "access": "r" }
        ]);
    });
    b.sh("head -c 4 /dev/urandom >/dev/null 2>&1 && echo urandom-read || echo urandom-denied; \
          echo x > /dev/urandom && echo urandom-write; head -c 4 /dev/zero | wc -c; \
          echo > /dev/null && echo null-ok");
    let (code, out, err) = rt.run(&b, &id);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("urandom-denied"), "{out}");
    assert!(out.contains("urandom-write"), "only reading was denied: {out}");
    assert!(out.contains("4\n"), "the defaults still allow /dev/zero: {out}");
    assert!(out.contains("null-ok"), "{out}");

    // Without the deny, the same read works: it is the rule that stopped it.
    b.edit(|c| c["linux"]["resources"]["devices"] = json!([{ "allow": false, "access": "rwm" }]));
    let (_, out, _) = rt.run(&b, &unique_id("dev"));
    assert!(out.contains("urandom-read"), "{out}");
}

#[test]
fn cpuset_pins_the_container() {
    let rt = runtime();
    let parent = CgParent::new();
    let mut b = Bundle::busybox();
    let id = unique_id("cpuset");
    with_resources(&mut b, &parent, &id, json!({ "cpu": { "cpus": "0", "mems": "0" } }));
    b.sh("grep Cpus_allowed_list /proc/self/status");
    let (code, out, err) = rt.run(&b, &id);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Cpus_allowed_list:\t0\n"), "{out}");
}

#[test]
fn update_changes_the_values_in_the_cgroup_files() {
    let rt = runtime();
    let parent = CgParent::new();
    let mut b = Bundle::busybox();
    let id = unique_id("update");
    with_resources(&mut b, &parent, &id, json!({ "memory": { "limit": 33554432 }, "pids": { "limit": 50 } }));
    b.args(&["sleep", "1000"]);
    rt.ok(&["run", "-d", "--bundle", b.path().to_str().unwrap(), &id]);
    assert_eq!(parent.read("memory", &id, "memory.limit_in_bytes", "memory.max"), "33554432");
    rt.ok(&["update", "--memory", "64m", "--pids-limit", "7", &id]);
    assert_eq!(parent.read("memory", &id, "memory.limit_in_bytes", "memory.max"), "67108864");
    assert_eq!(parent.read("pids", &id, "pids.max", "pids.max"), "7");

    let res = b.path().join("resources.json");
    std::fs::write(&res, r#"{"cpu":{"shares":512,"quota":50000,"period":100000}}"#).unwrap();
    rt.ok(&["update", "--resources", res.to_str().unwrap(), &id]);
    if v2() {
        assert_eq!(parent.read("cpu", &id, "", "cpu.weight"), "20");
        assert_eq!(parent.read("cpu", &id, "", "cpu.max"), "50000 100000");
    } else {
        assert_eq!(parent.read("cpu", &id, "cpu.shares", ""), "512");
        assert_eq!(parent.read("cpu", &id, "cpu.cfs_quota_us", ""), "50000");
    }

    // The recorded spec follows, so later reads see the new limits.
    let stats: Value = serde_json::from_str(&rt.ok(&["events", "--stats", &id])).unwrap();
    assert_eq!(stats["data"]["pids"]["limit"], 7);

    // checkBeforeUpdate refuses a limit below what the container uses.
    let res2 = b.path().join("tiny.json");
    std::fs::write(&res2, r#"{"memory":{"limit":4096,"checkBeforeUpdate":true}}"#).unwrap();
    let err = rt.fails(&["update", "-r", res2.to_str().unwrap(), &id]);
    assert!(err.contains("below the container's current usage"), "{err}");
    assert_eq!(parent.read("memory", &id, "memory.limit_in_bytes", "memory.max"), "67108864");

    let err = rt.fails(&["update", "--memory", "lots", &id]);
    assert!(err.contains("invalid size"), "{err}");
    rt.ok(&["delete", "-f", &id]);
    leaks::assert_none(&id, b.path(), rt.root(), None);
    assert!(!parent.dir("memory", &id).exists());
}

#[test]
fn events_stats_report_usage_within_the_limit() {
    let rt = runtime();
    let parent = CgParent::new();
    let mut b = Bundle::busybox();
    let id = unique_id("events");
    with_resources(&mut b, &parent, &id, json!({ "memory": { "limit": 67108864 }, "pids": { "limit": 20 } }));
    b.args(&["sleep", "1000"]);
    rt.ok(&["run", "-d", "--bundle", b.path().to_str().unwrap(), &id]);
    let line = rt.ok(&["events", "--stats", &id]);
    assert_eq!(line.lines().count(), 1, "one JSON line");
    let ev: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(ev["type"], "stats");
    assert_eq!(ev["id"], id.as_str());
    let mem = &ev["data"]["memory"]["usage"];
    assert_eq!(mem["limit"], 67108864);
    let usage = mem["usage"].as_u64().unwrap();
    assert!(usage > 0 && usage < 67108864, "usage {usage}");
    assert_eq!(ev["data"]["pids"]["current"], 1);
    assert_eq!(ev["data"]["pids"]["limit"], 20);
    assert!(ev["data"]["cpu"]["usage"]["total"].as_u64().unwrap() > 0);
    rt.ok(&["delete", "-f", &id]);
    let err = rt.fails(&["events", "--stats", &id]);
    assert!(err.contains("container does not exist"), "{err}");
}

#[test]
fn events_report_an_oom_kill() {
    let rt = runtime();
    let parent = CgParent::new();
    let mut b = Bundle::busybox();
    let id = unique_id("oomev");
    with_resources(&mut b, &parent, &id, json!({ "memory": { "limit": 16777216, "swap": 16777216 } }));
    b.mount(json!({ "destination": "/fill", "type": "tmpfs", "source": "tmpfs", "options": ["size=256m"] }));
    b.sh(
        "sleep 1; (echo 1000 > /proc/self/oom_score_adj; exec dd if=/dev/zero of=/fill/f bs=1M count=100); sleep 1000",
    );
    rt.ok(&["run", "-d", "--bundle", b.path().to_str().unwrap(), &id]);
    let out_file = tempfile::NamedTempFile::new().unwrap();
    let mut events =
        rt.cmd().args(["events", "--interval", "300ms", &id]).stdout(out_file.reopen().unwrap()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let found = loop {
        let text = std::fs::read_to_string(out_file.path()).unwrap();
        if text.lines().any(|l| l.contains(r#""type":"oom""#)) {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = events.kill();
    let _ = events.wait();
    let text = std::fs::read_to_string(out_file.path()).unwrap();
    assert!(found, "no oom event in:\n{text}");
    assert!(text.lines().any(|l| l.contains(r#""type":"stats""#)), "stats come at the interval too");
    rt.ok(&["delete", "-f", &id]);
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

#[test]
fn a_limit_the_host_cannot_apply_fails_create_clearly() {
    let rt = runtime();
    let parent = CgParent::new();
    let mut b = Bundle::busybox();
    let id = unique_id("badres");
    let bad = if v2() {
        json!({ "cpu": { "realtimeRuntime": 1000 } })
    } else {
        json!({ "unified": { "memory.high": "1000000" } })
    };
    with_resources(&mut b, &parent, &id, bad);
    let err = rt.fails(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    assert!(err.contains("linux.resources"), "{err}");
    // Pure v2 refuses v1-only realtime limits; v1 (with or without a
    // hybrid cgroup2 mount) refuses unified, in runc's words.
    assert!(err.contains(if v2() { "need cgroup v1" } else { "cannot use unified on cgroup v1" }), "{err}");
    assert_eq!(err.matches("linux.resources").count(), 1, "said once: {err}");
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

#[test]
fn a_joined_cgroup_is_not_emptied_or_removed_by_the_joiner() {
    let rt = runtime();
    let parent = CgParent::new();
    let shared = unique_id("shared");
    let path = parent.path_for(&shared);
    let mut first = Bundle::busybox();
    first.edit(|c| c["linux"]["cgroupsPath"] = json!(path));
    first.args(&["sleep", "1000"]);
    let a = unique_id("owner");
    rt.ok(&["run", "-d", "--bundle", first.path().to_str().unwrap(), &a]);
    let mut second = Bundle::busybox();
    second.edit(|c| c["linux"]["cgroupsPath"] = json!(path));
    second.args(&["sleep", "1000"]);
    let b = unique_id("joiner");
    rt.ok(&["run", "-d", "--bundle", second.path().to_str().unwrap(), &b]);
    let ps: Vec<i32> = serde_json::from_str(&rt.ok(&["ps", "--format", "json", &b])).unwrap();
    assert_eq!(ps.len(), 2, "both containers share the cgroup: {ps:?}");

    rt.ok(&["delete", "--force", &b]);
    assert_eq!(rt.state(&a)["status"], "running", "the owner's process was not killed");
    assert!(parent.dir("pids", &shared).exists(), "the joiner did not remove the cgroup");
    rt.ok(&["delete", "--force", &a]);
    assert!(!parent.dir("pids", &shared).exists(), "the owner removed it");
}

/// A `run --detach` killed right after it made the container's cgroup
/// (the debug builds' BERTH_KILL_AT hook; an engine's timed kill lands
/// there too): the state was saved before the cgroup was made, so
/// `delete --force` knows the container and removes its cgroup from every
/// hierarchy (before, the state came after the cgroup: delete found a
/// bare directory, said nothing, and the cgroup stayed for good).
#[test]
fn a_create_killed_after_making_the_cgroup_leaves_it_to_delete() {
    let rt = runtime();
    let parent = CgParent::new();
    let mut b = Bundle::busybox();
    let id = unique_id("killed");
    with_resources(&mut b, &parent, &id, json!({ "pids": { "limit": 32 } }));
    b.args(&["sleep", "1000"]);
    let mut c = rt.cmd();
    c.args(["run", "--detach", "--bundle", b.path().to_str().unwrap(), &id])
        .env("BERTH_KILL_AT", "runtime:cgroup-made");
    let out = berth_testkit::output_via_files(&mut c);
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&out.status), Some(9), "killed at the hook");
    assert!(parent.dir("pids", &id).exists(), "the kill came after the cgroup was made");
    assert_eq!(rt.state(&id)["status"], "stopped", "a half-made container reads as stopped");

    rt.ok(&["delete", "--force", &id]);
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

/// A `run --detach` killed right after it forked the init, which may be
/// joining its cgroup (it moves itself) at that moment, or may even have
/// reported Ready already when the runtime was slow to reach its kill (a
/// loaded machine): the init finds its runtime gone (no Committed) and
/// exits, rather than wait in accept() for a `start` no state can name; the
/// container reads as stopped, and `delete --force` leaves nothing (no
/// process, no cgroup in any hierarchy, no state). Found by this test.
#[test]
fn a_create_killed_after_forking_the_init_leaves_nothing_to_delete() {
    let rt = runtime();
    let parent = CgParent::new();
    for round in 0..5 {
        let mut b = Bundle::busybox();
        let id = unique_id(&format!("killed{round}"));
        let marker = berth_testkit::unique_sleep();
        with_resources(&mut b, &parent, &id, json!({ "pids": { "limit": 32 } }));
        b.args(&["sleep", &marker]);
        let mut c = rt.cmd();
        c.args(["run", "--detach", "--bundle", b.path().to_str().unwrap(), &id])
            .env("BERTH_KILL_AT", "runtime:init-spawned");
        let out = berth_testkit::output_via_files(&mut c);
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&out.status), Some(9), "killed at the hook");
        assert!(parent.dir("pids", &id).exists(), "the kill came after the cgroup was made");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(rt.state(&id)["status"] == "stopped" && parent_procs(&parent, &id).is_empty()) {
            if Instant::now() > deadline {
                let detail: Vec<String> = parent_procs(&parent, &id)
                    .iter()
                    .map(|p| {
                        let rd = |f: &str| std::fs::read_to_string(format!("/proc/{p}/{f}")).unwrap_or_default();
                        format!("{p}: stat={} wchan={} stack={}", rd("stat"), rd("wchan"), rd("stack"))
                    })
                    .collect();
                panic!("the orphaned init did not exit: state {}, procs {detail:#?}", rt.state(&id));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        rt.ok(&["delete", "--force", &id]);
        leaks::assert_none(&id, b.path(), rt.root(), Some(&marker));
    }
}

/// The processes in the container's pids cgroup.
fn parent_procs(parent: &CgParent, id: &str) -> Vec<String> {
    std::fs::read_to_string(parent.dir("pids", id).join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A private cgroup namespace is rooted at the container's own cgroup
/// (made there once the init is in it): every hierarchy shows as "/" in
/// the container's /proc/self/cgroup, and its files are the container's.
#[test]
fn a_cgroup_namespace_is_rooted_at_the_containers_cgroup() {
    let rt = runtime();
    let parent = CgParent::new();
    let mut b = Bundle::busybox();
    let id = unique_id("cgns");
    with_resources(&mut b, &parent, &id, json!({ "pids": { "limit": 77 } }));
    b.edit(|c| c["linux"]["namespaces"].as_array_mut().unwrap().push(json!({ "type": "cgroup" })));
    b.sh("cat /proc/self/cgroup");
    let (code, out, err) = rt.run(&b, &id);
    assert_eq!(code, 0, "{out}{err}");
    let paths: Vec<&str> = out.lines().filter_map(|l| l.splitn(3, ':').nth(2)).collect();
    assert!(!paths.is_empty(), "{out}");
    // v1 hybrid: the hugetlb-only cgroup2 line is not the container's.
    let own: Vec<&str> =
        out.lines().filter(|l| v2() || !l.starts_with("0::")).filter_map(|l| l.splitn(3, ':').nth(2)).collect();
    assert!(own.iter().all(|p| *p == "/"), "every hierarchy rooted at the container's cgroup:\n{out}");
}

/// The init and an exec'd process are in the container's cgroup in every
/// hierarchy the host has, the cgroup2 one included (they put themselves
/// there: v1 `tasks`, clone3 into the unified one), and a cgroup limit
/// binds the exec'd process too.
#[test]
fn init_and_exec_are_in_the_containers_cgroup_everywhere() {
    let rt = runtime();
    let parent = CgParent::new();
    let mut b = Bundle::busybox();
    let id = unique_id("cgjoin");
    with_resources(&mut b, &parent, &id, json!({ "pids": { "limit": 3 } }));
    b.edit(|c| c["process"]["args"] = json!(["sleep", "60"]));
    rt.ok(&["run", "-d", "--bundle", b.path().to_str().unwrap(), &id]);
    let want = parent.path_for(&id);
    let check = |who: &str, out: &str| {
        let lines: Vec<&str> = out.lines().collect();
        // One line per mounted hierarchy: every v1 controller set, and the
        // "0::" one on v2 and on hybrid hosts.
        let v1_mounted = std::fs::read_to_string("/proc/self/cgroup").unwrap().lines().count();
        assert_eq!(lines.len(), v1_mounted, "{who}:\n{out}");
        for l in lines {
            let path = l.splitn(3, ':').nth(2).unwrap();
            assert!(path.ends_with(&want), "{who} not in {want}: {l}\n{out}");
        }
    };
    let init = rt.state(&id)["pid"].as_i64().unwrap();
    check("init", &std::fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap());
    check("exec", &rt.ok(&["exec", &id, "cat", "/proc/self/cgroup"]));
    // pids.max 3: sleep, the exec'd sh and one child fit; a fourth does not.
    let out = rt.exec(&["exec", &id, "sh", "-c", "sleep 5 & sleep 5 & wait; echo done"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fork") || err.contains("Resource temporarily unavailable"), "{err}");
    rt.ok(&["kill", &id, "KILL"]);
    rt.ok(&["delete", "--force", &id]);
    leaks::assert_none(&id, b.path(), rt.root(), None);
}
