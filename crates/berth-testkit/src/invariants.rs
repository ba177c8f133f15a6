//! What must hold of a berth root whatever was killed, whenever, and
//! whatever ran at the same time: the crash harness
//! (crates/berth/tests/crash.rs) and the race tests (races.rs) check it
//! after every kill and at the end of every race.
//!
//! Two kinds of checks:
//! - on disk and on the host, read independently of berth's code (a
//!   checker that used the code under test would share its bugs): blobs
//!   hash to their names; nothing of a removed container is left (mounts,
//!   cgroups, network namespace pins, veths, firewall rules, address
//!   leases, processes, state directories, lock files);
//! - through the `berth` command line, as a user would: a container that
//!   is listed is usable (start, exec, stop work) unless it says it is
//!   dead, and one `rm -f` removes any of them.
//!
//! Every failure is a [`Violation`] naming its [`Invariant`], so a report
//! says what broke, not just that something did.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use sha2::Digest as _;

/// The invariants, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Invariant {
    /// Every blob in the content store hashes to its name.
    BlobIntegrity,
    /// A listed container that is not dead starts, execs and stops.
    Usable,
    /// One `rm -f` removes any container.
    Removable,
    /// No mount of a removed container (rootfs, netns pin) is left.
    Mounts,
    /// No cgroup of a removed container is left under the test's parent.
    Cgroups,
    /// No process of a removed container (its shim, runtime, init) is left.
    Processes,
    /// No state directory of a removed container is left.
    StateDirs,
    /// No lock file of a removed container is left.
    LockFiles,
    /// No veth is left when no container is on a bridge.
    Veths,
    /// No iptables/nft rule or chain names a removed container, and no
    /// port-forwarding rule is left when no container publishes one.
    Firewall,
    /// No IPAM lease or cached CNI result of a removed container is left.
    NetworkState,
    /// With no container and no image left, the store holds nothing:
    /// no blob, snapshot, partial download, temp dir or stale lock.
    StoreGarbage,
    /// An image no container uses can be removed (no hold leaked).
    ImageHold,
    /// `berth system check` finds nothing wrong.
    SystemCheck,
    /// A container ID that `run -d` printed still exists, unless the test
    /// removed it.
    LostContainer,
    /// A command failed with an error unrelated to what it raced.
    UnrelatedError,
    /// A command did not end.
    Hung,
}

impl Invariant {
    pub fn name(self) -> &'static str {
        match self {
            Invariant::BlobIntegrity => "blob-integrity",
            Invariant::Usable => "usable",
            Invariant::Removable => "removable",
            Invariant::Mounts => "mounts",
            Invariant::Cgroups => "cgroups",
            Invariant::Processes => "processes",
            Invariant::StateDirs => "state-dirs",
            Invariant::LockFiles => "lock-files",
            Invariant::Veths => "veths",
            Invariant::Firewall => "firewall",
            Invariant::NetworkState => "network-state",
            Invariant::StoreGarbage => "store-garbage",
            Invariant::ImageHold => "image-hold",
            Invariant::SystemCheck => "system-check",
            Invariant::LostContainer => "lost-container",
            Invariant::UnrelatedError => "unrelated-error",
            Invariant::Hung => "hung",
        }
    }
}

/// One broken invariant, with what was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub invariant: Invariant,
    pub detail: String,
}

impl Violation {
    pub fn new(invariant: Invariant, detail: impl Into<String>) -> Violation {
        Violation { invariant, detail: detail.into() }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.invariant.name(), self.detail)
    }
}

/// One berth installation under test: its root, runroot and cgroup
/// parent, and whether it has a network namespace of its own (then veths
/// and firewall rules there are all its own).
#[derive(Debug, Clone)]
pub struct Scope {
    pub root: PathBuf,
    pub runroot: PathBuf,
    /// The cgroup parent's name, without the leading '/'.
    pub cgroup_parent: String,
    pub private_netns: bool,
}

/// A process: pid and command line (NULs as spaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    pub cmdline: String,
}

impl fmt::Display for Proc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.pid, self.cmdline)
    }
}

