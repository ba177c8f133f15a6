//! SPDY/3.1 framing and a small server-side session, enough for the
//! Kubernetes streaming protocols (client-go's `httpstream/spdy`, built on
//! moby/spdystream).
//!
//! Hand-written because no maintained Rust crate speaks SPDY/3.1 (it was
//! superseded by HTTP/2, but kubectl, crictl and the kubelet still use it
//! for exec, attach and port-forward). Header blocks are zlib streams, one
//! per direction for the whole session, with SPDY/3's preset dictionary.
//!
//! Flow control: berthd announces a receive window ([`RECV_WINDOW`]) and
//! sends WINDOW_UPDATE for data only as its consumer takes it, so a client
//! that honours windows never makes berthd buffer more than that per
//! stream nor stalls the session. spdystream (kubectl, crictl) ignores
//! windows both ways: berthd then stops reading the connection when one
//! stream holds [`RECV_WINDOW`] unconsumed (bounded, not unbounded). For
//! what berthd sends, it honours the peer's windows (per stream and, as
//! SPDY/3.1 adds, per session) once the peer shows it speaks flow control
//! (a SETTINGS INITIAL_WINDOW_SIZE or a WINDOW_UPDATE): spdystream never
//! sends either and would stall at 64 KiB if it were held to one; its
//! output is bounded by TCP's backpressure and [`STREAM_BUFFER`] frames.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status as ZStatus};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};

pub const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;
const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;
/// RST_STREAM status: the stream is refused (bad headers, too many).
pub const RST_REFUSED_STREAM: u32 = 3;
/// SETTINGS ID of the initial window of new streams.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;
/// The window every stream and the session start with (SPDY/3.1).
pub const DEFAULT_WINDOW: u32 = 64 * 1024;
/// The receive window berthd announces for each stream: what one stream
/// may hold unconsumed before berthd stops reading the connection.
pub const RECV_WINDOW: u32 = 128 * 1024;
/// A frame larger than this is refused: Kubernetes' peers write at most
/// 32 KiB of data per frame, and header blocks are tiny.
pub const MAX_FRAME: usize = 1 << 20;
/// The most header bytes a block may inflate to (a zlib bomb stops here).
const MAX_HEADER_BLOCK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("SPDY connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("SPDY protocol error: {0}")]
    Protocol(String),
}

fn proto(msg: impl Into<String>) -> SpdyError {
    SpdyError::Protocol(msg.into())
}

/// A header block: lower-case names, values (several joined by NUL on the
/// wire, kept split here).
pub type Headers = Vec<(String, String)>;

/// One frame, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame of a type SPDY/3.1 does not define: skipped, as the
    /// spec asks.
    Unknown {
        frame_type: u16,
    },
}

/// The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1):
/// the words of HTTP headers, each with a 4-byte big-endian length, then
/// a run of common values. Built once from the spec's lists.
pub fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &str = "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505\
            203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized\
            403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable\
            Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT\
            chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,\
            text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";
        let mut d = Vec::with_capacity(1423);
        for w in WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(TAIL.as_bytes());
        d
    })
}

/// Compresses header blocks: one zlib stream per session and direction.
pub struct HeaderEncoder(Compress);

impl Default for HeaderEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderEncoder {
    pub fn new() -> Self {
        let mut c = Compress::new(Compression::best(), true);
        // A fresh deflate stream always takes a dictionary: cannot fail.
        let _ = c.set_dictionary(dictionary());
        HeaderEncoder(c)
    }

    /// The compressed block for `headers`, ending in a sync flush so the
    /// peer can inflate it alone.
    pub fn encode(&mut self, headers: &[(String, String)]) -> Result<Vec<u8>, SpdyError> {
        let raw = raw_header_block(headers);
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        loop {
            out.reserve(256);
            let before = self.0.total_in();
            let status = self
                .0
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| proto(format!("compress headers: {e}")))?;
            input = &input[(self.0.total_in() - before) as usize..];
            // Done when all input is taken and deflate left spare room
            // (a sync flush that filled the buffer may have more to say).
            if input.is_empty() && out.len() < out.capacity() && status != ZStatus::BufError {
                return Ok(out);
            }
        }
    }
}

