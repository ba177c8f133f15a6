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
/// which otherwise has no message at all.
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
        let answer = self.0.call(req);
        Box::pin(async move {
            let mut resp = answer.await?;
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
