//! `docker cp` and `docker export`: `GET`/`HEAD`/`PUT
//! /containers/{id}/archive?path=` and `GET /containers/{id}/export`.
//!
//! The container's side is hostile ground, so nothing here resolves a
//! path in it: the engine's copy (`berth cp`'s, by file descriptor, every
//! lookup inside the container's root) moves the files between the
//! container and a scratch directory of the request, and the tar stream is
//! made from, or unpacked into, that scratch directory. A tar's entries
//! are checked before anything is written: none may climb out (`..`, an
//! absolute path, a hard link to outside the archive).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

use base64::Engine as _;
use berth_engine::copy::{CopyError, PathStat};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::json;

use super::bodyio::{BodyReader, BodyWriter, scratch};
use super::containers::find;
use super::errors::ApiError;
use super::{ApiResult, Call, Resp, blocking, empty};

/// dockerd's status for each way a copy fails.
fn copy_error(e: CopyError) -> ApiError {
    use berth_fs::copy::Error as W;
    match e {
        CopyError::NotFound { .. } => ApiError::not_found(e.to_string()),
        CopyError::Store(s) => berth_engine::Error::from(s).into(),
        CopyError::Engine(e) => e.into(),
        CopyError::DirectoryToFile(_) | CopyError::NoDirectory(_) | CopyError::Copy(W::Overwrite { .. }) => {
            ApiError::bad(e.to_string())
        }
        e => ApiError::internal(e.to_string()),
    }
}

/// Go's `os.FileMode` of a `st_mode`: permission bits plus Go's type and
/// set-id bits, as the docker CLI reads the stat header.
pub fn go_file_mode(mode: u32) -> u32 {
    let mut out = mode & 0o777;
    out |= match mode & nix::libc::S_IFMT {
        nix::libc::S_IFDIR => 1 << 31,
        nix::libc::S_IFLNK => 1 << 27,
        nix::libc::S_IFBLK => 1 << 26,
        nix::libc::S_IFCHR => (1 << 26) | (1 << 21),
        nix::libc::S_IFIFO => 1 << 25,
        nix::libc::S_IFSOCK => 1 << 24,
        _ => 0,
    };
    for (bit, go) in [(nix::libc::S_ISUID, 1 << 23), (nix::libc::S_ISGID, 1 << 22), (nix::libc::S_ISVTX, 1 << 20)] {
        if mode & bit != 0 {
            out |= go;
        }
    }
    out
}

/// The `X-Docker-Container-Path-Stat` header: base64 of docker's
/// `ContainerPathStat` JSON.
pub fn stat_header(s: &PathStat) -> String {
    let mtime = chrono::DateTime::from_timestamp(s.mtime.0, s.mtime.1 as u32).unwrap_or_default();
    let v = json!({
        "name": s.name,
        "size": s.size,
        "mode": go_file_mode(s.mode),
        "mtime": mtime.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        "linkTarget": s.link_target.clone().unwrap_or_default(),
    });
    base64::engine::general_purpose::STANDARD.encode(v.to_string())
}

fn path_param(c: &Call) -> Result<String, ApiError> {
    c.query.get("path").map(str::to_owned).ok_or_else(|| ApiError::bad("path is required"))
}

/// The container's ID (404 for another namespace's) and the stat of `path`.
async fn stat(c: &Call, key: &str, path: &str) -> Result<(String, PathStat), ApiError> {
    let engine = c.api.engine.clone();
    let (key, path) = (key.to_owned(), path.to_owned());
    blocking(move || {
        let id = find(&engine, &key)?.id;
        let st = engine.stat_in_container(&id, &path).map_err(copy_error)?;
        Ok((id, st))
    })
    .await
}

fn with_stat(mut r: Resp, st: &PathStat) -> Resp {
    if let Ok(v) = HeaderValue::from_str(&stat_header(st)) {
        r.headers_mut().insert("x-docker-container-path-stat", v);
    }
    r
}