fn raw_header_block(headers: &[(String, String)]) -> Vec<u8> {
    // Values of one name are joined with NUL, names lower-cased (the spec
    // refuses upper-case names).
    let mut merged: Vec<(String, String)> = Vec::new();
    for (k, v) in headers {
        let k = k.to_ascii_lowercase();
        match merged.iter_mut().find(|(n, _)| *n == k) {
            Some((_, val)) => {
                val.push('\0');
                val.push_str(v);
            }
            None => merged.push((k, v.clone())),
        }
    }
    let mut raw = Vec::new();
    raw.extend_from_slice(&(merged.len() as u32).to_be_bytes());
    for (k, v) in &merged {
        raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
        raw.extend_from_slice(k.as_bytes());
        raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
        raw.extend_from_slice(v.as_bytes());
    }
    raw
}

/// Inflates header blocks: the peer's one zlib stream for the session.
pub struct HeaderDecoder(Decompress);

impl Default for HeaderDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderDecoder {
    pub fn new() -> Self {
        HeaderDecoder(Decompress::new(true))
    }

    pub fn decode(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let raw = self.inflate(block)?;
        parse_raw_header_block(&raw)
    }

    fn inflate(&mut self, block: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        loop {
            out.reserve(1024);
            let before = self.0.total_in();
            let res = self.0.decompress_vec(input, &mut out, FlushDecompress::Sync);
            input = &input[(self.0.total_in() - before) as usize..];
            match res {
                Ok(_) => {}
                // The zlib header names a preset dictionary: SPDY's.
                Err(e) if e.needs_dictionary().is_some() => {
                    self.0.set_dictionary(dictionary()).map_err(|e| proto(format!("header dictionary: {e}")))?;
                }
                Err(e) => return Err(proto(format!("inflate headers: {e}"))),
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(proto("header block inflates to more than 64 KiB"));
            }
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

fn parse_raw_header_block(raw: &[u8]) -> Result<Headers, SpdyError> {
    let mut r = raw;
    let mut take = |n: usize| -> Result<&[u8], SpdyError> {
        if r.len() < n {
            return Err(proto("header block is truncated"));
        }
        let (a, b) = r.split_at(n);
        r = b;
        Ok(a)
    };
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let count = be32(take(4)?);
    let mut headers = Vec::new();
    for _ in 0..count {
        let n = be32(take(4)?);
        let name = String::from_utf8_lossy(take(n)?).into_owned();
        let n = be32(take(4)?);
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(proto(format!("header name {name:?} is empty or not lower-case")));
        }
        for v in value.split('\0') {
            headers.push((name.clone(), v.to_string()));
        }
    }
    Ok(headers)
}

/// The first value of `name` (lower-case) in `headers`.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn control(frame_type: u16, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + body.len());
    f.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    f.extend_from_slice(&frame_type.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(body);
    f
}

/// The bytes of `frame` on the wire.
pub fn encode(frame: &Frame, enc: &mut HeaderEncoder) -> Result<Vec<u8>, SpdyError> {
    let sid = |id: u32| (id & 0x7fff_ffff).to_be_bytes();
    Ok(match frame {
        Frame::SynStream { stream_id, associated_to, priority, flags, headers } => {
            let mut b = sid(*stream_id).to_vec();
            b.extend_from_slice(&sid(*associated_to));
            b.push(priority << 5);
            b.push(0); // credential slot
            b.extend_from_slice(&enc.encode(headers)?);
            control(TYPE_SYN_STREAM, *flags, &b)
        }
        Frame::SynReply { stream_id, flags, headers } => {
            let mut b = sid(*stream_id).to_vec();
            b.extend_from_slice(&enc.encode(headers)?);
            control(TYPE_SYN_REPLY, *flags, &b)
        }
        Frame::Headers { stream_id, flags, headers } => {
            let mut b = sid(*stream_id).to_vec();
            b.extend_from_slice(&enc.encode(headers)?);
            control(TYPE_HEADERS, *flags, &b)
        }
        Frame::RstStream { stream_id, status } => {
            control(TYPE_RST_STREAM, 0, &[sid(*stream_id), status.to_be_bytes()].concat())
        }
        Frame::Settings { flags, entries } => {
            let mut b = (entries.len() as u32).to_be_bytes().to_vec();
            for (f, id, v) in entries {
                b.push(*f);
                b.extend_from_slice(&id.to_be_bytes()[1..]);
                b.extend_from_slice(&v.to_be_bytes());
            }
            control(TYPE_SETTINGS, *flags, &b)
        }
        Frame::Ping { id } => control(TYPE_PING, 0, &id.to_be_bytes()),
        Frame::GoAway { last_good_stream_id, status } => {
            control(TYPE_GOAWAY, 0, &[sid(*last_good_stream_id), status.to_be_bytes()].concat())
        }
        Frame::WindowUpdate { stream_id, delta } => {
            control(TYPE_WINDOW_UPDATE, 0, &[sid(*stream_id), (delta & 0x7fff_ffff).to_be_bytes()].concat())
        }
        Frame::Data { stream_id, flags, data } => {
            if data.len() > 0xff_ffff {
                return Err(proto("data frame longer than 2^24-1 bytes"));
            }
            let mut f = Vec::with_capacity(8 + data.len());
            f.extend_from_slice(&sid(*stream_id));
            f.push(*flags);
            f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
            f.extend_from_slice(data);
            f
        }
        Frame::Unknown { frame_type } => return Err(proto(format!("cannot write unknown frame type {frame_type}"))),
    })
}

fn be32(b: &[u8], at: usize) -> Result<u32, SpdyError> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| proto("control frame is too short"))
}

