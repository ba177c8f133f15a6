//! runtime-spec 1.2 fields (scheduler, ioPriority, execCPUAffinity,
//! memoryPolicy, personality, netDevices) and the edge cases where the
//! best runtimes behave differently, each checked from inside the
//! container. Where the reference runtimes installed here (runc 1.1.5,
//! crun) support a case, the same bundle runs under them too and the
//! results are compared side by side; runc 1.1.5 knows none of the 1.2
//! fields (it ignores them), so those have no reference run.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_testkit::{Bundle, Runtime, leaks, output_via_files, require_root, unique_id, unique_sleep};
use serde_json::{Value, json};

fn runtime() -> Runtime {
    require_root();
    Runtime::new(env!("CARGO_BIN_EXE_berth-runtime"))
}

/// An installed reference runtime (runc, crun), with a state root of its
/// own; None (and a note) when this machine lacks it.
fn reference(name: &str) -> Option<Runtime> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|p| p.is_file()))
        .unwrap_or(None)
        .or_else(|| {
            [format!("/usr/sbin/{name}"), format!("/usr/bin/{name}")]
                .map(PathBuf::from)
                .into_iter()
                .find(|p| p.is_file())
        });
    if found.is_none() {
        eprintln!("note: {name} is not installed; no side-by-side run");
    }
    found.map(Runtime::new)
}

fn tool(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// `run`s `script` in the bundle; returns (exit code, stdout, stderr).
fn run(rt: &Runtime, b: &mut Bundle, script: &str) -> (i32, String, String) {
    b.sh(script);
    let id = unique_id("spec12");
    let r = rt.run(b, &id);
    leaks::assert_none(&id, b.path(), rt.root(), None);
    r
}

fn run_ok(rt: &Runtime, b: &mut Bundle, script: &str) -> String {
    let (code, out, err) = run(rt, b, script);
    assert_eq!(code, 0, "{} failed: {script}\nstdout: {out}\nstderr: {err}", rt.bin().display());
    out
}

/// Fields of /proc/PID/stat after the command name, numbered as proc(5)
/// numbers them (field 3 is the state).
fn stat_field(stat: &str, n: usize) -> i64 {
    let after = stat.rsplit_once(')').expect("stat has (comm)").1;
    after.split_whitespace().nth(n - 3).expect("field present").parse().expect("a number")
}

#[test]
fn scheduler_policy_priority_and_nice_are_what_the_program_runs_with() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    // SCHED_BATCH (3) with nice 5: /proc/PID/stat fields 41 and 19.
    b.edit(|c| c["process"]["scheduler"] = json!({ "policy": "SCHED_BATCH", "nice": 5 }));
    let stat = run_ok(&rt, &mut b, "cat /proc/$$/stat");
    assert_eq!((stat_field(&stat, 41), stat_field(&stat, 19)), (3, 5), "{stat}");
    // SCHED_IDLE (5).
    b.edit(|c| c["process"]["scheduler"] = json!({ "policy": "SCHED_IDLE" }));
    let stat = run_ok(&rt, &mut b, "cat /proc/$$/stat");
    assert_eq!(stat_field(&stat, 41), 5, "{stat}");
    // A raised priority (needs CAP_SYS_NICE, held before the capabilities
    // go) with reset-on-fork: the shell keeps nice -5, a child it forks
    // starts at 0. (Real-time policies also need run time in the
    // container's cpu cgroup when the kernel has RT group scheduling.)
    b.edit(|c| {
        c["process"]["scheduler"] = json!({ "policy": "SCHED_OTHER", "nice": -5, "flags": ["SCHED_RESET_ON_FORK"] })
    });
    // (A forked shell: busybox may run cat inside the shell itself.)
    // (A forked shell, not the last command, which the shell would exec in
    // place: busybox may run cat inside the shell itself.)
    let out = run_ok(&rt, &mut b, "cat /proc/$$/stat; echo; sh -c 'cat /proc/$$/stat'; true");
    let mut lines = out.lines().filter(|l| !l.is_empty());
    let (sh, child) = (lines.next().unwrap(), lines.next().unwrap());
    assert_eq!((stat_field(sh, 19), stat_field(child, 19)), (-5, 0), "{out}");

    // A value out of range is refused, naming the field, and nothing runs.
    b.edit(|c| c["process"]["scheduler"] = json!({ "policy": "SCHED_OTHER", "nice": 40 }));
    let (code, _, err) = run(&rt, &mut b, "echo ran");
    assert_ne!(code, 0);
    assert!(err.contains("process.scheduler.nice: 40"), "{err}");
}

