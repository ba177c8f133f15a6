//! `berth build` end to end: real Dockerfiles on the busybox image the
//! other CLI tests use, each with its own root (removed with everything
//! in it when the test ends, also when it fails), and what the built
//! image does when `berth run` runs it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::Berth;

/// A build context directory with these files.
fn context(b: &Berth, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = b.dir.path().join(name);
    for (f, body) in files {
        let p = dir.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    dir
}

fn build(b: &Berth, ctx: &Path, extra: &[&str]) -> Output {
    let mut c = b.command();
    c.arg("build").args(extra).arg(ctx);
    berth_testkit::output_via_files(&mut c)
}

fn build_ok(b: &Berth, ctx: &Path, extra: &[&str]) -> String {
    let out = build(b, ctx, extra);
    assert!(out.status.success(), "build failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `berth run --rm IMAGE sh -c SCRIPT`'s stdout.
fn run_sh(b: &Berth, image: &str, script: &str) -> String {
    b.ok(&["run", "--rm", image, "sh", "-c", script])
}

/// The one directory under the root's cache mounts (a RUN's side effects
/// land there, on the host).
fn cache_mount_file(b: &Berth, name: &str) -> String {
    let dir = b.dir.path().join("root/build-cache-mounts");
    let Ok(entries) = std::fs::read_dir(&dir) else { return String::new() };
    let dirs: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    std::fs::read_to_string(dirs[0].join(name)).unwrap_or_default()
}

#[test]
fn multi_stage_copy_from_with_args_and_env_seen_by_the_container() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!(
        "ARG BASE={}\n\
         FROM $BASE AS builder\n\
         ARG GREETING=hello\n\
         ENV TARGET=world\n\
         RUN mkdir -p /out && echo \"$GREETING $TARGET\" > /out/msg\n\
         FROM ${{BASE}}\n\
         COPY --from=builder /out/msg /final/\n\
         ENV SEEN=\"${{TARGET:-unset}}\" LATER=after\n\
         CMD [\"cat\", \"/final/msg\"]\n",
        b.image
    );
    let ctx = context(&b, "ctx", &[("Dockerfile", &df)]);
    let log = build_ok(&b, &ctx, &["-t", "multi:1", "--build-arg", "GREETING=hi", "--build-arg", "UNUSED=x"]);
    assert!(log.contains("[Warning] One or more build-args [UNUSED] were not consumed"), "{log}");
    assert_eq!(b.ok(&["run", "--rm", "multi:1"]), "hi world\n");
    // TARGET was the first stage's ENV: not in the second one.
    assert_eq!(run_sh(&b, "multi:1", "echo $SEEN $LATER; test -e /out || echo no-out"), "unset after\nno-out\n");
}

#[test]
fn user_and_workdir_take_effect_under_run() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!("FROM {}\nWORKDIR /../../app\nWORKDIR sub\nRUN touch made-here\nUSER 1234:5678\n", b.image);
    let ctx = context(&b, "ctx", &[("Dockerfile", &df)]);
    build_ok(&b, &ctx, &["-t", "userdir"]);
    assert_eq!(run_sh(&b, "userdir", "pwd; id -u; id -g; ls"), "/app/sub\n1234\n5678\nmade-here\n");
    let cfg = &b.inspect("userdir")["Config"];
    assert_eq!(cfg["User"], "1234:5678");
    assert_eq!(cfg["WorkingDir"], "/app/sub");
}

#[test]
fn a_file_deleted_in_a_later_layer_is_absent_when_run() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!(
        "FROM {}\nRUN echo x > /gone && mkdir -p /d/old && echo o > /d/old/f\nRUN rm /gone && rm -rf /d && mkdir /d && echo n > /d/new\n",
        b.image
    );
    let ctx = context(&b, "ctx", &[("Dockerfile", &df)]);
    build_ok(&b, &ctx, &["-t", "deleted"]);
    assert_eq!(run_sh(&b, "deleted", "test -e /gone || echo absent; ls /d"), "absent\nnew\n");
}

#[test]
fn dockerignore_excludes_a_file_from_copy() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!("FROM {}\nCOPY . /ctx/\n", b.image);
    let ctx = context(
        &b,
        "ctx",
        &[
            ("Dockerfile", &df),
            ("keep.txt", "k"),
            ("secret.txt", "s"),
            ("sub/x", "x"),
            (".dockerignore", "secret.txt\nsub\n"),
        ],
    );
    build_ok(&b, &ctx, &["-t", "ignored"]);
    assert_eq!(run_sh(&b, "ignored", "ls -A /ctx"), ".dockerignore\nDockerfile\nkeep.txt\n");
}

#[test]
fn copy_refuses_paths_outside_the_context() {
    let b = Berth::new();
    let df = format!("FROM {}\nCOPY ../outside /x\n", b.image);
    let ctx = context(&b, "ctx", &[("Dockerfile", &df)]);
    b.ok(&["pull", &b.image]);
    let out = build(&b, &ctx, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("outside the build context"), "{err}");
}

