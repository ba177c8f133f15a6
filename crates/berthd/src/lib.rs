//! berthd: berth's daemon, a Kubernetes CRI server (runtime.v1) on a unix
//! socket. [`config`] is `/etc/berth/berthd.toml`, [`socket`] the listening
//! socket and the daemon's lock, [`runtime`] and [`image`] the two CRI
//! services, [`serve`] runs them until a shutdown signal, [`stream`] is the
//! streaming server behind Exec, Attach and PortForward, [`docker`] the
//! Docker Engine API.

pub mod config;
pub mod container_extras;
pub mod containers;
pub mod docker;
pub mod events;
pub mod features;
pub mod image;
pub mod pods;
pub mod runtime;
pub mod serve;
pub mod socket;
pub mod stats;
pub mod stream;
pub mod userns;

/// The answer to an RPC berthd does not serve yet.
pub fn not_yet(rpc: &str) -> tonic::Status {
    tonic::Status::unimplemented(format!("{rpc}: not yet implemented in berthd"))
}

/// Implements a tonic service trait from the methods written out and a
/// list of RPCs that answer [`not_yet`] (the generated traits have no
/// default methods).
#[macro_export]
macro_rules! cri_service {
    (
        impl $($trait:ident)::+ for $ty:ty { $($body:tt)* }
        not_yet { $($rpc:literal $name:ident($req:ident) -> $resp:ident;)* }
    ) => {
        #[tonic::async_trait]
        impl $($trait)::+ for $ty {
            $($body)*
            $(
                async fn $name(
                    &self,
                    _req: Request<v1::$req>,
                ) -> Result<Response<v1::$resp>, Status> {
                    Err(not_yet($rpc))
                }
            )*
        }
    };
}
