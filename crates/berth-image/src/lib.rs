//! berth's image layer: what lies between an image reference and a
//! container's root filesystem. So far: references as docker normalizes
//! them ([`reference`]), digests ([`digest`]), the content-addressed blob
//! store ([`store::content`]) and untrusted layer unpacking ([`unpack`]).

pub mod digest;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod snapshot;
pub mod store;
pub mod unpack;