impl Scope {
    /// The scope a `berth` command works in: its `--root`, `--runroot`
    /// and `BERTH_CGROUP_PARENT` (all three must be set).
    pub fn of_command(cmd: &Command, private_netns: bool) -> Scope {
        let args: Vec<&std::ffi::OsStr> = cmd.get_args().collect();
        let flag = |name: &str| {
            let i = args.iter().position(|a| *a == name).unwrap_or_else(|| panic!("the command has no {name}"));
            PathBuf::from(args[i + 1])
        };
        let parent = cmd.get_envs().find(|(k, _)| *k == "BERTH_CGROUP_PARENT").and_then(|(_, v)| v);
        let parent = parent.expect("the command sets BERTH_CGROUP_PARENT").to_string_lossy();
        Scope {
            root: flag("--root"),
            runroot: flag("--runroot"),
            cgroup_parent: parent.trim_start_matches('/').to_owned(),
            private_netns,
        }
    }

    /// Every blob under `content/sha256` hashes to its name.
    pub fn corrupt_blobs(&self) -> Vec<Violation> {
        let dir = self.root.join("content/sha256");
        let mut out = Vec::new();
        for name in names_in(&dir) {
            match sha256_file(&dir.join(&name)) {
                Ok(hex) if hex == name => {}
                Ok(hex) => {
                    out.push(Violation::new(Invariant::BlobIntegrity, format!("blob {name} hashes to sha256:{hex}")))
                }
                // A blob removed by GC between listing and reading is fine.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => out.push(Violation::new(Invariant::BlobIntegrity, format!("blob {name}: {e}"))),
            }
        }
        out
    }

    /// What is left of container `id` (which was removed), waiting up to
    /// a few seconds for what goes away by itself (a shim's exit).
    pub fn leftovers_of(&self, id: &str) -> Vec<Violation> {
        settle(|| self.leftovers_of_now(id))
    }

    fn leftovers_of_now(&self, id: &str) -> Vec<Violation> {
        let mut out = Vec::new();
        for l in mountinfo_lines().into_iter().filter(|l| l.contains(id)) {
            out.push(Violation::new(Invariant::Mounts, format!("container {id}: mount left: {l}")));
        }
        let cgroups: Vec<PathBuf> =
            self.cgroup_dirs().into_iter().filter(|d| d.to_string_lossy().contains(id)).collect();
        if let Some(first) = cgroups.first() {
            let detail =
                format!("container {id}: cgroup left in {} hierarchies, e.g. {}", cgroups.len(), first.display());
            out.push(Violation::new(Invariant::Cgroups, detail));
        }
        for p in all_processes().into_iter().filter(|p| p.cmdline.contains(id) || in_cgroup_of(p.pid, id)) {
            out.push(Violation::new(Invariant::Processes, format!("container {id}: process left: {p}")));
        }
        let short = &id[..id.len().min(12)];
        for d in [
            self.root.join("containers").join(id),
            self.runroot.join("containers").join(id),
            self.runroot.join("runtime").join(id),
            self.runroot.join("s").join(short),
        ] {
            if d.exists() {
                out.push(Violation::new(Invariant::StateDirs, format!("container {id}: {} left", d.display())));
            }
        }
        let lock = self.runroot.join("locks").join(format!("{id}.lock"));
        if lock.exists() {
            out.push(Violation::new(Invariant::LockFiles, format!("container {id}: {} left", lock.display())));
        }
        for f in self.network_state().into_iter().filter(|(_, text)| text.contains(id)) {
            out.push(Violation::new(Invariant::NetworkState, format!("container {id}: {} left", f.0.display())));
        }
        let rules: Vec<String> = firewall_rules().into_iter().filter(|r| r.contains(id)).collect();
        if let Some(r) = rules.first() {
            let detail = format!("container {id}: {} firewall rule(s) name it, e.g. {r}", rules.len());
            out.push(Violation::new(Invariant::Firewall, detail));
        }
        out
    }

    /// What is left of any container: call when none should exist.
    pub fn leftovers(&self) -> Vec<Violation> {
        settle(|| self.leftovers_now())
    }

