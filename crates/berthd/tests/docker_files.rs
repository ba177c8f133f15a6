//! The Docker API's file, image-transfer, prune and listen routes, driven
//! by the real docker CLI and docker-py: `docker cp` both ways (and
//! hostile archives), `export`, `save | load` into another berthd,
//! `login` + `push` to a registry with htpasswd auth, the prunes and
//! `system df`, and TCP with TLS client certificates.

#[path = "common/docker_node.rs"]
mod docker_node;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_testkit::in_test_host;
use berth_testkit::registry::{Registry, RegistryOptions};
use docker_node::{DOCKER_20, Node, newest, stderr};

/// Nothing a request staged is left in berthd's scratch directory.
fn scratch_is_empty(n: &Node) {
    let dir = n.root().join("docker-scratch");
    assert!(dir.is_dir(), "requests stage in {}", dir.display());
    let left: Vec<_> = std::fs::read_dir(&dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", dir.display());
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// `docker cp` a tree (a file with its mode, a subdirectory, a symlink)
/// into a running container and back out, then out of the stopped one;
/// a missing path gets docker's words.
fn cp_round_trip(n: &Node, cli: &str) {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("tree");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("script"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(src.join("script"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::write(src.join("sub/data"), "data\n").unwrap();
    std::fs::set_permissions(src.join("sub/data"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("script", src.join("link")).unwrap();
    n.docker_ok(cli, &["run", "-d", "--name", "cp", &n.image, "sleep", "100"]);

    n.docker_ok(cli, &["cp", src.to_str().unwrap(), "cp:/tmp/"]);
    let inside = n.docker_ok(
        cli,
        &["exec", "cp", "sh", "-c", "stat -c %a /tmp/tree/script /tmp/tree/sub/data; readlink /tmp/tree/link"],
    );
    assert_eq!(inside, "750\n600\nscript\n");
    assert_eq!(n.docker_ok(cli, &["exec", "cp", "/tmp/tree/link"]), "hi\n");

    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    n.docker_ok(cli, &["cp", "cp:/tmp/tree", out.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(out.join("tree/sub/data")).unwrap(), "data\n");
    assert_eq!(mode(&out.join("tree/script")), 0o750);
    assert_eq!(mode(&out.join("tree/sub/data")), 0o600);
    assert_eq!(std::fs::read_link(out.join("tree/link")).unwrap(), Path::new("script"));
    // -L follows the link (the stat header's linkTarget).
    let followed = work.path().join("followed");
    n.docker_ok(cli, &["cp", "-L", "cp:/tmp/tree/link", followed.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&followed).unwrap(), "#!/bin/sh\necho hi\n");
    assert!(!followed.is_symlink());

    // A stopped container's files are still there to copy.
    n.docker_ok(cli, &["stop", "-t", "1", "cp"]);
    let file = work.path().join("script-copy");
    n.docker_ok(cli, &["cp", "cp:/tmp/tree/script", file.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "#!/bin/sh\necho hi\n");

    let missing = n.docker(cli, &["cp", "cp:/nosuch", work.path().to_str().unwrap()]);
    assert!(!missing.status.success());
    let e = stderr(&missing);
    assert!(
        e.contains("Could not find the file /nosuch in container cp")
            || e.contains("No such container:path: cp:/nosuch"),
        "{e}"
    );
    // ... and to copy into, kept for its next start.
    std::fs::write(work.path().join("later"), "later\n").unwrap();
    n.docker_ok(cli, &["cp", work.path().join("later").to_str().unwrap(), "cp:/later"]);
    n.docker_ok(cli, &["start", "cp"]);
    assert_eq!(n.docker_ok(cli, &["exec", "cp", "cat", "/later"]), "later\n");
    n.docker_ok(cli, &["rm", "-f", "cp"]);
    scratch_is_empty(n);
}

#[test]
fn docker_cp_round_trips_a_tree_with_modes_and_symlinks() {
    in_test_host(|| {
        let n = Node::start();
        n.docker_ok(newest(), &["pull", &n.image]);
        cp_round_trip(&n, newest());
        if newest() != DOCKER_20 {
            cp_round_trip(&n, DOCKER_20);
        }
    });
}

/// docker-py's put_archive/get_archive, and a tar whose entries climb
/// out (`../../etc/x`, a hard link to a host file) refused with nothing
/// written, in the container or on the host.
#[test]
fn archives_in_and_out_and_hostile_ones_stay_contained() {
    in_test_host(|| {
        let n = Node::start();
        n.docker_ok(newest(), &["pull", &n.image]);
        let marker = format!("berth-escape-{}", std::process::id());
        let script = r#"
import io, sys, tarfile, docker
c = docker.DockerClient(base_url=sys.argv[1])
box = c.containers.run(sys.argv[2], ["sleep", "100"], detach=True, name="arch")
def tar_of(*entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for e in entries:
            t.addfile(*e)
    return buf.getvalue()
def file(name, data, mode=0o644):
    i = tarfile.TarInfo(name); i.size = len(data); i.mode = mode
    return (i, io.BytesIO(data))
def link(name, target):
    i = tarfile.TarInfo(name); i.type = tarfile.LNKTYPE; i.linkname = target
    return (i, None)
print("put", box.put_archive("/tmp", tar_of(file("hello", b"hi there\n", 0o600))))
stream, stat = box.get_archive("/tmp/hello")
print("stat", stat["name"], stat["size"], oct(stat["mode"] & 0o777))
t = tarfile.open(fileobj=io.BytesIO(b"".join(stream)))
m = t.getmembers()[0]
print("got", m.name, oct(m.mode), t.extractfile(m).read())
marker = sys.argv[3]
for what, entries in [
    ("dotdot", [file("../../etc/" + marker, b"x")]),
    ("hardlink", [link(marker, "../../../../etc/hostname")]),
]:
    try:
        box.put_archive("/tmp", tar_of(*entries))
        print(what, "accepted")
    except docker.errors.APIError as e:
        print(what, e.status_code, "outside" in str(e))
print("inside", box.exec_run(["sh", "-c", "ls /etc/" + marker + " /tmp/" + marker + " 2>&1 | wc -l; ls /tmp"]).output.decode().split())
try:
    box.get_archive("/nosuch")
except docker.errors.NotFound as e:
    print("missing", e.status_code)
for what, path, data in [("onto-file", "/tmp/hello", tar_of(file("x", b"x"))), ("not-tar", "/tmp", b"garbage" * 200)]:
    try:
        box.put_archive(path, data)
        print(what, "accepted")
    except docker.errors.APIError as e:
        print(what, e.status_code)
box.remove(force=True)
"#;
        let out = Command::new("python3")
            .args(["-c", script, &format!("unix://{}", n.docker_sock.display()), &n.image, &marker])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}\n{}\nberthd:\n{}", stderr(&out), docker_node::tail(&n.d.stderr(), 40));
        assert_eq!(
            text,
            "put True\nstat hello 9 0o600\ngot hello 0o600 b'hi there\\n'\ndotdot 400 True\nhardlink 400 True\n\
             inside ['2', 'hello']\nmissing 404\nonto-file 400\nnot-tar 400\n"
        );
        assert!(!Path::new("/etc").join(&marker).exists(), "nothing on the host");
        scratch_is_empty(&n);
    });
}

/// `docker export` is the container's root filesystem as a tar.
#[test]
fn export_is_the_root_filesystem() {
    in_test_host(|| {
        let n = Node::start();
        let cli = newest();
        n.docker_ok(cli, &["pull", &n.image]);
        n.docker_ok(cli, &["run", "-d", "--name", "ex", &n.image, "sh", "-c", "echo made > /made; sleep 100"]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !n.docker(cli, &["exec", "ex", "test", "-f", "/made"]).status.success() {
            assert!(Instant::now() < deadline, "/made not made");
            std::thread::sleep(Duration::from_millis(50));
        }
        let work = tempfile::tempdir().unwrap();
        let tar = work.path().join("ex.tar");
        n.docker_ok(cli, &["export", "-o", tar.to_str().unwrap(), "ex"]);
        let list = Command::new("tar").arg("tf").arg(&tar).output().unwrap();
        let list = String::from_utf8_lossy(&list.stdout);
        assert!(list.lines().any(|l| l == "bin/busybox"), "{list}");
        assert!(list.lines().any(|l| l == "made"), "the container's own writes: {list}");
        assert!(!list.lines().any(|l| l.starts_with("proc/") && l.len() > 5), "no /proc contents: {list}");
        let missing = n.docker(cli, &["export", "-o", tar.to_str().unwrap(), "nosuch"]);
        assert!(stderr(&missing).contains("No such container: nosuch"), "{}", stderr(&missing));
        scratch_is_empty(&n);
    });
}

/// `docker diff` lists what the container added, changed and deleted in
/// its image; `docker update` changes a running container's memory limit
/// in its cgroup and shows in inspect; `docker import` makes an image of a
/// tarball (with a `--change`) that runs.
#[test]
fn diff_update_and_import_as_docker_does() {
    in_test_host(|| {
        let n = Node::start();
        let cli = newest();
        n.docker_ok(cli, &["pull", &n.image]);
        let script = "echo x > /added; echo more >> /etc/passwd; rm /etc/group; touch /ready; sleep 100";
        n.docker_ok(cli, &["run", "-d", "--name", "df", "-m", "64m", &n.image, "sh", "-c", script]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !n.docker(cli, &["exec", "df", "test", "-f", "/ready"]).status.success() {
            assert!(Instant::now() < deadline, "/ready not made");
            std::thread::sleep(Duration::from_millis(50));
        }
        let diff = n.docker_ok(cli, &["diff", "df"]);
        for line in ["A /added", "C /etc", "C /etc/passwd", "D /etc/group", "A /ready"] {
            assert!(diff.lines().any(|l| l == line), "{line:?} in:\n{diff}");
        }
        assert!(!diff.lines().any(|l| l.ends_with(" /bin/busybox")), "untouched files are not listed:\n{diff}");

        n.docker_ok(cli, &["update", "-m", "96m", "--restart", "on-failure:2", "df"]);
        let limit = n.docker_ok(
            cli,
            &[
                "exec",
                "df",
                "sh",
                "-c",
                "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
            ],
        );
        assert_eq!(limit.trim(), (96u64 << 20).to_string(), "the new limit is in the container's cgroup");
        let shown =
            n.docker_ok(cli, &["inspect", "-f", "{{.HostConfig.Memory}} {{.HostConfig.RestartPolicy.Name}} {{.HostConfig.RestartPolicy.MaximumRetryCount}}", "df"]);
        assert_eq!(shown.trim(), format!("{} on-failure 2", 96u64 << 20));
        let bad = n.docker(cli, &["update", "--restart", "sometimes", "df"]);
        assert!(!bad.status.success() && stderr(&bad).contains("invalid restart policy"), "{}", stderr(&bad));

        let work = tempfile::tempdir().unwrap();
        let tar = work.path().join("root.tar");
        n.docker_ok(cli, &["export", "-o", tar.to_str().unwrap(), "df"]);
        let id =
            n.docker_ok(cli, &["import", "--change", "CMD [\"cat\", \"/added\"]", tar.to_str().unwrap(), "imported:1"]);
        assert!(id.trim().starts_with("sha256:"), "{id}");
        assert_eq!(n.docker_ok(cli, &["run", "--rm", "imported:1"]), "x\n", "the import runs its CMD");
        n.docker_ok(cli, &["rm", "-f", "df"]);
    });
}

/// `docker save IMG | docker load` into another berthd, and the loaded
/// image runs there.
#[test]
fn save_and_load_between_two_berthds() {
    in_test_host(|| {
        let a = Node::start();
        let b = Node::start();
        let cli = newest();
        a.docker_ok(cli, &["pull", &a.image]);
        a.docker_ok(cli, &["tag", &a.image, "moved:1"]);
        let work = tempfile::tempdir().unwrap();
        let tar = work.path().join("img.tar");
        a.docker_ok(cli, &["save", "-o", tar.to_str().unwrap(), "moved:1"]);
        let loaded = b.docker_ok(cli, &["load", "-i", tar.to_str().unwrap()]);
        assert!(loaded.contains("Loaded image: moved:1"), "{loaded}");
        assert_eq!(b.docker_ok(cli, &["run", "--rm", "moved:1", "echo", "moved"]), "moved\n");

        // A pipe: save's stream straight into load.
        a.docker_ok(cli, &["tag", &a.image, "piped:2"]);
        let mut save = a.docker_cmd(cli);
        save.args(["save", "piped:2"]).stdout(std::process::Stdio::piped());
        let mut save = save.spawn().unwrap();
        let mut load = b.docker_cmd(cli);
        load.args(["load"]).stdin(save.stdout.take().unwrap());
        let out = load.output().unwrap();
        assert!(save.wait().unwrap().success());
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("Loaded image: piped:2"), "{out:?}");
        assert_eq!(b.docker_ok(cli, &["run", "--rm", "piped:2", "echo", "piped"]), "piped\n");
        let missing = a.docker(cli, &["save", "-o", tar.to_str().unwrap(), "nosuch:1"]);
        assert!(stderr(&missing).contains("No such image: nosuch:1"), "{}", stderr(&missing));
    });
}

/// `docker login` checks the password against the registry; `docker
/// push` sends the credentials the CLI keeps (X-Registry-Auth).
#[test]
fn login_and_push_to_a_registry_with_auth() {
    in_test_host(|| {
        let n = Node::start();
        n.docker_ok(newest(), &["pull", &n.image]);
        let opts = RegistryOptions { users: vec![("bob".into(), "s3cret".into())], ..Default::default() };
        let reg = Registry::start_with(opts);
        login_and_push(&n, &reg, newest(), "one");
        if newest() != DOCKER_20 {
            n.docker_ok(DOCKER_20, &["logout", &reg.addr()]);
            login_and_push(&n, &reg, DOCKER_20, "two");
        }
    });
}

fn login_and_push(n: &Node, reg: &Registry, cli: &str, repo: &str) {
    {
        let target = format!("{}/{repo}/pushed:1", reg.addr());
        n.docker_ok(cli, &["tag", &n.image, &target]);

        let denied = n.docker(cli, &["push", &target]);
        let e = String::from_utf8_lossy(&denied.stdout).into_owned() + &stderr(&denied);
        assert!(!denied.status.success(), "{e}");
        let lower = e.to_lowercase();
        assert!(lower.contains("unauthorized") || lower.contains("authentication") || e.contains("401"), "{e}");

        let bad = n.docker(cli, &["login", "-u", "bob", "-p", "wrong", &reg.addr()]);
        assert!(!bad.status.success());
        assert!(
            stderr(&bad).contains("401") || stderr(&bad).to_lowercase().contains("unauthorized"),
            "{}",
            stderr(&bad)
        );
        let ok = n.docker_ok(cli, &["login", "-u", "bob", "-p", "s3cret", &reg.addr()]);
        assert!(ok.contains("Login Succeeded"), "{ok}");

        let pushed = n.docker_ok(cli, &["push", &target]);
        assert!(pushed.contains("The push refers to repository"), "{pushed}");
        assert!(pushed.contains("1: digest: sha256:"), "{pushed}");
        n.docker_ok(cli, &["rmi", &target]);
        n.docker_ok(cli, &["pull", &target]);
        let missing = n.docker(cli, &["push", &format!("{}/{repo}/nosuch:1", reg.addr())]);
        assert!(!missing.status.success());
        let e = String::from_utf8_lossy(&missing.stdout).into_owned() + &stderr(&missing);
        assert!(e.contains("An image does not exist locally with the tag"), "{e}");
    }
}

/// The prunes take what nothing uses and leave the rest; `system df`
/// counts what is there.
#[test]
fn prunes_take_only_what_nothing_uses() {
    in_test_host(|| {
        let n = Node::start();
        let cli = newest();
        n.docker_ok(cli, &["pull", &n.image]);
        n.docker_ok(cli, &["run", "-d", "--name", "live", &n.image, "sleep", "100"]);
        n.docker_ok(cli, &["run", "--name", "done", &n.image, "true"]);
        let df = n.docker_ok(cli, &["system", "df", "--format", "{{.Type}} {{.TotalCount}} {{.Active}}"]);
        assert!(df.lines().any(|l| l == "Images 1 1"), "{df}");
        assert!(df.lines().any(|l| l == "Containers 2 1"), "{df}");
        let verbose = n.docker_ok(cli, &["system", "df", "-v"]);
        assert!(verbose.contains("live") && verbose.contains("done"), "{verbose}");

        let pruned = n.docker_ok(cli, &["container", "prune", "-f"]);
        let done_id = pruned.lines().find(|l| l.len() == 64).unwrap_or_else(|| panic!("{pruned}"));
        assert!(pruned.contains("Total reclaimed space"), "{pruned}");
        let names = n.docker_ok(cli, &["ps", "-a", "--format", "{{.Names}}"]);
        assert_eq!(names.trim(), "live", "the stopped one ({done_id}) went, the running one stayed");

        n.docker_ok(cli, &["volume", "create", "named"]);
        let anon = n.docker_ok(cli, &["volume", "create"]);
        let pruned = n.docker_ok(cli, &["volume", "prune", "-f"]);
        assert!(pruned.contains(anon.trim()), "{pruned}");
        let left = n.docker_ok(cli, &["volume", "ls", "-q"]);
        assert_eq!(left.trim(), "named", "a named volume stays without --all");
        if cli != DOCKER_20 {
            n.docker_ok(cli, &["volume", "prune", "-af"]);
            assert_eq!(n.docker_ok(cli, &["volume", "ls", "-q"]).trim(), "");
            // API 1.41 (docker 20.10): every unused volume, named or not.
            n.docker_ok(cli, &["volume", "create", "named2"]);
            n.docker_ok(DOCKER_20, &["volume", "prune", "-f"]);
            assert_eq!(n.docker_ok(cli, &["volume", "ls", "-q"]).trim(), "");
        }

        // Filters: only the stopped containers with the label go.
        n.docker_ok(cli, &["create", "--name", "tagged", "--label", "tier=tmp", &n.image, "true"]);
        n.docker_ok(cli, &["create", "--name", "untagged", &n.image, "true"]);
        n.docker_ok(cli, &["container", "prune", "-f", "--filter", "label=tier=tmp"]);
        let names = n.docker_ok(cli, &["ps", "-a", "--format", "{{.Names}}"]);
        let mut names: Vec<&str> = names.lines().collect();
        names.sort();
        assert_eq!(names, ["live", "untagged"]);
        n.docker_ok(cli, &["container", "prune", "-f", "--filter", "until=1h"]);
        assert_eq!(n.docker_ok(cli, &["ps", "-a", "-q"]).lines().count(), 2, "none made over an hour ago");
        n.docker_ok(cli, &["rm", "untagged"]);

        n.docker_ok(cli, &["network", "create", "idle"]);
        let pruned = n.docker_ok(cli, &["network", "prune", "-f"]);
        assert!(pruned.contains("idle"), "{pruned}");

        n.docker_ok(cli, &["tag", &n.image, "extra:1"]);
        let kept = n.docker_ok(cli, &["image", "prune", "-af"]);
        assert!(!kept.contains("Deleted:"), "the image a container uses stays: {kept}");
        n.docker_ok(cli, &["rm", "-f", "live"]);
        let pruned = n.docker_ok(cli, &["image", "prune", "-af"]);
        assert!(pruned.contains("untagged: extra:1") && pruned.contains("deleted: sha256:"), "{pruned}");
        assert_eq!(n.docker_ok(cli, &["images", "-q"]).trim(), "");
        let bad = n.docker(cli, &["container", "prune", "-f", "--filter", "colour=red"]);
        assert!(stderr(&bad).contains("invalid filter 'colour'"), "{}", stderr(&bad));
        let search = n.docker(cli, &["search", "busybox"]);
        assert!(stderr(&search).contains("no registry index"), "{}", stderr(&search));
    });
}

/// PEM files of a CA, a server certificate for 127.0.0.1 and a client
/// certificate it signed, in `dir`.
fn make_tls(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "berth docker test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    for (name, sans, usage) in [
        ("server", vec!["127.0.0.1".to_string(), "localhost".to_string()], ExtendedKeyUsagePurpose::ServerAuth),
        ("client", vec![], ExtendedKeyUsagePurpose::ClientAuth),
    ] {
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("{name}-cert.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
    }
}

/// TCP only with TLS: the CLI with a client certificate the CA signed
/// gets in, without one it does not; plain TCP is refused unless the
/// config allows it.
#[test]
fn tcp_is_served_with_tls_and_client_certificates() {
    in_test_host(|| {
        let certs = tempfile::tempdir().unwrap();
        make_tls(certs.path());
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let p = |f: &str| certs.path().join(f).display().to_string();
        let d = berth_testkit::cri::Berthd::start(&format!(
            "[docker]\nenabled = true\nlisten = \"tcp://127.0.0.1:{port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
             tls_ca = \"{}\"\n",
            p("server-cert.pem"),
            p("server-key.pem"),
            p("ca.pem")
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "no Docker API port; berthd log:\n{}", d.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
        let host = format!("tcp://127.0.0.1:{port}");
        let client_dir = tempfile::tempdir().unwrap();
        let docker = |args: &[&str]| {
            let mut c = Command::new(newest());
            c.env_remove("DOCKER_HOST").env("DOCKER_CONFIG", client_dir.path()).args(args);
            berth_testkit::output_via_files(&mut c)
        };
        let ca = p("ca.pem");
        let with_cert = docker(&[
            "--tlsverify",
            "--tlscacert",
            &ca,
            "--tlscert",
            &p("client-cert.pem"),
            "--tlskey",
            &p("client-key.pem"),
            "-H",
            &host,
            "version",
            "--format",
            "{{.Server.Os}}",
        ]);
        assert!(with_cert.status.success(), "{}\n{}", stderr(&with_cert), d.stderr());
        assert_eq!(String::from_utf8_lossy(&with_cert.stdout).trim(), "linux");
        // The server's certificate as the only one: no client certificate.
        let without = docker(&[
            "--tlsverify",
            "--tlscacert",
            &ca,
            "--tlscert",
            &p("server-cert.pem"),
            "--tlskey",
            &p("server-key.pem"),
            "-H",
            &host,
            "version",
            "--format",
            "{{.Server.Os}}",
        ]);
        assert!(!without.status.success(), "a certificate for serving is not a client's: {}", stderr(&without));
        let no_cert =
            docker(&["--tlsverify", "--tlscacert", &ca, "-H", &host, "version", "--format", "{{.Server.Os}}"]);
        assert!(!no_cert.status.success(), "no client certificate: {}", stderr(&no_cert));
        let plain = docker(&["-H", &host, "version", "--format", "{{.Server.Os}}"]);
        assert!(!plain.status.success() && String::from_utf8_lossy(&plain.stdout).trim() != "linux");

        let refused = berth_testkit::cri::Berthd::try_start(&format!(
            "[docker]\nenabled = true\nlisten = \"tcp://127.0.0.1:{}\"\n",
            port + 1
        ));
        let f = refused.err().expect("plain TCP without allow_insecure_tcp must not start");
        assert!(f.stderr.contains("TCP is served with TLS only"), "{}", f.stderr);
        drop(d);
        // ... unless the config says so.
        let insecure = berth_testkit::cri::Berthd::start(&format!(
            "[docker]\nenabled = true\nlisten = \"tcp://127.0.0.1:{port}\"\nallow_insecure_tcp = true\n"
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let plain = docker(&["-H", &host, "version", "--format", "{{.Server.Os}}"]);
            if plain.status.success() {
                assert_eq!(String::from_utf8_lossy(&plain.stdout).trim(), "linux");
                break;
            }
            assert!(Instant::now() < deadline, "{}\n{}", stderr(&plain), insecure.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    });
}

/// A `berth system service` and what it started: killed, and every
/// container on its root removed, also when the test failed.
struct Service {
    child: std::process::Child,
    dir: tempfile::TempDir,
    cgroup: berth_testkit::cgroup::CgroupParent,
}

impl Service {
    fn berth(&self) -> Command {
        let mut c = Command::new(berth_testkit::workspace_bin("berth"));
        c.arg("--root").arg(self.dir.path().join("root"));
        c.arg("--runroot").arg(self.dir.path().join("run"));
        c.arg("--runtime").arg(berth_testkit::workspace_bin("berth-runtime"));
        c.env("BERTH_SHIM", berth_testkit::workspace_bin("berth-shim")).env("BERTH_CGROUP_PARENT", self.cgroup.path());
        c
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::SIGTERM);
        let _ = self.child.wait();
        if let Ok(out) = self.berth().args(["ps", "-aq"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = self.berth().args(["rm", "-f", id]).output();
            }
        }
    }
}

/// `berth system service URI`, as podman's: the Docker API in the
/// foreground on the CLI's own root, so what docker makes there `berth`
/// lists and removes; SIGTERM ends it cleanly.
#[test]
fn berth_system_service_serves_the_docker_api_on_the_clis_root() {
    in_test_host(|| {
        let (_registry, image) = Registry::with_busybox();
        let dir = tempfile::Builder::new().prefix("berth-service-").tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        let cgroup = berth_testkit::cgroup::CgroupParent::new("service");
        let mut s = Service { child: Command::new("true").spawn().unwrap(), dir, cgroup };
        let _ = s.child.wait();
        let config = s.dir.path().join("berthd.toml");
        std::fs::create_dir_all(s.dir.path().join("net.d")).unwrap();
        std::fs::write(&config, format!("[cni]\nconf_dir = \"{}\"\n", s.dir.path().join("net.d").display())).unwrap();
        let log = std::fs::File::create(s.dir.path().join("service.log")).unwrap();
        s.child = s
            .berth()
            .args(["system", "service", &format!("unix://{}", sock.display()), "--daemon-config"])
            .arg(&config)
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            let log = std::fs::read_to_string(s.dir.path().join("service.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "no Docker API socket; log:\n{log}");
            assert!(s.child.try_wait().unwrap().is_none(), "the service ended; log:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let docker = |args: &[&str]| {
            let mut c = Command::new(newest());
            c.env("DOCKER_HOST", format!("unix://{}", sock.display()))
                .env("DOCKER_CONFIG", s.dir.path().join("docker-config"))
                .args(args);
            berth_testkit::output_via_files(&mut c)
        };
        let out = docker(&["run", "-d", "--name", "served", "--network", "none", &image, "sleep", "100"]);
        assert!(out.status.success(), "docker run: {}", stderr(&out));
        let ps = s.berth().args(["ps", "--format", "{{.Names}} {{.Status}}"]).output().unwrap();
        let ps = String::from_utf8_lossy(&ps.stdout);
        assert!(ps.lines().any(|l| l.starts_with("served Up")), "berth ps on the same root: {ps}");
        let rm = s.berth().args(["rm", "-f", "served"]).output().unwrap();
        assert!(rm.status.success());
        let gone = docker(&["ps", "-aq"]);
        assert_eq!(String::from_utf8_lossy(&gone.stdout).trim(), "", "docker sees berth's rm");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(s.child.id() as i32), nix::sys::signal::SIGTERM).unwrap();
        let status = s.child.wait().unwrap();
        assert!(status.success(), "SIGTERM ends the service cleanly: {status:?}");
        assert!(!sock.exists(), "its socket goes with it");
    });
}
