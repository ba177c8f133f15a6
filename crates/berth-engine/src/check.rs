//! `berth system check`: are the stores and the container records
//! consistent with each other and with the host (podman has the same
//! command)? And, with `repair`, put right what is safe to put right.
//!
//! What is checked, in this order (a repair of one step can show up as a
//! problem of the next: a corrupt blob removed makes its image damaged):
//! 1. blobs: every blob hashes to its name (skipped by `quick`);
//! 2. snapshots and images: a recorded snapshot is on disk; an image's
//!    config, manifest and layer blobs and its layers' snapshots exist;
//! 3. container records: each holds its image in the metadata (else GC
//!    may take its layers), what it holds exists, a running one has a
//!    process or a shim, a created one has a bundle, a stopped one has no
//!    runtime state left;
//! 4. leftovers of containers that have no record: directories, mounts,
//!    runtime states, image holds, locks, CNI results and address leases.
//!
//! What a repair does is safe: it removes only what no record wants
//! (orphans, corrupt blobs, images nothing uses whose content is gone),
//! and changes a record only to say what is already true (a container
//! whose process is gone is exited; one that cannot start is dead). It
//! never stops a running container, and it skips a container another
//! berth is working on (its lock is held).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use berth_image::digest::{Digest, Hasher};
use berth_image::store::Store;
use berth_image::store::meta::{Resource, Snapshot};

use crate::Error;
use crate::engine::{Engine, alive};
use crate::store::{ContainerRecord, Status};

/// What `check` looks at and whether it repairs.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    pub repair: bool,
    /// Skips hashing every blob (the slow part on a large store).
    pub quick: bool,
}

/// One problem: what it is about, what is wrong, and what was done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// "blob sha256:…", "image 0123456789ab", "container 0123456789ab (web)", "mount /x".
    pub subject: String,
    pub problem: String,
    /// What `repair` did; None when it was not asked, or did not or could not.
    pub repaired: Option<String>,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.subject, self.problem)?;
        if let Some(r) = &self.repaired {
            write!(f, "; repaired: {r}")?;
        }
        Ok(())
    }
}

/// Everything `check` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub findings: Vec<Finding>,
}

impl CheckReport {
    /// Problems not repaired.
    pub fn remaining(&self) -> usize {
        self.findings.iter().filter(|f| f.repaired.is_none()).count()
    }

    pub fn repaired(&self) -> usize {
        self.findings.len() - self.remaining()
    }
}

impl Engine {
    /// Checks the stores and the records (and repairs, if asked). Waits
    /// for running pulls to end and keeps new ones and GC out meanwhile:
    /// the store holds still while it is looked at.
    pub fn check(&self, opts: CheckOptions) -> Result<CheckReport, Error> {
        let store = self.store()?;
        let _still = store.collecting()?;
        let mut c = Checker { engine: self, store: &store, opts, out: Vec::new() };
        if !opts.quick {
            c.blobs()?;
        }
        c.snapshots()?;
        c.images()?;
        let records = self.containers()?.list()?;
        for rec in &records {
            c.container(rec)?;
        }
        c.orphans(&records)?;
        Ok(CheckReport { findings: c.out })
    }
}

struct Checker<'a> {
    engine: &'a Engine,
    store: &'a Store,
    opts: CheckOptions,
    out: Vec<Finding>,
}

