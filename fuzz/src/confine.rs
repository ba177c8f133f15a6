//! A worker thread with a mount namespace of its own in which everything
//! but one sandbox directory is read-only, for targets that write files
//! from untrusted input as root (layer unpack). A write that escapes the
//! sandbox then fails with EROFS instead of touching the host, and the
//! target reports it as a crash: nothing in the sandbox is read-only, so
//! EROFS can only come from outside it.
//!
//! Only this thread's mount namespace changes (unshare(CLONE_NEWNS) of one
//! thread, mounts made private first), so nothing outside the fuzz
//! process sees it, and the fuzzer's own thread keeps writing its corpus.
//! cgroup mounts are left as they are.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};

/// Mounts made read-only in the worker's namespace, when they exist.
const READ_ONLY: [&str; 5] = ["/", "/dev", "/dev/shm", "/proc", "/sys"];

type Job = Box<dyn FnOnce() + Send>;

pub struct Confined {
    jobs: mpsc::Sender<(Job, mpsc::Sender<()>)>,
    /// Whether the namespace was set up (it needs CAP_SYS_ADMIN).
    pub isolated: bool,
}

impl Confined {
    /// Starts the worker; `sandbox` stays writable.
    pub fn new(sandbox: &Path) -> Confined {
        let (tx, rx) = mpsc::channel::<(Job, mpsc::Sender<()>)>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let sandbox: PathBuf = sandbox.to_path_buf();
        std::thread::spawn(move || {
            let isolated = match isolate(&sandbox) {
                Ok(()) => {
                    check(&sandbox);
                    true
                }
                Err(e) => {
                    eprintln!("berth-fuzz: no read-only mount namespace ({e}); escapes are caught by the checks only");
                    false
                }
            };
            let _ = ready_tx.send(isolated);
            for (job, done) in rx {
                job();
                let _ = done.send(());
            }
        });
        let isolated = ready_rx.recv().expect("the worker starts");
        Confined { jobs: tx, isolated }
    }

    /// Runs `f` on the worker and waits for it. A panic there aborts the
    /// process, which libFuzzer reports as a crash of this input.
    pub fn run(&self, f: impl FnOnce() + Send + 'static) {
        let (done_tx, done_rx) = mpsc::channel();
        self.jobs.send((Box::new(f), done_tx)).expect("the worker runs");
        done_rx.recv().expect("the worker finishes the job");
    }
}

fn isolate(sandbox: &Path) -> nix::Result<()> {
    unshare(CloneFlags::CLONE_NEWNS)?;
    // Private first: nothing below may propagate to the host.
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)?;
    // The sandbox becomes a mount of its own, so it stays writable when
    // the filesystem it is on becomes read-only.
    mount(Some(sandbox), sandbox, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
    for m in READ_ONLY {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        match mount(None::<&str>, m, None::<&str>, flags, None::<&str>) {
            Ok(()) => {}
            // Not a mount point on this machine.
            Err(nix::errno::Errno::EINVAL) if m != "/" => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Proves the namespace works, once: outside the sandbox a file cannot be
/// made (EROFS), inside it can.
fn check(sandbox: &Path) {
    let outside = sandbox.with_extension(format!("probe-{}", std::process::id()));
    match std::fs::File::create(&outside) {
        Err(e) if e.raw_os_error() == Some(nix::libc::EROFS) => {}
        Ok(_) => {
            let _ = std::fs::remove_file(&outside);
            panic!("berth-fuzz: {} could be created: the confinement does not hold", outside.display());
        }
        Err(e) => panic!("berth-fuzz: probe {}: {e} (expected EROFS)", outside.display()),
    }
    let inside = sandbox.join(".probe");
    std::fs::write(&inside, b"").expect("the sandbox stays writable");
    std::fs::remove_file(&inside).expect("remove the probe");
}
