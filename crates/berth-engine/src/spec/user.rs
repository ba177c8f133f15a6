//! `--user` / the image's `User` to ids, read from the container's own
//! /etc/passwd and /etc/group, as docker does. The files are the image's:
//! they are opened inside the rootfs with pathrs, so a symlinked
//! /etc/passwd cannot make the engine read a host file.

use std::io::Read;
use std::path::Path;

use pathrs::Root;
use pathrs::flags::OpenFlags;

use super::SpecError;

/// The process identity for config.json.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// From passwd, for HOME (docker sets it when the image has none).
    pub home: Option<String>,
}

/// The largest user or group id a container may have, as runc allows:
/// ids are signed 32-bit in the kernel's interfaces, and -1 (4294967295)
/// means "leave unchanged" to setuid and friends, which would leave the
/// process root.
pub const MAX_ID: u32 = i32::MAX as u32;

/// Refuses numeric ids in `user` ("uid", "uid:gid", "name:gid") outside
/// 0 to [`MAX_ID`], before anything is looked up.
pub fn check_ids(user: &str) -> Result<(), SpecError> {
    let (u, g) = user.split_once(':').map_or((user, ""), |(u, g)| (u, g));
    for (what, id) in [("uid", u), ("gid", g)] {
        let numeric = !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit());
        if numeric && id.parse::<u32>().map_or(true, |n| n > MAX_ID) {
            return Err(SpecError::IdRange { user: user.into(), what, id: id.into() });
        }
    }
    Ok(())
}

/// `user` as docker takes it: "", "name", "uid", "name:group", "uid:gid".
/// Ids outside 0 to [`MAX_ID`], given or found in the image's files, are
/// refused.
pub fn resolve(rootfs: &Path, user: &str) -> Result<Identity, SpecError> {
    check_ids(user)?;
    let ident = lookup(rootfs, user)?;
    let out_of_range = |what: &'static str, id: u32| {
        (id > MAX_ID).then(|| SpecError::IdRange { user: user.into(), what, id: id.to_string() })
    };
    let ids = [("uid", ident.uid), ("gid", ident.gid)].into_iter();
    let extra = ident.additional_gids.iter().map(|g| ("supplementary gid", *g));
    match ids.chain(extra).find_map(|(what, id)| out_of_range(what, id)) {
        Some(e) => Err(e),
        None => Ok(ident),
    }
}

/// [`resolve`]'s lookup in the image's /etc/passwd and /etc/group.
fn lookup(rootfs: &Path, user: &str) -> Result<Identity, SpecError> {
    let (u, g) = user.split_once(':').map_or((user, None), |(u, g)| (u, Some(g)));
    let u = if u.is_empty() { "0" } else { u };
    let passwd = read_in_root(rootfs, "/etc/passwd")?;
    let group = read_in_root(rootfs, "/etc/group")?;
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 7 && (f[0] == u || (u.parse::<u32>().is_ok() && f[2] == u)));
    let bad = |why: String| SpecError::User { user: user.into(), why };
    let (uid, mut gid, name, home) = match (&entry, u.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse().map_err(|_| bad(format!("bad uid in /etc/passwd: {}", f[2])))?,
            f[3].parse().map_err(|_| bad(format!("bad gid in /etc/passwd: {}", f[3])))?,
            Some(f[0].to_owned()),
            Some(f[5].to_owned()).filter(|h| !h.is_empty()),
        ),
        (None, Ok(uid)) => (uid, 0, None, None),
        (None, Err(_)) => return Err(bad("no such user in the container's /etc/passwd".into())),
    };
    let groups: Vec<Vec<&str>> =
        group.lines().map(|l| l.split(':').collect::<Vec<_>>()).filter(|f| f.len() >= 4).collect();
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| bad(format!("no group {g:?} in the container's /etc/group")))?,
        };
    }
    // Supplementary groups: those listing the user by name (docker adds
    // them only when no group was given explicitly).
    let mut additional_gids: Vec<u32> = match (&name, g) {
        (Some(n), None) => groups
            .iter()
            .filter(|f| f[3].split(',').any(|m| m == n))
            .filter_map(|f| f[2].parse().ok())
            .filter(|id| *id != gid)
            .collect(),
        _ => Vec::new(),
    };
    additional_gids.dedup();
    Ok(Identity { uid, gid, additional_gids, home })
}

