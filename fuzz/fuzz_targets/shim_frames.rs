//! The shim's attach socket: frames a client sends, as the shim reads them
//! (`protocol::Decoder`, fed in arbitrary chunks as a non-blocking socket
//! delivers them) and as the client library reads the shim's
//! (`protocol::read_frame`); then the container output frames through
//! the json-file log writer, whose lines `berth logs` parses back.
//!
//! Input: a chunk-size byte, then the byte stream.
//!
//! Invariants: both readers see the same frames; no frame is larger than
//! MAX_PAYLOAD; re-encoding the frames gives back the bytes consumed;
//! every log line is a JSON object with the stream's name, and the log of
//! valid UTF-8 output (below the 16 KiB partial-line split) holds that
//! output exactly.

#![no_main]

use std::sync::LazyLock;

use berth_shim::logfile::{JsonFileLog, Stream};
use berth_shim::protocol::{self, Decoder, MAX_PAYLOAD};
use libfuzzer_sys::fuzz_target;

static LOGDIR: LazyLock<tempfile::TempDir> =
    LazyLock::new(|| tempfile::Builder::new().prefix("berth-fuzz-shim-").tempdir().expect("temp dir"));

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, wire)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);

    let mut decoder = Decoder::default();
    let mut from_decoder = Vec::new();
    let mut too_large = None;
    'feed: for piece in wire.chunks(chunk) {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(f)) => from_decoder.push(f),
                Ok(None) => break,
                Err(e) => {
                    too_large = Some(e.0);
                    break 'feed;
                }
            }
        }
    }

    let mut reader = wire;
    let mut from_reader = Vec::new();
    let mut reader_error = false;
    loop {
        match protocol::read_frame(&mut reader) {
            Ok(Some(f)) => from_reader.push(f),
            Ok(None) => break,
            Err(_) => {
                reader_error = true;
                break;
            }
        }
    }

    if let Some(len) = too_large {
        assert!(len > MAX_PAYLOAD);
        assert!(reader_error, "read_frame took a frame of {len} bytes the decoder refused");
    }
    // A stream cut inside a frame: read_frame reports it, the decoder
    // waits for more. Both have the same whole frames before it.
    assert_eq!(from_decoder, from_reader, "the decoder and read_frame disagree");
    let mut consumed = Vec::new();
    for (kind, payload) in &from_decoder {
        assert!(payload.len() <= MAX_PAYLOAD as usize);
        consumed.extend(protocol::encode(*kind, payload));
    }
    assert!(wire.starts_with(&consumed), "re-encoded frames are the bytes they came from");

    log(&from_decoder);
});

/// Output frames through the json-file log, as the shim writes them.
fn log(frames: &[(u8, Vec<u8>)]) {
    let path = LOGDIR.path().join("c-json.log");
    let _ = std::fs::remove_file(&path);
    let mut log = JsonFileLog::open(&path, None, 1).expect("open the log");
    let mut out: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    for (kind, payload) in frames {
        let stream = match *kind {
            protocol::STDOUT => Stream::Stdout,
            protocol::STDERR => Stream::Stderr,
            _ => continue,
        };
        out[stream as usize].extend_from_slice(payload);
        log.write(stream, payload).expect("write the log");
    }
    log.flush().expect("flush the log");
    let text = std::fs::read_to_string(&path).expect("the log is UTF-8");
    let mut logged: [String; 2] = [String::new(), String::new()];
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("log line {line:?} is not JSON: {e}"));
        let i = match v["stream"].as_str() {
            Some("stdout") => 0,
            Some("stderr") => 1,
            other => panic!("log line with stream {other:?}"),
        };
        logged[i].push_str(v["log"].as_str().expect("a log string"));
        assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')), "a UTC time in {line:?}");
    }
    for i in 0..2 {
        // Output held back past 16 KiB without a newline is written as a
        // partial line, possibly inside a UTF-8 sequence (as docker's
        // json-file does): exact only below that.
        if let Ok(s) = std::str::from_utf8(&out[i])
            && s.len() < 16 * 1024
        {
            assert_eq!(logged[i], s, "the log holds the output");
        }
    }
}
