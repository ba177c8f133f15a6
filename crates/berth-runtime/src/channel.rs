//! The parent/child protocol, in one place.
//!
//! `create` and `exec` fork helper processes that enter the container's
//! namespaces. They talk to the runtime over a SOCK_SEQPACKET socketpair:
//! one typed message per packet, JSON-encoded, with file descriptors passed
//! alongside (SCM_RIGHTS) where needed. Packet boundaries mean no framing
//! code; a closed peer reads as `None`.
//!
//! The conversation for `create`:
//!
//! ```text
//! intermediate -> Hello            (joined path namespaces; unshared the user ns)
//! runtime      -> Proceed          (wrote uid/gid maps, put it in the cgroup)
//! intermediate -> Pid(init)        (unshared the rest and forked the init; then exits)
//! init         -> RunHooks         (mounts are in place, before pivot_root)
//! runtime      -> HooksDone(state) (ran prestart and createRuntime hooks)
//! init         -> Ready            (pivoted, set up, waiting for `start`)
//! ```
//!
//! `exec` is the same without RunHooks and Ready: after Pid the runtime
//! waits for the channel to close (the program was exec'd: every fd of ours
//! is close-on-exec) or for an Error.
//!
//! Any child may send `Error` instead of its next message and exit; the
//! message names the step that failed.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg, sendmsg, socketpair,
};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

/// Largest packet: an error message, with room to spare.
const MAX_PACKET: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    Hello,
    Proceed,
    Pid(i32),
    RunHooks,
    /// The reply to RunHooks: the state (JSON) hooks in the container get.
    HooksDone(String),
    Ready,
    /// The runtime saved the container's state with the init's pid: the
    /// init may wait for `start`. An init that reads the channel's end
    /// instead was left by a runtime killed mid-create, which no state
    /// names (it would wait for a start that never comes): it exits.
    Committed,
    Error(String),
    /// The program could not be exec'd: runc's words and the errno, so the
    /// runtime's caller gets the cause typed (see `Error::Exec`).
    ExecFailed {
        errno: i32,
        message: String,
    },
}

impl Msg {
    /// What a child sends when `e` stops it.
    pub fn failure(e: &Error) -> Msg {
        match e {
            Error::Exec { errno, message } => Msg::ExecFailed { errno: *errno, message: message.clone() },
            e => Msg::Error(e.to_string()),
        }
    }

    /// The error a child's failure message stands for; any other message
    /// comes back as it was.
    pub fn into_error(self) -> std::result::Result<Error, Msg> {
        match self {
            Msg::Error(e) => Ok(Error::Container(e)),
            Msg::ExecFailed { errno, message } => Ok(Error::Exec { errno, message }),
            other => Err(other),
        }
    }
}

/// One end of the socketpair.
#[derive(Debug)]
pub struct Channel(OwnedFd);

impl Channel {
    /// A connected pair: (runtime's end, child's end). Both close on exec.
    pub fn pair() -> Result<(Channel, Channel)> {
        let (a, b) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
            .step(|| "socketpair for the container channel")?;
        Ok((Channel(a), Channel(b)))
    }

    pub fn send(&self, msg: &Msg) -> Result<()> {
        self.send_with_fds(msg, &[])
    }

    pub fn send_with_fds(&self, msg: &Msg, fds: &[RawFd]) -> Result<()> {
        let bytes = serde_json::to_vec(msg).expect("channel messages always serialize");
        send_packet(self.0.as_fd(), &bytes, fds).step(|| "send on the container channel")
    }

    /// The next message, or `None` when every peer has closed its end.
    pub fn recv(&self) -> Result<Option<Msg>> {
        Ok(self.recv_with_fds()?.map(|(m, _)| m))
    }

    pub fn recv_with_fds(&self) -> Result<Option<(Msg, Vec<OwnedFd>)>> {
        let Some((bytes, fds)) = recv_packet(self.0.as_fd()).step(|| "receive on the container channel")? else {
            return Ok(None);
        };
        let msg = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Container(format!("garbled message on the container channel: {e}")))?;
        Ok(Some((msg, fds)))
    }

    /// Receives the next message and checks it is `want`. An `Error` from
    /// the child becomes that error; a closed channel says who vanished.
    pub fn expect(&self, want: &Msg, peer: &str) -> Result<()> {
        match self.recv()? {
            Some(m) if &m == want => Ok(()),
            Some(m) => Err(m
                .into_error()
                .unwrap_or_else(|other| Error::Container(format!("{peer}: expected {want:?}, got {other:?}")))),
            None => Err(Error::Container(format!("{peer} exited before {want:?}"))),
        }
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Sends one packet with optional fds. Also the console-socket protocol:
/// runc sends the pty master with the name "/dev/ptmx" as the payload, and
/// containerd, podman (conmon) and others receive exactly that.
pub fn send_packet(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[RawFd]) -> nix::Result<()> {
    let iov = [IoSlice::new(bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None)?;
    Ok(())
}

/// Receives one packet and any fds with it; `None` at end of stream.
pub fn recv_packet(sock: BorrowedFd<'_>) -> nix::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_PACKET];
    let mut cmsg_space = nix::cmsg_space!([RawFd; 8]);
    let (n, fds) = loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg_space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(msg) => {
                let mut fds = Vec::new();
                for c in msg.cmsgs()? {
                    if let ControlMessageOwned::ScmRights(raw) = c {
                        // SAFETY: SCM_RIGHTS just installed these fds in our
                        // table; we are their only owner.
                        fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                    }
                }
                break (msg.bytes, fds);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    };
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    buf.truncate(n);
    Ok(Some((buf, fds)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_fds_cross_the_pair() {
        let (a, b) = Channel::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        a.send_with_fds(&Msg::Pid(42), &[file.as_raw_fd()]).unwrap();
        let (msg, fds) = b.recv_with_fds().unwrap().unwrap();
        assert_eq!(msg, Msg::Pid(42));
        assert_eq!(fds.len(), 1);
        b.send(&Msg::Error("mount 'proc' on '/proc': EPERM".into())).unwrap();
        let err = a.expect(&Msg::Ready, "init").unwrap_err();
        assert_eq!(err.to_string(), "mount 'proc' on '/proc': EPERM");
    }

    #[test]
    fn an_exec_failure_crosses_typed() {
        let (a, b) = Channel::pair().unwrap();
        let e = Error::Exec { errno: libc::ENOENT, message: "exec: \"x\": executable file not found in $PATH".into() };
        b.send(&Msg::failure(&e)).unwrap();
        match a.expect(&Msg::Ready, "init").unwrap_err() {
            Error::Exec { errno, message } => {
                assert_eq!(errno, libc::ENOENT);
                assert_eq!(message, "exec: \"x\": executable file not found in $PATH");
            }
            other => panic!("not typed: {other:?}"),
        }
    }

    #[test]
    fn a_vanished_peer_reads_as_none() {
        let (a, b) = Channel::pair().unwrap();
        drop(b);
        assert_eq!(a.recv().unwrap(), None);
        let err = a.expect(&Msg::Ready, "init").unwrap_err();
        assert!(err.to_string().contains("init exited before Ready"));
    }
}