/// A file's text, resolved inside `rootfs`; missing is empty (images
/// without /etc/passwd still run as numeric ids).
fn read_in_root(rootfs: &Path, path: &str) -> Result<String, SpecError> {
    let io = |e: pathrs::error::Error| SpecError::Rootfs { path: path.into(), why: e.to_string() };
    let root = Root::open(rootfs).map_err(io)?;
    let handle = match root.resolve(path) {
        Ok(h) => h,
        Err(e) if matches!(e.kind(), pathrs::error::ErrorKind::OsError(Some(libc::ENOENT))) => return Ok(String::new()),
        Err(e) => return Err(io(e)),
    };
    let mut file = handle.reopen(OpenFlags::O_RDONLY).map_err(io)?;
    let mut text = String::new();
    // Bounded: a hostile image's multi-gigabyte passwd is not read whole.
    file.by_ref()
        .take(4 << 20)
        .read_to_string(&mut text)
        .map_err(|e| SpecError::Rootfs { path: path.into(), why: e.to_string() })?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/false\nbob:x:1000:1000::/home/bob:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\nwww:x:33:\nbob:x:1000:\nwheel:x:10:bob,alice\naudio:x:29:bob\n",
        )
        .unwrap();
        d
    }

    #[test]
    fn names_and_numbers_resolve_like_docker() {
        let r = rootfs();
        assert_eq!(
            resolve(r.path(), "").unwrap(),
            Identity { uid: 0, gid: 0, additional_gids: vec![], home: Some("/root".into()) }
        );
        let bob = resolve(r.path(), "bob").unwrap();
        assert_eq!((bob.uid, bob.gid, bob.additional_gids.as_slice()), (1000, 1000, &[10, 29][..]));
        assert_eq!(resolve(r.path(), "www:wheel").unwrap().gid, 10);
        assert_eq!(resolve(r.path(), "33").unwrap().gid, 33, "a uid in passwd takes its group");
        let anon = resolve(r.path(), "4242:77").unwrap();
        assert_eq!((anon.uid, anon.gid, anon.home), (4242, 77, None));
        assert!(resolve(r.path(), "nobody").unwrap_err().to_string().contains("no such user"));
        assert!(resolve(r.path(), "bob:nogroup").is_err());
    }

    #[test]
    fn ids_outside_runcs_range_are_refused_and_named() {
        let r = rootfs();
        for (user, id) in [("4294967295", "4294967295"), ("0:4294967295", "4294967295"), ("2147483648", "2147483648")] {
            let e = resolve(r.path(), user).unwrap_err().to_string();
            assert!(e.contains(&format!(" {id} is out of range")), "{user}: {e}");
            assert!(check_ids(user).is_err(), "{user}");
        }
        assert!(check_ids("99999999999999999999").unwrap_err().to_string().contains("uid 99999999999999999999"));
        let max = resolve(r.path(), "2147483647:2147483647").unwrap();
        assert_eq!((max.uid, max.gid), (MAX_ID, MAX_ID));
        // Found in the image's own files: refused as well.
        std::fs::write(r.path().join("etc/passwd"), "evil:x:4294967295:0::/:/bin/sh\n").unwrap();
        let e = resolve(r.path(), "evil").unwrap_err().to_string();
        assert!(e.contains("uid 4294967295 is out of range"), "{e}");
        check_ids("evil").unwrap();
    }

    #[test]
    fn a_symlinked_passwd_is_read_inside_the_rootfs() {
        let r = rootfs();
        std::fs::remove_file(r.path().join("etc/passwd")).unwrap();
        // Absolute: resolves to the rootfs's own /etc/shadow-like file,
        // never the host's /etc/passwd.
        std::fs::write(r.path().join("etc/real"), "evil:x:7:7::/:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("/../../../../etc/real", r.path().join("etc/passwd")).unwrap();
        assert_eq!(resolve(r.path(), "evil").unwrap().uid, 7);
        assert!(resolve(r.path(), "root").is_err(), "the host's root entry was read");
    }
}