impl Checker<'_> {
    /// Records a problem; with `repair`, runs `fix` (which says what it
    /// did, or None when it would not) and records its outcome.
    fn found(&mut self, subject: String, problem: String, fix: impl FnOnce() -> Result<Option<String>, String>) {
        let mut f = Finding { subject, problem, repaired: None };
        if self.opts.repair {
            match fix() {
                Ok(done) => f.repaired = done,
                Err(e) => f.problem = format!("{} (repair failed: {e})", f.problem),
            }
        }
        self.out.push(f);
    }

    fn meta(&self) -> Result<Snapshot, Error> {
        Ok(self.store.meta.read_all()?)
    }

    /// Step 1: every blob hashes to its name.
    fn blobs(&mut self) -> Result<(), Error> {
        let content = self.store.content.clone();
        for d in content.list()? {
            let path = content.path(&d);
            let actual = match hash_file(&path) {
                Ok(a) => a,
                Err(e) => {
                    self.found(format!("blob {d}"), format!("cannot be read: {e}"), || Ok(None));
                    continue;
                }
            };
            if actual != d {
                self.found(format!("blob {d}"), format!("corrupt: its content hashes to {actual}"), || {
                    content.delete(&d).map_err(|e| e.to_string())?;
                    Ok(Some("removed it (pull the image again to fetch it)".into()))
                });
            }
        }
        Ok(())
    }

    /// Step 2a: every recorded snapshot is on disk.
    fn snapshots(&mut self) -> Result<(), Error> {
        let meta = self.meta()?;
        let store = self.store;
        for s in &meta.snapshots {
            if store.snapshots.exists(&s.chain_id) {
                continue;
            }
            let chain = s.chain_id.clone();
            let problem = format!("recorded, but {} is missing", store.snapshots.fs_path(&chain).display());
            self.found(format!("snapshot {chain}"), problem, || {
                store.meta.write(|tx| tx.remove_snapshot(&chain)).map_err(|e| e.to_string())?;
                Ok(Some("forgot it (a pull unpacks the layer again)".into()))
            });
        }
        Ok(())
    }

    /// Step 2b: every image has its blobs and its layers' snapshots; a damaged
    /// one that no container holds is removed, so a pull brings it back
    /// whole.
    fn images(&mut self) -> Result<(), Error> {
        let meta = self.meta()?;
        let store = self.store;
        for img in &meta.images {
            let missing = missing_parts(store, img);
            if missing.is_empty() {
                continue;
            }
            let holder = holders_of(&meta, &Resource::Image(img.id.clone()));
            let tags = meta.tags_of(&img.id).join(", ");
            let subject = if tags.is_empty() {
                format!("image {}", img.id.short())
            } else {
                format!("image {} ({tags})", img.id.short())
            };
            let id = img.id.to_string();
            let engine = self.engine;
            self.found(subject, format!("damaged: missing {}", missing.join(", ")), || {
                if let Some(h) = holder {
                    return Err(format!("{h} uses it: remove that container first"));
                }
                engine.remove_image(&id, true).map_err(|e| e.to_string())?;
                Ok(Some("removed the image (pull it again)".into()))
            });
        }
        Ok(())
    }

    /// Step 3: one container record against the metadata, its process,
    /// its bundle and the runtime.
    fn container(&mut self, rec: &ContainerRecord) -> Result<(), Error> {
        let Some((_lock, _)) = self.engine.try_lock_record(&rec.id) else {
            // Being started, stopped or removed by another berth (or removed
            // since the listing): not ours to judge now.
            return Ok(());
        };
        let now = self.engine.refresh(rec);
        let subject = format!("container {} ({})", &rec.id[..12.min(rec.id.len())], rec.name);
        self.holds(rec, &subject)?;
        match now.status {
            Status::Running | Status::Paused => self.running(&now, &subject),
            Status::Created => self.created(&now, &subject),
            _ => {}
        }
        if !matches!(now.status, Status::Running | Status::Paused) {
            self.stale_runtime_state(&now, &subject);
        }
        Ok(())
    }

    /// The container holds its image in the metadata (GC's roots), and
    /// what it holds is there.
    fn holds(&mut self, rec: &ContainerRecord, subject: &str) -> Result<(), Error> {
        let meta = self.meta()?;
        let holder = holder(&rec.id);
        let store = self.store;
        let Some((_, held)) = meta.refs.iter().find(|(h, _)| *h == holder) else {
            let image: Option<Digest> = rec.image_id.parse().ok().filter(|d| meta.image(d).is_some());
            let problem = "holds nothing in the image store: a prune may take its image's layers".to_owned();
            self.found(subject.to_owned(), problem, || {
                let Some(image) = image else { return Err("its image is gone".into()) };
                store.meta.write(|tx| tx.set_refs(&holder, &[Resource::Image(image)])).map_err(|e| e.to_string())?;
                Ok(Some("it holds its image again".into()))
            });
            return Ok(());
        };
        let mut gone = Vec::new();
        for r in held {
            match r {
                Resource::Image(d) => match meta.image(d) {
                    None => gone.push(format!("image {d}")),
                    Some(img) => gone.extend(missing_parts(store, img)),
                },
                Resource::Snapshot(c) if !store.snapshots.exists(c) => gone.push(format!("layer snapshot {c}")),
                Resource::Blob(b) if !store.content.contains(b) => gone.push(format!("blob {b}")),
                _ => {}
            }
        }
        if !gone.is_empty() {
            let problem = format!("what it uses is gone ({}): it cannot start again", gone.join(", "));
            self.found(subject.to_owned(), problem, || Ok(None));
        }
        Ok(())
    }

    /// A running (or paused) record: its shim or at least its process is there.
    fn running(&mut self, rec: &ContainerRecord, subject: &str) {
        let shim = rec.shim_pid.filter(|p| is_shim_of(*p, &rec.id));
        let init = rec.pid.filter(|p| is_in_container(*p, &rec.id));
        match (shim, init) {
            (Some(_), _) => {}
            (None, Some(pid)) => {
                let problem = format!(
                    "its shim (pid {}) is gone; its process {pid} runs unsupervised (stop or rm -f it)",
                    rec.shim_pid.unwrap_or(0)
                );
                self.found(subject.to_owned(), problem, || Ok(None));
            }
            (None, None) => {
                let engine = self.engine;
                let id = rec.id.clone();
                let problem = "recorded as running, but neither its process nor its shim runs".to_owned();
                self.found(subject.to_owned(), problem, || {
                    delete_runtime_state(engine, &id);
                    mark(engine, &id, Status::Exited)?;
                    Ok(Some("marked it exited".into()))
                });
            }
        }
    }

    /// A created record: its bundle (config.json and mounted rootfs) is
    /// there, or it can never start.
    fn created(&mut self, rec: &ContainerRecord, subject: &str) {
        let run = self.engine.run_dir(&rec.id);
        let mounts = mount_points();
        let mut missing = Vec::new();
        if !run.join("config.json").is_file() {
            missing.push(run.join("config.json"));
        // Unless config.json has berth-runtime mount the overlay itself.
        } else if !mounts.contains(&run.join("rootfs")) && self.engine.rootfs_overlay(&rec.id).is_none() {
            missing.push(run.join("rootfs"));
        }
        if missing.is_empty() {
            return;
        }
        let what: Vec<String> = missing.iter().map(|p| p.display().to_string()).collect();
        let engine = self.engine;
        let id = rec.id.clone();
        let problem = format!("created, but its bundle is incomplete (no {}): it cannot start", what.join(", no "));
        self.found(subject.to_owned(), problem, || {
            mark(engine, &id, Status::Dead)?;
            Ok(Some("marked it dead (rm removes it)".into()))
        });
    }

    /// A container that does not run has no state left in the runtime
    /// (its shim deletes it when the container ends), unless a shim is
    /// still there to do so.
    fn stale_runtime_state(&mut self, rec: &ContainerRecord, subject: &str) {
        let state = self.engine.runroot.join("runtime").join(&rec.id);
        if !state.exists() || rec.shim_pid.is_some_and(|p| is_shim_of(p, &rec.id)) {
            return;
        }
        let engine = self.engine;
        let id = rec.id.clone();
        let status = format!("{:?}", rec.status).to_lowercase();
        let problem = format!("{status}, but the runtime still has its state ({})", state.display());
        self.found(subject.to_owned(), problem, || {
            delete_runtime_state(engine, &id);
            Ok(Some("deleted the runtime's state".into()))
        });
    }

    /// Step 4: what containers without a record left behind.
    fn orphans(&mut self, records: &[ContainerRecord]) -> Result<(), Error> {
        let ids: BTreeSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
        let meta = self.meta()?;
        let left = Leftovers::scan(self.engine, &meta, &ids);
        let engine = self.engine;
        let store = self.store;
        for (id, things) in &left.by_id {
            // Locked: a remover is between removing the record and its lock file.
            let Some(_lock) = try_lock(&engine.runroot.join("locks"), id) else { continue };
            let subject = format!("container {}", &id[..12]);
            let problem = format!("no record, but left behind: {}", things.join(", "));
            self.found(subject, problem, || {
                remove_orphan(engine, store, &left, id)?;
                Ok(Some("removed them".into()))
            });
        }
        for m in &left.mounts {
            self.found(format!("mount {}", m.display()), "not of any container".into(), || {
                nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH).map_err(|e| e.to_string())?;
                Ok(Some("unmounted it".into()))
            });
        }
        for s in &left.shim_dirs {
            let subject = format!("shim state {}", s.display());
            self.found(subject, "of no container".into(), || {
                if processes_mentioning(s) {
                    return Err("its shim still runs".into());
                }
                std::fs::remove_dir_all(s).map_err(|e| e.to_string())?;
                Ok(Some("removed it".into()))
            });
        }
        Ok(())
    }
}

