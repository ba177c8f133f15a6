//! Every way out of a container that has been found in runc, tried here:
//! each test plays the attack and checks that the host is untouched.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use berth_testkit::{Bundle, Runtime, leaks, output_via_files, require_root, unique_id};
use serde_json::json;

fn runtime() -> Runtime {
    require_root();
    Runtime::new(env!("CARGO_BIN_EXE_berth-runtime"))
}

/// Waits up to 10 s for `path` to exist and returns its content.
fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(s) = std::fs::read_to_string(path)
            && !s.is_empty()
        {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} never appeared", path.display());
}

/// CVE-2019-5736: a process in the container holds the runtime binary
/// through /proc/1/exe while the container's init is still the runtime
/// (before `start`), waits for every runtime process to be gone, and then
/// reopens it for writing. The binary is a copy, so a failure here cannot
/// break the other tests.
#[test]
fn cve_2019_5736_the_runtime_binary_cannot_be_rewritten_from_the_container() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("berth-runtime");
    std::fs::copy(env!("CARGO_BIN_EXE_berth-runtime"), &bin).unwrap();
    let original = std::fs::read(&bin).unwrap();
    let rt = Runtime::new(&bin);

    let mut b = Bundle::busybox();
    b.args(&["/bin/sleep", "30"]);
    b.edit(|c| {
        c["root"]["readonly"] = false.into();
        // All that the attacker could want: ptrace rights over the init.
        let caps = json!(["CAP_SYS_PTRACE", "CAP_DAC_OVERRIDE", "CAP_KILL"]);
        for set in ["bounding", "effective", "permitted"] {
            c["process"]["capabilities"][set] = caps.clone();
        }
    });
    b.write();
    let id = unique_id("cve5736");
    rt.ok(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    let exe = PathBuf::from(format!("/proc/{pid}/exe"));
    let st = nix::sys::statvfs::statvfs(&exe).unwrap();
    assert!(
        st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY),
        "the waiting init's exe is on a read-only mount"
    );

    let script = "exec 3</proc/1/exe || { echo cannot-open >/tmp/result; exit; }
        echo opened >/tmp/ready
        while [ ! -e /tmp/go ]; do sleep 0.05; done
        if echo pwned 2>/tmp/err >/proc/self/fd/3; then echo WROTE; else echo REFUSED; fi >/tmp/result";
    rt.ok(&["exec", "--detach", &id, "/bin/sh", "-c", script]);
    let tmp = b.rootfs().join("tmp");
    assert_eq!(wait_for_file(&tmp.join("ready")), "opened\n");
    // The init execs sleep; `start` and `exec --detach` have exited: no
    // process runs the runtime binary any more (no ETXTBSY to hide behind).
    rt.ok(&["start", &id]);
    std::fs::write(tmp.join("go"), "").unwrap();
    let result = wait_for_file(&tmp.join("result"));
    let err = std::fs::read_to_string(tmp.join("err")).unwrap_or_default();
    assert_eq!(result, "REFUSED\n", "the container wrote the runtime binary ({err})");
    assert!(err.contains("Read-only file system"), "refused as a read-only file: {err}");
    assert!(std::fs::read(&bin).unwrap() == original, "the runtime binary changed");
    rt.ok(&["delete", "--force", &id]);
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

