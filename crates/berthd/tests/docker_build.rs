//! `POST /build` and `/build/prune` on berth's builder, driven by the real
//! docker CLIs (classic builder: `DOCKER_BUILDKIT=0`) and docker-py: the
//! image runs with what RUN, COPY, ENV and CMD put in it, a second build
//! is cached, `docker builder prune` drops the cache, a Dockerfile error
//! names its line, BuildKit's protocol gets a clear refusal, and the image
//! is the berth CLI's too.

#[path = "common/docker_node.rs"]
mod docker_node;

use std::path::Path;
use std::process::{Command, Output};

use berth_testkit::in_test_host;
use docker_node::{DOCKER_20, Node, newest, stderr, tail};

fn classic(n: &Node, cli: &str, args: &[&str]) -> Output {
    let mut c = n.docker_cmd(cli);
    c.env("DOCKER_BUILDKIT", "0").args(args);
    berth_testkit::output_via_files(&mut c)
}

fn classic_ok(n: &Node, cli: &str, args: &[&str]) -> String {
    let out = classic(n, cli, args);
    assert!(
        out.status.success(),
        "{cli} {args:?}: {}\n{}\nberthd log (tail):\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out),
        tail(&n.d.stderr(), 40)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A context: a Dockerfile FROM the node's busybox that RUNs, COPYs a
/// context file and sets ENV and CMD; and a file the build must not see.
fn context(n: &Node, dir: &Path) {
    std::fs::write(dir.join("msg.txt"), "from the context\n").unwrap();
    std::fs::write(dir.join("secret.txt"), "ignored\n").unwrap();
    std::fs::write(dir.join(".dockerignore"), "secret.txt\n").unwrap();
    let df = format!(
        "FROM {}\nENV GREETING=hello\nCOPY msg.txt /msg.txt\nRUN echo ran-at-build > /built && echo run-output-line\n\
         CMD [\"sh\", \"-c\", \"echo $GREETING; cat /msg.txt /built; ls /secret.txt 2>&1 || true\"]\n",
        n.image
    );
    std::fs::write(dir.join("Dockerfile"), df).unwrap();
}

/// Whether the RUN step ran (its output, not its command line, is there).
fn ran_here(out: &str) -> bool {
    out.lines().any(|l| l.trim() == "run-output-line")
}

fn scratch_is_empty(n: &Node) {
    let dir = n.root().join("docker-scratch");
    let left: Vec<_> = std::fs::read_dir(&dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", dir.display());
}

#[test]
fn docker_build_with_both_clis_runs_caches_and_prunes() {
    in_test_host(|| {
        let n = Node::start();
        let work = tempfile::tempdir().unwrap();
        let dir = work.path();
        context(&n, dir);
        let ctx = dir.to_str().unwrap();

        let out = classic_ok(&n, DOCKER_20, &["build", "-t", "x:1", ctx]);
        assert!(out.contains("Step 1/5 : FROM"), "{out}");
        assert!(out.contains("Step 4/5 : RUN echo ran-at-build"), "{out}");
        // Every instruction is a step, as the classic builder shows them.
        assert!(out.contains("Step 2/5 : ENV GREETING=hello\nStep 3/5 : COPY msg.txt /msg.txt"), "{out}");
        assert!(out.contains("Step 5/5 : CMD"), "{out}");
        assert!(ran_here(&out), "the RUN's output is streamed: {out}");
        assert!(out.contains("Successfully built "), "{out}");
        assert!(out.contains("Successfully tagged x:1"), "{out}");
        assert!(!out.contains("Using cache"), "a first build has no cache: {out}");

        let ran = n.docker_ok(DOCKER_20, &["run", "--rm", "x:1"]);
        assert!(ran.starts_with("hello\nfrom the context\nran-at-build\n"), "{ran}");
        assert!(ran.contains("No such file"), ".dockerignore keeps secret.txt out: {ran}");

        // The same build again, with the newest CLI: COPY and RUN cached.
        let again = classic_ok(&n, newest(), &["build", "-t", "x:2", ctx]);
        assert_eq!(again.matches("Using cache").count(), 2, "{again}");
        assert!(!ran_here(&again), "a cached RUN does not run: {again}");
        assert_eq!(n.docker_ok(newest(), &["run", "--rm", "x:2"]), ran);

        // The berth CLI on the same root sees the images.
        let images = n.berth_ok(&["images"]);
        assert!(images.lines().any(|l| l.starts_with("x ") && l.contains(" 1 ")), "{images}");
        assert!(images.lines().any(|l| l.starts_with("x ") && l.contains(" 2 ")), "{images}");

        // builder prune drops the cache: the next build runs the RUN again.
        let pruned = classic_ok(&n, DOCKER_20, &["builder", "prune", "-f"]);
        assert!(pruned.contains("Total reclaimed space"), "{pruned}");
        let cold = classic_ok(&n, DOCKER_20, &["build", "-q", "-t", "x:3", ctx]);
        assert!(cold.trim().starts_with("sha256:"), "-q prints the ID only: {cold}");
        let third = classic_ok(&n, DOCKER_20, &["build", "--compress", "--no-cache", "-t", "x:4", ctx]);
        assert!(ran_here(&third) && !third.contains("Using cache"), "{third}");
        scratch_is_empty(&n);
    });
}

#[test]
fn a_dockerfile_error_names_its_line_and_a_failing_run_its_code() {
    in_test_host(|| {
        let n = Node::start();
        let work = tempfile::tempdir().unwrap();
        let dir = work.path();
        std::fs::write(dir.join("Dockerfile"), format!("FROM {}\nNOPE this is not an instruction\n", n.image)).unwrap();
        let ctx = dir.to_str().unwrap();
        for cli in [DOCKER_20, newest()] {
            let out = classic(&n, cli, &["build", "-t", "bad:1", ctx]);
            assert!(!out.status.success(), "{cli}: a syntax error fails");
            let e = stderr(&out);
            assert!(e.contains("line 2") && e.to_lowercase().contains("nope"), "{cli}: {e}");
        }
        std::fs::write(dir.join("Dockerfile"), format!("FROM {}\nRUN echo before; exit 3\n", n.image)).unwrap();
        let out = classic(&n, DOCKER_20, &["build", "-t", "bad:2", ctx]);
        assert!(!out.status.success());
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert!(all.contains("before") && all.contains("exit code: 3"), "{all}");
        assert!(!n.berth_ok(&["images"]).contains("bad "), "nothing tagged");
        // -f names a Dockerfile that is not there.
        let out = classic(&n, DOCKER_20, &["build", "-f", "Nope.df", ctx]);
        assert!(!out.status.success());
        scratch_is_empty(&n);

        // BuildKit's protocol and remote contexts: clear 400s.
        let sock = n.docker_sock.to_str().unwrap();
        for (query, words) in [("version=2", "DOCKER_BUILDKIT=0"), ("remote=https://example.com/x.git", "remote")] {
            let out = Command::new("curl")
                .args(["-s", "-w", "\n%{http_code}", "--unix-socket", sock, "-X", "POST"])
                .arg(format!("http://d/v1.41/build?{query}"))
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.ends_with("\n400") && text.contains(words), "{query}: {text}");
        }
    });
}

#[test]
fn docker_py_builds_with_args_and_labels_and_returns_the_image_and_logs() {
    in_test_host(|| {
        let n = Node::start();
        let work = tempfile::tempdir().unwrap();
        let dir = work.path();
        std::fs::write(
            dir.join("Dockerfile"),
            format!(
                "FROM {}\nARG WHO=nobody\nRUN echo who=$WHO > /who && cat /who\nCMD [\"cat\", \"/who\"]\n",
                n.image
            ),
        )
        .unwrap();
        let script = format!(
            r#"
import sys, docker
c = docker.DockerClient(base_url=sys.argv[1])
img, logs = c.images.build(path={dir:?}, tag="py:1", buildargs={{"WHO": "py"}}, labels={{"made.by": "berth"}})
print("tags", img.tags)
print("label", c.images.get("py:1").labels.get("made.by"))
print("logs", "".join(l.get("stream", "") for l in logs).replace("\n", "|"))
print("run", c.containers.run("py:1", remove=True).decode().strip())
"#,
            dir = dir.to_str().unwrap()
        );
        let out = n.python(&script);
        assert!(out.contains("tags ['py:1']"), "{out}");
        assert!(out.contains("label berth"), "{out}");
        assert!(out.contains("who=py") && out.contains("Successfully tagged py:1"), "{out}");
        assert!(out.contains("run who=py"), "{out}");
    });
}

/// compose's `build:` (docker-compose 1.29, as setup.sh installs it in
/// /opt/berth-compose; BERTH_COMPOSE names another): `build`, the image
/// runs, a second `build` is cached.
#[test]
fn compose_builds_a_service_image() {
    let compose = std::env::var("BERTH_COMPOSE").unwrap_or_else(|_| "/opt/berth-compose/bin/docker-compose".into());
    if !Path::new(&compose).exists() {
        eprintln!("skipped: no docker-compose at {compose} (scripts/setup.sh installs it)");
        return;
    }
    in_test_host(move || {
        let n = Node::start();
        let work = tempfile::tempdir().unwrap();
        let dir = work.path();
        std::fs::create_dir(dir.join("app")).unwrap();
        std::fs::write(
            dir.join("app/Dockerfile.app"),
            format!("FROM {}\nARG FLAVOUR\nRUN echo built-$FLAVOUR > /flavour\nCMD [\"cat\", \"/flavour\"]\n", n.image),
        )
        .unwrap();
        std::fs::write(
            dir.join("docker-compose.yml"),
            "version: \"3.8\"\nservices:\n  app:\n    build:\n      context: ./app\n      dockerfile: Dockerfile.app\n      \
             args:\n        FLAVOUR: compose\n    image: composed:1\n",
        )
        .unwrap();
        let run = |args: &[&str]| {
            let mut c = Command::new(&compose);
            c.current_dir(dir)
                .env("DOCKER_HOST", format!("unix://{}", n.docker_sock.display()))
                .env("DOCKER_BUILDKIT", "0")
                .env("COMPOSE_DOCKER_CLI_BUILD", "0")
                .args(["-p", "bt"])
                .args(args);
            let out = berth_testkit::output_via_files(&mut c);
            assert!(
                out.status.success(),
                "docker-compose {args:?}: {}{}\nberthd:\n{}",
                String::from_utf8_lossy(&out.stdout),
                stderr(&out),
                tail(&n.d.stderr(), 30)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        run(&["build"]);
        assert_eq!(n.docker_ok(DOCKER_20, &["run", "--rm", "composed:1"]), "built-compose\n");
        // A second `build` is cached.
        let again = run(&["build"]);
        assert!(again.contains("Using cache"), "{again}");
    });
}

/// Whether a process whose command line is `cmd` is running.
fn running(cmd: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " ").trim_end() == cmd)
            .unwrap_or(false)
    })
}

