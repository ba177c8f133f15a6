//! Reading a container's log as `logs`, `attach` and `run` show it, for
//! every front end (the CLI writes to its stdout and stderr, berthd to an
//! API stream). Two formats, told apart line by line: docker's json-file
//! (one JSON object per line with `log`, `stream` and `time`) and the
//! kubelet's CRI format of the `cri` driver (`TIME STREAM F|P MESSAGE`, a
//! `P` record continued by the next one).

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use chrono::{DateTime, FixedOffset, Utc};

/// A `--since`/`--until` value that is no time docker takes.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TimeError(String);

type Result<T, E = std::io::Error> = std::result::Result<T, E>;

/// docker's `--since`/`--until`: RFC 3339 (with or without a zone), Unix
/// seconds (with fractions), or a duration back from now (`10m`, `1h30m`).
pub fn parse_time(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, TimeError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Ok(t.and_utc());
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(s, f) {
            return Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
        }
    }
    if let Ok(secs) = s.parse::<f64>() {
        let nanos = (secs.fract() * 1e9) as u32;
        return DateTime::from_timestamp(secs.trunc() as i64, nanos)
            .ok_or_else(|| TimeError(format!("{s:?}: timestamp out of range")));
    }
    Ok(now - parse_duration(s)?)
}

/// Go's duration syntax as docker takes it: `1h30m`, `90s`, `250ms`.
fn parse_duration(s: &str) -> Result<chrono::Duration, TimeError> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return Err(TimeError("empty time".into()));
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_end);
        let unit_end = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_end);
        let n: f64 = num.parse().map_err(|_| TimeError(format!("{s:?}: not a time, Unix timestamp or duration")))?;
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => {
                return Err(TimeError(format!(
                    "{s:?}: not a time, Unix timestamp or duration (units: ns us ms s m h)"
                )));
            }
        };
        total += n * scale;
        rest = next;
    }
    Ok(chrono::Duration::milliseconds((total * 1000.0) as i64))
}

/// Copies new json-file log entries to stdout and stderr, from where the
/// last call stopped, across rotations: the shim renames `LOG` to
/// `LOG.1` (and `LOG.1` to `LOG.2` ...) and starts a new `LOG`, so the
/// follower keeps the file it reads open, reads it to its end, and then
/// goes on with the file that came after it.
pub struct LogFollower {
    path: PathBuf,
    /// The file being read (positioned after what was copied), and its
    /// inode. None until there is a log: then its oldest file.
    file: Option<(BufReader<File>, u64)>,
    /// The start of an entry whose end is not written yet.
    pending: Vec<u8>,
    pub timestamps: bool,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Per stream (stdout, stderr): the last CRI record was a `P`, so the
    /// next one goes on with its line (no timestamp in front).
    in_line: [bool; 2],
}

/// One log entry, in either format.
struct Entry<'a> {
    time: std::borrow::Cow<'a, str>,
    stderr: bool,
    text: std::borrow::Cow<'a, [u8]>,
    /// A CRI `P` record: its line goes on in the next one.
    partial: bool,
}

/// `line` (with its newline) as an entry: a json-file object, or a CRI
/// record. None for a line that is neither.
fn parse_entry(line: &[u8]) -> Option<Entry<'_>> {
    if line.starts_with(b"{") {
        let v: serde_json::Value = serde_json::from_slice(line).ok()?;
        let time = v["time"].as_str().unwrap_or_default().to_owned();
        let text = v["log"].as_str().unwrap_or_default().as_bytes().to_vec();
        return Some(Entry { time: time.into(), stderr: v["stream"] == "stderr", text: text.into(), partial: false });
    }
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut f = line.splitn(4, |b| *b == b' ');
    let (time, stream, tag) = (std::str::from_utf8(f.next()?).ok()?, f.next()?, f.next()?);
    let message = f.next().unwrap_or(b"");
    let partial = match tag {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let text = if partial { message.into() } else { [message, b"\n"].concat().into() };
    Some(Entry { time: time.into(), stderr: stream == b"stderr", text, partial })
}

impl LogFollower {
    pub fn new(path: PathBuf) -> LogFollower {
        LogFollower {
            path,
            file: None,
            pending: Vec::new(),
            timestamps: false,
            since: None,
            until: None,
            in_line: [false; 2],
        }
    }