/// `HEAD .../archive`: the stat header only.
pub async fn head(c: Call, key: &str) -> ApiResult {
    let path = path_param(&c)?;
    let (_, st) = stat(&c, key, &path).await?;
    Ok(with_stat(empty(StatusCode::OK), &st))
}

/// `GET .../archive`: a tar of the path, named as its last component (or
/// `.` for `DIR/.`), with the stat header.
pub async fn get(c: Call, key: &str) -> ApiResult {
    let path = path_param(&c)?;
    let (id, st) = stat(&c, key, &path).await?;
    let engine = c.api.engine.clone();
    let staged = blocking(move || {
        let dir = scratch(&engine.root)?;
        let contents = st.name == "." || st.name == "/";
        let dst = if contents { dir.path().join("x") } else { dir.path().to_owned() };
        engine.copy_from_container(&id, &path, &dst, true).map_err(copy_error)?;
        Ok((dir, st))
    })
    .await?;
    let (dir, st) = staged;
    let name = st.name.clone();
    let r = tar_response(move |b| {
        if name == "." || name == "/" {
            append(b, ".", &dir.path().join("x"))
        } else {
            append(b, &name, &dir.path().join(&name))
        }
    });
    Ok(with_stat(r, &st))
}

/// `GET .../export`: the container's root filesystem as a tar.
pub async fn export(c: Call, key: &str) -> ApiResult {
    let engine = c.api.engine.clone();
    let key = key.to_owned();
    let dir = blocking(move || {
        let id = find(&engine, &key)?.id;
        let dir = scratch(&engine.root)?;
        engine.export_rootfs(&id, &dir.path().join("x")).map_err(copy_error)?;
        Ok(dir)
    })
    .await?;
    Ok(tar_response(move |b| {
        let root = dir.path().join("x");
        let mut names: Vec<_> =
            std::fs::read_dir(&root)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
        names.sort();
        for n in names {
            append(b, &n.to_string_lossy(), &root.join(&n))?;
        }
        Ok(())
    }))
}

type Builder = tar::Builder<BodyWriter>;

/// One entry (a directory with all it holds) as `name`.
fn append<W: std::io::Write>(b: &mut tar::Builder<W>, name: &str, path: &Path) -> std::io::Result<()> {
    append_tree(b, Path::new(name), path, &mut HashMap::new())
}

/// `path` as `name`, as docker's tar streams are: permission bits only in
/// the mode (no file type bits), symlinks as symlinks, hard links within
/// the tree as links to the first name, devices and FIFOs as nodes;
/// sockets left out. The tree is the request's own scratch copy, so
/// reading it by path is safe.
fn append_tree<W: std::io::Write>(
    b: &mut tar::Builder<W>,
    name: &Path,
    path: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path)?;
    let kind = meta.file_type();
    if kind.is_socket() {
        return Ok(());
    }
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
    h.set_mode(meta.mode() & 0o7777);
    if !kind.is_file() {
        h.set_size(0);
    }
    if kind.is_dir() {
        b.append_data(&mut h, name, std::io::empty())?;
        let mut children: Vec<_> =
            std::fs::read_dir(path)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
        children.sort();
        for c in children {
            append_tree(b, &name.join(&c), &path.join(&c), links)?;
        }
        Ok(())
    } else if kind.is_symlink() {
        b.append_link(&mut h, name, std::fs::read_link(path)?)
    } else if kind.is_file() {
        if meta.nlink() > 1 {
            if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                return b.append_link(&mut h, name, first);
            }
            links.insert((meta.dev(), meta.ino()), name.to_owned());
        }
        b.append_data(&mut h, name, std::fs::File::open(path)?)
    } else {
        b.append_data(&mut h, name, std::io::empty())
    }
}

