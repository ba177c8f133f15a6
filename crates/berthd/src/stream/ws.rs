//! WebSocket transports: remotecommand over `v5.channel.k8s.io` and
//! `v4.channel.k8s.io` (binary; one channel byte at the start of each
//! message: 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize, and in v5 255
//! followed by a channel to close it), and a byte stream over binary
//! messages for SPDY tunnelled in a WebSocket (port-forward's
//! `SPDY/3.1+portforward.k8s.io`), and kubelet's own port-forward
//! channels ([`portforward_channels`]). The base64 variants kubelet also
//! speaks are not: no client of this era asks for them.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::StatusCode;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, frame::coding::CloseCode};

use super::idle::IdleIo;
use super::remotecommand::{self, ErrorFormat, negotiate, opts_of, pipes};
use super::{HttpResponse, Pending, SessionCtx, Streamer, header_list, text};

pub const V5: &str = "v5.channel.k8s.io";
pub const V4: &str = "v4.channel.k8s.io";
pub const REMOTECOMMAND_PROTOCOLS: &[&str] = &[V5, V4];
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

type Ws = WebSocketStream<IdleIo<TokioIo<hyper::upgrade::Upgraded>>>;

/// Checks a WebSocket upgrade and picks a subprotocol from `supported`:
/// the 101 answer and the protocol, or the refusal.
pub fn accept(
    req: &mut hyper::Request<Incoming>,
    supported: &[&'static str],
) -> Result<(HttpResponse, &'static str), Box<HttpResponse>> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return Err(Box::new(text(StatusCode::BAD_REQUEST, "websocket upgrade without Sec-WebSocket-Key")));
    };
    let offered = header_list(req, "sec-websocket-protocol");
    let Some(proto) = negotiate(&offered, supported) else {
        let msg = format!("unable to upgrade: client supports {offered:?}, server supports {supported:?}");
        return Err(Box::new(text(StatusCode::FORBIDDEN, msg)));
    };
    let mut r = text(StatusCode::SWITCHING_PROTOCOLS, "");
    *r.body_mut() = Default::default();
    let h = r.headers_mut();
    h.remove(hyper::header::CONTENT_TYPE);
    h.insert(hyper::header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(hyper::header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert("sec-websocket-accept", v);
    }
    h.insert("sec-websocket-protocol", HeaderValue::from_static(proto));
    Ok((r, proto))
}

/// Spawns `f` on the connection once hyper hands it over; the session
/// keeps its place (`ctx`) until `f` is done.
pub fn on_upgrade<F, Fut>(req: &mut hyper::Request<Incoming>, ctx: SessionCtx, f: F)
where
    F: FnOnce(Ws) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let upgraded = hyper::upgrade::on(req);
    tokio::spawn(async move {
        match upgraded.await {
            Ok(u) => {
                let io = ctx.wrap(TokioIo::new(u));
                f(WebSocketStream::from_raw_socket(io, Role::Server, None).await).await
            }
            Err(e) => tracing::debug!("websocket upgrade: {e}"),
        }
        drop(ctx);
    });
}

pub fn serve_remotecommand(
    mut req: hyper::Request<Incoming>,
    p: Pending,
    streamer: Arc<dyn Streamer>,
    ctx: SessionCtx,
) -> HttpResponse {
    match accept(&mut req, REMOTECOMMAND_PROTOCOLS) {
        Err(refusal) => *refusal,
        Ok((resp, proto)) => {
            on_upgrade(&mut req, ctx, move |ws| remotecommand_session(ws, proto, p, streamer));
            resp
        }
    }
}

