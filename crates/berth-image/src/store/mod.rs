//! Stores on disk: blobs by digest ([`content`]).

pub mod content;
pub mod meta;