/// A client that goes away mid-build takes the build with it: the RUN's
/// process ends, and the next build leaves nothing of it behind (work
/// directory, mounts).
#[test]
fn a_build_whose_client_goes_away_is_stopped_and_cleaned() {
    in_test_host(|| {
        let n = Node::start();
        let marker = format!("sleep {}", 100_000 + std::process::id() % 10_000);
        let script = format!(
            r#"
import io, socket, sys, tarfile
df = "FROM {image}\nRUN {marker}\n".encode()
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w") as t:
    info = tarfile.TarInfo("Dockerfile"); info.size = len(df); t.addfile(info, io.BytesIO(df))
body = buf.getvalue()
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1][len("unix://"):])
s.sendall(b"POST /v1.41/build?t=slow:1 HTTP/1.1\r\nHost: d\r\nContent-Type: application/x-tar\r\n"
          + b"Content-Length: %d\r\n\r\n" % len(body) + body)
seen = b""
while b"Step 2/2" not in seen:
    chunk = s.recv(4096)
    if not chunk: break
    seen += chunk
import os, time
def running():
    for p in os.listdir("/proc"):
        try:
            if open("/proc/%s/cmdline" % p, "rb").read().replace(b"\0", b" ").strip() == b"{marker}": return True
        except OSError: pass
    return False
deadline = time.time() + 20
while not running() and time.time() < deadline: time.sleep(0.05)
print("started" if running() else "never started")
print(seen.decode(errors="replace"))
s.close()
"#,
            image = n.image
        );
        let out = n.python(&script);
        assert!(out.contains("Step 2/2") && out.starts_with("started"), "{out}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while running(&marker) {
            assert!(std::time::Instant::now() < deadline, "{marker} still runs after its client went away");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let work = tempfile::tempdir().unwrap();
        std::fs::write(work.path().join("Dockerfile"), format!("FROM {}\nRUN true\n", n.image)).unwrap();
        classic_ok(&n, DOCKER_20, &["build", "-t", "next:1", work.path().to_str().unwrap()]);
        let left: Vec<_> = std::fs::read_dir(n.root().join("build")).unwrap().flatten().map(|e| e.path()).collect();
        assert!(left.is_empty(), "left by the abandoned build: {left:?}");
        let mounts = docker_node::leftovers(&n.root());
        assert!(mounts.is_empty(), "{mounts:?}");
        assert!(!n.berth_ok(&["images"]).contains("slow "), "the abandoned build tagged nothing");
        scratch_is_empty(&n);
    });
}

