//! dockerd
