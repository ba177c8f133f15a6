//! exec and attach streams (kubelet's `remotecommand`): the stdio of the
//! process, an error stream that ends with the outcome (for v4 and later
//! a `metav1.Status` JSON, whose `NonZeroExitCode` reason carries the exit
//! code), and with a tty a resize stream of `{"Width":..,"Height":..}`.
//!
//! Over SPDY each of them is a stream with a `streamType` header; over
//! WebSocket (see [`super::ws`]) a channel byte at the start of each
//! message.

use std::sync::Arc;

use hyper::StatusCode;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::spdy::{self, IncomingStream, Sender};
use super::{HttpResponse, Pending, SessionCtx, StreamIo, Streamer, TermSize, Upgrade, header_list, text};

/// The SPDY protocols spoken, best first (v5 differs from v4 only over
/// WebSocket, so a SPDY client offering v5 gets v4).
pub const SPDY_PROTOCOLS: &[&str] = &["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io"];
const PIPE: usize = 64 * 1024;

/// How the outcome is written on the error stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorFormat {
    /// v4 and later: a `metav1.Status` JSON, also on success.
    Status,
    /// v2 and v3: the message of a failure as text, nothing on success.
    Text,
}

/// The outcome of an exec or attach.
pub enum Outcome {
    Exited(i32),
    Failed(String),
}

/// The bytes for the error stream, or none.
pub fn outcome_bytes(o: &Outcome, format: ErrorFormat) -> Vec<u8> {
    let status = match o {
        Outcome::Exited(0) => json!({"metadata": {}, "status": "Success"}),
        Outcome::Exited(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Outcome::Failed(msg) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("Internal error occurred: {msg}"),
            "reason": "InternalError",
            "details": {"causes": [{"message": msg}]},
            "code": 500,
        }),
    };
    match format {
        ErrorFormat::Status => status.to_string().into_bytes(),
        ErrorFormat::Text => match o {
            Outcome::Exited(0) => Vec::new(),
            _ => status["message"].as_str().unwrap_or_default().as_bytes().to_vec(),
        },
    }
}

/// Runs the request on the streamer with `io`; never fails: a failure is
/// the outcome the client reads.
pub async fn run(streamer: &dyn Streamer, p: &Pending, io: StreamIo, resize: mpsc::Receiver<TermSize>) -> Outcome {
    let res = match p {
        Pending::Exec { container_id, cmd, opts } => streamer
            .exec(container_id, cmd, io, opts.tty, resize)
            .await
            .map_err(|e| format!("error executing command in container: {e}")),
        Pending::Attach { container_id, opts } => streamer
            .attach(container_id, io, opts.tty, resize)
            .await
            .map(|()| 0)
            .map_err(|e| format!("error attaching to container: {e}")),
        Pending::PortForward { .. } => Err("not an exec or attach request".to_string()),
    };
    match res {
        Ok(code) => Outcome::Exited(code),
        Err(msg) => {
            tracing::info!("{msg}");
            Outcome::Failed(msg)
        }
    }
}

/// Parses the resize stream: JSON objects, back to back, split anywhere.
pub struct ResizeParser(Vec<u8>);

impl Default for ResizeParser {
    fn default() -> Self {
        Self::new()
    }
}

impl ResizeParser {
    pub fn new() -> Self {
        ResizeParser(Vec::new())
    }

    /// The sizes complete after `data`; garbage ends the stream (`Err`).
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<TermSize>, serde_json::Error> {
        self.0.extend_from_slice(data);
        let mut it = serde_json::Deserializer::from_slice(&self.0).into_iter::<TermSize>();
        let mut sizes = Vec::new();
        let mut used = 0;
        loop {
            match it.next() {
                Some(Ok(s)) => {
                    sizes.push(s);
                    used = it.byte_offset();
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        self.0.drain(..used);
        Ok(sizes)
    }
}

/// The pipes between a transport and the streamer: the streamer's ends go
/// in [`StreamIo`], the transport's are these.
pub struct Pipes {
    pub stdin: Option<DuplexStream>,
    pub stdout: Option<DuplexStream>,
    pub stderr: Option<DuplexStream>,
}

pub fn pipes(opts: &super::StdioOpts) -> (StreamIo, Pipes) {
    let mut io = StreamIo::default();
    let mut ours = Pipes { stdin: None, stdout: None, stderr: None };
    if opts.stdin {
        let (a, b) = tokio::io::duplex(PIPE);
        io.stdin = Some(Box::new(b));
        ours.stdin = Some(a);
    }
    if opts.stdout {
        let (a, b) = tokio::io::duplex(PIPE);
        io.stdout = Some(Box::new(b));
        ours.stdout = Some(a);
    }
    if opts.stderr && !opts.tty {
        let (a, b) = tokio::io::duplex(PIPE);
        io.stderr = Some(Box::new(b));
        ours.stderr = Some(a);
    }
    (io, ours)
}

pub fn opts_of(p: &Pending) -> super::StdioOpts {
    match p {
        Pending::Exec { opts, .. } | Pending::Attach { opts, .. } => *opts,
        Pending::PortForward { .. } => super::StdioOpts::default(),
    }
}

/// Answers the upgrade request and, once upgraded, runs the request.
pub fn serve(
    req: hyper::Request<Incoming>,
    upgrade: Upgrade,
    p: Pending,
    streamer: Arc<dyn Streamer>,
    ctx: SessionCtx,
) -> HttpResponse {
    match upgrade {
        Upgrade::WebSocket => super::ws::serve_remotecommand(req, p, streamer, ctx),
        Upgrade::Spdy => serve_spdy(req, p, streamer, ctx),
    }
}

/// The first protocol of the client's list that the server speaks.
pub fn negotiate<'a>(offered: &[String], supported: &[&'a str]) -> Option<&'a str> {
    offered.iter().find_map(|o| supported.iter().find(|s| **s == o.as_str()).copied())
}

