//! A container's log driver and options, as docker's `--log-driver` and
//! `--log-opt` give them (docker's HostConfig.LogConfig: `Type` and
//! `Config`), resolved against the defaults of berth's config file.
//!
//! | driver      | what berth-shim writes                                          |
//! |-------------|-----------------------------------------------------------------|
//! | `json-file` | docker's json-file log, rotated by `max-size` into `max-file`s  |
//! | `local`     | the same files, with docker's local-driver cap (20m x 5) unless set |
//! | `cri`       | the kubelet's CRI log format at the file `path` names (required, absolute); never rotated by berth: the kubelet rotates it and asks for a new file ([`crate::engine::Engine::reopen_log`]) |
//! | `none`      | no log to read (`logs` refuses, as docker's); a small rotating buffer in the run dir so an attached CLI still shows the output |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LogConfigError {
    #[error("logger: no log driver named '{0}' is registered")]
    NoDriver(String),
    #[error("unknown log opt '{key}' for {driver} log driver")]
    UnknownOpt { key: String, driver: String },
    #[error("log opt '{key}' of the {driver} log driver is not supported by berth")]
    Unsupported { key: String, driver: String },
    #[error("invalid logging opts for driver none")]
    OptsForNone,
    #[error("invalid size: '{0}'")]
    Size(String),
    #[error("max-size must be a positive number")]
    SizeNotPositive,
    #[error("max-file: not a number: {0:?}")]
    MaxFile(String),
    #[error("max-file cannot be less than 1")]
    MaxFileTooSmall,
    #[error("compress: not a boolean: {0:?}")]
    Compress(String),
    #[error("compress=true: berth does not compress rotated logs")]
    CompressUnsupported,
    #[error("log opt 'path' of the cri log driver: {0}")]
    CriPath(String),
    #[error("the [logs] defaults of the config: {0}")]
    Defaults(Box<LogConfigError>),
}

/// docker's local driver caps its files at 20 MB x 5 by default; berth's
/// default for every driver (config `[logs]`) is the same.
pub const DEFAULT_MAX_SIZE: &str = "20m";
pub const DEFAULT_MAX_FILE: u32 = 5;

/// What the user gave (or the config's `[logs]` section), as docker
/// records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogConfig {
    #[serde(rename = "Type")]
    pub driver: String,
    #[serde(rename = "Config", default)]
    pub opts: BTreeMap<String, String>,
}

/// What the shim does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate when the live file would pass this many bytes (None: never).
    pub max_size: Option<u64>,
    /// How many files at most, the live one included.
    pub max_file: u32,
}

impl LogConfig {
    /// The config file's defaults: a driver and its options.
    pub fn defaults(driver: &str, max_size: &str, max_file: u32) -> LogConfig {
        let mut opts = BTreeMap::new();
        if driver != "none" {
            if !max_size.is_empty() {
                opts.insert("max-size".into(), max_size.into());
            }
            opts.insert("max-file".into(), max_file.to_string());
        }
        LogConfig { driver: driver.into(), opts }
    }

    /// `--log-driver` and `--log-opt`s over the config's `defaults`: the
    /// defaults' options apply, key by key, when the driver is the
    /// default one (as dockerd merges its `log-opts`). `--log-opt` takes
    /// docker's `KEY=VALUE`, and several comma-separated as well.
    pub fn resolve(driver: Option<&str>, opts: &[String], defaults: &LogConfig) -> Result<LogConfig, LogConfigError> {
        defaults.rotation().map_err(|e| LogConfigError::Defaults(Box::new(e)))?;
        let driver = driver.filter(|d| !d.is_empty()).unwrap_or(&defaults.driver).to_owned();
        let mut given = BTreeMap::new();
        for opt in opts.iter().flat_map(|o| split_opts(o)) {
            let (k, v) = opt.split_once('=').unwrap_or((opt, ""));
            given.insert(k.to_owned(), v.to_owned());
        }
        if driver == "none" && !given.is_empty() {
            return Err(LogConfigError::OptsForNone);
        }
        let mut merged = if driver == defaults.driver { defaults.opts.clone() } else { BTreeMap::new() };
        merged.extend(given);
        let cfg = LogConfig { driver, opts: merged };
        cfg.rotation()?;
        Ok(cfg)
    }

    /// The container's, from its record; a record from before log options
    /// were recorded: json-file, never rotated (as it was made).
    pub fn of_record(config: &crate::store::ContainerConfig) -> LogConfig {
        config.log.clone().unwrap_or_else(|| LogConfig { driver: "json-file".into(), opts: BTreeMap::new() })
    }

    /// The kubelet's CRI format at `path` (the pod's log directory joined
    /// with the container's log path), as berthd's CreateContainer asks.
    pub fn cri(path: &std::path::Path) -> Result<LogConfig, LogConfigError> {
        let cfg = LogConfig {
            driver: "cri".into(),
            opts: BTreeMap::from([("path".to_owned(), path.to_string_lossy().into_owned())]),
        };
        cfg.rotation()?;
        Ok(cfg)
    }

