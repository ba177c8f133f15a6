//! The commands, by noun (as docker/cli and nerdctl lay them out): each
//! module holds its flags and turns the engine's typed results into
//! docker's output. `main.rs` only parses and dispatches here.

pub mod build;
pub mod container;
pub mod events;
pub mod image;
pub mod network;
pub mod system;
pub mod volume;
