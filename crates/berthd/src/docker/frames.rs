//! docker's stream multiplexing: without a terminal, attach, exec and logs
//! send each chunk behind an 8-byte header (the stream: 0 stdin, 1 stdout,
//! 2 stderr; three zero bytes; the length, big-endian), so one connection
//! carries both streams. With a terminal the stream is raw.

use bytes::{BufMut, Bytes, BytesMut};

pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;

/// One chunk of `stream` with its header; raw (as it is) for a terminal.
pub fn frame(stream: u8, data: &[u8], raw: bool) -> Bytes {
    if raw {
        return Bytes::copy_from_slice(data);
    }
    let mut b = BytesMut::with_capacity(8 + data.len());
    b.put_u8(stream);
    b.put_bytes(0, 3);
    // A chunk never nears 4 GiB (reads are 32 KiB at most).
    b.put_u32(u32::try_from(data.len()).unwrap_or(u32::MAX));
    b.put_slice(data);
    b.freeze()
}

/// The Content-Type of a stream: multiplexed (API 1.42 and later say so)
/// or raw.
pub fn content_type(raw: bool, version: super::version::ApiVersion) -> &'static str {
    if !raw && version >= super::version::ApiVersion(1, 42) {
        "application/vnd.docker.multiplexed-stream"
    } else {
        "application/vnd.docker.raw-stream"
    }
}

/// A writer of one stream's frames into a session's output channel, from
/// a blocking thread (the engine's log follower writes into it). A
/// stream the client did not ask for is dropped; a client gone is
/// `BrokenPipe`.
pub struct FrameWriter {
    pub stream: u8,
    pub raw: bool,
    pub enabled: bool,
    pub tx: tokio::sync::mpsc::Sender<Bytes>,
}

impl std::io::Write for FrameWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.enabled && !buf.is_empty() {
            self.tx
                .blocking_send(frame(self.stream, buf, self.raw))
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_dockers_header() {
        assert_eq!(&frame(STDERR, b"hi\n", false)[..], b"\x02\x00\x00\x00\x00\x00\x00\x03hi\n");
        assert_eq!(&frame(STDOUT, b"", false)[..], b"\x01\x00\x00\x00\x00\x00\x00\x00");
        assert_eq!(&frame(STDOUT, b"raw", true)[..], b"raw");
    }
}
