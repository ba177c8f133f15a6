//! linux.seccomp applied exactly: errno and kill actions, argument filters
//! (masked equality included), with and without no_new_privs, for exec'd
//! processes too, and user-space notification handed to a real agent.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use berth_testkit::{Bundle, Runtime, leaks, require_root, unique_id};
use serde_json::{Value, json};

fn runtime() -> Runtime {
    require_root();
    Runtime::new(env!("CARGO_BIN_EXE_berth-runtime"))
}

fn run_script(rt: &Runtime, b: &mut Bundle, seccomp: Value, script: &str) -> (i32, String, String) {
    b.edit(|c| c["linux"]["seccomp"] = seccomp);
    b.sh(script);
    let id = unique_id("seccomp");
    let r = rt.run(b, &id);
    leaks::assert_none(&id, b.path(), rt.root(), None);
    r
}

fn deny_mkdir(errno: u32) -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{ "names": ["mkdir", "mkdirat", "no_such_call_skipped"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno }]
    })
}

#[test]
fn an_errno_rule_fails_exactly_that_syscall_with_and_without_no_new_privs() {
    let rt = runtime();
    for nnp in [true, false] {
        let mut b = Bundle::busybox();
        b.edit(|c| {
            c["process"]["noNewPrivileges"] = nnp.into();
            c["mounts"]
                .as_array_mut()
                .unwrap()
                .push(json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs"}));
        });
        let (code, out, err) = run_script(
            &rt,
            &mut b,
            deny_mkdir(38),
            "mkdir /scratch/d 2>&1; echo mkdir=$?; touch /scratch/f && echo touch-ok; grep Seccomp: /proc/self/status",
        );
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("Function not implemented"), "errno 38 (ENOSYS) came back (nnp={nnp}): {out}");
        assert!(out.contains("mkdir=1"), "{out}");
        assert!(out.contains("touch-ok"), "other syscalls are allowed: {out}");
        assert!(out.contains("Seccomp:\t2"), "filter mode: {out}");
    }
}

#[test]
fn a_non_root_user_without_no_new_privs_is_filtered_too() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.edit(|c| {
        c["process"]["noNewPrivileges"] = false.into();
        c["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777"]}));
    });
    let (code, out, err) = run_script(&rt, &mut b, deny_mkdir(13), "mkdir /scratch/d 2>&1; id -u");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Permission denied"), "{out}");
    assert!(out.contains("1000"), "{out}");
}

#[test]
fn masked_equality_filters_on_argument_bits() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs"}))
    });
    // Refuse setting the setuid bit: (mode & 04000) == 04000. chmod's mode
    // is argument 1, fchmodat's argument 2.
    let setuid = |name: &str, index: u32| {
        json!({ "names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                "args": [{ "index": index, "value": 0o4000, "valueTwo": 0o4000, "op": "SCMP_CMP_MASKED_EQ" }] })
    };
    let seccomp = json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [setuid("chmod", 1), setuid("fchmodat", 2)] });
    let (code, out, err) = run_script(
        &rt,
        &mut b,
        seccomp,
        "touch /scratch/f; chmod 755 /scratch/f && echo plain-ok; chmod 4755 /scratch/f 2>&1 || echo setuid-refused; stat -c %a /scratch/f",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("plain-ok"), "{out}");
    assert!(out.contains("setuid-refused"), "{out}");
    assert!(out.trim_end().ends_with("755"), "the bit was never set: {out}");
}

#[test]
fn a_kill_rule_kills_the_caller() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    // sync: nothing calls it behind the script's back (static glibc calls
    // uname at start-up, for one).
    let seccomp = json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{ "names": ["sync"], "action": "SCMP_ACT_KILL_PROCESS" }] });
    let (code, out, err) = run_script(&rt, &mut b, seccomp, "sh -c sync; echo sync=$?");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("sync=159"), "killed by SIGSYS (128+31): {out}");
}

