//! `docker events` against berthd: one event log for every front end (the
//! `berth` CLI's containers are in it), the shim's `die` with the exit
//! code when nothing waited, docker's order of a stop's events, and
//! `--since`/`--until` replays.

#[path = "common/docker_node.rs"]
mod dockerkit;

use berth_testkit::eventually;
use berth_testkit::in_test_host;
use dockerkit::{Killed, Node, newest, now};
use serde_json::Value;

/// A container started by the `berth` CLI is seen by a following `docker
/// events --filter event=start`, with docker's message shape.
#[test]
fn docker_events_sees_a_start_by_the_berth_cli() {
    in_test_host(|| {
        let n = Node::start();
        n.berth_ok(&["pull", &n.image]);
        let out = tempfile::NamedTempFile::new().unwrap();
        let mut c = n.docker_cmd(newest());
        // --since: the subscription's own start races the run below.
        c.args(["events", "--since", &now(), "--filter", "event=start", "--format", "{{json .}}"]);
        c.stdout(out.reopen().unwrap()).stderr(std::process::Stdio::null());
        let _events = Killed(c.spawn().unwrap());
        let id = n.berth_ok(&["run", "-d", "--name", "fromcli", "--network", "none", &n.image, "sleep", "100"]);
        let line = eventually("docker events printing the start", || {
            let text = std::fs::read_to_string(out.path()).unwrap();
            text.lines().next().map(str::to_owned)
        });
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            (v["Type"].as_str(), v["Action"].as_str(), v["status"].as_str()),
            (Some("container"), Some("start"), Some("start")),
            "{v}"
        );
        assert_eq!(v["Actor"]["ID"].as_str(), Some(id.trim()), "{v}");
        assert_eq!(v["Actor"]["Attributes"]["name"], "fromcli", "{v}");
        assert_eq!(v["Actor"]["Attributes"]["image"].as_str(), Some(n.image.as_str()), "{v}");
        assert_eq!((v["from"].as_str(), v["scope"].as_str()), (Some(n.image.as_str()), Some("local")));
        assert!(v["timeNano"].as_i64().is_some_and(|t| t / 1_000_000_000 == v["time"].as_i64().unwrap()), "{v}");
    });
}

/// The actions of `container`'s events since `since`, replayed.
fn actions(n: &Node, since: &str, container: &str) -> Vec<String> {
    let f = format!("container={container}");
    let out = n.docker_ok(
        newest(),
        &[
            "events",
            "--since",
            since,
            "--until",
            &now(),
            "--filter",
            &f,
            "--format",
            "{{.Action}}{{with .Actor.Attributes.exitCode}}={{.}}{{end}}",
        ],
    );
    out.lines().map(str::to_owned).collect()
}

/// `die` comes from the container's shim: written with the exit code
/// though the container was started detached and nothing waited, and
/// once; a stop's events come in docker's order.
#[test]
fn die_carries_the_exit_code_when_nothing_waited() {
    in_test_host(|| {
        let n = Node::start();
        let cli = newest();
        n.docker_ok(cli, &["pull", &n.image]);
        let since = now();
        n.docker_ok(cli, &["run", "-d", "--name", "three", "--network", "none", &n.image, "sh", "-c", "exit 3"]);
        let seen = eventually("the die event", || {
            let a = actions(&n, &since, "three");
            a.iter().any(|a| a.starts_with("die")).then_some(a)
        });
        assert_eq!(seen, ["create", "start", "die=3"]);
        n.docker_ok(cli, &["wait", "three"]);
        n.docker_ok(cli, &["inspect", "three"]);
        assert_eq!(actions(&n, &since, "three"), ["create", "start", "die=3"], "die once");

        // busybox's sleep as pid 1 ignores SIGTERM: SIGKILL after 1 s.
        n.docker_ok(cli, &["run", "-d", "--name", "sleeper", "--network", "none", &n.image, "sleep", "100"]);
        n.docker_ok(cli, &["stop", "-t", "1", "sleeper"]);
        n.docker_ok(cli, &["rm", "sleeper"]);
        assert_eq!(
            actions(&n, &since, "sleeper"),
            ["create", "start", "kill", "kill", "die=137", "stop", "destroy"],
            "docker's order"
        );
        let kills = replay(&n, cli, &since, "event=kill", "{{.Actor.Attributes.signal}}");
        assert_eq!(kills, "15\n9\n");
    });
}

/// `--since`/`--until` replay a window of the log, in docker's line
/// format, for networks and volumes as for containers.
#[test]
fn since_and_until_replay_a_window() {
    in_test_host(|| {
        let n = Node::start();
        let cli = newest();
        let t0 = now();
        n.docker_ok(cli, &["network", "create", "--label", "k=v", "evnet"]);
        let t1 = now();
        n.docker_ok(cli, &["volume", "create", "evvol"]);
        let t2 = now();
        let window = |since: &str, until: &str| {
            let out = n.docker_ok(cli, &["events", "--since", since, "--until", until]);
            // Debian's 20.10 CLI (API 1.41) reads the same stream.
            let old = n.docker_ok(dockerkit::DOCKER_20, &["events", "--since", since, "--until", until]);
            assert_eq!(out, old, "docker 20.10 and the newest CLI print the same");
            out.lines()
                .map(|l| l.split_once(' ').map(|(_, rest)| rest.to_owned()).unwrap_or_default())
                .collect::<Vec<_>>()
        };
        assert_eq!(window(&t0, &t1), ["network create evnet (name=evnet, type=bridge)"]);
        assert_eq!(window(&t1, &t2), ["volume create evvol (driver=local, name=evvol)"]);
        let labels = n.docker_ok(cli, &["network", "inspect", "-f", "{{.Labels.k}}", "evnet"]);
        assert_eq!(labels.trim(), "v", "labels are kept");
        n.docker_ok(cli, &["network", "rm", "evnet"]);
        n.docker_ok(cli, &["volume", "rm", "evvol"]);
        let gone = n.docker_ok(
            cli,
            &["events", "--since", &t2, "--until", &now(), "--format", "{{.Type}} {{.Action}} {{.Actor.ID}}"],
        );
        assert_eq!(gone, "network destroy evnet\nvolume destroy evvol\n");
        let bad = n.docker(cli, &["events", "--since", &t0, "--until", &now(), "--filter", "colour=red"]);
        assert!(!bad.status.success() && dockerkit::stderr(&bad).contains("colour"), "{}", dockerkit::stderr(&bad));
    });
}

