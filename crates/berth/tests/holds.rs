//! Containers and the images under them: `rmi` and prune never take the
//! layers of a container, not even racing its `run`; `system prune` never
//! takes a container a `run` is still making; a `run` or `rm` killed at
//! any step leaves a container that is either startable or visibly dead,
//! and that `rm -f` removes with everything it had.

use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod common;

use common::{Berth, leftovers};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The image's ID (sha256:…) as `image inspect` gives it.
fn image_id(b: &Berth) -> String {
    let v: serde_json::Value = serde_json::from_str(&b.ok(&["image", "inspect", &b.image])).unwrap();
    v[0]["Id"].as_str().unwrap().to_owned()
}

fn state(b: &Berth, id: &str) -> String {
    b.inspect(id)["State"]["Status"].as_str().unwrap_or_default().to_owned()
}

/// A detached busybox that sleeps; its ID.
fn sleeper(b: &Berth, extra: &[&str]) -> String {
    let mut args = vec!["run", "-d", "--network", "none"];
    args.extend(extra);
    args.extend([b.image.as_str(), "sleep", "600"]);
    b.ok(&args).trim().to_owned()
}

/// `berth ARGS` with `BERTH_KILL_AT=step` (a debug build's hook: the
/// process SIGKILLs itself there); its output.
fn killed_at(b: &Berth, step: &str, args: &[&str]) -> Output {
    let mut c = b.command();
    c.args(args).env("BERTH_KILL_AT", step);
    berth_testkit::output_via_files(&mut c)
}

/// Spawns `berth ARGS` with its output going to files (a detached
/// container's shim keeps pipes open).
fn spawn(b: &Berth, args: &[&str]) -> std::process::Child {
    let mut c: Command = b.command();
    c.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    c.spawn().unwrap()
}

/// Removes every container (and prunes), then checks that nothing of any
/// is left: mounts, run and data directories, runtime and shim state,
/// locks, image holds.
fn remove_all_and_check_nothing_left(b: &Berth) {
    for id in b.ok(&["ps", "-a", "-q"]).lines() {
        b.ok(&["rm", "-f", id]);
    }
    assert_eq!(b.ok(&["ps", "-a", "-q"]), "");
    // Sweeps what a creator killed before it wrote a record left (its lock).
    assert_eq!(b.ok(&["container", "prune", "-f"]), "Total reclaimed space: 0B\n");
    assert!(leftovers(b.dir.path()).is_empty(), "mounts left: {:?}", leftovers(b.dir.path()));
    let entries = |p: &str| -> Vec<String> {
        match std::fs::read_dir(b.dir.path().join(p)) {
            // Containers' entries (the runtime keeps caches beside them).
            Ok(d) => d
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.bytes().all(|c| c.is_ascii_hexdigit()))
                .collect(),
            Err(_) => Vec::new(),
        }
    };
    for dir in ["root/containers", "run/containers", "run/runtime", "run/s", "run/creating"] {
        assert_eq!(entries(dir), Vec::<String>::new(), "{dir} left");
    }
    let locks: Vec<_> = std::fs::read_dir(b.dir.path().join("run/locks")).into_iter().flatten().collect();
    assert!(locks.is_empty(), "lock files left: {locks:?}");
    let store = berth_image::store::Store::open(&b.dir.path().join("root")).unwrap();
    assert_eq!(store.meta.read_all().unwrap().refs, vec![], "image holds left");
}

