//! `berth`'s inspection and maintenance commands end to end: top, stats,
//! cp, port, rename, container prune, system df/prune, info, version, on
//! real containers under berth-shim and berth-runtime.

use berth_testkit::in_test_host;
use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use common::{Berth, leftovers};

/// What ops tests add to the shared harness.
trait Ops {
    fn fails(&self, args: &[&str]) -> String;
    fn detached(&self, name: &str, extra: &[&str], args: &[&str]) -> String;
    fn exited(&self, name: &str, args: &[&str]) -> String;
}

/// The shared harness with the image already pulled.
fn berth() -> Berth {
    let b = Berth::new();
    b.ok(&["pull", "-q", &b.image]);
    b
}

impl Ops for Berth {
    /// Fails with docker's exit code 1; its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert_eq!(out.status.code(), Some(1), "berth {args:?} should fail: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `run -d --network none IMAGE ARGS...` named `name`; the id.
    fn detached(&self, name: &str, extra: &[&str], args: &[&str]) -> String {
        let mut all = vec!["run", "-d", "--name", name, "--network", "none"];
        all.extend(extra);
        all.push(&self.image);
        all.extend(args);
        self.ok(&all).trim().to_owned()
    }

    /// A container that ran `args` to its end.
    fn exited(&self, name: &str, args: &[&str]) -> String {
        let id = self.detached(name, &[], args);
        self.ok(&["wait", name]);
        id
    }
}

/// The table's row whose first column starts with `key`, split on runs
/// of two or more spaces (cells may hold single spaces).
fn row(table: &str, key: &str) -> Vec<String> {
    let line = table.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key:?} row in:\n{table}"));
    line.split("  ").map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect()
}