#[test]
fn a_second_build_is_fully_cached() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!(
        "FROM {}\nENV A=1\nRUN --mount=type=cache,target=/cache echo ran >> /cache/count && echo layer > /l\nCOPY f /f\n",
        b.image
    );
    let ctx = context(&b, "ctx", &[("Dockerfile", &df), ("f", "content")]);
    build_ok(&b, &ctx, &["-t", "cached"]);
    let first = b.inspect("cached")["Id"].clone();
    assert_eq!(cache_mount_file(&b, "count"), "ran\n");
    let log = build_ok(&b, &ctx, &["-t", "cached"]);
    assert_eq!(cache_mount_file(&b, "count"), "ran\n", "the RUN ran again:\n{log}");
    assert_eq!(log.matches("CACHED").count(), 2, "{log}");
    assert_eq!(b.inspect("cached")["Id"], first, "a fully cached build gives the same image");
    // --no-cache runs it again.
    build_ok(&b, &ctx, &["-t", "cached", "--no-cache"]);
    assert_eq!(cache_mount_file(&b, "count"), "ran\nran\n");
}

#[test]
fn a_changed_context_file_rebuilds_only_the_steps_after_its_copy() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!(
        "FROM {}\n\
         RUN --mount=type=cache,target=/c echo before >> /c/log\n\
         COPY f /f\n\
         RUN --mount=type=cache,target=/c echo after >> /c/log && cat /f > /copy\n",
        b.image
    );
    let ctx = context(&b, "ctx", &[("Dockerfile", &df), ("f", "one")]);
    build_ok(&b, &ctx, &["-t", "changed"]);
    assert_eq!(cache_mount_file(&b, "log"), "before\nafter\n");
    std::fs::write(ctx.join("f"), "two").unwrap();
    build_ok(&b, &ctx, &["-t", "changed"]);
    assert_eq!(cache_mount_file(&b, "log"), "before\nafter\nafter\n");
    assert_eq!(run_sh(&b, "changed", "cat /copy"), "two");
    // Same content, new mtime: still cached.
    std::fs::write(ctx.join("f"), "two").unwrap();
    build_ok(&b, &ctx, &["-t", "changed"]);
    assert_eq!(cache_mount_file(&b, "log"), "before\nafter\nafter\n");
}

#[test]
fn a_failing_run_names_its_exit_code_and_leaves_nothing_behind() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!("FROM {}\nRUN echo partial > /p\nRUN exit 3\n", b.image);
    let ctx = context(&b, "ctx", &[("Dockerfile", &df)]);
    let out = build(&b, &ctx, &["-t", "failing"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("process \"/bin/sh -c exit 3\" did not complete successfully: exit code: 3"), "{err}");
    assert!(b.cmd(&["image", "inspect", "failing"]).status.code() != Some(0), "a failed build was tagged");
    let mounts = common::leftovers(b.dir.path());
    assert!(mounts.is_empty(), "mounts left: {mounts:#?}");
    let work: Vec<_> = std::fs::read_dir(b.dir.path().join("root/build")).unwrap().collect();
    assert!(work.is_empty(), "build directories left: {work:?}");
    let mut cgroups = Vec::new();
    for d in b.cgroup().dirs() {
        cgroups.extend(std::fs::read_dir(d).unwrap().flatten().filter(|e| e.path().is_dir()).map(|e| e.path()));
    }
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    let inspect: serde_json::Value = serde_json::from_str(&b.ok(&["network", "inspect", "bridge"])).unwrap();
    assert_eq!(inspect[0]["Containers"], serde_json::json!([]), "the failed step's address was not given back");
}

#[test]
fn source_date_epoch_gives_byte_equal_images() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!("FROM {}\nRUN echo hi > /hi && mkdir /d\nCOPY f /d/f\nENV X=1\n", b.image);
    let ctx = context(&b, "ctx", &[("Dockerfile", &df), ("f", "data")]);
    let mut ids = Vec::new();
    for tag in ["epoch:1", "epoch:2"] {
        let mut c = b.command();
        c.args(["build", "--no-cache", "-q", "-t", tag]).arg(&ctx).env("SOURCE_DATE_EPOCH", "1700000000");
        let out = berth_testkit::output_via_files(&mut c);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        ids.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    assert!(ids[0].starts_with("sha256:"), "{ids:?}");
    assert_eq!(ids[0], ids[1]);
    assert_eq!(b.inspect("epoch:1")["Created"], "2023-11-14T22:13:20Z");
    // The cache keeps builds with and without it apart.
    build_ok(&b, &ctx, &["-t", "plain"]);
    assert_ne!(b.inspect("plain")["Created"], "2023-11-14T22:13:20Z", "took the epoch build's steps");
    let mut c = b.command();
    c.args(["build", "-q", "-t", "epoch:3"]).arg(&ctx).env("SOURCE_DATE_EPOCH", "1700000000");
    let out = berth_testkit::output_via_files(&mut c);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), ids[0]);
}