    /// Starts at the log's current end: only what comes next is copied.
    pub fn at_end(path: PathBuf) -> LogFollower {
        let mut f = LogFollower::new(path);
        if let Ok(file) = File::open(&f.path)
            && let Ok(m) = file.metadata()
        {
            let mut r = BufReader::new(file);
            if r.seek(SeekFrom::Start(m.len())).is_ok() {
                f.file = Some((r, m.ino()));
            }
        }
        f
    }

    /// `LOG.N`, ..., `LOG.1`, `LOG`: the kept files, oldest first, with
    /// their inodes.
    fn files(&self) -> Vec<(PathBuf, u64)> {
        let rotated = |i: u32| PathBuf::from(format!("{}.{i}", self.path.display()));
        let mut out: Vec<(PathBuf, u64)> = Vec::new();
        // Rotation renames from the oldest down, so for a moment a name
        // in the middle may be missing: look a little past a gap.
        let mut missing = 0;
        for i in 1.. {
            let p = rotated(i);
            match std::fs::metadata(&p) {
                Ok(m) => {
                    missing = 0;
                    out.push((p, m.ino()));
                }
                Err(_) if missing < 2 => missing += 1,
                Err(_) => break,
            }
        }
        out.reverse();
        if let Ok(m) = std::fs::metadata(&self.path) {
            out.push((self.path.clone(), m.ino()));
        }
        out
    }

    /// Moves to the start of the last `n` entries, in whichever file they
    /// begin.
    pub fn skip_to_last(&mut self, n: usize) -> Result<()> {
        let mut left = n;
        let files = self.files();
        for (path, _) in files.iter().rev() {
            let Ok(f) = File::open(path) else { continue };
            let ino = f.metadata()?.ino();
            let starts = line_starts(&f)?;
            // `starts` ends with the offset after the last line.
            let lines = starts.len() - 1;
            if lines >= left || Some(path) == files.first().map(|(p, _)| p) {
                let mut r = BufReader::new(f);
                r.seek(SeekFrom::Start(starts[lines.saturating_sub(left)]))?;
                self.file = Some((r, ino));
                self.pending.clear();
                return Ok(());
            }
            left -= lines;
        }
        Ok(())
    }

    /// Copies what is new, from the current file and the ones after it.
    pub fn pump(&mut self) -> Result<()> {
        self.pump_to(&mut std::io::stdout().lock(), &mut std::io::stderr().lock())
    }

    /// Copies what is new to `out` (stdout) and `err` (stderr).
    pub fn pump_to(&mut self, out: &mut dyn Write, err: &mut dyn Write) -> Result<()> {
        if self.file.is_none() && !self.open_oldest() {
            return Ok(());
        }
        loop {
            self.copy_to_end(out, err)?;
            if !self.next_file() {
                break;
            }
        }
        out.flush()?;
        err.flush()?;
        Ok(())
    }

    fn open_oldest(&mut self) -> bool {
        let files = self.files();
        let Some((path, _)) = files.first() else { return false };
        match File::open(path).and_then(|f| Ok((f.metadata()?.ino(), f))) {
            Ok((ino, f)) => {
                self.file = Some((BufReader::new(f), ino));
                true
            }
            Err(_) => false,
        }
    }

    /// [`Self::files`] as it was at one moment: a listing is a stat per
    /// name, and a rotation (a rename per file) between two stats shows a
    /// file twice or not at all, or a new live file after an old one; two
    /// listings in a row that agree saw no rename.
    fn files_settled(&self) -> Vec<(PathBuf, u64)> {
        let mut last = self.files();
        for _ in 0..8 {
            let again = self.files();
            if again == last {
                break;
            }
            last = again;
        }
        last
    }