/// Reads one frame; `Ok(None)` at a clean end of the connection.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, dec: &mut HeaderDecoder) -> Result<Option<Frame>, SpdyError> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let flags = head[4];
    let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    if len > MAX_FRAME {
        return Err(proto(format!("frame of {len} bytes is larger than {MAX_FRAME}")));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    if head[0] & 0x80 == 0 {
        let stream_id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        return Ok(Some(Frame::Data { stream_id, flags, data: Bytes::from(body) }));
    }
    let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
    if version != VERSION {
        return Err(proto(format!("SPDY version {version} (only 3 is spoken)")));
    }
    decode_control(u16::from_be_bytes([head[2], head[3]]), flags, &body, dec).map(Some)
}

fn decode_control(frame_type: u16, flags: u8, b: &[u8], dec: &mut HeaderDecoder) -> Result<Frame, SpdyError> {
    let sid = |at| be32(b, at).map(|v| v & 0x7fff_ffff);
    Ok(match frame_type {
        TYPE_SYN_STREAM => {
            if b.len() < 10 {
                return Err(proto("SYN_STREAM is too short"));
            }
            Frame::SynStream {
                stream_id: sid(0)?,
                associated_to: sid(4)?,
                priority: b[8] >> 5,
                flags,
                headers: dec.decode(&b[10..])?,
            }
        }
        TYPE_SYN_REPLY => Frame::SynReply { stream_id: sid(0)?, flags, headers: dec.decode(&b[4..])? },
        TYPE_HEADERS => Frame::Headers { stream_id: sid(0)?, flags, headers: dec.decode(&b[4..])? },
        TYPE_RST_STREAM => Frame::RstStream { stream_id: sid(0)?, status: be32(b, 4)? },
        TYPE_SETTINGS => {
            let n = be32(b, 0)? as usize;
            if b.len() != 4 + n * 8 {
                return Err(proto("SETTINGS length does not match its entry count"));
            }
            let entries = b[4..]
                .chunks_exact(8)
                .map(|e| {
                    (e[0], u32::from_be_bytes([0, e[1], e[2], e[3]]), u32::from_be_bytes([e[4], e[5], e[6], e[7]]))
                })
                .collect();
            Frame::Settings { flags, entries }
        }
        TYPE_PING => Frame::Ping { id: be32(b, 0)? },
        TYPE_GOAWAY => Frame::GoAway { last_good_stream_id: sid(0)?, status: be32(b, 4)? },
        TYPE_WINDOW_UPDATE => Frame::WindowUpdate { stream_id: sid(0)?, delta: sid(4)? },
        other => Frame::Unknown { frame_type: other },
    })
}

