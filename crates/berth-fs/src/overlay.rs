//! Overlay mounts of a layer chain: on a path (the image store's
//! snapshots, the runtime's rootfs), or detached (a file descriptor on a
//! mount that is in no mount table, gone when the last descriptor closes).
//!
//! mount(2) takes its options in one page, which a long chain of absolute
//! lower paths overflows (~60 layers at /var/lib/berth/snapshots/<64 hex>/fs).
//! Then the new mount API is used instead, one `lowerdir+` per layer
//! (Linux 6.8+), so no option string grows with the chain.
//!
//! [`Overlay`] is also what the engine hands berth-runtime in the
//! [`ANNOTATION`] of a container's config.json: the runtime mounts the
//! rootfs inside the container's own mount namespace, so a running
//! container adds no mount to the host's table (each host mount makes every
//! later mount namespace copy, and every mountinfo read, slower).

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags};
use serde::{Deserialize, Serialize};

/// The config.json annotation whose value (JSON) is the [`Overlay`] that
/// berth-runtime mounts on `root.path` inside the container's mount
/// namespace, before anything else is mounted there.
pub const ANNOTATION: &str = "org.berth.rootfs.overlay";

/// The most mount(2) takes as its data argument.
const MOUNT_DATA_MAX: usize = 4095;

/// An overlay of read-only layers, with an upper and work directory for a
/// writable one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overlay {
    /// Topmost first, as overlayfs's lowerdir lists them.
    pub lower: Vec<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work: Option<PathBuf>,
    /// overlayfs `volatile` (Linux 5.10+): no sync of the upper layer's
    /// filesystem, at umount above all (there it flushes the whole
    /// filesystem's journal, ~1 ms per container on this kind of host).
    /// For an upper that is thrown away with its container (`run --rm`,
    /// as podman does for them): after a crash the kernel refuses to mount
    /// it again, and nothing does. Ignored by a kernel without it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub volatile: bool,
}

/// What failed, and the kernel's (or the check's) reason.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct OverlayError {
    pub what: String,
    #[source]
    pub source: io::Error,
}

fn err(what: impl Into<String>) -> impl FnOnce(rustix::io::Errno) -> OverlayError {
    let what = what.into();
    move |e| OverlayError { what, source: e.into() }
}

fn invalid(what: &str) -> OverlayError {
    OverlayError { what: what.to_owned(), source: io::Error::from(io::ErrorKind::InvalidInput) }
}

impl Overlay {
    /// Refuses what no mount of it could mean: no layer, a relative path,
    /// an upper without a work directory or the other way round.
    pub fn validate(&self) -> Result<(), OverlayError> {
        if self.lower.is_empty() {
            return Err(invalid("overlay: no lower layer"));
        }
        if self.upper.is_some() != self.work.is_some() {
            return Err(invalid("overlay: upper and work go together"));
        }
        let all = self.lower.iter().chain(&self.upper).chain(&self.work);
        if let Some(p) = all.into_iter().find(|p| !p.is_absolute()) {
            return Err(invalid(&format!("overlay: {} is not an absolute path", p.display())));
        }
        Ok(())
    }

    fn writable(&self) -> bool {
        self.upper.is_some()
    }

    /// Mounts it at `target`. One lower and no upper is a read-only bind
    /// mount (overlay needs two layers to merge).
    pub fn mount(&self, target: &Path) -> Result<(), OverlayError> {
        self.validate()?;
        if self.lower.len() == 1 && !self.writable() {
            rustix::mount::mount_bind(&self.lower[0], target).map_err(err("bind"))?;
            return rustix::mount::mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "")
                .map_err(err("remount read-only"));
        }
        match self.options() {
            Some(data) => self.mount_plain(&data, target),
            None => {
                let mnt = self.detached_overlay()?;
                rustix::mount::move_mount(&mnt, "", rustix::fs::CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
                    .map_err(err("move_mount"))
            }
        }
    }

    /// mount(2)'s option string, if it can carry these paths (no `:` or
    /// `,` in them, a page at most).
    fn options(&self) -> Option<String> {
        let all = self.lower.iter().chain(&self.upper).chain(&self.work);
        if all.into_iter().any(|p| p.as_os_str().as_bytes().iter().any(|b| *b == b':' || *b == b',')) {
            return None;
        }
        let lowerdir: Vec<String> = self.lower.iter().map(|p| p.display().to_string()).collect();
        let mut data = format!("lowerdir={}", lowerdir.join(":"));
        if let (Some(u), Some(w)) = (&self.upper, &self.work) {
            data.push_str(&format!(",upperdir={},workdir={}", u.display(), w.display()));
            if self.volatile {
                data.push_str(",volatile");
            }
        }
        (data.len() <= MOUNT_DATA_MAX).then_some(data)
    }

    /// The layers as one fsconfig `lowerdir` value, if that fits: the
    /// kernel copies at most 256 bytes of a string parameter (with its NUL).
    fn short_lowerdir(&self) -> Option<String> {
        let bad = |p: &PathBuf| p.as_os_str().as_bytes().iter().any(|b| *b == b':' || *b == b',');
        if self.lower.iter().any(bad) {
            return None;
        }
        let lowerdir: Vec<String> = self.lower.iter().map(|p| p.display().to_string()).collect();
        Some(lowerdir.join(":")).filter(|s| s.len() < 256)
    }