#[test]
fn a_syntax_error_names_the_file_and_line() {
    let b = Berth::new();
    let df = format!("FROM {}\nRUN true\nNOSUCH x\n", b.image);
    let ctx = context(&b, "ctx", &[("Dockerfile", &df)]);
    let out = build(&b, &ctx, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Dockerfile:3"), "{err}");
}

#[test]
fn a_built_image_is_pushed_and_pulled_back() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!("FROM {}\nRUN echo pushed > /p\n", b.image);
    let ctx = context(&b, "ctx", &[("Dockerfile", &df)]);
    let (registry, _) = b.image.split_once('/').unwrap();
    let name = format!("{registry}/built:1");
    build_ok(&b, &ctx, &["-t", &name]);
    b.ok(&["push", &name]);
    b.ok(&["rmi", &name]);
    b.ok(&["pull", &name]);
    assert_eq!(run_sh(&b, &name, "cat /p"), "pushed\n");
}

#[test]
fn a_killed_build_is_cleaned_up_by_the_next_one() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!("FROM {}\nRUN --mount=type=cache,target=/c touch /c/started && sleep 1000\n", b.image);
    let ctx = context(&b, "ctx", &[("Dockerfile", &df)]);
    let mut c = b.command();
    c.arg("build").arg(&ctx).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut child = c.spawn().unwrap();
    // Until the step runs (bounded: a build that never gets there fails).
    let mut waited = 0;
    while cache_mount_file_exists(&b, "started").is_none() {
        assert!(waited < 1200, "the RUN never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
        waited += 1;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!common::leftovers(b.dir.path()).is_empty(), "the killed build should have left its overlay");

    let ctx2 = context(&b, "ctx2", &[("Dockerfile", &format!("FROM {}\nRUN true\n", b.image))]);
    build_ok(&b, &ctx2, &[]);
    let mounts = common::leftovers(b.dir.path());
    assert!(mounts.is_empty(), "mounts left: {mounts:#?}");
    let work: Vec<_> = std::fs::read_dir(b.dir.path().join("root/build")).unwrap().collect();
    assert!(work.is_empty(), "build directories left: {work:?}");
    assert!(b.cgroup().procs().is_empty(), "the step's processes survived");
    let mut cgroups = Vec::new();
    for d in b.cgroup().dirs() {
        cgroups.extend(std::fs::read_dir(d).unwrap().flatten().filter(|e| e.path().is_dir()).map(|e| e.path()));
    }
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    let inspect: serde_json::Value = serde_json::from_str(&b.ok(&["network", "inspect", "bridge"])).unwrap();
    assert_eq!(inspect[0]["Containers"], serde_json::json!([]), "the killed step's address was not given back");
}

fn cache_mount_file_exists(b: &Berth, name: &str) -> Option<PathBuf> {
    let dir = b.dir.path().join("root/build-cache-mounts");
    std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path().join(name)).find(|p| p.exists())
}

#[test]
fn copy_does_not_follow_a_symlink_out_of_the_context() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!("FROM {}\nCOPY link/passwd /x\n", b.image);
    let ctx = context(&b, "ctx", &[("Dockerfile", &df)]);
    std::os::unix::fs::symlink("/etc", ctx.join("link")).unwrap();
    let out = build(&b, &ctx, &[]);
    assert_eq!(out.status.code(), Some(1), "the host's /etc/passwd was copied");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn onbuild_triggers_run_in_the_next_build_only() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let parent =
        context(&b, "parent", &[("Dockerfile", &format!("FROM {}\nONBUILD RUN echo triggered > /t\n", b.image))]);
    build_ok(&b, &parent, &["-t", "parent"]);
    assert_eq!(b.inspect("parent")["Config"]["OnBuild"], serde_json::json!(["RUN echo triggered > /t"]));
    assert_eq!(run_sh(&b, "parent", "test -e /t || echo none"), "none\n");
    let child = context(&b, "child", &[("Dockerfile", "FROM parent\nRUN cat /t > /seen\n")]);
    build_ok(&b, &child, &["-t", "child"]);
    assert_eq!(run_sh(&b, "child", "cat /seen"), "triggered\n");
    assert!(b.inspect("child")["Config"]["OnBuild"].as_array().is_none_or(|a| a.is_empty()));
}

