//! Test fixtures every berth layer shares.
//!
//! - [`Bundle`]: an OCI bundle whose rootfs is Debian's busybox-static, with
//!   a default config.json to adjust per test;
//! - [`Runtime`]: a runtime binary with its own temporary state root, that
//!   force-deletes every container it still has when dropped (so a failing
//!   test leaves nothing running);
//! - [`leaks`]: what a container may leave behind on the host (mounts,
//!   cgroups, processes), for tests to assert there is none;
//! - [`invariants`]: what must hold of a whole berth root after any kill or
//!   race (the crash harness and the race tests check it).
//!
//! Integration tests need root and real kernel features; [`require_root`]
//! makes that explicit instead of letting them fail obscurely.

pub mod cgroup;
pub mod cri;
pub mod image;
pub mod invariants;
pub mod leaks;
pub mod registry;
pub mod user;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{Value, json};

/// Seeded randomness for tests that must be replayable (the crash harness).
pub use rand;

/// Panics with a clear message unless running as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "berth's integration tests need root (namespaces, mounts, cgroups); run them as root");
}

/// Runs `body` on a fresh thread in a fresh network namespace that plays
/// the host (lo up): the bridges, veths, iptables rules and netns berth
/// makes live there and vanish with it; everything `body` spawns inherits
/// it. A panic in `body` is the caller's.
pub fn in_test_host<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    require_root();
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare a network namespace for the test");
        let up = std::process::Command::new("ip").args(["link", "set", "lo", "up"]).status();
        assert!(up.as_ref().is_ok_and(|s| s.success()), "ip link set lo up: {up:?}");
        body()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Polls `f` until it gives Some, at most 30 s (every 100 ms); panics
/// naming `what` when it never does. For what a shim or daemon writes on
/// its own time.
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: not within 30 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A container id no other test (or test run) uses.
pub fn unique_id(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A sleep duration (in seconds) no other test uses, so a leak check can
/// find exactly this test's processes by their command line
/// (`sleep <marker>`). Long enough to outlive any test.
pub fn unique_sleep() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{}", 10_000_000 + (std::process::id() % 100_000) * 100 + n % 100)
}

/// Where busybox-static is (Debian's busybox-static installs /bin/busybox).
pub fn busybox() -> PathBuf {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("busybox not found: install Debian's busybox-static");
}

