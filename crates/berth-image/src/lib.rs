//! berth-image: everything between an image reference and a rootfs.
//!
//! - [`reference`]: docker-normalized image references;
//! - [`media`], [`platform`]: manifests, indexes, media types, platform choice;
//! - [`store`]: the content store (blobs by digest) and the metadata
//!   database (images, tags, references) in redb;
//! - [`registry`]: a client for the OCI distribution spec (pull, push, auth);
//! - [`decompress`]: the one gzip/zstd/plain sniffer for every reader of
//!   layers and archives (pull, load, import);
//! - [`unpack`]: layers into snapshots, safely (untrusted input);
//! - [`snapshot`]: overlay mounts of snapshot chains.
//!
//! What an image config means for a container (docker's entrypoint, cmd,
//! env and user rules) is berth-engine's `spec`, the one place for them.

pub mod archive;
pub mod decompress;
pub mod digest;
pub mod error;
pub mod gc;
pub mod images;
pub mod media;
pub mod platform;
pub mod progress;
pub mod pull;
pub mod push;
pub mod reference;
pub mod registry;
pub mod snapshot;
pub mod store;
pub mod unpack;

pub use digest::Digest;
pub use error::{Error, Result};
pub use platform::Platform;
pub use reference::Reference;