#[test]
fn the_cache_survives_image_prune_and_builder_prune_drops_it() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!("FROM {}\nRUN --mount=type=cache,target=/c echo ran >> /c/count && echo x > /x\n", b.image);
    let ctx = context(&b, "ctx", &[("Dockerfile", &df)]);
    build_ok(&b, &ctx, &["-t", "kept"]);
    b.ok(&["rmi", "kept"]);
    b.ok(&["image", "prune", "-a", "-f"]);
    b.ok(&["pull", &b.image]);
    build_ok(&b, &ctx, &["-t", "kept"]);
    assert_eq!(cache_mount_file(&b, "count"), "ran\n", "image prune dropped the build cache");
    b.ok(&["rmi", "kept"]);
    let out = b.ok(&["builder", "prune", "-f"]);
    assert!(out.starts_with("Total:"), "{out}");
    assert_eq!(cache_mount_file(&b, "count"), "", "builder prune kept the cache mounts");
    build_ok(&b, &ctx, &["-t", "kept"]);
    assert_eq!(cache_mount_file(&b, "count"), "ran\n", "builder prune kept the step cache");
}

/// The interfaces a RUN saw, as it wrote them into the image.
const LIST_IFACES: &str = "awk -F: 'NR>2 {gsub(/ /, \"\", $1); print $1}' /proc/net/dev | sort | tr '\\n' ' '";

#[test]
fn run_steps_get_docker_s_networks() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!(
        "FROM {}\nRUN {LIST_IFACES} > /default\nRUN --network=none {LIST_IFACES} > /none\nRUN --network=host {LIST_IFACES} > /host\n",
        b.image
    );
    let ctx = context(&b, "ctx", &[("Dockerfile", &df)]);
    build_ok(&b, &ctx, &["-t", "nets"]);
    assert_eq!(run_sh(&b, "nets", "cat /default; echo; cat /none"), "eth0 lo \nlo ");
    // The host's network: its interfaces, the bridge the first step was
    // attached to among them (others come and go on a shared host).
    let inspect = b.ok(&["network", "inspect", "bridge"]);
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let bridge = v[0]["Options"]["com.docker.network.bridge.name"].as_str().unwrap().to_string();
    let seen = run_sh(&b, "nets", "cat /host");
    assert!(seen.split(' ').any(|i| i == bridge), "{bridge} not in {seen}");
    // The steps' addresses were given back.
    assert!(v[0]["Containers"].as_array().is_some_and(|c| c.is_empty()), "{inspect}");
}

#[test]
fn heredocs_run_as_scripts_and_copy_as_files() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!(
        "FROM {}\nARG WHO=you\nRUN <<EOF\necho one > /one\necho two > /two\nEOF\nCOPY <<EOF /greeting\nhello $WHO\nEOF\nCOPY <<'EOF' /raw\nhello $WHO\nEOF\n",
        b.image
    );
    let ctx = context(&b, "ctx", &[("Dockerfile", &df)]);
    build_ok(&b, &ctx, &["-t", "heredocs"]);
    assert_eq!(run_sh(&b, "heredocs", "cat /one /two /greeting /raw"), "one\ntwo\nhello you\nhello $WHO\n");
}

#[test]
fn target_builds_only_the_stages_it_needs() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!(
        "FROM {0} AS first\nRUN echo first > /f\n\
         FROM {0} AS unused\nRUN --mount=type=cache,target=/c echo ran >> /c/unused\n\
         FROM first AS second\nRUN echo second >> /f\n\
         FROM {0}\nRUN --mount=type=cache,target=/c echo ran >> /c/last\n",
        b.image
    );
    let ctx = context(&b, "ctx", &[("Dockerfile", &df)]);
    let iid = b.dir.path().join("iid");
    build_ok(&b, &ctx, &["-t", "targeted", "--target", "second", "--iidfile", iid.to_str().unwrap()]);
    assert_eq!(run_sh(&b, "targeted", "cat /f"), "first\nsecond\n");
    assert!(!b.dir.path().join("root/build-cache-mounts").exists(), "a stage the target does not need ran");
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), b.inspect("targeted")["Id"].as_str().unwrap());
    let out = build(&b, &ctx, &["--target", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("target stage \"nosuch\" could not be found"));
}

#[test]
fn copy_chown_chmod_and_add_unpacks_a_local_tar() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!(
        "FROM {}\nCOPY --chown=12:34 --chmod=640 f /owned/f\nCOPY d /dir/\nADD t.tar /unpacked/\nCOPY t.tar /kept/\n",
        b.image
    );
    let ctx =
        context(&b, "ctx", &[("Dockerfile", &df), ("f", "f"), ("d/a", "a"), ("d/sub/b", "b"), ("tree/in-tar", "t")]);
    let tar = std::process::Command::new("tar")
        .arg("-C")
        .arg(ctx.join("tree"))
        .args(["-cf"])
        .arg(ctx.join("t.tar"))
        .arg(".")
        .status()
        .unwrap();
    assert!(tar.success());
    build_ok(&b, &ctx, &["-t", "copied"]);
    let out = run_sh(&b, "copied", "stat -c '%u:%g %a' /owned/f; ls -R /dir; cat /unpacked/in-tar; ls /kept");
    assert_eq!(out, "12:34 640\n/dir:\na\nsub\n\n/dir/sub:\nb\ntt.tar\n");
}

