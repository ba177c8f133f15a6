//! `berth events`: the engine's event log, written by every berth process
//! (this CLI, berthd, the shims), printed as `docker events` prints it.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_testkit::eventually;
use common::Berth;

/// Now as `--since`/`--until` take it (Unix seconds with nanoseconds).
fn now() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// The events of `filters` between `since` and now, as `berth events`
/// replays them (`--until` now: no following).
fn replay(b: &Berth, since: &str, filters: &[&str]) -> Vec<String> {
    let until = now();
    let mut args = vec!["events", "--since", since, "--until", &until];
    for f in filters {
        args.extend(["--filter", f]);
    }
    b.ok(&args).lines().map(str::to_owned).collect()
}

/// create, start and the shim's die (with the exit code, though nothing
/// waited for the detached container), in docker's line format, once each.
#[test]
fn a_detached_containers_life_is_in_the_log_in_dockers_format() {
    let b = Berth::new();
    let since = now();
    b.ok(&["pull", &b.image]);
    b.ok(&["tag", &b.image, "evtag:1"]);
    let images = replay(&b, &since, &["type=image"]);
    let actions: Vec<String> =
        images.iter().map(|l| l.split(' ').skip(2).take(2).collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(actions.len(), 2, "{images:#?}");
    assert_eq!(actions[0], format!("pull {}", b.image), "{images:#?}");
    assert!(actions[1].starts_with("tag sha256:") && images[1].contains("name=evtag:1"), "{images:#?}");
    let id =
        b.ok(&["run", "-d", "--name", "ev1", "--network", "none", "--label", "team=x", &b.image, "sh", "-c", "exit 7"]);
    let id = id.trim().to_owned();
    let lines = eventually("the die event", || {
        let l = replay(&b, &since, &["container=ev1"]);
        l.iter().any(|l| l.contains(" container die ")).then_some(l)
    });
    let actions: Vec<&str> = lines.iter().map(|l| l.split(' ').nth(2).unwrap_or_default()).collect();
    assert_eq!(actions, ["create", "start", "die"], "{lines:#?}");
    let die = &lines[2];
    let (time, rest) = die.split_once(' ').unwrap();
    assert!(time.ends_with('Z') && time.len() >= 20 && time.as_bytes()[10] == b'T', "RFC 3339 in UTC: {die}");
    assert_eq!(
        rest,
        format!("container die {id} (exitCode=7, image={}, name=ev1, team=x)", b.image),
        "docker's line: attributes sorted, labels among them"
    );
    // Looked at again (wait and inspect refresh the record): still once.
    b.ok(&["wait", "ev1"]);
    b.ok(&["inspect", "ev1"]);
    let dies = replay(&b, &since, &["event=die"]);
    assert_eq!(dies.len(), 1, "die is written once: {dies:#?}");
    let volume = b.ok(&["run", "-d", "--name", "ev2", "--network", "none", "-v", "evvol:/data", &b.image, "true"]);
    let mounted = eventually("the volume's mount event", || {
        let l = replay(&b, &since, &["type=volume", "event=mount"]);
        (!l.is_empty()).then_some(l)
    });
    assert!(mounted[0].contains(&format!("volume mount evvol (container={}", volume.trim())), "{mounted:#?}");
    b.ok(&["rm", "ev1"]);
    let destroyed = replay(&b, &since, &["event=destroy", "type=container"]);
    assert_eq!(destroyed.len(), 1, "{destroyed:#?}");
    let none = replay(&b, &since, &["type=network"]);
    assert!(none.is_empty(), "filters keep only what they name: {none:#?}");
}

/// A writer killed mid-line leaves a torn line: readers skip it and read
/// on (here the torn line is written by hand, as a full disk leaves one),
/// and `--since`/`--until` pick a window of the replay.
#[test]
fn a_torn_line_breaks_no_reader_and_since_until_pick_a_window() {
    let b = Berth::new();
    let t0 = now();
    b.ok(&["volume", "create", "v1"]);
    let t1 = now();
    let log = b.dir.path().join("run/events/events.log");
    {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(b"{\"time\":1,\"type\":\"volu").unwrap();
    }
    b.ok(&["volume", "create", "v2"]);
    let t2 = now();
    let vols = |since: &str, until: &str| {
        let out = b.ok(&[
            "events",
            "--since",
            since,
            "--until",
            until,
            "--filter",
            "type=volume",
            "--format",
            "{{.Actor.ID}} {{.Action}}",
        ]);
        out.lines().map(str::to_owned).collect::<Vec<_>>()
    };
    assert_eq!(vols(&t0, &t1), ["v1 create"]);
    assert_eq!(vols(&t1, &t2), ["v2 create"], "the event after the torn line is read");
    assert_eq!(vols(&t0, &t2), ["v1 create", "v2 create"]);
    b.ok(&["volume", "rm", "v1", "v2"]);
    assert_eq!(vols(&t2, &now()), ["v1 destroy", "v2 destroy"]);
}

/// Without `--until`, `berth events` follows the log: an event written by
/// another berth process after it started is printed.
#[test]
fn events_follows_what_other_processes_write() {
    let b = Berth::new();
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut c = b.command();
    c.args(["events", "--since", &now(), "--filter", "type=network", "--format", "{{.Action}} {{.Actor.ID}}"]);
    c.stdout(out.reopen().unwrap()).stderr(std::process::Stdio::null());
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let guard = Kill(c.spawn().unwrap());
    b.ok(&["network", "create", "evnet"]);
    b.ok(&["network", "rm", "evnet"]);
    let seen = eventually("the followed events", || {
        let text = std::fs::read_to_string(out.path()).unwrap();
        text.contains("destroy evnet").then_some(text)
    });
    assert_eq!(seen, "create evnet\ndestroy evnet\n");
    drop(guard);
}

/// An event log that cannot be written (its directory is a file here)
/// fails no operation: containers run, exit and are removed, volumes are
/// made, and the exit is recorded whoever could not log it.
#[test]
fn an_unwritable_event_log_fails_nothing() {
    let b = Berth::new();
    std::fs::create_dir_all(b.dir.path().join("run")).unwrap();
    std::fs::write(b.dir.path().join("run/events"), "not a directory").unwrap();
    b.ok(&["pull", &b.image]);
    b.ok(&["volume", "create", "quiet"]);
    b.ok(&["run", "-d", "--name", "q", "--network", "none", &b.image, "sh", "-c", "exit 4"]);
    assert_eq!(b.ok(&["wait", "q"]).trim(), "4");
    b.ok(&["rm", "q"]);
    b.ok(&["volume", "rm", "quiet"]);
    let e = b.cmd(&["events", "--since", "0", "--until", &now()]);
    assert!(!e.status.success(), "events says why it cannot read the log");
    assert!(String::from_utf8_lossy(&e.stderr).contains("event log"), "{}", String::from_utf8_lossy(&e.stderr));
}

/// Writers SIGKILLed at any point (here: `volume create`s killed one to
/// thirty milliseconds in, while others write) leave whole lines only:
/// each line is one write(2), so a reader never meets half an event.
#[test]
fn killed_writers_leave_only_whole_lines() {
    let b = Berth::new();
    let since = now();
    // Three at a time, each killed 0 to 7 ms after it started.
    std::thread::scope(|s| {
        for t in 0..3 {
            let b = &b;
            s.spawn(move || {
                for i in 0..10 {
                    let mut c = b.command();
                    c.args(["volume", "create", &format!("k{t}-{i}")]);
                    c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
                    let mut child = c.spawn().unwrap();
                    std::thread::sleep(Duration::from_millis((i + t) as u64 % 8));
                    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                    let _ = child.wait();
                }
            });
        }
    });
    let text = std::fs::read_to_string(b.dir.path().join("run/events/events.log")).unwrap_or_default();
    assert!(text.is_empty() || text.ends_with('\n'), "the log ends with a whole line");
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("a torn line {l:?}: {e}"));
        assert_eq!(v["type"], "volume", "{l}");
    }
    eprintln!("{} whole lines written by the killed writers", text.lines().count());
    let replayed = replay(&b, &since, &["type=volume"]);
    assert_eq!(replayed.len(), text.lines().count(), "every line is read back");
    let made = b.ok(&["volume", "ls", "-q"]);
    for v in made.lines() {
        let _ = b.cmd(&["volume", "rm", v]);
    }
}