#[test]
fn top_lists_the_containers_processes_with_their_commands() {
    let b = berth();
    b.detached("box", &[], &["sh", "-c", "sleep 1001 & exec sleep 1000"]);
    let pid = b.inspect("box")["State"]["Pid"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = b.ok(&["top", "box"]);
        if out.contains("sleep 1001") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"], "{out}");
    assert_eq!(out.lines().count(), 3, "two processes: {out}");
    let init: Vec<&str> = out.lines().find(|l| l.ends_with(" sleep 1000")).expect(&out).split_whitespace().collect();
    assert_eq!((init[0], init[1]), ("root", pid.to_string().as_str()), "{out}");
    assert_eq!((init[5], init[6]), ("?", "00:00:00"), "{out}");
    let child: Vec<&str> = out.lines().find(|l| l.ends_with(" sleep 1001")).expect(&out).split_whitespace().collect();
    assert_eq!(child[2], pid.to_string(), "the background sleep is the init's child: {out}");
    assert_eq!(b.ok(&["container", "top", "box"]).lines().count(), 3, "container top is top");

    b.ok(&["kill", "box"]);
    b.ok(&["wait", "box"]);
    assert!(b.fails(&["top", "box"]).contains("is not running"));
    assert!(b.fails(&["top", "nosuch"]).contains("No such container: nosuch"));
}

#[test]
fn stats_report_the_memory_limit_and_the_pids() {
    let b = berth();
    let id = b.detached("lim", &["--memory", "64m"], &["sh", "-c", "sleep 1000 & exec sleep 1001"]);
    b.exited("gone", &["true"]);
    // The shell forks the first sleep before it becomes the second.
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = b.ok(&["stats", "--no-stream", "lim"]);
        if row(&out, &id[..12])[7] == "2" || Instant::now() > deadline {
            break out;
        }
    };
    let header = row(&out, "CONTAINER ID");
    assert_eq!(header, ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"]);
    let r = row(&out, &id[..12]);
    assert_eq!(r[1], "lim", "{out}");
    assert!(r[2].ends_with('%') && r[4].ends_with('%'), "{out}");
    let (usage, limit) = r[3].split_once(" / ").expect(&out);
    assert_eq!(limit, "64MiB", "--memory 64m is the limit: {out}");
    assert!(usage != "0B", "a running container uses memory: {out}");
    assert_eq!(r[7], "2", "two sleeps: {out}");

    // Without names: the running ones; -a adds the stopped one, in zeros.
    let all = b.ok(&["stats", "--no-stream"]);
    assert!(all.contains("lim") && !all.contains("gone"), "{all}");
    let all = b.ok(&["stats", "--no-stream", "-a"]);
    assert_eq!(row(&all, &b.inspect("gone")["Id"].as_str().unwrap()[..12])[7], "0", "{all}");

    let v: serde_json::Value =
        serde_json::from_str(&b.ok(&["container", "stats", "--no-stream", "--format", "json", "lim"])).unwrap();
    assert_eq!(v["Name"], "lim");
    assert_eq!(v["PIDs"], "2");
    assert!(v["MemUsage"].as_str().unwrap().ends_with(" / 64MiB"), "{v}");
    assert!(b.fails(&["stats", "--no-stream", "nosuch"]).contains("No such container"));

    // Streaming: the screen redrawn about every second until interrupted.
    let mut c = b.command();
    c.args(["stats", "lim"]);
    let mut child = c.stdout(std::process::Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(3500));
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let frames = text.matches("\x1b[2J\x1b[H").count();
    assert!((2..=4).contains(&frames), "{frames} frames in 3.5 s: {text:?}");
    assert_eq!(text.matches(" / 64MiB").count(), frames, "{text:?}");
}

#[test]
fn cp_copies_files_and_trees_both_ways_running_or_stopped() {
    let b = berth();
    b.detached("box", &["--tmpfs", "/fast"], &["sleep", "1000"]);
    let host = tempfile::tempdir().unwrap();
    let h = |p: &str| host.path().join(p);
    let hs = |p: &str| h(p).display().to_string();

    // A file in, and back out under another name.
    std::fs::write(h("in.txt"), "from the host\n").unwrap();
    b.ok(&["cp", &hs("in.txt"), "box:/tmp/in.txt"]);
    assert_eq!(b.ok(&["exec", "box", "cat", "/tmp/in.txt"]), "from the host\n");
    assert_eq!(b.ok(&["exec", "box", "stat", "-c", "%u:%g", "/tmp/in.txt"]), "0:0\n");
    b.ok(&["cp", "box:/tmp/in.txt", &hs("back.txt")]);
    assert_eq!(std::fs::read_to_string(h("back.txt")).unwrap(), "from the host\n");
    // Into an existing directory: under the source's name.
    b.ok(&["cp", "box:/etc/hostname", &hs("")]);
    assert_eq!(std::fs::read_to_string(h("hostname")).unwrap(), b.ok(&["exec", "box", "cat", "/etc/hostname"]));

    // A running container is seen with its mounts, as it sees itself.
    b.ok(&["cp", &hs("in.txt"), "box:/fast/"]);
    assert_eq!(b.ok(&["exec", "box", "cat", "/fast/in.txt"]), "from the host\n", "into the tmpfs");

    // A tree out (symlinks stay symlinks, modes kept) and in again.
    b.ok(&[
        "exec",
        "box",
        "sh",
        "-c",
        "mkdir -p /tmp/d/sub && echo deep > /tmp/d/sub/f && chmod 751 /tmp/d/sub && ln -s sub/f /tmp/d/link",
    ]);
    b.ok(&["cp", "box:/tmp/d", &hs("out")]);
    assert_eq!(std::fs::read_to_string(h("out/sub/f")).unwrap(), "deep\n");
    assert_eq!(std::fs::read_link(h("out/link")).unwrap(), Path::new("sub/f"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(h("out/sub")).unwrap().permissions().mode() & 0o7777, 0o751);
    b.ok(&["container", "cp", &hs("out"), "box:/tmp/again"]);
    assert_eq!(b.ok(&["exec", "box", "cat", "/tmp/again/sub/f"]), "deep\n");
    b.ok(&["cp", &format!("{}/.", hs("out")), "box:/tmp/d"]);
    assert_eq!(b.ok(&["exec", "box", "ls", "/tmp/d"]), "link\nsub\n", "SRC/. merges the contents");

    // docker's refusals.
    assert!(b.fails(&["cp", "box:/nope", &hs("x")]).contains("Could not find the file /nope in container box"));
    assert!(b.fails(&["cp", "box:/tmp/d", &hs("in.txt")]).contains("cannot copy a directory to a file"));
    assert!(b.fails(&["cp", &hs("in.txt"), &hs("y")]).contains("must specify at least one container"));
    assert!(b.fails(&["cp", "box:/a", "box:/b"]).contains("copying between containers is not supported"));

    // A stopped container's rootfs is still there to copy from and to.
    b.ok(&["stop", "-t", "0", "box"]);
    b.ok(&["cp", "box:/tmp/in.txt", &hs("stopped.txt")]);
    assert_eq!(std::fs::read_to_string(h("stopped.txt")).unwrap(), "from the host\n");
    b.ok(&["cp", &hs("in.txt"), "box:/tmp/later.txt"]);
    b.ok(&["rm", "box"]);
    assert!(leftovers(b.dir.path()).is_empty(), "{:?}", leftovers(b.dir.path()));
}

/// The container's symlinks point into the container: `/evil -> /` and
/// `/etc/x -> <a host file>` neither read nor write host files.
#[test]
fn cp_through_container_symlinks_never_touches_the_host() {
    let b = berth();
    let host = tempfile::tempdir().unwrap();
    let secret = host.path().join("secret");
    std::fs::write(&secret, "host secret\n").unwrap();
    let script =
        format!("ln -s / /evil && ln -s {} /etc/x && mkdir /d && ln -s / /d/root && exec sleep 1000", secret.display());
    b.detached("box", &[], &["sh", "-c", &script]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.cmd(&["exec", "box", "test", "-L", "/d/root"]).status.code() != Some(0) {
        assert!(Instant::now() < deadline, "the symlinks were never made");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = |p: &str| host.path().join(p);

    // Reading through /evil reads the container's /etc/passwd.
    b.ok(&["cp", "box:/evil/etc/passwd", out("passwd").to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(out("passwd")).unwrap(), b.ok(&["exec", "box", "cat", "/etc/passwd"]));
    // A symlink is copied as the symlink, not as the host file it names.
    b.ok(&["cp", "box:/etc/x", out("x").to_str().unwrap()]);
    assert!(std::fs::symlink_metadata(out("x")).unwrap().file_type().is_symlink());
    b.ok(&["cp", "box:/d", out("d").to_str().unwrap()]);
    assert_eq!(std::fs::read_link(out("d/root")).unwrap(), Path::new("/"), "the tree's link to / stays a link");
    assert_eq!(std::fs::read_dir(out("d")).unwrap().count(), 1, "and / was not copied");

    // Writing through /evil writes the container's /tmp, not the host's.
    let name = format!("berth-escape-{}", std::process::id());
    std::fs::write(out("payload"), "payload\n").unwrap();
    b.ok(&["cp", out("payload").to_str().unwrap(), &format!("box:/evil/tmp/{name}")]);
    assert!(!Path::new("/tmp").join(&name).exists(), "written on the host");
    assert_eq!(b.ok(&["exec", "box", "cat", &format!("/tmp/{name}")]), "payload\n");
    // Writing to /etc/x replaces the link in the container; the host file stays.
    b.ok(&["cp", out("payload").to_str().unwrap(), "box:/etc/x"]);
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host secret\n");
    assert_eq!(b.ok(&["exec", "box", "cat", "/etc/x"]), "payload\n");
    // Into /d/root/... is into the container's /.
    let _ = b.cmd(&[
        "cp",
        out("payload").to_str().unwrap(),
        &format!("box:/d/root{}", host.path().join("pwned").display()),
    ]);
    assert!(!host.path().join("pwned").exists(), "written on the host");
}

#[test]
fn port_prints_the_published_mappings() {
    in_test_host(|| {
        let b = berth();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let p = format!("{port}:8080");
        b.ok(&["run", "-d", "--name", "web", "-p", &p, "-p", "127.0.0.1:5353:53/udp", &b.image, "sleep", "1000"]);
        assert_eq!(b.ok(&["port", "web"]), format!("53/udp -> 127.0.0.1:5353\n8080/tcp -> 0.0.0.0:{port}\n"));
        assert_eq!(b.ok(&["port", "web", "8080"]), format!("0.0.0.0:{port}\n"));
        assert_eq!(b.ok(&["container", "port", "web", "53/udp"]), "127.0.0.1:5353\n");
        assert!(b.fails(&["port", "web", "80"]).contains("No public port '80/tcp' published for web"));
        b.detached("quiet", &[], &["sleep", "1000"]);
        assert_eq!(b.ok(&["port", "quiet"]), "");
        b.ok(&["rm", "-f", "web", "quiet"]);
    });
}

#[test]
fn rename_moves_the_name_and_names_stay_unique() {
    let b = berth();
    let one = b.detached("one", &[], &["sleep", "1000"]);
    let two = b.detached("two", &[], &["sleep", "1000"]);
    b.ok(&["rename", "one", "uno"]);
    assert_eq!(b.ok(&["exec", "uno", "echo", "renamed"]), "renamed\n");
    assert_eq!(b.inspect("uno")["Id"], one);
    assert_eq!(b.inspect("uno")["Name"], "/uno");
    b.fails(&["inspect", "one"]);
    let err = b.fails(&["rename", "uno", "two"]);
    let want = format!(
        "Conflict. The container name \"/two\" is already in use by container \"{two}\". You have to remove (or rename) that container to be able to reuse that name."
    );
    assert!(err.contains(&want), "{err}");
    assert!(b.fails(&["container", "rename", "uno", "bad/name"]).contains("invalid container name"));
    // The old name is free again.
    b.detached("one", &[], &["sleep", "1000"]);
    assert!(b.ok(&["ps"]).contains("uno"));
}

/// `diff`: what a stopped container added, changed and deleted, in
/// docker's letters and order; a container that changed nothing has none.
#[test]
fn diff_lists_what_the_container_changed() {
    let b = berth();
    b.exited(
        "changer",
        &["sh", "-c", "mkdir -p /new/sub && echo x > /new/sub/f && echo y >> /etc/passwd && rm /etc/group"],
    );
    let diff = b.ok(&["diff", "changer"]);
    assert_eq!(diff, "C /etc\nD /etc/group\nC /etc/passwd\nA /new\nA /new/sub\nA /new/sub/f\n");
    b.exited("idle", &["true"]);
    assert_eq!(b.ok(&["container", "diff", "idle"]), "");
    assert!(b.fails(&["diff", "nosuch"]).contains("No such container: nosuch"));
}

#[test]
fn container_prune_removes_the_stopped_and_keeps_the_running() {
    let b = berth();
    let up = b.detached("up", &[], &["sleep", "1000"]);
    let done = b.exited("done", &["sh", "-c", "head -c 5000 /dev/zero > /big"]);
    let failed = b.exited("failed", &["false"]);
    let out = b.ok(&["container", "prune", "-f"]);
    assert!(out.starts_with("Deleted Containers:\n"), "{out}");
    for id in [&done, &failed] {
        assert!(out.lines().any(|l| l == id), "{id} pruned: {out}");
        assert!(!leftovers(b.dir.path()).iter().any(|m| m.contains(id.as_str())), "mounts of {id} left");
    }
    assert!(!out.contains(&up));
    assert!(out.trim_end().ends_with("Total reclaimed space: 5kB"), "the 5000 bytes /big took: {out}");
    assert_eq!(b.ok(&["ps", "-a", "-q"]), format!("{}\n", &up[..12]));
    assert_eq!(b.ok(&["exec", "up", "true"]), "", "the running one still runs");
    assert_eq!(b.ok(&["container", "prune", "-f"]), "Total reclaimed space: 0B\n");
    b.ok(&["rm", "-f", "up"]);
    assert!(leftovers(b.dir.path()).is_empty(), "{:?}", leftovers(b.dir.path()));
}

#[test]
fn system_df_info_and_version_count_what_is_there() {
    let b = berth();
    b.detached("up", &[], &["sleep", "1000"]);
    b.exited("done", &["true"]);
    b.ok(&["volume", "create", "data"]);
    let df = b.ok(&["system", "df"]);
    assert_eq!(row(&df, "TYPE"), ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]);
    assert_eq!(row(&df, "Images")[1..3], ["1", "1"], "{df}");
    assert_eq!(row(&df, "Images")[4], "0B (0%)", "the image is in use: {df}");
    assert_eq!(row(&df, "Containers")[1..3], ["2", "1"], "{df}");
    assert_eq!(row(&df, "Local Volumes")[1..3], ["1", "0"], "{df}");
    assert_eq!(row(&df, "Build Cache")[1..4], ["0", "0", "0B"], "{df}");

    let info = b.ok(&["info"]);
    assert!(info.contains(" Containers: 2\n  Running: 1\n  Paused: 0\n  Stopped: 1\n Images: 1\n"), "{info}");
    assert!(info.contains(" Storage Driver: overlay2\n") && info.contains(" Cgroup Driver: cgroupfs\n"), "{info}");
    let version = if nix::sys::statfs::statfs("/sys/fs/cgroup").unwrap().filesystem_type()
        == nix::sys::statfs::CGROUP2_SUPER_MAGIC
    {
        "2"
    } else {
        "1"
    };
    assert!(info.contains(&format!(" Cgroup Version: {version}\n")), "{info}");
    assert!(info.contains(&format!(" Docker Root Dir: {}\n", b.dir.path().join("root").display())), "{info}");
    let v: serde_json::Value = serde_json::from_str(&b.ok(&["system", "info", "--format", "json"])).unwrap();
    assert_eq!((v["Containers"].as_u64(), v["ContainersRunning"].as_u64()), (Some(2), Some(1)), "{v}");
    assert_eq!(v["NCPU"].as_u64().unwrap() as usize, std::thread::available_parallelism().unwrap().get());

    let version = b.ok(&["version"]);
    assert!(version.contains(&format!(" Version:           {}\n", env!("CARGO_PKG_VERSION"))), "{version}");
    assert!(version.contains("berth-runtime version"), "the runtime's --version: {version}");
}

#[test]
fn system_prune_takes_what_nothing_uses_and_leaves_the_running() {
    // Removing a network deletes its bridge device: in a namespace of our own.
    in_test_host(system_prune);
}

fn system_prune() {
    let b = berth();
    let up = b.detached("up", &[], &["sleep", "1000"]);
    let done = b.exited("done", &["true"]);
    b.ok(&["network", "create", "unused"]);
    b.ok(&["volume", "create", "spare"]);
    let out = b.ok(&["system", "prune", "-f"]);
    assert!(out.contains(&format!("Deleted Containers:\n{done}\n")), "{out}");
    assert!(out.contains("Deleted Networks:\nunused\n"), "{out}");
    assert!(!out.contains("Deleted Images"), "the image is in use: {out}");
    assert_eq!(b.ok(&["ps", "-a", "-q"]), format!("{}\n", &up[..12]));
    assert_eq!(b.ok(&["volume", "ls", "-q"]), "spare\n", "volumes only with --volumes");
    let out = b.ok(&["system", "prune", "-f", "--volumes", "-a"]);
    assert!(out.contains("Deleted Volumes:\nspare\n"), "{out}");
    assert_eq!(b.ok(&["volume", "ls", "-q"]), "");
    assert!(b.ok(&["images"]).contains("test/busybox"), "-a keeps an image a container uses");
    b.ok(&["rm", "-f", "up"]);
    let out = b.ok(&["system", "prune", "-a", "-f"]);
    assert!(out.contains("Deleted Images:\ndeleted: sha256:"), "{out}");
    assert!(!b.ok(&["images"]).contains("test/busybox"));
    assert!(leftovers(b.dir.path()).is_empty(), "{:?}", leftovers(b.dir.path()));
}

/// top and stats use only the OCI runtime's command line (ps, events
/// --stats): runc and crun serve them too (skipped where not installed).
#[test]
fn top_stats_and_cp_work_under_runc_and_crun() {
    let b = berth();
    for name in ["runc", "crun"] {
        let Some(bin) = ["/usr/sbin", "/usr/bin"].iter().map(|d| Path::new(d).join(name)).find(|p| p.exists()) else {
            eprintln!("skipped: {name} is not installed");
            continue;
        };
        let berth = |args: &[&str]| {
            let mut c = b.command_with_runtime(&bin);
            c.args(args);
            let out = berth_testkit::output_via_files(&mut c);
            assert!(out.status.success(), "{name}: berth {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let id =
            berth(&["run", "-d", "--name", name, "--network", "none", "--memory", "64m", &b.image, "sleep", "1000"]);
        // Removed with its own runtime whatever happens (the harness's
        // cleanup uses berth-runtime, which does not know this container).
        let checks = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let top = berth(&["top", name]);
            assert!(top.lines().nth(1).is_some_and(|l| l.ends_with(" sleep 1000")), "{name}: {top}");
            let stats = berth(&["stats", "--no-stream", name]);
            let r = row(&stats, &id[..12]);
            assert!(r[3].ends_with(" / 64MiB") && r[7] == "1", "{name}: {stats}");
            let host = tempfile::tempdir().unwrap();
            berth(&["cp", &format!("{name}:/etc/passwd"), host.path().to_str().unwrap()]);
            assert!(std::fs::read_to_string(host.path().join("passwd")).unwrap().contains("root:"), "{name}");
        }));
        berth(&["rm", "-f", name]);
        if let Err(e) = checks {
            std::panic::resume_unwind(e);
        }
    }
    assert!(leftovers(b.dir.path()).is_empty(), "{:?}", leftovers(b.dir.path()));
}

/// The freezer state of the cgroup process `pid` is in (cgroup v1).
fn freezer_state(pid: i64) -> String {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = cgroups.lines().find_map(|l| l.split_once(":freezer:").map(|(_, p)| p.to_owned()));
    let Some(path) = path else { return "no freezer hierarchy".into() };
    std::fs::read_to_string(format!("/sys/fs/cgroup/freezer{path}/freezer.state")).unwrap().trim().to_owned()
}

#[test]
fn a_container_of_another_runtime_is_paused_listed_and_killed_through_that_runtime() {
    // Only crun knows a container crun made (its state files are its own):
    // pause, unpause, top and kill must go through it, not the engine's
    // default runtime (which answered "container does not exist").
    let b = berth();
    let id = b.detached("other-rt", &["--runtime", "crun"], &["sleep", "1000"]);
    let pid = b.inspect("other-rt")["State"]["Pid"].as_i64().unwrap();
    b.ok(&["pause", "other-rt"]);
    assert_eq!(b.inspect("other-rt")["State"]["Status"], "paused");
    if std::path::Path::new("/sys/fs/cgroup/freezer").exists() {
        assert_eq!(freezer_state(pid), "FROZEN");
    }
    b.ok(&["unpause", "other-rt"]);
    assert_eq!(b.inspect("other-rt")["State"]["Status"], "running");
    let top = b.ok(&["top", "other-rt"]);
    assert!(top.contains("sleep 1000"), "{top}");
    b.ok(&["kill", "other-rt"]);
    assert_eq!(b.ok(&["wait", "other-rt"]).trim(), "137", "SIGKILL, through crun");
    b.ok(&["rm", "other-rt"]);
    assert!(!b.dir.path().join("run/runtime").join(&id).exists(), "crun's state went with it");
    assert!(leftovers(b.dir.path()).is_empty());
}

/// The host's mount table lines that name `what`.
fn host_mounts_naming(what: &str) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    table.lines().filter(|l| l.contains(what)).map(str::to_owned).collect()
}

/// berth-runtime mounts the container's overlay in the container's own
/// mount namespace: the host's table holds nothing of it, running or
/// stopped, and the engine still reads and writes the container's files
/// (cp both ways, exec --user's lookup in its live /etc/passwd).
#[test]
fn a_container_adds_no_mount_to_the_host_and_its_files_stay_reachable() {
    let b = berth();
    let id = b.detached("box", &[], &["sleep", "1000"]);
    let root = b.dir.path().display().to_string();
    assert_eq!(host_mounts_naming(&id), Vec::<String>::new(), "the running container's mounts on the host");
    assert_eq!(host_mounts_naming(&root), Vec::<String>::new(), "mounts under the test's root");
    let mounts = b.ok(&["exec", "box", "cat", "/proc/self/mountinfo"]);
    let root_line = mounts.lines().find(|l| l.split(' ').nth(4) == Some("/")).expect("a mount at /");
    assert!(root_line.contains(" - overlay ") && root_line.contains(&format!("{id}/upper")), "{root_line}");

    // The engine's lookups see the container as it is now.
    b.ok(&["exec", "box", "sh", "-c", "echo 'app:x:1234:4321::/:/bin/sh' >> /etc/passwd"]);
    assert_eq!(b.ok(&["exec", "--user", "app", "box", "id", "-u"]), "1234\n");
    let host = tempfile::tempdir().unwrap();
    let file = host.path().join("f");
    std::fs::write(&file, "in\n").unwrap();
    b.ok(&["cp", &file.display().to_string(), "box:/f"]);
    assert_eq!(b.ok(&["exec", "box", "cat", "/f"]), "in\n");

    // Stopped: nothing mounted anywhere, and cp still goes both ways; the
    // next start mounts the overlay again, with what cp put there.
    b.ok(&["stop", "-t", "0", "box"]);
    assert_eq!(host_mounts_naming(&root), Vec::<String>::new(), "mounts under the test's root once stopped");
    b.ok(&["cp", "box:/etc/passwd", &host.path().join("passwd").display().to_string()]);
    assert!(std::fs::read_to_string(host.path().join("passwd")).unwrap().contains("app:x:1234:4321"));
    std::fs::write(&file, "while stopped\n").unwrap();
    b.ok(&["cp", &file.display().to_string(), "box:/f"]);
    b.ok(&["start", "box"]);
    assert_eq!(b.ok(&["exec", "box", "cat", "/f"]), "while stopped\n");
    assert_eq!(host_mounts_naming(&root), Vec::<String>::new(), "mounts under the test's root once restarted");
    b.ok(&["rm", "-f", "box"]);
    assert!(leftovers(b.dir.path()).is_empty(), "{:?}", leftovers(b.dir.path()));
}