#[test]
fn exec_gets_the_containers_filter() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.edit(|c| {
        c["linux"]["seccomp"] = deny_mkdir(38);
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs"}));
    });
    b.args(&["sleep", "1000"]);
    let id = unique_id("secexec");
    rt.ok(&["run", "-d", "--bundle", b.path().to_str().unwrap(), &id]);
    let out = rt.exec(&["exec", &id, "sh", "-c", "mkdir /scratch/x 2>&1; true"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Function not implemented"));
    rt.ok(&["delete", "-f", &id]);
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

/// What a seccomp agent receives on its connection: the container's
/// process state and the notify fd. With `dont_wait`, the message must
/// already be there.
fn receive_state(conn: &UnixStream, dont_wait: bool) -> (Value, OwnedFd) {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut buf = vec![0u8; 65536];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let flags = if dont_wait { MsgFlags::MSG_DONTWAIT } else { MsgFlags::empty() };
    let msg = recvmsg::<()>(conn.as_raw_fd(), &mut iov, Some(&mut cmsg), flags)
        .unwrap_or_else(|e| panic!("no process state from the runtime on the listener's connection: {e}"));
    let mut fd = None;
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: SCM_RIGHTS installed this fd for us.
            fd = Some(unsafe { OwnedFd::from_raw_fd(fds[0]) });
        }
    }
    let n = msg.bytes;
    let state: Value = serde_json::from_slice(&buf[..n]).unwrap();
    (state, fd.expect("the notify fd"))
}

/// Answers every notification on `fd` with `errno`, in a thread.
fn answer(fd: OwnedFd, errno: i32) {
    use libseccomp::{ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags};
    std::thread::spawn(move || {
        while let Ok(req) = ScmpNotifReq::receive(fd.as_raw_fd()) {
            let _ = ScmpNotifResp::new_error(req.id, -errno, ScmpNotifRespFlags::empty()).respond(fd.as_raw_fd());
        }
    });
}

/// A seccomp agent: receives the notify fd with the container's state,
/// then answers every notification with `errno`.
fn agent(listener: UnixListener, errno: i32) -> Value {
    let (conn, _) = listener.accept().unwrap();
    let (state, fd) = receive_state(&conn, false);
    answer(fd, errno);
    state
}

fn notify_mkdir(sock: &Path) -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": sock,
        "listenerMetadata": "agent-hint",
        "syscalls": [{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY" }]
    })
}

#[test]
fn notifications_go_to_the_listener_with_the_state() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let agent = std::thread::spawn(move || agent(listener, libc::EDQUOT));
    let mut b = Bundle::busybox();
    b.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs"}))
    });
    b.edit(|c| c["linux"]["seccomp"] = notify_mkdir(&sock));
    b.sh("mkdir /scratch/d 2>&1; echo mkdir=$?");
    let id = unique_id("notify");
    let (code, out, err) = rt.run(&b, &id);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Disk quota exceeded"), "the agent's answer reached the container: {out}");
    let state = agent.join().unwrap();
    assert_eq!(state["fds"], json!(["seccompFd"]));
    assert_eq!(state["metadata"], "agent-hint");
    assert_eq!(state["state"]["id"], id.as_str());
    assert!(state["pid"].as_i64().unwrap() > 1);
    assert_eq!(state["pid"], state["state"]["pid"]);
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

