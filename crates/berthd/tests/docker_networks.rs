//! `docker network connect/disconnect` and network aliases against
//! berthd: a container reached by name and by alias on a user network,
//! connected (running) to a second network and reached there, then
//! disconnected; the `berth` CLI's connect on the same engine; `rm` takes
//! a connection with it, so the network can go.

#[path = "common/docker_node.rs"]
mod dockerkit;

use berth_testkit::in_test_host;
use dockerkit::{Node, newest};

/// A raw POST of `body` to the Docker API; the whole response.
fn post(n: &Node, path: &str, body: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::os::unix::net::UnixStream::connect(&n.docker_sock).unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn ping(n: &Node, from: &str, to: &str) -> bool {
    n.docker(newest(), &["exec", from, "ping", "-c", "1", "-W", "3", to]).status.success()
}

#[test]
fn connect_and_disconnect_a_running_container_with_aliases() {
    in_test_host(|| {
        let n = Node::start();
        let cli = newest();
        n.docker_ok(cli, &["pull", &n.image]);
        let since = dockerkit::now();
        n.docker_ok(cli, &["network", "create", "front"]);
        n.docker_ok(cli, &["network", "create", "back"]);
        let run = |name: &str, net: &str, alias: &str| {
            n.docker_ok(
                cli,
                &["run", "-d", "--name", name, "--network", net, "--network-alias", alias, &n.image, "sleep", "300"],
            );
        };
        run("a", "front", "web");
        run("peer", "front", "peer-alias");
        run("b", "back", "db");
        assert!(ping(&n, "peer", "a"), "by name on a user network");
        assert!(ping(&n, "peer", "web"), "by alias");
        assert!(ping(&n, "a", "peer-alias"), "the other way, by alias");
        assert!(!ping(&n, "b", "a"), "not on back yet");

        n.docker_ok(cli, &["network", "connect", "--alias", "api", "back", "a"]);
        assert!(ping(&n, "b", "a"), "reachable on back once connected");
        assert!(ping(&n, "b", "api"), "by its alias there");
        assert!(ping(&n, "a", "db"), "and it sees back's containers");
        let nets =
            n.docker_ok(cli, &["inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", "a"]);
        assert_eq!(nets.trim(), "back front");
        let members = n.docker_ok(cli, &["network", "inspect", "-f", "{{range .Containers}}{{.Name}} {{end}}", "back"]);
        let mut members: Vec<&str> = members.split_whitespace().collect();
        members.sort();
        assert_eq!(members, ["a", "b"]);
        // The docker CLI splits a flag at line breaks: straight to the API.
        let hostile = post(
            &n,
            "/networks/front/connect",
            r#"{"Container":"b","EndpointConfig":{"Aliases":["x\n10.9.9.9 evil"]}}"#,
        );
        assert!(hostile.starts_with("HTTP/1.1 400") && hostile.contains("invalid network alias"), "{hostile}");
        let twice = n.docker(cli, &["network", "connect", "back", "a"]);
        assert!(
            !twice.status.success() && dockerkit::stderr(&twice).contains("already exists"),
            "{}",
            dockerkit::stderr(&twice)
        );

        n.docker_ok(cli, &["network", "disconnect", "back", "a"]);
        assert!(!ping(&n, "b", "a"), "disconnected: gone from back's names");
        assert!(!ping(&n, "a", "db"), "and back's names from its own");
        let eth1 = n.docker(cli, &["exec", "a", "cat", "/sys/class/net/eth1/address"]);
        assert!(!eth1.status.success(), "its interface on back is gone");
        assert!(ping(&n, "peer", "a"), "still on front");
        let a_id = n.docker_ok(cli, &["inspect", "-f", "{{.Id}}", "a"]);
        let events = n.docker_ok(
            cli,
            &[
                "events",
                "--since",
                &since,
                "--until",
                &dockerkit::now(),
                "--filter",
                "network=back",
                "--filter",
                "event=connect",
                "--filter",
                "event=disconnect",
                "--format",
                "{{.Action}} {{.Actor.Attributes.container}}",
            ],
        );
        let b_id = n.docker_ok(cli, &["inspect", "-f", "{{.Id}}", "b"]);
        assert_eq!(
            events,
            format!("connect {}\nconnect {}\ndisconnect {}\n", b_id.trim(), a_id.trim(), a_id.trim()),
            "the network's events name the container"
        );

        // The berth CLI on the same engine; rm then takes the connection.
        n.berth_ok(&["network", "connect", "back", "a"]);
        assert!(ping(&n, "b", "a"));

        // A created container, connected before it starts.
        n.docker_ok(cli, &["create", "--name", "late", "--network", "front", &n.image, "sleep", "300"]);
        n.docker_ok(cli, &["network", "connect", "--alias", "late-alias", "back", "late"]);
        n.docker_ok(cli, &["start", "late"]);
        assert!(ping(&n, "b", "late-alias"), "a created container connected, then started");

        // As docker: a container made with `--network none` stays so.
        n.docker_ok(cli, &["run", "-d", "--name", "alone", "--network", "none", &n.image, "sleep", "300"]);
        let lo = n.docker_ok(cli, &["exec", "alone", "sh", "-c", "ls /sys/class/net; cat /sys/class/net/lo/flags"]);
        assert_eq!(lo, "lo\n0x9\n", "a namespace of its own, lo up");
        let refused = n.docker(cli, &["network", "connect", "back", "alone"]);
        assert!(
            !refused.status.success() && dockerkit::stderr(&refused).contains("private (none) mode"),
            "{}",
            dockerkit::stderr(&refused)
        );

        // prune: only networks no container uses.
        n.docker_ok(cli, &["network", "create", "spare"]);
        let pruned = n.docker_ok(cli, &["network", "prune", "-f"]);
        assert!(pruned.contains("spare") && !pruned.contains("front"), "{pruned}");
        n.docker_ok(cli, &["rm", "-f", "a", "b", "peer", "late", "alone"]);
        n.docker_ok(cli, &["network", "rm", "back", "front"]);
        let left = n.berth_ok(&["network", "ls", "-q"]);
        assert_eq!(left.trim(), "bridge");
    });
}
