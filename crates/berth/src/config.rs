//! /etc/berth/config.toml: every key has a default, so no file is needed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use berth_engine::images::{ImageSettings, Images, RegistryConfig};
use berth_engine::logconfig::{DEFAULT_MAX_FILE, DEFAULT_MAX_SIZE, LogConfig};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Config {
    pub registry: RegistryConfig,
    pub images: ImageSettings,
    pub containers: ContainersConfig,
    pub logs: LogsConfig,
}

impl Config {
    /// The file at `path`; the defaults if there is none.
    pub fn load(path: &Path) -> Result<Config> {
        match std::fs::read_to_string(path) {
            Ok(s) => toml::from_str(&s).with_context(|| format!("parse {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
        }
    }

    /// The engine's image operations under this configuration.
    pub fn images(&self, engine: &berth_engine::engine::Engine) -> Images {
        engine.images(self.registry.clone(), self.images.clone())
    }
}

/// `[logs]`: what containers log when `run` names no `--log-driver` /
/// `--log-opt` (each `--log-opt` overrides its key). By default capped
/// as docker's local driver is: 20 MB x 5 files.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogsConfig {
    /// json-file, local or none.
    pub driver: String,
    /// docker's max-size syntax (`20m`, `1g`); "" for no cap.
    pub max_size: String,
    pub max_file: u32,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig { driver: "json-file".into(), max_size: DEFAULT_MAX_SIZE.into(), max_file: DEFAULT_MAX_FILE }
    }
}

impl LogsConfig {
    pub fn defaults(&self) -> LogConfig {
        LogConfig::defaults(&self.driver, &self.max_size, self.max_file)
    }
}

/// `[containers]`: what `run` uses beyond its flags.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ContainersConfig {
    /// `--init`'s binary: a static init such as tini-static (docker's
    /// docker-init). Unset: the first of [`INIT_CANDIDATES`] present.
    pub init_path: Option<PathBuf>,
}

/// Where Debian's tini and docker.io put a static init.
pub const INIT_CANDIDATES: &[&str] =
    &["/usr/bin/tini-static", "/usr/libexec/docker/docker-init", "/usr/sbin/docker-init", "/usr/bin/docker-init"];