/// The protection costs no copy of the binary: a container under a
/// 512 KiB memory limit still starts (runc's memfd copy once made such
/// containers fail).
#[test]
fn a_container_under_a_512_kib_memory_limit_starts() {
    let rt = runtime();
    let mut b = Bundle::busybox();
    b.args(&["/bin/busybox", "echo", "started"]);
    b.edit(|c| c["linux"]["resources"]["memory"] = json!({ "limit": 512 * 1024 }));
    b.write();
    let id = unique_id("small");
    let (code, out, err) = rt.run(&b, &id);
    assert_eq!((code, out.as_str()), (0, "started\n"), "stderr: {err}");
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

/// Opens `path` as a directory fd (for [`with_fds`] to hand over).
fn inheritable_dir(path: &Path) -> OwnedFd {
    nix::fcntl::open(path, nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY, nix::sys::stat::Mode::empty())
        .unwrap()
}

/// Runs the runtime with `leaked` as its fd 7 (as a careless caller, or a
/// runtime bug like runc's leaked cgroup fd, would hand it over) and
/// `preserved` as its fd 3.
fn with_fds(rt: &Runtime, args: &[&str], leaked: &OwnedFd, preserved: &OwnedFd) -> std::process::Output {
    let mut cmd = rt.cmd();
    cmd.args(args);
    let (l, p) = (leaked.as_raw_fd(), preserved.as_raw_fd());
    // SAFETY: dup2 is async-signal-safe; both fds are open in the parent
    // and stay open until the child has exec'd.
    unsafe {
        cmd.pre_exec(move || {
            for (from, to) in [(l, 7), (p, 3)] {
                if libc::dup2(from, to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        })
    };
    output_via_files(&mut cmd)
}

/// CVE-2024-21626, the fd half: of the fds the runtime was given, the
/// container gets only 0, 1, 2 and --preserve-fds, in `run` and in `exec`.
#[test]
fn cve_2024_21626_no_runtime_fd_reaches_the_container() {
    let rt = runtime();
    let host = tempfile::tempdir().unwrap();
    let leaked = inheritable_dir(host.path());
    let preserved = inheritable_dir(host.path());
    let mut b = Bundle::busybox();
    // sleep opens nothing of its own (a shell would: saved and pipe fds),
    // so its fd table is exactly what the runtime handed over.
    b.args(&["/bin/sleep", "30"]);
    b.write();
    let id = unique_id("fds");
    let bundle = b.path().to_str().unwrap();
    let out = with_fds(&rt, &["run", "--detach", "--preserve-fds", "1", "--bundle", bundle, &id], &leaked, &preserved);
    assert!(out.status.success(), "run: {}", String::from_utf8_lossy(&out.stderr));
    let init = rt.state(&id)["pid"].as_i64().unwrap();
    assert_eq!(fds_of(init), [0, 1, 2, 3], "the init's fds");

    let pid_file = host.path().join("exec.pid");
    let out = with_fds(
        &rt,
        &["exec", "--detach", "--preserve-fds", "1", "--pid-file", pid_file.to_str().unwrap(), &id, "/bin/sleep", "30"],
        &leaked,
        &preserved,
    );
    assert!(out.status.success(), "exec: {}", String::from_utf8_lossy(&out.stderr));
    let pid: i64 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    assert_eq!(fds_of(pid), [0, 1, 2, 3], "the exec'd process's fds");
    rt.ok(&["delete", "--force", &id]);
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

/// The open fds of a process, from the host's /proc.
fn fds_of(pid: i64) -> Vec<u32> {
    let mut fds: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort();
    fds
}

/// CVE-2024-21626, the cwd half: a cwd of /proc/self/fd/7, with fd 7 of
/// the runtime open on a host directory, must not land the process there.
#[test]
fn cve_2024_21626_cwd_is_resolved_inside_the_container() {
    let rt = runtime();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("host-secret-file"), "x").unwrap();
    let leaked = inheritable_dir(host.path());
    let preserved = inheritable_dir(host.path());
    let mut b = Bundle::busybox();
    b.sh("ls; pwd");
    b.edit(|c| c["process"]["cwd"] = "/proc/self/fd/7".into());
    b.write();
    let id = unique_id("cwd");
    let out = with_fds(&rt, &["run", "--bundle", b.path().to_str().unwrap(), &id], &leaked, &preserved);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains("host-secret-file"), "the process ran in the host directory: {stdout}");
    assert!(!out.status.success(), "a cwd that is not in the container is an error; stdout: {stdout}");
    assert!(stderr.contains("/proc/self/fd/7"), "the error names the cwd: {stderr}");
    leaks::assert_none(&id, b.path(), rt.root(), None);

    // The same through exec --cwd.
    b.sh("sleep 30");
    b.edit(|c| c["process"]["cwd"] = "/".into());
    b.write();
    let id = unique_id("cwd");
    rt.ok(&["run", "--detach", "--bundle", b.path().to_str().unwrap(), &id]);
    let out = with_fds(&rt, &["exec", "--cwd", "/proc/self/fd/7", &id, "/bin/ls"], &leaked, &preserved);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("host-secret-file"), "exec ran in the host directory: {stdout}");
    assert!(!out.status.success(), "exec with a cwd outside the container fails; stdout: {stdout}");
    rt.ok(&["delete", "--force", &id]);
    leaks::assert_none(&id, b.path(), rt.root(), None);
}

/// CVE-2019-16884 / CVE-2023-27561: proc or sysfs whose target in the
/// rootfs is a symlink would be mounted wherever the image points it (and
/// could hide /proc/self/attr from the LSM); a mount over procfs other than
/// lxcfs's files would do the same. All refused, naming the mount.
#[test]
fn cve_2019_16884_proc_and_sysfs_over_symlinks_and_mounts_over_procfs_are_refused() {
    let rt = runtime();
    for (what, link) in [("proc", "fakeproc"), ("sys", "fakesys")] {
        let b = Bundle::busybox();
        let rootfs = b.rootfs();
        std::fs::remove_dir(rootfs.join(what)).unwrap();
        std::fs::create_dir(rootfs.join(link)).unwrap();
        std::os::unix::fs::symlink(link, rootfs.join(what)).unwrap();
        let id = unique_id("cve16884");
        let (code, _, err) = rt.run(&b, &id);
        assert_ne!(code, 0, "{what} mounted through a symlink");
        assert!(err.contains(&format!("/{what}")) && err.contains("must be mounted on ordinary directory"), "{err}");
        assert_eq!(std::fs::read_dir(rootfs.join(link)).unwrap().count(), 0, "nothing mounted through the link");
        leaks::assert_none(&id, b.path(), rt.root(), None);
    }

    let host = tempfile::tempdir().unwrap();
    let file = host.path().join("f");
    std::fs::write(&file, "lxcfs-like\n").unwrap();
    let mut b = Bundle::busybox();
    b.mount(json!({ "destination": "/proc/self/attr/exec", "type": "bind", "source": file, "options": ["bind"] }));
    b.sh("true");
    let id = unique_id("cve27561");
    let (code, _, err) = rt.run(&b, &id);
    assert_ne!(code, 0, "a bind mount over /proc/self/attr was accepted");
    assert!(err.contains("/proc/self/attr/exec"), "the error names the target: {err}");
    leaks::assert_none(&id, b.path(), rt.root(), None);

    // What lxcfs does is still allowed.
    let mut b = Bundle::busybox();
    b.mount(json!({ "destination": "/proc/uptime", "type": "bind", "source": file, "options": ["bind"] }));
    b.sh("cat /proc/uptime");
    let id = unique_id("lxcfs");
    let (code, out, err) = rt.run(&b, &id);
    assert_eq!((code, out.as_str()), (0, "lxcfs-like\n"), "{err}");
}

/// CVE-2021-30465: a mount target in a volume the attacker controls is
/// swapped between a directory and a symlink out of the rootfs while the
/// runtime sets up mounts. Whatever the timing, the tmpfs lands inside the
/// rootfs (where the container sees it) or the run fails; never elsewhere.
#[test]
fn cve_2021_30465_a_target_swapped_for_a_symlink_never_mounts_outside_the_rootfs() {
    let rt = runtime();
    let volume = tempfile::tempdir().unwrap();
    let victim = tempfile::Builder::new().prefix("berth-victim-").tempdir().unwrap();
    let (target, alt) = (volume.path().join("target"), volume.path().join("alt"));
    std::fs::create_dir(&target).unwrap();
    std::os::unix::fs::symlink(victim.path(), &alt).unwrap();

    let mut b = Bundle::busybox();
    // Inside the rootfs the symlink's target exists too: that is where an
    // in-root resolution puts the mount.
    let inside = b.rootfs().join(victim.path().strip_prefix("/").unwrap());
    std::fs::create_dir_all(&inside).unwrap();
    b.mount(json!({ "destination": "/vol", "type": "bind", "source": volume.path(), "options": ["rbind"] }));
    b.mount(json!({ "destination": "/vol/target", "type": "tmpfs", "source": "tmpfs", "options": ["size=1240k"] }));
    b.sh("grep -c size=1240k /proc/self/mountinfo");
    b.write();

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU32::new(0));
    let racer = {
        let (stop, swaps, target, alt) = (stop.clone(), swaps.clone(), target.clone(), alt.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                nix::fcntl::renameat2(
                    nix::fcntl::AT_FDCWD,
                    &target,
                    nix::fcntl::AT_FDCWD,
                    &alt,
                    nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                )
                .unwrap();
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..40 {
        let id = unique_id("cve30465");
        let (code, out, err) = rt.run(&b, &id);
        if code == 0 {
            assert_eq!(out, "1\n", "the container does not see its tmpfs: it was mounted elsewhere ({err})");
            ok += 1;
        } else {
            assert!(err.contains("/vol/target"), "a failure names the mount: {err}");
            refused += 1;
        }
        assert_eq!(std::fs::read_dir(victim.path()).unwrap().count(), 0, "the host's directory was written");
        leaks::assert_none(&id, b.path(), rt.root(), None);
    }
    stop.store(true, Ordering::Relaxed);
    racer.join().unwrap();
    assert!(leaks::mounts_mentioning(&victim.path().to_string_lossy()).is_empty(), "a mount on the host's directory");
    eprintln!("{ok} runs saw their tmpfs, {refused} refused, {} swaps", swaps.load(Ordering::Relaxed));
}

/// A version 2 file capability (struct vfs_cap_data): `permitted` and
/// `inheritable` as bit masks.
fn set_file_caps(path: &Path, permitted: u64, inheritable: u64) {
    let mut v = Vec::with_capacity(20);
    // No effective bit: with it, a file whose permitted set is not granted
    // in full may not be executed at all (EPERM); without it, the process
    // may raise what it gained, which is what an attack wants to see.
    v.extend_from_slice(&0x0200_0000u32.to_le_bytes());
    for (p, i) in [(permitted as u32, inheritable as u32), ((permitted >> 32) as u32, (inheritable >> 32) as u32)] {
        v.extend_from_slice(&p.to_le_bytes());
        v.extend_from_slice(&i.to_le_bytes());
    }
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: path and value are valid for the call; setxattr copies them.
    let rc = unsafe { libc::setxattr(path.as_ptr(), c"security.capability".as_ptr(), v.as_ptr().cast(), v.len(), 0) };
    assert_eq!(rc, 0, "setxattr security.capability: {}", std::io::Error::last_os_error());
}

const CAP_NET_RAW: u64 = 1 << 13;
const CAP_SYS_ADMIN: u64 = 1 << 21;

/// CVE-2022-29162: `spec` gives no inheritable capabilities, and a program
/// with file capabilities run by a non-root user (no_new_privs off, so file
/// capabilities count at all) is permitted none beyond the bounding set, in the
/// init and through exec.
#[test]
fn cve_2022_29162_file_capabilities_grant_nothing_beyond_the_bounding_set() {
    let rt = runtime();
    let spec_dir = tempfile::tempdir().unwrap();
    rt.ok(&["spec", "--bundle", spec_dir.path().to_str().unwrap()]);
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(spec_dir.path().join("config.json")).unwrap()).unwrap();
    let inh = &spec["process"]["capabilities"]["inheritable"];
    assert!(inh.is_null() || inh.as_array().is_some_and(|a| a.is_empty()), "spec's inheritable set: {inh}");

    let mut b = Bundle::busybox();
    let capbb = b.rootfs().join("capbin/busybox");
    std::fs::create_dir(b.rootfs().join("capbin")).unwrap();
    std::fs::copy(berth_testkit::busybox(), &capbb).unwrap();
    set_file_caps(&capbb, CAP_NET_RAW | CAP_SYS_ADMIN, CAP_NET_RAW | CAP_SYS_ADMIN);
    b.args(&["/capbin/busybox", "grep", "CapPrm", "/proc/self/status"]);
    b.edit(|c| {
        c["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
        c["process"]["noNewPrivileges"] = false.into();
        c["process"]["capabilities"] = json!({ "bounding": ["CAP_NET_RAW"] });
    });
    b.write();
    let prm = |s: &str| u64::from_str_radix(s.split_whitespace().nth(1).expect("CapPrm: <hex>"), 16).unwrap();
    let id = unique_id("cve29162");
    let (code, out, err) = rt.run(&b, &id);
    assert_eq!(code, 0, "run: {err}");
    assert_eq!(prm(&out), CAP_NET_RAW, "the init's program: only the bounding set");
    leaks::assert_none(&id, b.path(), rt.root(), None);

    b.args(&["/capbin/busybox", "sleep", "30"]);
    b.write();
    let id = unique_id("cve29162");
    rt.ok(&["run", "--detach", "--bundle", b.path().to_str().unwrap(), &id]);
    let out = rt.ok(&["exec", "--user", "1000:1000", &id, "/capbin/busybox", "grep", "CapPrm", "/proc/self/status"]);
    assert_eq!(prm(&out), CAP_NET_RAW, "an exec'd program: only the bounding set");
    rt.ok(&["delete", "--force", &id]);
    leaks::assert_none(&id, b.path(), rt.root(), None);
}
