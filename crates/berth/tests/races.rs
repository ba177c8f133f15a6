//! Races under load: `run -d`, `rm -f`, `rmi`, the prunes and `pull` in
//! parallel loops (threads, each running the `berth` CLI) on one root,
//! then the invariants of berth_testkit::invariants: every ID a `run -d`
//! printed is a container that exists, unless the test removed it; every
//! container is usable and removable by one `rm -f`; then nothing is left;
//! blobs hash to their names, `system check` finds nothing, the image can
//! be removed and GC leaves an empty store. A command may lose a race
//! only in the ways docker's do (an image in use is not removed; an image
//! just removed is not found); any other failure is a violation.
//!
//! `BERTH_RACE_ROUNDS=N` scales the loops (default: a CI-sized run).

use std::collections::BTreeSet;
use std::process::Output;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

mod common;

use berth_testkit::invariants::{self as inv, Invariant, Scope, Violation};
use berth_testkit::rand::rngs::StdRng;
use berth_testkit::rand::{Rng, SeedableRng};
use common::Berth;

/// A container that runs until stopped, and stops on SIGTERM at once.
const SERVE: &str = "trap 'exit 0' TERM; while :; do sleep 0.2; done";

fn rounds(ci: usize) -> usize {
    let scale = std::env::var("BERTH_RACE_ROUNDS").ok().and_then(|v| v.parse::<usize>().ok());
    scale.map_or(ci, |n| n.max(1) * ci / 10)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_owned()
}

/// What the loops saw, shared between their threads.
#[derive(Default)]
struct Seen {
    /// IDs `run -d` printed.
    printed: Vec<String>,
    /// IDs the test removed with a successful `rm -f`.
    removed: BTreeSet<String>,
    /// IDs the remover found gone (not to be picked again).
    vanished: BTreeSet<String>,
    violations: Vec<Violation>,
}

struct Race<'a> {
    b: &'a Berth,
    seen: Mutex<Seen>,
    /// Runner threads still running.
    runners: AtomicUsize,
}

impl Race<'_> {
    fn violation(&self, invariant: Invariant, detail: String) {
        eprintln!("race: [{}] {detail}", invariant.name());
        self.seen.lock().unwrap().violations.push(Violation::new(invariant, detail));
    }

    /// A failure of `args` is a violation unless its error says it lost a
    /// race as docker's would (`expected` names the acceptable errors).
    fn judge(&self, args: &[&str], o: &Output, expected: &[&str]) -> bool {
        if o.status.success() {
            return true;
        }
        let err = stderr(o);
        if !expected.iter().any(|e| err.contains(e)) {
            self.violation(Invariant::UnrelatedError, format!("`berth {}` failed: {err}", args.join(" ")));
        }
        false
    }

    /// `n` times `run -d`, some publishing a port of its own from
    /// `first_port` on (runners get ranges that do not overlap: two
    /// containers given one host port would rightly clash).
    fn runner(&self, n: usize, seed: u64, first_port: usize) {
        let mut rng = StdRng::seed_from_u64(seed);
        for i in 0..n {
            let port = format!("{}:80", first_port + i);
            let mut args = vec!["run", "-d"];
            if rng.random_bool(0.3) {
                args.extend(["-p", port.as_str()]);
            } else {
                args.extend(["--network", "none"]);
            }
            args.extend([self.b.image.as_str(), "sh", "-c", SERVE]);
            let o = self.b.cmd(&args);
            // Lost to an rmi twice over (found missing, pulled, removed again).
            if self.judge(&args, &o, &["No such image", "Unable to find image"]) {
                let id = String::from_utf8_lossy(&o.stdout).trim().to_owned();
                self.seen.lock().unwrap().printed.push(id);
            }
        }
        self.runners.fetch_sub(1, Ordering::SeqCst);
    }

    /// Removes `n` of the containers the runners printed (fewer if the
    /// runners end first).
    fn remover(&self, n: usize, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut done = 0;
        while done < n {
            let pick = {
                let s = self.seen.lock().unwrap();
                let left: Vec<&String> =
                    s.printed.iter().filter(|i| !s.removed.contains(*i) && !s.vanished.contains(*i)).collect();
                (!left.is_empty()).then(|| left[rng.random_range(0..left.len())].clone())
            };
            let Some(id) = pick else {
                if self.runners.load(Ordering::SeqCst) == 0 {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
                continue;
            };
            done += 1;
            let args = ["rm", "-f", id.as_str()];
            let o = self.b.cmd(&args);
            if o.status.success() {
                self.seen.lock().unwrap().removed.insert(id);
            } else if stderr(&o).contains("No such container") {
                // Gone without the test removing it: lost_containers reports it once.
                self.seen.lock().unwrap().vanished.insert(id);
            } else {
                self.judge(&args, &o, &[]);
            }
        }
    }

    fn remover_of_images(&self, n: usize) {
        for _ in 0..n {
            let args = ["rmi", self.b.image.as_str()];
            let o = self.b.cmd(&args);
            // In use (docker: "conflict: unable to ..."), or already gone.
            self.judge(&args, &o, &["conflict", "No such image", "not found"]);
        }
    }

    fn pruner(&self, n: usize) {
        let ops: [&[&str]; 3] =
            [&["system", "prune", "-f"], &["container", "prune", "-f"], &["image", "prune", "-a", "-f"]];
        for i in 0..n {
            let args = ops[i % ops.len()];
            let o = self.b.cmd(args);
            self.judge(args, &o, &[]);
        }
    }

    fn puller(&self, n: usize) {
        for _ in 0..n {
            let args = ["pull", self.b.image.as_str()];
            let o = self.b.cmd(&args);
            self.judge(&args, &o, &[]);
        }
    }

    /// Every printed ID exists unless the test removed it.
    fn lost_containers(&self, cli: inv::Cli<'_>) {
        let existing: BTreeSet<String> = inv::container_ids(cli).into_iter().collect();
        let lost: Vec<String> = {
            let s = self.seen.lock().unwrap();
            s.printed.iter().filter(|i| !existing.contains(*i) && !s.removed.contains(*i)).cloned().collect()
        };
        for id in lost {
            self.violation(Invariant::LostContainer, format!("`run -d` printed {id}, which no longer exists"));
        }
    }
}

