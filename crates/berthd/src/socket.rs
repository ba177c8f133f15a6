//! The listening socket and the daemon's lock.
//!
//! A socket file left by a berthd that was killed is removed at start, but
//! only when nothing answers on it: a live daemon's socket is never taken
//! over, and a path that is not a socket is never deleted. The lock
//! (`RUNROOT/berthd/berthd.lock`, held for the daemon's life) keeps two
//! berthds off one state directory; it is released by the kernel when the
//! process dies, however it dies.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("{path}: {context}: {source}")]
    Io {
        path: PathBuf,
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: another process is listening on it (another berthd?)")]
    InUse(PathBuf),
    #[error("{0}: exists and is not a socket; not removing it")]
    NotASocket(PathBuf),
    #[error("another berthd already runs with this state directory ({0} is locked)")]
    Locked(PathBuf),
}

fn io(path: &Path, context: &'static str) -> impl FnOnce(std::io::Error) -> SocketError {
    let path = path.to_path_buf();
    move |source| SocketError::Io { path, context, source }
}

/// An exclusive, non-blocking flock on `path` (created if needed), held
/// while the returned guard lives.
pub fn lock(path: &Path) -> Result<Flock<File>, SocketError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir, "create directory"))?;
    }
    let f = File::options().create(true).truncate(false).write(true).open(path).map_err(io(path, "open"))?;
    Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| match e {
        Errno::EWOULDBLOCK => SocketError::Locked(path.to_path_buf()),
        e => io(path, "flock")(e.into()),
    })
}

/// The socket's file; [`SocketFile::remove`] deletes it if it is still the
/// one bound here.
pub struct SocketFile {
    path: PathBuf,
    ino: u64,
}

/// Binds `path` (mode 0660), removing a stale socket file first.
pub fn bind(path: &Path) -> Result<(tokio::net::UnixListener, SocketFile), SocketError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir, "create directory"))?;
    }
    remove_stale(path)?;
    let listener = tokio::net::UnixListener::bind(path).map_err(|e| {
        if e.kind() == ErrorKind::AddrInUse { SocketError::InUse(path.into()) } else { io(path, "bind")(e) }
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io(path, "chmod"))?;
    let ino = std::fs::symlink_metadata(path).map_err(io(path, "stat"))?.ino();
    Ok((listener, SocketFile { path: path.to_path_buf(), ino }))
}

fn remove_stale(path: &Path) -> Result<(), SocketError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(path, "stat")(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(SocketError::NotASocket(path.into()));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(SocketError::InUse(path.into())),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            tracing::info!(socket = %path.display(), "removing the stale socket of a previous berthd");
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != ErrorKind::NotFound => Err(io(path, "remove stale socket")(e)),
                _ => Ok(()),
            }
        }
        Err(e) => Err(io(path, "connect to check whether it is in use")(e)),
    }
}

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the socket file, unless another process replaced it.
    pub fn remove(&self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.ino() == self.ino => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(socket = %self.path.display(), error = %e, "cannot remove the socket");
                }
            }
            _ => tracing::warn!(socket = %self.path.display(), "the socket was replaced; leaving it"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stale_socket_is_replaced_a_live_one_or_a_file_is_not() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.sock");
        // Stale: bound, then its listener closed.
        drop(std::os::unix::net::UnixListener::bind(&p).unwrap());
        let (_listener, file) = bind(&p).unwrap();
        assert!(matches!(bind(&p), Err(SocketError::InUse(_))));
        file.remove();
        assert!(!p.exists());
        std::fs::write(&p, "data").unwrap();
        assert!(matches!(bind(&p), Err(SocketError::NotASocket(_))));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "data");
    }

    #[test]
    fn the_lock_is_exclusive() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x/berthd.lock");
        let held = lock(&p).unwrap();
        // flock locks belong to the open file description: a second open
        // (as a second berthd would do) is refused.
        assert!(matches!(lock(&p), Err(SocketError::Locked(_))));
        drop(held);
        lock(&p).unwrap();
    }
}