/// The name a container holds its image under in the image metadata
/// (as the engine's create writes it).
fn holder(id: &str) -> String {
    format!("container/{id}")
}

/// Who holds `r`, if anyone.
fn holders_of(meta: &Snapshot, r: &Resource) -> Option<String> {
    meta.refs.iter().find(|(_, rs)| rs.contains(r)).map(|(h, _)| h.clone())
}

/// What an image lacks: blobs and layer snapshots, named.
fn missing_parts(store: &Store, img: &berth_image::store::meta::ImageRecord) -> Vec<String> {
    let mut blobs = vec![("config", &img.id), ("manifest", &img.manifest)];
    if let Some(i) = &img.index {
        blobs.push(("index", i));
    }
    blobs.extend(img.layers.iter().map(|l| ("layer", &l.digest)));
    let mut missing: Vec<String> = blobs
        .into_iter()
        .filter(|(_, d)| !store.content.contains(d))
        .map(|(what, d)| format!("{what} blob {d}"))
        .collect();
    missing.extend(
        img.layers
            .iter()
            .filter(|l| !store.snapshots.exists(&l.chain_id))
            .map(|l| format!("layer snapshot {}", l.chain_id)),
    );
    missing
}

fn hash_file(path: &Path) -> std::io::Result<Digest> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match f.read(&mut buf)? {
            0 => return Ok(h.finish()),
            n => h.update(&buf[..n]),
        }
    }
}