async fn remotecommand_session(ws: Ws, proto: &'static str, p: Pending, streamer: Arc<dyn Streamer>) {
    let (mut source, out_tx, writer) = split_with_writer(ws);
    let opts = opts_of(&p);
    let (io, pipes) = pipes(&opts);
    let (resize_tx, resize_rx) = mpsc::channel(8);
    let mut stdin = pipes.stdin.map(stdin_writer);
    let v5 = proto == V5;
    let (closed_tx, mut closed) = tokio::sync::watch::channel(false);
    let reader = tokio::spawn(async move {
        let mut resize = remotecommand::ResizeParser::new();
        while let Some(Ok(m)) = source.next().await {
            let data = match m {
                Message::Binary(d) => d,
                Message::Close(_) => break,
                _ => continue,
            };
            match data.first() {
                Some(&STDIN) => {
                    if let Some(w) = &stdin
                        && !w.send(data.slice(1..)).await
                    {
                        stdin = None;
                    }
                }
                Some(&RESIZE) => {
                    for s in resize.push(&data[1..]).unwrap_or_default() {
                        let _ = resize_tx.send(s).await;
                    }
                }
                // The writer closes stdin once what came before is in.
                Some(&CLOSE) if v5 && data.get(1) == Some(&STDIN) => stdin = None,
                _ => {}
            }
        }
        let _ = closed_tx.send(true);
    });
    let mut outputs = Vec::new();
    for (ch, pipe) in [(STDOUT, pipes.stdout), (STDERR, pipes.stderr)] {
        if let Some(pipe) = pipe {
            outputs.push(tokio::spawn(channel_out(pipe, out_tx.clone(), ch)));
        }
    }
    let outcome = tokio::select! {
        o = remotecommand::run(&*streamer, &p, io, resize_rx) => o,
        // Dropping the run stops it: the client is gone.
        _ = async { closed.wait_for(|c| *c).await.is_ok() } => {
            tracing::info!("exec/attach: the client left; stopping");
            drop(out_tx);
            let _ = writer.await;
            return;
        }
    };
    for o in outputs {
        let _ = o.await;
    }
    let mut msg = vec![ERROR];
    msg.extend(remotecommand::outcome_bytes(&outcome, ErrorFormat::Status));
    let _ = out_tx.send(Message::Binary(msg.into())).await;
    let close = CloseFrame { code: CloseCode::Normal, reason: "".into() };
    let _ = out_tx.send(Message::Close(Some(close))).await;
    drop(out_tx);
    let _ = writer.await;
    // The client answers the close; stop listening after a while anyway.
    let abort = reader.abort_handle();
    if tokio::time::timeout(std::time::Duration::from_secs(10), reader).await.is_err() {
        abort.abort();
    }
}

/// What stdin may hold that the command has not read before the session
/// stops reading the connection (WebSocket has no flow control of its
/// own): until then, resizes and the close signal still get through.
const STDIN_BUFFER: usize = 128 * 1024;

/// Feeds stdin from its own task, so a command that reads it slowly does
/// not stop the session's reader (which also carries resizes).
struct StdinWriter {
    tx: mpsc::UnboundedSender<(Bytes, tokio::sync::OwnedSemaphorePermit)>,
    budget: Arc<tokio::sync::Semaphore>,
}

impl StdinWriter {
    /// Queues `data`; waits only past [`STDIN_BUFFER`]. False once the
    /// command's stdin is closed.
    async fn send(&self, data: Bytes) -> bool {
        if data.is_empty() {
            return !self.tx.is_closed();
        }
        let n = data.len().min(STDIN_BUFFER) as u32;
        match self.budget.clone().acquire_many_owned(n).await {
            Ok(permit) => self.tx.send((data, permit)).is_ok(),
            Err(_) => false,
        }
    }
}

/// The writer of `pipe`; dropping it closes stdin after what it queued.
fn stdin_writer(mut pipe: DuplexStream) -> StdinWriter {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Bytes, tokio::sync::OwnedSemaphorePermit)>();
    tokio::spawn(async move {
        // The permit goes back once its bytes are in the pipe.
        while let Some((data, _permit)) = rx.recv().await {
            if pipe.write_all(&data).await.is_err() {
                return;
            }
        }
        let _ = pipe.shutdown().await;
    });
    StdinWriter { tx, budget: Arc::new(tokio::sync::Semaphore::new(STDIN_BUFFER)) }
}

async fn channel_out(mut pipe: DuplexStream, out: mpsc::Sender<Message>, ch: u8) {
    let mut buf = vec![0u8; 32 * 1024];
    while let Ok(n @ 1..) = pipe.read(&mut buf[1..]).await {
        buf[0] = ch;
        if out.send(Message::Binary(Bytes::copy_from_slice(&buf[..=n]))).await.is_err() {
            return;
        }
    }
}