fn serve_spdy(
    mut req: hyper::Request<Incoming>,
    p: Pending,
    streamer: Arc<dyn Streamer>,
    ctx: SessionCtx,
) -> HttpResponse {
    let offered = header_list(&req, "x-stream-protocol-version");
    let Some(proto) = negotiate(&offered, SPDY_PROTOCOLS) else {
        return text(
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {SPDY_PROTOCOLS:?}"
            ),
        );
    };
    let upgraded = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgraded.await {
            Ok(u) => spdy_session(ctx.wrap(TokioIo::new(u)), proto, p, streamer, ctx.spdy).await,
            Err(e) => tracing::debug!("SPDY upgrade: {e}"),
        }
        // The session's place is given back only now.
        drop(ctx);
    });
    spdy_switching(proto)
}

/// The 101 answer to a SPDY upgrade with `protocol`.
pub fn spdy_switching(protocol: &str) -> HttpResponse {
    let mut r = text(StatusCode::SWITCHING_PROTOCOLS, "");
    *r.body_mut() = Default::default();
    let h = r.headers_mut();
    h.remove(hyper::header::CONTENT_TYPE);
    h.insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("Upgrade"));
    h.insert(hyper::header::UPGRADE, hyper::header::HeaderValue::from_static("SPDY/3.1"));
    if let Ok(v) = hyper::header::HeaderValue::from_str(protocol) {
        h.insert("X-Stream-Protocol-Version", v);
    }
    r
}

/// The streams of one request over SPDY, by type.
#[derive(Default)]
struct SpdyStreams {
    error: Option<IncomingStream>,
    stdin: Option<IncomingStream>,
    stdout: Option<IncomingStream>,
    stderr: Option<IncomingStream>,
    resize: Option<IncomingStream>,
}

impl SpdyStreams {
    fn complete(&self, o: &super::StdioOpts, resize: bool) -> bool {
        self.error.is_some()
            && (!o.stdin || self.stdin.is_some())
            && (!o.stdout || self.stdout.is_some())
            && (!o.stderr || o.tty || self.stderr.is_some())
            && (!(o.tty && resize) || self.resize.is_some())
    }

    /// Files `s` under its type; `Err` gives it back when it has none we
    /// expect or it came twice.
    fn file(&mut self, s: IncomingStream) -> Result<(), IncomingStream> {
        let slot = match s.header("streamtype") {
            Some("error") => &mut self.error,
            Some("stdin") => &mut self.stdin,
            Some("stdout") => &mut self.stdout,
            Some("stderr") => &mut self.stderr,
            Some("resize") => &mut self.resize,
            _ => return Err(s),
        };
        if slot.is_some() {
            return Err(s);
        }
        *slot = Some(s);
        Ok(())
    }
}

