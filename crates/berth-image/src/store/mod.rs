//! Stores: [`content`] (blobs by digest) and [`meta`] (the redb database),
//! kept separate with small interfaces, as containerd does.

pub mod content;
pub mod meta;
