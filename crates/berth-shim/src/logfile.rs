//! docker's json-file log driver: one JSON object per line,
//! `{"log":"hi\n","stream":"stdout","time":"2026-...Z"}`, rotated by size
//! (`max-size`) into at most `max-file` files: LOG, LOG.1, LOG.2, ...

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::time;

/// Output that has no newline yet is held back up to this much, then
/// written as a partial line (docker splits at 16 KiB too).
const MAX_PARTIAL: usize = 16 * 1024;

pub struct JsonFileLog {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: Option<u64>,
    max_files: u32,
    partial: [Vec<u8>; 2],
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stream {
    Stdout = 0,
    Stderr = 1,
}

impl Stream {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// The container's log in the format the engine asked for.
pub enum Log {
    JsonFile(JsonFileLog),
    Cri(crate::crilog::CriLog),
}

impl Log {
    /// The log `cfg` asks for, if any.
    pub fn open(cfg: &crate::config::Config) -> std::io::Result<Option<Log>> {
        let Some(path) = &cfg.log_path else { return Ok(None) };
        Ok(Some(match cfg.log_format {
            crate::config::LogFormat::JsonFile => {
                Log::JsonFile(JsonFileLog::open(path, cfg.log_max_size, cfg.log_max_files)?)
            }
            crate::config::LogFormat::Cri => Log::Cri(crate::crilog::CriLog::open(path)?),
        }))
    }

    pub fn write(&mut self, stream: Stream, data: &[u8]) -> std::io::Result<()> {
        match self {
            Log::JsonFile(l) => l.write(stream, data),
            Log::Cri(l) => l.write(stream, data),
        }
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Log::JsonFile(l) => l.flush(),
            Log::Cri(l) => l.flush(),
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            Log::JsonFile(l) => &l.path,
            Log::Cri(l) => l.path(),
        }
    }

    /// A new file at the log's path (whoever rotates it renamed the old).
    pub fn reopen(&mut self) -> std::io::Result<()> {
        match self {
            Log::JsonFile(l) => l.reopen(),
            Log::Cri(l) => l.reopen(),
        }
    }
}

impl JsonFileLog {
    /// Opens the path again (appending), after someone renamed the file.
    pub fn reopen(&mut self) -> std::io::Result<()> {
        self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = self.file.metadata()?.len();
        Ok(())
    }

    pub fn open(path: &Path, max_size: Option<u64>, max_files: u32) -> std::io::Result<JsonFileLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(JsonFileLog {
            path: path.into(),
            file,
            size,
            max_size,
            max_files: max_files.max(1),
            partial: [vec![], vec![]],
        })
    }

    /// Takes a chunk of a stream's output; whole lines are written now.
    pub fn write(&mut self, stream: Stream, mut data: &[u8]) -> std::io::Result<()> {
        while let Some(nl) = data.iter().position(|b| *b == b'\n') {
            let mut line = std::mem::take(&mut self.partial[stream as usize]);
            line.extend_from_slice(&data[..=nl]);
            self.entry(stream, &line)?;
            data = &data[nl + 1..];
        }
        self.partial[stream as usize].extend_from_slice(data);
        if self.partial[stream as usize].len() >= MAX_PARTIAL {
            let line = std::mem::take(&mut self.partial[stream as usize]);
            self.entry(stream, &line)?;
        }
        Ok(())
    }

    /// Writes what is held back (the stream ended without a newline).
    pub fn flush(&mut self) -> std::io::Result<()> {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let line = std::mem::take(&mut self.partial[stream as usize]);
            if !line.is_empty() {
                self.entry(stream, &line)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, stream: Stream, line: &[u8]) -> std::io::Result<()> {
        let text = String::from_utf8_lossy(line);
        let entry = format!(
            "{{\"log\":{},\"stream\":\"{}\",\"time\":\"{}\"}}\n",
            crate::supervisor::json_string(&text),
            stream.name(),
            time::now()
        );
        if let Some(max) = self.max_size
            && self.size > 0
            && self.size + entry.len() as u64 > max
        {
            self.rotate()?;
        }
        self.file.write_all(entry.as_bytes())?;
        self.size += entry.len() as u64;
        Ok(())
    }

    /// LOG.(n-1) -> LOG.n, ..., LOG -> LOG.1, and a new LOG; with
    /// max-file 1 the log is just started over. Only the files there are
    /// renamed: a huge max-file costs nothing until the files exist.
    fn rotate(&mut self) -> std::io::Result<()> {
        let name = |i: u32| {
            if i == 0 { self.path.clone() } else { PathBuf::from(format!("{}.{i}", self.path.display())) }
        };
        if self.max_files > 1 {
            // The oldest to keep moving: LOG.(max-file - 2) at most (the
            // rename onto LOG.(max-file - 1) drops the oldest).
            let mut top = 0;
            while top + 2 < self.max_files && name(top + 1).exists() {
                top += 1;
            }
            for i in (0..=top).rev() {
                let from = name(i);
                if from.exists() {
                    std::fs::rename(&from, name(i + 1))?;
                }
            }
        }
        self.file = OpenOptions::new().create(true).write(true).truncate(true).open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn lines_become_entries_with_stream_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        let mut log = JsonFileLog::open(&p, None, 1).unwrap();
        log.write(Stream::Stdout, b"hel").unwrap();
        log.write(Stream::Stderr, b"oops\n").unwrap();
        log.write(Stream::Stdout, b"lo\nwor").unwrap();
        log.flush().unwrap();
        let e = entries(&p);
        assert_eq!(e.len(), 3);
        assert_eq!((e[0]["log"].as_str(), e[0]["stream"].as_str()), (Some("oops\n"), Some("stderr")));
        assert_eq!((e[1]["log"].as_str(), e[1]["stream"].as_str()), (Some("hello\n"), Some("stdout")));
        assert_eq!(e[2]["log"], "wor", "a last line without newline is kept as is");
        assert!(e[0]["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn rotation_keeps_max_file_files_of_at_most_max_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        let mut log = JsonFileLog::open(&p, Some(300), 3).unwrap();
        for i in 0..40 {
            log.write(Stream::Stdout, format!("line {i}\n").as_bytes()).unwrap();
        }
        let mut names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["c.log", "c.log.1", "c.log.2"]);
        for n in &names {
            assert!(std::fs::metadata(dir.path().join(n)).unwrap().len() <= 300, "{n} too big");
        }
        let newest = entries(&p);
        assert_eq!(newest.last().unwrap()["log"], "line 39\n", "the newest lines are in the live file");
        let older = entries(&dir.path().join("c.log.1"));
        let last_older: String = older.last().unwrap()["log"].as_str().unwrap().into();
        let first_newest: String = newest[0]["log"].as_str().unwrap().into();
        let n = |s: &str| s.trim().trim_start_matches("line ").parse::<u32>().unwrap();
        assert_eq!(n(&last_older) + 1, n(&first_newest), "no line lost between files");
    }

    #[test]
    fn a_huge_max_file_rotates_only_the_files_there() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        let mut log = JsonFileLog::open(&p, Some(100), u32::MAX).unwrap();
        for i in 0..10 {
            log.write(Stream::Stdout, format!("line {i}\n").as_bytes()).unwrap();
        }
        // One entry per file: LOG has line 9, LOG.k line 9-k, none lost.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 10);
        for k in 1..10 {
            let rotated = entries(&PathBuf::from(format!("{}.{k}", p.display())));
            assert_eq!(rotated[0]["log"], format!("line {}\n", 9 - k));
        }
    }
}
