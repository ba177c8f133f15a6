//! The crash harness: SIGKILL berth's processes (the CLI, a container's
//! shim, the OCI runtime the CLI or shim runs, the CNI plugins and other
//! helpers the CLI runs) at random moments of `pull`, `run -d` (with
//! `--network none`, on the default bridge with `-p`, on a user network),
//! `rm -f`, `rmi`, `image prune`, `system prune` and `network create`, and
//! after each kill check the invariants of berth_testkit::invariants:
//! every blob hashes to its name; every listed container is usable (start,
//! exec, stop) unless it says it is dead; one `rm -f` removes any of them;
//! and then nothing is left (mounts, cgroups, netns pins, veths, firewall
//! rules, address leases, processes, state dirs, locks). At the end of each
//! scenario `berth system check` must find nothing, the image must be
//! removable and GC must leave an empty store.
//!
//! Each scenario runs in a network namespace of its own (bridges and
//! iptables rules never touch the host's), with its own root, runroot,
//! cgroup parent and registry.
//!
//! Knobs (environment):
//! - `BERTH_CRASH_ITERATIONS=N`: iterations per scenario (CI runs a few
//!   dozen in all; a long run takes hundreds);
//! - `BERTH_CRASH_SEED=S`: the base seed (printed in every failure);
//!   iteration i uses S+i, so `BERTH_CRASH_SEED=<an iteration's seed>
//!   BERTH_CRASH_ITERATIONS=1` replays that iteration's choices (what,
//!   whom and when to kill; the kill's effect still depends on timing);
//! - `BERTH_CRASH_ALLOW=usable,firewall,...`: invariants (by name) reported
//!   as warnings instead of failures, for a known bug not fixed yet.
//!
//! A violation does not stop a scenario: the root is scrubbed (processes
//! killed, `system check --repair`, leftovers removed by hand) and the next
//! iteration runs; the test fails at the end with every violation grouped
//! by invariant, each with its seed and what was killed when.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use berth_testkit::invariants::{self as inv, Invariant, Scope, Violation};
use berth_testkit::rand::rngs::StdRng;
use berth_testkit::rand::{Rng, SeedableRng};
use berth_testkit::workspace_bin;
use common::Berth;

/// What to kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The `berth` command itself.
    Cli,
    /// A container's berth-shim (it outlives the CLI).
    Shim,
    /// A berth-runtime process (run by the CLI or by a shim).
    Runtime,
    /// Any other process the CLI runs (CNI plugins, iptables, cp).
    Helper,
}

/// One kill: whom, after how long (from the CLI's start for the CLI,
/// from the target's appearance otherwise), and how many targets of that
/// kind to let pass first (so not only the first runtime call dies).
#[derive(Debug, Clone, Copy)]
struct Kill {
    target: Target,
    delay: Duration,
    skip: usize,
}

/// What a command run with a kill did.
struct Ran {
    /// What was killed; None when the target never appeared or had ended.
    killed: Option<String>,
    output: Result<Output, Violation>,
    elapsed: Duration,
}

impl Ran {
    /// A command that did not end is the one violation running it can show.
    fn hung(&self) -> Vec<Violation> {
        self.output.as_ref().err().cloned().into_iter().collect()
    }
}

/// A violation and how it came about.
struct Found {
    seed: u64,
    what: String,
    v: Violation,
}

struct Harness {
    b: Berth,
    scope: Scope,
    scenario: &'static str,
    test: &'static str,
    base_seed: u64,
    iterations: u64,
    allowed: BTreeSet<String>,
    found: Vec<Found>,
    shim: PathBuf,
    /// Kills that landed (the target was found running), for the summary.
    kills: std::cell::Cell<u64>,
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

impl Harness {
    /// A fresh berth (root, registry, cgroup parent) for one scenario in
    /// this thread's network namespace, and the scenario's seed and
    /// iteration count (`ci` unless BERTH_CRASH_ITERATIONS says).
    fn new(scenario: &'static str, test: &'static str, ci: u64) -> Harness {
        let b = Berth::new();
        let scope = Scope::of_command(&b.command(), true);
        let base_seed = env_u64("BERTH_CRASH_SEED").unwrap_or_else(|| {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            (t.as_nanos() as u64) ^ ((std::process::id() as u64) << 32)
        });
        let iterations = env_u64("BERTH_CRASH_ITERATIONS").unwrap_or(ci);
        let allowed = std::env::var("BERTH_CRASH_ALLOW")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        eprintln!("crash harness {scenario}: BERTH_CRASH_SEED={base_seed}, {iterations} iterations");
        let shim = workspace_bin("berth-shim");
        Harness {
            b,
            scope,
            scenario,
            test,
            base_seed,
            iterations,
            allowed,
            found: Vec::new(),
            shim,
            kills: Default::default(),
        }
    }

