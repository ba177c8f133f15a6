//! Progress reporting, so the CLI can draw bars on a terminal and print
//! plain lines elsewhere while the library stays silent.

/// Events of a pull or push, per item (a layer's short digest).
pub trait Progress: Send + Sync {
    /// An item starts; `total` bytes are expected (0 if unknown).
    fn start(&self, _id: &str, _total: u64) {}
    /// `n` more bytes done; `n == 0` with a reset means start over.
    fn advance(&self, _id: &str, _n: u64) {}
    /// A status change ("Downloading", "Extracting", "Already exists", …).
    fn status(&self, _id: &str, _status: &str) {}
    /// The item is finished with a final status.
    fn finish(&self, _id: &str, _status: &str) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}
