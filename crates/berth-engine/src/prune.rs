//! Maintenance: what is on disk (`system df`) and taking away what nothing
//! uses (`container prune`, the container, network and volume parts of
//! `system prune`; images are pruned by berth-image).

use std::collections::BTreeSet;
use std::path::Path;

use berth_image::Digest;
use berth_image::gc::GcReport;

use crate::Error;
use crate::engine::Engine;
use crate::network::DEFAULT_NETWORK;
use crate::store::{ContainerRecord, Status};

/// One row of `system df`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub total: usize,
    pub active: usize,
    pub size: u64,
    pub reclaimable: u64,
}

/// `system df`: images, containers, local volumes and the build cache
/// (berth has none yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskUsage {
    pub images: Usage,
    pub containers: Usage,
    pub volumes: Usage,
    pub build_cache: Usage,
}

/// What a prune took away.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Container ids, network or volume names.
    pub removed: Vec<String>,
    pub bytes: u64,
}

/// A container that is not running: what `container prune` removes.
fn stopped(rec: &ContainerRecord) -> bool {
    !matches!(rec.status, Status::Running | Status::Paused | Status::Restarting)
}

impl Engine {
    /// Every container as it is now (each checked against its shim).
    pub fn current_containers(&self) -> Result<Vec<ContainerRecord>, Error> {
        Ok(self.containers()?.list()?.iter().map(|r| self.refresh(r)).collect())
    }

    /// What a container wrote: the size of its overlay's upper directory
    /// (docker's SizeRw).
    pub fn container_size(&self, id: &str) -> u64 {
        dir_size(&self.root.join("containers").join(id).join("upper"))
    }

    /// Removes every container that is not running, with its mounts and
    /// network; the ids and the space their writable layers took. Not one
    /// that a `create`/`run` is still making or starting.
    pub fn prune_containers(&self) -> Result<Pruned, Error> {
        self.prune_containers_where(&|_| true)
    }

    /// [`Engine::prune_containers`], of the containers `pick` chooses
    /// only (the Docker API's `until` and `label` filters).
    pub fn prune_containers_where(&self, pick: &dyn Fn(&ContainerRecord) -> bool) -> Result<Pruned, Error> {
        let mut out = Pruned::default();
        // Only the default namespace's: berthd's (the kubelet's) are the
        // kubelet's to collect.
        let all = self.current_containers()?.into_iter();
        for rec in all.filter(|r| r.namespace.is_empty()).filter(stopped).filter(|r| pick(r)) {
            // Checked after the state: a creator that has ended since
            // either started it (remove then refuses) or left it stopped.
            if self.being_created(&rec.id) {
                continue;
            }
            let size = self.container_size(&rec.id);
            match self.remove(&rec.id, false) {
                Ok(()) => {
                    out.removed.push(rec.id);
                    out.bytes += size;
                }
                // Started or removed by someone else meanwhile: not ours to prune.
                Err(Error::Running(_)) => {}
                Err(Error::Store(crate::store::StoreError::NotFound(_))) => {}
                // Kept, marked for removal, for a later prune or `rm -f`
                // to retry; the others are still pruned.
                Err(e @ Error::Detach { .. }) => tracing::warn!("{e}"),
                Err(e) => return Err(e),
            }
        }
        self.sweep_creating_locks()?;
        Ok(out)
    }