#[test]
fn io_priority_class_and_level_are_what_the_program_runs_with() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.edit(|c| c["process"]["ioPriority"] = json!({ "class": "IOPRIO_CLASS_BE", "priority": 6 }));
    assert_eq!(run_ok(&rt, &mut b, "ionice -p $$").trim(), "best-effort: prio 6");
    b.edit(|c| c["process"]["ioPriority"] = json!({ "class": "IOPRIO_CLASS_IDLE", "priority": 0 }));
    assert_eq!(run_ok(&rt, &mut b, "ionice -p $$").trim(), "idle");
    b.edit(|c| c["process"]["ioPriority"] = json!({ "class": "IOPRIO_CLASS_RT", "priority": 9 }));
    let (code, _, err) = run(&rt, &mut b, "true");
    assert_ne!(code, 0);
    assert!(err.contains("process.ioPriority.priority: 9"), "{err}");
}

#[test]
fn personality_is_what_the_program_runs_with() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.edit(|c| c["linux"]["personality"] = json!({ "domain": "LINUX32" }));
    let out = run_ok(&rt, &mut b, "cat /proc/$$/personality; uname -m");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("00000008"), "PER_LINUX32: {out}");
    if cfg!(target_arch = "x86_64") {
        assert_eq!(lines.next(), Some("i686"), "uname reports the 32-bit machine: {out}");
    }
    b.edit(|c| c["linux"]["personality"] = json!({ "domain": "LINUX", "flags": ["ADDR_NO_RANDOMIZE"] }));
    assert_eq!(run_ok(&rt, &mut b, "cat /proc/$$/personality").trim(), "00040000");
    b.edit(|c| c["linux"]["personality"] = json!({ "domain": "LINUX", "flags": ["NO_SUCH_FLAG"] }));
    let (code, _, err) = run(&rt, &mut b, "true");
    assert_ne!(code, 0);
    assert!(err.contains("linux.personality.flags[0]") && err.contains("NO_SUCH_FLAG"), "{err}");
}

#[test]
fn memory_policy_is_what_the_program_runs_with_and_a_missing_node_is_named() {
    if !Path::new("/proc/self/numa_maps").exists() {
        eprintln!("SKIPPED: this kernel has no NUMA support (no /proc/self/numa_maps)");
        return;
    }
    let rt = runtime();
    let mut b = Bundle::busybox();
    // numa_maps shows the task's policy for mappings without their own.
    for (mode, shown) in [("MPOL_BIND", "bind:0"), ("MPOL_INTERLEAVE", "interleave:0"), ("MPOL_PREFERRED", "prefer:0")]
    {
        b.edit(|c| c["linux"]["memoryPolicy"] = json!({ "mode": mode, "nodes": "0" }));
        let out = run_ok(&rt, &mut b, "head -1 /proc/$$/numa_maps");
        assert_eq!(out.split_whitespace().nth(1), Some(shown), "{mode}: {out}");
    }
    b.edit(|c| c["linux"]["memoryPolicy"] = json!({ "mode": "MPOL_LOCAL" }));
    let out = run_ok(&rt, &mut b, "head -1 /proc/$$/numa_maps");
    assert_eq!(out.split_whitespace().nth(1), Some("local"), "{out}");

    let missing = (1..64).find(|n| !Path::new(&format!("/sys/devices/system/node/node{n}")).exists()).unwrap();
    b.edit(|c| c["linux"]["memoryPolicy"] = json!({ "mode": "MPOL_BIND", "nodes": format!("0,{missing}") }));
    let (code, _, err) = run(&rt, &mut b, "echo ran");
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("linux.memoryPolicy.nodes: NUMA node {missing} does not exist on this host")),
        "{err}"
    );
}

