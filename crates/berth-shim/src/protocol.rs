//! The attach socket's wire format, both directions: frames of
//! `[kind: u8][length: u32, big endian][payload]`.
//!
//! | kind | direction      | payload                                  |
//! |------|----------------|------------------------------------------|
//! | 0    | client -> shim | bytes for the container's stdin          |
//! | 1    | shim -> client | the container's stdout (or the terminal) |
//! | 2    | shim -> client | the container's stderr                   |
//! | 3    | client -> shim | terminal size: rows u16 BE, cols u16 BE  |
//! | 4    | client -> shim | close the container's stdin              |
//! | 5    | shim -> client | the container exited: code i32 BE        |
//! | 6    | client -> shim | run an exec session: the runtime's `exec` arguments (options, ID, argv), NUL-separated; SCM_RIGHTS carries the process's stdin, stdout, stderr |
//! | 7    | shim -> client | the exec session started: pid i32 BE     |
//! | 8    | shim -> client | the exec session could not start: the runtime's message |
//! | 9    | shim -> client | the exec session's process exited: code i32 BE |
//! | 10   | client -> shim | a waiter: send this client no output, only exits (5) |
//! | 11   | shim -> client | right before 8, when the runtime gave one: the errno of the failed exec, i32 BE (a client that does not know it skips it) |
//! | 12   | client -> shim | reopen the log file at its path (whoever rotates it has renamed it: the kubelet) |
//! | 13   | shim -> client | the answer to 12, once the new file is open: empty, or why it could not be opened |
//!
//! An exec session's process is the shim's (the runtime runs it with
//! `--detach` and it is reparented to the shim, the subreaper), so the shim
//! reaps it and reports its exit, and stays until its sessions have ended.
//! A client that asked for a session, or said it only waits, gets no
//! container output. Every client gets the exit frame (5) of each run,
//! before the shim runs its exit command: a waiter learns the code of a
//! `--rm` container that is removed right after.
//!
//! A client may connect at any time; it sees output from then on (the
//! log file has what came before). Closing the connection detaches.

use std::io::{Read, Write};

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const RESIZE: u8 = 3;
pub const CLOSE_STDIN: u8 = 4;
pub const EXIT: u8 = 5;
pub const EXEC: u8 = 6;
pub const EXEC_STARTED: u8 = 7;
pub const EXEC_FAILED: u8 = 8;
pub const EXEC_EXIT: u8 = 9;
pub const WAIT: u8 = 10;
pub const EXEC_ERRNO: u8 = 11;
pub const REOPEN_LOG: u8 = 12;
pub const LOG_REOPENED: u8 = 13;

/// Largest payload accepted: a client cannot make the shim allocate more.
pub const MAX_PAYLOAD: u32 = 1 << 20;

pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(5 + payload.len());
    f.push(kind);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub fn write_frame(w: &mut impl Write, kind: u8, payload: &[u8]) -> std::io::Result<()> {
    w.write_all(&encode(kind, payload))
}

/// One frame; `None` at end of stream.
pub fn read_frame(r: &mut impl Read) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if len > MAX_PAYLOAD {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("frame of {len} bytes")));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)?;
    Ok(Some((head[0], payload)))
}

/// A frame announced more than [`MAX_PAYLOAD`] bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct TooLarge(pub u32);

/// Reassembles frames from a non-blocking stream's chunks.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole frame, if there is one; an error for a frame larger
    /// than [`MAX_PAYLOAD`] (the client is then dropped).
    pub fn next_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, TooLarge> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        if len > MAX_PAYLOAD {
            return Err(TooLarge(len));
        }
        let end = 5 + len as usize;
        if self.buf.len() < end {
            return Ok(None);
        }
        let kind = self.buf[0];
        let payload = self.buf[5..end].to_vec();
        self.buf.drain(..end);
        Ok(Some((kind, payload)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_whole_and_in_pieces() {
        let mut wire = encode(STDOUT, b"hello");
        wire.extend(encode(EXIT, &3i32.to_be_bytes()));
        let mut r = &wire[..];
        assert_eq!(read_frame(&mut r).unwrap(), Some((STDOUT, b"hello".to_vec())));
        assert_eq!(read_frame(&mut r).unwrap(), Some((EXIT, 3i32.to_be_bytes().to_vec())));
        assert_eq!(read_frame(&mut r).unwrap(), None);
        let mut d = Decoder::default();
        for b in &wire {
            d.push(&[*b]);
        }
        assert_eq!(d.next_frame(), Ok(Some((STDOUT, b"hello".to_vec()))));
        assert_eq!(d.next_frame().unwrap().unwrap().0, EXIT);
        assert_eq!(d.next_frame(), Ok(None));
        let mut huge = Decoder::default();
        huge.push(&[STDIN, 0xff, 0xff, 0xff, 0xff]);
        assert!(huge.next_frame().is_err());
    }
}
