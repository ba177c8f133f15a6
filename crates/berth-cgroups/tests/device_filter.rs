//! The cgroup v2 device filter against the real kernel (needs root and a
//! cgroup2 mount; hybrid hosts have one at /sys/fs/cgroup/unified).
//!
//! Each test makes its own cgroup (berth-devtest-<pid>-<n>) at the top of
//! the cgroup2 hierarchy, and checks accesses from short-lived children
//! that move themselves into it before opening a device: the filter is
//! checked on open and mknod, by the opening process's cgroup.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use berth_cgroups::devices::{DeviceKind, DeviceRule};
use berth_cgroups::v2::devices::{self as device_filter, PROGRAM_NAME};

use DeviceKind::*;

/// The exit status of a child that could not join the test cgroup, so that
/// it is never mistaken for a refused open.
const JOIN_FAILED: i32 = 97;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The first cgroup2 mount point, from /proc/self/mountinfo.
fn cgroup2_root() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

/// A cgroup of our own, killed and removed on drop even if the test fails.
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn new() -> Option<TestCgroup> {
        static N: AtomicUsize = AtomicUsize::new(0);
        if !is_root() {
            eprintln!("SKIPPED: the device filter tests need root (to load BPF and create cgroups)");
            return None;
        }
        let root = cgroup2_root().expect("no cgroup2 hierarchy mounted: cannot test the v2 device filter");
        let name = format!("berth-devtest-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let path = root.join(name);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Some(TestCgroup(path))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Children are reaped as soon as they ran, but a failed assertion
        // can leave one behind: cgroup.kill (5.14+) takes care of it.
        let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
        for _ in 0..200 {
            match std::fs::remove_dir(&self.0) {
                Ok(()) => return,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Err(e) => return eprintln!("rmdir {}: {e}", self.0.display()),
            }
        }
        eprintln!("rmdir {}: still busy", self.0.display());
    }
}

fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("test paths have no NUL")
}

