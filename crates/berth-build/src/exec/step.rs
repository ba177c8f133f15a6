//! One step's filesystem: an overlay of the parent's snapshots with a
//! fresh upper directory, and what the step changed committed as a layer
//! (and unpacked as the next snapshot).
//!
//! Everything a build makes on disk is under its work directory
//! `ROOT/build/tmp-XXXX/`, locked while the build runs. A build that was
//! killed leaves its directory unlocked: the next build unmounts what is
//! mounted there, deletes the runtime state (and so the cgroups) of the
//! steps it was running, and removes it ([`clean_stale`]).

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use berth_image::snapshot::diff::{LayerOptions, store_layer};
use berth_image::snapshot::overlay::{Upper, mount_overlay};
use berth_image::snapshot::{chain_ids, remove_tree};
use berth_image::store::Store;
use berth_image::store::meta::{LayerRecord, SnapshotRecord};
use rustix::fs::FlockOperation;

use crate::error::{Error, IoContext, Result};

/// A build's work directory, locked while it lives, removed on drop.
pub struct WorkDir {
    dir: PathBuf,
    _lock: File,
}

impl WorkDir {
    pub fn new(root: &Path) -> Result<WorkDir> {
        let parent = root.join("build");
        std::fs::create_dir_all(&parent).ctx("create", &parent)?;
        let dir =
            tempfile::Builder::new().prefix("tmp-").tempdir_in(&parent).ctx("create a directory in", &parent)?.keep();
        let lock = File::open(&dir).ctx("open", &dir)?;
        rustix::fs::flock(&lock, FlockOperation::LockExclusive).ctx("lock", &dir)?;
        Ok(WorkDir { dir, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The runtime's state root for this build's steps.
    pub fn runtime_root(&self) -> PathBuf {
        self.dir.join("runtime")
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        unmount_under(&self.dir);
        let _ = remove_tree(&self.dir);
    }
}

/// Removes the work directories of builds that were killed: their mounts,
/// their steps' runtime state (the runtime's `delete --force` also kills a
/// step's processes and removes its cgroup), then the files.
pub fn clean_stale(engine: &berth_engine::engine::Engine) {
    let runtime = &engine.runtime;
    let parent = engine.root.join("build");
    let Ok(entries) = std::fs::read_dir(&parent) else { return };
    for e in entries.flatten() {
        let dir = e.path();
        if !e.file_name().to_string_lossy().starts_with("tmp-") {
            continue;
        }
        let Ok(f) = File::open(&dir) else { continue };
        if rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive).is_err() {
            continue; // a live build's
        }
        let state = dir.join("runtime");
        if let Ok(ids) = std::fs::read_dir(&state) {
            for id in ids.flatten() {
                let _ = std::process::Command::new(runtime)
                    .arg("--root")
                    .arg(&state)
                    .args(["delete", "--force"])
                    .arg(id.file_name())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
        // Addresses on the bridge network (the veths went with the
        // namespaces, when the runtime's delete let go of them).
        if let Ok(ids) = std::fs::read_dir(dir.join("networks")) {
            for id in ids.flatten() {
                super::run::leave(engine, &id.file_name().to_string_lossy(), None);
            }
        }
        unmount_under(&dir);
        let _ = remove_tree(&dir);
    }
}

/// Detaches every mount at or under `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for p in points {
        let _ = rustix::mount::unmount(&p, rustix::mount::UnmountFlags::DETACH);
    }
}

/// A step's overlay: mounted at `rootfs` until dropped.
pub struct StepFs {
    pub dir: PathBuf,
    pub rootfs: PathBuf,
    pub upper: PathBuf,
    mounted: bool,
}

impl StepFs {
    /// Mounts the snapshots of `layers` (bottom first) with a new upper
    /// directory, under `work/name`.
    pub fn mount(store: &Store, work: &Path, name: &str, layers: &[LayerRecord]) -> Result<StepFs> {
        let dir = work.join(name);
        let (upper, ovl_work, rootfs, empty) =
            (dir.join("upper"), dir.join("work"), dir.join("rootfs"), dir.join("empty"));
        for d in [&upper, &ovl_work, &rootfs, &empty] {
            std::fs::create_dir_all(d).ctx("create", d)?;
        }
        let mut lowers: Vec<PathBuf> = layers.iter().rev().map(|l| store.snapshots.fs_path(&l.chain_id)).collect();
        if lowers.is_empty() {
            // FROM scratch: overlay needs a lower layer.
            lowers.push(empty);
        }
        // Volatile: the step's upper only lives until its layer is cut
        // (the layer blob is what must be durable), so no sync at umount.
        mount_overlay(&lowers, Some(Upper { upper: &upper, work: &ovl_work, volatile: true }), &rootfs)?;
        Ok(StepFs { dir, rootfs, upper, mounted: true })
    }

    pub fn unmount(&mut self) -> Result<()> {
        if self.mounted {
            self.mounted = false;
            berth_image::snapshot::overlay::unmount(&self.rootfs)?;
        }
        Ok(())
    }

    /// Whether the step changed anything.
    pub fn changed(&self) -> Result<bool> {
        Ok(std::fs::read_dir(&self.upper).ctx("read", &self.upper)?.next().is_some())
    }
}

impl Drop for StepFs {
    fn drop(&mut self) {
        if self.mounted {
            let _ = rustix::mount::unmount(&self.rootfs, rustix::mount::UnmountFlags::DETACH);
        }
        let _ = remove_tree(&self.dir);
    }
}

/// What a RUN step holds while it runs: a stage's rootfs mounted for a
/// bind, a locked cache directory.
pub enum Held {
    Mount(ReadOnly),
    Lock(File),
}

/// A cache mount's directory, made on first use with the owner and mode
/// the mount asks for (BuildKit's defaults: root, 0755).
pub fn cache_dir(dir: &Path, uid: u32, gid: u32, mode: u32) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).ctx("create", parent)?;
    // Made aside and renamed, so a concurrent step never sees it half set.
    let tmp = tempfile::Builder::new().prefix(".new-").tempdir_in(parent).ctx("create a directory in", parent)?;
    std::os::unix::fs::chown(tmp.path(), Some(uid), Some(gid)).ctx("chown", tmp.path())?;
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(mode))
        .ctx("chmod", tmp.path())?;
    match std::fs::rename(tmp.path(), dir) {
        Ok(()) => {
            let _ = tmp.keep();
            Ok(())
        }
        // Another step made it first.
        Err(_) if dir.is_dir() => Ok(()),
        Err(e) => Err(e).ctx("rename to", dir),
    }
}