/// A FROM image in a registry with auth is pulled with the credentials
/// the CLI sends (X-Registry-Config): refused when logged out, pulled
/// once logged in.
#[test]
fn from_a_registry_with_auth_uses_the_clis_credentials() {
    in_test_host(|| {
        use berth_testkit::registry::{Registry, RegistryOptions};
        let n = Node::start();
        let cli = DOCKER_20;
        n.docker_ok(cli, &["pull", &n.image]);
        let reg = Registry::start_with(RegistryOptions {
            users: vec![("bob".into(), "s3cret".into())],
            ..Default::default()
        });
        let base = format!("{}/priv/base:1", reg.addr());
        n.docker_ok(cli, &["login", "-u", "bob", "-p", "s3cret", &reg.addr()]);
        n.docker_ok(cli, &["tag", &n.image, &base]);
        n.docker_ok(cli, &["push", &base]);
        n.docker_ok(cli, &["rmi", &base]);
        let work = tempfile::tempdir().unwrap();
        std::fs::write(work.path().join("Dockerfile"), format!("FROM {base}\nRUN echo private > /p\n")).unwrap();
        let ctx = work.path().to_str().unwrap();

        n.docker_ok(cli, &["logout", &reg.addr()]);
        let denied = classic(&n, cli, &["build", "-t", "priv:1", ctx]);
        assert!(!denied.status.success(), "no credentials, no pull");
        let e = String::from_utf8_lossy(&denied.stdout).into_owned() + &stderr(&denied);
        assert!(e.contains("401") || e.to_lowercase().contains("unauthorized") || e.contains("auth"), "{e}");

        n.docker_ok(cli, &["login", "-u", "bob", "-p", "s3cret", &reg.addr()]);
        classic_ok(&n, cli, &["build", "-t", "priv:1", ctx]);
        assert_eq!(n.docker_ok(cli, &["run", "--rm", "priv:1", "cat", "/p"]), "private\n");
    });
}