#[test]
fn a_context_tar_on_stdin() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!("FROM {}\nCOPY hello /hello\n", b.image);
    let ctx = context(&b, "ctx", &[("Dockerfile", &df), ("hello", "from stdin")]);
    let tar = std::process::Command::new("tar").arg("-C").arg(&ctx).args(["-cf", "-", "."]).output().unwrap();
    assert!(tar.status.success());
    let input = b.dir.path().join("ctx.tar");
    std::fs::write(&input, &tar.stdout).unwrap();
    let mut c = b.command();
    c.args(["build", "-t", "stdin", "-"]).stdin(std::fs::File::open(&input).unwrap());
    // (output_via_files would take stdin away.)
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(run_sh(&b, "stdin", "cat /hello"), "from stdin");
    let work: Vec<_> = std::fs::read_dir(b.dir.path().join("root/build")).unwrap().collect();
    assert!(work.is_empty(), "the unpacked context was left: {work:?}");
    assert!(
        !std::fs::read_dir(b.dir.path().join("root")).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("context-"))
    );
}

#[test]
fn run_bind_mounts_from_a_stage_and_the_context_leave_no_stubs() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!(
        "FROM {0} AS tools\nRUN echo tool > /tool\n\
         FROM {0}\n\
         RUN --mount=type=bind,from=tools,source=/tool,target=/mnt/tool cat /mnt/tool > /seen\n\
         RUN --mount=type=bind,source=input,target=/in --mount=type=cache,target=/c cat /in >> /c/log && cat /in > /copied\n",
        b.image
    );
    let ctx = context(&b, "ctx", &[("Dockerfile", &df), ("input", "one\n")]);
    build_ok(&b, &ctx, &["-t", "binds"]);
    assert_eq!(
        run_sh(&b, "binds", "cat /seen /copied; test -e /mnt || test -e /in || echo no-stubs"),
        "tool\none\nno-stubs\n"
    );
    // A bound context file is part of the step's key.
    std::fs::write(ctx.join("input"), "two\n").unwrap();
    build_ok(&b, &ctx, &["-t", "binds"]);
    assert_eq!(cache_mount_file(&b, "log"), "one\ntwo\n");
    assert_eq!(run_sh(&b, "binds", "cat /copied"), "two\n");
}

/// The image config as stored (history included).
fn config_of(b: &Berth, image: &str) -> serde_json::Value {
    let id = b.inspect(image)["Id"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let bytes = std::fs::read(b.dir.path().join("root/content/sha256").join(id)).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn predefined_proxy_args_reach_run_but_not_the_history() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!("FROM {}\nARG MODE=fast\nRUN echo \"$HTTP_PROXY $MODE\" > /seen\nENV E=1\n", b.image);
    let ctx = context(&b, "ctx", &[("Dockerfile", &df)]);
    build_ok(&b, &ctx, &["-t", "proxied", "--build-arg", "HTTP_PROXY=http://proxy.invalid:3128"]);
    assert_eq!(run_sh(&b, "proxied", "cat /seen"), "http://proxy.invalid:3128 fast\n");
    let cfg = config_of(&b, "proxied");
    let history: Vec<String> =
        cfg["history"].as_array().unwrap().iter().map(|h| h["created_by"].as_str().unwrap_or("").to_string()).collect();
    assert!(history.iter().all(|h| !h.contains("proxy.invalid")), "{history:#?}");
    assert!(
        history.iter().any(|h| h == "RUN |1 MODE=fast /bin/sh -c echo \"$HTTP_PROXY $MODE\" > /seen"),
        "{history:#?}"
    );
    let last = cfg["history"].as_array().unwrap().last().unwrap();
    assert_eq!(last["empty_layer"], true);
    let layers = cfg["history"].as_array().unwrap().iter().filter(|h| h["empty_layer"] != true).count();
    assert_eq!(layers, cfg["rootfs"]["diff_ids"].as_array().unwrap().len());
    // Another proxy: still cached, as docker keeps proxies out of the key.
    let log = build_ok(&b, &ctx, &["-t", "proxied", "--build-arg", "HTTP_PROXY=http://other.invalid:3128"]);
    assert_eq!(log.matches("CACHED").count(), 1, "{log}");
}

#[test]
fn from_scratch_with_a_binary_copied_from_another_image() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!(
        "FROM scratch\nCOPY --from={} /bin/busybox /bin/busybox\nCMD [\"/bin/busybox\", \"echo\", \"from scratch\"]\n",
        b.image
    );
    let ctx = context(&b, "ctx", &[("Dockerfile", &df)]);
    build_ok(&b, &ctx, &["-t", "scratchy"]);
    assert_eq!(b.ok(&["run", "--rm", "scratchy"]), "from scratch\n");
    let bad = context(&b, "bad", &[("Dockerfile", "FROM scratch\nCOPY --parents a/b /x/\n")]);
    let out = build(&b, &bad, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--parents is not supported yet"));
}

#[test]
fn platform_args_and_from_platform() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!(
        "FROM --platform=$BUILDPLATFORM {}\nARG TARGETARCH\nARG TARGETOS\nRUN echo $TARGETOS/$TARGETARCH > /p\n",
        b.image
    );
    let ctx = context(&b, "ctx", &[("Dockerfile", &df)]);
    build_ok(&b, &ctx, &["-t", "plat"]);
    let inspect = b.inspect("plat");
    let want = format!("{}/{}\n", inspect["Os"].as_str().unwrap(), inspect["Architecture"].as_str().unwrap());
    assert_eq!(run_sh(&b, "plat", "cat /p"), want);
    let other = if want.contains("amd64") { "linux/arm64" } else { "linux/amd64" };
    let bad = context(&b, "bad", &[("Dockerfile", &format!("FROM --platform={other} {}\n", b.image))]);
    let out = build(&b, &bad, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("this machine's platform"));
}