/// docker's rules: a running container's image cannot be deleted, not
/// even with -f; by name without -f the tag stays; by name with -f the
/// tag goes and the image stays (dangling) under the container. Its
/// layers are never touched: exec still finds /bin/sh.
#[test]
fn rmi_never_takes_the_image_of_a_running_container() {
    let b = Berth::new();
    let id = sleeper(&b, &[]);
    let image = image_id(&b);
    let (short_img, short_id) = (&image[7..19], &id[..12]);

    for args in [vec!["rmi", "-f", &image[..]], vec!["rmi", short_img]] {
        let out = b.cmd(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let want = format!(
            "conflict: unable to delete {short_img} (cannot be forced) - image is being used by running container {short_id}"
        );
        assert!(text(&out.stderr).contains(&want), "{args:?}: {}", text(&out.stderr));
    }
    let out = b.cmd(&["rmi", &b.image]);
    assert_eq!(out.status.code(), Some(1));
    let want = format!(
        "conflict: unable to remove repository reference \"{}\" (must force) - container {short_id} is using its referenced image {short_img}",
        b.image
    );
    assert!(text(&out.stderr).contains(&want), "{}", text(&out.stderr));
    b.ok(&["image", "prune", "-a", "-f"]);

    // -f by name: untagged, the image stays as <none> under its container.
    let out = b.ok(&["rmi", "-f", &b.image]);
    assert!(out.contains("Untagged: ") && !out.contains("Deleted:"), "{out}");
    assert!(b.ok(&["images", "-q", "--no-trunc"]).contains(&image), "dangling image kept");
    assert_eq!(b.ok(&["exec", &id, "/bin/sh", "-c", "echo still here"]), "still here\n");

    b.ok(&["rm", "-f", &id]);
    b.ok(&["image", "prune", "-f"]);
    assert_eq!(b.ok(&["images", "-q"]), "", "dangling and unused now: pruned");
    let snapshots = b.dir.path().join("root/snapshots");
    let layers = std::fs::read_dir(&snapshots).unwrap().filter(|e| e.as_ref().unwrap().path().join("fs").exists());
    assert_eq!(layers.count(), 0, "the layers went with the last user");
    remove_all_and_check_nothing_left(&b);
}

/// A stopped (exited, or created and never started) container's image:
/// rmi refuses without -f; with -f the image is deleted, and the
/// containers keep their layers: both still start.
#[test]
fn rmi_force_deletes_the_image_of_stopped_containers_but_not_their_layers() {
    let b = Berth::new();
    let out = b.cmd(&["run", "--name", "done", "--network", "none", &b.image, "sh", "-c", "echo ran"]);
    assert_eq!(text(&out.stdout), "ran\n", "{}", text(&out.stderr));
    b.ok(&["create", "--name", "fresh", "--network", "none", &b.image, "sh", "-c", "echo fresh"]);
    let image = image_id(&b);
    let out = b.cmd(&["rmi", &image]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!(
            "conflict: unable to delete {} (must be forced) - image is being used by stopped container",
            &image[7..19]
        )),
        "{}",
        text(&out.stderr)
    );
    let out = b.ok(&["rmi", "-f", &image]);
    assert!(out.contains(&format!("Deleted: {image}")), "{out}");
    assert_eq!(b.ok(&["images", "-q"]), "");

    assert_eq!(b.ok(&["start", "-a", "done"]), "ran\n");
    assert_eq!(b.ok(&["start", "-a", "fresh"]), "fresh\n");
    remove_all_and_check_nothing_left(&b);
    b.ok(&["image", "prune", "-a", "-f"]);
    let snapshots = b.dir.path().join("root/snapshots");
    let layers = std::fs::read_dir(&snapshots).unwrap().filter(|e| e.as_ref().unwrap().path().join("fs").exists());
    assert_eq!(layers.count(), 0, "collected once their containers are gone");
    assert_eq!(std::fs::read_dir(snapshots.join("locks")).unwrap().count(), 0, "and their lock files");
}

/// `run` and `rmi` at once on one root, many times: either the run got
/// the image first (then rmi is refused or leaves its layers) or rmi did
/// (then run says there is no such image). Never a run without layers
/// (mount errors, 127).
#[test]
fn run_racing_rmi_either_runs_or_finds_no_image() {
    let b = Berth::new();
    b.ok(&["pull", "-q", &b.image]);
    let image = image_id(&b);
    // rmi is quicker to reach the store than run: it starts later by a
    // growing part of a run's time, so the two meet at every point.
    let t = Instant::now();
    let id = sleeper(&b, &["--pull", "never"]);
    let whole = t.elapsed();
    b.ok(&["rm", "-f", &id]);
    let (mut ran, mut missed) = (0, 0);
    for round in 0..32u32 {
        if !b.ok(&["images", "-q", "--no-trunc"]).contains(&image) {
            b.ok(&["pull", "-q", &b.image]);
        }
        let rmi: Vec<&str> = if round % 2 == 0 { vec!["rmi", &b.image] } else { vec!["rmi", "-f", &image] };
        let (run, removed) = std::thread::scope(|s| {
            let run =
                s.spawn(|| b.cmd(&["run", "-d", "--pull", "never", "--network", "none", &b.image, "sleep", "600"]));
            let removed = s.spawn(|| {
                std::thread::sleep(whole * (round % 16) / 64);
                b.cmd(&rmi)
            });
            (run.join().unwrap(), removed.join().unwrap())
        });
        if run.status.success() {
            ran += 1;
            let id = text(&run.stdout).trim().to_owned();
            assert_eq!(state(&b, &id), "running", "round {round}");
            assert_eq!(b.ok(&["exec", &id, "/bin/sh", "-c", "echo ok"]), "ok\n", "round {round}");
            if !removed.status.success() {
                assert!(text(&removed.stderr).contains("conflict: unable to"), "round {round}: {removed:?}");
            }
            b.ok(&["rm", "-f", &id]);
        } else {
            missed += 1;
            let err = text(&run.stderr);
            assert_eq!(run.status.code(), Some(125), "round {round}: {err}");
            assert!(err.contains("No such image"), "round {round}: {err}");
            assert!(removed.status.success(), "round {round}: {removed:?}");
        }
    }
    eprintln!("{ran} runs won, {missed} rmis won");
    remove_all_and_check_nothing_left(&b);
}