/// What a child does inside the cgroup.
enum Access {
    Open(&'static str, libc::c_int),
    Mknod(PathBuf, libc::mode_t, libc::dev_t),
}

/// Runs `access` in a child that has joined `cg`: Ok, or the errno.
fn access_in(cg: &Path, access: Access) -> Result<(), i32> {
    let procs = c_path(&cg.join("cgroup.procs"));
    let (path, flags, mode, dev) = match &access {
        Access::Open(dev, flags) => (c_path(Path::new(dev)), *flags, 0, 0),
        Access::Mknod(path, mode, dev) => (c_path(path), -1, *mode, *dev),
    };
    let mut cmd = Command::new("/bin/true");
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe calls (open, write, close, mknod, _exit) on C
    // strings built before the fork: it neither allocates nor locks.
    unsafe {
        cmd.pre_exec(move || {
            // "0" moves the writer itself.
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                libc::_exit(JOIN_FAILED);
            }
            libc::close(fd);
            if flags >= 0 {
                let dev = libc::open(path.as_ptr(), flags | libc::O_CLOEXEC);
                if dev < 0 {
                    return Err(io::Error::last_os_error());
                }
                libc::close(dev);
            } else if libc::mknod(path.as_ptr(), mode, dev) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    };
    match cmd.status() {
        Ok(status) => {
            assert!(
                status.success(),
                "child failed ({status}); {JOIN_FAILED} means it could not join {}",
                cg.display()
            );
            Ok(())
        }
        Err(e) => Err(e.raw_os_error().unwrap_or_else(|| panic!("spawn: {e}"))),
    }
}

fn open_in(cg: &Path, dev: &'static str, flags: libc::c_int) -> Result<(), i32> {
    access_in(cg, Access::Open(dev, flags))
}

fn rule(allow: bool, kind: DeviceKind, major: i64, minor: Option<i64>, access: &str) -> DeviceRule {
    DeviceRule { allow, kind, major: Some(major), minor, access: access.to_string() }
}

fn deny_all() -> DeviceRule {
    DeviceRule { allow: false, kind: All, major: None, minor: None, access: "rwm".into() }
}

/// How many of our programs are attached to `cg`.
fn ours(cg: &Path) -> usize {
    device_filter::attached(cg).expect("query").iter().filter(|p| p.name == PROGRAM_NAME).count()
}

/// The tests assume the usual numbers for these nodes.
fn assert_device(path: &str, major: u32, minor: u32) {
    let rdev = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}")).rdev();
    assert_eq!((libc::major(rdev), libc::minor(rdev)), (major, minor), "{path}");
}

const EPERM: Result<(), i32> = Err(libc::EPERM);
use libc::{O_RDONLY, O_RDWR, O_WRONLY};

#[test]
fn filter_is_enforced_replaced_and_removed() {
    let Some(cg) = TestCgroup::new() else { return };
    let cg = &cg.0;
    for (path, minor) in [("/dev/null", 3), ("/dev/zero", 5), ("/dev/full", 7), ("/dev/urandom", 9)] {
        assert_device(path, 1, minor);
    }
    let nodes = tempfile::tempdir().expect("tempdir");
    let mknod = |name: &str, kind: libc::mode_t, major, minor| {
        let path = nodes.path().join(name);
        let r = access_in(cg, Access::Mknod(path.clone(), kind | 0o600, libc::makedev(major, minor)));
        let _ = std::fs::remove_file(path);
        r
    };
    assert_eq!(open_in(cg, "/dev/zero", O_RDONLY), Ok(()), "no filter yet");

    // A deny-all list: only what is allowed gets through.
    let first = [
        deny_all(),
        rule(true, Char, 1, Some(3), "rw"),       // null
        rule(true, Char, 1, Some(5), "w"),        // zero, write only
        rule(true, Char, 1, Some(9), "rwm"),      // urandom ...
        rule(false, Char, 1, Some(9), "r"),       // ... but not read
        DeviceRule::allow(Char, None, None, "m"), // mknod of any char device
    ];
    device_filter::apply(cg, &first).expect("apply the first rules");
    assert_eq!(ours(cg), 1);
    assert_eq!(open_in(cg, "/dev/null", O_RDWR), Ok(()));
    assert_eq!(open_in(cg, "/dev/zero", O_WRONLY), Ok(()));
    assert_eq!(open_in(cg, "/dev/zero", O_RDONLY), EPERM, "zero: write only");
    assert_eq!(open_in(cg, "/dev/zero", O_RDWR), EPERM, "an allow must grant read and write");
    assert_eq!(open_in(cg, "/dev/urandom", O_WRONLY), Ok(()));
    assert_eq!(open_in(cg, "/dev/urandom", O_RDWR), EPERM, "a deny of read stops read-write");
    assert_eq!(open_in(cg, "/dev/full", O_RDONLY), EPERM, "not listed: denied");
    assert_eq!(mknod("null", libc::S_IFCHR, 1, 3), Ok(()));
    assert_eq!(mknod("loop", libc::S_IFBLK, 7, 0), EPERM, "mknod allowed for char devices only");

    // Replaced: no deny-all, so everything not denied is allowed.
    let second = [rule(false, Char, 1, Some(3), "w"), rule(false, Block, 7, None, "m")];
    device_filter::apply(cg, &second).expect("apply the second rules");
    assert_eq!(ours(cg), 1, "the first program was detached");
    assert_eq!(open_in(cg, "/dev/null", O_RDONLY), Ok(()));
    assert_eq!(open_in(cg, "/dev/null", O_WRONLY), EPERM);
    assert_eq!(open_in(cg, "/dev/zero", O_RDWR), Ok(()), "the first rules no longer apply");
    assert_eq!(open_in(cg, "/dev/full", O_RDWR), Ok(()));
    assert_eq!(mknod("loop", libc::S_IFBLK, 7, 0), EPERM);
    assert_eq!(mknod("sda", libc::S_IFBLK, 8, 0), Ok(()));

    // No rules: no filter at all.
    device_filter::apply(cg, &[]).expect("remove the filter");
    assert_eq!(ours(cg), 0);
    assert_eq!(open_in(cg, "/dev/null", O_WRONLY), Ok(()));
    assert_eq!(mknod("loop", libc::S_IFBLK, 7, 0), Ok(()));
    device_filter::apply(cg, &[]).expect("removing no filter is fine");
}

/// Every shape the emitter produces passes the kernel's verifier, and
/// re-applying keeps exactly one program attached.
#[test]
fn verifier_accepts_every_shape() {
    let Some(cg) = TestCgroup::new() else { return };
    let cg = &cg.0;
    let all = DeviceRule::allow(All, None, None, "rwm");
    let shapes: Vec<Vec<DeviceRule>> = vec![
        vec![deny_all()],
        vec![all.clone()],
        vec![deny_all(), all.clone(), rule(false, Char, 1, Some(3), "w")],
        vec![deny_all(), rule(false, Char, 1, Some(3), "w"), all],
        vec![deny_all(), rule(true, Char, 0x8000_0000, Some(0xffff_fffe), "rw")],
        vec![rule(false, Block, -1, None, "rwm"), rule(true, Char, 1 << 33, Some(1), "r")],
        vec![rule(true, Char, 1, Some(3), ""), rule(false, Char, 1, Some(3), "")],
        berth_cgroups::devices::effective_rules(&[deny_all()]),
        // Long lists stay well inside the kernel's limits.
        (0..5000).map(|i| rule(i % 2 == 0, Char, i, Some(i), "rw")).collect(),
    ];
    for rules in &shapes {
        device_filter::apply(cg, rules).unwrap_or_else(|e| panic!("{} rules: {e}", rules.len()));
        assert_eq!(ours(cg), 1);
    }
    device_filter::apply(cg, &[]).expect("remove the filter");
    assert_eq!(ours(cg), 0);
}
