//! config.json mount options, split the way the kernel wants them: flags
//! for mount(2), propagation changes (a separate mount(2) each), recursive
//! attributes for mount_setattr(2), berth extensions, and the rest as the
//! filesystem's data string. The tables are runc's, so a bundle means the
//! same thing under both.

use nix::mount::MsFlags;

// mount_setattr(2) attribute bits (linux/mount.h); not in libc for all targets.
pub const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
pub const MOUNT_ATTR_NOSUID: u64 = 0x0000_0002;
pub const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x0000_0008;
pub const MOUNT_ATTR_RELATIME: u64 = 0x0000_0000;
pub const MOUNT_ATTR_NOATIME: u64 = 0x0000_0010;
pub const MOUNT_ATTR_STRICTATIME: u64 = 0x0000_0020;
pub const MOUNT_ATTR_ATIME_MASK: u64 = 0x0000_0070;
pub const MOUNT_ATTR_NODIRATIME: u64 = 0x0000_0080;
pub const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;

/// One mount's options, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOpts {
    pub flags: MsFlags,
    /// Propagation changes, applied in order after the mount.
    pub propagation: Vec<MsFlags>,
    /// mount_setattr(AT_RECURSIVE) bits to set and to clear.
    pub rec_set: u64,
    pub rec_clear: u64,
    /// Copy what the destination held into a new tmpfs (podman's tmpcopyup).
    pub tmpcopyup: bool,
    /// runc's "idmap" / "ridmap": idmap the top mount only, or the tree.
    pub idmap: bool,
    pub ridmap: bool,
    /// Filesystem-specific options, comma-joined for mount(2)'s data.
    pub data: Vec<String>,
}

impl Default for MountOpts {
    fn default() -> Self {
        MountOpts {
            flags: MsFlags::empty(),
            propagation: Vec::new(),
            rec_set: 0,
            rec_clear: 0,
            tmpcopyup: false,
            idmap: false,
            ridmap: false,
            data: Vec::new(),
        }
    }
}

impl MountOpts {
    pub fn parse<S: AsRef<str>>(options: &[S]) -> MountOpts {
        let mut o = MountOpts::default();
        for opt in options.iter().map(AsRef::as_ref) {
            if let Some((clear, flag)) = flag_option(opt) {
                if clear {
                    o.flags.remove(flag);
                } else {
                    o.flags.insert(flag);
                }
            } else if let Some(p) = propagation_option(opt) {
                o.propagation.push(p);
            } else if let Some((clear, attr)) = recursive_option(opt) {
                if clear {
                    o.rec_clear |= attr;
                    o.rec_set &= !attr;
                } else {
                    o.rec_set |= attr;
                    o.rec_clear &= !attr;
                }
                // The atime attributes are one field: setting one clears the others.
                if attr & MOUNT_ATTR_ATIME_MASK != 0 || opt == "rrelatime" {
                    o.rec_clear |= MOUNT_ATTR_ATIME_MASK;
                }
            } else if opt == "tmpcopyup" {
                o.tmpcopyup = true;
            } else if opt == "idmap" {
                o.idmap = true;
            } else if opt == "ridmap" {
                o.ridmap = true;
            } else {
                o.data.push(opt.to_string());
            }
        }
        o
    }

    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }

    pub fn is_recursive_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND | MsFlags::MS_REC)
    }

    /// The flags a bind mount needs in its second, remounting step: a bind
    /// ignores everything but MS_BIND|MS_REC on the first call.
    pub fn remount_flags(&self) -> MsFlags {
        self.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT)
    }

    pub fn data(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }
}

/// (clears?, flag) for the options mount(2) takes as flags.
fn flag_option(opt: &str) -> Option<(bool, MsFlags)> {
    Some(match opt {
        "async" => (true, MsFlags::MS_SYNCHRONOUS),
        "atime" => (true, MsFlags::MS_NOATIME),
        "bind" => (false, MsFlags::MS_BIND),
        "defaults" => (false, MsFlags::empty()),
        "dev" => (true, MsFlags::MS_NODEV),
        "diratime" => (true, MsFlags::MS_NODIRATIME),
        "dirsync" => (false, MsFlags::MS_DIRSYNC),
        "exec" => (true, MsFlags::MS_NOEXEC),
        "iversion" => (false, MsFlags::MS_I_VERSION),
        "lazytime" => (false, MsFlags::MS_LAZYTIME),
        "loud" => (true, MsFlags::MS_SILENT),
        "mand" => (false, MsFlags::MS_MANDLOCK),
        "noatime" => (false, MsFlags::MS_NOATIME),
        "nodev" => (false, MsFlags::MS_NODEV),
        "nodiratime" => (false, MsFlags::MS_NODIRATIME),
        "noexec" => (false, MsFlags::MS_NOEXEC),
        "noiversion" => (true, MsFlags::MS_I_VERSION),
        "nolazytime" => (true, MsFlags::MS_LAZYTIME),
        "nomand" => (true, MsFlags::MS_MANDLOCK),
        "norelatime" => (true, MsFlags::MS_RELATIME),
        "nostrictatime" => (true, MsFlags::MS_STRICTATIME),
        "nosuid" => (false, MsFlags::MS_NOSUID),
        "nosymfollow" => (false, MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW)),
        "rbind" => (false, MsFlags::MS_BIND | MsFlags::MS_REC),
        "relatime" => (false, MsFlags::MS_RELATIME),
        "remount" => (false, MsFlags::MS_REMOUNT),
        "ro" => (false, MsFlags::MS_RDONLY),
        "rw" => (true, MsFlags::MS_RDONLY),
        "silent" => (false, MsFlags::MS_SILENT),
        "strictatime" => (false, MsFlags::MS_STRICTATIME),
        "suid" => (true, MsFlags::MS_NOSUID),
        "symfollow" => (true, MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW)),
        "sync" => (false, MsFlags::MS_SYNCHRONOUS),
        _ => return None,
    })
}

