//! The container's process: identity, capabilities, limits, environment,
//! file descriptors, its terminal, and exec.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use berth_testkit::{Bundle, Runtime, leaks, require_root, run_on_pty, unique_id};
use serde_json::json;

fn runtime() -> Runtime {
    require_root();
    Runtime::new(env!("CARGO_BIN_EXE_berth-runtime"))
}

fn run_ok(rt: &Runtime, b: &mut Bundle, script: &str) -> (String, String) {
    b.sh(script);
    let id = unique_id("proc");
    let (code, out, err) = rt.run(b, &id);
    assert_eq!(code, 0, "script failed: {script}\nstdout: {out}\nstderr: {err}");
    leaks::assert_none(&id, b.path(), rt.root(), None);
    (out, err)
}

/// The capability sets of the container's shell, from /proc/self/status.
fn caps_line(out: &str, name: &str) -> u64 {
    let line = out.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {out}"));
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

#[test]
fn user_groups_umask_cwd_and_env_are_applied() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    std::fs::create_dir_all(b.rootfs().join("work")).unwrap();
    b.edit(|c| {
        c["process"]["user"] = json!({ "uid": 1234, "gid": 5678, "additionalGids": [11, 22], "umask": 63 });
        c["process"]["cwd"] = "/work".into();
        c["process"]["env"].as_array_mut().unwrap().push("GREETING=hello world".into());
        c["root"]["readonly"] = false.into();
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777"]}));
    });
    let (out, _) = run_ok(
        &rt,
        &mut b,
        "id -u; id -g; id -G; umask; pwd; echo $GREETING; echo HOME=$HOME; touch /tmp/f; stat -c %a /tmp/f",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1234");
    assert_eq!(lines[1], "5678");
    assert_eq!(lines[2], "5678 11 22");
    assert_eq!(lines[3], "0077");
    assert_eq!(lines[4], "/work");
    assert_eq!(lines[5], "hello world");
    assert_eq!(lines[6], "HOME=/", "HOME defaults to / for a uid without a passwd entry");
    assert_eq!(lines[7], "600");
}

#[test]
fn home_comes_from_the_containers_passwd() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    let (out, _) = run_ok(&rt, &mut b, "echo $HOME");
    assert_eq!(out.trim(), "/root");
}

#[test]
fn capabilities_are_exactly_the_configured_sets() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.edit(|c| {
        c["process"]["capabilities"] = json!({
            "bounding": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_CHOWN"],
            "effective": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "inheritable": ["CAP_KILL"],
            "ambient": ["CAP_KILL"]
        });
        c["process"]["noNewPrivileges"] = true.into();
    });
    let (out, _) = run_ok(&rt, &mut b, "grep -E '^(Cap|NoNewPrivs)' /proc/self/status");
    let kill = 1u64 << 5;
    let bind = 1u64 << 10;
    let chown = 1u64 << 0;
    // The shell exec'd from the init keeps permitted and effective (it is
    // root); what matters is that nothing outside the sets is there.
    assert_eq!(caps_line(&out, "CapBnd:"), kill | bind | chown);
    assert_eq!(caps_line(&out, "CapPrm:"), kill | bind);
    assert_eq!(caps_line(&out, "CapEff:"), kill | bind);
    assert_eq!(caps_line(&out, "CapInh:"), kill);
    assert_eq!(caps_line(&out, "CapAmb:"), kill);
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
}

#[test]
fn a_non_root_user_keeps_only_ambient_capabilities() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.edit(|c| {
        c["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
        c["process"]["capabilities"] = json!({
            "bounding": ["CAP_NET_BIND_SERVICE"], "effective": ["CAP_NET_BIND_SERVICE"],
            "permitted": ["CAP_NET_BIND_SERVICE"], "inheritable": ["CAP_NET_BIND_SERVICE"],
            "ambient": ["CAP_NET_BIND_SERVICE"]
        });
    });
    let (out, _) = run_ok(&rt, &mut b, "grep -E '^Cap' /proc/self/status");
    let bind = 1u64 << 10;
    assert_eq!(caps_line(&out, "CapEff:"), bind, "ambient capabilities survive exec as non-root");
    assert_eq!(caps_line(&out, "CapBnd:"), bind);
}

