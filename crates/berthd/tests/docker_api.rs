//! The Docker Engine API on berthd, driven by real clients: the docker CLI
//! (Debian's 20.10 at /usr/bin/docker and 28.2 at /usr/local/bin/docker),
//! the `berth` CLI on the same root, and the Python SDK (docker-py 7).
//!
//! Each test runs in a network namespace of its own that plays the host
//! (the default bridge network, its veths and rules live and die there),
//! with a registry holding a busybox image (every applet) and its own
//! berthd (root, runroot, sockets, cgroup parent). [`Node`]'s drop removes
//! every container through the `berth` CLI, then berthd stops and its
//! state goes, failed or not.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use berth_testkit::cri::Berthd;
use berth_testkit::registry::Registry;
use berth_testkit::{in_test_host, workspace_bin};

const DOCKER_28: &str = "/usr/local/bin/docker";
const DOCKER_20: &str = "/usr/bin/docker";

/// The newest docker CLI the machine has: 28.x where there is one (not
/// every machine), else Debian's 20.10 (setup.sh installs it).
fn newest() -> &'static str {
    if std::path::Path::new(DOCKER_28).exists() { DOCKER_28 } else { DOCKER_20 }
}

struct Node {
    d: Berthd,
    /// `REGISTRY/test/busybox:1`.
    image: String,
    docker_sock: PathBuf,
    /// DOCKER_CONFIG, and the socket's directory.
    client_dir: tempfile::TempDir,
    _registry: Registry,
}