/// runc hands the notify fd over during `create` (when the init loads the
/// filter, before it reports ready), not at `start`: an agent may wait for
/// the fd before anyone starts the container. With no_new_privs (runc's
/// default spec) berth used to load the filter only at start.
#[test]
fn the_notify_fd_and_state_reach_the_listener_during_create_before_start() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    for nnp in [true, false] {
        let mut b = Bundle::busybox();
        b.edit(|c| {
            c["process"]["noNewPrivileges"] = nnp.into();
            c["root"]["readonly"] = false.into();
            c["mounts"]
                .as_array_mut()
                .unwrap()
                .push(json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs"}));
            c["linux"]["seccomp"] = notify_mkdir(&sock);
        });
        b.sh("mkdir /scratch/d 2>/tmp/out; echo mkdir=$? >>/tmp/out");
        let id = unique_id("notify");
        rt.ok(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
        // create has returned, start has not run: the state and the fd
        // must be waiting on the agent's connection already.
        listener.set_nonblocking(true).unwrap();
        let (conn, _) = listener.accept().expect("create connected to listenerPath");
        let (state, fd) = receive_state(&conn, true);
        assert_eq!(state["fds"], json!(["seccompFd"]), "nnp={nnp}");
        assert_eq!(state["metadata"], "agent-hint");
        assert_eq!(state["state"]["id"], id.as_str());
        assert_eq!(state["state"]["status"], "creating", "as runc sends it from create");
        assert_eq!(state["pid"], rt.state(&id)["pid"], "the container's init");
        assert_eq!(rt.state(&id)["status"], "created");
        // The fd is live: the agent's answer reaches the program after start.
        answer(fd, libc::EDQUOT);
        rt.ok(&["start", &id]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while rt.state(&id)["status"] != "stopped" {
            assert!(std::time::Instant::now() < deadline, "the container never exited");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = std::fs::read_to_string(b.rootfs().join("tmp/out")).unwrap();
        assert!(out.contains("Disk quota exceeded") && out.contains("mkdir=1"), "nnp={nnp}: {out}");
        rt.ok(&["delete", &id]);
        leaks::assert_none(&id, b.path(), rt.root(), None);
    }
}

/// Each exec'd process loads the container's filter and hands its own
/// notify fd over, with the container's state as it is then.
#[test]
fn an_exec_process_hands_its_own_notify_fd_with_the_running_state() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let mut b = Bundle::busybox();
    b.mount(json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs"}));
    b.edit(|c| c["linux"]["seccomp"] = notify_mkdir(&sock));
    b.args(&["sleep", "1000"]);
    let id = unique_id("notifyexec");
    rt.ok(&["run", "-d", "--bundle", b.path().to_str().unwrap(), &id]);
    let init = agent(listener.try_clone().unwrap(), libc::EDQUOT);
    assert_eq!(init["state"]["status"], "creating");
    let exec_agent = std::thread::spawn(move || agent(listener, libc::EROFS));
    let pid_file = b.path().join("exec.pid");
    let out = rt.ok(&[
        "exec",
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
        "sh",
        "-c",
        "mkdir /scratch/d 2>&1; echo mkdir=$?",
    ]);
    assert!(out.contains("Read-only file system") && out.contains("mkdir=1"), "the exec's agent answered: {out}");
    let state = exec_agent.join().unwrap();
    assert_eq!(state["state"]["status"], "running");
    assert_eq!(state["state"]["pid"], init["pid"], "the state names the container's init");
    let exec_pid: i64 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    assert_eq!(state["pid"], exec_pid, "the process is the exec'd one, as the host sees it");
    rt.ok(&["delete", "--force", &id]);
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

#[test]
fn a_bad_profile_is_refused_before_anything_starts() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.edit(|c| c["linux"]["seccomp"] = json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{ "names": ["mkdir"], "action": "SCMP_ACT_NOTIFY" }] }));
    let id = unique_id("badsec");
    let err = rt.fails(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    assert!(err.contains("linux.seccomp") && err.contains("listenerPath"), "{err}");
    b.edit(|c| c["linux"]["seccomp"] = json!({ "defaultAction": "SCMP_ACT_FLY" }));
    let err = rt.fails(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    assert!(err.contains("linux.seccomp.defaultAction"), "{err}");
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

/// A profile older than close_range (runtime-tools' is; Docker's before
/// 2020 was), loaded before the runtime's last steps when no_new_privs is
/// off: the runtime still closes its fds off (by /proc/self/fd and fcntl)
/// and the container runs with only stdio, in the init and through exec.
#[test]
fn a_filter_without_close_range_still_leaves_the_container_only_its_stdio() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.args(&["/bin/sleep", "30"]);
    b.edit(|c| {
        c["process"]["noNewPrivileges"] = false.into();
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [{ "names": ["close_range"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1 }]
        });
    });
    b.write();
    let id = unique_id("seccomp");
    let extra = std::fs::File::open("/proc/self/exe").unwrap();
    let mut cmd = rt.cmd();
    cmd.args(["run", "--detach", "--bundle", b.path().to_str().unwrap(), &id]);
    let fd = extra.as_raw_fd();
    // SAFETY: dup2 is async-signal-safe; `extra` outlives the spawn.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || if libc::dup2(fd, 5) < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) });
    }
    let out = berth_testkit::output_via_files(&mut cmd);
    assert!(out.status.success(), "run: {}", String::from_utf8_lossy(&out.stderr));
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    let fds = |pid: i64| {
        let mut v: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        v.sort();
        v
    };
    assert_eq!(fds(pid), [0, 1, 2], "the init's fds");
    let pid_file = b.path().join("exec.pid");
    rt.ok(&["exec", "--detach", "--pid-file", pid_file.to_str().unwrap(), &id, "/bin/sleep", "30"]);
    let exec_pid: i64 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    assert_eq!(fds(exec_pid), [0, 1, 2], "the exec'd process's fds");
    rt.ok(&["delete", "--force", &id]);
    leaks::assert_none(&id, b.path(), rt.root(), None);
}
