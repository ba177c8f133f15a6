//! Named volumes, docker's `local` driver: a directory per volume,
//! ROOT/volumes/NAME/_data, and its metadata beside it in volume.json.
//! Creating is a mkdir, so two `berth volume create x` at once make one
//! volume. Which containers use a volume is read from their records (the
//! engine refuses `rm` while one does), not kept twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
        let tmp = vdir.join(".volume.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&vol).unwrap_or_default()).map_err(io("write", &tmp))?;
        std::fs::rename(&tmp, &meta).map_err(io("write", &meta))?;
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
    /// new, empty volume: `source` is that directory in the container's
    /// rootfs (already resolved inside it by the caller).
    pub fn populate(&self, vol: &Volume, source: &Path) -> Result<(), VolumeError> {
        let empty = std::fs::read_dir(&vol.mountpoint).map_err(io("read", &vol.mountpoint))?.next().is_none();
        if !empty || !source.is_dir() {
            return Ok(());
        }
        // cp -a (GNU or busybox) copies symlinks as links and keeps owners,
        // modes, times and hard links; it is on every host the engine runs on.
        let out = std::process::Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", source.display()))
            .arg(&vol.mountpoint)
            .output()
            .map_err(io("copy into", &vol.mountpoint))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io("copy into", &vol.mountpoint)(std::io::Error::other(
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )))
        }
    }
}

fn check_name(name: &str) -> Result<(), VolumeError> {
    if crate::names::is_valid(name) { Ok(()) } else { Err(VolumeError::BadName(name.into())) }
}

/// Now, RFC 3339 UTC with seconds (what docker prints).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    rfc3339(secs)
}

/// Seconds since the epoch as "YYYY-MM-DDTHH:MM:SSZ".
pub fn rfc3339(secs: u64) -> String {
    berth_shim::time::format_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_392_000 + 3_661), "2026-11-23T01:01:01Z");
    }

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
        vols.populate(&fresh, &src).unwrap();
        assert_eq!(std::fs::read_to_string(fresh.mountpoint.join("conf")).unwrap(), "from image");
        assert_eq!(std::fs::read_link(fresh.mountpoint.join("link")).unwrap(), Path::new("/nonexistent"));
        vols.populate(&v, &src).unwrap();
        assert!(!v.mountpoint.join("conf").exists(), "a volume with data is not populated");

        assert_eq!(vols.list().unwrap().iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["data", "fresh"]);
        let err = vols.remove("data", &["web".into()]).unwrap_err();
        assert_eq!(err.to_string(), "volume data is in use by container web");
        vols.remove("data", &[]).unwrap();
        assert!(matches!(vols.get("data"), Err(VolumeError::NotFound(_))));
        assert!(!dir.path().join("volumes/data").exists());
        assert!(matches!(vols.create("../x", BTreeMap::new(), false), Err(VolumeError::BadName(_))));
    }
}