#[test]
fn concurrent_builds_on_one_root_all_succeed_with_one_result() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!("FROM {}\nRUN echo same > /s\nCOPY f /f\nRUN cat /f >> /s\n", b.image);
    let ctx = context(&b, "ctx", &[("Dockerfile", &df), ("f", "file\n")]);
    let children: Vec<_> = ["race:1", "race:2", "race:3"]
        .iter()
        .map(|t| {
            let mut c = b.command();
            c.args(["build", "-q", "-t", t]).arg(&ctx);
            c.env("SOURCE_DATE_EPOCH", "1700000000");
            c.stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    let mut ids = Vec::new();
    for ch in children {
        let out = ch.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        ids.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    assert!(ids.iter().all(|i| i == &ids[0]), "{ids:?}");
    assert_eq!(run_sh(&b, "race:3", "cat /s"), "same\nfile\n");
    assert!(common::leftovers(b.dir.path()).is_empty());
}

#[test]
fn output_writes_an_archive_that_loads_elsewhere() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!("FROM {}\nRUN echo exported > /e\n", b.image);
    let ctx = context(&b, "ctx", &[("Dockerfile", &df)]);
    let dest = b.dir.path().join("out.tar");
    let dest_arg = format!("type=oci,dest={}", dest.display());
    build_ok(&b, &ctx, &["-t", "exported:1", "--output", &dest_arg]);
    b.ok(&["rmi", "exported:1"]);
    b.ok(&["load", "-i", dest.to_str().unwrap()]);
    let id = b.inspect("exported:1")["Id"].as_str().unwrap().to_string();
    assert_eq!(run_sh(&b, &id, "cat /e"), "exported\n");
}

#[test]
fn secret_and_tmpfs_mounts_are_seen_by_run_and_not_kept() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!(
        "FROM {}\n\
         RUN --mount=type=secret,id=tok test \"$(cat /run/secrets/tok)\" = s3cret && echo ok > /ok\n\
         RUN --mount=type=tmpfs,target=/scratch touch /scratch/x && echo tmp > /tmp-ok\n",
        b.image
    );
    let ctx = context(&b, "ctx", &[("Dockerfile", &df)]);
    let secret = b.dir.path().join("secret");
    std::fs::write(&secret, "s3cret").unwrap();
    let arg = format!("id=tok,src={}", secret.display());
    build_ok(&b, &ctx, &["-t", "secrets", "--secret", &arg]);
    assert_eq!(
        run_sh(&b, "secrets", "cat /ok /tmp-ok; test -e /run/secrets || test -e /scratch || echo gone"),
        "ok\ntmp\ngone\n"
    );
    let df2 = format!("FROM {}\nRUN --mount=type=secret,id=missing,required=true true\n", b.image);
    let ctx2 = context(&b, "ctx2", &[("Dockerfile", &df2)]);
    let out = build(&b, &ctx2, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("secret missing: not provided"));
}

#[test]
fn cache_mounts_take_their_owner_and_mode() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!(
        "FROM {}\nUSER 1000:1000\nRUN --mount=type=cache,target=/home/c,uid=1000,gid=1000,mode=0700,sharing=locked touch /home/c/mine\n",
        b.image
    );
    let ctx = context(&b, "ctx", &[("Dockerfile", &df)]);
    build_ok(&b, &ctx, &["-t", "cachemode"]);
    let dir = std::fs::read_dir(b.dir.path().join("root/build-cache-mounts")).unwrap().next().unwrap().unwrap().path();
    let m = std::fs::metadata(dir.join("mine")).unwrap();
    assert_eq!((std::os::unix::fs::MetadataExt::uid(&m), std::os::unix::fs::MetadataExt::gid(&m)), (1000, 1000));
    let d = std::fs::metadata(&dir).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::mode(&d) & 0o7777, 0o700);
}