/// A stream the client opened, as the session hands it out.
pub struct IncomingStream {
    pub id: u32,
    pub headers: Headers,
    /// The client's data; closed at its FIN or RST_STREAM.
    pub rx: DataRx,
    pub out: Sender,
    /// Counts the stream as open (against the session's cap) while held.
    pub open: OpenStream,
}

/// A stream counted as open while this lives.
pub struct OpenStream(Arc<AtomicUsize>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The client's data on one stream: each piece holds its part of the
/// stream's window until taken, and taking it opens the window again.
pub struct DataRx {
    id: u32,
    rx: mpsc::UnboundedReceiver<(Bytes, OwnedSemaphorePermit)>,
    out: Sender,
    consumed: u32,
}

impl DataRx {
    /// The next piece of data; `None` at the client's FIN or RST_STREAM.
    pub async fn recv(&mut self) -> Option<Bytes> {
        let (data, permit) = self.rx.recv().await?;
        drop(permit);
        self.consumed += data.len() as u32;
        // Updates in batches of half a window, as HTTP/2 peers do.
        if self.consumed >= RECV_WINDOW / 2 {
            let delta = std::mem::take(&mut self.consumed);
            for stream_id in [self.id, 0] {
                let _ = self.out.frame(Frame::WindowUpdate { stream_id, delta }).await;
            }
        }
        Some(data)
    }
}

impl IncomingStream {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// Writes frames of one session (cloneable, for every stream).
#[derive(Clone)]
pub struct Sender {
    tx: mpsc::Sender<Frame>,
    windows: Arc<SendWindows>,
}

impl Sender {
    /// Sends `data` on stream `id`, in frames of at most 32 KiB, within
    /// the peer's windows when it keeps them.
    pub async fn data(&self, id: u32, data: &[u8]) -> Result<(), SpdyError> {
        let mut rest = data;
        while !rest.is_empty() {
            let n = self.windows.take(id, rest.len().min(32 * 1024)).await?;
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            self.frame(Frame::Data { stream_id: id, flags: 0, data: Bytes::copy_from_slice(chunk) }).await?;
        }
        Ok(())
    }

    /// Half-closes stream `id` (an empty data frame with FIN).
    pub async fn fin(&self, id: u32) -> Result<(), SpdyError> {
        self.windows.forget(id);
        self.frame(Frame::Data { stream_id: id, flags: FLAG_FIN, data: Bytes::new() }).await
    }

    pub async fn frame(&self, f: Frame) -> Result<(), SpdyError> {
        self.tx.send(f).await.map_err(|_| proto("the connection is closed"))
    }
}

/// The peer's receive windows: what berthd may still send.
#[derive(Default)]
struct SendWindows {
    state: Mutex<WindowState>,
    changed: Notify,
}

struct WindowState {
    /// The peer announced flow control: hold berthd to its windows.
    enforced: bool,
    closed: bool,
    initial: i64,
    session: i64,
    streams: HashMap<u32, i64>,
}

impl Default for WindowState {
    fn default() -> Self {
        let w = i64::from(DEFAULT_WINDOW);
        WindowState { enforced: false, closed: false, initial: w, session: w, streams: HashMap::new() }
    }
}

impl SendWindows {
    fn lock(&self) -> std::sync::MutexGuard<'_, WindowState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes up to `want` bytes of window for stream `id`, waiting for a
    /// WINDOW_UPDATE when none is left.
    async fn take(&self, id: u32, want: usize) -> Result<usize, SpdyError> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                if st.closed {
                    return Err(proto("the connection is closed"));
                }
                let initial = st.initial;
                let stream = *st.streams.entry(id).or_insert(initial);
                let avail = st.session.min(stream);
                let n = if st.enforced { (avail.max(0) as usize).min(want) } else { want };
                if n > 0 {
                    st.session -= n as i64;
                    st.streams.insert(id, stream - n as i64);
                    return Ok(n);
                }
            }
            notified.await;
        }
    }

    fn forget(&self, id: u32) {
        self.lock().streams.remove(&id);
    }

    fn update(&self, f: impl FnOnce(&mut WindowState)) {
        f(&mut self.lock());
        self.changed.notify_waiters();
    }
}