    fn mount_plain(&self, data: &str, target: &Path) -> Result<(), OverlayError> {
        let flags = if self.writable() { MountFlags::empty() } else { MountFlags::RDONLY };
        let c = std::ffi::CString::new(data).map_err(|_| invalid("overlay options: NUL in a path"))?;
        match rustix::mount::mount("overlay", target, "overlay", flags, c.as_c_str()) {
            // A kernel before 5.10 does not know `volatile`.
            Err(rustix::io::Errno::INVAL) if data.ends_with(",volatile") => {
                let c = std::ffi::CString::new(data.trim_end_matches(",volatile")).expect("no NUL");
                rustix::mount::mount("overlay", target, "overlay", flags, c.as_c_str())
            }
            other => other,
        }
        .map_err(err("mount overlay"))
    }

    /// A descriptor on its root that no mount table holds: for reading and
    /// writing a container's files while nothing else has them mounted.
    /// One lower and no upper needs no mount: the layer's own directory.
    pub fn detached(&self) -> Result<OwnedFd, OverlayError> {
        self.validate()?;
        if self.lower.len() == 1 && !self.writable() {
            let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
            return rustix::fs::open(&self.lower[0], flags, Mode::empty()).map_err(err("open the layer"));
        }
        self.detached_overlay()
    }

    /// The new mount API: the layers as one `lowerdir` where that string
    /// is short enough for fsconfig (255 bytes: any kernel with the API),
    /// else one `lowerdir+` per layer (Linux 6.8+: any number, any path).
    fn detached_overlay(&self) -> Result<OwnedFd, OverlayError> {
        let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(err("fsopen overlay"))?;
        match self.short_lowerdir() {
            Some(lowerdir) => {
                rustix::mount::fsconfig_set_string(&fs, "lowerdir", lowerdir).map_err(err("lowerdir"))?;
            }
            None => {
                for l in &self.lower {
                    rustix::mount::fsconfig_set_string(&fs, "lowerdir+", l)
                        .map_err(err(format!("lowerdir+ {} (needs Linux 6.8)", l.display())))?;
                }
            }
        }
        if let (Some(u), Some(w)) = (&self.upper, &self.work) {
            rustix::mount::fsconfig_set_string(&fs, "upperdir", u).map_err(err("upperdir"))?;
            rustix::mount::fsconfig_set_string(&fs, "workdir", w).map_err(err("workdir"))?;
            if self.volatile {
                rustix::mount::fsconfig_set_flag(&fs, "volatile").map_err(err("volatile"))?;
            }
        }
        rustix::mount::fsconfig_create(&fs).map_err(err("create overlay"))?;
        let attrs = if self.writable() { MountAttrFlags::empty() } else { MountAttrFlags::MOUNT_ATTR_RDONLY };
        rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs).map_err(err("fsmount"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay(lower: &[&str], upper: Option<&str>, work: Option<&str>) -> Overlay {
        Overlay {
            lower: lower.iter().map(PathBuf::from).collect(),
            upper: upper.map(PathBuf::from),
            work: work.map(PathBuf::from),
            volatile: false,
        }
    }

    #[test]
    fn what_no_mount_could_mean_is_refused_by_name() {
        let e = |o: Overlay| o.validate().unwrap_err().to_string();
        assert!(e(overlay(&[], None, None)).contains("no lower layer"));
        assert!(e(overlay(&["/a"], Some("/u"), None)).contains("upper and work go together"));
        assert!(e(overlay(&["/a", "b"], None, None)).contains("b is not an absolute path"));
        overlay(&["/a", "/b"], Some("/u"), Some("/w")).validate().unwrap();
    }

    #[test]
    fn the_annotation_round_trips_and_leaves_out_what_is_unset() {
        let o = overlay(&["/l1", "/l,2"], None, None);
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(json, r#"{"lower":["/l1","/l,2"]}"#);
        assert_eq!(serde_json::from_str::<Overlay>(&json).unwrap(), o);
    }

    #[test]
    fn paths_mount_2_cannot_carry_go_through_the_new_api() {
        assert!(overlay(&["/l:1", "/l2"], None, None).options().is_none());
        let long: Vec<String> = (0..100).map(|i| format!("/var/lib/berth/snapshots/{i:064}/fs")).collect();
        let refs: Vec<&str> = long.iter().map(String::as_str).collect();
        assert!(overlay(&refs, None, None).options().is_none());
        let mut o = overlay(&["/a", "/b"], Some("/u"), Some("/w"));
        o.volatile = true;
        assert_eq!(o.options().unwrap(), "lowerdir=/a:/b,upperdir=/u,workdir=/w,volatile");
        assert_eq!(o.short_lowerdir().unwrap(), "/a:/b");
        assert!(overlay(&refs[..4], None, None).short_lowerdir().is_none(), "over fsconfig's 256 bytes");
    }
}