    fn leftovers_now(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        let roots = [self.root.display().to_string(), self.runroot.display().to_string()];
        for l in mountinfo_lines().into_iter().filter(|l| roots.iter().any(|r| l.contains(r.as_str()))) {
            out.push(Violation::new(Invariant::Mounts, format!("mount left: {l}")));
        }
        // One per cgroup name, not per hierarchy it is in.
        let mut cgroups: Vec<(String, usize, PathBuf)> = Vec::new();
        for d in self.cgroup_dirs() {
            let name = d.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            match cgroups.iter_mut().find(|(n, _, _)| *n == name) {
                Some(c) => c.1 += 1,
                None => cgroups.push((name, 1, d)),
            }
        }
        for (_, n, d) in cgroups {
            out.push(Violation::new(
                Invariant::Cgroups,
                format!("cgroup left in {n} hierarchies, e.g. {}", d.display()),
            ));
        }
        for p in self.processes() {
            out.push(Violation::new(Invariant::Processes, format!("process left: {p}")));
        }
        for (dir, keep) in [
            (self.root.join("containers"), &[][..]),
            (self.runroot.join("containers"), &[][..]),
            (self.runroot.join("s"), &[][..]),
            // The runtime's compiled seccomp filters are a cache, not a container's.
            (self.runroot.join("runtime"), &["seccomp@cache"][..]),
            (self.runroot.join("locks"), &[][..]),
        ] {
            for n in names_in(&dir).into_iter().filter(|n| !keep.contains(&n.as_str())) {
                let inv = if dir.ends_with("locks") { Invariant::LockFiles } else { Invariant::StateDirs };
                out.push(Violation::new(inv, format!("{} left", dir.join(n).display())));
            }
        }
        for (f, _) in self.network_state() {
            out.push(Violation::new(Invariant::NetworkState, format!("{} left", f.display())));
        }
        if self.private_netns {
            out.extend(veths().into_iter().map(|v| Violation::new(Invariant::Veths, format!("veth left: {v}"))));
            let rules: Vec<String> = firewall_rules().into_iter().filter(|r| is_port_forward(r)).collect();
            if !rules.is_empty() {
                let detail = format!("{} port-forwarding rule(s) or chain(s) left: {}", rules.len(), rules.join(" | "));
                out.push(Violation::new(Invariant::Firewall, detail));
            }
        }
        out
    }

    /// With no container and no image: the store is empty (GC took every
    /// blob and snapshot, and what killed pulls left: partial downloads,
    /// temporary unpack dirs, snapshot locks).
    pub fn store_garbage(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        for (dir, what) in [
            (self.root.join("content/sha256"), "blob"),
            (self.root.join("content/ingest"), "partial download"),
            (self.root.join("snapshots/tmp"), "temporary snapshot dir"),
            (self.root.join("snapshots/locks"), "snapshot lock"),
        ] {
            for n in names_in(&dir) {
                out.push(Violation::new(Invariant::StoreGarbage, format!("{what} left: {}", dir.join(n).display())));
            }
        }
        for n in names_in(&self.root.join("snapshots")).into_iter().filter(|n| n != "tmp" && n != "locks") {
            out.push(Violation::new(Invariant::StoreGarbage, format!("snapshot left: {n}")));
        }
        // What killed `import`s and `load`s made under the root.
        for n in names_in(&self.root).into_iter().filter(|n| n.starts_with("import-") || n.starts_with("load-")) {
            let detail = format!("temporary import/load dir left: {}", self.root.join(n).display());
            out.push(Violation::new(Invariant::StoreGarbage, detail));
        }
        out
    }

    /// Processes of this installation: in its cgroup parent, or whose
    /// command line names its root or runroot (CLIs, shims, runtimes).
    pub fn processes(&self) -> Vec<Proc> {
        let roots = [self.root.display().to_string(), self.runroot.display().to_string()];
        let own = std::process::id() as i32;
        all_processes()
            .into_iter()
            .filter(|p| p.pid != own)
            .filter(|p| roots.iter().any(|r| p.cmdline.contains(r.as_str())) || self.in_parent(p.pid))
            .collect()
    }

    /// Whether `pid` is in a cgroup under the parent (a container's).
    pub fn in_parent(&self, pid: i32) -> bool {
        let needle = format!("/{}/", self.cgroup_parent);
        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.lines().any(|l| l.contains(&needle)))
    }

    /// Cgroups under the parent, in every hierarchy (the parent itself
    /// excluded).
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for h in crate::cgroup::hierarchies() {
            let parent = h.join(&self.cgroup_parent);
            for n in names_in(&parent) {
                let d = parent.join(n);
                if d.is_dir() {
                    out.push(d);
                }
            }
        }
        out
    }

    /// IPAM leases and cached CNI results, with their contents.
    fn network_state(&self) -> Vec<(PathBuf, String)> {
        let cni = self.runroot.join("cni");
        let mut files: Vec<PathBuf> =
            names_in(&cni.join("results")).into_iter().map(|n| cni.join("results").join(n)).collect();
        for net in names_in(&cni.join("ipam")) {
            let dir = cni.join("ipam").join(net);
            // host-local's own files: its lock and the last address it gave.
            let leases = names_in(&dir).into_iter().filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"));
            files.extend(leases.map(|n| dir.join(n)));
        }
        files.into_iter().map(|f| (f.clone(), std::fs::read_to_string(&f).unwrap_or_default())).collect()
    }
}