/// Cpus_allowed_list of a process, from the host's /proc.
fn cpus_allowed(status: &str) -> String {
    status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).expect("Cpus_allowed_list").trim().to_string()
}

#[test]
fn exec_cpu_affinity_pins_exec_processes_not_the_init() {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if cpus < 2 {
        eprintln!("SKIPPED: needs two CPUs");
        return;
    }
    let rt = runtime();
    let mut b = Bundle::busybox();
    let last = cpus - 1;
    b.edit(|c| c["process"]["execCPUAffinity"] = json!({ "initial": "0", "final": last.to_string() }));
    b.args(&["sleep", &unique_sleep()]);
    let id = unique_id("affinity");
    rt.ok(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    rt.ok(&["start", &id]);
    let init = rt.state(&id)["pid"].as_i64().unwrap();
    let host_all = cpus_allowed(&std::fs::read_to_string("/proc/self/status").unwrap());
    let init_cpus = cpus_allowed(&std::fs::read_to_string(format!("/proc/{init}/status")).unwrap());
    assert_eq!(init_cpus, host_all, "runtime-spec: not applicable to the container's init");
    // exec without --process runs config.json's process: its setting applies.
    let out = rt.ok(&["exec", &id, "grep", "Cpus_allowed_list", "/proc/self/status"]);
    assert_eq!(cpus_allowed(&out), last.to_string(), "{out}");
    // A process.json's own setting wins.
    let p = tempfile::NamedTempFile::new().unwrap();
    let process = json!({ "user": { "uid": 0, "gid": 0 }, "cwd": "/", "args": ["grep", "Cpus_allowed_list", "/proc/self/status"],
                          "execCPUAffinity": { "final": "0" } });
    std::fs::write(p.path(), process.to_string()).unwrap();
    let out = rt.ok(&["exec", "--process", p.path().to_str().unwrap(), &id]);
    assert_eq!(cpus_allowed(&out), "0", "{out}");
    // A CPU the host lacks: a clear error naming the field.
    let process = json!({ "user": { "uid": 0, "gid": 0 }, "cwd": "/", "args": ["true"],
                          "execCPUAffinity": { "initial": "1000" } });
    std::fs::write(p.path(), process.to_string()).unwrap();
    let err = rt.fails(&["exec", "--process", p.path().to_str().unwrap(), &id]);
    assert!(err.contains("process.execCPUAffinity.initial"), "{err}");
    rt.ok(&["delete", "--force", &id]);
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

/// A network namespace made by the test (never the host's), removed when
/// dropped, with `ip netns`.
struct NetNs {
    name: String,
}

impl NetNs {
    fn new(what: &str) -> NetNs {
        let name = unique_id(&format!("berth-{what}"));
        ip(&["netns", "add", &name]);
        NetNs { name }
    }
    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
    /// `ip -n NS args`, its stdout.
    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }
    /// Whether the namespace has an interface `name` (a veth shows as
    /// "name@peer").
    fn has_link(&self, name: &str) -> bool {
        self.links().lines().any(|l| l.split(": ").nth(1).is_some_and(|n| n.split('@').next() == Some(name)))
    }
    fn links(&self) -> String {
        let out = Command::new(tool("ip").unwrap()).args(["-n", &self.name, "-o", "link", "show"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new(tool("ip").unwrap()).args(["netns", "del", &self.name]).status();
    }
}

fn ip(args: &[&str]) -> String {
    let out = Command::new(tool("ip").unwrap()).args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The runtime, run inside network namespace `ns`: that is the "host" the
/// devices come from, so the machine's own interfaces are never touched.
fn in_netns(rt: &Runtime, ns: &NetNs, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(tool("nsenter").unwrap());
    cmd.arg(format!("--net={}", ns.path())).arg(rt.bin()).arg("--root").arg(rt.root()).args(args);
    output_via_files(&mut cmd)
}

#[test]
fn net_devices_move_in_renamed_with_their_address_and_back_on_delete() {
    let netns_works = tool("ip")
        .is_some_and(|ip| Command::new(ip).args(["netns", "list"]).output().is_ok_and(|o| o.status.success()));
    if !netns_works || tool("nsenter").is_none() {
        eprintln!("SKIPPED: needs ip (iproute2, with netns) and nsenter");
        return;
    }
    let rt = runtime();
    let host = NetNs::new("host");
    // A veth pair (this kernel may lack the dummy driver); one end moves.
    let dev = format!("bd{}", std::process::id() % 100_000);
    let peer = format!("{dev}p");
    host.ip(&["link", "add", &dev, "type", "veth", "peer", "name", &peer]);
    host.ip(&["link", "set", &peer, "up"]);
    // Link-local, in a namespace of the test's own: no traffic anywhere.
    host.ip(&["addr", "add", "169.254.169.13/32", "dev", &dev]);
    host.ip(&["link", "set", &dev, "up"]);

    // A new network namespace: the device is there, renamed, with its
    // address and up; `delete --force` moves it back before the namespace
    // (and with it a virtual device) is gone.
    let mut b = Bundle::busybox();
    b.edit(|c| c["linux"]["netDevices"] = json!({ dev.clone(): { "name": "ctr0" } }));
    b.args(&["sleep", &unique_sleep()]);
    let id = unique_id("netdev");
    let out = in_netns(&rt, &host, &["create", "--bundle", b.path().to_str().unwrap(), &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!host.has_link(&dev), "moved out of the host: {}", host.links());
    assert!(in_netns(&rt, &host, &["start", &id]).status.success());
    let out = in_netns(
        &rt,
        &host,
        &["exec", &id, "sh", "-c", "ls /sys/class/net; ip -o addr show ctr0; cat /sys/class/net/ctr0/operstate"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.lines().any(|l| l == "ctr0"), "{text}");
    assert!(text.contains("inet 169.254.169.13/32"), "the permanent address came along: {text}");
    assert!(!text.contains(&dev), "{text}");
    // A refused delete (the container runs) moves nothing.
    assert!(!in_netns(&rt, &host, &["delete", &id]).status.success());
    assert!(!host.has_link(&dev), "still in the container: {}", host.links());
    let out = in_netns(&rt, &host, &["delete", "--force", &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let links = host.links();
    assert!(host.has_link(&dev) && links.contains(",UP"), "back, under its own name and up: {links}");
    assert!(host.ip(&["-o", "addr", "show", &dev]).contains("169.254.169.13/32"));
    leaks::assert_none(&id, b.path(), rt.root(), None);

    // A namespace given by path outlives the container: after `run` the
    // device is back too.
    let ctr = NetNs::new("ctr");
    b.edit(|c| {
        for ns in c["linux"]["namespaces"].as_array_mut().unwrap() {
            if ns["type"] == "network" {
                ns["path"] = ctr.path().into();
            }
        }
    });
    b.sh("ls /sys/class/net");
    let id = unique_id("netdev");
    let out = in_netns(&rt, &host, &["run", "--bundle", b.path().to_str().unwrap(), &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).lines().any(|l| l == "ctr0"));
    assert!(host.has_link(&dev), "back after run: {}", host.links());
    assert!(!ctr.has_link("ctr0"), "{}", ctr.links());
    leaks::assert_none(&id, b.path(), rt.root(), None);

    // A device the host lacks: create fails, naming it, and leaves nothing.
    b.edit(|c| c["linux"]["netDevices"] = json!({ "nosuchdev0": {} }));
    let id = unique_id("netdev");
    let out = in_netns(&rt, &host, &["create", "--bundle", b.path().to_str().unwrap(), &id]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("nosuchdev0"), "{err}");
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

#[test]
fn features_list_memory_policy_and_net_devices() {
    let rt = runtime();
    let f: Value = serde_json::from_str(&rt.ok(&["features"])).unwrap();
    assert_eq!(f["linux"]["netDevices"]["enabled"], true);
    let modes = f["linux"]["memoryPolicy"]["modes"].as_array().unwrap();
    assert!(modes.iter().any(|m| m == "MPOL_BIND") && modes.iter().any(|m| m == "MPOL_PREFERRED_MANY"));
    let flags = f["linux"]["memoryPolicy"]["flags"].as_array().unwrap();
    assert!(flags.iter().any(|m| m == "MPOL_F_STATIC_NODES"));
}

/// The root mount's propagation as the container sees it: the optional
/// fields of "/" in /proc/self/mountinfo ("shared:N", "master:N",
/// "unbindable", or none for private).
const ROOT_PROPAGATION: &str =
    "awk '$5==\"/\" { s=\"\"; for (i=7; $i!=\"-\"; i++) s=s\" \"$i; print \"root:\"s }' /proc/self/mountinfo";

/// Runs the bundle with `rt` as a systemd host would (its "/" shared):
/// in a mount namespace of its own, cut off from the host's mounts
/// (private) and then made rshared, so nothing done there reaches the real
/// host even when its "/" is shared. With `own_mount`, the rootfs is a
/// mount of its own there (as an engine's overlay is).
fn root_propagation(rt: &Runtime, b: &Bundle, own_mount: bool) -> Result<String, String> {
    let id = unique_id("prop");
    let rootfs = b.rootfs();
    let bind = if own_mount { format!("mount --bind {0} {0} && ", rootfs.display()) } else { String::new() };
    let script = format!(
        "mount --make-rshared / && {bind}exec {} --root {} run --bundle {} {id}",
        rt.bin().display(),
        rt.root().display(),
        b.path().display()
    );
    let mut cmd = Command::new(tool("unshare").unwrap());
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
    let out = output_via_files(&mut cmd);
    leaks::assert_none(&id, b.path(), rt.root(), None);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    match text.lines().find_map(|l| l.strip_prefix("root:")) {
        Some(fields) if out.status.success() => Ok(fields.trim().to_string()),
        _ => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// What runtime-spec says each mode looks like from inside.
fn as_the_spec_says(mode: &str, seen: &str) -> bool {
    match mode {
        "shared" => seen.starts_with("shared:"),
        "slave" => seen.starts_with("master:"),
        "private" => seen.is_empty(),
        "unbindable" => seen == "unbindable",
        _ => unreachable!(),
    }
}

#[test]
fn root_propagation_from_inside_is_what_the_spec_says_for_all_four_modes() {
    if tool("unshare").is_none() {
        eprintln!("SKIPPED: needs unshare(1)");
        return;
    }
    let rt = runtime();
    let (runc, crun) = (reference("runc"), reference("crun"));
    let mut b = Bundle::busybox();
    // crun 1.8 refuses a 1.2.0 config; nothing here needs more than 1.0.
    b.edit(|c| c["ociVersion"] = "1.0.2".into());
    b.sh(ROOT_PROPAGATION);
    for own_mount in [false, true] {
        for mode in ["shared", "slave", "private", "unbindable"] {
            b.edit(|c| c["linux"]["rootfsPropagation"] = mode.into());
            let ours = root_propagation(&rt, &b, own_mount).unwrap_or_else(|e| panic!("{mode}: {e}"));
            assert!(as_the_spec_says(mode, &ours), "{mode} (rootfs its own mount: {own_mount}): {ours:?}");
            let theirs = |r: &Option<Runtime>| r.as_ref().map(|r| root_propagation(r, &b, own_mount));
            let (runc_seen, crun_seen) = (theirs(&runc), theirs(&crun));
            eprintln!("{mode:>10} own mount {own_mount:5}: berth {ours:?}, runc {runc_seen:?}, crun {crun_seen:?}");
            // Side by side: where the references follow the spec, they see
            // what berth sees. runc 1.1.5 leaves a "shared" root private and
            // fails "unbindable" when the rootfs is not a mount of its own;
            // crun leaves "slave" private.
            if let Some(Ok(seen)) = &runc_seen
                && as_the_spec_says(mode, seen)
            {
                assert_eq!(seen.split(':').next(), ours.split(':').next(), "runc, {mode}");
            }
            if let Some(Ok(seen)) = &crun_seen
                && as_the_spec_says(mode, seen)
            {
                assert_eq!(seen.split(':').next(), ours.split(':').next(), "crun, {mode}");
            }
            if mode == "private"
                && let Some(Ok(seen)) = &runc_seen
            {
                assert_eq!(seen, &ours, "private: runc and berth agree");
            }
        }
    }
}

#[test]
fn a_v1_device_rule_is_listed_as_given_right_after_the_deny_all() {
    if !Path::new("/sys/fs/cgroup/devices/devices.list").exists() {
        eprintln!("SKIPPED: no cgroup v1 devices controller (v2 has no devices.list)");
        return;
    }
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.edit(|c| {
        c["linux"]["resources"]["devices"] = json!([
            { "allow": false, "access": "rwm" },
            { "allow": true, "type": "c", "major": 10, "minor": 229, "access": "rwm" },
            { "allow": true, "type": "b", "major": 8, "minor": 20, "access": "rwm" }
        ]);
    });
    let list = "cat /sys/fs/cgroup/devices/devices.list";
    let ours = run_ok(&rt, &mut b, list);
    let lines: Vec<&str> = ours.lines().collect();
    assert_eq!(lines[..2], ["c 10:229 rwm", "b 8:20 rwm"], "the rules in config.json's order first: {ours}");
    assert!(!ours.contains("c 0:0"), "{ours}");
    if let Some(runc) = reference("runc") {
        // runc lists the same rules (in its own sorted order).
        let theirs = run_ok(&runc, &mut b, list);
        for rule in ["c 10:229 rwm", "b 8:20 rwm"] {
            assert!(theirs.lines().any(|l| l == rule), "runc has {rule}: {theirs}");
        }
    }
}

#[test]
fn mount_label_without_selinux_is_ignored_with_a_warning_as_crun_does() {
    if berth_runtime::lsm::selinux_enabled() {
        eprintln!("SKIPPED: this host has SELinux, where the label is applied");
        return;
    }
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.edit(|c| {
        c["ociVersion"] = "1.0.2".into(); // crun 1.8 refuses 1.2.0
        c["linux"]["mountLabel"] = "system_u:object_r:container_file_t:s0:c1,c2".into();
    });
    let script = "grep -c context= /proc/self/mountinfo; echo ran";
    let (code, out, err) = run(&rt, &mut b, script);
    assert_eq!((code, out.as_str()), (0, "0\nran\n"), "{err}");
    assert!(err.contains("linux.mountLabel") && err.contains("ignored"), "a warning says so: {err}");
    // crun ignores it too. runc 1.1.5 adds context= to the tmpfs mounts
    // anyway and fails with the kernel's EINVAL: not something to copy.
    if let Some(crun) = reference("crun") {
        let (code, out, err) = run(&crun, &mut b, script);
        assert_eq!((code, out.as_str()), (0, "0\nran\n"), "crun ignores it too: {err}");
    }
}

#[test]
fn a_start_container_hook_without_env_gets_the_programs_environment_as_with_runc() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.edit(|c| {
        c["root"]["readonly"] = false.into();
        c["process"]["env"].as_array_mut().unwrap().push("FROM_PROCESS=yes".into());
        c["hooks"] = json!({ "startContainer": [{ "path": "/bin/sh", "args": ["sh", "-c", "env > /hook-env"] }] });
    });
    let script = "grep -E '^(FROM_PROCESS|HOME|BERTH_TEST_CALLER)=' /hook-env | sort";
    let with_caller_env = |rt: &Runtime, b: &mut Bundle| {
        b.sh(script);
        let id = unique_id("hookenv");
        let mut cmd = rt.cmd();
        cmd.env("BERTH_TEST_CALLER", "leaked").args(["run", "--bundle", b.path().to_str().unwrap(), &id]);
        let out = output_via_files(&mut cmd);
        leaks::assert_none(&id, b.path(), rt.root(), None);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ours = with_caller_env(&rt, &mut b);
    assert_eq!(ours, "FROM_PROCESS=yes\nHOME=/root\n", "the program's env, never the caller's");
    if let Some(runc) = reference("runc") {
        assert_eq!(with_caller_env(&runc, &mut b), ours, "runc");
    }
}

#[test]
fn preserve_fds_beyond_those_open_is_not_an_error_as_with_runc() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    // The fds of the shell (pid 1), listed by another process.
    b.sh("cat /proc/self/fd/5; sh -c 'ls /proc/1/fd'; echo end");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "five\n").unwrap();
    let five = std::fs::File::open(file.path()).unwrap();
    // The runtime gets 0-2 and 5; fds 3 and 4 are not open.
    let with_fd5 = |rt: &Runtime| {
        let id = unique_id("fds");
        let mut cmd = rt.cmd();
        cmd.args(["run", "--preserve-fds", "3", "--bundle", b.path().to_str().unwrap(), &id]);
        let fd = five.as_raw_fd();
        // SAFETY: dup2, fcntl and close are async-signal-safe; `five`
        // stays open until the child has exec'd.
        unsafe {
            cmd.pre_exec(move || {
                // dup2 onto itself keeps FD_CLOEXEC (a test process with
                // few fds open, as in the v2 guest, may get 5 for `five`).
                let r = if fd == 5 { libc::fcntl(5, libc::F_SETFD, 0) } else { libc::dup2(fd, 5) };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(3);
                libc::close(4);
                Ok(())
            })
        };
        let out = output_via_files(&mut cmd);
        leaks::assert_none(&id, b.path(), rt.root(), None);
        out
    };
    let out = with_fd5(&rt);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(text.lines().next(), Some("five"), "fd 5 reached the program: {text}");
    let fds: Vec<&str> = text.lines().skip(1).take_while(|l| *l != "end").collect();
    assert_eq!(fds, ["0", "1", "2", "5"], "no other fd, none of the runtime's: {text}");
    if let Some(runc) = reference("runc") {
        let out = with_fd5(&runc);
        assert!(out.status.success(), "runc starts it too: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().next(), Some("five"), "runc passes fd 5");
    }
}

#[test]
fn proc_or_sys_over_a_symlink_fails_in_runcs_words() {
    let rt = runtime();
    let runc = reference("runc");
    for (dir, fs) in [("proc", "proc"), ("sys", "sysfs")] {
        let b = Bundle::busybox();
        let rootfs = b.rootfs();
        std::fs::remove_dir(rootfs.join(dir)).unwrap();
        std::os::unix::fs::symlink("tmp", rootfs.join(dir)).unwrap();
        // (The log's msg="..." escapes the quotes around the name.)
        let words = "must be mounted on ordinary directory";
        for r in std::iter::once(&rt).chain(runc.as_ref()) {
            let id = unique_id("ordinary");
            let (code, _, err) = r.run(&b, &id);
            assert_ne!(code, 0, "{}: {dir} mounted through a symlink", r.bin().display());
            assert!(
                err.contains(words) && err.contains(&format!("filesystem \\\"{fs}\\\"")),
                "{}: {err}",
                r.bin().display()
            );
            leaks::assert_none(&id, b.path(), r.root(), None);
        }
        assert_eq!(std::fs::read_dir(rootfs.join("tmp")).unwrap().count(), 0, "nothing mounted through the link");
    }
}
