//! Reading and writing cgroup control files. Everything goes through here,
//! so errors name the file and the value, and unit tests can point the
//! same code at a fake cgroupfs (a temp directory with the files in it).

use std::collections::BTreeMap;
use std::io::{ErrorKind, Write};
use std::path::Path;

use crate::error::{Error, Result, io_err};

/// Writes `value` to `dir/file` in one write(2), as cgroupfs wants.
/// Never creates the file: a missing control file means a missing
/// controller or kernel feature, and should say so.
pub fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let path = dir.join(file);
    let result = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .and_then(|mut f| f.write_all(value.as_bytes()));
    result.map_err(|source| Error::Write { path, value: value.to_string(), source })
}

pub fn read(dir: &Path, file: &str) -> Result<String> {
    let path = dir.join(file);
    std::fs::read_to_string(&path).map_err(io_err("read", path))
}

/// Reads a file if it exists.
pub fn read_opt(dir: &Path, file: &str) -> Result<Option<String>> {
    match std::fs::read_to_string(dir.join(file)) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", dir.join(file))(e)),
    }
}

pub fn exists(dir: &Path, file: &str) -> bool {
    dir.join(file).exists()
}

/// A single number; "max" reads as u64::MAX.
pub fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    if s == "max" { Some(u64::MAX) } else { s.parse().ok() }
}

/// A single-number file, 0 if it is missing or unreadable (stats are best
/// effort: a controller without that file simply has nothing to report).
pub fn read_u64(dir: &Path, file: &str) -> u64 {
    read_opt(dir, file).ok().flatten().and_then(|s| parse_u64(&s)).unwrap_or(0)
}

/// A flat-keyed file ("key value" per line), as memory.stat and cpu.stat.
pub fn read_keyed(dir: &Path, file: &str) -> BTreeMap<String, u64> {
    let text = read_opt(dir, file).ok().flatten().unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), parse_u64(it.next()?)?))
        })
        .collect()
}

/// A cpuset list ("0-3,7") as numbers.
pub fn parse_list(s: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(n) = part.parse() {
                    out.push(n);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_never_creates_a_control_file() {
        let tmp = tempfile::tempdir().unwrap();
        let err = write(tmp.path(), "memory.max", "100").unwrap_err();
        assert!(err.to_string().contains("memory.max"), "{err}");
        assert!(err.to_string().contains("\"100\""), "{err}");
        std::fs::write(tmp.path().join("memory.max"), "max\n").unwrap();
        write(tmp.path(), "memory.max", "100").unwrap();
        assert_eq!(read(tmp.path(), "memory.max").unwrap(), "100");
    }

    #[test]
    fn parsers() {
        assert_eq!(parse_u64("max\n"), Some(u64::MAX));
        assert_eq!(parse_list("0-2,5\n"), vec![0, 1, 2, 5]);
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("cpu.stat"), "usage_usec 10\nnr_periods 2\n").unwrap();
        let m = read_keyed(tmp.path(), "cpu.stat");
        assert_eq!(m["usage_usec"], 10);
        assert_eq!(read_u64(tmp.path(), "missing"), 0);
    }
}