    /// After the current file's end: opens the file that followed it if
    /// it was rotated away (false if it is still the live one).
    fn next_file(&mut self) -> bool {
        let Some((held, ino)) = &self.file else { return false };
        // Still the live file (each look at the end of it asks): one stat,
        // no listing.
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == *ino) {
            return false;
        }
        let files = self.files_settled();
        if files.last().is_some_and(|(_, i)| i == ino) {
            return false;
        }
        let next = match files.iter().position(|(_, i)| i == ino) {
            Some(at) => files.get(at + 1),
            // Still named, so still kept (a listing that raced a rotation
            // anyway): the next pump looks again, rather than start over
            // at the oldest file and repeat what was read.
            None if held.get_ref().metadata().is_ok_and(|m| m.nlink() > 0) => return false,
            // Rotated out of the kept files (the rename onto the oldest name
            // unlinked it) or the log was removed: go on with the oldest
            // one kept, if any.
            None => files.first(),
        };
        let Some((path, want)) = next else { return false };
        match File::open(path).and_then(|f| Ok((f.metadata()?.ino(), f))) {
            // Renamed again since the listing: the next pump looks again.
            Ok((got, _)) if got != *want => false,
            Ok((got, f)) => {
                self.file = Some((BufReader::new(f), got));
                // The rotated file is whole: a partial entry at its end is
                // not continued in the next file.
                self.pending.clear();
                true
            }
            Err(_) => false,
        }
    }

    fn copy_to_end(&mut self, out: &mut dyn Write, err: &mut dyn Write) -> Result<()> {
        let Some((r, _)) = self.file.as_mut() else { return Ok(()) };
        loop {
            // Bytes: a CRI record holds the output as it came, UTF-8 or not.
            let n = r.read_until(b'\n', &mut self.pending)?;
            if n == 0 || !self.pending.ends_with(b"\n") {
                return Ok(());
            }
            let line = std::mem::take(&mut self.pending);
            let Some(e) = parse_entry(&line) else { continue };
            if self.since.is_some() || self.until.is_some() {
                let t = DateTime::<FixedOffset>::parse_from_rfc3339(&e.time).map(|t| t.with_timezone(&Utc)).ok();
                if t.is_some_and(|t| self.since.is_some_and(|s| t < s) || self.until.is_some_and(|u| t > u)) {
                    continue;
                }
            }
            let w: &mut dyn Write = if e.stderr { &mut *err } else { &mut *out };
            let in_line = &mut self.in_line[usize::from(e.stderr)];
            if self.timestamps && !*in_line {
                write!(w, "{} ", e.time)?;
            }
            *in_line = e.partial;
            w.write_all(&e.text)?;
        }
    }
}

