//! `berth build`: Dockerfiles to OCI images.
//!
//! The frontend (pure code, no I/O): [`ast`] (the parsed Dockerfile, values
//! left unexpanded), [`parse`] (docker's parser and its variable
//! expansion), [`ignore`] (`.dockerignore`).

pub mod ast;
pub mod ignore;
pub mod parse;

pub use ast::*;
pub use ignore::{Ignore, IgnoreError};
pub use parse::{ParseError, parse};