#[test]
fn parallel_run_rm_rmi_prune_and_pull_lose_and_leak_nothing() {
    inv::in_private_netns(|| {
        let b = Berth::new();
        let scope = Scope::of_command(&b.command(), true);
        b.ok(&["pull", &b.image]);
        let race = Race { b: &b, seen: Mutex::new(Seen::default()), runners: AtomicUsize::new(2) };
        let seed = std::process::id() as u64;
        std::thread::scope(|s| {
            s.spawn(|| race.runner(rounds(10), seed, 19000));
            s.spawn(|| race.runner(rounds(10), seed + 1, 19000 + rounds(10)));
            s.spawn(|| race.remover(rounds(10), seed + 2));
            s.spawn(|| race.remover_of_images(rounds(15)));
            s.spawn(|| race.pruner(rounds(12)));
            s.spawn(|| race.puller(rounds(6)));
        });
        let cli = |args: &[&str]| b.cmd(args);
        race.lost_containers(&cli);
        let mut vs = scope.corrupt_blobs();
        vs.extend(inv::check_containers_and_remove_all(&cli, &scope));
        vs.extend(inv::check_system(&cli));
        let o = b.cmd(&["rmi", &b.image]);
        if !o.status.success() && !stderr(&o).contains("No such image") {
            vs.push(Violation::new(Invariant::ImageHold, format!("no container, yet `rmi`: {}", stderr(&o))));
        }
        b.ok(&["system", "prune", "-a", "-f"]);
        vs.extend(scope.store_garbage());
        let mut seen = race.seen.into_inner().unwrap();
        seen.violations.extend(vs);
        let dir = b.dir.path().display().to_string();
        let report: Vec<String> = seen.violations.iter().map(|v| v.to_string().replace(&dir, "$DIR")).collect();
        // Nothing of a failed run outlives the test.
        for p in scope.processes() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid), nix::sys::signal::Signal::SIGKILL);
        }
        assert!(
            report.is_empty(),
            "{} violation(s) after {} run -d, {} rm -f:\n{}",
            report.len(),
            seen.printed.len(),
            seen.removed.len(),
            report.join("\n")
        );
    });
}
