//! Request and response bodies as blocking `Read`/`Write`, for engine work
//! that streams (a tar made or read on tokio's blocking pool): a writer
//! whose bytes become a streamed response body, and a reader of a request
//! body that arrives chunk by chunk. A scratch directory per request for
//! what must be staged on disk, removed with it (and at start-up, after a
//! kill).

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc;

use super::errors::ApiError;

/// Chunks up to this size go to the response at once.
const CHUNK: usize = 64 << 10;

/// Writes into a streamed response body ([`super::streamed`]); a client
/// that went away is a broken pipe, which ends the work writing.
pub struct BodyWriter {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl BodyWriter {
    /// The writer and the receiver the response streams from.
    pub fn new() -> (BodyWriter, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(16);
        (BodyWriter { tx, buf: Vec::with_capacity(CHUNK) }, rx)
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(chunk).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for BodyWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl Drop for BodyWriter {
    fn drop(&mut self) {
        let _ = self.send();
    }
}

/// Reads a request body on a blocking thread: a task forwards its chunks.
pub struct BodyReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl BodyReader {
    /// Starts forwarding `body` (call from the runtime).
    pub fn new(mut body: Incoming) -> BodyReader {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(frame) = body.frame().await {
                let data = match frame {
                    Ok(f) => match f.into_data() {
                        Ok(d) => Ok(d),
                        Err(_) => continue, // trailers
                    },
                    Err(e) => Err(io::Error::other(format!("read the request body: {e}"))),
                };
                let failed = data.is_err();
                if tx.send(data).await.is_err() || failed {
                    return;
                }
            }
        });
        BodyReader { rx, current: Bytes::new() }
    }
}

impl Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

/// Where requests stage files: `ROOT/docker-scratch`.
pub fn scratch_root(engine_root: &Path) -> PathBuf {
    engine_root.join("docker-scratch")
}

/// Removes what requests of a berthd that was killed left staged.
pub fn clear_scratch(engine_root: &Path) {
    let dir = scratch_root(engine_root);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "clear the Docker API's scratch directory"),
    }
}

/// A scratch directory of one request, removed when dropped.
pub fn scratch(engine_root: &Path) -> Result<tempfile::TempDir, ApiError> {
    let root = scratch_root(engine_root);
    std::fs::create_dir_all(&root)
        .and_then(|()| tempfile::Builder::new().prefix("req-").tempdir_in(&root))
        .map_err(|e| ApiError::internal(format!("create a scratch directory in {}: {e}", root.display())))
}
