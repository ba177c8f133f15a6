//! Named volumes, docker's `local` driver: a directory per volume,
//! ROOT/volumes/NAME/_data, and its metadata beside it in volume.json.
//! Creating is a mkdir, so two `berth volume create x` at once make one
//! volume. Which containers use a volume is read from their records (the
//! engine refuses `rm` while one does), not kept twice.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use berth_fs::copy::Owner;
use rustix::fs::{Mode, OFlags};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("no such volume: {0}")]
    NotFound(String),
    #[error("volume name {0:?} is not valid: use [a-zA-Z0-9][a-zA-Z0-9_.-]")]
    BadName(String),
    #[error("volume {0} is in use by container {1}")]
    InUse(String, String),
    #[error("{what} {}: {source}", path.display())]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    /// Copying the image's files into a new volume.
    #[error("fill volume {volume} from the image: {source}")]
    Fill { volume: String, source: berth_fs::copy::Error },
}

/// `berth volume inspect`, shaped like docker's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Driver")]
    pub driver: String,
    #[serde(rename = "Mountpoint")]
    pub mountpoint: PathBuf,
    #[serde(rename = "CreatedAt")]
    pub created_at: String,
    #[serde(rename = "Labels", default)]
    pub labels: BTreeMap<String, String>,
    #[serde(rename = "Scope")]
    pub scope: String,
    /// An anonymous volume (`-v /data`): removed with its container by `rm -v`.
    #[serde(rename = "Anonymous", default)]
    pub anonymous: bool,
}

pub struct Volumes {
    dir: PathBuf,
}

fn io<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> VolumeError + 'p {
    move |e| VolumeError::Io { what, path: path.to_owned(), source: e }
}

impl Volumes {
    /// Volumes under `dir` (ROOT/volumes).
    pub fn new(dir: impl Into<PathBuf>) -> Volumes {
        Volumes { dir: dir.into() }
    }

    /// Creates volume `name`, or returns it if it exists (docker's
    /// `volume create` is idempotent for the same name).
    pub fn create(&self, name: &str, labels: BTreeMap<String, String>, anonymous: bool) -> Result<Volume, VolumeError> {
        check_name(name)?;
        std::fs::create_dir_all(&self.dir).map_err(io("create", &self.dir))?;
        let vdir = self.dir.join(name);
        match std::fs::create_dir(&vdir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return self.get(name),
            Err(e) => return Err(io("create", &vdir)(e)),
        }
        let data = vdir.join("_data");
        std::fs::create_dir(&data).map_err(io("create", &data))?;
        let vol = Volume {
            name: name.into(),
            driver: "local".into(),
            mountpoint: data,
            created_at: now_rfc3339(),
            labels,
            scope: "local".into(),
            anonymous,
        };
        let meta = vdir.join("volume.json");
        let json = serde_json::to_vec_pretty(&vol).unwrap_or_default();
        berth_fs::write_atomic(&meta, &json, 0o644).map_err(io("write", &meta))?;
        Ok(vol)
    }

    pub fn get(&self, name: &str) -> Result<Volume, VolumeError> {
        check_name(name)?;
        let meta = self.dir.join(name).join("volume.json");
        match std::fs::read(&meta) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| io("parse", &meta)(std::io::Error::other(e))),
            // A create in progress (directory made, metadata not yet).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(VolumeError::NotFound(name.into())),
            Err(e) => Err(io("read", &meta)(e)),
        }
    }

    pub fn list(&self) -> Result<Vec<Volume>, VolumeError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("read", &self.dir)(e)),
        };
        let mut v: Vec<Volume> =
            entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter_map(|n| self.get(&n).ok()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// Removes a volume and its data. `users` are the containers that
    /// mount it (from their records); any one of them refuses the removal.
    pub fn remove(&self, name: &str, users: &[String]) -> Result<(), VolumeError> {
        self.get(name)?;
        if let Some(c) = users.first() {
            return Err(VolumeError::InUse(name.into(), c.clone()));
        }
        let vdir = self.dir.join(name);
        // Rename first: a half-removed volume is never seen as a volume.
        let doomed = self.dir.join(format!(".removing-{name}"));
        std::fs::rename(&vdir, &doomed).map_err(io("remove", &vdir))?;
        std::fs::remove_dir_all(&doomed).map_err(io("remove", &doomed))
    }

    /// Docker copies what the image has at a volume's mount point into a
    /// new, empty volume: `target` is that path in the container, resolved
    /// inside `rootfs` (pathrs), so a hostile image's symlink there cannot
    /// make the engine copy a host directory. Nothing at `target`, or no
    /// directory: nothing to copy.
    pub fn populate_from(&self, vol: &Volume, rootfs: &Path, target: &str) -> Result<(), VolumeError> {
        let root = pathrs::Root::open(rootfs).map_err(|e| io("open", rootfs)(berth_fs::io_error(e)))?;
        match berth_fs::open_dir_in(root.as_fd(), Path::new(target)) {
            Ok(dir) => self.fill(vol, dir.as_fd(), Path::new(target)),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(io("open", &rootfs.join(target.trim_start_matches('/')))(e)),
        }
    }

    /// Copies what `source` holds into the volume if it is empty, as
    /// `cp -a` would (owners, modes, times, xattrs, hard links; the
    /// volume's directory takes the source's owner and mode) but by file
    /// descriptor, never following a symlink.
    fn fill(&self, vol: &Volume, source: BorrowedFd<'_>, shown: &Path) -> Result<(), VolumeError> {
        let empty = std::fs::read_dir(&vol.mountpoint).map_err(io("read", &vol.mountpoint))?.next().is_none();
        if !empty {
            return Ok(());
        }
        let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        let data = rustix::fs::open(&vol.mountpoint, flags, Mode::empty())
            .map_err(|e| io("open", &vol.mountpoint)(e.into()))?;
        berth_fs::copy::copy_dir(source, data.as_fd(), Owner::Keep, shown)
            .map_err(|source| VolumeError::Fill { volume: vol.name.clone(), source })
    }
}