/// kubelet's WebSocket port-forward: port `i` of `ports` has data channel
/// `2i` and error channel `2i+1`; the first message of each channel from
/// the server is the port (2 bytes, little-endian). The connection ends
/// when every port is done.
pub async fn portforward_channels(ws: Ws, pod: String, ports: Vec<u16>, streamer: Arc<dyn Streamer>) {
    let (mut source, out_tx, writer) = split_with_writer(ws);
    let msg = |ch: usize, data: &[u8]| Message::Binary([&[ch as u8][..], data].concat().into());
    let mut to_targets = Vec::new();
    let mut forwards = tokio::task::JoinSet::new();
    for (i, &port) in ports.iter().enumerate() {
        for ch in [2 * i, 2 * i + 1] {
            let _ = out_tx.send(msg(ch, &port.to_le_bytes())).await;
        }
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let (mut rd, wr) = tokio::io::split(ours);
        to_targets.push(Some(wr));
        let (out, streamer, pod) = (out_tx.clone(), streamer.clone(), pod.clone());
        forwards.spawn(async move {
            let from_target = async {
                let mut buf = vec![0u8; 32 * 1024];
                while let Ok(n @ 1..) = rd.read(&mut buf).await {
                    if out.send(msg(2 * i, &buf[..n])).await.is_err() {
                        return;
                    }
                }
            };
            let fwd = streamer.port_forward(&pod, port, theirs);
            tokio::pin!(fwd, from_target);
            let res = tokio::select! {
                // A forward that fails (refused) ends first: its error counts.
                biased;
                res = &mut fwd => {
                    (&mut from_target).await;
                    res
                }
                // The target is done: so is this port, as in containerd.
                () = &mut from_target => Ok(()),
            };
            if let Err(e) = res {
                let text = format!("error forwarding port {port} to pod {pod}: {e}");
                tracing::info!("{text}");
                let _ = out.send(msg(2 * i + 1, text.as_bytes())).await;
            }
        });
    }
    let mut reader = tokio::spawn(async move {
        while let Some(Ok(m)) = source.next().await {
            let data = match m {
                Message::Binary(d) => d,
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&ch, rest)) = data.split_first() else { continue };
            let slot = usize::from(ch);
            if slot % 2 == 0
                && let Some(Some(wr)) = to_targets.get_mut(slot / 2)
                && wr.write_all(rest).await.is_err()
            {
                to_targets[slot / 2] = None;
            }
        }
        // The client is gone: so is its side of every port.
        for mut wr in to_targets.into_iter().flatten() {
            let _ = wr.shutdown().await;
        }
    });
    let client_left = tokio::select! {
        () = async { while forwards.join_next().await.is_some() {} } => false,
        _ = &mut reader => true,
    };
    if client_left {
        // Its connections go with it, even those the target keeps open.
        forwards.shutdown().await;
        drop(out_tx);
        let _ = writer.await;
        return;
    }
    let close = CloseFrame { code: CloseCode::Normal, reason: "".into() };
    let _ = out_tx.send(Message::Close(Some(close))).await;
    drop(out_tx);
    let _ = writer.await;
    let abort = reader.abort_handle();
    if tokio::time::timeout(std::time::Duration::from_secs(10), reader).await.is_err() {
        abort.abort();
    }
}

/// The binary messages of `ws` as a byte stream (the returned end): what
/// SPDY tunnelled in a WebSocket runs on.
pub fn byte_stream(ws: Ws) -> DuplexStream {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (mut rd, mut wr) = tokio::io::split(ours);
    let (mut sink, mut source) = ws.split();
    tokio::spawn(async move {
        while let Some(Ok(m)) = source.next().await {
            match m {
                Message::Binary(d) if wr.write_all(&d).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = wr.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        while let Ok(n @ 1..) = rd.read(&mut buf).await {
            if sink.send(Message::Binary(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    theirs
}

/// Splits `ws`: its reading half, and a bounded queue whose task sends
/// each message and closes the socket once every sender is gone (the
/// bound makes a slow client stall its producers, not grow memory).
fn split_with_writer(
    ws: Ws,
) -> (futures_util::stream::SplitStream<Ws>, mpsc::Sender<Message>, tokio::task::JoinHandle<()>) {
    let (mut sink, source) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    (source, out_tx, writer)
}