/// A one-file HTTP server on a free loopback port, for ADD URL: serves
/// `body` at `/files/payload.txt`, 404 elsewhere; lives as long as the test.
fn http_server(body: &'static str) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let ok = String::from_utf8_lossy(&req).starts_with("GET /files/payload.txt ");
            let (status, body) = if ok { ("200 OK", body) } else { ("404 Not Found", "") };
            let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
    });
    format!("http://{addr}")
}

#[test]
fn add_fetches_a_url_and_checks_its_checksum() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let base = http_server("remote content\n");
    let sum = berth_testkit::image::sha256(b"remote content\n");
    let df = format!(
        "FROM {}\nADD {base}/files/payload.txt /downloaded/\nADD --checksum={sum} {base}/files/payload.txt /checked\n",
        b.image
    );
    let ctx = context(&b, "ctx", &[("Dockerfile", &df)]);
    build_ok(&b, &ctx, &["-t", "fetched"]);
    assert_eq!(
        run_sh(&b, "fetched", "cat /downloaded/payload.txt /checked; stat -c %a /checked"),
        "remote content\nremote content\n600\n"
    );
    let bad = context(
        &b,
        "bad",
        &[(
            "Dockerfile",
            &format!("FROM {}\nADD --checksum=sha256:{} {base}/files/payload.txt /x\n", b.image, "0".repeat(64)),
        )],
    );
    let out = build(&b, &bad, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("digest mismatch"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let missing = context(&b, "missing", &[("Dockerfile", &format!("FROM {}\nADD {base}/nosuch.txt /x\n", b.image))]);
    let out = build(&b, &missing, &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn config_instructions_land_in_the_image_config() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!(
        "FROM {}\nARG PORT=8080\nLABEL a=1 \"b c\"=\"d e\"\nEXPOSE $PORT 53/UDP\nVOLUME [\"/data\"]\nSTOPSIGNAL SIGINT\n\
         HEALTHCHECK --interval=5s --retries=2 CMD true\nSHELL [\"/bin/sh\", \"-ec\"]\nENTRYPOINT echo entry\nMAINTAINER someone\n",
        b.image
    );
    let ctx = context(&b, "ctx", &[("Dockerfile", &df)]);
    build_ok(&b, &ctx, &["-t", "configured", "--label", "from=cli"]);
    let cfg = config_of(&b, "configured");
    let c = &cfg["config"];
    assert_eq!(c["Labels"], serde_json::json!({"a": "1", "b c": "d e", "from": "cli"}));
    assert_eq!(c["ExposedPorts"], serde_json::json!({"8080/tcp": {}, "53/udp": {}}));
    assert_eq!(c["Volumes"], serde_json::json!({"/data": {}}));
    assert_eq!(c["StopSignal"], "SIGINT");
    assert_eq!(
        c["Healthcheck"],
        serde_json::json!({"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000u64, "Retries": 2})
    );
    assert_eq!(c["Shell"], serde_json::json!(["/bin/sh", "-ec"]));
    // The shell form goes through SHELL; an inherited CMD is dropped.
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh", "-ec", "echo entry"]));
    assert!(c["Cmd"].is_null(), "{c}");
    assert_eq!(cfg["author"], "someone");
    assert_eq!(b.ok(&["run", "--rm", "configured"]), "entry\n");
}

#[test]
fn independent_stages_build_at_the_same_time() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    // Each stage's RUN waits (bounded) for the other's mark: built one
    // after the other, the first would give up and fail the build.
    let wait = |me: &str, other: &str| {
        format!(
            "RUN --mount=type=cache,id=rendezvous,target=/s touch /s/{me} && \
             i=0; while [ ! -e /s/{other} ]; do i=$((i+1)); [ $i -lt 600 ] || exit 7; sleep 0.1; done; echo {me} > /{me}\n"
        )
    };
    let df = format!(
        "FROM {0} AS left\n{1}FROM {0} AS right\n{2}FROM {0}\nCOPY --from=left /left /\nCOPY --from=right /right /\n",
        b.image,
        wait("left", "right"),
        wait("right", "left")
    );
    let ctx = context(&b, "ctx", &[("Dockerfile", &df)]);
    build_ok(&b, &ctx, &["-t", "parallel"]);
    assert_eq!(run_sh(&b, "parallel", "cat /left /right"), "left\nright\n");
}

#[test]
fn copy_heredocs_keep_quotes_and_mix_with_context_files() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!(
        "FROM {}\nARG WHO=you\nCOPY <<EOF /quoted\nsay \"$WHO\" it's '${{WHO}}' \\$WHO\nEOF\nCOPY a <<EOF /d/\nfrom heredoc\nEOF\n",
        b.image
    );
    let ctx = context(&b, "ctx", &[("Dockerfile", &df), ("a", "from the context\n")]);
    build_ok(&b, &ctx, &["-t", "mixed"]);
    // BuildKit: quotes are the file's, only $ and \ are the builder's.
    assert_eq!(run_sh(&b, "mixed", "cat /quoted"), "say \"you\" it's 'you' $WHO\n");
    assert_eq!(run_sh(&b, "mixed", "cat /d/a /d/EOF; ls /d"), "from the context\nfrom heredoc\nEOF\na\n");
}

#[test]
fn run_heredocs_with_a_shebang_or_a_spaced_delimiter_run_their_body() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!(
        "FROM {}\n\
         RUN <<EOF\n#!/bin/awk -f\nBEGIN {{ print \"awk ran\" > \"/by-awk\" }}\nEOF\n\
         RUN << EOF\necho spaced > /spaced\nEOF\n\
         RUN mkdir -m 777 /w\n\
         USER 1234\n\
         RUN <<SCRIPT\n#!/bin/sh\necho \"$0 $(id -u)\" > /w/who\nSCRIPT\n",
        b.image
    );
    let ctx = context(&b, "ctx", &[("Dockerfile", &df)]);
    build_ok(&b, &ctx, &["-t", "shebang"]);
    assert_eq!(run_sh(&b, "shebang", "cat /by-awk /spaced /w/who"), "awk ran\nspaced\n/dev/pipes/SCRIPT 1234\n");
}

#[test]
fn copy_from_refuses_variables() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!("FROM {0} AS a\nRUN echo a > /a\nFROM {0}\nARG X=a\nCOPY --from=$X /a /a\n", b.image);
    let ctx = context(&b, "ctx", &[("Dockerfile", &df)]);
    let out = build(&b, &ctx, &["-t", "fromvar"]);
    assert_eq!(out.status.code(), Some(1), "COPY --from=$X was expanded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround"),
        "{err}"
    );
    assert!(err.contains("Dockerfile:5"), "{err}");
}