    /// Removes the creating locks of containers that have no record and
    /// no creator any more (killed before it wrote the record). A lock
    /// whose record appears after the listing is held, so it stays.
    fn sweep_creating_locks(&self) -> Result<(), Error> {
        let dir = self.runroot.join("creating");
        let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(()) };
        let store = self.containers()?;
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            // Unlinked only while held (see engine::claim): a creator that
            // gets the lock after us finds its file gone and makes another.
            let Ok(f) = std::fs::File::open(e.path()) else { continue };
            let Ok(_held) = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) else { continue };
            if let Err(crate::store::StoreError::NotFound(_)) = store.get(&id) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }

    /// `image prune`: dangling images (with `all`, every image) that no
    /// container uses; their IDs.
    pub fn prune_images(&self, all: bool) -> Result<Vec<Digest>, Error> {
        self.prune_images_where(all, &|_| true)
    }

    /// [`Engine::prune_images`], of the images `pick` chooses only.
    pub fn prune_images_where(
        &self,
        all: bool,
        pick: &dyn Fn(&berth_image::store::meta::ImageRecord) -> bool,
    ) -> Result<Vec<Digest>, Error> {
        Ok(berth_image::images::prune_where(&self.store()?, all, &|h| self.image_user(h), pick)?)
    }

    /// Garbage collection of the image store, after dropping the image
    /// holds of containers that are gone.
    pub fn collect_garbage(&self) -> Result<GcReport, Error> {
        let store = self.store()?;
        berth_image::images::release_stale(&store, &|h| self.image_user(h))?;
        Ok(berth_image::gc::collect(&store)?)
    }

    /// Removes the user networks no container is on (never the default).
    pub fn prune_networks(&self) -> Result<Pruned, Error> {
        let nets = self.networks();
        let used: BTreeSet<String> = self.containers()?.list()?.into_iter().map(|r| r.config.network).collect();
        let mut out = Pruned::default();
        for n in nets.list()? {
            if n.name == DEFAULT_NETWORK || used.contains(&n.name) || !nets.endpoints(&n.name)?.is_empty() {
                continue;
            }
            nets.remove(&n.name)?;
            out.removed.push(n.name);
        }
        Ok(out)
    }

    /// Removes the volumes no container mounts; their names and sizes.
    pub fn prune_volumes(&self) -> Result<Pruned, Error> {
        self.prune_volumes_where(&|_| true)
    }

    /// [`Engine::prune_volumes`], of the volumes `pick` chooses only
    /// (docker ≥ 1.42 prunes anonymous volumes unless told `all`).
    pub fn prune_volumes_where(&self, pick: &dyn Fn(&crate::volume::Volume) -> bool) -> Result<Pruned, Error> {
        let vols = self.volumes();
        let mut out = Pruned::default();
        for v in vols.list()?.into_iter().filter(|v| pick(v)) {
            let users = self.volume_users(&v.name)?;
            if !users.is_empty() {
                continue;
            }
            let size = dir_size(&v.mountpoint);
            self.remove_volume(&v.name, &users)?;
            out.removed.push(v.name);
            out.bytes += size;
        }
        Ok(out)
    }

    /// `system df`.
    pub fn disk_usage(&self) -> Result<DiskUsage, Error> {
        let containers = self.current_containers()?;
        let in_use: BTreeSet<&str> = containers.iter().map(|c| c.image_id.as_str()).collect();
        let meta = self.store()?.meta.read_all()?;
        let mut images = Usage::default();
        for img in &meta.images {
            images.total += 1;
            images.size += img.size;
            if in_use.contains(img.id.to_string().as_str()) {
                images.active += 1;
            } else {
                images.reclaimable += img.size;
            }
        }
        let mut ctrs = Usage::default();
        for c in &containers {
            let size = self.container_size(&c.id);
            ctrs.total += 1;
            ctrs.size += size;
            if stopped(c) {
                ctrs.reclaimable += size;
            } else {
                ctrs.active += 1;
            }
        }
        let mut volumes = Usage::default();
        for v in self.volumes().list()? {
            let size = dir_size(&v.mountpoint);
            volumes.total += 1;
            volumes.size += size;
            if self.volume_users(&v.name)?.is_empty() {
                volumes.reclaimable += size;
            } else {
                volumes.active += 1;
            }
        }
        Ok(DiskUsage { images, containers: ctrs, volumes, build_cache: Usage::default() })
    }
}

/// The bytes the files under `dir` hold (symlinks not followed; what
/// cannot be read counts nothing).
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_count_files_under_a_tree_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/f"), [0u8; 100]).unwrap();
        std::fs::write(dir.path().join("a/b/g"), [0u8; 23]).unwrap();
        std::os::unix::fs::symlink("/", dir.path().join("a/up")).unwrap();
        let link_len = std::fs::symlink_metadata(dir.path().join("a/up")).unwrap().len();
        assert_eq!(dir_size(dir.path()), 123 + link_len);
        assert_eq!(dir_size(&dir.path().join("missing")), 0);
    }
}