fn propagation_option(opt: &str) -> Option<MsFlags> {
    Some(match opt {
        "private" => MsFlags::MS_PRIVATE,
        "shared" => MsFlags::MS_SHARED,
        "slave" => MsFlags::MS_SLAVE,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// (clears?, attribute) for the recursive options, which need mount_setattr.
fn recursive_option(opt: &str) -> Option<(bool, u64)> {
    Some(match opt {
        "rro" => (false, MOUNT_ATTR_RDONLY),
        "rrw" => (true, MOUNT_ATTR_RDONLY),
        "rnosuid" => (false, MOUNT_ATTR_NOSUID),
        "rsuid" => (true, MOUNT_ATTR_NOSUID),
        "rnodev" => (false, MOUNT_ATTR_NODEV),
        "rdev" => (true, MOUNT_ATTR_NODEV),
        "rnoexec" => (false, MOUNT_ATTR_NOEXEC),
        "rexec" => (true, MOUNT_ATTR_NOEXEC),
        "rnodiratime" => (false, MOUNT_ATTR_NODIRATIME),
        "rdiratime" => (true, MOUNT_ATTR_NODIRATIME),
        "rrelatime" => (false, MOUNT_ATTR_RELATIME),
        "rnorelatime" => (true, MOUNT_ATTR_RELATIME),
        "rnoatime" => (false, MOUNT_ATTR_NOATIME),
        "ratime" => (true, MOUNT_ATTR_NOATIME),
        "rstrictatime" => (false, MOUNT_ATTR_STRICTATIME),
        "rnostrictatime" => (true, MOUNT_ATTR_STRICTATIME),
        "rnosymfollow" => (false, MOUNT_ATTR_NOSYMFOLLOW),
        "rsymfollow" => (true, MOUNT_ATTR_NOSYMFOLLOW),
        _ => return None,
    })
}

/// Every option name berth understands, for `features`.
pub fn known_options() -> Vec<&'static str> {
    let mut all = vec![
        "async",
        "atime",
        "bind",
        "defaults",
        "dev",
        "diratime",
        "dirsync",
        "exec",
        "iversion",
        "lazytime",
        "loud",
        "mand",
        "noatime",
        "nodev",
        "nodiratime",
        "noexec",
        "noiversion",
        "nolazytime",
        "nomand",
        "norelatime",
        "nostrictatime",
        "nosuid",
        "nosymfollow",
        "rbind",
        "relatime",
        "remount",
        "ro",
        "rw",
        "silent",
        "strictatime",
        "suid",
        "symfollow",
        "sync",
        "private",
        "shared",
        "slave",
        "unbindable",
        "rprivate",
        "rshared",
        "rslave",
        "runbindable",
        "rro",
        "rrw",
        "rnosuid",
        "rsuid",
        "rnodev",
        "rdev",
        "rnoexec",
        "rexec",
        "rnodiratime",
        "rdiratime",
        "rrelatime",
        "rnorelatime",
        "rnoatime",
        "ratime",
        "rstrictatime",
        "rnostrictatime",
        "rnosymfollow",
        "rsymfollow",
        "tmpcopyup",
        "idmap",
        "ridmap",
    ];
    all.sort_unstable();
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_data_and_propagation_are_split() {
        let o = MountOpts::parse(&["nosuid", "noexec", "mode=755", "size=65536k", "rslave", "ro"]);
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY);
        assert_eq!(o.data().as_deref(), Some("mode=755,size=65536k"));
        assert_eq!(o.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
    }

    #[test]
    fn later_options_override_earlier_ones() {
        let o = MountOpts::parse(&["ro", "rw", "nodev", "dev"]);
        assert!(o.flags.is_empty());
    }

    #[test]
    fn rbind_is_a_recursive_bind_and_remount_drops_bind_bits() {
        let o = MountOpts::parse(&["rbind", "ro", "nosuid"]);
        assert!(o.is_bind() && o.is_recursive_bind());
        assert_eq!(o.remount_flags(), MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
    }

    #[test]
    fn recursive_attributes_go_to_mount_setattr() {
        let o = MountOpts::parse(&["rbind", "rro", "rnosuid", "rnoatime"]);
        assert_eq!(o.rec_set, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOATIME);
        assert_eq!(o.rec_clear & MOUNT_ATTR_ATIME_MASK, MOUNT_ATTR_ATIME_MASK);
        assert!(o.data.is_empty());
    }

    #[test]
    fn tmpcopyup_is_an_extension_not_data() {
        let o = MountOpts::parse(&["tmpcopyup", "mode=1777"]);
        assert!(o.tmpcopyup);
        assert_eq!(o.data, vec!["mode=1777".to_string()]);
    }
}
