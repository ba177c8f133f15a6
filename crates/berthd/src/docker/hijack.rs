//! The hijacked connections of attach and exec start: the client asks for
//! `Upgrade: tcp`, dockerd answers 101 and the connection then carries
//! the process's output one way (raw, or in docker's frames) and its input
//! the other. A client that did not ask for the upgrade gets a 200 whose
//! body is the output (and sends no input).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue, UPGRADE};
use hyper::upgrade::OnUpgrade;
use hyper::{HeaderMap, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::{Resp, full, stream_response};

/// A session's two directions.
pub struct Channels {
    /// To the client; the connection is closed once every sender is gone
    /// (and what was sent is written).
    pub out: mpsc::Sender<Bytes>,
    /// From the client; ends at its EOF (a half-close: it still reads) or
    /// when it hangs up.
    pub input: mpsc::Receiver<Bytes>,
    /// The client can no longer be written to: whoever produces output
    /// may stop.
    pub gone: Arc<AtomicBool>,
    /// Fires once the answer is on the wire and the connection is ours
    /// (an error if it never is). A process started only then cannot
    /// have its first output arrive with the answer's headers, where a
    /// client's HTTP parser would buffer it away (docker-py's does).
    pub ready: oneshot::Receiver<()>,
}

impl Channels {
    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed) || self.out.is_closed()
    }
}

/// Whether the client asked to take the connection over.
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    let has = |name, word: &str| {
        headers.get_all(name).iter().any(|v| v.to_str().is_ok_and(|s| s.to_ascii_lowercase().contains(word)))
    };
    has(UPGRADE, "tcp") || has(CONNECTION, "upgrade")
}

/// The answer to an attach or exec start, and the session's channels.
pub fn respond(headers: &HeaderMap, upgrade: Option<OnUpgrade>, content_type: &'static str) -> (Resp, Channels) {
    let (out, out_rx) = mpsc::channel::<Bytes>(64);
    let (in_tx, input) = mpsc::channel::<Bytes>(64);
    let gone = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready) = oneshot::channel();
    let upgrade = upgrade.filter(|_| wants_upgrade(headers));
    let Some(on) = upgrade else {
        // No input comes: the sender goes now.
        drop(in_tx);
        let _ = ready_tx.send(());
        return (stream_response(content_type, out_rx), Channels { out, input, gone, ready });
    };
    tokio::spawn(pump(on, out_rx, in_tx, gone.clone(), ready_tx));
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("tcp"));
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    (r, Channels { out, input, gone, ready })
}

/// Copies the session's output to the taken-over connection and its input
/// from it, until the output ends (then the connection is shut down).
async fn pump(
    on: OnUpgrade,
    mut out: mpsc::Receiver<Bytes>,
    input: mpsc::Sender<Bytes>,
    gone: Arc<AtomicBool>,
    ready: oneshot::Sender<()>,
) {
    let upgraded = match on.await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(error = %e, "docker API: the connection was not handed over");
            gone.store(true, Ordering::Relaxed);
            return;
        }
    };
    let _ = ready.send(());
    let (mut r, mut w) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match r.read(&mut buf).await {
                // EOF is the end of the client's input, not a hang-up: the
                // docker CLI half-closes at once when it sends no input,
                // and reads on.
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if input.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                        // Nobody takes input: keep reading to see the hang-up.
                        continue;
                    }
                }
            }
        }
    });
    while let Some(b) = out.recv().await {
        if w.write_all(&b).await.is_err() {
            gone.store(true, Ordering::Relaxed);
            break;
        }
    }
    let _ = w.flush().await;
    let _ = w.shutdown().await;
    reader.abort();
}