    fn cli(&self) -> impl Fn(&[&str]) -> Output + '_ {
        |args: &[&str]| self.b.cmd(args)
    }

    fn ok(&self, args: &[&str]) -> String {
        self.b.ok(args)
    }

    /// `text` with the test's temp dir shown as $DIR (shorter reports).
    fn short(&self, text: &str) -> String {
        text.replace(&self.b.dir.path().display().to_string(), "$DIR")
    }

    fn seed(&self, i: u64) -> u64 {
        self.base_seed.wrapping_add(i)
    }

    /// Records violations seen in the iteration with `seed`; scrubs the
    /// root when there were any, so the next iteration starts clean.
    fn record(&mut self, seed: u64, what: &str, vs: Vec<Violation>) {
        let what = self.short(what);
        if vs.is_empty() {
            eprintln!("crash harness {}: seed {seed}: {what}: all invariants hold", self.scenario);
            return;
        }
        for v in &vs {
            eprintln!("crash harness {}: seed {seed}: {what}: {}", self.scenario, self.short(&v.to_string()));
        }
        let short = |v: Violation| Violation::new(v.invariant, self.short(&v.detail));
        let vs: Vec<Violation> = vs.into_iter().map(short).collect();
        self.found.extend(vs.into_iter().map(|v| Found { seed, what: what.clone(), v }));
        self.scrub();
        let dirty = self.scope.leftovers();
        assert!(
            dirty.is_empty(),
            "crash harness {}: cannot scrub the root after seed {seed}, stopping: {dirty:#?}\n{}",
            self.scenario,
            self.summary()
        );
    }

    /// How long `args` takes when nothing is killed (it must succeed): the
    /// range kill delays are drawn from.
    fn calibrate(&self, args: &[&str]) -> Duration {
        let start = Instant::now();
        self.ok(args);
        start.elapsed().max(Duration::from_millis(20))
    }

    /// Runs `berth args`, kills as `kill` says; what was killed (None if
    /// the target never appeared or had ended) and the CLI's output.
    fn run_killing(&self, args: &[&str], kill: Kill) -> Ran {
        let out = tempfile::tempfile().unwrap();
        let err = tempfile::tempfile().unwrap();
        let mut cmd = self.b.command();
        cmd.args(args).stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(err.try_clone().unwrap());
        let start = Instant::now();
        let mut child = cmd.spawn().expect("spawn berth");
        let killed = match kill.target {
            Target::Cli => {
                sleep_until(start + kill.delay);
                match child.try_wait() {
                    Ok(None) => {
                        let _ = child.kill();
                        Some(format!("the CLI (pid {})", child.id()))
                    }
                    _ => None,
                }
            }
            t => self.hunt(&mut child, t, kill),
        };
        let status = wait_bounded(&mut child, Duration::from_secs(120));
        let elapsed = start.elapsed();
        let output = status.map(|status| Output { status, stdout: read_all(out), stderr: read_all(err) });
        let hung = || Violation::new(Invariant::Hung, format!("`berth {}` ran for 120 s", args.join(" ")));
        self.kills.set(self.kills.get() + u64::from(killed.is_some()));
        Ran { killed, output: output.map_err(|()| hung()), elapsed }
    }

