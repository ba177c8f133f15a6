//! Published ports on the bridge network, end to end: a `run -d -p`
//! killed in the middle of its CNI ADD is undone by `rm -f` (or `system
//! prune`) and frees its host port; a host port is published once. Each
//! test plays the host in a network namespace of its own, so bridges and
//! iptables rules vanish with it.

use berth_testkit::in_test_host;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{Berth, leftovers};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn http_get(addr: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// `body` from `addr` once it answers with it (the server may still be
/// starting).
fn served(addr: &str, body: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match http_get(addr) {
            Ok(got) if got.contains(body) => return Ok(()),
            other if Instant::now() > deadline => return Err(format!("{other:?}")),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A web server on 8080 in a container named `name`, publishing `port`.
fn web(b: &Berth, name: &str, port: u16, body: &str) {
    let script = format!("echo {body} > /tmp/index.html; exec httpd -f -p 8080 -h /tmp");
    let p = format!("{port}:8080");
    b.ok(&["run", "-d", "--name", name, "-p", &p, &b.image, "sh", "-c", &script]);
}

fn iptables_save() -> String {
    let mut all = String::new();
    for table in ["nat", "filter"] {
        let out = Command::new("iptables-save").args(["-t", table]).output().unwrap();
        all.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    all
}

/// (pid, command name, parent pid) of every process.
fn processes() -> Vec<(i32, String, i32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (head, tail) = stat.rsplit_once(')')?;
        let comm = head.split_once('(')?.1.to_owned();
        let ppid = tail.split_whitespace().nth(1)?.parse().ok()?;
        Some((pid, comm, ppid))
    })
    .collect()
}

/// Processes running a CNI command for container `id` (plugins, and what
/// they run: iptables, host-local), found by the environment they inherit.
fn cni_processes(id: &str) -> Vec<i32> {
    let needle = format!("CNI_CONTAINERID={id}\0");
    processes()
        .into_iter()
        .filter(|(pid, ..)| {
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            env.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
        .map(|(pid, ..)| pid)
        .collect()
}

/// When to SIGKILL the `run` CLI.
#[derive(Debug)]
enum KillAt {
    /// While this plugin (its child) runs.
    Plugin(&'static str),
    /// While portmap runs, once its DNAT rule for the port is in.
    Dnat,
}

/// Starts `run -d -p PORT:8080` as `name` and SIGKILLs it at `at`; false
/// if the run ended first (the container is then removed again).
fn kill_during_add(b: &Berth, name: &str, port: u16, at: &KillAt) -> bool {
    let p = format!("{port}:8080");
    let mut cmd = b.command();
    cmd.args(["run", "-d", "--name", name, "-p", &p, &b.image, "sleep", "300"]);
    let mut cli = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let pid = cli.id() as i32;
    let plugin = match at {
        KillAt::Plugin(p) => *p,
        KillAt::Dnat => "portmap",
    };
    loop {
        if cli.try_wait().unwrap().is_some() {
            b.ok(&["rm", "-f", name]);
            return false;
        }
        let running = processes().iter().any(|(_, comm, ppid)| *ppid == pid && comm == plugin);
        if running && (matches!(at, KillAt::Plugin(_)) || iptables_save().contains(&format!("--dport {port}"))) {
            cli.kill().unwrap();
            cli.wait().unwrap();
            return true;
        }
    }
}

/// Nothing of container `id` is left in the network: no rule naming it or
/// its port, no address lease, no attachment record, no pinned namespace.
fn assert_network_undone(b: &Berth, id: &str, port: u16) {
    let rules = iptables_save();
    let stale: Vec<&str> = rules.lines().filter(|l| l.contains(id) || l.contains(&format!("--dport {port}"))).collect();
    assert!(stale.is_empty(), "iptables rules left for {id}: {stale:#?}");
    let cni = b.dir.path().join("run/cni");
    for dir in [cni.join("ipam/bridge"), cni.join("results")] {
        for f in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(f.path()).unwrap_or_default();
            let name = f.file_name().to_string_lossy().into_owned();
            assert!(!text.contains(id) && !name.contains(id), "{} is left for {id}", f.path().display());
        }
    }
    assert!(!b.dir.path().join("run/containers").join(id).exists(), "the container's run dir (netns pin) is left");
}

#[test]
fn a_run_killed_during_cni_add_is_undone_by_rm_f_or_prune_and_its_port_serves_the_next_container() {
    in_test_host(|| {
        let b = Berth::new();
        b.ok(&["pull", "-q", &b.image]);
        let port = free_port();
        let points = [KillAt::Plugin("bridge"), KillAt::Plugin("portmap"), KillAt::Dnat];
        for (i, at) in points.iter().enumerate() {
            let name = format!("victim{i}");
            let killed = (0..20).any(|_| kill_during_add(&b, &name, port, at));
            assert!(killed, "never caught the CLI at {at:?}");
            let id = b.inspect(&name)["Id"].as_str().unwrap().to_owned();
            // What the killed CLI had started may still be finishing (what
            // a plugin runs, such as iptables, does not die with it).
            let deadline = Instant::now() + Duration::from_secs(20);
            while !cni_processes(&id).is_empty() {
                assert!(Instant::now() < deadline, "CNI processes of {id} still run: {:?}", cni_processes(&id));
                std::thread::sleep(Duration::from_millis(20));
            }
            // The last one goes with `system prune`, which must undo as much.
            if i + 1 == points.len() {
                b.ok(&["system", "prune", "-f"]);
                assert!(!b.ok(&["ps", "-a", "-q", "--no-trunc"]).contains(&id), "prune left {id}");
            } else {
                b.ok(&["rm", "-f", &name]);
            }
            assert_network_undone(&b, &id, port);
        }
        assert!(leftovers(b.dir.path()).is_empty(), "mounts left: {:?}", leftovers(b.dir.path()));
        // The port is free again, and traffic to it reaches the new owner
        // (a stale DNAT rule would send it to a dead address).
        web(&b, "web", port, "the-new-owner");
        served(&format!("127.0.0.1:{port}"), "the-new-owner").unwrap_or_else(|e| panic!("no answer: {e}"));
        b.ok(&["rm", "-f", "web"]);
    });
}

/// `berth` with args; (exit code, stderr).
fn fails(b: &Berth, args: &[&str]) -> (Option<i32>, String) {
    let out = b.cmd(args);
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_published_host_port_is_allocated_once_and_a_refused_run_leaves_nothing() {
    in_test_host(|| {
        let b = Berth::new();
        b.ok(&["pull", "-q", &b.image]);
        let (port, other) = (free_port(), free_port());
        web(&b, "first", port, "first-owner");
        let mounts_before = leftovers(b.dir.path()).len();
        let cases = [
            vec![format!("{port}:80")],
            vec![format!("127.0.0.1:{port}:80")],
            vec![format!("{other}:80"), format!("{other}:81")],
        ];
        for ports in &cases {
            let mut args = vec!["run", "-d", "--name", "second"];
            for p in ports {
                args.extend(["-p", p]);
            }
            args.extend([b.image.as_str(), "sleep", "300"]);
            let (code, err) = fails(&b, &args);
            let (ip, taken) = match ports[0].split(':').collect::<Vec<_>>()[..] {
                [ip, p, _] => (ip, p),
                [p, _] => ("0.0.0.0", p),
                _ => unreachable!(),
            };
            assert_eq!(code, Some(125), "{ports:?}: {err}");
            let want = format!("Bind for {ip}:{taken} failed: port is already allocated");
            assert!(err.contains(&want), "{ports:?}: {err}");
            // Nothing of the refused container: no record, mount, lease,
            // record of ports, or rule.
            let names = b.ok(&["ps", "-a", "--format", "{{.Names}}"]);
            assert_eq!(names, "first\n", "{ports:?}");
            assert_eq!(leftovers(b.dir.path()).len(), mounts_before, "{ports:?}");
            let results = std::fs::read_dir(b.dir.path().join("run/cni/results")).unwrap().count();
            let leases = std::fs::read_dir(b.dir.path().join("run/cni/ipam/bridge"))
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().parse::<std::net::Ipv4Addr>().is_ok())
                .count();
            assert_eq!(leases, 1, "{ports:?}: only first's lease");
            assert_eq!(results, 1, "{ports:?}: only first's record (the port lock lives beside them)");
            assert!(!iptables_save().contains(&format!("--dport {other}")), "{ports:?}");
        }
        // Another protocol on the same port is another port.
        b.ok(&["run", "-d", "--name", "udp", "-p", &format!("{port}:53/udp"), &b.image, "sleep", "300"]);
        served(&format!("127.0.0.1:{port}"), "first-owner").unwrap_or_else(|e| panic!("first lost its port: {e}"));
        // Freed with its owner.
        b.ok(&["rm", "-f", "first"]);
        web(&b, "second", port, "second-owner");
        served(&format!("127.0.0.1:{port}"), "second-owner").unwrap_or_else(|e| panic!("no answer: {e}"));
    });
}

/// A directory whose `iptables` and `ip6tables` always fail: on PATH
/// first, portmap (which runs them) cannot undo its rules.
fn broken_iptables() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    for name in ["iptables", "ip6tables"] {
        let p = dir.path().join(name);
        std::fs::write(&p, "#!/bin/sh\necho \"$0: broken on purpose\" >&2\nexit 1\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

/// An `rm -f` whose CNI DEL fails (portmap cannot reach iptables) fails
/// too, naming the network step, and forgets nothing: the container stays
/// (removing), with its attachment record and DNAT rule, and the next
/// `rm -f` runs the DEL again and leaves nothing. (Before, the first one
/// reported success and dropped the record, the rule stayed for good.)
#[test]
fn an_rm_whose_network_del_fails_keeps_the_container_for_the_next_rm() {
    in_test_host(|| {
        let b = Berth::new();
        b.ok(&["pull", "-q", &b.image]);
        let port = free_port();
        let p = format!("{port}:8080");
        let id = b.ok(&["run", "-d", "-p", &p, &b.image, "sleep", "300"]).trim().to_owned();
        let broken = broken_iptables();
        let path = format!("{}:{}", broken.path().display(), std::env::var("PATH").unwrap_or_default());
        let out = berth_testkit::output_via_files(b.command().args(["rm", "-f", &id]).env("PATH", path));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("detach it from network bridge") && err.contains("portmap"), "{err}");
        assert!(err.contains("run rm -f again"), "{err}");
        assert_eq!(b.inspect(&id)["State"]["Status"], "removing");
        let record = b.dir.path().join(format!("run/cni/results/bridge-{id}-eth0.json"));
        assert!(record.exists(), "the attachment record is kept for the next DEL");
        assert!(iptables_save().contains(&format!("--dport {port}")), "the rule is still there");

        b.ok(&["rm", "-f", &id]);
        assert!(!b.ok(&["ps", "-a", "-q", "--no-trunc"]).contains(&id));
        assert_network_undone(&b, &id, port);
        assert!(leftovers(b.dir.path()).is_empty(), "mounts left: {:?}", leftovers(b.dir.path()));
    });
}

/// A PATH directory whose `iptables` answers everything but `--version`
/// (the probe portmap runs first): portmap then takes IPv4 iptables for
/// unusable, and its DEL reports success having removed nothing (as when
/// that probe is killed).
fn iptables_without_version() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let real = Command::new("sh").args(["-c", "command -v iptables"]).output().unwrap();
    let real = String::from_utf8_lossy(&real.stdout).trim().to_owned();
    let p = dir.path().join("iptables");
    let script = format!("#!/bin/sh\n[ \"$1\" = --version ] && exit 1\nexec {real} \"$@\"\n");
    std::fs::write(&p, script).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// portmap's DEL can report success and leave the port forwards (it found
/// IPv4 iptables unusable, e.g. its probe was killed): `rm -f` looks at
/// the nat table after the DEL and does not take that for done; the
/// container stays (removing) with its attachment, and the next `rm -f`
/// removes the rules. (Before, the first `rm -f` succeeded and the DNAT
/// rules stayed for good: found by the crash harness.)
#[test]
fn an_rm_whose_portmap_del_leaves_its_rules_does_not_forget_them() {
    in_test_host(|| {
        let b = Berth::new();
        b.ok(&["pull", "-q", &b.image]);
        let port = free_port();
        let p = format!("{port}:8080");
        let id = b.ok(&["run", "-d", "-p", &p, &b.image, "sleep", "300"]).trim().to_owned();
        let fake = iptables_without_version();
        let path = format!("{}:{}", fake.path().display(), std::env::var("PATH").unwrap_or_default());
        let out = berth_testkit::output_via_files(b.command().args(["rm", "-f", &id]).env("PATH", path));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("port forwards are still in the nat table"), "{err}");
        assert_eq!(b.inspect(&id)["State"]["Status"], "removing");
        assert!(iptables_save().contains(&format!("--dport {port}")), "the rule is still there");

        b.ok(&["rm", "-f", &id]);
        assert_network_undone(&b, &id, port);
    });
}
