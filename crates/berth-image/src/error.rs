//! The crate's one error type: every failure names what it was working on
//! (the reference, digest, path or URL), so a user never needs a tracer to
//! know what failed.

use std::path::PathBuf;

use crate::digest::Digest;

/// Errors of `berth-image`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
    InvalidDigest(String),

    #[error("invalid platform {0:?}: expected os/arch[/variant]")]
    InvalidPlatform(String),

    #[error("content {expected}: digest mismatch, got {actual}; not stored")]
    DigestMismatch { expected: Digest, actual: Digest },

    #[error("content {digest}: size mismatch, expected {expected} bytes, got {actual}; not stored")]
    SizeMismatch { digest: Digest, expected: u64, actual: u64 },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{context}: {source}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("{method} {url}: {status}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Registry { method: String, url: String, status: u16, message: String },

    #[error("{context}: {source}")]
    Http {
        context: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("authentication with {registry} failed: {reason}")]
    Auth { registry: String, reason: String },

    #[error("metadata database {path}: {reason}")]
    Db { path: PathBuf, reason: String },

    #[error("{0}: not found")]
    NotFound(String),

    #[error("{0}")]
    Unsupported(String),

    #[error("{reference}: no manifest for platform {wanted} (available: {available})")]
    NoPlatform { reference: String, wanted: String, available: String },

    #[error("layer {layer}: entry {entry:?}: {reason}")]
    Layer { layer: String, entry: String, reason: String },

    #[error("layer {layer}: uncompressed size exceeds the limit of {limit} bytes")]
    TooLarge { layer: String, limit: u64 },

    #[error("{0}")]
    Conflict(String),

    #[error("mount {target}: {reason}")]
    Mount { target: PathBuf, reason: String },

    #[error("archive: {0}")]
    Archive(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds context to an io::Error: `.ctx(|| format!("open {}", p.display()))`.
pub trait IoContext<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|source| Error::Io { context: f(), source })
    }
}

impl<T> IoContext<T> for rustix::io::Result<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::Io { context: f(), source: e.into() })
    }
}

pub(crate) fn json_err(context: impl Into<String>) -> impl FnOnce(serde_json::Error) -> Error {
    let context = context.into();
    move |source| Error::Json { context, source }
}
