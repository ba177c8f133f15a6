//! port-forward (kubelet's `portforward`): over SPDY, `portforward.k8s.io`,
//! each forwarded connection is a pair of streams the client opens with the
//! same `requestID` and `port` headers, `streamType: error` and
//! `streamType: data`; the bytes go both ways on the data stream, a failure
//! is written as text on the error stream. crictl's `--transport websocket`
//! tunnels that same SPDY session in a WebSocket
//! (`SPDY/3.1+portforward.k8s.io`). kubelet's older WebSocket protocol,
//! `v4.channel.k8s.io` with the ports in the query (`?port=80&port=443`),
//! is served too (see [`super::ws::portforward_channels`]).

use std::collections::HashMap;
use std::sync::Arc;

use hyper::StatusCode;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::remotecommand::{negotiate, spdy_switching};
use super::spdy::{self, IncomingStream, Sender};
use super::{HttpResponse, SessionCtx, Streamer, Upgrade, header_list, text};

pub const PROTOCOL: &str = "portforward.k8s.io";
pub const WS_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
/// Requests with one stream of their pair opened, at most.
const MAX_HALF_PAIRS: usize = 128;

pub fn serve(
    mut req: hyper::Request<Incoming>,
    upgrade: Upgrade,
    pod: String,
    streamer: Arc<dyn Streamer>,
    ctx: SessionCtx,
) -> HttpResponse {
    match upgrade {
        Upgrade::WebSocket => match super::ws::accept(&mut req, &[WS_TUNNEL, super::ws::V4]) {
            Err(refusal) => *refusal,
            Ok((resp, WS_TUNNEL)) => {
                let limits = ctx.spdy;
                super::ws::on_upgrade(&mut req, ctx, move |ws| {
                    session(super::ws::byte_stream(ws), pod, streamer, limits)
                });
                resp
            }
            Ok((resp, _)) => match query_ports(req.uri().query().unwrap_or_default()) {
                Err(e) => text(StatusCode::BAD_REQUEST, e),
                Ok(ports) => {
                    super::ws::on_upgrade(&mut req, ctx, move |ws| {
                        super::ws::portforward_channels(ws, pod, ports, streamer)
                    });
                    resp
                }
            },
        },
        Upgrade::Spdy => {
            let offered = header_list(&req, "x-stream-protocol-version");
            if negotiate(&offered, &[PROTOCOL]).is_none() {
                return text(
                    StatusCode::FORBIDDEN,
                    format!("unable to upgrade: client supports {offered:?}, server supports [{PROTOCOL:?}]"),
                );
            }
            let upgraded = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                match upgraded.await {
                    Ok(u) => session(ctx.wrap(TokioIo::new(u)), pod, streamer, ctx.spdy).await,
                    Err(e) => tracing::debug!("SPDY upgrade: {e}"),
                }
                drop(ctx);
            });
            spdy_switching(PROTOCOL)
        }
    }
}

/// The ports of a WebSocket port-forward (`port=N`, repeated): each takes
/// two channels of one byte, so at most 127.
pub fn query_ports(query: &str) -> Result<Vec<u16>, String> {
    let ports: Vec<u16> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "port")
        .map(|(_, v)| match v.parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(format!("port {v:?} is not 1-65535")),
        })
        .collect::<Result<_, _>>()?;
    match ports.len() {
        0 => Err("query parameter \"port\" is required".into()),
        1..=127 => Ok(ports),
        n => Err(format!("{n} ports: at most 127 per connection")),
    }
}

/// The two streams of one forwarded connection, as they arrive.
#[derive(Default)]
struct Pair {
    error: Option<IncomingStream>,
    data: Option<IncomingStream>,
}