/// The offset of each line's start in `f`, and the offset after the last.
fn line_starts(f: &File) -> Result<Vec<u64>> {
    let mut starts = vec![0u64];
    let mut pos = 0u64;
    for line in BufReader::new(f).split(b'\n') {
        pos += line?.len() as u64 + 1;
        starts.push(pos);
    }
    Ok(starts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_dockers() {
        let now = DateTime::parse_from_rfc3339("2026-12-04T12:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_time("10m", now).unwrap().to_rfc3339(), "2026-12-04T11:50:00+00:00");
        assert_eq!(parse_time("1h30m", now).unwrap().to_rfc3339(), "2026-12-04T10:30:00+00:00");
        assert_eq!(parse_time("2026-12-04T11:00:00Z", now).unwrap().to_rfc3339(), "2026-12-04T11:00:00+00:00");
        assert_eq!(parse_time("2026-12-04", now).unwrap().to_rfc3339(), "2026-12-04T00:00:00+00:00");
        assert_eq!(parse_time("1764849600", now).unwrap().to_rfc3339(), "2025-12-04T12:00:00+00:00");
        assert!(parse_time("yesterday", now).is_err());
    }

    fn entry(i: usize) -> String {
        format!("{{\"log\":\"{i}\\n\",\"stream\":\"stdout\",\"time\":\"t\"}}\n")
    }

    fn append(path: &std::path::Path, range: std::ops::Range<usize>) {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        for i in range {
            f.write_all(entry(i).as_bytes()).unwrap();
        }
    }

    /// As the shim rotates: LOG.(n-1) -> LOG.n, ..., LOG -> LOG.1.
    fn rotate(path: &std::path::Path, max_file: u32) {
        let name = |i: u32| if i == 0 { path.to_owned() } else { PathBuf::from(format!("{}.{i}", path.display())) };
        for i in (0..max_file - 1).rev() {
            if name(i).exists() {
                std::fs::rename(name(i), name(i + 1)).unwrap();
            }
        }
    }

    fn pumped(f: &mut LogFollower) -> String {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        f.pump_to(&mut out, &mut err).unwrap();
        String::from_utf8(out).unwrap().replace('\n', " ")
    }

    #[test]
    fn cri_records_are_read_as_lines_and_parts_of_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        std::fs::write(
            &p,
            "2026-12-05T01:00:00.1Z stdout P hel\n\
             2026-12-05T01:00:00.2Z stderr F oops\n\
             2026-12-05T01:00:00.3Z stdout F lo world\n\
             2026-12-05T01:00:00.4Z stdout F \n\
             2026-12-05T01:00:01Z stdout P end\n",
        )
        .unwrap();
        let run = |f: &mut LogFollower| {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            f.pump_to(&mut out, &mut err).unwrap();
            (String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
        };
        assert_eq!(run(&mut LogFollower::new(p.clone())), ("hello world\n\nend".into(), "oops\n".into()));
        let mut f = LogFollower::new(p.clone());
        f.timestamps = true;
        assert_eq!(
            run(&mut f).0,
            "2026-12-05T01:00:00.1Z hello world\n2026-12-05T01:00:00.4Z \n2026-12-05T01:00:01Z end",
            "one timestamp per line, from its first record"
        );
        let mut f = LogFollower::new(p.clone());
        f.since = Some(parse_time("2026-12-05T01:00:00.35Z", Utc::now()).unwrap());
        assert_eq!(run(&mut f).0, "\nend");
        let mut f = LogFollower::new(p);
        f.skip_to_last(1).unwrap();
        assert_eq!(run(&mut f).0, "end");
    }

    #[test]
    fn tail_starts_at_the_last_entries_in_whichever_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.log");
        append(&p, 0..5);
        rotate(&p, 3);
        append(&p, 5..7);
        let tail = |n| {
            let mut f = LogFollower::new(p.clone());
            f.skip_to_last(n).unwrap();
            pumped(&mut f)
        };
        assert_eq!(tail(1), "6 ");
        assert_eq!(tail(2), "5 6 ");
        assert_eq!(tail(4), "3 4 5 6 ", "into the rotated file and on");
        assert_eq!(tail(10), "0 1 2 3 4 5 6 ");
        assert_eq!(pumped(&mut LogFollower::new(p.clone())), "0 1 2 3 4 5 6 ", "all files, oldest first");
    }

    #[test]
    fn following_goes_on_across_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.log");
        let mut f = LogFollower::new(p.clone());
        assert_eq!(pumped(&mut f), "", "no log yet");
        append(&p, 0..2);
        assert_eq!(pumped(&mut f), "0 1 ");
        // Written, then rotated before the follower looked again.
        append(&p, 2..3);
        rotate(&p, 3);
        append(&p, 3..4);
        assert_eq!(pumped(&mut f), "2 3 ");
        // Two rotations between two looks.
        append(&p, 4..5);
        rotate(&p, 3);
        append(&p, 5..6);
        rotate(&p, 3);
        append(&p, 6..7);
        assert_eq!(pumped(&mut f), "4 5 6 ");
        // More rotations than files kept: the open file is read to its
        // end, then the oldest one kept.
        append(&p, 7..8);
        for i in 8..12 {
            rotate(&p, 3);
            append(&p, i..i + 1);
        }
        assert_eq!(pumped(&mut f), "7 9 10 11 ", "8 was rotated out unread");
        let mut end = LogFollower::at_end(p.clone());
        append(&p, 12..13);
        rotate(&p, 3);
        append(&p, 13..14);
        assert_eq!(pumped(&mut end), "12 13 ", "at_end: only what came after");
    }

    /// A listing that misses the file being read while it still has a
    /// name (what a listing taken across a rotation's renames sees) is not
    /// taken for "rotated out": the follower waits for the next look
    /// instead of starting over at the oldest file (which repeated lines).
    #[test]
    fn a_file_missing_from_one_listing_but_still_named_is_not_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.log");
        append(&p, 0..2);
        rotate(&p, 3);
        append(&p, 2..4);
        let mut f = LogFollower::new(p.clone());
        assert_eq!(pumped(&mut f), "0 1 2 3 ");
        // The live file (being read, at its end) is rotated, and for this
        // look its new name is not one a listing shows.
        rotate(&p, 3);
        std::fs::rename(format!("{}.1", p.display()), dir.path().join("mid-rename")).unwrap();
        append(&p, 4..5);
        assert_eq!(pumped(&mut f), "", "nothing repeated from l.log.2");
        std::fs::rename(dir.path().join("mid-rename"), format!("{}.1", p.display())).unwrap();
        assert_eq!(pumped(&mut f), "4 ", "then on into the next file");
    }
}