/// A 200 whose body is the tar `fill` writes, made on a blocking thread;
/// a failure midway ends the stream short (the client sees a cut tar, as
/// from dockerd).
fn tar_response(fill: impl FnOnce(&mut Builder) -> std::io::Result<()> + Send + 'static) -> Resp {
    let (w, rx) = BodyWriter::new();
    tokio::task::spawn_blocking(move || {
        let mut b = tar::Builder::new(w);
        let done = fill(&mut b).and_then(|()| b.finish());
        if let Err(e) = done {
            tracing::debug!(error = %e, "docker API: tar stream ended early");
        }
    });
    let mut r = Response::new(super::streamed(rx));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    r
}

/// `PUT .../archive?path=DIR`: the tar in the body extracted into the
/// container's directory DIR (which must exist). Entries keep their
/// owners, or with `copyUIDGID` belong to root; a directory is never
/// replaced by a non-directory nor the other way round.
pub async fn put(c: Call, key: &str) -> ApiResult {
    let path = path_param(&c)?;
    let (id, st) = stat(&c, key, &path).await?;
    // A symlink is resolved (inside the container) by the copy itself.
    if !matches!(st.mode & nix::libc::S_IFMT, nix::libc::S_IFDIR | nix::libc::S_IFLNK) {
        return Err(ApiError::bad("extraction point is not a directory"));
    }
    let keep_owners = !c.query.flag("copyUIDGID");
    let engine = c.api.engine.clone();
    let body = BodyReader::new(c.req.into_body());
    blocking(move || {
        let dir = scratch(&engine.root)?;
        let staged = dir.path().join("x");
        std::fs::create_dir(&staged).map_err(|e| ApiError::internal(format!("create {}: {e}", staged.display())))?;
        unpack(body, &staged)?;
        let src = staged.join(".");
        engine.copy_into_container(&id, &src, &path, keep_owners).map_err(copy_error)?;
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::OK))
}

/// An error with its causes (the tar crate puts the OS error in one).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out += &format!(": {c}");
        cause = c.source();
    }
    out
}