async fn spdy_session<IO>(
    io: IO,
    proto: &'static str,
    p: Pending,
    streamer: Arc<dyn Streamer>,
    limits: spdy::SessionLimits,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let spdy::Session { out, mut incoming, task: session, mut closed } = spdy::serve_session(io, limits);
    let opts = opts_of(&p);
    let resizes = proto != "v2.channel.k8s.io";
    let mut streams = SpdyStreams::default();
    let collected = tokio::time::timeout(super::STREAM_CREATION_TIMEOUT, async {
        while !streams.complete(&opts, resizes) {
            let s = incoming.recv().await.ok_or("the client closed the connection")?;
            if let Err(s) = streams.file(s) {
                let _ = out.frame(spdy::Frame::RstStream { stream_id: s.id, status: spdy::RST_REFUSED_STREAM }).await;
            }
        }
        Ok::<(), &str>(())
    })
    .await;
    match collected {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return tracing::debug!("exec/attach streams: {e}"),
        Err(_) => return tracing::info!("exec/attach: the client did not open its streams in time"),
    }
    // Streams opened from now on are refused.
    drop(incoming);
    // Only written to: what a client sends on it (or on streams it was
    // not asked for) is dropped, not queued where it would stall the
    // session.
    let Some(IncomingStream { id: error_id, open: _error_open, .. }) = streams.error.take() else { return };
    let format = if proto == "v4.channel.k8s.io" { ErrorFormat::Status } else { ErrorFormat::Text };
    let (io, pipes) = pipes(&opts);
    let (resize_tx, resize_rx) = mpsc::channel(8);
    if let (Some(s), Some(pipe)) = (streams.stdin.take(), pipes.stdin) {
        tokio::spawn(pump_in(s, pipe));
    }
    if let Some(s) = streams.resize.take() {
        tokio::spawn(pump_resize(s, resize_tx));
    }
    let mut outputs = Vec::new();
    for (s, pipe) in [(streams.stdout.take(), pipes.stdout), (streams.stderr.take(), pipes.stderr)] {
        if let (Some(s), Some(pipe)) = (s, pipe) {
            outputs.push(tokio::spawn(pump_out(pipe, out.clone(), s.id)));
        }
    }
    drop(streams);
    let outcome = tokio::select! {
        o = run(&*streamer, &p, io, resize_rx) => o,
        // Dropping the run stops it: the client is gone.
        _ = async { closed.wait_for(|c| *c).await.is_ok() } => {
            tracing::info!("exec/attach: the client left; stopping");
            return finish(out, session).await;
        }
    };
    for o in outputs {
        let _ = o.await;
    }
    let bytes = outcome_bytes(&outcome, format);
    if !bytes.is_empty() {
        let _ = out.data(error_id, &bytes).await;
    }
    let _ = out.fin(error_id).await;
    finish(out, session).await;
}

/// Lets the client read the last frames and close first: closing with its
/// data unread would reset the connection and lose them. A client that
/// stays is cut off after a while.
async fn finish(out: Sender, session: JoinHandle<()>) {
    drop(out);
    let abort = session.abort_handle();
    if tokio::time::timeout(std::time::Duration::from_secs(10), session).await.is_err() {
        abort.abort();
    }
}

/// Client data → the process's stdin; its end (FIN) closes stdin.
pub async fn pump_in(mut s: IncomingStream, mut pipe: DuplexStream) {
    while let Some(d) = s.rx.recv().await {
        if pipe.write_all(&d).await.is_err() {
            return;
        }
    }
    let _ = pipe.shutdown().await;
}

/// The process's output → data frames, then FIN.
pub async fn pump_out(mut pipe: DuplexStream, out: Sender, id: u32) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out.data(id, &buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = out.fin(id).await;
}

pub async fn pump_resize(mut s: IncomingStream, tx: mpsc::Sender<TermSize>) {
    let mut parser = ResizeParser::new();
    while let Some(d) = s.rx.recv().await {
        let Ok(sizes) = parser.push(&d) else {
            tracing::debug!("resize stream: not JSON sizes; ignoring the rest");
            return;
        };
        for s in sizes {
            if tx.send(s).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_kubelets_status() {
        let s: serde_json::Value =
            serde_json::from_slice(&outcome_bytes(&Outcome::Exited(3), ErrorFormat::Status)).unwrap();
        assert_eq!(s["status"], "Failure");
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        let ok: serde_json::Value =
            serde_json::from_slice(&outcome_bytes(&Outcome::Exited(0), ErrorFormat::Status)).unwrap();
        assert_eq!(ok["status"], "Success");
        assert!(outcome_bytes(&Outcome::Exited(0), ErrorFormat::Text).is_empty());
        let failed = outcome_bytes(&Outcome::Failed("container \"x\" not found".into()), ErrorFormat::Text);
        assert_eq!(String::from_utf8(failed).unwrap(), "Internal error occurred: container \"x\" not found");
    }

    #[test]
    fn resizes_split_anywhere_are_read() {
        let mut p = ResizeParser::new();
        assert_eq!(p.push(b"{\"Width\":80,\"He").unwrap(), []);
        let got = p.push(b"ight\":24}{\"Width\":100,\"Height\":30}\n{").unwrap();
        assert_eq!(got, [TermSize { width: 80, height: 24 }, TermSize { width: 100, height: 30 }]);
        assert!(p.push(b"nonsense").is_err());
    }

    #[test]
    fn the_clients_first_spoken_protocol_wins() {
        let offered: Vec<String> =
            ["v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io"].iter().map(|s| s.to_string()).collect();
        assert_eq!(negotiate(&offered, SPDY_PROTOCOLS), Some("v4.channel.k8s.io"));
        assert_eq!(negotiate(&["v9".to_string()], SPDY_PROTOCOLS), None);
    }
}
