//! `berth build`: Dockerfiles to OCI images.
//!
//! The frontend (pure code, no I/O): [`ast`] (the parsed Dockerfile, values
//! left unexpanded), [`parse`] (docker's parser and its variable
//! expansion), [`ignore`] (`.dockerignore`).
//!
//! The executor: [`exec`] (stages, RUN through the OCI runtime, COPY/ADD,
//! layers, the image), [`context`] (the build context, confined), [`cache`]
//! (the step cache, kept in the image store).

pub mod api;
pub mod ast;
pub mod cache;
pub mod context;
pub mod error;
pub mod exec;
pub mod ignore;
pub mod parse;

pub use ast::*;
pub use ignore::{Ignore, IgnoreError};
pub use parse::{ParseError, parse};