/// A path inside the archive: relative, no `..`.
fn contained(p: &Path) -> bool {
    p.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Unpacks a tar (plain or gzip) into `dir`, refusing the whole archive
/// at the first entry that would land outside it.
fn unpack(body: impl Read, dir: &Path) -> Result<(), ApiError> {
    let mut input = std::io::BufReader::new(body);
    let gzip = std::io::BufRead::fill_buf(&mut input).map(|b| b.starts_with(&[0x1f, 0x8b])).unwrap_or(false);
    let input: Box<dyn Read> = if gzip { Box::new(flate2::read::MultiGzDecoder::new(input)) } else { Box::new(input) };
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(false);
    let bad = |e: std::io::Error| ApiError::bad(format!("read the archive: {e}"));
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let name = entry.path().map_err(bad)?.into_owned();
        if !contained(&name) {
            return Err(ApiError::bad(format!(
                "archive entry {:?} points outside the extraction point",
                name.display().to_string()
            )));
        }
        if entry.header().entry_type().is_hard_link() {
            let target = entry.link_name().map_err(bad)?.unwrap_or_default().into_owned();
            if !contained(&target) || target.as_os_str() == OsStr::new("") {
                return Err(ApiError::bad(format!(
                    "archive entry {:?}: hard link to {:?} outside the archive",
                    name.display().to_string(),
                    target.display().to_string()
                )));
            }
        }
        // unpack_in also refuses a path that goes through a symlink the
        // archive made earlier.
        let inside =
            entry.unpack_in(dir).map_err(|e| ApiError::bad(format!("extract {}: {}", name.display(), chain(&e))))?;
        if !inside {
            return Err(ApiError::bad(format!(
                "archive entry {:?} points outside the extraction point",
                name.display().to_string()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_file_modes_are_gos_bits() {
        assert_eq!(go_file_mode(nix::libc::S_IFDIR | 0o755), (1 << 31) | 0o755);
        assert_eq!(go_file_mode(nix::libc::S_IFREG | 0o644), 0o644);
        assert_eq!(go_file_mode(nix::libc::S_IFLNK | 0o777), (1 << 27) | 0o777);
        assert_eq!(go_file_mode(nix::libc::S_IFREG | nix::libc::S_ISUID | 0o755), (1 << 23) | 0o755);
        assert_eq!(go_file_mode(nix::libc::S_IFDIR | nix::libc::S_ISVTX | 0o777), (1 << 31) | (1 << 20) | 0o777);
    }

    #[test]
    fn the_stat_header_is_base64_json_with_dockers_names() {
        let st = PathStat {
            name: "f".into(),
            size: 3,
            mode: nix::libc::S_IFLNK | 0o777,
            mtime: (0, 0),
            link_target: Some("/etc/x".into()),
        };
        let raw = base64::engine::general_purpose::STANDARD.decode(stat_header(&st)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(v["name"], "f");
        assert_eq!(v["size"], 3);
        assert_eq!(v["mode"], (1u32 << 27) | 0o777);
        assert_eq!(v["mtime"], "1970-01-01T00:00:00Z");
        assert_eq!(v["linkTarget"], "/etc/x");
    }

    #[test]
    fn trees_tar_with_permission_bits_links_and_hard_links() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("t");
        std::fs::create_dir_all(t.join("d")).unwrap();
        std::fs::write(t.join("d/run"), "x").unwrap();
        std::fs::set_permissions(t.join("d/run"), std::fs::Permissions::from_mode(0o4750)).unwrap();
        std::fs::hard_link(t.join("d/run"), t.join("again")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", t.join("abs")).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        append(&mut b, "t", &t).unwrap();
        let bytes = b.into_inner().unwrap();
        let mut a = tar::Archive::new(&bytes[..]);
        let got: Vec<(String, tar::EntryType, u32, String)> = a
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let link = e.link_name().unwrap().map(|l| l.display().to_string()).unwrap_or_default();
                (e.path().unwrap().display().to_string(), e.header().entry_type(), e.header().mode().unwrap(), link)
            })
            .collect();
        let names: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
        assert_eq!(names, ["t", "t/abs", "t/again", "t/d", "t/d/run"]);
        assert_eq!((got[1].1, got[1].3.as_str()), (tar::EntryType::Symlink, "/etc/passwd"));
        // The first name of the file is its data, the second a link to it.
        assert_eq!((got[2].1, got[2].2), (tar::EntryType::Regular, 0o4750));
        assert_eq!((got[4].1, got[4].3.as_str()), (tar::EntryType::Link, "t/again"));
        assert!(got.iter().all(|g| g.2 <= 0o7777), "{got:?}");
    }

    fn tar_of(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(if kind.is_file() { 2 } else { 0 });
            // set_path refuses `..`: write the raw name, as a hostile
            // client would.
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            if !link.is_empty() {
                h.set_link_name(link).unwrap();
            }
            h.set_cksum();
            let data: &[u8] = if kind.is_file() { b"hi" } else { b"" };
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn hostile_entries_are_refused_and_nothing_lands_outside() {
        let dir = tempfile::tempdir().unwrap();
        let into = dir.path().join("a/b");
        std::fs::create_dir_all(&into).unwrap();
        for entries in [
            vec![("../../x", tar::EntryType::Regular, "")],
            vec![("/x", tar::EntryType::Regular, "")],
            vec![("ok", tar::EntryType::Link, "../../x")],
            vec![("l", tar::EntryType::Symlink, "../.."), ("l/x", tar::EntryType::Regular, "")],
        ] {
            let e = unpack(&tar_of(&entries)[..], &into).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{entries:?}: {e}");
            assert!(e.message.contains("outside"), "{e}");
            assert!(!dir.path().join("x").exists() && !dir.path().join("a/x").exists(), "{entries:?}");
        }
        unpack(&tar_of(&[("d/", tar::EntryType::Directory, ""), ("d/f", tar::EntryType::Regular, "")])[..], &into)
            .unwrap();
        assert_eq!(std::fs::read(into.join("d/f")).unwrap(), b"hi");
    }
}
