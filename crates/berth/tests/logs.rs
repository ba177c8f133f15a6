//! Log rotation: `--log-opt max-size/max-file` (docker's json-file names
//! and size syntax), the config's `[logs]` cap, `--log-driver`, and
//! `logs` (with `--tail` and `-f`) reading the rotated files in order.

mod common;

use std::path::PathBuf;

use common::{Berth, leftovers};

/// The container's log files: LOG, LOG.1, LOG.2 ... with their sizes.
fn log_files(b: &Berth, name: &str) -> Vec<(PathBuf, u64)> {
    let live = PathBuf::from(b.inspect(name)["LogPath"].as_str().unwrap());
    let dir = live.parent().unwrap();
    let base = live.file_name().unwrap().to_string_lossy().into_owned();
    let mut files: Vec<(PathBuf, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&base))
        .map(|p| {
            let len = std::fs::metadata(&p).unwrap().len();
            (p, len)
        })
        .collect();
    files.sort();
    files
}

fn wait_exited(b: &Berth, name: &str) -> i64 {
    let code = b.ok(&["wait", name]);
    code.trim().parse().unwrap()
}

#[test]
fn thirty_megabytes_with_max_size_1m_and_max_file_3_leave_three_small_files() {
    let b = Berth::new();
    let line = "0123456789".repeat(10);
    let script = format!("yes {line} | head -c 30000000; echo; echo the-last-line");
    let opts = ["--log-opt", "max-size=1m", "--log-opt", "max-file=3"];
    let mut args = vec!["run", "-d", "--name", "chatty", "--network", "none"];
    args.extend(opts);
    args.extend([b.image.as_str(), "sh", "-c", &script]);
    b.ok(&args);
    assert_eq!(wait_exited(&b, "chatty"), 0);
    let files = log_files(&b, "chatty");
    let names: Vec<String> = files.iter().map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(
        names[0].ends_with("-json.log") && names[1].ends_with(".log.1") && names[2].ends_with(".log.2"),
        "{names:?}"
    );
    for (p, len) in &files {
        assert!(*len <= 1_000_000, "{} is {len} bytes", p.display());
    }
    assert_eq!(b.ok(&["logs", "--tail", "1", "chatty"]), "the-last-line\n");
    b.ok(&["rm", "chatty"]);
    assert!(leftovers(b.dir.path()).is_empty());
}

#[test]
fn logs_f_keeps_following_across_rotations() {
    let b = Berth::new();
    // About 40 bytes of output, 100 of log, per line: a rotation every
    // ~20 lines, and ten files kept for a reader that lags.
    let script = "i=1; while [ $i -le 400 ]; do echo line-$i; i=$((i+1)); usleep 2000; done";
    b.ok(&[
        "run",
        "-d",
        "--name",
        "rolling",
        "--network",
        "none",
        "--log-opt",
        "max-size=2k",
        "--log-opt",
        "max-file=10",
        &b.image,
        "sh",
        "-c",
        script,
    ]);
    let out = b.cmd(&["logs", "-f", "rolling"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want: String = (1..=400).map(|i| format!("line-{i}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), want, "every line, once, in order");
    assert!(log_files(&b, "rolling").len() > 1, "the log was rotated");
    b.ok(&["rm", "rolling"]);
}

#[test]
fn log_drivers_and_options_are_checked_as_docker_checks_them() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let refused = |args: &[&str], msg: &str| {
        let mut all = vec!["run", "--rm", "--network", "none"];
        all.extend(args);
        all.extend([b.image.as_str(), "true"]);
        let out = b.cmd(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {err}");
        assert!(err.contains(msg), "{args:?}: {err}");
    };
    refused(&["--log-driver", "nosuch"], "logger: no log driver named 'nosuch' is registered");
    refused(&["--log-opt", "max-size=big"], "invalid size: 'big'");
    refused(&["--log-opt", "max-file=0"], "max-file cannot be less than 1");
    refused(&["--log-opt", "maxsize=1m"], "unknown log opt 'maxsize' for json-file log driver");
    refused(&["--log-driver", "none", "--log-opt", "max-size=1m"], "invalid logging opts for driver none");
    assert_eq!(b.ok(&["ps", "-a", "-q"]), "", "nothing made");

    // none: an attached run still shows the output; `logs` refuses.
    let out = b.cmd(&["run", "--name", "quiet", "--log-driver", "none", "--network", "none", &b.image, "echo", "hi"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    let out = b.cmd(&["logs", "quiet"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("configured logging driver does not support reading"));
    b.ok(&["rm", "quiet"]);
    // local: docker's local driver's options.
    let out = b.cmd(&[
        "run",
        "--rm",
        "--log-driver",
        "local",
        "--log-opt",
        "max-size=5k",
        "--network",
        "none",
        &b.image,
        "echo",
        "hi",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
}

#[test]
fn the_configs_logs_section_caps_every_container() {
    let b = Berth::new();
    let config = b.dir.path().join("config.toml");
    std::fs::write(&config, "[logs]\nmax_size = \"1k\"\nmax_file = 2\n").unwrap();
    let script = "i=0; while [ $i -lt 200 ]; do echo line-$i; i=$((i+1)); done";
    let mut c = b.command();
    c.arg("--config").arg(&config);
    c.args(["run", "-d", "--name", "capped", "--network", "none", &b.image, "sh", "-c", script]);
    let out = berth_testkit::output_via_files(&mut c);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(wait_exited(&b, "capped"), 0);
    let files = log_files(&b, "capped");
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.iter().all(|(_, len)| *len <= 1000), "{files:?}");
    assert_eq!(b.ok(&["logs", "--tail", "1", "capped"]), "line-199\n");
    // A --log-opt overrides its key only: one file of 1k kept.
    let mut c = b.command();
    c.arg("--config").arg(&config);
    c.args([
        "run",
        "-d",
        "--name",
        "one",
        "--log-opt",
        "max-file=1",
        "--network",
        "none",
        &b.image,
        "sh",
        "-c",
        script,
    ]);
    assert!(berth_testkit::output_via_files(&mut c).status.success());
    assert_eq!(wait_exited(&b, "one"), 0);
    let files = log_files(&b, "one");
    assert!(files.len() == 1 && files[0].1 <= 1000, "{files:?}");
    b.ok(&["rm", "capped", "one"]);
}