/// `sharing=locked`: an exclusive lock on the cache directory.
pub fn lock(dir: &Path) -> Result<File> {
    let f = File::open(dir).ctx("open", dir)?;
    rustix::fs::flock(&f, FlockOperation::LockExclusive).ctx("lock", dir)?;
    Ok(f)
}

/// A read-only view of a stage's (or an image's) rootfs: what COPY
/// --from and RUN --mount=type=bind,from= read. Unmounted on drop.
pub struct ReadOnly {
    pub path: PathBuf,
    dir: PathBuf,
}

impl ReadOnly {
    pub fn mount(store: &Store, work: &Path, name: &str, layers: &[LayerRecord]) -> Result<ReadOnly> {
        let dir = work.join(name);
        let path = dir.join("rootfs");
        let empty = dir.join("empty");
        for d in [&path, &empty] {
            std::fs::create_dir_all(d).ctx("create", d)?;
        }
        let mut lowers: Vec<PathBuf> = layers.iter().rev().map(|l| store.snapshots.fs_path(&l.chain_id)).collect();
        if lowers.is_empty() {
            lowers.push(empty);
        }
        mount_overlay(&lowers, None, &path)?;
        Ok(ReadOnly { path, dir })
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.path, rustix::mount::UnmountFlags::DETACH);
        let _ = remove_tree(&self.dir);
    }
}

/// Commits the changes in `fs` (unmounted) on top of `parent` as a layer
/// and its snapshot.
pub fn commit(store: &Store, fs: &StepFs, parent: &[LayerRecord], epoch: Option<i64>) -> Result<LayerRecord> {
    let layer = store_layer(&store.content, &fs.upper, &LayerOptions { source_date_epoch: epoch })?;
    let mut diff_ids: Vec<_> = parent.iter().map(|l| l.diff_id.clone()).collect();
    diff_ids.push(layer.diff_id.clone());
    let chain = chain_ids(&diff_ids).pop().ok_or_else(|| Error::Invalid("no layers".into()))?;
    let record = LayerRecord {
        digest: layer.digest,
        size: layer.size,
        media_type: layer.media_type.to_string(),
        diff_id: layer.diff_id,
        chain_id: chain,
    };
    adopt_upper(store, &fs.upper, &record, layer.unpacked_size, parent.last())?;
    Ok(record)
}