/// A container whose shim was SIGKILLed still gets its die (with the
/// engine's "status unknown" code), written once by whichever berth
/// process first records the lost exit.
#[test]
fn a_container_whose_shim_was_killed_still_dies_once() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let since = now();
    b.ok(&["run", "-d", "--name", "orphan", "--network", "none", &b.image, "sleep", "100"]);
    let init = b.inspect("orphan")["State"]["Pid"].as_i64().unwrap() as i32;
    let stat = std::fs::read_to_string(format!("/proc/{init}/stat")).unwrap();
    // The shim is the init's parent (its subreaper).
    let shim: i32 = stat.rsplit(')').next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    kill(Pid::from_raw(shim), Signal::SIGKILL).unwrap();
    eventually("the shim to go", || {
        (!std::path::Path::new(&format!("/proc/{shim}/stat")).exists()
            || std::fs::read_to_string(format!("/proc/{shim}/stat")).is_ok_and(|s| s.contains(") Z ")))
        .then_some(())
    });
    kill(Pid::from_raw(init), Signal::SIGKILL).unwrap();
    eventually("the container to be seen exited", || {
        (b.inspect("orphan")["State"]["Status"] == "exited").then_some(())
    });
    b.ok(&["ps", "-a"]);
    b.ok(&["inspect", "orphan"]);
    let dies = replay(&b, &since, &["event=die"]);
    assert_eq!(dies.len(), 1, "{dies:#?}");
    assert!(dies[0].contains("(exitCode=137,"), "{dies:#?}");
}

/// A container renamed while it runs dies under its new name (its shim
/// was started with the old one): `--filter container=NEW` finds it.
#[test]
fn a_renamed_container_dies_under_its_new_name() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let since = now();
    b.ok(&["run", "-d", "--name", "before", "--network", "none", &b.image, "sleep", "100"]);
    b.ok(&["rename", "before", "after"]);
    b.ok(&["kill", "after"]);
    let dies = eventually("the die event", || {
        let d = replay(&b, &since, &["event=die"]);
        (!d.is_empty()).then_some(d)
    });
    assert!(dies[0].contains("name=after"), "{dies:#?}");
    let renamed = replay(&b, &since, &["event=rename", "container=after"]);
    assert!(renamed.len() == 1 && renamed[0].contains("oldName=/before"), "{renamed:#?}");
}
