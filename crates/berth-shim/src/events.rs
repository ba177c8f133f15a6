//! The writing side of the engine's event log (podman's file events
//! backend): `DIR/events.log`, one JSON object a line, which every berth
//! process (the `berth` CLI, berthd, and each shim for a container's
//! `die`) appends to. It lives here, at the bottom of the chain, because
//! the shim writes it and knows nothing of the engine; the engine reads it
//! (berth_engine::events).
//!
//! A line is appended with O_APPEND in one write(2): a writer SIGKILLed at
//! any instruction has written all of its line or none of it (lines are
//! kept under [`MAX_LINE`], well under what one write of a regular file
//! carries whole). A torn line (a full disk) is skipped by readers, which
//! find the next event by its opening `{"time":`. Past [`MAX_SIZE`] the log
//! is renamed to `events.log.1` (the one before it goes) under a lock, so
//! two writers never rotate twice; a reader that holds the old file drains
//! it, then follows the new one.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// The live log's name in the events directory.
pub const LOG: &str = "events.log";
/// The rotated log's name.
pub const ROTATED: &str = "events.log.1";
/// The log's size at which it is rotated.
pub const MAX_SIZE: u64 = 4 << 20;
/// The longest line written: attributes (labels first) are dropped to
/// keep under it.
pub const MAX_LINE: usize = 3800;
/// In a shim's state directory: the attributes of its container's
/// events when they changed since the shim started (a rename), as a JSON
/// object; the shim's `--event-attr`s otherwise.
pub const ATTRS_FILE: &str = "event-attrs.json";
/// How every event line starts: readers resynchronise on it.
pub const LINE_START: &str = "{\"time\":";

/// One event line: time in ns since the epoch, docker's type and action,
/// the actor's id and attributes.
pub fn line(time_nano: i64, kind: &str, action: &str, id: &str, attributes: &BTreeMap<String, String>) -> String {
    let head =
        format!("{LINE_START}{time_nano},\"type\":{},\"action\":{},\"id\":{}", json(kind), json(action), json(id));
    let attrs = serde_json::to_string(attributes).unwrap_or_else(|_| "{}".into());
    if head.len() + attrs.len() + 20 < MAX_LINE {
        return format!("{head},\"attributes\":{attrs}}}\n");
    }
    // Too long (labels, mostly): keep the attributes docker's filters and
    // the tests key on, drop the rest.
    let kept: BTreeMap<&String, &String> = attributes
        .iter()
        .filter(|(k, v)| {
            matches!(k.as_str(), "name" | "image" | "exitCode" | "signal" | "container" | "type" | "driver")
                && v.len() < 512
        })
        .collect();
    let attrs = serde_json::to_string(&kept).unwrap_or_else(|_| "{}".into());
    format!("{head},\"attributes\":{attrs}}}\n")
}

fn json(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// Now, in ns since the epoch.
pub fn now_nano() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or_default()
}

/// Appends `line` (a whole line, see [`line`]) to the log in `dir`,
/// rotating it first when it is full.
pub fn append(dir: &Path, line: &str) -> std::io::Result<()> {
    let path = dir.join(LOG);
    let mut f = open_log(&path).or_else(|e| {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(e);
        }
        std::fs::create_dir_all(dir)?;
        open_log(&path)
    })?;
    if f.metadata()?.len() >= MAX_SIZE {
        rotate(dir, &f)?;
        f = open_log(&path)?;
    }
    // One write: the line goes in whole or not at all (see the module).
    let n = f.write(line.as_bytes())?;
    if n != line.len() {
        return Err(std::io::Error::other(format!("short write to {}: {n} of {} bytes", path.display(), line.len())));
    }
    Ok(())
}

fn open_log(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().append(true).create(true).mode(0o644).custom_flags(libc::O_CLOEXEC).open(path)
}

/// Renames the full log `full` (still `DIR/events.log`, unless another
/// writer rotated it meanwhile) to `events.log.1`, under `DIR/events.lock`.
fn rotate(dir: &Path, full: &File) -> std::io::Result<()> {
    let lock = OpenOptions::new().write(true).create(true).truncate(false).mode(0o644).open(dir.join("events.lock"))?;
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e)?;
    let path: PathBuf = dir.join(LOG);
    let (mine, now) = (full.metadata()?, std::fs::metadata(&path)?);
    // Another writer rotated it first: the live log is a new file.
    if mine.ino() != now.ino() || mine.dev() != now.dev() {
        return Ok(());
    }
    std::fs::rename(&path, dir.join(ROTATED))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_json_object_that_starts_as_readers_expect() {
        let attrs: BTreeMap<String, String> = [("name".into(), "web \"1\"".into())].into();
        let l = line(5, "container", "start", "abc", &attrs);
        assert!(l.starts_with(LINE_START) && l.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!((v["time"].as_i64(), v["attributes"]["name"].as_str()), (Some(5), Some("web \"1\"")));
    }

    #[test]
    fn long_labels_are_dropped_to_keep_a_line_short() {
        let attrs: BTreeMap<String, String> =
            [("name".into(), "web".into()), ("big".into(), "x".repeat(10_000))].into();
        let l = line(1, "container", "create", "abc", &attrs);
        assert!(l.len() < MAX_LINE);
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["attributes"], serde_json::json!({"name": "web"}));
    }

    #[test]
    fn a_full_log_is_rotated_once() {
        let dir = tempfile::tempdir().unwrap();
        let big = "x".repeat(MAX_SIZE as usize);
        std::fs::write(dir.path().join(LOG), &big).unwrap();
        append(dir.path(), "a\n").unwrap();
        append(dir.path(), "b\n").unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join(LOG)).unwrap(), "a\nb\n");
        assert_eq!(std::fs::metadata(dir.path().join(ROTATED)).unwrap().len(), MAX_SIZE);
    }
}
