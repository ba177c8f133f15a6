//! The kubelet's CRI log format, as containerd's CRI plugin writes it
//! (pkg/cri/io/logger.go): one record per line,
//! `TIMESTAMP STREAM TAG MESSAGE\n`, e.g.
//! `2016-10-06T00:17:09.669794202Z stdout F hello`.
//!
//! - TIMESTAMP: Go's RFC3339Nano in UTC (trailing zeros of the fraction
//!   trimmed, as Go prints it); the kubelet parses it back with that layout.
//! - STREAM: `stdout` or `stderr` (a terminal's output is all `stdout`).
//! - TAG: `F`, the record ends a line; `P`, a part of a line: the first
//!   [`MAX_LINE`] bytes of a longer one (the rest follows in further
//!   records), or output that ended without a newline.
//! - MESSAGE: the line without its `\n` (and without a `\r` right before
//!   it, as containerd's readLine drops it); nothing else is changed.
//!
//! The file is never rotated here: the kubelet renames it and asks for a
//! new one ([`CriLog::reopen`]).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::logfile::Stream;

/// containerd's default `max_container_log_line_size`: a longer line is
/// written as `P` records of this many bytes, then an `F` with the rest.
pub const MAX_LINE: usize = 16 * 1024;

pub struct CriLog {
    path: PathBuf,
    file: File,
    max_line: usize,
    /// Per stream: the start of a line whose end has not come yet.
    partial: [Vec<u8>; 2],
}

impl CriLog {
    pub fn open(path: &Path) -> std::io::Result<CriLog> {
        Self::with_max_line(path, MAX_LINE)
    }

    /// [`CriLog::open`] with another line limit (tests).
    pub fn with_max_line(path: &Path, max_line: usize) -> std::io::Result<CriLog> {
        Ok(CriLog { path: path.into(), file: open(path)?, max_line: max_line.max(1), partial: [vec![], vec![]] })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes a chunk of a stream's output: whole lines become `F` records
    /// now, lines past the limit `P` records; the rest waits.
    pub fn write(&mut self, stream: Stream, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let (piece, ends_line) = match data.iter().position(|b| *b == b'\n') {
                Some(nl) => (&data[..nl], true),
                None => (data, false),
            };
            self.partial[stream as usize].extend_from_slice(piece);
            self.split_long(stream)?;
            if ends_line {
                let mut line = std::mem::take(&mut self.partial[stream as usize]);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.record(stream, b'F', &line)?;
                data = &data[piece.len() + 1..];
            } else {
                data = &[];
            }
        }
        Ok(())
    }

    /// Writes what is held back as `P` records (the stream ended without
    /// a newline).
    pub fn flush(&mut self) -> std::io::Result<()> {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(&mut self.partial[stream as usize]);
            if !rest.is_empty() {
                self.record(stream, b'P', &rest)?;
            }
        }
        Ok(())
    }

    /// Opens the file at the path again (the kubelet renamed the old one);
    /// a part line held back goes on in the new file.
    pub fn reopen(&mut self) -> std::io::Result<()> {
        self.file = open(&self.path)?;
        Ok(())
    }

    /// While more than the limit is held for `stream`: a `P` record of
    /// exactly the limit (containerd splits only past it).
    fn split_long(&mut self, stream: Stream) -> std::io::Result<()> {
        while self.partial[stream as usize].len() > self.max_line {
            let rest = self.partial[stream as usize].split_off(self.max_line);
            let head = std::mem::replace(&mut self.partial[stream as usize], rest);
            self.record(stream, b'P', &head)?;
        }
        Ok(())
    }

    /// One record, written with one write(2) to a file opened O_APPEND: a
    /// reader never sees half of it followed by another one.
    fn record(&mut self, stream: Stream, tag: u8, message: &[u8]) -> std::io::Result<()> {
        let time = crate::time::format_go(SystemTime::now());
        let mut rec = Vec::with_capacity(time.len() + message.len() + 12);
        rec.extend_from_slice(time.as_bytes());
        rec.push(b' ');
        rec.extend_from_slice(stream.name().as_bytes());
        rec.extend_from_slice(&[b' ', tag, b' ']);
        rec.extend_from_slice(message);
        rec.push(b'\n');
        self.file.write_all(&rec)
    }
}

/// As containerd opens it: parents made (0755), the file appended to,
/// created 0640.
fn open(path: &Path) -> std::io::Result<File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        DirBuilder::new().recursive(true).mode(0o755).create(parent)?;
    }
    OpenOptions::new().create(true).append(true).mode(0o640).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (stream, tag, message) of each record; checks each timestamp.
    fn records(path: &Path) -> Vec<(String, String, String)> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let mut f = l.splitn(4, ' ');
                let time = f.next().unwrap();
                assert!(time.ends_with('Z'), "{time}");
                chrono::DateTime::parse_from_rfc3339(time).unwrap();
                let (s, t, m) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap_or(""));
                (s.to_owned(), t.to_owned(), m.to_owned())
            })
            .collect()
    }

    fn r(s: &str, t: &str, m: &str) -> (String, String, String) {
        (s.into(), t.into(), m.into())
    }

    #[test]
    fn lines_are_f_records_and_what_ends_without_newline_a_p_record() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pods/uid/c/0.log");
        let mut log = CriLog::open(&p).unwrap();
        log.write(Stream::Stdout, b"hel").unwrap();
        log.write(Stream::Stderr, b"oops\r\n").unwrap();
        log.write(Stream::Stdout, b"lo\n\nwor").unwrap();
        log.flush().unwrap();
        assert_eq!(
            records(&p),
            [r("stderr", "F", "oops"), r("stdout", "F", "hello"), r("stdout", "F", ""), r("stdout", "P", "wor")]
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777, 0o640 & !umask());
    }

    fn umask() -> u32 {
        // SAFETY: umask(2) cannot fail; the old mask is put back at once.
        let old = unsafe { libc::umask(0o022) };
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        old
    }

    #[test]
    fn a_line_past_the_limit_is_split_into_p_records_of_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        let mut log = CriLog::with_max_line(&p, 4).unwrap();
        log.write(Stream::Stdout, b"abcdefghij\nabcd\nabcdefgh").unwrap();
        log.write(Stream::Stdout, b"\n").unwrap();
        assert_eq!(
            records(&p),
            [
                r("stdout", "P", "abcd"),
                r("stdout", "P", "efgh"),
                r("stdout", "F", "ij"),
                r("stdout", "F", "abcd"),
                r("stdout", "P", "abcd"),
                r("stdout", "F", "efgh"),
            ]
        );
    }

    #[test]
    fn reopen_starts_a_new_file_at_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        let mut log = CriLog::open(&p).unwrap();
        log.write(Stream::Stdout, b"one\ntw").unwrap();
        std::fs::rename(&p, dir.path().join("c.log.1")).unwrap();
        log.reopen().unwrap();
        log.write(Stream::Stdout, b"o\n").unwrap();
        assert_eq!(records(&dir.path().join("c.log.1")), [r("stdout", "F", "one")]);
        assert_eq!(records(&p), [r("stdout", "F", "two")]);
    }
}