/// Limits of one session.
#[derive(Clone, Copy, Debug)]
pub struct SessionLimits {
    /// Streams open at once; more are refused.
    pub max_streams: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits { max_streams: 100 }
    }
}

/// Frames buffered per stream before the reader waits for its consumer.
const STREAM_BUFFER: usize = 64;

/// A server-side session (see [`serve_session`]).
pub struct Session {
    /// Writes frames.
    pub out: Sender,
    /// The streams the client opens; dropping it refuses later ones.
    pub incoming: mpsc::Receiver<IncomingStream>,
    /// Ends when the connection is over both ways.
    pub task: tokio::task::JoinHandle<()>,
    /// Turns true when the client's side of the connection ends: it left.
    pub closed: watch::Receiver<bool>,
}

/// Runs a server-side session on `io`: answers every SYN_STREAM with a
/// SYN_REPLY and hands the stream out, routes data frames to their
/// stream, answers PINGs.
pub fn serve_session<IO>(io: IO, limits: SessionLimits) -> Session
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let (out_tx, mut out_rx) = mpsc::channel::<Frame>(STREAM_BUFFER);
    let (new_tx, new_rx) = mpsc::channel(16);
    let sender = Sender { tx: out_tx, windows: Arc::default() };
    let writer = tokio::spawn(async move {
        let mut enc = HeaderEncoder::new();
        while let Some(f) = out_rx.recv().await {
            let Ok(bytes) = encode(&f, &mut enc) else { break };
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
            // Batch what is queued, then flush once.
            if out_rx.is_empty() && wr.flush().await.is_err() {
                break;
            }
        }
        let _ = wr.flush().await;
        let _ = wr.shutdown().await;
    });
    let reader_sender = sender.clone();
    let (closed_tx, closed) = watch::channel(false);
    let task = tokio::spawn(async move {
        let windows = reader_sender.windows.clone();
        if let Err(e) = read_loop(&mut rd, reader_sender, new_tx, limits).await {
            tracing::debug!("SPDY session ended: {e}");
        }
        windows.update(|w| w.closed = true);
        let _ = closed_tx.send(true);
        // The writer ends once every Sender is dropped (the streams' too).
        let _ = writer.await;
    });
    Session { out: sender, incoming: new_rx, task, closed }
}

/// Where the data of a stream the client still sends on goes.
struct StreamIn {
    tx: mpsc::UnboundedSender<(Bytes, OwnedSemaphorePermit)>,
    /// The stream's receive window, in bytes.
    window: Arc<Semaphore>,
}