#[test]
fn rlimits_apply_and_a_hard_limit_above_ours_is_clamped_with_a_warning() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    let (_, our_hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    b.edit(|c| {
        c["process"]["rlimits"] = json!([
            { "type": "RLIMIT_NOFILE", "soft": 100, "hard": 200 },
            { "type": "RLIMIT_NPROC", "soft": 500, "hard": 600 }
        ]);
    });
    let (out, _) = run_ok(&rt, &mut b, "ulimit -n; ulimit -Hn; ulimit -u");
    assert_eq!(out, "100\n200\n500\n");
    // Raising the hard limit needs CAP_SYS_RESOURCE. Where the runtime has
    // it, the limit is raised; where not (this project's CI machine), it is
    // clamped with a warning instead of failing the container.
    let want = our_hard.saturating_add(1000);
    b.edit(|c| c["process"]["rlimits"] = json!([{ "type": "RLIMIT_NOFILE", "soft": 64, "hard": want }]));
    let (out, err) = run_ok(&rt, &mut b, "ulimit -Hn");
    let got: u64 = out.trim().parse().unwrap();
    if got != want {
        assert_eq!(got, our_hard);
        assert!(err.contains("needs CAP_SYS_RESOURCE"), "a warning says why: {err}");
    }
}

#[test]
fn oom_score_adj_is_applied_or_clamped_with_a_warning() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.edit(|c| c["process"]["oomScoreAdj"] = json!(500));
    let (out, _) = run_ok(&rt, &mut b, "cat /proc/self/oom_score_adj");
    assert_eq!(out.trim(), "500");
    let ours: i32 = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap().trim().parse().unwrap();
    b.edit(|c| c["process"]["oomScoreAdj"] = json!(-999));
    let (out, err) = run_ok(&rt, &mut b, "cat /proc/self/oom_score_adj");
    let got: i32 = out.trim().parse().unwrap();
    if got != -999 {
        assert_eq!(got, ours);
        assert!(err.contains("needs CAP_SYS_RESOURCE"), "{err}");
    }
}

#[test]
fn only_stdio_and_preserved_fds_reach_the_container() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.sh("ls /proc/self/fd | tr '\\n' ' '; echo; echo from-container >&3; echo LISTEN_FDS=$LISTEN_FDS");
    let id = unique_id("fds");
    let (r, w) = nix::unistd::pipe().unwrap();
    // An fd the runtime's caller holds but does not pass: must not leak.
    let stray = std::fs::File::open("/etc/hostname").unwrap();
    let stray_fd = stray.as_raw_fd();
    let w_fd = w.as_raw_fd();
    let mut cmd = rt.cmd();
    cmd.args(["run", "--preserve-fds", "1", "--bundle", b.path().to_str().unwrap(), &id]);
    // SAFETY: dup2 and fcntl are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(w_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Leave the stray fd open across exec.
            let flags = libc::fcntl(stray_fd, libc::F_GETFD);
            libc::fcntl(stray_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    drop(w);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // 0 1 2, the preserved 3, and ls's own directory fd.
    let fds: Vec<&str> = stdout.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(fds.len(), 5, "fds in the container: {fds:?}");
    assert!(fds.contains(&"3"));
    assert!(!fds.contains(&stray_fd.to_string().as_str()) || stray_fd <= 4, "the stray fd leaked: {fds:?}");
    let mut got = String::new();
    std::fs::File::from(r).read_to_string(&mut got).unwrap();
    assert_eq!(got, "from-container\n");
    assert!(stdout.contains("LISTEN_FDS=\n"));
    drop(stray);
}

#[test]
fn socket_activation_fds_are_passed_with_listen_fds() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.sh("echo LISTEN_FDS=$LISTEN_FDS LISTEN_PID=$LISTEN_PID; echo via-3 >&3");
    let id = unique_id("listen");
    let (r, w) = nix::unistd::pipe().unwrap();
    let w_fd = w.as_raw_fd();
    let mut cmd = rt.cmd();
    cmd.args(["run", "--bundle", b.path().to_str().unwrap(), &id]);
    // SAFETY: dup2, getpid and setenv-free env handling: LISTEN_PID must
    // name the runtime itself, which only the child knows; write it with
    // async-signal-safe calls into a preallocated buffer is not possible,
    // so the env is set through a shell wrapper instead.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(w_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // exec through sh so LISTEN_PID can be the runtime's own pid ($$ after exec).
    let program = format!("{:?}", cmd.get_program());
    let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let script = format!("LISTEN_FDS=1 LISTEN_PID=$$ exec {} {}", program, args.join(" "));
    let mut sh = std::process::Command::new("/bin/sh");
    sh.arg("-c").arg(script);
    // SAFETY: dup2 is async-signal-safe.
    unsafe {
        sh.pre_exec(move || {
            if libc::dup2(w_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = sh.output().unwrap();
    drop(w);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("LISTEN_FDS=1 LISTEN_PID=1"));
    let mut got = String::new();
    std::fs::File::from(r).read_to_string(&mut got).unwrap();
    assert_eq!(got, "via-3\n");
}

#[test]
fn a_missing_program_is_a_create_time_error_naming_it() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.args(&["no-such-program"]);
    let id = unique_id("noprog");
    let (code, _, err) = rt.run(&b, &id);
    assert_eq!(code, 1);
    assert!(err.contains("exec: \\\"no-such-program\\\": executable file not found in $PATH"), "{err}");
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

/// Receives one pty master over a console socket, as containerd does.
fn receive_console(listener: &UnixListener) -> (String, OwnedFd) {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let (conn, _) = listener.accept().unwrap();
    let mut buf = [0u8; 256];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(conn.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty()).unwrap();
    let mut fd = None;
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: SCM_RIGHTS installed this fd for us.
            fd = Some(unsafe { OwnedFd::from_raw_fd(fds[0]) });
        }
    }
    let n = msg.bytes;
    (String::from_utf8_lossy(&buf[..n]).into_owned(), fd.expect("a pty master fd"))
}