/// `system prune` and `container prune` in a loop while `run -d` makes
/// containers: every ID run printed is a running container afterwards.
#[test]
fn prune_leaves_the_containers_run_is_still_making() {
    let b = Berth::new();
    b.ok(&["pull", "-q", &b.image]);
    let done = AtomicBool::new(false);
    let (ids, prunes) = std::thread::scope(|s| {
        let pruner = s.spawn(|| {
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                let what: &[&str] = if n % 2 == 0 { &["system", "prune", "-f"] } else { &["container", "prune", "-f"] };
                let out = b.cmd(what);
                assert!(out.status.success(), "{what:?}: {}", text(&out.stderr));
                n += 1;
            }
            n
        });
        // Stops the pruner however this thread ends (a failed assert too).
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let stop = Done(&done);
        let mut runs = Vec::new();
        for i in 0..16 {
            // Named: the generated names are few yet (issue 11, finding 8).
            let name = format!("p{i}");
            runs.push(b.cmd(&["run", "-d", "--name", &name, "--network", "none", &b.image, "sleep", "600"]));
        }
        drop(stop);
        let prunes = pruner.join().unwrap();
        let mut ids = Vec::new();
        for out in runs {
            assert!(out.status.success(), "run -d: {}", text(&out.stderr));
            ids.push(text(&out.stdout).trim().to_owned());
        }
        (ids, prunes)
    });
    assert!(prunes > 0);
    for id in &ids {
        assert_eq!(state(&b, id), "running", "{id}");
    }
    remove_all_and_check_nothing_left(&b);
}

/// `run -d` killed at each step of making the container: before the
/// container is complete it shows as dead, cannot start (a clear error),
/// and `rm` removes it; once complete it is created and starts. Then the
/// same with kills at evenly spread moments of a whole `create`.
#[test]
fn a_killed_run_leaves_a_container_that_starts_or_is_dead_and_removable() {
    let b = Berth::new();
    b.ok(&["pull", "-q", &b.image]);
    let run = ["run", "-d", "--name", "k", "--network", "none", b.image.as_str(), "sleep", "600"];
    for step in ["create:recorded", "create:held", "create:mounted", "create:prepared"] {
        let out = killed_at(&b, step, &run);
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&out.status), Some(9), "{step}");
        assert_eq!(state(&b, "k"), "dead", "{step}");
        let out = b.cmd(&["start", "k"]);
        assert!(!out.status.success(), "{step}: a dead container started");
        assert!(text(&out.stderr).contains("is marked for removal and cannot be started"), "{}", text(&out.stderr));
        assert_eq!(b.ok(&["ps", "-a", "--format", "{{.Status}}"]).trim(), "Dead", "{step}");
        b.ok(&["rm", "k"]);
        remove_all_and_check_nothing_left(&b);
    }
    let out = killed_at(&b, "create:done", &run);
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&out.status), Some(9));
    assert_eq!(state(&b, "k"), "created");
    b.ok(&["start", "k"]);
    assert_eq!(b.ok(&["exec", "k", "echo", "up"]), "up\n");
    remove_all_and_check_nothing_left(&b);

    // Kills anywhere in a `create` (what `run -d` does before it starts
    // the container), at spread moments.
    let t = Instant::now();
    b.ok(&["create", "--network", "none", &b.image, "sleep", "600"]);
    let whole = t.elapsed();
    remove_all_and_check_nothing_left(&b);
    for i in 0..12u32 {
        let mut child = spawn(&b, &["create", "--network", "none", &b.image, "sleep", "600"]);
        std::thread::sleep(whole * i / 12);
        let _ = child.kill();
        let _ = child.wait();
        for id in b.ok(&["ps", "-a", "-q", "--no-trunc"]).lines() {
            match state(&b, id).as_str() {
                "created" => {
                    b.ok(&["start", id]);
                    assert_eq!(state(&b, id), "running");
                }
                "dead" => assert!(!b.cmd(&["start", id]).status.success(), "a dead container started"),
                other => panic!("kill {i}: container {id} is {other}"),
            }
        }
        remove_all_and_check_nothing_left(&b);
    }
}

