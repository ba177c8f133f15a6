//! A test's temporary directory: everything a client writes goes under it,
//! and dropping it leaves nothing behind.

use std::path::{Path, PathBuf};

use crate::proc;

pub struct Scratch {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Scratch {
    pub fn new(what: &str) -> Scratch {
        let dir = tempfile::Builder::new().prefix(&format!("berth-iop-{what}-")).tempdir().expect("temp dir");
        let path = dir.path().to_path_buf();
        Scratch { dir: Some(dir), path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path/name`, created as a directory.
    pub fn dir(&self, name: &str) -> PathBuf {
        let p = self.path.join(name);
        std::fs::create_dir_all(&p).expect("create dir");
        p
    }

    /// Mount points at or under the scratch dir, deepest first.
    pub fn mounts(&self) -> Vec<PathBuf> {
        mounts_under(&self.path)
    }

    /// Kills what is left running from this dir, detaches its mounts and
    /// deletes it. Returns what it had to clean (empty when the clients
    /// cleaned up after themselves).
    pub fn clean(&mut self) -> Vec<String> {
        let mut left = Vec::new();
        let marker = self.path.display().to_string();
        for pid in proc::kill_mentioning(&marker) {
            left.push(format!("process {pid}"));
        }
        for m in self.mounts() {
            left.push(format!("mount {}", m.display()));
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
        if let Some(d) = self.dir.take()
            && let Err(e) = d.close()
        {
            // Retry once: a daemon may still have been writing when we listed.
            let _ = std::fs::remove_dir_all(&self.path);
            if self.path.exists() {
                left.push(format!("could not remove {}: {e}", self.path.display()));
            }
        }
        left
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let left = self.clean();
        if !left.is_empty() {
            eprintln!("berth-interop: cleaned up after the test: {left:?}");
        }
    }
}

/// Mount points at or under `dir` in this mount namespace, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> =
        info.lines().filter_map(|l| l.split(' ').nth(4)).map(unescape).filter(|p| p.starts_with(dir)).collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape("/tmp/a\\040b"), PathBuf::from("/tmp/a b"));
        assert_eq!(unescape("/plain"), PathBuf::from("/plain"));
    }
}