async fn session<IO>(io: IO, pod: String, streamer: Arc<dyn Streamer>, limits: spdy::SessionLimits)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let spdy::Session { out, mut incoming, task, .. } = spdy::serve_session(io, limits);
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut forwards = tokio::task::JoinSet::new();
    while let Some(s) = incoming.recv().await {
        while forwards.try_join_next().is_some() {}
        let Some(request_id) = s.header("requestid").map(str::to_string) else {
            refuse(&out, &s).await;
            continue;
        };
        // Half pairs wait for their other stream; a client cannot make
        // them pile up without bound.
        if !pairs.contains_key(&request_id) && pairs.len() >= MAX_HALF_PAIRS {
            refuse(&out, &s).await;
            continue;
        }
        let pair = pairs.entry(request_id.clone()).or_default();
        let slot = match s.header("streamtype") {
            Some("error") => &mut pair.error,
            Some("data") => &mut pair.data,
            _ => {
                refuse(&out, &s).await;
                continue;
            }
        };
        if slot.is_some() {
            refuse(&out, &s).await;
            continue;
        }
        *slot = Some(s);
        let complete = pair.error.is_some() && pair.data.is_some();
        if complete && let Some(Pair { error: Some(error), data: Some(data) }) = pairs.remove(&request_id) {
            forwards.spawn(forward(pod.clone(), error, data, out.clone(), streamer.clone()));
        }
    }
    // The client is gone (or idle too long): so are its connections, even
    // those whose target would keep them open.
    forwards.shutdown().await;
    drop(out);
    let _ = task.await;
}

async fn refuse(out: &Sender, s: &IncomingStream) {
    let _ = out.frame(spdy::Frame::RstStream { stream_id: s.id, status: spdy::RST_REFUSED_STREAM }).await;
}

/// Forwards one connection; a failure is written on the error stream.
async fn forward(pod: String, error: IncomingStream, data: IncomingStream, out: Sender, streamer: Arc<dyn Streamer>) {
    // The error stream is only written to (the client closes its side):
    // what the client sends there is dropped.
    let IncomingStream { id: error_id, open: _error_open, .. } = error;
    let port = data.header("port").unwrap_or_default().to_string();
    let result = match port.parse::<u16>() {
        Ok(p) if p > 0 => pump(&pod, p, data, &out, &*streamer).await,
        _ => {
            let _ = out.fin(data.id).await;
            Err(format!("invalid port {port:?}: must be 1-65535"))
        }
    };
    if let Err(e) = result {
        let msg = format!("error forwarding port {port} to pod {pod}: {e}");
        tracing::info!("{msg}");
        let _ = out.data(error_id, msg.as_bytes()).await;
    }
    let _ = out.fin(error_id).await;
}

async fn pump(pod: &str, port: u16, data: IncomingStream, out: &Sender, streamer: &dyn Streamer) -> Result<(), String> {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (mut rd, mut wr) = tokio::io::split(ours);
    let mut rx = data.rx;
    let to_target = tokio::spawn(async move {
        while let Some(d) = rx.recv().await {
            if wr.write_all(&d).await.is_err() {
                return;
            }
        }
        // The client's FIN: half-close towards the target.
        let _ = wr.shutdown().await;
    });
    let id = data.id;
    let from_target = async move {
        let mut buf = vec![0u8; 32 * 1024];
        while let Ok(n @ 1..) = rd.read(&mut buf).await {
            if out.data(id, &buf[..n]).await.is_err() {
                return;
            }
        }
        let _ = out.fin(id).await;
        // The target is done: so is the connection, as in containerd.
        // The client waits for the error stream before it closes its side.
        to_target.abort();
    };
    let (res, ()) = tokio::join!(streamer.port_forward(pod, port, theirs), from_target);
    res.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_ports_are_checked() {
        assert_eq!(query_ports("port=80&x=1&port=443").unwrap(), [80, 443]);
        assert!(query_ports("").unwrap_err().contains("\"port\" is required"));
        assert!(query_ports("port=0").unwrap_err().contains("\"0\" is not 1-65535"));
        assert!(query_ports("port=http").unwrap_err().contains("\"http\""));
        let many = vec!["port=1"; 128].join("&");
        assert!(query_ports(&many).unwrap_err().contains("at most 127"));
    }
}