/// Runs `check` until it finds nothing or ~5 s have passed; its last
/// result. A supervisor finishes its exit work a moment after the
/// command that stopped it returns: a leak is what stays.
pub fn settle(mut check: impl FnMut() -> Vec<Violation>) -> Vec<Violation> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = check();
        if v.is_empty() || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<String> = rd.flatten().filter_map(|e| e.file_name().into_string().ok()).collect();
    v.sort();
    v
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match f.read(&mut buf)? {
            0 => return Ok(hex::encode(h.finalize())),
            n => h.update(&buf[..n]),
        }
    }
}

fn mountinfo_lines() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default().lines().map(str::to_owned).collect()
}

/// Every process but zombies (they hold nothing and go when reaped).
pub fn all_processes() -> Vec<Proc> {
    let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            if cmd.is_empty() {
                return None;
            }
            let cmdline = String::from_utf8_lossy(&cmd).replace('\0', " ").trim_end().to_owned();
            Some(Proc { pid, cmdline })
        })
        .collect()
}

/// The parent pid of `pid`.
pub fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

fn in_cgroup_of(pid: i32, id: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(id))
}

/// The rules and chain declarations of every iptables table, and nft's
/// ruleset (rules made with nft directly do not show in iptables-save).
fn firewall_rules() -> Vec<String> {
    let mut out = Vec::new();
    for (prog, args) in [("iptables-save", &[][..]), ("nft", &["list", "ruleset"][..])] {
        if let Ok(o) = Command::new(prog).args(args).output() {
            out.extend(String::from_utf8_lossy(&o.stdout).lines().map(|l| l.trim().to_owned()));
        }
    }
    out
}

/// A port-forwarding rule or chain of a container (CNI portmap's per-container
/// DNAT chains and their rules).
fn is_port_forward(rule: &str) -> bool {
    rule.contains("CNI-DN-") || rule.contains("--to-destination") || rule.contains("dnat to")
}

fn veths() -> Vec<String> {
    let Ok(o) = Command::new("ip").args(["-o", "link", "show", "type", "veth"]).output() else { return Vec::new() };
    String::from_utf8_lossy(&o.stdout).lines().map(str::to_owned).collect()
}

/// Runs `body` on a thread in a fresh network namespace that plays the
/// host (lo up): the bridges, veths and iptables rules berth makes live
/// there and vanish with it, and [`Scope::private_netns`] checks can see
/// all of them as the test's own. Everything `body` spawns inherits it.
pub fn in_private_netns<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    crate::require_root();
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare a network namespace");
        let up = Command::new("ip").args(["link", "set", "lo", "up"]).status().expect("run ip");
        assert!(up.success(), "ip link set lo up failed");
        body()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// The `berth` command line of a test: runs it with these arguments.
pub type Cli<'a> = &'a dyn Fn(&[&str]) -> Output;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_owned()
}

fn describe(args: &[&str], o: &Output) -> String {
    format!("`berth {}` exited {:?}: {}", args.join(" "), o.status.code(), text(&o.stderr))
}

/// Every container, by full id (`ps -a -q --no-trunc`).
pub fn container_ids(cli: Cli<'_>) -> Vec<String> {
    text(&cli(&["ps", "-a", "-q", "--no-trunc"]).stdout).lines().map(str::to_owned).collect()
}

/// `inspect`'s State of container `id`, if it is there.
pub fn state_of(cli: Cli<'_>, id: &str) -> Option<serde_json::Value> {
    let o = cli(&["inspect", id]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
    Some(v.get(0)?.get("State")?.clone())
}

fn pid_runs(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.split_whitespace().next() != Some("Z")))
        .unwrap_or(false)
}