/// Fills `rootfs` with a static busybox and a link for each applet.
pub fn make_busybox_rootfs(rootfs: &Path) {
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for d in ["proc", "sys", "dev", "tmp", "etc", "root"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy(busybox(), bin.join("busybox")).unwrap();
    let out = Command::new(busybox()).arg("--list").output().expect("run busybox --list");
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        // Linking `busybox` itself would overwrite the binary with a loop.
        if applet.is_empty() || applet == "busybox" {
            continue;
        }
        let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\nnobody:x:65534:\n").unwrap();
}

/// The default config.json: runc's `spec`, minus the terminal, running `true`.
pub fn default_config() -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": "1.2.0",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": ["true"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": { "bounding": caps, "effective": caps, "permitted": caps },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "berth",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }
        ],
        "linux": {
            "resources": { "devices": [{ "allow": false, "access": "rwm" }] },
            "namespaces": [{ "type": "pid" }, { "type": "network" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

/// An OCI bundle in a temporary directory, removed when dropped.
pub struct Bundle {
    dir: tempfile::TempDir,
    pub config: Value,
}

impl Bundle {
    /// A busybox bundle with [`default_config`].
    pub fn busybox() -> Bundle {
        let dir = tempfile::Builder::new().prefix("berth-bundle-").tempdir().unwrap();
        make_busybox_rootfs(&dir.path().join("rootfs"));
        let b = Bundle { dir, config: default_config() };
        b.write();
        b
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// Sets process.args and writes config.json.
    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        self.config["process"]["args"] = json!(args);
        self.write();
        self
    }

    /// Runs `sh -c script` in the container.
    pub fn sh(&mut self, script: &str) -> &mut Self {
        self.args(&["sh", "-c", script])
    }

    /// Changes the config with `f`, then writes it.
    pub fn edit(&mut self, f: impl FnOnce(&mut Value)) -> &mut Self {
        f(&mut self.config);
        self.write();
        self
    }

    /// Appends a mount.
    pub fn mount(&mut self, m: Value) -> &mut Self {
        self.edit(|c| c["mounts"].as_array_mut().unwrap().push(m))
    }

    pub fn write(&self) {
        std::fs::write(self.dir.path().join("config.json"), serde_json::to_vec_pretty(&self.config).unwrap()).unwrap();
    }
}

/// A runtime binary with its own state root.
pub struct Runtime {
    bin: PathBuf,
    root: tempfile::TempDir,
}

impl Runtime {
    pub fn new(bin: impl Into<PathBuf>) -> Runtime {
        let root = tempfile::Builder::new().prefix("berth-state-").tempdir().unwrap();
        Runtime { bin: bin.into(), root }
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// A command for the runtime with --root set.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(self.root.path());
        c
    }

    /// Runs the runtime with `args` and returns its output (see
    /// [`output_via_files`]).
    pub fn exec(&self, args: &[&str]) -> Output {
        output_via_files(self.cmd().args(args))
    }

    /// Runs the runtime, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(out.status.success(), "{args:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the runtime, asserts failure, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(!out.status.success(), "{args:?} should have failed; stdout: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `run --bundle B ID` in the foreground; returns (exit code, stdout, stderr).
    pub fn run(&self, bundle: &Bundle, id: &str) -> (i32, String, String) {
        let out = self.exec(&["run", "--bundle", bundle.path().to_str().unwrap(), id]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The container's state as JSON.
    pub fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).expect("state prints JSON")
    }

    /// Ids of the containers in this runtime's root.
    pub fn ids(&self) -> Vec<String> {
        self.exec(&["list", "-q"])
            .stdout
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect()
    }
}

/// Like Command::output, but stdout and stderr go through files, not
/// pipes: a container started by `create` or `run -d` inherits them (as
/// with runc), and a pipe would only reach end-of-file when the container
/// exits. stdin is /dev/null.
pub fn output_via_files(cmd: &mut Command) -> Output {
    let out = tempfile::tempfile().expect("temp file for stdout");
    let err = tempfile::tempfile().expect("temp file for stderr");
    let status = cmd
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(err.try_clone().expect("dup"))
        .status()
        .expect("run the runtime");
    Output { status, stdout: read_all(out), stderr: read_all(err) }
}

fn read_all(mut f: std::fs::File) -> Vec<u8> {
    use std::io::{Read, Seek};
    let mut v = Vec::new();
    f.seek(std::io::SeekFrom::Start(0)).expect("seek");
    f.read_to_end(&mut v).expect("read");
    v
}

impl Drop for Runtime {
    fn drop(&mut self) {
        for id in self.ids() {
            let _ = self.exec(&["delete", "--force", &id]);
        }
    }
}

/// Runs `cmd` with a new pty as its stdin, stdout and stderr, types
/// `input`, and collects what it prints until it exits. Returns (exit
/// code, output).
pub fn run_on_pty(cmd: &mut Command, input: &[u8], timeout: std::time::Duration) -> (Option<i32>, String) {
    use std::io::{Read, Write};
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave = std::fs::File::from(pty.slave);
    let mut child = cmd
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .expect("spawn on the pty");
    // Release the Command's copies of the slave, so only the child holds it.
    cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut master = std::fs::File::from(pty.master);
    master.write_all(input).expect("type into the pty");
    nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK)).unwrap();
    let deadline = std::time::Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let code = loop {
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no exit within {timeout:?}; output so far: {}", String::from_utf8_lossy(&got));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    (code, String::from_utf8_lossy(&got).into_owned())
}

/// A binary of this workspace (e.g. "berth-runtime") for tests of another
/// crate, which cargo does not build for them: target/debug/NAME, built
/// with `cargo build -p NAME` (via $CARGO) if it is missing.
pub fn workspace_bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        // Lexically, not with "..": the v2 guest has the binaries at their
        // host paths but not the source tree around them.
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).unwrap_or(Path::new("/")).join("target")
        });
    let bin = target.join("debug").join(name);
    if !bin.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo).args(["build", "-p", name]).status().expect("run cargo build");
        assert!(status.success(), "cargo build -p {name} failed");
    }
    assert!(bin.exists(), "{} missing: build it with cargo build -p {name}", bin.display());
    bin
}
