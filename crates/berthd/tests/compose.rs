//! docker-compose 1.29 (PyPI, in its own venv: setup.sh) against berthd:
//! a two-service project with a user network, a named volume, a published
//! port and depends_on; `up -d`, `ps`, `logs`, `exec`, the port reached
//! from the host, and `down -v` leaving no container, network or volume
//! (as the `berth` CLI sees the engine).

#[path = "common/docker_node.rs"]
mod dockerkit;

use std::path::Path;
use std::process::{Command, Output};

use berth_testkit::eventually;
use berth_testkit::in_test_host;
use dockerkit::{Node, tail};

/// Where setup.sh installs docker-compose 1.29 (BERTH_COMPOSE overrides).
const COMPOSE: &str = "/opt/berth-compose/bin/docker-compose";

fn compose_bin() -> Option<String> {
    let c = std::env::var("BERTH_COMPOSE").unwrap_or_else(|_| COMPOSE.to_owned());
    Path::new(&c).exists().then_some(c)
}

fn compose(n: &Node, bin: &str, dir: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(bin);
    c.current_dir(dir)
        .env("DOCKER_HOST", n.docker_host())
        .env("DOCKER_CONFIG", n.client_dir.path().join("config"))
        .env("COMPOSE_INTERACTIVE_NO_CLI", "1")
        .args(["--ansi", "never", "-p", "proj"])
        .args(args)
        .stdin(std::process::Stdio::null());
    berth_testkit::output_via_files(&mut c)
}

fn compose_ok(n: &Node, bin: &str, dir: &Path, args: &[&str]) -> String {
    let out = compose(n, bin, dir, args);
    assert!(
        out.status.success(),
        "docker-compose {args:?}: {}\n{}\nberthd log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        tail(&n.d.stderr(), 60)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A free port on the host (the test's network namespace).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn compose_up_ps_logs_exec_and_down_leave_nothing() {
    let Some(bin) = compose_bin() else {
        eprintln!("skipped: no docker-compose at {COMPOSE} (scripts/setup.sh installs it)");
        return;
    };
    in_test_host(move || {
        let n = Node::start();
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let file = format!(
            r#"version: "3.7"
services:
  web:
    image: {image}
    command: ["sh", "-c", "echo hello-from-web > /www/index.html && echo web-ready && httpd -f -p 80 -h /www"]
    ports:
      - "{port}:80"
    volumes:
      - www:/www
    networks: [appnet]
  client:
    image: {image}
    depends_on: [web]
    command: ["sh", "-c", "until wget -q -O /tmp/got http://web:80/; do sleep 0.2; done; cat /tmp/got; sleep 300"]
    networks: [appnet]
volumes:
  www: {{}}
networks:
  appnet: {{}}
"#,
            image = n.image
        );
        std::fs::write(dir.path().join("docker-compose.yml"), file).unwrap();
        compose_ok(&n, &bin, dir.path(), &["up", "-d"]);

        let ps = compose_ok(&n, &bin, dir.path(), &["ps"]);
        for c in ["proj_web_1", "proj_client_1"] {
            assert!(ps.lines().any(|l| l.starts_with(c) && l.contains("Up")), "{c} up: {ps}");
        }
        let logs = eventually("the client's fetch from http://web:80/", || {
            let l = compose_ok(&n, &bin, dir.path(), &["logs", "--no-color", "client"]);
            l.contains("hello-from-web").then_some(l)
        });
        assert!(logs.contains("client_1"), "{logs}");
        let web_logs = compose_ok(&n, &bin, dir.path(), &["logs", "--no-color", "web"]);
        assert!(web_logs.contains("web-ready"), "{web_logs}");
        let exec = compose_ok(&n, &bin, dir.path(), &["exec", "-T", "web", "cat", "/www/index.html"]);
        assert_eq!(exec.trim(), "hello-from-web");
        // compose disconnects and connects each container again: its own
        // name still resolves to its address on the network.
        let own = compose_ok(
            &n,
            &bin,
            dir.path(),
            &["exec", "-T", "web", "sh", "-c", "grep -w \"$(hostname)\" /etc/hosts | cut -f1; ip -4 -o addr show eth0"],
        );
        let mut lines = own.lines();
        let (listed, actual) = (lines.next().unwrap_or_default(), lines.next().unwrap_or_default());
        assert!(own.lines().count() == 2 && actual.contains(&format!(" {listed}/")), "{own}");

        let mut s = match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => s,
            Err(e) => {
                let nat = Command::new("iptables").args(["-t", "nat", "-S"]).output().unwrap();
                let insp = n.docker(dockerkit::newest(), &["inspect", "proj_web_1"]);
                panic!(
                    "the published port: {e}\n{}\n{}",
                    String::from_utf8_lossy(&nat.stdout),
                    String::from_utf8_lossy(&insp.stdout)
                );
            }
        };
        use std::io::{Read as _, Write as _};
        s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        assert!(body.contains("hello-from-web"), "{body}");

        compose_ok(&n, &bin, dir.path(), &["down", "-v"]);
        assert_eq!(n.berth_ok(&["ps", "-a", "-q"]).trim(), "", "no container left");
        assert_eq!(n.berth_ok(&["network", "ls", "-q"]).trim(), "bridge", "no network left");
        assert_eq!(n.berth_ok(&["volume", "ls", "-q"]).trim(), "", "no volume left");
    });
}