/// A listed container that is not dead is usable: a running one execs
/// and stops (its process gone after `stop`), and then, like a created
/// or exited one, starts and execs. For containers that run until they
/// are stopped (once started again), with `sh` in their image (so exec
/// finds it only if their layers are intact).
pub fn check_usable(cli: Cli<'_>, id: &str) -> Vec<Violation> {
    let Some(state) = state_of(cli, id) else {
        return vec![Violation::new(Invariant::Usable, format!("container {id} is listed but inspect fails"))];
    };
    let status = state["Status"].as_str().unwrap_or("").to_owned();
    let bad = |what: String| vec![Violation::new(Invariant::Usable, format!("container {id} ({status}): {what}"))];
    let run = |args: &[&str]| -> Result<(), String> {
        let o = cli(args);
        if o.status.success() { Ok(()) } else { Err(describe(args, &o)) }
    };
    match status.as_str() {
        "dead" | "removing" => return Vec::new(),
        "paused" => {
            if let Err(e) = run(&["unpause", id]) {
                return bad(e);
            }
        }
        _ => {}
    }
    if matches!(status.as_str(), "running" | "paused") {
        if let Err(e) = run(&["exec", id, "sh", "-c", "true"]) {
            return bad(e);
        }
        let pid = state["Pid"].as_i64().unwrap_or(0);
        if let Err(e) = run(&["stop", "-t", "1", id]) {
            return bad(e);
        }
        let after = state_of(cli, id).unwrap_or_default();
        if pid > 0 && pid_runs(pid) {
            return bad(format!("`stop` returned but its process {pid} still runs (inspect: {after})"));
        }
        if after["Running"] == true {
            return bad(format!("`stop` returned, its process is gone, but inspect says running: {after}"));
        }
    }
    if let Err(e) = run(&["start", id]) {
        return bad(format!("cannot start: {e}"));
    }
    if let Err(e) = run(&["exec", id, "sh", "-c", "true"]) {
        return bad(format!("started, but exec fails: {e}"));
    }
    Vec::new()
}

/// One `rm -f` removes container `id` and everything it had.
pub fn check_removed(cli: Cli<'_>, scope: &Scope, id: &str) -> Vec<Violation> {
    let args = ["rm", "-f", id];
    let o = cli(&args);
    if !o.status.success() {
        return vec![Violation::new(Invariant::Removable, describe(&args, &o))];
    }
    if container_ids(cli).iter().any(|i| i == id) {
        return vec![Violation::new(Invariant::Removable, format!("`rm -f {id}` succeeded but it is still listed"))];
    }
    scope.leftovers_of(id)
}

/// Checks every container (usable unless dead), removes each with one
/// `rm -f` and checks nothing of any is left.
pub fn check_containers_and_remove_all(cli: Cli<'_>, scope: &Scope) -> Vec<Violation> {
    let mut out = Vec::new();
    for id in container_ids(cli) {
        out.extend(check_usable(cli, &id));
        out.extend(check_removed(cli, scope, &id));
    }
    out.extend(scope.leftovers());
    out
}

/// `berth system check` (the full one) finds nothing.
pub fn check_system(cli: Cli<'_>) -> Vec<Violation> {
    let o = cli(&["system", "check"]);
    if o.status.success() {
        return Vec::new();
    }
    vec![Violation::new(Invariant::SystemCheck, format!("{}\n{}", text(&o.stdout), text(&o.stderr)))]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_that_do_not_hash_to_their_name_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("content/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let good = hex::encode(sha2::Sha256::digest(b"good"));
        std::fs::write(blobs.join(&good), b"good").unwrap();
        let bad = hex::encode(sha2::Sha256::digest(b"bad"));
        std::fs::write(blobs.join(&bad), b"bAd").unwrap();
        let scope = Scope {
            root: dir.path().into(),
            runroot: dir.path().join("run"),
            cgroup_parent: "none".into(),
            private_netns: false,
        };
        let v = scope.corrupt_blobs();
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].invariant, Invariant::BlobIntegrity);
        assert!(v[0].detail.contains(&bad), "{}", v[0]);
    }

    #[test]
    fn port_forwards_are_told_from_other_rules() {
        assert!(is_port_forward(":CNI-DN-3ef0a3e18a8db0859ecde - [0:0]"));
        assert!(is_port_forward("-A X -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.77.0.2:80"));
        assert!(!is_port_forward("-A BERTH-POSTROUTING -s 10.77.0.0/24 ! -d 10.77.0.0/24 -j MASQUERADE"));
        assert!(!is_port_forward(":CNI-HOSTPORT-DNAT - [0:0]"));
    }
}
