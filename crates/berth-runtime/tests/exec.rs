//! `exec` never gives a process more than its container has: fields a
//! process.json leaves out come from the container's process, ids a setuid
//! would read as "keep root" are refused, and the environment's later
//! values win, as with runc.

use std::path::Path;

use berth_testkit::{Bundle, Runtime, leaks, require_root, unique_id, unique_sleep};
use serde_json::{Value, json};

fn runtime() -> Runtime {
    require_root();
    Runtime::new(env!("CARGO_BIN_EXE_berth-runtime"))
}

/// A running container (its init sleeping) made from `b` after `edit`.
/// Returns its id and init pid.
fn running(rt: &Runtime, b: &mut Bundle, edit: impl FnOnce(&mut Value)) -> (String, i64) {
    let marker = unique_sleep();
    b.edit(edit);
    b.args(&["sleep", &marker]);
    let id = unique_id("exec");
    rt.ok(&["run", "-d", "--bundle", b.path().to_str().unwrap(), &id]);
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    (id, pid)
}

fn write_process(dir: &Path, process: Value) -> String {
    let file = dir.join(format!("{}.json", unique_id("process")));
    std::fs::write(&file, serde_json::to_vec(&process).unwrap()).unwrap();
    file.to_str().unwrap().to_string()
}

/// The lines of /proc/PID/status that say what a process may do.
fn privileges(status: &str) -> Vec<String> {
    status
        .lines()
        .filter(|l| {
            ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:", "NoNewPrivs:"].iter().any(|p| l.starts_with(p))
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

const REPORT: &str = "grep -E '^(Cap|NoNewPrivs)' /proc/self/status; echo limits $(ulimit -Sn) $(ulimit -Hn); \
                      echo oom $(cat /proc/self/oom_score_adj); echo umask $(umask)";

#[test]
fn an_exec_process_without_capabilities_gets_exactly_the_containers_privileges() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    let (id, pid) = running(&rt, &mut b, |c| {
        c["process"]["noNewPrivileges"] = true.into();
        c["process"]["rlimits"] = json!([{ "type": "RLIMIT_NOFILE", "soft": 100, "hard": 200 }]);
        c["process"]["oomScoreAdj"] = json!(321);
        c["process"]["user"]["umask"] = json!(0o027);
    });
    let init = privileges(&std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap());
    assert_eq!(init.len(), 6, "{init:?}");
    assert!(init.contains(&"CapBnd: 0000000020000420".to_string()), "the container's own sets: {init:?}");
    let expect_rest = ["limits 100 200", "oom 321", "umask 0027"];

    // A process.json with none of those fields (runc's docs' example has no capabilities).
    let bare = write_process(
        b.path(),
        json!({ "user": { "uid": 0, "gid": 0 }, "cwd": "/", "env": ["PATH=/bin"], "args": ["sh", "-c", REPORT] }),
    );
    // Plain exec: the container's process with the command line's args.
    let runs: [&[&str]; 2] = [&["exec", "--process", &bare, &id], &["exec", &id, "sh", "-c", REPORT]];
    for args in runs {
        let out = rt.exec(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(privileges(&text), init, "{args:?} has the init's capabilities and no_new_privs");
        for line in expect_rest {
            assert!(text.lines().any(|l| l == line), "{args:?}: {line:?} in {text}");
        }
    }

    // What a process.json does say is what it gets: an explicit false and
    // explicit (smaller) sets.
    let explicit = write_process(
        b.path(),
        json!({ "user": { "uid": 0, "gid": 0 }, "cwd": "/", "env": ["PATH=/bin"], "args": ["sh", "-c", REPORT],
                "noNewPrivileges": false,
                "capabilities": { "bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"] } }),
    );
    let text = rt.ok(&["exec", "--process", &explicit, &id]);
    let got = privileges(&text);
    assert!(got.contains(&"CapBnd: 0000000000000020".to_string()), "{got:?}");
    assert!(got.contains(&"NoNewPrivs: 0".to_string()), "{got:?}");

    rt.ok(&["delete", "--force", &id]);
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

#[test]
fn exec_refuses_ids_outside_runcs_range_and_nothing_runs_as_root() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    let (id, _) = running(&rt, &mut b, |c| c["process"]["user"] = json!({ "uid": 1000, "gid": 1000 }));
    let script = "echo ran-as-$(id -u):$(id -g)";
    let out = rt.ok(&["exec", &id, "sh", "-c", script]);
    assert_eq!(out.trim(), "ran-as-1000:1000");

    let process = |user: Value| {
        write_process(b.path(), json!({ "user": user, "cwd": "/", "env": ["PATH=/bin"], "args": ["sh", "-c", script] }))
    };
    let uid_file = process(json!({ "uid": 4294967295u32, "gid": 1000 }));
    let gids_file = process(json!({ "uid": 1000, "gid": 1000, "additionalGids": [4294967295u32] }));
    let cases: [(&[&str], &str); 5] = [
        (&["exec", "--user", "4294967295", &id, "sh", "-c", script], "process.user.uid"),
        (&["exec", "--user", "0:4294967295", &id, "sh", "-c", script], "process.user.gid"),
        (&["exec", "--additional-gids", "4294967295", &id, "sh", "-c", script], "process.user.additionalGids[0]"),
        (&["exec", "--process", &uid_file, &id], "process.user.uid"),
        (&["exec", "--process", &gids_file, &id], "process.user.additionalGids[0]"),
    ];
    for (args, field) in cases {
        let out = rt.exec(args);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{args:?} must fail; it printed {stdout}");
        assert!(!stdout.contains("ran-as"), "{args:?}: nothing may run: {stdout}");
        assert!(stderr.contains(field) && stderr.contains("4294967295"), "{args:?}: the error names {field}: {stderr}");
    }
    rt.ok(&["delete", "--force", &id]);
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

/// FOO's values in the environment the program got (no shell in between:
/// a shell would tidy duplicates itself).
fn foo_values(env_output: &str) -> Vec<&str> {
    env_output.lines().filter_map(|l| l.strip_prefix("FOO=")).collect()
}

#[test]
fn exec_env_overrides_the_containers_value_of_the_same_name() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    let (id, _) = running(&rt, &mut b, |c| c["process"]["env"].as_array_mut().unwrap().push("FOO=old".into()));
    let out = rt.ok(&["exec", "--env", "FOO=new", &id, "env"]);
    assert_eq!(foo_values(&out), ["new"], "the later value wins, and only it is passed: {out}");
    let out = rt.ok(&["exec", "--env", "FOO=one", "-e", "FOO=two", &id, "env"]);
    assert_eq!(foo_values(&out), ["two"], "{out}");
    let file = write_process(
        b.path(),
        json!({ "user": { "uid": 0, "gid": 0 }, "cwd": "/", "env": ["PATH=/bin", "FOO=old", "FOO=new"], "args": ["env"] }),
    );
    let out = rt.ok(&["exec", "--process", &file, &id]);
    assert_eq!(foo_values(&out), ["new"], "{out}");
    rt.ok(&["delete", "--force", &id]);
    leaks::assert_none(&id, b.path(), rt.root(), None);

    // The same rule for config.json's own env, as runc's init applies it.
    b.edit(|c| c["process"]["env"].as_array_mut().unwrap().extend([json!("FOO=old"), json!("FOO=new")]));
    b.args(&["env"]);
    let id = unique_id("envinit");
    let (code, out, err) = rt.run(&b, &id);
    assert_eq!(code, 0, "{err}");
    assert_eq!(foo_values(&out), ["new"], "{out}");
    leaks::assert_none(&id, b.path(), rt.root(), None);
}