    /// Driver `cri`: the file the shim writes (kept in the record, so a
    /// shim started again writes to the same file).
    pub fn cri_path(&self) -> Option<std::path::PathBuf> {
        (self.driver == "cri").then(|| self.opts.get("path").map(Into::into)).flatten()
    }

    /// The shim's format for this driver.
    pub fn shim_format(&self) -> berth_shim::config::LogFormat {
        if self.driver == "cri" { berth_shim::config::LogFormat::Cri } else { berth_shim::config::LogFormat::JsonFile }
    }

    /// Whether `logs` can read what the driver keeps.
    pub fn readable(&self) -> bool {
        self.driver != "none"
    }

    /// The options checked and turned into sizes, with docker's messages.
    pub fn rotation(&self) -> Result<Rotation, LogConfigError> {
        let known: &[&str] = match self.driver.as_str() {
            "json-file" => &["max-size", "max-file", "compress", "labels", "labels-regex", "env", "env-regex", "tag"],
            "local" => &["max-size", "max-file", "compress"],
            "cri" => &["path"],
            "none" => &[],
            other => return Err(LogConfigError::NoDriver(other.to_owned())),
        };
        for key in self.opts.keys() {
            if !known.contains(&key.as_str()) {
                return Err(LogConfigError::UnknownOpt { key: key.clone(), driver: self.driver.clone() });
            }
            if !["max-size", "max-file", "compress", "path"].contains(&key.as_str()) {
                return Err(LogConfigError::Unsupported { key: key.clone(), driver: self.driver.clone() });
            }
        }
        if self.driver == "cri" {
            check_cri_path(self.opts.get("path").map(String::as_str))?;
            return Ok(Rotation { max_size: None, max_file: 1 });
        }
        let local = self.driver == "local";
        let max_size = match self.opts.get("max-size") {
            Some(s) => Some(parse_size(s)?),
            None if local => Some(parse_size(DEFAULT_MAX_SIZE)?),
            None => None,
        };
        let max_file = match self.opts.get("max-file") {
            Some(n) => n.trim().parse::<i64>().map_err(|_| LogConfigError::MaxFile(n.clone()))?,
            None if local => i64::from(DEFAULT_MAX_FILE),
            None => 1,
        };
        if max_file < 1 {
            return Err(LogConfigError::MaxFileTooSmall);
        }
        if let Some(c) = self.opts.get("compress") {
            match c.as_str() {
                "true" | "1" | "t" | "T" | "TRUE" | "True" => return Err(LogConfigError::CompressUnsupported),
                "false" | "0" | "f" | "F" | "FALSE" | "False" => {}
                _ => return Err(LogConfigError::Compress(c.clone())),
            }
        }
        Ok(Rotation { max_size, max_file: u32::try_from(max_file).unwrap_or(u32::MAX) })
    }
}

/// The cri driver's file: given, absolute, a file name at its end.
fn check_cri_path(path: Option<&str>) -> Result<(), LogConfigError> {
    let bad = |why: &str| Err(LogConfigError::CriPath(why.to_owned()));
    let Some(p) = path else { return bad("required (the file the kubelet reads)") };
    let path = std::path::Path::new(p);
    if !path.is_absolute() {
        return bad(&format!("{p:?} is not an absolute path"));
    }
    if p.contains('\0') {
        return bad(&format!("{p:?} holds a NUL byte"));
    }
    if path.components().any(|c| c == std::path::Component::ParentDir) || p.ends_with('/') {
        return bad(&format!("{p:?}: want a file's path without '..'"));
    }
    Ok(())
}

/// `max-size=1m,max-file=3` as two options, but `labels=a,b` as one:
/// split at commas only when every piece is a `KEY=VALUE`.
fn split_opts(opt: &str) -> Vec<&str> {
    let pieces: Vec<&str> = opt.split(',').collect();
    if pieces.len() > 1 && pieces.iter().all(|p| p.contains('=')) { pieces } else { vec![opt] }
}