async fn read_loop<R: AsyncRead + Unpin>(
    rd: &mut R,
    out: Sender,
    new_streams: mpsc::Sender<IncomingStream>,
    limits: SessionLimits,
) -> Result<(), SpdyError> {
    let mut dec = HeaderDecoder::new();
    let mut streams: HashMap<u32, StreamIn> = HashMap::new();
    let open = Arc::new(AtomicUsize::new(0));
    let mut last_id = 0;
    // Our receive window for every stream (the session's stays at the
    // default: each stream's own bounds what berthd holds).
    let entries = vec![(0, SETTINGS_INITIAL_WINDOW_SIZE, RECV_WINDOW)];
    out.frame(Frame::Settings { flags: 0, entries }).await?;
    while let Some(frame) = read_frame(rd, &mut dec).await? {
        match frame {
            Frame::SynStream { stream_id, flags, headers, .. } => {
                // Client streams are odd and increase (spec 2.3.2).
                if stream_id % 2 == 0 || stream_id <= last_id {
                    out.frame(Frame::RstStream { stream_id, status: 1 }).await?;
                    continue;
                }
                last_id = stream_id;
                if open.load(Ordering::Relaxed) >= limits.max_streams {
                    tracing::info!(stream_id, max = limits.max_streams, "SPDY: too many open streams; refused");
                    out.frame(Frame::RstStream { stream_id, status: RST_REFUSED_STREAM }).await?;
                    continue;
                }
                open.fetch_add(1, Ordering::Relaxed);
                let open = OpenStream(open.clone());
                out.frame(Frame::SynReply { stream_id, flags: 0, headers: Vec::new() }).await?;
                let (tx, rx) = mpsc::unbounded_channel();
                if flags & FLAG_FIN == 0 {
                    let window = Arc::new(Semaphore::new(RECV_WINDOW as usize));
                    streams.insert(stream_id, StreamIn { tx, window });
                }
                let rx = DataRx { id: stream_id, rx, out: out.clone(), consumed: 0 };
                let s = IncomingStream { id: stream_id, headers, rx, out: out.clone(), open };
                if new_streams.send(s).await.is_err() {
                    out.frame(Frame::RstStream { stream_id, status: RST_REFUSED_STREAM }).await?;
                }
            }
            Frame::Data { stream_id, flags, data } => {
                if let Some(s) = streams.get(&stream_id)
                    && !data.is_empty()
                    && !s.tx.is_closed()
                {
                    // Within our window this never waits; a client that
                    // ignores it waits here for its consumer (bounded).
                    let n = data.len().min(RECV_WINDOW as usize) as u32;
                    if let Ok(permit) = s.window.clone().acquire_many_owned(n).await {
                        // A consumer that went away just loses the data.
                        let _ = s.tx.send((data, permit));
                    }
                }
                if flags & FLAG_FIN != 0 {
                    streams.remove(&stream_id);
                }
            }
            Frame::RstStream { stream_id, .. } => {
                streams.remove(&stream_id);
                out.windows.forget(stream_id);
            }
            Frame::Ping { id } => out.frame(Frame::Ping { id }).await?,
            Frame::GoAway { .. } => break,
            Frame::WindowUpdate { stream_id, delta } => out.windows.update(|w| {
                w.enforced = true;
                if stream_id == 0 {
                    w.session += i64::from(delta);
                } else {
                    let initial = w.initial;
                    *w.streams.entry(stream_id).or_insert(initial) += i64::from(delta);
                }
            }),
            Frame::Settings { entries, .. } => {
                for (_, id, value) in entries {
                    if id == SETTINGS_INITIAL_WINDOW_SIZE {
                        out.windows.update(|w| {
                            let change = i64::from(value) - w.initial;
                            w.enforced = true;
                            w.initial = i64::from(value);
                            w.streams.values_mut().for_each(|s| *s += change);
                        });
                    }
                }
            }
            Frame::SynReply { .. } | Frame::Headers { .. } | Frame::Unknown { .. } => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_dictionary_is_the_specs() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\0\0\0\x07options");
        assert!(d.ends_with(b"utf-,*,enq=0."));
        // zlib names a preset dictionary by its Adler-32: this is the
        // DICTID every SPDY/3 peer puts in its first header block.
        let mut c = Compress::new(Compression::best(), true);
        assert_eq!(c.set_dictionary(d).unwrap(), 0xe3c6a7c2);
    }

    #[tokio::test]
    async fn every_frame_reads_back_as_written() {
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: h(&[("streamtype", "error"), ("port", "80")]),
            },
            Frame::SynReply { stream_id: 1, flags: 0, headers: Vec::new() },
            Frame::SynStream {
                stream_id: 3,
                associated_to: 0,
                priority: 7,
                flags: FLAG_FIN,
                headers: h(&[("streamtype", "stdout"), ("x", "a"), ("x", "b")]),
            },
            Frame::Headers { stream_id: 3, flags: 0, headers: h(&[("k", "v")]) },
            Frame::Data { stream_id: 3, flags: 0, data: Bytes::from_static(b"hello") },
            Frame::Data { stream_id: 3, flags: FLAG_FIN, data: Bytes::new() },
            Frame::RstStream { stream_id: 5, status: RST_REFUSED_STREAM },
            Frame::Settings { flags: 1, entries: vec![(0, 7, 65536), (1, 4, 100)] },
            Frame::Ping { id: 7 },
            Frame::WindowUpdate { stream_id: 3, delta: 4096 },
            Frame::GoAway { last_good_stream_id: 3, status: 0 },
        ];
        let mut enc = HeaderEncoder::new();
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend(encode(f, &mut enc).unwrap());
        }
        let mut dec = HeaderDecoder::new();
        let mut r = &wire[..];
        let mut got = Vec::new();
        while let Some(f) = read_frame(&mut r, &mut dec).await.unwrap() {
            got.push(f);
        }
        assert_eq!(got, frames);
    }

    #[tokio::test]
    async fn known_bytes_of_a_ping_and_a_data_frame() {
        // Layouts from the spec: control bit + version 3 + type 6, no
        // flags, length 4, the ID; a data frame: stream ID, flags, length.
        let mut enc = HeaderEncoder::new();
        assert_eq!(encode(&Frame::Ping { id: 1 }, &mut enc).unwrap(), [0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]);
        let data = Frame::Data { stream_id: 5, flags: FLAG_FIN, data: Bytes::from_static(b"ab") };
        assert_eq!(encode(&data, &mut enc).unwrap(), [0, 0, 0, 5, 1, 0, 0, 2, b'a', b'b']);
        let mut dec = HeaderDecoder::new();
        let unknown = [0x80, 3, 0, 10, 0, 0, 0, 1, 9];
        assert_eq!(read_frame(&mut &unknown[..], &mut dec).await.unwrap(), Some(Frame::Unknown { frame_type: 10 }));
        let v2 = [0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1];
        let e = read_frame(&mut &v2[..], &mut dec).await.unwrap_err().to_string();
        assert!(e.contains("SPDY version 2"), "{e}");
    }

    #[test]
    fn header_blocks_use_the_dictionary_and_one_stream_per_direction() {
        let mut enc = HeaderEncoder::new();
        let first = enc.encode(&h(&[("streamtype", "stdin")])).unwrap();
        // zlib header with FDICT set, then the dictionary's Adler-32.
        assert_eq!(first[0], 0x78);
        assert_ne!(first[1] & 0x20, 0, "FDICT flag");
        assert_eq!(&first[2..6], &0xe3c6a7c2u32.to_be_bytes());
        // Later blocks continue the stream: no zlib header again, and a
        // repeat compresses to less.
        let second = enc.encode(&h(&[("streamtype", "stdin")])).unwrap();
        assert!(second.len() < first.len() - 6, "{} vs {}", second.len(), first.len());
        let mut dec = HeaderDecoder::new();
        assert_eq!(dec.decode(&first).unwrap(), h(&[("streamtype", "stdin")]));
        assert_eq!(dec.decode(&second).unwrap(), h(&[("streamtype", "stdin")]));
        // A block out of order is refused, not misread.
        let mut fresh = HeaderDecoder::new();
        assert!(fresh.decode(&second).is_err());
    }

    #[test]
    fn hostile_header_blocks_are_refused() {
        let mut enc = HeaderEncoder::new();
        // Upper-case names are invalid in SPDY/3.
        let mut c = Compress::new(Compression::best(), true);
        c.set_dictionary(dictionary()).unwrap();
        let raw = [&1u32.to_be_bytes()[..], &1u32.to_be_bytes(), b"X", &1u32.to_be_bytes(), b"y"].concat();
        let mut block = Vec::with_capacity(128);
        c.compress_vec(&raw, &mut block, FlushCompress::Sync).unwrap();
        let e = HeaderDecoder::new().decode(&block).unwrap_err().to_string();
        assert!(e.contains("not lower-case"), "{e}");
        // A count larger than the block.
        let raw = [&9u32.to_be_bytes()[..]].concat();
        let mut block = Vec::with_capacity(128);
        let mut c = Compress::new(Compression::best(), true);
        c.set_dictionary(dictionary()).unwrap();
        c.compress_vec(&raw, &mut block, FlushCompress::Sync).unwrap();
        assert!(HeaderDecoder::new().decode(&block).unwrap_err().to_string().contains("truncated"));
        // A block that inflates past the limit (a zlib bomb).
        let big = h(&[("x", &"a".repeat(MAX_HEADER_BLOCK + 1))]);
        let block = enc.encode(&big).unwrap();
        let mut dec = HeaderDecoder::new();
        assert!(dec.decode(&block).unwrap_err().to_string().contains("64 KiB"));
    }
}
