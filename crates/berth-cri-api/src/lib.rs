//! The Kubernetes CRI (`runtime.v1`) for berth: messages, tonic servers
//! and clients, and a client over a unix socket.
//!
//! The bindings come from the `k8s-cri` crate (0.11: the cri-api v0.32
//! protos, i.e. Kubernetes 1.32, compiled at its build time with protoc).
//! Everything berth uses goes through this crate, so moving to newer
//! bindings touches nothing else. What cri-api v0.36 (crictl/critest 1.36)
//! adds and these lack: the RPCs `StreamPodSandboxes`, `StreamContainers`,
//! `StreamContainerStats`, `StreamPodSandboxStats`, `StreamPodSandboxMetrics`,
//! `StreamImages` and `UpdatePodSandboxResources` (a server built on them
//! answers UNIMPLEMENTED, after which clients fall back to the List RPCs),
//! and fields a v1.32 decoder skips: `ContainerConfig.stop_signal`,
//! `ContainerStatus.stop_signal`, `Mount.image_sub_path`,
//! `RuntimeHandlerFeatures.user_namespaces_host_network`, PSI and I/O stats.

pub use k8s_cri::v1;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// The cri-api release the bindings were generated from.
pub const CRI_API_VERSION: &str = "v0.32";

/// A gRPC channel to a CRI server on the unix socket `path` (a plain path
/// or `unix://PATH`, as crictl takes endpoints).
pub async fn connect_unix(path: &str) -> Result<Channel, tonic::transport::Error> {
    let path = path.strip_prefix("unix://").unwrap_or(path).to_string();
    // The URI is required by the API but unused: the connector below dials
    // the socket whatever it says.
    Endpoint::from_static("http://berthd.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
}

/// A RuntimeService client on the unix socket `path`.
pub async fn runtime_client(
    path: &str,
) -> Result<v1::runtime_service_client::RuntimeServiceClient<Channel>, tonic::transport::Error> {
    Ok(v1::runtime_service_client::RuntimeServiceClient::new(connect_unix(path).await?))
}

/// An ImageService client on the unix socket `path`.
pub async fn image_client(
    path: &str,
) -> Result<v1::image_service_client::ImageServiceClient<Channel>, tonic::transport::Error> {
    Ok(v1::image_service_client::ImageServiceClient::new(connect_unix(path).await?))
}