fn mark(engine: &Engine, id: &str, status: Status) -> Result<(), String> {
    let store = engine.containers().map_err(|e| e.to_string())?;
    store
        .update(id, |r| {
            r.status = status;
            if status == Status::Exited {
                // The code is unknown: docker records 255 for a container
                // whose process it lost (as on a daemon restart).
                r.exit_code = Some(r.exit_code.unwrap_or(255));
                r.finished_at = Some(crate::volume::now_rfc3339());
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// `runtime delete --force ID` when the runtime has a state for it
/// (runc, crun and berth-runtime keep it in ROOT/ID).
fn delete_runtime_state(engine: &Engine, id: &str) {
    if engine.runroot.join("runtime").join(id).exists() {
        let _ = engine.oci_runtime_for(id).delete(id, true);
    }
}

/// The lock of a container without a record (the one `rm` holds), if
/// nobody else has it: `Some(None)` when it has no lock file, which no
/// one holds then either (looking makes none: a check leaves nothing).
fn try_lock(dir: &Path, id: &str) -> Option<Option<nix::fcntl::Flock<std::fs::File>>> {
    let file = match std::fs::OpenOptions::new().write(true).open(dir.join(format!("{id}.lock"))) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(None),
        Err(_) => return None,
    };
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).ok().map(Some)
}

/// Whether `pid` runs and is the shim of container `id` (its command line
/// names the id: a recorded pid may have been reused since).
fn is_shim_of(pid: i32, id: &str) -> bool {
    alive(pid) && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| contains(&c, id.as_bytes()))
}

/// Whether `pid` runs in container `id`'s cgroup (`PARENT/ID` in every
/// hierarchy): a reused pid is elsewhere.
fn is_in_container(pid: i32, id: &str) -> bool {
    alive(pid) && std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(id))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether a process's command line mentions `path` (a live shim names its
/// state directory).
fn processes_mentioning(path: &Path) -> bool {
    let needle = path.as_os_str().as_encoded_bytes();
    let Ok(rd) = std::fs::read_dir("/proc") else { return false };
    rd.flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| contains(&c, needle)))
}

