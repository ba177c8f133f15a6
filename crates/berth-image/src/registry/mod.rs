//! The registry client (OCI distribution spec): [`client`] speaks to one
//! registry, [`auth`] finds credentials and answers challenges, [`config`]
//! says how to reach each registry.

pub mod auth;
pub mod client;
pub mod config;

pub use auth::{AuthStore, Credentials};
pub use client::{Access, Registry};
pub use config::RegistryConfig;
