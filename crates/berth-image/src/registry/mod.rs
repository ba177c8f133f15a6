//! The registry client (OCI distribution spec): [`client`] speaks to one
//! registry, [`auth`] finds credentials and answers challenges, [`config`]
//! says how to reach each registry, [`hosts`] reads containerd's per-registry
//! `hosts.toml` (mirrors, TLS).

pub mod auth;
pub mod challenge;
pub mod client;
pub mod config;
pub mod credentials;
pub mod hosts;

pub use auth::{AuthStore, Credentials};
pub use client::{Access, Registry};
pub use config::RegistryConfig;
pub use credentials::CredentialHelper;
pub use hosts::{Endpoint, HostConfig};