/// Nothing there, or not a directory: nothing to copy.
fn is_missing(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error())
}

fn check_name(name: &str) -> Result<(), VolumeError> {
    if crate::names::is_valid(name) { Ok(()) } else { Err(VolumeError::BadName(name.into())) }
}

/// Now, RFC 3339 UTC with seconds (what docker prints).
/// Volume operations that front ends call: they add the volume events.
impl crate::engine::Engine {
    /// [`Volumes::create`], and a `create` event when the volume is new.
    pub fn create_volume(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
        anonymous: bool,
    ) -> Result<Volume, VolumeError> {
        let vols = self.volumes();
        let new = matches!(vols.get(name), Err(VolumeError::NotFound(_)));
        let v = vols.create(name, labels, anonymous)?;
        if new {
            self.named_event("volume", "create", name, &[]);
        }
        Ok(v)
    }

    /// [`Volumes::remove`], and its `destroy` event.
    pub fn remove_volume(&self, name: &str, users: &[String]) -> Result<(), VolumeError> {
        self.volumes().remove(name, users)?;
        self.named_event("volume", "destroy", name, &[]);
        Ok(())
    }
}

pub fn now_rfc3339() -> String {
    berth_proc::time::now_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_are_created_once_listed_populated_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let vols = Volumes::new(dir.path().join("volumes"));
        let labels = BTreeMap::from([("app".to_owned(), "db".to_owned())]);
        let v = vols.create("data", labels.clone(), false).unwrap();
        assert_eq!(v.mountpoint, dir.path().join("volumes/data/_data"));
        assert!(v.mountpoint.is_dir());
        std::fs::write(v.mountpoint.join("keep"), "x").unwrap();
        let again = vols.create("data", BTreeMap::new(), false).unwrap();
        assert_eq!((again.labels, again.created_at), (labels, v.created_at.clone()), "the same volume");
        assert!(v.mountpoint.join("keep").exists(), "create did not wipe it");

        let src = dir.path().join("image-etc");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("conf"), "from image").unwrap();
        std::os::unix::fs::symlink("/nonexistent", src.join("link")).unwrap();
        let fresh = vols.create("fresh", BTreeMap::new(), true).unwrap();
        vols.populate_from(&fresh, dir.path(), "/image-etc").unwrap();
        assert_eq!(std::fs::read_to_string(fresh.mountpoint.join("conf")).unwrap(), "from image");
        assert_eq!(std::fs::read_link(fresh.mountpoint.join("link")).unwrap(), Path::new("/nonexistent"));
        vols.populate_from(&v, dir.path(), "/image-etc").unwrap();
        assert!(!v.mountpoint.join("conf").exists(), "a volume with data is not populated");

        assert_eq!(vols.list().unwrap().iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["data", "fresh"]);
        let err = vols.remove("data", &["web".into()]).unwrap_err();
        assert_eq!(err.to_string(), "volume data is in use by container web");
        vols.remove("data", &[]).unwrap();
        assert!(matches!(vols.get("data"), Err(VolumeError::NotFound(_))));
        assert!(!dir.path().join("volumes/data").exists());
        assert!(matches!(vols.create("../x", BTreeMap::new(), false), Err(VolumeError::BadName(_))));
    }

    #[test]
    fn a_new_volume_is_filled_as_cp_a_would_and_only_from_inside_the_rootfs() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        let data = rootfs.join("var/lib/db");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("table"), "rows").unwrap();
        std::fs::hard_link(data.join("table"), data.join("table.bak")).unwrap();
        std::os::unix::fs::chown(&data, Some(999), Some(998)).unwrap();
        std::os::unix::fs::chown(data.join("table"), Some(999), Some(998)).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        let host = dir.path().join("host-secrets");
        std::fs::create_dir(&host).unwrap();
        std::fs::write(host.join("key"), "host").unwrap();
        std::os::unix::fs::symlink(&host, rootfs.join("evil")).unwrap();
        std::os::unix::fs::symlink("/var/lib/db", rootfs.join("db")).unwrap();
        let vols = Volumes::new(dir.path().join("volumes"));

        let v = vols.create("db", BTreeMap::new(), false).unwrap();
        vols.populate_from(&v, &rootfs, "/db").unwrap();
        let top = std::fs::metadata(&v.mountpoint).unwrap();
        assert_eq!((top.uid(), top.gid(), top.mode() & 0o7777), (999, 998, 0o700), "the volume takes the dir's owner");
        let (a, b) = (v.mountpoint.join("table"), v.mountpoint.join("table.bak"));
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "rows");
        assert_eq!(std::fs::metadata(&a).unwrap().uid(), 999);
        assert_eq!(std::fs::metadata(&a).unwrap().ino(), std::fs::metadata(&b).unwrap().ino(), "hard link kept");

        // `evil` points at a host directory: inside the rootfs it names
        // nothing, so nothing is copied.
        let e = vols.create("evil", BTreeMap::new(), false).unwrap();
        vols.populate_from(&e, &rootfs, "/evil").unwrap();
        assert_eq!(std::fs::read_dir(&e.mountpoint).unwrap().count(), 0, "a host directory was copied");
        vols.populate_from(&e, &rootfs, "/var/lib/db/table").unwrap();
        assert_eq!(std::fs::read_dir(&e.mountpoint).unwrap().count(), 0, "a file is not a directory to copy");
    }
}
