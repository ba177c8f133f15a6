//! Serving the CRI services on the socket until a shutdown signal.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use berth_cri_api::v1::image_service_server::ImageServiceServer;
use berth_cri_api::v1::runtime_service_server::RuntimeServiceServer;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tower::Service;

use crate::image::ImageService;
use crate::runtime::{Daemon, RuntimeService};

/// Serves both CRI services on `listener` until `shutdown` completes;
/// calls in flight are finished first.
pub async fn serve(
    daemon: Arc<Daemon>,
    listener: tokio::net::UnixListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    crate::events::spawn(&daemon);
    tonic::transport::Server::builder()
        .add_service(UnknownRpc(RuntimeServiceServer::new(RuntimeService(daemon.clone()))))
        .add_service(UnknownRpc(ImageServiceServer::new(ImageService::new(&daemon))))
        .serve_with_incoming_shutdown(tokio_stream::wrappers::UnixListenerStream::new(listener), shutdown)
        .await
}

/// Names the RPC in the UNIMPLEMENTED answer tonic gives for a method the
/// bindings do not know (the CRI's newer RPCs, such as StreamContainers),
/// which otherwise has no message at all; and answers a call whose
/// client deadline (`grpc-timeout`) passes with DEADLINE_EXCEEDED, as
/// gRPC servers do: tonic's own deadline answers CANCELLED, which the
/// client sees instead of its own DEADLINE_EXCEEDED whenever the server's
/// answer arrives first (critest checks the code). Ours is taken a moment
/// before tonic's (it calls this service first) and this service is
/// polled first, so ours answers.
#[derive(Clone)]
struct UnknownRpc<S>(S);

impl<S: NamedService> NamedService for UnknownRpc<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for UnknownRpc<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let rpc = req.uri().path().rsplit('/').next().unwrap_or_default().to_string();
        let deadline =
            req.headers().get("grpc-timeout").and_then(grpc_timeout).map(|t| tokio::time::Instant::now() + t);
        let answer = self.0.call(req);
        Box::pin(async move {
            let mut resp = match deadline {
                None => answer.await?,
                Some(at) => match tokio::time::timeout_at(at, answer).await {
                    Ok(resp) => resp?,
                    Err(_) => {
                        return Ok(tonic::Status::deadline_exceeded(format!("{rpc}: deadline exceeded")).into_http());
                    }
                },
            };
            let headers = resp.headers_mut();
            let unimplemented = headers.get("grpc-status").is_some_and(|v| v == "12");
            if unimplemented
                && !headers.contains_key("grpc-message")
                && let Ok(v) = http::HeaderValue::from_str(&format!("{rpc}: not yet implemented in berthd"))
            {
                headers.insert("grpc-message", v);
            }
            Ok(resp)
        })
    }
}

/// The duration of a `grpc-timeout` header: up to 8 digits and a unit
/// (H, M, S, m, u, n), as the gRPC HTTP/2 protocol defines it.
fn grpc_timeout(v: &http::HeaderValue) -> Option<std::time::Duration> {
    use std::time::Duration;
    let v = v.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn grpc_timeout_headers_parse_as_the_protocol_defines() {
        let t = |s: &str| grpc_timeout(&http::HeaderValue::from_str(s).unwrap());
        assert_eq!(t("1m"), Some(Duration::from_millis(1)));
        assert_eq!(t("999u"), Some(Duration::from_micros(999)));
        assert_eq!(t("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(t("30S"), Some(Duration::from_secs(30)));
        assert_eq!(t("5n"), Some(Duration::from_nanos(5)));
        assert_eq!(t("123456789S"), None, "at most 8 digits");
        assert_eq!(t("m"), None);
        assert_eq!(t("10x"), None);
        assert_eq!(t("-1S"), None);
        assert_eq!(t(""), None);
    }

    /// A call still running at the client's deadline is answered
    /// DEADLINE_EXCEEDED (tonic alone answers CANCELLED).
    #[tokio::test]
    async fn a_call_past_its_deadline_is_deadline_exceeded() {
        let never = tower::service_fn(|_: http::Request<Body>| {
            std::future::pending::<Result<http::Response<Body>, Infallible>>()
        });
        let mut svc = UnknownRpc(never);
        let req = http::Request::builder()
            .uri("/runtime.v1.ImageService/PullImage")
            .header("grpc-timeout", "50m")
            .body(Body::empty())
            .unwrap();
        let resp = tokio::time::timeout(std::time::Duration::from_secs(5), svc.call(req))
            .await
            .expect("no answer 5 s after the deadline")
            .unwrap();
        assert_eq!(resp.headers().get("grpc-status").map(|v| v.as_bytes()), Some(&b"4"[..]), "{resp:?}");
    }
}