/// The host's mount points (mountinfo's fifth field, unescaped).
fn mount_points() -> BTreeSet<PathBuf> {
    parse_mount_points(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

fn parse_mount_points(mountinfo: &str) -> BTreeSet<PathBuf> {
    mountinfo.lines().filter_map(|l| l.split(' ').nth(4)).map(|p| PathBuf::from(unescape_octal(p))).collect()
}

/// mountinfo writes space, tab, newline and backslash as \ooo.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Names in `dir` (none if it cannot be read).
fn names_in(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    rd.flatten().filter_map(|e| e.file_name().into_string().ok()).collect()
}

/// What containers without a record left, by container id.
#[derive(Debug, Default)]
struct Leftovers {
    /// id → what is left, named for the report.
    by_id: BTreeMap<String, Vec<String>>,
    /// Mount points of each orphan id (deepest last).
    id_mounts: BTreeMap<String, Vec<PathBuf>>,
    /// (network, ifname) of each orphan id's CNI results and leases.
    id_networks: BTreeMap<String, BTreeSet<(String, String)>>,
    /// Files to remove per orphan id: results and leases.
    id_files: BTreeMap<String, Vec<PathBuf>>,
    /// Mounts under the root or runroot that belong to no container dir.
    mounts: Vec<PathBuf>,
    /// Shim state dirs whose id prefix matches no record.
    shim_dirs: Vec<PathBuf>,
}

impl Leftovers {
    fn scan(engine: &Engine, meta: &Snapshot, ids: &BTreeSet<&str>) -> Leftovers {
        let mut l = Leftovers::default();
        let orphan = |x: &str| is_container_id(x) && !ids.contains(x);
        for (what, dir) in [
            ("its data directory", engine.root.join("containers")),
            ("its run directory", engine.runroot.join("containers")),
            ("the runtime's state", engine.runroot.join("runtime")),
        ] {
            for x in names_in(&dir).into_iter().filter(|x| orphan(x)) {
                l.note(&x, what.into());
            }
        }
        for x in names_in(&engine.runroot.join("locks")) {
            if let Some(x) = x.strip_suffix(".lock").filter(|x| orphan(x)) {
                l.note(x, "its lock file".into());
            }
        }
        for (h, _) in &meta.refs {
            if let Some(x) = h.strip_prefix("container/").filter(|x| orphan(x)) {
                l.note(x, "its hold on an image".into());
            }
        }
        l.scan_mounts(engine, ids);
        l.scan_cni(engine, ids);
        // Shim state dirs are named by the id's first 12 digits (exec -t
        // consoles have temporary "exec-" dirs beside them).
        let s = engine.runroot.join("s");
        let orphans: Vec<String> = l.by_id.keys().cloned().collect();
        for n in names_in(&s).into_iter().filter(|n| n.len() == 12 && n.bytes().all(|b| b.is_ascii_hexdigit())) {
            if ids.iter().any(|id| id.starts_with(n.as_str())) {
                continue;
            }
            match orphans.iter().find(|id| id.starts_with(&n)) {
                Some(id) => l.note(id, "its shim's state".into()),
                None => l.shim_dirs.push(s.join(n)),
            }
        }
        l
    }

    fn note(&mut self, id: &str, what: String) {
        self.by_id.entry(id.to_owned()).or_default().push(what);
    }

    fn scan_mounts(&mut self, engine: &Engine, ids: &BTreeSet<&str>) {
        let dirs = [engine.root.join("containers"), engine.runroot.join("containers")];
        for m in mount_points() {
            let owner = dirs.iter().find_map(|d| {
                let rel = m.strip_prefix(d).ok()?;
                rel.components().next()?.as_os_str().to_str().map(str::to_owned)
            });
            match owner {
                Some(x) if ids.contains(x.as_str()) => {}
                Some(x) if is_container_id(&x) => {
                    let name = if m.ends_with("netns") {
                        "its network namespace pin"
                    } else if m.ends_with(crate::userns::PIN) {
                        "its user namespace pin"
                    } else {
                        "a mount"
                    };
                    self.note(&x, format!("{name} ({})", m.display()));
                    self.id_mounts.entry(x).or_default().push(m);
                }
                _ if m.starts_with(&engine.root) || m.starts_with(&engine.runroot) => self.mounts.push(m),
                _ => {}
            }
        }
    }

    /// CNI results (`NET-ID-IF.json`) and host-local leases (files named
    /// by address, holding "ID\r\nIF") of containers without a record.
    fn scan_cni(&mut self, engine: &Engine, ids: &BTreeSet<&str>) {
        let cni = engine.runroot.join("cni");
        for f in names_in(&cni.join("results")) {
            let Some((net, x, ifname)) = parse_result_name(&f) else { continue };
            if ids.contains(x.as_str()) {
                continue;
            }
            self.note(&x, format!("its CNI result on {net}"));
            self.id_networks.entry(x.clone()).or_default().insert((net, ifname));
            self.id_files.entry(x).or_default().push(cni.join("results").join(f));
        }
        for net in names_in(&cni.join("ipam")) {
            for f in names_in(&cni.join("ipam").join(&net)) {
                let path = cni.join("ipam").join(&net).join(&f);
                let Some((x, ifname)) = read_lease(&path) else { continue };
                if ids.contains(x.as_str()) || !is_container_id(&x) {
                    continue;
                }
                self.note(&x, format!("its address lease {f} on {net}"));
                self.id_networks.entry(x.clone()).or_default().insert((net.clone(), ifname));
                self.id_files.entry(x).or_default().push(path);
            }
        }
    }
}

/// "bridge-<64 hex>-eth0.json" → ("bridge", id, "eth0"); network names
/// may hold '-', so the id is found by its shape.
fn parse_result_name(name: &str) -> Option<(String, String, String)> {
    let stem = name.strip_suffix(".json")?;
    let parts: Vec<&str> = stem.split('-').collect();
    let i = parts.iter().position(|p| is_container_id(p))?;
    if i == 0 || i + 1 >= parts.len() {
        return None;
    }
    Some((parts[..i].join("-"), parts[i].to_owned(), parts[i + 1..].join("-")))
}

/// host-local's lease file: the container id, then the interface name.
fn read_lease(path: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines().map(str::trim);
    let id = lines.next()?.to_owned();
    let ifname = lines.next().filter(|l| !l.is_empty()).unwrap_or("eth0").to_owned();
    Some((id, ifname))
}

/// Removes everything a record-less container `id` left: its runtime
/// state (which stops its processes), mounts, network attachments,
/// directories, image hold and lock.
fn remove_orphan(engine: &Engine, store: &Store, left: &Leftovers, id: &str) -> Result<(), String> {
    delete_runtime_state(engine, id);
    let mut mounts = left.id_mounts.get(id).cloned().unwrap_or_default();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in &mounts {
        match nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(format!("unmount {}: {e}", m.display())),
        }
    }
    let nets = engine.networks();
    for (net, ifname) in left.id_networks.get(id).into_iter().flatten() {
        // CNI DEL is idempotent; without the namespace the veth is gone with it.
        let _ = nets.detach(net, id, None, ifname);
    }
    for f in left.id_files.get(id).into_iter().flatten() {
        let _ = std::fs::remove_file(f);
    }
    // A shim whose container the runtime just killed ends a moment later.
    let shim_state = engine.runroot.join("s").join(&id[..12]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while processes_mentioning(&shim_state) {
        if std::time::Instant::now() > deadline {
            return Err(format!("its shim (state {}) still runs", shim_state.display()));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for d in [engine.root.join("containers").join(id), engine.run_dir(id), shim_state] {
        match std::fs::remove_dir_all(&d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("remove {}: {e}", d.display())),
        }
    }
    store.meta.write(|tx| tx.remove_refs(&holder(id))).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(engine.runroot.join("locks").join(format!("{id}.lock")));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_unescaped() {
        let info = "36 35 98:0 / /mnt/a\\040b rw - ext3 /dev/root rw\n37 35 0:5 / /run/x rw - tmpfs tmpfs rw\n";
        let m = parse_mount_points(info);
        assert!(m.contains(Path::new("/mnt/a b")), "{m:?}");
        assert!(m.contains(Path::new("/run/x")));
    }

    #[test]
    fn result_names_give_network_id_and_interface() {
        let id = "a".repeat(64);
        assert_eq!(
            parse_result_name(&format!("my-net-{id}-eth0.json")),
            Some(("my-net".into(), id.clone(), "eth0".into()))
        );
        assert_eq!(parse_result_name(&format!("{id}-eth0.json")), None, "no network");
        assert_eq!(parse_result_name("bridge-short-eth0.json"), None);
    }

    #[test]
    fn leases_name_the_container_and_interface() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("10.77.0.2");
        std::fs::write(&p, format!("{}\r\neth0", "b".repeat(64))).unwrap();
        assert_eq!(read_lease(&p), Some(("b".repeat(64), "eth0".into())));
        std::fs::write(&p, "c".repeat(64)).unwrap();
        assert_eq!(read_lease(&p), Some(("c".repeat(64), "eth0".into())), "older host-local: the id alone");
    }

    #[test]
    fn a_report_counts_what_remains() {
        let f = |r: Option<&str>| Finding { subject: "s".into(), problem: "p".into(), repaired: r.map(Into::into) };
        let r = CheckReport { findings: vec![f(None), f(Some("fixed"))] };
        assert_eq!((r.remaining(), r.repaired()), (1, 1));
        assert_eq!(f(Some("fixed")).to_string(), "s: p; repaired: fixed");
    }
}