fn read_until(master: &OwnedFd, needle: &str) -> String {
    let mut f = std::fs::File::from(master.try_clone().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&got).contains(needle) {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn terminal_master_arrives_on_the_console_socket_as_runc_sends_it() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.edit(|c| {
        c["process"]["terminal"] = true.into();
        c["process"]["consoleSize"] = json!({ "height": 33, "width": 101 });
    });
    b.sh("tty; stty size; test -t 0 && echo stdin-is-tty; sleep 1");
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("console.sock");
    let listener = UnixListener::bind(&sock_path).unwrap();
    let id = unique_id("tty");
    let rx = std::thread::spawn(move || receive_console(&listener));
    rt.ok(&["create", "--console-socket", sock_path.to_str().unwrap(), "--bundle", b.path().to_str().unwrap(), &id]);
    let (name, master) = rx.join().unwrap();
    assert_eq!(name, "/dev/ptmx", "runc's console-socket payload");
    rt.ok(&["start", &id]);
    let out = read_until(&master, "stdin-is-tty");
    assert!(out.contains("/dev/pts/0"), "{out}");
    assert!(out.contains("33 101"), "{out}");
    assert!(out.contains("stdin-is-tty"), "{out}");
    rt.ok(&["delete", "--force", &id]);
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

#[test]
fn a_terminal_without_console_socket_is_refused_when_detached() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.edit(|c| c["process"]["terminal"] = true.into());
    let id = unique_id("notty");
    let err = rt.fails(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    assert!(err.contains("cannot allocate tty if berth-runtime will detach without setting console socket"), "{err}");
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

#[test]
fn exec_runs_in_the_containers_namespaces_and_cgroup() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.edit(|c| c["hostname"] = "exec-host".into());
    b.args(&["sleep", "1000"]);
    let id = unique_id("exec");
    rt.ok(&["run", "-d", "--bundle", b.path().to_str().unwrap(), &id]);
    let out = rt.exec(&[
        "exec",
        &id,
        "sh",
        "-c",
        "hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; cat /proc/self/cgroup",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("exec-host"), "{text}");
    assert!(text.contains("sleep 1000"), "exec sees the container's pid 1: {text}");
    assert!(text.contains(&format!("/berth/{id}")), "exec joins the container's cgroup: {text}");

    // Exit codes come back; environment, cwd and user flags apply.
    let out = rt.exec(&[
        "exec",
        "--env",
        "X=y",
        "--cwd",
        "/bin",
        "--user",
        "42:43",
        &id,
        "sh",
        "-c",
        "echo $X $(pwd) $(id -u) $(id -g); exit 9",
    ]);
    assert_eq!(out.status.code(), Some(9));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "y /bin 42 43");

    // A missing program is an error naming it.
    let err = rt.fails(&["exec", &id, "nope-not-here"]);
    assert!(err.contains("executable file not found"), "{err}");

    // Detached exec with a pid file.
    let pid_file = b.path().join("exec.pid");
    rt.ok(&["exec", "-d", "--pid-file", pid_file.to_str().unwrap(), &id, "sleep", "1000"]);
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let ps: Vec<i32> = serde_json::from_str(&rt.ok(&["ps", "--format", "json", &id])).unwrap();
    assert!(ps.contains(&pid), "ps lists the exec'd process: {ps:?} / {pid}");

    // --process with a process.json.
    let pj = b.path().join("process.json");
    std::fs::write(
        &pj,
        serde_json::to_vec(&json!({
            "user": { "uid": 0, "gid": 0 }, "cwd": "/", "args": ["sh", "-c", "exit 4"], "env": ["PATH=/bin"]
        }))
        .unwrap(),
    )
    .unwrap();
    let out = rt.exec(&["exec", "--process", pj.to_str().unwrap(), &id]);
    assert_eq!(out.status.code(), Some(4));

    rt.ok(&["delete", "--force", &id]);
    leaks::assert_none(&id, b.path(), rt.root(), None);
    let err = rt.fails(&["exec", &id, "true"]);
    assert!(err.contains("container does not exist"), "{err}");
}

#[test]
fn exec_with_a_tty_in_the_foreground_relays_the_terminal() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.args(&["sleep", "1000"]);
    let id = unique_id("exectty");
    rt.ok(&["run", "-d", "--bundle", b.path().to_str().unwrap(), &id]);
    let (code, text) = run_on_pty(
        rt.cmd().args(["exec", "-t", &id, "sh"]),
        b"tty; echo answer-$((40+2)); exit 6\n",
        Duration::from_secs(15),
    );
    assert_eq!(code, Some(6));
    assert!(text.contains("answer-42"), "{text}");
    assert!(text.contains("/dev/pts/"), "{text}");
    rt.ok(&["delete", "-f", &id]);
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

fn msg(line: &serde_json::Value) -> &str {
    line["msg"].as_str().unwrap_or_default()
}

/// `run --log L --log-format json`: the last log line.
fn run_logged(rt: &Runtime, b: &Bundle, id: &str) -> serde_json::Value {
    let log = tempfile::NamedTempFile::new().unwrap();
    let out = rt.exec(&[
        "--log",
        log.path().to_str().unwrap(),
        "--log-format",
        "json",
        "run",
        "--bundle",
        b.path().to_str().unwrap(),
        id,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(log.path()).unwrap();
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

#[test]
fn a_program_that_cannot_run_logs_its_errno_beside_runcs_words() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    // Not found by the PATH lookup (before execve): ENOENT, as Go's LookPath.
    b.args(&["no-such-program"]);
    let id = unique_id("errno");
    let line = run_logged(&rt, &b, &id);
    // The words stay runc's (`run failed: exec: ...`).
    assert!(msg(&line).ends_with("exec: \"no-such-program\": executable file not found in $PATH"), "{line}");
    assert_eq!(line["errno"], libc::ENOENT);
    assert_eq!(line["level"], "error");
    leaks::assert_none(&id, b.path(), rt.root(), None);
    // Not executable.
    b.args(&["/etc/passwd"]);
    let line = run_logged(&rt, &b, &id);
    assert!(msg(&line).ends_with("exec: \"/etc/passwd\": permission denied"), "{line}");
    assert_eq!(line["errno"], libc::EACCES);
    leaks::assert_none(&id, b.path(), rt.root(), None);
    // execve's own refusal, after `start`: the x bit, but no format the
    // kernel knows.
    let junk = b.rootfs().join("junk");
    std::fs::write(&junk, [0u8, 1, 2, 3]).unwrap();
    std::fs::set_permissions(&junk, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    b.args(&["/junk"]);
    let line = run_logged(&rt, &b, &id);
    assert!(msg(&line).ends_with("exec: \"/junk\": exec format error"), "{line}");
    assert_eq!(line["errno"], libc::ENOEXEC);
    leaks::assert_none(&id, b.path(), rt.root(), None);
    // Any other error has no errno field.
    b.args(&["true"]).edit(|c| c["root"]["path"] = "nope".into());
    let line = run_logged(&rt, &b, &id);
    assert!(line.get("errno").is_none(), "{line}");
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

#[test]
fn an_exec_that_cannot_run_logs_its_errno() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.args(&["sleep", "30"]);
    let id = unique_id("execerrno");
    rt.ok(&["run", "-d", "--bundle", b.path().to_str().unwrap(), &id]);
    let log = tempfile::NamedTempFile::new().unwrap();
    let logged = |args: &[&str]| {
        let mut all = vec!["--log", log.path().to_str().unwrap(), "--log-format", "json", "exec", &id];
        all.extend_from_slice(args);
        let out = rt.exec(&all);
        assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
        let text = std::fs::read_to_string(log.path()).unwrap();
        serde_json::from_str::<serde_json::Value>(text.lines().last().unwrap()).unwrap()
    };
    let line = logged(&["no-such-program"]);
    assert!(msg(&line).ends_with("exec: \"no-such-program\": executable file not found in $PATH"), "{line}");
    assert_eq!(line["errno"], libc::ENOENT);
    let line = logged(&["/etc/passwd"]);
    assert_eq!(line["errno"], libc::EACCES);
    rt.ok(&["delete", "-f", &id]);
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

#[test]
fn a_new_network_namespace_has_its_loopback_up() {
    // As runc and crun: a namespace the runtime makes gets lo up, so
    // 127.0.0.1 answers (docker's `--network none` relies on it).
    let rt = runtime();
    let mut b = Bundle::busybox();
    let (out, _) = run_ok(&rt, &mut b, "cat /sys/class/net/lo/flags; ls /sys/class/net");
    let mut lines = out.lines();
    let flags = u32::from_str_radix(lines.next().unwrap().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "IFF_UP is set on lo: {out}");
    assert_eq!(lines.collect::<Vec<_>>(), ["lo"], "a namespace of its own, lo alone: {out}");
}
