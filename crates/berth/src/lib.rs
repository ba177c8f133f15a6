//! The part of the `berth` CLI that other crates link: [`format`], the
//! `--format` Go templates and docker's human formats (sizes, ages,
//! tables). It is here, not in the binary, so the fuzz targets in `fuzz/`
//! drive the very code `berth ps --format` runs. Everything else is the
//! binary's (`src/main.rs`).

pub mod format;