#[test]
fn system_prune_drops_the_build_cache() {
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!("FROM {}\nRUN --mount=type=cache,target=/c echo ran >> /c/count && echo x > /x\n", b.image);
    let ctx = context(&b, "ctx", &[("Dockerfile", &df)]);
    build_ok(&b, &ctx, &["-t", "pruned"]);
    assert_eq!(cache_mount_file(&b, "count"), "ran\n");
    b.ok(&["rmi", "pruned"]);
    b.ok(&["system", "prune", "-a", "-f"]);
    assert_eq!(cache_mount_file(&b, "count"), "", "system prune kept the cache mounts");
    b.ok(&["pull", &b.image]);
    let log = build_ok(&b, &ctx, &["-t", "pruned"]);
    assert!(!log.contains("CACHED"), "system prune kept the step cache:\n{log}");
    assert_eq!(cache_mount_file(&b, "count"), "ran\n");
}

/// podman's own storage for one test, under the test's directory; what
/// its containers mounted is unmounted when it ends (the directory goes
/// with the test's).
struct Podman {
    dir: PathBuf,
}

impl Podman {
    fn command(&self) -> std::process::Command {
        let mut c = std::process::Command::new("podman");
        c.arg("--root").arg(self.dir.join("root")).arg("--runroot").arg(self.dir.join("run"));
        c.arg("--tmpdir").arg(self.dir.join("tmp")).args(["--storage-driver", "vfs", "--events-backend", "file"]);
        c.args(["--cgroup-manager", "cgroupfs"]);
        c
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for m in common::leftovers(&self.dir).iter().rev() {
            if let Some(point) = m.split_whitespace().nth(4) {
                let _ = nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn podman_runs_a_pushed_built_image() {
    if std::process::Command::new("podman").arg("--version").output().is_err() {
        eprintln!("skipped: podman is not installed");
        return;
    }
    let b = Berth::new();
    b.ok(&["pull", &b.image]);
    let df = format!("FROM {}\nRUN echo written by a berth RUN > /made\nCMD [\"cat\", \"/made\"]\n", b.image);
    let ctx = context(&b, "ctx", &[("Dockerfile", &df)]);
    let (registry, _) = b.image.split_once('/').unwrap();
    let name = format!("{registry}/for-podman:1");
    build_ok(&b, &ctx, &["-t", &name]);
    b.ok(&["push", &name]);
    let podman = Podman { dir: b.dir.path().join("podman") };
    let mut c = podman.command();
    // No cgroup of podman's (none outside this test's own parent), no network.
    c.args(["run", "--rm", "--tls-verify=false", "--network", "none", "--cgroups=disabled", "--runtime", "crun"]);
    // Low limits: podman would raise them, which root here cannot (no
    // CAP_SYS_RESOURCE); lowering is always allowed.
    use nix::sys::resource::{Resource, getrlimit};
    for (name, r) in [("nofile", Resource::RLIMIT_NOFILE), ("nproc", Resource::RLIMIT_NPROC)] {
        let low = getrlimit(r).unwrap().0.min(1024);
        c.arg("--ulimit").arg(format!("{name}={low}:{low}"));
    }
    c.arg(&name);
    let out = berth_testkit::output_via_files(&mut c);
    assert!(out.status.success(), "podman run: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "written by a berth RUN\n");
}
