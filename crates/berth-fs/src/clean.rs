//! Untrusted names (a tar entry's path) cleaned lexically before any
//! lookup.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// A path inside a root, as its normal components (never empty strings,
/// `.` or `..`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CleanPath(pub Vec<Vec<u8>>);

impl CleanPath {
    /// Cleans a raw path. `..` at the root stays at the root, as
    /// RESOLVE_IN_ROOT would have it; a leading `/` is dropped.
    pub fn new(raw: &[u8]) -> CleanPath {
        let mut out: Vec<Vec<u8>> = Vec::new();
        for c in raw.split(|&b| b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    out.pop();
                }
                c => out.push(c.to_vec()),
            }
        }
        CleanPath(out)
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The parent's components and the last one.
    pub fn split_last(&self) -> Option<(&[Vec<u8>], &[u8])> {
        let (last, parent) = self.0.split_last()?;
        Some((parent, last.as_slice()))
    }

    /// `parts` as a relative path; `.` for none.
    pub fn path_of(parts: &[Vec<u8>]) -> PathBuf {
        let mut p = PathBuf::from(".");
        for c in parts {
            p.push(OsStr::from_bytes(c));
        }
        p
    }

    pub fn display(&self) -> String {
        let joined: Vec<&[u8]> = self.0.iter().map(Vec::as_slice).collect();
        if joined.is_empty() { ".".to_owned() } else { String::from_utf8_lossy(&joined.join(&b'/')).into_owned() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_never_climbs_out() {
        let c = |s: &str| CleanPath::new(s.as_bytes()).display();
        assert_eq!(c("../../etc/passwd"), "etc/passwd");
        assert_eq!(c("/etc/passwd"), "etc/passwd");
        assert_eq!(c("a/../../b"), "b");
        assert_eq!(c("./a/./b/"), "a/b");
        assert_eq!(c(".."), ".");
        assert!(CleanPath::new(b"./").is_root());
        assert_eq!(CleanPath::path_of(&CleanPath::new(b"a/b").0), PathBuf::from("./a/b"));
    }
}