impl Node {
    fn start() -> Node {
        let (registry, image) = Registry::with_busybox();
        let client_dir = tempfile::Builder::new().prefix("berth-docker-client-").tempdir().unwrap();
        let docker_sock = client_dir.path().join("docker.sock");
        let d = Berthd::start(&format!("[docker]\nenabled = true\nlisten = \"unix://{}\"\n", docker_sock.display()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&docker_sock).is_err() {
            assert!(Instant::now() < deadline, "no Docker API socket; berthd log:\n{}", d.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
        Node { d, image, docker_sock, client_dir, _registry: registry }
    }

    fn docker_cmd(&self, cli: &str) -> Command {
        let mut c = Command::new(cli);
        c.env("DOCKER_HOST", format!("unix://{}", self.docker_sock.display()))
            .env("DOCKER_CONFIG", self.client_dir.path().join("config"))
            .env_remove("DOCKER_API_VERSION")
            .stdin(std::process::Stdio::null());
        c
    }

    fn docker(&self, cli: &str, args: &[&str]) -> Output {
        berth_testkit::output_via_files(self.docker_cmd(cli).args(args))
    }

    /// stdout; panics with stderr and berthd's log when it fails.
    fn docker_ok(&self, cli: &str, args: &[&str]) -> String {
        let out = self.docker(cli, args);
        assert!(
            out.status.success(),
            "{cli} {args:?}: {}\nberthd log (tail):\n{}",
            String::from_utf8_lossy(&out.stderr),
            tail(&self.d.stderr(), 40)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The `berth` CLI on berthd's root and runroot.
    fn berth(&self, args: &[&str]) -> Output {
        let mut c = Command::new(workspace_bin("berth"));
        c.arg("--root").arg(self.d.dir.path().join("root"));
        c.arg("--runroot").arg(self.d.dir.path().join("run"));
        c.arg("--runtime").arg(workspace_bin("berth-runtime"));
        c.env("BERTH_SHIM", workspace_bin("berth-shim")).env("BERTH_CGROUP_PARENT", self.d.cgroup.path());
        c.args(args);
        berth_testkit::output_via_files(&mut c)
    }

    fn berth_ok(&self, args: &[&str]) -> String {
        let out = self.berth(args);
        assert!(out.status.success(), "berth {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let ids = self.berth(&["ps", "-a", "-q", "--no-trunc"]);
        for id in String::from_utf8_lossy(&ids.stdout).lines() {
            let _ = self.berth(&["rm", "-f", id]);
        }
        for m in leftovers(self.d.dir.path()).iter().rev() {
            if let Some(point) = m.split_whitespace().nth(4) {
                let _ = nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

fn leftovers(dir: &Path) -> Vec<String> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mounts.lines().filter(|l| l.contains(&dir.display().to_string())).map(str::to_owned).collect()
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The docker CLI's day: version, pull, images, run, ps, logs, exec (with
/// an exit code), inspect, stop, rm, and dockerd's errors.
fn the_docker_cli_works(n: &Node, cli: &str, tag: &str) {
    let v = n.docker_ok(cli, &["version", "--format", "{{.Server.Version}} {{.Server.APIVersion}} {{.Server.Os}}"]);
    assert_eq!(v.trim(), format!("{} 1.50 linux", env!("CARGO_PKG_VERSION")));

    let pulled = n.docker_ok(cli, &["pull", &n.image]);
    assert!(pulled.contains("Status: ") && pulled.contains(&n.image), "{pulled}");
    let images = n.docker_ok(cli, &["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(images.lines().any(|l| l == n.image), "{images}");

    let hi = n.docker_ok(cli, &["run", "--rm", &n.image, "echo", "hi"]);
    assert_eq!(hi, "hi\n");
    let name = format!("x{tag}");
    let id = n.docker_ok(
        cli,
        &["run", "-d", "--name", &name, &n.image, "sh", "-c", "echo started; echo oops >&2; sleep 100"],
    );
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");
    let ps = n.docker_ok(cli, &["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.lines().any(|l| l.starts_with(&format!("{name} Up "))), "{ps}");

    let deadline = Instant::now() + Duration::from_secs(10);
    let logs = loop {
        let out = n.docker(cli, &["logs", &name]);
        if String::from_utf8_lossy(&out.stderr).contains("oops") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(String::from_utf8_lossy(&logs.stdout), "started\n", "stdout and stderr apart");
    assert_eq!(stderr(&logs), "oops\n");

    let hostname = n.docker_ok(cli, &["exec", &name, "cat", "/etc/hostname"]);
    assert_eq!(hostname, format!("{}\n", &id[..12]));
    let three = n.docker(cli, &["exec", &name, "sh", "-c", "echo before; exit 3"]);
    assert_eq!(three.status.code(), Some(3), "{}", stderr(&three));
    assert_eq!(String::from_utf8_lossy(&three.stdout), "before\n");
    let missing = n.docker(cli, &["exec", &name, "nosuchcommand"]);
    assert_eq!(missing.status.code(), Some(127), "{}", stderr(&missing));
    assert!(stderr(&missing).contains("nosuchcommand"), "{}", stderr(&missing));
    assert_eq!(n.docker_ok(cli, &["inspect", "-f", "{{.State.Status}}", &name]).trim(), "running");

    n.docker_ok(cli, &["stop", "-t", "1", &name]);
    assert_eq!(
        n.docker_ok(cli, &["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", &name]).trim(),
        "exited 137"
    );

    let taken = n.docker(cli, &["run", "-d", "--name", &name, &n.image, "true"]);
    assert_eq!(taken.status.code(), Some(125));
    let e = stderr(&taken);
    assert!(
        e.contains(&format!("Conflict. The container name \"/{name}\" is already in use by container \"{id}\"")),
        "{e}"
    );
    n.docker_ok(cli, &["rm", "-f", &name]);
    let gone = n.docker(cli, &["rm", "nosuch"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(stderr(&gone).contains("No such container: nosuch"), "{}", stderr(&gone));
    let ps = n.docker_ok(cli, &["ps", "-a", "--format", "{{.Names}}"]);
    assert!(!ps.lines().any(|l| l == name), "removed: {ps}");
}

#[test]
fn docker_28_drives_berthd() {
    // The newer CLI is the machine's own, where it has one (setup.sh
    // installs Debian's 20.10 only).
    if !std::path::Path::new(DOCKER_28).exists() {
        eprintln!("skipped: no newer docker CLI at {DOCKER_28}");
        return;
    }
    in_test_host(|| {
        let n = Node::start();
        the_docker_cli_works(&n, DOCKER_28, "28");
    });
}

#[test]
fn docker_20_10_drives_berthd() {
    in_test_host(|| {
        let n = Node::start();
        the_docker_cli_works(&n, DOCKER_20, "20");
    });
}

#[test]
fn too_old_and_too_new_api_versions_get_dockerds_answer() {
    in_test_host(|| {
        let n = Node::start();
        for (v, want) in [
            ("1.40", "client version 1.40 is too old. Minimum supported API version is 1.41"),
            ("1.99", "client version 1.99 is too new. Maximum supported API version is 1.50"),
        ] {
            let out = n.docker_cmd(newest()).env("DOCKER_API_VERSION", v).arg("ps").output().unwrap();
            assert!(!out.status.success());
            assert!(stderr(&out).contains(want), "{v}: {}", stderr(&out));
        }
    });
}

#[test]
fn exec_it_runs_on_a_terminal() {
    in_test_host(|| {
        let n = Node::start();
        n.docker_ok(newest(), &["pull", &n.image]);
        n.docker_ok(newest(), &["run", "-d", "--name", "t", &n.image, "sleep", "100"]);
        let mut c = n.docker_cmd(newest());
        c.args(["exec", "-it", "t", "sh", "-c", "tty; read line; echo got:$line; exit 5"]);
        let (code, out) = berth_testkit::run_on_pty(&mut c, b"hello\r", Duration::from_secs(30));
        assert_eq!(code, Some(5), "{out}");
        assert!(out.contains("/dev/pts/"), "a terminal: {out}");
        assert!(out.contains("got:hello"), "{out}");
    });
}

/// One engine, one store: the `berth` CLI's containers are the API's, and
/// the other way round.
#[test]
fn berth_cli_and_the_docker_api_share_containers() {
    in_test_host(|| {
        let n = Node::start();
        n.berth_ok(&["run", "-d", "--name", "from-cli", "--network", "none", &n.image, "sleep", "100"]);
        let ps = n.docker_ok(newest(), &["ps", "--format", "{{.Names}} {{.State}}"]);
        assert!(ps.lines().any(|l| l == "from-cli running"), "{ps}");

        n.docker_ok(newest(), &["run", "-d", "--name", "from-api", &n.image, "sleep", "100"]);
        let ps = n.berth_ok(&["ps", "--format", "{{.Names}}"]);
        assert!(ps.lines().any(|l| l == "from-api"), "{ps}");
        n.berth_ok(&["stop", "-t", "1", "from-api"]);
        assert_eq!(n.docker_ok(newest(), &["inspect", "-f", "{{.State.Status}}", "from-api"]).trim(), "exited");
        n.docker_ok(newest(), &["rm", "-f", "from-cli"]);
        let all = n.berth_ok(&["ps", "-a", "--format", "{{.Names}}"]);
        assert!(!all.lines().any(|l| l == "from-cli"), "{all}");
    });
}

/// docker-py 7: create/start/wait/logs/remove, and exec_run's exit code.
#[test]
fn the_python_sdk_drives_berthd() {
    in_test_host(|| {
        let n = Node::start();
        n.docker_ok(newest(), &["pull", &n.image]);
        let script = r#"
import sys, docker
c = docker.DockerClient(base_url=sys.argv[1])
img = sys.argv[2]
box = c.containers.create(img, ["sh", "-c", "echo out; echo err >&2; exit 4"], name="py")
box.start()
print("wait", box.wait()["StatusCode"])
print("logs", repr(box.logs(stdout=True, stderr=True).decode()))
print("stderr", repr(box.logs(stdout=False, stderr=True).decode()))
box.remove()
live = c.containers.run(img, ["sleep", "100"], detach=True, name="pylive")
r = live.exec_run(["sh", "-c", "echo in; exit 6"])
print("exec", r.exit_code, repr(r.output.decode()))
print("listed", [x.name for x in c.containers.list()])
live.remove(force=True)
print("left", [x.name for x in c.containers.list(all=True)])
"#;
        let out = Command::new("python3")
            .args(["-c", script, &format!("unix://{}", n.docker_sock.display()), &n.image])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}\n{}\nberthd:\n{}", stderr(&out), tail(&n.d.stderr(), 40));
        assert_eq!(text, "wait 4\nlogs 'out\\nerr\\n'\nstderr 'err\\n'\nexec 6 'in\\n'\nlisted ['pylive']\nleft []\n");
    });
}

/// Terminals through attach: `run -t` prints on a terminal, and a command
/// that does not exist is docker's 127.
#[test]
fn run_attaches_terminals() {
    in_test_host(|| {
        let n = Node::start();
        n.docker_ok(newest(), &["pull", &n.image]);

        let mut c = n.docker_cmd(newest());
        c.args(["run", "--rm", "-it", &n.image, "sh", "-c", "tty; exit 2"]);
        let (code, out) = berth_testkit::run_on_pty(&mut c, b"", Duration::from_secs(30));
        assert_eq!(code, Some(2), "{out}");
        assert!(out.contains("/dev/pts/"), "{out}");

        let missing = n.docker(newest(), &["run", "--rm", &n.image, "nosuchcommand"]);
        assert_eq!(missing.status.code(), Some(127), "{}", stderr(&missing));
        let left = n.docker_ok(newest(), &["ps", "-a", "-q"]);
        assert_eq!(left, "", "--rm containers are gone");
    });
}

/// The rest of the container routes the CLI uses: logs -f/--tail, wait,
/// restart, kill, pause, rename, top, and the image routes: tag,
/// image inspect, history, rmi with docker's conflict.
#[test]
fn the_other_container_and_image_routes() {
    in_test_host(|| {
        let n = Node::start();
        let cli = newest();
        n.docker_ok(cli, &["pull", &n.image]);
        n.docker_ok(
            cli,
            &["run", "-d", "--name", "c", &n.image, "sh", "-c", "for i in 1 2 3; do echo $i; done; sleep 100"],
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while n.docker_ok(cli, &["logs", "c"]) != "1\n2\n3\n" {
            assert!(Instant::now() < deadline, "logs: {}", n.docker_ok(cli, &["logs", "c"]));
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(n.docker_ok(cli, &["logs", "--tail", "1", "c"]), "3\n");
        let top = n.docker_ok(cli, &["top", "c"]);
        assert!(top.contains("sleep 100"), "{top}");
        n.docker_ok(cli, &["pause", "c"]);
        assert_eq!(n.docker_ok(cli, &["inspect", "-f", "{{.State.Status}}", "c"]).trim(), "paused");
        n.docker_ok(cli, &["unpause", "c"]);
        n.docker_ok(cli, &["rename", "c", "d"]);
        // logs -f ends when the container does.
        let mut follow = n.docker_cmd(cli);
        follow.args(["logs", "-f", "d"]).stdout(std::process::Stdio::piped());
        let follower = follow.spawn().unwrap();
        // sh as pid 1 ignores TERM: KILL it.
        n.docker_ok(cli, &["kill", "-s", "KILL", "d"]);
        let out = follower.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n2\n3\n");
        assert_eq!(n.docker_ok(cli, &["wait", "d"]).trim(), "137");
        n.docker_ok(cli, &["restart", "-t", "1", "d"]);
        assert_eq!(n.docker_ok(cli, &["inspect", "-f", "{{.State.Running}}", "d"]).trim(), "true");

        n.docker_ok(cli, &["run", "-d", "--name", "web", "-p", "18080:8080", &n.image, "sleep", "100"]);
        let ports = n.docker_ok(cli, &["ps", "--filter", "name=web", "--format", "{{.Ports}}"]);
        assert_eq!(ports.trim(), "0.0.0.0:18080->8080/tcp");
        let port = n.docker_ok(cli, &["port", "web"]);
        assert!(port.contains("8080/tcp -> 0.0.0.0:18080"), "{port}");

        n.docker_ok(cli, &["tag", &n.image, "mine:v1"]);
        let images = n.docker_ok(cli, &["images", "--format", "{{.Repository}}:{{.Tag}}"]);
        assert!(images.lines().any(|l| l == "mine:v1"), "{images}");
        let id = n.docker_ok(cli, &["image", "inspect", "-f", "{{.Id}}", "mine:v1"]);
        assert!(id.starts_with("sha256:"), "{id}");
        n.docker_ok(cli, &["history", "mine:v1"]);
        n.docker_ok(cli, &["rmi", "mine:v1"]);
        let used = n.docker(cli, &["rmi", &n.image]);
        assert!(!used.status.success());
        assert!(stderr(&used).contains("conflict") || stderr(&used).contains("being used"), "{}", stderr(&used));
        let missing = n.docker(cli, &["image", "inspect", "nosuch:1"]);
        assert!(stderr(&missing).contains("No such image: nosuch:1"), "{}", stderr(&missing));
    });
}

/// A `wait` whose client hangs up stops waiting (no thread left behind
/// per abandoned wait on a long-running container).
#[test]
fn a_wait_whose_client_hangs_up_ends() {
    in_test_host(|| {
        let n = Node::start();
        n.docker_ok(newest(), &["pull", &n.image]);
        n.docker_ok(newest(), &["run", "-d", "--name", "w", &n.image, "sleep", "100"]);
        let mut waiter = n.docker_cmd(newest()).args(["wait", "w"]).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !n.d.stderr().contains("/containers/w/wait") {
            assert!(Instant::now() < deadline, "no wait request");
            std::thread::sleep(Duration::from_millis(20));
        }
        waiter.kill().unwrap();
        waiter.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !n.d.stderr().contains("wait: the client hung up") {
            assert!(Instant::now() < deadline, "the wait goes on: {}", tail(&n.d.stderr(), 20));
            std::thread::sleep(Duration::from_millis(50));
        }
    });
}

/// `run -i` reads what is piped in, and the end of it ends `cat`.
///
/// Known to fail now and then (about 1 run in 6), and `berth run -i` of
/// the `berth` CLI hangs the same way (1 in 15 in a loop): the close of
/// the container's stdin, sent to its shim right after the start, does
/// not always reach the container. Not the API's: see the report.
#[test]
fn run_i_passes_stdin_and_its_end() {
    in_test_host(|| {
        let n = Node::start();
        n.docker_ok(newest(), &["pull", &n.image]);
        let mut c = n.docker_cmd(newest());
        c.args(["run", "--rm", "-i", &n.image, "sh", "-c", "cat; echo done"]).stdin(std::process::Stdio::piped());
        c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(b"line one\nline two\n").unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let log: String = n.d.stderr().lines().filter(|l| l.contains("docker")).collect::<Vec<_>>().join("\n");
                panic!("run -i did not end: its stdin's end did not reach the container\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "line one\nline two\ndone\n");
    });
}

/// `docker volume`: create, list, inspect, data kept across containers,
/// removal refused while a container mounts it, dockerd's words for what
/// does not exist; the `berth` CLI sees the same volumes.
#[test]
fn volumes_round_trip() {
    in_test_host(|| {
        let n = Node::start();
        let cli = newest();
        n.docker_ok(cli, &["pull", &n.image]);
        assert_eq!(n.docker_ok(cli, &["volume", "create", "--label", "team=a", "v1"]).trim(), "v1");
        assert_eq!(n.docker_ok(cli, &["volume", "ls", "-q", "--filter", "label=team=a"]).trim(), "v1");
        assert_eq!(n.docker_ok(cli, &["volume", "ls", "-q", "--filter", "label=team=b"]).trim(), "");
        let mountpoint = n.docker_ok(cli, &["volume", "inspect", "-f", "{{.Mountpoint}}", "v1"]);
        assert!(std::path::Path::new(mountpoint.trim()).is_dir(), "{mountpoint}");
        n.docker_ok(cli, &["run", "--rm", "-v", "v1:/data", &n.image, "sh", "-c", "echo kept > /data/f"]);
        assert_eq!(n.docker_ok(cli, &["run", "--rm", "-v", "v1:/data", &n.image, "cat", "/data/f"]), "kept\n");
        assert!(n.berth_ok(&["volume", "ls", "-q"]).lines().any(|l| l == "v1"), "berth sees it");
        n.docker_ok(cli, &["create", "--name", "user", "-v", "v1:/data", &n.image, "true"]);
        let busy = n.docker(cli, &["volume", "rm", "v1"]);
        let err = String::from_utf8_lossy(&busy.stderr);
        assert!(!busy.status.success() && err.contains("volume is in use"), "{err}");
        n.docker_ok(cli, &["rm", "user"]);
        assert_eq!(n.docker_ok(cli, &["volume", "rm", "v1"]).trim(), "v1");
        let gone = n.docker(cli, &["volume", "inspect", "v1"]);
        let err = String::from_utf8_lossy(&gone.stderr);
        assert!(!gone.status.success() && err.to_lowercase().contains("no such volume"), "{err}");
        let anonymous = n.docker_ok(cli, &["volume", "create"]);
        assert_eq!(anonymous.trim().len(), 64, "{anonymous}");
    });
}

/// `docker network`: create with a subnet, two containers on it reach
/// each other by name, removal refused while one is attached, dockerd's
/// words for what does not exist; the `berth` CLI sees the same network.
#[test]
fn networks_join_containers_by_name() {
    in_test_host(|| {
        let n = Node::start();
        let cli = newest();
        n.docker_ok(cli, &["pull", &n.image]);
        n.docker_ok(cli, &["network", "create", "--subnet", "10.77.42.0/24", "net1"]);
        assert!(n.docker_ok(cli, &["network", "ls", "--format", "{{.Name}}"]).lines().any(|l| l == "net1"));
        let subnet =
            n.docker_ok(cli, &["network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", "net1"]);
        assert_eq!(subnet.trim(), "10.77.42.0/24");
        assert!(n.berth_ok(&["network", "ls", "-q"]).lines().any(|l| l == "net1"), "berth sees it");
        n.docker_ok(cli, &["run", "-d", "--name", "a", "--network", "net1", &n.image, "sleep", "100"]);
        let ping = n.docker(cli, &["run", "--rm", "--network", "net1", &n.image, "ping", "-c", "1", "-W", "5", "a"]);
        assert!(ping.status.success(), "ping a by name: {}", String::from_utf8_lossy(&ping.stdout));
        let busy = n.docker(cli, &["network", "rm", "net1"]);
        let err = String::from_utf8_lossy(&busy.stderr);
        assert!(!busy.status.success() && err.contains("active endpoints"), "{err}");
        n.docker_ok(cli, &["rm", "-f", "a"]);
        n.docker_ok(cli, &["network", "rm", "net1"]);
        let gone = n.docker(cli, &["network", "inspect", "net1"]);
        let err = String::from_utf8_lossy(&gone.stderr);
        let err = err.to_lowercase();
        assert!(!gone.status.success() && (err.contains("not found") || err.contains("no such network")), "{err}");
    });
}

/// `docker stats --no-stream`: the container's name, its processes and
/// the memory it uses, as the engine reads its cgroup.
#[test]
fn stats_report_the_containers_processes_and_memory() {
    in_test_host(|| {
        let n = Node::start();
        let cli = newest();
        n.docker_ok(cli, &["pull", &n.image]);
        n.docker_ok(
            cli,
            &["run", "-d", "--name", "s", "-m", "64m", &n.image, "sh", "-c", "sleep 100 & sleep 100 & wait"],
        );
        let out = n.docker_ok(cli, &["stats", "--no-stream", "--format", "{{.Name}}|{{.PIDs}}|{{.MemUsage}}", "s"]);
        let fields: Vec<&str> = out.trim().split('|').collect();
        assert_eq!(fields.len(), 3, "{out}");
        assert_eq!((fields[0], fields[1]), ("s", "3"), "{out}");
        let (used, limit) = fields[2].split_once(" / ").unwrap_or_else(|| panic!("{out}"));
        assert!(!used.starts_with("0B"), "memory in use: {out}");
        assert_eq!(limit.trim(), "64MiB", "{out}");
        n.docker_ok(cli, &["rm", "-f", "s"]);
    });
}