/// docker's json-file `max-size`: go-units' FromHumanSize, decimal units
/// (`10m` is 10,000,000 bytes; `k`, `m`, `g`, `t`, `p`, an optional `i`
/// and `b`, any case, one optional space), fractions allowed.
pub fn parse_size(s: &str) -> Result<u64, LogConfigError> {
    let bad = || LogConfigError::Size(s.to_owned());
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(end);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return Err(bad());
    }
    let n: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        "p" => 1e15,
        _ => return Err(bad()),
    };
    let bytes = n * mult;
    if bytes < 1.0 {
        return Err(LogConfigError::SizeNotPositive);
    }
    if bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> LogConfig {
        LogConfig::defaults("json-file", DEFAULT_MAX_SIZE, DEFAULT_MAX_FILE)
    }

    fn resolve(driver: Option<&str>, opts: &[&str]) -> Result<LogConfig, LogConfigError> {
        let opts: Vec<String> = opts.iter().map(|s| s.to_string()).collect();
        LogConfig::resolve(driver, &opts, &defaults())
    }

    #[test]
    fn sizes_parse_as_dockers_max_size() {
        assert_eq!(parse_size("10m"), Ok(10_000_000));
        assert_eq!(parse_size("1g"), Ok(1_000_000_000));
        assert_eq!(parse_size("1.5k"), Ok(1500));
        assert_eq!(parse_size("20MB"), Ok(20_000_000));
        assert_eq!(parse_size("3 kib"), Ok(3000));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("0"), Err(LogConfigError::SizeNotPositive));
        for bad in ["", "m", "10x", "-1m", "1..5m", "10  m"] {
            assert_eq!(parse_size(bad), Err(LogConfigError::Size(bad.into())), "{bad:?}");
        }
        assert_eq!(LogConfigError::Size("10x".into()).to_string(), "invalid size: '10x'");
    }

    #[test]
    fn the_defaults_cap_the_log_and_options_override_them_key_by_key() {
        let r = resolve(None, &[]).unwrap();
        assert_eq!(r.rotation().unwrap(), Rotation { max_size: Some(20_000_000), max_file: 5 });
        let r = resolve(None, &["max-size=1m,max-file=3"]).unwrap();
        assert_eq!(r.rotation().unwrap(), Rotation { max_size: Some(1_000_000), max_file: 3 });
        let r = resolve(Some("json-file"), &["max-file=2"]).unwrap();
        assert_eq!(r.rotation().unwrap(), Rotation { max_size: Some(20_000_000), max_file: 2 });
        // Another driver than the default one takes none of its options.
        let r = resolve(Some("local"), &["max-size=2k"]).unwrap();
        assert_eq!(r.rotation().unwrap(), Rotation { max_size: Some(2000), max_file: 5 });
        let uncapped = LogConfig::resolve(None, &[], &LogConfig::defaults("json-file", "", 1)).unwrap();
        assert_eq!(uncapped.rotation().unwrap(), Rotation { max_size: None, max_file: 1 });
        assert!(!resolve(Some("none"), &[]).unwrap().readable());
    }

    #[test]
    fn bad_drivers_and_options_get_dockers_messages() {
        let err = |d, o: &[&str]| resolve(d, o).unwrap_err().to_string();
        assert_eq!(err(Some("syslogz"), &[]), "logger: no log driver named 'syslogz' is registered");
        assert_eq!(err(None, &["max-sise=1m"]), "unknown log opt 'max-sise' for json-file log driver");
        assert_eq!(err(None, &["max-size=big"]), "invalid size: 'big'");
        assert_eq!(err(None, &["max-file=0"]), "max-file cannot be less than 1");
        assert_eq!(err(None, &["max-file=x"]), "max-file: not a number: \"x\"");
        assert_eq!(err(Some("none"), &["max-size=1m"]), "invalid logging opts for driver none");
        assert!(err(None, &["tag=x"]).contains("not supported by berth"));
        assert!(err(None, &["compress=true"]).contains("does not compress"));
        resolve(None, &["compress=false"]).unwrap();
        let bad_defaults = LogConfig::defaults("json-file", "lots", 5);
        let e = LogConfig::resolve(None, &[], &bad_defaults).unwrap_err().to_string();
        assert_eq!(e, "the [logs] defaults of the config: invalid size: 'lots'");
    }

    #[test]
    fn the_cri_driver_needs_an_absolute_path_and_is_never_rotated() {
        let c = LogConfig::cri(std::path::Path::new("/var/log/pods/ns_p_uid/c/0.log")).unwrap();
        assert_eq!(c.rotation().unwrap(), Rotation { max_size: None, max_file: 1 });
        assert_eq!(c.cri_path().unwrap(), std::path::Path::new("/var/log/pods/ns_p_uid/c/0.log"));
        assert_eq!(c.shim_format(), berth_shim::config::LogFormat::Cri);
        assert!(c.readable());
        let r = resolve(Some("cri"), &["path=/l/c.log"]).unwrap();
        assert_eq!((r.cri_path().unwrap(), r.opts.len()), ("/l/c.log".into(), 1), "no json-file defaults");
        let err = |o: &[&str]| resolve(Some("cri"), o).unwrap_err().to_string();
        assert_eq!(err(&[]), "log opt 'path' of the cri log driver: required (the file the kubelet reads)");
        assert!(err(&["path=rel/c.log"]).contains("not an absolute path"));
        assert!(err(&["path=/l/../c.log"]).contains("without '..'"));
        assert_eq!(err(&["path=/l", "max-size=1m"]), "unknown log opt 'max-size' for cri log driver");
        assert_eq!(resolve(None, &[]).unwrap().cri_path(), None);
    }

    #[test]
    fn records_keep_dockers_shape_and_old_records_are_uncapped() {
        let r = resolve(None, &["max-size=1m"]).unwrap();
        let v = serde_json::json!({ "log": r });
        assert_eq!(v["log"]["Type"], "json-file");
        assert_eq!(v["log"]["Config"]["max-size"], "1m");
        let config: crate::store::ContainerConfig = serde_json::from_value(v).unwrap();
        assert_eq!(LogConfig::of_record(&config), r);
        let old = LogConfig::of_record(&serde_json::from_value(serde_json::json!({})).unwrap());
        assert_eq!(old.rotation().unwrap(), Rotation { max_size: None, max_file: 1 });
    }
}