/// `docker exec` (berthd) and `berth exec` (the CLI) leave docker's exec
/// events: exec_create and exec_start with the command, exec_die with the
/// exit code, one exec ID for the three.
#[test]
fn execs_leave_their_events_with_the_exit_code() {
    in_test_host(|| {
        let n = Node::start();
        let cli = newest();
        n.docker_ok(cli, &["pull", &n.image]);
        n.docker_ok(cli, &["run", "-d", "--name", "ex", "--network", "none", &n.image, "sleep", "100"]);
        let since = now();
        let five = n.docker(cli, &["exec", "ex", "sh", "-c", "exit 5"]);
        assert_eq!(five.status.code(), Some(5));
        let six = n.berth(&["exec", "ex", "sh", "-c", "exit 6"]);
        assert_eq!(six.status.code(), Some(6));
        let fmt = "{{.Action}}|{{.Actor.Attributes.execID}}|{{with .Actor.Attributes.exitCode}}{{.}}{{end}}";
        let lines = eventually("both exec_die events", || {
            let out = n.docker_ok(
                cli,
                &["events", "--since", &since, "--until", &now(), "--filter", "container=ex", "--format", fmt],
            );
            (out.matches("exec_die").count() == 2).then_some(out)
        });
        let rows: Vec<Vec<&str>> = lines.lines().map(|l| l.split('|').collect()).collect();
        let actions: Vec<&str> = rows.iter().map(|r| r[0]).collect();
        assert_eq!(
            actions,
            [
                "exec_create: sh -c exit 5",
                "exec_start: sh -c exit 5",
                "exec_die",
                "exec_create: sh -c exit 6",
                "exec_start: sh -c exit 6",
                "exec_die"
            ],
            "{lines}"
        );
        assert_eq!((rows[2][2], rows[5][2]), ("5", "6"), "{lines}");
        assert!(
            rows[..3].iter().all(|r| r[1] == rows[0][1]) && rows[3..].iter().all(|r| r[1] == rows[3][1]),
            "{lines}"
        );
        assert_ne!(rows[0][1], rows[3][1]);
        let started = replay(&n, cli, &since, "event=exec_start", "{{.Action}}");
        assert_eq!(started.lines().count(), 2, "event=exec_start matches 'exec_start: CMD': {started}");
    });
}

/// The events since `since` until now that match `filter`, one `format`
/// line each.
fn replay(n: &Node, cli: &str, since: &str, filter: &str, format: &str) -> String {
    n.docker_ok(cli, &["events", "--since", since, "--until", &now(), "--filter", filter, "--format", format])
}

#[test]
fn docker_run_with_runtime_uses_that_handler_for_the_containers_whole_life() {
    in_test_host(|| {
        // A second runtime handler in berthd.toml, as dockerd's "runtimes".
        let n = Node::start_with("[runtimes.crun]\npath = \"/usr/bin/crun\"");
        let cli = newest();
        n.docker_ok(cli, &["pull", &n.image]);
        let runtimes = n.docker_ok(cli, &["info", "--format", "{{json .Runtimes}}"]);
        assert!(runtimes.contains("\"crun\""), "docker info lists the handler: {runtimes}");
        let id = n.docker_ok(cli, &["run", "-d", "--runtime", "crun", "--name", "by-crun", &n.image, "sleep", "300"]);
        let id = id.trim();
        // crun made it: crun's own state for it, under the engine's runtime root.
        let state = std::process::Command::new("/usr/bin/crun")
            .arg("--root")
            .arg(n.d.dir.path().join("run/runtime"))
            .args(["state", id])
            .output()
            .unwrap();
        let state: Value = serde_json::from_slice(&state.stdout).unwrap_or_default();
        assert_eq!(state["status"], "running", "crun knows it: {state}");
        // And it stays crun's: pause and unpause go through crun.
        n.docker_ok(cli, &["pause", "by-crun"]);
        assert_eq!(n.docker_ok(cli, &["inspect", "-f", "{{.State.Status}}", "by-crun"]).trim(), "paused");
        n.docker_ok(cli, &["unpause", "by-crun"]);
        assert_eq!(n.docker_ok(cli, &["inspect", "-f", "{{.State.Status}}", "by-crun"]).trim(), "running");
        n.docker_ok(cli, &["rm", "-f", "by-crun"]);
        let unknown = n.docker(cli, &["run", "--rm", "--runtime", "nope", &n.image, "true"]);
        assert!(
            !unknown.status.success() && dockerkit::stderr(&unknown).contains("unknown or invalid runtime name: nope"),
            "{}",
            dockerkit::stderr(&unknown)
        );
    });
}