/// Makes the upper directory itself the layer's snapshot (renamed, as
/// docker's overlay2 keeps a container's diff directory as the image's
/// layer): it already is the diff in overlay form, so nothing is unpacked
/// or deleted (which, for a COPY of many files, cost most of the step).
/// Another filesystem under the root (EXDEV) falls back to unpacking the
/// blob.
fn adopt_upper(
    store: &Store,
    upper: &Path,
    layer: &LayerRecord,
    size: u64,
    parent: Option<&LayerRecord>,
) -> Result<()> {
    if let Some(prep) = store.snapshots.prepare(&layer.chain_id)? {
        let target = prep.fs_path();
        std::fs::remove_dir(&target).ctx("remove", &target)?;
        match std::fs::rename(upper, &target) {
            Ok(()) => {
                prep.commit(size, true)?;
                record(store, layer, parent, size)?;
            }
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => drop(prep),
            Err(e) => return Err(e).ctx("rename to", &target),
        }
    }
    ensure_snapshot(store, layer, parent)
}

fn record(store: &Store, layer: &LayerRecord, parent: Option<&LayerRecord>, size: u64) -> Result<()> {
    let rec = SnapshotRecord {
        chain_id: layer.chain_id.clone(),
        diff_id: layer.diff_id.clone(),
        parent: parent.map(|p| p.chain_id.clone()),
        size,
    };
    store.meta.write(|tx| tx.put_snapshot(&rec))?;
    Ok(())
}

/// Makes sure the snapshot of `layer` is on disk and recorded (a cached
/// layer whose snapshot a collection removed is unpacked again).
pub fn ensure_snapshot(store: &Store, layer: &LayerRecord, parent: Option<&LayerRecord>) -> Result<()> {
    if store.snapshots.exists(&layer.chain_id) {
        // Recorded when it was made (the record goes in before any image
        // or cache entry refers to it).
        return Ok(());
    }
    let opts = berth_image::unpack::UnpackOptions::default();
    let size = match berth_image::pull::unpack_blob(store, &layer.digest, &layer.diff_id, &layer.chain_id, &opts, true)?
    {
        Some(n) => n,
        None => store.snapshots.size(&layer.chain_id),
    };
    record(store, layer, parent, size)
}

/// Removes the mount-point stubs the runtime made in the upper directory
/// for `targets` that did not exist in the rootfs before the step (empty
/// files and directories only, as BuildKit removes them): they are not
/// the step's changes.
pub fn remove_stubs(upper: &Path, missing: &[String]) {
    let Ok(root) =
        rustix::fs::open(upper, rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC, rustix::fs::Mode::empty())
    else {
        return;
    };
    // Deepest first, so a created parent is empty when its turn comes.
    let mut missing = missing.to_vec();
    missing.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for t in missing {
        let clean = berth_fs::CleanPath::new(t.as_bytes());
        let Some((parent, name)) = clean.split_last() else { continue };
        let Ok(dir) = berth_fs::open_dir_in(root.as_fd(), &berth_fs::CleanPath::path_of(parent)) else { continue };
        let name = std::ffi::OsStr::new(std::str::from_utf8(name).unwrap_or(""));
        let Ok(st) = rustix::fs::statat(&dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) else { continue };
        match rustix::fs::FileType::from_raw_mode(st.st_mode) {
            rustix::fs::FileType::RegularFile if st.st_size == 0 => {
                let _ = rustix::fs::unlinkat(&dir, name, rustix::fs::AtFlags::empty());
            }
            rustix::fs::FileType::Directory => {
                // Fails (and so keeps it) unless empty.
                let _ = rustix::fs::unlinkat(&dir, name, rustix::fs::AtFlags::REMOVEDIR);
            }
            _ => {}
        }
    }
}