/// `rm -f` killed at each step: the container cannot start any more, and
/// the next `rm -f` finishes and leaves nothing.
#[test]
fn a_killed_rm_is_finished_by_the_next() {
    let b = Berth::new();
    b.ok(&["pull", "-q", &b.image]);
    for step in ["rm:marked", "rm:unmounted", "rm:cleaned", "rm:unlocked"] {
        let id = sleeper(&b, &[]);
        let out = killed_at(&b, step, &["rm", "-f", &id]);
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&out.status), Some(9), "{step}");
        assert_eq!(state(&b, &id), "removing", "{step}");
        let out = b.cmd(&["start", &id]);
        assert!(text(&out.stderr).contains("is marked for removal and cannot be started"), "{}", text(&out.stderr));
        b.ok(&["rm", "-f", &id]);
        remove_all_and_check_nothing_left(&b);
    }
    // Killed once the record is gone: nothing may be left that no record
    // leads to (its lock file was, found by the crash harness).
    let id = sleeper(&b, &[]);
    let out = killed_at(&b, "rm:removed", &["rm", "-f", &id]);
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&out.status), Some(9));
    assert!(!b.ok(&["ps", "-a", "-q", "--no-trunc"]).contains(&id));
    remove_all_and_check_nothing_left(&b);
    // And at spread moments of a whole rm -f.
    let id = sleeper(&b, &[]);
    let t = Instant::now();
    b.ok(&["rm", "-f", &id]);
    let whole = t.elapsed().max(Duration::from_millis(20));
    for i in 0..8u32 {
        let id = sleeper(&b, &[]);
        let mut child = spawn(&b, &["rm", "-f", &id]);
        std::thread::sleep(whole * i / 8);
        let _ = child.kill();
        let _ = child.wait();
        remove_all_and_check_nothing_left(&b);
    }
}

/// A dead container (its `run` killed before it was made) and one half
/// removed (its `rm` killed) show as docker shows them: `ps` STATUS
/// "Dead" and "Removal In Progress", `{{.State}}` and inspect's
/// `.State.Status` "dead" and "removing" (not Rust's `Dead`/`Removing`).
#[test]
fn dead_and_half_removed_containers_show_dockers_states() {
    let b = Berth::new();
    b.ok(&["pull", "-q", &b.image]);
    let out = killed_at(&b, "create:recorded", &["run", "-d", "--network", "none", &b.image, "sleep", "600"]);
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&out.status), Some(9));
    let dead = b.ok(&["ps", "-a", "-q", "--no-trunc"]).trim().to_owned();
    let removing = sleeper(&b, &[]);
    let out = killed_at(&b, "rm:marked", &["rm", "-f", &removing]);
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&out.status), Some(9));

    for (id, state, status) in [(&dead, "dead", "Dead"), (&removing, "removing", "Removal In Progress")] {
        let line =
            b.ok(&["ps", "-a", "--no-trunc", "--filter", &format!("id={id}"), "--format", "{{.State}}|{{.Status}}"]);
        assert_eq!(line, format!("{state}|{status}\n"), "{id}");
        assert_eq!(b.inspect(id)["State"]["Status"], state, "{id}");
        let table = b.ok(&["ps", "-a", "--no-trunc", "--filter", &format!("id={id}")]);
        assert!(table.lines().nth(1).is_some_and(|l| l.contains(status)), "{table}");
    }
    b.ok(&["rm", "-f", &dead]);
    b.ok(&["rm", "-f", &removing]);
    remove_all_and_check_nothing_left(&b);
}
