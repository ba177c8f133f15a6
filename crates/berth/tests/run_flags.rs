//! `run`/`create` flags end to end, as docker takes them: `-e NAME` from
//! the caller, the bounds of `--memory`, `--cpus` and `-u`, the exit codes
//! of command-line mistakes, and generated names under parallel runs.
//! What is refused leaves nothing behind.

use std::collections::BTreeSet;
use std::sync::Arc;

mod common;

use common::{Berth, leftovers};

/// The shared harness with the image already pulled.
fn berth() -> Berth {
    let b = Berth::new();
    b.ok(&["pull", "-q", &b.image]);
    b
}

/// `berth ARGS`: (exit code, stderr).
fn status(b: &Berth, args: &[&str]) -> (Option<i32>, String) {
    let out = b.cmd(args);
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `run ARGS` is refused with docker's 125 and `message`, and no
/// container, mount or record is left.
fn refused(b: &Berth, args: &[&str], message: &str) {
    let mut all = vec!["run", "--rm", "--network", "none"];
    all.extend(args);
    all.extend([b.image.as_str(), "true"]);
    let (code, err) = status(b, &all);
    assert_eq!(code, Some(125), "run {args:?}: {err}");
    assert!(err.contains(message), "run {args:?}: want {message:?} in: {err}");
    assert_eq!(b.ok(&["ps", "-a", "-q"]), "", "run {args:?} left a container");
    assert!(leftovers(b.dir.path()).is_empty(), "run {args:?} left mounts");
}

#[test]
fn env_without_a_value_comes_from_the_callers_environment() {
    let b = berth();
    let mut c = b.command();
    c.env("BERTH_TEST_SET", "from the caller").env_remove("BERTH_TEST_UNSET");
    c.args(["run", "--rm", "--network", "none", "-e", "BERTH_TEST_SET", "-e", "BERTH_TEST_UNSET"]);
    c.args(["-e", "BERTH_TEST_EMPTY=", &b.image, "env"]);
    let out = berth_testkit::output_via_files(&mut c);
    let env = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(env.lines().any(|l| l == "BERTH_TEST_SET=from the caller"), "{env}");
    assert!(env.lines().any(|l| l == "BERTH_TEST_EMPTY="), "{env}");
    assert!(!env.contains("BERTH_TEST_UNSET"), "an unset name is left out: {env}");
    refused(&b, &["-e", "=oops"], "no variable name");
}

#[test]
fn memory_and_cpus_outside_dockers_bounds_are_refused_with_its_messages() {
    let b = berth();
    refused(&b, &["--memory", "1m"], "Minimum memory limit allowed is 6MB");
    refused(&b, &["-m", "6291455b"], "Minimum memory limit allowed is 6MB");
    let n = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
    let n = (0..nix::sched::CpuSet::count()).filter(|i| n.is_set(*i).unwrap()).count();
    let range = format!("range of CPUs is from 0.01 to {n}.00, as there are only {n} CPUs available");
    let over = format!("{}", n + 1);
    for cpus in [over.as_str(), "0.001", "-1"] {
        refused(&b, &["--cpus", cpus], &range);
    }
    refused(&b, &["--cpus", "lots"], "--cpus");
    // No limit, and the smallest and largest allowed.
    let at_most = n.to_string();
    for ok in [["--memory", "-1"], ["--memory", "6m"], ["--cpus", "0.01"], ["--cpus", at_most.as_str()]] {
        let mut args = vec!["run", "--rm", "--network", "none"];
        args.extend(ok);
        args.extend([b.image.as_str(), "true"]);
        let (code, err) = status(&b, &args);
        assert_eq!(code, Some(0), "{ok:?}: {err}");
    }
}

#[test]
fn user_ids_outside_runcs_range_are_refused_before_anything_is_made() {
    let b = berth();
    refused(&b, &["-u", "4294967295:4294967295"], "uid 4294967295 is out of range");
    refused(&b, &["--user", "0:4294967295"], "gid 4294967295 is out of range");
    refused(&b, &["-u", "2147483648"], "uid 2147483648 is out of range");
    let (code, err) = status(&b, &["create", "--network", "none", "-u", "4294967295", &b.image, "true"]);
    assert_eq!(code, Some(125), "{err}");
    assert_eq!(b.ok(&["ps", "-a", "-q"]), "");
    // The largest allowed id is used as given.
    let id = b.ok(&["run", "--rm", "--network", "none", "-u", "2147483647:2147483647", &b.image, "id"]);
    assert!(id.starts_with("uid=2147483647 gid=2147483647"), "{id}");
    // exec takes the same bounds.
    b.ok(&["run", "-d", "--name", "box", "--network", "none", &b.image, "sleep", "300"]);
    let (code, err) = status(&b, &["exec", "-u", "4294967295", "box", "id"]);
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("uid 4294967295 is out of range"), "{err}");
}

#[test]
fn command_line_mistakes_exit_with_dockers_codes() {
    let b = Berth::new();
    let image: &str = &b.image;
    let cases: [(&[&str], i32); 9] = [
        (&["run", "--bogus", image], 125),
        (&["create", "--bogus", image], 125),
        (&["run", "--memory"], 125),
        (&["run", "--cpus", "lots", image], 125),
        (&["ps", "--bogus"], 125),
        (&["run"], 1),
        (&["rm"], 1),
        (&["no-such-command"], 1),
        (&["ps", "extra"], 1),
    ];
    for (args, want) in cases {
        let (code, err) = status(&b, args);
        assert_eq!(code, Some(want), "berth {args:?}: {err}");
        assert!(!err.is_empty(), "berth {args:?} says why");
    }
    assert_eq!(status(&b, &["run", "--help"]).0, Some(0));
    assert_eq!(b.ok(&["ps", "-a", "-q"]), "");
}

#[test]
fn forty_parallel_runs_without_names_all_start_with_distinct_generated_names() {
    let b = Arc::new(berth());
    let runs: Vec<_> = (0..40)
        .map(|_| {
            let b = b.clone();
            std::thread::spawn(move || {
                let out = b.cmd(&["run", "-d", "--network", "none", &b.image, "sleep", "300"]);
                assert!(out.status.success(), "run: {}", String::from_utf8_lossy(&out.stderr));
            })
        })
        .collect();
    for r in runs {
        r.join().unwrap();
    }
    let names = b.ok(&["ps", "--format", "{{.Names}}"]);
    let distinct: BTreeSet<&str> = names.lines().collect();
    assert_eq!((names.lines().count(), distinct.len()), (40, 40), "{names}");
    for n in &distinct {
        let (adj, who) = n.split_once('_').unwrap_or_else(|| panic!("not adjective_surname: {n}"));
        assert!(!adj.is_empty() && who.chars().next().is_some_and(|c| c.is_ascii_lowercase()), "{n}");
    }
    let rms: Vec<_> = distinct
        .iter()
        .map(|n| {
            let (b, n) = (b.clone(), n.to_string());
            std::thread::spawn(move || b.ok(&["rm", "-f", &n]))
        })
        .collect();
    for r in rms {
        r.join().unwrap();
    }
    assert_eq!(b.ok(&["ps", "-a", "-q"]), "");
}