    /// Waits for a process of kind `target` (the `kill.skip`+1-th one that
    /// appears), then after `kill.delay` SIGKILLs it through a pidfd (so a
    /// reused pid is never hit). Gives up once the CLI has ended and, for
    /// a shim (it outlives the CLI), a moment after.
    fn hunt(&self, child: &mut Child, target: Target, kill: Kill) -> Option<String> {
        let cli = child.id() as i32;
        let mut seen = BTreeSet::new();
        let mut ended: Option<Instant> = None;
        loop {
            if ended.is_none() && child.try_wait().ok().flatten().is_some() {
                ended = Some(Instant::now());
            }
            let grace = if target == Target::Shim { Duration::from_millis(300) } else { Duration::ZERO };
            if ended.is_some_and(|t| t.elapsed() > grace) {
                return None;
            }
            for p in self.candidates(cli, target) {
                if !seen.insert(p.pid) || seen.len() <= kill.skip {
                    continue;
                }
                let Some(fd) = PidFd::open(p.pid) else { continue };
                // Opened after the match: check it is still that process.
                if !inv::all_processes().iter().any(|q| q.pid == p.pid && q.cmdline == p.cmdline) {
                    continue;
                }
                std::thread::sleep(kill.delay);
                return fd.kill().then(|| format!("{target:?} `{}` (pid {})", p.cmdline, p.pid));
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    /// Processes of kind `target` of this berth now.
    fn candidates(&self, cli: i32, target: Target) -> Vec<inv::Proc> {
        let runroot = self.scope.runroot.display().to_string();
        let shim = self.shim.display().to_string();
        let is_shim = |p: &inv::Proc| p.cmdline.starts_with(&shim) && p.cmdline.contains(&runroot);
        let is_runtime = |p: &inv::Proc| {
            let argv0 = p.cmdline.split(' ').next().unwrap_or("");
            argv0.ends_with("berth-runtime") && p.cmdline.contains(&runroot)
        };
        let all = inv::all_processes();
        match target {
            Target::Cli => Vec::new(),
            Target::Shim => all.into_iter().filter(is_shim).collect(),
            Target::Runtime => all.into_iter().filter(is_runtime).collect(),
            Target::Helper => {
                all.into_iter().filter(|p| descends_from(p.pid, cli) && !is_shim(p) && !is_runtime(p)).collect()
            }
        }
    }

    /// After a kill: waits for the CLI's leftovers (runtime calls, plugins)
    /// to end, then checks every invariant and removes every container.
    fn check_after_kill(&self) -> Vec<Violation> {
        self.wait_for_transients();
        let cli = self.cli();
        let mut vs = self.scope.corrupt_blobs();
        vs.extend(inv::check_containers_and_remove_all(&cli, &self.scope));
        vs
    }

    /// Waits (bounded) for berth CLIs and runtime calls still running (a
    /// killed CLI's children finish on their own); shims and what runs in
    /// a container's cgroup (a created container's init waits there with
    /// the runtime's command line) stay.
    fn wait_for_transients(&self) {
        let cli = env!("CARGO_BIN_EXE_berth");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let busy = self.scope.processes().into_iter().any(|p| {
                let argv0 = p.cmdline.split(' ').next().unwrap_or("");
                argv0 == cli || (argv0.ends_with("berth-runtime") && !self.scope.in_parent(p.pid))
            });
            if !busy {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Puts the root back to empty after a violation, whatever it takes:
    /// kills this berth's processes (all its own: in its cgroup parent or
    /// naming its root), repairs, and removes leftovers by hand.
    fn scrub(&self) {
        for p in self.scope.processes() {
            if let Some(fd) = PidFd::open(p.pid) {
                fd.kill();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        let _ = self.b.cmd(&["system", "check", "--repair"]);
        let cli = self.cli();
        for id in inv::container_ids(&cli) {
            let _ = self.b.cmd(&["rm", "-f", &id]);
        }
        if !inv::container_ids(&cli).is_empty() {
            // Records rm cannot remove: forget them all, then repair.
            let _ = std::fs::remove_file(self.scope.root.join("containers.redb"));
            let _ = self.b.cmd(&["system", "check", "--repair"]);
        }
        self.scrub_by_hand();
    }

    fn scrub_by_hand(&self) {
        let dir = self.b.dir.path().display().to_string();
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> =
            info.lines().filter_map(|l| l.split(' ').nth(4)).filter(|p| p.starts_with(&dir)).collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
        }
        let run = &self.scope.runroot;
        for d in [self.scope.root.join("containers"), run.join("containers"), run.join("s"), run.join("locks")] {
            remove_entries(&d, |_| true);
        }
        remove_entries(&run.join("runtime"), |n| n != "seccomp@cache");
        remove_entries(&run.join("cni/results"), |_| true);
        for net in names(&run.join("cni/ipam")) {
            remove_entries(&run.join("cni/ipam").join(net), |n| n != "lock" && !n.starts_with("last_reserved_ip"));
        }
        for d in self.scope.cgroup_dirs() {
            let _ = Command::new("find").arg(&d).args(["-depth", "-type", "d", "-delete"]).status();
        }
        // This namespace is the scenario's own: its port forwards and veths go.
        let nat = Command::new("iptables-save").args(["-t", "nat"]).output().map(|o| o.stdout).unwrap_or_default();
        let _ = Command::new("iptables").args(["-w", "-t", "nat", "-F", "CNI-HOSTPORT-DNAT"]).status();
        for chain in String::from_utf8_lossy(&nat).lines().filter_map(|l| l.strip_prefix(":CNI-DN-")) {
            let chain = format!("CNI-DN-{}", chain.split(' ').next().unwrap_or(""));
            let _ = Command::new("iptables").args(["-w", "-t", "nat", "-F", &chain]).status();
            let _ = Command::new("iptables").args(["-w", "-t", "nat", "-X", &chain]).status();
        }
        let links = Command::new("ip").args(["-o", "link", "show", "type", "veth"]).output().unwrap();
        for l in String::from_utf8_lossy(&links.stdout).lines() {
            if let Some(name) = l.split(": ").nth(1).and_then(|n| n.split('@').next()) {
                let _ = Command::new("ip").args(["link", "del", name]).status();
            }
        }
    }

    /// The end of a scenario: no container left; `system check` finds
    /// nothing; the image can be removed (no container's hold leaked); GC
    /// then leaves an empty store (no blob, snapshot, partial download,
    /// temp dir or lock of a killed pull).
    fn finish(mut self) {
        let cli = self.cli();
        let mut vs = inv::check_containers_and_remove_all(&cli, &self.scope);
        vs.extend(inv::check_system(&cli));
        let images = self.ok(&["images", "-q"]);
        for img in images.lines().collect::<BTreeSet<_>>() {
            let o = self.b.cmd(&["rmi", "-f", img]);
            if !o.status.success() {
                let err = String::from_utf8_lossy(&o.stderr).trim().to_owned();
                vs.push(Violation::new(Invariant::ImageHold, format!("no container, yet `rmi -f {img}`: {err}")));
            }
        }
        let o = self.b.cmd(&["system", "prune", "-a", "-f"]);
        if !o.status.success() {
            vs.push(Violation::new(Invariant::UnrelatedError, format!("system prune -a -f: {o:?}")));
        }
        vs.extend(self.scope.store_garbage());
        drop(cli);
        let seed = self.base_seed;
        self.record(seed, "the scenario's end (after every iteration)", vs);
        self.report();
    }

    /// Fails with every violation not allowed, grouped by invariant.
    fn report(&self) {
        let failing = self.found.iter().filter(|f| !self.allowed.contains(f.v.invariant.name())).count();
        // Shown with --nocapture (or when failing): what a long run did.
        eprintln!(
            "crash harness {}: {} iterations, {} kills landed, {} violation(s)",
            self.scenario,
            self.iterations,
            self.kills.get(),
            self.found.len()
        );
        if self.found.is_empty() {
            return;
        }
        eprintln!("{}", self.summary());
        assert_eq!(failing, 0, "{}", self.summary());
    }

    fn summary(&self) -> String {
        let mut by: BTreeMap<Invariant, Vec<&Found>> = BTreeMap::new();
        for f in &self.found {
            by.entry(f.v.invariant).or_default().push(f);
        }
        let mut s = format!(
            "crash harness {}: {} violation(s) in {} iterations (BERTH_CRASH_SEED={})\n",
            self.scenario,
            self.found.len(),
            self.iterations,
            self.base_seed
        );
        for (inv, fs) in by {
            let allowed = if self.allowed.contains(inv.name()) { " (allowed by BERTH_CRASH_ALLOW)" } else { "" };
            s += &format!("  [{}] {} time(s){allowed}:\n", inv.name(), fs.len());
            for f in fs.iter().take(5) {
                s += &format!("    seed {}: {}\n      -> {}\n", f.seed, f.what, f.v.detail);
            }
            let f = fs[0];
            s += &format!(
                "    replay the first: BERTH_CRASH_SEED={} BERTH_CRASH_ITERATIONS=1 cargo test -p berth --test crash {}\n",
                f.seed, self.test
            );
        }
        s
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Whatever a failed iteration left runs no longer than the test.
        for p in self.scope.processes() {
            if let Some(fd) = PidFd::open(p.pid) {
                fd.kill();
            }
        }
    }
}

/// A process handle that cannot hit a reused pid (pidfd_open(2)).
struct PidFd(OwnedFd);

impl PidFd {
    fn open(pid: i32) -> Option<PidFd> {
        // SAFETY: pidfd_open takes a pid and flags (none) and returns a new
        // descriptor or -1; it touches no memory of ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: fd is a descriptor just made for us and owned by nobody else.
        Some(PidFd(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// SIGKILL; false if the process had already ended.
    fn kill(&self) -> bool {
        // SAFETY: pidfd_send_signal with our pidfd, a signal number, no
        // siginfo (NULL) and no flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        r == 0
    }
}

fn descends_from(mut pid: i32, ancestor: i32) -> bool {
    for _ in 0..32 {
        match inv::parent_of(pid) {
            Some(p) if p == ancestor => return true,
            Some(p) if p > 1 => pid = p,
            _ => return false,
        }
    }
    false
}

fn sleep_until(t: Instant) {
    if let Some(d) = t.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
}

/// Waits for `child` at most `limit`; kills it past that (Err).
fn wait_bounded(child: &mut Child, limit: Duration) -> Result<std::process::ExitStatus, ()> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Ok(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn read_all(mut f: std::fs::File) -> Vec<u8> {
    use std::io::{Read, Seek};
    let mut v = Vec::new();
    let _ = f.seek(std::io::SeekFrom::Start(0));
    let _ = f.read_to_end(&mut v);
    v
}

fn names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).into_iter().flatten().flatten().filter_map(|e| e.file_name().into_string().ok()).collect()
}

fn remove_entries(dir: &Path, keep_unless: impl Fn(&str) -> bool) {
    for n in names(dir).into_iter().filter(|n| keep_unless(n)) {
        let p = dir.join(n);
        let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
    }
}

/// A delay in [0, max).
fn delay(rng: &mut StdRng, max: Duration) -> Duration {
    Duration::from_micros(rng.random_range(0..max.as_micros().max(1) as u64))
}

fn pick<T: Copy>(rng: &mut StdRng, from: &[T]) -> T {
    from[rng.random_range(0..from.len())]
}

/// A container that runs until stopped (as the usability check wants),
/// and stops on SIGTERM at once (sh as pid 1 ignores it unless it traps
/// it), so `stop` is quick.
const SERVE: &str = "trap 'exit 0' TERM; while :; do sleep 0.2; done";

/// `run -d` on `net`, publishing `port` unless the network is none.
fn run_args<'a>(image: &'a str, net: &'a str, port: &'a str) -> Vec<&'a str> {
    let mut a = vec!["run", "-d", "--network", net];
    if net != "none" {
        a.extend(["-p", port]);
    }
    a.extend([image, "sh", "-c", SERVE]);
    a
}

/// The kill of one iteration: a target `run -d` or `rm -f` has, a delay
/// scaled to how long the command or the target lives.
fn choose_kill(rng: &mut StdRng, targets: &[Target], nominal: Duration) -> Kill {
    let target = pick(rng, targets);
    let max = match target {
        Target::Cli | Target::Shim => nominal + nominal / 5,
        // Runtime calls and plugins live for milliseconds.
        Target::Runtime | Target::Helper => Duration::from_millis(25),
    };
    Kill { target, delay: delay(rng, max), skip: rng.random_range(0..3) }
}

fn describe(args: &[&str], kill: Kill, killed: &Option<String>) -> String {
    let whom =
        killed.as_deref().map(|k| format!("killed {k}")).unwrap_or_else(|| "nothing killed (ended first)".into());
    format!(
        "`berth {}` with a {:?} kill after {:?} (skip {}): {whom}",
        args.join(" "),
        kill.target,
        kill.delay,
        kill.skip
    )
}

#[test]
fn killed_run_d_leaves_each_container_usable_or_removable_and_nothing_behind() {
    inv::in_private_netns(|| {
        let mut h = Harness::new("run-d", "killed_run_d", 20);
        let image = h.b.image.clone();
        h.ok(&["pull", &image]);
        h.ok(&["network", "create", "crashnet"]);
        let nominal = h.calibrate(&run_args(&image, "bridge", "18000:80"));
        h.record(h.base_seed, "calibration", h.check_after_kill());
        for i in 0..h.iterations {
            let seed = h.seed(i);
            let mut rng = StdRng::seed_from_u64(seed);
            let net = pick(&mut rng, &["none", "bridge", "crashnet"]);
            let port = format!("{}:80", 18001 + i % 1000);
            let args = run_args(&image, net, &port);
            let targets: &[Target] = if net == "none" {
                &[Target::Cli, Target::Shim, Target::Runtime]
            } else {
                &[Target::Cli, Target::Shim, Target::Runtime, Target::Helper]
            };
            let kill = choose_kill(&mut rng, targets, nominal);
            let ran = h.run_killing(&args, kill);
            let what = describe(&args, kill, &ran.killed);
            let mut vs = ran.hung();
            vs.extend(h.check_after_kill());
            h.record(seed, &what, vs);
        }
        h.finish();
    });
}

#[test]
fn killed_rm_f_leaves_the_container_removable_and_nothing_behind() {
    inv::in_private_netns(|| {
        let mut h = Harness::new("rm-f", "killed_rm_f", 12);
        let image = h.b.image.clone();
        h.ok(&["pull", &image]);
        let id = h.ok(&run_args(&image, "bridge", "18000:80")).trim().to_owned();
        let nominal = h.calibrate(&["rm", "-f", &id]);
        for i in 0..h.iterations {
            let seed = h.seed(i);
            let mut rng = StdRng::seed_from_u64(seed);
            let net = pick(&mut rng, &["none", "bridge"]);
            let port = format!("{}:80", 18001 + i % 1000);
            let id = h.ok(&run_args(&image, net, &port)).trim().to_owned();
            let args = ["rm", "-f", id.as_str()];
            let targets: &[Target] = if net == "none" {
                &[Target::Cli, Target::Shim, Target::Runtime]
            } else {
                &[Target::Cli, Target::Shim, Target::Runtime, Target::Helper]
            };
            let kill = choose_kill(&mut rng, targets, nominal);
            let ran = h.run_killing(&args, kill);
            let what = describe(&args, kill, &ran.killed) + &format!(" (a container on {net})");
            let mut vs = ran.hung();
            vs.extend(h.check_after_kill());
            if !inv::container_ids(&h.cli()).is_empty() {
                vs.push(Violation::new(Invariant::Removable, "containers still listed after removal".to_owned()));
            }
            h.record(seed, &what, vs);
        }
        h.finish();
    });
}

#[test]
fn killed_pulls_leave_a_verified_store_and_resume() {
    inv::in_private_netns(|| {
        let mut h = Harness::new("pull", "killed_pulls", 10);
        let image = h.b.image.clone();
        let nominal = h.calibrate(&["pull", &image]);
        for i in 0..h.iterations {
            let seed = h.seed(i);
            let mut rng = StdRng::seed_from_u64(seed);
            // From nothing (GC took every blob) or with the blobs still there.
            let from_scratch = rng.random_bool(0.5);
            let _ = h.b.cmd(&["rmi", "-f", &image]);
            if from_scratch {
                let _ = h.b.cmd(&["image", "prune", "-a", "-f"]);
            }
            let kill = Kill { target: Target::Cli, delay: delay(&mut rng, nominal + nominal / 5), skip: 0 };
            let args = ["pull", image.as_str()];
            let ran = h.run_killing(&args, kill);
            let what = describe(&args, kill, &ran.killed) + if from_scratch { " (from an empty store)" } else { "" };
            let mut vs = ran.hung();
            vs.extend(h.scope.corrupt_blobs());
            vs.extend(pull_and_run(&h, &image));
            h.record(seed, &what, vs);
        }
        h.finish();
    });
}

/// After a killed pull: pulling again finishes, and the image runs.
fn pull_and_run(h: &Harness, image: &str) -> Vec<Violation> {
    let o = h.b.cmd(&["pull", image]);
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr).trim().to_owned();
        return vec![Violation::new(Invariant::Usable, format!("the pull after the kill fails: {err}"))];
    }
    let o = h.b.cmd(&["run", "--rm", "--network", "none", image, "sh", "-c", "echo ok"]);
    if o.stdout != b"ok\n" {
        let err = String::from_utf8_lossy(&o.stderr).trim().to_owned();
        return vec![Violation::new(Invariant::Usable, format!("the image pulled again does not run: {err}"))];
    }
    Vec::new()
}

#[test]
fn killed_rmi_and_prunes_never_take_layers_from_containers() {
    inv::in_private_netns(|| {
        let mut h = Harness::new("rmi-prune", "killed_rmi_and_prunes", 8);
        let image = h.b.image.clone();
        h.ok(&["pull", &image]);
        let ops: [&[&str]; 4] = [
            &["rmi", &image],
            &["rmi", "-f", &image],
            &["image", "prune", "-a", "-f"],
            &["system", "prune", "-a", "-f"],
        ];
        // How long each op takes, learnt from the runs it finished first.
        let mut took = [Duration::from_millis(150); 4];
        for i in 0..h.iterations {
            let seed = h.seed(i);
            let mut rng = StdRng::seed_from_u64(seed);
            // One container of each state holds the image.
            h.ok(&["pull", &image]);
            h.ok(&run_args(&image, "none", ""));
            h.ok(&["create", "--network", "none", &image, "sh", "-c", SERVE]);
            let once = format!("if [ -e /ran ]; then {SERVE}; fi; touch /ran");
            let exited = h.ok(&["run", "-d", "--network", "none", &image, "sh", "-c", &once]);
            h.ok(&["wait", exited.trim()]);
            let op = rng.random_range(0..ops.len());
            let args = ops[op];
            let kill = Kill { target: Target::Cli, delay: delay(&mut rng, took[op] + took[op] / 5), skip: 0 };
            let ran = h.run_killing(args, kill);
            if ran.killed.is_none() {
                took[op] = ran.elapsed;
            }
            let what = describe(args, kill, &ran.killed);
            let mut vs = ran.hung();
            vs.extend(h.scope.corrupt_blobs());
            vs.extend(h.check_after_kill());
            vs.extend(pull_and_run(&h, &image));
            h.record(seed, &what, vs);
        }
        h.finish();
    });
}

#[test]
fn killed_network_create_leaves_a_usable_or_absent_network() {
    inv::in_private_netns(|| {
        let mut h = Harness::new("network-create", "killed_network_create", 4);
        let image = h.b.image.clone();
        h.ok(&["pull", &image]);
        let nominal = h.calibrate(&["network", "create", "probe"]);
        h.ok(&["network", "rm", "probe"]);
        for i in 0..h.iterations {
            let seed = h.seed(i);
            let mut rng = StdRng::seed_from_u64(seed);
            let name = format!("net{i}");
            let args = ["network", "create", name.as_str()];
            let kill = Kill { target: Target::Cli, delay: delay(&mut rng, nominal + nominal / 5), skip: 0 };
            let ran = h.run_killing(&args, kill);
            let what = describe(&args, kill, &ran.killed);
            let mut vs = ran.hung();
            vs.extend(network_usable_or_absent(&h, &image, &name));
            vs.extend(h.check_after_kill());
            h.record(seed, &what, vs);
        }
        h.finish();
    });
}

/// A network a killed `create` left is listed whole and takes a
/// container, and is removable; or it is not there and can be created.
fn network_usable_or_absent(h: &Harness, image: &str, name: &str) -> Vec<Violation> {
    let bad = |what: String| vec![Violation::new(Invariant::Usable, format!("network {name}: {what}"))];
    let ls = h.b.cmd(&["network", "ls"]);
    if !ls.status.success() {
        return bad(format!("`network ls` fails: {}", String::from_utf8_lossy(&ls.stderr).trim()));
    }
    if !String::from_utf8_lossy(&ls.stdout).lines().any(|l| l.split_whitespace().any(|w| w == name)) {
        let o = h.b.cmd(&["network", "create", name]);
        if !o.status.success() {
            return bad(format!("not listed, and cannot be created: {}", String::from_utf8_lossy(&o.stderr).trim()));
        }
    }
    let o = h.b.cmd(&["run", "--rm", "--network", name, image, "sh", "-c", "ip -o -4 addr show eth0"]);
    if !o.status.success() || !String::from_utf8_lossy(&o.stdout).contains("inet ") {
        return bad(format!("a container on it gets no address: {}", String::from_utf8_lossy(&o.stderr).trim()));
    }
    let o = h.b.cmd(&["network", "rm", name]);
    if !o.status.success() {
        return bad(format!("cannot be removed: {}", String::from_utf8_lossy(&o.stderr).trim()));
    }
    Vec::new()
}
