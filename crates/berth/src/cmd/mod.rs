//! The commands, by noun (as docker/cli and nerdctl lay them out): each
//! module holds its flags and turns the engine's typed results into
//! docker's output.

pub mod image;
